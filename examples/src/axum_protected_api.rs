//! An axum API protected by [`MandateLayer`]: every route needs a resource mandate for
//! [`REPORTS`] with scope `read`, and handlers read the verified claims from the request
//! extensions. The example drives the router in-process (`tower::ServiceExt::oneshot`); a
//! host serves the same [`router`] with `axum::serve`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path};
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use caracal_core::mandate::MandateClaims;
use caracal_core::mandate::layer::MandateLayer;
use caracal_core::mandate::remote::RemoteVerifier;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::agent_delegation::{delegate, resource_mandate};
use crate::{ExampleError, ExampleResult, REPORTS, world};

/// `GET /reports/{id}`: answers with who asked (the verified mandate's subject and session).
async fn report(
    Path(id): Path<String>,
    Extension(claims): Extension<MandateClaims>,
) -> axum::Json<Value> {
    axum::Json(json!({
        "report": id,
        "subject": claims.sub,
        "agent_session_id": claims.agent_session_id,
    }))
}

/// The protected API: mandates of `zone_id` for [`REPORTS`] with scope `read`.
pub fn router(verifier: Arc<RemoteVerifier>, zone_id: &str) -> Router {
    Router::new()
        .route("/reports/{id}", get(report))
        .layer(MandateLayer::new(verifier, zone_id, REPORTS).require_scope("read"))
}

/// What the example observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiReport {
    /// Status without a mandate (401).
    pub without_token: u16,
    /// The error code without a mandate.
    pub without_token_code: String,
    /// Status with a valid resource mandate (200).
    pub with_token: u16,
    /// The body the handler answered.
    pub body: Value,
    /// Status with the same mandate after the delegation was revoked (401).
    pub after_revoke: u16,
    /// The error code after the revoke.
    pub after_revoke_code: String,
}

async fn call(app: &Router, token: Option<&str>) -> ExampleResult<(u16, Value)> {
    let mut request = Request::get("/reports/42");
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let request = request
        .body(Body::empty())
        .map_err(|e| ExampleError::Unexpected(e.to_string()))?;
    let response = app
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| ExampleError::Unexpected(e.to_string()))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ExampleError::Unexpected(e.to_string()))?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status.as_u16(), body))
}

fn code(body: &Value) -> String {
    body["error"].as_str().unwrap_or_default().to_owned()
}

/// Run the example.
pub async fn run() -> ExampleResult<ApiReport> {
    let w = world().await?;
    let d = delegate(&w).await?;
    let token = resource_mandate(&w, &d, "/reports/42").await?;
    let app = router(Arc::new(w.engine.verifier()), &w.zone.id);

    let (without_token, missing) = call(&app, None).await?;
    let (with_token, body) = call(&app, Some(&token)).await?;
    w.engine
        .revoke_delegation(&w.zone.id, &d.orchestrator, &d.edge.id)
        .await?;
    let (after_revoke, revoked) = call(&app, Some(&token)).await?;
    if with_token != StatusCode::OK.as_u16() {
        return Err(ExampleError::Unexpected(format!(
            "a valid mandate was answered {with_token}: {body}"
        )));
    }
    Ok(ApiReport {
        without_token,
        without_token_code: code(&missing),
        with_token,
        body,
        after_revoke,
        after_revoke_code: code(&revoked),
    })
}
