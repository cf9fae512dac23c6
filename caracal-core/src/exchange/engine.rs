//! The exchange itself: [`Sts::token`] runs `sts.md` §2.1 and §2.3 in the reference order.
//!
//! The order matters for what a caller can learn: framing before authentication, client
//! authentication before anything zone-specific is read, the subject token before the session
//! and delegation it names, and the per-resource policy loop before the approval gate, so an
//! earlier deny never burns an approval and a caller without the secret never learns whether
//! an application exists.
//!
//! Differences from the reference, on purpose:
//! - The TTL request check runs before the policy loop (the reference emits allow audit
//!   events and then answers 400); a 400 now leaves no allow events behind.
//! - Trusted time is the injected [`Clock`](crate::clock::Clock), not Postgres `now()`: every
//!   replica and store of one deployment shares it through the host.
//! - Subject federation (id_token), run credentials, the control key and OAuth provider kinds
//!   are not part of this build; requests for them are refused with a clear error.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use super::ExchangeResult;
use super::approval::{self, ApprovalWaiters};
use super::audit::{self as exaudit, Decision as AuditDecision};
use super::directive;
use super::envelope::{self, EnvelopeHeaders, GatewayKey};
use super::form::TokenForm;
use super::lineage::{self, DelegationProof, ResolvedRefs, SessionRefs};
use super::ratelimit::{AuthLimiter, MintLimiter};
use crate::api::ApiError;
use crate::audit::sink::AuditSink;
use crate::clock::SharedClock;
use crate::ids::SharedIdGen;
use crate::mandate::claims::{Audience, MandateClaims, MandateUse};
use crate::mandate::keys::ZoneKeys;
use crate::mandate::lifetime;
use crate::mandate::verify::SignatureProof;
use crate::mandate::verify::VerifyPolicy;
use crate::model::application::Application;
use crate::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use crate::model::policy::{
    Action, ActorClaims, Context, DelegationEdgeInput, POLICY_INPUT_SCHEMA_VERSION, PolicyInput,
    Principal, ResourceRef, SessionRef,
};
use crate::model::provider::ProviderKind;
use crate::model::resource::{OperationEnforcement, Resource};
use crate::model::session::Session;
use crate::model::token::{ISSUED_TOKEN_TYPE_ACCESS_TOKEN, TokenResponse, UpstreamDirective};
use crate::policy::cache::{BundleCache, LoadedBundle};
use crate::policy::contract::{LIFECYCLE_SCOPE, evaluate};
use crate::secrets::client_secret::VerifiedSecretCache;
use crate::secrets::envelope::{Keyring, provider_secret_config_ref};
use crate::store::approvals::ApprovalStore;
use crate::store::authority::AuthorityStore;
use crate::store::coordinator::CoordinatorStore;
use crate::store::directory::{ApplicationStore, ProviderStore, ResourceStore, SecretStore};
use crate::store::ephemeral::EphemeralKeys;

/// Default `CONTROL_AUDIENCE`: the control resource only a control key may mint for.
pub const DEFAULT_CONTROL_AUDIENCE: &str = "caracal-control";
/// The one description every client-authentication failure shares (no existence oracle).
pub const INVALID_CLIENT: &str = "invalid client credentials";
/// How long an issued `jti` stays registered is the token's lifetime; the key prefix.
pub const JTI_KEY_PREFIX: &str = "audit:jti:";
/// Default `STS_SECRET_VERIFY_CONCURRENCY`: Argon2id derivations at once (64 MiB each).
pub const DEFAULT_SECRET_VERIFY_CONCURRENCY: usize = 2;

/// Settings of the exchange.
#[derive(Debug, Clone)]
pub struct StsConfig {
    /// `ISSUER_URL`, the `iss` of every mandate and the `aud` of session/gateway mandates.
    pub issuer: String,
    /// `CONTROL_AUDIENCE`.
    pub control_audience: String,
    /// `STS_MINT_RATE_LIMIT_PER_MIN`.
    pub mint_limit_per_min: u32,
    /// `STS_SECRET_VERIFY_CONCURRENCY`.
    pub secret_verify_concurrency: usize,
}

impl StsConfig {
    /// Defaults for everything but the issuer.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            control_audience: DEFAULT_CONTROL_AUDIENCE.to_owned(),
            mint_limit_per_min: super::ratelimit::DEFAULT_MINT_LIMIT_PER_MIN,
            secret_verify_concurrency: DEFAULT_SECRET_VERIFY_CONCURRENCY,
        }
    }
}

/// The stores the exchange reads and writes. One backend usually implements all of them;
/// [`StsStores::from_store`] takes it once.
#[derive(Clone)]
pub struct StsStores {
    /// Applications (client authentication).
    pub applications: Arc<dyn ApplicationStore>,
    /// Resources.
    pub resources: Arc<dyn ResourceStore>,
    /// Credential providers.
    pub providers: Arc<dyn ProviderStore>,
    /// Authority records.
    pub authority: Arc<dyn AuthorityStore>,
    /// Sessions and delegations.
    pub coordinator: Arc<dyn CoordinatorStore>,
    /// Approval holds.
    pub approvals: Arc<dyn ApprovalStore>,
    /// Sealed provider secret documents.
    pub secrets: Arc<dyn SecretStore>,
}

impl StsStores {
    /// All six from one backend.
    pub fn from_store<S>(store: Arc<S>) -> Self
    where
        S: ApplicationStore
            + ResourceStore
            + ProviderStore
            + AuthorityStore
            + CoordinatorStore
            + ApprovalStore
            + SecretStore
            + 'static,
    {
        Self {
            applications: store.clone(),
            resources: store.clone(),
            providers: store.clone(),
            authority: store.clone(),
            coordinator: store.clone(),
            approvals: store.clone(),
            secrets: store,
        }
    }
}

/// What an [`Sts`] is built from.
pub struct StsParts {
    /// Settings.
    pub config: StsConfig,
    /// Durable state.
    pub stores: StsStores,
    /// Nonces, rate windows and the `jti` registry (Redis in production).
    pub ephemeral: Arc<dyn EphemeralKeys>,
    /// Zone signing keys.
    pub keys: Arc<ZoneKeys>,
    /// The KEK ring that opens sealed provider secrets.
    pub keyring: Arc<Keyring>,
    /// Compiled policy bundles.
    pub policies: Arc<BundleCache>,
    /// Decision events.
    pub audit: Arc<dyn AuditSink>,
    /// `GATEWAY_STS_HMAC_KEY`; without it every Gateway-signed request is refused.
    pub gateway_key: Option<GatewayKey>,
    /// Trusted time.
    pub clock: SharedClock,
    /// Ids (authority records, `jti`, events).
    pub ids: SharedIdGen,
}

/// The STS exchange engine. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Sts {
    config: StsConfig,
    stores: StsStores,
    ephemeral: Arc<dyn EphemeralKeys>,
    keys: Arc<ZoneKeys>,
    keyring: Arc<Keyring>,
    policies: Arc<BundleCache>,
    audit: Arc<dyn AuditSink>,
    gateway_key: Option<GatewayKey>,
    clock: SharedClock,
    ids: SharedIdGen,
    secrets: Arc<VerifiedSecretCache>,
    verify_slots: Arc<Semaphore>,
    auth_limiter: AuthLimiter,
    mint_limiter: MintLimiter,
    waiters: Arc<ApprovalWaiters>,
}

impl std::fmt::Debug for Sts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sts")
            .field("issuer", &self.config.issuer)
            .field("gateway_key", &self.gateway_key.is_some())
            .finish_non_exhaustive()
    }
}

/// One `POST /oauth/2/token` as received.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The escaped request path (signed by the Gateway envelope).
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
    /// The raw body.
    pub body: &'a [u8],
    /// The effective request id (caller's `X-Request-Id` or a fresh one).
    pub request_id: &'a str,
    /// The Gateway envelope headers.
    pub envelope: EnvelopeHeaders<'a>,
}

/// A verified subject token and the record it is bound to.
struct Subject {
    claims: MandateClaims,
    claims_map: Map<String, Value>,
}

/// State carried through one exchange.
struct Exchange<'a> {
    request_id: &'a str,
    form: TokenForm,
    resources: Vec<String>,
    scopes: Vec<String>,
    gateway: bool,
    /// The in-process Gateway's proof of the subject token's signature (gateway requests only).
    proof: Option<&'a SignatureProof>,
    app: Application,
    now: DateTime<Utc>,
    subject: Option<Subject>,
    /// The authority record the request acts under (form `session_id` or the token's `sid`).
    authority_record_id: String,
    refs: ResolvedRefs,
    bundle: Option<Arc<LoadedBundle>>,
}

impl Exchange<'_> {
    fn zone(&self) -> &str {
        &self.app.zone_id
    }

    fn principal_id(&self) -> &str {
        self.subject
            .as_ref()
            .map_or(self.app.id.as_str(), |s| s.claims.sub.as_str())
    }

    fn subject_type(&self) -> SubjectType {
        match &self.subject {
            Some(s) if s.claims.sub_type == SubjectType::User => SubjectType::User,
            _ => SubjectType::Application,
        }
    }

    fn delegation(&self) -> Option<&DelegationProof> {
        self.refs.delegation.as_ref()
    }

    /// The governed Session: the delegation target when delegated.
    fn session(&self) -> Option<&Session> {
        self.delegation()
            .map(|d| &d.target_session)
            .or(self.refs.session.as_ref())
    }

    fn base_metadata(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("application_id".into(), json!(self.app.id));
        m.insert("application_name".into(), json!(self.app.name));
        m.insert(
            "registration_method".into(),
            json!(self.app.registration_method.as_str()),
        );
        m.insert("requested_scopes".into(), json!(self.scopes));
        m.insert("subject_kind".into(), json!(self.subject_type().as_str()));
        m.insert("gateway".into(), json!(self.gateway));
        if !self.authority_record_id.is_empty() {
            m.insert("session_id".into(), json!(self.authority_record_id));
        }
        if let Some(s) = self.session() {
            m.insert("agent_session_id".into(), json!(s.agent_session_id));
            m.insert("agent_lifecycle".into(), json!(s.lifecycle.as_str()));
            m.insert("agent_labels".into(), json!(s.labels));
            m.insert("agent_depth".into(), json!(s.depth));
            if let Some(p) = &s.parent_id {
                m.insert("agent_parent_id".into(), json!(p));
            }
        }
        if let Some(d) = self.delegation() {
            m.insert("delegation_edge_id".into(), json!(d.edge.id));
            m.insert("delegation_chain".into(), json!(d.chain));
            m.insert("hop_count".into(), json!(d.hop_count()));
            m.insert("delegation_graph_epoch".into(), json!(d.graph_epoch));
        }
        m
    }
}

fn denied(description: impl Into<String>) -> ApiError {
    ApiError::forbidden("access_denied").with_description(description)
}

fn invalid_client() -> ApiError {
    ApiError::unauthorized("access_denied").with_description(INVALID_CLIENT)
}

fn is_invalid_client(e: &ApiError) -> bool {
    e.status == 401 && e.body.error_description.as_deref() == Some(INVALID_CLIENT)
}

fn store_unavailable() -> ApiError {
    ApiError::unavailable("sts_unavailable").with_description("state store unavailable")
}

/// The outcome of one resource in the policy loop.
enum ResourceOutcome {
    Granted(Box<Resource>),
    Skipped,
}

impl Sts {
    /// Build the engine.
    pub fn new(parts: StsParts) -> Self {
        let concurrency = parts.config.secret_verify_concurrency.max(1);
        Self {
            auth_limiter: AuthLimiter::new(parts.ephemeral.clone()),
            mint_limiter: MintLimiter::new(
                parts.ephemeral.clone(),
                parts.config.mint_limit_per_min,
            ),
            secrets: Arc::new(VerifiedSecretCache::new(parts.clock.clone())),
            verify_slots: Arc::new(Semaphore::new(concurrency)),
            waiters: Arc::new(ApprovalWaiters::new()),
            config: parts.config,
            stores: parts.stores,
            ephemeral: parts.ephemeral,
            keys: parts.keys,
            keyring: parts.keyring,
            policies: parts.policies,
            audit: parts.audit,
            gateway_key: parts.gateway_key,
            clock: parts.clock,
            ids: parts.ids,
        }
    }

    /// Settings.
    pub fn config(&self) -> &StsConfig {
        &self.config
    }

    /// The zone key ring (JWKS, rotation).
    pub fn keys(&self) -> &Arc<ZoneKeys> {
        &self.keys
    }

    /// The bundle cache (status, invalidation).
    pub fn policies(&self) -> &Arc<BundleCache> {
        &self.policies
    }

    /// The stores.
    pub fn stores(&self) -> &StsStores {
        &self.stores
    }

    /// The ephemeral key store (nonces for the internal endpoints).
    pub fn ephemeral(&self) -> &Arc<dyn EphemeralKeys> {
        &self.ephemeral
    }

    /// The audit sink.
    pub fn audit(&self) -> &Arc<dyn AuditSink> {
        &self.audit
    }

    /// The approval long-poll registry.
    pub fn waiters(&self) -> &Arc<ApprovalWaiters> {
        &self.waiters
    }

    /// The Gateway HMAC key, if configured.
    pub fn gateway_key(&self) -> Option<&GatewayKey> {
        self.gateway_key.as_ref()
    }

    /// The mint limiter (the console override is applied through it).
    pub fn mint_limiter(&self) -> &MintLimiter {
        &self.mint_limiter
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// `POST /oauth/2/token` (§2.1 then §2.3). The error carries status, code and
    /// description; the HTTP layer adds the request id.
    pub async fn token(&self, req: &TokenRequest<'_>) -> ExchangeResult<TokenResponse> {
        self.token_proven(req, None).await
    }

    /// [`Sts::token`] for an in-process Gateway that already verified the subject token's
    /// signature (check 11) and hands over the [`SignatureProof`]: the exchange then checks the
    /// subject's claims without repeating the signature arithmetic (one verification per hop,
    /// SPEC §6). The proof is used only on a request whose Gateway envelope verified, and only
    /// for the exact token and key it was made for; every other check is unchanged.
    pub async fn token_proven(
        &self,
        req: &TokenRequest<'_>,
        proof: Option<&SignatureProof>,
    ) -> ExchangeResult<TokenResponse> {
        // §2.1 steps 2–4.
        let form = TokenForm::parse(req.method, req.query, req.content_type, req.body)?;
        // Step 5: the Gateway envelope, if any header of it is present.
        let gateway = req.envelope.any_present();
        if gateway {
            envelope::verify(
                self.gateway_key.as_ref(),
                &req.envelope,
                req.method,
                req.path,
                req.body,
                Some((form.gateway_request_id.as_str(), req.request_id)),
                self.clock.now(),
                self.ephemeral.as_ref(),
            )
            .await
            .map_err(|e| {
                tracing::warn!(reason = %e, "gateway envelope refused");
                e.to_api()
            })?;
        }
        // Steps 6–8.
        let resources = form.canonical_resources()?;
        form.check_grant()?;
        // Steps 9–10: the brute-force gate around client authentication.
        let app_id = form.application_id.trim().to_owned();
        if !gateway {
            self.auth_limiter.check(&app_id).await?;
        }
        let proof = proof.filter(|_| gateway);
        let result = self.exchange(req, form, resources, gateway, proof).await;
        match result {
            Err(e) if !gateway && is_invalid_client(&e) => {
                self.auth_limiter.record_failure(&app_id).await?;
                Err(e)
            }
            other => other,
        }
    }

    /// §2.3 A: who is calling.
    async fn authenticate(&self, form: &TokenForm, gateway: bool) -> ExchangeResult<Application> {
        let app_id = form.application_id.trim();
        let zone_id = form.zone_id.trim();
        if app_id.is_empty() || zone_id.is_empty() {
            // A zone-less request is only valid for a control key, which this build does not
            // issue.
            return Err(invalid_client());
        }
        let now = self.clock.now();
        let app = self
            .stores
            .applications
            .get_application(zone_id, app_id)
            .await
            .map_err(|_| store_unavailable())?
            .filter(|a| a.is_live(now));
        let Some(app) = app else {
            if !gateway {
                return Err(self.wrong_zone_or_invalid(app_id, zone_id, form).await);
            }
            return Err(invalid_client());
        };
        if gateway {
            if form.subject_token.is_empty() {
                return Err(invalid_client());
            }
            return Ok(app);
        }
        let Some(stored) = app.client_secret_hash.as_deref() else {
            return Err(invalid_client());
        };
        if !self.secret_matches(stored, &form.client_secret).await {
            return Err(invalid_client());
        }
        Ok(app)
    }

    /// The application exists in another zone and the caller proved its secret → a precise
    /// `zone_invalid`; anything else → the generic 401 (no existence oracle).
    async fn wrong_zone_or_invalid(
        &self,
        app_id: &str,
        zone_id: &str,
        form: &TokenForm,
    ) -> ApiError {
        let Ok(Some(other)) = self.stores.applications.find_application(app_id).await else {
            return invalid_client();
        };
        if other.zone_id == zone_id || !other.is_live(self.clock.now()) {
            return invalid_client();
        }
        let Some(stored) = other.client_secret_hash.as_deref() else {
            return invalid_client();
        };
        if !self.secret_matches(stored, &form.client_secret).await {
            return invalid_client();
        }
        ApiError::forbidden("zone_invalid").with_description(format!(
            "application is registered in zone {} but the request targeted zone {}; \
             use the application's zone_id",
            other.zone_id, zone_id
        ))
    }

    /// Argon2id under the verify semaphore, answered from the verified-secret cache when
    /// possible.
    async fn secret_matches(&self, stored: &str, presented: &str) -> bool {
        if presented.is_empty() {
            return false;
        }
        if self.secrets.check_cached(stored, presented) {
            return true;
        }
        let Ok(_permit) = self.verify_slots.clone().acquire_owned().await else {
            return false;
        };
        let cache = self.secrets.clone();
        let (stored, presented) = (stored.to_owned(), presented.to_owned());
        tokio::task::spawn_blocking(move || cache.verify(&stored, &presented))
            .await
            .unwrap_or(false)
    }

    fn emit(&self, ex: &Exchange<'_>, decision: AuditDecision<'_>) {
        let event = exaudit::event(
            self.ids.next_id(),
            ex.zone(),
            ex.request_id,
            ex.bundle.as_deref(),
            decision,
            self.clock.now(),
        );
        self.audit.emit(event);
    }

    fn emit_skip(&self, ex: &Exchange<'_>, resource: &str, reason: &str) {
        let mut metadata = ex.base_metadata();
        metadata.insert("resource".into(), json!(resource));
        self.emit(
            ex,
            AuditDecision {
                event_type: exaudit::TOKEN_EXCHANGE,
                decision: "deny",
                evaluation_status: reason,
                determining_policies: None,
                diagnostics: Some(json!([{ "reason": reason }])),
                metadata,
            },
        );
    }

    /// §2.3 B–R.
    async fn exchange(
        &self,
        req: &TokenRequest<'_>,
        form: TokenForm,
        resources: Vec<String>,
        gateway: bool,
        proof: Option<&SignatureProof>,
    ) -> ExchangeResult<TokenResponse> {
        let app = self.authenticate(&form, gateway).await?;
        // B: subject federation is not part of this build.
        if form.is_federation() {
            return Err(ApiError::bad_request("invalid_token")
                .with_description("id_token subject federation is not enabled on this STS"));
        }
        // C.
        if resources.is_empty() {
            return Err(ApiError::bad_request("invalid_token")
                .with_description("at least one resource is required"));
        }
        // D.
        let now = self.clock.now();
        let scopes = form.requested_scopes();
        let mut ex = Exchange {
            request_id: req.request_id,
            resources,
            scopes,
            gateway,
            proof,
            app,
            now,
            subject: None,
            authority_record_id: form.session_id.trim().to_owned(),
            refs: ResolvedRefs {
                session: None,
                delegation: None,
            },
            bundle: None,
            form,
        };
        // E: the subject token and the records it names.
        self.bind_subject(&mut ex).await?;
        if ex.subject.is_none() && !ex.authority_record_id.is_empty() {
            lineage::check_form_record(
                self.stores.authority.as_ref(),
                ex.zone(),
                &ex.authority_record_id,
                &ex.app.id,
                false,
                now,
            )
            .await?;
        }
        // The request TTL is checked before anything is evaluated (see module docs).
        let explicit_ttl = ex.form.ttl_seconds.filter(|t| *t != 0);
        let ttl = lifetime::requested_ttl(ex.form.ttl_seconds, ex.subject.is_some())
            .map_err(|e| ApiError::new(e.status(), e.code()).with_description(e.to_string()))?;
        // F: the bundle the decisions will use (approval bindings name it).
        ex.bundle = Some(self.policies.get(ex.zone()).await.map_err(|e| {
            tracing::error!(zone = %ex.zone(), error = %e, "policy bundle unavailable");
            ApiError::unavailable("policy_eval_failed")
                .with_description("policy evaluation unavailable")
        })?);
        // H: Session and delegation references, re-read now.
        // §6.3: the Session must be bound to the record only when a session mandate names it.
        let bound = match &ex.subject {
            Some(s)
                if s.claims.use_ == MandateUse::Session && !ex.authority_record_id.is_empty() =>
            {
                Some(ex.authority_record_id.clone())
            }
            _ => None,
        };
        let refs = SessionRefs {
            zone_id: &ex.app.zone_id,
            app_id: &ex.app.id,
            agent_session_id: ex.form.agent_session_id.trim(),
            delegation_edge_id: ex.form.delegation_edge_id.trim(),
            bound_authority_record: bound.as_deref(),
            requested_scopes: &ex.scopes,
            explicit_ttl,
        };
        ex.refs = lineage::resolve_refs(
            self.stores.authority.as_ref(),
            self.stores.coordinator.as_ref(),
            &refs,
            now,
        )
        .await?;
        // G: a retry naming an approval is checked (never consumed) before the loop.
        let retry = self.check_approval_retry(&ex).await?;
        let resolved = retry.is_some();
        // I: the per-resource loop.
        let mut granted: Vec<Resource> = Vec::new();
        let mut first_reason: Option<String> = None;
        let mut provider_denial: Option<ApiError> = None;
        let mut declarations: Vec<Map<String, Value>> = Vec::new();
        for identifier in ex.resources.clone() {
            match self
                .decide_resource(
                    &ex,
                    &identifier,
                    resolved,
                    &mut first_reason,
                    &mut provider_denial,
                    &mut declarations,
                )
                .await?
            {
                ResourceOutcome::Granted(r) => granted.push(*r),
                ResourceOutcome::Skipped => {}
            }
        }
        // J: the approval gate.
        let hold = if !declarations.is_empty() && !resolved {
            Some(self.approval_gate(&ex, &declarations).await?)
        } else {
            None
        };
        // L (answered before K): a session mandate is never exchanged for resource
        // authority directly. The policy was still evaluated and audited above; naming the
        // real reason is clearer than the policy's deny, and both refuse.
        if ex.subject.is_some() && !ex.gateway {
            return Err(denied("resource exchanges must use the Gateway"));
        }
        // K: nothing granted.
        if granted.is_empty() {
            let mut metadata = ex.base_metadata();
            metadata.insert("resources".into(), json!(ex.resources));
            self.emit(
                &ex,
                AuditDecision {
                    event_type: exaudit::TOKEN_EXCHANGE,
                    decision: "deny",
                    evaluation_status: "exchange_denied",
                    determining_policies: None,
                    diagnostics: first_reason.as_ref().map(|r| json!([{ "reason": r }])),
                    metadata,
                },
            );
            if let Some(e) = provider_denial {
                return Err(e);
            }
            return Err(match first_reason {
                Some(r) => denied(format!("policy denied ({r})")),
                None => denied("policy denied"),
            });
        }
        // M: delegation capping.
        let mut ttl = ttl;
        if let Some(d) = ex.delegation() {
            ttl = d
                .constraints
                .limits
                .cap(ttl, explicit_ttl.is_some(), now)
                .map_err(|e| ApiError::new(e.status(), e.code()).with_description(e.to_string()))?;
        }
        // N: the mandate class.
        let use_ = if ex.subject.is_some() {
            MandateUse::Resource
        } else if !ex.form.agent_session_id.trim().is_empty()
            && !ex.form.delegation_edge_id.trim().is_empty()
        {
            MandateUse::Gateway
        } else {
            MandateUse::Session
        };
        // O: the authority record (plain, consuming an approved hold, or a re-issue).
        let (record, ttl) = self.authority_record(&ex, use_, ttl, retry, hold).await?;
        // P: sign and register the jti.
        let targets: Vec<String> = granted.iter().map(|r| r.identifier.clone()).collect();
        let claims = self.claims(&ex, use_, &record, &targets, ttl)?;
        let key = self.keys.signing_key(ex.zone()).await.map_err(|e| {
            tracing::error!(zone = %ex.zone(), error = %e, "zone signing key unavailable");
            ApiError::internal()
        })?;
        let token = crate::mandate::mint(&claims, &key).map_err(|e| {
            tracing::error!(error = %e, "mandate signing failed");
            ApiError::internal()
        })?;
        self.register_jti(&ex, &claims, ttl).await?;
        // Q: upstream directives (Gateway only).
        let upstreams = if ex.gateway {
            Some(self.directives(&ex, &granted).await?)
        } else {
            None
        };
        // R.
        let scope = claims.scope.clone();
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer".to_owned(),
            expires_in: u64::try_from(ttl).unwrap_or(0),
            scope: scope.filter(|s| !s.is_empty()),
            issued_token_type: ISSUED_TOKEN_TYPE_ACCESS_TOKEN.to_owned(),
            target_resources: targets,
            upstreams,
        })
    }

    /// §2.3 E.
    async fn bind_subject(&self, ex: &mut Exchange<'_>) -> ExchangeResult<()> {
        if ex.form.subject_token.is_empty() {
            return Ok(());
        }
        let expected = if ex.gateway {
            MandateUse::Gateway
        } else {
            MandateUse::Session
        };
        let policy = VerifyPolicy::sts_subject(ex.zone(), &self.config.issuer, expected);
        let claims = self
            .keys
            .verify_proven(&ex.form.subject_token, &policy, ex.proof)
            .await
            .map_err(|e| {
                tracing::info!(reason = %e, "subject token refused");
                ApiError::unauthorized("invalid_token").with_description("invalid subject_token")
            })?;
        lineage::check_subject_record(
            self.stores.authority.as_ref(),
            ex.zone(),
            &claims.sid,
            &claims.sub,
            &claims.client_id,
            &ex.app.id,
            ex.now,
        )
        .await?;
        if ex.authority_record_id.is_empty() {
            ex.authority_record_id = claims.sid.clone();
        } else if ex.authority_record_id != claims.sid {
            return Err(denied("authority record mismatch"));
        }
        let copy = |form: &mut String, claim: &Option<String>, what: &str| -> ExchangeResult<()> {
            if let Some(c) = claim.as_deref().filter(|c| !c.is_empty()) {
                if form.trim().is_empty() {
                    *form = c.to_owned();
                } else if form.trim() != c {
                    return Err(denied(what.to_owned()));
                }
            }
            Ok(())
        };
        copy(
            &mut ex.form.agent_session_id,
            &claims.agent_session_id,
            "Session mismatch",
        )?;
        copy(
            &mut ex.form.delegation_edge_id,
            &claims.delegation_edge_id,
            "delegation edge mismatch",
        )?;
        let claims_map = match serde_json::to_value(&claims) {
            Ok(Value::Object(m)) => m,
            _ => return Err(ApiError::internal()),
        };
        ex.subject = Some(Subject { claims, claims_map });
        Ok(())
    }

    /// One resource through §2.3 I.1–I.12.
    async fn decide_resource(
        &self,
        ex: &Exchange<'_>,
        identifier: &str,
        resolved: bool,
        first_reason: &mut Option<String>,
        provider_denial: &mut Option<ApiError>,
        declarations: &mut Vec<Map<String, Value>>,
    ) -> ExchangeResult<ResourceOutcome> {
        let zone = ex.zone();
        // I.1
        let mut resource = self
            .stores
            .resources
            .get_resource_by_identifier(zone, identifier)
            .await
            .map_err(|_| store_unavailable())?;
        if resource.is_none() {
            resource = self
                .stores
                .resources
                .get_resource(zone, identifier)
                .await
                .map_err(|_| store_unavailable())?;
        }
        let Some(resource) = resource.filter(|r| r.archived_at.is_none()) else {
            self.emit_skip(ex, identifier, "resource_not_found");
            return Ok(ResourceOutcome::Skipped);
        };
        // I.2: requested ⊆ mint scopes.
        let mintable = |s: &String| {
            resource.scopes.contains(s) || (s == LIFECYCLE_SCOPE && resource.upstream_url.is_some())
        };
        if !ex.scopes.iter().all(mintable) {
            self.emit_skip(ex, &resource.identifier, "scope_mismatch");
            return Ok(ResourceOutcome::Skipped);
        }
        // I.3
        if let Some(d) = ex.delegation() {
            if !d.covers_resource(&resource.id, &resource.identifier) {
                self.emit_skip(ex, &resource.identifier, "resource_outside_delegation");
                return Ok(ResourceOutcome::Skipped);
            }
        }
        // I.4: the native operation floor.
        if ex.gateway {
            if let Err(e) = self.operation_floor(ex, &resource) {
                self.emit_skip(ex, &resource.identifier, "operation_not_permitted");
                return Err(e);
            }
        }
        // I.5
        if !self
            .mint_limiter
            .allow(zone, &resource.id, &ex.app.id)
            .await
        {
            self.emit_skip(ex, &resource.identifier, "rate_limited");
            return Ok(ResourceOutcome::Skipped);
        }
        // I.7: the control resource is only for a control key (not issued by this build).
        if resource.identifier == self.config.control_audience {
            self.emit_skip(
                ex,
                &resource.identifier,
                "control_resource_requires_control_key",
            );
            return Err(denied(
                "the control resource is mintable only by a control key; \
                 use an application with control:* traits",
            ));
        }
        // I.8: provider checks on the Gateway path.
        if ex.gateway {
            if let Some(provider_id) = resource.credential_provider_id.as_deref() {
                let provider = self
                    .stores
                    .providers
                    .get_provider(zone, provider_id)
                    .await
                    .map_err(|_| store_unavailable())?
                    .filter(|p| p.archived_at.is_none());
                let reason = match provider {
                    None => Some("provider_unavailable"),
                    Some(p)
                        if matches!(
                            p.kind,
                            ProviderKind::OAuth2AuthorizationCode
                                | ProviderKind::OAuth2ClientCredentials
                        ) =>
                    {
                        Some("credential_not_provisioned")
                    }
                    Some(_) => None,
                };
                if let Some(reason) = reason {
                    self.emit_skip(ex, &resource.identifier, reason);
                    provider_denial.get_or_insert_with(|| {
                        denied(format!(
                            "upstream credential for resource {} is unavailable: {reason}",
                            resource.identifier
                        ))
                    });
                    return Ok(ResourceOutcome::Skipped);
                }
            }
        }
        // I.9: the policy decision.
        let Some(bundle) = ex.bundle.as_deref() else {
            return Err(ApiError::unavailable("policy_eval_failed")
                .with_description("policy evaluation unavailable"));
        };
        let input = self.policy_input(ex, &resource, resolved);
        let mut metadata = ex.base_metadata();
        metadata.insert("resource".into(), json!(resource.identifier));
        let evaluation = match evaluate(&input, &bundle.bundle) {
            Ok(e) => e,
            Err(e) => {
                self.emit(
                    ex,
                    AuditDecision {
                        event_type: exaudit::TOKEN_EXCHANGE,
                        decision: "deny",
                        evaluation_status: "policy_eval_failed",
                        determining_policies: None,
                        diagnostics: Some(json!([{ "error": e.to_string() }])),
                        metadata,
                    },
                );
                return Err(ApiError::unavailable("policy_eval_failed")
                    .with_description("policy evaluation unavailable"));
            }
        };
        let result = evaluation.to_result();
        self.emit(
            ex,
            AuditDecision {
                event_type: exaudit::TOKEN_EXCHANGE,
                decision: result.decision.as_str(),
                evaluation_status: &result.evaluation_status,
                determining_policies: serde_json::to_value(&result.determining_policies).ok(),
                diagnostics: serde_json::to_value(&result.diagnostics).ok(),
                metadata,
            },
        );
        // I.11
        if !resolved && evaluation.step_up_required() {
            declarations.extend(evaluation.matched_approvals().into_iter().cloned());
        }
        // I.12
        if evaluation.is_allow() {
            Ok(ResourceOutcome::Granted(Box::new(resource)))
        } else {
            if first_reason.is_none() {
                *first_reason = evaluation.deny_reason().map(|r| r.as_str().to_owned());
            }
            Ok(ResourceOutcome::Skipped)
        }
    }

    /// §4.4: an `enforced` resource declares every (method, path) and its scope.
    fn operation_floor(&self, ex: &Exchange<'_>, resource: &Resource) -> ExchangeResult<()> {
        if resource.operation_enforcement != OperationEnforcement::Enforced {
            return Ok(());
        }
        let method = ex.form.request_method.trim().to_ascii_uppercase();
        let path = ex.form.request_path.trim();
        let Some(op) = resource.find_operation(&method, path) else {
            return Err(
                ApiError::forbidden("operation_not_permitted").with_description(format!(
                    "operation {method} {path} is not declared on resource {}; declare it in the \
                 resource's operations or set operation_enforcement to transport_uniform",
                    resource.identifier
                )),
            );
        };
        let presented = ex
            .subject
            .as_ref()
            .map(|s| s.claims.scopes().any(|s| s == op.scope))
            .unwrap_or(false);
        if !presented {
            return Err(
                ApiError::forbidden("operation_not_permitted").with_description(format!(
                    "operation {method} {path} on resource {} requires scope {}",
                    resource.identifier, op.scope
                )),
            );
        }
        Ok(())
    }

    /// §4.1.
    fn policy_input(&self, ex: &Exchange<'_>, resource: &Resource, resolved: bool) -> PolicyInput {
        let session = ex.session();
        let delegation = ex.delegation();
        let agent_session_id =
            Some(ex.form.agent_session_id.trim().to_owned()).filter(|s| !s.is_empty());
        let delegation_edge_id =
            Some(ex.form.delegation_edge_id.trim().to_owned()).filter(|s| !s.is_empty());
        let authority = Some(ex.authority_record_id.clone()).filter(|s| !s.is_empty());
        PolicyInput {
            schema_version: POLICY_INPUT_SCHEMA_VERSION.to_owned(),
            principal: Principal {
                kind: "Application".to_owned(),
                id: ex.principal_id().to_owned(),
                zone_id: ex.zone().to_owned(),
                registration_method: Some(ex.app.registration_method.as_str().to_owned()),
                agent_session_id: agent_session_id.clone(),
                lifecycle: session.map(|s| s.lifecycle.as_str().to_owned()),
                labels: session.map(|s| s.labels.clone()),
            },
            resource: ResourceRef {
                kind: "Resource".to_owned(),
                id: resource.id.clone(),
                identifier: resource.identifier.clone(),
                scopes: resource.scopes.clone(),
            },
            action: Action {
                id: "TokenExchange".to_owned(),
                method: ex
                    .gateway
                    .then(|| ex.form.request_method.trim().to_ascii_uppercase()),
                path: ex.gateway.then(|| ex.form.request_path.trim().to_owned()),
            },
            session: authority.clone().map(|id| SessionRef { id }),
            delegation_edge: delegation.map(|d| DelegationEdgeInput {
                id: d.edge.id.clone(),
                source_session_id: d.edge.source_session_id.clone(),
                target_session_id: d.edge.target_session_id.clone(),
                issuer_application_id: d.edge.issuer_application_id.clone(),
                receiver_application_id: d.edge.receiver_application_id.clone(),
                resource_id: d.edge.resource_id.clone().unwrap_or_default(),
                scopes: d.edge.scopes.clone(),
                edge_version: d.edge.edge_version,
                path: d.path.clone(),
                graph_epoch: d.graph_epoch,
                constraints_json: Value::Object(d.edge.constraints_json.clone()),
            }),
            context: Context {
                actor_claims: ActorClaims {
                    caracal_client_id: ex.app.id.clone(),
                },
                subject_claims: ex.subject.as_ref().map(|s| s.claims_map.clone()),
                trace_id: ex.request_id.to_owned(),
                session_id: authority,
                agent_session_id,
                delegation_edge_id,
                challenge_resolved: resolved,
                requested_scopes: ex.scopes.clone(),
            },
        }
    }

    /// The approval binding of this request (§4.6).
    fn binding(&self, ex: &Exchange<'_>) -> String {
        let bundle = ex.bundle.as_deref();
        approval::binding_hash(&approval::BindingInput {
            resources: &ex.resources,
            scopes: &ex.scopes,
            principal: ex.principal_id(),
            authority_record: &ex.authority_record_id,
            session: ex.form.agent_session_id.trim(),
            delegation: ex.form.delegation_edge_id.trim(),
            application: &ex.app.id,
            policy_set_version: bundle
                .and_then(|b| b.policy_set_version_id.as_deref())
                .unwrap_or(""),
            policy_manifest: bundle
                .and_then(|b| b.manifest_sha256.as_deref())
                .unwrap_or("no_active_policy_set"),
            contract_version: crate::policy::DECISION_CONTRACT_VERSION,
            contract_sha: crate::policy::decision_contract_sha256(),
        })
    }

    /// §2.3 G.
    async fn check_approval_retry(
        &self,
        ex: &Exchange<'_>,
    ) -> ExchangeResult<Option<approval::RetryOutcome>> {
        let id = ex.form.approval_id.trim();
        if id.is_empty() {
            return Ok(None);
        }
        let binding = self.binding(ex);
        let ctx = approval::RetryContext {
            zone_id: ex.zone(),
            approval_id: id,
            principal_id: ex.principal_id(),
            authority_record_id: &ex.authority_record_id,
            binding: &binding,
            request_id: ex.request_id,
        };
        approval::check_retry(
            self.stores.approvals.as_ref(),
            self.stores.authority.as_ref(),
            self.audit.as_ref(),
            &ctx,
            ex.now,
        )
        .await
        .map(Some)
    }

    /// §2.3 J: raise or converge on a hold. Returns the approved hold to consume.
    async fn approval_gate(
        &self,
        ex: &Exchange<'_>,
        declarations: &[Map<String, Value>],
    ) -> ExchangeResult<crate::model::approval::Approval> {
        let merged = match approval::merge_tiers(declarations) {
            Ok(m) => m,
            Err(e) => {
                self.emit_skip(ex, "", "approval_class_conflict");
                return Err(e);
            }
        };
        let anchor = self.subject_anchor(ex).await?;
        let mut metadata = Map::new();
        metadata.insert("requested_scopes".into(), json!(ex.scopes));
        metadata.insert("resources".into(), json!(ex.resources));
        if let Some(s) = ex.session() {
            metadata.insert("agent_session_id".into(), json!(s.agent_session_id));
            metadata.insert("agent_labels".into(), json!(s.labels));
        }
        if let Some(d) = ex.delegation() {
            metadata.insert("delegation_edge_id".into(), json!(d.edge.id));
        }
        if let Some(b) = ex.bundle.as_deref() {
            metadata.insert(
                "policy_set_version_id".into(),
                json!(b.policy_set_version_id),
            );
            metadata.insert("manifest_sha256".into(), json!(b.manifest_sha256));
        }
        metadata.insert(
            "decision_contract_version".into(),
            json!(crate::policy::DECISION_CONTRACT_VERSION),
        );
        let request = approval::HoldRequest {
            zone_id: ex.zone().to_owned(),
            principal_id: ex.principal_id().to_owned(),
            authority_record_id: ex.authority_record_id.clone(),
            application_id: ex.app.id.clone(),
            binding: self.binding(ex),
            merged,
            subject_anchor: anchor,
            metadata,
        };
        match approval::issue_or_converge(self.stores.approvals.as_ref(), request, ex.now).await? {
            approval::HoldOutcome::Approved(a) => Ok(a),
            approval::HoldOutcome::Rejected(_) => {
                self.emit_skip(ex, "", "approval_rejected");
                Err(denied("approval was rejected"))
            }
            approval::HoldOutcome::Pending {
                approval,
                newly_created,
            } => {
                if newly_created {
                    let mut metadata = ex.base_metadata();
                    metadata.insert("challenge_id".into(), json!(approval.id));
                    metadata.insert("tier".into(), json!(approval.tier));
                    self.emit(
                        ex,
                        AuditDecision {
                            event_type: exaudit::STEP_UP_ISSUED,
                            decision: "deny",
                            evaluation_status: "step_up_required",
                            determining_policies: None,
                            diagnostics: None,
                            metadata,
                        },
                    );
                }
                Err(approval::interaction_required(&approval, ex.now))
            }
        }
    }

    /// `subject_anchor`: the user subject behind the request, if any (§4.6).
    async fn subject_anchor(&self, ex: &Exchange<'_>) -> ExchangeResult<Option<String>> {
        if let Some(s) = &ex.subject {
            if s.claims.sub_type == SubjectType::User {
                return Ok(Some(s.claims.sub.clone()));
            }
        }
        let Some(session) = ex.session() else {
            return Ok(None);
        };
        let record = self
            .stores
            .authority
            .get_authority(ex.zone(), &session.subject_authority_record_id)
            .await
            .map_err(|_| store_unavailable())?;
        Ok(record
            .filter(|r| r.session_type == SubjectType::User)
            .map(|r| r.subject_id))
    }

    /// §2.3 O. Returns the record the mandate is bound to and the final TTL.
    async fn authority_record(
        &self,
        ex: &Exchange<'_>,
        use_: MandateUse,
        ttl: i64,
        retry: Option<approval::RetryOutcome>,
        hold: Option<crate::model::approval::Approval>,
    ) -> ExchangeResult<(AuthorityRecord, i64)> {
        // A re-issue binds a new bearer to the record the consumed hold produced.
        if let Some(approval::RetryOutcome::Reissue {
            approval,
            authority_record,
            remaining_seconds,
        }) = retry
        {
            let ttl = lifetime::cap_ttl(ttl, remaining_seconds);
            if ttl <= 0 {
                return Err(ApiError::conflict("approval_consumed")
                    .with_description("approval already consumed"));
            }
            self.emit_consumed(ex, &approval.id, &authority_record.id, true);
            return Ok((authority_record, ttl));
        }
        let record = AuthorityRecord {
            id: self.ids.next_id(),
            zone_id: ex.zone().to_owned(),
            session_type: ex.subject_type(),
            subject_id: ex.principal_id().to_owned(),
            parent_id: (use_ == MandateUse::Resource)
                .then(|| ex.authority_record_id.clone())
                .filter(|s| !s.is_empty()),
            status: AuthorityStatus::Active,
            expires_at: ex.now + chrono::Duration::seconds(ttl),
            authenticated_at: Some(ex.now),
            claims_json: json!({}),
            revoked_at: None,
            revoked_reason: None,
            created_at: ex.now,
        };
        let approved = match retry {
            Some(approval::RetryOutcome::Resolved(a)) => Some(a),
            _ => hold,
        };
        if let Some(a) = approved {
            let consumed = approval::consume(
                self.stores.approvals.as_ref(),
                ex.zone(),
                &a.id,
                &record,
                ex.now,
            )
            .await?;
            self.emit_consumed(ex, &consumed.id, &record.id, false);
            return Ok((record, ttl));
        }
        self.stores
            .authority
            .insert_authority(&record)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "authority record insert failed");
                ApiError::internal()
            })?;
        Ok((record, ttl))
    }

    fn emit_consumed(&self, ex: &Exchange<'_>, approval_id: &str, record_id: &str, reissued: bool) {
        let mut metadata = ex.base_metadata();
        metadata.insert("challenge_id".into(), json!(approval_id));
        metadata.insert("consumed_authority_record_id".into(), json!(record_id));
        metadata.insert("reissued".into(), json!(reissued));
        self.emit(
            ex,
            AuditDecision {
                event_type: exaudit::STEP_UP_CONSUMED,
                decision: "allow",
                evaluation_status: "complete",
                determining_policies: None,
                diagnostics: None,
                metadata,
            },
        );
    }

    /// §3.2.
    fn claims(
        &self,
        ex: &Exchange<'_>,
        use_: MandateUse,
        record: &AuthorityRecord,
        targets: &[String],
        ttl: i64,
    ) -> ExchangeResult<MandateClaims> {
        let (iat, exp) = lifetime::issue_times(ex.now, ttl)
            .map_err(|e| ApiError::new(e.status(), e.code()).with_description(e.to_string()))?;
        let aud = match use_ {
            MandateUse::Resource => Audience::Many(targets.to_vec()),
            _ => Audience::Many(vec![self.config.issuer.clone()]),
        };
        let root_sid = match (use_, &ex.subject) {
            (MandateUse::Session, _) | (_, None) => record.id.clone(),
            (_, Some(s)) if !s.claims.root_sid.is_empty() => s.claims.root_sid.clone(),
            (_, Some(s)) => s.claims.sid.clone(),
        };
        // §2.3 R: the requested scope verbatim; else (Gateway) the presented mandate's scope.
        // The response's `scope` is this same value.
        let scope = if !ex.form.scope.trim().is_empty() {
            Some(ex.form.scope.clone())
        } else if ex.gateway {
            ex.subject.as_ref().and_then(|s| s.claims.scope.clone())
        } else {
            None
        };
        let d = ex.delegation();
        Ok(MandateClaims {
            iss: self.config.issuer.clone(),
            sub: ex.principal_id().to_owned(),
            aud,
            exp,
            iat,
            jti: lifetime::new_jti(self.ids.as_ref()),
            zone_id: ex.zone().to_owned(),
            client_id: ex.app.id.clone(),
            scope: scope.filter(|s| !s.is_empty()),
            sid: record.id.clone(),
            root_sid,
            use_,
            sub_type: ex.subject_type(),
            target: targets.to_vec(),
            agent_session_id: Some(ex.form.agent_session_id.trim().to_owned())
                .filter(|s| !s.is_empty()),
            delegation_edge_id: d.map(|d| d.edge.id.clone()),
            source_session_id: d.map(|d| d.edge.source_session_id.clone()),
            target_session_id: d.map(|d| d.edge.target_session_id.clone()),
            delegation_path: d.map(|d| d.path.clone()).unwrap_or_default(),
            delegation_chain: d.map(|d| d.chain.clone()).unwrap_or_default(),
            hop_count: d.map(|d| d.hop_count()).unwrap_or(0),
            delegation_graph_epoch: d.map(|d| d.graph_epoch).unwrap_or(0),
        })
    }

    /// §2.3 P: `audit:jti:<jti>` = `<app>|<unix>` for the token's life.
    async fn register_jti(
        &self,
        ex: &Exchange<'_>,
        claims: &MandateClaims,
        ttl: i64,
    ) -> ExchangeResult<()> {
        let key = format!("{JTI_KEY_PREFIX}{}", claims.jti);
        let value = format!("{}|{}", ex.app.id, claims.iat);
        let ttl = std::time::Duration::from_secs(u64::try_from(ttl.max(1)).unwrap_or(1));
        match self.ephemeral.set_nx_ex(&key, &value, ttl).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                let mut metadata = ex.base_metadata();
                metadata.insert("jti".into(), json!(claims.jti));
                self.emit(
                    ex,
                    AuditDecision {
                        event_type: exaudit::JTI_COLLISION,
                        decision: "deny",
                        evaluation_status: "jti_collision",
                        determining_policies: None,
                        diagnostics: None,
                        metadata,
                    },
                );
                Err(ApiError::internal())
            }
            Err(e) => {
                tracing::error!(error = %e, "jti registry unavailable");
                Err(ApiError::internal())
            }
        }
    }

    /// §2.3 Q / §7.5: one directive per granted resource.
    async fn directives(
        &self,
        ex: &Exchange<'_>,
        granted: &[Resource],
    ) -> ExchangeResult<BTreeMap<String, UpstreamDirective>> {
        let mut out = BTreeMap::new();
        for resource in granted {
            let mut provider = None;
            let mut secret = None;
            if let Some(provider_id) = resource.credential_provider_id.as_deref() {
                let p = self
                    .stores
                    .providers
                    .get_provider(ex.zone(), provider_id)
                    .await
                    .map_err(|_| store_unavailable())?
                    .ok_or_else(|| self.directive_failed(ex, resource, "provider not found"))?;
                if directive::needs_secret(p.kind) {
                    secret = Some(self.provider_secret(ex, resource, &p).await?);
                }
                provider = Some(p);
            }
            let d = directive::directive(resource, provider.as_ref(), secret.as_ref())
                .map_err(|why| self.directive_failed(ex, resource, &why))?;
            out.insert(resource.identifier.clone(), d);
        }
        Ok(out)
    }

    /// The provider's sealed secret document, opened under its reference as AAD.
    async fn provider_secret(
        &self,
        ex: &Exchange<'_>,
        resource: &Resource,
        provider: &crate::model::provider::Provider,
    ) -> ExchangeResult<Map<String, Value>> {
        let reference = provider_secret_config_ref(ex.zone(), &provider.id);
        let sealed = self
            .stores
            .secrets
            .get_secret(&reference)
            .await
            .map_err(|_| self.directive_failed(ex, resource, "secret store unavailable"))?
            .ok_or_else(|| self.directive_failed(ex, resource, "provider secret not found"))?;
        let plain = self
            .keyring
            .open(&reference, &sealed.envelope)
            .map_err(|_| self.directive_failed(ex, resource, "provider secret unreadable"))?;
        match serde_json::from_slice::<Value>(&plain) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(self.directive_failed(ex, resource, "provider secret unreadable")),
        }
    }

    fn directive_failed(&self, ex: &Exchange<'_>, resource: &Resource, why: &str) -> ApiError {
        self.emit_skip(ex, &resource.identifier, "provider_credential_unavailable");
        ApiError::new(502, "http_request_failed").with_description(format!(
            "upstream credential for resource {} is unavailable: {why}",
            resource.identifier
        ))
    }
}
