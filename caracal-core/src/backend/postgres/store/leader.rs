//! [`PgLeaderLock`]: job leader locks on Postgres advisory locks.

use std::time::Duration;

use async_trait::async_trait;

use super::PgStore;
use super::retention::{LEASE_PROBE_TIMEOUT, PgLeaderLease};
use crate::store::StoreResult;
use crate::store::leader::{LeaderGuard, LeaderHold, LeaderLock, job_lock_key};

/// [`LeaderLock`] on Postgres: each guard is a [`PgLeaderLease`], a session-level
/// `pg_try_advisory_lock(job_lock_key(job))` held on a pooled connection that the guard keeps
/// checked out for its whole life.
///
/// Releasing the guard unlocks and returns the connection; dropping it retires the
/// connection (the pool closes it), which ends the session and so releases the lock without
/// an `await`; a lost connection releases it on the server. Every probe is bounded
/// ([`LEASE_PROBE_TIMEOUT`] unless replaced). Each held guard occupies one connection of the
/// store's pool.
#[derive(Debug, Clone)]
pub struct PgLeaderLock {
    store: PgStore,
    probe_timeout: Duration,
}

impl PgLeaderLock {
    /// Leader locks over `store`'s pool.
    pub fn new(store: PgStore) -> Self {
        Self {
            store,
            probe_timeout: LEASE_PROBE_TIMEOUT,
        }
    }

    /// Replace the bound on each probe (acquire, ping, unlock).
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }
}

#[async_trait]
impl LeaderHold for PgLeaderLease {
    async fn verify(&mut self) -> bool {
        PgLeaderLease::verify(self).await
    }

    async fn release(mut self: Box<Self>) {
        PgLeaderLease::release(&mut self).await;
    }
}

#[async_trait]
impl LeaderLock for PgLeaderLock {
    async fn try_acquire(&self, job: &str) -> StoreResult<Option<LeaderGuard>> {
        let mut lease = PgLeaderLease::new(self.store.clone(), job_lock_key(job))
            .with_probe_timeout(self.probe_timeout);
        if lease.try_acquire().await? {
            Ok(Some(LeaderGuard::new(job, Box::new(lease))))
        } else {
            Ok(None)
        }
    }
}
