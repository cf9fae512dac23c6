//! # caracal-sts
//!
//! The HTTP surface of the Caracal Security Token Service (port 8080): the RFC 8693 token
//! endpoint `POST /oauth/2/token`, the per-zone JWKS at `/.well-known/jwks.json?zone_id=`,
//! the approval long-poll and subject decision, key rotation, the internal policy status,
//! `/health`, `/ready` and `/metrics`, plus the STS's background work: the three stream
//! consumers (`caracal.sessions.revoke`, `caracal.policy.invalidate`,
//! `caracal.keys.invalidate`), the policy safety poll, the audit emitter and the outbox relay.
//!
//! This crate only parses requests, calls [`caracal_core::exchange::Sts`] and renders
//! responses; the decisions live in the core so a host can run them in-process.
//!
//! ## Layout
//!
//! - [`config`]: settings from the environment (`sts.md` §9).
//! - [`backends`]: Postgres + Redis, or in memory, and the `/ready` pings.
//! - [`routes`]: the router.
//! - this module: [`StsService`] (state and workers) and [`serve`].
//!
//! Embedding (`caracal up`): build [`StsService::new`] on in-memory backends, spawn its
//! workers, and mount [`StsService::router`].

pub mod backends;
pub mod config;
pub mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use caracal_core::audit::emitter::{AuditEmitter, EmitterConfig};
use caracal_core::audit::sink::AuditSink;
use caracal_core::clock::{SharedClock, SystemClock};
use caracal_core::exchange::revocation::{StsConsumerDeps, sts_consumers};
use caracal_core::exchange::{Sts, StsConfig, StsParts};
use caracal_core::ids::{SharedIdGen, UuidV7};
use caracal_core::mandate::ZoneKeys;
use caracal_core::policy::cache::BundleCache;
use caracal_core::streams::consumer::{Consumer, ConsumerHealth};
use caracal_core::streams::relay::{OutboxRelay, RelayConfig};
use caracal_core::streams::signature::{SigPolicy, StreamKey};
use caracal_service::ConfigError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use backends::StsBackends;
pub use config::StsSettings;

/// The STS: settings, backends, the exchange engine and its background work.
pub struct StsService {
    settings: StsSettings,
    backends: StsBackends,
    sts: Arc<Sts>,
    emitter: Arc<AuditEmitter>,
    relay: Arc<OutboxRelay>,
    consumers: std::sync::Mutex<Vec<Consumer>>,
    health: Vec<ConsumerHealth>,
    clock: SharedClock,
}

impl std::fmt::Debug for StsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Running background work.
#[derive(Debug)]
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Ask every worker to stop and wait for them (at most `grace` each).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("an STS worker did not stop within the grace period");
            }
        }
    }
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Backends could not be opened.
    #[error(transparent)]
    Backend(#[from] backends::BackendError),
    /// The audit replay directory is unusable.
    #[error("audit replay directory: {0}")]
    Replay(String),
    /// Binding or serving failed.
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
}

fn consumer_name(settings: &StsSettings, suffix: &str) -> String {
    format!("sts-{}-{suffix}", settings.hostname)
}

impl StsService {
    /// A service over `backends` with the system clock and UUIDv7 ids.
    pub fn new(settings: StsSettings, backends: StsBackends) -> Result<Arc<Self>, ServeError> {
        Self::with_clock(settings, backends, Arc::new(SystemClock), Arc::new(UuidV7))
    }

    /// [`StsService::new`] with an injected clock and id generator (tests).
    pub fn with_clock(
        settings: StsSettings,
        backends: StsBackends,
        clock: SharedClock,
        ids: SharedIdGen,
    ) -> Result<Arc<Self>, ServeError> {
        settings.check()?;
        let stream_key = settings
            .streams_key
            .as_deref()
            .map(StreamKey::from_bytes)
            .transpose()
            .map_err(|e| ConfigError::invalid("STREAMS_HMAC_KEY", e.to_string()))?;
        let sig = SigPolicy::from_config(stream_key.clone(), settings.mode.is_published())
            .map_err(|e| ConfigError::invalid("STREAMS_HMAC_KEY", e.to_string()))?;
        if stream_key.is_none() {
            tracing::warn!("STREAMS_HMAC_KEY is not set: stream messages are unsigned (dev only)");
        }
        let emitter = AuditEmitter::new(
            backends.streams.clone(),
            EmitterConfig {
                audit_key: settings.audit_key.clone(),
                clock: clock.clone(),
                ..EmitterConfig::new(settings.replay_dir.clone())
            },
        )
        .map_err(|e| ServeError::Replay(e.to_string()))?;
        let keys = Arc::new(ZoneKeys::new(
            backends.signing_keys.clone(),
            backends.outbox.clone(),
            settings.keyring.clone(),
            clock.clone(),
            ids.clone(),
        ));
        let policies = Arc::new(BundleCache::new(backends.policy.clone(), clock.clone()));
        let mut config = StsConfig::new(settings.issuer.clone());
        config.control_audience = settings.control_audience.clone();
        config.mint_limit_per_min = settings.mint_limit_per_min;
        config.secret_verify_concurrency = settings.secret_verify_concurrency;
        let sts = Arc::new(Sts::new(StsParts {
            config,
            stores: backends.stores.clone(),
            ephemeral: backends.ephemeral.clone(),
            keys: keys.clone(),
            keyring: settings.keyring.clone(),
            policies: policies.clone(),
            audit: emitter.clone() as Arc<dyn AuditSink>,
            gateway_key: settings.gateway_key.clone(),
            clock: clock.clone(),
            ids,
        }));
        let consumers = sts_consumers(
            &StsConsumerDeps {
                streams: backends.streams.clone(),
                authority: backends.stores.authority.clone(),
                keys,
                bundles: policies,
                sig: sig.clone(),
                clock: clock.clone(),
            },
            &settings.hostname,
        )
        .map_err(|e| ConfigError::invalid("consumer", e.to_string()))?;
        let health = consumers.iter().map(Consumer::health).collect();
        let relay = Arc::new(OutboxRelay::new(
            backends.outbox.clone(),
            backends.streams.clone(),
            sig,
            clock.clone(),
            RelayConfig {
                interval: settings.relay_interval,
                ..RelayConfig::new(consumer_name(&settings, "outbox"))
            },
        ));
        Ok(Arc::new(Self {
            settings,
            backends,
            sts,
            emitter,
            relay,
            consumers: std::sync::Mutex::new(consumers),
            health,
            clock,
        }))
    }

    /// The settings.
    pub fn settings(&self) -> &StsSettings {
        &self.settings
    }

    /// The backends.
    pub fn backends(&self) -> &StsBackends {
        &self.backends
    }

    /// The exchange engine (embedded hosts call it directly).
    pub fn sts(&self) -> &Arc<Sts> {
        &self.sts
    }

    /// The audit emitter.
    pub fn emitter(&self) -> &Arc<AuditEmitter> {
        &self.emitter
    }

    /// The consumers' health (revocation, policy, keys).
    pub fn consumer_health(&self) -> &[ConsumerHealth] {
        &self.health
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Start the consumers (once), the policy safety poll, the audit emitter and the outbox
    /// relay.
    pub fn spawn_workers(self: &Arc<Self>) -> Workers {
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let consumers = std::mem::take(
            &mut *self
                .consumers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for consumer in consumers {
            tasks.push(consumer.spawn(rx.clone()));
        }
        tasks.push(
            self.sts
                .policies()
                .clone()
                .spawn_poller(self.settings.poll_interval, rx.clone()),
        );
        tasks.push(self.emitter.spawn(rx.clone()));
        tasks.push(self.relay.clone().spawn(rx));
        Workers { stop, tasks }
    }

    /// The HTTP surface.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        routes::router(Arc::clone(self))
    }
}

/// Run the STS on `backends` until `shutdown` resolves: workers, then HTTP on the configured
/// port; on shutdown, HTTP drains and the workers stop (the emitter flushes or spills).
pub async fn serve(
    settings: StsSettings,
    backends: StsBackends,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let port = settings.port;
    let service = StsService::new(settings, backends)?;
    let workers = service.spawn_workers();
    let listener = caracal_service::server::bind(port).await?;
    tracing::info!(port, "caracal-sts listening");
    let result = caracal_service::server::serve(listener, service.router(), shutdown).await;
    workers
        .shutdown(caracal_service::server::SHUTDOWN_GRACE)
        .await;
    result.map_err(ServeError::from)
}
