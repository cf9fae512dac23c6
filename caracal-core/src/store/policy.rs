//! Policies, immutable versions, policy sets, set versions and the per-zone binding.
//!
//! Versions are immutable once written (the Postgres schema enforces it with triggers; the
//! trait offers no way to change one). At most one set version is active per zone.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::outbox::OutboxMessage;
use super::{Page, PageRequest, StoreResult};
use crate::model::policy_set::{
    Policy, PolicySet, PolicySetBinding, PolicySetVersion, PolicyVersion,
};

/// The active set version of a zone, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivePolicy {
    /// The binding.
    pub binding: PolicySetBinding,
    /// The active set version.
    pub version: PolicySetVersion,
}

/// Policies and policy sets.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Insert a policy with its first version (version 1), atomically. Unique: `policy_name`
    /// (per zone among active policies). The first version's `version` field is ignored (it is
    /// stored as 1); it must name the policy and its zone, else `Invalid`.
    async fn insert_policy(&self, policy: &Policy, first: &PolicyVersion) -> StoreResult<()>;
    /// Append a version; the store assigns `version = max + 1` atomically and returns the
    /// stored row (the caller's `version` field is ignored). `NotFound` if the policy is
    /// missing or archived.
    async fn add_policy_version(&self, version: &PolicyVersion) -> StoreResult<PolicyVersion>;
    /// A policy by id, archived or not.
    async fn get_policy(&self, zone_id: &str, id: &str) -> StoreResult<Option<Policy>>;
    /// Active policies, newest first.
    async fn list_policies(&self, zone_id: &str, page: &PageRequest) -> StoreResult<Page<Policy>>;
    /// Every version of a policy, newest first.
    async fn policy_versions(
        &self,
        zone_id: &str,
        policy_id: &str,
    ) -> StoreResult<Vec<PolicyVersion>>;
    /// Versions by id, in the order asked; missing ids are left out (callers compare counts).
    async fn get_policy_versions(
        &self,
        zone_id: &str,
        ids: &[String],
    ) -> StoreResult<Vec<PolicyVersion>>;
    /// Archive a policy; `NotFound` if missing or already archived.
    async fn archive_policy(&self, zone_id: &str, id: &str, at: DateTime<Utc>) -> StoreResult<()>;

    /// Insert a set and its empty binding, atomically. Unique: `policy_set_name` (per zone
    /// among active sets). The set's `active_version_id` is not stored: it always comes
    /// from the binding.
    async fn insert_policy_set(&self, set: &PolicySet) -> StoreResult<()>;
    /// A set by id (with `active_version_id` filled from its binding), archived or not.
    async fn get_policy_set(&self, zone_id: &str, id: &str) -> StoreResult<Option<PolicySet>>;
    /// Active sets, newest first.
    async fn list_policy_sets(
        &self,
        zone_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<PolicySet>>;
    /// Append a set version; `version = max + 1` assigned atomically; returns the stored row
    /// (the caller's `version` field is ignored). `NotFound` if the set is missing or archived.
    async fn add_policy_set_version(
        &self,
        version: &PolicySetVersion,
    ) -> StoreResult<PolicySetVersion>;
    /// A set version by id.
    async fn get_policy_set_version(
        &self,
        zone_id: &str,
        id: &str,
    ) -> StoreResult<Option<PolicySetVersion>>;
    /// Versions of a set, newest first.
    async fn list_policy_set_versions(
        &self,
        zone_id: &str,
        set_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<PolicySetVersion>>;
    /// Make `version_id` (a version of `set_id`) the zone's only active set version and
    /// enqueue `invalidate` in the same transaction. Returns the outbox row id. Every other
    /// binding of the zone is cleared. `NotFound` if the set is missing or archived, or the
    /// version is missing or not a version of that set.
    async fn activate_policy_set(
        &self,
        zone_id: &str,
        set_id: &str,
        version_id: &str,
        invalidate: &OutboxMessage,
        now: DateTime<Utc>,
    ) -> StoreResult<String>;
    /// Archive a set and clear its binding (the zone becomes deny-all if it was active),
    /// enqueueing `invalidate` atomically when a binding was cleared. `NotFound` if missing
    /// or already archived.
    async fn archive_policy_set(
        &self,
        zone_id: &str,
        id: &str,
        invalidate: &OutboxMessage,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The zone's active set version, if any.
    async fn active_policy(&self, zone_id: &str) -> StoreResult<Option<ActivePolicy>>;
    /// Zones with an active binding (for the startup seed and the safety poll).
    async fn zones_with_active_policy(&self) -> StoreResult<Vec<String>>;
}
