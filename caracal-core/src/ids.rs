//! Identifier generation.
//!
//! Caracal's ids are UUIDv7 strings (time-ordered, so `ORDER BY id` follows insertion order in
//! Postgres and in the outbox). Generation is injected through [`IdGen`] so tests can make ids
//! deterministic, the way biscuit-rust injects its RNG.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// A source of new identifiers.
pub trait IdGen: Send + Sync + std::fmt::Debug {
    /// A fresh, unique id.
    fn next_uuid(&self) -> Uuid;

    /// A fresh id in its canonical lowercase hyphenated string form.
    fn next_id(&self) -> String {
        self.next_uuid().hyphenated().to_string()
    }
}

/// Random UUIDv7 ids from the system clock and the OS RNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidV7;

impl IdGen for UuidV7 {
    fn next_uuid(&self) -> Uuid {
        Uuid::now_v7()
    }
}

/// Deterministic UUIDv7-shaped ids: a fixed millisecond timestamp and a counter, so test output
/// is reproducible and ids still sort in creation order.
#[derive(Debug, Default)]
pub struct SequentialIds {
    counter: AtomicU64,
}

impl SequentialIds {
    /// A generator whose first id ends in `...0001`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl IdGen for SequentialIds {
    fn next_uuid(&self) -> Uuid {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        // 48-bit ms timestamp 2026-05-21T12:00:00Z, version 7, variant 10, counter in the tail.
        let ms: u64 = 1_779_364_800_000;
        let hi = (ms << 16) | 0x7000;
        let lo = (0b10u64 << 62) | (n & 0x3FFF_FFFF_FFFF_FFFF);
        Uuid::from_u64_pair(hi, lo)
    }
}

/// A shared id generator handle.
pub type SharedIdGen = Arc<dyn IdGen>;

/// Whether `s` is a syntactically valid UUID (any version), as the reference requires of
/// path ids such as approval ids.
pub fn is_uuid(s: &str) -> bool {
    Uuid::try_parse(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_ids_are_version_7_and_increase() {
        let a = UuidV7.next_uuid();
        let b = UuidV7.next_uuid();
        assert_eq!(a.get_version_num(), 7);
        assert!(b > a || b.as_bytes()[..6] == a.as_bytes()[..6]);
    }

    #[test]
    fn sequential_ids_are_valid_v7_and_ordered() {
        let g = SequentialIds::new();
        let a = g.next_id();
        let b = g.next_id();
        assert!(a < b);
        let ua = Uuid::parse_str(&a).unwrap();
        assert_eq!(ua.get_version_num(), 7);
        assert!(a.ends_with("000000000001"), "{a}");
        assert!(is_uuid(&b));
        assert!(!is_uuid("not-a-uuid"));
    }
}
