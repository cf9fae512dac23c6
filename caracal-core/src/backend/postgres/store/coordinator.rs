//! Sessions, delegation edges, graph epochs, idempotency receipts, and the per-zone unit of
//! work.
//!
//! ## The unit of work
//!
//! [`CoordinatorStore::begin`] checks a connection out of the pool (owned, so it outlives
//! the call), sends `BEGIN`, and takes `pg_advisory_xact_lock(hashtext('coordinator:' ||
//! zone))`: every other unit of work on the zone waits until this one commits or rolls
//! back, while the plain read methods take no lock. Every statement of a
//! [`PgCoordinatorTx`] runs in that transaction, outbox rows included, so an event is
//! published iff its change committed.
//!
//! The lock wait is bounded twice: on the server by `lock_timeout` (set for the transaction
//! to most of what remains of the operation timeout, so normally the server gives up first,
//! with a retryable `55P03`, and the connection stays clean), and on the client by the
//! operation timeout. `idle_in_transaction_session_timeout` is set for the transaction too
//! ([`PgStoreOptions::unit_of_work_idle_timeout`](super::PgStoreOptions)): a unit of work
//! leaked by its holder is ended by the server, which releases the zone.
//!
//! **Drop without commit** queues a `ROLLBACK` on the connection before it returns to the
//! pool (see `conn.rs`): the next borrower's statements run after the rollback, never in
//! the abandoned transaction, and the zone lock is released by it. No task is spawned, so
//! this works in any context, including a cancelled future or a runtime shutting down; a
//! connection on which even queuing fails is marked broken and discarded by the pool.
//!
//! A statement that fails inside the unit of work aborts the Postgres transaction; the unit
//! of work then refuses every later statement and its commit with that failure (see
//! `Tx`). The contract's expected refusals do not abort it: a duplicate session or edge id
//! and a receipt that is still live are detected with `ON CONFLICT` and reported as
//! [`StoreError::Conflict`] without an error on the server.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::conn::Tx;
use super::outbox::enqueue_in;
use super::rows::{all, col, col_enum, col_object, enum_str, limit};
use super::{PgStore, bounded_by, changed};
use crate::model::delegation::DelegationEdge;
use crate::model::session::Session;
use crate::store::coordinator::{
    CoordinatorStore, CoordinatorTx, EdgeFilter, IdPage, IdempotencyReceipt, IdempotentOperation,
    SessionFilter, ZoneRef,
};
use crate::store::outbox::OutboxMessage;
use crate::store::{Cursor, Page, StoreError, StoreResult};

macro_rules! session_cols {
    () => {
        "id, zone_id, application_id, parent_id, subject_authority_record_id, lifecycle, labels, \
         status, depth, ttl_seconds, metadata, started_at, terminated_at, termination_reason, \
         last_heartbeat_at, heartbeat_deadline_at, lease_generation, child_count, max_children"
    };
}

macro_rules! edge_cols {
    () => {
        "id, zone_id, source_session_id, target_session_id, issuer_application_id, \
         receiver_application_id, parent_edge_id, resource_id, scopes, constraints_json, status, \
         expires_at, edge_version, revoked_at, created_at"
    };
}

macro_rules! receipt_cols {
    () => {
        "operation, zone_id, scope_id, key_digest, request_digest, result_id, response_status, \
         COALESCE(response_text, response_json::text) AS response_body, created_at, expires_at"
    };
}

const GET_SESSION: &str = concat!(
    "SELECT ",
    session_cols!(),
    " FROM sessions WHERE zone_id = $1 AND id = $2"
);
const GET_EDGE: &str = concat!(
    "SELECT ",
    edge_cols!(),
    " FROM delegation_edges WHERE zone_id = $1 AND id = $2"
);
const INBOUND_EDGES: &str = concat!(
    "SELECT ",
    edge_cols!(),
    " FROM delegation_edges WHERE zone_id = $1 AND target_session_id = $2 ORDER BY id"
);
const OUTBOUND_EDGES: &str = concat!(
    "SELECT ",
    edge_cols!(),
    " FROM delegation_edges WHERE zone_id = $1 AND source_session_id = $2 ORDER BY id"
);

/// Begin's second statement: the transaction's bounds, then the zone lock (the settings
/// subquery is evaluated before the lock is requested). A `NULL` bound keeps the session's
/// setting.
const LOCK_ZONE: &str = "SELECT pg_advisory_xact_lock(hashtext('coordinator:' || $1::text)) \
     FROM (SELECT set_config('idle_in_transaction_session_timeout', \
                             COALESCE($2::text, current_setting('idle_in_transaction_session_timeout')), true), \
                  set_config('lock_timeout', COALESCE($3::text, current_setting('lock_timeout')), true)) \
          AS bounds";

fn session(row: &Row) -> StoreResult<Session> {
    const E: &str = "session";
    Ok(Session {
        agent_session_id: col(row, E, "id")?,
        zone_id: col(row, E, "zone_id")?,
        application_id: col(row, E, "application_id")?,
        parent_id: col(row, E, "parent_id")?,
        subject_authority_record_id: col(row, E, "subject_authority_record_id")?,
        lifecycle: col_enum(row, E, "lifecycle")?,
        labels: col(row, E, "labels")?,
        status: col_enum(row, E, "status")?,
        depth: col(row, E, "depth")?,
        ttl_seconds: col(row, E, "ttl_seconds")?,
        metadata: col_object(row, E, "metadata")?,
        started_at: col(row, E, "started_at")?,
        terminated_at: col(row, E, "terminated_at")?,
        termination_reason: col(row, E, "termination_reason")?,
        last_heartbeat_at: col(row, E, "last_heartbeat_at")?,
        heartbeat_deadline_at: col(row, E, "heartbeat_deadline_at")?,
        lease_generation: col(row, E, "lease_generation")?,
        child_count: col(row, E, "child_count")?,
        max_children: col(row, E, "max_children")?,
    })
}

fn edge(row: &Row) -> StoreResult<DelegationEdge> {
    const E: &str = "delegation_edge";
    Ok(DelegationEdge {
        id: col(row, E, "id")?,
        zone_id: col(row, E, "zone_id")?,
        source_session_id: col(row, E, "source_session_id")?,
        target_session_id: col(row, E, "target_session_id")?,
        issuer_application_id: col(row, E, "issuer_application_id")?,
        receiver_application_id: col(row, E, "receiver_application_id")?,
        parent_edge_id: col(row, E, "parent_edge_id")?,
        resource_id: col(row, E, "resource_id")?,
        scopes: col(row, E, "scopes")?,
        constraints_json: col_object(row, E, "constraints_json")?,
        status: col_enum(row, E, "status")?,
        expires_at: col(row, E, "expires_at")?,
        edge_version: col(row, E, "edge_version")?,
        revoked_at: col(row, E, "revoked_at")?,
        created_at: col(row, E, "created_at")?,
    })
}

fn operation(raw: &str) -> Option<IdempotentOperation> {
    [
        IdempotentOperation::SessionStart,
        IdempotentOperation::DelegationCreate,
    ]
    .into_iter()
    .find(|op| op.as_str() == raw)
}

fn digest(row: &Row, name: &str) -> StoreResult<[u8; 32]> {
    const E: &str = "idempotency_receipt";
    let raw: Vec<u8> = col(row, E, name)?;
    raw.try_into()
        .map_err(|_| super::error::malformed(E, format_args!("column {name}: not 32 bytes")))
}

fn receipt(row: &Row) -> StoreResult<IdempotencyReceipt> {
    const E: &str = "idempotency_receipt";
    let op: String = col(row, E, "operation")?;
    let status: i32 = col(row, E, "response_status")?;
    Ok(IdempotencyReceipt {
        operation: operation(&op)
            .ok_or_else(|| super::error::malformed(E, "column operation: unknown value"))?,
        zone_id: col(row, E, "zone_id")?,
        scope_id: col(row, E, "scope_id")?,
        key_digest: digest(row, "key_digest")?,
        request_digest: digest(row, "request_digest")?,
        result_id: col(row, E, "result_id")?,
        response_status: u16::try_from(status)
            .map_err(|_| super::error::malformed(E, "column response_status: out of range"))?,
        response_json: col(row, E, "response_body")?,
        created_at: col(row, E, "created_at")?,
        expires_at: col(row, E, "expires_at")?,
    })
}

fn zone_ref(row: &Row) -> StoreResult<ZoneRef> {
    Ok(ZoneRef {
        zone_id: col(row, "sweep", "zone_id")?,
        id: col(row, "sweep", "id")?,
    })
}

/// Task sessions past their TTL, every zone (index `sessions_task_ttl`).
const EXPIRED_TASKS_DUE: &str = "SELECT zone_id, id FROM sessions \
     WHERE lifecycle = 'task' AND status IN ('active', 'suspended') \
       AND started_at + ttl_seconds * interval '1 second' <= $1 \
     ORDER BY started_at, id LIMIT $2";

/// Active service sessions past their lease (index `sessions_service_lease`).
const LAPSED_LEASES_DUE: &str = "SELECT zone_id, id FROM sessions \
     WHERE lifecycle = 'service' AND status = 'active' AND heartbeat_deadline_at <= $1 \
     ORDER BY heartbeat_deadline_at, id LIMIT $2";

/// Active edges past expiry (index `delegation_edges_expiry`).
const EXPIRED_EDGES_DUE: &str = "SELECT zone_id, id FROM delegation_edges \
     WHERE status = 'active' AND expires_at <= $1 \
     ORDER BY expires_at, id LIMIT $2";

// The purges lock the rows they pick (`FOR UPDATE SKIP LOCKED`, re-checking the `WHERE` on
// a row changed meanwhile), so two cleaners never fight over a row and a row a unit of work
// just changed is judged on its new version.

/// Retired edges no active edge descends from (index `delegation_edges_retired`).
const PURGE_RETIRED_EDGES: &str = "WITH doomed AS ( \
       SELECT e.zone_id, e.id FROM delegation_edges e \
        WHERE e.status IN ('revoked', 'expired') \
          AND COALESCE(e.revoked_at, e.expires_at) < $1 \
          AND NOT EXISTS (SELECT 1 FROM delegation_edges c \
                           WHERE c.zone_id = e.zone_id AND c.parent_edge_id = e.id \
                             AND c.status = 'active') \
        ORDER BY COALESCE(e.revoked_at, e.expires_at), e.id LIMIT $2 \
        FOR UPDATE OF e SKIP LOCKED) \
     DELETE FROM delegation_edges d USING doomed \
      WHERE d.zone_id = doomed.zone_id AND d.id = doomed.id";

/// Retired childless sessions without an active edge (index
/// `sessions_terminal_retention_idx`); their edges cascade.
const PURGE_RETIRED_SESSIONS: &str = "WITH doomed AS ( \
       SELECT s.zone_id, s.id FROM sessions s \
        WHERE s.status IN ('terminated', 'expired') AND s.terminated_at < $1 \
          AND NOT EXISTS (SELECT 1 FROM sessions c \
                           WHERE c.zone_id = s.zone_id AND c.parent_id = s.id) \
          AND NOT EXISTS (SELECT 1 FROM delegation_edges e \
                           WHERE e.zone_id = s.zone_id AND e.status = 'active' \
                             AND (e.source_session_id = s.id OR e.target_session_id = s.id)) \
        ORDER BY s.terminated_at, s.id LIMIT $2 \
        FOR UPDATE OF s SKIP LOCKED) \
     DELETE FROM sessions d USING doomed \
      WHERE d.zone_id = doomed.zone_id AND d.id = doomed.id";

/// Expired receipts (index `idempotency_receipts_expiry`).
const PURGE_EXPIRED_RECEIPTS: &str = "WITH doomed AS ( \
       SELECT operation, zone_id, scope_id, key_digest FROM coordinator_idempotency_receipts \
        WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
     DELETE FROM coordinator_idempotency_receipts r USING doomed \
      WHERE r.operation = doomed.operation AND r.zone_id = doomed.zone_id \
        AND r.scope_id = doomed.scope_id AND r.key_digest = doomed.key_digest";

impl PgStore {
    /// Run one sweep finder (`$1` = now, `$2` = limit).
    async fn due(
        &self,
        what: &'static str,
        sql: &'static str,
        now: DateTime<Utc>,
        n: u32,
    ) -> StoreResult<Vec<ZoneRef>> {
        self.bounded(what, async {
            let conn = self.conn().await?;
            let rows = conn.rows(sql, &[&now, &limit(n)?]).await?;
            all(&rows, zone_ref)
        })
        .await
    }

    /// Run one purge (`$1` = cutoff, `$2` = limit); the count deleted.
    async fn purge(
        &self,
        what: &'static str,
        sql: &'static str,
        cutoff: DateTime<Utc>,
        n: u32,
    ) -> StoreResult<u64> {
        self.bounded(what, async {
            let conn = self.conn().await?;
            conn.exec(sql, &[&cutoff, &limit(n)?]).await
        })
        .await
    }
}

/// A milliseconds setting value (`lock_timeout`, `idle_in_transaction_session_timeout`);
/// at least 1, since 0 means "no limit".
fn millis(d: std::time::Duration) -> String {
    d.as_millis().clamp(1, i32::MAX as u128).to_string()
}

#[async_trait]
impl CoordinatorStore for PgStore {
    async fn begin(&self, zone_id: &str) -> StoreResult<Box<dyn CoordinatorTx>> {
        let started = tokio::time::Instant::now();
        self.bounded("begin a unit of work", async {
            let mut tx = Tx::begin(self.owned_conn().await?).await?;
            // Leave the server a tenth of what remains (at least 50 ms) to report the lock
            // timeout itself before the client-side bound fires.
            let lock_timeout = self.operation_timeout().map(|limit| {
                let left = limit.saturating_sub(started.elapsed());
                millis(left.saturating_sub((left / 10).max(std::time::Duration::from_millis(50))))
            });
            let idle = self.unit_of_work_idle_timeout().map(millis);
            tx.exec(LOCK_ZONE, &[&zone_id, &idle, &lock_timeout])
                .await?;
            Ok(Box::new(PgCoordinatorTx {
                store: self.clone(),
                zone_id: zone_id.to_owned(),
                tx,
            }) as Box<dyn CoordinatorTx>)
        })
        .await
    }

    async fn get_session(&self, zone_id: &str, id: &str) -> StoreResult<Option<Session>> {
        self.bounded("get_session", async {
            let conn = self.conn().await?;
            conn.row_opt(GET_SESSION, &[&zone_id, &id])
                .await?
                .as_ref()
                .map(session)
                .transpose()
        })
        .await
    }

    async fn get_edge(&self, zone_id: &str, id: &str) -> StoreResult<Option<DelegationEdge>> {
        self.bounded("get_edge", async {
            let conn = self.conn().await?;
            conn.row_opt(GET_EDGE, &[&zone_id, &id])
                .await?
                .as_ref()
                .map(edge)
                .transpose()
        })
        .await
    }

    async fn graph_epoch(&self, zone_id: &str) -> StoreResult<i64> {
        self.bounded("graph_epoch", async {
            let conn = self.conn().await?;
            let row = conn
                .row_opt(
                    "SELECT epoch FROM delegation_graph_epochs WHERE zone_id = $1",
                    &[&zone_id],
                )
                .await?;
            match row {
                Some(row) => col(&row, "delegation_graph_epoch", "epoch"),
                None => Ok(0),
            }
        })
        .await
    }

    async fn list_sessions(
        &self,
        zone_id: &str,
        filter: &SessionFilter,
        req: &IdPage,
    ) -> StoreResult<Page<Session>> {
        self.bounded("list_sessions", async {
            let status = filter.status.as_ref().map(enum_str).transpose()?;
            let lifecycle = filter.lifecycle.map(|l| l.as_str());
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ",
                        session_cols!(),
                        " FROM sessions WHERE zone_id = $1 \
                           AND ($2::text IS NULL OR status = $2::text) \
                           AND ($3::text IS NULL OR lifecycle = $3::text) \
                           AND ($4::text IS NULL OR application_id = $4::text) \
                           AND ($5::text IS NULL OR $5::text = ANY (labels)) \
                           AND ($6::text IS NULL OR parent_id = $6::text) \
                           AND ($7::text IS NULL OR id < $7::text) \
                         ORDER BY id DESC LIMIT $8"
                    ),
                    &[
                        &zone_id,
                        &status,
                        &lifecycle,
                        &filter.application_id,
                        &filter.label,
                        &filter.parent_id,
                        &req.after_id,
                        &limit(req.limit)?,
                    ],
                )
                .await?;
            let items = all(&rows, session)?;
            // The page is keyed by id alone; the cursor's time is the last session's start.
            let full = req.limit > 0 && items.len() >= req.limit as usize;
            let next = if full {
                items.last().map(|s| Cursor {
                    created_at: s.started_at,
                    id: s.agent_session_id.clone(),
                })
            } else {
                None
            };
            Ok(Page { items, next })
        })
        .await
    }

    async fn list_edges(
        &self,
        zone_id: &str,
        filter: &EdgeFilter,
        req: &IdPage,
    ) -> StoreResult<Page<DelegationEdge>> {
        self.bounded("list_edges", async {
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ",
                        edge_cols!(),
                        " FROM delegation_edges WHERE zone_id = $1 \
                           AND ($2::timestamptz IS NULL \
                                OR (status = 'active' AND expires_at > $2::timestamptz)) \
                           AND ($3::text IS NULL OR issuer_application_id = $3::text \
                                OR receiver_application_id = $3::text) \
                           AND ($4::text IS NULL OR source_session_id = $4::text) \
                           AND ($5::text IS NULL OR target_session_id = $5::text) \
                           AND ($6::text IS NULL OR id < $6::text) \
                         ORDER BY id DESC LIMIT $7"
                    ),
                    &[
                        &zone_id,
                        &filter.live_at,
                        &filter.party_application_id,
                        &filter.source_session_id,
                        &filter.target_session_id,
                        &req.after_id,
                        &limit(req.limit)?,
                    ],
                )
                .await?;
            let items = all(&rows, edge)?;
            let full = req.limit > 0 && items.len() >= req.limit as usize;
            let next = if full {
                items.last().map(|e| Cursor {
                    created_at: e.created_at,
                    id: e.id.clone(),
                })
            } else {
                None
            };
            Ok(Page { items, next })
        })
        .await
    }

    async fn session_edges(
        &self,
        zone_id: &str,
        session_id: &str,
        inbound: bool,
    ) -> StoreResult<Vec<DelegationEdge>> {
        self.bounded("session_edges", async {
            let conn = self.conn().await?;
            let sql = if inbound {
                INBOUND_EDGES
            } else {
                OUTBOUND_EDGES
            };
            let rows = conn.rows(sql, &[&zone_id, &session_id]).await?;
            all(&rows, edge)
        })
        .await
    }

    async fn expired_tasks_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<ZoneRef>> {
        self.due("expired_tasks_due", EXPIRED_TASKS_DUE, now, limit)
            .await
    }

    async fn lapsed_leases_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<ZoneRef>> {
        self.due("lapsed_leases_due", LAPSED_LEASES_DUE, now, limit)
            .await
    }

    async fn expired_edges_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<ZoneRef>> {
        self.due("expired_edges_due", EXPIRED_EDGES_DUE, now, limit)
            .await
    }

    async fn purge_retired_edges(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        self.purge("purge_retired_edges", PURGE_RETIRED_EDGES, before, limit)
            .await
    }

    async fn purge_retired_sessions(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        self.purge(
            "purge_retired_sessions",
            PURGE_RETIRED_SESSIONS,
            before,
            limit,
        )
        .await
    }

    async fn purge_expired_receipts(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        self.purge("purge_expired_receipts", PURGE_EXPIRED_RECEIPTS, now, limit)
            .await
    }
}

/// A per-zone unit of work on Postgres: one transaction holding the zone's advisory lock.
///
/// [`commit`](CoordinatorTx::commit) makes it durable and releases the zone; dropping it
/// uncommitted queues a `ROLLBACK` on its connection before the connection goes back to the
/// pool, which releases the zone too (see the module doc).
pub struct PgCoordinatorTx {
    store: PgStore,
    zone_id: String,
    tx: Tx<'static>,
}

impl std::fmt::Debug for PgCoordinatorTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCoordinatorTx")
            .field("zone_id", &self.zone_id)
            .finish_non_exhaustive()
    }
}

impl PgCoordinatorTx {
    /// Refuse a record of another zone: the unit of work holds only its own zone's lock.
    fn same_zone(&self, zone_id: &str, what: &str) -> StoreResult<()> {
        if zone_id == self.zone_id {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!(
                "{what} belongs to another zone than the unit of work"
            )))
        }
    }
}

#[async_trait]
impl CoordinatorTx for PgCoordinatorTx {
    fn zone_id(&self) -> &str {
        &self.zone_id
    }

    async fn get_session(&mut self, id: &str) -> StoreResult<Option<Session>> {
        let zone = &self.zone_id;
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "get_session", async {
            tx.row_opt(GET_SESSION, &[zone, &id])
                .await?
                .as_ref()
                .map(session)
                .transpose()
        })
        .await
    }

    async fn children(&mut self, parent_id: &str) -> StoreResult<Vec<Session>> {
        let zone = &self.zone_id;
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "children", async {
            let rows = tx
                .rows(
                    concat!(
                        "SELECT ",
                        session_cols!(),
                        " FROM sessions \
                         WHERE zone_id = $1 AND parent_id = $2 ORDER BY id"
                    ),
                    &[zone, &parent_id],
                )
                .await?;
            all(&rows, session)
        })
        .await
    }

    async fn count_live_sessions(
        &mut self,
        application_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let zone = &self.zone_id;
        let tx = &mut self.tx;
        bounded_by(
            self.store.operation_timeout(),
            "count_live_sessions",
            async {
                // A live slot: a task (active or suspended) within its TTL, or a service that is
                // suspended or holds an unexpired lease. A task past its TTL frees its slot
                // before the sweeper marks it expired.
                let row = tx
                    .row(
                        "SELECT count(*) AS live FROM sessions \
                     WHERE zone_id = $1 AND ($2::text IS NULL OR application_id = $2::text) \
                       AND status IN ('active', 'suspended') \
                       AND ((lifecycle = 'task' \
                             AND started_at + ttl_seconds * interval '1 second' > $3) \
                         OR (lifecycle = 'service' \
                             AND (status = 'suspended' OR heartbeat_deadline_at > $3)))",
                        &[zone, &application_id, &now],
                    )
                    .await?;
                let n: i64 = col(&row, "session", "live")?;
                Ok(u64::try_from(n).unwrap_or(0))
            },
        )
        .await
    }

    async fn insert_session(&mut self, s: &Session) -> StoreResult<()> {
        self.same_zone(&s.zone_id, "the session")?;
        let status = enum_str(&s.status)?;
        let metadata = serde_json::Value::Object(s.metadata.clone());
        let stamp = self.store.stamp();
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "insert_session", async {
            // A duplicate id is reported without aborting the transaction.
            let n = tx
                .exec(
                    concat!(
                        "INSERT INTO sessions (",
                        session_cols!(),
                        ", created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                                 $16, $17, $18, $19, COALESCE($20::timestamptz, now()), \
                                 COALESCE($20::timestamptz, now())) \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[
                        &s.agent_session_id,
                        &s.zone_id,
                        &s.application_id,
                        &s.parent_id,
                        &s.subject_authority_record_id,
                        &s.lifecycle.as_str(),
                        &s.labels,
                        &status,
                        &s.depth,
                        &s.ttl_seconds,
                        &metadata,
                        &s.started_at,
                        &s.terminated_at,
                        &s.termination_reason,
                        &s.last_heartbeat_at,
                        &s.heartbeat_deadline_at,
                        &s.lease_generation,
                        &s.child_count,
                        &s.max_children,
                        &stamp,
                    ],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::conflict("session_id"));
            }
            Ok(())
        })
        .await
    }

    async fn update_session(&mut self, s: &Session) -> StoreResult<()> {
        self.same_zone(&s.zone_id, "the session")?;
        let status = enum_str(&s.status)?;
        let metadata = serde_json::Value::Object(s.metadata.clone());
        let stamp = self.store.stamp();
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "update_session", async {
            // Identity and placement (application, parent, subject anchor, lifecycle, depth, start)
            // never change.
            let n = tx
                .exec(
                    "UPDATE sessions SET labels = $3, status = $4, ttl_seconds = $5, \
                     metadata = $6, terminated_at = $7, termination_reason = $8, \
                     last_heartbeat_at = $9, heartbeat_deadline_at = $10, lease_generation = $11, \
                     child_count = $12, max_children = $13, \
                     updated_at = COALESCE($14::timestamptz, now()) \
                     WHERE zone_id = $1 AND id = $2",
                    &[
                        &s.zone_id,
                        &s.agent_session_id,
                        &s.labels,
                        &status,
                        &s.ttl_seconds,
                        &metadata,
                        &s.terminated_at,
                        &s.termination_reason,
                        &s.last_heartbeat_at,
                        &s.heartbeat_deadline_at,
                        &s.lease_generation,
                        &s.child_count,
                        &s.max_children,
                        &stamp,
                    ],
                )
                .await?;
            changed(n, "session")
        })
        .await
    }

    async fn get_edge(&mut self, id: &str) -> StoreResult<Option<DelegationEdge>> {
        let zone = &self.zone_id;
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "get_edge", async {
            tx.row_opt(GET_EDGE, &[zone, &id])
                .await?
                .as_ref()
                .map(edge)
                .transpose()
        })
        .await
    }

    async fn session_edges(
        &mut self,
        session_id: &str,
        inbound: bool,
    ) -> StoreResult<Vec<DelegationEdge>> {
        let zone = &self.zone_id;
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "session_edges", async {
            let sql = if inbound {
                INBOUND_EDGES
            } else {
                OUTBOUND_EDGES
            };
            let rows = tx.rows(sql, &[zone, &session_id]).await?;
            all(&rows, edge)
        })
        .await
    }

    async fn live_edges(&mut self, now: DateTime<Utc>) -> StoreResult<Vec<DelegationEdge>> {
        let zone = &self.zone_id;
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "live_edges", async {
            let rows = tx
                .rows(
                    concat!(
                        "SELECT ",
                        edge_cols!(),
                        " FROM delegation_edges \
                         WHERE zone_id = $1 AND status = 'active' AND expires_at > $2 ORDER BY id"
                    ),
                    &[zone, &now],
                )
                .await?;
            all(&rows, edge)
        })
        .await
    }

    async fn insert_edge(&mut self, e: &DelegationEdge) -> StoreResult<()> {
        self.same_zone(&e.zone_id, "the delegation edge")?;
        let status = enum_str(&e.status)?;
        let constraints = serde_json::Value::Object(e.constraints_json.clone());
        let stamp = self.store.stamp();
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "insert_edge", async {
            let n = tx
                .exec(
                    concat!(
                        "INSERT INTO delegation_edges (",
                        edge_cols!(),
                        ", updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                                 COALESCE($16::timestamptz, now())) \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[
                        &e.id,
                        &e.zone_id,
                        &e.source_session_id,
                        &e.target_session_id,
                        &e.issuer_application_id,
                        &e.receiver_application_id,
                        &e.parent_edge_id,
                        &e.resource_id,
                        &e.scopes,
                        &constraints,
                        &status,
                        &e.expires_at,
                        &e.edge_version,
                        &e.revoked_at,
                        &e.created_at,
                        &stamp,
                    ],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::conflict("delegation_edge_id"));
            }
            Ok(())
        })
        .await
    }

    async fn update_edge(&mut self, e: &DelegationEdge) -> StoreResult<()> {
        self.same_zone(&e.zone_id, "the delegation edge")?;
        let status = enum_str(&e.status)?;
        let stamp = self.store.stamp();
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "update_edge", async {
            let n = tx
                .exec(
                    "UPDATE delegation_edges SET status = $3, edge_version = $4, revoked_at = $5, \
                     updated_at = COALESCE($6::timestamptz, now()) \
                     WHERE zone_id = $1 AND id = $2",
                    &[
                        &e.zone_id,
                        &e.id,
                        &status,
                        &e.edge_version,
                        &e.revoked_at,
                        &stamp,
                    ],
                )
                .await?;
            changed(n, "delegation_edge")
        })
        .await
    }

    async fn bump_epoch(&mut self) -> StoreResult<i64> {
        let zone = &self.zone_id;
        let stamp = self.store.stamp();
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "bump_epoch", async {
            let row = tx
                .row(
                    "INSERT INTO delegation_graph_epochs (zone_id, epoch, updated_at) \
                     VALUES ($1, 1, COALESCE($2::timestamptz, now())) \
                     ON CONFLICT (zone_id) DO UPDATE \
                     SET epoch = delegation_graph_epochs.epoch + 1, updated_at = EXCLUDED.updated_at \
                     RETURNING epoch",
                    &[zone, &stamp],
                )
                .await?;
            col(&row, "delegation_graph_epoch", "epoch")
        })
        .await
    }

    async fn get_receipt(
        &mut self,
        operation: IdempotentOperation,
        scope_id: &str,
        key_digest: &[u8; 32],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<IdempotencyReceipt>> {
        let zone = &self.zone_id;
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "get_receipt", async {
            let key: &[u8] = key_digest;
            tx.row_opt(
                concat!(
                    "SELECT ",
                    receipt_cols!(),
                    " FROM coordinator_idempotency_receipts \
                     WHERE operation = $1 AND zone_id = $2 AND scope_id = $3 AND key_digest = $4 \
                       AND expires_at > $5"
                ),
                &[&operation.as_str(), zone, &scope_id, &key, &now],
            )
            .await?
            .as_ref()
            .map(receipt)
            .transpose()
        })
        .await
    }

    async fn count_receipts(
        &mut self,
        operation: IdempotentOperation,
        scope_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let zone = &self.zone_id;
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "count_receipts", async {
            let row = tx
                .row(
                    "SELECT count(*) AS live FROM coordinator_idempotency_receipts \
                     WHERE operation = $1 AND zone_id = $2 AND scope_id = $3 AND expires_at > $4",
                    &[&operation.as_str(), zone, &scope_id, &now],
                )
                .await?;
            let n: i64 = col(&row, "idempotency_receipt", "live")?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn put_receipt(&mut self, r: &IdempotencyReceipt) -> StoreResult<()> {
        self.same_zone(&r.zone_id, "the idempotency receipt")?;
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "put_receipt", async {
            let key: &[u8] = &r.key_digest;
            let request: &[u8] = &r.request_digest;
            let status = i32::from(r.response_status);
            // A receipt that is still live at the new one's creation keeps its key: the
            // conditional `DO UPDATE` changes nothing and the conflict is reported without
            // aborting the transaction. An expired one is replaced.
            let n = tx
                .exec(
                    "INSERT INTO coordinator_idempotency_receipts \
                       (operation, zone_id, scope_id, key_digest, request_digest, result_id, \
                        response_status, response_json, response_text, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, CAST($8::text AS jsonb), $8::text, $9, $10) \
                     ON CONFLICT ON CONSTRAINT idempotency_receipt_key DO UPDATE \
                     SET request_digest = EXCLUDED.request_digest, result_id = EXCLUDED.result_id, \
                         response_status = EXCLUDED.response_status, \
                         response_json = EXCLUDED.response_json, \
                         response_text = EXCLUDED.response_text, \
                         created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at \
                     WHERE coordinator_idempotency_receipts.expires_at <= EXCLUDED.created_at",
                    &[
                        &r.operation.as_str(),
                        &r.zone_id,
                        &r.scope_id,
                        &key,
                        &request,
                        &r.result_id,
                        &status,
                        &r.response_json,
                        &r.created_at,
                        &r.expires_at,
                    ],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::conflict("idempotency_receipt"));
            }
            Ok(())
        })
        .await
    }

    async fn enqueue(&mut self, message: &OutboxMessage) -> StoreResult<String> {
        let id = self.store.ids().next_id();
        // Stamped by the database (transaction start) unless a stamp clock is installed.
        let stamp = self.store.stamp();
        let tx = &mut self.tx;
        bounded_by(self.store.operation_timeout(), "enqueue", async {
            enqueue_in(tx, &id, message, stamp).await
        })
        .await
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        let limit = self.store.operation_timeout();
        let this = *self;
        bounded_by(limit, "commit", this.tx.commit()).await
    }
}
