//! The hourly NDJSON exporter (reference §2.10, with NDJSON files for Parquet objects): while
//! this replica holds the export lease (`CARA0001`, [`crate::leader`]), each tick exports every
//! settled hour after the watermark ([`hours_due`]) to `AUDIT_EXPORT_DIR/`[`object_key`], one
//! [`export_line`] per row ordered by `(zone_id, chain_seq)`, and advances the watermark after
//! each hour. `caracal audit verify --export FILE...` re-verifies the files offline.
//!
//! Invariants:
//! - A file appears complete or not at all: it is written and fsync'd under a temporary name
//!   and hard-linked into place, and the link refuses to replace an existing file (the
//!   reference's `If-None-Match: *`). An existing file counts as already exported, so a re-run
//!   after a crash between the link and the watermark is harmless.
//! - The watermark moves only after its hour's file is in place (or the hour had no rows: no
//!   file, watermark advanced). Any error stops the tick; the next tick retries that hour.
//! - Rows are selected by ingest time, so a late event (old `occurred_at`) ships in the hour it
//!   was ingested (check 36).
//!
//! Metrics: `caracal_audit_export_events_total`, `caracal_audit_export_errors_total`,
//! `caracal_audit_export_duration_seconds` (last hour's), `caracal_audit_export_backlog_hours`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_core::audit::export::{
    ExportError, HOURLY_EXPORTER, export_line, hours_due, object_key,
};
use caracal_core::backend::postgres::store::EXPORT_LEASE_KEY;
use caracal_core::backend::postgres::{PgLeaderLease, PgStore};
use caracal_core::clock::SharedClock;
use caracal_core::store::StoreError;
use caracal_core::store::audit::AuditExportStore;
use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::leader::{LeaderJob, run_as_leader};

/// Rows per read of one hour.
pub const EXPORT_PAGE: u32 = 1_000;

/// How the exporter runs (`AUDIT_EXPORT_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// `AUDIT_EXPORT_DIR`: the export root (the exporter is off when unset).
    pub dir: PathBuf,
    /// `AUDIT_EXPORT_INTERVAL_SECS` (300): time between ticks while leader.
    pub interval: Duration,
    /// `AUDIT_EXPORT_SETTLE_SECS` (300): how long after its end an hour is exported; longer
    /// than any append transaction (see `caracal_core::audit::export`).
    pub settle: Duration,
    /// Time between lease probes (30 s).
    pub lease_check: Duration,
}

impl ExportSettings {
    /// Defaults for an export root.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            interval: Duration::from_secs(300),
            settle: Duration::from_secs(300),
            lease_check: Duration::from_secs(30),
        }
    }
}

/// Why a tick stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportRunError {
    /// Reading rows or the watermark.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// Encoding a row.
    #[error(transparent)]
    Encode(#[from] ExportError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportRunError + '_ {
    move |source| ExportRunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What one hour's export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourExport {
    /// The hour.
    pub hour: DateTime<Utc>,
    /// Rows written (0: no file).
    pub rows: u64,
    /// The file, when rows were written or it already existed.
    pub path: Option<PathBuf>,
    /// The file was already there (a re-run): left as it was.
    pub already_present: bool,
}

/// Export one hour to `dir` (see the module invariants). Does not touch the watermark.
pub async fn export_hour(
    store: &dyn AuditExportStore,
    dir: &Path,
    hour: DateTime<Utc>,
) -> Result<HourExport, ExportRunError> {
    let until = hour + chrono::Duration::hours(1);
    let target = dir.join(object_key(hour));
    let parent = target.parent().unwrap_or(dir).to_path_buf();
    let mut rows = 0u64;
    let mut file: Option<(tokio::io::BufWriter<tokio::fs::File>, PathBuf)> = None;
    let mut after: Option<(String, i64)> = None;
    loop {
        let page = store
            .read_ingest_window(
                hour,
                until,
                after.as_ref().map(|(z, s)| (z.as_str(), *s)),
                EXPORT_PAGE,
            )
            .await?;
        if file.is_none() && !page.is_empty() {
            tokio::fs::create_dir_all(&parent)
                .await
                .map_err(io(&parent))?;
            let tmp = parent.join(format!(
                ".{}.{}.partial",
                hour.format("%Y-%m-%dT%H"),
                std::process::id()
            ));
            let f = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
            file = Some((tokio::io::BufWriter::new(f), tmp));
        }
        if let Some((out, tmp)) = file.as_mut() {
            for row in &page {
                let mut line = export_line(row)?;
                line.push('\n');
                out.write_all(line.as_bytes()).await.map_err(io(tmp))?;
            }
        }
        rows += page.len() as u64;
        match page.last() {
            Some(last) if page.len() >= EXPORT_PAGE as usize => {
                after = Some((last.event.zone_id.clone(), last.chain_seq));
            }
            _ => break,
        }
    }
    let Some((mut out, tmp)) = file else {
        return Ok(HourExport {
            hour,
            rows: 0,
            path: None,
            already_present: false,
        });
    };
    out.flush().await.map_err(io(&tmp))?;
    let f = out.into_inner();
    f.sync_all().await.map_err(io(&tmp))?;
    drop(f);
    // INVARIANT: a link never replaces an existing file, so a complete export is never
    // overwritten; an existing one means this hour was exported before the watermark moved.
    let linked = tokio::fs::hard_link(&tmp, &target).await;
    let _ = tokio::fs::remove_file(&tmp).await;
    let already_present = match linked {
        Ok(()) => false,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => true,
        Err(e) => return Err(io(&target)(e)),
    };
    // Make the new directory entry durable before the watermark moves past it.
    if let Ok(d) = tokio::fs::File::open(&parent).await {
        let _ = d.sync_all().await;
    }
    Ok(HourExport {
        hour,
        rows,
        path: Some(target),
        already_present,
    })
}

/// One tick at `now`: export every due hour in order, advancing the watermark after each.
/// Stops at the first error (the hours before it stay exported).
pub async fn run_tick(
    store: &dyn AuditExportStore,
    settings: &ExportSettings,
    now: DateTime<Utc>,
) -> Result<Vec<HourExport>, ExportRunError> {
    let watermark = store.export_watermark(HOURLY_EXPORTER).await?;
    let settle = chrono::Duration::from_std(settings.settle).unwrap_or(chrono::Duration::MAX);
    let hours = hours_due(now, watermark, settle);
    metrics::gauge!("caracal_audit_export_backlog_hours").set(hours.len() as f64);
    let mut done = Vec::with_capacity(hours.len());
    for (i, hour) in hours.iter().enumerate() {
        let started = Instant::now();
        let export = export_hour(store, &settings.dir, *hour).await?;
        store.set_export_watermark(HOURLY_EXPORTER, *hour).await?;
        metrics::counter!("caracal_audit_export_events_total").increment(export.rows);
        metrics::gauge!("caracal_audit_export_duration_seconds")
            .set(started.elapsed().as_secs_f64());
        metrics::gauge!("caracal_audit_export_backlog_hours").set((hours.len() - i - 1) as f64);
        tracing::info!(
            hour = %hour,
            rows = export.rows,
            already_present = export.already_present,
            "audit export: hour exported"
        );
        done.push(export);
    }
    Ok(done)
}

async fn logged_tick(
    store: &dyn AuditExportStore,
    settings: &ExportSettings,
    now: DateTime<Utc>,
) -> bool {
    match run_tick(store, settings, now).await {
        Ok(_) => true,
        Err(e) => {
            metrics::counter!("caracal_audit_export_errors_total").increment(1);
            tracing::warn!(error = %e, "audit export tick failed; retrying");
            false
        }
    }
}

/// The exporter on Postgres, leader-only, until `stop` turns true. The lease uses its own
/// small pool at `url`, as the retention worker does.
pub fn spawn_postgres(
    url: String,
    store: Arc<dyn AuditExportStore>,
    clock: SharedClock,
    settings: ExportSettings,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let options = caracal_core::backend::postgres::PgStoreOptions {
            max_size: 2,
            application_name: "caracal-audit-export".to_owned(),
            ..Default::default()
        };
        let lease_store = match PgStore::open(&url, options).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "audit export: cannot open Postgres");
                return;
            }
        };
        let lease = PgLeaderLease::new(lease_store, EXPORT_LEASE_KEY);
        let job = LeaderJob {
            name: "export",
            interval: settings.interval,
            lease_check: settings.lease_check,
        };
        run_as_leader(lease, job, stop, || {
            logged_tick(&*store, &settings, clock.now())
        })
        .await;
    })
}

/// The exporter on an in-process ledger (one process, no lease): a tick every interval,
/// retried sooner after a failure, until `stop` turns true.
pub fn spawn_local(
    store: Arc<dyn AuditExportStore>,
    clock: SharedClock,
    settings: ExportSettings,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let ok = logged_tick(&*store, &settings, clock.now()).await;
            let wait = if ok {
                settings.interval
            } else {
                settings.lease_check
            };
            if crate::sleep_or_stop(wait.max(Duration::from_millis(10)), &mut stop).await {
                break;
            }
        }
    })
}
