//! Resources: the protected targets, with their scopes, upstream and declared operations.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Attribution;

/// Whether the Gateway enforces declared operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationEnforcement {
    /// Every request must match a declared operation whose scope the mandate carries.
    #[default]
    Enforced,
    /// No operation floor: any path is allowed by transport.
    TransportUniform,
}

/// A declared operation: method, absolute path, and the scope it requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Upper-cased HTTP method.
    pub method: String,
    /// Absolute path, trimmed.
    pub path: String,
    /// One of the resource's scopes.
    pub scope: String,
}

/// A resource row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Resource id.
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// Display name.
    pub name: String,
    /// Absolute URI, conventionally `resource://<slug>`; unique per zone.
    pub identifier: String,
    /// Upstream base URL (http/https).
    #[serde(default)]
    pub upstream_url: Option<String>,
    /// Declared scopes (1..64).
    pub scopes: Vec<String>,
    /// The provider holding the upstream credential.
    #[serde(default)]
    pub credential_provider_id: Option<String>,
    /// Declared operations.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Operation floor mode.
    #[serde(default)]
    pub operation_enforcement: OperationEnforcement,
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
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub archived_at: Option<DateTime<Utc>>,
}

impl Resource {
    /// Find the declared operation for a request: method compared case-insensitively, path
    /// exactly after trimming (reference `sts.md` §4.4).
    pub fn find_operation(&self, method: &str, path: &str) -> Option<&Operation> {
        let path = path.trim();
        self.operations
            .iter()
            .find(|op| op.method.eq_ignore_ascii_case(method.trim()) && op.path == path)
    }
}
