//! The Gateway's own per-request work, upstream and STS excluded (issue #7):
//!
//! - `gateway/preflight_local`: checks 2–10 of `gateway.md` §1.2 (bearer shape, unverified
//!   claim peek, expiry window, routing headers, zone/client ids, path traversal);
//! - `gateway/signature`: check 11, the ES256 signature against an already loaded key set;
//! - `gateway/build_upstream`: the upstream URL (path join, query merge) and the sanitised,
//!   credential-injected header set;
//! - `gateway/all_local`: the three in sequence, as one request does them.
//!
//! Inputs are built once; only the calls are measured.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use caracal_core::mandate::{MandateClaims, SigningKey, VerificationKeys, mint};
use caracal_core::model::token::{AuthLocation, AuthMode, UpstreamDirective};
use caracal_gateway::forward::{Forwarding, Injection, upstream_headers, upstream_url};
use caracal_gateway::jwks::signature_valid;
use caracal_gateway::preflight::{RequestHead, check, decoded_path};
use criterion::{Criterion, criterion_group, criterion_main};
use hyper::HeaderMap;
use hyper::header::HeaderValue;

const FIXTURE: &str =
    include_str!("../../caracal-core/tests/fixtures/interop/jwt-claims.resource.valid.json");

fn inbound(auth: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_str(auth).unwrap());
    h.insert(
        "x-caracal-resource",
        HeaderValue::from_static("resource://api"),
    );
    h.insert("host", HeaderValue::from_static("gateway.internal"));
    h.insert("accept", HeaderValue::from_static("application/json"));
    h.insert("user-agent", HeaderValue::from_static("agent/1.0"));
    h.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    h.insert(
        "baggage",
        HeaderValue::from_static("caracal.session=s1,tenant=example"),
    );
    h
}

fn benches(c: &mut Criterion) {
    let claims: MandateClaims = serde_json::from_str(FIXTURE).unwrap();
    let now = claims.iat;
    let (key, _) = SigningKey::generate("bench-kid").unwrap();
    let keys = VerificationKeys::new([key.verification_key().unwrap()]);
    let token = mint(&claims, &key).unwrap();
    let auth = format!("Bearer {token}");
    let headers = inbound(&auth);
    let directive = UpstreamDirective {
        url: "https://api.vendor.example/base?fixed=1".into(),
        auth_mode: AuthMode::ProviderApikey,
        auth_location: Some(AuthLocation::Header),
        auth_header: Some("X-Api-Key".into()),
        query_param_name: None,
        auth_scheme: None,
        allowed_token_hosts: vec!["api.vendor.example".into()],
        provider_token: Some("provider-key-0123456789".into()),
        provider_id: None,
        connection_id: None,
        forward_caracal_identity: false,
        expires_at: None,
    };
    let head = RequestHead {
        authorization: Some(&auth),
        has_client_id: false,
        resource: Some("resource://api"),
        path: "/v1/items/42",
    };
    assert!(check(&head, now).is_ok());
    assert!(signature_valid(&token, &keys));

    let build = |headers: &HeaderMap| {
        let path = decoded_path(head.path).unwrap();
        let url = upstream_url(&directive.url, &path, Some("page=2"), None).unwrap();
        let mut out = headers.clone();
        upstream_headers(
            &mut out,
            &Injection {
                directive: &directive,
                resource_mandate: &token,
                request_id: "0190f2a0-0000-7000-8000-00000000abcd",
            },
            &Forwarding {
                peer: Some([10, 0, 0, 7].into()),
                trust_proxy: false,
                tls: false,
            },
        )
        .unwrap();
        (url, out)
    };

    let mut g = c.benchmark_group("gateway");
    g.bench_function("preflight_local", |b| {
        b.iter(|| check(black_box(&head), now).unwrap())
    });
    g.bench_function("signature", |b| {
        b.iter(|| signature_valid(black_box(&token), &keys))
    });
    g.bench_function("build_upstream", |b| b.iter(|| build(black_box(&headers))));
    g.bench_function("all_local", |b| {
        b.iter(|| {
            let a = check(black_box(&head), now).unwrap();
            assert!(signature_valid(a.token, &keys));
            build(&headers)
        })
    });
    g.finish();
}

criterion_group!(gateway, benches);
criterion_main!(gateway);
