//! The Gateway's client to the STS (token exchange, JWKS, `/health`): operator-configured
//! `STS_URL`, so no SSRF guard; http or https; redirects are never followed (the legacy hyper
//! client never follows them); every call is bounded by a timeout and a body cap.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The client type.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within the timeout.
    #[error("timeout")]
    Timeout,
    /// Transport failure (connect, reset, TLS).
    #[error("transport: {0}")]
    Transport(String),
    /// The body exceeded the cap or failed mid-read.
    #[error("body: {0}")]
    Body(String),
    /// The request could not be built.
    #[error("request: {0}")]
    Build(String),
}

/// The TLS settings shared by the Gateway's clients (aws-lc-rs, webpki roots, TLS ≥ 1.2).
pub fn tls_connector(
    http: HttpConnector,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| e.to_string())?;
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}

/// A client with a `connect_timeout` and keep-alive pool.
pub fn http_client(connect_timeout: Duration) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(100)
        .build(tls_connector(http)?))
}

/// One call: status, headers and the body (at most `cap` bytes), within `timeout`.
pub async fn call(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
    cap: usize,
    timeout: Duration,
) -> Result<(u16, hyper::HeaderMap, Bytes), CallError> {
    let run = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, cap)
            .collect()
            .await
            .map_err(|e| CallError::Body(e.to_string()))?
            .to_bytes();
        Ok((status, parts.headers, body))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| CallError::Timeout)?
}

/// `GET url`, body capped.
pub async fn get_capped(
    client: &HttpClient,
    url: &str,
    cap: usize,
    timeout: Duration,
) -> Result<(u16, Bytes), CallError> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(url)
        .header("user-agent", "caracal-gateway")
        .body(Full::new(Bytes::new()))
        .map_err(|e| CallError::Build(e.to_string()))?;
    let (status, _, body) = call(client, request, cap, timeout).await?;
    Ok((status, body))
}
