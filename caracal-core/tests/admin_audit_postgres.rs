//! The admin audit chain contract (`tests/contract/admin_audit.rs`) against Postgres, one
//! fresh migrated database per case; plus the tamper proofs: the append-only trigger refuses
//! edits, and an edit or deletion made with the trigger disabled is what the verifier reports.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "contract/admin_audit.rs"]
mod contract;

use std::sync::Arc;
use std::time::Duration;

use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::store::admin_audit::{AdminAuditStore, verify_admin_audit};
use caracal_test_support::{connect, postgres_or_skip};

async fn fresh(test: &str) -> Option<(PgStore, String)> {
    let pg = postgres_or_skip(test)?;
    let url = pg.create_database(test).await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    drop(client);
    let options = PgStoreOptions {
        max_size: 12,
        connection_timeout: Duration::from_secs(10),
        ..PgStoreOptions::default()
    };
    Some((PgStore::open(&url, options).await.unwrap(), url))
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let Some((s, _)) = fresh(concat!("aa_", stringify!($name))).await else { return };
            contract::$name(&s, "pg").await;
        }
    )*};
}

cases!(
    dense_chain_verifies,
    global_chain_is_separate,
    duplicate_id_conflicts
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_stay_dense() {
    let Some((s, _)) = fresh("aa_concurrent_appends_stay_dense").await else {
        return;
    };
    let s: Arc<dyn AdminAuditStore> = Arc::new(s);
    contract::concurrent_appends_stay_dense(s, "pg").await;
}

/// The trigger refuses an edit; with it disabled, an edited row is a content mismatch and a
/// deleted row a gap plus a broken link.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampering_is_reported() {
    let Some((s, url)) = fresh("aa_tampering_is_reported").await else {
        return;
    };
    let k = contract::key();
    let zone = "zone-tamper";
    for i in 0..4 {
        s.append_admin_audit(&contract::entry(Some(zone), &format!("t{i}"), i), Some(&k))
            .await
            .unwrap();
    }
    let clean = verify_admin_audit(&s, Some(zone), Some(&k)).await.unwrap();
    assert!(clean.is_clean(), "{clean:?}");

    let client = connect(&url).await.unwrap();
    let refused = client
        .execute(
            "UPDATE admin_audit_events SET status_code = 200 WHERE id = 't1'",
            &[],
        )
        .await;
    assert!(refused.is_err(), "the append-only trigger refuses updates");

    client
        .batch_execute(
            "ALTER TABLE admin_audit_events DISABLE TRIGGER admin_audit_events_append_only; \
             UPDATE admin_audit_events SET status_code = 200 WHERE id = 't1'; \
             ALTER TABLE admin_audit_events ENABLE TRIGGER admin_audit_events_append_only;",
        )
        .await
        .unwrap();
    let edited = verify_admin_audit(&s, Some(zone), Some(&k)).await.unwrap();
    assert_eq!(edited.content_mismatches, 1, "{edited:?}");
    assert_eq!(edited.findings[0].row.as_ref().unwrap().event_id, "t1");

    client
        .batch_execute(
            "ALTER TABLE admin_audit_events DISABLE TRIGGER admin_audit_events_append_only; \
             DELETE FROM admin_audit_events WHERE id = 't2'; \
             ALTER TABLE admin_audit_events ENABLE TRIGGER admin_audit_events_append_only;",
        )
        .await
        .unwrap();
    let deleted = verify_admin_audit(&s, Some(zone), Some(&k)).await.unwrap();
    assert_eq!(deleted.gaps, 1, "{deleted:?}");
    assert_eq!(deleted.chain_breaks, 1, "{deleted:?}");
}
