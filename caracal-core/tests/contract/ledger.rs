//! The audit ledger contract, written once: `tests/ledger_memory.rs` runs it on `MemoryStore`
//! and `tests/ledger_postgres.rs` on the Postgres ledger. Cases take a ledger and a unique
//! zone prefix, so they can share one database.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use caracal_core::audit::{
    AuditEvent, AuditHmacKey, ChainCheckpoint, VerifyOptions, content_hash, verify_chain,
};
use caracal_core::store::audit::{
    ALERT_CONTENT_MISMATCH, AppendOutcome, AuditLedger, AuditQuery, IncomingEvent,
};
use serde_json::json;

/// The fixture event of the reference.
pub const FIXTURE: &str = include_str!("../fixtures/interop/audit-event.allow.valid.json");
/// The reference's content hash of the fixture.
pub const FIXTURE_HASH: &str = "17b2213da6ad7fc62518378b89c2e17dc91752092fae5e56c31a8f45abf5b41f";
/// The reference's chain HMAC of the fixture as the first row of its zone.
pub const FIXTURE_HMAC: &str = "6a6fcbeff3a3021fad93007d2a147086815fef0ca29a2fddc347d858b83b8d2a";

/// The reference's test key, `0123456789abcdef` four times.
pub fn key() -> AuditHmacKey {
    AuditHmacKey::from_hex(&"0123456789abcdef".repeat(4)).unwrap()
}

/// A unique zone id for a case.
pub fn zone(prefix: &str, case: &str) -> String {
    format!("{prefix}-{case}")
}

/// An event of `zone` with id `id`, at a fixed instant plus `n` seconds.
pub fn event(zone: &str, id: &str, n: i64) -> AuditEvent {
    let mut v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    v["id"] = json!(id);
    v["zone_id"] = json!(zone);
    let at = chrono::DateTime::parse_from_rfc3339("2026-05-21T12:00:00Z").unwrap()
        + chrono::Duration::seconds(n);
    v["occurred_at"] = json!(at.to_rfc3339());
    AuditEvent::parse(v.to_string().as_bytes()).unwrap()
}

fn incoming(event: AuditEvent) -> IncomingEvent {
    IncomingEvent {
        event,
        ingest_signature: None,
    }
}

fn inserted_seq(o: &AppendOutcome) -> i64 {
    match o {
        AppendOutcome::Inserted { chain_seq, .. } => *chain_seq,
        other => panic!("expected Inserted, got {other:?}"),
    }
}

/// The fixture, verbatim, as the first row of its zone (`zone-1`) reproduces the reference's
/// content hash and chain HMAC. Needs a ledger with no rows in `zone-1` (a fresh store or
/// database per run of this case).
pub async fn fixture_vector(l: &dyn AuditLedger, _prefix: &str) {
    let ev = AuditEvent::parse(FIXTURE.as_bytes()).unwrap();
    let out = l
        .append("zone-1", &[incoming(ev.clone())], Some(&key()))
        .await
        .unwrap();
    assert_eq!(inserted_seq(&out[0]), 1);
    let rows = l.read_chain("zone-1", 0, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].prev_content_sha256, None);
    assert_eq!(rows[0].content_sha256, FIXTURE_HASH);
    assert_eq!(rows[0].chain_hmac, FIXTURE_HMAC);
    // The row read back recomputes to the stored hash.
    assert_eq!(content_hash(&rows[0].event).unwrap(), FIXTURE_HASH);
}

/// Appends link densely; the stored chain verifies with the key.
pub async fn dense_chain_verifies(l: &dyn AuditLedger, prefix: &str) {
    let z = zone(prefix, "dense");
    let batch: Vec<IncomingEvent> = (0..5)
        .map(|i| incoming(event(&z, &format!("e{i}"), i)))
        .collect();
    let out = l.append(&z, &batch, Some(&key())).await.unwrap();
    assert_eq!(
        out.iter().map(inserted_seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let more = l
        .append(&z, &[incoming(event(&z, "e5", 5))], Some(&key()))
        .await
        .unwrap();
    assert_eq!(inserted_seq(&more[0]), 6);
    let rows = l.read_chain(&z, 0, 100).await.unwrap();
    assert_eq!(rows.len(), 6);
    for w in rows.windows(2) {
        assert_eq!(
            w[1].prev_content_sha256.as_deref(),
            Some(w[0].content_sha256.as_str())
        );
    }
    let report = verify_chain(
        &z,
        &rows,
        VerifyOptions {
            key: Some(key()),
            ..VerifyOptions::default()
        },
    );
    assert!(report.is_clean(), "{report:?}");
    let head = l.chain_head(&z).await.unwrap().unwrap();
    assert_eq!(head.chain_seq, 6);
    // Paging through the chain.
    let page = l.read_chain(&z, 2, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.chain_seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
}

/// A replay with the same content is a benign duplicate and consumes no seq.
pub async fn benign_duplicate(l: &dyn AuditLedger, prefix: &str) {
    let z = zone(prefix, "dup");
    let e = event(&z, "d1", 0);
    l.append(&z, &[incoming(e.clone())], Some(&key()))
        .await
        .unwrap();
    // Same content with other key order and whitespace in the JSON fields.
    let mut v: serde_json::Value = serde_json::to_value(&e).unwrap();
    v["metadata_json"] =
        json!({"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "resource": "resource://api"});
    let reordered = AuditEvent::parse(v.to_string().as_bytes()).unwrap();
    let out = l
        .append(
            &z,
            &[incoming(e.clone()), incoming(reordered)],
            Some(&key()),
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![AppendOutcome::Duplicate, AppendOutcome::Duplicate]
    );
    let next = l
        .append(&z, &[incoming(event(&z, "d2", 1))], Some(&key()))
        .await
        .unwrap();
    assert_eq!(
        inserted_seq(&next[0]),
        2,
        "a duplicate must not consume a seq"
    );
    assert!(l.ingest_alerts(Some(&z), 10).await.unwrap().is_empty());
}

/// Same key, different content: refused as tampering, alert recorded, stored row unchanged.
pub async fn tamper_on_replay(l: &dyn AuditLedger, prefix: &str) {
    let z = zone(prefix, "tamper");
    let e = event(&z, "t1", 0);
    l.append(&z, &[incoming(e.clone())], Some(&key()))
        .await
        .unwrap();
    let before = l.read_chain(&z, 0, 10).await.unwrap();
    let mut forged = e.clone();
    forged.decision = "deny".into();
    let out = l
        .append(&z, &[incoming(forged)], Some(&key()))
        .await
        .unwrap();
    match &out[0] {
        AppendOutcome::Tampered { stored, incoming } => {
            assert_eq!(stored, &before[0].content_sha256);
            assert_ne!(stored, incoming);
        }
        other => panic!("expected Tampered, got {other:?}"),
    }
    assert_eq!(l.read_chain(&z, 0, 10).await.unwrap(), before);
    let alerts = l.ingest_alerts(Some(&z), 10).await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, ALERT_CONTENT_MISMATCH);
    assert_eq!(alerts[0].event_id, "t1");
    assert!(alerts[0].detail.starts_with("stored="));
}

/// The key is `(id, occurred_at)`: the same id at another instant is a new row; nanoseconds
/// beyond the microsecond do not make a new row.
pub async fn key_is_id_and_microsecond_instant(l: &dyn AuditLedger, prefix: &str) {
    let z = zone(prefix, "pk");
    let a = event(&z, "same", 0);
    let b = event(&z, "same", 1);
    let out = l
        .append(&z, &[incoming(a.clone()), incoming(b)], Some(&key()))
        .await
        .unwrap();
    assert_eq!(out.iter().map(inserted_seq).collect::<Vec<_>>(), vec![1, 2]);
    let mut nanos = a;
    nanos.occurred_at += chrono::Duration::nanoseconds(999);
    let out = l
        .append(&z, &[incoming(nanos)], Some(&key()))
        .await
        .unwrap();
    assert_eq!(out, vec![AppendOutcome::Duplicate]);
}

/// NUL characters are stripped and the row inserts.
pub async fn nul_is_stripped(l: &dyn AuditLedger, prefix: &str) {
    let z = zone(prefix, "nul");
    let raw = format!(
        r#"{{"id":"n1","zone_id":"{z}","event_type":"token_exchange\u0000","request_id":"r","decision":"allow","evaluation_status":"complete","determining_policies_json":null,"diagnostics_json":null,"metadata_json":{{"k\u0000":"v\u0000"}},"occurred_at":"2026-05-21T12:00:00Z"}}"#
    );
    let e = AuditEvent::parse(raw.as_bytes()).unwrap();
    let out = l.append(&z, &[incoming(e)], Some(&key())).await.unwrap();
    assert_eq!(inserted_seq(&out[0]), 1);
    let rows = l.read_chain(&z, 0, 10).await.unwrap();
    assert_eq!(rows[0].event.event_type, "token_exchange");
    assert_eq!(
        rows[0].event.metadata_json.as_ref().unwrap().as_str(),
        r#"{"k": "v"}"#
    );
}

/// An event of another zone is refused and nothing of the batch is written.
pub async fn wrong_zone_is_refused_atomically(l: &dyn AuditLedger, prefix: &str) {
    let z = zone(prefix, "wz");
    let other = zone(prefix, "wz-other");
    let err = l
        .append(
            &z,
            &[
                incoming(event(&z, "ok", 0)),
                incoming(event(&other, "bad", 1)),
            ],
            Some(&key()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, caracal_core::store::StoreError::Invalid(_)),
        "{err:?}"
    );
    assert!(l.read_chain(&z, 0, 10).await.unwrap().is_empty());
}

/// Concurrent appends to one zone give a dense, unique, linked chain; zones are independent.
pub async fn concurrent_appends_stay_dense(l: Arc<dyn AuditLedger>, prefix: &str) {
    let z = zone(prefix, "conc");
    let z2 = zone(prefix, "conc-b");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let l = l.clone();
        let (z, z2) = (z.clone(), z2.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let target = if i % 3 == 0 { &z2 } else { &z };
                let ev = event(target, &format!("w{w}-{i}"), i64::from(w * 100 + i));
                l.append(target, &[incoming(ev)], Some(&key()))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("appends finish")
            .unwrap();
    }
    for (zone_id, expected) in [(&z, 48usize), (&z2, 32usize)] {
        let rows = l.read_chain(zone_id, 0, 1000).await.unwrap();
        assert_eq!(rows.len(), expected);
        assert_eq!(
            rows.iter().map(|r| r.chain_seq).collect::<Vec<_>>(),
            (1..=expected as i64).collect::<Vec<_>>()
        );
        let report = verify_chain(
            zone_id,
            &rows,
            VerifyOptions {
                key: Some(key()),
                ..VerifyOptions::default()
            },
        );
        assert!(report.is_clean(), "{report:?}");
    }
}

/// Search filters by decision, request id, time window and cursor.
pub async fn search_filters(l: &dyn AuditLedger, prefix: &str) {
    let z = zone(prefix, "search");
    let mut batch = Vec::new();
    for i in 0..6 {
        let mut e = event(&z, &format!("s{i}"), i);
        e.decision = if i % 2 == 0 { "allow" } else { "deny" }.into();
        e.request_id = format!("req-{}", i / 2);
        batch.push(incoming(e));
    }
    l.append(&z, &batch, None).await.unwrap();
    let base = AuditQuery {
        zone_id: z.clone(),
        since: None,
        until: None,
        decision: None,
        request_id: None,
        after_seq: 0,
        limit: 100,
    };
    let ids = |rows: Vec<caracal_core::audit::LedgerRow>| {
        rows.into_iter().map(|r| r.event.id).collect::<Vec<_>>()
    };
    let deny = l
        .search_audit(&AuditQuery {
            decision: Some("deny".into()),
            ..base.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(deny), vec!["s1", "s3", "s5"]);
    let req = l
        .search_audit(&AuditQuery {
            request_id: Some("req-1".into()),
            ..base.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(req), vec!["s2", "s3"]);
    let at = |n: i64| {
        chrono::DateTime::parse_from_rfc3339("2026-05-21T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
            + chrono::Duration::seconds(n)
    };
    let window = l
        .search_audit(&AuditQuery {
            since: Some(at(1)),
            until: Some(at(3)),
            ..base.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(window), vec!["s1", "s2"]);
    let page = l
        .search_audit(&AuditQuery {
            after_seq: 4,
            limit: 1,
            ..base.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(page), vec!["s4"]);
    assert!(l.ledger_zones().await.unwrap().contains(&z));
    // Unsigned ledgers store empty chain HMACs.
    assert!(
        l.read_chain(&z, 0, 1).await.unwrap()[0]
            .chain_hmac
            .is_empty()
    );
}

/// Checkpoints are idempotent per (zone, seq) and the newest is returned.
pub async fn checkpoints(l: &dyn AuditLedger, prefix: &str) {
    let z = zone(prefix, "cp");
    let batch: Vec<IncomingEvent> = (0..3)
        .map(|i| incoming(event(&z, &format!("c{i}"), i)))
        .collect();
    l.append(&z, &batch, Some(&key())).await.unwrap();
    assert!(l.latest_checkpoint(&z).await.unwrap().is_none());
    let rows = l.read_chain(&z, 0, 10).await.unwrap();
    let cp2 = ChainCheckpoint::sign(&key(), &z, &rows[1].head());
    let cp3 = ChainCheckpoint::sign(&key(), &z, &rows[2].head());
    l.put_checkpoint(&cp3).await.unwrap();
    l.put_checkpoint(&cp2).await.unwrap();
    l.put_checkpoint(&cp3).await.unwrap();
    let latest = l.latest_checkpoint(&z).await.unwrap().unwrap();
    assert_eq!(latest, cp3);
    assert!(latest.verify_signature(&key()));
}

/// Every case name, for runners.
pub const CASES: &[&str] = &[
    "fixture_vector",
    "dense_chain_verifies",
    "benign_duplicate",
    "tamper_on_replay",
    "key_is_id_and_microsecond_instant",
    "nul_is_stripped",
    "wrong_zone_is_refused_atomically",
    "concurrent_appends_stay_dense",
    "search_filters",
    "checkpoints",
];
