//! The TTL sweeper: task sessions never outlive their TTL by more than one period.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    COUNT_FAILED, COUNT_SKIPPED, Job, JobError, JobReport, JobsConfig, REASON_TTL, TTL_SWEEPER,
    row_failure,
};
use crate::coordinator::sessions::REASON_PARENT_TERMINATED;
use crate::coordinator::{Coordinator, CoordinatorResult};
use crate::model::session::{Lifecycle, Session, SessionStatus};
use crate::store::coordinator::ZoneRef;

/// Counter: task sessions expired by the sweep (subtree roots).
pub const COUNT_EXPIRED: &str = "expired";
/// Counter: sessions that left `active`/`suspended` (the expired roots and their descendants).
pub const COUNT_TERMINATED: &str = "terminated";

/// Whether `s` is a task session, still active or suspended, whose TTL ran out at `now`
/// (`started_at + ttl <= now`: the instant [`Session::is_live`] turns false). A TTL too large
/// to add to the start never runs out.
pub fn ttl_expired(s: &Session, now: DateTime<Utc>) -> bool {
    let open = matches!(s.status, SessionStatus::Active | SessionStatus::Suspended);
    let end = s
        .ttl_seconds
        .and_then(chrono::Duration::try_seconds)
        .and_then(|ttl| s.started_at.checked_add_signed(ttl));
    s.lifecycle == Lifecycle::Task && open && end.is_some_and(|e| e <= now)
}

/// `ttl-sweeper` (reference §2.2): each task session past its TTL is terminated with its
/// subtree through the Coordinator's own terminate path (root `expired` / `ttl`, descendants
/// `terminated` / `parent_terminated`, every active edge touching them revoked with one epoch
/// bump, lifecycle and `caracal.sessions.revoke` messages in the outbox), one unit of work
/// per expired root.
#[derive(Debug, Clone)]
pub struct TtlSweeper {
    coordinator: Coordinator,
    config: JobsConfig,
}

impl TtlSweeper {
    /// A sweeper over `coordinator`'s stores.
    pub fn new(coordinator: Coordinator, config: JobsConfig) -> Self {
        Self {
            coordinator,
            config,
        }
    }

    /// Expire one candidate: `Ok(None)` when it no longer qualifies in its unit of work,
    /// else the number of sessions terminated.
    async fn expire(&self, c: &ZoneRef, now: DateTime<Utc>) -> CoordinatorResult<Option<usize>> {
        let mut tx = self.coordinator.store.begin(&c.zone_id).await?;
        let Some(root) = tx.get_session(&c.id).await? else {
            return Ok(None);
        };
        if !ttl_expired(&root, now) {
            // Dropping the unit of work rolls it back (it wrote nothing).
            return Ok(None);
        }
        let ids = self
            .coordinator
            .terminate_in(
                tx.as_mut(),
                &root,
                SessionStatus::Expired,
                REASON_TTL,
                REASON_PARENT_TERMINATED,
                None,
                now,
            )
            .await?;
        tx.commit().await?;
        Ok(Some(ids.len()))
    }
}

#[async_trait]
impl Job for TtlSweeper {
    fn name(&self) -> &'static str {
        TTL_SWEEPER
    }

    fn interval(&self) -> Duration {
        self.config.ttl_interval
    }

    async fn run_once(&self, now: DateTime<Utc>) -> Result<JobReport, JobError> {
        let mut report = JobReport::with_counters(&[
            COUNT_EXPIRED,
            COUNT_TERMINATED,
            COUNT_SKIPPED,
            COUNT_FAILED,
        ]);
        let batch = self.config.batch();
        for _ in 0..self.config.max_batches() {
            let due = self.coordinator.store.expired_tasks_due(now, batch).await?;
            let mut progressed = 0usize;
            for c in &due {
                match self.expire(c, now).await {
                    Ok(Some(n)) => {
                        progressed += 1;
                        report.add(COUNT_EXPIRED, 1);
                        report.add(COUNT_TERMINATED, n as u64);
                    }
                    Ok(None) => {
                        progressed += 1;
                        report.add(COUNT_SKIPPED, 1);
                    }
                    Err(e) => row_failure(TTL_SWEEPER, &c.zone_id, &c.id, e, &mut report)?,
                }
            }
            if due.len() < batch as usize || progressed == 0 {
                break;
            }
        }
        Ok(report)
    }
}
