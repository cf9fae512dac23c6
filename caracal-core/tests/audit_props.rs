//! Properties of the `jsonb` normaliser, the content hash and the event parser.

// Test helpers may unwrap: a failure here is a failed test, not a production panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use caracal_core::audit::jsonb::normalize;
use caracal_core::audit::{AuditEvent, JsonText, content_hash};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Number texts in every JSON shape: signs, zeros, fractions, exponents.
fn number_text() -> impl Strategy<Value = String> {
    (
        prop::bool::ANY,
        prop_oneof![Just("0".to_owned()), "[1-9][0-9]{0,25}"],
        prop::option::of("[0-9]{1,12}"),
        prop::option::of((
            prop::sample::select(vec!["e", "E"]),
            prop::sample::select(vec!["", "+", "-"]),
            0u32..60,
        )),
    )
        .prop_map(|(neg, int, frac, exp)| {
            let mut s = String::new();
            if neg {
                s.push('-');
            }
            s.push_str(&int);
            if let Some(frac) = frac {
                s.push('.');
                s.push_str(&frac);
            }
            if let Some((e, sign, n)) = exp {
                s.push_str(&format!("{e}{sign}{n}"));
            }
            s
        })
}

/// A JSON tree kept as (key, text) members so key order, duplicates and exact number text
/// survive into the rendered document.
#[derive(Debug, Clone)]
enum Doc {
    Scalar(String),
    Array(Vec<Doc>),
    Object(Vec<(String, Doc)>),
}

fn string_literal() -> impl Strategy<Value = String> {
    // Any non-NUL text, escaped by serde_json; plus some hand-made escapes.
    prop_oneof![
        "[^\u{0}]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        prop::sample::select(vec![
            r#""\u00e9""#,
            r#""\ud83d\ude00""#,
            r#""\/""#,
            r#""\u001f""#,
            r#""a\tb""#,
        ])
        .prop_map(str::to_owned),
    ]
}

fn doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![
        number_text().prop_map(Doc::Scalar),
        string_literal().prop_map(Doc::Scalar),
        prop::sample::select(vec!["true", "false", "null"]).prop_map(|s| Doc::Scalar(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Doc::Array),
            prop::collection::vec(("[abAB_é]{0,3}", inner), 0..6).prop_map(Doc::Object),
        ]
    })
}

/// Render with the given whitespace, members in the given order.
fn render(doc: &Doc, ws: &str, out: &mut String) {
    match doc {
        Doc::Scalar(s) => out.push_str(s),
        Doc::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                render(item, ws, out);
            }
            out.push_str(ws);
            out.push(']');
        }
        Doc::Object(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(ws);
                out.push(':');
                out.push_str(ws);
                render(v, ws, out);
            }
            out.push_str(ws);
            out.push('}');
        }
    }
}

/// The same document with every object's members permuted, keeping duplicates' relative order
/// (jsonb keeps the *last* duplicate, so that order is meaningful).
fn permuted(doc: &Doc, seed: u64) -> Doc {
    match doc {
        Doc::Scalar(s) => Doc::Scalar(s.clone()),
        Doc::Array(items) => Doc::Array(items.iter().map(|d| permuted(d, seed)).collect()),
        Doc::Object(members) => {
            // Group by key in first-appearance order, then rotate the groups.
            let mut groups: Vec<(String, Vec<Doc>)> = Vec::new();
            for (k, v) in members {
                let v = permuted(v, seed);
                match groups.iter_mut().find(|(gk, _)| gk == k) {
                    Some((_, vs)) => vs.push(v),
                    None => groups.push((k.clone(), vec![v])),
                }
            }
            if !groups.is_empty() {
                let n = groups.len();
                groups.rotate_left((seed as usize) % n);
                if seed % 2 == 1 {
                    groups.reverse();
                }
            }
            Doc::Object(
                groups
                    .into_iter()
                    .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
                    .collect(),
            )
        }
    }
}

fn text(doc: &Doc, ws: &str) -> String {
    let mut out = String::new();
    render(doc, ws, &mut out);
    out
}

const WHITESPACE: [&str; 4] = ["", " ", "\n\t", "\r\n  "];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn normaliser_is_idempotent(d in doc()) {
        let once = normalize(&text(&d, "")).unwrap();
        prop_assert_eq!(normalize(&once).unwrap(), once.clone());
        // The output is plain JSON to any other reader too.
        let _: Value = serde_json::from_str(&once).unwrap();
    }

    #[test]
    fn normaliser_ignores_key_order_and_whitespace(d in doc(), seed in any::<u64>(), w in 0usize..4) {
        let base = normalize(&text(&d, "")).unwrap();
        let other = normalize(&text(&permuted(&d, seed), WHITESPACE[w])).unwrap();
        prop_assert_eq!(base, other);
    }

    #[test]
    fn normaliser_never_panics_on_strings(s in "\\PC{0,64}") {
        let _ = normalize(&s);
    }

    #[test]
    fn normaliser_never_panics_on_json_like_noise(s in "[\\[\\]{}\",:0-9eE.+\\-a-z\\\\u ]{0,64}") {
        if let Ok(out) = normalize(&s) {
            prop_assert_eq!(normalize(&out).unwrap(), out);
        }
    }

    #[test]
    fn normaliser_never_panics_on_bytes(b in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = caracal_core::audit::jsonb::normalize_bytes(&b);
    }

    #[test]
    fn numbers_keep_their_value_without_exponent_or_negative_zero(n in number_text()) {
        let out = normalize(&n).unwrap();
        // Both texts are exact decimals of the same value, so correctly rounded parses agree.
        let (a, b): (f64, f64) = (n.parse().unwrap(), out.parse().unwrap());
        prop_assert_eq!(a, b, "{} -> {}", n, out);
        prop_assert!(!out.contains(['e', 'E']));
        if out.starts_with('-') {
            prop_assert!(out.bytes().any(|c| (b'1'..=b'9').contains(&c)), "negative zero {}", out);
        }
    }

    #[test]
    fn content_hash_ignores_key_order_and_whitespace(
        d in doc(), m in doc(), seed in any::<u64>(), w in 0usize..4,
    ) {
        let base = AuditEvent::parse(include_bytes!("fixtures/interop/audit-event.allow.valid.json")).unwrap();
        let mut a = base.clone();
        a.diagnostics_json = Some(JsonText::parse(text(&d, "")).unwrap());
        a.metadata_json = Some(JsonText::parse(text(&m, "")).unwrap());
        let mut b = base;
        b.diagnostics_json = Some(JsonText::parse(text(&permuted(&d, seed), WHITESPACE[w])).unwrap());
        b.metadata_json = Some(JsonText::parse(text(&permuted(&m, seed / 3), WHITESPACE[w])).unwrap());
        prop_assert_eq!(content_hash(&a).unwrap(), content_hash(&b).unwrap());
        // And the stored form hashes the same as the wire form.
        prop_assert_eq!(content_hash(&a.clone().into_stored().unwrap()).unwrap(), content_hash(&a).unwrap());
    }

    #[test]
    fn parser_never_panics_on_random_field_values(
        valid_base in any::<bool>(),
        fields in prop::collection::vec((
            prop::sample::select(vec![
                "id", "zone_id", "event_type", "request_id", "decision", "policy_set_id",
                "manifest_sha", "evaluation_status", "determining_policies_json",
                "diagnostics_json", "metadata_json", "occurred_at", "other",
            ]),
            prop_oneof![
                any::<String>().prop_map(Value::String),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                Just(Value::Null),
                Just(Value::Bool(true)),
                "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})"
                    .prop_map(Value::String),
                Just(Value::String("\u{0}".into())),
                Just(serde_json::json!({"a": [1.50, "\u{0}x", {"\u{0}": null}]})),
            ],
        ), 0..14),
    ) {
        // Half the cases start from a valid event so the random values reach the later rules.
        let mut object = Map::new();
        if valid_base {
            object.insert("id".into(), "a".into());
            object.insert("zone_id".into(), "z".into());
            object.insert("occurred_at".into(), "2026-05-21T12:00:00.123456789Z".into());
        }
        object.extend(fields.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let data = serde_json::to_vec(&Value::Object(object)).unwrap();
        if let Ok(event) = AuditEvent::parse(&data) {
            prop_assert!(!event.id.is_empty() && !event.zone_id.is_empty());
            prop_assert!(!event.id.contains('\0'));
            if let Ok(stored) = event.clone().into_stored() {
                prop_assert_eq!(content_hash(&stored).unwrap(), content_hash(&event).unwrap());
                let wire = serde_json::to_vec(&stored).unwrap();
                prop_assert_eq!(AuditEvent::parse(&wire).unwrap(), stored);
            }
        }
    }

    #[test]
    fn parser_never_panics_on_bytes(b in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = AuditEvent::parse(&b);
    }
}
