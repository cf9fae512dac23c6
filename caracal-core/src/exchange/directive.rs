//! Upstream directives: how the Gateway reaches a granted resource (reference `gateway.md`
//! §1.5, `sts.md` §7.5), as a pure function of the resource, its provider and the provider's
//! unsealed secret document.
//!
//! Static credentials (`api_key`, `bearer_token`, `http_basic`) come from the sealed
//! document at `zones/<zone>/providers/<provider>/secretConfig`. OAuth kinds need token
//! endpoints and connections and are refused here, so a resource is never reached without the
//! credential its operator configured.

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::model::provider::{Provider, ProviderKind};
use crate::model::resource::Resource;
use crate::model::token::{AuthLocation, AuthMode, UpstreamDirective};

/// Why a directive could not be built (rendered into the 502 description; never a secret).
pub type DirectiveError = String;

fn text<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn hosts(config: &Map<String, Value>) -> Vec<String> {
    config
        .get("allowed_token_hosts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a provider kind needs its sealed secret document.
pub fn needs_secret(kind: ProviderKind) -> bool {
    matches!(
        kind,
        ProviderKind::ApiKey | ProviderKind::BearerToken | ProviderKind::HttpBasic
    )
}

/// The directive for `resource` through `provider` (if any), with the provider's unsealed
/// secret document when [`needs_secret`].
pub fn directive(
    resource: &Resource,
    provider: Option<&Provider>,
    secret: Option<&Map<String, Value>>,
) -> Result<UpstreamDirective, DirectiveError> {
    let mut d = UpstreamDirective {
        url: resource.upstream_url.clone().unwrap_or_default(),
        auth_mode: AuthMode::CaracalJwt,
        auth_location: Some(AuthLocation::Header),
        auth_header: Some("Authorization".to_owned()),
        query_param_name: None,
        auth_scheme: Some("Bearer".to_owned()),
        allowed_token_hosts: Vec::new(),
        provider_token: None,
        provider_id: None,
        connection_id: None,
        forward_caracal_identity: false,
        expires_at: None,
    };
    let Some(p) = provider else {
        return Ok(d);
    };
    d.provider_id = Some(p.id.clone());
    let config = &p.config_json;
    let empty = Map::new();
    let secret = secret.unwrap_or(&empty);
    let forward = config
        .get("forward_caracal_identity")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match p.kind {
        ProviderKind::None => {
            d.auth_mode = AuthMode::None;
            d.auth_location = None;
            d.auth_header = None;
            d.auth_scheme = None;
        }
        ProviderKind::CaracalMandate => {}
        ProviderKind::ApiKey => {
            let key = text(secret, "api_key").ok_or("provider api_key is not configured")?;
            d.auth_mode = AuthMode::ProviderApikey;
            d.provider_token = Some(key.to_owned());
            d.allowed_token_hosts = hosts(config);
            d.forward_caracal_identity = forward;
            if text(config, "auth_location") == Some("query") {
                let name = text(config, "query_param_name")
                    .ok_or("provider query_param_name is not configured")?;
                d.auth_location = Some(AuthLocation::Query);
                d.query_param_name = Some(name.to_owned());
                d.auth_header = None;
                d.auth_scheme = None;
            } else {
                let header =
                    text(config, "header_name").ok_or("provider header_name is not configured")?;
                d.auth_header = Some(header.to_owned());
                d.auth_scheme = text(config, "auth_scheme").map(str::to_owned);
            }
        }
        ProviderKind::BearerToken => {
            let token =
                text(secret, "bearer_token").ok_or("provider bearer_token is not configured")?;
            d.auth_mode = AuthMode::ProviderOauth;
            d.provider_token = Some(token.to_owned());
            d.allowed_token_hosts = hosts(config);
            d.forward_caracal_identity = forward;
            if let Some(h) = text(config, "auth_header") {
                d.auth_header = Some(h.to_owned());
            }
            if let Some(s) = text(config, "auth_scheme") {
                d.auth_scheme = Some(s.to_owned());
            }
        }
        ProviderKind::HttpBasic => {
            let user = text(config, "username").ok_or("provider username is not configured")?;
            let password = secret
                .get("password")
                .and_then(Value::as_str)
                .ok_or("provider password is not configured")?;
            d.auth_mode = AuthMode::ProviderOauth;
            d.auth_scheme = Some("Basic".to_owned());
            d.provider_token = Some(
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")),
            );
            d.allowed_token_hosts = hosts(config);
            d.forward_caracal_identity = forward;
        }
        ProviderKind::OAuth2AuthorizationCode | ProviderKind::OAuth2ClientCredentials => {
            return Err("OAuth provider credentials are not supported by this STS build".into());
        }
    }
    Ok(d)
}
