//! The retention worker (reference §2.8, §2.9): while this replica holds the retention lease
//! (`pg_try_advisory_lock("CARA0002")` on a dedicated connection), run a retention tick at
//! acquisition and then every [`RetentionSettings::interval`]: ensure this month's and the next
//! three months' partitions, and drop the monthly partitions older than
//! `min(AUDIT_RETENTION_DAYS, audit_retention.retention_days)`.
//!
//! The lease is probed every [`RetentionSettings::lease_check`]: contended when not held,
//! pinged when held (a failed ping steps down and contends again at once). On stop the lease
//! is released so another replica takes over promptly. Only Postgres ledgers have partitions;
//! the in-memory ledger runs no retention.
//!
//! Metrics: `caracal_audit_retention_created_total` (ensure calls, as the reference counts),
//! `caracal_audit_retention_dropped_total`, `caracal_audit_is_retention_leader`,
//! `caracal_audit_retention_lease_transitions_total`.

use std::time::Duration;

use caracal_core::backend::postgres::store::RETENTION_LEASE_KEY;
use caracal_core::backend::postgres::{PgLeaderLease, PgStore, RetentionReport};
use caracal_core::clock::SharedClock;
use caracal_core::store::StoreResult;
use tokio::sync::watch;

use crate::leader::{LeaderJob, run_as_leader};

/// How the retention worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// `AUDIT_RETENTION_DAYS` (default 365): the ceiling of the retention.
    pub retention_days: u32,
    /// `AUDIT_RETENTION_INTERVAL_SECS` (default 6 h): time between ticks while leader.
    pub interval: Duration,
    /// Time between lease probes (30 s, the reference's loop).
    pub lease_check: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            retention_days: caracal_core::backend::postgres::store::DEFAULT_RETENTION_DAYS,
            interval: Duration::from_secs(6 * 60 * 60),
            lease_check: Duration::from_secs(30),
        }
    }
}

/// Run one retention tick on `store` at `now`, logging and counting the outcome.
pub async fn run_tick(
    store: &PgStore,
    clock: &SharedClock,
    env_ceiling: u32,
) -> StoreResult<RetentionReport> {
    let report = store.retention_tick(clock.now(), env_ceiling).await?;
    metrics::counter!("caracal_audit_retention_created_total")
        .increment(u64::try_from(report.ensured.len()).unwrap_or(u64::MAX));
    metrics::counter!("caracal_audit_retention_dropped_total")
        .increment(u64::try_from(report.dropped.len()).unwrap_or(u64::MAX));
    tracing::info!(
        ensured = ?report.ensured,
        dropped = ?report.dropped,
        retention_days = report.retention_days,
        cutoff = %report.cutoff,
        "audit retention tick"
    );
    Ok(report)
}

/// The worker loop: lease, ticks, release on stop ([`crate::leader`]). Runs until `stop`
/// turns true.
pub async fn run(
    store: PgStore,
    clock: SharedClock,
    settings: RetentionSettings,
    stop: watch::Receiver<bool>,
) {
    let lease = PgLeaderLease::new(store.clone(), RETENTION_LEASE_KEY);
    let job = LeaderJob {
        name: "retention",
        interval: settings.interval,
        lease_check: settings.lease_check,
    };
    run_as_leader(lease, job, stop, || async {
        // Every store call of the tick is bounded by the store's operation timeout.
        match run_tick(&store, &clock, settings.retention_days).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "audit retention tick failed");
                false
            }
        }
    })
    .await;
}

/// Spawn [`run`] on a store of its own at `url` (a small pool, so the lease's dedicated
/// connection never takes one from the ingestor). A URL that does not parse is logged and
/// the worker exits.
pub fn spawn(
    url: String,
    clock: SharedClock,
    settings: RetentionSettings,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let options = caracal_core::backend::postgres::PgStoreOptions {
            max_size: 3,
            application_name: "caracal-audit-retention".to_owned(),
            ..Default::default()
        };
        match PgStore::open(&url, options).await {
            Ok(store) => run(store, clock, settings, stop).await,
            Err(e) => tracing::error!(error = %e, "audit retention: cannot open Postgres"),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use caracal_core::backend::postgres::PgStoreOptions;
    use caracal_core::backend::postgres::migrate::migrate;
    use caracal_core::clock::FakeClock;
    use caracal_test_support::{connect, postgres_or_skip};
    use chrono::TimeZone;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn worker_ticks_while_leader_and_releases_on_stop() {
        let Some(pg) = postgres_or_skip("audit_retention_worker") else {
            return;
        };
        let url = pg.create_database("audit_retention_worker").await.unwrap();
        let mut client = connect(&url).await.unwrap();
        migrate(&mut client).await.unwrap();
        let store = PgStore::open(&url, PgStoreOptions::default())
            .await
            .unwrap();
        let now = chrono::Utc.with_ymd_and_hms(2033, 1, 20, 0, 0, 0).unwrap();
        let clock: SharedClock = Arc::new(FakeClock::new(now));
        let settings = RetentionSettings {
            retention_days: 365,
            interval: Duration::from_secs(3600),
            lease_check: Duration::from_millis(50),
        };
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run(store.clone(), clock, settings, rx));

        let exists = |name: &'static str| {
            let client = &client;
            async move {
                client
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                    .await
                    .unwrap()
                    .get::<_, bool>(0)
            }
        };
        let mut ticked = false;
        for _ in 0..100 {
            if exists("audit_events_y2033m04").await {
                ticked = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ticked, "the leader did not ensure the forward months");
        let mut other = PgLeaderLease::new(store.clone(), RETENTION_LEASE_KEY);
        assert!(
            !other.try_acquire().await.unwrap(),
            "the worker holds the lease"
        );

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert!(other.try_acquire().await.unwrap(), "released on stop");
        other.release().await;
    }
}
