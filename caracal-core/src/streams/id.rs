//! Stream entry ids: `<ms>-<seq>`.

use std::fmt;
use std::str::FromStr;

/// The id of a stream entry, `<ms>-<seq>` on the wire.
///
/// Ordering is Redis's: by milliseconds, then by sequence number. [`EntryId::MIN`] (`0-0`) is
/// below every id an `XADD` can produce, so it is the natural "from the start" cursor for
/// pending-list drains and `XAUTOCLAIM`, and the "no more" cursor `XAUTOCLAIM` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds part (Unix time in ms when the id was generated from a clock).
    pub ms: u64,
    /// Sequence number within the millisecond.
    pub seq: u64,
}

impl EntryId {
    /// `0-0`: below every real entry; the start cursor and the "scan finished" cursor.
    pub const MIN: EntryId = EntryId { ms: 0, seq: 0 };
    /// The largest id (Redis's `+` in a range).
    pub const MAX: EntryId = EntryId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// An id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The smallest id strictly greater than this one, or `None` for [`EntryId::MAX`].
    ///
    /// Useful to turn an inclusive range start into an exclusive one when paging.
    pub const fn next(self) -> Option<EntryId> {
        if self.seq < u64::MAX {
            Some(EntryId::new(self.ms, self.seq + 1))
        } else if self.ms < u64::MAX {
            Some(EntryId::new(self.ms + 1, 0))
        } else {
            None
        }
    }

    /// Whether this is `0-0`.
    pub const fn is_min(self) -> bool {
        self.ms == 0 && self.seq == 0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A string that is not a full `<ms>-<seq>` entry id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream entry id (expected <ms>-<seq> in decimal)")]
pub struct ParseEntryIdError {
    _private: (),
}

impl ParseEntryIdError {
    const fn new() -> Self {
        Self { _private: () }
    }
}

/// Parse one decimal `u64` part: ASCII digits only. `u64::from_str` alone would also accept a
/// leading `+`, which is not an id Redis ever writes.
fn parse_part(s: &str) -> Result<u64, ParseEntryIdError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseEntryIdError::new());
    }
    s.parse::<u64>().map_err(|_| ParseEntryIdError::new())
}

impl FromStr for EntryId {
    type Err = ParseEntryIdError;

    /// Parses the full `<ms>-<seq>` form only. Redis's shorthands (`-`, `+`, `$`, `>`, a bare
    /// `<ms>`) are commands' arguments, not ids, and have typed equivalents in this module.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').ok_or(ParseEntryIdError::new())?;
        Ok(EntryId::new(parse_part(ms)?, parse_part(seq)?))
    }
}

impl serde::Serialize for EntryId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EntryId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_displays_the_wire_form() {
        let id: EntryId = "1526919030474-55".parse().unwrap();
        assert_eq!(id, EntryId::new(1_526_919_030_474, 55));
        assert_eq!(id.to_string(), "1526919030474-55");
        assert_eq!("0-0".parse::<EntryId>().unwrap(), EntryId::MIN);
        assert_eq!(
            "18446744073709551615-18446744073709551615"
                .parse::<EntryId>()
                .unwrap(),
            EntryId::MAX
        );
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "-",
            "1",
            "1-",
            "-1",
            "+1-1",
            "1-+1",
            "1-1-1",
            " 1-1",
            "1-1 ",
            "a-1",
            "18446744073709551616-0",
            "$",
            ">",
            "*",
        ] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn next_steps_seq_then_ms() {
        assert_eq!(EntryId::new(5, 1).next(), Some(EntryId::new(5, 2)));
        assert_eq!(EntryId::new(5, u64::MAX).next(), Some(EntryId::new(6, 0)));
        assert_eq!(EntryId::MAX.next(), None);
        assert!(EntryId::MIN.is_min());
    }

    #[test]
    fn serde_uses_the_wire_form() {
        let id = EntryId::new(7, 3);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"7-3\"");
        assert_eq!(serde_json::from_str::<EntryId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<EntryId>("\"7\"").is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(ms in any::<u64>(), seq in any::<u64>()) {
            let id = EntryId::new(ms, seq);
            prop_assert_eq!(id.to_string().parse::<EntryId>().unwrap(), id);
        }

        #[test]
        fn order_is_ms_then_seq(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            prop_assert_eq!(EntryId::new(a.0, a.1).cmp(&EntryId::new(b.0, b.1)), a.cmp(&b));
        }

        #[test]
        fn parse_never_panics(s in ".{0,48}") {
            let _ = s.parse::<EntryId>();
        }
    }
}
