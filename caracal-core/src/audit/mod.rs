//! The audit ledger's primitives: the wire event, its stored form, the content hash, the chain
//! link and a chain verifier. Pure functions only; the ingestor, the stores and the CLI call them.
//!
//! ## Why
//!
//! Every decision lands in a per-zone, hash-chained ledger so that editing, inserting or deleting
//! a row after the fact is detectable. Each row carries:
//!
//! - `content_sha256`: SHA-256 over the row's fields ([`content_hash`], reference §2.4);
//! - `prev_content_sha256`: the previous row's content hash in the same zone;
//! - `chain_hmac`: `HMAC(key, content | prev)` ([`chain_hmac`], §2.5), so a forger without the key
//!   cannot re-link a chain after editing it;
//! - `chain_seq`: 1, 2, 3, … per zone, so gaps and duplicates show.
//!
//! The hash is over the **stored** form, not the wire bytes: `occurred_at` truncated to
//! microseconds in UTC and the three JSON fields in Postgres `jsonb` text form ([`jsonb`]).
//! That makes the hash a property of what is in the ledger, so any reader of a row (the
//! verifier, a re-ingest of the same event with different whitespace or key order) recomputes
//! the same value. The raw wire bytes are bound separately by the producer's `sig`
//! ([`verify_payload_sig`], §1.3a), kept as `ingest_signature`.
//!
//! The `jsonb` text form is reproduced natively so the in-memory backend and the Postgres
//! backend hash identically (SPEC §5 item 7); vectors captured from a live Postgres prove it.
//!
//! ## Layout
//!
//! - [`event`]: [`AuditEvent`], strict parse (ingest rules, NUL stripping) and the stored form.
//! - [`jsonb`]: the native `jsonb` text normaliser.
//! - [`hash`]: content hash, chain HMAC, the audit HMAC key, producer payload `sig`.
//! - [`chain`]: the ledger row, linking onto a chain head, checkpoints and the streaming verifier.
//! - [`ingest`]: the `audit-ingestor` handler (outcome table, batching per zone, checkpoints)
//!   and DLQ replay.
//! - [`ledger_verify`]: the verifier run over a stored ledger (CLI and endpoint).
//! - [`export`]: NDJSON export lines, the hourly plan and the offline export verifier.
//! - [`sink`]: the [`AuditSink`](sink::AuditSink) seam decisions are emitted through.
//! - [`emitter`]: the production sink (buffer, stream delivery, disk spill and replay).

pub mod chain;
pub mod emitter;
pub mod event;
pub mod export;
pub mod hash;
pub mod ingest;
pub mod jsonb;
pub mod ledger_verify;
pub mod sink;

pub use chain::{
    ChainCheckpoint, ChainHead, ChainLink, ChainStart, ChainVerifier, CheckpointOutcome, Finding,
    FindingKind, LedgerRow, ReplayVerdict, RowRef, VerifyOptions, VerifyReport, verify_chain,
};
pub use event::{AuditEvent, JsonText};
pub use hash::{
    AuditHmacKey, KeyError, SignatureFailure, chain_hmac, content_hash, sign_payload,
    unix_nanos_micros, verify_payload_sig,
};
pub use jsonb::{JsonbError, JsonbErrorKind};

/// An error of the audit primitives.
///
/// The parse variants ([`AuditError::Json`], [`AuditError::MissingField`],
/// [`AuditError::ZeroOccurredAt`], [`AuditError::InvalidOccurredAt`],
/// [`AuditError::OccurredAtOutOfRange`]) and [`AuditError::JsonField`] are input errors: the
/// ingestor dead-letters them as `json_parse_error:<error>`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The event is not JSON, or a field has the wrong JSON type.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A required field is missing or empty (`id`, `zone_id`, `occurred_at`).
    #[error("missing or empty field `{0}`")]
    MissingField(&'static str),
    /// `occurred_at` is the zero time (`0001-01-01T00:00:00Z`), which the reference refuses.
    #[error("occurred_at is the zero time")]
    ZeroOccurredAt,
    /// `occurred_at` is not an RFC 3339 timestamp (or names a leap second).
    #[error("occurred_at is not an RFC 3339 timestamp: {0}")]
    InvalidOccurredAt(String),
    /// `occurred_at` has no Unix-nanosecond form (outside 1677-09-21 to 2262-04-11).
    #[error("occurred_at is outside the representable range")]
    OccurredAtOutOfRange,
    /// A JSON field has no Postgres `jsonb` form.
    #[error("{field}: {source}")]
    JsonField {
        /// The wire name of the field.
        field: &'static str,
        /// Why the normaliser refused it.
        #[source]
        source: JsonbError,
    },
    /// The audit HMAC key is unusable.
    #[error("audit HMAC key: {0}")]
    Key(#[from] KeyError),
    /// A producer payload `sig` did not verify.
    #[error("payload signature: {0}")]
    PayloadSignature(#[from] SignatureFailure),
    /// The zone's chain is at `i64::MAX`.
    #[error("chain_seq overflow")]
    SeqOverflow,
}
