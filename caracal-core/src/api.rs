//! The error shape every Caracal HTTP surface renders.
//!
//! The reference answers failures as
//! `{"error": "<code>", "error_description": "<text>", "requestId": "<id>"}`, omitting the
//! description and the request id when empty, and some errors add fields of their own
//! (`details`, `state`, the approval-hold fields). [`ApiError`] carries the HTTP status with the
//! body so that a service maps a core error to a response in one place; the body itself is
//! [`ErrorBody`].
//!
//! Descriptions are written for the caller: they never contain secrets, tokens or internal
//! error chains.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The JSON body of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The machine-readable code, e.g. `invalid_token` or `access_denied`.
    pub error: String,
    /// Human-readable text for the caller; omitted when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// The request id (from `X-Request-Id`); omitted when empty. The wire name is camelCase.
    #[serde(rename = "requestId", default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Extra members some errors carry (`details`, `state`, approval-hold fields).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An error on its way to the wire: an HTTP status and an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (400..=599).
    pub status: u16,
    /// The body to render.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with a status and a code and no description.
    pub fn new(status: u16, code: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: code.into(),
                error_description: None,
                request_id: None,
                extra: Map::new(),
            },
        }
    }

    /// Set the description (an empty one is omitted on the wire).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        let d = description.into();
        self.body.error_description = (!d.is_empty()).then_some(d);
        self
    }

    /// Set the request id (an empty one is omitted on the wire).
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        let r = request_id.into();
        self.body.request_id = (!r.is_empty()).then_some(r);
        self
    }

    /// Add an extra member to the body. The reserved members cannot be overwritten this way.
    pub fn with_field(mut self, key: impl Into<String>, value: Value) -> Self {
        let key = key.into();
        if !matches!(key.as_str(), "error" | "error_description" | "requestId") {
            self.body.extra.insert(key, value);
        }
        self
    }

    /// The body serialised as compact JSON.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings and JSON values cannot fail; fall back to a minimal
        // body rather than panic if it ever did.
        serde_json::to_string(&self.body)
            .unwrap_or_else(|_| r#"{"error":"internal_error"}"#.to_owned())
    }

    /// 400 with the given code.
    pub fn bad_request(code: impl Into<String>) -> Self {
        Self::new(400, code)
    }
    /// 401 with the given code.
    pub fn unauthorized(code: impl Into<String>) -> Self {
        Self::new(401, code)
    }
    /// 403 with the given code.
    pub fn forbidden(code: impl Into<String>) -> Self {
        Self::new(403, code)
    }
    /// 404 with the given code.
    pub fn not_found(code: impl Into<String>) -> Self {
        Self::new(404, code)
    }
    /// 409 with the given code.
    pub fn conflict(code: impl Into<String>) -> Self {
        Self::new(409, code)
    }
    /// 500 `internal_error` with the reference's generic description.
    pub fn internal() -> Self {
        Self::new(500, "internal_error")
            .with_description("The service failed to process the request")
    }
    /// 503 with the given code.
    pub fn unavailable(code: impl Into<String>) -> Self {
        Self::new(503, code)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body.error)?;
        if let Some(d) = &self.body.error_description {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_the_reference_shape_and_omits_empties() {
        let e = ApiError::bad_request("invalid_token")
            .with_description("zone_id required")
            .with_request_id("req-1");
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"error":"invalid_token","error_description":"zone_id required","requestId":"req-1"})
        );
        let bare = ApiError::not_found("zone_not_found").with_description("");
        assert_eq!(bare.to_json(), r#"{"error":"zone_not_found"}"#);
    }

    #[test]
    fn extra_fields_are_flattened_but_cannot_shadow_reserved_ones() {
        let e = ApiError::conflict("approval_not_decidable")
            .with_field("state", json!("approved"))
            .with_field("error", json!("spoofed"));
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"error":"approval_not_decidable","state":"approved"})
        );
        let back: ErrorBody = serde_json::from_value(v).unwrap();
        assert_eq!(back, e.body);
    }
}
