//! Policy decision benches (SPEC §6: in-process decision p50 ≤ 1 µs, p99 ≤ 5 µs).
//!
//! A zone with 100 applications and 1,000 resource grants (three roles each), ten
//! confinement rules, fifty risk entries and three approval tiers, built once. Measured:
//!
//! - `policy_decision/*`: one `evaluate` call on the allow paths (delegated mint, delegated
//!   mint carrying a step-up, mandate use, bootstrap) and on two deny paths; plus rendering
//!   the wire result, which is the only step that allocates;
//! - `policy_load/*`: loading the same zone's data from a Rego data document (regorus
//!   evaluation + compile) and from JSON (compile only).
//!
//! After criterion, the bench prints per-call percentiles of the delegated-mint allow and
//! the scope-exceeded deny measured with `Instant` around single calls (each sample includes
//! the timer's own cost, a few tens of ns).
//!
//! Run: `cargo bench -p caracal-benches --bench policy_decision -- --quick`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use caracal_core::model::policy::PolicyInput;
use caracal_core::policy::data::DocumentSource;
use caracal_core::policy::{CompiledBundle, evaluate};
use criterion::Criterion;
use serde_json::{Map, Value, json};

/// The zone's data as one JSON object.
fn zone_data() -> Value {
    let app_ids: Map<String, Value> = (0..100)
        .map(|a| {
            (
                format!("app{a:03}"),
                json!(format!("0190f0a2-0000-7000-8000-{a:012}")),
            )
        })
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
    json!({
        "app_ids": app_ids,
        "grants": grants,
        "confinement": confinement,
        "risk": risk,
        "approval_tiers": [
            {"tier": "high", "approver": "operator"},
            {"tier": "critical", "approver": "operator", "ttl_seconds": 300},
            {"tier": "pii", "approver": "subject", "privacy": "pseudonymous"}
        ]
    })
}

/// The same data as one Rego data document (JSON values are Rego literals).
fn zone_rego(data: &Value) -> String {
    let mut text = String::from("# caracal:data-document\npackage caracal.authz\n\n");
    if let Value::Object(rules) = data {
        for (rule, value) in rules {
            // One grant per line keeps lines short, as an author would write them.
            let rendered = match value {
                Value::Object(map) => {
                    let lines: Vec<String> = map
                        .iter()
                        .map(|(k, v)| format!("  {}: {v}", Value::from(k.as_str())))
                        .collect();
                    format!("{{\n{}\n}}", lines.join(",\n"))
                }
                other => other.to_string(),
            };
            text.push_str(&format!("{rule} := {rendered}\n\n"));
        }
    }
    text
}

fn parse(v: Value) -> PolicyInput {
    match serde_json::from_value(v) {
        Ok(input) => input,
        Err(e) => panic_free_exit(&format!("bad bench input: {e}")),
    }
}

/// Benches are not library code: a broken setup ends the process with a message.
fn panic_free_exit(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(2)
}

const PRINCIPAL: &str = "0190f0a2-0000-7000-8000-000000000042";

fn mint(scopes: &[&str], edge: &[&str], labels: &[&str]) -> PolicyInput {
    parse(json!({
        "schema_version": "2026-05-20",
        "principal": {"type": "Application", "id": PRINCIPAL, "zone_id": "z",
                      "agent_session_id": "s1", "lifecycle": "task", "labels": labels},
        "resource": {"type": "Resource", "id": "r", "identifier": "resource://svc-0142",
                     "scopes": ["svc:read", "svc:write", "svc:admin"]},
        "action": {"id": "TokenExchange"},
        "session": {"id": "ar-1"},
        "delegation_edge": {"id": "e1", "source_session_id": "s0", "target_session_id": "s1",
                            "issuer_application_id": "a", "receiver_application_id": "b",
                            "resource_id": "r", "scopes": edge, "edge_version": 1,
                            "path": ["e1"], "graph_epoch": 3, "constraints_json": {}},
        "context": {"actor_claims": {"caracal_client_id": PRINCIPAL}, "trace_id": "t",
                    "session_id": "ar-1", "agent_session_id": "s1", "delegation_edge_id": "e1",
                    "challenge_resolved": false, "requested_scopes": scopes}
    }))
}

struct Inputs {
    mint: PolicyInput,
    mint_step_up: PolicyInput,
    mandate_use: PolicyInput,
    bootstrap: PolicyInput,
    deny_scope: PolicyInput,
    deny_grant: PolicyInput,
}

fn inputs() -> Inputs {
    let mint_ok = mint(
        &["svc:read", "svc:write"],
        &["svc:read", "svc:write"],
        &["team-4.agent", "writer"],
    );
    let mut mandate_use = mint(&[], &[], &["team-4.agent", "writer"]);
    mandate_use.delegation_edge = None;
    mandate_use.context.subject_claims = json!({
        "delegation_edge_id": "e1", "scope": "svc:read svc:write",
        "target": ["resource://svc-0142"], "use": "gateway", "sub": PRINCIPAL
    })
    .as_object()
    .cloned();
    let mut bootstrap = mint(&["agent:lifecycle"], &[], &[]);
    bootstrap.delegation_edge = None;
    bootstrap.context.agent_session_id = None;
    bootstrap.principal.labels = None;
    let mut deny_grant = mint_ok.clone();
    deny_grant.resource.identifier = "resource://svc-0143".into();
    Inputs {
        mint_step_up: mint(
            &["svc:read", "svc:admin"],
            &["svc:read", "svc:admin"],
            &["admin"],
        ),
        deny_scope: mint(
            &["svc:read", "svc:write"],
            &["svc:read"],
            &["team-4.agent", "writer"],
        ),
        mint: mint_ok,
        mandate_use,
        bootstrap,
        deny_grant,
    }
}

fn compile_json(data: &Value) -> CompiledBundle {
    let text = data.to_string();
    match CompiledBundle::from_sources(&[DocumentSource {
        label: "zone.json",
        content: &text,
    }]) {
        Ok(b) => b,
        Err(e) => panic_free_exit(&format!("zone does not compile: {e}")),
    }
}

fn decision_benches(c: &mut Criterion) {
    let bundle = compile_json(&zone_data());
    let inputs = inputs();
    let mut group = c.benchmark_group("policy_decision");
    let cases: [(&str, &PolicyInput); 6] = [
        ("allow_delegated_mint", &inputs.mint),
        ("allow_delegated_mint_step_up", &inputs.mint_step_up),
        ("allow_mandate_use", &inputs.mandate_use),
        ("allow_bootstrap", &inputs.bootstrap),
        ("deny_scope_exceeded", &inputs.deny_scope),
        ("deny_resource_not_granted", &inputs.deny_grant),
    ];
    for (name, input) in cases {
        // Check the path is the intended one before timing it.
        let expected_allow = name.starts_with("allow");
        match evaluate(input, &bundle) {
            Ok(e) if e.is_allow() == expected_allow => {}
            other => panic_free_exit(&format!("{name}: unexpected {other:?}")),
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                let eval = evaluate(black_box(input), black_box(&bundle));
                black_box(eval.map(|e| e.is_allow()).unwrap_or(false))
            })
        });
    }
    group.bench_function("allow_delegated_mint_render_result", |b| {
        b.iter(|| {
            black_box(
                evaluate(black_box(&inputs.mint), &bundle)
                    .map(|e| e.to_result())
                    .ok(),
            )
        })
    });
    group.finish();
}

fn load_benches(c: &mut Criterion) {
    let data = zone_data();
    let rego = zone_rego(&data);
    let json_text = data.to_string();
    let mut group = c.benchmark_group("policy_load");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("rego_document_100_apps_1000_grants", |b| {
        b.iter(|| {
            black_box(
                CompiledBundle::from_sources(&[DocumentSource {
                    label: "zone.rego",
                    content: black_box(&rego),
                }])
                .is_ok(),
            )
        })
    });
    group.bench_function("json_document_100_apps_1000_grants", |b| {
        b.iter(|| {
            black_box(
                CompiledBundle::from_sources(&[DocumentSource {
                    label: "zone.json",
                    content: black_box(&json_text),
                }])
                .is_ok(),
            )
        })
    });
    group.finish();
}

/// Percentiles of single calls, timed one by one.
fn percentiles(name: &str, input: &PolicyInput, bundle: &CompiledBundle) {
    const N: usize = 1_000_000;
    for _ in 0..10_000 {
        black_box(
            evaluate(black_box(input), bundle)
                .map(|e| e.is_allow())
                .ok(),
        );
    }
    let mut samples = Vec::with_capacity(N);
    for _ in 0..N {
        let start = Instant::now();
        black_box(
            evaluate(black_box(input), bundle)
                .map(|e| e.is_allow())
                .ok(),
        );
        samples.push(start.elapsed());
    }
    // An empty-timer baseline, to read the figures net of `Instant` itself.
    let mut baseline = Vec::with_capacity(N);
    for _ in 0..N {
        let start = Instant::now();
        baseline.push(black_box(start).elapsed());
    }
    samples.sort_unstable();
    baseline.sort_unstable();
    let at = |v: &[Duration], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    println!(
        "{name}: p50 {:?}  p90 {:?}  p99 {:?}  p99.9 {:?}  (timer alone: p50 {:?}, p99 {:?})",
        at(&samples, 0.50),
        at(&samples, 0.90),
        at(&samples, 0.99),
        at(&samples, 0.999),
        at(&baseline, 0.50),
        at(&baseline, 0.99),
    );
}

fn main() {
    // What `criterion_group!`/`criterion_main!` expand to, written out so the bench has no
    // undocumented public function.
    let mut criterion = Criterion::default().configure_from_args();
    decision_benches(&mut criterion);
    load_benches(&mut criterion);
    criterion.final_summary();
    // `cargo test --all-targets` runs this binary without `--bench` (criterion's test mode,
    // every bench once): skip the million-call percentiles there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bundle = compile_json(&zone_data());
    let inputs = inputs();
    println!("\nper-call percentiles, 1,000,000 single calls each:");
    percentiles("allow_delegated_mint", &inputs.mint, &bundle);
    percentiles("allow_mandate_use", &inputs.mandate_use, &bundle);
    percentiles("deny_scope_exceeded", &inputs.deny_scope, &bundle);
}
