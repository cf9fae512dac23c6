//! Policies and policy sets (`http-bodies.md` §5–§6, `control-plane.md` §1.13, §4).
//!
//! Every rule lives in `caracal_core::policy::lifecycle` ([`PolicyLifecycle`]): content
//! validation (`invalid_rego`), manifest checks (`invalid_policy_contract`), the bundle compile
//! (`invalid_policy_bundle`), activation with its `caracal.policy.invalidate` outbox row in the
//! same transaction, and simulation. The handlers parse, call, and render; [`policy_error`]
//! maps [`PolicyError::code`] to the reference's status.
//!
//! Rollback is activating an earlier (immutable) set version through `…/activate`, as in the
//! reference (no dedicated endpoint).
//!
//! Not here yet: `POST /v1/policies/validate` and its contract preview, `GET
//! /v1/policy-templates`, the STS load state of the activation status (`sts.state` is
//! `not_configured`: this service has no STS status client), and the `details.issues` of the
//! reference's Zod `invalid_body` answers.
//!
//! [`PolicyLifecycle`]: caracal_core::policy::lifecycle::PolicyLifecycle

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use caracal_core::model::policy_set::{
    ManifestEntry, Policy, PolicySet, PolicySetVersion, PolicyVersion,
};
use caracal_core::model::time::format_iso_ms;
use caracal_core::policy::PolicyError;
use caracal_core::policy::lifecycle::NewPolicy;
use caracal_core::policy::limits::MAX_MANIFEST_ENTRIES;
use caracal_core::store::outbox::OutboxRow;
use caracal_core::store::{Page, StoreError};
use caracal_core::streams::names;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::auth::Actor;
use super::{
    AdminResult, HttpError, Svc, check_params, envelope, err, err_desc, internal, list_error,
    no_content, page_request, require_zone, respond,
};

/// The description of every `invalid_body` answer (the reference's Zod handler text).
pub const INVALID_BODY_DESCRIPTION: &str = "Request body failed validation";

/// A list query without a `status` filter: `limit` and `cursor` (reference §0.1).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1..500 (default 200).
    pub limit: Option<String>,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

fn page_of(
    q: Result<Query<PageQuery>, QueryRejection>,
) -> AdminResult<caracal_core::store::PageRequest> {
    let q = q.map_err(|_| err(400, "invalid_query"))?.0;
    page_request(q.limit.as_deref(), q.cursor.as_deref())
}

/// `400 invalid_body` (the reference's Zod failure on the Zod-validated routes).
fn invalid_body() -> HttpError {
    err_desc(400, "invalid_body", INVALID_BODY_DESCRIPTION)
}

/// Parse a Zod-validated body: not JSON, wrong shape → `400 invalid_body` (unknown keys are dropped).
fn z_body<T: DeserializeOwned>(body: &[u8]) -> AdminResult<T> {
    serde_json::from_slice(body).map_err(|_| invalid_body())
}

/// Map a lifecycle error to the reference's answer: validation and compile failures are 422
/// with the violation as `error_description`; missing rows 404; name clashes and the reserved
/// namespace 409; a store failure 500.
pub fn policy_error(e: PolicyError) -> HttpError {
    let code = e.code();
    match &e {
        PolicyError::Store(StoreError::Conflict { .. }) => err(409, code),
        PolicyError::Store(StoreError::NotFound { .. }) | PolicyError::NotFound(_) => {
            err(404, code)
        }
        PolicyError::Store(other) => internal(other),
        PolicyError::ReservedNamespace => err_desc(
            409,
            code,
            "policy names starting with caracal.sys/ are reserved",
        ),
        PolicyError::ManifestMismatch { .. } | PolicyError::Config(_) => {
            tracing::warn!(error = %e, "admin api: policy integrity failure");
            HttpError(caracal_core::api::ApiError::internal())
        }
        _ => err_desc(422, code, e.description()),
    }
}

// --- Rendering -------------------------------------------------------------------------------

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A policy list row (`id, zone_id, name, description` + attribution + times).
fn policy_row(p: &Policy) -> Value {
    to_value(p)
}

/// *VersionSummary*: `{id, policy_id, version, content_sha256, schema_version, created_at}`.
fn version_summary(v: &PolicyVersion) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(v.id));
    m.insert("policy_id".into(), json!(v.policy_id));
    m.insert("version".into(), json!(v.version));
    m.insert("content_sha256".into(), json!(v.content_sha256));
    m.insert("schema_version".into(), json!(v.schema_version));
    m.insert("created_at".into(), json!(format_iso_ms(&v.created_at)));
    m
}

/// A full version of `GET …/policies/{id}` (with its content). Versions are never archived
/// nor written by the AI operator here, so `archived_at` is null and `created_via_operator`
/// false.
fn version_full(v: &PolicyVersion) -> Value {
    let mut m = version_summary(v);
    m.insert("content".into(), json!(v.content));
    m.insert("created_by".into(), json!(v.created_by));
    m.insert("archived_at".into(), Value::Null);
    m.insert("created_via_operator".into(), json!(false));
    Value::Object(m)
}

/// A policy set row; `with_active` adds `active_version_id` (absent on the create answer).
fn set_row(s: &PolicySet, with_active: bool) -> Value {
    let mut v = to_value(s);
    if let Some(o) = v.as_object_mut() {
        if !with_active {
            o.remove("active_version_id");
        }
    }
    v
}

/// *SetVersion*: `{id, policy_set_id, version, manifest_sha256, schema_version, created_at}`.
fn set_version_summary(v: &PolicySetVersion) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(v.id));
    m.insert("policy_set_id".into(), json!(v.policy_set_id));
    m.insert("version".into(), json!(v.version));
    m.insert("manifest_sha256".into(), json!(v.manifest_sha256));
    m.insert("schema_version".into(), json!(v.schema_version));
    m.insert("created_at".into(), json!(format_iso_ms(&v.created_at)));
    m
}

/// A set-version list row: *SetVersion* + `created_by` (not recorded: null) and
/// `created_via_operator` (false).
fn set_version_row(v: &PolicySetVersion) -> Map<String, Value> {
    let mut m = set_version_summary(v);
    m.insert("created_by".into(), Value::Null);
    m.insert("created_via_operator".into(), json!(false));
    m
}

/// Percent-encode a URI component the way `encodeURIComponent` does.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// --- Policies --------------------------------------------------------------------------------

/// `POST …/policies` body (checked like the reference's Zod schema).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreatePolicy {
    /// At least one character.
    pub name: String,
    /// Optional description.
    #[serde(default)]
    pub description: Option<String>,
    /// The first version's data document (Rego or JSON).
    pub content: String,
}

/// `POST …/policies/{id}/versions` body (checked like the reference's Zod schema).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AddVersion {
    /// The new version's data document.
    pub content: String,
}

/// List the zone's active policies.
#[utoipa::path(get, path = "/v1/zones/{zone_id}/policies", tag = "policies",
    params(("zone_id" = String, Path, description = "zone id"), PageQuery),
    responses((status = 200, description = "`{items, next_cursor}` of policy rows", body = Value)))]
pub async fn list_policies(
    State(svc): State<Svc>,
    Path(zone_id): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    let page = page_of(q)?;
    let page = svc
        .stores
        .policy
        .list_policies(&zone_id, &page)
        .await
        .map_err(|e| list_error(&e))?;
    Ok(envelope(page, policy_row))
}

/// Create a policy and its version 1 (the content is validated first).
#[utoipa::path(post, path = "/v1/zones/{zone_id}/policies", tag = "policies",
    request_body = CreatePolicy,
    params(("zone_id" = String, Path, description = "zone id")),
    responses((status = 201, description = "`{id, version_id, zone_id, name, description, version}`", body = Value),
        (status = 400, description = "`invalid_body`"),
        (status = 404, description = "`zone_not_found`"),
        (status = 409, description = "`reserved_namespace`, `policy_name_conflict`"),
        (status = 422, description = "`invalid_rego`")))]
pub async fn create_policy(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    require_zone(&svc, &zone_id).await?;
    let req: CreatePolicy = z_body(&body)?;
    if req.name.is_empty() || req.content.is_empty() {
        return Err(invalid_body());
    }
    let who = actor.attribution();
    let (policy, first) = svc
        .policies()
        .create_policy(
            &zone_id,
            NewPolicy {
                name: &req.name,
                description: req.description.as_deref(),
                content: &req.content,
                actor: Some(&who),
            },
        )
        .await
        .map_err(policy_error)?;
    Ok(respond(
        201,
        json!({
            "id": policy.id,
            "version_id": first.id,
            "zone_id": policy.zone_id,
            "name": policy.name,
            "description": policy.description,
            "version": Value::Object(version_summary(&first)),
        }),
    ))
}

async fn load_policy(svc: &Svc, zone_id: &str, id: &str) -> AdminResult<Policy> {
    match svc.stores.policy.get_policy(zone_id, id).await {
        Ok(Some(p)) if p.archived_at.is_none() => Ok(p),
        Ok(_) => Err(err(404, "policy_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Read a policy with every version, newest first.
#[utoipa::path(get, path = "/v1/zones/{zone_id}/policies/{id}", tag = "policies",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "policy id")),
    responses((status = 200, description = "policy row + `versions`", body = Value),
        (status = 404, description = "`policy_not_found`")))]
pub async fn get_policy(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let policy = load_policy(&svc, &zone_id, &id).await?;
    let versions = svc
        .stores
        .policy
        .policy_versions(&zone_id, &id)
        .await
        .map_err(|e| internal(&e))?;
    let mut row = policy_row(&policy);
    if let Some(o) = row.as_object_mut() {
        o.insert(
            "versions".into(),
            Value::Array(versions.iter().map(version_full).collect()),
        );
    }
    Ok(respond(200, row))
}

/// Archive a policy (its versions stay, immutable, for the set versions naming them).
#[utoipa::path(delete, path = "/v1/zones/{zone_id}/policies/{id}", tag = "policies",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "policy id")),
    responses((status = 204, description = "archived"),
        (status = 404, description = "`policy_not_found`")))]
pub async fn delete_policy(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    match svc
        .stores
        .policy
        .archive_policy(&zone_id, &id, svc.now())
        .await
    {
        Ok(()) => Ok(no_content()),
        Err(StoreError::NotFound { .. }) => Err(err(404, "policy_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Append a version (`version = max + 1`) after validating its content.
#[utoipa::path(post, path = "/v1/zones/{zone_id}/policies/{id}/versions", tag = "policies",
    request_body = AddVersion,
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "policy id")),
    responses((status = 201, description = "`{version_id, …VersionSummary}`", body = Value),
        (status = 400, description = "`invalid_body`"),
        (status = 404, description = "`policy_not_found`"),
        (status = 422, description = "`invalid_rego`")))]
pub async fn add_policy_version(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let req: AddVersion = z_body(&body)?;
    if req.content.is_empty() {
        return Err(invalid_body());
    }
    let who = actor.attribution();
    let version = svc
        .policies()
        .add_policy_version(&zone_id, &id, &req.content, Some(&who))
        .await
        .map_err(policy_error)?;
    let mut m = version_summary(&version);
    m.insert("version_id".into(), json!(version.id));
    Ok(respond(201, Value::Object(m)))
}

// --- Policy sets -----------------------------------------------------------------------------

/// `POST …/policy-sets` body (checked like the reference's Zod schema).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreatePolicySet {
    /// At least one character; unique per zone among active sets.
    pub name: String,
    /// Optional description.
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST …/policy-sets/{id}/versions` body (checked like the reference's Zod schema).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateSetVersion {
    /// 1..256 entries `{policy_version_id}` (extra entry keys are dropped).
    #[schema(value_type = Vec<Object>)]
    pub manifest: Vec<ManifestEntry>,
}

/// `POST …/activate` and `…/simulate` bodies (checked like the reference's Zod schema).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct VersionBody {
    /// The set version.
    pub version_id: String,
    /// The policy input to evaluate (simulate only; an object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
}

/// The activation-status query (checked like the reference's Zod schema).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// The set version to report on (default: the set's active version).
    pub version_id: Option<String>,
    /// The outbox row of the activation (from its `status_url`).
    pub outbox_id: Option<String>,
}

async fn load_set(svc: &Svc, zone_id: &str, id: &str) -> AdminResult<Option<PolicySet>> {
    match svc.stores.policy.get_policy_set(zone_id, id).await {
        Ok(Some(s)) if s.archived_at.is_none() => Ok(Some(s)),
        Ok(_) => Ok(None),
        Err(e) => Err(internal(&e)),
    }
}

/// List the zone's active policy sets.
#[utoipa::path(get, path = "/v1/zones/{zone_id}/policy-sets", tag = "policy-sets",
    params(("zone_id" = String, Path, description = "zone id"), PageQuery),
    responses((status = 200, description = "`{items, next_cursor}` of set rows", body = Value)))]
pub async fn list_policy_sets(
    State(svc): State<Svc>,
    Path(zone_id): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    let page = page_of(q)?;
    let page = svc
        .stores
        .policy
        .list_policy_sets(&zone_id, &page)
        .await
        .map_err(|e| list_error(&e))?;
    Ok(envelope(page, |s| set_row(s, true)))
}

/// Create a policy set (with its empty binding).
#[utoipa::path(post, path = "/v1/zones/{zone_id}/policy-sets", tag = "policy-sets",
    request_body = CreatePolicySet,
    params(("zone_id" = String, Path, description = "zone id")),
    responses((status = 201, description = "set row (no `active_version_id`)", body = Value),
        (status = 400, description = "`invalid_body`"),
        (status = 404, description = "`zone_not_found`"),
        (status = 409, description = "`policy_set_name_conflict`")))]
pub async fn create_policy_set(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    require_zone(&svc, &zone_id).await?;
    let req: CreatePolicySet = z_body(&body)?;
    if req.name.is_empty() {
        return Err(invalid_body());
    }
    let who = actor.attribution();
    let set = svc
        .policies()
        .create_policy_set(&zone_id, &req.name, req.description.as_deref(), Some(&who))
        .await
        .map_err(policy_error)?;
    Ok(respond(201, set_row(&set, false)))
}

/// Read a policy set (with `active_version_id` from its binding).
#[utoipa::path(get, path = "/v1/zones/{zone_id}/policy-sets/{id}", tag = "policy-sets",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "policy set id")),
    responses((status = 200, description = "set row", body = Value),
        (status = 404, description = "`policy_set_not_found`")))]
pub async fn get_policy_set(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let set = load_set(&svc, &zone_id, &id)
        .await?
        .ok_or_else(|| err(404, "policy_set_not_found"))?;
    Ok(respond(200, set_row(&set, true)))
}

/// Archive a policy set; if it was active the zone becomes deny-all and
/// `caracal.policy.invalidate` is published.
#[utoipa::path(delete, path = "/v1/zones/{zone_id}/policy-sets/{id}", tag = "policy-sets",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "policy set id")),
    responses((status = 204, description = "archived"),
        (status = 404, description = "`policy_set_not_found`")))]
pub async fn delete_policy_set(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    svc.policies()
        .archive_policy_set(&zone_id, &id)
        .await
        .map_err(policy_error)?;
    Ok(no_content())
}

/// List a set's versions, newest first.
#[utoipa::path(get, path = "/v1/zones/{zone_id}/policy-sets/{id}/versions", tag = "policy-sets",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "policy set id"), PageQuery),
    responses((status = 200, description = "`{items, next_cursor}` of set versions", body = Value),
        (status = 404, description = "`policy_set_not_found`")))]
pub async fn list_set_versions(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let page = page_of(q)?;
    load_set(&svc, &zone_id, &id)
        .await?
        .ok_or_else(|| err(404, "policy_set_not_found"))?;
    let page: Page<PolicySetVersion> = svc
        .stores
        .policy
        .list_policy_set_versions(&zone_id, &id, &page)
        .await
        .map_err(|e| list_error(&e))?;
    Ok(envelope(page, |v| Value::Object(set_version_row(v))))
}

/// Create a set version: the manifest is checked, every referenced policy version
/// re-validated and the merged bundle compiled.
#[utoipa::path(post, path = "/v1/zones/{zone_id}/policy-sets/{id}/versions", tag = "policy-sets",
    request_body = CreateSetVersion,
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "policy set id")),
    responses((status = 201, description = "`{version_id, …SetVersion}`", body = Value),
        (status = 400, description = "`invalid_body`"),
        (status = 404, description = "`policy_set_not_found`"),
        (status = 422, description = "`invalid_policy_contract`, `invalid_policy_bundle`")))]
pub async fn create_set_version(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let req: CreateSetVersion = z_body(&body)?;
    if req.manifest.is_empty()
        || req.manifest.len() > MAX_MANIFEST_ENTRIES
        || req.manifest.iter().any(|e| e.policy_version_id.is_empty())
    {
        return Err(invalid_body());
    }
    let version = svc
        .policies()
        .create_policy_set_version(&zone_id, &id, &req.manifest)
        .await
        .map_err(policy_error)?;
    let mut m = set_version_summary(&version);
    m.insert("version_id".into(), json!(version.id));
    Ok(respond(201, Value::Object(m)))
}

/// Read one set version with its manifest.
#[utoipa::path(get, path = "/v1/zones/{zone_id}/policy-sets/{id}/versions/{version_id}", tag = "policy-sets",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "policy set id"),
        ("version_id" = String, Path, description = "set version id")),
    responses((status = 200, description = "SetVersion + `manifest_json`, `policies`", body = Value),
        (status = 404, description = "`policy_set_version_not_found`")))]
pub async fn get_set_version(
    State(svc): State<Svc>,
    Path((zone_id, id, version_id)): Path<(String, String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id, &version_id])?;
    let version = match svc
        .stores
        .policy
        .get_policy_set_version(&zone_id, &version_id)
        .await
    {
        Ok(Some(v)) if v.policy_set_id == id => v,
        Ok(_) => return Err(err(404, "policy_set_version_not_found")),
        Err(e) => return Err(internal(&e)),
    };
    let mut m = set_version_row(&version);
    m.insert("manifest_json".into(), to_value(&version.manifest_json));
    m.insert(
        "policies".into(),
        json!(
            version
                .manifest_json
                .iter()
                .map(|e| e.policy_version_id.as_str())
                .collect::<Vec<_>>()
        ),
    );
    Ok(respond(200, Value::Object(m)))
}

fn version_body(body: &[u8]) -> AdminResult<VersionBody> {
    let req: VersionBody = z_body(body)?;
    if req.version_id.is_empty() || req.input.as_ref().is_some_and(|i| !i.is_object()) {
        return Err(invalid_body());
    }
    Ok(req)
}

/// Activate a set version (also the rollback: activate an earlier version). The version is
/// recompiled first; then, atomically, it becomes the zone's only active set version and
/// `caracal.policy.invalidate` is enqueued on the outbox.
#[utoipa::path(post, path = "/v1/zones/{zone_id}/policy-sets/{id}/activate", tag = "policy-sets",
    request_body = VersionBody,
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "policy set id")),
    responses((status = 202, description = "`{activated, version_id, outbox_id, status_url}`", body = Value),
        (status = 400, description = "`invalid_body`"),
        (status = 404, description = "`version_not_found`, `policy_set_not_found`"),
        (status = 422, description = "`invalid_policy_contract`, `invalid_policy_bundle`")))]
pub async fn activate(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let req = version_body(&body)?;
    let done = svc
        .policies()
        .activate(&zone_id, &id, &req.version_id)
        .await
        .map_err(policy_error)?;
    let status_url = format!(
        "/v1/zones/{}/policy-sets/{}/activation-status?version_id={}&outbox_id={}",
        encode_component(&zone_id),
        encode_component(&id),
        encode_component(&done.version_id),
        encode_component(&done.outbox_id),
    );
    Ok(respond(
        202,
        json!({
            "activated": true,
            "version_id": done.version_id,
            "outbox_id": done.outbox_id,
            "status_url": status_url,
        }),
    ))
}

/// The `outbox` member of the activation status: the row's delivery state, `mismatch` when
/// the row is not this activation's invalidation.
fn outbox_status(id: Option<&str>, row: Option<&OutboxRow>, version_id: &str) -> Value {
    let Some(row) = row else {
        return json!({"id": id, "state": "missing", "attempts": 0, "last_error": null,
            "dispatched_at": null});
    };
    let field = |k: &str| {
        row.message
            .fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    let state = if row.message.stream != names::POLICY_INVALIDATE
        || field("policy_set_version_id") != Some(version_id)
    {
        "mismatch"
    } else if row.dispatched_at.is_some() {
        "dispatched"
    } else if row.dead_at.is_some() {
        "dead"
    } else {
        "pending"
    };
    json!({
        "id": row.id,
        "state": state,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "dispatched_at": row.dispatched_at.as_ref().map(format_iso_ms),
    })
}

/// How far an activation has propagated. Without an STS status source the furthest this
/// service can report is `waiting_for_sts` (never `loaded`).
#[utoipa::path(get, path = "/v1/zones/{zone_id}/policy-sets/{id}/activation-status", tag = "policy-sets",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "policy set id"), StatusQuery),
    responses((status = 200, description = "activation status object", body = Value),
        (status = 404, description = "`policy_set_binding_not_found`, `active_policy_set_version_not_found`")))]
pub async fn activation_status(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
    q: Result<Query<StatusQuery>, QueryRejection>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let q = q.map_err(|_| invalid_body())?.0;
    let set = load_set(&svc, &zone_id, &id)
        .await?
        .ok_or_else(|| err(404, "policy_set_binding_not_found"))?;
    let version_id = q
        .version_id
        .clone()
        .filter(|v| !v.is_empty())
        .or_else(|| set.active_version_id.clone())
        .ok_or_else(|| err(404, "active_policy_set_version_not_found"))?;
    let active = set.active_version_id.as_deref() == Some(version_id.as_str());
    let manifest_sha256 = match set.active_version_id.as_deref() {
        Some(v) => svc
            .stores
            .policy
            .get_policy_set_version(&zone_id, v)
            .await
            .map_err(|e| internal(&e))?
            .map(|v| v.manifest_sha256),
        None => None,
    };
    let outbox_id = q.outbox_id.filter(|o| !o.is_empty());
    let row = match outbox_id.as_deref() {
        Some(o) => svc
            .stores
            .outbox
            .get_outbox(o)
            .await
            .map_err(|e| internal(&e))?,
        None => None,
    };
    let outbox = outbox_status(outbox_id.as_deref(), row.as_ref(), &version_id);
    let propagation = if !active {
        "waiting_for_activation"
    } else {
        match outbox["state"].as_str() {
            Some("dead" | "mismatch") => "failed",
            Some("dispatched") => "waiting_for_sts",
            _ => "waiting_for_outbox",
        }
    };
    Ok(respond(
        200,
        json!({
            "zone_id": zone_id,
            "policy_set_id": id,
            "version_id": version_id,
            "active": active,
            "active_version_id": set.active_version_id,
            "manifest_sha256": manifest_sha256,
            "propagation_status": propagation,
            "outbox": outbox,
            "sts": {"state": "not_configured"},
        }),
    ))
}

/// Evaluate an input against a set version without touching any binding.
#[utoipa::path(post, path = "/v1/zones/{zone_id}/policy-sets/{id}/simulate", tag = "policy-sets",
    request_body = VersionBody,
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "policy set id")),
    responses((status = 200, description = "simulate object (`dry_run: true`)", body = Value),
        (status = 400, description = "`invalid_body`"),
        (status = 404, description = "`version_not_found`"),
        (status = 422, description = "`invalid_policy_contract`, `invalid_policy_bundle`")))]
pub async fn simulate(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let req = version_body(&body)?;
    let sim = svc
        .policies()
        .simulate(&zone_id, &id, &req.version_id, req.input.as_ref())
        .await
        .map_err(policy_error)?;
    Ok(respond(200, to_value(&sim)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_encoded_like_encode_uri_component() {
        assert_eq!(encode_component("a-b_c.d"), "a-b_c.d");
        assert_eq!(encode_component("a:b/c d"), "a%3Ab%2Fc%20d");
    }

    #[test]
    fn errors_map_to_reference_statuses() {
        let e = policy_error(PolicyError::NotFound("policy_set_version"));
        assert_eq!(
            (e.0.status, e.0.body.error.as_str()),
            (404, "version_not_found")
        );
        let e = policy_error(PolicyError::InvalidPolicyContract("x".into()));
        assert_eq!(e.0.status, 422);
        assert_eq!(e.0.body.error_description.as_deref(), Some("x"));
        let e = policy_error(PolicyError::Store(StoreError::Conflict {
            constraint: "policy_set_name",
        }));
        assert_eq!(
            (e.0.status, e.0.body.error.as_str()),
            (409, "policy_set_name_conflict")
        );
        assert_eq!(policy_error(PolicyError::ReservedNamespace).0.status, 409);
    }
}
