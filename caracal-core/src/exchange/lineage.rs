//! Authority-record, Session and delegation checks at exchange time (reference `sts.md` §6.3,
//! §2.3 steps E and H).
//!
//! Every check here reads authoritative state through the storage traits and compares it with
//! the exchange's trusted `now`; nothing is cached. The rules themselves are pure functions
//! over what was read ([`DelegationConstraints::parse`], the Session activity rule, the chain
//! rebuild), and the store reads are the only I/O.
//!
//! ## Answers
//!
//! - A failed check is `403 access_denied` with the reference's description (the `DENY_*`
//!   constants below). Where the reference names no description, this module names one and
//!   says so on the constant.
//! - A store error on any of these reads is `503 sts_unavailable` "authority state
//!   unavailable" ([`DESC_STATE_UNAVAILABLE`]): the exchange fails closed and never mints, and
//!   the caller can tell an outage from a denial. The store error itself is logged, not
//!   rendered.
//!
//! ## Order (reference §6.3)
//!
//! [`resolve_refs`] applies, in order: an `agent_session_id` alone is the governed Session
//! (exists, active, owned by the caller, bound to the presented session mandate's record);
//! a `delegation_edge_id` needs an `agent_session_id`; the edge must be live; its target must
//! be that Session; its source Session must be active; the target Session must be active,
//! owned and bound; the edge's applications must be the Sessions' applications; the edge's
//! constraints must parse strictly; requested scopes ⊆ edge scopes; an explicit TTL ≤
//! `constraints.ttl_seconds`; `max_hops` ≤ [`MAX_HOPS`]; the lineage walk; the graph epoch;
//! the chain rebuild.
//!
//! ## Decision: multi-application chains
//!
//! The reference's chain endpoint check compares the *root* edge's issuer application with the
//! *leaf* edge's source Session application, so a chain crossing applications
//! (A → B → C) always fails there, while the documentation describes such chains. This port
//! supports them: the first hop's application must equal the root edge's issuer application
//! **and** the application of the root edge's own source Session (read from the store; it need
//! not still be active, since only the leaf's source Session is required active, as in the
//! reference), and the last hop's application must equal the target Session's application.
//! For a single-hop chain this is exactly the reference's check. Continuity between
//! consecutive edges is checked on applications (each edge's issuer application == the
//! previous edge's receiver application, as the reference) and, additionally, on Sessions
//! (each edge's source Session == the previous edge's target Session), which the
//! Coordinator guarantees when it picks a parent among the source Session's inbound edges.
//!
//! ## Hop limits
//!
//! `max_hops` (alias `max_depth`) defaults to 1 when absent or `null`. An explicit `0` is kept
//! as zero, so the lineage walk refuses every path ("delegation path invalid"); the
//! Coordinator never creates such an edge (it accepts 1..10). Values above [`MAX_HOPS`] are
//! refused before the walk, so the walk is bounded by ten store reads.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ExchangeResult;
use crate::api::ApiError;
use crate::mandate::{ChainHop, DelegationLimits, TtlError};
use crate::model::authority::{AuthorityRecord, SubjectType};
use crate::model::delegation::{DelegationEdge, EdgeStatus};
use crate::model::session::{Lifecycle, Session, SessionStatus};
use crate::store::StoreError;
use crate::store::authority::AuthorityStore;
use crate::store::coordinator::CoordinatorStore;

/// Platform maximum hop count: an edge whose `max_hops` is above it is refused, and the
/// lineage walk never reads more edges than this.
pub const MAX_HOPS: u32 = 10;

/// The subject token's or form's authority record is missing, in another zone, not active or
/// expired (reference §10 item 45).
pub const DENY_RECORD_INACTIVE: &str = "authority record inactive or expired";
/// The subject token's record does not belong to the token's `sub`, or the token was issued to
/// another application than the authenticated one. The reference names no description for
/// these two checks; this reuses its step E wording for a record that does not match.
pub const DENY_RECORD_MISMATCH: &str = "authority record mismatch";
/// A form `session_id` without a subject token that is not the calling application's own
/// `application` record (reference §10 item 40).
pub const DENY_RECORD_NOT_OWNED: &str = "authority record not owned by caller";
/// A `delegation_edge_id` without an `agent_session_id` (reference §10 item 42).
pub const DENY_DELEGATION_NEEDS_SESSION: &str = "delegation requires a target Session";
/// The governed Session belongs to another application (reference §10 item 41).
pub const DENY_SESSION_NOT_OWNED: &str = "session not owned by caller";
/// A Session (governed target or delegation source) is missing or not active (reference §10
/// item 41).
pub const DENY_SESSION_INACTIVE: &str = "session inactive or expired";
/// The governed Session's subject record is not the presented session mandate's record. The
/// reference names no description for this check.
pub const DENY_SESSION_SUBJECT_MISMATCH: &str = "session subject mismatch";
/// The edge's target is not the request's `agent_session_id` (reference §10 item 42).
pub const DENY_EDGE_TARGET_MISMATCH: &str = "delegation edge target mismatch";
/// The edge is missing, in another zone, revoked or expired (reference §10 item 42).
pub const DENY_EDGE_INACTIVE: &str = "delegation edge inactive or expired";
/// The edge's issuer/receiver applications are not its Sessions' applications. The reference
/// names no description for this check; the wording follows the Coordinator's
/// `delegation_application_mismatch`.
pub const DENY_EDGE_APPLICATION_MISMATCH: &str = "delegation application mismatch";
/// `constraints_json` does not parse strictly (reference §10 item 43).
pub const DENY_CONSTRAINTS_INVALID: &str = "delegation constraints invalid";
/// `max_hops` above [`MAX_HOPS`] (reference §10 item 43).
pub const DENY_HOP_LIMIT: &str = "delegation hop limit exceeds platform maximum";
/// The lineage walk or the chain rebuild failed (reference §10 item 43).
pub const DENY_PATH_INVALID: &str = "delegation path invalid";
/// A requested scope is not among the edge's scopes (reference §10 item 28).
pub const DENY_SCOPES_EXCEED: &str = "requested scopes exceed delegation scopes";
/// An explicit TTL above `constraints.ttl_seconds` (reference §3.3).
pub const DENY_TTL_EXCEEDS: &str = "requested ttl exceeds delegation ttl";
/// The description of the 503 answered when a store read fails.
pub const DESC_STATE_UNAVAILABLE: &str = "authority state unavailable";

/// The keys an edge's `constraints_json` may carry at exchange time. The Coordinator also
/// knows `budget`, which the STS refuses (reference §6.3 divergence note).
const ALLOWED_CONSTRAINT_KEYS: [&str; 7] = [
    "resources",
    "ttl_seconds",
    "max_depth",
    "max_hops",
    "policy_approved",
    "expires_at",
    "broad_reason",
];

fn deny(description: &'static str) -> ApiError {
    ApiError::forbidden("access_denied").with_description(description)
}

fn unavailable(e: StoreError) -> ApiError {
    tracing::warn!(error = %e, "authority state read failed at exchange; denying");
    ApiError::unavailable("sts_unavailable").with_description(DESC_STATE_UNAVAILABLE)
}

/// The strictly parsed `constraints_json` of an edge (reference §6.3).
///
/// Invariants after [`Self::parse`]: only the allowed keys were present; no number was
/// negative; `max_depth` and `max_hops` agreed when both were set; `limits` is the same
/// reading of `ttl_seconds` / `expires_at` that lifetime capping uses
/// ([`DelegationLimits::from_edge`]). `max_hops` is *not* yet checked against [`MAX_HOPS`]:
/// that is a separate, later check with its own answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationConstraints {
    /// `resources[]`: identifiers the edge is confined to; empty = not confined by this key.
    pub resources: Vec<String>,
    /// `max_hops` (or its alias `max_depth`); 1 when neither is set. Saturates at `u32::MAX`.
    pub max_hops: u32,
    /// The lifetime limits (`ttl_seconds`, `expires_at`, and the edge's own expiry).
    pub limits: DelegationLimits,
    /// `policy_approved` (an audit annotation).
    pub policy_approved: Option<bool>,
    /// `broad_reason` (an audit annotation).
    pub broad_reason: Option<String>,
    /// `budget`: a narrowing bound, read only by [`Self::parse_coordinator`] (the exchange's
    /// [`Self::parse`] refuses the key, so it is always `None` there).
    pub budget: Option<u32>,
}

impl DelegationConstraints {
    /// Parse `edge.constraints_json` strictly. An unknown key, a negative number or a value of
    /// the wrong type (including a non-integer number), or `max_depth` ≠ `max_hops` →
    /// 403 "delegation constraints invalid". `null` is treated as absent.
    pub fn parse(edge: &DelegationEdge) -> ExchangeResult<Self> {
        Self::parse_keys(edge, false)
    }

    /// The Coordinator's reading of a stored edge (narrowing, effective authority): the same
    /// rules as [`Self::parse`], plus the `budget` key the Coordinator accepts (reference
    /// `control-plane.md` §1.6) and the STS refuses.
    pub fn parse_coordinator(edge: &DelegationEdge) -> ExchangeResult<Self> {
        Self::parse_keys(edge, true)
    }

    fn parse_keys(edge: &DelegationEdge, allow_budget: bool) -> ExchangeResult<Self> {
        let invalid = || deny(DENY_CONSTRAINTS_INVALID);
        let map = &edge.constraints_json;
        if map.keys().any(|k| {
            !(ALLOWED_CONSTRAINT_KEYS.contains(&k.as_str()) || (allow_budget && k == "budget"))
        }) {
            return Err(invalid());
        }
        let budget = count(map.get("budget")).ok_or_else(invalid)?;
        let resources = match map.get("resources") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(invalid)?,
            Some(_) => return Err(invalid()),
        };
        let max_hops = count(map.get("max_hops")).ok_or_else(invalid)?;
        let max_depth = count(map.get("max_depth")).ok_or_else(invalid)?;
        let max_hops = match (max_hops, max_depth) {
            (Some(h), Some(d)) if h != d => return Err(invalid()),
            (Some(h), _) | (None, Some(h)) => h,
            (None, None) => 1,
        };
        let policy_approved = match map.get("policy_approved") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(invalid()),
        };
        let broad_reason = match map.get("broad_reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid()),
        };
        // One reading of the two lifetime keys: the one the TTL cap uses.
        let limits = DelegationLimits::from_edge(edge).map_err(|_| invalid())?;
        if limits.ttl_seconds.is_some_and(|t| t < 0) {
            return Err(invalid());
        }
        Ok(Self {
            resources,
            max_hops,
            limits,
            policy_approved,
            broad_reason,
            budget,
        })
    }
}

/// A non-negative integer constraint: `Some(None)` when absent or `null`, `None` when
/// negative, fractional or not a number. Values above `u32::MAX` saturate, so they fail the
/// platform hop limit rather than wrap.
fn count(v: Option<&Value>) -> Option<Option<u32>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| Some(u32::try_from(n).unwrap_or(u32::MAX))),
        Some(_) => None,
    }
}

/// Everything a delegated mint (and the mandate it yields) needs from the lineage: the
/// mandate's delegation claims and the per-resource confinement check (§2.3 I.3).
#[derive(Debug, Clone, PartialEq)]
pub struct DelegationProof {
    /// The leaf edge (the request's `delegation_edge_id`).
    pub edge: DelegationEdge,
    /// The leaf edge's source Session (active at resolution).
    pub source_session: Session,
    /// The leaf edge's target Session: the governed Session, owned by the caller.
    pub target_session: Session,
    /// Edge ids, root → leaf (`delegation_path`); never empty, at most `max_hops` long.
    pub path: Vec<String>,
    /// One hop per path edge (issuer application, source Session, edge id), then the final
    /// hop (receiver application, target Session) (`delegation_chain`).
    pub chain: Vec<ChainHop>,
    /// The zone's graph epoch read after the walk (`delegation_graph_epoch`).
    pub graph_epoch: i64,
    /// The leaf edge's parsed constraints.
    pub constraints: DelegationConstraints,
}

impl DelegationProof {
    /// `len(delegation_path)` (`hop_count`).
    pub fn hop_count(&self) -> u32 {
        u32::try_from(self.path.len()).unwrap_or(u32::MAX)
    }

    /// Whether the delegation reaches a resource (§2.3 I.3): the edge's `resource_id`, if set,
    /// must be the resource's row id, and `constraints.resources`, if non-empty, must contain
    /// its identifier. A miss skips the resource (`resource_outside_delegation`).
    pub fn covers_resource(&self, resource_id: &str, identifier: &str) -> bool {
        self.edge
            .resource_id
            .as_deref()
            .is_none_or(|r| r == resource_id)
            && (self.constraints.resources.is_empty()
                || self.constraints.resources.iter().any(|r| r == identifier))
    }
}

/// §6.3 first bullet: the presented subject token's authority record (`sid`) must exist in
/// the zone, be active and unexpired at `now`, belong to the token's `sub`, and the token must
/// have been issued to the authenticated application (`client_id` == `app_id`).
///
/// Missing/inactive/expired → 403 [`DENY_RECORD_INACTIVE`]; subject or client mismatch → 403
/// [`DENY_RECORD_MISMATCH`]; store error → 503.
pub async fn check_subject_record(
    authority: &dyn AuthorityStore,
    zone_id: &str,
    sid: &str,
    sub: &str,
    token_client_id: &str,
    app_id: &str,
    now: DateTime<Utc>,
) -> ExchangeResult<AuthorityRecord> {
    let record = live_record(authority, zone_id, sid, now).await?;
    if record.subject_id != sub || token_client_id != app_id {
        return Err(deny(DENY_RECORD_MISMATCH));
    }
    Ok(record)
}

/// §6.3 second bullet: a form `session_id` must exist in the zone, be active and unexpired at
/// `now`; with no subject token it must be an `application` record whose subject is the
/// calling application (no borrowing a peer's record).
///
/// Missing/inactive/expired → 403 [`DENY_RECORD_INACTIVE`]; not the caller's → 403
/// [`DENY_RECORD_NOT_OWNED`]; store error → 503.
pub async fn check_form_record(
    authority: &dyn AuthorityStore,
    zone_id: &str,
    session_id: &str,
    app_id: &str,
    has_subject_token: bool,
    now: DateTime<Utc>,
) -> ExchangeResult<AuthorityRecord> {
    let record = live_record(authority, zone_id, session_id, now).await?;
    if !has_subject_token
        && (record.session_type != SubjectType::Application || record.subject_id != app_id)
    {
        return Err(deny(DENY_RECORD_NOT_OWNED));
    }
    Ok(record)
}

/// The record `id` of the zone if it is live at `now`, else 403 [`DENY_RECORD_INACTIVE`].
async fn live_record(
    authority: &dyn AuthorityStore,
    zone_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> ExchangeResult<AuthorityRecord> {
    authority
        .get_authority(zone_id, id)
        .await
        .map_err(unavailable)?
        .filter(|r| r.zone_id == zone_id && r.is_live(now))
        .ok_or_else(|| deny(DENY_RECORD_INACTIVE))
}

/// The §6.3 "active Session" rule at `now`: status `active`; a `service` Session's
/// `heartbeat_deadline_at` is after `now`; a `task` Session has `ttl_seconds > 0` and
/// `started_at + ttl > now`; and if its subject authority record is `user`-typed, that record
/// is active and unexpired.
///
/// The zone is the Session's own (`session.zone_id`); callers read the Session zone-scoped. A
/// subject record that cannot be found fails closed (inactive). Unlike
/// [`Session::is_live`], a task without a TTL is *not* active (the reference requires
/// `ttl_seconds > 0`). Store error → 503.
pub async fn session_is_active(
    authority: &dyn AuthorityStore,
    session: &Session,
    now: DateTime<Utc>,
) -> ExchangeResult<bool> {
    if !lifecycle_active(session, now) {
        return Ok(false);
    }
    let record = authority
        .get_authority(&session.zone_id, &session.subject_authority_record_id)
        .await
        .map_err(unavailable)?;
    Ok(match record {
        None => false,
        Some(r) => r.session_type != SubjectType::User || r.is_live(now),
    })
}

/// The pure part of the active rule: status and lifetime.
fn lifecycle_active(session: &Session, now: DateTime<Utc>) -> bool {
    if session.status != SessionStatus::Active {
        return false;
    }
    match session.lifecycle {
        Lifecycle::Service => session.heartbeat_deadline_at.is_some_and(|d| d > now),
        Lifecycle::Task => session.ttl_seconds.is_some_and(|ttl| {
            ttl > 0
                && chrono::Duration::try_seconds(ttl)
                    .and_then(|d| session.started_at.checked_add_signed(d))
                    // An end beyond the representable range fails closed.
                    .is_some_and(|end| end > now)
        }),
    }
}

/// The Session and delegation references of a token request (§2.3 step H).
#[derive(Debug, Clone, Copy)]
pub struct SessionRefs<'a> {
    /// The request's zone.
    pub zone_id: &'a str,
    /// The authenticated (calling) application.
    pub app_id: &'a str,
    /// `agent_session_id` (form or presented claims); `""` = none.
    pub agent_session_id: &'a str,
    /// `delegation_edge_id` (form or presented claims); `""` = none.
    pub delegation_edge_id: &'a str,
    /// The authority record the governed Session's subject record must equal: set only when
    /// the subject token is a `use=session` mandate and a `session_id` is set.
    pub bound_authority_record: Option<&'a str>,
    /// The requested scopes (checked ⊆ the edge's scopes when delegating).
    pub requested_scopes: &'a [String],
    /// The request's `ttl_seconds` as given; `None` or `Some(0)` means "not explicit".
    pub explicit_ttl: Option<i64>,
}

/// What [`resolve_refs`] established.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRefs {
    /// The governed Session (the delegation's target when delegating).
    pub session: Option<Session>,
    /// The delegation proof, when a `delegation_edge_id` was given.
    pub delegation: Option<DelegationProof>,
}

/// §2.3 step H: resolve and check the request's Session and delegation references in the
/// reference order (see the module docs). Each failure is 403 `access_denied` with one of the
/// `DENY_*` descriptions; a store error is 503. No references → both `None`.
pub async fn resolve_refs(
    authority: &dyn AuthorityStore,
    coordinator: &dyn CoordinatorStore,
    refs: &SessionRefs<'_>,
    now: DateTime<Utc>,
) -> ExchangeResult<ResolvedRefs> {
    if refs.delegation_edge_id.is_empty() {
        if refs.agent_session_id.is_empty() {
            return Ok(ResolvedRefs {
                session: None,
                delegation: None,
            });
        }
        let session = governed_session(authority, coordinator, refs, now).await?;
        return Ok(ResolvedRefs {
            session: Some(session),
            delegation: None,
        });
    }
    if refs.agent_session_id.is_empty() {
        return Err(deny(DENY_DELEGATION_NEEDS_SESSION));
    }
    let zone = refs.zone_id;
    let edge = coordinator
        .get_edge(zone, refs.delegation_edge_id)
        .await
        .map_err(unavailable)?
        .filter(|e| edge_usable(e, zone, now))
        .ok_or_else(|| deny(DENY_EDGE_INACTIVE))?;
    if edge.target_session_id != refs.agent_session_id {
        return Err(deny(DENY_EDGE_TARGET_MISMATCH));
    }
    let source = active_session(authority, coordinator, zone, &edge.source_session_id, now)
        .await?
        .ok_or_else(|| deny(DENY_SESSION_INACTIVE))?;
    let target = governed_session(authority, coordinator, refs, now).await?;
    if source.application_id != edge.issuer_application_id
        || target.application_id != edge.receiver_application_id
    {
        return Err(deny(DENY_EDGE_APPLICATION_MISMATCH));
    }
    let constraints = DelegationConstraints::parse(&edge)?;
    if !refs
        .requested_scopes
        .iter()
        .all(|s| edge.scopes.iter().any(|e| e == s))
    {
        return Err(deny(DENY_SCOPES_EXCEED));
    }
    // The explicit-TTL rule lives in `DelegationLimits::cap`; only its explicit-request
    // refusal applies here, the rest of the capping happens at step M.
    if let Some(ttl) = refs.explicit_ttl.filter(|t| *t != 0)
        && constraints.limits.cap(ttl, true, now) == Err(TtlError::ExceedsDelegationTtl)
    {
        return Err(deny(DENY_TTL_EXCEEDS));
    }
    if constraints.max_hops > MAX_HOPS {
        return Err(deny(DENY_HOP_LIMIT));
    }
    let path_edges = walk_lineage(coordinator, zone, &edge, constraints.max_hops, now).await?;
    let graph_epoch = coordinator.graph_epoch(zone).await.map_err(unavailable)?;
    let root_source_app = match path_edges.first() {
        Some(root) if root.source_session_id == source.agent_session_id => {
            source.application_id.clone()
        }
        Some(root) => {
            coordinator
                .get_session(zone, &root.source_session_id)
                .await
                .map_err(unavailable)?
                .filter(|s| s.zone_id == zone)
                .ok_or_else(|| deny(DENY_PATH_INVALID))?
                .application_id
        }
        None => return Err(deny(DENY_PATH_INVALID)),
    };
    let chain = build_chain(&path_edges, &root_source_app, &target, zone, now)
        .ok_or_else(|| deny(DENY_PATH_INVALID))?;
    let path = path_edges.into_iter().map(|e| e.id).collect();
    Ok(ResolvedRefs {
        session: Some(target.clone()),
        delegation: Some(DelegationProof {
            edge,
            source_session: source,
            target_session: target,
            path,
            chain,
            graph_epoch,
            constraints,
        }),
    })
}

/// Whether an edge can carry authority at `now`: in the zone, `active`, not revoked, unexpired.
fn edge_usable(edge: &DelegationEdge, zone_id: &str, now: DateTime<Utc>) -> bool {
    edge.zone_id == zone_id
        && edge.status == EdgeStatus::Active
        && edge.revoked_at.is_none()
        && edge.expires_at > now
}

/// The Session `id` of the zone if it exists and is active at `now`.
async fn active_session(
    authority: &dyn AuthorityStore,
    coordinator: &dyn CoordinatorStore,
    zone_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> ExchangeResult<Option<Session>> {
    let Some(session) = coordinator
        .get_session(zone_id, id)
        .await
        .map_err(unavailable)?
        .filter(|s| s.zone_id == zone_id)
    else {
        return Ok(None);
    };
    Ok(session_is_active(authority, &session, now)
        .await?
        .then_some(session))
}

/// §6.3 third bullet: the request's `agent_session_id` exists, is active, belongs to the
/// calling application, and is bound to the presented session mandate's record when required.
async fn governed_session(
    authority: &dyn AuthorityStore,
    coordinator: &dyn CoordinatorStore,
    refs: &SessionRefs<'_>,
    now: DateTime<Utc>,
) -> ExchangeResult<Session> {
    let session = active_session(
        authority,
        coordinator,
        refs.zone_id,
        refs.agent_session_id,
        now,
    )
    .await?
    .ok_or_else(|| deny(DENY_SESSION_INACTIVE))?;
    if session.application_id != refs.app_id {
        return Err(deny(DENY_SESSION_NOT_OWNED));
    }
    if refs
        .bound_authority_record
        .is_some_and(|r| session.subject_authority_record_id != r)
    {
        return Err(deny(DENY_SESSION_SUBJECT_MISMATCH));
    }
    Ok(session)
}

/// Walk `parent_edge_id` up from `leaf`: every edge usable, no edge twice, at most `max_hops`
/// edges, ending at a root (an edge without a parent). Returns the edges root → leaf.
/// A lineage longer than `max_hops` stops at the bound without reaching a root and is refused,
/// as the reference's depth-bounded walk is.
async fn walk_lineage(
    coordinator: &dyn CoordinatorStore,
    zone_id: &str,
    leaf: &DelegationEdge,
    max_hops: u32,
    now: DateTime<Utc>,
) -> ExchangeResult<Vec<DelegationEdge>> {
    let limit = usize::try_from(max_hops).unwrap_or(usize::MAX);
    let mut path = vec![leaf.clone()];
    let mut seen = HashSet::from([leaf.id.clone()]);
    let mut next = leaf.parent_edge_id.clone();
    while let Some(parent_id) = next {
        if path.len() >= limit || !seen.insert(parent_id.clone()) {
            return Err(deny(DENY_PATH_INVALID));
        }
        let parent = coordinator
            .get_edge(zone_id, &parent_id)
            .await
            .map_err(unavailable)?
            .filter(|e| edge_usable(e, zone_id, now))
            .ok_or_else(|| deny(DENY_PATH_INVALID))?;
        next = parent.parent_edge_id.clone();
        path.push(parent);
    }
    if path.len() > limit {
        return Err(deny(DENY_PATH_INVALID));
    }
    path.reverse();
    Ok(path)
}

/// Rebuild `delegation_chain` from the path (root → leaf), re-validating each edge and the
/// joints between them (see the module's decision on multi-application chains). `None` when
/// any check fails.
fn build_chain(
    path: &[DelegationEdge],
    root_source_app: &str,
    target: &Session,
    zone_id: &str,
    now: DateTime<Utc>,
) -> Option<Vec<ChainHop>> {
    let (root, leaf) = (path.first()?, path.last()?);
    if root.issuer_application_id != root_source_app
        || leaf.receiver_application_id != target.application_id
        || leaf.target_session_id != target.agent_session_id
    {
        return None;
    }
    let mut chain = Vec::with_capacity(path.len() + 1);
    let mut previous: Option<&DelegationEdge> = None;
    for edge in path {
        if !edge_usable(edge, zone_id, now) {
            return None;
        }
        if let Some(prev) = previous
            && (edge.issuer_application_id != prev.receiver_application_id
                || edge.source_session_id != prev.target_session_id)
        {
            return None;
        }
        chain.push(ChainHop {
            application_id: edge.issuer_application_id.clone(),
            agent_session_id: Some(edge.source_session_id.clone()),
            delegation_edge_id: Some(edge.id.clone()),
        });
        previous = Some(edge);
    }
    chain.push(ChainHop {
        application_id: leaf.receiver_application_id.clone(),
        agent_session_id: Some(leaf.target_session_id.clone()),
        delegation_edge_id: None,
    });
    Some(chain)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use chrono::Duration;
    use serde_json::{Map, json};

    use super::*;
    use crate::clock::{Clock, FakeClock};
    use crate::model::authority::AuthorityStatus;
    use crate::store::StoreResult;
    use crate::store::memory::MemoryStore;

    const ZONE: &str = "zone-1";

    fn now() -> DateTime<Utc> {
        FakeClock::at_fixture_epoch().now()
    }

    fn record(id: &str, kind: SubjectType, subject: &str) -> AuthorityRecord {
        AuthorityRecord {
            id: id.into(),
            zone_id: ZONE.into(),
            session_type: kind,
            subject_id: subject.into(),
            parent_id: None,
            status: AuthorityStatus::Active,
            expires_at: now() + Duration::hours(1),
            authenticated_at: Some(now()),
            claims_json: Value::Null,
            revoked_at: None,
            revoked_reason: None,
            created_at: now() - Duration::minutes(5),
        }
    }

    fn session(id: &str, app: &str, record_id: &str) -> Session {
        Session {
            agent_session_id: id.into(),
            zone_id: ZONE.into(),
            application_id: app.into(),
            parent_id: None,
            subject_authority_record_id: record_id.into(),
            lifecycle: Lifecycle::Task,
            labels: vec![],
            status: SessionStatus::Active,
            depth: 0,
            ttl_seconds: Some(3600),
            metadata: Map::new(),
            started_at: now() - Duration::minutes(1),
            terminated_at: None,
            termination_reason: None,
            last_heartbeat_at: None,
            heartbeat_deadline_at: None,
            lease_generation: 0,
            child_count: 0,
            max_children: 10,
        }
    }

    fn edge(id: &str, source: &Session, target: &Session, parent: Option<&str>) -> DelegationEdge {
        DelegationEdge {
            id: id.into(),
            zone_id: ZONE.into(),
            source_session_id: source.agent_session_id.clone(),
            target_session_id: target.agent_session_id.clone(),
            issuer_application_id: source.application_id.clone(),
            receiver_application_id: target.application_id.clone(),
            parent_edge_id: parent.map(str::to_owned),
            resource_id: Some("res-1".into()),
            scopes: vec!["read".into(), "write".into()],
            constraints_json: Map::new(),
            status: EdgeStatus::Active,
            expires_at: now() + Duration::minutes(30),
            edge_version: 0,
            revoked_at: None,
            created_at: now() - Duration::minutes(2),
        }
    }

    fn constraints(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    /// The fixture world of `jwt-claims.resource.valid.json`: `session-parent` (app-parent)
    /// delegates to `session-child` (app-1) over `delegation-1`; graph epoch 7. A root
    /// `session-root` (app-root) exists for two-hop chains.
    struct World {
        store: MemoryStore,
        root: Session,
        parent: Session,
        child: Session,
    }

    impl World {
        async fn new() -> Self {
            let store = MemoryStore::with_clock(Arc::new(FakeClock::at_fixture_epoch()));
            for (id, subject) in [
                ("rec-root", "app-root"),
                ("rec-parent", "app-parent"),
                ("rec-child", "app-1"),
            ] {
                store
                    .insert_authority(&record(id, SubjectType::Application, subject))
                    .await
                    .unwrap();
            }
            let w = Self {
                store,
                root: session("session-root", "app-root", "rec-root"),
                parent: session("session-parent", "app-parent", "rec-parent"),
                child: session("session-child", "app-1", "rec-child"),
            };
            let mut tx = w.store.begin(ZONE).await.unwrap();
            for s in [&w.root, &w.parent, &w.child] {
                tx.insert_session(s).await.unwrap();
            }
            for _ in 0..7 {
                tx.bump_epoch().await.unwrap();
            }
            tx.commit().await.unwrap();
            w
        }

        async fn put_sessions(&self, sessions: &[&Session]) {
            let mut tx = self.store.begin(ZONE).await.unwrap();
            for s in sessions {
                tx.insert_session(s).await.unwrap();
            }
            tx.commit().await.unwrap();
        }

        async fn put_edges(&self, edges: &[&DelegationEdge]) {
            let mut tx = self.store.begin(ZONE).await.unwrap();
            for e in edges {
                tx.insert_edge(e).await.unwrap();
            }
            tx.commit().await.unwrap();
        }

        /// The single-hop leaf edge of the fixture.
        fn leaf(&self) -> DelegationEdge {
            edge("delegation-1", &self.parent, &self.child, None)
        }

        /// `delegation-0` (root → parent, max_hops 2) and `delegation-1` (parent → child,
        /// narrowing it) with the leaf's `max_hops` given.
        async fn two_hops(&self, leaf_max_hops: Option<u32>) {
            let mut top = edge("delegation-0", &self.root, &self.parent, None);
            top.constraints_json = constraints(json!({"max_hops": 2}));
            let mut leaf = edge(
                "delegation-1",
                &self.parent,
                &self.child,
                Some("delegation-0"),
            );
            if let Some(h) = leaf_max_hops {
                leaf.constraints_json = constraints(json!({"max_hops": h}));
            }
            self.put_edges(&[&top, &leaf]).await;
        }

        async fn resolve(&self, refs: &SessionRefs<'_>) -> ExchangeResult<ResolvedRefs> {
            resolve_refs(&self.store, &self.store, refs, now()).await
        }
    }

    fn delegated<'a>(scopes: &'a [String]) -> SessionRefs<'a> {
        SessionRefs {
            zone_id: ZONE,
            app_id: "app-1",
            agent_session_id: "session-child",
            delegation_edge_id: "delegation-1",
            bound_authority_record: None,
            requested_scopes: scopes,
            explicit_ttl: None,
        }
    }

    fn session_only<'a>() -> SessionRefs<'a> {
        SessionRefs {
            delegation_edge_id: "",
            ..delegated(&[])
        }
    }

    #[track_caller]
    fn assert_denied<T: std::fmt::Debug>(r: ExchangeResult<T>, description: &str) {
        let e = r.expect_err("expected a denial");
        assert_eq!(e.status, 403, "{e}");
        assert_eq!(e.body.error, "access_denied");
        assert_eq!(e.body.error_description.as_deref(), Some(description));
    }

    fn hop(app: &str, session: &str, edge: Option<&str>) -> ChainHop {
        ChainHop {
            application_id: app.into(),
            agent_session_id: Some(session.into()),
            delegation_edge_id: edge.map(str::to_owned),
        }
    }

    // ---- resolve_refs: happy paths -------------------------------------------------------

    #[tokio::test]
    async fn no_references_resolve_to_nothing() {
        let w = World::new().await;
        let refs = SessionRefs {
            agent_session_id: "",
            ..session_only()
        };
        let r = w.resolve(&refs).await.unwrap();
        assert_eq!(
            r,
            ResolvedRefs {
                session: None,
                delegation: None
            }
        );
    }

    #[tokio::test]
    async fn single_hop_matches_the_claims_fixture() {
        let w = World::new().await;
        w.put_edges(&[&w.leaf()]).await;
        let scopes = vec!["read".to_string()];
        let r = w.resolve(&delegated(&scopes)).await.unwrap();
        assert_eq!(r.session.as_ref(), Some(&w.child));
        let p = r.delegation.unwrap();
        assert_eq!(p.edge, w.leaf());
        assert_eq!(p.source_session, w.parent);
        assert_eq!(p.target_session, w.child);
        assert_eq!(p.path, vec!["delegation-1".to_string()]);
        assert_eq!(p.hop_count(), 1);
        assert_eq!(p.graph_epoch, 7);
        assert_eq!(p.constraints.max_hops, 1);
        assert_eq!(
            p.chain,
            vec![
                hop("app-parent", "session-parent", Some("delegation-1")),
                hop("app-1", "session-child", None),
            ]
        );
        // Serialised exactly as the fixture's `delegation_chain`.
        assert_eq!(
            serde_json::to_value(&p.chain).unwrap(),
            json!([
                {"application_id": "app-parent", "agent_session_id": "session-parent",
                 "delegation_edge_id": "delegation-1"},
                {"application_id": "app-1", "agent_session_id": "session-child"}
            ])
        );
    }

    /// Three applications (app-root → app-parent → app-1): the reference's endpoint check
    /// (root issuer app vs the leaf's source Session app) would refuse this chain; the port
    /// accepts it (module decision).
    #[tokio::test]
    async fn two_hop_multi_application_chain() {
        let w = World::new().await;
        w.two_hops(Some(2)).await;
        let p = w
            .resolve(&delegated(&[]))
            .await
            .unwrap()
            .delegation
            .unwrap();
        assert_eq!(p.path, vec!["delegation-0", "delegation-1"]);
        assert_eq!(p.hop_count(), 2);
        assert_eq!(p.source_session, w.parent);
        assert_eq!(
            p.chain,
            vec![
                hop("app-root", "session-root", Some("delegation-0")),
                hop("app-parent", "session-parent", Some("delegation-1")),
                hop("app-1", "session-child", None),
            ]
        );
    }

    #[tokio::test]
    async fn two_hop_lineage_with_default_max_hops_is_an_invalid_path() {
        let w = World::new().await;
        w.two_hops(None).await;
        assert_denied(w.resolve(&delegated(&[])).await, DENY_PATH_INVALID);
    }

    #[tokio::test]
    async fn governed_session_alone() {
        let w = World::new().await;
        let r = w.resolve(&session_only()).await.unwrap();
        assert_eq!(r.session, Some(w.child.clone()));
        assert_eq!(r.delegation, None);
    }

    // ---- governed Session -----------------------------------------------------------------

    #[tokio::test]
    async fn session_owned_by_another_app() {
        let w = World::new().await;
        let refs = SessionRefs {
            app_id: "app-other",
            ..session_only()
        };
        assert_denied(w.resolve(&refs).await, DENY_SESSION_NOT_OWNED);
    }

    #[tokio::test]
    async fn missing_session_is_inactive() {
        let w = World::new().await;
        let refs = SessionRefs {
            agent_session_id: "session-nope",
            ..session_only()
        };
        assert_denied(w.resolve(&refs).await, DENY_SESSION_INACTIVE);
    }

    #[tokio::test]
    async fn suspended_terminated_expired_and_overdue_sessions_are_inactive() {
        let w = World::new().await;
        let mut cases = Vec::new();
        for (i, status) in [
            SessionStatus::Suspended,
            SessionStatus::Terminated,
            SessionStatus::Expired,
        ]
        .into_iter()
        .enumerate()
        {
            let mut s = session(&format!("s-status-{i}"), "app-1", "rec-child");
            s.status = status;
            cases.push(s);
        }
        let mut past_ttl = session("s-ttl", "app-1", "rec-child");
        past_ttl.started_at = now() - Duration::seconds(3600);
        cases.push(past_ttl);
        let mut no_ttl = session("s-no-ttl", "app-1", "rec-child");
        no_ttl.ttl_seconds = None;
        cases.push(no_ttl);
        let mut zero_ttl = session("s-zero-ttl", "app-1", "rec-child");
        zero_ttl.ttl_seconds = Some(0);
        cases.push(zero_ttl);
        let mut service = session("s-service", "app-1", "rec-child");
        service.lifecycle = Lifecycle::Service;
        service.ttl_seconds = None;
        service.heartbeat_deadline_at = Some(now());
        cases.push(service);
        let mut no_lease = session("s-no-lease", "app-1", "rec-child");
        no_lease.lifecycle = Lifecycle::Service;
        cases.push(no_lease);
        w.put_sessions(&cases.iter().collect::<Vec<_>>()).await;
        for s in &cases {
            let refs = SessionRefs {
                agent_session_id: &s.agent_session_id,
                ..session_only()
            };
            assert_denied(w.resolve(&refs).await, DENY_SESSION_INACTIVE);
            assert!(!session_is_active(&w.store, s, now()).await.unwrap());
        }
    }

    #[tokio::test]
    async fn service_session_within_its_lease_is_active() {
        let w = World::new().await;
        let mut s = session("s-service", "app-1", "rec-child");
        s.lifecycle = Lifecycle::Service;
        s.ttl_seconds = None;
        s.heartbeat_deadline_at = Some(now() + Duration::seconds(30));
        assert!(session_is_active(&w.store, &s, now()).await.unwrap());
    }

    #[tokio::test]
    async fn user_subject_record_must_be_live() {
        let w = World::new().await;
        let user = record("rec-user", SubjectType::User, "user-1");
        w.store.insert_authority(&user).await.unwrap();
        let mut expired = record("rec-user-old", SubjectType::User, "user-2");
        expired.expires_at = now();
        w.store.insert_authority(&expired).await.unwrap();
        let s = session("s-user", "app-1", "rec-user");
        let s_old = session("s-user-old", "app-1", "rec-user-old");
        let s_missing = session("s-missing", "app-1", "rec-missing");
        w.put_sessions(&[&s, &s_old, &s_missing]).await;
        assert!(session_is_active(&w.store, &s, now()).await.unwrap());
        assert!(!session_is_active(&w.store, &s_old, now()).await.unwrap());
        // A subject record that cannot be found fails closed.
        assert!(
            !session_is_active(&w.store, &s_missing, now())
                .await
                .unwrap()
        );

        w.store
            .revoke_authority(ZONE, "rec-user", "subject_revoked", now())
            .await
            .unwrap();
        assert!(!session_is_active(&w.store, &s, now()).await.unwrap());
        let refs = SessionRefs {
            agent_session_id: "s-user",
            ..session_only()
        };
        assert_denied(w.resolve(&refs).await, DENY_SESSION_INACTIVE);
    }

    #[tokio::test]
    async fn revoked_application_subject_record_does_not_end_the_session() {
        // The reference checks only user-typed subject records here.
        let w = World::new().await;
        w.store
            .revoke_authority(ZONE, "rec-child", "x", now())
            .await
            .unwrap();
        assert!(session_is_active(&w.store, &w.child, now()).await.unwrap());
    }

    #[tokio::test]
    async fn subject_binding() {
        let w = World::new().await;
        let refs = SessionRefs {
            bound_authority_record: Some("rec-child"),
            ..session_only()
        };
        assert!(w.resolve(&refs).await.is_ok());
        let refs = SessionRefs {
            bound_authority_record: Some("rec-other"),
            ..session_only()
        };
        assert_denied(w.resolve(&refs).await, DENY_SESSION_SUBJECT_MISMATCH);
        // Also on the delegated path.
        w.put_edges(&[&w.leaf()]).await;
        let refs = SessionRefs {
            bound_authority_record: Some("rec-other"),
            ..delegated(&[])
        };
        assert_denied(w.resolve(&refs).await, DENY_SESSION_SUBJECT_MISMATCH);
    }

    // ---- delegation ------------------------------------------------------------------------

    #[tokio::test]
    async fn delegation_needs_a_target_session() {
        let w = World::new().await;
        w.put_edges(&[&w.leaf()]).await;
        let refs = SessionRefs {
            agent_session_id: "",
            ..delegated(&[])
        };
        assert_denied(w.resolve(&refs).await, DENY_DELEGATION_NEEDS_SESSION);
    }

    #[tokio::test]
    async fn edge_target_mismatch() {
        let w = World::new().await;
        w.put_edges(&[&w.leaf()]).await;
        let refs = SessionRefs {
            agent_session_id: "session-parent",
            ..delegated(&[])
        };
        assert_denied(w.resolve(&refs).await, DENY_EDGE_TARGET_MISMATCH);
    }

    #[tokio::test]
    async fn missing_revoked_or_expired_edges() {
        let w = World::new().await;
        assert_denied(w.resolve(&delegated(&[])).await, DENY_EDGE_INACTIVE);

        let mut revoked = edge("e-revoked", &w.parent, &w.child, None);
        revoked.status = EdgeStatus::Revoked;
        revoked.revoked_at = Some(now());
        let mut revoked_at_only = edge("e-revoked-at", &w.parent, &w.child, None);
        revoked_at_only.revoked_at = Some(now());
        let mut expired = edge("e-expired", &w.parent, &w.child, None);
        expired.expires_at = now();
        let mut swept = edge("e-swept", &w.parent, &w.child, None);
        swept.status = EdgeStatus::Expired;
        w.put_edges(&[&revoked, &revoked_at_only, &expired, &swept])
            .await;
        for id in ["e-revoked", "e-revoked-at", "e-expired", "e-swept"] {
            let refs = SessionRefs {
                delegation_edge_id: id,
                ..delegated(&[])
            };
            assert_denied(w.resolve(&refs).await, DENY_EDGE_INACTIVE);
        }
        // An edge of another zone is not visible.
        let refs = SessionRefs {
            zone_id: "zone-2",
            delegation_edge_id: "e-revoked",
            ..delegated(&[])
        };
        assert_denied(w.resolve(&refs).await, DENY_EDGE_INACTIVE);
    }

    #[tokio::test]
    async fn inactive_source_session() {
        let w = World::new().await;
        let mut gone = session("session-gone", "app-parent", "rec-parent");
        gone.status = SessionStatus::Terminated;
        w.put_sessions(&[&gone]).await;
        w.put_edges(&[&edge("delegation-1", &gone, &w.child, None)])
            .await;
        assert_denied(w.resolve(&delegated(&[])).await, DENY_SESSION_INACTIVE);
    }

    #[tokio::test]
    async fn inactive_or_foreign_target_session() {
        let w = World::new().await;
        let mut done = session("session-done", "app-1", "rec-child");
        done.status = SessionStatus::Suspended;
        w.put_sessions(&[&done]).await;
        w.put_edges(&[&w.leaf(), &edge("delegation-done", &w.parent, &done, None)])
            .await;
        let refs = SessionRefs {
            agent_session_id: "session-done",
            delegation_edge_id: "delegation-done",
            ..delegated(&[])
        };
        assert_denied(w.resolve(&refs).await, DENY_SESSION_INACTIVE);
        let refs = SessionRefs {
            app_id: "app-other",
            ..delegated(&[])
        };
        assert_denied(w.resolve(&refs).await, DENY_SESSION_NOT_OWNED);
    }

    #[tokio::test]
    async fn edge_applications_must_match_sessions() {
        let w = World::new().await;
        let mut e = w.leaf();
        e.issuer_application_id = "app-forged".into();
        w.put_edges(&[&e]).await;
        assert_denied(
            w.resolve(&delegated(&[])).await,
            DENY_EDGE_APPLICATION_MISMATCH,
        );
    }

    #[tokio::test]
    async fn unknown_constraint_key() {
        let w = World::new().await;
        let mut e = w.leaf();
        e.constraints_json = constraints(json!({"budget": 3}));
        w.put_edges(&[&e]).await;
        assert_denied(w.resolve(&delegated(&[])).await, DENY_CONSTRAINTS_INVALID);
    }

    #[tokio::test]
    async fn scopes_beyond_the_edge() {
        let w = World::new().await;
        w.put_edges(&[&w.leaf()]).await;
        let scopes = vec!["read".to_string(), "admin".to_string()];
        assert_denied(w.resolve(&delegated(&scopes)).await, DENY_SCOPES_EXCEED);
        let scopes = vec!["write".to_string(), "read".to_string()];
        assert!(w.resolve(&delegated(&scopes)).await.is_ok());
    }

    #[tokio::test]
    async fn explicit_ttl_above_constraint_ttl() {
        let w = World::new().await;
        let mut e = w.leaf();
        e.constraints_json = constraints(json!({"ttl_seconds": 300}));
        w.put_edges(&[&e]).await;
        for (ttl, ok) in [
            (None, true),
            (Some(0), true),
            (Some(300), true),
            (Some(301), false),
        ] {
            let refs = SessionRefs {
                explicit_ttl: ttl,
                ..delegated(&[])
            };
            let r = w.resolve(&refs).await;
            if ok {
                assert!(r.is_ok(), "{ttl:?}");
            } else {
                assert_denied(r, DENY_TTL_EXCEEDS);
            }
        }
    }

    #[tokio::test]
    async fn hop_limit_above_platform_maximum() {
        let w = World::new().await;
        let mut e = w.leaf();
        e.constraints_json = constraints(json!({"max_hops": 11}));
        w.put_edges(&[&e]).await;
        assert_denied(w.resolve(&delegated(&[])).await, DENY_HOP_LIMIT);
    }

    #[tokio::test]
    async fn zero_max_hops_refuses_every_path() {
        let w = World::new().await;
        let mut e = w.leaf();
        e.constraints_json = constraints(json!({"max_hops": 0}));
        w.put_edges(&[&e]).await;
        assert_denied(w.resolve(&delegated(&[])).await, DENY_PATH_INVALID);
    }

    #[tokio::test]
    async fn cycle_in_the_lineage() {
        // The memory store does not refuse cycles on insert (the Coordinator's rules do), so
        // a corrupt graph can be built directly.
        let w = World::new().await;
        let a = edge("delegation-1", &w.parent, &w.child, Some("delegation-x"));
        let mut x = edge("delegation-x", &w.child, &w.parent, Some("delegation-1"));
        x.constraints_json = constraints(json!({"max_hops": 10}));
        let mut a = a;
        a.constraints_json = constraints(json!({"max_hops": 10}));
        w.put_edges(&[&a, &x]).await;
        assert_denied(w.resolve(&delegated(&[])).await, DENY_PATH_INVALID);
    }

    #[tokio::test]
    async fn revoked_or_missing_ancestor() {
        let w = World::new().await;
        let mut top = edge("delegation-0", &w.root, &w.parent, None);
        top.status = EdgeStatus::Revoked;
        top.revoked_at = Some(now());
        let mut leaf = edge("delegation-1", &w.parent, &w.child, Some("delegation-0"));
        leaf.constraints_json = constraints(json!({"max_hops": 3}));
        let mut orphan = edge("delegation-2", &w.parent, &w.child, Some("delegation-gone"));
        orphan.constraints_json = constraints(json!({"max_hops": 3}));
        w.put_edges(&[&top, &leaf, &orphan]).await;
        assert_denied(w.resolve(&delegated(&[])).await, DENY_PATH_INVALID);
        let refs = SessionRefs {
            delegation_edge_id: "delegation-2",
            ..delegated(&[])
        };
        assert_denied(w.resolve(&refs).await, DENY_PATH_INVALID);
    }

    #[tokio::test]
    async fn broken_continuity_between_hops() {
        let w = World::new().await;
        let other = session("session-other", "app-other", "rec-root");
        w.put_sessions(&[&other]).await;
        // The parent edge ends at another Session (and application) than the leaf starts from.
        let top = edge("delegation-0", &w.root, &other, None);
        let mut leaf = edge("delegation-1", &w.parent, &w.child, Some("delegation-0"));
        leaf.constraints_json = constraints(json!({"max_hops": 2}));
        w.put_edges(&[&top, &leaf]).await;
        assert_denied(w.resolve(&delegated(&[])).await, DENY_PATH_INVALID);
    }

    #[tokio::test]
    async fn root_issuer_must_be_its_source_sessions_application() {
        let w = World::new().await;
        let mut top = edge("delegation-0", &w.root, &w.parent, None);
        top.issuer_application_id = "app-forged".into();
        let mut leaf = edge("delegation-1", &w.parent, &w.child, Some("delegation-0"));
        leaf.constraints_json = constraints(json!({"max_hops": 2}));
        w.put_edges(&[&top, &leaf]).await;
        assert_denied(w.resolve(&delegated(&[])).await, DENY_PATH_INVALID);
    }

    #[test]
    fn build_chain_checks_endpoints() {
        let parent = session("session-parent", "app-parent", "r");
        let child = session("session-child", "app-1", "r");
        let leaf = edge("delegation-1", &parent, &child, None);
        assert!(build_chain(&[], "app-parent", &child, ZONE, now()).is_none());
        assert!(build_chain(std::slice::from_ref(&leaf), "app-x", &child, ZONE, now()).is_none());
        let stranger = session("session-child", "app-2", "r");
        assert!(
            build_chain(
                std::slice::from_ref(&leaf),
                "app-parent",
                &stranger,
                ZONE,
                now()
            )
            .is_none()
        );
        assert!(
            build_chain(
                std::slice::from_ref(&leaf),
                "app-parent",
                &child,
                "zone-2",
                now()
            )
            .is_none()
        );
        assert_eq!(
            build_chain(&[leaf], "app-parent", &child, ZONE, now())
                .unwrap()
                .len(),
            2
        );
    }

    // ---- constraints ------------------------------------------------------------------------

    fn parse(v: Value) -> ExchangeResult<DelegationConstraints> {
        let w_parent = session("a", "app-a", "r");
        let w_child = session("b", "app-b", "r");
        let mut e = edge("e", &w_parent, &w_child, None);
        e.constraints_json = constraints(v);
        DelegationConstraints::parse(&e)
    }

    #[test]
    fn budget_is_a_coordinator_only_key() {
        let w_parent = session("a", "app-a", "r");
        let w_child = session("b", "app-b", "r");
        let mut e = edge("e", &w_parent, &w_child, None);
        e.constraints_json = constraints(json!({"budget": 3, "max_hops": 2}));
        assert!(DelegationConstraints::parse(&e).is_err());
        let c = DelegationConstraints::parse_coordinator(&e).unwrap();
        assert_eq!((c.budget, c.max_hops), (Some(3), 2));
        e.constraints_json = constraints(json!({"budget": -1}));
        assert!(DelegationConstraints::parse_coordinator(&e).is_err());
        e.constraints_json = constraints(json!({"colour": 1}));
        assert!(DelegationConstraints::parse_coordinator(&e).is_err());
    }

    #[test]
    fn constraints_parse_strictly() {
        let c = parse(json!({})).unwrap();
        assert_eq!(c.max_hops, 1);
        assert!(c.resources.is_empty());
        assert_eq!(c.limits.ttl_seconds, None);
        let c = parse(json!({
            "resources": ["resource://api"],
            "ttl_seconds": 300,
            "max_depth": 3,
            "max_hops": 3,
            "policy_approved": true,
            "expires_at": "2026-05-21T12:10:00Z",
            "broad_reason": "ops"
        }))
        .unwrap();
        assert_eq!(c.resources, vec!["resource://api"]);
        assert_eq!(c.max_hops, 3);
        assert_eq!(c.limits.ttl_seconds, Some(300));
        assert_eq!(c.limits.expires_at, Some(now() + Duration::minutes(10)));
        assert_eq!(c.policy_approved, Some(true));
        assert_eq!(c.broad_reason.as_deref(), Some("ops"));
        assert_eq!(parse(json!({"max_depth": 4})).unwrap().max_hops, 4);
        assert_eq!(parse(json!({"max_hops": null})).unwrap().max_hops, 1);
        assert_eq!(parse(json!({"max_hops": 11})).unwrap().max_hops, 11);
        assert_eq!(
            parse(json!({"max_hops": 10_000_000_000u64}))
                .unwrap()
                .max_hops,
            u32::MAX
        );
        for bad in [
            json!({"budget": 1}),
            json!({"resource": "x"}),
            json!({"scopes": ["read"]}),
            json!({"ttl_seconds": -1}),
            json!({"ttl_seconds": 1.5}),
            json!({"ttl_seconds": "60"}),
            json!({"max_hops": -1}),
            json!({"max_depth": -2}),
            json!({"max_hops": 2.0}),
            json!({"max_hops": 2, "max_depth": 3}),
            json!({"resources": "resource://api"}),
            json!({"resources": [1]}),
            json!({"policy_approved": "yes"}),
            json!({"broad_reason": 3}),
            json!({"expires_at": "tomorrow"}),
        ] {
            assert_denied(parse(bad.clone()), DENY_CONSTRAINTS_INVALID);
        }
    }

    #[test]
    fn covers_resource_checks_edge_resource_and_constraint_resources() {
        let parent = session("session-parent", "app-parent", "r");
        let child = session("session-child", "app-1", "r");
        let mut e = edge("delegation-1", &parent, &child, None);
        let proof = |e: &DelegationEdge| DelegationProof {
            edge: e.clone(),
            source_session: parent.clone(),
            target_session: child.clone(),
            path: vec![e.id.clone()],
            chain: vec![],
            graph_epoch: 0,
            constraints: DelegationConstraints::parse(e).unwrap(),
        };
        let p = proof(&e);
        assert!(p.covers_resource("res-1", "resource://api"));
        assert!(!p.covers_resource("res-2", "resource://api"));
        e.resource_id = None;
        assert!(proof(&e).covers_resource("res-2", "resource://other"));
        e.constraints_json = constraints(json!({"resources": ["resource://api"]}));
        let p = proof(&e);
        assert!(p.covers_resource("res-2", "resource://api"));
        assert!(!p.covers_resource("res-2", "resource://other"));
    }

    // ---- authority records --------------------------------------------------------------------

    #[tokio::test]
    async fn subject_record_checks() {
        let w = World::new().await;
        let user = record("rec-user", SubjectType::User, "user-1");
        w.store.insert_authority(&user).await.unwrap();
        let check = |sid: &'static str, sub: &'static str, client: &'static str| {
            let store = w.store.clone();
            async move { check_subject_record(&store, ZONE, sid, sub, client, "app-1", now()).await }
        };
        assert_eq!(check("rec-user", "user-1", "app-1").await.unwrap(), user);
        assert_denied(
            check("rec-none", "user-1", "app-1").await,
            DENY_RECORD_INACTIVE,
        );
        assert_denied(
            check("rec-user", "user-2", "app-1").await,
            DENY_RECORD_MISMATCH,
        );
        assert_denied(
            check("rec-user", "user-1", "app-2").await,
            DENY_RECORD_MISMATCH,
        );
        assert_denied(
            check_subject_record(
                &w.store,
                "zone-2",
                "rec-user",
                "user-1",
                "app-1",
                "app-1",
                now(),
            )
            .await,
            DENY_RECORD_INACTIVE,
        );
        // Expired at exactly `now`.
        assert_denied(
            check_subject_record(
                &w.store,
                ZONE,
                "rec-user",
                "user-1",
                "app-1",
                "app-1",
                user.expires_at,
            )
            .await,
            DENY_RECORD_INACTIVE,
        );
        w.store
            .revoke_authority(ZONE, "rec-user", "grant_revoked", now())
            .await
            .unwrap();
        assert_denied(
            check("rec-user", "user-1", "app-1").await,
            DENY_RECORD_INACTIVE,
        );
    }

    #[tokio::test]
    async fn form_record_checks() {
        let w = World::new().await;
        let user = record("rec-user", SubjectType::User, "user-1");
        w.store.insert_authority(&user).await.unwrap();
        let check = |id: &'static str, has_token: bool| {
            let store = w.store.clone();
            async move { check_form_record(&store, ZONE, id, "app-1", has_token, now()).await }
        };
        assert_eq!(check("rec-child", false).await.unwrap().id, "rec-child");
        // A peer application's record, or a user record, cannot be borrowed without a token.
        assert_denied(check("rec-parent", false).await, DENY_RECORD_NOT_OWNED);
        assert_denied(check("rec-user", false).await, DENY_RECORD_NOT_OWNED);
        // With a subject token the record is the token's (checked by step E).
        assert!(check("rec-user", true).await.is_ok());
        assert_denied(check("rec-none", false).await, DENY_RECORD_INACTIVE);
        w.store
            .revoke_authority(ZONE, "rec-child", "x", now())
            .await
            .unwrap();
        assert_denied(check("rec-child", false).await, DENY_RECORD_INACTIVE);
    }

    // ---- store failures ---------------------------------------------------------------------

    /// An authority store whose every read fails.
    struct Down;

    #[async_trait]
    impl AuthorityStore for Down {
        async fn insert_authority(&self, _: &AuthorityRecord) -> StoreResult<()> {
            Err(down())
        }
        async fn get_authority(&self, _: &str, _: &str) -> StoreResult<Option<AuthorityRecord>> {
            Err(down())
        }
        async fn authority_lineage(&self, _: &str, _: &str) -> StoreResult<Vec<AuthorityRecord>> {
            Err(down())
        }
        async fn revoke_authority(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: DateTime<Utc>,
        ) -> StoreResult<bool> {
            Err(down())
        }
        async fn revoke_subject(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: DateTime<Utc>,
        ) -> StoreResult<Vec<String>> {
            Err(down())
        }
        async fn revoke_authority_tree(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: DateTime<Utc>,
        ) -> StoreResult<Vec<String>> {
            Err(down())
        }
    }

    fn down() -> StoreError {
        StoreError::Unavailable {
            retryable: true,
            message: "connection refused".into(),
        }
    }

    #[track_caller]
    fn assert_unavailable<T: std::fmt::Debug>(r: ExchangeResult<T>) {
        let e = r.expect_err("expected 503");
        assert_eq!(e.status, 503);
        assert_eq!(e.body.error, "sts_unavailable");
        assert_eq!(
            e.body.error_description.as_deref(),
            Some(DESC_STATE_UNAVAILABLE)
        );
    }

    #[tokio::test]
    async fn store_errors_fail_closed_as_unavailable() {
        let w = World::new().await;
        w.put_edges(&[&w.leaf()]).await;
        assert_unavailable(check_subject_record(&Down, ZONE, "s", "u", "a", "a", now()).await);
        assert_unavailable(check_form_record(&Down, ZONE, "s", "a", false, now()).await);
        assert_unavailable(session_is_active(&Down, &w.child, now()).await);
        assert_unavailable(resolve_refs(&Down, &w.store, &session_only(), now()).await);
        assert_unavailable(resolve_refs(&Down, &w.store, &delegated(&[]), now()).await);
    }
}
