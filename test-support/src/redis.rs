//! Ephemeral Redis servers.
//!
//! [`EphemeralRedis::start`] runs `redis-server` in the foreground as a child of this process,
//! on a free port on 127.0.0.1, in a temp dir, with the production persistence settings that
//! matter for drills (`appendonly yes`, `appendfsync everysec`, no RDB snapshots,
//! `maxmemory-policy noeviction`). [`kill`](EphemeralRedis::kill) is a SIGKILL;
//! [`restart`](EphemeralRedis::restart) starts it again on the same port and dir, so the AOF
//! is reloaded.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::SupportError;
use crate::process::{self, POLL, Watchdog};
use crate::resp::{self, RespValue};

/// The bound on one probe or helper command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound on a graceful stop before falling back to SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports tried on the first start.
const PORT_ATTEMPTS: usize = 3;

/// How an ephemeral Redis runs.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `appendfsync` (`everysec` like production; `always` for drills that must not lose the
    /// last second to a machine crash).
    pub appendfsync: String,
    /// How long the server may take to answer `PING` (AOF loading included).
    pub startup_timeout: Duration,
    /// Use `CARACAL_TEST_REDIS_URL` when set instead of starting a server.
    pub honour_env: bool,
    /// Extra `--name value` arguments for `redis-server`.
    pub extra_args: Vec<String>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            appendfsync: "everysec".into(),
            startup_timeout: Duration::from_secs(20),
            honour_env: true,
            extra_args: Vec::new(),
        }
    }
}

/// A Redis server for tests: one this process started, or the external one named by
/// `CARACAL_TEST_REDIS_URL`.
pub struct EphemeralRedis {
    inner: Inner,
}

enum Inner {
    External {
        url: String,
        addr: Option<SocketAddr>,
    },
    Owned(Box<Owned>),
}

struct Owned {
    bin: PathBuf,
    opts: RedisOptions,
    /// `None` only during `Drop`.
    dir: Option<TempDir>,
    root: PathBuf,
    log: PathBuf,
    pid_file: PathBuf,
    port: u16,
    server: Mutex<Option<Child>>,
    watchdog: Mutex<Option<Watchdog>>,
}

impl std::fmt::Debug for EphemeralRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::External { .. } => f
                .debug_struct("EphemeralRedis")
                .field("external", &true)
                .finish_non_exhaustive(),
            Inner::Owned(o) => f
                .debug_struct("EphemeralRedis")
                .field("port", &o.port)
                .field("dir", &o.root)
                .finish_non_exhaustive(),
        }
    }
}

/// Find `redis-server`: `CARACAL_REDIS_SERVER`, then `PATH`.
pub fn discover_redis_server() -> Result<PathBuf, SupportError> {
    if let Some(bin) = std::env::var_os(crate::REDIS_SERVER_ENV) {
        let bin = PathBuf::from(bin);
        if process::is_executable(&bin) {
            return Ok(bin);
        }
    }
    process::which("redis-server").ok_or_else(|| SupportError::BinariesMissing {
        what: "redis-server",
        hint: format!(
            "not on PATH and ${} not set; install it (Debian: `apt-get install redis-server`) \
             or set {}",
            crate::REDIS_SERVER_ENV,
            crate::REDIS_URL_ENV
        ),
    })
}

impl EphemeralRedis {
    /// Start a server with the default options (or use `CARACAL_TEST_REDIS_URL`).
    pub fn start() -> Result<Self, SupportError> {
        Self::start_with(RedisOptions::default())
    }

    /// Start a server with `opts`.
    pub fn start_with(opts: RedisOptions) -> Result<Self, SupportError> {
        if opts.honour_env {
            if let Ok(url) = std::env::var(crate::REDIS_URL_ENV) {
                if !url.trim().is_empty() {
                    return Ok(Self::external(url));
                }
            }
        }
        let bin = discover_redis_server()?;
        let dir = tempfile::Builder::new()
            .prefix("caracal-redis-")
            .tempdir_in(process::temp_base())
            .map_err(|e| SupportError::io("create the redis temp dir", e))?;
        let root = dir.path().to_path_buf();
        let mut owned = Owned {
            bin,
            opts,
            log: root.join("redis.log"),
            pid_file: root.join("redis.pid"),
            root,
            dir: Some(dir),
            port: 0,
            server: Mutex::new(None),
            watchdog: Mutex::new(None),
        };
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            owned.port = process::free_port()?;
            let pid_file = owned.pid_file.display().to_string();
            let root = owned.root.display().to_string();
            let guard = owned.port.to_string();
            if let Some(old) = lock(&owned.watchdog).take() {
                old.disarm();
            }
            *lock(&owned.watchdog) = Some(Watchdog::spawn(
                process::WATCHDOG_SCRIPT,
                &[&pid_file, &guard, "TERM", &root],
            )?);
            match owned.spawn_and_wait() {
                Ok(()) => {
                    return Ok(Self {
                        inner: Inner::Owned(Box::new(owned)),
                    });
                }
                Err(e) => {
                    let port_taken = process::log_tail(&owned.log, 20).contains("already in use");
                    last_err = Some(e);
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| SupportError::Failed {
            what: "start redis-server".into(),
            detail: "no attempt was made".into(),
            log_tail: String::new(),
        }))
    }

    /// Treat the server at `url` as external (what `CARACAL_TEST_REDIS_URL` does): usable,
    /// but not stopped, killed or restarted by this process.
    pub fn external(url: impl Into<String>) -> Self {
        let url = url.into();
        let addr = parse_redis_addr(&url);
        Self {
            inner: Inner::External { url, addr },
        }
    }

    /// Whether this is a server named by `CARACAL_TEST_REDIS_URL` (not owned).
    pub fn is_external(&self) -> bool {
        matches!(self.inner, Inner::External { .. })
    }

    /// `redis://127.0.0.1:PORT/` for an owned server, else the external URL.
    pub fn url(&self) -> String {
        match &self.inner {
            Inner::External { url, .. } => url.clone(),
            Inner::Owned(o) => format!("redis://127.0.0.1:{}/", o.port),
        }
    }

    /// The server's TCP address, when known.
    pub fn addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::External { addr, .. } => *addr,
            Inner::Owned(o) => Some(SocketAddr::from(([127, 0, 0, 1], o.port))),
        }
    }

    /// The TCP port (`None` for an external server).
    pub fn port(&self) -> Option<u16> {
        match &self.inner {
            Inner::External { .. } => None,
            Inner::Owned(o) => Some(o.port),
        }
    }

    /// The working dir holding the AOF (`None` for an external server).
    pub fn dir(&self) -> Option<&Path> {
        match &self.inner {
            Inner::External { .. } => None,
            Inner::Owned(o) => Some(&o.root),
        }
    }

    /// The PID of the running server (`None` if stopped or external).
    pub fn pid(&self) -> Option<u32> {
        match &self.inner {
            Inner::External { .. } => None,
            Inner::Owned(o) => lock(&o.server).as_ref().map(Child::id),
        }
    }

    /// Send one command over a fresh connection (no AUTH: for owned servers and
    /// password-less external ones). Error replies come back as [`RespValue::Error`].
    pub fn command(&self, args: &[&str]) -> Result<RespValue, SupportError> {
        let addr = self.addr().ok_or_else(|| SupportError::Invalid {
            what: "redis URL",
            reason: "could not read host:port from it".into(),
        })?;
        resp::command(addr, args, COMMAND_TIMEOUT)
    }

    /// SIGTERM (Redis flushes the AOF and exits), bounded; falls back to SIGKILL.
    pub fn stop(&self) -> Result<(), SupportError> {
        match &self.inner {
            Inner::External { .. } => Err(SupportError::unsupported_external(
                "stop",
                crate::REDIS_URL_ENV,
            )),
            Inner::Owned(o) => o.stop(),
        }
    }

    /// SIGKILL the server by PID. The dir and its AOF stay for [`restart`](Self::restart).
    pub fn kill(&self) -> Result<(), SupportError> {
        match &self.inner {
            Inner::External { .. } => Err(SupportError::unsupported_external(
                "kill",
                crate::REDIS_URL_ENV,
            )),
            Inner::Owned(o) => o.kill(),
        }
    }

    /// Start the server again on the same port and dir (stopping it first if it runs); the
    /// AOF is reloaded before it answers `PING`.
    pub fn restart(&self) -> Result<(), SupportError> {
        match &self.inner {
            Inner::External { .. } => Err(SupportError::unsupported_external(
                "restart",
                crate::REDIS_URL_ENV,
            )),
            Inner::Owned(o) => {
                if lock(&o.server).is_some() {
                    o.stop()?;
                }
                o.spawn_and_wait()
            }
        }
    }
}

impl Owned {
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &self.root.display().to_string(),
            "--daemonize",
            "no",
            "--appendonly",
            "yes",
            "--appendfsync",
            &self.opts.appendfsync,
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            &self.log.display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(self.opts.extra_args.iter().cloned());
        args
    }

    fn spawn_and_wait(&self) -> Result<(), SupportError> {
        use std::os::unix::process::CommandExt;
        let child = Command::new(&self.bin)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(process::open_log(&self.log)?)
            .process_group(0)
            .spawn()
            .map_err(|e| SupportError::io("spawn redis-server", e))?;
        fs::write(&self.pid_file, child.id().to_string())
            .map_err(|e| SupportError::io("write the redis pid file", e))?;
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
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(child) = lock(&self.server).as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(SupportError::Failed {
                        what: format!("redis-server on port {}", self.port),
                        detail: format!("exited during startup ({status})"),
                        log_tail: process::log_tail(&self.log, 30),
                    });
                }
            }
            // `-LOADING` while the AOF is replayed, or a refused connection, until ready.
            let last = match resp::command(addr, &["PING"], Duration::from_secs(1)) {
                Ok(RespValue::Simple(s)) if s == "PONG" => return Ok(()),
                Ok(other) => format!("{other:?}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(SupportError::Timeout {
                    what: format!(
                        "redis-server on port {} to answer PING (last: {last})",
                        self.port
                    ),
                    after: timeout,
                    log_tail: process::log_tail(&self.log, 30),
                });
            }
            thread::sleep(POLL);
        }
    }

    fn stop(&self) -> Result<(), SupportError> {
        let mut server = lock(&self.server);
        let Some(child) = server.as_mut() else {
            return Ok(());
        };
        process::signal(child.id(), "TERM")?;
        if process::wait_child(child, STOP_TIMEOUT)?.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            *server = None;
            return Err(SupportError::Timeout {
                what: "redis-server to stop on SIGTERM; it was SIGKILLed".into(),
                after: STOP_TIMEOUT,
                log_tail: process::log_tail(&self.log, 30),
            });
        }
        *server = None;
        let _ = fs::remove_file(&self.pid_file);
        Ok(())
    }

    fn kill(&self) -> Result<(), SupportError> {
        let mut server = lock(&self.server);
        if let Some(child) = server.as_mut() {
            // An in-flight AOF rewrite child would outlive its parent.
            let forks = process::children_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
            for pid in forks {
                let _ = process::signal(pid, "KILL");
                process::wait_pid_gone(pid, Duration::from_secs(5));
            }
        }
        *server = None;
        let _ = fs::remove_file(&self.pid_file);
        Ok(())
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.kill();
        if let Some(w) = lock(&self.watchdog).take() {
            w.disarm();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// `host:port` of a `redis://[user[:pass]@]host[:port][/db]` URL, resolved.
fn parse_redis_addr(url: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))?;
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit('@').next()?;
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:6379")
    };
    hostport.to_socket_addrs().ok()?.next()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_urls() {
        assert_eq!(
            parse_redis_addr("redis://127.0.0.1:7000/0"),
            Some(SocketAddr::from(([127, 0, 0, 1], 7000)))
        );
        assert_eq!(
            parse_redis_addr("redis://:pw@127.0.0.1"),
            Some(SocketAddr::from(([127, 0, 0, 1], 6379)))
        );
        assert_eq!(parse_redis_addr("http://x"), None);
    }
}
