//! Fuzz (proptest, bounded) of what the consumers read from a stream entry's field map: the
//! `_sig` origin signature check, the revocation message (`RevocationEvent::from_fields`), the
//! audit DLQ entry helpers, the outbox-id dedupe window and entry ids. Arbitrary maps (repeated
//! keys, several `_sig`s, non-hex, empty values) get a typed answer, never a panic; a signed
//! map verifies and any change to it does not.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use caracal_core::audit::ingest::{is_replayable, replay_fields, source_event};
use caracal_core::model::revocation::RevocationEvent;
use caracal_core::streams::dedupe::RecentIds;
use caracal_core::streams::signature::{SIG_FIELD, SigPolicy, StreamKey, sign_fields, verify};
use caracal_core::streams::{EntryId, Fields, names};
use proptest::prelude::*;

const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn key() -> StreamKey {
    StreamKey::from_hex(KEY_HEX).unwrap()
}

/// Field names the consumers look at, plus arbitrary ones.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "zone_id", "reason", "session_id", "agent_session_id", "delegation_edge_id",
            "edge_id", "grant_id", "outbox_id", "dedupe_key", "_sig", "data", "sig", "id",
            "dlq_reason", "source_data", "source_sig", "source_id",
        ]).prop_map(str::to_owned),
        1 => ".{0,10}",
    ]
}

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[0-9a-f]{64}",
        "[0-9A-Fa-fxz]{0,70}",
        ".{0,24}",
        Just("transient_exceeded_max_deliveries:5".to_owned()),
        Just(r#"{"id":"e","zone_id":"z"}"#.to_owned()),
    ]
}

/// A raw field list as Redis may deliver it (repeats allowed).
fn raw_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((field_name(), field_value()), 0..12)
}

fn stream() -> impl Strategy<Value = &'static str> {
    prop::sample::select(names::STREAMS.iter().map(|s| s.name).collect::<Vec<_>>())
}

/// Names and values without the canonical form's separators, so that an added or changed
/// field is guaranteed to change the canonical string.
fn plain() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:-]{1,12}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_maps_get_typed_answers(pairs in raw_pairs(), stream in stream()) {
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // Unsigned or forged: only a map carrying the right tag may verify, and an arbitrary one
        // never does (the chance of a random 64-hex value being the tag is nil).
        prop_assert!(verify(&key(), stream, borrowed.iter().copied()).is_err());
        prop_assert!(SigPolicy::Verify(key()).check(stream, borrowed.iter().copied()).is_err());

        match RevocationEvent::from_fields(borrowed.iter().copied()) {
            Ok(ev) => {
                prop_assert!(!ev.zone_id.is_empty());
                prop_assert!(!ev.anchors().is_empty() || ev.grant_id.as_deref().is_some_and(|g| !g.is_empty()));
                // What it would publish parses back to the same event (less the signature).
                let out = ev.to_fields();
                let back = RevocationEvent::from_fields(out.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
                prop_assert_eq!(back, RevocationEvent { sig: None, ..ev });
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }

        let mut fields = Fields::new();
        for (k, v) in &pairs {
            fields.insert(k.clone(), v.clone());
        }
        let _ = source_event(&fields);
        if let Some(replay) = replay_fields(&fields) {
            prop_assert!(is_replayable(&fields));
            prop_assert!(replay.get("data").is_some_and(|d| !d.trim().is_empty()));
        }

        // A redelivered message with the same outbox_id is recognised as a repeat.
        let mut window = RecentIds::new(16);
        let first = window.accept(&fields);
        let again = window.accept(&fields);
        if fields.get("outbox_id").is_some() {
            prop_assert!(first && !again);
        } else {
            prop_assert!(first && again);
        }
    }

    #[test]
    fn signed_maps_verify_and_every_change_breaks_them(
        pairs in prop::collection::vec((plain(), plain()), 1..8),
        stream in stream(),
        change in 0usize..8,
        new_value in plain(),
        extra in (plain(), plain()),
    ) {
        let mut fields = Fields::new();
        for (k, v) in &pairs {
            if k != SIG_FIELD {
                fields.insert(k.clone(), v.clone());
            }
        }
        prop_assume!(!fields.is_empty());
        sign_fields(&key(), stream, &mut fields);
        prop_assert!(verify(&key(), stream, fields.iter()).is_ok());

        // Another stream: the stream name is signed.
        for other in names::STREAMS.iter().map(|s| s.name).filter(|s| *s != stream).take(1) {
            prop_assert!(verify(&key(), other, fields.iter()).is_err());
        }
        // A changed value.
        let keys: Vec<String> = fields.iter().map(|(k, _)| k.to_owned()).filter(|k| k != SIG_FIELD).collect();
        let target = keys[change % keys.len()].clone();
        if fields.get(&target) != Some(new_value.as_str()) {
            let mut changed = fields.clone();
            changed.insert(target, new_value);
            prop_assert!(verify(&key(), stream, changed.iter()).is_err());
        }
        // An added field.
        if fields.get(&extra.0).is_none() && extra.0 != SIG_FIELD {
            let mut added = fields.clone();
            added.insert(extra.0, extra.1);
            prop_assert!(verify(&key(), stream, added.iter()).is_err());
        }
        // The tag in upper case still verifies (hex either case); truncated it does not.
        let sig = fields.get(SIG_FIELD).unwrap().to_owned();
        let mut upper = fields.clone();
        upper.insert(SIG_FIELD, sig.to_uppercase());
        prop_assert!(verify(&key(), stream, upper.iter()).is_ok());
        let mut short = fields.clone();
        short.insert(SIG_FIELD, sig[..sig.len() - 2].to_owned());
        prop_assert!(verify(&key(), stream, short.iter()).is_err());
    }

    #[test]
    fn entry_ids_parse_or_refuse(text in prop_oneof!["[0-9]{0,21}(-[0-9]{0,21})?", ".{0,24}"]) {
        if let Ok(id) = text.parse::<EntryId>() {
            let shown = id.to_string();
            prop_assert_eq!(shown.parse::<EntryId>().unwrap(), id);
        }
    }
}
