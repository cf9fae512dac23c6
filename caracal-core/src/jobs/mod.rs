//! The Coordinator's background jobs (reference `control-plane.md` §2.2), one leader per job
//! across replicas.
//!
//! | Job | Every | What one pass does |
//! |---|---|---|
//! | [`TtlSweeper`] (`ttl-sweeper`) | 60 s, batches of 500 | task sessions (active or suspended) past `started_at + ttl` → subtree terminated, root `expired` with reason `ttl`, touching edges revoked, revocations to the outbox |
//! | [`LeaseSweeper`] (`service-lease-sweeper`) | 30 s | active service sessions past `heartbeat_deadline_at` → subtree suspended (`service_heartbeat_lost`) |
//! | [`RetentionCleaner`] (`retention-cleaner`) | 15 min | active edges past expiry → `expired` (epoch bump, `edge_expire`); deletes retired edges and sessions older than 90 d, dispatched outbox rows older than 7 d, expired idempotency receipts |
//!
//! The outbox publisher is not here: it is [`crate::streams::relay::OutboxRelay`], safe to run
//! on every replica at once (its claims use `FOR UPDATE SKIP LOCKED` and leases).
//!
//! ## Shape
//!
//! Each job is pure logic over the storage traits ([`Job::run_once`] takes the pass's `now`,
//! so tests drive it directly); the rules it applies are the Coordinator's own
//! (`terminate_in` / `suspend_in` of [`crate::coordinator::sessions`], the event builders of
//! [`crate::coordinator::events`]), not copies. [`JobRunner`] runs each job on its interval,
//! each pass guarded by [`LeaderLock::try_acquire`](crate::store::leader::LeaderLock), and
//! reports every pass ([`PassReport`]: counts per pass, metric-friendly) to the log and to an
//! optional observer.
//!
//! ## Why a row is changed once
//!
//! A sweep lists candidates across zones without a lock, then acts on each one inside its
//! zone's unit of work after **re-reading it there**: a candidate another replica (or a
//! request) already handled no longer qualifies and is skipped. So even two passes that run
//! at once (the leader lock lost mid-pass) change each row once and enqueue its events once;
//! the leader lock only keeps the work to one replica.
//!
//! ## Failures
//!
//! A store error while listing candidates ends the pass ([`JobError`]); the next pass
//! retries. A failure on one candidate is logged and counted (`failed`) and the pass goes on
//! with the others, unless it is a retryable `Unavailable` (the store is down), which ends
//! the pass. A unit of work that fails rolls back whole, so nothing is half-applied.

pub mod lease;
pub mod retention;
mod runner;
pub mod ttl;

#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::coordinator::CoordinatorError;
use crate::store::StoreError;

pub use lease::LeaseSweeper;
pub use retention::RetentionCleaner;
pub use runner::{JobRunner, JobsHandle, PassObserver, PassOutcome, PassReport};
pub use ttl::TtlSweeper;

/// Name of the TTL sweeper (its leader-lock name and log/metric label).
pub const TTL_SWEEPER: &str = "ttl-sweeper";
/// Name of the service-lease sweeper.
pub const LEASE_SWEEPER: &str = "service-lease-sweeper";
/// Name of the retention cleaner.
pub const RETENTION_CLEANER: &str = "retention-cleaner";

/// Termination reason of a task session whose TTL ran out (its descendants get
/// [`crate::coordinator::sessions::REASON_PARENT_TERMINATED`]).
pub const REASON_TTL: &str = "ttl";
/// `reason` of the `edge_expire` invalidation.
pub const REASON_EDGE_EXPIRED: &str = "expired";

/// Periods, batch sizes and retention ages of the jobs. [`Default`] is the reference's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsConfig {
    /// TTL sweeper period (60 s).
    pub ttl_interval: Duration,
    /// Service-lease sweeper period (30 s).
    pub lease_interval: Duration,
    /// Retention cleaner period (15 min).
    pub retention_interval: Duration,
    /// Candidates per batch, every job (500; at least 1).
    pub batch: u32,
    /// Batches one pass may run before it yields to the next period (20): a pass catches up
    /// on a backlog without running unbounded.
    pub max_batches: u32,
    /// Age after which revoked / expired edges are deleted (90 d).
    pub edge_retention: chrono::Duration,
    /// Age after which terminated / expired sessions without children are deleted (90 d).
    pub session_retention: chrono::Duration,
    /// Age after which dispatched outbox rows are deleted (7 d).
    pub outbox_retention: chrono::Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            ttl_interval: Duration::from_secs(60),
            lease_interval: Duration::from_secs(30),
            retention_interval: Duration::from_secs(15 * 60),
            batch: 500,
            max_batches: 20,
            edge_retention: chrono::Duration::days(90),
            session_retention: chrono::Duration::days(90),
            outbox_retention: chrono::Duration::days(7),
        }
    }
}

impl JobsConfig {
    /// The batch size, never 0.
    pub(crate) fn batch(&self) -> u32 {
        self.batch.max(1)
    }

    /// The batch budget of a pass, never 0.
    pub(crate) fn max_batches(&self) -> u32 {
        self.max_batches.max(1)
    }
}

/// Why a pass ended early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// A store call failed (listing candidates, a purge, or a retryable failure on one row).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A Coordinator rule failed on a row with a retryable store failure.
    #[error("coordinator: {0}")]
    Coordinator(#[from] CoordinatorError),
    /// An instant out of chrono's range (a retention age too large for `now`).
    #[error("instant out of range: {0}")]
    Time(&'static str),
}

/// Counters of one pass, in a fixed order per job: `(name, value)`, ready for a metrics
/// registry (`caracal_job_<name>_total{job=…}`) or a log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobReport {
    counts: Vec<(&'static str, u64)>,
}

impl JobReport {
    /// A report with these counters, all zero.
    pub fn with_counters(names: &[&'static str]) -> Self {
        Self {
            counts: names.iter().map(|n| (*n, 0)).collect(),
        }
    }

    /// Add `n` to counter `name` (created if missing).
    pub fn add(&mut self, name: &'static str, n: u64) {
        match self.counts.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = v.saturating_add(n),
            None => self.counts.push((name, n)),
        }
    }

    /// The value of counter `name` (0 when absent).
    pub fn get(&self, name: &str) -> u64 {
        self.counts
            .iter()
            .find(|(k, _)| *k == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Every counter, in order.
    pub fn counts(&self) -> &[(&'static str, u64)] {
        &self.counts
    }

    /// Whether every counter is zero (an idle pass).
    pub fn is_idle(&self) -> bool {
        self.counts.iter().all(|(_, v)| *v == 0)
    }
}

/// Counter: rows a job acted on that failed (logged; retried next pass).
pub const COUNT_FAILED: &str = "failed";
/// Counter: candidates that no longer qualified when re-read in their unit of work (another
/// runner or a request got there first).
pub const COUNT_SKIPPED: &str = "skipped";

/// A background job.
#[async_trait]
pub trait Job: Send + Sync {
    /// The job's name: its leader-lock name and its label in logs and metrics.
    fn name(&self) -> &'static str;
    /// Time between passes.
    fn interval(&self) -> Duration;
    /// One pass at `now` (unguarded: [`JobRunner`] takes the leader lock around it).
    async fn run_once(&self, now: DateTime<Utc>) -> Result<JobReport, JobError>;
}

/// How a per-row failure is handled: a retryable store outage ends the pass, anything else
/// is counted and logged and the pass goes on.
pub(crate) fn row_failure(
    job: &'static str,
    zone_id: &str,
    id: &str,
    e: CoordinatorError,
    report: &mut JobReport,
) -> Result<(), JobError> {
    if let CoordinatorError::Store(s) = &e {
        if s.is_retryable() {
            return Err(e.into());
        }
    }
    tracing::warn!(job, zone_id, id, error = %e, "background job: row failed");
    report.add(COUNT_FAILED, 1);
    Ok(())
}
