//! Policies, immutable policy versions, policy sets, set versions and the per-zone binding.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Attribution;

/// A named policy document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Policy id.
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// Name (unique per zone among active rows).
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Who created and changed it.
    #[serde(flatten)]
    pub attribution: Attribution,
    /// Creation time.
    #[serde(with = "super::time::iso_ms")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "super::time::iso_ms")]
    pub updated_at: DateTime<Utc>,
    /// Set when archived.
    #[serde(
        default,
        with = "super::time::iso_ms_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub archived_at: Option<DateTime<Utc>>,
}

/// An immutable, numbered version of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Version id.
    pub id: String,
    /// The policy.
    pub policy_id: String,
    /// Zone.
    pub zone_id: String,
    /// 1..n, unique per policy.
    pub version: i32,
    /// The data document text.
    pub content: String,
    /// Lowercase hex SHA-256 of `content`.
    pub content_sha256: String,
    /// `2026-05-20`.
    pub schema_version: String,
    /// Creator.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Creation time.
    #[serde(with = "super::time::iso_ms")]
    pub created_at: DateTime<Utc>,
}

/// Lowercase hex SHA-256 of a policy version's content.
pub fn content_sha256(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

/// A named set of policy versions; at most one set version is active per zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySet {
    /// Set id.
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// Name (unique per zone).
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Who created and changed it.
    #[serde(flatten)]
    pub attribution: Attribution,
    /// Creation time.
    #[serde(with = "super::time::iso_ms")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "super::time::iso_ms")]
    pub updated_at: DateTime<Utc>,
    /// The active version, if this set is bound.
    #[serde(default)]
    pub active_version_id: Option<String>,
    /// Set when archived.
    #[serde(
        default,
        with = "super::time::iso_ms_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub archived_at: Option<DateTime<Utc>>,
}

/// One entry of a set version's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// A policy version id.
    pub policy_version_id: String,
}

/// An immutable version of a policy set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySetVersion {
    /// Set version id.
    pub id: String,
    /// The set.
    pub policy_set_id: String,
    /// Zone.
    pub zone_id: String,
    /// 1..n, unique per set.
    pub version: i32,
    /// The policy versions, in order.
    pub manifest_json: Vec<ManifestEntry>,
    /// [`manifest_sha256`] of the manifest.
    pub manifest_sha256: String,
    /// Inherited from the referenced policy versions.
    pub schema_version: String,
    /// Creation time.
    #[serde(with = "super::time::iso_ms")]
    pub created_at: DateTime<Utc>,
}

/// The SHA-256 (lowercase hex) of the compact JSON `[{"policy_version_id":"…"},…]`, which is
/// what both the API and the STS of the reference hash.
pub fn manifest_sha256(manifest: &[ManifestEntry]) -> String {
    // Serialising a Vec of single-string structs cannot fail.
    let compact = serde_json::to_vec(manifest).unwrap_or_default();
    hex::encode(Sha256::digest(&compact))
}

/// Which set version is active in a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySetBinding {
    /// Zone.
    pub zone_id: String,
    /// The set.
    pub policy_set_id: String,
    /// The active version; null when the set is not active.
    #[serde(default)]
    pub active_version_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_hash_is_over_compact_json() {
        let m = vec![ManifestEntry {
            policy_version_id: "pv-1".into(),
        }];
        let expected = hex::encode(Sha256::digest(br#"[{"policy_version_id":"pv-1"}]"#));
        assert_eq!(manifest_sha256(&m), expected);
        assert_eq!(content_sha256("").len(), 64);
    }
}
