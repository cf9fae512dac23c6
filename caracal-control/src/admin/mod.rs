//! The Admin API (port 3000, prefix `/v1`): zones, applications, resources, providers,
//! policies and policy sets, approvals, the subject kill switch and admin tokens (reference
//! `control-plane.md` §3, wire shapes `http-bodies.md` §0–§9).
//!
//! ## Layout
//!
//! - [`auth`]: the admin-token gate every `/v1` route passes (401/403 shapes, zone binding,
//!   system zone).
//! - [`zones`], [`applications`], [`resources`], [`providers`], [`tokens`]: the handlers and the
//!   validation rules of each resource, next to the handler that applies them.
//! - [`policies`]: policies and policy sets over `caracal_core::policy::lifecycle`;
//!   [`approvals`]: the operator decision plane over `caracal_core::exchange::approval` (the
//!   same core functions as the STS subject plane); [`subjects`]: the subject kill switch.
//! - this module: [`AdminApi`] (stores, keyring, clock, ids), the router, the OpenAPI document,
//!   and what every handler shares: the list envelope and cursor, path-parameter and body
//!   parsing, store-error mapping.
//!
//! ## Invariants
//!
//! - Every `/v1` route is behind [`auth::gate`]; the only unauthenticated routes are
//!   `/health` and `/openapi.json`.
//! - Secrets (client secrets, admin tokens, provider secret values) are returned only where the
//!   reference returns them (a create or rotate response, once) and never logged; provider
//!   secret values are never returned at all.
//! - Fail closed: a store failure on the authentication path is a 500, never a pass.
//! - The OpenAPI document is generated from the same route definitions the router serves
//!   (`utoipa-axum`), so a served route cannot be missing from it.

pub mod admin_audit;
pub mod applications;
pub mod approvals;
pub mod auth;
pub mod policies;
pub mod providers;
pub mod resources;
pub mod subjects;
pub mod tokens;
pub mod zones;

use std::sync::Arc;

use axum::Json;
use axum::extract::Request;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caracal_core::api::ApiError;
use caracal_core::audit::AuditHmacKey;
use caracal_core::audit::event::AuditEvent;
use caracal_core::audit::sink::AuditSink;
use caracal_core::clock::{Clock, SharedClock};
use caracal_core::exchange::approval::ApprovalWaiters;
use caracal_core::ids::SharedIdGen;
use caracal_core::model::time::{format_iso_ms, parse_rfc3339};
use caracal_core::policy::lifecycle::PolicyLifecycle;
use caracal_core::secrets::Keyring;
use caracal_core::store::admin_audit::AdminAuditStore;
use caracal_core::store::approvals::ApprovalStore;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::directory::{
    AdminTokenStore, ApplicationStore, ProviderStore, ResourceStore, SecretStore, ZoneStore,
};
use caracal_core::store::outbox::OutboxStore;
use caracal_core::store::policy::PolicyStore;
use caracal_core::store::{Cursor, Listing, Page, PageRequest, StoreError};
use caracal_service::config::Secret;
use caracal_service::http::{HttpError, not_found, with_request_id};
use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::audit::{AdminAuditLog, AuditLayer, record_mutations};
use utoipa_axum::routes;

/// The stores the Admin API writes (trait objects, so Postgres and memory are interchangeable).
#[derive(Clone)]
pub struct AdminStores {
    /// Zones.
    pub zones: Arc<dyn ZoneStore>,
    /// Applications.
    pub applications: Arc<dyn ApplicationStore>,
    /// Resources.
    pub resources: Arc<dyn ResourceStore>,
    /// Providers.
    pub providers: Arc<dyn ProviderStore>,
    /// Sealed provider secret documents.
    pub secrets: Arc<dyn SecretStore>,
    /// Admin tokens.
    pub admin_tokens: Arc<dyn AdminTokenStore>,
    /// Policies, policy sets and the per-zone binding.
    pub policy: Arc<dyn PolicyStore>,
    /// Approval holds.
    pub approvals: Arc<dyn ApprovalStore>,
    /// Authority records (the subject kill switch).
    pub authority: Arc<dyn AuthorityStore>,
    /// The transactional outbox (`caracal.sessions.revoke` of the kill switch, activation
    /// status).
    pub outbox: Arc<dyn OutboxStore>,
    /// The admin audit chain every mutation is recorded on.
    pub admin_audit: Arc<dyn AdminAuditStore>,
}

impl AdminStores {
    /// Every store from one backend (a `MemoryStore` or a `PgStore`).
    pub fn from_store<S>(store: Arc<S>) -> Self
    where
        S: ZoneStore
            + ApplicationStore
            + ResourceStore
            + ProviderStore
            + SecretStore
            + AdminTokenStore
            + PolicyStore
            + ApprovalStore
            + AuthorityStore
            + OutboxStore
            + AdminAuditStore
            + 'static,
    {
        Self {
            zones: store.clone(),
            applications: store.clone(),
            resources: store.clone(),
            providers: store.clone(),
            secrets: store.clone(),
            admin_tokens: store.clone(),
            policy: store.clone(),
            approvals: store.clone(),
            authority: store.clone(),
            outbox: store.clone(),
            admin_audit: store,
        }
    }
}

impl std::fmt::Debug for AdminStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminStores").finish_non_exhaustive()
    }
}

/// What the operator approval plane shares with the STS approval plane of the same
/// deployment: the long-poll wake registry (a decision here wakes the STS pollers of the hold
/// at once) and the audit sink the `step_up_decided` events go to.
#[derive(Clone)]
pub struct ApprovalPlane {
    /// The wake registry of `GET /approvals/{id}?wait=N` (the STS engine's, when embedded).
    pub waiters: Arc<ApprovalWaiters>,
    /// Where decision events go (the STS audit emitter, when embedded).
    pub audit: Arc<dyn AuditSink>,
}

impl ApprovalPlane {
    /// A plane of its own: a private wake registry (STS pollers then see a decision at their
    /// next tick) and a sink that only logs the events. For an Admin API embedded next to an
    /// STS, build the plane from the STS engine's `waiters()` and `audit()` instead, so the
    /// decision events reach the audit ledger.
    pub fn standalone() -> Self {
        Self {
            waiters: Arc::new(ApprovalWaiters::new()),
            audit: Arc::new(LogAuditSink),
        }
    }
}

impl std::fmt::Debug for ApprovalPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalPlane").finish_non_exhaustive()
    }
}

/// The sink of a standalone plane: logs each event's identity (never its metadata).
#[derive(Debug)]
struct LogAuditSink;

impl AuditSink for LogAuditSink {
    fn emit(&self, event: AuditEvent) {
        tracing::info!(
            id = %event.id,
            zone_id = %event.zone_id,
            event_type = %event.event_type,
            decision = %event.decision,
            "admin api audit event (no audit emitter wired)"
        );
    }
}

/// The Admin API's clock for the core lifecycles: the injected clock truncated to the
/// millisecond, so rows they stamp list like every other row ([`AdminApi::now`]).
#[derive(Debug)]
struct MillisClock(SharedClock);

impl Clock for MillisClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now().trunc_subsecs(3)
    }
}

/// The Admin API: its stores, the KEK ring sealing provider secrets, the bootstrap token, the
/// clock, the id source, the policy lifecycle and the approval plane. Shared by every handler
/// as `State<Arc<AdminApi>>`.
pub struct AdminApi {
    stores: AdminStores,
    keyring: Arc<Keyring>,
    bootstrap: Option<Secret>,
    clock: SharedClock,
    ids: SharedIdGen,
    policies: PolicyLifecycle<dyn PolicyStore>,
    plane: ApprovalPlane,
    audit: AdminAuditLog,
}

/// Everything an [`AdminApi`] is built from ([`AdminApi::from_parts`]).
pub struct AdminParts {
    /// The stores.
    pub stores: AdminStores,
    /// The KEK ring sealing provider secrets.
    pub keyring: Arc<Keyring>,
    /// `CARACAL_BOOTSTRAP_ADMIN_TOKEN`.
    pub bootstrap: Option<Secret>,
    /// The clock.
    pub clock: SharedClock,
    /// Row ids.
    pub ids: SharedIdGen,
    /// The approval plane.
    pub plane: ApprovalPlane,
    /// `ADMIN_AUDIT_HMAC_KEY`; `None` signs the admin audit chain with a fresh per-process key
    /// (dev and embedded hosts: those links cannot be verified after a restart).
    pub audit_key: Option<AuditHmacKey>,
}

impl std::fmt::Debug for AdminParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminParts").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("bootstrap", &self.bootstrap.is_some())
            .finish_non_exhaustive()
    }
}

/// The shared state of the handlers.
pub type Svc = Arc<AdminApi>;

impl AdminApi {
    /// An Admin API over `stores` with a standalone approval plane
    /// ([`ApprovalPlane::standalone`]).
    pub fn new(
        stores: AdminStores,
        keyring: Arc<Keyring>,
        bootstrap: Option<Secret>,
        clock: SharedClock,
        ids: SharedIdGen,
    ) -> Arc<Self> {
        Self::with_plane(
            stores,
            keyring,
            bootstrap,
            clock,
            ids,
            ApprovalPlane::standalone(),
        )
    }

    /// An Admin API over `stores` whose approval decisions share `plane` (the STS's wake
    /// registry and audit sink, when both run in one process).
    pub fn with_plane(
        stores: AdminStores,
        keyring: Arc<Keyring>,
        bootstrap: Option<Secret>,
        clock: SharedClock,
        ids: SharedIdGen,
        plane: ApprovalPlane,
    ) -> Arc<Self> {
        Self::from_parts(AdminParts {
            stores,
            keyring,
            bootstrap,
            clock,
            ids,
            plane,
            audit_key: None,
        })
    }

    /// An Admin API from its parts (the service binary passes the configured audit key).
    pub fn from_parts(parts: AdminParts) -> Arc<Self> {
        let AdminParts {
            stores,
            keyring,
            bootstrap,
            clock,
            ids,
            plane,
            audit_key,
        } = parts;
        let policies = PolicyLifecycle::new(
            Arc::clone(&stores.policy),
            Arc::new(MillisClock(Arc::clone(&clock))),
            Arc::clone(&ids),
        );
        let key = audit_key.or_else(|| {
            let key = crate::audit::ephemeral_key();
            if key.is_none() {
                tracing::warn!("no admin audit key and no randomness: links are unsigned");
            }
            key
        });
        let audit = AdminAuditLog::new(
            Arc::clone(&stores.admin_audit),
            key,
            Arc::clone(&clock),
            Arc::clone(&ids),
        );
        Arc::new(Self {
            stores,
            keyring,
            bootstrap,
            clock,
            ids,
            policies,
            plane,
            audit,
        })
    }

    /// The admin audit chain.
    pub fn audit(&self) -> &AdminAuditLog {
        &self.audit
    }

    /// The stores.
    pub fn stores(&self) -> &AdminStores {
        &self.stores
    }

    /// Now, truncated to the millisecond: stored timestamps then equal their wire form and
    /// the list cursor (which carries milliseconds) never skips a row.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now().trunc_subsecs(3)
    }

    /// A fresh row id.
    pub(crate) fn new_id(&self) -> String {
        self.ids.next_id()
    }

    /// The policy lifecycle (validation, versions, activation, simulation).
    pub(crate) fn policies(&self) -> &PolicyLifecycle<dyn PolicyStore> {
        &self.policies
    }

    /// The approval plane shared with the STS.
    pub(crate) fn plane(&self) -> &ApprovalPlane {
        &self.plane
    }

    /// The HTTP surface: `/v1/...`, `/openapi.json` and `/health`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let (v1, api) = v1_routes().split_for_parts();
        let layer = Arc::new(AuditLayer {
            log: self.audit.clone(),
            is_read: auth::is_read,
            zone_of: auth::path_zone,
        });
        // Route layers run last-added first: the gate authenticates, then the audit layer
        // sees its `AuditActor` and records the mutation before the response leaves.
        let v1 = v1
            .route_layer(axum::middleware::from_fn_with_state(
                layer,
                record_mutations,
            ))
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(self),
                auth::gate,
            ))
            .layer(axum::middleware::from_fn(security_headers));
        let doc = Arc::new(openapi_json(api));
        let router = axum::Router::new()
            .merge(v1)
            .route(
                "/openapi.json",
                axum::routing::get(move || {
                    let doc = Arc::clone(&doc);
                    async move { ([(header::CONTENT_TYPE, "application/json")], (*doc).clone()) }
                }),
            )
            .route(
                "/health",
                axum::routing::get(|| async { caracal_service::health::health_response(Ok(())) }),
            )
            .fallback(not_found)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(Arc::clone(self));
        with_request_id(router)
    }
}

/// The OpenAPI 3 document of the `/v1` routes, generated from their definitions.
pub fn openapi() -> utoipa::openapi::OpenApi {
    v1_routes().split_for_parts().1
}

fn openapi_json(api: utoipa::openapi::OpenApi) -> String {
    api.to_json()
        .unwrap_or_else(|_| r#"{"openapi":"3.1.0","paths":{}}"#.to_owned())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Caracal Admin API",
        description = "Zones, applications, resources, providers, policies and policy sets, approvals, subjects and admin tokens. Every route needs `Authorization: Bearer <admin token>`."
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi
            .components
            .get_or_insert_with(utoipa::openapi::Components::new);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "admin_token",
            Vec::<String>::new(),
        )]);
    }
}

/// Every `/v1` route with its OpenAPI operation.
fn v1_routes() -> OpenApiRouter<Svc> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(zones::list_zones, zones::create_zone))
        .routes(routes!(
            zones::get_zone,
            zones::patch_zone,
            zones::delete_zone
        ))
        .routes(routes!(zones::dcr_status))
        .routes(routes!(
            applications::list_applications,
            applications::create_application
        ))
        .routes(routes!(
            applications::get_application,
            applications::patch_application,
            applications::delete_application
        ))
        .routes(routes!(applications::rotate_secret))
        .routes(routes!(
            resources::list_resources,
            resources::create_resource
        ))
        .routes(routes!(
            resources::get_resource,
            resources::patch_resource,
            resources::delete_resource
        ))
        .routes(routes!(
            providers::list_providers,
            providers::create_provider
        ))
        .routes(routes!(
            providers::get_provider,
            providers::patch_provider,
            providers::delete_provider
        ))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(policies::list_policies, policies::create_policy))
        .routes(routes!(policies::get_policy, policies::delete_policy))
        .routes(routes!(policies::add_policy_version))
        .routes(routes!(
            policies::list_policy_sets,
            policies::create_policy_set
        ))
        .routes(routes!(
            policies::get_policy_set,
            policies::delete_policy_set
        ))
        .routes(routes!(
            policies::list_set_versions,
            policies::create_set_version
        ))
        .routes(routes!(policies::get_set_version))
        .routes(routes!(policies::activate))
        .routes(routes!(policies::activation_status))
        .routes(routes!(policies::simulate))
        .routes(routes!(approvals::list_approvals))
        .routes(routes!(approvals::get_approval))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::reject))
        .routes(routes!(subjects::revoke_subject))
        .routes(routes!(admin_audit::list_zone_admin_audit))
        .routes(routes!(admin_audit::list_global_admin_audit))
}

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Headers every `/v1` response carries (reference §0).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

// --- Shared helpers ------------------------------------------------------------------------

/// `Result` of a handler.
pub type AdminResult<T> = Result<T, HttpError>;

/// A JSON response with a status.
pub(crate) fn respond(status: u16, body: Value) -> Response {
    let status = axum::http::StatusCode::from_u16(status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

/// 204 No Content.
pub(crate) fn no_content() -> Response {
    axum::http::StatusCode::NO_CONTENT.into_response()
}

/// Whether a path parameter is well formed: "`:zoneId`, `:id` … must match
/// `^[A-Za-z0-9_.\-:]{1,128}$`, else `400 {"error":"invalid_params"}`" (reference §0).
pub fn is_valid_param(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'))
}

/// Check path parameters ([`is_valid_param`]).
pub(crate) fn check_params(params: &[&str]) -> AdminResult<()> {
    if params.iter().all(|p| is_valid_param(p)) {
        Ok(())
    } else {
        Err(HttpError(ApiError::bad_request("invalid_params")))
    }
}

/// A 500 for a store failure (logged without secrets; store errors carry none).
pub(crate) fn internal(e: &StoreError) -> HttpError {
    tracing::warn!(error = %e, "admin api: store failure");
    HttpError(ApiError::internal())
}

/// A plain error with a code.
pub(crate) fn err(status: u16, code: &str) -> HttpError {
    HttpError(ApiError::new(status, code))
}

/// A plain error with a code and a description.
pub(crate) fn err_desc(status: u16, code: &str, description: impl Into<String>) -> HttpError {
    HttpError(ApiError::new(status, code).with_description(description))
}

/// Parse a JSON body into `T`; any failure (not JSON, wrong shape, unknown key on a strict
/// body) is `400 <code>`. The description never quotes the body (it may hold secrets).
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8], code: &str) -> AdminResult<T> {
    serde_json::from_slice(body).map_err(|_| err_desc(400, code, "request body failed validation"))
}

/// Deserialize a field that distinguishes "absent" (`None`, with `#[serde(default)]`) from
/// "null" (`Some(None)`).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Default page size of Admin API lists.
pub const DEFAULT_LIMIT: u32 = 200;
/// Largest page size.
pub const MAX_LIMIT: u32 = 500;
/// Longest cursor accepted.
pub const MAX_CURSOR_LEN: usize = 512;

/// The list query: "`limit` int 1..500, default 200 (string coerced); `cursor` string 1..512.
/// Bad → `400 invalid_query`; undecodable cursor → `400 invalid_cursor`" (reference §0.1), plus
/// `status` `active` (default) | `archived` where the route lists archivable rows.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1..500 (default 200).
    pub limit: Option<String>,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// `active` (default) or `archived`, where the rows are archivable.
    pub status: Option<String>,
}

/// A parsed list query.
#[derive(Debug)]
pub(crate) struct ListParams {
    pub page: PageRequest,
    pub listing: Listing,
}

/// Parse a list query ([`ListQuery`]).
pub(crate) fn list_params(
    q: Result<axum::extract::Query<ListQuery>, QueryRejection>,
) -> AdminResult<ListParams> {
    let q = q.map_err(|_| err(400, "invalid_query"))?.0;
    let page = page_request(q.limit.as_deref(), q.cursor.as_deref())?;
    let listing = match q.status.as_deref() {
        None | Some("active") => Listing::Active,
        Some("archived") => Listing::Archived,
        Some(_) => return Err(err(400, "invalid_query")),
    };
    Ok(ListParams { page, listing })
}

/// The page of a list query: `limit` and `cursor` under the §0.1 rules.
pub(crate) fn page_request(limit: Option<&str>, cursor: Option<&str>) -> AdminResult<PageRequest> {
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| err(400, "invalid_query"))?,
    };
    let after = match cursor {
        None => None,
        Some(c) if c.is_empty() || c.len() > MAX_CURSOR_LEN => {
            return Err(err(400, "invalid_query"));
        }
        Some(c) => Some(decode_cursor(c).ok_or_else(|| err(400, "invalid_cursor"))?),
    };
    Ok(PageRequest { limit, after })
}

/// "Cursor = base64url (no padding) of compact JSON `{"ts":"<ISO ms Z>","id":"<row id>"}`
/// from the last row" (reference §0.1).
pub fn encode_cursor(c: &Cursor) -> String {
    let text = json!({"ts": format_iso_ms(&c.created_at), "id": c.id}).to_string();
    URL_SAFE_NO_PAD.encode(text)
}

/// The inverse of [`encode_cursor`]; `None` when it does not decode.
pub fn decode_cursor(text: &str) -> Option<Cursor> {
    #[derive(Deserialize)]
    struct Raw {
        ts: String,
        id: String,
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let raw: Raw = serde_json::from_slice(&bytes).ok()?;
    if raw.id.is_empty() {
        return None;
    }
    Some(Cursor {
        created_at: parse_rfc3339(&raw.ts)?,
        id: raw.id,
    })
}

/// The list envelope `{"items": [...], "next_cursor": string|null}`.
pub(crate) fn envelope<T>(page: Page<T>, render: impl Fn(&T) -> Value) -> Response {
    let items: Vec<Value> = page.items.iter().map(render).collect();
    let next = page.next.as_ref().map(encode_cursor);
    respond(200, json!({"items": items, "next_cursor": next}))
}

/// Map a list's store error: a refused cursor is `400 invalid_cursor`, the rest a 500.
pub(crate) fn list_error(e: &StoreError) -> HttpError {
    match e {
        StoreError::Invalid(_) => err(400, "invalid_cursor"),
        other => internal(other),
    }
}

/// The zone of a create: it must exist and be unarchived, else `404 zone_not_found`.
pub(crate) async fn require_zone(svc: &AdminApi, zone_id: &str) -> AdminResult<()> {
    match svc.stores.zones.get_zone(zone_id).await {
        Ok(Some(z)) if z.archived_at.is_none() => Ok(()),
        Ok(_) => Err(err(404, "zone_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Trim a name and check its length in characters (`1..=max`).
pub(crate) fn trimmed_name(name: &str, max: usize) -> Option<String> {
    let t = name.trim();
    let n = t.chars().count();
    (1..=max).contains(&n).then(|| t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            created_at: parse_rfc3339("2026-05-21T12:00:00.123Z").unwrap(),
            id: "abc".to_owned(),
        };
        let text = encode_cursor(&c);
        assert!(!text.contains('='));
        assert_eq!(decode_cursor(&text), Some(c));
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("{}")), None);
    }

    #[test]
    fn params() {
        assert!(is_valid_param("zone-1_a.b:c"));
        assert!(!is_valid_param(""));
        assert!(!is_valid_param("a/b"));
        assert!(!is_valid_param(&"a".repeat(129)));
    }
}
