//! # caracal-test-support
//!
//! Real servers for Caracal's integration tests and failure drills (SPEC §4). Postgres and
//! Redis are never mocked in an integration test: this crate starts **its own ephemeral
//! servers** (a fresh `initdb` cluster and a `redis-server`, each on a free port in a temp
//! dir) so a drill can kill and restart them without touching anything else on the machine.
//!
//! ## Layout
//!
//! - [`postgres`]: [`EphemeralPostgres`] (start, fresh database per test, stop, SIGKILL,
//!   restart on the same port and data dir) and the per-binary shared cluster
//!   [`shared_postgres`].
//! - [`redis`]: [`EphemeralRedis`] (AOF on, kill, restart with AOF reload).
//! - [`resp`]: a tiny blocking RESP2 client, enough for readiness probes and drills.
//! - [`availability`]: the skip policy: [`postgres_or_skip`], [`redis_or_skip`].
//! - [`error`]: the crate's error type, [`SupportError`].
//!
//! ## Policy
//!
//! - `CARACAL_TEST_DATABASE_URL` / `CARACAL_TEST_REDIS_URL`, when set, name servers to use
//!   instead of starting one. Such servers are *external*: `kill`, `stop` and `restart` return
//!   [`SupportError::Unsupported`]; `create_database` still works (uniquely named databases).
//! - When the server binaries are missing, the `*_or_skip` helpers print a loud
//!   `SKIPPED: ...` line to stderr and return `None`, **except** with `CI=true`, where a missing
//!   server is a hard failure (panic), never a skip.
//! - Every wait is bounded (readiness, shutdown, SQL connects) and fails with a clear error
//!   that includes the tail of the server log.
//! - No leaked processes: `Drop` stops the server and removes its directory. A watchdog
//!   process (a shell blocked on a pipe from the test process) stops the server and removes
//!   the directory when the test process exits without running `Drop`: the shared cluster
//!   (a `static`), and any server of a test process that aborts, is killed or gets Ctrl-C.
//!
//! ## Root
//!
//! Postgres refuses to run as root. When the tests run as root, `initdb` and the server run as
//! the `postgres` system user through `runuser -u postgres --`, and the temp dir is handed to
//! that user. The temp dirs live under `CARACAL_TEST_TMPDIR` when set, else the system temp
//! dir; it must be traversable by the `postgres` user.
//!

pub mod availability;
pub mod error;
pub mod postgres;
mod process;
pub mod redis;
pub mod resp;

pub use availability::{
    is_ci, own_postgres_or_skip, own_postgres_with_or_skip, postgres_or_skip, redis_or_skip,
};
pub use error::SupportError;
pub use postgres::{EphemeralPostgres, PgBins, PgOptions, connect, shared_postgres};
pub use redis::{EphemeralRedis, RedisOptions};
pub use resp::RespValue;

/// Environment variable naming an external Postgres to use instead of an ephemeral one.
pub const DATABASE_URL_ENV: &str = "CARACAL_TEST_DATABASE_URL";
/// Environment variable naming an external Redis to use instead of an ephemeral one.
pub const REDIS_URL_ENV: &str = "CARACAL_TEST_REDIS_URL";
/// Environment variable overriding the directory holding `initdb`, `pg_ctl` and `postgres`.
pub const PG_BINDIR_ENV: &str = "CARACAL_PG_BINDIR";
/// Environment variable overriding the `redis-server` binary.
pub const REDIS_SERVER_ENV: &str = "CARACAL_REDIS_SERVER";
/// Environment variable overriding where the temp dirs are created.
pub const TMPDIR_ENV: &str = "CARACAL_TEST_TMPDIR";
