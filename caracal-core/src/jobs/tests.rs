//! Behaviour of the jobs on the memory store.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::*;
use crate::clock::{FakeClock, SharedClock};
use crate::coordinator::{Caller, Coordinator, CreateDelegation, StartSession};
use crate::ids::UuidV7;
use crate::model::Attribution;
use crate::model::application::{Application, RegistrationMethod};
use crate::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use crate::model::delegation::{DelegationEdge, EdgeStatus};
use crate::model::resource::{OperationEnforcement, Resource};
use crate::model::session::{Lifecycle, Session, SessionStatus};
use crate::model::zone::Zone;
use crate::store::authority::AuthorityStore;
use crate::store::coordinator::{CoordinatorStore, IdempotencyReceipt, IdempotentOperation};
use crate::store::directory::{ApplicationStore, ResourceStore, ZoneStore};
use crate::store::leader::LeaderLock;
use crate::store::memory::{MemoryLeaderLock, MemoryStore};
use crate::store::outbox::{OutboxRow, OutboxStore};
use crate::streams::names::{AGENTS_LIFECYCLE, DELEGATIONS_INVALIDATE, SESSIONS_REVOKE};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-05-21T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

struct Fx {
    store: Arc<MemoryStore>,
    co: Coordinator,
    zone: String,
    app: String,
    rec: String,
    resource: String,
}

impl Fx {
    async fn new() -> Self {
        let clock: SharedClock = Arc::new(FakeClock::new(t0()));
        let store = Arc::new(MemoryStore::with_clock(clock));
        let zone = id();
        let attribution = Attribution::created_by("admin:test");
        store
            .insert_zone(&Zone {
                id: zone.clone(),
                name: "jobs".into(),
                slug: format!("jobs-{}", &zone[zone.len() - 8..]),
                dcr_enabled: false,
                operator_coauthor_badge: false,
                operator_governed: false,
                attribution: attribution.clone(),
                created_at: t0(),
                updated_at: t0(),
                archived_at: None,
            })
            .await
            .unwrap();
        let app = Application {
            id: id(),
            zone_id: zone.clone(),
            name: "app".into(),
            registration_method: RegistrationMethod::Managed,
            traits: vec![],
            expires_at: None,
            archived_at: None,
            attribution: attribution.clone(),
            created_at: t0(),
            updated_at: t0(),
            client_secret_hash: None,
        };
        store.insert_application(&app).await.unwrap();
        let rec = AuthorityRecord {
            id: id(),
            zone_id: zone.clone(),
            session_type: SubjectType::User,
            subject_id: "alice".into(),
            parent_id: None,
            status: AuthorityStatus::Active,
            expires_at: t0() + Duration::days(365),
            authenticated_at: Some(t0()),
            claims_json: json!({}),
            revoked_at: None,
            revoked_reason: None,
            created_at: t0(),
        };
        store.insert_authority(&rec).await.unwrap();
        let resource = Resource {
            id: id(),
            zone_id: zone.clone(),
            name: "r1".into(),
            identifier: "resource://r1".into(),
            upstream_url: None,
            scopes: vec!["read".into()],
            credential_provider_id: None,
            operations: vec![],
            operation_enforcement: OperationEnforcement::Enforced,
            attribution,
            created_at: t0(),
            updated_at: t0(),
            archived_at: None,
        };
        store.insert_resource(&resource).await.unwrap();
        let co = Coordinator::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::new(UuidV7),
        );
        Self {
            store,
            co,
            zone,
            app: app.id,
            rec: rec.id,
            resource: resource.id,
        }
    }

    async fn start(
        &self,
        lifecycle: Lifecycle,
        ttl: Option<i64>,
        parent: Option<&Session>,
        at: DateTime<Utc>,
    ) -> Session {
        let req = StartSession {
            application_id: self.app.clone(),
            subject_session_id: Some(self.rec.clone()),
            parent_id: parent.map(|p| p.agent_session_id.clone()),
            lifecycle,
            ttl_seconds: ttl,
            ..StartSession::default()
        };
        self.co
            .start_session(&self.zone, &Caller::operator(), &req, at)
            .await
            .unwrap()
            .session
    }

    async fn edge(&self, src: &Session, dst: &Session, ttl: i64) -> DelegationEdge {
        let req = CreateDelegation {
            source_session_id: src.agent_session_id.clone(),
            target_session_id: dst.agent_session_id.clone(),
            issuer_application_id: self.app.clone(),
            receiver_application_id: self.app.clone(),
            parent_edge_id: None,
            resource_id: Some(self.resource.clone()),
            scopes: vec!["read".into()],
            constraints: serde_json::Map::new(),
            expires_at: None,
            ttl_seconds: Some(ttl),
        };
        self.co
            .create_delegation(&self.zone, &Caller::operator(), &req, t0())
            .await
            .unwrap()
            .edge
    }

    async fn session(&self, s: &Session) -> Option<Session> {
        self.store
            .get_session(&self.zone, &s.agent_session_id)
            .await
            .unwrap()
    }

    /// Every pending outbox row (claimed far ahead; a claim leases, so each row comes once).
    async fn drain_outbox(&self) -> Vec<OutboxRow> {
        self.store
            .claim(
                "test",
                10_000,
                Duration::hours(1),
                t0() + Duration::days(3650),
            )
            .await
            .unwrap()
    }

    fn config(&self) -> JobsConfig {
        JobsConfig::default()
    }
}

fn field<'a>(row: &'a OutboxRow, k: &str) -> Option<&'a str> {
    row.message
        .fields
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

fn on<'a>(rows: &'a [OutboxRow], stream: &str) -> Vec<&'a OutboxRow> {
    rows.iter().filter(|r| r.message.stream == stream).collect()
}

#[tokio::test]
async fn ttl_expiry_terminates_the_subtree_and_enqueues_revocations() {
    let f = Fx::new().await;
    let root = f.start(Lifecycle::Task, Some(60), None, t0()).await;
    let child = f
        .start(Lifecycle::Task, Some(3600), Some(&root), t0())
        .await;
    let other = f.start(Lifecycle::Task, Some(3600), None, t0()).await;
    let e = f.edge(&other, &root, 600).await;
    let epoch = f.store.graph_epoch(&f.zone).await.unwrap();
    f.drain_outbox().await;

    let sweeper = TtlSweeper::new(f.co.clone(), f.config());
    // Not yet: the TTL ends at t0 + 60 s.
    let r = sweeper
        .run_once(t0() + Duration::seconds(59))
        .await
        .unwrap();
    assert!(r.is_idle(), "{r:?}");

    let now = t0() + Duration::seconds(60);
    let r = sweeper.run_once(now).await.unwrap();
    assert_eq!(r.get(ttl::COUNT_EXPIRED), 1);
    assert_eq!(r.get(ttl::COUNT_TERMINATED), 2);
    let root_now = f.session(&root).await.unwrap();
    assert_eq!(root_now.status, SessionStatus::Expired);
    assert_eq!(root_now.termination_reason.as_deref(), Some(REASON_TTL));
    assert_eq!(root_now.terminated_at, Some(now));
    let child_now = f.session(&child).await.unwrap();
    assert_eq!(child_now.status, SessionStatus::Terminated);
    assert_eq!(
        child_now.termination_reason.as_deref(),
        Some("parent_terminated")
    );
    assert_eq!(
        f.session(&other).await.unwrap().status,
        SessionStatus::Active
    );
    let e_now = f.store.get_edge(&f.zone, &e.id).await.unwrap().unwrap();
    assert_eq!(e_now.status, EdgeStatus::Revoked);
    assert_eq!(f.store.graph_epoch(&f.zone).await.unwrap(), epoch + 1);

    let rows = f.drain_outbox().await;
    let revokes = on(&rows, SESSIONS_REVOKE);
    assert_eq!(revokes.len(), 2, "one revocation per session");
    assert!(
        revokes
            .iter()
            .all(|r| field(r, "reason") == Some(REASON_TTL))
    );
    let mut named: Vec<&str> = revokes
        .iter()
        .filter_map(|r| field(r, "agent_session_id"))
        .collect();
    named.sort_unstable();
    let mut want = vec![
        root.agent_session_id.as_str(),
        child.agent_session_id.as_str(),
    ];
    want.sort_unstable();
    assert_eq!(named, want);
    assert_eq!(on(&rows, AGENTS_LIFECYCLE).len(), 2);
    let inv = on(&rows, DELEGATIONS_INVALIDATE);
    assert_eq!(inv.len(), 1);
    assert_eq!(field(inv[0], "event"), Some("edge_revoke"));

    // A second pass finds nothing: each session is processed once.
    let r = sweeper.run_once(now + Duration::seconds(1)).await.unwrap();
    assert!(r.is_idle(), "{r:?}");
    assert!(f.drain_outbox().await.is_empty());
}

#[tokio::test]
async fn a_suspended_task_expires_too_and_services_never_do() {
    let f = Fx::new().await;
    let task = f.start(Lifecycle::Task, Some(10), None, t0()).await;
    f.co.suspend(
        &f.zone,
        &Caller::operator(),
        &task.agent_session_id,
        "suspended",
        t0(),
    )
    .await
    .unwrap();
    let svc = f.start(Lifecycle::Service, None, None, t0()).await;
    let r = TtlSweeper::new(f.co.clone(), f.config())
        .run_once(t0() + Duration::days(2))
        .await
        .unwrap();
    assert_eq!(r.get(ttl::COUNT_EXPIRED), 1);
    assert_eq!(
        f.session(&task).await.unwrap().status,
        SessionStatus::Expired
    );
    assert_eq!(f.session(&svc).await.unwrap().status, SessionStatus::Active);
}

#[tokio::test]
async fn the_lease_sweep_suspends_lapsed_services_with_their_subtree() {
    let f = Fx::new().await;
    let root = f.start(Lifecycle::Service, None, None, t0()).await;
    let child = f
        .start(
            Lifecycle::Service,
            None,
            Some(&root),
            t0() + Duration::seconds(1),
        )
        .await;
    let fresh = f
        .start(Lifecycle::Service, None, None, t0() + Duration::seconds(50))
        .await;
    f.drain_outbox().await;

    let sweeper = LeaseSweeper::new(f.co.clone(), f.config());
    // The lease is 120 s: at t0 + 119 s nothing has lapsed.
    assert!(
        sweeper
            .run_once(t0() + Duration::seconds(119))
            .await
            .unwrap()
            .is_idle()
    );
    let now = t0() + Duration::seconds(121);
    let r = sweeper.run_once(now).await.unwrap();
    // The root's lapse suspends the child as part of its subtree; the child's own lapse is
    // then skipped when re-read.
    assert_eq!(r.get(lease::COUNT_LAPSED), 1, "{r:?}");
    assert_eq!(r.get(lease::COUNT_SUSPENDED), 2, "{r:?}");
    assert_eq!(r.get(COUNT_SKIPPED), 1, "{r:?}");
    for s in [&root, &child] {
        assert_eq!(f.session(s).await.unwrap().status, SessionStatus::Suspended);
    }
    assert_eq!(
        f.session(&fresh).await.unwrap().status,
        SessionStatus::Active
    );
    let rows = f.drain_outbox().await;
    let revokes = on(&rows, SESSIONS_REVOKE);
    assert_eq!(revokes.len(), 2);
    assert!(
        revokes
            .iter()
            .all(|r| field(r, "reason") == Some("service_heartbeat_lost"))
    );
    assert!(
        on(&rows, AGENTS_LIFECYCLE)
            .iter()
            .all(|r| field(r, "event") == Some("suspend"))
    );
    // Suspended sessions are not swept again.
    assert!(
        sweeper
            .run_once(now + Duration::seconds(5))
            .await
            .unwrap()
            .is_idle()
    );
}

#[tokio::test]
async fn edge_expiry_marks_expired_bumps_the_epoch_and_announces_it() {
    let f = Fx::new().await;
    let a = f.start(Lifecycle::Task, Some(3600), None, t0()).await;
    let b = f.start(Lifecycle::Task, Some(3600), None, t0()).await;
    let c = f.start(Lifecycle::Task, Some(3600), None, t0()).await;
    let short = f.edge(&a, &b, 600).await;
    let long = f.edge(&a, &c, 1200).await;
    let epoch = f.store.graph_epoch(&f.zone).await.unwrap();
    f.drain_outbox().await;

    let cleaner = RetentionCleaner::new(f.co.clone(), f.store.clone(), f.config());
    let now = t0() + Duration::seconds(600);
    let r = cleaner.run_once(now).await.unwrap();
    assert_eq!(r.get(retention::COUNT_EDGES_EXPIRED), 1, "{r:?}");
    let e = f.store.get_edge(&f.zone, &short.id).await.unwrap().unwrap();
    assert_eq!(e.status, EdgeStatus::Expired);
    assert_eq!(e.revoked_at, None);
    assert_eq!(e.edge_version, short.edge_version);
    assert_eq!(
        f.store
            .get_edge(&f.zone, &long.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        EdgeStatus::Active
    );
    assert_eq!(f.store.graph_epoch(&f.zone).await.unwrap(), epoch + 1);
    // Expiry terminates no session.
    for s in [&a, &b] {
        assert_eq!(f.session(s).await.unwrap().status, SessionStatus::Active);
    }
    let rows = f.drain_outbox().await;
    assert_eq!(rows.len(), 1, "only the edge_expire message");
    assert_eq!(rows[0].message.stream, DELEGATIONS_INVALIDATE);
    assert_eq!(field(&rows[0], "event"), Some("edge_expire"));
    assert_eq!(field(&rows[0], "edge_id"), Some(short.id.as_str()));
    assert_eq!(
        field(&rows[0], "epoch"),
        Some((epoch + 1).to_string().as_str())
    );
    // Nothing more to expire at the same instant.
    let r = cleaner.run_once(now).await.unwrap();
    assert_eq!(r.get(retention::COUNT_EDGES_EXPIRED), 0);
    assert_eq!(f.store.graph_epoch(&f.zone).await.unwrap(), epoch + 1);
}

#[tokio::test]
async fn the_cleaner_deletes_only_what_it_should() {
    let f = Fx::new().await;
    let live = f.start(Lifecycle::Task, Some(3600), None, t0()).await;
    let root = f.start(Lifecycle::Task, Some(3600), None, t0()).await;
    let child = f
        .start(Lifecycle::Task, Some(3600), Some(&root), t0())
        .await;
    let e = f.edge(&live, &root, 600).await;
    f.co.terminate(
        &f.zone,
        &Caller::operator(),
        &root.agent_session_id,
        "requested",
        None,
        t0(),
    )
    .await
    .unwrap();
    // Publish every row so far at t0 + 1 s, but one, which stays pending.
    let rows = f.drain_outbox().await;
    let (pending, published) = rows.split_first().unwrap();
    for r in published {
        f.store
            .mark_dispatched(&r.id, t0() + Duration::seconds(1))
            .await
            .unwrap();
    }
    f.store
        .mark_failed(&pending.id, "down", Some(t0() + Duration::days(3650)), t0())
        .await
        .unwrap();
    // Two receipts: one expired at t0 + 1 h, one live for a year.
    let receipt = |expires: DateTime<Utc>, key: u8| IdempotencyReceipt {
        operation: IdempotentOperation::SessionStart,
        zone_id: f.zone.clone(),
        scope_id: f.app.clone(),
        key_digest: [key; 32],
        request_digest: [0; 32],
        result_id: live.agent_session_id.clone(),
        response_status: 201,
        response_json: "{}".into(),
        created_at: t0(),
        expires_at: expires,
    };
    let mut tx = f.store.begin(&f.zone).await.unwrap();
    tx.put_receipt(&receipt(t0() + Duration::hours(1), 1))
        .await
        .unwrap();
    tx.put_receipt(&receipt(t0() + Duration::days(365), 2))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let cleaner = RetentionCleaner::new(f.co.clone(), f.store.clone(), f.config());
    // Six days on: only the expired receipt goes.
    let r = cleaner.run_once(t0() + Duration::days(6)).await.unwrap();
    assert_eq!(r.get(retention::COUNT_RECEIPTS_DELETED), 1, "{r:?}");
    assert_eq!(r.get(retention::COUNT_OUTBOX_DELETED), 0, "{r:?}");
    assert_eq!(r.get(retention::COUNT_EDGES_DELETED), 0, "{r:?}");
    assert_eq!(r.get(retention::COUNT_SESSIONS_DELETED), 0, "{r:?}");

    // Eight days on: the dispatched rows go, the pending one stays.
    let r = cleaner.run_once(t0() + Duration::days(8)).await.unwrap();
    assert_eq!(
        r.get(retention::COUNT_OUTBOX_DELETED),
        published.len() as u64
    );
    assert!(f.store.get_outbox(&pending.id).await.unwrap().is_some());
    assert!(
        f.store
            .get_outbox(&published[0].id)
            .await
            .unwrap()
            .is_none()
    );

    // 89 days: nothing of the sessions and edges yet.
    let r = cleaner.run_once(t0() + Duration::days(89)).await.unwrap();
    assert_eq!(r.get(retention::COUNT_SESSIONS_DELETED), 0, "{r:?}");
    assert_eq!(r.get(retention::COUNT_EDGES_DELETED), 0, "{r:?}");

    // 91 days: the revoked edge and the childless child go; the root keeps its slot while
    // it has a child, and goes on the next pass. The live session (never swept here) stays.
    let later = t0() + Duration::days(91);
    let r = cleaner.run_once(later).await.unwrap();
    assert_eq!(r.get(retention::COUNT_EDGES_DELETED), 1, "{r:?}");
    assert_eq!(r.get(retention::COUNT_SESSIONS_DELETED), 1, "{r:?}");
    assert!(f.store.get_edge(&f.zone, &e.id).await.unwrap().is_none());
    assert!(f.session(&child).await.is_none());
    assert!(f.session(&root).await.is_some());
    let r = cleaner.run_once(later).await.unwrap();
    assert_eq!(r.get(retention::COUNT_SESSIONS_DELETED), 1, "{r:?}");
    assert!(f.session(&root).await.is_none());
    assert!(f.session(&live).await.is_some());
    let mut tx = f.store.begin(&f.zone).await.unwrap();
    assert!(
        tx.get_receipt(IdempotentOperation::SessionStart, &f.app, &[2; 32], later)
            .await
            .unwrap()
            .is_some()
    );
    drop(tx);
    assert!(cleaner.run_once(later).await.unwrap().is_idle());
}

#[tokio::test]
async fn memory_leader_lock_contract() {
    let a = MemoryLeaderLock::new();
    let b = a.clone();
    let g = a.try_acquire("job").await.unwrap().unwrap();
    assert!(b.try_acquire("job").await.unwrap().is_none());
    assert!(b.try_acquire("other").await.unwrap().is_some());
    g.release().await;
    let g2 = b.try_acquire("job").await.unwrap().unwrap();
    assert!(a.try_acquire("job").await.unwrap().is_none());
    drop(g2);
    assert!(!a.is_held("job"));
    assert!(a.try_acquire("job").await.unwrap().is_some());
}

#[tokio::test]
async fn a_runner_skips_a_pass_it_does_not_lead() {
    let f = Fx::new().await;
    let clock: SharedClock = Arc::new(FakeClock::new(t0() + Duration::seconds(61)));
    let lock = MemoryLeaderLock::new();
    f.start(Lifecycle::Task, Some(60), None, t0()).await;
    let runner = JobRunner::new(
        f.co.clone(),
        f.store.clone(),
        Arc::new(lock.clone()),
        clock,
        f.config(),
    );
    assert_eq!(
        runner.job_names(),
        vec![TTL_SWEEPER, LEASE_SWEEPER, RETENTION_CLEANER]
    );
    let held = lock.try_acquire(TTL_SWEEPER).await.unwrap().unwrap();
    let r = runner.run_pass_named(TTL_SWEEPER).await.unwrap();
    assert_eq!(r.outcome, PassOutcome::NotLeader);
    held.release().await;
    let r = runner.run_pass_named(TTL_SWEEPER).await.unwrap();
    match r.outcome {
        PassOutcome::Ran(report) => assert_eq!(report.get(ttl::COUNT_EXPIRED), 1),
        other => panic!("{other:?}"),
    }
    assert!(!lock.is_held(TTL_SWEEPER), "the pass released the lock");
    assert!(runner.run_pass_named("nope").await.is_none());
}

#[tokio::test]
async fn spawned_jobs_run_every_job_and_stop_on_shutdown() {
    let f = Fx::new().await;
    let clock: SharedClock = Arc::new(FakeClock::new(t0() + Duration::seconds(61)));
    f.start(Lifecycle::Task, Some(60), None, t0()).await;
    let config = JobsConfig {
        ttl_interval: std::time::Duration::from_millis(10),
        lease_interval: std::time::Duration::from_millis(10),
        retention_interval: std::time::Duration::from_millis(10),
        ..JobsConfig::default()
    };
    let seen: Arc<Mutex<Vec<PassReport>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let runner = JobRunner::new(
        f.co.clone(),
        f.store.clone(),
        Arc::new(MemoryLeaderLock::new()),
        clock,
        config,
    )
    .with_observer(Arc::new(move |r: &PassReport| {
        sink.lock().unwrap().push(r.clone());
    }));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = runner.spawn(rx);
    let all_ran = || {
        let seen = seen.lock().unwrap();
        [TTL_SWEEPER, LEASE_SWEEPER, RETENTION_CLEANER]
            .iter()
            .all(|j| seen.iter().filter(|r| r.job == *j).count() >= 2)
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !all_ran() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every job ran twice within 10 s");
    tx.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), handle.join())
        .await
        .expect("jobs stop within 10 s of shutdown");
    let seen = seen.lock().unwrap();
    let expired: u64 = seen
        .iter()
        .filter_map(|r| match &r.outcome {
            PassOutcome::Ran(rep) => Some(rep.get(ttl::COUNT_EXPIRED)),
            _ => None,
        })
        .sum();
    assert_eq!(expired, 1, "the one expired session was processed once");
}
