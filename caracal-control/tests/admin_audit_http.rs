//! The admin audit chain through the Admin API on the in-memory store: every successful
//! mutation is recorded before its response (actor, action, zone, entity, status, request
//! id), reads and refusals are not, the zone and global lists page by `chain_seq`, the chain
//! verifies under the configured key, and a failing audit store turns the response into
//! `500 audit_unavailable` (reference `audit-streams-schema.md` §2.14).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use caracal_control::admin::{AdminParts, ApprovalPlane};
use caracal_control::{AdminApi, AdminStores};
use caracal_core::audit::AuditHmacKey;
use caracal_core::clock::FakeClock;
use caracal_core::ids::SequentialIds;
use caracal_core::secrets::Keyring;
use caracal_core::store::admin_audit::{AdminAuditEntry, AdminAuditRecord, AdminAuditStore};
use caracal_core::store::directory::ZoneStore;
use caracal_core::store::memory::MemoryStore;
use caracal_core::store::{StoreError, StoreResult};
use caracal_service::config::Secret;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const BOOT: &str = "boot-token-0123456789-0123456789-abcdef";
const KEK: &str = "8f2a6c1e9b3d4f5a7c8e0b1d2f3a4c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

/// An audit store that is down.
struct Down;

#[async_trait]
impl AdminAuditStore for Down {
    async fn append_admin_audit(
        &self,
        _: &AdminAuditEntry,
        _: Option<&AuditHmacKey>,
    ) -> StoreResult<AdminAuditRecord> {
        Err(StoreError::Unavailable {
            retryable: true,
            message: "down".into(),
        })
    }
    async fn list_admin_audit(
        &self,
        _: Option<&str>,
        _: i64,
        _: u32,
    ) -> StoreResult<Vec<AdminAuditRecord>> {
        Ok(Vec::new())
    }
}

fn key() -> AuditHmacKey {
    AuditHmacKey::from_hex(&"0123456789abcdef".repeat(4)).unwrap()
}

fn api(store: &Arc<MemoryStore>, audit_down: bool) -> Arc<AdminApi> {
    let clock = Arc::new(FakeClock::at_fixture_epoch());
    let mut stores = AdminStores::from_store(store.clone());
    if audit_down {
        stores.admin_audit = Arc::new(Down);
    }
    AdminApi::from_parts(AdminParts {
        stores,
        keyring: Arc::new(Keyring::from_hex(KEK, None).unwrap()),
        bootstrap: Some(Secret::new(BOOT)),
        clock,
        ids: Arc::new(SequentialIds::new()),
        plane: ApprovalPlane::standalone(),
        audit_key: Some(key()),
    })
}

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let b = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("x-request-id", "req-audit-1");
    let req = match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn mutations_are_chained_before_the_response() {
    let store = Arc::new(MemoryStore::new());
    let api = api(&store, false);
    let router = api.router();
    let (s, zone) = call(
        &router,
        "POST",
        "/v1/zones",
        BOOT,
        Some(json!({"name": "Audit"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{zone}");
    let zone_id = zone["id"].as_str().unwrap().to_owned();
    let apps = format!("/v1/zones/{zone_id}/applications");
    let (s, app) = call(
        &router,
        "POST",
        &apps,
        BOOT,
        Some(json!({"name": "a1", "registration_method": "managed"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{app}");
    let app_id = app["id"].as_str().unwrap().to_owned();
    // A read and a refusal are not recorded.
    let (s, _) = call(&router, "GET", &apps, BOOT, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&router, "POST", &apps, BOOT, Some(json!({"nope": 1}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(&router, "DELETE", &format!("{apps}/{app_id}"), BOOT, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let (s, page) = call(
        &router,
        "GET",
        &format!("/v1/zones/{zone_id}/admin-audit?limit=1"),
        BOOT,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let first = &page["items"][0];
    assert_eq!(first["actor_id"], "admin:bootstrap");
    assert_eq!(first["actor_name"], "bootstrap");
    assert_eq!(first["actor_scope"], "global");
    assert_eq!(first["action"], format!("POST {apps}"));
    assert_eq!(first["zone_id"], zone_id.as_str());
    assert_eq!(first["entity_type"], "application");
    assert_eq!(first["entity_id"], app_id.as_str());
    assert_eq!(first["status_code"], 201);
    assert_eq!(first["request_id"], "req-audit-1");
    assert_eq!(first["chain_seq"], 1);
    assert!(first["prev_content_sha256"].is_null());
    assert_eq!(page["next_cursor"], "1");
    let (_, rest) = call(
        &router,
        "GET",
        &format!("/v1/zones/{zone_id}/admin-audit?cursor=1"),
        BOOT,
        None,
    )
    .await;
    let rest = rest["items"].as_array().unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["method"], "DELETE");
    assert_eq!(rest[0]["status_code"], 204);
    assert_eq!(rest[0]["prev_content_sha256"], first["content_sha256"]);
    let (s, bad) = call(
        &router,
        "GET",
        &format!("/v1/zones/{zone_id}/admin-audit?cursor=x"),
        BOOT,
        None,
    )
    .await;
    assert_eq!(
        (s, bad["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_cursor"))
    );

    // The zone create is on the global chain.
    let (s, global) = call(&router, "GET", "/v1/admin-audit", BOOT, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(global["items"][0]["entity_type"], "zone");
    assert_eq!(global["items"][0]["entity_id"], zone_id.as_str());
    assert!(global["items"][0]["zone_id"].is_null());

    // Both chains verify under the key.
    assert!(api.audit().verify(Some(&zone_id)).await.unwrap().is_clean());
    assert!(api.audit().verify(None).await.unwrap().is_clean());

    // A zone token may read its zone's chain, not the global one.
    let (s, tok) = call(
        &router,
        "POST",
        "/v1/admin-tokens",
        BOOT,
        Some(json!({"name": "zt", "scope": "zone", "zone_id": zone_id, "capability": "read"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{tok}");
    let zt = tok["token"].as_str().unwrap();
    let (s, _) = call(
        &router,
        "GET",
        &format!("/v1/zones/{zone_id}/admin-audit"),
        zt,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&router, "GET", "/v1/admin-audit", zt, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The token create is on the global chain with its own id as the entity.
    let (_, global) = call(&router, "GET", "/v1/admin-audit", BOOT, None).await;
    let last = global["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["entity_type"], "admin_token");
    assert_eq!(last["entity_id"], tok["id"]);
}

#[tokio::test]
async fn a_failed_append_answers_audit_unavailable() {
    let store = Arc::new(MemoryStore::new());
    let router = api(&store, true).router();
    let (s, body) = call(
        &router,
        "POST",
        "/v1/zones",
        BOOT,
        Some(json!({"name": "Lost"})),
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"], "audit_unavailable");
    assert_eq!(body["requestId"], "req-audit-1");
    // The reference's rule: the mutation itself was applied.
    let zones = store
        .list_zones(&caracal_core::store::PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(zones.items.len(), 1);
    assert_eq!(zones.items[0].name, "Lost");
    // Reads still work while the chain is down.
    let (s, _) = call(&router, "GET", "/v1/zones", BOOT, None).await;
    assert_eq!(s, StatusCode::OK);
}
