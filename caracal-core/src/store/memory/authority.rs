//! Authority records and their lineage.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryStore, lock};
use crate::model::authority::{AuthorityRecord, AuthorityStatus};
use crate::store::authority::{AuthorityStore, MAX_LINEAGE_DEPTH};
use crate::store::{StoreError, StoreResult};

/// Authority records by id, with a per-(zone, subject) index for the kill switch.
#[derive(Default)]
pub(super) struct Tables {
    records: HashMap<String, AuthorityRecord>,
    /// (zone, subject) → record ids, in insertion order.
    by_subject: HashMap<(String, String), Vec<String>>,
}

impl Tables {
    /// Insert a record (unique id), keeping the subject index. Shared with the approval
    /// tables' consume-and-insert, which holds this lock first (the module's lock order).
    pub(super) fn insert(&mut self, record: &AuthorityRecord) -> StoreResult<()> {
        if self.records.contains_key(&record.id) {
            return Err(StoreError::conflict("authority_record_id"));
        }
        self.records.insert(record.id.clone(), record.clone());
        self.by_subject
            .entry((record.zone_id.clone(), record.subject_id.clone()))
            .or_default()
            .push(record.id.clone());
        Ok(())
    }

    /// A record by id in a zone.
    pub(super) fn get(&self, zone_id: &str, id: &str) -> Option<&AuthorityRecord> {
        self.records.get(id).filter(|r| r.zone_id == zone_id)
    }
}

/// Revoke `record` if it is active; returns whether it changed.
fn revoke(record: &mut AuthorityRecord, reason: &str, at: DateTime<Utc>) -> bool {
    if record.status != AuthorityStatus::Active {
        return false;
    }
    record.status = AuthorityStatus::Revoked;
    record.revoked_at = Some(at);
    record.revoked_reason = Some(reason.to_owned());
    true
}

#[async_trait]
impl AuthorityStore for MemoryStore {
    async fn insert_authority(&self, record: &AuthorityRecord) -> StoreResult<()> {
        lock(&self.inner.authority).insert(record)
    }

    async fn get_authority(&self, zone_id: &str, id: &str) -> StoreResult<Option<AuthorityRecord>> {
        Ok(lock(&self.inner.authority)
            .records
            .get(id)
            .filter(|r| r.zone_id == zone_id)
            .cloned())
    }

    async fn authority_lineage(
        &self,
        zone_id: &str,
        id: &str,
    ) -> StoreResult<Vec<AuthorityRecord>> {
        let t = lock(&self.inner.authority);
        let mut lineage = Vec::new();
        let mut next = Some(id);
        while let Some(current) = next {
            // A parent outside the zone is not followed: zones never share lineage.
            let Some(record) = t.records.get(current).filter(|r| r.zone_id == zone_id) else {
                break;
            };
            // INVARIANT: at most MAX_LINEAGE_DEPTH records are returned; one more means the
            // chain is too deep (or a corrupt cycle) and the walk fails closed.
            if lineage.len() == MAX_LINEAGE_DEPTH {
                return Err(StoreError::LimitExceeded("authority lineage depth"));
            }
            lineage.push(record.clone());
            next = record.parent_id.as_deref();
        }
        Ok(lineage)
    }

    async fn revoke_authority(
        &self,
        zone_id: &str,
        id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut t = lock(&self.inner.authority);
        Ok(match t.records.get_mut(id) {
            Some(r) if r.zone_id == zone_id => revoke(r, reason, at),
            _ => false,
        })
    }

    async fn revoke_authority_tree(
        &self,
        zone_id: &str,
        id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        // One lock for the whole walk and update: the memory store's transaction.
        let mut t = lock(&self.inner.authority);
        if t.records.get(id).is_none_or(|r| r.zone_id != zone_id) {
            return Ok(Vec::new());
        }
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for r in t.records.values().filter(|r| r.zone_id == zone_id) {
            if let Some(parent) = r.parent_id.as_deref() {
                children.entry(parent).or_default().push(r.id.as_str());
            }
        }
        // INVARIANT: `seen` makes the walk visit each record once, so a corrupt cycle ends.
        let mut seen: HashSet<String> = HashSet::from([id.to_owned()]);
        let mut queue = vec![id];
        while let Some(current) = queue.pop() {
            for &child in children.get(current).map(Vec::as_slice).unwrap_or_default() {
                if seen.insert(child.to_owned()) {
                    queue.push(child);
                }
            }
        }
        drop(children);
        let mut changed = Vec::new();
        for id in seen {
            if let Some(r) = t.records.get_mut(&id) {
                if r.status == AuthorityStatus::Revoked {
                    continue;
                }
                r.status = AuthorityStatus::Revoked;
                r.revoked_at = Some(r.revoked_at.unwrap_or(at));
                if r.revoked_reason.is_none() {
                    r.revoked_reason = Some(reason.to_owned());
                }
                changed.push(id);
            }
        }
        changed.sort();
        Ok(changed)
    }

    async fn revoke_subject(
        &self,
        zone_id: &str,
        subject_id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        let mut t = lock(&self.inner.authority);
        let ids = t
            .by_subject
            .get(&(zone_id.to_owned(), subject_id.to_owned()))
            .cloned()
            .unwrap_or_default();
        let mut revoked = Vec::new();
        for id in ids {
            if let Some(r) = t.records.get_mut(&id) {
                if revoke(r, reason, at) {
                    revoked.push(id);
                }
            }
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::authority::SubjectType;

    fn record(id: &str, parent: Option<&str>) -> AuthorityRecord {
        let t = DateTime::<Utc>::from_timestamp(1_779_364_800, 0).unwrap();
        AuthorityRecord {
            id: id.into(),
            zone_id: "z".into(),
            session_type: SubjectType::Application,
            subject_id: "s".into(),
            parent_id: parent.map(Into::into),
            status: AuthorityStatus::Active,
            expires_at: t,
            authenticated_at: None,
            claims_json: serde_json::Value::Null,
            revoked_at: None,
            revoked_reason: None,
            created_at: t,
        }
    }

    /// A cycle cannot be built through a Postgres foreign key, so the contract suite cannot
    /// show it; here it must still fail closed instead of spinning.
    #[tokio::test]
    async fn a_corrupt_cycle_fails_closed() {
        let store = MemoryStore::new();
        store
            .insert_authority(&record("a", Some("b")))
            .await
            .unwrap();
        store
            .insert_authority(&record("b", Some("a")))
            .await
            .unwrap();
        let err = store.authority_lineage("z", "a").await.unwrap_err();
        assert!(matches!(err, StoreError::LimitExceeded(_)), "{err:?}");
    }
}
