//! Shared helpers of the policy tests: the interop fixture input reshaped into each request
//! kind, and a small zone's data.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use caracal_core::model::policy::PolicyInput;
use caracal_core::policy::{CompiledBundle, DataDocument, DataSet, evaluate};
use serde_json::{Value, json};

/// The reference's interop policy input (`policy-input.sts.valid.json`).
pub const FIXTURE: &str = include_str!("../fixtures/interop/policy-input.sts.valid.json");

/// The fixture as a JSON value.
pub fn fixture_json() -> Value {
    serde_json::from_str(FIXTURE).unwrap()
}

/// The fixture, parsed.
pub fn fixture() -> PolicyInput {
    serde_json::from_str(FIXTURE).unwrap()
}

/// A delegated mint in the fixture's shape: the fixture without subject claims (app-1 under
/// edge `delegation-1` with scopes `[read]`, label `files.read`, requesting `read` on
/// `resource://api`).
pub fn mint() -> PolicyInput {
    let mut input = fixture();
    input.context.subject_claims = None;
    input
}

/// A bootstrap exchange: no subject, edge or governed session; scope `agent:lifecycle`.
pub fn bootstrap() -> PolicyInput {
    let mut input = fixture();
    input.context.subject_claims = None;
    input.delegation_edge = None;
    input.context.agent_session_id = None;
    input.context.delegation_edge_id = None;
    input.principal.agent_session_id = None;
    input.principal.labels = None;
    input.context.requested_scopes = vec!["agent:lifecycle".into()];
    input
}

/// A Gateway re-exchange presenting a gateway mandate for `resource://api` with scope `read`.
pub fn mandate_use() -> PolicyInput {
    let mut input = fixture();
    input.context.requested_scopes = vec![];
    input.context.subject_claims = Some(
        json!({
            "sub": "app-1",
            "scope": "read",
            "target": ["resource://api"],
            "delegation_edge_id": "delegation-1",
            "use": "gateway"
        })
        .as_object()
        .unwrap()
        .clone(),
    );
    input.action.id = "TokenExchange".into();
    input.action.method = Some("GET".into());
    input.action.path = Some("/v1/files".into());
    input
}

/// A workload credential injection.
pub fn workload() -> PolicyInput {
    let mut input = bootstrap();
    input.principal.kind = "Workload".into();
    input.action.id = "CredentialInjection".into();
    input.context.requested_scopes = vec!["read".into()];
    input
}

/// The zone data: app key `files` is app-1 and owns `resource://api` with roles
/// `files.read` → [read] and `files.write` → [read, write]; key `other` is app-2 and owns
/// `resource://other`.
pub fn zone_data() -> Value {
    json!({
        "app_ids": {"files": "app-1", "other": "app-2"},
        "grants": {
            "resource://api": {
                "application": "files",
                "roles": {"files.read": ["read"], "files.write": ["read", "write"]}
            },
            "resource://other": {
                "application": "other",
                "roles": {"files.read": ["read"]}
            }
        }
    })
}

/// `base` with `extra`'s keys added (replacing).
pub fn with(base: Value, extra: Value) -> Value {
    let mut base = base;
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
    base
}

/// Compile a JSON data object.
pub fn bundle(data: Value) -> CompiledBundle {
    let doc = DataDocument::from_json_value("test.json", data).unwrap();
    CompiledBundle::compile(&DataSet::merge([doc]).unwrap()).unwrap()
}

/// Evaluate and render.
pub fn result_json(input: &PolicyInput, bundle: &CompiledBundle) -> Value {
    serde_json::to_value(evaluate(input, bundle).unwrap().to_result()).unwrap()
}

/// The deny reason of a decision, or `"allow:<policy>"`.
pub fn outcome(input: &PolicyInput, bundle: &CompiledBundle) -> String {
    let eval = evaluate(input, bundle).unwrap();
    match eval.deny_reason() {
        Some(r) => r.as_str().to_owned(),
        None => format!("allow:{}", eval.determining_policy().unwrap()),
    }
}
