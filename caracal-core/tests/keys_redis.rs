//! `RedisKeys` (the `EphemeralKeys` trait) against a real Redis: single use under contention,
//! window counting and expiry, and typed errors.
#![cfg(feature = "redis")]
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use caracal_core::backend::redis::{RedisConfig, RedisKeys};
use caracal_core::store::StoreError;
use caracal_core::store::ephemeral::EphemeralKeys;
use caracal_test_support::{EphemeralRedis, RespValue, redis_or_skip};

/// An integer reply of the support crate's raw client (`TTL`, `PTTL`).
fn int_reply(server: &EphemeralRedis, args: &[&str]) -> i64 {
    match server.command(args).unwrap() {
        RespValue::Integer(n) => n,
        other => panic!("{args:?}: {other:?}"),
    }
}

fn start(test: &str) -> Option<(EphemeralRedis, RedisKeys, String)> {
    let server = redis_or_skip(test)?;
    let keys = RedisKeys::connect(&RedisConfig::new(server.url())).expect("config");
    let prefix = format!("keys:{}:", uuid::Uuid::now_v7());
    Some((server, keys, prefix))
}

/// Many concurrent `set_nx_ex` on one key: exactly one wins, and the value is the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_nx_ex_has_a_single_winner() {
    let Some((_server, keys, prefix)) = start("set_nx_ex_has_a_single_winner") else {
        return;
    };
    let keys = Arc::new(keys);
    let key = format!("{prefix}jti");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let keys = Arc::clone(&keys);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let won = keys
                .set_nx_ex(&key, &format!("v{i}"), Duration::from_secs(60))
                .await
                .unwrap();
            (i, won)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, won) = t.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(
        keys.get_key(&key).await.unwrap(),
        Some(format!("v{}", winners[0]))
    );
    assert!(keys.del_key(&key).await.unwrap());
    assert!(!keys.del_key(&key).await.unwrap());
    assert_eq!(keys.get_key(&key).await.unwrap(), None);
}

/// A sub-second ttl expires (it is sent as PX, not rounded to a refused `EX 0`); a whole
/// second ttl is set as EX; zero is refused before anything is sent.
#[tokio::test]
async fn ttls_expire_and_zero_is_refused() {
    let Some((server, keys, prefix)) = start("ttls_expire_and_zero_is_refused") else {
        return;
    };
    let short = format!("{prefix}short");
    assert!(
        keys.set_nx_ex(&short, "1", Duration::from_millis(150))
            .await
            .unwrap()
    );
    assert!(
        !keys
            .set_nx_ex(&short, "2", Duration::from_millis(150))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(keys.get_key(&short).await.unwrap(), None);
    assert!(
        keys.set_nx_ex(&short, "3", Duration::from_secs(30))
            .await
            .unwrap(),
        "the key is free again after expiry"
    );
    let ttl = int_reply(&server, &["TTL", &short]);
    assert!((25..=30).contains(&ttl), "ttl {ttl}");

    assert!(matches!(
        keys.set_nx_ex(&format!("{prefix}zero"), "x", Duration::ZERO)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        keys.incr_window(&format!("{prefix}zero"), Duration::ZERO)
            .await,
        Err(StoreError::Invalid(_))
    ));
}

/// `incr_window` counts within a window, starts the window once (later increments do not
/// extend it), and starts over after it expires; concurrent increments are all counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_window_counts_and_expires() {
    let Some((server, keys, prefix)) = start("incr_window_counts_and_expires") else {
        return;
    };
    let key = format!("{prefix}rl");
    let window = Duration::from_millis(600);
    assert_eq!(keys.incr_window(&key, window).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(keys.incr_window(&key, window).await.unwrap(), 2);
    // The window was set by the first increment only: about 400 ms are left, not 600.
    let pttl = int_reply(&server, &["PTTL", &key]);
    assert!(pttl > 0 && pttl <= 450, "pttl {pttl}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        keys.incr_window(&key, window).await.unwrap(),
        1,
        "a new window"
    );

    // A counter that somehow lost its expiry (written by hand here) gets one on the next
    // increment instead of limiting its key forever.
    let stuck = format!("{prefix}stuck");
    server.command(&["SET", &stuck, "41"]).unwrap();
    assert_eq!(
        keys.incr_window(&stuck, Duration::from_secs(5))
            .await
            .unwrap(),
        42
    );
    let pttl = int_reply(&server, &["PTTL", &stuck]);
    assert!(pttl > 0, "expiry repaired: {pttl}");

    let keys = Arc::new(keys);
    let burst = format!("{prefix}burst");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let keys = Arc::clone(&keys);
        let burst = burst.clone();
        tasks.push(tokio::spawn(async move {
            keys.incr_window(&burst, Duration::from_secs(10))
                .await
                .unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=50).collect::<Vec<i64>>());
}

/// A key of another type is a typed, non-retryable error; an unreachable server is a
/// typed, retryable one, within the pool timeout.
#[tokio::test]
async fn errors_are_typed() {
    let Some((server, keys, prefix)) = start("errors_are_typed") else {
        return;
    };
    let list = format!("{prefix}list");
    server.command(&["RPUSH", &list, "x"]).unwrap();
    let err = keys
        .incr_window(&list, Duration::from_secs(1))
        .await
        .expect_err("wrong type");
    assert!(matches!(
        err,
        StoreError::Unavailable {
            retryable: false,
            ..
        }
    ));
    let err = keys.get_key(&list).await.expect_err("wrong type");
    assert!(!err.is_retryable());

    let mut config = RedisConfig::new("redis://127.0.0.1:1/");
    config.pool_timeout = Duration::from_millis(300);
    let down = RedisKeys::connect(&config).unwrap();
    let started = std::time::Instant::now();
    let err = down
        .set_nx_ex("k", "v", Duration::from_secs(1))
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.is_retryable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
