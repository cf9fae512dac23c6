//! `caracal bench`: the load harness (issue #10, SPEC §6).
//!
//! It provisions a world through the public APIs, runs each scenario in a closed loop
//! (`--workers` tasks, `--warmup` unmeasured, then `--duration` measured), prints p50, p95,
//! p99, max, req/s and errors, and after each scenario checks **losslessness**: the Audit
//! service's chain verification of that scenario's zone must report no finding and at least as
//! many rows as the measured operations required events. `--report FILE` writes `BENCHMARKS.md` from the
//! same figures.
//!
//! Targets: by default the harness starts the embedded stack itself (`caracal up`'s
//! [`up::serve`](super::up::serve) in this process, on the in-memory store, on a free port
//! offset); `--target http://HOST --port-offset N` drives a running stack (for example a
//! `caracal up --database-url … --redis-url …` on Postgres and Redis) with its bootstrap
//! admin token (`--admin-token` / `CARACAL_BOOTSTRAP_ADMIN_TOKEN`).
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

use self::report::{Loss, Run};

use self::scenario::{Ctx, Endpoints, Scenario};
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
}

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

/// The embedded stack of one run: stopped when dropped (the shutdown sender closes).
struct Embedded {
    offset: u16,
    token: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    data_dir: PathBuf,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
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

/// Start `caracal up`'s services in this process and wait until they are ready.
async fn embedded() -> Result<Embedded, CmdError> {
    let offset = free_offset()?;
    let data_dir =
        std::env::temp_dir().join(format!("caracal-bench-{}-{offset}", std::process::id()));
    let token = caracal_core::secrets::client_secret::generate_admin_token()
        .map_err(|e| fail(format!("admin token: {e}")))?;
    let args = super::up::UpArgs {
        port_offset: offset,
        data_dir: data_dir.clone(),
        issuer: None,
        bootstrap_admin_token: Some(token.clone()),
        database_url: None,
        redis_url: None,
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
            _stop: stop,
            data_dir,
        }),
        Ok(Err(_)) => match server.await {
            Ok(Err(e)) => Err(e),
            _ => Err(fail("the embedded stack stopped before it was ready")),
        },
        Err(_) => Err(fail("the embedded stack was not ready within 60 s")),
    }
}

/// Run the harness; `out` receives each console line. Answers the runs (tests inspect them).
pub async fn bench(args: &BenchArgs, out: &mut dyn FnMut(&str)) -> Result<Vec<Run>, CmdError> {
    if args.workers == 0 {
        return Err(CmdError::Config("--workers must be at least 1".to_owned()));
    }
    let (_stack, endpoints, token, mode) = match &args.target {
        None => {
            let stack = embedded().await?;
            let endpoints =
                Endpoints::local(stack.offset).ok_or_else(|| fail("port offset out of range"))?;
            let token = stack.token.clone();
            (Some(stack), endpoints, token, "embedded".to_owned())
        }
        Some(base) => {
            let token = args.admin_token.clone().ok_or_else(|| {
                CmdError::Config(
                    "--target needs the stack's bootstrap admin token (--admin-token or CARACAL_BOOTSTRAP_ADMIN_TOKEN)"
                        .to_owned(),
                )
            })?;
            let endpoints = endpoints_at(base, args.port_offset)?;
            (None, endpoints, token, format!("target {base}"))
        }
    };
    let upstream = upstream::Upstream::start().await.map_err(fail)?;
    let http = Http::new(Duration::from_secs(10));
    let tag = caracal_core::ids::IdGen::next_id(&caracal_core::ids::UuidV7)
        .chars()
        .rev()
        .take(12)
        .collect::<String>();
    out(&format!(
        "caracal bench: {mode}, {} workers, warmup {:?}, duration {:?}",
        args.workers, args.warmup, args.duration
    ));
    let audit_token = args.audit_token.clone().unwrap_or_else(|| token.clone());
    let mut runs = Vec::new();
    for scenario in args.scenario.expand() {
        if scenario == Scenario::AuditIngest {
            let (figures, loss) = ingest::run(args.duration).await.map_err(fail)?;
            let r = Run {
                scenario,
                mode: "in-process (memory ledger)".to_owned(),
                workers: 1,
                figures,
                loss,
            };
            out(&report::console_line(&r));
            out(&format!("  audit: {}", r.loss.line()));
            runs.push(r);
            continue;
        }
        // A fresh world per scenario: its own zone, so each loss check counts only its own
        // events, and its own per-(zone, resource, application) mint-limit window.
        let ctx = Ctx::provision(
            http.clone(),
            &endpoints,
            &token,
            &upstream.url(),
            &format!("{tag}-{}", scenario.name()),
        )
        .await
        .map_err(fail)?;
        let c = Arc::clone(&ctx);
        let figures = load::run(args.workers, args.warmup, args.duration, move |_, _| {
            let c = Arc::clone(&c);
            async move { c.once(scenario).await }
        })
        .await
        .map_err(fail)?;
        let loss = loss_check(
            &http,
            &endpoints,
            &audit_token,
            &ctx.world.zone_id,
            figures.audit_events_expected,
        )
        .await;
        let r = Run {
            scenario,
            mode: mode.clone(),
            workers: args.workers,
            figures,
            loss,
        };
        out(&report::console_line(&r));
        out(&format!("  audit: {}", r.loss.line()));
        runs.push(r);
    }
    if let Some(path) = &args.report {
        let command = format!(
            "caracal bench --scenario {} --workers {} --duration {}s --warmup {}s --report {}",
            args.scenario.name(),
            args.workers,
            args.duration.as_secs_f64(),
            args.warmup.as_secs_f64(),
            path.display()
        );
        std::fs::write(path, report::markdown(&runs, &command))
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        out(&format!("wrote {}", path.display()));
    }
    // A lost event fails the command (after the report is written): a soak in CI must not
    // pass with a hole in the ledger.
    let lost: Vec<&str> = runs
        .iter()
        .filter(|r| matches!(r.loss, Loss::Lost { .. }))
        .map(|r| r.scenario.name())
        .collect();
    if !lost.is_empty() {
        return Err(fail(format!("audit events lost in: {}", lost.join(", "))));
    }
    Ok(runs)
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

/// Wait (up to 30 s) until the zone's chain holds at least `expected` rows, then read the
/// verifier's verdict.
async fn loss_check(
    http: &Http,
    endpoints: &Endpoints,
    token: &str,
    zone: &str,
    expected: u64,
) -> Loss {
    let audit = crate::api::audit::Audit::new(http.clone(), &endpoints.audit, token);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
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
                if tokio::time::Instant::now() >= deadline {
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
                if tokio::time::Instant::now() >= deadline {
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
}
