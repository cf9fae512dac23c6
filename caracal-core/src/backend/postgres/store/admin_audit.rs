//! The admin audit chain on Postgres (`admin_audit_events`).
//!
//! An append runs in one transaction holding
//! `pg_advisory_xact_lock(hashtext(zone_id or 'admin-audit::global'))` (the reference's lock),
//! reads the chain head `WHERE zone_id IS NOT DISTINCT FROM $1`, links with the shared rule
//! [`AdminAuditRecord::link`] and inserts. The table's trigger refuses updates and deletes.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::PgStore;
use super::conn::Tx;
use super::rows::{all, col, limit};
use crate::audit::{AuditHmacKey, ChainHead};
use crate::store::StoreResult;
use crate::store::admin_audit::{AdminAuditEntry, AdminAuditRecord, AdminAuditStore};

const E: &str = "admin_audit_event";

fn record(row: &Row) -> StoreResult<AdminAuditRecord> {
    Ok(AdminAuditRecord {
        entry: AdminAuditEntry {
            id: col(row, E, "id")?,
            request_id: col(row, E, "request_id")?,
            actor_id: col(row, E, "actor_id")?,
            actor_name: col(row, E, "actor_name")?,
            actor_scope: col(row, E, "actor_scope")?,
            method: col(row, E, "method")?,
            path: col(row, E, "path")?,
            zone_id: col(row, E, "zone_id")?,
            entity_type: col(row, E, "entity_type")?,
            entity_id: col(row, E, "entity_id")?,
            status_code: col(row, E, "status_code")?,
            payload: col(row, E, "payload")?,
            occurred_at: col(row, E, "occurred_at")?,
        },
        action: col(row, E, "action")?,
        content_sha256: col(row, E, "content_sha256")?,
        prev_content_sha256: col(row, E, "prev_content_sha256")?,
        chain_hmac: col(row, E, "chain_hmac")?,
        chain_seq: col(row, E, "chain_seq")?,
    })
}

async fn insert(tx: &mut Tx<'_>, r: &AdminAuditRecord) -> StoreResult<u64> {
    let e = &r.entry;
    tx.exec(
        "INSERT INTO admin_audit_events (id, request_id, actor_id, actor_name, actor_scope, \
             action, method, path, zone_id, entity_type, entity_id, status_code, payload, \
             occurred_at, content_sha256, prev_content_sha256, chain_hmac, chain_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        &[
            &e.id,
            &e.request_id,
            &e.actor_id,
            &e.actor_name,
            &e.actor_scope,
            &r.action,
            &e.method,
            &e.path,
            &e.zone_id,
            &e.entity_type,
            &e.entity_id,
            &e.status_code,
            &e.payload,
            &e.occurred_at,
            &r.content_sha256,
            &r.prev_content_sha256,
            &r.chain_hmac,
            &r.chain_seq,
        ],
    )
    .await
}

#[async_trait]
impl AdminAuditStore for PgStore {
    async fn append_admin_audit(
        &self,
        entry: &AdminAuditEntry,
        key: Option<&AuditHmacKey>,
    ) -> StoreResult<AdminAuditRecord> {
        let zone = entry.normalized().zone_id;
        let lock_key = entry.normalized().chain().to_owned();
        self.bounded("admin_audit_append", async {
            let mut tx = Tx::begin(self.conn().await?).await?;
            // INVARIANT: every append to this chain serialises on this lock until commit, so
            // the head read below cannot move before the new row is linked onto it.
            tx.exec("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
                .await?;
            let head = tx
                .row_opt(
                    "SELECT content_sha256, chain_seq FROM admin_audit_events \
                     WHERE zone_id IS NOT DISTINCT FROM $1 ORDER BY chain_seq DESC LIMIT 1",
                    &[&zone],
                )
                .await?
                .map(|r| -> StoreResult<ChainHead> {
                    Ok(ChainHead {
                        content_sha256: col(&r, E, "content_sha256")?,
                        chain_seq: col(&r, E, "chain_seq")?,
                    })
                })
                .transpose()?;
            let record = AdminAuditRecord::link(entry, head.as_ref(), key)?;
            insert(&mut tx, &record).await?;
            tx.commit().await?;
            Ok(record)
        })
        .await
    }

    async fn list_admin_audit(
        &self,
        zone_id: Option<&str>,
        after_seq: i64,
        n: u32,
    ) -> StoreResult<Vec<AdminAuditRecord>> {
        let n = limit(n)?;
        self.bounded("admin_audit_list", async {
            let rows = self
                .conn()
                .await?
                .rows(
                    "SELECT id, request_id, actor_id, actor_name, actor_scope, action, method, \
                         path, zone_id, entity_type, entity_id, status_code, payload, \
                         occurred_at, content_sha256, prev_content_sha256, chain_hmac, \
                         chain_seq \
                     FROM admin_audit_events \
                     WHERE zone_id IS NOT DISTINCT FROM $1 AND chain_seq > $2 \
                     ORDER BY chain_seq, id LIMIT $3",
                    &[&zone_id, &after_seq, &n],
                )
                .await?;
            all(&rows, record)
        })
        .await
    }
}
