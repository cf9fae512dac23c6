//! The storage contract suite: one set of cases every implementation of the store traits must
//! pass, written once and run unchanged against the in-memory store (`tests/store_memory.rs`)
//! and the Postgres backend.
//!
//! ## Plugging a backend in
//!
//! Include this file as a module (`#[path = "contract/store.rs"] mod store_contract;`), build
//! a [`Ctx`] around a handle implementing every trait of [`Stores`] (cloneable, `'static`),
//! and call the cases, one `#[tokio::test(flavor = "multi_thread")]` each (see
//! `tests/store_memory.rs`), or [`run_all`] with a factory of contexts. The expiring-key cases
//! ([`run_all_ephemeral`], `ephemeral_*`) need only [`EphemeralKeys`], which deployments back
//! with Redis rather than Postgres.
//!
//! - [`Ctx::fresh`]: the store holds nothing but what the case writes (a new `MemoryStore`,
//!   or a new database per case). Global counts (outbox stats, `list_zones`) are asserted
//!   exactly.
//! - [`Ctx::shared`]: cases share one database with other cases running at the same time and
//!   with earlier runs. Every id is a fresh UUIDv7 and every unique name carries the run's
//!   prefix plus a random part ([`Ctx::unique`]), so cases never collide; zone-scoped lists
//!   are still asserted exactly (each case makes its own zones), while the global ones
//!   (zones, admin tokens, outbox claim and stats) are checked in ways other rows cannot
//!   disturb: a private time slot for the global lists, claims that keep claiming until the
//!   case's own rows are seen, and stats compared as deltas. The cases that claim, publish or
//!   kill outbox rows take a process-wide lock in shared mode (a claim at a later instant
//!   would legitimately re-lease another case's rows, and the stats deltas need to be theirs
//!   alone); every other case only ever adds pending outbox rows.
//!
//! ## Time
//!
//! The Postgres backend cannot run on a fake clock, so every case passes instants explicitly
//! where a trait takes one, using the wall clock truncated to milliseconds (so a round trip
//! through `timestamptz` compares equal) plus explicit offsets. Expiring keys judge expiry by
//! the implementation's own clock; their cases use real one-second TTLs and move time with
//! [`Ctx::pass_time`], which advances the harness's fake clock when one was given
//! ([`Ctx::with_time_travel`]) and otherwise really sleeps.
//!
//! Every wait that could hang on a bug (unit-of-work locks, spawned tasks) runs under a
//! timeout ([`WAIT`]).
//!
//! A Postgres pool for the concurrency cases needs at least 10 connections (8 concurrent
//! units of work plus the case's own reads).

// Each runner includes this file as its own module and may run a subset (a backend without
// expiring keys skips those cases).
#![allow(dead_code)]
// Assertions are how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use caracal_core::model::Attribution;
use caracal_core::model::admin_token::{AdminToken, Capability, TokenScope};
use caracal_core::model::application::{Application, RegistrationMethod};
use caracal_core::model::approval::{Approval, ApprovalState, ApproverClass, PrivacyMode};
use caracal_core::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use caracal_core::model::delegation::{DelegationEdge, EdgeStatus};
use caracal_core::model::policy_set::{
    ManifestEntry, Policy, PolicySet, PolicySetVersion, PolicyVersion, content_sha256,
    manifest_sha256,
};
use caracal_core::model::provider::{Provider, ProviderKind};
use caracal_core::model::resource::{Operation, OperationEnforcement, Resource};
use caracal_core::model::session::{Lifecycle, Session, SessionStatus};
use caracal_core::model::zone::Zone;
use caracal_core::store::approvals::{ApprovalDecision, ApprovalStore, ApprovalUpdate};
use caracal_core::store::authority::{AuthorityStore, MAX_LINEAGE_DEPTH};
use caracal_core::store::coordinator::{
    CoordinatorStore, CoordinatorTx, EdgeFilter, IdPage, IdempotencyReceipt, IdempotentOperation,
    SessionFilter,
};
use caracal_core::store::directory::{
    AdminTokenStore, ApplicationStore, ProviderStore, ResourceStore, SecretStore, ZoneStore,
};
use caracal_core::store::ephemeral::EphemeralKeys;
use caracal_core::store::keys::SigningKeyStore;
use caracal_core::store::outbox::{OutboxMessage, OutboxRow, OutboxStore};
use caracal_core::store::policy::PolicyStore;
use caracal_core::store::{Cursor, Listing, Page, PageRequest, StoreError, StoreResult};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Every durable store trait: what a backend must implement to run the suite.
pub trait Stores:
    ZoneStore
    + ApplicationStore
    + ResourceStore
    + ProviderStore
    + SecretStore
    + AdminTokenStore
    + AuthorityStore
    + SigningKeyStore
    + OutboxStore
    + PolicyStore
    + ApprovalStore
    + CoordinatorStore
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Stores for T where
    T: ZoneStore
        + ApplicationStore
        + ResourceStore
        + ProviderStore
        + SecretStore
        + AdminTokenStore
        + AuthorityStore
        + SigningKeyStore
        + OutboxStore
        + PolicyStore
        + ApprovalStore
        + CoordinatorStore
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Moves the implementation's clock forward (a fake clock's `advance`).
pub type TimeTravel = Arc<dyn Fn(StdDuration) + Send + Sync>;

/// What a case runs against.
#[derive(Clone)]
pub struct Ctx<S> {
    /// The store under test.
    pub store: S,
    /// Marks this run's names (lowercase letters, digits and `-`).
    pub prefix: String,
    /// Whether the store holds only what this case writes.
    pub fresh: bool,
    time_travel: Option<TimeTravel>,
}

impl<S> Ctx<S> {
    /// A context on a store that holds nothing but what the case writes.
    pub fn fresh(store: S) -> Self {
        Self {
            store,
            prefix: unique_prefix(),
            fresh: true,
            time_travel: None,
        }
    }

    /// A context on a store shared with other cases and earlier runs; `prefix` marks this
    /// run's names (lowercase letters, digits and `-`; [`unique_prefix`] makes one).
    pub fn shared(store: S, prefix: impl Into<String>) -> Self {
        Self {
            store,
            prefix: prefix.into(),
            fresh: false,
            time_travel: None,
        }
    }

    /// Use `advance` instead of sleeping when a case waits for keys to expire.
    pub fn with_time_travel(mut self, advance: TimeTravel) -> Self {
        self.time_travel = Some(advance);
        self
    }

    /// A name no other case or run uses: `<prefix>-<what>-<random>`, valid as a slug.
    pub fn unique(&self, what: &str) -> String {
        let r = Uuid::now_v7().simple().to_string();
        format!("{}-{}-{}", self.prefix, what, &r[20..])
    }

    /// Let `d` pass for the store's expiring keys.
    pub async fn pass_time(&self, d: StdDuration) {
        match &self.time_travel {
            Some(advance) => advance(d),
            None => tokio::time::sleep(d).await,
        }
    }
}

/// A fresh run prefix: `c` and 10 hex digits.
pub fn unique_prefix() -> String {
    let r = Uuid::now_v7().simple().to_string();
    format!("c{}", &r[22..])
}

/// The longest any single wait may take before the case fails instead of hanging.
pub const WAIT: StdDuration = StdDuration::from_secs(10);

/// Await `f`, failing the case if it takes longer than [`WAIT`].
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// Join a spawned task under a timeout.
async fn join<T>(what: &str, h: tokio::task::JoinHandle<T>) -> T {
    within(what, h)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Serialises the cases that claim, publish or kill outbox rows when the store is shared
/// (every other case only adds pending rows).
static OUTBOX_CLAIMS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn outbox_guard<S>(ctx: &Ctx<S>) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    if ctx.fresh {
        None
    } else {
        Some(within("outbox case lock", OUTBOX_CLAIMS.lock()).await)
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A fresh UUIDv7 id.
pub fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// The wall clock truncated to milliseconds (exact through `timestamptz`).
pub fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

/// A time slot no other run uses, for rows listed by the global (unzoned) lists: a random
/// second in the 23rd century.
fn private_slot() -> DateTime<Utc> {
    let r = (Uuid::now_v7().as_u128() & 0xFFFF_FFFF) as i64;
    DateTime::from_timestamp(7_258_118_400 + r, 0).unwrap()
}

#[track_caller]
fn assert_conflict<T: Debug>(r: StoreResult<T>, constraint: &str) {
    match r {
        Err(StoreError::Conflict { constraint: c }) => {
            assert_eq!(c, constraint, "conflict on the wrong constraint")
        }
        other => panic!("expected a conflict on {constraint}, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: Debug>(r: StoreResult<T>) {
    match r {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

fn attribution() -> Attribution {
    Attribution::created_by("admin:contract")
}

// ---------------------------------------------------------------------------------------------
// Row builders
// ---------------------------------------------------------------------------------------------

fn zone_row(slug: &str, t: DateTime<Utc>) -> Zone {
    Zone {
        id: new_id(),
        name: format!("Zone {slug}"),
        slug: slug.to_owned(),
        dcr_enabled: false,
        operator_coauthor_badge: false,
        operator_governed: false,
        attribution: attribution(),
        created_at: t,
        updated_at: t,
        archived_at: None,
    }
}

fn app_row(zone_id: &str, name: &str, t: DateTime<Utc>) -> Application {
    Application {
        id: new_id(),
        zone_id: zone_id.to_owned(),
        name: name.to_owned(),
        registration_method: RegistrationMethod::Managed,
        traits: vec!["team:payments".into()],
        expires_at: None,
        archived_at: None,
        attribution: attribution(),
        created_at: t,
        updated_at: t,
        client_secret_hash: Some("argon2id$c2FsdA$aGFzaA".into()),
    }
}

fn resource_row(zone_id: &str, identifier: &str, t: DateTime<Utc>) -> Resource {
    Resource {
        id: new_id(),
        zone_id: zone_id.to_owned(),
        name: format!("Resource {identifier}"),
        identifier: identifier.to_owned(),
        upstream_url: Some("https://upstream.example/api".into()),
        scopes: vec!["items:read".into(), "items:write".into()],
        credential_provider_id: None,
        operations: vec![Operation {
            method: "GET".into(),
            path: "/items".into(),
            scope: "items:read".into(),
        }],
        operation_enforcement: OperationEnforcement::Enforced,
        attribution: attribution(),
        created_at: t,
        updated_at: t,
        archived_at: None,
    }
}

fn provider_row(zone_id: &str, identifier: &str, t: DateTime<Utc>) -> Provider {
    let mut config = serde_json::Map::new();
    config.insert("auth_scheme".into(), json!("Bearer"));
    Provider {
        id: new_id(),
        zone_id: zone_id.to_owned(),
        name: format!("Provider {identifier}"),
        identifier: identifier.to_owned(),
        kind: ProviderKind::BearerToken,
        config_json: config,
        secret_config_keys: vec!["bearer_token".into()],
        connectivity_failed_at: None,
        attribution: attribution(),
        created_at: t,
        updated_at: t,
        archived_at: None,
    }
}

fn token_row(name: &str, sha: [u8; 32], t: DateTime<Utc>) -> AdminToken {
    AdminToken {
        id: new_id(),
        name: name.to_owned(),
        scope: TokenScope::Global,
        capability: Capability::Write,
        zone_id: None,
        created_by: Some("admin:bootstrap".into()),
        created_at: t,
        last_used_at: None,
        revoked_at: None,
        token_sha256: sha,
    }
}

/// A random 32-byte digest.
fn digest() -> [u8; 32] {
    let a = Uuid::now_v7().as_u128().to_le_bytes();
    let b = Uuid::now_v7().as_u128().to_be_bytes();
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&a);
    out[16..].copy_from_slice(&b);
    out
}

/// A fresh approval binding: lowercase hex SHA-256, as the STS computes it.
fn binding() -> String {
    hex::encode(digest())
}

fn authority_row(
    zone_id: &str,
    subject: &str,
    parent: Option<&str>,
    t: DateTime<Utc>,
) -> AuthorityRecord {
    AuthorityRecord {
        id: new_id(),
        zone_id: zone_id.to_owned(),
        session_type: SubjectType::User,
        subject_id: subject.to_owned(),
        parent_id: parent.map(str::to_owned),
        status: AuthorityStatus::Active,
        expires_at: t + secs(3600),
        authenticated_at: Some(t),
        claims_json: json!({"scope": "items:read"}),
        revoked_at: None,
        revoked_reason: None,
        created_at: t,
    }
}

fn policy_row(zone_id: &str, name: &str, t: DateTime<Utc>) -> Policy {
    Policy {
        id: new_id(),
        zone_id: zone_id.to_owned(),
        name: name.to_owned(),
        description: Some("contract".into()),
        attribution: attribution(),
        created_at: t,
        updated_at: t,
        archived_at: None,
    }
}

fn policy_version_row(policy: &Policy, content: &str, t: DateTime<Utc>) -> PolicyVersion {
    PolicyVersion {
        id: new_id(),
        policy_id: policy.id.clone(),
        zone_id: policy.zone_id.clone(),
        version: 0,
        content: content.to_owned(),
        content_sha256: content_sha256(content),
        schema_version: "2026-05-20".into(),
        created_by: Some("admin:contract".into()),
        created_at: t,
    }
}

fn set_row(zone_id: &str, name: &str, t: DateTime<Utc>) -> PolicySet {
    PolicySet {
        id: new_id(),
        zone_id: zone_id.to_owned(),
        name: name.to_owned(),
        description: None,
        attribution: attribution(),
        created_at: t,
        updated_at: t,
        active_version_id: None,
        archived_at: None,
    }
}

fn set_version_row(set: &PolicySet, manifest: &[&str], t: DateTime<Utc>) -> PolicySetVersion {
    let entries: Vec<ManifestEntry> = manifest
        .iter()
        .map(|id| ManifestEntry {
            policy_version_id: (*id).to_owned(),
        })
        .collect();
    PolicySetVersion {
        id: new_id(),
        policy_set_id: set.id.clone(),
        zone_id: set.zone_id.clone(),
        version: 0,
        manifest_sha256: manifest_sha256(&entries),
        manifest_json: entries,
        schema_version: "2026-05-20".into(),
        created_at: t,
    }
}

fn approval_row(f: &Fixture, principal: &str, binding: &str, t: DateTime<Utc>) -> Approval {
    Approval {
        id: new_id(),
        zone_id: f.zone.id.clone(),
        session_id: f.authority.id.clone(),
        principal_id: principal.to_owned(),
        application_id: f.app.id.clone(),
        approval_type: "human_approval".into(),
        tier: "high".into(),
        approver_class: ApproverClass::Operator,
        privacy_mode: PrivacyMode::Identified,
        subject_anchor: None,
        binding: binding.to_owned(),
        metadata_json: serde_json::Map::new(),
        decision_reason: None,
        approver_subject_id: None,
        approver_session_id: None,
        created_at: t,
        expires_at: t + secs(1800),
        satisfied_at: None,
        rejected_at: None,
        consumed_at: None,
        consumed_authority_record_id: None,
    }
}

fn task_session(f: &Fixture, parent: Option<&Session>, t: DateTime<Utc>) -> Session {
    Session {
        agent_session_id: new_id(),
        zone_id: f.zone.id.clone(),
        application_id: f.app.id.clone(),
        parent_id: parent.map(|p| p.agent_session_id.clone()),
        subject_authority_record_id: f.authority.id.clone(),
        lifecycle: Lifecycle::Task,
        labels: vec!["worker".into()],
        status: SessionStatus::Active,
        depth: parent.map_or(0, |p| p.depth + 1),
        ttl_seconds: Some(3600),
        metadata: serde_json::Map::new(),
        started_at: t,
        terminated_at: None,
        termination_reason: None,
        last_heartbeat_at: None,
        heartbeat_deadline_at: None,
        lease_generation: 0,
        child_count: 0,
        max_children: 10,
    }
}

fn service_session(f: &Fixture, t: DateTime<Utc>, deadline: DateTime<Utc>) -> Session {
    Session {
        lifecycle: Lifecycle::Service,
        ttl_seconds: None,
        last_heartbeat_at: Some(t),
        heartbeat_deadline_at: Some(deadline),
        lease_generation: 1,
        ..task_session(f, None, t)
    }
}

fn edge_row(source: &Session, target: &Session, t: DateTime<Utc>) -> DelegationEdge {
    DelegationEdge {
        id: new_id(),
        zone_id: source.zone_id.clone(),
        source_session_id: source.agent_session_id.clone(),
        target_session_id: target.agent_session_id.clone(),
        issuer_application_id: source.application_id.clone(),
        receiver_application_id: target.application_id.clone(),
        parent_edge_id: None,
        resource_id: None,
        scopes: vec!["items:read".into()],
        constraints_json: serde_json::Map::new(),
        status: EdgeStatus::Active,
        expires_at: t + secs(600),
        edge_version: 1,
        revoked_at: None,
        created_at: t,
    }
}

fn receipt_row(
    zone_id: &str,
    scope_id: &str,
    key: [u8; 32],
    t: DateTime<Utc>,
    ttl: Duration,
) -> IdempotencyReceipt {
    IdempotencyReceipt {
        operation: IdempotentOperation::SessionStart,
        zone_id: zone_id.to_owned(),
        scope_id: scope_id.to_owned(),
        key_digest: key,
        request_digest: digest(),
        result_id: new_id(),
        response_status: 201,
        // Written in jsonb's text form, so a backend that stores it as jsonb returns it as is.
        response_json: r#"{"agent_session_id": "x"}"#.into(),
        created_at: t,
        expires_at: t + ttl,
    }
}

fn message(ctx_stream: &str, marker: &str) -> OutboxMessage {
    OutboxMessage::new(
        ctx_stream,
        vec![
            ("marker".into(), marker.to_owned()),
            ("zone_id".into(), "z".into()),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A zone with one application and one authority record, the parents most rows need (so a
/// backend with foreign keys accepts them).
#[derive(Clone)]
pub struct Fixture {
    zone: Zone,
    app: Application,
    authority: AuthorityRecord,
    t0: DateTime<Utc>,
}

async fn new_zone<S: Stores>(ctx: &Ctx<S>, t: DateTime<Utc>) -> Zone {
    let zone = zone_row(&ctx.unique("zone"), t);
    ctx.store.insert_zone(&zone).await.unwrap();
    zone
}

async fn fixture<S: Stores>(ctx: &Ctx<S>) -> Fixture {
    let t0 = now_ms();
    let zone = new_zone(ctx, t0).await;
    let app = app_row(&zone.id, &ctx.unique("app"), t0);
    ctx.store.insert_application(&app).await.unwrap();
    let authority = authority_row(&zone.id, &ctx.unique("subject"), None, t0);
    ctx.store.insert_authority(&authority).await.unwrap();
    Fixture {
        zone,
        app,
        authority,
        t0,
    }
}

/// The creation times of a paging set: seven rows, ties included (three share one instant,
/// so a page boundary falls inside a tie and the `id DESC` tie-break is exercised).
fn paging_times(base: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    [0, 0, 1, 1, 1, 2, 3]
        .iter()
        .map(|s| base + secs(*s))
        .collect()
}

/// Check keyset paging over `expected` (this case's rows as `(created_at, id)`, any order).
///
/// With `exclusive`, the list holds only these rows, and every page is checked exactly,
/// through the empty page after an exact multiple. Otherwise the walk starts at `start`, a
/// cursor just above the rows, and only the pages made of these rows are checked.
async fn check_paging<T, F, Fut>(
    what: &str,
    mut expected: Vec<(DateTime<Utc>, String)>,
    exclusive: bool,
    start: Option<Cursor>,
    key: fn(&T) -> (DateTime<Utc>, String),
    list: F,
) where
    F: Fn(PageRequest) -> Fut,
    Fut: Future<Output = StoreResult<Page<T>>>,
{
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(expected.len(), 7, "{what}: the paging set has seven rows");
    let keys = |p: &Page<T>| p.items.iter().map(key).collect::<Vec<_>>();
    let cursor_of = |k: &(DateTime<Utc>, String)| Cursor {
        created_at: k.0,
        id: k.1.clone(),
    };
    let req = |limit: u32, after: Option<Cursor>| PageRequest { limit, after };

    // Three pages of 3, 3 and 1.
    let p1 = list(req(3, start.clone())).await.unwrap();
    assert_eq!(keys(&p1), expected[0..3], "{what}: page 1");
    assert_eq!(
        p1.next,
        Some(cursor_of(&expected[2])),
        "{what}: page 1 cursor"
    );
    let p2 = list(req(3, p1.next.clone())).await.unwrap();
    assert_eq!(keys(&p2), expected[3..6], "{what}: page 2");
    assert_eq!(
        p2.next,
        Some(cursor_of(&expected[5])),
        "{what}: page 2 cursor"
    );
    let p3 = list(req(3, p2.next.clone())).await.unwrap();
    if exclusive {
        assert_eq!(keys(&p3), expected[6..7], "{what}: last partial page");
        assert_eq!(p3.next, None, "{what}: no cursor after a partial page");
    } else {
        assert_eq!(keys(&p3).first(), Some(&expected[6]), "{what}: page 3");
    }

    // A cursor in the middle (inside the tie) continues strictly after it.
    let mid = list(req(2, Some(cursor_of(&expected[2])))).await.unwrap();
    assert_eq!(keys(&mid), expected[3..5], "{what}: from a mid cursor");

    if exclusive {
        // An exact multiple: a full page has a cursor, and the page after it is empty.
        let full = list(req(7, None)).await.unwrap();
        assert_eq!(keys(&full), expected, "{what}: exact page");
        assert_eq!(
            full.next,
            Some(cursor_of(&expected[6])),
            "{what}: exact cursor"
        );
        let empty = list(req(7, full.next.clone())).await.unwrap();
        assert!(
            empty.items.is_empty(),
            "{what}: page after the exact multiple"
        );
        assert_eq!(empty.next, None, "{what}: no cursor after an empty page");
        // A page larger than the set.
        let all = list(req(500, None)).await.unwrap();
        assert_eq!(keys(&all), expected, "{what}: one large page");
        assert_eq!(all.next, None, "{what}: no cursor when not full");
    }
}

// ---------------------------------------------------------------------------------------------
// Zones
// ---------------------------------------------------------------------------------------------

/// `zone_slug` is unique over every zone, archived ones included, on insert and update; a
/// taken id is `zone_id`.
pub async fn zone_slug_unique<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let slug = ctx.unique("slug");
    let a = zone_row(&slug, t);
    s.insert_zone(&a).await.unwrap();
    assert!(s.slug_exists(&slug).await.unwrap());
    assert!(!s.slug_exists(&ctx.unique("free")).await.unwrap());

    assert_conflict(s.insert_zone(&zone_row(&slug, t)).await, "zone_slug");
    let mut same_id = zone_row(&ctx.unique("other"), t);
    same_id.id = a.id.clone();
    assert_conflict(s.insert_zone(&same_id).await, "zone_id");

    let b = zone_row(&ctx.unique("b"), t);
    s.insert_zone(&b).await.unwrap();
    let mut b_taking = b.clone();
    b_taking.slug = slug.clone();
    assert_conflict(s.update_zone(&b_taking).await, "zone_slug");
    // Keeping its own slug is not a conflict with itself.
    s.update_zone(&b).await.unwrap();

    // Archived zones keep their slug.
    s.archive_zone(&a.id, t + secs(1)).await.unwrap();
    assert!(s.slug_exists(&slug).await.unwrap());
    assert_conflict(s.insert_zone(&zone_row(&slug, t)).await, "zone_slug");
    assert_conflict(s.update_zone(&b_taking).await, "zone_slug");
    assert_eq!(s.get_zone(&b.id).await.unwrap(), Some(b));
}

/// Updates change only the mutable fields; archive sets `archived_at` and `updated_at`, hides
/// the zone from the list, and refuses a second archive or an update.
pub async fn zone_update_and_archive<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    assert_eq!(s.get_zone(&zone.id).await.unwrap(), Some(zone.clone()));

    let mut changed = zone.clone();
    changed.name = "Renamed".into();
    changed.slug = ctx.unique("renamed");
    changed.dcr_enabled = true;
    changed.operator_coauthor_badge = true;
    changed.operator_governed = true;
    changed.attribution.updated_by = Some("admin:editor".into());
    changed.attribution.updated_via_operator = true;
    changed.updated_at = t + secs(5);
    // Not mutable: these must not change.
    let mut attempt = changed.clone();
    attempt.created_at = t - secs(100);
    attempt.attribution.created_by = Some("admin:forger".into());
    attempt.archived_at = Some(t);
    s.update_zone(&attempt).await.unwrap();
    assert_eq!(s.get_zone(&zone.id).await.unwrap(), Some(changed.clone()));

    let missing = zone_row(&ctx.unique("missing"), t);
    assert_not_found(s.update_zone(&missing).await);
    assert_not_found(s.archive_zone(&missing.id, t).await);

    let at = t + secs(10);
    s.archive_zone(&zone.id, at).await.unwrap();
    let archived = s.get_zone(&zone.id).await.unwrap().unwrap();
    assert_eq!(archived.archived_at, Some(at));
    assert_eq!(archived.updated_at, at);
    assert_not_found(s.archive_zone(&zone.id, at).await);
    assert_not_found(s.update_zone(&changed).await);
    let listed = s.list_zones(&PageRequest::first(500)).await.unwrap();
    assert!(listed.items.iter().all(|z| z.id != zone.id));
}

/// `list_zones`: unarchived zones, `created_at DESC, id DESC`, keyset pages.
pub async fn paging_zones<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let base = if ctx.fresh { now_ms() } else { private_slot() };
    let mut expected = Vec::new();
    for t in paging_times(base) {
        let z = zone_row(&ctx.unique("pz"), t);
        s.insert_zone(&z).await.unwrap();
        expected.push((t, z.id));
    }
    // An archived zone inside the block is never listed.
    let gone = zone_row(&ctx.unique("pz-gone"), base + secs(1));
    s.insert_zone(&gone).await.unwrap();
    s.archive_zone(&gone.id, base + secs(1)).await.unwrap();
    let start = (!ctx.fresh).then(|| Cursor {
        created_at: base + secs(60),
        id: String::new(),
    });
    let store = s.clone();
    check_paging(
        "zones",
        expected.clone(),
        ctx.fresh,
        start,
        |z: &Zone| (z.created_at, z.id.clone()),
        move |p| {
            let store = store.clone();
            async move { store.list_zones(&p).await }
        },
    )
    .await;
    if !ctx.fresh {
        // Leave the shared database's zone list as it was.
        for (t, id) in expected {
            s.archive_zone(&id, t).await.unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Applications
// ---------------------------------------------------------------------------------------------

/// `application_name`: case-insensitive among the zone's active managed applications.
pub async fn application_name_unique<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other_zone = new_zone(ctx, t).await;
    let name = format!("Billing Bot {}", ctx.unique("n"));

    let first = app_row(&zone.id, &name, t);
    s.insert_application(&first).await.unwrap();
    assert_conflict(
        s.insert_application(&app_row(&zone.id, &name.to_uppercase(), t))
            .await,
        "application_name",
    );
    let mut same_id = app_row(&zone.id, &ctx.unique("x"), t);
    same_id.id = first.id.clone();
    assert_conflict(s.insert_application(&same_id).await, "application_id");

    // Another zone, or a DCR application, does not take part.
    s.insert_application(&app_row(&other_zone.id, &name, t))
        .await
        .unwrap();
    let mut dcr = app_row(&zone.id, &name, t);
    dcr.registration_method = RegistrationMethod::Dcr;
    dcr.expires_at = Some(t + secs(3600));
    s.insert_application(&dcr).await.unwrap();

    // Renaming onto a taken name conflicts; renaming to one's own name in another case does not.
    let second = app_row(&zone.id, &ctx.unique("second"), t);
    s.insert_application(&second).await.unwrap();
    let mut rename = second.clone();
    rename.name = name.to_lowercase();
    assert_conflict(s.update_application(&rename).await, "application_name");
    let mut recase = first.clone();
    recase.name = name.to_lowercase();
    s.update_application(&recase).await.unwrap();

    // Archiving frees the name; a new holder takes it again.
    s.archive_application(&zone.id, &first.id, t + secs(1))
        .await
        .unwrap();
    s.insert_application(&app_row(&zone.id, &name.to_uppercase(), t))
        .await
        .unwrap();
    assert_conflict(s.update_application(&rename).await, "application_name");
}

/// Applications: zone isolation, listings, update and archive rules.
pub async fn application_isolation_and_archive<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other = new_zone(ctx, t).await;
    let app = app_row(&zone.id, &ctx.unique("app"), t);
    s.insert_application(&app).await.unwrap();

    assert_eq!(
        s.get_application(&zone.id, &app.id).await.unwrap(),
        Some(app.clone())
    );
    assert_eq!(s.get_application(&other.id, &app.id).await.unwrap(), None);
    let mut foreign = app.clone();
    foreign.zone_id = other.id.clone();
    assert_not_found(s.update_application(&foreign).await);
    assert_not_found(s.archive_application(&other.id, &app.id, t).await);
    let other_list = s
        .list_applications(&other.id, Listing::Active, &PageRequest::first(10))
        .await
        .unwrap();
    assert!(other_list.items.is_empty());

    // Update: mutable fields only.
    let mut changed = app.clone();
    changed.name = ctx.unique("renamed");
    changed.traits = vec!["team:risk".into()];
    changed.client_secret_hash = Some("argon2id$bmV3$c2VjcmV0".into());
    changed.attribution.updated_by = Some("admin:editor".into());
    changed.updated_at = t + secs(3);
    let mut attempt = changed.clone();
    attempt.registration_method = RegistrationMethod::Dcr;
    attempt.expires_at = Some(t + secs(60));
    attempt.created_at = t - secs(60);
    attempt.attribution.created_by = None;
    s.update_application(&attempt).await.unwrap();
    let stored = s.get_application(&zone.id, &app.id).await.unwrap().unwrap();
    assert_eq!(stored, changed);
    assert_eq!(stored.client_secret_hash, changed.client_secret_hash);

    // Archive.
    let at = t + secs(5);
    s.archive_application(&zone.id, &app.id, at).await.unwrap();
    let archived = s.get_application(&zone.id, &app.id).await.unwrap().unwrap();
    assert_eq!(archived.archived_at, Some(at));
    assert_eq!(archived.updated_at, at);
    assert_not_found(s.archive_application(&zone.id, &app.id, at).await);
    assert_not_found(s.update_application(&changed).await);
    let active = s
        .list_applications(&zone.id, Listing::Active, &PageRequest::first(10))
        .await
        .unwrap();
    assert!(active.items.is_empty());
    let archived_list = s
        .list_applications(&zone.id, Listing::Archived, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(archived_list.items, vec![archived]);
}

/// Keyset paging of applications (active listing; archived rows excluded).
pub async fn paging_applications<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let base = now_ms();
    let zone = new_zone(ctx, base).await;
    let mut expected = Vec::new();
    for t in paging_times(base) {
        let a = app_row(&zone.id, &ctx.unique("pa"), t);
        s.insert_application(&a).await.unwrap();
        expected.push((t, a.id));
    }
    let gone = app_row(&zone.id, &ctx.unique("gone"), base + secs(1));
    s.insert_application(&gone).await.unwrap();
    s.archive_application(&zone.id, &gone.id, base)
        .await
        .unwrap();
    let (store, z) = (s.clone(), zone.id.clone());
    check_paging(
        "applications",
        expected,
        true,
        None,
        |a: &Application| (a.created_at, a.id.clone()),
        move |p| {
            let (store, z) = (store.clone(), z.clone());
            async move { store.list_applications(&z, Listing::Active, &p).await }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

/// `resource_identifier`: per zone, archived rows included (an identifier is never reused).
pub async fn resource_identifier_unique<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other = new_zone(ctx, t).await;
    let ident = format!("resource://{}", ctx.unique("res"));

    let r = resource_row(&zone.id, &ident, t);
    s.insert_resource(&r).await.unwrap();
    assert_conflict(
        s.insert_resource(&resource_row(&zone.id, &ident, t)).await,
        "resource_identifier",
    );
    let mut same_id = resource_row(&zone.id, &format!("resource://{}", ctx.unique("x")), t);
    same_id.id = r.id.clone();
    assert_conflict(s.insert_resource(&same_id).await, "resource_id");
    s.insert_resource(&resource_row(&other.id, &ident, t))
        .await
        .unwrap();

    let second = resource_row(&zone.id, &format!("resource://{}", ctx.unique("b")), t);
    s.insert_resource(&second).await.unwrap();
    let mut taking = second.clone();
    taking.identifier = ident.clone();
    assert_conflict(s.update_resource(&taking).await, "resource_identifier");

    assert_eq!(
        s.get_resource_by_identifier(&zone.id, &ident)
            .await
            .unwrap(),
        Some(r.clone())
    );
    s.archive_resource(&zone.id, &r.id, t + secs(1))
        .await
        .unwrap();
    assert_eq!(
        s.get_resource_by_identifier(&zone.id, &ident)
            .await
            .unwrap(),
        None
    );
    // Still taken after archive.
    assert_conflict(
        s.insert_resource(&resource_row(&zone.id, &ident, t)).await,
        "resource_identifier",
    );
    assert_conflict(s.update_resource(&taking).await, "resource_identifier");
}

/// Resources: zone isolation, update and archive rules, listings.
pub async fn resource_isolation_and_archive<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other = new_zone(ctx, t).await;
    let ident = format!("resource://{}", ctx.unique("res"));
    let r = resource_row(&zone.id, &ident, t);
    s.insert_resource(&r).await.unwrap();

    assert_eq!(s.get_resource(&other.id, &r.id).await.unwrap(), None);
    assert_eq!(
        s.get_resource_by_identifier(&other.id, &ident)
            .await
            .unwrap(),
        None
    );
    let mut foreign = r.clone();
    foreign.zone_id = other.id.clone();
    assert_not_found(s.update_resource(&foreign).await);
    assert_not_found(s.archive_resource(&other.id, &r.id, t).await);

    let mut changed = r.clone();
    changed.name = "Renamed".into();
    changed.identifier = format!("resource://{}", ctx.unique("moved"));
    changed.upstream_url = Some("https://elsewhere.example".into());
    changed.scopes = vec!["items:read".into()];
    changed.operations = vec![];
    changed.operation_enforcement = OperationEnforcement::TransportUniform;
    changed.attribution.updated_by = Some("admin:editor".into());
    changed.updated_at = t + secs(2);
    let mut attempt = changed.clone();
    attempt.created_at = t - secs(9);
    s.update_resource(&attempt).await.unwrap();
    assert_eq!(
        s.get_resource(&zone.id, &r.id).await.unwrap(),
        Some(changed.clone())
    );
    // The old identifier is free only through an update of the same row; the new one resolves.
    assert_eq!(
        s.get_resource_by_identifier(&zone.id, &changed.identifier)
            .await
            .unwrap(),
        Some(changed.clone())
    );

    let at = t + secs(4);
    s.archive_resource(&zone.id, &r.id, at).await.unwrap();
    let archived = s.get_resource(&zone.id, &r.id).await.unwrap().unwrap();
    assert_eq!((archived.archived_at, archived.updated_at), (Some(at), at));
    assert_not_found(s.archive_resource(&zone.id, &r.id, at).await);
    assert_not_found(s.update_resource(&changed).await);
    let page = PageRequest::first(10);
    assert!(
        s.list_resources(&zone.id, Listing::Active, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        s.list_resources(&zone.id, Listing::Archived, &page)
            .await
            .unwrap()
            .items,
        vec![archived]
    );
}

/// Keyset paging of resources.
pub async fn paging_resources<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let base = now_ms();
    let zone = new_zone(ctx, base).await;
    let mut expected = Vec::new();
    for t in paging_times(base) {
        let r = resource_row(&zone.id, &format!("resource://{}", ctx.unique("pr")), t);
        s.insert_resource(&r).await.unwrap();
        expected.push((t, r.id));
    }
    let (store, z) = (s.clone(), zone.id.clone());
    check_paging(
        "resources",
        expected,
        true,
        None,
        |r: &Resource| (r.created_at, r.id.clone()),
        move |p| {
            let (store, z) = (store.clone(), z.clone());
            async move { store.list_resources(&z, Listing::Active, &p).await }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Providers
// ---------------------------------------------------------------------------------------------

/// `provider_identifier`: per zone among active rows (archiving frees it).
pub async fn provider_identifier_unique<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other = new_zone(ctx, t).await;
    let ident = format!("provider://{}", ctx.unique("p"));

    let p = provider_row(&zone.id, &ident, t);
    s.insert_provider(&p).await.unwrap();
    assert_conflict(
        s.insert_provider(&provider_row(&zone.id, &ident, t)).await,
        "provider_identifier",
    );
    let mut same_id = provider_row(&zone.id, &format!("provider://{}", ctx.unique("x")), t);
    same_id.id = p.id.clone();
    assert_conflict(s.insert_provider(&same_id).await, "provider_id");
    s.insert_provider(&provider_row(&other.id, &ident, t))
        .await
        .unwrap();

    let second = provider_row(&zone.id, &format!("provider://{}", ctx.unique("b")), t);
    s.insert_provider(&second).await.unwrap();
    let mut taking = second.clone();
    taking.identifier = ident.clone();
    assert_conflict(s.update_provider(&taking).await, "provider_identifier");

    s.archive_provider(&zone.id, &p.id, t + secs(1))
        .await
        .unwrap();
    assert_eq!(
        s.get_provider_by_identifier(&zone.id, &ident)
            .await
            .unwrap(),
        None
    );
    // Freed by the archive: an update can take it, then an insert conflicts again.
    s.update_provider(&taking).await.unwrap();
    assert_eq!(
        s.get_provider_by_identifier(&zone.id, &ident)
            .await
            .unwrap()
            .map(|p| p.id),
        Some(second.id.clone())
    );
    assert_conflict(
        s.insert_provider(&provider_row(&zone.id, &ident, t)).await,
        "provider_identifier",
    );
}

/// Providers: zone isolation, update and archive rules, listings.
pub async fn provider_isolation_and_archive<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other = new_zone(ctx, t).await;
    let ident = format!("provider://{}", ctx.unique("p"));
    let p = provider_row(&zone.id, &ident, t);
    s.insert_provider(&p).await.unwrap();

    assert_eq!(
        s.get_provider(&zone.id, &p.id).await.unwrap(),
        Some(p.clone())
    );
    assert_eq!(s.get_provider(&other.id, &p.id).await.unwrap(), None);
    assert_eq!(
        s.get_provider_by_identifier(&other.id, &ident)
            .await
            .unwrap(),
        None
    );
    let mut foreign = p.clone();
    foreign.zone_id = other.id.clone();
    assert_not_found(s.update_provider(&foreign).await);
    assert_not_found(s.archive_provider(&other.id, &p.id, t).await);

    let mut changed = p.clone();
    changed.name = "Renamed".into();
    changed.kind = ProviderKind::HttpBasic;
    changed.config_json = serde_json::Map::new();
    changed.config_json.insert("username".into(), json!("svc"));
    changed.secret_config_keys = vec!["password".into()];
    changed.connectivity_failed_at = Some(t);
    changed.attribution.updated_by = Some("admin:editor".into());
    changed.updated_at = t + secs(2);
    s.update_provider(&changed).await.unwrap();
    assert_eq!(
        s.get_provider(&zone.id, &p.id).await.unwrap(),
        Some(changed.clone())
    );

    let at = t + secs(4);
    s.archive_provider(&zone.id, &p.id, at).await.unwrap();
    let archived = s.get_provider(&zone.id, &p.id).await.unwrap().unwrap();
    assert_eq!((archived.archived_at, archived.updated_at), (Some(at), at));
    assert_not_found(s.archive_provider(&zone.id, &p.id, at).await);
    assert_not_found(s.update_provider(&changed).await);
    let page = PageRequest::first(10);
    assert!(
        s.list_providers(&zone.id, Listing::Active, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        s.list_providers(&zone.id, Listing::Archived, &page)
            .await
            .unwrap()
            .items,
        vec![archived]
    );
}

/// Keyset paging of providers.
pub async fn paging_providers<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let base = now_ms();
    let zone = new_zone(ctx, base).await;
    let mut expected = Vec::new();
    for t in paging_times(base) {
        let p = provider_row(&zone.id, &format!("provider://{}", ctx.unique("pp")), t);
        s.insert_provider(&p).await.unwrap();
        expected.push((t, p.id));
    }
    let (store, z) = (s.clone(), zone.id.clone());
    check_paging(
        "providers",
        expected,
        true,
        None,
        |p: &Provider| (p.created_at, p.id.clone()),
        move |p| {
            let (store, z) = (store.clone(), z.clone());
            async move { store.list_providers(&z, Listing::Active, &p).await }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Secrets and admin tokens
// ---------------------------------------------------------------------------------------------

/// Sealed secrets: versions count replacements, delete reports whether something went.
pub async fn secret_versions<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let reference = format!("zones/{}/providers/p/secretConfig", ctx.unique("z"));
    assert_eq!(s.get_secret(&reference).await.unwrap(), None);
    assert_eq!(s.put_secret(&reference, b"CSS1.one").await.unwrap(), 1);
    assert_eq!(s.put_secret(&reference, b"CSS1.two").await.unwrap(), 2);
    let stored = s.get_secret(&reference).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.reference.as_str(),
            stored.envelope.as_slice(),
            stored.version
        ),
        (reference.as_str(), b"CSS1.two".as_slice(), 2)
    );
    assert!(s.delete_secret(&reference).await.unwrap());
    assert!(!s.delete_secret(&reference).await.unwrap());
    assert_eq!(s.get_secret(&reference).await.unwrap(), None);
    assert_eq!(s.put_secret(&reference, b"CSS1.three").await.unwrap(), 1);
}

/// `admin_token_sha256` among non-revoked tokens; revoke, find, touch.
pub async fn admin_token_hash_unique<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let sha = digest();
    let first = token_row(&ctx.unique("tok"), sha, t);
    s.insert_admin_token(&first).await.unwrap();
    assert_conflict(
        s.insert_admin_token(&token_row("dup", sha, t)).await,
        "admin_token_sha256",
    );
    let mut same_id = token_row("same-id", digest(), t);
    same_id.id = first.id.clone();
    assert_conflict(s.insert_admin_token(&same_id).await, "admin_token_id");
    assert_eq!(s.find_admin_token(&sha).await.unwrap(), Some(first.clone()));
    assert_eq!(s.find_admin_token(&digest()).await.unwrap(), None);

    s.touch_admin_token(&first.id, t + secs(1)).await.unwrap();
    assert_eq!(
        s.find_admin_token(&sha)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(t + secs(1))
    );

    s.revoke_admin_token(&first.id, t + secs(2)).await.unwrap();
    assert_not_found(s.revoke_admin_token(&first.id, t + secs(3)).await);
    assert_not_found(s.revoke_admin_token(&new_id(), t).await);
    assert_eq!(s.find_admin_token(&sha).await.unwrap(), None);

    // The hash is free again once revoked.
    let second = token_row(&ctx.unique("tok2"), sha, t + secs(4));
    s.insert_admin_token(&second).await.unwrap();
    assert_eq!(
        s.find_admin_token(&sha).await.unwrap().map(|a| a.id),
        Some(second.id.clone())
    );
}

/// `list_admin_tokens`: every token, revoked included, newest first.
pub async fn paging_admin_tokens<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let base = if ctx.fresh { now_ms() } else { private_slot() };
    let mut expected = Vec::new();
    for (i, t) in paging_times(base).into_iter().enumerate() {
        let tok = token_row(&ctx.unique("pt"), digest(), t);
        s.insert_admin_token(&tok).await.unwrap();
        if i % 3 == 0 {
            s.revoke_admin_token(&tok.id, t).await.unwrap();
        }
        expected.push((t, tok.id));
    }
    let start = (!ctx.fresh).then(|| Cursor {
        created_at: base + secs(60),
        id: String::new(),
    });
    let store = s.clone();
    check_paging(
        "admin tokens",
        expected,
        ctx.fresh,
        start,
        |a: &AdminToken| (a.created_at, a.id.clone()),
        move |p| {
            let store = store.clone();
            async move { store.list_admin_tokens(&p).await }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Authority records
// ---------------------------------------------------------------------------------------------

/// `authority_record_id`; a record of another zone is not found, not revocable.
pub async fn authority_unique_and_isolation<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let other = new_zone(ctx, f.t0).await;
    let mut dup = authority_row(&f.zone.id, "someone", None, f.t0);
    dup.id = f.authority.id.clone();
    assert_conflict(s.insert_authority(&dup).await, "authority_record_id");
    assert_eq!(
        s.get_authority(&f.zone.id, &f.authority.id).await.unwrap(),
        Some(f.authority.clone())
    );
    assert_eq!(
        s.get_authority(&other.id, &f.authority.id).await.unwrap(),
        None
    );
    assert!(
        !s.revoke_authority(&other.id, &f.authority.id, "x", f.t0)
            .await
            .unwrap()
    );
    assert!(
        s.authority_lineage(&other.id, &f.authority.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.get_authority(&f.zone.id, &f.authority.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        AuthorityStatus::Active
    );
}

/// Lineage: the record then its ancestors, nearest first.
pub async fn authority_lineage_order<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let subject = ctx.unique("sub");
    let root = authority_row(&f.zone.id, &subject, None, f.t0);
    s.insert_authority(&root).await.unwrap();
    let mut chain = vec![root];
    for i in 1..4 {
        let parent = chain.last().unwrap().id.clone();
        let r = authority_row(&f.zone.id, &subject, Some(&parent), f.t0 + secs(i));
        s.insert_authority(&r).await.unwrap();
        chain.push(r);
    }
    let leaf = chain.last().unwrap().id.clone();
    let lineage = s.authority_lineage(&f.zone.id, &leaf).await.unwrap();
    let mut nearest_first = chain.clone();
    nearest_first.reverse();
    assert_eq!(lineage, nearest_first);
    assert_eq!(
        s.authority_lineage(&f.zone.id, &chain[0].id).await.unwrap(),
        vec![chain[0].clone()]
    );
    assert!(
        s.authority_lineage(&f.zone.id, &new_id())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Lineage depth: exactly [`MAX_LINEAGE_DEPTH`] records are returned; one more fails closed.
pub async fn authority_lineage_depth_limit<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let subject = ctx.unique("deep");
    let mut ids: Vec<String> = Vec::new();
    for i in 0..(MAX_LINEAGE_DEPTH + 6) {
        let r = authority_row(
            &f.zone.id,
            &subject,
            ids.last().map(String::as_str),
            f.t0 + Duration::milliseconds(i as i64),
        );
        s.insert_authority(&r).await.unwrap();
        ids.push(r.id);
    }
    // ids[k] has k ancestors: a lineage of k + 1 records.
    let at_limit = s
        .authority_lineage(&f.zone.id, &ids[MAX_LINEAGE_DEPTH - 1])
        .await
        .unwrap();
    assert_eq!(at_limit.len(), MAX_LINEAGE_DEPTH);
    assert_eq!(at_limit.last().unwrap().id, ids[0]);
    for k in [MAX_LINEAGE_DEPTH, ids.len() - 1] {
        match s.authority_lineage(&f.zone.id, &ids[k]).await {
            Err(StoreError::LimitExceeded(_)) => {}
            other => panic!(
                "lineage of {} records: expected LimitExceeded, got {other:?}",
                k + 1
            ),
        }
    }
}

/// Revoke once changes the record; twice returns `false` and changes nothing.
pub async fn authority_revoke<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let at = f.t0 + secs(5);
    assert!(
        s.revoke_authority(&f.zone.id, &f.authority.id, "requested", at)
            .await
            .unwrap()
    );
    let revoked = s
        .get_authority(&f.zone.id, &f.authority.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.status, AuthorityStatus::Revoked);
    assert_eq!(revoked.revoked_at, Some(at));
    assert_eq!(revoked.revoked_reason.as_deref(), Some("requested"));
    assert!(
        !s.revoke_authority(&f.zone.id, &f.authority.id, "again", at + secs(1))
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_authority(&f.zone.id, &f.authority.id).await.unwrap(),
        Some(revoked)
    );
    assert!(
        !s.revoke_authority(&f.zone.id, &new_id(), "missing", at)
            .await
            .unwrap()
    );
}

/// The kill switch revokes every active record of the subject in the zone, and only those.
pub async fn authority_revoke_subject<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let other = new_zone(ctx, f.t0).await;
    let subject = ctx.unique("kill");
    let mut active = BTreeSet::new();
    for i in 0..3 {
        let r = authority_row(&f.zone.id, &subject, None, f.t0 + secs(i));
        s.insert_authority(&r).await.unwrap();
        active.insert(r.id);
    }
    let already = authority_row(&f.zone.id, &subject, None, f.t0);
    s.insert_authority(&already).await.unwrap();
    s.revoke_authority(&f.zone.id, &already.id, "earlier", f.t0)
        .await
        .unwrap();
    let bystander = authority_row(&f.zone.id, &ctx.unique("bystander"), None, f.t0);
    s.insert_authority(&bystander).await.unwrap();
    let elsewhere = authority_row(&other.id, &subject, None, f.t0);
    s.insert_authority(&elsewhere).await.unwrap();

    let at = f.t0 + secs(10);
    let revoked: BTreeSet<String> = s
        .revoke_subject(&f.zone.id, &subject, "subject_revoked", at)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(revoked, active);
    for id in &active {
        let r = s.get_authority(&f.zone.id, id).await.unwrap().unwrap();
        assert_eq!(r.status, AuthorityStatus::Revoked);
        assert_eq!(r.revoked_reason.as_deref(), Some("subject_revoked"));
        assert_eq!(r.revoked_at, Some(at));
    }
    let kept = s
        .get_authority(&f.zone.id, &already.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.revoked_reason.as_deref(), Some("earlier"));
    for (zone, id) in [(&f.zone.id, &bystander.id), (&other.id, &elsewhere.id)] {
        let r = s.get_authority(zone, id).await.unwrap().unwrap();
        assert_eq!(r.status, AuthorityStatus::Active);
    }
    assert!(
        s.revoke_subject(&f.zone.id, &subject, "subject_revoked", at)
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Signing keys
// ---------------------------------------------------------------------------------------------

/// Versions 1, 2, 3 per zone; latest newest first; `signing_key_id` unique.
pub async fn signing_key_versions<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other = new_zone(ctx, t).await;
    let mut kids = Vec::new();
    for i in 0..3 {
        let kid = new_id();
        let row = s
            .insert_signing_key(&zone.id, &kid, format!("CSS1.{i}").as_bytes(), t + secs(i))
            .await
            .unwrap();
        assert_eq!(row.version, i + 1);
        assert_eq!(
            (row.kid.as_str(), row.zone_id.as_str()),
            (kid.as_str(), zone.id.as_str())
        );
        assert_eq!(row.envelope, format!("CSS1.{i}").into_bytes());
        assert_eq!(row.created_at, t + secs(i));
        kids.push(kid);
    }
    let latest = s.latest_signing_keys(&zone.id, 2).await.unwrap();
    assert_eq!(
        latest
            .iter()
            .map(|k| (k.version, k.kid.clone()))
            .collect::<Vec<_>>(),
        vec![(3, kids[2].clone()), (2, kids[1].clone())]
    );
    let all = s.latest_signing_keys(&zone.id, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|k| k.version).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );

    // Each zone numbers its own keys.
    assert!(
        s.latest_signing_keys(&other.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let first_other = s
        .insert_signing_key(&other.id, &new_id(), b"CSS1.o", t)
        .await
        .unwrap();
    assert_eq!(first_other.version, 1);
    assert_conflict(
        s.insert_signing_key(&zone.id, &kids[0], b"CSS1.dup", t)
            .await,
        "signing_key_id",
    );
    assert_eq!(s.latest_signing_keys(&zone.id, 10).await.unwrap().len(), 3);
}

/// Concurrent rotations of one zone take distinct, dense versions.
pub async fn signing_key_versions_concurrent<S: Stores>(ctx: &Ctx<S>) {
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, z) = (ctx.store.clone(), zone.id.clone());
        tasks.push(tokio::spawn(async move {
            store
                .insert_signing_key(&z, &new_id(), b"CSS1.k", t)
                .await
                .map(|r| r.version)
        }));
    }
    let mut versions = BTreeSet::new();
    for h in tasks {
        assert!(versions.insert(join("key rotation", h).await.unwrap()));
    }
    assert_eq!(versions, (1..=8).collect::<BTreeSet<i64>>());
}

// ---------------------------------------------------------------------------------------------
// Outbox
// ---------------------------------------------------------------------------------------------

/// A stream name of this case's own.
fn test_stream<S>(ctx: &Ctx<S>) -> String {
    format!("caracal.contract.{}", ctx.unique("s"))
}

/// Claim at `now` until a claim comes back empty, returning the claimed rows that are in
/// `mine`, in claim order. Claiming everything that is due (other cases' rows included, in a
/// shared store) means `mine` cannot hide behind older rows.
async fn claim_mine<S: Stores>(
    store: &S,
    now: DateTime<Utc>,
    lease: Duration,
    mine: &HashSet<String>,
) -> Vec<OutboxRow> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        let batch = store.claim("contract", 50, lease, now).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.into_iter().filter(|r| mine.contains(&r.id)));
    }
    panic!("the outbox kept returning rows at one instant: a claim did not lease them");
}

async fn dispatch_all<S: Stores>(store: &S, ids: &[String], now: DateTime<Utc>) {
    for id in ids {
        store.mark_dispatched(id, now).await.unwrap();
    }
}

/// Enqueue stores the row as given at `now`; `(stream, dedupe_key)` coalesces into the first
/// row, even once it is published; messages without a key never coalesce.
pub async fn outbox_enqueue_and_dedupe<S: Stores>(ctx: &Ctx<S>) {
    // It publishes rows, which the stats case must not see happen under it.
    let _guard = outbox_guard(ctx).await;
    let s = &ctx.store;
    let t = now_ms();
    let stream = test_stream(ctx);
    let key = ctx.unique("dedupe");
    let first = message(&stream, "first").dedupe(key.clone());
    let id = s.enqueue(&first, t).await.unwrap();
    let row = s.get_outbox(&id).await.unwrap().unwrap();
    assert_eq!(
        row,
        OutboxRow {
            id: id.clone(),
            message: first.clone(),
            attempts: 0,
            available_at: t,
            locked_until: None,
            last_error: None,
            dispatched_at: None,
            dead_at: None,
            created_at: t,
        }
    );

    let second = message(&stream, "second").dedupe(key.clone());
    assert_eq!(s.enqueue(&second, t + secs(1)).await.unwrap(), id);
    assert_eq!(s.get_outbox(&id).await.unwrap().unwrap().message, first);

    let other_stream = message(&test_stream(ctx), "x").dedupe(key.clone());
    let other_id = s.enqueue(&other_stream, t).await.unwrap();
    assert_ne!(other_id, id);

    let plain_a = s.enqueue(&message(&stream, "plain"), t).await.unwrap();
    let plain_b = s.enqueue(&message(&stream, "plain"), t).await.unwrap();
    assert_ne!(plain_a, plain_b);

    s.mark_dispatched(&id, t + secs(2)).await.unwrap();
    assert_eq!(s.enqueue(&second, t + secs(3)).await.unwrap(), id);
    assert_eq!(s.get_outbox(&new_id()).await.unwrap(), None);
    dispatch_all(s, &[other_id, plain_a, plain_b], t).await;
}

/// Concurrent claimers at one instant never receive the same row; every due row is claimed
/// once, with `attempts` incremented and the lease set; a held lease keeps it from others.
pub async fn outbox_claim_exclusive<S: Stores>(ctx: &Ctx<S>) {
    let _guard = outbox_guard(ctx).await;
    let s = &ctx.store;
    let t = now_ms();
    let lease = secs(60);
    let stream = test_stream(ctx);
    let mut mine = HashSet::new();
    for i in 0..40 {
        mine.insert(
            s.enqueue(&message(&stream, &i.to_string()), t)
                .await
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..1000 {
                let batch = store
                    .claim(&format!("worker-{w}"), 3, lease, t)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(batch);
                tokio::task::yield_now().await;
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    let mut mine_claimed = 0;
    for h in tasks {
        for row in join("claimer", h).await {
            assert!(seen.insert(row.id.clone()), "row {} claimed twice", row.id);
            if mine.contains(&row.id) {
                mine_claimed += 1;
                assert_eq!(row.attempts, 1);
                assert_eq!(row.locked_until, Some(t + lease));
            }
        }
    }
    assert_eq!(mine_claimed, mine.len());
    // While the lease holds, nobody gets them.
    assert!(claim_mine(s, t + secs(30), lease, &mine).await.is_empty());
    let ids: Vec<String> = mine.into_iter().collect();
    dispatch_all(s, &ids, t).await;
}

/// Claims take due rows oldest first (`available_at <= now`); a lease ends exactly at
/// `locked_until`, after which the row is claimed again with `attempts` 2.
pub async fn outbox_lease_expiry_reclaim<S: Stores>(ctx: &Ctx<S>) {
    let _guard = outbox_guard(ctx).await;
    let s = &ctx.store;
    let t = now_ms();
    let lease = secs(30);
    let stream = test_stream(ctx);
    let a = s
        .enqueue(&message(&stream, "a"), t - secs(2))
        .await
        .unwrap();
    let b = s
        .enqueue(&message(&stream, "b"), t - secs(1))
        .await
        .unwrap();
    let c = s.enqueue(&message(&stream, "c"), t).await.unwrap();
    let later = s
        .enqueue(&message(&stream, "later"), t + secs(10))
        .await
        .unwrap();
    let mine: HashSet<String> = [&a, &b, &c, &later].into_iter().cloned().collect();
    let ids = |rows: &[OutboxRow]| rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>();

    let first = claim_mine(s, t, lease, &mine).await;
    assert_eq!(ids(&first), vec![a.clone(), b.clone(), c.clone()]);
    assert!(first.iter().all(|r| r.attempts == 1));
    assert!(claim_mine(s, t + secs(5), lease, &mine).await.is_empty());
    // Due exactly at its `available_at`.
    let due = claim_mine(s, t + secs(10), lease, &mine).await;
    assert_eq!(ids(&due), vec![later.clone()]);

    let just_before = t + lease - Duration::milliseconds(1);
    assert!(claim_mine(s, just_before, lease, &mine).await.is_empty());
    let again = claim_mine(s, t + lease, lease, &mine).await;
    assert_eq!(ids(&again), vec![a.clone(), b.clone(), c.clone()]);
    for row in &again {
        assert_eq!(row.attempts, 2);
        assert_eq!(row.locked_until, Some(t + lease + lease));
    }
    assert_eq!(s.get_outbox(&a).await.unwrap().unwrap().attempts, 2);
    dispatch_all(s, &[a, b, c, later], t + lease).await;
}

/// Claims go by `available_at`, then `id`: a row retried later goes behind rows that became
/// due before it, whatever their creation order.
pub async fn outbox_claim_order<S: Stores>(ctx: &Ctx<S>) {
    let _guard = outbox_guard(ctx).await;
    let s = &ctx.store;
    let t = now_ms();
    let lease = secs(60);
    let stream = test_stream(ctx);
    let x = s
        .enqueue(&message(&stream, "x"), t - secs(2))
        .await
        .unwrap();
    let y = s
        .enqueue(&message(&stream, "y"), t - secs(1))
        .await
        .unwrap();
    let mine: HashSet<String> = [x.clone(), y.clone()].into();
    let ids = |rows: &[OutboxRow]| rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&claim_mine(s, t, lease, &mine).await),
        vec![x.clone(), y.clone()]
    );
    s.mark_failed(&x, "later", Some(t + secs(5)), t)
        .await
        .unwrap();
    s.mark_failed(&y, "sooner", Some(t + secs(3)), t)
        .await
        .unwrap();
    assert_eq!(
        ids(&claim_mine(s, t + secs(5), lease, &mine).await),
        vec![y.clone(), x.clone()]
    );
    dispatch_all(s, &[x, y], t + secs(5)).await;
}

/// A failed publish releases the lease and retries at `retry_at`; without one the row is
/// dead and never claimed again.
pub async fn outbox_mark_failed_retry_and_dead<S: Stores>(ctx: &Ctx<S>) {
    let _guard = outbox_guard(ctx).await;
    let s = &ctx.store;
    let t = now_ms();
    let lease = secs(60);
    let id = s
        .enqueue(&message(&test_stream(ctx), "r"), t)
        .await
        .unwrap();
    let mine: HashSet<String> = [id.clone()].into();
    assert_eq!(claim_mine(s, t, lease, &mine).await.len(), 1);

    s.mark_failed(&id, "boom", Some(t + secs(10)), t + secs(1))
        .await
        .unwrap();
    let row = s.get_outbox(&id).await.unwrap().unwrap();
    assert_eq!(row.last_error.as_deref(), Some("boom"));
    assert_eq!(row.locked_until, None);
    assert_eq!(row.available_at, t + secs(10));
    assert_eq!(
        (row.dead_at, row.dispatched_at, row.attempts),
        (None, None, 1)
    );
    assert!(claim_mine(s, t + secs(5), lease, &mine).await.is_empty());
    let retried = claim_mine(s, t + secs(10), lease, &mine).await;
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].attempts, 2);

    s.mark_failed(&id, "fatal", None, t + secs(11))
        .await
        .unwrap();
    let dead = s.get_outbox(&id).await.unwrap().unwrap();
    assert_eq!(dead.dead_at, Some(t + secs(11)));
    assert_eq!(dead.last_error.as_deref(), Some("fatal"));
    assert_eq!(dead.locked_until, None);
    assert!(claim_mine(s, t + secs(3600), lease, &mine).await.is_empty());
    // A late failure report does not revive it.
    s.mark_failed(&id, "late", Some(t), t + secs(12))
        .await
        .unwrap();
    assert_eq!(
        s.get_outbox(&id).await.unwrap().unwrap().dead_at,
        Some(t + secs(11))
    );

    assert_not_found(s.mark_failed(&new_id(), "x", None, t).await);
    assert_not_found(s.mark_dispatched(&new_id(), t).await);
}

/// Dispatch and stats: pending and dead counts and the ages of their oldest rows.
pub async fn outbox_dispatch_and_stats<S: Stores>(ctx: &Ctx<S>) {
    let _guard = outbox_guard(ctx).await;
    let s = &ctx.store;
    let t = now_ms();
    let stream = test_stream(ctx);
    let before = s.outbox_stats(t).await.unwrap();
    let a = s
        .enqueue(&message(&stream, "a"), t - secs(7200))
        .await
        .unwrap();
    let b = s
        .enqueue(&message(&stream, "b"), t - secs(3600))
        .await
        .unwrap();
    let c = s.enqueue(&message(&stream, "c"), t).await.unwrap();

    s.mark_failed(&a, "x", None, t).await.unwrap();
    s.mark_dispatched(&b, t).await.unwrap();
    s.mark_dispatched(&b, t + secs(5)).await.unwrap();
    let published = s.get_outbox(&b).await.unwrap().unwrap();
    assert_eq!(published.dispatched_at, Some(t));
    assert_eq!(published.locked_until, None);

    let after = s.outbox_stats(t).await.unwrap();
    if ctx.fresh {
        assert_eq!(after.pending, 1);
        assert_eq!(after.dead, 1);
        assert_eq!(after.oldest_pending_age, Some(Duration::zero()));
        assert_eq!(after.oldest_dead_age, Some(secs(7200)));
    } else {
        // Only the serialised outbox cases kill or publish rows; others only add pending ones.
        assert_eq!(after.dead, before.dead + 1);
        assert!(after.pending > before.pending);
        assert!(after.oldest_dead_age >= Some(secs(7200)));
        assert!(after.oldest_pending_age >= Some(Duration::zero()));
    }

    let mine: HashSet<String> = [a.clone(), b.clone(), c.clone()].into();
    let claimed = claim_mine(s, t + secs(60), secs(60), &mine).await;
    assert_eq!(
        claimed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![c.clone()]
    );
    s.mark_dispatched(&c, t + secs(61)).await.unwrap();
    let done = s.outbox_stats(t + secs(61)).await.unwrap();
    if ctx.fresh {
        assert_eq!((done.pending, done.dead), (0, 1));
        assert_eq!(done.oldest_pending_age, None);
        assert_eq!(done.oldest_dead_age, Some(secs(7261)));
    }
}

/// A dead row comes back to pending with zero attempts; anything else is not requeued.
pub async fn outbox_requeue_dead<S: Stores>(ctx: &Ctx<S>) {
    let _guard = outbox_guard(ctx).await;
    let s = &ctx.store;
    let t = now_ms();
    let id = s
        .enqueue(&message(&test_stream(ctx), "r"), t)
        .await
        .unwrap();
    assert_not_found(s.requeue_dead(&id, t).await);
    let mine: HashSet<String> = [id.clone()].into();
    claim_mine(s, t, secs(60), &mine).await;
    s.mark_failed(&id, "gave up", None, t).await.unwrap();

    let at = t + secs(60);
    s.requeue_dead(&id, at).await.unwrap();
    let row = s.get_outbox(&id).await.unwrap().unwrap();
    assert_eq!(row.dead_at, None);
    assert_eq!(row.attempts, 0);
    assert_eq!(row.available_at, at);
    assert_eq!(row.locked_until, None);
    assert_not_found(s.requeue_dead(&id, at).await);
    assert_not_found(s.requeue_dead(&new_id(), at).await);

    let claimed = claim_mine(s, at, secs(60), &mine).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempts, 1);
    s.mark_dispatched(&id, at).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Expiring keys
// ---------------------------------------------------------------------------------------------

/// Among concurrent `set_nx_ex` callers exactly one wins; delete frees the key.
pub async fn ephemeral_set_nx_single_winner<E>(ctx: &Ctx<E>)
where
    E: EphemeralKeys + Clone + Send + Sync + 'static,
{
    let key = ctx.unique("jti");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (store, key) = (ctx.store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let value = format!("caller-{i}");
            let won = store
                .set_nx_ex(&key, &value, StdDuration::from_secs(60))
                .await
                .unwrap();
            (won, value)
        }));
    }
    let mut winners = Vec::new();
    for h in tasks {
        let (won, value) = join("set_nx_ex", h).await;
        if won {
            winners.push(value);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one caller wins: {winners:?}");
    let s = &ctx.store;
    assert_eq!(s.get_key(&key).await.unwrap(), Some(winners[0].clone()));
    assert!(
        !s.set_nx_ex(&key, "late", StdDuration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(s.del_key(&key).await.unwrap());
    assert!(!s.del_key(&key).await.unwrap());
    assert_eq!(s.get_key(&key).await.unwrap(), None);
    assert!(
        s.set_nx_ex(&key, "again", StdDuration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        s.set_nx_ex(&ctx.unique("zero"), "v", StdDuration::ZERO)
            .await
            .is_err()
    );
}

/// Concurrent increments of one window count 1..=n without loss.
pub async fn ephemeral_incr_window_counting<E>(ctx: &Ctx<E>)
where
    E: EphemeralKeys + Clone + Send + Sync + 'static,
{
    let key = ctx.unique("rate");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (store, key) = (ctx.store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            store
                .incr_window(&key, StdDuration::from_secs(60))
                .await
                .unwrap()
        }));
    }
    let mut counts = Vec::new();
    for h in tasks {
        counts.push(join("incr_window", h).await);
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<i64>>());
    assert_eq!(
        ctx.store.get_key(&key).await.unwrap().as_deref(),
        Some("20")
    );
    let other = ctx.unique("rate-other");
    assert_eq!(
        ctx.store
            .incr_window(&other, StdDuration::from_secs(60))
            .await
            .unwrap(),
        1
    );
}

/// Keys expire after their TTL and windows restart (real one-second TTLs; see the module
/// docs on time).
pub async fn ephemeral_expiry<E>(ctx: &Ctx<E>)
where
    E: EphemeralKeys + Clone + Send + Sync + 'static,
{
    let s = &ctx.store;
    let ttl = StdDuration::from_secs(1);
    let nonce = ctx.unique("nonce");
    let window = ctx.unique("window");
    assert!(s.set_nx_ex(&nonce, "v", ttl).await.unwrap());
    assert!(!s.set_nx_ex(&nonce, "w", ttl).await.unwrap());
    assert_eq!(s.get_key(&nonce).await.unwrap().as_deref(), Some("v"));
    for expected in 1..=3 {
        assert_eq!(s.incr_window(&window, ttl).await.unwrap(), expected);
    }
    ctx.pass_time(StdDuration::from_millis(1500)).await;
    assert_eq!(s.get_key(&nonce).await.unwrap(), None);
    assert_eq!(s.get_key(&window).await.unwrap(), None);
    assert!(!s.del_key(&nonce).await.unwrap());
    assert!(s.set_nx_ex(&nonce, "x", ttl).await.unwrap());
    assert_eq!(s.incr_window(&window, ttl).await.unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Policies and policy sets
// ---------------------------------------------------------------------------------------------

const DOC: &str = "package caracal.authz\n# caracal:data-document\napp_ids := {}\n";

/// Insert a policy with its first version; returns both as stored.
async fn new_policy<S: Stores>(
    ctx: &Ctx<S>,
    zone_id: &str,
    t: DateTime<Utc>,
) -> (Policy, PolicyVersion) {
    let policy = policy_row(zone_id, &ctx.unique("policy"), t);
    let mut first = policy_version_row(&policy, DOC, t);
    ctx.store.insert_policy(&policy, &first).await.unwrap();
    first.version = 1;
    (policy, first)
}

/// `policy_name` among the zone's active policies; the first version is number 1.
pub async fn policy_name_unique<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other = new_zone(ctx, t).await;
    let name = ctx.unique("policy");
    let policy = policy_row(&zone.id, &name, t);
    let mut first = policy_version_row(&policy, DOC, t);
    first.version = 7; // ignored: the first version is 1
    s.insert_policy(&policy, &first).await.unwrap();
    let versions = s.policy_versions(&zone.id, &policy.id).await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].version, 1);
    assert_eq!(versions[0].id, first.id);
    assert_eq!(versions[0].content_sha256, content_sha256(DOC));

    let dup = policy_row(&zone.id, &name, t);
    assert_conflict(
        s.insert_policy(&dup, &policy_version_row(&dup, DOC, t))
            .await,
        "policy_name",
    );
    let mut same_id = policy_row(&zone.id, &ctx.unique("p2"), t);
    same_id.id = policy.id.clone();
    assert_conflict(
        s.insert_policy(&same_id, &policy_version_row(&same_id, DOC, t))
            .await,
        "policy_id",
    );
    let fresh = policy_row(&zone.id, &ctx.unique("p3"), t);
    let mut reused_version = policy_version_row(&fresh, DOC, t);
    reused_version.id = first.id.clone();
    assert_conflict(
        s.insert_policy(&fresh, &reused_version).await,
        "policy_version_id",
    );
    // Nothing of the refused insert remains.
    assert_eq!(s.get_policy(&zone.id, &fresh.id).await.unwrap(), None);

    let elsewhere = policy_row(&other.id, &name, t);
    s.insert_policy(&elsewhere, &policy_version_row(&elsewhere, DOC, t))
        .await
        .unwrap();

    s.archive_policy(&zone.id, &policy.id, t + secs(1))
        .await
        .unwrap();
    assert_not_found(s.archive_policy(&zone.id, &policy.id, t).await);
    let archived = s.get_policy(&zone.id, &policy.id).await.unwrap().unwrap();
    assert_eq!(archived.archived_at, Some(t + secs(1)));
    s.insert_policy(&dup, &policy_version_row(&dup, DOC, t))
        .await
        .unwrap();
}

/// Versions are numbered max + 1, listed newest first, fetched by id in the order asked.
pub async fn policy_version_numbering<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other = new_zone(ctx, t).await;
    let (policy, first) = new_policy(ctx, &zone.id, t).await;
    let mut v2 = policy_version_row(&policy, "second", t + secs(1));
    v2.version = 99; // ignored
    let v2 = s.add_policy_version(&v2).await.unwrap();
    let v3 = s
        .add_policy_version(&policy_version_row(&policy, "third", t + secs(2)))
        .await
        .unwrap();
    assert_eq!((v2.version, v3.version), (2, 3));
    assert_eq!(v3.content, "third");
    assert_eq!(
        s.policy_versions(&zone.id, &policy.id).await.unwrap(),
        vec![v3.clone(), v2.clone(), first.clone()]
    );
    assert!(
        s.policy_versions(&other.id, &policy.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.get_policy_versions(&zone.id, &[v3.id.clone(), new_id(), first.id.clone()])
            .await
            .unwrap(),
        vec![v3.clone(), first.clone()]
    );
    assert!(
        s.get_policy_versions(&other.id, std::slice::from_ref(&v3.id))
            .await
            .unwrap()
            .is_empty()
    );
    assert_conflict(s.add_policy_version(&v3).await, "policy_version_id");

    let mut foreign = policy_version_row(&policy, "x", t);
    foreign.zone_id = other.id.clone();
    assert_not_found(s.add_policy_version(&foreign).await);
    let mut missing = policy_version_row(&policy, "x", t);
    missing.policy_id = new_id();
    assert_not_found(s.add_policy_version(&missing).await);
    s.archive_policy(&zone.id, &policy.id, t + secs(3))
        .await
        .unwrap();
    assert_not_found(
        s.add_policy_version(&policy_version_row(&policy, "late", t))
            .await,
    );
}

/// Concurrent appends to one policy get distinct, dense version numbers.
pub async fn policy_version_numbering_concurrent<S: Stores>(ctx: &Ctx<S>) {
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let (policy, _) = new_policy(ctx, &zone.id, t).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (store, v) = (
            ctx.store.clone(),
            policy_version_row(&policy, &format!("v{i}"), t),
        );
        tasks.push(tokio::spawn(async move {
            store.add_policy_version(&v).await.map(|v| v.version)
        }));
    }
    let mut numbers = BTreeSet::new();
    for h in tasks {
        assert!(numbers.insert(join("add_policy_version", h).await.unwrap()));
    }
    assert_eq!(numbers, (2..=11).collect::<BTreeSet<i32>>());
}

/// `list_policies`: active policies, keyset pages.
pub async fn paging_policies<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let base = now_ms();
    let zone = new_zone(ctx, base).await;
    let mut expected = Vec::new();
    for t in paging_times(base) {
        let (p, _) = new_policy(ctx, &zone.id, t).await;
        expected.push((t, p.id));
    }
    let (gone, _) = new_policy(ctx, &zone.id, base).await;
    s.archive_policy(&zone.id, &gone.id, base).await.unwrap();
    let (store, z) = (s.clone(), zone.id.clone());
    check_paging(
        "policies",
        expected,
        true,
        None,
        |p: &Policy| (p.created_at, p.id.clone()),
        move |p| {
            let (store, z) = (store.clone(), z.clone());
            async move { store.list_policies(&z, &p).await }
        },
    )
    .await;
}

/// `policy_set_name`: per zone among active sets (archiving frees the name).
pub async fn policy_set_name_unique<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other = new_zone(ctx, t).await;
    let name = ctx.unique("set");
    let set = set_row(&zone.id, &name, t);
    s.insert_policy_set(&set).await.unwrap();
    assert_eq!(
        s.get_policy_set(&zone.id, &set.id).await.unwrap(),
        Some(set.clone())
    );
    assert_conflict(
        s.insert_policy_set(&set_row(&zone.id, &name, t)).await,
        "policy_set_name",
    );
    let mut same_id = set_row(&zone.id, &ctx.unique("s2"), t);
    same_id.id = set.id.clone();
    assert_conflict(s.insert_policy_set(&same_id).await, "policy_set_id");
    s.insert_policy_set(&set_row(&other.id, &name, t))
        .await
        .unwrap();

    let invalidate = message("caracal.policy.invalidate", &ctx.unique("m"));
    s.archive_policy_set(&zone.id, &set.id, &invalidate, t + secs(1))
        .await
        .unwrap();
    let successor = set_row(&zone.id, &name, t + secs(2));
    s.insert_policy_set(&successor).await.unwrap();
    assert_conflict(
        s.insert_policy_set(&set_row(&zone.id, &name, t)).await,
        "policy_set_name",
    );
    assert_eq!(
        s.get_policy_set(&zone.id, &set.id)
            .await
            .unwrap()
            .map(|s| s.archived_at),
        Some(Some(t + secs(1)))
    );
}

/// Set versions: numbered max + 1 (also under concurrency), never on an archived or missing
/// set; listed newest first with keyset pages.
pub async fn policy_set_version_numbering<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let (_, pv) = new_policy(ctx, &zone.id, t).await;
    let set = set_row(&zone.id, &ctx.unique("set"), t);
    s.insert_policy_set(&set).await.unwrap();
    let mut v1 = set_version_row(&set, &[&pv.id], t);
    v1.version = 42; // ignored
    let v1 = s.add_policy_set_version(&v1).await.unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.manifest_json[0].policy_version_id, pv.id);
    assert_eq!(
        s.get_policy_set_version(&zone.id, &v1.id).await.unwrap(),
        Some(v1.clone())
    );
    assert_conflict(s.add_policy_set_version(&v1).await, "policy_set_version_id");

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, v) = (ctx.store.clone(), set_version_row(&set, &[&pv.id], t));
        tasks.push(tokio::spawn(async move {
            store.add_policy_set_version(&v).await.map(|v| v.version)
        }));
    }
    let mut numbers = BTreeSet::new();
    for h in tasks {
        assert!(numbers.insert(join("add_policy_set_version", h).await.unwrap()));
    }
    assert_eq!(numbers, (2..=9).collect::<BTreeSet<i32>>());

    let mut missing = set_version_row(&set, &[&pv.id], t);
    missing.policy_set_id = new_id();
    assert_not_found(s.add_policy_set_version(&missing).await);
    let other = new_zone(ctx, t).await;
    let mut foreign = set_version_row(&set, &[&pv.id], t);
    foreign.zone_id = other.id.clone();
    assert_not_found(s.add_policy_set_version(&foreign).await);
    let invalidate = message("caracal.policy.invalidate", &ctx.unique("m"));
    s.archive_policy_set(&zone.id, &set.id, &invalidate, t)
        .await
        .unwrap();
    assert_not_found(
        s.add_policy_set_version(&set_version_row(&set, &[&pv.id], t))
            .await,
    );
}

/// `list_policy_sets` (active sets) and `list_policy_set_versions`, keyset pages.
pub async fn paging_policy_sets<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let base = now_ms();
    let zone = new_zone(ctx, base).await;
    let mut expected = Vec::new();
    for t in paging_times(base) {
        let set = set_row(&zone.id, &ctx.unique("ps"), t);
        s.insert_policy_set(&set).await.unwrap();
        expected.push((t, set.id));
    }
    let gone = set_row(&zone.id, &ctx.unique("gone"), base);
    s.insert_policy_set(&gone).await.unwrap();
    let invalidate = message("caracal.policy.invalidate", &ctx.unique("m"));
    s.archive_policy_set(&zone.id, &gone.id, &invalidate, base)
        .await
        .unwrap();
    let (store, z) = (s.clone(), zone.id.clone());
    check_paging(
        "policy sets",
        expected,
        true,
        None,
        |p: &PolicySet| (p.created_at, p.id.clone()),
        move |p| {
            let (store, z) = (store.clone(), z.clone());
            async move { store.list_policy_sets(&z, &p).await }
        },
    )
    .await;

    let (_, pv) = new_policy(ctx, &zone.id, base).await;
    let set = set_row(&zone.id, &ctx.unique("versions"), base);
    s.insert_policy_set(&set).await.unwrap();
    let mut expected = Vec::new();
    for t in paging_times(base) {
        let v = s
            .add_policy_set_version(&set_version_row(&set, &[&pv.id], t))
            .await
            .unwrap();
        expected.push((t, v.id));
    }
    // Another set's versions are not listed.
    s.add_policy_set_version(&set_version_row(
        &{
            let other = set_row(&zone.id, &ctx.unique("other"), base);
            s.insert_policy_set(&other).await.unwrap();
            other
        },
        &[&pv.id],
        base,
    ))
    .await
    .unwrap();
    let (store, z, set_id) = (s.clone(), zone.id.clone(), set.id.clone());
    check_paging(
        "policy set versions",
        expected,
        true,
        None,
        |v: &PolicySetVersion| (v.created_at, v.id.clone()),
        move |p| {
            let (store, z, set_id) = (store.clone(), z.clone(), set_id.clone());
            async move { store.list_policy_set_versions(&z, &set_id, &p).await }
        },
    )
    .await;
}

/// Activation binds exactly one set version per zone, clears every other binding and
/// enqueues the invalidation in the same change; a refused activation changes nothing.
pub async fn policy_activation<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other = new_zone(ctx, t).await;
    let (_, pv) = new_policy(ctx, &zone.id, t).await;
    let a = set_row(&zone.id, &ctx.unique("a"), t);
    let b = set_row(&zone.id, &ctx.unique("b"), t);
    s.insert_policy_set(&a).await.unwrap();
    s.insert_policy_set(&b).await.unwrap();
    let a1 = s
        .add_policy_set_version(&set_version_row(&a, &[&pv.id], t))
        .await
        .unwrap();
    let b1 = s
        .add_policy_set_version(&set_version_row(&b, &[&pv.id], t))
        .await
        .unwrap();
    assert_eq!(s.active_policy(&zone.id).await.unwrap(), None);

    let invalidate = |marker: &str| {
        OutboxMessage::new(
            "caracal.policy.invalidate",
            vec![
                ("zone_id".into(), zone.id.clone()),
                ("marker".into(), marker.to_owned()),
            ],
        )
    };
    let m1 = invalidate(&ctx.unique("activate-a"));
    let outbox_a = s
        .activate_policy_set(&zone.id, &a.id, &a1.id, &m1, t)
        .await
        .unwrap();
    let row = s.get_outbox(&outbox_a).await.unwrap().unwrap();
    assert_eq!(row.message, m1);
    assert_eq!((row.dispatched_at, row.dead_at), (None, None));
    let active = s.active_policy(&zone.id).await.unwrap().unwrap();
    assert_eq!(active.version, a1);
    assert_eq!(
        (
            active.binding.zone_id.as_str(),
            active.binding.policy_set_id.as_str(),
            active.binding.active_version_id.as_deref()
        ),
        (zone.id.as_str(), a.id.as_str(), Some(a1.id.as_str()))
    );
    assert_eq!(
        s.get_policy_set(&zone.id, &a.id)
            .await
            .unwrap()
            .unwrap()
            .active_version_id,
        Some(a1.id.clone())
    );
    assert!(
        s.zones_with_active_policy()
            .await
            .unwrap()
            .contains(&zone.id)
    );
    assert!(
        !s.zones_with_active_policy()
            .await
            .unwrap()
            .contains(&other.id)
    );

    // Activating another set clears the first binding.
    let m2 = invalidate(&ctx.unique("activate-b"));
    let outbox_b = s
        .activate_policy_set(&zone.id, &b.id, &b1.id, &m2, t + secs(1))
        .await
        .unwrap();
    assert_ne!(outbox_b, outbox_a);
    assert_eq!(s.get_outbox(&outbox_b).await.unwrap().unwrap().message, m2);
    assert_eq!(
        s.active_policy(&zone.id).await.unwrap().unwrap().version,
        b1
    );
    assert_eq!(
        s.get_policy_set(&zone.id, &a.id)
            .await
            .unwrap()
            .unwrap()
            .active_version_id,
        None
    );
    let listed = s
        .list_policy_sets(&zone.id, &PageRequest::first(10))
        .await
        .unwrap();
    let bound: Vec<_> = listed
        .items
        .iter()
        .filter_map(|s| s.active_version_id.clone())
        .collect();
    assert_eq!(bound, vec![b1.id.clone()], "exactly one binding is active");

    // Refused activations change nothing and enqueue nothing.
    let before = s.outbox_stats(t).await.unwrap();
    let refused = invalidate(&ctx.unique("refused"));
    assert_not_found(
        s.activate_policy_set(&zone.id, &a.id, &b1.id, &refused, t)
            .await,
    );
    assert_not_found(
        s.activate_policy_set(&zone.id, &new_id(), &a1.id, &refused, t)
            .await,
    );
    assert_not_found(
        s.activate_policy_set(&zone.id, &a.id, &new_id(), &refused, t)
            .await,
    );
    assert_not_found(
        s.activate_policy_set(&other.id, &a.id, &a1.id, &refused, t)
            .await,
    );
    if ctx.fresh {
        assert_eq!(s.outbox_stats(t).await.unwrap(), before);
    }
    assert_eq!(
        s.active_policy(&zone.id).await.unwrap().unwrap().version,
        b1
    );
    assert_eq!(s.active_policy(&other.id).await.unwrap(), None);

    // Roll back by re-activating.
    s.activate_policy_set(
        &zone.id,
        &a.id,
        &a1.id,
        &invalidate(&ctx.unique("rollback")),
        t,
    )
    .await
    .unwrap();
    assert_eq!(
        s.active_policy(&zone.id).await.unwrap().unwrap().version,
        a1
    );
    assert_eq!(
        s.get_policy_set(&zone.id, &b.id)
            .await
            .unwrap()
            .unwrap()
            .active_version_id,
        None
    );
}

/// Whether `archive` enqueued `expected`: an enqueue with the same `(stream, dedupe_key)`
/// coalesces into the row it wrote, and otherwise makes a new row with the probe's fields.
async fn enqueued<S: Stores>(ctx: &Ctx<S>, expected: &OutboxMessage) -> bool {
    let probe = OutboxMessage {
        fields: vec![("probe".into(), ctx.unique("probe"))],
        ..expected.clone()
    };
    let id = ctx.store.enqueue(&probe, now_ms()).await.unwrap();
    ctx.store.get_outbox(&id).await.unwrap().unwrap().message == *expected
}

/// Archiving the active set clears the binding (deny-all) and enqueues the invalidation;
/// archiving an unbound set enqueues nothing.
pub async fn policy_set_archive_clears_binding<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let (_, pv) = new_policy(ctx, &zone.id, t).await;
    let active = set_row(&zone.id, &ctx.unique("active"), t);
    let idle = set_row(&zone.id, &ctx.unique("idle"), t);
    s.insert_policy_set(&active).await.unwrap();
    s.insert_policy_set(&idle).await.unwrap();
    let v = s
        .add_policy_set_version(&set_version_row(&active, &[&pv.id], t))
        .await
        .unwrap();
    s.add_policy_set_version(&set_version_row(&idle, &[&pv.id], t))
        .await
        .unwrap();
    s.activate_policy_set(
        &zone.id,
        &active.id,
        &v.id,
        &message("caracal.policy.invalidate", "on"),
        t,
    )
    .await
    .unwrap();

    let idle_msg = message("caracal.policy.invalidate", "idle").dedupe(ctx.unique("idle"));
    s.archive_policy_set(&zone.id, &idle.id, &idle_msg, t + secs(1))
        .await
        .unwrap();
    assert!(!enqueued(ctx, &idle_msg).await, "no binding was cleared");
    assert_eq!(s.active_policy(&zone.id).await.unwrap().unwrap().version, v);

    let off = message("caracal.policy.invalidate", "off").dedupe(ctx.unique("off"));
    let at = t + secs(2);
    s.archive_policy_set(&zone.id, &active.id, &off, at)
        .await
        .unwrap();
    assert!(
        enqueued(ctx, &off).await,
        "the cleared binding was announced"
    );
    assert_eq!(s.active_policy(&zone.id).await.unwrap(), None);
    assert!(
        !s.zones_with_active_policy()
            .await
            .unwrap()
            .contains(&zone.id)
    );
    let archived = s
        .get_policy_set(&zone.id, &active.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(archived.archived_at, Some(at));
    assert_eq!(archived.updated_at, at);
    assert_eq!(archived.active_version_id, None);
    assert!(
        s.list_policy_sets(&zone.id, &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_not_found(s.archive_policy_set(&zone.id, &active.id, &off, at).await);
    // An archived set cannot be activated.
    assert_not_found(
        s.activate_policy_set(&zone.id, &active.id, &v.id, &off, at)
            .await,
    );
}

/// Policies and sets of another zone are not found.
pub async fn policy_zone_isolation<S: Stores>(ctx: &Ctx<S>) {
    let s = &ctx.store;
    let t = now_ms();
    let zone = new_zone(ctx, t).await;
    let other = new_zone(ctx, t).await;
    let (policy, pv) = new_policy(ctx, &zone.id, t).await;
    let set = set_row(&zone.id, &ctx.unique("set"), t);
    s.insert_policy_set(&set).await.unwrap();
    let sv = s
        .add_policy_set_version(&set_version_row(&set, &[&pv.id], t))
        .await
        .unwrap();
    s.activate_policy_set(
        &zone.id,
        &set.id,
        &sv.id,
        &message("caracal.policy.invalidate", "x"),
        t,
    )
    .await
    .unwrap();

    assert_eq!(s.get_policy(&other.id, &policy.id).await.unwrap(), None);
    assert_eq!(s.get_policy_set(&other.id, &set.id).await.unwrap(), None);
    assert_eq!(
        s.get_policy_set_version(&other.id, &sv.id).await.unwrap(),
        None
    );
    let page = PageRequest::first(10);
    assert!(
        s.list_policies(&other.id, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        s.list_policy_sets(&other.id, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        s.list_policy_set_versions(&other.id, &set.id, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(s.active_policy(&other.id).await.unwrap(), None);
    assert_not_found(s.archive_policy(&other.id, &policy.id, t).await);
    assert_not_found(
        s.archive_policy_set(
            &other.id,
            &set.id,
            &message("caracal.policy.invalidate", "y"),
            t,
        )
        .await,
    );
    assert_eq!(
        s.active_policy(&zone.id).await.unwrap().unwrap().version,
        sv
    );
}

// ---------------------------------------------------------------------------------------------
// Approvals
// ---------------------------------------------------------------------------------------------

fn decision(approve: bool, who: &str) -> ApprovalDecision {
    ApprovalDecision {
        approve,
        reason: Some(format!("decided by {who}")),
        approver_subject_id: who.to_owned(),
        approver_session_id: None,
    }
}

fn applied(u: ApprovalUpdate) -> Approval {
    match u {
        ApprovalUpdate::Applied(a) => a,
        ApprovalUpdate::NotAllowed(state) => panic!("expected Applied, got NotAllowed({state:?})"),
    }
}

/// `approval_live_binding`: one unconsumed hold per (zone, principal, session, binding).
pub async fn approval_live_binding_unique<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let t = f.t0;
    let principal = ctx.unique("principal");
    let binding = binding();
    let hold = approval_row(&f, &principal, &binding, t);
    s.insert_approval(&hold).await.unwrap();
    assert_eq!(
        s.find_live_approval(&f.zone.id, &principal, &f.authority.id, &binding)
            .await
            .unwrap(),
        Some(hold.clone())
    );
    assert_conflict(
        s.insert_approval(&approval_row(&f, &principal, &binding, t))
            .await,
        "approval_live_binding",
    );
    let mut same_id = approval_row(&f, &principal, &self::binding(), t);
    same_id.id = hold.id.clone();
    assert_conflict(s.insert_approval(&same_id).await, "approval_id");
    // Another binding, or another zone, is another key.
    s.insert_approval(&approval_row(&f, &principal, &self::binding(), t))
        .await
        .unwrap();
    let elsewhere = fixture(ctx).await;
    s.insert_approval(&approval_row(&elsewhere, &principal, &binding, t))
        .await
        .unwrap();
    assert_eq!(
        s.find_live_approval(&f.zone.id, &principal, &f.authority.id, &binding)
            .await
            .unwrap()
            .map(|a| a.id),
        Some(hold.id.clone())
    );

    // A decided hold is still unconsumed: it keeps the key until consumed.
    s.decide_approval(
        &f.zone.id,
        &hold.id,
        &decision(true, "admin:a"),
        t + secs(1),
    )
    .await
    .unwrap();
    assert_conflict(
        s.insert_approval(&approval_row(&f, &principal, &binding, t))
            .await,
        "approval_live_binding",
    );
    applied(
        s.consume_approval(&f.zone.id, &hold.id, &f.authority.id, t + secs(2))
            .await
            .unwrap(),
    );
    assert_eq!(
        s.find_live_approval(&f.zone.id, &principal, &f.authority.id, &binding)
            .await
            .unwrap(),
        None
    );
    let next = approval_row(&f, &principal, &binding, t + secs(3));
    s.insert_approval(&next).await.unwrap();
    assert_eq!(
        s.find_live_approval(&f.zone.id, &principal, &f.authority.id, &binding)
            .await
            .unwrap(),
        Some(next)
    );
}

/// Decide lands only on a pending, unexpired hold; consume only on an approved, unexpired
/// one; otherwise the current state is reported and nothing changes.
pub async fn approval_decide_and_consume_states<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let other = new_zone(ctx, f.t0).await;
    let t = f.t0;
    let ar = f.authority.id.clone();
    let new_hold = |_what: &str| approval_row(&f, &ctx.unique("p"), &binding(), t);

    // Approve then consume.
    let h = new_hold("approve");
    s.insert_approval(&h).await.unwrap();
    assert_eq!(
        s.consume_approval(&f.zone.id, &h.id, &ar, t).await.unwrap(),
        ApprovalUpdate::NotAllowed(ApprovalState::Pending)
    );
    assert_not_found(
        s.decide_approval(&other.id, &h.id, &decision(true, "admin:x"), t)
            .await,
    );
    assert_not_found(
        s.decide_approval(&f.zone.id, &new_id(), &decision(true, "admin:x"), t)
            .await,
    );
    let at = t + secs(10);
    let approved = applied(
        s.decide_approval(&f.zone.id, &h.id, &decision(true, "admin:ops"), at)
            .await
            .unwrap(),
    );
    assert_eq!(approved.satisfied_at, Some(at));
    assert_eq!(approved.rejected_at, None);
    assert_eq!(approved.approver_subject_id.as_deref(), Some("admin:ops"));
    assert_eq!(
        approved.decision_reason.as_deref(),
        Some("decided by admin:ops")
    );
    assert_eq!(approved.state(at), ApprovalState::Approved);
    assert_eq!(
        s.get_approval(&f.zone.id, &h.id).await.unwrap(),
        Some(approved.clone())
    );
    assert_eq!(
        s.decide_approval(&f.zone.id, &h.id, &decision(false, "admin:late"), at)
            .await
            .unwrap(),
        ApprovalUpdate::NotAllowed(ApprovalState::Approved)
    );
    assert_not_found(s.consume_approval(&other.id, &h.id, &ar, at).await);
    let consumed = applied(
        s.consume_approval(&f.zone.id, &h.id, &ar, at + secs(1))
            .await
            .unwrap(),
    );
    assert_eq!(consumed.consumed_at, Some(at + secs(1)));
    assert_eq!(
        consumed.consumed_authority_record_id.as_deref(),
        Some(ar.as_str())
    );
    assert_eq!(
        s.consume_approval(&f.zone.id, &h.id, &ar, at + secs(2))
            .await
            .unwrap(),
        ApprovalUpdate::NotAllowed(ApprovalState::Consumed)
    );

    // Reject is terminal.
    let r = new_hold("reject");
    s.insert_approval(&r).await.unwrap();
    let rejected = applied(
        s.decide_approval(&f.zone.id, &r.id, &decision(false, "admin:no"), at)
            .await
            .unwrap(),
    );
    assert_eq!(
        (rejected.rejected_at, rejected.satisfied_at),
        (Some(at), None)
    );
    assert_eq!(
        s.decide_approval(&f.zone.id, &r.id, &decision(true, "admin:yes"), at)
            .await
            .unwrap(),
        ApprovalUpdate::NotAllowed(ApprovalState::Rejected)
    );
    assert_eq!(
        s.consume_approval(&f.zone.id, &r.id, &ar, at)
            .await
            .unwrap(),
        ApprovalUpdate::NotAllowed(ApprovalState::Rejected)
    );

    // Expiry: judged at the `now` given, exactly at `expires_at`.
    let e = new_hold("expire");
    s.insert_approval(&e).await.unwrap();
    assert_eq!(
        s.decide_approval(
            &f.zone.id,
            &e.id,
            &decision(true, "admin:slow"),
            e.expires_at
        )
        .await
        .unwrap(),
        ApprovalUpdate::NotAllowed(ApprovalState::Expired)
    );
    let before_expiry = e.expires_at - Duration::milliseconds(1);
    applied(
        s.decide_approval(
            &f.zone.id,
            &e.id,
            &decision(true, "admin:ok"),
            before_expiry,
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        s.consume_approval(&f.zone.id, &e.id, &ar, e.expires_at)
            .await
            .unwrap(),
        ApprovalUpdate::NotAllowed(ApprovalState::Expired)
    );
    assert_eq!(
        s.get_approval(&f.zone.id, &e.id)
            .await
            .unwrap()
            .unwrap()
            .consumed_at,
        None
    );
    assert_eq!(s.get_approval(&other.id, &e.id).await.unwrap(), None);
}

/// Concurrent decisions on one hold: exactly one lands.
pub async fn approval_decide_race<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let hold = approval_row(&f, &ctx.unique("p"), &binding(), f.t0);
    ctx.store.insert_approval(&hold).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, zone, id) = (ctx.store.clone(), f.zone.id.clone(), hold.id.clone());
        let now = f.t0 + secs(1);
        tasks.push(tokio::spawn(async move {
            let d = decision(i % 2 == 0, &format!("admin:{i}"));
            store.decide_approval(&zone, &id, &d, now).await.unwrap()
        }));
    }
    let mut winners = Vec::new();
    let mut refused = Vec::new();
    for h in tasks {
        match join("decide", h).await {
            ApprovalUpdate::Applied(a) => winners.push(a),
            ApprovalUpdate::NotAllowed(state) => refused.push(state),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one decision lands");
    let winner = &winners[0];
    let final_state = winner.state(f.t0 + secs(1));
    assert!(refused.iter().all(|s| *s == final_state), "{refused:?}");
    assert_eq!(
        ctx.store
            .get_approval(&f.zone.id, &hold.id)
            .await
            .unwrap()
            .as_ref(),
        Some(winner)
    );
}

/// Concurrent consumptions of one approved hold: exactly one mandate gets it.
pub async fn approval_consume_race<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let hold = approval_row(&f, &ctx.unique("p"), &binding(), f.t0);
    ctx.store.insert_approval(&hold).await.unwrap();
    // Each consumer brings its own authority record (the one its mandate would carry).
    let mut records = Vec::new();
    for _ in 0..8 {
        let r = authority_row(&f.zone.id, &ctx.unique("consumer"), None, f.t0);
        ctx.store.insert_authority(&r).await.unwrap();
        records.push(r.id);
    }
    ctx.store
        .decide_approval(&f.zone.id, &hold.id, &decision(true, "admin:a"), f.t0)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for ar in records {
        let (store, zone, id) = (ctx.store.clone(), f.zone.id.clone(), hold.id.clone());
        let now = f.t0 + secs(1);
        tasks.push(tokio::spawn(async move {
            (
                store.consume_approval(&zone, &id, &ar, now).await.unwrap(),
                ar,
            )
        }));
    }
    let mut winners = Vec::new();
    for h in tasks {
        match join("consume", h).await {
            (ApprovalUpdate::Applied(_), ar) => winners.push(ar),
            (ApprovalUpdate::NotAllowed(state), _) => {
                assert_eq!(state, ApprovalState::Consumed)
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one consumer wins");
    let stored = ctx
        .store
        .get_approval(&f.zone.id, &hold.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.consumed_authority_record_id,
        Some(winners[0].clone())
    );
}

/// The state filter of the list is judged at the `now` given.
pub async fn approval_list_states<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let t = f.t0;
    let mk = |_what: &str| approval_row(&f, &ctx.unique("p"), &binding(), t);
    let pending = mk("pending");
    let approved = mk("approved");
    let rejected = mk("rejected");
    let consumed = mk("consumed");
    let mut expired = mk("expired");
    expired.expires_at = t + secs(5);
    for h in [&pending, &approved, &rejected, &consumed, &expired] {
        s.insert_approval(h).await.unwrap();
    }
    let zone = &f.zone.id;
    s.decide_approval(zone, &approved.id, &decision(true, "admin:a"), t)
        .await
        .unwrap();
    s.decide_approval(zone, &rejected.id, &decision(false, "admin:a"), t)
        .await
        .unwrap();
    s.decide_approval(zone, &consumed.id, &decision(true, "admin:a"), t)
        .await
        .unwrap();
    s.consume_approval(zone, &consumed.id, &f.authority.id, t)
        .await
        .unwrap();

    let now = t + secs(10);
    let page = PageRequest::first(50);
    for (state, hold) in [
        (ApprovalState::Pending, &pending),
        (ApprovalState::Approved, &approved),
        (ApprovalState::Rejected, &rejected),
        (ApprovalState::Consumed, &consumed),
        (ApprovalState::Expired, &expired),
    ] {
        let listed = s
            .list_approvals(zone, Some(state), now, &page)
            .await
            .unwrap();
        assert_eq!(
            listed
                .items
                .iter()
                .map(|a| a.id.clone())
                .collect::<Vec<_>>(),
            vec![hold.id.clone()],
            "{state:?}"
        );
    }
    // Before its expiry the short hold is still pending.
    let early = s
        .list_approvals(zone, Some(ApprovalState::Pending), t, &page)
        .await
        .unwrap();
    assert_eq!(early.items.len(), 2);
    assert_eq!(
        s.list_approvals(zone, None, now, &page)
            .await
            .unwrap()
            .items
            .len(),
        5
    );
    let other = new_zone(ctx, t).await;
    assert!(
        s.list_approvals(&other.id, None, now, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Keyset paging of approvals.
pub async fn paging_approvals<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let mut expected = Vec::new();
    for t in paging_times(f.t0) {
        let a = approval_row(&f, &ctx.unique("p"), &binding(), t);
        ctx.store.insert_approval(&a).await.unwrap();
        expected.push((t, a.id));
    }
    let (store, z, now) = (ctx.store.clone(), f.zone.id.clone(), f.t0);
    check_paging(
        "approvals",
        expected,
        true,
        None,
        |a: &Approval| (a.created_at, a.id.clone()),
        move |p| {
            let (store, z) = (store.clone(), z.clone());
            async move { store.list_approvals(&z, None, now, &p).await }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Coordinator
// ---------------------------------------------------------------------------------------------

async fn begin<S: Stores>(store: &S, zone_id: &str) -> Box<dyn CoordinatorTx> {
    within("begin a unit of work", store.begin(zone_id))
        .await
        .unwrap()
}

/// Dropping a unit of work discards everything: sessions, edges, epoch, receipts, outbox.
pub async fn coordinator_rollback_on_drop<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let t = f.t0;
    let parent = task_session(&f, None, t);
    let child = task_session(&f, Some(&parent), t);
    let edge = edge_row(&parent, &child, t);
    let key = digest();
    let msg = message("caracal.agents.lifecycle", "spawn").dedupe(ctx.unique("spawn"));
    {
        let mut tx = begin(s, &f.zone.id).await;
        assert_eq!(tx.zone_id(), f.zone.id);
        tx.insert_session(&parent).await.unwrap();
        tx.insert_session(&child).await.unwrap();
        tx.insert_edge(&edge).await.unwrap();
        assert_eq!(tx.bump_epoch().await.unwrap(), 1);
        tx.put_receipt(&receipt_row(&f.zone.id, &f.app.id, key, t, secs(3600)))
            .await
            .unwrap();
        tx.enqueue(&msg).await.unwrap();
        // Dropped here without commit.
    }
    assert_eq!(
        s.get_session(&f.zone.id, &parent.agent_session_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.get_edge(&f.zone.id, &edge.id).await.unwrap(), None);
    assert_eq!(s.graph_epoch(&f.zone.id).await.unwrap(), 0);
    assert!(
        s.session_edges(&f.zone.id, &child.agent_session_id, true)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !enqueued(ctx, &msg).await,
        "a rolled-back message was published"
    );

    // The zone is free again, and the next unit of work sees none of it.
    let mut tx = begin(s, &f.zone.id).await;
    assert_eq!(
        tx.get_session(&parent.agent_session_id).await.unwrap(),
        None
    );
    assert_eq!(
        tx.get_receipt(IdempotentOperation::SessionStart, &f.app.id, &key, t)
            .await
            .unwrap(),
        None
    );
    // The ids were never taken.
    tx.insert_session(&parent).await.unwrap();
    tx.commit().await.unwrap();
}

/// Writes become visible to plain readers only at commit, together with their outbox rows
/// and the epoch.
pub async fn coordinator_commit_visibility<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let t = f.t0;
    let a = task_session(&f, None, t);
    let b = task_session(&f, None, t);
    let edge = edge_row(&a, &b, t);
    let msg = message("caracal.delegations.invalidate", &ctx.unique("edge_create"));
    let mut tx = begin(s, &f.zone.id).await;
    tx.insert_session(&a).await.unwrap();
    tx.insert_session(&b).await.unwrap();
    tx.insert_edge(&edge).await.unwrap();
    tx.bump_epoch().await.unwrap();
    let outbox_id = tx.enqueue(&msg).await.unwrap();

    // Not yet visible.
    assert_eq!(
        s.get_session(&f.zone.id, &a.agent_session_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.get_edge(&f.zone.id, &edge.id).await.unwrap(), None);
    assert_eq!(s.graph_epoch(&f.zone.id).await.unwrap(), 0);
    assert_eq!(s.get_outbox(&outbox_id).await.unwrap(), None);
    let all = IdPage {
        limit: 10,
        after_id: None,
    };
    assert!(
        s.list_sessions(&f.zone.id, &SessionFilter::default(), &all)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    within("commit", tx.commit()).await.unwrap();
    assert_eq!(
        s.get_session(&f.zone.id, &a.agent_session_id)
            .await
            .unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        s.get_edge(&f.zone.id, &edge.id).await.unwrap(),
        Some(edge.clone())
    );
    assert_eq!(s.graph_epoch(&f.zone.id).await.unwrap(), 1);
    assert_eq!(
        s.session_edges(&f.zone.id, &b.agent_session_id, true)
            .await
            .unwrap(),
        vec![edge.clone()]
    );
    assert_eq!(
        s.session_edges(&f.zone.id, &a.agent_session_id, false)
            .await
            .unwrap(),
        vec![edge.clone()]
    );
    assert!(
        s.session_edges(&f.zone.id, &a.agent_session_id, true)
            .await
            .unwrap()
            .is_empty()
    );
    let row = s.get_outbox(&outbox_id).await.unwrap().unwrap();
    assert_eq!(row.message, msg);
    assert_eq!((row.dispatched_at, row.dead_at), (None, None));
    let listed = s
        .list_sessions(&f.zone.id, &SessionFilter::default(), &all)
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);
}

/// Inside a unit of work every read sees its own writes.
pub async fn coordinator_reads_see_own_writes<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let t = f.t0;
    let root = task_session(&f, None, t);
    {
        let mut tx = begin(s, &f.zone.id).await;
        tx.insert_session(&root).await.unwrap();
        tx.commit().await.unwrap();
    }
    let committed_child = task_session(&f, Some(&root), t);
    {
        let mut tx = begin(s, &f.zone.id).await;
        tx.insert_session(&committed_child).await.unwrap();
        tx.commit().await.unwrap();
    }

    let mut tx = begin(s, &f.zone.id).await;
    let child = task_session(&f, Some(&root), t);
    tx.insert_session(&child).await.unwrap();
    assert_eq!(
        tx.get_session(&child.agent_session_id).await.unwrap(),
        Some(child.clone())
    );
    let mut ids: Vec<String> = tx
        .children(&root.agent_session_id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.agent_session_id)
        .collect();
    ids.sort();
    let mut want = vec![
        child.agent_session_id.clone(),
        committed_child.agent_session_id.clone(),
    ];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(tx.count_live_sessions(None, t).await.unwrap(), 3);

    // Update a committed row inside the unit of work.
    let mut terminated = committed_child.clone();
    terminated.status = SessionStatus::Terminated;
    terminated.terminated_at = Some(t + secs(1));
    terminated.termination_reason = Some("requested".into());
    tx.update_session(&terminated).await.unwrap();
    assert_eq!(
        tx.get_session(&committed_child.agent_session_id)
            .await
            .unwrap(),
        Some(terminated.clone())
    );
    assert_eq!(tx.count_live_sessions(None, t).await.unwrap(), 2);
    assert_eq!(tx.children(&root.agent_session_id).await.unwrap().len(), 2);

    let edge = edge_row(&root, &child, t);
    tx.insert_edge(&edge).await.unwrap();
    assert_eq!(tx.get_edge(&edge.id).await.unwrap(), Some(edge.clone()));
    assert_eq!(
        tx.session_edges(&child.agent_session_id, true)
            .await
            .unwrap(),
        vec![edge.clone()]
    );
    assert_eq!(
        tx.session_edges(&root.agent_session_id, false)
            .await
            .unwrap(),
        vec![edge.clone()]
    );
    assert_eq!(tx.live_edges(t).await.unwrap(), vec![edge.clone()]);
    let mut revoked = edge.clone();
    revoked.status = EdgeStatus::Revoked;
    revoked.edge_version = 2;
    revoked.revoked_at = Some(t + secs(2));
    tx.update_edge(&revoked).await.unwrap();
    assert_eq!(tx.get_edge(&edge.id).await.unwrap(), Some(revoked.clone()));
    assert!(tx.live_edges(t).await.unwrap().is_empty());

    assert_eq!(tx.bump_epoch().await.unwrap(), 1);
    assert_eq!(tx.bump_epoch().await.unwrap(), 2);

    let key = digest();
    let receipt = receipt_row(&f.zone.id, &f.app.id, key, t, secs(3600));
    tx.put_receipt(&receipt).await.unwrap();
    assert_eq!(
        tx.get_receipt(IdempotentOperation::SessionStart, &f.app.id, &key, t)
            .await
            .unwrap(),
        Some(receipt.clone())
    );
    assert_eq!(
        tx.count_receipts(IdempotentOperation::SessionStart, &f.app.id, t)
            .await
            .unwrap(),
        1
    );

    let msg = message("caracal.agents.lifecycle", "x").dedupe(ctx.unique("k"));
    let first = tx.enqueue(&msg).await.unwrap();
    assert_eq!(
        tx.enqueue(&msg).await.unwrap(),
        first,
        "dedupe within the unit of work"
    );
    tx.commit().await.unwrap();

    assert_eq!(s.graph_epoch(&f.zone.id).await.unwrap(), 2);
    assert_eq!(
        s.get_session(&f.zone.id, &committed_child.agent_session_id)
            .await
            .unwrap(),
        Some(terminated)
    );
    assert_eq!(
        s.get_edge(&f.zone.id, &edge.id).await.unwrap(),
        Some(revoked)
    );
    assert_eq!(s.get_outbox(&first).await.unwrap().unwrap().message, msg);
    // A message coalesced with a committed row returns that row's id.
    let mut tx = begin(s, &f.zone.id).await;
    assert_eq!(tx.enqueue(&msg).await.unwrap(), first);
}

/// Two units of work on one zone serialise: the second waits for the first and sees its
/// commit.
pub async fn coordinator_same_zone_serialises<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let session = task_session(&f, None, f.t0);
    let mut first = begin(s, &f.zone.id).await;
    first.insert_session(&session).await.unwrap();
    assert_eq!(first.bump_epoch().await.unwrap(), 1);

    let entered = Arc::new(AtomicBool::new(false));
    let second = {
        let (store, zone, entered) = (s.clone(), f.zone.id.clone(), entered.clone());
        let id = session.agent_session_id.clone();
        tokio::spawn(async move {
            let mut tx = within("second begin", store.begin(&zone)).await.unwrap();
            entered.store(true, Ordering::SeqCst);
            let seen = tx.get_session(&id).await.unwrap();
            let epoch = tx.bump_epoch().await.unwrap();
            tx.commit().await.unwrap();
            (seen, epoch)
        })
    };
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert!(
        !entered.load(Ordering::SeqCst),
        "a second unit of work entered the zone while the first held it"
    );
    within("first commit", first.commit()).await.unwrap();
    let (seen, epoch) = join("second unit of work", second).await;
    assert_eq!(seen, Some(session), "the second saw the first's commit");
    assert_eq!(epoch, 2);
    assert_eq!(s.graph_epoch(&f.zone.id).await.unwrap(), 2);
}

/// Units of work on different zones do not wait for each other.
pub async fn coordinator_zones_independent<S: Stores>(ctx: &Ctx<S>) {
    let a = fixture(ctx).await;
    let b = fixture(ctx).await;
    let s = &ctx.store;
    let mut held = begin(s, &a.zone.id).await;
    held.bump_epoch().await.unwrap();
    // `begin` times out (and fails the case) if zone B waits for zone A.
    let mut other = begin(s, &b.zone.id).await;
    let session = task_session(&b, None, b.t0);
    other.insert_session(&session).await.unwrap();
    within("commit on zone B", other.commit()).await.unwrap();
    assert_eq!(
        s.get_session(&b.zone.id, &session.agent_session_id)
            .await
            .unwrap(),
        Some(session)
    );
    // Zone A is still held and unchanged.
    assert_eq!(s.graph_epoch(&a.zone.id).await.unwrap(), 0);
    held.commit().await.unwrap();
    assert_eq!(s.graph_epoch(&a.zone.id).await.unwrap(), 1);
    assert_eq!(s.graph_epoch(&b.zone.id).await.unwrap(), 0);
}

/// The epoch only moves forward: each committed bump adds one, a rolled-back one adds
/// nothing, and concurrent units of work each get a distinct value.
pub async fn coordinator_epoch_monotonic<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    assert_eq!(s.graph_epoch(&f.zone.id).await.unwrap(), 0);
    let mut tx = begin(s, &f.zone.id).await;
    assert_eq!(tx.bump_epoch().await.unwrap(), 1);
    tx.commit().await.unwrap();
    {
        let mut tx = begin(s, &f.zone.id).await;
        assert_eq!(tx.bump_epoch().await.unwrap(), 2);
    }
    assert_eq!(s.graph_epoch(&f.zone.id).await.unwrap(), 1);

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, zone) = (s.clone(), f.zone.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = within("begin", store.begin(&zone)).await.unwrap();
            let e = tx.bump_epoch().await.unwrap();
            tokio::task::yield_now().await;
            tx.commit().await.unwrap();
            e
        }));
    }
    let mut seen = BTreeSet::new();
    for h in tasks {
        assert!(seen.insert(join("epoch bump", h).await));
    }
    assert_eq!(seen, (2..=9).collect::<BTreeSet<i64>>());
    assert_eq!(s.graph_epoch(&f.zone.id).await.unwrap(), 9);
}

/// Receipts: found while unexpired (expiry exact at `expires_at`), counted per scope, kept
/// across commits, unique per key until expired, and private to their zone.
pub async fn coordinator_receipts<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let t = f.t0;
    let op = IdempotentOperation::SessionStart;
    let (k1, k2, k3) = (digest(), digest(), digest());
    let r1 = receipt_row(&f.zone.id, &f.app.id, k1, t, secs(3600));
    let r2 = receipt_row(&f.zone.id, &f.app.id, k2, t, secs(7200));
    let short = receipt_row(&f.zone.id, &f.app.id, k3, t, secs(60));
    let mut delegation = receipt_row(&f.zone.id, &f.app.id, k1, t, secs(3600));
    delegation.operation = IdempotentOperation::DelegationCreate;
    {
        let mut tx = begin(s, &f.zone.id).await;
        for r in [&r1, &r2, &short, &delegation] {
            tx.put_receipt(r).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    let mut tx = begin(s, &f.zone.id).await;
    assert_eq!(
        tx.get_receipt(op, &f.app.id, &k1, t + secs(60))
            .await
            .unwrap(),
        Some(r1.clone())
    );
    assert_eq!(
        tx.get_receipt(op, &f.app.id, &k3, t + secs(59))
            .await
            .unwrap(),
        Some(short.clone())
    );
    assert_eq!(
        tx.get_receipt(op, &f.app.id, &k3, t + secs(60))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        tx.get_receipt(op, "another-scope", &k1, t).await.unwrap(),
        None
    );
    assert_eq!(
        tx.get_receipt(IdempotentOperation::DelegationCreate, &f.app.id, &k1, t)
            .await
            .unwrap(),
        Some(delegation.clone())
    );
    assert_eq!(tx.count_receipts(op, &f.app.id, t).await.unwrap(), 3);
    assert_eq!(
        tx.count_receipts(op, &f.app.id, t + secs(60))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        tx.count_receipts(op, &f.app.id, t + secs(3600))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        tx.count_receipts(IdempotentOperation::DelegationCreate, &f.app.id, t)
            .await
            .unwrap(),
        1
    );

    // Unique while unexpired; an expired one is replaced.
    let again = receipt_row(&f.zone.id, &f.app.id, k1, t + secs(10), secs(3600));
    assert_conflict(tx.put_receipt(&again).await, "idempotency_receipt");
    let replacement = receipt_row(&f.zone.id, &f.app.id, k3, t + secs(60), secs(600));
    tx.put_receipt(&replacement).await.unwrap();
    assert_eq!(
        tx.get_receipt(op, &f.app.id, &k3, t + secs(61))
            .await
            .unwrap(),
        Some(replacement.clone())
    );
    tx.commit().await.unwrap();

    let other = fixture(ctx).await;
    let mut tx = begin(s, &other.zone.id).await;
    assert_eq!(tx.get_receipt(op, &f.app.id, &k1, t).await.unwrap(), None);
    assert_eq!(tx.count_receipts(op, &f.app.id, t).await.unwrap(), 0);
    // Writing a record of another zone through this unit of work is refused.
    assert!(tx.put_receipt(&r1).await.is_err());
}

/// `session_id` and `delegation_edge_id` are unique; rows of another zone are not found by
/// plain readers or by a unit of work; updates keep the immutable fields.
pub async fn coordinator_unique_and_isolation<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let g = fixture(ctx).await;
    let s = &ctx.store;
    let t = f.t0;
    let a = task_session(&f, None, t);
    let b = task_session(&f, None, t);
    let edge = edge_row(&a, &b, t);
    {
        let mut tx = begin(s, &f.zone.id).await;
        tx.insert_session(&a).await.unwrap();
        assert_conflict(tx.insert_session(&a).await, "session_id");
        tx.insert_session(&b).await.unwrap();
        tx.insert_edge(&edge).await.unwrap();
        assert_conflict(tx.insert_edge(&edge).await, "delegation_edge_id");
        tx.commit().await.unwrap();
    }
    let mut tx = begin(s, &f.zone.id).await;
    assert_conflict(tx.insert_session(&a).await, "session_id");
    assert_conflict(tx.insert_edge(&edge).await, "delegation_edge_id");
    assert_not_found(tx.update_session(&task_session(&f, None, t)).await);
    let mut missing_edge = edge.clone();
    missing_edge.id = new_id();
    assert_not_found(tx.update_edge(&missing_edge).await);

    // Updates keep identity and placement.
    let mut changed = a.clone();
    changed.status = SessionStatus::Suspended;
    changed.labels = vec!["paused".into()];
    changed.child_count = 3;
    changed.lease_generation = 7;
    let mut attempt = changed.clone();
    attempt.application_id = g.app.id.clone();
    attempt.parent_id = Some(b.agent_session_id.clone());
    attempt.depth = 4;
    attempt.lifecycle = Lifecycle::Service;
    attempt.started_at = t - secs(100);
    attempt.subject_authority_record_id = g.authority.id.clone();
    tx.update_session(&attempt).await.unwrap();
    let mut edge_change = edge.clone();
    edge_change.status = EdgeStatus::Revoked;
    edge_change.edge_version = 2;
    edge_change.revoked_at = Some(t);
    let mut edge_attempt = edge_change.clone();
    edge_attempt.scopes = vec!["everything".into()];
    edge_attempt.expires_at = t + secs(999_999);
    tx.update_edge(&edge_attempt).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        s.get_session(&f.zone.id, &a.agent_session_id)
            .await
            .unwrap(),
        Some(changed)
    );
    assert_eq!(
        s.get_edge(&f.zone.id, &edge.id).await.unwrap(),
        Some(edge_change)
    );

    // Another zone sees none of it.
    assert_eq!(
        s.get_session(&g.zone.id, &a.agent_session_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.get_edge(&g.zone.id, &edge.id).await.unwrap(), None);
    assert!(
        s.session_edges(&g.zone.id, &b.agent_session_id, true)
            .await
            .unwrap()
            .is_empty()
    );
    let all = IdPage {
        limit: 10,
        after_id: None,
    };
    assert!(
        s.list_sessions(&g.zone.id, &SessionFilter::default(), &all)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let mut tx = begin(s, &g.zone.id).await;
    assert_eq!(tx.get_session(&a.agent_session_id).await.unwrap(), None);
    assert_eq!(tx.get_edge(&edge.id).await.unwrap(), None);
    assert!(tx.children(&a.agent_session_id).await.unwrap().is_empty());
    assert!(tx.live_edges(t).await.unwrap().is_empty());
    assert_eq!(tx.count_live_sessions(None, t).await.unwrap(), 0);
    let mut moved = a.clone();
    moved.zone_id = g.zone.id.clone();
    assert_not_found(tx.update_session(&moved).await);
    // A record of zone A cannot be written through zone B's unit of work.
    assert!(tx.insert_session(&task_session(&f, None, t)).await.is_err());
}

/// Live slots: tasks within TTL (active or suspended), services suspended or within their
/// lease; never terminal sessions.
pub async fn coordinator_count_live_sessions<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let now = f.t0;
    let other_app = app_row(&f.zone.id, &ctx.unique("other-app"), now);
    s.insert_application(&other_app).await.unwrap();

    let live_task = task_session(&f, None, now - secs(10));
    let mut old_task = task_session(&f, None, now - secs(3600));
    old_task.ttl_seconds = Some(3600); // ends exactly at `now`
    let mut suspended_task = task_session(&f, None, now);
    suspended_task.status = SessionStatus::Suspended;
    let mut terminated = task_session(&f, None, now);
    terminated.status = SessionStatus::Terminated;
    terminated.terminated_at = Some(now);
    let mut expired = task_session(&f, None, now);
    expired.status = SessionStatus::Expired;
    expired.terminated_at = Some(now);
    let leased = service_session(&f, now, now + secs(120));
    let lapsed = service_session(&f, now - secs(200), now);
    let mut suspended_service = service_session(&f, now - secs(200), now - secs(80));
    suspended_service.status = SessionStatus::Suspended;
    let mut other = task_session(&f, None, now);
    other.application_id = other_app.id.clone();

    let mut tx = begin(s, &f.zone.id).await;
    for sess in [
        &live_task,
        &old_task,
        &suspended_task,
        &terminated,
        &expired,
        &leased,
        &lapsed,
        &suspended_service,
        &other,
    ] {
        tx.insert_session(sess).await.unwrap();
    }
    // Counted inside the unit of work and again after commit.
    assert_eq!(tx.count_live_sessions(None, now).await.unwrap(), 5);
    assert_eq!(
        tx.count_live_sessions(Some(&f.app.id), now).await.unwrap(),
        4
    );
    tx.commit().await.unwrap();
    let mut tx = begin(s, &f.zone.id).await;
    assert_eq!(tx.count_live_sessions(None, now).await.unwrap(), 5);
    assert_eq!(
        tx.count_live_sessions(Some(&other_app.id), now)
            .await
            .unwrap(),
        1
    );
    // A second earlier the old task and the lapsed service still held their slots.
    assert_eq!(
        tx.count_live_sessions(None, now - secs(1)).await.unwrap(),
        7
    );
}

/// `list_sessions`: `id DESC`, strictly below the cursor id, `next` iff full, and filters.
pub async fn paging_sessions<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let t = f.t0;
    let root = task_session(&f, None, t);
    let mut sessions = vec![root.clone()];
    for i in 0..6 {
        let mut sess = task_session(&f, Some(&root), t + secs(i));
        if i % 2 == 0 {
            sess.labels = vec!["even".into()];
        }
        if i == 5 {
            sess.lifecycle = Lifecycle::Service;
            sess.ttl_seconds = None;
            sess.heartbeat_deadline_at = Some(t + secs(120));
            sess.status = SessionStatus::Terminated;
            sess.terminated_at = Some(t + secs(i));
        }
        sessions.push(sess);
    }
    {
        let mut tx = begin(s, &f.zone.id).await;
        for sess in &sessions {
            tx.insert_session(sess).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let mut ids: Vec<String> = sessions
        .iter()
        .map(|s| s.agent_session_id.clone())
        .collect();
    ids.sort_by(|a, b| b.cmp(a));
    let all = SessionFilter::default();
    let page = |limit: u32, after_id: Option<String>| IdPage { limit, after_id };
    let page_ids = |p: &Page<Session>| {
        p.items
            .iter()
            .map(|s| s.agent_session_id.clone())
            .collect::<Vec<_>>()
    };

    let p1 = s
        .list_sessions(&f.zone.id, &all, &page(3, None))
        .await
        .unwrap();
    assert_eq!(page_ids(&p1), ids[0..3]);
    let next = p1.next.clone().unwrap();
    assert_eq!(next.id, ids[2]);
    let p2 = s
        .list_sessions(&f.zone.id, &all, &page(3, Some(next.id)))
        .await
        .unwrap();
    assert_eq!(page_ids(&p2), ids[3..6]);
    let p3 = s
        .list_sessions(
            &f.zone.id,
            &all,
            &page(3, Some(p2.next.clone().unwrap().id)),
        )
        .await
        .unwrap();
    assert_eq!(page_ids(&p3), ids[6..7]);
    assert_eq!(p3.next, None);
    let exact = s
        .list_sessions(&f.zone.id, &all, &page(7, None))
        .await
        .unwrap();
    assert_eq!(page_ids(&exact), ids);
    let after_exact = s
        .list_sessions(&f.zone.id, &all, &page(7, Some(exact.next.unwrap().id)))
        .await
        .unwrap();
    assert!(after_exact.items.is_empty());
    assert_eq!(after_exact.next, None);

    let count = |filter: SessionFilter| {
        let (store, zone) = (s.clone(), f.zone.id.clone());
        async move {
            store
                .list_sessions(&zone, &filter, &page(50, None))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(
        count(SessionFilter {
            parent_id: Some(root.agent_session_id.clone()),
            ..SessionFilter::default()
        })
        .await,
        6
    );
    assert_eq!(
        count(SessionFilter {
            label: Some("even".into()),
            ..SessionFilter::default()
        })
        .await,
        3
    );
    assert_eq!(
        count(SessionFilter {
            status: Some(SessionStatus::Terminated),
            ..SessionFilter::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(SessionFilter {
            lifecycle: Some(Lifecycle::Task),
            application_id: Some(f.app.id.clone()),
            ..SessionFilter::default()
        })
        .await,
        6
    );
    assert_eq!(
        count(SessionFilter {
            application_id: Some(new_id()),
            ..SessionFilter::default()
        })
        .await,
        0
    );
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// The names of the durable cases, in [`run_all`] order.
pub const CASES: &[&str] = &[
    "zone_slug_unique",
    "zone_update_and_archive",
    "paging_zones",
    "application_name_unique",
    "application_isolation_and_archive",
    "paging_applications",
    "resource_identifier_unique",
    "resource_isolation_and_archive",
    "paging_resources",
    "provider_identifier_unique",
    "provider_isolation_and_archive",
    "paging_providers",
    "secret_versions",
    "admin_token_hash_unique",
    "paging_admin_tokens",
    "authority_unique_and_isolation",
    "authority_lineage_order",
    "authority_lineage_depth_limit",
    "authority_revoke",
    "authority_revoke_subject",
    "signing_key_versions",
    "signing_key_versions_concurrent",
    "outbox_enqueue_and_dedupe",
    "outbox_claim_exclusive",
    "outbox_lease_expiry_reclaim",
    "outbox_claim_order",
    "outbox_mark_failed_retry_and_dead",
    "outbox_dispatch_and_stats",
    "outbox_requeue_dead",
    "policy_name_unique",
    "policy_version_numbering",
    "policy_version_numbering_concurrent",
    "paging_policies",
    "policy_set_name_unique",
    "policy_set_version_numbering",
    "paging_policy_sets",
    "policy_activation",
    "policy_set_archive_clears_binding",
    "policy_zone_isolation",
    "approval_live_binding_unique",
    "approval_decide_and_consume_states",
    "approval_decide_race",
    "approval_consume_race",
    "approval_list_states",
    "paging_approvals",
    "coordinator_rollback_on_drop",
    "coordinator_commit_visibility",
    "coordinator_reads_see_own_writes",
    "coordinator_same_zone_serialises",
    "coordinator_zones_independent",
    "coordinator_epoch_monotonic",
    "coordinator_receipts",
    "coordinator_unique_and_isolation",
    "coordinator_count_live_sessions",
    "paging_sessions",
];

/// The names of the expiring-key cases, in [`run_all_ephemeral`] order.
pub const EPHEMERAL_CASES: &[&str] = &[
    "ephemeral_set_nx_single_winner",
    "ephemeral_incr_window_counting",
    "ephemeral_expiry",
];

/// Run the durable case named `name` (one of [`CASES`]) on `ctx`. Panics on an unknown name.
pub async fn run_case<S: Stores>(name: &str, ctx: &Ctx<S>) {
    match name {
        "zone_slug_unique" => zone_slug_unique(ctx).await,
        "zone_update_and_archive" => zone_update_and_archive(ctx).await,
        "paging_zones" => paging_zones(ctx).await,
        "application_name_unique" => application_name_unique(ctx).await,
        "application_isolation_and_archive" => application_isolation_and_archive(ctx).await,
        "paging_applications" => paging_applications(ctx).await,
        "resource_identifier_unique" => resource_identifier_unique(ctx).await,
        "resource_isolation_and_archive" => resource_isolation_and_archive(ctx).await,
        "paging_resources" => paging_resources(ctx).await,
        "provider_identifier_unique" => provider_identifier_unique(ctx).await,
        "provider_isolation_and_archive" => provider_isolation_and_archive(ctx).await,
        "paging_providers" => paging_providers(ctx).await,
        "secret_versions" => secret_versions(ctx).await,
        "admin_token_hash_unique" => admin_token_hash_unique(ctx).await,
        "paging_admin_tokens" => paging_admin_tokens(ctx).await,
        "authority_unique_and_isolation" => authority_unique_and_isolation(ctx).await,
        "authority_lineage_order" => authority_lineage_order(ctx).await,
        "authority_lineage_depth_limit" => authority_lineage_depth_limit(ctx).await,
        "authority_revoke" => authority_revoke(ctx).await,
        "authority_revoke_subject" => authority_revoke_subject(ctx).await,
        "signing_key_versions" => signing_key_versions(ctx).await,
        "signing_key_versions_concurrent" => signing_key_versions_concurrent(ctx).await,
        "outbox_enqueue_and_dedupe" => outbox_enqueue_and_dedupe(ctx).await,
        "outbox_claim_exclusive" => outbox_claim_exclusive(ctx).await,
        "outbox_lease_expiry_reclaim" => outbox_lease_expiry_reclaim(ctx).await,
        "outbox_claim_order" => outbox_claim_order(ctx).await,
        "outbox_mark_failed_retry_and_dead" => outbox_mark_failed_retry_and_dead(ctx).await,
        "outbox_dispatch_and_stats" => outbox_dispatch_and_stats(ctx).await,
        "outbox_requeue_dead" => outbox_requeue_dead(ctx).await,
        "policy_name_unique" => policy_name_unique(ctx).await,
        "policy_version_numbering" => policy_version_numbering(ctx).await,
        "policy_version_numbering_concurrent" => policy_version_numbering_concurrent(ctx).await,
        "paging_policies" => paging_policies(ctx).await,
        "policy_set_name_unique" => policy_set_name_unique(ctx).await,
        "policy_set_version_numbering" => policy_set_version_numbering(ctx).await,
        "paging_policy_sets" => paging_policy_sets(ctx).await,
        "policy_activation" => policy_activation(ctx).await,
        "policy_set_archive_clears_binding" => policy_set_archive_clears_binding(ctx).await,
        "policy_zone_isolation" => policy_zone_isolation(ctx).await,
        "approval_live_binding_unique" => approval_live_binding_unique(ctx).await,
        "approval_decide_and_consume_states" => approval_decide_and_consume_states(ctx).await,
        "approval_decide_race" => approval_decide_race(ctx).await,
        "approval_consume_race" => approval_consume_race(ctx).await,
        "approval_list_states" => approval_list_states(ctx).await,
        "paging_approvals" => paging_approvals(ctx).await,
        "coordinator_rollback_on_drop" => coordinator_rollback_on_drop(ctx).await,
        "coordinator_commit_visibility" => coordinator_commit_visibility(ctx).await,
        "coordinator_reads_see_own_writes" => coordinator_reads_see_own_writes(ctx).await,
        "coordinator_same_zone_serialises" => coordinator_same_zone_serialises(ctx).await,
        "coordinator_zones_independent" => coordinator_zones_independent(ctx).await,
        "coordinator_epoch_monotonic" => coordinator_epoch_monotonic(ctx).await,
        "coordinator_receipts" => coordinator_receipts(ctx).await,
        "coordinator_unique_and_isolation" => coordinator_unique_and_isolation(ctx).await,
        "coordinator_count_live_sessions" => coordinator_count_live_sessions(ctx).await,
        "paging_sessions" => paging_sessions(ctx).await,
        other => panic!("no contract case named {other}"),
    }
}

/// Run the expiring-key case named `name` (one of [`EPHEMERAL_CASES`]) on `ctx`.
pub async fn run_ephemeral_case<E>(name: &str, ctx: &Ctx<E>)
where
    E: EphemeralKeys + Clone + Send + Sync + 'static,
{
    match name {
        "ephemeral_set_nx_single_winner" => ephemeral_set_nx_single_winner(ctx).await,
        "ephemeral_incr_window_counting" => ephemeral_incr_window_counting(ctx).await,
        "ephemeral_expiry" => ephemeral_expiry(ctx).await,
        other => panic!("no expiring-key case named {other}"),
    }
}

/// Run every durable case in turn, each on a context from `make` (a fresh store per case,
/// or the same shared store).
pub async fn run_all<S: Stores>(make: impl Fn() -> Ctx<S>) {
    for name in CASES {
        run_case(name, &make()).await;
    }
}

/// Run every expiring-key case in turn, each on a context from `make`.
pub async fn run_all_ephemeral<E>(make: impl Fn() -> Ctx<E>)
where
    E: EphemeralKeys + Clone + Send + Sync + 'static,
{
    for name in EPHEMERAL_CASES {
        run_ephemeral_case(name, &make()).await;
    }
}

// =============================================================================================
// BEGIN authority-tree cases (`AuthorityStore::revoke_authority_tree`, the
// `caracal.sessions.revoke` cascade). Self-contained: register each case in the runners
// (`tests/store_memory.rs`, `tests/store_postgres.rs`) by name.
// =============================================================================================

/// The names of the authority-tree cases, for runners that iterate.
pub const AUTHORITY_TREE_CASES: &[&str] = &["authority_revoke_tree"];

/// Run the authority-tree case named `name` (one of [`AUTHORITY_TREE_CASES`]).
pub async fn run_authority_tree_case<S: Stores>(name: &str, ctx: &Ctx<S>) {
    match name {
        "authority_revoke_tree" => authority_revoke_tree(ctx).await,
        other => panic!("no authority-tree case named {other}"),
    }
}

/// Revoking a record cascades to every `parent_id` descendant (three levels), keeps an earlier
/// revocation's time and reason, leaves the parent, an unrelated sibling tree and a record of
/// another zone alone, and is idempotent.
pub async fn authority_revoke_tree<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let subject = ctx.unique("tree");
    let t = f.t0;
    // root (f.authority) → a → {b1, b2}; b1 → c. `sibling` hangs off root too.
    let a = authority_row(&f.zone.id, &subject, Some(&f.authority.id), t);
    s.insert_authority(&a).await.unwrap();
    let b1 = authority_row(&f.zone.id, &subject, Some(&a.id), t);
    s.insert_authority(&b1).await.unwrap();
    let b2 = authority_row(&f.zone.id, &subject, Some(&a.id), t);
    s.insert_authority(&b2).await.unwrap();
    let c = authority_row(&f.zone.id, &subject, Some(&b1.id), t);
    s.insert_authority(&c).await.unwrap();
    let sibling = authority_row(&f.zone.id, &subject, Some(&f.authority.id), t);
    s.insert_authority(&sibling).await.unwrap();
    // b2 was revoked earlier: it keeps its time and reason and is not reported as changed.
    let earlier = t + secs(1);
    assert!(
        s.revoke_authority(&f.zone.id, &b2.id, "earlier", earlier)
            .await
            .unwrap()
    );
    // Another zone with the same shape of ids is untouched.
    let other = new_zone(ctx, t).await;
    let elsewhere = authority_row(&other.id, &subject, None, t);
    s.insert_authority(&elsewhere).await.unwrap();

    let at = t + secs(10);
    let changed = s
        .revoke_authority_tree(&f.zone.id, &a.id, "session_revoked", at)
        .await
        .unwrap();
    let mut expected = vec![a.id.clone(), b1.id.clone(), c.id.clone()];
    expected.sort();
    assert_eq!(changed, expected);
    for id in &expected {
        let r = s.get_authority(&f.zone.id, id).await.unwrap().unwrap();
        assert_eq!(r.status, AuthorityStatus::Revoked, "{id}");
        assert_eq!(r.revoked_at, Some(at));
        assert_eq!(r.revoked_reason.as_deref(), Some("session_revoked"));
    }
    let kept = s.get_authority(&f.zone.id, &b2.id).await.unwrap().unwrap();
    assert_eq!(kept.status, AuthorityStatus::Revoked);
    assert_eq!(kept.revoked_at, Some(earlier));
    assert_eq!(kept.revoked_reason.as_deref(), Some("earlier"));
    for (zone, id) in [
        (&f.zone.id, &f.authority.id),
        (&f.zone.id, &sibling.id),
        (&other.id, &elsewhere.id),
    ] {
        let r = s.get_authority(zone, id).await.unwrap().unwrap();
        assert_eq!(r.status, AuthorityStatus::Active, "{id}");
    }

    // Idempotent: nothing changes the second time, not even time or reason.
    let before = s.get_authority(&f.zone.id, &c.id).await.unwrap().unwrap();
    assert!(
        s.revoke_authority_tree(&f.zone.id, &a.id, "again", at + secs(5))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.get_authority(&f.zone.id, &c.id).await.unwrap(),
        Some(before)
    );
    // A record of another zone, or an unknown id, revokes nothing.
    assert!(
        s.revoke_authority_tree(&other.id, &f.authority.id, "x", at)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.revoke_authority_tree(&f.zone.id, &new_id(), "x", at)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.get_authority(&f.zone.id, &f.authority.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        AuthorityStatus::Active
    );
    // Revoking the root now takes the remaining live records of the tree: root and sibling.
    let mut rest = vec![f.authority.id.clone(), sibling.id.clone()];
    rest.sort();
    assert_eq!(
        s.revoke_authority_tree(&f.zone.id, &f.authority.id, "root", at)
            .await
            .unwrap(),
        rest
    );
}

// =============================================================================================
// END authority-tree cases
// =============================================================================================

// ---------------------------------------------------------------------------------------------
// BEGIN approval holds in the STS core (issue/converge, consume-into, capability lookup).
// Self-contained: uses only the shared fixture helpers above. Registered in the runners'
// `cases!` lists (tests/store_memory.rs, tests/store_postgres.rs).
// ---------------------------------------------------------------------------------------------

/// `issue_approval`: idempotent on the live key; an expired unconsumed hold is replaced, a
/// rejected or approved one that has not expired is returned; ids stay unique.
pub async fn approval_issue_converges<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let t = f.t0;
    let principal = ctx.unique("principal");
    let binding = binding();

    let first = approval_row(&f, &principal, &binding, t);
    let issued = s.issue_approval(&first, t).await.unwrap();
    assert!(issued.created);
    assert_eq!(issued.approval, first);
    // Same key, new id: converges on the live hold.
    let again = s
        .issue_approval(&approval_row(&f, &principal, &binding, t), t + secs(1))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.approval, first);
    // A taken id under another key is a conflict.
    let mut same_id = approval_row(&f, &principal, &self::binding(), t);
    same_id.id = first.id.clone();
    assert_conflict(s.issue_approval(&same_id, t).await, "approval_id");

    // Rejected and unexpired: still authoritative.
    applied(
        s.decide_approval(
            &f.zone.id,
            &first.id,
            &decision(false, "admin:no"),
            t + secs(2),
        )
        .await
        .unwrap(),
    );
    let rejected = s
        .issue_approval(&approval_row(&f, &principal, &binding, t), t + secs(3))
        .await
        .unwrap();
    assert!(!rejected.created);
    assert_eq!(rejected.approval.id, first.id);
    assert_eq!(
        rejected.approval.state(t + secs(3)),
        ApprovalState::Rejected
    );

    // Expired (at expires_at exactly): dropped and replaced by a fresh hold.
    let at = first.expires_at;
    let fresh = approval_row(&f, &principal, &binding, at);
    let replaced = s.issue_approval(&fresh, at).await.unwrap();
    assert!(replaced.created);
    assert_eq!(replaced.approval, fresh);
    assert_eq!(s.get_approval(&f.zone.id, &first.id).await.unwrap(), None);
    assert_eq!(
        s.find_live_approval(&f.zone.id, &principal, &f.authority.id, &binding)
            .await
            .unwrap()
            .map(|a| a.id),
        Some(fresh.id.clone())
    );

    // A consumed hold frees the key: the next issue creates.
    applied(
        s.decide_approval(
            &f.zone.id,
            &fresh.id,
            &decision(true, "admin:a"),
            at + secs(1),
        )
        .await
        .unwrap(),
    );
    let minted = authority_row(&f.zone.id, &principal, Some(&f.authority.id), at);
    applied(
        s.consume_into(&f.zone.id, &fresh.id, &minted, at + secs(2))
            .await
            .unwrap(),
    );
    let after = approval_row(&f, &principal, &binding, at + secs(3));
    assert!(
        s.issue_approval(&after, at + secs(3))
            .await
            .unwrap()
            .created
    );
    // The consumed hold is not swept by issuance.
    assert!(
        s.get_approval(&f.zone.id, &fresh.id)
            .await
            .unwrap()
            .is_some()
    );
}

/// Concurrent issuers of one key: one row between them, every caller sees it, one created.
pub async fn approval_issue_race<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let principal = ctx.unique("principal");
    let binding = binding();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = ctx.store.clone();
        let hold = approval_row(&f, &principal, &binding, f.t0);
        let now = f.t0 + secs(1);
        tasks.push(tokio::spawn(async move {
            store.issue_approval(&hold, now).await.unwrap()
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for h in tasks {
        let issued = join("issue", h).await;
        created += usize::from(issued.created);
        ids.insert(issued.approval.id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
}

/// `consume_into`: consumes and inserts the record together, or neither.
pub async fn approval_consume_into_atomic<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let other = new_zone(ctx, f.t0).await;
    let t = f.t0;
    let record = |what: &str| authority_row(&f.zone.id, &ctx.unique(what), None, t);

    // Pending: refused, no record.
    let h = approval_row(&f, &ctx.unique("p"), &binding(), t);
    s.insert_approval(&h).await.unwrap();
    let r = record("pending");
    assert_eq!(
        s.consume_into(&f.zone.id, &h.id, &r, t).await.unwrap(),
        ApprovalUpdate::NotAllowed(ApprovalState::Pending)
    );
    assert_eq!(s.get_authority(&f.zone.id, &r.id).await.unwrap(), None);

    // Approved: consumed into the record.
    let mut d = decision(true, "subject:alice");
    d.approver_session_id = Some(f.authority.id.clone());
    let decided = applied(s.decide_approval(&f.zone.id, &h.id, &d, t).await.unwrap());
    assert_eq!(decided.approver_session_id, Some(f.authority.id.clone()));
    // Wrong zone, unknown hold, a record of another zone.
    assert_not_found(
        s.consume_into(&other.id, &h.id, &authority_row(&other.id, "x", None, t), t)
            .await,
    );
    assert_not_found(
        s.consume_into(&f.zone.id, &new_id(), &record("unknown"), t)
            .await,
    );
    match s
        .consume_into(
            &f.zone.id,
            &h.id,
            &authority_row(&other.id, "x", None, t),
            t,
        )
        .await
    {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("expected Invalid, got {other:?}"),
    }
    // A taken record id: conflict, and the hold stays approved.
    assert_conflict(
        s.consume_into(&f.zone.id, &h.id, &f.authority, t + secs(1))
            .await,
        "authority_record_id",
    );
    assert_eq!(
        s.get_approval(&f.zone.id, &h.id)
            .await
            .unwrap()
            .unwrap()
            .state(t + secs(1)),
        ApprovalState::Approved
    );
    let r = record("winner");
    let consumed = applied(
        s.consume_into(&f.zone.id, &h.id, &r, t + secs(2))
            .await
            .unwrap(),
    );
    assert_eq!(consumed.consumed_at, Some(t + secs(2)));
    assert_eq!(consumed.consumed_authority_record_id, Some(r.id.clone()));
    assert_eq!(consumed.approver_session_id, Some(f.authority.id.clone()));
    assert_eq!(s.get_authority(&f.zone.id, &r.id).await.unwrap(), Some(r));
    // Twice: refused, no record.
    let late = record("late");
    assert_eq!(
        s.consume_into(&f.zone.id, &h.id, &late, t + secs(3))
            .await
            .unwrap(),
        ApprovalUpdate::NotAllowed(ApprovalState::Consumed)
    );
    assert_eq!(s.get_authority(&f.zone.id, &late.id).await.unwrap(), None);

    // The hold's own authority record revoked: refused, no record, hold unconsumed.
    let requester = authority_row(&f.zone.id, &ctx.unique("requester"), None, t);
    s.insert_authority(&requester).await.unwrap();
    let mut h2 = approval_row(&f, &ctx.unique("p"), &binding(), t);
    h2.session_id = requester.id.clone();
    s.insert_approval(&h2).await.unwrap();
    applied(
        s.decide_approval(&f.zone.id, &h2.id, &decision(true, "admin:a"), t)
            .await
            .unwrap(),
    );
    assert!(
        s.revoke_authority(&f.zone.id, &requester.id, "gone", t)
            .await
            .unwrap()
    );
    let r2 = record("orphan");
    assert_eq!(
        s.consume_into(&f.zone.id, &h2.id, &r2, t + secs(1))
            .await
            .unwrap(),
        ApprovalUpdate::NotAllowed(ApprovalState::Approved)
    );
    assert_eq!(s.get_authority(&f.zone.id, &r2.id).await.unwrap(), None);

    // A hold with no authority record ('') consumes; an expired one does not.
    let mut h3 = approval_row(&f, &ctx.unique("p"), &binding(), t);
    h3.session_id = String::new();
    s.insert_approval(&h3).await.unwrap();
    applied(
        s.decide_approval(&f.zone.id, &h3.id, &decision(true, "admin:a"), t)
            .await
            .unwrap(),
    );
    let r3 = record("expired");
    assert_eq!(
        s.consume_into(&f.zone.id, &h3.id, &r3, h3.expires_at)
            .await
            .unwrap(),
        ApprovalUpdate::NotAllowed(ApprovalState::Expired)
    );
    assert_eq!(s.get_authority(&f.zone.id, &r3.id).await.unwrap(), None);
    applied(
        s.consume_into(&f.zone.id, &h3.id, &r3, t + secs(1))
            .await
            .unwrap(),
    );
}

/// Concurrent `consume_into` on one approved hold: one wins, only its record exists.
pub async fn approval_consume_into_race<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let hold = approval_row(&f, &ctx.unique("p"), &binding(), f.t0);
    ctx.store.insert_approval(&hold).await.unwrap();
    ctx.store
        .decide_approval(&f.zone.id, &hold.id, &decision(true, "admin:a"), f.t0)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let r = authority_row(&f.zone.id, &ctx.unique("consumer"), None, f.t0);
        let (store, zone, id) = (ctx.store.clone(), f.zone.id.clone(), hold.id.clone());
        let now = f.t0 + secs(1);
        tasks.push(tokio::spawn(async move {
            (store.consume_into(&zone, &id, &r, now).await.unwrap(), r.id)
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for h in tasks {
        match join("consume_into", h).await {
            (ApprovalUpdate::Applied(_), ar) => winners.push(ar),
            (ApprovalUpdate::NotAllowed(state), ar) => {
                assert_eq!(state, ApprovalState::Consumed);
                losers.push(ar);
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one consumer wins");
    let stored = ctx
        .store
        .get_approval(&f.zone.id, &hold.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.consumed_authority_record_id.as_ref(),
        Some(&winners[0])
    );
    assert!(
        ctx.store
            .get_authority(&f.zone.id, &winners[0])
            .await
            .unwrap()
            .is_some()
    );
    for ar in losers {
        assert_eq!(
            ctx.store.get_authority(&f.zone.id, &ar).await.unwrap(),
            None
        );
    }
}

/// `get_approval_any_zone`: the capability lookup finds a hold by id alone.
pub async fn approval_any_zone_lookup<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let hold = approval_row(&f, &ctx.unique("p"), &binding(), f.t0);
    ctx.store.insert_approval(&hold).await.unwrap();
    assert_eq!(
        ctx.store.get_approval_any_zone(&hold.id).await.unwrap(),
        Some(hold)
    );
    assert_eq!(
        ctx.store.get_approval_any_zone(&new_id()).await.unwrap(),
        None
    );
}

// END approval holds in the STS core.

/// `list_edges`: `id DESC`, strictly below the cursor id, `next` iff full, and the filters
/// (live at an instant, party application, source, target), each zone on its own.
pub async fn paging_edges<S: Stores>(ctx: &Ctx<S>) {
    let f = fixture(ctx).await;
    let s = &ctx.store;
    let t = f.t0;
    let a = task_session(&f, None, t);
    let b = task_session(&f, None, t);
    let c = task_session(&f, None, t);
    let mut edges = vec![
        edge_row(&a, &b, t),
        edge_row(&a, &c, t),
        edge_row(&b, &c, t),
        edge_row(&c, &a, t),
    ];
    edges[2].status = EdgeStatus::Revoked;
    edges[2].revoked_at = Some(t + secs(1));
    edges[3].expires_at = t + secs(5);
    {
        let mut tx = begin(s, &f.zone.id).await;
        for sess in [&a, &b, &c] {
            tx.insert_session(sess).await.unwrap();
        }
        for e in &edges {
            tx.insert_edge(e).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let mut ids: Vec<String> = edges.iter().map(|e| e.id.clone()).collect();
    ids.sort_by(|x, y| y.cmp(x));
    let page = |limit: u32, after_id: Option<String>| IdPage { limit, after_id };
    let all = EdgeFilter::default();
    let p1 = s
        .list_edges(&f.zone.id, &all, &page(3, None))
        .await
        .unwrap();
    let got: Vec<String> = p1.items.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, ids[0..3]);
    let next = p1.next.clone().unwrap();
    assert_eq!(next.id, ids[2]);
    let p2 = s
        .list_edges(&f.zone.id, &all, &page(3, Some(next.id)))
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 1);
    assert_eq!(p2.items[0].id, ids[3]);
    assert_eq!(p2.next, None);
    assert_eq!(p2.items[0], *edges.iter().find(|e| e.id == ids[3]).unwrap());

    let count = |filter: EdgeFilter| {
        let (store, zone) = (s.clone(), f.zone.id.clone());
        async move {
            store
                .list_edges(&zone, &filter, &page(50, None))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    let live_now = EdgeFilter {
        live_at: Some(t + secs(2)),
        ..EdgeFilter::default()
    };
    assert_eq!(count(live_now).await, 3);
    let live_later = EdgeFilter {
        live_at: Some(t + secs(5)),
        ..EdgeFilter::default()
    };
    assert_eq!(count(live_later).await, 2, "expiry is exclusive");
    let party = EdgeFilter {
        party_application_id: Some(f.app.id.clone()),
        ..EdgeFilter::default()
    };
    assert_eq!(count(party).await, 4);
    let stranger = EdgeFilter {
        party_application_id: Some("app-elsewhere".into()),
        ..EdgeFilter::default()
    };
    assert_eq!(count(stranger).await, 0);
    let from_a = EdgeFilter {
        source_session_id: Some(a.agent_session_id.clone()),
        ..EdgeFilter::default()
    };
    assert_eq!(count(from_a).await, 2);
    let into_c = EdgeFilter {
        target_session_id: Some(c.agent_session_id.clone()),
        live_at: Some(t + secs(2)),
        ..EdgeFilter::default()
    };
    assert_eq!(count(into_c).await, 1);
    let other_zone = s
        .list_edges("zone-without-edges", &all, &page(50, None))
        .await
        .unwrap();
    assert!(other_zone.items.is_empty());
    assert!(matches!(
        s.list_edges(&f.zone.id, &all, &page(0, None)).await,
        Err(StoreError::Invalid(_))
    ));
}
