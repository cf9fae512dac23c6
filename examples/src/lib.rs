//! # caracal-examples
//!
//! Runnable examples of embedding `caracal-core` in a host application
//! (`cargo run -p caracal-examples --example <name>`). Each example uses only the public API
//! of the core crate and the in-memory backends, so it runs without Postgres or Redis.
//!
//! Each example's body is a `pub async fn run()` here, so the example binary and the tests in
//! `tests/examples.rs` execute the same code:
//!
//! - [`embedded_engine`]: build an [`Engine`], register a zone, two applications, a
//!   resource and a policy, bootstrap a session mandate and verify it in-process.
//! - [`agent_delegation`]: parent session → child session → delegation → mint → verify →
//!   revoke → refused.
//! - [`axum_protected_api`]: an axum app behind
//!   [`MandateLayer`](caracal_core::mandate::layer::MandateLayer).

use caracal_core::api::ApiError;
use caracal_core::embed::{EmbedError, Engine};
use caracal_core::mandate::MandateError;
use caracal_core::model::application::Application;
use caracal_core::model::resource::Resource;
use caracal_core::model::zone::Zone;
use serde_json::json;

pub mod agent_delegation;
pub mod axum_protected_api;
pub mod embedded_engine;

/// The issuer of the examples' engine.
pub const ISSUER: &str = "https://caracal.example";
/// The resource every example protects.
pub const REPORTS: &str = "resource://reports";
/// The orchestrator's own resource (what it bootstraps against: a bootstrap needs a resource
/// the application owns).
pub const ORCHESTRATION: &str = "resource://orchestration";
/// The orchestrator's client secret (examples only; a host reads it from its secret store).
pub const ORCHESTRATOR_SECRET: &str = "orchestrator-secret-0123456789";
/// The worker's client secret.
pub const WORKER_SECRET: &str = "worker-secret-0123456789";

/// Why an example stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    /// Building the engine or a setup step failed.
    #[error("setup: {0}")]
    Embed(#[from] EmbedError),
    /// The exchange refused a token request.
    #[error("exchange refused: {0}")]
    Exchange(#[from] ApiError),
    /// A mandate did not verify.
    #[error("verification: {0}")]
    Mandate(#[from] MandateError),
    /// The example observed something other than what it demonstrates.
    #[error("unexpected: {0}")]
    Unexpected(String),
}

/// The examples' result.
pub type ExampleResult<T> = Result<T, ExampleError>;

/// Fail the example with `what` unless `ok`.
pub fn ensure(ok: bool, what: impl Into<String>) -> ExampleResult<()> {
    if ok {
        Ok(())
    } else {
        Err(ExampleError::Unexpected(what.into()))
    }
}

/// The shared setup: an engine with zone `acme`, applications `orchestrator` and `worker`,
/// the resource [`REPORTS`] (`read`, `write`) owned by the worker, [`ORCHESTRATION`] owned by
/// the orchestrator, and a policy in which sessions labelled `worker` may `read` reports.
#[derive(Debug)]
pub struct World {
    /// The engine.
    pub engine: Engine,
    /// The zone.
    pub zone: Zone,
    /// The orchestrator application.
    pub orchestrator: Application,
    /// The worker application.
    pub worker: Application,
    /// The protected resource.
    pub reports: Resource,
}

/// Build [`World`].
pub async fn world() -> ExampleResult<World> {
    let engine = Engine::builder().issuer(ISSUER).build()?;
    let zone = engine.create_zone("acme").await?;
    let orchestrator = engine
        .create_application(&zone.id, "orchestrator", ORCHESTRATOR_SECRET)
        .await?;
    let worker = engine
        .create_application(&zone.id, "worker", WORKER_SECRET)
        .await?;
    let reports = engine
        .create_resource(
            &zone.id,
            REPORTS,
            &["read", "write"],
            Some("https://reports.internal.example"),
        )
        .await?;
    engine
        .create_resource(
            &zone.id,
            ORCHESTRATION,
            &[],
            Some("https://orchestrator.internal.example"),
        )
        .await?;
    let policy = json!({
        "app_ids": {"orchestrator": orchestrator.id, "worker": worker.id},
        "grants": {
            REPORTS: {"application": "worker", "roles": {"worker": ["read"]}},
            ORCHESTRATION: {"application": "orchestrator"}
        }
    });
    engine
        .activate_policy(&zone.id, "reports-access", &policy.to_string())
        .await?;
    Ok(World {
        engine,
        zone,
        orchestrator,
        worker,
        reports,
    })
}
