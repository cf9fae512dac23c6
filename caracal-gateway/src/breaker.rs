//! The STS circuit breaker (reference `gateway.md` §1.4), in process and per replica.
//!
//! A failure counts only when the exchange outcome is `sts_unavailable` with a status ≥ 500
//! (transport failures, invalid responses, an STS 5xx without a JSON code); 4xx, 499 and
//! `policy_eval_failed` neither count nor reset. After [`THRESHOLD`] counted failures the
//! circuit opens for [`OPEN_FOR`]; requests then fail fast. Once the window has passed exactly
//! one request (the probe) is let through: success closes the circuit, a counted failure
//! reopens it at once (the counter is already past the threshold). Only a full success resets
//! the counter.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

use caracal_core::clock::SharedClock;

/// Counted failures that open the circuit.
pub const THRESHOLD: u32 = 3;
/// How long the circuit stays open.
pub const OPEN_FOR: Duration = Duration::seconds(10);

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<DateTime<Utc>>,
    /// A probe is in flight after the open window (others keep failing fast meanwhile).
    probing: bool,
}

/// What [`Breaker::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Closed,
    /// The single probe after the open window.
    Probe,
    /// Open: fail fast (503 `sts_unavailable` "sts unavailable").
    Open,
}

/// The breaker. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Breaker {
    clock: SharedClock,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker on `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a request go to the STS now?
    pub fn admit(&self) -> Admission {
        let now = self.clock.now();
        let mut s = self.lock();
        match s.open_until {
            None => Admission::Closed,
            Some(until) if now < until => Admission::Open,
            Some(_) if s.probing => Admission::Open,
            Some(_) => {
                s.probing = true;
                Admission::Probe
            }
        }
    }

    /// Record an outcome. `counted` is whether it was a counted failure; `success` whether it
    /// was a full success. Returns `true` when this call opened (or reopened) the circuit.
    pub fn record(&self, success: bool, counted: bool) -> bool {
        let now = self.clock.now();
        let mut s = self.lock();
        if success {
            *s = State::default();
            return false;
        }
        if !counted {
            // A non-counting failure of the probe lets the next request probe again.
            s.probing = false;
            return false;
        }
        s.failures = s.failures.saturating_add(1);
        s.probing = false;
        if s.failures >= THRESHOLD {
            s.open_until = Some(now + OPEN_FOR);
            return true;
        }
        false
    }

    /// Whether the circuit is open now (gauge `sts_circuit_open`).
    pub fn is_open(&self) -> bool {
        let now = self.clock.now();
        self.lock().open_until.is_some_and(|u| now < u)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use caracal_core::clock::FakeClock;

    use super::*;

    #[test]
    fn three_failures_open_for_ten_seconds_then_one_probe() {
        let clock = FakeClock::at_fixture_epoch();
        let b = Breaker::new(Arc::new(clock.clone()));
        for i in 0..THRESHOLD {
            assert_eq!(b.admit(), Admission::Closed);
            assert_eq!(b.record(false, true), i + 1 == THRESHOLD);
        }
        assert_eq!(b.admit(), Admission::Open);
        assert!(b.is_open());
        clock.advance(Duration::seconds(9));
        assert_eq!(b.admit(), Admission::Open);
        clock.advance(Duration::seconds(1));
        assert_eq!(b.admit(), Admission::Probe);
        // While the probe is in flight, others fail fast.
        assert_eq!(b.admit(), Admission::Open);
        // The probe fails: reopened at once.
        assert!(b.record(false, true));
        assert_eq!(b.admit(), Admission::Open);
        clock.advance(Duration::seconds(10));
        assert_eq!(b.admit(), Admission::Probe);
        b.record(true, false);
        assert_eq!(b.admit(), Admission::Closed);
        assert!(!b.is_open());
    }

    #[test]
    fn non_counting_failures_neither_count_nor_reset() {
        let clock = FakeClock::at_fixture_epoch();
        let b = Breaker::new(Arc::new(clock));
        b.record(false, true);
        b.record(false, true);
        for _ in 0..10 {
            b.record(false, false);
        }
        assert_eq!(b.admit(), Admission::Closed);
        assert!(b.record(false, true), "third counted failure opens");
        assert_eq!(b.admit(), Admission::Open);
    }
}
