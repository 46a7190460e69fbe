//! The policy file's `[offboarding] handover`: what happens to a person's content before the
//! scheduled deletion of their Looker user (what `crate::handover` plans).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What happens to a person's content before the scheduled deletion of their Looker user
/// (`[offboarding] handover`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HandoverToml", into = "HandoverToml")]
pub enum Handover {
    /// `handover = { folder_id = "…", owner_id = "…" }`: personal-folder Looks and dashboards go
    /// to the folder, scheduled plans and alerts to the owner (a Looker user id, e.g. a team's
    /// service account).
    To { folder_id: String, owner_id: String },
    /// `handover = "none"`: delete without handing anything over (Looker trashes the content and
    /// deletes the schedules). An explicit choice; never the default.
    Nothing,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum HandoverToml {
    Word(String),
    Table(BTreeMap<String, IdToml>),
}

/// Looker ids are strings in the API; a number in the policy file is accepted too.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum IdToml {
    Text(String),
    Number(u64),
}

impl IdToml {
    fn text(&self) -> String {
        match self {
            IdToml::Text(s) => s.clone(),
            IdToml::Number(n) => n.to_string(),
        }
    }
}

/// A Looker id as it may appear in a path segment: letters, digits, `_` and `-`.
fn looker_id(field: &str, v: Option<&IdToml>) -> Result<String, String> {
    match v.map(IdToml::text).as_ref() {
        None => Err(format!("offboarding.handover.{field} is missing")),
        Some(v)
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            Err(format!(
                "offboarding.handover.{field} must be a looker id (letters, digits, _ or -), got {v:?}"
            ))
        }
        Some(v) => Ok(v.clone()),
    }
}

impl TryFrom<HandoverToml> for Handover {
    type Error = String;
    fn try_from(t: HandoverToml) -> Result<Self, String> {
        match t {
            HandoverToml::Word(w) if w == "none" => Ok(Handover::Nothing),
            HandoverToml::Word(w) => Err(format!(
                "offboarding.handover must be \"none\" or {{ folder_id = \"…\", owner_id = \"…\" }}, got {w:?}"
            )),
            HandoverToml::Table(t) => {
                if let Some(k) = t.keys().find(|k| *k != "folder_id" && *k != "owner_id") {
                    return Err(format!(
                        "offboarding.handover.{k} is not a known field (folder_id, owner_id)"
                    ));
                }
                Ok(Handover::To {
                    folder_id: looker_id("folder_id", t.get("folder_id"))?,
                    owner_id: looker_id("owner_id", t.get("owner_id"))?,
                })
            }
        }
    }
}

impl From<Handover> for HandoverToml {
    fn from(h: Handover) -> Self {
        match h {
            Handover::Nothing => HandoverToml::Word("none".into()),
            Handover::To { folder_id, owner_id } => HandoverToml::Table(BTreeMap::from([
                ("folder_id".into(), IdToml::Text(folder_id)),
                ("owner_id".into(), IdToml::Text(owner_id)),
            ])),
        }
    }
}
