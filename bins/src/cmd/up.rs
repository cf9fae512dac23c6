//! `caracal up`: the services in one process on the embedded default.
//!
//! Today that is the STS, the Admin API, the Coordinator and the Audit service, in dev mode, sharing one
//! in-memory store and one in-process stream bus, so what the Admin API creates the STS
//! serves, the Coordinator verifies the STS's session mandates with the same key ring, and every
//! decision the STS makes is ingested into the audit chain. The Gateway joins when it lands
//! (listed as "not yet available"). No Postgres or Redis is
//! needed. `up` prints the URLs and the bootstrap admin token (`CARACAL_BOOTSTRAP_ADMIN_TOKEN`
//! when set, otherwise generated and written to `<data-dir>/bootstrap-admin-token` with mode
//! 0600), waits until each service is ready, and stops cleanly on Ctrl-C or SIGTERM.

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
    ("Gateway", 8081, "mandate-verifying reverse proxy", false),
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
pub fn banner(offset: u16) -> Result<String, CmdError> {
    let mut out = String::from("caracal up (dev mode, embedded in-memory store and streams)\n");
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
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let streams = Arc::new(MemoryStreams::new(clock.clone()));
    let sts_port = port(8080, args.port_offset)?;
    let audit_port = port(9090, args.port_offset)?;
    let admin_port = port(3000, args.port_offset)?;
    let coordinator_port = port(4000, args.port_offset)?;
    let token = bootstrap_token(args)?;

    let audit = AuditService::new(
        AuditConfig::dev(),
        caracal_audit::Backends::on_memory_store(streams.clone(), store.clone()),
    )
    .map_err(|e| CmdError::Config(e.to_string()))?;
    let issuer = args
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{sts_port}"));
    let replay = args.data_dir.join("audit-replay");
    let mut settings =
        StsSettings::dev(issuer.clone(), replay).map_err(|e| CmdError::Config(e.to_string()))?;
    settings.port = sts_port;
    let keyring = settings.keyring.clone();
    let admin_stores = caracal_control::AdminStores::from_store(store.clone());
    let coordinator_store = store.clone();
    let sts = StsService::new(settings, StsBackends::memory(store, streams))
        .map_err(|e| CmdError::Config(e.to_string()))?;
    // The Coordinator verifies session mandates with the STS's own key ring. Receipts of
    // Idempotency-Key are keyed by an HMAC key that lives as long as this in-memory store.
    let receipt_key = caracal_core::secrets::envelope::Kek::generate_hex()
        .map_err(|e| CmdError::Config(e.to_string()))?;
    let coordinator = caracal_control::CoordinatorApi::new(
        coordinator_store,
        Arc::clone(sts.sts().keys()),
        caracal_core::coordinator::IdempotencyKeys::new(receipt_key.into_bytes(), None),
        caracal_control::CoordinatorSettings::new(issuer),
        clock.clone(),
        Arc::new(caracal_core::ids::UuidV7),
    );
    // Operator decisions wake the STS long polls and reach the STS audit emitter.
    let plane = caracal_control::admin::ApprovalPlane {
        waiters: Arc::clone(sts.sts().waiters()),
        audit: Arc::clone(sts.sts().audit()),
    };
    let admin = caracal_control::AdminApi::with_plane(
        admin_stores,
        keyring,
        Some(caracal_service::config::Secret::new(token.clone())),
        clock.clone(),
        Arc::new(caracal_core::ids::UuidV7),
        plane,
    );

    let audit_workers = audit.spawn_workers();
    let sts_workers = sts.spawn_workers();
    let bind = |p: u16| async move {
        caracal_service::server::bind(p)
            .await
            .map_err(|e| CmdError::Config(format!("cannot listen on port {p}: {e}")))
    };
    let sts_listener = bind(sts_port).await?;
    let audit_listener = bind(audit_port).await?;
    let admin_listener = bind(admin_port).await?;
    let coordinator_listener = bind(coordinator_port).await?;

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
        stopped(stop_rx),
    ));

    // Readiness: the STS's consumers have joined their groups and the audit consumer reads.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sts_ready = caracal_sts::routes::readiness(&sts).await.is_ok();
        let audit_ready = audit.consumer_health().is_healthy();
        if sts_ready && audit_ready {
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
    let mut text = banner(args.port_offset)?;
    text.push_str(&format!(
        "Bootstrap admin token (Authorization: Bearer ...): {token}\n"
    ));
    ready(&text);

    shutdown.await;
    let _ = stop_tx.send(true);
    let grace = caracal_service::server::SHUTDOWN_GRACE;
    for server in [sts_server, audit_server, admin_server, coordinator_server] {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(grace, server).await {
            tracing::warn!(error = %e, "a server stopped with an error");
        }
    }
    sts_workers.shutdown(grace).await;
    audit_workers.shutdown(grace).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_names_the_running_services_and_the_missing_ones() {
        let b = banner(100).unwrap();
        assert!(b.contains("http://127.0.0.1:8180"));
        assert!(b.contains("http://127.0.0.1:9190"));
        assert!(b.contains("http://127.0.0.1:3100"));
        assert!(b.contains("http://127.0.0.1:4100"));
        assert!(b.contains("Gateway") && b.contains("not yet available"));
        assert!(banner(60_000).is_err());
    }
}
