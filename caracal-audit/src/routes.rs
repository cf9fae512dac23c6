//! The HTTP surface (reference §2.12).
//!
//! | Route | |
//! |---|---|
//! | `GET /health` | 200 empty, or 503 `consumer_unhealthy` |
//! | `GET /ready` | 200 `{"ready":true}`, or 503 with the first failing reason of: `consumer_unhealthy`, `postgres_unreachable`, `redis_unreachable`, `audit_dlq_threshold`, `audit_lag_threshold`, `audit_pel_oldest_threshold` |
//! | `GET /metrics` | Prometheus text behind `METRICS_BEARER` |
//! | `GET /api/audit/search` | one zone's rows by `chain_seq` (keyset cursor) |
//! | `GET /api/audit/dlq`, `GET /api/audit/dlq/{id}` | dead letters |
//! | `POST /api/audit/dlq/replay` | replay the replayable dead letters |
//! | `GET /api/audit/verify` | the chain verifier over one zone or all |
//!
//! The `/api/audit` routes need `AUDIT_ADMIN_TOKEN`: 404 when it is unset, 401 with
//! `WWW-Authenticate: Bearer realm="caracal-audit"` on a missing or wrong token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use caracal_core::api::ApiError;
use caracal_core::audit::LedgerRow;
use caracal_core::audit::ingest::{DeadLetterView, replay_dead_letters, source_event};
use caracal_core::audit::ledger_verify::{verify_ledger_zone, verify_ledger_zone_since};
use caracal_core::store::audit::AuditQuery;
use caracal_core::streams::{EntryId, names};
use caracal_service::config::bearer_matches;
use caracal_service::health::{health_response, ready_response};
use caracal_service::http::{HttpError, not_found, with_request_id};
use caracal_service::metrics::{MetricsAccess, metrics_response, prometheus};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AuditService;

type Svc = Arc<AuditService>;

/// Default page size of search, DLQ listing and replay.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size.
pub const MAX_LIMIT: u32 = 1_000;
/// Bound on the Postgres ping of `/ready`.
pub const PG_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The router of the service.
pub fn router(svc: Svc) -> Router {
    let admin = Router::new()
        .route("/api/audit/search", get(search))
        .route("/api/audit/dlq", get(dlq_list))
        .route("/api/audit/dlq/replay", post(dlq_replay))
        .route("/api/audit/dlq/{id}", get(dlq_show))
        .route("/api/audit/verify", get(verify))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&svc),
            admin_guard,
        ));
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(admin)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(svc);
    with_request_id(router)
}

async fn admin_guard(State(svc): State<Svc>, request: Request, next: Next) -> Response {
    let Some(token) = &svc.config.admin_token else {
        return not_found().await.into_response();
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !bearer_matches(given, token) {
        let mut response = HttpError(
            ApiError::unauthorized("unauthorized").with_description("Admin token required"),
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"caracal-audit\""),
        );
        return response;
    }
    next.run(request).await
}

async fn health(State(svc): State<Svc>) -> Response {
    if svc.health.is_healthy() {
        health_response(Ok(()))
    } else {
        health_response(Err("consumer_unhealthy"))
    }
}

/// The first failing readiness check, in the reference's order.
pub async fn readiness(svc: &AuditService) -> Result<(), &'static str> {
    if !svc.health.is_healthy() {
        return Err("consumer_unhealthy");
    }
    let probe = &svc.backends.probe;
    if !tokio::time::timeout(PG_PING_TIMEOUT, probe.postgres())
        .await
        .unwrap_or(false)
    {
        return Err("postgres_unreachable");
    }
    if !tokio::time::timeout(PG_PING_TIMEOUT, probe.redis())
        .await
        .unwrap_or(false)
    {
        return Err("redis_unreachable");
    }
    let c = &svc.config;
    let g = &svc.gauges;
    let over = |max: u64, v: u64| max > 0 && v > max;
    if over(c.ready_dlq_max, g.dlq_size.load(Ordering::Relaxed)) {
        return Err("audit_dlq_threshold");
    }
    if over(c.ready_lag_max, g.consumer_lag.load(Ordering::Relaxed)) {
        return Err("audit_lag_threshold");
    }
    if over(
        c.ready_pel_oldest_secs_max,
        g.pel_oldest_secs.load(Ordering::Relaxed),
    ) {
        return Err("audit_pel_oldest_threshold");
    }
    Ok(())
}

async fn ready(State(svc): State<Svc>) -> Response {
    ready_response(readiness(&svc).await)
}

async fn metrics(State(svc): State<Svc>, headers: HeaderMap) -> Response {
    let access = MetricsAccess {
        bearer: svc.config.metrics_bearer.clone(),
        mode: svc.config.mode,
    };
    // Installed before publishing, so the first scrape already counts.
    let handle = prometheus();
    if access.allows(&headers) {
        publish_metrics(&svc);
    }
    metrics_response(&access, &headers, handle.as_ref(), "")
}

/// Copy the ingestor's counters and the polled gauges into the metrics facade (the
/// reference's names, §2.13).
fn publish_metrics(svc: &AuditService) {
    let s = svc.ingestor.stats();
    let c = svc.health.stats();
    for (name, value) in [
        ("caracal_audit_inserts_total", s.inserts),
        ("caracal_audit_parse_errors_total", s.parse_errors),
        ("caracal_audit_hmac_failures_total", s.hmac_failures),
        ("caracal_audit_tamper_replay_total", s.tamper_replays),
        ("caracal_audit_dlq_total", c.dead_lettered),
        ("caracal_audit_retries_total", c.claimed),
        ("caracal_audit_checkpoints_total", s.checkpoints),
    ] {
        metrics::counter!(name).absolute(value);
    }
    let g = &svc.gauges;
    for (name, value) in [
        ("caracal_audit_consumer_lag", &g.consumer_lag),
        (
            "caracal_audit_consumer_pel_oldest_seconds",
            &g.pel_oldest_secs,
        ),
        ("caracal_audit_dlq_size", &g.dlq_size),
        (
            "caracal_audit_dlq_oldest_age_seconds",
            &g.dlq_oldest_age_secs,
        ),
    ] {
        metrics::gauge!(name).set(value.load(Ordering::Relaxed) as f64);
    }
}

fn bad_request(description: &str) -> HttpError {
    HttpError(ApiError::bad_request("invalid_request").with_description(description))
}

fn store_failure(e: &impl std::fmt::Display) -> HttpError {
    tracing::error!(error = %e, "audit admin request failed");
    HttpError(ApiError::internal())
}

/// `limit`: absent → default; not a positive integer → 400; above the maximum → the maximum.
fn parse_limit(raw: Option<&str>) -> Result<u32, HttpError> {
    match raw {
        None | Some("") => Ok(DEFAULT_LIMIT),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n.min(MAX_LIMIT)),
            _ => Err(bad_request("limit must be a positive integer")),
        },
    }
}

/// Query parameters of `GET /api/audit/search`.
#[derive(Debug, Default, Deserialize)]
pub struct SearchParams {
    zone_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    decision: Option<String>,
    request_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Parse a search request (pure): `zone_id` required; `since`/`until` RFC 3339, an invalid
/// value ignored as in the reference; the window defaults to the last 24 h; `cursor` a
/// `chain_seq`.
pub fn parse_search(p: &SearchParams, now: DateTime<Utc>) -> Result<AuditQuery, HttpError> {
    let zone_id = p
        .zone_id
        .as_deref()
        .filter(|z| !z.is_empty())
        .ok_or_else(|| bad_request("zone_id is required"))?;
    let time = |v: &Option<String>| {
        v.as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let after_seq = match p.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| bad_request("cursor must be a chain_seq"))?,
    };
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    Ok(AuditQuery {
        zone_id: zone_id.to_owned(),
        since: Some(time(&p.since).unwrap_or(now - chrono::Duration::hours(24))),
        until: time(&p.until),
        decision: nonempty(&p.decision),
        request_id: nonempty(&p.request_id),
        after_seq,
        limit: parse_limit(p.limit.as_deref())?,
    })
}

/// A ledger row as JSON: the event's wire fields plus the chain columns.
pub fn row_json(row: &LedgerRow) -> Value {
    let mut v = serde_json::to_value(&row.event).unwrap_or_else(|_| json!({}));
    if let Some(map) = v.as_object_mut() {
        map.insert("content_sha256".into(), json!(row.content_sha256));
        map.insert("prev_content_sha256".into(), json!(row.prev_content_sha256));
        map.insert("chain_hmac".into(), json!(row.chain_hmac));
        map.insert("chain_seq".into(), json!(row.chain_seq));
        map.insert("ingest_signature".into(), json!(row.ingest_signature));
        map.insert("ingested_at".into(), json!(row.ingested_at));
    }
    v
}

async fn search(
    State(svc): State<Svc>,
    Query(p): Query<SearchParams>,
) -> Result<Json<Value>, HttpError> {
    let query = parse_search(&p, svc.clock.now())?;
    let rows = svc
        .backends
        .ledger
        .search_audit(&query)
        .await
        .map_err(|e| store_failure(&e))?;
    let next = match rows.last() {
        Some(last) if rows.len() as u64 >= u64::from(query.limit) => last.chain_seq.to_string(),
        _ => String::new(),
    };
    let events: Vec<Value> = rows.iter().map(row_json).collect();
    Ok(Json(json!({"events": events, "next_cursor": next})))
}

/// Query parameters of `GET /api/audit/dlq` and `POST /api/audit/dlq/replay`.
#[derive(Debug, Default, Deserialize)]
pub struct PageParams {
    limit: Option<String>,
    start: Option<String>,
}

async fn dlq_list(
    State(svc): State<Svc>,
    Query(p): Query<PageParams>,
) -> Result<Json<Value>, HttpError> {
    let limit = parse_limit(p.limit.as_deref())?;
    let start = match p.start.as_deref() {
        None | Some("") | Some("-") => EntryId::MIN,
        Some(s) => s
            .parse::<EntryId>()
            .map_err(|_| bad_request("start must be a stream entry id"))?,
    };
    let entries = svc
        .backends
        .streams
        .range(
            names::AUDIT_EVENTS_DLQ,
            start,
            EntryId::MAX,
            Some(limit as usize),
        )
        .await
        .map_err(|e| store_failure(&e))?;
    let now = svc.clock.now();
    let next = match entries.last() {
        Some(last) if entries.len() >= limit as usize => {
            last.id.next().map(|n| n.to_string()).unwrap_or_default()
        }
        _ => String::new(),
    };
    let views: Vec<DeadLetterView> = entries
        .iter()
        .map(|e| DeadLetterView::from_entry(e, now))
        .collect();
    Ok(Json(json!({"entries": views, "next_cursor": next})))
}

async fn dlq_show(
    State(svc): State<Svc>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let missing =
        || HttpError(ApiError::not_found("not_found").with_description("No such DLQ entry"));
    let id: EntryId = id.parse().map_err(|_| missing())?;
    let entries = svc
        .backends
        .streams
        .range(names::AUDIT_EVENTS_DLQ, id, id, Some(1))
        .await
        .map_err(|e| store_failure(&e))?;
    let entry = entries.into_iter().next().ok_or_else(missing)?;
    let view = DeadLetterView::from_entry(&entry, svc.clock.now());
    let mut body = serde_json::to_value(&view).unwrap_or_else(|_| json!({}));
    let fields: BTreeMap<&str, &str> = entry.fields.iter().collect();
    if let Some(map) = body.as_object_mut() {
        map.insert(
            "source_event".into(),
            source_event(&entry.fields).unwrap_or(Value::Null),
        );
        map.insert("fields".into(), json!(fields));
    }
    Ok(Json(body))
}

async fn dlq_replay(
    State(svc): State<Svc>,
    Query(p): Query<PageParams>,
) -> Result<Json<Value>, HttpError> {
    let limit = parse_limit(p.limit.as_deref())?;
    let report = replay_dead_letters(&*svc.backends.streams, limit as usize)
        .await
        .map_err(|e| store_failure(&e))?;
    Ok(Json(json!(report)))
}

/// Query parameters of `GET /api/audit/verify`.
#[derive(Debug, Default, Deserialize)]
pub struct VerifyParams {
    zone_id: Option<String>,
    /// RFC 3339: only rows ingested at or after this instant (a window per zone).
    since: Option<String>,
}

async fn verify(
    State(svc): State<Svc>,
    Query(p): Query<VerifyParams>,
) -> Result<Json<Value>, HttpError> {
    let ledger = &*svc.backends.ledger;
    let key = svc.config.hmac_key.as_ref();
    let since = match p.since.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| bad_request("since must be an RFC 3339 instant"))?,
        ),
        None => None,
    };
    let one = |zone: String| {
        let svc = svc.clone();
        async move {
            match since {
                Some(t) => {
                    verify_ledger_zone_since(ledger, &*svc.backends.exports, &zone, key, t).await
                }
                None => verify_ledger_zone(ledger, &zone, key).await,
            }
        }
    };
    match p.zone_id.filter(|z| !z.is_empty()) {
        Some(zone) => {
            let report = one(zone).await.map_err(|e| store_failure(&e))?;
            Ok(Json(json!(report)))
        }
        None => {
            let zones = ledger.ledger_zones().await.map_err(|e| store_failure(&e))?;
            let mut reports = Vec::with_capacity(zones.len());
            for zone in zones {
                reports.push(one(zone).await.map_err(|e| store_failure(&e))?);
            }
            let clean = reports.iter().all(|r| r.is_clean());
            Ok(Json(json!({"clean": clean, "zones": reports})))
        }
    }
}
