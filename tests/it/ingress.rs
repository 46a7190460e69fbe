//! The ingress: Okta verification, authentication, limits, and "200 only after durable enqueue".

use gatehouse_e2e::{OKTA_SECRET, Options, okta_fixture, spawn_app};

#[tokio::test]
async fn verification_challenge_is_echoed() {
    let app = spawn_app(Options::default()).await;
    let r = app
        .http
        .get(format!("{}/hooks/okta", app.base))
        .header("authorization", OKTA_SECRET)
        .header(
            "x-okta-verification-challenge",
            "CmOdYsRmVtZcw5pGx2PjWcDaJ1HVpA0y3ZcIxOHd",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&okta_fixture("event-hook-verification.response.json")).unwrap();
    assert_eq!(body, expected);
    app.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_secret_is_401_and_enqueues_nothing() {
    let app = spawn_app(Options::default()).await;
    let body = okta_fixture("event-hook.user.lifecycle.deactivate.constructed.json");
    for auth in [None, Some("wrong"), Some(""), Some("test-okta-secret-but-longer")] {
        let mut req = app
            .http
            .post(format!("{}/hooks/okta", app.base))
            .body(body.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "auth {auth:?}");
        let err: serde_json::Value = r.json().await.unwrap();
        assert_eq!(err["error"], "unauthorized");
    }
    let r = app
        .http
        .get(format!("{}/hooks/okta", app.base))
        .header("x-okta-verification-challenge", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "verification needs the secret too");
    assert_eq!(app.store.queue_depth().await.unwrap(), 0);
    assert!(app.ledger().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_rejected() {
    let app = spawn_app(Options::default()).await;
    let big = vec![b' '; 300 * 1024];
    let r = app.post_okta(&big).await;
    assert_eq!(r.status(), 413);
    // chunked, so there is no content-length to check up front: the limit applies while reading
    assert_eq!(chunked_post(&app.base, &vec![b' '; 300 * 1024]).await, 413);
    assert_eq!(
        chunked_post(&app.base, b"{}").await,
        400,
        "a small chunked body is read"
    );

    let r = app
        .post_okta(b"{\"eventType\": \"com.okta.event_hook\", \"data\": ")
        .await;
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err["error"], "bad_request");
    assert!(
        err["detail"].as_str().unwrap().contains("not valid json"),
        "{err}"
    );

    let r = app
        .post_okta(&okta_fixture("logevent.user.lifecycle.deactivate.docs.json"))
        .await;
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(
        err["detail"]
            .as_str()
            .unwrap()
            .contains("not an okta event hook body"),
        "{err}"
    );
    assert_eq!(app.store.queue_depth().await.unwrap(), 0);
    app.stop().await;
}

/// POST with `Transfer-Encoding: chunked` over a raw socket; returns the status code.
async fn chunked_post(base: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /hooks/okta HTTP/1.1\r\nhost: {addr}\r\nauthorization: {OKTA_SECRET}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(16 * 1024) {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(chunk);
        frame.extend_from_slice(b"\r\n");
        if s.write_all(&frame).await.is_err() {
            break; // the server may answer 413 and close before reading everything
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn unknown_event_types_are_accepted_and_counted() {
    let app = spawn_app(Options::default()).await;
    let r = app
        .post_okta(&okta_fixture("event-hook.user.session.start.docs.json"))
        .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["ignored"], 1);
    app.drained().await;
    let m = app.metrics().await;
    assert!(
        m.lines().any(|l| l.starts_with("gatehouse_events_received_total")
            && l.contains("kind=\"ignored\"")
            && l.contains("actionable=\"false\"")),
        "{m}"
    );
    assert!(app.ledger().await.is_empty(), "an ignored event plans nothing");
    app.stop().await;
}

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let app = spawn_app(Options::default()).await;
    for (path, code) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 200),
        ("/nope", 404),
    ] {
        let r = app.http.get(format!("{}{path}", app.admin)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), code, "{path}");
    }
    app.stop().await;
}
