//! Fuzz (proptest, bounded) of the token endpoint's form reader (`exchange::form`): any
//! method, query, content type and body is answered with a `TokenForm` or one of the framing
//! errors, never a panic; a well-encoded body round-trips its values exactly.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use caracal_core::exchange::form::{MAX_BODY_BYTES, TokenForm, read_form};
use proptest::prelude::*;

const FORM: &str = "application/x-www-form-urlencoded";

/// The statuses and codes a framing failure may have (reference `sts.md` §2.1 step 2).
fn assert_framing_error(e: &caracal_core::api::ApiError) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(
            (e.status, e.body.error.as_str()),
            (400 | 405 | 415, "invalid_token") | (413, "payload_too_large")
        ),
        "unexpected error {} {}",
        e.status,
        e.body.error
    );
    Ok(())
}

/// Bytes that look like a form: names, `=`, `&`, `+`, `%` escapes good and bad, `;`,
/// non-ASCII and raw non-UTF-8 bytes.
fn formish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => "[a-z_]{1,12}".prop_map(String::into_bytes),
        2 => Just(b"=".to_vec()),
        2 => Just(b"&".to_vec()),
        1 => Just(b"+".to_vec()),
        1 => "%[0-9A-Fa-f]{2}".prop_map(String::into_bytes),
        1 => "%[0-9A-Za-z%]{0,2}".prop_map(String::into_bytes),
        1 => Just(b";".to_vec()),
        1 => prop::sample::select(vec![
            "resource", "ttl_seconds", "actor_token", "client_assertion", "grant_type",
            "subject_token", "scope", "zone_id",
        ]).prop_map(|s| s.as_bytes().to_vec()),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..4),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// Percent-encode every byte outside the unreserved set (as a strict client would).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_requests_get_a_form_or_a_framing_error(
        method in prop_oneof![Just("POST".to_owned()), "[A-Za-z]{0,7}"],
        query in prop::option::of(prop_oneof![Just(String::new()), ".{0,20}"]),
        content_type in prop::option::of(prop_oneof![
            Just(FORM.to_owned()),
            Just(format!("{FORM}; charset=UTF-8")),
            Just("APPLICATION/X-WWW-FORM-URLENCODED".to_owned()),
            ".{0,40}",
        ]),
        body in prop_oneof![formish(), prop::collection::vec(any::<u8>(), 0..256)],
    ) {
        match TokenForm::parse(&method, query.as_deref(), content_type.as_deref(), &body) {
            Ok(form) => {
                prop_assert_eq!(method.as_str(), "POST");
                prop_assert!(query.as_deref().is_none_or(str::is_empty));
                // Canonicalisation of what was accepted is itself total.
                let _ = form.canonical_resources();
                let _ = form.check_grant();
                let _ = form.requested_scopes();
            }
            Err(e) => assert_framing_error(&e)?,
        }
    }

    #[test]
    fn form_bodies_never_panic_and_refused_fields_never_pass(body in formish()) {
        match TokenForm::parse("POST", None, Some(FORM), &body) {
            Ok(_) => {
                // Accepted only if the generic reader accepts it too, and no refused field
                // (actor_token, client_assertion*) survived decoding.
                let fields = read_form("POST", None, Some(FORM), &body, &["resource"]).unwrap();
                for refused in ["actor_token", "client_assertion", "client_assertion_type"] {
                    prop_assert!(!fields.contains(refused));
                }
            }
            Err(e) => assert_framing_error(&e)?,
        }
    }

    #[test]
    fn well_encoded_bodies_round_trip(
        scope in ".{0,30}",
        zone in ".{0,30}",
        resources in prop::collection::vec(".{0,20}", 0..4),
        ttl in prop::option::of(any::<i64>()),
    ) {
        let mut pairs = vec![
            format!("grant_type={}", encode("urn:ietf:params:oauth:grant-type:token-exchange")),
            format!("scope={}", encode(&scope)),
            format!("zone_id={}", encode(&zone)),
        ];
        pairs.extend(resources.iter().map(|r| format!("resource={}", encode(r))));
        if let Some(t) = ttl {
            pairs.push(format!("ttl_seconds={t}"));
        }
        let body = pairs.join("&");
        let form = TokenForm::parse("POST", None, Some(FORM), body.as_bytes()).unwrap();
        prop_assert_eq!(form.scope, scope);
        prop_assert_eq!(form.zone_id, zone);
        prop_assert_eq!(form.resources, resources);
        prop_assert_eq!(form.ttl_seconds, ttl);
        // A repeated non-repeatable field is refused, never silently merged.
        let twice = format!("{body}&scope=a&scope=b");
        prop_assert!(TokenForm::parse("POST", None, Some(FORM), twice.as_bytes()).is_err());
    }

    #[test]
    fn oversized_bodies_are_413(extra in 1usize..64) {
        let body = vec![b'a'; MAX_BODY_BYTES + extra];
        let e = TokenForm::parse("POST", None, Some(FORM), &body).unwrap_err();
        prop_assert_eq!(e.status, 413);
    }
}
