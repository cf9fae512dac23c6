//! The router (reference `gateway.md` §1.0, §8.1): `/health`, `/ready`, `/metrics`, `/metrics.json`,
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
use crate::metrics::{Figure, Kind, counter_name, render_json, render_text};

type Svc = Arc<GatewayService>;

/// The budget of `/ready`.
pub const READY_BUDGET: Duration = Duration::from_secs(2);

/// The router.
pub fn router(svc: Svc) -> Router {
    let router = Router::new()
        .route("/health", any(health))
        .route("/ready", any(ready))
        .route("/metrics", any(metrics))
        .route("/metrics.json", any(metrics_json))
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

/// Every `caracal_gateway_*` figure (§8.2) of `svc` now: its counters, the gauges it set, and
/// the gauges read at scrape time (emitter, breaker, revocation state, database pool).
pub fn figures(svc: &GatewayService) -> Vec<Figure> {
    let mut out = Vec::with_capacity(48);
    let counter = |key: &'static str, help: &'static str, value: u64| Figure {
        key,
        name: counter_name(key),
        kind: Kind::Counter,
        help,
        value: value as f64,
    };
    for (key, value) in svc.metrics.counters.values() {
        out.push(counter(
            key,
            "Gateway counter (reference gateway.md 8.2)",
            value,
        ));
    }
    let stats = svc.emitter.stats();
    out.push(counter(
        "audit_dropped",
        "Audit events lost irrecoverably",
        stats.dropped_total,
    ));
    out.push(counter(
        "audit_sink_errors",
        "Failed XADDs and spill-file errors",
        stats.sink_errors_total,
    ));
    out.push(counter(
        "audit_persisted",
        "Audit frames accepted by the stream (directly or drained from spill files)",
        stats.sent_total + stats.replayed_total,
    ));
    out.push(counter(
        "audit_drained",
        "Audit frames re-sent from spill files",
        stats.replayed_total,
    ));
    let gauge = |key: &'static str, name: String, help: &'static str, value: f64| Figure {
        key,
        name,
        kind: Kind::Gauge,
        help,
        value,
    };
    let gauges = &svc.metrics.gauges;
    let age = svc
        .revocations
        .age()
        .map_or(-1.0, |a| a.num_milliseconds() as f64 / 1000.0);
    out.extend([
        gauge(
            "sts_exchange_latency_ms",
            "caracal_gateway_sts_exchange_latency_ms".to_owned(),
            "Latency of the last STS exchange",
            gauges.sts_latency_ms.load(Ordering::Relaxed) as f64,
        ),
        gauge(
            "sts_circuit_open",
            "caracal_gateway_sts_circuit_open".to_owned(),
            "1 while the STS circuit is open",
            f64::from(u8::from(svc.breaker.is_open())),
        ),
        gauge(
            "audit_replay_files",
            "caracal_gateway_audit_replay_files".to_owned(),
            "Spill files waiting to be drained",
            stats.replay_files as f64,
        ),
        gauge(
            "audit_replay_bytes",
            "caracal_gateway_audit_replay_bytes".to_owned(),
            "Bytes in spill files",
            stats.replay_bytes as f64,
        ),
        gauge(
            "audit_replay_oldest_age_seconds",
            "caracal_gateway_audit_replay_oldest_age_seconds".to_owned(),
            "Age of the oldest spill file",
            stats.replay_oldest_age_seconds,
        ),
        gauge(
            "audit_queue_depth",
            "caracal_gateway_audit_queue_depth".to_owned(),
            "Audit frames waiting in memory",
            stats.buffered as f64,
        ),
        gauge(
            "audit_queue_cap",
            "caracal_gateway_audit_queue_capacity".to_owned(),
            "Capacity of the in-memory audit queue",
            svc.emitter.capacity() as f64,
        ),
        gauge(
            "revocations_active",
            "caracal_gateway_revocations_active".to_owned(),
            "Revoked anchors held",
            svc.revocations.len() as f64,
        ),
        gauge(
            "revocation_snapshot_age_seconds",
            "caracal_gateway_revocation_snapshot_age_seconds".to_owned(),
            "Age of the last good snapshot (-1: none)",
            age,
        ),
        gauge(
            "revocation_snapshot_fresh",
            "caracal_gateway_revocation_snapshot_fresh".to_owned(),
            "1 while the snapshot is fresh",
            f64::from(u8::from(!svc.revocations.is_stale())),
        ),
        gauge(
            "revocation_propagation_seconds",
            "caracal_gateway_revocation_propagation_seconds".to_owned(),
            "Now minus the stream time of the last applied revocation",
            gauges.revocation_propagation_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        ),
    ]);
    if let Some(pool) = svc.snapshot.pool_stats() {
        out.extend([
            gauge(
                "db_pool_in_use_ratio",
                "caracal_db_pool_in_use_ratio".to_owned(),
                "Checked-out share of the database pool",
                pool.in_use_ratio(),
            ),
            gauge(
                "db_pool_max_conns",
                "caracal_db_pool_max_conns".to_owned(),
                "Size bound of the database pool",
                f64::from(pool.max_conns),
            ),
            gauge(
                "db_pool_acquired_conns",
                "caracal_db_pool_acquired_conns".to_owned(),
                "Database connections checked out",
                f64::from(pool.acquired_conns),
            ),
        ]);
    }
    out
}

fn access(svc: &GatewayService) -> MetricsAccess {
    MetricsAccess {
        bearer: svc.settings.metrics_bearer.clone(),
        mode: svc.settings.mode,
    }
}

/// `GET /metrics`: the Gateway's figures, then whatever the libraries recorded through the
/// `metrics` facade.
async fn metrics(State(svc): State<Svc>, headers: HeaderMap) -> Response {
    let access = access(&svc);
    let extra = if access.allows(&headers) {
        render_text(&figures(&svc))
    } else {
        String::new()
    };
    metrics_response(&access, &headers, prometheus().as_ref(), &extra)
}

/// `GET /metrics.json`: the same figures as one flat object keyed by the §8.2 JSON names.
async fn metrics_json(State(svc): State<Svc>, headers: HeaderMap) -> Response {
    let access = access(&svc);
    if !access.allows(&headers) {
        // The same 401 as `/metrics`.
        return metrics_response(&access, &headers, None, "");
    }
    Json(render_json(&figures(&svc))).into_response()
}
