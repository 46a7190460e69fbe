//! The policy file's `[inactivity]` section (license reclamation); `crate::inactivity` finds
//! and plans the inactive users.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// `[inactivity]` of the policy. Absent: off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inactivity {
    /// Days without a login after which a managed user is disabled (at least 1).
    pub disable_after_days: u32,
    #[serde(default)]
    pub mode: InactivityMode,
    /// IdP or Looker group names whose members are never disabled for inactivity.
    #[serde(default)]
    pub exempt_groups: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InactivityMode {
    /// List the users that would be disabled; change nothing.
    #[default]
    Report,
    /// Disable them through the apply loop (the safety screen applies).
    Enforce,
}
