//! The per-zone chain: linking (§2.3–§2.5) and the verifier, including every tamper case of the
//! reference's conformance list (§6 items 27–30) and the cases its sweeper misses (gaps,
//! duplicates, a deleted tip).

// Test helpers may unwrap: a failure here is a failed test, not a production panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use caracal_core::audit::{
    AuditEvent, AuditHmacKey, ChainCheckpoint, ChainHead, ChainLink, ChainStart, ChainVerifier,
    CheckpointOutcome, FindingKind, LedgerRow, ReplayVerdict, VerifyOptions, VerifyReport,
    content_hash, verify_chain,
};
use chrono::{DateTime, Duration, Utc};

const FIXTURE: &[u8] = include_bytes!("fixtures/interop/audit-event.allow.valid.json");
const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ZONE: &str = "zone-1";

fn key() -> AuditHmacKey {
    AuditHmacKey::from_hex(KEY_HEX).unwrap()
}

fn t0() -> DateTime<Utc> {
    AuditEvent::parse(FIXTURE).unwrap().occurred_at
}

fn event(n: usize) -> AuditEvent {
    let mut event = AuditEvent::parse(FIXTURE).unwrap();
    if n > 0 {
        event.id = format!("audit-{}", n + 1);
        event.occurred_at = t0() + Duration::milliseconds(n as i64);
    }
    event
}

/// A chain of `n` rows built the way an appender does: read the head, link, store.
fn chain(n: usize) -> Vec<LedgerRow> {
    let key = key();
    let mut rows: Vec<LedgerRow> = Vec::new();
    for i in 0..n {
        let head = rows.last().map(LedgerRow::head);
        let row = LedgerRow::append(event(i), head.as_ref(), Some(&key), None, t0()).unwrap();
        rows.push(row);
    }
    rows
}

fn keyed() -> VerifyOptions {
    VerifyOptions {
        key: Some(key()),
        ..VerifyOptions::default()
    }
}

fn kinds_at(report: &VerifyReport, seq: i64) -> Vec<&FindingKind> {
    report
        .findings
        .iter()
        .filter(|f| f.row.as_ref().is_some_and(|r| r.chain_seq == seq))
        .map(|f| &f.kind)
        .collect()
}

#[test]
fn first_row_matches_the_reference_vectors() {
    let rows = chain(1);
    let first = &rows[0];
    assert_eq!(first.chain_seq, 1);
    assert_eq!(first.prev_content_sha256, None);
    assert_eq!(
        first.content_sha256,
        "17b2213da6ad7fc62518378b89c2e17dc91752092fae5e56c31a8f45abf5b41f"
    );
    assert_eq!(
        first.chain_hmac,
        "6a6fcbeff3a3021fad93007d2a147086815fef0ca29a2fddc347d858b83b8d2a"
    );
}

#[test]
fn rows_link_densely_and_verify_clean() {
    let rows = chain(5);
    for pair in rows.windows(2) {
        assert_eq!(pair[1].chain_seq, pair[0].chain_seq + 1);
        assert_eq!(
            pair[1].prev_content_sha256.as_deref(),
            Some(pair[0].content_sha256.as_str())
        );
    }
    let report = verify_chain(ZONE, &rows, keyed());
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.rows_checked, 5);
    assert!(report.hmac_checked);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(5)));
    assert_eq!(report.head, Some(rows[4].head()));
}

#[test]
fn unkeyed_ledger_has_empty_hmacs_and_still_links() {
    let first = LedgerRow::append(event(0), None, None, Some(String::new()), t0()).unwrap();
    assert_eq!(first.chain_hmac, "");
    assert_eq!(first.ingest_signature, None);
    let second =
        LedgerRow::append(event(1), Some(&first.head()), None, Some("ab".into()), t0()).unwrap();
    assert_eq!(second.ingest_signature.as_deref(), Some("ab"));
    let report = verify_chain(ZONE, [&first, &second], VerifyOptions::default());
    assert!(report.is_clean() && !report.hmac_checked);
    // A keyed verifier flags rows that were never signed.
    let report = verify_chain(ZONE, [&first, &second], keyed());
    assert_eq!(report.hmac_failures, 2);
}

#[test]
fn link_rule_is_shared() {
    let head = ChainHead {
        content_sha256: "aa".into(),
        chain_seq: 41,
    };
    let link = ChainLink::next(Some(&head), "bb".into(), None).unwrap();
    assert_eq!(link.chain_seq, 42);
    assert_eq!(link.prev_content_sha256.as_deref(), Some("aa"));
    let max = ChainHead {
        content_sha256: "aa".into(),
        chain_seq: i64::MAX,
    };
    assert!(ChainLink::next(Some(&max), "bb".into(), None).is_err());
}

#[test]
fn replay_verdict() {
    assert_eq!(
        ReplayVerdict::judge("aa", "aa"),
        ReplayVerdict::BenignDuplicate
    );
    assert_eq!(
        ReplayVerdict::judge("", "aa"),
        ReplayVerdict::BenignDuplicate
    );
    assert_eq!(ReplayVerdict::judge("aa", "bb"), ReplayVerdict::Tampered);
}

/// §6 item 27: UPDATE a stored row's `decision`.
#[test]
fn edited_field_is_a_content_mismatch() {
    let mut rows = chain(5);
    rows[2].event.decision = "deny".into();
    let report = verify_chain(ZONE, &rows, keyed());
    assert_eq!(report.content_mismatches, 1);
    assert_eq!((report.chain_breaks, report.hmac_failures), (0, 0));
    assert!(matches!(
        kinds_at(&report, 3)[..],
        [FindingKind::ContentMismatch { .. }]
    ));
    let finding = &report.findings[0];
    assert_eq!(finding.row.as_ref().unwrap().event_id, "audit-3");
}

/// §6 item 28: modify `prev_content_sha256` of row k.
#[test]
fn edited_prev_is_a_break_and_an_hmac_failure() {
    let mut rows = chain(5);
    rows[2].prev_content_sha256 = Some("00".repeat(32));
    let report = verify_chain(ZONE, &rows, keyed());
    assert_eq!((report.chain_breaks, report.hmac_failures), (1, 1));
    assert_eq!(report.content_mismatches, 0);
    let kinds = kinds_at(&report, 3);
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, FindingKind::ChainBreak { .. }))
    );
    assert!(kinds.contains(&&FindingKind::HmacFailure));
}

/// §6 item 29: edit a row, then recompute its hash and the next row's prev, without the key.
#[test]
fn consistent_rehash_without_key_still_fails_hmac() {
    let mut rows = chain(5);
    rows[2].event.decision = "deny".into();
    rows[2].content_sha256 = content_hash(&rows[2].event).unwrap();
    rows[3].prev_content_sha256 = Some(rows[2].content_sha256.clone());
    let report = verify_chain(ZONE, &rows, keyed());
    assert_eq!((report.content_mismatches, report.chain_breaks), (0, 0));
    assert_eq!(report.hmac_failures, 2);
    assert_eq!(kinds_at(&report, 3), [&FindingKind::HmacFailure]);
    assert_eq!(kinds_at(&report, 4), [&FindingKind::HmacFailure]);
    // Without the key the forgery is invisible: the key is what makes the chain evidence.
    assert!(verify_chain(ZONE, &rows, VerifyOptions::default()).is_clean());
}

/// §6 item 30: delete a middle row.
#[test]
fn deleted_middle_row_is_a_gap_and_a_break() {
    let mut rows = chain(5);
    rows.remove(2);
    let report = verify_chain(ZONE, &rows, keyed());
    assert_eq!(
        (report.gaps, report.missing_rows, report.chain_breaks),
        (1, 1, 1)
    );
    assert_eq!(report.hmac_failures, 0);
    let kinds = kinds_at(&report, 4);
    assert!(kinds.contains(&&FindingKind::Gap {
        after_seq: 2,
        missing: 1
    }));
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, FindingKind::ChainBreak { .. }))
    );
}

/// §6 item 30's known gap: deleting the tip leaves a valid shorter chain. Only a checkpoint
/// taken before the deletion reveals it.
#[test]
fn deleted_tip_is_detected_only_with_a_checkpoint() {
    let mut rows = chain(5);
    let checkpoint = ChainCheckpoint::sign(&key(), ZONE, &rows[4].head());
    rows.pop();
    assert!(verify_chain(ZONE, &rows, keyed()).is_clean());
    let options = VerifyOptions {
        checkpoint: Some(checkpoint),
        ..keyed()
    };
    let report = verify_chain(ZONE, &rows, options);
    assert_eq!(report.checkpoint, Some(CheckpointOutcome::Truncated));
    assert!(report.findings.contains(&caracal_core::audit::Finding {
        row: None,
        kind: FindingKind::Truncated {
            checkpoint_seq: 5,
            last_seq: Some(4)
        },
    }));
}

#[test]
fn checkpoint_outcomes() {
    let rows = chain(5);
    let head = rows[4].head();
    let run = |checkpoint: ChainCheckpoint, start: ChainStart, rows: &[LedgerRow]| {
        let options = VerifyOptions {
            checkpoint: Some(checkpoint),
            start,
            ..keyed()
        };
        verify_chain(ZONE, rows, options)
    };
    let signed = ChainCheckpoint::sign(&key(), ZONE, &head);
    assert!(signed.verify_signature(&key()));
    let report = run(signed.clone(), ChainStart::Genesis, &rows);
    assert_eq!(report.checkpoint, Some(CheckpointOutcome::Verified));
    assert!(report.is_clean());

    let mut forged = signed.clone();
    forged.chain_seq = 9;
    assert_eq!(
        run(forged, ChainStart::Genesis, &rows).checkpoint,
        Some(CheckpointOutcome::Forged)
    );
    let other_zone = ChainCheckpoint::sign(&key(), "zone-2", &head);
    assert_eq!(
        run(other_zone, ChainStart::Genesis, &rows).checkpoint,
        Some(CheckpointOutcome::WrongZone)
    );

    // The tip was replaced by a row with another hash.
    let mut replaced = rows.clone();
    replaced[4] =
        LedgerRow::append(event(9), Some(&rows[3].head()), Some(&key()), None, t0()).unwrap();
    let report = run(signed.clone(), ChainStart::Genesis, &replaced);
    assert_eq!(report.checkpoint, Some(CheckpointOutcome::Mismatch));

    // A window that starts after the checkpoint cannot judge it.
    let older = ChainCheckpoint::sign(&key(), ZONE, &rows[1].head());
    let report = run(older.clone(), ChainStart::Window, &rows[3..]);
    assert_eq!(report.checkpoint, Some(CheckpointOutcome::NotCovered));
    assert!(report.is_clean());

    // The checkpoint's row is gone but later rows remain.
    let mut holed = rows.clone();
    holed.remove(1);
    let report = run(older, ChainStart::Genesis, &holed);
    assert_eq!(report.checkpoint, Some(CheckpointOutcome::RowMissing));
}

#[test]
fn duplicate_seq_is_reported_once_and_links_are_judged_per_seq() {
    let rows = chain(5);
    // A fork: a second row at seq 3, correctly linked to row 2 (what a lost zone lock makes).
    let fork =
        LedgerRow::append(event(7), Some(&rows[1].head()), Some(&key()), None, t0()).unwrap();
    assert_eq!(fork.chain_seq, 3);
    let mut with_fork = rows.clone();
    with_fork.insert(3, fork);
    let report = verify_chain(ZONE, &with_fork, keyed());
    assert_eq!(report.duplicate_seqs, 1);
    assert_eq!(
        (report.chain_breaks, report.hmac_failures, report.gaps),
        (0, 0, 0)
    );
    assert_eq!(kinds_at(&report, 3), [&FindingKind::DuplicateSeq]);
}

#[test]
fn renumbered_rows_show_gaps_even_when_links_hold() {
    let mut rows = chain(4);
    // Re-signing is impossible without the key, but a renumbered chain_seq alone is not
    // covered by the HMAC; the gap check is what catches it.
    rows[2].chain_seq = 10;
    rows[3].chain_seq = 11;
    let report = verify_chain(ZONE, &rows, keyed());
    assert_eq!((report.gaps, report.missing_rows), (1, 7));
    assert_eq!((report.chain_breaks, report.hmac_failures), (0, 0));
}

#[test]
fn a_full_chain_must_start_at_one_without_prev() {
    let rows = chain(4);
    let report = verify_chain(ZONE, &rows[2..], keyed());
    assert_eq!(
        (report.gaps, report.missing_rows, report.chain_breaks),
        (1, 2, 1)
    );
    assert!(kinds_at(&report, 3).contains(&&FindingKind::ChainBreak {
        expected: None,
        found: Some(rows[1].content_sha256.clone()),
    }));
}

#[test]
fn windows_and_trusted_heads() {
    let rows = chain(6);
    let window = VerifyOptions {
        start: ChainStart::Window,
        ..keyed()
    };
    assert!(verify_chain(ZONE, &rows[3..], window).is_clean());
    let after = |head: ChainHead| VerifyOptions {
        start: ChainStart::After(head),
        ..keyed()
    };
    assert!(verify_chain(ZONE, &rows[3..], after(rows[2].head())).is_clean());
    let wrong = verify_chain(ZONE, &rows[3..], after(rows[1].head()));
    assert_eq!((wrong.gaps, wrong.chain_breaks), (1, 1));
}

#[test]
fn foreign_out_of_order_and_invalid_rows() {
    let mut rows = chain(4);
    let mut foreign = rows[1].clone();
    foreign.event.zone_id = "zone-2".into();
    let mut invalid = rows[1].clone();
    invalid.chain_seq = 0;
    let back = rows[0].clone();
    rows.extend([foreign, invalid, back]);
    let report = verify_chain(ZONE, &rows, keyed());
    assert_eq!(report.foreign_rows, 1);
    assert_eq!(report.invalid_seqs, 1);
    assert_eq!(report.out_of_order, 1);
    // The foreign row is not hashed or linked: its edit of zone_id is not double counted.
    assert_eq!(report.content_mismatches, 0);
}

#[test]
fn findings_are_capped_but_counts_are_exact() {
    let mut rows = chain(20);
    for row in &mut rows {
        row.event.decision = "deny".into();
    }
    let options = VerifyOptions {
        max_findings: 3,
        ..keyed()
    };
    let report = verify_chain(ZONE, &rows, options);
    assert_eq!(report.content_mismatches, 20);
    assert_eq!(report.findings.len(), 3);
    assert_eq!(report.findings_omitted, 17);
    assert_eq!(report.finding_count(), 20);
}

#[test]
fn streaming_equals_batch_and_report_renders_as_json() {
    let mut rows = chain(6);
    rows.remove(3);
    let mut verifier = ChainVerifier::new(ZONE, keyed());
    for row in &rows {
        verifier.push(row);
    }
    let streamed = verifier.finish();
    assert_eq!(streamed, verify_chain(ZONE, &rows, keyed()));
    let json = serde_json::to_value(&streamed).unwrap();
    assert_eq!(json["gaps"], 1);
    assert_eq!(json["findings"][0]["kind"], "gap");
    assert_eq!(json["findings"][0]["row"]["chain_seq"], 5);
}

#[test]
fn a_json_refused_by_postgres_is_unhashable_not_a_panic() {
    let mut rows = chain(2);
    rows[1].event.metadata_json =
        Some(caracal_core::audit::JsonText::parse(r#"{"a":"\ud800"}"#).unwrap());
    let report = verify_chain(ZONE, &rows, keyed());
    assert_eq!(report.content_mismatches, 1);
    assert!(matches!(
        kinds_at(&report, 2)[..],
        [FindingKind::Unhashable { .. }]
    ));
}
