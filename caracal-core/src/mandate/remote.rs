//! The resource-side verifier (the reference's `verify` package, `gateway.md` §4.2, §7.2,
//! §7.3): what a resource server embeds to accept a mandate without calling the STS per
//! request.
//!
//! [`RemoteVerifier::verify`] checks, in order, cheapest and least trusting first:
//!
//! 1. size and header ([`precheck`]): ES256 with a `kid`, before any key is looked up;
//! 2. the zone's keys from a [`JwksSource`], cached per zone for [`KEY_CACHE_TTL`] (no stale
//!    serving: an expired entry and a failed fetch reject). A `kid` missing from a cached set
//!    triggers at most one forced refetch per zone per [`FORCED_REFETCH_INTERVAL`], which is
//!    how a rotated key is accepted before the TTL ends, without letting unknown `kid`s turn
//!    every request into a fetch;
//! 3. signature and claims ([`verify()`](fn@super::verify::verify)): `iss`, `aud` contains the
//!    resource, `exp`/`iat` with a 60 s leeway, `zone_id`, `use`, required identifiers;
//! 4. every required scope is an exact member of `scope` ([`MandateError::MissingScope`]);
//! 5. no revocation anchor is in the [`RevocationSet`] ([`MandateError::Revoked`]).
//!
//! The set is fed from `caracal.sessions.revoke` by [`RevocationSetHandler`] under a consumer
//! group of the host's choosing (the reference's resource SDK uses `resource-revocation`).
//! The JWKS transport is the host's: an HTTP fetcher implements [`JwksSource`] (and should
//! parse with [`parse_jwks`]); [`StaticJwksSource`] and [`ZoneKeysSource`] serve tests and
//! hosts that embed the STS key ring.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::claims::{MandateClaims, MandateUse};
use super::error::MandateError;
use super::jwks::parse_jwks;
use super::keys::{KEY_CACHE_TTL, VerificationKeys, ZoneKeys};
use super::lifetime::MAX_TTL_SECONDS;
use super::verify::{DEFAULT_LEEWAY_SECONDS, VerifyPolicy, precheck, verify};
use crate::clock::SharedClock;
use crate::exchange::revocation::REASON_MISSING_ANCHOR;
use crate::policy::cache::REASON_HMAC_FAILED;
use crate::streams::consumer::{Delivery, Handler, Outcome};
use crate::streams::signature::SigPolicy;

/// The shortest time between two forced JWKS refetches of one zone (an unknown `kid` inside
/// this window is refused without a fetch).
pub const FORCED_REFETCH_INTERVAL: Duration = Duration::seconds(30);
/// How long a revoked anchor is remembered: the longest mandate lifetime plus the verifier's
/// leeway. A mandate carrying the anchor was minted before the revocation reached the STS,
/// so it cannot verify for longer than this after the anchor arrived here.
pub const REVOCATION_RETENTION: Duration =
    Duration::seconds(MAX_TTL_SECONDS + DEFAULT_LEEWAY_SECONDS);
/// How often [`RevocationSet::insert`] drops expired anchors (reads ignore them anyway).
const PRUNE_EVERY: Duration = Duration::seconds(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; every write below
    // is a single insert or remove, so the map is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a verifier gets a zone's verification keys (the STS JWKS).
#[async_trait]
pub trait JwksSource: Send + Sync {
    /// The zone's current verification keys. An error (unreachable, not found, no usable key)
    /// is never cached; the verification that needed the keys fails closed.
    async fn fetch(&self, zone_id: &str) -> Result<VerificationKeys, MandateError>;
}

/// JWKS documents held in memory per zone, parsed with [`parse_jwks`] on every fetch exactly
/// as a fetched body would be. For tests and hosts that distribute keys out of band.
#[derive(Debug, Default)]
pub struct StaticJwksSource {
    documents: Mutex<HashMap<String, Vec<u8>>>,
}

impl StaticJwksSource {
    /// An empty source: every zone is [`MandateError::NoKeys`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve `document` (a JWKS JSON body) for `zone_id` from now on.
    pub fn set(&self, zone_id: impl Into<String>, document: impl Into<Vec<u8>>) {
        lock(&self.documents).insert(zone_id.into(), document.into());
    }

    /// Stop serving `zone_id`.
    pub fn remove(&self, zone_id: &str) {
        lock(&self.documents).remove(zone_id);
    }
}

#[async_trait]
impl JwksSource for StaticJwksSource {
    async fn fetch(&self, zone_id: &str) -> Result<VerificationKeys, MandateError> {
        let document = lock(&self.documents).get(zone_id).cloned();
        match document {
            Some(body) => parse_jwks(&body),
            None => Err(MandateError::NoKeys),
        }
    }
}

/// The in-process source: the JWKS key set of a [`ZoneKeys`] ring
/// ([`ZoneKeys::jwks_keys`]), for a resource embedded with the STS.
#[derive(Debug, Clone)]
pub struct ZoneKeysSource {
    keys: Arc<ZoneKeys>,
}

impl ZoneKeysSource {
    /// A source over `keys`.
    pub fn new(keys: Arc<ZoneKeys>) -> Self {
        Self { keys }
    }
}

#[async_trait]
impl JwksSource for ZoneKeysSource {
    async fn fetch(&self, zone_id: &str) -> Result<VerificationKeys, MandateError> {
        self.keys.jwks_keys(zone_id).await
    }
}

/// A revoked identifier, by the kind of thing it names. Kinds are separate namespaces (as in
/// the Gateway), so an id of one kind never revokes a claim of another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Anchor {
    /// An authority record (message `session_id`, `sid`, `root_sid`); matches the claims `sid`
    /// and `root_sid`.
    AuthorityRecord(String),
    /// A governed Session (`agent_session_id`); matches the claim `agent_session_id`.
    Session(String),
    /// A delegation edge (`delegation_edge_id`, `edge_id`); matches the claim
    /// `delegation_edge_id` and every edge of `delegation_path`.
    DelegationEdge(String),
}

#[derive(Debug, Default)]
struct Anchors {
    /// Expiry per id, one map per [`Anchor`] kind.
    authority: HashMap<String, DateTime<Utc>>,
    session: HashMap<String, DateTime<Utc>>,
    edge: HashMap<String, DateTime<Utc>>,
    next_prune: Option<DateTime<Utc>>,
}

/// Revoked anchors, each remembered for [`REVOCATION_RETENTION`] after it was inserted and
/// then forgotten, so memory is bounded by the revocation rate over one mandate lifetime.
///
/// An anchor counts only while the clock is before its expiry; an empty id is never revoked.
#[derive(Debug)]
pub struct RevocationSet {
    clock: SharedClock,
    retention: Duration,
    anchors: Mutex<Anchors>,
}

impl RevocationSet {
    /// An empty set on `clock`, remembering anchors for [`REVOCATION_RETENTION`].
    pub fn new(clock: SharedClock) -> Self {
        Self::with_retention(clock, REVOCATION_RETENTION)
    }

    /// An empty set remembering anchors for `retention` (never less than
    /// [`REVOCATION_RETENTION`] in production: a shorter one forgets a revocation while a
    /// mandate carrying it can still verify).
    pub fn with_retention(clock: SharedClock, retention: Duration) -> Self {
        Self {
            clock,
            retention,
            anchors: Mutex::new(Anchors::default()),
        }
    }

    /// Record `anchor` as revoked at `at`: it counts until `at` + retention (a later
    /// insertion of the same anchor extends it, an earlier one never shortens it).
    pub fn insert(&self, anchor: Anchor, at: DateTime<Utc>) {
        let expires = at + self.retention;
        let now = self.clock.now();
        let mut guard = lock(&self.anchors);
        // Reborrow through the guard once, so the three maps can be borrowed separately.
        let a = &mut *guard;
        if a.next_prune.is_none_or(|t| now >= t) {
            for map in [&mut a.authority, &mut a.session, &mut a.edge] {
                map.retain(|_, exp| *exp > now);
            }
            a.next_prune = Some(now + PRUNE_EVERY);
        }
        let (map, id) = match anchor {
            Anchor::AuthorityRecord(id) => (&mut a.authority, id),
            Anchor::Session(id) => (&mut a.session, id),
            Anchor::DelegationEdge(id) => (&mut a.edge, id),
        };
        if id.is_empty() {
            return;
        }
        let entry = map.entry(id).or_insert(expires);
        if *entry < expires {
            *entry = expires;
        }
    }

    /// Whether any anchor of `claims` is revoked now: `sid` or `root_sid` as an authority
    /// record, `agent_session_id` as a Session, `delegation_edge_id` or any edge of
    /// `delegation_path` as a delegation edge.
    pub fn is_revoked(&self, claims: &MandateClaims) -> bool {
        let now = self.clock.now();
        let a = lock(&self.anchors);
        let hit = |map: &HashMap<String, DateTime<Utc>>, id: &str| {
            !id.is_empty() && map.get(id).is_some_and(|exp| now < *exp)
        };
        hit(&a.authority, &claims.sid)
            || hit(&a.authority, &claims.root_sid)
            || claims
                .agent_session_id
                .as_deref()
                .is_some_and(|s| hit(&a.session, s))
            || claims
                .delegation_edge_id
                .as_deref()
                .is_some_and(|e| hit(&a.edge, e))
            || claims.delegation_path.iter().any(|e| hit(&a.edge, e))
    }

    /// How many anchors are held (expired ones not yet pruned included).
    pub fn len(&self) -> usize {
        let a = lock(&self.anchors);
        a.authority.len() + a.session.len() + a.edge.len()
    }

    /// Whether no anchor is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Feeds a [`RevocationSet`] from `caracal.sessions.revoke`: every anchor field present in a
/// message (`session_id`, `sid`, `root_sid`, `agent_session_id`, `delegation_edge_id`,
/// `edge_id`) is inserted at the set's clock time. A message whose `_sig` does not verify
/// (`hmac_verify_failed`), or that names no anchor, is dead-lettered. Inserting is idempotent.
#[derive(Debug, Clone)]
pub struct RevocationSetHandler {
    set: Arc<RevocationSet>,
    sig: SigPolicy,
}

impl RevocationSetHandler {
    /// A handler feeding `set`, checking `_sig` under `sig`.
    pub fn new(set: Arc<RevocationSet>, sig: SigPolicy) -> Self {
        Self { set, sig }
    }
}

/// The anchors a revocation message names.
fn message_anchors(delivery: &Delivery) -> Vec<Anchor> {
    let mut out = Vec::new();
    for (key, value) in delivery.fields.iter() {
        if value.is_empty() {
            continue;
        }
        let anchor = match key {
            "session_id" | "sid" | "root_sid" => Anchor::AuthorityRecord(value.to_owned()),
            "agent_session_id" => Anchor::Session(value.to_owned()),
            "delegation_edge_id" | "edge_id" => Anchor::DelegationEdge(value.to_owned()),
            _ => continue,
        };
        out.push(anchor);
    }
    out
}

#[async_trait]
impl Handler for RevocationSetHandler {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        if self
            .sig
            .check(&delivery.stream, delivery.fields.iter())
            .is_err()
        {
            return Outcome::DeadLetter {
                reason: REASON_HMAC_FAILED.to_owned(),
            };
        }
        let anchors = message_anchors(delivery);
        if anchors.is_empty() {
            return Outcome::DeadLetter {
                reason: REASON_MISSING_ANCHOR.to_owned(),
            };
        }
        let at = self.set.clock.now();
        for anchor in anchors {
            self.set.insert(anchor, at);
        }
        Outcome::Ack
    }
}

/// A zone's cached keys.
#[derive(Debug, Default)]
struct ZoneState {
    keys: Option<(Arc<VerificationKeys>, DateTime<Utc>)>,
    last_forced: Option<DateTime<Utc>>,
}

/// Per-zone cache of a [`JwksSource`]: a set is used for `ttl` and never served stale (an
/// expired set plus a failed fetch is an error); a `kid` missing from a cached set allows at
/// most one forced refetch per zone per [`FORCED_REFETCH_INTERVAL`]; one fetch at a time per
/// zone (single flight), so a cold cache under load costs one fetch, not one per request.
/// Shared by [`RemoteVerifier`] and the Gateway's signature check, so both follow one rule.
pub struct KeyCache {
    source: Arc<dyn JwksSource>,
    clock: SharedClock,
    ttl: Duration,
    zones: Mutex<HashMap<String, ZoneState>>,
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    /// A cache over `source` keeping each zone's set for `ttl`.
    pub fn new(source: Arc<dyn JwksSource>, clock: SharedClock, ttl: Duration) -> Self {
        Self {
            source,
            clock,
            ttl,
            zones: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// The keys of `zone_id` to check a token signed with `kid`: the cached set when fresh and
    /// holding `kid`, else a fetched one (a forced refetch only when the cooldown allows).
    /// [`MandateError::UnknownKid`] when `kid` is missing and no refetch is allowed;
    /// [`MandateError::KeySetUnavailable`] when a needed fetch fails.
    pub async fn keys_for(
        &self,
        zone_id: &str,
        kid: &str,
    ) -> Result<Arc<VerificationKeys>, MandateError> {
        let (keys, just_fetched) = self.cached_or_fetch(zone_id).await?;
        if keys.get(kid).is_some() {
            return Ok(keys);
        }
        if just_fetched || !self.take_forced_slot(zone_id) {
            return Err(MandateError::UnknownKid);
        }
        self.fetch(zone_id).await
    }

    /// Forget every cached key set (e.g. on `caracal.keys.invalidate`).
    pub fn clear(&self) {
        lock(&self.zones).clear();
    }

    fn cached(&self, zone_id: &str, now: DateTime<Utc>) -> Option<Arc<VerificationKeys>> {
        let zones = lock(&self.zones);
        let (keys, fetched_at) = zones.get(zone_id)?.keys.as_ref()?;
        (now - *fetched_at < self.ttl).then(|| keys.clone())
    }

    /// The cached set if fresh, else a fetched one; and whether it was fetched by this call.
    async fn cached_or_fetch(
        &self,
        zone_id: &str,
    ) -> Result<(Arc<VerificationKeys>, bool), MandateError> {
        if let Some(keys) = self.cached(zone_id, self.clock.now()) {
            return Ok((keys, false));
        }
        let gate = self.gate(zone_id);
        let _one_at_a_time = gate.lock().await;
        // Another caller may have fetched while this one waited.
        if let Some(keys) = self.cached(zone_id, self.clock.now()) {
            return Ok((keys, false));
        }
        self.fetch_locked(zone_id).await.map(|keys| (keys, true))
    }

    /// A forced refetch under the zone's single-flight gate.
    async fn fetch(&self, zone_id: &str) -> Result<Arc<VerificationKeys>, MandateError> {
        let gate = self.gate(zone_id);
        let _one_at_a_time = gate.lock().await;
        self.fetch_locked(zone_id).await
    }

    async fn fetch_locked(&self, zone_id: &str) -> Result<Arc<VerificationKeys>, MandateError> {
        let keys = Arc::new(
            self.source
                .fetch(zone_id)
                .await
                .map_err(|e| MandateError::KeySetUnavailable(Box::new(e)))?,
        );
        let now = self.clock.now();
        lock(&self.zones)
            .entry(zone_id.to_owned())
            .or_default()
            .keys = Some((keys.clone(), now));
        Ok(keys)
    }

    /// Whether a forced refetch of `zone_id` is allowed now; if so, the slot is taken (checked
    /// and set under one lock, so concurrent misses share one refetch).
    fn take_forced_slot(&self, zone_id: &str) -> bool {
        let now = self.clock.now();
        let mut zones = lock(&self.zones);
        let state = zones.entry(zone_id.to_owned()).or_default();
        if state
            .last_forced
            .is_some_and(|t| now - t < FORCED_REFETCH_INTERVAL)
        {
            return false;
        }
        state.last_forced = Some(now);
        true
    }

    fn gate(&self, zone_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.fetching)
            .entry(zone_id.to_owned())
            .or_default()
            .clone()
    }
}

/// The resource-side mandate verifier. Cheap to share (`Arc`); safe to call concurrently.
pub struct RemoteVerifier {
    issuer: String,
    clock: SharedClock,
    revocations: Arc<RevocationSet>,
    keys: KeyCache,
}

impl std::fmt::Debug for RemoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteVerifier")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl RemoteVerifier {
    /// A verifier of mandates issued by `issuer` (exact `iss`), with keys from `source`
    /// cached for [`KEY_CACHE_TTL`], time from `clock`, and revocations from `revocations`.
    pub fn new(
        source: Arc<dyn JwksSource>,
        issuer: impl Into<String>,
        clock: SharedClock,
        revocations: Arc<RevocationSet>,
    ) -> Self {
        Self {
            keys: KeyCache::new(source, clock.clone(), KEY_CACHE_TTL),
            issuer: issuer.into(),
            clock,
            revocations,
        }
    }

    /// The revocation set this verifier consults.
    pub fn revocations(&self) -> &Arc<RevocationSet> {
        &self.revocations
    }

    /// Verify `token` for the configured `zone_id` (never read from the token) as a mandate
    /// of class `expected_use` whose `aud` contains `audience` and whose `scope` holds every
    /// one of `required_scopes`; then refuse it if any revocation anchor is revoked. See the
    /// module docs for the order. Every failure is a typed [`MandateError`] for which
    /// [`MandateError::is_rejection`] holds; render it with [`MandateError::verifier_code`].
    pub async fn verify(
        &self,
        token: &str,
        zone_id: &str,
        expected_use: MandateUse,
        audience: &str,
        required_scopes: &[&str],
    ) -> Result<MandateClaims, MandateError> {
        if zone_id.is_empty() {
            // A verifier without a configured zone fails closed (`invalid_zone`).
            return Err(MandateError::ZoneMismatch);
        }
        let kid = precheck(token)?;
        let keys = self.keys.keys_for(zone_id, &kid).await?;
        let policy = VerifyPolicy::new(zone_id, self.issuer.as_str(), expected_use, audience);
        let claims = verify(token, &keys, &policy, self.clock.now())?;
        for &scope in required_scopes {
            if scope.is_empty() || !claims.scopes().any(|s| s == scope) {
                return Err(MandateError::MissingScope {
                    scope: scope.to_owned(),
                });
            }
        }
        if self.revocations.is_revoked(&claims) {
            return Err(MandateError::Revoked);
        }
        Ok(claims)
    }

    /// Forget every cached key set (e.g. on `caracal.keys.invalidate`, if the host consumes
    /// it).
    pub fn clear(&self) {
        self.keys.clear();
    }
}

#[cfg(test)]
mod tests;
