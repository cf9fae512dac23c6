//! The native decision contract: one test per allow rule and per deny reason, in the input
//! shape of the reference's interop fixture, plus the precedence between reasons, the wire
//! result shape, and the evaluation errors.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod policy_support;

use caracal_core::model::policy::{Decision, POLICY_INPUT_SCHEMA_VERSION};
use caracal_core::policy::contract::Decided;
use caracal_core::policy::{
    AllowRule, CompiledBundle, DataDocument, DataKey, DataSet, DenyReason, Evaluation, PolicyError,
    evaluate,
};
use policy_support::*;
use serde_json::json;

// ------------------------------------------------------------------ the fixture itself

#[test]
fn fixture_as_given_matches_no_rule() {
    // The fixture carries subject claims *and* a delegation edge: neither a delegated mint
    // (which needs no subject token) nor a mandate use (no delegation_edge_id claim).
    let input = fixture();
    assert_eq!(input.schema_version, POLICY_INPUT_SCHEMA_VERSION);
    let b = bundle(zone_data());
    assert_eq!(
        result_json(&input, &b),
        json!({
            "decision": "deny",
            "evaluation_status": "complete",
            "determining_policies": [],
            "diagnostics": [{"reason": "no_rule_matched"}]
        })
    );
}

// ------------------------------------------------------------------ allow rules

#[test]
fn bootstrap_allows_the_resource_owner() {
    let b = bundle(zone_data());
    let input = bootstrap();
    let eval = evaluate(&input, &b).unwrap();
    assert_eq!(eval.decision(), Decision::Allow);
    assert_eq!(eval.rule(), Some(AllowRule::Bootstrap));
    assert!(!eval.step_up_required());
    assert_eq!(
        result_json(&input, &b),
        json!({
            "decision": "allow",
            "evaluation_status": "complete",
            "determining_policies": [{"policy": "caracal-bootstrap"}],
            "diagnostics": []
        })
    );
}

#[test]
fn bootstrap_accepts_a_repeated_lifecycle_scope() {
    // The rule compares the requested scope *set* with {agent:lifecycle}.
    let b = bundle(zone_data());
    let mut input = bootstrap();
    input.context.requested_scopes = vec!["agent:lifecycle".into(), "agent:lifecycle".into()];
    assert_eq!(outcome(&input, &b), "allow:caracal-bootstrap");
}

#[test]
fn bootstrap_ignores_risk_data_even_when_malformed() {
    // Conformance 32: "bootstrap unaffected".
    let b = bundle(with(
        zone_data(),
        json!({"risk": [{"scope": "x"}], "approval_tiers": 7}),
    ));
    assert_eq!(outcome(&bootstrap(), &b), "allow:caracal-bootstrap");
}

#[test]
fn delegated_mint_allows_within_edge_role_and_confinement() {
    let b = bundle(with(
        zone_data(),
        json!({"confinement": [{"label_prefix": "files.", "scopes": ["read"]}]}),
    ));
    let input = mint();
    let eval = evaluate(&input, &b).unwrap();
    assert_eq!(eval.rule(), Some(AllowRule::DelegatedMint));
    assert_eq!(
        result_json(&input, &b),
        json!({
            "decision": "allow",
            "evaluation_status": "complete",
            "determining_policies": [{"policy": "caracal-files-mint"}],
            "diagnostics": []
        })
    );
}

#[test]
fn delegated_mint_through_an_app_key_alias() {
    // Two keys bound to the same application: the grant names either one.
    let data = json!({
        "app_ids": {"files": "app-1", "files-alias": "app-1"},
        "grants": {"resource://api": {"application": "files-alias", "roles": {"files.read": ["read"]}}}
    });
    assert_eq!(
        outcome(&mint(), &bundle(data)),
        "allow:caracal-files-alias-mint"
    );
}

#[test]
fn delegated_mint_with_a_gated_scope_carries_step_up_and_risk() {
    let b = bundle(with(
        zone_data(),
        json!({
            "risk": [{"scope": "read", "tier": "high"}, {"scope": "write", "tier": "low"}],
            "approval_tiers": [
                {"tier": "high", "approver": "operator", "ttl_seconds": 600},
                {"tier": "low"}
            ]
        }),
    ));
    let input = mint();
    let eval = evaluate(&input, &b).unwrap();
    assert!(eval.is_allow());
    assert!(eval.step_up_required());
    assert_eq!(eval.risk(), vec![("read", "high")]);
    assert_eq!(
        result_json(&input, &b),
        json!({
            "decision": "allow",
            "evaluation_status": "complete",
            "determining_policies": [{"policy": "caracal-files-mint"}],
            "diagnostics": [
                {"step_up_required": {"type": "human_approval", "tiers": [
                    {"tier": "high", "approver": "operator", "ttl_seconds": 600}
                ]}},
                {"risk": [{"scope": "read", "tier": "high"}]}
            ]
        })
    );
}

#[test]
fn a_tier_without_declaration_reports_risk_but_no_step_up() {
    let b = bundle(with(
        zone_data(),
        json!({"risk": [{"scope": "read", "tier": "medium"}], "approval_tiers": []}),
    ));
    let input = mint();
    let eval = evaluate(&input, &b).unwrap();
    assert!(eval.is_allow());
    assert!(!eval.step_up_required());
    assert_eq!(
        result_json(&input, &b)["diagnostics"],
        json!([{"risk": [{"scope": "read", "tier": "medium"}]}])
    );
}

#[test]
fn workload_mint_allows_without_a_grant() {
    let b = bundle(zone_data());
    let input = workload();
    assert_eq!(outcome(&input, &b), "allow:caracal-workload-mint");
    // No data at all: still allowed (the console binding is the grant).
    let empty = CompiledBundle::compile(&DataSet::default()).unwrap();
    assert_eq!(outcome(&input, &empty), "allow:caracal-workload-mint");
}

#[test]
fn workload_mint_is_risk_gated() {
    let b = bundle(with(
        zone_data(),
        json!({
            "risk": [{"scope": "read", "tier": "pii"}],
            "approval_tiers": [{"tier": "pii", "approver": "subject", "privacy": "pseudonymous"}]
        }),
    ));
    let input = workload();
    let eval = evaluate(&input, &b).unwrap();
    assert_eq!(eval.rule(), Some(AllowRule::WorkloadMint));
    assert!(eval.step_up_required());
    assert_eq!(eval.matched_approvals().len(), 1);
}

#[test]
fn mandate_use_allows_a_targeted_resource_with_current_roles() {
    let b = bundle(zone_data());
    let input = mandate_use();
    assert_eq!(
        result_json(&input, &b),
        json!({
            "decision": "allow",
            "evaluation_status": "complete",
            "determining_policies": [{"policy": "caracal-files-use"}],
            "diagnostics": []
        })
    );
}

#[test]
fn mandate_use_is_not_risk_gated() {
    let b = bundle(with(
        zone_data(),
        json!({"risk": "not an array", "approval_tiers": [{"tier": ""}]}),
    ));
    assert_eq!(outcome(&mandate_use(), &b), "allow:caracal-files-use");
}

// ------------------------------------------------------------------ deny reasons

#[test]
fn no_rule_matched_for_bootstrap_with_another_scope() {
    // Conformance 31.
    let mut input = bootstrap();
    input.context.requested_scopes = vec!["agent:lifecycle".into(), "read".into()];
    let b = bundle(zone_data());
    assert_eq!(
        result_json(&input, &b)["diagnostics"],
        json!([{"reason": "no_rule_matched"}])
    );
}

#[test]
fn no_rule_matched_for_bootstrap_by_a_non_owner() {
    let mut input = bootstrap();
    input.principal.id = "app-2".into();
    assert_eq!(outcome(&input, &bundle(zone_data())), "no_rule_matched");
}

#[test]
fn no_rule_matched_in_a_zone_without_data() {
    let empty = CompiledBundle::compile(&DataSet::default()).unwrap();
    for input in [bootstrap(), mint(), mandate_use()] {
        let reason = outcome(&input, &empty);
        assert!(
            reason == "no_rule_matched" || reason == "resource_not_granted",
            "{reason}"
        );
        assert!(!evaluate(&input, &empty).unwrap().is_allow());
    }
}

#[test]
fn no_active_policy_set_for_the_deny_all_bundle() {
    let b = CompiledBundle::deny_all();
    for input in [bootstrap(), mint(), mandate_use(), workload(), fixture()] {
        assert_eq!(
            result_json(&input, &b),
            json!({
                "decision": "deny",
                "evaluation_status": "complete",
                "determining_policies": [],
                "diagnostics": [{"reason": "no_active_policy_set"}]
            })
        );
    }
}

#[test]
fn restriction_active_denies_every_request() {
    // Conformance 30: any restrict entry denies everything, bootstrap included.
    for restrict in [
        json!({"all": true}),
        json!(["maintenance"]),
        json!("x"),
        json!(null),
    ] {
        let b = bundle(with(zone_data(), json!({"restrict": restrict})));
        for input in [bootstrap(), mint(), mandate_use(), workload(), fixture()] {
            assert_eq!(outcome(&input, &b), "restriction_active");
        }
    }
    // Empty collections do not restrict.
    for restrict in [json!({}), json!([])] {
        let b = bundle(with(zone_data(), json!({"restrict": restrict})));
        assert_eq!(outcome(&bootstrap(), &b), "allow:caracal-bootstrap");
    }
}

#[test]
fn malformed_risk_data_denies_mints() {
    // Conformance 32: an entry without tier.
    for risk in [
        json!([{"scope": "read"}]),
        json!([{"scope": "read", "tier": ""}]),
        json!([{"tier": "high"}]),
        json!(["read"]),
        json!({"read": "high"}),
    ] {
        let b = bundle(with(zone_data(), json!({"risk": risk})));
        assert_eq!(outcome(&mint(), &b), "malformed_risk_data", "{risk}");
        assert_eq!(outcome(&workload(), &b), "malformed_risk_data", "{risk}");
    }
}

#[test]
fn malformed_approval_data_denies_mints() {
    for tiers in [
        json!({"tier": "high"}),
        json!([{"tier": ""}]),
        json!([{"approver": "operator"}]),
        json!([{"tier": "high", "approver": "manager"}]),
        json!([{"tier": "high", "privacy": "public"}]),
        json!([{"tier": "high", "ttl_seconds": 0}]),
        json!([{"tier": "high", "ttl_seconds": -5}]),
        json!([{"tier": "high", "ttl_seconds": 1.5}]),
        json!([{"tier": "high", "ttl_seconds": "60"}]),
        json!(["high"]),
    ] {
        let b = bundle(with(zone_data(), json!({"approval_tiers": tiers})));
        assert_eq!(outcome(&mint(), &b), "malformed_approval_data", "{tiers}");
        assert_eq!(
            outcome(&workload(), &b),
            "malformed_approval_data",
            "{tiers}"
        );
    }
    // Integral floats and every enumerated value are well formed.
    let ok = json!([
        {"tier": "a", "approver": "any", "privacy": "anonymous", "ttl_seconds": 60.0},
        {"tier": "b", "approver": "subject", "privacy": "identified"},
        {"tier": "c", "approver": "operator", "extra": "ignored"}
    ]);
    let b = bundle(with(zone_data(), json!({"approval_tiers": ok})));
    assert_eq!(outcome(&mint(), &b), "allow:caracal-files-mint");
}

#[test]
fn resource_not_granted_for_mint_and_use() {
    // Conformance 29: missing grant.
    let b = bundle(json!({"app_ids": {"files": "app-1"}, "grants": {}}));
    assert_eq!(outcome(&mint(), &b), "resource_not_granted");
    assert_eq!(outcome(&mandate_use(), &b), "resource_not_granted");
    // The grant belongs to another application's key.
    let b = bundle(zone_data());
    let mut input = mint();
    input.resource.identifier = "resource://other".into();
    assert_eq!(outcome(&input, &b), "resource_not_granted");
    // The grant's key is not bound to any application.
    let b = bundle(json!({"grants": {"resource://api": {"application": "files", "roles": {}}}}));
    assert_eq!(outcome(&mint(), &b), "resource_not_granted");
}

#[test]
fn delegation_scope_exceeded_outside_the_edge() {
    // Conformance 29: a scope outside delegation_edge.scopes.
    let b = bundle(zone_data());
    let mut input = mint();
    input.principal.labels = Some(vec!["files.write".into()]);
    input.context.requested_scopes = vec!["read".into(), "write".into()];
    assert_eq!(outcome(&input, &b), "delegation_scope_exceeded");
    // The same request within a wider edge is allowed.
    input.delegation_edge.as_mut().unwrap().scopes = vec!["read".into(), "write".into()];
    assert_eq!(outcome(&input, &b), "allow:caracal-files-mint");
}

#[test]
fn confinement_violation_for_a_confined_label() {
    let b = bundle(with(
        zone_data(),
        json!({"confinement": [{"label_prefix": "files.", "scopes": ["list"]}]}),
    ));
    assert_eq!(outcome(&mint(), &b), "confinement_violation");
    // A principal whose labels match no prefix is unconfined.
    let b = bundle(with(
        zone_data(),
        json!({"confinement": [{"label_prefix": "mail.", "scopes": []}]}),
    ));
    assert_eq!(outcome(&mint(), &b), "allow:caracal-files-mint");
}

#[test]
fn role_scope_mismatch_for_mint_and_use() {
    // No label whose role covers the requested scope.
    let b = bundle(zone_data());
    let mut input = mint();
    input.principal.labels = Some(vec!["files.admin".into()]);
    assert_eq!(outcome(&input, &b), "role_scope_mismatch");
    let mut input = mint();
    input.principal.labels = None;
    assert_eq!(outcome(&input, &b), "role_scope_mismatch");
    // Conformance 34: the role was narrowed after the mandate was minted.
    let narrowed = bundle(json!({
        "app_ids": {"files": "app-1"},
        "grants": {"resource://api": {"application": "files", "roles": {"files.read": ["list"]}}}
    }));
    assert_eq!(outcome(&mandate_use(), &narrowed), "role_scope_mismatch");
}

#[test]
fn mandate_target_mismatch_for_a_resource_outside_target() {
    // Conformance 34.
    let b = bundle(zone_data());
    let mut input = mandate_use();
    input.context.subject_claims.as_mut().unwrap()["target"] = json!(["resource://elsewhere"]);
    assert_eq!(outcome(&input, &b), "mandate_target_mismatch");
    // A target that is not an array targets nothing.
    input.context.subject_claims.as_mut().unwrap()["target"] = json!("resource://api");
    assert_eq!(outcome(&input, &b), "mandate_target_mismatch");
}

// ------------------------------------------------------------------ precedence

#[test]
fn precedence_follows_the_documented_order() {
    // restriction beats malformed data.
    let b = bundle(with(zone_data(), json!({"restrict": [1], "risk": 1})));
    assert_eq!(outcome(&mint(), &b), "restriction_active");
    // malformed risk beats malformed approvals beats a missing grant.
    let b = bundle(json!({"risk": 1, "approval_tiers": 1}));
    assert_eq!(outcome(&mint(), &b), "malformed_risk_data");
    let b = bundle(json!({"approval_tiers": 1}));
    assert_eq!(outcome(&mint(), &b), "malformed_approval_data");
    // A missing grant beats a scope outside the edge.
    let mut input = mint();
    input.context.requested_scopes = vec!["write".into()];
    assert_eq!(
        outcome(&input, &bundle(json!({"app_ids": {}}))),
        "resource_not_granted"
    );
    // Scope outside the edge beats confinement beats the role.
    let conf = bundle(with(
        zone_data(),
        json!({"confinement": [{"label_prefix": "", "scopes": []}]}),
    ));
    assert_eq!(outcome(&input, &conf), "delegation_scope_exceeded");
    let mut input = mint();
    input.principal.labels = Some(vec!["nobody".into()]);
    assert_eq!(outcome(&input, &conf), "confinement_violation");
    // For mandate use, the target is checked before the grant and the role.
    let mut input = mandate_use();
    input.resource.identifier = "resource://unknown".into();
    assert_eq!(
        outcome(&input, &bundle(zone_data())),
        "mandate_target_mismatch"
    );
    input.context.subject_claims.as_mut().unwrap()["target"] = json!(["resource://unknown"]);
    assert_eq!(
        outcome(&input, &bundle(zone_data())),
        "resource_not_granted"
    );
}

#[test]
fn workload_shape_wins_over_bootstrap() {
    let b = bundle(with(zone_data(), json!({"risk": 3})));
    let mut input = workload();
    input.context.requested_scopes = vec!["agent:lifecycle".into()];
    assert_eq!(outcome(&input, &b), "malformed_risk_data");
}

// ------------------------------------------------------------------ shapes at the edges

#[test]
fn empty_ids_do_not_make_a_delegated_mint() {
    let b = bundle(zone_data());
    let mut input = mint();
    input.delegation_edge.as_mut().unwrap().id = String::new();
    assert_eq!(outcome(&input, &b), "no_rule_matched");
    let mut input = mint();
    input.context.agent_session_id = Some(String::new());
    assert_eq!(outcome(&input, &b), "no_rule_matched");
    let mut input = mint();
    input.context.requested_scopes = vec!["read".into(), "agent:lifecycle".into()];
    assert_eq!(outcome(&input, &b), "no_rule_matched");
    let mut input = mint();
    input.context.requested_scopes = vec![];
    assert_eq!(outcome(&input, &b), "no_rule_matched");
}

#[test]
fn mandate_use_needs_an_edge_claim_no_requested_scopes_and_presented_scopes() {
    let b = bundle(zone_data());
    let mut input = mandate_use();
    input.context.subject_claims.as_mut().unwrap()["delegation_edge_id"] = json!("");
    assert_eq!(outcome(&input, &b), "no_rule_matched");
    let mut input = mandate_use();
    input.context.requested_scopes = vec!["read".into()];
    assert_eq!(outcome(&input, &b), "no_rule_matched");
    let mut input = mandate_use();
    input.context.subject_claims.as_mut().unwrap()["scope"] = json!("   ");
    assert_eq!(outcome(&input, &b), "no_rule_matched");
    // Empty entries in the scope claim are dropped.
    let mut input = mandate_use();
    input.context.subject_claims.as_mut().unwrap()["scope"] = json!("  read  ");
    assert_eq!(outcome(&input, &b), "allow:caracal-files-use");
}

// ------------------------------------------------------------------ errors and shape

#[test]
fn another_schema_version_is_an_evaluation_error() {
    let b = bundle(zone_data());
    for version in ["2026-05-21", "", "2026-05-20 "] {
        let mut input = bootstrap();
        input.schema_version = version.into();
        match evaluate(&input, &b) {
            Err(PolicyError::SchemaVersion { found }) => assert_eq!(found, version),
            other => panic!("expected a schema error, got {other:?}"),
        }
        // Even the deny-all bundle does not turn it into a deny.
        assert!(evaluate(&input, &CompiledBundle::deny_all()).is_err());
    }
    let mut input = bootstrap();
    input.schema_version = "x".into();
    assert_eq!(
        evaluate(&input, &b).unwrap_err().code(),
        "policy_eval_failed"
    );
}

#[test]
fn oversized_inputs_are_errors_not_decisions() {
    let b = bundle(zone_data());
    let mut input = mint();
    input.context.requested_scopes = (0..2000).map(|i| format!("s{i}")).collect();
    assert!(matches!(
        evaluate(&input, &b),
        Err(PolicyError::LimitExceeded { .. })
    ));
    let mut input = mandate_use();
    input.context.subject_claims.as_mut().unwrap()["scope"] = json!("a ".repeat(40_000));
    assert!(matches!(
        evaluate(&input, &b),
        Err(PolicyError::LimitExceeded { .. })
    ));
}

#[test]
fn evaluation_is_small_and_explains_itself() {
    assert!(std::mem::size_of::<Evaluation<'static>>() <= 64);
    let b = bundle(zone_data());
    let input = mint();
    let eval = evaluate(&input, &b).unwrap();
    assert_eq!(eval.decided(), Decided::Allow(AllowRule::DelegatedMint));
    assert!(eval.decided().explanation().starts_with("delegated mint"));
    for reason in DenyReason::ALL {
        assert_eq!(DenyReason::parse(reason.as_str()), Some(reason));
        assert!(!reason.explanation().is_empty());
    }
}

#[test]
fn the_result_round_trips_as_the_wire_type() {
    let b = bundle(zone_data());
    let result = evaluate(&mint(), &b).unwrap().to_result();
    let text = serde_json::to_string(&result).unwrap();
    let back: caracal_core::model::policy::PolicyResult = serde_json::from_str(&text).unwrap();
    assert_eq!(back, result);
}

// ------------------------------------------------------------------ data compile errors

#[test]
fn wrong_shapes_are_refused_at_compile_time() {
    for data in [
        json!({"app_ids": ["files"]}),
        json!({"app_ids": {"files": 1}}),
        json!({"grants": {"resource://api": {"roles": {}}}}),
        json!({"grants": {"resource://api": {"application": "files", "roles": []}}}),
        json!({"grants": {"resource://api": {"application": "files", "roles": {"r": "read"}}}}),
        json!({"grants": {"resource://api": {"application": "files", "roles": {"r": [1]}}}}),
        json!({"grants": []}),
        json!({"confinement": {"label_prefix": "a", "scopes": []}}),
        json!({"confinement": [{"label_prefix": "a"}]}),
        json!({"confinement": [{"scopes": []}]}),
    ] {
        let doc = DataDocument::from_json_value("d.json", data.clone()).unwrap();
        let err = CompiledBundle::compile(&DataSet::merge([doc]).unwrap()).unwrap_err();
        assert!(matches!(err, PolicyError::InvalidData(_)), "{data}: {err}");
        assert_eq!(err.code(), "invalid_policy_bundle");
    }
}

#[test]
fn hostile_sizes_are_bounded() {
    let many: serde_json::Map<String, serde_json::Value> = (0..10_001)
        .map(|i| (format!("k{i}"), json!("app")))
        .collect();
    let doc = DataDocument::from_json_value("d.json", json!({"app_ids": many})).unwrap();
    assert!(matches!(
        CompiledBundle::compile(&DataSet::merge([doc]).unwrap()),
        Err(PolicyError::LimitExceeded { .. })
    ));
    let long = "x".repeat(5_000);
    let doc = DataDocument::from_json_value("d.json", json!({"app_ids": {long: "app"}})).unwrap();
    assert!(matches!(
        CompiledBundle::compile(&DataSet::merge([doc]).unwrap()),
        Err(PolicyError::LimitExceeded { .. })
    ));
}

#[test]
fn json_documents_use_the_invalid_rego_descriptions() {
    let cases = [
        ("", "empty_policy"),
        ("[1]", "must_be_data_document"),
        ("{}", "data_document_must_define_data"),
        (r#"{"result": {}}"#, "data_document_must_not_define_result"),
        (
            r#"{"app_ids": {}, "allow": true}"#,
            "data_document_rule_not_allowed:allow",
        ),
        ("{", "invalid_json"),
    ];
    for (content, description) in cases {
        let err = DataDocument::from_json_str("d.json", content).unwrap_err();
        assert_eq!(err.code(), "invalid_rego", "{content}");
        assert_eq!(err.description(), description, "{content}");
    }
}

#[test]
fn two_documents_defining_one_rule_are_refused() {
    let a = DataDocument::from_json_value("a.json", json!({"app_ids": {}})).unwrap();
    let b = DataDocument::from_json_value("b.json", json!({"app_ids": {}, "grants": {}})).unwrap();
    match DataSet::merge([a, b]) {
        Err(PolicyError::DuplicateDataKey { key, first, second }) => {
            assert_eq!(
                (key, first.as_str(), second.as_str()),
                (DataKey::AppIds, "a.json", "b.json")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stats_describe_the_bundle() {
    let b = bundle(with(zone_data(), json!({"risk": 1})));
    let stats = b.stats();
    assert_eq!((stats.app_ids, stats.grants), (2, 2));
    assert!(!stats.risk_well_formed && stats.approvals_well_formed && !stats.deny_all);
    assert!(CompiledBundle::deny_all().stats().deny_all);
}
