//! The `Streams` contract suite against `MemoryStreams`.
//!
//! Idle time is driven by a `FakeClock`, so claim cases run without sleeping; blocking reads
//! use real tokio time, as they do against Redis.

#[path = "contract/streams.rs"]
mod streams_contract;

use std::sync::Arc;
use std::time::Duration;

use caracal_core::clock::FakeClock;
use caracal_core::streams::{MemoryStreams, Streams};
use streams_contract::StreamsHarness;

struct Memory {
    clock: FakeClock,
    streams: MemoryStreams,
}

impl Memory {
    fn new() -> Self {
        let clock = FakeClock::at_fixture_epoch();
        let streams = MemoryStreams::new(Arc::new(clock.clone()));
        Self { clock, streams }
    }
}

#[async_trait::async_trait]
impl StreamsHarness for Memory {
    fn streams(&self) -> &dyn Streams {
        &self.streams
    }

    fn name(&self, case: &str) -> String {
        format!("contract:{case}")
    }

    async fn let_time_pass(&self, at_least: Duration) {
        let by = chrono::Duration::from_std(at_least).unwrap_or(chrono::Duration::MAX);
        self.clock.advance(by);
    }
}

macro_rules! contract_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                streams_contract::$case(&Memory::new()).await;
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

/// The whole suite on one shared backend, as a Redis run does it: cases must not interfere.
#[tokio::test]
async fn run_all_on_one_backend() {
    streams_contract::run_all(&Memory::new()).await;
}

/// The suite also holds on the system clock (real idle time, as on Redis), which checks the
/// real-time margins of the claim cases.
#[tokio::test]
async fn run_all_on_the_system_clock() {
    struct Real(MemoryStreams);
    #[async_trait::async_trait]
    impl StreamsHarness for Real {
        fn streams(&self) -> &dyn Streams {
            &self.0
        }
        fn name(&self, case: &str) -> String {
            format!("real:{case}")
        }
        async fn let_time_pass(&self, at_least: Duration) {
            tokio::time::sleep(at_least + Duration::from_millis(5)).await;
        }
    }
    streams_contract::run_all(&Real(MemoryStreams::default())).await;
}

/// Blocked readers on different groups and consumers are all woken by one add; a read that
/// is cancelled (its future dropped) leaves no trace.
#[tokio::test]
async fn one_add_wakes_every_blocked_group() {
    let s = MemoryStreams::default();
    for g in ["g1", "g2"] {
        s.group_create("s", g, caracal_core::streams::GroupStart::Latest)
            .await
            .unwrap();
    }
    let block = Some(Duration::from_secs(10));
    let cancelled = tokio::time::timeout(
        Duration::from_millis(20),
        s.read_group(
            "s",
            "g1",
            "gone",
            caracal_core::streams::ReadFrom::New,
            1,
            block,
        ),
    )
    .await;
    assert!(cancelled.is_err());
    let r1 = s.read_group(
        "s",
        "g1",
        "c",
        caracal_core::streams::ReadFrom::New,
        1,
        block,
    );
    let r2 = s.read_group(
        "s",
        "g2",
        "c",
        caracal_core::streams::ReadFrom::New,
        1,
        block,
    );
    let add = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.xadd("s", &caracal_core::streams::Fields::new().with("k", "v"))
            .await
            .unwrap()
    };
    let (a, b, id) = tokio::join!(r1, r2, add);
    assert_eq!(a.unwrap()[0].id, id);
    assert_eq!(b.unwrap()[0].id, id);
    let summary = s.pending_summary("s", "g1").await.unwrap();
    assert_eq!(summary.count, 1);
    assert_eq!(summary.per_consumer[0].consumer, "c");
}
