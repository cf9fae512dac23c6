//! The content hash (reference §2.4), the chain HMAC (§2.5), the audit HMAC key and the
//! producer payload signature `sig` (§1.3a).

use std::fmt;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AuditError;
use super::event::{AuditEvent, JsonText, stored_json_text, truncate_to_micros};

type HmacSha256 = Hmac<Sha256>;

/// Separator written after every hashed field except the last (ASCII unit separator).
const FIELD_SEPARATOR: [u8; 1] = [0x1F];

/// Why an audit HMAC key was refused. Never contains key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The value is not hex.
    #[error("not hex")]
    NotHex,
    /// Fewer than [`AuditHmacKey::MIN_LEN`] bytes after decoding.
    #[error("{0} bytes, at least 32 required")]
    TooShort(usize),
}

/// Why a producer payload `sig` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureFailure {
    /// No `sig`, or an empty one.
    #[error("missing")]
    Missing,
    /// `sig` is not hex.
    #[error("not hex")]
    NotHex,
    /// `sig` does not match the data.
    #[error("mismatch")]
    Mismatch,
}

/// `AUDIT_HMAC_KEY`: shared by producers (payload `sig`) and the ingestor (chain HMAC).
///
/// Built from hex; at least 32 bytes after decoding. `Debug` shows only the length.
#[derive(Clone)]
pub struct AuditHmacKey(Box<[u8]>);

impl AuditHmacKey {
    /// Minimum key length in bytes.
    pub const MIN_LEN: usize = 32;

    /// Decode a hex key (surrounding whitespace, such as a trailing newline from a file, is
    /// ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::NotHex)?;
        Self::from_bytes(bytes)
    }

    /// Use raw key bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(Self(bytes.into_boxed_slice()))
    }

    /// Key length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a key has at least [`Self::MIN_LEN`] bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn mac(&self) -> HmacSha256 {
        // INVARIANT: HMAC accepts keys of any length, so this never fails; the fallback only
        // satisfies the type.
        HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| HmacSha256::new(&Default::default()))
    }

    /// Lowercase hex HMAC-SHA256 over `parts`, concatenated.
    fn hex_mac(&self, parts: &[&[u8]]) -> String {
        let mut mac = self.mac();
        for part in parts {
            mac.update(part);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// Constant-time check of a hex MAC over `parts`; any malformed `sig_hex` fails.
    fn verify_hex_mac(&self, parts: &[&[u8]], sig_hex: &str) -> Result<(), SignatureFailure> {
        if sig_hex.is_empty() {
            return Err(SignatureFailure::Missing);
        }
        let given = hex::decode(sig_hex).map_err(|_| SignatureFailure::NotHex)?;
        let mut mac = self.mac();
        for part in parts {
            mac.update(part);
        }
        let expected = mac.finalize().into_bytes();
        // Length differences compare unequal (in constant time for equal lengths).
        if bool::from(expected.as_slice().ct_eq(&given)) {
            Ok(())
        } else {
            Err(SignatureFailure::Mismatch)
        }
    }

    /// Sign arbitrary parts (used by chain checkpoints).
    pub(crate) fn sign_parts(&self, parts: &[&[u8]]) -> String {
        self.hex_mac(parts)
    }

    /// Verify a signature made by [`Self::sign_parts`].
    pub(crate) fn verify_parts(&self, parts: &[&[u8]], sig_hex: &str) -> bool {
        self.verify_hex_mac(parts, sig_hex).is_ok()
    }
}

impl fmt::Debug for AuditHmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditHmacKey")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

/// The producer `sig` of a stream entry: lowercase hex HMAC-SHA256 over the exact `data` bytes.
pub fn sign_payload(key: &AuditHmacKey, data: &[u8]) -> String {
    key.hex_mac(&[data])
}

/// Check a producer `sig` in constant time. A missing, empty, non-hex or wrong `sig` fails.
///
/// With no key configured the reference accepts every message (dev); that policy belongs to
/// the caller, which simply does not call this.
pub fn verify_payload_sig(
    key: &AuditHmacKey,
    data: &[u8],
    sig_hex: Option<&str>,
) -> Result<(), AuditError> {
    key.verify_hex_mac(&[data], sig_hex.unwrap_or_default())
        .map_err(AuditError::PayloadSignature)
}

/// `occurred_at` as Unix nanoseconds at microsecond precision (it always ends in `000`).
///
/// Computed in 128 bits so it never overflows; parsed events are within the `i64` range, where
/// this equals Go's `UnixNano()` of the truncated time.
pub fn unix_nanos_micros(at: DateTime<Utc>) -> i128 {
    let at = truncate_to_micros(at);
    i128::from(at.timestamp()) * 1_000_000_000 + i128::from(at.timestamp_subsec_nanos())
}

/// Hash a string field as stored: NULs are stripped before storage, so they are skipped here.
fn update_text(hasher: &mut Sha256, text: &str) {
    for part in text.split('\0') {
        hasher.update(part.as_bytes());
    }
}

fn update_json(
    hasher: &mut Sha256,
    field: &'static str,
    doc: Option<&JsonText>,
) -> Result<(), AuditError> {
    let stored = stored_json_text(doc).map_err(|source| AuditError::JsonField { field, source })?;
    hasher.update(stored.as_deref().unwrap_or("null").as_bytes());
    Ok(())
}

/// The content hash of §2.4, lowercase hex.
///
/// SHA-256 over `id`, `zone_id`, `event_type`, `request_id`, `decision`, `policy_set_id`,
/// `policy_set_version_id`, `manifest_sha`, `evaluation_status`, `determining_policies_json`,
/// `diagnostics_json`, `metadata_json`, each followed by 0x1F, then the decimal Unix
/// nanoseconds of `occurred_at` (µs precision) with no trailing separator. JSON fields hash as
/// their `jsonb` text, or `null` when absent or JSON `null`.
///
/// It is computed over the stored form whatever form `event` is in: `content_hash(e)` equals
/// `content_hash(&e.into_stored()?)`. Fails only when a JSON field has no `jsonb` form.
pub fn content_hash(event: &AuditEvent) -> Result<String, AuditError> {
    let mut hasher = Sha256::new();
    for text in [
        &event.id,
        &event.zone_id,
        &event.event_type,
        &event.request_id,
        &event.decision,
        &event.policy_set_id,
        &event.policy_set_version_id,
        &event.manifest_sha,
        &event.evaluation_status,
    ] {
        update_text(&mut hasher, text);
        hasher.update(FIELD_SEPARATOR);
    }
    for (field, doc) in [
        (
            "determining_policies_json",
            &event.determining_policies_json,
        ),
        ("diagnostics_json", &event.diagnostics_json),
        ("metadata_json", &event.metadata_json),
    ] {
        update_json(&mut hasher, field, doc.as_ref())?;
        hasher.update(FIELD_SEPARATOR);
    }
    hasher.update(unix_nanos_micros(event.occurred_at).to_string().as_bytes());
    Ok(hex::encode(hasher.finalize()))
}

/// The chain link of §2.5: `hex(HMAC-SHA256(key, content_hex | "|" | prev_hex))`, with
/// `prev_hex` empty for a zone's first row. Without a key the link is unsigned: `""`.
pub fn chain_hmac(key: Option<&AuditHmacKey>, content_hex: &str, prev_hex: &str) -> String {
    match key {
        Some(key) => key.hex_mac(&[content_hex.as_bytes(), b"|", prev_hex.as_bytes()]),
        None => String::new(),
    }
}

/// Constant-time check of a stored chain HMAC.
pub(crate) fn chain_hmac_matches(
    key: &AuditHmacKey,
    content_hex: &str,
    prev_hex: &str,
    stored: &str,
) -> bool {
    key.verify_parts(&[content_hex.as_bytes(), b"|", prev_hex.as_bytes()], stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] =
        include_bytes!("../../tests/fixtures/interop/audit-event.allow.valid.json");
    const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn reference_vectors() {
        let event = AuditEvent::parse(FIXTURE).unwrap();
        let content = content_hash(&event).unwrap();
        assert_eq!(
            content,
            "17b2213da6ad7fc62518378b89c2e17dc91752092fae5e56c31a8f45abf5b41f"
        );
        let key = AuditHmacKey::from_hex(KEY_HEX).unwrap();
        assert_eq!(
            chain_hmac(Some(&key), &content, ""),
            "6a6fcbeff3a3021fad93007d2a147086815fef0ca29a2fddc347d858b83b8d2a"
        );
        assert_eq!(chain_hmac(None, &content, ""), "");
        assert_eq!(
            unix_nanos_micros(event.occurred_at),
            1_779_364_800_000_000_000
        );
    }

    #[test]
    fn hash_is_over_the_stored_form() {
        let event = AuditEvent::parse(FIXTURE).unwrap();
        let stored = event.clone().into_stored().unwrap();
        assert_eq!(
            content_hash(&event).unwrap(),
            content_hash(&stored).unwrap()
        );
        let mut with_nul = event.clone();
        with_nul.decision = "al\0low".into();
        assert_eq!(
            content_hash(&with_nul).unwrap(),
            content_hash(&event).unwrap()
        );
        let mut later = event.clone();
        later.occurred_at += chrono::Duration::nanoseconds(999);
        assert_eq!(content_hash(&later).unwrap(), content_hash(&event).unwrap());
        later.occurred_at += chrono::Duration::nanoseconds(1);
        assert_ne!(content_hash(&later).unwrap(), content_hash(&event).unwrap());
    }

    #[test]
    fn absent_and_null_documents_hash_alike() {
        let mut a = AuditEvent::parse(FIXTURE).unwrap();
        a.metadata_json = None;
        let mut b = a.clone();
        b.metadata_json = Some(JsonText::parse("null").unwrap());
        assert_eq!(content_hash(&a).unwrap(), content_hash(&b).unwrap());
    }

    #[test]
    fn keys_are_checked_and_never_printed() {
        assert_eq!(AuditHmacKey::from_hex("zz").unwrap_err(), KeyError::NotHex);
        assert_eq!(
            AuditHmacKey::from_hex("00ff").unwrap_err(),
            KeyError::TooShort(2)
        );
        let key = AuditHmacKey::from_hex(&format!("{KEY_HEX}\n")).unwrap();
        assert_eq!(key.len(), 32);
        let debug = format!("{key:?}");
        assert!(
            !debug.contains("0123") && !debug.contains("[1, 35"),
            "{debug}"
        );
    }

    #[test]
    fn payload_signature() {
        let key = AuditHmacKey::from_hex(KEY_HEX).unwrap();
        let data = br#"{"id":"a"}"#;
        let sig = sign_payload(&key, data);
        assert_eq!(sig.len(), 64);
        assert!(
            sig.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        verify_payload_sig(&key, data, Some(&sig)).unwrap();
        let fails = |sig: Option<&str>| match verify_payload_sig(&key, data, sig) {
            Err(AuditError::PayloadSignature(f)) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(fails(None), SignatureFailure::Missing);
        assert_eq!(fails(Some("")), SignatureFailure::Missing);
        assert_eq!(fails(Some("xyz")), SignatureFailure::NotHex);
        assert_eq!(fails(Some(&sig[..62])), SignatureFailure::Mismatch);
        let mut flipped = sig.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            fails(Some(std::str::from_utf8(&flipped).unwrap())),
            SignatureFailure::Mismatch
        );
        assert!(verify_payload_sig(&key, b"other", Some(&sig)).is_err());
    }
}
