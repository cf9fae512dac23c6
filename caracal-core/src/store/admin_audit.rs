//! The admin audit chain (`admin_audit_events`, reference `audit-streams-schema.md` §2.14):
//! one record per mutating Admin API or Coordinator request, written synchronously before the
//! response leaves, hash-chained per zone (or on one global chain for zone-less requests).
//!
//! The chain reuses the audit ledger's primitives ([`crate::audit`]): the link rule
//! [`ChainLink::next`] (dense `chain_seq`, `prev_content_sha256`, `chain_hmac` =
//! `HMAC(content | prev)` under an [`AuditHmacKey`]), the constant-time HMAC check and the
//! verifier's report types ([`VerifyReport`], [`FindingKind`]). Only the content hash differs,
//! because the reference hashes other fields here: SHA-256 over `id`, `request_id`,
//! `actor_id`, `actor_name`, `actor_scope`, `action`, `method`, `path`, `zone_id`,
//! `entity_type`, `entity_id`, `status_code` (decimal), `payload`, `occurred_at` (ISO-8601 ms),
//! **each** followed by 0x1F (a trailing separator after `occurred_at` too, unlike §2.4).
//!
//! ## Invariants
//!
//! - Appends to one chain are serialised (a `pg_advisory_xact_lock(hashtext(zone_id or
//!   "admin-audit::global"))` in Postgres, one mutex in memory), so `chain_seq` is dense from 1
//!   and every row links to its predecessor.
//! - Rows are append-only (a trigger refuses `UPDATE`/`DELETE` in Postgres); tampering with the
//!   trigger disabled is what [`verify_admin_chain`] exists to find.
//! - Every string is stored and hashed without NUL characters, and `occurred_at` at
//!   millisecond precision, so a row read back hashes to its stored `content_sha256`.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};

use super::{StoreError, StoreResult};
use crate::audit::hash::chain_hmac_matches;
use crate::audit::{
    AuditHmacKey, ChainHead, ChainLink, Finding, FindingKind, RowRef, VerifyReport,
};
use crate::model::time::format_iso_ms;

/// The advisory-lock key (and report label) of the zone-less chain.
pub const GLOBAL_CHAIN: &str = "admin-audit::global";

/// What a request handler records: who did what to which entity, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAuditEntry {
    /// UUIDv7 id of the record.
    pub id: String,
    /// The request's id (`X-Request-Id`).
    pub request_id: Option<String>,
    /// The actor (`admin:<token id>`, or the Coordinator caller's `client_id`).
    pub actor_id: Option<String>,
    /// The actor's display name (the admin token's name, when known).
    pub actor_name: Option<String>,
    /// The actor's scope (`global`, `zone`, or the Coordinator caller kind).
    pub actor_scope: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// The zone the request targeted; `None` puts the record on the global chain.
    pub zone_id: Option<String>,
    /// Kind of entity changed, e.g. `application`.
    pub entity_type: Option<String>,
    /// Id of the entity changed.
    pub entity_id: Option<String>,
    /// The response status.
    pub status_code: i32,
    /// Extra serialised detail ("" for none).
    pub payload: String,
    /// When it happened (stored at millisecond precision).
    pub occurred_at: DateTime<Utc>,
}

impl AdminAuditEntry {
    /// `"<METHOD> <path>"`, the stored `action`.
    pub fn action(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The entry as it is stored: NULs stripped from every string, `occurred_at` truncated to
    /// the millisecond (its hashed ISO form), empty optional strings as `None`.
    pub fn normalized(&self) -> Self {
        let s = |v: &str| v.replace('\0', "");
        let o = |v: &Option<String>| v.as_deref().map(s).filter(|v| !v.is_empty());
        Self {
            id: s(&self.id),
            request_id: o(&self.request_id),
            actor_id: o(&self.actor_id),
            actor_name: o(&self.actor_name),
            actor_scope: o(&self.actor_scope),
            method: s(&self.method),
            path: s(&self.path),
            zone_id: o(&self.zone_id),
            entity_type: o(&self.entity_type),
            entity_id: o(&self.entity_id),
            status_code: self.status_code,
            payload: s(&self.payload),
            occurred_at: self.occurred_at.trunc_subsecs(3),
        }
    }

    /// The chain this entry belongs to (its zone, or [`GLOBAL_CHAIN`]).
    pub fn chain(&self) -> &str {
        self.zone_id.as_deref().unwrap_or(GLOBAL_CHAIN)
    }
}

/// A stored record: the entry and its chain columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAuditRecord {
    /// The entry in stored form ([`AdminAuditEntry::normalized`]).
    pub entry: AdminAuditEntry,
    /// The stored `action`.
    pub action: String,
    /// Content hash (lowercase hex).
    pub content_sha256: String,
    /// The previous record's content hash on the same chain; `None` for the first.
    pub prev_content_sha256: Option<String>,
    /// `HMAC(content | prev)`, `""` without a key.
    pub chain_hmac: String,
    /// Dense per-chain sequence from 1.
    pub chain_seq: i64,
}

impl AdminAuditRecord {
    /// This record as a chain head.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            content_sha256: self.content_sha256.clone(),
            chain_seq: self.chain_seq,
        }
    }

    /// Build the record appending `entry` onto a chain whose head is `head` (`None`: empty
    /// chain). The one link rule of both stores.
    pub fn link(
        entry: &AdminAuditEntry,
        head: Option<&ChainHead>,
        key: Option<&AuditHmacKey>,
    ) -> StoreResult<Self> {
        let entry = entry.normalized();
        let action = entry.action();
        let content = admin_content_hash(&entry, &action);
        let link =
            ChainLink::next(head, content, key).map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(Self {
            entry,
            action,
            content_sha256: link.content_sha256,
            prev_content_sha256: link.prev_content_sha256,
            chain_hmac: link.chain_hmac,
            chain_seq: link.chain_seq,
        })
    }

    fn row_ref(&self) -> RowRef {
        RowRef {
            event_id: self.entry.id.clone(),
            occurred_at: self.entry.occurred_at,
            chain_seq: self.chain_seq,
        }
    }
}

/// The content hash of §2.14 over a stored entry and its stored `action`, lowercase hex.
pub fn admin_content_hash(entry: &AdminAuditEntry, action: &str) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let status = entry.status_code.to_string();
    let occurred = format_iso_ms(&entry.occurred_at);
    let fields: [&str; 14] = [
        &entry.id,
        &opt(&entry.request_id),
        &opt(&entry.actor_id),
        &opt(&entry.actor_name),
        &opt(&entry.actor_scope),
        action,
        &entry.method,
        &entry.path,
        &opt(&entry.zone_id),
        &opt(&entry.entity_type),
        &opt(&entry.entity_id),
        &status,
        &entry.payload,
        &occurred,
    ];
    let mut hasher = Sha256::new();
    for field in fields {
        // Stored strings carry no NUL (the reference strips them before hashing).
        for part in field.split('\0') {
            hasher.update(part.as_bytes());
        }
        hasher.update([0x1F]);
    }
    hex::encode(hasher.finalize())
}

/// The admin audit chain store.
#[async_trait]
pub trait AdminAuditStore: Send + Sync {
    /// Append `entry` to its chain ([`AdminAuditEntry::chain`]), serialised with every other
    /// append to that chain, linked with [`AdminAuditRecord::link`] under `key`. A taken id
    /// is `Conflict("admin_audit_id")`.
    async fn append_admin_audit(
        &self,
        entry: &AdminAuditEntry,
        key: Option<&AuditHmacKey>,
    ) -> StoreResult<AdminAuditRecord>;

    /// Records of one chain (`zone_id`, or the global chain for `None`) with
    /// `chain_seq > after_seq`, ascending, at most `limit` (0 is `Invalid`). Duplicated
    /// sequence numbers (only possible through tampering) are all returned.
    async fn list_admin_audit(
        &self,
        zone_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AdminAuditRecord>>;
}

/// Check one chain's records, given in `chain_seq` order from the start of the chain:
/// recomputed content hashes, links to the predecessor, HMACs under `key` (skipped without
/// one), and dense sequence numbers from 1. The report uses the ledger verifier's types.
pub fn verify_admin_chain<'a>(
    zone_id: Option<&str>,
    records: impl IntoIterator<Item = &'a AdminAuditRecord>,
    key: Option<&AuditHmacKey>,
) -> VerifyReport {
    let mut report = VerifyReport {
        zone_id: zone_id.unwrap_or(GLOBAL_CHAIN).to_owned(),
        rows_checked: 0,
        hmac_checked: key.is_some(),
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
    };
    fn record(report: &mut VerifyReport, row: Option<RowRef>, kind: FindingKind) {
        const MAX_FINDINGS: usize = 1_000;
        if report.findings.len() < MAX_FINDINGS {
            report.findings.push(Finding { row, kind });
        } else {
            report.findings_omitted += 1;
        }
    }
    let mut last_seq = 0_i64;
    let mut prev_hash: Option<String> = None;
    for r in records {
        report.rows_checked += 1;
        if r.entry.zone_id.as_deref() != zone_id {
            report.foreign_rows += 1;
            let zone_id = r.entry.zone_id.clone().unwrap_or_default();
            record(
                &mut report,
                Some(r.row_ref()),
                FindingKind::ForeignZone { zone_id },
            );
            continue;
        }
        let recomputed = admin_content_hash(&r.entry, &r.action);
        if recomputed != r.content_sha256 || r.action != r.entry.action() {
            report.content_mismatches += 1;
            let kind = FindingKind::ContentMismatch {
                stored: r.content_sha256.clone(),
                recomputed,
            };
            record(&mut report, Some(r.row_ref()), kind);
        }
        if let Some(key) = key {
            let prev = r.prev_content_sha256.as_deref().unwrap_or_default();
            if !chain_hmac_matches(key, &r.content_sha256, prev, &r.chain_hmac) {
                report.hmac_failures += 1;
                record(&mut report, Some(r.row_ref()), FindingKind::HmacFailure);
            }
        }
        let seq = r.chain_seq;
        if seq < 1 {
            report.invalid_seqs += 1;
            record(&mut report, Some(r.row_ref()), FindingKind::InvalidSeq);
            continue;
        }
        report.first_seq = Some(report.first_seq.map_or(seq, |s| s.min(seq)));
        report.last_seq = Some(report.last_seq.map_or(seq, |s| s.max(seq)));
        if seq < last_seq {
            report.out_of_order += 1;
            let kind = FindingKind::OutOfOrder {
                previous_seq: last_seq,
            };
            record(&mut report, Some(r.row_ref()), kind);
            continue;
        }
        if seq == last_seq {
            report.duplicate_seqs += 1;
            record(&mut report, Some(r.row_ref()), FindingKind::DuplicateSeq);
            continue;
        }
        let missing = seq.saturating_sub(last_seq).saturating_sub(1);
        if missing > 0 {
            report.gaps += 1;
            report.missing_rows = report
                .missing_rows
                .saturating_add(u64::try_from(missing).unwrap_or(u64::MAX));
            let kind = FindingKind::Gap {
                after_seq: last_seq,
                missing,
            };
            record(&mut report, Some(r.row_ref()), kind);
        }
        let found = r.prev_content_sha256.clone().filter(|p| !p.is_empty());
        if found != prev_hash {
            report.chain_breaks += 1;
            let kind = FindingKind::ChainBreak {
                expected: prev_hash.clone(),
                found,
            };
            record(&mut report, Some(r.row_ref()), kind);
        }
        last_seq = seq;
        prev_hash = Some(r.content_sha256.clone());
        report.head = Some(r.head());
    }
    report
}

/// Read a whole chain from `store` page by page and verify it ([`verify_admin_chain`]).
pub async fn verify_admin_audit(
    store: &dyn AdminAuditStore,
    zone_id: Option<&str>,
    key: Option<&AuditHmacKey>,
) -> StoreResult<VerifyReport> {
    const PAGE: u32 = 500;
    let mut all = Vec::new();
    let mut after = 0_i64;
    loop {
        let page = store.list_admin_audit(zone_id, after, PAGE).await?;
        let full = page.len() >= PAGE as usize;
        let max = page.iter().map(|r| r.chain_seq).max();
        all.extend(page);
        match max {
            Some(max) if full && max > after => after = max,
            _ => break,
        }
    }
    Ok(verify_admin_chain(zone_id, &all, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, zone: Option<&str>) -> AdminAuditEntry {
        AdminAuditEntry {
            id: id.to_owned(),
            request_id: Some("req-1".to_owned()),
            actor_id: Some("admin:bootstrap".to_owned()),
            actor_name: None,
            actor_scope: Some("global".to_owned()),
            method: "POST".to_owned(),
            path: "/v1/zones".to_owned(),
            zone_id: zone.map(str::to_owned),
            entity_type: Some("zone".to_owned()),
            entity_id: Some("z1".to_owned()),
            status_code: 201,
            payload: String::new(),
            occurred_at: DateTime::parse_from_rfc3339("2026-05-21T12:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    fn key() -> AuditHmacKey {
        AuditHmacKey::from_hex(&"0123456789abcdef".repeat(4)).unwrap()
    }

    #[test]
    fn links_verify_and_tamper_is_found() {
        let k = key();
        let a = AdminAuditRecord::link(&entry("a", Some("z")), None, Some(&k)).unwrap();
        let b = AdminAuditRecord::link(&entry("b", Some("z")), Some(&a.head()), Some(&k)).unwrap();
        assert_eq!((a.chain_seq, b.chain_seq), (1, 2));
        assert_eq!(
            b.prev_content_sha256.as_deref(),
            Some(a.content_sha256.as_str())
        );
        assert_eq!(a.entry.occurred_at.timestamp_subsec_millis(), 123);
        assert_eq!(a.action, "POST /v1/zones");
        let report = verify_admin_chain(Some("z"), [&a, &b], Some(&k));
        assert!(report.is_clean(), "{report:?}");

        let mut edited = b.clone();
        edited.entry.status_code = 200;
        let report = verify_admin_chain(Some("z"), [&a, &edited], Some(&k));
        assert_eq!(report.content_mismatches, 1);

        let report = verify_admin_chain(Some("z"), [&b], Some(&k));
        assert_eq!(report.gaps, 1);
        assert_eq!(report.chain_breaks, 1);

        let other = AuditHmacKey::from_bytes(vec![9; 32]).unwrap();
        let report = verify_admin_chain(Some("z"), [&a, &b], Some(&other));
        assert_eq!(report.hmac_failures, 2);
    }

    #[test]
    fn hash_has_a_trailing_separator_and_strips_nul() {
        let e = entry("a", None).normalized();
        let mut with_nul = entry("a", None);
        with_nul.path = "/v1/zo\0nes".to_owned();
        assert_eq!(
            admin_content_hash(&e, &e.action()),
            admin_content_hash(&with_nul.normalized(), &e.action())
        );
        // The trailing 0x1F after occurred_at is part of the hash input.
        let mut hasher = Sha256::new();
        for f in [
            "a",
            "req-1",
            "admin:bootstrap",
            "",
            "global",
            "POST /v1/zones",
            "POST",
            "/v1/zones",
            "",
            "zone",
            "z1",
            "201",
            "",
            "2026-05-21T12:00:00.123Z",
        ] {
            hasher.update(f.as_bytes());
            hasher.update([0x1F]);
        }
        assert_eq!(
            admin_content_hash(&e, &e.action()),
            hex::encode(hasher.finalize())
        );
        assert_eq!(e.chain(), GLOBAL_CHAIN);
    }
}
