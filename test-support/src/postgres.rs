//! Ephemeral Postgres clusters.
//!
//! [`EphemeralPostgres::start`] runs `initdb` into a fresh temp dir and starts `postgres` on a
//! free port on 127.0.0.1 with trust authentication and its unix socket inside the temp dir.
//! Tests take a fresh database each ([`EphemeralPostgres::create_database`]); drills that
//! break the server start their own cluster and [`kill`](EphemeralPostgres::kill) /
//! [`restart`](EphemeralPostgres::restart) it. [`shared_postgres`] hands every test of a test
//! binary the same cluster, since `initdb` costs about a second.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio_postgres::{Client, NoTls};

use crate::error::SupportError;
use crate::process::{self, POLL, Watchdog};

/// The bound on a SQL connect made by this crate.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound on a statement this crate runs (`CREATE DATABASE`).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The bound on `initdb`.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// The bound on a graceful stop before falling back to SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Ports tried on the first start when the one picked was taken in the meantime.
const PORT_ATTEMPTS: usize = 3;

/// Where the Postgres server binaries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBins {
    /// The directory holding `initdb`, `postgres` and `pg_isready`.
    pub bindir: PathBuf,
}

impl PgBins {
    /// Find the server binaries: `CARACAL_PG_BINDIR`, then `pg_config --bindir`, then the
    /// newest `/usr/lib/postgresql/<ver>/bin` (Debian keeps them off `PATH`), then `PATH`.
    pub fn discover() -> Result<Self, SupportError> {
        let mut tried = Vec::new();
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::var_os(crate::PG_BINDIR_ENV) {
            candidates.push(PathBuf::from(dir));
        }
        if let Ok(out) = Command::new("pg_config")
            .arg("--bindir")
            .stderr(Stdio::null())
            .output()
        {
            if out.status.success() {
                let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if !dir.is_empty() {
                    candidates.push(PathBuf::from(dir));
                }
            }
        }
        if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
            let mut versions: Vec<(u32, PathBuf)> = entries
                .flatten()
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect();
            versions.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
            candidates.extend(versions.into_iter().map(|(_, p)| p));
        }
        if let Some(initdb) = process::which("initdb") {
            if let Some(dir) = initdb.parent() {
                candidates.push(dir.to_path_buf());
            }
        }
        for dir in candidates {
            let ok = ["initdb", "postgres", "pg_isready"]
                .iter()
                .all(|b| process::is_executable(&dir.join(b)));
            if ok {
                return Ok(Self { bindir: dir });
            }
            tried.push(dir.display().to_string());
        }
        Err(SupportError::BinariesMissing {
            what: "postgres server binaries (initdb, postgres, pg_isready)",
            hint: format!(
                "looked in ${}, `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH \
                 (tried: {}); install them (Debian: `apt-get install postgresql`) or set {}",
                crate::PG_BINDIR_ENV,
                if tried.is_empty() {
                    "nothing found".to_owned()
                } else {
                    tried.join(", ")
                },
                crate::DATABASE_URL_ENV
            ),
        })
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// How an ephemeral cluster runs.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Keep `fsync` and `full_page_writes` on. Off by default for speed: a SIGKILL of the
    /// server still loses no committed row (commits wait for their WAL to reach the kernel),
    /// only a crash of the machine would. Turn it on for drills about machine-level durability.
    pub durable: bool,
    /// How long the server may take to accept connections.
    pub startup_timeout: Duration,
    /// Use `CARACAL_TEST_DATABASE_URL` when set instead of starting a server.
    pub honour_env: bool,
    /// `max_connections` of the cluster.
    pub max_connections: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            durable: false,
            startup_timeout: Duration::from_secs(20),
            honour_env: true,
            max_connections: 200,
        }
    }
}

/// A Postgres server for tests: either one this process started (owned) or the external one
/// named by `CARACAL_TEST_DATABASE_URL`.
pub struct EphemeralPostgres {
    inner: Inner,
}

enum Inner {
    External { url: String },
    Owned(Box<Owned>),
}

struct Owned {
    bins: PgBins,
    opts: PgOptions,
    /// `None` only during `Drop`.
    dir: Option<TempDir>,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    port: u16,
    run_as_postgres: bool,
    /// The spawned server process (`runuser` or `postgres` itself); `None` when stopped.
    server: Mutex<Option<Child>>,
    watchdog: Mutex<Option<Watchdog>>,
}

impl std::fmt::Debug for EphemeralPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::External { .. } => f
                .debug_struct("EphemeralPostgres")
                .field("external", &true)
                .finish_non_exhaustive(),
            Inner::Owned(o) => f
                .debug_struct("EphemeralPostgres")
                .field("port", &o.port)
                .field("data", &o.data)
                .finish_non_exhaustive(),
        }
    }
}

static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

impl EphemeralPostgres {
    /// Start a cluster with the default options (or use `CARACAL_TEST_DATABASE_URL`).
    pub fn start() -> Result<Self, SupportError> {
        Self::start_with(PgOptions::default())
    }

    /// Start a cluster with `opts`.
    pub fn start_with(opts: PgOptions) -> Result<Self, SupportError> {
        if opts.honour_env {
            if let Some(url) = env_url(crate::DATABASE_URL_ENV) {
                return Ok(Self::external(url));
            }
        }
        let bins = PgBins::discover()?;
        Self::start_owned(bins, opts)
    }

    /// Treat the server at `url` as external (what `CARACAL_TEST_DATABASE_URL` does): usable
    /// for databases and queries, but not stopped, killed or restarted by this process.
    pub fn external(url: impl Into<String>) -> Self {
        Self {
            inner: Inner::External { url: url.into() },
        }
    }

    fn start_owned(bins: PgBins, opts: PgOptions) -> Result<Self, SupportError> {
        let dir = tempfile::Builder::new()
            .prefix("caracal-pg-")
            .tempdir_in(process::temp_base())
            .map_err(|e| SupportError::io("create the postgres temp dir", e))?;
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        let sock = root.join("sock");
        let log = root.join("postgres.log");
        fs::create_dir(&sock).map_err(|e| SupportError::io("create the socket dir", e))?;
        // Create the log before handing the tree over, so both users can append to it.
        process::open_log(&log)?;
        let run_as_postgres = process::is_root();
        if run_as_postgres {
            chown_to_postgres(&root)?;
        }

        let mut initdb = command(&bins.bin("initdb"), run_as_postgres);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"]);
        process::run_logged(
            "initdb",
            &mut initdb,
            &root.join("initdb.log"),
            INITDB_TIMEOUT,
        )?;

        let mut owned = Owned {
            bins,
            opts,
            dir: Some(dir),
            data,
            sock,
            log,
            port: 0,
            run_as_postgres,
            server: Mutex::new(None),
            watchdog: Mutex::new(None),
        };
        let guard = owned.data.display().to_string();
        let pid_file = owned.data.join("postmaster.pid").display().to_string();
        let root_str = root.display().to_string();
        *lock(&owned.watchdog) = Some(Watchdog::spawn(
            process::WATCHDOG_SCRIPT,
            &[&pid_file, &guard, "QUIT", &root_str],
        )?);

        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            owned.port = process::free_port()?;
            match owned.spawn_and_wait() {
                Ok(()) => {
                    return Ok(Self {
                        inner: Inner::Owned(Box::new(owned)),
                    });
                }
                Err(e) => {
                    let tail = process::log_tail(&owned.log, 50);
                    let port_taken = tail.contains("could not bind")
                        || tail.contains("Address already in use")
                        || tail.contains("could not create any TCP/IP sockets");
                    last_err = Some(e);
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        // `owned` drops here: stops anything half-started and removes the dir.
        Err(last_err.unwrap_or_else(|| SupportError::Failed {
            what: "start postgres".into(),
            detail: "no attempt was made".into(),
            log_tail: String::new(),
        }))
    }

    /// Whether this is a server named by `CARACAL_TEST_DATABASE_URL` (not owned).
    pub fn is_external(&self) -> bool {
        matches!(self.inner, Inner::External { .. })
    }

    /// The admin URL: `postgres://postgres@127.0.0.1:PORT/postgres` for an owned cluster.
    pub fn url(&self) -> String {
        match &self.inner {
            Inner::External { url } => url.clone(),
            Inner::Owned(o) => o.url_for("postgres"),
        }
    }

    /// The TCP port (`None` for an external server).
    pub fn port(&self) -> Option<u16> {
        match &self.inner {
            Inner::External { .. } => None,
            Inner::Owned(o) => Some(o.port),
        }
    }

    /// The data directory (`None` for an external server).
    pub fn data_dir(&self) -> Option<&Path> {
        match &self.inner {
            Inner::External { .. } => None,
            Inner::Owned(o) => Some(&o.data),
        }
    }

    /// The server log (`None` for an external server).
    pub fn log_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::External { .. } => None,
            Inner::Owned(o) => Some(&o.log),
        }
    }

    /// The PID of the running postmaster (`None` if stopped or external).
    pub fn postmaster_pid(&self) -> Option<u32> {
        match &self.inner {
            Inner::External { .. } => None,
            Inner::Owned(o) => o.postmaster_pid(),
        }
    }

    /// Whether the server is running (always `true` for an external server).
    pub fn is_running(&self) -> bool {
        match &self.inner {
            Inner::External { .. } => true,
            Inner::Owned(o) => lock(&o.server).is_some(),
        }
    }

    /// Create a fresh, uniquely named database and return its URL. The name is `name`
    /// (lowercased, non-alphanumerics as `_`, shortened) plus a unique suffix, so parallel
    /// tests and repeated runs against an external server never collide.
    pub async fn create_database(&self, name: &str) -> Result<String, SupportError> {
        let db = unique_db_name(name);
        let client = connect(&self.url()).await?;
        let create = format!("CREATE DATABASE \"{db}\"");
        tokio::time::timeout(STATEMENT_TIMEOUT, client.batch_execute(&create))
            .await
            .map_err(|_| SupportError::Timeout {
                what: format!("CREATE DATABASE {db}"),
                after: STATEMENT_TIMEOUT,
                log_tail: String::new(),
            })?
            .map_err(|source| SupportError::Sql {
                context: format!("CREATE DATABASE {db}"),
                source,
            })?;
        match &self.inner {
            Inner::External { url } => with_database(url, &db),
            Inner::Owned(o) => Ok(o.url_for(&db)),
        }
    }

    /// Fast shutdown (SIGINT to the postmaster), bounded; falls back to SIGKILL.
    pub fn stop(&self) -> Result<(), SupportError> {
        match &self.inner {
            Inner::External { .. } => Err(SupportError::unsupported_external(
                "stop",
                crate::DATABASE_URL_ENV,
            )),
            Inner::Owned(o) => o.stop("INT"),
        }
    }

    /// SIGKILL the postmaster by PID (and the backends it leaves behind), as a crash would.
    /// The data dir stays; [`restart`](Self::restart) runs crash recovery on it.
    pub fn kill(&self) -> Result<(), SupportError> {
        match &self.inner {
            Inner::External { .. } => Err(SupportError::unsupported_external(
                "kill",
                crate::DATABASE_URL_ENV,
            )),
            Inner::Owned(o) => o.kill(),
        }
    }

    /// Start the server again on the same port and data dir (stopping it first if it runs).
    pub fn restart(&self) -> Result<(), SupportError> {
        match &self.inner {
            Inner::External { .. } => Err(SupportError::unsupported_external(
                "restart",
                crate::DATABASE_URL_ENV,
            )),
            Inner::Owned(o) => {
                if lock(&o.server).is_some() {
                    o.stop("INT")?;
                }
                o.spawn_and_wait()
            }
        }
    }
}

impl Owned {
    fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn postmaster_pid(&self) -> Option<u32> {
        lock(&self.server).as_ref()?;
        let text = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        // The file survives a SIGKILL: only trust a PID that still runs *this* cluster.
        process::cmdline_contains(pid, &self.data.display().to_string()).then_some(pid)
    }

    fn server_args(&self) -> Vec<String> {
        let mut args = vec![
            "-D".to_owned(),
            self.data.display().to_string(),
            "-p".to_owned(),
            self.port.to_string(),
        ];
        let mut set = |k: &str, v: &str| {
            args.push("-c".to_owned());
            args.push(format!("{k}={v}"));
        };
        set("listen_addresses", "127.0.0.1");
        set("unix_socket_directories", &self.sock.display().to_string());
        set("max_connections", &self.opts.max_connections.to_string());
        set("logging_collector", "off");
        if !self.opts.durable {
            // Not `synchronous_commit`: with it off a commit returns before its WAL reaches
            // the kernel, and a SIGKILL drill would lose committed rows.
            set("fsync", "off");
            set("full_page_writes", "off");
        }
        args
    }

    /// Spawn the server and wait until it accepts connections.
    fn spawn_and_wait(&self) -> Result<(), SupportError> {
        use std::os::unix::process::CommandExt;
        let out = process::open_log(&self.log)?;
        let err = out
            .try_clone()
            .map_err(|e| SupportError::io("clone the postgres log handle", e))?;
        let child = command(&self.bins.bin("postgres"), self.run_as_postgres)
            .args(self.server_args())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group: signals aimed at the test run do not reach the server; the
            // watchdog and `Drop` decide how it stops.
            .process_group(0)
            .spawn()
            .map_err(|e| SupportError::io("spawn postgres", e))?;
        *lock(&self.server) = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.kill();
                Err(e)
            }
        }
    }

    fn wait_ready(&self) -> Result<(), SupportError> {
        let timeout = self.opts.startup_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = lock(&self.server).as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(SupportError::Failed {
                        what: format!("postgres on port {}", self.port),
                        detail: format!("exited during startup ({status})"),
                        log_tail: process::log_tail(&self.log, 30),
                    });
                }
            }
            let ready = Command::new(self.bins.bin("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-t", "1", "-p"])
                .arg(self.port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| SupportError::io("run pg_isready", e))?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SupportError::Timeout {
                    what: format!("postgres on port {} to accept connections", self.port),
                    after: timeout,
                    log_tail: process::log_tail(&self.log, 30),
                });
            }
            thread::sleep(POLL * 2);
        }
    }

    /// Graceful stop with `signal` (`INT` fast, `QUIT` immediate), then SIGKILL on overrun.
    fn stop(&self, signal: &str) -> Result<(), SupportError> {
        let Some(pid) = self.postmaster_pid() else {
            // Not running, or it never wrote its pid file: make sure the child is gone.
            return self.reap_server(Duration::from_secs(5));
        };
        process::signal(pid, signal)?;
        let exited = {
            let mut server = lock(&self.server);
            match server.as_mut() {
                Some(child) => process::wait_child(child, STOP_TIMEOUT)?.is_some(),
                None => true,
            }
        };
        if exited {
            *lock(&self.server) = None;
            Ok(())
        } else {
            self.kill()?;
            Err(SupportError::Timeout {
                what: format!("postgres (pid {pid}) to stop on SIG{signal}; it was SIGKILLed"),
                after: STOP_TIMEOUT,
                log_tail: process::log_tail(&self.log, 30),
            })
        }
    }

    fn kill(&self) -> Result<(), SupportError> {
        if let Some(pid) = self.postmaster_pid() {
            let backends = process::children_of(pid);
            process::signal(pid, "KILL")?;
            for backend in &backends {
                let _ = process::signal(*backend, "KILL");
            }
            for backend in backends {
                process::wait_pid_gone(backend, Duration::from_secs(10));
            }
        }
        self.reap_server(Duration::from_secs(10))
    }

    /// Wait for the spawned process to exit (killing it past `timeout`) and forget it.
    fn reap_server(&self, timeout: Duration) -> Result<(), SupportError> {
        let mut server = lock(&self.server);
        if let Some(child) = server.as_mut() {
            if process::wait_child(child, timeout)?.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        *server = None;
        Ok(())
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if lock(&self.server).is_some() {
            // Immediate shutdown: the data is thrown away anyway.
            let _ = self.stop("QUIT");
        }
        if let Some(w) = lock(&self.watchdog).take() {
            w.disarm();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// The per-test-binary shared cluster, started on first use and kept for the life of the
/// test process; each test takes its own database on it. It is never dropped: when the test
/// process exits, the watchdog stops the server and removes its directory. Never stop, kill
/// or restart the shared cluster; drills start their own.
pub fn shared_postgres() -> Result<&'static EphemeralPostgres, SupportError> {
    static SHARED: OnceLock<Result<EphemeralPostgres, SupportError>> = OnceLock::new();
    match SHARED.get_or_init(EphemeralPostgres::start) {
        Ok(pg) => Ok(pg),
        Err(e) => Err(e.replay()),
    }
}

/// Connect to `url` without TLS, bounded by a 10 s connect timeout; the connection task runs
/// on the current tokio runtime.
pub async fn connect(url: &str) -> Result<Client, SupportError> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| SupportError::Timeout {
            what: format!("connect to {}", redact(url)),
            after: CONNECT_TIMEOUT,
            log_tail: String::new(),
        })?
        .map_err(|source| SupportError::Sql {
            context: format!("connect to {}", redact(url)),
            source,
        })?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped or the server goes away; either is
        // visible to the test through the client.
        let _ = connection.await;
    });
    Ok(client)
}

/// A unique, safe database name derived from `name`.
fn unique_db_name(name: &str) -> String {
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if base.is_empty() || !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base.insert_str(0, "t_");
    }
    let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let suffix = format!("_{}_{n}_{nanos:x}", std::process::id());
    // Identifiers are at most 63 bytes.
    base.truncate(63 - suffix.len());
    base + &suffix
}

/// `url` with its database replaced by `db` (URL or `key=value` form).
fn with_database(url: &str, db: &str) -> Result<String, SupportError> {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (before_query, query) = match rest.find('?') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let authority = match before_query.find('/') {
                Some(i) => &before_query[..i],
                None => before_query,
            };
            return Ok(format!("{scheme}{authority}/{db}{query}"));
        }
    }
    if url.contains('=') {
        return Ok(format!("{url} dbname={db}"));
    }
    Err(SupportError::Invalid {
        what: "database URL",
        reason: "expected postgres://... or key=value form".into(),
    })
}

/// `url` with any password replaced by `***`, for messages.
pub(crate) fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn env_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// A command for a Postgres binary, run as the `postgres` user when we are root.
fn command(bin: &Path, run_as_postgres: bool) -> Command {
    if run_as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// Give the temp tree to the `postgres` system user (we are root).
fn chown_to_postgres(root: &Path) -> Result<(), SupportError> {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(root)
        .status()
        .map_err(|e| SupportError::io("run chown", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(SupportError::Failed {
            what: format!("chown -R postgres:postgres {}", root.display()),
            detail: format!("{status}; is there a `postgres` system user?"),
            log_tail: String::new(),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_unique_and_bounded() {
        let a = unique_db_name("My Test!");
        let b = unique_db_name("My Test!");
        assert_ne!(a, b);
        assert!(a.starts_with("my_test_"));
        let long = unique_db_name(&"x".repeat(200));
        assert!(long.len() <= 63);
        assert!(unique_db_name("9lives").starts_with("t_9lives"));
    }

    #[test]
    fn database_urls_are_rewritten() {
        assert_eq!(
            with_database("postgres://u:p@h:1/old?sslmode=disable", "new").unwrap(),
            "postgres://u:p@h:1/new?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://h", "n").unwrap(),
            "postgresql://h/n"
        );
        assert_eq!(
            with_database("host=h user=u", "n").unwrap(),
            "host=h user=u dbname=n"
        );
        assert!(with_database("nonsense", "n").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("host=h password=x"), "host=h password=***");
    }
}
