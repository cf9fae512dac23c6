//! Human approval holds.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Keyed, MemoryStore, keyset_page, lock};
use crate::model::approval::{Approval, ApprovalState};
use crate::model::authority::AuthorityRecord;
use crate::store::approvals::{ApprovalDecision, ApprovalStore, ApprovalUpdate, IssuedApproval};
use crate::store::{Page, PageRequest, StoreError, StoreResult};

/// `(zone, principal, session, binding)`: the `approval_live_binding` key.
type LiveKey = (String, String, String, String);

fn live_key(a: &Approval) -> LiveKey {
    (
        a.zone_id.clone(),
        a.principal_id.clone(),
        a.session_id.clone(),
        a.binding.clone(),
    )
}

/// Holds by id, with the index of unconsumed holds.
///
/// INVARIANT: `live` maps each key to the one hold with that key whose `consumed_at` is
/// `None`; consuming a hold removes its entry.
#[derive(Default)]
pub(super) struct Tables {
    holds: HashMap<String, Approval>,
    live: HashMap<LiveKey, String>,
}

impl Keyed for Approval {
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn id(&self) -> &str {
        &self.id
    }
}

#[async_trait]
impl ApprovalStore for MemoryStore {
    async fn insert_approval(&self, approval: &Approval) -> StoreResult<()> {
        let mut t = lock(&self.inner.approvals);
        if t.holds.contains_key(&approval.id) {
            return Err(StoreError::conflict("approval_id"));
        }
        if approval.consumed_at.is_none() {
            let key = live_key(approval);
            if t.live.contains_key(&key) {
                return Err(StoreError::conflict("approval_live_binding"));
            }
            t.live.insert(key, approval.id.clone());
        }
        t.holds.insert(approval.id.clone(), approval.clone());
        Ok(())
    }

    async fn get_approval(&self, zone_id: &str, id: &str) -> StoreResult<Option<Approval>> {
        Ok(lock(&self.inner.approvals)
            .holds
            .get(id)
            .filter(|a| a.zone_id == zone_id)
            .cloned())
    }

    async fn find_live_approval(
        &self,
        zone_id: &str,
        principal_id: &str,
        session_id: &str,
        binding: &str,
    ) -> StoreResult<Option<Approval>> {
        let t = lock(&self.inner.approvals);
        let key = (
            zone_id.to_owned(),
            principal_id.to_owned(),
            session_id.to_owned(),
            binding.to_owned(),
        );
        Ok(t.live.get(&key).and_then(|id| t.holds.get(id)).cloned())
    }

    async fn list_approvals(
        &self,
        zone_id: &str,
        state: Option<ApprovalState>,
        now: DateTime<Utc>,
        page: &PageRequest,
    ) -> StoreResult<Page<Approval>> {
        let t = lock(&self.inner.approvals);
        keyset_page(
            t.holds
                .values()
                .filter(|a| a.zone_id == zone_id && state.is_none_or(|s| a.state(now) == s)),
            page,
        )
    }

    async fn decide_approval(
        &self,
        zone_id: &str,
        id: &str,
        decision: &ApprovalDecision,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalUpdate> {
        // Check and change happen under one lock: the single conditional update.
        let mut t = lock(&self.inner.approvals);
        let Some(hold) = t.holds.get_mut(id).filter(|a| a.zone_id == zone_id) else {
            return Err(StoreError::not_found("approval"));
        };
        let state = hold.state(now);
        if state != ApprovalState::Pending {
            return Ok(ApprovalUpdate::NotAllowed(state));
        }
        if decision.approve {
            hold.satisfied_at = Some(now);
        } else {
            hold.rejected_at = Some(now);
        }
        hold.decision_reason.clone_from(&decision.reason);
        hold.approver_subject_id = Some(decision.approver_subject_id.clone());
        hold.approver_session_id
            .clone_from(&decision.approver_session_id);
        Ok(ApprovalUpdate::Applied(hold.clone()))
    }

    async fn consume_approval(
        &self,
        zone_id: &str,
        id: &str,
        authority_record_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalUpdate> {
        let mut t = lock(&self.inner.approvals);
        let Some(hold) = t.holds.get_mut(id).filter(|a| a.zone_id == zone_id) else {
            return Err(StoreError::not_found("approval"));
        };
        let state = hold.state(now);
        if state != ApprovalState::Approved {
            return Ok(ApprovalUpdate::NotAllowed(state));
        }
        hold.consumed_at = Some(now);
        hold.consumed_authority_record_id = Some(authority_record_id.to_owned());
        let updated = hold.clone();
        let key = live_key(&updated);
        if t.live.get(&key) == Some(&updated.id) {
            t.live.remove(&key);
        }
        Ok(ApprovalUpdate::Applied(updated))
    }

    async fn issue_approval(
        &self,
        approval: &Approval,
        now: DateTime<Utc>,
    ) -> StoreResult<IssuedApproval> {
        let mut t = lock(&self.inner.approvals);
        let key = live_key(approval);
        if let Some(live_id) = t.live.get(&key).cloned() {
            match t.holds.get(&live_id) {
                // An expired unconsumed hold is dropped so a fresh one can be raised.
                Some(live) if live.expires_at <= now => {
                    t.holds.remove(&live_id);
                    t.live.remove(&key);
                }
                Some(live) => {
                    return Ok(IssuedApproval {
                        approval: live.clone(),
                        created: false,
                    });
                }
                None => {
                    t.live.remove(&key);
                }
            }
        }
        if t.holds.contains_key(&approval.id) {
            return Err(StoreError::conflict("approval_id"));
        }
        if approval.consumed_at.is_none() {
            t.live.insert(key, approval.id.clone());
        }
        t.holds.insert(approval.id.clone(), approval.clone());
        Ok(IssuedApproval {
            approval: approval.clone(),
            created: true,
        })
    }

    async fn get_approval_any_zone(&self, id: &str) -> StoreResult<Option<Approval>> {
        Ok(lock(&self.inner.approvals).holds.get(id).cloned())
    }

    async fn consume_into(
        &self,
        zone_id: &str,
        id: &str,
        record: &AuthorityRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalUpdate> {
        if record.zone_id != zone_id {
            return Err(StoreError::Invalid(
                "the consuming authority record belongs to another zone".to_owned(),
            ));
        }
        // Lock order: authority, then approvals. Both are held for the check and the two
        // writes, so the pair is one atomic step.
        let mut records = lock(&self.inner.authority);
        let mut t = lock(&self.inner.approvals);
        let Some(hold) = t.holds.get(id).filter(|a| a.zone_id == zone_id) else {
            return Err(StoreError::not_found("approval"));
        };
        let state = hold.state(now);
        let decided = hold.approver_subject_id.is_some();
        let record_live = hold.session_id.is_empty()
            || records
                .get(zone_id, &hold.session_id)
                .is_some_and(|r| r.is_live(now));
        if state != ApprovalState::Approved || !decided || !record_live {
            return Ok(ApprovalUpdate::NotAllowed(state));
        }
        records.insert(record)?;
        let Some(hold) = t.holds.get_mut(id) else {
            return Err(StoreError::not_found("approval"));
        };
        hold.consumed_at = Some(now);
        hold.consumed_authority_record_id = Some(record.id.clone());
        let updated = hold.clone();
        let key = live_key(&updated);
        if t.live.get(&key) == Some(&updated.id) {
            t.live.remove(&key);
        }
        Ok(ApprovalUpdate::Applied(updated))
    }
}
