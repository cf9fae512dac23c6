//! The `audit-ingest` scenario, in process: an [`AuditEmitter`] (what every service uses)
//! hands events to the `caracal.audit.events` stream in batches of [`BATCH`], and the Audit
//! service's ingestor (`caracal_audit::AuditService`) chains them into the ledger. Two
//! backings ([`Ledger`]): the in-memory stream and memory ledger (the embedded stack's), or
//! Redis and the Postgres ledger (the durable stack's; the issue's ≥ 20,000 events/s target is
//! for this one). Throughput is events per second from the first emit until the zone's chain
//! head holds every event; latency is that of one batch (emit + flush to the stream). The loss
//! check is exact: the chain must hold exactly the events emitted, and the streaming chain
//! verifier must find nothing (content hashes, links, sequence).
//!
//! Why in process even with `--target`: the ingestor is not reachable over HTTP (events reach
//! it through the stream), so the scenario measures the ingestor itself on the ledger the
//! harness can reach. On Postgres and Redis the harness's own stack must be stopped first: a
//! second ingestor in the same consumer group would share the stream with this one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_audit::{AuditConfig, AuditService, Backends};
use caracal_core::audit::emitter::{AuditEmitter, EmitterConfig};
use caracal_core::audit::sink::AuditSink;
use caracal_core::audit::{AuditEvent, ChainVerifier, VerifyOptions};
use caracal_core::clock::{SharedClock, SystemClock};
use caracal_core::ids::{IdGen, UuidV7};
use caracal_core::store::audit::AuditLedger;
use caracal_core::store::memory::MemoryStore;
use caracal_core::streams::MemoryStreams;
use caracal_service::config::Secret;
use hdrhistogram::Histogram;

use super::load::Figures;
use super::report::Loss;

/// Events per emitted batch.
pub const BATCH: u64 = 1000;
const EVENT: &str =
    include_str!("../../../../caracal-core/tests/fixtures/interop/audit-event.allow.valid.json");

/// The ingestor falls behind the emitter on a slow ledger; the wait for it to catch up ends
/// when the chain stops growing for this long.
const STALL: Duration = Duration::from_secs(30);

/// Where the events go.
#[derive(Debug, Clone, Copy)]
pub enum Ledger<'a> {
    /// The in-memory stream and ledger.
    Memory,
    /// Redis at `redis_url` and the Postgres ledger at `database_url` (already migrated).
    Postgres {
        /// The Postgres URL.
        database_url: &'a str,
        /// The Redis URL.
        redis_url: &'a str,
    },
}

impl Ledger<'_> {
    /// How the report names this backing.
    pub fn label(self) -> &'static str {
        match self {
            Ledger::Memory => "in-process, memory stream and ledger",
            Ledger::Postgres { .. } => "in-process, Redis stream, Postgres ledger",
        }
    }
}

/// Emit batches for `duration`, then wait for the ledger to catch up (as long as it keeps
/// growing; see [`STALL`]).
pub async fn run(duration: Duration, ledger: Ledger<'_>) -> Result<(Figures, Loss), String> {
    let mut config = AuditConfig::dev();
    let backends = match ledger {
        Ledger::Memory => {
            let clock: SharedClock = Arc::new(SystemClock);
            let store = Arc::new(MemoryStore::with_clock(clock.clone()));
            Backends::on_memory_store(Arc::new(MemoryStreams::new(clock)), store)
        }
        Ledger::Postgres {
            database_url,
            redis_url,
        } => {
            config.database_url = Some(Secret::new(database_url.to_owned()));
            config.redis_url = Some(Secret::new(redis_url.to_owned()));
            let b = Backends::connect(&config)
                .await
                .map_err(|e| format!("audit backends: {e}"))?;
            caracal_core::streams::provision::provision(&*b.streams)
                .await
                .map_err(|e| format!("provisioning the streams: {e}"))?;
            b
        }
    };
    let streams = Arc::clone(&backends.streams);
    let store: Arc<dyn AuditLedger> = Arc::clone(&backends.ledger);
    let audit = AuditService::new(config, backends).map_err(|e| format!("audit service: {e}"))?;
    let workers = audit.spawn_workers();
    let ready = Instant::now() + Duration::from_secs(10);
    while !audit.consumer_health().is_healthy() {
        if Instant::now() > ready {
            return Err("the audit ingestor did not start within 10 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replay = std::env::temp_dir().join(format!("caracal-bench-ingest-{}", UuidV7.next_id()));
    let emitter = AuditEmitter::new(Arc::clone(&streams), EmitterConfig::new(replay.clone()))
        .map_err(|e| format!("emitter: {e}"))?;
    let zone = UuidV7.next_id();
    let template = AuditEvent::parse(EVENT.as_bytes()).map_err(|e| e.to_string())?;
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let end = start + duration;
    let mut emitted = 0u64;
    let mut errors = 0u64;
    let mut samples = Vec::new();
    while Instant::now() < end {
        let t = Instant::now();
        for _ in 0..BATCH {
            let mut e = template.clone();
            e.id = UuidV7.next_id();
            e.request_id = UuidV7.next_id();
            e.zone_id.clone_from(&zone);
            emitter.emit(e);
        }
        emitted += BATCH;
        if let Err(e) = emitter.flush().await {
            errors += 1;
            if samples.is_empty() {
                samples.push(e.to_string());
            }
        }
        let micros = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
        histogram.saturating_record(micros.clamp(1, 60_000_000));
    }
    // Wait for the ingestor to chain every event, as long as the chain keeps growing.
    let (mut last, mut last_growth) = (0u64, Instant::now());
    let rows = loop {
        let head = store
            .chain_head(&zone)
            .await
            .map_err(|e| format!("ledger: {e}"))?;
        let rows = head.map_or(0, |h| u64::try_from(h.chain_seq).unwrap_or(0));
        if rows > last {
            (last, last_growth) = (rows, Instant::now());
        }
        if rows >= emitted || last_growth.elapsed() > STALL {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let window = start.elapsed();
    workers.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&replay);
    // The whole chain through the streaming verifier (content hashes, links, sequence).
    let mut verifier = ChainVerifier::new(&zone, VerifyOptions::default());
    let mut after = 0i64;
    loop {
        let page = store
            .read_chain(&zone, after, 10_000)
            .await
            .map_err(|e| format!("ledger: {e}"))?;
        let Some(last) = page.last() else { break };
        after = last.chain_seq;
        for row in &page {
            verifier.push(row);
        }
    }
    let report = verifier.finish();
    let findings = report.findings.len() as u64 + report.findings_omitted;
    let loss = if rows == emitted && report.rows_checked == emitted && findings == 0 {
        Loss::Lossless {
            expected: emitted,
            rows,
        }
    } else {
        Loss::Lost {
            expected: emitted,
            rows: report.rows_checked,
            findings,
        }
    };
    let figures = Figures {
        requests: emitted,
        errors,
        error_samples: samples,
        per_second: rows as f64 / window.as_secs_f64().max(f64::EPSILON),
        p50_us: histogram.value_at_quantile(0.50),
        p95_us: histogram.value_at_quantile(0.95),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
        window,
        audit_events_expected: emitted,
        exhausted: false,
    };
    Ok((figures, loss))
}
