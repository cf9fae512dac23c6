//! Policies, immutable versions, policy sets, set versions and the per-zone binding.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::conn::Tx;
use super::outbox::enqueue_in;
use super::rows::{after, all, attribution, col, col_json, limit, page, to_json};
use super::{PgStore, changed};
use crate::model::policy_set::{
    Policy, PolicySet, PolicySetBinding, PolicySetVersion, PolicyVersion,
};
use crate::store::outbox::OutboxMessage;
use crate::store::policy::{ActivePolicy, PolicyStore};
use crate::store::{Page, PageRequest, StoreError, StoreResult};

/// Serialises binding changes (activation, set archival) of one zone.
const BINDING_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('policy_binding:' || $1::text))";

macro_rules! policy_cols {
    () => {
        "id, zone_id, name, description, created_by, created_via_operator, updated_by, \
         updated_via_operator, created_at, updated_at, archived_at"
    };
}

macro_rules! policy_version_cols {
    () => {
        "id, policy_id, zone_id, version, content, content_sha256, schema_version, created_by, \
         created_at"
    };
}

macro_rules! set_cols {
    () => {
        "s.id, s.zone_id, s.name, s.description, s.created_by, s.created_via_operator, \
         s.updated_by, s.updated_via_operator, s.created_at, s.updated_at, s.archived_at, \
         b.active_version_id"
    };
}

macro_rules! set_version_cols {
    () => {
        "id, policy_set_id, zone_id, version, manifest_json, manifest_sha256, schema_version, \
         created_at"
    };
}

fn policy(row: &Row) -> StoreResult<Policy> {
    const E: &str = "policy";
    Ok(Policy {
        id: col(row, E, "id")?,
        zone_id: col(row, E, "zone_id")?,
        name: col(row, E, "name")?,
        description: col(row, E, "description")?,
        attribution: attribution(row, E)?,
        created_at: col(row, E, "created_at")?,
        updated_at: col(row, E, "updated_at")?,
        archived_at: col(row, E, "archived_at")?,
    })
}

fn policy_version(row: &Row) -> StoreResult<PolicyVersion> {
    const E: &str = "policy_version";
    Ok(PolicyVersion {
        id: col(row, E, "id")?,
        policy_id: col(row, E, "policy_id")?,
        zone_id: col(row, E, "zone_id")?,
        version: col(row, E, "version")?,
        content: col(row, E, "content")?,
        content_sha256: col(row, E, "content_sha256")?,
        schema_version: col(row, E, "schema_version")?,
        created_by: col(row, E, "created_by")?,
        created_at: col(row, E, "created_at")?,
    })
}

fn policy_set(row: &Row) -> StoreResult<PolicySet> {
    const E: &str = "policy_set";
    Ok(PolicySet {
        id: col(row, E, "id")?,
        zone_id: col(row, E, "zone_id")?,
        name: col(row, E, "name")?,
        description: col(row, E, "description")?,
        attribution: attribution(row, E)?,
        created_at: col(row, E, "created_at")?,
        updated_at: col(row, E, "updated_at")?,
        active_version_id: col(row, E, "active_version_id")?,
        archived_at: col(row, E, "archived_at")?,
    })
}

fn set_version(row: &Row) -> StoreResult<PolicySetVersion> {
    const E: &str = "policy_set_version";
    Ok(PolicySetVersion {
        id: col(row, E, "id")?,
        policy_set_id: col(row, E, "policy_set_id")?,
        zone_id: col(row, E, "zone_id")?,
        version: col(row, E, "version")?,
        manifest_json: col_json(row, E, "manifest_json")?,
        manifest_sha256: col(row, E, "manifest_sha256")?,
        schema_version: col(row, E, "schema_version")?,
        created_at: col(row, E, "created_at")?,
    })
}

/// Insert a policy version with an explicit number (the first one).
const INSERT_POLICY_VERSION: &str = concat!(
    "INSERT INTO policy_versions (",
    policy_version_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);

#[async_trait]
impl PolicyStore for PgStore {
    async fn insert_policy(&self, p: &Policy, first: &PolicyVersion) -> StoreResult<()> {
        self.bounded("insert_policy", async {
            if first.policy_id != p.id || first.zone_id != p.zone_id {
                return Err(StoreError::Invalid(
                    "the first version must belong to the policy and its zone".to_owned(),
                ));
            }
            let mut tx = Tx::begin(self.conn().await?).await?;
            tx.exec(
                concat!(
                    "INSERT INTO policies (",
                    policy_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ),
                &[
                    &p.id,
                    &p.zone_id,
                    &p.name,
                    &p.description,
                    &p.attribution.created_by,
                    &p.attribution.created_via_operator,
                    &p.attribution.updated_by,
                    &p.attribution.updated_via_operator,
                    &p.created_at,
                    &p.updated_at,
                    &p.archived_at,
                ],
            )
            .await?;
            // The first version is number 1, whatever the caller filled in.
            tx.exec(
                INSERT_POLICY_VERSION,
                &[
                    &first.id,
                    &p.id,
                    &p.zone_id,
                    &1_i32,
                    &first.content,
                    &first.content_sha256,
                    &first.schema_version,
                    &first.created_by,
                    &first.created_at,
                ],
            )
            .await?;
            tx.commit().await
        })
        .await
    }

    async fn add_policy_version(&self, v: &PolicyVersion) -> StoreResult<PolicyVersion> {
        self.bounded("add_policy_version", async {
            let mut tx = Tx::begin(self.conn().await?).await?;
            // INVARIANT: the policy row stays locked until commit, so concurrent appends to
            // one policy serialise and `max + 1` is never taken twice.
            let parent = tx
                .row_opt(
                    "SELECT id FROM policies \
                     WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL FOR UPDATE",
                    &[&v.zone_id, &v.policy_id],
                )
                .await?;
            if parent.is_none() {
                return Err(StoreError::not_found("policy"));
            }
            let row = tx
                .row(
                    concat!(
                        "INSERT INTO policy_versions (",
                        policy_version_cols!(),
                        ") \
                         SELECT $1, $2, $3, COALESCE(max(version), 0) + 1, $4, $5, $6, $7, $8 \
                           FROM policy_versions WHERE zone_id = $3 AND policy_id = $2 \
                         RETURNING ",
                        policy_version_cols!()
                    ),
                    &[
                        &v.id,
                        &v.policy_id,
                        &v.zone_id,
                        &v.content,
                        &v.content_sha256,
                        &v.schema_version,
                        &v.created_by,
                        &v.created_at,
                    ],
                )
                .await?;
            let stored = policy_version(&row)?;
            tx.commit().await?;
            Ok(stored)
        })
        .await
    }

    async fn get_policy(&self, zone_id: &str, id: &str) -> StoreResult<Option<Policy>> {
        self.bounded("get_policy", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    policy_cols!(),
                    " FROM policies WHERE zone_id = $1 AND id = $2"
                ),
                &[&zone_id, &id],
            )
            .await?
            .as_ref()
            .map(policy)
            .transpose()
        })
        .await
    }

    async fn list_policies(&self, zone_id: &str, req: &PageRequest) -> StoreResult<Page<Policy>> {
        self.bounded("list_policies", async {
            let conn = self.conn().await?;
            let (at, id) = after(req);
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ", policy_cols!(), " FROM policies \
                         WHERE zone_id = $1 AND archived_at IS NULL \
                         AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::text)) \
                         ORDER BY created_at DESC, id DESC LIMIT $4"
                    ),
                    &[&zone_id, &at, &id, &limit(req.limit)?],
                )
                .await?;
            Ok(page(all(&rows, policy)?, req.limit, |p| {
                (p.created_at, p.id.clone())
            }))
        })
        .await
    }

    async fn policy_versions(
        &self,
        zone_id: &str,
        policy_id: &str,
    ) -> StoreResult<Vec<PolicyVersion>> {
        self.bounded("policy_versions", async {
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ",
                        policy_version_cols!(),
                        " FROM policy_versions \
                         WHERE zone_id = $1 AND policy_id = $2 ORDER BY version DESC"
                    ),
                    &[&zone_id, &policy_id],
                )
                .await?;
            all(&rows, policy_version)
        })
        .await
    }

    async fn get_policy_versions(
        &self,
        zone_id: &str,
        ids: &[String],
    ) -> StoreResult<Vec<PolicyVersion>> {
        self.bounded("get_policy_versions", async {
            let conn = self.conn().await?;
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ",
                        policy_version_cols!(),
                        " FROM policy_versions \
                         WHERE zone_id = $1 AND id = ANY($2)"
                    ),
                    &[&zone_id, &ids],
                )
                .await?;
            let found = all(&rows, policy_version)?;
            // In the order asked; an id asked twice is returned twice.
            Ok(ids
                .iter()
                .filter_map(|id| found.iter().find(|v| &v.id == id).cloned())
                .collect())
        })
        .await
    }

    async fn archive_policy(&self, zone_id: &str, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        self.archive_row(
            "archive_policy",
            "UPDATE policies SET archived_at = $3, updated_at = $3 \
                     WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
            "policy",
            zone_id,
            id,
            at,
        )
        .await
    }

    async fn insert_policy_set(&self, s: &PolicySet) -> StoreResult<()> {
        self.bounded("insert_policy_set", async {
            let mut tx = Tx::begin(self.conn().await?).await?;
            tx.exec(
                "INSERT INTO policy_sets (id, zone_id, name, description, created_by, \
                 created_via_operator, updated_by, updated_via_operator, created_at, updated_at, \
                 archived_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &s.id,
                    &s.zone_id,
                    &s.name,
                    &s.description,
                    &s.attribution.created_by,
                    &s.attribution.created_via_operator,
                    &s.attribution.updated_by,
                    &s.attribution.updated_via_operator,
                    &s.created_at,
                    &s.updated_at,
                    &s.archived_at,
                ],
            )
            .await?;
            // A new set is unbound: activation is its own operation.
            tx.exec(
                "INSERT INTO policy_set_bindings (zone_id, policy_set_id, active_version_id, updated_at) \
                 VALUES ($1, $2, NULL, $3)",
                &[&s.zone_id, &s.id, &s.created_at],
            )
            .await?;
            tx.commit().await
        })
        .await
    }

    async fn get_policy_set(&self, zone_id: &str, id: &str) -> StoreResult<Option<PolicySet>> {
        self.bounded("get_policy_set", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ", set_cols!(), " FROM policy_sets s \
                     LEFT JOIN policy_set_bindings b ON b.zone_id = s.zone_id AND b.policy_set_id = s.id \
                     WHERE s.zone_id = $1 AND s.id = $2"
                ),
                &[&zone_id, &id],
            )
            .await?
            .as_ref()
            .map(policy_set)
            .transpose()
        })
        .await
    }

    async fn list_policy_sets(
        &self,
        zone_id: &str,
        req: &PageRequest,
    ) -> StoreResult<Page<PolicySet>> {
        self.bounded("list_policy_sets", async {
            let conn = self.conn().await?;
            let (at, id) = after(req);
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ", set_cols!(), " FROM policy_sets s \
                         LEFT JOIN policy_set_bindings b ON b.zone_id = s.zone_id AND b.policy_set_id = s.id \
                         WHERE s.zone_id = $1 AND s.archived_at IS NULL \
                         AND ($2::timestamptz IS NULL OR (s.created_at, s.id) < ($2::timestamptz, $3::text)) \
                         ORDER BY s.created_at DESC, s.id DESC LIMIT $4"
                    ),
                    &[&zone_id, &at, &id, &limit(req.limit)?],
                )
                .await?;
            Ok(page(all(&rows, policy_set)?, req.limit, |s| {
                (s.created_at, s.id.clone())
            }))
        })
        .await
    }

    async fn add_policy_set_version(&self, v: &PolicySetVersion) -> StoreResult<PolicySetVersion> {
        self.bounded("add_policy_set_version", async {
            let manifest = to_json(&v.manifest_json, "manifest")?;
            let mut tx = Tx::begin(self.conn().await?).await?;
            // INVARIANT: the set row stays locked until commit (see add_policy_version).
            let parent = tx
                .row_opt(
                    "SELECT id FROM policy_sets \
                     WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL FOR UPDATE",
                    &[&v.zone_id, &v.policy_set_id],
                )
                .await?;
            if parent.is_none() {
                return Err(StoreError::not_found("policy_set"));
            }
            let row = tx
                .row(
                    concat!(
                        "INSERT INTO policy_set_versions (",
                        set_version_cols!(),
                        ") \
                         SELECT $1, $2, $3, COALESCE(max(version), 0) + 1, $4, $5, $6, $7 \
                           FROM policy_set_versions WHERE zone_id = $3 AND policy_set_id = $2 \
                         RETURNING ",
                        set_version_cols!()
                    ),
                    &[
                        &v.id,
                        &v.policy_set_id,
                        &v.zone_id,
                        &manifest,
                        &v.manifest_sha256,
                        &v.schema_version,
                        &v.created_at,
                    ],
                )
                .await?;
            let stored = set_version(&row)?;
            tx.commit().await?;
            Ok(stored)
        })
        .await
    }

    async fn get_policy_set_version(
        &self,
        zone_id: &str,
        id: &str,
    ) -> StoreResult<Option<PolicySetVersion>> {
        self.bounded("get_policy_set_version", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    set_version_cols!(),
                    " FROM policy_set_versions \
                     WHERE zone_id = $1 AND id = $2"
                ),
                &[&zone_id, &id],
            )
            .await?
            .as_ref()
            .map(set_version)
            .transpose()
        })
        .await
    }

    async fn list_policy_set_versions(
        &self,
        zone_id: &str,
        set_id: &str,
        req: &PageRequest,
    ) -> StoreResult<Page<PolicySetVersion>> {
        self.bounded("list_policy_set_versions", async {
            let conn = self.conn().await?;
            let (at, id) = after(req);
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ", set_version_cols!(), " FROM policy_set_versions \
                         WHERE zone_id = $1 AND policy_set_id = $2 \
                         AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::text)) \
                         ORDER BY created_at DESC, id DESC LIMIT $5"
                    ),
                    &[&zone_id, &set_id, &at, &id, &limit(req.limit)?],
                )
                .await?;
            Ok(page(all(&rows, set_version)?, req.limit, |v| {
                (v.created_at, v.id.clone())
            }))
        })
        .await
    }

    async fn activate_policy_set(
        &self,
        zone_id: &str,
        set_id: &str,
        version_id: &str,
        invalidate: &OutboxMessage,
        now: DateTime<Utc>,
    ) -> StoreResult<String> {
        self.bounded("activate_policy_set", async {
            let outbox_id = self.ids().next_id();
            let mut tx = Tx::begin(self.conn().await?).await?;
            // INVARIANT: binding changes of a zone serialise on this lock, so "clear the
            // others, then bind this one" never interleaves with another activation or an
            // archival of the set being bound.
            tx.exec(BINDING_LOCK, &[&zone_id]).await?;
            let set = tx
                .row_opt(
                    "SELECT id FROM policy_sets WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
                    &[&zone_id, &set_id],
                )
                .await?;
            if set.is_none() {
                return Err(StoreError::not_found("policy_set"));
            }
            let version = tx
                .row_opt(
                    "SELECT id FROM policy_set_versions \
                     WHERE zone_id = $1 AND policy_set_id = $2 AND id = $3",
                    &[&zone_id, &set_id, &version_id],
                )
                .await?;
            if version.is_none() {
                return Err(StoreError::not_found("policy_set_version"));
            }
            tx.exec(
                "UPDATE policy_set_bindings SET active_version_id = NULL, updated_at = $3 \
                 WHERE zone_id = $1 AND policy_set_id <> $2 AND active_version_id IS NOT NULL",
                &[&zone_id, &set_id, &now],
            )
            .await?;
            tx.exec(
                "INSERT INTO policy_set_bindings \
                   (zone_id, policy_set_id, active_version_id, activated_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (zone_id, policy_set_id) DO UPDATE \
                 SET active_version_id = EXCLUDED.active_version_id, \
                     activated_at = EXCLUDED.activated_at, updated_at = EXCLUDED.updated_at",
                &[&zone_id, &set_id, &version_id, &now],
            )
            .await?;
            let id = enqueue_in(&mut tx, &outbox_id, invalidate, Some(now)).await?;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    async fn archive_policy_set(
        &self,
        zone_id: &str,
        id: &str,
        invalidate: &OutboxMessage,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.bounded("archive_policy_set", async {
            let outbox_id = self.ids().next_id();
            let mut tx = Tx::begin(self.conn().await?).await?;
            tx.exec(BINDING_LOCK, &[&zone_id]).await?;
            let n = tx
                .exec(
                    "UPDATE policy_sets SET archived_at = $3, updated_at = $3 \
                     WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
                    &[&zone_id, &id, &at],
                )
                .await?;
            changed(n, "policy_set")?;
            let cleared = tx
                .exec(
                    "UPDATE policy_set_bindings SET active_version_id = NULL, updated_at = $3 \
                     WHERE zone_id = $1 AND policy_set_id = $2 AND active_version_id IS NOT NULL",
                    &[&zone_id, &id, &at],
                )
                .await?;
            if cleared > 0 {
                enqueue_in(&mut tx, &outbox_id, invalidate, Some(at)).await?;
            }
            tx.commit().await
        })
        .await
    }

    async fn active_policy(&self, zone_id: &str) -> StoreResult<Option<ActivePolicy>> {
        self.bounded("active_policy", async {
            let conn = self.conn().await?;
            let Some(row) = conn
                .row_opt(
                    "SELECT b.policy_set_id AS binding_set_id, b.active_version_id, \
                            v.id, v.policy_set_id, v.zone_id, v.version, v.manifest_json, \
                            v.manifest_sha256, v.schema_version, v.created_at \
                       FROM policy_set_bindings b \
                       JOIN policy_set_versions v \
                         ON v.zone_id = b.zone_id AND v.id = b.active_version_id \
                      WHERE b.zone_id = $1 AND b.active_version_id IS NOT NULL",
                    &[&zone_id],
                )
                .await?
            else {
                return Ok(None);
            };
            const E: &str = "policy_set_binding";
            Ok(Some(ActivePolicy {
                binding: PolicySetBinding {
                    zone_id: zone_id.to_owned(),
                    policy_set_id: col(&row, E, "binding_set_id")?,
                    active_version_id: col(&row, E, "active_version_id")?,
                },
                version: set_version(&row)?,
            }))
        })
        .await
    }

    async fn zones_with_active_policy(&self) -> StoreResult<Vec<String>> {
        self.bounded("zones_with_active_policy", async {
            let conn = self.conn().await?;
            // Deliberately across zones: the startup seed and the safety poll need every zone.
            let rows = conn
                .rows(
                    "SELECT zone_id FROM policy_set_bindings \
                     WHERE active_version_id IS NOT NULL ORDER BY zone_id",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| col(r, "policy_set_binding", "zone_id"))
                .collect()
        })
        .await
    }
}
