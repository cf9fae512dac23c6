//! Policies, versions, policy sets, set versions and the per-zone binding.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Keyed, MemoryStore, keyset_page, lock};
use crate::model::policy_set::{
    Policy, PolicySet, PolicySetBinding, PolicySetVersion, PolicyVersion,
};
use crate::store::outbox::OutboxMessage;
use crate::store::policy::{ActivePolicy, PolicyStore};
use crate::store::{Page, PageRequest, StoreError, StoreResult};

/// The policy tables.
///
/// INVARIANT: `active[zone] == set` iff `bindings[set]` belongs to `zone` and has an
/// `active_version_id`; so a zone has at most one active set version, and the binding map is
/// the single source of a set's `active_version_id` (the copy in `sets` is always `None`).
#[derive(Default)]
pub(super) struct Tables {
    policies: HashMap<String, Policy>,
    versions: HashMap<String, PolicyVersion>,
    /// policy id → its version ids in version order.
    versions_of: HashMap<String, Vec<String>>,
    sets: HashMap<String, PolicySet>,
    set_versions: HashMap<String, PolicySetVersion>,
    /// set id → its highest version number.
    set_latest: HashMap<String, i32>,
    /// set id → its binding.
    bindings: HashMap<String, PolicySetBinding>,
    /// zone → the set whose binding is active.
    active: HashMap<String, String>,
}

impl Tables {
    /// A set as the trait returns it: `active_version_id` filled from its binding.
    fn set_view(&self, set: &PolicySet) -> PolicySet {
        let mut out = set.clone();
        out.active_version_id = self
            .bindings
            .get(&set.id)
            .and_then(|b| b.active_version_id.clone());
        out
    }

    /// The active, unarchived set `id` of `zone`.
    fn live_set(&self, zone_id: &str, id: &str) -> StoreResult<&PolicySet> {
        match self.sets.get(id) {
            Some(s) if s.zone_id == zone_id && s.archived_at.is_none() => Ok(s),
            _ => Err(StoreError::not_found("policy_set")),
        }
    }
}

impl Keyed for Policy {
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl Keyed for PolicySet {
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl Keyed for PolicySetVersion {
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn id(&self) -> &str {
        &self.id
    }
}

#[async_trait]
impl PolicyStore for MemoryStore {
    async fn insert_policy(&self, policy: &Policy, first: &PolicyVersion) -> StoreResult<()> {
        if first.policy_id != policy.id || first.zone_id != policy.zone_id {
            return Err(StoreError::Invalid(
                "the first version must belong to the policy and its zone".into(),
            ));
        }
        let mut t = lock(&self.inner.policy);
        if t.policies.contains_key(&policy.id) {
            return Err(StoreError::conflict("policy_id"));
        }
        if t.versions.contains_key(&first.id) {
            return Err(StoreError::conflict("policy_version_id"));
        }
        if policy.archived_at.is_none()
            && t.policies.values().any(|p| {
                p.zone_id == policy.zone_id && p.name == policy.name && p.archived_at.is_none()
            })
        {
            return Err(StoreError::conflict("policy_name"));
        }
        let mut first = first.clone();
        first.version = 1;
        t.versions_of
            .insert(policy.id.clone(), vec![first.id.clone()]);
        t.versions.insert(first.id.clone(), first);
        t.policies.insert(policy.id.clone(), policy.clone());
        Ok(())
    }

    async fn add_policy_version(&self, version: &PolicyVersion) -> StoreResult<PolicyVersion> {
        let mut t = lock(&self.inner.policy);
        match t.policies.get(&version.policy_id) {
            Some(p) if p.zone_id == version.zone_id && p.archived_at.is_none() => {}
            _ => return Err(StoreError::not_found("policy")),
        }
        if t.versions.contains_key(&version.id) {
            return Err(StoreError::conflict("policy_version_id"));
        }
        // The table lock makes read-max-then-insert atomic, so concurrent appends to one
        // policy get distinct, dense numbers.
        let latest = t
            .versions_of
            .get(&version.policy_id)
            .and_then(|ids| ids.last())
            .and_then(|id| t.versions.get(id))
            .map_or(0, |v| v.version);
        let mut stored = version.clone();
        stored.version = latest.saturating_add(1);
        t.versions_of
            .entry(version.policy_id.clone())
            .or_default()
            .push(stored.id.clone());
        t.versions.insert(stored.id.clone(), stored.clone());
        Ok(stored)
    }

    async fn get_policy(&self, zone_id: &str, id: &str) -> StoreResult<Option<Policy>> {
        Ok(lock(&self.inner.policy)
            .policies
            .get(id)
            .filter(|p| p.zone_id == zone_id)
            .cloned())
    }

    async fn list_policies(&self, zone_id: &str, page: &PageRequest) -> StoreResult<Page<Policy>> {
        let t = lock(&self.inner.policy);
        keyset_page(
            t.policies
                .values()
                .filter(|p| p.zone_id == zone_id && p.archived_at.is_none()),
            page,
        )
    }

    async fn policy_versions(
        &self,
        zone_id: &str,
        policy_id: &str,
    ) -> StoreResult<Vec<PolicyVersion>> {
        let t = lock(&self.inner.policy);
        if t.policies
            .get(policy_id)
            .is_none_or(|p| p.zone_id != zone_id)
        {
            return Ok(Vec::new());
        }
        Ok(t.versions_of
            .get(policy_id)
            .map(|ids| {
                ids.iter()
                    .rev()
                    .filter_map(|id| t.versions.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn get_policy_versions(
        &self,
        zone_id: &str,
        ids: &[String],
    ) -> StoreResult<Vec<PolicyVersion>> {
        let t = lock(&self.inner.policy);
        Ok(ids
            .iter()
            .filter_map(|id| t.versions.get(id).filter(|v| v.zone_id == zone_id).cloned())
            .collect())
    }

    async fn archive_policy(&self, zone_id: &str, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let mut t = lock(&self.inner.policy);
        match t.policies.get_mut(id) {
            Some(p) if p.zone_id == zone_id && p.archived_at.is_none() => {
                p.archived_at = Some(at);
                p.updated_at = at;
                Ok(())
            }
            _ => Err(StoreError::not_found("policy")),
        }
    }

    async fn insert_policy_set(&self, set: &PolicySet) -> StoreResult<()> {
        let mut t = lock(&self.inner.policy);
        if t.sets.contains_key(&set.id) {
            return Err(StoreError::conflict("policy_set_id"));
        }
        // INVARIANT: a set name is unique among the zone's active sets.
        if set.archived_at.is_none()
            && t.sets
                .values()
                .any(|s| s.zone_id == set.zone_id && s.name == set.name && s.archived_at.is_none())
        {
            return Err(StoreError::conflict("policy_set_name"));
        }
        let mut stored = set.clone();
        stored.active_version_id = None;
        t.sets.insert(set.id.clone(), stored);
        t.bindings.insert(
            set.id.clone(),
            PolicySetBinding {
                zone_id: set.zone_id.clone(),
                policy_set_id: set.id.clone(),
                active_version_id: None,
            },
        );
        Ok(())
    }

    async fn get_policy_set(&self, zone_id: &str, id: &str) -> StoreResult<Option<PolicySet>> {
        let t = lock(&self.inner.policy);
        Ok(t.sets
            .get(id)
            .filter(|s| s.zone_id == zone_id)
            .map(|s| t.set_view(s)))
    }

    async fn list_policy_sets(
        &self,
        zone_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<PolicySet>> {
        let t = lock(&self.inner.policy);
        let mut out = keyset_page(
            t.sets
                .values()
                .filter(|s| s.zone_id == zone_id && s.archived_at.is_none()),
            page,
        )?;
        for set in &mut out.items {
            *set = t.set_view(set);
        }
        Ok(out)
    }

    async fn add_policy_set_version(
        &self,
        version: &PolicySetVersion,
    ) -> StoreResult<PolicySetVersion> {
        let mut t = lock(&self.inner.policy);
        t.live_set(&version.zone_id, &version.policy_set_id)?;
        if t.set_versions.contains_key(&version.id) {
            return Err(StoreError::conflict("policy_set_version_id"));
        }
        let next = t
            .set_latest
            .get(&version.policy_set_id)
            .copied()
            .unwrap_or(0)
            .saturating_add(1);
        let mut stored = version.clone();
        stored.version = next;
        t.set_latest.insert(version.policy_set_id.clone(), next);
        t.set_versions.insert(stored.id.clone(), stored.clone());
        Ok(stored)
    }

    async fn get_policy_set_version(
        &self,
        zone_id: &str,
        id: &str,
    ) -> StoreResult<Option<PolicySetVersion>> {
        Ok(lock(&self.inner.policy)
            .set_versions
            .get(id)
            .filter(|v| v.zone_id == zone_id)
            .cloned())
    }

    async fn list_policy_set_versions(
        &self,
        zone_id: &str,
        set_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<PolicySetVersion>> {
        let t = lock(&self.inner.policy);
        keyset_page(
            t.set_versions
                .values()
                .filter(|v| v.zone_id == zone_id && v.policy_set_id == set_id),
            page,
        )
    }

    async fn activate_policy_set(
        &self,
        zone_id: &str,
        set_id: &str,
        version_id: &str,
        invalidate: &OutboxMessage,
        now: DateTime<Utc>,
    ) -> StoreResult<String> {
        let mut t = lock(&self.inner.policy);
        t.live_set(zone_id, set_id)?;
        match t.set_versions.get(version_id) {
            Some(v) if v.zone_id == zone_id && v.policy_set_id == set_id => {}
            _ => return Err(StoreError::not_found("policy_set_version")),
        }
        if !t.bindings.contains_key(set_id) {
            return Err(StoreError::not_found("policy_set_binding"));
        }
        // Everything is validated; from here on nothing fails, so the binding change and the
        // outbox row land together (lock order: policy, then outbox).
        let outbox_id = {
            let mut outbox = lock(&self.inner.outbox);
            outbox.enqueue(self.inner.ids.as_ref(), invalidate, now)
        };
        if let Some(previous) = t.active.insert(zone_id.to_owned(), set_id.to_owned()) {
            if previous != set_id {
                if let Some(b) = t.bindings.get_mut(&previous) {
                    b.active_version_id = None;
                }
            }
        }
        if let Some(b) = t.bindings.get_mut(set_id) {
            b.active_version_id = Some(version_id.to_owned());
        }
        Ok(outbox_id)
    }

    async fn archive_policy_set(
        &self,
        zone_id: &str,
        id: &str,
        invalidate: &OutboxMessage,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut t = lock(&self.inner.policy);
        t.live_set(zone_id, id)?;
        let was_active = t
            .bindings
            .get(id)
            .is_some_and(|b| b.active_version_id.is_some());
        if was_active {
            let mut outbox = lock(&self.inner.outbox);
            outbox.enqueue(self.inner.ids.as_ref(), invalidate, at);
        }
        if let Some(s) = t.sets.get_mut(id) {
            s.archived_at = Some(at);
            s.updated_at = at;
        }
        if let Some(b) = t.bindings.get_mut(id) {
            b.active_version_id = None;
        }
        if was_active {
            t.active.remove(zone_id);
        }
        Ok(())
    }

    async fn active_policy(&self, zone_id: &str) -> StoreResult<Option<ActivePolicy>> {
        let t = lock(&self.inner.policy);
        let Some(binding) = t.active.get(zone_id).and_then(|s| t.bindings.get(s)) else {
            return Ok(None);
        };
        let Some(version) = binding
            .active_version_id
            .as_ref()
            .and_then(|v| t.set_versions.get(v))
        else {
            return Ok(None);
        };
        Ok(Some(ActivePolicy {
            binding: binding.clone(),
            version: version.clone(),
        }))
    }

    async fn zones_with_active_policy(&self) -> StoreResult<Vec<String>> {
        let t = lock(&self.inner.policy);
        let mut zones: Vec<String> = t.active.keys().cloned().collect();
        zones.sort_unstable();
        Ok(zones)
    }
}
