//! `/health` and `/ready` answers with named reasons.
//!
//! A service decides *whether* it is healthy or ready (its checks, in its own order); these
//! functions only render the reference's shapes:
//!
//! - health: 200 with an empty body, or 503 `{"ok":false,"ready":false,"reason":…}`;
//! - ready: 200 `{"ready":true}`, or 503 `{"ready":false,"reason":…}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Render a liveness result.
pub fn health_response(result: Result<(), &str>) -> Response {
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ok": false, "ready": false, "reason": reason})),
        )
            .into_response(),
    }
}

/// Render a readiness result.
pub fn ready_response(result: Result<(), &str>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason})),
        )
            .into_response(),
    }
}
