//! Errors on the wire and request ids.
//!
//! Handlers return `Result<_, HttpError>`; [`HttpError`] renders an
//! [`ApiError`] as its status with the JSON body
//! `{"error", "error_description", "requestId"}`. The [`request_id`] middleware (install it
//! with [`with_request_id`]) gives every request an id (the caller's `X-Request-Id` when it is
//! sane, else a new UUIDv7), echoes it in the response's `X-Request-Id`, and puts it into the
//! body of every error rendered by [`HttpError`].

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use caracal_core::api::ApiError;

/// The request-id header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-supplied request id kept; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The request's id, in the request's extensions (set by [`request_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The caller's id if it is 1..=128 visible ASCII characters, else a new UUIDv7.
    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        let given = value
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= MAX_REQUEST_ID_LEN
                    && v.bytes().all(|b| b.is_ascii_graphic())
            })
            .map(str::to_owned);
        Self(given.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()))
    }
}

/// An [`ApiError`] as an axum response.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

/// Render `error` with `request_id` in its body.
pub fn render_error(error: &ApiError, request_id: Option<&str>) -> Response {
    let mut error = error.clone();
    if let Some(id) = request_id {
        error = error.with_request_id(id);
    }
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(error.body.clone())).into_response();
    // Kept so the request-id middleware can re-render the body with the id.
    response.extensions_mut().insert(ErrorMarker(error));
    response
}

/// Marks a response rendered from an [`ApiError`].
#[derive(Debug, Clone)]
struct ErrorMarker(ApiError);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        render_error(&self.0, None)
    }
}

/// Middleware: assign the request id, echo it, and put it into error bodies.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = RequestId::from_header(request.headers().get(&X_REQUEST_ID));
    request.extensions_mut().insert(id.clone());
    let mut response = next.run(request).await;
    if let Some(ErrorMarker(error)) = response.extensions_mut().remove::<ErrorMarker>() {
        let headers = response.headers().clone();
        response = render_error(&error, Some(&id.0));
        response.extensions_mut().remove::<ErrorMarker>();
        for (name, value) in &headers {
            if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// Add the [`request_id`] middleware to `router` (outermost, so it sees every response).
pub fn with_request_id<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
) -> axum::Router<S> {
    router.layer(axum::middleware::from_fn(request_id))
}

/// The fallback for unknown routes: 404 `not_found`.
pub async fn not_found() -> HttpError {
    HttpError(ApiError::not_found("not_found").with_description("No such route"))
}
