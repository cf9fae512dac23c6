//! One leader per background job across replicas.
//!
//! Several replicas of a service run the same background jobs (the Coordinator's sweepers and
//! retention cleaner, [`crate::jobs`]). Each pass of a job first asks its [`LeaderLock`] for
//! the job's lock: the one replica that gets it runs the pass, the others skip it. The lock
//! is held by a [`LeaderGuard`] and released when the guard is released or dropped, and also
//! when its holder dies (Postgres: the session holding the advisory lock ends with its
//! connection).
//!
//! The lock keeps the work to one runner; it is not what makes the work correct. Every job
//! re-checks each row inside its zone's unit of work, so a pass that runs twice (a lock lost
//! mid-pass, two replicas on a partitioned network) still changes each row once.
//!
//! Implementations: [`crate::store::memory::MemoryLeaderLock`] (a per-process map) and, with
//! the `postgres` feature, `PgLeaderLock` (session-level `pg_try_advisory_lock` on a
//! dedicated pooled connection).

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::StoreResult;

/// The Postgres advisory-lock key of a job: the first eight bytes of
/// `SHA-256("caracal.job:" || job)`, big-endian. Deterministic across replicas and builds
/// (unlike `hashtext`, which Postgres does not promise to keep), and namespaced so it does not
/// meet the audit service's fixed `CARA000x` keys.
pub fn job_lock_key(job: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"caracal.job:")
        .chain_update(job.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// What a [`LeaderGuard`] holds: one implementation's claim on a job's lock.
///
/// Dropping it must release the lock without an `await` (or make sure the backend releases
/// it, as a retired Postgres session does).
#[async_trait]
pub trait LeaderHold: Send + Sync {
    /// Whether the claim still holds (Postgres: a bounded ping of the holding session). A
    /// claim found lost is given up, and stays lost.
    async fn verify(&mut self) -> bool;
    /// Give the claim up now.
    async fn release(self: Box<Self>);
}

/// The lock of one job, held until [`release`](Self::release) or drop.
pub struct LeaderGuard {
    job: String,
    hold: Box<dyn LeaderHold>,
}

impl std::fmt::Debug for LeaderGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderGuard")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

impl LeaderGuard {
    /// A guard over `hold` for `job` (for [`LeaderLock`] implementations).
    pub fn new(job: impl Into<String>, hold: Box<dyn LeaderHold>) -> Self {
        Self {
            job: job.into(),
            hold,
        }
    }

    /// The job this guard leads.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// Whether the lock still holds (see [`LeaderHold::verify`]).
    pub async fn verify(&mut self) -> bool {
        self.hold.verify().await
    }

    /// Release the lock now (dropping the guard releases it too).
    pub async fn release(self) {
        self.hold.release().await;
    }
}

/// Try-locks, one per job name.
///
/// Contract (the contract tests hold both implementations to it): of any number of
/// contenders for one job, at most one holds a guard at a time; `try_acquire` never waits
/// for the lock; once the holder releases (or drops) its guard, another contender can
/// acquire. Locks of different jobs are independent. An error (the backend is down) means
/// "not leader": callers skip the pass (fail closed).
#[async_trait]
pub trait LeaderLock: Send + Sync {
    /// The lock of `job` if no one holds it, `None` if another contender does.
    async fn try_acquire(&self, job: &str) -> StoreResult<Option<LeaderGuard>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(job_lock_key("ttl-sweeper"), job_lock_key("ttl-sweeper"));
        assert_ne!(
            job_lock_key("ttl-sweeper"),
            job_lock_key("retention-cleaner")
        );
        // The audit service's fixed keys spell "CARA0001" / "CARA0002".
        let key = job_lock_key("ttl-sweeper").to_be_bytes();
        assert_ne!(&key[..4], b"CARA");
    }
}
