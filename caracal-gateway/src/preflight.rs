//! The local pre-flight checks (reference `gateway.md` §1.2 checks 2–10, §2.3): pure
//! functions of the request head and the clock, no I/O.
//!
//! These run on the *unverified* payload of the bearer. Nothing here grants anything: the
//! peeked claims only route the JWKS lookup and allow cheap early refusals. The signature
//! (check 11), the single use (12) and the revocation anchors (13) are checked by the caller
//! afterwards, in that order.

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Denial, Deny};

/// The largest bearer token accepted, in bytes (check 3).
pub const MAX_BEARER_BYTES: usize = 4096;
/// A mandate must have at least this many seconds left (check 5).
pub const PREFLIGHT_WINDOW_SECONDS: i64 = 35;
/// The routing header naming the resource.
pub const RESOURCE_HEADER: &str = "x-caracal-resource";
/// The header a client must never send (identity comes from the bearer).
pub const CLIENT_ID_HEADER: &str = "x-caracal-client-id";
/// The longest zone or client id accepted (checks 8 and 9).
const MAX_ID_LEN: usize = 128;
/// How many rounds of percent-decoding [`is_path_traversal`] applies at most; a path still
/// changing after that is refused.
const MAX_DECODE_ROUNDS: usize = 8;

/// Claims read from the bearer *before* its signature is checked (so nothing here is
/// trusted beyond routing). Every field is optional: the checks decide what is required.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct PeekedClaims {
    /// `exp` (unix seconds).
    #[serde(default)]
    pub exp: Option<serde_json::Value>,
    /// `zone_id`.
    #[serde(default)]
    pub zone_id: Option<String>,
    /// `client_id`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `jti`.
    #[serde(default)]
    pub jti: Option<String>,
    /// `use`.
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    /// `sub_type` (`user` / `application`), for the audit's `subject_kind`.
    #[serde(default)]
    pub sub_type: Option<String>,
    /// `sid`.
    #[serde(default)]
    pub sid: Option<String>,
    /// `root_sid`.
    #[serde(default)]
    pub root_sid: Option<String>,
    /// `agent_session_id`.
    #[serde(default)]
    pub agent_session_id: Option<String>,
    /// `delegation_edge_id`.
    #[serde(default)]
    pub delegation_edge_id: Option<String>,
}

/// What the local checks established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted<'a> {
    /// The bearer token (trimmed).
    pub token: &'a str,
    /// Its unverified claims.
    pub claims: PeekedClaims,
    /// `exp` as an integer.
    pub exp: i64,
    /// The trimmed `X-Caracal-Resource`.
    pub resource: &'a str,
    /// The validated `zone_id`.
    pub zone_id: String,
    /// The validated `client_id`.
    pub client_id: String,
}

/// The parts of a request the local checks read.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHead<'a> {
    /// `Authorization`, if present and ASCII.
    pub authorization: Option<&'a str>,
    /// Whether an `X-Caracal-Client-ID` header with a non-empty value is present.
    pub has_client_id: bool,
    /// `X-Caracal-Resource`, if present.
    pub resource: Option<&'a str>,
    /// The request path as received (still percent-encoded).
    pub path: &'a str,
}

/// Check 2: `Bearer ` (case-insensitive, 7 chars with one space), header longer than 7 chars,
/// the token is the rest trimmed and non-empty.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let h = authorization?;
    if h.len() <= 7 || !h.is_char_boundary(7) {
        return None;
    }
    let (scheme, rest) = h.split_at(7);
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// Check 4: three dot-separated parts; the payload is unpadded base64url JSON.
pub fn peek(token: &str) -> Option<PeekedClaims> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `exp` as a non-zero integer (a JSON integer, or a float with no fraction).
fn exp_of(claims: &PeekedClaims) -> Option<i64> {
    let v = claims.exp.as_ref()?;
    let exp = v
        .as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))?;
    (exp != 0).then_some(exp)
}

/// Checks 8/9: `^[A-Za-z0-9._:-]{1,128}$`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Non-UTF-8 after decoding cannot name a segment we could judge: refuse.
    String::from_utf8(out).ok()
}

/// §2.3: percent-decode until stable (a decode error is traversal), a backslash at any stage
/// is traversal, then any `.` or `..` segment is traversal.
pub fn is_path_traversal(path: &str) -> bool {
    let mut current = path.to_owned();
    for _ in 0..MAX_DECODE_ROUNDS {
        if current.contains('\\') {
            return true;
        }
        let Some(next) = percent_decode(&current) else {
            return true;
        };
        if next == current {
            return current.split('/').any(|seg| seg == "." || seg == "..");
        }
        current = next;
    }
    true
}

/// The decoded request path (one round of percent-decoding, as the reference's `URL.Path`),
/// used for the STS `request_path` and the upstream path join. `None` when it does not decode.
pub fn decoded_path(path: &str) -> Option<String> {
    percent_decode(path)
}

/// Checks 2–10 in the reference order, at `now` (unix seconds).
pub fn check<'a>(head: &RequestHead<'a>, now: i64) -> Result<Admitted<'a>, Deny> {
    // 2
    let token = bearer(head.authorization).ok_or_else(|| {
        Deny::new(
            401,
            "invalid_token",
            "missing bearer token",
            Denial::MissingAuth,
        )
    })?;
    // 3
    if token.len() > MAX_BEARER_BYTES {
        return Err(Deny::new(
            401,
            "invalid_token",
            "bearer token too large",
            Denial::BadBearer,
        ));
    }
    // 4
    let malformed = || {
        Deny::new(
            401,
            "invalid_token",
            "malformed bearer token",
            Denial::BadBearer,
        )
    };
    let claims = peek(token).ok_or_else(malformed)?;
    let exp = exp_of(&claims).ok_or_else(malformed)?;
    // 5
    if exp.saturating_sub(now) < PREFLIGHT_WINDOW_SECONDS {
        return Err(Deny::new(
            401,
            "credential_expired_not_renewable",
            "credential expiring within pre-flight window",
            Denial::Expiring,
        ));
    }
    // 6
    if head.has_client_id {
        return Err(Deny::new(
            400,
            "invalid_token",
            "client identity derives from the bearer token",
            Denial::BadRouting,
        ));
    }
    // 7
    let resource = head
        .resource
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            Deny::new(
                400,
                "invalid_token",
                "missing routing headers",
                Denial::BadRouting,
            )
        })?;
    // 8
    let zone_id = claims
        .zone_id
        .clone()
        .filter(|z| valid_id(z))
        .ok_or_else(|| {
            Deny::new(
                401,
                "invalid_token",
                "missing token zone",
                Denial::BadRouting,
            )
        })?;
    // 9
    let client_id = claims
        .client_id
        .clone()
        .filter(|c| valid_id(c))
        .ok_or_else(|| {
            Deny::new(
                401,
                "invalid_token",
                "missing token client",
                Denial::BadRouting,
            )
        })?;
    // 10
    if is_path_traversal(head.path) {
        return Err(Deny::new(
            400,
            "invalid_token",
            "path traversal not permitted",
            Denial::PathTraversal,
        ));
    }
    Ok(Admitted {
        token,
        claims,
        exp,
        resource,
        zone_id,
        client_id,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn token(payload: &serde_json::Value) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b.encode(br#"{"alg":"ES256","kid":"k"}"#),
            b.encode(payload.to_string())
        )
    }

    fn good() -> String {
        token(
            &serde_json::json!({"exp": NOW + 600, "zone_id": "z-1", "client_id": "app:1", "jti": "j"}),
        )
    }

    fn head<'a>(auth: Option<&'a str>, path: &'a str) -> RequestHead<'a> {
        RequestHead {
            authorization: auth,
            has_client_id: false,
            resource: Some("resource://r"),
            path,
        }
    }

    fn denied(head: &RequestHead<'_>) -> (u16, String, String) {
        let d = check(head, NOW).unwrap_err();
        (d.status, d.code.to_string(), d.description.to_string())
    }

    #[test]
    fn bearer_shape() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("BEARER  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(Some("Basic x")), None);
        assert_eq!(bearer(Some("Bearer    ")), None);
        assert_eq!(bearer(None), None);
        assert_eq!(bearer(Some("Beareré x")), None);
    }

    #[test]
    fn checks_in_order_with_codes() {
        let t = good();
        let auth = format!("Bearer {t}");
        assert!(check(&head(Some(&auth), "/a"), NOW).is_ok());
        assert_eq!(
            denied(&head(None, "/a")),
            (401, "invalid_token".into(), "missing bearer token".into())
        );
        let big = format!("Bearer {}", "a".repeat(4097));
        assert_eq!(denied(&head(Some(&big), "/a")).2, "bearer token too large");
        let exact = format!("Bearer {}", "a".repeat(4096));
        assert_eq!(
            denied(&head(Some(&exact), "/a")).2,
            "malformed bearer token"
        );
        assert_eq!(
            denied(&head(Some("Bearer abc.def"), "/a")).2,
            "malformed bearer token"
        );
        let no_exp = format!("Bearer {}", token(&serde_json::json!({"zone_id": "z"})));
        assert_eq!(
            denied(&head(Some(&no_exp), "/a")).2,
            "malformed bearer token"
        );
        let zero = format!("Bearer {}", token(&serde_json::json!({"exp": 0})));
        assert_eq!(denied(&head(Some(&zero), "/a")).2, "malformed bearer token");
        let soon = format!(
            "Bearer {}",
            token(&serde_json::json!({"exp": NOW + 34, "zone_id": "z", "client_id": "c"}))
        );
        assert_eq!(
            denied(&head(Some(&soon), "/a")).1,
            "credential_expired_not_renewable"
        );
        let ok_soon = format!(
            "Bearer {}",
            token(&serde_json::json!({"exp": NOW + 36, "zone_id": "z", "client_id": "c"}))
        );
        assert!(check(&head(Some(&ok_soon), "/a"), NOW).is_ok());
        // 6 before 7.
        let mut h = head(Some(&auth), "/a");
        h.has_client_id = true;
        h.resource = None;
        assert_eq!(
            denied(&h),
            (
                400,
                "invalid_token".into(),
                "client identity derives from the bearer token".into()
            )
        );
        let mut h = head(Some(&auth), "/a");
        h.resource = Some("   ");
        assert_eq!(
            denied(&h),
            (
                400,
                "invalid_token".into(),
                "missing routing headers".into()
            )
        );
        for zone in [serde_json::json!("a b"), serde_json::json!("z".repeat(129))] {
            let t = format!(
                "Bearer {}",
                token(&serde_json::json!({"exp": NOW + 600, "zone_id": zone, "client_id": "c"}))
            );
            assert_eq!(denied(&head(Some(&t), "/a")).2, "missing token zone");
        }
        let t = format!(
            "Bearer {}",
            token(&serde_json::json!({"exp": NOW + 600, "zone_id": "z"}))
        );
        assert_eq!(denied(&head(Some(&t), "/a")).2, "missing token client");
        assert_eq!(
            denied(&head(Some(&auth), "/x/%2e%2e/y")),
            (
                400,
                "invalid_token".into(),
                "path traversal not permitted".into()
            )
        );
    }

    /// §2.3 vectors.
    #[test]
    fn path_traversal_vectors() {
        for p in [
            "/..",
            "/../etc",
            "/a/../b",
            "/./x",
            "/foo/../../bar",
            "/a/b/..",
            "/a\\..\\secret",
            "/a/%5c..%5csecret",
            "/a/%255c..%255csecret",
            "/x/%2e%2e/y",
            "/x/%252e%252e/y",
            "/a/%zz",
        ] {
            assert!(is_path_traversal(p), "{p} must be traversal");
        }
        for p in ["/", "/a/b/c", "/api/v1/resource", "/.env", "/foo..bar", ""] {
            assert!(!is_path_traversal(p), "{p} must be clean");
        }
    }

    #[test]
    fn ids() {
        assert!(valid_id("0190f2a0-0000-7000-8000-00000000000a"));
        assert!(valid_id("a.b_c:d-e"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"a".repeat(129)));
    }
}
