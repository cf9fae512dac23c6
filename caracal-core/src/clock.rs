//! Injected time.
//!
//! Every rule that depends on "now" (expiry, TTLs, rate windows, approval deadlines) reads it
//! from a [`Clock`], never from the system directly, so tests can drive time. The Postgres
//! backend supplies a clock backed by the database's `now()`, the trusted clock of the
//! reference system.

use std::sync::Arc;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Cloning shares the same instant.
#[derive(Debug, Clone)]
pub struct FakeClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl FakeClock {
    /// A fake clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A fake clock at 2026-05-21T12:00:00Z, the instant of the reference fixtures.
    pub fn at_fixture_epoch() -> Self {
        // INVARIANT: a constant, valid timestamp.
        Self::new(DateTime::<Utc>::from_timestamp(1_779_364_800, 0).unwrap_or_default())
    }

    /// Set the current instant.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.lock() = to;
    }

    /// Move the clock forward (or backward, for a negative duration).
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A poisoned lock only means another test thread panicked; the instant is still valid.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told() {
        let clock = FakeClock::at_fixture_epoch();
        let t0 = clock.now();
        assert_eq!(t0.to_rfc3339(), "2026-05-21T12:00:00+00:00");
        clock.advance(Duration::seconds(90));
        assert_eq!((clock.now() - t0).num_seconds(), 90);
        let shared = clock.clone();
        shared.set(t0);
        assert_eq!(clock.now(), t0);
    }

    #[test]
    fn system_clock_is_close_to_utc_now() {
        let delta = SystemClock.now() - Utc::now();
        assert!(delta.num_seconds().abs() < 5);
    }
}
