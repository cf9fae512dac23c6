//! The in-memory implementation of every storage trait.
//!
//! [`MemoryStore`] is the embedded default (`caracal up`, a host that `cargo add`s the engine)
//! and the test double of every service. It honours the same contract as the Postgres backend,
//! checked by the same contract suite (`caracal-core/tests/contract/store.rs`): unique keys,
//! zone isolation, keyset paging, atomic change-plus-outbox writes, conditional approval
//! updates, outbox leases and the Coordinator's per-zone unit of work.
//!
//! ## Layout
//!
//! One submodule per trait family, each owning its tables behind its own `std::sync::Mutex`:
//! `directory`, `authority`, `keys`, `policy`, `approvals`, `coordinator`, `outbox`,
//! `ephemeral`, `audit`, `admin_audit`. Critical sections are short and synchronous: no lock of this module is ever
//! held across an `.await` (the Coordinator's per-zone `tokio::sync::Mutex` is the one lock a
//! unit of work holds while its caller awaits).
//!
//! ## Lock order
//!
//! An operation that needs several tables takes their locks in this order, and never the
//! other way round, so two such operations cannot deadlock:
//! `directory` → `authority` → `keys` → `policy` → `approvals` → `coordinator` (committed
//! state) → `outbox` → `ephemeral` → `audit` → `admin_audit`. Only two operations hold more than one: a policy-set
//! activation or archive (`policy` → `outbox`) and a unit-of-work commit (`coordinator` →
//! `outbox`).
//!
//! ## Retention
//!
//! Like the reference's retention cleaner, the outbox forgets a dispatched row seven days
//! after its dispatch (see [`DISPATCHED_RETENTION`]), and expired ephemeral keys are dropped
//! lazily, so a long-running embedded host does not grow without bound.

mod admin_audit;
mod approvals;
mod audit;
mod authority;
mod coordinator;
mod directory;
mod ephemeral;
mod keys;
mod leader;
mod outbox;
mod policy;

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use super::{Cursor, Page, PageRequest, StoreError, StoreResult};
use crate::clock::{SharedClock, SystemClock};
use crate::ids::{SharedIdGen, UuidV7};

pub use leader::MemoryLeaderLock;
pub use outbox::DISPATCHED_RETENTION;

/// Every storage trait over process memory.
///
/// Cheap to clone: clones share the same tables (an `Arc` inside), so one `MemoryStore` can be
/// handed to every service of an embedded deployment as each of its traits.
///
/// Time enters in two ways. Methods that take `now`/`at` use it as given (as the Postgres
/// backend does). The few operations that take no instant read the injected clock:
/// [`crate::store::ephemeral::EphemeralKeys`] expiry and the `created_at` of outbox rows
/// enqueued by a Coordinator unit of work. Tests inject a
/// [`FakeClock`](crate::clock::FakeClock) with [`MemoryStore::with_clock`].
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

/// The shared state. Each table family has its own lock; see the module's lock order.
struct Inner {
    clock: SharedClock,
    ids: SharedIdGen,
    directory: Mutex<directory::Tables>,
    authority: Mutex<authority::Tables>,
    keys: Mutex<keys::Tables>,
    policy: Mutex<policy::Tables>,
    approvals: Mutex<approvals::Tables>,
    coordinator: coordinator::State,
    outbox: Mutex<outbox::Tables>,
    ephemeral: Mutex<ephemeral::Tables>,
    audit: Mutex<audit::Tables>,
    admin_audit: Mutex<admin_audit::Tables>,
}

impl MemoryStore {
    /// An empty store on the system clock, with UUIDv7 outbox ids.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store reading time from `clock`, with UUIDv7 outbox ids.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self::with_clock_and_ids(clock, Arc::new(UuidV7))
    }

    /// An empty store reading time from `clock` and taking outbox row ids from `ids`.
    pub fn with_clock_and_ids(clock: SharedClock, ids: SharedIdGen) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                ids,
                directory: Mutex::default(),
                authority: Mutex::default(),
                keys: Mutex::default(),
                policy: Mutex::default(),
                approvals: Mutex::default(),
                coordinator: coordinator::State::default(),
                outbox: Mutex::default(),
                ephemeral: Mutex::default(),
                audit: Mutex::default(),
                admin_audit: Mutex::default(),
            }),
        }
    }

    /// The clock this store reads when an operation takes no instant.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

/// Lock a table, recovering from poisoning.
///
/// A poisoned lock means a thread panicked while holding it. Every mutation in this module
/// validates first and then applies infallible in-place changes, so a panic cannot leave a
/// table half-changed; the data behind a poisoned lock is still consistent and serving it is
/// better than turning one panic into a permanent outage of the store.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A row listed with keyset paging: ordered `created_at DESC, id DESC`.
trait Keyed {
    fn created_at(&self) -> DateTime<Utc>;
    fn id(&self) -> &str;
}

/// One page of `rows` (any order, already filtered) for `page`.
///
/// Rows strictly after the cursor (`(created_at, id) < (cursor.created_at, cursor.id)`) are
/// sorted newest first and cut at `limit`; `next` is the last row's position iff the page is
/// full, so an exact multiple ends with one empty page (the reference's behaviour).
fn keyset_page<'a, T, I>(rows: I, page: &PageRequest) -> StoreResult<Page<T>>
where
    T: Keyed + Clone + 'a,
    I: IntoIterator<Item = &'a T>,
{
    if page.limit == 0 {
        return Err(StoreError::Invalid("page limit must be at least 1".into()));
    }
    let mut picked: Vec<&T> = match &page.after {
        None => rows.into_iter().collect(),
        Some(c) => rows
            .into_iter()
            .filter(|r| (r.created_at(), r.id()) < (c.created_at, c.id.as_str()))
            .collect(),
    };
    picked.sort_unstable_by(|a, b| (b.created_at(), b.id()).cmp(&(a.created_at(), a.id())));
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
    picked.truncate(limit);
    let next = match picked.last() {
        Some(last) if picked.len() == limit => Some(Cursor {
            created_at: last.created_at(),
            id: last.id().to_owned(),
        }),
        _ => None,
    };
    Ok(Page {
        items: picked.into_iter().cloned().collect(),
        next,
    })
}

/// Convert a std duration to a chrono one; a duration chrono cannot represent is invalid input.
fn chrono_duration(d: std::time::Duration) -> StoreResult<chrono::Duration> {
    chrono::Duration::from_std(d).map_err(|_| StoreError::Invalid("duration out of range".into()))
}

/// `at + d`, refusing an instant past chrono's range instead of panicking.
fn add(at: DateTime<Utc>, d: chrono::Duration) -> StoreResult<DateTime<Utc>> {
    at.checked_add_signed(d)
        .ok_or_else(|| StoreError::Invalid("instant out of range".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Row(DateTime<Utc>, String);

    impl Keyed for Row {
        fn created_at(&self) -> DateTime<Utc> {
            self.0
        }
        fn id(&self) -> &str {
            &self.1
        }
    }

    #[test]
    fn keyset_orders_desc_and_cuts_exactly() {
        let t = DateTime::<Utc>::from_timestamp(1_779_364_800, 0).unwrap();
        let rows = vec![
            Row(t, "a".into()),
            Row(t, "b".into()),
            Row(t + chrono::Duration::seconds(1), "c".into()),
        ];
        let p1 = keyset_page(&rows, &PageRequest::first(2)).unwrap();
        assert_eq!(p1.items, vec![rows[2].clone(), rows[1].clone()]);
        let next = p1.next.unwrap();
        assert_eq!(next.id, "b");
        let p2 = keyset_page(
            &rows,
            &PageRequest {
                limit: 2,
                after: Some(next),
            },
        )
        .unwrap();
        assert_eq!(p2.items, vec![rows[0].clone()]);
        assert!(p2.next.is_none());
        assert!(keyset_page(&rows, &PageRequest::first(0)).is_err());
    }
}
