//! The Admin API through its router on the in-memory store: the admin-token gate, zones,
//! applications, resources, providers, admin tokens, the list envelope and `/openapi.json`
//! (reference `control-plane.md` §3 and §7 checks 43, 44, 47; shapes from `http-bodies.md`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use caracal_control::{AdminApi, AdminStores};
use caracal_core::clock::FakeClock;
use caracal_core::ids::SequentialIds;
use caracal_core::secrets::{Keyring, provider_secret_config_ref, verify_client_secret};
use caracal_core::store::directory::{ApplicationStore, SecretStore};
use caracal_core::store::memory::MemoryStore;
use caracal_service::config::Secret;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const BOOT: &str = "boot-token-0123456789-0123456789-abcdef";
const KEK: &str = "8f2a6c1e9b3d4f5a7c8e0b1d2f3a4c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

struct World {
    router: axum::Router,
    store: Arc<MemoryStore>,
    keyring: Arc<Keyring>,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
    body: Value,
}

impl Answer {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

fn world() -> World {
    let clock = Arc::new(FakeClock::at_fixture_epoch());
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let keyring = Arc::new(Keyring::from_hex(KEK, None).unwrap());
    let api = AdminApi::new(
        AdminStores::from_store(store.clone()),
        keyring.clone(),
        Some(Secret::new(BOOT)),
        clock,
        Arc::new(SequentialIds::new()),
    );
    World {
        router: api.router(),
        store,
        keyring,
    }
}

impl World {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            text,
            body,
        }
    }

    async fn boot(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, Some(BOOT), body).await
    }

    async fn zone(&self, name: &str) -> String {
        let r = self
            .boot("POST", "/v1/zones", Some(json!({"name": name})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().unwrap().to_owned()
    }

    async fn token(&self, scope: &str, zone: Option<&str>, capability: &str) -> String {
        let mut body = json!({"name": "t", "scope": scope, "capability": capability});
        if let Some(z) = zone {
            body["zone_id"] = json!(z);
        }
        let r = self.boot("POST", "/v1/admin-tokens", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["token"].as_str().unwrap().to_owned()
    }

    async fn provider(&self, zone: &str) -> String {
        let r = self
            .boot(
                "POST",
                &format!("/v1/zones/{zone}/providers"),
                Some(json!({"name": "None", "kind": "none"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().unwrap().to_owned()
    }
}

// --- Authentication and the gate (check 43) --------------------------------------------------

#[tokio::test]
async fn missing_unknown_and_revoked_tokens_are_401() {
    let w = world();
    for token in [None, Some("cat_nope"), Some("")] {
        let r = w.call("GET", "/v1/zones", token, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.error(), "invalid_admin_token");
        assert!(r.body["requestId"].is_string());
    }
    let tok = w.token("global", None, "write").await;
    assert!(tok.starts_with("cat_"));
    assert_eq!(
        w.call("GET", "/v1/zones", Some(&tok), None).await.status,
        StatusCode::OK
    );
    let list = w.boot("GET", "/v1/admin-tokens", None).await;
    let id = list.body["items"][0]["id"].as_str().unwrap().to_owned();
    assert!(list.body["items"][0].get("token").is_none());
    assert!(!list.text.contains(&tok), "the token is never listed");
    let r = w
        .boot("DELETE", &format!("/v1/admin-tokens/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = w.call("GET", "/v1/zones", Some(&tok), None).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::UNAUTHORIZED, "invalid_admin_token")
    );
    let r = w
        .boot("DELETE", &format!("/v1/admin-tokens/{id}"), None)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::NOT_FOUND, "admin_token_not_found")
    );
}

#[tokio::test]
async fn capabilities_zone_binding_and_system_zone() {
    let w = world();
    let z1 = w.zone("One").await;
    let z2 = w.zone("Two").await;
    // Read token POSTing anything → 403 admin_token_read_only.
    let read = w.token("global", None, "read").await;
    let r = w
        .call("POST", "/v1/zones", Some(&read), Some(json!({"name": "x"})))
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::FORBIDDEN, "admin_token_read_only")
    );
    assert_eq!(
        w.call("GET", &format!("/v1/zones/{z1}"), Some(&read), None)
            .await
            .status,
        StatusCode::OK
    );
    // Approve token: reads only (and approval decisions).
    let approve = w.token("global", None, "approve").await;
    let r = w
        .call("DELETE", &format!("/v1/zones/{z1}"), Some(&approve), None)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::FORBIDDEN, "admin_token_approve_only")
    );
    // (A write token deciding an approval → approve_capability_required is enforced by the
    // gate once the approvals routes are mounted; the rule's classifier is unit-tested.)
    let write = w.token("global", None, "write").await;
    // Zone token on another zone → admin_token_zone_mismatch; on /v1/admin-tokens → 403.
    let zt = w.token("zone", Some(&z1), "write").await;
    let r = w
        .call(
            "GET",
            &format!("/v1/zones/{z2}/applications"),
            Some(&zt),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::FORBIDDEN, "admin_token_zone_mismatch")
    );
    let r = w
        .call(
            "GET",
            &format!("/v1/zones/{z1}/applications"),
            Some(&zt),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = w.call("GET", "/v1/admin-tokens", Some(&zt), None).await;
    assert_eq!(
        (r.status, r.error()),
        (
            StatusCode::FORBIDDEN,
            "admin_token_management_requires_global"
        )
    );
    let r = w
        .call("POST", "/v1/zones", Some(&zt), Some(json!({"name": "x"})))
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::FORBIDDEN, "admin_token_zone_mismatch")
    );
    let r = w.call("GET", "/v1/zones", Some(&zt), None).await;
    let ids: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![z1.as_str()], "a zone token sees only its zone");
    // System zone: reserved name refused to ordinary tokens, hidden from lists, read-only.
    let r = w
        .call(
            "POST",
            "/v1/zones",
            Some(&write),
            Some(json!({"name": "caracal.sys/ops"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::CONFLICT, "reserved_namespace")
    );
    let sys = w.zone("caracal.sys/platform").await;
    let list = w.boot("GET", "/v1/zones", None).await;
    assert!(!list.text.contains(&sys), "system zone hidden from lists");
    assert_eq!(
        w.boot("GET", &format!("/v1/zones/{sys}"), None)
            .await
            .status,
        StatusCode::OK
    );
    for (method, path, body) in [
        (
            "PATCH",
            format!("/v1/zones/{sys}"),
            Some(json!({"name": "x"})),
        ),
        ("DELETE", format!("/v1/zones/{sys}"), None),
        (
            "POST",
            format!("/v1/zones/{sys}/applications"),
            Some(json!({"name": "a", "registration_method": "managed"})),
        ),
    ] {
        let r = w.call(method, &path, Some(&write), body.clone()).await;
        assert_eq!(
            (r.status, r.error()),
            (StatusCode::FORBIDDEN, "system_zone_read_only"),
            "{method} {path}"
        );
        let r = w.boot(method, &path, body).await;
        assert_eq!(r.error(), "system_zone_read_only", "bootstrap too");
    }
}

#[tokio::test]
async fn headers_params_and_token_requests() {
    let w = world();
    let r = w.boot("GET", "/v1/zones", None).await;
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["referrer-policy"], "no-referrer");
    assert!(r.headers.contains_key("x-request-id"));
    let r = w.boot("GET", "/v1/zones/bad%20id", None).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_params")
    );
    for (body, code) in [
        (json!({"name": "t", "scope": "zone"}), "zone_id_required"),
        (
            json!({"name": "t", "scope": "global", "zone_id": "z"}),
            "zone_id_not_allowed_for_global",
        ),
        (
            json!({"name": "t", "scope": "global", "extra": 1}),
            "invalid_admin_token_request",
        ),
        (
            json!({"name": "", "scope": "global"}),
            "invalid_admin_token_request",
        ),
    ] {
        let r = w.boot("POST", "/v1/admin-tokens", Some(body)).await;
        assert_eq!((r.status, r.error()), (StatusCode::BAD_REQUEST, code));
    }
    let r = w
        .boot(
            "POST",
            "/v1/admin-tokens",
            Some(json!({"name": "t", "scope": "zone", "zone_id": "nozone"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::NOT_FOUND, "zone_not_found")
    );
    let r = w
        .boot(
            "POST",
            "/v1/admin-tokens",
            Some(json!({"name": "t", "scope": "global"})),
        )
        .await;
    assert_eq!(r.body["capability"], "write");
    assert_eq!(r.body["zone_id"], Value::Null);
    assert_eq!(r.body["created_by"], "admin:bootstrap");
}

// --- Zones ------------------------------------------------------------------------------------

#[tokio::test]
async fn zones_create_slug_patch_archive() {
    let w = world();
    let r = w
        .boot("POST", "/v1/zones", Some(json!({"name": "  My Zone "})))
        .await;
    assert_eq!(r.body["name"], "My Zone");
    assert_eq!(r.body["slug"], "my-zone");
    assert_eq!(r.body["dcr_enabled"], false);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = w
        .boot("POST", "/v1/zones", Some(json!({"name": "My Zone"})))
        .await;
    assert_eq!(r.body["slug"], "my-zone-2");
    let r = w
        .boot(
            "POST",
            "/v1/zones",
            Some(json!({"name": "x", "slug": "my-zone"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::CONFLICT, "zone_slug_conflict")
    );
    for body in [
        json!({"name": ""}),
        json!({"name": "a", "slug": "Bad"}),
        json!({"name": "a", "x": 1}),
        json!({"name": "a".repeat(121)}),
    ] {
        let r = w.boot("POST", "/v1/zones", Some(body)).await;
        assert_eq!(
            (r.status, r.error()),
            (StatusCode::BAD_REQUEST, "invalid_zone")
        );
    }
    let r = w
        .boot("PATCH", &format!("/v1/zones/{id}"), Some(json!({})))
        .await;
    assert_eq!(r.error(), "no_fields");
    let r = w
        .boot(
            "PATCH",
            &format!("/v1/zones/{id}"),
            Some(json!({"dcr_shutdown": "keep_live"})),
        )
        .await;
    assert_eq!(r.error(), "dcr_shutdown_not_applicable");
    let r = w
        .boot(
            "PATCH",
            &format!("/v1/zones/{id}"),
            Some(json!({"name": "Renamed", "dcr_enabled": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.body["name"].as_str(), r.body["dcr_enabled"].as_bool()),
        (Some("Renamed"), Some(true))
    );
    assert_eq!(r.body["updated_by"], "admin:bootstrap");
    let r = w
        .boot("GET", &format!("/v1/zones/{id}/dcr-status"), None)
        .await;
    assert_eq!(
        r.body,
        json!({"id": id, "dcr_enabled": true, "live_dcr_applications": 0})
    );
    assert_eq!(
        w.boot("DELETE", &format!("/v1/zones/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let r = w.boot("DELETE", &format!("/v1/zones/{id}"), None).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::NOT_FOUND, "zone_not_found")
    );
    assert_eq!(
        w.boot("GET", &format!("/v1/zones/{id}"), None)
            .await
            .error(),
        "zone_not_found"
    );
}

#[tokio::test]
async fn list_envelope_and_cursor() {
    let w = world();
    for i in 0..5 {
        w.zone(&format!("z{i}")).await;
    }
    let r = w.boot("GET", "/v1/zones?limit=2", None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = r.body["next_cursor"].as_str().map(str::to_owned);
    seen.extend(
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|z| z["name"].as_str().unwrap().to_owned()),
    );
    while let Some(c) = cursor {
        let r = w
            .boot("GET", &format!("/v1/zones?limit=2&cursor={c}"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        seen.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|z| z["name"].as_str().unwrap().to_owned()),
        );
        cursor = r.body["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(
        seen,
        vec!["z4", "z3", "z2", "z1", "z0"],
        "newest first, each once"
    );
    let r = w.boot("GET", "/v1/zones", None).await;
    assert_eq!(r.body["next_cursor"], Value::Null);
    for q in ["limit=0", "limit=501", "limit=x", "status=gone"] {
        let r = w.boot("GET", &format!("/v1/zones?{q}"), None).await;
        assert_eq!(
            (r.status, r.error()),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{q}"
        );
    }
    let r = w.boot("GET", "/v1/zones?cursor=not-a-cursor", None).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_cursor")
    );
}

// --- Applications (check 47) ------------------------------------------------------------------

#[tokio::test]
async fn application_secret_is_returned_once_and_rotates() {
    let w = world();
    let z = w.zone("apps").await;
    let base = format!("/v1/zones/{z}/applications");
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"name": "Agent", "registration_method": "managed", "traits": ["team:a"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let secret = r.body["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cs_"));
    assert!(r.body.get("traits").is_none() && r.body.get("archived_at").is_none());
    assert_eq!(r.body["registration_method"], "managed");
    let id = r.body["id"].as_str().unwrap().to_owned();
    let stored = w.store.get_application(&z, &id).await.unwrap().unwrap();
    let hash = stored.client_secret_hash.clone().unwrap();
    assert!(hash.starts_with("argon2id$") && !hash.contains(&secret));
    assert!(verify_client_secret(&hash, &secret));
    // Detail and list never carry the secret; traits only for global callers.
    let r = w.boot("GET", &format!("{base}/{id}"), None).await;
    assert!(r.body.get("client_secret").is_none());
    assert_eq!(r.body["traits"], json!(["team:a"]));
    assert!(!r.text.contains(&secret));
    let zt = w.token("zone", Some(&z), "read").await;
    let r = w
        .call("GET", &format!("{base}/{id}"), Some(&zt), None)
        .await;
    assert!(r.body.get("traits").is_none());
    let r = w.boot("GET", &base, None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert!(!r.text.contains(&secret));
    // Rotate: new secret, the old one stops verifying.
    let r = w
        .boot("POST", &format!("{base}/{id}/rotate-secret"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let rotated = r.body["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(rotated, secret);
    let hash = w
        .store
        .get_application(&z, &id)
        .await
        .unwrap()
        .unwrap()
        .client_secret_hash
        .unwrap();
    assert!(verify_client_secret(&hash, &rotated) && !verify_client_secret(&hash, &secret));
    // Errors.
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"name": "agent", "registration_method": "managed"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::CONFLICT, "application_name_taken")
    );
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"name": "B", "registration_method": "dcr"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_application")
    );
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"name": "caracal.sys/x", "registration_method": "managed"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::CONFLICT, "reserved_namespace")
    );
    let r = w
        .boot(
            "POST",
            "/v1/zones/nozone/applications",
            Some(json!({"name": "B", "registration_method": "managed"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::NOT_FOUND, "zone_not_found")
    );
    let zw = w.token("zone", Some(&z), "write").await;
    let r = w
        .call(
            "POST",
            &base,
            Some(&zw),
            Some(json!({"name": "C", "registration_method": "managed", "traits": ["control:x"]})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::FORBIDDEN, "trait_forbidden")
    );
    let r = w
        .boot(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"client_secret": "short"})),
        )
        .await;
    assert_eq!(r.error(), "invalid_application");
    let chosen = "x".repeat(40);
    let r = w
        .boot(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"name": "Agent 2", "client_secret": chosen})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.get("client_secret").is_none());
    // Archive.
    assert_eq!(
        w.boot("DELETE", &format!("{base}/{id}"), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        w.boot("GET", &format!("{base}/{id}"), None).await.error(),
        "application_not_found"
    );
    assert_eq!(
        w.boot("POST", &format!("{base}/{id}/rotate-secret"), None)
            .await
            .error(),
        "application_not_found"
    );
    let r = w
        .boot("GET", &format!("{base}?status=archived"), None)
        .await;
    assert_eq!(r.body["items"][0]["id"], id.as_str());
}

// --- Resources (check 44) ---------------------------------------------------------------------

#[tokio::test]
async fn resource_rules() {
    let w = world();
    let z = w.zone("res").await;
    let p = w.provider(&z).await;
    let base = format!("/v1/zones/{z}/resources");
    let good = json!({"name": "Pipernet", "scopes": ["pipernet:read", "pipernet:write"],
        "credential_provider_id": p, "upstream_url": "https://pipernet.example.com",
        "operations": [{"method": "get", "path": " /items ", "scope": "pipernet:read"}]});
    let r = w.boot("POST", &base, Some(good.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["identifier"], "resource://pipernet");
    assert_eq!(
        r.body["operations"],
        json!([{"method": "GET", "path": "/items", "scope": "pipernet:read"}])
    );
    assert_eq!(r.body["operation_enforcement"], "enforced");
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = w.boot("POST", &base, Some(good.clone())).await;
    assert_eq!(
        r.body["identifier"], "resource://pipernet-2",
        "derived identifiers get suffixes"
    );
    let mut no_provider = good.clone();
    no_provider
        .as_object_mut()
        .unwrap()
        .remove("credential_provider_id");
    let r = w.boot("POST", &base, Some(no_provider)).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "credential_provider_required")
    );
    let mut no_upstream = good.clone();
    no_upstream.as_object_mut().unwrap().remove("upstream_url");
    let r = w.boot("POST", &base, Some(no_upstream)).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "upstream_url_required")
    );
    let mut bad_op = good.clone();
    bad_op["operations"] = json!([{"method": "GET", "path": "/x", "scope": "other"}]);
    let r = w.boot("POST", &base, Some(bad_op)).await;
    assert_eq!(
        (r.status, r.error()),
        (
            StatusCode::BAD_REQUEST,
            "operation_scope_not_in_resource_scopes"
        )
    );
    let mut prov_id = good.clone();
    prov_id["identifier"] = json!("provider://x");
    let r = w.boot("POST", &base, Some(prov_id)).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_resource_identifier")
    );
    let mut dup = good.clone();
    dup["identifier"] = json!("resource://pipernet");
    let r = w.boot("POST", &base, Some(dup)).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::CONFLICT, "resource_identifier_conflict")
    );
    let mut missing_provider = good.clone();
    missing_provider["credential_provider_id"] = json!("nope");
    let r = w.boot("POST", &base, Some(missing_provider)).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::NOT_FOUND, "provider_not_found")
    );
    let mut no_scopes = good.clone();
    no_scopes.as_object_mut().unwrap().remove("scopes");
    assert_eq!(
        w.boot("POST", &base, Some(no_scopes)).await.error(),
        "invalid_resource"
    );
    // PATCH merges, then re-checks routing and operations.
    let r = w
        .boot(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"upstream_url": null})),
        )
        .await;
    assert_eq!(r.error(), "upstream_url_required");
    let r = w
        .boot(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"scopes": ["pipernet:write"]})),
        )
        .await;
    assert_eq!(r.error(), "operation_scope_not_in_resource_scopes");
    let r = w
        .boot(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"operation_enforcement": "transport_uniform"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["operation_enforcement"], "transport_uniform");
    assert_eq!(
        w.boot("PATCH", &format!("{base}/{id}"), Some(json!({})))
            .await
            .error(),
        "no_fields"
    );
    assert_eq!(
        w.boot("DELETE", &format!("{base}/{id}"), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        w.boot("DELETE", &format!("{base}/{id}"), None)
            .await
            .error(),
        "resource_not_found"
    );
    // An archived identifier is never reused.
    let r = w.boot("POST", &base, Some(good)).await;
    assert_eq!(r.body["identifier"], "resource://pipernet-3");
}

// --- Providers --------------------------------------------------------------------------------

#[tokio::test]
async fn provider_secrets_are_sealed_and_never_returned() {
    let w = world();
    let z = w.zone("prov").await;
    let base = format!("/v1/zones/{z}/providers");
    let api_key = "sk-live-very-secret-value";
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"name": "Piper API", "kind": "api_key",
            "config_json": {"header_name": "X-Api-Key", "api_key": api_key}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(!r.text.contains(api_key));
    assert_eq!(r.body["identifier"], "provider://piper-api");
    assert_eq!(
        r.body["config_json"],
        json!({"auth_location": "header", "header_name": "X-Api-Key"})
    );
    assert_eq!(r.body["secret_config_keys"], json!(["api_key"]));
    let id = r.body["id"].as_str().unwrap().to_owned();
    let reference = provider_secret_config_ref(&z, &id);
    let sealed = w.store.get_secret(&reference).await.unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&sealed.envelope).contains(api_key));
    assert!(sealed.envelope.starts_with(b"CSS1"));
    let doc: Value =
        serde_json::from_slice(&w.keyring.open(&reference, &sealed.envelope).unwrap()).unwrap();
    assert_eq!(doc, json!({"api_key": api_key}));
    for path in [format!("{base}/{id}"), base.clone()] {
        let r = w.boot("GET", &path, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(!r.text.contains(api_key), "{path}");
    }
    // PATCH on the same kind without secrets keeps them; with one replaces the document.
    let r = w
        .boot(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"config_json": {"header_name": "X-Key"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["secret_config_keys"], json!(["api_key"]));
    assert_eq!(
        w.store
            .get_secret(&reference)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    let r = w
        .boot(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"config_json": {"header_name": "X-Key", "api_key": "new-value"}})),
        )
        .await;
    assert!(!r.text.contains("new-value"));
    assert_eq!(
        w.store
            .get_secret(&reference)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    // Kind change needs a config; to `none` the credential goes.
    let r = w
        .boot(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"kind": "none"})),
        )
        .await;
    assert_eq!(r.error(), "provider_config_required");
    let r = w
        .boot(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"kind": "bearer_token", "config_json": {}})),
        )
        .await;
    assert_eq!(r.error(), "invalid_provider_config");
    let r = w
        .boot(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"kind": "none", "config_json": {}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["secret_config_keys"], json!([]));
    assert!(w.store.get_secret(&reference).await.unwrap().is_none());
    // Other kinds.
    let token = "tok-abcdef-123456";
    let r = w
        .boot(
            "POST",
            &base,
            Some(
                json!({"identifier": "provider://bearer", "kind": "bearer_token",
        "config_json": {"bearer_token": token, "allowed_token_hosts": ["API.example.com"]}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(!r.text.contains(token));
    assert_eq!(r.body["name"], "provider://bearer");
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"name": "basic", "kind": "http_basic",
        "config_json": {"username": "u", "password": "pw-123"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(!r.text.contains("pw-123"));
    assert_eq!(r.body["secret_config_keys"], json!(["password"]));
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"name": "q", "kind": "api_key",
        "config_json": {"auth_location": "query", "query_param_name": "key", "api_key": "k"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Errors.
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"name": "n", "kind": "none", "config_json": {"x": 1}})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_provider_config")
    );
    assert_eq!(
        r.body["error_description"],
        "none provider config has unsupported keys: x"
    );
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"name": "n", "kind": "none", "check": true})),
        )
        .await;
    assert_eq!(r.error(), "provider_check_unsupported");
    let r = w.boot("POST", &base, Some(json!({"kind": "none"}))).await;
    assert_eq!(r.error(), "invalid_provider");
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"identifier": "provider://Bad", "kind": "none"})),
        )
        .await;
    assert_eq!(r.error(), "invalid_provider_identifier");
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"identifier": "provider://caracal-sys-x", "kind": "none"})),
        )
        .await;
    assert_eq!(r.error(), "reserved_namespace");
    let r = w
        .boot(
            "POST",
            &base,
            Some(json!({"identifier": "provider://bearer", "kind": "none"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::CONFLICT, "provider_identifier_conflict")
    );
    // Archive deletes the sealed document.
    let r = w.boot("GET", &format!("{base}?limit=500"), None).await;
    let basic = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "http_basic")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let basic_ref = provider_secret_config_ref(&z, &basic);
    assert!(w.store.get_secret(&basic_ref).await.unwrap().is_some());
    assert_eq!(
        w.boot("DELETE", &format!("{base}/{basic}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(w.store.get_secret(&basic_ref).await.unwrap().is_none());
    assert_eq!(
        w.boot("DELETE", &format!("{base}/{basic}"), None)
            .await
            .error(),
        "provider_not_found"
    );
}

// --- OpenAPI ------------------------------------------------------------------------------------

/// Every route this surface serves.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/zones"),
    ("post", "/v1/zones"),
    ("get", "/v1/zones/{id}"),
    ("patch", "/v1/zones/{id}"),
    ("delete", "/v1/zones/{id}"),
    ("get", "/v1/zones/{id}/dcr-status"),
    ("get", "/v1/zones/{zone_id}/applications"),
    ("post", "/v1/zones/{zone_id}/applications"),
    ("get", "/v1/zones/{zone_id}/applications/{id}"),
    ("patch", "/v1/zones/{zone_id}/applications/{id}"),
    ("delete", "/v1/zones/{zone_id}/applications/{id}"),
    (
        "post",
        "/v1/zones/{zone_id}/applications/{id}/rotate-secret",
    ),
    ("get", "/v1/zones/{zone_id}/resources"),
    ("post", "/v1/zones/{zone_id}/resources"),
    ("get", "/v1/zones/{zone_id}/resources/{id}"),
    ("patch", "/v1/zones/{zone_id}/resources/{id}"),
    ("delete", "/v1/zones/{zone_id}/resources/{id}"),
    ("get", "/v1/zones/{zone_id}/providers"),
    ("post", "/v1/zones/{zone_id}/providers"),
    ("get", "/v1/zones/{zone_id}/providers/{id}"),
    ("patch", "/v1/zones/{zone_id}/providers/{id}"),
    ("delete", "/v1/zones/{zone_id}/providers/{id}"),
    ("get", "/v1/admin-tokens"),
    ("post", "/v1/admin-tokens"),
    ("delete", "/v1/admin-tokens/{id}"),
    ("get", "/v1/zones/{zone_id}/policies"),
    ("post", "/v1/zones/{zone_id}/policies"),
    ("get", "/v1/zones/{zone_id}/policies/{id}"),
    ("delete", "/v1/zones/{zone_id}/policies/{id}"),
    ("post", "/v1/zones/{zone_id}/policies/{id}/versions"),
    ("get", "/v1/zones/{zone_id}/policy-sets"),
    ("post", "/v1/zones/{zone_id}/policy-sets"),
    ("get", "/v1/zones/{zone_id}/policy-sets/{id}"),
    ("delete", "/v1/zones/{zone_id}/policy-sets/{id}"),
    ("get", "/v1/zones/{zone_id}/policy-sets/{id}/versions"),
    ("post", "/v1/zones/{zone_id}/policy-sets/{id}/versions"),
    (
        "get",
        "/v1/zones/{zone_id}/policy-sets/{id}/versions/{version_id}",
    ),
    ("post", "/v1/zones/{zone_id}/policy-sets/{id}/activate"),
    (
        "get",
        "/v1/zones/{zone_id}/policy-sets/{id}/activation-status",
    ),
    ("post", "/v1/zones/{zone_id}/policy-sets/{id}/simulate"),
    ("get", "/v1/zones/{zone_id}/approvals"),
    ("get", "/v1/zones/{zone_id}/approvals/{id}"),
    ("post", "/v1/zones/{zone_id}/approvals/{id}/approve"),
    ("post", "/v1/zones/{zone_id}/approvals/{id}/reject"),
    ("post", "/v1/zones/{zone_id}/subjects/revoke"),
    ("get", "/v1/zones/{zone_id}/admin-audit"),
    ("get", "/v1/admin-audit"),
];

#[tokio::test]
async fn openapi_lists_every_route_served() {
    let w = world();
    let r = w.call("GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = r.body["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                documented.push((method.clone(), path.clone()));
            }
        }
    }
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    documented.sort();
    expected.sort();
    assert_eq!(documented, expected);
    // Every documented operation is served (not the unknown-route 404, not a 405).
    for (method, path) in &documented {
        let concrete = path
            .replace("{zone_id}", "z")
            .replace("{id}", "x")
            .replace("{version_id}", "v");
        let r = w
            .boot(&method.to_uppercase(), &concrete, Some(json!({})))
            .await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(r.error(), "not_found", "{method} {path}");
    }
    assert!(r.body["components"]["securitySchemes"]["admin_token"].is_object());
    assert_eq!(
        caracal_control::admin::openapi().paths.paths.len(),
        paths.len()
    );
    let r = w.call("GET", "/v1/nothing", Some(BOOT), None).await;
    assert_eq!(r.error(), "not_found");
}
