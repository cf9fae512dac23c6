//! Reading the admin audit chain (`GET /v1/zones/{zone_id}/admin-audit`, reference §3
//! "Runtime views"), plus `GET /v1/admin-audit` for the global chain (zone creates and
//! admin-token changes), which only global tokens may read.
//!
//! Lists page by `chain_seq` ascending: `cursor` is the last `chain_seq` of the previous page
//! (a decimal string), `limit` 1..500 (default 200), `next_cursor` present iff the page is
//! full. Every item carries its chain columns so a reader can re-verify the links.

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::auth::Actor;
use super::{AdminResult, DEFAULT_LIMIT, MAX_LIMIT, Svc, check_params, err, internal, respond};
use crate::audit::{AdminAuditItem, AdminAuditPage};

/// The list query of the admin audit chain.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminAuditQuery {
    /// Page size, 1..500 (default 200).
    pub limit: Option<String>,
    /// The last `chain_seq` of the previous page (decimal).
    pub cursor: Option<String>,
}

fn parse(q: Result<Query<AdminAuditQuery>, QueryRejection>) -> AdminResult<(u32, i64)> {
    let q = q.map_err(|_| err(400, "invalid_query"))?.0;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| err(400, "invalid_query"))?,
    };
    let after = match q.cursor.as_deref() {
        None => 0,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| err(400, "invalid_cursor"))?,
    };
    Ok((limit, after))
}

async fn page(svc: &Svc, zone: Option<&str>, limit: u32, after: i64) -> AdminResult<Response> {
    let rows = svc
        .audit()
        .store()
        .list_admin_audit(zone, after, limit)
        .await
        .map_err(|e| internal(&e))?;
    let next_cursor = if rows.len() >= limit as usize {
        rows.last().map(|r| r.chain_seq.to_string())
    } else {
        None
    };
    let page = AdminAuditPage {
        items: rows.iter().map(AdminAuditItem::from).collect(),
        next_cursor,
    };
    let body = serde_json::to_value(&page).map_err(|_| err(500, "internal_error"))?;
    Ok(respond(200, body))
}

/// The zone's admin audit chain, oldest first.
#[utoipa::path(get, path = "/v1/zones/{zone_id}/admin-audit", tag = "admin-audit",
    params(("zone_id" = String, Path, description = "zone id"), AdminAuditQuery),
    responses((status = 200, description = "`{items, next_cursor}`: records with their chain columns", body = AdminAuditPage),
        (status = 400, description = "`invalid_query` / `invalid_cursor`")))]
pub async fn list_zone_admin_audit(
    State(svc): State<Svc>,
    Path(zone_id): Path<String>,
    q: Result<Query<AdminAuditQuery>, QueryRejection>,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    let (limit, after) = parse(q)?;
    page(&svc, Some(&zone_id), limit, after).await
}

/// The global admin audit chain (zone-less mutations), oldest first. Global tokens only.
#[utoipa::path(get, path = "/v1/admin-audit", tag = "admin-audit",
    params(AdminAuditQuery),
    responses((status = 200, description = "`{items, next_cursor}`: records with their chain columns", body = AdminAuditPage),
        (status = 400, description = "`invalid_query` / `invalid_cursor`"),
        (status = 403, description = "`admin_token_zone_mismatch` (zone token)")))]
pub async fn list_global_admin_audit(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    q: Result<Query<AdminAuditQuery>, QueryRejection>,
) -> AdminResult<Response> {
    if !actor.is_global() {
        return Err(err(403, "admin_token_zone_mismatch"));
    }
    let (limit, after) = parse(q)?;
    page(&svc, None, limit, after).await
}
