//! The leader loop shared by the retention and export workers (reference §2.8): hold a
//! [`PgLeaderLease`], run a tick at acquisition and then every `interval` while held, probe
//! the lease every `lease_check` (contend when not held, ping when held; a failed ping steps
//! down and contends again at once), and release on stop so another replica takes over
//! promptly.
//!
//! Metrics (reference names): `caracal_audit_is_<job>_leader` and
//! `caracal_audit_<job>_lease_transitions_total` (acquisitions plus losses, for flap alerts).

use std::future::Future;
use std::time::Duration;

use caracal_core::backend::postgres::PgLeaderLease;
use tokio::sync::watch;
use tokio::time::Instant;

/// How one leader-only job runs.
#[derive(Debug, Clone, Copy)]
pub struct LeaderJob {
    /// The job's name in logs and metric names (`retention`, `export`).
    pub name: &'static str,
    /// Time between ticks while leader.
    pub interval: Duration,
    /// Time between lease probes (30 s in the reference).
    pub lease_check: Duration,
}

/// Run `tick` as leader of `lease` until `stop` turns true. `tick` returns whether it
/// succeeded; a failed tick is retried at the next lease check rather than after a full
/// interval.
pub async fn run_as_leader<F, Fut>(
    mut lease: PgLeaderLease,
    job: LeaderJob,
    mut stop: watch::Receiver<bool>,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let name = job.name;
    let leader_gauge = format!("caracal_audit_is_{name}_leader");
    let transitions = format!("caracal_audit_{name}_lease_transitions_total");
    let mut next_tick: Option<Instant> = None;
    let lease_check = job.lease_check.max(Duration::from_millis(10));
    let interval = job.interval.max(Duration::from_secs(1));
    loop {
        let was_held = lease.is_held();
        let held = if was_held {
            lease.verify().await
        } else {
            match lease.try_acquire().await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(job = name, error = %e, "audit leader: lease probe failed");
                    false
                }
            }
        };
        if held != was_held {
            metrics::counter!(transitions.clone()).increment(1);
            if held {
                tracing::info!(job = name, "audit leader: became leader");
                next_tick = Some(Instant::now());
            } else {
                tracing::warn!(job = name, "audit leader: lost the lease; stepping down");
                next_tick = None;
            }
        }
        metrics::gauge!(leader_gauge.clone()).set(if held { 1.0 } else { 0.0 });
        if held && next_tick.is_some_and(|t| t <= Instant::now()) {
            let outcome = tokio::select! {
                ok = tick() => Some(ok),
                _ = stop.wait_for(|s| *s) => None,
            };
            match outcome {
                Some(true) => next_tick = Some(Instant::now() + interval),
                Some(false) => next_tick = Some(Instant::now() + lease_check),
                None => break,
            }
        }
        // After a lost lease, contend again at once (reference §2.8).
        let wait = if was_held && !held {
            Duration::ZERO
        } else {
            lease_check
        };
        if crate::sleep_or_stop(wait, &mut stop).await {
            break;
        }
    }
    lease.release().await;
    metrics::gauge!(leader_gauge).set(0.0);
}
