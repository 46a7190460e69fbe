//! Delta queries of the fake Graph (`GET /v1.0/users/delta`, `GET /v1.0/groups/delta`), a child
//! of `graph_fake` sharing its users and groups. Follows "Use delta query to track changes in
//! Microsoft Graph data" (https://learn.microsoft.com/en-us/graph/delta-query-overview) and
//! "Get incremental changes for users" (https://learn.microsoft.com/en-us/graph/delta-query-users);
//! samples in `shared/testkit/fixtures/graph-delta/`.
//!
//! * Every change made through the fake's helpers is logged with a sequence number.
//! * Without a state token: every current object, paged (`@odata.nextLink` with `$skiptoken`),
//!   then `@odata.deltaLink`. With `$deltatoken=latest`: no objects, a deltaLink for now.
//! * With `$deltatoken=N`: each object changed after N once, as it is now (`$select` of the
//!   first request is carried in the links), or `{"id", "@removed": {"reason": "changed"}}` when it
//!   is gone (a deleted user is soft-deleted, so the reason is `changed`); paged the same way.
//! * A token older than [`FakeGraph::expire_delta_tokens`] answers 400 `syncStateNotFound`
//!   ("The sync state generation is not found. The delta token is expired and data must be
//!   synchronized again."), as a deltaLink past its 7 days does
//!   (https://devblogs.microsoft.com/microsoft365dev/duration-of-change-tracking-tokens-for-identity-and-education-resources/);
//!   429 comes from `fail_next`.

use super::{FakeGraph, State, graph_error, json_response, param, select};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

/// The change log: `(sequence, resource, id)`.
#[derive(Debug, Default)]
pub(super) struct DeltaLog {
    seq: u64,
    changes: Vec<(u64, &'static str, String)>,
    /// Tokens below this are expired.
    oldest_valid: u64,
}

impl DeltaLog {
    pub(super) fn record(&mut self, resource: &'static str, id: &str) {
        self.seq += 1;
        self.changes.push((self.seq, resource, id.to_string()));
    }
}

impl FakeGraph {
    /// Every delta token handed out so far stops working (Graph answers 410 Gone).
    pub fn expire_delta_tokens(&self) {
        let mut st = self.st();
        st.delta.oldest_valid = st.delta.seq + 1;
    }
}

fn object(st: &State, resource: &str, id: &str, query: &[(String, String)]) -> Option<Value> {
    match resource {
        "users" => st.users.get(id).map(|u| Value::Object(select(u, query))),
        _ => st.groups.get(id).map(|g| {
            let mut m = Map::new();
            m.insert("id".into(), json!(id));
            m.insert("displayName".into(), json!(g.name));
            Value::Object(select(&m, query))
        }),
    }
}

/// `GET /v1.0/{resource}/delta`.
pub(super) fn delta(st: &State, resource: &'static str, query: &[(String, String)]) -> Response {
    let base = format!("{}/v1.0/{resource}/delta", st.base);
    let select_q = param(query, "$select").map(str::to_string);
    let link = |k: &str, v: &str| {
        let mut l = format!("{base}?{k}={v}");
        if let Some(s) = &select_q {
            l.push_str(&format!("&$select={s}"));
        }
        l
    };
    // The round's origin and offset: `$skiptoken=<from>.<offset>` or `$deltatoken=<from>`.
    let (from, offset) = if let Some(skip) = param(query, "$skiptoken") {
        let parsed = skip
            .split_once('.')
            .and_then(|(f, o)| Some((f.parse::<i64>().ok()?, o.parse::<usize>().ok()?)));
        match parsed {
            Some(p) => p,
            None => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "invalid $skiptoken"),
        }
    } else {
        match param(query, "$deltatoken") {
            Some("latest") => {
                return json_response(
                    StatusCode::OK,
                    json!({"value": [], "@odata.deltaLink": link("$deltatoken", &st.delta.seq.to_string())}),
                );
            }
            Some(t) => match t.parse::<i64>() {
                Ok(n) => (n, 0),
                Err(_) => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "invalid $deltatoken"),
            },
            // -1: the initial round (every object).
            None => (-1, 0),
        }
    };
    if from >= 0 && (from as u64) < st.delta.oldest_valid {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "syncStateNotFound",
            "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
        );
    }
    let ids: Vec<String> = if from < 0 {
        match resource {
            "users" => st.users.keys().cloned().collect(),
            _ => st.groups.keys().cloned().collect(),
        }
    } else {
        let mut seen = std::collections::BTreeSet::new();
        st.delta
            .changes
            .iter()
            .filter(|(s, r, _)| *s > from as u64 && *r == resource)
            .filter(|(_, _, id)| seen.insert(id.clone()))
            .map(|(_, _, id)| id.clone())
            .collect()
    };
    let page: Vec<Value> = ids
        .iter()
        .skip(offset)
        .take(st.page_size)
        .map(|id| {
            object(st, resource, id, query)
                .unwrap_or_else(|| json!({"id": id, "@removed": {"reason": "changed"}}))
        })
        .collect();
    let mut out = json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{resource}"),
        "value": page,
    });
    if offset + st.page_size < ids.len() {
        out["@odata.nextLink"] = json!(link("$skiptoken", &format!("{from}.{}", offset + st.page_size)));
    } else {
        out["@odata.deltaLink"] = json!(link("$deltatoken", &st.delta.seq.to_string()));
    }
    json_response(StatusCode::OK, out)
}
