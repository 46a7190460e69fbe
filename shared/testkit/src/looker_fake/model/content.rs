//! Content of the fake Looker (issue 19, item 6): folders (every user's personal folder), Looks,
//! dashboards, scheduled plans (with `scheduled_plan_destination`) and alerts (with
//! `destinations`), per the 4.0 spec:
//!
//! * `GET /folders/{id}`, `GET /folders/{id}/looks`, `GET /folders/{id}/dashboards` (not deleted).
//! * `GET|PATCH /looks/{id}`, `GET|PATCH /dashboards/{id}` (`folder_id` moves; 422 for an unknown
//!   folder).
//! * `GET /scheduled_plans` (`user_id`, `all_users`; the caller's without either),
//!   `GET|PATCH /scheduled_plans/{id}` (`user_id`, `enabled`, `name`).
//! * `GET /alerts/search` (`all_owners`, `disabled`, `limit`/`offset`; the caller's without
//!   `all_owners`; no owner filter, as in the spec), `GET|PATCH /alerts/{id}` (`AlertPatch`:
//!   `owner_id`, `is_disabled`, `disabled_reason`, `is_public`, `threshold`).
//! * `DELETE /users/{id}` as Looker documents it: the Looks and dashboards in the user's personal
//!   folder go to Trash (`deleted: true`), every schedule the user owns or that uses that content
//!   is deleted; alerts keep running.

use super::Response;
use super::{
    Handled, Kind, Query, State, check_object, error, invalid, not_allowed, not_found, now_rfc3339,
    object_body, ok, parse_id,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub(crate) struct Folder {
    id: u64,
    name: String,
    parent_id: Option<u64>,
    /// The user whose personal folder this is.
    personal_of: Option<u64>,
}

/// A Look or a dashboard.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    id: u64,
    title: String,
    user_id: u64,
    folder_id: u64,
    deleted_at: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    id: u64,
    name: String,
    user_id: u64,
    enabled: bool,
    look_id: Option<u64>,
    dashboard_id: Option<u64>,
    /// `(type, address)` of each destination.
    destinations: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Alert {
    id: u64,
    owner_id: u64,
    is_disabled: bool,
    disabled_reason: Option<String>,
    is_public: bool,
    threshold: f64,
    /// `(destination_type, email_address)`.
    destinations: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Content {
    folders: BTreeMap<u64, Folder>,
    looks: BTreeMap<u64, Item>,
    dashboards: BTreeMap<u64, Item>,
    schedules: BTreeMap<u64, Schedule>,
    alerts: BTreeMap<u64, Alert>,
}

/// What a test sees of a Look or dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemView {
    pub folder_id: String,
    pub user_id: String,
    /// In Trash.
    pub deleted: bool,
}

/// What a test sees of a scheduled plan or an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub owner_id: String,
    pub enabled: bool,
}

const LOOK_WRITABLE: &[(&str, Kind)] = &[
    ("title", Kind::Str),
    ("description", Kind::NullableStr),
    ("folder_id", Kind::Str),
    ("deleted", Kind::Bool),
];
const ITEM_READ_ONLY: &[&str] = &["id", "can", "content_metadata_id", "deleted_at", "created_at"];
const PLAN_WRITABLE: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("user_id", Kind::Str),
    ("enabled", Kind::Bool),
];
const PLAN_READ_ONLY: &[&str] = &["id", "can", "title", "created_at", "updated_at", "user"];
/// `AlertPatch` (its `threshold` is a number, checked apart).
const ALERT_WRITABLE: &[(&str, Kind)] = &[
    ("owner_id", Kind::Str),
    ("is_disabled", Kind::Bool),
    ("disabled_reason", Kind::Str),
    ("is_public", Kind::Bool),
    ("enhancements", Kind::Str),
];

fn found<'a, T>(map: &'a BTreeMap<u64, T>, id: &str) -> Result<&'a T, Response> {
    parse_id(id).and_then(|i| map.get(&i)).ok_or_else(not_found)
}

impl State {
    // ---- seeding ----

    /// The user's personal folder (created on first use, as Looker does for every user).
    pub(crate) fn personal_folder(&mut self, user_id: &str) -> String {
        let uid = parse_id(user_id)
            .filter(|u| self.users.contains_key(u))
            .unwrap_or_else(|| panic!("fake looker: unknown user id {user_id:?}"));
        if let Some(f) = self.content.folders.values().find(|f| f.personal_of == Some(uid)) {
            return f.id.to_string();
        }
        let id = self.next();
        let name = self.users[&uid].email().unwrap_or("user").to_owned();
        self.content.folders.insert(
            id,
            Folder {
                id,
                name,
                parent_id: Some(2),
                personal_of: Some(uid),
            },
        );
        id.to_string()
    }

    pub(crate) fn add_folder(&mut self, name: &str) -> String {
        let id = self.next();
        self.content.folders.insert(
            id,
            Folder {
                id,
                name: name.to_owned(),
                parent_id: Some(1),
                personal_of: None,
            },
        );
        id.to_string()
    }

    fn seed_item(&mut self, user_id: &str, folder_id: &str, title: &str) -> Item {
        let user_id = parse_id(user_id)
            .filter(|u| self.users.contains_key(u))
            .expect("fake looker: unknown user");
        let folder_id = parse_id(folder_id)
            .filter(|f| self.content.folders.contains_key(f))
            .expect("fake looker: unknown folder");
        Item {
            id: self.next(),
            title: title.to_owned(),
            user_id,
            folder_id,
            deleted_at: None,
        }
    }

    pub(crate) fn add_look(&mut self, user_id: &str, folder_id: &str, title: &str) -> String {
        let item = self.seed_item(user_id, folder_id, title);
        let id = item.id;
        self.content.looks.insert(id, item);
        id.to_string()
    }

    pub(crate) fn add_dashboard(&mut self, user_id: &str, folder_id: &str, title: &str) -> String {
        let item = self.seed_item(user_id, folder_id, title);
        let id = item.id;
        self.content.dashboards.insert(id, item);
        id.to_string()
    }

    /// A scheduled plan of a Look, mailing `emails`.
    pub(crate) fn add_scheduled_plan(&mut self, user_id: &str, look_id: &str, emails: &[&str]) -> String {
        let id = self.next();
        let user_id = parse_id(user_id).expect("fake looker: user id");
        self.content.schedules.insert(
            id,
            Schedule {
                id,
                name: format!("schedule {id}"),
                user_id,
                enabled: true,
                look_id: parse_id(look_id),
                dashboard_id: None,
                destinations: emails
                    .iter()
                    .map(|e| ("email".to_owned(), (*e).to_owned()))
                    .collect(),
            },
        );
        id.to_string()
    }

    pub(crate) fn add_alert(&mut self, owner_id: &str, emails: &[&str]) -> String {
        let id = self.next();
        self.content.alerts.insert(
            id,
            Alert {
                id,
                owner_id: parse_id(owner_id).expect("fake looker: owner id"),
                is_disabled: false,
                disabled_reason: None,
                is_public: false,
                threshold: 1.0,
                destinations: emails
                    .iter()
                    .map(|e| ("EMAIL".to_owned(), (*e).to_owned()))
                    .collect(),
            },
        );
        id.to_string()
    }

    // ---- inspection ----

    fn item_view(i: &Item) -> ItemView {
        ItemView {
            folder_id: i.folder_id.to_string(),
            user_id: i.user_id.to_string(),
            deleted: i.deleted_at.is_some(),
        }
    }

    pub(crate) fn look_view(&self, id: &str) -> Option<ItemView> {
        found(&self.content.looks, id).ok().map(Self::item_view)
    }

    pub(crate) fn dashboard_view(&self, id: &str) -> Option<ItemView> {
        found(&self.content.dashboards, id).ok().map(Self::item_view)
    }

    pub(crate) fn scheduled_plan_view(&self, id: &str) -> Option<DeliveryView> {
        found(&self.content.schedules, id).ok().map(|s| DeliveryView {
            owner_id: s.user_id.to_string(),
            enabled: s.enabled,
        })
    }

    pub(crate) fn alert_view(&self, id: &str) -> Option<DeliveryView> {
        found(&self.content.alerts, id).ok().map(|a| DeliveryView {
            owner_id: a.owner_id.to_string(),
            enabled: !a.is_disabled,
        })
    }

    pub(crate) fn personal_folder_of(&self, uid: u64) -> Option<u64> {
        self.content
            .folders
            .values()
            .find(|f| f.personal_of == Some(uid))
            .map(|f| f.id)
    }

    /// `DELETE /users/{id}`, as the 4.0 spec describes it.
    pub(crate) fn content_of_deleted_user(&mut self, uid: u64) {
        let now = now_rfc3339();
        let personal = self.personal_folder_of(uid);
        let mut trashed_looks = Vec::new();
        let mut trashed_dashboards = Vec::new();
        for (items, trashed) in [
            (&mut self.content.looks, &mut trashed_looks),
            (&mut self.content.dashboards, &mut trashed_dashboards),
        ] {
            for i in items
                .values_mut()
                .filter(|i| Some(i.folder_id) == personal && i.deleted_at.is_none())
            {
                i.deleted_at = Some(now.clone());
                trashed.push(i.id);
            }
        }
        self.content.schedules.retain(|_, s| {
            s.user_id != uid
                && !s.look_id.is_some_and(|l| trashed_looks.contains(&l))
                && !s.dashboard_id.is_some_and(|d| trashed_dashboards.contains(&d))
        });
    }

    // ---- JSON ----

    fn folder_json(&self, f: &Folder) -> Value {
        json!({
            "id": f.id.to_string(),
            "name": f.name,
            "parent_id": f.parent_id.map(|p| p.to_string()),
            "content_metadata_id": f.id.to_string(),
            "creator_id": f.personal_of.map(|u| u.to_string()),
            "is_personal": f.personal_of.is_some(),
            "is_personal_descendant": false,
            "is_shared_root": false,
            "is_users_root": false,
            "is_embed": false,
            "child_count": 0,
            "external_id": null,
            "can": {"show": true, "update": true},
        })
    }

    fn item_json(&self, i: &Item) -> Value {
        json!({
            "id": i.id.to_string(),
            "title": i.title,
            "description": null,
            "user_id": i.user_id.to_string(),
            "folder_id": i.folder_id.to_string(),
            "content_metadata_id": i.id.to_string(),
            "deleted": i.deleted_at.is_some(),
            "deleted_at": i.deleted_at,
            "public": false,
            "can": {"show": true, "update": true},
        })
    }

    fn schedule_json(&self, s: &Schedule) -> Value {
        json!({
            "id": s.id.to_string(),
            "name": s.name,
            "user_id": s.user_id.to_string(),
            "enabled": s.enabled,
            "run_as_recipient": false,
            "look_id": s.look_id.map(|l| l.to_string()),
            "dashboard_id": s.dashboard_id.map(|d| d.to_string()),
            "lookml_dashboard_id": null,
            "crontab": "0 6 * * 1",
            "scheduled_plan_destination": s.destinations.iter().enumerate().map(|(n, (kind, address))| json!({
                "id": format!("{}{n}", s.id),
                "scheduled_plan_id": s.id.to_string(),
                "format": "csv",
                "apply_formatting": true,
                "apply_vis": false,
                "address": address,
                "looker_recipient": false,
                "type": kind,
                "parameters": null,
                "message": null,
            })).collect::<Vec<_>>(),
            "can": {"show": true, "update": true},
        })
    }

    fn alert_json(&self, a: &Alert) -> Value {
        json!({
            "id": a.id.to_string(),
            "owner_id": a.owner_id.to_string(),
            "owner_display_name": self.users.get(&a.owner_id).and_then(|u| u.full_name()),
            "is_disabled": a.is_disabled,
            "disabled_reason": a.disabled_reason,
            "is_public": a.is_public,
            "threshold": a.threshold,
            "comparison_type": "GREATER_THAN",
            "cron": "0 6 * * *",
            "field": {"title": "Count", "name": "orders.count"},
            "destinations": a.destinations.iter().map(|(t, e)| json!({
                "destination_type": t,
                "email_address": e,
            })).collect::<Vec<_>>(),
            "followed": false,
            "followable": true,
        })
    }

    // ---- routes ----

    /// The content routes; `None` for any other path.
    pub(crate) fn route_content(
        &mut self,
        m: &str,
        segs: &[&str],
        q: &Query,
        req: &super::Request,
        caller: u64,
    ) -> Option<Handled> {
        Some(match segs {
            ["folders", fid] => match m {
                "GET" => found(&self.content.folders, fid).map(|f| ok(q.shape(self.folder_json(f)))),
                _ => Err(not_allowed(m)),
            },
            ["folders", fid, kind @ ("looks" | "dashboards")] => match m {
                "GET" => (|| {
                    let f = found(&self.content.folders, fid)?.id;
                    let items = if *kind == "looks" {
                        &self.content.looks
                    } else {
                        &self.content.dashboards
                    };
                    let list = items
                        .values()
                        .filter(|i| i.folder_id == f && i.deleted_at.is_none())
                        .map(|i| self.item_json(i))
                        .collect();
                    Ok(ok(q.shape(Value::Array(list))))
                })(),
                _ => Err(not_allowed(m)),
            },
            [kind @ ("looks" | "dashboards"), id] => match m {
                "GET" => {
                    let items = if *kind == "looks" {
                        &self.content.looks
                    } else {
                        &self.content.dashboards
                    };
                    found(items, id).map(|i| ok(q.shape(self.item_json(i))))
                }
                "PATCH" => self.patch_item(kind, id, req, q),
                _ => Err(not_allowed(m)),
            },
            ["scheduled_plans"] => match m {
                "GET" => self.list_schedules(q, caller),
                _ => Err(not_allowed(m)),
            },
            ["scheduled_plans", id] => match m {
                "GET" => found(&self.content.schedules, id).map(|s| ok(q.shape(self.schedule_json(s)))),
                "PATCH" => self.patch_schedule(id, req, q),
                _ => Err(not_allowed(m)),
            },
            ["alerts", "search"] => match m {
                "GET" => self.search_alerts(q, caller),
                _ => Err(not_allowed(m)),
            },
            ["alerts", id] => match m {
                "GET" => found(&self.content.alerts, id).map(|a| ok(self.alert_json(a))),
                "PATCH" => self.patch_alert(id, req),
                _ => Err(not_allowed(m)),
            },
            _ => return None,
        })
    }

    fn patch_item(&mut self, kind: &str, id: &str, req: &super::Request, q: &Query) -> Handled {
        let body = object_body(req, true)?;
        check_object(&body, LOOK_WRITABLE, ITEM_READ_ONLY)?;
        let folder = match body.get("folder_id").and_then(Value::as_str) {
            Some(f) => Some(
                parse_id(f)
                    .filter(|f| self.content.folders.contains_key(f))
                    .ok_or_else(|| invalid("folder_id", "not_found", "folder_id names no folder"))?,
            ),
            None => None,
        };
        let items = if kind == "looks" {
            &mut self.content.looks
        } else {
            &mut self.content.dashboards
        };
        let i = parse_id(id)
            .and_then(|i| items.get_mut(&i))
            .ok_or_else(not_found)?;
        if let Some(f) = folder {
            i.folder_id = f;
        }
        if let Some(t) = body.get("title").and_then(Value::as_str) {
            i.title = t.to_owned();
        }
        match body.get("deleted").and_then(Value::as_bool) {
            Some(true) if i.deleted_at.is_none() => i.deleted_at = Some(now_rfc3339()),
            Some(false) => i.deleted_at = None,
            _ => {}
        }
        let i = i.clone();
        Ok(ok(q.shape(self.item_json(&i))))
    }

    fn list_schedules(&self, q: &Query, caller: u64) -> Handled {
        let all = q.bool("all_users")?.unwrap_or(false);
        let user = match q.get("user_id") {
            Some(u) => Some(parse_id(u).ok_or_else(|| error(400, "user_id must be a user id"))?),
            None if all => None,
            None => Some(caller),
        };
        let list = self
            .content
            .schedules
            .values()
            .filter(|s| user.is_none_or(|u| s.user_id == u))
            .map(|s| self.schedule_json(s))
            .collect();
        Ok(ok(q.shape(Value::Array(list))))
    }

    fn patch_schedule(&mut self, id: &str, req: &super::Request, q: &Query) -> Handled {
        let body = object_body(req, true)?;
        check_object(&body, PLAN_WRITABLE, PLAN_READ_ONLY)?;
        let owner = match body.get("user_id").and_then(Value::as_str) {
            Some(u) => Some(
                parse_id(u)
                    .filter(|u| self.users.contains_key(u))
                    .ok_or_else(|| invalid("user_id", "not_found", "user_id names no user"))?,
            ),
            None => None,
        };
        let s = parse_id(id)
            .and_then(|i| self.content.schedules.get_mut(&i))
            .ok_or_else(not_found)?;
        if let Some(u) = owner {
            s.user_id = u;
        }
        if let Some(e) = body.get("enabled").and_then(Value::as_bool) {
            s.enabled = e;
        }
        if let Some(n) = body.get("name").and_then(Value::as_str) {
            s.name = n.to_owned();
        }
        let s = s.clone();
        Ok(ok(q.shape(self.schedule_json(&s))))
    }

    fn search_alerts(&self, q: &Query, caller: u64) -> Handled {
        let all = q.bool("all_owners")?.unwrap_or(false);
        let disabled = q.bool("disabled")?;
        let list = self
            .content
            .alerts
            .values()
            .filter(|a| all || a.owner_id == caller)
            .filter(|a| disabled.is_none_or(|d| a.is_disabled == d))
            .map(|a| self.alert_json(a))
            .collect();
        q.list_response(list)
    }

    fn patch_alert(&mut self, id: &str, req: &super::Request) -> Handled {
        let mut body = object_body(req, true)?;
        let threshold = match body.remove("threshold") {
            None => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| invalid("threshold", "invalid", "threshold must be a number"))?,
            ),
        };
        check_object(
            &body,
            ALERT_WRITABLE,
            &["id", "followed", "followable", "owner_display_name"],
        )?;
        let owner = match body.get("owner_id").and_then(Value::as_str) {
            Some(u) => Some(
                parse_id(u)
                    .filter(|u| self.users.contains_key(u))
                    .ok_or_else(|| invalid("owner_id", "not_found", "owner_id names no user"))?,
            ),
            None => None,
        };
        let a = parse_id(id)
            .and_then(|i| self.content.alerts.get_mut(&i))
            .ok_or_else(not_found)?;
        if let Some(u) = owner {
            a.owner_id = u;
        }
        if let Some(d) = body.get("is_disabled").and_then(Value::as_bool) {
            a.is_disabled = d;
            if !d {
                a.disabled_reason = None;
            }
        }
        if let Some(r) = body.get("disabled_reason").and_then(Value::as_str) {
            a.disabled_reason = Some(r.to_owned());
        }
        if let Some(p) = body.get("is_public").and_then(Value::as_bool) {
            a.is_public = p;
        }
        if let Some(t) = threshold {
            a.threshold = t;
        }
        let a = a.clone();
        Ok(ok(self.alert_json(&a)))
    }
}
