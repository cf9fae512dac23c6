//! Every interop fixture of the reference that has a model type parses and round-trips
//! without loss (compared as JSON values, so key order does not matter but every field and
//! every value does).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use caracal_core::mandate::{Audience, MandateClaims, MandateUse};
use caracal_core::model::policy::{
    Decision, POLICY_INPUT_SCHEMA_VERSION, PolicyInput, PolicyResult,
};
use caracal_core::model::revocation::RevocationEvent;
use caracal_core::model::token::TokenResponse;
use caracal_core::model::trace::{Baggage, TraceHeaders, TraceParent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Parse `name` as `T`, serialise it back, and require the same JSON value.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let bytes = read(name);
    let original: Value = serde_json::from_slice(&bytes).unwrap();
    let parsed: T = caracal_core::model::from_json("interop fixture", &bytes)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let back = serde_json::to_value(&parsed).unwrap();
    assert_eq!(back, original, "{name} did not round-trip");
    parsed
}

#[test]
fn policy_input_round_trips() {
    let input: PolicyInput = round_trip("policy-input.sts.valid.json");
    assert_eq!(input.schema_version, POLICY_INPUT_SCHEMA_VERSION);
    assert_eq!(
        input.principal.labels.as_deref(),
        Some(&["files.read".to_owned()][..])
    );
    let edge = input.delegation_edge.as_ref().unwrap();
    assert_eq!(edge.scopes, vec!["read"]);
    assert_eq!(edge.graph_epoch, 7);
    assert_eq!(edge.constraints_json["max_cost_usd"], 5);
    assert_eq!(input.context.requested_scopes, vec!["read"]);
    assert!(!input.context.challenge_resolved);
}

#[test]
fn policy_result_round_trips() {
    let result: PolicyResult = round_trip("policy-result.allow.valid.json");
    assert_eq!(result.decision, Decision::Allow);
    assert_eq!(result.evaluation_status, "complete");
    assert_eq!(
        result.determining_policies[0]["id"],
        "baseline-resource-scope"
    );
}

#[test]
fn mandate_claims_round_trip() {
    let claims: MandateClaims = round_trip("jwt-claims.resource.valid.json");
    assert_eq!(claims.use_, MandateUse::Resource);
    assert_eq!(claims.aud, Audience::One("resource://api".into()));
    assert!(claims.aud.contains("resource://api"));
    assert_eq!(claims.hop_count, 1);
    assert_eq!(claims.delegation_graph_epoch, 7);
    assert_eq!(claims.delegation_chain.len(), 2);
    assert_eq!(claims.delegation_chain[1].delegation_edge_id, None);
    assert_eq!(claims.scopes().collect::<Vec<_>>(), vec!["read", "write"]);
    assert_eq!(
        claims.revocation_anchors().collect::<Vec<_>>(),
        vec![
            "authority-record-1",
            "authority-record-root",
            "session-child",
            "delegation-1"
        ]
    );
}

#[test]
fn audience_array_form_round_trips_too() {
    let mut v: Value = serde_json::from_slice(&read("jwt-claims.resource.valid.json")).unwrap();
    v["aud"] = serde_json::json!(["https://sts.example.com"]);
    let claims: MandateClaims = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(serde_json::to_value(&claims).unwrap(), v);
}

#[test]
fn token_response_round_trips() {
    let resp: TokenResponse = round_trip("token-response.valid.json");
    assert_eq!(resp.expires_in, 300);
    assert_eq!(resp.target_resources, vec!["resource://pipernet"]);
    assert!(resp.upstreams.is_none());
}

#[test]
fn revocation_event_round_trips() {
    let ev: RevocationEvent = round_trip("revocation-event.session.valid.json");
    assert_eq!(ev.anchors(), vec!["authority-record-1"]);
    assert_eq!(ev.sig.as_deref(), Some("0123456789abcdef"));
}

#[test]
fn trace_context_and_baggage_agree() {
    let headers: TraceHeaders = round_trip("trace-context.headers.valid.json");
    TraceParent::parse(&headers.traceparent).unwrap();
    let baggage = Baggage::parse(headers.baggage.as_deref().unwrap()).unwrap();
    let expected: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&read("w3c-baggage.valid.json")).unwrap();
    assert_eq!(baggage.to_map(), expected);
    assert_eq!(baggage.to_string(), headers.baggage.unwrap());
}

/// A new fixture must be given a model type (and a test above) or be listed here on purpose.
#[test]
fn every_fixture_is_accounted_for() {
    let covered = [
        "policy-input.sts.valid.json",
        "policy-result.allow.valid.json",
        "jwt-claims.resource.valid.json",
        "token-response.valid.json",
        "revocation-event.session.valid.json",
        "trace-context.headers.valid.json",
        "w3c-baggage.valid.json",
        // Covered by the audit module's tests (content hash and round trip).
        "audit-event.allow.valid.json",
        // Covered by the streams module's tests (byte-for-byte vectors).
        "stream-sig-canonicalize.vectors.json",
    ];
    // Integration manifests for connectors, exporters, verifiers and policy packs: documents
    // for third-party tooling, with no Caracal model type (yet).
    let manifests = [
        "agent-connector-manifest.valid.json",
        "audit-exporter-manifest.valid.json",
        "gateway-upstream-manifest.http.valid.json",
        "policy-pack-manifest.valid.json",
        "resource-verifier-manifest.valid.json",
    ];
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".json") {
            continue;
        }
        assert!(
            covered.contains(&name.as_str()) || manifests.contains(&name.as_str()),
            "fixture {name} has no test"
        );
        // Every fixture is at least valid JSON.
        let _: Value = serde_json::from_slice(&read(&name)).unwrap();
    }
}

#[test]
fn malformed_documents_are_typed_errors() {
    for bad in [&b"{"[..], b"[]", b"{\"schema_version\":1}", b"\xff\xfe"] {
        assert!(caracal_core::model::from_json::<PolicyInput>("policy input", bad).is_err());
        assert!(caracal_core::model::from_json::<MandateClaims>("claims", bad).is_err());
    }
}
