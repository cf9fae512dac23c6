//! Sessions: start (task TTL / service lease), authority inheritance, lease and heartbeat
//! with generation fencing, suspend / resume / terminate of a subtree (reference
//! `control-plane.md` §1.5, §2; `http-bodies.md` §11.2).
//!
//! ## Check order of a start (http-bodies §11.2)
//!
//! body (`invalid_body`) → `subject_session_id_required` → `application_ownership_required`
//! → `application_not_found` → DCR lifecycle / parent → subject record (`session_not_found`)
//! → zone capacity → DCR already bound → application capacity → `parent_not_found` → DCR
//! parent → `task_session_cannot_start_service` → `parent_ownership_required` → children →
//! depth → inheritance. Capacity and parent checks run inside the zone's unit of work, so
//! count-then-insert cannot race another start.
//!
//! ## Revocation messages (sts.md §6.2)
//!
//! A session leaving `active` gets one `caracal.sessions.revoke` message naming
//! `agent_session_id` and, unless suppressed, `session_id` = its subject authority record.
//! The record anchor is suppressed (§1.5) when the record is application-typed (a
//! re-mintable bootstrap record: revoking it at the STS would break unrelated work) or when
//! a session outside the cascade still holds it while active or suspended.
//!
//! ## Decision: lease / heartbeat caller check before the state checks
//!
//! The reference lists the `401 authority_record_required` / `identity_revoked` answers last;
//! here the caller's bearer record is checked right after ownership, so that a caller without
//! a valid application record can never trigger the suspend / terminate cascades that an
//! expired lease or an inactive subject cause.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{CoordinatorError, CoordinatorResult};
use super::events::{self, EdgeEvent, LifecycleEvent};
use super::idempotency::{Idempotency, Idempotent, Lookup, lookup, record};
use super::{CAP_SPAWN_FOR, CAP_SPAWN_UNDER, Caller, Coordinator, Limits};
use crate::model::application::RegistrationMethod;
use crate::model::authority::{AuthorityRecord, SubjectType};
use crate::model::delegation::{DelegationEdge, EdgeStatus};
use crate::model::session::{Lifecycle, Session, SessionStatus};
use crate::store::StoreResult;
use crate::store::coordinator::{CoordinatorTx, IdPage, IdempotentOperation, SessionFilter};

/// Most labels on a session.
pub const MAX_LABELS: usize = 32;
/// Longest label, in characters (after trimming).
pub const MAX_LABEL_CHARS: usize = 64;
/// Largest task TTL.
pub const MAX_TASK_TTL_SECONDS: i64 = 86_400;
/// Termination reason of the descendants of a terminated session.
pub const REASON_PARENT_TERMINATED: &str = "parent_terminated";
/// Termination reason of a subtree whose subject record became inactive.
pub const REASON_SUBJECT_INACTIVE: &str = "subject_authority_inactive";
/// Suspension reason when a service lease expired.
pub const REASON_HEARTBEAT_LOST: &str = "service_heartbeat_lost";

/// Whether a started child inherits its parent's inbound edge (`parent_authority`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ParentAuthority {
    /// Mirror the parent's single live inbound edge received by this application (default).
    #[default]
    Inherit,
    /// Start edge-less.
    None,
}

/// A parsed `POST /zones/{zone}/agents` body (shape checks beyond types are done here).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartSession {
    /// The application the session runs under.
    pub application_id: String,
    /// The subject authority record; defaults to the caller's mandate `sid`.
    pub subject_session_id: Option<String>,
    /// Parent session.
    pub parent_id: Option<String>,
    /// Task (default) or service.
    pub lifecycle: Lifecycle,
    /// Labels (≤32; each trimmed to 1..64 characters).
    pub labels: Vec<String>,
    /// Task TTL (1..86400, default 3600); must be absent for a service session.
    pub ttl_seconds: Option<i64>,
    /// Inheritance mode.
    pub parent_authority: ParentAuthority,
    /// Which parent edge to inherit when several are live.
    pub inherit_parent_edge_id: Option<String>,
    /// Caller metadata.
    pub metadata: Map<String, Value>,
}

/// A started session and the inherited edge, if any (`delegation_edge_id` on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct StartedSession {
    /// The stored row.
    pub session: Session,
    /// The mirrored edge parent → child, when one was inherited.
    pub delegation_edge_id: Option<String>,
    /// The graph epoch after the inheritance (only when an edge was created).
    pub epoch: Option<i64>,
}

/// Renders the 201 body of a started session for its idempotency receipt (the route's
/// serialiser, so a replay is byte-identical to the first answer).
pub type RenderSession = dyn Fn(&StartedSession) -> String + Send + Sync;

/// `{status, heartbeat_deadline_at, lease_generation}` of a new lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseOutcome {
    /// The session's status (`active`).
    pub status: SessionStatus,
    /// The renewed deadline.
    pub heartbeat_deadline_at: DateTime<Utc>,
    /// The new fencing generation.
    pub lease_generation: i64,
}

/// The session after an accepted heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatOutcome {
    /// The stored row with its renewed deadline.
    pub session: Session,
}

/// Body rules of a start: the TTL (task only, 1..86400, default from `limits`) and the
/// labels (≤32, trimmed, 1..64 characters). Returns `(ttl_seconds, labels)`.
pub fn check_start_body(
    req: &StartSession,
    limits: &Limits,
) -> CoordinatorResult<(Option<i64>, Vec<String>)> {
    let ttl = match (req.lifecycle, req.ttl_seconds) {
        (Lifecycle::Service, Some(_)) => {
            return Err(CoordinatorError::InvalidBody {
                field: "ttl_seconds",
                message: "ttl_seconds is not allowed for service sessions",
            });
        }
        (Lifecycle::Service, None) => None,
        (Lifecycle::Task, Some(t)) if !(1..=MAX_TASK_TTL_SECONDS).contains(&t) => {
            return Err(CoordinatorError::InvalidBody {
                field: "ttl_seconds",
                message: "ttl_seconds must be between 1 and 86400",
            });
        }
        (Lifecycle::Task, Some(t)) => Some(t),
        (Lifecycle::Task, None) => Some(limits.default_task_ttl_seconds),
    };
    if req.labels.len() > MAX_LABELS {
        return Err(CoordinatorError::InvalidBody {
            field: "labels",
            message: "at most 32 labels",
        });
    }
    let mut labels = Vec::with_capacity(req.labels.len());
    for l in &req.labels {
        let t = l.trim();
        let n = t.chars().count();
        if n == 0 || n > MAX_LABEL_CHARS {
            return Err(CoordinatorError::InvalidBody {
                field: "labels",
                message: "each label must be 1..64 characters",
            });
        }
        labels.push(t.to_owned());
    }
    Ok((ttl, labels))
}

/// Parent rules of a start (§1.5), in the reference order: the parent is live, is not a DCR
/// application's session, is not a task parent of a service child, is owned (or the caller
/// holds `coordinator.spawn_under:<parentApp>`), has a free child slot, and the child depth
/// stays within the limit. Returns the child's depth.
#[allow(clippy::too_many_arguments)]
pub fn check_parent(
    parent: Option<&Session>,
    parent_is_dcr: bool,
    child_lifecycle: Lifecycle,
    child_application_id: &str,
    caller: &Caller,
    live_children: usize,
    limits: &Limits,
    now: DateTime<Utc>,
) -> CoordinatorResult<i32> {
    let parent = match parent {
        Some(p) if p.is_live(now) => p,
        _ => return Err(CoordinatorError::ParentNotFound),
    };
    if parent_is_dcr {
        return Err(CoordinatorError::DcrApplicationCannotStartChild);
    }
    if parent.lifecycle == Lifecycle::Task && child_lifecycle == Lifecycle::Service {
        return Err(CoordinatorError::TaskSessionCannotStartService);
    }
    if parent.application_id != child_application_id
        && !caller.owns_or(&parent.application_id, CAP_SPAWN_UNDER)
    {
        return Err(CoordinatorError::ParentOwnershipRequired);
    }
    let max_children = usize::try_from(parent.max_children.min(limits.max_children)).unwrap_or(0);
    if live_children >= max_children {
        return Err(CoordinatorError::SessionChildrenLimitExceeded);
    }
    let depth = parent.depth.saturating_add(1);
    if depth > limits.max_depth {
        return Err(CoordinatorError::SessionDepthLimitExceeded);
    }
    Ok(depth)
}

/// Which of the parent's inbound edges a child inherits (§1.5): only edges *received by the
/// child's application* count. None ever → `Ok(None)` (edge-less child); exactly one live →
/// it; an explicit `inherit_parent_edge_id` → it, if live; edges exist but none live (or
/// the named one is not live) → `inherit_parent_edge_not_active`; several live and none
/// named → `inherit_parent_edge_ambiguous`.
pub fn choose_inherited_edge<'a>(
    parent_inbound: &'a [DelegationEdge],
    child_application_id: &str,
    explicit: Option<&str>,
    now: DateTime<Utc>,
) -> CoordinatorResult<Option<&'a DelegationEdge>> {
    let received: Vec<&DelegationEdge> = parent_inbound
        .iter()
        .filter(|e| e.receiver_application_id == child_application_id)
        .collect();
    if received.is_empty() {
        return Ok(None);
    }
    let live: Vec<&DelegationEdge> = received.into_iter().filter(|e| e.is_live(now)).collect();
    if let Some(id) = explicit {
        return live
            .into_iter()
            .find(|e| e.id == id)
            .map(Some)
            .ok_or(CoordinatorError::InheritParentEdgeNotActive);
    }
    match live.as_slice() {
        [] => Err(CoordinatorError::InheritParentEdgeNotActive),
        [one] => Ok(Some(one)),
        _ => Err(CoordinatorError::InheritParentEdgeAmbiguous),
    }
}

/// Whether a subject record keeps a session usable (§1.5): a user-typed record must be live;
/// an application-typed one is the application's own identity and is checked by the auth
/// layer. A missing record is inactive (fail closed).
pub fn subject_is_active(record: Option<&AuthorityRecord>, now: DateTime<Utc>) -> bool {
    match record {
        None => false,
        Some(r) if r.session_type == SubjectType::User => r.is_live(now),
        Some(_) => true,
    }
}

/// The state rules of `POST …/lease` (§1.5, http-bodies §11.2 order): service only; not
/// suspended; active; subject active (else the subtree is terminated); lease not expired
/// (else the subtree is suspended).
pub fn check_lease(
    session: &Session,
    subject_active: bool,
    now: DateTime<Utc>,
) -> CoordinatorResult<()> {
    if session.lifecycle != Lifecycle::Service {
        return Err(CoordinatorError::SessionNotService);
    }
    if session.status == SessionStatus::Suspended {
        return Err(CoordinatorError::SessionSuspended);
    }
    if session.status != SessionStatus::Active {
        return Err(CoordinatorError::SessionNotLive);
    }
    if !subject_active {
        return Err(CoordinatorError::SessionSubjectInactive);
    }
    if session.heartbeat_deadline_at.is_none_or(|d| d <= now) {
        return Err(CoordinatorError::SessionLeaseExpired);
    }
    Ok(())
}

/// The rules of `POST …/heartbeat` (http-bodies §11.2 order): active; service; subject
/// active; the presented generation is the current one (fencing); lease not expired.
pub fn check_heartbeat(
    session: &Session,
    subject_active: bool,
    lease_generation: i64,
    now: DateTime<Utc>,
) -> CoordinatorResult<()> {
    if session.status != SessionStatus::Active {
        return Err(CoordinatorError::SessionNotLive);
    }
    if session.lifecycle != Lifecycle::Service {
        return Err(CoordinatorError::SessionNotService);
    }
    if !subject_active {
        return Err(CoordinatorError::SessionSubjectInactive);
    }
    if lease_generation != session.lease_generation {
        return Err(CoordinatorError::SessionLeaseFenced);
    }
    if session.heartbeat_deadline_at.is_none_or(|d| d <= now) {
        return Err(CoordinatorError::SessionLeaseExpired);
    }
    Ok(())
}

/// The fencing rule of a terminate (§1.5): a service session needs the current
/// `lease_generation` unless the caller is an admin.
pub fn check_terminate(
    session: &Session,
    caller: &Caller,
    lease_generation: Option<i64>,
) -> CoordinatorResult<()> {
    if session.lifecycle != Lifecycle::Service || caller.is_admin() {
        return Ok(());
    }
    match lease_generation {
        None => Err(CoordinatorError::LeaseGenerationRequired),
        Some(g) if g != session.lease_generation => Err(CoordinatorError::SessionLeaseFenced),
        Some(_) => Ok(()),
    }
}

/// The sessions of the subtree rooted at `root`, root first (breadth first), every status.
/// A visited set bounds the walk even on a corrupt parent cycle.
pub(crate) async fn subtree(
    tx: &mut dyn CoordinatorTx,
    root: &Session,
) -> StoreResult<Vec<Session>> {
    let mut out = vec![root.clone()];
    let mut seen: HashSet<String> = HashSet::from([root.agent_session_id.clone()]);
    let mut queue: VecDeque<String> = VecDeque::from([root.agent_session_id.clone()]);
    while let Some(id) = queue.pop_front() {
        for child in tx.children(&id).await? {
            if seen.insert(child.agent_session_id.clone()) {
                queue.push_back(child.agent_session_id.clone());
                out.push(child);
            }
        }
    }
    Ok(out)
}

/// What a cascade changed inside a unit of work.
#[derive(Debug, Default)]
pub(crate) struct Cascade {
    /// Sessions that moved to a terminal status here.
    pub terminated: Vec<Session>,
    /// Edges revoked here (ids in revocation order).
    pub revoked: Vec<DelegationEdge>,
}

/// Revoke `seeds` (if still active) and every active edge below them through
/// `parent_edge_id`, so no edge stays active under a revoked one. Appends to `out`.
pub(crate) async fn revoke_edge_closure(
    tx: &mut dyn CoordinatorTx,
    seeds: Vec<DelegationEdge>,
    now: DateTime<Utc>,
    out: &mut Vec<DelegationEdge>,
) -> StoreResult<()> {
    let mut done: HashSet<String> = out.iter().map(|e| e.id.clone()).collect();
    let mut queue: VecDeque<DelegationEdge> = seeds.into();
    let mut all_active: Option<Vec<DelegationEdge>> = None;
    while let Some(mut edge) = queue.pop_front() {
        if edge.status != EdgeStatus::Active || !done.insert(edge.id.clone()) {
            continue;
        }
        edge.status = EdgeStatus::Revoked;
        edge.revoked_at = Some(now);
        edge.edge_version = edge.edge_version.saturating_add(1);
        tx.update_edge(&edge).await?;
        // Children by parent_edge_id among the zone's live edges.
        if all_active.is_none() {
            all_active = Some(active_edges(tx, now).await?);
        }
        if let Some(all) = &all_active {
            queue.extend(
                all.iter()
                    .filter(|c| c.parent_edge_id.as_deref() == Some(edge.id.as_str()))
                    .cloned(),
            );
        }
        out.push(edge);
    }
    Ok(())
}

/// The edges a revocation closure walks: the zone's live edges (an expired edge carries no
/// authority, and the retention sweeper flips it).
async fn active_edges(
    tx: &mut dyn CoordinatorTx,
    now: DateTime<Utc>,
) -> StoreResult<Vec<DelegationEdge>> {
    tx.live_edges(now).await
}

/// Terminate every non-terminal session of `sessions` (a subtree, root first): the root gets
/// `root_status` / `root_reason`, the others `child_reason`. Every active edge touching a
/// terminated session is revoked, with its downstream closure. The root's parent loses a
/// child (`child_count`, never below 0).
pub(crate) async fn terminate_sessions(
    tx: &mut dyn CoordinatorTx,
    sessions: Vec<Session>,
    root_status: SessionStatus,
    root_reason: &str,
    child_reason: &str,
    now: DateTime<Utc>,
    cascade: &mut Cascade,
) -> StoreResult<()> {
    let ids: HashSet<String> = sessions
        .iter()
        .map(|s| s.agent_session_id.clone())
        .collect();
    let root_parent = sessions.first().and_then(|r| {
        (!r.status.is_terminal())
            .then(|| r.parent_id.clone())
            .flatten()
            .filter(|p| !ids.contains(p))
    });
    let mut touching: Vec<DelegationEdge> = Vec::new();
    for (i, mut s) in sessions.into_iter().enumerate() {
        if s.status.is_terminal() {
            continue;
        }
        let (status, reason) = if i == 0 {
            (root_status, root_reason)
        } else {
            (SessionStatus::Terminated, child_reason)
        };
        s.status = status;
        s.terminated_at = Some(now);
        s.termination_reason = Some(reason.to_owned());
        tx.update_session(&s).await?;
        for inbound in [true, false] {
            touching.extend(
                tx.session_edges(&s.agent_session_id, inbound)
                    .await?
                    .into_iter()
                    .filter(|e| e.status == EdgeStatus::Active),
            );
        }
        cascade.terminated.push(s);
    }
    if let Some(pid) = root_parent {
        if let Some(mut p) = tx.get_session(&pid).await? {
            p.child_count = p.child_count.saturating_sub(1).max(0);
            tx.update_session(&p).await?;
        }
    }
    revoke_edge_closure(tx, touching, now, &mut cascade.revoked).await
}

impl Coordinator {
    /// `POST /zones/{zone}/agents` (§1.5): start a task or service session, optionally as a
    /// child, inheriting the parent's edge when asked. Writes the session, the parent's child
    /// count, the mirrored edge with an epoch bump, the `spawn` lifecycle event and the
    /// `edge_create` invalidation in one unit of work.
    pub async fn start_session(
        &self,
        zone_id: &str,
        caller: &Caller,
        req: &StartSession,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<StartedSession> {
        match self
            .start_session_idempotent(zone_id, caller, req, None, now)
            .await?
        {
            Idempotent::Fresh(s) => Ok(s),
            // Only a request with a key can replay.
            Idempotent::Replayed { .. } => Err(CoordinatorError::IdempotencyKeyConflict),
        }
    }

    /// [`Self::start_session`] under an `Idempotency-Key` (§2.1): `idem` carries the key, the
    /// normalised request and `render`, which builds the 201 body stored in the receipt.
    /// A replay answers the stored body while the recorded session is live.
    pub async fn start_session_idempotent(
        &self,
        zone_id: &str,
        caller: &Caller,
        req: &StartSession,
        idem: Option<(&Idempotency<'_>, &RenderSession)>,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<Idempotent<StartedSession>> {
        let (ttl_seconds, labels) = check_start_body(req, &self.limits)?;
        let subject = req
            .subject_session_id
            .clone()
            .or_else(|| caller.sid.clone())
            .ok_or(CoordinatorError::SubjectSessionIdRequired)?;
        if !caller.owns_or(&req.application_id, CAP_SPAWN_FOR) {
            return Err(CoordinatorError::ApplicationOwnershipRequired);
        }
        let app = self
            .applications
            .get_application(zone_id, &req.application_id)
            .await?
            .filter(|a| a.is_live(now))
            .ok_or(CoordinatorError::ApplicationNotFound)?;
        let dcr = app.registration_method == RegistrationMethod::Dcr;
        if dcr && req.lifecycle == Lifecycle::Service {
            return Err(CoordinatorError::DcrApplicationCannotHostService);
        }
        if dcr && req.parent_id.is_some() {
            return Err(CoordinatorError::DcrApplicationCannotBeChild);
        }
        self.authority
            .get_authority(zone_id, &subject)
            .await?
            .filter(|r| r.is_live(now))
            .ok_or(CoordinatorError::SubjectRecordNotFound)?;

        let mut tx = self.store.begin(zone_id).await?;
        if let Some((i, _)) = idem {
            let op = IdempotentOperation::SessionStart;
            if let Lookup::Hit(r) = lookup(tx.as_mut(), op, &app.id, i, now).await? {
                let live = tx
                    .get_session(&r.result_id)
                    .await?
                    .is_some_and(|s| s.is_live(now));
                if !live {
                    return Err(CoordinatorError::IdempotencyResultInactive);
                }
                return Ok(Idempotent::Replayed {
                    status: r.response_status,
                    body: r.response_json,
                });
            }
        }
        if tx.count_live_sessions(None, now).await? >= self.limits.sessions_per_zone {
            return Err(CoordinatorError::SessionZoneLimitExceeded);
        }
        let app_live = tx.count_live_sessions(Some(&app.id), now).await?;
        if dcr && app_live > 0 {
            return Err(CoordinatorError::DcrApplicationAlreadyBound);
        }
        if app_live >= self.limits.sessions_per_application {
            return Err(CoordinatorError::SessionLimitExceeded);
        }
        let mut depth = 0;
        let mut parent: Option<Session> = None;
        if let Some(pid) = &req.parent_id {
            let p = tx.get_session(pid).await?;
            let parent_is_dcr = match &p {
                Some(p) if p.is_live(now) => self
                    .applications
                    .get_application(zone_id, &p.application_id)
                    .await?
                    .is_none_or(|a| a.registration_method == RegistrationMethod::Dcr),
                _ => false,
            };
            let live_children = tx
                .children(pid)
                .await?
                .iter()
                .filter(|c| c.holds_slot(now))
                .count();
            depth = check_parent(
                p.as_ref(),
                parent_is_dcr,
                req.lifecycle,
                &req.application_id,
                caller,
                live_children,
                &self.limits,
                now,
            )?;
            parent = p;
        }
        let inherited = match (&parent, req.parent_authority) {
            (Some(p), ParentAuthority::Inherit) => {
                let inbound = tx.session_edges(&p.agent_session_id, true).await?;
                choose_inherited_edge(
                    &inbound,
                    &req.application_id,
                    req.inherit_parent_edge_id.as_deref(),
                    now,
                )?
                .cloned()
            }
            _ => None,
        };

        let (lease_generation, deadline) = match req.lifecycle {
            Lifecycle::Service => (1, Some(now + self.limits.lease)),
            Lifecycle::Task => (0, None),
        };
        let session = Session {
            agent_session_id: self.ids.next_id(),
            zone_id: zone_id.to_owned(),
            application_id: req.application_id.clone(),
            parent_id: req.parent_id.clone(),
            subject_authority_record_id: subject,
            lifecycle: req.lifecycle,
            labels,
            status: SessionStatus::Active,
            depth,
            ttl_seconds,
            metadata: req.metadata.clone(),
            started_at: now,
            terminated_at: None,
            termination_reason: None,
            last_heartbeat_at: None,
            heartbeat_deadline_at: deadline,
            lease_generation,
            child_count: 0,
            max_children: self.limits.max_children,
        };
        tx.insert_session(&session).await?;
        if let Some(mut p) = parent {
            p.child_count = p.child_count.saturating_add(1);
            tx.update_session(&p).await?;
        }
        let mut edge_id = None;
        let mut epoch = None;
        if let Some(src) = inherited {
            // A mirror of the parent's edge, one hop further down its lineage.
            let edge = DelegationEdge {
                id: self.ids.next_id(),
                zone_id: zone_id.to_owned(),
                source_session_id: src.target_session_id.clone(),
                target_session_id: session.agent_session_id.clone(),
                issuer_application_id: src.receiver_application_id.clone(),
                receiver_application_id: session.application_id.clone(),
                parent_edge_id: Some(src.id.clone()),
                resource_id: src.resource_id.clone(),
                scopes: src.scopes.clone(),
                constraints_json: src.constraints_json.clone(),
                status: EdgeStatus::Active,
                expires_at: src.expires_at,
                edge_version: 0,
                revoked_at: None,
                created_at: now,
            };
            tx.insert_edge(&edge).await?;
            let e = tx.bump_epoch().await?;
            tx.enqueue(&events::invalidate(
                EdgeEvent::Create,
                &edge,
                e,
                std::slice::from_ref(&edge.id),
                "inherit",
            ))
            .await?;
            edge_id = Some(edge.id);
            epoch = Some(e);
        }
        tx.enqueue(&events::lifecycle(
            LifecycleEvent::Spawn,
            &session,
            "spawn",
            now,
        ))
        .await?;
        let started = StartedSession {
            session,
            delegation_edge_id: edge_id,
            epoch,
        };
        if let Some((i, render)) = idem {
            let body = render(&started);
            let op = IdempotentOperation::SessionStart;
            let id = started.session.agent_session_id.clone();
            record(tx.as_mut(), op, &app.id, i, &id, 201, body, now).await?;
        }
        tx.commit().await?;
        Ok(Idempotent::Fresh(started))
    }

    /// A session the caller may act on: `404 session_not_found` when missing, `403
    /// application_ownership_required` when the caller neither owns its application nor
    /// holds `coordinator.spawn_for:<app>` / admin.
    async fn owned_session(
        tx: &mut dyn CoordinatorTx,
        caller: &Caller,
        id: &str,
    ) -> CoordinatorResult<Session> {
        let s = tx
            .get_session(id)
            .await?
            .ok_or(CoordinatorError::SessionNotFound)?;
        if !caller.owns_or(&s.application_id, CAP_SPAWN_FOR) {
            return Err(CoordinatorError::ApplicationOwnershipRequired);
        }
        Ok(s)
    }

    /// `PATCH …/agents/{id}/suspend` (§1.5): the session and every active descendant become
    /// `suspended`; one `suspend` lifecycle event and one revocation message each. Returns
    /// how many were suspended. `reason` is `suspended` for an operator / owner request and
    /// [`REASON_HEARTBEAT_LOST`] for the lease rules.
    pub async fn suspend(
        &self,
        zone_id: &str,
        caller: &Caller,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<usize> {
        let mut tx = self.store.begin(zone_id).await?;
        let root = Self::owned_session(tx.as_mut(), caller, id).await?;
        if root.status != SessionStatus::Active {
            return Err(CoordinatorError::SessionNotFoundOrNotActive);
        }
        let n = self.suspend_in(tx.as_mut(), &root, reason, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Suspend `root`'s active subtree inside `tx` and enqueue its events (the path of
    /// [`Self::suspend`], also run by the lease sweeper of [`crate::jobs`]).
    pub(crate) async fn suspend_in(
        &self,
        tx: &mut dyn CoordinatorTx,
        root: &Session,
        reason: &str,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<usize> {
        let mut changed = Vec::new();
        for mut s in subtree(tx, root).await? {
            if s.status != SessionStatus::Active {
                continue;
            }
            s.status = SessionStatus::Suspended;
            tx.update_session(&s).await?;
            changed.push(s);
        }
        self.announce(tx, &changed, LifecycleEvent::Suspend, reason, None, now)
            .await?;
        Ok(changed.len())
    }

    /// `PATCH …/agents/{id}/resume` (§1.5): the session and every suspended descendant become
    /// `active`; service sessions get a fresh lease deadline (same generation). Returns how
    /// many resumed.
    pub async fn resume(
        &self,
        zone_id: &str,
        caller: &Caller,
        id: &str,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<usize> {
        let mut tx = self.store.begin(zone_id).await?;
        let root = Self::owned_session(tx.as_mut(), caller, id).await?;
        if root.status != SessionStatus::Suspended {
            return Err(CoordinatorError::SessionNotFoundOrNotSuspended);
        }
        let mut n = 0;
        for mut s in subtree(tx.as_mut(), &root).await? {
            if s.status != SessionStatus::Suspended {
                continue;
            }
            s.status = SessionStatus::Active;
            if s.lifecycle == Lifecycle::Service {
                s.heartbeat_deadline_at = Some(now + self.limits.lease);
            }
            tx.update_session(&s).await?;
            tx.enqueue(&events::lifecycle(
                LifecycleEvent::Resume,
                &s,
                "resumed",
                now,
            ))
            .await?;
            n += 1;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// `DELETE …/agents/{id}` (§1.5): the session becomes `terminated` (`reason`, default
    /// `requested`), its descendants `terminated` with `parent_terminated`, every active
    /// edge touching any of them is revoked (one epoch bump, one `edge_revoke`), the
    /// parent's child count drops. A terminal or missing session is `404 session_not_found`.
    /// Returns the ids terminated.
    pub async fn terminate(
        &self,
        zone_id: &str,
        caller: &Caller,
        id: &str,
        reason: &str,
        lease_generation: Option<i64>,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<Vec<String>> {
        let mut tx = self.store.begin(zone_id).await?;
        let root = Self::owned_session(tx.as_mut(), caller, id).await?;
        if root.status.is_terminal() {
            return Err(CoordinatorError::SessionNotFound);
        }
        check_terminate(&root, caller, lease_generation)?;
        let ids = self
            .terminate_in(
                tx.as_mut(),
                &root,
                SessionStatus::Terminated,
                reason,
                REASON_PARENT_TERMINATED,
                None,
                now,
            )
            .await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Terminate `root`'s subtree inside `tx` and enqueue everything it implies.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn terminate_in(
        &self,
        tx: &mut dyn CoordinatorTx,
        root: &Session,
        root_status: SessionStatus,
        root_reason: &str,
        child_reason: &str,
        delegation_edge_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<Vec<String>> {
        let sessions = subtree(tx, root).await?;
        let mut cascade = Cascade::default();
        terminate_sessions(
            tx,
            sessions,
            root_status,
            root_reason,
            child_reason,
            now,
            &mut cascade,
        )
        .await?;
        let (ids, _) = self
            .finish_cascade(tx, cascade, root_reason, delegation_edge_id, now)
            .await?;
        Ok(ids)
    }

    /// Enqueue the events of a cascade: per terminated session a `terminate` lifecycle event
    /// and a revocation message; if edges were revoked, one epoch bump and one `edge_revoke`.
    /// Returns the terminated ids and the new epoch (when edges were revoked).
    pub(crate) async fn finish_cascade(
        &self,
        tx: &mut dyn CoordinatorTx,
        cascade: Cascade,
        reason: &str,
        delegation_edge_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<(Vec<String>, Option<i64>)> {
        self.announce(
            tx,
            &cascade.terminated,
            LifecycleEvent::Terminate,
            reason,
            delegation_edge_id,
            now,
        )
        .await?;
        let mut epoch = None;
        if let Some(first) = cascade.revoked.first() {
            let e = tx.bump_epoch().await?;
            epoch = Some(e);
            let ids: Vec<String> = cascade.revoked.iter().map(|e| e.id.clone()).collect();
            tx.enqueue(&events::invalidate(
                EdgeEvent::Revoke,
                first,
                e,
                &ids,
                reason,
            ))
            .await?;
        }
        let ids = cascade
            .terminated
            .into_iter()
            .map(|s| s.agent_session_id)
            .collect();
        Ok((ids, epoch))
    }

    /// One lifecycle event and one revocation message per session in `sessions`.
    async fn announce(
        &self,
        tx: &mut dyn CoordinatorTx,
        sessions: &[Session],
        event: LifecycleEvent,
        reason: &str,
        delegation_edge_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let revocable = self.revocable_records(tx.zone_id(), sessions).await?;
        for s in sessions {
            tx.enqueue(&events::lifecycle(event, s, reason, now))
                .await?;
            let with_record = revocable.contains(&s.subject_authority_record_id);
            tx.enqueue(&events::revocation(
                s,
                with_record,
                delegation_edge_id,
                reason,
                now,
            ))
            .await?;
        }
        Ok(())
    }

    /// The subject records of `leaving` whose `session_id` anchor may be published: user
    /// records no other active or suspended session of the zone still holds (§1.5
    /// suppression rules). A missing record is published (revoking more is the safe side).
    async fn revocable_records(
        &self,
        zone_id: &str,
        leaving: &[Session],
    ) -> CoordinatorResult<BTreeSet<String>> {
        let leaving_ids: HashSet<&str> = leaving
            .iter()
            .map(|s| s.agent_session_id.as_str())
            .collect();
        let mut candidates = BTreeSet::new();
        for s in leaving {
            let rec = &s.subject_authority_record_id;
            if candidates.contains(rec) {
                continue;
            }
            let record = self.authority.get_authority(zone_id, rec).await?;
            if record.is_none_or(|r| r.session_type == SubjectType::User) {
                candidates.insert(rec.clone());
            }
        }
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let mut holders: BTreeMap<String, usize> = BTreeMap::new();
        for status in [SessionStatus::Active, SessionStatus::Suspended] {
            let filter = SessionFilter {
                status: Some(status),
                ..SessionFilter::default()
            };
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .list_sessions(
                        zone_id,
                        &filter,
                        &IdPage {
                            limit: 500,
                            after_id: after.clone(),
                        },
                    )
                    .await?;
                let last = page.items.last().map(|s| s.agent_session_id.clone());
                for s in &page.items {
                    if !leaving_ids.contains(s.agent_session_id.as_str()) {
                        *holders
                            .entry(s.subject_authority_record_id.clone())
                            .or_default() += 1;
                    }
                }
                if page.next.is_none() || last.is_none() {
                    break;
                }
                after = last;
            }
        }
        candidates.retain(|r| !holders.contains_key(r));
        Ok(candidates)
    }

    /// The caller's bearer record for lease / heartbeat (§1.5): it must be an active
    /// application-typed record whose subject is the session's application.
    async fn check_lease_caller(
        &self,
        zone_id: &str,
        caller: &Caller,
        session: &Session,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<()> {
        let sid = caller
            .sid
            .as_deref()
            .ok_or(CoordinatorError::AuthorityRecordRequired)?;
        let record = self
            .authority
            .get_authority(zone_id, sid)
            .await?
            .ok_or(CoordinatorError::AuthorityRecordRequired)?;
        if record.session_type != SubjectType::Application
            || record.subject_id != session.application_id
        {
            return Err(CoordinatorError::AuthorityRecordRequired);
        }
        if !record.is_live(now) {
            return Err(CoordinatorError::IdentityRevoked);
        }
        Ok(())
    }

    /// Apply the cascade a lease / heartbeat refusal implies, commit it, and return the
    /// refusal: an inactive subject terminates the subtree, an expired lease suspends it.
    async fn refuse_with_cascade(
        &self,
        mut tx: Box<dyn CoordinatorTx>,
        session: &Session,
        err: CoordinatorError,
        now: DateTime<Utc>,
    ) -> CoordinatorError {
        let applied = match err {
            CoordinatorError::SessionSubjectInactive => self
                .terminate_in(
                    tx.as_mut(),
                    session,
                    SessionStatus::Terminated,
                    REASON_SUBJECT_INACTIVE,
                    REASON_SUBJECT_INACTIVE,
                    None,
                    now,
                )
                .await
                .map(|_| ()),
            CoordinatorError::SessionLeaseExpired => self
                .suspend_in(tx.as_mut(), session, REASON_HEARTBEAT_LOST, now)
                .await
                .map(|_| ()),
            other => return other,
        };
        match applied {
            Ok(()) => match tx.commit().await {
                Ok(()) => err,
                Err(e) => e.into(),
            },
            Err(e) => e,
        }
    }

    /// `POST …/agents/{id}/lease` (§1.5): a new fencing generation and a renewed deadline.
    pub async fn acquire_lease(
        &self,
        zone_id: &str,
        caller: &Caller,
        id: &str,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<LeaseOutcome> {
        let mut tx = self.store.begin(zone_id).await?;
        let mut s = Self::owned_session(tx.as_mut(), caller, id).await?;
        self.check_lease_caller(zone_id, caller, &s, now).await?;
        let record = self
            .authority
            .get_authority(zone_id, &s.subject_authority_record_id)
            .await?;
        if let Err(e) = check_lease(&s, subject_is_active(record.as_ref(), now), now) {
            return Err(self.refuse_with_cascade(tx, &s, e, now).await);
        }
        s.lease_generation = s.lease_generation.saturating_add(1);
        s.heartbeat_deadline_at = Some(now + self.limits.lease);
        tx.update_session(&s).await?;
        tx.commit().await?;
        Ok(LeaseOutcome {
            status: s.status,
            heartbeat_deadline_at: now + self.limits.lease,
            lease_generation: s.lease_generation,
        })
    }

    /// `POST …/agents/{id}/heartbeat` (§1.5): the presented generation must be current;
    /// renews the deadline and records the heartbeat. (The agent-service part of the
    /// reference route is not here.)
    pub async fn heartbeat(
        &self,
        zone_id: &str,
        caller: &Caller,
        id: &str,
        lease_generation: i64,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<HeartbeatOutcome> {
        let mut tx = self.store.begin(zone_id).await?;
        let mut s = Self::owned_session(tx.as_mut(), caller, id).await?;
        self.check_lease_caller(zone_id, caller, &s, now).await?;
        let record = self
            .authority
            .get_authority(zone_id, &s.subject_authority_record_id)
            .await?;
        let active = subject_is_active(record.as_ref(), now);
        if let Err(e) = check_heartbeat(&s, active, lease_generation, now) {
            return Err(self.refuse_with_cascade(tx, &s, e, now).await);
        }
        s.last_heartbeat_at = Some(now);
        s.heartbeat_deadline_at = Some(now + self.limits.lease);
        tx.update_session(&s).await?;
        tx.commit().await?;
        Ok(HeartbeatOutcome { session: s })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-05-21T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn session(lifecycle: Lifecycle) -> Session {
        Session {
            agent_session_id: "s".into(),
            zone_id: "z".into(),
            application_id: "a".into(),
            parent_id: None,
            subject_authority_record_id: "r".into(),
            lifecycle,
            labels: vec![],
            status: SessionStatus::Active,
            depth: 0,
            ttl_seconds: (lifecycle == Lifecycle::Task).then_some(60),
            metadata: Map::new(),
            started_at: t0(),
            terminated_at: None,
            termination_reason: None,
            last_heartbeat_at: None,
            heartbeat_deadline_at: (lifecycle == Lifecycle::Service)
                .then(|| t0() + chrono::Duration::seconds(120)),
            lease_generation: i64::from(lifecycle == Lifecycle::Service),
            child_count: 0,
            max_children: 10,
        }
    }

    #[test]
    fn start_body_rules() {
        let l = Limits::default();
        let mut r = StartSession::default();
        assert_eq!(check_start_body(&r, &l).unwrap(), (Some(3600), vec![]));
        r.labels = vec!["  ops ".into()];
        assert_eq!(check_start_body(&r, &l).unwrap().1, vec!["ops"]);
        r.labels = vec!["   ".into()];
        assert_eq!(check_start_body(&r, &l).unwrap_err().code(), "invalid_body");
        r.labels = vec![];
        r.lifecycle = Lifecycle::Service;
        assert_eq!(check_start_body(&r, &l).unwrap(), (None, vec![]));
        r.ttl_seconds = Some(5);
        assert_eq!(check_start_body(&r, &l).unwrap_err().code(), "invalid_body");
        r.lifecycle = Lifecycle::Task;
        r.ttl_seconds = Some(86_401);
        assert_eq!(check_start_body(&r, &l).unwrap_err().code(), "invalid_body");
    }

    #[test]
    fn lease_and_heartbeat_order() {
        let now = t0();
        let svc = session(Lifecycle::Service);
        assert!(check_lease(&svc, true, now).is_ok());
        assert_eq!(
            check_lease(&session(Lifecycle::Task), true, now)
                .unwrap_err()
                .code(),
            "session_not_service"
        );
        assert_eq!(
            check_lease(&svc, false, now).unwrap_err().code(),
            "session_subject_inactive"
        );
        let late = now + chrono::Duration::seconds(120);
        assert_eq!(
            check_lease(&svc, true, late).unwrap_err().code(),
            "session_lease_expired"
        );
        assert_eq!(
            check_heartbeat(&svc, true, 2, now).unwrap_err().code(),
            "session_lease_fenced"
        );
        // Fencing is checked before expiry.
        assert_eq!(
            check_heartbeat(&svc, true, 2, late).unwrap_err().code(),
            "session_lease_fenced"
        );
        let mut sus = svc.clone();
        sus.status = SessionStatus::Suspended;
        assert_eq!(
            check_lease(&sus, true, now).unwrap_err().code(),
            "session_suspended"
        );
        assert_eq!(
            check_heartbeat(&sus, true, 1, now).unwrap_err().code(),
            "session_not_live"
        );
    }

    #[test]
    fn terminate_fencing() {
        let svc = session(Lifecycle::Service);
        let owner = Caller::application("a", None, Vec::<String>::new());
        assert_eq!(
            check_terminate(&svc, &owner, None).unwrap_err().code(),
            "lease_generation_required"
        );
        assert_eq!(
            check_terminate(&svc, &owner, Some(7)).unwrap_err().code(),
            "session_lease_fenced"
        );
        assert!(check_terminate(&svc, &owner, Some(1)).is_ok());
        assert!(check_terminate(&svc, &Caller::operator(), None).is_ok());
        assert!(check_terminate(&session(Lifecycle::Task), &owner, None).is_ok());
    }

    #[test]
    fn slots_follow_ttl_and_lease() {
        let task = session(Lifecycle::Task);
        assert!(task.holds_slot(t0()));
        assert!(!task.holds_slot(t0() + chrono::Duration::seconds(60)));
        let mut svc = session(Lifecycle::Service);
        let late = t0() + chrono::Duration::seconds(500);
        assert!(!svc.holds_slot(late));
        svc.status = SessionStatus::Suspended;
        assert!(svc.holds_slot(late));
    }
}
