//! Approvals, the operator plane (`http-bodies.md` §7, `control-plane.md` §1.12).
//!
//! A decision goes through `caracal_core::exchange::approval::try_decide`, the function the
//! STS subject plane decides with: one conditional update (it lands only while the hold is
//! pending and unexpired), the `step_up_decided` audit event and the wake-up of the hold's
//! long pollers. The approver is recorded as `admin:<token id>`. Who may call the decision
//! routes (an `approve` token or the bootstrap token; a `write` token gets `403
//! approve_capability_required`) is the gate's rule (`auth::is_approval_decision`).
//!
//! Not here yet: `GET …/approvals/counts`, the `tier`/`principal`/`since`/`until` list filters,
//! and the row's `principal_federated`, `prior_approved`, `prior_rejected` members.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use caracal_core::api::ApiError;
use caracal_core::exchange::approval::{REASON_MAX_CHARS, try_decide};
use caracal_core::model::approval::{Approval, ApprovalState, ApproverClass, HUMAN_APPROVAL};
use caracal_core::model::time::format_iso_ms;
use caracal_core::store::approvals::ApprovalDecision;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Actor;
use super::{
    AdminResult, HttpError, Svc, check_params, envelope, err, err_desc, internal, list_error,
    page_request, respond,
};

/// The list query: §0.1 `limit`/`cursor` plus `state`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApprovalQuery {
    /// Page size, 1..500 (default 200).
    pub limit: Option<String>,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// `pending`, `approved`, `rejected`, `expired` or `consumed` (at the time of the call).
    pub state: Option<String>,
}

/// The optional decision body `{reason?}` (≤500 characters).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct DecisionBody {
    /// Why (shown to auditors); at most 500 characters.
    #[serde(default)]
    pub reason: Option<String>,
}

fn parse_state(s: &str) -> Option<ApprovalState> {
    Some(match s {
        "pending" => ApprovalState::Pending,
        "approved" => ApprovalState::Approved,
        "rejected" => ApprovalState::Rejected,
        "expired" => ApprovalState::Expired,
        "consumed" => ApprovalState::Consumed,
        _ => return None,
    })
}

/// The row: the stored hold with its `state` at `now`. The approver's authority record and
/// the consumed record id stay internal (forensic anchors, not part of the reference row).
fn render(a: &Approval, now: chrono::DateTime<chrono::Utc>) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("approver_session_id");
        o.remove("consumed_authority_record_id");
        o.insert("state".into(), json!(a.state(now).as_str()));
    }
    v
}

/// List the zone's holds, newest first, optionally only those in `state` now.
#[utoipa::path(get, path = "/v1/zones/{zone_id}/approvals", tag = "approvals",
    params(("zone_id" = String, Path, description = "zone id"), ApprovalQuery),
    responses((status = 200, description = "`{items, next_cursor}` of approval rows", body = Value),
        (status = 400, description = "`invalid_query`, `invalid_cursor`")))]
pub async fn list_approvals(
    State(svc): State<Svc>,
    Path(zone_id): Path<String>,
    q: Result<Query<ApprovalQuery>, QueryRejection>,
) -> AdminResult<Response> {
    check_params(&[&zone_id])?;
    let q = q.map_err(|_| err(400, "invalid_query"))?.0;
    let page = page_request(q.limit.as_deref(), q.cursor.as_deref())?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(parse_state(s).ok_or_else(|| err(400, "invalid_query"))?),
    };
    let now = svc.now();
    let page = svc
        .stores
        .approvals
        .list_approvals(&zone_id, state, now, &page)
        .await
        .map_err(|e| list_error(&e))?;
    Ok(envelope(page, |a| render(a, now)))
}

async fn load(svc: &Svc, zone_id: &str, id: &str) -> AdminResult<Approval> {
    match svc.stores.approvals.get_approval(zone_id, id).await {
        Ok(Some(a)) if a.approval_type == HUMAN_APPROVAL => Ok(a),
        Ok(_) => Err(err(404, "approval_not_found")),
        Err(e) => Err(internal(&e)),
    }
}

/// Read one hold.
#[utoipa::path(get, path = "/v1/zones/{zone_id}/approvals/{id}", tag = "approvals",
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "approval id")),
    responses((status = 200, description = "approval row", body = Value),
        (status = 404, description = "`approval_not_found`")))]
pub async fn get_approval(
    State(svc): State<Svc>,
    Path((zone_id, id)): Path<(String, String)>,
) -> AdminResult<Response> {
    check_params(&[&zone_id, &id])?;
    let a = load(&svc, &zone_id, &id).await?;
    Ok(respond(200, render(&a, svc.now())))
}

/// Approve a pending hold (approve-capability token or bootstrap).
#[utoipa::path(post, path = "/v1/zones/{zone_id}/approvals/{id}/approve", tag = "approvals",
    request_body(content = DecisionBody, description = "optional"),
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "approval id")),
    responses((status = 200, description = "`{id, state, satisfied_at, rejected_at, approver_subject_id}`", body = Value),
        (status = 400, description = "`invalid_body`"),
        (status = 403, description = "`subject_approval_required`, `approve_capability_required`"),
        (status = 404, description = "`approval_not_found`"),
        (status = 409, description = "`approval_not_decidable` with `state`")))]
pub async fn approve(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> AdminResult<Response> {
    decide(&svc, &actor, &zone_id, &id, &body, true).await
}

/// Reject a pending hold (approve-capability token or bootstrap).
#[utoipa::path(post, path = "/v1/zones/{zone_id}/approvals/{id}/reject", tag = "approvals",
    request_body(content = DecisionBody, description = "optional"),
    params(("zone_id" = String, Path, description = "zone id"), ("id" = String, Path, description = "approval id")),
    responses((status = 200, description = "`{id, state, satisfied_at, rejected_at, approver_subject_id}`", body = Value),
        (status = 400, description = "`invalid_body`"),
        (status = 403, description = "`subject_approval_required`, `approve_capability_required`"),
        (status = 404, description = "`approval_not_found`"),
        (status = 409, description = "`approval_not_decidable` with `state`")))]
pub async fn reject(
    State(svc): State<Svc>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> AdminResult<Response> {
    decide(&svc, &actor, &zone_id, &id, &body, false).await
}

/// Parse the optional body: empty is no reason; otherwise a JSON object whose `reason` is a
/// string of at most [`REASON_MAX_CHARS`] characters (an empty reason is none).
fn parse_reason(body: &[u8]) -> AdminResult<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let invalid = || err_desc(400, "invalid_body", "request body failed validation");
    let req: DecisionBody = serde_json::from_slice(body).map_err(|_| invalid())?;
    let reason = req.reason.filter(|r| !r.is_empty());
    if reason
        .as_deref()
        .is_some_and(|r| r.chars().count() > REASON_MAX_CHARS)
    {
        return Err(invalid());
    }
    Ok(reason)
}

async fn decide(
    svc: &Svc,
    actor: &Actor,
    zone_id: &str,
    id: &str,
    body: &[u8],
    approve: bool,
) -> AdminResult<Response> {
    check_params(&[zone_id, id])?;
    let reason = parse_reason(body)?;
    let hold = load(svc, zone_id, id).await?;
    let now = svc.now();
    if hold.approver_class == ApproverClass::Subject && hold.state(now) == ApprovalState::Pending {
        return Err(err_desc(
            403,
            "subject_approval_required",
            "this approval must be decided by its subject",
        ));
    }
    let approver = actor.attribution();
    let decision = ApprovalDecision {
        approve,
        reason,
        approver_subject_id: approver.clone(),
        approver_session_id: None,
    };
    let plane = svc.plane();
    let outcome = try_decide(
        svc.stores.approvals.as_ref(),
        &plane.waiters,
        plane.audit.as_ref(),
        zone_id,
        id,
        decision,
        now,
    )
    .await
    .map_err(|e: ApiError| {
        if e.status == 404 {
            err(404, "approval_not_found")
        } else {
            HttpError(e)
        }
    })?;
    match outcome {
        Ok(view) => {
            let at = json!(format_iso_ms(&now));
            Ok(respond(
                200,
                json!({
                    "id": view.id,
                    "state": view.state.as_str(),
                    "satisfied_at": if approve { at.clone() } else { Value::Null },
                    "rejected_at": if approve { Value::Null } else { at },
                    "approver_subject_id": approver,
                }),
            ))
        }
        Err(state) => Err(HttpError(
            ApiError::conflict("approval_not_decidable").with_field("state", json!(state.as_str())),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(parse_reason(b"").unwrap(), None);
        assert_eq!(parse_reason(b"{}").unwrap(), None);
        assert_eq!(
            parse_reason(br#"{"reason":"ok"}"#).unwrap().as_deref(),
            Some("ok")
        );
        let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(501));
        assert!(parse_reason(long.as_bytes()).is_err());
        assert!(parse_reason(b"nope").is_err());
        assert_eq!(parse_state("consumed"), Some(ApprovalState::Consumed));
        assert_eq!(parse_state("other"), None);
    }
}
