//! Resources (`http-bodies.md` §4, `control-plane.md` §1.8): the protected targets, with their
//! scopes, upstream URL, credential provider and declared operations.
//!
//! Not here yet: the mandate probe (`check: true`, `POST …/test`), per-zone quotas, and the
//! protected Control audience resource (Control is not part of this build, so `caracal-control`
//! is refused like any other non-URI identifier).

use std::collections::HashSet;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use caracal_core::model::Attribution;
use caracal_core::model::resource::{Operation, OperationEnforcement, Resource};
use caracal_core::model::zone::slugify;
use caracal_core::store::StoreError;
use serde::Deserialize;
use serde_json::Value;

use super::auth::Actor;
use super::{
    AdminResult, HttpError, ListQuery, Svc, check_params, envelope, err, err_desc, internal,
    list_error, list_params, no_content, nullable, parse_body, require_zone, respond,
};

/// "409 reserved_namespace (prefix `caracal-sys://`)" (reference §4).
pub const RESERVED_IDENTIFIER_PREFIX: &str = "caracal-sys://";
/// "`scopes` string[] 1..64 items each 1..200" (reference §4).
pub const MAX_SCOPES: usize = 64;
/// "`operations?` ≤256" (reference §4).
pub const MAX_OPERATIONS: usize = 256;
/// Bound on the `-2`, `-3`… suffixes tried when deriving an identifier.
const MAX_IDENTIFIER_ATTEMPTS: u32 = 1_000;

/// "identifier must parse as an absolute URI, not `provider:` scheme, no userinfo" (reference
/// §4): a scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`), a colon and a non-empty rest
/// without whitespace or control characters; no `user@` in the authority. Returns the reason.
pub fn check_resource_identifier(identifier: &str) -> Result<(), &'static str> {
    if identifier.is_empty() || identifier.len() > 512 {
        return Err("identifier must be 1..512 characters");
    }
    if identifier
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("identifier must be an absolute URI");
    }
    let Some((scheme, rest)) = identifier.split_once(':') else {
        return Err("identifier must be an absolute URI");
    };
    let mut sb = scheme.bytes();
    let scheme_ok = sb.next().is_some_and(|b| b.is_ascii_alphabetic())
        && sb.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok || rest.is_empty() {
        return Err("identifier must be an absolute URI");
    }
    if scheme.eq_ignore_ascii_case("provider") {
        return Err("provider: identifiers name providers, not resources");
    }
    if let Some(after) = rest.strip_prefix("//") {
        let authority = after.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err("identifier must not carry userinfo");
        }
    }
    Ok(())
}

/// "`upstream_url?` http(s) URL or null" (reference §4): `http://` or `https://`, a host, no
/// whitespace, control characters or userinfo.
pub fn is_valid_upstream_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let Some(rest) = rest else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    url.len() <= 2048
        && !authority.is_empty()
        && !authority.contains('@')
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Validate and normalise declared operations (reference §4): "method is upper-cased and path
/// trimmed before storing"; errors `operation_method_and_path_required`,
/// `operation_path_must_be_absolute`, `operation_scope_not_in_resource_scopes`,
/// `operation_duplicate` (same UPPER(method)+path).
pub fn normalize_operations(
    operations: &[OperationInput],
    scopes: &[String],
) -> Result<Vec<Operation>, &'static str> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(operations.len());
    for op in operations {
        let method = op.method.trim().to_ascii_uppercase();
        let path = op.path.trim().to_owned();
        if method.is_empty() || path.is_empty() {
            return Err("operation_method_and_path_required");
        }
        if !path.starts_with('/') {
            return Err("operation_path_must_be_absolute");
        }
        if !scopes.contains(&op.scope) {
            return Err("operation_scope_not_in_resource_scopes");
        }
        if !seen.insert((method.clone(), path.clone())) {
            return Err("operation_duplicate");
        }
        out.push(Operation {
            method,
            path,
            scope: op.scope.clone(),
        });
    }
    Ok(out)
}

/// A declared operation in a request: "`{method 1..16, path 1..512, scope 1..200}`".
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct OperationInput {
    /// HTTP method (upper-cased on store).
    pub method: String,
    /// Absolute path (trimmed on store).
    pub path: String,
    /// One of the resource's scopes.
    pub scope: String,
}

impl OperationInput {
    fn sizes_ok(&self) -> bool {
        (1..=16).contains(&self.method.len())
            && (1..=512).contains(&self.path.len())
            && (1..=200).contains(&self.scope.len())
    }
}

/// `POST`/`PATCH` body (not strict: unknown keys are dropped). On POST `scopes` and one of
/// `name`/`identifier` are required.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ResourceBody {
    /// 1..200.
    #[serde(default)]
    pub name: Option<String>,
    /// 1..512, an absolute URI.
    #[serde(default)]
    pub identifier: Option<String>,
    /// http(s) URL or null.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub upstream_url: Option<Option<String>>,
    /// 1..64 scopes, each 1..200.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The provider holding the upstream credential, or null.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub credential_provider_id: Option<Option<String>>,
    /// At most 256.
    #[serde(default)]
    pub operations: Option<Vec<OperationInput>>,
    /// `enforced` (default) | `transport_uniform`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub operation_enforcement: Option<OperationEnforcement>,
    /// Probe the upstream before saving (not available in this build).
    #[serde(default)]
    pub check: Option<bool>,
}

impl ResourceBody {
    /// The shape rules of §4 that need no store.
    fn check_shape(&self) -> AdminResult<()> {
        let bad = || err(400, "invalid_resource");
        if self
            .name
            .as_deref()
            .is_some_and(|n| !(1..=200).contains(&n.chars().count()))
        {
            return Err(bad());
        }
        if self
            .identifier
            .as_deref()
            .is_some_and(|i| !(1..=512).contains(&i.len()))
        {
            return Err(bad());
        }
        if let Some(scopes) = &self.scopes {
            if scopes.is_empty()
                || scopes.len() > MAX_SCOPES
                || scopes.iter().any(|s| !(1..=200).contains(&s.len()))
            {
                return Err(bad());
            }
        }
        if let Some(Some(u)) = &self.upstream_url {
            if !is_valid_upstream_url(u) {
                return Err(bad());
            }
        }
        if let Some(ops) = &self.operations {
            if ops.len() > MAX_OPERATIONS || !ops.iter().all(OperationInput::sizes_ok) {
                return Err(bad());
            }
        }
        if self.check == Some(true) {
            return Err(err_desc(
                400,
                "resource_verification_unsupported",
                "resource checks are not available",
            ));
        }
        Ok(())
    }
}

fn render(r: &Resource) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

fn identifier_error(reason: &str) -> HttpError {
    err_desc(400, "invalid_resource_identifier", reason)
}

fn reserved() -> HttpError {
    err_desc(
        409,
        "reserved_namespace",
        "resource identifiers starting with caracal-sys:// are reserved",
    )
}

/// The provider must be an active provider of the zone: `404 provider_not_found`.
async fn require_provider(svc: &Svc, zone_id: &str, id: &str) -> AdminResult<()> {
    match svc.stores.providers.get_provider(zone_id, id).await {
        Ok(Some(p)) if p.archived_at.is_none() => Ok(()),
        Ok(_) => Err(err(404, "provider_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// "Non-control resources need both a provider and `upstream_url` (after merging PATCH with
/// current values)": `400 credential_provider_required` / `upstream_url_required`.
fn check_routing(r: &Resource) -> AdminResult<()> {
    if r.credential_provider_id.is_none() {
        return Err(err(400, "credential_provider_required"));
    }
    if r.upstream_url.is_none() {
        return Err(err(400, "upstream_url_required"));
    }
    Ok(())
}

/// List resources (`status` `active` (default) | `archived`).
#[utoipa::path(get, path = "/v1/zones/{zone_id}/resources", tag = "resources",
    params(("zone_id" = String, Path, description = "zone id"), ListQuery),
    responses((status = 200, description = "`{items, next_cursor}` of resource rows", body = Value)))]
pub async fn list_resources(
    State(svc): State<Svc>,
    Path(zone_id): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    let p = list_params(q)?;
    let page = svc
        .stores
        .resources
        .list_resources(&zone_id, p.listing, &p.page)
        .await
        .map_err(|e| list_error(&e))?;
    Ok(envelope(page, render))
}

/// Create a resource.
#[utoipa::path(post, path = "/v1/zones/{zone_id}/resources", tag = "resources",
    request_body = ResourceBody,
    params(("zone_id" = String, Path, description = "zone id")),
    responses((status = 201, description = "resource row", body = Value),
        (status = 400, description = "`invalid_resource`, `invalid_resource_identifier`, `credential_provider_required`, `upstream_url_required`, operation errors"),
        (status = 404, description = "`zone_not_found`, `provider_not_found`"),
        (status = 409, description = "`reserved_namespace`, `resource_identifier_conflict`")))]
pub async fn create_resource(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    require_zone(&svc, &zone_id).await?;
    let req: ResourceBody = parse_body(&body, "invalid_resource")?;
    req.check_shape()?;
    let name = req.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let identifier = req
        .identifier
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty());
    if name.is_none() && identifier.is_none() {
        return Err(err(400, "invalid_resource"));
    }
    let Some(scopes) = req.scopes.clone() else {
        return Err(err(400, "invalid_resource"));
    };
    if let Some(i) = identifier {
        check_resource_identifier(i).map_err(identifier_error)?;
        if i.to_ascii_lowercase()
            .starts_with(RESERVED_IDENTIFIER_PREFIX)
        {
            return Err(reserved());
        }
    }
    let provider = req.credential_provider_id.clone().flatten();
    if let Some(p) = &provider {
        require_provider(&svc, &zone_id, p).await?;
    }
    let now = svc.now();
    let mut resource = Resource {
        id: svc.new_id(),
        zone_id,
        name: String::new(),
        identifier: String::new(),
        upstream_url: req.upstream_url.clone().flatten(),
        scopes,
        credential_provider_id: provider,
        operations: Vec::new(),
        operation_enforcement: req.operation_enforcement.unwrap_or_default(),
        attribution: Attribution::created_by(actor.attribution()),
        created_at: now,
        updated_at: now,
        archived_at: None,
    };
    check_routing(&resource)?;
    resource.operations =
        normalize_operations(req.operations.as_deref().unwrap_or(&[]), &resource.scopes)
            .map_err(|code| err(400, code))?;
    if let Some(i) = identifier {
        resource.identifier = i.to_owned();
        resource.name = name.unwrap_or(i).to_owned();
        return match svc.stores.resources.insert_resource(&resource).await {
            Ok(()) => Ok(respond(201, render(&resource))),
            Err(StoreError::Conflict { .. }) => Err(err(409, "resource_identifier_conflict")),
            Err(e) => Err(internal(&e)),
        };
    }
    // "Generated identifier = name if it starts `resource://`, else `resource://` +
    // slug(name) (fallback `resource`), `-2..` suffixes, uniqueness over all rows incl.
    // archived" (the store's unique key covers archived rows).
    let name = name.unwrap_or("resource");
    resource.name = name.to_owned();
    let base = if name.starts_with("resource://") {
        name.to_owned()
    } else {
        format!("resource://{}", slugify(name, "resource"))
    };
    check_resource_identifier(&base).map_err(identifier_error)?;
    for n in 1..=MAX_IDENTIFIER_ATTEMPTS {
        resource.identifier = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        match svc.stores.resources.insert_resource(&resource).await {
            Ok(()) => return Ok(respond(201, render(&resource))),
            Err(StoreError::Conflict {
                constraint: "resource_identifier",
            }) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(err(409, "resource_identifier_conflict"));
            }
            Err(e) => return Err(internal(&e)),
        }
    }
    Err(err(409, "resource_identifier_conflict"))
}

async fn load_active(svc: &Svc, zone_id: &str, id: &str) -> AdminResult<Resource> {
    match svc.stores.resources.get_resource(zone_id, id).await {
        Ok(Some(r)) if r.archived_at.is_none() => Ok(r),
        Ok(_) => Err(err(404, "resource_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Read a resource.
#[utoipa::path(get, path = "/v1/zones/{zone_id}/resources/{id}", tag = "resources",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "resource id")),
    responses((status = 200, description = "resource row", body = Value),
        (status = 404, description = "`resource_not_found`")))]
pub async fn get_resource(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    match svc.stores.resources.get_resource(&zone_id, &id).await {
        Ok(Some(r)) => Ok(respond(200, render(&r))),
        Ok(None) => Err(err(404, "resource_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Update a resource (fields merged with the current row, then re-validated).
#[utoipa::path(patch, path = "/v1/zones/{zone_id}/resources/{id}", tag = "resources",
    request_body = ResourceBody,
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "resource id")),
    responses((status = 200, description = "resource row", body = Value),
        (status = 400, description = "`invalid_resource`, `invalid_resource_identifier`, routing and operation errors, `no_fields`"),
        (status = 404, description = "`provider_not_found`, `resource_not_found`"),
        (status = 409, description = "`reserved_namespace`, `resource_identifier_conflict`")))]
pub async fn patch_resource(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let req: ResourceBody = parse_body(&body, "invalid_resource")?;
    req.check_shape()?;
    // "404 provider_not_found (checked first when a truthy provider id is sent)".
    if let Some(Some(p)) = &req.credential_provider_id {
        require_provider(&svc, &zone_id, p).await?;
    }
    let mut r = load_active(&svc, &zone_id, &id).await?;
    let mut changed = false;
    if let Some(i) = req.identifier.as_deref().map(str::trim) {
        check_resource_identifier(i).map_err(identifier_error)?;
        if i.to_ascii_lowercase()
            .starts_with(RESERVED_IDENTIFIER_PREFIX)
        {
            return Err(reserved());
        }
        r.identifier = i.to_owned();
        changed = true;
    }
    if let Some(n) = req.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        r.name = n.to_owned();
        changed = true;
    }
    if let Some(u) = req.upstream_url.clone() {
        r.upstream_url = u;
        changed = true;
    }
    if let Some(p) = req.credential_provider_id.clone() {
        r.credential_provider_id = p;
        changed = true;
    }
    if let Some(s) = req.scopes.clone() {
        r.scopes = s;
        changed = true;
    }
    if let Some(e) = req.operation_enforcement {
        r.operation_enforcement = e;
        changed = true;
    }
    check_routing(&r)?;
    let ops: Vec<OperationInput> = match &req.operations {
        Some(ops) => {
            changed = true;
            ops.clone()
        }
        None => r
            .operations
            .iter()
            .map(|o| OperationInput {
                method: o.method.clone(),
                path: o.path.clone(),
                scope: o.scope.clone(),
            })
            .collect(),
    };
    r.operations = normalize_operations(&ops, &r.scopes).map_err(|code| err(400, code))?;
    if !changed {
        return Err(err(400, "no_fields"));
    }
    r.attribution.updated_by = Some(actor.attribution());
    r.attribution.updated_via_operator = false;
    r.updated_at = svc.now();
    match svc.stores.resources.update_resource(&r).await {
        Ok(()) => Ok(respond(200, render(&r))),
        Err(StoreError::Conflict { .. }) => Err(err(409, "resource_identifier_conflict")),
        Err(StoreError::NotFound { .. }) => Err(err(404, "resource_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Archive a resource.
#[utoipa::path(delete, path = "/v1/zones/{zone_id}/resources/{id}", tag = "resources",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "resource id")),
    responses((status = 204, description = "archived"),
        (status = 404, description = "`resource_not_found`")))]
pub async fn delete_resource(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    match svc
        .stores
        .resources
        .archive_resource(&zone_id, &id, svc.now())
        .await
    {
        Ok(()) => Ok(no_content()),
        Err(StoreError::NotFound { .. }) => Err(err(404, "resource_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_resource_identifier("resource://pipernet").is_ok());
        assert!(check_resource_identifier("https://api.example.com/x").is_ok());
        assert!(check_resource_identifier("provider://x").is_err());
        assert!(check_resource_identifier("https://u:p@host/").is_err());
        assert!(check_resource_identifier("no-scheme").is_err());
        assert!(check_resource_identifier("resource://a b").is_err());
        assert!(is_valid_upstream_url("https://up.example.com:8443/base"));
        assert!(!is_valid_upstream_url("ftp://x"));
        assert!(!is_valid_upstream_url("https://"));
    }

    #[test]
    fn operations() {
        let scopes = vec!["r".to_owned()];
        let op = |m: &str, p: &str, s: &str| OperationInput {
            method: m.to_owned(),
            path: p.to_owned(),
            scope: s.to_owned(),
        };
        let ok = normalize_operations(&[op("get", " /a ", "r")], &scopes).unwrap();
        assert_eq!((ok[0].method.as_str(), ok[0].path.as_str()), ("GET", "/a"));
        assert_eq!(
            normalize_operations(&[op("GET", "a", "r")], &scopes).unwrap_err(),
            "operation_path_must_be_absolute"
        );
        assert_eq!(
            normalize_operations(&[op("GET", "/a", "w")], &scopes).unwrap_err(),
            "operation_scope_not_in_resource_scopes"
        );
        assert_eq!(
            normalize_operations(&[op("GET", "/a", "r"), op("get", "/a", "r")], &scopes)
                .unwrap_err(),
            "operation_duplicate"
        );
        assert_eq!(
            normalize_operations(&[op(" ", "/a", "r")], &scopes).unwrap_err(),
            "operation_method_and_path_required"
        );
    }
}
