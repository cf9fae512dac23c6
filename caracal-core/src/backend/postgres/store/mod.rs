//! [`PgStore`]: the storage traits of [`crate::store`] on Postgres, through a `bb8` pool of
//! `tokio-postgres` connections ([`PgManager`] wraps `bb8_postgres`'s manager to give each
//! connection a statement cache).
//!
//! ## Layout
//!
//! - this file: [`PgStore`] and [`PgStoreOptions`] (the pool, its bounds, the time and id
//!   sources), and [`PgClock`];
//! - `conn.rs`: [`PgManager`] and [`PgConnection`] (pooled connections with their statement
//!   cache), and the transaction guard that rolls back when dropped;
//! - `directory.rs`: zones, applications, resources, providers, sealed secrets, admin tokens;
//! - `authority.rs`: authority records and their lineage; `keys.rs`: zone signing keys;
//! - `policy.rs`: policies, versions, sets, set versions and the per-zone binding;
//! - `approvals.rs`: approval holds with conditional decide and consume;
//! - `outbox.rs`: the transactional outbox (claims with `FOR UPDATE SKIP LOCKED` and leases);
//! - `coordinator.rs`: sessions, edges, epochs, receipts and the per-zone unit of work
//!   ([`PgCoordinatorTx`]);
//! - `ledger.rs`: the audit ledger (per-zone advisory lock, shared chain rule);
//! - `admin_audit.rs`: the admin audit chain (per-chain advisory lock, shared link rule);
//! - `retention.rs`: monthly ledger partitions, retention, and [`PgLeaderLease`];
//! - `leader.rs`: [`PgLeaderLock`], the job leader locks of [`crate::jobs`] on [`PgLeaderLease`];
//! - `rows.rs`: panic-free row decoding; `error.rs`: the error mapping.
//!
//! ## Rules every statement follows
//!
//! - **Prepared statements.** Every statement is prepared once per pooled connection and
//!   cached on it ([`PgConnection`]; `tokio-postgres` itself has no statement cache). Column
//!   lists are explicit (never `*`), so a later migration that adds a column does not
//!   invalidate a cached statement.
//! - **Zone isolation.** Every statement on a zone-scoped table filters by `zone_id`, and the
//!   schema's foreign keys are `(zone_id, id)` pairs, so a row can never point into another
//!   zone. A row of another zone is "not found".
//! - **Atomicity.** Multi-statement changes run in one transaction whose guard queues a
//!   `ROLLBACK` when it is dropped uncommitted (an early return, a cancelled future; see
//!   `conn.rs`); change plus outbox row pairs share that transaction. Version numbers (`max + 1`) are taken under a
//!   row lock on the parent (`SELECT … FOR UPDATE`), signing-key versions under
//!   `pg_advisory_xact_lock(hashtext('zone_signing_key:' || zone))`, policy activation and
//!   set archival under `pg_advisory_xact_lock(hashtext('policy_binding:' || zone))`.
//! - **Time.** Where a trait method takes `now`, that instant is stored as given. Where the
//!   store stamps time itself (an outbox row enqueued by a unit of work, `updated_at` of
//!   rows the traits do not carry), it uses the database's `now()`, the trusted clock
//!   (SPEC §2), unless a stamp clock was installed with [`PgStore::with_stamp_clock`]
//!   (tests that drive a fake clock). [`PgStore::db_now`] and [`PgClock`] expose the
//!   database clock to callers.
//! - **Bounded waits.** Checking a connection out waits at most
//!   [`PgStoreOptions::connection_timeout`] (an exhausted pool, or a server that refuses
//!   connections, is a retryable [`StoreError::Unavailable`] naming the pool state and the
//!   last connect error); every call, including the zone-lock wait of
//!   [`CoordinatorStore::begin`](crate::store::coordinator::CoordinatorStore::begin), is
//!   bounded by [`PgStoreOptions::operation_timeout`].
//! - **No panics on data.** Rows are decoded with `try_get`; a malformed row is a
//!   non-retryable `Unavailable` naming the entity and column, never a panic.
//! - **Orders** follow the database collation for `ORDER BY id` and keyset comparisons; for
//!   the canonical UUID ids the services mint that is the byte order the in-memory store
//!   uses.
//!
//! See `error.rs` for how database errors map onto [`StoreError`].

mod admin_audit;
mod approvals;
mod authority;
mod conn;
mod coordinator;
mod directory;
mod error;
mod keys;
mod leader;
mod ledger;
mod outbox;
mod policy;
mod retention;
mod rows;

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bb8::{ErrorSink, Pool, PooledConnection, RunError};
use chrono::{DateTime, Utc};

pub use conn::{PgConnection, PgManager};
pub use coordinator::PgCoordinatorTx;
pub use leader::PgLeaderLock;
pub use retention::{
    DEFAULT_RETENTION_DAYS, EXPORT_LEASE_KEY, LEASE_PROBE_TIMEOUT, PARTITION_MONTHS_AHEAD,
    PgLeaderLease, RETENTION_LEASE_KEY, RetentionReport, partition_month_end,
};

use crate::clock::{Clock, SharedClock};
use crate::ids::{SharedIdGen, UuidV7};
use crate::store::{StoreError, StoreResult};
use error::{describe_client_error, pg_error, timed_out};

/// The pool a [`PgStore`] runs on.
pub type PgPool = Pool<PgManager>;

/// Occupancy of a [`PgStore`]'s pool (see [`PgStore::pool_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// The pool's size bound.
    pub max_conns: u32,
    /// Connections open (idle or checked out).
    pub open_conns: u32,
    /// Connections checked out now.
    pub acquired_conns: u32,
}

impl PoolStats {
    /// `acquired / max` (`caracal_db_pool_in_use_ratio`).
    pub fn in_use_ratio(&self) -> f64 {
        f64::from(self.acquired_conns) / f64::from(self.max_conns.max(1))
    }
}

/// How [`PgStore::open`] builds its pool, and the store's bounds.
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    /// Connections in the pool (at least 1).
    pub max_size: u32,
    /// Idle connections the pool keeps open (none by default: connections open on demand).
    pub min_idle: Option<u32>,
    /// Longest wait to check a connection out of the pool: an exhausted pool, or a server
    /// that refuses connections, fails after this with a retryable `Unavailable`.
    pub connection_timeout: Duration,
    /// Longest wait for one TCP connect (and the startup handshake) to the server.
    pub connect_timeout: Duration,
    /// Bound on every store call from start to finish (checkout, lock waits, statements).
    /// `None` leaves statements unbounded on the client side.
    pub operation_timeout: Option<Duration>,
    /// `idle_in_transaction_session_timeout` of a Coordinator unit of work: a unit of work
    /// left open and idle this long is ended by the server, which releases its zone lock.
    /// `None` keeps the server's setting.
    pub unit_of_work_idle_timeout: Option<Duration>,
    /// `application_name` of the connections, when the URL sets none.
    pub application_name: String,
}

impl Default for PgStoreOptions {
    /// A pool of 16, 5 s checkout and connect timeouts, 30 s per call, 60 s idle units of
    /// work.
    fn default() -> Self {
        Self {
            max_size: 16,
            min_idle: None,
            connection_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Some(Duration::from_secs(30)),
            unit_of_work_idle_timeout: Some(Duration::from_secs(60)),
            application_name: "caracal".to_owned(),
        }
    }
}

/// The storage traits on Postgres.
///
/// A cheap handle: cloning shares the pool. Implements every trait of [`crate::store`]
/// except the ephemeral keys (Redis's job): [`ZoneStore`](crate::store::directory::ZoneStore),
/// `ApplicationStore`, `ResourceStore`, `ProviderStore`, `SecretStore`, `AdminTokenStore`,
/// [`AuthorityStore`](crate::store::authority::AuthorityStore),
/// [`SigningKeyStore`](crate::store::keys::SigningKeyStore),
/// [`OutboxStore`](crate::store::outbox::OutboxStore),
/// [`PolicyStore`](crate::store::policy::PolicyStore),
/// [`ApprovalStore`](crate::store::approvals::ApprovalStore),
/// [`CoordinatorStore`](crate::store::coordinator::CoordinatorStore) and
/// [`AdminAuditStore`](crate::store::admin_audit::AdminAuditStore).
///
/// The schema is the one of `migrations/` (run [`super::migrate`] first).
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    ids: SharedIdGen,
    stamp_clock: Option<SharedClock>,
    operation_timeout: Option<Duration>,
    unit_of_work_idle_timeout: Option<Duration>,
    last_connect_error: LastConnectError,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.pool.state();
        f.debug_struct("PgStore")
            .field("connections", &state.connections)
            .field("idle_connections", &state.idle_connections)
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// A store on a new pool for `url` (`postgres://user:password@host:port/db?...`).
    ///
    /// No connection is opened here: the first call opens one, so a service can start while
    /// the database is down and say so in `/ready` ([`ping`](Self::ping)). Must be called
    /// inside a tokio runtime (the pool runs a reaper task). Fails only when the URL does
    /// not parse; the error does not echo the URL (it may hold a password).
    pub async fn open(url: &str, options: PgStoreOptions) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| StoreError::Invalid("the Postgres URL does not parse".to_owned()))?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name(&options.application_name);
        }
        // Keepalives notice a peer that vanished without closing the socket.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        let sink = LastConnectError::default();
        let max_size = options.max_size.max(1);
        let pool = Pool::builder()
            .max_size(max_size)
            .min_idle(options.min_idle.map(|n| n.min(max_size)))
            // `conn()` skips connections the driver already saw close, which is what a
            // round-trip check on every checkout would mostly catch, without the round trip.
            .test_on_check_out(false)
            .connection_timeout(options.connection_timeout.max(Duration::from_millis(1)))
            .error_sink(Box::new(sink.clone()))
            .build_unchecked(PgManager::new(config));
        Ok(Self {
            pool,
            ids: Arc::new(UuidV7),
            stamp_clock: None,
            operation_timeout: options.operation_timeout,
            unit_of_work_idle_timeout: options.unit_of_work_idle_timeout,
            last_connect_error: sink,
        })
    }

    /// A store on an existing pool, with the default bounds of [`PgStoreOptions`] for
    /// operations and units of work. The pool's own `connection_timeout` bounds checkouts.
    pub fn from_pool(pool: PgPool) -> Self {
        let defaults = PgStoreOptions::default();
        Self {
            pool,
            ids: Arc::new(UuidV7),
            stamp_clock: None,
            operation_timeout: defaults.operation_timeout,
            unit_of_work_idle_timeout: defaults.unit_of_work_idle_timeout,
            last_connect_error: LastConnectError::default(),
        }
    }

    /// Use `ids` for the ids the store mints itself (outbox rows).
    pub fn with_ids(mut self, ids: SharedIdGen) -> Self {
        self.ids = ids;
        self
    }

    /// Stamp the times the store sets itself from `clock` instead of the database's `now()`.
    /// For tests that drive a fake clock; production keeps the database as the trusted clock.
    pub fn with_stamp_clock(mut self, clock: SharedClock) -> Self {
        self.stamp_clock = Some(clock);
        self
    }

    /// Replace the per-call bound (`None`: unbounded on the client side).
    pub fn with_operation_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Replace the idle bound of a unit of work (`None`: the server's setting).
    pub fn with_unit_of_work_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.unit_of_work_idle_timeout = timeout;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool's occupancy now (the `caracal_db_pool_*` gauges).
    pub fn pool_stats(&self) -> PoolStats {
        let state = self.pool.state();
        PoolStats {
            max_conns: self.pool.config().max_size,
            open_conns: state.connections,
            acquired_conns: state.connections.saturating_sub(state.idle_connections),
        }
    }

    /// Check that a connection can be had and the server answers (for `/ready`).
    pub async fn ping(&self) -> StoreResult<()> {
        self.bounded("ping", async {
            let conn = self.conn().await?;
            conn.simple_query("").await.map_err(pg_error)?;
            Ok(())
        })
        .await
    }

    /// The database's `now()`: the trusted clock of the Postgres deployment.
    pub async fn db_now(&self) -> StoreResult<DateTime<Utc>> {
        self.bounded("now()", async {
            let conn = self.conn().await?;
            let row = conn.row("SELECT now()", &[]).await?;
            rows::col(&row, "clock", "now")
        })
        .await
    }

    /// The instant the store stamps with: the stamp clock's, or `None` for the database's
    /// `now()` (statements use `COALESCE($n, now())`).
    pub(crate) fn stamp(&self) -> Option<DateTime<Utc>> {
        self.stamp_clock.as_ref().map(|c| c.now())
    }

    pub(crate) fn ids(&self) -> &SharedIdGen {
        &self.ids
    }

    /// Run `fut` under the operation timeout.
    pub(crate) async fn bounded<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        bounded_by(self.operation_timeout, what, fut).await
    }

    /// Soft-archive one row of a zone-scoped table: `sql` must be
    /// `UPDATE <table> SET archived_at = $3, updated_at = $3 WHERE zone_id = $1 AND id = $2
    /// AND archived_at IS NULL`. `NotFound` (as `entity`) when the row is missing or already
    /// archived. The one shape behind every `archive_*` of the directory and policies.
    pub(crate) async fn archive_row(
        &self,
        op: &'static str,
        sql: &'static str,
        entity: &'static str,
        zone_id: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.bounded(op, async {
            let n = self.conn().await?.exec(sql, &[&zone_id, &id, &at]).await?;
            changed(n, entity)
        })
        .await
    }

    pub(crate) fn operation_timeout(&self) -> Option<Duration> {
        self.operation_timeout
    }

    /// Check a connection out, skipping connections whose server end is already gone.
    pub(crate) async fn conn(&self) -> StoreResult<PooledConnection<'_, PgManager>> {
        // Each pass discards at most one dead connection (returning it, the pool sees it is
        // closed and drops it), so `connections + 1` passes always reach a fresh connect.
        let passes = self.pool.state().connections.saturating_add(1);
        for _ in 0..passes {
            let conn = self.pool.get().await.map_err(|e| self.pool_error(e))?;
            if !conn.is_broken() {
                return Ok(conn);
            }
        }
        Err(StoreError::Unavailable {
            retryable: true,
            message: "postgres: every pooled connection was closed".to_owned(),
        })
    }

    /// [`conn`](Self::conn), owned (for a unit of work that outlives the borrow).
    pub(crate) async fn owned_conn(&self) -> StoreResult<PooledConnection<'static, PgManager>> {
        let passes = self.pool.state().connections.saturating_add(1);
        for _ in 0..passes {
            let conn = self
                .pool
                .get_owned()
                .await
                .map_err(|e| self.pool_error(e))?;
            if !conn.is_broken() {
                return Ok(conn);
            }
        }
        Err(StoreError::Unavailable {
            retryable: true,
            message: "postgres: every pooled connection was closed".to_owned(),
        })
    }

    pub(crate) fn unit_of_work_idle_timeout(&self) -> Option<Duration> {
        self.unit_of_work_idle_timeout
    }

    /// A checkout failure: a timeout names the pool's state and the last connect error, so
    /// "exhausted" and "server down" can be told apart.
    fn pool_error(&self, e: RunError<tokio_postgres::Error>) -> StoreError {
        match e {
            RunError::User(e) => pg_error(e),
            RunError::TimedOut => {
                let state = self.pool.state();
                let config = self.pool.config();
                let in_use = state.connections.saturating_sub(state.idle_connections);
                let mut message = format!(
                    "postgres: timed out after {:?} waiting for a pooled connection \
                     (pool of {}: {} open, {} in use)",
                    config.connection_timeout, config.max_size, state.connections, in_use
                );
                if let Some((when, last)) = self.last_connect_error.get() {
                    message.push_str(&format!(
                        "; last connect error {:?} ago: {last}",
                        when.elapsed()
                    ));
                }
                StoreError::Unavailable {
                    retryable: true,
                    message,
                }
            }
        }
    }
}

/// Remembers the pool's last failed connect (bb8 retries connects until the checkout
/// timeout and reports each failure only here), so a checkout timeout can say why.
#[derive(Debug, Clone, Default)]
struct LastConnectError(Arc<Mutex<Option<(Instant, String)>>>);

impl LastConnectError {
    fn get(&self) -> Option<(Instant, String)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ErrorSink<tokio_postgres::Error> for LastConnectError {
    fn sink(&self, error: tokio_postgres::Error) {
        let text = describe_client_error(&error);
        tracing::warn!(error = %text, "postgres connection failed");
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), text));
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<tokio_postgres::Error>> {
        Box::new(self.clone())
    }
}

/// A [`Clock`] that reads the database's clock: the local clock plus the offset to the
/// server's `clock_timestamp()`, measured by [`PgClock::calibrate`] (half the round trip
/// is attributed to each direction) and refreshed by [`PgClock::resync`].
///
/// `Clock::now` is synchronous, so it cannot ask the server on every call; services that
/// must agree with timestamps the database writes (expiry checks against rows stamped with
/// `now()`) use this clock and resync it periodically.
#[derive(Debug, Clone)]
pub struct PgClock {
    store: PgStore,
    offset_micros: Arc<AtomicI64>,
}

impl PgClock {
    /// Measure the offset to the database clock.
    pub async fn calibrate(store: PgStore) -> StoreResult<Self> {
        let clock = Self {
            store,
            offset_micros: Arc::new(AtomicI64::new(0)),
        };
        clock.resync().await?;
        Ok(clock)
    }

    /// Measure the offset again.
    pub async fn resync(&self) -> StoreResult<()> {
        let offset = self
            .store
            .bounded("clock_timestamp()", async {
                let conn = self.store.conn().await?;
                // Prepare first so the timed round trip is the query alone.
                let prepared = conn.prepare("SELECT clock_timestamp()").await?;
                let before = Utc::now();
                let row = conn.query_one(&prepared, &[]).await.map_err(pg_error)?;
                let after = Utc::now();
                let db: DateTime<Utc> = rows::col(&row, "clock", "clock_timestamp")?;
                let local = before + (after - before) / 2;
                Ok((db - local).num_microseconds().unwrap_or(0))
            })
            .await?;
        self.offset_micros.store(offset, Ordering::Relaxed);
        Ok(())
    }

    /// The measured offset (database minus local).
    pub fn offset(&self) -> chrono::Duration {
        chrono::Duration::microseconds(self.offset_micros.load(Ordering::Relaxed))
    }
}

impl Clock for PgClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }
}

/// Run `fut` under `limit`; running out is a retryable `Unavailable`.
pub(crate) async fn bounded_by<T>(
    limit: Option<Duration>,
    what: &'static str,
    fut: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, fut)
            .await
            .unwrap_or_else(|_| Err(timed_out(what, limit))),
        None => fut.await,
    }
}

/// `Err(NotFound)` unless a statement changed a row.
pub(crate) fn changed(n: u64, entity: &'static str) -> StoreResult<()> {
    if n == 0 {
        Err(StoreError::not_found(entity))
    } else {
        Ok(())
    }
}
