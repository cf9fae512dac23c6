//! The production audit emitter through its public surface: frames on the stream, the disk
//! spill when the stream refuses, replay when it returns and after a restart, and the
//! evidence-lost latch when both the stream and the disk refuse.
//!
//! Delivery is at least once; with no crash between an `XADD` and the file's rewrite or
//! deletion (the case in every test here) each event reaches the stream exactly once, and the
//! tests assert exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use caracal_core::audit::emitter::{AuditEmitter, EmitterConfig, EmitterError};
use caracal_core::audit::ingest::prepare;
use caracal_core::audit::sink::AuditSink;
use caracal_core::audit::{AuditEvent, AuditHmacKey, sign_payload};
use caracal_core::clock::{FakeClock, SharedClock};
use caracal_core::streams::{
    AutoClaim, EntryId, Fields, GroupCreated, GroupInfo, GroupStart, MemoryStreams, PendingEntry,
    PendingSummary, ReadFrom, StreamEntry, StreamError, StreamResult, Streams, Trim, names,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const WAIT: Duration = Duration::from_secs(10);

fn key() -> AuditHmacKey {
    AuditHmacKey::from_hex(KEY_HEX).unwrap()
}

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("caracal-emitter-{}", uuid::Uuid::now_v7()));
        Self(dir)
    }
    fn replay(&self) -> PathBuf {
        self.0.join("audit-replay")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `MemoryStreams` whose `XADD` can be made to fail: while `down`, or once `budget` (when
/// non-negative) successful adds are used up.
struct Flaky {
    inner: MemoryStreams,
    down: AtomicBool,
    budget: AtomicI64,
}

impl Flaky {
    fn new(clock: SharedClock) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStreams::new(clock),
            down: AtomicBool::new(false),
            budget: AtomicI64::new(-1),
        })
    }
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Streams for Flaky {
    async fn xadd_with(&self, stream: &str, fields: &Fields, trim: Trim) -> StreamResult<EntryId> {
        let refused = StreamError::Unavailable {
            reason: "test: stream down".into(),
        };
        if self.down.load(Ordering::SeqCst) {
            return Err(refused);
        }
        let budget = self.budget.load(Ordering::SeqCst);
        if budget == 0 {
            return Err(refused);
        }
        if budget > 0 {
            self.budget.fetch_sub(1, Ordering::SeqCst);
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
}

fn clock() -> SharedClock {
    Arc::new(FakeClock::at_fixture_epoch())
}

fn config(dir: &Path, clock: &SharedClock) -> EmitterConfig {
    let mut config = EmitterConfig::new(dir);
    config.audit_key = Some(key());
    config.clock = Arc::clone(clock);
    config.flush_interval = Duration::from_millis(10);
    config
}

fn event(n: usize) -> AuditEvent {
    let json = format!(
        r#"{{"id":"evt-{n}","zone_id":"zone-1","event_type":"token_exchange","request_id":"req-{n}",
            "decision":"allow","evaluation_status":"complete",
            "determining_policies_json":[{{"id":"p"}}],"diagnostics_json":null,
            "metadata_json":{{"resource":"r","n":{n}}},"occurred_at":"2026-05-21T12:00:00.{n:06}Z"}}"#
    );
    AuditEvent::parse(json.as_bytes()).unwrap()
}

/// The frame the emitter sends for `event` (what the spill line must hold too).
fn expected_frame(event: &AuditEvent) -> (String, String, String) {
    let data = serde_json::to_string(event).unwrap();
    let sig = sign_payload(&key(), data.as_bytes());
    (event.id.clone(), data, sig)
}

async fn entries(streams: &dyn Streams) -> Vec<StreamEntry> {
    streams
        .range(names::AUDIT_EVENTS, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap()
}

/// Event id → how many stream entries carry it; every entry checked as the ingestor would.
async fn delivered(streams: &dyn Streams) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for entry in entries(streams).await {
        let incoming = prepare(&entry.fields, Some(&key())).expect("the ingestor accepts it");
        assert_eq!(entry.fields.get("id"), Some(incoming.event.id.as_str()));
        *seen.entry(incoming.event.id).or_insert(0) += 1;
    }
    seen
}

fn exactly_once(n: std::ops::Range<usize>) -> BTreeMap<String, usize> {
    n.map(|i| (format!("evt-{i}"), 1)).collect()
}

fn spill_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("pending-") && name.ends_with(".ndjson")
        })
        .collect();
    files.sort();
    files
}

/// Every spill line, in file order, as (id, data, sig).
fn spill_lines(dir: &Path) -> Vec<(String, String, String)> {
    let mut lines = Vec::new();
    for file in spill_files(dir) {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            lines.push((
                v["id"].as_str().unwrap().to_owned(),
                v["data"].as_str().unwrap().to_owned(),
                v["sig"].as_str().unwrap().to_owned(),
            ));
        }
    }
    lines
}

/// Poll `check` until it holds, failing the test after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let polled = timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "timed out waiting for: {what}");
}

async fn stop(shutdown: watch::Sender<bool>, task: JoinHandle<()>) {
    shutdown.send(true).unwrap();
    timeout(WAIT, task).await.expect("emitter stops").unwrap();
}

#[tokio::test]
async fn events_reach_the_stream_as_signed_frames() {
    let tmp = TempDir::new();
    let clock = clock();
    let streams = Flaky::new(Arc::clone(&clock));
    let emitter = AuditEmitter::new(streams.clone(), config(&tmp.replay(), &clock)).unwrap();
    let mode = std::fs::metadata(tmp.replay())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(emitter.replay_dir_writable());
    let (tx, rx) = watch::channel(false);
    let task = emitter.spawn(rx);
    for i in 0..5 {
        emitter.emit(event(i));
    }
    eventually("5 entries", || async {
        entries(&*streams).await.len() == 5
    })
    .await;
    let got = entries(&*streams).await;
    for (i, entry) in got.iter().enumerate() {
        let (id, data, sig) = expected_frame(&event(i));
        let fields: Vec<(&str, &str)> = entry.fields.iter().collect();
        assert_eq!(
            fields,
            vec![
                ("id", id.as_str()),
                ("data", data.as_str()),
                ("sig", sig.as_str())
            ]
        );
        assert_eq!(AuditEvent::parse(data.as_bytes()).unwrap(), event(i));
    }
    assert_eq!(delivered(&*streams).await, exactly_once(0..5));
    stop(tx, task).await;
    let stats = emitter.stats();
    assert_eq!(stats.sent_total, 5);
    assert_eq!(stats.dropped_total, 0);
    assert_eq!(stats.replay_files, 0);
    assert!(!emitter.evidence_lost());
}

#[tokio::test]
async fn refused_events_spill_to_disk_and_replay_when_the_stream_returns() {
    let tmp = TempDir::new();
    let dir = tmp.replay();
    let clock = clock();
    let streams = Flaky::new(Arc::clone(&clock));
    streams.set_down(true);
    let emitter = AuditEmitter::new(streams.clone(), config(&dir, &clock)).unwrap();
    let (tx, rx) = watch::channel(false);
    let task = emitter.spawn(rx);
    for i in 0..3 {
        emitter.emit(event(i));
    }
    eventually("3 lines spilled", || async {
        emitter.stats().replay_pending == 3
    })
    .await;
    let files = spill_files(&dir);
    assert!(!files.is_empty());
    let pid = std::process::id();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("pending-{pid}-")), "{name}");
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let expected: Vec<_> = (0..3).map(|i| expected_frame(&event(i))).collect();
    assert_eq!(spill_lines(&dir), expected);
    let stats = emitter.stats();
    assert_eq!(stats.replay_files, files.len() as u64);
    assert!(stats.replay_bytes > 0);
    assert!(stats.sink_errors_total > 0);
    assert!(entries(&*streams).await.is_empty());
    assert!(!emitter.evidence_lost());

    // The stream comes back with no new traffic: the background replay drains the files.
    streams.set_down(false);
    eventually("files replayed and deleted", || async {
        spill_files(&dir).is_empty() && emitter.stats().replay_files == 0
    })
    .await;
    assert_eq!(delivered(&*streams).await, exactly_once(0..3));
    let stats = emitter.stats();
    assert_eq!(stats.replayed_total, 3);
    assert_eq!(stats.replay_pending, 0);
    assert_eq!(stats.replay_bytes, 0);
    assert_eq!(stats.dropped_total, 0);
    // Replayed frames are byte-identical to what would have been sent.
    let got = entries(&*streams).await;
    for (entry, (id, data, sig)) in got.iter().zip(&expected) {
        assert_eq!(entry.fields.get("id"), Some(id.as_str()));
        assert_eq!(entry.fields.get("data"), Some(data.as_str()));
        assert_eq!(entry.fields.get("sig"), Some(sig.as_str()));
    }
    stop(tx, task).await;
}

#[tokio::test]
async fn a_new_emitter_replays_the_files_left_by_the_previous_one() {
    let tmp = TempDir::new();
    let dir = tmp.replay();
    let clock = clock();
    let down = Flaky::new(Arc::clone(&clock));
    down.set_down(true);
    let first = AuditEmitter::new(down.clone(), config(&dir, &clock)).unwrap();
    let (tx, rx) = watch::channel(false);
    let task = first.spawn(rx);
    for i in 0..4 {
        first.emit(event(i));
    }
    // Shut down at once: the final flush is refused and spills.
    stop(tx, task).await;
    assert_eq!(spill_lines(&dir).len(), 4);
    // Emitted after shutdown: spilled by the caller, not lost.
    first.emit(event(4));
    assert_eq!(spill_lines(&dir).len(), 5);
    assert!(!first.evidence_lost());
    drop(first);

    let clock2 = clock.clone();
    let up = Flaky::new(Arc::clone(&clock2));
    let second = AuditEmitter::new(up.clone(), config(&dir, &clock2)).unwrap();
    let stats = second.stats();
    assert_eq!(stats.replay_pending, 5);
    assert!(stats.replay_files >= 2);
    let (tx, rx) = watch::channel(false);
    let task = second.spawn(rx);
    eventually("start-up replay", || async { spill_files(&dir).is_empty() }).await;
    assert_eq!(delivered(&*up).await, exactly_once(0..5));
    assert_eq!(second.stats().replayed_total, 5);
    stop(tx, task).await;
}

#[tokio::test]
async fn a_partly_replayed_file_keeps_only_its_unsent_lines() {
    let tmp = TempDir::new();
    let dir = tmp.replay();
    let clock = clock();
    let streams = Flaky::new(Arc::clone(&clock));
    streams.set_down(true);
    let emitter = AuditEmitter::new(streams.clone(), config(&dir, &clock)).unwrap();
    for i in 0..5 {
        emitter.emit(event(i));
    }
    assert!(matches!(
        emitter.flush().await,
        Err(EmitterError::Spilled { events: 5 })
    ));
    assert_eq!(spill_files(&dir).len(), 1);
    let all = spill_lines(&dir);
    assert_eq!(all.len(), 5);

    // Two adds succeed, then the stream refuses again mid-file.
    streams.set_down(false);
    streams.budget.store(2, Ordering::SeqCst);
    emitter.flush().await.unwrap();
    assert_eq!(spill_lines(&dir), all[2..].to_vec());
    assert_eq!(emitter.stats().replay_pending, 3);
    assert_eq!(delivered(&*streams).await, exactly_once(0..2));
    // No temp file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    streams.budget.store(-1, Ordering::SeqCst);
    emitter.flush().await.unwrap();
    assert!(spill_files(&dir).is_empty());
    assert_eq!(delivered(&*streams).await, exactly_once(0..5));
    assert_eq!(emitter.stats().replayed_total, 5);
}

#[tokio::test]
async fn a_full_buffer_spills_to_disk_without_waiting_for_the_flusher() {
    let tmp = TempDir::new();
    let dir = tmp.replay();
    let clock = clock();
    let streams = Flaky::new(Arc::clone(&clock));
    let mut config = config(&dir, &clock);
    config.buffer_capacity = 2;
    config.flush_batch = 100;
    config.flush_interval = Duration::from_secs(3600);
    let emitter = AuditEmitter::new(streams.clone(), config).unwrap();
    let (tx, rx) = watch::channel(false);
    let task = emitter.spawn(rx);
    // Let the start-up replay and the first (immediate) tick pass.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..4 {
        emitter.emit(event(i));
    }
    eventually("overflow spilled", || async {
        spill_lines(&dir).len() == 2
    })
    .await;
    assert_eq!(
        spill_lines(&dir),
        vec![expected_frame(&event(2)), expected_frame(&event(3))]
    );
    assert_eq!(emitter.stats().buffered, 2);
    emitter.flush().await.unwrap();
    assert!(spill_files(&dir).is_empty());
    assert_eq!(delivered(&*streams).await, exactly_once(0..4));
    assert!(!emitter.evidence_lost());
    stop(tx, task).await;
}

#[tokio::test]
async fn losing_both_the_stream_and_the_disk_latches_evidence_lost() {
    let tmp = TempDir::new();
    let dir = tmp.replay();
    let clock = clock();
    let streams = Flaky::new(Arc::clone(&clock));
    streams.set_down(true);
    let emitter = AuditEmitter::new(streams.clone(), config(&dir, &clock)).unwrap();
    assert!(emitter.replay_dir_writable());
    // The replay dir is replaced by a plain file: unwritable even for root.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a dir").unwrap();
    assert!(!emitter.replay_dir_writable());
    let (tx, rx) = watch::channel(false);
    let task = emitter.spawn(rx);
    emitter.emit(event(0));
    eventually("loss counted", || async { emitter.evidence_lost() }).await;
    assert!(emitter.stats().dropped_total > 0);
    emitter.emit(event(1));
    assert!(matches!(
        emitter.flush().await,
        Err(EmitterError::EvidenceLost { events: 1 })
    ));
    // The stream returning does not clear the latch.
    streams.set_down(false);
    emitter.emit(event(2));
    emitter.flush().await.unwrap();
    assert!(emitter.evidence_lost());
    assert_eq!(emitter.stats().dropped_total, 2);
    stop(tx, task).await;
}

#[tokio::test]
async fn an_unusable_replay_dir_refuses_to_start() {
    let tmp = TempDir::new();
    std::fs::create_dir_all(&tmp.0).unwrap();
    let file = tmp.0.join("file");
    std::fs::write(&file, b"x").unwrap();
    let clock = clock();
    let streams = Flaky::new(Arc::clone(&clock));
    for dir in [file.clone(), file.join("below")] {
        match AuditEmitter::new(streams.clone(), config(&dir, &clock)) {
            Err(EmitterError::ReplayDir { path, .. }) => assert_eq!(path, dir),
            other => panic!("{dir:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_corrupt_spill_line_is_counted_lost_and_the_rest_replayed() {
    let tmp = TempDir::new();
    let dir = tmp.replay();
    std::fs::create_dir_all(&dir).unwrap();
    let (id, data, sig) = expected_frame(&event(7));
    let good = serde_json::json!({"id": id, "data": data, "sig": sig}).to_string();
    std::fs::write(
        dir.join("pending-1-1000.ndjson"),
        format!("{good}\n{{\"id\":\"torn\",\"da\n"),
    )
    .unwrap();
    let clock = clock();
    let streams = Flaky::new(Arc::clone(&clock));
    let emitter = AuditEmitter::new(streams.clone(), config(&dir, &clock)).unwrap();
    assert_eq!(emitter.stats().replay_pending, 2);
    emitter.flush().await.unwrap();
    assert!(spill_files(&dir).is_empty());
    assert_eq!(delivered(&*streams).await, exactly_once(7..8));
    assert!(emitter.evidence_lost());
    assert_eq!(emitter.stats().dropped_total, 1);
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use caracal_core::backend::redis::{RedisConfig, RedisStreams};
    use caracal_test_support::{EphemeralRedis, RedisOptions, SupportError, is_ci, redis_or_skip};

    /// A server of this test's own (it is stopped and restarted), or `None` when missing.
    fn own_redis(test: &str) -> Option<EphemeralRedis> {
        let opts = RedisOptions {
            appendfsync: "always".into(),
            honour_env: false,
            ..RedisOptions::default()
        };
        match EphemeralRedis::start_with(opts) {
            Ok(server) => Some(server),
            Err(SupportError::BinariesMissing { what, hint }) => {
                assert!(
                    !is_ci(),
                    "CI=true and redis-server is missing ({what}: {hint})"
                );
                eprintln!(
                    "SKIPPED: {test}: no redis-server ({what}: {hint}). This test did NOT run."
                );
                None
            }
            Err(e) => panic!("{test}: could not start redis-server: {e}"),
        }
    }

    fn fast_fail(url: String) -> RedisStreams {
        let mut config = RedisConfig::new(url);
        config.pool_timeout = Duration::from_millis(500);
        config.connect_timeout = Duration::from_millis(500);
        config.response_timeout = Duration::from_millis(500);
        RedisStreams::connect(&config).unwrap()
    }

    /// Redis stops: events spill to disk; Redis returns: the background task replays them and
    /// deletes the files, and the stream holds every event exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redis_outage_spills_and_replays() {
        let Some(server) = own_redis("a_redis_outage_spills_and_replays") else {
            return;
        };
        let tmp = TempDir::new();
        let dir = tmp.replay();
        let streams = Arc::new(fast_fail(server.url()));
        let clock = clock();
        let emitter = AuditEmitter::new(streams.clone(), config(&dir, &clock)).unwrap();
        let (tx, rx) = watch::channel(false);
        let task = emitter.spawn(rx);
        emitter.emit(event(0));
        timeout(WAIT, emitter.flush()).await.unwrap().unwrap();

        server.stop().unwrap();
        for i in 1..6 {
            emitter.emit(event(i));
        }
        eventually("5 lines spilled", || async {
            emitter.stats().replay_pending == 5
        })
        .await;
        assert_eq!(spill_lines(&dir).len(), 5);

        server.restart().unwrap();
        eventually("replayed after Redis returned", || async {
            spill_files(&dir).is_empty()
        })
        .await;
        assert_eq!(delivered(&*streams).await, exactly_once(0..6));
        assert!(!emitter.evidence_lost());
        stop(tx, task).await;
    }

    /// Emitted frames read back from a real Redis with `XRANGE`, signed and accepted by the
    /// ingestor's checks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_land_in_redis() {
        let Some(server) = redis_or_skip("frames_land_in_redis") else {
            return;
        };
        let tmp = TempDir::new();
        let streams = Arc::new(RedisStreams::connect(&RedisConfig::new(server.url())).unwrap());
        let clock = clock();
        let emitter = AuditEmitter::new(streams.clone(), config(&tmp.replay(), &clock)).unwrap();
        let (tx, rx) = watch::channel(false);
        let task = emitter.spawn(rx);
        // Unique ids: the server may be shared with other tests writing the audit stream.
        let run = uuid::Uuid::now_v7();
        let mut ids = Vec::new();
        for i in 0..20 {
            let mut e = event(i);
            e.id = format!("{run}-{i}");
            ids.push(e.id.clone());
            emitter.emit(e);
        }
        timeout(WAIT, emitter.flush()).await.unwrap().unwrap();
        let got: Vec<StreamEntry> = entries(&*streams)
            .await
            .into_iter()
            .filter(|e| {
                e.fields
                    .get("id")
                    .is_some_and(|id| id.starts_with(&run.to_string()))
            })
            .collect();
        assert_eq!(
            got.iter()
                .map(|e| e.fields.get("id").unwrap().to_owned())
                .collect::<Vec<_>>(),
            ids
        );
        for entry in &got {
            let data = entry.fields.get("data").unwrap();
            assert_eq!(
                entry.fields.get("sig").unwrap(),
                sign_payload(&key(), data.as_bytes())
            );
            let incoming = prepare(&entry.fields, Some(&key())).unwrap();
            assert_eq!(entry.fields.get("id"), Some(incoming.event.id.as_str()));
        }
        assert!(spill_files(&tmp.replay()).is_empty());
        stop(tx, task).await;
        assert!(!emitter.evidence_lost());
    }
}
