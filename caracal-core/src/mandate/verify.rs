//! Verifying a mandate (reference `sts.md` §3.6, `gateway.md` §4.1 and §7.2 steps 3–6).
//!
//! The JWS is parsed and its signature checked by `jsonwebtoken` (aws-lc-rs backend, ES256
//! only); the claim rules are checked here against a caller-supplied `now`, so tests drive
//! time with a fake clock. Order, cheapest and least trusting first:
//!
//! 1. size ([`MAX_TOKEN_BYTES`]), before any decoding;
//! 2. header: well formed, `alg` exactly `ES256`, non-empty `kid`; all before any key is
//!    looked up (so `none`, `HS256` and the like never reach a key);
//! 3. `kid` in the zone's verification set;
//! 4. signature, then the claim set parses as [`MandateClaims`] (required claims present);
//! 5. `iss` exact, `aud` contains the audience, `exp` not past (leeway), `iat` not in the
//!    future (leeway), `zone_id` equal, `use` equal, `jti`/`sub`/`sid`/`root_sid`/`client_id`
//!    non-empty.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};

use super::claims::{MandateClaims, MandateUse};
use super::error::MandateError;
use super::keys::{VerificationKeys, ZoneKeys};

/// The largest token accepted, in bytes (a mandate with a long delegation chain is ~1.5 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock-skew leeway for `exp` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECONDS: i64 = 60;

/// What a verifier expects of a mandate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// The zone whose keys verify the token; the `zone_id` claim must equal it.
    pub zone_id: String,
    /// The exact expected `iss` (`ISSUER_URL`).
    pub issuer: String,
    /// The only mandate class this verifier accepts.
    pub expected_use: MandateUse,
    /// A value `aud` must contain (`ISSUER_URL` at the STS; the resource identifier at a
    /// resource).
    pub audience: String,
    /// Leeway for `exp` and `iat`, seconds.
    pub leeway_seconds: i64,
}

impl VerifyPolicy {
    /// A policy with the default 60 s leeway.
    pub fn new(
        zone_id: impl Into<String>,
        issuer: impl Into<String>,
        expected_use: MandateUse,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            zone_id: zone_id.into(),
            issuer: issuer.into(),
            expected_use,
            audience: audience.into(),
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
        }
    }

    /// The STS's own check of a presented subject token: `aud` must contain the issuer, so a
    /// resource mandate is structurally refused (RFC 8693 subject-confusion defence).
    pub fn sts_subject(
        zone_id: impl Into<String>,
        issuer: impl Into<String>,
        expected_use: MandateUse,
    ) -> Self {
        let issuer = issuer.into();
        Self::new(zone_id, issuer.clone(), expected_use, issuer)
    }
}

/// jsonwebtoken's part of the job: ES256 only, signature on, and none of its own claim or
/// time checks (it reads the system clock; ours come from the injected `now`).
fn validation() -> &'static Validation {
    static VALIDATION: OnceLock<Validation> = OnceLock::new();
    VALIDATION.get_or_init(|| {
        // Pin jsonwebtoken's process-wide provider to aws-lc-rs. Without it, a build that
        // unifies both of its crypto features (some other crate enabling `rust_crypto`)
        // would panic on first use. If the host installed a provider first, that one stays.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
        );
        let mut v = Validation::new(Algorithm::ES256);
        v.algorithms = vec![Algorithm::ES256];
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.leeway = 0;
        v
    })
}

/// Steps 1–2: size and header, before any key is touched. Returns the `kid`.
pub fn precheck(token: &str) -> Result<String, MandateError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(MandateError::TooLarge {
            len: token.len(),
            limit: MAX_TOKEN_BYTES,
        });
    }
    // An `alg` jsonwebtoken does not know at all (`none`, garbage) fails here as Malformed;
    // a known one other than ES256 is UnsupportedAlgorithm.
    let header: Header = jsonwebtoken::decode_header(token).map_err(|_| MandateError::Malformed)?;
    if header.alg != Algorithm::ES256 {
        return Err(MandateError::UnsupportedAlgorithm);
    }
    match header.kid {
        Some(kid) if !kid.is_empty() => Ok(kid),
        _ => Err(MandateError::MissingKid),
    }
}

/// Verify `token` against `keys` (the zone's set, already loaded) and `policy` at `now`.
/// Pure: no I/O, no clock, no key parsing.
pub fn verify(
    token: &str,
    keys: &VerificationKeys,
    policy: &VerifyPolicy,
    now: DateTime<Utc>,
) -> Result<MandateClaims, MandateError> {
    let kid = precheck(token)?;
    verify_after_precheck(token, &kid, keys, policy, now)
}

fn verify_after_precheck(
    token: &str,
    kid: &str,
    keys: &VerificationKeys,
    policy: &VerifyPolicy,
    now: DateTime<Utc>,
) -> Result<MandateClaims, MandateError> {
    let key = keys.get(kid).ok_or(MandateError::UnknownKid)?;
    let data = jsonwebtoken::decode::<MandateClaims>(token, key.decoding_key(), validation())
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey => MandateError::BadSignature,
            ErrorKind::InvalidAlgorithm => MandateError::UnsupportedAlgorithm,
            // The header already parsed in `precheck`, so a JSON or UTF-8 failure now is the
            // claim set (only reached after the signature verified).
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => MandateError::MalformedClaims,
            _ => MandateError::Malformed,
        })?;
    check_claims(data.claims, policy, now)
}

/// Proof that one exact token carries a valid ES256 signature by one exact key: what the
/// Gateway's signature check (check 11) hands an in-process STS so the re-exchange verifies
/// the mandate once per hop (SPEC §6) instead of twice.
///
/// Why this is safe: the fields are private and the only constructor is [`verify_signature`],
/// which does the ECDSA verification; the proof binds the SHA-256 of the whole token and the
/// verifying key's public point, and [`ZoneKeys::verify_proven`] uses it only when both match
/// the token presented and the key the zone's current set holds under that `kid` (a key
/// retired in between falls back to the full verification, which then fails). Only the
/// signature arithmetic is skipped: the claims are parsed and checked exactly as in [`verify`].
/// It cannot cross a process boundary (it is not serialisable), so a remote Gateway's
/// exchange is always verified in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureProof {
    digest: [u8; 32],
    kid: String,
    point: Vec<u8>,
}

impl SignatureProof {
    fn covers(&self, token: &str, kid: &str, keys: &VerificationKeys) -> bool {
        use sha2::Digest as _;
        // Public inputs only; constant-time comparison is not needed for a digest match.
        self.kid == kid
            && keys
                .get(kid)
                .is_some_and(|k| k.sec1_point() == self.point.as_slice())
            && self.digest == <[u8; 32]>::from(sha2::Sha256::digest(token.as_bytes()))
    }
}

/// Verify only the ES256 signature of `token` with the key of its `kid` in `keys` (no claim
/// checks: size and header as in [`precheck`], then the raw `r‖s` signature over the signing
/// input). The Gateway's check 11; see [`SignatureProof`].
pub fn verify_signature(
    token: &str,
    keys: &VerificationKeys,
) -> Result<SignatureProof, MandateError> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    use base64::Engine as _;
    use sha2::Digest as _;
    let kid = precheck(token)?;
    let key = keys.get(&kid).ok_or(MandateError::UnknownKid)?;
    let (signed, sig) = token.rsplit_once('.').ok_or(MandateError::Malformed)?;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| MandateError::Malformed)?;
    if sig.len() != 64 {
        return Err(MandateError::BadSignature);
    }
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.sec1_point())
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| MandateError::BadSignature)?;
    Ok(SignatureProof {
        digest: sha2::Sha256::digest(token.as_bytes()).into(),
        point: key.sec1_point().to_vec(),
        kid,
    })
}

/// The claims of a token whose signature is already proven, checked against `policy`.
fn claims_of_proven(
    token: &str,
    policy: &VerifyPolicy,
    now: DateTime<Utc>,
) -> Result<MandateClaims, MandateError> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MandateError::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| MandateError::Malformed)?;
    let claims: MandateClaims =
        serde_json::from_slice(&bytes).map_err(|_| MandateError::MalformedClaims)?;
    check_claims(claims, policy, now)
}

fn check_claims(
    claims: MandateClaims,
    policy: &VerifyPolicy,
    now: DateTime<Utc>,
) -> Result<MandateClaims, MandateError> {
    let now = now.timestamp();
    let leeway = policy.leeway_seconds.max(0);
    if claims.iss != policy.issuer {
        return Err(MandateError::WrongIssuer);
    }
    if !claims.aud.contains(&policy.audience) {
        return Err(MandateError::WrongAudience);
    }
    if now.saturating_sub(leeway) >= claims.exp {
        return Err(MandateError::Expired);
    }
    if claims.iat < 0 || claims.iat > now.saturating_add(leeway) {
        return Err(MandateError::IssuedInFuture);
    }
    if claims.zone_id != policy.zone_id {
        return Err(MandateError::ZoneMismatch);
    }
    if claims.use_ != policy.expected_use {
        return Err(MandateError::wrong_use(policy.expected_use, claims.use_));
    }
    for (name, value) in [
        ("jti", &claims.jti),
        ("sub", &claims.sub),
        ("sid", &claims.sid),
        ("root_sid", &claims.root_sid),
        ("client_id", &claims.client_id),
    ] {
        if value.is_empty() {
            return Err(MandateError::EmptyClaim(name));
        }
    }
    Ok(claims)
}

impl ZoneKeys {
    /// Verify `token` for `policy.zone_id` with the zone's verification set (cached) at the
    /// ring's clock. Size and header are checked before the keys are loaded; a key set that
    /// cannot be loaded fails closed as [`MandateError::KeySetUnavailable`].
    pub async fn verify(
        &self,
        token: &str,
        policy: &VerifyPolicy,
    ) -> Result<MandateClaims, MandateError> {
        let kid = precheck(token)?;
        let keys = self
            .verification_keys(&policy.zone_id)
            .await
            .map_err(|e| MandateError::KeySetUnavailable(Box::new(e)))?;
        verify_after_precheck(token, &kid, &keys, policy, self.clock().now())
    }

    /// [`ZoneKeys::verify`], skipping the signature arithmetic when `proof` proves this very
    /// token's signature by the key the zone's set holds now under its `kid` (see
    /// [`SignatureProof`]); any mismatch takes the full path.
    pub async fn verify_proven(
        &self,
        token: &str,
        policy: &VerifyPolicy,
        proof: Option<&SignatureProof>,
    ) -> Result<MandateClaims, MandateError> {
        let Some(proof) = proof else {
            return self.verify(token, policy).await;
        };
        let kid = precheck(token)?;
        let keys = self
            .verification_keys(&policy.zone_id)
            .await
            .map_err(|e| MandateError::KeySetUnavailable(Box::new(e)))?;
        if proof.covers(token, &kid, &keys) {
            return claims_of_proven(token, policy, self.clock().now());
        }
        verify_after_precheck(token, &kid, &keys, policy, self.clock().now())
    }
}
