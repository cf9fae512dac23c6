//! What the service runs on: a [`Streams`] and an [`AuditLedger`], and how to ping them for
//! `/ready`.

use std::sync::Arc;

use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::backend::redis::{RedisConfig, RedisStreams};
use caracal_core::clock::{SharedClock, SystemClock};
use caracal_core::store::audit::{AuditExportStore, AuditLedger};
use caracal_core::store::memory::MemoryStore;
use caracal_core::streams::{MemoryStreams, Streams};

use crate::config::AuditConfig;

/// Pings the backing services for `/ready`.
#[async_trait::async_trait]
pub trait Probe: Send + Sync {
    /// Whether Postgres answers.
    async fn postgres(&self) -> bool;
    /// Whether Redis answers.
    async fn redis(&self) -> bool;
}

/// In-memory backends always answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysUp;

#[async_trait::async_trait]
impl Probe for AlwaysUp {
    async fn postgres(&self) -> bool {
        true
    }
    async fn redis(&self) -> bool {
        true
    }
}

/// Pings a [`PgStore`] and a [`RedisStreams`] pool (either may be absent: in memory).
#[derive(Debug, Clone, Default)]
pub struct LiveProbe {
    pg: Option<PgStore>,
    redis: Option<RedisStreams>,
}

#[async_trait::async_trait]
impl Probe for LiveProbe {
    async fn postgres(&self) -> bool {
        match &self.pg {
            Some(pg) => pg.ping().await.is_ok(),
            None => true,
        }
    }
    async fn redis(&self) -> bool {
        match &self.redis {
            Some(r) => r.pool().ping().await.is_ok(),
            None => true,
        }
    }
}

/// The service's backends.
#[derive(Clone)]
pub struct Backends {
    /// The audit stream and its DLQ.
    pub streams: Arc<dyn Streams>,
    /// The ledger.
    pub ledger: Arc<dyn AuditLedger>,
    /// The ledger's export side (the same store as `ledger`).
    pub exports: Arc<dyn AuditExportStore>,
    /// Readiness pings.
    pub probe: Arc<dyn Probe>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

/// Why the backends could not be opened (messages carry no credentials).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Postgres.
    #[error("postgres: {0}")]
    Postgres(String),
    /// Redis.
    #[error("redis: {0}")]
    Redis(String),
}

impl Backends {
    /// In-memory streams and ledger on `clock` (dev, tests, `caracal up`).
    pub fn memory(clock: SharedClock) -> Self {
        Self::on_memory_store(
            Arc::new(MemoryStreams::new(Arc::clone(&clock))),
            Arc::new(MemoryStore::with_clock(clock)),
        )
    }

    /// In-memory backends on a given store and streams (`caracal up` shares them with the
    /// other services).
    pub fn on_memory_store(streams: Arc<dyn Streams>, store: Arc<MemoryStore>) -> Self {
        Self {
            streams,
            ledger: store.clone(),
            exports: store,
            probe: Arc::new(AlwaysUp),
        }
    }

    /// The configured backends: Postgres at `DATABASE_URL` and Redis at `REDIS_URL`, each in
    /// memory when unset (refused in published modes by [`AuditConfig::check`]).
    pub async fn connect(config: &AuditConfig) -> Result<Self, BackendError> {
        let clock: SharedClock = Arc::new(SystemClock);
        let mut probe = LiveProbe::default();
        let (ledger, exports): (Arc<dyn AuditLedger>, Arc<dyn AuditExportStore>) =
            match &config.database_url {
                Some(url) => {
                    let options = PgStoreOptions {
                        application_name: "caracal-audit".to_owned(),
                        ..PgStoreOptions::default()
                    };
                    let pg = PgStore::open(url.expose(), options)
                        .await
                        .map_err(|e| BackendError::Postgres(e.to_string()))?;
                    probe.pg = Some(pg.clone());
                    let pg = Arc::new(pg);
                    (pg.clone(), pg)
                }
                None => {
                    let store = Arc::new(MemoryStore::with_clock(Arc::clone(&clock)));
                    (store.clone(), store)
                }
            };
        let streams: Arc<dyn Streams> = match &config.redis_url {
            Some(url) => {
                let r = RedisStreams::connect(&RedisConfig::new(url.expose()))
                    .map_err(|e| BackendError::Redis(e.to_string()))?;
                probe.redis = Some(r.clone());
                Arc::new(r)
            }
            None => Arc::new(MemoryStreams::new(clock)),
        };
        Ok(Self {
            streams,
            ledger,
            exports,
            probe: Arc::new(probe),
        })
    }
}
