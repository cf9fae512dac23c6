//! The `audit-ingestor`: turns entries of `caracal.audit.events` into ledger rows.
//!
//! [`Ingestor`] is a [`Handler`] for the consumer loop ([`crate::streams::consumer`]), which
//! owns delivery (group, pending-list drain, reaper with real delivery counts, dead letters,
//! acknowledgement only after [`Outcome::Ack`] or a written dead letter). The ingestor decides
//! the outcome of each entry, in the order of the reference's table (§1.4):
//!
//! | Condition (in order) | Outcome |
//! |---|---|
//! | no `data` field | dead letter `missing_data_field` |
//! | a key is configured and `sig` is missing, empty, not hex or wrong | dead letter `hmac_verify_failed` |
//! | `data` is not a valid event (JSON, `id`, `zone_id`, `occurred_at`, a JSON field with no `jsonb` form) | dead letter `json_parse_error:<error>` |
//! | same `(id, occurred_at)` stored with other content | dead letter `tamper_on_replay` (the ledger recorded an alert) |
//! | inserted, or a benign duplicate | ack |
//! | transient store error, `max_deliveries > 0` and deliveries ≥ it | dead letter `transient_exceeded_max_deliveries:<error>` |
//! | transient store error otherwise | retry (left pending) |
//! | any other store error | dead letter `pg_permanent_error:<error>` |
//!
//! With no key configured every message verifies (dev); published modes refuse to start
//! without one (the service checks).
//!
//! ## Batching
//!
//! The ingestor handles whole reads ([`Handler::handles_batches`]): the valid entries of a read
//! are grouped by zone (stream order kept within a zone) and each group is appended with one
//! [`AuditLedger::append`] call, one transaction under the zone's lock; zones are appended
//! concurrently. A permanent error on a group of several events is retried event by event so
//! that one bad event cannot dead-letter its neighbours.
//!
//! ## Checkpoints
//!
//! After appending, the ingestor signs a [`ChainCheckpoint`] of a zone's newest row it
//! inserted once `checkpoint_every` rows were inserted into the zone since the last one, or
//! `checkpoint_interval` has passed ([`Ingestor::flush_checkpoints`] covers zones that went
//! quiet). A failed checkpoint write is logged and retried later; it never holds back an
//! acknowledgement, since the rows themselves are stored.
//!
//! ## DLQ replay
//!
//! [`replay_dead_letters`] re-adds the replayable dead letters (§1.4.6) to the audit stream
//! and deletes them from the DLQ; [`DeadLetterView`] is the DLQ entry as the admin endpoints
//! show it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{AuditEvent, AuditHmacKey, ChainCheckpoint, ChainHead, verify_payload_sig};
use crate::clock::{SharedClock, SystemClock};
use crate::store::StoreError;
use crate::store::audit::{AppendOutcome, AuditLedger, IncomingEvent};
use crate::streams::consumer::{
    DLQ_DELIVERIES, DLQ_REASON, DLQ_RECEIVED_AT, DLQ_SOURCE_FIELD_PREFIX, DLQ_SOURCE_ID, Delivery,
    Handler, Outcome,
};
use crate::streams::{EntryId, Fields, StreamEntry, StreamError, Streams, names};

/// Stream field holding the event JSON.
pub const FIELD_DATA: &str = "data";
/// Stream field holding the producer's payload HMAC.
pub const FIELD_SIG: &str = "sig";
/// Stream field holding the event id (not read by the ingestor).
pub const FIELD_ID: &str = "id";

/// Dead-letter reason: no `data` field.
pub const REASON_MISSING_DATA: &str = "missing_data_field";
/// Dead-letter reason: the payload `sig` did not verify.
pub const REASON_HMAC_FAILED: &str = "hmac_verify_failed";
/// Dead-letter reason prefix: `data` is not a valid event.
pub const REASON_JSON_PARSE: &str = "json_parse_error:";
/// Dead-letter reason: same `(id, occurred_at)` with other content.
pub const REASON_TAMPER_ON_REPLAY: &str = "tamper_on_replay";
/// Dead-letter reason prefix: a transient store error outlived `max_deliveries`.
pub const REASON_TRANSIENT_EXCEEDED: &str = "transient_exceeded_max_deliveries:";
/// Dead-letter reason prefix: a permanent store error.
pub const REASON_PG_PERMANENT: &str = "pg_permanent_error:";

/// The reference's default `AUDIT_MAX_DELIVERIES`.
pub const DEFAULT_MAX_DELIVERIES: u64 = 8;

/// How the ingestor runs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `AUDIT_MAX_DELIVERIES`: a transient failure at or past this delivery count is
    /// dead-lettered; 0 disables the rule (retry forever).
    pub max_deliveries: u64,
    /// Checkpoint a zone after this many rows inserted into it (0: never by count).
    pub checkpoint_every: u64,
    /// Checkpoint a zone with new rows at least this often.
    pub checkpoint_interval: Duration,
}

impl Default for IngestConfig {
    /// Max deliveries 8, a checkpoint every 1,000 rows or 60 s.
    fn default() -> Self {
        Self {
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            checkpoint_every: 1_000,
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}

/// Why an entry cannot become a ledger event (the input rows of the outcome table).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No `data` field.
    #[error("missing_data_field")]
    MissingData,
    /// The payload `sig` did not verify under the configured key.
    #[error("hmac_verify_failed")]
    HmacFailed,
    /// `data` is not a valid event.
    #[error("json_parse_error:{0}")]
    Parse(String),
}

impl Rejection {
    /// The dead-letter reason.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// Check and parse one entry's fields into the event to append (pure). Steps 1–3 of the
/// outcome table: `data` present, `sig` valid when a key is configured, a valid event whose
/// stored form exists.
pub fn prepare(fields: &Fields, key: Option<&AuditHmacKey>) -> Result<IncomingEvent, Rejection> {
    let data = fields.get(FIELD_DATA).ok_or(Rejection::MissingData)?;
    let sig = fields.get(FIELD_SIG).filter(|s| !s.is_empty());
    if let Some(key) = key {
        verify_payload_sig(key, data.as_bytes(), sig).map_err(|_| Rejection::HmacFailed)?;
    }
    let event = AuditEvent::parse(data.as_bytes())
        .and_then(AuditEvent::into_stored)
        .map_err(|e| Rejection::Parse(e.to_string()))?;
    Ok(IncomingEvent {
        event,
        ingest_signature: sig.map(str::to_owned),
    })
}

/// The outcome for an entry whose append failed with `error` at delivery `deliveries`.
pub fn store_error_outcome(error: &StoreError, deliveries: u64, max_deliveries: u64) -> Outcome {
    if error.is_retryable() {
        if max_deliveries > 0 && deliveries >= max_deliveries {
            Outcome::DeadLetter {
                reason: format!("{REASON_TRANSIENT_EXCEEDED}{error}"),
            }
        } else {
            Outcome::Retry
        }
    } else {
        Outcome::DeadLetter {
            reason: format!("{REASON_PG_PERMANENT}{error}"),
        }
    }
}

/// The outcome of an append result.
fn append_outcome(outcome: &AppendOutcome) -> Outcome {
    match outcome {
        AppendOutcome::Inserted { .. } | AppendOutcome::Duplicate => Outcome::Ack,
        AppendOutcome::Tampered { .. } => Outcome::DeadLetter {
            reason: REASON_TAMPER_ON_REPLAY.to_owned(),
        },
    }
}

/// Counters of an ingestor (the reference's metric names in the field docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestStats {
    /// Rows inserted (`caracal_audit_inserts_total`).
    pub inserts: u64,
    /// Benign duplicates acknowledged.
    pub duplicates: u64,
    /// Parse errors (`caracal_audit_parse_errors_total`).
    pub parse_errors: u64,
    /// Payload HMAC failures (`caracal_audit_hmac_failures_total`).
    pub hmac_failures: u64,
    /// Missing `data` fields.
    pub missing_data: u64,
    /// Content mismatches on replay (`caracal_audit_tamper_replay_total`).
    pub tamper_replays: u64,
    /// Transient store failures left pending.
    pub transient_retries: u64,
    /// Transient failures dead-lettered after `max_deliveries`.
    pub transient_exceeded: u64,
    /// Permanent store failures dead-lettered.
    pub permanent_errors: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Checkpoint writes that failed (retried later).
    pub checkpoint_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    inserts: AtomicU64,
    duplicates: AtomicU64,
    parse_errors: AtomicU64,
    hmac_failures: AtomicU64,
    missing_data: AtomicU64,
    tamper_replays: AtomicU64,
    transient_retries: AtomicU64,
    transient_exceeded: AtomicU64,
    permanent_errors: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_failures: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Per-zone checkpoint progress.
#[derive(Debug, Clone)]
struct ZoneProgress {
    /// Newest row this ingestor inserted and has not checkpointed yet.
    pending_head: Option<ChainHead>,
    /// Rows inserted since the last checkpoint.
    since_last: u64,
    /// When the last checkpoint was written (or progress started).
    last_at: DateTime<Utc>,
}

/// The `audit-ingestor` handler. Cheap to share (`Arc`).
pub struct Ingestor {
    ledger: Arc<dyn AuditLedger>,
    key: Option<AuditHmacKey>,
    config: IngestConfig,
    clock: SharedClock,
    counters: Counters,
    progress: Mutex<HashMap<String, ZoneProgress>>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("signed", &self.key.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Ingestor {
    /// An ingestor appending to `ledger`, verifying payloads and signing links and checkpoints
    /// with `key` (`None`: dev, everything verifies and links are unsigned).
    pub fn new(
        ledger: Arc<dyn AuditLedger>,
        key: Option<AuditHmacKey>,
        config: IngestConfig,
    ) -> Self {
        Self {
            ledger,
            key,
            config,
            clock: Arc::new(SystemClock),
            counters: Counters::default(),
            progress: Mutex::new(HashMap::new()),
        }
    }

    /// Use `clock` for checkpoint timing.
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The counters so far.
    pub fn stats(&self) -> IngestStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        IngestStats {
            inserts: g(&c.inserts),
            duplicates: g(&c.duplicates),
            parse_errors: g(&c.parse_errors),
            hmac_failures: g(&c.hmac_failures),
            missing_data: g(&c.missing_data),
            tamper_replays: g(&c.tamper_replays),
            transient_retries: g(&c.transient_retries),
            transient_exceeded: g(&c.transient_exceeded),
            permanent_errors: g(&c.permanent_errors),
            checkpoints: g(&c.checkpoints),
            checkpoint_failures: g(&c.checkpoint_failures),
        }
    }

    /// Decide the outcome of every delivery of a read, appending the valid ones per zone.
    /// One outcome per delivery, in order.
    pub async fn ingest(&self, deliveries: &[Delivery]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; deliveries.len()];
        // zone → (indices, events), in stream order.
        let mut groups: Vec<(String, Vec<usize>, Vec<IncomingEvent>)> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for (i, delivery) in deliveries.iter().enumerate() {
            match prepare(&delivery.fields, self.key.as_ref()) {
                Ok(incoming) => {
                    let zone = incoming.event.zone_id.clone();
                    let g = match group_of.get(&zone) {
                        Some(&g) => g,
                        None => {
                            groups.push((zone.clone(), Vec::new(), Vec::new()));
                            group_of.insert(zone, groups.len() - 1);
                            groups.len() - 1
                        }
                    };
                    if let Some((_, idx, events)) = groups.get_mut(g) {
                        idx.push(i);
                        events.push(incoming);
                    }
                }
                Err(rejection) => {
                    match rejection {
                        Rejection::MissingData => bump(&self.counters.missing_data),
                        Rejection::HmacFailed => bump(&self.counters.hmac_failures),
                        Rejection::Parse(_) => bump(&self.counters.parse_errors),
                    }
                    tracing::warn!(id = %delivery.id, reason = %rejection, "audit entry rejected");
                    if let Some(slot) = outcomes.get_mut(i) {
                        *slot = Some(Outcome::DeadLetter {
                            reason: rejection.reason(),
                        });
                    }
                }
            }
        }

        let appends = groups.into_iter().map(|(zone, idx, events)| async move {
            let results = self.append_group(&zone, &idx, &events, deliveries).await;
            (zone, idx, results)
        });
        for (zone, idx, results) in join_all(appends).await {
            let mut newest: Option<ChainHead> = None;
            let mut inserted = 0u64;
            for (i, result) in idx.into_iter().zip(results) {
                let outcome = match result {
                    Ok(append) => {
                        match &append {
                            AppendOutcome::Inserted {
                                chain_seq,
                                content_sha256,
                            } => {
                                bump(&self.counters.inserts);
                                inserted += 1;
                                if newest.as_ref().is_none_or(|h| h.chain_seq < *chain_seq) {
                                    newest = Some(ChainHead {
                                        chain_seq: *chain_seq,
                                        content_sha256: content_sha256.clone(),
                                    });
                                }
                            }
                            AppendOutcome::Duplicate => bump(&self.counters.duplicates),
                            AppendOutcome::Tampered { stored, incoming } => {
                                bump(&self.counters.tamper_replays);
                                tracing::error!(%zone, %stored, %incoming,
                                    "audit event replayed with different content (tamper_on_replay)");
                            }
                        }
                        append_outcome(&append)
                    }
                    Err(outcome) => outcome,
                };
                if let Some(slot) = outcomes.get_mut(i) {
                    *slot = Some(outcome);
                }
            }
            if let Some(head) = newest {
                self.note_inserted(&zone, head, inserted).await;
            }
        }
        // INVARIANT: every index was filled above; an unfilled one (impossible) stays pending.
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Retry))
            .collect()
    }

    /// Append one zone's events; per event either the append outcome or the failure outcome.
    async fn append_group(
        &self,
        zone: &str,
        idx: &[usize],
        events: &[IncomingEvent],
        deliveries: &[Delivery],
    ) -> Vec<Result<AppendOutcome, Outcome>> {
        let count = |i: usize| deliveries.get(i).map_or(1, |d| d.deliveries);
        match self.ledger.append(zone, events, self.key.as_ref()).await {
            Ok(results) if results.len() == events.len() => results.into_iter().map(Ok).collect(),
            Ok(results) => {
                tracing::error!(%zone, expected = events.len(), got = results.len(),
                    "ledger returned the wrong number of outcomes; leaving the entries pending");
                events.iter().map(|_| Err(Outcome::Retry)).collect()
            }
            Err(e) if !e.is_retryable() && events.len() > 1 => {
                // Isolate the culprit: one at a time, so only the bad event is dead-lettered.
                let mut out = Vec::with_capacity(events.len());
                for (n, event) in events.iter().enumerate() {
                    let i = idx.get(n).copied().unwrap_or(0);
                    let one = self
                        .ledger
                        .append(zone, std::slice::from_ref(event), self.key.as_ref())
                        .await;
                    out.push(match one {
                        Ok(mut r) if r.len() == 1 => r.pop().ok_or(Outcome::Retry),
                        Ok(_) => Err(Outcome::Retry),
                        Err(e) => Err(self.failure(zone, &e, count(i))),
                    });
                }
                out
            }
            Err(e) => idx
                .iter()
                .map(|&i| Err(self.failure(zone, &e, count(i))))
                .collect(),
        }
    }

    fn failure(&self, zone: &str, error: &StoreError, deliveries: u64) -> Outcome {
        let outcome = store_error_outcome(error, deliveries, self.config.max_deliveries);
        match &outcome {
            Outcome::Retry => bump(&self.counters.transient_retries),
            Outcome::DeadLetter { reason } if reason.starts_with(REASON_TRANSIENT_EXCEEDED) => {
                bump(&self.counters.transient_exceeded);
            }
            _ => bump(&self.counters.permanent_errors),
        }
        tracing::warn!(%zone, error = %error, deliveries, outcome = ?outcome, "audit append failed");
        outcome
    }

    async fn note_inserted(&self, zone: &str, head: ChainHead, inserted: u64) {
        let now = self.clock.now();
        let due = {
            let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
            let p = progress.entry(zone.to_owned()).or_insert(ZoneProgress {
                pending_head: None,
                since_last: 0,
                last_at: now,
            });
            p.since_last = p.since_last.saturating_add(inserted);
            if p.pending_head
                .as_ref()
                .is_none_or(|h| h.chain_seq < head.chain_seq)
            {
                p.pending_head = Some(head);
            }
            self.is_due(p, now)
        };
        if due {
            self.checkpoint_zone(zone).await;
        }
    }

    fn is_due(&self, p: &ZoneProgress, now: DateTime<Utc>) -> bool {
        if p.pending_head.is_none() {
            return false;
        }
        let by_count =
            self.config.checkpoint_every > 0 && p.since_last >= self.config.checkpoint_every;
        let interval = chrono::Duration::from_std(self.config.checkpoint_interval)
            .unwrap_or(chrono::Duration::MAX);
        by_count || now.signed_duration_since(p.last_at) >= interval
    }

    /// Write a checkpoint for every zone whose interval has passed with rows not yet
    /// checkpointed (call periodically, e.g. every `checkpoint_interval`). Returns how many
    /// were written.
    pub async fn flush_checkpoints(&self) -> usize {
        let now = self.clock.now();
        let due: Vec<String> = {
            let progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
            progress
                .iter()
                .filter(|(_, p)| self.is_due(p, now))
                .map(|(z, _)| z.clone())
                .collect()
        };
        let mut written = 0;
        for zone in due {
            if self.checkpoint_zone(&zone).await {
                written += 1;
            }
        }
        written
    }

    /// Checkpoint the zone's pending head now; whether one was written.
    async fn checkpoint_zone(&self, zone: &str) -> bool {
        let head = {
            let progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
            progress.get(zone).and_then(|p| p.pending_head.clone())
        };
        let Some(head) = head else {
            return false;
        };
        let checkpoint = match &self.key {
            Some(key) => ChainCheckpoint::sign(key, zone, &head),
            None => ChainCheckpoint::unsigned(zone, &head),
        };
        match self.ledger.put_checkpoint(&checkpoint).await {
            Ok(()) => {
                bump(&self.counters.checkpoints);
                let now = self.clock.now();
                let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(p) = progress.get_mut(zone) {
                    // Rows inserted meanwhile keep their newer head pending.
                    if p.pending_head
                        .as_ref()
                        .is_some_and(|h| h.chain_seq <= head.chain_seq)
                    {
                        p.pending_head = None;
                        p.since_last = 0;
                    }
                    p.last_at = now;
                }
                true
            }
            Err(e) => {
                bump(&self.counters.checkpoint_failures);
                tracing::warn!(%zone, error = %e, "chain checkpoint write failed; retried later");
                false
            }
        }
    }
}

/// Run futures concurrently on this task and collect their outputs in order.
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, out) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[async_trait::async_trait]
impl Handler for Ingestor {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        self.ingest(std::slice::from_ref(delivery))
            .await
            .pop()
            .unwrap_or(Outcome::Retry)
    }

    fn handles_batches(&self) -> bool {
        true
    }

    async fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Outcome> {
        self.ingest(deliveries).await
    }
}

/// The source field `name` of a dead letter (`src_<name>`).
fn source_field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.get(&format!("{DLQ_SOURCE_FIELD_PREFIX}{name}"))
}

/// Whether a dead letter may be replayed (§1.4.6): its reason is a store failure
/// (`transient_exceeded_max_deliveries:` or `pg_permanent_error:`) and its source `data` is
/// not blank. Input, signature and tamper failures never are.
pub fn is_replayable(fields: &Fields) -> bool {
    let reason = fields.get(DLQ_REASON).unwrap_or_default();
    (reason.starts_with(REASON_TRANSIENT_EXCEEDED) || reason.starts_with(REASON_PG_PERMANENT))
        && source_field(fields, FIELD_DATA).is_some_and(|d| !d.trim().is_empty())
}

/// The stream entry a replay re-adds: `data`, and `sig` and `id` when present and not blank.
pub fn replay_fields(fields: &Fields) -> Option<Fields> {
    if !is_replayable(fields) {
        return None;
    }
    let mut out = Fields::with_capacity(3);
    for name in [FIELD_ID, FIELD_DATA, FIELD_SIG] {
        if let Some(v) = source_field(fields, name).filter(|v| !v.trim().is_empty()) {
            out.insert(name, v);
        }
    }
    Some(out)
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Dead letters examined.
    pub scanned: u64,
    /// Re-added to the audit stream and deleted from the DLQ.
    pub replayed: u64,
    /// Left in the DLQ (not replayable).
    pub skipped: u64,
}

/// Replay the oldest `limit` dead letters of `caracal.audit.events.dlq`: each replayable one
/// is re-added to `caracal.audit.events` and then deleted from the DLQ; the others are
/// skipped. The first stream error aborts (entries replayed so far stay replayed; the ledger
/// is idempotent, so a replayed entry whose deletion failed is harmless when replayed again).
pub async fn replay_dead_letters(
    streams: &dyn Streams,
    limit: usize,
) -> Result<ReplayReport, StreamError> {
    let entries = streams
        .range(
            names::AUDIT_EVENTS_DLQ,
            EntryId::MIN,
            EntryId::MAX,
            Some(limit.max(1)),
        )
        .await?;
    let mut report = ReplayReport::default();
    for entry in entries {
        report.scanned += 1;
        match replay_fields(&entry.fields) {
            Some(fields) => {
                streams.xadd(names::AUDIT_EVENTS, &fields).await?;
                // INVARIANT: deleted only after the re-add succeeded.
                streams.del(names::AUDIT_EVENTS_DLQ, &[entry.id]).await?;
                report.replayed += 1;
            }
            None => report.skipped += 1,
        }
    }
    Ok(report)
}

/// A DLQ entry as the admin endpoints show it (`GET /api/audit/dlq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterView {
    /// The DLQ entry id.
    pub id: String,
    /// The source entry id in `caracal.audit.events`.
    pub source_id: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When, RFC 3339 (empty if unknown).
    pub received_at: String,
    /// Seconds since it was dead-lettered, from the entry id.
    pub age_seconds: i64,
    /// Whether [`replay_dead_letters`] would replay it.
    pub replayable: bool,
    /// Delivery count when it was dead-lettered.
    pub deliveries: u64,
    /// The source event's id, if its `data` parses far enough.
    pub event_id: String,
    /// The source event's zone.
    pub zone_id: String,
    /// The source event's type.
    pub event_type: String,
    /// The source event's request id.
    pub request_id: String,
    /// The source event's decision.
    pub decision: String,
    /// The producer's `sig`.
    pub source_sig: String,
}

impl DeadLetterView {
    /// Describe `entry` as of `now`. Never fails: unparseable parts are left empty.
    pub fn from_entry(entry: &StreamEntry, now: DateTime<Utc>) -> Self {
        let f = &entry.fields;
        let get = |k: &str| f.get(k).unwrap_or_default().to_owned();
        let source = source_event(f);
        let str_of = |k: &str| {
            source
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let received_at = f
            .get(DLQ_RECEIVED_AT)
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_default();
        let id_ms = i64::try_from(entry.id.ms).unwrap_or(i64::MAX);
        let age_seconds = (now.timestamp_millis().saturating_sub(id_ms) / 1000).max(0);
        Self {
            id: entry.id.to_string(),
            source_id: get(DLQ_SOURCE_ID),
            reason: get(DLQ_REASON),
            received_at,
            age_seconds,
            replayable: is_replayable(f),
            deliveries: f
                .get(DLQ_DELIVERIES)
                .and_then(|d| d.parse().ok())
                .unwrap_or(0),
            event_id: str_of("id"),
            zone_id: str_of("zone_id"),
            event_type: str_of("event_type"),
            request_id: str_of("request_id"),
            decision: str_of("decision"),
            source_sig: source_field(f, FIELD_SIG).unwrap_or_default().to_owned(),
        }
    }
}

/// The dead letter's source `data` as JSON, if it parses.
pub fn source_event(fields: &Fields) -> Option<serde_json::Value> {
    source_field(fields, FIELD_DATA)
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter(serde_json::Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_retry_until_max_deliveries() {
        let transient = StoreError::Unavailable {
            retryable: true,
            message: "connection reset".into(),
        };
        assert_eq!(store_error_outcome(&transient, 7, 8), Outcome::Retry);
        assert_eq!(
            store_error_outcome(&transient, 8, 8),
            Outcome::DeadLetter {
                reason: "transient_exceeded_max_deliveries:store unavailable: connection reset"
                    .into()
            }
        );
        assert_eq!(store_error_outcome(&transient, 100, 0), Outcome::Retry);
        let permanent = StoreError::Invalid("bad".into());
        assert_eq!(
            store_error_outcome(&permanent, 1, 8),
            Outcome::DeadLetter {
                reason: "pg_permanent_error:invalid: bad".into()
            }
        );
    }

    #[test]
    fn only_store_failures_with_data_are_replayable() {
        let dl = |reason: &str, data: &str| {
            Fields::new()
                .with(DLQ_REASON, reason)
                .with("src_data", data)
                .with("src_sig", "ab")
        };
        assert!(is_replayable(&dl("pg_permanent_error:x", "{}")));
        assert!(is_replayable(&dl(
            "transient_exceeded_max_deliveries:x",
            "{}"
        )));
        assert!(!is_replayable(&dl("pg_permanent_error:x", "  ")));
        for reason in [
            "hmac_verify_failed",
            "json_parse_error:x",
            "missing_data_field",
            "tamper_on_replay",
        ] {
            assert!(!is_replayable(&dl(reason, "{}")), "{reason}");
        }
        let back = replay_fields(&dl("pg_permanent_error:x", "{}")).unwrap();
        assert_eq!(back.get("data"), Some("{}"));
        assert_eq!(back.get("sig"), Some("ab"));
        assert_eq!(back.len(), 2);
    }
}
