//! The Coordinator API through its router on the in-memory store: session-mandate
//! authentication (missing / invalid / wrong scope / wrong zone / revoked identity, operator
//! token only on its allowlist), session start with `Idempotency-Key` replay, delegation
//! create, a narrowing refusal, revoke with cascade, traverse, and `/openapi.json`
//! (reference `control-plane.md` §2 and §7 checks 25, 26, 28, 32; `http-bodies.md` §11).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use caracal_control::{CoordinatorApi, CoordinatorSettings};
use caracal_core::clock::{Clock, FakeClock};
use caracal_core::coordinator::IdempotencyKeys;
use caracal_core::ids::SequentialIds;
use caracal_core::mandate::{Audience, MandateClaims, MandateUse, ZoneKeys, mint};
use caracal_core::model::Attribution;
use caracal_core::model::application::{Application, RegistrationMethod};
use caracal_core::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use caracal_core::model::resource::{OperationEnforcement, Resource};
use caracal_core::model::zone::Zone;
use caracal_core::secrets::Keyring;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::directory::{ApplicationStore, ResourceStore, ZoneStore};
use caracal_core::store::memory::MemoryStore;
use caracal_service::config::Secret;
use chrono::{DateTime, Duration, Utc};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const KEK: &str = "8f2a6c1e9b3d4f5a7c8e0b1d2f3a4c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
const ISSUER: &str = "https://sts.caracal.test";
const OPERATOR: &str = "operator-token-0123456789-0123456789";
const ZONE: &str = "zone-co";
const APP_A: &str = "app-a";
const APP_B: &str = "app-b";
const SCOPE: &str = "agent:lifecycle";

struct World {
    router: axum::Router,
    store: Arc<MemoryStore>,
    keys: Arc<ZoneKeys>,
    clock: Arc<FakeClock>,
    r1: String,
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

fn app(id: &str, t: DateTime<Utc>) -> Application {
    Application {
        id: id.to_owned(),
        zone_id: ZONE.to_owned(),
        name: id.to_owned(),
        registration_method: RegistrationMethod::Managed,
        traits: vec![],
        expires_at: None,
        archived_at: None,
        attribution: Attribution::created_by("admin:test"),
        created_at: t,
        updated_at: t,
        client_secret_hash: None,
    }
}

async fn world() -> World {
    let clock = Arc::new(FakeClock::at_fixture_epoch());
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let t = clock.now();
    store
        .insert_zone(&Zone {
            id: ZONE.to_owned(),
            name: "Coordinator zone".into(),
            slug: "coordinator-zone".into(),
            dcr_enabled: false,
            operator_coauthor_badge: false,
            operator_governed: false,
            attribution: Attribution::created_by("admin:test"),
            created_at: t,
            updated_at: t,
            archived_at: None,
        })
        .await
        .unwrap();
    for id in [APP_A, APP_B] {
        store.insert_application(&app(id, t)).await.unwrap();
    }
    let r1 = Resource {
        id: "res-1".to_owned(),
        zone_id: ZONE.to_owned(),
        name: "r1".to_owned(),
        identifier: "resource://r1".to_owned(),
        upstream_url: Some("https://upstream.example".into()),
        scopes: vec!["read".into(), "write".into()],
        credential_provider_id: None,
        operations: vec![],
        operation_enforcement: OperationEnforcement::Enforced,
        attribution: Attribution::created_by("admin:test"),
        created_at: t,
        updated_at: t,
        archived_at: None,
    };
    store.insert_resource(&r1).await.unwrap();
    let keyring = Arc::new(Keyring::from_hex(KEK, None).unwrap());
    let ids = Arc::new(SequentialIds::new());
    let keys = Arc::new(ZoneKeys::new(
        store.clone(),
        store.clone(),
        keyring,
        clock.clone(),
        ids.clone(),
    ));
    let mut settings = CoordinatorSettings::new(ISSUER);
    settings.operator_token = Some(Secret::new(OPERATOR));
    let api = CoordinatorApi::new(
        store.clone(),
        keys.clone(),
        IdempotencyKeys::new(vec![7; 32], None),
        settings,
        clock.clone(),
        ids,
    );
    World {
        router: api.router(),
        store,
        keys,
        clock,
        r1: r1.id,
    }
}

impl World {
    /// A live application authority record for `app` and a `use=session` mandate bound to
    /// it, as the STS's client-credentials exchange would mint. Returns `(token, sid)`.
    async fn mandate_with(&self, app: &str, scope: &str, zone: &str) -> (String, String) {
        let now = self.clock.now();
        let record = AuthorityRecord {
            id: format!("rec-{app}-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            zone_id: ZONE.to_owned(),
            session_type: SubjectType::Application,
            subject_id: app.to_owned(),
            parent_id: None,
            status: AuthorityStatus::Active,
            expires_at: now + Duration::hours(1),
            authenticated_at: Some(now),
            claims_json: json!({}),
            revoked_at: None,
            revoked_reason: None,
            created_at: now,
        };
        self.store.insert_authority(&record).await.unwrap();
        let claims = MandateClaims {
            iss: ISSUER.to_owned(),
            sub: app.to_owned(),
            aud: Audience::Many(vec![ISSUER.to_owned()]),
            exp: now.timestamp() + 900,
            iat: now.timestamp(),
            jti: format!("jti-{}", record.id),
            zone_id: zone.to_owned(),
            client_id: app.to_owned(),
            scope: Some(scope.to_owned()),
            sid: record.id.clone(),
            root_sid: record.id.clone(),
            use_: MandateUse::Session,
            sub_type: SubjectType::Application,
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
        let key = self.keys.signing_key(zone).await.unwrap();
        (mint(&claims, &key).unwrap(), record.id)
    }

    async fn mandate(&self, app: &str) -> String {
        self.mandate_with(app, SCOPE, ZONE).await.0
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
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

    async fn start(&self, token: &str, app: &str) -> String {
        let a = self
            .call(
                "POST",
                &format!("/zones/{ZONE}/agents"),
                Some(token),
                &[],
                Some(json!({"application_id": app})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        a.body["agent_session_id"].as_str().unwrap().to_owned()
    }
}

/// Distinct authority record ids.
static NEXT: AtomicU64 = AtomicU64::new(1);

#[tokio::test]
async fn start_session_renders_the_reference_shape_and_replays_by_key() {
    let w = world().await;
    let (token, sid) = w.mandate_with(APP_A, SCOPE, ZONE).await;
    let path = format!("/zones/{ZONE}/agents");
    let body = json!({"application_id": APP_A, "labels": ["planner"]});
    let first = w
        .call(
            "POST",
            &path,
            Some(&token),
            &[("idempotency-key", "k-1")],
            Some(body.clone()),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.body["application_id"], APP_A);
    assert_eq!(first.body["subject_authority_record_id"], sid.as_str());
    assert_eq!(first.body["lifecycle"], "task");
    assert_eq!(first.body["status"], "active");
    assert_eq!(first.body["lease_generation"], 0);
    assert_eq!(first.body["ttl_seconds"], 3600);
    assert!(first.body["delegation_edge_id"].is_null());
    assert!(first.body.get("metadata").is_none());

    let again = w
        .call(
            "POST",
            &path,
            Some(&token),
            &[("idempotency-key", "k-1")],
            Some(body),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.headers["idempotency-replayed"], "true");
    assert_eq!(again.body, first.body);

    let conflict = w
        .call(
            "POST",
            &path,
            Some(&token),
            &[("idempotency-key", "k-1")],
            Some(json!({"application_id": APP_A, "labels": ["other"]})),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.error(), "idempotency_key_conflict");

    let bad_key = w
        .call(
            "POST",
            &path,
            Some(&token),
            &[("idempotency-key", " padded ")],
            Some(json!({"application_id": APP_A})),
        )
        .await;
    assert_eq!(bad_key.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_key.error(), "idempotency_key_invalid");

    // GET renders the full row with lease_generation as a string.
    let id = first.body["agent_session_id"].as_str().unwrap();
    let got = w
        .call("GET", &format!("{path}/{id}"), Some(&token), &[], None)
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(got.body["lease_generation"], "0");
    assert_eq!(got.body["labels"], json!(["planner"]));

    // Another application cannot read it.
    let b = w.mandate(APP_B).await;
    let hidden = w
        .call("GET", &format!("{path}/{id}"), Some(&b), &[], None)
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(hidden.error(), "session_not_found");

    // Ownership: B may not start a session for A.
    let foreign = w
        .call(
            "POST",
            &path,
            Some(&b),
            &[],
            Some(json!({"application_id": APP_A})),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert_eq!(foreign.error(), "application_ownership_required");

    // A [Z] body failure.
    let shape = w
        .call("POST", &path, Some(&token), &[], Some(json!({"labels": 3})))
        .await;
    assert_eq!(shape.status, StatusCode::BAD_REQUEST);
    assert_eq!(shape.error(), "invalid_body");
    assert!(shape.body["details"]["issues"].is_array());
}

#[tokio::test]
async fn delegation_create_narrowing_and_cascading_revoke() {
    let w = world().await;
    let a = w.mandate(APP_A).await;
    let b = w.mandate(APP_B).await;
    let s_a = w.start(&a, APP_A).await;
    let s_b = w.start(&b, APP_B).await;
    let s_b2 = w.start(&b, APP_B).await;
    let deleg = format!("/zones/{ZONE}/delegations");

    let root = w
        .call(
            "POST",
            &deleg,
            Some(&a),
            &[],
            Some(json!({
                "source_session_id": s_a, "target_session_id": s_b,
                "issuer_application_id": APP_A, "receiver_application_id": APP_B,
                "resource_id": w.r1, "scopes": ["read"], "ttl_seconds": 600,
                "constraints": {"max_hops": 2}
            })),
        )
        .await;
    assert_eq!(root.status, StatusCode::CREATED, "{}", root.text);
    let root_id = root.body["delegation_edge_id"].as_str().unwrap().to_owned();
    assert!(root.body.get("id").is_none());
    assert_eq!(root.body["status"], "active");
    assert_eq!(root.body["warnings"], json!([]));
    assert_eq!(root.body["allow_reason"].as_array().unwrap().len(), 4);
    assert_eq!(root.body["effective_authority"]["scopes"], json!(["read"]));

    // Narrowing: B re-delegates more than it holds.
    let child = |scopes: Value| {
        json!({
            "source_session_id": s_b, "target_session_id": s_b2,
            "issuer_application_id": APP_B, "receiver_application_id": APP_B,
            "resource_id": w.r1, "scopes": scopes, "ttl_seconds": 300,
            "constraints": {"max_hops": 1}
        })
    };
    let wider = w
        .call(
            "POST",
            &deleg,
            Some(&b),
            &[],
            Some(child(json!(["read", "write"]))),
        )
        .await;
    assert_eq!(wider.status, StatusCode::FORBIDDEN, "{}", wider.text);
    assert_eq!(wider.error(), "delegation_exceeds_parent_authority");

    let narrow = w
        .call("POST", &deleg, Some(&b), &[], Some(child(json!(["read"]))))
        .await;
    assert_eq!(narrow.status, StatusCode::CREATED, "{}", narrow.text);
    assert_eq!(narrow.body["parent_edge_id"], root_id.as_str());

    // Effective authority of the receiver.
    let ea = w
        .call(
            "GET",
            &format!("/zones/{ZONE}/agents/{s_b2}/effective-authority"),
            Some(&b),
            &[],
            None,
        )
        .await;
    assert_eq!(ea.status, StatusCode::OK, "{}", ea.text);
    assert_eq!(ea.body["effective_scopes"], json!(["read"]));

    // Traverse: runtime caller refused, operator token allowed.
    let traverse = format!("{deleg}/{root_id}/traverse");
    let runtime = w.call("GET", &traverse, Some(&a), &[], None).await;
    assert_eq!(runtime.status, StatusCode::FORBIDDEN);
    assert_eq!(runtime.error(), "coordinator_admin_required");
    let op = w.call("GET", &traverse, Some(OPERATOR), &[], None).await;
    assert_eq!(op.status, StatusCode::OK, "{}", op.text);
    assert_eq!(op.body.as_array().unwrap().len(), 2);
    assert_eq!(op.body[0]["depth"], 0);

    // Only the issuer's owner revokes.
    let revoke = format!("{deleg}/{root_id}/revoke");
    let not_issuer = w.call("PATCH", &revoke, Some(&b), &[], None).await;
    assert_eq!(not_issuer.status, StatusCode::FORBIDDEN);
    assert_eq!(not_issuer.error(), "issuer_ownership_required");

    let revoked = w.call("PATCH", &revoke, Some(&a), &[], None).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    assert_eq!(revoked.body["revoked_edges"], 2);
    assert!(revoked.body["terminated_sessions"].as_u64().unwrap() >= 2);

    // The receivers are terminated (read by the operator: B's own view is gone too).
    for s in [&s_b, &s_b2] {
        let got = w
            .call(
                "GET",
                &format!("/zones/{ZONE}/agents/{s}"),
                Some(OPERATOR),
                &[],
                None,
            )
            .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text);
        assert_eq!(got.body["status"], "terminated");
        assert_eq!(got.body["termination_reason"], "delegation_revoked");
    }

    let twice = w.call("PATCH", &revoke, Some(&a), &[], None).await;
    assert_eq!(twice.status, StatusCode::NOT_FOUND);
    assert_eq!(twice.error(), "delegation_not_found");
}

#[tokio::test]
async fn suspend_resume_terminate() {
    let w = world().await;
    let a = w.mandate(APP_A).await;
    let s = w.start(&a, APP_A).await;
    let base = format!("/zones/{ZONE}/agents/{s}");
    let sus = w
        .call("PATCH", &format!("{base}/suspend"), Some(&a), &[], None)
        .await;
    assert_eq!(sus.status, StatusCode::OK, "{}", sus.text);
    assert_eq!(sus.body, json!({"suspended": 1}));
    let again = w
        .call("PATCH", &format!("{base}/suspend"), Some(&a), &[], None)
        .await;
    assert_eq!(again.error(), "session_not_found_or_not_active");
    let res = w
        .call(
            "PATCH",
            &format!("{base}/resume"),
            Some(OPERATOR),
            &[],
            None,
        )
        .await;
    assert_eq!(res.body, json!({"resumed": 1}));
    let del = w
        .call(
            "DELETE",
            &format!("{base}?reason=done"),
            Some(&a),
            &[],
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{}", del.text);
    let got = w.call("GET", &base, Some(&a), &[], None).await;
    assert_eq!(got.body["status"], "terminated");
    assert_eq!(got.body["termination_reason"], "done");
    let gone = w.call("DELETE", &base, Some(&a), &[], None).await;
    assert_eq!(gone.error(), "session_not_found");
}

#[tokio::test]
async fn authentication_refusals() {
    let w = world().await;
    let path = format!("/zones/{ZONE}/agents");
    let body = json!({"application_id": APP_A});

    let none = w.call("POST", &path, None, &[], Some(body.clone())).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.error(), "missing_token");
    assert!(none.body["requestId"].is_string());

    let garbage = w
        .call("POST", &path, Some("not.a.jwt"), &[], Some(body.clone()))
        .await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    assert_eq!(garbage.error(), "invalid_token");

    // The operator token is not on the start route's allowlist: it is just a bad JWT.
    let op = w
        .call("POST", &path, Some(OPERATOR), &[], Some(body.clone()))
        .await;
    assert_eq!(op.status, StatusCode::UNAUTHORIZED);
    assert_eq!(op.error(), "invalid_token");

    let (no_scope, _) = w.mandate_with(APP_A, "other:scope", ZONE).await;
    let scope = w
        .call("POST", &path, Some(&no_scope), &[], Some(body.clone()))
        .await;
    assert_eq!(scope.status, StatusCode::FORBIDDEN);
    assert_eq!(scope.error(), "missing_scope");

    let token = w.mandate(APP_A).await;
    let other = w
        .call(
            "POST",
            "/zones/zone-other/agents",
            Some(&token),
            &[],
            Some(body.clone()),
        )
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.error(), "zone_mismatch");

    let (revoked, sid) = w.mandate_with(APP_A, SCOPE, ZONE).await;
    w.store
        .revoke_authority(ZONE, &sid, "test", w.clock.now())
        .await
        .unwrap();
    let gone = w
        .call("POST", &path, Some(&revoked), &[], Some(body.clone()))
        .await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gone.error(), "identity_revoked");

    // An expired mandate.
    w.clock.advance(Duration::hours(2));
    let late = w.call("POST", &path, Some(&token), &[], Some(body)).await;
    assert_eq!(late.status, StatusCode::UNAUTHORIZED);
    assert_eq!(late.error(), "invalid_token");
}

#[tokio::test]
async fn openapi_lists_the_routes() {
    let w = world().await;
    let doc = w.call("GET", "/openapi.json", None, &[], None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let paths = doc.body["paths"].as_object().unwrap();
    for p in [
        "/zones/{zone_id}/agents",
        "/zones/{zone_id}/agents/{id}",
        "/zones/{zone_id}/agents/{id}/suspend",
        "/zones/{zone_id}/agents/{id}/resume",
        "/zones/{zone_id}/agents/{id}/lease",
        "/zones/{zone_id}/agents/{id}/heartbeat",
        "/zones/{zone_id}/agents/{id}/effective-authority",
        "/zones/{zone_id}/delegations",
        "/zones/{zone_id}/delegations/{id}/revoke",
        "/zones/{zone_id}/delegations/{id}/traverse",
        "/zones/{zone_id}/delegations/{id}/impact",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    assert!(
        paths["/zones/{zone_id}/agents/{id}"]
            .get("delete")
            .is_some()
    );
    let health = w.call("GET", "/health", None, &[], None).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn service_lease_and_heartbeat() {
    let w = world().await;
    let a = w.mandate(APP_A).await;
    let started = w
        .call(
            "POST",
            &format!("/zones/{ZONE}/agents"),
            Some(&a),
            &[],
            Some(json!({"application_id": APP_A, "lifecycle": "service"})),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.text);
    assert_eq!(started.body["lease_generation"], 1);
    assert!(started.body["ttl_seconds"].is_null());
    let s = started.body["agent_session_id"].as_str().unwrap();
    let base = format!("/zones/{ZONE}/agents/{s}");

    let lease = w
        .call("POST", &format!("{base}/lease"), Some(&a), &[], None)
        .await;
    assert_eq!(lease.status, StatusCode::OK, "{}", lease.text);
    assert_eq!(lease.body["lease_generation"], 2);
    assert_eq!(lease.body["status"], "active");

    let stale = w
        .call(
            "POST",
            &format!("{base}/heartbeat"),
            Some(&a),
            &[],
            Some(json!({"lease_generation": 1})),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.text);
    assert_eq!(stale.error(), "session_lease_fenced");

    let beat = w
        .call(
            "POST",
            &format!("{base}/heartbeat"),
            Some(&a),
            &[],
            Some(json!({"lease_generation": 2, "active_invocations": 3})),
        )
        .await;
    assert_eq!(beat.status, StatusCode::OK, "{}", beat.text);
    assert_eq!(beat.body["agent"]["id"], s);
    assert_eq!(beat.body["agent"]["lease_generation"], 2);
    assert_eq!(beat.body["active_invocations"], 3);
    assert!(beat.body["service"].is_null());

    // A service session needs its generation to be terminated by a non-admin.
    let no_gen = w.call("DELETE", &base, Some(&a), &[], None).await;
    assert_eq!(no_gen.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_gen.error(), "lease_generation_required");
    let done = w
        .call(
            "DELETE",
            &base,
            Some(&a),
            &[],
            Some(json!({"lease_generation": 2})),
        )
        .await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.text);
}

/// The lists of §11.0: envelope, `limit`/`cursor` paging `id DESC`, unknown cursor → 400
/// `invalid_cursor`, filters, the reader rule (own application unless admin), children,
/// active / inbound / outbound edges and one inbound edge.
#[tokio::test]
async fn lists_page_filter_and_apply_the_reader_rule() {
    let w = world().await;
    let a = w.mandate(APP_A).await;
    let b = w.mandate(APP_B).await;
    let mut a_sessions = Vec::new();
    for _ in 0..3 {
        a_sessions.push(w.start(&a, APP_A).await);
    }
    let s_b = w.start(&b, APP_B).await;
    let agents = format!("/zones/{ZONE}/agents");

    let page1 = w
        .call("GET", &format!("{agents}?limit=2"), Some(&a), &[], None)
        .await;
    assert_eq!(page1.status, StatusCode::OK, "{}", page1.text);
    let ids: Vec<&str> = page1.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["agent_session_id"].as_str().unwrap())
        .collect();
    let mut newest_first = a_sessions.clone();
    newest_first.sort();
    newest_first.reverse();
    assert_eq!(
        ids,
        vec![newest_first[0].as_str(), newest_first[1].as_str()]
    );
    let cursor = page1.body["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, newest_first[1]);
    let page2 = w
        .call(
            "GET",
            &format!("{agents}?limit=2&cursor={cursor}"),
            Some(&a),
            &[],
            None,
        )
        .await;
    assert_eq!(page2.body["items"].as_array().unwrap().len(), 1);
    assert!(page2.body["next_cursor"].is_null());

    // The reader sees only its application's sessions; the operator sees the zone.
    let own = w.call("GET", &agents, Some(&a), &[], None).await;
    assert_eq!(own.body["items"].as_array().unwrap().len(), 3);
    let foreign = w
        .call(
            "GET",
            &format!("{agents}?application_id={APP_B}"),
            Some(&a),
            &[],
            None,
        )
        .await;
    assert_eq!(foreign.body["items"], json!([]));
    let all = w.call("GET", &agents, Some(OPERATOR), &[], None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body["items"].as_array().unwrap().len(), 4);
    let filtered = w
        .call(
            "GET",
            &format!("{agents}?status=active&lifecycle=task&application_id={APP_B}"),
            Some(OPERATOR),
            &[],
            None,
        )
        .await;
    assert_eq!(filtered.body["items"].as_array().unwrap().len(), 1);

    // Cursor and query refusals.
    for (q, code) in [
        ("cursor=nope", "invalid_cursor"),
        (&format!("cursor={s_b}") as &str, "invalid_cursor"),
        ("limit=0", "invalid_query"),
        ("limit=501", "invalid_query"),
        ("status=zombie", "invalid_query"),
    ] {
        let r = w
            .call("GET", &format!("{agents}?{q}"), Some(&a), &[], None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text);
        assert_eq!(r.error(), code, "{q}");
    }

    // Children.
    let parent = &a_sessions[0];
    let child = w
        .call(
            "POST",
            &agents,
            Some(&a),
            &[],
            Some(json!({"application_id": APP_A, "parent_id": parent})),
        )
        .await;
    assert_eq!(child.status, StatusCode::CREATED, "{}", child.text);
    let kids = w
        .call(
            "GET",
            &format!("{agents}/{parent}/children"),
            Some(&a),
            &[],
            None,
        )
        .await;
    assert_eq!(kids.status, StatusCode::OK, "{}", kids.text);
    let items = kids.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["agent_session_id"], child.body["agent_session_id"]);
    assert!(items[0].get("lease_generation").is_none());
    let hidden = w
        .call(
            "GET",
            &format!("{agents}/{parent}/children"),
            Some(&b),
            &[],
            None,
        )
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);

    // Edges: A → B.
    let edge = w
        .call(
            "POST",
            &format!("/zones/{ZONE}/delegations"),
            Some(&a),
            &[],
            Some(json!({
                "source_session_id": parent, "target_session_id": s_b,
                "issuer_application_id": APP_A, "receiver_application_id": APP_B,
                "resource_id": w.r1, "scopes": ["read"], "ttl_seconds": 600
            })),
        )
        .await;
    assert_eq!(edge.status, StatusCode::CREATED, "{}", edge.text);
    let edge_id = edge.body["delegation_edge_id"].as_str().unwrap().to_owned();
    let deleg = format!("/zones/{ZONE}/delegations");
    let active = w
        .call("GET", &format!("{deleg}/active"), Some(&b), &[], None)
        .await;
    assert_eq!(active.status, StatusCode::OK, "{}", active.text);
    assert_eq!(active.body["items"][0]["id"], edge_id.as_str());
    assert!(active.body["items"][0]["broad_reason"].is_null());
    let inbound = w
        .call(
            "GET",
            &format!("{deleg}/inbound/{s_b}"),
            Some(&b),
            &[],
            None,
        )
        .await;
    assert_eq!(inbound.body["items"][0]["id"], edge_id.as_str());
    let outbound = w
        .call(
            "GET",
            &format!("{deleg}/outbound/{parent}"),
            Some(&a),
            &[],
            None,
        )
        .await;
    assert_eq!(outbound.body["items"][0]["id"], edge_id.as_str());
    let not_owner = w
        .call(
            "GET",
            &format!("{deleg}/outbound/{parent}"),
            Some(&b),
            &[],
            None,
        )
        .await;
    assert_eq!(not_owner.status, StatusCode::NOT_FOUND);
    assert_eq!(not_owner.error(), "session_not_found");
    let one = w
        .call(
            "GET",
            &format!("{deleg}/inbound/{s_b}/{edge_id}"),
            Some(&b),
            &[],
            None,
        )
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    assert_eq!(one.body, json!({"id": edge_id, "status": "active"}));
    let wrong_target = w
        .call(
            "GET",
            &format!("{deleg}/inbound/{parent}/{edge_id}"),
            Some(&a),
            &[],
            None,
        )
        .await;
    assert_eq!(wrong_target.status, StatusCode::NOT_FOUND);
    assert_eq!(wrong_target.error(), "delegation_not_found");

    // After a revoke the edge leaves the active list but stays in inbound.
    let revoke = w
        .call(
            "PATCH",
            &format!("{deleg}/{edge_id}/revoke"),
            Some(&a),
            &[],
            None,
        )
        .await;
    assert_eq!(revoke.status, StatusCode::OK, "{}", revoke.text);
    let active = w
        .call("GET", &format!("{deleg}/active"), Some(OPERATOR), &[], None)
        .await;
    assert_eq!(active.body["items"], json!([]));
    let inbound = w
        .call(
            "GET",
            &format!("{deleg}/inbound/{s_b}"),
            Some(OPERATOR),
            &[],
            None,
        )
        .await;
    assert_eq!(inbound.body["items"][0]["status"], "revoked");
}

/// `POST /zones/{z}/outbox/{id}/requeue`: admin only; a row that is not dead is `404
/// dead_outbox_not_found`; a dead row returns to pending.
#[tokio::test]
async fn outbox_requeue_is_admin_only_and_needs_a_dead_row() {
    use caracal_core::store::outbox::{OutboxMessage, OutboxStore};
    let w = world().await;
    let now = w.clock.now();
    let id = w
        .store
        .enqueue(
            &OutboxMessage::new(
                "caracal.agents.lifecycle",
                vec![("zone_id".into(), ZONE.into())],
            ),
            now,
        )
        .await
        .unwrap();
    let path = format!("/zones/{ZONE}/outbox/{id}/requeue");
    let a = w.mandate(APP_A).await;
    let refused = w.call("POST", &path, Some(&a), &[], None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.error(), "coordinator_admin_required");
    let not_dead = w.call("POST", &path, Some(OPERATOR), &[], None).await;
    assert_eq!(not_dead.status, StatusCode::NOT_FOUND);
    assert_eq!(not_dead.error(), "dead_outbox_not_found");
    w.store
        .claim("w", 10, Duration::seconds(30), now)
        .await
        .unwrap();
    w.store.mark_failed(&id, "boom", None, now).await.unwrap();
    let ok = w.call("POST", &path, Some(OPERATOR), &[], None).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body, json!({"id": id, "status": "pending"}));
    let other_zone = w
        .call(
            "POST",
            &format!("/zones/zone-other/outbox/{id}/requeue"),
            Some(OPERATOR),
            &[],
            None,
        )
        .await;
    assert_eq!(other_zone.status, StatusCode::NOT_FOUND);
}

/// `POST /v1/verify` (public): a valid session mandate → `{valid: true, claims}`; a bad one →
/// `401 {valid: false, error: "token_invalid"}`; shape errors → 400.
#[tokio::test]
async fn verify_is_public_and_fails_closed() {
    let w = world().await;
    let a = w.mandate(APP_A).await;
    let ok = w
        .call(
            "POST",
            "/v1/verify",
            None,
            &[],
            Some(json!({"token": a, "zone_id": ZONE, "required_scope": SCOPE})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["valid"], true);
    assert_eq!(ok.body["claims"]["client_id"], APP_A);
    let via_header = w
        .call(
            "POST",
            "/v1/verify",
            None,
            &[],
            Some(json!({"authorization": format!("Bearer {a}"), "zone_id": ZONE})),
        )
        .await;
    assert_eq!(via_header.status, StatusCode::OK);
    for body in [
        json!({"token": a, "zone_id": ZONE, "required_scope": "other"}),
        json!({"token": a, "zone_id": ZONE, "require_session": true}),
        json!({"token": a, "zone_id": ZONE, "require_delegation": true}),
        json!({"token": "garbage", "zone_id": ZONE}),
        json!({"token": a, "zone_id": "zone-other"}),
    ] {
        let r = w.call("POST", "/v1/verify", None, &[], Some(body)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert_eq!(r.body["valid"], false);
        assert_eq!(r.body["error"], "token_invalid");
    }
    let missing = w
        .call(
            "POST",
            "/v1/verify",
            None,
            &[],
            Some(json!({"zone_id": ZONE})),
        )
        .await;
    assert_eq!(missing.error(), "missing_token");
    let strict = w
        .call(
            "POST",
            "/v1/verify",
            None,
            &[],
            Some(json!({"token": a, "zone_id": ZONE, "extra": 1})),
        )
        .await;
    assert_eq!(strict.status, StatusCode::BAD_REQUEST);
    assert_eq!(strict.error(), "invalid_request");
}

/// Coordinator mutations land on the zone's admin audit chain before the response, with the
/// caller as actor; reads and refusals do not.
#[tokio::test]
async fn mutations_are_recorded_on_the_admin_audit_chain() {
    use caracal_core::store::admin_audit::AdminAuditStore;
    let w = world().await;
    let a = w.mandate(APP_A).await;
    let s = w.start(&a, APP_A).await;
    let _ = w
        .call(
            "GET",
            &format!("/zones/{ZONE}/agents/{s}"),
            Some(&a),
            &[],
            None,
        )
        .await;
    let refused = w
        .call(
            "PATCH",
            &format!("/zones/{ZONE}/agents/nope/suspend"),
            Some(OPERATOR),
            &[],
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let suspended = w
        .call(
            "PATCH",
            &format!("/zones/{ZONE}/agents/{s}/suspend"),
            Some(OPERATOR),
            &[],
            None,
        )
        .await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.text);
    let rows = w.store.list_admin_audit(Some(ZONE), 0, 100).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].entry.actor_id.as_deref(), Some(APP_A));
    assert_eq!(rows[0].entry.actor_scope.as_deref(), Some("session"));
    assert_eq!(rows[0].entry.method, "POST");
    assert_eq!(rows[0].entry.entity_type.as_deref(), Some("agent"));
    assert_eq!(rows[0].entry.entity_id.as_deref(), Some(s.as_str()));
    assert_eq!(rows[0].entry.status_code, 201);
    assert_eq!(rows[1].entry.actor_id.as_deref(), Some("caracal-operator"));
    assert_eq!(rows[1].entry.actor_scope.as_deref(), Some("operator"));
    assert_eq!(
        rows[1].action,
        format!("PATCH /zones/{ZONE}/agents/{s}/suspend")
    );
    assert_eq!(rows[1].chain_seq, 2);
}

/// The reference's per-address limits: 60 a minute on the public `/v1/verify`, then 429
/// `rate_limited` in the error shape (requests without a recorded peer share one key, so an
/// embedding host that gives no address is limited, not exempt).
#[tokio::test]
async fn verify_is_rate_limited_per_address() {
    let w = world().await;
    let body = json!({"token": "not-a-token", "zone_id": ZONE});
    for n in 0..60 {
        let r = w
            .call("POST", "/v1/verify", None, &[], Some(body.clone()))
            .await;
        assert_ne!(r.status, StatusCode::TOO_MANY_REQUESTS, "request {n}");
    }
    let r = w.call("POST", "/v1/verify", None, &[], Some(body)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.error(), "rate_limited");
}
