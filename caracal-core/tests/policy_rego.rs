//! Rego data documents: every `invalid_rego` description of the reference, evaluation to data
//! with regorus, and bundles of several documents.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod policy_support;

use caracal_core::policy::data::DocumentSource;
use caracal_core::policy::lifecycle::validate_content;
use caracal_core::policy::rego::{evaluate_documents, validate};
use caracal_core::policy::{CompiledBundle, DataKey, DataSet, PolicyError, evaluate};
use policy_support::*;
use serde_json::json;

const HEAD: &str = "# caracal:data-document\npackage caracal.authz\n\n";

fn doc(body: &str) -> String {
    format!("{HEAD}{body}\n")
}

fn description(content: &str) -> String {
    match validate(content) {
        Ok(v) => format!("valid: {v}"),
        Err(e) => {
            assert_eq!(e.code(), "invalid_rego", "{e}");
            e.description()
        }
    }
}

#[test]
fn a_template_shaped_document_is_valid() {
    let content = doc(r#"app_ids := {"anton": "app-1"}
grants := {"resource://pipernet": {"application": "anton", "roles": {"reader": ["pipernet:read"]}}}"#);
    let v = validate(&content).unwrap();
    assert_eq!(v.package, "caracal.authz");
    assert_eq!(v.rules, vec![DataKey::AppIds, DataKey::Grants]);
    assert_eq!(
        v.to_string(),
        "package caracal.authz defines app_ids, grants"
    );
}

#[test]
fn every_reference_description() {
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "empty_policy"),
        ("  \n\t".into(), "empty_policy"),
        (
            doc(&format!(
                "app_ids := {{\"k\": \"{}\"}}",
                "x".repeat(262_144)
            )),
            "content_too_large",
        ),
        (doc(r#"app_ids := {"k": "v}"#), "unterminated_string"),
        (doc("app_ids := {\"k\": `raw"), "unterminated_string"),
        (doc(r#"app_ids := {"k": "v""#), "unbalanced_delimiters"),
        (doc(r#"app_ids := {"k": ["v"}]"#), "unbalanced_delimiters"),
        (doc(r#"app_ids := {"k": "v"}}"#), "unbalanced_delimiters"),
        (
            "# caracal:data-document\napp_ids := {}\n".into(),
            "missing_package_declaration",
        ),
        (
            "# caracal:data-document\npackage caracal.9authz\napp_ids := {}\n".into(),
            "invalid_package_name",
        ),
        (
            "# caracal:data-document\npackage caracal[\"authz\"]\napp_ids := {}\n".into(),
            "invalid_package_name",
        ),
        (
            doc(r#"app_ids := http.send({"method": "get", "url": "http://x"})"#),
            "forbidden_builtin:http.send",
        ),
        (
            doc("app_ids := net.lookup_ip_addr(\"x\")"),
            "forbidden_builtin:net.lookup_ip_addr",
        ),
        (
            doc("restrict := net.cidr_contains(\"a\", \"b\")"),
            "forbidden_builtin:net.cidr_contains",
        ),
        (
            doc("restrict := net.cidr_intersects(\"a\", \"b\")"),
            "forbidden_builtin:net.cidr_intersects",
        ),
        (
            doc("restrict := net.cidr_expand(\"a\")"),
            "forbidden_builtin:net.cidr_expand",
        ),
        (
            doc("restrict := net.cidr_merge([])"),
            "forbidden_builtin:net.cidr_merge",
        ),
        (
            doc("restrict := opa.runtime()"),
            "forbidden_builtin:opa.runtime",
        ),
        (
            doc("restrict := [rand.intn(\"x\", 10)]"),
            "forbidden_builtin:rand.intn",
        ),
        (
            doc("restrict := [time.now_ns()]"),
            "forbidden_builtin:time.now_ns",
        ),
        (
            doc("restrict := numbers.range(1, 10)"),
            "forbidden_builtin:numbers.range",
        ),
        (
            "# caracal:data-document\npackage caracal.other\napp_ids := {}\n".into(),
            "must_use_package_caracal_authz",
        ),
        (
            "package caracal.authz\napp_ids := {}\n".into(),
            "must_be_data_document",
        ),
        (
            // A trailing comment is not the directive line.
            "package caracal.authz # caracal:data-document\napp_ids := {}\n".into(),
            "must_be_data_document",
        ),
        (
            doc("result := {\"decision\": \"allow\"}"),
            "data_document_must_not_define_result",
        ),
        (
            doc("app_ids := {}\nresult := {\"decision\": \"allow\"}"),
            "data_document_must_not_define_result",
        ),
        (doc(""), "data_document_must_define_data"),
        (doc("import rego.v1"), "data_document_must_define_data"),
        (doc("allow := true"), "data_document_rule_not_allowed:allow"),
        (
            doc("app_ids := {}\nhelper := 1"),
            "data_document_rule_not_allowed:helper",
        ),
        (
            doc("grants(x) := x"),
            "data_document_rule_not_allowed:grants",
        ),
        (doc("app_ids := {"), "unbalanced_delimiters"),
        (doc("app_ids := := 1"), "rego_parse_error"),
    ];
    for (content, expected) in cases {
        let got = description(&content);
        let shown: String = content.chars().take(120).collect();
        assert_eq!(got, expected, "{shown}");
    }
}

#[test]
fn forbidden_names_in_strings_and_comments_are_fine() {
    let content = doc(r#"# http.send and net.cidr_contains are only mentioned here
risk := [{"scope": "http.send", "tier": "net.cidr_merge"}]
approval_tiers := [{"tier": `opa.runtime`}]"#);
    assert_eq!(
        validate(&content).unwrap().rules,
        vec![DataKey::Risk, DataKey::ApprovalTiers]
    );
    // A data path that merely contains a builtin's namespace is not a call.
    let content = doc("app_ids := {k: v | some k, v in data.caracal.authz.net_ids}");
    assert!(validate(&content).is_ok());
}

#[test]
fn the_size_limit_counts_utf16_code_units() {
    // 262,144 units exactly is allowed; one more is not. "é" is one UTF-16 unit but two bytes.
    let body_len = 262_144 - HEAD.len() - "app_ids := {\"k\": \"\"}\n".len();
    let content = format!("{HEAD}app_ids := {{\"k\": \"{}\"}}\n", "é".repeat(body_len));
    assert_eq!(content.encode_utf16().count(), 262_144);
    assert!(validate(&content).is_ok(), "{}", description(&content));
    let content = format!(
        "{HEAD}app_ids := {{\"k\": \"{}\"}}\n",
        "é".repeat(body_len + 1)
    );
    assert_eq!(description(&content), "content_too_large");
}

#[test]
fn rego_documents_evaluate_to_their_data() {
    let content = doc(r#"import rego.v1

default restrict := {}

app_ids["files"] := "app-1"
app_ids["other"] := "app-2"

readers := ["read"]

grants["resource://api"] := {
    "application": "files",
    "roles": {"files.read": {"read"}, "files.write": {s | some s in ["read", "write"]}},
}

risk contains {"scope": "write", "tier": "high"}

approval_tiers := [{"tier": "high", "ttl_seconds": 900}] if { true }
"#);
    // `readers` is not a data rule.
    assert_eq!(
        description(&content),
        "data_document_rule_not_allowed:readers"
    );
    let content = content.replace("readers := [\"read\"]\n", "");
    let docs = evaluate_documents(&[DocumentSource {
        label: "v1",
        content: &content,
    }])
    .unwrap();
    let data = DataSet::merge(docs).unwrap();
    assert_eq!(
        data.to_json(),
        json!({
            "app_ids": {"files": "app-1", "other": "app-2"},
            "grants": {"resource://api": {
                "application": "files",
                "roles": {"files.read": ["read"], "files.write": ["read", "write"]}
            }},
            "restrict": {},
            "risk": [{"scope": "write", "tier": "high"}],
            "approval_tiers": [{"tier": "high", "ttl_seconds": 900}]
        })
    );
    let bundle = CompiledBundle::compile(&data).unwrap();
    let mut input = mint();
    input.principal.labels = Some(vec!["files.write".into()]);
    input.delegation_edge.as_mut().unwrap().scopes = vec!["read".into(), "write".into()];
    input.context.requested_scopes = vec!["write".into()];
    let eval = evaluate(&input, &bundle).unwrap();
    assert!(eval.is_allow() && eval.step_up_required());
}

#[test]
fn documents_of_one_bundle_may_refer_to_each_other() {
    let apps = doc(r#"app_ids := {"files": "app-1"}"#);
    let grants = doc(
        r#"grants := {r: {"application": k, "roles": {"files.read": ["read"]}} |
    some k, _ in data.caracal.authz.app_ids
    r := concat("", ["resource://", "api"])
}"#,
    );
    let bundle = CompiledBundle::from_sources(&[
        DocumentSource {
            label: "apps",
            content: &apps,
        },
        DocumentSource {
            label: "grants",
            content: &grants,
        },
    ])
    .unwrap();
    assert_eq!(outcome(&mint(), &bundle), "allow:caracal-files-mint");
}

#[test]
fn rego_and_json_documents_mix_in_one_bundle() {
    let apps = doc(r#"app_ids := {"files": "app-1"}"#);
    let grants = r#"{"grants": {"resource://api": {"application": "files", "roles": {"files.read": ["read"]}}}}"#;
    let bundle = CompiledBundle::from_sources(&[
        DocumentSource {
            label: "apps.rego",
            content: &apps,
        },
        DocumentSource {
            label: "grants.json",
            content: grants,
        },
    ])
    .unwrap();
    assert_eq!(outcome(&mint(), &bundle), "allow:caracal-files-mint");
    assert_eq!(
        validate_content(grants).unwrap().rules,
        vec![DataKey::Grants]
    );
}

#[test]
fn the_same_rule_in_two_documents_is_refused() {
    let a = doc(r#"app_ids := {"files": "app-1"}"#);
    // Refused even though this definition evaluates to nothing.
    let b = doc(r#"app_ids := {"x": "y"} if { false }"#);
    let err = evaluate_documents(&[
        DocumentSource {
            label: "a",
            content: &a,
        },
        DocumentSource {
            label: "b",
            content: &b,
        },
    ])
    .unwrap_err();
    match err {
        PolicyError::DuplicateDataKey { key, first, second } => {
            assert_eq!(
                (key, first.as_str(), second.as_str()),
                (DataKey::AppIds, "a", "b")
            );
        }
        other => panic!("{other:?}"),
    }
    // Incremental definitions inside one document are fine.
    let c = doc("app_ids[\"a\"] := \"1\"\napp_ids[\"b\"] := \"2\"");
    assert!(
        evaluate_documents(&[DocumentSource {
            label: "c",
            content: &c,
        }])
        .is_ok()
    );
}

#[test]
fn an_undefined_rule_contributes_no_data() {
    let content = doc("restrict := {\"all\"} if { input.never }");
    let docs = evaluate_documents(&[DocumentSource {
        label: "r",
        content: &content,
    }])
    .unwrap();
    assert_eq!(docs[0].get(DataKey::Restrict), None);
    let bundle = CompiledBundle::compile(&DataSet::merge(docs).unwrap()).unwrap();
    assert!(!bundle.stats().restricted);
}

#[test]
fn conflicting_values_are_an_evaluation_error() {
    // The reference answers 503 at decision time (conformance 36); here the bundle does not
    // load at all.
    let content = doc("restrict := 1 if { true }\nrestrict := 2 if { true }");
    let err = evaluate_documents(&[DocumentSource {
        label: "r",
        content: &content,
    }])
    .unwrap_err();
    assert!(matches!(err, PolicyError::RegoEval(_)), "{err}");
}

#[test]
fn validation_errors_keep_their_description_through_a_bundle_load() {
    let bad = doc("result := {}");
    let err = CompiledBundle::from_sources(&[DocumentSource {
        label: "bad",
        content: &bad,
    }])
    .unwrap_err();
    assert_eq!(err.description(), "data_document_must_not_define_result");
}

#[test]
fn a_runaway_document_is_stopped_by_the_time_limit() {
    let items: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    let list = format!("[{}]", items.join(", "));
    let content = doc(&format!(
        "restrict := count([1 | some a in {list}; some b in {list}; some c in {list}])"
    ));
    let start = std::time::Instant::now();
    let err = evaluate_documents(&[DocumentSource {
        label: "slow",
        content: &content,
    }])
    .unwrap_err();
    assert!(matches!(err, PolicyError::RegoEval(_)), "{err}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
