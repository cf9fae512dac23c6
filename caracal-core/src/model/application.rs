//! Applications: the credentialed identities software authenticates as.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Attribution;

/// How an application was registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMethod {
    /// Durable, operator-provisioned.
    Managed,
    /// Dynamic client registration: short-lived, one task session.
    Dcr,
}

impl RegistrationMethod {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationMethod::Managed => "managed",
            RegistrationMethod::Dcr => "dcr",
        }
    }
}

/// An application row.
///
/// The Argon2id hash of the client secret is part of the stored record but never of the wire
/// form, and `Debug` does not print it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Application {
    /// Application id (UUIDv7).
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// Name (1..200 characters; unique case-insensitively among active managed apps).
    pub name: String,
    /// `managed` or `dcr`.
    pub registration_method: RegistrationMethod,
    /// Traits (visible to global admins only; the service decides whether to render them).
    #[serde(default)]
    pub traits: Vec<String>,
    /// Expiry (DCR only).
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Set when archived; archival is the revocation of the application.
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub archived_at: Option<DateTime<Utc>>,
    /// Who created and changed it.
    #[serde(flatten)]
    pub attribution: Attribution,
    /// Creation time.
    #[serde(with = "super::time::iso_ms")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "super::time::iso_ms")]
    pub updated_at: DateTime<Utc>,
    /// `argon2id$<salt>$<hash>`; never serialised.
    #[serde(skip)]
    pub client_secret_hash: Option<String>,
}

impl Application {
    /// Whether the application may act at `now`: not archived and not expired. Every runtime
    /// check (STS, Coordinator) requires this.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.archived_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("id", &self.id)
            .field("zone_id", &self.zone_id)
            .field("name", &self.name)
            .field("registration_method", &self.registration_method)
            .field("traits", &self.traits)
            .field("expires_at", &self.expires_at)
            .field("archived_at", &self.archived_at)
            .field(
                "client_secret_hash",
                &self.client_secret_hash.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}
