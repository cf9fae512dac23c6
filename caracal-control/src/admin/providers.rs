//! Providers (`http-bodies.md` §3): sealed custody of upstream credentials.
//!
//! A provider's `config_json` is split by kind into public keys (stored on the row and
//! returned) and secret keys (sealed as one JSON document in a CSS1 envelope whose purpose is
//! [`provider_secret_config_ref`], stored with `SecretStore::put_secret`, never returned: the
//! row lists only their names in `secret_config_keys`).
//!
//! Kinds served: `none`, `caracal_mandate`, `api_key` (header or query), `bearer_token`,
//! `http_basic`. The OAuth kinds need connections and connectivity checks, which are not part
//! of this build: they are refused with `400 invalid_provider_config`.

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use caracal_core::model::Attribution;
use caracal_core::model::provider::{Provider, ProviderKind};
use caracal_core::model::zone::slugify;
use caracal_core::secrets::provider_secret_config_ref;
use caracal_core::store::StoreError;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::Actor;
use super::{
    AdminResult, HttpError, ListQuery, Svc, check_params, envelope, err, err_desc, internal,
    list_error, list_params, no_content, parse_body, require_zone, respond,
};

/// "409 reserved_namespace (identifier prefix `provider://caracal-sys-`)" (reference §3).
pub const RESERVED_IDENTIFIER_PREFIX: &str = "provider://caracal-sys-";
/// Bound on the `-2`, `-3`… suffixes tried when deriving an identifier.
const MAX_IDENTIFIER_ATTEMPTS: u32 = 1_000;

/// Headers a provider may not write (reference §3, header-name rule).
const RESERVED_HEADERS: &[&str] = &[
    "baggage",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "expect",
    "forwarded",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "traceparent",
    "tracestate",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "via",
    "x-real-ip",
    "x-request-id",
];

/// "Identifier: `^provider://[a-z0-9]+(?:-[a-z0-9]+)*$`" (reference §3).
pub fn is_valid_provider_identifier(identifier: &str) -> bool {
    identifier.strip_prefix("provider://").is_some_and(|slug| {
        !slug.is_empty()
            && !slug.starts_with('-')
            && !slug.ends_with('-')
            && !slug.contains("--")
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// "Header-name rule (`header_name`, `auth_header`): RFC token chars and not one of [the
/// reserved headers] nor prefixed `x-caracal-`, `x-forwarded-`, `proxy-`" (reference §3).
pub fn is_allowed_header_name(name: &str) -> bool {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let lower = name.to_ascii_lowercase();
    token
        && !RESERVED_HEADERS.contains(&lower.as_str())
        && !["x-caracal-", "x-forwarded-", "proxy-"]
            .iter()
            .any(|p| lower.starts_with(p))
}

/// A DNS hostname: labels of 1..63 letters, digits and inner hyphens, 1..253 in all.
fn is_hostname(h: &str) -> bool {
    (1..=253).contains(&h.len())
        && h.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A provider's configuration split into its public part and its secret values.
#[derive(Default)]
pub struct SplitConfig {
    /// Stored on the row and returned.
    pub public: Map<String, Value>,
    /// Sealed; never returned.
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for SplitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitConfig")
            .field("public", &self.public)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The kind's wire name.
pub fn kind_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::None => "none",
        ProviderKind::CaracalMandate => "caracal_mandate",
        ProviderKind::OAuth2AuthorizationCode => "oauth2_authorization_code",
        ProviderKind::OAuth2ClientCredentials => "oauth2_client_credentials",
        ProviderKind::ApiKey => "api_key",
        ProviderKind::BearerToken => "bearer_token",
        ProviderKind::HttpBasic => "http_basic",
    }
}

/// Validate `config` for `kind` and split it (reference §3, "config_json per kind"). With
/// `require_secrets` the kind's secret (`api_key`, `bearer_token`, `password`) must be given
/// (create, kind change). Any key the kind does not know → "`<kind> provider config has
/// unsupported keys: …`". Secret values: non-empty strings, trimmed, no control characters.
/// The error is the description of `400 invalid_provider_config`; it never quotes a value.
pub fn split_config(
    kind: ProviderKind,
    config: &Map<String, Value>,
    require_secrets: bool,
) -> Result<SplitConfig, String> {
    let (public_keys, secret_key): (&[&str], Option<&str>) = match kind {
        ProviderKind::None | ProviderKind::CaracalMandate => (&[], None),
        ProviderKind::ApiKey => (
            &[
                "auth_location",
                "header_name",
                "query_param_name",
                "allowed_token_hosts",
                "auth_scheme",
                "forward_caracal_identity",
                "allow_runtime_injection",
            ],
            Some("api_key"),
        ),
        ProviderKind::BearerToken => (
            &[
                "allowed_token_hosts",
                "auth_header",
                "auth_scheme",
                "forward_caracal_identity",
                "allow_runtime_injection",
            ],
            Some("bearer_token"),
        ),
        ProviderKind::HttpBasic => (
            &[
                "username",
                "allowed_token_hosts",
                "forward_caracal_identity",
            ],
            Some("password"),
        ),
        ProviderKind::OAuth2AuthorizationCode | ProviderKind::OAuth2ClientCredentials => {
            return Err(format!(
                "{} providers are not supported by this Admin API",
                kind_name(kind)
            ));
        }
    };
    let kind_s = kind_name(kind);
    let unsupported: Vec<&str> = config
        .keys()
        .map(String::as_str)
        .filter(|k| !public_keys.contains(k) && Some(*k) != secret_key)
        .collect();
    if !unsupported.is_empty() {
        return Err(format!(
            "{kind_s} provider config has unsupported keys: {}",
            unsupported.join(", ")
        ));
    }
    let mut out = SplitConfig::default();
    if let Some(sk) = secret_key {
        match config.get(sk) {
            Some(Value::String(s)) => {
                let t = s.trim();
                if t.is_empty() || t.chars().any(char::is_control) {
                    return Err(format!(
                        "{sk} must be a non-empty string without control characters"
                    ));
                }
                out.secrets.insert(sk.to_owned(), t.to_owned());
            }
            Some(_) => return Err(format!("{sk} must be a non-empty string")),
            None if require_secrets => return Err(format!("{sk} is required")),
            None => {}
        }
    }
    for key in public_keys {
        let Some(v) = config.get(*key) else { continue };
        let checked = match *key {
            "forward_caracal_identity" | "allow_runtime_injection" => v
                .as_bool()
                .map(Value::Bool)
                .ok_or(format!("{key} must be a boolean")),
            "allowed_token_hosts" => {
                let hosts: Option<Vec<String>> = v.as_array().and_then(|a| {
                    a.iter()
                        .map(|h| {
                            h.as_str()
                                .map(|s| s.trim().to_ascii_lowercase())
                                .filter(|s| is_hostname(s))
                        })
                        .collect()
                });
                match hosts {
                    Some(h) if !h.is_empty() => Ok(Value::from(h)),
                    _ => Err(format!("{key} must be a non-empty array of hostnames")),
                }
            }
            "auth_location" => match v.as_str() {
                Some("header" | "query") => Ok(v.clone()),
                _ => Err(format!("{key} must be header or query")),
            },
            "header_name" | "auth_header" => match v.as_str() {
                Some(h) if is_allowed_header_name(h) => Ok(v.clone()),
                _ => Err(format!("{key} must be an allowed HTTP header name")),
            },
            "query_param_name" => match v.as_str() {
                Some(q)
                    if !q.is_empty()
                        && q.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
                        }) =>
                {
                    Ok(v.clone())
                }
                _ => Err(format!("{key} must match ^[A-Za-z0-9._~-]+$")),
            },
            "auth_scheme" => match v.as_str() {
                Some(s)
                    if s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
                {
                    Ok(v.clone())
                }
                _ => Err(format!("{key} must match ^[A-Za-z][A-Za-z0-9-]*$")),
            },
            "username" => match v.as_str().map(str::trim) {
                Some(u) if !u.is_empty() && !u.chars().any(char::is_control) => Ok(Value::from(u)),
                _ => Err(format!("{key} must be a non-empty string")),
            },
            _ => Ok(v.clone()),
        }?;
        out.public.insert((*key).to_owned(), checked);
    }
    match kind {
        ProviderKind::ApiKey => {
            let location = out
                .public
                .get("auth_location")
                .and_then(Value::as_str)
                .unwrap_or("header")
                .to_owned();
            // "`header` default — stored explicitly when omitted".
            out.public
                .insert("auth_location".to_owned(), Value::from(location.as_str()));
            if location == "header" {
                if !out.public.contains_key("header_name") {
                    return Err("header_name is required when auth_location is header".to_owned());
                }
                if out.public.contains_key("query_param_name") {
                    return Err("query_param_name applies only to auth_location query".to_owned());
                }
            } else {
                if !out.public.contains_key("query_param_name") {
                    return Err(
                        "query_param_name is required when auth_location is query".to_owned()
                    );
                }
                if out.public.contains_key("header_name") || out.public.contains_key("auth_scheme")
                {
                    return Err(
                        "header_name and auth_scheme apply only to auth_location header".to_owned(),
                    );
                }
            }
        }
        ProviderKind::BearerToken => {
            let scheme = out
                .public
                .get("auth_scheme")
                .and_then(Value::as_str)
                .unwrap_or("Bearer")
                .to_ascii_lowercase();
            if let Some(token) = out.secrets.get("bearer_token") {
                let prefix = format!("{scheme} ");
                if token.to_ascii_lowercase().starts_with(&prefix) {
                    return Err(
                        "bearer_token must be the bare token, without its auth scheme".to_owned(),
                    );
                }
            }
        }
        ProviderKind::HttpBasic if !out.public.contains_key("username") => {
            return Err("username is required".to_owned());
        }
        _ => {}
    }
    Ok(out)
}

fn config_error(description: String) -> HttpError {
    err_desc(400, "invalid_provider_config", description)
}

fn secret_backend() -> HttpError {
    err(502, "secret_backend_unavailable")
}

/// Seal `secrets` as one JSON document under the provider's reference and store it.
async fn put_secrets(
    svc: &Svc,
    zone_id: &str,
    provider_id: &str,
    secrets: &BTreeMap<String, String>,
) -> AdminResult<()> {
    let reference = provider_secret_config_ref(zone_id, provider_id);
    let doc = serde_json::to_vec(secrets).map_err(|_| secret_backend())?;
    let envelope = svc
        .keyring
        .seal(&reference, &doc)
        .map_err(|_| secret_backend())?;
    svc.stores
        .secrets
        .put_secret(&reference, &envelope)
        .await
        .map_err(|_| secret_backend())?;
    Ok(())
}

fn render(p: &Provider) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

fn reserved() -> HttpError {
    err_desc(
        409,
        "reserved_namespace",
        "provider identifiers starting with provider://caracal-sys- are reserved",
    )
}

/// `POST`/`PATCH` body. Blank `name`/`identifier` count as absent.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ProviderBody {
    /// Display name (defaults to the identifier).
    #[serde(default)]
    pub name: Option<String>,
    /// `provider://<slug>`; derived from the name when omitted.
    #[serde(default)]
    pub identifier: Option<String>,
    /// `none`, `caracal_mandate`, `api_key`, `bearer_token`, `http_basic`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub kind: Option<ProviderKind>,
    /// Public and secret configuration keys of the kind; secret values are sealed.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config_json: Option<Map<String, Value>>,
    /// Connectivity check (OAuth kinds only; refused for the others).
    #[serde(default)]
    pub check: Option<bool>,
}

fn non_blank(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

fn check_identifier(identifier: &str) -> AdminResult<()> {
    if !is_valid_provider_identifier(identifier) {
        return Err(err_desc(
            400,
            "invalid_provider_identifier",
            "identifier must match ^provider://[a-z0-9]+(?:-[a-z0-9]+)*$",
        ));
    }
    if identifier.starts_with(RESERVED_IDENTIFIER_PREFIX) {
        return Err(reserved());
    }
    Ok(())
}

/// List providers (`status` `active` (default) | `archived`).
#[utoipa::path(get, path = "/v1/zones/{zone_id}/providers", tag = "providers",
    params(("zone_id" = String, Path, description = "zone id"), ListQuery),
    responses((status = 200, description = "`{items, next_cursor}` of provider rows (public config only)", body = Value)))]
pub async fn list_providers(
    State(svc): State<Svc>,
    Path(zone_id): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    let p = list_params(q)?;
    let page = svc
        .stores
        .providers
        .list_providers(&zone_id, p.listing, &p.page)
        .await
        .map_err(|e| list_error(&e))?;
    Ok(envelope(page, render))
}

/// Create a provider; secret values are sealed and never returned.
#[utoipa::path(post, path = "/v1/zones/{zone_id}/providers", tag = "providers",
    request_body = ProviderBody,
    params(("zone_id" = String, Path, description = "zone id")),
    responses((status = 201, description = "provider row (public config, secret key names)", body = Value),
        (status = 400, description = "`invalid_provider`, `invalid_provider_identifier`, `invalid_provider_config`, `provider_check_unsupported`"),
        (status = 404, description = "`zone_not_found`"),
        (status = 409, description = "`reserved_namespace`, `provider_identifier_conflict`"),
        (status = 502, description = "`secret_backend_unavailable`")))]
pub async fn create_provider(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    require_zone(&svc, &zone_id).await?;
    let req: ProviderBody = parse_body(&body, "invalid_provider")?;
    let Some(kind) = req.kind else {
        return Err(err(400, "invalid_provider"));
    };
    let name = non_blank(req.name.as_deref());
    let identifier = non_blank(req.identifier.as_deref());
    if name.is_none() && identifier.is_none() {
        return Err(err(400, "invalid_provider"));
    }
    if let Some(i) = identifier {
        check_identifier(i)?;
    }
    let config = split_config(kind, &req.config_json.clone().unwrap_or_default(), true)
        .map_err(config_error)?;
    if req.check == Some(true) {
        return Err(err(400, "provider_check_unsupported"));
    }
    let now = svc.now();
    let mut provider = Provider {
        id: svc.new_id(),
        zone_id: zone_id.clone(),
        name: String::new(),
        identifier: String::new(),
        kind,
        config_json: config.public,
        secret_config_keys: config.secrets.keys().cloned().collect(),
        connectivity_failed_at: None,
        attribution: Attribution::created_by(actor.attribution()),
        created_at: now,
        updated_at: now,
        archived_at: None,
    };
    let candidates: Vec<String> = match identifier {
        Some(i) => vec![i.to_owned()],
        None => {
            let base_name = name.unwrap_or("provider");
            let base_name = base_name.strip_prefix("provider://").unwrap_or(base_name);
            let base = format!("provider://{}", slugify(base_name, "provider"));
            check_identifier(&base)?;
            let mut out = Vec::new();
            for n in 1..=MAX_IDENTIFIER_ATTEMPTS {
                let c = if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                };
                let taken = svc
                    .stores
                    .providers
                    .get_provider_by_identifier(&zone_id, &c)
                    .await
                    .map_err(|e| internal(&e))?
                    .is_some();
                if !taken {
                    out.push(c);
                    break;
                }
            }
            out
        }
    };
    let Some(chosen) = candidates.into_iter().next() else {
        return Err(err(409, "provider_identifier_conflict"));
    };
    provider.name = name.unwrap_or(&chosen).to_owned();
    provider.identifier = chosen;
    if !config.secrets.is_empty() {
        put_secrets(&svc, &zone_id, &provider.id, &config.secrets).await?;
    }
    match svc.stores.providers.insert_provider(&provider).await {
        Ok(()) => Ok(respond(201, render(&provider))),
        Err(e) => {
            if !config.secrets.is_empty() {
                let reference = provider_secret_config_ref(&zone_id, &provider.id);
                let _ = svc.stores.secrets.delete_secret(&reference).await;
            }
            match e {
                StoreError::Conflict { .. } => Err(err(409, "provider_identifier_conflict")),
                other => Err(internal(&other)),
            }
        }
    }
}

async fn load_active(svc: &Svc, zone_id: &str, id: &str) -> AdminResult<Provider> {
    match svc.stores.providers.get_provider(zone_id, id).await {
        Ok(Some(p)) if p.archived_at.is_none() => Ok(p),
        Ok(_) => Err(err(404, "provider_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Read a provider (public config and secret key names only).
#[utoipa::path(get, path = "/v1/zones/{zone_id}/providers/{id}", tag = "providers",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "provider id")),
    responses((status = 200, description = "provider row", body = Value),
        (status = 404, description = "`provider_not_found`")))]
pub async fn get_provider(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    match svc.stores.providers.get_provider(&zone_id, &id).await {
        Ok(Some(p)) => Ok(respond(200, render(&p))),
        Ok(None) => Err(err(404, "provider_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Update a provider. `config_json` replaces the public config; a kind change needs the new
/// kind's secrets; on the same kind, supplied secrets replace the sealed document and omitted
/// ones keep it.
#[utoipa::path(patch, path = "/v1/zones/{zone_id}/providers/{id}", tag = "providers",
    request_body = ProviderBody,
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "provider id")),
    responses((status = 200, description = "provider row", body = Value),
        (status = 400, description = "`invalid_provider`, `invalid_provider_identifier`, `provider_config_required`, `invalid_provider_config`, `no_fields`"),
        (status = 404, description = "`provider_not_found`"),
        (status = 409, description = "`reserved_namespace`, `provider_identifier_conflict`"),
        (status = 502, description = "`secret_backend_unavailable`")))]
pub async fn patch_provider(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let req: ProviderBody = parse_body(&body, "invalid_provider")?;
    let name = non_blank(req.name.as_deref());
    let identifier = non_blank(req.identifier.as_deref());
    if let Some(i) = identifier {
        check_identifier(i)?;
    }
    if req.kind.is_some() && req.config_json.is_none() {
        return Err(err(400, "provider_config_required"));
    }
    let mut p = load_active(&svc, &zone_id, &id).await?;
    let kind_changed = req.kind.is_some_and(|k| k != p.kind);
    let kind = req.kind.unwrap_or(p.kind);
    let split = match &req.config_json {
        Some(c) => Some(split_config(kind, c, kind_changed).map_err(config_error)?),
        None => None,
    };
    if name.is_none() && identifier.is_none() && req.kind.is_none() && split.is_none() {
        return Err(err(400, "no_fields"));
    }
    if let Some(n) = name {
        p.name = n.to_owned();
    }
    if let Some(i) = identifier {
        p.identifier = i.to_owned();
    }
    let reference = provider_secret_config_ref(&zone_id, &p.id);
    if let Some(split) = split {
        p.config_json = split.public;
        if !split.secrets.is_empty() {
            put_secrets(&svc, &zone_id, &p.id, &split.secrets).await?;
            p.secret_config_keys = split.secrets.keys().cloned().collect();
        } else if kind_changed {
            // A kind change without secrets (to `none` or `caracal_mandate`): the old
            // credential must not outlive its kind.
            svc.stores
                .secrets
                .delete_secret(&reference)
                .await
                .map_err(|_| secret_backend())?;
            p.secret_config_keys.clear();
        }
    }
    if kind_changed {
        p.connectivity_failed_at = None;
    }
    p.kind = kind;
    p.attribution.updated_by = Some(actor.attribution());
    p.attribution.updated_via_operator = false;
    p.updated_at = svc.now();
    match svc.stores.providers.update_provider(&p).await {
        Ok(()) => Ok(respond(200, render(&p))),
        Err(StoreError::Conflict { .. }) => Err(err(409, "provider_identifier_conflict")),
        Err(StoreError::NotFound { .. }) => Err(err(404, "provider_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Archive a provider and delete its sealed secrets.
#[utoipa::path(delete, path = "/v1/zones/{zone_id}/providers/{id}", tag = "providers",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "provider id")),
    responses((status = 204, description = "archived"),
        (status = 404, description = "`provider_not_found`")))]
pub async fn delete_provider(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    match svc
        .stores
        .providers
        .archive_provider(&zone_id, &id, svc.now())
        .await
    {
        Ok(()) => {
            let reference = provider_secret_config_ref(&zone_id, &id);
            if let Err(e) = svc.stores.secrets.delete_secret(&reference).await {
                tracing::warn!(error = %e, "admin api: provider secret not deleted");
            }
            Ok(no_content())
        }
        Err(StoreError::NotFound { .. }) => Err(err(404, "provider_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn identifiers_and_headers() {
        assert!(is_valid_provider_identifier("provider://a-1"));
        assert!(!is_valid_provider_identifier("provider://a--1"));
        assert!(!is_valid_provider_identifier("provider://A"));
        assert!(!is_valid_provider_identifier("resource://a"));
        assert!(is_allowed_header_name("X-Api-Key"));
        assert!(!is_allowed_header_name("Host"));
        assert!(!is_allowed_header_name("x-caracal-zone"));
        assert!(!is_allowed_header_name("bad header"));
    }

    #[test]
    fn configs_per_kind() {
        let c = split_config(
            ProviderKind::ApiKey,
            &obj(json!({"header_name": "X-Key", "api_key": " k "})),
            true,
        )
        .unwrap();
        assert_eq!(c.public["auth_location"], "header");
        assert_eq!(c.secrets["api_key"], "k");
        assert!(
            split_config(
                ProviderKind::ApiKey,
                &obj(json!({"header_name": "X-Key"})),
                true
            )
            .is_err()
        );
        assert!(
            split_config(
                ProviderKind::ApiKey,
                &obj(json!({"auth_location": "query", "query_param_name": "key", "api_key": "k"})),
                true
            )
            .is_ok()
        );
        let e = split_config(ProviderKind::None, &obj(json!({"x": 1})), true).unwrap_err();
        assert_eq!(e, "none provider config has unsupported keys: x");
        assert!(
            split_config(
                ProviderKind::BearerToken,
                &obj(json!({"bearer_token": "Bearer abc"})),
                true
            )
            .is_err()
        );
        assert!(
            split_config(
                ProviderKind::HttpBasic,
                &obj(json!({"password": "p"})),
                true
            )
            .is_err()
        );
        let b = split_config(
            ProviderKind::HttpBasic,
            &obj(json!({"username": " u ", "password": "p", "allowed_token_hosts": ["API.example.com"]})),
            true,
        )
        .unwrap();
        assert_eq!(b.public["username"], "u");
        assert_eq!(b.public["allowed_token_hosts"], json!(["api.example.com"]));
        assert!(!format!("{b:?}").contains("\"p\""));
    }
}
