//! The Coordinator's rules on the in-memory store, one test per behaviour of reference
//! `control-plane.md` §7 items 1–27 that the engine owns (sessions, leases, delegations,
//! cascades, epochs, outbox events).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod coordinator_support;

use std::sync::Arc;

use chrono::{Duration, DurationRound, Utc};
use serde_json::json;

use caracal_core::coordinator::error::ExceedsParent;
use caracal_core::coordinator::{Caller, CoordinatorError as E, Limits, ParentAuthority};
use caracal_core::model::delegation::EdgeStatus;
use caracal_core::model::session::{Lifecycle, SessionStatus};
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::coordinator::CoordinatorStore;
use caracal_core::store::memory::MemoryStore;
use caracal_core::streams::names::{AGENTS_LIFECYCLE, DELEGATIONS_INVALIDATE, SESSIONS_REVOKE};
use coordinator_support::*;

async fn fx_with(limits: Limits) -> Fx<MemoryStore> {
    let t0 = Utc::now()
        .duration_trunc(Duration::milliseconds(1))
        .unwrap();
    Fx::new(Arc::new(MemoryStore::new()), t0, limits).await
}

async fn fx() -> Fx<MemoryStore> {
    fx_with(Limits::default()).await
}

fn code<T: std::fmt::Debug>(r: Result<T, E>) -> &'static str {
    r.unwrap_err().code()
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn task_start_defaults_and_spawn_event() {
    let f = fx().await;
    let s = f.task_a().await;
    assert_eq!(s.ttl_seconds, Some(3600));
    assert_eq!(s.lease_generation, 0);
    assert_eq!(s.depth, 0);
    assert_eq!(s.status, SessionStatus::Active);
    let rows = f.outbox().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].message.stream, AGENTS_LIFECYCLE);
    assert_eq!(field(&rows[0], "event"), Some("spawn"));
    assert_eq!(
        field(&rows[0], "agent_session_id"),
        Some(s.agent_session_id.as_str())
    );
}

#[tokio::test]
async fn start_refusals_in_reference_order() {
    let f = fx().await;
    let a = f.caller_a();
    // Service with a TTL → invalid_body.
    let mut req = f.start_req(&f.app_a, &f.rec_a);
    req.lifecycle = Lifecycle::Service;
    req.ttl_seconds = Some(60);
    assert_eq!(
        code(f.co.start_session(&f.zone, &a, &req, f.t0).await),
        "invalid_body"
    );
    // No subject record and no sid.
    let mut req = f.start_req(&f.app_a, &f.rec_a);
    req.subject_session_id = None;
    let no_sid = Caller::application(f.app_a.clone(), None, ["x"]);
    assert_eq!(
        code(f.co.start_session(&f.zone, &no_sid, &req, f.t0).await),
        "subject_session_id_required"
    );
    // The sid is the default subject.
    let s = f.co.start_session(&f.zone, &a, &req, f.t0).await.unwrap();
    assert_eq!(s.session.subject_authority_record_id, f.boot_a);
    // Another application without spawn_for → 403; with it → 201.
    let req_b = f.start_req(&f.app_b, &f.rec_b);
    assert_eq!(
        code(f.co.start_session(&f.zone, &a, &req_b, f.t0).await),
        "application_ownership_required"
    );
    let spawn_for = Caller::application(
        f.app_a.clone(),
        Some(f.boot_a.clone()),
        [format!("coordinator.spawn_for:{}", f.app_b)],
    );
    f.co.start_session(&f.zone, &spawn_for, &req_b, f.t0)
        .await
        .unwrap();
    // Unknown application → 404.
    let mut req = f.start_req(&f.app_a, &f.rec_a);
    req.application_id = "nope".into();
    assert_eq!(
        code(
            f.co.start_session(&f.zone, &Caller::operator(), &req, f.t0)
                .await
        ),
        "application_not_found"
    );
    // Unknown / revoked subject record → 404 session_not_found.
    let req = f.start_req(&f.app_a, "missing-record");
    let err =
        f.co.start_session(&f.zone, &a, &req, f.t0)
            .await
            .unwrap_err();
    assert_eq!(err.to_api().status, 404);
    assert_eq!(err.code(), "session_not_found");
    f.store
        .revoke_authority(&f.zone, &f.rec_a, "test", f.t0)
        .await
        .unwrap();
    let req = f.start_req(&f.app_a, &f.rec_a);
    assert_eq!(
        code(f.co.start_session(&f.zone, &a, &req, f.t0).await),
        "session_not_found"
    );
}

#[tokio::test]
async fn parent_rules_and_limits() {
    let f = fx_with(Limits {
        sessions_per_zone: 6,
        max_children: 2,
        max_depth: 2,
        ..Limits::default()
    })
    .await;
    let a = f.caller_a();
    let root = f.task_a().await;
    // Task parent cannot start a service child.
    assert_eq!(
        code(
            f.child(
                &a,
                &f.app_a,
                &f.rec_a,
                &root.agent_session_id,
                Lifecycle::Service
            )
            .await
        ),
        "task_session_cannot_start_service"
    );
    // Unknown parent.
    assert_eq!(
        code(
            f.child(&a, &f.app_a, &f.rec_a, "nope", Lifecycle::Task)
                .await
        ),
        "parent_not_found"
    );
    // Parent of another application needs spawn_under.
    let b_root = f.task_b().await;
    assert_eq!(
        code(
            f.child(
                &a,
                &f.app_a,
                &f.rec_a,
                &b_root.agent_session_id,
                Lifecycle::Task
            )
            .await
        ),
        "parent_ownership_required"
    );
    let c1 = f
        .child(
            &a,
            &f.app_a,
            &f.rec_a,
            &root.agent_session_id,
            Lifecycle::Task,
        )
        .await
        .unwrap()
        .session;
    assert_eq!(c1.depth, 1);
    f.child(
        &a,
        &f.app_a,
        &f.rec_a,
        &root.agent_session_id,
        Lifecycle::Task,
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            f.child(
                &a,
                &f.app_a,
                &f.rec_a,
                &root.agent_session_id,
                Lifecycle::Task
            )
            .await
        ),
        "session_children_limit_exceeded"
    );
    let parent = f
        .store
        .get_session(&f.zone, &root.agent_session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parent.child_count, 2);
    let g = f
        .child(
            &a,
            &f.app_a,
            &f.rec_a,
            &c1.agent_session_id,
            Lifecycle::Task,
        )
        .await
        .unwrap()
        .session;
    assert_eq!(g.depth, 2);
    assert_eq!(
        code(
            f.child(&a, &f.app_a, &f.rec_a, &g.agent_session_id, Lifecycle::Task)
                .await
        ),
        "session_depth_limit_exceeded"
    );
    // 6 live sessions now (root, b_root, c1, c2, g) + 1 → 6th ok, 7th refused.
    f.task_a().await;
    let req = f.start_req(&f.app_a, &f.rec_a);
    assert_eq!(
        code(f.co.start_session(&f.zone, &a, &req, f.t0).await),
        "session_zone_limit_exceeded"
    );
    // Expired tasks do not count: an hour and a second later the zone is empty again.
    let later = f.t0 + Duration::seconds(3601);
    f.co.start_session(&f.zone, &a, &req, later).await.unwrap();
}

#[tokio::test]
async fn dcr_application_rules() {
    let f = fx().await;
    let op = Caller::operator();
    let mut req = f.start_req(&f.app_dcr, &f.rec_dcr);
    req.lifecycle = Lifecycle::Service;
    assert_eq!(
        code(f.co.start_session(&f.zone, &op, &req, f.t0).await),
        "dcr_application_cannot_host_service"
    );
    let mut req = f.start_req(&f.app_dcr, &f.rec_dcr);
    req.parent_id = Some("x".into());
    assert_eq!(
        code(f.co.start_session(&f.zone, &op, &req, f.t0).await),
        "dcr_application_cannot_be_child"
    );
    let req = f.start_req(&f.app_dcr, &f.rec_dcr);
    let d =
        f.co.start_session(&f.zone, &op, &req, f.t0)
            .await
            .unwrap()
            .session;
    assert_eq!(
        code(f.co.start_session(&f.zone, &op, &req, f.t0).await),
        "dcr_application_already_bound"
    );
    assert_eq!(
        code(
            f.child(
                &op,
                &f.app_a,
                &f.rec_a,
                &d.agent_session_id,
                Lifecycle::Task
            )
            .await
        ),
        "dcr_application_cannot_start_child"
    );
}

#[tokio::test]
async fn terminate_cascades_to_subtree_and_edges() {
    let f = fx().await;
    let a = f.caller_a();
    let root = f.task_a().await;
    let c1 = f
        .child(
            &a,
            &f.app_a,
            &f.rec_a,
            &root.agent_session_id,
            Lifecycle::Task,
        )
        .await
        .unwrap()
        .session;
    let g = f
        .child(
            &a,
            &f.app_a,
            &f.rec_a,
            &c1.agent_session_id,
            Lifecycle::Task,
        )
        .await
        .unwrap()
        .session;
    let other = f.task_b().await;
    let e = f.edge(&f.edge_req(&other, &g, &["read"], json!({}))).await;
    let epoch0 = f.store.graph_epoch(&f.zone).await.unwrap();
    f.outbox().await;

    let ids =
        f.co.terminate(&f.zone, &a, &c1.agent_session_id, "requested", None, f.t0)
            .await
            .unwrap();
    assert_eq!(
        ids,
        vec![c1.agent_session_id.clone(), g.agent_session_id.clone()]
    );
    let c1s = f
        .store
        .get_session(&f.zone, &c1.agent_session_id)
        .await
        .unwrap()
        .unwrap();
    let gs = f
        .store
        .get_session(&f.zone, &g.agent_session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c1s.status, SessionStatus::Terminated);
    assert_eq!(c1s.termination_reason.as_deref(), Some("requested"));
    assert_eq!(gs.termination_reason.as_deref(), Some("parent_terminated"));
    let edge = f.store.get_edge(&f.zone, &e.id).await.unwrap().unwrap();
    assert_eq!(edge.status, EdgeStatus::Revoked);
    assert_eq!(f.store.graph_epoch(&f.zone).await.unwrap(), epoch0 + 1);
    let rootn = f
        .store
        .get_session(&f.zone, &root.agent_session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rootn.child_count, 0);

    let rows = f.outbox().await;
    let revokes: Vec<_> = rows
        .iter()
        .filter(|r| r.message.stream == SESSIONS_REVOKE)
        .collect();
    assert_eq!(revokes.len(), 2);
    // The user record is still held by the live root, so its anchor is suppressed.
    assert!(revokes.iter().all(|r| field(r, "session_id").is_none()));
    assert!(
        revokes
            .iter()
            .all(|r| field(r, "agent_session_id").is_some())
    );
    let inv: Vec<_> = rows
        .iter()
        .filter(|r| r.message.stream == DELEGATIONS_INVALIDATE)
        .collect();
    assert_eq!(inv.len(), 1);
    assert_eq!(field(inv[0], "event"), Some("edge_revoke"));
    assert_eq!(
        field(inv[0], "epoch"),
        Some((epoch0 + 1).to_string().as_str())
    );

    // Terminating again → 404.
    assert_eq!(
        code(
            f.co.terminate(&f.zone, &a, &c1.agent_session_id, "requested", None, f.t0)
                .await
        ),
        "session_not_found"
    );
    // Terminating the root now names the user record: no live session holds it any more.
    f.co.terminate(&f.zone, &a, &root.agent_session_id, "requested", None, f.t0)
        .await
        .unwrap();
    let rows = f.outbox().await;
    let rev = rows
        .iter()
        .find(|r| r.message.stream == SESSIONS_REVOKE)
        .unwrap();
    assert_eq!(field(rev, "session_id"), Some(f.rec_a.as_str()));
    // Ownership.
    assert_eq!(
        code(
            f.co.terminate(
                &f.zone,
                &f.caller_b(),
                &root.agent_session_id,
                "x",
                None,
                f.t0
            )
            .await
        ),
        "application_ownership_required"
    );
}

#[tokio::test]
async fn bootstrap_record_anchor_is_never_published() {
    let f = fx().await;
    let a = f.caller_a();
    let req = f.start_req(&f.app_a, &f.boot_a);
    let s =
        f.co.start_session(&f.zone, &a, &req, f.t0)
            .await
            .unwrap()
            .session;
    f.outbox().await;
    f.co.terminate(&f.zone, &a, &s.agent_session_id, "requested", None, f.t0)
        .await
        .unwrap();
    let rows = f.outbox().await;
    let rev = rows
        .iter()
        .find(|r| r.message.stream == SESSIONS_REVOKE)
        .unwrap();
    assert_eq!(field(rev, "session_id"), None);
    assert_eq!(
        field(rev, "agent_session_id"),
        Some(s.agent_session_id.as_str())
    );
}

#[tokio::test]
async fn suspend_and_resume_subtree() {
    let f = fx().await;
    let a = f.caller_a();
    let mut req = f.start_req(&f.app_a, &f.rec_a);
    req.lifecycle = Lifecycle::Service;
    let svc =
        f.co.start_session(&f.zone, &a, &req, f.t0)
            .await
            .unwrap()
            .session;
    assert_eq!(svc.lease_generation, 1);
    assert_eq!(svc.ttl_seconds, None);
    let c = f
        .child(
            &a,
            &f.app_a,
            &f.rec_a,
            &svc.agent_session_id,
            Lifecycle::Service,
        )
        .await
        .unwrap()
        .session;
    assert_eq!(
        f.co.suspend(&f.zone, &a, &svc.agent_session_id, "suspended", f.t0)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        code(
            f.co.suspend(&f.zone, &a, &svc.agent_session_id, "suspended", f.t0)
                .await
        ),
        "session_not_found_or_not_active"
    );
    let later = f.t0 + Duration::seconds(300);
    assert_eq!(
        f.co.resume(&f.zone, &a, &svc.agent_session_id, later)
            .await
            .unwrap(),
        2
    );
    let cs = f
        .store
        .get_session(&f.zone, &c.agent_session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cs.status, SessionStatus::Active);
    assert_eq!(
        cs.heartbeat_deadline_at,
        Some(later + Duration::seconds(120))
    );
    assert_eq!(
        code(f.co.resume(&f.zone, &a, &svc.agent_session_id, later).await),
        "session_not_found_or_not_suspended"
    );
    assert_eq!(
        code(f.co.suspend(&f.zone, &a, "nope", "suspended", f.t0).await),
        "session_not_found"
    );
}

#[tokio::test]
async fn lease_fencing_and_heartbeat() {
    let f = fx().await;
    let a = f.caller_a();
    let mut req = f.start_req(&f.app_a, &f.rec_a);
    req.lifecycle = Lifecycle::Service;
    let svc =
        f.co.start_session(&f.zone, &a, &req, f.t0)
            .await
            .unwrap()
            .session;
    let id = svc.agent_session_id.clone();
    let t1 = f.t0 + Duration::seconds(10);
    let lease = f.co.acquire_lease(&f.zone, &a, &id, t1).await.unwrap();
    assert_eq!(lease.lease_generation, 2);
    assert_eq!(lease.heartbeat_deadline_at, t1 + Duration::seconds(120));
    assert_eq!(
        code(f.co.heartbeat(&f.zone, &a, &id, 1, t1).await),
        "session_lease_fenced"
    );
    let hb = f.co.heartbeat(&f.zone, &a, &id, 2, t1).await.unwrap();
    assert_eq!(hb.session.last_heartbeat_at, Some(t1));
    // Terminate fencing: missing / stale generation, admin exempt.
    assert_eq!(
        code(
            f.co.terminate(&f.zone, &a, &id, "requested", None, t1)
                .await
        ),
        "lease_generation_required"
    );
    assert_eq!(
        code(
            f.co.terminate(&f.zone, &a, &id, "requested", Some(1), t1)
                .await
        ),
        "session_lease_fenced"
    );
    // Caller without an application record.
    let no_sid = Caller::application(f.app_a.clone(), None, ["x"]);
    assert_eq!(
        code(f.co.acquire_lease(&f.zone, &no_sid, &id, t1).await),
        "authority_record_required"
    );
    // A task session has no lease.
    let task = f.task_a().await;
    assert_eq!(
        code(
            f.co.acquire_lease(&f.zone, &a, &task.agent_session_id, t1)
                .await
        ),
        "session_not_service"
    );
    // Heartbeat after the deadline → 409 and the subtree is suspended (committed).
    let late = t1 + Duration::seconds(121);
    assert_eq!(
        code(f.co.heartbeat(&f.zone, &a, &id, 2, late).await),
        "session_lease_expired"
    );
    let s = f.store.get_session(&f.zone, &id).await.unwrap().unwrap();
    assert_eq!(s.status, SessionStatus::Suspended);
    assert_eq!(
        code(f.co.acquire_lease(&f.zone, &a, &id, late).await),
        "session_suspended"
    );
    f.co.terminate(&f.zone, &Caller::operator(), &id, "requested", None, late)
        .await
        .unwrap();
}

#[tokio::test]
async fn inactive_subject_terminates_on_lease() {
    let f = fx().await;
    let a = f.caller_a();
    let mut req = f.start_req(&f.app_a, &f.rec_a);
    req.lifecycle = Lifecycle::Service;
    let svc =
        f.co.start_session(&f.zone, &a, &req, f.t0)
            .await
            .unwrap()
            .session;
    f.store
        .revoke_authority(&f.zone, &f.rec_a, "x", f.t0)
        .await
        .unwrap();
    assert_eq!(
        code(
            f.co.acquire_lease(&f.zone, &a, &svc.agent_session_id, f.t0)
                .await
        ),
        "session_subject_inactive"
    );
    let s = f
        .store
        .get_session(&f.zone, &svc.agent_session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.status, SessionStatus::Terminated);
    assert_eq!(
        s.termination_reason.as_deref(),
        Some("subject_authority_inactive")
    );
}

#[tokio::test]
async fn inheritance_at_start() {
    let f = fx().await;
    let a = f.caller_a();
    let b = f.task_b().await;
    let p = f.task_a().await;
    // No edge ever → edge-less child.
    let c0 = f
        .child(&a, &f.app_a, &f.rec_a, &p.agent_session_id, Lifecycle::Task)
        .await
        .unwrap();
    assert_eq!(c0.delegation_edge_id, None);
    // One live edge → mirrored.
    let e = f
        .edge(&f.edge_req(&b, &p, &["read"], json!({"max_hops": 3})))
        .await;
    let epoch0 = f.store.graph_epoch(&f.zone).await.unwrap();
    let c1 = f
        .child(&a, &f.app_a, &f.rec_a, &p.agent_session_id, Lifecycle::Task)
        .await
        .unwrap();
    let mirror_id = c1.delegation_edge_id.clone().unwrap();
    let m = f
        .store
        .get_edge(&f.zone, &mirror_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.scopes, e.scopes);
    assert_eq!(m.resource_id, e.resource_id);
    assert_eq!(m.expires_at, e.expires_at);
    assert_eq!(m.constraints_json, e.constraints_json);
    assert_eq!(m.parent_edge_id.as_deref(), Some(e.id.as_str()));
    assert_eq!(m.source_session_id, p.agent_session_id);
    assert_eq!(c1.epoch, Some(epoch0 + 1));
    // parent_authority: none → no edge.
    let mut req = f.start_req(&f.app_a, &f.rec_a);
    req.parent_id = Some(p.agent_session_id.clone());
    req.parent_authority = ParentAuthority::None;
    let c2 = f.co.start_session(&f.zone, &a, &req, f.t0).await.unwrap();
    assert_eq!(c2.delegation_edge_id, None);
    // Two live edges → ambiguous unless one is named.
    let b2 = f.task_b().await;
    let e2 = f.edge(&f.edge_req(&b2, &p, &["read"], json!({}))).await;
    assert_eq!(
        code(
            f.child(&a, &f.app_a, &f.rec_a, &p.agent_session_id, Lifecycle::Task)
                .await
        ),
        "inherit_parent_edge_ambiguous"
    );
    let mut req = f.start_req(&f.app_a, &f.rec_a);
    req.parent_id = Some(p.agent_session_id.clone());
    req.inherit_parent_edge_id = Some(e2.id.clone());
    let c3 = f.co.start_session(&f.zone, &a, &req, f.t0).await.unwrap();
    assert!(c3.delegation_edge_id.is_some());
    // Edges exist but none live (both expired 600 s later) → not active.
    let later = f.t0 + Duration::seconds(601);
    let mut req = f.start_req(&f.app_a, &f.rec_a);
    req.parent_id = Some(p.agent_session_id.clone());
    assert_eq!(
        code(f.co.start_session(&f.zone, &a, &req, later).await),
        "inherit_parent_edge_not_active"
    );
}

// ---------------------------------------------------------------------------------------
// Delegations
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn create_rules_in_order() {
    let f = fx().await;
    let a = f.caller_a();
    let s = f.task_a().await;
    let t = f.task_a().await;
    let b = f.task_b().await;
    let create = |req| {
        let co = f.co.clone();
        let zone = f.zone.clone();
        let a = a.clone();
        let now = f.t0;
        async move { co.create_delegation(&zone, &a, &req, now).await }
    };
    // Constraint validation first.
    let mut r = f.edge_req(&s, &t, &["read"], json!({"colour": "red"}));
    assert_eq!(
        code(create(r.clone()).await),
        "invalid_delegation_constraint"
    );
    r = f.edge_req(&s, &t, &["read"], json!({"max_depth": 2, "max_hops": 3}));
    assert_eq!(code(create(r.clone()).await), "invalid_max_hops");
    r = f.edge_req(&s, &t, &["read"], json!({"budget": 65}));
    assert_eq!(code(create(r.clone()).await), "invalid_budget");
    // 1. Expiry required (beats every later rule, even self-delegation).
    r = f.edge_req(&s, &s, &["read"], json!({}));
    r.ttl_seconds = None;
    assert_eq!(code(create(r.clone()).await), "delegation_expiry_required");
    // 2. Issuer ownership (B's session as source).
    r = f.edge_req(&b, &s, &["read"], json!({}));
    assert_eq!(code(create(r.clone()).await), "issuer_ownership_required");
    // 3. Self-delegation.
    r = f.edge_req(&s, &s, &["read"], json!({}));
    assert_eq!(code(create(r.clone()).await), "self_delegation_denied");
    // 4. Broad without permission.
    r = f.edge_req(&s, &t, &["anything"], json!({}));
    r.resource_id = None;
    assert_eq!(
        code(create(r.clone()).await),
        "broad_delegation_permission_required"
    );
    let broad_a = Caller::application(
        f.app_a.clone(),
        None,
        [format!("coordinator.delegate_broad:{}", f.app_a)],
    );
    let made =
        f.co.create_delegation(&f.zone, &broad_a, &r, f.t0)
            .await
            .unwrap();
    assert_eq!(
        made.warnings,
        vec!["resource_null_delegation_broadens_resource_matching"]
    );
    assert_eq!(made.allow_reason[1], "broad_delegation_elevated");
    assert_eq!(
        made.edge.constraints_json["broad_reason"],
        "resource_null_delegation"
    );
    assert_eq!(made.edge.constraints_json["policy_approved"], true);
    assert!(made.effective_authority.broad);
    // 5. Endpoints live; applications match.
    r = f.edge_req(&s, &t, &["read"], json!({}));
    r.target_session_id = "nope".into();
    assert_eq!(
        code(create(r.clone()).await),
        "delegation_endpoint_not_found"
    );
    r = f.edge_req(&s, &t, &["read"], json!({}));
    r.receiver_application_id = f.app_b.clone();
    assert_eq!(
        code(create(r.clone()).await),
        "delegation_application_mismatch"
    );
    // 6. Resources.
    r = f.edge_req(&s, &t, &["read"], json!({}));
    r.resource_id = Some("resource://missing".into());
    assert_eq!(code(create(r.clone()).await), "resource_not_found");
    r = f.edge_req(&s, &t, &["read"], json!({"resources": ["resource://r2"]}));
    assert_eq!(
        code(create(r.clone()).await),
        "delegation_resource_scope_mismatch"
    );
    r = f.edge_req(&s, &t, &["delete"], json!({}));
    assert_eq!(
        code(create(r.clone()).await),
        "delegation_scopes_exceed_resource"
    );
    // The public identifier is accepted and stored as the row id.
    r = f.edge_req(&s, &t, &["read"], json!({}));
    r.resource_id = Some("resource://r1".into());
    let ok = create(r.clone()).await.unwrap();
    assert_eq!(ok.edge.resource_id.as_deref(), Some(f.r1.id.as_str()));
    assert_eq!(
        ok.allow_reason,
        vec![
            "same_zone_endpoints_active",
            "resource_scope_checked",
            "source_authority_root",
            "typed_constraints_validated"
        ]
    );
    // 8. Cycle: t → s closes s → t.
    r = f.edge_req(&t, &s, &["read"], json!({}));
    r.parent_edge_id = Some(ok.edge.id.clone());
    let cyc = f.co.create_delegation(&f.zone, &a, &r, f.t0).await;
    // t's inbound edge (from s) is its parent with max_hops 1 → narrowing refuses first.
    assert_eq!(code(cyc), "delegation_exceeds_parent_authority");
    // 9. Expired: an explicit expiry in the past.
    r = f.edge_req(&s, &t, &["read"], json!({}));
    r.expires_at = Some(f.t0 - Duration::seconds(1));
    assert_eq!(code(create(r.clone()).await), "delegation_expired");
}

#[tokio::test]
async fn cycle_is_refused() {
    let f = fx().await;
    let a = f.caller_a();
    let s = f.task_a().await;
    let t = f.task_a().await;
    let u = f.task_a().await;
    let e1 = f
        .edge(&f.edge_req(&s, &t, &["read", "write"], json!({"max_hops": 5})))
        .await;
    let mut r = f.edge_req(&t, &u, &["read"], json!({"max_hops": 2}));
    r.ttl_seconds = Some(300);
    let e2 =
        f.co.create_delegation(&f.zone, &a, &r, f.t0)
            .await
            .unwrap()
            .edge;
    assert_eq!(e2.parent_edge_id.as_deref(), Some(e1.id.as_str()));
    let mut r = f.edge_req(&u, &s, &["read"], json!({"max_hops": 1}));
    r.ttl_seconds = Some(200);
    assert_eq!(
        code(f.co.create_delegation(&f.zone, &a, &r, f.t0).await),
        "delegation_cycle_denied"
    );
}

#[tokio::test]
async fn narrowing_against_the_parent() {
    let f = fx().await;
    let a = f.caller_a();
    let root = f.task_a().await;
    let mid = f.task_a().await;
    let leaf = f.task_a().await;
    let parent = f
        .edge(&f.edge_req(
            &root,
            &mid,
            &["read", "write"],
            json!({"max_hops": 3, "ttl_seconds": 600, "budget": 2, "resources": ["resource://r1"]}),
        ))
        .await;
    let try_child = |scopes: &[&str], c: serde_json::Value, ttl: Option<i64>| {
        let mut r = f.edge_req(&mid, &leaf, scopes, c);
        r.ttl_seconds = ttl;
        let co = f.co.clone();
        let zone = f.zone.clone();
        let a = a.clone();
        let now = f.t0;
        async move { co.create_delegation(&zone, &a, &r, now).await }
    };
    let exceeds = |r: Result<_, E>| match r {
        Err(E::DelegationExceedsParentAuthority(b)) => b,
        other => panic!("expected exceeds, got {other:?}"),
    };
    assert_eq!(
        exceeds(try_child(&["admin"], json!({}), Some(600)).await),
        ExceedsParent::Scopes
    );
    // A larger TTL under an explicit, earlier expiry (else the expiry bound fires first).
    let mut big_ttl = f.edge_req(&mid, &leaf, &["read"], json!({}));
    big_ttl.ttl_seconds = Some(601);
    big_ttl.expires_at = Some(f.t0 + Duration::seconds(100));
    assert_eq!(
        exceeds(f.co.create_delegation(&f.zone, &a, &big_ttl, f.t0).await),
        ExceedsParent::Ttl
    );
    assert_eq!(
        exceeds(try_child(&["read"], json!({"max_hops": 3}), Some(60)).await),
        ExceedsParent::Hops
    );
    assert_eq!(
        exceeds(try_child(&["read"], json!({"budget": 3}), Some(60)).await),
        ExceedsParent::Budget
    );
    let mut later = f.edge_req(&mid, &leaf, &["read"], json!({}));
    later.ttl_seconds = Some(60);
    later.expires_at = Some(parent.expires_at + Duration::seconds(1));
    assert_eq!(
        exceeds(f.co.create_delegation(&f.zone, &a, &later, f.t0).await),
        ExceedsParent::Expiry
    );
    let mut other_res = f.edge_req(&mid, &leaf, &["read"], json!({}));
    other_res.resource_id = Some(f.r2.id.clone());
    other_res.ttl_seconds = Some(60);
    assert_eq!(
        exceeds(f.co.create_delegation(&f.zone, &a, &other_res, f.t0).await),
        ExceedsParent::Resources
    );
    // Within every bound → 201, narrowed.
    let ok = try_child(&["read"], json!({"max_hops": 2}), Some(60))
        .await
        .unwrap();
    assert_eq!(ok.edge.parent_edge_id.as_deref(), Some(parent.id.as_str()));
    assert_eq!(ok.allow_reason[2], "parent_authority_narrowed");
    // A parent with the default max_hops (1) allows no re-delegation.
    let x = f.task_a().await;
    let y = f.task_a().await;
    let z = f.task_a().await;
    f.edge(&f.edge_req(&x, &y, &["read"], json!({}))).await;
    let mut r = f.edge_req(&y, &z, &["read"], json!({}));
    r.ttl_seconds = Some(60);
    assert_eq!(
        exceeds(f.co.create_delegation(&f.zone, &a, &r, f.t0).await),
        ExceedsParent::Hops
    );
}

#[tokio::test]
async fn parent_choice() {
    let f = fx().await;
    let a = f.caller_a();
    let s1 = f.task_a().await;
    let s2 = f.task_a().await;
    let mid = f.task_a().await;
    let leaf = f.task_a().await;
    let p1 = f
        .edge(&f.edge_req(&s1, &mid, &["read"], json!({"max_hops": 3})))
        .await;
    f.edge(&f.edge_req(&s2, &mid, &["read"], json!({"max_hops": 3})))
        .await;
    let mut r = f.edge_req(&mid, &leaf, &["read"], json!({"max_hops": 1}));
    assert_eq!(
        code(f.co.create_delegation(&f.zone, &a, &r, f.t0).await),
        "parent_delegation_ambiguous"
    );
    r.parent_edge_id = Some("nope".into());
    assert_eq!(
        code(f.co.create_delegation(&f.zone, &a, &r, f.t0).await),
        "parent_delegation_not_active"
    );
    r.parent_edge_id = Some(p1.id.clone());
    let made = f.co.create_delegation(&f.zone, &a, &r, f.t0).await.unwrap();
    assert_eq!(made.effective_authority.parent_edges_considered.len(), 2);
}

#[tokio::test]
async fn revoke_cascades_and_bumps_epoch_once() {
    let f = fx().await;
    let a = f.caller_a();
    let sa = f.task_a().await;
    let sb = f.task_a().await;
    let sc = f.task_a().await;
    let sc_child = f
        .child(
            &a,
            &f.app_a,
            &f.rec_a,
            &sc.agent_session_id,
            Lifecycle::Task,
        )
        .await
        .unwrap()
        .session;
    let ab = f
        .edge(&f.edge_req(&sa, &sb, &["read"], json!({"max_hops": 3})))
        .await;
    let mut r = f.edge_req(&sb, &sc, &["read"], json!({"max_hops": 2}));
    r.ttl_seconds = Some(300);
    let bc =
        f.co.create_delegation(&f.zone, &a, &r, f.t0)
            .await
            .unwrap()
            .edge;
    let epoch0 = f.store.graph_epoch(&f.zone).await.unwrap();
    f.outbox().await;
    // Ownership.
    assert_eq!(
        code(
            f.co.revoke_delegation(&f.zone, &f.caller_b(), &ab.id, f.t0)
                .await
        ),
        "issuer_ownership_required"
    );
    let out =
        f.co.revoke_delegation(&f.zone, &a, &ab.id, f.t0)
            .await
            .unwrap();
    assert_eq!(out.revoked_edges, vec![ab.id.clone(), bc.id.clone()]);
    assert_eq!(
        out.affected_sessions,
        vec![sb.agent_session_id.clone(), sc.agent_session_id.clone()]
    );
    assert_eq!(out.terminated_sessions.len(), 3);
    assert_eq!(out.epoch, epoch0 + 1);
    assert_eq!(f.store.graph_epoch(&f.zone).await.unwrap(), epoch0 + 1);
    for id in [
        &sb.agent_session_id,
        &sc.agent_session_id,
        &sc_child.agent_session_id,
    ] {
        let s = f.store.get_session(&f.zone, id).await.unwrap().unwrap();
        assert_eq!(s.status, SessionStatus::Terminated);
        assert_eq!(s.termination_reason.as_deref(), Some("delegation_revoked"));
    }
    let rows = f.outbox().await;
    let revs: Vec<_> = rows
        .iter()
        .filter(|r| r.message.stream == SESSIONS_REVOKE)
        .collect();
    assert_eq!(revs.len(), 3);
    assert!(
        revs.iter()
            .all(|r| field(r, "delegation_edge_id") == Some(ab.id.as_str()))
    );
    assert!(
        revs.iter()
            .all(|r| field(r, "reason") == Some("delegation_revoked"))
    );
    let inv: Vec<_> = rows
        .iter()
        .filter(|r| r.message.stream == DELEGATIONS_INVALIDATE)
        .collect();
    assert_eq!(inv.len(), 1);
    assert_eq!(field(inv[0], "affected_edges"), Some("2"));
    // Second revoke → 404.
    assert_eq!(
        code(f.co.revoke_delegation(&f.zone, &a, &ab.id, f.t0).await),
        "delegation_not_found"
    );
}

#[tokio::test]
async fn effective_authority_traverse_impact() {
    let f = fx().await;
    let a = f.caller_a();
    let s1 = f.task_a().await;
    let s2 = f.task_a().await;
    let t = f.task_a().await;
    let empty =
        f.co.effective_authority(&f.zone, &a, &t.agent_session_id, f.t0)
            .await
            .unwrap();
    assert_eq!(empty.effective_max_hops, Some(0));
    assert!(empty.effective_scopes.is_empty());
    let e1 = f
        .edge(&f.edge_req(
            &s1,
            &t,
            &["read", "write"],
            json!({"max_hops": 4, "ttl_seconds": 600}),
        ))
        .await;
    let mut r = f.edge_req(&s2, &t, &["read"], json!({"max_hops": 2}));
    r.resource_id = Some(f.r2.id.clone());
    r.ttl_seconds = Some(300);
    f.edge(&r).await;
    let ea =
        f.co.effective_authority(&f.zone, &a, &t.agent_session_id, f.t0)
            .await
            .unwrap();
    assert_eq!(ea.effective_scopes, vec!["read"]);
    assert_eq!(
        ea.effective_resources,
        vec!["resource://r1", "resource://r2"]
    );
    assert_eq!(ea.effective_max_hops, Some(2));
    assert_eq!(ea.effective_ttl_seconds, Some(300));
    assert_eq!(ea.earliest_expires_at, Some(f.t0 + Duration::seconds(300)));
    assert!(ea.effective_resource_constrained);
    // Another application's reader → 404.
    assert_eq!(
        code(
            f.co.effective_authority(&f.zone, &f.caller_b(), &t.agent_session_id, f.t0)
                .await
        ),
        "session_not_found"
    );
    // Traverse / impact: admin only.
    let u = f.task_a().await;
    let mut r = f.edge_req(&t, &u, &["read"], json!({"max_hops": 1}));
    r.parent_edge_id = Some(e1.id.clone());
    r.ttl_seconds = Some(100);
    let e3 =
        f.co.create_delegation(&f.zone, &a, &r, f.t0)
            .await
            .unwrap()
            .edge;
    assert_eq!(
        code(f.co.traverse(&f.zone, &a, &e1.id, f.t0).await),
        "coordinator_admin_required"
    );
    let rows =
        f.co.traverse(&f.zone, &Caller::operator(), &e1.id, f.t0)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1].id.as_str(), rows[1].depth), (e3.id.as_str(), 1));
    let imp =
        f.co.impact(&f.zone, &Caller::operator(), &e1.id, f.t0)
            .await
            .unwrap();
    assert_eq!(
        imp.affected_sessions,
        vec![t.agent_session_id.clone(), u.agent_session_id.clone()]
    );
    assert_eq!(imp.affected_authority_records, vec![f.rec_a.clone()]);
    assert_eq!(
        code(
            f.co.impact(&f.zone, &Caller::operator(), "nope", f.t0)
                .await
        ),
        "delegation_not_found"
    );
}

// ---------------------------------------------------------------------------------------
// Idempotency (§2.1, §7 items 28–30)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn idempotent_session_start_replays_conflicts_and_expires() {
    use caracal_core::coordinator::sessions::RenderSession;
    use caracal_core::coordinator::{Idempotency, IdempotencyKeys, Idempotent};
    let f = fx().await;
    let a = f.caller_a();
    let keys = IdempotencyKeys::new(b"idem-key".to_vec(), None);
    let render: &RenderSession =
        &|s| json!({"agent_session_id": s.session.agent_session_id}).to_string();
    let req = f.start_req(&f.app_a, &f.rec_a);
    let body = json!({"application_id": f.app_a, "principal": {"client_id": f.app_a}});
    let idem = Idempotency {
        keys: &keys,
        key: "k-1",
        request: &body,
        generated: false,
    };
    let first =
        f.co.start_session_idempotent(&f.zone, &a, &req, Some((&idem, render)), f.t0)
            .await
            .unwrap();
    let Idempotent::Fresh(first) = first else {
        panic!("fresh expected")
    };
    let again =
        f.co.start_session_idempotent(&f.zone, &a, &req, Some((&idem, render)), f.t0)
            .await
            .unwrap();
    assert_eq!(
        again,
        Idempotent::Replayed {
            status: 201,
            body: render(&first),
        }
    );
    // Only one session exists for the application.
    let live = f
        .store
        .list_sessions(
            &f.zone,
            &Default::default(),
            &caracal_core::store::coordinator::IdPage {
                limit: 10,
                after_id: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(live.items.len(), 1);
    // Same key, other request (another principal) → conflict.
    let other = json!({"application_id": f.app_a, "principal": {"client_id": "someone"}});
    let idem2 = Idempotency {
        keys: &keys,
        key: "k-1",
        request: &other,
        generated: false,
    };
    assert_eq!(
        code(
            f.co.start_session_idempotent(&f.zone, &a, &req, Some((&idem2, render)), f.t0)
                .await
        ),
        "idempotency_key_conflict"
    );
    // After the session is terminated the replay is refused.
    f.co.terminate(
        &f.zone,
        &a,
        &first.session.agent_session_id,
        "requested",
        None,
        f.t0,
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            f.co.start_session_idempotent(&f.zone, &a, &req, Some((&idem, render)), f.t0)
                .await
        ),
        "idempotency_result_inactive"
    );
    // Rotation: a receipt stored under the old key is still found.
    let rotated = IdempotencyKeys::new(b"next".to_vec(), Some(b"idem-key".to_vec()));
    let idem3 = Idempotency {
        keys: &rotated,
        key: "k-1",
        request: &body,
        generated: false,
    };
    assert_eq!(
        code(
            f.co.start_session_idempotent(&f.zone, &a, &req, Some((&idem3, render)), f.t0)
                .await
        ),
        "idempotency_result_inactive"
    );
}

#[tokio::test]
async fn idempotent_delegation_create() {
    use caracal_core::coordinator::delegation::RenderDelegation;
    use caracal_core::coordinator::{Idempotency, IdempotencyKeys, Idempotent};
    let f = fx().await;
    let a = f.caller_a();
    let s = f.task_a().await;
    let t = f.task_a().await;
    let keys = IdempotencyKeys::new(b"idem-key".to_vec(), None);
    let render: &RenderDelegation = &|d| json!({"delegation_edge_id": d.edge.id}).to_string();
    let req = f.edge_req(&s, &t, &["read"], json!({}));
    let body = json!({"scopes": ["read"], "principal": {"client_id": f.app_a}});
    let idem = Idempotency {
        keys: &keys,
        key: "d-1",
        request: &body,
        generated: false,
    };
    let Idempotent::Fresh(made) =
        f.co.create_delegation_idempotent(&f.zone, &a, &req, Some((&idem, render)), f.t0)
            .await
            .unwrap()
    else {
        panic!("fresh expected")
    };
    let epoch = f.store.graph_epoch(&f.zone).await.unwrap();
    let again =
        f.co.create_delegation_idempotent(&f.zone, &a, &req, Some((&idem, render)), f.t0)
            .await
            .unwrap();
    assert_eq!(
        again,
        Idempotent::Replayed {
            status: 201,
            body: render(&made)
        }
    );
    assert_eq!(
        f.store.graph_epoch(&f.zone).await.unwrap(),
        epoch,
        "a replay changes nothing"
    );
    f.co.revoke_delegation(&f.zone, &a, &made.edge.id, f.t0)
        .await
        .unwrap();
    assert_eq!(
        code(
            f.co.create_delegation_idempotent(&f.zone, &a, &req, Some((&idem, render)), f.t0)
                .await
        ),
        "idempotency_result_inactive"
    );
}
