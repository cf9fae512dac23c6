//! `caracal streams provision|verify` as a user runs them: the built binary against a real
//! (ephemeral) Redis, exit codes and output.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use caracal_test_support::{EphemeralRedis, RedisOptions, SupportError, is_ci};

fn caracal(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_caracal"));
    cmd.args(args)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_URL_FILE")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `out` has a row whose whitespace-separated cells are `cells`.
fn has_row(out: &str, cells: &[&str]) -> bool {
    out.lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == cells)
}

/// A server of this test's own: the nine stream names are fixed, and this test destroys a
/// group, so it never runs on a shared server named by `CARACAL_TEST_REDIS_URL`.
fn own_redis(test: &str) -> Option<EphemeralRedis> {
    let opts = RedisOptions {
        honour_env: false,
        ..RedisOptions::default()
    };
    match EphemeralRedis::start_with(opts) {
        Ok(server) => Some(server),
        Err(SupportError::BinariesMissing { what, hint }) => {
            assert!(
                !is_ci(),
                "CI=true and redis-server is missing ({what}: {hint})"
            );
            eprintln!("SKIPPED: {test}: no redis-server ({what}: {hint}). This test did NOT run.");
            None
        }
        Err(e) => panic!("{test}: could not start redis-server: {e}"),
    }
}

#[test]
fn provision_verify_reprovision_then_a_destroyed_group_fails_verify() {
    let Some(server) = own_redis("provision_verify_reprovision") else {
        return;
    };
    let url = server.url();

    // Provision, URL by flag.
    let out = caracal(&["streams", "provision", "--redis-url", &url], &[]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(has_row(&stdout, &["STREAM", "GROUP", "STATUS"]), "{stdout}");
    assert!(
        has_row(
            &stdout,
            &["caracal.audit.events", "audit-ingestor", "created"]
        ),
        "{stdout}"
    );
    assert!(
        has_row(
            &stdout,
            &["caracal.providers.ratelimit", "-", "seeded", "(init=1)"]
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("provisioned: 9 streams, 9 groups created, 0 already present"),
        "{stdout}"
    );

    // Verify, URL from REDIS_URL.
    let out = caracal(&["streams", "verify"], &[("REDIS_URL", &url)]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(
        has_row(
            &stdout,
            &["caracal.sessions.revoke", "sts-revocation", "ok"]
        ),
        "{stdout}"
    );
    assert!(stdout.ends_with("verify: OK\n"), "{stdout}");

    // Re-provision, URL from a mounted-secret style file (which wins over REDIS_URL): a
    // no-op.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis_url");
    std::fs::write(&file, format!("{url}\n \n")).unwrap();
    let out = caracal(
        &["streams", "provision"],
        &[
            ("REDIS_URL_FILE", &file.display().to_string()),
            ("REDIS_URL", "redis://127.0.0.1:1/"),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("provisioned: no changes (9 streams, 9 groups already present)"),
        "{stdout}"
    );
    assert!(!stdout.contains("created"), "{stdout}");

    // A group destroyed out of band: verify exits 1 and names it.
    server
        .command(&[
            "XGROUP",
            "DESTROY",
            "caracal.sessions.revoke",
            "sts-revocation",
        ])
        .unwrap();
    let out = caracal(&["streams", "verify", "--redis-url", &url], &[]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        has_row(
            &stdout,
            &["caracal.sessions.revoke", "sts-revocation", "MISSING"]
        ),
        "{stdout}"
    );
    assert!(stdout.ends_with("verify: FAILED (1 problem)\n"), "{stdout}");
    assert!(
        stderr.contains(
            "error: verify failed: group sts-revocation is missing on stream \
             caracal.sessions.revoke"
        ),
        "{stderr}"
    );

    // Provision repairs it; verify passes again.
    let out = caracal(&["streams", "provision", "--redis-url", &url], &[]);
    assert!(
        has_row(
            &text(&out.stdout),
            &["caracal.sessions.revoke", "sts-revocation", "created"]
        ),
        "{}",
        text(&out.stdout)
    );
    let out = caracal(&["streams", "verify", "--redis-url", &url], &[]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn unreachable_or_missing_redis_fails_clearly_without_secrets() {
    let out = caracal(
        &[
            "streams",
            "verify",
            "--redis-url",
            "redis://:hunter2@127.0.0.1:1/0",
            "--timeout-secs",
            "1",
        ],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: Redis at redis://:***@127.0.0.1:1/0:"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    assert!(text(&out.stdout).is_empty());

    let out = caracal(&["streams", "provision"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no Redis URL"));

    let out = caracal(
        &["streams", "verify", "--redis-url", "http://not-redis"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("invalid Redis URL"),
        "{}",
        text(&out.stderr)
    );

    let out = caracal(&["streams"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing action is a usage error"
    );
}
