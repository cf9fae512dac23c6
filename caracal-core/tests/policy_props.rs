//! Property tests of the decision contract:
//!
//! - a delegated mint never allows a scope outside the delegation edge;
//! - a non-empty `restrict` denies every request;
//! - adding a confinement rule never turns a deny into an allow;
//! - the decision (indeed the whole result) does not depend on the order of data entries or
//!   on how the rules are split over documents.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use caracal_core::model::policy::{
    Action, ActorClaims, Context, DelegationEdgeInput, PolicyInput, Principal, ResourceRef,
};
use caracal_core::policy::data::DocumentSource;
use caracal_core::policy::{CompiledBundle, DataDocument, DataSet, DenyReason, evaluate};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const KEYS: &[&str] = &["k1", "k2", "k3"];
const RESOURCES: &[&str] = &["res://a", "res://b"];
const SCOPES: &[&str] = &["read", "write", "admin", "agent:lifecycle"];
const MINT_SCOPES: &[&str] = &["read", "write", "admin"];
const LABELS: &[&str] = &["ops.read", "ops.write", "dev"];
const PREFIXES: &[&str] = &["ops.", "dev", "", "ops.read", "zz"];
const TIERS: &[&str] = &["high", "low"];

/// `app-1` four times out of five, so that the principal often owns what it asks for.
fn app() -> impl Strategy<Value = String> {
    prop_oneof![4 => Just("app-1".to_owned()), 1 => Just("app-2".to_owned())]
}

fn one(from: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(from).prop_map(str::to_owned)
}

fn some_of(from: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(one(from), 0..4)
}

fn confinement_rule() -> impl Strategy<Value = Value> {
    (one(PREFIXES), some_of(SCOPES)).prop_map(|(p, s)| json!({"label_prefix": p, "scopes": s}))
}

fn grant() -> impl Strategy<Value = Value> {
    (
        one(KEYS),
        prop::collection::btree_map(one(LABELS), prop::collection::vec(one(SCOPES), 0..7), 0..3),
    )
        .prop_map(|(app, roles)| json!({"application": app, "roles": roles}))
}

/// Zone data over a small vocabulary, so that grants, roles and scopes collide often.
fn data() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map(one(KEYS), app(), 1..4),
        prop::collection::btree_map(one(RESOURCES), grant(), 1..3),
        prop::collection::vec(confinement_rule(), 0..2),
        prop::option::of(prop::collection::vec(
            (one(SCOPES), one(TIERS)).prop_map(|(s, t)| json!({"scope": s, "tier": t})),
            0..3,
        )),
        prop::option::of(prop::collection::vec(
            (
                one(TIERS),
                prop::option::of(one(&["operator", "subject", "any"])),
            )
                .prop_map(|(t, a)| match a {
                    Some(a) => json!({"tier": t, "approver": a}),
                    None => json!({"tier": t}),
                }),
            0..3,
        )),
    )
        .prop_map(|(app_ids, grants, confinement, risk, approvals)| {
            let mut m = Map::new();
            m.insert("app_ids".into(), json!(app_ids));
            m.insert("grants".into(), json!(grants));
            m.insert("confinement".into(), json!(confinement));
            if let Some(r) = risk {
                m.insert("risk".into(), json!(r));
            }
            if let Some(a) = approvals {
                m.insert("approval_tiers".into(), json!(a));
            }
            Value::Object(m)
        })
}

fn edge(scopes: Vec<String>) -> DelegationEdgeInput {
    DelegationEdgeInput {
        id: "e1".into(),
        source_session_id: "s0".into(),
        target_session_id: "s1".into(),
        issuer_application_id: "app-2".into(),
        receiver_application_id: "app-1".into(),
        resource_id: String::new(),
        scopes,
        edge_version: 1,
        path: vec!["e1".into()],
        graph_epoch: 1,
        constraints_json: json!({}),
    }
}

fn base_input(principal: String, labels: Vec<String>, resource: String) -> PolicyInput {
    PolicyInput {
        schema_version: "2026-05-20".into(),
        principal: Principal {
            kind: "Application".into(),
            id: principal,
            zone_id: "zone-1".into(),
            registration_method: None,
            agent_session_id: None,
            lifecycle: None,
            labels: Some(labels),
        },
        resource: ResourceRef {
            kind: "Resource".into(),
            id: "r".into(),
            identifier: resource,
            scopes: vec!["read".into(), "write".into()],
        },
        action: Action {
            id: "TokenExchange".into(),
            method: None,
            path: None,
        },
        session: None,
        delegation_edge: None,
        context: Context {
            actor_claims: ActorClaims {
                caracal_client_id: "app-1".into(),
            },
            subject_claims: None,
            trace_id: "t".into(),
            session_id: None,
            agent_session_id: None,
            delegation_edge_id: None,
            challenge_resolved: false,
            requested_scopes: vec![],
        },
    }
}

/// A delegated mint request.
fn mint_input() -> impl Strategy<Value = PolicyInput> {
    (
        app(),
        prop::collection::vec(one(LABELS), 1..3),
        one(RESOURCES),
        prop::collection::vec(one(MINT_SCOPES), 1..3),
        some_of(SCOPES),
        any::<bool>(),
    )
        .prop_map(|(app, labels, res, requested, extra, covering)| {
            let mut input = base_input(app, labels, res);
            // Half the edges cover the request, so the other gates are reached.
            let mut edge_scopes = if covering { requested.clone() } else { vec![] };
            edge_scopes.extend(extra);
            input.delegation_edge = Some(edge(edge_scopes));
            input.context.agent_session_id = Some("s1".into());
            input.context.requested_scopes = requested;
            input
        })
}

/// A request of any shape (bootstrap, delegated mint, mandate use, workload, or none).
fn any_input() -> impl Strategy<Value = PolicyInput> {
    (
        0..5u8,
        mint_input(),
        some_of(SCOPES),
        prop::collection::vec(one(RESOURCES), 0..3),
        any::<bool>(),
    )
        .prop_map(|(shape, mut input, presented, mut target, targeted)| {
            if targeted {
                target.push(input.resource.identifier.clone());
            }
            match shape {
                0 => {
                    input.delegation_edge = None;
                    input.context.agent_session_id = None;
                    input.context.requested_scopes = vec!["agent:lifecycle".into()];
                }
                1 => {}
                2 => {
                    input.context.requested_scopes = vec![];
                    input.context.subject_claims = Some(
                        json!({"delegation_edge_id": "e1", "scope": presented.join(" "), "target": target})
                            .as_object()
                            .unwrap()
                            .clone(),
                    );
                }
                3 => {
                    input.delegation_edge = None;
                    input.context.agent_session_id = None;
                    input.principal.kind = "Workload".into();
                    input.action.id = "CredentialInjection".into();
                }
                _ => {
                    input.context.subject_claims = Some(Map::new());
                }
            }
            input
        })
}

fn compile(data: &Value) -> CompiledBundle {
    let doc = DataDocument::from_json_value("d.json", data.clone()).unwrap();
    CompiledBundle::compile(&DataSet::merge([doc]).unwrap()).unwrap()
}

fn result(input: &PolicyInput, bundle: &CompiledBundle) -> Value {
    serde_json::to_value(evaluate(input, bundle).unwrap().to_result()).unwrap()
}

/// Reverse every array in the data (entry order) — objects are key-ordered already.
fn reversed(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().rev().map(reversed).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), reversed(v))).collect())
        }
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_delegated_mint_never_exceeds_the_edge(data in data(), input in mint_input()) {
        let bundle = compile(&data);
        let eval = evaluate(&input, &bundle).unwrap();
        if eval.is_allow() {
            let edge = input.delegation_edge.as_ref().unwrap();
            for s in &input.context.requested_scopes {
                prop_assert!(edge.scopes.contains(s), "{s} allowed outside {:?}", edge.scopes);
            }
        }
    }

    #[test]
    fn a_non_empty_restrict_denies_everything(
        data in data(),
        input in any_input(),
        restrict in prop_oneof![
            some_of(SCOPES).prop_filter("non-empty", |v| !v.is_empty()).prop_map(|v| json!(v)),
            one(KEYS).prop_map(|k| json!({k: true})),
            Just(json!("on")),
            Just(json!(1)),
        ],
    ) {
        let mut data = data;
        data["restrict"] = restrict;
        let bundle = compile(&data);
        let eval = evaluate(&input, &bundle).unwrap();
        prop_assert_eq!(eval.deny_reason(), Some(DenyReason::RestrictionActive));
    }

    #[test]
    fn a_confinement_rule_never_turns_deny_into_allow(
        data in data(),
        input in any_input(),
        rule in confinement_rule(),
    ) {
        let before = compile(&data);
        let mut more = data.clone();
        more["confinement"].as_array_mut().unwrap().push(rule);
        let after = compile(&more);
        let was = evaluate(&input, &before).unwrap();
        let now = evaluate(&input, &after).unwrap();
        prop_assert!(!now.is_allow() || was.is_allow(), "deny became allow");
    }

    #[test]
    fn the_result_does_not_depend_on_data_order(
        data in data(),
        input in any_input(),
        split in any::<bool>(),
    ) {
        let straight = compile(&data);
        let rev = reversed(&data);
        let expected = result(&input, &straight);
        prop_assert_eq!(&result(&input, &compile(&rev)), &expected);
        if split {
            // The same rules over two documents, listed in either order.
            let obj = rev.as_object().unwrap();
            let (a, b): (Map<String, Value>, Map<String, Value>) = obj
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .partition(|(k, _)| k.len() % 2 == 0);
            let (a, b) = (Value::Object(a).to_string(), Value::Object(b).to_string());
            let mut docs = vec![a, b];
            docs.retain(|d| d != "{}");
            for order in [docs.clone(), docs.iter().rev().cloned().collect()] {
                let sources: Vec<DocumentSource<'_>> = order
                    .iter()
                    .map(|c| DocumentSource { label: "d", content: c })
                    .collect();
                let bundle = CompiledBundle::from_sources(&sources).unwrap();
                prop_assert_eq!(&result(&input, &bundle), &expected);
            }
        }
    }
}

/// The generators reach allows of every rule, so the properties above are not vacuous.
#[test]
fn the_generators_reach_allows() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut allows = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..5000 {
        let data = data().new_tree(&mut runner).unwrap().current();
        let input = any_input().new_tree(&mut runner).unwrap().current();
        let bundle = compile(&data);
        let eval = evaluate(&input, &bundle).unwrap();
        if let Some(rule) = eval.rule() {
            *allows.entry(format!("{rule:?}")).or_default() += 1;
        } else {
            *allows
                .entry(format!("{:?}", eval.deny_reason()))
                .or_default() += 1;
        }
    }
    for rule in ["Bootstrap", "DelegatedMint", "MandateUse", "WorkloadMint"] {
        assert!(allows.get(rule).copied().unwrap_or(0) >= 10, "{allows:?}");
    }
}
