//! The transactional outbox: enqueue (with dedupe), claims under leases, and the
//! dispatcher's bookkeeping.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Row;

use super::conn::{PgConnection, Tx};
use super::rows::{all, col, col_json, to_json};
use super::{PgStore, changed};
use crate::store::outbox::{OutboxMessage, OutboxRow, OutboxStats, OutboxStore};
use crate::store::{StoreError, StoreResult};

macro_rules! outbox_cols {
    () => {
        "id, stream, fields, dedupe_key, attempts, available_at, locked_until, last_error, \
         dispatched_at, dead_at, created_at"
    };
}

/// Insert a row; a `(stream, dedupe_key)` already present coalesces it (nothing is inserted
/// and no row id is returned). `$5` is the stamp (`NULL`: the database's `now()`).
const INSERT: &str = "INSERT INTO outbox (id, stream, fields, dedupe_key, available_at, created_at) \
     VALUES ($1, $2, $3, $4, COALESCE($5::timestamptz, now()), COALESCE($5::timestamptz, now())) \
     ON CONFLICT (stream, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING \
     RETURNING id";

/// The row a dedupe key coalesced into. `ON CONFLICT DO NOTHING` waited for the conflicting
/// row's transaction, and in READ COMMITTED this later statement sees it (committed, or our
/// own transaction's).
const DEDUPED: &str = "SELECT id FROM outbox WHERE stream = $1 AND dedupe_key = $2";

fn outbox_row(row: &Row) -> StoreResult<OutboxRow> {
    const E: &str = "outbox";
    Ok(OutboxRow {
        id: col(row, E, "id")?,
        message: OutboxMessage {
            stream: col(row, E, "stream")?,
            fields: col_json(row, E, "fields")?,
            dedupe_key: col(row, E, "dedupe_key")?,
        },
        attempts: col(row, E, "attempts")?,
        available_at: col(row, E, "available_at")?,
        locked_until: col(row, E, "locked_until")?,
        last_error: col(row, E, "last_error")?,
        dispatched_at: col(row, E, "dispatched_at")?,
        dead_at: col(row, E, "dead_at")?,
        created_at: col(row, E, "created_at")?,
    })
}

/// `Ok` if the row a bookkeeping update named exists (changed or deliberately left alone),
/// `NotFound` otherwise.
fn present(row: &Row) -> StoreResult<()> {
    if col::<bool>(row, "outbox", "present")? {
        Ok(())
    } else {
        Err(StoreError::not_found("outbox"))
    }
}

/// The id of a coalesced row, or an error if it vanished in between (retention deleted it).
fn coalesced(row: Option<Row>) -> StoreResult<Option<String>> {
    row.as_ref().map(|r| col(r, "outbox", "id")).transpose()
}

fn vanished() -> StoreError {
    StoreError::Unavailable {
        retryable: true,
        message: "an outbox row coalesced by its dedupe key vanished before it could be read"
            .to_owned(),
    }
}

/// Enqueue on a plain connection (autocommit).
pub(crate) async fn enqueue_on(
    conn: &PgConnection,
    id: &str,
    message: &OutboxMessage,
    at: Option<DateTime<Utc>>,
) -> StoreResult<String> {
    let fields = to_json(&message.fields, "outbox fields")?;
    // Two passes: the coalescing row can only vanish between the statements if retention
    // deleted it, and then the second insert succeeds.
    for _ in 0..2 {
        if let Some(row) = conn
            .row_opt(
                INSERT,
                &[&id, &message.stream, &fields, &message.dedupe_key, &at],
            )
            .await?
        {
            return col(&row, "outbox", "id");
        }
        let existing = conn
            .row_opt(DEDUPED, &[&message.stream, &message.dedupe_key])
            .await?;
        if let Some(id) = coalesced(existing)? {
            return Ok(id);
        }
    }
    Err(vanished())
}

/// Enqueue inside a transaction: published iff the transaction commits.
pub(crate) async fn enqueue_in(
    tx: &mut Tx<'_>,
    id: &str,
    message: &OutboxMessage,
    at: Option<DateTime<Utc>>,
) -> StoreResult<String> {
    let fields = to_json(&message.fields, "outbox fields")?;
    if let Some(row) = tx
        .row_opt(
            INSERT,
            &[&id, &message.stream, &fields, &message.dedupe_key, &at],
        )
        .await?
    {
        return col(&row, "outbox", "id");
    }
    let existing = tx
        .row_opt(DEDUPED, &[&message.stream, &message.dedupe_key])
        .await?;
    coalesced(existing)?.ok_or_else(vanished)
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn enqueue(&self, message: &OutboxMessage, now: DateTime<Utc>) -> StoreResult<String> {
        self.bounded("outbox enqueue", async {
            let id = self.ids().next_id();
            let conn = self.conn().await?;
            enqueue_on(&conn, &id, message, Some(now)).await
        })
        .await
    }

    async fn claim(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<OutboxRow>> {
        self.bounded("outbox claim", async {
            // A non-positive lease would hand a row out already expired, so a second claimer
            // at the same instant could take it too.
            if lease <= Duration::zero() {
                return Err(StoreError::Invalid("outbox lease must be positive".to_owned()));
            }
            let until = now
                .checked_add_signed(lease)
                .ok_or_else(|| StoreError::Invalid("instant out of range".to_owned()))?;
            let conn = self.conn().await?;
            // INVARIANT: `FOR UPDATE SKIP LOCKED` keeps concurrent claimers off each other's
            // rows while their statements run, and a committed claim's lease (`locked_until`
            // in the future) fails the re-checked `WHERE` of any claimer that saw the row
            // before, so a row is never handed out twice while its lease holds.
            let rows = conn
                .rows(
                    concat!(
                        "WITH due AS ( \
                           SELECT id FROM outbox \
                            WHERE dispatched_at IS NULL AND dead_at IS NULL AND available_at <= $1 \
                              AND (locked_until IS NULL OR locked_until <= $1) \
                            ORDER BY available_at, id \
                            LIMIT $2 \
                            FOR UPDATE SKIP LOCKED), \
                         claimed AS ( \
                           UPDATE outbox o SET attempts = o.attempts + 1, locked_until = $3, locked_by = $4 \
                             FROM due WHERE o.id = due.id \
                           RETURNING o.id, o.stream, o.fields, o.dedupe_key, o.attempts, \
                                     o.available_at, o.locked_until, o.last_error, \
                                     o.dispatched_at, o.dead_at, o.created_at) \
                         SELECT ", outbox_cols!(), " FROM claimed ORDER BY available_at, id"
                    ),
                    &[&now, &i64::from(limit), &until, &worker],
                )
                .await?;
            all(&rows, outbox_row)
        })
        .await
    }

    async fn mark_dispatched(&self, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.bounded("outbox mark_dispatched", async {
            let conn = self.conn().await?;
            // A second report of the same publish changes nothing (at-least-once delivery);
            // a publish reported for a dead row (its worker's lease lapsed after it was given
            // up on) is still a publish.
            let row = conn
                .row(
                    "WITH published AS ( \
                       UPDATE outbox SET dispatched_at = $2, dead_at = NULL, \
                              locked_until = NULL, locked_by = NULL \
                        WHERE id = $1 AND dispatched_at IS NULL \
                       RETURNING id) \
                     SELECT EXISTS (SELECT 1 FROM outbox WHERE id = $1) AS present",
                    &[&id, &now],
                )
                .await?;
            present(&row)
        })
        .await
    }

    async fn mark_failed(
        &self,
        id: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.bounded("outbox mark_failed", async {
            let conn = self.conn().await?;
            // A late report from a worker whose lease lapsed must not undo a publish or
            // revive a dead row (only `requeue_dead` does that): such rows are left alone.
            let row = conn
                .row(
                    "WITH failed AS ( \
                       UPDATE outbox SET last_error = $2, \
                              available_at = COALESCE($3::timestamptz, available_at), \
                              dead_at = CASE WHEN $3::timestamptz IS NULL THEN $4::timestamptz END, \
                              locked_until = NULL, locked_by = NULL \
                        WHERE id = $1 AND dispatched_at IS NULL AND dead_at IS NULL \
                       RETURNING id) \
                     SELECT EXISTS (SELECT 1 FROM outbox WHERE id = $1) AS present",
                    &[&id, &error, &retry_at, &now],
                )
                .await?;
            present(&row)
        })
        .await
    }

    async fn get_outbox(&self, id: &str) -> StoreResult<Option<OutboxRow>> {
        self.bounded("outbox get", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!("SELECT ", outbox_cols!(), " FROM outbox WHERE id = $1"),
                &[&id],
            )
            .await?
            .as_ref()
            .map(outbox_row)
            .transpose()
        })
        .await
    }

    async fn outbox_stats(&self, now: DateTime<Utc>) -> StoreResult<OutboxStats> {
        self.bounded("outbox stats", async {
            let conn = self.conn().await?;
            // Dead rows are never dispatched (CHECK outbox_dispatched_or_dead), so both
            // counts come from the undispatched rows.
            let row = conn
                .row(
                    "SELECT count(*) FILTER (WHERE dead_at IS NULL) AS pending, \
                            count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead, \
                            min(created_at) FILTER (WHERE dead_at IS NULL) AS oldest_pending, \
                            min(created_at) FILTER (WHERE dead_at IS NOT NULL) AS oldest_dead \
                       FROM outbox WHERE dispatched_at IS NULL",
                    &[],
                )
                .await?;
            const E: &str = "outbox stats";
            let pending: i64 = col(&row, E, "pending")?;
            let dead: i64 = col(&row, E, "dead")?;
            let oldest_pending: Option<DateTime<Utc>> = col(&row, E, "oldest_pending")?;
            let oldest_dead: Option<DateTime<Utc>> = col(&row, E, "oldest_dead")?;
            Ok(OutboxStats {
                pending: u64::try_from(pending).unwrap_or(0),
                dead: u64::try_from(dead).unwrap_or(0),
                oldest_pending_age: oldest_pending.map(|t| now - t),
                oldest_dead_age: oldest_dead.map(|t| now - t),
            })
        })
        .await
    }

    async fn requeue_dead(&self, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.bounded("outbox requeue_dead", async {
            let conn = self.conn().await?;
            let n = conn
                .exec(
                    "UPDATE outbox SET dead_at = NULL, attempts = 0, available_at = $2, \
                     locked_until = NULL, locked_by = NULL \
                     WHERE id = $1 AND dead_at IS NOT NULL",
                    &[&id, &now],
                )
                .await?;
            changed(n, "dead_outbox")
        })
        .await
    }

    async fn purge_dispatched(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        self.bounded("outbox purge_dispatched", async {
            if limit == 0 {
                return Err(StoreError::Invalid("limit must be at least 1".to_owned()));
            }
            let conn = self.conn().await?;
            // Index `outbox_dispatched`; pending and dead rows have no `dispatched_at`.
            conn.exec(
                "WITH doomed AS ( \
                   SELECT id FROM outbox WHERE dispatched_at < $1 \
                    ORDER BY dispatched_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 DELETE FROM outbox o USING doomed WHERE o.id = doomed.id",
                &[&before, &i64::from(limit)],
            )
            .await
        })
        .await
    }
}
