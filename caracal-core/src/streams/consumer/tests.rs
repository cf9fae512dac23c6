//! The consumer loop on `MemoryStreams`, with a fault-injecting wrapper for the failure paths.

use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::Duration;

use super::*;
use crate::streams::{
    AutoClaim, GroupInfo, MemoryStreams, PendingEntry, PendingSummary, StreamResult, Trim,
};

const STREAM: &str = "caracal.test.events";
const GROUP: &str = "g";
const ME: &str = "worker-0";

/// `MemoryStreams` with switchable faults.
#[derive(Default)]
struct Faulty {
    inner: MemoryStreams,
    /// Fail every XADD to a dead-letter stream (`.dead`) with a retryable error.
    fail_dead_letters: AtomicBool,
    /// Fail this many `read_group` calls, then work again.
    fail_reads: AtomicU32,
    /// `eviction_policy` never answers.
    hang_eviction: bool,
}

fn unavailable() -> StreamError {
    StreamError::Unavailable {
        reason: "injected fault".into(),
    }
}

#[async_trait::async_trait]
impl Streams for Faulty {
    async fn xadd_with(&self, stream: &str, fields: &Fields, trim: Trim) -> StreamResult<EntryId> {
        if stream.ends_with(names::DEAD_LETTER_SUFFIX)
            && self.fail_dead_letters.load(Ordering::SeqCst)
        {
            return Err(unavailable());
        }
        self.inner.xadd_with(stream, fields, trim).await
    }
    async fn len(&self, stream: &str) -> StreamResult<u64> {
        self.inner.len(stream).await
    }
    async fn range(
        &self,
        stream: &str,
        start: EntryId,
        end: EntryId,
        count: Option<usize>,
    ) -> StreamResult<Vec<StreamEntry>> {
        self.inner.range(stream, start, end, count).await
    }
    async fn del(&self, stream: &str, ids: &[EntryId]) -> StreamResult<u64> {
        self.inner.del(stream, ids).await
    }
    async fn stream_exists(&self, stream: &str) -> StreamResult<bool> {
        self.inner.stream_exists(stream).await
    }
    async fn group_create(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> StreamResult<GroupCreated> {
        self.inner.group_create(stream, group, start).await
    }
    async fn groups(&self, stream: &str) -> StreamResult<Vec<GroupInfo>> {
        self.inner.groups(stream).await
    }
    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        from: ReadFrom,
        count: usize,
        block: Option<Duration>,
    ) -> StreamResult<Vec<StreamEntry>> {
        let failing = self
            .fail_reads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(unavailable());
        }
        self.inner
            .read_group(stream, group, consumer, from, count, block)
            .await
    }
    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StreamResult<u64> {
        self.inner.ack(stream, group, ids).await
    }
    async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: EntryId,
        count: usize,
    ) -> StreamResult<AutoClaim> {
        self.inner
            .autoclaim(stream, group, consumer, min_idle, start, count)
            .await
    }
    async fn pending_summary(&self, stream: &str, group: &str) -> StreamResult<PendingSummary> {
        self.inner.pending_summary(stream, group).await
    }
    async fn pending_range(
        &self,
        stream: &str,
        group: &str,
        start: EntryId,
        end: EntryId,
        count: usize,
        consumer: Option<&str>,
    ) -> StreamResult<Vec<PendingEntry>> {
        self.inner
            .pending_range(stream, group, start, end, count, consumer)
            .await
    }
    async fn eviction_policy(&self) -> StreamResult<Option<String>> {
        if self.hang_eviction {
            std::future::pending::<()>().await;
        }
        Ok(Some("allkeys-lru".into()))
    }
}

type Decide = Box<dyn Fn(&Delivery) -> Outcome + Send + Sync>;

/// Records every delivery; the outcome comes from `decide`. While handling, it checks that
/// the entry is still pending: nothing is acknowledged before its handler returns.
struct Recorder {
    streams: Arc<Faulty>,
    decide: Decide,
    seen: Mutex<Vec<(EntryId, u64, DeliveryKind)>>,
    acked_early: AtomicBool,
}

impl Recorder {
    fn new(
        streams: &Arc<Faulty>,
        decide: impl Fn(&Delivery) -> Outcome + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            streams: Arc::clone(streams),
            decide: Box::new(decide),
            seen: Mutex::new(Vec::new()),
            acked_early: AtomicBool::new(false),
        })
    }

    fn seen(&self) -> Vec<(EntryId, u64, DeliveryKind)> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let pending = self
            .streams
            .pending_range(STREAM, GROUP, d.id, d.id, 1, Some(ME))
            .await
            .unwrap();
        if pending.len() != 1 || pending[0].deliveries != d.deliveries {
            self.acked_early.store(true, Ordering::SeqCst);
        }
        self.seen.lock().unwrap().push((d.id, d.deliveries, d.kind));
        (self.decide)(d)
    }
}

fn config() -> ConsumerConfig {
    let mut c = ConsumerConfig::new(STREAM, GROUP, ME);
    c.block = Duration::from_millis(50);
    c.claim_idle = Duration::from_millis(100);
    c.claim_interval = Duration::from_millis(100);
    c.backoff_min = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(50);
    c.op_timeout = Duration::from_secs(5);
    c
}

async fn setup(streams: Faulty) -> Arc<Faulty> {
    let streams = Arc::new(streams);
    streams
        .group_create(STREAM, GROUP, GroupStart::Beginning)
        .await
        .unwrap();
    streams
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    health: ConsumerHealth,
}

fn start(streams: &Arc<Faulty>, handler: Arc<dyn Handler>, config: ConsumerConfig) -> Running {
    let consumer = Consumer::new(Arc::clone(streams) as Arc<dyn Streams>, config, handler).unwrap();
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
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("consumer stops promptly")
            .unwrap();
        assert!(!self.health.is_healthy(), "a stopped consumer is not ready");
        self.health
    }
}

async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn one(k: &str, v: &str) -> Fields {
    Fields::new().with(k, v)
}

async fn pending(s: &Faulty) -> u64 {
    s.pending_summary(STREAM, GROUP).await.unwrap().count
}

#[tokio::test]
async fn acks_only_after_the_handler_returns_ack() {
    let s = setup(Faulty::default()).await;
    let h = Recorder::new(&s, |_| Outcome::Ack);
    let run = start(&s, h.clone(), config());
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(s.xadd(STREAM, &one("n", &i.to_string())).await.unwrap());
    }
    wait_until("three acks", async || run.health.stats().acked == 3).await;
    assert!(run.health.is_healthy());
    let seen = h.seen();
    assert_eq!(
        seen,
        ids.iter()
            .map(|id| (*id, 1, DeliveryKind::New))
            .collect::<Vec<_>>()
    );
    assert!(!h.acked_early.load(Ordering::SeqCst));
    assert_eq!(pending(&s).await, 0);
    let health = run.stop().await;
    assert_eq!(health.stats().handled, 3);
}

#[tokio::test]
async fn retry_leaves_pending_and_the_reaper_redelivers_with_a_higher_count() {
    let s = setup(Faulty::default()).await;
    let h = Recorder::new(&s, |d| {
        if d.deliveries == 1 {
            Outcome::Retry
        } else {
            Outcome::Ack
        }
    });
    let run = start(&s, h.clone(), config());
    let id = s.xadd(STREAM, &one("k", "v")).await.unwrap();
    wait_until("first delivery", async || !h.seen().is_empty()).await;
    // Left pending, not acknowledged, until the reaper claims it back.
    assert_eq!(pending(&s).await, 1);
    wait_until("the ack after the retry", async || {
        run.health.stats().acked == 1
    })
    .await;
    assert_eq!(
        h.seen(),
        vec![(id, 1, DeliveryKind::New), (id, 2, DeliveryKind::Claimed)]
    );
    assert_eq!(pending(&s).await, 0);
    let stats = run.stop().await.stats();
    assert_eq!((stats.retried, stats.claimed), (1, 1));
}

#[tokio::test]
async fn dead_letters_keep_the_source_under_names_that_cannot_collide() {
    let s = setup(Faulty::default()).await;
    let h = Recorder::new(&s, |_| Outcome::DeadLetter {
        reason: "hmac_verify_failed".into(),
    });
    let run = start(&s, h, config());
    // Source fields named like the metadata, and like a prefixed copy.
    let source = Fields::new()
        .with("id", "evt-1")
        .with("reason", "forged")
        .with("source_id", "0-1")
        .with("src_data", "x")
        .with("data", "{}");
    let id = s.xadd(STREAM, &source).await.unwrap();
    let dlq = names::dead_letter_stream(STREAM).into_owned();
    wait_until("the dead letter", async || s.len(&dlq).await.unwrap() == 1).await;
    wait_until("the ack", async || pending(&s).await == 0).await;
    let letter = s
        .range(&dlq, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap()
        .remove(0)
        .fields;
    assert_eq!(letter.get(DLQ_REASON), Some("hmac_verify_failed"));
    assert_eq!(letter.get(DLQ_SOURCE_ID), Some(id.to_string().as_str()));
    assert_eq!(letter.get(DLQ_SOURCE_STREAM), Some(STREAM));
    assert_eq!(letter.get(DLQ_SOURCE_GROUP), Some(GROUP));
    assert_eq!(letter.get(DLQ_CONSUMER), Some(ME));
    assert_eq!(letter.get(DLQ_DELIVERIES), Some("1"));
    assert!(
        letter
            .get(DLQ_RECEIVED_AT)
            .is_some_and(|t| t.parse::<i64>().is_ok())
    );
    assert_eq!(letter.get("src_id"), Some("evt-1"));
    assert_eq!(letter.get("src_reason"), Some("forged"));
    assert_eq!(letter.get("src_source_id"), Some("0-1"));
    assert_eq!(letter.get("src_src_data"), Some("x"));
    assert_eq!(letter.get("src_data"), Some("{}"));
    assert_eq!(letter.len(), 7 + source.len());
    let stats = run.stop().await.stats();
    assert_eq!((stats.dead_lettered, stats.acked), (1, 0));
}

#[test]
fn dead_letters_are_signed_when_a_key_is_configured() {
    let key = crate::streams::signature::StreamKey::from_hex(
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    let entry = StreamEntry {
        id: EntryId::new(5, 1),
        fields: one("_sig", "source-signature"),
    };
    let meta = DeadLetterMeta {
        reason: "r",
        stream: STREAM,
        group: GROUP,
        consumer: ME,
        deliveries: 3,
        received_at_ms: 42,
    };
    let policy = SigPolicy::Verify(key.clone());
    let dlq = "caracal.test.events.dead";
    let fields = dead_letter_fields(&entry, &meta, &policy, dlq);
    assert_eq!(fields.get("src__sig"), Some("source-signature"));
    assert!(crate::streams::signature::verify(&key, dlq, fields.iter()).is_ok());
    let unsigned = dead_letter_fields(&entry, &meta, &SigPolicy::AcceptUnsigned, dlq);
    assert!(unsigned.get("_sig").is_none());
}

#[tokio::test]
async fn a_failed_dead_letter_write_leaves_the_entry_pending() {
    let s = setup(Faulty {
        fail_dead_letters: AtomicBool::new(true),
        ..Faulty::default()
    })
    .await;
    let h = Recorder::new(&s, |_| Outcome::DeadLetter {
        reason: "malformed".into(),
    });
    let run = start(&s, h.clone(), config());
    let id = s.xadd(STREAM, &one("k", "v")).await.unwrap();
    let dlq = names::dead_letter_stream(STREAM).into_owned();
    // The write fails, repeatedly (each failure ends the session; the re-drain hands the
    // entry to the handler again): it is never acknowledged meanwhile.
    wait_until("two failed dead-letter writes", async || {
        run.health.stats().dead_letter_failures >= 2
    })
    .await;
    assert_eq!(pending(&s).await, 1);
    assert_eq!(s.len(&dlq).await.unwrap(), 0);
    assert!(run.health.last_error().is_some());

    s.fail_dead_letters.store(false, Ordering::SeqCst);
    wait_until("the ack after the dead letter", async || {
        pending(&s).await == 0
    })
    .await;
    let letters = s
        .range(&dlq, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].fields.get(DLQ_SOURCE_ID),
        Some(id.to_string().as_str())
    );
    assert!(h.seen().iter().all(|(seen, _, _)| *seen == id));
    assert!(!h.acked_early.load(Ordering::SeqCst));
    run.stop().await;
}

#[tokio::test]
async fn read_errors_mark_unhealthy_then_recover() {
    let s = setup(Faulty::default()).await;
    let h = Recorder::new(&s, |_| Outcome::Ack);
    let run = start(&s, h.clone(), config());
    wait_until("healthy", async || run.health.is_healthy()).await;

    s.fail_reads.store(u32::MAX, Ordering::SeqCst);
    wait_until("unhealthy", async || !run.health.is_healthy()).await;
    let id = s.xadd(STREAM, &one("k", "v")).await.unwrap();
    s.fail_reads.store(0, Ordering::SeqCst);
    wait_until("healthy again", async || run.health.is_healthy()).await;
    wait_until("the ack", async || run.health.stats().acked == 1).await;
    assert_eq!(h.seen(), vec![(id, 1, DeliveryKind::New)]);
    assert!(run.health.stats().errors >= 1);
    assert!(run.health.last_error().unwrap().contains("injected fault"));
    run.stop().await;
}

#[tokio::test]
async fn own_pending_entries_are_drained_at_start_with_real_counts() {
    let s = setup(Faulty::default()).await;
    let a = s.xadd(STREAM, &one("k", "a")).await.unwrap();
    let b = s.xadd(STREAM, &one("k", "b")).await.unwrap();
    // A previous run of this consumer read them and died before acknowledging.
    s.read_group(STREAM, GROUP, ME, ReadFrom::New, 10, None)
        .await
        .unwrap();
    let h = Recorder::new(&s, |_| Outcome::Ack);
    let mut c = config();
    // Keep the reaper out of it: only the drain may deliver them.
    c.claim_idle = Duration::from_secs(3600);
    let run = start(&s, h.clone(), c);
    wait_until("two acks", async || run.health.stats().acked == 2).await;
    let c = s.xadd(STREAM, &one("k", "c")).await.unwrap();
    wait_until("three acks", async || run.health.stats().acked == 3).await;
    assert_eq!(
        h.seen(),
        vec![
            (a, 2, DeliveryKind::Pending),
            (b, 2, DeliveryKind::Pending),
            (c, 1, DeliveryKind::New)
        ]
    );
    run.stop().await;
}

#[tokio::test]
async fn entries_deleted_while_pending_are_recorded_then_acked() {
    let s = setup(Faulty::default()).await;
    let gone = s.xadd(STREAM, &one("k", "a")).await.unwrap();
    s.read_group(STREAM, GROUP, ME, ReadFrom::New, 10, None)
        .await
        .unwrap();
    s.del(STREAM, &[gone]).await.unwrap();
    let h = Recorder::new(&s, |_| Outcome::Ack);
    let run = start(&s, h.clone(), config());
    let dlq = names::dead_letter_stream(STREAM).into_owned();
    wait_until("the record", async || s.len(&dlq).await.unwrap() == 1).await;
    wait_until("the ack", async || pending(&s).await == 0).await;
    let letter = s
        .range(&dlq, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap();
    assert_eq!(
        letter[0].fields.get(DLQ_REASON),
        Some(REASON_DELETED_WHILE_PENDING)
    );
    assert_eq!(
        letter[0].fields.get(DLQ_SOURCE_ID),
        Some(gone.to_string().as_str())
    );
    assert!(h.seen().is_empty(), "nothing to hand to the handler");
    run.stop().await;
}

#[tokio::test]
async fn the_eviction_check_never_blocks_start() {
    let s = setup(Faulty {
        hang_eviction: true,
        ..Faulty::default()
    })
    .await;
    let h = Recorder::new(&s, |_| Outcome::Ack);
    let mut c = config();
    c.op_timeout = Duration::from_secs(30);
    let run = start(&s, h, c);
    s.xadd(STREAM, &one("k", "v")).await.unwrap();
    let started = Instant::now();
    wait_until("the ack", async || run.health.stats().acked == 1).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    run.stop().await;
}

#[tokio::test]
async fn a_missing_group_is_created_and_shutdown_interrupts_a_blocked_read() {
    let s = Arc::new(Faulty::default());
    let h = Recorder::new(&s, |_| Outcome::Ack);
    let mut c = config();
    c.block = Duration::from_secs(30);
    c.claim_interval = Duration::from_secs(30);
    let run = start(&s, h, c);
    wait_until("healthy", async || run.health.is_healthy()).await;
    assert_eq!(s.groups(STREAM).await.unwrap()[0].name, GROUP);
    let stopping = Instant::now();
    run.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(2));
}

#[test]
fn bad_configs_are_refused() {
    let streams: Arc<dyn Streams> = Arc::new(MemoryStreams::default());
    let handler: Arc<dyn Handler> = Recorder::new(&Arc::new(Faulty::default()), |_| Outcome::Ack);
    let mut zero_batch = config();
    zero_batch.batch = 0;
    let mut same_dlq = config();
    same_dlq.dead_letter_stream = STREAM.into();
    let mut no_name = config();
    no_name.consumer = String::new();
    let mut backwards = config();
    backwards.backoff_max = Duration::from_millis(1);
    for bad in [zero_batch, same_dlq, no_name, backwards] {
        assert!(Consumer::new(Arc::clone(&streams), bad, Arc::clone(&handler)).is_err());
    }
    assert!(Consumer::new(streams, config(), handler).is_ok());
}
