//! The NDJSON export of the ledger: one line per row, the event's wire fields plus the chain
//! fields, so an export verifies offline with the same [`ChainVerifier`] as the live ledger.
//!
//! ## Why NDJSON and not the reference's Parquet
//!
//! The reference ships hourly Parquet objects to S3 without `prev_content_sha256`, so its
//! archive cannot be chain-verified on its own (its notes, finding 5). Ours keeps every chain
//! column on every line; [`verify_export`] re-links it. Lines are plain JSON so `jq`, a SIEM or
//! an object store take them as they are.
//!
//! ## Hours and the watermark
//!
//! The hourly exporter (in `caracal-audit`) writes the rows whose `ingested_at` falls in one
//! UTC hour, ordered by `(zone_id, chain_seq)`, to [`object_key`], and then advances a watermark
//! to that hour. [`hours_due`] is the plan: from the hour after the watermark (or, on a fresh
//! install, only the newest settled hour, as the reference does) to the newest hour that is
//! **settled**: ended at least `settle` ago. The settle delay is a fix over the reference,
//! which exports an hour as soon as it ends: a row's `ingested_at` is taken inside its
//! transaction, so a transaction that began at 10:59:59.9 and commits at 11:00:00.2 would be
//! invisible to an export of 10:00 run at 11:00:00.1 and missed forever. Any settle delay
//! longer than the store's statement timeout closes that window.
//!
//! Per zone, `ingested_at` follows `chain_seq` (both ledgers take the ingest time after the
//! zone's append lock), so each hour holds a contiguous run of every zone's chain and the
//! hours of an export, read in order, re-link end to end.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Deserialize;

use super::{
    AuditError, AuditEvent, AuditHmacKey, ChainHead, ChainStart, ChainVerifier, LedgerRow,
    VerifyOptions, VerifyReport,
};

/// The watermark name of the hourly NDJSON exporter (`audit_export_watermark.name`).
pub const HOURLY_EXPORTER: &str = "ndjson-hourly";

/// Most hours one plan returns, so a long outage catches up over several ticks instead of one
/// unbounded one.
pub const MAX_HOURS_PER_TICK: usize = 24 * 7;

/// An export line that could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Line `line` (1-based) is not an export line.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A row could not be encoded.
    #[error("cannot encode a row: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One export line (pure): the event's wire fields plus `content_sha256`,
/// `prev_content_sha256`, `chain_hmac`, `chain_seq`, `ingested_at` and `ingest_signature`.
pub fn export_line(row: &LedgerRow) -> Result<String, ExportError> {
    let mut value = serde_json::to_value(&row.event)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("content_sha256".into(), row.content_sha256.clone().into());
        object.insert(
            "prev_content_sha256".into(),
            row.prev_content_sha256.clone().into(),
        );
        object.insert("chain_hmac".into(), row.chain_hmac.clone().into());
        object.insert("chain_seq".into(), row.chain_seq.into());
        object.insert("ingested_at".into(), serde_json::to_value(row.ingested_at)?);
        object.insert(
            "ingest_signature".into(),
            row.ingest_signature.clone().into(),
        );
    }
    Ok(serde_json::to_string(&value)?)
}

/// The chain columns of a line; the event fields are read by [`AuditEvent::parse`], which
/// ignores these extra keys.
#[derive(Deserialize)]
struct ChainColumns {
    content_sha256: String,
    prev_content_sha256: Option<String>,
    #[serde(default)]
    chain_hmac: String,
    chain_seq: i64,
    ingested_at: DateTime<Utc>,
    ingest_signature: Option<String>,
}

/// Read one export line back into the row it was written from (`line_no` is 1-based, for the
/// error). The event goes through the ingest parser and the stored-form conversion, so a line
/// whose event fields were edited re-hashes differently and the verifier reports it.
pub fn parse_export_line(line: &str, line_no: usize) -> Result<LedgerRow, ExportError> {
    let bad = |reason: String| ExportError::Line {
        line: line_no,
        reason,
    };
    let chain: ChainColumns =
        serde_json::from_str(line).map_err(|e| bad(format!("chain fields: {e}")))?;
    let event = AuditEvent::parse(line.as_bytes())
        .and_then(AuditEvent::into_stored)
        .map_err(|e: AuditError| bad(format!("event: {e}")))?;
    Ok(LedgerRow {
        event,
        content_sha256: chain.content_sha256,
        prev_content_sha256: chain.prev_content_sha256,
        chain_hmac: chain.chain_hmac,
        chain_seq: chain.chain_seq,
        ingest_signature: chain.ingest_signature,
        ingested_at: chain.ingested_at,
    })
}

/// Verify export lines (one or more hourly files read in order, or a `caracal audit export`
/// of one zone): rows are grouped by zone in their order of appearance; a zone whose first row
/// is seq 1 is verified from genesis, otherwise as a window whose first row is trusted (an
/// export need not begin at a zone's first row). With `key`, chain HMACs are checked too.
/// One report per zone, in zone order.
pub fn verify_export<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    key: Option<&AuditHmacKey>,
) -> Result<Vec<VerifyReport>, ExportError> {
    let mut verifiers: BTreeMap<String, ChainVerifier> = BTreeMap::new();
    for (n, line) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = parse_export_line(line, n + 1)?;
        let verifier = verifiers
            .entry(row.event.zone_id.clone())
            .or_insert_with(|| {
                let start = if row.chain_seq == 1 {
                    ChainStart::Genesis
                } else {
                    ChainStart::Window
                };
                ChainVerifier::new(
                    row.event.zone_id.clone(),
                    VerifyOptions {
                        key: key.cloned(),
                        start,
                        ..VerifyOptions::default()
                    },
                )
            });
        verifier.push(&row);
    }
    Ok(verifiers.into_values().map(ChainVerifier::finish).collect())
}

/// The start of the UTC hour holding `at`.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::hours(1)).unwrap_or(at)
}

/// The hours to export at `now` after `watermark` (the last exported hour), oldest first, at
/// most [`MAX_HOURS_PER_TICK`]: every settled hour after the watermark, or only the newest
/// settled hour on a fresh install (no watermark). An hour is settled once it ended at least
/// `settle` before `now` (see the module docs).
pub fn hours_due(
    now: DateTime<Utc>,
    watermark: Option<DateTime<Utc>>,
    settle: Duration,
) -> Vec<DateTime<Utc>> {
    let Some(target) = now
        .checked_sub_signed(settle)
        .and_then(|t| hour_of(t).checked_sub_signed(Duration::hours(1)))
    else {
        return Vec::new();
    };
    let start = match watermark {
        Some(w) => hour_of(w) + Duration::hours(1),
        None => target,
    };
    let mut hours = Vec::new();
    let mut hour = start;
    while hour <= target && hours.len() < MAX_HOURS_PER_TICK {
        hours.push(hour);
        hour += Duration::hours(1);
    }
    hours
}

/// Where an hour's export goes, relative to the export root:
/// `audit/YYYY/MM/DD/YYYY-MM-DDTHH.ndjson` (the reference's key with our extension).
pub fn object_key(hour: DateTime<Utc>) -> String {
    hour.format("audit/%Y/%m/%d/%Y-%m-%dT%H.ndjson").to_string()
}

/// A verified export's head per zone: what a later export of the same zone should continue.
pub fn heads(reports: &[VerifyReport]) -> BTreeMap<String, ChainHead> {
    reports
        .iter()
        .filter_map(|r| r.head.clone().map(|h| (r.zone_id.clone(), h)))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap()
    }

    fn rows(zone: &str, n: usize, key: Option<&AuditHmacKey>) -> Vec<LedgerRow> {
        let mut out: Vec<LedgerRow> = Vec::new();
        for i in 0..n {
            let data = format!(
                r#"{{"id":"{zone}-{i}","zone_id":"{zone}","event_type":"t","request_id":"r","decision":"allow","evaluation_status":"complete","determining_policies_json":null,"diagnostics_json":null,"metadata_json":{{"n":{i}}},"occurred_at":"2026-11-23T10:00:00.123456789Z"}}"#
            );
            let event = AuditEvent::parse(data.as_bytes()).unwrap();
            let head = out.last().map(LedgerRow::head);
            out.push(LedgerRow::append(event, head.as_ref(), key, None, at(10, 1)).unwrap());
        }
        out
    }

    #[test]
    fn lines_round_trip_and_verify() {
        let key = AuditHmacKey::from_bytes(vec![7u8; 32]).unwrap();
        let rows = rows("z1", 5, Some(&key));
        let lines: Vec<String> = rows.iter().map(|r| export_line(r).unwrap()).collect();
        for (n, line) in lines.iter().enumerate() {
            assert_eq!(parse_export_line(line, n + 1).unwrap(), rows[n]);
        }
        let reports = verify_export(lines.iter().map(String::as_str), Some(&key)).unwrap();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].is_clean(), "{:?}", reports[0]);
        assert_eq!(reports[0].rows_checked, 5);
        // A window (no genesis) verifies too.
        let reports = verify_export(lines[2..].iter().map(String::as_str), Some(&key)).unwrap();
        assert!(reports[0].is_clean());
    }

    #[test]
    fn an_edited_line_or_a_dropped_line_is_reported() {
        let key = AuditHmacKey::from_bytes(vec![7u8; 32]).unwrap();
        let mut lines: Vec<String> = rows("z1", 4, Some(&key))
            .iter()
            .map(|r| export_line(r).unwrap())
            .collect();
        lines[1] = lines[1].replace(r#""decision":"allow""#, r#""decision":"deny""#);
        let reports = verify_export(lines.iter().map(String::as_str), Some(&key)).unwrap();
        assert!(reports[0].content_mismatches >= 1);
        lines.remove(1);
        let reports = verify_export(lines.iter().map(String::as_str), Some(&key)).unwrap();
        assert!(reports[0].gaps >= 1 || reports[0].chain_breaks >= 1);
        // The wrong key fails every HMAC.
        let other = AuditHmacKey::from_bytes(vec![8u8; 32]).unwrap();
        let reports = verify_export(lines.iter().map(String::as_str), Some(&other)).unwrap();
        assert!(reports[0].hmac_failures >= 1);
    }

    #[test]
    fn a_line_that_is_not_an_export_line_names_its_number() {
        let err = verify_export(["", "{\"id\":1}"], None).unwrap_err();
        assert!(matches!(err, ExportError::Line { line: 2, .. }), "{err}");
    }

    #[test]
    fn the_plan_exports_settled_hours_after_the_watermark() {
        let settle = Duration::minutes(5);
        // Fresh install: only the newest settled hour.
        assert_eq!(hours_due(at(12, 10), None, settle), vec![at(11, 0)]);
        // 11:00 has not settled at 12:03 yet: 10:00 is the newest settled hour.
        assert_eq!(hours_due(at(12, 3), None, settle), vec![at(10, 0)]);
        // After an outage the backlog comes in order.
        assert_eq!(
            hours_due(at(12, 10), Some(at(6, 0)), settle),
            vec![at(7, 0), at(8, 0), at(9, 0), at(10, 0), at(11, 0)]
        );
        // Up to date: nothing.
        assert!(hours_due(at(12, 10), Some(at(11, 0)), settle).is_empty());
        // A long outage is capped per tick.
        let week_ago = at(12, 0) - Duration::days(30);
        assert_eq!(
            hours_due(at(12, 10), Some(week_ago), settle).len(),
            MAX_HOURS_PER_TICK
        );
    }

    #[test]
    fn keys_follow_the_reference_layout() {
        assert_eq!(
            object_key(at(7, 0)),
            "audit/2026/11/23/2026-11-23T07.ndjson"
        );
        assert_eq!(hour_of(at(7, 59)), at(7, 0));
    }
}
