//! [`MemoryStreams`]: the in-memory [`Streams`] with Redis's consumer-group semantics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use super::{
    AutoClaim, ConsumerPending, EntryId, Fields, GroupCreated, GroupInfo, GroupStart, PendingEntry,
    PendingSummary, ReadFrom, StreamEntry, StreamError, StreamResult, Streams, Trim,
};
use crate::clock::{SharedClock, SystemClock};

/// How many pending entries `XAUTOCLAIM` examines per requested entry (Redis's
/// `attempts_factor`), which bounds the work of one call on a long pending list.
const AUTOCLAIM_ATTEMPTS_FACTOR: usize = 10;

/// Longest wait a blocking read arms a timer for; a larger `block` is clamped to it so the
/// deadline arithmetic cannot overflow. About 30 years: "forever" for any caller.
const MAX_BLOCK: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Redis Streams in memory: for tests and for single-process hosts.
///
/// Entry ids come from the injected [`Clock`](crate::clock::Clock) (milliseconds, with the
/// sequence number stepping within a millisecond or when the clock goes backwards), and so do
/// delivery times, so idle times and claims can be driven with a
/// [`FakeClock`](crate::clock::FakeClock). Blocking reads wait on real (tokio) time.
///
/// Cloning is cheap and shares the same streams. Every operation takes one short lock; none is
/// held across an `.await`.
#[derive(Clone)]
pub struct MemoryStreams {
    inner: Arc<Inner>,
}

struct Inner {
    clock: SharedClock,
    state: Mutex<HashMap<String, StreamState>>,
}

struct StreamState {
    entries: BTreeMap<EntryId, Fields>,
    /// The last id generated, even if that entry was since deleted: ids never go back.
    last_id: EntryId,
    groups: BTreeMap<String, GroupState>,
    /// Woken on every `XADD` to this stream; blocked readers re-check and wait again.
    wake: Arc<Notify>,
}

struct GroupState {
    last_delivered: EntryId,
    pel: BTreeMap<EntryId, Nack>,
    // INVARIANT: `id ∈ consumers[c]` exactly when `pel[id].consumer == c`. Every change of
    // ownership goes through `GroupState::assign` or `GroupState::forget`.
    consumers: BTreeMap<String, BTreeSet<EntryId>>,
}

/// A pending-list record (Redis's `streamNACK`).
struct Nack {
    consumer: String,
    delivered_ms: i64,
    deliveries: u64,
}

impl StreamState {
    fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            last_id: EntryId::MIN,
            groups: BTreeMap::new(),
            wake: Arc::new(Notify::new()),
        }
    }

    fn trim(&mut self, trim: Trim) {
        // Approximate trimming is done exactly: Redis's `~` only allows keeping *more*, so
        // trimming exactly is within its contract, and keeps tests deterministic.
        match trim {
            Trim::None => {}
            Trim::MaxLen { max, .. } => {
                let max = usize::try_from(max).unwrap_or(usize::MAX);
                while self.entries.len() > max {
                    self.entries.pop_first();
                }
            }
            Trim::MinId { min, .. } => {
                self.entries = self.entries.split_off(&min);
            }
        }
    }
}

impl GroupState {
    fn new(last_delivered: EntryId) -> Self {
        Self {
            last_delivered,
            pel: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }

    fn touch_consumer(&mut self, consumer: &str) {
        if !self.consumers.contains_key(consumer) {
            self.consumers.insert(consumer.to_owned(), BTreeSet::new());
        }
    }

    /// Give `id` to `consumer` as delivered at `now_ms` with `deliveries`, taking it from any
    /// previous owner.
    fn assign(&mut self, id: EntryId, consumer: &str, now_ms: i64, deliveries: u64) {
        let previous = self.pel.insert(
            id,
            Nack {
                consumer: consumer.to_owned(),
                delivered_ms: now_ms,
                deliveries,
            },
        );
        if let Some(previous) = previous {
            if previous.consumer != consumer {
                if let Some(own) = self.consumers.get_mut(&previous.consumer) {
                    own.remove(&id);
                }
            }
        }
        self.touch_consumer(consumer);
        if let Some(own) = self.consumers.get_mut(consumer) {
            own.insert(id);
        }
    }

    /// Drop `id` from the pending list; whether it was pending.
    fn forget(&mut self, id: EntryId) -> bool {
        match self.pel.remove(&id) {
            Some(nack) => {
                if let Some(own) = self.consumers.get_mut(&nack.consumer) {
                    own.remove(&id);
                }
                true
            }
            None => false,
        }
    }
}

/// The id `XADD *` generates after `last` at clock time `now_ms` (Redis `streamNextID`).
fn next_id(last: EntryId, now_ms: i64) -> Option<EntryId> {
    // A clock before 1970 counts as 0; ids only need to be monotonic, not truthful.
    let ms = u64::try_from(now_ms).unwrap_or(0);
    if ms > last.ms {
        Some(EntryId::new(ms, 0))
    } else {
        // Same millisecond, or the clock went back: keep the last millisecond and step the
        // sequence (into the next millisecond if the sequence is exhausted). From `0-0` this
        // yields `0-1`, never the invalid `0-0`.
        last.next()
    }
}

fn idle(now_ms: i64, delivered_ms: i64) -> Duration {
    let ms = now_ms.saturating_sub(delivered_ms).max(0);
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `BTreeMap::range` panics on inverted bounds; callers check `start <= end` first.
fn inclusive(start: EntryId, end: EntryId) -> Option<(Bound<EntryId>, Bound<EntryId>)> {
    (start <= end).then_some((Bound::Included(start), Bound::Included(end)))
}

impl MemoryStreams {
    /// Empty streams whose ids and delivery times come from `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                state: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, StreamState>> {
        // No code path panics while holding the lock, and each operation completes its
        // mutations before releasing it, so a poisoned lock still guards consistent state.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now().timestamp_millis()
    }

    /// One non-blocking group read, under the lock.
    fn read_once(
        stream: &mut StreamState,
        group: &str,
        consumer: &str,
        from: ReadFrom,
        count: usize,
        now_ms: i64,
    ) -> Option<Vec<StreamEntry>> {
        let StreamState {
            entries, groups, ..
        } = stream;
        let g = groups.get_mut(group)?;
        g.touch_consumer(consumer);
        let mut out = Vec::new();
        match from {
            ReadFrom::New => {
                let Some(start) = g.last_delivered.next() else {
                    return Some(out);
                };
                for (id, fields) in entries.range(start..).take(count) {
                    out.push(StreamEntry {
                        id: *id,
                        fields: fields.clone(),
                    });
                }
                for entry in &out {
                    g.last_delivered = entry.id;
                    // A fresh delivery through `>` always starts the count at 1, even if a
                    // stale record for the id existed (Redis does the same).
                    g.assign(entry.id, consumer, now_ms, 1);
                }
            }
            ReadFrom::Pending(after) => {
                let own: Vec<EntryId> = g
                    .consumers
                    .get(consumer)
                    .map(|set| {
                        set.range((Bound::Excluded(after), Bound::Unbounded))
                            .take(count)
                            .copied()
                            .collect()
                    })
                    .unwrap_or_default();
                for id in own {
                    match entries.get(&id) {
                        Some(fields) => {
                            if let Some(nack) = g.pel.get_mut(&id) {
                                nack.delivered_ms = now_ms;
                                nack.deliveries = nack.deliveries.saturating_add(1);
                            }
                            out.push(StreamEntry {
                                id,
                                fields: fields.clone(),
                            });
                        }
                        // Pending but deleted: reported with no fields and left untouched,
                        // exactly as Redis replies `[id, nil]` without counting a delivery.
                        None => out.push(StreamEntry {
                            id,
                            fields: Fields::new(),
                        }),
                    }
                }
            }
        }
        Some(out)
    }
}

impl Default for MemoryStreams {
    /// Empty streams on the system clock.
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl std::fmt::Debug for MemoryStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStreams")
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Streams for MemoryStreams {
    async fn xadd_with(&self, stream: &str, fields: &Fields, trim: Trim) -> StreamResult<EntryId> {
        if fields.is_empty() {
            return Err(StreamError::invalid("an entry needs at least one field"));
        }
        let mut state = self.lock();
        let now_ms = self.now_ms();
        let s = state
            .entry(stream.to_owned())
            .or_insert_with(StreamState::new);
        let id = next_id(s.last_id, now_ms).ok_or_else(|| StreamError::IdsExhausted {
            stream: stream.to_owned(),
        })?;
        s.entries.insert(id, fields.clone());
        s.last_id = id;
        s.trim(trim);
        s.wake.notify_waiters();
        Ok(id)
    }

    async fn len(&self, stream: &str) -> StreamResult<u64> {
        Ok(self
            .lock()
            .get(stream)
            .map_or(0, |s| s.entries.len() as u64))
    }

    async fn range(
        &self,
        stream: &str,
        start: EntryId,
        end: EntryId,
        count: Option<usize>,
    ) -> StreamResult<Vec<StreamEntry>> {
        let count = match count {
            Some(0) => return Err(StreamError::invalid("count must be at least 1")),
            Some(n) => n,
            None => usize::MAX,
        };
        let state = self.lock();
        let (Some(s), Some(bounds)) = (state.get(stream), inclusive(start, end)) else {
            return Ok(Vec::new());
        };
        Ok(s.entries
            .range(bounds)
            .take(count)
            .map(|(id, fields)| StreamEntry {
                id: *id,
                fields: fields.clone(),
            })
            .collect())
    }

    async fn del(&self, stream: &str, ids: &[EntryId]) -> StreamResult<u64> {
        let mut state = self.lock();
        let Some(s) = state.get_mut(stream) else {
            return Ok(0);
        };
        Ok(ids
            .iter()
            .filter(|id| s.entries.remove(id).is_some())
            .count() as u64)
    }

    async fn stream_exists(&self, stream: &str) -> StreamResult<bool> {
        Ok(self.lock().contains_key(stream))
    }

    async fn group_create(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> StreamResult<GroupCreated> {
        let mut state = self.lock();
        // MKSTREAM: an empty stream exists from here on, as in Redis.
        let s = state
            .entry(stream.to_owned())
            .or_insert_with(StreamState::new);
        if s.groups.contains_key(group) {
            return Ok(GroupCreated::AlreadyExists);
        }
        let last_delivered = match start {
            // `$` is the last id generated, even if that entry has been deleted.
            GroupStart::Latest => s.last_id,
            GroupStart::Beginning => EntryId::MIN,
        };
        s.groups
            .insert(group.to_owned(), GroupState::new(last_delivered));
        Ok(GroupCreated::Created)
    }

    async fn groups(&self, stream: &str) -> StreamResult<Vec<GroupInfo>> {
        let state = self.lock();
        let s = state.get(stream).ok_or_else(|| StreamError::NoStream {
            stream: stream.to_owned(),
        })?;
        Ok(s.groups
            .iter()
            .map(|(name, g)| GroupInfo {
                name: name.clone(),
                consumers: g.consumers.len() as u64,
                pending: g.pel.len() as u64,
                last_delivered: g.last_delivered,
                lag: Some(
                    s.entries
                        .range((Bound::Excluded(g.last_delivered), Bound::Unbounded))
                        .count() as u64,
                ),
            })
            .collect())
    }

    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        from: ReadFrom,
        count: usize,
        block: Option<Duration>,
    ) -> StreamResult<Vec<StreamEntry>> {
        if count == 0 {
            return Err(StreamError::invalid("count must be at least 1"));
        }
        // Only `>` reads block; a pending-list read answers at once, as in Redis.
        let deadline = match (from, block) {
            (ReadFrom::New, Some(wait)) if !wait.is_zero() => {
                Some(tokio::time::Instant::now() + wait.min(MAX_BLOCK))
            }
            _ => None,
        };
        loop {
            let waiter: Option<Pin<Box<OwnedNotified>>> = {
                let mut state = self.lock();
                let now_ms = self.now_ms();
                let s = state
                    .get_mut(stream)
                    .ok_or_else(|| StreamError::no_group(stream, group))?;
                // Register for the wake-up *before* looking, under the same lock `xadd` takes
                // to notify: an entry added after this look cannot be missed.
                let waiter = deadline.map(|_| {
                    let mut waiter = Box::pin(Arc::clone(&s.wake).notified_owned());
                    waiter.as_mut().enable();
                    waiter
                });
                let out = Self::read_once(s, group, consumer, from, count, now_ms)
                    .ok_or_else(|| StreamError::no_group(stream, group))?;
                if !out.is_empty() {
                    return Ok(out);
                }
                waiter
            };
            let (Some(waiter), Some(deadline)) = (waiter, deadline) else {
                return Ok(Vec::new());
            };
            if tokio::time::timeout_at(deadline, waiter).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StreamResult<u64> {
        let mut state = self.lock();
        let Some(g) = state.get_mut(stream).and_then(|s| s.groups.get_mut(group)) else {
            return Ok(0);
        };
        Ok(ids.iter().filter(|id| g.forget(**id)).count() as u64)
    }

    async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: EntryId,
        count: usize,
    ) -> StreamResult<AutoClaim> {
        if count == 0 {
            return Err(StreamError::invalid("count must be at least 1"));
        }
        let mut state = self.lock();
        let now_ms = self.now_ms();
        let s = state
            .get_mut(stream)
            .ok_or_else(|| StreamError::no_group(stream, group))?;
        let StreamState {
            entries, groups, ..
        } = s;
        let g = groups
            .get_mut(group)
            .ok_or_else(|| StreamError::no_group(stream, group))?;
        let min_idle_ms = millis(min_idle);
        let mut attempts = count.saturating_mul(AUTOCLAIM_ATTEMPTS_FACTOR);
        let mut remaining = count;
        let mut cursor = Bound::Included(start);
        let mut out = AutoClaim::default();
        // Mirrors Redis 7's loop: every examined pending entry costs an attempt; a deleted one
        // is dropped and reported whatever its idle time; a young one is skipped; the rest are
        // claimed until `count` are.
        while attempts > 0 && remaining > 0 {
            attempts -= 1;
            let Some((&id, nack)) = g.pel.range((cursor, Bound::Unbounded)).next() else {
                break;
            };
            cursor = Bound::Excluded(id);
            if !entries.contains_key(&id) {
                g.forget(id);
                out.deleted.push(id);
                continue;
            }
            if min_idle_ms > 0 && now_ms.saturating_sub(nack.delivered_ms) < min_idle_ms {
                continue;
            }
            let deliveries = nack.deliveries.saturating_add(1);
            g.assign(id, consumer, now_ms, deliveries);
            if let Some(fields) = entries.get(&id) {
                out.entries.push(StreamEntry {
                    id,
                    fields: fields.clone(),
                });
            }
            remaining -= 1;
        }
        out.next = g
            .pel
            .range((cursor, Bound::Unbounded))
            .next()
            .map_or(EntryId::MIN, |(id, _)| *id);
        Ok(out)
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> StreamResult<PendingSummary> {
        let state = self.lock();
        let g = state
            .get(stream)
            .and_then(|s| s.groups.get(group))
            .ok_or_else(|| StreamError::no_group(stream, group))?;
        Ok(PendingSummary {
            count: g.pel.len() as u64,
            min: g.pel.keys().next().copied(),
            max: g.pel.keys().next_back().copied(),
            per_consumer: g
                .consumers
                .iter()
                .filter(|(_, own)| !own.is_empty())
                .map(|(name, own)| ConsumerPending {
                    consumer: name.clone(),
                    pending: own.len() as u64,
                })
                .collect(),
        })
    }

    async fn pending_range(
        &self,
        stream: &str,
        group: &str,
        start: EntryId,
        end: EntryId,
        count: usize,
        consumer: Option<&str>,
    ) -> StreamResult<Vec<PendingEntry>> {
        if count == 0 {
            return Err(StreamError::invalid("count must be at least 1"));
        }
        let state = self.lock();
        let now_ms = self.now_ms();
        let g = state
            .get(stream)
            .and_then(|s| s.groups.get(group))
            .ok_or_else(|| StreamError::no_group(stream, group))?;
        let Some(bounds) = inclusive(start, end) else {
            return Ok(Vec::new());
        };
        let record = |id: &EntryId| {
            g.pel.get(id).map(|nack| PendingEntry {
                id: *id,
                consumer: nack.consumer.clone(),
                idle: idle(now_ms, nack.delivered_ms),
                deliveries: nack.deliveries,
            })
        };
        Ok(match consumer {
            Some(name) => g.consumers.get(name).map_or_else(Vec::new, |own| {
                own.range(bounds).filter_map(record).take(count).collect()
            }),
            None => g
                .pel
                .range(bounds)
                .filter_map(|(id, _)| record(id))
                .take(count)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, FakeClock};

    fn fake() -> (FakeClock, MemoryStreams) {
        let clock = FakeClock::at_fixture_epoch();
        let streams = MemoryStreams::new(Arc::new(clock.clone()));
        (clock, streams)
    }

    fn one(k: &str) -> Fields {
        Fields::new().with(k, "v")
    }

    #[test]
    fn next_id_follows_redis() {
        assert_eq!(next_id(EntryId::MIN, 0), Some(EntryId::new(0, 1)));
        assert_eq!(next_id(EntryId::MIN, -5), Some(EntryId::new(0, 1)));
        assert_eq!(next_id(EntryId::new(10, 4), 10), Some(EntryId::new(10, 5)));
        assert_eq!(next_id(EntryId::new(10, 4), 9), Some(EntryId::new(10, 5)));
        assert_eq!(next_id(EntryId::new(10, 4), 11), Some(EntryId::new(11, 0)));
        assert_eq!(
            next_id(EntryId::new(10, u64::MAX), 10),
            Some(EntryId::new(11, 0))
        );
        assert_eq!(next_id(EntryId::MAX, 10), None);
    }

    #[tokio::test]
    async fn ids_come_from_the_injected_clock() {
        let (clock, s) = fake();
        let ms = clock.now().timestamp_millis() as u64;
        let a = s.xadd("s", &one("a")).await.unwrap();
        let b = s.xadd("s", &one("b")).await.unwrap();
        assert_eq!((a, b), (EntryId::new(ms, 0), EntryId::new(ms, 1)));
        clock.advance(chrono::Duration::milliseconds(7));
        assert_eq!(
            s.xadd("s", &one("c")).await.unwrap(),
            EntryId::new(ms + 7, 0)
        );
        // The clock going back never makes ids go back.
        clock.advance(chrono::Duration::seconds(-60));
        assert_eq!(
            s.xadd("s", &one("d")).await.unwrap(),
            EntryId::new(ms + 7, 1)
        );
        // Nor does deleting the newest entry.
        s.del("s", &[EntryId::new(ms + 7, 1)]).await.unwrap();
        assert_eq!(
            s.xadd("s", &one("e")).await.unwrap(),
            EntryId::new(ms + 7, 2)
        );
    }

    #[tokio::test]
    async fn idle_time_follows_the_fake_clock_exactly() {
        let (clock, s) = fake();
        s.group_create("s", "g", GroupStart::Beginning)
            .await
            .unwrap();
        let id = s.xadd("s", &one("a")).await.unwrap();
        s.read_group("s", "g", "c1", ReadFrom::New, 10, None)
            .await
            .unwrap();
        clock.advance(chrono::Duration::milliseconds(1500));
        let pending = s
            .pending_range("s", "g", EntryId::MIN, EntryId::MAX, 10, None)
            .await
            .unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, id);
        assert_eq!(pending[0].idle, Duration::from_millis(1500));
        // One millisecond short of the threshold: not claimed; at the threshold: claimed.
        let early = s
            .autoclaim(
                "s",
                "g",
                "c2",
                Duration::from_millis(1501),
                EntryId::MIN,
                10,
            )
            .await
            .unwrap();
        assert!(early.entries.is_empty());
        let claimed = s
            .autoclaim(
                "s",
                "g",
                "c2",
                Duration::from_millis(1500),
                EntryId::MIN,
                10,
            )
            .await
            .unwrap();
        assert_eq!(claimed.entries.len(), 1);
        let pending = s
            .pending_range("s", "g", EntryId::MIN, EntryId::MAX, 10, None)
            .await
            .unwrap();
        assert_eq!(pending[0].idle, Duration::ZERO);
        assert_eq!(pending[0].consumer, "c2");
        assert_eq!(pending[0].deliveries, 2);
    }

    #[tokio::test]
    async fn autoclaim_attempts_are_bounded_like_redis() {
        let (clock, s) = fake();
        s.group_create("s", "g", GroupStart::Beginning)
            .await
            .unwrap();
        for i in 0..25 {
            s.xadd("s", &one(&format!("k{i}"))).await.unwrap();
        }
        let read = s
            .read_group("s", "g", "c1", ReadFrom::New, 100, None)
            .await
            .unwrap();
        // Make only the last entry old enough; ten attempts (count 1) stop at the tenth entry.
        clock.advance(chrono::Duration::seconds(10));
        let young: Vec<EntryId> = read[..24].iter().map(|e| e.id).collect();
        s.read_group("s", "g", "c1", ReadFrom::Pending(EntryId::MIN), 24, None)
            .await
            .unwrap();
        let first = s
            .autoclaim("s", "g", "c2", Duration::from_secs(5), EntryId::MIN, 1)
            .await
            .unwrap();
        assert!(first.entries.is_empty());
        assert_eq!(first.next, young[10]);
        let second = s
            .autoclaim("s", "g", "c2", Duration::from_secs(5), first.next, 1)
            .await
            .unwrap();
        assert!(second.entries.is_empty());
        assert_eq!(second.next, young[20]);
        let third = s
            .autoclaim("s", "g", "c2", Duration::from_secs(5), second.next, 1)
            .await
            .unwrap();
        assert_eq!(third.entries.len(), 1);
        assert_eq!(third.entries[0].id, read[24].id);
        assert_eq!(third.next, EntryId::MIN);
    }

    #[tokio::test]
    async fn clones_share_state_and_concurrent_adds_get_unique_ids() {
        let s = MemoryStreams::default();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..50 {
                    ids.push(s.xadd("s", &one(&format!("{t}-{i}"))).await.unwrap());
                }
                ids
            }));
        }
        let mut all = BTreeSet::new();
        for t in tasks {
            for id in t.await.unwrap() {
                assert!(all.insert(id), "duplicate id {id}");
            }
        }
        assert_eq!(s.len("s").await.unwrap(), 400);
    }

    #[tokio::test(start_paused = true)]
    async fn huge_block_is_clamped_not_overflowed() {
        let s = MemoryStreams::default();
        s.group_create("s", "g", GroupStart::Latest).await.unwrap();
        let read = s.read_group(
            "s",
            "g",
            "c",
            ReadFrom::New,
            1,
            Some(Duration::from_secs(u64::MAX)),
        );
        let add = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            s.xadd("s", &one("a")).await.unwrap()
        };
        let (got, id) = tokio::join!(read, add);
        assert_eq!(got.unwrap()[0].id, id);
    }
}
