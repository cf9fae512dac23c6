//! The retention cleaner: expired edges are marked, old records deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    COUNT_FAILED, COUNT_SKIPPED, Job, JobError, JobReport, JobsConfig, REASON_EDGE_EXPIRED,
    RETENTION_CLEANER, row_failure,
};
use crate::coordinator::events::{self, EdgeEvent};
use crate::coordinator::{Coordinator, CoordinatorResult};
use crate::model::delegation::{DelegationEdge, EdgeStatus};
use crate::store::StoreResult;
use crate::store::outbox::OutboxStore;

/// Counter: active edges past expiry marked `expired`.
pub const COUNT_EDGES_EXPIRED: &str = "edges_expired";
/// Counter: retired edges deleted.
pub const COUNT_EDGES_DELETED: &str = "edges_deleted";
/// Counter: retired sessions deleted.
pub const COUNT_SESSIONS_DELETED: &str = "sessions_deleted";
/// Counter: dispatched outbox rows deleted.
pub const COUNT_OUTBOX_DELETED: &str = "outbox_deleted";
/// Counter: expired idempotency receipts deleted.
pub const COUNT_RECEIPTS_DELETED: &str = "receipts_deleted";

/// Whether `e` is still `active` but expired at `now` (`expires_at <= now`: the instant
/// [`DelegationEdge::is_live`] turns false).
pub fn edge_expired(e: &DelegationEdge, now: DateTime<Utc>) -> bool {
    e.status == EdgeStatus::Active && e.expires_at <= now
}

/// `retention-cleaner` (reference §2.2), in this order:
///
/// 1. active edges past expiry → `expired`, per zone in one unit of work with one epoch bump
///    and one `edge_expire` message on `caracal.delegations.invalidate` naming every edge
///    (`edge_version` is left alone: it counts revocations). Expiry terminates no session.
/// 2. revoked / expired edges retired more than [`JobsConfig::edge_retention`] ago, that no
///    active edge descends from, are deleted;
/// 3. terminated / expired sessions retired more than [`JobsConfig::session_retention`] ago
///    with no child and no active edge are deleted (a parent goes on a later pass, once its
///    children are gone);
/// 4. outbox rows dispatched more than [`JobsConfig::outbox_retention`] ago are deleted;
/// 5. expired idempotency receipts are deleted.
#[derive(Clone)]
pub struct RetentionCleaner {
    coordinator: Coordinator,
    outbox: Arc<dyn OutboxStore>,
    config: JobsConfig,
}

impl std::fmt::Debug for RetentionCleaner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionCleaner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RetentionCleaner {
    /// A cleaner over `coordinator`'s stores and `outbox`.
    pub fn new(coordinator: Coordinator, outbox: Arc<dyn OutboxStore>, config: JobsConfig) -> Self {
        Self {
            coordinator,
            outbox,
            config,
        }
    }

    /// Mark the expired edges `ids` of one zone: `(expired, skipped)`.
    async fn expire_edges(
        &self,
        zone_id: &str,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> CoordinatorResult<(usize, usize)> {
        let mut tx = self.coordinator.store.begin(zone_id).await?;
        let mut expired: Vec<DelegationEdge> = Vec::new();
        for id in ids {
            let Some(mut edge) = tx.get_edge(id).await? else {
                continue;
            };
            if !edge_expired(&edge, now) {
                continue;
            }
            edge.status = EdgeStatus::Expired;
            tx.update_edge(&edge).await?;
            expired.push(edge);
        }
        let skipped = ids.len() - expired.len();
        let Some(first) = expired.first() else {
            return Ok((0, skipped));
        };
        let epoch = tx.bump_epoch().await?;
        let edge_ids: Vec<String> = expired.iter().map(|e| e.id.clone()).collect();
        tx.enqueue(&events::invalidate(
            EdgeEvent::Expire,
            first,
            epoch,
            &edge_ids,
            REASON_EDGE_EXPIRED,
        ))
        .await?;
        tx.commit().await?;
        Ok((expired.len(), skipped))
    }

    /// Step 1 (see the type's docs).
    async fn expire_due_edges(
        &self,
        now: DateTime<Utc>,
        report: &mut JobReport,
    ) -> Result<(), JobError> {
        let batch = self.config.batch();
        for _ in 0..self.config.max_batches() {
            let due = self.coordinator.store.expired_edges_due(now, batch).await?;
            let mut by_zone: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for c in &due {
                by_zone.entry(&c.zone_id).or_default().push(c.id.clone());
            }
            let mut progressed = 0usize;
            for (zone_id, ids) in by_zone {
                match self.expire_edges(zone_id, &ids, now).await {
                    Ok((expired, skipped)) => {
                        progressed += expired + skipped;
                        report.add(COUNT_EDGES_EXPIRED, expired as u64);
                        report.add(COUNT_SKIPPED, skipped as u64);
                    }
                    Err(e) => row_failure(RETENTION_CLEANER, zone_id, "-", e, report)?,
                }
            }
            if due.len() < batch as usize || progressed == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Repeat a purge while its batches come back full (within the batch budget).
    async fn drain<F, Fut>(&self, mut purge: F) -> StoreResult<u64>
    where
        F: FnMut(u32) -> Fut + Send,
        Fut: std::future::Future<Output = StoreResult<u64>> + Send,
    {
        let batch = self.config.batch();
        let mut total = 0u64;
        for _ in 0..self.config.max_batches() {
            let n = purge(batch).await?;
            total = total.saturating_add(n);
            if n < u64::from(batch) {
                break;
            }
        }
        Ok(total)
    }
}

fn before(
    now: DateTime<Utc>,
    age: chrono::Duration,
    what: &'static str,
) -> Result<DateTime<Utc>, JobError> {
    now.checked_sub_signed(age).ok_or(JobError::Time(what))
}

#[async_trait]
impl Job for RetentionCleaner {
    fn name(&self) -> &'static str {
        RETENTION_CLEANER
    }

    fn interval(&self) -> Duration {
        self.config.retention_interval
    }

    async fn run_once(&self, now: DateTime<Utc>) -> Result<JobReport, JobError> {
        let mut report = JobReport::with_counters(&[
            COUNT_EDGES_EXPIRED,
            COUNT_EDGES_DELETED,
            COUNT_SESSIONS_DELETED,
            COUNT_OUTBOX_DELETED,
            COUNT_RECEIPTS_DELETED,
            COUNT_SKIPPED,
            COUNT_FAILED,
        ]);
        self.expire_due_edges(now, &mut report).await?;

        let store = &self.coordinator.store;
        let edges_before = before(now, self.config.edge_retention, "edge retention")?;
        let n = self
            .drain(|limit| store.purge_retired_edges(edges_before, limit))
            .await?;
        report.add(COUNT_EDGES_DELETED, n);

        let sessions_before = before(now, self.config.session_retention, "session retention")?;
        let n = self
            .drain(|limit| store.purge_retired_sessions(sessions_before, limit))
            .await?;
        report.add(COUNT_SESSIONS_DELETED, n);

        let outbox_before = before(now, self.config.outbox_retention, "outbox retention")?;
        let outbox = &self.outbox;
        let n = self
            .drain(|limit| outbox.purge_dispatched(outbox_before, limit))
            .await?;
        report.add(COUNT_OUTBOX_DELETED, n);

        let n = self
            .drain(|limit| store.purge_expired_receipts(now, limit))
            .await?;
        report.add(COUNT_RECEIPTS_DELETED, n);
        Ok(report)
    }
}
