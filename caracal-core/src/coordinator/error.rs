//! The Coordinator's refusals, one variant per reference error code.
//!
//! Every variant maps to exactly one `(status, error)` pair of the reference
//! (`control-plane.md` §1.5, §1.6, §2; `http-bodies.md` §11), rendered by
//! [`CoordinatorError::to_api`]. The reference gives no `error_description` for these codes,
//! so none is rendered except where it carries one (`session_not_found` with `detail` for an
//! inactive subject record, `invalid_body` with its `details.issues`).

use serde_json::json;

use crate::api::ApiError;
use crate::store::StoreError;

/// Result of a Coordinator operation.
pub type CoordinatorResult<T> = Result<T, CoordinatorError>;

/// Which bound of the parent edge a child edge exceeded (rule 7). Kept for logs and tests;
/// the wire answer is the single code `delegation_exceeds_parent_authority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceedsParent {
    /// A scope the parent does not carry.
    Scopes,
    /// An expiry later than the parent's.
    Expiry,
    /// A resource outside the parent's resources (or broad under a bound parent).
    Resources,
    /// `max_hops` not strictly below the parent's (or the parent allows no re-delegation).
    Hops,
    /// No `ttl_seconds`, or a larger one, under a parent that sets one.
    Ttl,
    /// A budget above the parent's.
    Budget,
    /// The parent's stored constraints do not parse: nothing fits under it (fail closed).
    Unreadable,
}

/// A Coordinator refusal (or a store failure, which always refuses).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// 400 `invalid_body` (Zod shape) on one field, e.g. `ttl_seconds` on a service session.
    #[error("invalid body: {field}: {message}")]
    InvalidBody {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        message: &'static str,
    },
    /// 400 `subject_session_id_required`: no body record and no mandate `sid`.
    #[error("subject_session_id_required")]
    SubjectSessionIdRequired,
    /// 403 `application_ownership_required`.
    #[error("application_ownership_required")]
    ApplicationOwnershipRequired,
    /// 404 `application_not_found` (missing, archived or expired).
    #[error("application_not_found")]
    ApplicationNotFound,
    /// 409 `dcr_application_cannot_host_service`.
    #[error("dcr_application_cannot_host_service")]
    DcrApplicationCannotHostService,
    /// 409 `dcr_application_cannot_be_child`.
    #[error("dcr_application_cannot_be_child")]
    DcrApplicationCannotBeChild,
    /// 409 `dcr_application_already_bound`.
    #[error("dcr_application_already_bound")]
    DcrApplicationAlreadyBound,
    /// 409 `dcr_application_cannot_start_child`.
    #[error("dcr_application_cannot_start_child")]
    DcrApplicationCannotStartChild,
    /// 404 `session_not_found` with `detail`: the subject authority record is not active.
    #[error("session_not_found (subject authority record inactive)")]
    SubjectRecordNotFound,
    /// 429 `session_zone_limit_exceeded`.
    #[error("session_zone_limit_exceeded")]
    SessionZoneLimitExceeded,
    /// 429 `session_limit_exceeded` (per application).
    #[error("session_limit_exceeded")]
    SessionLimitExceeded,
    /// 404 `parent_not_found` (missing or not active).
    #[error("parent_not_found")]
    ParentNotFound,
    /// 409 `task_session_cannot_start_service`.
    #[error("task_session_cannot_start_service")]
    TaskSessionCannotStartService,
    /// 403 `parent_ownership_required`.
    #[error("parent_ownership_required")]
    ParentOwnershipRequired,
    /// 429 `session_children_limit_exceeded`.
    #[error("session_children_limit_exceeded")]
    SessionChildrenLimitExceeded,
    /// 429 `session_depth_limit_exceeded`.
    #[error("session_depth_limit_exceeded")]
    SessionDepthLimitExceeded,
    /// 409 `inherit_parent_edge_not_active`.
    #[error("inherit_parent_edge_not_active")]
    InheritParentEdgeNotActive,
    /// 409 `inherit_parent_edge_ambiguous`.
    #[error("inherit_parent_edge_ambiguous")]
    InheritParentEdgeAmbiguous,
    /// 404 `session_not_found`.
    #[error("session_not_found")]
    SessionNotFound,
    /// 409 `session_not_found_or_not_active` (suspend of a non-active session).
    #[error("session_not_found_or_not_active")]
    SessionNotFoundOrNotActive,
    /// 409 `session_not_found_or_not_suspended` (resume of a non-suspended session).
    #[error("session_not_found_or_not_suspended")]
    SessionNotFoundOrNotSuspended,
    /// 400 `lease_generation_required` (terminating a service session without it).
    #[error("lease_generation_required")]
    LeaseGenerationRequired,
    /// 409 `session_lease_fenced` (stale generation).
    #[error("session_lease_fenced")]
    SessionLeaseFenced,
    /// 409 `session_not_service`.
    #[error("session_not_service")]
    SessionNotService,
    /// 409 `session_suspended`.
    #[error("session_suspended")]
    SessionSuspended,
    /// 409 `session_not_live`.
    #[error("session_not_live")]
    SessionNotLive,
    /// 409 `session_subject_inactive` (the subtree was terminated).
    #[error("session_subject_inactive")]
    SessionSubjectInactive,
    /// 409 `session_lease_expired` (the subtree was suspended).
    #[error("session_lease_expired")]
    SessionLeaseExpired,
    /// 401 `authority_record_required`.
    #[error("authority_record_required")]
    AuthorityRecordRequired,
    /// 401 `identity_revoked`.
    #[error("identity_revoked")]
    IdentityRevoked,
    /// 400 `invalid_<key>`: a known constraint key with a bad value (`invalid_max_hops` also
    /// when `max_depth` and `max_hops` disagree).
    #[error("invalid_{0}")]
    InvalidConstraint(&'static str),
    /// 400 `invalid_delegation_constraint`: an unknown constraint key or a non-object.
    #[error("invalid_delegation_constraint")]
    InvalidDelegationConstraint,
    /// 400 `delegation_expiry_required` (rule 1).
    #[error("delegation_expiry_required")]
    DelegationExpiryRequired,
    /// 403 `issuer_ownership_required` (rule 2; also revoke).
    #[error("issuer_ownership_required")]
    IssuerOwnershipRequired,
    /// 400 `self_delegation_denied` (rule 3).
    #[error("self_delegation_denied")]
    SelfDelegationDenied,
    /// 403 `broad_delegation_permission_required` (rule 4).
    #[error("broad_delegation_permission_required")]
    BroadDelegationPermissionRequired,
    /// 404 `delegation_endpoint_not_found` (rule 5).
    #[error("delegation_endpoint_not_found")]
    DelegationEndpointNotFound,
    /// 409 `delegation_application_mismatch` (rule 5).
    #[error("delegation_application_mismatch")]
    DelegationApplicationMismatch,
    /// 404 `resource_not_found` (rule 6).
    #[error("resource_not_found")]
    ResourceNotFound,
    /// 400 `delegation_resource_scope_mismatch` (rule 6).
    #[error("delegation_resource_scope_mismatch")]
    DelegationResourceScopeMismatch,
    /// 403 `delegation_scopes_exceed_resource` (rule 6).
    #[error("delegation_scopes_exceed_resource")]
    DelegationScopesExceedResource,
    /// 403 `parent_delegation_not_active` (rule 7).
    #[error("parent_delegation_not_active")]
    ParentDelegationNotActive,
    /// 409 `parent_delegation_ambiguous` (rule 7).
    #[error("parent_delegation_ambiguous")]
    ParentDelegationAmbiguous,
    /// 403 `delegation_exceeds_parent_authority` (rule 7), with the bound that failed.
    #[error("delegation_exceeds_parent_authority ({0:?})")]
    DelegationExceedsParentAuthority(ExceedsParent),
    /// 409 `delegation_cycle_denied` (rule 8).
    #[error("delegation_cycle_denied")]
    DelegationCycleDenied,
    /// 400 `delegation_expired` (rule 9).
    #[error("delegation_expired")]
    DelegationExpired,
    /// 404 `delegation_not_found`.
    #[error("delegation_not_found")]
    DelegationNotFound,
    /// 403 `coordinator_admin_required`.
    #[error("coordinator_admin_required")]
    CoordinatorAdminRequired,
    /// 400 `idempotency_key_invalid`.
    #[error("idempotency_key_invalid")]
    IdempotencyKeyInvalid,
    /// 400 `idempotency_key_multiple`.
    #[error("idempotency_key_multiple")]
    IdempotencyKeyMultiple,
    /// 409 `idempotency_key_conflict`: the key was used for another request.
    #[error("idempotency_key_conflict")]
    IdempotencyKeyConflict,
    /// 409 `idempotency_result_inactive`: the recorded session / edge is no longer live.
    #[error("idempotency_result_inactive")]
    IdempotencyResultInactive,
    /// 429 `idempotency_receipt_limit_exceeded`.
    #[error("idempotency_receipt_limit_exceeded")]
    IdempotencyReceiptLimitExceeded,
    /// A store failure: the operation is refused and nothing was written (500
    /// `internal_error`, the reference's generic answer; the cause is logged, never rendered).
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl CoordinatorError {
    /// The reference's `(status, error)` for this variant.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        use CoordinatorError as E;
        match self {
            E::InvalidBody { .. } => (400, "invalid_body"),
            E::SubjectSessionIdRequired => (400, "subject_session_id_required"),
            E::ApplicationOwnershipRequired => (403, "application_ownership_required"),
            E::ApplicationNotFound => (404, "application_not_found"),
            E::DcrApplicationCannotHostService => (409, "dcr_application_cannot_host_service"),
            E::DcrApplicationCannotBeChild => (409, "dcr_application_cannot_be_child"),
            E::DcrApplicationAlreadyBound => (409, "dcr_application_already_bound"),
            E::DcrApplicationCannotStartChild => (409, "dcr_application_cannot_start_child"),
            E::SubjectRecordNotFound => (404, "session_not_found"),
            E::SessionZoneLimitExceeded => (429, "session_zone_limit_exceeded"),
            E::SessionLimitExceeded => (429, "session_limit_exceeded"),
            E::ParentNotFound => (404, "parent_not_found"),
            E::TaskSessionCannotStartService => (409, "task_session_cannot_start_service"),
            E::ParentOwnershipRequired => (403, "parent_ownership_required"),
            E::SessionChildrenLimitExceeded => (429, "session_children_limit_exceeded"),
            E::SessionDepthLimitExceeded => (429, "session_depth_limit_exceeded"),
            E::InheritParentEdgeNotActive => (409, "inherit_parent_edge_not_active"),
            E::InheritParentEdgeAmbiguous => (409, "inherit_parent_edge_ambiguous"),
            E::SessionNotFound => (404, "session_not_found"),
            E::SessionNotFoundOrNotActive => (409, "session_not_found_or_not_active"),
            E::SessionNotFoundOrNotSuspended => (409, "session_not_found_or_not_suspended"),
            E::LeaseGenerationRequired => (400, "lease_generation_required"),
            E::SessionLeaseFenced => (409, "session_lease_fenced"),
            E::SessionNotService => (409, "session_not_service"),
            E::SessionSuspended => (409, "session_suspended"),
            E::SessionNotLive => (409, "session_not_live"),
            E::SessionSubjectInactive => (409, "session_subject_inactive"),
            E::SessionLeaseExpired => (409, "session_lease_expired"),
            E::AuthorityRecordRequired => (401, "authority_record_required"),
            E::IdentityRevoked => (401, "identity_revoked"),
            E::InvalidConstraint(key) => (400, constraint_code(key)),
            E::InvalidDelegationConstraint => (400, "invalid_delegation_constraint"),
            E::DelegationExpiryRequired => (400, "delegation_expiry_required"),
            E::IssuerOwnershipRequired => (403, "issuer_ownership_required"),
            E::SelfDelegationDenied => (400, "self_delegation_denied"),
            E::BroadDelegationPermissionRequired => (403, "broad_delegation_permission_required"),
            E::DelegationEndpointNotFound => (404, "delegation_endpoint_not_found"),
            E::DelegationApplicationMismatch => (409, "delegation_application_mismatch"),
            E::ResourceNotFound => (404, "resource_not_found"),
            E::DelegationResourceScopeMismatch => (400, "delegation_resource_scope_mismatch"),
            E::DelegationScopesExceedResource => (403, "delegation_scopes_exceed_resource"),
            E::ParentDelegationNotActive => (403, "parent_delegation_not_active"),
            E::ParentDelegationAmbiguous => (409, "parent_delegation_ambiguous"),
            E::DelegationExceedsParentAuthority(_) => (403, "delegation_exceeds_parent_authority"),
            E::DelegationCycleDenied => (409, "delegation_cycle_denied"),
            E::DelegationExpired => (400, "delegation_expired"),
            E::DelegationNotFound => (404, "delegation_not_found"),
            E::CoordinatorAdminRequired => (403, "coordinator_admin_required"),
            E::IdempotencyKeyInvalid => (400, "idempotency_key_invalid"),
            E::IdempotencyKeyMultiple => (400, "idempotency_key_multiple"),
            E::IdempotencyKeyConflict => (409, "idempotency_key_conflict"),
            E::IdempotencyResultInactive => (409, "idempotency_result_inactive"),
            E::IdempotencyReceiptLimitExceeded => (429, "idempotency_receipt_limit_exceeded"),
            E::Store(_) => (500, "internal_error"),
        }
    }

    /// The wire error code.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    /// The caller-visible answer. A store failure is logged here and rendered as the
    /// reference's generic 500, never with its cause.
    pub fn to_api(&self) -> ApiError {
        let (status, code) = self.status_and_code();
        match self {
            CoordinatorError::Store(e) => {
                tracing::warn!(error = %e, "coordinator store failure; refusing");
                ApiError::internal()
            }
            CoordinatorError::InvalidBody { field, message } => ApiError::new(status, code)
                .with_description("Request body failed validation")
                .with_field(
                    "details",
                    json!({"issues": [{"path": [field], "message": message}]}),
                ),
            CoordinatorError::SubjectRecordNotFound => ApiError::new(status, code)
                .with_field("detail", json!("subject authority record is not active")),
            CoordinatorError::IdempotencyKeyInvalid
            | CoordinatorError::IdempotencyKeyMultiple
            | CoordinatorError::IdempotencyKeyConflict
            | CoordinatorError::IdempotencyResultInactive
            | CoordinatorError::IdempotencyReceiptLimitExceeded => {
                ApiError::new(status, code).with_field("message", json!(idempotency_message(self)))
            }
            _ => ApiError::new(status, code),
        }
    }
}

/// The `message` of the idempotency answers (the reference renders `{error, message}`; its
/// exact sentences are not recorded, these say the same thing).
fn idempotency_message(e: &CoordinatorError) -> &'static str {
    match e {
        CoordinatorError::IdempotencyKeyInvalid => "Idempotency-Key is invalid",
        CoordinatorError::IdempotencyKeyMultiple => "Idempotency-Key must be sent once",
        CoordinatorError::IdempotencyKeyConflict => {
            "Idempotency-Key was already used for a different request"
        }
        CoordinatorError::IdempotencyResultInactive => {
            "the result recorded for this Idempotency-Key is no longer active"
        }
        _ => "too many live idempotency receipts",
    }
}

/// `invalid_<key>` for the constraint keys the Coordinator knows (static strings, so the
/// code never depends on caller input).
fn constraint_code(key: &str) -> &'static str {
    match key {
        "resources" => "invalid_resources",
        "max_hops" | "max_depth" => "invalid_max_hops",
        "budget" => "invalid_budget",
        "ttl_seconds" => "invalid_ttl_seconds",
        "policy_approved" => "invalid_policy_approved",
        "expires_at" => "invalid_expires_at",
        "broad_reason" => "invalid_broad_reason",
        _ => "invalid_delegation_constraint",
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> Self {
        e.to_api()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_follow_the_reference() {
        let e = CoordinatorError::DelegationExceedsParentAuthority(ExceedsParent::Hops);
        let api = e.to_api();
        assert_eq!(api.status, 403);
        assert_eq!(api.body.error, "delegation_exceeds_parent_authority");
        assert_eq!(
            CoordinatorError::InvalidConstraint("max_depth").status_and_code(),
            (400, "invalid_max_hops")
        );
        let store = CoordinatorError::Store(StoreError::Invalid("x".into())).to_api();
        assert_eq!(store.status, 500);
        assert_eq!(store.body.error, "internal_error");
        let body = CoordinatorError::InvalidBody {
            field: "ttl_seconds",
            message: "not allowed for service sessions",
        }
        .to_api();
        assert_eq!(
            body.body.extra["details"]["issues"][0]["path"][0],
            "ttl_seconds"
        );
        assert_eq!(
            CoordinatorError::SessionZoneLimitExceeded.status_and_code(),
            (429, "session_zone_limit_exceeded")
        );
    }
}
