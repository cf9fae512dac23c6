//! The Audit service's HTTP surface on in-memory backends, driven with `oneshot`: exact
//! statuses, headers and JSON.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use caracal_audit::backends::{Backends, Probe};
use caracal_audit::{AuditConfig, AuditService};
use caracal_core::audit::{AuditHmacKey, sign_payload};
use caracal_core::clock::FakeClock;
use caracal_core::streams::{Fields, names};
use caracal_service::config::Secret;
use caracal_service::{Env, Mode};
use chrono::{TimeZone, Utc};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ADMIN: &str = "admin-token-1";

fn key() -> AuditHmacKey {
    AuditHmacKey::from_hex(KEY_HEX).unwrap()
}

fn config() -> AuditConfig {
    let mut c = AuditConfig::dev();
    c.hmac_key = Some(key());
    c.admin_token = Some(Secret::new(ADMIN));
    c.claim_idle = Duration::from_millis(200);
    c
}

fn service(config: AuditConfig) -> (Arc<AuditService>, Backends) {
    let clock = FakeClock::new(Utc.with_ymd_and_hms(2026, 5, 21, 12, 30, 0).unwrap());
    let backends = Backends::memory(Arc::new(clock.clone()));
    let svc = AuditService::with_clock(config, backends.clone(), Arc::new(clock)).unwrap();
    (svc, backends)
}

async fn call(svc: &Arc<AuditService>, method: Method, uri: &str, token: Option<&str>) -> Response {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    svc.router()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn get(svc: &Arc<AuditService>, uri: &str) -> Response {
    call(svc, Method::GET, uri, Some(ADMIN)).await
}

async fn body_json(r: Response) -> Value {
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"))
}

async fn body_text(r: Response) -> String {
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn event(zone: &str, id: &str) -> String {
    format!(
        r#"{{"id":"{id}","zone_id":"{zone}","event_type":"token.exchange","request_id":"req-{id}","decision":"allow","evaluation_status":"complete","determining_policies_json":null,"diagnostics_json":null,"occurred_at":"2026-05-21T12:00:00Z"}}"#
    )
}

async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn health_and_ready_name_the_unhealthy_consumer() {
    let (svc, _) = service(config());
    let r = call(&svc, Method::GET, "/health", None).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body_json(r).await,
        json!({"ok": false, "ready": false, "reason": "consumer_unhealthy"})
    );
    let r = call(&svc, Method::GET, "/ready", None).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body_json(r).await,
        json!({"ready": false, "reason": "consumer_unhealthy"})
    );
}

struct Down {
    pg: bool,
}

#[async_trait::async_trait]
impl Probe for Down {
    async fn postgres(&self) -> bool {
        !self.pg
    }
    async fn redis(&self) -> bool {
        self.pg
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_checks_run_in_the_reference_order() {
    let mut c = config();
    c.ready_dlq_max = 1;
    let clock = FakeClock::new(Utc.with_ymd_and_hms(2026, 5, 21, 12, 30, 0).unwrap());
    for (pg_down, reason) in [(true, "postgres_unreachable"), (false, "redis_unreachable")] {
        let mut backends = Backends::memory(Arc::new(clock.clone()));
        backends.probe = Arc::new(Down { pg: pg_down });
        let svc = AuditService::with_clock(c.clone(), backends, Arc::new(clock.clone())).unwrap();
        let workers = svc.spawn_workers();
        eventually("consumer healthy", || async {
            svc.consumer_health().is_healthy()
        })
        .await;
        let r = call(&svc, Method::GET, "/health", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body_text(r).await, "");
        let r = call(&svc, Method::GET, "/ready", None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body_json(r).await,
            json!({"ready": false, "reason": reason})
        );
        workers.shutdown(Duration::from_secs(5)).await;
    }

    let (svc, backends) = service(c);
    let workers = svc.spawn_workers();
    eventually("consumer healthy", || async {
        svc.consumer_health().is_healthy()
    })
    .await;
    let r = call(&svc, Method::GET, "/ready", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_json(r).await, json!({"ready": true}));
    // Two unsigned entries → two dead letters, above AUDIT_READY_DLQ_MAX = 1.
    for _ in 0..2 {
        backends
            .streams
            .xadd(names::AUDIT_EVENTS, &Fields::new().with("data", "{}"))
            .await
            .unwrap();
    }
    eventually("dead-lettered", || async {
        backends.streams.len(names::AUDIT_EVENTS_DLQ).await.unwrap() == 2
    })
    .await;
    svc.poll_gauges().await;
    let r = call(&svc, Method::GET, "/ready", None).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body_json(r).await,
        json!({"ready": false, "reason": "audit_dlq_threshold"})
    );
    workers.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let mut c = config();
    c.admin_token = None;
    let (open, _) = service(c);
    for uri in [
        "/api/audit/search?zone_id=z",
        "/api/audit/dlq",
        "/api/audit/verify",
    ] {
        let r = call(&open, Method::GET, uri, Some(ADMIN)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{uri}");
    }
    let (svc, _) = service(config());
    for token in [None, Some("wrong"), Some("admin-token-")] {
        let r = call(&svc, Method::GET, "/api/audit/dlq", token).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer realm=\"caracal-audit\""
        );
        let body = body_json(r).await;
        assert_eq!(body["error"], "unauthorized");
        assert!(!body.to_string().contains(ADMIN));
    }
    let r = call(&svc, Method::POST, "/api/audit/dlq/replay", Some(ADMIN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        body_json(r).await,
        json!({"scanned": 0, "replayed": 0, "skipped": 0})
    );
}

#[tokio::test]
async fn errors_carry_the_request_id() {
    let (svc, _) = service(config());
    let req = Request::builder()
        .uri("/api/audit/search")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("x-request-id", "req-42")
        .body(Body::empty())
        .unwrap();
    let r = svc.router().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["x-request-id"], "req-42");
    assert_eq!(
        body_json(r).await,
        json!({"error": "invalid_request", "error_description": "zone_id is required", "requestId": "req-42"})
    );
    // Without one, a UUIDv7 is generated and echoed.
    let r = get(&svc, "/api/audit/dlq?limit=abc").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    assert_eq!(body_json(r).await["requestId"], json!(id));
    let r = get(&svc, "/nope").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_json(r).await["error"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_search_dlq_replay_and_verify() {
    let (svc, backends) = service(config());
    let workers = svc.spawn_workers();
    // The group starts at `$` (as provisioned): produce once it exists.
    eventually("consumer healthy", || async {
        svc.consumer_health().is_healthy()
    })
    .await;
    let s = &backends.streams;
    for i in 0..3 {
        let data = event("z1", &format!("e{i}"));
        let sig = sign_payload(&key(), data.as_bytes());
        s.xadd(
            names::AUDIT_EVENTS,
            &Fields::new()
                .with("id", format!("e{i}"))
                .with("data", data)
                .with("sig", sig),
        )
        .await
        .unwrap();
    }
    let bad = event("z1", "forged");
    s.xadd(
        names::AUDIT_EVENTS,
        &Fields::new().with("data", bad).with("sig", "00"),
    )
    .await
    .unwrap();
    eventually("ingested", || async {
        svc.ingestor().stats().inserts == 3 && s.len(names::AUDIT_EVENTS_DLQ).await.unwrap() == 1
    })
    .await;

    let r = get(&svc, "/api/audit/search?zone_id=z1&limit=2").await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = body_json(r).await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["id"], "e0");
    assert_eq!(events[0]["chain_seq"], 1);
    assert_eq!(
        events[1]["prev_content_sha256"],
        events[0]["content_sha256"]
    );
    assert_eq!(page["next_cursor"], "2");
    let page = body_json(get(&svc, "/api/audit/search?zone_id=z1&limit=2&cursor=2").await).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], "");

    let r = get(&svc, "/api/audit/dlq").await;
    assert_eq!(r.status(), StatusCode::OK);
    let list = body_json(r).await;
    let entry = &list["entries"][0];
    assert_eq!(entry["reason"], "hmac_verify_failed");
    assert_eq!(entry["event_id"], "forged");
    assert_eq!(entry["zone_id"], "z1");
    assert_eq!(entry["replayable"], false);
    assert_eq!(entry["source_sig"], "00");
    assert_eq!(list["next_cursor"], "");
    let id = entry["id"].as_str().unwrap().to_owned();
    let one = body_json(get(&svc, &format!("/api/audit/dlq/{id}")).await).await;
    assert_eq!(one["source_event"]["id"], "forged");
    assert_eq!(one["fields"]["src_sig"], "00");
    assert_eq!(
        get(&svc, "/api/audit/dlq/1-0").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&svc, "/api/audit/dlq/junk").await.status(),
        StatusCode::NOT_FOUND
    );

    let r = call(
        &svc,
        Method::POST,
        "/api/audit/dlq/replay?limit=10",
        Some(ADMIN),
    )
    .await;
    assert_eq!(
        body_json(r).await,
        json!({"scanned": 1, "replayed": 0, "skipped": 1})
    );

    let r = get(&svc, "/api/audit/verify?zone_id=z1").await;
    assert_eq!(r.status(), StatusCode::OK);
    let report = body_json(r).await;
    assert_eq!(report["zone_id"], "z1");
    assert_eq!(report["rows_checked"], 3);
    assert_eq!(report["hmac_checked"], true);
    assert_eq!(report["findings"], json!([]));
    let all = body_json(get(&svc, "/api/audit/verify").await).await;
    assert_eq!(all["clean"], true);
    assert_eq!(all["zones"].as_array().unwrap().len(), 1);
    workers.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn metrics_follow_the_bearer_rules() {
    let (dev, _) = service(config());
    let r = call(&dev, Method::GET, "/metrics", None).await;
    assert_eq!(r.status(), StatusCode::OK, "open in dev without a bearer");
    assert!(body_text(r).await.contains("caracal_audit_inserts_total"));

    let mut c = config();
    c.mode = Mode::Stable;
    c.database_url = Some(Secret::new("postgres://unused"));
    c.redis_url = Some(Secret::new("redis://unused"));
    // Published without a bearer: the service refuses to start, naming the setting.
    let clock = FakeClock::new(Utc.with_ymd_and_hms(2026, 5, 21, 12, 30, 0).unwrap());
    let refused = AuditService::with_clock(
        c.clone(),
        Backends::memory(Arc::new(clock.clone())),
        Arc::new(clock),
    )
    .unwrap_err();
    assert!(refused.to_string().contains("METRICS_BEARER"), "{refused}");

    c.metrics_bearer = Some(Secret::new("m-token"));
    let (guarded, _) = service(c);
    for t in [None, Some("m-toke"), Some("m-token2")] {
        assert_eq!(
            call(&guarded, Method::GET, "/metrics", t).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        call(&guarded, Method::GET, "/metrics", Some("m-token"))
            .await
            .status(),
        StatusCode::OK
    );
}

#[test]
fn published_modes_refuse_to_start_without_the_key() {
    let base = [
        ("DATABASE_URL", "postgres://x"),
        ("REDIS_URL", "redis://x"),
        ("METRICS_BEARER", "m-token"),
    ];
    for mode in [None, Some("rc"), Some("STABLE")] {
        let mut pairs = base.to_vec();
        if let Some(m) = mode {
            pairs.push(("CARACAL_MODE", m));
        }
        let err = AuditConfig::from_env(&Env::from_pairs(pairs)).unwrap_err();
        assert!(err.to_string().contains("AUDIT_HMAC_KEY"), "{err}");
    }
    let mut pairs = base.to_vec();
    pairs.push(("AUDIT_HMAC_KEY", KEY_HEX));
    let c = AuditConfig::from_env(&Env::from_pairs(pairs.clone())).unwrap();
    assert_eq!((c.port, c.consumer.as_str()), (9090, "audit-worker-0"));
    // Each other published requirement refuses on its own, naming itself.
    for missing in ["DATABASE_URL", "REDIS_URL", "METRICS_BEARER"] {
        let without: Vec<_> = pairs
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let err = AuditConfig::from_env(&Env::from_pairs(without)).unwrap_err();
        assert!(err.to_string().contains(missing), "{err}");
    }
    assert!(AuditConfig::from_env(&Env::from_pairs([("CARACAL_MODE", "dev")])).is_ok());
    let short = AuditConfig::from_env(&Env::from_pairs([
        ("CARACAL_MODE", "dev"),
        ("AUDIT_HMAC_KEY", "abcd"),
    ]));
    assert!(short.is_err());
}
