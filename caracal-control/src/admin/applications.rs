//! Managed applications (`http-bodies.md` §2): list, create, read, update, rotate, archive.
//!
//! The client secret (`cs_` + base64url of 32 random bytes) is returned exactly once, in the
//! create or rotate response, and stored only as its Argon2id hash. Archival is the
//! revocation: every runtime check requires an unarchived application.
//!
//! Not here yet: the audited re-reveal (`GET …/client-secret`, needs the sealed copy and the
//! admin audit chain) and DCR registration.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use caracal_core::model::Attribution;
use caracal_core::model::application::{Application, RegistrationMethod};
use caracal_core::secrets::{generate_client_secret, hash_client_secret};
use caracal_core::store::StoreError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Actor;
use super::{
    AdminResult, HttpError, ListQuery, Svc, check_params, envelope, err, err_desc, internal,
    list_error, list_params, no_content, parse_body, require_zone, respond, trimmed_name,
};

/// "`name` str trimmed 1..200" (reference §2).
pub const MAX_APPLICATION_NAME: usize = 200;
/// "`client_secret` str ≥32 chars" on PATCH (reference §2).
pub const MIN_CLIENT_SECRET_LEN: usize = 32;
/// "`trait_count_exceeded` (>64)" (reference §2).
pub const MAX_TRAITS: usize = 64;
/// "409 reserved_namespace (name prefix `caracal.sys/`)" (reference §2).
pub const RESERVED_NAME_PREFIX: &str = "caracal.sys/";

/// Validate traits (reference §2, `traits.ts`): at most 64; each 1..128 characters matching
/// `^[A-Za-z][A-Za-z0-9._:-]*$`; no duplicates; the namespaces `control` and `caracal.sys`
/// (the part before the first `:`) are global-only. Errors are `403 {error,
/// error_description}` with `trait_count_exceeded`, `trait_invalid`, `trait_duplicate`,
/// `trait_forbidden`.
///
/// The Control-specific trait grammar (invoke, scope-prefixed, max-TTL, expiry traits) is not
/// checked here: Control is not part of this build, so a global caller's `control:` traits
/// are stored as given.
pub fn check_traits(traits: &[String], global: bool) -> Result<(), (&'static str, String)> {
    if traits.len() > MAX_TRAITS {
        return Err((
            "trait_count_exceeded",
            format!("at most {MAX_TRAITS} traits are allowed"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for t in traits {
        let mut bytes = t.bytes();
        let well_formed = (1..=128).contains(&t.len())
            && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !well_formed {
            return Err(("trait_invalid", "trait is not well formed".to_owned()));
        }
        if !seen.insert(t.as_str()) {
            return Err(("trait_duplicate", "duplicate trait".to_owned()));
        }
        let namespace = t.split(':').next().unwrap_or(t);
        if !global && t.contains(':') && matches!(namespace, "control" | "caracal.sys") {
            return Err((
                "trait_forbidden",
                format!("the {namespace} trait namespace is reserved to global admins"),
            ));
        }
    }
    Ok(())
}

/// The row: `traits` only for a global caller.
fn render(app: &Application, actor: &Actor) -> Value {
    let mut v = serde_json::to_value(app).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        if !actor.is_global() {
            o.remove("traits");
        }
    }
    v
}

/// The create-row: no `traits`, no `archived_at`, plus the one-time `client_secret`.
fn render_created(app: &Application, secret: &str) -> Value {
    let mut v = serde_json::to_value(app).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("traits");
        o.remove("archived_at");
        o.insert("client_secret".to_owned(), json!(secret));
    }
    v
}

fn trait_error((code, description): (&'static str, String)) -> HttpError {
    err_desc(403, code, description)
}

/// Argon2id costs ~100 ms: hash off the async workers.
async fn hash_secret(secret: String) -> AdminResult<String> {
    tokio::task::spawn_blocking(move || hash_client_secret(&secret))
        .await
        .map_err(|_| HttpError(caracal_core::api::ApiError::internal()))?
        .map_err(|_| HttpError(caracal_core::api::ApiError::internal()))
}

/// A new secret and its hash.
async fn new_secret() -> AdminResult<(String, String)> {
    let secret =
        generate_client_secret().map_err(|_| HttpError(caracal_core::api::ApiError::internal()))?;
    let hash = hash_secret(secret.clone()).await?;
    Ok((secret, hash))
}

/// `POST …/applications` body (strict).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApplication {
    /// 1..200 characters after trimming.
    pub name: String,
    /// Must be `managed`.
    pub registration_method: String,
    /// Traits.
    #[serde(default)]
    pub traits: Option<Vec<String>>,
}

/// `PATCH …/applications/{id}` body (strict, all optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchApplication {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// A caller-chosen secret, at least 32 characters.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Replacement traits.
    #[serde(default)]
    pub traits: Option<Vec<String>>,
}

fn conflict_or_internal(e: &StoreError) -> HttpError {
    match e {
        StoreError::Conflict { .. } => err(409, "application_name_taken"),
        StoreError::NotFound { .. } => err(404, "application_not_found"),
        other => internal(other),
    }
}

/// List applications (`status` `active` (default) | `archived`).
#[utoipa::path(get, path = "/v1/zones/{zone_id}/applications", tag = "applications",
    params(("zone_id" = String, Path, description = "zone id"), ListQuery),
    responses((status = 200, description = "`{items, next_cursor}` of application rows", body = Value)))]
pub async fn list_applications(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    let p = list_params(q)?;
    let page = svc
        .stores
        .applications
        .list_applications(&zone_id, p.listing, &p.page)
        .await
        .map_err(|e| list_error(&e))?;
    Ok(envelope(page, |a| render(a, &actor)))
}

/// Create a managed application; the response carries `client_secret`, once.
#[utoipa::path(post, path = "/v1/zones/{zone_id}/applications", tag = "applications",
    request_body = CreateApplication,
    params(("zone_id" = String, Path, description = "zone id")),
    responses((status = 201, description = "create-row with `client_secret`", body = Value),
        (status = 400, description = "`invalid_application`"),
        (status = 403, description = "trait errors"),
        (status = 404, description = "`zone_not_found`"),
        (status = 409, description = "`reserved_namespace`, `application_name_taken`")))]
pub async fn create_application(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    require_zone(&svc, &zone_id).await?;
    let req: CreateApplication = parse_body(&body, "invalid_application")?;
    let name = trimmed_name(&req.name, MAX_APPLICATION_NAME)
        .ok_or_else(|| err(400, "invalid_application"))?;
    if req.registration_method != "managed" {
        return Err(err(400, "invalid_application"));
    }
    if name.to_ascii_lowercase().starts_with(RESERVED_NAME_PREFIX) {
        return Err(err_desc(
            409,
            "reserved_namespace",
            "application names starting with caracal.sys/ are reserved",
        ));
    }
    let traits = req.traits.unwrap_or_default();
    check_traits(&traits, actor.is_global()).map_err(trait_error)?;
    let (secret, hash) = new_secret().await?;
    let now = svc.now();
    let app = Application {
        id: svc.new_id(),
        zone_id,
        name,
        registration_method: RegistrationMethod::Managed,
        traits,
        expires_at: None,
        archived_at: None,
        attribution: Attribution::created_by(actor.attribution()),
        created_at: now,
        updated_at: now,
        client_secret_hash: Some(hash),
    };
    svc.stores
        .applications
        .insert_application(&app)
        .await
        .map_err(|e| conflict_or_internal(&e))?;
    Ok(respond(201, render_created(&app, &secret)))
}

async fn load_active(svc: &Svc, zone_id: &str, id: &str) -> AdminResult<Application> {
    match svc.stores.applications.get_application(zone_id, id).await {
        Ok(Some(a)) if a.archived_at.is_none() => Ok(a),
        Ok(_) => Err(err(404, "application_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Read an application (unarchived only); never includes a secret.
#[utoipa::path(get, path = "/v1/zones/{zone_id}/applications/{id}", tag = "applications",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "application id")),
    responses((status = 200, description = "application row", body = Value),
        (status = 404, description = "`application_not_found`")))]
pub async fn get_application(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let app = load_active(&svc, &zone_id, &id).await?;
    Ok(respond(200, render(&app, &actor)))
}

/// Rename, replace traits, or set a caller-chosen secret.
#[utoipa::path(patch, path = "/v1/zones/{zone_id}/applications/{id}", tag = "applications",
    request_body = PatchApplication,
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "application id")),
    responses((status = 200, description = "application row", body = Value),
        (status = 400, description = "`invalid_application`, `no_fields`"),
        (status = 403, description = "trait errors"),
        (status = 404, description = "`application_not_found`"),
        (status = 409, description = "`reserved_namespace`, `application_name_taken`")))]
pub async fn patch_application(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let req: PatchApplication = parse_body(&body, "invalid_application")?;
    let name = match &req.name {
        Some(n) => Some(
            trimmed_name(n, MAX_APPLICATION_NAME).ok_or_else(|| err(400, "invalid_application"))?,
        ),
        None => None,
    };
    if req
        .client_secret
        .as_deref()
        .is_some_and(|s| s.chars().count() < MIN_CLIENT_SECRET_LEN)
    {
        return Err(err(400, "invalid_application"));
    }
    if name
        .as_deref()
        .is_some_and(|n| n.to_ascii_lowercase().starts_with(RESERVED_NAME_PREFIX))
    {
        return Err(err_desc(
            409,
            "reserved_namespace",
            "application names starting with caracal.sys/ are reserved",
        ));
    }
    if let Some(t) = &req.traits {
        check_traits(t, actor.is_global()).map_err(trait_error)?;
    }
    if name.is_none() && req.client_secret.is_none() && req.traits.is_none() {
        return Err(err(400, "no_fields"));
    }
    let mut app = load_active(&svc, &zone_id, &id).await?;
    if let Some(n) = name {
        app.name = n;
    }
    if let Some(t) = req.traits {
        app.traits = t;
    }
    if let Some(secret) = req.client_secret {
        app.client_secret_hash = Some(hash_secret(secret).await?);
    }
    app.attribution.updated_by = Some(actor.attribution());
    app.attribution.updated_via_operator = false;
    app.updated_at = svc.now();
    svc.stores
        .applications
        .update_application(&app)
        .await
        .map_err(|e| conflict_or_internal(&e))?;
    Ok(respond(200, render(&app, &actor)))
}

/// Issue a new secret; the old one stops verifying at once. The response carries the new
/// `client_secret`, once.
#[utoipa::path(post, path = "/v1/zones/{zone_id}/applications/{id}/rotate-secret", tag = "applications",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "application id")),
    responses((status = 200, description = "create-row with the new `client_secret`", body = Value),
        (status = 404, description = "`application_not_found`")))]
pub async fn rotate_secret(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let mut app = load_active(&svc, &zone_id, &id).await?;
    let (secret, hash) = new_secret().await?;
    app.client_secret_hash = Some(hash);
    app.attribution.updated_by = Some(actor.attribution());
    app.attribution.updated_via_operator = false;
    app.updated_at = svc.now();
    svc.stores
        .applications
        .update_application(&app)
        .await
        .map_err(|e| conflict_or_internal(&e))?;
    Ok(respond(200, render_created(&app, &secret)))
}

/// Archive an application (the revocation of its identity).
#[utoipa::path(delete, path = "/v1/zones/{zone_id}/applications/{id}", tag = "applications",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "application id")),
    responses((status = 204, description = "archived"),
        (status = 404, description = "`application_not_found`")))]
pub async fn delete_application(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    match svc
        .stores
        .applications
        .archive_application(&zone_id, &id, svc.now())
        .await
    {
        Ok(()) => Ok(no_content()),
        Err(StoreError::NotFound { .. }) => Err(err(404, "application_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traits() {
        let t = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(check_traits(&t(&["team:a", "b.c-d_e"]), false).is_ok());
        assert_eq!(
            check_traits(&t(&["1a"]), true).unwrap_err().0,
            "trait_invalid"
        );
        assert_eq!(
            check_traits(&t(&["a", "a"]), true).unwrap_err().0,
            "trait_duplicate"
        );
        assert_eq!(
            check_traits(&t(&["control:x"]), false).unwrap_err().0,
            "trait_forbidden"
        );
        assert!(check_traits(&t(&["control:x"]), true).is_ok());
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        assert_eq!(
            check_traits(&many, true).unwrap_err().0,
            "trait_count_exceeded"
        );
    }
}
