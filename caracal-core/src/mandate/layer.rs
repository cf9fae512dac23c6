//! A tower layer that admits a request only with a valid mandate (feature `tower`).
//!
//! [`MandateLayer`] wraps any `tower::Service<http::Request<B>>` (an axum router, a hyper
//! service): it reads `Authorization: Bearer <token>`, checks it with a [`RemoteVerifier`]
//! (signature, `iss`, `aud`, expiry, zone, mandate class, every required scope, and the
//! revocation set), and only then calls the inner service, with the verified
//! [`MandateClaims`] in the request extensions. Every other outcome is refused in the
//! reference error shape ([`ApiError`]) with the resource verifier's codes and statuses
//! (`gateway.md` §7.2): `403 insufficient_scope` for a valid mandate lacking a required
//! scope, `401` for everything else (`missing_token`, `invalid_token`, `invalid_zone`,
//! `session_revoked`). Like the reference adapters, no `WWW-Authenticate` header is sent.
//!
//! ## Invariants
//!
//! - Fail closed: a missing, repeated, non-UTF-8 or non-Bearer `Authorization` header, any
//!   verifier error (including key-store failures, which are not verdicts on the token,
//!   rendered `invalid_token`) and any revoked anchor are refused; the inner service is
//!   never called for them.
//! - The zone, audience, class and required scopes come from the layer's configuration, never
//!   from the request or the token.
//! - The response never echoes the token or a verifier message: only the code from
//!   [`MandateError::verifier_code`] and the reference's fixed description.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use tower::{Layer, Service};

use super::claims::{MandateClaims, MandateUse};
use super::error::MandateError;
use super::remote::RemoteVerifier;
use crate::api::ApiError;

/// The code of a request without a usable bearer token.
const MISSING_TOKEN: &str = "missing_token";
/// The request id header echoed into error bodies.
const REQUEST_ID_HEADER: &str = "x-request-id";
/// The longest request id echoed (longer ones are dropped, not truncated).
const MAX_REQUEST_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
struct Config {
    verifier: Arc<RemoteVerifier>,
    zone_id: String,
    audience: String,
    expected_use: MandateUse,
    required_scopes: Vec<String>,
}

/// Layer enforcing a mandate on every request; see the module docs.
#[derive(Debug, Clone)]
pub struct MandateLayer {
    config: Arc<Config>,
}

impl MandateLayer {
    /// Admit resource mandates of `zone_id` whose `aud` contains `audience`, verified by
    /// `verifier`. No scope is required until [`Self::require_scope`] adds one.
    pub fn new(
        verifier: Arc<RemoteVerifier>,
        zone_id: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            config: Arc::new(Config {
                verifier,
                zone_id: zone_id.into(),
                audience: audience.into(),
                expected_use: MandateUse::Resource,
                required_scopes: Vec::new(),
            }),
        }
    }

    /// Accept mandates of class `expected_use` instead of `resource`.
    pub fn with_use(mut self, expected_use: MandateUse) -> Self {
        Arc::make_mut(&mut self.config).expected_use = expected_use;
        self
    }

    /// Require `scope` (an exact member of the mandate's `scope`) on every request.
    pub fn require_scope(mut self, scope: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config)
            .required_scopes
            .push(scope.into());
        self
    }
}

impl<S> Layer<S> for MandateLayer {
    type Service = MandateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MandateService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service [`MandateLayer`] produces.
#[derive(Debug, Clone)]
pub struct MandateService<S> {
    inner: S,
    config: Arc<Config>,
}

/// The bearer token of `Authorization`, or `None` when there is no usable one (absent,
/// repeated, not UTF-8, not `Bearer`, empty, or with inner whitespace); the token is the
/// rest of the header after `Bearer `, trimmed (reference `gateway.md` §2 check 2).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim_ascii();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.bytes().any(|b| b.is_ascii_whitespace())
    {
        return None;
    }
    Some(token)
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    (!v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN && v.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| v.to_owned())
}

/// The reference verifier adapters' default description of `code` (`gateway.md` §7.2).
fn description(code: &str) -> &'static str {
    match code {
        MISSING_TOKEN => "Missing bearer token",
        "insufficient_scope" => "Required scope is missing",
        "session_revoked" => "Session revoked",
        "invalid_zone" => "Token zone validation failed",
        _ => "Token validation failed",
    }
}

/// The reference status of `code`: 403 for a valid mandate lacking a scope, 401 otherwise.
fn status(code: &str) -> StatusCode {
    match code {
        "insufficient_scope" => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    }
}

/// The refusal for `code`: the reference error body (plus the adapters' `error_hint` for a
/// missing token) and the reference status.
fn refusal<B: From<String>>(code: &str, request_id: Option<String>) -> Response<B> {
    let mut error = ApiError::new(status(code).as_u16(), code).with_description(description(code));
    if code == MISSING_TOKEN {
        error = error.with_field(
            "error_hint",
            serde_json::Value::from("Send Authorization: Bearer <Caracal mandate>."),
        );
    }
    if let Some(id) = request_id {
        error = error.with_request_id(id);
    }
    let mut response = Response::new(B::from(error.to_json()));
    *response.status_mut() = status(code);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The code a refused verification renders (every error is a refusal here).
fn code_of(error: &MandateError) -> &'static str {
    match error.verifier_code() {
        "internal_error" => "invalid_token",
        other => other,
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MandateService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The ready service answers this request; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        Box::pin(async move {
            let headers = request.headers();
            let Some(token) = bearer(headers) else {
                return Ok(refusal(MISSING_TOKEN, request_id(headers)));
            };
            let scopes: Vec<&str> = config.required_scopes.iter().map(String::as_str).collect();
            let verdict = config
                .verifier
                .verify(
                    token,
                    &config.zone_id,
                    config.expected_use,
                    &config.audience,
                    &scopes,
                )
                .await;
            match verdict {
                Ok(claims) => {
                    request.extensions_mut().insert::<MandateClaims>(claims);
                    inner.call(request).await
                }
                Err(e) => {
                    tracing::debug!(code = code_of(&e), "mandate refused");
                    Ok(refusal(code_of(&e), request_id(request.headers())))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::convert::Infallible;

    use chrono::{DateTime, Utc};
    use tower::ServiceExt;

    use super::*;
    use crate::clock::{FakeClock, SharedClock};
    use crate::mandate::keys::VerificationKeys;
    use crate::mandate::remote::{Anchor, RevocationSet, StaticJwksSource};
    use crate::mandate::{Jwks, SigningKey, mint};

    const ISSUER: &str = "https://sts.example.com";
    const ZONE: &str = "zone-1";
    const RESOURCE: &str = "resource://api";

    struct Harness {
        layer: MandateLayer,
        set: Arc<RevocationSet>,
        key: SigningKey,
    }

    fn t0() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap()
    }

    fn harness() -> Harness {
        let clock: SharedClock = Arc::new(FakeClock::new(t0()));
        let key = SigningKey::generate("k1").unwrap().0;
        let source = Arc::new(StaticJwksSource::new());
        let set = VerificationKeys::new([key.verification_key().unwrap()]);
        source.set(ZONE, Jwks::from_keys(&set).to_json());
        let revocations = Arc::new(RevocationSet::new(clock.clone()));
        let verifier = Arc::new(RemoteVerifier::new(
            source,
            ISSUER,
            clock,
            revocations.clone(),
        ));
        Harness {
            layer: MandateLayer::new(verifier, ZONE, RESOURCE).require_scope("read"),
            set: revocations,
            key,
        }
    }

    fn claims() -> MandateClaims {
        let mut c: MandateClaims = serde_json::from_str(include_str!(
            "../../tests/fixtures/interop/jwt-claims.resource.valid.json"
        ))
        .unwrap();
        c.exp = c.iat + 3600;
        c
    }

    /// An inner service answering 200 with the verified `sub`.
    async fn echo(request: Request<String>) -> Result<Response<String>, Infallible> {
        let sub = request
            .extensions()
            .get::<MandateClaims>()
            .map(|c| c.sub.clone())
            .unwrap_or_default();
        Ok(Response::new(sub))
    }

    async fn send(layer: &MandateLayer, authorization: Option<&str>) -> Response<String> {
        let svc = layer.layer(tower::service_fn(echo));
        let mut request = Request::builder()
            .uri("/items")
            .header(REQUEST_ID_HEADER, "req-1");
        if let Some(a) = authorization {
            request = request.header(AUTHORIZATION, a);
        }
        svc.oneshot(request.body(String::new()).unwrap())
            .await
            .unwrap()
    }

    fn body_code(response: &Response<String>) -> String {
        let v: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(v["requestId"], "req-1");
        v["error"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn admits_a_valid_mandate_and_exposes_its_claims() {
        let h = harness();
        let token = mint(&claims(), &h.key).unwrap();
        let r = send(&h.layer, Some(&format!("Bearer {token}"))).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.body(), "user-1");
        // The scheme is case-insensitive.
        let r = send(&h.layer, Some(&format!("bearer {token}"))).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn refuses_a_missing_or_malformed_header() {
        let h = harness();
        for auth in [None, Some("Basic abc"), Some("Bearer"), Some("Bearer a b")] {
            let r = send(&h.layer, auth).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(body_code(&r), "missing_token");
            let v: serde_json::Value = serde_json::from_str(r.body()).unwrap();
            assert_eq!(v["error_description"], "Missing bearer token");
            assert!(v["error_hint"].is_string());
        }
    }

    #[tokio::test]
    async fn refuses_a_repeated_authorization_header() {
        let h = harness();
        let token = mint(&claims(), &h.key).unwrap();
        let svc = h.layer.layer(tower::service_fn(echo));
        let request = Request::builder()
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(String::new())
            .unwrap();
        let r = svc.oneshot(request).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn refuses_a_forged_expired_or_foreign_mandate() {
        let h = harness();
        let other = SigningKey::generate("k1").unwrap().0;
        let forged = mint(&claims(), &other).unwrap();
        let mut expired = claims();
        expired.exp = expired.iat - 3600;
        expired.iat -= 7200;
        let expired = mint(&expired, &h.key).unwrap();
        let mut foreign = claims();
        foreign.aud = crate::mandate::Audience::One("resource://other".into());
        let foreign = mint(&foreign, &h.key).unwrap();
        for token in [forged, expired, foreign, "not-a-jwt".to_owned()] {
            let r = send(&h.layer, Some(&format!("Bearer {token}"))).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(body_code(&r), "invalid_token");
            assert!(!r.body().contains(&token), "the token is never echoed");
        }
    }

    #[tokio::test]
    async fn refuses_a_missing_scope() {
        let h = harness();
        let layer = h.layer.clone().require_scope("admin");
        let token = mint(&claims(), &h.key).unwrap();
        let r = send(&layer, Some(&format!("Bearer {token}"))).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(body_code(&r), "insufficient_scope");
        // The original layer is unchanged by the clone's extra requirement.
        let r = send(&h.layer, Some(&format!("Bearer {token}"))).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn refuses_a_revoked_mandate() {
        let h = harness();
        let token = mint(&claims(), &h.key).unwrap();
        h.set
            .insert(Anchor::DelegationEdge("delegation-1".into()), t0());
        let r = send(&h.layer, Some(&format!("Bearer {token}"))).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body_code(&r), "session_revoked");
    }

    #[tokio::test]
    async fn refuses_when_keys_are_unavailable() {
        let h = harness();
        let mut c = claims();
        c.zone_id = "zone-2".into();
        let token = mint(&c, &h.key).unwrap();
        let verifier = h.layer.config.verifier.clone();
        let layer = MandateLayer::new(verifier, "zone-2", RESOURCE);
        let r = send(&layer, Some(&format!("Bearer {token}"))).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body_code(&r), "invalid_token");
    }
}
