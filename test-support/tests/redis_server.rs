//! The ephemeral Redis: start, SET/GET over raw RESP, SIGKILL, restart on the same port and
//! dir, and an AOF-persisted key that survives; no process left behind.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use caracal_test_support::{EphemeralRedis, RespValue, SupportError, redis_or_skip};

fn bulk(s: &str) -> RespValue {
    RespValue::Bulk(Some(s.as_bytes().to_vec()))
}

#[test]
fn aof_key_survives_kill_and_restart() {
    let Some(redis) = redis_or_skip("aof_key_survives_kill_and_restart") else {
        return;
    };
    if redis.is_external() {
        assert!(matches!(
            redis.kill(),
            Err(SupportError::Unsupported { .. })
        ));
        eprintln!("SKIPPED: aof_key_survives_kill_and_restart: external server");
        return;
    }
    let port = redis.port().unwrap();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
    assert_eq!(
        redis.command(&["CONFIG", "GET", "appendonly"]).unwrap(),
        RespValue::Array(Some(vec![bulk("appendonly"), bulk("yes")]))
    );
    assert_eq!(
        redis
            .command(&["CONFIG", "GET", "maxmemory-policy"])
            .unwrap(),
        RespValue::Array(Some(vec![bulk("maxmemory-policy"), bulk("noeviction")]))
    );

    assert_eq!(
        redis.command(&["SET", "drill:key", "v1"]).unwrap(),
        RespValue::Simple("OK".into())
    );
    assert_eq!(redis.command(&["GET", "drill:key"]).unwrap(), bulk("v1"));
    // appendfsync everysec: let one fsync pass so even a machine crash would keep the key.
    // (A SIGKILL alone loses nothing Redis already wrote to the kernel.)
    std::thread::sleep(Duration::from_millis(1100));

    let pid = redis.pid().unwrap();
    redis.kill().unwrap();
    assert!(redis.pid().is_none());
    assert!(!alive(pid), "redis {pid} still alive after kill");
    assert!(redis.command(&["PING"]).is_err(), "server is down");

    let t = Instant::now();
    redis.restart().unwrap();
    eprintln!("redis restart took {:?}", t.elapsed());
    assert_eq!(redis.port(), Some(port));
    assert_eq!(
        redis.command(&["GET", "drill:key"]).unwrap(),
        bulk("v1"),
        "AOF reloaded"
    );

    // Graceful stop + restart keeps it too.
    redis.stop().unwrap();
    redis.restart().unwrap();
    assert_eq!(redis.command(&["GET", "drill:key"]).unwrap(), bulk("v1"));
}

#[test]
fn drop_leaves_no_process_and_no_dir() {
    let Some(redis) = redis_or_skip("redis_drop_leaves_no_process_and_no_dir") else {
        return;
    };
    if redis.is_external() {
        return;
    }
    let pid = redis.pid().unwrap();
    let dir = redis.dir().unwrap().to_path_buf();
    drop(redis);
    assert!(!alive(pid), "redis {pid} still running after drop");
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
}

#[test]
fn external_server_refuses_drills() {
    let Some(redis) = redis_or_skip("external_server_refuses_drills") else {
        return;
    };
    let ext = EphemeralRedis::external(redis.url());
    assert!(ext.is_external());
    assert!(matches!(
        ext.kill(),
        Err(SupportError::Unsupported { op: "kill", .. })
    ));
    assert!(matches!(
        ext.restart(),
        Err(SupportError::Unsupported { op: "restart", .. })
    ));
    assert_eq!(
        ext.command(&["PING"]).unwrap(),
        RespValue::Simple("PONG".into())
    );
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
