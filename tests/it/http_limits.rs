//! The intake listener's timeouts and limits (`[server]`): a client dripping its headers is cut
//! off, connections beyond the limit are closed, a flooded intake sheds with 429 while another
//! intake still answers. Raw sockets, short limits, every wait polled up to a deadline.

use gatehouse_e2e::{OKTA_SECRET, Options, TestApp, spawn_app};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const SCIM_TOKEN: &str = "scim-limits-token-0123456789";

async fn app_with(server_toml: &str) -> TestApp {
    spawn_app(Options {
        extra_toml: format!(
            "[server]\n{server_toml}\n[scim]\n[[scim.tokens]]\nname = \"okta\"\ntoken = \"{SCIM_TOKEN}\"\n"
        ),
        ..Options::default()
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Whether the server closes `s` before `deadline`; with `drip`, one header byte is written
/// every 100 ms meanwhile (a slowloris client).
async fn closed_by_server(s: &mut TcpStream, drip: bool, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        if Instant::now() > deadline {
            return false;
        }
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return true,
                Ok(_) => {} // an error response before the close: keep reading
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if drip && s.write_all(b"a").await.is_err() {
                    return true;
                }
            }
        }
    }
}

/// One request on a fresh connection; the status line's code.
async fn status_of(app: &TestApp, request: &str) -> u16 {
    let mut s = connect(app).await;
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_dripping_its_headers_is_cut_off() {
    let app = app_with("header_read_timeout = \"300ms\"").await;
    let mut s = connect(&app).await;
    s.write_all(b"POST /hooks/okta HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    assert!(
        closed_by_server(&mut s, true, deadline).await,
        "a connection dripping one header byte every 100 ms must be closed"
    );
    // A client that connects and never writes is cut off too.
    let mut silent = connect(&app).await;
    assert!(
        closed_by_server(&mut silent, false, deadline).await,
        "a silent connection must be closed"
    );
    app.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_the_held_ones_still_work() {
    let app = app_with("max_connections = 3\nheader_read_timeout = \"60s\"").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&app).await);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut excess = connect(&app).await;
    assert!(
        closed_by_server(&mut excess, false, deadline).await,
        "the fourth connection must be closed"
    );
    // The three held connections were accepted and are served.
    let s = &mut held[0];
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "{buf:?}"
    );
    // Once one is closed, a new connection gets a slot again.
    drop(held.remove(0));
    let request = "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    while status_of(&app, request).await != 200 {
        assert!(Instant::now() < deadline, "a slot was not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_flooded_intake_answers_429_with_retry_after_and_others_still_get_through() {
    let app = app_with("per_source_concurrency = 1\nretry_after = \"2s\"").await;
    // One Okta request in flight: authenticated headers, half of the body.
    let mut inflight = connect(&app).await;
    inflight
        .write_all(
            format!(
                "POST /hooks/okta HTTP/1.1\r\nhost: x\r\nauthorization: {OKTA_SECRET}\r\n\
                 content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"data\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let shed = loop {
        let r = app
            .http
            .post(format!("{}/hooks/okta", app.base))
            .header("authorization", OKTA_SECRET)
            .header("content-type", "application/json")
            .body("not json")
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            break r;
        }
        assert!(Instant::now() < deadline, "a second okta request was never shed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(shed.headers()["retry-after"], "2");
    let body: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    // Another intake is not affected.
    let scim = app
        .http
        .get(format!("{}/scim/v2/Users", app.base))
        .bearer_auth(SCIM_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(scim.status(), 200);
    // Once the slow request ends, Okta is served again.
    drop(inflight);
    loop {
        let r = app
            .http
            .post(format!("{}/hooks/okta", app.base))
            .header("authorization", OKTA_SECRET)
            .body("not json")
            .send()
            .await
            .unwrap();
        if r.status() != 429 {
            assert_eq!(r.status(), 400);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "okta stayed shed after the slow request ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = app.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("gatehouse_ingress_rejected_total")
                && l.contains("source=\"okta\"")
                && l.contains("reason=\"overloaded\"")),
        "{m}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_request_whose_body_never_finishes_is_answered_408() {
    let app = app_with("request_timeout = \"300ms\"").await;
    let mut s = connect(&app).await;
    s.write_all(
        format!(
            "POST /hooks/okta HTTP/1.1\r\nhost: x\r\nauthorization: {OKTA_SECRET}\r\n\
             content-length: 1000\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut chunk = [0u8; 512];
    while !buf.starts_with(b"HTTP/1.1 ") || !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!("no response before the deadline: {other:?}"),
        }
    }
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    app.stop().await;
}
