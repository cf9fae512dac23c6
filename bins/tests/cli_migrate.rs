//! `caracal migrate` as a user runs it: the built binary, a real
//! Postgres, exit codes and output. (`caracal up` is driven by `tests/up.rs`.)

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use caracal_test_support::postgres_or_skip;

fn caracal(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_caracal"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_URL_FILE")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn migrate_applies_then_reports_up_to_date() {
    let Some(pg) = postgres_or_skip("migrate_applies_then_reports_up_to_date") else {
        return;
    };
    let url = pg.create_database("cli_migrate").await.unwrap();

    // The expected figures come from the embedded list, so adding a migration needs no edit.
    let embedded = caracal_core::backend::postgres::migrate::EMBEDDED;
    let count = embedded.len();
    let latest = embedded.last().map(|m| m.version()).unwrap();

    // First run, URL by flag: applies every embedded migration.
    let out = caracal(&["migrate", "--database-url", &url], &[]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("applied 0001_baseline (sha256 "),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("migrated: {count} applied, 0 already applied")),
        "{stdout}"
    );

    // Second run, URL from DATABASE_URL: nothing to do.
    let out = caracal(&["migrate"], &[("DATABASE_URL", &url)]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        stdout.starts_with(&format!(
            "up to date: {count} migration{} applied, schema at {latest}",
            if count == 1 { "" } else { "s" }
        )),
        "{stdout}"
    );

    // Third run, URL from a mounted-secret style file (trailing whitespace), which wins over
    // DATABASE_URL.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database_url");
    std::fs::write(&file, format!("{url}\n  \n")).unwrap();
    let out = caracal(
        &["migrate"],
        &[
            ("DATABASE_URL_FILE", &file.display().to_string()),
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing"),
        ],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("up to date"));
}

#[test]
fn bad_urls_fail_with_a_clear_message_and_no_secret() {
    // Nothing listens on port 1: a refused connection, reported with the password redacted.
    let out = caracal(
        &[
            "migrate",
            "--database-url",
            "postgres://caracal:hunter2@127.0.0.1:1/caracal",
            "--connect-timeout-secs",
            "2",
        ],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: cannot connect to Postgres at postgres://caracal:***@127.0.0.1:1/caracal"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    assert!(text(&out.stdout).is_empty());

    // Not a URL at all.
    let out = caracal(
        &["migrate", "--database-url", "postgres://h:notaport/db"],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: invalid database URL"), "{stderr}");

    // No URL anywhere.
    let out = caracal(&["migrate"], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no database URL"), "{stderr}");

    // A URL file that does not exist.
    let out = caracal(
        &["migrate"],
        &[("DATABASE_URL_FILE", "/nonexistent/caracal-url")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/caracal-url"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let out = caracal(&["migrate", "--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = caracal(&["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("migrate") && help.contains("up"), "{help}");
}
