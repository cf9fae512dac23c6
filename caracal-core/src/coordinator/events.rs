//! The outbox messages the Coordinator writes in the same unit of work as its changes
//! (reference `control-plane.md` §2.2, `audit-streams-schema.md` §1, `sts.md` §6.2).
//!
//! Builders only: the orchestration enqueues them through
//! [`crate::store::coordinator::CoordinatorTx::enqueue`], so a message exists iff its change
//! committed. Dedupe keys make a retried unit of work coalesce instead of publishing twice;
//! repeatable transitions (suspend/resume) key on the occurrence instant, as the reference.

use chrono::{DateTime, Utc};

use crate::model::delegation::DelegationEdge;
use crate::model::revocation::RevocationEvent;
use crate::model::session::Session;
use crate::store::outbox::OutboxMessage;
use crate::streams::names::{AGENTS_LIFECYCLE, DELEGATIONS_INVALIDATE, SESSIONS_REVOKE};

/// A lifecycle transition on `caracal.agents.lifecycle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// A session started.
    Spawn,
    /// A session was suspended.
    Suspend,
    /// A session resumed.
    Resume,
    /// A session was terminated or expired.
    Terminate,
}

impl LifecycleEvent {
    /// The wire `event` value.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::Spawn => "spawn",
            LifecycleEvent::Suspend => "suspend",
            LifecycleEvent::Resume => "resume",
            LifecycleEvent::Terminate => "terminate",
        }
    }
}

/// A change on `caracal.delegations.invalidate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeEvent {
    /// An edge was created (or inherited).
    Create,
    /// Edges were revoked.
    Revoke,
    /// Edges reached their expiry and were marked `expired` (the retention cleaner).
    Expire,
}

impl EdgeEvent {
    /// The wire `event` value.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeEvent::Create => "edge_create",
            EdgeEvent::Revoke => "edge_revoke",
            EdgeEvent::Expire => "edge_expire",
        }
    }
}

/// `event`, `zone_id`, `agent_session_id`, `parent_id` (empty for a root), `application_id`,
/// `reason` on `caracal.agents.lifecycle`.
pub fn lifecycle(
    event: LifecycleEvent,
    session: &Session,
    reason: &str,
    at: DateTime<Utc>,
) -> OutboxMessage {
    let fields = vec![
        ("event".to_owned(), event.as_str().to_owned()),
        ("zone_id".to_owned(), session.zone_id.clone()),
        (
            "agent_session_id".to_owned(),
            session.agent_session_id.clone(),
        ),
        (
            "parent_id".to_owned(),
            session.parent_id.clone().unwrap_or_default(),
        ),
        ("application_id".to_owned(), session.application_id.clone()),
        ("reason".to_owned(), reason.to_owned()),
    ];
    let key = match event {
        LifecycleEvent::Spawn | LifecycleEvent::Terminate => {
            format!("{}:{}", event.as_str(), session.agent_session_id)
        }
        LifecycleEvent::Suspend | LifecycleEvent::Resume => format!(
            "{}:{}:{}",
            event.as_str(),
            session.agent_session_id,
            at.timestamp_micros()
        ),
    };
    OutboxMessage::new(AGENTS_LIFECYCLE, fields).dedupe(key)
}

/// A `caracal.sessions.revoke` message for one session: `session_id` = the session's subject
/// authority record when `revoke_record` (see [`crate::coordinator::sessions`] on when it is
/// suppressed), `agent_session_id`, `delegation_edge_id` when a delegation revoke caused it,
/// and `reason`.
pub fn revocation(
    session: &Session,
    revoke_record: bool,
    delegation_edge_id: Option<&str>,
    reason: &str,
    at: DateTime<Utc>,
) -> OutboxMessage {
    let event = RevocationEvent {
        zone_id: session.zone_id.clone(),
        reason: reason.to_owned(),
        session_id: revoke_record.then(|| session.subject_authority_record_id.clone()),
        agent_session_id: Some(session.agent_session_id.clone()),
        delegation_edge_id: delegation_edge_id.map(str::to_owned),
        ..RevocationEvent::default()
    };
    let key = format!(
        "revoke:{}:{}:{}:{}",
        session.agent_session_id,
        delegation_edge_id.unwrap_or("-"),
        reason,
        at.timestamp_micros()
    );
    OutboxMessage::new(SESSIONS_REVOKE, event.to_fields()).dedupe(key)
}

/// A `caracal.delegations.invalidate` message: `event`, `zone_id`, `edge_id` (the edge the
/// operation named), its endpoints, the new `epoch`, `affected_edges` (count), `edge_ids`
/// (JSON array text of every edge changed) and `reason`.
pub fn invalidate(
    event: EdgeEvent,
    edge: &DelegationEdge,
    epoch: i64,
    edge_ids: &[String],
    reason: &str,
) -> OutboxMessage {
    let ids_json = serde_json::to_string(edge_ids).unwrap_or_else(|_| "[]".to_owned());
    let fields = vec![
        ("event".to_owned(), event.as_str().to_owned()),
        ("zone_id".to_owned(), edge.zone_id.clone()),
        ("edge_id".to_owned(), edge.id.clone()),
        (
            "source_session_id".to_owned(),
            edge.source_session_id.clone(),
        ),
        (
            "target_session_id".to_owned(),
            edge.target_session_id.clone(),
        ),
        ("epoch".to_owned(), epoch.to_string()),
        ("affected_edges".to_owned(), edge_ids.len().to_string()),
        ("edge_ids".to_owned(), ids_json),
        ("reason".to_owned(), reason.to_owned()),
    ];
    let key = format!("{}:{}:{}", event.as_str(), edge.id, epoch);
    OutboxMessage::new(DELEGATIONS_INVALIDATE, fields).dedupe(key)
}
