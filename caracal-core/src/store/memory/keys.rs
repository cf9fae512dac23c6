//! Zone signing keys.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryStore, lock};
use crate::store::keys::{SigningKeyRow, SigningKeyStore};
use crate::store::{StoreError, StoreResult};

/// Per-zone key versions, oldest first.
#[derive(Default)]
pub(super) struct Tables {
    /// zone → versions in version order (index `i` holds version `i + 1`).
    by_zone: HashMap<String, Vec<SigningKeyRow>>,
    /// Every kid, over all zones.
    kids: HashSet<String>,
}

#[async_trait]
impl SigningKeyStore for MemoryStore {
    async fn insert_signing_key(
        &self,
        zone_id: &str,
        kid: &str,
        envelope: &[u8],
        created_at: DateTime<Utc>,
    ) -> StoreResult<SigningKeyRow> {
        // The table lock serialises rotations, so `latest + 1` is read and taken atomically.
        let mut t = lock(&self.inner.keys);
        if t.kids.contains(kid) {
            return Err(StoreError::conflict("signing_key_id"));
        }
        let versions = t.by_zone.entry(zone_id.to_owned()).or_default();
        let version = versions.last().map_or(1, |k| k.version.saturating_add(1));
        let row = SigningKeyRow {
            kid: kid.to_owned(),
            zone_id: zone_id.to_owned(),
            version,
            envelope: envelope.to_vec(),
            created_at,
        };
        versions.push(row.clone());
        t.kids.insert(kid.to_owned());
        Ok(row)
    }

    async fn latest_signing_keys(
        &self,
        zone_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<SigningKeyRow>> {
        let t = lock(&self.inner.keys);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(t.by_zone
            .get(zone_id)
            .map(|v| v.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default())
    }
}
