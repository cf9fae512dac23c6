//! Authority records: one per STS exchange, linked by `parent_id`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::model::authority::AuthorityRecord;

/// The deepest lineage walked; a longer chain fails closed with `LimitExceeded`.
pub const MAX_LINEAGE_DEPTH: usize = 64;

/// Authority records.
#[async_trait]
pub trait AuthorityStore: Send + Sync {
    /// Insert a record. Unique: `authority_record_id`.
    async fn insert_authority(&self, record: &AuthorityRecord) -> StoreResult<()>;
    /// A record by id in a zone.
    async fn get_authority(&self, zone_id: &str, id: &str) -> StoreResult<Option<AuthorityRecord>>;
    /// The record and its ancestors, nearest first, following `parent_id` up to
    /// [`MAX_LINEAGE_DEPTH`] records (`LimitExceeded` beyond, so a corrupt cycle cannot spin).
    /// Empty if the record is not in the zone; the walk stops at a parent that is not in the
    /// zone, so a last record with `parent_id` set marks a broken lineage.
    async fn authority_lineage(&self, zone_id: &str, id: &str)
    -> StoreResult<Vec<AuthorityRecord>>;
    /// Revoke an active record; returns whether it changed (revoking twice is harmless, and a
    /// record that is missing, in another zone or not `active` returns `false`).
    async fn revoke_authority(
        &self,
        zone_id: &str,
        id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Revoke the record `id` and every descendant reachable through `parent_id` within the
    /// zone (the `caracal.sessions.revoke` cascade, reference `sts.md` §6.1), in one
    /// transaction serialised with other delegation-graph writes of the zone.
    ///
    /// Every record of the tree that is not already `revoked` (active or expired) becomes
    /// `revoked`; `revoked_at` and `revoked_reason` keep an earlier value when one is set
    /// (`COALESCE(existing, at)`, `COALESCE(existing, reason)`). Idempotent: a second call
    /// changes nothing. Returns the ids whose status changed, sorted; empty when `id` is not
    /// in the zone. A descendant in another zone is never followed (zones never share
    /// lineage).
    async fn revoke_authority_tree(
        &self,
        zone_id: &str,
        id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<String>>;
    /// Revoke every active record of a subject (the kill switch); returns the ids revoked.
    async fn revoke_subject(
        &self,
        zone_id: &str,
        subject_id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<String>>;
}
