//! Issue 14, item 6: what the last converged state vouches for in Looker, so an event reads only
//! what its plan needs.
//!
//! Looker has no bulk read of user attribute values: each costs `GET
//! /users/{id}/attribute_values`. When the person's stored converged fingerprint is the one of
//! the desired state their identity had *before* this event (evaluated under today's policy),
//! that desired state was applied in full to their linked Looker user at the last commit, and an
//! active one sets every managed attribute (a value or its deny value). Those values are then
//! taken as what the user holds and the attribute read is skipped. The engine forgets the
//! fingerprint before a plan's first write (issue 17), so a handler that died mid-plan vouches
//! for nothing; a lost race, a drift event or an operator's replay never use it; a value changed
//! by hand in Looker since is found by the scheduled reconcile, which always reads.

use gatehouse_domain::looker::Catalog;
use gatehouse_domain::policy::{DesiredLooker, Presence};
use std::collections::BTreeMap;

/// The managed attribute values (name → value) the last converged state set on the person's
/// linked Looker user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vouched {
    pub attributes: BTreeMap<String, String>,
}

impl Vouched {
    /// From the desired state the stored fingerprint vouches for; only an active one says what
    /// the attributes hold (offboarding leaves them as they were).
    pub fn of(converged: &DesiredLooker) -> Option<Vouched> {
        matches!(converged.presence, Presence::Active { .. }).then(|| Vouched {
            attributes: converged
                .attributes
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Whether it says what every attribute `desired` manages holds.
    pub fn covers(&self, desired: &DesiredLooker) -> bool {
        desired
            .managed_attributes
            .iter()
            .all(|a| self.attributes.contains_key(a))
    }

    /// As [`gatehouse_domain::looker::LookerUser::user_attribute_values`]: attribute id → value,
    /// for the attributes the catalog knows.
    pub fn values(&self, catalog: &Catalog) -> BTreeMap<String, String> {
        self.attributes
            .iter()
            .filter_map(|(name, v)| Some((catalog.user_attributes.get(name)?.clone(), v.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn desired(presence: Presence, attributes: &[(&str, &str)], managed: &[&str]) -> DesiredLooker {
        DesiredLooker {
            email: Some("a@example.com".into()),
            first_name: None,
            last_name: None,
            presence,
            groups: Default::default(),
            roles: Default::default(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), (v.to_string(), "rule".into())))
                .collect(),
            managed_groups: BTreeSet::new(),
            managed_roles: BTreeSet::new(),
            managed_attributes: managed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_an_active_converged_state_vouches_and_only_for_what_it_set() {
        let active = Presence::Active { create: true };
        let off = Presence::Offboarded {
            disable: true,
            revoke_sessions: true,
            revoke_api_keys: true,
            delete_after_days: None,
        };
        assert_eq!(Vouched::of(&desired(off, &[], &[])), None);
        let v = Vouched::of(&desired(active.clone(), &[("team", "eng")], &["team"])).unwrap();
        assert!(v.covers(&desired(active.clone(), &[], &["team"])));
        assert!(!v.covers(&desired(active, &[], &["team", "region"])));
        let catalog = Catalog {
            user_attributes: BTreeMap::from([("team".into(), "7".into())]),
            ..Catalog::default()
        };
        assert_eq!(v.values(&catalog), BTreeMap::from([("7".into(), "eng".into())]));
        assert!(v.values(&Catalog::default()).is_empty());
    }
}
