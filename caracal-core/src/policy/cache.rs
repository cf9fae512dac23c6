//! The per-zone compiled bundle cache (reference `sts.md` §4.5).
//!
//! Each zone's [`LoadedBundle`] sits behind `RwLock<Arc<…>>`: a decision clones the `Arc`
//! under a read lock held for a pointer copy, and a reload builds the new bundle outside any
//! lock and swaps it in one assignment, so readers see the old or the new bundle, never a mix.
//!
//! ## Loading a zone ([`BundleCache::reload`])
//!
//! Reloads of one zone are serialised (a per-zone async mutex), so an older load cannot
//! overwrite a newer one.
//!
//! 1. Read the active binding. No active set version → install the deny-all fallback
//!    (`no_active_policy_set`). A store error → keep the cached bundle and report the error; a
//!    zone that has none yet stays unloaded, so its decisions fail (503) rather than guess.
//! 2. Recompute `manifest_sha256` over the stored manifest; a mismatch is an error and keeps
//!    the previous state.
//! 3. The same version and manifest hash as the loaded bundle → nothing to do (the check still
//!    counts as fresh, see below). Otherwise fetch every version (the count must match),
//!    validate each document — a document that is not a valid data document installs the
//!    deny-all fallback, as the reference does (conformance 33) — and compile; a compile
//!    error keeps the previous state.
//! 4. Swap, and record version, manifest hash and time.
//!
//! Triggers: lazy load on the first [`BundleCache::get`] of a zone; [`BundleCache::invalidate`]
//! for `caracal.policy.invalidate` (see [`InvalidateHandler`]); and the safety poll
//! ([`BundleCache::poll_once`], [`BundleCache::spawn_poller`]) every `OPA_POLL_SECONDS`
//! (default 60, 1..=300, [`poll_interval`]) over every known zone and every zone with an
//! active binding.
//!
//! ## Freshness
//!
//! [`BundleCache::max_policy_age_seconds`] is the largest time since a zone's bundle was last
//! *confirmed current* (a swap, a fallback, or a reload that found nothing new). The reference
//! measures from the last swap only, which grows without bound in a quiet zone and so cannot
//! be alerted on; measuring from the last confirmation makes a stuck reload (store down, a
//! version that stopped compiling) show as a growing age. `caracal-core` does not depend on
//! the `metrics` facade, so the services export this value as the `max_policy_age_seconds`
//! gauge.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::PolicyError;
use super::data::CompiledBundle;
use super::lifecycle::compile_versions;
use crate::clock::SharedClock;
use crate::model::policy_set::manifest_sha256;
use crate::store::policy::PolicyStore;
use crate::streams::consumer::{Delivery, Handler, Outcome};
use crate::streams::signature::SigPolicy;

/// The default safety-poll period, in seconds.
pub const DEFAULT_POLL_SECONDS: u64 = 60;
/// The smallest accepted `OPA_POLL_SECONDS`.
pub const MIN_POLL_SECONDS: u64 = 1;
/// The largest accepted `OPA_POLL_SECONDS`.
pub const MAX_POLL_SECONDS: u64 = 300;
/// The environment variable of the safety-poll period.
pub const POLL_SECONDS_ENV: &str = "OPA_POLL_SECONDS";

/// The safety-poll period from the value of `OPA_POLL_SECONDS`: unset or blank → 60 s; an
/// integer in 1..=300 → that; anything else is a configuration error (the service refuses to
/// start, as the reference does for `OPA_POLL_SECONDS=301`).
pub fn poll_interval(value: Option<&str>) -> Result<Duration, PolicyError> {
    let Some(raw) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Duration::from_secs(DEFAULT_POLL_SECONDS));
    };
    match raw.parse::<u64>() {
        Ok(n) if (MIN_POLL_SECONDS..=MAX_POLL_SECONDS).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(PolicyError::Config(format!(
            "{POLL_SECONDS_ENV} must be an integer between {MIN_POLL_SECONDS} and \
             {MAX_POLL_SECONDS}, got {raw:?}"
        ))),
    }
}

/// A zone's compiled bundle and where it came from.
#[derive(Debug)]
pub struct LoadedBundle {
    /// The zone.
    pub zone_id: String,
    /// The compiled data.
    pub bundle: CompiledBundle,
    /// The active set version it was compiled from (`None` for the deny-all fallback).
    pub policy_set_version_id: Option<String>,
    /// That version's manifest hash (`None` for the deny-all fallback).
    pub manifest_sha256: Option<String>,
    /// When it was swapped in.
    pub loaded_at: DateTime<Utc>,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new bundle was compiled and swapped in.
    Loaded,
    /// The active version was already loaded.
    Unchanged,
    /// The zone has no active set version, or its documents are not valid data documents:
    /// the deny-all fallback is installed.
    DenyAll,
}

/// A zone's state for status pages (`/internal/policy/status/{zone}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleStatus {
    /// The zone.
    pub zone_id: String,
    /// Whether a bundle is loaded.
    pub loaded: bool,
    /// Whether it is the deny-all fallback.
    pub deny_all: bool,
    /// Its set version.
    pub policy_set_version_id: Option<String>,
    /// Its manifest hash.
    pub manifest_sha256: Option<String>,
    /// When it was swapped in.
    pub loaded_at: Option<DateTime<Utc>>,
    /// When it was last confirmed current.
    pub checked_at: Option<DateTime<Utc>>,
    /// Seconds since `checked_at`.
    pub age_seconds: Option<i64>,
    /// The last reload error, cleared by the next successful reload.
    pub last_error: Option<String>,
}

/// A zone's slot. `current` is swapped whole; `meta` records freshness and errors.
#[derive(Default)]
struct ZoneSlot {
    current: RwLock<Option<Arc<LoadedBundle>>>,
    meta: Mutex<ZoneMeta>,
    /// Serialises reloads of this zone.
    reload: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct ZoneMeta {
    checked_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl ZoneSlot {
    fn current(&self) -> Option<Arc<LoadedBundle>> {
        // A poisoned lock only means a writer panicked between whole assignments; the value
        // is still a complete bundle.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn swap(&self, bundle: LoadedBundle) {
        let at = bundle.loaded_at;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(bundle));
        self.confirm(at);
    }

    fn confirm(&self, at: DateTime<Utc>) {
        let mut meta = self.meta.lock().unwrap_or_else(PoisonError::into_inner);
        meta.checked_at = Some(at);
        meta.last_error = None;
    }

    fn record_error(&self, e: &PolicyError) {
        self.meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_error = Some(e.to_string());
    }
}

/// The result of one safety poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Zones reloaded with a new bundle or the fallback.
    pub changed: usize,
    /// Zones already current.
    pub unchanged: usize,
    /// Zones whose reload failed (their previous bundle is kept).
    pub failed: usize,
}

/// The per-zone bundle cache. Share it behind an `Arc`.
pub struct BundleCache {
    store: Arc<dyn PolicyStore>,
    clock: SharedClock,
    zones: RwLock<HashMap<String, Arc<ZoneSlot>>>,
}

impl std::fmt::Debug for BundleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleCache")
            .field("zones", &self.known_zones())
            .finish_non_exhaustive()
    }
}

impl BundleCache {
    /// An empty cache reading from `store`, stamping times from `clock`.
    pub fn new(store: Arc<dyn PolicyStore>, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            zones: RwLock::new(HashMap::new()),
        }
    }

    fn slot(&self, zone_id: &str) -> Option<Arc<ZoneSlot>> {
        self.zones
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(zone_id)
            .cloned()
    }

    fn slot_or_insert(&self, zone_id: &str) -> Arc<ZoneSlot> {
        if let Some(slot) = self.slot(zone_id) {
            return slot;
        }
        self.zones
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(zone_id.to_owned())
            .or_default()
            .clone()
    }

    /// The zones this cache knows, sorted.
    pub fn known_zones(&self) -> Vec<String> {
        let mut zones: Vec<String> = self
            .zones
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        zones.sort();
        zones
    }

    /// The zone's bundle if loaded, without any I/O.
    pub fn cached(&self, zone_id: &str) -> Option<Arc<LoadedBundle>> {
        self.slot(zone_id)?.current()
    }

    /// The zone's bundle, loading it on first use. An error means the zone could not be
    /// loaded and has no previous bundle: the caller must fail closed (503).
    pub async fn get(&self, zone_id: &str) -> Result<Arc<LoadedBundle>, PolicyError> {
        if let Some(bundle) = self.cached(zone_id) {
            return Ok(bundle);
        }
        self.reload(zone_id).await?;
        self.cached(zone_id)
            .ok_or(PolicyError::NotFound("policy bundle"))
    }

    /// Reload the zone now (what `caracal.policy.invalidate` triggers).
    pub async fn invalidate(&self, zone_id: &str) -> Result<ReloadOutcome, PolicyError> {
        self.reload(zone_id).await
    }

    /// Reload a zone (see the module docs for the algorithm). On error the previous bundle,
    /// if any, stays in place and the error is recorded in the zone's status.
    pub async fn reload(&self, zone_id: &str) -> Result<ReloadOutcome, PolicyError> {
        let slot = self.slot_or_insert(zone_id);
        let _serialised = slot.reload.lock().await;
        let result = self.reload_locked(zone_id, &slot).await;
        if let Err(e) = &result {
            tracing::warn!(zone_id, error = %e, "policy bundle reload failed; keeping the previous bundle");
            slot.record_error(e);
        }
        result
    }

    async fn reload_locked(
        &self,
        zone_id: &str,
        slot: &ZoneSlot,
    ) -> Result<ReloadOutcome, PolicyError> {
        let deny_all = |clock: &SharedClock| LoadedBundle {
            zone_id: zone_id.to_owned(),
            bundle: CompiledBundle::deny_all(),
            policy_set_version_id: None,
            manifest_sha256: None,
            loaded_at: clock.now(),
        };
        let Some(active) = self.store.active_policy(zone_id).await? else {
            slot.swap(deny_all(&self.clock));
            return Ok(ReloadOutcome::DenyAll);
        };
        let version = active.version;
        if manifest_sha256(&version.manifest_json) != version.manifest_sha256 {
            return Err(PolicyError::ManifestMismatch {
                version_id: version.id,
            });
        }
        if let Some(current) = slot.current() {
            if current.policy_set_version_id.as_deref() == Some(version.id.as_str())
                && current.manifest_sha256.as_deref() == Some(version.manifest_sha256.as_str())
            {
                slot.confirm(self.clock.now());
                return Ok(ReloadOutcome::Unchanged);
            }
        }
        let ids: Vec<String> = version
            .manifest_json
            .iter()
            .map(|e| e.policy_version_id.clone())
            .collect();
        let versions = self.store.get_policy_versions(zone_id, &ids).await?;
        if versions.len() != ids.len() {
            return Err(PolicyError::InvalidPolicyContract(
                "policy set manifest references missing policy versions".into(),
            ));
        }
        let bundle = match compile_versions(&versions) {
            Ok(bundle) => bundle,
            // Not a data document at all (e.g. it defines `result`): the reference installs
            // the deny-all fallback for the zone.
            Err(PolicyError::InvalidRego(violation)) => {
                tracing::warn!(zone_id, %violation, "active policy set holds an invalid data document; zone is deny-all");
                slot.swap(deny_all(&self.clock));
                return Ok(ReloadOutcome::DenyAll);
            }
            Err(e) => return Err(e),
        };
        slot.swap(LoadedBundle {
            zone_id: zone_id.to_owned(),
            bundle,
            policy_set_version_id: Some(version.id),
            manifest_sha256: Some(version.manifest_sha256),
            loaded_at: self.clock.now(),
        });
        Ok(ReloadOutcome::Loaded)
    }

    /// One safety poll: reload every known zone and every zone with an active binding (the
    /// startup seed). Failures keep the zone's previous bundle and are counted, not returned;
    /// a failure to list the active zones polls the known zones only.
    pub async fn poll_once(&self) -> PollReport {
        let mut zones: BTreeSet<String> = self.known_zones().into_iter().collect();
        match self.store.zones_with_active_policy().await {
            Ok(active) => zones.extend(active),
            Err(e) => tracing::warn!(error = %e, "listing zones with an active policy failed"),
        }
        let mut report = PollReport::default();
        for zone in zones {
            match self.reload(&zone).await {
                Ok(ReloadOutcome::Unchanged) => report.unchanged += 1,
                Ok(_) => report.changed += 1,
                Err(_) => report.failed += 1,
            }
        }
        report
    }

    /// Run [`Self::poll_once`] every `interval` until `shutdown` turns true (or its sender is
    /// dropped).
    pub fn spawn_poller(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        self.poll_once().await;
                    }
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            return;
                        }
                    }
                }
            }
        })
    }

    /// A zone's status, if the cache knows the zone.
    pub fn status(&self, zone_id: &str) -> Option<BundleStatus> {
        let slot = self.slot(zone_id)?;
        let current = slot.current();
        let (checked_at, last_error) = {
            let meta = slot.meta.lock().unwrap_or_else(PoisonError::into_inner);
            (meta.checked_at, meta.last_error.clone())
        };
        let now = self.clock.now();
        Some(BundleStatus {
            zone_id: zone_id.to_owned(),
            loaded: current.is_some(),
            deny_all: current.as_ref().is_some_and(|c| c.bundle.is_deny_all()),
            policy_set_version_id: current
                .as_ref()
                .and_then(|c| c.policy_set_version_id.clone()),
            manifest_sha256: current.as_ref().and_then(|c| c.manifest_sha256.clone()),
            loaded_at: current.as_ref().map(|c| c.loaded_at),
            checked_at,
            age_seconds: checked_at.map(|at| (now - at).num_seconds().max(0)),
            last_error,
        })
    }

    /// The largest age, in seconds, over every zone with a loaded bundle (see the module docs);
    /// `None` when no zone is loaded. Export as the `max_policy_age_seconds` gauge.
    pub fn max_policy_age_seconds(&self) -> Option<i64> {
        self.known_zones()
            .iter()
            .filter_map(|z| self.status(z))
            .filter(|s| s.loaded)
            .filter_map(|s| s.age_seconds)
            .max()
    }
}

/// The dead-letter reason of a message whose `_sig` does not verify.
pub const REASON_HMAC_FAILED: &str = "hmac_verify_failed";
/// The dead-letter reason of a message without `zone_id`.
pub const REASON_MISSING_ZONE: &str = "missing_zone_id";

/// The `caracal.policy.invalidate` handler (in the STS, group `opa-engine:<instance>`, one per
/// replica, since the bundle cache is per process): reloads the message's `zone_id`.
///
/// A message whose `_sig` does not verify under the configured policy, or without a zone, is
/// dead-lettered (never acted on); a store that cannot be reached leaves the message pending
/// for redelivery; any other failure is acknowledged (the zone keeps its last good bundle,
/// the error shows in its status, and the safety poll retries). Reloading is idempotent, so
/// redelivery is harmless.
#[derive(Debug, Clone)]
pub struct InvalidateHandler {
    cache: Arc<BundleCache>,
    sig: SigPolicy,
}

impl InvalidateHandler {
    /// A handler reloading zones of `cache`, checking `_sig` under `sig`.
    pub fn new(cache: Arc<BundleCache>, sig: SigPolicy) -> Self {
        Self { cache, sig }
    }
}

#[async_trait::async_trait]
impl Handler for InvalidateHandler {
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
        let Some(zone_id) = delivery.fields.get("zone_id").filter(|z| !z.is_empty()) else {
            return Outcome::DeadLetter {
                reason: REASON_MISSING_ZONE.to_owned(),
            };
        };
        match self.cache.invalidate(zone_id).await {
            Ok(_) => Outcome::Ack,
            Err(e) if e.is_retryable() => Outcome::Retry,
            Err(_) => Outcome::Ack,
        }
    }
}
