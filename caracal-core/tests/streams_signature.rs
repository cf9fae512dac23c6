//! The `_sig` stream origin signature against the reference's interop vectors
//! (`tests/fixtures/interop/stream-sig-canonicalize.vectors.json`), byte for byte, plus the
//! rejection rules of audit-streams §6 items 1–4.

// Test helpers outside `#[test]` functions: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use caracal_core::streams::Fields;
use caracal_core::streams::signature::{
    SIG_FIELD, SigCheck, SigPolicy, SignatureError, StreamKey, canonical, sign, sign_fields, verify,
};
use proptest::prelude::*;

#[derive(serde::Deserialize)]
struct Vector {
    description: String,
    stream: String,
    values: serde_json::Map<String, serde_json::Value>,
    expected_canonical: String,
    hmac_key_hex: String,
    expected_sig_hex: String,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/interop/stream-sig-canonicalize.vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("vectors file");
    serde_json::from_str(&text).expect("vectors parse")
}

/// The vector's values as the canonical form sees them: strings, or null (skipped).
fn values(v: &Vector) -> Vec<(String, Option<String>)> {
    v.values
        .iter()
        .map(|(k, val)| {
            let val = match val {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                other => panic!("vector {:?}: non-string value {other}", v.description),
            };
            (k.clone(), val)
        })
        .collect()
}

const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn key() -> StreamKey {
    StreamKey::from_hex(KEY_HEX).unwrap()
}

#[test]
fn all_four_vectors_reproduce_byte_for_byte() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 4);
    for v in &vectors {
        let vals = values(v);
        let key = StreamKey::from_hex(&v.hmac_key_hex).unwrap();
        assert_eq!(
            canonical(&v.stream, &vals).as_bytes(),
            v.expected_canonical.as_bytes(),
            "{}",
            v.description
        );
        let sig = sign(&key, &v.stream, &vals);
        assert_eq!(sig, v.expected_sig_hex, "{}", v.description);
        // And the vector verifies once its expected signature is attached.
        let mut signed: Vec<(String, Option<String>)> =
            vals.into_iter().filter(|(k, _)| k != SIG_FIELD).collect();
        signed.push((SIG_FIELD.to_owned(), Some(v.expected_sig_hex.clone())));
        assert_eq!(
            verify(&key, &v.stream, &signed),
            Ok(()),
            "{}",
            v.description
        );
    }
}

#[test]
fn vectors_through_fields_as_a_producer_would_send_them() {
    // A producer drops nulls before XADD (the API dispatcher's rule); the signature is the same.
    for v in vectors() {
        let mut fields: Fields = values(&v)
            .into_iter()
            .filter_map(|(k, val)| val.map(|val| (k, val)))
            .filter(|(k, _)| k != SIG_FIELD)
            .collect();
        sign_fields(&key(), &v.stream, &mut fields);
        assert_eq!(fields.get(SIG_FIELD), Some(v.expected_sig_hex.as_str()));
        assert_eq!(verify(&key(), &v.stream, &fields), Ok(()));
    }
}

fn signed(stream: &str) -> Fields {
    let mut f = Fields::new()
        .with("zone_id", "z1")
        .with("session_id", "s1")
        .with("reason", "grant_revoked");
    sign_fields(&key(), stream, &mut f);
    f
}

#[test]
fn a_message_signed_for_one_stream_fails_on_another() {
    let f = signed("caracal.sessions.revoke");
    assert_eq!(verify(&key(), "caracal.sessions.revoke", &f), Ok(()));
    assert_eq!(
        verify(&key(), "caracal.policy.invalidate", &f),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn tampered_missing_empty_and_non_hex_signatures_fail() {
    let stream = "caracal.sessions.revoke";
    let good = signed(stream);

    let mut tampered_field = good.clone();
    tampered_field.insert("session_id", "s2");
    assert_eq!(
        verify(&key(), stream, &tampered_field),
        Err(SignatureError::Mismatch)
    );

    let mut added_field = good.clone();
    added_field.insert("extra", "1");
    assert_eq!(
        verify(&key(), stream, &added_field),
        Err(SignatureError::Mismatch)
    );

    let mut tampered_sig = good.clone();
    let mut sig = tampered_sig.get(SIG_FIELD).unwrap().to_owned();
    let last = if sig.ends_with('0') { "1" } else { "0" };
    sig.replace_range(63.., last);
    tampered_sig.insert(SIG_FIELD, sig);
    assert_eq!(
        verify(&key(), stream, &tampered_sig),
        Err(SignatureError::Mismatch)
    );

    let mut missing = good.clone();
    missing.remove(SIG_FIELD);
    assert_eq!(
        verify(&key(), stream, &missing),
        Err(SignatureError::Missing)
    );

    let null_sig = [("zone_id", Some("z1")), (SIG_FIELD, None)];
    assert_eq!(
        verify(&key(), stream, null_sig),
        Err(SignatureError::Missing)
    );

    let mut empty = good.clone();
    empty.insert(SIG_FIELD, "");
    assert_eq!(verify(&key(), stream, &empty), Err(SignatureError::Empty));

    let mut non_hex = good.clone();
    non_hex.insert(SIG_FIELD, "zz".repeat(32));
    assert_eq!(
        verify(&key(), stream, &non_hex),
        Err(SignatureError::NotHex)
    );

    let other_key = StreamKey::from_bytes(&[9u8; 32]).unwrap();
    assert_eq!(
        verify(&other_key, stream, &good),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn policy_accepts_unsigned_only_without_a_key() {
    let unsigned = Fields::new().with("zone_id", "z1");
    let open = SigPolicy::from_config(None, false).unwrap();
    assert_eq!(open.check("s", &unsigned), Ok(SigCheck::Unchecked));
    assert_eq!(
        SigPolicy::from_config(None, true).unwrap_err(),
        SignatureError::KeyRequired
    );
    let strict = SigPolicy::from_config(Some(key()), true).unwrap();
    assert_eq!(strict.check("s", &unsigned), Err(SignatureError::Missing));
}

fn arb_text() -> impl Strategy<Value = String> {
    // Includes the separators the format does not escape, and non-ASCII.
    prop::string::string_regex("[a-z_=\\n é☃0-9]{0,12}").unwrap()
}

proptest! {
    #[test]
    fn canonical_form_is_independent_of_field_order(
        map in prop::collection::btree_map(arb_text(), prop::option::of(arb_text()), 0..12),
        seed in any::<u64>(),
    ) {
        let pairs: Vec<(String, Option<String>)> = map.into_iter().collect();
        let mut shuffled = pairs.clone();
        // A deterministic shuffle driven by the generated seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let j = usize::try_from(state % (i as u64 + 1)).unwrap();
            shuffled.swap(i, j);
        }
        prop_assert_eq!(canonical("st", &pairs), canonical("st", &shuffled));
        prop_assert_eq!(sign(&key(), "st", &pairs), sign(&key(), "st", &shuffled));
    }

    #[test]
    fn sign_then_verify_round_trips(
        map in prop::collection::btree_map(arb_text(), arb_text(), 1..12),
        stream in arb_text(),
    ) {
        let mut fields: Fields = map.into_iter().collect();
        sign_fields(&key(), &stream, &mut fields);
        prop_assert_eq!(verify(&key(), &stream, &fields), Ok(()));
    }

    #[test]
    fn never_panics_on_random_fields(
        pairs in prop::collection::vec((any::<String>(), prop::option::of(any::<String>())), 0..16),
        stream in any::<String>(),
    ) {
        let _ = canonical(&stream, &pairs);
        let _ = sign(&key(), &stream, &pairs);
        let _ = verify(&key(), &stream, &pairs);
        let _ = SigPolicy::Verify(key()).check(&stream, &pairs);
    }
}
