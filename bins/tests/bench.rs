//! `caracal bench` runs every scenario for a short while against the embedded stack it
//! starts itself, prints one line per scenario and the loss check, and writes the report.
//! No thresholds: this only keeps the harness from rotting (figures come from release runs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn every_scenario_runs_embedded_and_the_report_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("BENCHMARKS.md");
    let out = dir.path().join("stdout.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args([
            "bench",
            "--scenario",
            "all",
            "--workers",
            "4",
            "--duration",
            "2s",
            "--warmup",
            "200ms",
            "--report",
        ])
        .arg(&report)
        .env_remove("CARACAL_BOOTSTRAP_ADMIN_TOKEN")
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("caracal bench did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out).unwrap();
    println!("{stdout}");
    assert!(status.success(), "caracal bench failed: {stdout}");
    for scenario in [
        "governed",
        "exchange",
        "verify",
        "session-cycle",
        "audit-ingest",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(scenario) && l.contains("req/s"))
            .unwrap_or_else(|| panic!("no line for {scenario}: {stdout}"));
        assert!(line.contains("p99"), "{line}");
    }
    assert!(stdout.contains("audit: "), "{stdout}");
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.starts_with("# Benchmarks"));
    assert!(md.contains("| governed | embedded | 4 |"), "{md}");
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
        panic!("caracal up on Postgres and Redis was not ready within 120 s");
    }
    let token = std::fs::read_to_string(dir.path().join("bootstrap-admin-token")).unwrap();
    let mut bench = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args([
            "bench",
            "--target",
            "http://127.0.0.1",
            "--port-offset",
            &offset.to_string(),
            "--workers",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "100ms",
        ])
        .env("CARACAL_BOOTSTRAP_ADMIN_TOKEN", token.trim())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = bench.kill();
            let _ = up.kill();
            panic!("caracal bench did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut bench.stdout.take().unwrap(), &mut text).unwrap();
    let _ = up.kill();
    let _ = up.wait();
    println!("{text}");
    assert!(status.success(), "{text}");
    assert!(text.contains("target http://127.0.0.1"), "{text}");
    for scenario in ["governed", "exchange", "verify", "session-cycle"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(scenario) && l.contains("req/s")),
            "no line for {scenario}: {text}"
        );
    }
}
