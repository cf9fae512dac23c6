//! What the STS runs on: the durable stores (Postgres or in memory), the ephemeral keys and
//! streams (Redis or in memory), and how to ping them for `/ready`.

use std::sync::Arc;

use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::backend::redis::{RedisConfig, RedisKeys, RedisStreams};
use caracal_core::clock::SharedClock;
use caracal_core::exchange::StsStores;
use caracal_core::store::ephemeral::EphemeralKeys;
use caracal_core::store::keys::SigningKeyStore;
use caracal_core::store::memory::MemoryStore;
use caracal_core::store::outbox::OutboxStore;
use caracal_core::store::policy::PolicyStore;
use caracal_core::streams::{MemoryStreams, Streams};

use crate::config::StsSettings;

/// Pings the backing services for `/ready`.
#[async_trait::async_trait]
pub trait Probe: Send + Sync {
    /// Whether Postgres answers.
    async fn postgres(&self) -> bool;
    /// Whether Redis is configured (always true for in-memory streams).
    fn redis_present(&self) -> bool;
    /// Whether Redis answers.
    async fn redis(&self) -> bool;
}

/// Pings a [`PgStore`] and a Redis pool; an absent one is in memory and always answers.
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
    fn redis_present(&self) -> bool {
        true
    }
    async fn redis(&self) -> bool {
        match &self.redis {
            Some(r) => r.pool().ping().await.is_ok(),
            None => true,
        }
    }
}

/// The STS's backends.
#[derive(Clone)]
pub struct StsBackends {
    /// Applications, resources, providers, authority, sessions, approvals, secrets.
    pub stores: StsStores,
    /// Policy sets (bundle cache).
    pub policy: Arc<dyn PolicyStore>,
    /// Zone signing keys.
    pub signing_keys: Arc<dyn SigningKeyStore>,
    /// The outbox (key-rotation invalidations).
    pub outbox: Arc<dyn OutboxStore>,
    /// Nonces, rate windows, the jti registry.
    pub ephemeral: Arc<dyn EphemeralKeys>,
    /// Streams.
    pub streams: Arc<dyn Streams>,
    /// Readiness pings.
    pub probe: Arc<dyn Probe>,
}

impl std::fmt::Debug for StsBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsBackends").finish_non_exhaustive()
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

impl StsBackends {
    /// Everything in one [`MemoryStore`] and [`MemoryStreams`] (dev, tests, `caracal up`).
    pub fn memory(store: Arc<MemoryStore>, streams: Arc<MemoryStreams>) -> Self {
        Self {
            stores: StsStores::from_store(store.clone()),
            policy: store.clone(),
            signing_keys: store.clone(),
            outbox: store.clone(),
            ephemeral: store,
            streams,
            probe: Arc::new(LiveProbe::default()),
        }
    }

    /// The configured backends: Postgres at `DATABASE_URL` and Redis at `REDIS_URL`, each in
    /// memory when unset (refused in published modes by [`StsSettings::check`]).
    pub async fn connect(settings: &StsSettings, clock: SharedClock) -> Result<Self, BackendError> {
        let memory = Arc::new(MemoryStore::with_clock(clock.clone()));
        let mut probe = LiveProbe::default();
        let mut backends = Self::memory(memory, Arc::new(MemoryStreams::new(clock)));
        if let Some(url) = &settings.database_url {
            let options = PgStoreOptions {
                application_name: "caracal-sts".to_owned(),
                ..PgStoreOptions::default()
            };
            let pg = Arc::new(
                PgStore::open(url.expose(), options)
                    .await
                    .map_err(|e| BackendError::Postgres(e.to_string()))?,
            );
            probe.pg = Some((*pg).clone());
            backends.stores = StsStores::from_store(pg.clone());
            backends.policy = pg.clone();
            backends.signing_keys = pg.clone();
            backends.outbox = pg;
        }
        if let Some(url) = &settings.redis_url {
            let config = RedisConfig::new(url.expose());
            let streams =
                RedisStreams::connect(&config).map_err(|e| BackendError::Redis(e.to_string()))?;
            let keys = RedisKeys::new(streams.pool().clone());
            probe.redis = Some(streams.clone());
            backends.streams = Arc::new(streams);
            backends.ephemeral = Arc::new(keys);
        }
        backends.probe = Arc::new(probe);
        Ok(backends)
    }
}
