//! Building the upstream request and filtering the response (reference `gateway.md` §1.6,
//! §1.7, §1.9, §2.2): pure functions over header maps and strings.

use std::net::IpAddr;

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use rand::RngCore as _;

use caracal_core::model::token::{AuthLocation, AuthMode, UpstreamDirective};

use crate::exchange::query_escape;

/// Hop-by-hop headers, stripped both ways (plus whatever `Connection` names).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Upstream response headers never relayed.
const RESPONSE_STRIP: &[&str] = &[
    "x-caracal-identity",
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "refresh",
];

/// Names a credential may never be injected as.
const RESERVED_CREDENTIAL_HEADERS: &[&str] = &[
    "baggage",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "expect",
    "forwarded",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "traceparent",
    "tracestate",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "via",
    "x-real-ip",
    "x-request-id",
];

/// The identity header forwarded when a directive opts in.
pub const IDENTITY_HEADER: &str = "x-caracal-identity";

/// Bytes escaped when a decoded path is re-escaped for the upstream request line.
const PATH_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// Why the upstream request could not be built (→ 400 `internal_error` "upstream request
/// build failed", audit `build_failed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A query that does not parse.
    #[error("query does not parse")]
    Query,
    /// The credential header is reserved or not a token.
    #[error("credential header not allowed")]
    CredentialHeader,
    /// A query-placed key without a parameter name.
    #[error("query parameter name missing")]
    QueryParam,
    /// A header value that cannot be sent.
    #[error("header value invalid")]
    HeaderValue,
    /// The URL could not be assembled.
    #[error("url invalid")]
    Url,
}

/// POSIX `path.Clean` of an absolute path (drops empty, `.` and resolves `..`; no trailing
/// slash except for the root).
fn clean(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// §1.7 path join over decoded paths.
pub fn join_path(upstream: &str, request: &str) -> String {
    if upstream.is_empty() || upstream == "/" {
        return if request.is_empty() {
            "/".to_owned()
        } else {
            request.to_owned()
        };
    }
    if request.is_empty() || request == "/" {
        return upstream.to_owned();
    }
    clean(&format!("{upstream}/{request}"))
}

fn unescape_query(s: &str) -> Option<String> {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Go's `url.ParseQuery`: `&`-separated, `;` refused, bad escapes refused.
pub fn parse_query(q: &str) -> Result<Vec<(String, String)>, BuildError> {
    let mut out = Vec::new();
    for part in q.split('&') {
        if part.is_empty() {
            continue;
        }
        if part.contains(';') {
            return Err(BuildError::Query);
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((
            unescape_query(k).ok_or(BuildError::Query)?,
            unescape_query(v).ok_or(BuildError::Query)?,
        ));
    }
    Ok(out)
}

/// §1.7 query merge: upstream keys win entirely; client keys absent upstream are added;
/// `set` (a query-placed API key) overrides both. Re-encoded with keys sorted (stable per key).
pub fn merge_query(
    upstream: Option<&str>,
    client: Option<&str>,
    set: Option<(&str, &str)>,
) -> Result<String, BuildError> {
    let mut merged = parse_query(upstream.unwrap_or(""))?;
    let client = parse_query(client.unwrap_or(""))?;
    let upstream_keys: std::collections::HashSet<String> =
        merged.iter().map(|(k, _)| k.clone()).collect();
    merged.extend(
        client
            .into_iter()
            .filter(|(k, _)| !upstream_keys.contains(k)),
    );
    if let Some((name, value)) = set {
        merged.retain(|(k, _)| k != name);
        merged.push((name.to_owned(), value.to_owned()));
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (i, (k, v)) in merged.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        query_escape(k, &mut out);
        out.push('=');
        query_escape(v, &mut out);
    }
    Ok(out)
}

/// The upstream URL: directive base + joined path (re-escaped from the decoded form) + merged
/// query; the fragment dropped.
pub fn upstream_url(
    directive_url: &str,
    decoded_request_path: &str,
    client_query: Option<&str>,
    set_query: Option<(&str, &str)>,
) -> Result<String, BuildError> {
    let uri: hyper::Uri = directive_url
        .split('#')
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| BuildError::Url)?;
    let scheme = uri.scheme_str().ok_or(BuildError::Url)?;
    let authority = uri.authority().ok_or(BuildError::Url)?;
    let base_path = crate::preflight::decoded_path(uri.path()).ok_or(BuildError::Url)?;
    let path = join_path(&base_path, decoded_request_path);
    let escaped: String = utf8_percent_encode(&path, PATH_ESCAPE).collect();
    let query = merge_query(uri.query(), client_query, set_query)?;
    let mut url = format!("{scheme}://{authority}{escaped}");
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    Ok(url)
}

fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_named(headers) {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// `Baggage` without `caracal.*` members (deleted when nothing is left).
fn filter_baggage(headers: &mut HeaderMap) {
    let joined: Vec<String> = headers
        .get_all("baggage")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|m| {
            let key = m.split('=').next().unwrap_or("").trim();
            !key.starts_with("caracal.") && !m.trim().is_empty()
        })
        .map(|m| m.trim().to_owned())
        .collect();
    headers.remove("baggage");
    if !joined.is_empty()
        && let Ok(v) = HeaderValue::from_str(&joined.join(","))
    {
        headers.insert("baggage", v);
    }
}

/// An RFC 7230 token, not reserved and not in a reserved prefix.
pub fn valid_credential_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !lower.starts_with("x-caracal-")
        && !lower.starts_with("x-forwarded-")
        && !lower.starts_with("proxy-")
        && !RESERVED_CREDENTIAL_HEADERS.contains(&lower.as_str())
}

fn all_hex_lower(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// W3C `traceparent` validity (§1.7).
pub fn valid_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.trim().split('-').collect();
    if parts.len() < 4 {
        return false;
    }
    let (version, trace, parent, flags) = (parts[0], parts[1], parts[2], parts[3]);
    if !all_hex_lower(version, 2) || version == "ff" {
        return false;
    }
    if version == "00" && parts.len() != 4 {
        return false;
    }
    all_hex_lower(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && all_hex_lower(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && flags.len() == 2
        && flags.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A fresh `00-<32hex>-<16hex>-01`.
pub fn new_traceparent() -> String {
    let mut t = [0u8; 16];
    let mut p = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut t);
    rand::thread_rng().fill_bytes(&mut p);
    t[0] |= 1;
    p[0] |= 1;
    format!("00-{}-{}-01", hex::encode(t), hex::encode(p))
}

/// The trace id of a valid traceparent.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

/// Where the request came from, for the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding {
    /// The socket peer.
    pub peer: Option<IpAddr>,
    /// `TRUST_PROXY`.
    pub trust_proxy: bool,
    /// The listener is TLS.
    pub tls: bool,
}

/// What the upstream request gets besides the sanitised inbound headers.
#[derive(Debug)]
pub struct Injection<'a> {
    /// The directive.
    pub directive: &'a UpstreamDirective,
    /// The `use=resource` mandate from the STS.
    pub resource_mandate: &'a str,
    /// The Gateway's request id.
    pub request_id: &'a str,
}

/// The query parameter a `provider_apikey` directive sets, if any.
pub fn query_credential(directive: &UpstreamDirective) -> Result<Option<(&str, &str)>, BuildError> {
    if directive.auth_mode != AuthMode::ProviderApikey
        || directive.auth_location != Some(AuthLocation::Query)
    {
        return Ok(None);
    }
    let name = directive
        .query_param_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or(BuildError::QueryParam)?;
    Ok(Some((
        name,
        directive.provider_token.as_deref().unwrap_or(""),
    )))
}

fn value(s: &str) -> Result<HeaderValue, BuildError> {
    let mut v = HeaderValue::from_str(s).map_err(|_| BuildError::HeaderValue)?;
    v.set_sensitive(true);
    Ok(v)
}

/// Sanitise the inbound `headers` into the upstream request headers and inject the
/// credential (§1.7, §2.2). Returns the outbound `traceparent`.
pub fn upstream_headers(
    headers: &mut HeaderMap,
    injection: &Injection<'_>,
    forwarding: &Forwarding,
) -> Result<String, BuildError> {
    let d = injection.directive;
    let inbound_host = headers.get(hyper::header::HOST).cloned();
    let inbound_xff = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    let inbound_xfp = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v == "http" || v == "https");
    strip_hop_by_hop(headers);
    let names: Vec<HeaderName> = headers.keys().cloned().collect();
    for name in names {
        let n = name.as_str();
        if n.starts_with("x-caracal-") || n.starts_with("x-forwarded-") {
            headers.remove(&name);
        }
    }
    for name in ["forwarded", "x-real-ip", "authorization", "host"] {
        headers.remove(name);
    }
    filter_baggage(headers);
    let header_name = d
        .auth_header
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .unwrap_or("Authorization");
    let injects_header = matches!(d.auth_mode, AuthMode::CaracalJwt | AuthMode::ProviderOauth)
        || (d.auth_mode == AuthMode::ProviderApikey
            && d.auth_location != Some(AuthLocation::Query));
    if injects_header && !valid_credential_header(header_name) {
        return Err(BuildError::CredentialHeader);
    }
    let cred_name =
        HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| BuildError::CredentialHeader)?;
    headers.remove(&cred_name);
    let scheme = d.auth_scheme.as_deref().map(str::trim).unwrap_or("");
    let with_scheme = |s: &str, token: &str| {
        if s.is_empty() {
            token.to_owned()
        } else {
            format!("{s} {token}")
        }
    };
    let token = d.provider_token.as_deref().unwrap_or("");
    match d.auth_mode {
        AuthMode::None => {}
        AuthMode::CaracalJwt => {
            let s = if scheme.is_empty() { "Bearer" } else { scheme };
            headers.insert(
                cred_name,
                value(&with_scheme(s, injection.resource_mandate))?,
            );
        }
        AuthMode::ProviderOauth | AuthMode::ProviderApikey => {
            if injects_header {
                headers.insert(cred_name, value(&with_scheme(scheme, token))?);
            }
            if d.forward_caracal_identity {
                headers.insert(IDENTITY_HEADER, value(injection.resource_mandate)?);
            }
        }
    }
    headers.insert(
        "x-request-id",
        HeaderValue::from_str(injection.request_id).map_err(|_| BuildError::HeaderValue)?,
    );
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_traceparent(v))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(new_traceparent);
    headers.insert(
        "traceparent",
        HeaderValue::from_str(&traceparent).map_err(|_| BuildError::HeaderValue)?,
    );
    let xff = if forwarding.trust_proxy {
        inbound_xff.or(forwarding.peer)
    } else {
        forwarding.peer
    };
    if let Some(ip) = xff
        && let Ok(v) = HeaderValue::from_str(&ip.to_string())
    {
        headers.insert("x-forwarded-for", v);
    }
    let proto = match (forwarding.trust_proxy, inbound_xfp) {
        (true, Some(p)) => p,
        _ if forwarding.tls => "https".to_owned(),
        _ => "http".to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&proto) {
        headers.insert("x-forwarded-proto", v);
    }
    if let Some(h) = inbound_host {
        headers.insert("x-forwarded-host", h);
    }
    Ok(traceparent)
}

/// Whether a `Location` value may be relayed: relative only (no scheme, no host, not
/// protocol-relative) and parseable.
fn relative_location(v: &HeaderValue) -> bool {
    let Ok(s) = v.to_str() else {
        return false;
    };
    if s.starts_with("//") || s.starts_with("\\\\") {
        return false;
    }
    match s.parse::<hyper::Uri>() {
        Ok(u) => u.scheme().is_none() && u.authority().is_none(),
        Err(_) => false,
    }
}

/// Filter the upstream response headers (§1.9).
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut h = upstream.clone();
    strip_hop_by_hop(&mut h);
    for name in RESPONSE_STRIP {
        h.remove(*name);
    }
    for name in [hyper::header::LOCATION, hyper::header::CONTENT_LOCATION] {
        if h.get(&name).is_some_and(|v| !relative_location(v)) {
            h.remove(&name);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn directive(mode: AuthMode) -> UpstreamDirective {
        UpstreamDirective {
            url: "http://u/base".into(),
            auth_mode: mode,
            auth_location: Some(AuthLocation::Header),
            auth_header: Some("Authorization".into()),
            query_param_name: None,
            auth_scheme: Some("Bearer".into()),
            allowed_token_hosts: vec![],
            provider_token: Some("PROVIDER".into()),
            provider_id: None,
            connection_id: None,
            forward_caracal_identity: false,
            expires_at: None,
        }
    }

    #[test]
    fn path_and_query() {
        assert_eq!(
            upstream_url(
                "http://u/base?fixed=1&shared=up",
                "/v1/items",
                Some("shared=client&extra=1"),
                None
            )
            .unwrap(),
            "http://u/base/v1/items?extra=1&fixed=1&shared=up"
        );
        assert_eq!(join_path("/base", "/v1/items/"), "/base/v1/items");
        assert_eq!(join_path("", "/x/"), "/x/");
        assert_eq!(join_path("/", ""), "/");
        assert_eq!(join_path("/base", "/"), "/base");
        assert_eq!(
            upstream_url("http://u:8080", "/a b/c", None, Some(("key", "K&1"))).unwrap(),
            "http://u:8080/a%20b/c?key=K%261"
        );
        assert_eq!(
            upstream_url(
                "http://u/",
                "/x",
                Some("key=client&a=1"),
                Some(("key", "k"))
            )
            .unwrap(),
            "http://u/x?a=1&key=k"
        );
        assert_eq!(
            upstream_url("http://u/", "/x", Some("a=%zz"), None),
            Err(BuildError::Query)
        );
        assert_eq!(
            upstream_url("http://u/", "/x", Some("a=1;b=2"), None),
            Err(BuildError::Query)
        );
    }

    #[test]
    fn headers_are_sanitised_and_credential_injected() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer GATEWAY-MANDATE"),
            ("proxy-authorization", "x"),
            ("x-caracal-resource", "resource://r"),
            ("x-caracal-identity", "forged"),
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("connection", "x-secret, keep-alive"),
            ("x-secret", "s"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            (
                "baggage",
                "caracal.session=s1, tenant=example,caracal.hop=2",
            ),
            (
                "traceparent",
                "00-00000000000000000000000000000000-0000000000000000-01",
            ),
            ("host", "gateway.local"),
            ("x-keep", "yes"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let d = directive(AuthMode::CaracalJwt);
        let tp = upstream_headers(
            &mut h,
            &Injection {
                directive: &d,
                resource_mandate: "RESOURCE",
                request_id: "rid",
            },
            &Forwarding {
                peer: Some("10.9.8.7".parse().unwrap()),
                trust_proxy: false,
                tls: false,
            },
        )
        .unwrap();
        assert_eq!(h["authorization"], "Bearer RESOURCE");
        for gone in [
            "proxy-authorization",
            "x-caracal-resource",
            "x-caracal-identity",
            "forwarded",
            "x-real-ip",
            "connection",
            "x-secret",
            "upgrade",
            "te",
            "host",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert_eq!(h["baggage"], "tenant=example");
        assert_eq!(h["x-forwarded-for"], "10.9.8.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "gateway.local");
        assert_eq!(h["x-request-id"], "rid");
        assert_eq!(h["x-keep"], "yes");
        assert!(
            valid_traceparent(&tp)
                && tp != "00-00000000000000000000000000000000-0000000000000000-01"
        );
    }

    #[test]
    fn provider_modes() {
        let run = |d: &UpstreamDirective| {
            let mut h = HeaderMap::new();
            h.insert("authorization", HeaderValue::from_static("Bearer M"));
            upstream_headers(
                &mut h,
                &Injection {
                    directive: d,
                    resource_mandate: "RES",
                    request_id: "r",
                },
                &Forwarding {
                    peer: None,
                    trust_proxy: false,
                    tls: true,
                },
            )
            .map(|_| h)
        };
        let mut d = directive(AuthMode::ProviderApikey);
        d.auth_header = Some("X-Api-Key".into());
        d.auth_scheme = Some("Token".into());
        let h = run(&d).unwrap();
        assert_eq!(h["x-api-key"], "Token PROVIDER");
        assert!(h.get("authorization").is_none());
        assert!(h.get(IDENTITY_HEADER).is_none());
        d.auth_header = Some("Host".into());
        assert_eq!(run(&d).unwrap_err(), BuildError::CredentialHeader);
        let mut d = directive(AuthMode::ProviderOauth);
        d.forward_caracal_identity = true;
        let h = run(&d).unwrap();
        assert_eq!(h["authorization"], "Bearer PROVIDER");
        assert_eq!(h[IDENTITY_HEADER], "RES");
        let h = run(&directive(AuthMode::None)).unwrap();
        assert!(h.get("authorization").is_none());
        let mut d = directive(AuthMode::ProviderApikey);
        d.auth_location = Some(AuthLocation::Query);
        d.query_param_name = None;
        assert_eq!(query_credential(&d).unwrap_err(), BuildError::QueryParam);
        d.query_param_name = Some("key".into());
        assert_eq!(query_credential(&d).unwrap(), Some(("key", "PROVIDER")));
        let h = run(&d).unwrap();
        assert!(h.get("authorization").is_none());
    }

    #[test]
    fn traceparents() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"
        ));
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"
        ));
        assert!(valid_traceparent(&new_traceparent()));
    }

    #[test]
    fn response_filter() {
        let mut h = HeaderMap::new();
        h.insert("location", HeaderValue::from_static("http://evil/x"));
        h.insert("content-location", HeaderValue::from_static("/next"));
        h.insert("server", HeaderValue::from_static("x"));
        h.insert("refresh", HeaderValue::from_static("0"));
        h.insert("x-caracal-identity", HeaderValue::from_static("RES"));
        h.insert("set-cookie", HeaderValue::from_static("a=b"));
        let out = response_headers(&h);
        assert!(out.get("location").is_none());
        assert_eq!(out["content-location"], "/next");
        assert!(out.get("server").is_none() && out.get("refresh").is_none());
        assert!(out.get("x-caracal-identity").is_none());
        assert_eq!(out["set-cookie"], "a=b");
        let mut h = HeaderMap::new();
        h.insert("location", HeaderValue::from_static("//evil/x"));
        assert!(response_headers(&h).get("location").is_none());
    }
}
