//! The Admin API's policies, policy sets, approvals and subject kill switch through its router
//! on the in-memory store (reference `control-plane.md` §3, §4 and §7 checks 34–37, 41, 45;
//! shapes from `http-bodies.md` §5–§7, §9).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use caracal_control::admin::ApprovalPlane;
use caracal_control::{AdminApi, AdminStores};
use caracal_core::audit::sink::MemoryAuditSink;
use caracal_core::clock::FakeClock;
use caracal_core::exchange::approval::ApprovalWaiters;
use caracal_core::ids::SequentialIds;
use caracal_core::model::approval::{
    Approval, ApprovalState, ApproverClass, HUMAN_APPROVAL, PrivacyMode,
};
use caracal_core::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use caracal_core::secrets::Keyring;
use caracal_core::store::approvals::ApprovalStore;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::memory::MemoryStore;
use caracal_core::store::outbox::OutboxStore;
use caracal_core::store::policy::PolicyStore;
use caracal_service::config::Secret;
use chrono::Duration;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

const BOOT: &str = "boot-token-0123456789-0123456789-abcdef";
const KEK: &str = "8f2a6c1e9b3d4f5a7c8e0b1d2f3a4c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

const APPS: &str =
    "# caracal:data-document\npackage caracal.authz\n\napp_ids := {\"files\": \"app-1\"}\n";
const GRANTS_READ: &str = "# caracal:data-document\npackage caracal.authz\n\ngrants := {\"resource://api\": {\"application\": \"files\", \"roles\": {\"files.read\": [\"read\"]}}}\n";
const GRANTS_NONE: &str = "# caracal:data-document\npackage caracal.authz\n\ngrants := {\"resource://api\": {\"application\": \"files\", \"roles\": {\"files.read\": []}}}\n";
/// Another document defining `grants`: merging it with [`GRANTS_READ`] clashes.
const GRANTS_OTHER: &str = "# caracal:data-document\npackage caracal.authz\n\ngrants := {\"resource://other\": {\"application\": \"files\", \"roles\": {}}}\n";

struct World {
    router: axum::Router,
    store: Arc<MemoryStore>,
    clock: Arc<FakeClock>,
    audit: Arc<MemoryAuditSink>,
}

struct Answer {
    status: StatusCode,
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
    let audit = Arc::new(MemoryAuditSink::new());
    let api = AdminApi::with_plane(
        AdminStores::from_store(store.clone()),
        keyring,
        Some(Secret::new(BOOT)),
        clock.clone(),
        Arc::new(SequentialIds::new()),
        ApprovalPlane {
            waiters: Arc::new(ApprovalWaiters::new()),
            audit: audit.clone(),
        },
    );
    World {
        router: api.router(),
        store,
        clock,
        audit,
    }
}

impl World {
    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
        let b = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, text, body }
    }

    async fn boot(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, BOOT, body).await
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

    /// Create a policy; returns (policy id, version 1 id).
    async fn policy(&self, zone: &str, name: &str, content: &str) -> (String, String) {
        let r = self
            .boot(
                "POST",
                &format!("/v1/zones/{zone}/policies"),
                Some(json!({"name": name, "content": content})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        (
            r.body["id"].as_str().unwrap().to_owned(),
            r.body["version_id"].as_str().unwrap().to_owned(),
        )
    }

    async fn set(&self, zone: &str, name: &str) -> String {
        let r = self
            .boot(
                "POST",
                &format!("/v1/zones/{zone}/policy-sets"),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().unwrap().to_owned()
    }

    async fn set_version(&self, zone: &str, set: &str, versions: &[&str]) -> Answer {
        let manifest: Vec<Value> = versions
            .iter()
            .map(|v| json!({"policy_version_id": v}))
            .collect();
        self.boot(
            "POST",
            &format!("/v1/zones/{zone}/policy-sets/{set}/versions"),
            Some(json!({"manifest": manifest})),
        )
        .await
    }

    async fn activate(&self, zone: &str, set: &str, version: &str) -> Answer {
        self.boot(
            "POST",
            &format!("/v1/zones/{zone}/policy-sets/{set}/activate"),
            Some(json!({"version_id": version})),
        )
        .await
    }
}

/// The reference's interop policy input as a delegated mint (no subject claims) in `zone`.
fn mint_input(zone: &str) -> Value {
    json!({
        "schema_version": "2026-05-20",
        "principal": {"type": "Application", "id": "app-1", "zone_id": zone,
            "registration_method": "dcr", "agent_session_id": "session-child",
            "lifecycle": "task", "labels": ["files.read"]},
        "resource": {"type": "http", "id": "resource-1", "identifier": "resource://api",
            "scopes": ["read", "write"]},
        "action": {"id": "read"},
        "session": {"id": "authority-record-1"},
        "delegation_edge": {"id": "delegation-1", "source_session_id": "session-parent",
            "target_session_id": "session-child", "issuer_application_id": "app-parent",
            "receiver_application_id": "app-1", "resource_id": "resource-1",
            "scopes": ["read"], "edge_version": 1, "path": ["delegation-1"],
            "graph_epoch": 7, "constraints_json": {"max_cost_usd": 5}},
        "context": {"actor_claims": {"caracal_client_id": "app-1"},
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "session_id": "authority-record-1", "agent_session_id": "session-child",
            "delegation_edge_id": "delegation-1", "challenge_resolved": false,
            "requested_scopes": ["read"]}
    })
}

// ------------------------------------------------------------------------------ policies

#[tokio::test]
async fn policies_are_validated_versioned_and_listed() {
    let w = world();
    let z = w.zone("Policies").await;
    let path = format!("/v1/zones/{z}/policies");

    // §7.34: each content violation is 422 invalid_rego with the violation as description.
    for (content, violation) in [
        (
            "package caracal.authz\n\napp_ids := {}\n",
            "must_be_data_document",
        ),
        (
            "# caracal:data-document\npackage caracal.authz\n\nresult := {\"decision\": \"allow\"}\n",
            "data_document_must_not_define_result",
        ),
        (
            "# caracal:data-document\npackage caracal.authz\n\nallow := true\n",
            "data_document_rule_not_allowed:allow",
        ),
        (
            "# caracal:data-document\npackage caracal.authz\n\napp_ids := http.send({})\n",
            "forbidden_builtin:http.send",
        ),
        (
            "# caracal:data-document\npackage other\n\napp_ids := {}\n",
            "must_use_package_caracal_authz",
        ),
    ] {
        let r = w
            .boot(
                "POST",
                &path,
                Some(json!({"name": "bad", "content": content})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.error(), "invalid_rego");
        assert_eq!(r.body["error_description"], violation);
    }
    // Body shape, reserved namespace, unknown zone.
    let r = w.boot("POST", &path, Some(json!({"name": "x"}))).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
    let r = w
        .boot(
            "POST",
            &path,
            Some(json!({"name": "caracal.sys/x", "content": APPS})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::CONFLICT, "reserved_namespace")
    );
    let r = w
        .boot(
            "POST",
            "/v1/zones/nope/policies",
            Some(json!({"name": "x", "content": APPS})),
        )
        .await;
    assert_eq!(r.error(), "zone_not_found");

    // Create: version 1 with its summary.
    let r = w
        .boot(
            "POST",
            &path,
            Some(json!({"name": "grants", "description": "d", "content": GRANTS_READ})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["zone_id"], z.as_str());
    assert_eq!(r.body["description"], "d");
    assert_eq!(r.body["version"]["version"], 1);
    assert_eq!(r.body["version"]["id"], r.body["version_id"]);
    assert_eq!(
        r.body["version"]["content_sha256"],
        caracal_core::model::policy_set::content_sha256(GRANTS_READ)
    );
    assert_eq!(r.body["version"]["schema_version"], "2026-05-20");
    let r = w
        .boot(
            "POST",
            &path,
            Some(json!({"name": "grants", "content": GRANTS_READ})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

    // Add a version: max + 1; bad content refused.
    let r = w
        .boot(
            "POST",
            &format!("{path}/{id}/versions"),
            Some(json!({"content": GRANTS_NONE})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["version_id"], r.body["id"]);
    assert_eq!(r.body["policy_id"], id.as_str());
    let r = w
        .boot(
            "POST",
            &format!("{path}/{id}/versions"),
            Some(json!({"content": "nope"})),
        )
        .await;
    assert_eq!(r.error(), "invalid_rego");
    let r = w
        .boot(
            "POST",
            &format!("{path}/missing/versions"),
            Some(json!({"content": APPS})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::NOT_FOUND, "policy_not_found")
    );

    // Read: the row plus every version, newest first, with content.
    let r = w.boot("GET", &format!("{path}/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "grants");
    assert_eq!(r.body["created_by"], "admin:bootstrap");
    let versions = r.body["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["version"], 2);
    assert_eq!(versions[0]["content"], GRANTS_NONE);
    assert_eq!(versions[1]["created_by"], "admin:bootstrap");

    // List, then archive.
    w.policy(&z, "apps", APPS).await;
    let r = w.boot("GET", &format!("{path}?limit=1"), None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert!(r.body["next_cursor"].is_string());
    let r = w.boot("GET", &path, None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = w.boot("DELETE", &format!("{path}/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = w.boot("GET", &format!("{path}/{id}"), None).await;
    assert_eq!(r.error(), "policy_not_found");
    let r = w.boot("DELETE", &format!("{path}/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn set_versions_are_checked_and_compiled() {
    let w = world();
    let z = w.zone("Sets").await;
    let other = w.zone("Other").await;
    let (_, apps) = w.policy(&z, "apps", APPS).await;
    let (_, grants) = w.policy(&z, "grants", GRANTS_READ).await;
    let (_, clash) = w.policy(&z, "clash", GRANTS_OTHER).await;
    let (_, foreign) = w.policy(&other, "apps", APPS).await;
    let set = w.set(&z, "main").await;

    // The create answer has no active_version_id; a duplicate name conflicts.
    let r = w
        .boot("GET", &format!("/v1/zones/{z}/policy-sets/{set}"), None)
        .await;
    assert_eq!(r.body["active_version_id"], Value::Null);
    let r = w
        .boot(
            "POST",
            &format!("/v1/zones/{z}/policy-sets"),
            Some(json!({"name": "main"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::CONFLICT, "policy_set_name_conflict")
    );

    // §7.35: duplicates and cross-zone versions are contract errors; a clash is a bundle error.
    let r = w.set_version(&z, &set, &[&apps, &apps]).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy_contract")
    );
    assert_eq!(
        r.body["error_description"],
        "policy set manifest contains duplicate policy_version_id entries"
    );
    let r = w.set_version(&z, &set, &[&apps, &foreign]).await;
    assert_eq!(r.error(), "invalid_policy_contract");
    let r = w.set_version(&z, &set, &[&grants, &clash]).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy_bundle")
    );
    let r = w.set_version(&z, &set, &[]).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
    let r = w.set_version(&z, "missing", &[&apps]).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::NOT_FOUND, "policy_set_not_found")
    );

    let r = w.set_version(&z, &set, &[&apps, &grants]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v1 = r.body["version_id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["policy_set_id"], set.as_str());
    assert_eq!(r.body["manifest_sha256"].as_str().unwrap().len(), 64);

    let r = w
        .boot(
            "GET",
            &format!("/v1/zones/{z}/policy-sets/{set}/versions/{v1}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["policies"], json!([apps, grants]));
    assert_eq!(
        r.body["manifest_json"],
        json!([{"policy_version_id": apps}, {"policy_version_id": grants}])
    );
    let r = w
        .boot(
            "GET",
            &format!("/v1/zones/{z}/policy-sets/{set}/versions/nope"),
            None,
        )
        .await;
    assert_eq!(r.error(), "policy_set_version_not_found");
    let r = w
        .boot(
            "GET",
            &format!("/v1/zones/{z}/policy-sets/{set}/versions"),
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["items"][0]["id"], v1.as_str());
    let r = w
        .boot(
            "GET",
            &format!("/v1/zones/{z}/policy-sets/nope/versions"),
            None,
        )
        .await;
    assert_eq!(r.error(), "policy_set_not_found");
}

#[tokio::test]
async fn activation_publishes_invalidation_and_rollback_reactivates() {
    let w = world();
    let z = w.zone("Activate").await;
    let (grants_id, apps_v) = {
        let (_, apps) = w.policy(&z, "apps", APPS).await;
        let (gid, _) = w.policy(&z, "grants", GRANTS_READ).await;
        (gid, apps)
    };
    let grants_v1 = {
        let r = w
            .boot("GET", &format!("/v1/zones/{z}/policies/{grants_id}"), None)
            .await;
        r.body["versions"][0]["id"].as_str().unwrap().to_owned()
    };
    let r = w
        .boot(
            "POST",
            &format!("/v1/zones/{z}/policies/{grants_id}/versions"),
            Some(json!({"content": GRANTS_NONE})),
        )
        .await;
    let grants_v2 = r.body["id"].as_str().unwrap().to_owned();
    let set = w.set(&z, "main").await;
    let v1 = w.set_version(&z, &set, &[&apps_v, &grants_v1]).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v2 = w.set_version(&z, &set, &[&apps_v, &grants_v2]).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Activate v2: 202, an outbox row on caracal.policy.invalidate.
    let r = w.activate(&z, &set, &v2).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["activated"], true);
    assert_eq!(r.body["version_id"], v2.as_str());
    let outbox_id = r.body["outbox_id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.body["status_url"],
        format!(
            "/v1/zones/{z}/policy-sets/{set}/activation-status?version_id={v2}&outbox_id={outbox_id}"
        )
    );
    let row = w.store.get_outbox(&outbox_id).await.unwrap().unwrap();
    assert_eq!(row.message.stream, "caracal.policy.invalidate");
    assert_eq!(
        row.message.fields,
        vec![
            ("zone_id".to_owned(), z.clone()),
            ("policy_set_id".to_owned(), set.clone()),
            ("policy_set_version_id".to_owned(), v2.clone()),
        ]
    );
    let r = w
        .boot("GET", &format!("/v1/zones/{z}/policy-sets/{set}"), None)
        .await;
    assert_eq!(r.body["active_version_id"], v2.as_str());

    // Activation status from the status_url: active, the outbox row pending.
    let status_url = format!(
        "/v1/zones/{z}/policy-sets/{set}/activation-status?version_id={v2}&outbox_id={outbox_id}"
    );
    let r = w.boot("GET", &status_url, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["active_version_id"], v2.as_str());
    assert_eq!(r.body["outbox"]["state"], "pending");
    assert_eq!(r.body["outbox"]["id"], outbox_id.as_str());
    assert_eq!(r.body["propagation_status"], "waiting_for_outbox");
    assert_eq!(r.body["sts"]["state"], "not_configured");
    w.store
        .mark_dispatched(&outbox_id, w.clock_now())
        .await
        .unwrap();
    let r = w.boot("GET", &status_url, None).await;
    assert_eq!(r.body["outbox"]["state"], "dispatched");
    assert_eq!(r.body["propagation_status"], "waiting_for_sts");
    let r = w
        .boot(
            "GET",
            &format!("/v1/zones/{z}/policy-sets/{set}/activation-status?version_id={v1}&outbox_id={outbox_id}"),
            None,
        )
        .await;
    assert_eq!(r.body["active"], false);
    assert_eq!(r.body["propagation_status"], "waiting_for_activation");

    // Rollback = activate the older, immutable v1: a new invalidation, v1 active.
    let r = w.activate(&z, &set, &v1).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_ne!(r.body["outbox_id"], outbox_id.as_str());
    let active = w.store.active_policy(&z).await.unwrap().unwrap();
    assert_eq!(active.version.id, v1);
    let row = w
        .store
        .get_outbox(r.body["outbox_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.message.fields[2].1, v1);

    // §7.36: activating another set leaves one active set in the zone.
    let other = w.set(&z, "other").await;
    let ov = w.set_version(&z, &other, &[&apps_v, &grants_v1]).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        w.activate(&z, &other, &ov).await.status,
        StatusCode::ACCEPTED
    );
    let r = w
        .boot("GET", &format!("/v1/zones/{z}/policy-sets/{set}"), None)
        .await;
    assert_eq!(r.body["active_version_id"], Value::Null);

    // Unknown version, or a version of another set.
    let r = w.activate(&z, &set, &ov).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::NOT_FOUND, "version_not_found")
    );
    let r = w
        .boot(
            "POST",
            &format!("/v1/zones/{z}/policy-sets/{set}/activate"),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.error(), "invalid_body");

    // §7.37: archiving the active set clears the binding (deny-all) and invalidates.
    let r = w
        .boot(
            "DELETE",
            &format!("/v1/zones/{z}/policy-sets/{other}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(w.store.active_policy(&z).await.unwrap().is_none());
    let r = w
        .boot("GET", &format!("/v1/zones/{z}/policy-sets/{other}"), None)
        .await;
    assert_eq!(r.error(), "policy_set_not_found");
    let r = w
        .boot(
            "GET",
            &format!("/v1/zones/{z}/policy-sets/{other}/activation-status"),
            None,
        )
        .await;
    assert_eq!(r.error(), "policy_set_binding_not_found");
    let r = w
        .boot(
            "GET",
            &format!("/v1/zones/{z}/policy-sets/{set}/activation-status"),
            None,
        )
        .await;
    assert_eq!(r.error(), "active_policy_set_version_not_found");
}

impl World {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use caracal_core::clock::Clock;
        self.clock.now()
    }
}

#[tokio::test]
async fn simulate_explains_without_changing_bindings() {
    let w = world();
    let z = w.zone("Simulate").await;
    let (_, apps) = w.policy(&z, "apps", APPS).await;
    let (_, grants) = w.policy(&z, "grants", GRANTS_READ).await;
    let set = w.set(&z, "main").await;
    let r = w.set_version(&z, &set, &[&apps, &grants]).await;
    let v1 = r.body["id"].as_str().unwrap().to_owned();
    let sha = r.body["manifest_sha256"].clone();
    let path = format!("/v1/zones/{z}/policy-sets/{set}/simulate");

    let r = w
        .boot(
            "POST",
            &path,
            Some(json!({"version_id": v1, "input": mint_input(&z)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["dry_run"], true);
    assert_eq!(r.body["would_activate"], true);
    assert_eq!(r.body["warnings"], json!([]));
    assert_eq!(r.body["manifest_sha256"], sha);
    assert_eq!(r.body["policies"], json!([apps, grants]));
    assert_eq!(r.body["input_schema_version"], "2026-05-20");
    assert_eq!(r.body["explanation"]["evaluation"], "executed");
    assert_eq!(r.body["explanation"]["decision"], "allow");
    assert_eq!(
        r.body["result"]["determining_policies"],
        json!([{"policy": "caracal-files-mint"}])
    );

    // No input: not executed; warnings for a foreign principal zone.
    let r = w.boot("POST", &path, Some(json!({"version_id": v1}))).await;
    assert_eq!(r.body["explanation"]["evaluation"], "not_executed");
    assert_eq!(r.body["result"], Value::Null);
    let r = w
        .boot(
            "POST",
            &path,
            Some(json!({"version_id": v1, "input": mint_input("zone-9")})),
        )
        .await;
    assert_eq!(r.body["warnings"], json!(["principal_zone_mismatch"]));
    assert_eq!(r.body["would_activate"], false);

    // Errors; nothing was activated.
    let r = w
        .boot("POST", &path, Some(json!({"version_id": "nope"})))
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::NOT_FOUND, "version_not_found")
    );
    let r = w
        .boot("POST", &path, Some(json!({"version_id": v1, "input": [1]})))
        .await;
    assert_eq!(r.error(), "invalid_body");
    assert!(w.store.active_policy(&z).await.unwrap().is_none());
}

// ----------------------------------------------------------------------------- approvals

async fn hold(w: &World, zone: &str, id: &str, class: ApproverClass) -> Approval {
    let now = w.clock_now();
    let a = Approval {
        id: id.to_owned(),
        zone_id: zone.to_owned(),
        session_id: format!("ar-{id}"),
        principal_id: "app-1".to_owned(),
        application_id: "app-1".to_owned(),
        approval_type: HUMAN_APPROVAL.to_owned(),
        tier: "high".to_owned(),
        approver_class: class,
        privacy_mode: PrivacyMode::Identified,
        subject_anchor: None,
        binding: "ab".repeat(32),
        metadata_json: Map::new(),
        decision_reason: None,
        approver_subject_id: None,
        approver_session_id: None,
        created_at: now,
        expires_at: now + Duration::minutes(30),
        satisfied_at: None,
        rejected_at: None,
        consumed_at: None,
        consumed_authority_record_id: None,
    };
    w.store.insert_approval(&a).await.unwrap();
    w.clock.advance(Duration::milliseconds(5));
    a
}

#[tokio::test]
async fn approvals_are_decided_by_approve_tokens_once() {
    let w = world();
    let z = w.zone("Approvals").await;
    let write = w.token("global", None, "write").await;
    let approve = w.token("zone", Some(&z), "approve").await;
    let read = w.token("global", None, "read").await;
    let a1 = "0190a000-0000-7000-8000-000000000001";
    let a2 = "0190a000-0000-7000-8000-000000000002";
    let a3 = "0190a000-0000-7000-8000-000000000003";
    hold(&w, &z, a1, ApproverClass::Operator).await;
    hold(&w, &z, a2, ApproverClass::Any).await;
    hold(&w, &z, a3, ApproverClass::Subject).await;
    let base = format!("/v1/zones/{z}/approvals");

    // Reads: list (state filter), get; any token may read.
    let r = w.call("GET", &base, &read, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(r.body["items"][0]["id"], a3);
    assert_eq!(r.body["items"][0]["state"], "pending");
    let r = w.call("GET", &format!("{base}/{a1}"), &approve, None).await;
    assert_eq!(r.body["approver_class"], "operator");
    assert_eq!(r.body["state"], "pending");
    assert!(r.body.get("approver_session_id").is_none());
    let r = w.boot("GET", &format!("{base}/nope"), None).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::NOT_FOUND, "approval_not_found")
    );
    let r = w.boot("GET", &format!("{base}?state=bogus"), None).await;
    assert_eq!(r.error(), "invalid_query");

    // §7.41: a write token may not decide; a read token may not either; an approve token may.
    let r = w
        .call("POST", &format!("{base}/{a1}/approve"), &write, None)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::FORBIDDEN, "approve_capability_required")
    );
    let r = w
        .call("POST", &format!("{base}/{a1}/approve"), &read, None)
        .await;
    assert_eq!(r.error(), "admin_token_read_only");
    let r = w
        .call(
            "POST",
            &format!("/v1/zones/{z}/policy-sets"),
            &approve,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(r.error(), "admin_token_approve_only");
    let r = w
        .call(
            "POST",
            &format!("{base}/{a1}/approve"),
            &approve,
            Some(json!({"reason": "looks fine"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["state"], "approved");
    assert_eq!(r.body["id"], a1);
    assert!(r.body["satisfied_at"].is_string());
    assert_eq!(r.body["rejected_at"], Value::Null);
    let approver = r.body["approver_subject_id"].as_str().unwrap().to_owned();
    assert!(approver.starts_with("admin:"));
    assert_ne!(approver, "admin:bootstrap");
    let stored = w.store.get_approval(&z, a1).await.unwrap().unwrap();
    assert_eq!(
        stored.approver_subject_id.as_deref(),
        Some(approver.as_str())
    );
    assert_eq!(stored.decision_reason.as_deref(), Some("looks fine"));
    assert_eq!(stored.state(w.clock_now()), ApprovalState::Approved);
    // The same core decision as the subject plane: a step_up_decided event, operator plane.
    let events = w.audit.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "step_up_decided");
    assert_eq!(events[0].decision, "approved");
    assert!(
        events[0]
            .metadata_json
            .as_ref()
            .unwrap()
            .as_str()
            .contains("\"approver_plane\":\"operator\"")
    );

    // A second decision: 409 approval_not_decidable with the state.
    let r = w
        .call("POST", &format!("{base}/{a1}/reject"), &approve, None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.error(), "approval_not_decidable");
    assert_eq!(r.body["state"], "approved");

    // The bootstrap token may decide; reject of an `any` hold.
    let r = w.boot("POST", &format!("{base}/{a2}/reject"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["state"], "rejected");
    assert_eq!(r.body["approver_subject_id"], "admin:bootstrap");
    assert!(r.body["rejected_at"].is_string());
    let r = w
        .call("POST", &format!("{base}/{a2}/approve"), &approve, None)
        .await;
    assert_eq!(r.body["state"], "rejected");

    // State filter.
    let r = w.boot("GET", &format!("{base}?state=approved"), None).await;
    let ids: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a1]);

    // A subject-only hold is not the operator's to decide.
    let r = w
        .call("POST", &format!("{base}/{a3}/approve"), &approve, None)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::FORBIDDEN, "subject_approval_required")
    );

    // Body and id errors; expired holds are not decidable.
    let r = w
        .call(
            "POST",
            &format!("{base}/{a3}/approve"),
            &approve,
            Some(json!({"reason": "x".repeat(501)})),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
    let r = w
        .call("POST", &format!("{base}/nope/approve"), &approve, None)
        .await;
    assert_eq!(r.error(), "approval_not_found");
    let a4 = "0190a000-0000-7000-8000-000000000004";
    hold(&w, &z, a4, ApproverClass::Operator).await;
    w.clock.advance(Duration::hours(1));
    let r = w
        .call("POST", &format!("{base}/{a4}/approve"), &approve, None)
        .await;
    assert_eq!(r.error(), "approval_not_decidable");
    assert_eq!(r.body["state"], "expired");

    // State filter, judged at the time of the call (expired outranks approved).
    let r = w.boot("GET", &format!("{base}?state=expired"), None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);

    // A zone approve token outside its zone.
    let other = w.zone("Elsewhere").await;
    let r = w
        .call(
            "POST",
            &format!("/v1/zones/{other}/approvals/{a1}/approve"),
            &approve,
            None,
        )
        .await;
    assert_eq!(r.error(), "admin_token_zone_mismatch");
}

// ------------------------------------------------------------------------ subject revoke

fn record(
    zone: &str,
    id: &str,
    subject: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> AuthorityRecord {
    AuthorityRecord {
        id: id.to_owned(),
        zone_id: zone.to_owned(),
        session_type: SubjectType::User,
        subject_id: subject.to_owned(),
        parent_id: None,
        status: AuthorityStatus::Active,
        expires_at: now + Duration::hours(1),
        authenticated_at: None,
        claims_json: json!({}),
        revoked_at: None,
        revoked_reason: None,
        created_at: now,
    }
}

#[tokio::test]
async fn subject_kill_switch_revokes_and_enqueues() {
    let w = world();
    let z = w.zone("Kill").await;
    let now = w.clock_now();
    for (id, subject) in [("ar-1", "alice"), ("ar-2", "alice"), ("ar-3", "bob")] {
        w.store
            .insert_authority(&record(&z, id, subject, now))
            .await
            .unwrap();
    }
    let path = format!("/v1/zones/{z}/subjects/revoke");
    let r = w
        .boot("POST", &path, Some(json!({"subject_id": "alice"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"subject_id": "alice", "authority_records": 2, "sessions": 0,
            "delegations": 0, "connections": 0})
    );
    for id in ["ar-1", "ar-2"] {
        let rec = w.store.get_authority(&z, id).await.unwrap().unwrap();
        assert_eq!(rec.status, AuthorityStatus::Revoked);
        assert_eq!(rec.revoked_reason.as_deref(), Some("subject_revoked"));
    }
    let bob = w.store.get_authority(&z, "ar-3").await.unwrap().unwrap();
    assert_eq!(bob.status, AuthorityStatus::Active);

    // One caracal.sessions.revoke per revoked record.
    let rows = w
        .store
        .claim("test", 100, Duration::seconds(30), w.clock_now())
        .await
        .unwrap();
    let mut revokes: Vec<Vec<(String, String)>> = rows
        .iter()
        .filter(|r| r.message.stream == "caracal.sessions.revoke")
        .map(|r| r.message.fields.clone())
        .collect();
    revokes.sort();
    let expect = |id: &str| {
        vec![
            ("zone_id".to_owned(), z.clone()),
            ("session_id".to_owned(), id.to_owned()),
            ("reason".to_owned(), "subject_revoked".to_owned()),
        ]
    };
    assert_eq!(revokes, vec![expect("ar-1"), expect("ar-2")]);

    // Idempotent: zeros, nothing enqueued.
    let r = w
        .boot(
            "POST",
            &path,
            Some(json!({"subject_id": "alice", "reason": "again"})),
        )
        .await;
    assert_eq!(r.body["authority_records"], 0);
    let rows = w
        .store
        .claim("test", 100, Duration::seconds(30), w.clock_now())
        .await
        .unwrap();
    assert!(rows.is_empty());

    // A caller reason is recorded and sent.
    let r = w
        .boot(
            "POST",
            &path,
            Some(json!({"subject_id": "bob", "reason": "compromised"})),
        )
        .await;
    assert_eq!(r.body["authority_records"], 1);
    let rows = w
        .store
        .claim("test", 100, Duration::seconds(30), w.clock_now())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].message.fields[2].1, "compromised");

    // Body errors; read tokens and the system zone are refused by the gate.
    for body in [
        json!({}),
        json!({"subject_id": ""}),
        json!({"subject_id": "x".repeat(513)}),
        json!({"subject_id": "a", "reason": "r".repeat(513)}),
    ] {
        let r = w.boot("POST", &path, Some(body)).await;
        assert_eq!(
            (r.status, r.error()),
            (StatusCode::BAD_REQUEST, "invalid_subject_revoke")
        );
    }
    let read = w.token("global", None, "read").await;
    let r = w
        .call("POST", &path, &read, Some(json!({"subject_id": "bob"})))
        .await;
    assert_eq!(r.error(), "admin_token_read_only");
}

#[tokio::test]
async fn zone_tokens_and_read_tokens_on_policy_routes() {
    let w = world();
    let z = w.zone("Scoped").await;
    let other = w.zone("Other").await;
    let zone_write = w.token("zone", Some(&z), "write").await;
    let read = w.token("global", None, "read").await;
    let r = w
        .call(
            "POST",
            &format!("/v1/zones/{z}/policies"),
            &zone_write,
            Some(json!({"name": "apps", "content": APPS})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.body["version"]["id"].is_string());
    let r = w
        .call(
            "GET",
            &format!("/v1/zones/{other}/policies"),
            &zone_write,
            None,
        )
        .await;
    assert_eq!(r.error(), "admin_token_zone_mismatch");
    let r = w
        .call(
            "POST",
            &format!("/v1/zones/{z}/policy-sets"),
            &read,
            Some(json!({"name": "s"})),
        )
        .await;
    assert_eq!(r.error(), "admin_token_read_only");
    let r = w
        .call("GET", &format!("/v1/zones/{z}/policies"), &read, None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
}
