//! Human approval holds through the HTTP surface (`sts.md` §10 checks 48–54), plus the
//! policy checks that need their own bundle (32, 34, 61) and audit delivery.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration as StdDuration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use caracal_core::clock::Clock;
use caracal_core::mandate::{Audience, MandateClaims, MandateUse, mint};
use caracal_core::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use caracal_core::store::authority::AuthorityStore;
use caracal_core::streams::{EntryId, Streams, names};
use chrono::Duration;
use serde_json::{Value, json};
use support::*;

/// A user session mandate for `user` acting through `client`, as a federated login would
/// produce (federation itself is not part of this build): a user-typed authority record and a
/// `use=session` mandate bound to it, signed with the zone key.
async fn user_mandate(w: &World, user: &str, client: &str) -> String {
    let now = w.clock.now();
    let record = AuthorityRecord {
        id: uuid_like(),
        zone_id: w.zone.clone(),
        session_type: SubjectType::User,
        subject_id: user.to_owned(),
        parent_id: None,
        status: AuthorityStatus::Active,
        expires_at: now + Duration::hours(1),
        authenticated_at: Some(now),
        claims_json: json!({}),
        revoked_at: None,
        revoked_reason: None,
        created_at: now,
    };
    w.store.insert_authority(&record).await.unwrap();
    let claims = MandateClaims {
        iss: ISSUER.to_owned(),
        sub: user.to_owned(),
        aud: Audience::Many(vec![ISSUER.to_owned()]),
        exp: now.timestamp() + 900,
        iat: now.timestamp(),
        jti: uuid_like(),
        zone_id: w.zone.clone(),
        client_id: client.to_owned(),
        scope: None,
        sid: record.id.clone(),
        root_sid: record.id.clone(),
        use_: MandateUse::Session,
        sub_type: SubjectType::User,
        target: vec![],
        agent_session_id: None,
        delegation_edge_id: None,
        source_session_id: None,
        target_session_id: None,
        delegation_path: vec![],
        delegation_chain: vec![],
        hop_count: 0,
        delegation_graph_epoch: 0,
    };
    let key = w.svc.sts().keys().signing_key(&w.zone).await.unwrap();
    mint(&claims, &key).unwrap()
}

async fn decide(w: &World, id: &str, bearer: &str, decision: &str, binding: &str) -> Answer {
    w.send(
        Request::post(format!("/approvals/{id}/decision"))
            .header("authorization", format!("Bearer {bearer}"))
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"decision": decision, "binding": binding, "reason": "ok"}).to_string(),
            ))
            .unwrap(),
    )
    .await
}

async fn gated_mint(w: &World, approval_id: Option<&str>) -> Answer {
    let mut extra = vec![
        ("resource", PIPERNET),
        ("scope", "write"),
        ("agent_session_id", w.session_b.agent_session_id.as_str()),
        ("delegation_edge_id", w.edge.id.as_str()),
    ];
    if let Some(id) = approval_id {
        extra.push(("approval_id", id));
    }
    w.exchange(&w.app_b, SECRET_B, &extra).await
}

#[tokio::test]
async fn approve_wake_consume_reissue_and_expire_the_window() {
    let w = world().await;
    let r = gated_mint(&w, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let id = r.body["approval_id"].as_str().unwrap().to_owned();
    let binding = r.body["binding"].as_str().unwrap().to_owned();

    // 50: an application-subject session mandate cannot decide.
    let app_session = w.bootstrap_b().await.token().to_owned();
    let r = decide(&w, &id, &app_session, "approved", &binding).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // 50: wrong binding → 409.
    let user = user_mandate(&w, "alice@example.com", &w.app_b.id).await;
    let r = decide(&w, &id, &user, "approved", &"0".repeat(64)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // no bearer at all → 401 with the realm challenge
    let r = w
        .send(
            Request::post(format!("/approvals/{id}/decision"))
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer realm=\"caracal-sts\""
    );

    // 49: a long poll is woken by the decision, well before its deadline.
    let router = w.router.clone();
    let uri = format!("/approvals/{id}?wait=20");
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        use tower::ServiceExt;
        let resp = router
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    });
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let r = decide(&w, &id, &user, "approved", &binding).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["state"], "approved");
    let view = tokio::time::timeout(StdDuration::from_secs(10), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view["state"], "approved");
    assert!(
        started.elapsed() < StdDuration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // 50: a second decision → 409 not pending.
    let r = decide(&w, &id, &user, "rejected", &binding).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.description(), "approval is not pending");

    // 51: the retry consumes the hold and mints.
    let r = gated_mint(&w, Some(&id)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let first_sid = claims(r.token())["sid"].clone();
    assert_eq!(
        w.get(&format!("/approvals/{id}")).await.body["state"],
        "consumed"
    );
    // Within two minutes, identical bindings: a re-issue bound to the same record.
    w.clock.advance(Duration::seconds(60));
    let r = gated_mint(&w, Some(&id)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(claims(r.token())["sid"], first_sid);
    // After the window: 409 approval_consumed.
    w.clock.advance(Duration::seconds(70));
    let r = gated_mint(&w, Some(&id)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error(), "approval_consumed");
}

#[tokio::test]
async fn rejected_expired_and_policy_changed_holds() {
    let w = world().await;
    let user = user_mandate(&w, "bob@example.com", &w.app_b.id).await;
    let r = gated_mint(&w, None).await;
    let id = r.body["approval_id"].as_str().unwrap().to_owned();
    let binding = r.body["binding"].as_str().unwrap().to_owned();
    // 53: rejected → 403 on retry.
    assert_eq!(
        decide(&w, &id, &user, "rejected", &binding).await.status,
        StatusCode::OK
    );
    let r = gated_mint(&w, Some(&id)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.description(), "approval was rejected");

    // 53: an expired hold (ttl 600 s) → 401 "approval expired"; without the id a new hold.
    let w = world().await;
    let r = gated_mint(&w, None).await;
    let id = r.body["approval_id"].as_str().unwrap().to_owned();
    w.clock.advance(Duration::seconds(601));
    let r = gated_mint(&w, Some(&id)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.description(), "approval expired");
    let r = gated_mint(&w, None).await;
    assert_eq!(r.error(), "interaction_required");
    assert_ne!(r.body["approval_id"], id.as_str());

    // 52: a policy activation changes the manifest → bindings no longer match.
    let w = world().await;
    let user = user_mandate(&w, "carol@example.com", &w.app_b.id).await;
    let r = gated_mint(&w, None).await;
    let id = r.body["approval_id"].as_str().unwrap().to_owned();
    let binding = r.body["binding"].as_str().unwrap().to_owned();
    assert_eq!(
        decide(&w, &id, &user, "approved", &binding).await.status,
        StatusCode::OK
    );
    let doc = policy_doc(&w.app_a.id, &w.app_b.id);
    activate(&w, &w.zone.clone(), &doc).await;
    let r = gated_mint(&w, Some(&id)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(
        r.description(),
        "approval not found or bindings do not match"
    );
}

#[tokio::test]
async fn approver_classes() {
    let w = world().await;
    // 50: an operator-only tier cannot be decided by a subject.
    let mut doc: Value = serde_json::from_str(&policy_doc(&w.app_a.id, &w.app_b.id)).unwrap();
    doc["approval_tiers"] = json!([{"tier": "high", "approver": "operator"}]);
    activate(&w, &w.zone.clone(), &doc.to_string()).await;
    let r = gated_mint(&w, None).await;
    let id = r.body["approval_id"].as_str().unwrap().to_owned();
    let binding = r.body["binding"].as_str().unwrap().to_owned();
    let user = user_mandate(&w, "dave@example.com", &w.app_b.id).await;
    let r = decide(&w, &id, &user, "approved", &binding).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.description().contains("operator decision"),
        "{}",
        r.description()
    );
    // 54: operator and subject tiers in one mint → 403.
    doc["risk"] = json!([{"scope": "write", "tier": "high"}, {"scope": "read", "tier": "low"}]);
    doc["approval_tiers"] = json!([
        {"tier": "high", "approver": "subject"},
        {"tier": "low", "approver": "operator"}
    ]);
    activate(&w, &w.zone.clone(), &doc.to_string()).await;
    let r = w.delegated_mint("read write", PIPERNET).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(
        r.description(),
        "approval requires separate operator and subject decisions"
    );
}

#[tokio::test]
async fn malformed_risk_denies_mints_but_not_bootstrap() {
    let w = world().await;
    // 32
    let mut doc: Value = serde_json::from_str(&policy_doc(&w.app_a.id, &w.app_b.id)).unwrap();
    doc["risk"] = json!([{"scope": "write"}]);
    activate(&w, &w.zone.clone(), &doc.to_string()).await;
    let r = w.delegated_mint("read", PIPERNET).await;
    assert_eq!(r.description(), "policy denied (malformed_risk_data)");
    assert_eq!(w.bootstrap_b().await.status, StatusCode::OK);
}

#[tokio::test]
async fn mandate_for_another_target_is_denied() {
    let w = world().await;
    // 34
    let gw = w.delegated_mint("read", PIPERNET).await.token().to_owned();
    let r = w.gateway_exchange(&gw, FILES, "GET", "/items").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.description(), "policy denied (mandate_target_mismatch)");
}

#[tokio::test]
async fn mint_rate_limit_skips_the_resource() {
    let w = world_with(|s| s.mint_limit_per_min = 3).await;
    // 61
    for _ in 0..3 {
        assert_eq!(w.bootstrap_b().await.status, StatusCode::OK);
    }
    let r = w.bootstrap_b().await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.description(), "policy denied");
    w.clock.advance(Duration::seconds(61));
    assert_eq!(w.bootstrap_b().await.status, StatusCode::OK);
}

#[tokio::test]
async fn decisions_are_audited_on_the_stream_with_a_valid_sig() {
    let key = caracal_core::audit::AuditHmacKey::from_hex(GATEWAY_KEY_HEX).unwrap();
    let k2 = key.clone();
    let w = world_with(move |s| s.audit_key = Some(k2)).await;
    let workers = w.svc.spawn_workers();
    assert_eq!(w.bootstrap_b().await.status, StatusCode::OK);
    let _ = w
        .exchange(
            &w.app_b,
            SECRET_B,
            &[("resource", PIPERNET), ("scope", "admin")],
        )
        .await;
    w.svc.emitter().flush().await.unwrap();
    let entries = w
        .streams
        .range(names::AUDIT_EVENTS, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap();
    let events: Vec<Value> = entries
        .iter()
        .map(|e| {
            let data = e.fields.get("data").unwrap();
            let sig = e.fields.get("sig").unwrap();
            caracal_core::audit::verify_payload_sig(&key, data.as_bytes(), Some(sig)).unwrap();
            serde_json::from_str(data).unwrap()
        })
        .collect();
    let allow = events
        .iter()
        .find(|e| e["decision"] == "allow" && e["event_type"] == "token_exchange")
        .expect("an allow event");
    assert_eq!(allow["evaluation_status"], "complete");
    assert_eq!(allow["zone_id"], w.zone);
    assert!(!allow["policy_set_version_id"].as_str().unwrap().is_empty());
    assert!(
        events
            .iter()
            .any(|e| e["evaluation_status"] == "scope_mismatch"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["evaluation_status"] == "exchange_denied")
    );
    workers.shutdown(StdDuration::from_secs(5)).await;
}
