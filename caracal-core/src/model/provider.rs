//! Providers: sealed custody of upstream credentials. Secret values are sealed at create and
//! never returned; only the names of the stored secret keys are part of the row.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Attribution;

/// What kind of credential a provider holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// No credential.
    None,
    /// Forward the Caracal resource mandate.
    CaracalMandate,
    /// OAuth authorization code (delegated consent).
    #[serde(rename = "oauth2_authorization_code")]
    OAuth2AuthorizationCode,
    /// OAuth client credentials.
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials,
    /// A static API key in a header or the query.
    ApiKey,
    /// A static bearer token.
    BearerToken,
    /// HTTP basic credentials.
    HttpBasic,
}

/// A provider row (public configuration only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    /// Provider id.
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// Display name.
    pub name: String,
    /// `provider://<name>`; unique per zone among active rows.
    pub identifier: String,
    /// The credential kind.
    pub kind: ProviderKind,
    /// Public configuration keys only.
    #[serde(default)]
    pub config_json: Map<String, Value>,
    /// Sorted names of the sealed secret keys.
    #[serde(default)]
    pub secret_config_keys: Vec<String>,
    /// Set when a connectivity check failed.
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub connectivity_failed_at: Option<DateTime<Utc>>,
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
