//! Admin tokens (`http-bodies.md` §8): global callers only (the gate refuses zone tokens with
//! `403 admin_token_management_requires_global`).
//!
//! A token is `cat_` + base64url of 32 random bytes, shown once in the 201 response; only its
//! SHA-256 is stored.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use caracal_core::model::admin_token::{AdminToken, Capability, TokenScope};
use caracal_core::secrets::generate_admin_token;
use caracal_core::store::StoreError;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::auth::Actor;
use super::{
    AdminResult, ListQuery, Svc, envelope, err, internal, list_error, list_params, no_content,
    parse_body, require_zone, respond, trimmed_name,
};

/// "`name` 1..120" (reference §8).
pub const MAX_TOKEN_NAME: usize = 120;

/// `POST /v1/admin-tokens` body (strict).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// 1..120 characters.
    pub name: String,
    /// `global` | `zone`.
    #[schema(value_type = String)]
    pub scope: TokenScope,
    /// Required for a zone token, refused for a global one (1..128).
    #[serde(default)]
    pub zone_id: Option<String>,
    /// `read` | `write` (default) | `approve`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub capability: Option<Capability>,
}

fn render(t: &AdminToken) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// List every token, revoked included.
#[utoipa::path(get, path = "/v1/admin-tokens", tag = "admin-tokens", params(ListQuery),
    responses((status = 200, description = "`{items, next_cursor}` of token rows (never the token)", body = Value),
        (status = 403, description = "`admin_token_management_requires_global`")))]
pub async fn list_tokens(
    State(svc): State<Svc>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> AdminResult<Response> {
    let p = list_params(q)?;
    let page = svc
        .stores
        .admin_tokens
        .list_admin_tokens(&p.page)
        .await
        .map_err(|e| list_error(&e))?;
    Ok(envelope(page, render))
}

/// Mint a token; the response carries `token`, once.
#[utoipa::path(post, path = "/v1/admin-tokens", tag = "admin-tokens", request_body = CreateToken,
    responses((status = 201, description = "token row plus `token`", body = Value),
        (status = 400, description = "`invalid_admin_token_request`, `zone_id_required`, `zone_id_not_allowed_for_global`"),
        (status = 403, description = "`admin_token_management_requires_global`"),
        (status = 404, description = "`zone_not_found`"),
        (status = 500, description = "`admin_token_mint_failed`")))]
pub async fn create_token(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> AdminResult<Response> {
    let req: CreateToken = parse_body(&body, "invalid_admin_token_request")?;
    let name = trimmed_name(&req.name, MAX_TOKEN_NAME)
        .filter(|n| n.chars().count() == req.name.chars().count())
        .ok_or_else(|| err(400, "invalid_admin_token_request"))?;
    if req
        .zone_id
        .as_deref()
        .is_some_and(|z| !(1..=128).contains(&z.len()))
    {
        return Err(err(400, "invalid_admin_token_request"));
    }
    match (req.scope, req.zone_id.as_deref()) {
        (TokenScope::Zone, None) => return Err(err(400, "zone_id_required")),
        (TokenScope::Global, Some(_)) => return Err(err(400, "zone_id_not_allowed_for_global")),
        (TokenScope::Zone, Some(z)) => require_zone(&svc, z).await?,
        (TokenScope::Global, None) => {}
    }
    let token = generate_admin_token().map_err(|_| err(500, "admin_token_mint_failed"))?;
    let row = AdminToken {
        id: svc.new_id(),
        name,
        scope: req.scope,
        capability: req.capability.unwrap_or_default(),
        zone_id: req.zone_id,
        created_by: Some(actor.attribution()),
        created_at: svc.now(),
        last_used_at: None,
        revoked_at: None,
        token_sha256: Sha256::digest(token.as_bytes()).into(),
    };
    svc.stores
        .admin_tokens
        .insert_admin_token(&row)
        .await
        .map_err(|_| err(500, "admin_token_mint_failed"))?;
    Ok(respond(
        201,
        json!({
            "id": row.id,
            "name": row.name,
            "scope": row.scope,
            "capability": row.capability,
            "zone_id": row.zone_id,
            "created_by": row.created_by,
            "created_at": caracal_core::model::time::format_iso_ms(&row.created_at),
            "token": token,
        }),
    ))
}

/// Revoke a token (it stops authenticating at once).
#[utoipa::path(delete, path = "/v1/admin-tokens/{id}", tag = "admin-tokens",
    params(("id" = String, Path, description = "token id")),
    responses((status = 204, description = "revoked"),
        (status = 400, description = "`invalid_admin_token_id`"),
        (status = 404, description = "`admin_token_not_found` (also when already revoked)")))]
pub async fn revoke_token(State(svc): State<Svc>, Path(id): Path<String>) -> AdminResult<Response> {
    // "`DELETE /v1/admin-tokens/:id` (any 1..128 chars, else `400 invalid_admin_token_id`)".
    if !(1..=128).contains(&id.chars().count()) {
        return Err(err(400, "invalid_admin_token_id"));
    }
    match svc
        .stores
        .admin_tokens
        .revoke_admin_token(&id, svc.now())
        .await
    {
        Ok(()) => Ok(no_content()),
        Err(StoreError::NotFound { .. }) => Err(err(404, "admin_token_not_found")),
        Err(e) => Err(internal(&e)),
    }
}
