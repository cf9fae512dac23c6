//! `caracal bench`: the load harness (issue #10, SPEC §6).
//!
//! It provisions a world through the public APIs, runs each scenario in a closed loop
//! (`--workers` tasks, `--warmup` unmeasured, then `--duration` measured), prints p50, p95,
//! p99, max, req/s and errors, and after each scenario checks **losslessness**: the Audit
//! service's chain verification of that scenario's zone must report no finding and at least as
//! many rows as the measured operations required events. `--report FILE` writes `BENCHMARKS.md` from the
//! same figures.
//!
//! Modes: by default the harness starts the embedded stack itself (`caracal up`'s
//! [`up::serve`](super::up::serve) in this process, on the in-memory store, on a free port
//! offset). With `--database-url` and `--redis-url` it then starts the same stack again on
//! Postgres and Redis (migrated first) and runs every scenario there too (`--modes` picks
//! `embedded`, `postgres` or both), so one `--report` holds both modes; `audit-ingest` then
//! also runs against the Postgres ledger. `--target http://HOST --port-offset N` instead drives
//! one running stack with its bootstrap admin token (`--admin-token` /
//! `CARACAL_BOOTSTRAP_ADMIN_TOKEN`).
//!
//! `gateway` mints its pool of one-shot mandates before the window (see [`scenario::Pool`]);
//! `--soak DURATION` runs `governed` for that long in each mode after the scenarios, with the
//! loss check, in its own report section.
//!
//! Layout: [`load`] (the closed loop and its histogram), [`scenario`] (the world and one
//! operation of each scenario), [`ingest`] (the in-process `audit-ingest` scenario), [`report`] (console lines and `BENCHMARKS.md`), [`upstream`]
//! (the local upstream the Gateway forwards to).

pub mod ingest;
pub mod load;
pub mod report;
pub mod scenario;
pub mod upstream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use self::report::{Loss, Run, Stack};

use self::scenario::{Ctx, Endpoints, Pool, Scenario};
use super::CmdError;
use crate::api::Http;

/// Arguments of `caracal bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// Concurrent closed-loop workers.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Measured time per scenario (`20s`, `500ms`, `2m`).
    #[arg(long, default_value = "10s", value_parser = load::parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each scenario's measurement.
    #[arg(long, default_value = "2s", value_parser = load::parse_duration)]
    pub warmup: Duration,
    /// A running stack's base URL (e.g. `http://127.0.0.1`); the embedded stack when unset.
    #[arg(long)]
    pub target: Option<String>,
    /// The running stack's port offset (its ports are 8080, 8081, 4000, 3000, 9090 plus this).
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// The running stack's bootstrap admin token.
    #[arg(long, env = "CARACAL_BOOTSTRAP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The Audit service's admin token (for the loss check); the admin token when unset.
    #[arg(long, env = "AUDIT_ADMIN_TOKEN", hide_env_values = true)]
    pub audit_token: Option<String>,
    /// Write the results as Markdown to this file (e.g. `BENCHMARKS.md`).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Which stacks the harness starts, in order (comma-separated): `embedded` (in memory),
    /// `postgres` (Postgres + Redis at --database-url / --redis-url). Default: embedded, then
    /// postgres when --database-url is given.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub modes: Vec<Mode>,
    /// The Postgres database of the `postgres` mode: a dedicated one (the harness migrates it
    /// and fills it with its worlds and their audit rows).
    #[arg(long)]
    pub database_url: Option<String>,
    /// The Redis of the `postgres` mode (its stream groups are provisioned first).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// How many one-shot mandates `gateway` mints before its window; default enough for
    /// warmup + duration at 20,000 req/s, at most 250,000.
    #[arg(long)]
    pub gateway_pool: Option<usize>,
    /// After the scenarios, run `governed` for this long in each mode, with the loss check
    /// (`5m` for the report).
    #[arg(long, value_parser = load::parse_duration)]
    pub soak: Option<Duration>,
}

/// A stack the harness starts itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The embedded stack on the in-memory store and streams.
    Embedded,
    /// The embedded stack on Postgres and Redis (`--database-url`, `--redis-url`).
    Postgres,
}

/// The `gateway` pool is sized for this rate over warmup + duration (twice the target: the
/// pool must not be what limits the measurement)...
const POOL_RATE: f64 = 20_000.0;
/// ...but holds at most this many mandates (about 1 KB each, and minting takes time).
const POOL_CAP: usize = 250_000;

/// The command the published `BENCHMARKS.md` comes from (written into its header).
pub const CANONICAL: &str = "caracal bench --scenario all --workers 4 --duration 10s --warmup 2s --database-url \"$DATABASE_URL\" --redis-url \"$REDIS_URL\" --soak 5m --report BENCHMARKS.md";

/// Run the harness on a multi-threaded runtime.
pub fn run(args: &BenchArgs) -> Result<(), CmdError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CmdError::Runtime)?
        .block_on(async {
            bench(args, &mut |line| println!("{line}"))
                .await
                .map(|_| ())
        })
}

fn fail(e: impl std::fmt::Display) -> CmdError {
    CmdError::Bench(e.to_string())
}

/// The embedded stack of one mode: stopped when dropped (the shutdown sender closes), or by
/// [`Embedded::stop`], which also waits for it.
struct Embedded {
    offset: u16,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), CmdError>>>,
    data_dir: PathBuf,
    /// Keep `data_dir` (the durable stack's dev keys) when stopped.
    keep_data_dir: bool,
}

impl Embedded {
    /// Stop the services and wait (up to 60 s) until they have: on Postgres and Redis the
    /// in-process `audit-ingest` must not share the stream with the stack's ingestor.
    async fn stop(mut self) -> Result<(), CmdError> {
        drop(self.stop.take());
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(Duration::from_secs(60), server).await {
                Ok(Ok(r)) => r?,
                Ok(Err(e)) => return Err(fail(format!("the embedded stack failed: {e}"))),
                Err(_) => return Err(fail("the embedded stack did not stop within 60 s")),
            }
        }
        Ok(())
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if !self.keep_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// An offset at which all five service ports are free on 127.0.0.1.
fn free_offset() -> Result<u16, CmdError> {
    let seed = u16::try_from(std::process::id() % 400).unwrap_or(0);
    for i in 0..400u16 {
        let offset = 20_000 + ((seed + i) % 400) * 50;
        let free = [8080u16, 8081, 4000, 3000, 9090]
            .iter()
            .all(|base| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if free {
            return Ok(offset);
        }
    }
    Err(fail("no free port offset for the embedded stack"))
}

/// Start `caracal up`'s services in this process (on Postgres and Redis when `durable` holds
/// their URLs) and wait until they are ready.
async fn embedded(durable: Option<(&str, &str)>) -> Result<Embedded, CmdError> {
    let offset = free_offset()?;
    // On Postgres the data directory holds the dev keys (KEK, HMAC keys) that sealed and linked
    // what the database already holds, so a later run on the same database must find the same
    // keys (as a durable `caracal up` does): one kept directory per database URL.
    let keep_data_dir = durable.is_some();
    let data_dir = match durable {
        Some((db, _)) => {
            use std::hash::{Hash as _, Hasher as _};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            db.hash(&mut h);
            std::env::temp_dir().join(format!("caracal-bench-pg-{:016x}", h.finish()))
        }
        None => std::env::temp_dir().join(format!("caracal-bench-{}-{offset}", std::process::id())),
    };
    let token = caracal_core::secrets::client_secret::generate_admin_token()
        .map_err(|e| fail(format!("admin token: {e}")))?;
    let args = super::up::UpArgs {
        port_offset: offset,
        data_dir: data_dir.clone(),
        issuer: None,
        bootstrap_admin_token: Some(token.clone()),
        database_url: durable.map(|(db, _)| db.to_owned()),
        redis_url: durable.map(|(_, redis)| redis.to_owned()),
        // A load run measures the stack, not the per-application mint limit.
        mint_limit_per_min: u32::MAX,
        coordinator_limit_per_min: u32::MAX,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        super::up::serve(
            &args,
            async {
                let _ = stopped.await;
            },
            move |_| {
                let _ = ready_tx.send(());
            },
        )
        .await
    });
    match tokio::time::timeout(Duration::from_secs(60), ready_rx).await {
        Ok(Ok(())) => Ok(Embedded {
            offset,
            token,
            stop: Some(stop),
            server: Some(server),
            data_dir,
            keep_data_dir,
        }),
        Ok(Err(_)) => match server.await {
            Ok(Err(e)) => Err(e),
            _ => Err(fail("the embedded stack stopped before it was ready")),
        },
        Err(_) => Err(fail("the embedded stack was not ready within 60 s")),
    }
}

/// What one pass of the harness measures.
enum Target {
    /// Start the embedded stack, in memory or on Postgres and Redis.
    Start(Mode),
    /// A running stack at this base URL.
    Running(String),
}

/// The passes `args` asks for, checked: fail closed on a mode without its URLs, or URLs no
/// mode uses.
fn targets(args: &BenchArgs) -> Result<Vec<Target>, CmdError> {
    let urls = args.database_url.is_some() || args.redis_url.is_some();
    if let Some(base) = &args.target {
        if urls || !args.modes.is_empty() {
            return Err(CmdError::Config(
                "--target measures one running stack; --modes, --database-url and --redis-url are for the stacks the harness starts"
                    .to_owned(),
            ));
        }
        return Ok(vec![Target::Running(base.clone())]);
    }
    let mut modes = args.modes.clone();
    if modes.is_empty() {
        modes.push(Mode::Embedded);
        if urls {
            modes.push(Mode::Postgres);
        }
    }
    modes.dedup();
    let postgres = modes.contains(&Mode::Postgres);
    if postgres && (args.database_url.is_none() || args.redis_url.is_none()) {
        return Err(CmdError::Config(
            "--modes postgres needs --database-url and --redis-url".to_owned(),
        ));
    }
    if urls && !postgres {
        return Err(CmdError::Config(
            "--database-url and --redis-url are used by the postgres mode only (add it to --modes)"
                .to_owned(),
        ));
    }
    Ok(modes.into_iter().map(Target::Start).collect())
}

/// This run's command line for the report's header, the URLs shown as `$DATABASE_URL` and
/// `$REDIS_URL` (they may hold passwords).
fn command_line(args: &BenchArgs, report: &std::path::Path) -> String {
    let secs = |d: Duration| {
        let s = d.as_secs_f64();
        if s >= 60.0 && s % 60.0 == 0.0 {
            format!("{}m", s / 60.0)
        } else {
            format!("{s}s")
        }
    };
    let mut c = format!(
        "caracal bench --scenario {} --workers {} --duration {} --warmup {}",
        args.scenario.name(),
        args.workers,
        secs(args.duration),
        secs(args.warmup)
    );
    if let Some(t) = &args.target {
        c.push_str(&format!(" --target {t} --port-offset {}", args.port_offset));
    }
    if !args.modes.is_empty() {
        let m: Vec<&str> = args
            .modes
            .iter()
            .map(|m| match m {
                Mode::Embedded => "embedded",
                Mode::Postgres => "postgres",
            })
            .collect();
        c.push_str(&format!(" --modes {}", m.join(",")));
    }
    if args.database_url.is_some() {
        c.push_str(" --database-url \"$DATABASE_URL\"");
    }
    if args.redis_url.is_some() {
        c.push_str(" --redis-url \"$REDIS_URL\"");
    }
    if let Some(n) = args.gateway_pool {
        c.push_str(&format!(" --gateway-pool {n}"));
    }
    if let Some(d) = args.soak {
        c.push_str(&format!(" --soak {}", secs(d)));
    }
    c.push_str(&format!(" --report {}", report.display()));
    c
}

/// The `gateway` pool size for `args`.
fn pool_size(args: &BenchArgs) -> usize {
    args.gateway_pool.unwrap_or_else(|| {
        let want = ((args.warmup + args.duration).as_secs_f64() * POOL_RATE).ceil();
        // Saturating float-to-int: the cap bounds it anyway.
        (want as usize).clamp(1, POOL_CAP)
    })
}

/// Run the harness; `out` receives each console line. Answers the runs (tests inspect them).
pub async fn bench(args: &BenchArgs, out: &mut dyn FnMut(&str)) -> Result<Vec<Run>, CmdError> {
    if args.workers == 0 {
        return Err(CmdError::Config("--workers must be at least 1".to_owned()));
    }
    if args.gateway_pool == Some(0) {
        return Err(CmdError::Config(
            "--gateway-pool must be at least 1".to_owned(),
        ));
    }
    let targets = targets(args)?;
    let upstream = upstream::Upstream::start().await.map_err(fail)?;
    let http = Http::new(Duration::from_secs(10));
    let tag = caracal_core::ids::IdGen::next_id(&caracal_core::ids::UuidV7)
        .chars()
        .rev()
        .take(12)
        .collect::<String>();
    let mut runs = Vec::new();
    for target in &targets {
        let pass = Pass {
            args,
            http: &http,
            upstream: &upstream.url(),
            tag: &tag,
        };
        pass.run(target, &mut runs, out).await?;
    }
    if let Some(path) = &args.report {
        std::fs::write(
            path,
            report::markdown(&runs, &command_line(args, path), CANONICAL),
        )
        .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        out(&format!("wrote {}", path.display()));
    }
    // A lost event fails the command (after the report is written): a soak in CI must not
    // pass with a hole in the ledger.
    let lost: Vec<String> = runs
        .iter()
        .filter(|r| matches!(r.loss, Loss::Lost { .. }))
        .map(|r| format!("{} ({})", r.scenario.name(), r.mode))
        .collect();
    if !lost.is_empty() {
        return Err(fail(format!("audit events lost in: {}", lost.join(", "))));
    }
    Ok(runs)
}

/// One pass: every asked scenario against one stack.
struct Pass<'a> {
    args: &'a BenchArgs,
    http: &'a Http,
    upstream: &'a str,
    tag: &'a str,
}

impl Pass<'_> {
    async fn run(
        &self,
        target: &Target,
        runs: &mut Vec<Run>,
        out: &mut dyn FnMut(&str),
    ) -> Result<(), CmdError> {
        let args = self.args;
        let scenarios = args.scenario.expand();
        let http_scenarios: Vec<Scenario> = scenarios
            .iter()
            .copied()
            .filter(|s| *s != Scenario::AuditIngest)
            .collect();
        let needs_stack = !http_scenarios.is_empty() || args.soak.is_some();
        let durable = match (&args.database_url, &args.redis_url) {
            (Some(db), Some(redis)) => Some((db.as_str(), redis.as_str())),
            _ => None,
        };
        let (stack, kind, mode) = match target {
            Target::Start(Mode::Embedded) => (Stack::Embedded, None, report::EMBEDDED.to_owned()),
            Target::Start(Mode::Postgres) => (Stack::Durable, durable, report::DURABLE.to_owned()),
            Target::Running(base) => (Stack::Target, None, format!("target {base}")),
        };
        let mut started = None;
        let mut on = None;
        if needs_stack {
            let (endpoints, token) = match target {
                Target::Start(_) => {
                    // The previous mode's stack may still be freeing millions of in-memory rows
                    // on the runtime's threads, which can starve a first connect past its
                    // timeout: one more attempt after a pause, then the error stands.
                    let s = match embedded(kind).await {
                        Ok(s) => s,
                        Err(e) => {
                            out(&format!(
                                "starting the {mode} stack failed ({e}); retrying once"
                            ));
                            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                            embedded(kind).await?
                        }
                    };
                    let endpoints = Endpoints::local(s.offset)
                        .ok_or_else(|| fail("port offset out of range"))?;
                    let token = s.token.clone();
                    started = Some(s);
                    (endpoints, token)
                }
                Target::Running(base) => {
                    let token = args.admin_token.clone().ok_or_else(|| {
                        CmdError::Config(
                            "--target needs the stack's bootstrap admin token (--admin-token or CARACAL_BOOTSTRAP_ADMIN_TOKEN)"
                                .to_owned(),
                        )
                    })?;
                    (endpoints_at(base, args.port_offset)?, token)
                }
            };
            let audit_token = args.audit_token.clone().unwrap_or_else(|| token.clone());
            on = Some((endpoints, token, audit_token));
        }
        out(&format!(
            "caracal bench: {mode}, {} workers, warmup {:?}, duration {:?}",
            args.workers, args.warmup, args.duration
        ));
        if let Some((endpoints, token, audit_token)) = &on {
            for &scenario in &http_scenarios {
                let r = self
                    .scenario(scenario, stack, &mode, endpoints, token, audit_token, None)
                    .await?;
                out(&report::console_line(&r));
                if let Some(n) = &r.note {
                    out(&format!("  note: {n}"));
                }
                out(&format!("  audit: {}", r.loss.line()));
                runs.push(r);
            }
            if let Some(soak) = args.soak {
                out(&format!("soak: governed for {soak:?} ({mode})"));
                let r = self
                    .scenario(
                        Scenario::Governed,
                        stack,
                        &mode,
                        endpoints,
                        token,
                        audit_token,
                        Some(soak),
                    )
                    .await?;
                out(&format!("soak {}", report::console_line(&r)));
                out(&format!("  audit: {}", r.loss.line()));
                runs.push(r);
            }
        }
        if let Some(s) = started {
            s.stop().await?;
        }
        if scenarios.contains(&Scenario::AuditIngest) {
            let (ledger, ingest_stack) = match kind {
                Some((database_url, redis_url)) => {
                    // The stack migrated it when it ran; an ingest-only run migrates here.
                    super::migrate::migrate_url(database_url).await?;
                    (
                        ingest::Ledger::Postgres {
                            database_url,
                            redis_url,
                        },
                        Stack::Durable,
                    )
                }
                None => (ingest::Ledger::Memory, Stack::Embedded),
            };
            let (figures, loss) = ingest::run(args.duration, ledger).await.map_err(fail)?;
            let r = Run {
                scenario: Scenario::AuditIngest,
                stack: ingest_stack,
                mode: format!("{mode} ({})", ledger.label()),
                workers: 1,
                figures,
                loss,
                soak: false,
                note: None,
            };
            out(&report::console_line(&r));
            out(&format!("  audit: {}", r.loss.line()));
            runs.push(r);
        }
        Ok(())
    }

    /// One HTTP scenario (or the soak, when `soak` holds its duration) in a fresh world: its
    /// own zone, so each loss check counts only its own events, and its own
    /// per-(zone, resource, application) mint-limit window.
    #[allow(clippy::too_many_arguments)]
    async fn scenario(
        &self,
        scenario: Scenario,
        stack: Stack,
        mode: &str,
        endpoints: &Endpoints,
        token: &str,
        audit_token: &str,
        soak: Option<Duration>,
    ) -> Result<Run, CmdError> {
        let args = self.args;
        let name = if soak.is_some() {
            "soak"
        } else {
            scenario.name()
        };
        let ctx = Ctx::provision(
            self.http.clone(),
            endpoints,
            token,
            self.upstream,
            &format!("{}-{}-{name}", self.tag, stack_tag(stack)),
        )
        .await
        .map_err(fail)?;
        let duration = soak.unwrap_or(args.duration);
        let (figures, note, minted) = if scenario == Scenario::Gateway {
            let size = pool_size(args);
            let pool = Arc::new(
                Pool::mint(Arc::clone(&ctx), size, args.workers)
                    .await
                    .map_err(|e| fail(format!("minting the gateway pool: {e}")))?,
            );
            let p = Arc::clone(&pool);
            let figures = load::run(args.workers, args.warmup, duration, move |_, _| {
                let p = Arc::clone(&p);
                async move { p.once().await }
            })
            .await
            .map_err(fail)?;
            let mut note = format!(
                "{} one-shot mandates minted before the window in {:.1} s; {} handed out",
                pool.size(),
                pool.minted_in.as_secs_f64(),
                pool.used()
            );
            if figures.exhausted {
                note.push_str(&format!(
                    "; the pool ran out (or its mandates neared expiry) {:.1} s into the {:.1} s window, which was cut there (raise --gateway-pool)",
                    figures.window.as_secs_f64(),
                    duration.as_secs_f64()
                ));
            }
            (figures, Some(note), pool.size() as u64)
        } else {
            let c = Arc::clone(&ctx);
            let figures = load::run(args.workers, args.warmup, duration, move |_, _| {
                let c = Arc::clone(&c);
                async move { c.once(scenario).await.map(Some) }
            })
            .await
            .map_err(fail)?;
            (figures, None, 0)
        };
        let loss = loss_check(
            endpoints,
            audit_token,
            &ctx.world.zone_id,
            figures.audit_events_expected + minted,
        )
        .await;
        Ok(Run {
            scenario,
            stack,
            mode: mode.to_owned(),
            workers: args.workers,
            figures,
            loss,
            soak: soak.is_some(),
            note,
        })
    }
}

fn stack_tag(stack: Stack) -> &'static str {
    match stack {
        Stack::Embedded => "mem",
        Stack::Durable => "pg",
        Stack::Target => "tgt",
    }
}

/// `http://host[:port]` plus the service ports moved by `offset`.
fn endpoints_at(base: &str, offset: u16) -> Result<Endpoints, CmdError> {
    let base = base.trim_end_matches('/');
    let host = base
        .strip_prefix("http://")
        .ok_or_else(|| CmdError::Config("--target must be http://HOST".to_owned()))?;
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let url = |p: u16| {
        p.checked_add(offset)
            .map(|p| format!("http://{host}:{p}"))
            .ok_or_else(|| CmdError::Config("--port-offset moves a port past 65535".to_owned()))
    };
    Ok(Endpoints {
        sts: url(8080)?,
        gateway: url(8081)?,
        coordinator: url(4000)?,
        admin: url(3000)?,
        audit: url(9090)?,
    })
}

/// The loss check gives up when the zone's chain has not grown for this long.
const LOSS_STALL: Duration = Duration::from_secs(30);

/// Wait until the zone's chain holds at least `expected` rows (as long as it keeps growing:
/// after a soak on Postgres the ingestor may still be catching up), then read the verifier's
/// verdict.
async fn loss_check(endpoints: &Endpoints, token: &str, zone: &str, expected: u64) -> Loss {
    // Verifying millions of rows (a soak's zone) takes longer than one operation's timeout.
    let http = Http::new(Duration::from_secs(600));
    let audit = crate::api::audit::Audit::new(http, &endpoints.audit, token);
    let (mut seen, mut grew) = (0u64, tokio::time::Instant::now());
    loop {
        match audit.verify_zone(zone).await {
            Ok(v) => {
                let v = v.value;
                if v.rows_checked >= expected && v.findings == 0 {
                    return Loss::Lossless {
                        expected,
                        rows: v.rows_checked,
                    };
                }
                if v.rows_checked > seen {
                    (seen, grew) = (v.rows_checked, tokio::time::Instant::now());
                }
                if grew.elapsed() >= LOSS_STALL || v.findings > 0 && v.rows_checked >= expected {
                    return Loss::Lost {
                        expected,
                        rows: v.rows_checked,
                        findings: v.findings,
                    };
                }
            }
            Err(e) if e.status() == Some(404) => {
                return Loss::NotChecked(
                    "the Audit service's admin API is closed (no AUDIT_ADMIN_TOKEN configured on the stack)"
                        .to_owned(),
                );
            }
            Err(e) => {
                if grew.elapsed() >= LOSS_STALL {
                    return Loss::NotChecked(format!("the Audit service did not answer: {e}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_endpoints_move_with_the_offset() {
        let e = endpoints_at("http://10.0.0.5:1234/", 100).unwrap();
        assert_eq!(e.sts, "http://10.0.0.5:8180");
        assert_eq!(e.audit, "http://10.0.0.5:9190");
        assert!(endpoints_at("https://x", 0).is_err());
        assert!(endpoints_at("http://x", 60_000).is_err());
    }

    fn args(extra: &[&str]) -> BenchArgs {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let mut argv = vec!["bench"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().bench
    }

    fn modes(extra: &[&str]) -> Result<Vec<String>, CmdError> {
        targets(&args(extra)).map(|t| {
            t.iter()
                .map(|t| match t {
                    Target::Start(m) => format!("{m:?}"),
                    Target::Running(b) => b.clone(),
                })
                .collect()
        })
    }

    #[test]
    fn the_modes_follow_the_urls_and_refuse_what_cannot_run() {
        assert_eq!(modes(&[]).unwrap(), ["Embedded"]);
        let urls = [
            "--database-url",
            "postgres://u:pw@h/db",
            "--redis-url",
            "redis://h",
        ];
        assert_eq!(modes(&urls).unwrap(), ["Embedded", "Postgres"]);
        let mut only = urls.to_vec();
        only.extend(["--modes", "postgres"]);
        assert_eq!(modes(&only).unwrap(), ["Postgres"]);
        assert!(modes(&["--modes", "postgres"]).is_err());
        assert!(modes(&["--modes", "postgres", "--database-url", "postgres://h/db"]).is_err());
        assert!(modes(&["--modes", "embedded", "--redis-url", "redis://h"]).is_err());
        assert_eq!(modes(&["--target", "http://h"]).unwrap(), ["http://h"]);
        assert!(modes(&["--target", "http://h", "--modes", "embedded"]).is_err());
    }

    #[test]
    fn the_header_command_hides_the_urls_and_matches_the_canonical_run() {
        let a = args(&[
            "--scenario",
            "all",
            "--workers",
            "4",
            "--duration",
            "10s",
            "--warmup",
            "2s",
            "--database-url",
            "postgres://u:secret@h/db",
            "--redis-url",
            "redis://:secret@h",
            "--soak",
            "5m",
        ]);
        let c = command_line(&a, std::path::Path::new("BENCHMARKS.md"));
        assert_eq!(c, CANONICAL);
        assert!(!c.contains("secret"));
        let short = args(&["--duration", "500ms", "--gateway-pool", "10"]);
        assert_eq!(
            command_line(&short, std::path::Path::new("B.md")),
            "caracal bench --scenario all --workers 16 --duration 0.5s --warmup 2s --gateway-pool 10 --report B.md"
        );
    }

    #[test]
    fn the_gateway_pool_covers_the_run_at_a_generous_rate_within_its_cap() {
        assert_eq!(
            pool_size(&args(&["--duration", "3s", "--warmup", "1s"])),
            80_000
        );
        assert_eq!(pool_size(&args(&["--duration", "2m"])), POOL_CAP);
        assert_eq!(pool_size(&args(&["--gateway-pool", "7"])), 7);
    }
}
