//! [`JobRunner`]: each job on its interval, each pass under the job's leader lock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Job, JobReport, JobsConfig, LeaseSweeper, RetentionCleaner, TtlSweeper};
use crate::clock::SharedClock;
use crate::coordinator::Coordinator;
use crate::store::leader::LeaderLock;
use crate::store::outbox::OutboxStore;

/// How one pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// This runner held the lock and the pass ran; its counters.
    Ran(JobReport),
    /// Another runner holds the job's lock: nothing was done.
    NotLeader,
    /// The lock could not be asked for, or the pass failed part-way (committed units of work
    /// stay; the next pass retries the rest). The error text holds no secret.
    Failed(String),
}

/// What a pass did, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// The job's name.
    pub job: &'static str,
    /// The pass's `now`.
    pub at: DateTime<Utc>,
    /// The outcome.
    pub outcome: PassOutcome,
}

/// Called after every pass (e.g. to feed Prometheus counters). Must not block.
pub type PassObserver = Arc<dyn Fn(&PassReport) + Send + Sync>;

/// Runs background jobs, one leader per job across every runner that shares the
/// [`LeaderLock`] backend (see the module docs).
#[derive(Clone)]
pub struct JobRunner {
    jobs: Vec<Arc<dyn Job>>,
    leader: Arc<dyn LeaderLock>,
    clock: SharedClock,
    observer: Option<PassObserver>,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("jobs", &self.job_names())
            .finish_non_exhaustive()
    }
}

/// The tasks of a spawned [`JobRunner`], one per job.
#[derive(Debug)]
pub struct JobsHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl JobsHandle {
    /// Wait for every job task to end (after the shutdown signal, each finishes its current
    /// pass first). A task that panicked is logged.
    pub async fn join(self) {
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "background job task ended abnormally");
            }
        }
    }

    /// Stop every job task now, mid-pass if need be (a unit of work cut short rolls back).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl JobRunner {
    /// The Coordinator's three jobs ([`TtlSweeper`], [`LeaseSweeper`], [`RetentionCleaner`])
    /// over `coordinator`'s stores and `outbox`, guarded by `leader`, timed by `clock`.
    pub fn new(
        coordinator: Coordinator,
        outbox: Arc<dyn OutboxStore>,
        leader: Arc<dyn LeaderLock>,
        clock: SharedClock,
        config: JobsConfig,
    ) -> Self {
        let jobs: Vec<Arc<dyn Job>> = vec![
            Arc::new(TtlSweeper::new(coordinator.clone(), config.clone())),
            Arc::new(LeaseSweeper::new(coordinator.clone(), config.clone())),
            Arc::new(RetentionCleaner::new(coordinator, outbox, config)),
        ];
        Self::with_jobs(jobs, leader, clock)
    }

    /// A runner of any `jobs`.
    pub fn with_jobs(
        jobs: Vec<Arc<dyn Job>>,
        leader: Arc<dyn LeaderLock>,
        clock: SharedClock,
    ) -> Self {
        Self {
            jobs,
            leader,
            clock,
            observer: None,
        }
    }

    /// Call `observer` after every pass.
    pub fn with_observer(mut self, observer: PassObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The names of the jobs, in order.
    pub fn job_names(&self) -> Vec<&'static str> {
        self.jobs.iter().map(|j| j.name()).collect()
    }

    /// One guarded pass of the job named `name` at the clock's `now` (`None`: no such job).
    pub async fn run_pass_named(&self, name: &str) -> Option<PassReport> {
        let job = self.jobs.iter().find(|j| j.name() == name)?.clone();
        Some(self.run_pass(job.as_ref()).await)
    }

    /// One guarded pass of `job`: take its leader lock (skip if another runner holds it or
    /// the lock cannot be asked for), run it at the clock's `now`, release the lock, log and
    /// report.
    pub async fn run_pass(&self, job: &dyn Job) -> PassReport {
        let name = job.name();
        let at = self.clock.now();
        let outcome = match self.leader.try_acquire(name).await {
            Ok(None) => PassOutcome::NotLeader,
            Err(e) => PassOutcome::Failed(format!("leader lock: {e}")),
            Ok(Some(guard)) => {
                let result = job.run_once(at).await;
                guard.release().await;
                match result {
                    Ok(r) => PassOutcome::Ran(r),
                    Err(e) => PassOutcome::Failed(e.to_string()),
                }
            }
        };
        let report = PassReport {
            job: name,
            at,
            outcome,
        };
        log(&report);
        if let Some(o) = &self.observer {
            o(&report);
        }
        report
    }

    /// Spawn one task per job: a pass at once, then one per [`Job::interval`] (a pass that
    /// overruns delays the next, never stacks), until `shutdown` turns `true`. A pass in
    /// progress finishes before its task ends.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> JobsHandle {
        let this = Arc::new(self);
        let tasks = this
            .jobs
            .iter()
            .cloned()
            .map(|job| {
                let runner = Arc::clone(&this);
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let mut ticker = tokio::time::interval(
                        job.interval().max(std::time::Duration::from_millis(1)),
                    );
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        if *shutdown.borrow() {
                            break;
                        }
                        tokio::select! {
                            _ = ticker.tick() => {}
                            _ = shutdown.wait_for(|s| *s) => break,
                        }
                        runner.run_pass(job.as_ref()).await;
                    }
                    tracing::debug!(job = job.name(), "background job stopped");
                })
            })
            .collect();
        JobsHandle { tasks }
    }
}

fn log(r: &PassReport) {
    match &r.outcome {
        PassOutcome::Ran(report) if report.is_idle() => {
            tracing::debug!(job = r.job, "background job pass: nothing to do");
        }
        PassOutcome::Ran(report) => {
            let counts: Vec<String> = report
                .counts()
                .iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            tracing::info!(job = r.job, counts = %counts.join(" "), "background job pass");
        }
        PassOutcome::NotLeader => {
            tracing::debug!(
                job = r.job,
                "background job pass skipped: another runner leads"
            );
        }
        PassOutcome::Failed(e) => {
            tracing::warn!(job = r.job, error = %e, "background job pass failed");
        }
    }
}
