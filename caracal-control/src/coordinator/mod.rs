//! The Coordinator's HTTP surface (port 4000, routes at the root, no `/v1`): sessions (the
//! wire's "agents"), leases and heartbeats, delegation edges, cascade revocation, effective
//! authority, traverse and impact (reference `control-plane.md` §2, wire shapes
//! `http-bodies.md` §11).
//!
//! The rules are `caracal_core::coordinator`; this module authenticates, parses, calls and
//! renders.
//!
//! ## Layout
//!
//! - [`auth`]: the caller: a verified `use=session` mandate of a live application and a live
//!   authority record, or the operator token on the operator allowlist.
//! - [`routes`](mod@routes): the handlers, their bodies and renderings.
//! - [`lists`]: the list routes (sessions, children, delegations), the operator's outbox
//!   requeue and the public `POST /v1/verify`.
//! - this module: [`CoordinatorApi`] (engine, key ring, settings, clock), the router and the
//!   OpenAPI document.
//!
//! ## Invariants
//!
//! - Every successful authenticated mutation is recorded on the admin audit chain before its
//!   response leaves ([`crate::audit::record_mutations`]), else `500 audit_unavailable`.
//! - Every route except `/health`, `/ready`, `/openapi.json` and `POST /v1/verify` authenticates through an extractor of
//!   [`auth`] that runs before the body is read: which routes accept the operator token is
//!   visible in each handler's signature ([`auth::Authed`] vs [`auth::AuthedOrOperator`]).
//! - Fail closed: a store failure while authenticating is a 500, never a pass.
//! - The OpenAPI document comes from the same route definitions the router serves.

pub mod auth;
pub mod lists;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, header};
use caracal_core::api::ApiError;
use caracal_core::audit::AuditHmacKey;
use caracal_core::clock::SharedClock;
use caracal_core::coordinator::{Coordinator, IdempotencyKeys, Limits};
use caracal_core::ids::SharedIdGen;
use caracal_core::mandate::ZoneKeys;
use caracal_core::store::admin_audit::AdminAuditStore;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::coordinator::CoordinatorStore;
use caracal_core::store::directory::{ApplicationStore, ResourceStore};
use caracal_core::store::outbox::OutboxStore;
use caracal_service::config::Secret;
use caracal_service::http::{HttpError, not_found, with_request_id};
use caracal_service::ratelimit::WindowLimiter;
use chrono::{DateTime, SubsecRound, Utc};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{AdminAuditLog, AuditLayer, record_mutations};

/// Default of `AGENT_COORDINATOR_SCOPE`: the scope a session mandate must carry to call the
/// Coordinator. The reference names the setting but not its value; session mandates are
/// minted with `agent:lifecycle`, so that is the default. Deployments set it explicitly.
pub const DEFAULT_COORDINATOR_SCOPE: &str = "agent:lifecycle";

/// The largest request body accepted (reference §2: 256 KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The Coordinator's settings.
#[derive(Clone)]
pub struct CoordinatorSettings {
    /// `ISSUER_URL`: the exact `iss` (and required `aud`) of an accepted mandate.
    pub issuer: String,
    /// `AGENT_COORDINATOR_SCOPE`: the scope every mandate must carry (else `403
    /// missing_scope`).
    pub required_scope: String,
    /// `CARACAL_COORDINATOR_TOKEN`: the operator token, accepted only on the operator
    /// allowlist; `None` disables it.
    pub operator_token: Option<Secret>,
    /// `ADMIN_AUDIT_HMAC_KEY`: signs the admin audit chain the mutations are recorded on;
    /// `None` uses a fresh per-process key (dev and embedded hosts).
    pub audit_key: Option<AuditHmacKey>,
    /// Requests per minute per client address ([`GLOBAL_LIMIT_PER_MIN`] by default; a load
    /// run raises it).
    pub limit_per_min: u32,
}

impl CoordinatorSettings {
    /// Settings for `issuer` with the default scope and no operator token.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            required_scope: DEFAULT_COORDINATOR_SCOPE.to_owned(),
            operator_token: None,
            audit_key: None,
            limit_per_min: GLOBAL_LIMIT_PER_MIN,
        }
    }
}

impl std::fmt::Debug for CoordinatorSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorSettings")
            .field("issuer", &self.issuer)
            .field("required_scope", &self.required_scope)
            .field("operator_token", &self.operator_token.is_some())
            .field("audit_key", &self.audit_key.is_some())
            .finish()
    }
}

/// The Coordinator API: the core engine, the stores the authentication and reads need, the
/// zone key ring verifying mandates, the idempotency HMAC keys, the settings and the clock.
/// Shared by every handler as `State<Arc<CoordinatorApi>>`.
pub struct CoordinatorApi {
    core: Coordinator,
    store: Arc<dyn CoordinatorStore>,
    outbox: Arc<dyn OutboxStore>,
    audit: AdminAuditLog,
    applications: Arc<dyn ApplicationStore>,
    authority: Arc<dyn AuthorityStore>,
    keys: Arc<ZoneKeys>,
    idempotency: IdempotencyKeys,
    settings: CoordinatorSettings,
    clock: SharedClock,
}

impl std::fmt::Debug for CoordinatorApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorApi")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The shared state of the handlers.
pub type Svc = Arc<CoordinatorApi>;

impl CoordinatorApi {
    /// A Coordinator API over one backend (a `MemoryStore` or a `PgStore`), with the default
    /// [`Limits`]. `keys` must read the same signing keys the STS signs with.
    pub fn new<S>(
        store: Arc<S>,
        keys: Arc<ZoneKeys>,
        idempotency: IdempotencyKeys,
        settings: CoordinatorSettings,
        clock: SharedClock,
        ids: SharedIdGen,
    ) -> Arc<Self>
    where
        S: CoordinatorStore
            + ApplicationStore
            + AuthorityStore
            + ResourceStore
            + OutboxStore
            + AdminAuditStore
            + 'static,
    {
        Self::with_limits(
            store,
            keys,
            idempotency,
            settings,
            clock,
            ids,
            Limits::default(),
        )
    }

    /// [`Self::new`] with explicit [`Limits`].
    pub fn with_limits<S>(
        store: Arc<S>,
        keys: Arc<ZoneKeys>,
        idempotency: IdempotencyKeys,
        settings: CoordinatorSettings,
        clock: SharedClock,
        ids: SharedIdGen,
        limits: Limits,
    ) -> Arc<Self>
    where
        S: CoordinatorStore
            + ApplicationStore
            + AuthorityStore
            + ResourceStore
            + OutboxStore
            + AdminAuditStore
            + 'static,
    {
        let core = Coordinator::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            ids.clone(),
        )
        .with_limits(limits);
        let key = settings.audit_key.clone().or_else(|| {
            let key = crate::audit::ephemeral_key();
            if key.is_none() {
                tracing::warn!("no admin audit key and no randomness: links are unsigned");
            }
            key
        });
        let audit = AdminAuditLog::new(store.clone(), key, clock.clone(), ids);
        Arc::new(Self {
            core,
            store: store.clone(),
            outbox: store.clone(),
            audit,
            applications: store.clone(),
            authority: store,
            keys,
            idempotency,
            settings,
            clock,
        })
    }

    /// The core engine.
    pub fn core(&self) -> &Coordinator {
        &self.core
    }

    /// The admin audit chain the mutations are recorded on.
    pub fn audit(&self) -> &AdminAuditLog {
        &self.audit
    }

    /// Now, truncated to the millisecond (stored timestamps then equal their wire form).
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now().trunc_subsecs(3)
    }

    /// The HTTP surface: the Coordinator routes, `/openapi.json` and `/health`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let (api_routes, api) = api_routes().split_for_parts();
        let layer = Arc::new(AuditLayer {
            log: self.audit.clone(),
            is_read,
            zone_of: auth::path_zone,
        });
        let api_routes = api_routes.route_layer(axum::middleware::from_fn_with_state(
            layer,
            record_mutations,
        ));
        let doc = Arc::new(openapi_json(api));
        let router = axum::Router::new()
            .merge(api_routes)
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
        // The reference's limits per client address: 600 a minute overall, and 60 a minute
        // on the public `/v1/verify` (counted in both).
        let verify_limit = WindowLimiter::new(VERIFY_LIMIT_PER_MIN, Duration::from_secs(60));
        let router = router
            .route_layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let verify_limit = Arc::clone(&verify_limit);
                    async move {
                        if req.uri().path() == "/v1/verify"
                            && !verify_limit.admit(
                                caracal_service::ratelimit::client_ip(&req),
                                std::time::Instant::now(),
                            )
                        {
                            return axum::response::IntoResponse::into_response(HttpError(
                                ApiError::new(429, "rate_limited")
                                    .with_description("Too many requests"),
                            ));
                        }
                        next.run(req).await
                    }
                },
            ))
            .layer(axum::middleware::from_fn_with_state(
                WindowLimiter::new(self.settings.limit_per_min, Duration::from_secs(60)),
                caracal_service::ratelimit::limit,
            ));
        with_request_id(router)
    }
}

/// Requests per minute per client address on the Coordinator (reference §2).
pub const GLOBAL_LIMIT_PER_MIN: u32 = 600;
/// Requests per minute per client address on `POST /v1/verify`.
pub const VERIFY_LIMIT_PER_MIN: u32 = 60;

/// Requests that change nothing: reads, and the public `POST /v1/verify`.
pub fn is_read(method: &Method, path: &str) -> bool {
    method == Method::GET
        || method == Method::HEAD
        || method == Method::OPTIONS
        || path == "/v1/verify"
}

/// The OpenAPI 3 document of the Coordinator routes, generated from their definitions.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

fn openapi_json(api: utoipa::openapi::OpenApi) -> String {
    api.to_json()
        .unwrap_or_else(|_| r#"{"openapi":"3.1.0","paths":{}}"#.to_owned())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Caracal Coordinator API",
        description = "Sessions (agents), leases, delegation edges, cascade revocation and effective authority. Every route needs `Authorization: Bearer <use=session mandate>`; operator routes also accept the operator token."
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
            "session_mandate",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "session_mandate",
            Vec::<String>::new(),
        )]);
    }
}

/// Every Coordinator route with its OpenAPI operation.
fn api_routes() -> OpenApiRouter<Svc> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::start_session, lists::list_sessions))
        .routes(routes!(routes::get_session, routes::terminate_session))
        .routes(routes!(lists::list_children))
        .routes(routes!(routes::suspend_session))
        .routes(routes!(routes::resume_session))
        .routes(routes!(routes::acquire_lease))
        .routes(routes!(routes::heartbeat))
        .routes(routes!(routes::effective_authority))
        .routes(routes!(routes::create_delegation))
        .routes(routes!(routes::revoke_delegation))
        .routes(routes!(routes::traverse))
        .routes(routes!(routes::impact))
        .routes(routes!(lists::active_delegations))
        .routes(routes!(lists::inbound_delegations))
        .routes(routes!(lists::outbound_delegations))
        .routes(routes!(lists::inbound_delegation))
        .routes(routes!(lists::requeue_outbox))
        .routes(routes!(lists::verify))
}
