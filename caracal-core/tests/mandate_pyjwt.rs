//! An independent client: PyJWT (with `cryptography`) verifies one of our mandates against
//! our JWKS document, and produces an ES256 token that our verifier accepts through a JWKS it
//! publishes. `.ci/run` installs PyJWT; without python3 or PyJWT the test prints SKIPPED, and
//! under `CI=true` that is a failure.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mandate_support;

use std::process::Command;

use caracal_core::clock::{Clock, SystemClock};
use caracal_core::mandate::{
    Jwks, MandateUse, SigningKey, VerificationKeys, mint, parse_jwks, verify,
};
use caracal_test_support::is_ci;
use mandate_support::*;
use serde_json::Value;

const SCRIPT: &str = r#"
import json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

token, jwks, issuer, audience = sys.argv[1:5]
# 1. Verify our mandate with the key our JWKS names (PyJWT picks nothing itself).
kid = jwt.get_unverified_header(token)["kid"]
keyset = jwt.PyJWKSet.from_json(jwks)
key = next(k for k in keyset.keys if k.key_id == kid)
claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=audience, issuer=issuer,
                    options={"require": ["exp", "iat", "iss", "aud"]})
# 2. Mint our own ES256 token and publish its JWKS.
priv = ec.generate_private_key(ec.SECP256R1())
jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(priv.public_key()))
jwk.update({"kid": "py-key", "alg": "ES256", "use": "sig"})
mine = dict(claims)
mine["jti"] = "018f7d6a-8f4a-7d9f-9a54-5e4fd7df0099"
ours = jwt.encode(mine, priv, algorithm="ES256", headers={"kid": "py-key"})
print(json.dumps({"claims": claims, "token": ours, "jwks": {"keys": [jwk]}}))
"#;

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn pyjwt_verifies_our_mandate_and_we_verify_its_token() {
    if !python_ready() {
        assert!(
            !is_ci(),
            "CI=true: python3 with PyJWT and cryptography is required (see .ci/run)"
        );
        eprintln!("SKIPPED: pyjwt interop: python3 with PyJWT/cryptography not available");
        return;
    }
    // PyJWT checks exp/iat against the real clock, so this test uses it too.
    let now = SystemClock.now();
    let (key, _) = SigningKey::generate("018f7d6a-8f4a-7d9f-9a54-5e4fd7dfaaaa").unwrap();
    let set = VerificationKeys::new([key.verification_key().unwrap()]);
    let claims = claims_for(MandateUse::Resource, now, 900);
    let token = mint(&claims, &key).unwrap();
    let jwks = Jwks::from_keys(&set).to_json();

    let out = Command::new("python3")
        .args(["-c", SCRIPT, &token, &jwks, ISSUER, RESOURCE])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused our mandate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["claims"], serde_json::to_value(&claims).unwrap());

    // PyJWT's token, through PyJWT's JWKS, with our verifier.
    let theirs = reply["token"].as_str().unwrap();
    let their_keys = parse_jwks(reply["jwks"].to_string().as_bytes()).unwrap();
    let got = verify(theirs, &their_keys, &policy_for(MandateUse::Resource), now).unwrap();
    assert_eq!(got.jti, "018f7d6a-8f4a-7d9f-9a54-5e4fd7df0099");
    assert_eq!(got.delegation_chain, claims.delegation_chain);
    // And it is not accepted under our own zone keys.
    assert!(verify(theirs, &set, &policy_for(MandateUse::Resource), now).is_err());
}
