//! Revocation state in the Gateway (reference `gateway.md` §5).
//!
//! Three anchor maps (authority records, Sessions, delegation edges; separate namespaces),
//! each anchor counting until its expiry (now + [`ANCHOR_TTL`] when marked). The map is
//! rebuilt from a [`SnapshotSource`] (Postgres, authoritative) every [`RELOAD_INTERVAL`] and on
//! the admin reload, and marked in near real time by [`StreamHandler`] from
//! `caracal.sessions.revoke`. A reload **replaces** the maps, except that stream marks that
//! raced the reload (the generation moved while the queries ran) are merged in.
//!
//! Freshness is the time of the last successful snapshot (the stream never refreshes it);
//! older than [`STALE_AFTER`], or none yet, or a clock that went backwards, is stale, and the
//! proxy refuses every request (fail closed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use caracal_core::clock::SharedClock;
use caracal_core::streams::consumer::{Delivery, Handler, Outcome};
use caracal_core::streams::signature::SigPolicy;

use crate::metrics::{Counters, Metrics};
use crate::preflight::PeekedClaims;

/// How long a marked anchor counts.
pub const ANCHOR_TTL: Duration = Duration::hours(24);
/// Snapshot reload period.
pub const RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Deliveries after which a message naming no anchor is dead-lettered.
pub const POISON_DELIVERIES: u64 = 5;
/// A snapshot older than this is stale (`2 × 30 s + 10 s`).
pub const STALE_AFTER: Duration = Duration::seconds(70);

/// The revoked ids of one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `authority_records` with `status='revoked'` (matched against `sid` and `root_sid`).
    pub authority: Vec<String>,
    /// `sessions` with `status='terminated'` (matched against `agent_session_id`).
    pub sessions: Vec<String>,
    /// `delegation_edges` with `status='revoked'` (matched against `delegation_edge_id`).
    pub edges: Vec<String>,
}

/// Where the authoritative snapshot comes from.
#[async_trait]
pub trait SnapshotSource: Send + Sync {
    /// The revoked anchors of the last 24 h. An error keeps the previous maps (and lets the
    /// snapshot age toward staleness).
    async fn load(&self) -> Result<Snapshot, String>;

    /// The database pool behind the source, if any (the `caracal_db_pool_*` gauges).
    fn pool_stats(&self) -> Option<caracal_core::backend::postgres::PoolStats> {
        None
    }
}

/// An in-memory [`SnapshotSource`] (tests, embedded hosts): serves what was last `set`, or
/// fails while `fail` is on.
#[derive(Debug, Default)]
pub struct MemorySnapshotSource {
    snapshot: Mutex<Snapshot>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemorySnapshotSource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve `snapshot` from now on.
    pub fn set(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// Make loads fail (`true`) or succeed again.
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[async_trait]
impl SnapshotSource for MemorySnapshotSource {
    async fn load(&self) -> Result<Snapshot, String> {
        if self.failing.load(Ordering::SeqCst) {
            return Err("snapshot source unavailable".to_owned());
        }
        Ok(self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }
}

/// The Postgres snapshot (reference §5.2 queries) over the shared pool of a
/// [`PgStore`](caracal_core::backend::postgres::PgStore).
#[derive(Debug, Clone)]
pub struct PgSnapshotSource {
    store: caracal_core::backend::postgres::PgStore,
}

impl PgSnapshotSource {
    /// A source over `store`'s pool.
    pub fn new(store: caracal_core::backend::postgres::PgStore) -> Self {
        Self { store }
    }
}

const Q_AUTHORITY: &str = "SELECT id FROM authority_records \
     WHERE status = 'revoked' AND expires_at > now() - interval '86400 seconds'";
const Q_SESSIONS: &str = "SELECT id FROM sessions \
     WHERE status = 'terminated' AND updated_at > now() - interval '86400 seconds'";
const Q_EDGES: &str = "SELECT id FROM delegation_edges \
     WHERE status = 'revoked' AND revoked_at IS NOT NULL \
     AND revoked_at > now() - interval '86400 seconds'";

#[async_trait]
impl SnapshotSource for PgSnapshotSource {
    fn pool_stats(&self) -> Option<caracal_core::backend::postgres::PoolStats> {
        Some(self.store.pool_stats())
    }

    async fn load(&self) -> Result<Snapshot, String> {
        let conn = self
            .store
            .pool()
            .get()
            .await
            .map_err(|e| format!("postgres pool: {e}"))?;
        let mut out = Snapshot::default();
        for (query, target) in [
            (Q_AUTHORITY, &mut out.authority),
            (Q_SESSIONS, &mut out.sessions),
            (Q_EDGES, &mut out.edges),
        ] {
            let rows = conn
                .query(query, &[])
                .await
                .map_err(|e| format!("postgres query: {e}"))?;
            for row in rows {
                let id: String = row.try_get(0).map_err(|e| format!("postgres row: {e}"))?;
                target.push(id);
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Default)]
struct Maps {
    authority: HashMap<String, DateTime<Utc>>,
    sessions: HashMap<String, DateTime<Utc>>,
    edges: HashMap<String, DateTime<Utc>>,
}

impl Maps {
    fn from_snapshot(s: &Snapshot, expires: DateTime<Utc>) -> Self {
        let map = |ids: &[String]| {
            ids.iter()
                .filter(|id| !id.is_empty())
                .map(|id| (id.clone(), expires))
                .collect()
        };
        Self {
            authority: map(&s.authority),
            sessions: map(&s.sessions),
            edges: map(&s.edges),
        }
    }

    fn merge_live(&mut self, other: &Maps, now: DateTime<Utc>) {
        for (mine, theirs) in [
            (&mut self.authority, &other.authority),
            (&mut self.sessions, &other.sessions),
            (&mut self.edges, &other.edges),
        ] {
            for (id, exp) in theirs {
                if *exp > now {
                    let e = mine.entry(id.clone()).or_insert(*exp);
                    if *e < *exp {
                        *e = *exp;
                    }
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.authority.len() + self.sessions.len() + self.edges.len()
    }
}

/// A kind of anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorKind {
    /// Authority record (`sid`, `root_sid`).
    Authority,
    /// Session (`agent_session_id`).
    Session,
    /// Delegation edge (`delegation_edge_id`).
    Edge,
}

/// The Gateway's revocation state. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RevocationState {
    clock: SharedClock,
    maps: Mutex<Maps>,
    generation: AtomicU64,
    last_reload: Mutex<Option<DateTime<Utc>>>,
}

impl RevocationState {
    /// Empty and stale (no snapshot yet).
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            maps: Mutex::new(Maps::default()),
            generation: AtomicU64::new(0),
            last_reload: Mutex::new(None),
        }
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mark `id` of `kind` revoked now (stream path). Empty ids are ignored.
    pub fn mark(&self, kind: AnchorKind, id: &str) {
        if id.is_empty() {
            return;
        }
        let expires = self.clock.now() + ANCHOR_TTL;
        {
            let mut m = self.maps();
            let map = match kind {
                AnchorKind::Authority => &mut m.authority,
                AnchorKind::Session => &mut m.sessions,
                AnchorKind::Edge => &mut m.edges,
            };
            map.insert(id.to_owned(), expires);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether any anchor of `claims` is revoked now (check 13 and the mid-stream check).
    pub fn is_revoked(&self, claims: &PeekedClaims) -> bool {
        let now = self.clock.now();
        let m = self.maps();
        let hit = |map: &HashMap<String, DateTime<Utc>>, id: Option<&String>| {
            id.is_some_and(|id| !id.is_empty() && map.get(id).is_some_and(|e| now < *e))
        };
        hit(&m.authority, claims.sid.as_ref())
            || hit(&m.authority, claims.root_sid.as_ref())
            || hit(&m.sessions, claims.agent_session_id.as_ref())
            || hit(&m.edges, claims.delegation_edge_id.as_ref())
    }

    /// Reload from `source`: replace the maps (merging stream marks that raced the load) and
    /// refresh freshness. Returns the number of anchors held.
    pub async fn reload(&self, source: &dyn SnapshotSource) -> Result<usize, String> {
        let generation = self.generation.load(Ordering::SeqCst);
        let snapshot = source.load().await?;
        let now = self.clock.now();
        let mut fresh = Maps::from_snapshot(&snapshot, now + ANCHOR_TTL);
        let count = {
            let mut m = self.maps();
            if self.generation.load(Ordering::SeqCst) != generation {
                fresh.merge_live(&m, now);
            }
            *m = fresh;
            m.len()
        };
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        Ok(count)
    }

    /// Seconds since the last successful reload (`None`: never).
    pub fn age(&self) -> Option<Duration> {
        let last = *self.last_reload.lock().unwrap_or_else(|e| e.into_inner());
        last.map(|t| self.clock.now() - t)
    }

    /// Stale: no reload yet, older than [`STALE_AFTER`], or the clock went backwards.
    pub fn is_stale(&self) -> bool {
        match self.age() {
            None => true,
            Some(age) => age < Duration::zero() || age > STALE_AFTER,
        }
    }

    /// Anchors held (gauge `revocations_active`).
    pub fn len(&self) -> usize {
        self.maps().len()
    }

    /// Whether no anchor is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Feeds a [`RevocationState`] from `caracal.sessions.revoke` (reference §5.3): `session_id`
/// (and `sid`, `root_sid`) → authority, `agent_session_id` → Session, `delegation_edge_id`
/// (fallback `edge_id`) → edge. A bad `_sig` is acknowledged and dropped (counted); a message
/// without any anchor is left pending until its [`POISON_DELIVERIES`]th delivery, then
/// dead-lettered.
#[derive(Debug, Clone)]
pub struct StreamHandler {
    state: Arc<RevocationState>,
    sig: SigPolicy,
    metrics: Arc<Metrics>,
    clock: SharedClock,
}

impl StreamHandler {
    /// A handler marking `state`, checking `_sig` under `sig` (counting into a private
    /// [`Metrics`]; see [`StreamHandler::with_metrics`]).
    pub fn new(state: Arc<RevocationState>, sig: SigPolicy) -> Self {
        let clock = state.clock.clone();
        Self {
            state,
            sig,
            metrics: Arc::new(Metrics::default()),
            clock,
        }
    }

    /// Count into `metrics` (the Gateway's own).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

#[async_trait]
impl Handler for StreamHandler {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        if self
            .sig
            .check(&delivery.stream, delivery.fields.iter())
            .is_err()
        {
            Counters::inc(&self.metrics.counters.revocation_invalid_signatures);
            return Outcome::Ack;
        }
        let mut marked = false;
        for (key, value) in delivery.fields.iter() {
            if value.is_empty() {
                continue;
            }
            let kind = match key {
                "session_id" | "sid" | "root_sid" => AnchorKind::Authority,
                "agent_session_id" => AnchorKind::Session,
                "delegation_edge_id" | "edge_id" => AnchorKind::Edge,
                _ => continue,
            };
            self.state.mark(kind, value);
            marked = true;
        }
        if !marked {
            // Poison: left pending for the reaper until the 5th delivery, then dead-lettered.
            if delivery.deliveries < POISON_DELIVERIES {
                return Outcome::Retry;
            }
            Counters::inc(&self.metrics.counters.revocation_dead_letters);
            return Outcome::DeadLetter {
                reason: "missing_anchor".to_owned(),
            };
        }
        let c = &self.metrics.counters;
        Counters::inc(&c.revocation_messages);
        if delivery.deliveries > 1 {
            Counters::inc(&c.revocation_pending_replayed);
        }
        // The entry id's milliseconds are the producer's XADD time (Redis clock).
        let now_ms = u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0);
        self.metrics
            .gauges
            .revocation_propagation_ms
            .store(now_ms.saturating_sub(delivery.id.ms), Ordering::Relaxed);
        Outcome::Ack
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use caracal_core::clock::FakeClock;

    use super::*;

    fn claims(sid: &str) -> PeekedClaims {
        PeekedClaims {
            sid: Some(sid.into()),
            ..PeekedClaims::default()
        }
    }

    #[tokio::test]
    async fn snapshot_replaces_stream_marks_merge_and_staleness() {
        let clock = FakeClock::at_fixture_epoch();
        let state = RevocationState::new(Arc::new(clock.clone()));
        let source = MemorySnapshotSource::new();
        assert!(state.is_stale(), "no snapshot yet");
        source.set(Snapshot {
            authority: vec!["a1".into()],
            ..Snapshot::default()
        });
        assert_eq!(state.reload(&source).await.unwrap(), 1);
        assert!(!state.is_stale());
        assert!(state.is_revoked(&claims("a1")));
        // root_sid matches the authority namespace too; the session map is separate.
        let c = PeekedClaims {
            root_sid: Some("a1".into()),
            ..PeekedClaims::default()
        };
        assert!(state.is_revoked(&c));
        let c = PeekedClaims {
            agent_session_id: Some("a1".into()),
            ..PeekedClaims::default()
        };
        assert!(!state.is_revoked(&c));
        // A stream mark not in Postgres disappears on the next reload (no race).
        state.mark(AnchorKind::Session, "s1");
        let s = PeekedClaims {
            agent_session_id: Some("s1".into()),
            ..PeekedClaims::default()
        };
        assert!(state.is_revoked(&s));
        source.set(Snapshot::default());
        state.reload(&source).await.unwrap();
        assert!(!state.is_revoked(&s) && !state.is_revoked(&claims("a1")));
        // Staleness.
        clock.advance(Duration::seconds(70));
        assert!(!state.is_stale());
        clock.advance(Duration::seconds(1));
        assert!(state.is_stale());
        source.fail(true);
        assert!(state.reload(&source).await.is_err());
        assert!(state.is_stale());
        source.fail(false);
        state.reload(&source).await.unwrap();
        assert!(!state.is_stale());
        // Anchors expire after 24 h.
        state.mark(AnchorKind::Authority, "late");
        clock.advance(ANCHOR_TTL);
        assert!(!state.is_revoked(&claims("late")));
    }

    #[tokio::test]
    async fn stream_handler_marks_drops_bad_signatures_and_retries_poison() {
        use caracal_core::streams::consumer::DeliveryKind;
        use caracal_core::streams::signature::StreamKey;
        use caracal_core::streams::{EntryId, Fields};
        let state = Arc::new(RevocationState::new(
            Arc::new(FakeClock::at_fixture_epoch()),
        ));
        let key = StreamKey::from_bytes(&[7u8; 32]).unwrap();
        let handler = StreamHandler::new(state.clone(), SigPolicy::Verify(key));
        let delivery = |fields: Fields, deliveries| Delivery {
            stream: "caracal.sessions.revoke".into(),
            id: EntryId::MIN,
            fields,
            deliveries,
            kind: DeliveryKind::New,
        };
        let unsigned = Fields::new().with("agent_session_id", "s9");
        assert_eq!(handler.handle(&delivery(unsigned, 1)).await, Outcome::Ack);
        let s = PeekedClaims {
            agent_session_id: Some("s9".into()),
            ..PeekedClaims::default()
        };
        assert!(!state.is_revoked(&s), "a bad signature has no effect");
        let open = StreamHandler::new(state.clone(), SigPolicy::AcceptUnsigned);
        let edge = Fields::new().with("edge_id", "e9");
        assert_eq!(open.handle(&delivery(edge, 1)).await, Outcome::Ack);
        let e = PeekedClaims {
            delegation_edge_id: Some("e9".into()),
            ..PeekedClaims::default()
        };
        assert!(state.is_revoked(&e), "legacy edge_id");
        let poison = Fields::new().with("reason", "x");
        assert_eq!(
            open.handle(&delivery(poison.clone(), 4)).await,
            Outcome::Retry
        );
        assert!(matches!(
            open.handle(&delivery(poison, 5)).await,
            Outcome::DeadLetter { .. }
        ));
    }

    #[tokio::test]
    async fn racing_stream_mark_survives_reload() {
        struct Racing(Arc<RevocationState>);
        #[async_trait]
        impl SnapshotSource for Racing {
            async fn load(&self) -> Result<Snapshot, String> {
                self.0.mark(AnchorKind::Edge, "e1");
                Ok(Snapshot::default())
            }
        }
        let state = Arc::new(RevocationState::new(
            Arc::new(FakeClock::at_fixture_epoch()),
        ));
        state.reload(&Racing(state.clone())).await.unwrap();
        let c = PeekedClaims {
            delegation_edge_id: Some("e1".into()),
            ..PeekedClaims::default()
        };
        assert!(state.is_revoked(&c));
    }
}
