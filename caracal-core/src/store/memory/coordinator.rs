//! Sessions, delegation edges, graph epochs and idempotency receipts, changed through a
//! per-zone unit of work.
//!
//! The committed state of every zone sits behind one `std::sync::Mutex` taken only for short,
//! synchronous reads and for publishing a commit. A unit of work holds its zone's
//! `tokio::sync::Mutex` (an owned guard, so the unit of work is `Send + 'static`) from
//! [`CoordinatorStore::begin`] until it commits or is dropped, and keeps its writes in an
//! overlay: reads merge the overlay over the committed state (reads see own writes), `commit`
//! publishes the overlay and moves the unit of work's outbox messages into the outbox in one
//! critical section, and dropping the unit of work simply drops the overlay.
//!
//! INVARIANT: only a unit of work changes a zone's committed state, and it holds the zone's
//! lock while doing so; so while a unit of work is open, its zone's committed state cannot
//! change under it, and merging the overlay over it is a consistent snapshot.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::OwnedMutexGuard;

use super::{MemoryStore, lock};
use crate::model::delegation::{DelegationEdge, EdgeStatus};
use crate::model::session::{Lifecycle, Session, SessionStatus};
use crate::store::coordinator::{
    CoordinatorStore, CoordinatorTx, EdgeFilter, IdPage, IdempotencyReceipt, IdempotentOperation,
    SessionFilter, ZoneRef,
};
use crate::store::outbox::OutboxMessage;
use crate::store::{Cursor, Page, StoreError, StoreResult};

/// `(operation, scope_id, key_digest)`: the `idempotency_receipt` key within a zone.
type ReceiptKey = (IdempotentOperation, String, [u8; 32]);

fn receipt_key(r: &IdempotencyReceipt) -> ReceiptKey {
    (r.operation, r.scope_id.clone(), r.key_digest)
}

/// One zone's committed Coordinator state.
#[derive(Default)]
struct ZoneData {
    /// Ordered by id, so `id DESC` lists walk the map backwards.
    sessions: BTreeMap<String, Session>,
    edges: BTreeMap<String, DelegationEdge>,
    epoch: i64,
    receipts: HashMap<ReceiptKey, IdempotencyReceipt>,
}

/// Committed state of every zone, plus the zone of every session and edge id (ids are unique
/// over all zones, like primary keys).
#[derive(Default)]
struct Committed {
    zones: HashMap<String, ZoneData>,
    session_zone: HashMap<String, String>,
    edge_zone: HashMap<String, String>,
}

/// The Coordinator's tables and unit-of-work locks.
#[derive(Default)]
pub(super) struct State {
    /// zone → the lock a unit of work on that zone holds. Entries are never removed, so two
    /// callers of `begin` on one zone always contend on the same mutex.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    committed: Mutex<Committed>,
}

fn matches_filter(s: &Session, f: &SessionFilter) -> bool {
    f.status.is_none_or(|st| s.status == st)
        && f.lifecycle.is_none_or(|l| s.lifecycle == l)
        && f.application_id
            .as_ref()
            .is_none_or(|a| &s.application_id == a)
        && f.label.as_ref().is_none_or(|l| s.labels.contains(l))
        && f.parent_id
            .as_ref()
            .is_none_or(|p| s.parent_id.as_ref() == Some(p))
}

/// Copy the mutable fields of `from` onto `to`; identity, placement and start stay.
fn apply_session_update(to: &mut Session, from: &Session) {
    to.labels.clone_from(&from.labels);
    to.status = from.status;
    to.ttl_seconds = from.ttl_seconds;
    to.metadata.clone_from(&from.metadata);
    to.terminated_at = from.terminated_at;
    to.termination_reason.clone_from(&from.termination_reason);
    to.last_heartbeat_at = from.last_heartbeat_at;
    to.heartbeat_deadline_at = from.heartbeat_deadline_at;
    to.lease_generation = from.lease_generation;
    to.child_count = from.child_count;
    to.max_children = from.max_children;
}

/// The instant a task's TTL runs out; `None` when it never does (no TTL, or one too large
/// to add, as [`Session::holds_slot`] reads it).
fn task_end(s: &Session) -> Option<DateTime<Utc>> {
    let ttl = chrono::Duration::try_seconds(s.ttl_seconds?)?;
    s.started_at.checked_add_signed(ttl)
}

/// When a non-active edge retired: its revocation, or its expiry.
fn retired_at(e: &DelegationEdge) -> DateTime<Utc> {
    e.revoked_at.unwrap_or(e.expires_at)
}

/// Sort `(key, zone, id)` triples and keep the first `limit` as [`ZoneRef`]s.
fn first_due<K: Ord>(mut due: Vec<(K, String, String)>, limit: u32) -> StoreResult<Vec<ZoneRef>> {
    if limit == 0 {
        return Err(StoreError::Invalid("limit must be at least 1".into()));
    }
    due.sort();
    Ok(due
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|(_, zone_id, id)| ZoneRef { zone_id, id })
        .collect())
}

/// An outbox message waiting for its unit of work to commit.
struct PendingMessage {
    id: String,
    message: OutboxMessage,
    created_at: DateTime<Utc>,
}

/// The in-memory unit of work.
struct MemoryTx {
    store: MemoryStore,
    zone_id: String,
    /// Held until commit or drop; releasing it lets the next unit of work on the zone begin.
    _zone_lock: OwnedMutexGuard<()>,
    /// Sessions inserted or updated here (the full row after the change).
    sessions: BTreeMap<String, Session>,
    edges: BTreeMap<String, DelegationEdge>,
    epoch: Option<i64>,
    receipts: HashMap<ReceiptKey, IdempotencyReceipt>,
    outbox: Vec<PendingMessage>,
}

impl MemoryTx {
    /// Sessions of the zone matching `pred`, the overlay's version of a row winning.
    fn sessions_where(&self, pred: impl Fn(&Session) -> bool) -> Vec<Session> {
        let committed = lock(&self.store.inner.coordinator.committed);
        let mut out: BTreeMap<&str, Session> = BTreeMap::new();
        if let Some(zone) = committed.zones.get(&self.zone_id) {
            for (id, s) in &zone.sessions {
                if !self.sessions.contains_key(id) && pred(s) {
                    out.insert(id, s.clone());
                }
            }
        }
        for (id, s) in &self.sessions {
            if pred(s) {
                out.insert(id, s.clone());
            }
        }
        out.into_values().collect()
    }

    /// Edges of the zone matching `pred`, the overlay's version of a row winning.
    fn edges_where(&self, pred: impl Fn(&DelegationEdge) -> bool) -> Vec<DelegationEdge> {
        let committed = lock(&self.store.inner.coordinator.committed);
        let mut out: BTreeMap<&str, DelegationEdge> = BTreeMap::new();
        if let Some(zone) = committed.zones.get(&self.zone_id) {
            for (id, e) in &zone.edges {
                if !self.edges.contains_key(id) && pred(e) {
                    out.insert(id, e.clone());
                }
            }
        }
        for (id, e) in &self.edges {
            if pred(e) {
                out.insert(id, e.clone());
            }
        }
        out.into_values().collect()
    }

    fn committed_session(&self, id: &str) -> Option<Session> {
        let committed = lock(&self.store.inner.coordinator.committed);
        committed
            .zones
            .get(&self.zone_id)
            .and_then(|z| z.sessions.get(id))
            .cloned()
    }

    fn committed_edge(&self, id: &str) -> Option<DelegationEdge> {
        let committed = lock(&self.store.inner.coordinator.committed);
        committed
            .zones
            .get(&self.zone_id)
            .and_then(|z| z.edges.get(id))
            .cloned()
    }

    /// The receipt with `key`, the overlay's winning, whether expired or not.
    fn receipt(&self, key: &ReceiptKey) -> Option<IdempotencyReceipt> {
        if let Some(r) = self.receipts.get(key) {
            return Some(r.clone());
        }
        let committed = lock(&self.store.inner.coordinator.committed);
        committed
            .zones
            .get(&self.zone_id)
            .and_then(|z| z.receipts.get(key))
            .cloned()
    }

    fn check_zone(&self, zone_id: &str) -> StoreResult<()> {
        if zone_id == self.zone_id {
            Ok(())
        } else {
            Err(StoreError::Invalid(
                "record belongs to another zone than the unit of work".into(),
            ))
        }
    }
}

#[async_trait]
impl CoordinatorTx for MemoryTx {
    fn zone_id(&self) -> &str {
        &self.zone_id
    }

    async fn get_session(&mut self, id: &str) -> StoreResult<Option<Session>> {
        Ok(match self.sessions.get(id) {
            Some(s) => Some(s.clone()),
            None => self.committed_session(id),
        })
    }

    async fn children(&mut self, parent_id: &str) -> StoreResult<Vec<Session>> {
        Ok(self.sessions_where(|s| s.parent_id.as_deref() == Some(parent_id)))
    }

    async fn count_live_sessions(
        &mut self,
        application_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let live = self.sessions_where(|s| {
            application_id.is_none_or(|a| s.application_id == a) && s.holds_slot(now)
        });
        Ok(live.len() as u64)
    }

    async fn insert_session(&mut self, session: &Session) -> StoreResult<()> {
        self.check_zone(&session.zone_id)?;
        let id = &session.agent_session_id;
        let taken = self.sessions.contains_key(id)
            || lock(&self.store.inner.coordinator.committed)
                .session_zone
                .contains_key(id);
        if taken {
            return Err(StoreError::conflict("session_id"));
        }
        self.sessions.insert(id.clone(), session.clone());
        Ok(())
    }

    async fn update_session(&mut self, session: &Session) -> StoreResult<()> {
        self.check_zone(&session.zone_id)?;
        let id = &session.agent_session_id;
        let Some(mut row) = self.get_session(id).await? else {
            return Err(StoreError::not_found("session"));
        };
        apply_session_update(&mut row, session);
        self.sessions.insert(id.clone(), row);
        Ok(())
    }

    async fn get_edge(&mut self, id: &str) -> StoreResult<Option<DelegationEdge>> {
        Ok(match self.edges.get(id) {
            Some(e) => Some(e.clone()),
            None => self.committed_edge(id),
        })
    }

    async fn session_edges(
        &mut self,
        session_id: &str,
        inbound: bool,
    ) -> StoreResult<Vec<DelegationEdge>> {
        Ok(self.edges_where(|e| {
            if inbound {
                e.target_session_id == session_id
            } else {
                e.source_session_id == session_id
            }
        }))
    }

    async fn live_edges(&mut self, now: DateTime<Utc>) -> StoreResult<Vec<DelegationEdge>> {
        Ok(self.edges_where(|e| e.is_live(now)))
    }

    async fn insert_edge(&mut self, edge: &DelegationEdge) -> StoreResult<()> {
        self.check_zone(&edge.zone_id)?;
        let taken = self.edges.contains_key(&edge.id)
            || lock(&self.store.inner.coordinator.committed)
                .edge_zone
                .contains_key(&edge.id);
        if taken {
            return Err(StoreError::conflict("delegation_edge_id"));
        }
        self.edges.insert(edge.id.clone(), edge.clone());
        Ok(())
    }

    async fn update_edge(&mut self, edge: &DelegationEdge) -> StoreResult<()> {
        self.check_zone(&edge.zone_id)?;
        let Some(mut row) = self.get_edge(&edge.id).await? else {
            return Err(StoreError::not_found("delegation_edge"));
        };
        row.status = edge.status;
        row.edge_version = edge.edge_version;
        row.revoked_at = edge.revoked_at;
        self.edges.insert(edge.id.clone(), row);
        Ok(())
    }

    async fn bump_epoch(&mut self) -> StoreResult<i64> {
        let current = match self.epoch {
            Some(e) => e,
            None => lock(&self.store.inner.coordinator.committed)
                .zones
                .get(&self.zone_id)
                .map_or(0, |z| z.epoch),
        };
        let next = current
            .checked_add(1)
            .ok_or(StoreError::LimitExceeded("graph epoch"))?;
        self.epoch = Some(next);
        Ok(next)
    }

    async fn get_receipt(
        &mut self,
        operation: IdempotentOperation,
        scope_id: &str,
        key_digest: &[u8; 32],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<IdempotencyReceipt>> {
        let key = (operation, scope_id.to_owned(), *key_digest);
        Ok(self.receipt(&key).filter(|r| r.expires_at > now))
    }

    async fn count_receipts(
        &mut self,
        operation: IdempotentOperation,
        scope_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let wanted = |r: &IdempotencyReceipt| {
            r.operation == operation && r.scope_id == scope_id && r.expires_at > now
        };
        let mut count = self.receipts.values().filter(|r| wanted(r)).count() as u64;
        let committed = lock(&self.store.inner.coordinator.committed);
        if let Some(zone) = committed.zones.get(&self.zone_id) {
            count += zone
                .receipts
                .iter()
                .filter(|(k, r)| !self.receipts.contains_key(*k) && wanted(r))
                .count() as u64;
        }
        Ok(count)
    }

    async fn put_receipt(&mut self, receipt: &IdempotencyReceipt) -> StoreResult<()> {
        self.check_zone(&receipt.zone_id)?;
        let key = receipt_key(receipt);
        // An existing receipt blocks the key until it expires (judged at the new receipt's
        // creation); an expired one is replaced.
        if self
            .receipt(&key)
            .is_some_and(|r| r.expires_at > receipt.created_at)
        {
            return Err(StoreError::conflict("idempotency_receipt"));
        }
        self.receipts.insert(key, receipt.clone());
        Ok(())
    }

    async fn enqueue(&mut self, message: &OutboxMessage) -> StoreResult<String> {
        if let Some(key) = &message.dedupe_key {
            if let Some(p) = self.outbox.iter().find(|p| {
                p.message.stream == message.stream && p.message.dedupe_key.as_ref() == Some(key)
            }) {
                return Ok(p.id.clone());
            }
            if let Some(id) = lock(&self.store.inner.outbox).coalesced(message) {
                return Ok(id.to_owned());
            }
        }
        let id = self.store.inner.ids.next_id();
        self.outbox.push(PendingMessage {
            id: id.clone(),
            message: message.clone(),
            created_at: self.store.inner.clock.now(),
        });
        Ok(id)
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        let this = *self;
        let inner = &this.store.inner;
        // Lock order: coordinator state, then outbox. Both are held while publishing, so no
        // reader sees the change without its messages or the other way round.
        let mut committed = lock(&inner.coordinator.committed);
        // Ids are unique over all zones; another zone may have taken one since it was
        // checked. Refuse the whole commit rather than publish half of it.
        for id in this.sessions.keys() {
            if committed
                .session_zone
                .get(id)
                .is_some_and(|z| z != &this.zone_id)
            {
                return Err(StoreError::conflict("session_id"));
            }
        }
        for id in this.edges.keys() {
            if committed
                .edge_zone
                .get(id)
                .is_some_and(|z| z != &this.zone_id)
            {
                return Err(StoreError::conflict("delegation_edge_id"));
            }
        }
        let mut outbox = lock(&inner.outbox);
        let Committed {
            zones,
            session_zone,
            edge_zone,
        } = &mut *committed;
        let zone = zones.entry(this.zone_id.clone()).or_default();
        for (id, s) in this.sessions {
            session_zone.insert(id.clone(), this.zone_id.clone());
            zone.sessions.insert(id, s);
        }
        for (id, e) in this.edges {
            edge_zone.insert(id.clone(), this.zone_id.clone());
            zone.edges.insert(id, e);
        }
        if let Some(epoch) = this.epoch {
            zone.epoch = epoch;
        }
        zone.receipts.extend(this.receipts);
        for p in this.outbox {
            // A message enqueued outside any unit of work with the same dedupe key since it
            // was checked wins; this one coalesces into it, as `ON CONFLICT DO NOTHING` would.
            if outbox.coalesced(&p.message).is_none() {
                outbox.insert_new(p.id, p.message, p.created_at);
            }
        }
        // `this._zone_lock` is dropped on return, after the state is published.
        Ok(())
    }
}

impl MemoryStore {
    /// Run `f` on each zone's committed state while holding that zone's unit-of-work lock
    /// (so the module's invariant holds: only a lock holder changes a zone), until `budget`
    /// is spent; `f` returns how much it used. Returns the total used.
    async fn purge_zones(
        &self,
        budget: u32,
        mut f: impl FnMut(&mut Committed, &str, usize) -> usize + Send,
    ) -> StoreResult<u64> {
        if budget == 0 {
            return Err(StoreError::Invalid("limit must be at least 1".into()));
        }
        let mut left = usize::try_from(budget).unwrap_or(usize::MAX);
        let zones: Vec<String> = {
            let committed = lock(&self.inner.coordinator.committed);
            let mut z: Vec<String> = committed.zones.keys().cloned().collect();
            z.sort();
            z
        };
        let mut used = 0u64;
        for zone in zones {
            if left == 0 {
                break;
            }
            let zone_lock = {
                let mut locks = lock(&self.inner.coordinator.locks);
                Arc::clone(locks.entry(zone.clone()).or_default())
            };
            let _guard = zone_lock.lock_owned().await;
            let mut committed = lock(&self.inner.coordinator.committed);
            let n = f(&mut committed, &zone, left).min(left);
            left -= n;
            used += n as u64;
        }
        Ok(used)
    }
}

/// Delete up to `left` retired edges of `zone` (see `purge_retired_edges`).
fn purge_edges_in(c: &mut Committed, zone: &str, before: DateTime<Utc>, left: usize) -> usize {
    let Some(z) = c.zones.get_mut(zone) else {
        return 0;
    };
    let doomed: Vec<String> = z
        .edges
        .values()
        .filter(|e| e.status != EdgeStatus::Active && retired_at(e) < before)
        .filter(|e| {
            !z.edges.values().any(|c| {
                c.status == EdgeStatus::Active && c.parent_edge_id.as_deref() == Some(&e.id)
            })
        })
        .take(left)
        .map(|e| e.id.clone())
        .collect();
    delete_edges(z, &mut c.edge_zone, &doomed);
    doomed.len()
}

/// Delete `ids` from a zone, clearing the parent link of edges that named one (Postgres's
/// `ON DELETE SET NULL`).
fn delete_edges(z: &mut ZoneData, edge_zone: &mut HashMap<String, String>, ids: &[String]) {
    for id in ids {
        z.edges.remove(id);
        edge_zone.remove(id);
    }
    for e in z.edges.values_mut() {
        if e.parent_edge_id.as_ref().is_some_and(|p| ids.contains(p)) {
            e.parent_edge_id = None;
        }
    }
}

/// Delete up to `left` retired sessions of `zone` (see `purge_retired_sessions`).
fn purge_sessions_in(c: &mut Committed, zone: &str, before: DateTime<Utc>, left: usize) -> usize {
    let Some(z) = c.zones.get_mut(zone) else {
        return 0;
    };
    let mut retired: Vec<(DateTime<Utc>, String)> = z
        .sessions
        .values()
        .filter(|s| s.status.is_terminal() && s.terminated_at.is_some_and(|t| t < before))
        .filter(|s| {
            let id = s.agent_session_id.as_str();
            !z.sessions
                .values()
                .any(|c| c.parent_id.as_deref() == Some(id))
                && !z.edges.values().any(|e| {
                    e.status == EdgeStatus::Active
                        && (e.source_session_id == id || e.target_session_id == id)
                })
        })
        .map(|s| {
            (
                s.terminated_at.unwrap_or(before),
                s.agent_session_id.clone(),
            )
        })
        .collect();
    retired.sort();
    retired.truncate(left);
    let ids: Vec<String> = retired.into_iter().map(|(_, id)| id).collect();
    // Their edges go with them (`ON DELETE CASCADE`).
    let edges: Vec<String> = z
        .edges
        .values()
        .filter(|e| ids.contains(&e.source_session_id) || ids.contains(&e.target_session_id))
        .map(|e| e.id.clone())
        .collect();
    delete_edges(z, &mut c.edge_zone, &edges);
    for id in &ids {
        z.sessions.remove(id);
        c.session_zone.remove(id);
    }
    ids.len()
}

#[async_trait]
impl CoordinatorStore for MemoryStore {
    async fn begin(&self, zone_id: &str) -> StoreResult<Box<dyn CoordinatorTx>> {
        let zone_lock = {
            let mut locks = lock(&self.inner.coordinator.locks);
            Arc::clone(locks.entry(zone_id.to_owned()).or_default())
        };
        let guard = zone_lock.lock_owned().await;
        Ok(Box::new(MemoryTx {
            store: self.clone(),
            zone_id: zone_id.to_owned(),
            _zone_lock: guard,
            sessions: BTreeMap::new(),
            edges: BTreeMap::new(),
            epoch: None,
            receipts: HashMap::new(),
            outbox: Vec::new(),
        }))
    }

    async fn get_session(&self, zone_id: &str, id: &str) -> StoreResult<Option<Session>> {
        let committed = lock(&self.inner.coordinator.committed);
        Ok(committed
            .zones
            .get(zone_id)
            .and_then(|z| z.sessions.get(id))
            .cloned())
    }

    async fn get_edge(&self, zone_id: &str, id: &str) -> StoreResult<Option<DelegationEdge>> {
        let committed = lock(&self.inner.coordinator.committed);
        Ok(committed
            .zones
            .get(zone_id)
            .and_then(|z| z.edges.get(id))
            .cloned())
    }

    async fn graph_epoch(&self, zone_id: &str) -> StoreResult<i64> {
        let committed = lock(&self.inner.coordinator.committed);
        Ok(committed.zones.get(zone_id).map_or(0, |z| z.epoch))
    }

    async fn list_sessions(
        &self,
        zone_id: &str,
        filter: &SessionFilter,
        page: &IdPage,
    ) -> StoreResult<Page<Session>> {
        if page.limit == 0 {
            return Err(StoreError::Invalid("page limit must be at least 1".into()));
        }
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        let committed = lock(&self.inner.coordinator.committed);
        let Some(zone) = committed.zones.get(zone_id) else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let upper = match &page.after_id {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Unbounded,
        };
        let below = zone.sessions.range::<str, _>((Bound::Unbounded, upper));
        let items: Vec<Session> = below
            .rev()
            .map(|(_, s)| s)
            .filter(|s| matches_filter(s, filter))
            .take(limit)
            .cloned()
            .collect();
        let next = match items.last() {
            Some(last) if items.len() == limit => Some(Cursor {
                created_at: last.started_at,
                id: last.agent_session_id.clone(),
            }),
            _ => None,
        };
        Ok(Page { items, next })
    }

    async fn list_edges(
        &self,
        zone_id: &str,
        filter: &EdgeFilter,
        page: &IdPage,
    ) -> StoreResult<Page<DelegationEdge>> {
        if page.limit == 0 {
            return Err(StoreError::Invalid("page limit must be at least 1".into()));
        }
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        let committed = lock(&self.inner.coordinator.committed);
        let Some(zone) = committed.zones.get(zone_id) else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let upper = match &page.after_id {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Unbounded,
        };
        let items: Vec<DelegationEdge> = zone
            .edges
            .range::<str, _>((Bound::Unbounded, upper))
            .rev()
            .map(|(_, e)| e)
            .filter(|e| filter.matches(e))
            .take(limit)
            .cloned()
            .collect();
        let next = match items.last() {
            Some(last) if items.len() == limit => Some(Cursor {
                created_at: last.created_at,
                id: last.id.clone(),
            }),
            _ => None,
        };
        Ok(Page { items, next })
    }

    async fn session_edges(
        &self,
        zone_id: &str,
        session_id: &str,
        inbound: bool,
    ) -> StoreResult<Vec<DelegationEdge>> {
        let committed = lock(&self.inner.coordinator.committed);
        Ok(committed
            .zones
            .get(zone_id)
            .map(|z| {
                z.edges
                    .values()
                    .filter(|e| {
                        if inbound {
                            e.target_session_id == session_id
                        } else {
                            e.source_session_id == session_id
                        }
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn expired_tasks_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<ZoneRef>> {
        let committed = lock(&self.inner.coordinator.committed);
        let due = committed
            .zones
            .iter()
            .flat_map(|(zone, z)| {
                z.sessions.values().filter_map(move |s| {
                    let open = matches!(s.status, SessionStatus::Active | SessionStatus::Suspended);
                    (s.lifecycle == Lifecycle::Task
                        && open
                        && task_end(s).is_some_and(|e| e <= now))
                    .then(|| (s.started_at, zone.clone(), s.agent_session_id.clone()))
                })
            })
            .collect();
        first_due(due, limit)
    }

    async fn lapsed_leases_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<ZoneRef>> {
        let committed = lock(&self.inner.coordinator.committed);
        let due = committed
            .zones
            .iter()
            .flat_map(|(zone, z)| {
                z.sessions.values().filter_map(move |s| {
                    let deadline = s.heartbeat_deadline_at?;
                    (s.lifecycle == Lifecycle::Service
                        && s.status == SessionStatus::Active
                        && deadline <= now)
                        .then(|| (deadline, zone.clone(), s.agent_session_id.clone()))
                })
            })
            .collect();
        first_due(due, limit)
    }

    async fn expired_edges_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<ZoneRef>> {
        let committed = lock(&self.inner.coordinator.committed);
        let due = committed
            .zones
            .iter()
            .flat_map(|(zone, z)| {
                z.edges
                    .values()
                    .filter(move |e| e.status == EdgeStatus::Active && e.expires_at <= now)
                    .map(move |e| (e.expires_at, zone.clone(), e.id.clone()))
            })
            .collect();
        first_due(due, limit)
    }

    async fn purge_retired_edges(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        self.purge_zones(limit, |c, zone, left| purge_edges_in(c, zone, before, left))
            .await
    }

    async fn purge_retired_sessions(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        self.purge_zones(limit, |c, zone, left| {
            purge_sessions_in(c, zone, before, left)
        })
        .await
    }

    async fn purge_expired_receipts(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        self.purge_zones(limit, |c, zone, left| {
            let Some(z) = c.zones.get_mut(zone) else {
                return 0;
            };
            let doomed: Vec<ReceiptKey> = z
                .receipts
                .iter()
                .filter(|(_, r)| r.expires_at <= now)
                .take(left)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &doomed {
                z.receipts.remove(k);
            }
            doomed.len()
        })
        .await
    }
}
