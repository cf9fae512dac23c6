//! Who is calling the Coordinator (reference `control-plane.md` §2, `http-bodies.md` §11).
//!
//! `Authorization: Bearer <jwt>`, checked in the reference's order:
//!
//! 1. no bearer → `401 missing_token`;
//! 2. the token's (unverified) `zone_id` names the key set; the mandate must verify under it
//!    as a `use=session` mandate with `iss` = `aud` = `ISSUER_URL` (60 s leeway), else `401
//!    invalid_token` (the claim is re-checked against the verifying zone by the verifier, so
//!    the peek only chooses which keys to try);
//! 3. its `scope` must contain `AGENT_COORDINATOR_SCOPE` → else `403 missing_scope`;
//! 4. the route's `{zone_id}` must equal the token's zone → else `403 zone_mismatch`;
//! 5. the application (`client_id`) must be live and the `sid` authority record live → else
//!    `401 identity_revoked`.
//!
//! The operator token (`CARACAL_COORDINATOR_TOKEN`, constant-time compare) is accepted only
//! by [`AuthedOrOperator`], the extractor of the allowlisted routes, and then acts as
//! [`Caller::operator`] (`coordinator.admin`). Elsewhere it is just a malformed JWT (`401
//! invalid_token`).
//!
//! A store failure while checking is a 500: the gate never lets a request through because it
//! could not check it.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caracal_core::api::ApiError;
use caracal_core::coordinator::Caller;
use caracal_core::mandate::{MandateError, MandateUse, VerifyPolicy};
use caracal_service::config::bearer_matches;
use caracal_service::http::HttpError;

use super::{CoordinatorApi, Svc};
use crate::admin::is_valid_param;
use crate::audit::{ActorSlot, AuditActor};

/// Longest bearer token accepted (reference §2: ≤ 4096 bytes).
pub const MAX_BEARER_BYTES: usize = 4096;

/// The authenticated principal of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The core's caller (application id, `sid`, scopes as capabilities).
    pub caller: Caller,
    /// The mandate's `sub` (`None` for the operator token); part of the idempotency
    /// fingerprint's principal.
    pub subject: Option<String>,
}

/// A caller holding a verified session mandate (the operator token is refused).
#[derive(Debug, Clone)]
pub struct Authed(pub Principal);

/// A caller holding a verified session mandate or the operator token (operator allowlist).
#[derive(Debug, Clone)]
pub struct AuthedOrOperator(pub Principal);

impl FromRequestParts<Svc> for Authed {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, svc: &Svc) -> Result<Self, Self::Rejection> {
        let p = authenticate(svc, parts, false).await?;
        record_actor(parts, &p);
        Ok(Self(p))
    }
}

impl FromRequestParts<Svc> for AuthedOrOperator {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, svc: &Svc) -> Result<Self, Self::Rejection> {
        let p = authenticate(svc, parts, true).await?;
        record_actor(parts, &p);
        Ok(Self(p))
    }
}

/// Tell the admin audit middleware who is calling (its [`ActorSlot`], present on mutations).
fn record_actor(parts: &Parts, p: &Principal) {
    if let Some(slot) = parts.extensions.get::<ActorSlot>() {
        slot.set(AuditActor {
            id: p.caller.client_id.clone(),
            name: p.subject.clone(),
            scope: Some(
                if p.subject.is_some() {
                    "session"
                } else {
                    "operator"
                }
                .to_owned(),
            ),
        });
    }
}

fn refuse(status: u16, code: &str) -> HttpError {
    HttpError(ApiError::new(status, code))
}

/// The zone a path targets: the segment after `/zones/`.
pub fn path_zone(path: &str) -> Option<&str> {
    path.strip_prefix("/zones/")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .filter(|z| !z.is_empty())
}

/// The `zone_id` claim of a compact JWS, read without verifying it: it only selects the key
/// set the token is then verified against (and the verifier re-checks the claim).
pub fn peek_zone(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let zone = claims.get("zone_id")?.as_str()?;
    is_valid_param(zone).then(|| zone.to_owned())
}

async fn authenticate(
    svc: &CoordinatorApi,
    parts: &Parts,
    allow_operator: bool,
) -> Result<Principal, HttpError> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| refuse(401, "missing_token"))?;
    if allow_operator {
        if let Some(op) = &svc.settings.operator_token {
            if bearer_matches(header, op) {
                return Ok(Principal {
                    caller: Caller::operator(),
                    subject: None,
                });
            }
        }
    }
    if token.len() > MAX_BEARER_BYTES {
        return Err(refuse(401, "invalid_token"));
    }
    let zone = peek_zone(token).ok_or_else(|| refuse(401, "invalid_token"))?;
    let policy = VerifyPolicy::sts_subject(
        zone.as_str(),
        svc.settings.issuer.as_str(),
        MandateUse::Session,
    );
    let claims = svc
        .keys
        .verify(token, &policy)
        .await
        .map_err(|e| verify_error(&e))?;
    if !claims.scopes().any(|s| s == svc.settings.required_scope) {
        return Err(refuse(403, "missing_scope"));
    }
    if path_zone(parts.uri.path()) != Some(claims.zone_id.as_str()) {
        return Err(refuse(403, "zone_mismatch"));
    }
    let now = svc.now();
    let app_live = svc
        .applications
        .get_application(&claims.zone_id, &claims.client_id)
        .await
        .map_err(|e| store_failure(&e))?
        .is_some_and(|a| a.is_live(now));
    let record_live = svc
        .authority
        .get_authority(&claims.zone_id, &claims.sid)
        .await
        .map_err(|e| store_failure(&e))?
        .is_some_and(|r| r.is_live(now));
    if !app_live || !record_live {
        return Err(refuse(401, "identity_revoked"));
    }
    let scopes: Vec<String> = claims.scopes().map(str::to_owned).collect();
    Ok(Principal {
        caller: Caller::application(claims.client_id.clone(), Some(claims.sid.clone()), scopes),
        subject: Some(claims.sub),
    })
}

/// A verification failure: `401 invalid_token` for anything the token did (including a zone
/// without keys); a key set that could not be read for another reason is a 500 (fail closed).
fn verify_error(e: &MandateError) -> HttpError {
    match e {
        MandateError::KeySetUnavailable(inner) if !matches!(**inner, MandateError::NoKeys) => {
            tracing::warn!(error = %e, "coordinator: key set unavailable; refusing");
            HttpError(ApiError::internal())
        }
        _ => refuse(401, "invalid_token"),
    }
}

fn store_failure(e: &caracal_core::store::StoreError) -> HttpError {
    tracing::warn!(error = %e, "coordinator: store failure while authenticating; refusing");
    HttpError(ApiError::internal())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_from_paths_and_tokens() {
        assert_eq!(path_zone("/zones/z1/agents"), Some("z1"));
        assert_eq!(path_zone("/zones//agents"), None);
        assert_eq!(path_zone("/health"), None);
        let payload = URL_SAFE_NO_PAD.encode(r#"{"zone_id":"z-1"}"#);
        assert_eq!(peek_zone(&format!("h.{payload}.s")), Some("z-1".to_owned()));
        let bad = URL_SAFE_NO_PAD.encode(r#"{"zone_id":"a/b"}"#);
        assert_eq!(peek_zone(&format!("h.{bad}.s")), None);
        assert_eq!(peek_zone("garbage"), None);
    }
}
