//! Fuzz (proptest, bounded) of the audit event parser (`AuditEvent::parse`) and of the
//! ingestor's entry preparation (`audit::ingest::prepare`): arbitrary bytes, JSON of any
//! shape, and near-valid events are answered with an event or a typed error, never a panic;
//! every accepted event has an id and a zone and a stored form that is idempotent.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use caracal_core::audit::ingest::{FIELD_DATA, FIELD_SIG, prepare};
use caracal_core::audit::{AuditEvent, AuditHmacKey, content_hash};
use caracal_core::streams::Fields;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Any JSON value, a few levels deep, with hostile strings (NULs, surrogate-free unicode).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        Just(Value::String("\u{0}".into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 13] = [
    "id",
    "zone_id",
    "event_type",
    "request_id",
    "decision",
    "policy_set_id",
    "policy_set_version_id",
    "manifest_sha",
    "evaluation_status",
    "determining_policies_json",
    "diagnostics_json",
    "metadata_json",
    "occurred_at",
];

fn valid_event() -> Value {
    json!({
        "id": "evt-1", "zone_id": "zone-1", "event_type": "token_exchange",
        "request_id": "req-1", "decision": "allow", "evaluation_status": "complete",
        "determining_policies_json": ["p1"], "diagnostics_json": null,
        "metadata_json": {"k": 1}, "occurred_at": "2026-01-02T03:04:05.123456789Z"
    })
}

/// Occurred-at texts: valid RFC 3339 with offsets and fractions, and near misses.
fn occurred_at() -> impl Strategy<Value = Value> {
    prop_oneof![
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,12})?(Z|[+-][0-2][0-9]:[0-5][0-9])"
            .prop_map(Value::String),
        ".{0,30}".prop_map(Value::String),
        any_json(),
    ]
}

/// Check an outcome: an accepted event has an id and zone, and its stored form is stable.
fn check(data: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(event) = AuditEvent::parse(data) {
        prop_assert!(!event.id.is_empty());
        prop_assert!(!event.zone_id.is_empty());
        if let Ok(stored) = event.clone().into_stored() {
            prop_assert_eq!(stored.clone().into_stored().unwrap(), stored.clone());
            // The content hash is total on anything storable, and the same for both forms.
            prop_assert_eq!(content_hash(&event).ok(), content_hash(&stored).ok());
        }
    }
    // The ingestor's preparation of the same bytes never panics either, with or without a key.
    let fields = Fields::new().with(FIELD_DATA, String::from_utf8_lossy(data).into_owned());
    let key = AuditHmacKey::from_hex(KEY_HEX).unwrap();
    let _ = prepare(&fields, None);
    prop_assert!(
        prepare(&fields, Some(&key)).is_err(),
        "an unsigned entry passed with a key"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&data)?;
    }

    #[test]
    fn arbitrary_json(value in any_json()) {
        check(value.to_string().as_bytes())?;
    }

    #[test]
    fn near_valid_events(
        edits in prop::collection::vec((0..FIELDS.len(), prop_oneof![any_json(), occurred_at()], any::<bool>()), 1..4),
    ) {
        let mut event = valid_event();
        let obj: &mut Map<String, Value> = event.as_object_mut().unwrap();
        for (field, value, remove) in edits {
            if remove {
                obj.remove(FIELDS[field]);
            } else {
                obj.insert(FIELDS[field].to_owned(), value);
            }
        }
        check(event.to_string().as_bytes())?;
    }

    #[test]
    fn signed_entries_verify_and_altered_ones_do_not(flip in 0usize..200, byte in any::<u8>()) {
        let key = AuditHmacKey::from_hex(KEY_HEX).unwrap();
        let data = valid_event().to_string();
        let sig = caracal_core::audit::sign_payload(&key, data.as_bytes());
        let good = Fields::new().with(FIELD_DATA, data.clone()).with(FIELD_SIG, sig.clone());
        prop_assert!(prepare(&good, Some(&key)).is_ok());
        let mut bytes = data.into_bytes();
        let i = flip % bytes.len();
        if bytes[i] != byte {
            bytes[i] = byte;
            let altered = Fields::new()
                .with(FIELD_DATA, String::from_utf8_lossy(&bytes).into_owned())
                .with(FIELD_SIG, sig);
            prop_assert!(prepare(&altered, Some(&key)).is_err());
        }
    }
}
