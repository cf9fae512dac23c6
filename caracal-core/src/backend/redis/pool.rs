//! Connections: the `bb8` pool for ordinary commands, dedicated connections for blocking
//! reads, and the one place Redis errors are classified.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Cmd, RedisError, Value};
use bb8::{ErrorSink, ManageConnection, Pool, RunError};

use crate::streams::StreamError;

/// How to reach Redis and how long to wait for it.
///
/// Every wait is bounded by one of these durations; none is "forever".
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]` (or `rediss://`). Never logged or
    /// rendered: [`Debug`] shows it with the password redacted.
    pub url: String,
    /// Connections in the pool for ordinary commands (at least 1). Each is multiplexed, so a
    /// handful serves many concurrent callers.
    pub pool_size: u32,
    /// Longest wait to check a connection out of the pool (exhausted pool, or server down)
    /// before the command fails with a retryable error.
    pub pool_timeout: Duration,
    /// Longest wait to open one TCP connection (and authenticate).
    pub connect_timeout: Duration,
    /// Longest wait for the reply to an ordinary (non-blocking) command.
    pub response_timeout: Duration,
    /// How long past its `BLOCK` a blocking read may take before the connection is declared
    /// dead (a silent network partition never closes the socket).
    pub block_grace: Duration,
    /// Idle dedicated connections kept for blocking reads (one per concurrent reader is used;
    /// more than this many idle ones are closed).
    pub max_idle_blocking: usize,
}

impl RedisConfig {
    /// Defaults for `url`: pool of 16, 2 s pool and connect timeouts, 2 s replies, 5 s
    /// grace on blocking reads, 8 idle blocking connections.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            pool_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            block_grace: Duration::from_secs(5),
            max_idle_blocking: 8,
        }
    }

    /// The URL with any password replaced by `***`, for logs and error messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("pool_timeout", &self.pool_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("block_grace", &self.block_grace)
            .field("max_idle_blocking", &self.max_idle_blocking)
            .finish()
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host`; anything else unchanged.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    format!("{scheme}://{user}:***@{host}{path}")
}

/// A configuration that cannot be used. The message never contains the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConfigError {
    /// The URL does not parse as a Redis URL.
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A numeric setting is out of range.
    #[error("invalid Redis configuration: {0}")]
    Invalid(&'static str),
}

/// A pooled connection and whether it saw a connection-level error.
pub(crate) struct Conn {
    con: MultiplexedConnection,
    // INVARIANT: set as soon as a command on this connection fails at the connection level;
    // `has_broken` then makes the pool drop it instead of handing it out again.
    broken: bool,
    /// The pool's [`Generation`] when this connection was opened.
    generation: u64,
}

/// Bumped when a connection is found dropped by the server (closed, reset, refused): every
/// connection opened before that is presumed dead too (the server restarted, or a proxy
/// dropped them all), and is discarded at its next checkout without being used. So a server
/// restart fails one command, not one per pooled connection.
#[derive(Debug, Default)]
struct Generation(AtomicU64);

impl Generation {
    fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Everything opened at or before `seen` is stale from now on.
    fn expire_up_to(&self, seen: u64) {
        self.0.fetch_max(seen.saturating_add(1), Ordering::AcqRel);
    }
}

/// Opens connections with our timeouts; reports broken ones to `bb8` without a `PING`.
struct Manager {
    client: Client,
    config: AsyncConnectionConfig,
    generation: Arc<Generation>,
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    async fn connect(&self) -> Result<Conn, RedisError> {
        // Read before connecting: a bump during the connect makes this one stale, which
        // only costs a reconnect.
        let generation = self.generation.current();
        let con = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        Ok(Conn {
            con,
            broken: false,
            generation,
        })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), RedisError> {
        ::redis::cmd("PING")
            .query_async::<Value>(&mut conn.con)
            .await
            .map(|_| ())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
    }
}

/// Keeps the last background connect error, so a pool timeout can say why.
#[derive(Debug, Clone, Default)]
struct LastConnectError(Arc<Mutex<Option<String>>>);

impl LastConnectError {
    fn lock(&self) -> MutexGuard<'_, Option<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ErrorSink<RedisError> for LastConnectError {
    fn sink(&self, error: RedisError) {
        *self.lock() = Some(error.to_string());
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

/// A Redis failure, classified once; [`RedisStreams`](super::RedisStreams) and
/// [`RedisKeys`](super::RedisKeys) turn it into their own error types.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Transient: connection lost or refused, timeout, pool exhausted, or the server asked to
    /// retry (`LOADING`, `BUSY`, `TRYAGAIN`, …).
    Unavailable(String),
    /// An error reply. `code` is its first word (`NOGROUP`, `WRONGTYPE`, `ERR`, …).
    Server {
        /// The error code.
        code: String,
        /// The whole message.
        message: String,
    },
    /// Anything else: an unexpected reply shape, an authentication or client error.
    Other(String),
}

/// Error codes after which the same command can succeed later.
const RETRYABLE_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "READONLY",
    "OOM",
];

impl Failure {
    pub(crate) fn classify(e: &RedisError) -> Self {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            return Failure::Unavailable(e.to_string());
        }
        match e.code() {
            Some(code) if RETRYABLE_CODES.contains(&code) => Failure::Unavailable(e.to_string()),
            Some(code) => Failure::Server {
                code: code.to_owned(),
                message: e.to_string(),
            },
            None => Failure::Other(e.to_string()),
        }
    }

    /// A reply whose shape is not the documented one.
    pub(crate) fn protocol(what: &str) -> Self {
        Failure::Other(format!("unexpected reply: {what}"))
    }

    /// Whether the server message contains `needle` (case-insensitive).
    pub(crate) fn message_contains(&self, needle: &str) -> bool {
        match self {
            Failure::Server { message, .. } => message
                .to_ascii_lowercase()
                .contains(&needle.to_ascii_lowercase()),
            _ => false,
        }
    }
}

impl From<Failure> for StreamError {
    /// The generic mapping; callers handle the codes that mean something for their command
    /// (`NOGROUP`, `WRONGTYPE`, `BUSYGROUP`) first.
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(reason) => StreamError::Unavailable { reason },
            Failure::Server { message, .. } => StreamError::Backend { reason: message },
            Failure::Other(reason) => StreamError::Backend { reason },
        }
    }
}

/// Whether a connection that returned `e` must not be used again.
fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_unrecoverable_error()
}

/// Idle dedicated connections for blocking reads.
struct Blocking {
    client: Client,
    config: AsyncConnectionConfig,
    /// Idle connections with the [`Generation`] they were opened in.
    idle: Mutex<Vec<(u64, MultiplexedConnection)>>,
    max_idle: usize,
    grace: Duration,
}

impl Blocking {
    fn idle(&self) -> MutexGuard<'_, Vec<(u64, MultiplexedConnection)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Inner {
    pool: Pool<Manager>,
    generation: Arc<Generation>,
    blocking: Blocking,
    last_connect_error: LastConnectError,
    pool_timeout: Duration,
    pool_size: u32,
    redacted_url: String,
}

/// The connections to one Redis server: a `bb8` pool for ordinary commands and dedicated
/// connections for blocking reads. Cheap to clone (shared).
///
/// Creating it performs no I/O: connections are opened on first use (and re-opened after a
/// server restart), so a service can start while Redis is still coming up and report it
/// through readiness instead of failing to boot.
#[derive(Clone)]
pub struct RedisPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("url", &self.inner.redacted_url)
            .field("pool_size", &self.inner.pool_size)
            .finish_non_exhaustive()
    }
}

impl RedisPool {
    /// A pool for `config`. Fails only on a malformed URL or an out-of-range setting.
    pub fn new(config: &RedisConfig) -> Result<Self, RedisConfigError> {
        if config.pool_size == 0 {
            return Err(RedisConfigError::Invalid("pool_size must be at least 1"));
        }
        for (value, what) in [
            (config.pool_timeout, "pool_timeout must be positive"),
            (config.connect_timeout, "connect_timeout must be positive"),
            (config.response_timeout, "response_timeout must be positive"),
        ] {
            if value.is_zero() {
                return Err(RedisConfigError::Invalid(what));
            }
        }
        let redacted_url = config.redacted_url();
        let client =
            Client::open(config.url.as_str()).map_err(|e| RedisConfigError::InvalidUrl {
                url: redacted_url.clone(),
                // The parser's messages name the part that failed, never the password.
                reason: e.to_string(),
            })?;
        let request_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        // No response timeout: a BLOCK read is bounded by its own `BLOCK` plus the grace,
        // enforced around each read (see `blocking_query`).
        let blocking_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(None);
        let last_connect_error = LastConnectError::default();
        let generation = Arc::new(Generation::default());
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .connection_timeout(config.pool_timeout)
            // Broken connections are reported by `has_broken`; a PING per checkout would
            // double the round trips of every command on the hot path.
            .test_on_check_out(false)
            .error_sink(Box::new(last_connect_error.clone()))
            .build_unchecked(Manager {
                client: client.clone(),
                config: request_config,
                generation: Arc::clone(&generation),
            });
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                generation,
                blocking: Blocking {
                    client,
                    config: blocking_config,
                    idle: Mutex::new(Vec::new()),
                    max_idle: config.max_idle_blocking,
                    grace: config.block_grace,
                },
                last_connect_error,
                pool_timeout: config.pool_timeout,
                pool_size: config.pool_size,
                redacted_url,
            }),
        })
    }

    /// The server URL with any password redacted.
    pub fn redacted_url(&self) -> &str {
        &self.inner.redacted_url
    }

    /// `PING` over the pool: whether the server answers now.
    pub async fn ping(&self) -> Result<(), StreamError> {
        self.query(&::redis::cmd("PING"))
            .await
            .map(|_| ())
            .map_err(StreamError::from)
    }

    fn pool_error(&self, e: RunError<RedisError>) -> Failure {
        match e {
            RunError::User(e) => Failure::classify(&e),
            RunError::TimedOut => {
                let state = self.inner.pool.state();
                let cause = match self.inner.last_connect_error.lock().clone() {
                    Some(err) => format!("; last connect error: {err}"),
                    None => String::new(),
                };
                Failure::Unavailable(format!(
                    "no Redis connection within {:?} ({} of {} open, {} idle: pool exhausted \
                     or server unreachable){cause}",
                    self.inner.pool_timeout,
                    state.connections,
                    self.inner.pool_size,
                    state.idle_connections,
                ))
            }
        }
    }

    /// Check out a connection opened since the last detected server drop.
    async fn checkout(&self) -> Result<bb8::PooledConnection<'_, Manager>, Failure> {
        // Bounded: each stale connection is discarded once, and there are at most
        // `pool_size` of them; a fresh one is never stale.
        for _ in 0..=self.inner.pool_size {
            let mut conn = self
                .inner
                .pool
                .get()
                .await
                .map_err(|e| self.pool_error(e))?;
            if conn.generation >= self.inner.generation.current() {
                return Ok(conn);
            }
            // Dropped here, `has_broken` makes the pool close it and open a new one.
            conn.broken = true;
        }
        Err(Failure::Unavailable(
            "no live Redis connection: every pooled connection was stale".to_owned(),
        ))
    }

    /// Record a failed command on `conn`.
    fn failed(&self, conn: &mut Conn, e: &RedisError) {
        if breaks_connection(e) {
            conn.broken = true;
        }
        if e.is_connection_dropped() || e.is_connection_refusal() {
            self.inner.generation.expire_up_to(conn.generation);
        }
    }

    /// Run one ordinary command on a pooled connection.
    pub(crate) async fn query(&self, cmd: &Cmd) -> Result<Value, Failure> {
        let mut conn = self.checkout().await?;
        match cmd.query_async::<Value>(&mut conn.con).await {
            Ok(value) => {
                // A successful command proves the server is reachable again.
                *self.inner.last_connect_error.lock() = None;
                Ok(value)
            }
            Err(e) => {
                self.failed(&mut conn, &e);
                Err(Failure::classify(&e))
            }
        }
    }

    /// Invoke a Lua script on a pooled connection (`EVALSHA`, falling back to `EVAL`).
    pub(crate) async fn invoke(
        &self,
        script: &::redis::ScriptInvocation<'_>,
    ) -> Result<Value, Failure> {
        let mut conn = self.checkout().await?;
        match script.invoke_async::<Value>(&mut conn.con).await {
            Ok(value) => {
                *self.inner.last_connect_error.lock() = None;
                Ok(value)
            }
            Err(e) => {
                self.failed(&mut conn, &e);
                Err(Failure::classify(&e))
            }
        }
    }

    /// Run a blocking command (`XREADGROUP … BLOCK block`) on a dedicated connection, never a
    /// pooled one. The whole call, connect included, is bounded by `block` plus the grace.
    pub(crate) async fn blocking_query(
        &self,
        cmd: &Cmd,
        block: Duration,
    ) -> Result<Value, Failure> {
        let blocking = &self.inner.blocking;
        let bound = block.saturating_add(blocking.grace);
        let attempt = async {
            let current = self.inner.generation.current();
            // Idle connections opened before the last detected server drop are dead too.
            let reused = {
                let mut idle = blocking.idle();
                idle.retain(|(generation, _)| *generation >= current);
                idle.pop()
            };
            let (generation, mut con) = match reused {
                Some(reused) => reused,
                None => (
                    current,
                    blocking
                        .client
                        .get_multiplexed_async_connection_with_config(&blocking.config)
                        .await
                        .map_err(|e| Failure::classify(&e))?,
                ),
            };
            match cmd.query_async::<Value>(&mut con).await {
                Ok(value) => {
                    let mut idle = blocking.idle();
                    if idle.len() < blocking.max_idle {
                        idle.push((generation, con));
                    }
                    Ok(value)
                }
                Err(e) => {
                    if breaks_connection(&e) {
                        // The idle ones were opened to the same server before it failed:
                        // drop them all rather than fail once per stale connection.
                        blocking.idle().clear();
                    }
                    if e.is_connection_dropped() {
                        // A blocked reader is usually the first to see a server go away;
                        // the pooled connections opened so far are as dead as this one.
                        self.inner.generation.expire_up_to(generation);
                    }
                    Err(Failure::classify(&e))
                }
            }
        };
        // INVARIANT: a connection is returned to the idle list only after its read
        // completed. If this future is dropped or times out mid-read, the connection (still
        // blocked server-side) is dropped with it and never handed to another reader.
        match tokio::time::timeout(bound, attempt).await {
            Ok(result) => result,
            Err(_) => {
                blocking.idle().clear();
                Err(Failure::Unavailable(format!(
                    "blocking read got no reply within {bound:?} (BLOCK {block:?} plus grace)"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@localhost:6379/1"),
            "redis://:***@localhost:6379/1"
        );
        assert_eq!(redact_url("rediss://user:pw@h/0"), "rediss://user:***@h/0");
        assert_eq!(
            redact_url("redis://localhost:6379"),
            "redis://localhost:6379"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        let config = RedisConfig::new("redis://:hunter2@127.0.0.1/");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        let mut config = RedisConfig::new("redis://127.0.0.1/");
        config.pool_size = 0;
        assert!(matches!(
            RedisPool::new(&config),
            Err(RedisConfigError::Invalid(_))
        ));
        let config = RedisConfig::new("http://:hunter2@example");
        let err = RedisPool::new(&config).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("invalid Redis URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_bounded_retryable_error() {
        // Port 1 on localhost: refused at once on any normal machine.
        let mut config = RedisConfig::new("redis://127.0.0.1:1/");
        config.pool_timeout = Duration::from_millis(300);
        let pool = RedisPool::new(&config).unwrap_or_else(|e| unreachable!("{e}"));
        let started = std::time::Instant::now();
        let err = pool.ping().await.err();
        assert!(
            matches!(err, Some(StreamError::Unavailable { .. })),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = pool
            .blocking_query(
                ::redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg("c")
                    .arg("BLOCK")
                    .arg(100)
                    .arg("STREAMS")
                    .arg("s")
                    .arg(">"),
                Duration::from_millis(100),
            )
            .await
            .err();
        assert!(matches!(err, Some(Failure::Unavailable(_))), "{err:?}");
    }
}
