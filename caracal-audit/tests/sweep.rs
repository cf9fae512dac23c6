//! The tamper sweep on a real Postgres: an incremental pass verifies only the rows after each
//! zone's verified head; an edit to a new row is found by the next incremental pass, an edit
//! behind the head only by a full pass, and a zone with findings is re-verified from genesis
//! until it is clean.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use caracal_audit::sweep::Sweeper;
use caracal_core::audit::{AuditEvent, AuditHmacKey};
use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::store::audit::{AuditLedger, IncomingEvent};
use caracal_test_support::{connect, postgres_or_skip};

fn event(zone: &str, n: u32) -> IncomingEvent {
    let json = format!(
        r#"{{"id":"{zone}-{n}","zone_id":"{zone}","event_type":"t","request_id":"r{n}","decision":"allow","evaluation_status":"complete","determining_policies_json":null,"diagnostics_json":null,"occurred_at":"2026-11-23T10:00:00Z"}}"#
    );
    IncomingEvent {
        event: AuditEvent::parse(json.as_bytes()).unwrap(),
        ingest_signature: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_passes_check_new_rows_and_full_passes_everything() {
    let Some(pg) = postgres_or_skip("audit_sweep") else {
        return;
    };
    let url = pg.create_database("audit_sweep").await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    let store = PgStore::open(&url, PgStoreOptions::default())
        .await
        .unwrap();
    let key = AuditHmacKey::from_bytes(vec![3u8; 32]).unwrap();
    let append = |zone: &'static str, range: std::ops::RangeInclusive<u32>| {
        let store = store.clone();
        let key = key.clone();
        async move {
            let events: Vec<_> = range.map(|n| event(zone, n)).collect();
            store.append(zone, &events, Some(&key)).await.unwrap();
        }
    };
    // Edit a stored row as a superuser would (the append-only trigger bypassed).
    let edit = |id: String| {
        let client = &client;
        async move {
            client
                .batch_execute(&format!(
                    "SET session_replication_role = replica; \
                     UPDATE audit_events SET decision = 'deny' WHERE id = '{id}'; \
                     SET session_replication_role = origin;"
                ))
                .await
                .unwrap();
        }
    };

    append("z-a", 1..=10).await;
    append("z-b", 1..=5).await;
    let mut sweeper = Sweeper::default();
    let full = sweeper.pass(&store, Some(&key), true).await.unwrap();
    assert_eq!((full.rows_checked, full.dirty.len()), (15, 0));

    // New rows only.
    append("z-a", 11..=13).await;
    let inc = sweeper.pass(&store, Some(&key), false).await.unwrap();
    assert_eq!((inc.rows_checked, inc.dirty.len()), (3, 0));

    // An edit to a new row: the next incremental pass finds it.
    append("z-b", 6..=8).await;
    edit("z-b-7".to_owned()).await;
    let inc = sweeper.pass(&store, Some(&key), false).await.unwrap();
    assert_eq!(inc.dirty.len(), 1);
    assert_eq!(inc.dirty[0].zone_id, "z-b");
    assert_eq!(inc.dirty[0].content_mismatches, 1);
    // The dirty zone is re-verified from genesis on the next pass (and still dirty).
    let inc = sweeper.pass(&store, Some(&key), false).await.unwrap();
    assert_eq!(inc.rows_checked, 8, "z-b from genesis, z-a nothing new");
    assert_eq!(inc.dirty.len(), 1);

    // An edit behind z-a's verified head: invisible to incremental passes, found by a full one.
    edit("z-a-2".to_owned()).await;
    let inc = sweeper.pass(&store, Some(&key), false).await.unwrap();
    assert!(inc.dirty.iter().all(|r| r.zone_id != "z-a"));
    let full = sweeper.pass(&store, Some(&key), true).await.unwrap();
    let zones: Vec<&str> = full.dirty.iter().map(|r| r.zone_id.as_str()).collect();
    assert_eq!(zones, ["z-a", "z-b"]);
    let first = full.dirty[0].findings[0].row.as_ref().unwrap();
    assert_eq!((first.chain_seq, first.event_id.as_str()), (2, "z-a-2"));
}
