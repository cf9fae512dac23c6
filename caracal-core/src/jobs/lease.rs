//! The service-lease sweeper: a service that stopped heartbeating is suspended.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    COUNT_FAILED, COUNT_SKIPPED, Job, JobError, JobReport, JobsConfig, LEASE_SWEEPER, row_failure,
};
use crate::coordinator::sessions::REASON_HEARTBEAT_LOST;
use crate::coordinator::{Coordinator, CoordinatorResult};
use crate::model::session::{Lifecycle, Session, SessionStatus};
use crate::store::coordinator::ZoneRef;

/// Counter: service sessions whose lapsed lease suspended their subtree (subtree roots).
pub const COUNT_LAPSED: &str = "lapsed";
/// Counter: sessions suspended (the roots and their active descendants).
pub const COUNT_SUSPENDED: &str = "suspended";

/// Whether `s` is an active service session whose lease lapsed at `now` (no deadline counts
/// as lapsed, as `check_lease` reads it).
pub fn lease_lapsed(s: &Session, now: DateTime<Utc>) -> bool {
    s.lifecycle == Lifecycle::Service
        && s.status == SessionStatus::Active
        && s.heartbeat_deadline_at.is_none_or(|d| d <= now)
}

/// `service-lease-sweeper` (reference §2.2): each active service session past its
/// `heartbeat_deadline_at` is suspended with its active subtree through the Coordinator's
/// suspend path (reason `service_heartbeat_lost`; lifecycle `suspend` and
/// `caracal.sessions.revoke` messages), one unit of work per session. Reversible: a resume
/// gives a fresh lease.
#[derive(Debug, Clone)]
pub struct LeaseSweeper {
    coordinator: Coordinator,
    config: JobsConfig,
}

impl LeaseSweeper {
    /// A sweeper over `coordinator`'s stores.
    pub fn new(coordinator: Coordinator, config: JobsConfig) -> Self {
        Self {
            coordinator,
            config,
        }
    }

    /// Suspend one candidate: `Ok(None)` when it no longer qualifies (a heartbeat renewed
    /// the lease since it was listed), else how many sessions were suspended.
    async fn suspend(&self, c: &ZoneRef, now: DateTime<Utc>) -> CoordinatorResult<Option<usize>> {
        let mut tx = self.coordinator.store.begin(&c.zone_id).await?;
        let Some(root) = tx.get_session(&c.id).await? else {
            return Ok(None);
        };
        if !lease_lapsed(&root, now) {
            return Ok(None);
        }
        let n = self
            .coordinator
            .suspend_in(tx.as_mut(), &root, REASON_HEARTBEAT_LOST, now)
            .await?;
        tx.commit().await?;
        Ok(Some(n))
    }
}

#[async_trait]
impl Job for LeaseSweeper {
    fn name(&self) -> &'static str {
        LEASE_SWEEPER
    }

    fn interval(&self) -> Duration {
        self.config.lease_interval
    }

    async fn run_once(&self, now: DateTime<Utc>) -> Result<JobReport, JobError> {
        let mut report =
            JobReport::with_counters(&[COUNT_LAPSED, COUNT_SUSPENDED, COUNT_SKIPPED, COUNT_FAILED]);
        let batch = self.config.batch();
        for _ in 0..self.config.max_batches() {
            let due = self.coordinator.store.lapsed_leases_due(now, batch).await?;
            let mut progressed = 0usize;
            for c in &due {
                match self.suspend(c, now).await {
                    Ok(Some(n)) => {
                        progressed += 1;
                        report.add(COUNT_LAPSED, 1);
                        report.add(COUNT_SUSPENDED, n as u64);
                    }
                    Ok(None) => {
                        progressed += 1;
                        report.add(COUNT_SKIPPED, 1);
                    }
                    Err(e) => row_failure(LEASE_SWEEPER, &c.zone_id, &c.id, e, &mut report)?,
                }
            }
            if due.len() < batch as usize || progressed == 0 {
                break;
            }
        }
        Ok(report)
    }
}
