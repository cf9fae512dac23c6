//! `PgStore` under faults, and the Postgres-specific guarantees the shared contract suite
//! cannot show (the in-memory store has no connections, pools or foreign keys):
//!
//! - a Postgres killed and restarted under the pool: calls fail fast with a retryable
//!   `Unavailable` during the outage and recover afterwards without rebuilding the store;
//! - an exhausted pool fails with a clear, retryable timeout after the checkout bound;
//! - a unit of work dropped without commit (or cancelled mid-begin) leaves no trace, releases
//!   its zone lock and does not poison the pooled connection;
//! - a failed statement poisons its unit of work, so the commit cannot pretend;
//! - database errors never echo the values that caused them;
//! - idempotency receipts replay their body byte for byte; the database clock is exposed.
//!
//! Every wait is bounded; the outage test runs on a cluster of its own (it kills it).

#![cfg(feature = "postgres")]
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::time::{Duration, Instant};

use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgClock, PgStore, PgStoreOptions};
use caracal_core::clock::Clock;
use caracal_core::model::Attribution;
use caracal_core::model::application::{Application, RegistrationMethod};
use caracal_core::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use caracal_core::model::session::{Lifecycle, Session, SessionStatus};
use caracal_core::model::zone::Zone;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::coordinator::{CoordinatorStore, IdempotencyReceipt, IdempotentOperation};
use caracal_core::store::directory::{ApplicationStore, ZoneStore};
use caracal_core::store::outbox::{OutboxMessage, OutboxStore};
use caracal_core::store::{StoreError, StoreResult};
use caracal_test_support::{EphemeralPostgres, connect, own_postgres_or_skip, postgres_or_skip};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The longest any single step of these tests may take.
const WAIT: Duration = Duration::from_secs(20);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
}

fn id() -> String {
    Uuid::now_v7().to_string()
}

fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

async fn migrated_url(pg: &EphemeralPostgres, name: &str) -> String {
    let url = pg.create_database(name).await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    url
}

/// A store on a fresh, migrated database of the shared cluster.
async fn store_on_shared(test: &str, options: PgStoreOptions) -> Option<PgStore> {
    let pg = postgres_or_skip(test)?;
    let url = migrated_url(pg, test).await;
    Some(PgStore::open(&url, options).await.unwrap())
}

fn options(max_size: u32, connection_timeout: Duration) -> PgStoreOptions {
    PgStoreOptions {
        max_size,
        connection_timeout,
        connect_timeout: Duration::from_secs(1),
        operation_timeout: Some(Duration::from_secs(10)),
        ..PgStoreOptions::default()
    }
}

/// A zone with one application and one authority record (the parents a session needs).
struct Fixture {
    zone: Zone,
    app: Application,
    authority: AuthorityRecord,
}

async fn fixture(store: &PgStore) -> Fixture {
    let t = now_ms();
    let zone = Zone {
        id: id(),
        name: "Faults".into(),
        slug: format!("faults-{}", &Uuid::now_v7().simple().to_string()[20..]),
        dcr_enabled: false,
        operator_coauthor_badge: false,
        operator_governed: false,
        attribution: Attribution::created_by("admin:test"),
        created_at: t,
        updated_at: t,
        archived_at: None,
    };
    store.insert_zone(&zone).await.unwrap();
    let app = Application {
        id: id(),
        zone_id: zone.id.clone(),
        name: "app".into(),
        registration_method: RegistrationMethod::Managed,
        traits: vec![],
        expires_at: None,
        archived_at: None,
        attribution: Attribution::created_by("admin:test"),
        created_at: t,
        updated_at: t,
        client_secret_hash: None,
    };
    store.insert_application(&app).await.unwrap();
    let authority = AuthorityRecord {
        id: id(),
        zone_id: zone.id.clone(),
        session_type: SubjectType::Application,
        subject_id: app.id.clone(),
        parent_id: None,
        status: AuthorityStatus::Active,
        expires_at: t + chrono::Duration::hours(1),
        authenticated_at: None,
        claims_json: serde_json::json!({}),
        revoked_at: None,
        revoked_reason: None,
        created_at: t,
    };
    store.insert_authority(&authority).await.unwrap();
    Fixture {
        zone,
        app,
        authority,
    }
}

fn session(f: &Fixture) -> Session {
    Session {
        agent_session_id: id(),
        zone_id: f.zone.id.clone(),
        application_id: f.app.id.clone(),
        parent_id: None,
        subject_authority_record_id: f.authority.id.clone(),
        lifecycle: Lifecycle::Task,
        labels: vec![],
        status: SessionStatus::Active,
        depth: 0,
        ttl_seconds: Some(600),
        metadata: serde_json::Map::new(),
        started_at: now_ms(),
        terminated_at: None,
        termination_reason: None,
        last_heartbeat_at: None,
        heartbeat_deadline_at: None,
        lease_generation: 0,
        child_count: 0,
        max_children: 10,
    }
}

#[track_caller]
fn assert_retryable<T: std::fmt::Debug>(r: &StoreResult<T>, what: &str) {
    match r {
        Err(e @ StoreError::Unavailable { .. }) => {
            assert!(e.is_retryable(), "{what}: not retryable: {e}");
        }
        other => panic!("{what}: expected a retryable Unavailable, got {other:?}"),
    }
}

/// Postgres is SIGKILLed under a warm pool and restarted on the same port: during the outage
/// every call fails with a retryable `Unavailable` within the checkout bound (no hang); after
/// the restart the same store serves again, every stale pooled connection replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_the_pool_recovers() {
    let Some(pg) = own_postgres_or_skip("restart_under_the_pool_recovers") else {
        return;
    };
    let url = migrated_url(&pg, "restart").await;
    let checkout = Duration::from_millis(750);
    let store = PgStore::open(&url, options(4, checkout)).await.unwrap();
    let f = fixture(&store).await;
    // Warm the pool: four connections checked out at once, then returned.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(within("checkout", store.pool().get_owned()).await.unwrap());
    }
    drop(held);
    assert_eq!(store.pool().state().idle_connections, 4, "the pool is warm");

    within("kill", async { pg.kill().unwrap() }).await;

    // The outage: reads, writes and units of work all fail fast and retryably. The first
    // calls may meet a stale connection (closed), later ones the pool's connect attempts.
    let bound = checkout + Duration::from_secs(2);
    for attempt in 0..6 {
        let started = Instant::now();
        let read = store.get_zone(&f.zone.id).await;
        // Shown with --nocapture: which failure each attempt met, and how fast.
        eprintln!(
            "outage read {attempt}: {:?} after {:?}",
            read.as_ref().err(),
            started.elapsed()
        );
        assert!(
            started.elapsed() < bound,
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
        assert_retryable(&read, "a read during the outage");

        let started = Instant::now();
        let begin = store.begin(&f.zone.id).await.map(|_| ());
        assert!(
            started.elapsed() < bound,
            "begin took {:?}",
            started.elapsed()
        );
        assert_retryable(&begin, "begin during the outage");
    }
    // Once the stale connections are gone, the error names the cause.
    let last = store.get_zone(&f.zone.id).await.unwrap_err().to_string();
    assert!(
        last.contains("timed out") && last.contains("last connect error"),
        "{last}"
    );

    within("restart", async { pg.restart().unwrap() }).await;

    // Recovery without rebuilding the store: retry until the first call succeeds, then every
    // call succeeds (several at once, so every pooled connection is a fresh one).
    let recovered = within("recovery", async {
        loop {
            match store.get_zone(&f.zone.id).await {
                Ok(zone) => break zone,
                Err(e) => {
                    assert!(e.is_retryable(), "{e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await;
    assert_eq!(recovered.as_ref().map(|z| &z.id), Some(&f.zone.id));
    for _ in 0..3 {
        for r in parallel_reads(&store, &f.zone.id, 4).await {
            assert!(r.unwrap().is_some());
        }
    }
    // Writes and units of work work again too.
    let mut tx = within("begin", store.begin(&f.zone.id)).await.unwrap();
    let s = session(&f);
    tx.insert_session(&s).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        store
            .get_session(&f.zone.id, &s.agent_session_id)
            .await
            .unwrap()
            .is_some()
    );
}

/// `n` concurrent reads of a zone, each on its own task (so each takes its own connection).
async fn parallel_reads(
    store: &PgStore,
    zone_id: &str,
    n: usize,
) -> Vec<StoreResult<Option<Zone>>> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let store = store.clone();
            let zone_id = zone_id.to_owned();
            tokio::spawn(async move { store.get_zone(&zone_id).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(within("a concurrent read", h).await.unwrap());
    }
    out
}

/// A pool of one, held by an open unit of work: another call fails after the checkout bound
/// with a retryable error that says the pool is exhausted; releasing the unit of work frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_times_out_clearly() {
    let checkout = Duration::from_millis(300);
    let Some(store) = store_on_shared("exhausted_pool", options(1, checkout)).await else {
        return;
    };
    let f = fixture(&store).await;
    let tx = within("begin", store.begin(&f.zone.id)).await.unwrap();

    let started = Instant::now();
    let r = within("a call on an exhausted pool", store.get_zone(&f.zone.id)).await;
    let took = started.elapsed();
    assert_retryable(&r, "a call on an exhausted pool");
    assert!(took >= checkout, "failed before the bound: {took:?}");
    assert!(took < checkout + Duration::from_secs(2), "took {took:?}");
    let message = r.unwrap_err().to_string();
    assert!(
        message.contains("timed out")
            && message.contains("pool of 1")
            && message.contains("1 in use"),
        "{message}"
    );
    // Another zone's unit of work needs a connection too.
    let other = within("begin elsewhere", store.begin(&id()))
        .await
        .map(|_| ());
    assert_retryable(&other, "begin on an exhausted pool");

    drop(tx);
    assert!(
        within("a call after release", store.get_zone(&f.zone.id))
            .await
            .unwrap()
            .is_some()
    );
}

/// A unit of work dropped without commit leaves no trace (session, epoch, outbox row), frees
/// its zone at once, and the pooled connection it used (the only one) is clean: not inside the
/// abandoned transaction, holding no lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_unit_of_work_leaves_no_trace_and_no_poison() {
    let Some(store) = store_on_shared("dropped_uow", options(1, Duration::from_secs(2))).await
    else {
        return;
    };
    let f = fixture(&store).await;
    let s = session(&f);
    let stream = "caracal.test.dropped";
    let dedupe = id();
    let message = OutboxMessage::new(stream, vec![("k".into(), "v".into())]).dedupe(&dedupe);

    let mut tx = within("begin", store.begin(&f.zone.id)).await.unwrap();
    tx.insert_session(&s).await.unwrap();
    assert_eq!(tx.bump_epoch().await.unwrap(), 1);
    let dropped_outbox = tx.enqueue(&message).await.unwrap();
    assert!(tx.get_session(&s.agent_session_id).await.unwrap().is_some());
    drop(tx);

    // The same (only) connection serves the next calls, outside any transaction.
    let conn = within("checkout", store.pool().get()).await.unwrap();
    let row = conn
        .query_one(
            "SELECT pg_current_xact_id_if_assigned() IS NULL AS fresh, \
                    (SELECT count(*) FROM pg_locks \
                      WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>("fresh"),
        "still inside the abandoned transaction"
    );
    assert_eq!(
        row.get::<_, i64>("advisory"),
        0,
        "the zone lock is still held"
    );
    drop(conn);

    assert_eq!(
        store
            .get_session(&f.zone.id, &s.agent_session_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.graph_epoch(&f.zone.id).await.unwrap(), 0);
    assert_eq!(store.get_outbox(&dropped_outbox).await.unwrap(), None);
    // The dedupe key is free again: the row was never committed.
    let fresh = store.enqueue(&message, now_ms()).await.unwrap();
    assert_ne!(fresh, dropped_outbox);

    // The zone is free at once, and a unit of work on it commits normally.
    let mut tx = within("begin again", store.begin(&f.zone.id))
        .await
        .unwrap();
    tx.insert_session(&s).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        store
            .get_session(&f.zone.id, &s.agent_session_id)
            .await
            .unwrap()
            .is_some()
    );
}

/// A `begin` cancelled while it waits for the zone lock (its caller's timeout) leaves the
/// connection usable; a `begin` that outwaits the operation bound fails retryably and fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_timed_out_begin_is_clean() {
    let opts = PgStoreOptions {
        operation_timeout: Some(Duration::from_millis(800)),
        ..options(2, Duration::from_secs(2))
    };
    let Some(store) = store_on_shared("cancelled_begin", opts).await else {
        return;
    };
    let f = fixture(&store).await;
    let holder = within("begin", store.begin(&f.zone.id)).await.unwrap();

    // The caller gives up first.
    let cancelled = tokio::time::timeout(Duration::from_millis(100), store.begin(&f.zone.id)).await;
    assert!(cancelled.is_err(), "the zone is held, begin must wait");

    // The store's own bound: the server's lock_timeout answers before the client bound.
    let started = Instant::now();
    let timed_out = within("a bounded begin", store.begin(&f.zone.id))
        .await
        .map(|_| ());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_retryable(&timed_out, "begin on a held zone");
    let message = timed_out.unwrap_err().to_string();
    assert!(
        message.contains("55P03"),
        "the server's lock_timeout should answer: {message}"
    );

    holder.commit().await.unwrap();
    // Both connections are usable and the zone is free.
    for _ in 0..4 {
        let tx = within("begin after release", store.begin(&f.zone.id))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(store.get_zone(&f.zone.id).await.unwrap().is_some());
    }
}

/// A unit of work left open and idle past `unit_of_work_idle_timeout` is ended by the server:
/// its zone is released for others, its own next call fails retryably, and the pool replaces
/// the closed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_unit_of_work_is_ended_by_the_server() {
    let opts = PgStoreOptions {
        unit_of_work_idle_timeout: Some(Duration::from_millis(300)),
        ..options(2, Duration::from_secs(2))
    };
    let Some(store) = store_on_shared("idle_uow", opts).await else {
        return;
    };
    let f = fixture(&store).await;
    let mut leaked = within("begin", store.begin(&f.zone.id)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;

    let started = Instant::now();
    let other = within("begin while the idle one is gone", store.begin(&f.zone.id))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the zone stayed locked"
    );
    other.commit().await.unwrap();

    let late = leaked.bump_epoch().await;
    assert_retryable(&late, "a call on a unit of work the server ended");
    assert!(leaked.commit().await.is_err());
    assert_eq!(store.graph_epoch(&f.zone.id).await.unwrap(), 0);
    for _ in 0..3 {
        assert!(store.get_zone(&f.zone.id).await.unwrap().is_some());
    }
}

/// A statement the database refuses (here a session whose application is in no zone) aborts
/// the unit of work: it reports `Invalid`, every later statement and the commit fail, and
/// nothing of it is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_poisons_the_unit_of_work() {
    let Some(store) = store_on_shared("poisoned_uow", options(2, Duration::from_secs(2))).await
    else {
        return;
    };
    let f = fixture(&store).await;
    let good = session(&f);
    let mut bad = session(&f);
    bad.application_id = id();

    let mut tx = within("begin", store.begin(&f.zone.id)).await.unwrap();
    tx.insert_session(&good).await.unwrap();
    match tx.insert_session(&bad).await {
        Err(StoreError::Invalid(m)) => assert!(m.contains("sessions_application_fk"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(
        tx.bump_epoch().await.is_err(),
        "a statement after the failure ran"
    );
    assert!(
        tx.commit().await.is_err(),
        "an aborted unit of work committed"
    );
    assert_eq!(
        store
            .get_session(&f.zone.id, &good.agent_session_id)
            .await
            .unwrap(),
        None
    );

    // The duplicate id, a refusal the contract expects, does not abort the unit of work.
    let mut tx = within("begin", store.begin(&f.zone.id)).await.unwrap();
    tx.insert_session(&good).await.unwrap();
    match tx.insert_session(&good).await {
        Err(StoreError::Conflict { constraint }) => assert_eq!(constraint, "session_id"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    tx.commit().await.unwrap();
    assert!(
        store
            .get_session(&f.zone.id, &good.agent_session_id)
            .await
            .unwrap()
            .is_some()
    );
}

/// Errors say what failed without the values that failed: a rejected value is not echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_do_not_echo_values() {
    let Some(store) = store_on_shared("no_echo", options(2, Duration::from_secs(2))).await else {
        return;
    };
    let f = fixture(&store).await;
    let secret = "s3cr3t-value-that-must-not-leak";

    // A CHECK violation (a name over 200 characters).
    let mut app = f.app.clone();
    app.id = id();
    app.name = secret.repeat(10);
    let err = store.insert_application(&app).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(secret), "{err:?}");

    // A data exception: a receipt body that is not JSON.
    let t = now_ms();
    let receipt = IdempotencyReceipt {
        operation: IdempotentOperation::SessionStart,
        zone_id: f.zone.id.clone(),
        scope_id: f.app.id.clone(),
        key_digest: [7; 32],
        request_digest: [8; 32],
        result_id: id(),
        response_status: 201,
        response_json: format!("{{not json {secret}"),
        created_at: t,
        expires_at: t + chrono::Duration::hours(1),
    };
    let mut tx = within("begin", store.begin(&f.zone.id)).await.unwrap();
    let err = tx.put_receipt(&receipt).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(secret), "{err:?}");
}

/// A receipt replays the exact body that was first sent (jsonb would reorder keys and
/// respace it), with the id of what the request created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_replay_byte_for_byte() {
    let Some(store) = store_on_shared("receipt_bytes", options(2, Duration::from_secs(2))).await
    else {
        return;
    };
    let f = fixture(&store).await;
    let t = now_ms();
    let body = r#"{"zeta":1,"alpha":{"b":2.50,"a":[1,2]},"agent_session_id":"x"}"#;
    let receipt = IdempotencyReceipt {
        operation: IdempotentOperation::DelegationCreate,
        zone_id: f.zone.id.clone(),
        scope_id: f.app.id.clone(),
        key_digest: [1; 32],
        request_digest: [2; 32],
        result_id: id(),
        response_status: 201,
        response_json: body.into(),
        created_at: t,
        expires_at: t + chrono::Duration::hours(1),
    };
    let mut tx = within("begin", store.begin(&f.zone.id)).await.unwrap();
    tx.put_receipt(&receipt).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = within("begin", store.begin(&f.zone.id)).await.unwrap();
    let stored = tx
        .get_receipt(receipt.operation, &receipt.scope_id, &receipt.key_digest, t)
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), Some(&receipt));
    assert_eq!(stored.unwrap().response_json, body);
}

/// The database clock: `db_now` is the server's `now()`, and `PgClock` follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_the_clock() {
    let Some(store) = store_on_shared("db_clock", options(2, Duration::from_secs(2))).await else {
        return;
    };
    let db = store.db_now().await.unwrap();
    assert!((db - Utc::now()).num_seconds().abs() < 5, "{db}");
    let clock = PgClock::calibrate(store.clone()).await.unwrap();
    // Same machine: the offset is the measurement error, well under a second.
    assert!(
        clock.offset().num_milliseconds().abs() < 1000,
        "{:?}",
        clock.offset()
    );
    let before = store.db_now().await.unwrap();
    let read = clock.now();
    let after = store.db_now().await.unwrap();
    let slack = chrono::Duration::milliseconds(250);
    assert!(
        read + slack >= before && read - slack <= after,
        "{before} {read} {after}"
    );
    store.ping().await.unwrap();
}
