//! Property tests of the CSS1 envelope: round trip, tamper evidence, and no panics on
//! arbitrary input.

use caracal_core::secrets::{Keyring, SecretError};
use proptest::prelude::*;

const KEK_CURRENT: &str = "8f3a1c5e9b2d4f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
const KEK_PREVIOUS: &str = "2b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfe";

// Fixture helper: constant, valid keys; a failure here should fail the test loudly.
#[allow(clippy::unwrap_used)]
fn ring() -> Keyring {
    Keyring::from_hex(KEK_CURRENT, Some(KEK_PREVIOUS)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any value sealed for any non-empty purpose opens for that purpose, and only that one.
    #[test]
    fn seal_open_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
        purpose in "\\PC{1,64}",
        other in "\\PC{1,64}",
    ) {
        let r = ring();
        let env = r.seal(&purpose, &plaintext).unwrap();
        prop_assert_eq!(env.len(), 100 + plaintext.len());
        prop_assert_eq!(r.open(&purpose, &env).unwrap(), plaintext);
        if other != purpose {
            prop_assert_eq!(r.open(&other, &env), Err(SecretError::ValueRejected));
        }
    }

    /// Flipping any single bit anywhere in an envelope makes it fail to open.
    #[test]
    fn any_single_bit_flip_fails(
        plaintext in proptest::collection::vec(any::<u8>(), 0..128),
        bit in any::<proptest::sample::Index>(),
    ) {
        let r = ring();
        let mut env = r.seal("caracal/secrets/zoneSigningKey", &plaintext).unwrap();
        let i = bit.index(env.len() * 8);
        env[i / 8] ^= 1 << (i % 8);
        prop_assert!(r.open("caracal/secrets/zoneSigningKey", &env).is_err());
    }

    /// Arbitrary bytes never panic, and never open.
    #[test]
    fn open_never_panics_on_random_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        purpose in "\\PC{0,16}",
    ) {
        prop_assert!(ring().open(&purpose, &bytes).is_err());
    }

    /// Random bytes behind a valid magic and a known kekId reach the AEAD checks, which refuse
    /// them without panicking.
    #[test]
    fn open_never_panics_past_the_header(
        tail in proptest::collection::vec(any::<u8>(), 0..256),
        use_previous in any::<bool>(),
    ) {
        let r = ring();
        let id = if use_previous { r.previous_id().unwrap() } else { r.current_id() };
        let mut env = b"CSS1".to_vec();
        env.extend_from_slice(id.as_bytes());
        env.extend_from_slice(&tail);
        let got = r.open("zones/z/providers/p/secretConfig", &env);
        prop_assert!(matches!(
            got,
            Err(SecretError::EnvelopeTooShort) | Err(SecretError::DataKeyRejected)
        ), "{:?}", got);
    }
}
