//! The production audit sink: buffered delivery to `caracal.audit.events` with a disk spill
//! (reference STS §7.7, audit-streams §2.2).
//!
//! ## Delivery
//!
//! [`AuditEmitter::emit`] turns the event into its stream frame at once — `id` (the event id),
//! `data` (the event JSON) and, when `AUDIT_HMAC_KEY` is configured, `sig` (hex HMAC-SHA256 of
//! the exact `data` bytes, [`sign_payload`]) — and queues it in memory; it never waits on the
//! network or the disk. The background task ([`AuditEmitter::spawn`]) sends the queue with
//! `XADD caracal.audit.events * id … data … sig …` every `flush_interval` or as soon as
//! `flush_batch` frames are waiting. Direct producers carry no `_sig` origin signature
//! (audit-streams §1.2: only the outbox-borne copies do), and the ingestor reads only `data`
//! and `sig`.
//!
//! ## Spill and replay
//!
//! When an `XADD` fails, that frame and the rest of its batch (and of the queue) are written to
//! `pending-<pid>-<unix_nanos>.ndjson` in the replay directory: mode 0600, one JSON line
//! `{"id","data","sig"}` per frame holding exactly what would have been sent, written under a
//! `.tmp` name, fsync'd, renamed into place, and the directory fsync'd, so a replay never sees a
//! half-written file. When the in-memory queue is full, further events go to a second bounded
//! queue that a separate task spills straight to disk, even while the flusher is stuck on an
//! unresponsive stream.
//!
//! Files are replayed oldest first (by the nanoseconds in the name) at start, after every flush
//! that reached the stream, and at most once a second otherwise (so the files drain when Redis
//! comes back even with no new traffic). A file is deleted only after every line of it was
//! added; a partly replayed file is rewritten with its remaining lines (temp file + rename +
//! directory fsync). The guarantee is therefore **at least once**: a crash between an `XADD`
//! and the rewrite or deletion sends those lines again, byte-identical, and the ledger treats
//! them as benign duplicates of `(id, occurred_at)` with the same content hash
//! (audit-streams §1.6).
//!
//! ## Loss
//!
//! An event is lost only when neither the stream nor the disk took it (or both queues are full,
//! or a spill file holds a line that no longer parses). Loss is counted in
//! [`EmitterStats::dropped_total`] and latches [`AuditEmitter::evidence_lost`]: `/ready`
//! reports `audit_evidence_lost` until the process is replaced.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::event::AuditEvent;
use super::hash::{AuditHmacKey, sign_payload};
use super::ingest::{FIELD_DATA, FIELD_ID, FIELD_SIG};
use super::sink::AuditSink;
use crate::clock::{SharedClock, SystemClock};
use crate::streams::{Fields, StreamError, Streams, names};

/// File name prefix of a spill file.
const FILE_PREFIX: &str = "pending-";
/// File name suffix of a spill file.
const FILE_SUFFIX: &str = ".ndjson";
/// Suffix of a file being written (never replayed).
const TMP_SUFFIX: &str = ".tmp";
/// Without a successful flush, replay is retried at most this often.
const REPLAY_RETRY: Duration = Duration::from_secs(1);

/// How the emitter runs (reference defaults: buffer 10,000, every 50 ms or 1,000 events).
#[derive(Debug, Clone)]
pub struct EmitterConfig {
    /// `AUDIT_REPLAY_DIR`: where refused events are spilled (created 0700 if missing).
    pub replay_dir: PathBuf,
    /// Frames held in memory before new events go straight to the disk spill.
    pub buffer_capacity: usize,
    /// The longest an event waits in memory before a flush.
    pub flush_interval: Duration,
    /// A flush starts as soon as this many frames are waiting; also the most frames per spill
    /// file.
    pub flush_batch: usize,
    /// `AUDIT_HMAC_KEY`: signs each frame's `data` as `sig`. `None` (dev only) sends no `sig`.
    pub audit_key: Option<AuditHmacKey>,
    /// Wall clock for spill file names and their age in the metrics.
    pub clock: SharedClock,
}

impl EmitterConfig {
    /// The reference defaults for `replay_dir`, with no key and the system clock.
    pub fn new(replay_dir: impl Into<PathBuf>) -> Self {
        Self {
            replay_dir: replay_dir.into(),
            buffer_capacity: 10_000,
            flush_interval: Duration::from_millis(50),
            flush_batch: 1_000,
            audit_key: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Why the emitter could not start, or what a [`AuditEmitter::flush`] left undelivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitterError {
    /// The replay directory cannot be created or is not a directory: the STS refuses to start.
    #[error("audit replay dir {path}: {source}")]
    ReplayDir {
        /// The configured directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The stream refused; the events are safe in the replay directory.
    #[error("audit stream refused {events} events; they were spilled to disk")]
    Spilled {
        /// Events written to disk by this flush.
        events: u64,
    },
    /// Events were lost: neither the stream nor the disk took them.
    #[error("{events} audit events were lost")]
    EvidenceLost {
        /// Events lost during this flush.
        events: u64,
    },
}

/// Counters and gauges for `/ready`, `/metrics` (`caracal_sts_audit_*`) and `/metrics.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EmitterStats {
    /// `caracal_sts_audit_dropped_total`: events lost irrecoverably (latched, never reset).
    pub dropped_total: u64,
    /// `caracal_sts_audit_replay_pending`: lines waiting in spill files.
    pub replay_pending: u64,
    /// `caracal_sts_audit_replay_files`: spill files waiting.
    pub replay_files: u64,
    /// `caracal_sts_audit_replay_bytes`: bytes in spill files.
    pub replay_bytes: u64,
    /// `caracal_sts_audit_replay_oldest_age_seconds`: age of the oldest spill file (0 if none).
    pub replay_oldest_age_seconds: f64,
    /// `caracal_sts_audit_replay_replayed_total`: lines re-sent from spill files.
    pub replayed_total: u64,
    /// `caracal_sts_audit_sink_errors_total`: failed `XADD`s and spill-file errors.
    pub sink_errors_total: u64,
    /// Frames added to the stream directly from memory.
    pub sent_total: u64,
    /// Frames written to spill files.
    pub spilled_total: u64,
    /// Frames waiting in memory.
    pub buffered: u64,
}

/// One stream entry, exactly as sent and as stored on a spill line.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Frame {
    id: String,
    data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

impl Frame {
    fn fields(&self) -> Fields {
        let mut fields = Fields::with_capacity(3)
            .with(FIELD_ID, self.id.as_str())
            .with(FIELD_DATA, self.data.as_str());
        if let Some(sig) = &self.sig {
            fields.insert(FIELD_SIG, sig.as_str());
        }
        fields
    }
}

/// What the emitter knows about one spill file (for the gauges; the file is the truth).
#[derive(Debug, Clone, Copy)]
struct FileInfo {
    lines: u64,
    bytes: u64,
    /// Unix nanoseconds the file was written (from its name, else its mtime).
    written_nanos: i128,
}

/// A spill file: sorted by the nanoseconds in its name, then by name.
type FileKey = (i128, PathBuf);

#[derive(Debug, Default)]
struct Counters {
    dropped: AtomicU64,
    replayed: AtomicU64,
    sink_errors: AtomicU64,
    sent: AtomicU64,
    spilled: AtomicU64,
}

/// The production [`AuditSink`] (module docs).
pub struct AuditEmitter {
    streams: Arc<dyn Streams>,
    config: EmitterConfig,
    /// Frames waiting for the flusher (at most `buffer_capacity`).
    buffer: Mutex<VecDeque<Frame>>,
    /// Frames that found the buffer full, waiting to be spilled (at most `buffer_capacity`).
    overflow: Mutex<Vec<Frame>>,
    wake_flush: Notify,
    wake_spill: Notify,
    /// Held while the overflow queue is being written to disk.
    spill_lock: tokio::sync::Mutex<()>,
    /// Set once the background task stopped: later events are spilled by the caller.
    closed: AtomicBool,
    /// Serialises flushes and replays, so no line is replayed twice concurrently.
    flush_lock: tokio::sync::Mutex<ReplaySchedule>,
    /// Spill files, oldest first.
    files: Mutex<BTreeMap<FileKey, FileInfo>>,
    /// The last nanosecond stamp used in a file name (names stay unique and increasing).
    last_nanos: Mutex<i128>,
    counters: Counters,
}

#[derive(Debug)]
struct ReplaySchedule {
    /// Earliest time of the next replay attempt not triggered by a successful flush.
    next_attempt: Instant,
}

impl std::fmt::Debug for AuditEmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditEmitter")
            .field("replay_dir", &self.config.replay_dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked; the queue itself is still valid.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl AuditEmitter {
    /// Build the emitter over `streams`. Creates the replay dir (0700) if missing and indexes
    /// the spill files already in it (a crashed write's `.tmp` file is promoted when it has no
    /// final file, else removed); fails if the dir cannot be created or is not a directory —
    /// the STS refuses to start without a usable replay dir.
    pub fn new(
        streams: Arc<dyn Streams>,
        config: EmitterConfig,
    ) -> Result<Arc<Self>, EmitterError> {
        let dir = config.replay_dir.clone();
        let fail = |source: io::Error| EmitterError::ReplayDir {
            path: dir.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(fail)?;
        if !fs::metadata(&dir).map_err(fail)?.is_dir() {
            return Err(fail(io::Error::other("not a directory")));
        }
        let files = scan_dir(&dir).map_err(fail)?;
        let emitter = Arc::new(Self {
            streams,
            buffer: Mutex::new(VecDeque::new()),
            overflow: Mutex::new(Vec::new()),
            wake_flush: Notify::new(),
            wake_spill: Notify::new(),
            spill_lock: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            flush_lock: tokio::sync::Mutex::new(ReplaySchedule {
                next_attempt: Instant::now(),
            }),
            files: Mutex::new(files),
            last_nanos: Mutex::new(0),
            counters: Counters::default(),
            config,
        });
        Ok(emitter)
    }

    /// Start the background work: replay the files left by earlier runs, then flush every
    /// `flush_interval` or when a batch is full (spilling what the stream refuses), and spill
    /// the overflow queue as it fills. When `shutdown` turns true (or its sender is dropped)
    /// it makes a final flush, spilling whatever the stream refuses, and ends; events emitted
    /// afterwards are spilled by the caller.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let (stop_spiller, spiller_stop) = watch::channel(false);
            let spiller = tokio::spawn(Arc::clone(&this).spill_loop(spiller_stop));
            Arc::clone(&this).flush_loop(shutdown).await;
            let _ = stop_spiller.send(true);
            let _ = spiller.await;
            // Anything that raced the close: the overflow and the buffer go to disk now.
            {
                let _buffer = lock(&this.buffer);
                this.closed.store(true, Ordering::SeqCst);
            }
            this.spill_overflow().await;
            let _ = this.drain(true).await;
        })
    }

    async fn flush_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        {
            let mut schedule = self.flush_lock.lock().await;
            self.replay_locked(&mut schedule).await;
        }
        let mut tick =
            tokio::time::interval(self.config.flush_interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = tick.tick() => {}
                () = self.wake_flush.notified() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
            let _ = self.drain(false).await;
        }
        let _ = self.drain(true).await;
    }

    async fn spill_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            self.spill_overflow().await;
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                () = self.wake_spill.notified() => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        self.spill_overflow().await;
    }

    /// The in-memory queue's capacity (`audit_queue_capacity`).
    pub fn capacity(&self) -> usize {
        self.config.buffer_capacity
    }

    /// A snapshot of the counters and gauges.
    pub fn stats(&self) -> EmitterStats {
        let (replay_pending, replay_files, replay_bytes, oldest) = {
            let files = lock(&self.files);
            let lines = files.values().map(|f| f.lines).sum();
            let bytes = files.values().map(|f| f.bytes).sum();
            let oldest = files.values().map(|f| f.written_nanos).min();
            (lines, files.len() as u64, bytes, oldest)
        };
        let replay_oldest_age_seconds = oldest.map_or(0.0, |written| {
            let age = self.now_nanos().saturating_sub(written).max(0);
            age as f64 / 1e9
        });
        let buffered = (lock(&self.buffer).len() + lock(&self.overflow).len()) as u64;
        let c = &self.counters;
        EmitterStats {
            dropped_total: c.dropped.load(Ordering::Relaxed),
            replay_pending,
            replay_files,
            replay_bytes,
            replay_oldest_age_seconds,
            replayed_total: c.replayed.load(Ordering::Relaxed),
            sink_errors_total: c.sink_errors.load(Ordering::Relaxed),
            sent_total: c.sent.load(Ordering::Relaxed),
            spilled_total: c.spilled.load(Ordering::Relaxed),
            buffered,
        }
    }

    /// True once any event was irrecoverably lost; `/ready` then reports
    /// `audit_evidence_lost` for the rest of the process's life.
    pub fn evidence_lost(&self) -> bool {
        self.counters.dropped.load(Ordering::Relaxed) > 0
    }

    /// The `/ready` check `audit_replay_unavailable`: the replay dir is a directory in which a
    /// file can be created (and removed). Blocking file I/O; a handler with a time budget runs
    /// it on a blocking thread.
    pub fn replay_dir_writable(&self) -> bool {
        let dir = &self.config.replay_dir;
        if !fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
            return false;
        }
        let probe = dir.join(format!(
            ".ready-{}-{}{TMP_SUFFIX}",
            std::process::id(),
            self.next_nanos()
        ));
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe)
            .is_ok();
        created && fs::remove_file(&probe).is_ok()
    }

    /// Send everything buffered now and wait; then, if the stream took it, replay the spill
    /// files. `Ok` means every event buffered before the call reached the stream;
    /// [`EmitterError::Spilled`] that the stream refused and the events are on disk;
    /// [`EmitterError::EvidenceLost`] that some could not be saved at all.
    pub async fn flush(&self) -> Result<(), EmitterError> {
        self.spill_overflow().await;
        self.drain(true).await
    }

    /// Flush the buffer (everything, or at most what is there when called), spilling what the
    /// stream refuses, then replay when due. Serialised with every other flush and replay.
    async fn drain(&self, force_replay: bool) -> Result<(), EmitterError> {
        let mut schedule = self.flush_lock.lock().await;
        let mut stream_down = false;
        let mut sent_any = false;
        let mut spilled = 0u64;
        let mut lost = 0u64;
        loop {
            let batch: Vec<Frame> = {
                let mut buffer = lock(&self.buffer);
                let n = buffer.len().min(self.config.flush_batch.max(1));
                buffer.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            let refused = if stream_down {
                batch
            } else {
                match self.send(batch).await {
                    Ok(sent) => {
                        sent_any |= sent > 0;
                        continue;
                    }
                    Err(rest) => {
                        stream_down = true;
                        rest
                    }
                }
            };
            let n = refused.len() as u64;
            if self.spill(refused).await {
                spilled += n;
            } else {
                lost += n;
            }
        }
        let due = Instant::now() >= schedule.next_attempt;
        if !stream_down && (sent_any || force_replay || due) && !lock(&self.files).is_empty() {
            self.replay_locked(&mut schedule).await;
        }
        if lost > 0 {
            Err(EmitterError::EvidenceLost { events: lost })
        } else if spilled > 0 {
            Err(EmitterError::Spilled { events: spilled })
        } else {
            Ok(())
        }
    }

    /// `XADD` each frame in order. On the first failure, returns that frame and the rest.
    async fn send(&self, batch: Vec<Frame>) -> Result<u64, Vec<Frame>> {
        let mut sent = 0u64;
        let mut frames = batch.into_iter();
        while let Some(frame) = frames.next() {
            if let Err(error) = self
                .streams
                .xadd(names::AUDIT_EVENTS, &frame.fields())
                .await
            {
                self.note_stream_error(&error);
                let mut rest = vec![frame];
                rest.extend(frames);
                return Err(rest);
            }
            sent += 1;
            bump(&self.counters.sent, 1);
        }
        Ok(sent)
    }

    fn note_stream_error(&self, error: &StreamError) {
        bump(&self.counters.sink_errors, 1);
        tracing::warn!(%error, stream = names::AUDIT_EVENTS, "audit XADD failed; spilling to the replay dir");
    }

    /// Write the overflow queue to disk, in files of at most `flush_batch` frames. Waits for a
    /// spill of the overflow already in progress, so a caller of [`Self::flush`] sees it done.
    async fn spill_overflow(&self) {
        let _spilling = self.spill_lock.lock().await;
        loop {
            let frames: Vec<Frame> = {
                let mut overflow = lock(&self.overflow);
                let n = overflow.len().min(self.config.flush_batch.max(1));
                overflow.drain(..n).collect()
            };
            if frames.is_empty() {
                return;
            }
            self.spill(frames).await;
        }
    }

    /// Write `frames` to a new spill file on a blocking thread. False (and the frames counted
    /// as dropped) when the disk refused.
    async fn spill(&self, frames: Vec<Frame>) -> bool {
        let dir = self.config.replay_dir.clone();
        let nanos = self.next_nanos();
        let n = frames.len() as u64;
        let written =
            tokio::task::spawn_blocking(move || write_spill_file(&dir, nanos, &frames)).await;
        match written {
            Ok(Ok(file)) => self.note_spilled(file, n),
            Ok(Err(error)) => {
                self.note_lost(n, &error);
                false
            }
            Err(join) => {
                self.note_lost(n, &io::Error::other(join.to_string()));
                false
            }
        }
    }

    /// The synchronous spill used once the background task has stopped.
    fn spill_now(&self, frames: Vec<Frame>) {
        let n = frames.len() as u64;
        match write_spill_file(&self.config.replay_dir, self.next_nanos(), &frames) {
            Ok(file) => {
                self.note_spilled(file, n);
            }
            Err(error) => self.note_lost(n, &error),
        }
    }

    fn note_spilled(&self, (key, info): (FileKey, FileInfo), n: u64) -> bool {
        bump(&self.counters.spilled, n);
        lock(&self.files).insert(key, info);
        true
    }

    fn note_lost(&self, n: u64, error: &io::Error) {
        bump(&self.counters.sink_errors, 1);
        bump(&self.counters.dropped, n);
        tracing::error!(
            %error,
            events = n,
            dir = %self.config.replay_dir.display(),
            "audit evidence lost: the stream and the replay dir both refused"
        );
    }

    /// Replay the spill files, oldest first, until one fails. Holds the flush lock.
    async fn replay_locked(&self, schedule: &mut ReplaySchedule) {
        let keys: Vec<FileKey> = lock(&self.files).keys().cloned().collect();
        for key in keys {
            if !self.replay_file(&key).await {
                schedule.next_attempt = Instant::now() + REPLAY_RETRY;
                return;
            }
        }
        schedule.next_attempt = Instant::now() + REPLAY_RETRY;
    }

    /// Replay one file. True when it is fully replayed (and deleted, or gone).
    async fn replay_file(&self, key: &FileKey) -> bool {
        let path = key.1.clone();
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_spill_file(&path)).await
        };
        let lines = match read {
            Ok(Ok(Some(lines))) => lines,
            Ok(Ok(None)) => {
                // Gone (another process replayed it, or an operator moved it).
                lock(&self.files).remove(key);
                return true;
            }
            Ok(Err(error)) => {
                bump(&self.counters.sink_errors, 1);
                tracing::warn!(%error, file = %path.display(), "audit replay: cannot read spill file");
                return false;
            }
            Err(join) => {
                tracing::warn!(error = %join, "audit replay: read task failed");
                return false;
            }
        };
        let mut remaining: Option<usize> = None;
        for (i, line) in lines.iter().enumerate() {
            let frame = match serde_json::from_str::<Frame>(line) {
                Ok(frame) if !frame.data.is_empty() => frame,
                _ => {
                    // A line that no longer parses cannot be re-sent: that evidence is lost.
                    bump(&self.counters.dropped, 1);
                    tracing::error!(
                        file = %path.display(),
                        line = i + 1,
                        "audit evidence lost: spill file line does not parse"
                    );
                    continue;
                }
            };
            if let Err(error) = self
                .streams
                .xadd(names::AUDIT_EVENTS, &frame.fields())
                .await
            {
                bump(&self.counters.sink_errors, 1);
                tracing::info!(%error, "audit replay paused: the stream refused");
                remaining = Some(i);
                break;
            }
            bump(&self.counters.replayed, 1);
        }
        match remaining {
            None => {
                let removed = {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || remove_synced(&path)).await
                };
                match removed {
                    Ok(Ok(())) => {
                        lock(&self.files).remove(key);
                        true
                    }
                    Ok(Err(error)) => {
                        bump(&self.counters.sink_errors, 1);
                        tracing::warn!(%error, file = %path.display(), "audit replay: cannot delete replayed file; it will be re-sent");
                        false
                    }
                    Err(_) => false,
                }
            }
            Some(0) => false,
            Some(i) => {
                let rest: Vec<String> = lines.get(i..).unwrap_or_default().to_vec();
                let rewritten = {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || rewrite_file(&path, &rest)).await
                };
                match rewritten {
                    Ok(Ok(info)) => {
                        lock(&self.files).insert(
                            key.clone(),
                            FileInfo {
                                written_nanos: key.0,
                                ..info
                            },
                        );
                    }
                    Ok(Err(error)) => {
                        // The original stays: its sent lines will be sent again (at least once).
                        bump(&self.counters.sink_errors, 1);
                        tracing::warn!(%error, file = %path.display(), "audit replay: cannot rewrite partly replayed file");
                    }
                    Err(_) => {}
                }
                false
            }
        }
    }

    /// Build the frame of `event`: `id`, `data` (its JSON) and `sig` when a key is configured.
    fn frame(&self, event: &AuditEvent) -> Result<Frame, serde_json::Error> {
        let data = serde_json::to_string(event)?;
        let sig = self
            .config
            .audit_key
            .as_ref()
            .map(|key| sign_payload(key, data.as_bytes()));
        Ok(Frame {
            id: event.id.clone(),
            data,
            sig,
        })
    }

    fn now_nanos(&self) -> i128 {
        let now = self.config.clock.now();
        i128::from(now.timestamp()) * 1_000_000_000 + i128::from(now.timestamp_subsec_nanos())
    }

    /// A file-name stamp: the clock's nanoseconds, strictly increasing within the process.
    fn next_nanos(&self) -> i128 {
        let now = self.now_nanos();
        let mut last = lock(&self.last_nanos);
        *last = now.max(last.saturating_add(1));
        *last
    }
}

impl AuditSink for AuditEmitter {
    fn emit(&self, event: AuditEvent) {
        let frame = match self.frame(&event) {
            Ok(frame) => frame,
            Err(error) => {
                self.note_lost(1, &io::Error::other(error));
                return;
            }
        };
        // INVARIANT: `closed` is read and set under the buffer lock (and the overflow queue is
        // only pushed to under it), so a frame is queued only while the background task will
        // still drain the queues.
        let mut buffer = lock(&self.buffer);
        if self.closed.load(Ordering::SeqCst) {
            drop(buffer);
            // The background task is gone: nobody would flush a queued frame.
            self.spill_now(vec![frame]);
            return;
        }
        if buffer.len() < self.config.buffer_capacity {
            buffer.push_back(frame);
            let full = buffer.len() >= self.config.flush_batch;
            drop(buffer);
            if full {
                self.wake_flush.notify_one();
            }
            return;
        }
        let mut overflow = lock(&self.overflow);
        if overflow.len() < self.config.buffer_capacity {
            overflow.push(frame);
            drop(overflow);
            drop(buffer);
            self.wake_spill.notify_one();
            return;
        }
        drop(overflow);
        drop(buffer);
        self.note_lost(
            1,
            &io::Error::other("audit buffer and overflow queue are full"),
        );
    }
}

/// The nanoseconds in a spill file name, if it is one of ours.
fn name_nanos(name: &str) -> Option<i128> {
    let stem = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    let (_pid, nanos) = stem.rsplit_once('-')?;
    nanos.parse().ok()
}

fn is_spill_name(name: &str) -> bool {
    name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Index the spill files in `dir`. A leftover `<name>.tmp` of a spill is promoted when
/// `<name>` does not exist (the write may have completed; a torn last line is reported as lost
/// at replay); when `<name>` exists it is a partial rewrite, and the original is kept.
fn scan_dir(dir: &Path) -> io::Result<BTreeMap<FileKey, FileInfo>> {
    let mut promoted = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(final_name) = name.strip_suffix(TMP_SUFFIX) else {
            continue;
        };
        if !is_spill_name(final_name) {
            continue;
        }
        let target = dir.join(final_name);
        if target.exists() {
            fs::remove_file(entry.path())?;
        } else {
            fs::rename(entry.path(), &target)?;
        }
        promoted = true;
    }
    if promoted {
        sync_dir(dir)?;
    }
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_spill_name(&name) {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let written_nanos = name_nanos(&name).unwrap_or_else(|| {
            meta.modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
        });
        let lines = fs::read_to_string(entry.path())
            .map(|text| text.lines().filter(|l| !l.trim().is_empty()).count() as u64)
            .unwrap_or(0);
        files.insert(
            (written_nanos, entry.path()),
            FileInfo {
                lines,
                bytes: meta.len(),
                written_nanos,
            },
        );
    }
    Ok(files)
}

/// Write `lines` (each without its newline) to `path` durably: a 0600 `.tmp` file, fsync,
/// rename over `path`, fsync of the directory.
fn write_lines_atomically(path: &Path, lines: &[String]) -> io::Result<u64> {
    let tmp = path.with_file_name(format!(
        "{}{TMP_SUFFIX}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| text.len() as u64)
}

/// Write a new spill file of `frames` in `dir`, named after `nanos` (bumped past any file of
/// that name left by an earlier process with the same pid).
fn write_spill_file(dir: &Path, nanos: i128, frames: &[Frame]) -> io::Result<(FileKey, FileInfo)> {
    let lines = frames
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(io::Error::other)?;
    let pid = std::process::id();
    let mut nanos = nanos;
    let path = loop {
        let path = dir.join(format!("{FILE_PREFIX}{pid}-{nanos}{FILE_SUFFIX}"));
        if !path.exists() {
            break path;
        }
        nanos = nanos.saturating_add(1);
    };
    let bytes = write_lines_atomically(&path, &lines)?;
    Ok((
        (nanos, path),
        FileInfo {
            lines: lines.len() as u64,
            bytes,
            written_nanos: nanos,
        },
    ))
}

/// The non-blank lines of a spill file; `None` when it no longer exists.
fn read_spill_file(path: &Path) -> io::Result<Option<Vec<String>>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect(),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replace a partly replayed file with its remaining lines.
fn rewrite_file(path: &Path, rest: &[String]) -> io::Result<FileInfo> {
    let bytes = write_lines_atomically(path, rest)?;
    Ok(FileInfo {
        lines: rest.len() as u64,
        bytes,
        written_nanos: 0,
    })
}

fn remove_synced(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::ingest::prepare;
    use crate::clock::FakeClock;
    use crate::streams::{EntryId, MemoryStreams};

    const FIXTURE: &[u8] =
        include_bytes!("../../tests/fixtures/interop/audit-event.allow.valid.json");
    const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn spill_names_parse() {
        assert_eq!(
            name_nanos("pending-12-1779364800000000000.ndjson"),
            Some(1_779_364_800_000_000_000)
        );
        assert_eq!(name_nanos("pending-12-x.ndjson"), None);
        assert_eq!(name_nanos("other.ndjson"), None);
        assert!(!is_spill_name("pending-1-2.ndjson.tmp"));
    }

    #[tokio::test]
    async fn emitted_frame_parses_and_passes_the_ingest_checks() {
        let dir =
            std::env::temp_dir().join(format!("caracal-emitter-unit-{}", uuid::Uuid::now_v7()));
        let clock: SharedClock = Arc::new(FakeClock::at_fixture_epoch());
        let streams = Arc::new(MemoryStreams::new(Arc::clone(&clock)));
        let key = AuditHmacKey::from_hex(KEY_HEX).unwrap();
        let mut config = EmitterConfig::new(&dir);
        config.audit_key = Some(key.clone());
        config.clock = clock;
        let emitter = AuditEmitter::new(streams.clone(), config).unwrap();
        let event = AuditEvent::parse(FIXTURE).unwrap();
        emitter.emit(event.clone());
        emitter.flush().await.unwrap();
        let entries = streams
            .range(names::AUDIT_EVENTS, EntryId::MIN, EntryId::MAX, None)
            .await
            .unwrap();
        assert_eq!(entries.len(), 1);
        let fields = &entries[0].fields;
        assert_eq!(
            fields.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            vec!["id", "data", "sig"]
        );
        assert_eq!(fields.get("id"), Some(event.id.as_str()));
        let data = fields.get("data").unwrap();
        assert_eq!(AuditEvent::parse(data.as_bytes()).unwrap(), event);
        assert_eq!(
            fields.get("sig").unwrap(),
            sign_payload(&key, data.as_bytes())
        );
        let incoming = prepare(fields, Some(&key)).unwrap();
        assert_eq!(incoming.event, event.clone().into_stored().unwrap());
        assert_eq!(incoming.ingest_signature.as_deref(), fields.get("sig"));
        // A different key refuses it: the sig really covers the data.
        let other = AuditHmacKey::from_bytes([9u8; 32]).unwrap();
        assert!(prepare(fields, Some(&other)).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
