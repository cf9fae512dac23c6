//! Fuzz (proptest, bounded) of JWT parsing in the mandate verifier on *correctly signed*
//! tokens whose header or claims are hostile: every claim removed, retyped or replaced, and
//! headers with other algorithms, kids and types. The verifier answers each with the claims
//! or a typed `MandateError`, never a panic, and accepts only what satisfies its policy.
//! (`mandate_props.rs` covers random strings and mutations of a valid token.)

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mandate_support;

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caracal_core::mandate::verify::precheck;
use caracal_core::mandate::{MandateUse, SigningKey, VerificationKeys, verify};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mandate_support::*;
use proptest::prelude::*;
use serde_json::{Map, Value};

struct Fixture {
    encoding: EncodingKey,
    keys: VerificationKeys,
    claims: Map<String, Value>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (key, pkcs8) = SigningKey::generate("kid-1").unwrap();
        let keys = VerificationKeys::new([key.verification_key().unwrap()]);
        let claims = serde_json::to_value(claims_for(MandateUse::Gateway, fixture_now(), 900))
            .unwrap()
            .as_object()
            .unwrap()
            .clone();
        Fixture {
            encoding: EncodingKey::from_ec_der(&pkcs8),
            keys,
            claims,
        }
    })
}

/// ES256-sign `claims` under `kid` with the zone's real key.
fn signed(claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &fixture().encoding).unwrap()
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
        prop::sample::select(vec![
            "zone-1",
            "gateway",
            "session",
            "resource",
            "https://sts.example.com",
            ""
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Verify and check the answer: an accepted token satisfies the policy.
fn check(token: &str) -> Result<bool, TestCaseError> {
    let policy = policy_for(MandateUse::Gateway);
    let now = fixture_now();
    match verify(token, &fixture().keys, &policy, now) {
        Ok(c) => {
            prop_assert_eq!(&c.zone_id, &policy.zone_id);
            prop_assert_eq!(&c.iss, &policy.issuer);
            prop_assert_eq!(c.use_, MandateUse::Gateway);
            prop_assert!(c.exp + policy.leeway_seconds > now.timestamp());
            prop_assert!(c.iat - policy.leeway_seconds <= now.timestamp());
            for v in [&c.jti, &c.sub, &c.sid, &c.root_sid, &c.client_id] {
                prop_assert!(!v.is_empty());
            }
            Ok(true)
        }
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            Ok(false)
        }
    }
}

const CLAIMS: [&str; 12] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "jti",
    "zone_id",
    "client_id",
    "sid",
    "root_sid",
    "use",
    "sub_type",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn signed_tokens_with_hostile_claims(
        edits in prop::collection::vec((0..CLAIMS.len(), any_json(), any::<bool>()), 1..4),
        extra in prop::option::of(("[a-z_]{1,8}", any_json())),
    ) {
        // The unedited claims verify: the property below tests the verifier, not the signer.
        let base = Value::Object(fixture().claims.clone());
        prop_assert!(check(&signed(&base, Some("kid-1")))?);
        let mut claims = fixture().claims.clone();
        for (i, value, remove) in edits {
            if remove {
                claims.remove(CLAIMS[i]);
            } else {
                claims.insert(CLAIMS[i].to_owned(), value);
            }
        }
        if let Some((k, v)) = extra {
            claims.insert(k, v);
        }
        check(&signed(&Value::Object(claims), Some("kid-1")))?;
    }

    #[test]
    fn hostile_headers(
        header in prop::collection::btree_map(
            prop::sample::select(vec!["alg", "kid", "typ", "jku", "x5u", "crit", "b64"]),
            any_json(),
            0..5,
        ),
        kid in prop::option::of(prop_oneof![Just("kid-1".to_owned()), ".{0,12}"]),
    ) {
        // A header we write by hand, with the payload and signature of a valid token: the
        // verifier must refuse before or at the signature, whatever the header says.
        let good = signed(&Value::Object(fixture().claims.clone()), Some("kid-1"));
        let mut parts = good.split('.');
        let (h, p, s) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let mut object: Map<String, Value> = header.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if let Some(kid) = &kid {
            object.insert("kid".into(), Value::String(kid.clone()));
        }
        let forged = URL_SAFE_NO_PAD.encode(Value::Object(object).to_string());
        let token = format!("{forged}.{p}.{s}");
        let _ = precheck(&token);
        let accepted = check(&token)?;
        // Only the original header bytes carry the signature.
        prop_assert!(!accepted || forged == h);
        // The alg "none" and empty-signature forms never pass.
        check(&format!("{forged}.{p}."))?;
        let unsigned = format!("{h}.{p}.");
        prop_assert!(!check(&unsigned)?);
    }
}
