//! Delegation edges: directed, revocable, expiring authority from a source session to a target
//! session, which can only narrow what the source holds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Status of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeStatus {
    /// Usable until `expires_at`.
    Active,
    /// Revoked (with its downstream edges).
    Revoked,
    /// Flipped by the retention sweeper after expiry.
    Expired,
}

/// A delegation edge row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegationEdge {
    /// Edge id (`delegation_edge_id` on the wire of create responses and mandates).
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// Issuing session.
    pub source_session_id: String,
    /// Receiving session.
    pub target_session_id: String,
    /// Application of the source session.
    pub issuer_application_id: String,
    /// Application of the target session.
    pub receiver_application_id: String,
    /// The edge this one narrows.
    #[serde(default)]
    pub parent_edge_id: Option<String>,
    /// Resource row id; null for a broad edge.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// Scopes carried.
    pub scopes: Vec<String>,
    /// Typed constraints (`resources`, `max_hops`, `budget`, `ttl_seconds`, `expires_at`, ...).
    #[serde(default)]
    pub constraints_json: Map<String, Value>,
    /// Status.
    pub status: EdgeStatus,
    /// Expiry.
    #[serde(with = "super::time::iso_ms")]
    pub expires_at: DateTime<Utc>,
    /// Bumped on revoke.
    #[serde(default)]
    pub edge_version: i64,
    /// Set iff revoked.
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Creation time.
    #[serde(with = "super::time::iso_ms")]
    pub created_at: DateTime<Utc>,
}

impl DelegationEdge {
    /// Whether the edge is usable at `now`: active and unexpired (every reader checks both).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == EdgeStatus::Active && self.expires_at > now
    }
}
