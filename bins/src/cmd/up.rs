//! `caracal up`: every service in one process.
//!
//! The STS (8080), the Gateway (8081), the Coordinator (4000), the Admin API (3000) and the
//! Audit service (9090), in dev mode, sharing one store and one stream bus: what the Admin
//! API creates the STS serves, the Coordinator verifies the STS's session mandates with the
//! same key ring, the Gateway calls the STS's exchange in-process (same checks and audit, no
//! HTTP hop), the Coordinator's background jobs run, and every decision is ingested into the
//! audit chain.
//!
//! The embedded default is an in-memory store and in-process streams: no Postgres or Redis
//! needed. With `--database-url` and `--redis-url` (or `DATABASE_URL` / `REDIS_URL`) it
//! migrates Postgres, provisions the stream groups on Redis and runs every service on them;
//! the development keys (KEK, stream, audit and Gateway HMAC keys) are then generated once into
//! `<data-dir>/dev-keys.json` (0600) so state written by one run is readable by the next.
//!
//! `up` prints the URLs and the bootstrap admin token (`CARACAL_BOOTSTRAP_ADMIN_TOKEN` when
//! set, otherwise generated and written to `<data-dir>/bootstrap-admin-token` with mode 0600),
//! which in `up` also opens the Audit service's admin routes and the Coordinator's operator
//! routes,
//! waits until each service is ready, and stops cleanly on Ctrl-C or SIGTERM.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use caracal_audit::{AuditConfig, AuditService};
use caracal_core::clock::{SharedClock, SystemClock};
use caracal_core::store::memory::MemoryStore;
use caracal_core::streams::MemoryStreams;
use caracal_sts::{StsBackends, StsService, StsSettings};
use clap::Args;

use super::CmdError;

/// Arguments of `caracal up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Added to every service port (8080, 8081, 4000, 3000, 9090), to run beside another
    /// instance.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Where the STS keeps its audit replay files (created 0700).
    #[arg(long, env = "CARACAL_DATA_DIR", default_value = ".caracal")]
    pub data_dir: PathBuf,
    /// The STS issuer (`iss` of every mandate); defaults to the STS's local URL.
    #[arg(long, env = "ISSUER_URL")]
    pub issuer: Option<String>,
    /// The Admin API bootstrap token (at least 32 characters); generated when unset.
    #[arg(long, env = "CARACAL_BOOTSTRAP_ADMIN_TOKEN", hide_env_values = true)]
    pub bootstrap_admin_token: Option<String>,
    /// Run on Postgres at this URL instead of the in-memory store (with --redis-url);
    /// migrated first.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Run on Redis at this URL instead of the in-process streams (with --database-url);
    /// groups provisioned first.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// The STS's delegated-mint limit per (zone, resource, application) per minute; a load
    /// run (`caracal bench`) raises it.
    #[arg(long, env = "STS_MINT_RATE_LIMIT_PER_MIN", default_value_t = caracal_core::exchange::ratelimit::DEFAULT_MINT_LIMIT_PER_MIN)]
    pub mint_limit_per_min: u32,
    /// The Coordinator's requests per minute per client address (the reference's 600); a load
    /// run raises it.
    #[arg(long, env = "COORDINATOR_RATE_LIMIT_PER_MIN", default_value_t = caracal_control::coordinator::GLOBAL_LIMIT_PER_MIN)]
    pub coordinator_limit_per_min: u32,
}

/// The development keys of a durable `caracal up` (Postgres and Redis outlive the process, so
/// the KEK that seals secrets and the HMAC keys must too): generated once into
/// `<data_dir>/dev-keys.json` (0600) and reused. The in-memory default generates fresh ones.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct DevKeys {
    kek: String,
    streams: String,
    audit: String,
    gateway: String,
    receipts: String,
}

impl DevKeys {
    fn generate() -> Result<Self, CmdError> {
        let hex = || {
            caracal_core::secrets::envelope::Kek::generate_hex()
                .map_err(|e| CmdError::Config(e.to_string()))
        };
        Ok(Self {
            kek: hex()?,
            streams: hex()?,
            audit: hex()?,
            gateway: hex()?,
            receipts: hex()?,
        })
    }

    fn load_or_create(data_dir: &std::path::Path) -> Result<Self, CmdError> {
        let path = data_dir.join("dev-keys.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).map_err(|e| {
                CmdError::Config(format!("{} is not a dev key file: {e}", path.display()))
            });
        }
        let keys = Self::generate()?;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| CmdError::Config(format!("cannot create {}: {e}", data_dir.display())))?;
        let text =
            serde_json::to_string_pretty(&keys).map_err(|e| CmdError::Config(e.to_string()))?;
        write_private(&path, &text)
            .map_err(|e| CmdError::Config(format!("cannot write {}: {e}", path.display())))?;
        Ok(keys)
    }
}

/// Where `up` keeps its state.
enum Backing {
    /// The embedded default.
    Memory,
    /// Postgres and Redis at these URLs.
    Durable {
        database_url: String,
        redis_url: String,
    },
}

impl Backing {
    fn of(args: &UpArgs) -> Result<Self, CmdError> {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        match (set(&args.database_url), set(&args.redis_url)) {
            (None, None) => Ok(Self::Memory),
            (Some(database_url), Some(redis_url)) => Ok(Self::Durable {
                database_url,
                redis_url,
            }),
            (Some(_), None) => Err(CmdError::Config(
                "--database-url needs --redis-url too (REDIS_URL): the services share both"
                    .to_owned(),
            )),
            (None, Some(_)) => Err(CmdError::Config(
                "--redis-url needs --database-url too (DATABASE_URL): the services share both"
                    .to_owned(),
            )),
        }
    }
}

/// The bootstrap admin token: the given one, or a fresh one written to
/// `<data_dir>/bootstrap-admin-token` (0600) so a later `up` on the same directory reuses it.
fn bootstrap_token(args: &UpArgs) -> Result<String, CmdError> {
    if let Some(t) = &args.bootstrap_admin_token {
        if t.len() < 32 {
            return Err(CmdError::Config(
                "CARACAL_BOOTSTRAP_ADMIN_TOKEN must be at least 32 characters".to_owned(),
            ));
        }
        return Ok(t.clone());
    }
    let path = args.data_dir.join("bootstrap-admin-token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let t = existing.trim().to_owned();
        if t.len() >= 32 {
            return Ok(t);
        }
    }
    let token = caracal_core::secrets::client_secret::generate_admin_token()
        .map_err(|e| CmdError::Config(e.to_string()))?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| CmdError::Config(format!("cannot create {}: {e}", args.data_dir.display())))?;
    write_private(&path, &token)
        .map_err(|e| CmdError::Config(format!("cannot write {}: {e}", path.display())))?;
    Ok(token)
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// The services of `up`, with their reference ports and whether this build runs them.
pub const SERVICES: &[(&str, u16, &str, bool)] = &[
    ("STS", 8080, "token exchange, JWKS, approvals", true),
    ("Gateway", 8081, "mandate-verifying reverse proxy", true),
    ("Coordinator", 4000, "sessions and delegation", true),
    (
        "Admin API",
        3000,
        "zones, applications, resources, providers, policies, approvals",
        true,
    ),
    ("Audit", 9090, "ingest, search, chain verification", true),
];

fn port(base: u16, offset: u16) -> Result<u16, CmdError> {
    base.checked_add(offset).ok_or_else(|| {
        CmdError::Config(format!(
            "--port-offset {offset} moves port {base} past 65535"
        ))
    })
}

/// The banner printed once the services are up.
pub fn banner(offset: u16, durable: bool) -> Result<String, CmdError> {
    let mut out = String::from(if durable {
        "caracal up (dev mode, on Postgres and Redis)\n"
    } else {
        "caracal up (dev mode, embedded in-memory store and streams)\n"
    });
    for (name, base, what, running) in SERVICES {
        let p = port(*base, offset)?;
        if *running {
            out.push_str(&format!("  {name:<12} http://127.0.0.1:{p:<5} {what}\n"));
        } else {
            out.push_str(&format!("  {name:<12} (not yet available in this build)\n"));
        }
    }
    out.push_str("Ctrl-C stops every service.\n");
    Ok(out)
}

/// Run until Ctrl-C / SIGTERM.
pub fn run(args: &UpArgs) -> Result<(), CmdError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CmdError::Runtime)?
        .block_on(serve(
            args,
            caracal_service::server::shutdown_signal(),
            |b| print!("{b}"),
        ))
}

/// Run until `shutdown` resolves; `ready` receives the banner once every service answers
/// ready (tests drive this directly).
pub async fn serve(
    args: &UpArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(&str),
) -> Result<(), CmdError> {
    let clock: SharedClock = Arc::new(SystemClock);
    let backing = Backing::of(args)?;
    let sts_port = port(8080, args.port_offset)?;
    let audit_port = port(9090, args.port_offset)?;
    let admin_port = port(3000, args.port_offset)?;
    let coordinator_port = port(4000, args.port_offset)?;
    let gateway_port = port(8081, args.port_offset)?;
    let token = bootstrap_token(args)?;
    let issuer = args
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{sts_port}"));
    let replay = args.data_dir.join("audit-replay");
    let mut settings =
        StsSettings::dev(issuer.clone(), replay).map_err(|e| CmdError::Config(e.to_string()))?;
    settings.port = sts_port;
    if args.mint_limit_per_min == 0 {
        return Err(CmdError::Config(
            "--mint-limit-per-min (STS_MINT_RATE_LIMIT_PER_MIN) must be at least 1".to_owned(),
        ));
    }
    settings.mint_limit_per_min = args.mint_limit_per_min;
    let mut audit_config = AuditConfig::dev();
    // The Audit service's admin routes (search, DLQ, verify) take the bootstrap admin token.
    audit_config.admin_token = Some(caracal_service::config::Secret::new(token.clone()));
    // Dev mode: the Gateway may reach loopback upstreams (the demo's echo server); private
    // and CGNAT ranges stay refused.
    let mut gateway_settings =
        caracal_gateway::GatewaySettings::dev(args.data_dir.join("gateway-audit-replay"));
    gateway_settings.port = gateway_port;
    let ids: caracal_core::ids::SharedIdGen = Arc::new(caracal_core::ids::UuidV7);

    let stack = match &backing {
        Backing::Memory => {
            let store = Arc::new(MemoryStore::with_clock(clock.clone()));
            let streams = Arc::new(MemoryStreams::new(clock.clone()));
            // The groups exist before anything consumes, as `caracal streams provision` makes
            // them on Redis.
            caracal_core::streams::provision::provision(&*streams)
                .await
                .map_err(|e| CmdError::Config(format!("provisioning the streams: {e}")))?;
            // One fresh audit key: producers sign events with it, the ledger links the chain
            // with it, and the admin audit chain uses it too.
            let audit_key = caracal_core::audit::AuditHmacKey::from_hex(
                &caracal_core::secrets::envelope::Kek::generate_hex()
                    .map_err(|e| CmdError::Config(e.to_string()))?,
            )
            .map_err(|e| CmdError::Config(e.to_string()))?;
            audit_config.hmac_key = Some(audit_key.clone());
            settings.audit_key = Some(audit_key.clone());
            gateway_settings.audit_key = Some(audit_key.clone());
            let audit = AuditService::new(
                audit_config,
                caracal_audit::Backends::on_memory_store(streams.clone(), store.clone()),
            )
            .map_err(|e| CmdError::Config(e.to_string()))?;
            let receipt_key = caracal_core::secrets::envelope::Kek::generate_hex()
                .map_err(|e| CmdError::Config(e.to_string()))?;
            // The in-process Gateway signs its exchanges like a remote one, so the STS needs
            // the Gateway key (a fresh one: both live in this process only).
            let gateway_key = caracal_core::exchange::envelope::GatewayKey::from_hex(
                &caracal_core::secrets::envelope::Kek::generate_hex()
                    .map_err(|e| CmdError::Config(e.to_string()))?,
            )
            .map_err(|e| CmdError::Config(e.to_string()))?;
            settings.gateway_key = Some(gateway_key.clone());
            gateway_settings.gateway_key = Some(gateway_key);
            let keyring = settings.keyring.clone();
            let sts = StsService::new(
                settings,
                StsBackends::memory(store.clone(), streams.clone()),
            )
            .map_err(|e| CmdError::Config(e.to_string()))?;
            let gateway = caracal_gateway::GatewayService::in_process(
                gateway_settings,
                Arc::clone(sts.sts()),
                store.clone(),
                streams,
                clock.clone(),
            )
            .map_err(|e| CmdError::Config(e.to_string()))?;
            Stack::build(
                store,
                Arc::new(caracal_core::store::memory::MemoryLeaderLock::new()),
                sts,
                gateway,
                audit,
                keyring,
                receipt_key,
                audit_key,
                args.coordinator_limit_per_min,
                &token,
                issuer,
                clock.clone(),
                ids,
            )
        }
        Backing::Durable {
            database_url,
            redis_url,
        } => {
            let keys = DevKeys::load_or_create(&args.data_dir)?;
            super::migrate::migrate_url(database_url).await?;
            let redis = caracal_core::backend::redis::RedisStreams::connect(
                &caracal_core::backend::redis::RedisConfig::new(redis_url),
            )
            .map_err(|e| CmdError::Connect {
                url: super::migrate::redact(redis_url),
                reason: e.to_string(),
            })?;
            caracal_core::streams::provision::provision(&redis)
                .await
                .map_err(|e| CmdError::Connect {
                    url: super::migrate::redact(redis_url),
                    reason: format!("provisioning the stream groups failed: {e}"),
                })?;
            let secret = |v: &str| Some(caracal_service::config::Secret::new(v.to_owned()));
            let bad_key = |what: &str, e: String| CmdError::Config(format!("dev key {what}: {e}"));
            settings.keyring = Arc::new(
                caracal_core::secrets::Keyring::from_hex(&keys.kek, None)
                    .map_err(|e| bad_key("kek", e.to_string()))?,
            );
            settings.streams_key =
                Some(hex::decode(&keys.streams).map_err(|e| bad_key("streams", e.to_string()))?);
            let audit_key = caracal_core::audit::AuditHmacKey::from_hex(&keys.audit)
                .map_err(|e| bad_key("audit", e.to_string()))?;
            settings.audit_key = Some(audit_key.clone());
            let admin_audit_key = audit_key.clone();
            let gateway_key = caracal_core::exchange::envelope::GatewayKey::from_hex(&keys.gateway)
                .map_err(|e| bad_key("gateway", e.to_string()))?;
            settings.gateway_key = Some(gateway_key.clone());
            gateway_settings.gateway_key = Some(gateway_key);
            gateway_settings.streams_key = settings.streams_key.clone();
            gateway_settings.audit_key = settings.audit_key.clone();
            settings.database_url = secret(database_url);
            settings.redis_url = secret(redis_url);
            audit_config.hmac_key = Some(audit_key);
            audit_config.database_url = secret(database_url);
            audit_config.redis_url = secret(redis_url);
            let connect_error = |e: String| CmdError::Connect {
                url: super::migrate::redact(database_url),
                reason: e,
            };
            let audit_backends = caracal_audit::Backends::connect(&audit_config)
                .await
                .map_err(|e| connect_error(e.to_string()))?;
            let audit = AuditService::new(audit_config, audit_backends)
                .map_err(|e| CmdError::Config(e.to_string()))?;
            let sts_backends = StsBackends::connect(&settings, clock.clone())
                .await
                .map_err(|e| connect_error(e.to_string()))?;
            let keyring = settings.keyring.clone();
            let sts = StsService::new(settings, sts_backends)
                .map_err(|e| CmdError::Config(e.to_string()))?;
            let pg = caracal_core::backend::postgres::PgStore::open(
                database_url,
                caracal_core::backend::postgres::PgStoreOptions {
                    application_name: "caracal-up".to_owned(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| connect_error(e.to_string()))?;
            let leader = Arc::new(caracal_core::backend::postgres::PgLeaderLock::new(
                pg.clone(),
            ));
            // The Gateway: in-process exchange, jti markers and streams on Redis, the
            // revocation snapshot from Postgres.
            let mut parts = caracal_gateway::GatewayService::in_process_parts(
                gateway_settings,
                Arc::clone(sts.sts()),
                Arc::new(caracal_core::backend::redis::RedisKeys::new(
                    redis.pool().clone(),
                )),
                Arc::new(redis.clone()),
                clock.clone(),
            );
            parts.snapshot = Arc::new(caracal_gateway::revocation::PgSnapshotSource::new(
                pg.clone(),
            ));
            parts.redis = Arc::new(redis.clone());
            let gateway = caracal_gateway::GatewayService::new(parts)
                .map_err(|e| CmdError::Config(e.to_string()))?;
            Stack::build(
                Arc::new(pg),
                leader,
                sts,
                gateway,
                audit,
                keyring,
                keys.receipts,
                admin_audit_key,
                args.coordinator_limit_per_min,
                &token,
                issuer,
                clock.clone(),
                ids,
            )
        }
    };
    let Stack {
        sts,
        gateway,
        audit,
        admin,
        coordinator,
        jobs,
    } = stack;

    let audit_workers = audit.spawn_workers();
    let sts_workers = sts.spawn_workers();
    gateway
        .reload_revocations()
        .await
        .map_err(|e| CmdError::Config(format!("the Gateway's revocation snapshot: {e}")))?;
    let gateway_workers = gateway.spawn_workers();
    let (jobs_stop, jobs_rx) = tokio::sync::watch::channel(false);
    let jobs = jobs.spawn(jobs_rx);
    let bind = |p: u16| async move {
        caracal_service::server::bind(p)
            .await
            .map_err(|e| CmdError::Config(format!("cannot listen on port {p}: {e}")))
    };
    let sts_listener = bind(sts_port).await?;
    let audit_listener = bind(audit_port).await?;
    let admin_listener = bind(admin_port).await?;
    let coordinator_listener = bind(coordinator_port).await?;
    let gateway_listener = bind(gateway_port).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let sts_server = tokio::spawn(caracal_service::server::serve(
        sts_listener,
        sts.router(),
        stopped(stop_rx.clone()),
    ));
    let audit_server = tokio::spawn(caracal_service::server::serve(
        audit_listener,
        audit.router(),
        stopped(stop_rx.clone()),
    ));
    let admin_server = tokio::spawn(caracal_service::server::serve(
        admin_listener,
        admin.router(),
        stopped(stop_rx.clone()),
    ));
    let coordinator_server = tokio::spawn(caracal_service::server::serve(
        coordinator_listener,
        coordinator.router(),
        stopped(stop_rx.clone()),
    ));
    let gateway_server = tokio::spawn(caracal_gateway::serve_on(
        gateway_listener,
        gateway.router(),
        gateway.settings().timeouts.keep_alive(),
        stopped(stop_rx),
        caracal_service::server::SHUTDOWN_GRACE,
    ));

    // Readiness: the STS's consumers have joined their groups, the audit consumer reads and
    // the Gateway's revocation snapshot is fresh.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sts_ready = caracal_sts::routes::readiness(&sts).await.is_ok();
        let audit_ready = audit.consumer_health().is_healthy();
        let gateway_ready = caracal_gateway::routes::readiness(&gateway).await.is_ok();
        if sts_ready && audit_ready && gateway_ready {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = stop_tx.send(true);
            return Err(CmdError::Config(
                "services did not become ready within 30 s".to_owned(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut text = banner(args.port_offset, matches!(backing, Backing::Durable { .. }))?;
    text.push_str(&format!(
        "Bootstrap admin token (Authorization: Bearer ...): {token}\n"
    ));
    ready(&text);

    shutdown.await;
    let _ = stop_tx.send(true);
    let grace = caracal_service::server::SHUTDOWN_GRACE;
    for server in [
        sts_server,
        audit_server,
        admin_server,
        coordinator_server,
        gateway_server,
    ] {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(grace, server).await {
            tracing::warn!(error = %e, "a server stopped with an error");
        }
    }
    let _ = jobs_stop.send(true);
    let _ = tokio::time::timeout(grace, jobs.join()).await;
    gateway_workers.shutdown(grace).await;
    sts_workers.shutdown(grace).await;
    audit_workers.shutdown(grace).await;
    Ok(())
}

/// The services of one `up`, built over one store.
struct Stack {
    sts: Arc<StsService>,
    gateway: Arc<caracal_gateway::GatewayService>,
    audit: Arc<AuditService>,
    admin: Arc<caracal_control::AdminApi>,
    coordinator: Arc<caracal_control::CoordinatorApi>,
    jobs: caracal_core::jobs::JobRunner,
}

impl Stack {
    /// Wire the Admin API, the Coordinator and its background jobs over `store`, beside the
    /// STS and Audit services built on the same backing: what the Admin API creates the STS
    /// serves, and the Coordinator verifies the STS's session mandates with its key ring.
    #[allow(clippy::too_many_arguments)]
    fn build<S>(
        store: Arc<S>,
        leader: Arc<dyn caracal_core::store::leader::LeaderLock>,
        sts: Arc<StsService>,
        gateway: Arc<caracal_gateway::GatewayService>,
        audit: Arc<AuditService>,
        keyring: Arc<caracal_core::secrets::Keyring>,
        receipt_key: String,
        admin_audit_key: caracal_core::audit::AuditHmacKey,
        coordinator_limit_per_min: u32,
        token: &str,
        issuer: String,
        clock: SharedClock,
        ids: caracal_core::ids::SharedIdGen,
    ) -> Self
    where
        S: caracal_core::store::directory::ZoneStore
            + caracal_core::store::directory::ApplicationStore
            + caracal_core::store::directory::ResourceStore
            + caracal_core::store::directory::ProviderStore
            + caracal_core::store::directory::SecretStore
            + caracal_core::store::directory::AdminTokenStore
            + caracal_core::store::policy::PolicyStore
            + caracal_core::store::approvals::ApprovalStore
            + caracal_core::store::authority::AuthorityStore
            + caracal_core::store::outbox::OutboxStore
            + caracal_core::store::coordinator::CoordinatorStore
            + caracal_core::store::admin_audit::AdminAuditStore
            + 'static,
    {
        // One admin audit key for both APIs: they append to the same per-zone chains.
        let mut coordinator_settings = caracal_control::CoordinatorSettings::new(issuer);
        coordinator_settings.limit_per_min = coordinator_limit_per_min;
        // Dev convenience: the bootstrap admin token is also the Coordinator's operator token
        // (its allowlisted routes: lists, detail, suspend/resume/terminate, revoke, requeue).
        coordinator_settings.operator_token =
            Some(caracal_service::config::Secret::new(token.to_owned()));
        coordinator_settings.audit_key = Some(admin_audit_key.clone());
        let coordinator = caracal_control::CoordinatorApi::new(
            store.clone(),
            Arc::clone(sts.sts().keys()),
            caracal_core::coordinator::IdempotencyKeys::new(receipt_key.into_bytes(), None),
            coordinator_settings,
            clock.clone(),
            ids.clone(),
        );
        // Operator decisions wake the STS long polls and reach the STS audit emitter.
        let plane = caracal_control::admin::ApprovalPlane {
            waiters: Arc::clone(sts.sts().waiters()),
            audit: Arc::clone(sts.sts().audit()),
        };
        let admin = caracal_control::AdminApi::from_parts(caracal_control::admin::AdminParts {
            stores: caracal_control::AdminStores::from_store(store.clone()),
            keyring,
            bootstrap: Some(caracal_service::config::Secret::new(token.to_owned())),
            clock: clock.clone(),
            ids: ids.clone(),
            plane,
            audit_key: Some(admin_audit_key),
        });
        let core = caracal_core::coordinator::Coordinator::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            ids,
        );
        let jobs = caracal_core::jobs::JobRunner::new(
            core,
            store,
            leader,
            clock,
            caracal_core::jobs::JobsConfig::default(),
        );
        Self {
            sts,
            gateway,
            audit,
            admin,
            coordinator,
            jobs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_names_the_running_services_and_the_missing_ones() {
        let b = banner(100, false).unwrap();
        assert!(b.contains("http://127.0.0.1:8180"));
        assert!(b.contains("http://127.0.0.1:8181"));
        assert!(b.contains("in-memory"));
        assert!(banner(0, true).unwrap().contains("Postgres and Redis"));
        assert!(b.contains("http://127.0.0.1:9190"));
        assert!(b.contains("http://127.0.0.1:3100"));
        assert!(b.contains("http://127.0.0.1:4100"));
        assert!(!b.contains("not yet available"));
        assert!(banner(60_000, false).is_err());
    }
}
