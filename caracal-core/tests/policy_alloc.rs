//! "No allocation on the allow path" (SPEC §6), checked with a counting global allocator in
//! this dedicated test binary: a zone with 100 applications and 1,000 resource grants, every
//! allow rule and the common denies, 1,000 decisions each, zero heap allocations.
//!
//! The counter is process-wide, so this binary holds a single test (no other test thread can
//! allocate while a region is measured). Rendering the wire result does allocate, by design,
//! and the test says so.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::hint::black_box;

use caracal_core::model::policy::PolicyInput;
use caracal_core::policy::{CompiledBundle, DataDocument, DataSet, evaluate};
use serde_json::{Map, Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// 100 applications, 1,000 grants (grant `i` owned by application `i % 100`), three roles per
/// grant, ten confinement rules, fifty risk entries and three approval tiers.
fn zone() -> CompiledBundle {
    let app_ids: Map<String, Value> = (0..100)
        .map(|a| (format!("app{a:03}"), json!(format!("0190-app-{a:03}"))))
        .collect();
    let grants: Map<String, Value> = (0..1000)
        .map(|g| {
            (
                format!("resource://svc-{g:04}"),
                json!({
                    "application": format!("app{:03}", g % 100),
                    "roles": {
                        "reader": ["svc:read"],
                        "writer": ["svc:read", "svc:write"],
                        "admin": ["svc:read", "svc:write", "svc:admin"]
                    }
                }),
            )
        })
        .collect();
    let confinement: Vec<Value> = (0..10)
        .map(|t| json!({"label_prefix": format!("team-{t}."), "scopes": ["svc:read", "svc:write"]}))
        .collect();
    let mut risk: Vec<Value> = (0..49)
        .map(|i| json!({"scope": format!("other:{i}"), "tier": "low"}))
        .collect();
    risk.push(json!({"scope": "svc:admin", "tier": "high"}));
    let data = json!({
        "app_ids": app_ids,
        "grants": grants,
        "confinement": confinement,
        "risk": risk,
        "approval_tiers": [
            {"tier": "high", "approver": "operator"},
            {"tier": "critical", "approver": "operator", "ttl_seconds": 300},
            {"tier": "pii", "approver": "subject", "privacy": "pseudonymous"}
        ]
    });
    let doc = DataDocument::from_json_value("zone.json", data).unwrap();
    CompiledBundle::compile(&DataSet::merge([doc]).unwrap()).unwrap()
}

fn input(v: Value) -> PolicyInput {
    serde_json::from_value(v).unwrap()
}

fn mint(scopes: &[&str], edge: &[&str]) -> PolicyInput {
    input(json!({
        "schema_version": "2026-05-20",
        "principal": {"type": "Application", "id": "0190-app-042", "zone_id": "z",
                      "agent_session_id": "s1", "labels": ["team-4.agent", "admin", "writer"]},
        "resource": {"type": "Resource", "id": "r", "identifier": "resource://svc-0142", "scopes": ["svc:read"]},
        "action": {"id": "TokenExchange"},
        "delegation_edge": {"id": "e1", "source_session_id": "s0", "target_session_id": "s1",
                            "issuer_application_id": "a", "receiver_application_id": "b",
                            "resource_id": "", "scopes": edge, "edge_version": 1},
        "context": {"actor_claims": {"caracal_client_id": "0190-app-042"}, "trace_id": "t",
                    "agent_session_id": "s1", "delegation_edge_id": "e1", "requested_scopes": scopes}
    }))
}

fn cases() -> Vec<(&'static str, PolicyInput, &'static str)> {
    let bootstrap = input(json!({
        "schema_version": "2026-05-20",
        "principal": {"type": "Application", "id": "0190-app-042", "zone_id": "z"},
        "resource": {"type": "Resource", "id": "r", "identifier": "resource://svc-0142", "scopes": []},
        "action": {"id": "TokenExchange"},
        "context": {"actor_claims": {"caracal_client_id": "0190-app-042"}, "requested_scopes": ["agent:lifecycle"]}
    }));
    let mut workload = bootstrap.clone();
    workload.principal.kind = "Workload".into();
    workload.action.id = "CredentialInjection".into();
    workload.context.requested_scopes = vec!["svc:admin".into()];
    let mut mandate_use = mint(&[], &[]);
    mandate_use.delegation_edge = None;
    mandate_use.context.subject_claims = Some(
        json!({"delegation_edge_id": "e1", "scope": "svc:read svc:write",
               "target": ["resource://svc-0001", "resource://svc-0142"]})
        .as_object()
        .unwrap()
        .clone(),
    );
    let mut not_granted = mint(&["svc:read"], &["svc:read"]);
    not_granted.resource.identifier = "resource://svc-0143".into();
    let mut gated = mint(&["svc:read", "svc:admin"], &["svc:read", "svc:admin"]);
    // A label outside the confined teams, so the admin scope passes confinement.
    gated.principal.labels = Some(vec!["admin".into()]);
    vec![
        ("bootstrap", bootstrap, "allow"),
        (
            "delegated mint",
            mint(&["svc:read", "svc:write"], &["svc:read", "svc:write"]),
            "allow",
        ),
        ("delegated mint with step-up", gated, "allow"),
        ("workload mint (step-up)", workload, "allow"),
        ("mandate use", mandate_use, "allow"),
        (
            "deny: scope outside edge",
            mint(&["svc:read", "svc:write"], &["svc:read"]),
            "deny",
        ),
        ("deny: resource not granted", not_granted, "deny"),
    ]
}

#[test]
fn decisions_do_not_allocate() {
    let bundle = zone();
    let cases = cases();
    // Each case decides as intended (so the paths measured are the right ones).
    for (name, input, expected) in &cases {
        let eval = evaluate(input, &bundle).unwrap();
        assert_eq!(
            eval.decision().as_str(),
            *expected,
            "{name}: {:?}",
            eval.decided()
        );
    }
    let step_up = evaluate(&cases[2].1, &bundle).unwrap();
    assert!(step_up.step_up_required(), "the gated mint carries step-up");

    for (name, input, _) in &cases {
        let region = Region::new(GLOBAL);
        for _ in 0..1000 {
            let eval = evaluate(black_box(input), black_box(&bundle)).unwrap();
            black_box(eval.decision());
            black_box(eval.step_up_required());
            black_box(eval.determining_policy());
        }
        let change = region.change();
        assert_eq!(
            (change.allocations, change.reallocations),
            (0, 0),
            "{name}: {change:?}"
        );
    }

    // Honest about the rest: rendering the wire result allocates (names, maps, vectors).
    let region = Region::new(GLOBAL);
    black_box(evaluate(&cases[1].1, &bundle).unwrap().to_result());
    assert!(region.change().allocations > 0);
}
