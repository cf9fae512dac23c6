//! Minting: a mandate's claims signed as a compact ES256 JWS (reference `sts.md` §3.1).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::claims::MandateClaims;
use super::error::MandateError;
use super::keys::SigningKey;

/// The protected header, in the reference's member order.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'static str,
}

/// Sign `claims` with `key`: `base64url(header) . base64url(claims) . base64url(r || s)`,
/// header `{"alg":"ES256","kid":<kid>,"typ":"JWT"}`, claims exactly as [`MandateClaims`]
/// serialises.
///
/// The signature is computed by aws-lc-rs (`ECDSA_P256_SHA256_FIXED_SIGNING`, the JOSE
/// fixed-width `r || s`); only the three-part framing is assembled here. That is deliberate:
/// `jsonwebtoken::encode` takes the key as PKCS#8 bytes and re-parses and re-validates it on
/// every call (`EcdsaKeyPair::from_pkcs8`, about 13 µs here, roughly as much as the signature
/// itself), which would put a mint at ~1.7× a bare signature against the 25 µs budget
/// (SPEC §6). Signing with a key pair parsed once keeps a mint at one signature plus two
/// small base64 encodings. Every token minted here is checked by jsonwebtoken's decoder
/// ([`super::verify()`]) and by PyJWT in the tests, so the framing stays standard.
pub fn mint(claims: &MandateClaims, key: &SigningKey) -> Result<String, MandateError> {
    let header = serde_json::to_vec(&Header {
        alg: "ES256",
        kid: key.kid(),
        typ: "JWT",
    })
    .map_err(|_| MandateError::Serialize)?;
    let payload = serde_json::to_vec(claims).map_err(|_| MandateError::Serialize)?;

    // base64url without padding: 4 output bytes per 3 input bytes, rounded up.
    let b64_len = |n: usize| n.div_ceil(3) * 4;
    let mut token = String::with_capacity(b64_len(header.len()) + b64_len(payload.len()) + 88);
    URL_SAFE_NO_PAD.encode_string(&header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
    Ok(token)
}
