//! Sessions, delegation edges, per-zone graph epochs and idempotency receipts.
//!
//! The Coordinator's rules (narrowing, cycle refusal, capacity, cascades) read several records
//! and then change several, and must not interleave with another change in the same zone. The
//! store therefore offers a **per-zone unit of work**: [`CoordinatorStore::begin`] returns a
//! [`CoordinatorTx`] that holds the zone's lock (an advisory transaction lock in Postgres, a
//! mutex in memory) until it is committed or dropped. Reads inside the unit of work see its own
//! writes; dropping it without [`CoordinatorTx::commit`] discards every write, including the
//! outbox messages and the epoch bump, so an event is published iff its change committed.
//!
//! Hot-path readers (the STS re-reading a session or an edge at every exchange) use the plain
//! read methods of [`CoordinatorStore`], which take no lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::outbox::OutboxMessage;
use super::{Page, StoreResult};
use crate::model::delegation::DelegationEdge;
use crate::model::session::{Lifecycle, Session, SessionStatus};

/// Filters of the session list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Only this status.
    pub status: Option<SessionStatus>,
    /// Only this lifecycle.
    pub lifecycle: Option<Lifecycle>,
    /// Only sessions of this application.
    pub application_id: Option<String>,
    /// Only sessions carrying this label.
    pub label: Option<String>,
    /// Only children of this session.
    pub parent_id: Option<String>,
}

/// Filters of the edge list (every filter set must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeFilter {
    /// Only edges live at this instant (active and unexpired).
    pub live_at: Option<DateTime<Utc>>,
    /// Only edges this application issued or received (the reader rule of a non-admin).
    pub party_application_id: Option<String>,
    /// Only edges leaving this session.
    pub source_session_id: Option<String>,
    /// Only edges entering this session.
    pub target_session_id: Option<String>,
}

impl EdgeFilter {
    /// Whether `edge` passes every filter set.
    pub fn matches(&self, edge: &DelegationEdge) -> bool {
        self.live_at.is_none_or(|t| edge.is_live(t))
            && self.party_application_id.as_ref().is_none_or(|a| {
                &edge.issuer_application_id == a || &edge.receiver_application_id == a
            })
            && self
                .source_session_id
                .as_ref()
                .is_none_or(|s| &edge.source_session_id == s)
            && self
                .target_session_id
                .as_ref()
                .is_none_or(|s| &edge.target_session_id == s)
    }
}

/// A Coordinator list page request: ordered by `id DESC` (UUIDv7, so newest first), the
/// cursor being the last id of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPage {
    /// Maximum rows.
    pub limit: u32,
    /// Start strictly after (below) this id.
    pub after_id: Option<String>,
}

/// Which idempotent operation a receipt belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdempotentOperation {
    /// `POST /zones/{zone}/agents` (`session.start.v2`).
    SessionStart,
    /// `POST /zones/{zone}/delegations` (`delegation.create.v2`).
    DelegationCreate,
}

impl IdempotentOperation {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdempotentOperation::SessionStart => "session.start.v2",
            IdempotentOperation::DelegationCreate => "delegation.create.v2",
        }
    }
}

/// A stored idempotency receipt. Keys are stored only as HMAC digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyReceipt {
    /// The operation.
    pub operation: IdempotentOperation,
    /// Zone.
    pub zone_id: String,
    /// `application_id` (session start) or `issuer_application_id` (delegation create).
    pub scope_id: String,
    /// HMAC-SHA256 of the `Idempotency-Key`.
    pub key_digest: [u8; 32],
    /// SHA-256 of the canonical normalised request.
    pub request_digest: [u8; 32],
    /// The id of what the request created (session or edge), to check it is still live.
    pub result_id: String,
    /// The 2xx status returned.
    pub response_status: u16,
    /// The JSON body returned (≤64 KiB).
    pub response_json: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry (retention).
    pub expires_at: DateTime<Utc>,
}

/// A row named by its zone: what the cross-zone sweeps of [`crate::jobs`] find, before they
/// open that zone's unit of work to act on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneRef {
    /// The row's zone.
    pub zone_id: String,
    /// The session or edge id.
    pub id: String,
}

/// Sessions, edges, epochs and receipts.
///
/// ## Sweep and retention methods
///
/// The `*_due` finders read across every zone without a lock: their answer is a candidate
/// list, and a sweeper re-reads each candidate inside its zone's unit of work before acting
/// (another replica, or a request, may have changed it in between). The `purge_*` methods
/// delete only rows no live operation reads or writes any more (terminal, old, childless),
/// in bounded batches; each returns how many rows it deleted, so a caller repeats while a
/// batch comes back full.
#[async_trait]
pub trait CoordinatorStore: Send + Sync {
    /// Begin a unit of work on `zone_id`, waiting for any other unit of work on that zone.
    async fn begin(&self, zone_id: &str) -> StoreResult<Box<dyn CoordinatorTx>>;
    /// A session by id (no lock).
    async fn get_session(&self, zone_id: &str, id: &str) -> StoreResult<Option<Session>>;
    /// A delegation edge by id (no lock).
    async fn get_edge(&self, zone_id: &str, id: &str) -> StoreResult<Option<DelegationEdge>>;
    /// The zone's delegation graph epoch (0 when the zone has none yet).
    async fn graph_epoch(&self, zone_id: &str) -> StoreResult<i64>;
    /// Sessions of a zone, `id DESC`.
    async fn list_sessions(
        &self,
        zone_id: &str,
        filter: &SessionFilter,
        page: &IdPage,
    ) -> StoreResult<Page<Session>>;
    /// Edges of a zone passing `filter`, `id DESC`, paged like [`Self::list_sessions`] (the
    /// cursor's time is the last edge's `created_at`).
    async fn list_edges(
        &self,
        zone_id: &str,
        filter: &EdgeFilter,
        page: &IdPage,
    ) -> StoreResult<Page<DelegationEdge>>;
    /// Edges whose target (`inbound = true`) or source is `session_id`, every status.
    async fn session_edges(
        &self,
        zone_id: &str,
        session_id: &str,
        inbound: bool,
    ) -> StoreResult<Vec<DelegationEdge>>;
    /// Task sessions of every zone, active or suspended, whose TTL ran out at `now`
    /// (`started_at + ttl_seconds <= now`, the instant [`Session::is_live`] turns false),
    /// earliest start first, at most `limit` (at least 1).
    async fn expired_tasks_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<ZoneRef>>;
    /// Active service sessions of every zone whose lease lapsed at `now`
    /// (`heartbeat_deadline_at <= now`), earliest deadline first, at most `limit`.
    async fn lapsed_leases_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<ZoneRef>>;
    /// Edges of every zone still `active` but expired at `now` (`expires_at <= now`),
    /// earliest expiry first, at most `limit`.
    async fn expired_edges_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<ZoneRef>>;
    /// Delete at most `limit` `revoked` or `expired` edges retired before `before` (their
    /// `revoked_at`, or `expires_at` for an expired edge) that no `active` edge names as its
    /// parent. Edges that named a deleted edge as parent keep a `NULL` parent. Returns the
    /// count deleted.
    async fn purge_retired_edges(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64>;
    /// Delete at most `limit` `terminated` or `expired` sessions whose `terminated_at` is
    /// before `before`, that have no child session (any status) and no `active` edge at
    /// either end. Their (non-active) edges go with them. Returns the count deleted.
    async fn purge_retired_sessions(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64>;
    /// Delete at most `limit` idempotency receipts expired at `now` (`expires_at <= now`).
    /// Returns the count deleted.
    async fn purge_expired_receipts(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64>;
}

/// A per-zone unit of work. Dropping it without committing rolls everything back.
///
/// Every record written through it must belong to its zone (`Invalid` otherwise). Outbox
/// messages it enqueues are created at the store's clock (Postgres: the transaction's
/// `now()`). A commit that fails (e.g. `Conflict` on an id another zone committed first)
/// publishes nothing.
#[async_trait]
pub trait CoordinatorTx: Send {
    /// The zone this unit of work holds.
    fn zone_id(&self) -> &str;
    /// A session by id.
    async fn get_session(&mut self, id: &str) -> StoreResult<Option<Session>>;
    /// Direct children of a session, every status.
    async fn children(&mut self, parent_id: &str) -> StoreResult<Vec<Session>>;
    /// Sessions holding a live slot at `now` (tasks within TTL, services with a live lease
    /// or suspended), optionally only of one application. Terminated and expired sessions
    /// never count; a task counts while active or suspended and `started_at + ttl > now`.
    async fn count_live_sessions(
        &mut self,
        application_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Insert a session. Unique: `session_id`.
    async fn insert_session(&mut self, session: &Session) -> StoreResult<()>;
    /// Replace a session's mutable fields (labels, status, TTL, metadata, termination,
    /// heartbeat and lease fields, child counts); the id, zone, application, parent, subject
    /// record, lifecycle, depth and `started_at` are kept. `NotFound` if missing.
    async fn update_session(&mut self, session: &Session) -> StoreResult<()>;
    /// An edge by id.
    async fn get_edge(&mut self, id: &str) -> StoreResult<Option<DelegationEdge>>;
    /// Edges whose target (`inbound = true`) or source is `session_id`, every status.
    async fn session_edges(
        &mut self,
        session_id: &str,
        inbound: bool,
    ) -> StoreResult<Vec<DelegationEdge>>;
    /// Every edge of the zone that is live at `now`.
    async fn live_edges(&mut self, now: DateTime<Utc>) -> StoreResult<Vec<DelegationEdge>>;
    /// Insert an edge. Unique: `delegation_edge_id`.
    async fn insert_edge(&mut self, edge: &DelegationEdge) -> StoreResult<()>;
    /// Replace an edge's mutable fields (status, version, revoked_at); `NotFound` if missing.
    async fn update_edge(&mut self, edge: &DelegationEdge) -> StoreResult<()>;
    /// Increment the zone's graph epoch; returns the new value (1 for the first bump).
    async fn bump_epoch(&mut self) -> StoreResult<i64>;
    /// The receipt for `(operation, scope_id, key_digest)` in this zone, if unexpired at `now`
    /// (`expires_at > now`).
    async fn get_receipt(
        &mut self,
        operation: IdempotentOperation,
        scope_id: &str,
        key_digest: &[u8; 32],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<IdempotencyReceipt>>;
    /// Unexpired receipts of `(operation, scope_id)` at `now` (the per-scope cap).
    async fn count_receipts(
        &mut self,
        operation: IdempotentOperation,
        scope_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Store a receipt, replacing one with the same key that has expired by the new
    /// receipt's `created_at`. Unique: `idempotency_receipt`.
    async fn put_receipt(&mut self, receipt: &IdempotencyReceipt) -> StoreResult<()>;
    /// Enqueue an outbox message, published iff this unit of work commits. Returns the row id
    /// (the existing one when its dedupe key coalesced it).
    async fn enqueue(&mut self, message: &OutboxMessage) -> StoreResult<String>;
    /// Make every write of this unit of work durable and release the zone.
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}
