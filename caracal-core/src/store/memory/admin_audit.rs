//! The admin audit chain in memory.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::{MemoryStore, lock};
use crate::audit::AuditHmacKey;
use crate::store::admin_audit::{AdminAuditEntry, AdminAuditRecord, AdminAuditStore};
use crate::store::{StoreError, StoreResult};

/// Chains keyed by zone (`None`: the global chain), rows in append (= `chain_seq`) order.
#[derive(Default)]
pub(super) struct Tables {
    chains: HashMap<Option<String>, Vec<AdminAuditRecord>>,
    ids: HashSet<String>,
}

#[async_trait]
impl AdminAuditStore for MemoryStore {
    async fn append_admin_audit(
        &self,
        entry: &AdminAuditEntry,
        key: Option<&AuditHmacKey>,
    ) -> StoreResult<AdminAuditRecord> {
        // INVARIANT: one lock serialises every append, so the head cannot move between
        // reading it and linking onto it (Postgres uses a per-chain advisory lock).
        let mut t = lock(&self.inner.admin_audit);
        let zone = entry.normalized().zone_id;
        let head = t
            .chains
            .get(&zone)
            .and_then(|rows| rows.last())
            .map(AdminAuditRecord::head);
        let record = AdminAuditRecord::link(entry, head.as_ref(), key)?;
        if !t.ids.insert(record.entry.id.clone()) {
            return Err(StoreError::conflict("admin_audit_id"));
        }
        t.chains.entry(zone).or_default().push(record.clone());
        Ok(record)
    }

    async fn list_admin_audit(
        &self,
        zone_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AdminAuditRecord>> {
        if limit == 0 {
            return Err(StoreError::Invalid("page limit must be at least 1".into()));
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let t = lock(&self.inner.admin_audit);
        Ok(t.chains
            .get(&zone_id.map(str::to_owned))
            .map(|rows| {
                rows.iter()
                    .filter(|r| r.chain_seq > after_seq)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}
