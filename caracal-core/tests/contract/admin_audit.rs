//! The admin audit chain contract, written once: `tests/admin_audit_memory.rs` runs it on
//! `MemoryStore` and `tests/admin_audit_postgres.rs` on Postgres. Cases take a store and a
//! unique zone prefix, so they can share one database.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use caracal_core::audit::AuditHmacKey;
use caracal_core::store::StoreError;
use caracal_core::store::admin_audit::{
    AdminAuditEntry, AdminAuditStore, GLOBAL_CHAIN, verify_admin_audit,
};
use chrono::{DateTime, Utc};

/// The reference's test key, `0123456789abcdef` four times.
pub fn key() -> AuditHmacKey {
    AuditHmacKey::from_hex(&"0123456789abcdef".repeat(4)).unwrap()
}

/// An entry of `zone` (`None`: global) with id `id`.
pub fn entry(zone: Option<&str>, id: &str, n: i64) -> AdminAuditEntry {
    let at = DateTime::parse_from_rfc3339("2026-05-21T12:00:00.123456Z")
        .unwrap()
        .with_timezone(&Utc)
        + chrono::Duration::seconds(n);
    AdminAuditEntry {
        id: id.to_owned(),
        request_id: Some(format!("req-{id}")),
        actor_id: Some("admin:bootstrap".to_owned()),
        actor_name: Some("bootstrap".to_owned()),
        actor_scope: Some("global".to_owned()),
        method: "POST".to_owned(),
        path: format!("/v1/zones/{}/applications", zone.unwrap_or("-")),
        zone_id: zone.map(str::to_owned),
        entity_type: Some("application".to_owned()),
        entity_id: Some(format!("app-{id}")),
        status_code: 201,
        payload: String::new(),
        occurred_at: at,
    }
}

/// Appends form a dense, linked, signed chain per zone; a read-back record equals the
/// appended one (millisecond time, NULs stripped), and the chain verifies clean.
pub async fn dense_chain_verifies(s: &dyn AdminAuditStore, prefix: &str) {
    let zone = format!("{prefix}-dense");
    let other = format!("{prefix}-other");
    let k = key();
    let mut appended = Vec::new();
    for i in 0..5 {
        let mut e = entry(Some(&zone), &format!("{prefix}-d{i}"), i);
        if i == 2 {
            e.path.push('\0');
        }
        appended.push(s.append_admin_audit(&e, Some(&k)).await.unwrap());
        s.append_admin_audit(&entry(Some(&other), &format!("{prefix}-o{i}"), i), Some(&k))
            .await
            .unwrap();
    }
    let seqs: Vec<i64> = appended.iter().map(|r| r.chain_seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(appended[0].prev_content_sha256, None);
    assert_eq!(
        appended[1].prev_content_sha256.as_deref(),
        Some(appended[0].content_sha256.as_str())
    );
    assert!(!appended[2].entry.path.contains('\0'));
    assert_eq!(
        appended[0].entry.occurred_at.timestamp_subsec_micros(),
        123_000
    );
    let read = s.list_admin_audit(Some(&zone), 0, 100).await.unwrap();
    assert_eq!(read, appended);
    let page = s.list_admin_audit(Some(&zone), 2, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.chain_seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
    let report = verify_admin_audit(s, Some(&zone), Some(&k)).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.rows_checked, 5);
    let wrong = AuditHmacKey::from_bytes(vec![7; 32]).unwrap();
    let report = verify_admin_audit(s, Some(&zone), Some(&wrong))
        .await
        .unwrap();
    assert_eq!(report.hmac_failures, 5);
    assert!(matches!(
        s.list_admin_audit(Some(&zone), 0, 0).await,
        Err(StoreError::Invalid(_))
    ));
}

/// Zone-less entries go to one global chain, apart from every zone's.
pub async fn global_chain_is_separate(s: &dyn AdminAuditStore, prefix: &str) {
    let k = key();
    let before = s.list_admin_audit(None, 0, 500).await.unwrap().len() as i64;
    let g = s
        .append_admin_audit(&entry(None, &format!("{prefix}-g1"), 0), Some(&k))
        .await
        .unwrap();
    assert_eq!(g.chain_seq, before + 1);
    assert_eq!(g.entry.chain(), GLOBAL_CHAIN);
    let z = s
        .append_admin_audit(
            &entry(Some(&format!("{prefix}-gz")), &format!("{prefix}-g2"), 0),
            Some(&k),
        )
        .await
        .unwrap();
    assert_eq!(z.chain_seq, 1);
    let global = s.list_admin_audit(None, before, 10).await.unwrap();
    assert_eq!(global, vec![g]);
    // An empty zone id is the global chain too.
    let mut empty = entry(None, &format!("{prefix}-g3"), 1);
    empty.zone_id = Some(String::new());
    let r = s.append_admin_audit(&empty, Some(&k)).await.unwrap();
    assert_eq!(r.entry.zone_id, None);
    assert_eq!(r.chain_seq, before + 2);
}

/// A taken id is a conflict and consumes no sequence number.
pub async fn duplicate_id_conflicts(s: &dyn AdminAuditStore, prefix: &str) {
    let zone = format!("{prefix}-dup");
    let e = entry(Some(&zone), &format!("{prefix}-x"), 0);
    s.append_admin_audit(&e, None).await.unwrap();
    let err = s.append_admin_audit(&e, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                constraint: "admin_audit_id"
            }
        ),
        "{err:?}"
    );
    let next = s
        .append_admin_audit(&entry(Some(&zone), &format!("{prefix}-y"), 1), None)
        .await
        .unwrap();
    assert_eq!(next.chain_seq, 2);
    assert_eq!(next.chain_hmac, "", "unsigned without a key");
}

/// Concurrent appends to one chain stay dense and linked.
pub async fn concurrent_appends_stay_dense(s: Arc<dyn AdminAuditStore>, prefix: &str) {
    let zone = format!("{prefix}-conc");
    let k = key();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = s.clone();
        let zone = zone.clone();
        let k = k.clone();
        let id = format!("{prefix}-c{i}");
        tasks.push(tokio::spawn(async move {
            s.append_admin_audit(&entry(Some(&zone), &id, i), Some(&k))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows = s.list_admin_audit(Some(&zone), 0, 100).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.chain_seq).collect::<Vec<_>>(),
        (1..=24).collect::<Vec<_>>()
    );
    let report = verify_admin_audit(s.as_ref(), Some(&zone), Some(&k))
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}
