//! The Admin API's records: zones, applications, resources, providers, sealed secrets and
//! admin tokens.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Listing, Page, PageRequest, StoreResult};
use crate::model::admin_token::AdminToken;
use crate::model::application::Application;
use crate::model::provider::Provider;
use crate::model::resource::Resource;
use crate::model::zone::Zone;

/// Zones.
#[async_trait]
pub trait ZoneStore: Send + Sync {
    /// Insert a zone. Unique: `zone_slug` (over every zone, archived included).
    async fn insert_zone(&self, zone: &Zone) -> StoreResult<()>;
    /// A zone by id, archived or not.
    async fn get_zone(&self, id: &str) -> StoreResult<Option<Zone>>;
    /// Whether a slug is taken (to derive `-2`, `-3` suffixes).
    async fn slug_exists(&self, slug: &str) -> StoreResult<bool>;
    /// Unarchived zones, newest first.
    async fn list_zones(&self, page: &PageRequest) -> StoreResult<Page<Zone>>;
    /// Replace a zone's mutable fields (name, slug, flags, attribution, `updated_at`).
    /// Unique: `zone_slug`. Not found if archived.
    async fn update_zone(&self, zone: &Zone) -> StoreResult<()>;
    /// Archive a zone; `NotFound` if missing or already archived.
    async fn archive_zone(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()>;
}

/// Applications.
#[async_trait]
pub trait ApplicationStore: Send + Sync {
    /// Insert an application. Unique: `application_name` (case-insensitive among active
    /// managed applications of the zone).
    async fn insert_application(&self, app: &Application) -> StoreResult<()>;
    /// An application by id in a zone, archived or not.
    async fn get_application(&self, zone_id: &str, id: &str) -> StoreResult<Option<Application>>;
    /// An application by id in whatever zone holds it. Only for the STS's wrong-zone answer
    /// (`zone_invalid`), which it gives solely to a caller that proved the secret; every
    /// other read is zone-scoped.
    async fn find_application(&self, id: &str) -> StoreResult<Option<Application>>;
    /// Applications of a zone, newest first.
    async fn list_applications(
        &self,
        zone_id: &str,
        listing: Listing,
        page: &PageRequest,
    ) -> StoreResult<Page<Application>>;
    /// Replace an active application's mutable fields (name, traits, secret hash,
    /// attribution, `updated_at`). Unique: `application_name`. Not found if archived.
    async fn update_application(&self, app: &Application) -> StoreResult<()>;
    /// Archive; `NotFound` if missing or already archived.
    async fn archive_application(
        &self,
        zone_id: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
}

/// Resources.
#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// Insert a resource. Unique: `resource_identifier` (per zone, archived rows included, so
    /// an identifier is never reused).
    async fn insert_resource(&self, resource: &Resource) -> StoreResult<()>;
    /// A resource by id, archived or not.
    async fn get_resource(&self, zone_id: &str, id: &str) -> StoreResult<Option<Resource>>;
    /// The active resource with this identifier.
    async fn get_resource_by_identifier(
        &self,
        zone_id: &str,
        identifier: &str,
    ) -> StoreResult<Option<Resource>>;
    /// Resources of a zone, newest first.
    async fn list_resources(
        &self,
        zone_id: &str,
        listing: Listing,
        page: &PageRequest,
    ) -> StoreResult<Page<Resource>>;
    /// Replace an active resource's mutable fields. Unique: `resource_identifier`.
    async fn update_resource(&self, resource: &Resource) -> StoreResult<()>;
    /// Archive; `NotFound` if missing or already archived.
    async fn archive_resource(&self, zone_id: &str, id: &str, at: DateTime<Utc>)
    -> StoreResult<()>;
}

/// Providers. Their secret values live in the [`SecretStore`], sealed.
#[async_trait]
pub trait ProviderStore: Send + Sync {
    /// Insert a provider. Unique: `provider_identifier` (per zone among active rows).
    async fn insert_provider(&self, provider: &Provider) -> StoreResult<()>;
    /// A provider by id, archived or not.
    async fn get_provider(&self, zone_id: &str, id: &str) -> StoreResult<Option<Provider>>;
    /// The active provider with this identifier.
    async fn get_provider_by_identifier(
        &self,
        zone_id: &str,
        identifier: &str,
    ) -> StoreResult<Option<Provider>>;
    /// Providers of a zone, newest first.
    async fn list_providers(
        &self,
        zone_id: &str,
        listing: Listing,
        page: &PageRequest,
    ) -> StoreResult<Page<Provider>>;
    /// Replace an active provider's mutable fields. Unique: `provider_identifier`.
    async fn update_provider(&self, provider: &Provider) -> StoreResult<()>;
    /// Archive; `NotFound` if missing or already archived.
    async fn archive_provider(&self, zone_id: &str, id: &str, at: DateTime<Utc>)
    -> StoreResult<()>;
}

/// A sealed value in the secret store: a CSS1 envelope whose AAD is its `reference`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Reference, e.g. `zones/<zone>/providers/<provider>/secretConfig`.
    pub reference: String,
    /// The CSS1 envelope.
    pub envelope: Vec<u8>,
    /// Incremented on every replacement.
    pub version: i64,
}

/// Sealed secret documents (the reference's builtin `secret_store`).
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Insert or replace; returns the new version (1 for a new reference).
    async fn put_secret(&self, reference: &str, envelope: &[u8]) -> StoreResult<i64>;
    /// The sealed value, if any.
    async fn get_secret(&self, reference: &str) -> StoreResult<Option<SealedSecret>>;
    /// Delete; returns whether something was deleted.
    async fn delete_secret(&self, reference: &str) -> StoreResult<bool>;
}

/// Admin tokens, looked up by the SHA-256 of the presented token.
#[async_trait]
pub trait AdminTokenStore: Send + Sync {
    /// Insert. Unique: `admin_token_sha256` among non-revoked tokens.
    async fn insert_admin_token(&self, token: &AdminToken) -> StoreResult<()>;
    /// The non-revoked token with this hash.
    async fn find_admin_token(&self, sha256: &[u8; 32]) -> StoreResult<Option<AdminToken>>;
    /// Every token, revoked included, newest first.
    async fn list_admin_tokens(&self, page: &PageRequest) -> StoreResult<Page<AdminToken>>;
    /// Revoke; `NotFound` if missing or already revoked.
    async fn revoke_admin_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// Record a use (best effort; callers ignore its failure).
    async fn touch_admin_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()>;
}
