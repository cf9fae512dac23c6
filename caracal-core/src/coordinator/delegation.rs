//! Delegation edges: create with every rule of reference `control-plane.md` §1.6 in order,
//! revoke with its cascade, and the read-only effective authority, traverse and impact.
//!
//! ## Create order (§1.6, http-bodies §11.3)
//!
//! constraints (`invalid_<key>` / `invalid_delegation_constraint`) → 1 expiry required →
//! 2 `issuer_ownership_required` → 3 `self_delegation_denied` → 4
//! `broad_delegation_permission_required` → 5 endpoints live / applications match → 6
//! resources exist, `resource_id` among `constraints.resources`, scopes ⊆ declared scopes →
//! 7 parent choice and narrowing → 8 cycle → 9 expiry in the future. Rules 5–9 run inside
//! the zone's unit of work, so the graph they read is the graph the edge joins.
//!
//! ## Reading stored constraints
//!
//! Stored edges are read with [`DelegationConstraints::parse_coordinator`], the same strict
//! parser the STS uses at exchange time plus the Coordinator-only `budget` key, so the two
//! services never disagree on what an edge allows. A stored edge that does not parse is
//! treated as allowing nothing (fail closed): it cannot be a parent a child narrows, and it
//! empties an effective-authority intersection.
//!
//! ## Resource sets
//!
//! An edge's resources are `constraints.resources` when non-empty (rule 6 guarantees
//! `resource_id`'s identifier is among them), else the identifier of `resource_id`, else
//! none: a broad edge. Narrowing compares identifiers; a parent resource row that cannot be
//! read makes the parent's set unreadable and every child exceeds it (fail closed).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{CoordinatorError, CoordinatorResult, ExceedsParent};
use super::events::{self, EdgeEvent};
use super::idempotency::{Idempotency, Idempotent, Lookup, lookup, record};
use super::sessions::{Cascade, revoke_edge_closure, subtree, terminate_sessions};
use super::{CAP_DELEGATE_FROM, Caller, Coordinator, SCOPE_DELEGATE_BROAD};
use crate::exchange::lineage::{DelegationConstraints, MAX_HOPS};
use crate::model::delegation::{DelegationEdge, EdgeStatus};
use crate::model::session::SessionStatus;
use crate::model::time::format_iso_ms;
use crate::store::coordinator::IdempotentOperation;

/// Largest `ttl_seconds` (body or constraint).
pub const MAX_TTL_SECONDS: i64 = 86_400;
/// Most identifiers in `constraints.resources`.
pub const MAX_CONSTRAINT_RESOURCES: usize = 64;
/// Largest `budget`.
pub const MAX_BUDGET: u32 = 64;
/// Longest `broad_reason`, in characters.
pub const MAX_BROAD_REASON_CHARS: usize = 256;
/// The `broad_reason` stamped on a resource-unbound edge that named none.
pub const DEFAULT_BROAD_REASON: &str = "resource_null_delegation";
/// The warning a broad edge's create response carries.
pub const WARNING_BROAD: &str = "resource_null_delegation_broadens_resource_matching";
/// Termination reason of sessions below a revoked edge.
pub const REASON_DELEGATION_REVOKED: &str = "delegation_revoked";

const CONSTRAINT_KEYS: [&str; 8] = [
    "resources",
    "max_depth",
    "max_hops",
    "budget",
    "ttl_seconds",
    "policy_approved",
    "expires_at",
    "broad_reason",
];

/// A parsed `POST /zones/{zone}/delegations` body (`constraints` and `constraints_json`
/// already merged, `constraints` winning).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateDelegation {
    /// Issuing session.
    pub source_session_id: String,
    /// Receiving session.
    pub target_session_id: String,
    /// Must be the source session's application.
    pub issuer_application_id: String,
    /// Must be the target session's application.
    pub receiver_application_id: String,
    /// The parent edge to narrow, when the source has several live inbound edges.
    pub parent_edge_id: Option<String>,
    /// Resource row id or public identifier; `None` for a broad edge.
    pub resource_id: Option<String>,
    /// Scopes carried.
    pub scopes: Vec<String>,
    /// Typed constraints (strict).
    pub constraints: Map<String, Value>,
    /// Body `expires_at`.
    pub expires_at: Option<DateTime<Utc>>,
    /// Body `ttl_seconds` (folds into `constraints.ttl_seconds`).
    pub ttl_seconds: Option<i64>,
}

/// Constraints after [`validate_constraints`]: the map to store plus its typed reading.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedConstraints {
    /// The normalised map (`max_depth` folded into `max_hops`, body TTL folded in,
    /// `expires_at` re-rendered as ISO ms).
    pub map: Map<String, Value>,
    /// `resources` (deduplicated, order kept).
    pub resources: Vec<String>,
    /// `ttl_seconds`.
    pub ttl_seconds: Option<i64>,
    /// `expires_at`.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Strict constraint validation (§1.6, http-bodies §11.3): only the known keys (else
/// `invalid_delegation_constraint`); `resources` ≤64 non-empty strings; `max_hops` /
/// `max_depth` 1..10 and equal when both are set; `budget` 1..64; `ttl_seconds` 1..86400
/// (the body's must agree with it); `policy_approved` bool; `expires_at` RFC 3339;
/// `broad_reason` 1..256 characters. `null` is absent. A bad value is `invalid_<key>`.
pub fn validate_constraints(
    constraints: &Map<String, Value>,
    body_ttl_seconds: Option<i64>,
) -> CoordinatorResult<ValidatedConstraints> {
    use CoordinatorError::InvalidConstraint as Bad;
    if constraints
        .keys()
        .any(|k| !CONSTRAINT_KEYS.contains(&k.as_str()))
    {
        return Err(CoordinatorError::InvalidDelegationConstraint);
    }
    let get = |k: &str| constraints.get(k).filter(|v| !v.is_null());
    let int_in = |k: &'static str, lo: i64, hi: i64| -> CoordinatorResult<Option<i64>> {
        match get(k) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| (lo..=hi).contains(n))
                .map(Some)
                .ok_or(Bad(k)),
        }
    };
    let mut map = Map::new();
    let mut resources: Vec<String> = Vec::new();
    if let Some(v) = get("resources") {
        let items = v.as_array().ok_or(Bad("resources"))?;
        if items.len() > MAX_CONSTRAINT_RESOURCES {
            return Err(Bad("resources"));
        }
        for item in items {
            let s = item
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or(Bad("resources"))?;
            if !resources.iter().any(|r| r == s) {
                resources.push(s.to_owned());
            }
        }
        map.insert("resources".into(), Value::from(resources.clone()));
    }
    let hops = int_in("max_hops", 1, i64::from(MAX_HOPS))?;
    let depth = int_in("max_depth", 1, i64::from(MAX_HOPS))?;
    match (hops, depth) {
        (Some(h), Some(d)) if h != d => return Err(Bad("max_hops")),
        (Some(h), _) | (None, Some(h)) => {
            map.insert("max_hops".into(), Value::from(h));
        }
        (None, None) => {}
    }
    if let Some(b) = int_in("budget", 1, i64::from(MAX_BUDGET))? {
        map.insert("budget".into(), Value::from(b));
    }
    let mut ttl = int_in("ttl_seconds", 1, MAX_TTL_SECONDS)?;
    if let Some(body) = body_ttl_seconds {
        if !(1..=MAX_TTL_SECONDS).contains(&body) {
            return Err(CoordinatorError::InvalidBody {
                field: "ttl_seconds",
                message: "ttl_seconds must be between 1 and 86400",
            });
        }
        if ttl.is_some_and(|t| t != body) {
            return Err(Bad("ttl_seconds"));
        }
        ttl = Some(body);
    }
    if let Some(t) = ttl {
        map.insert("ttl_seconds".into(), Value::from(t));
    }
    if let Some(v) = get("policy_approved") {
        map.insert(
            "policy_approved".into(),
            Value::Bool(v.as_bool().ok_or(Bad("policy_approved"))?),
        );
    }
    let mut expires_at = None;
    if let Some(v) = get("expires_at") {
        let t = v
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .ok_or(Bad("expires_at"))?
            .with_timezone(&Utc);
        map.insert("expires_at".into(), Value::from(format_iso_ms(&t)));
        expires_at = Some(t);
    }
    if let Some(v) = get("broad_reason") {
        let s = v
            .as_str()
            .filter(|s| (1..=MAX_BROAD_REASON_CHARS).contains(&s.chars().count()))
            .ok_or(Bad("broad_reason"))?;
        map.insert("broad_reason".into(), Value::from(s));
    }
    Ok(ValidatedConstraints {
        map,
        resources,
        ttl_seconds: ttl,
        expires_at,
    })
}

/// Rule 1: the edge's expiry is the earlier of the body's and the constraint's `expires_at`,
/// else `now + ttl_seconds`; neither → `delegation_expiry_required`. (Rule 9, "in the
/// future", is checked last, separately.)
pub fn compute_expiry(
    body_expires_at: Option<DateTime<Utc>>,
    constraints: &ValidatedConstraints,
    now: DateTime<Utc>,
) -> CoordinatorResult<DateTime<Utc>> {
    let explicit = match (body_expires_at, constraints.expires_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(t) = explicit {
        return Ok(t);
    }
    constraints
        .ttl_seconds
        .and_then(Duration::try_seconds)
        .and_then(|d| now.checked_add_signed(d))
        .ok_or(CoordinatorError::DelegationExpiryRequired)
}

/// Rule 7, parent choice: among the source session's **live** inbound edges, the explicit
/// `parent_edge_id` (403 `parent_delegation_not_active` if it is not one of them), else the
/// single one, else none (the source is an authority root); several and none named → 409
/// `parent_delegation_ambiguous`.
pub fn choose_parent<'a>(
    live_inbound: &'a [DelegationEdge],
    explicit: Option<&str>,
) -> CoordinatorResult<Option<&'a DelegationEdge>> {
    if let Some(id) = explicit {
        return live_inbound
            .iter()
            .find(|e| e.id == id)
            .map(Some)
            .ok_or(CoordinatorError::ParentDelegationNotActive);
    }
    match live_inbound {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(CoordinatorError::ParentDelegationAmbiguous),
    }
}

/// The bounds of an edge that narrowing compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeBounds {
    /// Scopes.
    pub scopes: BTreeSet<String>,
    /// The earliest of the edge's expiry and its `constraints.expires_at`.
    pub expires_at: DateTime<Utc>,
    /// Resource identifiers; `None` for a broad edge.
    pub resources: Option<BTreeSet<String>>,
    /// `max_hops` (default 1).
    pub max_hops: u32,
    /// `ttl_seconds`.
    pub ttl_seconds: Option<i64>,
    /// `budget` as stored (a child's default is its scope count, applied in the check).
    pub budget: Option<u32>,
}

impl EdgeBounds {
    /// The bounds of a stored edge. `resource_identifier` is the identifier of
    /// `edge.resource_id` (`None` when the edge has none, or when it could not be read: then
    /// `unreadable_resource` must be true and the set is empty, so nothing fits under it).
    pub fn of(
        edge: &DelegationEdge,
        resource_identifier: Option<&str>,
        unreadable_resource: bool,
    ) -> CoordinatorResult<Self> {
        let c = DelegationConstraints::parse_coordinator(edge)
            .map_err(|_| CoordinatorError::InvalidDelegationConstraint)?;
        let resources = if unreadable_resource {
            Some(BTreeSet::new())
        } else if !c.resources.is_empty() {
            Some(c.resources.iter().cloned().collect())
        } else {
            resource_identifier.map(|r| BTreeSet::from([r.to_owned()]))
        };
        let expires_at = c
            .limits
            .expires_at
            .map_or(edge.expires_at, |t| t.min(edge.expires_at));
        Ok(Self {
            scopes: edge.scopes.iter().cloned().collect(),
            expires_at,
            resources,
            max_hops: c.max_hops,
            ttl_seconds: c.limits.ttl_seconds,
            budget: c.budget,
        })
    }
}

/// Rule 7, narrowing of a child edge against its parent: scopes ⊆; expiry ≤; resources ⊆
/// (a broad child under a bound parent exceeds it); the parent's `max_hops` must be > 1 and
/// the child's ≤ parent − 1; a parent `ttl_seconds` requires a child one ≤ it; a parent
/// `budget` bounds the child's (default: its scope count). The first failing bound is
/// returned in [`CoordinatorError::DelegationExceedsParentAuthority`].
pub fn check_narrowing(parent: &EdgeBounds, child: &EdgeBounds) -> CoordinatorResult<()> {
    let exceeds = CoordinatorError::DelegationExceedsParentAuthority;
    if !child.scopes.is_subset(&parent.scopes) {
        return Err(exceeds(ExceedsParent::Scopes));
    }
    if child.expires_at > parent.expires_at {
        return Err(exceeds(ExceedsParent::Expiry));
    }
    if let Some(pr) = &parent.resources {
        match &child.resources {
            Some(cr) if cr.is_subset(pr) => {}
            _ => return Err(exceeds(ExceedsParent::Resources)),
        }
    }
    if parent.max_hops <= 1 || child.max_hops > parent.max_hops - 1 {
        return Err(exceeds(ExceedsParent::Hops));
    }
    if let Some(pt) = parent.ttl_seconds {
        if child.ttl_seconds.is_none_or(|ct| ct > pt) {
            return Err(exceeds(ExceedsParent::Ttl));
        }
    }
    if let Some(pb) = parent.budget {
        let cb = child
            .budget
            .unwrap_or_else(|| u32::try_from(child.scopes.len()).unwrap_or(u32::MAX));
        if cb > pb {
            return Err(exceeds(ExceedsParent::Budget));
        }
    }
    Ok(())
}

/// Rule 8: whether adding `source → target` closes a cycle among `live_edges`, i.e. whether
/// `source` is reachable from `target`. The walk is over the whole live graph with a visited
/// set (stricter than the reference's depth-10 bound, and still finite).
pub fn would_cycle(live_edges: &[DelegationEdge], source: &str, target: &str) -> bool {
    let mut out: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in live_edges {
        out.entry(e.source_session_id.as_str())
            .or_default()
            .push(e.target_session_id.as_str());
    }
    let mut seen: HashSet<&str> = HashSet::from([target]);
    let mut queue: VecDeque<&str> = VecDeque::from([target]);
    while let Some(n) = queue.pop_front() {
        if n == source {
            return true;
        }
        for &m in out.get(n).into_iter().flatten() {
            if seen.insert(m) {
                queue.push_back(m);
            }
        }
    }
    false
}

/// The edges below `root_id` through `parent_edge_id` among `edges`, with their depth (the
/// root's children at 1), breadth first; a visited set bounds the walk.
pub fn downstream_edges<'a>(
    edges: &'a [DelegationEdge],
    root_id: &str,
) -> Vec<(&'a DelegationEdge, u32)> {
    let mut children: HashMap<&str, Vec<&DelegationEdge>> = HashMap::new();
    for e in edges {
        if let Some(p) = e.parent_edge_id.as_deref() {
            children.entry(p).or_default().push(e);
        }
    }
    let mut out = Vec::new();
    let mut seen: HashSet<&str> = HashSet::from([root_id]);
    let mut queue: VecDeque<(&str, u32)> = VecDeque::from([(root_id, 0)]);
    while let Some((id, depth)) = queue.pop_front() {
        for &c in children.get(id).into_iter().flatten() {
            if seen.insert(c.id.as_str()) {
                out.push((c, depth + 1));
                queue.push_back((c.id.as_str(), depth + 1));
            }
        }
    }
    out
}

/// `effective_authority` of a create response (http-bodies §11.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeAuthority {
    /// Source session.
    pub source_session_id: String,
    /// Target session.
    pub target_session_id: String,
    /// The parent edge narrowed, if any.
    pub parent_edge_id: Option<String>,
    /// Resource row id.
    pub resource_id: Option<String>,
    /// Resource identifiers the edge is bound to.
    pub resources: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Expiry.
    #[serde(with = "crate::model::time::iso_ms")]
    pub expires_at: DateTime<Utc>,
    /// `max_hops` (default 1).
    pub max_hops: u32,
    /// `ttl_seconds`.
    pub ttl_seconds: Option<i64>,
    /// Whether the edge is resource-unbound.
    pub broad: bool,
    /// The source's live inbound edges considered for the parent.
    pub parent_edges_considered: Vec<String>,
}

/// A created edge and the decorations of the 201 response.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedDelegation {
    /// The stored edge.
    pub edge: DelegationEdge,
    /// `[]` or [`WARNING_BROAD`].
    pub warnings: Vec<&'static str>,
    /// The four `allow_reason` strings.
    pub allow_reason: Vec<&'static str>,
    /// `effective_authority`.
    pub effective_authority: EdgeAuthority,
    /// The zone's graph epoch after the create.
    pub epoch: i64,
}

/// Renders the 201 body of a created edge for its idempotency receipt (the route's
/// serialiser, so a replay is byte-identical to the first answer).
pub type RenderDelegation = dyn Fn(&CreatedDelegation) -> String + Send + Sync;

/// `{revoked_edges, affected_sessions, terminated_sessions}` of a revoke; the wire renders
/// the counts, the ids are kept for the caller's audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// Every edge revoked (the named one, its downstream, edges touching terminated sessions).
    pub revoked_edges: Vec<String>,
    /// The target sessions of the named edge and its downstream edges.
    pub affected_sessions: Vec<String>,
    /// Every session terminated (those targets and their subtrees).
    pub terminated_sessions: Vec<String>,
    /// The zone's graph epoch after the revoke.
    pub epoch: i64,
}

/// One row of `traverse` / `impact.affected_edges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraverseRow {
    /// Edge id.
    pub id: String,
    /// Source session.
    pub source_session_id: String,
    /// Target session.
    pub target_session_id: String,
    /// 0 for the named edge, +1 per `parent_edge_id` step below it.
    pub depth: u32,
}

/// `GET …/delegations/{id}/impact`: what a revoke would touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImpactReport {
    /// The named edge.
    pub edge_id: String,
    /// The named edge and its live downstream edges.
    pub affected_edges: Vec<TraverseRow>,
    /// Non-terminal sessions in the targets' subtrees.
    pub affected_sessions: Vec<String>,
    /// Their subject authority records, distinct, sorted.
    pub affected_authority_records: Vec<String>,
}

/// `GET …/agents/{id}/effective-authority` (§1.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveAuthority {
    /// The session.
    pub agent_session_id: String,
    /// Its live inbound edges.
    pub inbound_edges: Vec<String>,
    /// Intersection of their scopes, sorted.
    pub effective_scopes: Vec<String>,
    /// Union of their resource row ids, sorted.
    pub effective_resource_ids: Vec<String>,
    /// Union of their resource identifiers, sorted.
    pub effective_resources: Vec<String>,
    /// Whether every inbound edge is resource-bound (a broad edge widens the union).
    pub effective_resource_constrained: bool,
    /// Minimum `max_hops` (default 1 per edge); 0 when there is no inbound edge (not
    /// delegation-bounded, §8).
    pub effective_max_hops: Option<u32>,
    /// Minimum `ttl_seconds`.
    pub effective_ttl_seconds: Option<i64>,
    /// Earliest expiry.
    #[serde(with = "crate::model::time::iso_ms_opt")]
    pub earliest_expires_at: Option<DateTime<Utc>>,
}

/// Effective authority over a session's live inbound edges, each with its bounds and its
/// resource row id (§1.6): intersection of scopes, union of resources, minimum hops and TTL,
/// earliest expiry. No edge → empty scopes and `effective_max_hops: 0`.
pub fn effective_authority(
    agent_session_id: &str,
    inbound: &[(DelegationEdge, EdgeBounds)],
) -> EffectiveAuthority {
    let mut out = EffectiveAuthority {
        agent_session_id: agent_session_id.to_owned(),
        inbound_edges: Vec::new(),
        effective_scopes: Vec::new(),
        effective_resource_ids: Vec::new(),
        effective_resources: Vec::new(),
        effective_resource_constrained: false,
        effective_max_hops: Some(0),
        effective_ttl_seconds: None,
        earliest_expires_at: None,
    };
    let Some((_, first)) = inbound.first() else {
        return out;
    };
    let mut scopes = first.scopes.clone();
    let mut ids = BTreeSet::new();
    let mut resources = BTreeSet::new();
    let mut constrained = true;
    let mut hops: Option<u32> = None;
    let mut ttl: Option<i64> = None;
    let mut earliest: Option<DateTime<Utc>> = None;
    for (edge, b) in inbound {
        out.inbound_edges.push(edge.id.clone());
        scopes = scopes.intersection(&b.scopes).cloned().collect();
        if let Some(r) = &edge.resource_id {
            ids.insert(r.clone());
        }
        match &b.resources {
            Some(rs) => resources.extend(rs.iter().cloned()),
            None => constrained = false,
        }
        hops = Some(hops.map_or(b.max_hops, |h| h.min(b.max_hops)));
        ttl = match (ttl, b.ttl_seconds) {
            (Some(a), Some(t)) => Some(a.min(t)),
            (a, t) => a.or(t),
        };
        earliest = Some(earliest.map_or(b.expires_at, |e| e.min(b.expires_at)));
    }
    out.effective_scopes = scopes.into_iter().collect();
    out.effective_resource_ids = ids.into_iter().collect();
    out.effective_resources = resources.into_iter().collect();
    out.effective_resource_constrained = constrained;
    out.effective_max_hops = hops;
    out.effective_ttl_seconds = ttl;
    out.earliest_expires_at = earliest;
    out
}

impl Coordinator {
    /// The bounds of a stored edge, resolving its resource identifier through the resource
    /// store (an unreadable row makes the set empty: fail closed).
    async fn bounds(&self, zone_id: &str, edge: &DelegationEdge) -> CoordinatorResult<EdgeBounds> {
        let (identifier, unreadable) = match &edge.resource_id {
            None => (None, false),
            Some(id) => match self.resources.get_resource(zone_id, id).await? {
                Some(r) => (Some(r.identifier), false),
                None => (None, true),
            },
        };
        EdgeBounds::of(edge, identifier.as_deref(), unreadable)
    }

    /// `POST /zones/{zone}/delegations` (§1.6): create an edge after every rule in order;
    /// writes the edge, bumps the zone's graph epoch and enqueues `edge_create` carrying it,
    /// in one unit of work.
    pub async fn create_delegation(
        &self,
        zone_id: &str,
        caller: &Caller,
        req: &CreateDelegation,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<CreatedDelegation> {
        match self
            .create_delegation_idempotent(zone_id, caller, req, None, now)
            .await?
        {
            Idempotent::Fresh(d) => Ok(d),
            // Only a request with a key can replay.
            Idempotent::Replayed { .. } => Err(CoordinatorError::IdempotencyKeyConflict),
        }
    }

    /// [`Self::create_delegation`] under an `Idempotency-Key` (§2.1), receipt scope = the
    /// issuer application, looked up after rule 4 as in the reference. A replay answers the
    /// stored body while the recorded edge is live.
    pub async fn create_delegation_idempotent(
        &self,
        zone_id: &str,
        caller: &Caller,
        req: &CreateDelegation,
        idem: Option<(&Idempotency<'_>, &RenderDelegation)>,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<Idempotent<CreatedDelegation>> {
        let mut constraints = validate_constraints(&req.constraints, req.ttl_seconds)?;
        // 1. Expiry mandatory.
        let expires_at = compute_expiry(req.expires_at, &constraints, now)?;
        // 2. Issuer ownership.
        if !caller.owns_or(&req.issuer_application_id, CAP_DELEGATE_FROM) {
            return Err(CoordinatorError::IssuerOwnershipRequired);
        }
        // 3. Self-delegation.
        if req.source_session_id == req.target_session_id {
            return Err(CoordinatorError::SelfDelegationDenied);
        }
        // 4. Broad edges need an elevated scope; they are stamped.
        let broad = req.resource_id.is_none() && constraints.resources.is_empty();
        if broad {
            let allowed = caller.is_admin()
                || caller.holds(SCOPE_DELEGATE_BROAD)
                || caller.holds(&format!(
                    "{SCOPE_DELEGATE_BROAD}:{}",
                    req.issuer_application_id
                ));
            if !allowed {
                return Err(CoordinatorError::BroadDelegationPermissionRequired);
            }
            constraints
                .map
                .entry("broad_reason")
                .or_insert_with(|| Value::from(DEFAULT_BROAD_REASON));
            constraints
                .map
                .insert("policy_approved".into(), Value::Bool(true));
        }

        let mut tx = self.store.begin(zone_id).await?;
        let scope_id = req.issuer_application_id.as_str();
        if let Some((i, _)) = idem {
            let op = IdempotentOperation::DelegationCreate;
            if let Lookup::Hit(r) = lookup(tx.as_mut(), op, scope_id, i, now).await? {
                let live = tx
                    .get_edge(&r.result_id)
                    .await?
                    .is_some_and(|e| e.is_live(now));
                if !live {
                    return Err(CoordinatorError::IdempotencyResultInactive);
                }
                return Ok(Idempotent::Replayed {
                    status: r.response_status,
                    body: r.response_json,
                });
            }
        }
        // 5. Live endpoints in the zone, applications matching.
        let source = tx
            .get_session(&req.source_session_id)
            .await?
            .filter(|s| s.is_live(now));
        let target = tx
            .get_session(&req.target_session_id)
            .await?
            .filter(|s| s.is_live(now));
        let (Some(source), Some(target)) = (source, target) else {
            return Err(CoordinatorError::DelegationEndpointNotFound);
        };
        if source.application_id != req.issuer_application_id
            || target.application_id != req.receiver_application_id
        {
            return Err(CoordinatorError::DelegationApplicationMismatch);
        }
        // 6. Resources exist; resource_id among constraints.resources; scopes declared.
        let mut resource_row_id = None;
        let mut declared: BTreeSet<String> = BTreeSet::new();
        let mut child_resources: BTreeSet<String> = constraints.resources.iter().cloned().collect();
        if let Some(rid) = &req.resource_id {
            let r = match self.resources.get_resource(zone_id, rid).await? {
                Some(r) => Some(r),
                None => {
                    self.resources
                        .get_resource_by_identifier(zone_id, rid)
                        .await?
                }
            }
            .filter(|r| r.archived_at.is_none())
            .ok_or(CoordinatorError::ResourceNotFound)?;
            declared.extend(r.scopes.iter().cloned());
            if child_resources.is_empty() {
                child_resources.insert(r.identifier.clone());
            } else if !child_resources.contains(&r.identifier) {
                // Resolve the rest first: a missing resource is the earlier answer.
                for ident in &constraints.resources {
                    self.resources
                        .get_resource_by_identifier(zone_id, ident)
                        .await?
                        .filter(|r| r.archived_at.is_none())
                        .ok_or(CoordinatorError::ResourceNotFound)?;
                }
                return Err(CoordinatorError::DelegationResourceScopeMismatch);
            }
            resource_row_id = Some(r.id);
        }
        for ident in &constraints.resources {
            let r = self
                .resources
                .get_resource_by_identifier(zone_id, ident)
                .await?
                .filter(|r| r.archived_at.is_none())
                .ok_or(CoordinatorError::ResourceNotFound)?;
            declared.extend(r.scopes.iter().cloned());
        }
        if !broad && req.scopes.iter().any(|s| !declared.contains(s)) {
            return Err(CoordinatorError::DelegationScopesExceedResource);
        }
        // 7. Parent choice and narrowing.
        let live_inbound: Vec<DelegationEdge> = tx
            .session_edges(&source.agent_session_id, true)
            .await?
            .into_iter()
            .filter(|e| e.is_live(now))
            .collect();
        let parent = choose_parent(&live_inbound, req.parent_edge_id.as_deref())?.cloned();
        let mut scopes: Vec<String> = Vec::new();
        for s in &req.scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        let edge = DelegationEdge {
            id: self.ids.next_id(),
            zone_id: zone_id.to_owned(),
            source_session_id: source.agent_session_id.clone(),
            target_session_id: target.agent_session_id.clone(),
            issuer_application_id: req.issuer_application_id.clone(),
            receiver_application_id: req.receiver_application_id.clone(),
            parent_edge_id: parent.as_ref().map(|p| p.id.clone()),
            resource_id: resource_row_id.clone(),
            scopes,
            constraints_json: constraints.map.clone(),
            status: EdgeStatus::Active,
            expires_at,
            edge_version: 0,
            revoked_at: None,
            created_at: now,
        };
        let child_bounds = EdgeBounds {
            resources: (!broad).then_some(child_resources.clone()),
            ..EdgeBounds::of(&edge, None, false)?
        };
        if let Some(p) = &parent {
            let parent_bounds = match self.bounds(zone_id, p).await {
                Ok(b) => b,
                Err(CoordinatorError::InvalidDelegationConstraint) => {
                    return Err(CoordinatorError::DelegationExceedsParentAuthority(
                        ExceedsParent::Unreadable,
                    ));
                }
                Err(e) => return Err(e),
            };
            check_narrowing(&parent_bounds, &child_bounds)?;
        }
        // 8. No cycle among live edges.
        let live = tx.live_edges(now).await?;
        if would_cycle(&live, &edge.source_session_id, &edge.target_session_id) {
            return Err(CoordinatorError::DelegationCycleDenied);
        }
        // 9. Expiry in the future.
        if edge.expires_at <= now {
            return Err(CoordinatorError::DelegationExpired);
        }

        tx.insert_edge(&edge).await?;
        let epoch = tx.bump_epoch().await?;
        tx.enqueue(&events::invalidate(
            EdgeEvent::Create,
            &edge,
            epoch,
            std::slice::from_ref(&edge.id),
            "created",
        ))
        .await?;

        let effective_authority = EdgeAuthority {
            source_session_id: edge.source_session_id.clone(),
            target_session_id: edge.target_session_id.clone(),
            parent_edge_id: edge.parent_edge_id.clone(),
            resource_id: edge.resource_id.clone(),
            resources: child_resources.into_iter().collect(),
            scopes: edge.scopes.clone(),
            expires_at: edge.expires_at,
            max_hops: child_bounds.max_hops,
            ttl_seconds: child_bounds.ttl_seconds,
            broad,
            parent_edges_considered: live_inbound.iter().map(|e| e.id.clone()).collect(),
        };
        let created = CreatedDelegation {
            warnings: if broad { vec![WARNING_BROAD] } else { vec![] },
            allow_reason: vec![
                "same_zone_endpoints_active",
                if broad {
                    "broad_delegation_elevated"
                } else {
                    "resource_scope_checked"
                },
                if parent.is_some() {
                    "parent_authority_narrowed"
                } else {
                    "source_authority_root"
                },
                "typed_constraints_validated",
            ],
            effective_authority,
            epoch,
            edge,
        };
        if let Some((i, render)) = idem {
            let body = render(&created);
            let op = IdempotentOperation::DelegationCreate;
            let id = created.edge.id.clone();
            record(tx.as_mut(), op, scope_id, i, &id, 201, body, now).await?;
        }
        tx.commit().await?;
        Ok(Idempotent::Fresh(created))
    }

    /// `PATCH …/delegations/{id}/revoke` (§1.6): revoke the edge and every live edge below it,
    /// terminate the target sessions' subtrees (`delegation_revoked`; touching edges revoked
    /// too), bump the epoch once, enqueue `edge_revoke` and one revocation message per
    /// terminated session naming the edge. A missing or no longer active edge is `404
    /// delegation_not_found`.
    pub async fn revoke_delegation(
        &self,
        zone_id: &str,
        caller: &Caller,
        edge_id: &str,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<RevokeOutcome> {
        let mut tx = self.store.begin(zone_id).await?;
        let root = tx
            .get_edge(edge_id)
            .await?
            .filter(|e| e.status == EdgeStatus::Active)
            .ok_or(CoordinatorError::DelegationNotFound)?;
        if !caller.owns_or(&root.issuer_application_id, CAP_DELEGATE_FROM) {
            return Err(CoordinatorError::IssuerOwnershipRequired);
        }
        let mut cascade = Cascade::default();
        revoke_edge_closure(tx.as_mut(), vec![root.clone()], now, &mut cascade.revoked).await?;
        let mut affected: Vec<String> = Vec::new();
        for e in &cascade.revoked {
            if !affected.contains(&e.target_session_id) {
                affected.push(e.target_session_id.clone());
            }
        }
        for sid in &affected {
            let Some(s) = tx.get_session(sid).await? else {
                continue;
            };
            if s.status.is_terminal() {
                continue;
            }
            let sessions = subtree(tx.as_mut(), &s).await?;
            terminate_sessions(
                tx.as_mut(),
                sessions,
                SessionStatus::Terminated,
                REASON_DELEGATION_REVOKED,
                REASON_DELEGATION_REVOKED,
                now,
                &mut cascade,
            )
            .await?;
        }
        // The named edge leads the invalidation message.
        let revoked_ids: Vec<String> = cascade.revoked.iter().map(|e| e.id.clone()).collect();
        let (terminated, epoch) = self
            .finish_cascade(
                tx.as_mut(),
                cascade,
                REASON_DELEGATION_REVOKED,
                Some(&root.id),
                now,
            )
            .await?;
        // The named edge is always revoked here, so the cascade bumped the epoch.
        let epoch = epoch.ok_or(CoordinatorError::DelegationNotFound)?;
        tx.commit().await?;
        Ok(RevokeOutcome {
            revoked_edges: revoked_ids,
            affected_sessions: affected,
            terminated_sessions: terminated,
            epoch,
        })
    }

    /// The session for a reader (`GET …/agents/{id}` and the read-only views):
    /// `404 session_not_found` if missing, or if the caller is not an admin and does not own
    /// its application. The one reader rule of the Coordinator.
    pub async fn readable_session(
        &self,
        zone_id: &str,
        caller: &Caller,
        id: &str,
    ) -> CoordinatorResult<crate::model::session::Session> {
        self.store
            .get_session(zone_id, id)
            .await?
            .filter(|s| caller.is_admin() || caller.client_id == s.application_id)
            .ok_or(CoordinatorError::SessionNotFound)
    }

    /// `GET …/agents/{id}/effective-authority` (§1.6), read-only.
    pub async fn effective_authority(
        &self,
        zone_id: &str,
        caller: &Caller,
        session_id: &str,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<EffectiveAuthority> {
        let s = self.readable_session(zone_id, caller, session_id).await?;
        let mut inbound = Vec::new();
        for e in self
            .store
            .session_edges(zone_id, &s.agent_session_id, true)
            .await?
            .into_iter()
            .filter(|e| e.is_live(now))
        {
            let b = match self.bounds(zone_id, &e).await {
                Ok(b) => b,
                // Fail closed: an unreadable edge allows nothing.
                Err(CoordinatorError::InvalidDelegationConstraint) => EdgeBounds {
                    scopes: BTreeSet::new(),
                    expires_at: e.expires_at,
                    resources: Some(BTreeSet::new()),
                    max_hops: 0,
                    ttl_seconds: None,
                    budget: None,
                },
                Err(err) => return Err(err),
            };
            inbound.push((e, b));
        }
        Ok(effective_authority(&s.agent_session_id, &inbound))
    }

    /// The named edge and its live downstream edges, for traverse / impact. Admin only
    /// (`403 coordinator_admin_required`, checked first), `404 delegation_not_found` if the
    /// edge is missing.
    async fn downstream_rows(
        &self,
        zone_id: &str,
        caller: &Caller,
        edge_id: &str,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<Vec<(DelegationEdge, u32)>> {
        if !caller.is_admin() {
            return Err(CoordinatorError::CoordinatorAdminRequired);
        }
        let root = self
            .store
            .get_edge(zone_id, edge_id)
            .await?
            .ok_or(CoordinatorError::DelegationNotFound)?;
        let mut tx = self.store.begin(zone_id).await?;
        let live = tx.live_edges(now).await?;
        drop(tx);
        let mut rows = vec![(root.clone(), 0)];
        rows.extend(
            downstream_edges(&live, &root.id)
                .into_iter()
                .map(|(e, d)| (e.clone(), d)),
        );
        Ok(rows)
    }

    /// `GET …/delegations/{id}/traverse`: `[{id, source_session_id, target_session_id,
    /// depth}]`, the named edge at depth 0, then its live downstream edges (read-only).
    pub async fn traverse(
        &self,
        zone_id: &str,
        caller: &Caller,
        edge_id: &str,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<Vec<TraverseRow>> {
        Ok(self
            .downstream_rows(zone_id, caller, edge_id, now)
            .await?
            .into_iter()
            .map(|(e, depth)| TraverseRow {
                id: e.id,
                source_session_id: e.source_session_id,
                target_session_id: e.target_session_id,
                depth,
            })
            .collect())
    }

    /// `GET …/delegations/{id}/impact`: the edges, sessions and subject records a revoke of
    /// this edge would touch now (read-only).
    pub async fn impact(
        &self,
        zone_id: &str,
        caller: &Caller,
        edge_id: &str,
        now: DateTime<Utc>,
    ) -> CoordinatorResult<ImpactReport> {
        let rows = self.downstream_rows(zone_id, caller, edge_id, now).await?;
        let mut tx = self.store.begin(zone_id).await?;
        let mut sessions: Vec<String> = Vec::new();
        let mut records: BTreeMap<String, ()> = BTreeMap::new();
        for (e, _) in &rows {
            if e.status != EdgeStatus::Active {
                continue;
            }
            let Some(t) = tx.get_session(&e.target_session_id).await? else {
                continue;
            };
            for s in subtree(tx.as_mut(), &t).await? {
                if !s.status.is_terminal() && !sessions.contains(&s.agent_session_id) {
                    records.insert(s.subject_authority_record_id.clone(), ());
                    sessions.push(s.agent_session_id);
                }
            }
        }
        drop(tx);
        Ok(ImpactReport {
            edge_id: edge_id.to_owned(),
            affected_edges: rows
                .into_iter()
                .map(|(e, depth)| TraverseRow {
                    id: e.id,
                    source_session_id: e.source_session_id,
                    target_session_id: e.target_session_id,
                    depth,
                })
                .collect(),
            affected_sessions: sessions,
            affected_authority_records: records.into_keys().collect(),
        })
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

    fn edge(id: &str, src: &str, dst: &str, parent: Option<&str>) -> DelegationEdge {
        DelegationEdge {
            id: id.into(),
            zone_id: "z".into(),
            source_session_id: src.into(),
            target_session_id: dst.into(),
            issuer_application_id: "a".into(),
            receiver_application_id: "a".into(),
            parent_edge_id: parent.map(str::to_owned),
            resource_id: None,
            scopes: vec!["read".into()],
            constraints_json: Map::new(),
            status: EdgeStatus::Active,
            expires_at: t0() + Duration::hours(1),
            edge_version: 0,
            revoked_at: None,
            created_at: t0(),
        }
    }

    fn bounds(scopes: &[&str], hops: u32) -> EdgeBounds {
        EdgeBounds {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires_at: t0() + Duration::hours(1),
            resources: Some(BTreeSet::from(["resource://r1".to_owned()])),
            max_hops: hops,
            ttl_seconds: None,
            budget: None,
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn constraints_are_strict_and_normalised() {
        let v = validate_constraints(
            &obj(serde_json::json!({"max_depth": 3, "resources": ["r", "r"], "budget": null})),
            Some(60),
        )
        .unwrap();
        assert_eq!(v.map["max_hops"], 3);
        assert!(!v.map.contains_key("max_depth"));
        assert_eq!(v.resources, vec!["r"]);
        assert_eq!(v.ttl_seconds, Some(60));
        let code = |c: Value, ttl| validate_constraints(&obj(c), ttl).unwrap_err().code();
        assert_eq!(
            code(serde_json::json!({"x": 1}), None),
            "invalid_delegation_constraint"
        );
        assert_eq!(
            code(serde_json::json!({"max_hops": 11}), None),
            "invalid_max_hops"
        );
        assert_eq!(
            code(serde_json::json!({"max_hops": 0}), None),
            "invalid_max_hops"
        );
        assert_eq!(
            code(serde_json::json!({"ttl_seconds": 5}), Some(6)),
            "invalid_ttl_seconds"
        );
        assert_eq!(
            code(serde_json::json!({"expires_at": "soon"}), None),
            "invalid_expires_at"
        );
        assert_eq!(
            code(serde_json::json!({"broad_reason": ""}), None),
            "invalid_broad_reason"
        );
        assert_eq!(
            code(serde_json::json!({"resources": [1]}), None),
            "invalid_resources"
        );
        assert_eq!(code(serde_json::json!({}), Some(0)), "invalid_body");
    }

    #[test]
    fn expiry_prefers_explicit_then_ttl() {
        let none = validate_constraints(&Map::new(), None).unwrap();
        assert_eq!(
            compute_expiry(None, &none, t0()).unwrap_err().code(),
            "delegation_expiry_required"
        );
        let ttl = validate_constraints(&Map::new(), Some(30)).unwrap();
        assert_eq!(
            compute_expiry(None, &ttl, t0()).unwrap(),
            t0() + Duration::seconds(30)
        );
        let at = t0() + Duration::seconds(5);
        assert_eq!(compute_expiry(Some(at), &ttl, t0()).unwrap(), at);
    }

    #[test]
    fn parent_choice_rules() {
        let a = edge("a", "x", "s", None);
        let b = edge("b", "y", "s", None);
        assert_eq!(choose_parent(&[], None).unwrap(), None);
        assert_eq!(
            choose_parent(std::slice::from_ref(&a), None).unwrap(),
            Some(&a)
        );
        let both = [a.clone(), b.clone()];
        assert_eq!(
            choose_parent(&both, None).unwrap_err().code(),
            "parent_delegation_ambiguous"
        );
        assert_eq!(choose_parent(&both, Some("b")).unwrap(), Some(&b));
        assert_eq!(
            choose_parent(&both, Some("c")).unwrap_err().code(),
            "parent_delegation_not_active"
        );
    }

    #[test]
    fn narrowing_bounds() {
        let p = bounds(&["read", "write"], 3);
        assert!(check_narrowing(&p, &bounds(&["read"], 2)).is_ok());
        let fail = |c: &EdgeBounds| match check_narrowing(&p, c) {
            Err(CoordinatorError::DelegationExceedsParentAuthority(b)) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!(fail(&bounds(&["admin"], 1)), ExceedsParent::Scopes);
        assert_eq!(fail(&bounds(&["read"], 3)), ExceedsParent::Hops);
        let mut broad = bounds(&["read"], 1);
        broad.resources = None;
        assert_eq!(fail(&broad), ExceedsParent::Resources);
        let mut later = bounds(&["read"], 1);
        later.expires_at += Duration::seconds(1);
        assert_eq!(fail(&later), ExceedsParent::Expiry);
        // Parent at the default hop count allows no child at all.
        assert!(check_narrowing(&bounds(&["read"], 1), &bounds(&["read"], 1)).is_err());
        // TTL and budget.
        let mut pt = p.clone();
        pt.ttl_seconds = Some(60);
        pt.budget = Some(1);
        let mut c = bounds(&["read"], 1);
        assert!(matches!(
            check_narrowing(&pt, &c),
            Err(CoordinatorError::DelegationExceedsParentAuthority(
                ExceedsParent::Ttl
            ))
        ));
        c.ttl_seconds = Some(60);
        assert!(check_narrowing(&pt, &c).is_ok());
        let mut two = bounds(&["read", "write"], 1);
        two.ttl_seconds = Some(1);
        assert!(matches!(
            check_narrowing(&pt, &two),
            Err(CoordinatorError::DelegationExceedsParentAuthority(
                ExceedsParent::Budget
            ))
        ));
        // A broad parent bounds no resource.
        let mut bp = p.clone();
        bp.resources = None;
        assert!(check_narrowing(&bp, &broad).is_ok());
    }

    #[test]
    fn cycles_and_downstream() {
        let edges = vec![
            edge("1", "a", "b", None),
            edge("2", "b", "c", Some("1")),
            edge("3", "c", "d", Some("2")),
        ];
        assert!(would_cycle(&edges, "d", "a"));
        assert!(would_cycle(&edges, "c", "b"));
        assert!(!would_cycle(&edges, "a", "d"));
        let down: Vec<(&str, u32)> = downstream_edges(&edges, "1")
            .into_iter()
            .map(|(e, d)| (e.id.as_str(), d))
            .collect();
        assert_eq!(down, vec![("2", 1), ("3", 2)]);
    }

    #[test]
    fn effective_authority_without_edges_is_not_delegation_bounded() {
        let ea = effective_authority("s", &[]);
        assert_eq!(ea.effective_max_hops, Some(0));
        assert!(ea.effective_scopes.is_empty());
        assert_eq!(ea.earliest_expires_at, None);
        let e = edge("1", "a", "s", None);
        let ea = effective_authority("s", &[(e, bounds(&["read"], 2))]);
        assert_eq!(ea.effective_scopes, vec!["read"]);
        assert_eq!(ea.effective_max_hops, Some(2));
        assert!(ea.effective_resource_constrained);
    }
}
