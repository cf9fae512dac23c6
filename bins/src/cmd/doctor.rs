//! `caracal doctor`: the five data-flow reconciliation checks of the failure page
//! (reference `operations/failure-modes`), run after an outage and before traffic resumes.
//!
//! | Row | What it checks | Fails when |
//! |---|---|---|
//! | `migrations` | every embedded migration applied (checksums verified) and the expected tables present | Postgres unreachable, a migration pending or edited, a table missing |
//! | `streams` | the nine streams and their groups (`caracal streams verify`), pending entries and their oldest idle time, consumers' dead letters; per-replica groups (`opa-engine:<instance>`, `sts-keys:<instance>`, `gateway-revocation:<host>`) counted, and those holding an entry idle longer than `--max-pending-idle-secs` named | Redis unreachable, a stream or group missing, a pending entry of a provisioned group idle longer than `--max-pending-idle-secs`, a dead letter present |
//! | `outbox` | the outbox's pending and dead rows (`OutboxStore::outbox_stats`) | Postgres unreachable, a dead row, a pending row older than `--max-outbox-age-secs` |
//! | `audit-dlq` | `XLEN caracal.audit.events.dlq` | Redis unreachable, any dead letter |
//! | `audit-replay` | spill files (`pending-*.ndjson`) in each `--replay-dir` | a spill file waiting, a directory unreadable |
//! | `gateway` | the Gateway's `/ready` (whose second check is revocation snapshot freshness) | unreachable, or not ready (the reason is shown) |
//!
//! Every check is bounded by `--timeout-secs`; one that cannot answer **fails** (a check that
//! cannot prove health never passes). `audit-replay` and `gateway` are skipped, not failed,
//! when no directory or URL is given. Doctor only reads: it never replays, requeues or
//! provisions anything (the one exception is the migrator's verification, which creates an
//! empty `schema_migrations` table on a database that has never been migrated).
//!
//! Output: a table `CHECK STATUS DETAIL`, then one `action:` line per failure; exit 0 when
//! nothing failed, 1 otherwise.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use caracal_core::backend::postgres::migrate::Migrator;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::backend::redis::{RedisConfig, RedisStreams};
use caracal_core::clock::{Clock, SystemClock};
use caracal_core::store::outbox::OutboxStore;
use caracal_core::streams::provision::verify;
use caracal_core::streams::{EntryId, Streams, names};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

use super::CmdError;

/// Tables every service expects once migrated (`migrations/0001_baseline.sql`). A missing
/// one means the database is not the one the services use, or was tampered with.
pub const EXPECTED_TABLES: &[&str] = &[
    "schema_migrations",
    "zones",
    "applications",
    "providers",
    "resources",
    "secret_store",
    "zone_signing_keys",
    "admin_tokens",
    "authority_records",
    "sessions",
    "delegation_edges",
    "delegation_graph_epochs",
    "coordinator_idempotency_receipts",
    "policies",
    "policy_versions",
    "policy_sets",
    "policy_set_versions",
    "policy_set_bindings",
    "approvals",
    "outbox",
    "audit_events",
    "audit_ingest_alerts",
    "audit_chain_checkpoints",
    "audit_export_watermark",
    "audit_retention",
    "admin_audit_events",
];

/// File name prefix and suffix of an audit spill file (`caracal_core::audit::emitter`).
const SPILL_PREFIX: &str = "pending-";
const SPILL_SUFFIX: &str = ".ndjson";

/// Arguments of `caracal doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Postgres URL [env: DATABASE_URL, DATABASE_URL_FILE]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Redis URL [env: REDIS_URL, REDIS_URL_FILE]
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// An `AUDIT_REPLAY_DIR` of an STS or Gateway to inspect for spill files (repeatable)
    #[arg(long = "replay-dir", value_name = "DIR")]
    replay_dirs: Vec<PathBuf>,
    /// Base URL of a Gateway (`http://host:8081`) whose `/ready` is asked
    #[arg(long, value_name = "URL")]
    gateway_url: Option<String>,
    /// Bound on each check, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    timeout_secs: u64,
    /// A stream entry delivered and unacknowledged for longer than this fails `streams`
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    max_pending_idle_secs: u64,
    /// A pending outbox row older than this fails `outbox` (the dispatcher is not keeping up)
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    max_outbox_age_secs: u64,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Healthy.
    Pass,
    /// Unhealthy, or could not be proven healthy.
    Fail,
    /// Not configured (no replay directory / no Gateway URL given).
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRow {
    /// The check's name (`migrations`, `streams`, `outbox`, `audit-dlq`, `audit-replay`,
    /// `gateway`).
    pub check: &'static str,
    /// Pass, fail or skip.
    pub status: Status,
    /// What was found, on one line.
    pub detail: String,
    /// What to do, on one line; set for failures.
    pub action: Option<String>,
}

impl CheckRow {
    fn pass(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Pass,
            detail: detail.into(),
            action: None,
        }
    }

    fn fail(check: &'static str, detail: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Fail,
            detail: detail.into(),
            action: Some(action.into()),
        }
    }

    fn skip(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Skip,
            detail: detail.into(),
            action: None,
        }
    }
}

/// The thresholds and bounds of a run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bound on each check.
    pub timeout: Duration,
    /// Oldest acceptable idle time of a pending stream entry.
    pub max_pending_idle: Duration,
    /// Oldest acceptable pending outbox row.
    pub max_outbox_age: Duration,
}

/// Run `caracal doctor`.
pub async fn run(args: DoctorArgs) -> Result<(), CmdError> {
    let env = |k: &str| std::env::var(k).ok();
    let limits = Limits {
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
        max_pending_idle: Duration::from_secs(args.max_pending_idle_secs),
        max_outbox_age: Duration::from_secs(args.max_outbox_age_secs),
    };
    let db = super::migrate::resolve_url(args.database_url.as_deref(), None, env)
        .map(|(u, _)| u)
        .map_err(|e| e.to_string());
    let redis = super::streams::resolve_url(args.redis_url.as_deref(), None, env)
        .map(|(u, _)| u)
        .map_err(|e| e.to_string());
    let rows = diagnose(
        db,
        redis,
        &args.replay_dirs,
        args.gateway_url.as_deref(),
        limits,
    )
    .await;
    print!("{}", render(&rows));
    let failed = rows.iter().filter(|r| r.status == Status::Fail).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(CmdError::Doctor(format!(
            "doctor: {failed} check{} failed",
            if failed == 1 { "" } else { "s" }
        )))
    }
}

/// Run every check and return the rows in the documented order. `db` and `redis` are the
/// resolved URLs, or why none could be resolved (which fails the checks that need them).
pub async fn diagnose(
    db: Result<String, String>,
    redis: Result<String, String>,
    replay_dirs: &[PathBuf],
    gateway_url: Option<&str>,
    limits: Limits,
) -> Vec<CheckRow> {
    let mut rows = Vec::with_capacity(6);
    let pg_down = "Postgres: restore it (and its pool limits), then run `caracal migrate`";
    match &db {
        Ok(url) => {
            rows.push(
                bounded(
                    "migrations",
                    limits.timeout,
                    pg_down,
                    check_migrations(url, limits.timeout),
                )
                .await,
            );
            rows.push(bounded("outbox", limits.timeout, pg_down, check_outbox(url, limits)).await);
        }
        Err(e) => {
            rows.push(CheckRow::fail(
                "migrations",
                e.clone(),
                "pass --database-url or set DATABASE_URL",
            ));
            rows.push(CheckRow::fail(
                "outbox",
                e.clone(),
                "pass --database-url or set DATABASE_URL",
            ));
        }
    }
    let redis_down = "Redis: restore it, then `caracal streams verify` and watch pending entries";
    match &redis {
        Ok(url) => match redis_client(url, limits.timeout) {
            Ok(streams) => {
                rows.push(
                    bounded(
                        "streams",
                        limits.timeout,
                        redis_down,
                        check_streams(&streams, limits),
                    )
                    .await,
                );
                rows.push(
                    bounded(
                        "audit-dlq",
                        limits.timeout,
                        redis_down,
                        check_audit_dlq(&streams),
                    )
                    .await,
                );
            }
            Err(e) => {
                rows.push(CheckRow::fail("streams", e.clone(), "fix the Redis URL"));
                rows.push(CheckRow::fail("audit-dlq", e, "fix the Redis URL"));
            }
        },
        Err(e) => {
            rows.push(CheckRow::fail(
                "streams",
                e.clone(),
                "pass --redis-url or set REDIS_URL",
            ));
            rows.push(CheckRow::fail(
                "audit-dlq",
                e.clone(),
                "pass --redis-url or set REDIS_URL",
            ));
        }
    }
    // Move the two Redis rows after `migrations` so the rows follow the page's order:
    // migrations, streams, outbox, audit-dlq, audit-replay, gateway.
    rows.swap(1, 2);
    rows.push(check_replay_dirs(replay_dirs, SystemTime::now()));
    rows.push(match gateway_url {
        None => CheckRow::skip("gateway", "no --gateway-url given"),
        Some(url) => {
            bounded(
                "gateway",
                limits.timeout,
                "restore the Gateway and its Redis; its revocation snapshot reloads from Postgres",
                check_gateway(url, limits.timeout),
            )
            .await
        }
    });
    rows
}

/// `fut` under the check's time bound; running out of time fails the row.
async fn bounded(
    check: &'static str,
    limit: Duration,
    action: &str,
    fut: impl std::future::Future<Output = CheckRow>,
) -> CheckRow {
    // A little slack over the per-call bounds inside, so their own error is the one shown.
    match tokio::time::timeout(limit + Duration::from_secs(1), fut).await {
        Ok(row) => row,
        Err(_) => CheckRow::fail(
            check,
            format!("no answer within {} s", limit.as_secs()),
            action,
        ),
    }
}

fn pg_config(url: &str, timeout: Duration) -> Result<tokio_postgres::Config, String> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|_| format!("invalid database URL {}", super::migrate::redact(url)))?;
    config.connect_timeout(timeout);
    config.application_name("caracal-doctor");
    Ok(config)
}

/// Check 1: migrations applied (checksums verified by the migrator) and the tables present.
async fn check_migrations(url: &str, timeout: Duration) -> CheckRow {
    const C: &str = "migrations";
    let config = match pg_config(url, timeout) {
        Ok(c) => c,
        Err(e) => return CheckRow::fail(C, e, "fix the database URL"),
    };
    let mut client = match config.connect(NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        Err(e) => {
            return CheckRow::fail(
                C,
                format!("Postgres unreachable: {}", error_chain(&e)),
                "restore Postgres, then run `caracal migrate`",
            );
        }
    };
    let migrator = match Migrator::embedded() {
        Ok(m) => m.with_lock_timeout(timeout),
        Err(e) => {
            return CheckRow::fail(
                C,
                e.to_string(),
                "rebuild caracal: its migrations are inconsistent",
            );
        }
    };
    let status = match migrator.status(&mut client).await {
        Ok(s) => s,
        Err(e) => {
            return CheckRow::fail(
                C,
                e.to_string(),
                "the schema does not match this binary: roll forward with a compatible build",
            );
        }
    };
    if !status.pending.is_empty() {
        return CheckRow::fail(
            C,
            format!(
                "{} pending: {}",
                status.pending.len(),
                status.pending.join(", ")
            ),
            "run `caracal migrate` before starting the services",
        );
    }
    let present = match client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
              WHERE table_schema = current_schema()",
            &[],
        )
        .await
    {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| r.try_get::<_, String>(0).ok())
            .collect::<Vec<_>>(),
        Err(e) => {
            return CheckRow::fail(
                C,
                format!("cannot list tables: {}", error_chain(&e)),
                "check the database role's privileges",
            );
        }
    };
    let missing: Vec<&str> = EXPECTED_TABLES
        .iter()
        .copied()
        .filter(|t| !present.iter().any(|p| p == t))
        .collect();
    if !missing.is_empty() {
        return CheckRow::fail(
            C,
            format!("missing tables: {}", missing.join(", ")),
            "restore the database from backup; do not re-run migrations over a damaged schema",
        );
    }
    CheckRow::pass(
        C,
        format!(
            "{} applied, schema at {}, {} tables present",
            status.applied.len(),
            status.applied.last().map_or("(none)", String::as_str),
            EXPECTED_TABLES.len()
        ),
    )
}

/// Check 3: the outbox (API and Coordinator share one table).
async fn check_outbox(url: &str, limits: Limits) -> CheckRow {
    const C: &str = "outbox";
    let options = PgStoreOptions {
        max_size: 1,
        connection_timeout: limits.timeout,
        connect_timeout: limits.timeout,
        operation_timeout: Some(limits.timeout),
        application_name: "caracal-doctor".to_owned(),
        ..PgStoreOptions::default()
    };
    let store = match PgStore::open(url, options).await {
        Ok(s) => s,
        Err(e) => return CheckRow::fail(C, e.to_string(), "fix the database URL"),
    };
    let stats = match store.outbox_stats(SystemClock.now()).await {
        Ok(s) => s,
        Err(e) => {
            return CheckRow::fail(
                C,
                format!("cannot read the outbox: {e}"),
                "restore Postgres; the dispatchers publish the backlog once it returns",
            );
        }
    };
    let oldest_pending = stats.oldest_pending_age.map(|a| a.num_seconds().max(0));
    let oldest_dead = stats.oldest_dead_age.map(|a| a.num_seconds().max(0));
    let detail = format!(
        "{} pending{}, {} dead{}",
        stats.pending,
        oldest_pending.map_or(String::new(), |s| format!(" (oldest {s} s)")),
        stats.dead,
        oldest_dead.map_or(String::new(), |s| format!(" (oldest {s} s)")),
    );
    if stats.dead > 0 {
        return CheckRow::fail(
            C,
            detail,
            "inspect the dead rows' last_error, fix the cause, then requeue each with \
             POST /zones/{zone}/outbox/{id}/requeue on the Coordinator",
        );
    }
    if oldest_pending.is_some_and(|s| s > limits.max_outbox_age.as_secs() as i64) {
        return CheckRow::fail(
            C,
            detail,
            "the outbox dispatcher is not keeping up: check it runs and that Redis accepts writes",
        );
    }
    CheckRow::pass(C, detail)
}

fn redis_client(url: &str, timeout: Duration) -> Result<RedisStreams, String> {
    let mut config = RedisConfig::new(url.to_owned());
    config.pool_size = 1;
    config.pool_timeout = timeout;
    config.connect_timeout = timeout;
    config.response_timeout = timeout;
    RedisStreams::connect(&config).map_err(|e| e.to_string())
}

/// Check 2: streams and groups present, pending entries not stuck, no dead letters.
async fn check_streams(streams: &RedisStreams, limits: Limits) -> CheckRow {
    const C: &str = "streams";
    let report = match verify(streams).await {
        Ok(r) => r,
        Err(e) => {
            return CheckRow::fail(
                C,
                format!("Redis unreachable: {e}"),
                "restore Redis, then `caracal streams verify` and watch pending entries",
            );
        }
    };
    let problems = report.problems();
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return CheckRow::fail(
            C,
            list.join("; "),
            "run `caracal streams provision` (idempotent), then restart the consumers",
        );
    }
    let mut pending_total = 0u64;
    let mut oldest: Option<(Duration, String)> = None;
    let mut dead = Vec::new();
    for spec in names::STREAMS {
        for group in spec.groups {
            let summary = match streams.pending_summary(spec.name, group.name).await {
                Ok(s) => s,
                Err(e) => {
                    return CheckRow::fail(
                        C,
                        format!("XPENDING {} {}: {e}", spec.name, group.name),
                        "restore Redis",
                    );
                }
            };
            pending_total += summary.count;
            if summary.count == 0 {
                continue;
            }
            let first = streams
                .pending_range(spec.name, group.name, EntryId::MIN, EntryId::MAX, 1, None)
                .await;
            if let Ok(Some(entry)) = first.map(|v| v.into_iter().next()) {
                if oldest.as_ref().is_none_or(|(idle, _)| entry.idle > *idle) {
                    oldest = Some((entry.idle, format!("{}/{}", spec.name, group.name)));
                }
            }
        }
        if spec.name != names::AUDIT_EVENTS && !spec.groups.is_empty() {
            let dl = names::dead_letter_stream(spec.name);
            match streams.len(&dl).await {
                Ok(0) => {}
                Ok(n) => dead.push(format!("{n} on {dl}")),
                Err(e) => return CheckRow::fail(C, format!("XLEN {dl}: {e}"), "restore Redis"),
            }
        }
    }
    // Per-replica groups are reported, never failed: each belongs to one replica's
    // per-process cache, so a live replica's stuck consumer shows on that replica's `/ready`,
    // and the pending entries of a replica that is gone invalidated a cache that died with it
    // (a replica restarted under the same name drains them; a new one loads fresh state).
    let mut replica_groups = 0usize;
    let mut replica_pending = 0u64;
    let mut idle_replica_groups = Vec::new();
    for s in &report.streams {
        for g in &s.instance_groups {
            replica_groups += 1;
            replica_pending += g.pending;
            if g.pending == 0 {
                continue;
            }
            let first = streams
                .pending_range(s.stream, &g.group, EntryId::MIN, EntryId::MAX, 1, None)
                .await;
            if let Ok(Some(entry)) = first.map(|v| v.into_iter().next()) {
                if entry.idle > limits.max_pending_idle {
                    idle_replica_groups.push(format!(
                        "{}/{} ({} pending, idle {} s)",
                        s.stream,
                        g.group,
                        g.pending,
                        entry.idle.as_secs()
                    ));
                }
            }
        }
    }
    let mut detail = format!(
        "{} streams, {} groups, {replica_groups} per-replica; {pending_total} pending",
        report.streams.len(),
        names::STREAMS.iter().map(|s| s.groups.len()).sum::<usize>()
    );
    if replica_pending > 0 {
        detail.push_str(&format!(" (+{replica_pending} in per-replica groups)"));
    }
    if let Some((idle, at)) = &oldest {
        detail.push_str(&format!(" (oldest idle {} s on {at})", idle.as_secs()));
    }
    if !idle_replica_groups.is_empty() {
        detail.push_str(&format!(
            "; per-replica groups with idle entries (replica gone? remove with XGROUP DESTROY <stream> <group>): {}",
            idle_replica_groups.join(", ")
        ));
    }
    if !dead.is_empty() {
        detail.push_str(&format!("; dead letters: {}", dead.join(", ")));
        return CheckRow::fail(
            C,
            detail,
            "read the dead letters (XRANGE <stream>.dead - +): unsigned or malformed producers; fix them, then XDEL",
        );
    }
    if let Some((idle, at)) = oldest {
        if idle > limits.max_pending_idle {
            return CheckRow::fail(
                C,
                detail,
                format!(
                    "the consumers of {at} are stuck or down: restart them (they reclaim idle entries)"
                ),
            );
        }
    }
    CheckRow::pass(C, detail)
}

/// Check 4a: the audit DLQ.
async fn check_audit_dlq(streams: &RedisStreams) -> CheckRow {
    const C: &str = "audit-dlq";
    match streams.len(names::AUDIT_EVENTS_DLQ).await {
        Ok(0) => CheckRow::pass(C, format!("{} empty", names::AUDIT_EVENTS_DLQ)),
        Ok(n) => CheckRow::fail(
            C,
            format!(
                "{n} dead letter{} on {}",
                if n == 1 { "" } else { "s" },
                names::AUDIT_EVENTS_DLQ
            ),
            "read GET /api/audit/dlq on the Audit service, fix the cause, then POST /api/audit/dlq/replay and `caracal audit verify`",
        ),
        Err(e) => CheckRow::fail(
            C,
            format!("Redis unreachable: {e}"),
            "restore Redis, then re-run doctor",
        ),
    }
}

/// What a replay directory holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpillSummary {
    /// Spill files waiting (`pending-*.ndjson`; `.tmp` files being written are not counted).
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Age of the oldest one.
    pub oldest: Option<Duration>,
}

/// Count the spill files in `dir`.
pub fn spill_summary(dir: &Path, now: SystemTime) -> std::io::Result<SpillSummary> {
    let mut out = SpillSummary::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(SPILL_PREFIX) && name.ends_with(SPILL_SUFFIX)) {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        out.files += 1;
        out.bytes += meta.len();
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        out.oldest = Some(out.oldest.map_or(age, |o| o.max(age)));
    }
    Ok(out)
}

/// Check 4b: spill files in the replay directories.
pub fn check_replay_dirs(dirs: &[PathBuf], now: SystemTime) -> CheckRow {
    const C: &str = "audit-replay";
    if dirs.is_empty() {
        return CheckRow::skip(C, "no --replay-dir given");
    }
    let mut waiting = Vec::new();
    let mut errors = Vec::new();
    for dir in dirs {
        match spill_summary(dir, now) {
            Ok(s) if s.files == 0 => {}
            Ok(s) => waiting.push(format!(
                "{}: {} file{}, {} bytes, oldest {} s",
                dir.display(),
                s.files,
                if s.files == 1 { "" } else { "s" },
                s.bytes,
                s.oldest.unwrap_or_default().as_secs()
            )),
            Err(e) => errors.push(format!("{}: {e}", dir.display())),
        }
    }
    if !errors.is_empty() {
        return CheckRow::fail(
            C,
            errors.join("; "),
            "check the path and permissions of AUDIT_REPLAY_DIR",
        );
    }
    if !waiting.is_empty() {
        return CheckRow::fail(
            C,
            waiting.join("; "),
            "start (or keep running) the service that owns the directory with Redis reachable: it replays and deletes the files",
        );
    }
    CheckRow::pass(
        C,
        format!(
            "{} director{} empty",
            dirs.len(),
            if dirs.len() == 1 { "y" } else { "ies" }
        ),
    )
}

/// Check 5: the Gateway's readiness, which includes its revocation snapshot's freshness.
async fn check_gateway(base: &str, timeout: Duration) -> CheckRow {
    const C: &str = "gateway";
    let (status, body) = match http_get(base, "/ready", timeout).await {
        Ok(r) => r,
        Err(e) => {
            return CheckRow::fail(
                C,
                format!("{base}/ready: {e}"),
                "start the Gateway, or fix --gateway-url",
            );
        }
    };
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned));
    match (status, reason.as_deref()) {
        (200, _) => CheckRow::pass(C, "ready: revocation snapshot fresh"),
        (_, Some("revocation_snapshot_stale")) => CheckRow::fail(
            C,
            "revocation_snapshot_stale",
            "restore Postgres and Redis for the Gateway, or POST /internal/revocations/reload; keep risky traffic frozen until fresh",
        ),
        (_, Some(reason)) => CheckRow::fail(
            C,
            format!("not ready: {reason}"),
            "fix the reason shown (see \"Operating and recovering\"); snapshot freshness is checked after it",
        ),
        (status, None) => CheckRow::fail(
            C,
            format!("/ready answered {status}"),
            "check --gateway-url names a Caracal Gateway",
        ),
    }
}

/// A plain-HTTP `GET base+path` returning the status and body (enough for `/ready`; TLS is
/// not spoken: point doctor at the Gateway's cluster-internal address).
async fn http_get(base: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| "only http:// URLs are supported".to_owned())?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err("no host in the URL".into());
    }
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        // A readiness answer is tiny; cap what is read from a misconfigured URL.
        stream
            .take(64 * 1024)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let raw = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))??;
    parse_response(&raw)
}

/// Status code and body of a raw HTTP/1.1 response (chunked bodies are de-chunked).
fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("malformed HTTP status line")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(rest.get(..n).unwrap_or_default());
        body = rest.get(n..).unwrap_or_default().trim_start_matches("\r\n");
    }
    out
}

fn error_chain(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The report as printed: the table, then one action line per failure, then the verdict.
pub fn render(rows: &[CheckRow]) -> String {
    let w0 = rows
        .iter()
        .map(|r| r.check.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut out = format!("{:<w0$}  {:<6}  DETAIL\n", "CHECK", "STATUS");
    for r in rows {
        out.push_str(&format!(
            "{:<w0$}  {:<6}  {}\n",
            r.check,
            r.status.label(),
            r.detail
        ));
    }
    let failed: Vec<&CheckRow> = rows.iter().filter(|r| r.status == Status::Fail).collect();
    for r in &failed {
        if let Some(action) = &r.action {
            out.push_str(&format!("action: {}: {action}\n", r.check));
        }
    }
    if failed.is_empty() {
        out.push_str("doctor: OK\n");
    } else {
        out.push_str(&format!(
            "doctor: FAILED ({} of {} checks)\n",
            failed.len(),
            rows.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_table_with_actions() {
        let rows = vec![
            CheckRow::pass("migrations", "2 applied"),
            CheckRow::fail("outbox", "0 pending, 1 dead", "requeue it"),
            CheckRow::skip("gateway", "no --gateway-url given"),
        ];
        let out = render(&rows);
        assert!(out.starts_with("CHECK       STATUS  DETAIL\n"), "{out}");
        assert!(out.contains("migrations  PASS    2 applied\n"), "{out}");
        assert!(
            out.contains("outbox      FAIL    0 pending, 1 dead\n"),
            "{out}"
        );
        assert!(out.contains("action: outbox: requeue it\n"), "{out}");
        assert!(out.ends_with("doctor: FAILED (1 of 3 checks)\n"), "{out}");
        assert!(render(&rows[..1]).ends_with("doctor: OK\n"));
    }

    #[test]
    fn spill_files_are_counted_and_tmp_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        assert_eq!(
            check_replay_dirs(&[dir.path().to_path_buf()], now).status,
            Status::Pass
        );
        std::fs::write(dir.path().join("pending-1-2.ndjson.tmp"), "x").unwrap();
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        assert_eq!(spill_summary(dir.path(), now).unwrap().files, 0);
        std::fs::write(dir.path().join("pending-1-3.ndjson"), "{}\n").unwrap();
        let s = spill_summary(dir.path(), now).unwrap();
        assert_eq!((s.files, s.bytes), (1, 3));
        let row = check_replay_dirs(&[dir.path().to_path_buf()], now);
        assert_eq!(row.status, Status::Fail);
        assert!(row.action.is_some());
        let missing = check_replay_dirs(&[dir.path().join("nope")], now);
        assert_eq!(missing.status, Status::Fail);
        assert_eq!(check_replay_dirs(&[], now).status, Status::Skip);
    }

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (503, "{}".to_owned()));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (200, "{\"a\":1}".to_owned())
        );
        assert!(parse_response(b"garbage").is_err());
    }
}
