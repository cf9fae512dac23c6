//! Authority records: the immutable record of one STS exchange, and the revocation anchor
//! that mandates name in `sid` and `root_sid`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whose authority a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectType {
    /// A federated end user.
    User,
    /// The application itself.
    Application,
}

impl SubjectType {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectType::User => "user",
            SubjectType::Application => "application",
        }
    }
}

/// Status of an authority record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorityStatus {
    /// Usable until it expires.
    Active,
    /// Revoked; every descendant exchange is refused.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// An authority record row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthorityRecord {
    /// Record id (the mandate's `sid`).
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// Subject kind.
    pub session_type: SubjectType,
    /// The subject (`sub`), byte-exact.
    pub subject_id: String,
    /// The record this exchange descended from.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// Status.
    pub status: AuthorityStatus,
    /// Expiry.
    #[serde(with = "super::time::iso_ms")]
    pub expires_at: DateTime<Utc>,
    /// When the subject was authenticated.
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub authenticated_at: Option<DateTime<Utc>>,
    /// Claims recorded with the exchange.
    #[serde(default)]
    pub claims_json: Value,
    /// When revoked.
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why revoked.
    #[serde(default)]
    pub revoked_reason: Option<String>,
    /// Creation time.
    #[serde(with = "super::time::iso_ms")]
    pub created_at: DateTime<Utc>,
}

impl AuthorityRecord {
    /// Whether the record can back an exchange at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == AuthorityStatus::Active && self.expires_at > now
    }
}
