//! Agent delegation, end to end in one process: parent session → child session → delegation
//! → mint → verify → revoke → refused.
//!
//! The orchestrator starts a task session, spawns a child session for the worker under it,
//! and delegates `read` on [`REPORTS`] to the child. The worker mints a gateway mandate
//! through the delegation, the engine (playing the Gateway) re-exchanges it for a resource
//! mandate, and the resource verifies it. After the orchestrator revokes the edge, the same
//! mandate is refused by the verifier (revocation set) and a new mint is refused by the STS
//! (the edge is no longer active).

use caracal_core::coordinator::{Caller, CreateDelegation, StartSession};
use caracal_core::mandate::{MandateError, MandateUse};
use caracal_core::model::delegation::DelegationEdge;
use caracal_core::model::session::{Lifecycle, Session};

use crate::{
    ExampleError, ExampleResult, ISSUER, ORCHESTRATION, ORCHESTRATOR_SECRET, REPORTS,
    WORKER_SECRET, World, ensure, world,
};

/// The lifecycle scope of a bootstrap (session) mandate.
const LIFECYCLE: &str = "agent:lifecycle";

/// What the example observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationReport {
    /// The orchestrator's parent session.
    pub parent_session_id: String,
    /// The worker's child session.
    pub child_session_id: String,
    /// The delegation edge parent → child.
    pub edge_id: String,
    /// The `sub` of the verified resource mandate.
    pub verified_subject: String,
    /// The verifier's code for the mandate after the revoke (`session_revoked`).
    pub after_revoke: String,
    /// The STS's status for a new mint after the revoke.
    pub mint_after_revoke: u16,
}

/// The sessions and edge [`delegate`] set up.
#[derive(Debug, Clone)]
pub struct Delegated {
    /// The orchestrator, as the Coordinator sees it (its session mandate's `sid`).
    pub orchestrator: Caller,
    /// The orchestrator's parent session.
    pub parent: Session,
    /// The worker's child session.
    pub child: Session,
    /// The edge parent → child for `read` on [`REPORTS`].
    pub edge: DelegationEdge,
}

/// Bootstrap both applications, start the parent and child sessions, and delegate.
pub async fn delegate(w: &World) -> ExampleResult<Delegated> {
    let engine = &w.engine;
    let zone = w.zone.id.as_str();
    let verifier = engine.verifier();

    // Bootstrap: each application gets a session mandate and an authority record (`sid`).
    let mut sids = Vec::new();
    for (app, secret, resource) in [
        (&w.orchestrator, ORCHESTRATOR_SECRET, ORCHESTRATION),
        (&w.worker, WORKER_SECRET, REPORTS),
    ] {
        let boot = engine
            .exchange(app, secret, &[("resource", resource), ("scope", LIFECYCLE)])
            .await?;
        let claims = verifier
            .verify(
                &boot.access_token,
                zone,
                MandateUse::Session,
                ISSUER,
                &[LIFECYCLE],
            )
            .await?;
        sids.push(claims.sid);
    }
    let (orchestrator_sid, worker_sid) = match sids.as_slice() {
        [o, w] => (o.clone(), w.clone()),
        _ => return Err(ExampleError::Unexpected("two bootstraps".into())),
    };
    let orchestrator = Caller::application(
        w.orchestrator.id.clone(),
        Some(orchestrator_sid),
        [LIFECYCLE],
    );

    // Parent session: the orchestrator's own task.
    let parent = engine
        .start_session(
            zone,
            &orchestrator,
            &StartSession {
                application_id: w.orchestrator.id.clone(),
                lifecycle: Lifecycle::Task,
                labels: vec!["orchestrator".into()],
                ttl_seconds: Some(3600),
                ..StartSession::default()
            },
        )
        .await?
        .session;

    // Child session: the worker's task under the parent. The host spawns it as the operator
    // (a session for another application needs `coordinator.spawn_for:<app>` otherwise),
    // bound to the worker's own authority record.
    let child = engine
        .start_session(
            zone,
            &Caller::operator(),
            &StartSession {
                application_id: w.worker.id.clone(),
                subject_session_id: Some(worker_sid),
                parent_id: Some(parent.agent_session_id.clone()),
                lifecycle: Lifecycle::Task,
                labels: vec!["worker".into()],
                ttl_seconds: Some(1800),
                ..StartSession::default()
            },
        )
        .await?
        .session;

    // Delegation: the orchestrator hands `read` on the reports resource to the child.
    let edge = engine
        .create_delegation(
            zone,
            &orchestrator,
            &CreateDelegation {
                source_session_id: parent.agent_session_id.clone(),
                target_session_id: child.agent_session_id.clone(),
                issuer_application_id: w.orchestrator.id.clone(),
                receiver_application_id: w.worker.id.clone(),
                parent_edge_id: None,
                resource_id: Some(w.reports.id.clone()),
                scopes: vec!["read".into()],
                constraints: serde_json::Map::new(),
                expires_at: None,
                ttl_seconds: Some(600),
            },
        )
        .await?
        .edge;
    Ok(Delegated {
        orchestrator,
        parent,
        child,
        edge,
    })
}

/// The worker's mint form through the delegation.
fn mint_form(d: &Delegated) -> [(&'static str, &str); 4] {
    [
        ("resource", REPORTS),
        ("scope", "read"),
        ("agent_session_id", d.child.agent_session_id.as_str()),
        ("delegation_edge_id", d.edge.id.as_str()),
    ]
}

/// Mint through the delegation (a gateway mandate), then the Gateway's re-exchange for a
/// resource mandate bound to `GET path`; returns the resource mandate.
pub async fn resource_mandate(w: &World, d: &Delegated, path: &str) -> ExampleResult<String> {
    let gateway = w
        .engine
        .exchange(&w.worker, WORKER_SECRET, &mint_form(d))
        .await?;
    let resource = w
        .engine
        .gateway_exchange(&w.worker, &gateway.access_token, REPORTS, "GET", path)
        .await?;
    Ok(resource.access_token)
}

/// Run the example.
pub async fn run() -> ExampleResult<DelegationReport> {
    let w = world().await?;
    let engine = &w.engine;
    let zone = w.zone.id.as_str();
    let verifier = engine.verifier();
    let d = delegate(&w).await?;
    let (orchestrator, parent, child, edge) = (&d.orchestrator, &d.parent, &d.child, &d.edge);
    let token = resource_mandate(&w, &d, "/reports/42").await?;

    // Verify as the resource would.
    let claims = verifier
        .verify(&token, zone, MandateUse::Resource, REPORTS, &["read"])
        .await?;
    ensure(
        claims.delegation_edge_id.as_deref() == Some(edge.id.as_str()),
        "the resource mandate carries the delegation edge",
    )?;

    // Revoke: the Coordinator cascades, and the engine feeds the revocation set.
    engine
        .revoke_delegation(zone, orchestrator, &edge.id)
        .await?;
    let after_revoke = match verifier
        .verify(&token, zone, MandateUse::Resource, REPORTS, &["read"])
        .await
    {
        Ok(_) => {
            return Err(ExampleError::Unexpected(
                "a revoked mandate verified".into(),
            ));
        }
        Err(e @ MandateError::Revoked) => e.verifier_code().to_owned(),
        Err(e) => return Err(e.into()),
    };
    let mint_after_revoke = match engine
        .exchange(&w.worker, WORKER_SECRET, &mint_form(&d))
        .await
    {
        Ok(_) => {
            return Err(ExampleError::Unexpected(
                "a mint through a revoked edge succeeded".into(),
            ));
        }
        Err(e) => e.status,
    };
    Ok(DelegationReport {
        parent_session_id: parent.agent_session_id.clone(),
        child_session_id: child.agent_session_id.clone(),
        edge_id: edge.id.clone(),
        verified_subject: claims.sub,
        after_revoke,
        mint_after_revoke,
    })
}
