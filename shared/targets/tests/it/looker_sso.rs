//! Issue 16, the SSO step of Looker resolution against the fake Looker: a person with no link
//! is looked up by the configured SSO credential after their email; the plan says so; a linked
//! person, or an install without `[identity.looker_sso]`, costs no such read.

use gatehouse_domain::plan::Actual;
use gatehouse_domain::policy::{DesiredLooker, Presence};
use gatehouse_domain::sso::{SsoCredential, SsoId, SsoLookup};
use gatehouse_domain::target::{Link, Target};
use gatehouse_targets::RetryPolicy;
use gatehouse_targets::client::looker::{LookerClient, LookerConfig};
use gatehouse_targets::looker::LookerTarget;
use gatehouse_testkit::FakeLooker;
use std::time::Duration;

const PERSON: &str = "okta:00u9sso";

fn target(fake: &FakeLooker, sso: Option<SsoLookup>) -> LookerTarget<LookerClient> {
    let client = LookerClient::new(LookerConfig {
        base_url: fake.base_url(),
        client_id: fake.client_id().to_string(),
        client_secret: fake.client_secret().to_string().into(),
        timeout: Duration::from_secs(10),
        catalog_ttl: Duration::ZERO,
        max_concurrent_calls: gatehouse_targets::client::looker::DEFAULT_MAX_CONCURRENT_CALLS,
    })
    .unwrap();
    let retry = RetryPolicy {
        retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    LookerTarget::new(Some(client), retry).with_sso(sso)
}

fn saml(id: SsoId) -> Option<SsoLookup> {
    Some(SsoLookup {
        credential: SsoCredential::Saml,
        id,
    })
}

fn desired(presence: Presence) -> DesiredLooker {
    DesiredLooker {
        email: Some("jd@example.com".into()),
        first_name: Some("J".into()),
        last_name: Some("D".into()),
        presence,
        groups: Default::default(),
        roles: Default::default(),
        attributes: Default::default(),
        managed_groups: Default::default(),
        managed_roles: Default::default(),
        managed_attributes: Default::default(),
    }
}

fn credential_reads(fake: &FakeLooker) -> usize {
    fake.calls()
        .iter()
        .filter(|c| c.path.starts_with("/users/credential/"))
        .count()
}

#[tokio::test]
async fn an_unlinked_person_resolves_through_the_sso_credential_and_the_plan_says_so() {
    let fake = FakeLooker::start().await;
    let uid = fake.add_user_without_email("J", "D");
    fake.add_sso_credential(&uid, "saml", "00u9sso", Some("jd@old.example.org"));
    let t = target(&fake, saml(SsoId::IdpUserId));
    let d = desired(Presence::Active { create: true });
    let actual = t.read(&d, &Link::unlinked(PERSON)).await.unwrap();
    assert!(
        matches!(&actual.user, Actual::Present(u) if u.id == uid),
        "{actual:?}"
    );
    assert_eq!(
        t.linked(&actual),
        vec![uid.clone()],
        "what the sso step found is linked"
    );
    let text = t.diff(&d, &actual).render_text();
    assert!(
        text.contains(&format!(
            "resolved: looker user {uid} via its saml credential (saml_user_id 00u9sso)"
        )),
        "{text}"
    );
    assert_eq!(credential_reads(&fake), 1);

    // Linked: the link settles it, no credential read.
    let before = credential_reads(&fake);
    let link = Link {
        accounts: vec![uid.clone()],
        ..Link::unlinked(PERSON)
    };
    let actual = t.read(&d, &link).await.unwrap();
    assert!(matches!(&actual.user, Actual::Present(u) if u.id == uid));
    assert_eq!(
        credential_reads(&fake),
        before,
        "a linked person costs no sso read"
    );
}

#[tokio::test]
async fn without_the_setting_no_credential_is_read() {
    let fake = FakeLooker::start().await;
    let uid = fake.add_user_without_email("J", "D");
    fake.add_sso_credential(&uid, "saml", "00u9sso", None);
    let t = target(&fake, None);
    let d = desired(Presence::Active { create: true });
    let actual = t.read(&d, &Link::unlinked(PERSON)).await.unwrap();
    assert!(matches!(actual.user, Actual::Absent), "{actual:?}");
    assert_eq!(credential_reads(&fake), 0);
}

/// An id that is not a plain path segment (SCIM `externalId` `auth0|J.Doe@idp`) is
/// percent-encoded; a person without the attribute costs no read.
#[tokio::test]
async fn a_profile_attribute_id_is_looked_up_encoded() {
    let fake = FakeLooker::start().await;
    let uid = fake.add_user_without_email("J", "D");
    fake.add_sso_credential(&uid, "oidc", "auth0|J.Doe@idp", None);
    let t = target(
        &fake,
        Some(SsoLookup {
            credential: SsoCredential::Oidc,
            id: SsoId::Attribute("externalId".into()),
        }),
    );
    let d = desired(Presence::Active { create: true });
    let mut link = Link::unlinked("scim:7f3a");
    let actual = t.read(&d, &link).await.unwrap();
    assert!(matches!(actual.user, Actual::Absent));
    assert_eq!(credential_reads(&fake), 0, "no externalId: nothing to look up");
    link.profile.insert("externalId".into(), "auth0|J.Doe@idp".into());
    let actual = t.read(&d, &link).await.unwrap();
    assert!(
        matches!(&actual.user, Actual::Present(u) if u.id == uid),
        "{actual:?}"
    );
    let call = fake
        .calls()
        .into_iter()
        .find(|c| c.path.starts_with("/users/credential/"))
        .unwrap();
    assert_eq!(call.path, "/users/credential/oidc/auth0%7CJ.Doe%40idp");
    assert_eq!(call.status, 200);
}

/// Offboarding closes every account of the person: the one their email finds and the one their
/// SSO credential finds.
#[tokio::test]
async fn offboarding_closes_the_email_and_the_sso_account() {
    let fake = FakeLooker::start().await;
    let by_email = fake.add_user("jd@example.com", "J", "D");
    let by_saml = fake.add_user_without_email("J", "D");
    fake.add_sso_credential(&by_saml, "saml", "00u9sso", None);
    let t = target(&fake, saml(SsoId::IdpUserId));
    let d = desired(Presence::Offboarded {
        disable: true,
        revoke_sessions: true,
        revoke_api_keys: true,
        delete_after_days: None,
    });
    let actual = t.read(&d, &Link::unlinked(PERSON)).await.unwrap();
    let mut closed = t.linked(&actual);
    closed.sort();
    let mut want = vec![by_email, by_saml];
    want.sort();
    assert_eq!(closed, want);
    let p = t.diff(&d, &actual);
    assert_eq!(p.resolution.others.len(), 1, "{p:?}");
}
