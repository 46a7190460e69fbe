//! Rule names used for facts that come from the offboarding section rather than a `[[rule]]`
//! (the ledger's `rule` column). A leaf: every module may name them.

pub const OFFBOARD_DISABLE: &str = "offboarding.disable";
pub const OFFBOARD_SESSIONS: &str = "offboarding.revoke_sessions";
pub const OFFBOARD_API_KEYS: &str = "offboarding.revoke_api_keys";
pub const OFFBOARD_GROUPS: &str = "offboarding.remove_managed_groups";
pub const OFFBOARD_DELETE: &str = "offboarding.delete_after_days";
pub const ONBOARD_CREATE: &str = "onboarding.create_users";
pub const ONBOARD_ENABLE: &str = "onboarding.enable";
/// The person's email changed in the directory: their linked Looker user follows (issue 16).
pub const ONBOARD_EMAIL: &str = "onboarding.email";
pub const UNMANAGED: &str = "policy.unmanaged";
