//! `caracal demo --embedded` tells the whole story and exits 0: the upstream sees the
//! provider key and never the mandate, a wider scope is denied, the child is refused after
//! its parent is revoked, and the zone's audit chain verifies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn embedded_demo_tells_the_story_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(["demo", "--embedded"])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("CARACAL_BOOTSTRAP_ADMIN_TOKEN")
        .env_remove("AUDIT_ADMIN_TOKEN")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes on threads so a full pipe never stalls the demo.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "caracal demo did not finish within 240 s:\n{}",
                out.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.join().unwrap();
    let err = err.join().unwrap();
    assert!(
        status.success(),
        "{status:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    for line in [
        " 1. Create a zone",
        " 6. Bootstrap a session mandate",
        " 9. Delegate a narrowed scope to the child",
        "upstream saw the provider key: yes",
        "upstream saw the agent's mandate: no",
        "wider scope denied: HTTP 403",
        "child refused after revoke: HTTP 4",
        "audit chain verified: ",
        "Demo complete",
        "Embedded services stopped.",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // Every numbered step shows the request id of its calls.
    assert!(out.matches("[request ").count() >= 15, "{out}");
    // The provider key and the admin token never appear whole.
    assert!(!out.contains("cat_"), "{out}");
    assert!(!out.contains("cs_"), "{out}");
}

/// Run `cmd` to completion within `limit`, draining both pipes; (status, stdout, stderr).
fn run_bounded(mut cmd: Command, limit: Duration) -> (std::process::ExitStatus, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("did not finish within {limit:?}:\n{}", out.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// The README as a new user follows it: `caracal up` starts and becomes ready, `caracal demo`
/// against it completes with the audit chain verified, and Ctrl-C (SIGTERM) stops `up`
/// cleanly.
#[test]
fn the_readme_tour_up_then_demo_then_stop() {
    let dir = tempfile::tempdir().unwrap();
    let offset = {
        let mut o = 30_000 + (std::process::id() % 1_000) as u16 * 7;
        while ![8080u16, 8081, 4000, 3000, 9090]
            .iter()
            .all(|b| std::net::TcpListener::bind(("0.0.0.0", b + o)).is_ok())
        {
            o += 13;
        }
        o
    };
    let mut up = Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(["up", "--port-offset", &offset.to_string(), "--data-dir"])
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("CARACAL_BOOTSTRAP_ADMIN_TOKEN")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // `up` prints its banner once every service is ready.
    let mut stdout = up.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut text = String::new();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if text.contains("Bootstrap admin token") {
                let _ = tx.send(text.clone());
            }
        }
    });
    let banner = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| {
            let _ = up.kill();
            panic!("caracal up never printed its ready banner")
        });
    assert!(banner.contains("Gateway"), "{banner}");

    let mut demo = Command::new(env!("CARGO_BIN_EXE_caracal"));
    demo.args(["demo", "--port-offset", &offset.to_string(), "--data-dir"])
        .arg(dir.path())
        .env_remove("CARACAL_BOOTSTRAP_ADMIN_TOKEN")
        .env_remove("AUDIT_ADMIN_TOKEN")
        .env("RUST_LOG", "error");
    let (status, out, err) = run_bounded(demo, Duration::from_secs(240));
    assert!(
        status.success(),
        "{status:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(out.contains("audit chain verified"), "{out}");

    Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let stopped = loop {
        if let Some(s) = up.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = up.kill();
            panic!("caracal up did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(stopped.success(), "{stopped:?}");
}
