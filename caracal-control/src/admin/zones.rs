//! Zones (`http-bodies.md` §1): list, create, read, update, archive, DCR status.
//!
//! The system zone (reserved `caracal.sys/` namespace) is hidden from lists, readable by id,
//! and read-only: the gate ([`super::auth`]) refuses every mutation that targets it.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use caracal_core::model::Attribution;
use caracal_core::model::application::RegistrationMethod;
use caracal_core::model::zone::{Zone, is_valid_slug, slugify};
use caracal_core::store::{Listing, Page, PageRequest, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Actor;
use super::{
    AdminResult, ListQuery, Svc, check_params, envelope, err, err_desc, internal, list_error,
    list_params, no_content, nullable, parse_body, respond, trimmed_name,
};

/// "name starts `caracal.sys/` … case-insens." (reference §1): the reserved zone-name prefix.
pub const RESERVED_ZONE_NAME_PREFIX: &str = "caracal.sys/";
/// "… or slug `caracal-sys-`, case-insens." (reference §1): the reserved slug prefix.
pub const RESERVED_ZONE_SLUG_PREFIX: &str = "caracal-sys-";
/// Longest zone name: "`name` str trimmed 1..120" (reference §1).
pub const MAX_ZONE_NAME: usize = 120;
/// Bound on the `-2`, `-3`… suffixes tried when deriving a slug.
const MAX_SLUG_ATTEMPTS: u32 = 1_000;

/// Whether a name or slug is in the reserved system namespace.
pub fn is_reserved_zone_name(name: &str, slug: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with(RESERVED_ZONE_NAME_PREFIX)
        || slug
            .to_ascii_lowercase()
            .starts_with(RESERVED_ZONE_SLUG_PREFIX)
}

/// Whether `zone` is the system zone (reserved namespace): hidden from lists, read-only.
pub fn is_system_zone(zone: &Zone) -> bool {
    is_reserved_zone_name(&zone.name, &zone.slug)
}

fn render(zone: &Zone) -> Value {
    serde_json::to_value(zone).unwrap_or(Value::Null)
}

fn reserved() -> super::HttpError {
    err_desc(
        409,
        "reserved_namespace",
        "zone names starting with caracal.sys/ and slugs starting with caracal-sys- are reserved",
    )
}

/// `POST /v1/zones` body (strict).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateZone {
    /// 1..120 characters after trimming.
    pub name: String,
    /// `^[a-z0-9-]+$`; derived from the name when omitted.
    #[serde(default)]
    pub slug: Option<String>,
    /// Default false.
    #[serde(default)]
    pub dcr_enabled: Option<bool>,
}

/// `PATCH /v1/zones/{id}` body (strict, all optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchZone {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New slug.
    #[serde(default)]
    pub slug: Option<String>,
    /// DCR flag.
    #[serde(default)]
    pub dcr_enabled: Option<bool>,
    /// `keep_live` | `revoke_live`, only with `dcr_enabled: false`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub dcr_shutdown: Option<Option<String>>,
    /// Console badge flag.
    #[serde(default)]
    pub operator_coauthor_badge: Option<bool>,
    /// Whether the AI operator may administer the zone.
    #[serde(default)]
    pub operator_governed: Option<bool>,
}

/// List zones (system zone hidden; a zone token sees only its own zone).
#[utoipa::path(get, path = "/v1/zones", tag = "zones", params(ListQuery),
    responses((status = 200, description = "`{items, next_cursor}` of zone rows", body = Value)))]
pub async fn list_zones(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> AdminResult<Response> {
    let params = list_params(q)?;
    if let Some(own) = actor.zone_id.as_deref().filter(|_| !actor.is_global()) {
        let zone = svc
            .stores
            .zones
            .get_zone(own)
            .await
            .map_err(|e| internal(&e))?;
        let items: Vec<Zone> = zone
            .into_iter()
            .filter(|z| {
                z.archived_at.is_none() && !is_system_zone(z) && params.page.after.is_none()
            })
            .collect();
        return Ok(envelope(Page { items, next: None }, render));
    }
    let page = svc
        .stores
        .zones
        .list_zones(&params.page)
        .await
        .map_err(|e| list_error(&e))?;
    let next = page.next.clone();
    let items = page
        .items
        .into_iter()
        .filter(|z| !is_system_zone(z))
        .collect();
    Ok(envelope(Page { items, next }, render))
}

/// Create a zone.
#[utoipa::path(post, path = "/v1/zones", tag = "zones", request_body = CreateZone,
    responses((status = 201, description = "zone row", body = Value),
        (status = 400, description = "`invalid_zone`"),
        (status = 409, description = "`reserved_namespace`, `zone_slug_conflict`")))]
pub async fn create_zone(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> AdminResult<Response> {
    let req: CreateZone = parse_body(&body, "invalid_zone")?;
    let name = trimmed_name(&req.name, MAX_ZONE_NAME).ok_or_else(|| err(400, "invalid_zone"))?;
    if let Some(slug) = &req.slug {
        if !is_valid_slug(slug) {
            return Err(err(400, "invalid_zone"));
        }
    }
    if is_reserved_zone_name(&name, req.slug.as_deref().unwrap_or("")) && !actor.bootstrap {
        return Err(reserved());
    }
    let now = svc.now();
    let mut zone = Zone {
        id: svc.new_id(),
        name,
        slug: String::new(),
        dcr_enabled: req.dcr_enabled.unwrap_or(false),
        operator_coauthor_badge: false,
        operator_governed: false,
        attribution: Attribution::created_by(actor.attribution()),
        created_at: now,
        updated_at: now,
        archived_at: None,
    };
    if let Some(slug) = req.slug {
        zone.slug = slug;
        return match svc.stores.zones.insert_zone(&zone).await {
            Ok(()) => Ok(respond(201, render(&zone))),
            Err(StoreError::Conflict { .. }) => Err(err(409, "zone_slug_conflict")),
            Err(e) => Err(internal(&e)),
        };
    }
    let base = slugify(&zone.name, "zone");
    for n in 1..=MAX_SLUG_ATTEMPTS {
        let candidate = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        if svc
            .stores
            .zones
            .slug_exists(&candidate)
            .await
            .map_err(|e| internal(&e))?
        {
            continue;
        }
        zone.slug = candidate;
        match svc.stores.zones.insert_zone(&zone).await {
            Ok(()) => return Ok(respond(201, render(&zone))),
            // Taken between the check and the insert: try the next suffix.
            Err(StoreError::Conflict {
                constraint: "zone_slug",
            }) => {}
            Err(e) => return Err(internal(&e)),
        }
    }
    Err(err(409, "zone_slug_conflict"))
}

async fn load_zone(svc: &Svc, id: &str) -> AdminResult<Zone> {
    match svc.stores.zones.get_zone(id).await {
        Ok(Some(z)) if z.archived_at.is_none() => Ok(z),
        Ok(_) => Err(err(404, "zone_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Read a zone (the system zone included).
#[utoipa::path(get, path = "/v1/zones/{id}", tag = "zones",
    params(("id" = String, Path, description = "zone id")),
    responses((status = 200, description = "zone row", body = Value),
        (status = 404, description = "`zone_not_found`")))]
pub async fn get_zone(State(svc): State<Svc>, Path(id): Path<String>) -> AdminResult<Response> {
    check_params(&[&id])?;
    Ok(respond(200, render(&load_zone(&svc, &id).await?)))
}

/// Update a zone.
#[utoipa::path(patch, path = "/v1/zones/{id}", tag = "zones", request_body = PatchZone,
    params(("id" = String, Path, description = "zone id")),
    responses((status = 200, description = "zone row", body = Value),
        (status = 400, description = "`invalid_zone`, `no_fields`, `dcr_shutdown_not_applicable`"),
        (status = 404, description = "`zone_not_found`"),
        (status = 409, description = "`reserved_namespace`, `zone_slug_conflict`, `dcr_shutdown_required`"),
        (status = 503, description = "`dcr_shutdown_unavailable`")))]
pub async fn patch_zone(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&id])?;
    let req: PatchZone = parse_body(&body, "invalid_zone")?;
    let name = match &req.name {
        Some(n) => Some(trimmed_name(n, MAX_ZONE_NAME).ok_or_else(|| err(400, "invalid_zone"))?),
        None => None,
    };
    if req.slug.as_deref().is_some_and(|s| !is_valid_slug(s)) {
        return Err(err(400, "invalid_zone"));
    }
    let shutdown = req.dcr_shutdown.clone().flatten();
    if let Some(s) = &shutdown {
        if !matches!(s.as_str(), "keep_live" | "revoke_live") {
            return Err(err(400, "invalid_zone"));
        }
    }
    if is_reserved_zone_name(
        name.as_deref().unwrap_or(""),
        req.slug.as_deref().unwrap_or(""),
    ) && !actor.bootstrap
    {
        return Err(reserved());
    }
    if shutdown.is_some() && req.dcr_enabled != Some(false) {
        return Err(err(400, "dcr_shutdown_not_applicable"));
    }
    if name.is_none()
        && req.slug.is_none()
        && req.dcr_enabled.is_none()
        && req.operator_coauthor_badge.is_none()
        && req.operator_governed.is_none()
    {
        return Err(err(400, "no_fields"));
    }
    let mut zone = load_zone(&svc, &id).await?;
    if req.dcr_enabled == Some(false) {
        let live = live_dcr_applications(&svc, &zone).await?;
        if live > 0 {
            match shutdown.as_deref() {
                None => {
                    return Err(super::HttpError(
                        caracal_core::api::ApiError::conflict("dcr_shutdown_required")
                            .with_field("details", json!({"live_dcr_applications": live})),
                    ));
                }
                Some("keep_live") => {}
                // Revoking live DCR applications revokes their authority records, sessions
                // and delegations, which this build's Admin API does not own yet.
                _ => {
                    return Err(super::HttpError(
                        caracal_core::api::ApiError::unavailable("dcr_shutdown_unavailable")
                            .with_field(
                                "message",
                                json!("revoke_live is not available; use keep_live"),
                            ),
                    ));
                }
            }
        }
    }
    if let Some(n) = name {
        zone.name = n;
    }
    if let Some(s) = req.slug {
        zone.slug = s;
    }
    if let Some(d) = req.dcr_enabled {
        zone.dcr_enabled = d;
    }
    // "When `dcr_enabled:false` is sent, only name/slug/dcr_enabled are applied."
    if req.dcr_enabled != Some(false) {
        if let Some(b) = req.operator_coauthor_badge {
            zone.operator_coauthor_badge = b;
        }
        if let Some(g) = req.operator_governed {
            zone.operator_governed = g;
        }
    }
    zone.attribution.updated_by = Some(actor.attribution());
    zone.attribution.updated_via_operator = false;
    zone.updated_at = svc.now();
    match svc.stores.zones.update_zone(&zone).await {
        Ok(()) => Ok(respond(200, render(&zone))),
        Err(StoreError::Conflict { .. }) => Err(err(409, "zone_slug_conflict")),
        Err(StoreError::NotFound { .. }) => Err(err(404, "zone_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Archive a zone (soft delete).
#[utoipa::path(delete, path = "/v1/zones/{id}", tag = "zones",
    params(("id" = String, Path, description = "zone id")),
    responses((status = 204, description = "archived"),
        (status = 404, description = "`zone_not_found`")))]
pub async fn delete_zone(State(svc): State<Svc>, Path(id): Path<String>) -> AdminResult<Response> {
    check_params(&[&id])?;
    match svc.stores.zones.archive_zone(&id, svc.now()).await {
        Ok(()) => Ok(no_content()),
        Err(StoreError::NotFound { .. }) => Err(err(404, "zone_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// DCR flag and live DCR application count.
#[utoipa::path(get, path = "/v1/zones/{id}/dcr-status", tag = "zones",
    params(("id" = String, Path, description = "zone id")),
    responses((status = 200, description = "`{id, dcr_enabled, live_dcr_applications}`", body = Value),
        (status = 404, description = "`zone_not_found`")))]
pub async fn dcr_status(State(svc): State<Svc>, Path(id): Path<String>) -> AdminResult<Response> {
    check_params(&[&id])?;
    let zone = load_zone(&svc, &id).await?;
    let live = live_dcr_applications(&svc, &zone).await?;
    Ok(respond(
        200,
        json!({"id": zone.id, "dcr_enabled": zone.dcr_enabled, "live_dcr_applications": live}),
    ))
}

/// Live (unarchived, unexpired) DCR applications of a zone.
async fn live_dcr_applications(svc: &Svc, zone: &Zone) -> AdminResult<u64> {
    let now = svc.now();
    let mut page = PageRequest::first(super::MAX_LIMIT);
    let mut live = 0u64;
    loop {
        let p = svc
            .stores
            .applications
            .list_applications(&zone.id, Listing::Active, &page)
            .await
            .map_err(|e| internal(&e))?;
        live += p
            .items
            .iter()
            .filter(|a| a.registration_method == RegistrationMethod::Dcr && a.is_live(now))
            .count() as u64;
        match p.next {
            Some(next) => page.after = Some(next),
            None => return Ok(live),
        }
    }
}
