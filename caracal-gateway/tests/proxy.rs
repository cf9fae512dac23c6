//! The Gateway in front of the real (in-process) STS and a real local upstream that records
//! what it received (reference `gateway.md` §10 conformance behaviours).
//!
//! | test | behaviours |
//! |---|---|
//! | [`caracal_jwt_upstream_sees_the_resource_mandate_only`] | 39, 42, 47, 49 |
//! | [`provider_key_reaches_the_upstream_never_the_agent`] | 38, 39, 40 |
//! | [`replayed_mandate_is_refused`] | 14, 15 |
//! | [`mid_stream_revocation_cuts_the_sse_stream`] | 24, 46 |
//! | [`ssrf_targets_are_refused`] | 35, 37 (stricter private/loopback rule) |
//! | [`preflight_codes`] | 1, 2, 6, 7, 9, 10, 13, 20, 25, 28 |
//! | [`redirects_are_not_followed`] | 44 |
//! | [`metrics_count_what_happened`] | 52 (§8.2 names, `/metrics.json`) |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use axum::body::Bytes;
use caracal_core::model::provider::ProviderKind;
use caracal_core::store::directory::ResourceStore;
use caracal_core::streams::EntryId;
use caracal_gateway::revocation::AnchorKind;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use serde_json::{Value, json};
use support::{Harness, PIPERNET, harness, harness_with, sts};

async fn set_upstream(h: &Harness, url: &str) {
    let mut r =
        h.w.store
            .get_resource(&h.w.zone, &h.w.pipernet.id)
            .await
            .unwrap()
            .unwrap();
    r.upstream_url = Some(url.to_owned());
    h.w.store.update_resource(&r).await.unwrap();
}

/// Audit events of `event_type` flushed to the stream.
async fn audit_events(h: &Harness, event_type: &str) -> Vec<Value> {
    h.gw.emitter().flush().await.ok();
    let entries =
        h.gw.streams()
            .range("caracal.audit.events", EntryId::MIN, EntryId::MAX, None)
            .await
            .unwrap();
    entries
        .iter()
        .filter_map(|e| e.fields.get("data"))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["event_type"] == event_type)
        .collect()
}

#[tokio::test]
async fn caracal_jwt_upstream_sees_the_resource_mandate_only() {
    let h = harness().await;
    let m = h.mandate().await;
    let r = h
        .get(
            "/v1/items?fixed=client&extra=1",
            Some(&m),
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("baggage", "caracal.session=s, tenant=example"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["ok"], true);
    let seen = h.up.requests();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up.uri, "/base/v1/items?extra=1&fixed=1");
    let auth = up.headers["authorization"].to_str().unwrap();
    let resource_mandate = auth.strip_prefix("Bearer ").unwrap();
    assert_ne!(
        resource_mandate, m,
        "the agent's mandate never reaches the upstream"
    );
    assert_eq!(sts::claims(resource_mandate)["use"], "resource");
    for (name, _) in up.headers.iter() {
        assert!(!name.as_str().starts_with("x-caracal-"), "{name}");
    }
    for v in up.headers.values() {
        assert!(!v.to_str().unwrap_or("").contains(&m));
    }
    assert_eq!(up.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(up.headers["baggage"], "tenant=example");
    assert_eq!(
        up.headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(up.headers["x-request-id"], r.headers["x-request-id"]);
    let expires_in: i64 = r.headers["x-caracal-token-expires-in"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(expires_in > 35);
    let events = audit_events(&h, "gateway_resource_request").await;
    assert_eq!(events.len(), 1);
    let meta: Value = events[0]["metadata_json"].clone();
    assert_eq!(events[0]["decision"], "allow");
    assert_eq!(events[0]["evaluation_status"], "executed");
    assert_eq!(meta["upstream_status"], 200);
    assert_eq!(meta["result_class"], "success");
    assert_eq!(meta["auth_mode"], "caracal_jwt");
    assert_eq!(meta["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let text = events[0].to_string();
    assert!(!text.contains(&m) && !text.contains(resource_mandate) && !text.contains("/v1/items"));
}

#[tokio::test]
async fn provider_key_reaches_the_upstream_never_the_agent() {
    let h = harness().await;
    h.provider(
        ProviderKind::ApiKey,
        json!({"header_name": "X-Api-Key", "auth_scheme": "Token"}),
        json!({"api_key": "PROVIDER-KEY-123"}),
    )
    .await;
    let m = h.mandate().await;
    let r = h.get("/x", Some(&m), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let up = &h.up.requests()[0];
    assert_eq!(up.headers["x-api-key"], "Token PROVIDER-KEY-123");
    assert!(up.headers.get("authorization").is_none());
    assert!(!r.text.contains("PROVIDER-KEY-123"));
    for v in r.headers.values() {
        assert!(!v.to_str().unwrap_or("").contains("PROVIDER-KEY-123"));
    }
    let events = audit_events(&h, "gateway_resource_request").await;
    assert!(!events[0].to_string().contains("PROVIDER-KEY-123"));
    assert_eq!(events[0]["metadata_json"]["auth_mode"], "provider_apikey");
}

#[tokio::test]
async fn provider_credential_is_pinned_to_its_hosts() {
    let h = harness().await;
    h.provider(
        ProviderKind::ApiKey,
        json!({"header_name": "X-Api-Key", "allowed_token_hosts": ["api.vendor.com"]}),
        json!({"api_key": "PROVIDER-KEY-123"}),
    )
    .await;
    let m = h.mandate().await;
    let r = h.get("/x", Some(&m), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        r.description(),
        "provider credential not allowed for upstream host"
    );
    assert!(h.up.requests().is_empty());
    let events = audit_events(&h, "gateway_resource_request").await;
    assert_eq!(events[0]["evaluation_status"], "upstream_rejected");
    assert_eq!(
        events[0]["metadata_json"]["error_kind"],
        "provider_host_not_allowed"
    );
}

#[tokio::test]
async fn replayed_mandate_is_refused() {
    let h = harness().await;
    let m = h.mandate().await;
    assert_eq!(h.get("/a", Some(&m), &[]).await.status, StatusCode::OK);
    let r = h.get("/a", Some(&m), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (r.error(), r.description()),
        ("invalid_token", "token replay detected")
    );
    assert_eq!(
        r.body["requestId"],
        r.headers["x-request-id"].to_str().unwrap()
    );
    assert_eq!(
        h.up.requests().len(),
        1,
        "the replay never reached the upstream"
    );
    let replays = audit_events(&h, "replay_detected").await;
    assert_eq!(replays.len(), 1);
    assert_eq!(replays[0]["decision"], "deny");
    assert_eq!(replays[0]["evaluation_status"], "anomaly");
    let meta = &replays[0]["metadata_json"];
    for k in ["jti", "resource", "client_id", "subject_fp", "request_id"] {
        assert!(meta.get(k).is_some(), "{k}");
    }
    // 15: a mandate whose first use failed at the STS is burned too.
    let m3 = h.mandate().await;
    let mut req = hyper::Request::get(h.url("/a"))
        .header("x-caracal-resource", "resource://unknown")
        .header("authorization", format!("Bearer {m3}"));
    req = req.header("x-request-id", "gw-rid-1");
    let r = h.send(req.body(Full::new(Bytes::new())).unwrap()).await;
    assert!(r.status.is_client_error(), "{}", r.text);
    assert_eq!(
        r.body["requestId"], "gw-rid-1",
        "STS error relayed with the Gateway's id"
    );
    let again = h.get("/a", Some(&m3), &[]).await;
    assert_eq!(again.description(), "token replay detected");
}

#[tokio::test]
async fn mid_stream_revocation_cuts_the_sse_stream() {
    let h = harness().await;
    let m = h.mandate().await;
    let sid = sts::claims(&m)["sid"].as_str().unwrap().to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    *h.up.sse.lock().unwrap() = Some(tx);
    let request = hyper::Request::get(h.url("/sse"))
        .header("x-caracal-resource", PIPERNET)
        .header("authorization", format!("Bearer {m}"))
        .header("te", "trailers")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let client = h.client.clone();
    let response = tokio::spawn(async move { client.request(request).await });
    let events = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    events
        .send(Bytes::from_static(b"data: one\n\n"))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["trailer"], "x-caracal-revoked");
    let mut body = response.into_body();
    // The first event arrives on its own (no buffering).
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first event not relayed")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: one\n\n");
    h.gw.revocations().mark(AnchorKind::Authority, &sid);
    events
        .send(Bytes::from_static(b"data: two\n\n"))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let mut trailers = None;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("stream not cut")
    {
        match frame.unwrap().into_data() {
            Ok(d) => rest.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    assert!(rest.is_empty(), "nothing after the revocation: {rest:?}");
    assert_eq!(trailers.unwrap()["x-caracal-revoked"], "true");
    drop(events);
    let audit = audit_events(&h, "gateway_resource_request").await;
    assert_eq!(audit[0]["metadata_json"]["revocation_interrupted"], true);
    assert_eq!(audit[0]["evaluation_status"], "executed");
    // 13 / 20: a new request with that anchor is refused before the STS.
    assert!(
        h.up.requests()[0].headers.get("te").is_none(),
        "TE is hop-by-hop"
    );
    let m2 = h.mandate().await;
    let root = sts::claims(&m2)["root_sid"].as_str().unwrap().to_owned();
    h.gw.revocations().mark(AnchorKind::Authority, &root);
    let r = h.get("/a", Some(&m2), &[]).await;
    assert_eq!(
        (r.status, r.description()),
        (StatusCode::UNAUTHORIZED, "session revoked")
    );
}

#[tokio::test]
async fn ssrf_targets_are_refused() {
    let h = harness().await;
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://10.0.0.5/",
        "ftp://127.0.0.1/",
        "http://user:pw@127.0.0.1/",
    ] {
        set_upstream(&h, url).await;
        let m = h.mandate().await;
        let r = h.get("/x", Some(&m), &[]).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{url}");
        assert_eq!(
            (r.error(), r.description()),
            ("internal_error", "upstream not addressable"),
            "{url}"
        );
    }
    let events = audit_events(&h, "gateway_resource_request").await;
    assert!(
        events
            .iter()
            .all(|e| e["evaluation_status"] == "upstream_rejected"
                && e["metadata_json"]["error_kind"] == "upstream_not_addressable")
    );
    // Without the loopback allowance, a DNS name resolving to loopback is refused too.
    let strict = harness_with(|s| s.egress.allow_loopback = false).await;
    let port = strict.up.addr.port();
    for url in [
        format!("http://localhost:{port}/"),
        format!("http://127.0.0.1:{port}/"),
    ] {
        set_upstream(&strict, &url).await;
        let m = strict.mandate().await;
        let r = strict.get("/x", Some(&m), &[]).await;
        assert_eq!(r.description(), "upstream not addressable", "{url}");
    }
    assert!(strict.up.requests().is_empty());
    // An allowlisted host may resolve to loopback.
    let listed = harness_with(|s| {
        s.egress.allow_loopback = false;
        s.egress.allow_hosts = vec!["localhost".into()];
    })
    .await;
    set_upstream(
        &listed,
        &format!("http://localhost:{}/", listed.up.addr.port()),
    )
    .await;
    let m = listed.mandate().await;
    let r = listed.get("/x", Some(&m), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn preflight_codes() {
    let h = harness_with(|s| {
        s.admin_token = Some(caracal_service::config::Secret::new("admin-0123456789"));
    })
    .await;
    let r = h.get("/a", None, &[]).await;
    assert_eq!(
        (r.status, r.error(), r.description()),
        (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "missing bearer token"
        )
    );
    assert_eq!(
        r.body["requestId"],
        r.headers["x-request-id"].to_str().unwrap()
    );
    let m = h.mandate().await;
    let r = h.get("/a", Some(&m), &[("x-caracal-client-id", "x")]).await;
    assert_eq!(
        (r.status, r.description()),
        (
            StatusCode::BAD_REQUEST,
            "client identity derives from the bearer token"
        )
    );
    let req = hyper::Request::get(h.url("/a"))
        .header("authorization", format!("Bearer {m}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(
        (r.status, r.description()),
        (StatusCode::BAD_REQUEST, "missing routing headers")
    );
    let r = h.get("/x/%2e%2e/y", Some(&m), &[]).await;
    assert_eq!(
        (r.status, r.description()),
        (StatusCode::BAD_REQUEST, "path traversal not permitted")
    );
    // A signature that does not verify.
    let (head, _) = m.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", "A".repeat(86));
    let r = h.get("/a", Some(&forged), &[]).await;
    assert_eq!(
        (r.status, r.description()),
        (StatusCode::UNAUTHORIZED, "bearer signature invalid")
    );
    // Nothing above reached the upstream, and the mandate was not burned by them.
    assert!(h.up.requests().is_empty());
    assert_eq!(h.get("/a", Some(&m), &[]).await.status, StatusCode::OK);
    // 25: a stale snapshot closes the data plane (even without a bearer) until a reload.
    h.w.clock.advance(chrono::Duration::seconds(71));
    let r = h.get("/a", None, &[]).await;
    assert_eq!(
        (r.status, r.error(), r.description()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "sts_unavailable",
            "revocation state unavailable"
        )
    );
    let ready = h
        .send(
            hyper::Request::get(h.url("/ready"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(ready.body["reason"], "revocation_snapshot_stale");
    // 28: the reload endpoint hides itself without the right token.
    let reload = |token: &str| {
        hyper::Request::post(h.url("/internal/revocations/reload"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(h.send(reload("wrong")).await.status, StatusCode::NOT_FOUND);
    let r = h.send(reload("admin-0123456789")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["ok"], true);
    let ready = h
        .send(
            hyper::Request::get(h.url("/ready"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    let health = h
        .send(
            hyper::Request::get(h.url("/health"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(health.status, StatusCode::OK);
    let metrics = h
        .send(
            hyper::Request::get(h.url("/metrics"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert!(
        metrics.text.contains("caracal_gateway_requests_total"),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains("caracal_gateway_revocation_snapshot_fresh 1")
    );
}

/// Every §8.2 JSON key, and what one forwarded request, one replay and one revocation
/// message leave in them (the counters are this Gateway's own, so the values are exact).
#[tokio::test]
async fn metrics_count_what_happened() {
    let h = harness().await;
    let m = h.mandate().await;
    assert_eq!(h.get("/a", Some(&m), &[]).await.status, StatusCode::OK);
    assert_eq!(
        h.get("/a", Some(&m), &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A revocation message through the stream the Gateway consumes.
    let streams = h.gw.streams().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !streams
        .groups("caracal.sessions.revoke")
        .await
        .map(|g| g.iter().any(|g| g.name.starts_with("gateway-revocation:")))
        .unwrap_or(false)
    {
        assert!(tokio::time::Instant::now() < deadline, "no consumer group");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    streams
        .xadd(
            "caracal.sessions.revoke",
            &caracal_core::streams::Fields::new().with("session_id", "sess-metrics"),
        )
        .await
        .unwrap();
    let get = |path: &str| {
        hyper::Request::get(h.url(path))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let mut json = Value::Null;
    while tokio::time::Instant::now() < deadline {
        json = h.send(get("/metrics.json")).await.body;
        if json["revocation_messages"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keys = "requests_total, requests_allowed, requests_denied, denials_missing_auth, \
        denials_bad_bearer, denials_expiring, denials_bad_routing, denials_path_traversal, \
        denials_signature, denials_jti_replay, denials_revoked, denials_revocation_stale, \
        sts_exchange_errors, sts_exchange_latency_ms, sts_circuit_open, sts_circuit_opened, \
        sts_circuit_fast_fail, upstream_errors, audit_replay_files, audit_replay_bytes, \
        audit_replay_oldest_age_seconds, audit_dropped, audit_sink_errors, audit_queue_depth, \
        audit_queue_cap, audit_persisted, audit_drained, revocations_active, \
        revocation_snapshot_age_seconds, revocation_snapshot_fresh, revocation_messages, \
        revocation_pending_replayed, revocation_dead_letters, revocation_invalid_signatures, \
        revocation_reloads, revocation_reload_errors, revocation_propagation_seconds";
    for key in keys.split(',').map(str::trim) {
        assert!(json.get(key).is_some_and(Value::is_number), "{key}: {json}");
    }
    assert_eq!(json["requests_total"], 2, "{json}");
    assert_eq!(json["requests_allowed"], 1);
    assert_eq!(json["requests_denied"], 1);
    assert_eq!(json["denials_jti_replay"], 1);
    assert_eq!(json["denials_signature"], 0);
    assert_eq!(json["revocation_messages"], 1);
    assert_eq!(json["revocation_snapshot_fresh"], 1);
    assert_eq!(json["revocations_active"], 1);
    assert_eq!(json["audit_queue_cap"], 10_000);
    assert!(json["revocation_reloads"].as_u64().unwrap() >= 1);
    let propagation = json["revocation_propagation_seconds"].as_f64().unwrap();
    assert!((0.0..10.0).contains(&propagation), "{propagation}");

    let text = h.send(get("/metrics")).await.text;
    for key in keys.split(',').map(str::trim) {
        let name = match key {
            "audit_queue_cap" => "caracal_gateway_audit_queue_capacity".to_owned(),
            k => format!("caracal_gateway_{k}"),
        };
        assert!(
            text.contains(&format!("\n{name} ")) || text.contains(&format!("\n{name}_total ")),
            "{name} missing from /metrics"
        );
    }
    assert!(text.contains("# TYPE caracal_gateway_denials_jti_replay_total counter"));
    assert!(text.contains("\ncaracal_gateway_denials_jti_replay_total 1\n"));
    assert!(text.contains("# TYPE caracal_gateway_revocation_snapshot_fresh gauge"));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let h = harness().await;
    let m = h.mandate().await;
    let r = h.get("/redirect", Some(&m), &[]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(r.headers.get("location").is_none());
    assert!(r.headers.get("server").is_none());
    assert!(r.headers.get("x-caracal-identity").is_none());
    assert_eq!(h.up.requests().len(), 1);
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let h = harness_with(|s| s.max_request_bytes = 1024).await;
    let m = h.mandate().await;
    let req = hyper::Request::post(h.url("/upload"))
        .header("x-caracal-resource", PIPERNET)
        .header("authorization", format!("Bearer {m}"))
        .body(Full::new(Bytes::from(vec![b'x'; 1025])))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let m = h.mandate().await;
    let req = hyper::Request::post(h.url("/upload"))
        .header("x-caracal-resource", PIPERNET)
        .header("authorization", format!("Bearer {m}"))
        .body(Full::new(Bytes::from(vec![b'x'; 1024])))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(h.up.requests()[0].body.len(), 1024);
}

/// Without `TE: trailers` the trailer cannot be sent: the cut response is aborted instead,
/// so the client never mistakes it for a complete one.
#[tokio::test]
async fn revocation_without_te_trailers_aborts_the_response() {
    let h = harness().await;
    let m = h.mandate().await;
    let sid = sts::claims(&m)["sid"].as_str().unwrap().to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    *h.up.sse.lock().unwrap() = Some(tx);
    let request = hyper::Request::get(h.url("/sse"))
        .header("x-caracal-resource", PIPERNET)
        .header("authorization", format!("Bearer {m}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let client = h.client.clone();
    let response = tokio::spawn(async move { client.request(request).await });
    let events = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    events
        .send(Bytes::from_static(b"data: one\n\n"))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: one\n\n");
    h.gw.revocations().mark(AnchorKind::Authority, &sid);
    events
        .send(Bytes::from_static(b"data: two\n\n"))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("stream not cut");
    assert!(
        matches!(next, Some(Err(_))),
        "an aborted, visibly truncated response: {next:?}"
    );
}

/// 26: the initial snapshot is mandatory; without it the Gateway does not start.
#[tokio::test]
async fn startup_refuses_without_the_initial_snapshot() {
    let failing = std::sync::Arc::new(caracal_gateway::revocation::MemorySnapshotSource::new());
    failing.fail(true);
    let f2 = failing.clone();
    let h = support::harness_parts(
        |_| {},
        move |_, mut p| {
            p.snapshot = f2;
            p
        },
    )
    .await;
    let svc = h.gw.clone();
    let result = caracal_gateway::run(svc, async {}).await;
    assert!(
        matches!(result, Err(caracal_gateway::GatewayError::Snapshot(_))),
        "{result:?}"
    );
}
