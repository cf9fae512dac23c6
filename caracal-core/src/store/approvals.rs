//! Human approval holds.
//!
//! A decision lands only while the hold is pending and unexpired, and an approved hold is
//! consumed by exactly one mandate: both are single conditional updates, so two racing
//! deciders or consumers cannot both win.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Page, PageRequest, StoreResult};
use crate::model::approval::{Approval, ApprovalState};
use crate::model::authority::AuthorityRecord;

/// A decision on a pending hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDecision {
    /// Approve (`true`) or reject.
    pub approve: bool,
    /// Reason (≤500 characters, validated by the caller).
    pub reason: Option<String>,
    /// Who decided (`admin:<id>`, `console:<id>`, or a subject).
    pub approver_subject_id: String,
    /// The approver's authority record, on a subject-plane decision (`None` for operators).
    pub approver_session_id: Option<String>,
}

/// The outcome of [`ApprovalStore::issue_approval`].
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedApproval {
    /// The live hold for the binding: the one just inserted, or the one already there.
    pub approval: Approval,
    /// Whether `approval` is the row just inserted.
    pub created: bool,
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

    /// Raise a hold or converge on the live one, atomically (reference `sts.md` §4.6):
    /// first drop every *expired* unconsumed hold with the same
    /// (zone, principal, session, binding) as `approval`, then insert `approval` unless an
    /// unconsumed hold of that key remains, in which case that one is returned with
    /// `created: false`. A rejected or approved hold that has not expired stays
    /// authoritative. Two racing callers with the same key end with one row between them.
    /// A taken id is `Conflict("approval_id")`.
    async fn issue_approval(
        &self,
        approval: &Approval,
        now: DateTime<Utc>,
    ) -> StoreResult<IssuedApproval>;

    /// A hold by id in any zone: the capability lookup of `GET /approvals/{id}` and of the
    /// subject decision plane, where the unguessable id (UUIDv4) is the credential and the
    /// zone is learnt from the row. Never use it where a zone is known.
    async fn get_approval_any_zone(&self, id: &str) -> StoreResult<Option<Approval>>;

    /// Consume an approved hold and insert the authority record the consuming mint
    /// produced, atomically: both or neither. The consume lands only if, at `now`, the hold
    /// is approved (decided by someone: `approver_subject_id` set), unexpired, not rejected
    /// and not consumed, and its own authority record (`session_id`), when it has one, is
    /// still active and unexpired in the zone. Then `consumed_at = now` and
    /// `consumed_authority_record_id = record.id`. Otherwise nothing is written and the
    /// answer is `NotAllowed` with the hold's state at `now` (`Approved` when only the
    /// hold's authority record failed). `NotFound` when no such hold is in the zone; a
    /// taken record id is `Conflict("authority_record_id")` and nothing is consumed; a
    /// record of another zone is `Invalid`.
    async fn consume_into(
        &self,
        zone_id: &str,
        id: &str,
        record: &AuthorityRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalUpdate>;
}
