//! The subject kill switch (`http-bodies.md` §9, `control-plane.md` §1.4):
//! `POST /v1/zones/{zone_id}/subjects/revoke {subject_id, reason?}`.
//!
//! Every active authority record of the subject is revoked
//! (`AuthorityStore::revoke_subject`), then one `caracal.sessions.revoke` message per revoked
//! record (`zone_id`, `session_id` = the record, `reason`) is enqueued on the outbox, so the
//! STS cascades to descendant records and the Gateways drop cached mandates. Idempotent: a
//! rerun finds nothing active and answers zeros.
//!
//! The store offers no transaction spanning the authority records and the outbox: the
//! records are revoked first (the authority paths read them, so the revocation holds at
//! once) and the messages follow; an enqueue failure is a 500 after the records were revoked
//! and those messages are not re-sent by a rerun. Each message carries the dedupe key
//! `subject_revoke:<record id>`.
//!
//! Not here yet: the Coordinator side (terminating the subject's Session trees and revoking
//! touching delegations: `sessions` and `delegations` are 0), provider connections
//! (`connections` 0), and `404 subject_not_found` (the store cannot tell an unknown subject
//! from one with no active record, so both answer zeros).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use caracal_core::store::outbox::OutboxMessage;
use caracal_core::streams::names;
use serde::Deserialize;
use serde_json::json;

use super::{AdminResult, Svc, check_params, err_desc, internal, respond};

/// "`subject_id` 1..512" (reference §9).
pub const MAX_SUBJECT_ID: usize = 512;
/// "`reason?` ≤512" (reference §9).
pub const MAX_REASON: usize = 512;
/// "default `subject_revoked`" (reference §9).
pub const DEFAULT_REASON: &str = "subject_revoked";

/// `POST …/subjects/revoke` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RevokeSubject {
    /// The subject (`sub` of its exchanges), byte-exact, 1..512 characters.
    pub subject_id: String,
    /// Recorded as `revoked_reason` and sent on the stream; default `subject_revoked`.
    #[serde(default)]
    pub reason: Option<String>,
}

fn invalid() -> super::HttpError {
    err_desc(
        400,
        "invalid_subject_revoke",
        "request body failed validation",
    )
}

/// Revoke every active authority record of a subject and publish one
/// `caracal.sessions.revoke` per record.
#[utoipa::path(post, path = "/v1/zones/{zone_id}/subjects/revoke", tag = "subjects",
    request_body = RevokeSubject,
    params(("zone_id" = String, Path, description = "zone id")),
    responses((status = 200, description = "`{subject_id, authority_records, sessions, delegations, connections}` counts", body = serde_json::Value),
        (status = 400, description = "`invalid_subject_revoke`")))]
pub async fn revoke_subject(
    State(svc): State<Svc>,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    let req: RevokeSubject = serde_json::from_slice(&body).map_err(|_| invalid())?;
    if !(1..=MAX_SUBJECT_ID).contains(&req.subject_id.chars().count()) {
        return Err(invalid());
    }
    let reason = match req.reason {
        Some(r) if r.chars().count() > MAX_REASON => return Err(invalid()),
        Some(r) if !r.is_empty() => r,
        _ => DEFAULT_REASON.to_owned(),
    };
    let now = svc.now();
    let revoked = svc
        .stores
        .authority
        .revoke_subject(&zone_id, &req.subject_id, &reason, now)
        .await
        .map_err(|e| internal(&e))?;
    for record in &revoked {
        let message = OutboxMessage::new(
            names::SESSIONS_REVOKE,
            vec![
                ("zone_id".to_owned(), zone_id.clone()),
                ("session_id".to_owned(), record.clone()),
                ("reason".to_owned(), reason.clone()),
            ],
        )
        .dedupe(format!("subject_revoke:{record}"));
        svc.stores
            .outbox
            .enqueue(&message, now)
            .await
            .map_err(|e| internal(&e))?;
    }
    Ok(respond(
        200,
        json!({
            "subject_id": req.subject_id,
            "authority_records": revoked.len(),
            "sessions": 0,
            "delegations": 0,
            "connections": 0,
        }),
    ))
}
