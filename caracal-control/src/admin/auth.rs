//! The admin-token gate (reference `control-plane.md` §3.1, `http-bodies.md` §0).
//!
//! Every `/v1` request carries `Authorization: Bearer <admin token>`. The token is either the
//! bootstrap token from `CARACAL_BOOTSTRAP_ADMIN_TOKEN` (compared in constant time; global,
//! every capability) or a stored token, found by the SHA-256 of the presented value (the
//! store keeps only that digest). The checks run in the reference's order:
//!
//! 1. missing, unknown or revoked token → `401 invalid_admin_token`;
//! 2. read token on a non-read request → `403 admin_token_read_only` ("Read" = GET/HEAD plus
//!    `POST /v1/policies/validate`);
//! 3. approve token on anything but a read or an approval decision → `403
//!    admin_token_approve_only`;
//! 4. write token (not the bootstrap) deciding an approval → `403 approve_capability_required`;
//! 5. zone token outside its zone → `403 admin_token_zone_mismatch`; zone token on
//!    `/v1/admin-tokens` → `403 admin_token_management_requires_global`;
//! 6. mutation targeting the system zone → `403 system_zone_read_only`.
//!
//! A store failure while authenticating is a 500: the gate never lets a request through
//! because it could not check it.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use caracal_core::model::admin_token::{Capability, TokenScope};
use caracal_service::config::bearer_matches;
use sha2::{Digest, Sha256};

use super::{AdminResult, Svc, err, internal};
use crate::audit::AuditActor;

/// The authenticated caller, in the request's extensions for the handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's id (`bootstrap` for the environment token).
    pub token_id: String,
    /// Global or zone.
    pub scope: TokenScope,
    /// The zone of a zone token.
    pub zone_id: Option<String>,
    /// The capability.
    pub capability: Capability,
    /// Whether this is the bootstrap token.
    pub bootstrap: bool,
    /// The token's name (`bootstrap` for the environment token).
    pub name: Option<String>,
}

/// The id the bootstrap token acts as (`admin:bootstrap` in attribution).
pub const BOOTSTRAP_TOKEN_ID: &str = "bootstrap";

impl Actor {
    /// The attribution string, `admin:<token id>`.
    pub fn attribution(&self) -> String {
        format!("admin:{}", self.token_id)
    }

    /// The actor as the admin audit chain records it.
    pub fn audit_actor(&self) -> AuditActor {
        AuditActor {
            id: self.attribution(),
            name: self.name.clone(),
            scope: Some(
                match self.scope {
                    TokenScope::Global => "global",
                    TokenScope::Zone => "zone",
                }
                .to_owned(),
            ),
        }
    }

    /// Whether the token spans every zone.
    pub fn is_global(&self) -> bool {
        self.scope == TokenScope::Global
    }
}

/// Whether a request only reads: GET/HEAD, or `POST /v1/policies/validate`.
pub fn is_read(method: &Method, path: &str) -> bool {
    method == Method::GET
        || method == Method::HEAD
        || (method == Method::POST && path == "/v1/policies/validate")
}

/// Whether a request decides an approval (`POST /v1/zones/:z/approvals/:id/approve|reject`).
pub fn is_approval_decision(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    method == Method::POST
        && matches!(
            segments.as_slice(),
            ["", "v1", "zones", _, "approvals", _, "approve" | "reject"]
        )
}

/// The zone a path targets: the segment after `/v1/zones/`.
pub fn path_zone(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/zones/")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .filter(|z| !z.is_empty())
}

/// The middleware: authenticate, authorise, and put the [`Actor`] into the request.
pub async fn gate(State(svc): State<Svc>, mut request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match authorize(&svc, header.as_deref(), &method, &path).await {
        Ok(actor) => {
            request.extensions_mut().insert(actor.audit_actor());
            request.extensions_mut().insert(actor);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

async fn authorize(
    svc: &Svc,
    header: Option<&str>,
    method: &Method,
    path: &str,
) -> AdminResult<Actor> {
    let actor = authenticate(svc, header).await?;
    let read = is_read(method, path);
    let decision = is_approval_decision(method, path);
    match actor.capability {
        Capability::Read if !read => return Err(err(403, "admin_token_read_only")),
        Capability::Approve if !read && !decision => {
            return Err(err(403, "admin_token_approve_only"));
        }
        Capability::Write if decision && !actor.bootstrap => {
            return Err(err(403, "approve_capability_required"));
        }
        _ => {}
    }
    let zone = path_zone(path);
    if !actor.is_global() {
        if path == "/v1/admin-tokens" || path.starts_with("/v1/admin-tokens/") {
            return Err(err(403, "admin_token_management_requires_global"));
        }
        match zone {
            Some(z) if Some(z) != actor.zone_id.as_deref() => {
                return Err(err(403, "admin_token_zone_mismatch"));
            }
            // A zone token may list zones (it sees its own) but not create one.
            None if path == "/v1/zones" && !read => {
                return Err(err(403, "admin_token_zone_mismatch"));
            }
            _ => {}
        }
    }
    if let Some(z) = zone.filter(|_| !read) {
        match svc.stores.zones.get_zone(z).await {
            Ok(Some(zone)) if super::zones::is_system_zone(&zone) => {
                return Err(err(403, "system_zone_read_only"));
            }
            Ok(_) => {}
            Err(e) => return Err(internal(&e)),
        }
    }
    Ok(actor)
}

/// Who presents `header` (`Bearer <token>`): the bootstrap token, or a live stored token.
async fn authenticate(svc: &Svc, header: Option<&str>) -> AdminResult<Actor> {
    let invalid = || err(401, "invalid_admin_token");
    if let Some(bootstrap) = &svc.bootstrap {
        if bearer_matches(header, bootstrap) {
            return Ok(Actor {
                token_id: BOOTSTRAP_TOKEN_ID.to_owned(),
                scope: TokenScope::Global,
                zone_id: None,
                capability: Capability::Write,
                bootstrap: true,
                name: Some(BOOTSTRAP_TOKEN_ID.to_owned()),
            });
        }
    }
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
        .ok_or_else(invalid)?;
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let row = svc
        .stores
        .admin_tokens
        .find_admin_token(&digest)
        .await
        .map_err(|e| internal(&e))?
        .filter(|t| t.revoked_at.is_none())
        .ok_or_else(invalid)?;
    // The store looked the row up by digest; confirm it in constant time all the same.
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        &row.token_sha256[..],
        &digest[..],
    )) {
        return Err(invalid());
    }
    if row.scope == TokenScope::Zone && row.zone_id.is_none() {
        // A zone token without a zone binds nothing; refuse rather than treat it as global.
        return Err(invalid());
    }
    // Best effort, as the store documents.
    let _ = svc
        .stores
        .admin_tokens
        .touch_admin_token(&row.id, svc.now())
        .await;
    Ok(Actor {
        token_id: row.id,
        scope: row.scope,
        zone_id: row.zone_id,
        capability: row.capability,
        bootstrap: false,
        name: Some(row.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_classes() {
        assert!(is_read(&Method::GET, "/v1/zones"));
        assert!(is_read(&Method::POST, "/v1/policies/validate"));
        assert!(!is_read(&Method::POST, "/v1/zones"));
        assert!(is_approval_decision(
            &Method::POST,
            "/v1/zones/z/approvals/a/approve"
        ));
        assert!(!is_approval_decision(
            &Method::POST,
            "/v1/zones/z/approvals/a"
        ));
        assert_eq!(path_zone("/v1/zones/z1/applications"), Some("z1"));
        assert_eq!(path_zone("/v1/zones/z1"), Some("z1"));
        assert_eq!(path_zone("/v1/zones"), None);
        assert_eq!(path_zone("/v1/zones/"), None);
    }
}
