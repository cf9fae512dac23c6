//! Expiring keys (the in-process stand-in for Redis `SET NX EX` and `INCR` + `EXPIRE`).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryStore, add, chrono_duration, lock};
use crate::store::ephemeral::EphemeralKeys;
use crate::store::{StoreError, StoreResult};

/// Every this many writes, expired keys are swept out so single-use ids that are never read
/// again do not accumulate.
const SWEEP_EVERY: u64 = 1024;

/// A stored value.
enum Value {
    Text(String),
    Counter(i64),
}

struct Entry {
    value: Value,
    expires_at: DateTime<Utc>,
}

/// Keys and their expiry, read against the store's clock.
#[derive(Default)]
pub(super) struct Tables {
    entries: HashMap<String, Entry>,
    writes: u64,
}

impl Tables {
    /// The live entry at `key`, dropping it first if it has expired (Redis's lazy expiry).
    fn live(&mut self, key: &str, now: DateTime<Utc>) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| e.expires_at <= now) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    /// Count a write and sweep expired keys now and then.
    fn wrote(&mut self, now: DateTime<Utc>) {
        self.writes = self.writes.wrapping_add(1);
        if self.writes % SWEEP_EVERY == 0 {
            self.entries.retain(|_, e| e.expires_at > now);
        }
    }
}

/// A zero TTL is refused, as Redis refuses `EX 0`.
fn positive(d: Duration) -> StoreResult<chrono::Duration> {
    if d.is_zero() {
        return Err(StoreError::Invalid("expiry must be positive".into()));
    }
    chrono_duration(d)
}

#[async_trait]
impl EphemeralKeys for MemoryStore {
    async fn set_nx_ex(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<bool> {
        let ttl = positive(ttl)?;
        let now = self.inner.clock.now();
        let expires_at = add(now, ttl)?;
        let mut t = lock(&self.inner.ephemeral);
        if t.live(key, now).is_some() {
            return Ok(false);
        }
        t.entries.insert(
            key.to_owned(),
            Entry {
                value: Value::Text(value.to_owned()),
                expires_at,
            },
        );
        t.wrote(now);
        Ok(true)
    }

    async fn incr_window(&self, key: &str, window: Duration) -> StoreResult<i64> {
        let window = positive(window)?;
        let now = self.inner.clock.now();
        let expires_at = add(now, window)?;
        let mut t = lock(&self.inner.ephemeral);
        let count = match t.live(key, now) {
            // The window starts with the first increment and is never extended.
            Some(entry) => {
                let current = match &entry.value {
                    Value::Counter(n) => *n,
                    // Redis INCR parses a string value; anything else is an error there too.
                    Value::Text(s) => s.parse::<i64>().map_err(|_| {
                        StoreError::Invalid("value at key is not an integer".into())
                    })?,
                };
                let next = current
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Invalid("counter overflow".into()))?;
                entry.value = Value::Counter(next);
                next
            }
            None => {
                t.entries.insert(
                    key.to_owned(),
                    Entry {
                        value: Value::Counter(1),
                        expires_at,
                    },
                );
                1
            }
        };
        t.wrote(now);
        Ok(count)
    }

    async fn get_key(&self, key: &str) -> StoreResult<Option<String>> {
        let now = self.inner.clock.now();
        let mut t = lock(&self.inner.ephemeral);
        Ok(t.live(key, now).map(|e| match &e.value {
            Value::Text(s) => s.clone(),
            Value::Counter(n) => n.to_string(),
        }))
    }

    async fn del_key(&self, key: &str) -> StoreResult<bool> {
        let now = self.inner.clock.now();
        let mut t = lock(&self.inner.ephemeral);
        let existed = t.live(key, now).is_some();
        t.entries.remove(key);
        Ok(existed)
    }
}
