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
