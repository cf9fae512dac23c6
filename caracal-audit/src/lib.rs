//! # caracal-audit
//!
//! The Caracal Audit service (port 9090): the `audit-ingestor` consumer of
//! `caracal.audit.events`, which appends every signed event to the per-zone hash chain and
//! dead-letters what it cannot ingest, plus `/health`, `/ready`, `/metrics` and the admin
//! endpoints (search, DLQ list / show / replay, chain verification).
//!
//! The rules live in `caracal_core::audit` (outcome table, batching, checkpoints, replay,
//! verifier); this crate only wires them to backends and renders HTTP.
//!
//! ## Layout
//!
//! - [`config`]: settings from the environment (reference §2.11).
//! - [`backends`]: Redis or in-memory streams, Postgres or in-memory ledger, readiness pings.
//! - [`routes`]: the HTTP surface (reference §2.12), as a router over [`AuditService`].
//! - [`retention`]: the leader-only partition retention worker (reference §2.8, §2.9).
//! - [`export`]: the hourly NDJSON exporter with its watermark (reference §2.10).
//! - [`leader`]: the lease loop both leader-only workers run under.
//! - [`sweep`]: the tamper sweep (full at start and daily, incremental between).
//! - this module: [`AuditService`] (state, workers) and [`serve`].
//!
//! Embedding (`caracal up`): build [`AuditService::new`] on in-memory backends, spawn its
//! workers, and mount [`AuditService::router`].

pub mod backends;
pub mod config;
pub mod export;
pub mod leader;
pub mod retention;
pub mod routes;
pub mod sweep;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use caracal_core::audit::ingest::Ingestor;
use caracal_core::clock::{SharedClock, SystemClock};
use caracal_core::streams::consumer::{Consumer, ConsumerConfig, ConsumerHealth};
use caracal_core::streams::{EntryId, GroupStart, Streams, names};
use caracal_service::ConfigError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use backends::Backends;
pub use config::AuditConfig;

/// Values the poller reads for `/ready` and `/metrics` (reference §2.12).
#[derive(Debug, Default)]
pub struct Gauges {
    /// `XLEN` of the DLQ.
    pub dlq_size: AtomicU64,
    /// Age of the oldest DLQ entry, seconds.
    pub dlq_oldest_age_secs: AtomicU64,
    /// Pending entries of the ingest group (`consumer_lag`).
    pub consumer_lag: AtomicU64,
    /// Idle time of the oldest pending entry, seconds.
    pub pel_oldest_secs: AtomicU64,
}

/// The Audit service: configuration, backends, the ingestor and its consumer's health.
pub struct AuditService {
    config: AuditConfig,
    backends: Backends,
    ingestor: Arc<Ingestor>,
    health: ConsumerHealth,
    consumer: std::sync::Mutex<Option<Consumer>>,
    gauges: Arc<Gauges>,
    clock: SharedClock,
}

impl std::fmt::Debug for AuditService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Running background work of a service (consumer, poller, checkpoint ticker).
#[derive(Debug)]
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Ask every worker to stop and wait for them (at most `grace`).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("an audit worker did not stop within the grace period");
            }
        }
    }
}

impl AuditService {
    /// A service over `backends`. Checks the configuration (published modes need a key).
    pub fn new(config: AuditConfig, backends: Backends) -> Result<Arc<Self>, ConfigError> {
        Self::with_clock(config, backends, Arc::new(SystemClock))
    }

    /// [`AuditService::new`] with an injected clock (dead letters, checkpoints, DLQ ages).
    pub fn with_clock(
        config: AuditConfig,
        backends: Backends,
        clock: SharedClock,
    ) -> Result<Arc<Self>, ConfigError> {
        config.check()?;
        if config.hmac_key.is_none() {
            tracing::warn!(
                "AUDIT_HMAC_KEY is not set: payload signatures are not checked and chain links are unsigned (dev only)"
            );
        }
        let ingestor = Arc::new(
            Ingestor::new(
                Arc::clone(&backends.ledger),
                config.hmac_key.clone(),
                config.ingest.clone(),
            )
            .with_clock(Arc::clone(&clock)),
        );
        let mut cc = ConsumerConfig::new(
            names::AUDIT_EVENTS,
            names::GROUP_AUDIT_INGESTOR,
            config.consumer.clone(),
        );
        cc.dead_letter_stream = names::AUDIT_EVENTS_DLQ.to_owned();
        cc.group_start = GroupStart::Latest;
        cc.claim_idle = config.claim_idle;
        cc.claim_interval = config.claim_idle;
        let consumer = Consumer::new(
            Arc::clone(&backends.streams),
            cc,
            Arc::clone(&ingestor) as Arc<dyn caracal_core::streams::consumer::Handler>,
        )
        .map_err(|e| ConfigError::invalid("consumer", e.to_string()))?
        .with_clock(Arc::clone(&clock));
        let health = consumer.health();
        Ok(Arc::new(Self {
            config,
            backends,
            ingestor,
            health,
            consumer: std::sync::Mutex::new(Some(consumer)),
            gauges: Arc::new(Gauges::default()),
            clock,
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &AuditConfig {
        &self.config
    }

    /// The backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The ingestor (counters).
    pub fn ingestor(&self) -> &Arc<Ingestor> {
        &self.ingestor
    }

    /// The consumer's health.
    pub fn consumer_health(&self) -> &ConsumerHealth {
        &self.health
    }

    /// The polled gauges.
    pub fn gauges(&self) -> &Gauges {
        &self.gauges
    }

    /// Start the consumer, the gauge poller, the checkpoint ticker, the tamper sweep, the
    /// exporter when
    /// `AUDIT_EXPORT_DIR` is set and, when the ledger is Postgres (`DATABASE_URL` set), the
    /// retention worker. The consumer runs once: a second
    /// call starts only the poller, ticker and retention worker.
    pub fn spawn_workers(self: &Arc<Self>) -> Workers {
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let consumer = self
            .consumer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(consumer) = consumer {
            tasks.push(consumer.spawn(rx.clone()));
        }
        let me = Arc::clone(self);
        let mut poll_rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                me.poll_gauges().await;
                if sleep_or_stop(me.config.poll_interval, &mut poll_rx).await {
                    break;
                }
            }
        }));
        if let Some(url) = &self.config.database_url {
            tasks.push(retention::spawn(
                url.expose().to_owned(),
                Arc::clone(&self.clock),
                self.config.retention,
                rx.clone(),
            ));
        }
        tasks.push(sweep::spawn(
            Arc::clone(&self.backends.ledger),
            self.config.hmac_key.clone(),
            Arc::clone(&self.clock),
            self.config.sweep,
            rx.clone(),
        ));
        if let Some(export) = &self.config.export {
            let store = Arc::clone(&self.backends.exports);
            let clock = Arc::clone(&self.clock);
            tasks.push(match &self.config.database_url {
                Some(url) => export::spawn_postgres(
                    url.expose().to_owned(),
                    store,
                    clock,
                    export.clone(),
                    rx.clone(),
                ),
                None => export::spawn_local(store, clock, export.clone(), rx.clone()),
            });
        }
        let me = Arc::clone(self);
        let mut cp_rx = rx;
        tasks.push(tokio::spawn(async move {
            while !sleep_or_stop(me.config.ingest.checkpoint_interval, &mut cp_rx).await {
                me.ingestor.flush_checkpoints().await;
            }
        }));
        Workers { stop, tasks }
    }

    /// Read the DLQ size and age, the group's pending count and oldest idle time. A failed
    /// read leaves the previous values.
    pub async fn poll_gauges(&self) {
        let s: &dyn Streams = &*self.backends.streams;
        let limit = Duration::from_secs(5);
        let g = &self.gauges;
        if let Ok(Ok(len)) = tokio::time::timeout(limit, s.len(names::AUDIT_EVENTS_DLQ)).await {
            g.dlq_size.store(len, Ordering::Relaxed);
        }
        if let Ok(Ok(first)) = tokio::time::timeout(
            limit,
            s.range(names::AUDIT_EVENTS_DLQ, EntryId::MIN, EntryId::MAX, Some(1)),
        )
        .await
        {
            let age = first.first().map_or(0, |e| {
                let now = u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0);
                now.saturating_sub(e.id.ms) / 1000
            });
            g.dlq_oldest_age_secs.store(age, Ordering::Relaxed);
        }
        if let Ok(Ok(summary)) = tokio::time::timeout(
            limit,
            s.pending_summary(names::AUDIT_EVENTS, names::GROUP_AUDIT_INGESTOR),
        )
        .await
        {
            g.consumer_lag.store(summary.count, Ordering::Relaxed);
            let oldest = match summary.min {
                Some(min) => tokio::time::timeout(
                    limit,
                    s.pending_range(
                        names::AUDIT_EVENTS,
                        names::GROUP_AUDIT_INGESTOR,
                        min,
                        min,
                        1,
                        None,
                    ),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|p| p.first().map(|p| p.idle.as_secs())),
                None => Some(0),
            };
            if let Some(o) = oldest {
                g.pel_oldest_secs.store(o, Ordering::Relaxed);
            }
        }
    }

    /// The HTTP surface.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        routes::router(Arc::clone(self))
    }
}

/// Sleep `d` unless stopped first; whether to stop.
async fn sleep_or_stop(d: Duration, rx: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(d) => None,
        _ = rx.wait_for(|s| *s) => Some(true),
    };
    stopped.unwrap_or_else(|| *rx.borrow())
}

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Backends could not be opened.
    #[error(transparent)]
    Backend(#[from] backends::BackendError),
    /// Binding or serving failed.
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
}

/// Run the Audit service on `backends` until `shutdown` resolves: workers, then HTTP on
/// `config.port`; on shutdown, HTTP drains and the workers stop.
pub async fn serve(
    config: AuditConfig,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let port = config.port;
    let service = AuditService::new(config, backends)?;
    let workers = service.spawn_workers();
    let listener = caracal_service::server::bind(port).await?;
    tracing::info!(port, "caracal-audit listening");
    let result = caracal_service::server::serve(listener, service.router(), shutdown).await;
    workers
        .shutdown(caracal_service::server::SHUTDOWN_GRACE)
        .await;
    result.map_err(ServeError::from)
}
