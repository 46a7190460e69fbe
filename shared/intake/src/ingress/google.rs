//! Google Workspace Admin SDK Reports API push notifications at `/hooks/google`.
//!
//! Google signs nothing: the sender is authenticated by the channel token given to
//! `activities.watch`, echoed in `X-Goog-Channel-Token` and compared here in constant time against
//! every configured token (several, for rotation). The channel's first message
//! (`X-Goog-Resource-State: sync`) is answered 200 and enqueues nothing; every other message's body
//! is one Reports API activity, parsed by `gatehouse_domain::google`.
//!
//! Renames (issue 16): the Reports API names a user by email only, so a `RENAME_USER` leaves an
//! alias in the intake's store (`google:<new address>` → the person's subject key) and every later
//! event about the new address is published under the person's key ([`follow_renames`], here and
//! in the catch-up): one person in the directory, whatever their address becomes.

use super::Deps;
use super::pipeline::{self, Pipeline, Queue, Refusal, Request, Verified};
use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::{Envelope, Source};
use gatehouse_domain::google;
use gatehouse_domain::ports::{BackendError, QueueProducer, StateStore};
use gatehouse_store::state::AnyState;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::{Choice, ConstantTimeEq};

/// The route.
pub const PATH: &str = "/hooks/google";
/// `Source::GoogleWorkspace.as_str()`, the `source` label of this intake's metrics.
const SOURCE: &str = "google_workspace";

/// Where `received_at` comes from (injected so tests control time).
pub type Clock = gatehouse_domain::clock::SharedClock;

/// Reports push notifications as a [`pipeline::Intake`].
pub struct GoogleIntake {
    tokens: Vec<SecretString>,
    /// Channels Gatehouse made (`google_upkeep`): tokens derived from this secret, accepted
    /// while the channel is live in the store.
    channels: Option<(SecretString, AnyState)>,
    /// Where renamed addresses are remembered ([`follow_renames`]): the state store, so every
    /// ingress replica follows them; `None`: not followed.
    aliases: Option<AnyState>,
    max_body_bytes: usize,
    now: Clock,
}

/// The account-links namespace of the intake's rename aliases: person `google:<new address>`,
/// account the subject key of the person it names (the address they had when first seen).
pub const ALIAS_LINKS: &str = "google_workspace.alias";

/// Publish each envelope under the subject key of the person its address names (the person's
/// key when the address is one they were renamed to), and remember the new address of every
/// `RENAME_USER` (issue 16). In order, so a rename followed by an event about the new address in
/// one batch lands on one person.
pub async fn follow_renames<S: StateStore>(
    store: &S,
    envelopes: &mut [Envelope],
) -> Result<(), BackendError> {
    for env in envelopes.iter_mut() {
        if env.source != Source::GoogleWorkspace || !env.event.is_actionable() {
            continue;
        }
        // The latest alias of the address wins (an address given to another person later).
        if let Some(key) = store.account_links(ALIAS_LINKS, &env.subject.key).await?.pop() {
            tracing::debug!(address_key = %env.subject.key, subject = %key, "google address of a renamed person");
            env.subject.key = key;
        }
        if let Some(new) = google::renamed_to(env) {
            let alias = google::subject_key(new);
            if alias != env.subject.key {
                tracing::info!(subject = %env.subject.key, envelope_id = %env.id,
                    "google user renamed; the new address's events follow the person");
                store
                    .link_accounts(ALIAS_LINKS, &alias, std::slice::from_ref(&env.subject.key))
                    .await?;
            }
        }
    }
    Ok(())
}

pub fn router<Q: QueueProducer + Clone + 'static>(deps: &Deps<Q>) -> Router {
    build_following_renames(
        deps.queue.clone(),
        deps.config.google.channel_tokens.clone(),
        deps.config
            .google
            .channel_secret
            .clone()
            .map(|s| (s, deps.state.clone())),
        deps.config.google.max_body_bytes,
        gatehouse_domain::clock::system(),
        Some(deps.state.clone()),
    )
}

/// The route with explicit parts (tests inject the clock and the channel store).
pub fn build<Q: QueueProducer + 'static>(
    queue: Q,
    tokens: Vec<SecretString>,
    channels: Option<(SecretString, AnyState)>,
    max_body_bytes: usize,
    now: Clock,
) -> Router {
    build_following_renames(queue, tokens, channels, max_body_bytes, now, None)
}

/// [`build`], remembering renames in `aliases` ([`follow_renames`]).
pub fn build_following_renames<Q: QueueProducer + 'static>(
    queue: Q,
    tokens: Vec<SecretString>,
    channels: Option<(SecretString, AnyState)>,
    max_body_bytes: usize,
    now: Clock,
    aliases: Option<AnyState>,
) -> Router {
    let intake = GoogleIntake {
        aliases,
        ..GoogleIntake::new(tokens, channels, max_body_bytes, now)
    };
    Pipeline::route(intake, Queue(queue), PATH)
}

impl GoogleIntake {
    /// The intake with explicit parts, following no renames.
    pub fn new(
        tokens: Vec<SecretString>,
        channels: Option<(SecretString, AnyState)>,
        max_body_bytes: usize,
        now: Clock,
    ) -> GoogleIntake {
        GoogleIntake {
            tokens,
            channels,
            aliases: None,
            max_body_bytes,
            now,
        }
    }
}

/// Whether `given` equals any token; every token is compared, in constant time each.
fn token_matches(tokens: &[SecretString], given: &[u8]) -> bool {
    let mut ok = Choice::from(0);
    for t in tokens {
        ok |= given.ct_eq(t.expose_secret().as_bytes());
    }
    // An empty header never authenticates, even against an empty token.
    bool::from(ok) && !given.is_empty()
}

/// `X-Goog-Resource-State`, required on every message.
fn resource_state(request: &Request<()>) -> Result<&str, Refusal> {
    Some(request.header("x-goog-resource-state"))
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Refusal::malformed("missing X-Goog-Resource-State header"))
}

impl pipeline::Intake for GoogleIntake {
    const SOURCE: &'static str = SOURCE;
    /// The shared secret is a header: refused before the body is read.
    const BODY_SIGNED: bool = false;
    type Proof = ();
    type Item = Envelope;

    fn not_configured(&self) -> Option<&'static str> {
        (self.tokens.is_empty() && self.channels.is_none()).then_some(
            "no google channel token is configured (google.channel_tokens, google.channel_secret or GATEHOUSE_GOOGLE_CHANNEL_TOKEN)",
        )
    }
    fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }
    fn now(&self) -> DateTime<Utc> {
        self.now.now()
    }
    /// A configured token, or the token of a live channel Gatehouse made (looked up in the
    /// state store: 503 `unavailable` when it cannot be).
    async fn verify(&self, headers: &HeaderMap, _: &Bytes, now: DateTime<Utc>) -> Result<(), Refusal> {
        let given = headers
            .get("x-goog-channel-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let mut ok = !given.is_empty() && token_matches(&self.tokens, given);
        if !ok && let Some((secret, store)) = &self.channels {
            let channel_id = headers
                .get("x-goog-channel-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match super::google_upkeep::channel_accepts(secret, store, channel_id, given, now).await {
                Ok(accepted) => ok = accepted,
                Err(e) => {
                    tracing::error!(error = %e, "google channel lookup failed; google will retry");
                    return Err(Refusal::unavailable(
                        "unavailable",
                        "the channel could not be checked; retry",
                    ));
                }
            }
        }
        if ok {
            Ok(())
        } else {
            Err(Refusal::unauthorized(
                "missing or wrong X-Goog-Channel-Token header",
            ))
        }
    }
    /// The channel's first message (`sync`) yields nothing; any other is one activity.
    fn normalize(
        &self,
        request: &Verified<Request<()>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Envelope>, Refusal> {
        if google::is_sync(resource_state(request)?) {
            tracing::info!(
                channel_id = request.header("x-goog-channel-id"),
                resource_id = request.header("x-goog-resource-id"),
                "google channel sync received"
            );
            return Ok(Vec::new());
        }
        google::parse_activity(request.body(), now).map_err(|e| Refusal::malformed(e.to_string()))
    }
    async fn enrich(
        &self,
        request: &Verified<Request<()>>,
        items: &mut Vec<Envelope>,
    ) -> Result<(), Refusal> {
        if let Some(store) = &self.aliases
            && let Err(e) = follow_renames(store, items).await
        {
            tracing::error!(error = %e, context = self.context(request),
                "google rename aliases unavailable; google will retry");
            return Err(Refusal::unavailable(
                "unavailable",
                "the event could not be stored; retry",
            ));
        }
        Ok(())
    }
    fn context(&self, request: &Verified<Request<()>>) -> String {
        format!(
            "channel_id={} message_number={}",
            request.header("x-goog-channel-id"),
            request.header("x-goog-message-number")
        )
    }
    fn respond(&self, request: &Verified<Request<()>>, batch: &Verified<Vec<Envelope>>, _: u64) -> Response {
        if resource_state(request).is_ok_and(google::is_sync) {
            return axum::Json(json!({ "sync": true, "enqueued": 0 })).into_response();
        }
        pipeline::enqueued_and_ignored(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::test_support::{MemQueue, send};
    use axum::body::Body;
    use axum::http::Request;
    use axum::http::StatusCode;
    use gatehouse_domain::envelope::{IdentityEvent, Source};
    use std::sync::Arc;

    /// An in-memory queue that records what is published, or fails every publish.
    const TOKEN: &str = "245t1234tt83trrt333";
    const BODY: &[u8] = include_bytes!(
        "../../../../../shared/fixtures/google-workspace/reports.push.admin.CREATE_USER.body.docs.json"
    );

    fn fixed_now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-05-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn app(queue: MemQueue, tokens: &[&str]) -> Router {
        build(
            queue,
            tokens.iter().map(|t| SecretString::from(t.to_string())).collect(),
            None,
            4096,
            Arc::new(fixed_now),
        )
    }

    fn request(token: Option<&str>, state: Option<&str>, body: &[u8]) -> Request<Body> {
        let mut r = Request::post(PATH)
            .header("content-type", "application/json; utf-8")
            .header("x-goog-channel-id", "reportsApiId")
            .header("x-goog-message-number", "23");
        if let Some(t) = token {
            r = r.header("x-goog-channel-token", t);
        }
        if let Some(s) = state {
            r = r.header("x-goog-resource-state", s);
        }
        r.body(Body::from(body.to_vec())).unwrap()
    }

    /// Issue 16: a rename keeps the person's subject and the new address's later events follow
    /// it, through a second rename too; in one batch as across batches.
    #[tokio::test]
    async fn renamed_addresses_follow_the_person() {
        let dir = tempfile::tempdir().unwrap();
        let store = gatehouse_store::sqlite::Sqlite::open(dir.path()).await.unwrap();
        let event = |name: &str, params: &str, n: u32| {
            let body = format!(
                r#"{{"kind":"admin#reports#activity","id":{{"time":"2026-01-0{n}T00:00:00Z","uniqueQualifier":"{n}","applicationName":"admin"}},
                   "actor":{{"email":"admin@example.com","profileId":"1"}},
                   "events":[{{"type":"USER_SETTINGS","name":"{name}","parameters":[{params}]}}]}}"#
            );
            google::parse_activity(body.as_bytes(), fixed_now())
                .unwrap()
                .remove(0)
        };
        let email = |e: &str| format!(r#"{{"name":"USER_EMAIL","value":"{e}"}}"#);
        let rename =
            |from: &str, to: &str| format!(r#"{},{{"name":"NEW_VALUE","value":"{to}"}}"#, email(from));
        let mut batch = vec![
            event("CREATE_USER", &email("a@example.com"), 1),
            event("RENAME_USER", &rename("a@example.com", "b@example.com"), 2),
            event(
                "ADD_GROUP_MEMBER",
                &format!(
                    r#"{},{{"name":"GROUP_EMAIL","value":"g@example.com"}}"#,
                    email("b@example.com")
                ),
                3,
            ),
        ];
        follow_renames(&store, &mut batch).await.unwrap();
        let keys: Vec<&str> = batch.iter().map(|e| e.subject.key.as_str()).collect();
        assert_eq!(keys, ["google:a@example.com"; 3]);
        assert_eq!(batch[2].subject.email.as_deref(), Some("b@example.com"));

        let mut later = vec![
            event("RENAME_USER", &rename("b@example.com", "c@example.com"), 4),
            event("SUSPEND_USER", &email("C@example.com"), 5),
            event("SUSPEND_USER", &email("someone@example.com"), 6),
        ];
        follow_renames(&store, &mut later).await.unwrap();
        let keys: Vec<&str> = later.iter().map(|e| e.subject.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "google:a@example.com",
                "google:a@example.com",
                "google:someone@example.com"
            ]
        );
    }

    #[tokio::test]
    async fn documented_notification_is_enqueued_with_the_injected_clock() {
        let q = MemQueue::default();
        let (status, body) = send(
            app(q.clone(), &["old", TOKEN]),
            request(Some(TOKEN), Some("CREATE_USER"), BODY),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"enqueued": 1, "ignored": 0}));
        let published = q.published.lock().unwrap();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].event, IdentityEvent::UserCreated);
        assert_eq!(published[0].received_at, fixed_now());
    }

    #[tokio::test]
    async fn sync_is_answered_without_enqueueing() {
        let q = MemQueue::default();
        let (status, body) = send(app(q.clone(), &[TOKEN]), request(Some(TOKEN), Some("sync"), b"")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["sync"], true);
        assert!(q.published.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn rejections_enqueue_nothing() {
        let q = MemQueue::default();
        let big = vec![b' '; 5000];
        let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
            (
                request(None, Some("CREATE_USER"), BODY),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                request(Some(""), Some("CREATE_USER"), BODY),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                request(Some("245t1234tt83trrt334"), Some("sync"), b""),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                request(Some(TOKEN), Some("CREATE_USER"), &big),
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
            ),
            (
                request(Some(TOKEN), None, BODY),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                request(Some(TOKEN), Some("CREATE_USER"), b"{not json"),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                request(Some(TOKEN), Some("CREATE_USER"), b""),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                request(
                    Some(TOKEN),
                    Some("CREATE_USER"),
                    br#"{"kind":"admin#reports#activity"}"#,
                ),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
        ];
        for (req, want, code) in cases {
            let (status, body) = send(app(q.clone(), &[TOKEN]), req).await;
            assert_eq!(status, want, "{body}");
            assert_eq!(body["error"], code);
            assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
            assert!(!body.to_string().contains(TOKEN), "the token is never echoed");
        }
        assert!(q.published.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn without_a_token_configured_the_hook_is_unavailable() {
        let (status, body) = send(
            app(MemQueue::default(), &[]),
            request(Some(TOKEN), Some("CREATE_USER"), BODY),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "not_configured");
    }

    #[tokio::test]
    async fn a_failed_enqueue_is_503_so_google_retries() {
        let q = MemQueue {
            fail: true,
            ..Default::default()
        };
        let (status, body) = send(app(q, &[TOKEN]), request(Some(TOKEN), Some("CREATE_USER"), BODY)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "enqueue_failed");
    }

    #[test]
    fn metrics_label_is_the_source_name() {
        assert_eq!(SOURCE, Source::GoogleWorkspace.as_str());
    }

    #[test]
    fn any_configured_token_matches() {
        let tokens: Vec<SecretString> = ["a-token", "b-token"]
            .iter()
            .map(|t| SecretString::from(t.to_string()))
            .collect();
        assert!(token_matches(&tokens, b"a-token"));
        assert!(token_matches(&tokens, b"b-token"));
        assert!(!token_matches(&tokens, b"c-token"));
        assert!(!token_matches(&tokens, b"a-toke"));
        assert!(!token_matches(&[], b""));
    }
}
