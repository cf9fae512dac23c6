//! Mandate mint and verify against the bare ES256 floor, in one run so the ratios compare
//! (SPEC §6: mint ≤ 25 µs of CPU; verify ≤ 1.2× a bare ES256 verify).
//!
//! - `es256/sign`: aws-lc-rs `EcdsaKeyPair::sign` of the same signing input a mandate signs.
//! - `es256/verify_unparsed`: aws-lc-rs `UnparsedPublicKey::verify` (the point decoded per
//!   call, as `jsonwebtoken`'s aws-lc backend does).
//! - `es256/verify_parsed`: aws-lc-rs `ParsedPublicKey::verify_sig` (point decoded once): the
//!   absolute floor.
//! - `mandate/mint`: `caracal_core::mandate::mint` of the interop fixture's claims.
//! - `mandate/verify`: `caracal_core::mandate::verify` with the key set already loaded.
//!
//! Inputs are built once; only the call is measured.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    ParsedPublicKey, UnparsedPublicKey,
};
use caracal_core::mandate::{
    MandateClaims, MandateUse, SigningKey, VerificationKeys, VerifyPolicy, mint, verify,
};
use chrono::DateTime;
use criterion::{Criterion, criterion_group, criterion_main};

const FIXTURE: &str =
    include_str!("../../caracal-core/tests/fixtures/interop/jwt-claims.resource.valid.json");

fn benches(c: &mut Criterion) {
    let claims: MandateClaims = serde_json::from_str(FIXTURE).unwrap();
    let now = DateTime::from_timestamp(claims.iat, 0).unwrap();

    // The floor: the same key, the same signing input.
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let key = SigningKey::from_private_key("018f7d6a-8f4a-7d9f-9a54-5e4fd7df0001", pkcs8.as_ref())
        .unwrap();
    let keys = VerificationKeys::new([key.verification_key().unwrap()]);
    let token = mint(&claims, &key).unwrap();
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    let message = signing_input.as_bytes().to_vec();
    let signature = pair.sign(&rng, &message).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point).unwrap();
    let policy = VerifyPolicy::new(
        claims.zone_id.clone(),
        claims.iss.clone(),
        MandateUse::Resource,
        "resource://api",
    );
    assert_eq!(verify(&token, &keys, &policy, now).unwrap(), claims);

    let mut g = c.benchmark_group("es256");
    g.bench_function("sign", |b| {
        b.iter(|| pair.sign(&rng, black_box(&message)).unwrap())
    });
    g.bench_function("verify_unparsed", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, black_box(&point))
                .verify(black_box(&message), signature.as_ref())
                .unwrap()
        })
    });
    g.bench_function("verify_parsed", |b| {
        b.iter(|| {
            parsed
                .verify_sig(black_box(&message), signature.as_ref())
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("mandate");
    g.bench_function("mint", |b| {
        b.iter(|| mint(black_box(&claims), &key).unwrap())
    });
    g.bench_function("verify", |b| {
        b.iter(|| verify(black_box(&token), &keys, &policy, now).unwrap())
    });
    g.finish();
}

criterion_group!(mandate, benches);
criterion_main!(mandate);
