//! The Coordinator's lists (`http-bodies.md` §11.0, §11.2, §11.3), the operator's outbox
//! requeue and the public `POST /v1/verify` (`control-plane.md` §2).
//!
//! Lists: `limit` 1..500 (default 100), `cursor` = the last id of the previous page, which
//! must name a row of the zone the reader can see (else `400 invalid_cursor`); order `id
//! DESC`; `{items, next_cursor}` with `next_cursor` the last id iff the page is full.
//!
//! The reader rule is the core's: an admin (`coordinator.admin`, the operator token) sees the
//! zone; any other caller sees the sessions of its own application and the edges its
//! application issued or received.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use caracal_core::api::ApiError;
use caracal_core::coordinator::{Caller, CoordinatorError};
use caracal_core::mandate::{MandateUse, VerifyPolicy};
use caracal_core::model::delegation::DelegationEdge;
use caracal_core::model::session::{Lifecycle, Session, SessionStatus};
use caracal_core::store::StoreError;
use caracal_core::store::coordinator::{EdgeFilter, IdPage, SessionFilter};
use caracal_service::http::HttpError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Svc;
use super::auth::AuthedOrOperator;
use super::routes::{CoordinatorHttpResult, render_session};
use crate::admin::is_valid_param;

/// Default page size of Coordinator lists.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size.
pub const MAX_LIMIT: u32 = 500;

fn bad(code: &str) -> HttpError {
    HttpError(ApiError::bad_request(code))
}

fn api(e: CoordinatorError) -> HttpError {
    HttpError(e.to_api())
}

fn store(e: &StoreError) -> HttpError {
    tracing::warn!(error = %e, "coordinator: store failure");
    HttpError(ApiError::internal())
}

fn params(values: &[&str]) -> Result<(), HttpError> {
    if values.iter().all(|p| is_valid_param(p)) {
        Ok(())
    } else {
        Err(bad("invalid_params"))
    }
}

fn respond(status: StatusCode, body: Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, axum::Json(body)).into_response()
}

/// `limit` and `cursor` of every list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1..500 (default 100).
    pub limit: Option<String>,
    /// The last id of the previous page.
    pub cursor: Option<String>,
}

/// The session list's query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionListQuery {
    /// Page size, 1..500 (default 100).
    pub limit: Option<String>,
    /// The last id of the previous page.
    pub cursor: Option<String>,
    /// `active` | `suspended` | `terminated` | `expired`.
    pub status: Option<String>,
    /// `task` | `service`.
    pub lifecycle: Option<String>,
    /// Only sessions of this application.
    pub application_id: Option<String>,
    /// Only sessions carrying this label.
    pub label: Option<String>,
}

fn page_of(limit: Option<&str>, cursor: Option<&str>) -> Result<IdPage, HttpError> {
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad("invalid_query"))?,
    };
    let after_id = match cursor {
        None => None,
        Some(c) if is_valid_param(c) => Some(c.to_owned()),
        Some(_) => return Err(bad("invalid_cursor")),
    };
    Ok(IdPage { limit, after_id })
}

fn envelope<T>(
    items: &[T],
    limit: u32,
    id: impl Fn(&T) -> &str,
    render: impl Fn(&T) -> Value,
) -> axum::response::Response {
    let next = if items.len() >= limit as usize {
        items.last().map(|x| id(x).to_owned())
    } else {
        None
    };
    let items: Vec<Value> = items.iter().map(render).collect();
    respond(StatusCode::OK, json!({"items": items, "next_cursor": next}))
}

/// Whether `caller` may see `edge`: an admin, or its application issued or received it.
fn edge_visible(caller: &Caller, edge: &DelegationEdge) -> bool {
    caller.is_admin()
        || edge.issuer_application_id == caller.client_id
        || edge.receiver_application_id == caller.client_id
}

/// An Edge on the wire (`http-bodies.md` §11.3).
pub fn render_edge(e: &DelegationEdge) -> Value {
    serde_json::to_value(e).unwrap_or(Value::Null)
}

/// An Edge of the active list: plus its `broad_reason` (null unless broad).
fn render_active_edge(e: &DelegationEdge) -> Value {
    let mut v = match render_edge(e) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    v.insert(
        "broad_reason".to_owned(),
        e.constraints_json
            .get("broad_reason")
            .cloned()
            .unwrap_or(Value::Null),
    );
    Value::Object(v)
}

/// A child in the children list: the Session without `terminated_at`,
/// `termination_reason` and `lease_generation`.
fn render_child(s: &Session) -> Value {
    let mut v = render_session(s);
    if let Value::Object(m) = &mut v {
        for k in ["terminated_at", "termination_reason", "lease_generation"] {
            m.remove(k);
        }
    }
    v
}

/// The cursor of a session list must name a session of the zone the reader can see.
async fn check_session_cursor(
    svc: &Svc,
    zone_id: &str,
    caller: &Caller,
    page: &IdPage,
) -> Result<(), HttpError> {
    if let Some(c) = &page.after_id {
        match svc.core.readable_session(zone_id, caller, c).await {
            Ok(_) => {}
            Err(CoordinatorError::SessionNotFound) => return Err(bad("invalid_cursor")),
            Err(e) => return Err(api(e)),
        }
    }
    Ok(())
}

/// The cursor of an edge list must name an edge of the zone the reader can see.
async fn check_edge_cursor(
    svc: &Svc,
    zone_id: &str,
    caller: &Caller,
    page: &IdPage,
) -> Result<(), HttpError> {
    if let Some(c) = &page.after_id {
        let edge = svc
            .store
            .get_edge(zone_id, c)
            .await
            .map_err(|e| store(&e))?;
        if !edge.is_some_and(|e| edge_visible(caller, &e)) {
            return Err(bad("invalid_cursor"));
        }
    }
    Ok(())
}

/// List the zone's sessions (own application's unless admin), newest first.
#[utoipa::path(get, path = "/zones/{zone_id}/agents", tag = "agents",
    params(("zone_id" = String, Path, description = "Zone"), SessionListQuery),
    responses((status = 200, description = "`{items, next_cursor}` of Session rows", body = Value),
        (status = 400, description = "`invalid_query` / `invalid_cursor`")))]
pub async fn list_sessions(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path(zone_id): Path<String>,
    q: Result<Query<SessionListQuery>, QueryRejection>,
) -> CoordinatorHttpResult {
    params(&[&zone_id])?;
    let q = q.map_err(|_| bad("invalid_query"))?.0;
    let page = page_of(q.limit.as_deref(), q.cursor.as_deref())?;
    let status = match q.status.as_deref() {
        None => None,
        Some("active") => Some(SessionStatus::Active),
        Some("suspended") => Some(SessionStatus::Suspended),
        Some("terminated") => Some(SessionStatus::Terminated),
        Some("expired") => Some(SessionStatus::Expired),
        Some(_) => return Err(bad("invalid_query")),
    };
    let lifecycle = match q.lifecycle.as_deref() {
        None => None,
        Some("task") => Some(Lifecycle::Task),
        Some("service") => Some(Lifecycle::Service),
        Some(_) => return Err(bad("invalid_query")),
    };
    for v in [&q.application_id, &q.label].into_iter().flatten() {
        if v.is_empty() || v.chars().count() > 128 {
            return Err(bad("invalid_query"));
        }
    }
    let caller = &p.caller;
    let mut filter = SessionFilter {
        status,
        lifecycle,
        application_id: q.application_id.clone(),
        label: q.label.clone(),
        parent_id: None,
    };
    if !caller.is_admin() {
        if filter
            .application_id
            .as_ref()
            .is_some_and(|a| *a != caller.client_id)
        {
            return Ok(envelope::<Session>(
                &[],
                page.limit,
                |s| s.agent_session_id.as_str(),
                render_session,
            ));
        }
        filter.application_id = Some(caller.client_id.clone());
    }
    check_session_cursor(&svc, &zone_id, caller, &page).await?;
    let rows = svc
        .store
        .list_sessions(&zone_id, &filter, &page)
        .await
        .map_err(|e| store(&e))?;
    Ok(envelope(
        &rows.items,
        page.limit,
        |s| s.agent_session_id.as_str(),
        render_session,
    ))
}

/// List a session's children (owner or admin), newest first.
#[utoipa::path(get, path = "/zones/{zone_id}/agents/{id}/children", tag = "agents",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Parent session id"), PageQuery),
    responses((status = 200, description = "`{items, next_cursor}` of child sessions", body = Value),
        (status = 400, description = "`invalid_query` / `invalid_cursor`"),
        (status = 404, description = "`session_not_found`")))]
pub async fn list_children(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path((zone_id, id)): Path<(String, String)>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    let q = q.map_err(|_| bad("invalid_query"))?.0;
    let page = page_of(q.limit.as_deref(), q.cursor.as_deref())?;
    let parent = svc
        .core
        .readable_session(&zone_id, &p.caller, &id)
        .await
        .map_err(api)?;
    if let Some(c) = &page.after_id {
        let child = svc
            .store
            .get_session(&zone_id, c)
            .await
            .map_err(|e| store(&e))?;
        let parent_id = Some(parent.agent_session_id.as_str());
        if child.is_none_or(|s| s.parent_id.as_deref() != parent_id) {
            return Err(bad("invalid_cursor"));
        }
    }
    let filter = SessionFilter {
        parent_id: Some(parent.agent_session_id),
        ..SessionFilter::default()
    };
    let rows = svc
        .store
        .list_sessions(&zone_id, &filter, &page)
        .await
        .map_err(|e| store(&e))?;
    Ok(envelope(
        &rows.items,
        page.limit,
        |s| s.agent_session_id.as_str(),
        render_child,
    ))
}

/// List the live (active, unexpired) edges the reader may see, newest first.
#[utoipa::path(get, path = "/zones/{zone_id}/delegations/active", tag = "delegations",
    params(("zone_id" = String, Path, description = "Zone"), PageQuery),
    responses((status = 200, description = "`{items, next_cursor}` of Edge rows with `broad_reason`", body = Value),
        (status = 400, description = "`invalid_query` / `invalid_cursor`")))]
pub async fn active_delegations(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path(zone_id): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> CoordinatorHttpResult {
    params(&[&zone_id])?;
    let q = q.map_err(|_| bad("invalid_query"))?.0;
    let page = page_of(q.limit.as_deref(), q.cursor.as_deref())?;
    check_edge_cursor(&svc, &zone_id, &p.caller, &page).await?;
    let filter = EdgeFilter {
        live_at: Some(svc.now()),
        party_application_id: (!p.caller.is_admin()).then(|| p.caller.client_id.clone()),
        ..EdgeFilter::default()
    };
    let rows = svc
        .store
        .list_edges(&zone_id, &filter, &page)
        .await
        .map_err(|e| store(&e))?;
    Ok(envelope(
        &rows.items,
        page.limit,
        |e| e.id.as_str(),
        render_active_edge,
    ))
}

async fn session_edges(
    svc: &Svc,
    p: &AuthedOrOperator,
    zone_id: &str,
    session_id: &str,
    q: Result<Query<PageQuery>, QueryRejection>,
    inbound: bool,
) -> CoordinatorHttpResult {
    params(&[zone_id, session_id])?;
    let q = q.map_err(|_| bad("invalid_query"))?.0;
    let page = page_of(q.limit.as_deref(), q.cursor.as_deref())?;
    let caller = &p.0.caller;
    let s = svc
        .core
        .readable_session(zone_id, caller, session_id)
        .await
        .map_err(api)?;
    check_edge_cursor(svc, zone_id, caller, &page).await?;
    let mut filter = EdgeFilter {
        party_application_id: (!caller.is_admin()).then(|| caller.client_id.clone()),
        ..EdgeFilter::default()
    };
    if inbound {
        filter.target_session_id = Some(s.agent_session_id);
    } else {
        filter.source_session_id = Some(s.agent_session_id);
    }
    let rows = svc
        .store
        .list_edges(zone_id, &filter, &page)
        .await
        .map_err(|e| store(&e))?;
    Ok(envelope(
        &rows.items,
        page.limit,
        |e| e.id.as_str(),
        render_edge,
    ))
}

/// Edges entering a session (every status), newest first.
#[utoipa::path(get, path = "/zones/{zone_id}/delegations/inbound/{session_id}", tag = "delegations",
    params(("zone_id" = String, Path, description = "Zone"), ("session_id" = String, Path, description = "Target session"), PageQuery),
    responses((status = 200, description = "`{items, next_cursor}` of Edge rows", body = Value),
        (status = 400, description = "`invalid_query` / `invalid_cursor`"),
        (status = 404, description = "`session_not_found`")))]
pub async fn inbound_delegations(
    State(svc): State<Svc>,
    p: AuthedOrOperator,
    Path((zone_id, session_id)): Path<(String, String)>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> CoordinatorHttpResult {
    session_edges(&svc, &p, &zone_id, &session_id, q, true).await
}

/// Edges leaving a session (every status), newest first.
#[utoipa::path(get, path = "/zones/{zone_id}/delegations/outbound/{session_id}", tag = "delegations",
    params(("zone_id" = String, Path, description = "Zone"), ("session_id" = String, Path, description = "Source session"), PageQuery),
    responses((status = 200, description = "`{items, next_cursor}` of Edge rows", body = Value),
        (status = 400, description = "`invalid_query` / `invalid_cursor`"),
        (status = 404, description = "`session_not_found`")))]
pub async fn outbound_delegations(
    State(svc): State<Svc>,
    p: AuthedOrOperator,
    Path((zone_id, session_id)): Path<(String, String)>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> CoordinatorHttpResult {
    session_edges(&svc, &p, &zone_id, &session_id, q, false).await
}

/// One live inbound edge of a session: `{id, status}`.
#[utoipa::path(get, path = "/zones/{zone_id}/delegations/inbound/{session_id}/{id}", tag = "delegations",
    params(("zone_id" = String, Path, description = "Zone"), ("session_id" = String, Path, description = "Target session"), ("id" = String, Path, description = "Edge id")),
    responses((status = 200, description = "`{id, status}`", body = Value),
        (status = 404, description = "`delegation_not_found`")))]
pub async fn inbound_delegation(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path((zone_id, session_id, id)): Path<(String, String, String)>,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &session_id, &id])?;
    let not_found = || api(CoordinatorError::DelegationNotFound);
    match svc
        .core
        .readable_session(&zone_id, &p.caller, &session_id)
        .await
    {
        Ok(_) => {}
        Err(CoordinatorError::SessionNotFound) => return Err(not_found()),
        Err(e) => return Err(api(e)),
    }
    let edge = svc
        .store
        .get_edge(&zone_id, &id)
        .await
        .map_err(|e| store(&e))?
        .filter(|e| e.target_session_id == session_id && e.is_live(svc.now()))
        .filter(|e| edge_visible(&p.caller, e))
        .ok_or_else(not_found)?;
    Ok(respond(
        StatusCode::OK,
        json!({"id": edge.id, "status": edge.status}),
    ))
}

/// Bring a dead outbox row back to pending (operator / `coordinator.admin` only).
#[utoipa::path(post, path = "/zones/{zone_id}/outbox/{id}/requeue", tag = "outbox",
    params(("zone_id" = String, Path, description = "Zone"), ("id" = String, Path, description = "Outbox row id")),
    responses((status = 200, description = "`{id, status: \"pending\"}`", body = Requeued),
        (status = 403, description = "`coordinator_admin_required`"),
        (status = 404, description = "`dead_outbox_not_found`")))]
pub async fn requeue_outbox(
    State(svc): State<Svc>,
    AuthedOrOperator(p): AuthedOrOperator,
    Path((zone_id, id)): Path<(String, String)>,
) -> CoordinatorHttpResult {
    params(&[&zone_id, &id])?;
    if !p.caller.is_admin() {
        return Err(api(CoordinatorError::CoordinatorAdminRequired));
    }
    let dead = || HttpError(ApiError::new(404, "dead_outbox_not_found"));
    let row = svc
        .outbox
        .get_outbox(&id)
        .await
        .map_err(|e| store(&e))?
        .ok_or_else(dead)?;
    // Rows carry their zone as a field; one naming another zone is not this zone's.
    let other_zone = row
        .message
        .fields
        .iter()
        .any(|(k, v)| k == "zone_id" && *v != zone_id);
    if row.dead_at.is_none() || other_zone {
        return Err(dead());
    }
    match svc.outbox.requeue_dead(&id, svc.now()).await {
        Ok(()) => Ok(respond(
            StatusCode::OK,
            json!({"id": id, "status": "pending"}),
        )),
        Err(StoreError::NotFound { .. }) => Err(dead()),
        Err(e) => Err(store(&e)),
    }
}

/// The answer of a requeue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Requeued {
    /// The outbox row.
    pub id: String,
    /// Always `pending`.
    pub status: String,
}

/// `200` of `POST /v1/verify`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Verified {
    /// Always true.
    pub valid: bool,
    /// The verified claim set.
    #[schema(value_type = Object)]
    pub claims: Value,
}

/// `401` of `POST /v1/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NotVerified {
    /// Always false.
    pub valid: bool,
    /// Always `token_invalid`.
    pub error: String,
    /// Why, for the caller (no token material).
    pub error_description: String,
}

/// `POST /v1/verify` body (strict).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The mandate (or use `authorization`).
    #[serde(default)]
    pub token: Option<String>,
    /// `Bearer <mandate>`.
    #[serde(default)]
    pub authorization: Option<String>,
    /// The zone whose keys verify it.
    #[serde(default)]
    pub zone_id: Option<String>,
    /// A scope the mandate must carry.
    #[serde(default)]
    pub required_scope: Option<String>,
    /// The mandate must name a live agent session (`agent_session_id`).
    #[serde(default)]
    pub require_session: Option<bool>,
    /// The mandate must name a live delegation edge (`delegation_edge_id`).
    #[serde(default)]
    pub require_delegation: Option<bool>,
}

fn token_invalid(why: &str) -> axum::response::Response {
    let body = NotVerified {
        valid: false,
        error: "token_invalid".to_owned(),
        error_description: why.to_owned(),
    };
    respond(
        StatusCode::UNAUTHORIZED,
        serde_json::to_value(body).unwrap_or(Value::Null),
    )
}

/// Verify a session mandate for a resource (public): signature under the zone's keys,
/// issuer/audience, expiry, live application and authority record, and the optional scope,
/// session and delegation requirements. Any failure is `401 {valid:false, error:"token_invalid"}`.
#[utoipa::path(post, path = "/v1/verify", tag = "verify",
    request_body = VerifyBody,
    security(()),
    responses((status = 200, description = "`{valid: true, claims}`", body = Verified),
        (status = 400, description = "`invalid_request` / `missing_token`"),
        (status = 401, description = "`{valid: false, error: \"token_invalid\"}`", body = NotVerified)))]
pub async fn verify(State(svc): State<Svc>, body: Bytes) -> CoordinatorHttpResult {
    let b: VerifyBody = serde_json::from_slice(&body).map_err(|_| bad("invalid_request"))?;
    let zone_id = b
        .zone_id
        .as_deref()
        .filter(|z| is_valid_param(z))
        .ok_or_else(|| bad("invalid_request"))?;
    let token = match (b.token.as_deref(), b.authorization.as_deref()) {
        (Some(t), _) if !t.trim().is_empty() => t.trim(),
        (_, Some(h)) => match h.strip_prefix("Bearer ").map(str::trim) {
            Some(t) if !t.is_empty() => t,
            _ => return Err(bad("missing_token")),
        },
        _ => return Err(bad("missing_token")),
    };
    if token.len() > super::auth::MAX_BEARER_BYTES {
        return Ok(token_invalid("token too large"));
    }
    let policy =
        VerifyPolicy::sts_subject(zone_id, svc.settings.issuer.as_str(), MandateUse::Session);
    let claims = match svc.keys.verify(token, &policy).await {
        Ok(c) => c,
        Err(_) => return Ok(token_invalid("the mandate does not verify")),
    };
    if let Some(scope) = &b.required_scope {
        if !claims.scopes().any(|s| s == scope) {
            return Ok(token_invalid("missing required scope"));
        }
    }
    let now = svc.now();
    let app_live = svc
        .applications
        .get_application(&claims.zone_id, &claims.client_id)
        .await
        .map_err(|e| store(&e))?
        .is_some_and(|a| a.is_live(now));
    let record_live = svc
        .authority
        .get_authority(&claims.zone_id, &claims.sid)
        .await
        .map_err(|e| store(&e))?
        .is_some_and(|r| r.is_live(now));
    if !app_live || !record_live {
        return Ok(token_invalid("identity revoked"));
    }
    if b.require_session == Some(true) {
        let live = match &claims.agent_session_id {
            Some(id) => svc
                .store
                .get_session(&claims.zone_id, id)
                .await
                .map_err(|e| store(&e))?
                .is_some_and(|s| s.status == SessionStatus::Active),
            None => false,
        };
        if !live {
            return Ok(token_invalid("no live session"));
        }
    }
    if b.require_delegation == Some(true) {
        let live = match &claims.delegation_edge_id {
            Some(id) => svc
                .store
                .get_edge(&claims.zone_id, id)
                .await
                .map_err(|e| store(&e))?
                .is_some_and(|e| e.is_live(now)),
            None => false,
        };
        if !live {
            return Ok(token_invalid("no live delegation"));
        }
    }
    let claims = serde_json::to_value(&claims).map_err(|_| HttpError(ApiError::internal()))?;
    Ok(respond(
        StatusCode::OK,
        json!({"valid": true, "claims": claims}),
    ))
}
