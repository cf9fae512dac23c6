//! The HTTP re-exchange: against the real STS router served on a local port, and against a
//! fake STS that records the request and answers as told (reference `gateway.md` §10 29–34).
//!
//! | test | behaviours |
//! |---|---|
//! | [`http_exchange_against_the_real_sts`] | the HTTP path end to end (envelope verified by the STS, JWKS over HTTP) |
//! | [`request_shape_and_envelope`] | 29 |
//! | [`relayed_errors_timeout_and_the_circuit`] | 31, 32, 33, 34 |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use caracal_core::clock::SharedClock;
use caracal_core::exchange::envelope::{self, GatewayKey};
use caracal_gateway::client::http_client;
use caracal_gateway::exchange::{ExchangeInput, Exchanger, HttpExchanger};
use caracal_gateway::jwks::HttpJwksSource;
use http_body_util::BodyExt;
use support::{harness_parts, sts};

/// Serve `router` on a local port; returns its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn http_exchange_against_the_real_sts() {
    let h = harness_parts(
        |_| {},
        |w, mut p| {
            // The STS router, served on a local port; exchange and JWKS go over HTTP.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let router = w.router.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            let client = http_client(Duration::from_secs(5)).unwrap();
            let clock: SharedClock = Arc::new(w.clock.clone());
            p.exchanger = Arc::new(HttpExchanger::new(
                client.clone(),
                &base,
                Some(GatewayKey::from_hex(sts::GATEWAY_KEY_HEX).unwrap()),
                Duration::from_secs(5),
                clock,
            ));
            p.jwks = Arc::new(HttpJwksSource::new(client, &base, Duration::from_secs(5)));
            p
        },
    )
    .await;
    let m = h.mandate().await;
    let r = h.get("/v1/x", Some(&m), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let up = &h.up.requests()[0];
    let auth = up.headers["authorization"].to_str().unwrap();
    assert_ne!(auth, format!("Bearer {m}"));
    // A replay is still refused locally.
    assert_eq!(
        h.get("/v1/x", Some(&m), &[]).await.description(),
        "token replay detected"
    );
}

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    calls: Arc<AtomicUsize>,
    answer: Arc<Mutex<(u16, &'static str, String)>>,
    hang: Arc<Mutex<Option<Duration>>>,
}

async fn fake_sts() -> (Fake, String) {
    let fake = Fake::default();
    let f = fake.clone();
    let router = axum::Router::new().fallback(move |req: Request| {
        let f = f.clone();
        async move {
            f.calls.fetch_add(1, Ordering::SeqCst);
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            f.seen.lock().unwrap().push((parts.headers, body));
            let hang = *f.hang.lock().unwrap();
            if let Some(d) = hang {
                tokio::time::sleep(d).await;
            }
            let (status, ct, body) = f.answer.lock().unwrap().clone();
            Response::builder()
                .status(status)
                .header("content-type", ct)
                .body(axum::body::Body::from(body))
                .unwrap()
                .into_response()
        }
    });
    let base = serve(router).await;
    (fake, base)
}

fn input() -> ExchangeInput<'static> {
    ExchangeInput {
        zone_id: "zone-1",
        client_id: "app-1",
        subject_token: "h.p.s",
        resource: "resource://r",
        method: "POST",
        path: "/v1/items",
        request_id: "req-1",
        signature: None,
    }
}

#[tokio::test]
async fn request_shape_and_envelope() {
    let (fake, base) = fake_sts().await;
    *fake.answer.lock().unwrap() = (
        200,
        "application/json",
        serde_json::json!({"access_token": "RES", "token_type": "Bearer", "expires_in": 60,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "upstreams": {"resource://r": {"url": "http://u/", "auth_mode": "none"}}})
        .to_string(),
    );
    let key = GatewayKey::from_hex(sts::GATEWAY_KEY_HEX).unwrap();
    let clock: SharedClock = Arc::new(caracal_core::clock::SystemClock);
    let x = HttpExchanger::new(
        http_client(Duration::from_secs(2)).unwrap(),
        &base,
        Some(key.clone()),
        Duration::from_secs(2),
        clock,
    );
    let g = x.exchange(&input()).await.unwrap();
    assert_eq!(g.access_token, "RES");
    x.exchange(&input()).await.unwrap();
    let seen = fake.seen.lock().unwrap().clone();
    let (headers, body) = &seen[0];
    let form: Vec<(String, String)> = body
        .split(|b| *b == b'&')
        .map(|kv| {
            let s = std::str::from_utf8(kv).unwrap();
            let (k, v) = s.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let keys: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "application_id",
            "gateway_request_id",
            "grant_type",
            "request_method",
            "request_path",
            "resource",
            "subject_token",
            "subject_token_type",
            "zone_id"
        ]
    );
    assert_eq!(headers["x-request-id"], "req-1");
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
    let ts = headers[envelope::TIMESTAMP_HEADER].to_str().unwrap();
    let nonce = headers[envelope::NONCE_HEADER].to_str().unwrap();
    let sig = headers[envelope::SIGNATURE_HEADER].to_str().unwrap();
    assert_eq!(nonce.len(), 64);
    assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        sig,
        envelope::sign(&key, ts, nonce, "POST", "/oauth/2/token", body)
    );
    assert_ne!(
        seen[1].0[envelope::NONCE_HEADER],
        nonce,
        "a fresh nonce per call"
    );
}

#[tokio::test]
async fn relayed_errors_timeout_and_the_circuit() {
    let (fake, base) = fake_sts().await;
    let clock: SharedClock = Arc::new(caracal_core::clock::SystemClock);
    let x = HttpExchanger::new(
        http_client(Duration::from_secs(2)).unwrap(),
        &base,
        None,
        Duration::from_millis(500),
        clock,
    );
    // 34
    *fake.answer.lock().unwrap() = (200, "text/html", "<html/>".into());
    let e = x.exchange(&input()).await.unwrap_err();
    assert_eq!(
        (e.deny.status, &*e.deny.description),
        (502, "sts response invalid")
    );
    *fake.answer.lock().unwrap() = (
        200,
        "application/json",
        serde_json::json!({"access_token": "RES", "token_type": "Bearer", "expires_in": 60,
            "issued_token_type": "x"})
        .to_string(),
    );
    let e = x.exchange(&input()).await.unwrap_err();
    assert_eq!(
        (e.deny.status, &*e.deny.code, &*e.deny.description),
        (403, "access_denied", "resource upstream not configured")
    );
    // 33
    *fake.hang.lock().unwrap() = Some(Duration::from_secs(3));
    let e = x.exchange(&input()).await.unwrap_err();
    assert_eq!((e.deny.status, &*e.deny.description), (504, "sts timeout"));
    assert!(e.counted());
    *fake.hang.lock().unwrap() = None;

    // 31 / 32 through the whole Gateway.
    let (fake, base) = fake_sts().await;
    let b2 = base.clone();
    let h = harness_parts(
        |_| {},
        move |w, mut p| {
            let clock: SharedClock = Arc::new(w.clock.clone());
            p.exchanger = Arc::new(HttpExchanger::new(
                http_client(Duration::from_secs(2)).unwrap(),
                &b2,
                None,
                Duration::from_secs(2),
                clock,
            ));
            p
        },
    )
    .await;
    *fake.answer.lock().unwrap() = (
        503,
        "application/json",
        r#"{"error":"policy_eval_failed"}"#.into(),
    );
    for _ in 0..3 {
        let m = h.mandate().await;
        let r = h.get("/a", Some(&m), &[]).await;
        assert_eq!((r.status.as_u16(), r.error()), (503, "policy_eval_failed"));
    }
    assert!(
        !h.gw.breaker().is_open(),
        "32: policy_eval_failed does not count"
    );
    *fake.answer.lock().unwrap() = (
        503,
        "application/json",
        r#"{"error":"sts_unavailable"}"#.into(),
    );
    for _ in 0..3 {
        let m = h.mandate().await;
        let r = h.get("/a", Some(&m), &[]).await;
        assert_eq!((r.status.as_u16(), r.error()), (503, "sts_unavailable"));
    }
    let before = fake.calls.load(Ordering::SeqCst);
    let m = h.mandate().await;
    let r = h.get("/a", Some(&m), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error(), r.description()),
        (503, "sts_unavailable", "sts unavailable")
    );
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        before,
        "fast fail: no STS call"
    );
    assert!(h.gw.breaker().is_open());
    // After 10 s one probe goes through; its success closes the circuit.
    h.w.clock.advance(chrono::Duration::seconds(11));
    h.gw.reload_revocations().await.unwrap();
    *fake.answer.lock().unwrap() = (
        200,
        "application/json",
        serde_json::json!({"access_token": "RES", "token_type": "Bearer", "expires_in": 60,
            "issued_token_type": "x",
            "upstreams": {sts::PIPERNET: {"url": format!("http://127.0.0.1:{}/", h.up.addr.port()), "auth_mode": "none"}}})
        .to_string(),
    );
    let m = h.mandate().await;
    let r = h.get("/a", Some(&m), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!h.gw.breaker().is_open());
}
