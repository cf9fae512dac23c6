//! Mandates end to end on the in-memory store: mint → verify for every class with every
//! claim of the interop fixture, each verification failure, the zone key ring (lazy first
//! key, rotation with its 24 h overlap and `caracal.keys.invalidate`, caches, store outages,
//! unusable rows) and the JWKS document and parser.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mandate_support;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use serde_json::{Value, json};

use caracal_core::clock::{Clock, FakeClock};
use caracal_core::mandate::jwks::MAX_JWKS_BYTES;
use caracal_core::mandate::keys::{KEY_CACHE_TTL, ROTATION_OVERLAP};
use caracal_core::mandate::{
    Jwks, MAX_TOKEN_BYTES, MandateError, MandateUse, SigningKey, VerificationKeys, mint,
    parse_jwks, verify,
};
use caracal_core::secrets::ZONE_SIGNING_KEY_AAD;
use caracal_core::store::keys::SigningKeyStore;
use caracal_core::store::memory::MemoryStore;
use caracal_core::store::outbox::OutboxStore;
use caracal_core::streams::names::KEYS_INVALIDATE;
use mandate_support::*;

const CLASSES: [MandateUse; 3] = [
    MandateUse::Session,
    MandateUse::Gateway,
    MandateUse::Resource,
];

fn b64(v: &impl serde::Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn part(token: &str, i: usize) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(token.split('.').nth(i).unwrap())
        .unwrap()
}

/// A standalone key and its one-key set.
fn key_and_set(kid: &str) -> (SigningKey, VerificationKeys) {
    let (key, _) = SigningKey::generate(kid).unwrap();
    let set = VerificationKeys::new([key.verification_key().unwrap()]);
    (key, set)
}

#[test]
fn round_trip_every_class_with_every_fixture_claim() {
    let (key, set) = key_and_set("kid-1");
    let now = fixture_now();
    for use_ in CLASSES {
        let claims = claims_for(use_, now, 900);
        let token = mint(&claims, &key).unwrap();
        // Header exactly as the reference writes it; payload exactly as the claims serialise.
        assert_eq!(
            part(&token, 0),
            br#"{"alg":"ES256","kid":"kid-1","typ":"JWT"}"#.to_vec()
        );
        assert_eq!(part(&token, 1), serde_json::to_vec(&claims).unwrap());
        assert_eq!(part(&token, 2).len(), 64, "JOSE r||s");
        let got = verify(&token, &set, &policy_for(use_), now).unwrap();
        assert_eq!(got, claims, "{use_:?}");
    }
    // The fixture itself (its own iat/exp, `aud` as a string) round-trips unchanged.
    let fixture = fixture_claims();
    let token = mint(&fixture, &key).unwrap();
    let got = verify(&token, &set, &policy_for(MandateUse::Resource), now).unwrap();
    assert_eq!(got, fixture);
    let value: Value = serde_json::from_slice(&part(&token, 1)).unwrap();
    let expected: Value = serde_json::from_str(include_str!(
        "fixtures/interop/jwt-claims.resource.valid.json"
    ))
    .unwrap();
    assert_eq!(value, expected);
}

#[test]
fn jsonwebtoken_decodes_our_tokens_through_the_jwk() {
    let (key, set) = key_and_set("kid-1");
    let token = mint(&claims_for(MandateUse::Gateway, fixture_now(), 900), &key).unwrap();
    let jwk = &Jwks::from_keys(&set).keys[0];
    let dk = jsonwebtoken::DecodingKey::from_ec_components(&jwk.x, &jwk.y).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.validate_exp = false;
    v.set_audience(&[ISSUER]);
    v.set_issuer(&[ISSUER]);
    let data = jsonwebtoken::decode::<Value>(&token, &dk, &v).unwrap();
    assert_eq!(data.header.kid.as_deref(), Some("kid-1"));
    assert_eq!(data.claims["use"], "gateway");
}

#[test]
fn every_verification_failure_is_typed() {
    let (key, set) = key_and_set("kid-1");
    let now = fixture_now();
    let use_ = MandateUse::Gateway;
    let policy = policy_for(use_);
    let claims = claims_for(use_, now, 900);
    let good = mint(&claims, &key).unwrap();
    let run = |t: &str| verify(t, &set, &policy, now).unwrap_err();

    // alg none, crafted by hand.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","kid":"kid-1","typ":"JWT"})),
        b64(&claims)
    );
    assert!(matches!(
        run(&none),
        MandateError::Malformed | MandateError::UnsupportedAlgorithm
    ));
    // HS256 "signed" with the public key bytes (the classic key-confusion attack).
    let public = set.get("kid-1").unwrap().sec1_point().to_vec();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("kid-1".into());
    let hs = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert!(matches!(run(&hs), MandateError::UnsupportedAlgorithm));
    // ES256 without a kid.
    let no_kid = format!("{}.{}", b64(&json!({"alg":"ES256","typ":"JWT"})), {
        let mut parts = good.splitn(2, '.');
        parts.next();
        parts.next().unwrap().to_owned()
    });
    assert!(matches!(run(&no_kid), MandateError::MissingKid));
    // A kid the zone does not have, and the right kid on a different key.
    let (other, _) = key_and_set("kid-2");
    assert!(matches!(
        run(&mint(&claims, &other).unwrap()),
        MandateError::UnknownKid
    ));
    let (imposter, _) = key_and_set("kid-1");
    assert!(matches!(
        run(&mint(&claims, &imposter).unwrap()),
        MandateError::BadSignature
    ));
    // Claims.
    let with = |f: &dyn Fn(&mut caracal_core::mandate::MandateClaims)| {
        let mut c = claims.clone();
        f(&mut c);
        mint(&c, &key).unwrap()
    };
    assert!(matches!(
        run(&with(&|c| c.iss = "https://evil.example".into())),
        MandateError::WrongIssuer
    ));
    assert!(matches!(
        run(&with(
            &|c| c.aud = caracal_core::mandate::Audience::One(RESOURCE.into())
        )),
        MandateError::WrongAudience
    ));
    assert!(matches!(
        run(&with(&|c| c.zone_id = "zone-2".into())),
        MandateError::ZoneMismatch
    ));
    assert!(matches!(
        run(&with(&|c| c.use_ = MandateUse::Session)),
        MandateError::WrongUse {
            expected: "gateway",
            found: "session"
        }
    ));
    assert!(matches!(
        run(&with(&|c| c.sid = String::new())),
        MandateError::EmptyClaim("sid")
    ));
    // exp: inside the 60 s leeway passes, beyond fails.
    let exp = claims.exp;
    let at = |secs: i64| chrono::DateTime::from_timestamp(secs, 0).unwrap();
    assert!(verify(&good, &set, &policy, at(exp + 59)).is_ok());
    assert!(matches!(
        verify(&good, &set, &policy, at(exp + 60)).unwrap_err(),
        MandateError::Expired
    ));
    // iat in the future: inside the leeway passes, beyond fails.
    let soon = with(&|c| c.iat = now.timestamp() + 59);
    assert!(verify(&soon, &set, &policy, now).is_ok());
    let later = with(&|c| c.iat = now.timestamp() + 61);
    assert!(matches!(run(&later), MandateError::IssuedInFuture));
    // Tampered payload and signature.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut tampered = claims.clone();
    tampered.scope = Some("read write admin".into());
    let forged = format!("{}.{}.{}", parts[0], b64(&tampered), parts[2]);
    assert!(matches!(run(&forged), MandateError::BadSignature));
    let mut sig = part(&good, 2);
    sig[10] ^= 0x01;
    parts[2] = URL_SAFE_NO_PAD.encode(&sig);
    assert!(matches!(run(&parts.join(".")), MandateError::BadSignature));
    // Oversize, checked first.
    let big = format!("{good}{}", "A".repeat(MAX_TOKEN_BYTES));
    assert!(matches!(run(&big), MandateError::TooLarge { .. }));
    // Garbage.
    for junk in [
        "",
        ".",
        "..",
        "a.b.c",
        "eyJhbGciOiJFUzI1NiJ9..",
        "\u{0}\u{ffff}",
    ] {
        assert!(run(junk).is_rejection(), "{junk:?}");
    }
    // Every rejection renders as invalid_token; a zone mismatch is invalid_zone at resources.
    assert_eq!(MandateError::BadSignature.code(), "invalid_token");
    assert_eq!(MandateError::ZoneMismatch.code(), "invalid_token");
    assert_eq!(MandateError::ZoneMismatch.verifier_code(), "invalid_zone");
}

#[test]
fn a_signed_non_mandate_is_malformed_claims() {
    let (pkcs8_key, pkcs8) = SigningKey::generate("kid-1").unwrap();
    let set = VerificationKeys::new([pkcs8_key.verification_key().unwrap()]);
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("kid-1".into());
    let token = jsonwebtoken::encode(
        &h,
        &json!({"iss": ISSUER, "aud": [ISSUER], "exp": 1_790_000_900i64, "iat": 1_790_000_000i64}),
        &jsonwebtoken::EncodingKey::from_ec_der(&pkcs8),
    )
    .unwrap();
    let err = verify(
        &token,
        &set,
        &policy_for(MandateUse::Gateway),
        fixture_now(),
    )
    .unwrap_err();
    assert!(matches!(err, MandateError::MalformedClaims), "{err:?}");
}

#[tokio::test]
async fn alg_is_refused_before_any_key_is_loaded() {
    let clock = FakeClock::new(fixture_now());
    let keys = ring(Arc::new(MemoryStore::new()), &clock);
    let claims = claims_for(MandateUse::Session, fixture_now(), 900);
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","kid":"k","typ":"JWT"})),
        b64(&claims)
    );
    // The zone has no keys at all: a key lookup would answer KeySetUnavailable(NoKeys).
    let err = keys
        .verify(&none, &policy_for(MandateUse::Session))
        .await
        .unwrap_err();
    assert!(matches!(err, MandateError::Malformed), "{err:?}");
    let (other, _) = key_and_set("k");
    let err = keys
        .verify(
            &mint(&claims, &other).unwrap(),
            &policy_for(MandateUse::Session),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, MandateError::KeySetUnavailable(ref e) if matches!(**e, MandateError::NoKeys)),
        "{err:?}"
    );
}

#[tokio::test]
async fn first_key_is_lazy_and_verifies() {
    let clock = FakeClock::new(fixture_now());
    let store = Arc::new(MemoryStore::new());
    let keys = ring(store.clone(), &clock);
    // The JWKS never creates a key.
    assert!(matches!(
        keys.jwks_keys(ZONE).await.unwrap_err(),
        MandateError::NoKeys
    ));
    assert_eq!(MandateError::NoKeys.code(), "resource_not_found");
    let key = keys.signing_key(ZONE).await.unwrap();
    assert!(
        !format!("{key:?}").contains("pair"),
        "Debug shows the kid only"
    );
    let again = keys.signing_key(ZONE).await.unwrap();
    assert_eq!(key.kid(), again.kid());
    let rows = store.latest_signing_keys(ZONE, 5).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kid, key.kid());
    assert_eq!(
        uuid::Uuid::parse_str(key.kid()).unwrap().get_version_num(),
        7
    );
    // Sealed at rest: the envelope opens only under the zone-signing-key AAD.
    let ring_kek = keyring();
    assert!(
        ring_kek
            .open(ZONE_SIGNING_KEY_AAD, &rows[0].envelope)
            .is_ok()
    );
    assert!(
        ring_kek
            .open("caracal/secrets/other", &rows[0].envelope)
            .is_err()
    );

    for use_ in CLASSES {
        let claims = claims_for(use_, clock.now(), 900);
        let token = mint(&claims, &key).unwrap();
        assert_eq!(
            keys.verify(&token, &policy_for(use_)).await.unwrap(),
            claims
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_use_yields_usable_keys() {
    let clock = FakeClock::new(fixture_now());
    let store = Arc::new(MemoryStore::new());
    // Two replicas over one store: within a replica generation is shared; across replicas
    // two versions may appear, and every key handed out still verifies.
    let replicas = [
        Arc::new(ring(store.clone(), &clock)),
        Arc::new(ring(store.clone(), &clock)),
    ];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let r = replicas[i % 2].clone();
        tasks.push(tokio::spawn(async move { r.signing_key(ZONE).await }));
    }
    let verifier = ring(store.clone(), &clock);
    let claims = claims_for(MandateUse::Session, clock.now(), 900);
    for t in tasks {
        let key = t.await.unwrap().unwrap();
        let token = mint(&claims, &key).unwrap();
        verifier
            .verify(&token, &policy_for(MandateUse::Session))
            .await
            .unwrap();
    }
    let rows = store.latest_signing_keys(ZONE, 10).await.unwrap();
    assert!((1..=2).contains(&rows.len()), "{} versions", rows.len());
}

#[tokio::test]
async fn rotation_keeps_the_previous_key_for_24_hours() {
    let clock = FakeClock::new(fixture_now());
    let store = Arc::new(MemoryStore::new());
    let keys = ring(store.clone(), &clock);
    let old = keys.signing_key(ZONE).await.unwrap();
    // A token that outlives the overlap, to see the key (not the expiry) decide.
    let claims = claims_for(MandateUse::Session, clock.now(), 3 * 86_400);
    let old_token = mint(&claims, &old).unwrap();
    let policy = policy_for(MandateUse::Session);
    keys.verify(&old_token, &policy).await.unwrap();

    clock.advance(Duration::minutes(5));
    let rotated = keys.rotate(ZONE).await.unwrap();
    assert_eq!(rotated.version, 2);
    assert_ne!(rotated.kid, old.kid());
    // caracal.keys.invalidate {zone_id} is in the outbox.
    let row = store.get_outbox(&rotated.outbox_id).await.unwrap().unwrap();
    assert_eq!(row.message.stream, KEYS_INVALIDATE);
    assert_eq!(
        row.message.fields,
        vec![("zone_id".to_owned(), ZONE.to_owned())]
    );
    let claimed = store
        .claim("w", 10, Duration::seconds(30), clock.now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    let new = keys.signing_key(ZONE).await.unwrap();
    assert_eq!(new.kid(), rotated.kid);
    let new_token = mint(&claims, &new).unwrap();
    let jwks = keys.jwks_keys(ZONE).await.unwrap();
    let kids: Vec<&str> = jwks.iter().map(|k| k.kid()).collect();
    assert_eq!(kids, [rotated.kid.as_str(), old.kid()], "active first");

    // Inside the overlap both verify, also across the cache's 15-minute refreshes.
    for step in [
        Duration::zero(),
        KEY_CACHE_TTL,
        ROTATION_OVERLAP - Duration::minutes(16),
    ] {
        clock.advance(step);
        keys.verify(&old_token, &policy).await.unwrap();
        keys.verify(&new_token, &policy).await.unwrap();
    }
    // The overlap ends exactly 24 h after the rotation, cached set or not.
    clock.set(fixture_now() + Duration::minutes(5) + ROTATION_OVERLAP - Duration::seconds(1));
    keys.verify(&old_token, &policy).await.unwrap();
    clock.advance(Duration::seconds(1));
    assert!(matches!(
        keys.verify(&old_token, &policy).await.unwrap_err(),
        MandateError::UnknownKid
    ));
    keys.verify(&new_token, &policy).await.unwrap();
    assert_eq!(keys.jwks_keys(ZONE).await.unwrap().len(), 1);
    keys.invalidate(ZONE);
    assert!(keys.verify(&old_token, &policy).await.is_err());
    assert_eq!(keys.verification_keys(ZONE).await.unwrap().len(), 1);
}

#[tokio::test]
async fn invalidate_flushes_a_replicas_caches() {
    let clock = FakeClock::new(fixture_now());
    let store = Arc::new(MemoryStore::new());
    let a = ring(store.clone(), &clock);
    let b = ring(store.clone(), &clock);
    let policy = policy_for(MandateUse::Session);
    let claims = claims_for(MandateUse::Session, clock.now(), 900);
    let first = a.signing_key(ZONE).await.unwrap();
    a.verify(&mint(&claims, &first).unwrap(), &policy)
        .await
        .unwrap();

    // Replica B rotates; A's cached verification set does not know the new kid yet.
    let rotated = b.rotate(ZONE).await.unwrap();
    let new = b.signing_key(ZONE).await.unwrap();
    let token = mint(&claims, &new).unwrap();
    assert!(matches!(
        a.verify(&token, &policy).await.unwrap_err(),
        MandateError::UnknownKid
    ));
    // Issuance reads the latest version every time, so A signs with the new key at once.
    assert_eq!(a.signing_key(ZONE).await.unwrap().kid(), rotated.kid);
    // What the caracal.keys.invalidate consumer does on A:
    a.invalidate(ZONE);
    a.verify(&token, &policy).await.unwrap();
}

#[tokio::test]
async fn a_store_outage_uses_the_cached_key_within_its_ttl() {
    let clock = FakeClock::new(fixture_now());
    let store = Arc::new(MemoryStore::new());
    let flaky = Arc::new(Flaky::new(store.clone()));
    let keys = caracal_core::mandate::ZoneKeys::new(
        flaky.clone(),
        store.clone(),
        keyring(),
        Arc::new(clock.clone()),
        Arc::new(caracal_core::ids::UuidV7),
    );
    let key = keys.signing_key(ZONE).await.unwrap();
    let set = keys.verification_keys(ZONE).await.unwrap();
    flaky.set_down(true);
    clock.advance(KEY_CACHE_TTL - Duration::seconds(1));
    assert_eq!(keys.signing_key(ZONE).await.unwrap().kid(), key.kid());
    assert_eq!(keys.verification_keys(ZONE).await.unwrap().len(), set.len());
    clock.advance(Duration::seconds(1));
    assert!(matches!(
        keys.signing_key(ZONE).await.unwrap_err(),
        MandateError::Store(_)
    ));
    let token = mint(&claims_for(MandateUse::Session, clock.now(), 900), &key).unwrap();
    assert!(matches!(
        keys.verify(&token, &policy_for(MandateUse::Session))
            .await
            .unwrap_err(),
        MandateError::KeySetUnavailable(_)
    ));
    flaky.set_down(false);
    keys.verify(&token, &policy_for(MandateUse::Session))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unusable_row_fails_verification_but_is_skipped_by_the_jwks() {
    let clock = FakeClock::new(fixture_now());
    let store = Arc::new(MemoryStore::new());
    let keys = ring(store.clone(), &clock);
    let good = keys.signing_key(ZONE).await.unwrap();
    let token = mint(&claims_for(MandateUse::Session, clock.now(), 900), &good).unwrap();
    // A newer row that does not decrypt (sealed for another purpose).
    let wrong_aad = keyring().seal("caracal/secrets/other", b"junk").unwrap();
    store
        .insert_signing_key(ZONE, "bad-kid", &wrong_aad, clock.now())
        .await
        .unwrap();
    let err = keys
        .verify(&token, &policy_for(MandateUse::Session))
        .await
        .unwrap_err();
    assert!(
        matches!(err, MandateError::KeySetUnavailable(ref e)
            if matches!(**e, MandateError::KeyMaterial { ref kid } if kid == "bad-kid")),
        "{err:?}"
    );
    assert_eq!(err.code(), "invalid_token");
    let jwks = keys.jwks_keys(ZONE).await.unwrap();
    let kids: Vec<&str> = jwks.iter().map(|k| k.kid()).collect();
    assert_eq!(kids, [good.kid()]);
    // The latest row is unusable, so nothing can be minted (fail closed).
    assert!(matches!(
        keys.signing_key(ZONE).await.unwrap_err(),
        MandateError::KeyMaterial { .. }
    ));
    // A zone whose only row is unusable: the JWKS answers 500.
    store
        .insert_signing_key("zone-2", "bad-2", b"not an envelope", clock.now())
        .await
        .unwrap();
    let err = keys.jwks_keys("zone-2").await.unwrap_err();
    assert!(matches!(err, MandateError::NoUsableKeys));
    assert_eq!(err.code(), "internal_error");
}

#[test]
fn jwks_document_and_parser() {
    let (k1, _) = SigningKey::generate("kid-new").unwrap();
    let (k2, _) = SigningKey::generate("kid-old").unwrap();
    let set = VerificationKeys::new([
        k1.verification_key().unwrap(),
        k2.verification_key().unwrap(),
    ]);
    let body = Jwks::from_keys(&set).to_json();
    let doc: Value = serde_json::from_str(&body).unwrap();
    let first = &doc["keys"][0];
    let members: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut sorted = members.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
    assert!(body.starts_with(
        r#"{"keys":[{"kty":"EC","crv":"P-256","use":"sig","kid":"kid-new","alg":"ES256","x":""#
    ));
    for k in doc["keys"].as_array().unwrap() {
        for c in ["x", "y"] {
            let s = k[c].as_str().unwrap();
            assert_eq!(s.len(), 43, "32 bytes, unpadded");
            assert_eq!(URL_SAFE_NO_PAD.decode(s).unwrap().len(), 32);
        }
    }
    let parsed = parse_jwks(body.as_bytes()).unwrap();
    let kids: Vec<&str> = parsed.iter().map(|k| k.kid()).collect();
    assert_eq!(kids, ["kid-new", "kid-old"]);
    let claims = claims_for(MandateUse::Resource, fixture_now(), 900);
    let token = mint(&claims, &k2).unwrap();
    assert_eq!(
        verify(
            &token,
            &parsed,
            &policy_for(MandateUse::Resource),
            fixture_now()
        )
        .unwrap(),
        claims
    );

    // Unusable keys are skipped; the usable one is kept.
    let good = doc["keys"][0].clone();
    let variant = |f: &dyn Fn(&mut Value)| {
        let mut k = good.clone();
        f(&mut k);
        k
    };
    let x = good["x"].as_str().unwrap().to_owned();
    let odd = json!({"keys": [
        variant(&|k| k["kty"] = json!("RSA")),
        variant(&|k| k["crv"] = json!("P-384")),
        variant(&|k| k["alg"] = json!("ES384")),
        variant(&|k| k["use"] = json!("enc")),
        variant(&|k| k["key_ops"] = json!(["sign"])),
        variant(&|k| k["kid"] = json!("")),
        variant(&|k| k["x"] = json!(x[..42].to_owned())),
        variant(&|k| k["y"] = json!(x.clone())),
        json!("not an object"),
        variant(&|k| { k["kid"] = json!("ok"); k["key_ops"] = json!(["verify"]); }),
    ]});
    let parsed = parse_jwks(odd.to_string().as_bytes()).unwrap();
    let kids: Vec<&str> = parsed.iter().map(|k| k.kid()).collect();
    assert_eq!(kids, ["ok"]);
    let none_usable = json!({"keys": [variant(&|k| k["alg"] = json!("RS256"))]});
    assert!(matches!(
        parse_jwks(none_usable.to_string().as_bytes()),
        Err(MandateError::Jwks(_))
    ));
    assert!(parse_jwks(b"{").is_err());
    assert!(parse_jwks(br#"{"keys":[]}"#).is_err());
    assert!(parse_jwks(&vec![b' '; MAX_JWKS_BYTES + 1]).is_err());
}

/// Check 11's [`SignatureProof`](caracal_core::mandate::SignatureProof) lets the ring skip the
/// signature arithmetic only for the exact token and key it was made for; the claims are
/// still checked, and any mismatch takes (and fails on) the full verification.
#[tokio::test]
async fn a_signature_proof_covers_one_token_and_one_key() {
    use caracal_core::mandate::verify_signature;
    let clock = FakeClock::new(fixture_now());
    let store = Arc::new(MemoryStore::new());
    let keys = ring(store.clone(), &clock);
    let key = keys.signing_key(ZONE).await.unwrap();
    let set = keys.verification_keys(ZONE).await.unwrap();
    let policy = policy_for(MandateUse::Gateway);
    let claims = claims_for(MandateUse::Gateway, clock.now(), 60);
    let token = mint(&claims, &key).unwrap();
    let proof = verify_signature(&token, &set).unwrap();
    assert_eq!(
        keys.verify_proven(&token, &policy, Some(&proof))
            .await
            .unwrap(),
        claims
    );

    // A forged signature is refused by verify_signature and, with another token's proof, by
    // the full path.
    let (head, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]));
    assert!(matches!(
        verify_signature(&forged, &set).unwrap_err(),
        MandateError::BadSignature
    ));
    assert!(matches!(
        keys.verify_proven(&forged, &policy, Some(&proof))
            .await
            .unwrap_err(),
        MandateError::BadSignature
    ));
    // Changed claims under the original signature: another digest, full path, refused.
    let mut other = claims.clone();
    other.sub = "someone-else".to_owned();
    let (_, sig) = token.rsplit_once('.').unwrap();
    let header = token.split('.').next().unwrap();
    let spliced = format!("{header}.{}.{sig}", b64(&other));
    assert!(
        keys.verify_proven(&spliced, &policy, Some(&proof))
            .await
            .is_err()
    );

    // The claims are still checked: past its expiry the proven token is refused.
    clock.advance(Duration::seconds(61 + 60));
    assert!(matches!(
        keys.verify_proven(&token, &policy, Some(&proof))
            .await
            .unwrap_err(),
        MandateError::Expired
    ));
    // The wrong class is refused too.
    assert!(
        keys.verify_proven(&token, &policy_for(MandateUse::Session), Some(&proof))
            .await
            .is_err()
    );
}
