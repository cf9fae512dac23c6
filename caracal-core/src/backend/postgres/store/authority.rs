//! Authority records and their `parent_id` lineage.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::PgStore;
use super::conn::Tx;
use super::rows::{all, col, col_enum, enum_str};
use crate::model::authority::AuthorityRecord;
use crate::store::authority::{AuthorityStore, MAX_LINEAGE_DEPTH};
use crate::store::{StoreError, StoreResult};

macro_rules! authority_cols {
    () => {
        "id, zone_id, session_type, subject_id, parent_id, status, expires_at, authenticated_at, \
         claims_json, revoked_at, revoked_reason, created_at"
    };
}

fn authority(row: &Row) -> StoreResult<AuthorityRecord> {
    const E: &str = "authority_record";
    Ok(AuthorityRecord {
        id: col(row, E, "id")?,
        zone_id: col(row, E, "zone_id")?,
        session_type: col_enum(row, E, "session_type")?,
        subject_id: col(row, E, "subject_id")?,
        parent_id: col(row, E, "parent_id")?,
        status: col_enum(row, E, "status")?,
        expires_at: col(row, E, "expires_at")?,
        authenticated_at: col(row, E, "authenticated_at")?,
        claims_json: col(row, E, "claims_json")?,
        revoked_at: col(row, E, "revoked_at")?,
        revoked_reason: col(row, E, "revoked_reason")?,
        created_at: col(row, E, "created_at")?,
    })
}

#[async_trait]
impl AuthorityStore for PgStore {
    async fn insert_authority(&self, r: &AuthorityRecord) -> StoreResult<()> {
        self.bounded("insert_authority", async {
            let status = enum_str(&r.status)?;
            let conn = self.conn().await?;
            conn.exec(
                concat!(
                    "INSERT INTO authority_records (",
                    authority_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ),
                &[
                    &r.id,
                    &r.zone_id,
                    &r.session_type.as_str(),
                    &r.subject_id,
                    &r.parent_id,
                    &status,
                    &r.expires_at,
                    &r.authenticated_at,
                    &r.claims_json,
                    &r.revoked_at,
                    &r.revoked_reason,
                    &r.created_at,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn get_authority(&self, zone_id: &str, id: &str) -> StoreResult<Option<AuthorityRecord>> {
        self.bounded("get_authority", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    authority_cols!(),
                    " FROM authority_records WHERE zone_id = $1 AND id = $2"
                ),
                &[&zone_id, &id],
            )
            .await?
            .as_ref()
            .map(authority)
            .transpose()
        })
        .await
    }

    async fn authority_lineage(
        &self,
        zone_id: &str,
        id: &str,
    ) -> StoreResult<Vec<AuthorityRecord>> {
        self.bounded("authority_lineage", async {
            // One more row than the bound is fetched, to tell "exactly at the bound" from
            // "beyond it". `UNION ALL` with a depth counter terminates even on a cycle.
            let max = i32::try_from(MAX_LINEAGE_DEPTH).unwrap_or(i32::MAX);
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    concat!(
                        "WITH RECURSIVE lineage AS ( \
                           SELECT ", authority_cols!(), ", 1 AS depth FROM authority_records \
                            WHERE zone_id = $1 AND id = $2 \
                           UNION ALL \
                           SELECT a.id, a.zone_id, a.session_type, a.subject_id, a.parent_id, a.status, \
                                  a.expires_at, a.authenticated_at, a.claims_json, a.revoked_at, \
                                  a.revoked_reason, a.created_at, l.depth + 1 \
                             FROM authority_records a \
                             JOIN lineage l ON a.zone_id = l.zone_id AND a.id = l.parent_id \
                            WHERE l.depth <= $3) \
                         SELECT ", authority_cols!(), " FROM lineage ORDER BY depth"
                    ),
                    &[&zone_id, &id, &max],
                )
                .await?;
            if rows.len() > MAX_LINEAGE_DEPTH {
                return Err(StoreError::LimitExceeded("authority lineage depth"));
            }
            all(&rows, authority)
        })
        .await
    }

    async fn revoke_authority(
        &self,
        zone_id: &str,
        id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.bounded("revoke_authority", async {
            let conn = self.conn().await?;
            let n = conn
                .exec(
                    "UPDATE authority_records \
                     SET status = 'revoked', revoked_at = $4, revoked_reason = $3 \
                     WHERE zone_id = $1 AND id = $2 AND status = 'active'",
                    &[&zone_id, &id, &reason, &at],
                )
                .await?;
            Ok(n > 0)
        })
        .await
    }

    async fn revoke_authority_tree(
        &self,
        zone_id: &str,
        id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        self.bounded("revoke_authority_tree", async {
            let mut tx = Tx::begin(self.conn().await?).await?;
            // INVARIANT: cascades of one zone serialise with every other writer of the zone's
            // delegation graph on this lock (the reference's `delegation:<zone>`), so a child
            // inserted concurrently is either seen by the walk or inserted after it commits.
            tx.exec(
                "SELECT pg_advisory_xact_lock(hashtext('delegation:' || $1::text))",
                &[&zone_id],
            )
            .await?;
            // `UNION` (not `UNION ALL`) drops rows already seen, so the walk ends even on a
            // corrupt cycle.
            let rows = tx
                .rows(
                    "WITH RECURSIVE tree(id) AS ( \
                       SELECT id FROM authority_records WHERE zone_id = $1 AND id = $2 \
                       UNION \
                       SELECT a.id FROM authority_records a \
                         JOIN tree t ON a.zone_id = $1 AND a.parent_id = t.id), \
                     revoked AS ( \
                       UPDATE authority_records r \
                          SET status = 'revoked', \
                              revoked_at = COALESCE(r.revoked_at, $4), \
                              revoked_reason = COALESCE(r.revoked_reason, $3) \
                         FROM tree \
                        WHERE r.zone_id = $1 AND r.id = tree.id AND r.status <> 'revoked' \
                       RETURNING r.id) \
                     SELECT id FROM revoked",
                    &[&zone_id, &id, &reason, &at],
                )
                .await?;
            let mut ids = rows
                .iter()
                .map(|r| col(r, "authority_record", "id"))
                .collect::<StoreResult<Vec<String>>>()?;
            tx.commit().await?;
            // Sorted byte-wise here, not by the database collation, so both backends agree.
            ids.sort();
            Ok(ids)
        })
        .await
    }

    async fn revoke_subject(
        &self,
        zone_id: &str,
        subject_id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        self.bounded("revoke_subject", async {
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    "WITH revoked AS ( \
                       UPDATE authority_records \
                          SET status = 'revoked', revoked_at = $4, revoked_reason = $3 \
                        WHERE zone_id = $1 AND subject_id = $2 AND status = 'active' \
                       RETURNING id) \
                     SELECT id FROM revoked ORDER BY id",
                    &[&zone_id, &subject_id, &reason, &at],
                )
                .await?;
            rows.iter()
                .map(|r| col(r, "authority_record", "id"))
                .collect()
        })
        .await
    }
}
