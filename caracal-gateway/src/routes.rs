//! The router (reference `gateway.md` §1.0, §8.1): `/health`, `/ready`, `/metrics`,
//! `POST /internal/revocations/reload`, and everything else to the proxy. Every response
//! carries `X-Request-Id`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use caracal_service::config::bearer_matches;
use caracal_service::http::with_request_id;
use caracal_service::metrics::{MetricsAccess, metrics_response, prometheus};
use serde_json::json;

use crate::GatewayService;

type Svc = Arc<GatewayService>;

/// The budget of `/ready`.
pub const READY_BUDGET: Duration = Duration::from_secs(2);

/// The router.
pub fn router(svc: Svc) -> Router {
    let router = Router::new()
        .route("/health", any(health))
        .route("/ready", any(ready))
        .route("/metrics", any(metrics))
        .route("/internal/revocations/reload", post(reload).fallback(proxy))
        .fallback(proxy)
        .with_state(svc);
    with_request_id(router)
}

async fn proxy(State(svc): State<Svc>, request: Request) -> Response {
    crate::proxy::handle(svc, request).await
}

async fn health() -> StatusCode {
    StatusCode::OK
}

/// §8.1: the first failing check, in the reference order.
pub async fn readiness(svc: &GatewayService) -> Result<(), &'static str> {
    let redis = tokio::time::timeout(READY_BUDGET, svc.redis.ping())
        .await
        .unwrap_or(false);
    if !redis {
        return Err("redis_unreachable");
    }
    if svc.revocations.is_stale() {
        return Err("revocation_snapshot_stale");
    }
    if svc.emitter.evidence_lost() {
        return Err("audit_evidence_lost");
    }
    let emitter = svc.emitter.clone();
    let writable = tokio::time::timeout(
        READY_BUDGET,
        tokio::task::spawn_blocking(move || emitter.replay_dir_writable()),
    )
    .await;
    if !matches!(writable, Ok(Ok(true))) {
        return Err("audit_replay_unavailable");
    }
    let sts = tokio::time::timeout(READY_BUDGET, svc.exchanger.healthy())
        .await
        .unwrap_or(false);
    if !sts {
        return Err("sts_unreachable");
    }
    Ok(())
}

async fn ready(State(svc): State<Svc>) -> Response {
    match readiness(&svc).await {
        Ok(()) => Json(json!({"ok": true, "ready": true})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ok": false, "ready": false, "reason": reason})),
        )
            .into_response(),
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

async fn reload(State(svc): State<Svc>, headers: HeaderMap) -> Response {
    let Some(token) = &svc.settings.admin_token else {
        return not_found();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if !bearer_matches(given, token) {
        return not_found();
    }
    match tokio::time::timeout(Duration::from_secs(5), svc.reload_revocations()).await {
        Ok(Ok(n)) => Json(json!({"ok": true, "revocations": n})).into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ok": false, "ready": false, "reason": "revocation_reload_failed"})),
        )
            .into_response(),
    }
}

/// Gauges read at scrape time, as exposition lines.
fn scrape_lines(svc: &GatewayService) -> String {
    use std::fmt::Write as _;
    let stats = svc.emitter.stats();
    let age = svc
        .revocations
        .age()
        .map_or(-1.0, |a| a.num_milliseconds() as f64 / 1000.0);
    let gauges: [(&str, f64); 10] = [
        (
            "caracal_gateway_sts_exchange_latency_ms",
            svc.stats.sts_latency_ms.load(Ordering::Relaxed) as f64,
        ),
        (
            "caracal_gateway_sts_circuit_open",
            f64::from(u8::from(svc.breaker.is_open())),
        ),
        (
            "caracal_gateway_audit_replay_files",
            stats.replay_files as f64,
        ),
        (
            "caracal_gateway_audit_replay_bytes",
            stats.replay_bytes as f64,
        ),
        (
            "caracal_gateway_audit_replay_oldest_age_seconds",
            stats.replay_oldest_age_seconds,
        ),
        (
            "caracal_gateway_audit_dropped_total",
            stats.dropped_total as f64,
        ),
        (
            "caracal_gateway_audit_sink_errors_total",
            stats.sink_errors_total as f64,
        ),
        (
            "caracal_gateway_revocations_active",
            svc.revocations.len() as f64,
        ),
        ("caracal_gateway_revocation_snapshot_age_seconds", age),
        (
            "caracal_gateway_revocation_snapshot_fresh",
            f64::from(u8::from(!svc.revocations.is_stale())),
        ),
    ];
    let mut out = String::new();
    for (name, value) in gauges {
        let _ = writeln!(out, "# TYPE {name} gauge\n{name} {value}");
    }
    out
}

async fn metrics(State(svc): State<Svc>, headers: HeaderMap) -> Response {
    let access = MetricsAccess {
        bearer: svc.settings.metrics_bearer.clone(),
        mode: svc.settings.mode,
    };
    let extra = if access.allows(&headers) {
        scrape_lines(&svc)
    } else {
        String::new()
    };
    metrics_response(&access, &headers, prometheus().as_ref(), &extra)
}
