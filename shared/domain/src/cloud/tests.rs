use super::*;
use crate::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use proptest::prelude::*;

const MANAGED_GROUPS: [&str; 3] = ["eng", "fin", "ops"];
const UNMANAGED_GROUP: &str = "hand-made";

fn policy() -> Policy {
    Policy::from_toml(
        r#"
        [aws.offboarding]
        delete_access_keys_after_days = 30
        [[rule]]
        name = "eng"
        when = { idp_group = "Engineering" }
        aws_groups = ["eng", "ops"]
        aws_tags = { team = "engineering" }
        gcp_bindings = [
          { resource = "projects/p1", role = "roles/viewer" },
          { resource = "projects/p1/datasets/d1", role = "roles/bigquery.dataViewer" },
        ]
        [[rule]]
        name = "fin"
        when = { idp_group = "Finance" }
        aws_groups = ["fin"]
        aws_tags = { cost = "finance" }
        gcp_bindings = [{ resource = "projects/p1", role = "roles/editor" }]
        "#,
    )
    .unwrap()
}

fn identity(status: IdentityEvent, at: i64, groups: &[&str]) -> Identity {
    let mut id = Identity::new("k");
    let mut n = 0;
    let mut fold = |event: IdentityEvent, profile: Profile| {
        n += 1;
        id.fold(&Envelope {
            trace_parent: None,
            version: 1,
            id: EnvelopeId(format!("e{n}")),
            source: Source::Manual,
            subject: Subject {
                key: "k".into(),
                email: None,
                display_name: None,
            },
            occurred_at: DateTime::from_timestamp(at + n, 0).unwrap(),
            received_at: DateTime::from_timestamp(0, 0).unwrap(),
            event,
            profile,
            source_event_type: "t".into(),
            raw: serde_json::Value::Null,
        });
    };
    for g in groups {
        let group = GroupRef {
            id: format!("id-{g}"),
            name: g.to_string(),
        };
        fold(IdentityEvent::GroupMemberAdded { group }, Profile::new());
    }
    let profile = Profile::from([
        ("email".to_string(), "Pat@X.io".to_string()),
        ("login".to_string(), "pat".to_string()),
    ]);
    fold(status, profile);
    id
}

fn mapping() -> AwsUserMapping {
    AwsUserMapping::Template {
        template: "{local}".into(),
    }
}

fn day(d: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(d * 86_400, 0).unwrap()
}

#[test]
fn old_policy_files_still_parse_and_cloud_is_off() {
    let p = Policy::from_toml(include_str!("../../../../examples/policy.toml")).unwrap();
    assert!(p.managed_groups().contains("Engineers"));
    let d = evaluate(
        &p,
        &identity(IdentityEvent::UserActivated, 0, &[]),
        Some(&mapping()),
        true,
        day(1),
    );
    // The example policy names AWS and GCP grants only for engineering; an active person
    // outside it is still managed (their managed groups are read so drift can be undone).
    assert_eq!(d.gcp.is_some(), !p.managed_gcp_grants().is_empty());
    let bare = Policy::from_toml("[[rule]]\nname='a'\nwhen='everyone'\nlooker_groups=['G']\n").unwrap();
    let d = evaluate(
        &bare,
        &identity(IdentityEvent::UserActivated, 0, &[]),
        Some(&mapping()),
        true,
        day(1),
    );
    assert!(d.is_empty(), "a Looker-only policy yields no cloud work: {d:?}");
}

#[test]
fn bad_gcp_resource_and_role_are_rejected() {
    let e = Policy::from_toml(
        "[[rule]]\nname='a'\nwhen='everyone'\ngcp_bindings=[{resource='organizations/1', role='roles/viewer'}]\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("organizations/1"), "{e}");
    let e = Policy::from_toml(
        "[[rule]]\nname='a'\nwhen='everyone'\ngcp_bindings=[{resource='projects/p', role='viewer'}]\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"viewer\""), "{e}");
    let e = Policy::from_toml("[aws.offboarding]\nremove_group = true\n").unwrap_err();
    assert!(e.to_string().contains("remove_group"), "{e}");
}

#[test]
fn mapping_rules_name_the_iam_user() {
    let id = identity(IdentityEvent::UserActivated, 0, &[]);
    let t = |s: &str| AwsUserMapping::Template { template: s.into() }.key_for(&id);
    assert_eq!(t("{local}"), Some(AwsUserKey::Name("Pat".into())));
    assert_eq!(t("{email}"), Some(AwsUserKey::Name("Pat@X.io".into())));
    assert_eq!(t("idp-{login}"), Some(AwsUserKey::Name("idp-pat".into())));
    assert_eq!(
        AwsUserMapping::Tag { key: "email".into() }.key_for(&id),
        Some(AwsUserKey::Tag {
            key: "email".into(),
            value: "Pat@X.io".into()
        })
    );
    assert_eq!(
        AwsUserMapping::Template {
            template: "{login}".into()
        }
        .key_for(&Identity::new("x")),
        None
    );
}

#[test]
fn access_keys_are_deactivated_then_deleted_after_the_grace_period() {
    let p = policy();
    let off = identity(IdentityEvent::UserDeactivated, 10 * 86_400, &["Engineering"]);
    let early = evaluate(&p, &off, Some(&mapping()), true, day(20)).aws.unwrap();
    assert_eq!(early.keys, KeyAction::Deactivate);
    assert!(early.delete_login_profile && early.groups.is_empty());
    assert_eq!(early.managed_groups.len(), 3);
    let late = evaluate(&p, &off, Some(&mapping()), true, day(41)).aws.unwrap();
    assert_eq!(late.keys, KeyAction::Delete);
    let user = AwsUser {
        name: "Pat".into(),
        groups: ["eng".to_string(), UNMANAGED_GROUP.to_string()].into(),
        access_keys: vec![
            AwsAccessKey {
                id: "AKIA1".into(),
                active: true,
            },
            AwsAccessKey {
                id: "AKIA2".into(),
                active: false,
            },
        ],
        login_profile: true,
        ..Default::default()
    };
    let plan = diff_aws(&early, &AwsActual::Present(user.clone()));
    let ops: Vec<_> = plan.steps.iter().map(|s| s.op.clone()).collect();
    assert_eq!(
        ops,
        vec![
            AwsIamOp::RemoveUserFromGroup { group: "eng".into() },
            AwsIamOp::DeactivateAccessKey {
                key_id: "AKIA1".into()
            },
            AwsIamOp::DeleteLoginProfile,
        ]
    );
    let plan = diff_aws(&late, &AwsActual::Present(user));
    assert_eq!(
        plan.steps
            .iter()
            .filter(|s| matches!(s.op, AwsIamOp::DeleteAccessKey { .. }))
            .count(),
        2
    );
}

#[test]
fn iam_calls_render_as_the_query_api() {
    let call = AwsIamOp::DeactivateAccessKey {
        key_id: "AKIA1".into(),
    }
    .http("pat");
    assert_eq!(call.path, "/");
    assert_eq!(
        call.body.unwrap(),
        serde_json::json!({"Action": "UpdateAccessKey", "AccessKeyId": "AKIA1", "Status": "Inactive",
                           "UserName": "pat", "Version": "2010-05-08"})
    );
    assert_eq!(
        AwsIamOp::AddUserToGroup { group: "eng".into() }.render("pat"),
        "aws iam AddUserToGroup GroupName=eng UserName=pat"
    );
    let op = GcpIamOp::RemoveMember {
        resource: "projects/p/serviceAccounts/sa@p.iam.gserviceaccount.com".into(),
        role: "roles/iam.serviceAccountUser".into(),
        member: "user:a@b.c".into(),
    };
    assert_eq!(
        op.http().path,
        "/v1/projects/p/serviceAccounts/sa@p.iam.gserviceaccount.com:setIamPolicy"
    );
    assert_eq!(
        GcpResource::parse("projects/p/datasets/d").unwrap().path(),
        "/bigquery/v2/projects/p/datasets/d"
    );
    assert_eq!(GcpResource::parse("projects/p").unwrap().path(), "/v3/projects/p");
    assert!(GcpResource::parse("projects/p:getIamPolicy").is_none());
}

#[test]
fn offline_offboarding_lists_every_cloud_revocation() {
    let p = policy();
    let off = identity(IdentityEvent::UserSuspended, 0, &[]);
    let d = evaluate(&p, &off, Some(&mapping()), true, day(1));
    let aws = diff_aws(d.aws.as_ref().unwrap(), &AwsActual::Unknown);
    let (gcp, notes) = diff_gcp(d.gcp.as_ref().unwrap(), &BTreeMap::new());
    let text = CloudPlan {
        aws: Some(aws),
        gcp,
        notes,
    }
    .render_text();
    for want in [
        "aws iam RemoveUserFromGroup GroupName=eng UserName=Pat",
        "aws iam UpdateAccessKey AccessKeyId={each} Status=Inactive UserName=Pat",
        "aws iam DeleteLoginProfile UserName=Pat",
        "gcp projects/p1: getIamPolicy → remove user:pat@x.io from roles/editor → setIamPolicy",
        "gcp projects/p1/datasets/d1: getIamPolicy → remove user:pat@x.io from roles/bigquery.dataViewer",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

fn arb_user() -> impl Strategy<Value = AwsUser> {
    let pool: Vec<&'static str> = MANAGED_GROUPS.iter().copied().chain([UNMANAGED_GROUP]).collect();
    (
        prop::sample::subsequence(pool, 0..=4),
        prop::collection::btree_map(
            prop::sample::select(vec!["team", "cost", "hand"]),
            prop::sample::select(vec!["engineering", "finance", "x"]),
            0..3,
        ),
        prop::collection::vec(any::<bool>(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(groups, tags, keys, login_profile)| AwsUser {
            name: "Pat".into(),
            groups: groups.into_iter().map(str::to_string).collect(),
            tags: tags
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            access_keys: keys
                .into_iter()
                .enumerate()
                .map(|(i, active)| AwsAccessKey {
                    id: format!("AKIA{i}"),
                    active,
                })
                .collect(),
            login_profile,
            held: None,
            remapped: None,
        })
}

/// Apply an IAM plan as IAM would.
fn simulate_aws(mut u: AwsUser, plan: &AwsPlan) -> AwsUser {
    for s in &plan.steps {
        match &s.op {
            AwsIamOp::AddUserToGroup { group } => assert!(u.groups.insert(group.clone()), "no-op add"),
            AwsIamOp::RemoveUserFromGroup { group } => assert!(u.groups.remove(group), "no-op remove"),
            AwsIamOp::TagUser { tags } => u.tags.extend(tags.clone()),
            AwsIamOp::UntagUser { keys } => keys.iter().for_each(|k| {
                u.tags.remove(k);
            }),
            AwsIamOp::DeactivateAccessKey { key_id } => u
                .access_keys
                .iter_mut()
                .filter(|k| &k.id == key_id)
                .for_each(|k| k.active = false),
            AwsIamOp::DeleteAccessKey { key_id } => u.access_keys.retain(|k| &k.id != key_id),
            AwsIamOp::DeleteLoginProfile => u.login_profile = false,
            // The sweep is planned only from a read `held` (property-tested in cloud::sweep).
            other => panic!("sweep op without a read: {other:?}"),
        }
    }
    u
}

fn arb_policy() -> impl Strategy<Value = IamPolicy> {
    let member = prop::sample::select(vec![
        "user:pat@x.io",
        "user:PAT@x.io",
        "user:other@x.io",
        "group:g@x.io",
    ]);
    let role = prop::sample::select(vec!["roles/viewer", "roles/editor", "roles/owner"]);
    let binding = (role, prop::collection::vec(member, 1..3), any::<bool>()).prop_map(|(role, members, cond)| {
        Binding {
            role: role.to_string(),
            members: members.into_iter().map(str::to_string).collect(),
            condition: cond.then(|| serde_json::json!({"title": "t", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"})),
            other: Default::default(),
        }
    });
    prop::collection::vec(binding, 0..5).prop_map(|bindings| IamPolicy {
        version: 3,
        etag: Some("BwX=".into()),
        bindings,
        other: serde_json::Map::from_iter([(
            "auditConfigs".to_string(),
            serde_json::json!([{"service": "allServices"}]),
        )]),
    })
}

fn unmanaged_view(p: &IamPolicy, managed_roles: &[&str]) -> Vec<Binding> {
    p.bindings
        .iter()
        .filter(|b| b.condition.is_some() || !managed_roles.contains(&b.role.as_str()))
        .cloned()
        .collect()
}

fn others_in_managed(p: &IamPolicy, role: &str) -> BTreeSet<String> {
    p.bindings
        .iter()
        .filter(|b| b.role == role && b.condition.is_none())
        .flat_map(|b| {
            b.members
                .iter()
                .filter(|m| !m.eq_ignore_ascii_case("user:pat@x.io"))
                .cloned()
        })
        .collect()
}

proptest! {
    /// Applying an IAM plan converges (the next plan is empty) and never touches an unmanaged
    /// group or tag; offboarding leaves no active key, no console password, no managed group.
    #[test]
    fn aws_plan_converges_and_leaves_unmanaged_alone(
        user in arb_user(),
        status in prop::sample::select(vec![0u8, 1, 2]),
        groups in prop::sample::subsequence(vec!["Engineering", "Finance"], 0..=2),
        now_day in 0i64..60,
    ) {
        let p = policy();
        let ev = match status { 0 => IdentityEvent::UserActivated, 1 => IdentityEvent::UserSuspended, _ => IdentityEvent::UserDeleted };
        let id = identity(ev, 0, &groups);
        let Some(d) = evaluate(&p, &id, Some(&mapping()), true, day(now_day)).aws else {
            return Ok(());
        };
        for g in d.groups.keys() { prop_assert!(p.managed_aws_groups().contains(g)); }
        let plan = diff_aws(&d, &AwsActual::Present(user.clone()));
        let after = simulate_aws(user.clone(), &plan);
        let again = diff_aws(&d, &AwsActual::Present(after.clone()));
        prop_assert!(again.steps.is_empty(), "second plan not empty: {:?}", again.steps);
        prop_assert_eq!(user.groups.contains(UNMANAGED_GROUP), after.groups.contains(UNMANAGED_GROUP));
        prop_assert_eq!(user.tags.get("hand"), after.tags.get("hand"));
        if d.offboarded {
            prop_assert!(plan.steps.iter().all(|s| s.op.is_revoking()), "offboarding only revokes");
            prop_assert!(after.access_keys.iter().all(|k| !k.active));
            prop_assert!(!after.login_profile);
            prop_assert!(MANAGED_GROUPS.iter().all(|g| !after.groups.contains(*g)));
        }
    }

    /// Applying GCP changes converges, never drops a binding or condition Gatehouse does not
    /// manage, and keeps every other member and unknown policy field.
    #[test]
    fn gcp_changes_converge_and_keep_unmanaged_bindings(
        policy_p1 in arb_policy(),
        status in prop::sample::select(vec![0u8, 1]),
        groups in prop::sample::subsequence(vec!["Engineering", "Finance"], 0..=2),
    ) {
        let p = policy();
        let ev = if status == 0 { IdentityEvent::UserActivated } else { IdentityEvent::UserDeactivated };
        let id = identity(ev, 0, &groups);
        let d = evaluate(&p, &id, Some(&mapping()), true, day(1)).gcp.unwrap();
        let mut actual = BTreeMap::from([
            ("projects/p1".to_string(), policy_p1.clone()),
            ("projects/p1/datasets/d1".to_string(), IamPolicy::default()),
        ]);
        let (steps, notes) = diff_gcp(&d, &actual);
        prop_assert!(notes.is_empty());
        for (resource, pol) in actual.iter_mut() {
            apply_gcp(pol, steps.iter().map(|s| &s.op).filter(|op| op.resource() == resource));
        }
        let (again, _) = diff_gcp(&d, &actual);
        prop_assert!(again.is_empty(), "second plan not empty: {:?}", again);
        let after = &actual["projects/p1"];
        let managed = ["roles/viewer", "roles/editor"];
        prop_assert_eq!(unmanaged_view(&policy_p1, &managed), unmanaged_view(after, &managed));
        for role in managed {
            prop_assert_eq!(others_in_managed(&policy_p1, role), others_in_managed(after, role));
        }
        prop_assert_eq!(&policy_p1.other, &after.other);
        prop_assert!(after.bindings.iter().all(|b| !b.members.is_empty()));
        if d.offboarded {
            prop_assert!(managed.iter().all(|r| !after.has(r, "user:pat@x.io")));
        }
    }
}

#[test]
fn desired_cloud_serializes_to_json() {
    let p = policy();
    let d = evaluate(
        &p,
        &identity(IdentityEvent::UserActivated, 0, &["Engineering"]),
        Some(&mapping()),
        true,
        day(1),
    );
    let json = serde_json::to_string(&d).unwrap();
    let back: DesiredCloud = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d);
}

/// Issue 11, finding 3: outside `[identity] allowed_email_domains` no cloud grant is desired
/// (the managed ones are still removed); offboarding still applies.
#[test]
fn no_cloud_grant_outside_the_allowed_email_domains() {
    let mut p = policy();
    let pat = identity(IdentityEvent::UserActivated, 0, &["Engineering"]);
    for (domains, granted) in [(None, true), (Some(["x.io"]), true), (Some(["y.io"]), false)] {
        p.allowed_email_domains = domains.map(|d| d.iter().map(|s| s.to_string()).collect());
        let d = evaluate(&p, &pat, Some(&mapping()), true, day(1));
        let aws = d.aws.expect("aws is managed");
        let gcp = d.gcp.expect("gcp is managed");
        assert_eq!(
            !aws.groups.is_empty() && !aws.tags.is_empty(),
            granted,
            "{domains:?}"
        );
        assert_eq!(!gcp.bindings.is_empty(), granted, "{domains:?}");
        assert!(
            !aws.managed_groups.is_empty() && !gcp.managed.is_empty(),
            "managed grants are removed"
        );
    }
    let gone = identity(IdentityEvent::UserDeactivated, 0, &["Engineering"]);
    let d = evaluate(&p, &gone, Some(&mapping()), true, day(1));
    assert!(
        d.aws
            .is_some_and(|a| a.offboarded && a.keys == KeyAction::Deactivate)
    );
}

/// Issue 16: a renamed person's bindings follow the member string. Their earlier member leaves
/// every managed binding that holds it (the new one is granted), and an offboarding removes both.
#[test]
fn gcp_bindings_follow_a_renamed_member() {
    let p = policy();
    let mut pat = identity(IdentityEvent::UserActivated, 0, &["Engineering"]);
    pat.previous_emails = vec!["Pat.Old@X.io".into()];
    let d = evaluate(&p, &pat, None, true, day(1)).gcp.unwrap();
    assert_eq!(d.member, "user:pat@x.io");
    assert_eq!(d.former_members, vec!["user:pat.old@x.io"]);
    let viewer = |members: &[&str]| IamPolicy {
        version: 3,
        etag: Some("e".into()),
        bindings: vec![Binding {
            role: "roles/viewer".into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            condition: None,
            other: Default::default(),
        }],
        other: Default::default(),
    };
    let actual = BTreeMap::from([
        (
            "projects/p1".to_string(),
            viewer(&["user:pat.old@x.io", "user:someone@x.io"]),
        ),
        ("projects/p1/datasets/d1".to_string(), IamPolicy::default()),
    ]);
    let (steps, _) = diff_gcp(&d, &actual);
    let on_p1: Vec<_> = steps
        .iter()
        .filter(|s| s.op.resource() == "projects/p1" && s.op.member_is("user:pat.old@x.io"))
        .collect();
    assert_eq!(on_p1.len(), 1, "{steps:#?}");
    assert!(on_p1[0].op.is_revoking() && on_p1[0].rule == rules::GCP_MEMBER_CHANGED);
    assert!(
        steps
            .iter()
            .any(|s| !s.op.is_revoking() && s.op.member_is("user:pat@x.io"))
    );
    assert!(
        !steps
            .iter()
            .any(|s| s.op.resource() != "projects/p1" && s.op.member_is("user:pat.old@x.io")),
        "a binding that does not hold the old member is not touched for it: {steps:#?}"
    );
    let mut policy = actual["projects/p1"].clone();
    apply_gcp(
        &mut policy,
        steps
            .iter()
            .filter(|s| s.op.resource() == "projects/p1")
            .map(|s| &s.op),
    );
    assert!(policy.has("roles/viewer", "user:pat@x.io") && !policy.has("roles/viewer", "user:pat.old@x.io"));
    assert!(
        policy.has("roles/viewer", "user:someone@x.io"),
        "other members are kept"
    );

    // Offboarded: both members leave, under the offboarding rule.
    let mut gone = identity(IdentityEvent::UserDeactivated, 0, &["Engineering"]);
    gone.previous_emails = vec!["pat.old@x.io".into()];
    let d = evaluate(&p, &gone, None, true, day(1)).gcp.unwrap();
    let both = BTreeMap::from([(
        "projects/p1".to_string(),
        viewer(&["user:pat.old@x.io", "user:pat@x.io"]),
    )]);
    let (steps, _) = diff_gcp(&d, &both);
    let mut policy = both["projects/p1"].clone();
    apply_gcp(&mut policy, steps.iter().map(|s| &s.op));
    assert!(policy.bindings.is_empty(), "{policy:?}");
    assert!(
        steps
            .iter()
            .all(|s| s.op.is_revoking() && s.rule == rules::GCP_REMOVE_BINDINGS)
    );
}

/// Issue 16: a linked IAM user the mapping no longer names is planned as the person's, and the
/// plan says the mapping changed (a note `gatehouse plan` prints, a field its JSON carries).
#[test]
fn aws_plan_reports_a_changed_mapping_and_keeps_the_linked_user() {
    let p = policy();
    let gone = identity(IdentityEvent::UserDeactivated, 0, &["Engineering"]);
    let d = evaluate(&p, &gone, Some(&mapping()), true, day(1)).aws.unwrap();
    let user = AwsUser {
        name: "pat.old".into(),
        groups: ["eng".to_string()].into(),
        remapped: Some("pat".into()),
        ..Default::default()
    };
    let plan = diff_aws(&d, &AwsActual::Present(user));
    assert_eq!(plan.user, "pat.old");
    assert_eq!(plan.mapping_changed.as_deref(), Some("pat"));
    assert!(
        plan.steps
            .iter()
            .any(|s| s.op == AwsIamOp::RemoveUserFromGroup { group: "eng".into() })
    );
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("now names pat") && n.contains("linked iam user pat.old")),
        "{:?}",
        plan.notes
    );
    let unchanged = diff_aws(
        &d,
        &AwsActual::Present(AwsUser {
            name: "pat".into(),
            ..Default::default()
        }),
    );
    assert_eq!(unchanged.mapping_changed, None);
    assert!(unchanged.mapping_change_reason().is_none());
}

/// The access review replays the ledger through `from_ledger`: each replayed op must come back
/// from the call its target records, and the ops it does not replay must not be mistaken for one.
#[test]
fn ledger_calls_parse_back_into_the_ops_that_wrote_them() {
    let aws = [
        AwsIamOp::AddUserToGroup { group: "fin".into() },
        AwsIamOp::RemoveUserFromGroup { group: "eng".into() },
        AwsIamOp::TagUser {
            tags: [("cost", "finance"), ("team", "data")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        },
        AwsIamOp::UntagUser {
            keys: vec!["cost".into(), "team".into()],
        },
        AwsIamOp::DeactivateAccessKey {
            key_id: "AKIA1".into(),
        },
        AwsIamOp::DeleteAccessKey {
            key_id: "AKIA2".into(),
        },
        AwsIamOp::DeleteLoginProfile,
    ];
    for op in aws {
        assert_eq!(
            AwsIamOp::from_ledger(&op.http("ann")),
            Some(("ann".to_string(), op.clone())),
            "{op:?}"
        );
    }
    let not_replayed = [
        AwsIamOp::DetachUserPolicy {
            policy_arn: "arn:aws:iam::aws:policy/ReadOnlyAccess".into(),
        },
        AwsIamOp::DeactivateMfaDevice { serial: "mfa".into() },
    ];
    for op in not_replayed {
        assert_eq!(AwsIamOp::from_ledger(&op.http("ann")), None, "{op:?}");
    }
    for resource in [
        "projects/p1",
        "projects/p1/datasets/d1",
        "projects/p1/serviceAccounts/ci@p1.iam.gserviceaccount.com",
        "organizations/42",
    ] {
        for op in [
            GcpIamOp::AddMember {
                resource: resource.into(),
                role: "roles/viewer".into(),
                member: "user:ann@x.com".into(),
            },
            GcpIamOp::RemoveMember {
                resource: resource.into(),
                role: "roles/editor".into(),
                member: "user:ann@x.com".into(),
            },
        ] {
            assert_eq!(GcpIamOp::from_ledger(&op.http()), Some(op.clone()), "{op:?}");
        }
    }
    let membership = GcpIamOp::AddGroupMember {
        group: "fin@x.com".into(),
        group_name: Some("groups/1".into()),
        member: "ann@x.com".into(),
    };
    assert_eq!(GcpIamOp::from_ledger(&membership.http()), None);
}
