//! Hostile input never panics the verifier and never verifies: random strings, random
//! JWS-shaped strings, and every kind of mutation of a valid mandate.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mandate_support;

use std::sync::OnceLock;

use caracal_core::mandate::{MandateUse, SigningKey, VerificationKeys, mint, verify};
use mandate_support::*;
use proptest::prelude::*;

struct Fixture {
    token: String,
    keys: VerificationKeys,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (key, _) = SigningKey::generate("kid-1").unwrap();
        let keys = VerificationKeys::new([key.verification_key().unwrap()]);
        let token = mint(&claims_for(MandateUse::Gateway, fixture_now(), 900), &key).unwrap();
        Fixture { token, keys }
    })
}

fn check(candidate: &str) -> Result<(), TestCaseError> {
    let f = fixture();
    let got = verify(
        candidate,
        &f.keys,
        &policy_for(MandateUse::Gateway),
        fixture_now(),
    );
    if candidate == f.token {
        prop_assert!(got.is_ok());
    } else {
        prop_assert!(got.is_err(), "a changed token verified: {candidate}");
    }
    Ok(())
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_strings_never_verify(s in any::<String>()) {
        check(&s)?;
    }

    #[test]
    fn jws_shaped_strings_never_verify(
        a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,100}",
    ) {
        check(&format!("{a}.{b}.{c}"))?;
        check(&format!("eyJhbGciOiJFUzI1NiIsImtpZCI6ImtpZC0xIiwidHlwIjoiSldUIn0.{b}.{c}"))?;
    }

    #[test]
    fn mutated_tokens_never_verify(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..ALPHABET.len(), 0..3u8), 1..4),
    ) {
        let mut bytes = fixture().token.clone().into_bytes();
        for (at, ch, op) in edits {
            let ch = ALPHABET[ch];
            match op {
                0 if !bytes.is_empty() => { let i = at.index(bytes.len()); bytes[i] = ch; }
                1 => { let i = at.index(bytes.len() + 1); bytes.insert(i, ch); }
                _ if !bytes.is_empty() => { let i = at.index(bytes.len()); bytes.remove(i); }
                _ => {}
            }
        }
        check(&String::from_utf8(bytes).unwrap())?;
    }

    #[test]
    fn truncations_and_extensions_never_verify(cut in 0usize..400, tail in "[A-Za-z0-9_.-]{1,8}") {
        let t = &fixture().token;
        check(&t[..cut.min(t.len())])?;
        check(&format!("{t}{tail}"))?;
    }
}
