//! The JWKS document (reference `sts.md` §1.2) and its parser (`gateway.md` §4.1), so the
//! STS renders, and the Gateway and resource verifiers consume, exactly one format.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::error::MandateError;
use super::keys::{VerificationKey, VerificationKeys};

/// The largest JWKS body a verifier accepts (the reference's 256 KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The `Cache-Control` header the STS sends with the JWKS.
pub const JWKS_CACHE_CONTROL: &str = "public, max-age=300, must-revalidate";

/// A JWKS document: `{"keys":[...]}`, active key first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One P-256 verification key in the reference's member order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `EC`.
    pub kty: String,
    /// Always `P-256`.
    pub crv: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// The key id (the zone signing key's `kid`).
    pub kid: String,
    /// Always `ES256`.
    pub alg: String,
    /// x: 32-byte big-endian coordinate, left-zero-padded, base64url without padding.
    pub x: String,
    /// y: as `x`.
    pub y: String,
}

impl Jwk {
    /// The JWK of a verification key.
    pub fn from_key(key: &VerificationKey) -> Self {
        Self {
            kty: "EC".to_owned(),
            crv: "P-256".to_owned(),
            use_: "sig".to_owned(),
            kid: key.kid().to_owned(),
            alg: "ES256".to_owned(),
            x: URL_SAFE_NO_PAD.encode(key.x()),
            y: URL_SAFE_NO_PAD.encode(key.y()),
        }
    }
}

impl Jwks {
    /// The document for a key set, in the set's order (active first).
    pub fn from_keys(keys: &VerificationKeys) -> Self {
        Self {
            keys: keys.iter().map(Jwk::from_key).collect(),
        }
    }

    /// The response body.
    pub fn to_json(&self) -> String {
        // INVARIANT: a struct of strings always serialises.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"keys\":[]}"))
    }
}

/// A key as received: every member optional, so one odd key does not sink the document.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    crv: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl RawJwk {
    /// The key if it is usable for ES256 verification (`gateway.md` §4.1): `kty=EC`,
    /// `crv=P-256`, non-empty `kid`, `alg=ES256`, `use` absent/empty or `sig`, `key_ops` (if
    /// present) containing `verify`, x and y decoding to exactly 32 bytes, point on the curve.
    fn usable(self) -> Option<VerificationKey> {
        let kid = self.kid.filter(|k| !k.is_empty())?;
        let ok = self.kty.as_deref() == Some("EC")
            && self.crv.as_deref() == Some("P-256")
            && self.alg.as_deref() == Some("ES256")
            && matches!(self.use_.as_deref(), None | Some("" | "sig"))
            && self
                .key_ops
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|o| o == "verify"));
        if !ok {
            return None;
        }
        let x = URL_SAFE_NO_PAD.decode(self.x?).ok()?;
        let y = URL_SAFE_NO_PAD.decode(self.y?).ok()?;
        VerificationKey::from_coordinates(kid, &x, &y).ok()
    }
}

/// Parse a JWKS body into verification keys, in document order. Unusable keys are skipped;
/// a body over [`MAX_JWKS_BYTES`], malformed JSON, or no usable key is an error (and the
/// caller caches nothing).
pub fn parse_jwks(body: &[u8]) -> Result<VerificationKeys, MandateError> {
    if body.len() > MAX_JWKS_BYTES {
        return Err(MandateError::Jwks("document too large"));
    }
    let raw: RawJwks =
        serde_json::from_slice(body).map_err(|_| MandateError::Jwks("malformed document"))?;
    let keys: Vec<VerificationKey> = raw
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<RawJwk>(v).ok())
        .filter_map(RawJwk::usable)
        .collect();
    if keys.is_empty() {
        return Err(MandateError::Jwks("no usable key"));
    }
    Ok(VerificationKeys::new(keys))
}
