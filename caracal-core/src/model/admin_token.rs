//! Admin tokens for the Admin API: global or zone-scoped, with a read, write or approve
//! capability. Only the SHA-256 of a token is stored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a token applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Every zone.
    Global,
    /// One zone (`zone_id` set).
    Zone,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// GET/HEAD and policy validation.
    Read,
    /// Any change.
    #[default]
    Write,
    /// Approval decisions.
    Approve,
}

/// An admin token row. The token itself is shown once at creation and never stored.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminToken {
    /// Token id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Global or zone.
    pub scope: TokenScope,
    /// Capability.
    pub capability: Capability,
    /// Zone, iff `scope` is `zone`.
    #[serde(default)]
    pub zone_id: Option<String>,
    /// `admin:<caller id>`.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Creation time.
    #[serde(with = "super::time::iso_ms")]
    pub created_at: DateTime<Utc>,
    /// Last use.
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When revoked.
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// SHA-256 of the token; never serialised.
    #[serde(skip)]
    pub token_sha256: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("capability", &self.capability)
            .field("zone_id", &self.zone_id)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}
