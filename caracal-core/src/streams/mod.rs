//! Redis Streams, as the services use them.
//!
//! Every asynchronous event in Caracal (audit events, revocations, invalidations, lifecycle)
//! travels on one of nine streams read through consumer groups. This module holds what is
//! common to every producer and consumer, written once:
//!
//! - [`names`]: the nine streams, their provisioned groups, intended bounds and dead-letter
//!   names, as one table;
//! - [`signature`]: the `_sig` origin signature (canonical form, sign, constant-time verify,
//!   and the accept-unsigned-or-verify policy);
//! - [`Streams`]: the operations the services use (`XADD`, `XGROUP CREATE … MKSTREAM`,
//!   `XREADGROUP`, `XACK`, `XAUTOCLAIM`, `XPENDING`, `XLEN`, `XRANGE`, `XDEL`, and the
//!   introspection the provisioner's verify step needs);
//! - [`MemoryStreams`]: the in-memory implementation, with Redis's consumer-group semantics
//!   (pending lists, delivery counts, idle times from the injected clock, claims);
//! - [`consumer`]: the consumer-group loop every service consumer runs (pending-list drain,
//!   idle-claim reaper, ack only after durable handling, dead letters, health);
//! - [`provision`]: create and verify the nine streams and their groups.
//! - [`relay`]: the outbox relay that publishes committed outbox rows, signed.
//!
//! The Redis backend (feature `redis`) implements the same trait; one contract suite
//! (`tests/contract/streams.rs`) runs against both.
//!
//! ## Semantics every implementation honours
//!
//! These follow Redis 7 and were checked against a live server:
//!
//! - Reading [`ReadFrom::New`] (`>`) advances the group's last-delivered id and puts each entry
//!   in the reader's pending list with one delivery.
//! - Reading [`ReadFrom::Pending`] (an explicit id) returns the reader's *own* pending entries
//!   after the cursor, increments their delivery count and resets their idle time. An entry that
//!   was deleted from the stream while pending comes back with empty fields
//!   ([`StreamEntry::is_deleted`]), and its count is left alone. Blocking never applies.
//! - [`Streams::autoclaim`] transfers idle entries to the claimer and increments their count;
//!   entries deleted from the stream are dropped from the pending list and reported in
//!   [`AutoClaim::deleted`] whatever their idle time.
//! - `XACK` on an unknown group or stream acknowledges nothing (0), while reads, claims and
//!   pending queries on one fail with [`StreamError::NoGroup`].
//! - Trimming and `XDEL` never touch pending lists: an entry can be pending and gone.
//!
//! Counts are `usize` and must be at least 1 ([`StreamError::InvalidArgument`] otherwise): an
//! unbounded read is never what a consumer wants, and Redis gives `COUNT 0` a different meaning
//! per command.

pub mod consumer;
pub mod dedupe;
mod fields;
mod id;
mod memory;
pub mod names;
pub mod provision;
pub mod relay;
pub mod signature;

use std::time::Duration;

pub use fields::Fields;
pub use id::{EntryId, ParseEntryIdError};
pub use memory::MemoryStreams;

/// An error from a [`Streams`] operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream or the consumer group does not exist (Redis `NOGROUP`).
    #[error("no such stream or consumer group: {stream} / {group}")]
    NoGroup {
        /// Stream name.
        stream: String,
        /// Group name.
        group: String,
    },
    /// The stream does not exist, for an operation that needs it to (`XINFO GROUPS`).
    #[error("no such stream: {stream}")]
    NoStream {
        /// Stream name.
        stream: String,
    },
    /// The key exists but does not hold a stream (Redis `WRONGTYPE`).
    #[error("key {key} does not hold a stream")]
    WrongType {
        /// The key.
        key: String,
    },
    /// The stream's last id is `u64::MAX-u64::MAX`; no further entry can be added.
    #[error("stream {stream} has exhausted its entry ids")]
    IdsExhausted {
        /// Stream name.
        stream: String,
    },
    /// The call itself is malformed (a zero count, an entry with no fields).
    #[error("invalid stream operation: {reason}")]
    InvalidArgument {
        /// What was wrong.
        reason: &'static str,
    },
    /// A reply carried an entry id that does not parse.
    #[error(transparent)]
    InvalidId(#[from] ParseEntryIdError),
    /// The backend could not be reached or is temporarily refusing work (connection refused or
    /// reset, pool timeout, `LOADING`, `BUSY`, `TRYAGAIN`). Retrying later can succeed.
    #[error("stream backend unavailable: {reason}")]
    Unavailable {
        /// What failed, without secrets.
        reason: String,
    },
    /// Any other backend error; retrying the same call will not help.
    #[error("stream backend error: {reason}")]
    Backend {
        /// What failed, without secrets.
        reason: String,
    },
}

impl StreamError {
    /// Whether the failure is transient: the caller should back off and retry, leaving any
    /// message unacknowledged, rather than dead-letter it.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StreamError::Unavailable { .. })
    }

    fn invalid(reason: &'static str) -> Self {
        StreamError::InvalidArgument { reason }
    }

    fn no_group(stream: &str, group: &str) -> Self {
        StreamError::NoGroup {
            stream: stream.to_owned(),
            group: group.to_owned(),
        }
    }
}

/// `Result` with [`StreamError`].
pub type StreamResult<T> = std::result::Result<T, StreamError>;

/// Trimming applied by an `XADD`. The default is none.
///
/// Plain length trimming ignores consumer groups: it can evict entries nobody has read. The
/// audit stream must never lose entries its ingest group has not acknowledged (SPEC §5.1), so
/// its producers either do not trim or trim by [`Trim::MinId`] at [`acknowledged_floor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trim {
    /// No trimming.
    #[default]
    None,
    /// Keep the newest `max` entries (`MAXLEN [~] max`).
    MaxLen {
        /// Entries to keep.
        max: u64,
        /// `~`: the backend may keep more than `max` (never fewer).
        approximate: bool,
    },
    /// Remove entries with an id below `min` (`MINID [~] min`).
    MinId {
        /// The smallest id to keep.
        min: EntryId,
        /// `~`: the backend may keep some entries below `min`.
        approximate: bool,
    },
}

/// Where a new consumer group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStart {
    /// `$`: only entries added after the group was created.
    Latest,
    /// `0`: the whole history still in the stream.
    Beginning,
}

/// The outcome of [`Streams::group_create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCreated {
    /// The group was created (and the stream too, if it did not exist).
    Created,
    /// The group already existed (`BUSYGROUP`); it was left exactly as it was.
    AlreadyExists,
}

/// What a group read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// `>`: entries never delivered to the group.
    New,
    /// An explicit id: the reader's own pending entries with an id strictly greater than this
    /// cursor. Start a drain at [`EntryId::MIN`] and continue from the last id returned.
    Pending(EntryId),
}

/// One stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry id.
    pub id: EntryId,
    /// The entry's fields; empty only for a pending entry whose payload was deleted.
    pub fields: Fields,
}

impl StreamEntry {
    /// Whether this is a pending entry whose payload is gone (deleted or trimmed).
    ///
    /// A real entry always has at least one field (`XADD` refuses an empty one), so empty
    /// fields are unambiguous.
    pub fn is_deleted(&self) -> bool {
        self.fields.is_empty()
    }
}

/// The result of one [`Streams::autoclaim`] call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AutoClaim {
    /// The cursor for the next call; [`EntryId::MIN`] when the whole pending list was scanned.
    pub next: EntryId,
    /// The entries claimed, now owned by the claimer with their delivery count incremented.
    pub entries: Vec<StreamEntry>,
    /// Pending entries found deleted from the stream; they were removed from the pending list.
    pub deleted: Vec<EntryId>,
}

/// A group's pending list in summary (`XPENDING <stream> <group>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PendingSummary {
    /// Entries delivered and not yet acknowledged.
    pub count: u64,
    /// Smallest pending id.
    pub min: Option<EntryId>,
    /// Largest pending id.
    pub max: Option<EntryId>,
    /// Consumers with at least one pending entry, by name (byte order).
    pub per_consumer: Vec<ConsumerPending>,
}

/// One consumer's share of a pending list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerPending {
    /// Consumer name.
    pub consumer: String,
    /// Its pending entries.
    pub pending: u64,
}

/// One pending entry (`XPENDING <stream> <group> <start> <end> <count> [consumer]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// Entry id.
    pub id: EntryId,
    /// The consumer that owns it.
    pub consumer: String,
    /// Time since it was last delivered or claimed (millisecond resolution).
    pub idle: Duration,
    /// How many times it was delivered (reads from the pending list and claims included).
    pub deliveries: u64,
}

/// One consumer group of a stream (`XINFO GROUPS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Consumers known to the group.
    pub consumers: u64,
    /// Entries in the group's pending list.
    pub pending: u64,
    /// The last id delivered to the group.
    pub last_delivered: EntryId,
    /// Entries in the stream not yet delivered to the group, when the backend can tell (Redis
    /// before 7 cannot, and Redis 7 cannot once deletions make it ambiguous).
    pub lag: Option<u64>,
}

/// The Redis Streams operations the services use. Object-safe: services hold an
/// `Arc<dyn Streams>`.
///
/// Stream and group names are passed as given; the nine names live in [`names`].
#[async_trait::async_trait]
pub trait Streams: Send + Sync {
    /// `XADD stream [trim] * fields…`: append an entry and return its id. `fields` must not
    /// be empty.
    async fn xadd_with(&self, stream: &str, fields: &Fields, trim: Trim) -> StreamResult<EntryId>;

    /// `XADD` without trimming.
    async fn xadd(&self, stream: &str, fields: &Fields) -> StreamResult<EntryId> {
        self.xadd_with(stream, fields, Trim::None).await
    }

    /// `XLEN`: entries in the stream (0 for a missing stream).
    async fn len(&self, stream: &str) -> StreamResult<u64>;

    /// `XRANGE stream start end [COUNT count]`, both bounds inclusive, oldest first. A missing
    /// stream, or `start > end`, gives an empty list.
    async fn range(
        &self,
        stream: &str,
        start: EntryId,
        end: EntryId,
        count: Option<usize>,
    ) -> StreamResult<Vec<StreamEntry>>;

    /// `XDEL`: delete entries, returning how many existed. Pending lists are not touched.
    async fn del(&self, stream: &str, ids: &[EntryId]) -> StreamResult<u64>;

    /// Whether the key exists and is a stream (`TYPE` is `stream`); another type is
    /// [`StreamError::WrongType`].
    async fn stream_exists(&self, stream: &str) -> StreamResult<bool>;

    /// `XGROUP CREATE stream group <start> MKSTREAM`. An existing group is reported as
    /// [`GroupCreated::AlreadyExists`] and left as it is.
    async fn group_create(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> StreamResult<GroupCreated>;

    /// `XINFO GROUPS`: the stream's groups in name order; [`StreamError::NoStream`] for a
    /// missing stream.
    async fn groups(&self, stream: &str) -> StreamResult<Vec<GroupInfo>>;

    /// `XREADGROUP GROUP group consumer COUNT count [BLOCK ms] STREAMS stream <from>`.
    ///
    /// With [`ReadFrom::New`] and `block` of `Some(d)`, `d > 0`, waits up to `d` for entries
    /// when none are ready, and returns an empty list on timeout. A zero or absent `block`
    /// never waits; unlike Redis's `BLOCK 0`, "wait forever" cannot be expressed. The consumer
    /// is created on first use.
    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        from: ReadFrom,
        count: usize,
        block: Option<Duration>,
    ) -> StreamResult<Vec<StreamEntry>>;

    /// `XACK`: acknowledge entries, returning how many were pending. Unknown groups, streams
    /// or ids acknowledge nothing.
    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StreamResult<u64>;

    /// `XAUTOCLAIM stream group consumer min_idle start COUNT count`: scan the group's pending
    /// list from `start` (inclusive) and claim up to `count` entries idle for at least
    /// `min_idle`. At most `10 × count` pending entries are examined per call, as in Redis.
    async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: EntryId,
        count: usize,
    ) -> StreamResult<AutoClaim>;

    /// `XPENDING stream group`.
    async fn pending_summary(&self, stream: &str, group: &str) -> StreamResult<PendingSummary>;

    /// `XPENDING stream group start end count [consumer]`: pending entries with ids in
    /// `start..=end`, oldest first, optionally only those owned by `consumer`.
    async fn pending_range(
        &self,
        stream: &str,
        group: &str,
        start: EntryId,
        end: EntryId,
        count: usize,
        consumer: Option<&str>,
    ) -> StreamResult<Vec<PendingEntry>>;

    /// The server's `maxmemory-policy`, for the start-up eviction warning
    /// ([`names::eviction_policy_is_safe`]). `None` when it does not apply or cannot be read
    /// (the in-memory backend never evicts; some managed Redis forbid `CONFIG GET`).
    async fn eviction_policy(&self) -> StreamResult<Option<String>> {
        Ok(None)
    }
}

/// The lowest id that some consumer group of `stream` may still need: every entry below it
/// has been acknowledged by every group, or will never be delivered to it (a group created at
/// `$` after the entry). Trimming with [`Trim::MinId`] at this id therefore never evicts an
/// entry a consumer has not acknowledged (SPEC §5.1).
///
/// A stream with no group gives [`EntryId::MIN`]: nobody has acknowledged anything, so nothing
/// may be trimmed on that ground. A missing stream also gives [`EntryId::MIN`].
pub async fn acknowledged_floor(streams: &dyn Streams, stream: &str) -> StreamResult<EntryId> {
    if !streams.stream_exists(stream).await? {
        return Ok(EntryId::MIN);
    }
    let groups = streams.groups(stream).await?;
    let mut floor: Option<EntryId> = None;
    for group in &groups {
        // Everything at or below last-delivered is either acknowledged or pending; the pending
        // minimum (if any) is the oldest entry this group still needs.
        let undelivered = group.last_delivered.next().unwrap_or(EntryId::MAX);
        let needed = match streams.pending_summary(stream, &group.name).await?.min {
            Some(min) => min.min(undelivered),
            None => undelivered,
        };
        floor = Some(floor.map_or(needed, |f| f.min(needed)));
    }
    // INVARIANT: the floor only rises over time (acknowledgements and deliveries never lower
    // it, and a group created at `$` starts above it), so a floor computed now is still safe
    // when the trimming XADD runs a moment later. The one exception is a group created at `0`
    // in between, which asks for history by definition; the provisioner creates groups at `$`.
    Ok(floor.unwrap_or(EntryId::MIN))
}
