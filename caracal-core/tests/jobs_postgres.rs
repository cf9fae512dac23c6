//! The background jobs on a real, migrated Postgres (and Redis for the publish side):
//!
//! - the leader-lock contract, held to the same checks on memory and Postgres;
//! - the sweeps and the retention cleaner, one scenario run on memory and on Postgres (the
//!   store methods they add are held to the same contract that way);
//! - two sweepers and two guarded runners on one database at once: each expired session is
//!   processed once (one revocation message per session, not two);
//! - two outbox relays on one database publish each row once (`FOR UPDATE SKIP LOCKED`);
//! - the restart proof of issue #6: a cascade revoke commits with no relay running (the
//!   process "dies" between commit and publish), a fresh relay after the restart publishes
//!   every row, and a consumer deduping on `outbox_id` sees each event once, even after a
//!   relay republished rows whose lease lapsed mid-publish.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod coordinator_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::json;

use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgLeaderLock, PgStore, PgStoreOptions};
use caracal_core::coordinator::{Caller, Coordinator, Limits};
use caracal_core::ids::UuidV7;
use caracal_core::jobs::{
    self, Job, JobRunner, JobsConfig, LeaseSweeper, PassOutcome, RetentionCleaner, TtlSweeper,
};
use caracal_core::model::delegation::EdgeStatus;
use caracal_core::model::session::{Lifecycle, Session, SessionStatus};
use caracal_core::store::coordinator::{IdempotencyReceipt, IdempotentOperation};
use caracal_core::store::leader::LeaderLock;
use caracal_core::store::memory::{MemoryLeaderLock, MemoryStore};
use caracal_core::store::outbox::OutboxStore;
use caracal_core::streams::names::{AGENTS_LIFECYCLE, DELEGATIONS_INVALIDATE, SESSIONS_REVOKE};
use caracal_test_support::{connect, postgres_or_skip};
use coordinator_support::*;

/// A fresh migrated database; `None` when Postgres is unavailable (the test prints SKIPPED).
async fn database(test: &str) -> Option<String> {
    let pg = postgres_or_skip(test)?;
    let url = pg.create_database(test).await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    Some(url)
}

async fn pg_store(url: &str) -> PgStore {
    PgStore::open(url, PgStoreOptions::default()).await.unwrap()
}

/// Postgres keeps microseconds; whole milliseconds round-trip exactly.
fn now_ms() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(Duration::milliseconds(1))
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Leader locks
// ---------------------------------------------------------------------------------------

/// The contract of `LeaderLock`, for two contenders `a` and `b` (two replicas).
async fn leader_lock_contract(a: &dyn LeaderLock, b: &dyn LeaderLock) {
    let job = "contract-job";
    // Two contenders at once: exactly one wins.
    let (ga, gb) = tokio::join!(a.try_acquire(job), b.try_acquire(job));
    let (ga, gb) = (ga.unwrap(), gb.unwrap());
    assert!(ga.is_some() != gb.is_some(), "exactly one contender wins");
    let (mut winner, loser) = match (ga, gb) {
        (Some(g), None) => (g, b),
        (None, Some(g)) => (g, a),
        _ => unreachable!(),
    };
    assert_eq!(winner.job(), job);
    assert!(winner.verify().await);
    // The loser keeps losing while the lock is held; other jobs are independent.
    assert!(loser.try_acquire(job).await.unwrap().is_none());
    let other = loser.try_acquire("another-job").await.unwrap().unwrap();
    // Release → the other can win.
    winner.release().await;
    let g = loser
        .try_acquire(job)
        .await
        .unwrap()
        .expect("free after release");
    other.release().await;
    // Drop (no explicit release) frees it too; Postgres releases when the retired session
    // ends on the server, so give it a moment.
    drop(g);
    let again = acquire_within(a, job, StdDuration::from_secs(10)).await;
    again.release().await;
}

/// Poll `lock` for `job` every 20 ms until it is acquired, failing after `limit`.
async fn acquire_within(
    lock: &dyn LeaderLock,
    job: &str,
    limit: StdDuration,
) -> caracal_core::store::leader::LeaderGuard {
    tokio::time::timeout(limit, async {
        loop {
            if let Some(g) = lock.try_acquire(job).await.unwrap() {
                break g;
            }
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{job}: not acquired within {limit:?}"))
}

#[tokio::test]
async fn leader_lock_contract_on_memory() {
    let a = MemoryLeaderLock::new();
    let b = a.clone();
    leader_lock_contract(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_lock_contract_on_postgres() {
    let Some(url) = database("jobs_leader_contract").await else {
        return;
    };
    // Two replicas: two pools.
    let a = PgLeaderLock::new(pg_store(&url).await);
    let b = PgLeaderLock::new(pg_store(&url).await);
    leader_lock_contract(&a, &b).await;

    // A lost connection releases the lock: kill the holder's backend from outside.
    let g = a.try_acquire("killed").await.unwrap().unwrap();
    assert!(b.try_acquire("killed").await.unwrap().is_none());
    let admin = connect(&url).await.unwrap();
    let key = caracal_core::store::leader::job_lock_key("killed");
    // pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low 32).
    let (hi, lo) = (i64::from((key >> 32) as u32), i64::from(key as u32));
    let killed = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
               AND classid::bigint = $1 AND objid::bigint = $2",
            &[&hi, &lo],
        )
        .await
        .unwrap();
    assert_eq!(killed.get::<_, i64>("n"), 1);
    let taken = acquire_within(&b, "killed", StdDuration::from_secs(10)).await;
    taken.release().await;
    let mut g = g;
    assert!(!g.verify().await, "the holder notices it lost the lock");
}

// ---------------------------------------------------------------------------------------
// The jobs on both stores
// ---------------------------------------------------------------------------------------

async fn start<S: AllStores + 'static>(
    f: &Fx<S>,
    lifecycle: Lifecycle,
    ttl: Option<i64>,
    parent: Option<&Session>,
    at: DateTime<Utc>,
) -> Session {
    let mut req = f.start_req(&f.app_a, &f.rec_a);
    req.lifecycle = lifecycle;
    req.ttl_seconds = ttl;
    req.parent_id = parent.map(|p| p.agent_session_id.clone());
    f.co.start_session(&f.zone, &Caller::operator(), &req, at)
        .await
        .unwrap()
        .session
}

async fn status<S: AllStores + 'static>(f: &Fx<S>, s: &Session) -> Option<SessionStatus> {
    f.store
        .get_session(&f.zone, &s.agent_session_id)
        .await
        .unwrap()
        .map(|s| s.status)
}

/// The jobs' scenario, on any store: TTL expiry, lease sweep, edge expiry, retention.
async fn jobs_scenario<S: AllStores + 'static>(store: Arc<S>) {
    let t0 = now_ms();
    let f = Fx::new(store, t0, Limits::default()).await;
    let config = JobsConfig::default();
    let b = f.task_b().await;

    // TTL: a root (60 s) with a child and an inbound edge.
    let root = start(&f, Lifecycle::Task, Some(60), None, t0).await;
    let child = start(&f, Lifecycle::Task, Some(3600), Some(&root), t0).await;
    let inbound = f.edge(&f.edge_req(&b, &root, &["read"], json!({}))).await;
    f.outbox().await;
    let ttl = TtlSweeper::new(f.co.clone(), config.clone());
    assert!(
        ttl.run_once(t0 + Duration::seconds(59))
            .await
            .unwrap()
            .is_idle()
    );
    let r = ttl.run_once(t0 + Duration::seconds(60)).await.unwrap();
    assert_eq!(r.get(jobs::ttl::COUNT_EXPIRED), 1, "{r:?}");
    assert_eq!(r.get(jobs::ttl::COUNT_TERMINATED), 2, "{r:?}");
    assert_eq!(status(&f, &root).await, Some(SessionStatus::Expired));
    assert_eq!(status(&f, &child).await, Some(SessionStatus::Terminated));
    let e = f
        .store
        .get_edge(&f.zone, &inbound.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.status, EdgeStatus::Revoked);
    let rows = f.outbox().await;
    let revokes: Vec<_> = rows
        .iter()
        .filter(|r| r.message.stream == SESSIONS_REVOKE)
        .collect();
    assert_eq!(revokes.len(), 2);
    assert!(revokes.iter().all(|r| field(r, "reason") == Some("ttl")));
    assert!(
        ttl.run_once(t0 + Duration::seconds(61))
            .await
            .unwrap()
            .is_idle()
    );

    // Lease: a service root and its service child lapse together; a fresh one does not.
    let svc = start(&f, Lifecycle::Service, None, None, t0).await;
    let svc_child = start(
        &f,
        Lifecycle::Service,
        None,
        Some(&svc),
        t0 + Duration::seconds(1),
    )
    .await;
    let fresh = start(
        &f,
        Lifecycle::Service,
        None,
        None,
        t0 + Duration::seconds(50),
    )
    .await;
    f.outbox().await;
    let lease = LeaseSweeper::new(f.co.clone(), config.clone());
    let r = lease.run_once(t0 + Duration::seconds(121)).await.unwrap();
    assert_eq!(r.get(jobs::lease::COUNT_LAPSED), 1, "{r:?}");
    assert_eq!(r.get(jobs::lease::COUNT_SUSPENDED), 2, "{r:?}");
    assert_eq!(status(&f, &svc).await, Some(SessionStatus::Suspended));
    assert_eq!(status(&f, &svc_child).await, Some(SessionStatus::Suspended));
    assert_eq!(status(&f, &fresh).await, Some(SessionStatus::Active));
    let rows = f.outbox().await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.message.stream == SESSIONS_REVOKE
                && field(r, "reason") == Some("service_heartbeat_lost"))
            .count(),
        2
    );

    // Edge expiry: b → a live task, 600 s.
    let target = start(&f, Lifecycle::Task, Some(86_400), None, t0).await;
    let short = f.edge(&f.edge_req(&b, &target, &["read"], json!({}))).await;
    f.outbox().await;
    let epoch = f.store.graph_epoch(&f.zone).await.unwrap();
    let cleaner = RetentionCleaner::new(f.co.clone(), f.store.clone(), config.clone());
    let r = cleaner.run_once(t0 + Duration::seconds(600)).await.unwrap();
    assert_eq!(r.get(jobs::retention::COUNT_EDGES_EXPIRED), 1, "{r:?}");
    let e = f.store.get_edge(&f.zone, &short.id).await.unwrap().unwrap();
    assert_eq!(e.status, EdgeStatus::Expired);
    assert_eq!(f.store.graph_epoch(&f.zone).await.unwrap(), epoch + 1);
    let rows = f.outbox().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].message.stream, DELEGATIONS_INVALIDATE);
    assert_eq!(field(&rows[0], "event"), Some("edge_expire"));
    assert_eq!(
        field(&rows[0], "epoch"),
        Some((epoch + 1).to_string().as_str())
    );

    // Retention: a row that stays pending, a receipt that expired, one that did not.
    let pending_id = f
        .store
        .enqueue(
            &caracal_core::store::outbox::OutboxMessage::new(
                AGENTS_LIFECYCLE,
                vec![("k".into(), "v".into())],
            ),
            t0,
        )
        .await
        .unwrap();
    let receipt = |expires: DateTime<Utc>, key: u8| IdempotencyReceipt {
        operation: IdempotentOperation::SessionStart,
        zone_id: f.zone.clone(),
        scope_id: f.app_a.clone(),
        key_digest: [key; 32],
        request_digest: [0; 32],
        result_id: target.agent_session_id.clone(),
        response_status: 201,
        response_json: "{}".into(),
        created_at: t0,
        expires_at: expires,
    };
    let mut tx = f.store.begin(&f.zone).await.unwrap();
    tx.put_receipt(&receipt(t0 + Duration::hours(1), 1))
        .await
        .unwrap();
    tx.put_receipt(&receipt(t0 + Duration::days(365), 2))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The rows `f.outbox()` claimed are leased, not dispatched: a claim far past their
    // lease finds them all again; mark every one but the pending row dispatched.
    let leased = f
        .store
        .claim(
            "test",
            10_000,
            Duration::hours(1),
            t0 + Duration::days(4000),
        )
        .await
        .unwrap();
    for row in leased.iter().filter(|r| r.id != pending_id) {
        f.store
            .mark_dispatched(&row.id, t0 + Duration::seconds(700))
            .await
            .unwrap();
    }
    f.store
        .mark_failed(&pending_id, "down", Some(t0 + Duration::days(5000)), t0)
        .await
        .unwrap();
    let published = leased.len() as u64 - 1;

    let r = cleaner.run_once(t0 + Duration::days(8)).await.unwrap();
    assert_eq!(
        r.get(jobs::retention::COUNT_OUTBOX_DELETED),
        published,
        "{r:?}"
    );
    assert_eq!(r.get(jobs::retention::COUNT_RECEIPTS_DELETED), 1, "{r:?}");
    assert_eq!(r.get(jobs::retention::COUNT_SESSIONS_DELETED), 0, "{r:?}");
    assert_eq!(r.get(jobs::retention::COUNT_EDGES_DELETED), 0, "{r:?}");
    assert!(f.store.get_outbox(&pending_id).await.unwrap().is_some());

    // 91 days on: the revoked and expired edges go, the childless terminated child goes,
    // its parent on the next pass; live and suspended sessions stay.
    let later = t0 + Duration::days(91);
    let r = cleaner.run_once(later).await.unwrap();
    assert_eq!(r.get(jobs::retention::COUNT_EDGES_DELETED), 2, "{r:?}");
    assert_eq!(r.get(jobs::retention::COUNT_SESSIONS_DELETED), 1, "{r:?}");
    assert!(
        f.store
            .get_edge(&f.zone, &inbound.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.store
            .get_edge(&f.zone, &short.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(status(&f, &child).await, None);
    assert_eq!(status(&f, &root).await, Some(SessionStatus::Expired));
    let r = cleaner.run_once(later).await.unwrap();
    assert_eq!(r.get(jobs::retention::COUNT_SESSIONS_DELETED), 1, "{r:?}");
    assert_eq!(status(&f, &root).await, None);
    for s in [&b, &svc, &svc_child, &fresh, &target] {
        assert!(status(&f, s).await.is_some());
    }
    let mut tx = f.store.begin(&f.zone).await.unwrap();
    assert!(
        tx.get_receipt(IdempotentOperation::SessionStart, &f.app_a, &[2; 32], later)
            .await
            .unwrap()
            .is_some()
    );
    drop(tx);
    assert!(cleaner.run_once(later).await.unwrap().is_idle());
}

#[tokio::test]
async fn jobs_scenario_on_memory() {
    jobs_scenario(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_scenario_on_postgres() {
    let Some(url) = database("jobs_scenario").await else {
        return;
    };
    jobs_scenario(Arc::new(pg_store(&url).await)).await;
}

// ---------------------------------------------------------------------------------------
// Two replicas at once
// ---------------------------------------------------------------------------------------

/// A Coordinator of a second replica: its own pool on the same database.
fn replica(store: &Arc<PgStore>) -> Coordinator {
    Coordinator::new(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        Arc::new(UuidV7),
    )
}

/// `caracal.sessions.revoke` rows per `agent_session_id`.
async fn revocations_per_session(f: &Fx<PgStore>) -> BTreeMap<String, usize> {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for r in f.outbox().await {
        if r.message.stream == SESSIONS_REVOKE {
            *per.entry(field(&r, "agent_session_id").unwrap().to_owned())
                .or_default() += 1;
        }
    }
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sweepers_and_two_runners_process_each_session_once() {
    let Some(url) = database("jobs_two_sweepers").await else {
        return;
    };
    let t0 = now_ms();
    let f = Fx::new(Arc::new(pg_store(&url).await), t0, Limits::default()).await;
    let other = Arc::new(pg_store(&url).await);
    let config = JobsConfig {
        batch: 4, // several batches per pass, so the two passes interleave
        ..JobsConfig::default()
    };

    // Round 1: two bare sweepers (no leader lock), different `now`s, so a session handled
    // twice would carry two revocation messages (their dedupe keys hold the instant).
    let mut ids = BTreeSet::new();
    for _ in 0..12 {
        ids.insert(
            start(&f, Lifecycle::Task, Some(1), None, t0)
                .await
                .agent_session_id,
        );
    }
    f.outbox().await;
    let s1 = TtlSweeper::new(f.co.clone(), config.clone());
    let s2 = TtlSweeper::new(replica(&other), config.clone());
    let (r1, r2) = tokio::join!(
        s1.run_once(t0 + Duration::seconds(10)),
        s2.run_once(t0 + Duration::seconds(11))
    );
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(
        r1.get(jobs::ttl::COUNT_EXPIRED) + r2.get(jobs::ttl::COUNT_EXPIRED),
        12,
        "{r1:?} {r2:?}"
    );
    let per = revocations_per_session(&f).await;
    assert_eq!(per.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(
        per.values().all(|n| *n == 1),
        "one revocation per session: {per:?}"
    );

    // Round 2: two guarded runners sharing Postgres leader locks.
    let mut ids = BTreeSet::new();
    for _ in 0..12 {
        ids.insert(
            start(
                &f,
                Lifecycle::Task,
                Some(1),
                None,
                t0 + Duration::seconds(20),
            )
            .await
            .agent_session_id,
        );
    }
    f.outbox().await;
    let clock1: caracal_core::clock::SharedClock = Arc::new(caracal_core::clock::FakeClock::new(
        t0 + Duration::seconds(40),
    ));
    let clock2: caracal_core::clock::SharedClock = Arc::new(caracal_core::clock::FakeClock::new(
        t0 + Duration::seconds(41),
    ));
    let runner1 = JobRunner::new(
        f.co.clone(),
        f.store.clone(),
        Arc::new(PgLeaderLock::new((*f.store).clone())),
        clock1,
        config.clone(),
    );
    let runner2 = JobRunner::new(
        replica(&other),
        other.clone(),
        Arc::new(PgLeaderLock::new((*other).clone())),
        clock2,
        config.clone(),
    );
    let (p1, p2) = tokio::join!(
        runner1.run_pass_named(jobs::TTL_SWEEPER),
        runner2.run_pass_named(jobs::TTL_SWEEPER)
    );
    let expired: u64 = [p1.unwrap(), p2.unwrap()]
        .iter()
        .map(|p| match &p.outcome {
            PassOutcome::Ran(r) => r.get(jobs::ttl::COUNT_EXPIRED),
            PassOutcome::NotLeader => 0,
            PassOutcome::Failed(e) => panic!("pass failed: {e}"),
        })
        .sum();
    assert_eq!(expired, 12);
    let per = revocations_per_session(&f).await;
    assert_eq!(per.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(
        per.values().all(|n| *n == 1),
        "one revocation per session: {per:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Publishing: two relays, and the restart proof (Postgres + Redis)
// ---------------------------------------------------------------------------------------

#[cfg(feature = "redis")]
mod publish {
    use super::*;

    use caracal_core::backend::redis::{RedisConfig, RedisStreams};
    use caracal_core::clock::{FakeClock, SharedClock, SystemClock};
    use caracal_core::store::outbox::OutboxMessage;
    use caracal_core::streams::dedupe::{OUTBOX_ID_FIELD, RecentIds};
    use caracal_core::streams::relay::{OutboxRelay, RelayConfig};
    use caracal_core::streams::signature::{SigPolicy, StreamKey};
    use caracal_core::streams::{EntryId, StreamEntry, Streams};
    use caracal_test_support::redis_or_skip;

    fn sig() -> SigPolicy {
        SigPolicy::Verify(StreamKey::from_hex(&"0123456789abcdef".repeat(4)).unwrap())
    }

    fn streams(url: &str) -> Arc<RedisStreams> {
        Arc::new(RedisStreams::connect(&RedisConfig::new(url)).unwrap())
    }

    fn relay(
        outbox: Arc<dyn OutboxStore>,
        streams: Arc<RedisStreams>,
        clock: SharedClock,
        worker: &str,
        batch: u32,
    ) -> OutboxRelay {
        let mut config = RelayConfig::new(worker);
        config.batch = batch;
        OutboxRelay::new(outbox, streams, sig(), clock, config)
    }

    /// Run `relay` passes until the outbox has nothing pending (bounded).
    async fn publish_all(relay: &OutboxRelay, outbox: &dyn OutboxStore, now: DateTime<Utc>) {
        tokio::time::timeout(StdDuration::from_secs(60), async {
            loop {
                let r = relay.run_once().await.unwrap();
                assert_eq!(r.failed, 0);
                if r.published == 0 && outbox.outbox_stats(now).await.unwrap().pending == 0 {
                    break;
                }
            }
        })
        .await
        .expect("the relay drains the outbox within 60 s");
    }

    async fn entries(s: &RedisStreams, stream: &str) -> Vec<StreamEntry> {
        s.range(stream, EntryId::MIN, EntryId::MAX, None)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_relays_never_publish_a_row_twice() {
        let Some(url) = database("jobs_two_relays").await else {
            return;
        };
        let Some(redis) = redis_or_skip("two_relays_never_publish_a_row_twice") else {
            return;
        };
        let stream = "caracal.test.relay";
        let a = Arc::new(pg_store(&url).await);
        let b = Arc::new(pg_store(&url).await);
        let at = Utc::now() - Duration::seconds(1);
        let mut ids = BTreeSet::new();
        for i in 0..300 {
            let m = OutboxMessage::new(stream, vec![("n".into(), i.to_string())]);
            ids.insert(a.enqueue(&m, at).await.unwrap());
        }
        let clock: SharedClock = Arc::new(SystemClock);
        let r1 = relay(
            a.clone(),
            streams(&redis.url()),
            clock.clone(),
            "relay-1",
            7,
        );
        let r2 = relay(
            b.clone(),
            streams(&redis.url()),
            clock.clone(),
            "relay-2",
            7,
        );
        let (c1, c2) = tokio::join!(
            async {
                let mut n = 0;
                loop {
                    let r = r1.run_once().await.unwrap();
                    if r.published == 0 {
                        break n;
                    }
                    n += r.published;
                }
            },
            async {
                let mut n = 0;
                loop {
                    let r = r2.run_once().await.unwrap();
                    if r.published == 0 {
                        break n;
                    }
                    n += r.published;
                }
            }
        );
        assert_eq!(c1 + c2, 300);
        assert!(c1 > 0 && c2 > 0, "both relays took part ({c1} / {c2})");
        let s = streams(&redis.url());
        let got = entries(&s, stream).await;
        assert_eq!(got.len(), 300, "no row published twice");
        let seen: BTreeSet<String> = got
            .iter()
            .map(|e| e.fields.get(OUTBOX_ID_FIELD).unwrap().to_owned())
            .collect();
        assert_eq!(seen, ids);
        assert_eq!(a.outbox_stats(Utc::now()).await.unwrap().pending, 0);
    }

    /// Every stream the outbox holds rows for.
    async fn outbox_streams(url: &str) -> Vec<String> {
        let client = connect(url).await.unwrap();
        client
            .query("SELECT DISTINCT stream FROM outbox ORDER BY stream", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>("stream"))
            .collect()
    }

    /// Logical events by `outbox_id`: `(stream, fields)`.
    type Logical = BTreeMap<String, (String, Vec<(String, String)>)>;

    /// What a deduping consumer makes of `streams`: the logical events (by `outbox_id`,
    /// every `_sig` verified) and the raw entry count.
    async fn consume(s: &RedisStreams, streams: &[String]) -> (Logical, usize) {
        let mut window = RecentIds::new(10_000);
        let mut logical = BTreeMap::new();
        let mut raw = 0;
        for stream in streams {
            let stream = stream.as_str();
            for e in entries(s, stream).await {
                raw += 1;
                sig().check(stream, e.fields.iter()).unwrap();
                if window.accept(&e.fields) {
                    let id = e.fields.get(OUTBOX_ID_FIELD).unwrap().to_owned();
                    let fields = e
                        .fields
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    assert!(logical.insert(id, (stream.to_owned(), fields)).is_none());
                }
            }
        }
        (logical, raw)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outbox_rows_committed_before_a_crash_publish_after_restart_once_per_consumer() {
        let Some(url) = database("jobs_restart").await else {
            return;
        };
        let Some(redis) = redis_or_skip("outbox_restart") else {
            return;
        };
        // "Before the crash": the Coordinator commits a cascade revoke; no relay runs, so
        // every row stays pending (the kill between commit and publish).
        let t0 = now_ms();
        let before = Arc::new(pg_store(&url).await);
        let f = Fx::new(before.clone(), t0, Limits::default()).await;
        let b = f.task_b().await;
        let root = start(&f, Lifecycle::Task, Some(3600), None, t0).await;
        let child = start(&f, Lifecycle::Task, Some(3600), Some(&root), t0).await;
        let e1 = f
            .edge(&f.edge_req(&b, &root, &["read", "write"], json!({"max_hops": 3})))
            .await;
        let outcome =
            f.co.revoke_delegation(&f.zone, &Caller::operator(), &e1.id, t0)
                .await
                .unwrap();
        let mut terminated = outcome.terminated_sessions.clone();
        terminated.sort();
        let mut want = vec![
            root.agent_session_id.clone(),
            child.agent_session_id.clone(),
        ];
        want.sort();
        assert_eq!(terminated, want);
        let pending = before.outbox_stats(Utc::now()).await.unwrap().pending;
        assert!(pending > 0);
        drop(f);
        drop(before); // the process dies: its pool goes with it

        // "After the restart": a fresh pool and a fresh relay publish every row.
        let after = Arc::new(pg_store(&url).await);
        let s = streams(&redis.url());
        let clock: SharedClock = Arc::new(SystemClock);
        let fresh = relay(after.clone(), s.clone(), clock, "after-restart", 5);
        publish_all(&fresh, after.as_ref(), Utc::now()).await;
        let names = outbox_streams(&url).await;
        assert!(names.iter().any(|n| n == SESSIONS_REVOKE));
        let (logical, raw) = consume(&s, &names).await;
        assert_eq!(
            logical.len() as u64,
            pending,
            "every committed row was published"
        );
        assert_eq!(raw as u64, pending, "each once");
        // The cascade's events are among them: one revocation per terminated session
        // naming the revoked edge, and the edge_revoke with the new epoch.
        for sid in &terminated {
            let n = logical
                .values()
                .filter(|(stream, fields)| {
                    stream == SESSIONS_REVOKE
                        && fields.contains(&("agent_session_id".to_owned(), sid.clone()))
                        && fields.contains(&("delegation_edge_id".to_owned(), e1.id.clone()))
                })
                .count();
            assert_eq!(n, 1, "one revocation for {sid}");
        }
        assert!(logical.values().any(|(stream, fields)| {
            stream == DELEGATIONS_INVALIDATE
                && fields.contains(&("event".to_owned(), "edge_revoke".to_owned()))
                && fields.contains(&("epoch".to_owned(), outcome.epoch.to_string()))
        }));

        // At least once: a relay claims new rows, publishes them and dies before marking
        // them (its lease lapses); the next relay republishes them under the same
        // outbox_id. The deduping consumer still sees each logical event once.
        let f2 = Fx::new(after.clone(), t0, Limits::default()).await;
        let victim = start(&f2, Lifecycle::Task, Some(3600), None, t0).await;
        f2.co
            .terminate(
                &f2.zone,
                &Caller::operator(),
                &victim.agent_session_id,
                "requested",
                None,
                t0,
            )
            .await
            .unwrap();
        let new_rows = after.outbox_stats(Utc::now()).await.unwrap().pending;
        // A second ahead of the database's stamps of the new rows.
        let now = Utc::now() + Duration::seconds(1);
        let dying = relay(
            after.clone(),
            s.clone(),
            Arc::new(FakeClock::new(now)),
            "dying",
            100,
        );
        let claimed = after
            .claim("dying", 100, Duration::seconds(30), now)
            .await
            .unwrap();
        assert_eq!(claimed.len() as u64, new_rows);
        for row in &claimed {
            s.xadd(&row.message.stream, &dying.frame(row))
                .await
                .unwrap();
        }
        // (no mark_dispatched: the process died here)
        let late = Arc::new(FakeClock::new(now + Duration::seconds(31)));
        let next = relay(after.clone(), s.clone(), late, "next", 100);
        publish_all(&next, after.as_ref(), now + Duration::seconds(31)).await;
        let names = outbox_streams(&url).await;
        let (logical2, raw2) = consume(&s, &names).await;
        assert_eq!(logical2.len() as u64, pending + new_rows);
        assert_eq!(
            raw2 as u64,
            pending + 2 * new_rows,
            "the lapsed rows were published twice"
        );
        for row in &claimed {
            assert!(logical2.contains_key(&row.id));
            assert!(
                after
                    .get_outbox(&row.id)
                    .await
                    .unwrap()
                    .unwrap()
                    .dispatched_at
                    .is_some()
            );
        }
    }
}
