//! `caracal bench` runs every scenario for a short while, prints one line per scenario and the
//! loss check, and writes the report: against the embedded stack it starts itself, in both
//! modes (in memory, then on Postgres and Redis) in one run, and against a running stack
//! (`--target`). No thresholds: this only keeps the harness from rotting (figures come from
//! release runs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Every scenario `--scenario all` runs, by its console name.
const SCENARIOS: [&str; 6] = [
    "governed",
    "gateway",
    "exchange",
    "verify",
    "session-cycle",
    "audit-ingest",
];

/// Run `caracal <args>` (stdout to a file under `dir`), killing it after `limit`.
fn caracal(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (ExitStatus, String) {
    let out = dir.join(format!("stdout-{}.txt", args.len()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_caracal"));
    cmd.args(args)
        .env_remove("CARACAL_BOOTSTRAP_ADMIN_TOKEN")
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("caracal {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out).unwrap();
    println!("{stdout}");
    (status, stdout)
}

/// The console line of `scenario` in the pass of `mode` (passes start with `caracal bench: `).
fn line_in<'a>(stdout: &'a str, mode: &str, scenario: &str) -> &'a str {
    let pass = stdout
        .split("caracal bench: ")
        .find(|p| p.starts_with(mode))
        .unwrap_or_else(|| panic!("no {mode} pass: {stdout}"));
    pass.lines()
        .find(|l| l.starts_with(&format!("{scenario} ")) && l.contains("req/s"))
        .unwrap_or_else(|| panic!("no {scenario} line in the {mode} pass: {stdout}"))
}

#[test]
fn every_scenario_runs_embedded_and_the_report_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("BENCHMARKS.md");
    let report_arg = report.to_str().unwrap();
    let (status, stdout) = caracal(
        dir.path(),
        &[
            "bench",
            "--scenario",
            "all",
            "--workers",
            "4",
            "--duration",
            "2s",
            "--warmup",
            "200ms",
            // A small pool: the gateway scenario may run it out, which it must report, not fail.
            "--gateway-pool",
            "1500",
            "--soak",
            "2s",
            "--report",
            report_arg,
        ],
        &[],
        Duration::from_secs(300),
    );
    assert!(status.success(), "caracal bench failed: {stdout}");
    for scenario in SCENARIOS {
        let line = line_in(&stdout, "embedded", scenario);
        assert!(line.contains("p99"), "{line}");
    }
    assert!(
        stdout.contains("  note: 1500 one-shot mandates"),
        "{stdout}"
    );
    assert!(stdout.contains("soak governed "), "{stdout}");
    assert!(!stdout.contains("LOSS"), "{stdout}");
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.starts_with("# Benchmarks"));
    assert!(md.contains("**Not the published run.**"), "{md}");
    assert!(
        md.contains("--gateway-pool 1500 --soak 2s --report"),
        "{md}"
    );
    assert!(md.contains("| governed | embedded | 4 |"), "{md}");
    assert!(md.contains("| gateway | embedded | 4 |"), "{md}");
    assert!(md.contains("## Soak\n"), "{md}");
    assert!(md.contains("| Soak | Mode |"), "{md}");
    assert!(
        md.contains("| gateway call ≥ 10000 req/s (embedded) |"),
        "{md}"
    );
    assert!(md.contains("| governed ≥ 4000 req/s and p50 ≤ 1 ms (postgres+redis) | not measured"));
    assert!(md.contains("## Against the reference"));
    assert!(md.contains("Commit: `"));
}

#[test]
fn a_target_without_an_admin_token_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(["bench", "--target", "http://127.0.0.1", "--duration", "1s"])
        .env_remove("CARACAL_BOOTSTRAP_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("admin token"), "{err}");
}

#[test]
fn the_postgres_mode_without_its_urls_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(["bench", "--modes", "embedded,postgres", "--duration", "1s"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("--database-url and --redis-url"), "{err}");
}

/// One run measures every scenario in both modes (the embedded stack in memory, then the same
/// stack on Postgres and Redis, started by the harness) and writes both into one report, with
/// `audit-ingest` on the Postgres ledger and a soak in each mode.
#[test]
fn one_run_measures_every_scenario_in_both_modes() {
    let Some(pg) = caracal_test_support::postgres_or_skip("bench_both_modes") else {
        return;
    };
    let Some(redis) = caracal_test_support::redis_or_skip("bench_both_modes") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(pg.create_database("bench_modes")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("BENCHMARKS.md");
    let redis_url = redis.url();
    let (status, stdout) = caracal(
        dir.path(),
        &[
            "bench",
            "--workers",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "100ms",
            "--gateway-pool",
            "800",
            "--soak",
            "1s",
            "--database-url",
            db.as_str(),
            "--redis-url",
            &redis_url,
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(600),
    );
    assert!(status.success(), "caracal bench failed: {stdout}");
    for mode in ["embedded", "postgres+redis"] {
        for scenario in SCENARIOS {
            line_in(&stdout, mode, scenario);
        }
    }
    assert!(!stdout.contains("LOSS"), "{stdout}");
    let md = std::fs::read_to_string(&report).unwrap();
    // The URLs (which may hold passwords) never reach the report.
    assert!(
        !md.contains(db.as_str()) && !md.contains(&redis_url),
        "{md}"
    );
    assert!(md.contains("--database-url \"$DATABASE_URL\""), "{md}");
    for scenario in ["governed", "gateway", "exchange", "verify", "session-cycle"] {
        for mode in ["embedded", "postgres+redis"] {
            assert!(
                md.contains(&format!("| {scenario} | {mode} | 4 |")),
                "no {scenario} row in {mode}: {md}"
            );
        }
    }
    assert!(
        md.contains(
            "| audit-ingest | postgres+redis (in-process, Redis stream, Postgres ledger) |"
        ),
        "{md}"
    );
    assert!(md.contains("| governed ≥ 6000 req/s (embedded) |"), "{md}");
    assert!(
        md.contains("| governed ≥ 4000 req/s (postgres+redis) |"),
        "{md}"
    );
    assert!(
        md.contains("| governed p50 ≤ 1 ms (postgres+redis) |"),
        "{md}"
    );
    assert!(
        md.contains("| gateway call p50 ≤ 0.5 ms (postgres+redis) |"),
        "{md}"
    );
    assert!(
        md.contains("| audit ingest ≥ 20000 events/s (Postgres ledger) |"),
        "{md}"
    );
    assert!(md.contains("| governed | postgres+redis | 4 | "), "{md}");
    assert_eq!(
        md.matches("-minute soak: zero errors, zero audit loss (")
            .count(),
        2,
        "{md}"
    );
    assert!(md.contains("0 with loss, 0 not checked | yes |"), "{md}");
}

/// Against a running `caracal up` on Postgres and Redis (`--target`), every scenario runs.
#[test]
fn every_scenario_runs_against_a_stack_on_postgres_and_redis() {
    let Some(pg) = caracal_test_support::postgres_or_skip("bench_on_postgres_and_redis") else {
        return;
    };
    let Some(redis) = caracal_test_support::redis_or_skip("bench_on_postgres_and_redis") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(pg.create_database("bench_durable")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let offset: u16 = 22_000 + (std::process::id() % 20_000) as u16;
    let mut up = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(["up", "--port-offset", &offset.to_string(), "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", db.as_str(), "--redis-url", &redis.url()])
        .env_remove("CARACAL_BOOTSTRAP_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("Bootstrap admin token") => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    if !ready {
        let _ = up.kill();
        let _ = up.wait();
        panic!("caracal up on Postgres and Redis was not ready within 120 s");
    }
    let token = std::fs::read_to_string(dir.path().join("bootstrap-admin-token")).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let offset = offset.to_string();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        caracal(
            out_dir.path(),
            &[
                "bench",
                "--target",
                "http://127.0.0.1",
                "--port-offset",
                &offset,
                "--workers",
                "4",
                "--duration",
                "1s",
                "--warmup",
                "100ms",
                "--gateway-pool",
                "500",
            ],
            &[("CARACAL_BOOTSTRAP_ADMIN_TOKEN", token.trim())],
            Duration::from_secs(300),
        )
    }));
    let _ = up.kill();
    let _ = up.wait();
    let (status, text) = run.unwrap_or_else(|p| std::panic::resume_unwind(p));
    assert!(status.success(), "{text}");
    for scenario in ["governed", "gateway", "exchange", "verify", "session-cycle"] {
        line_in(&text, "target http://127.0.0.1", scenario);
    }
}
