//! Human approval holds.
//!
//! A decision lands only while the hold is pending and unexpired, and an approved hold is
//! consumed by exactly one mandate: both are single conditional updates, so two racing
//! deciders or consumers cannot both win.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Page, PageRequest, StoreResult};
use crate::model::approval::{Approval, ApprovalState};

/// A decision on a pending hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDecision {
    /// Approve (`true`) or reject.
    pub approve: bool,
    /// Reason (≤500 characters, validated by the caller).
    pub reason: Option<String>,
    /// Who decided (`admin:<id>`, `console:<id>`, or a subject).
    pub approver_subject_id: String,
}

/// The outcome of a conditional approval update.
// Returned by value once per decision and matched at once, never stored in bulk: boxing the
// row would cost an allocation on every applied update for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalUpdate {
    /// The update landed; the row after it.
    Applied(Approval),
    /// The hold was not in a state that allows it; its current state.
    NotAllowed(ApprovalState),
}

/// Approval holds.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Insert a hold. Unique: `approval_live_binding` — one unconsumed hold per
    /// (zone, principal, session, binding).
    async fn insert_approval(&self, approval: &Approval) -> StoreResult<()>;
    /// A hold by id.
    async fn get_approval(&self, zone_id: &str, id: &str) -> StoreResult<Option<Approval>>;
    /// The unconsumed hold for a binding, if any.
    async fn find_live_approval(
        &self,
        zone_id: &str,
        principal_id: &str,
        session_id: &str,
        binding: &str,
    ) -> StoreResult<Option<Approval>>;
    /// Holds of a zone, newest first, optionally only those in `state` at `now`.
    async fn list_approvals(
        &self,
        zone_id: &str,
        state: Option<ApprovalState>,
        now: DateTime<Utc>,
        page: &PageRequest,
    ) -> StoreResult<Page<Approval>>;
    /// Decide a hold if it is pending at `now`.
    async fn decide_approval(
        &self,
        zone_id: &str,
        id: &str,
        decision: &ApprovalDecision,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalUpdate>;
    /// Consume an approved hold at `now`, recording the authority record it produced.
    async fn consume_approval(
        &self,
        zone_id: &str,
        id: &str,
        authority_record_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalUpdate>;
}
