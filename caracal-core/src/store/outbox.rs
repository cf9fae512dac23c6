//! The transactional outbox.
//!
//! Producers never publish control-plane events from business logic: they write an outbox
//! row in the same transaction as the change, and a dispatcher later publishes it to its
//! stream with the origin signature. Delivery is at least once (a crash between publish and
//! [`OutboxStore::mark_dispatched`] republishes after the lease), and every message carries
//! its `outbox_id` so consumers can dedupe.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::StoreResult;

/// A message to publish once its transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Target stream, e.g. `caracal.sessions.revoke`.
    pub stream: String,
    /// Field map in publish order (all strings; `outbox_id` and `_sig` are added by the
    /// dispatcher).
    pub fields: Vec<(String, String)>,
    /// Business dedupe key: a second message with the same `(stream, dedupe_key)` is
    /// coalesced into the first (the Coordinator's `ON CONFLICT DO NOTHING`).
    pub dedupe_key: Option<String>,
}

impl OutboxMessage {
    /// A message with no dedupe key.
    pub fn new(stream: impl Into<String>, fields: Vec<(String, String)>) -> Self {
        Self {
            stream: stream.into(),
            fields,
            dedupe_key: None,
        }
    }

    /// Set the dedupe key.
    pub fn dedupe(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }
}

/// A stored outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// UUIDv7 id; becomes the `outbox_id` field.
    pub id: String,
    /// The message.
    pub message: OutboxMessage,
    /// Claims so far.
    pub attempts: i32,
    /// Not claimable before this instant.
    pub available_at: DateTime<Utc>,
    /// Lease expiry of the current claim.
    pub locked_until: Option<DateTime<Utc>>,
    /// The last publish error.
    pub last_error: Option<String>,
    /// When published.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// When given up on (never retried automatically).
    pub dead_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// What an operator (and `/ready`) needs to know about the outbox. Ages are `now` minus the
/// row's `created_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Rows neither dispatched nor dead.
    pub pending: u64,
    /// Dead rows.
    pub dead: u64,
    /// Age of the oldest pending row.
    pub oldest_pending_age: Option<Duration>,
    /// Age of the oldest dead row.
    pub oldest_dead_age: Option<Duration>,
}

/// The outbox.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Enqueue outside any other change (e.g. the audit fallback when the stream is down).
    /// Returns the row id, or the existing row's id when the dedupe key coalesced it. The new
    /// row is created and available at `now`.
    async fn enqueue(&self, message: &OutboxMessage, now: DateTime<Utc>) -> StoreResult<String>;
    /// Claim up to `limit` rows that are due (`available_at <= now`, not dispatched, not dead,
    /// not under an unexpired lease: a lease ends exactly at `locked_until`), oldest first
    /// (`available_at`, then `id`), leasing them to `worker` until `now + lease` and
    /// incrementing `attempts`. Concurrent claimers never receive the same row while its
    /// lease holds. A lease that is not positive is `Invalid`.
    async fn claim(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<OutboxRow>>;
    /// Mark published (and release the lease). `NotFound` if missing; marking twice keeps
    /// the first `dispatched_at`.
    async fn mark_dispatched(&self, id: &str, now: DateTime<Utc>) -> StoreResult<()>;
    /// Record a failed publish: release the lease, keep `error` as `last_error`, and retry at
    /// `retry_at` (the new `available_at`), or mark dead at `now` when `retry_at` is `None`.
    /// `NotFound` if missing; a row already dispatched or dead is left unchanged.
    async fn mark_failed(
        &self,
        id: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// A row by id.
    async fn get_outbox(&self, id: &str) -> StoreResult<Option<OutboxRow>>;
    /// Counts and ages.
    async fn outbox_stats(&self, now: DateTime<Utc>) -> StoreResult<OutboxStats>;
    /// Bring a dead row back to pending with zero attempts; `NotFound` if it is not dead.
    async fn requeue_dead(&self, id: &str, now: DateTime<Utc>) -> StoreResult<()>;
    /// Delete at most `limit` rows dispatched before `before` (the retention cleaner). Pending
    /// and dead rows are never deleted. Returns the count deleted (at least 1 is required of
    /// `limit`).
    async fn purge_dispatched(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64>;
}
