//! Zone signing keys: versions appended under a per-zone advisory lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::PgStore;
use super::conn::Tx;
use super::rows::{all, col};
use crate::store::StoreResult;
use crate::store::keys::{SigningKeyRow, SigningKeyStore};

fn signing_key(row: &Row) -> StoreResult<SigningKeyRow> {
    const E: &str = "zone_signing_key";
    Ok(SigningKeyRow {
        kid: col(row, E, "kid")?,
        zone_id: col(row, E, "zone_id")?,
        version: col(row, E, "version")?,
        envelope: col(row, E, "envelope")?,
        created_at: col(row, E, "created_at")?,
    })
}

#[async_trait]
impl SigningKeyStore for PgStore {
    async fn insert_signing_key(
        &self,
        zone_id: &str,
        kid: &str,
        envelope: &[u8],
        created_at: DateTime<Utc>,
    ) -> StoreResult<SigningKeyRow> {
        self.bounded("insert_signing_key", async {
            let lock_key = format!("zone_signing_key:{zone_id}");
            let mut tx = Tx::begin(self.conn().await?).await?;
            // INVARIANT: rotations of one zone serialise on this lock until commit, so the
            // `max + 1` below (a fresh snapshot in READ COMMITTED) sees every committed
            // version and two rotations never take the same number.
            tx.exec("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
                .await?;
            let row = tx
                .row(
                    "INSERT INTO zone_signing_keys (kid, zone_id, version, envelope, created_at) \
                     SELECT $1, $2, COALESCE(max(version), 0) + 1, $3, $4 \
                       FROM zone_signing_keys WHERE zone_id = $2 \
                     RETURNING kid, zone_id, version, envelope, created_at",
                    &[&kid, &zone_id, &envelope, &created_at],
                )
                .await?;
            let stored = signing_key(&row)?;
            tx.commit().await?;
            Ok(stored)
        })
        .await
    }

    async fn latest_signing_keys(
        &self,
        zone_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<SigningKeyRow>> {
        self.bounded("latest_signing_keys", async {
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    "SELECT kid, zone_id, version, envelope, created_at FROM zone_signing_keys \
                     WHERE zone_id = $1 ORDER BY version DESC LIMIT $2",
                    &[&zone_id, &i64::from(limit)],
                )
                .await?;
            all(&rows, signing_key)
        })
        .await
    }
}
