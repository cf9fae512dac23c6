//! Zones, applications, resources, providers, sealed secrets and admin tokens.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Keyed, MemoryStore, keyset_page, lock};
use crate::model::admin_token::AdminToken;
use crate::model::application::{Application, RegistrationMethod};
use crate::model::provider::Provider;
use crate::model::resource::Resource;
use crate::model::zone::Zone;
use crate::store::directory::{
    AdminTokenStore, ApplicationStore, ProviderStore, ResourceStore, SealedSecret, SecretStore,
    ZoneStore,
};
use crate::store::{Listing, Page, PageRequest, StoreError, StoreResult};

/// The directory tables, keyed by row id (ids are globally unique, like primary keys).
#[derive(Default)]
pub(super) struct Tables {
    zones: HashMap<String, Zone>,
    applications: HashMap<String, Application>,
    resources: HashMap<String, Resource>,
    providers: HashMap<String, Provider>,
    secrets: HashMap<String, SealedSecret>,
    admin_tokens: HashMap<String, AdminToken>,
}

impl Keyed for Zone {
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl Keyed for Application {
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl Keyed for Resource {
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl Keyed for Provider {
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl Keyed for AdminToken {
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn id(&self) -> &str {
        &self.id
    }
}

/// Whether a row's `archived_at` matches the listing.
fn listed(archived_at: Option<DateTime<Utc>>, listing: Listing) -> bool {
    match listing {
        Listing::Active => archived_at.is_none(),
        Listing::Archived => archived_at.is_some(),
    }
}

/// Whether `app` takes part in the `application_name` key: active managed applications only.
fn holds_app_name(app: &Application) -> bool {
    app.archived_at.is_none() && app.registration_method == RegistrationMethod::Managed
}

/// The case-insensitive form of an application name (`lower(name)` in Postgres).
fn name_key(name: &str) -> String {
    name.to_lowercase()
}

#[async_trait]
impl ZoneStore for MemoryStore {
    async fn insert_zone(&self, zone: &Zone) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        if t.zones.contains_key(&zone.id) {
            return Err(StoreError::conflict("zone_id"));
        }
        // INVARIANT: slugs are unique over every zone, archived ones included.
        if t.zones.values().any(|z| z.slug == zone.slug) {
            return Err(StoreError::conflict("zone_slug"));
        }
        t.zones.insert(zone.id.clone(), zone.clone());
        Ok(())
    }

    async fn get_zone(&self, id: &str) -> StoreResult<Option<Zone>> {
        Ok(lock(&self.inner.directory).zones.get(id).cloned())
    }

    async fn slug_exists(&self, slug: &str) -> StoreResult<bool> {
        Ok(lock(&self.inner.directory)
            .zones
            .values()
            .any(|z| z.slug == slug))
    }

    async fn list_zones(&self, page: &PageRequest) -> StoreResult<Page<Zone>> {
        let t = lock(&self.inner.directory);
        keyset_page(t.zones.values().filter(|z| z.archived_at.is_none()), page)
    }

    async fn update_zone(&self, zone: &Zone) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        match t.zones.get(&zone.id) {
            Some(z) if z.archived_at.is_none() => {}
            _ => return Err(StoreError::not_found("zone")),
        }
        if t.zones
            .values()
            .any(|z| z.id != zone.id && z.slug == zone.slug)
        {
            return Err(StoreError::conflict("zone_slug"));
        }
        if let Some(z) = t.zones.get_mut(&zone.id) {
            z.name.clone_from(&zone.name);
            z.slug.clone_from(&zone.slug);
            z.dcr_enabled = zone.dcr_enabled;
            z.operator_coauthor_badge = zone.operator_coauthor_badge;
            z.operator_governed = zone.operator_governed;
            z.attribution
                .updated_by
                .clone_from(&zone.attribution.updated_by);
            z.attribution.updated_via_operator = zone.attribution.updated_via_operator;
            z.updated_at = zone.updated_at;
        }
        Ok(())
    }

    async fn archive_zone(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        match t.zones.get_mut(id) {
            Some(z) if z.archived_at.is_none() => {
                z.archived_at = Some(at);
                z.updated_at = at;
                Ok(())
            }
            _ => Err(StoreError::not_found("zone")),
        }
    }
}

#[async_trait]
impl ApplicationStore for MemoryStore {
    async fn insert_application(&self, app: &Application) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        if t.applications.contains_key(&app.id) {
            return Err(StoreError::conflict("application_id"));
        }
        if holds_app_name(app) {
            let key = name_key(&app.name);
            if t.applications
                .values()
                .any(|a| a.zone_id == app.zone_id && holds_app_name(a) && name_key(&a.name) == key)
            {
                return Err(StoreError::conflict("application_name"));
            }
        }
        t.applications.insert(app.id.clone(), app.clone());
        Ok(())
    }

    async fn get_application(&self, zone_id: &str, id: &str) -> StoreResult<Option<Application>> {
        Ok(lock(&self.inner.directory)
            .applications
            .get(id)
            .filter(|a| a.zone_id == zone_id)
            .cloned())
    }

    async fn find_application(&self, id: &str) -> StoreResult<Option<Application>> {
        Ok(lock(&self.inner.directory).applications.get(id).cloned())
    }

    async fn list_applications(
        &self,
        zone_id: &str,
        listing: Listing,
        page: &PageRequest,
    ) -> StoreResult<Page<Application>> {
        let t = lock(&self.inner.directory);
        keyset_page(
            t.applications
                .values()
                .filter(|a| a.zone_id == zone_id && listed(a.archived_at, listing)),
            page,
        )
    }

    async fn update_application(&self, app: &Application) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        let current = match t.applications.get(&app.id) {
            Some(a) if a.zone_id == app.zone_id && a.archived_at.is_none() => a,
            _ => return Err(StoreError::not_found("application")),
        };
        // The key is checked on the row as it will be after the update.
        if current.registration_method == RegistrationMethod::Managed {
            let key = name_key(&app.name);
            if t.applications.values().any(|a| {
                a.id != app.id
                    && a.zone_id == app.zone_id
                    && holds_app_name(a)
                    && name_key(&a.name) == key
            }) {
                return Err(StoreError::conflict("application_name"));
            }
        }
        if let Some(a) = t.applications.get_mut(&app.id) {
            a.name.clone_from(&app.name);
            a.traits.clone_from(&app.traits);
            a.client_secret_hash.clone_from(&app.client_secret_hash);
            a.attribution
                .updated_by
                .clone_from(&app.attribution.updated_by);
            a.attribution.updated_via_operator = app.attribution.updated_via_operator;
            a.updated_at = app.updated_at;
        }
        Ok(())
    }

    async fn archive_application(
        &self,
        zone_id: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        match t.applications.get_mut(id) {
            Some(a) if a.zone_id == zone_id && a.archived_at.is_none() => {
                a.archived_at = Some(at);
                a.updated_at = at;
                Ok(())
            }
            _ => Err(StoreError::not_found("application")),
        }
    }
}

#[async_trait]
impl ResourceStore for MemoryStore {
    async fn insert_resource(&self, resource: &Resource) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        if t.resources.contains_key(&resource.id) {
            return Err(StoreError::conflict("resource_id"));
        }
        // INVARIANT: an identifier is never reused in a zone, archived rows included.
        if t.resources
            .values()
            .any(|r| r.zone_id == resource.zone_id && r.identifier == resource.identifier)
        {
            return Err(StoreError::conflict("resource_identifier"));
        }
        t.resources.insert(resource.id.clone(), resource.clone());
        Ok(())
    }

    async fn get_resource(&self, zone_id: &str, id: &str) -> StoreResult<Option<Resource>> {
        Ok(lock(&self.inner.directory)
            .resources
            .get(id)
            .filter(|r| r.zone_id == zone_id)
            .cloned())
    }

    async fn get_resource_by_identifier(
        &self,
        zone_id: &str,
        identifier: &str,
    ) -> StoreResult<Option<Resource>> {
        Ok(lock(&self.inner.directory)
            .resources
            .values()
            .find(|r| r.zone_id == zone_id && r.identifier == identifier && r.archived_at.is_none())
            .cloned())
    }

    async fn list_resources(
        &self,
        zone_id: &str,
        listing: Listing,
        page: &PageRequest,
    ) -> StoreResult<Page<Resource>> {
        let t = lock(&self.inner.directory);
        keyset_page(
            t.resources
                .values()
                .filter(|r| r.zone_id == zone_id && listed(r.archived_at, listing)),
            page,
        )
    }

    async fn update_resource(&self, resource: &Resource) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        match t.resources.get(&resource.id) {
            Some(r) if r.zone_id == resource.zone_id && r.archived_at.is_none() => {}
            _ => return Err(StoreError::not_found("resource")),
        }
        if t.resources.values().any(|r| {
            r.id != resource.id
                && r.zone_id == resource.zone_id
                && r.identifier == resource.identifier
        }) {
            return Err(StoreError::conflict("resource_identifier"));
        }
        if let Some(r) = t.resources.get_mut(&resource.id) {
            r.name.clone_from(&resource.name);
            r.identifier.clone_from(&resource.identifier);
            r.upstream_url.clone_from(&resource.upstream_url);
            r.scopes.clone_from(&resource.scopes);
            r.credential_provider_id
                .clone_from(&resource.credential_provider_id);
            r.operations.clone_from(&resource.operations);
            r.operation_enforcement = resource.operation_enforcement;
            r.attribution
                .updated_by
                .clone_from(&resource.attribution.updated_by);
            r.attribution.updated_via_operator = resource.attribution.updated_via_operator;
            r.updated_at = resource.updated_at;
        }
        Ok(())
    }

    async fn archive_resource(
        &self,
        zone_id: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        match t.resources.get_mut(id) {
            Some(r) if r.zone_id == zone_id && r.archived_at.is_none() => {
                r.archived_at = Some(at);
                r.updated_at = at;
                Ok(())
            }
            _ => Err(StoreError::not_found("resource")),
        }
    }
}

#[async_trait]
impl ProviderStore for MemoryStore {
    async fn insert_provider(&self, provider: &Provider) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        if t.providers.contains_key(&provider.id) {
            return Err(StoreError::conflict("provider_id"));
        }
        // INVARIANT: one active provider per identifier and zone; archived rows free it.
        if provider.archived_at.is_none()
            && t.providers.values().any(|p| {
                p.zone_id == provider.zone_id
                    && p.identifier == provider.identifier
                    && p.archived_at.is_none()
            })
        {
            return Err(StoreError::conflict("provider_identifier"));
        }
        t.providers.insert(provider.id.clone(), provider.clone());
        Ok(())
    }

    async fn get_provider(&self, zone_id: &str, id: &str) -> StoreResult<Option<Provider>> {
        Ok(lock(&self.inner.directory)
            .providers
            .get(id)
            .filter(|p| p.zone_id == zone_id)
            .cloned())
    }

    async fn get_provider_by_identifier(
        &self,
        zone_id: &str,
        identifier: &str,
    ) -> StoreResult<Option<Provider>> {
        Ok(lock(&self.inner.directory)
            .providers
            .values()
            .find(|p| p.zone_id == zone_id && p.identifier == identifier && p.archived_at.is_none())
            .cloned())
    }

    async fn list_providers(
        &self,
        zone_id: &str,
        listing: Listing,
        page: &PageRequest,
    ) -> StoreResult<Page<Provider>> {
        let t = lock(&self.inner.directory);
        keyset_page(
            t.providers
                .values()
                .filter(|p| p.zone_id == zone_id && listed(p.archived_at, listing)),
            page,
        )
    }

    async fn update_provider(&self, provider: &Provider) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        match t.providers.get(&provider.id) {
            Some(p) if p.zone_id == provider.zone_id && p.archived_at.is_none() => {}
            _ => return Err(StoreError::not_found("provider")),
        }
        if t.providers.values().any(|p| {
            p.id != provider.id
                && p.zone_id == provider.zone_id
                && p.identifier == provider.identifier
                && p.archived_at.is_none()
        }) {
            return Err(StoreError::conflict("provider_identifier"));
        }
        if let Some(p) = t.providers.get_mut(&provider.id) {
            p.name.clone_from(&provider.name);
            p.identifier.clone_from(&provider.identifier);
            p.kind = provider.kind;
            p.config_json.clone_from(&provider.config_json);
            p.secret_config_keys
                .clone_from(&provider.secret_config_keys);
            p.connectivity_failed_at = provider.connectivity_failed_at;
            p.attribution
                .updated_by
                .clone_from(&provider.attribution.updated_by);
            p.attribution.updated_via_operator = provider.attribution.updated_via_operator;
            p.updated_at = provider.updated_at;
        }
        Ok(())
    }

    async fn archive_provider(
        &self,
        zone_id: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        match t.providers.get_mut(id) {
            Some(p) if p.zone_id == zone_id && p.archived_at.is_none() => {
                p.archived_at = Some(at);
                p.updated_at = at;
                Ok(())
            }
            _ => Err(StoreError::not_found("provider")),
        }
    }
}

#[async_trait]
impl SecretStore for MemoryStore {
    async fn put_secret(&self, reference: &str, envelope: &[u8]) -> StoreResult<i64> {
        let mut t = lock(&self.inner.directory);
        let version = match t.secrets.get_mut(reference) {
            Some(s) => {
                s.envelope = envelope.to_vec();
                s.version = s.version.saturating_add(1);
                s.version
            }
            None => {
                t.secrets.insert(
                    reference.to_owned(),
                    SealedSecret {
                        reference: reference.to_owned(),
                        envelope: envelope.to_vec(),
                        version: 1,
                    },
                );
                1
            }
        };
        Ok(version)
    }

    async fn get_secret(&self, reference: &str) -> StoreResult<Option<SealedSecret>> {
        Ok(lock(&self.inner.directory).secrets.get(reference).cloned())
    }

    async fn delete_secret(&self, reference: &str) -> StoreResult<bool> {
        Ok(lock(&self.inner.directory)
            .secrets
            .remove(reference)
            .is_some())
    }
}

#[async_trait]
impl AdminTokenStore for MemoryStore {
    async fn insert_admin_token(&self, token: &AdminToken) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        if t.admin_tokens.contains_key(&token.id) {
            return Err(StoreError::conflict("admin_token_id"));
        }
        // INVARIANT: a hash identifies at most one non-revoked token.
        if token.revoked_at.is_none()
            && t.admin_tokens
                .values()
                .any(|a| a.revoked_at.is_none() && a.token_sha256 == token.token_sha256)
        {
            return Err(StoreError::conflict("admin_token_sha256"));
        }
        t.admin_tokens.insert(token.id.clone(), token.clone());
        Ok(())
    }

    async fn find_admin_token(&self, sha256: &[u8; 32]) -> StoreResult<Option<AdminToken>> {
        // The hash is of a 32-byte random token, not a secret a timing side channel on this
        // comparison could reveal; the presented token itself is never stored.
        Ok(lock(&self.inner.directory)
            .admin_tokens
            .values()
            .find(|a| a.revoked_at.is_none() && &a.token_sha256 == sha256)
            .cloned())
    }

    async fn list_admin_tokens(&self, page: &PageRequest) -> StoreResult<Page<AdminToken>> {
        let t = lock(&self.inner.directory);
        keyset_page(t.admin_tokens.values(), page)
    }

    async fn revoke_admin_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        match t.admin_tokens.get_mut(id) {
            Some(a) if a.revoked_at.is_none() => {
                a.revoked_at = Some(at);
                Ok(())
            }
            _ => Err(StoreError::not_found("admin_token")),
        }
    }

    async fn touch_admin_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let mut t = lock(&self.inner.directory);
        match t.admin_tokens.get_mut(id) {
            Some(a) => {
                a.last_used_at = Some(at);
                Ok(())
            }
            None => Err(StoreError::not_found("admin_token")),
        }
    }
}
