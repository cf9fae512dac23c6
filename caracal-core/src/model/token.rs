//! The token response of `POST /oauth/2/token` and the upstream directive (reference `sts.md`
//! §1.1, `gateway.md` §1.5).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// RFC 8693 `issued_token_type` of every Caracal mandate.
pub const ISSUED_TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A successful token exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The mandate JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Space-delimited granted scopes; omitted when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Always [`ISSUED_TOKEN_TYPE_ACCESS_TOKEN`].
    pub issued_token_type: String,
    /// Granted resource identifiers, sorted; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_resources: Vec<String>,
    /// Identifier → directive; present only on gateway-authenticated exchanges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstreams: Option<BTreeMap<String, UpstreamDirective>>,
}

/// How the Gateway authenticates to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No credential is attached.
    None,
    /// The `use=resource` mandate is attached as a bearer token.
    CaracalJwt,
    /// A provider token (bearer, basic, OAuth) is attached.
    ProviderOauth,
    /// A provider API key is attached in a header or the query.
    ProviderApikey,
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthLocation {
    /// In a request header.
    Header,
    /// In a query parameter.
    Query,
}

/// What the STS tells the Gateway about one upstream.
///
/// `provider_token` is a live upstream credential: it is never printed by `Debug`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamDirective {
    /// The upstream base URL.
    pub url: String,
    /// How to authenticate.
    pub auth_mode: AuthMode,
    /// Header or query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_location: Option<AuthLocation>,
    /// Header name for the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    /// Query parameter name for a query API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_param_name: Option<String>,
    /// Scheme placed before the credential (`Bearer`, `Basic`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<String>,
    /// Hosts the credential may be sent to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_token_hosts: Vec<String>,
    /// The credential itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_token: Option<String>,
    /// The provider row id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// The provider connection id (OAuth authorization code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// Whether to forward Caracal identity headers upstream.
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub forward_caracal_identity: bool,
    /// Unix seconds after which the credential is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for UpstreamDirective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamDirective")
            .field("url", &self.url)
            .field("auth_mode", &self.auth_mode)
            .field("auth_location", &self.auth_location)
            .field("auth_header", &self.auth_header)
            .field("query_param_name", &self.query_param_name)
            .field("auth_scheme", &self.auth_scheme)
            .field("allowed_token_hosts", &self.allowed_token_hosts)
            .field(
                "provider_token",
                &self.provider_token.as_ref().map(|_| "<redacted>"),
            )
            .field("provider_id", &self.provider_id)
            .field("connection_id", &self.connection_id)
            .field("forward_caracal_identity", &self.forward_caracal_identity)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_provider_token() {
        let d = UpstreamDirective {
            url: "https://api.example.com".into(),
            auth_mode: AuthMode::ProviderApikey,
            auth_location: Some(AuthLocation::Query),
            auth_header: None,
            query_param_name: Some("key".into()),
            auth_scheme: None,
            allowed_token_hosts: vec!["api.example.com".into()],
            provider_token: Some("sk_live_supersecret".into()),
            provider_id: None,
            connection_id: None,
            forward_caracal_identity: false,
            expires_at: None,
        };
        let printed = format!("{d:?}");
        assert!(!printed.contains("supersecret"), "{printed}");
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["auth_mode"], "provider_apikey");
        assert_eq!(json["auth_location"], "query");
        assert!(json.get("forward_caracal_identity").is_none());
    }
}
