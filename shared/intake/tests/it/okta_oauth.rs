//! Okta through an API Services app (OAuth 2.0 client credentials, `private_key_jwt`) instead of
//! an SSWS token: the System Log catch-up and the directory import work with it, the access
//! token is reused, and a wrong key fails with a clear error that does not contain the key.

use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::okta_log::{LogCursor, LogCursors};
use gatehouse_domain::ports::{BackendError, Directory, QueueProducer, SubjectState};
use gatehouse_intake::ingress::okta_api::{OktaApi, OktaApiError};
use gatehouse_intake::ingress::okta_catchup::{Catchup, CatchupConfig, CatchupError};
use gatehouse_intake::ingress::okta_import::{DirectoryImport, Needs};
use gatehouse_platform::config::OktaServiceApp;
use gatehouse_testkit::FakeOkta;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = include_str!("../../../testkit/fixtures/okta/service-app.test-key.pem");
const OTHER_KEY: &str = include_str!("../../../testkit/fixtures/okta/service-app.other-test-key.pem");
const JWK: &str = include_str!("../../../testkit/fixtures/okta/service-app.test-key.public.jwk.json");
const CLIENT_ID: &str = "0oa1gatehousesvc";

#[derive(Clone, Default)]
struct Sink {
    published: Arc<Mutex<Vec<Envelope>>>,
    cursors: Arc<Mutex<BTreeMap<String, LogCursor>>>,
}

impl QueueProducer for Sink {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), BackendError> {
        self.published.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }
}

impl Directory for Sink {
    async fn subjects(&self) -> Result<Vec<SubjectState>, BackendError> {
        Ok(Vec::new())
    }
}

impl LogCursors for Sink {
    async fn load_okta_cursor(&self, org: &str) -> Result<Option<LogCursor>, BackendError> {
        Ok(self.cursors.lock().unwrap().get(org).cloned())
    }
    async fn save_okta_cursor(&self, org: &str, cursor: &LogCursor) -> Result<(), BackendError> {
        self.cursors.lock().unwrap().insert(org.into(), cursor.clone());
        Ok(())
    }
}

async fn fake_with_app() -> FakeOkta {
    let fake = FakeOkta::start().await;
    let jwk: Value = serde_json::from_str(JWK).unwrap();
    fake.add_service_app(
        CLIENT_ID,
        jwk["n"].as_str().unwrap(),
        jwk["e"].as_str().unwrap(),
        &["okta.logs.read", "okta.users.read", "okta.groups.read"],
    );
    fake
}

fn app(fake: &FakeOkta, key: &str) -> OktaServiceApp {
    OktaServiceApp {
        url: fake.base_url(),
        client_id: CLIENT_ID.into(),
        private_key: SecretString::from(key.to_string()),
        key_id: Some("gatehouse-test".into()),
    }
}

fn token_calls(fake: &FakeOkta) -> usize {
    fake.calls()
        .iter()
        .filter(|c| c.path == "/oauth2/v1/token")
        .count()
}

#[tokio::test]
async fn the_catch_up_and_the_import_work_with_a_service_app_and_reuse_its_token() {
    let fake = fake_with_app().await;
    fake.deactivate("00u1", "ann@example.com");
    fake.add_user(
        "00u1",
        json!({"login": "ann@example.com", "email": "ann@example.com", "department": "Finance"}),
    );
    let sink = Sink::default();
    let api = Arc::new(OktaApi::with_service_app(&app(&fake, KEY), Duration::from_secs(10)).unwrap());

    let catchup = Catchup::new(
        OktaApi::with_service_app(&app(&fake, KEY), Duration::from_secs(10)).unwrap(),
        sink.clone(),
        sink.clone(),
        CatchupConfig {
            org: "acme".into(),
            page_size: 10,
            poll_interval: Duration::from_secs(60),
            initial_lookback: Duration::from_secs(3600),
        },
    );
    let r = catchup.poll_once().await.unwrap();
    assert_eq!(r.enqueued, 1, "{r:?}");

    let needs = Needs {
        attributes: ["department".to_string()].into(),
        groups: Default::default(),
    };
    let import = DirectoryImport::new(api.clone(), sink.clone(), sink.clone(), "acme".into(), needs, 200);
    let r = import.import_once(gatehouse_domain::clock::now()).await.unwrap();
    assert_eq!(r.users, 1);
    let r = import.import_once(gatehouse_domain::clock::now()).await.unwrap();
    assert_eq!(r.users, 1);
    let published = sink.published.lock().unwrap().clone();
    assert!(
        published
            .iter()
            .any(|e| e.profile.get("department").map(String::as_str) == Some("Finance"))
    );
    // One token for the catch-up's client, one for the import's, reused across its calls.
    assert_eq!(token_calls(&fake), 2, "{:?}", fake.calls());
    assert!(fake.calls().iter().all(|c| c.status == 200), "{:?}", fake.calls());
}

#[tokio::test]
async fn a_key_okta_does_not_know_fails_clearly_without_the_key_in_the_error() {
    let fake = fake_with_app().await;
    let sink = Sink::default();
    let catchup = Catchup::new(
        OktaApi::with_service_app(&app(&fake, OTHER_KEY), Duration::from_secs(10)).unwrap(),
        sink.clone(),
        sink.clone(),
        CatchupConfig {
            org: "acme".into(),
            page_size: 10,
            poll_interval: Duration::from_secs(60),
            initial_lookback: Duration::from_secs(3600),
        },
    );
    let e = catchup.poll_once().await.unwrap_err();
    assert!(
        matches!(&e, CatchupError::Api(OktaApiError::Token { status: 401, error, .. }) if error == "invalid_client"),
        "{e:?}"
    );
    let shown = format!("{e} {e:?}");
    assert!(
        shown.contains("okta refused the service app's token request (401 invalid_client)"),
        "{shown}"
    );
    let body_line = OTHER_KEY.lines().nth(1).unwrap();
    assert!(
        !shown.contains(body_line) && !shown.contains("PRIVATE KEY"),
        "{shown}"
    );

    // Not a key at all: refused when the client is built, naming the problem, not the value.
    let garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbCwgc2VjcmV0LXZhbHVlLTQy\n-----END PRIVATE KEY-----\n";
    let e = OktaApi::with_service_app(&app(&fake, garbage), Duration::from_secs(10)).unwrap_err();
    let shown = format!("{e} {e:?}");
    assert_eq!(
        e.to_string(),
        "okta.api private key is not a usable RSA private key in PEM (PKCS#8 or PKCS#1): not a PKCS#8 RSA key"
    );
    assert!(!shown.contains("bm90IGEga2V5"), "{shown}");
    assert!(
        !fake.calls().iter().any(|c| c.path.starts_with("/api/")),
        "no API call without a token"
    );
}
