//! The Gateway→STS HMAC envelope and its single-use nonce (reference `sts.md` §2.2, §7.2).
//!
//! A Gateway (and the API, for the internal policy endpoints) proves its calls with three
//! headers: [`TIMESTAMP_HEADER`] (unix seconds), [`NONCE_HEADER`] (a unique nonce) and
//! [`SIGNATURE_HEADER`], the lowercase hex HMAC-SHA256 under `GATEWAY_STS_HMAC_KEY` of
//!
//! ```text
//! <unix>\n<nonce>\n<UPPERCASE METHOD>\n<escaped path>\n<lowercase hex sha256(raw body)>
//! ```
//!
//! Method and path bind a signature to one endpoint; the body digest binds it to one request
//! body; the timestamp limits it to ±[`MAX_SKEW_SECONDS`]; the nonce, stored with `SET NX` for
//! [`NONCE_TTL`] (twice the skew, so it outlives every timestamp that could still verify), makes
//! it single-use. That nonce is the only replay protection on the STS side of the exchange.
//!
//! [`sign`] is public so the Gateway signs with the same canonical form the STS verifies.
//! Every verification failure reaches the caller as one answer (401 `access_denied` "invalid
//! gateway exchange signature"); the typed [`EnvelopeError`] reason is for logs only.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::store::StoreError;
use crate::store::ephemeral::EphemeralKeys;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Caracal-Gateway-Timestamp";
/// Header carrying the single-use nonce.
pub const NONCE_HEADER: &str = "X-Caracal-Gateway-Request";
/// Header carrying the hex HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "X-Caracal-Gateway-Signature";
/// The largest accepted distance, in seconds, between the signing time and the verifier's now,
/// in either direction (inclusive).
pub const MAX_SKEW_SECONDS: i64 = 60;
/// How long a consumed nonce is remembered: twice the skew, so a nonce is still remembered for
/// as long as its timestamp could verify.
pub const NONCE_TTL: Duration = Duration::from_secs(2 * MAX_SKEW_SECONDS.unsigned_abs());
/// Ephemeral-key prefix of consumed nonces (the reference's Redis key layout).
pub const NONCE_KEY_PREFIX: &str = "caracal:sts:gw-nonce:";

/// The one description every envelope failure shows the caller.
const FAILURE_DESCRIPTION: &str = "invalid gateway exchange signature";

/// `GATEWAY_STS_HMAC_KEY`, the key shared by the Gateway (and the API) and the STS.
///
/// Configured as hex; at least [`GatewayKey::MIN_LEN`] bytes after decoding. Holds the keyed
/// HMAC state rather than the raw bytes, so each signature clones it instead of re-running the
/// key schedule. `Debug` shows only the key's length.
#[derive(Clone)]
pub struct GatewayKey {
    mac: HmacSha256,
    len: usize,
}

impl GatewayKey {
    /// The shortest accepted key, in bytes (the reference's rule for every HMAC key).
    pub const MIN_LEN: usize = 32;

    /// A key from its configured hex form. Surrounding ASCII whitespace (a trailing newline
    /// from a secrets file) is ignored; anything else that is not hex is refused.
    pub fn from_hex(text: &str) -> Result<Self, EnvelopeError> {
        let bytes = hex::decode(text.trim_ascii()).map_err(|_| EnvelopeError::KeyNotHex)?;
        Self::from_bytes(&bytes)
    }

    /// A key from raw bytes (at least [`GatewayKey::MIN_LEN`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let len = bytes.len();
        if len < Self::MIN_LEN {
            return Err(EnvelopeError::KeyTooShort { len });
        }
        // HMAC takes keys of any length, so this error cannot occur; it is mapped rather than
        // unwrapped to keep the function free of panic paths.
        let mac =
            HmacSha256::new_from_slice(bytes).map_err(|_| EnvelopeError::KeyTooShort { len })?;
        Ok(Self { mac, len })
    }

    /// The raw HMAC-SHA256 tag over `canonical`.
    fn tag(&self, canonical: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(canonical.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayKey")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// The signed string: `"<timestamp>\n<nonce>\n<METHOD>\n<path>\n<hex sha256(body)>"`.
///
/// `timestamp` is the decimal unix-seconds text; `method` is upper-cased here (ASCII: HTTP
/// methods are ASCII tokens), so a signer and a verifier that disagree only on the method's
/// case still agree; `path` is the request's escaped path without the query.
pub fn canonical(timestamp: &str, nonce: &str, method: &str, path: &str, body: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(body));
    let method = method.to_ascii_uppercase();
    format!("{timestamp}\n{nonce}\n{method}\n{path}\n{digest}")
}

/// The envelope signature for a request: lowercase hex HMAC-SHA256 of [`canonical`] under
/// `key`. The Gateway puts it in [`SIGNATURE_HEADER`].
pub fn sign(
    key: &GatewayKey,
    timestamp: &str,
    nonce: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    hex::encode(key.tag(&canonical(timestamp, nonce, method, path, body)))
}

/// The three envelope headers as received (`None` = the header was absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvelopeHeaders<'a> {
    /// [`TIMESTAMP_HEADER`].
    pub timestamp: Option<&'a str>,
    /// [`NONCE_HEADER`].
    pub nonce: Option<&'a str>,
    /// [`SIGNATURE_HEADER`].
    pub signature: Option<&'a str>,
}

impl EnvelopeHeaders<'_> {
    /// Whether the request claims to be Gateway-authenticated: any one of the three headers is
    /// present, even empty (§2.1 step 5). Such a request must then verify in full; a partial
    /// envelope never falls back to client-secret authentication.
    pub fn any_present(&self) -> bool {
        self.timestamp.is_some() || self.nonce.is_some() || self.signature.is_some()
    }
}

/// Why an envelope (or a configured key) was refused. For logs only: callers see
/// [`EnvelopeError::to_api`]. Never carries key material, signatures or bodies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The configured key is not hex.
    #[error("gateway HMAC key is not valid hex")]
    KeyNotHex,
    /// The configured key decodes to fewer than [`GatewayKey::MIN_LEN`] bytes.
    #[error("gateway HMAC key is {len} bytes; at least 32 are required")]
    KeyTooShort {
        /// Decoded length in bytes.
        len: usize,
    },
    /// No `GATEWAY_STS_HMAC_KEY` is configured: nothing can verify (fail closed).
    #[error("gateway exchange key not configured")]
    NotConfigured,
    /// One of the three headers is absent or empty.
    #[error("gateway exchange signature headers missing")]
    Missing,
    /// The timestamp is not a decimal integer of unix seconds in range.
    #[error("gateway exchange timestamp invalid")]
    BadTimestamp,
    /// The timestamp is more than [`MAX_SKEW_SECONDS`] away from now.
    #[error("gateway exchange timestamp outside skew")]
    Skew,
    /// The form's `gateway_request_id` differs from the effective request id.
    #[error("gateway request id does not match the request id")]
    RequestIdMismatch,
    /// The signature is not hex or does not match.
    #[error("gateway exchange signature mismatch")]
    BadSignature,
    /// The nonce was already consumed.
    #[error("gateway nonce replay")]
    Replayed,
    /// The nonce store failed (fail closed).
    #[error("gateway nonce store unavailable")]
    Unavailable(#[source] StoreError),
}

impl EnvelopeError {
    /// The caller-visible error: always 401 `access_denied` "invalid gateway exchange
    /// signature", whatever the reason, so a caller learns nothing about which check failed.
    pub fn to_api(&self) -> ApiError {
        ApiError::unauthorized("access_denied").with_description(FAILURE_DESCRIPTION)
    }
}

/// A header value if present and non-empty.
fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// Verify a Gateway envelope (§2.2) and consume its nonce.
///
/// In order: `key` must be configured; all three headers non-empty; the timestamp a decimal
/// integer; `|now − timestamp| ≤ 60 s` (sub-second precision of `now` counts, as in the
/// reference); when `binding` is `Some((gateway_request_id, request_id))` the two must be
/// equal; the hex signature (either case) must equal the HMAC over [`canonical`] of the parsed
/// timestamp, the nonce, `method`, `path` (the escaped request path) and `body`, compared in
/// constant time. Only then is the nonce stored under [`NONCE_KEY_PREFIX`] with `SET NX` for
/// [`NONCE_TTL`]: already present is [`EnvelopeError::Replayed`], a store error is
/// [`EnvelopeError::Unavailable`]. An unauthenticated caller therefore cannot burn nonces.
#[allow(clippy::too_many_arguments)]
pub async fn verify(
    key: Option<&GatewayKey>,
    headers: &EnvelopeHeaders<'_>,
    method: &str,
    path: &str,
    body: &[u8],
    binding: Option<(&str, &str)>,
    now: DateTime<Utc>,
    nonces: &dyn EphemeralKeys,
) -> Result<(), EnvelopeError> {
    let key = key.ok_or(EnvelopeError::NotConfigured)?;
    let (Some(timestamp), Some(nonce), Some(signature)) = (
        non_empty(headers.timestamp),
        non_empty(headers.nonce),
        non_empty(headers.signature),
    ) else {
        return Err(EnvelopeError::Missing);
    };
    // Go's strconv.ParseInt(s, 10, 64): optional sign, decimal digits only.
    let unix: i64 = timestamp.parse().map_err(|_| EnvelopeError::BadTimestamp)?;
    let signed_at = DateTime::<Utc>::from_timestamp(unix, 0).ok_or(EnvelopeError::BadTimestamp)?;
    if (now - signed_at).abs() > TimeDelta::seconds(MAX_SKEW_SECONDS) {
        return Err(EnvelopeError::Skew);
    }
    if binding.is_some_and(|(gateway_request_id, request_id)| gateway_request_id != request_id) {
        return Err(EnvelopeError::RequestIdMismatch);
    }
    let presented = hex::decode(signature).map_err(|_| EnvelopeError::BadSignature)?;
    // The reference signs the parsed integer (`%d`), so `+100` or `0100` verify as `100`.
    let expected = key.tag(&canonical(&unix.to_string(), nonce, method, path, body));
    // Length differences compare unequal; equal lengths compare in constant time.
    if !bool::from(presented.as_slice().ct_eq(expected.as_slice())) {
        return Err(EnvelopeError::BadSignature);
    }
    let nonce_key = format!("{NONCE_KEY_PREFIX}{nonce}");
    match nonces.set_nx_ex(&nonce_key, "1", NONCE_TTL).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(EnvelopeError::Replayed),
        Err(e) => Err(EnvelopeError::Unavailable(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::clock::FakeClock;
    use crate::store::StoreResult;
    use crate::store::memory::MemoryStore;

    /// `bytes(range(32))` as hex.
    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const BODY: &[u8] = b"grant_type=x&resource=r";
    const TS: i64 = 1_779_364_800;
    const PATH: &str = "/oauth/2/token";
    // python3 -c "import hmac,hashlib;k=bytes(range(32));b=b'grant_type=x&resource=r';
    //   m='1779364800\nnonce-1\nPOST\n/oauth/2/token\n'+hashlib.sha256(b).hexdigest();
    //   print(hashlib.sha256(b).hexdigest());print(hmac.new(k,m.encode(),hashlib.sha256).hexdigest())"
    const BODY_SHA256: &str = "de07f0c3aa8cd8c55ac2db7bf7752d0abab57b025d6119812168680724f9a9cf";
    const VECTOR_SIG: &str = "2b9f7a1b26b248a526d141a846489afeb969971af59e43403badc9f28322280f";

    fn key() -> GatewayKey {
        GatewayKey::from_hex(KEY_HEX).unwrap()
    }

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap()
    }

    fn store() -> MemoryStore {
        MemoryStore::with_clock(Arc::new(FakeClock::new(at(TS))))
    }

    fn headers<'a>(ts: &'a str, nonce: &'a str, sig: &'a str) -> EnvelopeHeaders<'a> {
        EnvelopeHeaders {
            timestamp: Some(ts),
            nonce: Some(nonce),
            signature: Some(sig),
        }
    }

    /// Sign `nonce` at `TS` and verify it with `now`.
    async fn check_at(
        now: DateTime<Utc>,
        nonce: &str,
        nonces: &dyn EphemeralKeys,
    ) -> Result<(), EnvelopeError> {
        let ts = TS.to_string();
        let sig = sign(&key(), &ts, nonce, "POST", PATH, BODY);
        verify(
            Some(&key()),
            &headers(&ts, nonce, &sig),
            "POST",
            PATH,
            BODY,
            None,
            now,
            nonces,
        )
        .await
    }

    /// An ephemeral store that always fails.
    struct Down;

    #[async_trait]
    impl EphemeralKeys for Down {
        async fn set_nx_ex(&self, _: &str, _: &str, _: Duration) -> StoreResult<bool> {
            Err(StoreError::Unavailable {
                retryable: true,
                message: "down".into(),
            })
        }
        async fn incr_window(&self, _: &str, _: Duration) -> StoreResult<i64> {
            Err(StoreError::Unavailable {
                retryable: true,
                message: "down".into(),
            })
        }
        async fn get_key(&self, _: &str) -> StoreResult<Option<String>> {
            Err(StoreError::Unavailable {
                retryable: true,
                message: "down".into(),
            })
        }
        async fn del_key(&self, _: &str) -> StoreResult<bool> {
            Err(StoreError::Unavailable {
                retryable: true,
                message: "down".into(),
            })
        }
    }

    #[test]
    fn matches_an_independently_computed_vector() {
        let ts = TS.to_string();
        assert_eq!(
            canonical(&ts, "nonce-1", "POST", PATH, BODY),
            format!("1779364800\nnonce-1\nPOST\n/oauth/2/token\n{BODY_SHA256}")
        );
        assert_eq!(sign(&key(), &ts, "nonce-1", "POST", PATH, BODY), VECTOR_SIG);
        // The method is upper-cased before signing.
        assert_eq!(sign(&key(), &ts, "nonce-1", "post", PATH, BODY), VECTOR_SIG);
    }

    #[test]
    fn key_rules_and_redacted_debug() {
        assert!(matches!(
            GatewayKey::from_hex("zz"),
            Err(EnvelopeError::KeyNotHex)
        ));
        assert!(matches!(
            GatewayKey::from_hex(&KEY_HEX[..62]),
            Err(EnvelopeError::KeyTooShort { len: 31 })
        ));
        assert!(GatewayKey::from_hex(&format!("  {KEY_HEX}\n")).is_ok());
        assert!(GatewayKey::from_bytes(&[7u8; 64]).is_ok());
        let shown = format!("{:?}", key());
        assert!(shown.contains("len: 32"), "{shown}");
        assert!(!shown.contains("0001"), "{shown}");
    }

    #[tokio::test]
    async fn the_vector_verifies_once_and_then_is_a_replay() {
        let s = store();
        let h = headers("1779364800", "nonce-1", VECTOR_SIG);
        verify(Some(&key()), &h, "POST", PATH, BODY, None, at(TS), &s)
            .await
            .unwrap();
        assert_eq!(
            s.get_key("caracal:sts:gw-nonce:nonce-1")
                .await
                .unwrap()
                .as_deref(),
            Some("1")
        );
        let again = verify(Some(&key()), &h, "POST", PATH, BODY, None, at(TS), &s).await;
        assert!(matches!(again, Err(EnvelopeError::Replayed)), "{again:?}");
        // Upper-case hex is accepted too (fresh nonce needed, so sign again).
        let sig = sign(&key(), "1779364800", "nonce-2", "POST", PATH, BODY).to_uppercase();
        let h = headers("1779364800", "nonce-2", &sig);
        verify(Some(&key()), &h, "POST", PATH, BODY, None, at(TS), &s)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn skew_is_inclusive_at_60_seconds_in_both_directions() {
        let s = store();
        check_at(at(TS + 60), "late-ok", &s).await.unwrap();
        check_at(at(TS - 60), "early-ok", &s).await.unwrap();
        let late = check_at(at(TS + 61), "late", &s).await;
        assert!(matches!(late, Err(EnvelopeError::Skew)), "{late:?}");
        let early = check_at(at(TS - 61), "early", &s).await;
        assert!(matches!(early, Err(EnvelopeError::Skew)), "{early:?}");
        // Sub-second precision counts, as in the reference (time.Time arithmetic).
        let just_over = at(TS + 60) + TimeDelta::milliseconds(1);
        assert!(matches!(
            check_at(just_over, "frac", &s).await,
            Err(EnvelopeError::Skew)
        ));
        // A skew failure does not consume the nonce.
        assert_eq!(s.get_key("caracal:sts:gw-nonce:late").await.unwrap(), None);
    }

    #[tokio::test]
    async fn any_change_to_the_signed_request_fails() {
        let s = store();
        let ts = TS.to_string();
        let sig = sign(&key(), &ts, "n", "POST", PATH, BODY);
        let h = headers(&ts, "n", &sig);
        let k = key();
        let cases: [(&str, &str, &[u8]); 3] = [
            ("POST", PATH, b"grant_type=x&resource=s"),
            ("PUT", PATH, BODY),
            ("POST", "/oauth/2/token/", BODY),
        ];
        for (method, path, body) in cases {
            let r = verify(Some(&k), &h, method, path, body, None, at(TS), &s).await;
            assert!(
                matches!(r, Err(EnvelopeError::BadSignature)),
                "{method} {path}: {r:?}"
            );
        }
        // Another key, a nonce other than the signed one, a truncated or non-hex signature.
        let other = GatewayKey::from_bytes(&[9u8; 32]).unwrap();
        let r = verify(Some(&other), &h, "POST", PATH, BODY, None, at(TS), &s).await;
        assert!(matches!(r, Err(EnvelopeError::BadSignature)));
        let r = verify(
            Some(&k),
            &headers(&ts, "m", &sig),
            "POST",
            PATH,
            BODY,
            None,
            at(TS),
            &s,
        )
        .await;
        assert!(matches!(r, Err(EnvelopeError::BadSignature)));
        for bad in [&sig[..62], "zz", &format!("{sig}00")] {
            let r = verify(
                Some(&k),
                &headers(&ts, "n", bad),
                "POST",
                PATH,
                BODY,
                None,
                at(TS),
                &s,
            )
            .await;
            assert!(matches!(r, Err(EnvelopeError::BadSignature)), "{bad}");
        }
        // None of those consumed the nonce: the genuine request still verifies, with the
        // method in any case.
        verify(Some(&k), &h, "post", PATH, BODY, None, at(TS), &s)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_parsed_timestamp_is_what_is_signed() {
        let s = store();
        let sig = sign(&key(), &TS.to_string(), "n", "POST", PATH, BODY);
        let h = headers("+1779364800", "n", &sig);
        verify(Some(&key()), &h, "POST", PATH, BODY, None, at(TS), &s)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn request_id_binding() {
        let s = store();
        let ts = TS.to_string();
        let sig = sign(&key(), &ts, "n", "POST", PATH, BODY);
        let h = headers(&ts, "n", &sig);
        let r = verify(
            Some(&key()),
            &h,
            "POST",
            PATH,
            BODY,
            Some(("req-1", "req-2")),
            at(TS),
            &s,
        )
        .await;
        assert!(matches!(r, Err(EnvelopeError::RequestIdMismatch)), "{r:?}");
        let r = verify(
            Some(&key()),
            &h,
            "POST",
            PATH,
            BODY,
            Some(("", "req-2")),
            at(TS),
            &s,
        )
        .await;
        assert!(matches!(r, Err(EnvelopeError::RequestIdMismatch)), "{r:?}");
        verify(
            Some(&key()),
            &h,
            "POST",
            PATH,
            BODY,
            Some(("req-1", "req-1")),
            at(TS),
            &s,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn missing_pieces_and_no_key_fail() {
        let s = store();
        let ts = TS.to_string();
        let sig = sign(&key(), &ts, "n", "POST", PATH, BODY);
        let r = verify(
            None,
            &headers(&ts, "n", &sig),
            "POST",
            PATH,
            BODY,
            None,
            at(TS),
            &s,
        )
        .await;
        assert!(matches!(r, Err(EnvelopeError::NotConfigured)));
        let partials = [
            EnvelopeHeaders {
                timestamp: None,
                ..headers(&ts, "n", &sig)
            },
            EnvelopeHeaders {
                nonce: Some(""),
                ..headers(&ts, "n", &sig)
            },
            EnvelopeHeaders {
                signature: None,
                ..headers(&ts, "n", &sig)
            },
        ];
        for h in partials {
            assert!(h.any_present());
            let r = verify(Some(&key()), &h, "POST", PATH, BODY, None, at(TS), &s).await;
            assert!(matches!(r, Err(EnvelopeError::Missing)), "{h:?}");
        }
        assert!(!EnvelopeHeaders::default().any_present());
        assert!(
            EnvelopeHeaders {
                signature: Some(""),
                ..Default::default()
            }
            .any_present()
        );
        for bad in ["abc", "1.5", " 1779364800", "99999999999999999999"] {
            let r = verify(
                Some(&key()),
                &headers(bad, "n", &sig),
                "POST",
                PATH,
                BODY,
                None,
                at(TS),
                &s,
            )
            .await;
            assert!(
                matches!(r, Err(EnvelopeError::BadTimestamp)),
                "{bad}: {r:?}"
            );
        }
        // In i64 range but not a representable instant.
        let r = verify(
            Some(&key()),
            &headers(&i64::MAX.to_string(), "n", &sig),
            "POST",
            PATH,
            BODY,
            None,
            at(TS),
            &s,
        )
        .await;
        assert!(matches!(r, Err(EnvelopeError::BadTimestamp)), "{r:?}");
    }

    #[tokio::test]
    async fn a_failing_nonce_store_fails_closed() {
        let r = check_at(at(TS), "n", &Down).await;
        assert!(matches!(r, Err(EnvelopeError::Unavailable(_))), "{r:?}");
    }

    #[test]
    fn every_reason_is_the_same_401_to_the_caller() {
        let reasons = [
            EnvelopeError::NotConfigured,
            EnvelopeError::Missing,
            EnvelopeError::BadTimestamp,
            EnvelopeError::Skew,
            EnvelopeError::RequestIdMismatch,
            EnvelopeError::BadSignature,
            EnvelopeError::Replayed,
            EnvelopeError::Unavailable(StoreError::Invalid("x".into())),
        ];
        for r in reasons {
            let api = r.to_api();
            assert_eq!(api.status, 401);
            assert_eq!(api.body.error, "access_denied");
            assert_eq!(
                api.body.error_description.as_deref(),
                Some("invalid gateway exchange signature")
            );
        }
    }
}
