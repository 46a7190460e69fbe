//! Property-based fuzzing of the SCIM server's own parsers of outside input: PatchOp bodies
//! (`patch::parse`), applying them to stored resources (`patch::apply`, with filter paths), and
//! resource bodies (`schema::normalize`). Inputs: the handbook's SCIM exchanges (Okta, Entra ID)
//! with mutations, arbitrary JSON, arbitrary bytes and nesting past `serde_json`'s limit, read as
//! the server reads a body (`serde_json::from_slice`). Properties: no panic; a normalized resource
//! normalizes to itself. `make test` runs `CASES` cases; `make fuzz` sets `PROPTEST_CASES`.

use super::{patch, schema};
use gatehouse_store::scim_store::ScimKind;
use gatehouse_testkit::fuzz::{self as fz, config};
use proptest::prelude::*;
use serde_json::{Map, Value};
use std::sync::OnceLock;

const CASES: u32 = 128;

/// Every object in every SCIM fixture (requests, their bodies, responses, stored resources).
fn samples() -> Vec<Value> {
    static S: OnceLock<Vec<Value>> = OnceLock::new();
    S.get_or_init(|| gatehouse_testkit::fuzz::fixture_objects("scim"))
        .clone()
}

fn kind() -> impl Strategy<Value = ScimKind> {
    prop_oneof![Just(ScimKind::User), Just(ScimKind::Group)]
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn scim_patch_bodies_apply_to_stored_resources(
        body in fz::body(samples()),
        stored in fz::mutated(samples()),
        kind in kind(),
    ) {
        let Ok(input) = serde_json::from_slice::<Value>(&body) else { return Ok(()) };
        if let Ok(ops) = patch::parse(&input) {
            // The stored resource is what normalize kept earlier; start from any object.
            let mut resource = match schema::normalize(kind, &stored) {
                Ok(r) => r,
                Err(_) => stored.as_object().cloned().unwrap_or_else(Map::new),
            };
            if patch::apply(kind, &mut resource, &ops).is_ok() {
                let _ = schema::normalize(kind, &Value::Object(resource));
            }
        }
    }

    #[test]
    fn scim_resource_bodies(body in fz::body(samples()), kind in kind()) {
        let Ok(input) = serde_json::from_slice::<Value>(&body) else { return Ok(()) };
        if let Ok(normalized) = schema::normalize(kind, &input) {
            let again = schema::normalize(kind, &Value::Object(normalized.clone()));
            prop_assert_eq!(again.as_ref().ok(), Some(&normalized), "normalize is not idempotent");
        }
    }
}

#[test]
fn the_samples_hold_patch_ops_and_resources_the_server_accepts() {
    let s = samples();
    assert!(s.iter().filter(|v| patch::parse(v).is_ok()).count() >= 10);
    assert!(
        s.iter()
            .filter(|v| schema::normalize(ScimKind::User, v).is_ok())
            .count()
            >= 5
    );
    assert!(
        s.iter()
            .filter(|v| schema::normalize(ScimKind::Group, v).is_ok())
            .count()
            >= 5
    );
}
