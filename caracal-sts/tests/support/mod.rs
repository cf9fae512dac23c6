//! A seeded STS on in-memory backends, driven through its router.
//!
//! The world: zone `Z` with applications A (orchestrator) and B (worker), both with client
//! secrets; application X in another zone; resources `resource://pipernet` (read, write;
//! transport-uniform) and `resource://files` (read; `enforced` with `GET /items`); a policy
//! in which B owns both resources with role `worker` granting read and write, and the scope
//! `write` carries risk tier `high` whose approval is a subject decision; Sessions S_A (A) and
//! S_B (B, label `worker`) and a delegation edge S_A → S_B for `read`.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use caracal_core::clock::{Clock, FakeClock, SharedClock};
use caracal_core::exchange::envelope::{self, GatewayKey};
use caracal_core::ids::{SharedIdGen, UuidV7};
use caracal_core::model::Attribution;
use caracal_core::model::application::{Application, RegistrationMethod};
use caracal_core::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use caracal_core::model::delegation::{DelegationEdge, EdgeStatus};
use caracal_core::model::policy_set::ManifestEntry;
use caracal_core::model::resource::{Operation, OperationEnforcement, Resource};
use caracal_core::model::session::{Lifecycle, Session, SessionStatus};
use caracal_core::model::zone::Zone;
use caracal_core::policy::lifecycle::{NewPolicy, PolicyLifecycle};
use caracal_core::secrets::client_secret::hash_client_secret;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::coordinator::CoordinatorStore;
use caracal_core::store::directory::{ApplicationStore, ResourceStore, ZoneStore};
use caracal_core::store::memory::MemoryStore;
use caracal_core::streams::MemoryStreams;
use caracal_service::config::Secret;
use caracal_sts::{StsBackends, StsService, StsSettings};
use chrono::{DateTime, Duration, Utc};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ISSUER: &str = "https://sts.caracal.test";
pub const SECRET_A: &str = "secret-a-0123456789";
pub const SECRET_B: &str = "secret-b-0123456789";
pub const SECRET_X: &str = "secret-x-0123456789";
pub const ADMIN: &str = "admin-token-0123456789";
pub const PIPERNET: &str = "resource://pipernet";
pub const FILES: &str = "resource://files";
pub const GATEWAY_KEY_HEX: &str =
    "6a0f7c2e9b1d4f3a8c5e7b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a";
pub const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

pub struct World {
    pub store: MemoryStore,
    pub streams: Arc<MemoryStreams>,
    pub clock: FakeClock,
    pub svc: Arc<StsService>,
    pub router: axum::Router,
    pub zone: String,
    pub other_zone: String,
    pub app_a: Application,
    pub app_b: Application,
    pub app_x: Application,
    pub pipernet: Resource,
    pub files: Resource,
    pub session_a: Session,
    pub session_b: Session,
    pub edge: DelegationEdge,
    pub key: GatewayKey,
    pub _replay: tempfile::TempDir,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
    pub fn description(&self) -> &str {
        self.body["error_description"].as_str().unwrap_or("")
    }
    pub fn token(&self) -> &str {
        self.body["access_token"].as_str().unwrap_or("")
    }
}

/// Percent-encode for a form body (test-side; every byte outside the unreserved set).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The claims of a JWT, unverified (tests inspect what was minted).
pub fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

pub fn attribution() -> Attribution {
    Attribution::created_by("admin:test")
}

fn app(id: &str, zone: &str, name: &str, secret: &str, t: DateTime<Utc>) -> Application {
    Application {
        id: id.to_owned(),
        zone_id: zone.to_owned(),
        name: name.to_owned(),
        registration_method: RegistrationMethod::Managed,
        traits: vec![],
        expires_at: None,
        archived_at: None,
        attribution: attribution(),
        created_at: t,
        updated_at: t,
        client_secret_hash: Some(hash_client_secret(secret).unwrap()),
    }
}

fn resource(id: &str, zone: &str, identifier: &str, scopes: &[&str], t: DateTime<Utc>) -> Resource {
    Resource {
        id: id.to_owned(),
        zone_id: zone.to_owned(),
        name: identifier.to_owned(),
        identifier: identifier.to_owned(),
        upstream_url: Some("https://upstream.example/api".into()),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        credential_provider_id: None,
        operations: vec![],
        operation_enforcement: OperationEnforcement::TransportUniform,
        attribution: attribution(),
        created_at: t,
        updated_at: t,
        archived_at: None,
    }
}

fn record(id: &str, zone: &str, subject: &str, t: DateTime<Utc>) -> AuthorityRecord {
    AuthorityRecord {
        id: id.to_owned(),
        zone_id: zone.to_owned(),
        session_type: SubjectType::Application,
        subject_id: subject.to_owned(),
        parent_id: None,
        status: AuthorityStatus::Active,
        expires_at: t + Duration::hours(24),
        authenticated_at: Some(t),
        claims_json: json!({}),
        revoked_at: None,
        revoked_reason: None,
        created_at: t,
    }
}

fn session(
    id: &str,
    zone: &str,
    app: &str,
    record: &str,
    labels: &[&str],
    t: DateTime<Utc>,
) -> Session {
    Session {
        agent_session_id: id.to_owned(),
        zone_id: zone.to_owned(),
        application_id: app.to_owned(),
        parent_id: None,
        subject_authority_record_id: record.to_owned(),
        lifecycle: Lifecycle::Task,
        labels: labels.iter().map(|s| (*s).to_owned()).collect(),
        status: SessionStatus::Active,
        depth: 0,
        ttl_seconds: Some(3600),
        metadata: serde_json::Map::new(),
        started_at: t,
        terminated_at: None,
        termination_reason: None,
        last_heartbeat_at: None,
        heartbeat_deadline_at: None,
        lease_generation: 0,
        child_count: 0,
        max_children: 10,
    }
}

pub fn policy_doc(app_a: &str, app_b: &str) -> String {
    json!({
        "app_ids": {"orchestrator": app_a, "worker": app_b},
        "grants": {
            PIPERNET: {"application": "worker", "roles": {"worker": ["read", "write"]}},
            FILES: {"application": "worker", "roles": {"worker": ["read"]}}
        },
        "risk": [{"scope": "write", "tier": "high"}],
        "approval_tiers": [{"tier": "high", "approver": "subject", "ttl_seconds": 600}]
    })
    .to_string()
}

pub async fn activate(w: &World, zone: &str, content: &str) {
    let life = PolicyLifecycle::new(
        Arc::new(w.store.clone()),
        Arc::new(w.clock.clone()) as SharedClock,
        Arc::new(UuidV7) as SharedIdGen,
    );
    let name = format!("p-{}", uuid_like());
    let (_, v) = life
        .create_policy(
            zone,
            NewPolicy {
                name: &name,
                description: None,
                content,
                actor: None,
            },
        )
        .await
        .unwrap();
    let set = life
        .create_policy_set(zone, &name, None, None)
        .await
        .unwrap();
    let sv = life
        .create_policy_set_version(
            zone,
            &set.id,
            &[ManifestEntry {
                policy_version_id: v.id.clone(),
            }],
        )
        .await
        .unwrap();
    life.activate(zone, &set.id, &sv.id).await.unwrap();
    w.svc.sts().policies().invalidate(zone).await.unwrap();
}

pub async fn world() -> World {
    world_with(|_| {}).await
}

pub async fn world_with(tune: impl FnOnce(&mut StsSettings)) -> World {
    let clock = FakeClock::at_fixture_epoch();
    let shared: SharedClock = Arc::new(clock.clone());
    let store = MemoryStore::with_clock(shared.clone());
    let streams = Arc::new(MemoryStreams::new(shared.clone()));
    let replay = tempfile::tempdir().unwrap();
    let mut settings = StsSettings::dev(ISSUER, replay.path().to_path_buf()).unwrap();
    let key = GatewayKey::from_hex(GATEWAY_KEY_HEX).unwrap();
    settings.gateway_key = Some(key.clone());
    settings.admin_token = Some(Secret::new(ADMIN));
    tune(&mut settings);
    let backends = StsBackends::memory(Arc::new(store.clone()), streams.clone());
    let svc = StsService::with_clock(settings, backends, shared.clone(), Arc::new(UuidV7)).unwrap();
    let router = svc.router();
    let t = clock.now();
    let zone = "0190f2a0-0000-7000-8000-00000000000a".to_owned();
    let other_zone = "0190f2a0-0000-7000-8000-00000000000b".to_owned();
    for (id, slug) in [(&zone, "zone-a"), (&other_zone, "zone-b")] {
        store
            .insert_zone(&Zone {
                id: id.clone(),
                name: slug.to_owned(),
                slug: slug.to_owned(),
                dcr_enabled: false,
                operator_coauthor_badge: false,
                operator_governed: false,
                attribution: attribution(),
                created_at: t,
                updated_at: t,
                archived_at: None,
            })
            .await
            .unwrap();
    }
    let app_a = app(
        "0190f2a0-0000-7000-8000-0000000000a1",
        &zone,
        "orchestrator",
        SECRET_A,
        t,
    );
    let app_b = app(
        "0190f2a0-0000-7000-8000-0000000000b1",
        &zone,
        "worker",
        SECRET_B,
        t,
    );
    let app_x = app(
        "0190f2a0-0000-7000-8000-0000000000c1",
        &other_zone,
        "elsewhere",
        SECRET_X,
        t,
    );
    for a in [&app_a, &app_b, &app_x] {
        store.insert_application(a).await.unwrap();
    }
    let pipernet = resource(
        "0190f2a0-0000-7000-8000-0000000000d1",
        &zone,
        PIPERNET,
        &["read", "write"],
        t,
    );
    let mut files = resource(
        "0190f2a0-0000-7000-8000-0000000000d2",
        &zone,
        FILES,
        &["read"],
        t,
    );
    files.operation_enforcement = OperationEnforcement::Enforced;
    files.operations = vec![Operation {
        method: "GET".into(),
        path: "/items".into(),
        scope: "read".into(),
    }];
    store.insert_resource(&pipernet).await.unwrap();
    store.insert_resource(&files).await.unwrap();
    let rec_a = record("0190f2a0-0000-7000-8000-0000000000e1", &zone, &app_a.id, t);
    let rec_b = record("0190f2a0-0000-7000-8000-0000000000e2", &zone, &app_b.id, t);
    store.insert_authority(&rec_a).await.unwrap();
    store.insert_authority(&rec_b).await.unwrap();
    let session_a = session(
        "0190f2a0-0000-7000-8000-0000000000f1",
        &zone,
        &app_a.id,
        &rec_a.id,
        &["orchestrator"],
        t,
    );
    let session_b = session(
        "0190f2a0-0000-7000-8000-0000000000f2",
        &zone,
        &app_b.id,
        &rec_b.id,
        &["worker"],
        t,
    );
    let edge = DelegationEdge {
        id: "0190f2a0-0000-7000-8000-0000000000f9".to_owned(),
        zone_id: zone.clone(),
        source_session_id: session_a.agent_session_id.clone(),
        target_session_id: session_b.agent_session_id.clone(),
        issuer_application_id: app_a.id.clone(),
        receiver_application_id: app_b.id.clone(),
        parent_edge_id: None,
        resource_id: None,
        scopes: vec!["read".into(), "write".into()],
        constraints_json: serde_json::Map::new(),
        status: EdgeStatus::Active,
        expires_at: t + Duration::seconds(3000),
        edge_version: 1,
        revoked_at: None,
        created_at: t,
    };
    let mut tx = store.begin(&zone).await.unwrap();
    tx.insert_session(&session_a).await.unwrap();
    tx.insert_session(&session_b).await.unwrap();
    tx.insert_edge(&edge).await.unwrap();
    tx.commit().await.unwrap();
    let w = World {
        store,
        streams,
        clock,
        svc,
        router,
        zone,
        other_zone,
        app_a,
        app_b,
        app_x,
        pipernet,
        files,
        session_a,
        session_b,
        edge,
        key,
        _replay: replay,
    };
    let doc = policy_doc(&w.app_a.id, &w.app_b.id);
    activate(&w, &w.zone.clone(), &doc).await;
    w
}

impl World {
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            self.router.clone().oneshot(request),
        )
        .await
        .expect("request timed out")
        .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    /// A form POST to the token endpoint.
    pub async fn token_raw(&self, body: String, request_id: Option<&str>) -> Answer {
        let mut r = Request::post("/oauth/2/token")
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(id) = request_id {
            r = r.header("x-request-id", id);
        }
        self.send(r.body(Body::from(body)).unwrap()).await
    }

    pub async fn token(&self, pairs: &[(&str, &str)]) -> Answer {
        self.token_raw(form(pairs), None).await
    }

    /// A client-authenticated exchange by `app` with `extra` fields.
    pub async fn exchange(
        &self,
        app: &Application,
        secret: &str,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut pairs = vec![
            ("grant_type", EXCHANGE),
            ("zone_id", app.zone_id.as_str()),
            ("application_id", app.id.as_str()),
            ("client_secret", secret),
        ];
        pairs.extend_from_slice(extra);
        self.token(&pairs).await
    }

    /// Bootstrap of B on pipernet: a session mandate.
    pub async fn bootstrap_b(&self) -> Answer {
        self.exchange(
            &self.app_b,
            SECRET_B,
            &[("resource", PIPERNET), ("scope", "agent:lifecycle")],
        )
        .await
    }

    /// Delegated mint of B through the edge: a gateway mandate.
    pub async fn delegated_mint(&self, scope: &str, resource: &str) -> Answer {
        self.exchange(
            &self.app_b,
            SECRET_B,
            &[
                ("resource", resource),
                ("scope", scope),
                ("agent_session_id", self.session_b.agent_session_id.as_str()),
                ("delegation_edge_id", self.edge.id.as_str()),
            ],
        )
        .await
    }

    /// The Gateway's signed re-exchange of `subject` (a gateway mandate).
    pub async fn gateway_exchange(
        &self,
        subject: &str,
        resource: &str,
        method: &str,
        path: &str,
    ) -> Answer {
        let (request, _) = self.gateway_request(subject, resource, method, path, &uuid_like());
        self.send(request).await
    }

    pub fn gateway_request(
        &self,
        subject: &str,
        resource: &str,
        method: &str,
        path: &str,
        nonce: &str,
    ) -> (Request<Body>, String) {
        let request_id = uuid_like();
        let body = form(&[
            ("grant_type", EXCHANGE),
            ("zone_id", self.zone.as_str()),
            ("application_id", self.app_b.id.as_str()),
            ("subject_token", subject),
            ("subject_token_type", ACCESS),
            ("resource", resource),
            ("request_method", method),
            ("request_path", path),
            ("gateway_request_id", request_id.as_str()),
        ]);
        let ts = self.clock.now().timestamp().to_string();
        let sig = envelope::sign(
            &self.key,
            &ts,
            nonce,
            "POST",
            "/oauth/2/token",
            body.as_bytes(),
        );
        let request = Request::post("/oauth/2/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-request-id", request_id.as_str())
            .header(envelope::TIMESTAMP_HEADER, ts)
            .header(envelope::NONCE_HEADER, nonce)
            .header(envelope::SIGNATURE_HEADER, sig)
            .body(Body::from(body.clone()))
            .unwrap();
        (request, body)
    }
}

pub fn uuid_like() -> String {
    use caracal_core::ids::IdGen;
    UuidV7.next_id()
}
