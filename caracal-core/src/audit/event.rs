//! The audit wire event (reference §2.1) and its stored form (§2.3).
//!
//! [`AuditEvent::parse`] applies the ingest rules of §1.4: invalid JSON, an empty `id` or
//! `zone_id`, or a missing or zero `occurred_at` are typed errors; unknown fields are tolerated;
//! NUL characters are stripped from every string field and from inside the three JSON documents
//! (keys and values). The JSON documents stay raw text, so `1.50` keeps its scale until the
//! `jsonb` normaliser decides how it prints.
//!
//! Deliberate differences from the reference, each stricter or more uniform:
//! - NULs are stripped *before* the required-field checks, so an `id` of `"\u0000"` is refused as
//!   empty instead of being stored as `""`.
//! - A duplicate field in the event object is refused (Go keeps the last one); the producer
//!   `sig` covers the raw bytes, and two readers must not disagree on what they say.
//! - A leap second or an `occurred_at` outside the Unix-nanosecond range (1677–2262) is refused
//!   at parse time, since the content hash needs its nanosecond value.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::AuditError;
use super::jsonb::{self, JsonbError};

/// A JSON document kept as its exact text (any JSON value, never empty).
///
/// The text is what the producer sent; [`JsonText::normalized`] gives the Postgres `jsonb` text
/// form the content hash uses. Equality compares the text.
#[derive(Clone)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// Wrap JSON text; fails if it is not one valid JSON value.
    pub fn parse(text: impl Into<String>) -> Result<Self, AuditError> {
        Ok(Self(RawValue::from_string(text.into())?))
    }

    /// The compact text of a `serde_json::Value`.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, AuditError> {
        Ok(Self(serde_json::value::to_raw_value(value)?))
    }

    /// The exact text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The Postgres `jsonb` text form (`text::jsonb::text`).
    pub fn normalized(&self) -> Result<String, JsonbError> {
        jsonb::normalize(self.as_str())
    }

    /// The same document with every `\u0000` escape removed from its strings (keys and
    /// values); everything else, number text included, is kept byte for byte.
    fn without_nul_escapes(self) -> Result<Self, AuditError> {
        match strip_nul_escapes(self.as_str()) {
            Cow::Borrowed(_) => Ok(self),
            Cow::Owned(text) => Self::parse(text),
        }
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for JsonText {}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonText").field(&self.as_str()).finish()
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self)
    }
}

/// Remove every `\u0000` escape inside the strings of valid JSON text.
///
/// Works on the text rather than a decoded value so numbers and all other escapes survive
/// unchanged. Valid JSON cannot hold a raw NUL (control characters must be escaped), so the
/// escape is the only way a NUL can appear. `\\u0000` (an escaped backslash) is left alone.
pub(crate) fn strip_nul_escapes(json: &str) -> Cow<'_, str> {
    if !json.contains("\\u0000") {
        return Cow::Borrowed(json);
    }
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                in_string = !in_string;
                i += 1;
            }
            b'\\' if in_string => {
                if bytes[i..].starts_with(b"\\u0000") {
                    // INVARIANT: `i` is at an ASCII byte, a char boundary.
                    out.push_str(&json[run_start..i]);
                    i += 6;
                    run_start = i;
                } else {
                    // Skip the escaped byte too (it may be a quote or a backslash).
                    i += 2;
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(json.get(run_start..).unwrap_or_default());
    Cow::Owned(out)
}

fn strip_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "")
    } else {
        text
    }
}

/// An audit event as produced on the `caracal.audit.events` stream (`data` field).
///
/// Serialises with the reference's wire names: `policy_set_id`, `policy_set_version_id` and
/// `manifest_sha` are omitted when empty, `metadata_json` when absent;
/// `determining_policies_json` and `diagnostics_json` are always present (`null` when absent).
/// Deserialising applies the same rules as [`AuditEvent::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// Event id (uuid or request id); never empty after parsing. Half of the ledger key.
    pub id: String,
    /// The zone: the chain partition key. Never empty after parsing.
    pub zone_id: String,
    /// What happened, for example `token_exchange` or `gateway_resource_request`.
    pub event_type: String,
    /// Request correlation id (always serialised).
    pub request_id: String,
    /// `allow` or `deny` (always serialised).
    pub decision: String,
    /// The policy set that decided (omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub policy_set_id: String,
    /// The policy set version that decided (omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub policy_set_version_id: String,
    /// Manifest digest, for example `sha256:<hex>` (omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub manifest_sha: String,
    /// For example `complete` (always serialised).
    pub evaluation_status: String,
    /// The determining policies, raw JSON; `None` is `null` on the wire.
    pub determining_policies_json: Option<JsonText>,
    /// Decision diagnostics, raw JSON; `None` is `null` on the wire.
    pub diagnostics_json: Option<JsonText>,
    /// Free-form metadata, raw JSON; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_json: Option<JsonText>,
    /// When it happened. Half of the ledger key (at microsecond precision once stored).
    #[serde(serialize_with = "serialize_rfc3339_nano")]
    pub occurred_at: DateTime<Utc>,
}

/// The wire shape before validation: every field optional, `null` accepted everywhere (Go
/// decodes `null` into a string as "no change", i.e. empty).
#[derive(Deserialize)]
struct WireEvent {
    id: Option<String>,
    zone_id: Option<String>,
    event_type: Option<String>,
    request_id: Option<String>,
    decision: Option<String>,
    policy_set_id: Option<String>,
    policy_set_version_id: Option<String>,
    manifest_sha: Option<String>,
    evaluation_status: Option<String>,
    determining_policies_json: Option<JsonText>,
    diagnostics_json: Option<JsonText>,
    metadata_json: Option<JsonText>,
    occurred_at: Option<String>,
}

impl AuditEvent {
    /// Parse the stream's `data` bytes under the ingest rules (module docs).
    pub fn parse(data: &[u8]) -> Result<Self, AuditError> {
        let wire: WireEvent = serde_json::from_slice(data)?;
        Self::from_wire(wire)
    }

    fn from_wire(wire: WireEvent) -> Result<Self, AuditError> {
        let text = |field: Option<String>| strip_nul(field.unwrap_or_default());
        let json = |field: Option<JsonText>| field.map(JsonText::without_nul_escapes).transpose();
        let id = required(text(wire.id), "id")?;
        let zone_id = required(text(wire.zone_id), "zone_id")?;
        let occurred_at = parse_occurred_at(wire.occurred_at.as_deref())?;
        Ok(Self {
            id,
            zone_id,
            event_type: text(wire.event_type),
            request_id: text(wire.request_id),
            decision: text(wire.decision),
            policy_set_id: text(wire.policy_set_id),
            policy_set_version_id: text(wire.policy_set_version_id),
            manifest_sha: text(wire.manifest_sha),
            evaluation_status: text(wire.evaluation_status),
            determining_policies_json: json(wire.determining_policies_json)?,
            diagnostics_json: json(wire.diagnostics_json)?,
            metadata_json: json(wire.metadata_json)?,
            occurred_at,
        })
    }

    /// The form the ledger stores (§2.3 step 2): `occurred_at` truncated to microseconds, NULs
    /// stripped, each JSON field in `jsonb` text form, and a JSON `null` stored as absent.
    ///
    /// Idempotent. [`content_hash`](super::content_hash) gives the same value for an event and
    /// its stored form. An error means a JSON field has no `jsonb` form (for example an
    /// unpaired surrogate escape); it is an input error like a parse error.
    pub fn into_stored(self) -> Result<Self, AuditError> {
        Ok(Self {
            id: strip_nul(self.id),
            zone_id: strip_nul(self.zone_id),
            event_type: strip_nul(self.event_type),
            request_id: strip_nul(self.request_id),
            decision: strip_nul(self.decision),
            policy_set_id: strip_nul(self.policy_set_id),
            policy_set_version_id: strip_nul(self.policy_set_version_id),
            manifest_sha: strip_nul(self.manifest_sha),
            evaluation_status: strip_nul(self.evaluation_status),
            determining_policies_json: stored_json_field(
                "determining_policies_json",
                self.determining_policies_json.as_ref(),
            )?,
            diagnostics_json: stored_json_field(
                "diagnostics_json",
                self.diagnostics_json.as_ref(),
            )?,
            metadata_json: stored_json_field("metadata_json", self.metadata_json.as_ref())?,
            occurred_at: truncate_to_micros(self.occurred_at),
        })
    }
}

impl<'de> Deserialize<'de> for AuditEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireEvent::deserialize(deserializer)?;
        Self::from_wire(wire).map_err(serde::de::Error::custom)
    }
}

fn required(value: String, field: &'static str) -> Result<String, AuditError> {
    if value.is_empty() {
        Err(AuditError::MissingField(field))
    } else {
        Ok(value)
    }
}

/// The stored text of a JSON field: `None` for absent or JSON `null`, else the `jsonb` text of
/// the document with NUL escapes removed.
pub(crate) fn stored_json_text(doc: Option<&JsonText>) -> Result<Option<String>, JsonbError> {
    let Some(doc) = doc else {
        return Ok(None);
    };
    let normalized = jsonb::normalize(&strip_nul_escapes(doc.as_str()))?;
    Ok((normalized != "null").then_some(normalized))
}

fn stored_json_field(
    field: &'static str,
    doc: Option<&JsonText>,
) -> Result<Option<JsonText>, AuditError> {
    let text = stored_json_text(doc).map_err(|source| AuditError::JsonField { field, source })?;
    text.map(JsonText::parse).transpose()
}

/// Truncate (towards the past) to whole microseconds, as Postgres `timestamptz` stores it.
pub(crate) fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = at.nanosecond();
    at.with_nanosecond(nanos - nanos % 1_000).unwrap_or(at)
}

fn parse_occurred_at(value: Option<&str>) -> Result<DateTime<Utc>, AuditError> {
    let text = value
        .filter(|s| !s.is_empty())
        .ok_or(AuditError::MissingField("occurred_at"))?;
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|e| AuditError::InvalidOccurredAt(e.to_string()))?
        .with_timezone(&Utc);
    // Go's zero time.Time: the reference's "occurred_at zero" check.
    if at.year() == 1
        && at.ordinal() == 1
        && at.num_seconds_from_midnight() == 0
        && at.nanosecond() == 0
    {
        return Err(AuditError::ZeroOccurredAt);
    }
    if at.nanosecond() >= 1_000_000_000 {
        return Err(AuditError::InvalidOccurredAt("leap second".into()));
    }
    if truncate_to_micros(at).timestamp_nanos_opt().is_none() {
        return Err(AuditError::OccurredAtOutOfRange);
    }
    Ok(at)
}

/// RFC 3339 in UTC with trailing fractional zeros trimmed (Go's `time.RFC3339Nano`, the
/// reference's encoding), e.g. `2026-05-21T12:00:00Z`, `2026-05-21T12:00:00.5Z`.
fn serialize_rfc3339_nano<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let text = at.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let trimmed = match text.strip_suffix('Z').and_then(|t| t.split_once('.')) {
        Some((whole, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{fraction}Z")
            }
        }
        None => text,
    };
    s.serialize_str(&trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] =
        include_bytes!("../../tests/fixtures/interop/audit-event.allow.valid.json");

    #[test]
    fn fixture_round_trips_without_loss() {
        let event = AuditEvent::parse(FIXTURE).unwrap();
        assert_eq!(event.id, "audit-1");
        assert_eq!(event.zone_id, "zone-1");
        let back = serde_json::to_value(&event).unwrap();
        let original: serde_json::Value = serde_json::from_slice(FIXTURE).unwrap();
        assert_eq!(back, original);
        // Re-parsing the serialised bytes gives the same event, raw JSON text included.
        let again = AuditEvent::parse(&serde_json::to_vec(&event).unwrap()).unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn required_fields_are_typed_errors() {
        type Check = fn(&AuditError) -> bool;
        let cases: [(&str, Check); 8] = [
            ("not json", |e| matches!(e, AuditError::Json(_))),
            (
                r#"{"zone_id":"z","occurred_at":"2026-05-21T12:00:00Z"}"#,
                |e| matches!(e, AuditError::MissingField("id")),
            ),
            (
                r#"{"id":"","zone_id":"z","occurred_at":"2026-05-21T12:00:00Z"}"#,
                |e| matches!(e, AuditError::MissingField("id")),
            ),
            (
                r#"{"id":"\u0000","zone_id":"z","occurred_at":"2026-05-21T12:00:00Z"}"#,
                |e| matches!(e, AuditError::MissingField("id")),
            ),
            (
                r#"{"id":"a","zone_id":null,"occurred_at":"2026-05-21T12:00:00Z"}"#,
                |e| matches!(e, AuditError::MissingField("zone_id")),
            ),
            (r#"{"id":"a","zone_id":"z"}"#, |e| {
                matches!(e, AuditError::MissingField("occurred_at"))
            }),
            (
                r#"{"id":"a","zone_id":"z","occurred_at":"0001-01-01T00:00:00Z"}"#,
                |e| matches!(e, AuditError::ZeroOccurredAt),
            ),
            (
                r#"{"id":"a","zone_id":"z","occurred_at":"yesterday"}"#,
                |e| matches!(e, AuditError::InvalidOccurredAt(_)),
            ),
        ];
        for (input, check) in cases {
            let err = AuditEvent::parse(input.as_bytes()).unwrap_err();
            assert!(check(&err), "{input}: {err}");
        }
        let far = r#"{"id":"a","zone_id":"z","occurred_at":"2300-01-01T00:00:00Z"}"#;
        assert!(matches!(
            AuditEvent::parse(far.as_bytes()),
            Err(AuditError::OccurredAtOutOfRange)
        ));
        let wrong_type = r#"{"id":5,"zone_id":"z","occurred_at":"2026-05-21T12:00:00Z"}"#;
        assert!(matches!(
            AuditEvent::parse(wrong_type.as_bytes()),
            Err(AuditError::Json(_))
        ));
    }

    #[test]
    fn unknown_fields_are_tolerated_and_nulls_are_empty() {
        let input = r#"{"id":"a","zone_id":"z","occurred_at":"2026-05-21T12:00:00+02:00",
            "request_id":null,"extra":{"x":[1,2]},"determining_policies_json":null}"#;
        let event = AuditEvent::parse(input.as_bytes()).unwrap();
        assert_eq!(event.request_id, "");
        assert_eq!(event.determining_policies_json, None);
        assert_eq!(event.occurred_at.to_rfc3339(), "2026-05-21T10:00:00+00:00");
        let wire = serde_json::to_value(&event).unwrap();
        assert_eq!(wire["determining_policies_json"], serde_json::Value::Null);
        assert_eq!(wire["request_id"], "");
        assert!(wire.get("metadata_json").is_none());
        assert!(wire.get("policy_set_id").is_none());
    }

    #[test]
    fn nul_is_stripped_from_strings_and_json_documents() {
        let input = r#"{"id":"a\u0000b","zone_id":"z","occurred_at":"2026-05-21T12:00:00Z",
            "decision":"al\u0000low",
            "metadata_json":{"k\u0000ey":"v\u0000al","n":1.50,"esc":"\\u0000"}}"#;
        let event = AuditEvent::parse(input.as_bytes()).unwrap();
        assert_eq!(event.id, "ab");
        assert_eq!(event.decision, "allow");
        assert_eq!(
            event.metadata_json.as_ref().unwrap().as_str(),
            r#"{"key":"val","n":1.50,"esc":"\\u0000"}"#
        );
        let stored = event.into_stored().unwrap();
        assert_eq!(
            stored.metadata_json.unwrap().as_str(),
            r#"{"n": 1.50, "esc": "\\u0000", "key": "val"}"#
        );
    }

    #[test]
    fn stored_form_truncates_time_and_normalises_json() {
        let input = r#"{"id":"a","zone_id":"z","occurred_at":"2026-05-21T12:00:00.123456789Z",
            "determining_policies_json":[ {"id" : 1e2} ],"diagnostics_json":null,"metadata_json":null}"#;
        let event = AuditEvent::parse(input.as_bytes()).unwrap();
        assert_eq!(
            serde_json::to_value(&event).unwrap()["occurred_at"],
            "2026-05-21T12:00:00.123456789Z"
        );
        let stored = event.into_stored().unwrap();
        assert_eq!(stored.occurred_at.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(
            stored.determining_policies_json.as_ref().unwrap().as_str(),
            r#"[{"id": 100}]"#
        );
        assert_eq!(stored.metadata_json, None);
        assert_eq!(stored.clone().into_stored().unwrap(), stored);
    }

    #[test]
    fn literal_null_document_is_stored_as_absent() {
        let mut event = AuditEvent::parse(FIXTURE).unwrap();
        event.metadata_json = Some(JsonText::parse(" null ").unwrap());
        assert_eq!(event.into_stored().unwrap().metadata_json, None);
    }

    #[test]
    fn json_field_postgres_refuses_is_a_typed_error_in_stored_form() {
        let input = r#"{"id":"a","zone_id":"z","occurred_at":"2026-05-21T12:00:00Z",
            "metadata_json":{"k":"\ud800"}}"#;
        let event = AuditEvent::parse(input.as_bytes()).unwrap();
        assert!(matches!(
            event.into_stored(),
            Err(AuditError::JsonField {
                field: "metadata_json",
                ..
            })
        ));
    }

    #[test]
    fn duplicate_event_fields_are_refused() {
        let input = r#"{"id":"a","id":"b","zone_id":"z","occurred_at":"2026-05-21T12:00:00Z"}"#;
        assert!(matches!(
            AuditEvent::parse(input.as_bytes()),
            Err(AuditError::Json(_))
        ));
    }

    #[test]
    fn deep_json_documents_are_not_cut_by_serde_recursion_limit() {
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        let input = format!(
            r#"{{"id":"a","zone_id":"z","occurred_at":"2026-05-21T12:00:00Z","metadata_json":{deep}}}"#
        );
        let event = AuditEvent::parse(input.as_bytes()).unwrap();
        assert_eq!(
            event.into_stored().unwrap().metadata_json.unwrap().as_str(),
            deep
        );
    }

    #[test]
    fn strip_nul_escapes_respects_escaped_backslashes() {
        assert_eq!(strip_nul_escapes(r#"{"a":"x"}"#), r#"{"a":"x"}"#);
        assert_eq!(
            strip_nul_escapes(r#"["\u0000\\u0000\"\u0000"]"#),
            r#"["\\u0000\""]"#
        );
    }
}
