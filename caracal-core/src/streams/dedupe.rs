//! Consumer-side dedupe of outbox messages by `outbox_id`.
//!
//! The outbox relay ([`super::relay`]) delivers **at least once**: a relay that dies (or
//! whose lease lapses) between its `XADD` and marking the row dispatched publishes the row
//! again after the lease, under a new stream entry id but with the same `outbox_id`. A
//! consumer whose handler is not idempotent by itself remembers the `outbox_id`s it has
//! handled recently and skips a repeat: [`RecentIds`] is that memory, bounded so a
//! long-running consumer does not grow without limit.
//!
//! The bound is a count, not a time: republishes come within a relay lease (30 s by
//! default) plus backoff, so a window of a few thousand ids covers them at any realistic
//! rate. An id pushed out of the window is treated as new again (the window can only
//! forget, never invent a duplicate), so size it for the stream's rate × the relay lease.
//! A message without `outbox_id` (not from an outbox) is always new.

use std::collections::{HashSet, VecDeque};

use super::Fields;

/// The field the relay adds to every message it publishes.
pub const OUTBOX_ID_FIELD: &str = "outbox_id";

/// The last `capacity` ids seen, oldest forgotten first.
///
/// Not synchronised: a consumer with concurrent handlers wraps it in a mutex, or keeps one
/// per partition of its work.
#[derive(Debug, Clone)]
pub struct RecentIds {
    capacity: usize,
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl RecentIds {
    /// A window of `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            order: VecDeque::with_capacity(capacity),
            seen: HashSet::with_capacity(capacity),
        }
    }

    /// Record `id`; `true` the first time it is seen within the window, `false` for a repeat.
    pub fn first_seen(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.seen.insert(id.to_owned());
        true
    }

    /// Whether `id` is in the window (without recording it).
    pub fn contains(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    /// Ids in the window.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether a delivered message should be handled: `true` unless its `outbox_id` was seen
    /// within the window (a message without one is always handled). Records the id.
    pub fn accept(&mut self, fields: &Fields) -> bool {
        match fields.get(OUTBOX_ID_FIELD) {
            Some(id) => self.first_seen(id),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_are_refused() {
        let mut w = RecentIds::new(2);
        assert!(w.first_seen("a"));
        assert!(!w.first_seen("a"));
        assert!(w.first_seen("b"));
        assert!(w.first_seen("c")); // "a" leaves the window
        assert!(!w.contains("a"));
        assert!(w.first_seen("a"));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn messages_dedupe_on_outbox_id_only() {
        let mut w = RecentIds::new(8);
        let mut f = Fields::new();
        f.insert("zone_id", "z");
        assert!(w.accept(&f));
        assert!(w.accept(&f), "no outbox_id: always new");
        f.insert(OUTBOX_ID_FIELD, "o1");
        assert!(w.accept(&f));
        assert!(!w.accept(&f));
    }
}
