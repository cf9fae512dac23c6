//! Pooled connections with a per-connection statement cache, and transactions that roll
//! back when dropped.
//!
//! `tokio-postgres` prepares a statement per call unless the caller keeps the `Statement`;
//! it has no `prepare_cached`. [`PgManager`] therefore wraps `bb8_postgres`'s manager and
//! pairs every `Client` with a cache of the statements prepared on it ([`PgConnection`]):
//! each SQL text is parsed and planned once per connection, then only bound and executed.
//! Statements are session-level objects in Postgres, so a rolled-back transaction does not
//! invalidate them.
//!
//! ## Dropped transactions
//!
//! [`Tx`] issues `BEGIN` itself (a `tokio_postgres::Transaction` borrows the `Client`, which
//! a unit of work that outlives the call cannot do). When a `Tx` is dropped without a
//! successful [`Tx::commit`] — the caller returned early, or its future was cancelled mid
//! statement — `Drop` **queues** a `ROLLBACK` on the connection synchronously, the way
//! `tokio_postgres::Transaction`'s own `Drop` does: the request goes into the connection's
//! ordered request queue before the connection returns to the pool, so whatever the next
//! borrower sends runs after the rollback and never inside the abandoned transaction (and
//! the abandoned transaction's locks, including a unit of work's zone lock, are released).
//! No runtime or spawned task is needed. Should the rollback not even be queued (the
//! connection is closing), the connection is marked broken and the pool discards it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bb8::{ManageConnection, PooledConnection};
use bb8_postgres::PostgresConnectionManager;
use postgres_types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::error::{malformed, pg_error};
use crate::store::{StoreError, StoreResult};

/// Parameters of a statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The `bb8` connection manager of a [`PgStore`](super::PgStore) pool: `bb8_postgres`'s
/// manager, with a statement cache on each connection and a way to retire a connection.
#[derive(Debug)]
pub struct PgManager {
    inner: PostgresConnectionManager<NoTls>,
}

impl PgManager {
    /// A manager connecting with `config` (no TLS).
    pub fn new(config: tokio_postgres::Config) -> Self {
        Self {
            inner: PostgresConnectionManager::new(config, NoTls),
        }
    }
}

impl ManageConnection for PgManager {
    type Connection = PgConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PgConnection, tokio_postgres::Error> {
        let client = self.inner.connect().await?;
        Ok(PgConnection::new(client))
    }

    async fn is_valid(&self, conn: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        conn.client.simple_query("").await.map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        conn.broken.load(Ordering::Relaxed) || conn.client.is_closed()
    }
}

/// A pooled Postgres connection: the `Client` (through `Deref`) and its statement cache.
pub struct PgConnection {
    client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
    broken: AtomicBool,
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnection")
            .field("closed", &self.client.is_closed())
            .field("broken", &self.broken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for PgConnection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl PgConnection {
    fn new(client: Client) -> Self {
        Self {
            client,
            statements: Mutex::new(HashMap::new()),
            broken: AtomicBool::new(false),
        }
    }

    /// Whether the pool should discard this connection: closed, or retired by
    /// [`mark_broken`](Self::mark_broken).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed) || self.client.is_closed()
    }

    /// Retire the connection: the pool drops it when it comes back instead of reusing it.
    pub fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    /// The statement for `sql`, prepared on this connection at most once.
    pub(crate) async fn prepare(&self, sql: &'static str) -> StoreResult<Statement> {
        if let Some(stmt) = self.cache().get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client.prepare(sql).await.map_err(pg_error)?;
        self.cache().insert(sql, stmt.clone());
        Ok(stmt)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Statement>> {
        // The map stays consistent even if a holder panicked: entries are inserted whole.
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every row of a prepared statement.
    pub(crate) async fn rows(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> StoreResult<Vec<Row>> {
        let stmt = self.prepare(sql).await?;
        self.client.query(&stmt, params).await.map_err(pg_error)
    }

    /// At most one row of a prepared statement.
    pub(crate) async fn row_opt(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> StoreResult<Option<Row>> {
        let stmt = self.prepare(sql).await?;
        self.client.query_opt(&stmt, params).await.map_err(pg_error)
    }

    /// Exactly one row of a prepared statement.
    pub(crate) async fn row(&self, sql: &'static str, params: Params<'_>) -> StoreResult<Row> {
        self.row_opt(sql, params)
            .await?
            .ok_or_else(|| malformed("result", "a statement that returns one row returned none"))
    }

    /// Rows affected by a prepared statement.
    pub(crate) async fn exec(&self, sql: &'static str, params: Params<'_>) -> StoreResult<u64> {
        let stmt = self.prepare(sql).await?;
        self.client.execute(&stmt, params).await.map_err(pg_error)
    }

    /// Queue `ROLLBACK` on this connection without waiting for it (see the module doc).
    /// Returns whether it was queued.
    fn queue_rollback(&self) -> bool {
        // The first poll of `batch_execute` encodes the query and hands it to the
        // connection's request channel (a synchronous send), then waits for the reply. The
        // reply is not needed: the connection drains the responses of abandoned requests.
        let mut fut = pin!(self.client.batch_execute("ROLLBACK"));
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Pending | Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(_)) => false,
        }
    }
}

/// Why a transaction can no longer be used.
#[derive(Debug, Clone)]
struct Poisoned {
    retryable: bool,
    message: String,
}

/// The failure bookkeeping of a [`Tx`], kept apart from the connection so a statement
/// future can borrow the connection while these flags change.
#[derive(Debug, Default)]
struct TxState {
    in_flight: bool,
    poisoned: Option<Poisoned>,
}

impl TxState {
    fn usable(&self) -> StoreResult<()> {
        if let Some(p) = &self.poisoned {
            return Err(StoreError::Unavailable {
                retryable: p.retryable,
                message: format!(
                    "the transaction was aborted by an earlier failure ({}); nothing of it will commit",
                    p.message
                ),
            });
        }
        if self.in_flight {
            return Err(StoreError::Unavailable {
                retryable: true,
                message: "the transaction was abandoned mid-statement (cancelled or timed out); \
                          nothing of it will commit"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Run one statement: refuse if the transaction is unusable, remember a failure.
    async fn step<T>(&mut self, fut: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        self.usable()?;
        // INVARIANT: `in_flight` stays set if this future is dropped before the statement
        // returns, which poisons the transaction (its outcome is unknown).
        self.in_flight = true;
        let out = fut.await;
        self.in_flight = false;
        if let Err(e) = &out {
            self.poisoned = Some(match e {
                StoreError::Unavailable { retryable, message } => Poisoned {
                    retryable: *retryable,
                    message: message.clone(),
                },
                other => Poisoned {
                    retryable: false,
                    message: other.to_string(),
                },
            });
        }
        out
    }
}

/// A transaction on a pooled connection: `BEGIN` on [`Tx::begin`], `COMMIT` on
/// [`Tx::commit`], `ROLLBACK` queued on drop (see the module doc).
///
/// A statement that fails on the server aborts a Postgres transaction, and a `COMMIT` of an
/// aborted transaction "succeeds" as a rollback. So the `Tx` remembers the first failure
/// (and a statement whose future was dropped mid-flight, whose outcome is unknown): every
/// later statement, and the commit, then fail with that error instead of pretending.
pub(crate) struct Tx<'a> {
    conn: PooledConnection<'a, PgManager>,
    committed: bool,
    state: TxState,
}

impl<'a> Tx<'a> {
    /// Send `BEGIN` on `conn`.
    pub(crate) async fn begin(conn: PooledConnection<'a, PgManager>) -> StoreResult<Self> {
        // INVARIANT: the guard exists before BEGIN is sent, so a cancelled begin still rolls
        // back.
        let mut tx = Self {
            conn,
            committed: false,
            state: TxState::default(),
        };
        tx.batch("BEGIN").await?;
        Ok(tx)
    }

    /// Every row of a prepared statement, in the transaction.
    pub(crate) async fn rows(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> StoreResult<Vec<Row>> {
        self.state.step(self.conn.rows(sql, params)).await
    }

    /// At most one row, in the transaction.
    pub(crate) async fn row_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> StoreResult<Option<Row>> {
        self.state.step(self.conn.row_opt(sql, params)).await
    }

    /// Exactly one row, in the transaction.
    pub(crate) async fn row(&mut self, sql: &'static str, params: Params<'_>) -> StoreResult<Row> {
        self.state.step(self.conn.row(sql, params)).await
    }

    /// Rows affected, in the transaction.
    pub(crate) async fn exec(&mut self, sql: &'static str, params: Params<'_>) -> StoreResult<u64> {
        self.state.step(self.conn.exec(sql, params)).await
    }

    /// A simple-protocol statement (no parameters), in the transaction.
    pub(crate) async fn batch(&mut self, sql: &str) -> StoreResult<()> {
        let client = &self.conn.client;
        self.state
            .step(async { client.batch_execute(sql).await.map_err(pg_error) })
            .await
    }

    /// Commit. Refused (with the earlier error) if any statement of the transaction failed
    /// or was abandoned; nothing is committed then.
    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        self.batch("COMMIT").await?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if !self.conn.queue_rollback() {
            self.conn.mark_broken();
        }
    }
}
