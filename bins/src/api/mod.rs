//! A small typed HTTP client for the running services: the Admin API, the STS token
//! endpoint, the Coordinator, the Gateway and the Audit service.
//!
//! Why a client of our own: `caracal demo`, `caracal status` and the load harness drive a
//! *running* Caracal (a `caracal up` or services deployed apart) exactly as an outside caller
//! would, over HTTP, so what they show is what a user gets. The client is deliberately thin:
//!
//! - every request carries a timeout ([`Http::timeout`]); a service that does not answer is an
//!   [`ApiError::Timeout`], never a hang;
//! - every answer keeps its request id (`X-Request-Id` header, or the body's
//!   `requestId` / `request_id`) so a caller can print it next to what it did;
//! - a refusal is an [`ApiError::Status`] carrying the HTTP status, the reference's error
//!   code (`error` of the body) and its description, so callers can match on the code;
//! - secrets (client secrets, admin tokens, mandates) are never part of an error message;
//! - plain `http://` only (hyper's HTTP/1 connector): the tools talk to local or in-cluster
//!   services; TLS-terminated deployments are reached through their internal addresses.
//!
//! | Module | Service |
//! |---|---|
//! | [`admin`] | Admin API (`/v1`): zones, applications, providers, resources, policies |
//! | [`sts`] | STS token endpoint (`/oauth/2/token`): bootstrap and delegated mint |
//! | [`coordinator`] | Coordinator: sessions and delegations |
//! | [`gateway`] | Gateway: a proxied call |
//! | [`audit`] | Audit service: chain verification |
//! | [`echo`] | A local echo upstream that records what it received |
//! | [`world`] | `provision`: a demo world in one call (zone to active policy) |

// The load harness (`caracal bench`) is the other user of this module; until it lands some
// accessors are only exercised by tests.
#![allow(dead_code)]

pub mod admin;
pub mod audit;
pub mod coordinator;
pub mod echo;
pub mod gateway;
pub mod sts;
pub mod world;

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The default per-request timeout: long enough for an Argon2id client-secret check on a
/// busy machine, short enough that a stuck service is reported promptly.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be built (a bad URL or header value).
    #[error("cannot build the request to {url}: {reason}")]
    Request {
        /// The target.
        url: String,
        /// Why.
        reason: String,
    },
    /// The service could not be reached or the connection broke.
    #[error("{url}: {reason}")]
    Transport {
        /// The target.
        url: String,
        /// Why.
        reason: String,
    },
    /// No complete answer within the timeout.
    #[error("{url}: no answer within {secs} s")]
    Timeout {
        /// The target.
        url: String,
        /// The timeout in seconds.
        secs: u64,
    },
    /// The service answered with a status the caller did not expect.
    #[error("{what}: HTTP {status} {code}{}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default(), request_id.as_deref().map(|r| format!(" [request {r}]")).unwrap_or_default())]
    Status {
        /// What was attempted.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The reference's error code (`error` of the body), or `-` when there is none.
        code: String,
        /// `error_description` (or `message`) of the body.
        description: Option<String>,
        /// The request id of the refused call.
        request_id: Option<String>,
    },
    /// A success answer lacked a field the caller needs.
    #[error("{what}: the answer has no usable `{field}`")]
    Shape {
        /// What was attempted.
        what: String,
        /// The missing field.
        field: String,
    },
}

impl ApiError {
    /// The HTTP status of a [`ApiError::Status`] refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The reference error code of a [`ApiError::Status`] refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One HTTP answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// The body as text (lossy UTF-8).
    pub text: String,
    /// `X-Request-Id`, else the body's `requestId` / `request_id`.
    pub request_id: Option<String>,
}

impl Reply {
    /// `error` of the body, or `-`.
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("-")
    }

    /// `error_description` (or `message`, or `reason`) of the body.
    pub fn description(&self) -> Option<&str> {
        ["error_description", "message", "reason"]
            .iter()
            .find_map(|k| self.body[*k].as_str())
    }

    /// True for 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// This answer as an [`ApiError::Status`] for `what`.
    pub fn refusal(&self, what: &str) -> ApiError {
        ApiError::Status {
            what: what.to_owned(),
            status: self.status,
            code: self.code().to_owned(),
            description: self.description().map(str::to_owned),
            request_id: self.request_id.clone(),
        }
    }

    /// Self when the status is one of `expected`, else the refusal.
    pub fn expect(self, what: &str, expected: &[u16]) -> Result<Self, ApiError> {
        if expected.contains(&self.status) {
            Ok(self)
        } else {
            Err(self.refusal(what))
        }
    }

    /// A string field of the body.
    pub fn str_field(&self, what: &str, field: &str) -> Result<String, ApiError> {
        self.body[field]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Shape {
                what: what.to_owned(),
                field: field.to_owned(),
            })
    }
}

/// A typed answer: the value a caller needs plus the request id of the call.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    /// The value.
    pub value: T,
    /// The request id of the call that produced it.
    pub request_id: Option<String>,
}

/// The shared HTTP/1 client (cheap to clone; one connection pool).
#[derive(Clone, Debug)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    /// The timeout of every request (connect, headers and body together).
    pub timeout: Duration,
}

impl Default for Http {
    fn default() -> Self {
        Self::new(DEFAULT_TIMEOUT)
    }
}

impl Http {
    /// A client whose every request is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// Send one request; any HTTP status is a [`Reply`], only transport failures and the
    /// timeout are errors.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Reply, ApiError> {
        let bad = |reason: String| ApiError::Request {
            url: url.to_owned(),
            reason,
        };
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("accept", "application/json");
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            // The value may be a secret: never echo it in the error.
            let value = HeaderValue::from_str(value)
                .map_err(|_| bad(format!("header {name} has an invalid value")))?;
            builder = builder.header(name, value);
        }
        let payload = match body {
            Some((content_type, bytes)) => {
                builder = builder.header("content-type", content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| bad(e.to_string()))?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| ApiError::Transport {
                    url: url.to_owned(),
                    reason: transport_reason(&e),
                })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ApiError::Transport {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, ApiError>((status, headers, bytes))
        };
        let (status, headers, bytes) =
            tokio::time::timeout(self.timeout, call)
                .await
                .map_err(|_| ApiError::Timeout {
                    url: url.to_owned(),
                    secs: self.timeout.as_secs(),
                })??;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                ["requestId", "request_id"]
                    .iter()
                    .find_map(|k| body[*k].as_str().map(str::to_owned))
            });
        Ok(Reply {
            status,
            headers,
            body,
            text,
            request_id,
        })
    }

    /// A JSON request with an optional bearer token.
    pub async fn json(
        &self,
        method: &str,
        url: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, ApiError> {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.send(method, url, &headers, body).await
    }
}

/// The innermost cause of a client error (hyper's outer message alone says little).
fn transport_reason(e: &hyper_util::client::legacy::Error) -> String {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    reason
}

/// Where each service answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The STS, e.g. `http://127.0.0.1:8080`.
    pub sts: String,
    /// The Gateway.
    pub gateway: String,
    /// The Coordinator.
    pub coordinator: String,
    /// The Admin API (without `/v1`).
    pub admin: String,
    /// The Audit service.
    pub audit: String,
}

impl Endpoints {
    /// The `caracal up` ports on 127.0.0.1 (8080, 8081, 4000, 3000, 9090) moved by `offset`;
    /// `None` when a port would pass 65535.
    pub fn local(offset: u16) -> Option<Self> {
        let url = |base: u16| {
            base.checked_add(offset)
                .map(|p| format!("http://127.0.0.1:{p}"))
        };
        Some(Self {
            sts: url(8080)?,
            gateway: url(8081)?,
            coordinator: url(4000)?,
            admin: url(3000)?,
            audit: url(9090)?,
        })
    }
}

/// Percent-encode one form or path component (every byte outside the unreserved set).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An `application/x-www-form-urlencoded` body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_move_with_the_offset() {
        let e = Endpoints::local(100).unwrap();
        assert_eq!(e.sts, "http://127.0.0.1:8180");
        assert_eq!(e.gateway, "http://127.0.0.1:8181");
        assert_eq!(e.admin, "http://127.0.0.1:3100");
        assert!(Endpoints::local(60_000).is_none());
    }

    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(form(&[("a b", "x&y=z")]), "a%20b=x%26y%3Dz");
        assert_eq!(enc("resource://echo"), "resource%3A%2F%2Fecho");
    }

    #[test]
    fn status_error_names_code_and_request_id_never_the_body() {
        let r = Reply {
            status: 403,
            headers: HeaderMap::new(),
            body: serde_json::json!({"error": "access_denied", "error_description": "nope"}),
            text: String::new(),
            request_id: Some("rid-1".into()),
        };
        let e = r.clone().expect("mint", &[200]).unwrap_err();
        assert_eq!(e.status(), Some(403));
        assert_eq!(e.code(), Some("access_denied"));
        assert_eq!(
            e.to_string(),
            "mint: HTTP 403 access_denied (nope) [request rid-1]"
        );
        assert!(r.expect("mint", &[403]).is_ok());
    }
}
