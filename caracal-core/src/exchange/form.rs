//! The strict form-body reader and the token request fields (reference `sts.md` §1.1, §2.1
//! steps 2–4 and 6–8).
//!
//! Every STS form endpoint reads its body through [`read_form`]: POST only, no query string,
//! `application/x-www-form-urlencoded` only, at most [`MAX_BODY_BYTES`], strict decoding, and
//! no repeated field unless the endpoint names it. [`TokenForm`] then lifts the token request's
//! fields out of it. Everything here is pure: no I/O, no clock.
//!
//! Every framing failure is `invalid_token` (the reference uses that code for every 400 parse
//! error, and for 405 and 415), except an oversized body, which is 413 `payload_too_large`.
//!
//! ## Decoding
//!
//! The body is decoded with the rules of Go's `url.ParseQuery`, which the reference uses:
//! split on `&`, skip empty pieces, refuse any piece holding `;`, split each piece at its first
//! `=`, turn `+` into a space, and decode `%XX` escapes, refusing a `%` not followed by two hex
//! digits. A decoded name or value that is not UTF-8 is refused as well (Go keeps raw bytes;
//! every field here is text, so refusing is the fail-closed reading).
//!
//! The `form_urlencoded` crate (the `url` crate's parser) was considered and not used: it is
//! deliberately lenient (`%zz` passes through, `;` is accepted, invalid UTF-8 silently becomes
//! U+FFFD), so it cannot give the reference's 400 for a malformed body without a second,
//! strict pass over the same bytes — which would then be the real parser.

use std::collections::HashSet;

use super::ExchangeResult;
use crate::api::ApiError;

/// The largest request body any STS form endpoint accepts, in bytes (64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The only `grant_type` the token endpoint accepts (RFC 8693).
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// `subject_token_type` of an STS-issued mandate presented as the subject.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// `subject_token_type` of an external OIDC id_token (the federation branch, §7.4).
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// The one media type the form endpoints accept (compared case-insensitively, parameters
/// ignored).
const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";

/// The only repeatable field of the token request.
const RESOURCE_FIELD: &str = "resource";

/// RFC 8693 / RFC 7523 fields whose mere presence refuses the request: the acting app is the
/// authenticated client, never a token it presents.
const REFUSED_FIELDS: [&str; 3] = ["actor_token", "client_assertion", "client_assertion_type"];

/// A 400 `invalid_token` with `description` (the framing errors' shape).
fn bad_request(description: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_token").with_description(description)
}

/// Decoded form fields in body order.
///
/// Built only by [`read_form`], so a name appears more than once only if the endpoint allowed
/// it to repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormFields {
    pairs: Vec<(String, String)>,
}

impl FormFields {
    /// The first value of `name`, if the field was sent (an empty value is `Some("")`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in body order (empty if the field was not sent).
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether the field was sent at all, even with an empty value.
    pub fn contains(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    /// The value of `name`, or `""` when absent (the reference's reading of a missing field).
    fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_owned()
    }
}

/// Read a form body strictly (§2.1 step 2). Shared by every STS form endpoint.
///
/// In order: `method` must be `POST` (405); `query` (the raw query string) must be absent or
/// empty (400 "query parameters are not allowed"); the media type of `content_type` (parameters
/// ignored, case-insensitive) must be `application/x-www-form-urlencoded` (415); `body` must be
/// at most [`MAX_BODY_BYTES`] (413 `payload_too_large`); the body must decode (400 "malformed
/// request body"); and no field outside `repeatable` may appear twice (400 `"duplicate form
/// field: <name>"`, naming the first repeated field in body order).
pub fn read_form(
    method: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    repeatable: &[&str],
) -> ExchangeResult<FormFields> {
    // HTTP methods are case-sensitive; the reference's mux matches `POST` exactly.
    if method != "POST" {
        return Err(ApiError::new(405, "invalid_token").with_description("method not allowed"));
    }
    if query.is_some_and(|q| !q.is_empty()) {
        return Err(bad_request("query parameters are not allowed"));
    }
    if !is_form_media_type(content_type) {
        return Err(ApiError::new(415, "invalid_token")
            .with_description("content type must be application/x-www-form-urlencoded"));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(
            ApiError::new(413, "payload_too_large").with_description("request body too large")
        );
    }
    let pairs = decode_form(body).ok_or_else(|| bad_request("malformed request body"))?;
    let mut seen: HashSet<&str> = HashSet::with_capacity(pairs.len());
    for (name, _) in &pairs {
        if !seen.insert(name.as_str()) && !repeatable.contains(&name.as_str()) {
            return Err(bad_request(format!("duplicate form field: {name}")));
        }
    }
    Ok(FormFields { pairs })
}

/// Whether the `Content-Type` header names the form media type. Parameters (`; charset=…`)
/// are ignored; a missing header is not the form type.
fn is_form_media_type(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let media = ct.split(';').next().unwrap_or_default().trim();
        media.eq_ignore_ascii_case(FORM_MEDIA_TYPE)
    })
}

/// Decode an urlencoded body with Go's `url.ParseQuery` rules (see the module docs).
/// `None` = malformed.
fn decode_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for piece in body.split(|b| *b == b'&') {
        if piece.contains(&b';') {
            return None;
        }
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match piece.iter().position(|b| *b == b'=') {
            Some(i) => (piece.get(..i)?, piece.get(i + 1..)?),
            None => (piece, &[][..]),
        };
        pairs.push((unescape(name)?, unescape(value)?));
    }
    Some(pairs)
}

/// Decode one name or value: `+` is a space, `%XX` a byte; a bad escape or a non-UTF-8 result
/// is `None`.
fn unescape(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'%' => {
                let hi = hex_digit(*bytes.next()?)?;
                let lo = hex_digit(*bytes.next()?)?;
                out.push((hi << 4) | lo);
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

/// The value of one ASCII hex digit, either case.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The token request (`POST /oauth/2/token`) after §2.1 steps 3–4.
///
/// Fields are as sent; an absent field is `""` (the reference does not distinguish absent from
/// empty for these, except `ttl_seconds`, where empty also means absent). `request_method`,
/// `request_path` and `gateway_request_id` only mean anything on a Gateway-authenticated
/// exchange; the caller decides that.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenForm {
    /// `grant_type`; checked by [`TokenForm::check_grant`].
    pub grant_type: String,
    /// `subject_token`: a Caracal mandate or an external id_token. A credential: never log it.
    pub subject_token: String,
    /// `subject_token_type`; checked by [`TokenForm::check_grant`].
    pub subject_token_type: String,
    /// Every `resource` value, untrimmed and in body order; see
    /// [`TokenForm::canonical_resources`].
    pub resources: Vec<String>,
    /// `scope`, space-delimited; see [`TokenForm::requested_scopes`].
    pub scope: String,
    /// `zone_id`.
    pub zone_id: String,
    /// `application_id` (the authenticating client).
    pub application_id: String,
    /// `client_secret`. A credential: never log it.
    pub client_secret: String,
    /// `approval_id` of a human-approval hold being retried.
    pub approval_id: String,
    /// `session_id`: the authority record (historical wire name).
    pub session_id: String,
    /// `agent_session_id`: the governed Session.
    pub agent_session_id: String,
    /// `delegation_edge_id`.
    pub delegation_edge_id: String,
    /// `request_method` (trusted policy input only on a Gateway exchange).
    pub request_method: String,
    /// `request_path` (trusted policy input only on a Gateway exchange).
    pub request_path: String,
    /// `ttl_seconds` when sent non-empty; it parsed as an integer, possibly negative or zero
    /// (range checks come later in the exchange).
    pub ttl_seconds: Option<i64>,
    /// `gateway_request_id`: must equal the effective request id on a Gateway exchange.
    pub gateway_request_id: String,
}

impl TokenForm {
    /// Read and lift the token request: [`read_form`] with only `resource` repeatable, then
    /// §2.1 step 3 (the presence of `actor_token`, `client_assertion` or
    /// `client_assertion_type`, even empty, is 400 `"<field> is not supported"`) and step 4
    /// (`ttl_seconds` sent non-empty and not an integer is 400 "invalid ttl_seconds").
    pub fn parse(
        method: &str,
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> ExchangeResult<TokenForm> {
        let form = read_form(method, query, content_type, body, &[RESOURCE_FIELD])?;
        if let Some(field) = REFUSED_FIELDS.iter().find(|f| form.contains(f)) {
            return Err(bad_request(format!(
                "{field} is not supported; the authenticated client is the actor"
            )));
        }
        let ttl_seconds = match form.get("ttl_seconds") {
            None | Some("") => None,
            // Go's strconv.Atoi: optional sign, decimal digits, no spaces.
            Some(raw) => Some(
                raw.parse::<i64>()
                    .map_err(|_| bad_request("invalid ttl_seconds"))?,
            ),
        };
        Ok(TokenForm {
            grant_type: form.text("grant_type"),
            subject_token: form.text("subject_token"),
            subject_token_type: form.text("subject_token_type"),
            resources: form
                .get_all(RESOURCE_FIELD)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            scope: form.text("scope"),
            zone_id: form.text("zone_id"),
            application_id: form.text("application_id"),
            client_secret: form.text("client_secret"),
            approval_id: form.text("approval_id"),
            session_id: form.text("session_id"),
            agent_session_id: form.text("agent_session_id"),
            delegation_edge_id: form.text("delegation_edge_id"),
            request_method: form.text("request_method"),
            request_path: form.text("request_path"),
            ttl_seconds,
            gateway_request_id: form.text("gateway_request_id"),
        })
    }

    /// The requested resources in canonical form (§2.1 step 6): each trimmed of surrounding
    /// whitespace, an empty one refused (400 "resource must not be empty"), exact duplicates
    /// removed, sorted by bytes. No resource at all is allowed here; the exchange decides
    /// whether its class needs one.
    pub fn canonical_resources(&self) -> ExchangeResult<Vec<String>> {
        let mut out = Vec::with_capacity(self.resources.len());
        for raw in &self.resources {
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                return Err(bad_request("resource must not be empty"));
            }
            out.push(trimmed.to_owned());
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// §2.1 steps 7–8: `grant_type` must be [`TOKEN_EXCHANGE_GRANT`] (400 "unsupported
    /// grant_type"); `subject_token_type` must be empty, [`ACCESS_TOKEN_TYPE`] or
    /// [`ID_TOKEN_TYPE`] (400 "unsupported subject_token_type"); `subject_token` and
    /// `subject_token_type` must be both present or both absent (400).
    pub fn check_grant(&self) -> ExchangeResult<()> {
        if self.grant_type != TOKEN_EXCHANGE_GRANT {
            return Err(bad_request("unsupported grant_type"));
        }
        if !matches!(
            self.subject_token_type.as_str(),
            "" | ACCESS_TOKEN_TYPE | ID_TOKEN_TYPE
        ) {
            return Err(bad_request("unsupported subject_token_type"));
        }
        if self.subject_token.is_empty() != self.subject_token_type.is_empty() {
            return Err(bad_request(
                "subject_token and subject_token_type must be provided together",
            ));
        }
        Ok(())
    }

    /// The requested scopes: `scope` split on spaces, empty pieces dropped, first-seen order
    /// kept, later duplicates removed.
    pub fn requested_scopes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.scope.split(' ').filter(|s| !s.is_empty()) {
            if !out.iter().any(|seen| seen == s) {
                out.push(s.to_owned());
            }
        }
        out
    }

    /// Whether this is the subject federation branch (an external id_token as the subject,
    /// §7.4).
    pub fn is_federation(&self) -> bool {
        self.subject_token_type == ID_TOKEN_TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn read(body: &str) -> ExchangeResult<FormFields> {
        read_form("POST", None, FORM, body.as_bytes(), &["resource"])
    }

    fn token(body: &str) -> ExchangeResult<TokenForm> {
        TokenForm::parse("POST", None, FORM, body.as_bytes())
    }

    fn assert_err(r: ExchangeResult<impl std::fmt::Debug>, status: u16, code: &str, desc: &str) {
        let e = r.expect_err("expected an error");
        assert_eq!(e.status, status, "{e}");
        assert_eq!(e.body.error, code, "{e}");
        assert_eq!(e.body.error_description.as_deref(), Some(desc), "{e}");
    }

    #[test]
    fn only_post_is_accepted() {
        for m in ["GET", "PUT", "post", ""] {
            assert_err(
                read_form(m, None, FORM, b"a=1", &[]),
                405,
                "invalid_token",
                "method not allowed",
            );
        }
    }

    #[test]
    fn a_query_string_is_refused_but_an_empty_one_is_not() {
        assert_err(
            read_form("POST", Some("x=1"), FORM, b"a=1", &[]),
            400,
            "invalid_token",
            "query parameters are not allowed",
        );
        assert!(read_form("POST", Some(""), FORM, b"a=1", &[]).is_ok());
    }

    #[test]
    fn media_type_is_checked_case_insensitively_and_parameters_ignored() {
        for ok in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-URLEncoded",
            "application/x-www-form-urlencoded; charset=utf-8",
            " application/x-www-form-urlencoded ;charset=UTF-8",
        ] {
            assert!(
                read_form("POST", None, Some(ok), b"a=1", &[]).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            None,
            Some(""),
            Some("application/json"),
            Some("multipart/form-data; boundary=x"),
            Some("application/x-www-form-urlencodedx"),
        ] {
            let e = read_form("POST", None, bad, b"a=1", &[]).unwrap_err();
            assert_eq!(
                (e.status, e.body.error.as_str()),
                (415, "invalid_token"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn body_size_limit_is_inclusive() {
        let at_limit = format!("a={}", "x".repeat(MAX_BODY_BYTES - 2));
        assert_eq!(
            read(&at_limit).unwrap().get("a").map(str::len),
            Some(MAX_BODY_BYTES - 2)
        );
        let over = format!("{at_limit}x");
        assert_err(
            read(&over),
            413,
            "payload_too_large",
            "request body too large",
        );
    }

    #[test]
    fn framing_checks_run_in_reference_order() {
        // Method before query, query before media type, media type before size.
        let big = vec![b'a'; MAX_BODY_BYTES + 1];
        let e = read_form("GET", Some("x=1"), None, &big, &[]).unwrap_err();
        assert_eq!(e.status, 405);
        let e = read_form("POST", Some("x=1"), None, &big, &[]).unwrap_err();
        assert_eq!(e.status, 400);
        let e = read_form("POST", None, None, &big, &[]).unwrap_err();
        assert_eq!(e.status, 415);
        let e = read_form("POST", None, FORM, &big, &[]).unwrap_err();
        assert_eq!(e.status, 413);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            "%zz", "a=%zz", "a=%4", "a=%", "%=1", "a=1;b=2", "a;=1", "a=%FF",
        ] {
            assert_err(read(body), 400, "invalid_token", "malformed request body");
        }
        assert!(read_form("POST", None, FORM, b"a=\xff", &[]).is_err());
    }

    #[test]
    fn decoding_follows_go_parse_query() {
        let f = read("a=1&&b=x+y%20z&c&=v&d=%C3%A9%2B&e=a=b&&").unwrap();
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), Some("x y z"));
        assert_eq!(f.get("c"), Some(""));
        assert_eq!(f.get(""), Some("v"));
        assert_eq!(f.get("d"), Some("é+"));
        assert_eq!(f.get("e"), Some("a=b"));
        assert!(f.contains("c"));
        assert!(!f.contains("z"));
        assert_eq!(f.get("z"), None);
        assert!(read("").unwrap().get_all("a").is_empty());
        // Names are decoded too.
        assert_eq!(read("sc%6Fpe=x").unwrap().get("scope"), Some("x"));
    }

    #[test]
    fn only_named_fields_may_repeat() {
        assert_err(
            read("scope=a&resource=r&scope=b"),
            400,
            "invalid_token",
            "duplicate form field: scope",
        );
        // A repeat spelled with an escape is still a repeat.
        assert_err(
            read("scope=a&sc%6Fpe=b"),
            400,
            "invalid_token",
            "duplicate form field: scope",
        );
        let f = read("resource=b&resource=a&resource=b").unwrap();
        assert_eq!(f.get_all("resource"), ["b", "a", "b"]);
        assert_eq!(f.get("resource"), Some("b"));
        // With nothing repeatable (the run endpoints), resource may not repeat either.
        assert!(read_form("POST", None, FORM, b"resource=a&resource=b", &[]).is_err());
    }

    #[test]
    fn token_form_lifts_every_field() {
        let f = token(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &subject_token=tok&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &resource=r2&resource=+r1+&scope=read+write&zone_id=z&application_id=app\
             &client_secret=cs&approval_id=ap&session_id=s&agent_session_id=as\
             &delegation_edge_id=de&request_method=GET&request_path=%2Fv1%2Fx\
             &ttl_seconds=300&gateway_request_id=gr&unknown=ignored",
        )
        .unwrap();
        assert_eq!(f.grant_type, TOKEN_EXCHANGE_GRANT);
        assert_eq!(f.subject_token, "tok");
        assert_eq!(f.subject_token_type, ACCESS_TOKEN_TYPE);
        assert_eq!(f.resources, ["r2", " r1 "]);
        assert_eq!(f.scope, "read write");
        assert_eq!(f.zone_id, "z");
        assert_eq!(f.application_id, "app");
        assert_eq!(f.client_secret, "cs");
        assert_eq!(f.approval_id, "ap");
        assert_eq!(f.session_id, "s");
        assert_eq!(f.agent_session_id, "as");
        assert_eq!(f.delegation_edge_id, "de");
        assert_eq!(f.request_method, "GET");
        assert_eq!(f.request_path, "/v1/x");
        assert_eq!(f.ttl_seconds, Some(300));
        assert_eq!(f.gateway_request_id, "gr");
        assert!(f.check_grant().is_ok());
        assert_eq!(f.canonical_resources().unwrap(), ["r1", "r2"]);
        assert!(!f.is_federation());

        let empty = token("").unwrap();
        assert_eq!(empty, TokenForm::default());
    }

    #[test]
    fn refused_fields_fail_on_presence_even_empty() {
        for field in ["actor_token", "client_assertion", "client_assertion_type"] {
            for body in [format!("{field}=x"), format!("{field}="), field.to_owned()] {
                let e = token(&format!("grant_type=g&{body}")).unwrap_err();
                assert_eq!((e.status, e.body.error.as_str()), (400, "invalid_token"));
                let d = e.body.error_description.unwrap();
                assert!(d.starts_with(&format!("{field} is not supported")), "{d}");
            }
        }
        // Framing errors come first.
        let e = token("actor_token=1&scope=a&scope=b").unwrap_err();
        assert_eq!(
            e.body.error_description.as_deref(),
            Some("duplicate form field: scope")
        );
    }

    #[test]
    fn ttl_seconds_parses_as_an_integer() {
        assert_eq!(token("ttl_seconds=-5").unwrap().ttl_seconds, Some(-5));
        assert_eq!(token("ttl_seconds=0").unwrap().ttl_seconds, Some(0));
        assert_eq!(token("ttl_seconds=%2B7").unwrap().ttl_seconds, Some(7));
        assert_eq!(token("ttl_seconds=").unwrap().ttl_seconds, None);
        assert_eq!(token("scope=x").unwrap().ttl_seconds, None);
        for bad in ["abc", "1.5", "+5+", "9223372036854775808", "1e3", "0x10"] {
            assert_err(
                token(&format!("ttl_seconds={bad}")),
                400,
                "invalid_token",
                "invalid ttl_seconds",
            );
        }
        // Before grant_type is checked: parse fails even with a wrong grant.
        assert!(token("grant_type=nope&ttl_seconds=abc").is_err());
    }

    #[test]
    fn resources_are_trimmed_deduped_and_sorted() {
        let f = token("resource=b&resource=+a&resource=a+&resource=B&resource=b").unwrap();
        assert_eq!(f.canonical_resources().unwrap(), ["B", "a", "b"]);
        assert!(token("").unwrap().canonical_resources().unwrap().is_empty());
        for blank in ["resource=", "resource=+++", "resource=a&resource=%09"] {
            assert_err(
                token(blank).unwrap().canonical_resources(),
                400,
                "invalid_token",
                "resource must not be empty",
            );
        }
    }

    #[test]
    fn grant_and_subject_token_type_checks() {
        let mut f = TokenForm {
            grant_type: TOKEN_EXCHANGE_GRANT.into(),
            ..TokenForm::default()
        };
        assert!(f.check_grant().is_ok());

        f.grant_type = "client_credentials".into();
        assert_err(
            f.check_grant(),
            400,
            "invalid_token",
            "unsupported grant_type",
        );
        f.grant_type = TOKEN_EXCHANGE_GRANT.into();

        f.subject_token = "t".into();
        f.subject_token_type = "urn:ietf:params:oauth:token-type:jwt".into();
        assert_err(
            f.check_grant(),
            400,
            "invalid_token",
            "unsupported subject_token_type",
        );

        for t in [ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE] {
            f.subject_token_type = t.into();
            assert!(f.check_grant().is_ok());
        }
        assert!(f.is_federation());

        f.subject_token.clear();
        let e = f.check_grant().unwrap_err();
        assert_eq!((e.status, e.body.error.as_str()), (400, "invalid_token"));
        f.subject_token = "t".into();
        f.subject_token_type.clear();
        let e = f.check_grant().unwrap_err();
        assert_eq!((e.status, e.body.error.as_str()), (400, "invalid_token"));
    }

    #[test]
    fn scopes_split_on_spaces_keep_order_and_drop_repeats() {
        let f = TokenForm {
            scope: "  write read  write admin read ".into(),
            ..TokenForm::default()
        };
        assert_eq!(f.requested_scopes(), ["write", "read", "admin"]);
        assert!(TokenForm::default().requested_scopes().is_empty());
    }
}
