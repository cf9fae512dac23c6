//! Timestamp wire forms.
//!
//! The Admin and Coordinator APIs render timestamps as ISO-8601 strings in UTC with exactly
//! three fractional digits and a `Z` (`2026-05-21T12:00:00.000Z`, JavaScript's
//! `Date.toISOString`). Parsing accepts any RFC 3339 timestamp. Use with
//! `#[serde(with = "crate::model::time::iso_ms")]` or `iso_ms_opt` for nullable fields.

use chrono::{DateTime, SecondsFormat, Utc};

/// Render a timestamp the way the reference's JSON APIs do.
pub fn format_iso_ms(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parse an RFC 3339 timestamp into UTC.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// serde adapter for a required timestamp in the ISO-ms form.
pub mod iso_ms {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialise as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_iso_ms(t))
    }

    /// Parse any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        super::parse_rfc3339(&raw)
            .ok_or_else(|| serde::de::Error::custom("invalid RFC 3339 timestamp"))
    }
}

/// serde adapter for a nullable timestamp in the ISO-ms form.
pub mod iso_ms_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialise as `YYYY-MM-DDTHH:MM:SS.mmmZ` or `null`.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_iso_ms(t)),
            None => s.serialize_none(),
        }
    }

    /// Parse an RFC 3339 timestamp or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        match raw {
            None => Ok(None),
            Some(s) => super::parse_rfc3339(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("invalid RFC 3339 timestamp")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_milliseconds_and_z() {
        let t = parse_rfc3339("2026-05-21T14:00:00.123456+02:00").unwrap();
        assert_eq!(format_iso_ms(&t), "2026-05-21T12:00:00.123Z");
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
