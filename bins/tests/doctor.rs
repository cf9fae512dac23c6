//! `caracal doctor` as an operator runs it: the built binary against a real (ephemeral)
//! Postgres and Redis, healthy first, then with one dependency broken at a time; each time the
//! right row fails, the others pass, and the exit code says so.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use caracal_test_support::{
    EphemeralRedis, PgOptions, RedisOptions, SupportError, is_ci, own_postgres_with_or_skip,
};

fn caracal(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_caracal"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_URL_FILE")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_URL_FILE")
        .env_remove("RUST_LOG");
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The status cell of `check`'s row.
fn status_of<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find_map(|l| {
            let mut cells = l.split_whitespace();
            (cells.next() == Some(check)).then(|| cells.next().unwrap_or(""))
        })
        .unwrap_or_else(|| panic!("no row {check} in:\n{out}"))
}

/// Run doctor; assert the exit code and that exactly `failing` rows fail (the rest pass,
/// except `skipped`). Returns stdout.
fn doctor(base: &[&str], failing: &[&str], skipped: &[&str]) -> String {
    let out = caracal(base);
    let stdout = text(&out.stdout);
    let ctx = format!("stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    assert_eq!(out.status.success(), failing.is_empty(), "{ctx}");
    for check in [
        "migrations",
        "streams",
        "outbox",
        "audit-dlq",
        "audit-replay",
        "gateway",
    ] {
        let want = if failing.contains(&check) {
            "FAIL"
        } else if skipped.contains(&check) {
            "SKIP"
        } else {
            "PASS"
        };
        assert_eq!(status_of(&stdout, check), want, "row {check}: {ctx}");
        if want == "FAIL" {
            assert!(
                stdout.contains(&format!("action: {check}: ")),
                "no action for {check}: {ctx}"
            );
        }
    }
    stdout
}

/// A stand-in for the Gateway's `/ready`: answers 200, or 503 `revocation_snapshot_stale`
/// while `stale` is set. Only doctor's HTTP reading is under test here; the real Gateway's
/// readiness is exercised by the drills.
fn fake_gateway(stale: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let (status, body) = if stale.load(Ordering::SeqCst) {
                (
                    "503 Service Unavailable",
                    r#"{"ok":false,"ready":false,"reason":"revocation_snapshot_stale"}"#,
                )
            } else {
                ("200 OK", r#"{"ok":true,"ready":true}"#)
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

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

fn sql(url: &str, statement: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = caracal_test_support::connect(url).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), client.batch_execute(statement))
            .await
            .unwrap()
            .unwrap();
    });
}

fn spill(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("pending-1-1700000000000000000.ndjson");
    std::fs::write(&file, "{\"id\":\"x\",\"data\":\"{}\",\"sig\":null}\n").unwrap();
    file
}

#[test]
fn doctor_healthy_then_each_dependency_broken() {
    const T: &str = "doctor_healthy_then_each_dependency_broken";
    let opts = PgOptions {
        honour_env: false,
        ..PgOptions::default()
    };
    let Some(pg) = own_postgres_with_or_skip(T, opts) else {
        return;
    };
    let Some(redis) = own_redis(T) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(pg.create_database("doctor")).unwrap();
    drop(rt);
    let redis_url = redis.url();
    let replay = tempfile::tempdir().unwrap();
    let replay_dir = replay.path().display().to_string();
    let stale = Arc::new(AtomicBool::new(false));
    let gateway = fake_gateway(stale.clone());
    let base = [
        "doctor",
        "--database-url",
        &db,
        "--redis-url",
        &redis_url,
        "--replay-dir",
        &replay_dir,
        "--gateway-url",
        &gateway,
        "--timeout-secs",
        "3",
    ];

    // Nothing prepared yet: migrations pending, streams missing.
    let out = doctor(&base, &["migrations", "streams", "outbox"], &[]);
    assert!(out.contains("caracal migrate"), "{out}");

    // Migrated and provisioned: healthy.
    assert!(
        caracal(&["migrate", "--database-url", &db])
            .status
            .success()
    );
    assert!(
        caracal(&["streams", "provision", "--redis-url", &redis_url])
            .status
            .success()
    );
    let out = doctor(&base, &[], &[]);
    assert!(out.ends_with("doctor: OK\n"), "{out}");

    // Without the optional inputs the last two rows are skipped, not failed.
    doctor(&base[..5], &[], &["audit-replay", "gateway"]);

    // A dead outbox row.
    sql(
        &db,
        "INSERT INTO outbox (id, stream, last_error, dead_at) \
         VALUES ('doctor-dead', 'caracal.sessions.revoke', 'boom', now())",
    );
    let out = doctor(&base, &["outbox"], &[]);
    assert!(out.contains("1 dead"), "{out}");
    sql(&db, "DELETE FROM outbox WHERE id = 'doctor-dead'");

    // A dead letter in the audit DLQ.
    redis
        .command(&["XADD", "caracal.audit.events.dlq", "*", "reason", "test"])
        .unwrap();
    let out = doctor(&base, &["audit-dlq"], &[]);
    assert!(
        out.contains("1 dead letter on caracal.audit.events.dlq"),
        "{out}"
    );
    redis
        .command(&["XTRIM", "caracal.audit.events.dlq", "MAXLEN", "0"])
        .unwrap();

    // A spill file waiting in a replay directory.
    let file = spill(replay.path());
    doctor(&base, &["audit-replay"], &[]);
    std::fs::remove_file(file).unwrap();

    // The Gateway's revocation snapshot is stale.
    stale.store(true, Ordering::SeqCst);
    let out = doctor(&base, &["gateway"], &[]);
    assert!(out.contains("revocation_snapshot_stale"), "{out}");
    stale.store(false, Ordering::SeqCst);

    // A per-replica group left by an STS replica that is gone, holding an entry delivered
    // and never acknowledged: named in the detail, but not a failure (module docs of
    // `caracal doctor`), even with a pending limit it exceeds.
    redis
        .command(&[
            "XGROUP",
            "CREATE",
            "caracal.policy.invalidate",
            "opa-engine:sts-gone",
            "$",
            "MKSTREAM",
        ])
        .unwrap();
    redis
        .command(&["XADD", "caracal.policy.invalidate", "*", "zone_id", "z"])
        .unwrap();
    redis
        .command(&[
            "XREADGROUP",
            "GROUP",
            "opa-engine:sts-gone",
            "sts-sts-gone-policy",
            "COUNT",
            "1",
            "STREAMS",
            "caracal.policy.invalidate",
            ">",
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_100));
    let strict: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--max-pending-idle-secs", "1"])
        .collect();
    let out = doctor(&strict, &[], &[]);
    assert!(
        out.contains("1 per-replica; 0 pending (+1 in per-replica groups)"),
        "{out}"
    );
    assert!(
        out.contains("caracal.policy.invalidate/opa-engine:sts-gone (1 pending, idle "),
        "{out}"
    );
    redis
        .command(&[
            "XGROUP",
            "DESTROY",
            "caracal.policy.invalidate",
            "opa-engine:sts-gone",
        ])
        .unwrap();
    let out = doctor(&strict, &[], &[]);
    assert!(out.contains("0 per-replica; 0 pending"), "{out}");

    // A consumer group destroyed.
    redis
        .command(&[
            "XGROUP",
            "DESTROY",
            "caracal.sessions.revoke",
            "sts-revocation",
        ])
        .unwrap();
    doctor(&base, &["streams"], &[]);
    assert!(
        caracal(&["streams", "provision", "--redis-url", &redis_url])
            .status
            .success()
    );
    doctor(&base, &[], &[]);

    // Redis stopped: the two Redis rows fail, the rest still pass.
    redis.stop().unwrap();
    doctor(&base, &["streams", "audit-dlq"], &[]);
    redis.restart().unwrap();
    doctor(&base, &[], &[]);

    // Postgres stopped: the two Postgres rows fail.
    pg.stop().unwrap();
    let out = doctor(&base, &["migrations", "outbox"], &[]);
    assert!(out.contains("Postgres unreachable"), "{out}");
    pg.restart().unwrap();
    doctor(&base, &[], &[]);
}
