//! The Coordinator's core scenario on a real, migrated Postgres (`PgStore`): start a session
//! tree, inherit an edge, narrow a chain, refuse a cycle, revoke with cascade, and check the
//! epoch and the outbox rows written in the same transactions.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod coordinator_support;

use std::sync::Arc;

use chrono::{Duration, DurationRound, Utc};
use serde_json::json;

use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::coordinator::sessions::RenderSession;
use caracal_core::coordinator::{Caller, Idempotency, IdempotencyKeys, Idempotent, Limits};
use caracal_core::model::delegation::EdgeStatus;
use caracal_core::model::session::{Lifecycle, SessionStatus};
use caracal_core::store::coordinator::CoordinatorStore;
use caracal_core::streams::names::{AGENTS_LIFECYCLE, DELEGATIONS_INVALIDATE, SESSIONS_REVOKE};
use caracal_test_support::{connect, postgres_or_skip};
use coordinator_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_core_scenario_on_postgres() {
    let Some(pg) = postgres_or_skip("coordinator_core_scenario_on_postgres") else {
        return;
    };
    let url = pg.create_database("coordinator_core").await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    drop(client);
    let store = Arc::new(
        PgStore::open(&url, PgStoreOptions::default())
            .await
            .unwrap(),
    );
    // Postgres keeps microseconds; whole milliseconds round-trip exactly.
    let t0 = Utc::now()
        .duration_trunc(Duration::milliseconds(1))
        .unwrap();
    let f = Fx::new(store, t0, Limits::default()).await;
    let a = f.caller_a();

    // Sessions: a service root, a service child (a task parent could not start one), later
    // a task grandchild.
    let mut req = f.start_req(&f.app_a, &f.rec_a);
    req.lifecycle = Lifecycle::Service;
    let root =
        f.co.start_session(&f.zone, &a, &req, t0)
            .await
            .unwrap()
            .session;
    let b = f.task_b().await;
    let svc = f
        .child(
            &a,
            &f.app_a,
            &f.rec_a,
            &root.agent_session_id,
            Lifecycle::Service,
        )
        .await
        .unwrap()
        .session;
    assert_eq!(svc.lease_generation, 1);
    let stored = f
        .store
        .get_session(&f.zone, &svc.agent_session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, svc);

    // Delegation b → root (hops 3), then root → svc narrowed under it.
    let epoch0 = f.store.graph_epoch(&f.zone).await.unwrap();
    let e1 = f
        .edge(&f.edge_req(
            &b,
            &root,
            &["read", "write"],
            json!({"max_hops": 3, "budget": 2}),
        ))
        .await;
    let mut r = f.edge_req(&root, &svc, &["read"], json!({"max_hops": 2}));
    r.ttl_seconds = Some(300);
    let e2 = f.co.create_delegation(&f.zone, &a, &r, t0).await.unwrap();
    assert_eq!(e2.edge.parent_edge_id.as_deref(), Some(e1.id.as_str()));
    assert_eq!(e2.epoch, epoch0 + 2);
    assert_eq!(
        f.store
            .get_edge(&f.zone, &e2.edge.id)
            .await
            .unwrap()
            .unwrap(),
        e2.edge
    );

    // Narrowing and cycle refusals leave the epoch alone.
    let mut wide = f.edge_req(&root, &svc, &["admin"], json!({"max_hops": 1}));
    wide.parent_edge_id = Some(e1.id.clone());
    assert_eq!(
        f.co.create_delegation(&f.zone, &a, &wide, t0)
            .await
            .unwrap_err()
            .code(),
        "delegation_exceeds_parent_authority"
    );
    let mut back = f.edge_req(&svc, &root, &["read"], json!({"max_hops": 1}));
    back.ttl_seconds = Some(100);
    assert_eq!(
        f.co.create_delegation(&f.zone, &a, &back, t0)
            .await
            .unwrap_err()
            .code(),
        "delegation_cycle_denied"
    );
    assert_eq!(f.store.graph_epoch(&f.zone).await.unwrap(), epoch0 + 2);

    // A task child of the service session inherits e2.
    let gc = f
        .child(
            &a,
            &f.app_a,
            &f.rec_a,
            &svc.agent_session_id,
            Lifecycle::Task,
        )
        .await
        .unwrap();
    let mirror = gc.delegation_edge_id.clone().unwrap();
    assert_eq!(gc.epoch, Some(epoch0 + 3));

    // Lease fencing on Postgres.
    let lease =
        f.co.acquire_lease(&f.zone, &a, &svc.agent_session_id, t0)
            .await
            .unwrap();
    assert_eq!(lease.lease_generation, 2);
    assert_eq!(
        f.co.heartbeat(&f.zone, &a, &svc.agent_session_id, 1, t0)
            .await
            .unwrap_err()
            .code(),
        "session_lease_fenced"
    );

    // Revoke e1: e2 and the mirror go, root's subtree (root, svc, gc) is terminated.
    f.outbox().await;
    let out =
        f.co.revoke_delegation(&f.zone, &Caller::operator(), &e1.id, t0)
            .await
            .unwrap();
    assert_eq!(out.epoch, epoch0 + 4);
    assert_eq!(f.store.graph_epoch(&f.zone).await.unwrap(), epoch0 + 4);
    for id in [&e1.id, &e2.edge.id, &mirror] {
        let e = f.store.get_edge(&f.zone, id).await.unwrap().unwrap();
        assert_eq!(e.status, EdgeStatus::Revoked, "{id}");
    }
    for id in [
        &root.agent_session_id,
        &svc.agent_session_id,
        &gc.session.agent_session_id,
    ] {
        let s = f.store.get_session(&f.zone, id).await.unwrap().unwrap();
        assert_eq!(s.status, SessionStatus::Terminated, "{id}");
        assert_eq!(s.termination_reason.as_deref(), Some("delegation_revoked"));
    }
    let b_now = f
        .store
        .get_session(&f.zone, &b.agent_session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b_now.status, SessionStatus::Active);

    let rows = f.outbox().await;
    let count = |stream: &str| rows.iter().filter(|r| r.message.stream == stream).count();
    assert_eq!(count(SESSIONS_REVOKE), 3);
    assert_eq!(count(AGENTS_LIFECYCLE), 3);
    assert_eq!(count(DELEGATIONS_INVALIDATE), 1);
    let inv = rows
        .iter()
        .find(|r| r.message.stream == DELEGATIONS_INVALIDATE)
        .unwrap();
    assert_eq!(field(inv, "epoch"), Some((epoch0 + 4).to_string().as_str()));

    // A refused operation writes nothing: a second revoke is a 404 and the epoch stays.
    assert_eq!(
        f.co.revoke_delegation(&f.zone, &Caller::operator(), &e1.id, t0)
            .await
            .unwrap_err()
            .code(),
        "delegation_not_found"
    );
    assert_eq!(f.store.graph_epoch(&f.zone).await.unwrap(), epoch0 + 4);
    assert!(f.outbox().await.is_empty());

    // Idempotent start: the receipt commits with the session and replays it.
    let keys = IdempotencyKeys::new(b"pg-idem".to_vec(), None);
    let render: &RenderSession =
        &|s| json!({"agent_session_id": s.session.agent_session_id}).to_string();
    let body = json!({"application_id": f.app_b, "principal": {"client_id": f.app_b}});
    let idem = Idempotency {
        keys: &keys,
        key: "pg-1",
        request: &body,
        generated: true,
    };
    let req = f.start_req(&f.app_b, &f.rec_b);
    let b_caller = f.caller_b();
    let Idempotent::Fresh(first) =
        f.co.start_session_idempotent(&f.zone, &b_caller, &req, Some((&idem, render)), t0)
            .await
            .unwrap()
    else {
        panic!("fresh expected")
    };
    assert_eq!(
        f.co.start_session_idempotent(&f.zone, &b_caller, &req, Some((&idem, render)), t0)
            .await
            .unwrap(),
        Idempotent::Replayed {
            status: 201,
            body: render(&first)
        }
    );
}
