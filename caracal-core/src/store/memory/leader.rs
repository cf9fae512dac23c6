//! [`MemoryLeaderLock`]: the leader lock of one process.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::lock;
use crate::store::StoreResult;
use crate::store::leader::{LeaderGuard, LeaderHold, LeaderLock};

/// Leader locks in a per-process map: the embedded default (one process is every replica
/// there is) and the test double.
///
/// Clones share the map, so clones contend with each other; two values made by
/// [`MemoryLeaderLock::new`] are two independent "processes".
#[derive(Debug, Clone, Default)]
pub struct MemoryLeaderLock {
    held: Arc<Mutex<HashSet<String>>>,
}

impl MemoryLeaderLock {
    /// An empty lock map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `job`'s lock is held.
    pub fn is_held(&self, job: &str) -> bool {
        lock(&self.held).contains(job)
    }
}

/// A held entry of the map; removing it releases the lock.
struct MemoryHold {
    held: Arc<Mutex<HashSet<String>>>,
    job: String,
    released: bool,
}

impl MemoryHold {
    fn give_up(&mut self) {
        if !self.released {
            self.released = true;
            lock(&self.held).remove(&self.job);
        }
    }
}

impl Drop for MemoryHold {
    fn drop(&mut self) {
        self.give_up();
    }
}

#[async_trait]
impl LeaderHold for MemoryHold {
    async fn verify(&mut self) -> bool {
        !self.released
    }

    async fn release(mut self: Box<Self>) {
        self.give_up();
    }
}

#[async_trait]
impl LeaderLock for MemoryLeaderLock {
    async fn try_acquire(&self, job: &str) -> StoreResult<Option<LeaderGuard>> {
        if !lock(&self.held).insert(job.to_owned()) {
            return Ok(None);
        }
        let hold = MemoryHold {
            held: Arc::clone(&self.held),
            job: job.to_owned(),
            released: false,
        };
        Ok(Some(LeaderGuard::new(job, Box::new(hold))))
    }
}
