//! Audit ledger partitions, retention, and leader leases (reference §2.8, §2.9).
//!
//! - [`PgStore::ensure_partitions`] calls `audit_partition_ensure(month)` for the current UTC
//!   month and the next `months_ahead`;
//! - [`PgStore::retention_days`] is `min(env ceiling, audit_retention.retention_days)`;
//! - [`PgStore::drop_expired_partitions`] drops, through `audit_partition_drop(name)`, every
//!   monthly child `audit_events_yYYYYmMM` whose month end is at or before `now − days`
//!   (the default partition never matches the name rule, and the SQL function refuses it);
//! - [`PgStore::retention_tick`] runs the three in the reference's order;
//! - [`PgLeaderLease`]: a session-level `pg_try_advisory_lock(key)` held on a dedicated
//!   pooled connection, with keys [`EXPORT_LEASE_KEY`] and [`RETENTION_LEASE_KEY`].
//!
//! Both SQL functions serialise on their own advisory transaction lock, so two replicas
//! running a tick at once are safe; the lease only keeps the work to one of them.

use std::time::Duration;

use bb8::PooledConnection;
use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};

use super::PgStore;
use super::conn::PgManager;
use super::error::{pg_error, timed_out};
use super::rows::{all, col};
use crate::store::{StoreError, StoreResult};

/// The exporter's lease key, `"CARA0001"` as a big-endian integer.
pub const EXPORT_LEASE_KEY: i64 = 0x4341_5241_3030_3031;
/// The retention lease key, `"CARA0002"` as a big-endian integer.
pub const RETENTION_LEASE_KEY: i64 = 0x4341_5241_3030_3032;
/// `AUDIT_RETENTION_DAYS` when unset.
pub const DEFAULT_RETENTION_DAYS: u32 = 365;
/// Months ensured after the current one.
pub const PARTITION_MONTHS_AHEAD: u32 = 3;
/// The reference's bound on a lease probe (acquire, ping, unlock).
pub const LEASE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one retention tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// The partitions ensured (existing or created), current month first.
    pub ensured: Vec<String>,
    /// The retention applied, in days.
    pub retention_days: u32,
    /// `now − retention_days`: partitions ending at or before it were dropped.
    pub cutoff: DateTime<Utc>,
    /// The partitions dropped, oldest first.
    pub dropped: Vec<String>,
}

/// The first instant of the UTC month `months` after the month of `at`.
fn month_start(at: DateTime<Utc>, months: u32) -> StoreResult<NaiveDate> {
    NaiveDate::from_ymd_opt(at.year(), at.month(), 1)
        .and_then(|d| d.checked_add_months(Months::new(months)))
        .ok_or_else(|| StoreError::Invalid(format!("month {months} after {at} is out of range")))
}

/// The end (first instant of the next month, UTC) of the month a partition named
/// `audit_events_yYYYYmMM` covers; `None` for any other name.
pub fn partition_month_end(name: &str) -> Option<DateTime<Utc>> {
    let rest = name.strip_prefix("audit_events_y")?;
    let (year, month) = rest.split_once('m')?;
    if year.len() != 4
        || month.len() != 2
        || !year.bytes().all(|b| b.is_ascii_digit())
        || !month.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let first = NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)?;
    let next = first.checked_add_months(Months::new(1))?;
    Some(Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0)?))
}

impl PgStore {
    /// Ensure the monthly partitions of the UTC month of `now` and the `months_ahead` after
    /// it (`audit_partition_ensure`), returning their names in order. The first error aborts.
    pub async fn ensure_partitions(
        &self,
        now: DateTime<Utc>,
        months_ahead: u32,
    ) -> StoreResult<Vec<String>> {
        let months = (0..=months_ahead)
            .map(|m| month_start(now, m))
            .collect::<StoreResult<Vec<_>>>()?;
        self.bounded("audit_partition_ensure", async {
            let conn = self.conn().await?;
            let mut names = Vec::with_capacity(months.len());
            for month in &months {
                let row = conn
                    .row("SELECT audit_partition_ensure($1::date) AS name", &[month])
                    .await?;
                names.push(col(&row, "audit_partition", "name")?);
            }
            Ok(names)
        })
        .await
    }

    /// The retention in days: `env_ceiling` (`AUDIT_RETENTION_DAYS`), lowered to the
    /// console's `audit_retention.retention_days` when that row exists and is smaller. Never
    /// below 1.
    pub async fn retention_days(&self, env_ceiling: u32) -> StoreResult<u32> {
        let console: Option<i32> = self
            .bounded("audit_retention", async {
                let conn = self.conn().await?;
                conn.row_opt(
                    "SELECT retention_days FROM audit_retention WHERE id = 1",
                    &[],
                )
                .await?
                .map(|r| col(&r, "audit_retention", "retention_days"))
                .transpose()
            })
            .await?;
        let console = console.and_then(|d| u32::try_from(d).ok());
        Ok(console.map_or(env_ceiling, |c| c.min(env_ceiling)).max(1))
    }

    /// Drop every monthly partition whose month ends at or before `now − days`, through
    /// `audit_partition_drop`; returns the names dropped, oldest first. The default partition
    /// is never a candidate.
    pub async fn drop_expired_partitions(
        &self,
        now: DateTime<Utc>,
        days: u32,
    ) -> StoreResult<Vec<String>> {
        let cutoff = cutoff(now, days)?;
        self.bounded("audit_partition_drop", async {
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    "SELECT c.relname::text AS name FROM pg_inherits i \
                     JOIN pg_class c ON c.oid = i.inhrelid \
                     WHERE i.inhparent = 'audit_events'::regclass \
                       AND c.relname ~ '^audit_events_y[0-9]{4}m[0-9]{2}$' \
                     ORDER BY c.relname",
                    &[],
                )
                .await?;
            let names: Vec<String> = all(&rows, |r| col(r, "audit_partition", "name"))?;
            let mut dropped = Vec::new();
            for name in names {
                let Some(end) = partition_month_end(&name) else {
                    continue;
                };
                if end > cutoff {
                    continue;
                }
                let row = conn
                    .row("SELECT audit_partition_drop($1) AS dropped", &[&name])
                    .await?;
                if col::<bool>(&row, "audit_partition", "dropped")? {
                    dropped.push(name);
                }
            }
            Ok(dropped)
        })
        .await
    }

    /// One retention tick (§2.9): ensure months 0..=[`PARTITION_MONTHS_AHEAD`], read the
    /// retention (`env_ceiling` capped by the console row), drop the expired partitions. Any
    /// error aborts the tick.
    pub async fn retention_tick(
        &self,
        now: DateTime<Utc>,
        env_ceiling: u32,
    ) -> StoreResult<RetentionReport> {
        let ensured = self.ensure_partitions(now, PARTITION_MONTHS_AHEAD).await?;
        let retention_days = self.retention_days(env_ceiling).await?;
        let dropped = self.drop_expired_partitions(now, retention_days).await?;
        Ok(RetentionReport {
            ensured,
            retention_days,
            cutoff: cutoff(now, retention_days)?,
            dropped,
        })
    }
}

fn cutoff(now: DateTime<Utc>, days: u32) -> StoreResult<DateTime<Utc>> {
    now.checked_sub_signed(chrono::Duration::days(i64::from(days)))
        .ok_or_else(|| StoreError::Invalid(format!("{days} days before {now} is out of range")))
}

/// A leader lease: `pg_try_advisory_lock(key)` held by the session of one pooled connection
/// that the lease keeps checked out while it holds the lock (reference §2.8).
///
/// Losing that session (the server restarted, the network dropped) releases the lock on the
/// server, so [`verify`](Self::verify) pings it and steps down when the ping fails. A lease
/// dropped while held retires its connection (the pool closes it instead of reusing it), which
/// releases the lock without an `await`.
pub struct PgLeaderLease {
    store: PgStore,
    key: i64,
    probe_timeout: Duration,
    conn: Option<PooledConnection<'static, PgManager>>,
}

impl std::fmt::Debug for PgLeaderLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLeaderLease")
            .field("key", &format_args!("{:#018x}", self.key))
            .field("held", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl PgLeaderLease {
    /// A lease on `key` over `store`'s pool, not yet held. Probes are bounded by
    /// [`LEASE_PROBE_TIMEOUT`].
    pub fn new(store: PgStore, key: i64) -> Self {
        Self {
            store,
            key,
            probe_timeout: LEASE_PROBE_TIMEOUT,
            conn: None,
        }
    }

    /// Replace the bound on each probe (acquire, ping, unlock).
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The lock key.
    pub fn key(&self) -> i64 {
        self.key
    }

    /// Whether the lease is held (as of the last probe).
    pub fn is_held(&self) -> bool {
        self.conn.is_some()
    }

    /// Try to take the lock; `Ok(true)` when held afterwards (also when already held),
    /// `Ok(false)` when another session holds it. Never waits for the lock itself.
    pub async fn try_acquire(&mut self) -> StoreResult<bool> {
        if self.conn.is_some() {
            return Ok(true);
        }
        let limit = self.probe_timeout;
        let conn = tokio::time::timeout(limit, self.store.owned_conn())
            .await
            .map_err(|_| timed_out("lease checkout", limit))??;
        let key = self.key;
        let probe = async {
            let row = conn
                .query_one("SELECT pg_try_advisory_lock($1) AS held", &[&key])
                .await
                .map_err(pg_error)?;
            col::<bool>(&row, "advisory_lock", "held")
        };
        match tokio::time::timeout(limit, probe).await {
            Ok(Ok(true)) => {
                self.conn = Some(conn);
                Ok(true)
            }
            Ok(Ok(false)) => Ok(false),
            Ok(Err(e)) => {
                // INVARIANT: a session whose lock state is unknown never goes back to the pool.
                conn.mark_broken();
                Err(e)
            }
            Err(_) => {
                conn.mark_broken();
                Err(timed_out("pg_try_advisory_lock", limit))
            }
        }
    }

    /// Check that the lease's session is alive (a bounded ping); on failure step down (the
    /// connection is retired, so the server releases the lock) and return `false`. `false`
    /// too when not held.
    pub async fn verify(&mut self) -> bool {
        let Some(conn) = &self.conn else {
            return false;
        };
        let alive = !conn.is_broken()
            && matches!(
                tokio::time::timeout(self.probe_timeout, conn.simple_query("")).await,
                Ok(Ok(_))
            );
        if !alive {
            self.step_down();
        }
        alive
    }

    /// Give the lease up: `pg_advisory_unlock(key)` (bounded), and the connection back to the
    /// pool; if the unlock fails or times out the connection is retired instead, which
    /// releases the lock with the session.
    pub async fn release(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let unlocked = tokio::time::timeout(
            self.probe_timeout,
            conn.query_one("SELECT pg_advisory_unlock($1)", &[&self.key]),
        )
        .await;
        if !matches!(unlocked, Ok(Ok(_))) {
            conn.mark_broken();
        }
    }

    /// Drop the lease without a round trip: the connection is retired.
    fn step_down(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.mark_broken();
        }
    }
}

impl Drop for PgLeaderLease {
    fn drop(&mut self) {
        self.step_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spell_cara() {
        assert_eq!(EXPORT_LEASE_KEY.to_be_bytes(), *b"CARA0001");
        assert_eq!(RETENTION_LEASE_KEY.to_be_bytes(), *b"CARA0002");
    }

    #[test]
    fn month_end_of_names() {
        let end = |s| partition_month_end(s);
        assert_eq!(
            end("audit_events_y2026m12"),
            Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap())
        );
        assert_eq!(
            end("audit_events_y2026m02"),
            Some(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap())
        );
        for bad in [
            "audit_events_default",
            "audit_events_y2026m13",
            "audit_events_y2026m1",
            "audit_events_y+026m01",
            "audit_events",
        ] {
            assert_eq!(end(bad), None, "{bad}");
        }
    }
}
