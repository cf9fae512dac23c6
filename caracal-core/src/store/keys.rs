//! Zone signing keys, sealed under the KEK (AAD `caracal/secrets/zoneSigningKey`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// One version of a zone's signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    /// The key id (`kid`), a UUIDv7.
    pub kid: String,
    /// Zone.
    pub zone_id: String,
    /// 1..n per zone.
    pub version: i64,
    /// CSS1 envelope of the PEM/PKCS#8 private key.
    pub envelope: Vec<u8>,
    /// When created (starts the 24 h overlap of the previous version).
    pub created_at: DateTime<Utc>,
}

/// Zone signing keys.
#[async_trait]
pub trait SigningKeyStore: Send + Sync {
    /// Append a new version for the zone (version = latest + 1, serialised per zone so two
    /// concurrent rotations cannot both take the same version). Returns the stored row.
    async fn insert_signing_key(
        &self,
        zone_id: &str,
        kid: &str,
        envelope: &[u8],
        created_at: DateTime<Utc>,
    ) -> StoreResult<SigningKeyRow>;
    /// The newest `limit` versions of the zone, newest first.
    async fn latest_signing_keys(
        &self,
        zone_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<SigningKeyRow>>;
}
