//! # caracal-gateway
//!
//! The Caracal Gateway (port 8081): where authority is *used*. An agent sends an ordinary
//! HTTP request with a one-shot `use=gateway` mandate in `Authorization: Bearer` and the
//! resource identifier in `X-Caracal-Resource`; it never names an upstream URL and never holds
//! the upstream credential. Per request the Gateway:
//!
//! 1. runs the ordered pre-flight checks (reference `gateway.md` §1.2): revocation snapshot
//!    freshness, bearer shape and size, the 35 s expiry window, routing headers, zone/client
//!    claims, path traversal ([`preflight`]), the ES256 signature against the zone JWKS
//!    ([`jwks`]), the **single use of the `jti`** (consumed before the exchange), the revocation
//!    anchors ([`revocation`]) and the STS circuit ([`breaker`]);
//! 2. re-exchanges the mandate with the STS under the HMAC envelope ([`exchange`]): over HTTP,
//!    or in process against an embedded [`Sts`] with the same
//!    checks and audit;
//! 3. checks the upstream URL the STS returned with the egress guard ([`ssrf`]: every resolved
//!    address judged at check time and again at connect time) and the credential host pin;
//! 4. builds the upstream request ([`forward`]): sanitised headers both ways, the credential of
//!    the directive injected, `traceparent` validated, `X-Forwarded-*` replaced, path joined and
//!    query merged, no redirect followed, absolute `Location` dropped;
//! 5. streams both ways without buffering ([`body`]), re-checking revocation between response
//!    chunks (a revoked mandate truncates the stream with the trailer `X-Caracal-Revoked: true`);
//! 6. audits the request ([`audit`]) through the durable
//!    [`AuditEmitter`] (fsync'd spill files, replayed
//!    in the background when Redis is back).
//!
//! Operator endpoints ([`routes`]): `GET /health`, `GET /ready` (reasons in the reference
//! order), `GET /metrics` and `GET /metrics.json` (every `caracal_gateway_*` figure of §8.2,
//! [`metrics`], plus `caracal_db_pool_*` when the snapshot comes from Postgres),
//! `POST /internal/revocations/reload`.
//!
//! ## Embedding
//!
//! [`GatewayService::new`] takes [`GatewayParts`]; [`GatewayService::in_process`] builds the
//! parts for a host that runs the STS in the same process (`caracal up`): the exchange calls
//! [`Sts::token`](caracal_core::exchange::Sts::token) directly, the JWKS is the STS key ring,
//! and `jti` markers, streams and audit share the host's in-memory backends. Then
//! [`GatewayService::spawn_workers`], [`GatewayService::reload_revocations`] once (the initial
//! snapshot), and [`GatewayService::router`] or [`serve_on`].
//!
//! ## Configuration (environment, [`config::GatewaySettings::from_env`])
//!
//! | Variable | Default | Rule |
//! |---|---|---|
//! | `CARACAL_MODE` | `stable` | `dev`, `rc`, `stable`; `rc`/`stable` are "published" |
//! | `GATEWAY_PORT`, else `PORT` | `8081` | published modes: exactly 8081 |
//! | `STS_URL` | (required, published) | absolute http(s); plain http only for an internal host when published |
//! | `GATEWAY_STS_HMAC_KEY` (`_FILE`) | unset | hex ≥ 32 bytes; required when published |
//! | `STREAMS_HMAC_KEY` (`_FILE`) | unset | hex ≥ 32 bytes; required when published |
//! | `AUDIT_HMAC_KEY` (`_FILE`) | unset | hex ≥ 32 bytes; required when published |
//! | `DATABASE_URL` (`_FILE`) | unset | the revocation snapshot; required when published |
//! | `REDIS_URL` (`_FILE`) | unset | `jti` markers, revocation stream, audit; required when published |
//! | `AUDIT_REPLAY_DIR` | `/var/lib/caracal/audit-replay` | created 0700 |
//! | `JTI_FAIL_OPEN` | `false` | `true` refused when published |
//! | `UPSTREAM_ALLOW_PRIVATE` | `false` | allow loopback, RFC 1918, `fc00::/7`, CGNAT upstreams |
//! | `UPSTREAM_ALLOW_LOOPBACK` | `false` | allow loopback upstreams (dev; refused when published) |
//! | `UPSTREAM_ALLOW_HOSTS` (alias `UPSTREAM_HOST_ALLOWLIST`) | empty | CSV of exact hosts: the only addressable ones; they may be private |
//! | `MAX_REQUEST_BYTES` | `10485760` | > 0 |
//! | `STS_TIMEOUT` 5s, `UPSTREAM_TIMEOUT` 30s, `READ_HEADER_TIMEOUT` 5s, `READ_TIMEOUT` 45s, `WRITE_TIMEOUT` 60s, `STREAM_IDLE_TIMEOUT` 60s, `IDLE_TIMEOUT` 120s | | durations (`5s`, `500ms`); `READ_TIMEOUT` > `STS_TIMEOUT` + `UPSTREAM_TIMEOUT`; an idle keep-alive connection closes after `min(READ_HEADER_TIMEOUT, IDLE_TIMEOUT)` ([`config::Timeouts::keep_alive`]) |
//! | `TRUST_PROXY` | `false` | honour the inbound first `X-Forwarded-For` and `X-Forwarded-Proto` |
//! | `TLS_CERT_FILE`, `TLS_KEY_FILE` | unset | both or neither: serve HTTPS (PEM chain and key, read at start; a bad pair refuses to start) |
//! | `CARACAL_ADMIN_TOKEN` (`_FILE`) | unset | enables the reload endpoint (else it is a 404) |
//! | `METRICS_BEARER` (`_FILE`) | unset | required for `/metrics` when published |
//! | `HOSTNAME` | `gateway` | consumer group `gateway-revocation:<host>` |
//!
//! ## Invariants
//!
//! - Fail closed: a stale snapshot, an unreachable JWKS, a `jti` store error (unless
//!   `JTI_FAIL_OPEN` in dev), an open circuit or an unaddressable upstream all refuse.
//! - The agent's mandate never reaches the upstream; the provider credential never reaches the
//!   agent; no token, path or query is audited or logged.
//! - A `jti` is burned before the exchange: a failed attempt needs a fresh mandate.

pub mod audit;
pub mod body;
pub mod breaker;
pub mod client;
pub mod config;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod jwks;
pub mod metrics;
pub mod preflight;
pub mod proxy;
pub mod revocation;
pub mod routes;
pub mod ssrf;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use caracal_core::audit::emitter::{AuditEmitter, EmitterConfig};
use caracal_core::audit::sink::AuditSink;
use caracal_core::clock::{SharedClock, SystemClock};
use caracal_core::exchange::Sts;
use caracal_core::ids::{SharedIdGen, UuidV7};
use caracal_core::mandate::remote::{JwksSource, ZoneKeysSource};
use caracal_core::store::ephemeral::EphemeralKeys;
use caracal_core::streams::Streams;
use caracal_core::streams::consumer::{Consumer, ConsumerConfig, ConsumerHealth};
use caracal_core::streams::names;
use caracal_core::streams::signature::{SigPolicy, StreamKey};
use caracal_service::ConfigError;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::GatewaySettings;
pub use error::GatewayError;

use crate::audit::{Evaluation, RequestRecord};
use crate::body::CappedBody;
use crate::breaker::Breaker;
use crate::exchange::{Exchanger, HttpExchanger, InProcessExchanger};
use crate::jwks::{HttpJwksSource, KeyCache};
use crate::metrics::{Counters, Metrics};
use crate::revocation::{
    MemorySnapshotSource, PgSnapshotSource, RELOAD_INTERVAL, RevocationState, SnapshotSource,
    StreamHandler,
};
use crate::ssrf::{EgressGuard, GuardedResolver, Lookup, SystemLookup};

/// The upstream client: TLS over the egress-guarded connector.
pub type UpstreamClient = Client<
    hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>,
    CappedBody<axum::body::Body>,
>;

/// Whether Redis answers (for `/ready`).
#[async_trait]
pub trait Ping: Send + Sync {
    /// `PING`.
    async fn ping(&self) -> bool;
}

/// Always answers (in-memory backends).
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysUp;

#[async_trait]
impl Ping for AlwaysUp {
    async fn ping(&self) -> bool {
        true
    }
}

#[async_trait]
impl Ping for caracal_core::backend::redis::RedisStreams {
    async fn ping(&self) -> bool {
        self.pool().ping().await.is_ok()
    }
}

/// What a [`GatewayService`] is built from.
pub struct GatewayParts {
    /// Settings.
    pub settings: GatewaySettings,
    /// The STS exchange.
    pub exchanger: Arc<dyn Exchanger>,
    /// The zone JWKS.
    pub jwks: Arc<dyn JwksSource>,
    /// `jti` markers (Redis `SET NX PX`).
    pub jti: Arc<dyn EphemeralKeys>,
    /// Streams: `caracal.sessions.revoke` and `caracal.audit.events`.
    pub streams: Arc<dyn Streams>,
    /// The revocation snapshot.
    pub snapshot: Arc<dyn SnapshotSource>,
    /// Name resolution for the egress guard.
    pub lookup: Arc<dyn Lookup>,
    /// Redis readiness.
    pub redis: Arc<dyn Ping>,
    /// Time.
    pub clock: SharedClock,
    /// Event ids.
    pub ids: SharedIdGen,
}

impl std::fmt::Debug for GatewayParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayParts")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The Gateway: settings, state and clients.
pub struct GatewayService {
    settings: GatewaySettings,
    exchanger: Arc<dyn Exchanger>,
    keys: KeyCache,
    jti: Arc<dyn EphemeralKeys>,
    streams: Arc<dyn Streams>,
    snapshot: Arc<dyn SnapshotSource>,
    revocations: Arc<RevocationState>,
    breaker: Breaker,
    guard: EgressGuard,
    upstream: UpstreamClient,
    emitter: Arc<AuditEmitter>,
    redis: Arc<dyn Ping>,
    consumer: std::sync::Mutex<Option<Consumer>>,
    consumer_health: ConsumerHealth,
    clock: SharedClock,
    ids: SharedIdGen,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for GatewayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayService")
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
    /// Stop every worker and wait (at most `grace` each); the emitter flushes or spills.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("a gateway worker did not stop within the grace period");
            }
        }
    }
}

fn upstream_client(
    settings: &GatewaySettings,
    guard: &EgressGuard,
) -> Result<UpstreamClient, String> {
    let mut http = HttpConnector::new_with_resolver(guard.resolver());
    http.enforce_http(false);
    http.set_connect_timeout(Some(settings.timeouts.connect));
    http.set_keepalive(Some(Duration::from_secs(30)));
    http.set_nodelay(true);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| e.to_string())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(100)
        .timer(TokioTimer::new())
        .build(tls))
}

impl GatewayService {
    /// A service over `parts`. Checks the settings, opens the audit replay dir and builds the
    /// revocation consumer (not started; see [`GatewayService::spawn_workers`]).
    pub fn new(parts: GatewayParts) -> Result<Arc<Self>, GatewayError> {
        let settings = parts.settings;
        settings.check()?;
        // Install the recorder (for the libraries' facade metrics) before anything records.
        let _ = caracal_service::metrics::prometheus();
        let stream_key = settings
            .streams_key
            .as_deref()
            .map(StreamKey::from_bytes)
            .transpose()
            .map_err(|e| ConfigError::invalid("STREAMS_HMAC_KEY", e.to_string()))?;
        let sig = SigPolicy::from_config(stream_key, settings.mode.is_published())
            .map_err(|e| ConfigError::invalid("STREAMS_HMAC_KEY", e.to_string()))?;
        let emitter = AuditEmitter::new(
            parts.streams.clone(),
            EmitterConfig {
                audit_key: settings.audit_key.clone(),
                clock: parts.clock.clone(),
                ..EmitterConfig::new(settings.replay_dir.clone())
            },
        )
        .map_err(|e| GatewayError::Replay(e.to_string()))?;
        let revocations = Arc::new(RevocationState::new(parts.clock.clone()));
        let metrics = Arc::new(Metrics::default());
        let mut config = ConsumerConfig::new(
            names::SESSIONS_REVOKE,
            names::gateway_revocation_group(&settings.hostname),
            format!("gateway-{}-{}", settings.hostname, std::process::id()),
        );
        config.batch = 50;
        config.block = Duration::from_secs(1);
        config.dead_letter_sig = sig.clone();
        let consumer = Consumer::new(
            parts.streams.clone(),
            config,
            Arc::new(StreamHandler::new(revocations.clone(), sig).with_metrics(metrics.clone())),
        )
        .map_err(|e| ConfigError::invalid("consumer", e.to_string()))?
        .with_clock(parts.clock.clone());
        let consumer_health = consumer.health();
        let guard = EgressGuard::new(settings.egress.clone(), parts.lookup);
        let upstream = upstream_client(&settings, &guard).map_err(GatewayError::Backend)?;
        Ok(Arc::new(Self {
            keys: KeyCache::new(parts.jwks, parts.clock.clone()),
            exchanger: parts.exchanger,
            jti: parts.jti,
            streams: parts.streams,
            snapshot: parts.snapshot,
            revocations,
            breaker: Breaker::new(parts.clock.clone()),
            guard,
            upstream,
            emitter,
            redis: parts.redis,
            consumer: std::sync::Mutex::new(Some(consumer)),
            consumer_health,
            clock: parts.clock,
            ids: parts.ids,
            metrics,
            settings,
        }))
    }

    /// The parts for a Gateway embedded next to an in-process STS (`caracal up`): exchange by
    /// direct call (the STS must hold a `GATEWAY_STS_HMAC_KEY`), JWKS from the STS key ring,
    /// `jti` markers in `ephemeral`, streams and audit on `streams`, and an in-memory snapshot
    /// source (the embedded host feeds revocations through the stream; the STS re-validates
    /// every exchange against its stores anyway).
    pub fn in_process_parts(
        settings: GatewaySettings,
        sts: Arc<Sts>,
        ephemeral: Arc<dyn EphemeralKeys>,
        streams: Arc<dyn Streams>,
        clock: SharedClock,
    ) -> GatewayParts {
        GatewayParts {
            exchanger: Arc::new(InProcessExchanger::new(sts.clone(), clock.clone())),
            jwks: Arc::new(ZoneKeysSource::new(sts.keys().clone())),
            jti: ephemeral,
            streams,
            snapshot: Arc::new(MemorySnapshotSource::new()),
            lookup: Arc::new(SystemLookup),
            redis: Arc::new(AlwaysUp),
            clock,
            ids: Arc::new(UuidV7),
            settings,
        }
    }

    /// [`GatewayService::new`] over [`GatewayService::in_process_parts`].
    pub fn in_process(
        settings: GatewaySettings,
        sts: Arc<Sts>,
        ephemeral: Arc<dyn EphemeralKeys>,
        streams: Arc<dyn Streams>,
        clock: SharedClock,
    ) -> Result<Arc<Self>, GatewayError> {
        Self::new(Self::in_process_parts(
            settings, sts, ephemeral, streams, clock,
        ))
    }

    /// The production parts from `settings`: HTTP exchange and JWKS at `STS_URL`, Redis for
    /// `jti` markers and streams, Postgres for the snapshot (each in memory when unset, which
    /// [`GatewaySettings::check`] refuses in published modes).
    pub async fn connect_parts(settings: GatewaySettings) -> Result<GatewayParts, GatewayError> {
        let clock: SharedClock = Arc::new(SystemClock);
        let Some(sts_url) = settings.sts_url.clone() else {
            return Err(ConfigError::Missing {
                name: "STS_URL".to_owned(),
            }
            .into());
        };
        let client =
            client::http_client(settings.timeouts.connect).map_err(GatewayError::Backend)?;
        let exchanger = Arc::new(HttpExchanger::new(
            client.clone(),
            &sts_url,
            settings.gateway_key.clone(),
            settings.timeouts.sts,
            clock.clone(),
        ));
        let jwks = Arc::new(HttpJwksSource::new(client, &sts_url, settings.timeouts.sts));
        let memory = Arc::new(caracal_core::store::memory::MemoryStore::with_clock(
            clock.clone(),
        ));
        let mut jti: Arc<dyn EphemeralKeys> = memory;
        let mut streams: Arc<dyn Streams> =
            Arc::new(caracal_core::streams::MemoryStreams::new(clock.clone()));
        let mut redis: Arc<dyn Ping> = Arc::new(AlwaysUp);
        if let Some(url) = &settings.redis_url {
            let config = caracal_core::backend::redis::RedisConfig::new(url.expose());
            let s = caracal_core::backend::redis::RedisStreams::connect(&config)
                .map_err(|e| GatewayError::Backend(format!("redis: {e}")))?;
            jti = Arc::new(caracal_core::backend::redis::RedisKeys::new(
                s.pool().clone(),
            ));
            redis = Arc::new(s.clone());
            streams = Arc::new(s);
        }
        let mut snapshot: Arc<dyn SnapshotSource> = Arc::new(MemorySnapshotSource::new());
        if let Some(url) = &settings.database_url {
            let options = caracal_core::backend::postgres::PgStoreOptions {
                application_name: "caracal-gateway".to_owned(),
                ..caracal_core::backend::postgres::PgStoreOptions::default()
            };
            let pg = caracal_core::backend::postgres::PgStore::open(url.expose(), options)
                .await
                .map_err(|e| GatewayError::Backend(format!("postgres: {e}")))?;
            snapshot = Arc::new(PgSnapshotSource::new(pg));
        }
        Ok(GatewayParts {
            settings,
            exchanger,
            jwks,
            jti,
            streams,
            snapshot,
            lookup: Arc::new(SystemLookup),
            redis,
            clock,
            ids: Arc::new(UuidV7),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// The revocation state.
    pub fn revocations(&self) -> &Arc<RevocationState> {
        &self.revocations
    }

    /// The audit emitter.
    pub fn emitter(&self) -> &Arc<AuditEmitter> {
        &self.emitter
    }

    /// The streams.
    pub fn streams(&self) -> &Arc<dyn Streams> {
        &self.streams
    }

    /// The revocation consumer's health (for a host's own readiness).
    pub fn consumer_health(&self) -> &ConsumerHealth {
        &self.consumer_health
    }

    /// What this Gateway counted (the `/metrics` figures).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The STS circuit breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Reload the revocation snapshot now (startup, poller, admin endpoint).
    pub async fn reload_revocations(&self) -> Result<usize, String> {
        let result = self.revocations.reload(self.snapshot.as_ref()).await;
        match &result {
            Ok(_) => Counters::inc(&self.metrics.counters.revocation_reloads),
            Err(e) => {
                Counters::inc(&self.metrics.counters.revocation_reload_errors);
                tracing::warn!(error = %e, "revocation snapshot reload failed");
            }
        }
        result
    }

    fn audit(&self, record: &RequestRecord, evaluation: Evaluation) {
        if let Some(event) = record.to_event(self.ids.next_id(), evaluation, self.clock.now()) {
            self.emitter.emit(event);
        }
    }

    /// Start the revocation consumer (once), the snapshot poller (every 30 s) and the audit
    /// emitter (its flusher replays spill files in the background once Redis answers).
    pub fn spawn_workers(self: &Arc<Self>) -> Workers {
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let consumer = self
            .consumer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(c) = consumer {
            tasks.push(c.spawn(rx.clone()));
        }
        tasks.push(self.emitter.spawn(rx.clone()));
        let this = Arc::clone(self);
        let mut poll_stop = rx;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let _ = tokio::time::timeout(Duration::from_secs(5), this.reload_revocations()).await;
                    }
                    changed = poll_stop.changed() => {
                        if changed.is_err() || *poll_stop.borrow() {
                            break;
                        }
                    }
                }
            }
        }));
        Workers { stop, tasks }
    }

    /// The HTTP surface: operator routes and the proxy.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        routes::router(Arc::clone(self))
    }
}

/// The connection read buffer, which bounds a request head (the reference's 16 KiB of
/// headers; hyper answers 431 beyond it). Bodies stream through it in pieces.
pub const MAX_HEADER_BUFFER: usize = 16 * 1024;

/// Serve `router` on `listener` until `shutdown` resolves; in-flight requests then get
/// `grace`. The server is the one every Caracal service runs
/// (`caracal_service::server::serve_with`: HTTP/1.1, header read deadline, a
/// [`MAX_HEADER_BUFFER`] header cap, the peer address for `X-Forwarded-For`).
pub async fn serve_on(
    listener: TcpListener,
    router: axum::Router,
    read_header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let limits = caracal_service::server::ServerLimits {
        header_read_timeout: read_header_timeout,
        max_header_bytes: MAX_HEADER_BUFFER,
        shutdown_grace: grace,
    };
    caracal_service::server::serve_with(listener, router, shutdown, limits).await
}

/// Run the Gateway from `settings` until `shutdown`: backends, the initial snapshot (fatal),
/// workers, then HTTP on the configured port.
pub async fn serve(
    settings: GatewaySettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let parts = GatewayService::connect_parts(settings).await?;
    let service = GatewayService::new(parts)?;
    run(service, shutdown).await
}

/// Initial snapshot (fatal on failure), workers, listen, drain, stop workers.
pub async fn run(
    service: Arc<GatewayService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    service
        .reload_revocations()
        .await
        .map_err(GatewayError::Snapshot)?;
    let tls = match &service.settings.tls {
        Some((cert, key)) => Some(
            caracal_service::server::tls_config(cert, key)
                .map_err(|e| ConfigError::invalid("TLS_CERT_FILE", e))?,
        ),
        None => None,
    };
    let workers = service.spawn_workers();
    let port = service.settings.port;
    let listener = caracal_service::server::bind(port).await?;
    tracing::info!(port, tls = tls.is_some(), "caracal-gateway listening");
    let limits = caracal_service::server::ServerLimits {
        header_read_timeout: service.settings.timeouts.keep_alive(),
        max_header_bytes: MAX_HEADER_BUFFER,
        shutdown_grace: Duration::from_secs(14),
    };
    let result =
        caracal_service::server::serve_tls_with(listener, service.router(), shutdown, limits, tls)
            .await;
    workers.shutdown(Duration::from_secs(4)).await;
    result.map_err(GatewayError::from)
}
