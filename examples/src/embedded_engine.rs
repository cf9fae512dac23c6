//! The smallest embedding: an [`Engine`](caracal_core::embed::Engine) in memory, a zone with
//! two applications, a resource and a policy (see [`world`]), one bootstrap exchange, and the
//! resulting session mandate verified in-process. A wrong secret is refused with the
//! reference's `401 invalid client credentials`.

use caracal_core::mandate::MandateUse;

use crate::{ExampleError, ExampleResult, ISSUER, REPORTS, WORKER_SECRET, ensure, world};

/// What the example observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineReport {
    /// The mandate's `sub` (the worker application).
    pub subject: String,
    /// The mandate's `use` (`session`).
    pub mandate_use: String,
    /// The granted scope.
    pub scope: String,
    /// The status of the exchange with a wrong secret.
    pub wrong_secret_status: u16,
    /// Decision events the exchange emitted.
    pub audit_events: usize,
}

/// Run the example.
pub async fn run() -> ExampleResult<EngineReport> {
    let w = world().await?;
    let boot = [("resource", REPORTS), ("scope", "agent:lifecycle")];
    let token = w.engine.exchange(&w.worker, WORKER_SECRET, &boot).await?;
    let claims = w
        .engine
        .verifier()
        .verify(
            &token.access_token,
            &w.zone.id,
            MandateUse::Session,
            ISSUER,
            &["agent:lifecycle"],
        )
        .await?;
    ensure(
        claims.client_id == w.worker.id,
        "the mandate names the worker",
    )?;
    let wrong_secret_status = match w.engine.exchange(&w.worker, "wrong-secret", &boot).await {
        Ok(_) => {
            return Err(ExampleError::Unexpected(
                "a wrong secret was accepted".into(),
            ));
        }
        Err(e) => e.status,
    };
    Ok(EngineReport {
        subject: claims.sub,
        mandate_use: claims.use_.as_str().to_owned(),
        scope: token.scope.unwrap_or_default(),
        wrong_secret_status,
        audit_events: w.engine.audit().events().len(),
    })
}
