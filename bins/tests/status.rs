//! `caracal status` against a `caracal up` child process: every service up and ready (table
//! and `--json`, `--ready` exits 0); after the process stops, every service down with a
//! reason and `--ready` exits non-zero.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn status(offset: u16, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(["status", "--port-offset", &offset.to_string()])
        .args(extra)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The first offset from `start` at which the five ports of `up` are free.
fn free_offset(start: u16) -> u16 {
    (0..100u16)
        .map(|i| start + i * 11)
        .find(|o| {
            [8080u16, 8081, 4000, 3000, 9090]
                .iter()
                .all(|b| std::net::TcpListener::bind(("0.0.0.0", b + o)).is_ok())
        })
        .expect("no free port offset")
}

#[test]
fn status_reports_ready_then_down() {
    let dir = tempfile::tempdir().unwrap();
    let offset = free_offset(22_000 + (std::process::id() % 20_000) as u16);
    let mut up = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(["up", "--port-offset", &offset.to_string(), "--data-dir"])
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) until status itself reports everything ready.
    let mut ready = None;
    for _ in 0..300 {
        let out = status(offset, &["--ready"]);
        if out.status.success() {
            ready = Some(out);
            break;
        }
        if let Some(s) = up.try_wait().unwrap() {
            panic!("caracal up exited early: {s:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(out) = ready else {
        let _ = up.kill();
        panic!("caracal status --ready never passed");
    };
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for name in ["STS", "Gateway", "Coordinator", "Admin API", "Audit"] {
        let line = table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{table}"));
        assert!(line.contains(" up ") && line.contains(" ready "), "{line}");
    }
    assert!(table.contains(&format!("http://127.0.0.1:{}", 8080 + offset)));
    let doc = json(&status(offset, &["--json"]));
    assert_eq!(doc["all_ready"], true, "{doc}");
    let services = doc["services"].as_array().unwrap();
    assert_eq!(services.len(), 5);
    let sts = &services[0];
    assert_eq!(
        (
            sts["service"].as_str(),
            sts["up"].as_bool(),
            sts["ready_status"].as_u64()
        ),
        (Some("STS"), Some(true), Some(200)),
        "{doc}"
    );

    // Stop `up` (SIGTERM, bounded wait).
    Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    let mut stopped = false;
    for _ in 0..300 {
        if up.try_wait().unwrap().is_some() {
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !stopped {
        let _ = up.kill();
        panic!("caracal up did not stop within 30 s");
    }

    let out = status(offset, &["--ready", "--json"]);
    assert!(!out.status.success(), "--ready must fail when down");
    let doc = json(&out);
    assert_eq!(doc["all_ready"], false);
    for s in doc["services"].as_array().unwrap() {
        assert_eq!(s["up"], false, "{s}");
        assert_eq!(s["ready"], false, "{s}");
        assert!(
            s["reason"].as_str().unwrap().starts_with("unreachable"),
            "{s}"
        );
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not ready: STS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without --ready the report alone succeeds.
    assert!(status(offset, &[]).status.success());
}
