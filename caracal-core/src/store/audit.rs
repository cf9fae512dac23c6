//! The audit ledger: per-zone hash chains of stored events.
//!
//! The chain rule itself lives in [`crate::audit`] ([`LedgerRow::append`] hashes and links);
//! a ledger only serialises appends per zone, stores rows, detects replays, and reads rows
//! back. Both implementations call the same rule, so identical events produce identical
//! hashes and links on both (the content hash uses the native `jsonb` normaliser).
//!
//! Appends are idempotent on `(id, occurred_at)` (at microsecond precision): a replay with the
//! same content hash is a benign duplicate that consumes no `chain_seq`; a replay with other
//! content is refused as tampering and recorded as an ingest alert, and the stored row is left
//! unchanged.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::audit::{AuditEvent, AuditHmacKey, ChainCheckpoint, ChainHead, LedgerRow, content_hash};
use crate::store::StoreError;

/// An event on its way into the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingEvent {
    /// The event as received (the ledger converts it to its stored form).
    pub event: AuditEvent,
    /// The producer's payload signature (`sig`), kept as `ingest_signature`.
    pub ingest_signature: Option<String>,
}

/// The result of appending one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// A new row was linked onto the chain.
    Inserted {
        /// Its sequence number in the zone.
        chain_seq: i64,
        /// Its content hash.
        content_sha256: String,
    },
    /// The same `(id, occurred_at)` with the same content is already stored.
    Duplicate,
    /// The same `(id, occurred_at)` is stored with different content (`tamper_on_replay`); an
    /// ingest alert of kind [`ALERT_CONTENT_MISMATCH`] was recorded with the outcome.
    Tampered {
        /// The stored row's content hash.
        stored: String,
        /// The incoming event's content hash.
        incoming: String,
    },
}

/// The alert kind recorded for a content mismatch on replay.
pub const ALERT_CONTENT_MISMATCH: &str = "content_mismatch_on_replay";

/// An ingest alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestAlert {
    /// The event id concerned.
    pub event_id: String,
    /// The zone.
    pub zone_id: String,
    /// What happened, e.g. [`ALERT_CONTENT_MISMATCH`].
    pub kind: String,
    /// Details (`stored=<hex> incoming=<hex>`).
    pub detail: String,
    /// When observed.
    pub observed_at: DateTime<Utc>,
}

/// A search over one zone's rows, in `chain_seq` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// The zone (required).
    pub zone_id: String,
    /// Only rows with `occurred_at >= since`.
    pub since: Option<DateTime<Utc>>,
    /// Only rows with `occurred_at < until`.
    pub until: Option<DateTime<Utc>>,
    /// Only this decision.
    pub decision: Option<String>,
    /// Only this request id.
    pub request_id: Option<String>,
    /// Only rows with `chain_seq > after_seq` (the cursor).
    pub after_seq: i64,
    /// Maximum rows.
    pub limit: u32,
}

/// The audit ledger.
#[async_trait]
pub trait AuditLedger: Send + Sync {
    /// Append `events`, all of zone `zone_id`, in order, serialised with every other append to
    /// that zone, in one transaction; one outcome per event. The rows are hashed and linked
    /// with [`LedgerRow::append`] under `key` (`None`: unsigned links). Every event must
    /// belong to `zone_id` (`Invalid` otherwise, nothing written); an event whose stored form
    /// cannot be built is `Invalid` too (callers convert first to dead-letter single events).
    async fn append(
        &self,
        zone_id: &str,
        events: &[IncomingEvent],
        key: Option<&AuditHmacKey>,
    ) -> StoreResult<Vec<AppendOutcome>>;
    /// The zone's newest row as a head.
    async fn chain_head(&self, zone_id: &str) -> StoreResult<Option<ChainHead>>;
    /// Rows of a zone with `chain_seq > after_seq`, ascending, at most `limit`. Rows with
    /// duplicate sequence numbers (possible only through tampering) are all returned.
    async fn read_chain(
        &self,
        zone_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<LedgerRow>>;
    /// Every zone that has rows.
    async fn ledger_zones(&self) -> StoreResult<Vec<String>>;
    /// Search one zone's rows.
    async fn search_audit(&self, query: &AuditQuery) -> StoreResult<Vec<LedgerRow>>;
    /// Recent ingest alerts, newest first, optionally of one zone.
    async fn ingest_alerts(
        &self,
        zone_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<IngestAlert>>;
    /// Record a signed chain-head checkpoint (idempotent for the same zone and seq).
    async fn put_checkpoint(&self, checkpoint: &ChainCheckpoint) -> StoreResult<()>;
    /// The zone's newest checkpoint.
    async fn latest_checkpoint(&self, zone_id: &str) -> StoreResult<Option<ChainCheckpoint>>;
}

/// What the hourly exporter reads and writes (reference §2.10): rows by ingest time and one
/// watermark per exporter. A trait of its own so ledgers that never export (test doubles) need
/// not implement it.
#[async_trait]
pub trait AuditExportStore: Send + Sync {
    /// Rows with `ingested_at` in `[from, until)`, ordered by `(zone_id, chain_seq)`, strictly
    /// after the keyset position `after` = `(zone_id, chain_seq)` when given, at most `limit`.
    async fn read_ingest_window(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<(&str, i64)>,
        limit: u32,
    ) -> StoreResult<Vec<LedgerRow>>;
    /// The last hour exporter `name` completed.
    async fn export_watermark(&self, name: &str) -> StoreResult<Option<DateTime<Utc>>>;
    /// Record that exporter `name` completed `hour` (upsert).
    async fn set_export_watermark(&self, name: &str, hour: DateTime<Utc>) -> StoreResult<()>;
}

/// An event checked and converted to its stored form, ready to link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEvent {
    /// The event in stored form ([`AuditEvent::into_stored`]).
    pub stored: AuditEvent,
    /// Its content hash.
    pub content_sha256: String,
    /// The producer's `sig`.
    pub ingest_signature: Option<String>,
}

/// Check that every event belongs to `zone_id` and convert each to its stored form with its
/// content hash, before a ledger takes its zone lock: the one validation rule every
/// [`AuditLedger::append`] applies, so an invalid event writes nothing of its batch.
pub fn prepare_batch(zone_id: &str, events: &[IncomingEvent]) -> StoreResult<Vec<PreparedEvent>> {
    events
        .iter()
        .map(|incoming| {
            if incoming.event.zone_id != zone_id {
                return Err(StoreError::Invalid(format!(
                    "event {} belongs to another zone",
                    incoming.event.id
                )));
            }
            let stored = incoming
                .event
                .clone()
                .into_stored()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let content_sha256 =
                content_hash(&stored).map_err(|e| StoreError::Invalid(e.to_string()))?;
            Ok(PreparedEvent {
                stored,
                content_sha256,
                ingest_signature: incoming.ingest_signature.clone(),
            })
        })
        .collect()
}
