//! Prometheus metrics.
//!
//! Library code records through the `metrics` facade; a service binary installs
//! the Prometheus recorder once ([`prometheus`]) and serves it with [`metrics_response`].
//! Access follows the reference: with `METRICS_BEARER` set, exactly `Bearer <token>` is
//! required (constant-time); unset, metrics are open in `dev` only and 401 in published modes.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use caracal_core::api::ApiError;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::{Mode, Secret, bearer_matches};
use crate::http::HttpError;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use. `None` when another
/// global recorder was installed first (e.g. by an embedding host); metrics then go there.
pub fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            match ::metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(_) => {
                    tracing::warn!("a metrics recorder is already installed; /metrics is empty");
                    None
                }
            }
        })
        .clone()
}

/// Who may read `/metrics`.
#[derive(Debug, Clone)]
pub struct MetricsAccess {
    /// `METRICS_BEARER`.
    pub bearer: Option<Secret>,
    /// The service's mode.
    pub mode: Mode,
}

impl MetricsAccess {
    /// Whether a request with these headers may read metrics.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        match &self.bearer {
            Some(token) => bearer_matches(
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok()),
                token,
            ),
            None => !self.mode.is_published(),
        }
    }
}

/// `GET /metrics`: the exposition text (plus `extra`, pre-rendered lines a service computes
/// at scrape time), or 401.
pub fn metrics_response(
    access: &MetricsAccess,
    headers: &HeaderMap,
    handle: Option<&PrometheusHandle>,
    extra: &str,
) -> Response {
    if !access.allows(headers) {
        let mut response = HttpError(
            ApiError::unauthorized("unauthorized")
                .with_description("Metrics require a bearer token"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let mut body = handle.map(PrometheusHandle::render).unwrap_or_default();
    body.push_str(extra);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        body,
    )
        .into_response()
}
