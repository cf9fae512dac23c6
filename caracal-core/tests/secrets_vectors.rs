//! Cross-implementation vectors for the secrets module, through the public API.
//!
//! `fixtures/secrets/vectors.json` is produced by `fixtures/secrets/make_vectors.py` with
//! Python `argon2-cffi` and `cryptography` (OpenSSL), which share no code with the Rust crates:
//! accepting these vectors proves our Argon2id parameters and stored format, and our CSS1 byte
//! layout, match an independent implementation of the reference's description.

use std::sync::Arc;

use caracal_core::clock::FakeClock;
use caracal_core::secrets::{
    Kek, Keyring, PROVIDER_ACCESS_TOKEN_AAD, SecretError, VerifiedSecretCache,
    ZONE_SIGNING_KEY_AAD, envelope_kek_id, verify_client_secret,
};

const VECTORS: &str = include_str!("fixtures/secrets/vectors.json");

// Fixture helpers: a broken fixture should fail the test loudly.
#[allow(clippy::unwrap_used)]
fn vectors() -> serde_json::Value {
    serde_json::from_str(VECTORS).unwrap()
}

#[allow(clippy::unwrap_used)]
fn unhex(v: &serde_json::Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn css1_envelopes_from_python_cryptography_open() {
    let v = vectors();
    let cases = v["css1"].as_array().unwrap();
    assert!(cases.len() >= 3);
    for case in cases {
        let kek_hex = case["kek_hex"].as_str().unwrap();
        let purpose = case["purpose"].as_str().unwrap();
        let plaintext = unhex(&case["plaintext_hex"]);
        let envelope = unhex(&case["envelope_hex"]);

        let ring = Keyring::from_hex(kek_hex, None).unwrap();
        assert_eq!(
            ring.open(purpose, &envelope).unwrap(),
            plaintext,
            "{purpose}"
        );
        assert_eq!(envelope_kek_id(&envelope).unwrap(), ring.current_id());

        // The same envelope routes to the KEK when it is only the previous key of a ring...
        let other = Kek::generate_hex().unwrap();
        let rotated = Keyring::from_hex(&other, Some(kek_hex)).unwrap();
        assert_eq!(rotated.open(purpose, &envelope).unwrap(), plaintext);
        // ...and is refused under another purpose.
        let wrong = if purpose == ZONE_SIGNING_KEY_AAD {
            PROVIDER_ACCESS_TOKEN_AAD
        } else {
            ZONE_SIGNING_KEY_AAD
        };
        assert_eq!(ring.open(wrong, &envelope), Err(SecretError::ValueRejected));

        // Our own seal of the same value has the same shape and opens.
        let ours = ring.seal(purpose, &plaintext).unwrap();
        assert_eq!(ours.len(), envelope.len());
        assert_eq!(ours[..12], envelope[..12], "magic and kekId agree");
        assert_eq!(ring.open(purpose, &ours).unwrap(), plaintext);
    }
}

#[test]
fn argon2id_vector_from_argon2_cffi_verifies_directly_and_through_the_cache() {
    let v = vectors();
    let secret = v["argon2id"]["secret"].as_str().unwrap();
    let stored = v["argon2id"]["stored"].as_str().unwrap();
    assert!(verify_client_secret(stored, secret));

    let cache = Arc::new(VerifiedSecretCache::new(Arc::new(
        FakeClock::at_fixture_epoch(),
    )));
    assert!(cache.verify(stored, secret));
    // Shared across threads, every later check is a hit: no further derivation.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let cache = Arc::clone(&cache);
            let (stored, secret) = (stored.to_owned(), secret.to_owned());
            std::thread::spawn(move || (0..50).all(|_| cache.verify(&stored, &secret)))
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
    assert_eq!(cache.derivations(), 1);
}
