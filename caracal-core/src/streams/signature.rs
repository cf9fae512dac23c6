//! The stream origin signature `_sig` (reference: audit-streams §1.3b, STS §5.3).
//!
//! Canonical bytes for a message with fields `F` on stream `N`:
//!
//! 1. `N` followed by `\n`;
//! 2. every key of `F` except `_sig`, sorted byte-wise ascending;
//! 3. for each key whose value is not null: `key=value\n`, with no escaping at all.
//!
//! `_sig` is the lowercase hex HMAC-SHA256 of those bytes under `STREAMS_HMAC_KEY`. The stream
//! name is inside the MAC, so a message signed for one stream does not verify on another. The
//! format is ambiguous for values holding `\n` or `=`: it is an origin MAC, never a parser.
//!
//! This is distinct from the audit payload HMAC `sig` (no underscore), which covers only the
//! `data` bytes of an audit message and belongs to the audit module.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::Fields;

/// The reserved field that carries the signature; never part of the canonical form.
pub const SIG_FIELD: &str = "_sig";

type HmacSha256 = Hmac<Sha256>;

/// Length in bytes of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// A field value as the canonical form sees it: a string, or null (`None`), which is skipped.
///
/// Implemented for `str`, `String`, `Option` of either, and references to them, so callers can
/// pass a [`Fields`], a `&[(&str, &str)]`, or a map with nullable values (as in the interop
/// vectors) without copying.
pub trait SigValue {
    /// The string form, or `None` for a null value.
    fn sig_value(&self) -> Option<&str>;
}

impl SigValue for str {
    fn sig_value(&self) -> Option<&str> {
        Some(self)
    }
}

impl SigValue for String {
    fn sig_value(&self) -> Option<&str> {
        Some(self.as_str())
    }
}

impl<T: SigValue> SigValue for Option<T> {
    fn sig_value(&self) -> Option<&str> {
        self.as_ref().and_then(SigValue::sig_value)
    }
}

impl<T: SigValue + ?Sized> SigValue for &T {
    fn sig_value(&self) -> Option<&str> {
        (**self).sig_value()
    }
}

/// One field as the canonical form sees it: a key and a [`SigValue`].
///
/// Implemented for `(key, value)` tuples and references to them, so both an iterator of pairs
/// (`&Fields`, an array of tuples) and a borrowed `Vec` or slice of pairs can be passed.
pub trait SigPair {
    /// The field name.
    fn sig_key(&self) -> &str;
    /// The value, or `None` for a null one.
    fn sig_value(&self) -> Option<&str>;
}

impl<K: AsRef<str>, V: SigValue> SigPair for (K, V) {
    fn sig_key(&self) -> &str {
        self.0.as_ref()
    }
    fn sig_value(&self) -> Option<&str> {
        self.1.sig_value()
    }
}

impl<T: SigPair + ?Sized> SigPair for &T {
    fn sig_key(&self) -> &str {
        (**self).sig_key()
    }
    fn sig_value(&self) -> Option<&str> {
        (**self).sig_value()
    }
}

/// A `STREAMS_HMAC_KEY`: at least 32 bytes. Its `Debug` form never shows key material.
#[derive(Clone)]
pub struct StreamKey {
    // The keyed HMAC state rather than the raw bytes: each signature clones it instead of
    // re-running the key schedule.
    mac: HmacSha256,
}

impl StreamKey {
    /// The shortest accepted key, in bytes (the reference's rule for `STREAMS_HMAC_KEY`).
    pub const MIN_LEN: usize = 32;

    /// A key from its hex form, as configured. Surrounding ASCII whitespace (a trailing newline
    /// from a secrets file) is ignored; anything else that is not hex is refused.
    pub fn from_hex(hex_key: &str) -> Result<Self, StreamKeyError> {
        let bytes = hex::decode(hex_key.trim_ascii()).map_err(|_| StreamKeyError::NotHex)?;
        Self::from_bytes(&bytes)
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StreamKeyError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(StreamKeyError::TooShort { len: bytes.len() });
        }
        // HMAC takes keys of any length, so this error cannot occur; it is mapped rather than
        // unwrapped to keep the function free of panic paths.
        let mac = HmacSha256::new_from_slice(bytes)
            .map_err(|_| StreamKeyError::TooShort { len: bytes.len() })?;
        Ok(Self { mac })
    }
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(<redacted>)")
    }
}

/// Why a configured stream key was refused. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamKeyError {
    /// The configured value is not hex.
    #[error("stream HMAC key is not valid hex")]
    NotHex,
    /// The decoded key is shorter than [`StreamKey::MIN_LEN`].
    #[error("stream HMAC key is {len} bytes; at least 32 are required")]
    TooShort {
        /// Decoded length in bytes.
        len: usize,
    },
}

/// Why a message's `_sig` did not verify. Carries no field values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `_sig` field, or a null one.
    #[error("stream message has no _sig")]
    Missing,
    /// `_sig` is the empty string.
    #[error("stream message has an empty _sig")]
    Empty,
    /// `_sig` is not hex.
    #[error("stream message _sig is not hex")]
    NotHex,
    /// `_sig` does not match the message (wrong key, wrong stream, or altered fields).
    #[error("stream message _sig does not match")]
    Mismatch,
    /// Signatures are required but no key is configured: nothing can verify (fail closed).
    #[error("stream signatures are required but no STREAMS_HMAC_KEY is configured")]
    KeyRequired,
}

/// The non-null fields other than `_sig`, sorted byte-wise by key; for a repeated key the last
/// value wins (and a last null removes it), matching the reference's map decoding.
fn canonical_pairs<P: SigPair>(pairs: &[P]) -> Vec<(&str, &str)> {
    let mut keyed: Vec<(&str, Option<&str>)> = pairs
        .iter()
        .map(|p| (p.sig_key(), SigPair::sig_value(p)))
        .filter(|(k, _)| *k != SIG_FIELD)
        .collect();
    // A stable sort keeps equal keys in input order, so the last of each run is the last value.
    keyed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = Vec::with_capacity(keyed.len());
    let mut iter = keyed.into_iter().peekable();
    while let Some((k, v)) = iter.next() {
        if iter.peek().is_some_and(|(next, _)| *next == k) {
            continue;
        }
        if let Some(v) = v {
            out.push((k, v));
        }
    }
    out
}

/// Feed the canonical form to `sink`, piece by piece (no intermediate string for signing).
fn write_canonical(stream: &str, pairs: &[(&str, &str)], mut sink: impl FnMut(&str)) {
    sink(stream);
    sink("\n");
    for (k, v) in pairs {
        sink(k);
        sink("=");
        sink(v);
        sink("\n");
    }
}

fn collect_pairs<I: IntoIterator>(fields: I) -> Vec<I::Item> {
    fields.into_iter().collect()
}

/// The canonical string of a message on `stream` (see the module docs).
pub fn canonical<I>(stream: &str, fields: I) -> String
where
    I: IntoIterator,
    I::Item: SigPair,
{
    let pairs = collect_pairs(fields);
    let sorted = canonical_pairs(&pairs);
    let mut out = String::new();
    write_canonical(stream, &sorted, |piece| out.push_str(piece));
    out
}

fn tag(key: &StreamKey, stream: &str, sorted: &[(&str, &str)]) -> [u8; TAG_LEN] {
    let mut mac = key.mac.clone();
    write_canonical(stream, sorted, |piece| mac.update(piece.as_bytes()));
    mac.finalize().into_bytes().into()
}

/// The `_sig` value for a message on `stream`: lowercase hex HMAC-SHA256 of the canonical form.
/// Any `_sig` already among `fields` is ignored.
pub fn sign<I>(key: &StreamKey, stream: &str, fields: I) -> String
where
    I: IntoIterator,
    I::Item: SigPair,
{
    let pairs = collect_pairs(fields);
    hex::encode(tag(key, stream, &canonical_pairs(&pairs)))
}

/// Sign `fields` for `stream` and set their `_sig` (replacing any previous one).
pub fn sign_fields(key: &StreamKey, stream: &str, fields: &mut Fields) {
    let sig = sign(key, stream, fields.iter());
    fields.insert(SIG_FIELD, sig);
}

/// Verify the `_sig` carried among `fields` for a message read from `stream`.
///
/// A missing, null or empty `_sig` fails, non-hex fails, and the comparison is constant-time.
/// Hex is accepted in either case, as the reference's decoders do.
pub fn verify<I>(key: &StreamKey, stream: &str, fields: I) -> Result<(), SignatureError>
where
    I: IntoIterator,
    I::Item: SigPair,
{
    let pairs = collect_pairs(fields);
    // Last one wins, consistently with the canonical form's treatment of repeated keys.
    let presented = pairs
        .iter()
        .rev()
        .find(|p| p.sig_key() == SIG_FIELD)
        .and_then(|p| SigPair::sig_value(p))
        .ok_or(SignatureError::Missing)?;
    if presented.is_empty() {
        return Err(SignatureError::Empty);
    }
    let presented = hex::decode(presented).map_err(|_| SignatureError::NotHex)?;
    let expected = tag(key, stream, &canonical_pairs(&pairs));
    // The length of a MAC is public; only the content comparison must be constant-time.
    if presented.len() != expected.len() {
        return Err(SignatureError::Mismatch);
    }
    if bool::from(presented.as_slice().ct_eq(expected.as_slice())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// How a service treats `_sig` on the messages it consumes and produces.
///
/// The reference rule: with no key configured and signatures not required, accept every
/// message (development); otherwise every message must carry a valid `_sig`. Published modes
/// require the key, so [`SigPolicy::from_config`] refuses "required without a key" at start-up
/// instead of running a consumer that can verify nothing.
#[derive(Debug, Clone)]
pub enum SigPolicy {
    /// No key and not required: accept messages unverified, and produce them unsigned.
    AcceptUnsigned,
    /// A key is configured: every consumed message must verify; produced ones are signed.
    Verify(StreamKey),
}

/// The outcome of [`SigPolicy::check`] for a message that is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigCheck {
    /// The `_sig` verified under the configured key.
    Verified,
    /// No key is configured and signatures are not required: accepted without a check.
    Unchecked,
}

impl SigPolicy {
    /// The policy for a configured key (if any) and whether signatures are required.
    ///
    /// A key, whether or not required, means verify. Required without a key is
    /// [`SignatureError::KeyRequired`].
    pub fn from_config(key: Option<StreamKey>, required: bool) -> Result<Self, SignatureError> {
        match (key, required) {
            (Some(key), _) => Ok(SigPolicy::Verify(key)),
            (None, false) => Ok(SigPolicy::AcceptUnsigned),
            (None, true) => Err(SignatureError::KeyRequired),
        }
    }

    /// Check a consumed message from `stream` under this policy.
    pub fn check<I>(&self, stream: &str, fields: I) -> Result<SigCheck, SignatureError>
    where
        I: IntoIterator,
        I::Item: SigPair,
    {
        match self {
            SigPolicy::AcceptUnsigned => Ok(SigCheck::Unchecked),
            SigPolicy::Verify(key) => verify(key, stream, fields).map(|()| SigCheck::Verified),
        }
    }

    /// Prepare `fields` for publishing on `stream`: set `_sig` when a key is configured. With
    /// no key the fields are left as they are.
    pub fn sign_into(&self, stream: &str, fields: &mut Fields) {
        if let SigPolicy::Verify(key) = self {
            sign_fields(key, stream, fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn key() -> StreamKey {
        StreamKey::from_hex(KEY_HEX).unwrap()
    }

    #[test]
    fn key_rules() {
        assert_eq!(
            StreamKey::from_hex("0123").unwrap_err(),
            StreamKeyError::TooShort { len: 2 }
        );
        assert_eq!(
            StreamKey::from_hex("zz").unwrap_err(),
            StreamKeyError::NotHex
        );
        assert!(StreamKey::from_hex(&format!("{KEY_HEX}\n")).is_ok());
        assert!(StreamKey::from_bytes(&[7u8; 31]).is_err());
        assert!(StreamKey::from_bytes(&[7u8; 64]).is_ok());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?} {:?}", key(), SigPolicy::Verify(key()));
        assert!(!shown.contains("0123456789"), "{shown}");
        assert!(!shown.contains("[1, 35"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn repeated_keys_last_value_wins_in_canonical_and_sig() {
        let c = canonical("s", [("a", Some("1")), ("a", Some("2")), ("b", None)]);
        assert_eq!(c, "s\na=2\n");
        let c = canonical("s", [("a", Some("1")), ("a", None)]);
        assert_eq!(c, "s\n");
        let sig = sign(&key(), "s", [("a", "2")]);
        assert!(
            verify(
                &key(),
                "s",
                [("a", "1"), ("a", "2"), ("_sig", sig.as_str())]
            )
            .is_ok()
        );
        assert_eq!(
            verify(
                &key(),
                "s",
                [("a", "2"), ("a", "1"), ("_sig", sig.as_str())]
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn uppercase_hex_is_accepted_wrong_length_is_a_mismatch() {
        let sig = sign(&key(), "s", [("a", "1")]);
        let upper = sig.to_uppercase();
        assert!(verify(&key(), "s", [("a", "1"), ("_sig", upper.as_str())]).is_ok());
        assert_eq!(
            verify(&key(), "s", [("a", "1"), ("_sig", &sig[..62])]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&key(), "s", [("a", "1"), ("_sig", &sig[..63])]),
            Err(SignatureError::NotHex)
        );
    }

    #[test]
    fn policy_rules() {
        assert!(matches!(
            SigPolicy::from_config(None, false),
            Ok(SigPolicy::AcceptUnsigned)
        ));
        assert!(matches!(
            SigPolicy::from_config(None, true),
            Err(SignatureError::KeyRequired)
        ));
        let open = SigPolicy::from_config(None, false).unwrap();
        assert_eq!(open.check("s", [("a", "1")]), Ok(SigCheck::Unchecked));
        let mut fields = Fields::new().with("a", "1");
        open.sign_into("s", &mut fields);
        assert!(!fields.contains_key(SIG_FIELD));

        // A key that is configured is enforced even when not required.
        let strict = SigPolicy::from_config(Some(key()), false).unwrap();
        assert_eq!(
            strict.check("s", [("a", "1")]),
            Err(SignatureError::Missing)
        );
        strict.sign_into("s", &mut fields);
        assert_eq!(strict.check("s", &fields), Ok(SigCheck::Verified));
        assert_eq!(
            strict.check("other", &fields),
            Err(SignatureError::Mismatch)
        );
    }
}
