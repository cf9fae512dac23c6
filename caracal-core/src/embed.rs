//! caracal-core used alone: an in-memory engine for tests and single-process hosts.
//!
//! [`Engine::builder`] wires the pieces the STS service wires in production — the exchange
//! ([`Sts`]), the [`Coordinator`], the zone key ring and the policy bundle cache — over one
//! [`MemoryStore`], with no sockets, no streams and no background tasks. A host embeds it to
//! mint and verify mandates in-process; a test uses it to get a working authority in a few
//! lines.
//!
//! ## Invariants
//!
//! - Every rule stays where it is: the setup helpers write records through the store traits,
//!   policies through [`PolicyLifecycle`] (validation, compilation, activation), sessions and
//!   delegations through the [`Coordinator`], and every token goes through [`Sts::token`].
//!   Nothing here decides an exchange. The helpers are for trusted setup code: beyond the
//!   zone slug they do not repeat the Admin API's input-shape checks (resource identifiers,
//!   names), which live in the HTTP layer.
//! - One clock: the store, the exchange, the key ring, the Coordinator and the
//!   [`RevocationSet`] all read the builder's clock, so a `FakeClock` moves all of them.
//! - State lives only in memory and is lost with the engine. The KEK ring is generated per
//!   engine, so sealed secrets and signing keys never outlive it.
//! - Revocation is explicit: there is no stream consumer, so [`Engine::revoke_delegation`]
//!   feeds the engine's [`RevocationSet`] itself (the one every [`Engine::verifier`] shares).

use std::sync::Arc;

use crate::audit::sink::{AuditSink, MemoryAuditSink};
use crate::clock::{SharedClock, SystemClock};
use crate::coordinator::{
    Caller, Coordinator, CoordinatorError, CreateDelegation, CreatedDelegation, RevokeOutcome,
    StartSession, StartedSession,
};
use crate::exchange::envelope::{self, EnvelopeError, EnvelopeHeaders, GatewayKey};
use crate::exchange::{ExchangeResult, Sts, StsConfig, StsParts, StsStores, TokenRequest};
use crate::ids::{SharedIdGen, UuidV7};
use crate::mandate::keys::ZoneKeys;
use crate::mandate::remote::{Anchor, RemoteVerifier, RevocationSet, ZoneKeysSource};
use crate::model::Attribution;
use crate::model::application::{Application, RegistrationMethod};
use crate::model::policy_set::ManifestEntry;
use crate::model::resource::{OperationEnforcement, Resource};
use crate::model::token::TokenResponse;
use crate::model::zone::{Zone, is_valid_slug};
use crate::policy::PolicyError;
use crate::policy::cache::BundleCache;
use crate::policy::lifecycle::{NewPolicy, PolicyLifecycle};
use crate::secrets::SecretError;
use crate::secrets::client_secret::hash_client_secret;
use crate::secrets::envelope::{Kek, Keyring};
use crate::store::StoreError;
use crate::store::directory::{ApplicationStore, ResourceStore, ZoneStore};
use crate::store::memory::MemoryStore;

/// The `created_by` of every record the engine's helpers write.
pub const EMBED_ACTOR: &str = "embed";
/// The grant type of an RFC 8693 exchange.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The subject token type of a Gateway re-exchange.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The token endpoint path the exchange (and the Gateway signature) is bound to.
const TOKEN_PATH: &str = "/oauth/2/token";
/// The token endpoint's content type.
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Why an engine could not be built or a setup step failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// Key material (the per-engine KEK ring, a client-secret hash).
    #[error("secret: {0}")]
    Secret(#[from] SecretError),
    /// The memory store refused a write.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The policy lifecycle refused the content or a step.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// An argument the Admin API would refuse (the field named).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The Gateway envelope key.
    #[error("gateway key: {0}")]
    Envelope(#[from] EnvelopeError),
    /// A Coordinator rule refused the operation.
    #[error("coordinator: {0}")]
    Coordinator(#[from] CoordinatorError),
}

/// Builds an [`Engine`]; see [`Engine::builder`].
pub struct EngineBuilder {
    issuer: String,
    clock: Option<SharedClock>,
    ids: Option<SharedIdGen>,
    gateway_key: Option<GatewayKey>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// The `iss` of every mandate (and the `aud` of session and gateway mandates).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Trusted time (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Ids of records, `jti`s and events (default: UUIDv7).
    pub fn ids(mut self, ids: SharedIdGen) -> Self {
        self.ids = Some(ids);
        self
    }

    /// The Gateway envelope key shared with an external Gateway (default: a random key only
    /// this engine knows, used by [`Engine::gateway_exchange`]).
    pub fn gateway_key(mut self, key: GatewayKey) -> Self {
        self.gateway_key = Some(key);
        self
    }

    /// Wire the engine. Fails only if the per-engine KEK cannot be generated.
    pub fn build(self) -> Result<Engine, EmbedError> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let ids = self.ids.unwrap_or_else(|| Arc::new(UuidV7));
        let store = Arc::new(MemoryStore::with_clock_and_ids(clock.clone(), ids.clone()));
        let keyring = Arc::new(Keyring::from_hex(&Kek::generate_hex()?, None)?);
        let gateway_key = match self.gateway_key {
            Some(k) => k,
            None => {
                let mut bytes = [0u8; GatewayKey::MIN_LEN];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
                GatewayKey::from_bytes(&bytes)?
            }
        };
        let keys = Arc::new(ZoneKeys::new(
            store.clone(),
            store.clone(),
            keyring.clone(),
            clock.clone(),
            ids.clone(),
        ));
        let policies = Arc::new(BundleCache::new(store.clone(), clock.clone()));
        let audit = Arc::new(MemoryAuditSink::new());
        let sts = Arc::new(Sts::new(StsParts {
            config: StsConfig::new(self.issuer.clone()),
            stores: StsStores::from_store(store.clone()),
            ephemeral: store.clone(),
            keys: keys.clone(),
            keyring,
            policies: policies.clone(),
            audit: audit.clone() as Arc<dyn AuditSink>,
            gateway_key: Some(gateway_key.clone()),
            clock: clock.clone(),
            ids: ids.clone(),
        }));
        let coordinator = Arc::new(Coordinator::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            ids.clone(),
        ));
        let revocations = Arc::new(RevocationSet::new(clock.clone()));
        Ok(Engine {
            issuer: self.issuer,
            store,
            sts,
            coordinator,
            keys,
            policies,
            audit,
            revocations,
            gateway_key,
            clock,
            ids,
        })
    }
}

/// An in-memory authority: store, exchange, Coordinator, key ring and revocation set.
/// Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Engine {
    issuer: String,
    store: Arc<MemoryStore>,
    sts: Arc<Sts>,
    coordinator: Arc<Coordinator>,
    keys: Arc<ZoneKeys>,
    policies: Arc<BundleCache>,
    audit: Arc<MemoryAuditSink>,
    revocations: Arc<RevocationSet>,
    gateway_key: GatewayKey,
    clock: SharedClock,
    ids: SharedIdGen,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder with issuer `https://caracal.local`, the system clock and UUIDv7 ids.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            issuer: "https://caracal.local".to_owned(),
            clock: None,
            ids: None,
            gateway_key: None,
        }
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The store (every store trait is implemented on it).
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }

    /// The exchange engine.
    pub fn sts(&self) -> &Arc<Sts> {
        &self.sts
    }

    /// The Coordinator (sessions and delegations).
    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// The zone signing-key ring.
    pub fn keys(&self) -> &Arc<ZoneKeys> {
        &self.keys
    }

    /// The decision events the exchange emitted.
    pub fn audit(&self) -> &Arc<MemoryAuditSink> {
        &self.audit
    }

    /// The revocation set every [`Self::verifier`] consults.
    pub fn revocations(&self) -> &Arc<RevocationSet> {
        &self.revocations
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    fn attribution() -> Attribution {
        Attribution::created_by(EMBED_ACTOR)
    }

    /// Create a zone named and slugged `slug` (refused unless [`is_valid_slug`], the Admin
    /// API's rule).
    pub async fn create_zone(&self, slug: &str) -> Result<Zone, EmbedError> {
        if !is_valid_slug(slug) {
            return Err(EmbedError::Invalid("zone slug"));
        }
        let now = self.clock.now();
        let zone = Zone {
            id: self.ids.next_id(),
            name: slug.to_owned(),
            slug: slug.to_owned(),
            dcr_enabled: false,
            operator_coauthor_badge: false,
            operator_governed: false,
            attribution: Self::attribution(),
            created_at: now,
            updated_at: now,
            archived_at: None,
        };
        self.store.insert_zone(&zone).await?;
        Ok(zone)
    }

    /// Register a managed application with a client secret (stored only as its Argon2id hash).
    pub async fn create_application(
        &self,
        zone_id: &str,
        name: &str,
        client_secret: &str,
    ) -> Result<Application, EmbedError> {
        let now = self.clock.now();
        let app = Application {
            id: self.ids.next_id(),
            zone_id: zone_id.to_owned(),
            name: name.to_owned(),
            registration_method: RegistrationMethod::Managed,
            traits: vec![],
            expires_at: None,
            archived_at: None,
            attribution: Self::attribution(),
            created_at: now,
            updated_at: now,
            client_secret_hash: Some(hash_client_secret(client_secret)?),
        };
        self.store.insert_application(&app).await?;
        Ok(app)
    }

    /// Register a transport-uniform resource `identifier` offering `scopes`. Only a resource
    /// with an `upstream_url` can be bootstrapped against (`agent:lifecycle` is mintable only
    /// for those, `sts.md` §2.3 I.2).
    pub async fn create_resource(
        &self,
        zone_id: &str,
        identifier: &str,
        scopes: &[&str],
        upstream_url: Option<&str>,
    ) -> Result<Resource, EmbedError> {
        let now = self.clock.now();
        let resource = Resource {
            id: self.ids.next_id(),
            zone_id: zone_id.to_owned(),
            name: identifier.to_owned(),
            identifier: identifier.to_owned(),
            upstream_url: upstream_url.map(str::to_owned),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            credential_provider_id: None,
            operations: vec![],
            operation_enforcement: OperationEnforcement::TransportUniform,
            attribution: Self::attribution(),
            created_at: now,
            updated_at: now,
            archived_at: None,
        };
        self.store.insert_resource(&resource).await?;
        Ok(resource)
    }

    /// Make `content` (a policy data document) the zone's only active policy: create the
    /// policy, a set holding its version 1, activate it, and reload the bundle cache, all
    /// through [`PolicyLifecycle`] (which validates and compiles; a bad document is refused
    /// and the previously active policy stays).
    pub async fn activate_policy(
        &self,
        zone_id: &str,
        name: &str,
        content: &str,
    ) -> Result<(), EmbedError> {
        let life = PolicyLifecycle::new(self.store.clone(), self.clock.clone(), self.ids.clone());
        let (_, version) = life
            .create_policy(
                zone_id,
                NewPolicy {
                    name,
                    description: None,
                    content,
                    actor: Some(EMBED_ACTOR),
                },
            )
            .await?;
        let set = life.create_policy_set(zone_id, name, None, None).await?;
        let set_version = life
            .create_policy_set_version(
                zone_id,
                &set.id,
                &[ManifestEntry {
                    policy_version_id: version.id,
                }],
            )
            .await?;
        life.activate(zone_id, &set.id, &set_version.id).await?;
        self.policies.invalidate(zone_id).await?;
        Ok(())
    }

    /// One `POST /oauth/2/token`, verbatim ([`Sts::token`]).
    pub async fn token(&self, req: &TokenRequest<'_>) -> ExchangeResult<TokenResponse> {
        self.sts.token(req).await
    }

    /// A client-authenticated token exchange by `app` with the extra form fields `extra`
    /// (e.g. `resource`, `scope`, `agent_session_id`, `delegation_edge_id`): the form body is
    /// built and sent through [`Sts::token`] like an HTTP request without Gateway headers.
    pub async fn exchange(
        &self,
        app: &Application,
        client_secret: &str,
        extra: &[(&str, &str)],
    ) -> ExchangeResult<TokenResponse> {
        let mut pairs = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("zone_id", app.zone_id.as_str()),
            ("application_id", app.id.as_str()),
            ("client_secret", client_secret),
        ];
        pairs.extend_from_slice(extra);
        let body = form_encode(&pairs);
        let request_id = self.ids.next_id();
        self.sts
            .token(&TokenRequest {
                method: "POST",
                path: TOKEN_PATH,
                query: None,
                content_type: Some(FORM_CONTENT_TYPE),
                body: body.as_bytes(),
                request_id: &request_id,
                envelope: EnvelopeHeaders::default(),
            })
            .await
    }

    /// The Gateway's re-exchange of `subject_token` (a gateway mandate) for a resource
    /// mandate bound to `resource` and the request `method path`: the form is signed with the
    /// engine's Gateway key, a fresh nonce and the engine clock, exactly as the Gateway does, so
    /// a single-process host can play its own Gateway. `app` is the application the subject
    /// token was minted to.
    pub async fn gateway_exchange(
        &self,
        app: &Application,
        subject_token: &str,
        resource: &str,
        method: &str,
        path: &str,
    ) -> ExchangeResult<TokenResponse> {
        let request_id = self.ids.next_id();
        let body = form_encode(&[
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("zone_id", app.zone_id.as_str()),
            ("application_id", app.id.as_str()),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("resource", resource),
            ("request_method", method),
            ("request_path", path),
            ("gateway_request_id", request_id.as_str()),
        ]);
        let timestamp = self.clock.now().timestamp().to_string();
        let nonce = self.ids.next_id();
        let signature = envelope::sign(
            &self.gateway_key,
            &timestamp,
            &nonce,
            "POST",
            TOKEN_PATH,
            body.as_bytes(),
        );
        self.sts
            .token(&TokenRequest {
                method: "POST",
                path: TOKEN_PATH,
                query: None,
                content_type: Some(FORM_CONTENT_TYPE),
                body: body.as_bytes(),
                request_id: &request_id,
                envelope: EnvelopeHeaders {
                    timestamp: Some(&timestamp),
                    nonce: Some(&nonce),
                    signature: Some(&signature),
                },
            })
            .await
    }

    /// Start a Session through the Coordinator's rules (`POST /zones/{zone}/agents`) at the
    /// engine's current time.
    pub async fn start_session(
        &self,
        zone_id: &str,
        caller: &Caller,
        req: &StartSession,
    ) -> Result<StartedSession, EmbedError> {
        let now = self.clock.now();
        Ok(self
            .coordinator
            .start_session(zone_id, caller, req, now)
            .await?)
    }

    /// Create a delegation edge through the Coordinator's rules at the engine's current time.
    pub async fn create_delegation(
        &self,
        zone_id: &str,
        caller: &Caller,
        req: &CreateDelegation,
    ) -> Result<CreatedDelegation, EmbedError> {
        let now = self.clock.now();
        Ok(self
            .coordinator
            .create_delegation(zone_id, caller, req, now)
            .await?)
    }

    /// A resource-side verifier over this engine's keys (in-process, no JWKS fetch) and its
    /// shared [`RevocationSet`].
    pub fn verifier(&self) -> RemoteVerifier {
        RemoteVerifier::new(
            Arc::new(ZoneKeysSource::new(self.keys.clone())),
            self.issuer.clone(),
            self.clock.clone(),
            self.revocations.clone(),
        )
    }

    /// Revoke a delegation edge through the Coordinator (its rules, cascade and epoch bump)
    /// and put every revoked edge and terminated session into the revocation set, since no
    /// stream consumer does it in an embedded engine.
    pub async fn revoke_delegation(
        &self,
        zone_id: &str,
        caller: &Caller,
        edge_id: &str,
    ) -> Result<RevokeOutcome, EmbedError> {
        let now = self.clock.now();
        let outcome = self
            .coordinator
            .revoke_delegation(zone_id, caller, edge_id, now)
            .await?;
        for edge in &outcome.revoked_edges {
            self.revocations
                .insert(Anchor::DelegationEdge(edge.clone()), now);
        }
        for session in &outcome.terminated_sessions {
            self.revocations
                .insert(Anchor::Session(session.clone()), now);
        }
        Ok(outcome)
    }
}

/// `application/x-www-form-urlencoded` of `pairs` (every byte outside the unreserved set
/// percent-encoded).
fn form_encode(pairs: &[(&str, &str)]) -> String {
    fn enc(out: &mut String, s: &str) {
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push('%');
                out.push_str(&hex::encode_upper([b]));
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        enc(&mut out, k);
        out.push('=');
        enc(&mut out, v);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    use crate::clock::FakeClock;
    use crate::mandate::MandateUse;

    const RES: &str = "resource://svc";

    async fn engine() -> (Engine, Zone, Application) {
        let clock: SharedClock = Arc::new(FakeClock::at_fixture_epoch());
        let engine = Engine::builder()
            .issuer("https://sts.test")
            .clock(clock)
            .build()
            .unwrap();
        let zone = engine.create_zone("z").await.unwrap();
        let app = engine
            .create_application(&zone.id, "svc", "secret-0123456789")
            .await
            .unwrap();
        engine
            .create_resource(&zone.id, RES, &["read"], Some("https://svc.internal"))
            .await
            .unwrap();
        let doc = serde_json::json!({
            "app_ids": {"svc": app.id},
            "grants": {RES: {"application": "svc"}}
        });
        engine
            .activate_policy(&zone.id, "p", &doc.to_string())
            .await
            .unwrap();
        (engine, zone, app)
    }

    #[tokio::test]
    async fn bootstrap_mints_a_mandate_the_engine_verifier_accepts() {
        let (engine, zone, app) = engine().await;
        let boot = [("resource", RES), ("scope", "agent:lifecycle")];
        let token = engine
            .exchange(&app, "secret-0123456789", &boot)
            .await
            .unwrap();
        let claims = engine
            .verifier()
            .verify(
                &token.access_token,
                &zone.id,
                MandateUse::Session,
                "https://sts.test",
                &["agent:lifecycle"],
            )
            .await
            .unwrap();
        assert_eq!(claims.client_id, app.id);
        // Revoking the authority record in the shared set refuses the same mandate.
        engine.revocations().insert(
            Anchor::AuthorityRecord(claims.sid.clone()),
            engine.clock().now(),
        );
        let refused = engine
            .verifier()
            .verify(
                &token.access_token,
                &zone.id,
                MandateUse::Session,
                "https://sts.test",
                &[],
            )
            .await;
        assert!(refused.is_err());
    }

    #[tokio::test]
    async fn a_wrong_secret_and_an_unowned_resource_are_refused() {
        let (engine, _zone, app) = engine().await;
        let boot = [("resource", RES), ("scope", "agent:lifecycle")];
        let e = engine.exchange(&app, "wrong", &boot).await.unwrap_err();
        assert_eq!(e.status, 401);
        let other = [
            ("resource", "resource://none"),
            ("scope", "agent:lifecycle"),
        ];
        let e = engine
            .exchange(&app, "secret-0123456789", &other)
            .await
            .unwrap_err();
        assert_eq!(e.status / 100, 4);
    }

    #[tokio::test]
    async fn an_invalid_slug_is_refused() {
        let (engine, _zone, _app) = engine().await;
        let bad = engine.create_zone("Not A Slug!").await;
        assert!(matches!(bad, Err(EmbedError::Invalid(_))), "{bad:?}");
    }

    #[tokio::test]
    async fn an_invalid_policy_is_refused() {
        let (engine, zone, _app) = engine().await;
        let bad = engine
            .activate_policy(&zone.id, "bad", r#"{"grants": 7}"#)
            .await;
        assert!(matches!(bad, Err(EmbedError::Policy(_))), "{bad:?}");
    }

    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(
            form_encode(&[("a b", "x&y=z"), ("k", "v")]),
            "a%20b=x%26y%3Dz&k=v"
        );
    }
}
