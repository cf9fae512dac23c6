//! Zones, applications, resources, providers, sealed secrets and admin tokens.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::rows::{
    after, all, attribution, col, col_enum, col_json, col_object, enum_str, limit, page, to_json,
};
use super::{PgStore, changed};
use crate::model::admin_token::AdminToken;
use crate::model::application::Application;
use crate::model::provider::Provider;
use crate::model::resource::Resource;
use crate::model::zone::Zone;
use crate::store::directory::{
    AdminTokenStore, ApplicationStore, ProviderStore, ResourceStore, SealedSecret, SecretStore,
    ZoneStore,
};
use crate::store::{Listing, Page, PageRequest, StoreResult};

/// `true` to list unarchived rows, `false` for archived ones.
fn active(listing: Listing) -> bool {
    matches!(listing, Listing::Active)
}

// ---------------------------------------------------------------------------------------
// Zones
// ---------------------------------------------------------------------------------------

macro_rules! zone_cols {
    () => {
        "id, name, slug, dcr_enabled, operator_coauthor_badge, operator_governed, created_by, \
         created_via_operator, updated_by, updated_via_operator, created_at, updated_at, archived_at"
    };
}

fn zone(row: &Row) -> StoreResult<Zone> {
    const E: &str = "zone";
    Ok(Zone {
        id: col(row, E, "id")?,
        name: col(row, E, "name")?,
        slug: col(row, E, "slug")?,
        dcr_enabled: col(row, E, "dcr_enabled")?,
        operator_coauthor_badge: col(row, E, "operator_coauthor_badge")?,
        operator_governed: col(row, E, "operator_governed")?,
        attribution: attribution(row, E)?,
        created_at: col(row, E, "created_at")?,
        updated_at: col(row, E, "updated_at")?,
        archived_at: col(row, E, "archived_at")?,
    })
}

#[async_trait]
impl ZoneStore for PgStore {
    async fn insert_zone(&self, z: &Zone) -> StoreResult<()> {
        self.bounded("insert_zone", async {
            let conn = self.conn().await?;
            conn.exec(
                concat!(
                    "INSERT INTO zones (",
                    zone_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                ),
                &[
                    &z.id,
                    &z.name,
                    &z.slug,
                    &z.dcr_enabled,
                    &z.operator_coauthor_badge,
                    &z.operator_governed,
                    &z.attribution.created_by,
                    &z.attribution.created_via_operator,
                    &z.attribution.updated_by,
                    &z.attribution.updated_via_operator,
                    &z.created_at,
                    &z.updated_at,
                    &z.archived_at,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn get_zone(&self, id: &str) -> StoreResult<Option<Zone>> {
        self.bounded("get_zone", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!("SELECT ", zone_cols!(), " FROM zones WHERE id = $1"),
                &[&id],
            )
            .await?
            .as_ref()
            .map(zone)
            .transpose()
        })
        .await
    }

    async fn slug_exists(&self, slug: &str) -> StoreResult<bool> {
        self.bounded("slug_exists", async {
            let conn = self.conn().await?;
            let row = conn
                .row(
                    "SELECT EXISTS (SELECT 1 FROM zones WHERE slug = $1) AS taken",
                    &[&slug],
                )
                .await?;
            col(&row, "zone", "taken")
        })
        .await
    }

    async fn list_zones(&self, req: &PageRequest) -> StoreResult<Page<Zone>> {
        self.bounded("list_zones", async {
            let conn = self.conn().await?;
            let (at, id) = after(req);
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ", zone_cols!(), " FROM zones WHERE archived_at IS NULL \
                         AND ($1::timestamptz IS NULL OR (created_at, id) < ($1::timestamptz, $2::text)) \
                         ORDER BY created_at DESC, id DESC LIMIT $3"
                    ),
                    &[&at, &id, &limit(req.limit)?],
                )
                .await?;
            Ok(page(all(&rows, zone)?, req.limit, |z| (z.created_at, z.id.clone())))
        })
        .await
    }

    async fn update_zone(&self, z: &Zone) -> StoreResult<()> {
        self.bounded("update_zone", async {
            let conn = self.conn().await?;
            let n = conn
                .exec(
                    "UPDATE zones SET name = $2, slug = $3, dcr_enabled = $4, \
                     operator_coauthor_badge = $5, operator_governed = $6, \
                     updated_by = $7, updated_via_operator = $8, updated_at = $9 \
                     WHERE id = $1 AND archived_at IS NULL",
                    &[
                        &z.id,
                        &z.name,
                        &z.slug,
                        &z.dcr_enabled,
                        &z.operator_coauthor_badge,
                        &z.operator_governed,
                        &z.attribution.updated_by,
                        &z.attribution.updated_via_operator,
                        &z.updated_at,
                    ],
                )
                .await?;
            changed(n, "zone")
        })
        .await
    }

    async fn archive_zone(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        self.bounded("archive_zone", async {
            let conn = self.conn().await?;
            let n = conn
                .exec(
                    "UPDATE zones SET archived_at = $2, updated_at = $2 WHERE id = $1 AND archived_at IS NULL",
                    &[&id, &at],
                )
                .await?;
            changed(n, "zone")
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Applications
// ---------------------------------------------------------------------------------------

macro_rules! application_cols {
    () => {
        "id, zone_id, name, registration_method, traits, expires_at, archived_at, created_by, \
         created_via_operator, updated_by, updated_via_operator, created_at, updated_at, \
         client_secret_hash"
    };
}

fn application(row: &Row) -> StoreResult<Application> {
    const E: &str = "application";
    Ok(Application {
        id: col(row, E, "id")?,
        zone_id: col(row, E, "zone_id")?,
        name: col(row, E, "name")?,
        registration_method: col_enum(row, E, "registration_method")?,
        traits: col(row, E, "traits")?,
        expires_at: col(row, E, "expires_at")?,
        archived_at: col(row, E, "archived_at")?,
        attribution: attribution(row, E)?,
        created_at: col(row, E, "created_at")?,
        updated_at: col(row, E, "updated_at")?,
        client_secret_hash: col(row, E, "client_secret_hash")?,
    })
}

#[async_trait]
impl ApplicationStore for PgStore {
    async fn insert_application(&self, a: &Application) -> StoreResult<()> {
        self.bounded("insert_application", async {
            let conn = self.conn().await?;
            conn.exec(
                concat!(
                    "INSERT INTO applications (",
                    application_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ),
                &[
                    &a.id,
                    &a.zone_id,
                    &a.name,
                    &a.registration_method.as_str(),
                    &a.traits,
                    &a.expires_at,
                    &a.archived_at,
                    &a.attribution.created_by,
                    &a.attribution.created_via_operator,
                    &a.attribution.updated_by,
                    &a.attribution.updated_via_operator,
                    &a.created_at,
                    &a.updated_at,
                    &a.client_secret_hash,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn get_application(&self, zone_id: &str, id: &str) -> StoreResult<Option<Application>> {
        self.bounded("get_application", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    application_cols!(),
                    " FROM applications WHERE zone_id = $1 AND id = $2"
                ),
                &[&zone_id, &id],
            )
            .await?
            .as_ref()
            .map(application)
            .transpose()
        })
        .await
    }

    async fn find_application(&self, id: &str) -> StoreResult<Option<Application>> {
        self.bounded("find_application", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    application_cols!(),
                    " FROM applications WHERE id = $1"
                ),
                &[&id],
            )
            .await?
            .as_ref()
            .map(application)
            .transpose()
        })
        .await
    }

    async fn list_applications(
        &self,
        zone_id: &str,
        listing: Listing,
        req: &PageRequest,
    ) -> StoreResult<Page<Application>> {
        self.bounded("list_applications", async {
            let conn = self.conn().await?;
            let (at, id) = after(req);
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ", application_cols!(), " FROM applications \
                         WHERE zone_id = $1 AND (archived_at IS NULL) = $2 \
                         AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::text)) \
                         ORDER BY created_at DESC, id DESC LIMIT $5"
                    ),
                    &[&zone_id, &active(listing), &at, &id, &limit(req.limit)?],
                )
                .await?;
            Ok(page(all(&rows, application)?, req.limit, |a| {
                (a.created_at, a.id.clone())
            }))
        })
        .await
    }

    async fn update_application(&self, a: &Application) -> StoreResult<()> {
        self.bounded("update_application", async {
            let conn = self.conn().await?;
            let n = conn
                .exec(
                    "UPDATE applications SET name = $3, traits = $4, client_secret_hash = $5, \
                     updated_by = $6, updated_via_operator = $7, updated_at = $8 \
                     WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
                    &[
                        &a.zone_id,
                        &a.id,
                        &a.name,
                        &a.traits,
                        &a.client_secret_hash,
                        &a.attribution.updated_by,
                        &a.attribution.updated_via_operator,
                        &a.updated_at,
                    ],
                )
                .await?;
            changed(n, "application")
        })
        .await
    }

    async fn archive_application(
        &self,
        zone_id: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.archive_row(
            "archive_application",
            "UPDATE applications SET archived_at = $3, updated_at = $3 \
                     WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
            "application",
            zone_id,
            id,
            at,
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------

macro_rules! resource_cols {
    () => {
        "id, zone_id, name, identifier, upstream_url, scopes, credential_provider_id, operations, \
         operation_enforcement, created_by, created_via_operator, updated_by, updated_via_operator, \
         created_at, updated_at, archived_at"
    };
}

fn resource(row: &Row) -> StoreResult<Resource> {
    const E: &str = "resource";
    Ok(Resource {
        id: col(row, E, "id")?,
        zone_id: col(row, E, "zone_id")?,
        name: col(row, E, "name")?,
        identifier: col(row, E, "identifier")?,
        upstream_url: col(row, E, "upstream_url")?,
        scopes: col(row, E, "scopes")?,
        credential_provider_id: col(row, E, "credential_provider_id")?,
        operations: col_json(row, E, "operations")?,
        operation_enforcement: col_enum(row, E, "operation_enforcement")?,
        attribution: attribution(row, E)?,
        created_at: col(row, E, "created_at")?,
        updated_at: col(row, E, "updated_at")?,
        archived_at: col(row, E, "archived_at")?,
    })
}

#[async_trait]
impl ResourceStore for PgStore {
    async fn insert_resource(&self, r: &Resource) -> StoreResult<()> {
        self.bounded("insert_resource", async {
            let operations = to_json(&r.operations, "operations")?;
            let enforcement = enum_str(&r.operation_enforcement)?;
            let conn = self.conn().await?;
            conn.exec(
                concat!("INSERT INTO resources (", resource_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"),
                &[
                    &r.id,
                    &r.zone_id,
                    &r.name,
                    &r.identifier,
                    &r.upstream_url,
                    &r.scopes,
                    &r.credential_provider_id,
                    &operations,
                    &enforcement,
                    &r.attribution.created_by,
                    &r.attribution.created_via_operator,
                    &r.attribution.updated_by,
                    &r.attribution.updated_via_operator,
                    &r.created_at,
                    &r.updated_at,
                    &r.archived_at,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn get_resource(&self, zone_id: &str, id: &str) -> StoreResult<Option<Resource>> {
        self.bounded("get_resource", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    resource_cols!(),
                    " FROM resources WHERE zone_id = $1 AND id = $2"
                ),
                &[&zone_id, &id],
            )
            .await?
            .as_ref()
            .map(resource)
            .transpose()
        })
        .await
    }

    async fn get_resource_by_identifier(
        &self,
        zone_id: &str,
        identifier: &str,
    ) -> StoreResult<Option<Resource>> {
        self.bounded("get_resource_by_identifier", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    resource_cols!(),
                    " FROM resources \
                     WHERE zone_id = $1 AND identifier = $2 AND archived_at IS NULL"
                ),
                &[&zone_id, &identifier],
            )
            .await?
            .as_ref()
            .map(resource)
            .transpose()
        })
        .await
    }

    async fn list_resources(
        &self,
        zone_id: &str,
        listing: Listing,
        req: &PageRequest,
    ) -> StoreResult<Page<Resource>> {
        self.bounded("list_resources", async {
            let conn = self.conn().await?;
            let (at, id) = after(req);
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ", resource_cols!(), " FROM resources \
                         WHERE zone_id = $1 AND (archived_at IS NULL) = $2 \
                         AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::text)) \
                         ORDER BY created_at DESC, id DESC LIMIT $5"
                    ),
                    &[&zone_id, &active(listing), &at, &id, &limit(req.limit)?],
                )
                .await?;
            Ok(page(all(&rows, resource)?, req.limit, |r| {
                (r.created_at, r.id.clone())
            }))
        })
        .await
    }

    async fn update_resource(&self, r: &Resource) -> StoreResult<()> {
        self.bounded("update_resource", async {
            let operations = to_json(&r.operations, "operations")?;
            let enforcement = enum_str(&r.operation_enforcement)?;
            let conn = self.conn().await?;
            let n = conn
                .exec(
                    "UPDATE resources SET name = $3, identifier = $4, upstream_url = $5, \
                     scopes = $6, credential_provider_id = $7, operations = $8, \
                     operation_enforcement = $9, updated_by = $10, updated_via_operator = $11, \
                     updated_at = $12 \
                     WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
                    &[
                        &r.zone_id,
                        &r.id,
                        &r.name,
                        &r.identifier,
                        &r.upstream_url,
                        &r.scopes,
                        &r.credential_provider_id,
                        &operations,
                        &enforcement,
                        &r.attribution.updated_by,
                        &r.attribution.updated_via_operator,
                        &r.updated_at,
                    ],
                )
                .await?;
            changed(n, "resource")
        })
        .await
    }

    async fn archive_resource(
        &self,
        zone_id: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.archive_row(
            "archive_resource",
            "UPDATE resources SET archived_at = $3, updated_at = $3 \
                     WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
            "resource",
            zone_id,
            id,
            at,
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Providers
// ---------------------------------------------------------------------------------------

macro_rules! provider_cols {
    () => {
        "id, zone_id, name, identifier, kind, config_json, secret_config_keys, \
         connectivity_failed_at, created_by, created_via_operator, updated_by, \
         updated_via_operator, created_at, updated_at, archived_at"
    };
}

fn provider(row: &Row) -> StoreResult<Provider> {
    const E: &str = "provider";
    Ok(Provider {
        id: col(row, E, "id")?,
        zone_id: col(row, E, "zone_id")?,
        name: col(row, E, "name")?,
        identifier: col(row, E, "identifier")?,
        kind: col_enum(row, E, "kind")?,
        config_json: col_object(row, E, "config_json")?,
        secret_config_keys: col(row, E, "secret_config_keys")?,
        connectivity_failed_at: col(row, E, "connectivity_failed_at")?,
        attribution: attribution(row, E)?,
        created_at: col(row, E, "created_at")?,
        updated_at: col(row, E, "updated_at")?,
        archived_at: col(row, E, "archived_at")?,
    })
}

#[async_trait]
impl ProviderStore for PgStore {
    async fn insert_provider(&self, p: &Provider) -> StoreResult<()> {
        self.bounded("insert_provider", async {
            let kind = enum_str(&p.kind)?;
            let config = serde_json::Value::Object(p.config_json.clone());
            let conn = self.conn().await?;
            conn.exec(
                concat!(
                    "INSERT INTO providers (",
                    provider_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                ),
                &[
                    &p.id,
                    &p.zone_id,
                    &p.name,
                    &p.identifier,
                    &kind,
                    &config,
                    &p.secret_config_keys,
                    &p.connectivity_failed_at,
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
            Ok(())
        })
        .await
    }

    async fn get_provider(&self, zone_id: &str, id: &str) -> StoreResult<Option<Provider>> {
        self.bounded("get_provider", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    provider_cols!(),
                    " FROM providers WHERE zone_id = $1 AND id = $2"
                ),
                &[&zone_id, &id],
            )
            .await?
            .as_ref()
            .map(provider)
            .transpose()
        })
        .await
    }

    async fn get_provider_by_identifier(
        &self,
        zone_id: &str,
        identifier: &str,
    ) -> StoreResult<Option<Provider>> {
        self.bounded("get_provider_by_identifier", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    provider_cols!(),
                    " FROM providers \
                     WHERE zone_id = $1 AND identifier = $2 AND archived_at IS NULL"
                ),
                &[&zone_id, &identifier],
            )
            .await?
            .as_ref()
            .map(provider)
            .transpose()
        })
        .await
    }

    async fn list_providers(
        &self,
        zone_id: &str,
        listing: Listing,
        req: &PageRequest,
    ) -> StoreResult<Page<Provider>> {
        self.bounded("list_providers", async {
            let conn = self.conn().await?;
            let (at, id) = after(req);
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ", provider_cols!(), " FROM providers \
                         WHERE zone_id = $1 AND (archived_at IS NULL) = $2 \
                         AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::text)) \
                         ORDER BY created_at DESC, id DESC LIMIT $5"
                    ),
                    &[&zone_id, &active(listing), &at, &id, &limit(req.limit)?],
                )
                .await?;
            Ok(page(all(&rows, provider)?, req.limit, |p| {
                (p.created_at, p.id.clone())
            }))
        })
        .await
    }

    async fn update_provider(&self, p: &Provider) -> StoreResult<()> {
        self.bounded("update_provider", async {
            let kind = enum_str(&p.kind)?;
            let config = serde_json::Value::Object(p.config_json.clone());
            let conn = self.conn().await?;
            let n = conn
                .exec(
                    "UPDATE providers SET name = $3, identifier = $4, kind = $5, config_json = $6, \
                     secret_config_keys = $7, connectivity_failed_at = $8, updated_by = $9, \
                     updated_via_operator = $10, updated_at = $11 \
                     WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
                    &[
                        &p.zone_id,
                        &p.id,
                        &p.name,
                        &p.identifier,
                        &kind,
                        &config,
                        &p.secret_config_keys,
                        &p.connectivity_failed_at,
                        &p.attribution.updated_by,
                        &p.attribution.updated_via_operator,
                        &p.updated_at,
                    ],
                )
                .await?;
            changed(n, "provider")
        })
        .await
    }

    async fn archive_provider(
        &self,
        zone_id: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.archive_row(
            "archive_provider",
            "UPDATE providers SET archived_at = $3, updated_at = $3 \
                     WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
            "provider",
            zone_id,
            id,
            at,
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Sealed secrets
// ---------------------------------------------------------------------------------------

#[async_trait]
impl SecretStore for PgStore {
    async fn put_secret(&self, reference: &str, envelope: &[u8]) -> StoreResult<i64> {
        self.bounded("put_secret", async {
            let stamp = self.stamp();
            let conn = self.conn().await?;
            // One statement, so two concurrent replacements each get their own version.
            let row = conn
                .row(
                    "INSERT INTO secret_store (reference, envelope, version, created_at, updated_at) \
                     VALUES ($1, $2, 1, COALESCE($3::timestamptz, now()), COALESCE($3::timestamptz, now())) \
                     ON CONFLICT (reference) DO UPDATE \
                     SET envelope = EXCLUDED.envelope, version = secret_store.version + 1, \
                         updated_at = EXCLUDED.updated_at \
                     RETURNING version",
                    &[&reference, &envelope, &stamp],
                )
                .await?;
            col(&row, "secret", "version")
        })
        .await
    }

    async fn get_secret(&self, reference: &str) -> StoreResult<Option<SealedSecret>> {
        self.bounded("get_secret", async {
            let conn = self.conn().await?;
            let Some(row) = conn
                .row_opt(
                    "SELECT reference, envelope, version FROM secret_store WHERE reference = $1",
                    &[&reference],
                )
                .await?
            else {
                return Ok(None);
            };
            const E: &str = "secret";
            Ok(Some(SealedSecret {
                reference: col(&row, E, "reference")?,
                envelope: col(&row, E, "envelope")?,
                version: col(&row, E, "version")?,
            }))
        })
        .await
    }

    async fn delete_secret(&self, reference: &str) -> StoreResult<bool> {
        self.bounded("delete_secret", async {
            let conn = self.conn().await?;
            let n = conn
                .exec(
                    "DELETE FROM secret_store WHERE reference = $1",
                    &[&reference],
                )
                .await?;
            Ok(n > 0)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Admin tokens
// ---------------------------------------------------------------------------------------

macro_rules! admin_token_cols {
    () => {
        "id, name, scope, capability, zone_id, created_by, created_at, last_used_at, revoked_at, \
         token_sha256"
    };
}

fn admin_token(row: &Row) -> StoreResult<AdminToken> {
    const E: &str = "admin_token";
    let digest: Vec<u8> = col(row, E, "token_sha256")?;
    let token_sha256: [u8; 32] = digest
        .try_into()
        .map_err(|_| super::error::malformed(E, "column token_sha256: not 32 bytes"))?;
    Ok(AdminToken {
        id: col(row, E, "id")?,
        name: col(row, E, "name")?,
        scope: col_enum(row, E, "scope")?,
        capability: col_enum(row, E, "capability")?,
        zone_id: col(row, E, "zone_id")?,
        created_by: col(row, E, "created_by")?,
        created_at: col(row, E, "created_at")?,
        last_used_at: col(row, E, "last_used_at")?,
        revoked_at: col(row, E, "revoked_at")?,
        token_sha256,
    })
}

#[async_trait]
impl AdminTokenStore for PgStore {
    async fn insert_admin_token(&self, t: &AdminToken) -> StoreResult<()> {
        self.bounded("insert_admin_token", async {
            let scope = enum_str(&t.scope)?;
            let capability = enum_str(&t.capability)?;
            let digest: &[u8] = &t.token_sha256;
            let conn = self.conn().await?;
            conn.exec(
                concat!(
                    "INSERT INTO admin_tokens (",
                    admin_token_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                &[
                    &t.id,
                    &t.name,
                    &scope,
                    &capability,
                    &t.zone_id,
                    &t.created_by,
                    &t.created_at,
                    &t.last_used_at,
                    &t.revoked_at,
                    &digest,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn find_admin_token(&self, sha256: &[u8; 32]) -> StoreResult<Option<AdminToken>> {
        self.bounded("find_admin_token", async {
            let digest: &[u8] = sha256;
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    admin_token_cols!(),
                    " FROM admin_tokens \
                     WHERE token_sha256 = $1 AND revoked_at IS NULL"
                ),
                &[&digest],
            )
            .await?
            .as_ref()
            .map(admin_token)
            .transpose()
        })
        .await
    }

    async fn list_admin_tokens(&self, req: &PageRequest) -> StoreResult<Page<AdminToken>> {
        self.bounded("list_admin_tokens", async {
            let conn = self.conn().await?;
            let (at, id) = after(req);
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ", admin_token_cols!(), " FROM admin_tokens \
                         WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1::timestamptz, $2::text)) \
                         ORDER BY created_at DESC, id DESC LIMIT $3"
                    ),
                    &[&at, &id, &limit(req.limit)?],
                )
                .await?;
            Ok(page(all(&rows, admin_token)?, req.limit, |t| {
                (t.created_at, t.id.clone())
            }))
        })
        .await
    }

    async fn revoke_admin_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        self.bounded("revoke_admin_token", async {
            let conn = self.conn().await?;
            let n = conn
                .exec(
                    "UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    &[&id, &at],
                )
                .await?;
            changed(n, "admin_token")
        })
        .await
    }

    async fn touch_admin_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        self.bounded("touch_admin_token", async {
            let conn = self.conn().await?;
            let n = conn
                .exec(
                    "UPDATE admin_tokens SET last_used_at = $2 WHERE id = $1",
                    &[&id, &at],
                )
                .await?;
            changed(n, "admin_token")
        })
        .await
    }
}
