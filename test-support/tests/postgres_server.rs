//! The ephemeral Postgres: start, fresh databases, queries, stop, SIGKILL and restart on the
//! same port and data dir, and no process left behind.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use caracal_test_support::{
    EphemeralPostgres, SupportError, connect, own_postgres_or_skip, postgres_or_skip,
};

#[tokio::test]
async fn shared_cluster_gives_isolated_databases() {
    let Some(pg) = postgres_or_skip("shared_cluster_gives_isolated_databases") else {
        return;
    };
    let a = pg.create_database("iso a").await.unwrap();
    let b = pg.create_database("iso a").await.unwrap();
    assert_ne!(a, b, "same requested name, distinct databases");

    let ca = connect(&a).await.unwrap();
    ca.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    let v: i32 = ca.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);

    let cb = connect(&b).await.unwrap();
    let missing = cb.query("SELECT v FROM t", &[]).await;
    assert!(missing.is_err(), "database b must not see a's table");
}

#[tokio::test]
async fn kill_and_restart_keeps_committed_data() {
    let Some(pg) = own_postgres_or_skip("kill_and_restart_keeps_committed_data") else {
        return;
    };
    if pg.is_external() {
        // Kill/restart need a server this process owns; say so through the typed error.
        assert!(matches!(pg.kill(), Err(SupportError::Unsupported { .. })));
        eprintln!("SKIPPED: kill_and_restart_keeps_committed_data: external server");
        return;
    }
    let port = pg.port().unwrap();
    let url = pg.create_database("drill").await.unwrap();
    let client = connect(&url).await.unwrap();
    client
        .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')")
        .await
        .unwrap();

    let pid = pg.postmaster_pid().expect("running postmaster");
    let t = Instant::now();
    pg.kill().unwrap();
    eprintln!("kill took {:?}", t.elapsed());
    assert!(!pg.is_running());
    assert!(!std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists() || !alive(pid));

    // The old connection is dead; a query fails with an error, not a hang.
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
    assert!(connect(&url).await.is_err(), "server is down");

    let t = Instant::now();
    pg.restart().unwrap();
    eprintln!("restart (crash recovery) took {:?}", t.elapsed());
    assert_eq!(pg.port(), Some(port), "same port after restart");
    let client = connect(&url).await.unwrap();
    let v: String = client
        .query_one("SELECT v FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "before", "committed row survives SIGKILL");

    // A graceful stop and a restart work too.
    pg.stop().unwrap();
    assert!(!pg.is_running());
    pg.restart().unwrap();
    let client = connect(&url).await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn drop_leaves_no_process_and_no_dir() {
    let Some(pg) = own_postgres_or_skip("drop_leaves_no_process_and_no_dir") else {
        return;
    };
    if pg.is_external() {
        return;
    }
    let pid = pg.postmaster_pid().unwrap();
    let data = pg.data_dir().unwrap().to_path_buf();
    let root = data.parent().unwrap().to_path_buf();
    assert!(alive(pid));
    drop(pg);
    assert!(!alive(pid), "postmaster {pid} still running after drop");
    assert!(!root.exists(), "temp dir {} left behind", root.display());
    // No process of that cluster is left (backends included).
    let leftovers = processes_mentioning(&data.display().to_string());
    assert!(leftovers.is_empty(), "leftover processes: {leftovers:?}");
}

#[tokio::test]
async fn external_server_creates_databases_but_refuses_drills() {
    let Some(pg) = postgres_or_skip("external_server_creates_databases_but_refuses_drills") else {
        return;
    };
    // What CARACAL_TEST_DATABASE_URL does, without touching the shared process environment.
    let ext = EphemeralPostgres::external(pg.url());
    assert!(ext.is_external());
    assert_eq!(ext.port(), None);
    for (op, res) in [
        ("kill", ext.kill()),
        ("stop", ext.stop()),
        ("restart", ext.restart()),
    ] {
        match res {
            Err(SupportError::Unsupported { op: got, reason }) => {
                assert_eq!(got, op);
                assert!(reason.contains("CARACAL_TEST_DATABASE_URL"), "{reason}");
            }
            other => panic!("{op} on an external server: {other:?}"),
        }
    }
    let url = ext.create_database("ext").await.unwrap();
    let c = connect(&url).await.unwrap();
    let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert!(pg.is_running(), "the real server is untouched");
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].trim_start().chars().next());
            !matches!(state, Some('Z' | 'X'))
        }
        Err(_) => false,
    }
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(needle) && alive(pid) {
                out.push(format!("{pid}: {cmd}"));
            }
        }
    }
    out
}
