//! The transactional outbox.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::{MemoryStore, add, lock};
use crate::ids::IdGen;
use crate::store::outbox::{OutboxMessage, OutboxRow, OutboxStats, OutboxStore};
use crate::store::{StoreError, StoreResult};

/// How long a dispatched row is kept before the store forgets it (the reference's retention
/// cleaner deletes published rows after seven days). Pending and dead rows are never dropped.
pub const DISPATCHED_RETENTION: Duration = Duration::days(7);

/// A position in an ordered index: `(instant, row id)`.
type Position = (DateTime<Utc>, String);

/// Outbox rows with the indexes the dispatcher needs.
///
/// INVARIANT: every row is in exactly one of `pending` (neither dispatched nor dead, keyed by
/// `created_at`, for the stats), `dead` (keyed by `created_at`) or `dispatched` (keyed by
/// `dispatched_at`, for retention); every pending row is also in `ready`, keyed by its
/// current `available_at` (the claim order); and `dedupe` maps a `(stream, dedupe_key)` to
/// the row that holds it.
#[derive(Default)]
pub(super) struct Tables {
    rows: HashMap<String, OutboxRow>,
    pending: BTreeSet<Position>,
    ready: BTreeSet<Position>,
    dead: BTreeSet<Position>,
    dispatched: BTreeSet<Position>,
    dedupe: HashMap<(String, String), String>,
}

impl Tables {
    /// The id of the row a message would be coalesced into, if any.
    pub(super) fn coalesced(&self, message: &OutboxMessage) -> Option<&str> {
        let key = message.dedupe_key.as_ref()?;
        self.dedupe
            .get(&(message.stream.clone(), key.clone()))
            .map(String::as_str)
    }

    /// Enqueue a message at `now`, or return the id of the row it coalesces into.
    pub(super) fn enqueue(
        &mut self,
        ids: &dyn IdGen,
        message: &OutboxMessage,
        now: DateTime<Utc>,
    ) -> String {
        if let Some(id) = self.coalesced(message) {
            return id.to_owned();
        }
        let id = ids.next_id();
        self.insert_new(id.clone(), message.clone(), now);
        id
    }

    /// Insert a row that [`Tables::coalesced`] found no match for, under a fresh id.
    pub(super) fn insert_new(&mut self, id: String, message: OutboxMessage, now: DateTime<Utc>) {
        if let Some(key) = &message.dedupe_key {
            self.dedupe
                .insert((message.stream.clone(), key.clone()), id.clone());
        }
        self.pending.insert((now, id.clone()));
        self.ready.insert((now, id.clone()));
        self.rows.insert(
            id.clone(),
            OutboxRow {
                id,
                message,
                attempts: 0,
                available_at: now,
                locked_until: None,
                last_error: None,
                dispatched_at: None,
                dead_at: None,
                created_at: now,
            },
        );
    }

    /// Forget rows dispatched at least [`DISPATCHED_RETENTION`] before `now`.
    fn prune(&mut self, now: DateTime<Utc>) {
        let Some(horizon) = now.checked_sub_signed(DISPATCHED_RETENTION) else {
            return;
        };
        while let Some((at, id)) = self.dispatched.first().cloned() {
            if at > horizon {
                break;
            }
            self.dispatched.pop_first();
            if let Some(row) = self.rows.remove(&id) {
                if let Some(key) = row.message.dedupe_key {
                    let slot = (row.message.stream, key);
                    if self.dedupe.get(&slot) == Some(&id) {
                        self.dedupe.remove(&slot);
                    }
                }
            }
        }
    }

    /// Forget at most `limit` rows dispatched strictly before `before`; returns how many.
    fn purge_before(&mut self, before: DateTime<Utc>, limit: usize) -> usize {
        let mut n = 0;
        while n < limit {
            let Some((at, id)) = self.dispatched.first().cloned() else {
                break;
            };
            if at >= before {
                break;
            }
            self.dispatched.pop_first();
            if let Some(row) = self.rows.remove(&id) {
                if let Some(key) = row.message.dedupe_key {
                    let slot = (row.message.stream, key);
                    if self.dedupe.get(&slot) == Some(&id) {
                        self.dedupe.remove(&slot);
                    }
                }
            }
            n += 1;
        }
        n
    }

    /// Move a pending row out of the pending indexes (it was published or given up on).
    fn leave_pending(&mut self, row: &OutboxRow) {
        self.pending.remove(&(row.created_at, row.id.clone()));
        self.ready.remove(&(row.available_at, row.id.clone()));
    }
}

#[async_trait]
impl OutboxStore for MemoryStore {
    async fn enqueue(&self, message: &OutboxMessage, now: DateTime<Utc>) -> StoreResult<String> {
        let mut t = lock(&self.inner.outbox);
        Ok(t.enqueue(self.inner.ids.as_ref(), message, now))
    }

    async fn claim(
        &self,
        _worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<OutboxRow>> {
        // A non-positive lease would hand a row out already expired, so a second claimer at
        // the same instant could take it too.
        if lease <= Duration::zero() {
            return Err(StoreError::Invalid("outbox lease must be positive".into()));
        }
        let until = add(now, lease)?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        // The whole claim runs under the table lock, so two claimers never see the same row
        // free: the second one finds it leased until `until`.
        let mut t = lock(&self.inner.outbox);
        t.prune(now);
        let due: Vec<String> = t
            .ready
            .iter()
            .take_while(|(available_at, _)| *available_at <= now)
            .filter(|(_, id)| {
                t.rows
                    .get(id)
                    .is_some_and(|r| r.locked_until.is_none_or(|l| l <= now))
            })
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let mut claimed = Vec::with_capacity(due.len());
        for id in due {
            if let Some(row) = t.rows.get_mut(&id) {
                row.attempts = row.attempts.saturating_add(1);
                row.locked_until = Some(until);
                claimed.push(row.clone());
            }
        }
        Ok(claimed)
    }

    async fn mark_dispatched(&self, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let mut t = lock(&self.inner.outbox);
        let Some(row) = t.rows.get(id).cloned() else {
            return Err(StoreError::not_found("outbox"));
        };
        if row.dispatched_at.is_some() {
            // At-least-once delivery: a second report of the same publish changes nothing.
            return Ok(());
        }
        t.leave_pending(&row);
        t.dead.remove(&(row.created_at, row.id.clone()));
        t.dispatched.insert((now, id.to_owned()));
        if let Some(row) = t.rows.get_mut(id) {
            row.dispatched_at = Some(now);
            row.locked_until = None;
            row.dead_at = None;
        }
        Ok(())
    }

    async fn mark_failed(
        &self,
        id: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut t = lock(&self.inner.outbox);
        let Some(row) = t.rows.get(id).cloned() else {
            return Err(StoreError::not_found("outbox"));
        };
        if row.dispatched_at.is_some() || row.dead_at.is_some() {
            // A late report from a worker whose lease lapsed must not undo a publish or
            // revive a dead row (only `requeue_dead` does that).
            return Ok(());
        }
        match retry_at {
            Some(at) => {
                t.ready.remove(&(row.available_at, row.id.clone()));
                t.ready.insert((at, row.id.clone()));
            }
            None => {
                t.leave_pending(&row);
                t.dead.insert((row.created_at, row.id.clone()));
            }
        }
        if let Some(row) = t.rows.get_mut(id) {
            row.last_error = Some(error.to_owned());
            row.locked_until = None;
            match retry_at {
                Some(at) => row.available_at = at,
                None => row.dead_at = Some(now),
            }
        }
        Ok(())
    }

    async fn get_outbox(&self, id: &str) -> StoreResult<Option<OutboxRow>> {
        Ok(lock(&self.inner.outbox).rows.get(id).cloned())
    }

    async fn outbox_stats(&self, now: DateTime<Utc>) -> StoreResult<OutboxStats> {
        let t = lock(&self.inner.outbox);
        Ok(OutboxStats {
            pending: t.pending.len() as u64,
            dead: t.dead.len() as u64,
            oldest_pending_age: t.pending.first().map(|(created, _)| now - *created),
            oldest_dead_age: t.dead.first().map(|(created, _)| now - *created),
        })
    }

    async fn requeue_dead(&self, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let mut t = lock(&self.inner.outbox);
        let created_at = match t.rows.get_mut(id) {
            Some(r) if r.dead_at.is_some() => {
                r.dead_at = None;
                r.attempts = 0;
                r.available_at = now;
                r.locked_until = None;
                r.created_at
            }
            _ => return Err(StoreError::not_found("dead_outbox")),
        };
        t.dead.remove(&(created_at, id.to_owned()));
        t.pending.insert((created_at, id.to_owned()));
        t.ready.insert((now, id.to_owned()));
        Ok(())
    }

    async fn purge_dispatched(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        if limit == 0 {
            return Err(StoreError::Invalid("limit must be at least 1".into()));
        }
        let mut t = lock(&self.inner.outbox);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(t.purge_before(before, limit) as u64)
    }
}
