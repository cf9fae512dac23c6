#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Every example runs, through the same `run()` its binary calls, and shows what it claims.

use std::time::Duration;

use caracal_examples::{REPORTS, agent_delegation, axum_protected_api, embedded_engine};

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn embedded_engine_bootstraps_and_verifies() {
    let r = tokio::time::timeout(LIMIT, embedded_engine::run())
        .await
        .expect("timed out")
        .unwrap();
    assert_eq!(r.mandate_use, "session");
    assert_eq!(r.scope, "agent:lifecycle");
    assert_eq!(r.wrong_secret_status, 401);
    assert!(r.audit_events >= 1, "{r:?}");
}

#[tokio::test]
async fn agent_delegation_is_refused_after_revoke() {
    let r = tokio::time::timeout(LIMIT, agent_delegation::run())
        .await
        .expect("timed out")
        .unwrap();
    assert_ne!(r.parent_session_id, r.child_session_id);
    assert_eq!(r.after_revoke, "session_revoked");
    assert_eq!(r.mint_after_revoke / 100, 4, "{r:?}");
}

#[tokio::test]
async fn axum_api_admits_only_live_mandates() {
    let r = tokio::time::timeout(LIMIT, axum_protected_api::run())
        .await
        .expect("timed out")
        .unwrap();
    assert_eq!(r.without_token, 401);
    assert_eq!(r.without_token_code, "missing_token");
    assert_eq!(r.with_token, 200);
    assert_eq!(r.body["report"], "42");
    assert!(r.body["agent_session_id"].is_string());
    assert_eq!(r.after_revoke, 401);
    assert_eq!(r.after_revoke_code, "session_revoked");
    let _ = REPORTS;
}
