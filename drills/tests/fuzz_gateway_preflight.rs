//! Fuzz (proptest, bounded) of the Gateway's local pre-flight checks
//! (`caracal_gateway::preflight`): the path-traversal check on arbitrary and adversarially
//! encoded paths, and the whole check sequence on arbitrary request heads. Every input is
//! answered with an admission or a typed `Deny`, never a panic, and a path the check admits
//! has no `.`/`..` segment and no backslash after decoding, however many times it is decoded.
//!
//! (It lives in the drills crate because the Gateway crate has no proptest dependency.)

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caracal_gateway::preflight::{
    MAX_BEARER_BYTES, RequestHead, bearer, check, decoded_path, is_path_traversal, peek, valid_id,
};
use proptest::prelude::*;

const NOW: i64 = 1_790_000_000;

/// Percent-encode every byte of `s`, `rounds` times (`.` → `%2E` → `%252E` ...).
fn encode_rounds(s: &str, rounds: usize) -> String {
    let mut out = s.to_owned();
    for _ in 0..rounds {
        out = out.bytes().map(|b| format!("%{b:02X}")).collect();
    }
    out
}

/// Path segments: ordinary names, dot segments, backslashes, and escapes good and bad.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9_~-]{1,8}",
        2 => Just(".".to_owned()),
        2 => Just("..".to_owned()),
        1 => Just("\\".to_owned()),
        1 => Just("...".to_owned()),
        1 => "%[0-9A-Fa-f]{2}",
        1 => "%[0-9A-Za-z]{0,2}",
        1 => ".{0,6}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (prop::collection::vec((segment(), 0usize..3, any::<bool>()), 0..8)).prop_map(|segs| {
        let mut p = String::new();
        for (seg, rounds, encode) in segs {
            p.push('/');
            if encode {
                p.push_str(&encode_rounds(&seg, rounds));
            } else {
                p.push_str(&seg);
            }
        }
        p
    })
}

/// Decode until stable (bounded), as a client-side oracle.
fn fully_decoded(p: &str) -> Option<String> {
    let mut cur = p.to_owned();
    for _ in 0..16 {
        let next = decoded_path(&cur)?;
        if next == cur {
            return Some(cur);
        }
        cur = next;
    }
    None
}

fn token(payload: &serde_json::Value) -> String {
    format!(
        "{}.{}.sig",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k"}"#),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn admitted_paths_never_traverse(p in prop_oneof![path(), ".{0,40}"]) {
        if !is_path_traversal(&p) {
            let decoded = fully_decoded(&p);
            prop_assert!(decoded.is_some(), "admitted a path that does not decode: {p:?}");
            let decoded = decoded.unwrap();
            prop_assert!(!decoded.contains('\\'), "{p:?}");
            prop_assert!(!decoded.split('/').any(|s| s == "." || s == ".."), "{p:?} -> {decoded:?}");
        }
    }

    #[test]
    fn encoded_dot_segments_are_always_refused(
        prefix in "(/[a-z]{1,5}){0,3}",
        dots in prop::sample::select(vec![".", ".."]),
        rounds in 0usize..6,
        suffix in "(/[a-z]{1,5}){0,3}",
    ) {
        let p = format!("{prefix}/{}{suffix}", encode_rounds(dots, rounds));
        prop_assert!(is_path_traversal(&p), "{p:?}");
        let p = format!("{prefix}/{}{suffix}", encode_rounds("\\", rounds));
        prop_assert!(is_path_traversal(&p), "{p:?}");
    }

    #[test]
    fn arbitrary_heads_get_admission_or_a_typed_denial(
        auth in prop::option::of(prop_oneof![
            ".{0,40}",
            "[Bb][Ee][Aa][Rr][Ee][Rr] .{0,60}",
            Just(format!("Bearer {}", "a".repeat(MAX_BEARER_BYTES + 1))),
        ]),
        claims in prop::option::of((
            prop::option::of(prop_oneof![
                (NOW - 100..NOW + 10_000).prop_map(serde_json::Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
                ".{0,6}".prop_map(serde_json::Value::from),
            ]),
            prop::option::of(prop_oneof!["[A-Za-z0-9._:-]{1,20}", ".{0,140}"]),
            prop::option::of(prop_oneof!["[A-Za-z0-9._:-]{1,20}", ".{0,140}"]),
        )),
        has_client_id in any::<bool>(),
        resource in prop::option::of(".{0,20}"),
        p in path(),
    ) {
        let auth = match claims {
            Some((exp, zone, client)) => {
                let mut o = serde_json::Map::new();
                if let Some(exp) = exp { o.insert("exp".into(), exp); }
                if let Some(z) = zone { o.insert("zone_id".into(), z.into()); }
                if let Some(c) = client { o.insert("client_id".into(), c.into()); }
                Some(format!("Bearer {}", token(&serde_json::Value::Object(o))))
            }
            None => auth,
        };
        let head = RequestHead {
            authorization: auth.as_deref(),
            has_client_id,
            resource: resource.as_deref(),
            path: &p,
        };
        match check(&head, NOW) {
            Ok(admitted) => {
                // Every admission satisfies every check.
                prop_assert!(bearer(auth.as_deref()).is_some());
                prop_assert!(admitted.token.len() <= MAX_BEARER_BYTES);
                prop_assert!(peek(admitted.token).is_some());
                prop_assert!(admitted.exp - NOW >= 35);
                prop_assert!(!has_client_id);
                prop_assert!(!admitted.resource.is_empty());
                prop_assert!(valid_id(&admitted.zone_id) && valid_id(&admitted.client_id));
                prop_assert!(!is_path_traversal(&p));
            }
            Err(deny) => {
                prop_assert!(matches!(deny.status, 400 | 401), "status {}", deny.status);
                prop_assert!(!deny.code.is_empty() && !deny.description.is_empty());
            }
        }
    }
}
