//! The worked example of a new target passes the same contract as Looker, AWS IAM and GCP IAM.

use crate::contract::{Harness, contract};
use crate::toy_target::{Wiki, WikiDesired, WikiTarget};
use std::collections::{BTreeMap, BTreeSet};

struct Toy(WikiTarget);

const ADA: &str = "ada@example.com";

impl Toy {
    fn desired(&self, spaces: &[&str]) -> WikiDesired {
        WikiDesired {
            user: ADA.into(),
            spaces: spaces.iter().map(|s| s.to_string()).collect(),
            managed: BTreeSet::from(["eng".to_string()]),
        }
    }
}

impl Harness for Toy {
    type T = WikiTarget;
    fn target(&self) -> &WikiTarget {
        &self.0
    }
    /// Ada has no account yet: create (first), then join.
    fn granted(&self) -> WikiDesired {
        self.desired(&["eng"])
    }
    fn revoked(&self) -> WikiDesired {
        self.desired(&[])
    }
    async fn holds(&self) -> bool {
        self.0.wiki.spaces_of(ADA).is_some_and(|s| s.contains("eng"))
    }
}

#[tokio::test]
async fn a_new_target_passes_the_target_contract() {
    let toy = Toy(WikiTarget {
        wiki: Wiki::default(),
        spaces: BTreeMap::from([("Engineering".to_string(), "eng".to_string())]),
    });
    contract(&toy).await;
}
