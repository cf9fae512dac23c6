//! Ledger partitions, retention and leader leases on a real Postgres (reference §2.8, §2.9,
//! §6 item 34): four forward months after an ensure, only expired monthly partitions dropped
//! (never the default one), the console retention capped by the env ceiling, and one holder
//! per lease key.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::store::{PARTITION_MONTHS_AHEAD, RETENTION_LEASE_KEY};
use caracal_core::backend::postgres::{PgLeaderLease, PgStore, PgStoreOptions};
use caracal_test_support::{connect, postgres_or_skip};
use chrono::{TimeZone, Utc};

async fn fresh(test: &str) -> Option<(PgStore, tokio_postgres::Client)> {
    let pg = postgres_or_skip(test)?;
    let url = pg.create_database(test).await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    let options = PgStoreOptions {
        max_size: 4,
        connection_timeout: Duration::from_secs(10),
        ..PgStoreOptions::default()
    };
    Some((PgStore::open(&url, options).await.unwrap(), client))
}

async fn partitions(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'audit_events'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_creates_four_months_and_retention_drops_only_expired() {
    let Some((store, client)) = fresh("retention_ensure_and_drop").await else {
        return;
    };
    // A `now` well after the migration's months.
    let now = Utc.with_ymd_and_hms(2031, 6, 15, 10, 0, 0).unwrap();
    let ensured = store
        .ensure_partitions(now, PARTITION_MONTHS_AHEAD)
        .await
        .unwrap();
    assert_eq!(
        ensured,
        [
            "audit_events_y2031m06",
            "audit_events_y2031m07",
            "audit_events_y2031m08",
            "audit_events_y2031m09"
        ]
    );
    // Idempotent.
    assert_eq!(
        store
            .ensure_partitions(now, PARTITION_MONTHS_AHEAD)
            .await
            .unwrap(),
        ensured
    );
    // Two more: April ends (May 1st) before the 30-day cutoff (May 16th), May after it.
    for month in ["2031-04-10T00:00:00Z", "2031-05-10T00:00:00Z"] {
        let at = month.parse().unwrap();
        store.ensure_partitions(at, 0).await.unwrap();
    }
    let before = partitions(&client).await;
    assert!(before.contains(&"audit_events_default".to_owned()));

    client
        .execute(
            "INSERT INTO audit_retention (id, retention_days) VALUES (1, 30)",
            &[],
        )
        .await
        .unwrap();
    let report = store.retention_tick(now, 365).await.unwrap();
    assert_eq!(report.retention_days, 30);
    assert_eq!(report.ensured, ensured);
    assert_eq!(
        report.cutoff,
        Utc.with_ymd_and_hms(2031, 5, 16, 10, 0, 0).unwrap()
    );
    let after = partitions(&client).await;
    assert_eq!(
        after,
        [
            "audit_events_default",
            "audit_events_y2031m05",
            "audit_events_y2031m06",
            "audit_events_y2031m07",
            "audit_events_y2031m08",
            "audit_events_y2031m09"
        ]
    );
    // Everything older went, oldest first; the default partition is not among them.
    let mut expected_dropped: Vec<String> = before
        .iter()
        .filter(|p| !after.contains(p))
        .cloned()
        .collect();
    expected_dropped.sort();
    assert_eq!(report.dropped, expected_dropped);
    assert!(report.dropped.contains(&"audit_events_y2031m04".to_owned()));
    assert!(report.dropped.len() >= 5, "{:?}", report.dropped);

    // A second tick drops nothing more.
    let again = store.retention_tick(now, 365).await.unwrap();
    assert!(again.dropped.is_empty());
    // The SQL function itself refuses the default partition.
    assert!(
        client
            .query_one("SELECT audit_partition_drop('audit_events_default')", &[])
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_retention_is_capped_by_the_env_ceiling() {
    let Some((store, client)) = fresh("retention_console_capped").await else {
        return;
    };
    assert_eq!(store.retention_days(365).await.unwrap(), 365);
    client
        .execute(
            "INSERT INTO audit_retention (id, retention_days) VALUES (1, 400)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(store.retention_days(365).await.unwrap(), 365);
    client
        .execute("UPDATE audit_retention SET retention_days = 30", &[])
        .await
        .unwrap();
    assert_eq!(store.retention_days(365).await.unwrap(), 30);
    assert_eq!(store.retention_days(7).await.unwrap(), 7);

    // With a 400-day console value and a 365-day ceiling, a partition 13 months old goes.
    client
        .execute("UPDATE audit_retention SET retention_days = 400", &[])
        .await
        .unwrap();
    let now = Utc.with_ymd_and_hms(2032, 3, 15, 0, 0, 0).unwrap();
    store
        .ensure_partitions("2031-02-01T00:00:00Z".parse().unwrap(), 0)
        .await
        .unwrap();
    let report = store.retention_tick(now, 365).await.unwrap();
    assert_eq!(report.retention_days, 365);
    assert!(report.dropped.contains(&"audit_events_y2031m02".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lease_holder_per_key() {
    let Some((store, _client)) = fresh("retention_lease").await else {
        return;
    };
    let mut a = PgLeaderLease::new(store.clone(), RETENTION_LEASE_KEY);
    let mut b = PgLeaderLease::new(store.clone(), RETENTION_LEASE_KEY);
    assert!(a.try_acquire().await.unwrap());
    assert!(a.is_held());
    assert!(a.try_acquire().await.unwrap(), "re-acquire while held");
    assert!(!b.try_acquire().await.unwrap());
    assert!(!b.is_held());
    assert!(a.verify().await);
    assert!(!b.verify().await);

    a.release().await;
    assert!(!a.is_held());
    assert!(b.try_acquire().await.unwrap());
    assert!(!a.try_acquire().await.unwrap());

    // Dropping a held lease retires its session, which frees the lock.
    drop(b);
    let mut acquired = false;
    for _ in 0..50 {
        if a.try_acquire().await.unwrap() {
            acquired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(acquired, "the dropped lease's lock was not released");
    a.release().await;
}
