//! The re-exchange with the STS (reference `gateway.md` §1.3): a fresh HMAC-signed RFC 8693
//! exchange per request, never cached, never retried.
//!
//! [`Exchanger`] has two implementations with the same request and the same outcome rules:
//! [`HttpExchanger`] (`POST {STS_URL}/oauth/2/token` under the envelope) and
//! [`InProcessExchanger`] (the embedded [`Sts`], called directly with the same form body and a
//! genuinely signed envelope, so the engine runs exactly the checks and audit of the HTTP route:
//! the envelope is what makes an exchange a Gateway exchange, there is no trusted flag). The
//! one difference: the in-process call hands over check 11's
//! [`SignatureProof`], so the STS checks the subject's
//! claims without verifying the same signature a second time (SPEC §6: once per hop).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};
use rand::RngCore as _;

use caracal_core::api::ApiError;
use caracal_core::clock::SharedClock;
use caracal_core::exchange::envelope::{
    self, EnvelopeHeaders, GatewayKey, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use caracal_core::exchange::{Sts, TokenRequest};
use caracal_core::mandate::SignatureProof;
use caracal_core::model::token::{TokenResponse, UpstreamDirective};

use crate::client::{CallError, HttpClient, call};
use crate::error::{Denial, Deny};

/// The token endpoint path.
pub const TOKEN_PATH: &str = "/oauth/2/token";
/// Largest STS body read (success or error).
pub const MAX_STS_BODY: usize = 16 * 1024;
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What the Gateway asks the STS for one request.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeInput<'a> {
    /// Peeked `zone_id`.
    pub zone_id: &'a str,
    /// Peeked `client_id` (sent as `application_id`).
    pub client_id: &'a str,
    /// The inbound bearer.
    pub subject_token: &'a str,
    /// Trimmed `X-Caracal-Resource`.
    pub resource: &'a str,
    /// Inbound method.
    pub method: &'a str,
    /// Inbound decoded path, no query.
    pub path: &'a str,
    /// The Gateway's request id (`gateway_request_id` and `X-Request-Id`).
    pub request_id: &'a str,
    /// Check 11's proof of the subject token's signature: an in-process STS uses it instead of
    /// verifying the signature again; the HTTP exchange cannot carry it.
    pub signature: Option<&'a SignatureProof>,
}

/// A granted exchange.
#[derive(Debug, Clone)]
pub struct Granted {
    /// The `use=resource` mandate.
    pub access_token: String,
    /// The upstream directive for the requested resource.
    pub directive: UpstreamDirective,
}

/// A failed exchange: the refusal to render and whether it counts toward the breaker.
#[derive(Debug, Clone)]
pub struct Failed {
    /// What the client sees.
    pub deny: Deny,
}

impl Failed {
    fn new(status: u16, code: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            deny: Deny {
                status,
                code: code.into().into(),
                description: description.into().into(),
                denial: Some(Denial::Sts),
            },
        }
    }

    /// Whether this failure counts toward the circuit breaker: `sts_unavailable` and ≥ 500.
    pub fn counted(&self) -> bool {
        self.deny.code == "sts_unavailable" && self.deny.status >= 500
    }
}

/// The exchange outcome.
pub type Outcome = Result<Granted, Failed>;

/// The STS exchange.
#[async_trait]
pub trait Exchanger: Send + Sync {
    /// Exchange `input`'s subject token for a resource mandate and upstream directive.
    async fn exchange(&self, input: &ExchangeInput<'_>) -> Outcome;
    /// Whether the STS answers `/health` (for `/ready`).
    async fn healthy(&self) -> bool;
}

/// `application/x-www-form-urlencoded` with keys sorted (Go `url.Values.Encode`).
pub fn form_body(input: &ExchangeInput<'_>) -> String {
    let mut pairs = [
        ("application_id", input.client_id),
        ("gateway_request_id", input.request_id),
        ("grant_type", GRANT),
        ("request_method", input.method),
        ("request_path", input.path),
        ("resource", input.resource),
        ("subject_token", input.subject_token),
        ("subject_token_type", ACCESS_TOKEN),
        ("zone_id", input.zone_id),
    ];
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        query_escape(k, &mut out);
        out.push('=');
        query_escape(v, &mut out);
    }
    out
}

/// Go's `url.QueryEscape`: unreserved bytes kept, space as `+`, everything else `%XX`.
pub fn query_escape(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
            }
        }
    }
}

/// A fresh nonce: 32 random bytes, lowercase hex.
pub fn nonce() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The directive for `resource` out of a token response (§1.3 last steps).
fn grant(response: TokenResponse, resource: &str) -> Outcome {
    if response.access_token.is_empty() {
        return Err(Failed::new(502, "sts_unavailable", "sts response invalid"));
    }
    let directive = response
        .upstreams
        .and_then(|mut u| u.remove(resource))
        .filter(|d| !d.url.is_empty())
        .ok_or_else(|| Failed::new(403, "access_denied", "resource upstream not configured"))?;
    Ok(Granted {
        access_token: response.access_token,
        directive,
    })
}

fn relay(e: &ApiError) -> Failed {
    Failed::new(
        e.status,
        e.body.error.clone(),
        e.body.error_description.clone().unwrap_or_default(),
    )
}

/// The embedded STS, called in process.
pub struct InProcessExchanger {
    sts: Arc<Sts>,
    clock: SharedClock,
}

impl std::fmt::Debug for InProcessExchanger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessExchanger").finish_non_exhaustive()
    }
}

impl InProcessExchanger {
    /// An exchanger over `sts`. The STS must have a `GATEWAY_STS_HMAC_KEY`: the envelope is
    /// signed with it, as the HTTP path would be.
    pub fn new(sts: Arc<Sts>, clock: SharedClock) -> Self {
        Self { sts, clock }
    }
}

#[async_trait]
impl Exchanger for InProcessExchanger {
    async fn exchange(&self, input: &ExchangeInput<'_>) -> Outcome {
        let Some(key) = self.sts.gateway_key() else {
            tracing::error!("embedded STS has no GATEWAY_STS_HMAC_KEY: gateway exchange refused");
            return Err(Failed::new(502, "sts_unavailable", "sts unavailable"));
        };
        let body = form_body(input);
        let ts = self.clock.now().timestamp().to_string();
        let nonce = nonce();
        let sig = envelope::sign(key, &ts, &nonce, "POST", TOKEN_PATH, body.as_bytes());
        let request = TokenRequest {
            method: "POST",
            path: TOKEN_PATH,
            query: None,
            content_type: Some("application/x-www-form-urlencoded"),
            body: body.as_bytes(),
            request_id: input.request_id,
            envelope: EnvelopeHeaders {
                timestamp: Some(ts.as_str()),
                nonce: Some(nonce.as_str()),
                signature: Some(sig.as_str()),
            },
        };
        match self.sts.token_proven(&request, input.signature).await {
            Ok(response) => grant(response, input.resource),
            Err(e) => Err(relay(&e)),
        }
    }

    async fn healthy(&self) -> bool {
        true
    }
}

/// The STS over HTTP.
#[derive(Clone)]
pub struct HttpExchanger {
    client: HttpClient,
    base: String,
    /// The path part of `STS_URL` joined with [`TOKEN_PATH`] (what the envelope signs).
    signed_path: String,
    key: Option<GatewayKey>,
    timeout: Duration,
    clock: SharedClock,
}

impl std::fmt::Debug for HttpExchanger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExchanger")
            .field("base", &self.base)
            .field("key", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpExchanger {
    /// An exchanger for the STS at `base` (`STS_URL`), signing with `key` when set.
    pub fn new(
        client: HttpClient,
        base: &str,
        key: Option<GatewayKey>,
        timeout: Duration,
        clock: SharedClock,
    ) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        let base_path = base
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
            .unwrap_or_default();
        Self {
            client,
            signed_path: format!("{base_path}{TOKEN_PATH}"),
            base,
            key,
            timeout,
            clock,
        }
    }

    fn request(&self, input: &ExchangeInput<'_>) -> Result<Request<Full<Bytes>>, String> {
        let body = form_body(input);
        let mut r = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{TOKEN_PATH}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", "caracal-gateway")
            .header("accept", "application/json")
            .header("x-request-id", input.request_id);
        if let Some(key) = &self.key {
            let ts = self.clock.now().timestamp().to_string();
            let nonce = nonce();
            let sig = envelope::sign(key, &ts, &nonce, "POST", &self.signed_path, body.as_bytes());
            r = r
                .header(TIMESTAMP_HEADER, ts)
                .header(NONCE_HEADER, nonce)
                .header(SIGNATURE_HEADER, sig);
        }
        r.body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())
    }
}

fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json")
}

/// The §1.3 response rules for an HTTP answer.
pub fn outcome_of(status: u16, content_type: Option<&str>, body: &[u8], resource: &str) -> Outcome {
    if status != 200 {
        #[derive(serde::Deserialize)]
        struct ErrBody {
            #[serde(default)]
            error: String,
            #[serde(default)]
            error_description: String,
        }
        if let Ok(e) = serde_json::from_slice::<ErrBody>(body)
            && !e.error.is_empty()
        {
            return Err(Failed::new(status, e.error, e.error_description));
        }
        let text = hyper::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        return Err(Failed::new(status, "sts_unavailable", text));
    }
    if !is_json(content_type) {
        return Err(Failed::new(502, "sts_unavailable", "sts response invalid"));
    }
    let response: TokenResponse = serde_json::from_slice(body)
        .map_err(|_| Failed::new(502, "sts_unavailable", "sts response invalid"))?;
    grant(response, resource)
}

#[async_trait]
impl Exchanger for HttpExchanger {
    async fn exchange(&self, input: &ExchangeInput<'_>) -> Outcome {
        let request = self
            .request(input)
            .map_err(|_| Failed::new(502, "sts_unavailable", "sts unavailable"))?;
        match call(&self.client, request, MAX_STS_BODY, self.timeout).await {
            Ok((status, headers, body)) => {
                let ct = headers
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                outcome_of(status, ct, &body, input.resource)
            }
            Err(CallError::Timeout) => Err(Failed::new(504, "sts_unavailable", "sts timeout")),
            Err(CallError::Body(_)) => {
                Err(Failed::new(502, "sts_unavailable", "sts response invalid"))
            }
            Err(e) => {
                tracing::warn!(error = %e, "sts exchange failed");
                Err(Failed::new(502, "sts_unavailable", "sts unavailable"))
            }
        }
    }

    async fn healthy(&self) -> bool {
        let url = format!("{}/health", self.base);
        matches!(
            crate::client::get_capped(&self.client, &url, 1024, Duration::from_secs(2)).await,
            Ok((200..=299, _))
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn input() -> ExchangeInput<'static> {
        ExchangeInput {
            zone_id: "z",
            client_id: "app",
            subject_token: "a.b.c",
            resource: "resource://r",
            method: "GET",
            path: "/v1/items x",
            request_id: "rid",
            signature: None,
        }
    }

    #[test]
    fn form_is_sorted_and_go_escaped() {
        assert_eq!(
            form_body(&input()),
            "application_id=app&gateway_request_id=rid\
             &grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &request_method=GET&request_path=%2Fv1%2Fitems+x&resource=resource%3A%2F%2Fr\
             &subject_token=a.b.c\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&zone_id=z"
        );
        assert_eq!(nonce().len(), 64);
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn response_rules() {
        let ok =
            br#"{"access_token":"t","token_type":"Bearer","expires_in":60,"issued_token_type":"x",
            "upstreams":{"resource://r":{"url":"http://u/","auth_mode":"none"}}}"#;
        let g = outcome_of(
            200,
            Some("application/json; charset=utf-8"),
            ok,
            "resource://r",
        )
        .unwrap();
        assert_eq!(g.access_token, "t");
        let e = outcome_of(200, Some("text/html"), ok, "resource://r").unwrap_err();
        assert_eq!(
            (e.deny.status, e.deny.description.as_ref()),
            (502, "sts response invalid")
        );
        assert!(e.counted());
        let e = outcome_of(200, Some("application/json"), ok, "resource://other").unwrap_err();
        assert_eq!(
            (
                e.deny.status,
                e.deny.code.as_ref(),
                e.deny.description.as_ref()
            ),
            (403, "access_denied", "resource upstream not configured")
        );
        assert!(!e.counted());
        let e = outcome_of(
            403,
            Some("application/json"),
            br#"{"error":"access_denied","error_description":"policy denied (x)","approval_id":"a"}"#,
            "resource://r",
        )
        .unwrap_err();
        assert_eq!(
            (e.deny.status, e.deny.description.as_ref()),
            (403, "policy denied (x)")
        );
        let e = outcome_of(503, None, br#"{"error":"sts_unavailable"}"#, "r").unwrap_err();
        assert!(e.counted());
        let e = outcome_of(503, None, br#"{"error":"policy_eval_failed"}"#, "r").unwrap_err();
        assert!(!e.counted());
        let e = outcome_of(500, None, b"oops", "r").unwrap_err();
        assert_eq!(
            (e.deny.code.as_ref(), e.deny.description.as_ref()),
            ("sts_unavailable", "Internal Server Error")
        );
        assert!(e.counted());
        let e = outcome_of(302, None, b"", "r").unwrap_err();
        assert_eq!(e.deny.status, 302);
    }
}
