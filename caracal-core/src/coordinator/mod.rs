//! The Coordinator's rules: Sessions ("agents"), service leases, delegation edges, the
//! per-zone graph epoch and the cascades that tie them together (reference
//! `control-plane.md` §1.5, §1.6, §2).
//!
//! The HTTP layer (auth, body parsing, rendering) is not here: a route builds a [`Caller`]
//! from the verified session mandate (or the operator token), parses its body into one of the
//! request structs below, calls a [`Coordinator`] method with the request's trusted `now`, and
//! renders the typed result or [`CoordinatorError::to_api`].
//!
//! ## Shape
//!
//! Every operation is split in two:
//!
//! - **Pure decisions** over records already read (`pub fn` in [`sessions`] and
//!   [`delegation`]: [`sessions::check_start_body`], [`sessions::check_parent`], [`sessions::check_terminate`],
//!   [`sessions::check_lease`], [`sessions::check_heartbeat`], [`sessions::choose_inherited_edge`],
//!   [`delegation::validate_constraints`], [`delegation::compute_expiry`],
//!   [`delegation::choose_parent`], [`delegation::check_narrowing`],
//!   [`delegation::would_cycle`], [`delegation::downstream_edges`],
//!   [`delegation::effective_authority`]). They take no store and no clock, so the property
//!   tests drive them directly.
//! - **Orchestration** on [`Coordinator`]: open the zone's unit of work
//!   ([`CoordinatorStore::begin`]), read, decide, write, enqueue the outbox messages and bump
//!   the epoch through the same unit of work, commit. A refused operation drops the unit of
//!   work, so nothing it wrote (rows, epoch, outbox) survives. Two operations that must commit
//!   *and* answer an error ([`Coordinator::acquire_lease`] / [`Coordinator::heartbeat`] on an
//!   expired lease or an inactive subject) commit the cascade first, then return the error.
//!
//! ## Map to the reference
//!
//! | Function | Reference |
//! |---|---|
//! | [`Coordinator::start_session`], [`sessions::check_start_body`], [`sessions::check_parent`], [`sessions::choose_inherited_edge`] | §1.5 invariants, limits, authority inheritance; §2 `POST /agents`; http-bodies §11.2 check order |
//! | [`Coordinator::acquire_lease`], [`Coordinator::heartbeat`], [`sessions::check_lease`], [`sessions::check_heartbeat`] | §1.5 service sessions & leases; §7 items 12–14 |
//! | [`Coordinator::suspend`], [`Coordinator::resume`] | §1.5 states; §7 item 10 |
//! | [`Coordinator::terminate`], [`sessions::check_terminate`] | §1.5 terminate; §7 items 9, 12 |
//! | [`Coordinator::create_delegation`] and the pure rules of [`delegation`] | §1.6 create rules 1–9, in order; http-bodies §11.3 |
//! | [`Coordinator::revoke_delegation`] | §1.6 revoke; §7 item 25 |
//! | [`Coordinator::effective_authority`], [`delegation::effective_authority`] | §1.6 effective authority; http-bodies §11.3 |
//! | [`Coordinator::traverse`], [`Coordinator::impact`] | §2 traverse / impact (operator only) |
//! | [`idempotency`], `*_idempotent` | §2.1; http-bodies §11.1 |
//! | [`events`] | §2.2 topics; audit-streams-schema §1; sts.md §6.2 |
//!
//! ## Invariants kept by every write
//!
//! - One graph-epoch bump per unit of work that creates or revokes at least one edge, never
//!   more, and every `caracal.delegations.invalidate` message of that unit carries it.
//! - A session leaving `active` (suspend, terminate) enqueues one lifecycle event and one
//!   `caracal.sessions.revoke` message per session, in the same unit of work.
//! - Terminating a session revokes every active edge touching it (either end).
//! - Fail closed: a store error aborts the operation ([`CoordinatorError::Store`], 500) and
//!   nothing is written.
//!
//! Idempotency (§2.1): [`Coordinator::start_session_idempotent`] and
//! [`Coordinator::create_delegation_idempotent`] read and write the receipt in the same unit
//! of work as the effect ([`idempotency`]). The receipt is looked up right after the unit of
//! work opens: for delegations that is the reference's place (after rule 4); for sessions it
//! is after the application and subject-record checks rather than right after ownership, so
//! a replay for an application archived since answers `404 application_not_found`.

pub mod delegation;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod sessions;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Duration;

use crate::ids::SharedIdGen;
use crate::store::authority::AuthorityStore;
use crate::store::coordinator::CoordinatorStore;
use crate::store::directory::{ApplicationStore, ResourceStore};

pub use delegation::{
    CreateDelegation, CreatedDelegation, EffectiveAuthority, ImpactReport, RevokeOutcome,
    TraverseRow,
};
pub use error::{CoordinatorError, CoordinatorResult};
pub use idempotency::{Idempotency, IdempotencyKeys, Idempotent};
pub use sessions::{HeartbeatOutcome, LeaseOutcome, ParentAuthority, StartSession, StartedSession};

/// Scope that makes a caller an operator of the Coordinator: it satisfies every ownership
/// capability and may read traverse / impact.
pub const SCOPE_ADMIN: &str = "coordinator.admin";
/// Capability prefix: start a session for another application (`coordinator.spawn_for:<app>`).
pub const CAP_SPAWN_FOR: &str = "coordinator.spawn_for";
/// Capability prefix: start a child under another application's session.
pub const CAP_SPAWN_UNDER: &str = "coordinator.spawn_under";
/// Capability prefix: issue or revoke edges for another application.
pub const CAP_DELEGATE_FROM: &str = "coordinator.delegate_from";
/// Scope (optionally suffixed `:<app>`) allowing resource-unbound ("broad") edges.
pub const SCOPE_DELEGATE_BROAD: &str = "coordinator.delegate_broad";

/// The principal of a Coordinator request, already authenticated by the route layer.
///
/// Invariant: `client_id` is the verified application id of the session mandate (or
/// `caracal-operator` for the operator token, which carries [`SCOPE_ADMIN`]); `scopes` are
/// the mandate's scopes, used as capabilities. Nothing here is trusted from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The calling application (`client_id`).
    pub client_id: String,
    /// The mandate's `sid` (its authority record), when the caller presented a mandate.
    pub sid: Option<String>,
    /// The mandate's scopes.
    pub scopes: BTreeSet<String>,
}

impl Caller {
    /// An application caller.
    pub fn application(
        client_id: impl Into<String>,
        sid: Option<String>,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            sid,
            scopes: scopes.into_iter().map(Into::into).collect(),
        }
    }

    /// The static operator token: acts as `caracal-operator` with [`SCOPE_ADMIN`].
    pub fn operator() -> Self {
        Self::application("caracal-operator", None, [SCOPE_ADMIN])
    }

    /// Whether the caller holds `coordinator.admin`.
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(SCOPE_ADMIN)
    }

    /// Whether the caller holds exactly `scope`.
    pub fn holds(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    /// Ownership of `application_id`: the caller is that application, holds
    /// `<capability>:<application_id>`, or is an admin.
    pub fn owns_or(&self, application_id: &str, capability: &str) -> bool {
        self.client_id == application_id
            || self.is_admin()
            || self.holds(&format!("{capability}:{application_id}"))
    }
}

/// Platform limits (reference §1.5 defaults). Tests lower them to reach the refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Live sessions per zone (`MAX_AGENTS_PER_ZONE`, 50).
    pub sessions_per_zone: u64,
    /// Live sessions per application (200).
    pub sessions_per_application: u64,
    /// Deepest session (root 0; 10).
    pub max_depth: i32,
    /// Children per parent (10); stored on each session as `max_children`.
    pub max_children: i32,
    /// Service lease length (`SERVICE_AGENT_LEASE_SECONDS`, 120 s).
    pub lease: Duration,
    /// Default task TTL (3600 s).
    pub default_task_ttl_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sessions_per_zone: 50,
            sessions_per_application: 200,
            max_depth: 10,
            max_children: 10,
            lease: Duration::seconds(120),
            default_task_ttl_seconds: 3600,
        }
    }
}

/// The Coordinator engine: the stores it reads and writes, the id source, the limits.
///
/// Cheap to clone (every field is shared). Time is never read here: each operation takes the
/// request's `now`.
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) store: Arc<dyn CoordinatorStore>,
    pub(crate) applications: Arc<dyn ApplicationStore>,
    pub(crate) authority: Arc<dyn AuthorityStore>,
    pub(crate) resources: Arc<dyn ResourceStore>,
    pub(crate) ids: SharedIdGen,
    pub(crate) limits: Limits,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// A Coordinator over the given stores with the default [`Limits`].
    pub fn new(
        store: Arc<dyn CoordinatorStore>,
        applications: Arc<dyn ApplicationStore>,
        authority: Arc<dyn AuthorityStore>,
        resources: Arc<dyn ResourceStore>,
        ids: SharedIdGen,
    ) -> Self {
        Self {
            store,
            applications,
            authority,
            resources,
            ids,
            limits: Limits::default(),
        }
    }

    /// Replace the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}
