//! The HTTP surface (reference `sts.md` §1).
//!
//! | Route | |
//! |---|---|
//! | `POST /oauth/2/token` | the RFC 8693 exchange ([`Sts::token`](caracal_core::exchange::Sts::token)) |
//! | `GET /.well-known/jwks.json?zone_id=` | the zone's public keys, active first |
//! | `GET /approvals/{id}[?wait=N]` | approval state, long-poll up to 25 s |
//! | `POST /approvals/{id}/decision` | the subject decision (bearer: a user session mandate) |
//! | `POST /internal/zones/{zone}/signing-key/rotate` | rotation (bearer `STS_ADMIN_TOKEN`; 404 when unset) |
//! | `POST /internal/policy/simulate` | dry run of a bundle (Gateway HMAC envelope) |
//! | `GET /internal/policy/status/{zone}` | the zone's loaded bundle (Gateway HMAC envelope) |
//! | `GET /health`, `GET /ready`, `GET /metrics` | liveness, readiness (§1.5 reasons), Prometheus |
//!
//! Every error body is the reference shape with the request id; every response echoes
//! `X-Request-Id`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use caracal_core::api::ApiError;
use caracal_core::exchange::TokenRequest;
use caracal_core::exchange::approval;
use caracal_core::exchange::envelope::{
    self, EnvelopeHeaders, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use caracal_core::exchange::form::MAX_BODY_BYTES;
use caracal_core::mandate::{Jwks, MandateUse, VerifyPolicy};
use caracal_core::model::policy::PolicyInput;
use caracal_core::policy::contract::evaluate;
use caracal_core::policy::data::{CompiledBundle, DocumentSource};
use caracal_service::config::bearer_matches;
use caracal_service::http::{HttpError, RequestId, not_found, with_request_id};
use caracal_service::metrics::{MetricsAccess, metrics_response, prometheus};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::StsService;

type Svc = Arc<StsService>;

/// The budget of `/ready`.
pub const READY_BUDGET: Duration = Duration::from_secs(2);

/// The router of the service.
pub fn router(svc: Svc) -> Router {
    let router = Router::new()
        .route("/oauth/2/token", any(token))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/approvals/{id}", get(approval_state))
        .route("/approvals/{id}/decision", post(approval_decision))
        .route("/internal/zones/{zone}/signing-key/rotate", post(rotate))
        .route("/internal/policy/simulate", post(simulate))
        .route("/internal/policy/status/{zone}", get(policy_status))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // Bodies are read by the handlers with the reference's 64 KiB cap and error shape.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(svc);
    with_request_id(router)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The body, at most [`MAX_BODY_BYTES`]; beyond → 413 `payload_too_large`.
async fn read_body(body: Body) -> Result<Bytes, HttpError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            HttpError(
                ApiError::new(413, "payload_too_large").with_description("request body too large"),
            )
        })
}

fn error_response(e: ApiError) -> Response {
    let interaction = e.body.error == approval::INTERACTION_REQUIRED;
    let mut response = HttpError(e).into_response();
    if interaction {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"interaction_required\""),
        );
    }
    response
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn token(
    State(svc): State<Svc>,
    Extension(request_id): Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != Method::POST {
        return error_response(
            ApiError::new(405, "invalid_token").with_description("method not allowed"),
        );
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let request = TokenRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query(),
        content_type: header_str(&headers, header::CONTENT_TYPE.as_str()),
        body: &body,
        request_id: &request_id.0,
        envelope: EnvelopeHeaders {
            timestamp: header_str(&headers, TIMESTAMP_HEADER),
            nonce: header_str(&headers, NONCE_HEADER),
            signature: header_str(&headers, SIGNATURE_HEADER),
        },
    };
    match svc.sts().token(&request).await {
        Ok(response) => no_store(Json(response).into_response()),
        Err(e) => no_store(error_response(e)),
    }
}

#[derive(Deserialize)]
struct JwksQuery {
    zone_id: Option<String>,
}

async fn jwks(State(svc): State<Svc>, Query(q): Query<JwksQuery>) -> Response {
    let Some(zone) = q.zone_id.filter(|z| !z.trim().is_empty()) else {
        return error_response(
            ApiError::bad_request("invalid_token").with_description("zone_id required"),
        );
    };
    let keys = match svc.sts().keys().jwks_keys(zone.trim()).await {
        Ok(k) => k,
        Err(caracal_core::mandate::MandateError::NoKeys) => {
            return error_response(
                ApiError::not_found("resource_not_found")
                    .with_description("zone has no signing keys"),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "jwks unavailable");
            return error_response(ApiError::internal());
        }
    };
    if keys.is_empty() {
        return error_response(
            ApiError::not_found("resource_not_found").with_description("zone has no signing keys"),
        );
    }
    let mut response = (StatusCode::OK, Jwks::from_keys(&keys).to_json()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300, must-revalidate"),
    );
    response
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

async fn approval_state(
    State(svc): State<Svc>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Response {
    let wait = match q.wait.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(w) => match w.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                return error_response(
                    ApiError::bad_request("invalid_token").with_description("invalid wait"),
                );
            }
        },
    };
    let sts = svc.sts();
    match approval::wait_for_decision(
        sts.stores().approvals.as_ref(),
        sts.waiters(),
        &id,
        Duration::from_secs(wait),
        sts.clock(),
    )
    .await
    {
        Ok(view) => Json(view).into_response(),
        Err(e) => error_response(e),
    }
}

async fn approval_decision(
    State(svc): State<Svc>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let sts = svc.sts();
    // §1.4 order: id (1), bearer present (2), body (3), hold (4), bearer verifies (5), then
    // the decision rules in the core.
    if !caracal_core::ids::is_uuid(&id) {
        return error_response(
            ApiError::not_found("resource_not_found").with_description("approval not found"),
        );
    }
    let bearer = header_str(&headers, header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(bearer) = bearer else {
        let mut r = error_response(
            ApiError::unauthorized("invalid_token").with_description("bearer token required"),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"caracal-sts\""),
        );
        return r;
    };
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let request: approval::DecisionBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => {
            return error_response(
                ApiError::bad_request("invalid_token").with_description("malformed request body"),
            );
        }
    };
    if let Err(e) = request.validate() {
        return error_response(e);
    }
    let hold = match approval::load_hold(sts.stores().approvals.as_ref(), &id).await {
        Ok(h) => h,
        Err(e) => return error_response(e),
    };
    let policy = VerifyPolicy::sts_subject(
        hold.zone_id.clone(),
        sts.config().issuer.clone(),
        MandateUse::Session,
    );
    let claims = match sts.keys().verify(bearer, &policy).await {
        Ok(c) => c,
        Err(_) => {
            return error_response(
                ApiError::unauthorized("invalid_token").with_description("invalid session mandate"),
            );
        }
    };
    match approval::decide_as_subject(
        sts.stores().approvals.as_ref(),
        sts.stores().authority.as_ref(),
        sts.waiters(),
        sts.audit().as_ref(),
        &hold,
        &claims,
        &request,
        sts.clock().now(),
    )
    .await
    {
        Ok(view) => Json(view).into_response(),
        Err(e) => error_response(e),
    }
}

fn unauthorized_plain(realm: &'static str) -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(realm));
    r
}

async fn rotate(State(svc): State<Svc>, Path(zone): Path<String>, headers: HeaderMap) -> Response {
    let Some(token) = &svc.settings().admin_token else {
        return not_found().await.into_response();
    };
    if !bearer_matches(header_str(&headers, header::AUTHORIZATION.as_str()), token) {
        return unauthorized_plain("Bearer realm=\"caracal-sts\"");
    }
    match svc.sts().keys().rotate(&zone).await {
        Ok(rotated) => {
            Json(json!({"rotated": true, "zone_id": zone, "kid": rotated.kid})).into_response()
        }
        Err(e) => {
            tracing::error!(zone = %zone, error = %e, "key rotation failed");
            error_response(ApiError::internal())
        }
    }
}

/// The Gateway/API HMAC envelope over an internal call (nonce single use).
async fn internal_guard(
    svc: &StsService,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let sts = svc.sts();
    let envelope = EnvelopeHeaders {
        timestamp: header_str(headers, TIMESTAMP_HEADER),
        nonce: header_str(headers, NONCE_HEADER),
        signature: header_str(headers, SIGNATURE_HEADER),
    };
    envelope::verify(
        sts.gateway_key(),
        &envelope,
        method.as_str(),
        uri.path(),
        body,
        None,
        sts.clock().now(),
        sts.ephemeral().as_ref(),
    )
    .await
    .map_err(|e| e.to_api())
}

#[derive(Deserialize)]
struct SimulateRequest {
    #[serde(default)]
    policy_set_id: Value,
    #[serde(default)]
    version_id: Value,
    #[serde(default)]
    manifest_sha256: Value,
    #[serde(default)]
    policies: Vec<SimulatePolicy>,
    input: Value,
}

#[derive(Deserialize)]
struct SimulatePolicy {
    #[serde(default)]
    id: String,
    content: String,
}

async fn simulate(
    State(svc): State<Svc>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = internal_guard(&svc, &method, &uri, &headers, &body).await {
        return error_response(e);
    }
    let request: SimulateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => {
            return error_response(
                ApiError::bad_request("invalid_token").with_description("malformed request body"),
            );
        }
    };
    if request.policies.is_empty() {
        return error_response(
            ApiError::bad_request("invalid_token").with_description("policy bundle is empty"),
        );
    }
    let failed = |why: String| {
        error_response(ApiError::new(422, "policy_eval_failed").with_description(why))
    };
    let sources: Vec<DocumentSource<'_>> = request
        .policies
        .iter()
        .map(|p| DocumentSource {
            label: &p.id,
            content: &p.content,
        })
        .collect();
    let bundle = match CompiledBundle::from_sources(&sources) {
        Ok(b) => b,
        Err(e) => return failed(e.to_string()),
    };
    let input: PolicyInput = match serde_json::from_value(request.input) {
        Ok(i) => i,
        Err(e) => return failed(format!("invalid input: {e}")),
    };
    match evaluate(&input, &bundle) {
        Ok(evaluation) => Json(json!({
            "policy_set_id": request.policy_set_id,
            "version_id": request.version_id,
            "manifest_sha256": request.manifest_sha256,
            "result": evaluation.to_result(),
        }))
        .into_response(),
        Err(e) => failed(e.to_string()),
    }
}

async fn policy_status(
    State(svc): State<Svc>,
    Path(zone): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = internal_guard(&svc, &method, &uri, &headers, b"").await {
        return error_response(e);
    }
    let status = svc.sts().policies().status(&zone);
    let mut body = json!({"zone_id": zone, "loaded": false});
    if let Some(s) = status.filter(|s| s.loaded) {
        body["loaded"] = json!(true);
        body["policy_set_version_id"] = json!(s.policy_set_version_id);
        body["manifest_sha256"] = json!(
            s.manifest_sha256
                .unwrap_or_else(|| "no_active_policy_set".to_owned())
        );
        body["loaded_at"] = json!(s.loaded_at.map(|t| t.to_rfc3339()));
        body["age_seconds"] = json!(s.age_seconds);
    }
    Json(body).into_response()
}

async fn health() -> StatusCode {
    StatusCode::OK
}

fn not_ready(reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"ok": false, "ready": false, "reason": reason})),
    )
        .into_response()
}

/// §1.5: the first failing check, in the reference order.
pub async fn readiness(svc: &StsService) -> Result<(), &'static str> {
    let probe = &svc.backends().probe;
    let timed = |f| async move { tokio::time::timeout(READY_BUDGET, f).await.unwrap_or(false) };
    if !timed(probe.postgres()).await {
        return Err("postgres_unreachable");
    }
    if !probe.redis_present() {
        return Err("redis_unavailable");
    }
    if !timed(probe.redis()).await {
        return Err("redis_unreachable");
    }
    if svc.emitter().evidence_lost() {
        return Err("audit_evidence_lost");
    }
    let emitter = svc.emitter().clone();
    let writable = tokio::time::timeout(
        READY_BUDGET,
        tokio::task::spawn_blocking(move || emitter.replay_dir_writable()),
    )
    .await;
    if !matches!(writable, Ok(Ok(true))) {
        return Err("audit_replay_unavailable");
    }
    if !svc.consumer_health().iter().all(|h| h.is_healthy()) {
        return Err("stream_consumers_not_ready");
    }
    Ok(())
}

async fn ready(State(svc): State<Svc>) -> Response {
    match readiness(&svc).await {
        Ok(()) => Json(json!({"ok": true, "ready": true})).into_response(),
        Err(reason) => not_ready(reason),
    }
}

/// Values read at scrape time from the engine and the emitter, as exposition lines.
fn scrape_lines(svc: &StsService) -> String {
    use std::fmt::Write as _;
    let sts = svc.sts();
    let stats = svc.emitter().stats();
    let mut gauges: Vec<(&str, f64)> = vec![
        (
            "caracal_sts_opa_poll_interval_seconds",
            svc.settings().poll_interval.as_secs_f64(),
        ),
        (
            "caracal_sts_audit_dropped_total",
            stats.dropped_total as f64,
        ),
        (
            "caracal_sts_audit_replay_pending",
            stats.replay_pending as f64,
        ),
        ("caracal_sts_audit_replay_files", stats.replay_files as f64),
        ("caracal_sts_audit_replay_bytes", stats.replay_bytes as f64),
        (
            "caracal_sts_audit_replay_replayed_total",
            stats.replayed_total as f64,
        ),
        (
            "caracal_sts_audit_sink_errors_total",
            stats.sink_errors_total as f64,
        ),
        (
            "caracal_sts_audit_replay_oldest_age_seconds",
            stats.replay_oldest_age_seconds,
        ),
    ];
    if let Some(age) = sts.policies().max_policy_age_seconds() {
        gauges.push(("caracal_sts_opa_max_policy_age_seconds", age as f64));
    }
    let mut out = String::new();
    for (name, value) in gauges {
        let _ = writeln!(out, "# TYPE {name} gauge\n{name} {value}");
    }
    out
}

async fn metrics(State(svc): State<Svc>, headers: HeaderMap) -> Response {
    let access = MetricsAccess {
        bearer: svc.settings().metrics_bearer.clone(),
        mode: svc.settings().mode,
    };
    let extra = if access.allows(&headers) {
        scrape_lines(&svc)
    } else {
        String::new()
    };
    metrics_response(&access, &headers, prometheus().as_ref(), &extra)
}
