//! `caracal audit verify`: run the chain verifier over a Postgres ledger.
//!
//! Streams each zone's rows through `read_chain` pages into the verifier of
//! `caracal_core::audit` (content hashes, `prev` links, chain HMACs when a key is given, gaps
//! and duplicate `chain_seq`, and tip truncation against the zone's newest checkpoint), prints
//! one table row per zone and the first findings, and exits 1 on any finding.
//!
//! The database URL is resolved as for `caracal migrate`; the key from `--audit-hmac-key-file`,
//! else `AUDIT_HMAC_KEY_FILE`, else `AUDIT_HMAC_KEY` (hex, at least 32 bytes). Without a key
//! chain HMACs and checkpoint signatures are not checked, and the output says so.
//!
//! `--since T` verifies only the rows ingested at or after `T` (a window per zone).
//!
//! `caracal audit verify --export FILE...` verifies export files offline with the same verifier
//! (no database): rows grouped per zone, each zone from genesis when its first row is seq 1,
//! otherwise as a window.
//!
//! `caracal audit export-hourly --dir DIR` runs the Audit service's hourly exporter once
//! (`caracal_audit::export`): every settled hour after the watermark, under the export lease.
//!
//! `caracal audit export --zone Z [--since T] [--until T] [--out FILE|-]` writes the zone's
//! stored rows as NDJSON, one row per line in `chain_seq` order: the event's wire fields plus
//! `content_sha256`, `prev_content_sha256`, `chain_hmac`, `chain_seq`, `ingested_at` and
//! `ingest_signature`, so an export can be re-verified offline. Rows are read in keyset pages
//! of [`EXPORT_PAGE`] by `chain_seq` (memory stays constant); `--since`/`--until` filter on
//! `occurred_at` (`[since, until)`) in the database. A file is written to `FILE.partial` and
//! renamed into place only when complete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use caracal_core::audit::export::{export_line, verify_export};
use caracal_core::audit::ledger_verify::{verify_ledger, verify_ledger_zone_since};
use caracal_core::audit::{AuditHmacKey, VerifyReport};
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::clock::{Clock, SystemClock};
use caracal_core::store::audit::{AuditLedger, AuditQuery};
use clap::{Args, Subcommand};

use super::CmdError;
use super::migrate::{redact, resolve_url};

/// Arguments of `caracal audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    action: AuditAction,
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Verify the hash chains of the audit ledger; exits 1 naming each zone with findings.
    Verify(VerifyArgs),
    /// Export one zone's rows as NDJSON (chain fields included), in chain order.
    Export(ExportArgs),
    /// Run the hourly exporter once: every settled hour after the watermark, one NDJSON file
    /// per hour under DIR (takes the export lease; refuses while a service holds it).
    ExportHourly(ExportHourlyArgs),
}

/// Arguments of `caracal audit export-hourly`.
#[derive(Debug, Args)]
struct ExportHourlyArgs {
    /// Postgres URL [env: DATABASE_URL]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Read the URL from this file (trailing whitespace trimmed) [env: DATABASE_URL_FILE]
    #[arg(long, value_name = "PATH", conflicts_with = "database_url")]
    database_url_file: Option<PathBuf>,
    /// The export root (files land in DIR/audit/YYYY/MM/DD/YYYY-MM-DDTHH.ndjson)
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Seconds after its end an hour counts as settled
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    settle_secs: u64,
    /// Timeout of the connection and of each query, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout_secs: u64,
}

/// Rows per page of `caracal audit export`.
pub const EXPORT_PAGE: u32 = 1_000;

/// Arguments of `caracal audit export`.
#[derive(Debug, Args)]
struct ExportArgs {
    /// Postgres URL [env: DATABASE_URL]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Read the URL from this file (trailing whitespace trimmed) [env: DATABASE_URL_FILE]
    #[arg(long, value_name = "PATH", conflicts_with = "database_url")]
    database_url_file: Option<PathBuf>,
    /// The zone to export
    #[arg(long, value_name = "ZONE")]
    zone: String,
    /// Only rows with occurred_at at or after this RFC 3339 instant
    #[arg(long, value_name = "RFC3339")]
    since: Option<String>,
    /// Only rows with occurred_at before this RFC 3339 instant
    #[arg(long, value_name = "RFC3339")]
    until: Option<String>,
    /// Output file, or `-` for standard output
    #[arg(long, value_name = "FILE", default_value = "-")]
    out: String,
    /// Timeout of the connection and of each query, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout_secs: u64,
}

/// Arguments of `caracal audit verify`.
#[derive(Debug, Args)]
struct VerifyArgs {
    /// Verify these export files (NDJSON of `caracal audit export` or the hourly exporter,
    /// read in the order given) offline instead of the database
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = ["database_url", "database_url_file", "zone"])]
    export: Vec<PathBuf>,
    /// Postgres URL [env: DATABASE_URL]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Read the URL from this file (trailing whitespace trimmed) [env: DATABASE_URL_FILE]
    #[arg(long, value_name = "PATH", conflicts_with = "database_url")]
    database_url_file: Option<PathBuf>,
    /// Only this zone (default: every zone with rows)
    #[arg(long, value_name = "ZONE")]
    zone: Option<String>,
    /// Only the rows ingested at or after this RFC 3339 instant (a window per zone: the
    /// window's first link is not judged, every later one is)
    #[arg(long, value_name = "RFC3339", conflicts_with = "export")]
    since: Option<String>,
    /// File holding AUDIT_HMAC_KEY (hex) [env: AUDIT_HMAC_KEY_FILE, AUDIT_HMAC_KEY]
    #[arg(long, value_name = "PATH")]
    audit_hmac_key_file: Option<PathBuf>,
    /// Timeout of the connection and of each query, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout_secs: u64,
}

/// Resolve the audit key (`env` injected for tests).
pub fn resolve_key(
    flag_file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<AuditHmacKey>, CmdError> {
    let file = flag_file.map(Path::to_path_buf).or_else(|| {
        env("AUDIT_HMAC_KEY_FILE")
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
    });
    let text = match file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                CmdError::Config(format!(
                    "cannot read the audit key file {}: {e}",
                    path.display()
                ))
            })?;
            let text = text.trim_end().to_owned();
            if text.is_empty() {
                return Err(CmdError::Config(format!(
                    "the audit key file {} is empty",
                    path.display()
                )));
            }
            Some(text)
        }
        None => env("AUDIT_HMAC_KEY").filter(|k| !k.is_empty()),
    };
    text.map(|t| {
        AuditHmacKey::from_hex(t.trim())
            .map_err(|e| CmdError::Config(format!("AUDIT_HMAC_KEY: {e}")))
    })
    .transpose()
}

/// Run `caracal audit …`.
pub async fn run(args: AuditArgs) -> Result<(), CmdError> {
    match args.action {
        AuditAction::Verify(v) => verify(v).await,
        AuditAction::Export(e) => export(e).await,
        AuditAction::ExportHourly(e) => export_hourly(e).await,
    }
}

/// Open a small store for a command and check it answers.
async fn open_store(url: &str, timeout_secs: u64, name: &str) -> Result<PgStore, CmdError> {
    let timeout = Duration::from_secs(timeout_secs.max(1));
    let options = PgStoreOptions {
        max_size: 2,
        connection_timeout: timeout,
        connect_timeout: timeout,
        operation_timeout: Some(timeout),
        application_name: name.to_owned(),
        ..PgStoreOptions::default()
    };
    let connect_error = |e: caracal_core::store::StoreError| CmdError::Connect {
        url: redact(url),
        reason: e.to_string(),
    };
    let store = PgStore::open(url, options).await.map_err(connect_error)?;
    store.ping().await.map_err(connect_error)?;
    Ok(store)
}

/// The refusal of a flag that is not an RFC 3339 instant.
fn bad_instant(flag: &str, text: &str) -> CmdError {
    CmdError::Config(format!("{flag}: {text:?} is not an RFC 3339 instant"))
}

async fn export(args: ExportArgs) -> Result<(), CmdError> {
    let env = |k: &str| std::env::var(k).ok();
    let (url, _) = resolve_url(
        args.database_url.as_deref(),
        args.database_url_file.as_deref(),
        env,
    )?;
    if args.zone.is_empty() {
        return Err(CmdError::Config("--zone must not be empty".to_owned()));
    }
    let mut query = AuditQuery {
        zone_id: args.zone.clone(),
        // The instants decode through serde into the query's own timestamp type.
        since: args
            .since
            .as_deref()
            .map(|t| serde_json::from_value(t.into()).map_err(|_| bad_instant("--since", t)))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| serde_json::from_value(t.into()).map_err(|_| bad_instant("--until", t)))
            .transpose()?,
        decision: None,
        request_id: None,
        after_seq: 0,
        limit: EXPORT_PAGE,
    };
    let store = open_store(&url, args.timeout_secs, "caracal-audit-export").await?;
    let io = |what: String| move |e: std::io::Error| CmdError::Config(format!("{what}: {e}"));
    let (mut out, target): (Box<dyn Write>, Option<(PathBuf, PathBuf)>) = if args.out == "-" {
        (
            Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            None,
        )
    } else {
        let path = PathBuf::from(&args.out);
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = std::fs::File::create(&partial)
            .map_err(io(format!("cannot create {}", partial.display())))?;
        (
            Box::new(std::io::BufWriter::new(file)),
            Some((partial, path)),
        )
    };
    let mut written: u64 = 0;
    let result: Result<(), CmdError> = async {
        loop {
            let page = store
                .search_audit(&query)
                .await
                .map_err(|e| CmdError::Config(format!("reading the ledger failed: {e}")))?;
            for row in &page {
                let line = export_line(row).map_err(|e| CmdError::Config(e.to_string()))?;
                writeln!(out, "{line}").map_err(io("writing the export".to_owned()))?;
                written += 1;
            }
            match page.last() {
                Some(last) if page.len() >= EXPORT_PAGE as usize => {
                    query.after_seq = last.chain_seq
                }
                _ => break,
            }
        }
        out.flush().map_err(io("writing the export".to_owned()))
    }
    .await;
    drop(out);
    match (result, target) {
        (Ok(()), Some((partial, path))) => {
            std::fs::rename(&partial, &path)
                .map_err(io(format!("cannot move the export to {}", path.display())))?;
            eprintln!(
                "exported {written} rows of zone {} to {}",
                args.zone,
                path.display()
            );
            Ok(())
        }
        (Ok(()), None) => Ok(()),
        (Err(e), Some((partial, _))) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

async fn export_hourly(args: ExportHourlyArgs) -> Result<(), CmdError> {
    use caracal_core::backend::postgres::PgLeaderLease;
    use caracal_core::backend::postgres::store::EXPORT_LEASE_KEY;

    let env = |k: &str| std::env::var(k).ok();
    let (url, _) = resolve_url(
        args.database_url.as_deref(),
        args.database_url_file.as_deref(),
        env,
    )?;
    let store = open_store(&url, args.timeout_secs, "caracal-audit-export").await?;
    let mut lease = PgLeaderLease::new(store.clone(), EXPORT_LEASE_KEY);
    let held = lease
        .try_acquire()
        .await
        .map_err(|e| CmdError::Config(format!("cannot take the export lease: {e}")))?;
    if !held {
        return Err(CmdError::Config(
            "another exporter holds the export lease (a running audit service); not exporting"
                .to_owned(),
        ));
    }
    let mut settings = caracal_audit::export::ExportSettings::new(&args.dir);
    settings.settle = Duration::from_secs(args.settle_secs);
    let result = caracal_audit::export::run_tick(&store, &settings, SystemClock.now()).await;
    lease.release().await;
    let hours = result.map_err(|e| CmdError::Config(format!("export failed: {e}")))?;
    for h in &hours {
        match &h.path {
            Some(p) if h.already_present => {
                println!("{}  already exported: {}", h.hour, p.display())
            }
            Some(p) => println!("{}  {} rows  {}", h.hour, h.rows, p.display()),
            None => println!("{}  no rows", h.hour),
        }
    }
    if hours.is_empty() {
        println!("nothing to export: the watermark is at the newest settled hour");
    }
    Ok(())
}

/// Verify export files offline.
fn verify_files(
    files: &[PathBuf],
    key: Option<&AuditHmacKey>,
) -> Result<Vec<VerifyReport>, CmdError> {
    let mut text = String::new();
    for file in files {
        let body = std::fs::read_to_string(file)
            .map_err(|e| CmdError::Config(format!("cannot read {}: {e}", file.display())))?;
        text.push_str(&body);
        if !body.ends_with('\n') {
            text.push('\n');
        }
    }
    verify_export(text.lines(), key).map_err(|e| CmdError::Audit(format!("not an export: {e}")))
}

async fn verify(args: VerifyArgs) -> Result<(), CmdError> {
    let env = |k: &str| std::env::var(k).ok();
    if !args.export.is_empty() {
        let key = resolve_key(args.audit_hmac_key_file.as_deref(), env)?;
        let reports = verify_files(&args.export, key.as_ref())?;
        return conclude(&reports, key.is_some());
    }
    let (url, _) = resolve_url(
        args.database_url.as_deref(),
        args.database_url_file.as_deref(),
        env,
    )?;
    let key = resolve_key(args.audit_hmac_key_file.as_deref(), env)?;
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let options = PgStoreOptions {
        max_size: 2,
        connection_timeout: timeout,
        connect_timeout: timeout,
        operation_timeout: Some(timeout),
        application_name: "caracal-audit-verify".to_owned(),
        ..PgStoreOptions::default()
    };
    let store = PgStore::open(&url, options)
        .await
        .map_err(|e| CmdError::Connect {
            url: redact(&url),
            reason: e.to_string(),
        })?;
    store.ping().await.map_err(|e| CmdError::Connect {
        url: redact(&url),
        reason: e.to_string(),
    })?;
    let read_failed = |e: caracal_core::store::StoreError| {
        CmdError::Config(format!("reading the ledger failed: {e}"))
    };
    let reports = match &args.since {
        None => verify_ledger(&store, args.zone.as_deref(), key.as_ref())
            .await
            .map_err(read_failed)?,
        Some(text) => {
            let since: chrono::DateTime<chrono::Utc> = serde_json::from_value(text.as_str().into())
                .map_err(|_| bad_instant("--since", text))?;
            let zones = match &args.zone {
                Some(z) => vec![z.clone()],
                None => store.ledger_zones().await.map_err(read_failed)?,
            };
            let mut reports = Vec::with_capacity(zones.len());
            for zone in zones {
                reports.push(
                    verify_ledger_zone_since(&store, &store, &zone, key.as_ref(), since)
                        .await
                        .map_err(read_failed)?,
                );
            }
            reports
        }
    };
    conclude(&reports, key.is_some())
}

/// Print the reports; an error naming the zones with findings.
fn conclude(reports: &[VerifyReport], keyed: bool) -> Result<(), CmdError> {
    print!("{}", render(reports, keyed));
    let bad: Vec<&str> = reports
        .iter()
        .filter(|r| !r.is_clean())
        .map(|r| r.zone_id.as_str())
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CmdError::Audit(format!(
            "chain verification failed in {} zone{}: {}",
            bad.len(),
            if bad.len() == 1 { "" } else { "s" },
            bad.join(", ")
        )))
    }
}

/// The table and the first findings per zone (pure).
pub fn render(reports: &[VerifyReport], keyed: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if !keyed {
        out.push_str(
            "note: no AUDIT_HMAC_KEY given: chain HMACs and checkpoint signatures not checked\n",
        );
    }
    if reports.is_empty() {
        out.push_str("no audit rows\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24} {:>8} {:>8} {:>8} {:>6} {:>6} {:>5} {:>5} {:<11} STATUS",
        "ZONE", "ROWS", "LAST", "CONTENT", "LINK", "HMAC", "GAPS", "DUPS", "CHECKPOINT"
    );
    for r in reports {
        let checkpoint = r
            .checkpoint
            .map(|c| {
                serde_json::to_value(c)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| "none".to_owned());
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>8} {:>8} {:>6} {:>6} {:>5} {:>5} {:<11} {}",
            r.zone_id,
            r.rows_checked,
            r.last_seq.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            r.content_mismatches,
            r.chain_breaks,
            r.hmac_failures,
            r.gaps,
            r.duplicate_seqs,
            checkpoint,
            if r.is_clean() { "ok" } else { "FAILED" }
        );
    }
    for r in reports.iter().filter(|r| !r.is_clean()) {
        for f in r.findings.iter().take(10) {
            let kind = serde_json::to_value(&f.kind)
                .ok()
                .and_then(|v| v.get("kind").and_then(|k| k.as_str().map(str::to_owned)))
                .unwrap_or_default();
            match &f.row {
                Some(row) => {
                    let _ = writeln!(
                        out,
                        "finding: zone {} seq {} event {}: {kind}",
                        r.zone_id, row.chain_seq, row.event_id
                    );
                }
                None => {
                    let _ = writeln!(out, "finding: zone {}: {kind}", r.zone_id);
                }
            }
        }
        let more = r.finding_count().saturating_sub(10);
        if more > 0 {
            let _ = writeln!(out, "finding: zone {}: … and {more} more", r.zone_id);
        }
    }
    out
}
