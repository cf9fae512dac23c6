//! Differential test: the native decision contract against the same contract written in Rego
//! (`tests/fixtures/policy/contract.rego`), evaluated with regorus on thousands of generated
//! inputs and data documents.
//!
//! Each round generates a zone's data over a small vocabulary (so that keys, labels, scopes
//! and resources collide often), renders it as one to three Rego data documents (sometimes
//! writing role scopes as Rego sets), loads it both ways — through the native loader and
//! compiler, and as modules next to the Rego contract — and decides a batch of generated
//! inputs of every shape. Decision, deny reason, determining policy, risk list and step-up
//! tiers must be identical. The run is seeded, so a failure reproduces; the seed and the case
//! are printed.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use caracal_core::model::policy::PolicyInput;
use caracal_core::policy::data::DocumentSource;
use caracal_core::policy::{CompiledBundle, evaluate};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

const CONTRACT: &str = include_str!("fixtures/policy/contract.rego");

const APPS: &[&str] = &["app-1", "app-2", "app-3"];
const KEYS: &[&str] = &["k1", "k2", "k3", "k4"];
const RESOURCES: &[&str] = &["res://a", "res://b", "res://c"];
const SCOPES: &[&str] = &["read", "write", "admin", "agent:lifecycle"];
const LABELS: &[&str] = &["ops.read", "ops.write", "dev", "x"];
const PREFIXES: &[&str] = &["ops.", "dev", "", "zz", "ops.read"];
const TIERS: &[&str] = &["high", "low", "pii"];

const ROUNDS: usize = 250;
const INPUTS_PER_ROUND: usize = 16;

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from.choose(rng).copied().unwrap()
}

fn subset(rng: &mut StdRng, from: &[&str], p: f64) -> Vec<String> {
    from.iter()
        .filter(|_| rng.gen_bool(p))
        .map(|s| s.to_string())
        .collect()
}

/// A zone's data, with `roles_as_sets` deciding how role scope lists are rendered in Rego.
struct Zone {
    data: Map<String, Value>,
    roles_as_sets: bool,
}

fn gen_zone(rng: &mut StdRng) -> Zone {
    let mut data = Map::new();
    if rng.gen_bool(0.9) {
        let mut ids = Map::new();
        for k in KEYS {
            if rng.gen_bool(0.6) {
                ids.insert(k.to_string(), json!(pick(rng, APPS)));
            }
        }
        data.insert("app_ids".into(), Value::Object(ids));
    }
    if rng.gen_bool(0.9) {
        let mut grants = Map::new();
        for r in RESOURCES {
            if rng.gen_bool(0.7) {
                let mut grant = Map::new();
                grant.insert("application".into(), json!(pick(rng, KEYS)));
                if rng.gen_bool(0.9) {
                    let mut roles = Map::new();
                    for l in LABELS {
                        if rng.gen_bool(0.5) {
                            roles.insert(l.to_string(), json!(subset(rng, SCOPES, 0.5)));
                        }
                    }
                    grant.insert("roles".into(), Value::Object(roles));
                }
                grants.insert(r.to_string(), Value::Object(grant));
            }
        }
        data.insert("grants".into(), Value::Object(grants));
    }
    if rng.gen_bool(0.4) {
        let rules: Vec<Value> = (0..rng.gen_range(0..3))
            .map(|_| json!({"label_prefix": pick(rng, PREFIXES), "scopes": subset(rng, SCOPES, 0.6)}))
            .collect();
        data.insert("confinement".into(), Value::Array(rules));
    }
    if rng.gen_bool(0.15) {
        let restrict = [
            json!({}),
            json!([]),
            json!({"reason": "maintenance"}),
            json!(["all"]),
            json!("yes"),
            json!(null),
            json!(false),
        ];
        data.insert("restrict".into(), restrict.choose(rng).unwrap().clone());
    }
    if rng.gen_bool(0.5) {
        let risk = if rng.gen_bool(0.85) {
            Value::Array(
                (0..rng.gen_range(0..4))
                    .map(|_| json!({"scope": pick(rng, SCOPES), "tier": pick(rng, TIERS)}))
                    .collect(),
            )
        } else {
            [
                json!([{"scope": "read"}]),
                json!([{"scope": "read", "tier": ""}]),
                json!([{"scope": 1, "tier": "high"}]),
                json!({"scope": "read", "tier": "high"}),
                json!("high"),
                json!([[]]),
            ]
            .choose(rng)
            .unwrap()
            .clone()
        };
        data.insert("risk".into(), risk);
    }
    if rng.gen_bool(0.5) {
        let tiers = if rng.gen_bool(0.85) {
            Value::Array(
                (0..rng.gen_range(0..3))
                    .map(|_| {
                        let mut d = Map::new();
                        d.insert("tier".into(), json!(pick(rng, TIERS)));
                        if rng.gen_bool(0.5) {
                            d.insert(
                                "approver".into(),
                                json!(pick(rng, &["operator", "subject", "any"])),
                            );
                        }
                        if rng.gen_bool(0.3) {
                            d.insert(
                                "privacy".into(),
                                json!(pick(rng, &["identified", "pseudonymous", "anonymous"])),
                            );
                        }
                        if rng.gen_bool(0.3) {
                            d.insert("ttl_seconds".into(), json!(rng.gen_range(60..3600)));
                        }
                        Value::Object(d)
                    })
                    .collect(),
            )
        } else {
            [
                json!([{"tier": ""}]),
                json!([{"tier": "high", "approver": "boss"}]),
                json!([{"tier": "high", "privacy": "public"}]),
                json!([{"tier": "high", "ttl_seconds": 0}]),
                json!([{"tier": "high", "ttl_seconds": 2.5}]),
                json!([{"tier": "high", "ttl_seconds": "60"}]),
                json!([{"approver": "any"}]),
                json!({"tier": "high"}),
                json!(["high"]),
            ]
            .choose(rng)
            .unwrap()
            .clone()
        };
        data.insert("approval_tiers".into(), tiers);
    }
    Zone {
        data,
        roles_as_sets: rng.gen_bool(0.3),
    }
}

/// A Rego literal for `v`; with `sets`, arrays of strings become Rego sets.
fn literal(v: &Value, sets: bool) -> String {
    match v {
        Value::Array(items) if sets && items.iter().all(Value::is_string) => {
            if items.is_empty() {
                "set()".into()
            } else {
                let inner: Vec<String> = items.iter().map(|i| i.to_string()).collect();
                format!("{{{}}}", inner.join(", "))
            }
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(|i| literal(i, sets)).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    // Only role scope lists (values under "roles") become sets.
                    let nested_sets = sets && k != "application";
                    format!("{}: {}", Value::from(k.as_str()), literal(v, nested_sets))
                })
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        other => other.to_string(),
    }
}

/// Split the zone's rules over one to three Rego documents.
fn render_documents(rng: &mut StdRng, zone: &Zone) -> Vec<String> {
    let n = rng.gen_range(1..=3);
    let mut docs: Vec<String> = (0..n)
        .map(|_| "# caracal:data-document\npackage caracal.authz\n\n".to_string())
        .collect();
    let mut used = vec![false; n];
    for (key, value) in &zone.data {
        let i = rng.gen_range(0..n);
        used[i] = true;
        let sets = zone.roles_as_sets && key == "grants";
        let body = if sets {
            // grants → {res: {application, roles: {label: set}}}
            let Value::Object(grants) = value else {
                unreachable!()
            };
            let entries: Vec<String> = grants
                .iter()
                .map(|(r, g)| {
                    let app = g["application"].to_string();
                    match g.get("roles") {
                        Some(roles) => format!(
                            "{}: {{\"application\": {app}, \"roles\": {}}}",
                            Value::from(r.as_str()),
                            literal(roles, true)
                        ),
                        None => format!("{}: {{\"application\": {app}}}", Value::from(r.as_str())),
                    }
                })
                .collect();
            format!("{{{}}}", entries.join(", "))
        } else {
            literal(value, false)
        };
        docs[i].push_str(&format!("{key} := {body}\n"));
    }
    // A document must define data: drop the ones that received nothing.
    docs.into_iter()
        .zip(used)
        .filter_map(|(d, u)| u.then_some(d))
        .collect()
}

/// A request that the zone's data is likely to grant: a granted resource, its owner as the
/// principal, a role label and some of the role's scopes. Random fields are then perturbed
/// by the caller, so every gate fails some of the time.
struct Likely {
    resource: String,
    principal: String,
    labels: Vec<String>,
    scopes: Vec<String>,
}

fn likely(rng: &mut StdRng, zone: &Zone) -> Option<Likely> {
    let grants = zone.data.get("grants")?.as_object()?;
    let (resource, grant) = grants.iter().collect::<Vec<_>>().choose(rng).copied()?;
    let key = grant["application"].as_str()?;
    let principal = zone.data.get("app_ids")?.get(key)?.as_str()?.to_owned();
    let roles = grant.get("roles").and_then(Value::as_object);
    let (label, scopes) = roles
        .and_then(|r| r.iter().collect::<Vec<_>>().choose(rng).copied())
        .map(|(l, s)| {
            let scopes: Vec<String> = s
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .filter(|v| v != "agent:lifecycle")
                .collect();
            (l.clone(), scopes)
        })
        .unwrap_or_else(|| (pick(rng, LABELS).to_owned(), vec!["read".to_owned()]));
    let mut chosen: Vec<String> = scopes.into_iter().filter(|_| rng.gen_bool(0.7)).collect();
    if chosen.is_empty() {
        chosen.push("read".into());
    }
    Some(Likely {
        resource: resource.clone(),
        principal,
        labels: vec![label],
        scopes: chosen,
    })
}

fn gen_input(rng: &mut StdRng, zone: &Zone) -> Value {
    // 0 bootstrap, 1 delegated mint, 2 mandate use, 3 workload, 4 anything.
    let shape = *[0, 1, 1, 1, 2, 2, 2, 3, 4, 4].choose(rng).unwrap();
    let hint = if rng.gen_bool(0.75) {
        likely(rng, zone)
    } else {
        None
    };
    let mut labels = subset(rng, LABELS, 0.4);
    let mut principal_id = pick(rng, APPS).to_owned();
    let mut resource = pick(rng, RESOURCES).to_owned();
    let mut scopes = subset(rng, SCOPES, 0.35);
    if let Some(h) = &hint {
        principal_id = h.principal.clone();
        resource = h.resource.clone();
        labels = h.labels.clone();
        if rng.gen_bool(0.3) {
            labels.push(pick(rng, LABELS).to_owned());
        }
        scopes = h.scopes.clone();
    }
    let mut principal = json!({
        "type": if shape == 3 || rng.gen_bool(0.03) { "Workload" } else { "Application" },
        "id": principal_id,
        "zone_id": "zone-1",
    });
    if rng.gen_bool(0.9) {
        principal["labels"] = json!(labels);
    }
    let action_id = if shape == 3 || rng.gen_bool(0.03) {
        "CredentialInjection"
    } else {
        "TokenExchange"
    };
    let mut input = json!({
        "schema_version": "2026-05-20",
        "principal": principal,
        "resource": {"type": "Resource", "id": "r-1", "identifier": resource, "scopes": ["read", "write"]},
        "action": {"id": action_id},
        "context": {"actor_claims": {"caracal_client_id": "app-1"}, "trace_id": "t", "challenge_resolved": rng.gen_bool(0.2)},
    });
    let mut requested: Vec<String> = match shape {
        0 if rng.gen_bool(0.85) => vec!["agent:lifecycle".into()],
        2 if rng.gen_bool(0.9) => vec![],
        _ => scopes.clone(),
    };
    if rng.gen_bool(0.1) {
        requested.push(pick(rng, SCOPES).to_owned());
    }
    if rng.gen_bool(0.05) {
        requested.push("read".into());
        requested.push("read".into());
    }
    input["context"]["requested_scopes"] = json!(requested);
    // Delegation edge and governed session: mostly for mints.
    let edge_p = if shape == 1 { 0.95 } else { 0.05 };
    if rng.gen_bool(edge_p) {
        let mut edge_scopes = if rng.gen_bool(0.8) {
            requested.clone()
        } else {
            vec![]
        };
        edge_scopes.extend(subset(rng, SCOPES, 0.3));
        input["delegation_edge"] = json!({
            "id": if rng.gen_bool(0.97) { "e1" } else { "" },
            "source_session_id": "s0", "target_session_id": "s1",
            "issuer_application_id": "app-2", "receiver_application_id": "app-1",
            "resource_id": "", "scopes": edge_scopes,
            "edge_version": 1, "path": ["e1"], "graph_epoch": 1, "constraints_json": {}
        });
    }
    if rng.gen_bool(edge_p) {
        input["context"]["agent_session_id"] = json!(if rng.gen_bool(0.97) { "s1" } else { "" });
    }
    // Subject claims: mostly for mandate use.
    let subject_p = if shape == 2 { 0.95 } else { 0.04 };
    if rng.gen_bool(subject_p) {
        let mut claims = Map::new();
        match rng.gen_range(0..20) {
            0 => {}
            1 => {
                claims.insert("delegation_edge_id".into(), json!(""));
            }
            2 => {
                claims.insert("delegation_edge_id".into(), json!(5));
            }
            _ => {
                claims.insert("delegation_edge_id".into(), json!("e1"));
            }
        }
        let scope_claim = match rng.gen_range(0..12) {
            0 => Some(json!(7)),
            1 => Some(json!("")),
            2 => None,
            3 => Some(json!(format!("  {}  ", scopes.join("   ")))),
            4 => Some(json!(subset(rng, SCOPES, 0.4).join(" "))),
            _ => Some(json!(scopes.join(" "))),
        };
        if let Some(c) = scope_claim {
            claims.insert("scope".into(), c);
        }
        match rng.gen_range(0..12) {
            0 => {}
            1 => {
                claims.insert("target".into(), json!(resource));
            }
            2 | 3 => {
                let t: Vec<&str> = RESOURCES
                    .iter()
                    .copied()
                    .filter(|_| rng.gen_bool(0.5))
                    .collect();
                claims.insert("target".into(), json!(t));
            }
            _ => {
                claims.insert("target".into(), json!([resource, pick(rng, RESOURCES)]));
            }
        }
        input["context"]["subject_claims"] = Value::Object(claims);
    }
    input
}

/// What both engines must agree on, from a wire result.
#[derive(Debug, PartialEq, Eq)]
struct Comparable {
    decision: String,
    reason: Option<String>,
    policies: Vec<String>,
    risk: Vec<(String, String)>,
    step_up_tiers: Vec<String>,
    diagnostic_keys: Vec<String>,
}

fn comparable(result: &Value) -> Comparable {
    let diagnostics = result["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reason = diagnostics
        .iter()
        .find_map(|d| d.get("reason").and_then(Value::as_str).map(str::to_owned));
    let policies = result["determining_policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap().to_owned())
        .collect();
    let mut risk = Vec::new();
    let mut step_up_tiers = Vec::new();
    let mut diagnostic_keys = Vec::new();
    for d in &diagnostics {
        diagnostic_keys.extend(d.as_object().unwrap().keys().cloned());
        if let Some(list) = d.get("risk").and_then(Value::as_array) {
            for r in list {
                risk.push((
                    r["scope"].as_str().unwrap().to_owned(),
                    r["tier"].as_str().unwrap().to_owned(),
                ));
            }
        }
        if let Some(s) = d.get("step_up_required") {
            assert_eq!(s["type"], "human_approval");
            for t in s["tiers"].as_array().unwrap() {
                // Canonical JSON (sorted keys), so both engines' declarations compare.
                step_up_tiers.push(serde_json::to_string(t).unwrap());
            }
        }
    }
    step_up_tiers.sort();
    Comparable {
        decision: result["decision"].as_str().unwrap().to_owned(),
        reason,
        policies,
        risk,
        step_up_tiers,
        diagnostic_keys,
    }
}

#[test]
fn native_and_rego_contracts_agree() {
    let seed: u64 = std::env::var("POLICY_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00C4_2AC4_1DEC);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut base = regorus::Engine::new();
    base.add_policy("contract.rego".into(), CONTRACT.into())
        .expect("the Rego contract parses");
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut decisions = 0usize;
    for round in 0..ROUNDS {
        let zone = gen_zone(&mut rng);
        let docs = render_documents(&mut rng, &zone);
        let sources: Vec<DocumentSource<'_>> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| DocumentSource {
                label: ["doc-a", "doc-b", "doc-c"][i],
                content: d,
            })
            .collect();
        let bundle = CompiledBundle::from_sources(&sources).unwrap_or_else(|e| {
            panic!(
                "seed {seed} round {round}: native load failed: {e}\n{}",
                docs.join("\n---\n")
            )
        });
        let mut engine = base.clone();
        for (i, d) in docs.iter().enumerate() {
            engine
                .add_policy(format!("doc-{i}.rego"), d.clone())
                .unwrap();
        }
        for _ in 0..INPUTS_PER_ROUND {
            let raw = gen_input(&mut rng, &zone);
            let input: PolicyInput = serde_json::from_value(raw.clone()).unwrap();
            let native =
                serde_json::to_value(evaluate(&input, &bundle).unwrap().to_result()).unwrap();
            engine.set_input(regorus::Value::from_json_str(&raw.to_string()).unwrap());
            let results = engine
                .eval_query("data.caracal.authz.result".into(), false)
                .unwrap_or_else(|e| {
                    panic!(
                        "seed {seed} round {round}: rego failed: {e}\ninput {raw}\n{}",
                        docs.join("\n---\n")
                    )
                });
            let rego_value = &results.result[0].expressions[0].value;
            let rego: Value = serde_json::from_str(&rego_value.to_json_str().unwrap()).unwrap();
            let (n, r) = (comparable(&native), comparable(&rego));
            assert_eq!(
                n,
                r,
                "seed {seed} round {round}\ninput {raw}\ndata {}\ndocs:\n{}\nnative {native}\nrego {rego}",
                Value::Object(zone.data.clone()),
                docs.join("\n---\n")
            );
            let key = n.reason.clone().unwrap_or_else(|| n.policies.join(","));
            *tally.entry(key).or_default() += 1;
            if !n.step_up_tiers.is_empty() {
                *tally.entry("(with step_up_required)".into()).or_default() += 1;
            }
            if !n.risk.is_empty() {
                *tally.entry("(with risk)".into()).or_default() += 1;
            }
            decisions += 1;
        }
    }
    eprintln!("{decisions} decisions compared; outcomes: {tally:#?}");
    // The generator must reach every rule and every reason (except the deny-all fallback,
    // which has no data to differ on).
    for must in [
        "no_rule_matched",
        "restriction_active",
        "malformed_risk_data",
        "malformed_approval_data",
        "resource_not_granted",
        "delegation_scope_exceeded",
        "confinement_violation",
        "role_scope_mismatch",
        "mandate_target_mismatch",
        "caracal-bootstrap",
        "caracal-workload-mint",
        "(with step_up_required)",
        "(with risk)",
    ] {
        assert!(
            tally.get(must).copied().unwrap_or(0) >= 5,
            "{must} reached too rarely: {tally:?}"
        );
    }
    let mints: usize = tally
        .iter()
        .filter(|(k, _)| k.ends_with("-mint") && k.as_str() != "caracal-workload-mint")
        .map(|(_, v)| v)
        .sum();
    let uses: usize = tally
        .iter()
        .filter(|(k, _)| k.ends_with("-use"))
        .map(|(_, v)| v)
        .sum();
    assert!(
        mints >= 5 && uses >= 5,
        "mint {mints}, use {uses}: {tally:?}"
    );
}
