//! The `Streams` contract suite against `RedisStreams` on a real Redis.
//!
//! Each case gets its own ephemeral `redis-server` (or the server named by
//! `CARACAL_TEST_REDIS_URL`), and every stream name carries a random per-run prefix, so cases
//! never see each other's data even on a shared server. Without `redis-server` the cases say
//! `SKIPPED` loudly; with `CI=true` they fail instead.
#![cfg(feature = "redis")]
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "contract/streams.rs"]
mod streams_contract;

use std::time::Duration;

use caracal_core::backend::redis::{RedisConfig, RedisStreams};
use caracal_core::streams::{EntryId, Fields, GroupStart, ReadFrom, StreamError, Streams, names};
use caracal_test_support::{EphemeralRedis, redis_or_skip};
use streams_contract::StreamsHarness;

struct Redis {
    // Kept alive for the test's duration; dropping it stops an owned server.
    _server: EphemeralRedis,
    streams: RedisStreams,
    prefix: String,
}

impl Redis {
    fn start(test: &str) -> Option<Self> {
        let server = redis_or_skip(test)?;
        let streams = RedisStreams::connect(&RedisConfig::new(server.url())).expect("config");
        Some(Self {
            _server: server,
            streams,
            prefix: format!("contract:{}:", uuid::Uuid::now_v7()),
        })
    }
}

#[async_trait::async_trait]
impl StreamsHarness for Redis {
    fn streams(&self) -> &dyn Streams {
        &self.streams
    }

    fn name(&self, case: &str) -> String {
        format!("{}{case}", self.prefix)
    }

    async fn let_time_pass(&self, at_least: Duration) {
        // Redis measures idle time on its own millisecond clock; a margin makes sure it has
        // moved at least as far as ours.
        tokio::time::sleep(at_least + Duration::from_millis(25)).await;
    }
}

macro_rules! contract_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(h) = Redis::start(stringify!($case)) else { return };
                streams_contract::$case(&h).await;
            }
        )*
    };
}

contract_cases!(
    add_len_range_del,
    invalid_arguments_are_refused,
    trimming_is_explicit,
    group_create_is_idempotent_and_makes_the_stream,
    group_start_latest_vs_beginning,
    read_new_records_pending_with_one_delivery,
    ack_removes_from_pending,
    pending_reread_from_cursor,
    pending_reread_is_per_consumer,
    deleted_pending_entry_reads_without_fields,
    autoclaim_respects_min_idle,
    autoclaim_transfers_and_counts,
    autoclaim_reports_deleted_entries,
    unknown_group_is_nogroup,
    blocking_read_wakes_on_add,
    blocking_read_times_out,
    pending_summary_and_ranges,
    acknowledged_floor_protects_unacknowledged_entries,
);

/// The whole suite on one server: cases must not interfere.
#[tokio::test]
async fn run_all_on_one_server() {
    let Some(h) = Redis::start("run_all_on_one_server") else {
        return;
    };
    streams_contract::run_all(&h).await;
}

/// A key of another type is `WrongType` for every stream command, never a panic or a
/// generic error; `CONFIG GET maxmemory-policy` reads the ephemeral server's `noeviction`.
#[tokio::test]
async fn wrong_type_and_eviction_policy() {
    let Some(h) = Redis::start("wrong_type_and_eviction_policy") else {
        return;
    };
    let s = h.streams();
    let key = h.name("a-string");
    h._server
        .command(&["SET", &key, "x"])
        .expect("SET a plain string");
    let wrong = |r: Result<(), StreamError>| matches!(r, Err(StreamError::WrongType { .. }));
    assert!(wrong(s.stream_exists(&key).await.map(|_| ())));
    assert!(wrong(s.len(&key).await.map(|_| ())));
    assert!(wrong(
        s.xadd(&key, &Fields::new().with("k", "v"))
            .await
            .map(|_| ())
    ));
    assert!(wrong(
        s.group_create(&key, "g", GroupStart::Latest)
            .await
            .map(|_| ())
    ));
    assert!(wrong(
        s.range(&key, EntryId::MIN, EntryId::MAX, None)
            .await
            .map(|_| ())
    ));
    let err = s.len(&key).await.expect_err("wrong type");
    assert!(!err.is_retryable());

    if !h._server.is_external() {
        assert_eq!(
            s.eviction_policy().await.unwrap().as_deref(),
            Some("noeviction")
        );
        assert!(names::eviction_policy_is_safe("noeviction"));
    }
}

/// A blocking read longer than the `redis` crate's default 500 ms response timeout waits
/// its full `BLOCK` (it runs on a dedicated connection without that timeout), and many
/// concurrent blocked readers do not starve ordinary commands on the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reads_use_dedicated_connections() {
    let Some(h) = Redis::start("blocking_reads_use_dedicated_connections") else {
        return;
    };
    let st = h.name("dedicated");
    let s = h.streams.clone();
    s.group_create(&st, "g", GroupStart::Latest).await.unwrap();

    // One long block, well past 500 ms.
    let started = std::time::Instant::now();
    let got = s
        .read_group(
            &st,
            "g",
            "c",
            ReadFrom::New,
            1,
            Some(Duration::from_millis(1200)),
        )
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(1100));

    // More blocked readers than the pool has connections (16): ordinary commands still
    // answer at once, because none of the blocked reads holds a pooled connection.
    let mut readers = Vec::new();
    for i in 0..24 {
        let s = s.clone();
        let st = st.clone();
        readers.push(tokio::spawn(async move {
            s.read_group(
                &st,
                "g",
                &format!("c{i}"),
                ReadFrom::New,
                1,
                Some(Duration::from_secs(3)),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        s.len(&st).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "pool starved by blocked readers: {:?}",
        started.elapsed()
    );
    // One add wakes exactly one of them; the others time out empty.
    s.xadd(&st, &Fields::new().with("k", "v")).await.unwrap();
    let mut delivered = 0;
    for r in readers {
        let got = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("reader finished")
            .unwrap()
            .unwrap();
        delivered += got.len();
    }
    assert_eq!(delivered, 1);
}

/// An exhausted pool is a bounded, retryable error that says so, never a hang: with one
/// pooled connection busy (the server paused by `CLIENT PAUSE`), a second command gives up
/// after the pool timeout, and the first still completes once the server resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_times_out_with_a_clear_error() {
    let Some(server) = redis_or_skip("pool_exhaustion_times_out_with_a_clear_error") else {
        return;
    };
    let mut config = RedisConfig::new(server.url());
    config.pool_size = 1;
    config.pool_timeout = Duration::from_millis(200);
    config.response_timeout = Duration::from_secs(5);
    let s = RedisStreams::connect(&config).unwrap();
    let st = format!("pool:{}", uuid::Uuid::now_v7());
    s.xadd(&st, &Fields::new().with("k", "v")).await.unwrap();

    server
        .command(&["CLIENT", "PAUSE", "1000", "ALL"])
        .expect("CLIENT PAUSE");
    let busy = {
        let s = s.clone();
        let st = st.clone();
        tokio::spawn(async move { s.len(&st).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let err = s.len(&st).await.expect_err("the only connection is busy");
    let waited = started.elapsed();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("pool exhausted"), "{err}");
    assert!(
        waited < Duration::from_secs(1),
        "bounded by the pool timeout: {waited:?}"
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), busy)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        1
    );
}
