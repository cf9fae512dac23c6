//! The consumer loop against a real Redis, and the fault drill of issue 3: the Redis server
//! is SIGKILLed while the consumer is blocked in `XREADGROUP`, restarted from its AOF, and
//! the consumer reconnects, resumes from its pending list, and every entry is handled and
//! acknowledged exactly once.
//!
//! "Exactly once" under at-least-once delivery means, precisely:
//! - every produced entry is applied to the handler's durable record once (the handler is
//!   idempotent on the entry, as every real handler must be);
//! - the handler is never given an entry that was already acknowledged: at each call the
//!   entry is still in this consumer's pending list (a redelivery of an entry whose ack did
//!   not happen is allowed, and is the only kind of duplicate);
//! - no `XACK` acknowledges nothing (`stale_acks == 0`): nothing is acknowledged twice;
//! - at the end the group's pending list is empty and nothing is left undelivered.
#![cfg(feature = "redis")]
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caracal_core::backend::redis::{RedisConfig, RedisStreams};
use caracal_core::streams::consumer::{
    Consumer, ConsumerConfig, ConsumerHealth, Delivery, DeliveryKind, Handler, Outcome,
};
use caracal_core::streams::{EntryId, Fields, GroupStart, Streams};
use caracal_test_support::{EphemeralRedis, RedisOptions, SupportError, is_ci};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, timeout};

const GROUP: &str = "drill";
const ME: &str = "drill-worker-0";

/// An ephemeral Redis of this test's own (a drill must be able to kill it), with
/// `appendfsync always` so a SIGKILL loses no acknowledged write (with the production
/// `everysec` it could lose up to a second, which would make the drill measure fsync
/// timing, not the consumer).
fn own_redis(test: &str) -> Option<Arc<EphemeralRedis>> {
    let opts = RedisOptions {
        appendfsync: "always".into(),
        honour_env: false,
        ..RedisOptions::default()
    };
    match EphemeralRedis::start_with(opts) {
        Ok(server) => Some(Arc::new(server)),
        Err(SupportError::BinariesMissing { what, hint }) => {
            assert!(
                !is_ci(),
                "CI=true and redis-server is missing ({what}: {hint})"
            );
            eprintln!("SKIPPED: {test}: no redis-server ({what}: {hint}). This test did NOT run.");
            None
        }
        Err(e) => panic!("{test}: could not start redis-server: {e}"),
    }
}

fn streams_for(server: &EphemeralRedis) -> RedisStreams {
    let mut config = RedisConfig::new(server.url());
    config.pool_timeout = Duration::from_secs(1);
    config.connect_timeout = Duration::from_secs(1);
    config.response_timeout = Duration::from_secs(1);
    config.block_grace = Duration::from_secs(2);
    RedisStreams::connect(&config).expect("config")
}

/// What the handler saw for one call.
#[derive(Debug, Clone)]
struct Call {
    seq: u64,
    id: EntryId,
    deliveries: u64,
    kind: DeliveryKind,
    /// Whether the entry was in this consumer's pending list during the call.
    pending: bool,
}

/// The handler's durable record, and a log of every call.
#[derive(Default)]
struct Record {
    applied: BTreeMap<u64, EntryId>,
    calls: Vec<Call>,
}

/// Applies each entry (by its `seq` field) once. Entries whose `seq` is in `retry_once` are
/// left pending on their first delivery (`Outcome::Retry`). When `kill_on` is set, the first
/// call for that `seq` applies it, then waits for the test to kill the server before
/// returning `Ack`, so that acknowledgement is lost.
struct Drill {
    check: RedisStreams,
    stream: String,
    retry_once: BTreeSet<u64>,
    kill_on: Option<u64>,
    about_to_ack: Notify,
    killed: Notify,
    record: Mutex<Record>,
}

impl Drill {
    fn new(check: RedisStreams, stream: &str) -> Self {
        Self {
            check,
            stream: stream.to_owned(),
            retry_once: BTreeSet::new(),
            kill_on: None,
            about_to_ack: Notify::new(),
            killed: Notify::new(),
            record: Mutex::new(Record::default()),
        }
    }

    /// Whether `id` is in this consumer's pending list, asked over a separate connection
    /// (retried briefly: the server may be restarting).
    async fn is_pending(&self, id: EntryId) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self
                .check
                .pending_range(&self.stream, GROUP, id, id, 1, Some(ME))
                .await
            {
                Ok(p) => return p.len() == 1,
                Err(e) => {
                    assert!(Instant::now() < deadline, "pending check failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn applied(&self) -> BTreeMap<u64, EntryId> {
        self.record.lock().unwrap().applied.clone()
    }

    fn calls(&self) -> Vec<Call> {
        self.record.lock().unwrap().calls.clone()
    }
}

#[async_trait::async_trait]
impl Handler for Drill {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let Some(seq) = d.fields.get("seq").and_then(|s| s.parse::<u64>().ok()) else {
            return Outcome::DeadLetter {
                reason: "no seq".into(),
            };
        };
        let pending = self.is_pending(d.id).await;
        let first_call = {
            let mut r = self.record.lock().unwrap();
            let first_call = !r.calls.iter().any(|c| c.seq == seq);
            r.calls.push(Call {
                seq,
                id: d.id,
                deliveries: d.deliveries,
                kind: d.kind,
                pending,
            });
            first_call
        };
        if first_call && self.retry_once.contains(&seq) {
            return Outcome::Retry;
        }
        // The durable, idempotent effect.
        self.record
            .lock()
            .unwrap()
            .applied
            .entry(seq)
            .or_insert(d.id);
        if first_call && self.kill_on == Some(seq) {
            self.about_to_ack.notify_one();
            // Bounded: if the test never kills, the drill fails on its own assertions.
            let _ = timeout(Duration::from_secs(30), self.killed.notified()).await;
        }
        Outcome::Ack
    }
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn produce(s: &RedisStreams, stream: &str, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        s.xadd(stream, &Fields::new().with("seq", seq.to_string()))
            .await
            .expect("xadd while the server is up");
    }
}

fn consumer_config(stream: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(stream, GROUP, ME);
    c.batch = 10;
    // Long enough that the kill lands while a read is blocked.
    c.block = Duration::from_secs(5);
    // The reaper stays out of the drill: only the pending-list drain may redeliver.
    c.claim_idle = Duration::from_secs(3600);
    c.claim_interval = Duration::from_secs(3600);
    c.backoff_min = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(500);
    c.op_timeout = Duration::from_secs(3);
    c
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    health: ConsumerHealth,
}

fn start(streams: &RedisStreams, config: ConsumerConfig, handler: Arc<Drill>) -> Running {
    let consumer = Consumer::new(Arc::new(streams.clone()), config, handler).expect("config");
    let health = consumer.health();
    let (stop, rx) = watch::channel(false);
    Running {
        stop,
        task: consumer.spawn(rx),
        health,
    }
}

impl Running {
    async fn stop(self) -> ConsumerHealth {
        let _ = self.stop.send(true);
        timeout(Duration::from_secs(10), self.task)
            .await
            .expect("consumer stops promptly")
            .expect("consumer task");
        self.health
    }
}

async fn kill(server: &Arc<EphemeralRedis>) {
    let server = Arc::clone(server);
    timeout(
        Duration::from_secs(15),
        tokio::task::spawn_blocking(move || server.kill()),
    )
    .await
    .expect("kill is bounded")
    .expect("kill task")
    .expect("SIGKILL redis-server");
}

async fn restart(server: &Arc<EphemeralRedis>) {
    let server = Arc::clone(server);
    // `restart` waits for PING (AOF replay included) up to its startup timeout, 20 s; the
    // outer bound makes sure the test cannot hang if the server never comes back.
    timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || server.restart()),
    )
    .await
    .expect("restart is bounded")
    .expect("restart task")
    .expect("redis-server restarts from its AOF");
}

/// The checks every drill ends with.
async fn assert_exactly_once(
    s: &RedisStreams,
    stream: &str,
    drill: &Drill,
    health: &ConsumerHealth,
    produced: u64,
) {
    let applied = drill.applied();
    assert_eq!(
        applied.keys().copied().collect::<Vec<_>>(),
        (0..produced).collect::<Vec<_>>(),
        "every produced entry applied once"
    );
    let calls = drill.calls();
    let early: Vec<&Call> = calls.iter().filter(|c| !c.pending).collect();
    assert!(
        early.is_empty(),
        "the handler was given entries already acknowledged: {early:?}"
    );
    let stats = health.stats();
    assert_eq!(
        stats.stale_acks, 0,
        "an XACK acknowledged nothing: {stats:?}"
    );
    let summary = s.pending_summary(stream, GROUP).await.unwrap();
    assert_eq!(summary.count, 0, "pending list empty: {summary:?}");
    let group = s
        .groups(stream)
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.name == GROUP)
        .unwrap();
    let last = s
        .range(stream, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap()
        .last()
        .map(|e| e.id)
        .unwrap();
    assert_eq!(group.last_delivered, last, "nothing left undelivered");
}

/// SIGKILL during a blocked `XREADGROUP`: the consumer notices, reports unhealthy,
/// reconnects after the restart, re-drains its pending list (the entries it had left
/// pending before the kill come back from the AOF and are handled with their real delivery
/// count), and then carries on with new entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_during_a_blocked_read_loses_and_duplicates_nothing() {
    let Some(server) = own_redis("redis_killed_during_a_blocked_read") else {
        return;
    };
    let drill_started = Instant::now();
    let s = streams_for(&server);
    let stream = format!("drill:blocked:{}", uuid::Uuid::now_v7());
    s.group_create(&stream, GROUP, GroupStart::Latest)
        .await
        .unwrap();
    let mut drill = Drill::new(streams_for(&server), &stream);
    drill.retry_once = (0..100).filter(|n| n % 10 == 3).collect();
    let drill = Arc::new(drill);
    let run = start(&s, consumer_config(&stream), Arc::clone(&drill));

    // 1. A hundred entries; ten are left pending (Retry) on first delivery.
    produce(&s, &stream, 0..100).await;
    wait_until(
        "the first hundred handled",
        Duration::from_secs(20),
        async || drill.calls().len() == 100,
    )
    .await;
    wait_until("90 acks", Duration::from_secs(10), async || {
        run.health.stats().acked == 90
    })
    .await;
    assert_eq!(s.pending_summary(&stream, GROUP).await.unwrap().count, 10);
    assert!(run.health.is_healthy());
    // Nothing is left to read: the consumer is now blocked in XREADGROUP (BLOCK 5 s).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2. SIGKILL during the blocked read.
    let killed_at = Instant::now();
    kill(&server).await;
    wait_until(
        "unhealthy after the kill",
        Duration::from_secs(10),
        async || !run.health.is_healthy(),
    )
    .await;
    let noticed = killed_at.elapsed();
    // Down for a while: reconnect attempts fail and back off.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!run.health.is_healthy());

    // 3. Restart from the AOF: the group, its pending list and the ten retried entries are
    // all still there; the consumer reconnects and re-drains them.
    let restarted_at = Instant::now();
    restart(&server).await;
    wait_until(
        "healthy after the restart",
        Duration::from_secs(20),
        async || run.health.is_healthy(),
    )
    .await;
    let recovered = restarted_at.elapsed();
    wait_until(
        "the ten pending entries handled",
        Duration::from_secs(20),
        async || drill.applied().len() == 100,
    )
    .await;

    // 4. New entries after the restart flow as usual.
    produce(&s, &stream, 100..150).await;
    wait_until(
        "all 150 applied and acked",
        Duration::from_secs(20),
        async || drill.applied().len() == 150 && run.health.stats().acked == 150,
    )
    .await;
    let health = run.stop().await;

    // The ten retried entries came back from the pending list, delivered a second time.
    let calls = drill.calls();
    for seq in &drill.retry_once {
        let of: Vec<&Call> = calls.iter().filter(|c| c.seq == *seq).collect();
        assert_eq!(of.len(), 2, "seq {seq}: {of:?}");
        assert_eq!(of[0].kind, DeliveryKind::New);
        assert_eq!(of[1].kind, DeliveryKind::Pending);
        assert_eq!(of[1].deliveries, 2);
        assert_eq!(of[0].id, of[1].id);
    }
    // Every other entry was handed over exactly once.
    assert_eq!(calls.len(), 150 + drill.retry_once.len());
    assert!(health.stats().errors >= 1);
    assert_exactly_once(&s, &stream, &drill, &health, 150).await;
    eprintln!(
        "drill: kill noticed after {noticed:?}, healthy {recovered:?} after restart, \
         whole drill {:?}",
        drill_started.elapsed()
    );
}

/// SIGKILL after an entry was handled and before its `XACK`: the acknowledgement is lost,
/// so the entry is redelivered (the only duplicate at-least-once allows), the idempotent
/// handler does not apply it twice, and it is acknowledged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_before_an_ack_redelivers_only_that_entry() {
    let Some(server) = own_redis("redis_killed_before_an_ack") else {
        return;
    };
    let s = streams_for(&server);
    let stream = format!("drill:ack:{}", uuid::Uuid::now_v7());
    s.group_create(&stream, GROUP, GroupStart::Latest)
        .await
        .unwrap();
    let mut drill = Drill::new(streams_for(&server), &stream);
    drill.kill_on = Some(7);
    let drill = Arc::new(drill);
    let run = start(&s, consumer_config(&stream), Arc::clone(&drill));

    produce(&s, &stream, 0..20).await;
    timeout(Duration::from_secs(20), drill.about_to_ack.notified())
        .await
        .expect("the handler reached seq 7");
    kill(&server).await;
    drill.killed.notify_one();
    wait_until("unhealthy", Duration::from_secs(10), async || {
        !run.health.is_healthy()
    })
    .await;
    restart(&server).await;
    wait_until("all 20 acked", Duration::from_secs(30), async || {
        drill.applied().len() == 20
            && s.pending_summary(&stream, GROUP)
                .await
                .is_ok_and(|p| p.count == 0)
    })
    .await;
    let health = run.stop().await;

    let calls = drill.calls();
    let seven: Vec<&Call> = calls.iter().filter(|c| c.seq == 7).collect();
    assert_eq!(seven.len(), 2, "{seven:?}");
    assert_eq!(seven[1].kind, DeliveryKind::Pending);
    assert_eq!(seven[1].deliveries, 2);
    // The rest of the batch read with seq 7 was never handled before the kill, so it was
    // handed over once, from the pending list.
    for seq in (0..20).filter(|n| *n != 7) {
        assert_eq!(
            calls.iter().filter(|c| c.seq == seq).count(),
            1,
            "seq {seq}: {calls:?}"
        );
    }
    assert_exactly_once(&s, &stream, &drill, &health, 20).await;
}

/// The reaper on Redis: entries orphaned by a dead consumer (another name) are claimed once
/// idle, handed over with their real delivery count, and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_takes_over_a_dead_consumers_entries() {
    let Some(server) = own_redis("the_reaper_takes_over") else {
        return;
    };
    let s = streams_for(&server);
    let stream = format!("drill:reaper:{}", uuid::Uuid::now_v7());
    s.group_create(&stream, GROUP, GroupStart::Latest)
        .await
        .unwrap();
    produce(&s, &stream, 0..5).await;
    // A consumer that died after reading.
    let orphaned = s
        .read_group(
            &stream,
            GROUP,
            "dead-worker",
            caracal_core::streams::ReadFrom::New,
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(orphaned.len(), 5);
    let drill = Arc::new(Drill::new(streams_for(&server), &stream));
    let mut config = consumer_config(&stream);
    config.claim_idle = Duration::from_millis(300);
    config.claim_interval = Duration::from_millis(200);
    config.block = Duration::from_millis(200);
    let run = start(&s, config, Arc::clone(&drill));
    wait_until(
        "five claimed and acked",
        Duration::from_secs(10),
        async || run.health.stats().acked == 5,
    )
    .await;
    let health = run.stop().await;
    let calls = drill.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.kind == DeliveryKind::Claimed && c.deliveries == 2)
    );
    assert_eq!(health.stats().claimed, 5);
    assert_exactly_once(&s, &stream, &drill, &health, 5).await;
}
