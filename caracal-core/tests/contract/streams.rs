//! The `Streams` contract, written once and run against every backend.
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "contract/streams.rs"]
//! mod streams_contract;
//! ```
//!
//! implement [`StreamsHarness`] for the backend, and call each case (or [`run_all`]).
//! `tests/streams_memory.rs` runs it against `MemoryStreams`; the Redis backend's
//! `tests/streams_redis.rs` runs the same cases against a real server.
//!
//! Rules that keep the suite valid on a shared, real Redis:
//! - every case names its streams through [`StreamsHarness::name`], which must be unique per
//!   run (a random prefix), so cases never see each other's data;
//! - no case assumes particular id values, only their order (Redis ids come from real time);
//! - idle time passes through [`StreamsHarness::let_time_pass`]: the memory harness advances
//!   its fake clock, a Redis harness sleeps (a little longer than asked, so that Redis's own
//!   millisecond clock has certainly moved that far). Idle thresholds are small (≤ 250 ms) so
//!   real sleeps stay cheap;
//! - blocking reads wait on real time in every backend; their assertions leave wide margins.

// Each including test binary may call a different subset of the cases directly.
#![allow(dead_code)]
// Test-support code: a failed expectation is the test failing, which is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use caracal_core::streams::{
    AutoClaim, EntryId, Fields, GroupCreated, GroupStart, ReadFrom, StreamEntry, StreamError,
    Streams, Trim, acknowledged_floor,
};

/// What a backend provides to run the contract.
#[async_trait::async_trait]
pub trait StreamsHarness: Send + Sync {
    /// The backend under test.
    fn streams(&self) -> &dyn Streams;
    /// A stream name for `case`, unique to this run.
    fn name(&self, case: &str) -> String;
    /// Make at least `at_least` pass as the backend measures pending idle time.
    async fn let_time_pass(&self, at_least: Duration);
}

const NO_BLOCK: Option<Duration> = None;
/// Idle threshold for claim cases; the harness lets `IDLE_PASS` go by to cross it.
const MIN_IDLE: Duration = Duration::from_millis(150);
const IDLE_PASS: Duration = Duration::from_millis(250);

fn fields(k: &str, v: &str) -> Fields {
    Fields::new().with(k, v)
}

fn ids(entries: &[StreamEntry]) -> Vec<EntryId> {
    entries.iter().map(|e| e.id).collect()
}

async fn add_n(s: &dyn Streams, stream: &str, n: usize) -> Vec<EntryId> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(
            s.xadd(stream, &fields("n", &i.to_string()))
                .await
                .expect("xadd"),
        );
    }
    out
}

/// Create group `g` at `start` and add `n` entries after it.
async fn group_with(s: &dyn Streams, stream: &str, start: GroupStart, n: usize) -> Vec<EntryId> {
    assert_eq!(
        s.group_create(stream, "g", start).await.unwrap(),
        GroupCreated::Created
    );
    add_n(s, stream, n).await
}

async fn read_new(s: &dyn Streams, stream: &str, consumer: &str, count: usize) -> Vec<StreamEntry> {
    s.read_group(stream, "g", consumer, ReadFrom::New, count, NO_BLOCK)
        .await
        .expect("read new")
}

async fn read_own(
    s: &dyn Streams,
    stream: &str,
    consumer: &str,
    after: EntryId,
) -> Vec<StreamEntry> {
    s.read_group(
        stream,
        "g",
        consumer,
        ReadFrom::Pending(after),
        100,
        NO_BLOCK,
    )
    .await
    .expect("read pending")
}

async fn deliveries(s: &dyn Streams, stream: &str, id: EntryId) -> (String, u64) {
    let p = s
        .pending_range(stream, "g", id, id, 1, None)
        .await
        .expect("pending range");
    assert_eq!(p.len(), 1, "{id} is pending");
    (p[0].consumer.clone(), p[0].deliveries)
}

/// XADD gives increasing ids; XLEN, XRANGE (inclusive, COUNT, inverted bounds) and XDEL
/// behave as Redis, including on a missing stream.
pub async fn add_len_range_del(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("basic");
    assert_eq!(s.len(&st).await.unwrap(), 0);
    assert!(!s.stream_exists(&st).await.unwrap());
    assert!(
        s.range(&st, EntryId::MIN, EntryId::MAX, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.del(&st, &[EntryId::new(1, 1)]).await.unwrap(), 0);

    let a = s
        .xadd(&st, &Fields::new().with("b", "2").with("a", "1"))
        .await
        .unwrap();
    let b = s.xadd(&st, &fields("x", "")).await.unwrap();
    let c = s.xadd(&st, &fields("x", "line\nbreak=")).await.unwrap();
    assert!(a < b && b < c, "ids increase: {a} {b} {c}");
    assert!(a > EntryId::MIN);
    assert!(s.stream_exists(&st).await.unwrap());
    assert_eq!(s.len(&st).await.unwrap(), 3);

    let all = s
        .range(&st, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap();
    assert_eq!(ids(&all), vec![a, b, c]);
    // Field order and values come back exactly as written.
    assert_eq!(
        all[0].fields.iter().collect::<Vec<_>>(),
        vec![("b", "2"), ("a", "1")]
    );
    assert_eq!(all[1].fields.get("x"), Some(""));
    assert_eq!(all[2].fields.get("x"), Some("line\nbreak="));
    assert!(!all[0].is_deleted());

    assert_eq!(ids(&s.range(&st, b, c, None).await.unwrap()), vec![b, c]);
    assert_eq!(ids(&s.range(&st, a, c, Some(2)).await.unwrap()), vec![a, b]);
    assert_eq!(ids(&s.range(&st, b, b, None).await.unwrap()), vec![b]);
    assert!(s.range(&st, c, a, None).await.unwrap().is_empty());

    assert_eq!(s.del(&st, &[b, b, EntryId::new(1, 1)]).await.unwrap(), 1);
    assert_eq!(s.len(&st).await.unwrap(), 2);
    assert_eq!(
        ids(&s
            .range(&st, EntryId::MIN, EntryId::MAX, None)
            .await
            .unwrap()),
        vec![a, c]
    );
    // Deleting the newest entry never lets a later id go back.
    assert_eq!(s.del(&st, &[c]).await.unwrap(), 1);
    let d = s.xadd(&st, &fields("x", "y")).await.unwrap();
    assert!(d > c);
    // An emptied stream still exists, as in Redis.
    assert_eq!(s.del(&st, &[a, d]).await.unwrap(), 2);
    assert_eq!(s.len(&st).await.unwrap(), 0);
    assert!(s.stream_exists(&st).await.unwrap());
}

/// Malformed calls are typed errors, never panics: an entry with no fields, and zero counts.
pub async fn invalid_arguments_are_refused(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("invalid");
    let invalid = |r: Result<_, StreamError>| matches!(r, Err(StreamError::InvalidArgument { .. }));
    assert!(invalid(s.xadd(&st, &Fields::new()).await.map(|_| ())));
    assert!(!s.stream_exists(&st).await.unwrap());
    group_with(s, &st, GroupStart::Beginning, 1).await;
    assert!(invalid(
        s.range(&st, EntryId::MIN, EntryId::MAX, Some(0))
            .await
            .map(|_| ())
    ));
    assert!(invalid(
        s.read_group(&st, "g", "c", ReadFrom::New, 0, NO_BLOCK)
            .await
            .map(|_| ())
    ));
    assert!(invalid(
        s.autoclaim(&st, "g", "c", Duration::ZERO, EntryId::MIN, 0)
            .await
            .map(|_| ())
    ));
    assert!(invalid(
        s.pending_range(&st, "g", EntryId::MIN, EntryId::MAX, 0, None)
            .await
            .map(|_| ())
    ));
    // Nothing was delivered by the refused read.
    assert_eq!(s.pending_summary(&st, "g").await.unwrap().count, 0);
}

/// Trimming is explicit: none by default, exact or approximate MAXLEN, and MINID.
pub async fn trimming_is_explicit(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("trim");
    add_n(s, &st, 5).await;
    assert_eq!(s.len(&st).await.unwrap(), 5, "no trimming by default");

    let newest = s
        .xadd_with(
            &st,
            &fields("n", "5"),
            Trim::MaxLen {
                max: 3,
                approximate: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(s.len(&st).await.unwrap(), 3);
    let kept = ids(&s
        .range(&st, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap());
    assert_eq!(kept.last(), Some(&newest), "the newest entries are kept");

    // `~` may keep more than asked, never fewer.
    s.xadd_with(
        &st,
        &fields("n", "6"),
        Trim::MaxLen {
            max: 2,
            approximate: true,
        },
    )
    .await
    .unwrap();
    let len = s.len(&st).await.unwrap();
    assert!((2..=4).contains(&len), "approximate MAXLEN kept {len}");

    let all = ids(&s
        .range(&st, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap());
    let cut = all[all.len() - 2];
    s.xadd_with(
        &st,
        &fields("n", "7"),
        Trim::MinId {
            min: cut,
            approximate: false,
        },
    )
    .await
    .unwrap();
    let left = ids(&s
        .range(&st, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap());
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|id| *id >= cut));
}

/// `XGROUP CREATE … MKSTREAM`: creates the stream, tolerates BUSYGROUP without moving the
/// group, and `XINFO GROUPS` lists groups (and refuses a missing stream).
pub async fn group_create_is_idempotent_and_makes_the_stream(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("mkstream");
    assert!(matches!(
        s.groups(&st).await,
        Err(StreamError::NoStream { .. })
    ));
    assert_eq!(
        s.group_create(&st, "g", GroupStart::Latest).await.unwrap(),
        GroupCreated::Created
    );
    assert!(s.stream_exists(&st).await.unwrap());
    assert_eq!(s.len(&st).await.unwrap(), 0);

    let added = add_n(s, &st, 2).await;
    read_new(s, &st, "c1", 1).await;
    // BUSYGROUP: reported, and the group keeps its position and pending list.
    assert_eq!(
        s.group_create(&st, "g", GroupStart::Beginning)
            .await
            .unwrap(),
        GroupCreated::AlreadyExists
    );
    assert_eq!(
        s.group_create(&st, "other", GroupStart::Beginning)
            .await
            .unwrap(),
        GroupCreated::Created
    );
    let groups = s.groups(&st).await.unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, vec!["g", "other"]);
    let g = &groups[0];
    assert_eq!(g.last_delivered, added[0]);
    assert_eq!(g.pending, 1);
    assert_eq!(g.consumers, 1);
    if let Some(lag) = g.lag {
        assert_eq!(lag, 1);
    }
    let other = &groups[1];
    assert_eq!(other.last_delivered, EntryId::MIN);
    assert_eq!((other.pending, other.consumers), (0, 0));
    if let Some(lag) = other.lag {
        assert_eq!(lag, 2);
    }
}

/// A group created at `$` sees only later entries; one created at `0` sees the history.
pub async fn group_start_latest_vs_beginning(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("start");
    let history = add_n(s, &st, 3).await;
    s.group_create(&st, "latest", GroupStart::Latest)
        .await
        .unwrap();
    s.group_create(&st, "beginning", GroupStart::Beginning)
        .await
        .unwrap();
    let later = add_n(s, &st, 1).await;

    let from_latest = s
        .read_group(&st, "latest", "c", ReadFrom::New, 100, NO_BLOCK)
        .await
        .unwrap();
    assert_eq!(ids(&from_latest), later);
    let from_start = s
        .read_group(&st, "beginning", "c", ReadFrom::New, 100, NO_BLOCK)
        .await
        .unwrap();
    let mut everything = history.clone();
    everything.extend(&later);
    assert_eq!(ids(&from_start), everything);
}

/// `>` delivers each entry once per group, to one consumer, with one delivery recorded; the
/// group's cursor is shared by its consumers.
pub async fn read_new_records_pending_with_one_delivery(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("readnew");
    let added = group_with(s, &st, GroupStart::Beginning, 3).await;

    let first = read_new(s, &st, "c1", 2).await;
    assert_eq!(ids(&first), added[..2].to_vec());
    assert_eq!(first[0].fields.get("n"), Some("0"));
    for id in &added[..2] {
        assert_eq!(deliveries(s, &st, *id).await, ("c1".to_owned(), 1));
    }
    // The next consumer continues after the group's cursor.
    assert_eq!(ids(&read_new(s, &st, "c2", 10).await), added[2..].to_vec());
    assert!(read_new(s, &st, "c1", 10).await.is_empty());

    let summary = s.pending_summary(&st, "g").await.unwrap();
    assert_eq!(summary.count, 3);
    assert_eq!(summary.min, Some(added[0]));
    assert_eq!(summary.max, Some(added[2]));
    let per: Vec<(&str, u64)> = summary
        .per_consumer
        .iter()
        .map(|c| (c.consumer.as_str(), c.pending))
        .collect();
    assert_eq!(per, vec![("c1", 2), ("c2", 1)]);
}

/// `XACK` removes entries from the pending list and counts only those that were pending;
/// unknown groups and streams acknowledge nothing (no error, as in Redis).
pub async fn ack_removes_from_pending(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("ack");
    let added = group_with(s, &st, GroupStart::Beginning, 3).await;
    read_new(s, &st, "c1", 10).await;

    assert_eq!(
        s.ack(&st, "g", &[added[0], added[2], EntryId::new(1, 1)])
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.ack(&st, "g", &[added[0]]).await.unwrap(), 0);
    assert_eq!(s.ack(&st, "nope", &[added[1]]).await.unwrap(), 0);
    assert_eq!(
        s.ack(&h.name("ack-missing"), "g", &[added[1]])
            .await
            .unwrap(),
        0
    );
    let summary = s.pending_summary(&st, "g").await.unwrap();
    assert_eq!(summary.count, 1);
    assert_eq!((summary.min, summary.max), (Some(added[1]), Some(added[1])));
    assert_eq!(
        ids(&read_own(s, &st, "c1", EntryId::MIN).await),
        vec![added[1]]
    );
    // Acknowledged entries stay in the stream.
    assert_eq!(s.len(&st).await.unwrap(), 3);
}

/// Re-reading from cursor `0` returns the reader's own unacknowledged entries, after the
/// cursor (exclusive), bounded by COUNT; each re-read counts a delivery. It never blocks.
pub async fn pending_reread_from_cursor(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("reread");
    let added = group_with(s, &st, GroupStart::Beginning, 4).await;
    read_new(s, &st, "c1", 10).await;
    s.ack(&st, "g", &[added[1]]).await.unwrap();

    let own = read_own(s, &st, "c1", EntryId::MIN).await;
    assert_eq!(ids(&own), vec![added[0], added[2], added[3]]);
    assert_eq!(own[1].fields.get("n"), Some("2"));
    assert_eq!(deliveries(s, &st, added[0]).await.1, 2);

    // The cursor is exclusive: a drain continues from the last id it saw.
    assert_eq!(
        ids(&read_own(s, &st, "c1", added[0]).await),
        vec![added[2], added[3]]
    );
    let page = s
        .read_group(&st, "g", "c1", ReadFrom::Pending(EntryId::MIN), 1, NO_BLOCK)
        .await
        .unwrap();
    assert_eq!(ids(&page), vec![added[0]]);
    assert_eq!(deliveries(s, &st, added[0]).await.1, 3);
    assert_eq!(deliveries(s, &st, added[3]).await.1, 3);
    assert!(read_own(s, &st, "c1", added[3]).await.is_empty());

    // BLOCK does not apply to a pending-list read, even when it is empty.
    let started = Instant::now();
    let none = s
        .read_group(
            &st,
            "g",
            "c1",
            ReadFrom::Pending(added[3]),
            10,
            Some(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A consumer's pending-list read shows only its own entries, never another consumer's.
pub async fn pending_reread_is_per_consumer(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("perconsumer");
    let added = group_with(s, &st, GroupStart::Beginning, 2).await;
    read_new(s, &st, "c1", 1).await;
    read_new(s, &st, "c2", 1).await;
    assert_eq!(
        ids(&read_own(s, &st, "c1", EntryId::MIN).await),
        vec![added[0]]
    );
    assert_eq!(
        ids(&read_own(s, &st, "c2", EntryId::MIN).await),
        vec![added[1]]
    );
    assert!(read_own(s, &st, "c3", EntryId::MIN).await.is_empty());
    // The others' delivery counts were not touched by c3's read.
    assert_eq!(deliveries(s, &st, added[0]).await.1, 2);
    assert_eq!(deliveries(s, &st, added[1]).await.1, 2);
}

/// An entry deleted while pending comes back from a pending-list read as an id with no
/// fields, and its delivery count is not incremented (Redis replies `[id, nil]`).
pub async fn deleted_pending_entry_reads_without_fields(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("delpending");
    let added = group_with(s, &st, GroupStart::Beginning, 2).await;
    read_new(s, &st, "c1", 10).await;
    s.del(&st, &[added[0]]).await.unwrap();

    let own = read_own(s, &st, "c1", EntryId::MIN).await;
    assert_eq!(ids(&own), added);
    assert!(own[0].is_deleted());
    assert!(!own[1].is_deleted());
    assert_eq!(deliveries(s, &st, added[0]).await.1, 1);
    assert_eq!(deliveries(s, &st, added[1]).await.1, 2);
    // Acknowledging the ghost clears it.
    assert_eq!(s.ack(&st, "g", &[added[0]]).await.unwrap(), 1);
}

/// `XAUTOCLAIM` leaves entries younger than `min_idle` alone and claims them once idle.
pub async fn autoclaim_respects_min_idle(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("minidle");
    let added = group_with(s, &st, GroupStart::Beginning, 2).await;
    read_new(s, &st, "c1", 10).await;

    let early = s
        .autoclaim(&st, "g", "c2", MIN_IDLE, EntryId::MIN, 10)
        .await
        .unwrap();
    assert_eq!(
        early,
        AutoClaim {
            next: EntryId::MIN,
            entries: vec![],
            deleted: vec![]
        }
    );
    assert_eq!(deliveries(s, &st, added[0]).await, ("c1".to_owned(), 1));

    h.let_time_pass(IDLE_PASS).await;
    let idle = s
        .pending_range(&st, "g", EntryId::MIN, EntryId::MAX, 10, None)
        .await
        .unwrap();
    assert!(idle.iter().all(|p| p.idle >= IDLE_PASS), "{idle:?}");
    // Re-reading resets one entry's idle time, so only the other is claimable now.
    s.read_group(&st, "g", "c1", ReadFrom::Pending(EntryId::MIN), 1, NO_BLOCK)
        .await
        .unwrap();
    let late = s
        .autoclaim(&st, "g", "c2", MIN_IDLE, EntryId::MIN, 10)
        .await
        .unwrap();
    assert_eq!(ids(&late.entries), vec![added[1]]);
    assert_eq!(late.next, EntryId::MIN);
    assert_eq!(deliveries(s, &st, added[0]).await, ("c1".to_owned(), 2));
}

/// A claim transfers ownership, counts a delivery and resets idle time; the cursor pages
/// through the pending list and ends at `0-0`; a zero `min_idle` claims regardless.
pub async fn autoclaim_transfers_and_counts(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("claim");
    let added = group_with(s, &st, GroupStart::Beginning, 3).await;
    read_new(s, &st, "c1", 10).await;
    h.let_time_pass(IDLE_PASS).await;

    let page = s
        .autoclaim(&st, "g", "c2", MIN_IDLE, EntryId::MIN, 2)
        .await
        .unwrap();
    assert_eq!(ids(&page.entries), added[..2].to_vec());
    assert_eq!(page.entries[0].fields.get("n"), Some("0"));
    assert_eq!(page.next, added[2]);
    assert!(page.deleted.is_empty());
    for id in &added[..2] {
        assert_eq!(deliveries(s, &st, *id).await, ("c2".to_owned(), 2));
    }
    let claimed = s
        .pending_range(&st, "g", added[0], added[1], 10, Some("c2"))
        .await
        .unwrap();
    assert!(claimed.iter().all(|p| p.idle < MIN_IDLE), "{claimed:?}");

    let rest = s
        .autoclaim(&st, "g", "c2", MIN_IDLE, page.next, 2)
        .await
        .unwrap();
    assert_eq!(ids(&rest.entries), vec![added[2]]);
    assert_eq!(rest.next, EntryId::MIN);

    // Ownership moved: c1's pending-list read is empty, c2's has all three.
    assert!(read_own(s, &st, "c1", EntryId::MIN).await.is_empty());
    assert_eq!(ids(&read_own(s, &st, "c2", EntryId::MIN).await), added);
    // Claiming back with no idle threshold, even by the owner, counts again.
    let again = s
        .autoclaim(&st, "g", "c2", Duration::ZERO, EntryId::MIN, 1)
        .await
        .unwrap();
    assert_eq!(ids(&again.entries), vec![added[0]]);
    assert_eq!(again.next, added[1]);
    assert_eq!(deliveries(s, &st, added[0]).await, ("c2".to_owned(), 4));
}

/// Entries deleted (or trimmed) while pending are reported by `XAUTOCLAIM` in `deleted` and
/// dropped from the pending list, whatever their idle time; they are not claimed.
pub async fn autoclaim_reports_deleted_entries(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("claimdel");
    let added = group_with(s, &st, GroupStart::Beginning, 3).await;
    read_new(s, &st, "c1", 10).await;
    s.del(&st, &[added[0], added[2]]).await.unwrap();

    // Not idle yet: the live entry stays with c1, the deleted ones are reported anyway.
    let out = s
        .autoclaim(&st, "g", "c2", Duration::from_secs(3600), EntryId::MIN, 10)
        .await
        .unwrap();
    assert!(out.entries.is_empty());
    assert_eq!(out.deleted, vec![added[0], added[2]]);
    assert_eq!(out.next, EntryId::MIN);
    let summary = s.pending_summary(&st, "g").await.unwrap();
    assert_eq!(summary.count, 1);
    assert_eq!(summary.min, Some(added[1]));
    assert_eq!(deliveries(s, &st, added[1]).await, ("c1".to_owned(), 1));
}

/// Reads, claims and pending queries on a missing group or stream are `NoGroup`.
pub async fn unknown_group_is_nogroup(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("nogroup");
    let missing = h.name("nogroup-missing");
    add_n(s, &st, 1).await;
    for stream in [&st, &missing] {
        let nogroup = |r: Result<(), StreamError>| matches!(r, Err(StreamError::NoGroup { .. }));
        assert!(nogroup(
            s.read_group(stream, "g", "c", ReadFrom::New, 1, NO_BLOCK)
                .await
                .map(|_| ())
        ));
        assert!(nogroup(
            s.read_group(
                stream,
                "g",
                "c",
                ReadFrom::New,
                1,
                Some(Duration::from_millis(50))
            )
            .await
            .map(|_| ())
        ));
        assert!(nogroup(
            s.read_group(
                stream,
                "g",
                "c",
                ReadFrom::Pending(EntryId::MIN),
                1,
                NO_BLOCK
            )
            .await
            .map(|_| ())
        ));
        assert!(nogroup(
            s.autoclaim(stream, "g", "c", Duration::ZERO, EntryId::MIN, 1)
                .await
                .map(|_| ())
        ));
        assert!(nogroup(s.pending_summary(stream, "g").await.map(|_| ())));
        assert!(nogroup(
            s.pending_range(stream, "g", EntryId::MIN, EntryId::MAX, 1, None)
                .await
                .map(|_| ())
        ));
    }
    assert!(!s.stream_exists(&missing).await.unwrap());
    let err = s.pending_summary(&st, "g").await.expect_err("no group yet");
    assert!(!err.is_retryable());
}

/// A blocked `>` read wakes when an entry is added, long before its timeout.
pub async fn blocking_read_wakes_on_add(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("wake");
    s.group_create(&st, "g", GroupStart::Latest).await.unwrap();
    let started = Instant::now();
    let read = s.read_group(
        &st,
        "g",
        "c",
        ReadFrom::New,
        10,
        Some(Duration::from_secs(10)),
    );
    let add = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.xadd(&st, &fields("k", "v")).await.unwrap()
    };
    let (got, id) = tokio::join!(read, add);
    let got = got.unwrap();
    assert_eq!(ids(&got), vec![id]);
    assert!(started.elapsed() < Duration::from_secs(5), "woke on add");
    assert_eq!(deliveries(s, &st, id).await, ("c".to_owned(), 1));

    // With an entry already there, a blocking read answers at once.
    let ready = s.xadd(&st, &fields("k", "w")).await.unwrap();
    let started = Instant::now();
    let got = s
        .read_group(
            &st,
            "g",
            "c",
            ReadFrom::New,
            10,
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(ids(&got), vec![ready]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A blocked `>` read with nothing to deliver returns empty after about its timeout; a zero
/// or absent timeout does not wait.
pub async fn blocking_read_times_out(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("timeout");
    group_with(s, &st, GroupStart::Latest, 0).await;
    let started = Instant::now();
    let got = s
        .read_group(
            &st,
            "g",
            "c",
            ReadFrom::New,
            10,
            Some(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(got.is_empty());
    assert!(waited >= Duration::from_millis(150), "waited {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");

    let started = Instant::now();
    for block in [None, Some(Duration::ZERO)] {
        let got = s
            .read_group(&st, "g", "c", ReadFrom::New, 10, block)
            .await
            .unwrap();
        assert!(got.is_empty());
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// `XPENDING` summary and extended form: bounds inclusive, COUNT, consumer filter, inverted
/// or empty ranges, unknown consumers.
pub async fn pending_summary_and_ranges(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("xpending");
    let added = group_with(s, &st, GroupStart::Beginning, 5).await;
    let empty = s.pending_summary(&st, "g").await.unwrap();
    assert_eq!((empty.count, empty.min, empty.max), (0, None, None));
    assert!(empty.per_consumer.is_empty());

    read_new(s, &st, "b", 2).await;
    read_new(s, &st, "a", 3).await;
    let summary = s.pending_summary(&st, "g").await.unwrap();
    assert_eq!(summary.count, 5);
    let per: Vec<(&str, u64)> = summary
        .per_consumer
        .iter()
        .map(|c| (c.consumer.as_str(), c.pending))
        .collect();
    assert_eq!(per, vec![("a", 3), ("b", 2)], "consumers in name order");

    let all = s
        .pending_range(&st, "g", EntryId::MIN, EntryId::MAX, 100, None)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|p| p.id).collect::<Vec<_>>(), added);
    assert_eq!(all[0].consumer, "b");
    assert_eq!(all[4].consumer, "a");
    assert!(all.iter().all(|p| p.deliveries == 1));

    let window = s
        .pending_range(&st, "g", added[1], added[3], 100, None)
        .await
        .unwrap();
    assert_eq!(
        window.iter().map(|p| p.id).collect::<Vec<_>>(),
        added[1..=3].to_vec()
    );
    let counted = s
        .pending_range(&st, "g", EntryId::MIN, EntryId::MAX, 2, None)
        .await
        .unwrap();
    assert_eq!(counted.len(), 2);
    let only_a = s
        .pending_range(&st, "g", EntryId::MIN, EntryId::MAX, 100, Some("a"))
        .await
        .unwrap();
    assert_eq!(
        only_a.iter().map(|p| p.id).collect::<Vec<_>>(),
        added[2..].to_vec()
    );
    let a_in_window = s
        .pending_range(&st, "g", added[0], added[2], 100, Some("a"))
        .await
        .unwrap();
    assert_eq!(a_in_window.len(), 1);
    assert!(
        s.pending_range(&st, "g", EntryId::MIN, EntryId::MAX, 100, Some("nobody"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.pending_range(&st, "g", added[3], added[1], 100, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Trimming at [`acknowledged_floor`] never removes an entry some group still needs: pending
/// entries and undelivered ones survive, acknowledged ones go (SPEC §5.1).
pub async fn acknowledged_floor_protects_unacknowledged_entries(h: &dyn StreamsHarness) {
    let s = h.streams();
    let st = h.name("floor");
    assert_eq!(acknowledged_floor(s, &st).await.unwrap(), EntryId::MIN);
    let added = add_n(s, &st, 2).await;
    assert_eq!(
        acknowledged_floor(s, &st).await.unwrap(),
        EntryId::MIN,
        "no group: nothing is known to be acknowledged"
    );
    s.group_create(&st, "g", GroupStart::Beginning)
        .await
        .unwrap();
    s.group_create(&st, "h", GroupStart::Latest).await.unwrap();
    let later = add_n(s, &st, 4).await;
    // g: reads everything, acknowledges all but later[1]. h: reads only later[0..2], acks them.
    read_new(s, &st, "c", 100).await;
    let mut acked = added.clone();
    acked.extend([later[0], later[2], later[3]]);
    s.ack(&st, "g", &acked).await.unwrap();
    let got = s
        .read_group(&st, "h", "c", ReadFrom::New, 2, NO_BLOCK)
        .await
        .unwrap();
    s.ack(&st, "h", &ids(&got)).await.unwrap();

    let floor = acknowledged_floor(s, &st).await.unwrap();
    assert_eq!(floor, later[1], "g still needs later[1]");
    s.xadd_with(
        &st,
        &fields("n", "x"),
        Trim::MinId {
            min: floor,
            approximate: false,
        },
    )
    .await
    .unwrap();
    let left = ids(&s
        .range(&st, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap());
    assert!(left.contains(&later[1]) && left.contains(&later[2]) && left.contains(&later[3]));
    assert!(!left.contains(&added[0]) && !left.contains(&later[0]));
    let own = read_own(s, &st, "c", EntryId::MIN).await;
    assert_eq!(ids(&own), vec![later[1]]);
    assert!(!own[0].is_deleted());
}

/// Every case, in order.
pub async fn run_all(h: &dyn StreamsHarness) {
    add_len_range_del(h).await;
    invalid_arguments_are_refused(h).await;
    trimming_is_explicit(h).await;
    group_create_is_idempotent_and_makes_the_stream(h).await;
    group_start_latest_vs_beginning(h).await;
    read_new_records_pending_with_one_delivery(h).await;
    ack_removes_from_pending(h).await;
    pending_reread_from_cursor(h).await;
    pending_reread_is_per_consumer(h).await;
    deleted_pending_entry_reads_without_fields(h).await;
    autoclaim_respects_min_idle(h).await;
    autoclaim_transfers_and_counts(h).await;
    autoclaim_reports_deleted_entries(h).await;
    unknown_group_is_nogroup(h).await;
    blocking_read_wakes_on_add(h).await;
    blocking_read_times_out(h).await;
    pending_summary_and_ranges(h).await;
    acknowledged_floor_protects_unacknowledged_entries(h).await;
}
