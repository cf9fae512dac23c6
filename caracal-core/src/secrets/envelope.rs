//! The CSS1 envelope: values sealed under a per-value data key, wrapped under the KEK.
//!
//! ## Wire format (byte-compatible with the reference, §7.6)
//!
//! ```text
//! offset  len   field
//! 0       4     magic "CSS1"
//! 4       8     kekId    = SHA-256(kek)[0..8]
//! 12      12    dekNonce
//! 24      48    ChaCha20-Poly1305(kek, dekNonce, dek, aad = "caracal.css1.dek")  (32 + 16 tag)
//! 72      12    valNonce
//! 84      n+16  ChaCha20-Poly1305(dek, valNonce, value, aad = <purpose>)
//! ```
//!
//! The smallest envelope (empty value) is 100 bytes. The DEK and both nonces are fresh random
//! per envelope, so a (key, nonce) pair never repeats in practice: each DEK encrypts exactly one
//! value, and the KEK encrypts one DEK per seal under a random 96-bit nonce.
//!
//! ## Why a purpose AAD
//!
//! The value's AAD names where it lives (`caracal/secrets/zoneSigningKey`, a Secret Store
//! `ref`, ...). An attacker with write access to the database cannot move a sealed blob to a
//! place where it would be decrypted for another use: it fails to open there.
//!
//! ## Rotation
//!
//! The 8-byte kekId routes an envelope to the KEK that sealed it. During a rotation the
//! [`Keyring`] holds the new KEK as current and the old one as previous: reads work for both,
//! writes use only the current one, and a migration job calls [`Keyring::reseal`] on every row
//! whose envelope is not yet under the current KEK ([`Keyring::is_current`]). Once none is
//! left, the previous KEK can be dropped.

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use super::{SecretError, WeakKekReason};

/// The magic that opens every CSS1 envelope.
pub const MAGIC: &[u8; 4] = b"CSS1";
/// AAD of the wrapped data key, fixed by the format.
pub const DEK_AAD: &[u8] = b"caracal.css1.dek";
/// Length of a KEK, a DEK and a ChaCha20-Poly1305 key.
pub const KEY_LEN: usize = 32;
/// Length of the KEK id in an envelope.
pub const KEK_ID_LEN: usize = 8;
/// Length of a ChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 12;
/// Length of a Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes before the value ciphertext: magic, kekId, dekNonce, wrapped DEK, valNonce (84).
pub const HEADER_LEN: usize = MAGIC.len() + KEK_ID_LEN + NONCE_LEN + KEY_LEN + TAG_LEN + NONCE_LEN;
/// The smallest valid envelope (an empty value): 100 bytes.
pub const MIN_ENVELOPE_LEN: usize = HEADER_LEN + TAG_LEN;
/// The largest value ChaCha20-Poly1305 can seal under one nonce (2^38 - 64 bytes).
pub const MAX_PLAINTEXT_LEN: u64 = (1 << 38) - 64;

/// Purpose of a zone's sealed ES256 signing key (PEM), reference §5.1.
pub const ZONE_SIGNING_KEY_AAD: &str = "caracal/secrets/zoneSigningKey";
/// Purpose of a provider connection's sealed OAuth access token.
pub const PROVIDER_ACCESS_TOKEN_AAD: &str = "caracal/providerConnections/accessToken";
/// Purpose of a provider connection's sealed OAuth refresh token.
pub const PROVIDER_REFRESH_TOKEN_AAD: &str = "caracal/providerConnections/refreshToken";

/// The Secret Store `ref` of a provider's credential document
/// (`zones/<zone>/providers/<provider>/secretConfig`).
///
/// Secret Store values are sealed with their `ref` as the purpose, so pass the returned string
/// straight to [`Keyring::seal`] and [`Keyring::open`].
pub fn provider_secret_config_ref(
    zone_id: impl fmt::Display,
    provider_id: impl fmt::Display,
) -> String {
    format!("zones/{zone_id}/providers/{provider_id}/secretConfig")
}

/// The public identifier of a KEK: the first 8 bytes of SHA-256 of the key.
///
/// It is written in clear into every envelope, so it is safe to log and display (as hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KekId([u8; KEK_ID_LEN]);

impl KekId {
    /// The raw 8 bytes.
    pub fn as_bytes(&self) -> &[u8; KEK_ID_LEN] {
        &self.0
    }

    fn of(key: &[u8; KEY_LEN]) -> Self {
        let digest = Sha256::digest(key);
        let mut id = [0u8; KEK_ID_LEN];
        id.copy_from_slice(&digest[..KEK_ID_LEN]);
        Self(id)
    }
}

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KekId({self})")
    }
}

/// Why `key` is too weak to be a KEK, or `None` if it passes.
///
/// The rules, in the order they are checked (a superset of the reference's):
///
/// 1. **All bytes equal**: all zero ([`WeakKekReason::AllZeros`]) or any other single byte
///    repeated ([`WeakKekReason::RepeatedByte`]). As the reference.
/// 2. **Sequential**: every byte is the previous one plus one, or every byte is the previous
///    one minus one ([`WeakKekReason::Sequential`]), e.g. `000102…1f` or `1f1e…00`. The
///    reference compares without wrap-around; we compare modulo 256, so `f0f1…ff00…0f` is also
///    refused (an improvement: it is just as guessable).
/// 3. **Repeating pattern**: the second 16 bytes equal the first 16
///    ([`WeakKekReason::RepeatingPattern`]). This is every key of period 1, 2, 4, 8 or 16.
///    The reference refuses only period 2 (alternating two bytes, `abab…`); we also refuse
///    `deadbeef` × 8 and the like (an improvement; a random key has this property with
///    probability 2^-128).
///
/// A random 32-byte key fails any rule with negligible probability, so the rules only catch
/// hand-typed placeholders. They run once, at startup, on the configured key.
pub fn weak_kek_reason(key: &[u8; KEY_LEN]) -> Option<WeakKekReason> {
    let first = key[0];
    if key.iter().all(|&b| b == first) {
        return Some(if first == 0 {
            WeakKekReason::AllZeros
        } else {
            WeakKekReason::RepeatedByte
        });
    }
    let ascending = key.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
    let descending = key.windows(2).all(|w| w[1] == w[0].wrapping_sub(1));
    if ascending || descending {
        return Some(WeakKekReason::Sequential);
    }
    if key[..KEY_LEN / 2] == key[KEY_LEN / 2..] {
        return Some(WeakKekReason::RepeatingPattern);
    }
    None
}

/// A key-encryption key: 32 bytes that wrap every envelope's data key.
///
/// Parsed from exactly 64 hex characters (`SECRET_STORE_KEK`); weak patterns are refused (see
/// [`weak_kek_reason`] for the exact rules). The key bytes live only inside the keyed cipher,
/// which zeroes them on drop; `Debug` shows only the public [`KekId`]. There is deliberately no
/// `Clone` and no accessor for the key bytes.
pub struct Kek {
    aead: ChaCha20Poly1305,
    id: KekId,
}

impl Kek {
    /// Parse a KEK from 64 hex characters (either case), refusing weak patterns.
    ///
    /// The caller trims the configuration value (the `_FILE` indirection trims trailing
    /// whitespace); anything but 64 hex digits here is [`SecretError::KekFormat`].
    pub fn from_hex(hex_key: &str) -> Result<Self, SecretError> {
        if hex_key.len() != KEY_LEN * 2 {
            return Err(SecretError::KekFormat);
        }
        let mut key = [0u8; KEY_LEN];
        hex::decode_to_slice(hex_key, &mut key).map_err(|_| SecretError::KekFormat)?;
        let kek = Self::from_bytes(&key);
        // Best effort: the cipher holds (and zeroes) its own copy; do not leave this one around.
        key.fill(0);
        kek
    }

    /// A KEK from raw bytes, refusing weak patterns.
    pub fn from_bytes(key: &[u8; KEY_LEN]) -> Result<Self, SecretError> {
        if let Some(reason) = weak_kek_reason(key) {
            return Err(SecretError::WeakKek(reason));
        }
        Ok(Self {
            aead: ChaCha20Poly1305::new(Key::from_slice(key)),
            id: KekId::of(key),
        })
    }

    /// A fresh random KEK as 64 lower-case hex characters (for `caracal keys` and dev mode),
    /// from the OS RNG. The caller stores it; a lost KEK cannot be regenerated.
    pub fn generate_hex() -> Result<String, SecretError> {
        Self::generate_hex_with_rng(&mut OsRng)
    }

    /// [`Kek::generate_hex`] with an injected RNG.
    pub fn generate_hex_with_rng(
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<String, SecretError> {
        // A random key is weak with probability about 2^-128; retrying a few times only guards
        // against a broken generator, which then fails closed.
        for _ in 0..4 {
            let mut key = [0u8; KEY_LEN];
            rng.try_fill_bytes(&mut key).map_err(|_| SecretError::Rng)?;
            if weak_kek_reason(&key).is_none() {
                return Ok(hex::encode(key));
            }
        }
        Err(SecretError::Rng)
    }

    /// This KEK's public id (the 8 bytes written into each envelope it seals).
    pub fn id(&self) -> KekId {
        self.id
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The fields of an envelope, borrowed from it. Parsing checks only lengths and the magic.
struct Parts<'a> {
    kek_id: KekId,
    dek_nonce: &'a [u8; NONCE_LEN],
    dek_ct: &'a [u8; KEY_LEN],
    dek_tag: &'a [u8; TAG_LEN],
    val_nonce: &'a [u8; NONCE_LEN],
    val_ct: &'a [u8],
    val_tag: &'a [u8; TAG_LEN],
}

fn parse(envelope: &[u8]) -> Result<Parts<'_>, SecretError> {
    if envelope.len() < MIN_ENVELOPE_LEN {
        return Err(SecretError::EnvelopeTooShort);
    }
    // INVARIANT: the length check above makes every split below succeed; the `ok_or`s only
    // keep the code free of indexing that could panic.
    let short = SecretError::EnvelopeTooShort;
    let (magic, rest) = envelope.split_first_chunk::<4>().ok_or(short.clone())?;
    if magic != MAGIC {
        return Err(SecretError::UnknownFormat);
    }
    let (kek_id, rest) = rest
        .split_first_chunk::<KEK_ID_LEN>()
        .ok_or(short.clone())?;
    let (dek_nonce, rest) = rest.split_first_chunk::<NONCE_LEN>().ok_or(short.clone())?;
    let (dek_ct, rest) = rest.split_first_chunk::<KEY_LEN>().ok_or(short.clone())?;
    let (dek_tag, rest) = rest.split_first_chunk::<TAG_LEN>().ok_or(short.clone())?;
    let (val_nonce, rest) = rest.split_first_chunk::<NONCE_LEN>().ok_or(short.clone())?;
    let (val_ct, val_tag) = rest.split_last_chunk::<TAG_LEN>().ok_or(short)?;
    Ok(Parts {
        kek_id: KekId(*kek_id),
        dek_nonce,
        dek_ct,
        dek_tag,
        val_nonce,
        val_ct,
        val_tag,
    })
}

/// The id of the KEK an envelope was sealed under, read without decrypting (for rotation jobs
/// and diagnostics).
pub fn envelope_kek_id(envelope: &[u8]) -> Result<KekId, SecretError> {
    parse(envelope).map(|p| p.kek_id)
}

fn check_purpose(purpose: &str) -> Result<(), SecretError> {
    // An empty AAD binds the value to nothing; refuse it rather than seal a movable blob.
    if purpose.is_empty() {
        Err(SecretError::EmptyPurpose)
    } else {
        Ok(())
    }
}

fn seal_under(
    kek: &Kek,
    rng: &mut (impl RngCore + CryptoRng),
    purpose: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, SecretError> {
    check_purpose(purpose)?;
    let too_large = SecretError::PlaintextTooLarge;
    if u64::try_from(plaintext.len()).map_or(true, |n| n > MAX_PLAINTEXT_LEN) {
        return Err(too_large);
    }
    let capacity = MIN_ENVELOPE_LEN
        .checked_add(plaintext.len())
        .ok_or(too_large.clone())?;

    let mut dek = [0u8; KEY_LEN];
    let mut dek_nonce = [0u8; NONCE_LEN];
    let mut val_nonce = [0u8; NONCE_LEN];
    for buf in [&mut dek[..], &mut dek_nonce[..], &mut val_nonce[..]] {
        rng.try_fill_bytes(buf).map_err(|_| SecretError::Rng)?;
    }
    let dek_aead = ChaCha20Poly1305::new(Key::from_slice(&dek));

    // Encrypt in place inside the output buffer: one allocation, no intermediate copies of the
    // DEK or the plaintext.
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(kek.id.as_bytes());
    out.extend_from_slice(&dek_nonce);
    let start = out.len();
    out.extend_from_slice(&dek);
    dek.fill(0);
    let dek_tag = kek
        .aead
        .encrypt_in_place_detached(Nonce::from_slice(&dek_nonce), DEK_AAD, &mut out[start..])
        .map_err(|_| too_large.clone())?;
    out.extend_from_slice(&dek_tag);
    out.extend_from_slice(&val_nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let val_tag = dek_aead
        .encrypt_in_place_detached(
            Nonce::from_slice(&val_nonce),
            purpose.as_bytes(),
            &mut out[start..],
        )
        .map_err(|_| too_large)?;
    out.extend_from_slice(&val_tag);
    Ok(out)
}

fn open_under(kek: &Kek, parts: &Parts<'_>, purpose: &str) -> Result<Vec<u8>, SecretError> {
    let mut dek = *parts.dek_ct;
    kek.aead
        .decrypt_in_place_detached(
            Nonce::from_slice(parts.dek_nonce),
            DEK_AAD,
            &mut dek,
            Tag::from_slice(parts.dek_tag),
        )
        .map_err(|_| SecretError::DataKeyRejected)?;
    let dek_aead = ChaCha20Poly1305::new(Key::from_slice(&dek));
    dek.fill(0);
    let mut out = parts.val_ct.to_vec();
    dek_aead
        .decrypt_in_place_detached(
            Nonce::from_slice(parts.val_nonce),
            purpose.as_bytes(),
            &mut out,
            Tag::from_slice(parts.val_tag),
        )
        .map_err(|_| SecretError::ValueRejected)?;
    Ok(out)
}

/// The Secret Store keyring: the current KEK, and the previous one during a rotation.
///
/// [`seal`](Self::seal) always uses the current KEK with a fresh DEK and fresh nonces;
/// [`open`](Self::open) routes by the envelope's kekId to the current, then the previous KEK.
/// `Debug` shows only the key ids.
#[derive(Debug)]
pub struct Keyring {
    current: Kek,
    previous: Option<Kek>,
}

impl Keyring {
    /// A keyring sealing under `current` and also opening envelopes of `previous`.
    pub fn new(current: Kek, previous: Option<Kek>) -> Self {
        Self { current, previous }
    }

    /// A keyring from `SECRET_STORE_KEK` and, if set, `SECRET_STORE_KEK_PREVIOUS` (hex).
    ///
    /// Pass `None` for an unset or empty previous key; `Some` must be a valid KEK.
    pub fn from_hex(current: &str, previous: Option<&str>) -> Result<Self, SecretError> {
        let current = Kek::from_hex(current)?;
        let previous = previous.map(Kek::from_hex).transpose()?;
        Ok(Self::new(current, previous))
    }

    /// The id of the KEK new envelopes are sealed under.
    pub fn current_id(&self) -> KekId {
        self.current.id
    }

    /// The id of the previous KEK, if the ring is mid-rotation.
    pub fn previous_id(&self) -> Option<KekId> {
        self.previous.as_ref().map(|k| k.id)
    }

    /// Seal `plaintext` for `purpose` under the current KEK, with randomness from the OS.
    ///
    /// `purpose` is the AAD binding the value to its location: one of the `*_AAD` constants of
    /// this module or a Secret Store `ref` (see [`provider_secret_config_ref`]). It must not be
    /// empty.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, SecretError> {
        self.seal_with_rng(&mut OsRng, purpose, plaintext)
    }

    /// [`seal`](Self::seal) with an injected RNG for the DEK and nonces (deterministic vectors).
    pub fn seal_with_rng(
        &self,
        rng: &mut (impl RngCore + CryptoRng),
        purpose: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SecretError> {
        seal_under(&self.current, rng, purpose, plaintext)
    }

    /// Open an envelope sealed for `purpose` under the current or the previous KEK.
    ///
    /// Errors, in the order checked: [`SecretError::EmptyPurpose`],
    /// [`SecretError::EnvelopeTooShort`], [`SecretError::UnknownFormat`] (bad magic),
    /// [`SecretError::UnknownKek`], [`SecretError::DataKeyRejected`] (tampered key block),
    /// [`SecretError::ValueRejected`] (wrong purpose, tampered or truncated value).
    pub fn open(&self, purpose: &str, envelope: &[u8]) -> Result<Vec<u8>, SecretError> {
        check_purpose(purpose)?;
        let parts = parse(envelope)?;
        // kekIds are public (written in clear in the envelope), so comparing them need not be
        // constant time.
        let kek = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|k| k.id == parts.kek_id)
            .ok_or(SecretError::UnknownKek)?;
        open_under(kek, &parts, purpose)
    }

    /// Whether `envelope` is already sealed under the current KEK (so a rotation job can skip
    /// it without decrypting). Fails only if `envelope` is not a CSS1 envelope at all.
    pub fn is_current(&self, envelope: &[u8]) -> Result<bool, SecretError> {
        Ok(envelope_kek_id(envelope)? == self.current.id)
    }

    /// Open `envelope` with the ring and seal its value again under the current KEK, with a
    /// fresh DEK and nonces: the step a KEK-rotation job runs on each row.
    ///
    /// The purpose is checked on the way through, so a row whose blob does not belong to it
    /// fails here instead of being silently re-bound.
    pub fn reseal(&self, purpose: &str, envelope: &[u8]) -> Result<Vec<u8>, SecretError> {
        let mut plaintext = self.open(purpose, envelope)?;
        let sealed = self.seal(purpose, &plaintext);
        // Best effort: do not leave the opened value in freed memory longer than needed.
        plaintext.fill(0);
        sealed
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const KEK_A: &str = "8f3a1c5e9b2d4f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
    const KEK_B: &str = "2b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfe";

    fn ring(current: &str, previous: Option<&str>) -> Keyring {
        Keyring::from_hex(current, previous).unwrap()
    }

    fn bytes(f: impl Fn(usize) -> u8) -> [u8; KEY_LEN] {
        std::array::from_fn(f)
    }

    #[test]
    fn kek_parsing_accepts_exactly_64_hex_chars() {
        assert!(Kek::from_hex(KEK_A).is_ok());
        assert!(Kek::from_hex(&KEK_A.to_uppercase()).is_ok());
        for bad in [
            "",
            &KEK_A[..62],
            &KEK_A[..63],
            &format!("{KEK_A}0"),
            &format!("{KEK_A}00"),
            &format!("{}zz", &KEK_A[..62]),
            &format!(" {}", &KEK_A[..63]),
            &format!("0x{}", &KEK_A[..62]),
        ] {
            assert_eq!(
                Kek::from_hex(bad).unwrap_err(),
                SecretError::KekFormat,
                "{bad:?}"
            );
        }
        // Non-ASCII input of the right byte length must not panic on a char boundary.
        let multibyte = "é".repeat(32);
        assert_eq!(multibyte.len(), 64);
        assert_eq!(
            Kek::from_hex(&multibyte).unwrap_err(),
            SecretError::KekFormat
        );
    }

    #[test]
    fn weak_keks_are_refused_as_the_reference_does_and_a_little_more() {
        use WeakKekReason::*;
        let cases: Vec<([u8; KEY_LEN], WeakKekReason)> = vec![
            // The reference's rules.
            ([0; KEY_LEN], AllZeros),
            ([0xff; KEY_LEN], RepeatedByte),
            ([0x41; KEY_LEN], RepeatedByte),
            (bytes(|i| i as u8), Sequential),        // 00 01 .. 1f
            (bytes(|i| 0x10 + i as u8), Sequential), // 10 11 .. 2f
            (bytes(|i| 0x1f - i as u8), Sequential), // 1f 1e .. 00
            (bytes(|i| 0xff - i as u8), Sequential), // ff fe .. e0
            (
                bytes(|i| if i % 2 == 0 { 0xab } else { 0xcd }),
                RepeatingPattern,
            ),
            (
                bytes(|i| if i % 2 == 0 { 0x00 } else { 0xff }),
                RepeatingPattern,
            ),
            // Ours beyond the reference: wrap-around sequences and longer periods.
            (bytes(|i| 0xf0u8.wrapping_add(i as u8)), Sequential), // f0 .. ff 00 .. 0f
            (bytes(|i| 0x05u8.wrapping_sub(i as u8)), Sequential), // 05 .. 00 ff .. e6
            (bytes(|i| [0xde, 0xad, 0xbe, 0xef][i % 4]), RepeatingPattern),
            (bytes(|i| (i % 8) as u8 * 17 + 3), RepeatingPattern),
            (
                bytes(|i| ((i % 16) as u8).wrapping_mul(29) ^ 0x5a),
                RepeatingPattern,
            ),
        ];
        for (key, reason) in cases {
            assert_eq!(weak_kek_reason(&key), Some(reason), "{}", hex::encode(key));
            assert_eq!(
                Kek::from_bytes(&key).unwrap_err(),
                SecretError::WeakKek(reason)
            );
            assert_eq!(
                Kek::from_hex(&hex::encode(key)).unwrap_err(),
                SecretError::WeakKek(reason)
            );
        }
        // Near misses pass: one byte off each pattern.
        let mut near_seq = bytes(|i| i as u8);
        near_seq[31] = 0x00;
        let mut near_alt = bytes(|i| if i % 2 == 0 { 0xab } else { 0xcd });
        near_alt[17] = 0x00;
        let mut near_same = [0x41; KEY_LEN];
        near_same[0] = 0x42;
        for key in [near_seq, near_alt, near_same] {
            assert_eq!(weak_kek_reason(&key), None, "{}", hex::encode(key));
        }
        // The error text says why without printing the key.
        let msg = SecretError::WeakKek(Sequential).to_string();
        assert_eq!(msg, "KEK must not use a sequential byte pattern");
    }

    #[test]
    fn debug_never_prints_key_material() {
        let kek = Kek::from_hex(KEK_A).unwrap();
        let id_hex = hex::encode(&Sha256::digest(hex::decode(KEK_A).unwrap())[..8]);
        assert_eq!(kek.id().to_string(), id_hex);
        let shown = format!("{kek:?} {:?}", ring(KEK_A, Some(KEK_B)));
        assert!(shown.contains(&id_hex));
        for key in [KEK_A, KEK_B] {
            assert!(!shown.to_lowercase().contains(&key[..16]), "{shown}");
        }
    }

    #[test]
    fn generated_keks_parse() {
        let hex_key = Kek::generate_hex_with_rng(&mut StdRng::seed_from_u64(3)).unwrap();
        assert_eq!(hex_key.len(), 64);
        assert!(Kek::from_hex(&hex_key).is_ok());
        assert_ne!(Kek::generate_hex().unwrap(), Kek::generate_hex().unwrap());
    }

    #[test]
    fn layout_is_the_reference_layout() {
        let r = ring(KEK_A, None);
        let pt = b"hello";
        let env = r.seal(ZONE_SIGNING_KEY_AAD, pt).unwrap();
        assert_eq!(env.len(), 4 + 8 + 12 + 48 + 12 + pt.len() + 16);
        assert_eq!(&env[..4], b"CSS1");
        let id = Sha256::digest(hex::decode(KEK_A).unwrap());
        assert_eq!(&env[4..12], &id[..8]);
        assert_eq!(r.open(ZONE_SIGNING_KEY_AAD, &env).unwrap(), pt);
        assert_eq!(envelope_kek_id(&env).unwrap(), r.current_id());
        assert_eq!((HEADER_LEN, MIN_ENVELOPE_LEN), (84, 100));
    }

    #[test]
    fn every_seal_is_fresh_and_seeded_seal_is_deterministic() {
        let r = ring(KEK_A, None);
        let a = r.seal(PROVIDER_ACCESS_TOKEN_AAD, b"tok").unwrap();
        let b = r.seal(PROVIDER_ACCESS_TOKEN_AAD, b"tok").unwrap();
        assert_ne!(a[12..24], b[12..24], "fresh DEK nonce");
        assert_ne!(a[24..72], b[24..72], "fresh wrapped DEK");
        assert_ne!(a[72..84], b[72..84], "fresh value nonce");
        let seeded = |seed| {
            r.seal_with_rng(
                &mut StdRng::seed_from_u64(seed),
                PROVIDER_ACCESS_TOKEN_AAD,
                b"tok",
            )
            .unwrap()
        };
        assert_eq!(seeded(9), seeded(9));
        assert_ne!(seeded(9), seeded(10));
    }

    #[test]
    fn open_fails_with_a_typed_error_for_each_kind_of_damage() {
        let r = ring(KEK_A, None);
        let purpose = provider_secret_config_ref("zone-1", "prov-1");
        assert_eq!(purpose, "zones/zone-1/providers/prov-1/secretConfig");
        let env = r.seal(&purpose, b"{\"api_key\":\"k\"}").unwrap();

        // Wrong purpose, including one that differs only in its last byte.
        let other = provider_secret_config_ref("zone-1", "prov-2");
        assert_eq!(r.open(&other, &env), Err(SecretError::ValueRejected));
        assert_eq!(
            r.open(PROVIDER_REFRESH_TOKEN_AAD, &env),
            Err(SecretError::ValueRejected)
        );
        assert_eq!(r.open("", &env), Err(SecretError::EmptyPurpose));
        assert_eq!(r.seal("", b"x"), Err(SecretError::EmptyPurpose));

        // Unknown KEK.
        assert_eq!(
            ring(KEK_B, None).open(&purpose, &env),
            Err(SecretError::UnknownKek)
        );

        // Truncation: below the minimum, and inside the value block.
        assert_eq!(
            r.open(&purpose, &env[..99]),
            Err(SecretError::EnvelopeTooShort)
        );
        assert_eq!(r.open(&purpose, &[]), Err(SecretError::EnvelopeTooShort));
        assert_eq!(
            r.open(&purpose, &env[..env.len() - 1]),
            Err(SecretError::ValueRejected)
        );
        assert_eq!(
            r.open(&purpose, &env[..100]),
            Err(SecretError::ValueRejected)
        );

        // Bad magic.
        let mut bad = env.clone();
        bad[3] = b'2';
        assert_eq!(r.open(&purpose, &bad), Err(SecretError::UnknownFormat));

        // Tampering: the wrapped key block, then the value block.
        for (i, want) in [
            (12, SecretError::DataKeyRejected), // dekNonce
            (30, SecretError::DataKeyRejected), // wrapped DEK
            (71, SecretError::DataKeyRejected), // DEK tag
            (72, SecretError::ValueRejected),   // valNonce
            (90, SecretError::ValueRejected),   // value ciphertext
        ] {
            let mut t = env.clone();
            t[i] ^= 0x01;
            assert_eq!(r.open(&purpose, &t), Err(want), "byte {i}");
        }
        let mut t = env.clone();
        let last = t.len() - 1;
        t[last] ^= 0x80;
        assert_eq!(r.open(&purpose, &t), Err(SecretError::ValueRejected));
        let mut extended = env.clone();
        extended.push(0);
        assert_eq!(r.open(&purpose, &extended), Err(SecretError::ValueRejected));

        // Errors never carry material.
        for e in [SecretError::ValueRejected, SecretError::UnknownKek] {
            assert!(!e.to_string().contains("api_key"));
        }
    }

    #[test]
    fn rotation_routes_by_kek_id_and_reseal_moves_to_the_current_kek() {
        let before = ring(KEK_A, None);
        let env = before.seal(ZONE_SIGNING_KEY_AAD, b"pem").unwrap();

        // Rotation: B is current, A previous. Old envelopes still open.
        let during = ring(KEK_B, Some(KEK_A));
        assert_eq!(during.previous_id(), Some(before.current_id()));
        assert!(!during.is_current(&env).unwrap());
        assert_eq!(during.open(ZONE_SIGNING_KEY_AAD, &env).unwrap(), b"pem");

        // New envelopes go under B only.
        let fresh = during.seal(ZONE_SIGNING_KEY_AAD, b"new").unwrap();
        assert!(during.is_current(&fresh).unwrap());
        assert_eq!(
            before.open(ZONE_SIGNING_KEY_AAD, &fresh),
            Err(SecretError::UnknownKek)
        );

        // Reseal moves the old row to B; the ring without A opens it.
        let moved = during.reseal(ZONE_SIGNING_KEY_AAD, &env).unwrap();
        assert!(during.is_current(&moved).unwrap());
        let after = ring(KEK_B, None);
        assert_eq!(after.open(ZONE_SIGNING_KEY_AAD, &moved).unwrap(), b"pem");
        assert_eq!(
            after.open(ZONE_SIGNING_KEY_AAD, &env),
            Err(SecretError::UnknownKek)
        );

        // Reseal refuses a blob that does not belong to the purpose.
        assert_eq!(
            during.reseal(PROVIDER_ACCESS_TOKEN_AAD, &env),
            Err(SecretError::ValueRejected)
        );
    }
}
