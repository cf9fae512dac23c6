//! The `caracal-control` service: the Admin API (port 3000) and the Coordinator (port 4000)
//! over Postgres and Redis (or, in dev, in memory), with the outbox relay that publishes the
//! Coordinator's and the Admin API's outbox rows with their `_sig`.
//!
//! [`serve`] is what the binary runs; [`serve_on`] takes bound listeners (tests use ephemeral
//! ports). Background work starts in [`ControlService::spawn_workers`]: the relay and the
//! sweepers of `caracal_core::jobs`.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::response::Response;
use caracal_core::backend::postgres::PgLeaderLock;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::backend::redis::{RedisConfig, RedisStreams};
use caracal_core::clock::SharedClock;
use caracal_core::coordinator::{Coordinator, IdempotencyKeys};
use caracal_core::ids::{SharedIdGen, UuidV7};
use caracal_core::jobs::{JobRunner, JobsConfig};
use caracal_core::mandate::ZoneKeys;
use caracal_core::store::admin_audit::AdminAuditStore;
use caracal_core::store::approvals::ApprovalStore;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::coordinator::CoordinatorStore;
use caracal_core::store::directory::{
    AdminTokenStore, ApplicationStore, ProviderStore, ResourceStore, SecretStore, ZoneStore,
};
use caracal_core::store::keys::SigningKeyStore;
use caracal_core::store::leader::LeaderLock;
use caracal_core::store::memory::MemoryLeaderLock;
use caracal_core::store::memory::MemoryStore;
use caracal_core::store::outbox::OutboxStore;
use caracal_core::store::policy::PolicyStore;
use caracal_core::streams::relay::{OutboxRelay, RelayConfig};
use caracal_core::streams::signature::{SigPolicy, StreamKey};
use caracal_core::streams::{MemoryStreams, Streams};
use caracal_service::ConfigError;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{AdminApi, AdminParts, AdminStores, ApprovalPlane};
use crate::config::ControlSettings;
use crate::coordinator::{CoordinatorApi, CoordinatorSettings};

/// Why the service could not start or stopped with an error (messages carry no secrets).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Postgres could not be opened.
    #[error("postgres: {0}")]
    Postgres(String),
    /// Redis could not be opened.
    #[error("redis: {0}")]
    Redis(String),
    /// Binding or serving failed.
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
}

/// Pings of `/ready`: an absent backend is in memory and always answers.
#[derive(Debug, Clone, Default)]
struct Probe {
    pg: Option<PgStore>,
    redis: Option<RedisStreams>,
}

impl Probe {
    /// The first failing dependency, by its reason.
    async fn check(&self) -> Result<(), &'static str> {
        if let Some(pg) = &self.pg {
            let ok = tokio::time::timeout(Duration::from_secs(2), pg.ping()).await;
            if !matches!(ok, Ok(Ok(()))) {
                return Err("postgres_unreachable");
            }
        }
        if let Some(r) = &self.redis {
            let ok = tokio::time::timeout(Duration::from_secs(2), r.pool().ping()).await;
            if !matches!(ok, Ok(Ok(_))) {
                return Err("redis_unreachable");
            }
        }
        Ok(())
    }
}

/// The running pieces: both APIs, the relay, and the readiness probe.
pub struct ControlService {
    admin: Arc<AdminApi>,
    coordinator: Arc<CoordinatorApi>,
    relay: Mutex<Option<Arc<OutboxRelay>>>,
    jobs: Mutex<Option<JobRunner>>,
    probe: Probe,
}

impl std::fmt::Debug for ControlService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlService").finish_non_exhaustive()
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
                tracing::warn!("a control-plane worker did not stop within the grace period");
            }
        }
    }
}

/// What the APIs are built from, whichever backend holds the stores.
struct Parts {
    settings: ControlSettings,
    clock: SharedClock,
    ids: SharedIdGen,
    streams: Arc<dyn Streams>,
    leader: Arc<dyn LeaderLock>,
    probe: Probe,
}

impl ControlService {
    /// Open the configured backends (Postgres at `DATABASE_URL`, Redis at `REDIS_URL`; in
    /// memory when unset, which [`ControlSettings::check`] allows only in dev) and build both
    /// APIs and the relay. Must run inside a tokio runtime. The schema must already be
    /// migrated (`caracal migrate`).
    pub async fn connect(
        settings: ControlSettings,
        clock: SharedClock,
    ) -> Result<Arc<Self>, ServeError> {
        settings.check()?;
        let mut probe = Probe::default();
        let streams: Arc<dyn Streams> = match &settings.redis_url {
            Some(url) => {
                let s = RedisStreams::connect(&RedisConfig::new(url.expose()))
                    .map_err(|e| ServeError::Redis(e.to_string()))?;
                probe.redis = Some(s.clone());
                Arc::new(s)
            }
            None => {
                tracing::warn!("REDIS_URL is not set: in-memory streams (dev only)");
                Arc::new(MemoryStreams::new(clock.clone()))
            }
        };
        let database_url = settings.database_url.clone();
        let parts = |probe, leader| Parts {
            settings: settings.clone(),
            clock: clock.clone(),
            ids: Arc::new(UuidV7),
            streams: streams.clone(),
            leader,
            probe,
        };
        match database_url {
            Some(url) => {
                let options = PgStoreOptions {
                    application_name: "caracal-control".to_owned(),
                    ..PgStoreOptions::default()
                };
                let pg = PgStore::open(url.expose(), options)
                    .await
                    .map_err(|e| ServeError::Postgres(e.to_string()))?;
                probe.pg = Some(pg.clone());
                let leader = Arc::new(PgLeaderLock::new(pg.clone()));
                Self::build(Arc::new(pg), parts(probe, leader))
            }
            None => {
                tracing::warn!("DATABASE_URL is not set: in-memory stores (dev only)");
                Self::build(
                    Arc::new(MemoryStore::with_clock(clock.clone())),
                    parts(probe, Arc::new(MemoryLeaderLock::new())),
                )
            }
        }
    }

    fn build<S>(store: Arc<S>, parts: Parts) -> Result<Arc<Self>, ServeError>
    where
        S: ZoneStore
            + ApplicationStore
            + ResourceStore
            + ProviderStore
            + SecretStore
            + AdminTokenStore
            + PolicyStore
            + ApprovalStore
            + AuthorityStore
            + OutboxStore
            + AdminAuditStore
            + CoordinatorStore
            + SigningKeyStore
            + 'static,
    {
        let Parts {
            settings,
            clock,
            ids,
            streams,
            leader,
            probe,
        } = parts;
        let stream_key = settings
            .streams_key
            .as_deref()
            .map(StreamKey::from_bytes)
            .transpose()
            .map_err(|e| ConfigError::invalid("STREAMS_HMAC_KEY", e.to_string()))?;
        if stream_key.is_none() {
            tracing::warn!("STREAMS_HMAC_KEY is not set: stream messages are unsigned (dev only)");
        }
        let sig = SigPolicy::from_config(stream_key, settings.mode.is_published())
            .map_err(|e| ConfigError::invalid("STREAMS_HMAC_KEY", e.to_string()))?;
        if settings.audit_key.is_none() {
            tracing::warn!(
                "ADMIN_AUDIT_HMAC_KEY is not set: the admin audit chain is signed with a \
                 per-process key (dev only)"
            );
        }
        let idempotency = match &settings.idempotency_key {
            Some(k) => IdempotencyKeys::new(k.clone(), settings.idempotency_key_previous.clone()),
            None => {
                tracing::warn!("IDEMPOTENCY_HMAC_KEY is not set: a per-process key (dev only)");
                let hex = caracal_core::secrets::envelope::Kek::generate_hex()
                    .map_err(|e| ConfigError::invalid("IDEMPOTENCY_HMAC_KEY", e.to_string()))?;
                IdempotencyKeys::new(hex.into_bytes(), None)
            }
        };
        let admin = AdminApi::from_parts(AdminParts {
            stores: AdminStores::from_store(store.clone()),
            keyring: settings.admin.keyring.clone(),
            bootstrap: settings.admin.bootstrap_token.clone(),
            clock: clock.clone(),
            ids: ids.clone(),
            plane: ApprovalPlane::standalone(),
            audit_key: settings.audit_key.clone(),
        });
        let keys = Arc::new(ZoneKeys::new(
            store.clone(),
            store.clone(),
            settings.admin.keyring.clone(),
            clock.clone(),
            ids.clone(),
        ));
        let mut coordinator_settings = CoordinatorSettings::new(settings.issuer.clone());
        coordinator_settings.required_scope = settings.coordinator_scope.clone();
        coordinator_settings.operator_token = settings.operator_token.clone();
        coordinator_settings.audit_key = settings.audit_key.clone();
        let coordinator = CoordinatorApi::new(
            store.clone(),
            keys,
            idempotency,
            coordinator_settings,
            clock.clone(),
            ids.clone(),
        );
        let jobs = JobRunner::new(
            Coordinator::new(
                store.clone(),
                store.clone(),
                store.clone(),
                store.clone(),
                ids,
            ),
            store.clone(),
            leader,
            clock.clone(),
            JobsConfig::default(),
        );
        let relay = Arc::new(OutboxRelay::new(
            store,
            streams,
            sig,
            clock,
            RelayConfig::new(format!("control-{}-outbox", settings.hostname)),
        ));
        Ok(Arc::new(Self {
            admin,
            coordinator,
            relay: Mutex::new(Some(relay)),
            jobs: Mutex::new(Some(jobs)),
            probe,
        }))
    }

    /// The Admin API.
    pub fn admin(&self) -> &Arc<AdminApi> {
        &self.admin
    }

    /// The Coordinator API.
    pub fn coordinator(&self) -> &Arc<CoordinatorApi> {
        &self.coordinator
    }

    /// Start the background work (once): the outbox relay (every replica; `SKIP LOCKED`
    /// claims) and the Coordinator's jobs (`caracal_core::jobs`: TTL sweeper, lease sweeper,
    /// retention cleaner with edge expiry), each pass under its leader lock (a Postgres
    /// advisory lock, so one replica runs each). A second call starts nothing.
    pub fn spawn_workers(self: &Arc<Self>) -> Workers {
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let relay = self
            .relay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(relay) = relay {
            tasks.push(relay.spawn(rx.clone()));
        }
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(jobs) = jobs {
            let handle = jobs.spawn(rx.clone());
            tasks.push(tokio::spawn(handle.join()));
        }
        drop(rx);
        Workers { stop, tasks }
    }

    /// `/ready`: Postgres and Redis answer (2 s each).
    pub async fn readiness(&self) -> Result<(), &'static str> {
        self.probe.check().await
    }

    fn with_ready(self: &Arc<Self>, router: axum::Router) -> axum::Router {
        let svc = Arc::clone(self);
        router.route(
            "/ready",
            axum::routing::get(move || {
                let svc = Arc::clone(&svc);
                async move { ready(&svc).await }
            }),
        )
    }

    /// The Admin API's router with `/ready`.
    pub fn admin_router(self: &Arc<Self>) -> axum::Router {
        self.with_ready(self.admin.router())
    }

    /// The Coordinator's router with `/ready`.
    pub fn coordinator_router(self: &Arc<Self>) -> axum::Router {
        self.with_ready(self.coordinator.router())
    }
}

async fn ready(svc: &ControlService) -> Response {
    caracal_service::health::ready_response(svc.readiness().await)
}

/// Run both APIs on the configured ports until `shutdown` resolves.
pub async fn serve(
    settings: ControlSettings,
    clock: SharedClock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let admin_port = settings.admin.port;
    let coordinator_port = settings.coordinator_port;
    let service = ControlService::connect(settings, clock).await?;
    let admin = caracal_service::server::bind(admin_port).await?;
    let coordinator = caracal_service::server::bind(coordinator_port).await?;
    serve_on(service, admin, coordinator, shutdown).await
}

/// Run `service` on bound listeners until `shutdown` resolves: workers first, then both
/// servers; on shutdown the servers drain and the workers stop.
pub async fn serve_on(
    service: Arc<ControlService>,
    admin: TcpListener,
    coordinator: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let workers = service.spawn_workers();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tracing::info!(
        admin = ?admin.local_addr().ok(),
        coordinator = ?coordinator.local_addr().ok(),
        "caracal-control listening"
    );
    let admin_server = tokio::spawn(caracal_service::server::serve(
        admin,
        service.admin_router(),
        stopped(stop_rx.clone()),
    ));
    let coordinator_server = tokio::spawn(caracal_service::server::serve(
        coordinator,
        service.coordinator_router(),
        stopped(stop_rx),
    ));
    shutdown.await;
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    for server in [admin_server, coordinator_server] {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(ServeError::Io(e)),
            Err(e) => result = Err(ServeError::Io(std::io::Error::other(e.to_string()))),
        }
    }
    workers
        .shutdown(caracal_service::server::SHUTDOWN_GRACE)
        .await;
    result
}
