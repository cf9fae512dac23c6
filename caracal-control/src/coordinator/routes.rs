//! The Coordinator's handlers (`http-bodies.md` §11.2 sessions, §11.3 delegations).
//!
//! Each handler authenticates (extractor of [`super::auth`]), checks its path parameters
//! (`400 invalid_params`), parses its body, calls one `caracal_core::coordinator` method with
//! the request's `now` and renders the result or `CoordinatorError::to_api`.
//!
//! Bodies marked (Zod-validated in the reference) in the reference (session start, heartbeat, delegation create)
//! answer a shape failure with `400 invalid_body` and `details.issues`; the path is
//! the offending field when this layer checks it, `body` when the JSON does not deserialize.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use caracal_core::api::ApiError;
use caracal_core::coordinator::delegation::RenderDelegation;
use caracal_core::coordinator::idempotency::parse_key_header;
use caracal_core::coordinator::sessions::RenderSession;
use caracal_core::coordinator::{
    CoordinatorError, CreateDelegation, CreatedDelegation, Idempotency, Idempotent,
    ParentAuthority, StartSession, StartedSession,
};
use caracal_core::model::session::{Lifecycle, Session};
use caracal_core::model::time::{format_iso_ms, parse_rfc3339};
use caracal_service::http::HttpError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Svc;
use super::auth::{Authed, AuthedOrOperator, Principal};
use crate::admin::is_valid_param;

/// `Result` of a handler.
pub type CoordinatorHttpResult = Result<Response, HttpError>;

/// Reason recorded on a session suspended by its owner or the operator.
pub const REASON_SUSPENDED: &str = "suspended";
/// Default `reason` of a terminate.
pub const REASON_REQUESTED: &str = "requested";
/// Longest terminate `reason`.
pub const MAX_REASON_CHARS: usize = 256;

fn api(e: CoordinatorError) -> HttpError {
    HttpError(e.to_api())
}

fn params(values: &[&str]) -> Result<(), HttpError> {
    if values.iter().all(|p| is_valid_param(p)) {
        Ok(())
    } else {
        Err(HttpError(ApiError::bad_request("invalid_params")))
    }
}

fn invalid_body(field: &'static str, message: &'static str) -> HttpError {
    api(CoordinatorError::InvalidBody { field, message })
}

/// Parse a (Zod-validated in the reference) body: an empty body reads as `{}`; anything that does not deserialize is
/// `400 invalid_body`. The description never quotes the body.
fn parse_z<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|_| invalid_body("body", "does not match the schema"))
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// The stored answer of an earlier identical request, with `Idempotency-Replayed: true`.
fn replayed(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("idempotency-replayed", HeaderValue::from_static("true"));
    r
}

/// The validated `Idempotency-Key` (`None` when absent) and whether it is a generated key.
fn idempotency_key(headers: &HeaderMap) -> Result<(Option<String>, bool), HttpError> {
    let mut values = Vec::new();
    for v in headers.get_all("idempotency-key") {
        values.push(
            v.to_str()
                .map_err(|_| api(CoordinatorError::IdempotencyKeyInvalid))?,
        );
    }
    let key = parse_key_header(&values).map_err(api)?;
    let generated = headers
        .get("idempotency-key-kind")
        .and_then(|v| v.to_str().ok())
        == Some("generated");
    Ok((key, generated))
}

/// `principal: {client_id, subject}` of the idempotency fingerprint.
fn principal_json(p: &Principal) -> Value {
    json!({"client_id": p.caller.client_id, "subject": p.subject})
}

fn opt_time(t: Option<&chrono::DateTime<chrono::Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(format_iso_ms(t)))
}

// --- Sessions ------------------------------------------------------------------------------

/// `POST /zones/{zone_id}/agents` body (Zod-validated in the reference).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct StartSessionBody {
    /// The application the session runs under (≥ 1 character).
    pub application_id: String,
    /// The subject authority record (default: the mandate's `sid`).
    #[serde(default)]
    pub subject_session_id: Option<String>,
    /// Parent session.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// `task` (default) or `service`.
    #[serde(default)]
    pub lifecycle: Option<String>,
    /// ≤ 32 labels, each 1..64 characters after trimming.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Task TTL 1..86400 (rejected for service sessions).
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// `inherit` (default) or `none`.
    #[serde(default)]
    pub parent_authority: Option<String>,
    /// The parent edge to mirror when the parent has several.
    #[serde(default)]
    pub inherit_parent_edge_id: Option<String>,
    /// Caller metadata.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

impl StartSessionBody {
    fn to_request(&self) -> Result<StartSession, HttpError> {
        if self.application_id.is_empty() {
            return Err(invalid_body("application_id", "must not be empty"));
        }
        let lifecycle = match self.lifecycle.as_deref() {
            None | Some("task") => Lifecycle::Task,
            Some("service") => Lifecycle::Service,
            Some(_) => return Err(invalid_body("lifecycle", "must be task or service")),
        };
        let parent_authority = match self.parent_authority.as_deref() {
            None | Some("inherit") => ParentAuthority::Inherit,
            Some("none") => ParentAuthority::None,
            Some(_) => return Err(invalid_body("parent_authority", "must be inherit or none")),
        };
        Ok(StartSession {
            application_id: self.application_id.clone(),
            subject_session_id: self.subject_session_id.clone(),
            parent_id: self.parent_id.clone(),
            lifecycle,
            labels: self.labels.clone(),
            ttl_seconds: self.ttl_seconds,
            parent_authority,
            inherit_parent_edge_id: self.inherit_parent_edge_id.clone(),
            metadata: self.metadata.clone(),
        })
    }
}

/// The 201 body of a start: the session without metadata, `lease_generation` a number, plus
/// `delegation_edge_id`.
pub fn render_started(s: &StartedSession) -> Value {
    let x = &s.session;
    json!({
        "agent_session_id": x.agent_session_id,
        "zone_id": x.zone_id,
        "application_id": x.application_id,
        "parent_id": x.parent_id,
        "subject_authority_record_id": x.subject_authority_record_id,
        "lifecycle": x.lifecycle,
        "labels": x.labels,
        "status": x.status,
        "depth": x.depth,
        "ttl_seconds": x.ttl_seconds,
        "started_at": format_iso_ms(&x.started_at),
        "last_heartbeat_at": opt_time(x.last_heartbeat_at.as_ref()),
        "heartbeat_deadline_at": opt_time(x.heartbeat_deadline_at.as_ref()),
        "lease_generation": x.lease_generation,
        "delegation_edge_id": s.delegation_edge_id,
    })
}

/// The Session row of a GET: every wire field, `lease_generation` as a JSON string.
pub fn render_session(x: &Session) -> Value {
    json!({
        "agent_session_id": x.agent_session_id,
        "zone_id": x.zone_id,
        "application_id": x.application_id,
        "parent_id": x.parent_id,
        "subject_authority_record_id": x.subject_authority_record_id,
        "lifecycle": x.lifecycle,
        "labels": x.labels,
        "status": x.status,
        "depth": x.depth,
        "ttl_seconds": x.ttl_seconds,
        "metadata": x.metadata,
        "started_at": format_iso_ms(&x.started_at),
        "terminated_at": opt_time(x.terminated_at.as_ref()),
        "termination_reason": x.termination_reason,
        "last_heartbeat_at": opt_time(x.last_heartbeat_at.as_ref()),
        "heartbeat_deadline_at": opt_time(x.heartbeat_deadline_at.as_ref()),
        "lease_generation": x.lease_generation.to_string(),
    })
}

/// Start a session (optionally under `Idempotency-Key`).
#[utoipa::path(post, path = "/zones/{zone_id}/agents", tag = "agents",
    params(("zone_id" = String, Path, description = "Zone")),
    request_body = StartSessionBody,
    responses((status = 201, description = "The started session and `delegation_edge_id`", body = Value)))]
pub async fn start_session(
    State(svc): State<Svc>,
    Authed(p): Authed,
    Path(zone_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> CoordinatorHttpResult {
    params(&[&zone_id])?;
    let (key, generated) = idempotency_key(&headers)?;
    let parsed: StartSessionBody = parse_z(&body)?;
    let req = parsed.to_request()?;
    let now = svc.now();
    let outcome = match key {
        None => Idempotent::Fresh(
            svc.core
                .start_session(&zone_id, &p.caller, &req, now)
                .await
                .map_err(api)?,
        ),
        Some(key) => {
            let request = json!({"body": parsed, "principal": principal_json(&p)});
            let idem = Idempotency {
                keys: &svc.idempotency,
                key: &key,
                request: &request,
                generated,
            };
            let render: &RenderSession = &|s: &StartedSession| render_started(s).to_string();
            svc.core
                .start_session_idempotent(&zone_id, &p.caller, &req, Some((&idem, render)), now)
                .await
                .map_err(api)?
        }
    };
    Ok(match outcome {
        Idempotent::Fresh(s) => json_response(StatusCode::CREATED, render_started(&s)),
        Idempotent::Replayed { status, body } => replayed(status, body),
    })
}

/// Read one session (owner or operator; otherwise `404 session_not_found`).
#[utoipa::path(get, path = "/zones/{zone_id}/agents/{id}", tag = "agents",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "Session row", body = Value)))]
pub async fn get_session(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path((zone_id, id)): Path<(String, String)>,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    let s = svc
        .core()
        .readable_session(&zone_id, &p.caller, &id)
        .await
        .map_err(api)?;
    Ok(json_response(StatusCode::OK, render_session(&s)))
}

/// Suspend a session and its active descendants.
#[utoipa::path(patch, path = "/zones/{zone_id}/agents/{id}/suspend", tag = "agents",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "`{suspended: n}`", body = Value)))]
pub async fn suspend_session(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path((zone_id, id)): Path<(String, String)>,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    let n = svc
        .core
        .suspend(&zone_id, &p.caller, &id, REASON_SUSPENDED, svc.now())
        .await
        .map_err(api)?;
    Ok(json_response(StatusCode::OK, json!({"suspended": n})))
}

/// Resume a suspended session and its suspended descendants.
#[utoipa::path(patch, path = "/zones/{zone_id}/agents/{id}/resume", tag = "agents",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "`{resumed: n}`", body = Value)))]
pub async fn resume_session(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path((zone_id, id)): Path<(String, String)>,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    let n = svc
        .core
        .resume(&zone_id, &p.caller, &id, svc.now())
        .await
        .map_err(api)?;
    Ok(json_response(StatusCode::OK, json!({"resumed": n})))
}

/// `DELETE …/agents/{id}` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TerminateQuery {
    /// 1..256 characters (default `requested`).
    pub reason: Option<String>,
}

/// `DELETE …/agents/{id}` optional body (plain `invalid_body` on failure).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct TerminateBody {
    /// The caller's lease generation (≥ 1), required for a service session (non-admin).
    #[serde(default)]
    pub lease_generation: Option<i64>,
}

/// Terminate a session: its subtree ends, every edge touching it is revoked.
#[utoipa::path(delete, path = "/zones/{zone_id}/agents/{id}", tag = "agents",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Session id"), TerminateQuery),
    request_body(content = Option<TerminateBody>),
    responses((status = 204, description = "Terminated")))]
pub async fn terminate_session(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path((zone_id, id)): Path<(String, String)>,
    q: Result<Query<TerminateQuery>, QueryRejection>,
    body: Bytes,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    let q = q
        .map_err(|_| HttpError(ApiError::bad_request("invalid_query")))?
        .0;
    let reason = match q.reason {
        None => REASON_REQUESTED.to_owned(),
        Some(r) if (1..=MAX_REASON_CHARS).contains(&r.chars().count()) => r,
        Some(_) => return Err(HttpError(ApiError::bad_request("invalid_query"))),
    };
    let parsed: TerminateBody = if body.iter().all(u8::is_ascii_whitespace) {
        TerminateBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| HttpError(ApiError::bad_request("invalid_body")))?
    };
    if parsed.lease_generation.is_some_and(|g| g < 1) {
        return Err(HttpError(ApiError::bad_request("invalid_body")));
    }
    svc.core
        .terminate(
            &zone_id,
            &p.caller,
            &id,
            &reason,
            parsed.lease_generation,
            svc.now(),
        )
        .await
        .map_err(api)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Acquire a service lease: a new fencing generation and a renewed deadline.
#[utoipa::path(post, path = "/zones/{zone_id}/agents/{id}/lease", tag = "agents",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "`{status, heartbeat_deadline_at, lease_generation}`", body = Value)))]
pub async fn acquire_lease(
    State(svc): State<Svc>,
    Authed(p): Authed,
    Path((zone_id, id)): Path<(String, String)>,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    let l = svc
        .core
        .acquire_lease(&zone_id, &p.caller, &id, svc.now())
        .await
        .map_err(api)?;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "status": l.status,
            "heartbeat_deadline_at": format_iso_ms(&l.heartbeat_deadline_at),
            "lease_generation": l.lease_generation,
        }),
    ))
}

/// `POST …/agents/{id}/heartbeat` body (Zod-validated in the reference).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatBody {
    /// The current lease generation (≥ 1).
    pub lease_generation: i64,
    /// The agent service (accepted; the service record is not kept by this build).
    #[serde(default)]
    pub service_id: Option<String>,
    /// `starting` | `healthy` (default) | `degraded` | `unhealthy`.
    #[serde(default)]
    pub status: Option<String>,
    /// Running invocations (≥ 0, default 0).
    #[serde(default)]
    pub active_invocations: Option<i64>,
    /// Merged into the service's metadata.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// Renew a service lease with the current generation.
#[utoipa::path(post, path = "/zones/{zone_id}/agents/{id}/heartbeat", tag = "agents",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Session id")),
    request_body = HeartbeatBody,
    responses((status = 200, description = "`{agent, service, active_invocations}`", body = Value)))]
pub async fn heartbeat(
    State(svc): State<Svc>,
    Authed(p): Authed,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    let b: HeartbeatBody = parse_z(&body)?;
    if b.lease_generation < 1 {
        return Err(invalid_body("lease_generation", "must be at least 1"));
    }
    if !matches!(
        b.status.as_deref(),
        None | Some("starting" | "healthy" | "degraded" | "unhealthy")
    ) {
        return Err(invalid_body("status", "invalid enum value"));
    }
    let active = b.active_invocations.unwrap_or(0);
    if active < 0 {
        return Err(invalid_body("active_invocations", "must be at least 0"));
    }
    let out = svc
        .core
        .heartbeat(&zone_id, &p.caller, &id, b.lease_generation, svc.now())
        .await
        .map_err(api)?;
    let s = &out.session;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "agent": {
                "id": s.agent_session_id,
                "zone_id": s.zone_id,
                "application_id": s.application_id,
                "status": s.status,
                "last_active_at": opt_time(s.last_heartbeat_at.as_ref()),
                "last_heartbeat_at": opt_time(s.last_heartbeat_at.as_ref()),
                "heartbeat_deadline_at": opt_time(s.heartbeat_deadline_at.as_ref()),
                "lease_generation": s.lease_generation,
            },
            "service": Value::Null,
            "active_invocations": active,
        }),
    ))
}

/// The effective authority of a session (owner or operator).
#[utoipa::path(get, path = "/zones/{zone_id}/agents/{id}/effective-authority", tag = "agents",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "Effective authority summary", body = Value)))]
pub async fn effective_authority(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path((zone_id, id)): Path<(String, String)>,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    let ea = svc
        .core
        .effective_authority(&zone_id, &p.caller, &id, svc.now())
        .await
        .map_err(api)?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(&ea).map_err(|_| HttpError(ApiError::internal()))?,
    ))
}

// --- Delegations ---------------------------------------------------------------------------

/// `POST /zones/{zone_id}/delegations` body (Zod-validated in the reference).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct CreateDelegationBody {
    /// Issuing session.
    pub source_session_id: String,
    /// Receiving session.
    pub target_session_id: String,
    /// Application of the source session.
    pub issuer_application_id: String,
    /// Application of the target session.
    pub receiver_application_id: String,
    /// The edge this one narrows.
    #[serde(default)]
    pub parent_edge_id: Option<String>,
    /// Resource row id or public identifier; null for a broad edge.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// Scopes carried.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Typed constraints (win over `constraints_json` on a shared key).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub constraints: Option<Map<String, Value>>,
    /// Typed constraints (legacy name).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub constraints_json: Option<Map<String, Value>>,
    /// ISO expiry.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// 1..86400.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

impl CreateDelegationBody {
    fn to_request(&self) -> Result<CreateDelegation, HttpError> {
        for (field, v) in [
            ("source_session_id", &self.source_session_id),
            ("target_session_id", &self.target_session_id),
            ("issuer_application_id", &self.issuer_application_id),
            ("receiver_application_id", &self.receiver_application_id),
        ] {
            if v.is_empty() {
                return Err(invalid_body(field, "must not be empty"));
            }
        }
        let expires_at = match self.expires_at.as_deref() {
            None => None,
            Some(s) => Some(
                parse_rfc3339(s).ok_or_else(|| invalid_body("expires_at", "invalid datetime"))?,
            ),
        };
        if self.ttl_seconds.is_some_and(|t| !(1..=86_400).contains(&t)) {
            return Err(invalid_body("ttl_seconds", "must be within 1..86400"));
        }
        let mut constraints = self.constraints_json.clone().unwrap_or_default();
        if let Some(c) = &self.constraints {
            for (k, v) in c {
                constraints.insert(k.clone(), v.clone());
            }
        }
        Ok(CreateDelegation {
            source_session_id: self.source_session_id.clone(),
            target_session_id: self.target_session_id.clone(),
            issuer_application_id: self.issuer_application_id.clone(),
            receiver_application_id: self.receiver_application_id.clone(),
            parent_edge_id: self.parent_edge_id.clone(),
            resource_id: self.resource_id.clone(),
            scopes: self.scopes.clone(),
            constraints,
            expires_at,
            ttl_seconds: self.ttl_seconds,
        })
    }

    /// The normalised request of the idempotency fingerprint (scopes sorted).
    fn normalised(&self) -> Value {
        let mut v = self.clone();
        v.scopes.sort();
        serde_json::to_value(&v).unwrap_or(Value::Null)
    }
}

/// The 201 body of a create: the edge with `id` renamed `delegation_edge_id`, plus
/// `warnings`, `allow_reason` and `effective_authority`.
pub fn render_created(d: &CreatedDelegation) -> Value {
    let mut edge = match serde_json::to_value(&d.edge) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Some(id) = edge.remove("id") {
        edge.insert("delegation_edge_id".to_owned(), id);
    }
    edge.insert("warnings".to_owned(), json!(d.warnings));
    edge.insert("allow_reason".to_owned(), json!(d.allow_reason));
    edge.insert(
        "effective_authority".to_owned(),
        serde_json::to_value(&d.effective_authority).unwrap_or(Value::Null),
    );
    Value::Object(edge)
}

/// Create a delegation edge (optionally under `Idempotency-Key`).
#[utoipa::path(post, path = "/zones/{zone_id}/delegations", tag = "delegations",
    params(("zone_id" = String, Path, description = "Zone")),
    request_body = CreateDelegationBody,
    responses((status = 201, description = "The edge with warnings, allow_reason, effective_authority", body = Value)))]
pub async fn create_delegation(
    State(svc): State<Svc>,
    Authed(p): Authed,
    Path(zone_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> CoordinatorHttpResult {
    params(&[&zone_id])?;
    let (key, _) = idempotency_key(&headers)?;
    let parsed: CreateDelegationBody = parse_z(&body)?;
    let req = parsed.to_request()?;
    let now = svc.now();
    let outcome = match key {
        None => Idempotent::Fresh(
            svc.core
                .create_delegation(&zone_id, &p.caller, &req, now)
                .await
                .map_err(api)?,
        ),
        Some(key) => {
            let request = json!({"body": parsed.normalised(), "principal": principal_json(&p)});
            let idem = Idempotency {
                keys: &svc.idempotency,
                key: &key,
                request: &request,
                generated: false,
            };
            let render: &RenderDelegation = &|d: &CreatedDelegation| render_created(d).to_string();
            svc.core
                .create_delegation_idempotent(&zone_id, &p.caller, &req, Some((&idem, render)), now)
                .await
                .map_err(api)?
        }
    };
    Ok(match outcome {
        Idempotent::Fresh(d) => json_response(StatusCode::CREATED, render_created(&d)),
        Idempotent::Replayed { status, body } => replayed(status, body),
    })
}

/// Revoke an edge and everything downstream of it.
#[utoipa::path(patch, path = "/zones/{zone_id}/delegations/{id}/revoke", tag = "delegations",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Edge id")),
    responses((status = 200, description = "`{revoked_edges, affected_sessions, terminated_sessions}` (counts)", body = Value)))]
pub async fn revoke_delegation(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path((zone_id, id)): Path<(String, String)>,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    let out = svc
        .core
        .revoke_delegation(&zone_id, &p.caller, &id, svc.now())
        .await
        .map_err(api)?;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "revoked_edges": out.revoked_edges.len(),
            "affected_sessions": out.affected_sessions.len(),
            "terminated_sessions": out.terminated_sessions.len(),
        }),
    ))
}

/// The edge and its live downstream edges (operator / `coordinator.admin` only).
#[utoipa::path(get, path = "/zones/{zone_id}/delegations/{id}/traverse", tag = "delegations",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Edge id")),
    responses((status = 200, description = "`[{id, source_session_id, target_session_id, depth}]`", body = Value)))]
pub async fn traverse(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path((zone_id, id)): Path<(String, String)>,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    let rows = svc
        .core
        .traverse(&zone_id, &p.caller, &id, svc.now())
        .await
        .map_err(api)?;
    Ok(json_response(StatusCode::OK, json!(rows)))
}

/// What revoking the edge would touch now (operator / `coordinator.admin` only).
#[utoipa::path(get, path = "/zones/{zone_id}/delegations/{id}/impact", tag = "delegations",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Edge id")),
    responses((status = 200, description = "`{edge_id, affected_edges, affected_sessions, affected_authority_records}`", body = Value)))]
pub async fn impact(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path((zone_id, id)): Path<(String, String)>,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    let report = svc
        .core
        .impact(&zone_id, &p.caller, &id, svc.now())
        .await
        .map_err(api)?;
    Ok(json_response(StatusCode::OK, json!(report)))
}
