//! The consumer-group loop every service consumer runs: the audit ingestor, the STS's
//! revocation, policy and key consumers, the Gateway's revocation consumer.
//!
//! Written once here so the delivery rules are the same everywhere:
//!
//! 1. **Ensure the group** (`XGROUP CREATE … MKSTREAM`, `BUSYGROUP` is fine), retrying with
//!    bounded exponential backoff until it exists.
//! 2. **Drain the consumer's own pending list** from `0`: entries delivered to this consumer
//!    name before a crash or a lost connection and never acknowledged. This is why the
//!    consumer name must be *stable* across restarts (SPEC §5.2): a new name would never see
//!    them (only the reaper would, `claim_idle` later).
//! 3. **Read new entries** (`>`) in batches with `BLOCK`, handling them in order.
//! 4. **Reap** every `claim_interval` (and once right after the drain): `XAUTOCLAIM` entries
//!    idle for `claim_idle` (orphans of dead consumers, and this consumer's own retries),
//!    then `XPENDING` for their real delivery counts, and handle them.
//!
//! Each entry goes to the [`Handler`] with its delivery count, and the handler's [`Outcome`]
//! decides what happens to it:
//!
//! - [`Outcome::Ack`]: the handler has *durably* handled it; the loop acknowledges it.
//! - [`Outcome::Retry`]: left pending; the reaper delivers it again (count + 1) once idle.
//! - [`Outcome::DeadLetter`]: the loop writes it to the dead-letter stream
//!   ([`names::dead_letter_stream`]) and acknowledges it **only after that write succeeded**;
//!   if the write fails the entry stays pending.
//!
//! Delivery is at least once: an entry handled but not yet acknowledged when the connection
//! dropped is delivered again (from the pending-list drain or the reaper), so handlers must
//! be idempotent on the entry (the audit ledger is, on `(id, occurred_at)`). Nothing is ever
//! acknowledged before the handler returned [`Outcome::Ack`] or its dead letter was written.
//!
//! A read error marks the consumer unhealthy ([`ConsumerHealth`], for `/ready`), backs off
//! (bounded), and starts over at step 1, so a reconnect always re-drains the pending list.
//! At start the loop also reads the server's `maxmemory-policy` once, in the background, and
//! logs a warning unless it is `noeviction` (never blocking or failing start).
//!
//! Every wait is bounded: stream calls by [`ConsumerConfig::op_timeout`] (blocking reads by
//! their `BLOCK` plus that), handlers by [`ConsumerConfig::handler_timeout`], backoff by
//! [`ConsumerConfig::backoff_max`]. Shutdown is a [`tokio::sync::watch`] flag, honoured
//! between entries and during every wait; an entry being handled is finished first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::signature::SigPolicy;
use super::{
    EntryId, Fields, GroupCreated, GroupStart, ReadFrom, StreamEntry, StreamError, Streams, names,
};
use crate::clock::{SharedClock, SystemClock};

/// Dead-letter field: why the entry was dead-lettered.
pub const DLQ_REASON: &str = "reason";
/// Dead-letter field: the stream the entry was read from.
pub const DLQ_SOURCE_STREAM: &str = "source_stream";
/// Dead-letter field: the source entry's id (`<ms>-<seq>`).
pub const DLQ_SOURCE_ID: &str = "source_id";
/// Dead-letter field: the consumer group that gave up on it.
pub const DLQ_SOURCE_GROUP: &str = "source_group";
/// Dead-letter field: the consumer that dead-lettered it.
pub const DLQ_CONSUMER: &str = "consumer";
/// Dead-letter field: the delivery count when it was dead-lettered.
pub const DLQ_DELIVERIES: &str = "deliveries";
/// Dead-letter field: when it was dead-lettered, Unix milliseconds in decimal (the
/// reference's `received_at`).
pub const DLQ_RECEIVED_AT: &str = "received_at";
/// Prefix of the copied source fields: source field `data` is `src_data` in the dead letter.
///
/// INVARIANT: no metadata field above starts with this prefix, so a source field can never
/// overwrite metadata, whatever its name (SPEC §5.4; the reference's `src_id` was both the
/// entry id and the copy of a field named `id`).
pub const DLQ_SOURCE_FIELD_PREFIX: &str = "src_";
/// The reason recorded for an entry deleted or trimmed from the stream while it was pending:
/// its payload is gone, so it cannot be handled, only recorded.
pub const REASON_DELETED_WHILE_PENDING: &str = "deleted_while_pending";

/// How a consumer runs. [`ConsumerConfig::new`] gives the reference's values.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The stream to consume.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// This consumer's name in the group. Must be stable across restarts (from configuration,
    /// e.g. the pod name), or its pending entries wait for the reaper.
    pub consumer: String,
    /// Where the group starts if this consumer has to create it.
    pub group_start: GroupStart,
    /// Entries per read, drain page and claim page.
    pub batch: usize,
    /// `BLOCK` of a read for new entries.
    pub block: Duration,
    /// Minimum idle time before the reaper claims a pending entry.
    pub claim_idle: Duration,
    /// Time between reaper passes.
    pub claim_interval: Duration,
    /// Most claim pages (of `batch` entries) per reaper pass, so one pass is bounded.
    pub max_claim_pages: usize,
    /// First backoff after an error; doubled per consecutive error.
    pub backoff_min: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Longest a handler may take; after it the entry is left pending (as
    /// [`Outcome::Retry`]).
    pub handler_timeout: Duration,
    /// Bound on each non-blocking stream call (and the grace of a blocking one).
    pub op_timeout: Duration,
    /// Where dead letters go.
    pub dead_letter_stream: String,
    /// Signing of dead letters (`_sig`), as for any message this service produces.
    pub dead_letter_sig: SigPolicy,
}

impl ConsumerConfig {
    /// A consumer of `stream` in `group` named `consumer`: batches of 100, `BLOCK 5s`, claim
    /// after 30 s idle every 30 s, backoff 100 ms to 5 s, 30 s per handler, 10 s per stream
    /// call, dead letters to [`names::dead_letter_stream`] unsigned.
    pub fn new(
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        let stream = stream.into();
        let dead_letter_stream = names::dead_letter_stream(&stream).into_owned();
        Self {
            stream,
            group: group.into(),
            consumer: consumer.into(),
            group_start: GroupStart::Latest,
            batch: 100,
            block: Duration::from_secs(5),
            claim_idle: Duration::from_secs(30),
            claim_interval: Duration::from_secs(30),
            max_claim_pages: 100,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            handler_timeout: Duration::from_secs(30),
            op_timeout: Duration::from_secs(10),
            dead_letter_stream,
            dead_letter_sig: SigPolicy::AcceptUnsigned,
        }
    }

    fn validate(&self) -> Result<(), ConsumerConfigError> {
        let fail = |reason| Err(ConsumerConfigError { reason });
        if self.stream.is_empty() || self.group.is_empty() || self.consumer.is_empty() {
            return fail("stream, group and consumer names must not be empty");
        }
        if self.dead_letter_stream.is_empty() || self.dead_letter_stream == self.stream {
            return fail("the dead-letter stream must be named and differ from the source");
        }
        if self.batch == 0 || self.max_claim_pages == 0 {
            return fail("batch and max_claim_pages must be at least 1");
        }
        for d in [
            self.block,
            self.claim_interval,
            self.backoff_min,
            self.handler_timeout,
            self.op_timeout,
        ] {
            if d.is_zero() {
                return fail(
                    "block, claim_interval, backoff_min, handler_timeout and op_timeout must be positive",
                );
            }
        }
        if self.backoff_max < self.backoff_min {
            return fail("backoff_max must be at least backoff_min");
        }
        Ok(())
    }
}

/// A [`ConsumerConfig`] that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid consumer configuration: {reason}")]
pub struct ConsumerConfigError {
    reason: &'static str,
}

/// How an entry reached the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    /// A first delivery, read with `>`.
    New,
    /// Re-read from this consumer's own pending list (after a start or a reconnect).
    Pending,
    /// Claimed by the reaper after being idle (from a dead consumer, or an earlier retry).
    Claimed,
}

/// One entry handed to a [`Handler`].
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stream it was read from.
    pub stream: String,
    /// The entry id.
    pub id: EntryId,
    /// The entry's fields.
    pub fields: Fields,
    /// How many times it has been delivered, this time included (1 on a first delivery).
    pub deliveries: u64,
    /// How it was delivered.
    pub kind: DeliveryKind,
}

/// What the handler did with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Durably handled: acknowledge it.
    Ack,
    /// Not handled now (a transient failure): leave it pending for redelivery.
    Retry,
    /// Never handleable (malformed, badly signed, permanently refused): write it to the
    /// dead-letter stream with `reason`, then acknowledge it.
    DeadLetter {
        /// Why, e.g. `hmac_verify_failed`. Recorded in the dead letter.
        reason: String,
    },
}

/// Handles entries. Implementations must be idempotent on the entry (delivery is at least
/// once) and must not panic.
///
/// By default the loop hands entries over one at a time ([`Handler::handle`]). A handler that
/// gains from seeing a whole read at once (the audit ingestor appends a zone's entries in one
/// transaction) returns `true` from [`Handler::handles_batches`]; the loop then calls
/// [`Handler::handle_batch`] with each read, drain page or claim page, carries out the
/// outcomes entry by entry, and acknowledges the handled entries with one `XACK`. Shutdown is
/// then honoured between batches, and [`ConsumerConfig::handler_timeout`] bounds a whole batch.
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    /// Handle `delivery` and say what to do with it.
    async fn handle(&self, delivery: &Delivery) -> Outcome;

    /// Whether the loop should call [`Handler::handle_batch`] instead of
    /// [`Handler::handle`]. Default `false`.
    fn handles_batches(&self) -> bool {
        false
    }

    /// Handle `deliveries` (in stream order) and return one outcome per delivery, in the same
    /// order. A result of another length is treated as [`Outcome::Retry`] for every entry.
    /// The default handles them one by one with [`Handler::handle`].
    async fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            outcomes.push(self.handle(delivery).await);
        }
        outcomes
    }
}

/// Counters of one consumer, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Entries given to the handler.
    pub handled: u64,
    /// Entries acknowledged after [`Outcome::Ack`].
    pub acked: u64,
    /// [`Outcome::Retry`] (and handler timeouts).
    pub retried: u64,
    /// Dead letters written (each then acknowledged, or left pending if the ack failed).
    pub dead_lettered: u64,
    /// Dead-letter writes that failed (the entry stayed pending).
    pub dead_letter_failures: u64,
    /// Entries the reaper claimed and handed to the handler.
    pub claimed: u64,
    /// Acknowledgements that acknowledged nothing: the entry was no longer pending (another
    /// consumer claimed and acknowledged it, or it was acknowledged twice). Should stay 0
    /// while `claim_idle` exceeds the handler time.
    pub stale_acks: u64,
    /// Errors that ended a session (read, ack, claim …) and caused a reconnect.
    pub errors: u64,
}

#[derive(Debug, Default)]
struct HealthInner {
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    handled: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    dead_letter_failures: AtomicU64,
    claimed: AtomicU64,
    stale_acks: AtomicU64,
    errors: AtomicU64,
}

/// A consumer's health, shared with readiness probes. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHealth {
    inner: Arc<HealthInner>,
}

impl ConsumerHealth {
    /// Whether the consumer is connected and reading: its group exists, its pending list was
    /// drained, and its last read succeeded. False before start, after an error until the
    /// next successful read, and after shutdown.
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Acquire)
    }

    /// The last error that made it unhealthy (kept after recovery, for diagnosis).
    pub fn last_error(&self) -> Option<String> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The counters so far.
    pub fn stats(&self) -> ConsumerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let i = &self.inner;
        ConsumerStats {
            handled: get(&i.handled),
            acked: get(&i.acked),
            retried: get(&i.retried),
            dead_lettered: get(&i.dead_lettered),
            dead_letter_failures: get(&i.dead_letter_failures),
            claimed: get(&i.claimed),
            stale_acks: get(&i.stale_acks),
            errors: get(&i.errors),
        }
    }

    fn set_healthy(&self, healthy: bool) {
        self.inner.healthy.store(healthy, Ordering::Release);
    }

    fn record_error(&self, error: &StreamError) {
        self.set_healthy(false);
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a session (one connected stretch of the loop) ended.
enum Stop {
    /// Shutdown was requested.
    Shutdown,
    /// A stream error: back off and start over.
    Failed(StreamError),
}

impl From<StreamError> for Stop {
    fn from(e: StreamError) -> Self {
        Stop::Failed(e)
    }
}

/// Whether shutdown was requested (or its sender is gone, which means the same).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Resolves when shutdown is requested. Never resolves spuriously.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    // `wait_for` returns an error when the sender is dropped: that is a shutdown too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Sleep `d`, or less if shutdown comes first; whether to go on.
async fn sleep_unless_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => !stopping(shutdown),
        () = shutdown_requested(shutdown) => false,
    }
}

/// A consumer-group loop over any [`Streams`]. Build it, keep its [`ConsumerHealth`], then
/// [`run`](Consumer::run) or [`spawn`](Consumer::spawn) it.
pub struct Consumer {
    streams: Arc<dyn Streams>,
    handler: Arc<dyn Handler>,
    config: ConsumerConfig,
    clock: SharedClock,
    health: ConsumerHealth,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("healthy", &self.health.is_healthy())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer of `streams` handing entries to `handler`.
    pub fn new(
        streams: Arc<dyn Streams>,
        config: ConsumerConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, ConsumerConfigError> {
        config.validate()?;
        Ok(Self {
            streams,
            handler,
            config,
            clock: Arc::new(SystemClock),
            health: ConsumerHealth::default(),
        })
    }

    /// Use `clock` for the dead letters' `received_at`.
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The health handle (for readiness); stays valid after the consumer stops.
    pub fn health(&self) -> ConsumerHealth {
        self.health.clone()
    }

    /// Run on a new task until shutdown.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Run until `shutdown` becomes `true` (or its sender is dropped).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let c = &self.config;
        tracing::info!(stream = %c.stream, group = %c.group, consumer = %c.consumer, "consumer starting");
        let mut backoff = c.backoff_min;
        let mut eviction_checked = false;
        while !stopping(&shutdown) {
            match self
                .session(&mut shutdown, &mut eviction_checked, &mut backoff)
                .await
            {
                Stop::Shutdown => break,
                Stop::Failed(e) => {
                    self.health.record_error(&e);
                    tracing::warn!(
                        stream = %c.stream, group = %c.group, consumer = %c.consumer,
                        error = %e, retry_in = ?backoff,
                        "consumer interrupted; reconnecting and re-draining its pending list"
                    );
                    if !sleep_unless_shutdown(backoff, &mut shutdown).await {
                        break;
                    }
                    backoff = backoff.saturating_mul(2).min(c.backoff_max);
                }
            }
        }
        self.health.set_healthy(false);
        tracing::info!(stream = %c.stream, group = %c.group, consumer = %c.consumer, "consumer stopped");
    }

    /// One connected stretch: ensure the group, drain, then read and reap until shutdown or
    /// an error.
    async fn session(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        eviction_checked: &mut bool,
        backoff: &mut Duration,
    ) -> Stop {
        match self
            .session_inner(shutdown, eviction_checked, backoff)
            .await
        {
            Ok(()) => Stop::Shutdown,
            Err(stop) => stop,
        }
    }

    async fn session_inner(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        eviction_checked: &mut bool,
        backoff: &mut Duration,
    ) -> Result<(), Stop> {
        let c = &self.config;
        self.ensure_group().await?;
        if !*eviction_checked {
            *eviction_checked = true;
            self.spawn_eviction_check();
        }
        self.drain_own_pending(shutdown).await?;
        self.health.set_healthy(true);
        *backoff = c.backoff_min;
        // The first reaper pass runs at once: entries orphaned by a dead consumer should not
        // wait a whole interval.
        let mut next_reap = Instant::now();
        loop {
            if stopping(shutdown) {
                return Err(Stop::Shutdown);
            }
            let now = Instant::now();
            if now >= next_reap {
                self.reap(shutdown).await?;
                next_reap = Instant::now() + c.claim_interval;
            }
            // Never block past the next reaper pass.
            let wait = c
                .block
                .min(next_reap.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            let read = self.bounded(
                wait.saturating_add(c.op_timeout),
                "XREADGROUP",
                self.streams.read_group(
                    &c.stream,
                    &c.group,
                    &c.consumer,
                    ReadFrom::New,
                    c.batch,
                    Some(wait),
                ),
            );
            let entries = tokio::select! {
                r = read => r?,
                () = shutdown_requested(shutdown) => return Err(Stop::Shutdown),
            };
            self.health.set_healthy(true);
            if self.handler.handles_batches() {
                // A `>` delivery is always the first: Redis starts its count at 1.
                let batch = entries.into_iter().map(|e| (e, 1)).collect();
                self.process_batch(batch, DeliveryKind::New).await?;
                continue;
            }
            for entry in entries {
                if stopping(shutdown) {
                    // The rest stay pending and are drained at the next start.
                    return Err(Stop::Shutdown);
                }
                // A `>` delivery is always the first: Redis starts its count at 1.
                self.process(entry, 1, DeliveryKind::New).await?;
            }
        }
    }

    /// Bound a stream call.
    async fn bounded<T>(
        &self,
        limit: Duration,
        what: &'static str,
        call: impl Future<Output = Result<T, StreamError>>,
    ) -> Result<T, StreamError> {
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(StreamError::Unavailable {
                reason: format!("{what} did not complete within {limit:?}"),
            }),
        }
    }

    async fn ensure_group(&self) -> Result<(), StreamError> {
        let c = &self.config;
        let created = self
            .bounded(
                c.op_timeout,
                "XGROUP CREATE",
                self.streams
                    .group_create(&c.stream, &c.group, c.group_start),
            )
            .await?;
        let per_replica = names::stream_spec(&c.stream)
            .and_then(|spec| spec.instance_group_of(&c.group))
            .is_some();
        if created == GroupCreated::Created {
            if per_replica {
                // Per-replica groups are never provisioned: creating one is this replica's
                // first start under its instance name (names.rs, "Per-replica groups").
                tracing::info!(
                    stream = %c.stream, group = %c.group,
                    "per-replica consumer group created"
                );
            } else {
                tracing::warn!(
                    stream = %c.stream, group = %c.group,
                    "consumer group did not exist and was created; run `caracal streams provision`"
                );
            }
        }
        Ok(())
    }

    /// Read `maxmemory-policy` once, off the start path: a slow or refused `CONFIG GET`
    /// never delays or fails start.
    fn spawn_eviction_check(&self) {
        let streams = Arc::clone(&self.streams);
        let limit = self.config.op_timeout;
        let stream = self.config.stream.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(limit, streams.eviction_policy()).await {
                Ok(Ok(Some(policy))) if !names::eviction_policy_is_safe(&policy) => {
                    tracing::warn!(
                        %stream, maxmemory_policy = %policy,
                        "Redis maxmemory-policy is not noeviction: pending stream entries and \
                         revocation keys can be evicted under memory pressure"
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%stream, error = %e, "could not read maxmemory-policy");
                }
                Err(_) => tracing::debug!(%stream, "maxmemory-policy check timed out"),
            }
        });
    }

    /// Handle this consumer's own pending entries, oldest first, each once per drain.
    async fn drain_own_pending(&self, shutdown: &watch::Receiver<bool>) -> Result<(), Stop> {
        let c = &self.config;
        let mut cursor = EntryId::MIN;
        loop {
            if stopping(shutdown) {
                return Err(Stop::Shutdown);
            }
            let page = self
                .bounded(
                    c.op_timeout,
                    "XREADGROUP (pending)",
                    self.streams.read_group(
                        &c.stream,
                        &c.group,
                        &c.consumer,
                        ReadFrom::Pending(cursor),
                        c.batch,
                        None,
                    ),
                )
                .await?;
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                return Ok(());
            };
            // The page is exactly this consumer's pending entries in `first..=last`, so a
            // range query of the same size returns all their (just incremented) counts.
            let counts = self.delivery_counts(first.id, last.id, page.len()).await?;
            if self.handler.handles_batches() {
                cursor = last.id;
                let batch = page
                    .into_iter()
                    .map(|e| {
                        let n = counts.get(&e.id).copied().unwrap_or(1);
                        (e, n)
                    })
                    .collect();
                self.process_batch(batch, DeliveryKind::Pending).await?;
                if stopping(shutdown) {
                    return Err(Stop::Shutdown);
                }
                continue;
            }
            for entry in page {
                cursor = entry.id;
                let deliveries = counts.get(&entry.id).copied().unwrap_or(1);
                self.process(entry, deliveries, DeliveryKind::Pending)
                    .await?;
                if stopping(shutdown) {
                    return Err(Stop::Shutdown);
                }
            }
        }
    }

    /// Delivery counts of this consumer's pending entries in `first..=last`.
    async fn delivery_counts(
        &self,
        first: EntryId,
        last: EntryId,
        count: usize,
    ) -> Result<HashMap<EntryId, u64>, StreamError> {
        let c = &self.config;
        let pending = self
            .bounded(
                c.op_timeout,
                "XPENDING",
                self.streams.pending_range(
                    &c.stream,
                    &c.group,
                    first,
                    last,
                    count.max(1),
                    Some(&c.consumer),
                ),
            )
            .await?;
        Ok(pending.into_iter().map(|p| (p.id, p.deliveries)).collect())
    }

    /// One reaper pass: claim idle entries page by page and handle them.
    async fn reap(&self, shutdown: &watch::Receiver<bool>) -> Result<(), Stop> {
        let c = &self.config;
        let mut cursor = EntryId::MIN;
        for _ in 0..c.max_claim_pages {
            if stopping(shutdown) {
                return Err(Stop::Shutdown);
            }
            let claim = self
                .bounded(
                    c.op_timeout,
                    "XAUTOCLAIM",
                    self.streams.autoclaim(
                        &c.stream,
                        &c.group,
                        &c.consumer,
                        c.claim_idle,
                        cursor,
                        c.batch,
                    ),
                )
                .await?;
            for id in &claim.deleted {
                // Redis already dropped these from the pending list; all that is left to do
                // is to leave a trace of the loss.
                let ghost = StreamEntry {
                    id: *id,
                    fields: Fields::new(),
                };
                if let Err(e) = self
                    .write_dead_letter(&ghost, 0, REASON_DELETED_WHILE_PENDING)
                    .await
                {
                    tracing::warn!(stream = %c.stream, id = %id, error = %e,
                        "pending entry was deleted from the stream; recording it failed");
                }
            }
            if let (Some(first), Some(last)) = (claim.entries.first(), claim.entries.last()) {
                // A claim page examines at most 10 × batch pending entries, so the range
                // holds at most that many of this consumer's entries.
                let counts = self
                    .delivery_counts(first.id, last.id, c.batch.saturating_mul(10))
                    .await?;
                if self.handler.handles_batches() {
                    // Absent: claimed away or acknowledged since; it is not ours to handle.
                    let batch: Vec<(StreamEntry, u64)> = claim
                        .entries
                        .into_iter()
                        .filter_map(|e| counts.get(&e.id).copied().map(|n| (e, n)))
                        .collect();
                    for _ in &batch {
                        ConsumerHealth::bump(&self.health.inner.claimed);
                    }
                    self.process_batch(batch, DeliveryKind::Claimed).await?;
                    if stopping(shutdown) {
                        return Err(Stop::Shutdown);
                    }
                    if claim.next.is_min() {
                        break;
                    }
                    cursor = claim.next;
                    continue;
                }
                for entry in claim.entries {
                    // Absent: claimed away or acknowledged since; it is not ours to handle.
                    let Some(&deliveries) = counts.get(&entry.id) else {
                        continue;
                    };
                    ConsumerHealth::bump(&self.health.inner.claimed);
                    self.process(entry, deliveries, DeliveryKind::Claimed)
                        .await?;
                    if stopping(shutdown) {
                        return Err(Stop::Shutdown);
                    }
                }
            }
            if claim.next.is_min() {
                break;
            }
            cursor = claim.next;
        }
        Ok(())
    }

    /// Hand one entry to the handler and carry out its outcome.
    async fn process(
        &self,
        entry: StreamEntry,
        deliveries: u64,
        kind: DeliveryKind,
    ) -> Result<(), StreamError> {
        let c = &self.config;
        if entry.is_deleted() {
            // Pending, but its payload was deleted or trimmed: nothing to handle.
            return self
                .dead_letter_then_ack(&entry, deliveries, REASON_DELETED_WHILE_PENDING)
                .await;
        }
        let delivery = Delivery {
            stream: c.stream.clone(),
            id: entry.id,
            fields: entry.fields,
            deliveries,
            kind,
        };
        ConsumerHealth::bump(&self.health.inner.handled);
        let outcome = match tokio::time::timeout(c.handler_timeout, self.handler.handle(&delivery))
            .await
        {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(stream = %c.stream, id = %delivery.id, timeout = ?c.handler_timeout,
                        "handler timed out; the entry stays pending");
                Outcome::Retry
            }
        };
        match outcome {
            Outcome::Ack => {
                self.ack(delivery.id).await?;
                ConsumerHealth::bump(&self.health.inner.acked);
                Ok(())
            }
            Outcome::Retry => {
                ConsumerHealth::bump(&self.health.inner.retried);
                Ok(())
            }
            Outcome::DeadLetter { reason } => {
                let entry = StreamEntry {
                    id: delivery.id,
                    fields: delivery.fields,
                };
                self.dead_letter_then_ack(&entry, deliveries, &reason).await
            }
        }
    }

    /// Hand a batch to [`Handler::handle_batch`] and carry out the outcomes: dead letters
    /// first (each acknowledged only once written), then one `XACK` for everything handled.
    async fn process_batch(
        &self,
        entries: Vec<(StreamEntry, u64)>,
        kind: DeliveryKind,
    ) -> Result<(), StreamError> {
        let c = &self.config;
        let mut deliveries = Vec::with_capacity(entries.len());
        for (entry, count) in entries {
            if entry.is_deleted() {
                self.dead_letter_then_ack(&entry, count, REASON_DELETED_WHILE_PENDING)
                    .await?;
                continue;
            }
            deliveries.push(Delivery {
                stream: c.stream.clone(),
                id: entry.id,
                fields: entry.fields,
                deliveries: count,
                kind,
            });
        }
        if deliveries.is_empty() {
            return Ok(());
        }
        for _ in &deliveries {
            ConsumerHealth::bump(&self.health.inner.handled);
        }
        let n = deliveries.len();
        let outcomes = match tokio::time::timeout(
            c.handler_timeout,
            self.handler.handle_batch(&deliveries),
        )
        .await
        {
            Ok(outcomes) if outcomes.len() == n => outcomes,
            Ok(outcomes) => {
                tracing::error!(stream = %c.stream, expected = n, got = outcomes.len(),
                        "batch handler returned the wrong number of outcomes; the entries stay pending");
                vec![Outcome::Retry; n]
            }
            Err(_) => {
                tracing::warn!(stream = %c.stream, entries = n, timeout = ?c.handler_timeout,
                        "batch handler timed out; the entries stay pending");
                vec![Outcome::Retry; n]
            }
        };
        let mut to_ack = Vec::with_capacity(n);
        let mut handled_acks = 0u64;
        let mut failure: Option<StreamError> = None;
        for (delivery, outcome) in deliveries.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Ack => {
                    to_ack.push(delivery.id);
                    handled_acks += 1;
                }
                Outcome::Retry => ConsumerHealth::bump(&self.health.inner.retried),
                Outcome::DeadLetter { reason } => {
                    if failure.is_some() {
                        // The dead-letter stream just failed transiently: leave the rest
                        // pending rather than hammer it.
                        continue;
                    }
                    let entry = StreamEntry {
                        id: delivery.id,
                        fields: delivery.fields,
                    };
                    match self
                        .write_dead_letter(&entry, delivery.deliveries, &reason)
                        .await
                    {
                        // INVARIANT: acknowledged only after the dead letter was written.
                        Ok(_) => to_ack.push(entry.id),
                        Err(e) => {
                            ConsumerHealth::bump(&self.health.inner.dead_letter_failures);
                            tracing::warn!(stream = %c.stream, id = %entry.id,
                                dead_letter_stream = %c.dead_letter_stream, error = %e,
                                "dead-letter write failed; the entry stays pending");
                            if e.is_retryable() {
                                failure = Some(e);
                            }
                        }
                    }
                }
            }
        }
        if !to_ack.is_empty() {
            let acked = self
                .bounded(
                    c.op_timeout,
                    "XACK",
                    self.streams.ack(&c.stream, &c.group, &to_ack),
                )
                .await?;
            let stale = (to_ack.len() as u64).saturating_sub(acked);
            if stale > 0 {
                self.health
                    .inner
                    .stale_acks
                    .fetch_add(stale, Ordering::Relaxed);
                tracing::warn!(stream = %c.stream, group = %c.group, stale,
                    "acknowledged entries that were no longer pending (claimed and acknowledged \
                     elsewhere?): claim_idle may be shorter than the handler time");
            }
            self.health
                .inner
                .acked
                .fetch_add(handled_acks, Ordering::Relaxed);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Write the dead letter, then acknowledge; if the write fails, do not acknowledge.
    async fn dead_letter_then_ack(
        &self,
        entry: &StreamEntry,
        deliveries: u64,
        reason: &str,
    ) -> Result<(), StreamError> {
        let c = &self.config;
        if let Err(e) = self.write_dead_letter(entry, deliveries, reason).await {
            ConsumerHealth::bump(&self.health.inner.dead_letter_failures);
            tracing::warn!(stream = %c.stream, id = %entry.id, dead_letter_stream = %c.dead_letter_stream,
                error = %e, "dead-letter write failed; the entry stays pending");
            // A transient failure ends the session (the server is likely gone); any other
            // leaves this entry pending for the reaper and lets the others through.
            return if e.is_retryable() { Err(e) } else { Ok(()) };
        }
        // INVARIANT: reached only after the dead letter was written.
        self.ack(entry.id).await
    }

    async fn ack(&self, id: EntryId) -> Result<(), StreamError> {
        let c = &self.config;
        let acked = self
            .bounded(
                c.op_timeout,
                "XACK",
                self.streams.ack(&c.stream, &c.group, &[id]),
            )
            .await?;
        if acked == 0 {
            ConsumerHealth::bump(&self.health.inner.stale_acks);
            tracing::warn!(stream = %c.stream, group = %c.group, %id,
                "acknowledged an entry that was no longer pending (claimed and acknowledged \
                 elsewhere?): claim_idle may be shorter than the handler time");
        }
        Ok(())
    }

    async fn write_dead_letter(
        &self,
        entry: &StreamEntry,
        deliveries: u64,
        reason: &str,
    ) -> Result<EntryId, StreamError> {
        let c = &self.config;
        let fields = dead_letter_fields(
            entry,
            &DeadLetterMeta {
                reason,
                stream: &c.stream,
                group: &c.group,
                consumer: &c.consumer,
                deliveries,
                received_at_ms: self.clock.now().timestamp_millis(),
            },
            &c.dead_letter_sig,
            &c.dead_letter_stream,
        );
        let id = self
            .bounded(
                c.op_timeout,
                "XADD (dead letter)",
                self.streams.xadd(&c.dead_letter_stream, &fields),
            )
            .await?;
        ConsumerHealth::bump(&self.health.inner.dead_lettered);
        tracing::info!(stream = %c.stream, id = %entry.id, dead_letter_stream = %c.dead_letter_stream,
            dead_letter_id = %id, %reason, "entry dead-lettered");
        Ok(id)
    }
}

/// What a dead letter records besides the source fields.
struct DeadLetterMeta<'a> {
    reason: &'a str,
    stream: &'a str,
    group: &'a str,
    consumer: &'a str,
    deliveries: u64,
    received_at_ms: i64,
}

/// The fields of a dead letter: metadata, then every source field under
/// [`DLQ_SOURCE_FIELD_PREFIX`], then `_sig` when signing is configured.
fn dead_letter_fields(
    entry: &StreamEntry,
    meta: &DeadLetterMeta<'_>,
    sig: &SigPolicy,
    dead_letter_stream: &str,
) -> Fields {
    let mut fields = Fields::with_capacity(entry.fields.len() + 8);
    fields.insert(DLQ_REASON, meta.reason);
    fields.insert(DLQ_SOURCE_STREAM, meta.stream);
    fields.insert(DLQ_SOURCE_ID, entry.id.to_string());
    fields.insert(DLQ_SOURCE_GROUP, meta.group);
    fields.insert(DLQ_CONSUMER, meta.consumer);
    fields.insert(DLQ_DELIVERIES, meta.deliveries.to_string());
    fields.insert(DLQ_RECEIVED_AT, meta.received_at_ms.to_string());
    for (k, v) in &entry.fields {
        fields.insert(format!("{DLQ_SOURCE_FIELD_PREFIX}{k}"), v);
    }
    sig.sign_into(dead_letter_stream, &mut fields);
    fields
}

#[cfg(test)]
mod tests;
