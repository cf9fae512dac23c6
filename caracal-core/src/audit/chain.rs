//! The ledger row, the chain link rule and the chain verifier.
//!
//! One rule links a new event onto a zone's chain ([`LedgerRow::append`] / [`ChainLink::next`]),
//! so the in-memory and the Postgres appenders cannot drift apart. The verifier
//! ([`ChainVerifier`]) goes beyond the reference's tamper sweep (§2.6, §7 item 5): besides
//! content mismatches, broken links and HMAC failures, it reports gaps and duplicates in
//! `chain_seq`, a first row that does not start the chain, and, given a signed
//! [`ChainCheckpoint`], a truncated tip.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::AuditError;
use super::event::AuditEvent;
use super::hash::{AuditHmacKey, chain_hmac, chain_hmac_matches, content_hash};

/// The newest row of a zone's chain, as the appender reads it under the zone lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    /// Its content hash (lowercase hex).
    pub content_sha256: String,
    /// Its sequence number.
    pub chain_seq: i64,
}

/// The chain columns of a new row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// The new row's content hash.
    pub content_sha256: String,
    /// The head's content hash; `None` for the zone's first row.
    pub prev_content_sha256: Option<String>,
    /// `HMAC(content | prev)`, or `""` without a key.
    pub chain_hmac: String,
    /// The head's sequence plus one; 1 for the zone's first row.
    pub chain_seq: i64,
}

impl ChainLink {
    /// Link a row with `content_sha256` onto `head` (`None` for an empty zone).
    pub fn next(
        head: Option<&ChainHead>,
        content_sha256: String,
        key: Option<&AuditHmacKey>,
    ) -> Result<Self, AuditError> {
        let (prev, prev_seq) = match head {
            Some(head) if !head.content_sha256.is_empty() => {
                (Some(head.content_sha256.clone()), head.chain_seq)
            }
            Some(head) => (None, head.chain_seq),
            None => (None, 0),
        };
        let chain_seq = prev_seq.checked_add(1).ok_or(AuditError::SeqOverflow)?;
        let chain_hmac = chain_hmac(key, &content_sha256, prev.as_deref().unwrap_or_default());
        Ok(Self {
            content_sha256,
            prev_content_sha256: prev,
            chain_hmac,
            chain_seq,
        })
    }
}

/// One row of the audit ledger (`audit_events`): the stored event and its chain columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// The event in stored form ([`AuditEvent::into_stored`]).
    pub event: AuditEvent,
    /// Content hash of `event` (§2.4).
    pub content_sha256: String,
    /// Previous row's content hash in the zone; `None` for the first row.
    pub prev_content_sha256: Option<String>,
    /// Chain HMAC (§2.5), `""` when the ledger runs without a key.
    pub chain_hmac: String,
    /// Dense per-zone sequence, starting at 1.
    pub chain_seq: i64,
    /// The producer's `sig`, if any.
    pub ingest_signature: Option<String>,
    /// When the ledger accepted the row.
    pub ingested_at: DateTime<Utc>,
}

impl LedgerRow {
    /// Build the row that appends `event` to a zone whose chain head is `head` (§2.3 steps 2–4):
    /// canonicalise to the stored form, hash, link. An empty `ingest_signature` is stored as
    /// `None`, as the reference does.
    pub fn append(
        event: AuditEvent,
        head: Option<&ChainHead>,
        key: Option<&AuditHmacKey>,
        ingest_signature: Option<String>,
        ingested_at: DateTime<Utc>,
    ) -> Result<Self, AuditError> {
        let event = event.into_stored()?;
        let link = ChainLink::next(head, content_hash(&event)?, key)?;
        Ok(Self {
            event,
            content_sha256: link.content_sha256,
            prev_content_sha256: link.prev_content_sha256,
            chain_hmac: link.chain_hmac,
            chain_seq: link.chain_seq,
            ingest_signature: ingest_signature.filter(|s| !s.is_empty()),
            ingested_at,
        })
    }

    /// This row as a chain head.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            content_sha256: self.content_sha256.clone(),
            chain_seq: self.chain_seq,
        }
    }

    /// This row's identity for reports.
    pub fn row_ref(&self) -> RowRef {
        RowRef {
            event_id: self.event.id.clone(),
            occurred_at: self.event.occurred_at,
            chain_seq: self.chain_seq,
        }
    }
}

/// What to do when an insert hits an existing `(id, occurred_at)` (§2.3 step 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Same content (or a legacy row without a hash): acknowledge, no new row, no seq used.
    BenignDuplicate,
    /// Different content under the same key: `tamper_on_replay`, raise an alert.
    Tampered,
}

impl ReplayVerdict {
    /// Compare the stored row's content hash with the incoming event's.
    pub fn judge(stored_content_sha256: &str, incoming_content_sha256: &str) -> Self {
        if stored_content_sha256.is_empty() || stored_content_sha256 == incoming_content_sha256 {
            Self::BenignDuplicate
        } else {
            Self::Tampered
        }
    }
}

/// A signed statement "zone Z's chain had head H at seq N", taken periodically so that deleting
/// rows at the tip (which no link can reveal) is detected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainCheckpoint {
    /// The zone.
    pub zone_id: String,
    /// The head's sequence number.
    pub chain_seq: i64,
    /// The head's content hash.
    pub content_sha256: String,
    /// Lowercase hex HMAC over the three fields above (empty when unsigned).
    pub signature: String,
}

/// Domain separation: a checkpoint MAC can never be mistaken for a chain or payload MAC.
const CHECKPOINT_DOMAIN: &[u8] = b"caracal.audit.checkpoint.v1";

impl ChainCheckpoint {
    /// Sign the head of `zone_id`.
    pub fn sign(key: &AuditHmacKey, zone_id: impl Into<String>, head: &ChainHead) -> Self {
        let mut checkpoint = Self::unsigned(zone_id, head);
        checkpoint.signature = key.sign_parts(&[&checkpoint.signing_input()]);
        checkpoint
    }

    /// An unsigned checkpoint, for callers that authenticate it some other way.
    pub fn unsigned(zone_id: impl Into<String>, head: &ChainHead) -> Self {
        Self {
            zone_id: zone_id.into(),
            chain_seq: head.chain_seq,
            content_sha256: head.content_sha256.clone(),
            signature: String::new(),
        }
    }

    /// Whether the signature is valid under `key` (constant-time).
    pub fn verify_signature(&self, key: &AuditHmacKey) -> bool {
        key.verify_parts(&[&self.signing_input()], &self.signature)
    }

    /// Domain tag, then length-prefixed fields, so no two checkpoints share a signing input.
    fn signing_input(&self) -> Vec<u8> {
        let mut input = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + self.zone_id.len() + 112);
        input.extend_from_slice(CHECKPOINT_DOMAIN);
        for field in [
            self.zone_id.as_bytes(),
            self.chain_seq.to_string().as_bytes(),
            self.content_sha256.as_bytes(),
        ] {
            input.extend_from_slice(&(field.len() as u64).to_be_bytes());
            input.extend_from_slice(field);
        }
        input
    }
}

/// Where the rows handed to a verifier start.
#[derive(Debug, Clone, Default)]
pub enum ChainStart {
    /// The whole chain: the first row must be seq 1 with no `prev`.
    #[default]
    Genesis,
    /// Continuing after a trusted head (for example the last verified checkpoint): the first
    /// row must be `head.chain_seq + 1` and link to `head`.
    After(ChainHead),
    /// An arbitrary window (the reference's rolling sweep): the first row is not link- or
    /// seq-checked.
    Window,
}

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The audit HMAC key; without it chain HMACs are not checked.
    pub key: Option<AuditHmacKey>,
    /// Where the rows start.
    pub start: ChainStart,
    /// A checkpoint the run must reach. With a key its signature must verify; without one the
    /// caller vouches for it.
    pub checkpoint: Option<ChainCheckpoint>,
    /// At most this many findings are listed; counts stay exact.
    pub max_findings: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            key: None,
            start: ChainStart::Genesis,
            checkpoint: None,
            max_findings: 1_000,
        }
    }
}

/// Identity of a ledger row in a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowRef {
    /// The event id.
    pub event_id: String,
    /// Its `occurred_at` (with `event_id`, the ledger key).
    pub occurred_at: DateTime<Utc>,
    /// Its `chain_seq`.
    pub chain_seq: i64,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingKind {
    /// The recomputed content hash differs from the stored one: the row was edited.
    ContentMismatch {
        /// Stored `content_sha256`.
        stored: String,
        /// Recomputed from the stored columns.
        recomputed: String,
    },
    /// The stored JSON has no `jsonb` form, so no hash can be recomputed (counted as a
    /// content mismatch).
    Unhashable {
        /// Why.
        error: String,
    },
    /// `prev_content_sha256` is not the previous row's content hash (or a first row has one).
    ChainBreak {
        /// What it should be (`None`: no prev at the start of the chain).
        expected: Option<String>,
        /// What it is.
        found: Option<String>,
    },
    /// The chain HMAC does not verify under the key.
    HmacFailure,
    /// Sequence numbers are missing before this row.
    Gap {
        /// The last sequence number seen before the gap (0 at the start of the chain).
        after_seq: i64,
        /// How many are missing.
        missing: i64,
    },
    /// Another row already has this sequence number.
    DuplicateSeq,
    /// The row's sequence number is lower than its predecessor's: the input is not ordered.
    OutOfOrder {
        /// The sequence number seen before it.
        previous_seq: i64,
    },
    /// A sequence number below 1.
    InvalidSeq,
    /// The row belongs to another zone.
    ForeignZone {
        /// Its zone.
        zone_id: String,
    },
    /// The checkpoint's signature does not verify, so it was not used.
    CheckpointForged,
    /// The checkpoint names another zone, so it was not used.
    CheckpointWrongZone,
    /// The row at the checkpoint's sequence has another content hash.
    CheckpointMismatch {
        /// The hash in the checkpoint.
        expected: String,
        /// The stored hash.
        found: String,
    },
    /// The chain ends before the checkpoint: rows at the tip were removed.
    Truncated {
        /// The checkpoint's sequence number.
        checkpoint_seq: i64,
        /// The last sequence number present, if any.
        last_seq: Option<i64>,
    },
    /// The row at the checkpoint's sequence is missing though later rows exist.
    CheckpointRowMissing {
        /// The checkpoint's sequence number.
        checkpoint_seq: i64,
    },
}

/// One problem, with the row it was found at (`None` for whole-chain findings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The row, if the finding is about one.
    pub row: Option<RowRef>,
    /// What is wrong.
    #[serde(flatten)]
    pub kind: FindingKind,
}

/// The checkpoint's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointOutcome {
    /// The row at the checkpoint's seq exists with the checkpoint's hash.
    Verified,
    /// The rows start after the checkpoint's seq (a window), so it says nothing.
    NotCovered,
    /// The checkpoint's signature is invalid.
    Forged,
    /// The checkpoint is for another zone.
    WrongZone,
    /// The row at the checkpoint's seq has another hash.
    Mismatch,
    /// The chain ends before the checkpoint.
    Truncated,
    /// The checkpoint's row is missing but later rows exist.
    RowMissing,
}

/// The result of verifying one zone's chain: exact counts and a capped list of findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The zone verified.
    pub zone_id: String,
    /// Rows fed to the verifier.
    pub rows_checked: u64,
    /// Whether chain HMACs were checked (a key was given).
    pub hmac_checked: bool,
    /// Lowest sequence number seen.
    pub first_seq: Option<i64>,
    /// Highest sequence number seen.
    pub last_seq: Option<i64>,
    /// The last in-order row, for signing the next checkpoint.
    pub head: Option<ChainHead>,
    /// Rows whose content hash does not recompute (includes unhashable rows).
    pub content_mismatches: u64,
    /// Rows whose `prev` does not link (includes a first row with a `prev`).
    pub chain_breaks: u64,
    /// Rows whose chain HMAC does not verify.
    pub hmac_failures: u64,
    /// Places where sequence numbers are missing.
    pub gaps: u64,
    /// Sequence numbers missing in total.
    pub missing_rows: u64,
    /// Rows sharing a sequence number with an earlier row.
    pub duplicate_seqs: u64,
    /// Rows fed out of order.
    pub out_of_order: u64,
    /// Rows with a sequence number below 1.
    pub invalid_seqs: u64,
    /// Rows of another zone (ignored).
    pub foreign_rows: u64,
    /// The checkpoint's verdict, if one was given.
    pub checkpoint: Option<CheckpointOutcome>,
    /// The first `max_findings` findings, in input order.
    pub findings: Vec<Finding>,
    /// Findings beyond the cap.
    pub findings_omitted: u64,
}

impl VerifyReport {
    fn new(zone_id: String, hmac_checked: bool) -> Self {
        Self {
            zone_id,
            rows_checked: 0,
            hmac_checked,
            first_seq: None,
            last_seq: None,
            head: None,
            content_mismatches: 0,
            chain_breaks: 0,
            hmac_failures: 0,
            gaps: 0,
            missing_rows: 0,
            duplicate_seqs: 0,
            out_of_order: 0,
            invalid_seqs: 0,
            foreign_rows: 0,
            checkpoint: None,
            findings: Vec::new(),
            findings_omitted: 0,
        }
    }

    /// Findings in total (listed and omitted).
    pub fn finding_count(&self) -> u64 {
        self.findings.len() as u64 + self.findings_omitted
    }

    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.finding_count() == 0
    }
}

/// What a row's `prev` must match.
#[derive(Debug, Clone)]
enum Predecessor {
    /// Unknown (start of a window): not checked.
    Unknown,
    /// Start of the chain: no `prev`.
    Genesis,
    /// Any of these content hashes (several when a sequence number is duplicated).
    Rows(Vec<String>),
}

impl Predecessor {
    /// A row's `prev` is checked against this; `None` when it links.
    fn check(&self, prev: Option<&str>) -> Option<FindingKind> {
        let prev = prev.filter(|p| !p.is_empty());
        match self {
            Self::Unknown => None,
            Self::Genesis => prev.map(|found| FindingKind::ChainBreak {
                expected: None,
                found: Some(found.to_owned()),
            }),
            Self::Rows(hashes) => {
                if prev.is_some_and(|p| hashes.iter().any(|h| h == p)) {
                    None
                } else {
                    Some(FindingKind::ChainBreak {
                        expected: hashes.first().cloned(),
                        found: prev.map(str::to_owned),
                    })
                }
            }
        }
    }
}

/// Rows remembered per duplicated sequence number; beyond this, links to later duplicates are
/// reported as breaks rather than growing memory without bound.
const MAX_GROUP: usize = 64;

/// State of the checkpoint check.
#[derive(Debug)]
enum CheckpointState {
    None,
    Done(CheckpointOutcome),
    Pending {
        checkpoint: ChainCheckpoint,
        seen: bool,
        matched: bool,
        found: Option<(RowRef, String)>,
    },
}

/// Verifies one zone's chain from rows fed in `chain_seq` order, one at a time, so a ledger of
/// any size streams through in constant memory (apart from the capped findings).
///
/// ```
/// # use caracal_core::audit::{ChainVerifier, VerifyOptions};
/// let mut verifier = ChainVerifier::new("zone-1", VerifyOptions::default());
/// // for row in rows_ordered_by_chain_seq { verifier.push(&row); }
/// let report = verifier.finish();
/// assert!(report.is_clean());
/// ```
#[derive(Debug)]
pub struct ChainVerifier {
    key: Option<AuditHmacKey>,
    start: ChainStart,
    max_findings: usize,
    /// Highest in-order sequence number so far (`None` before the first row of a window).
    last_seq: Option<i64>,
    /// What rows at `last_seq` link to (for duplicates).
    before_last: Predecessor,
    /// The rows at `last_seq` (what the next sequence number links to).
    at_last: Predecessor,
    checkpoint: CheckpointState,
    report: VerifyReport,
}

impl ChainVerifier {
    /// A verifier for `zone_id`.
    pub fn new(zone_id: impl Into<String>, options: VerifyOptions) -> Self {
        let zone_id = zone_id.into();
        let (last_seq, at_last) = match &options.start {
            ChainStart::Genesis => (Some(0), Predecessor::Genesis),
            ChainStart::After(head) => (
                Some(head.chain_seq),
                Predecessor::Rows(vec![head.content_sha256.clone()]),
            ),
            ChainStart::Window => (None, Predecessor::Unknown),
        };
        let mut verifier = Self {
            report: VerifyReport::new(zone_id, options.key.is_some()),
            key: options.key,
            start: options.start,
            max_findings: options.max_findings,
            last_seq,
            before_last: Predecessor::Unknown,
            at_last,
            checkpoint: CheckpointState::None,
        };
        if let Some(checkpoint) = options.checkpoint {
            verifier.checkpoint = verifier.accept_checkpoint(checkpoint);
        }
        verifier
    }

    fn accept_checkpoint(&mut self, checkpoint: ChainCheckpoint) -> CheckpointState {
        if checkpoint.zone_id != self.report.zone_id {
            self.record(None, FindingKind::CheckpointWrongZone);
            return CheckpointState::Done(CheckpointOutcome::WrongZone);
        }
        if let Some(key) = &self.key {
            if !checkpoint.verify_signature(key) {
                self.record(None, FindingKind::CheckpointForged);
                return CheckpointState::Done(CheckpointOutcome::Forged);
            }
        }
        CheckpointState::Pending {
            checkpoint,
            seen: false,
            matched: false,
            found: None,
        }
    }

    fn record(&mut self, row: Option<RowRef>, kind: FindingKind) {
        if self.report.findings.len() < self.max_findings {
            self.report.findings.push(Finding { row, kind });
        } else {
            self.report.findings_omitted += 1;
        }
    }

    /// Check the next row (rows must come in ascending `chain_seq`).
    pub fn push(&mut self, row: &LedgerRow) {
        self.report.rows_checked += 1;
        if row.event.zone_id != self.report.zone_id {
            self.report.foreign_rows += 1;
            let zone_id = row.event.zone_id.clone();
            self.record(Some(row.row_ref()), FindingKind::ForeignZone { zone_id });
            return;
        }
        self.check_content(row);
        self.check_hmac(row);
        self.check_sequence_and_link(row);
        self.observe_checkpoint(row);
    }

    fn check_content(&mut self, row: &LedgerRow) {
        let kind = match content_hash(&row.event) {
            Ok(recomputed) if recomputed == row.content_sha256 => return,
            Ok(recomputed) => FindingKind::ContentMismatch {
                stored: row.content_sha256.clone(),
                recomputed,
            },
            Err(error) => FindingKind::Unhashable {
                error: error.to_string(),
            },
        };
        self.report.content_mismatches += 1;
        self.record(Some(row.row_ref()), kind);
    }

    fn check_hmac(&mut self, row: &LedgerRow) {
        let Some(key) = &self.key else {
            return;
        };
        let prev = row.prev_content_sha256.as_deref().unwrap_or_default();
        if !chain_hmac_matches(key, &row.content_sha256, prev, &row.chain_hmac) {
            self.report.hmac_failures += 1;
            self.record(Some(row.row_ref()), FindingKind::HmacFailure);
        }
    }

    fn check_link(&mut self, row: &LedgerRow, predecessor: &Predecessor) {
        if let Some(kind) = predecessor.check(row.prev_content_sha256.as_deref()) {
            self.report.chain_breaks += 1;
            self.record(Some(row.row_ref()), kind);
        }
    }

    fn check_sequence_and_link(&mut self, row: &LedgerRow) {
        let seq = row.chain_seq;
        if seq < 1 {
            self.report.invalid_seqs += 1;
            self.record(Some(row.row_ref()), FindingKind::InvalidSeq);
            return;
        }
        self.report.first_seq = Some(self.report.first_seq.map_or(seq, |s| s.min(seq)));
        self.report.last_seq = Some(self.report.last_seq.map_or(seq, |s| s.max(seq)));
        let Some(last) = self.last_seq else {
            // First row of a window: nothing to link to.
            self.advance(row, Predecessor::Unknown);
            return;
        };
        if seq < last {
            self.report.out_of_order += 1;
            self.record(
                Some(row.row_ref()),
                FindingKind::OutOfOrder { previous_seq: last },
            );
        } else if seq == last {
            self.report.duplicate_seqs += 1;
            self.record(Some(row.row_ref()), FindingKind::DuplicateSeq);
            let before = self.before_last.clone();
            self.check_link(row, &before);
            if let Predecessor::Rows(hashes) = &mut self.at_last {
                if hashes.len() < MAX_GROUP {
                    hashes.push(row.content_sha256.clone());
                }
            }
        } else {
            // Saturating: a caller-supplied head may hold any i64, and overflow must not panic.
            let missing = seq.saturating_sub(last).saturating_sub(1);
            if missing > 0 {
                self.report.gaps += 1;
                let count = u64::try_from(missing).unwrap_or(u64::MAX);
                self.report.missing_rows = self.report.missing_rows.saturating_add(count);
                let kind = FindingKind::Gap {
                    after_seq: last,
                    missing,
                };
                self.record(Some(row.row_ref()), kind);
            }
            let predecessor = std::mem::replace(&mut self.at_last, Predecessor::Unknown);
            self.check_link(row, &predecessor);
            self.advance(row, predecessor);
        }
    }

    /// `row` is the first at a new, higher sequence number.
    fn advance(&mut self, row: &LedgerRow, predecessor: Predecessor) {
        self.last_seq = Some(row.chain_seq);
        self.before_last = predecessor;
        self.at_last = Predecessor::Rows(vec![row.content_sha256.clone()]);
        self.report.head = Some(row.head());
    }

    fn observe_checkpoint(&mut self, row: &LedgerRow) {
        if let CheckpointState::Pending {
            checkpoint,
            seen,
            matched,
            found,
        } = &mut self.checkpoint
        {
            if row.chain_seq == checkpoint.chain_seq {
                *seen = true;
                if row.content_sha256 == checkpoint.content_sha256 {
                    *matched = true;
                } else if found.is_none() {
                    *found = Some((row.row_ref(), row.content_sha256.clone()));
                }
            }
        }
    }

    fn finish_checkpoint(&mut self) {
        let state = std::mem::replace(&mut self.checkpoint, CheckpointState::None);
        let outcome = match state {
            CheckpointState::None => return,
            CheckpointState::Done(outcome) => outcome,
            CheckpointState::Pending {
                checkpoint,
                seen,
                matched,
                found,
            } => self.judge_checkpoint(&checkpoint, seen, matched, found),
        };
        self.report.checkpoint = Some(outcome);
    }

    fn judge_checkpoint(
        &mut self,
        checkpoint: &ChainCheckpoint,
        seen: bool,
        matched: bool,
        found: Option<(RowRef, String)>,
    ) -> CheckpointOutcome {
        let checkpoint_seq = checkpoint.chain_seq;
        let expected = checkpoint.content_sha256.clone();
        if matched {
            return CheckpointOutcome::Verified;
        }
        if seen {
            let (row, found) = found.map_or((None, String::new()), |(r, h)| (Some(r), h));
            self.record(row, FindingKind::CheckpointMismatch { expected, found });
            return CheckpointOutcome::Mismatch;
        }
        match &self.start {
            // The checkpoint is the trusted head itself, or older than it.
            ChainStart::After(head) if checkpoint_seq == head.chain_seq => {
                if head.content_sha256 == expected {
                    return CheckpointOutcome::Verified;
                }
                let found = head.content_sha256.clone();
                self.record(None, FindingKind::CheckpointMismatch { expected, found });
                return CheckpointOutcome::Mismatch;
            }
            ChainStart::After(head) if checkpoint_seq < head.chain_seq => {
                return CheckpointOutcome::NotCovered;
            }
            ChainStart::Window if self.report.first_seq.is_some_and(|f| f > checkpoint_seq) => {
                return CheckpointOutcome::NotCovered;
            }
            _ if checkpoint_seq < 1 => return CheckpointOutcome::NotCovered,
            _ => {}
        }
        let last_seq = self.report.last_seq;
        if last_seq.is_none_or(|last| last < checkpoint_seq) {
            self.record(
                None,
                FindingKind::Truncated {
                    checkpoint_seq,
                    last_seq,
                },
            );
            return CheckpointOutcome::Truncated;
        }
        // Later rows exist; the gap finding already points at where.
        self.record(None, FindingKind::CheckpointRowMissing { checkpoint_seq });
        CheckpointOutcome::RowMissing
    }

    /// The report. Checks the checkpoint against everything seen.
    pub fn finish(mut self) -> VerifyReport {
        self.finish_checkpoint();
        self.report
    }
}

/// Verify one zone's rows, given in `chain_seq` order.
pub fn verify_chain<'a>(
    zone_id: &str,
    rows: impl IntoIterator<Item = &'a LedgerRow>,
    options: VerifyOptions,
) -> VerifyReport {
    let mut verifier = ChainVerifier::new(zone_id, options);
    for row in rows {
        verifier.push(row);
    }
    verifier.finish()
}
