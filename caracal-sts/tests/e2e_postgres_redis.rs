//! The STS end to end on a real Postgres and a real Redis (ephemeral servers from the test
//! support crate, or `CARACAL_TEST_DATABASE_URL` / `CARACAL_TEST_REDIS_URL`): the storage- and
//! stream-dependent conformance checks of `sts.md` §10 that the in-memory tests
//! (`tests/http.rs`) cannot prove, and an independent JOSE client (PyJWT) verifying a minted
//! resource mandate through the HTTP JWKS.
//!
//! | test | checks |
//! |---|---|
//! | [`exchange_chain_persists_and_nonces_live_in_redis`] | 14, 15 (Redis nonce), 22 (`parent_id` in Postgres), 23, `audit:jti:` in Redis |
//! | [`revocation_through_the_real_stream`] | 45, 46, 47 |
//! | [`audit_frames_reach_redis_signed`] | the emitter's `id`/`data`/`sig` frames on `caracal.audit.events` |
//! | [`ready_tracks_consumer_groups_and_redis`] | 57, `/ready` `redis_unreachable` |
//! | [`failed_secrets_block_on_redis_windows`] | 11 (rate window in Redis) |
//! | [`pyjwt_verifies_a_resource_mandate_through_the_http_jwks`] | 23 by an independent client |
//!
//! The world mirrors `tests/support/mod.rs` (zone, applications A and B with client secrets,
//! `resource://pipernet` and `resource://files`, Sessions S_A → S_B with an edge, the same
//! policy), seeded through the `PgStore` trait methods with fresh UUIDv7 ids, on a freshly
//! migrated database of its own. The service runs on the system clock, so Redis TTLs and the
//! envelope's ±60 s window are real. Every wait is bounded.
//!
//! Without the servers (or python3/PyJWT) a test prints `SKIPPED` and returns, except under
//! `CI=true`, where that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use caracal_core::audit::AuditHmacKey;
use caracal_core::audit::hash::verify_payload_sig;
use caracal_core::backend::postgres::PgStore;
use caracal_core::backend::postgres::PgStoreOptions;
use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::clock::{Clock, SharedClock, SystemClock};
use caracal_core::exchange::envelope::{self, GatewayKey, NONCE_KEY_PREFIX};
use caracal_core::exchange::lineage::DENY_RECORD_INACTIVE;
use caracal_core::ids::{SharedIdGen, UuidV7};
use caracal_core::mandate::{MandateUse, VerifyPolicy, parse_jwks, verify};
use caracal_core::model::application::{Application, RegistrationMethod};
use caracal_core::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use caracal_core::model::delegation::{DelegationEdge, EdgeStatus};
use caracal_core::model::policy_set::ManifestEntry;
use caracal_core::model::resource::{Operation, OperationEnforcement, Resource};
use caracal_core::model::session::{Lifecycle, Session, SessionStatus};
use caracal_core::model::zone::Zone;
use caracal_core::policy::cache::REASON_HMAC_FAILED;
use caracal_core::policy::lifecycle::{NewPolicy, PolicyLifecycle};
use caracal_core::secrets::client_secret::hash_client_secret;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::coordinator::CoordinatorStore;
use caracal_core::store::directory::{ApplicationStore, ResourceStore, ZoneStore};
use caracal_core::streams::consumer::DLQ_REASON;
use caracal_core::streams::signature::{StreamKey, sign_fields};
use caracal_core::streams::{EntryId, Fields, Streams, names};
use caracal_service::config::Secret;
use caracal_sts::{StsBackends, StsService, StsSettings, Workers};
use caracal_test_support::{EphemeralRedis, connect, is_ci, postgres_or_skip, redis_or_skip};
use chrono::{DateTime, Duration, Utc};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::{
    ACCESS, Answer, EXCHANGE, FILES, GATEWAY_KEY_HEX, ISSUER, PIPERNET, SECRET_A, SECRET_B,
    attribution, claims, form, policy_doc, uuid_like,
};
use tower::ServiceExt;

const STREAMS_KEY_HEX: &str = "3c5e7a9b1d2f4a6c8e0b2d4f6a8c0e2b4d6f8a1c3e5b7d9f0b2d4f6a8c0e2b4d";
const AUDIT_KEY_HEX: &str = "9b1d2f4a6c8e0b2d4f6a8c0e2b4d6f8a1c3e5b7d9f0b2d4f6a8c0e2b4d6f8a3c";
/// The bound of every poll in this file.
const WAIT: StdDuration = StdDuration::from_secs(10);
/// The bound of one HTTP request through the router.
const REQUEST_TIMEOUT: StdDuration = StdDuration::from_secs(30);

/// A seeded STS on Postgres + Redis.
struct PgWorld {
    svc: Arc<StsService>,
    router: axum::Router,
    /// A second pool on the same database: seeding and assertions go around the service.
    store: Arc<PgStore>,
    redis: EphemeralRedis,
    streams: Arc<dyn Streams>,
    zone: String,
    app_a: Application,
    app_b: Application,
    session_b: Session,
    edge: DelegationEdge,
    key: GatewayKey,
    stream_key: StreamKey,
    audit_key: AuditHmacKey,
    _replay: tempfile::TempDir,
}

fn app(zone: &str, name: &str, secret: &str, t: DateTime<Utc>) -> Application {
    Application {
        id: uuid_like(),
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

fn resource(zone: &str, identifier: &str, scopes: &[&str], t: DateTime<Utc>) -> Resource {
    Resource {
        id: uuid_like(),
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

fn record(zone: &str, subject: &str, t: DateTime<Utc>) -> AuthorityRecord {
    AuthorityRecord {
        id: uuid_like(),
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

fn session(zone: &str, app: &str, record: &str, label: &str, t: DateTime<Utc>) -> Session {
    Session {
        agent_session_id: uuid_like(),
        zone_id: zone.to_owned(),
        application_id: app.to_owned(),
        parent_id: None,
        subject_authority_record_id: record.to_owned(),
        lifecycle: Lifecycle::Task,
        labels: vec![label.to_owned()],
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

/// The world for `test`, or `None` (skipped loudly) without the servers outside CI.
async fn pg_world(test: &str) -> Option<PgWorld> {
    let pg = postgres_or_skip(test)?;
    let redis = redis_or_skip(test)?;
    let url = pg.create_database(test).await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    drop(client);

    let replay = tempfile::tempdir().unwrap();
    let mut settings = StsSettings::dev(ISSUER, replay.path().to_path_buf()).unwrap();
    let key = GatewayKey::from_hex(GATEWAY_KEY_HEX).unwrap();
    let audit_key = AuditHmacKey::from_hex(AUDIT_KEY_HEX).unwrap();
    settings.gateway_key = Some(key.clone());
    settings.streams_key = Some(hex::decode(STREAMS_KEY_HEX).unwrap());
    settings.audit_key = Some(audit_key.clone());
    settings.database_url = Some(Secret::new(url.clone()));
    settings.redis_url = Some(Secret::new(redis.url()));
    settings.hostname = format!("e2e-{}", &uuid_like()[24..]);
    let clock: SharedClock = Arc::new(SystemClock);
    let backends = StsBackends::connect(&settings, clock).await.unwrap();
    let streams = backends.streams.clone();
    let svc = StsService::new(settings, backends).unwrap();
    let router = svc.router();
    let store = Arc::new(
        PgStore::open(&url, PgStoreOptions::default())
            .await
            .unwrap(),
    );

    let t = SystemClock.now();
    let zone = uuid_like();
    let slug = format!("e2e-{}", &zone[24..]);
    store
        .insert_zone(&Zone {
            id: zone.clone(),
            name: slug.clone(),
            slug,
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
    let app_a = app(&zone, "orchestrator", SECRET_A, t);
    let app_b = app(&zone, "worker", SECRET_B, t);
    store.insert_application(&app_a).await.unwrap();
    store.insert_application(&app_b).await.unwrap();
    let pipernet = resource(&zone, PIPERNET, &["read", "write"], t);
    let mut files = resource(&zone, FILES, &["read"], t);
    files.operation_enforcement = OperationEnforcement::Enforced;
    files.operations = vec![Operation {
        method: "GET".into(),
        path: "/items".into(),
        scope: "read".into(),
    }];
    store.insert_resource(&pipernet).await.unwrap();
    store.insert_resource(&files).await.unwrap();
    let rec_a = record(&zone, &app_a.id, t);
    let rec_b = record(&zone, &app_b.id, t);
    store.insert_authority(&rec_a).await.unwrap();
    store.insert_authority(&rec_b).await.unwrap();
    let session_a = session(&zone, &app_a.id, &rec_a.id, "orchestrator", t);
    let session_b = session(&zone, &app_b.id, &rec_b.id, "worker", t);
    let edge = DelegationEdge {
        id: uuid_like(),
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

    // The policy, activated in Postgres, then loaded by the service.
    let life = PolicyLifecycle::new(
        store.clone(),
        Arc::new(SystemClock) as SharedClock,
        Arc::new(UuidV7) as SharedIdGen,
    );
    let name = format!("p-{}", uuid_like());
    let content = policy_doc(&app_a.id, &app_b.id);
    let (_, v) = life
        .create_policy(
            &zone,
            NewPolicy {
                name: &name,
                description: None,
                content: &content,
                actor: None,
            },
        )
        .await
        .unwrap();
    let set = life
        .create_policy_set(&zone, &name, None, None)
        .await
        .unwrap();
    let sv = life
        .create_policy_set_version(
            &zone,
            &set.id,
            &[ManifestEntry {
                policy_version_id: v.id.clone(),
            }],
        )
        .await
        .unwrap();
    life.activate(&zone, &set.id, &sv.id).await.unwrap();
    svc.sts().policies().invalidate(&zone).await.unwrap();

    Some(PgWorld {
        svc,
        router,
        store,
        redis,
        streams,
        zone,
        app_a,
        app_b,
        session_b,
        edge,
        key,
        stream_key: StreamKey::from_hex(STREAMS_KEY_HEX).unwrap(),
        audit_key,
        _replay: replay,
    })
}

/// Poll `cond` every 50 ms until it holds; fail after [`WAIT`] with `what`.
async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for: {what}"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

impl PgWorld {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.router.clone().oneshot(request))
            .await
            .expect("request timed out")
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .expect("body timed out")
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn exchange(&self, app: &Application, secret: &str, extra: &[(&str, &str)]) -> Answer {
        let mut pairs = vec![
            ("grant_type", EXCHANGE),
            ("zone_id", app.zone_id.as_str()),
            ("application_id", app.id.as_str()),
            ("client_secret", secret),
        ];
        pairs.extend_from_slice(extra);
        self.send(
            Request::post("/oauth/2/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form(&pairs)))
                .unwrap(),
        )
        .await
    }

    async fn bootstrap_b(&self) -> Answer {
        self.exchange(
            &self.app_b,
            SECRET_B,
            &[("resource", PIPERNET), ("scope", "agent:lifecycle")],
        )
        .await
    }

    async fn delegated_mint(&self, scope: &str) -> Answer {
        self.exchange(
            &self.app_b,
            SECRET_B,
            &[
                ("resource", PIPERNET),
                ("scope", scope),
                ("agent_session_id", self.session_b.agent_session_id.as_str()),
                ("delegation_edge_id", self.edge.id.as_str()),
            ],
        )
        .await
    }

    /// The Gateway's signed re-exchange of `subject` on pipernet, timestamped now.
    fn gateway_request(&self, subject: &str, nonce: &str) -> Request<Body> {
        let request_id = uuid_like();
        let body = form(&[
            ("grant_type", EXCHANGE),
            ("zone_id", self.zone.as_str()),
            ("application_id", self.app_b.id.as_str()),
            ("subject_token", subject),
            ("subject_token_type", ACCESS),
            ("resource", PIPERNET),
            ("request_method", "GET"),
            ("request_path", "/anything"),
            ("gateway_request_id", request_id.as_str()),
        ]);
        let ts = SystemClock.now().timestamp().to_string();
        let sig = envelope::sign(
            &self.key,
            &ts,
            nonce,
            "POST",
            "/oauth/2/token",
            body.as_bytes(),
        );
        Request::post("/oauth/2/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-request-id", request_id.as_str())
            .header(envelope::TIMESTAMP_HEADER, ts)
            .header(envelope::NONCE_HEADER, nonce)
            .header(envelope::SIGNATURE_HEADER, sig)
            .body(Body::from(body))
            .unwrap()
    }

    async fn gateway_exchange(&self, subject: &str) -> Answer {
        self.send(self.gateway_request(subject, &uuid_like())).await
    }

    /// A command on the Redis the service uses, over the support crate's own client.
    fn redis_cmd(&self, args: &[&str]) -> caracal_test_support::RespValue {
        self.redis.command(args).unwrap()
    }

    fn redis_int(&self, args: &[&str]) -> i64 {
        match self.redis_cmd(args) {
            caracal_test_support::RespValue::Integer(n) => n,
            other => panic!("{args:?}: expected an integer, got {other:?}"),
        }
    }

    async fn status_of(&self, record: &str) -> AuthorityRecord {
        self.store
            .get_authority(&self.zone, record)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("record {record} not in Postgres"))
    }

    async fn wait_ready(&self) {
        wait_until("/ready 200", async || {
            self.get("/ready").await.status == StatusCode::OK
        })
        .await;
    }

    /// Start the workers and wait until `/ready` (all three consumer groups exist).
    async fn start(&self) -> Workers {
        let workers = self.svc.spawn_workers();
        self.wait_ready().await;
        workers
    }
}

async fn stop(workers: Workers) {
    tokio::time::timeout(
        StdDuration::from_secs(30),
        workers.shutdown(StdDuration::from_secs(10)),
    )
    .await
    .expect("workers did not stop");
}

fn jwt_header(token: &str) -> Value {
    use base64::Engine as _;
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h)
            .unwrap(),
    )
    .unwrap()
}

// --- 14, 15, 22, 23 --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_chain_persists_and_nonces_live_in_redis() {
    let Some(w) = pg_world("sts_e2e_exchange_chain").await else {
        return;
    };
    let workers = w.start().await;

    // Bootstrap: a root record in Postgres.
    let r = w.bootstrap_b().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let session = claims(r.token());
    assert_eq!(session["use"], "session");
    let root = w.status_of(session["sid"].as_str().unwrap()).await;
    assert!(root.parent_id.is_none());
    assert_eq!(root.status, AuthorityStatus::Active);

    // Delegated mint: a gateway mandate.
    let r = w.delegated_mint("read").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let gw = r.token().to_owned();
    let gc = claims(&gw);
    assert_eq!(gc["use"], "gateway");
    assert_eq!(gc["delegation_edge_id"], w.edge.id);
    let gw_sid = gc["sid"].as_str().unwrap().to_owned();
    assert_eq!(w.status_of(&gw_sid).await.status, AuthorityStatus::Active);

    // 14: the Gateway's signed re-exchange.
    let nonce = uuid_like();
    let r = w.send(w.gateway_request(&gw, &nonce)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["scope"], "read");
    assert_eq!(r.body["upstreams"][PIPERNET]["auth_mode"], "caracal_jwt");
    let resource_token = r.token().to_owned();
    let rc = claims(&resource_token);
    assert_eq!(rc["use"], "resource");
    assert_eq!(rc["aud"], json!([PIPERNET]));
    assert_eq!(rc["root_sid"], gc["root_sid"]);

    // 22: the new record's parent in Postgres is the presented sid.
    let child = w.status_of(rc["sid"].as_str().unwrap()).await;
    assert_eq!(child.parent_id.as_deref(), Some(gw_sid.as_str()));
    assert_ne!(child.id, gw_sid);

    // The jti registry and the consumed nonce are Redis keys with a TTL.
    for token_claims in [&gc, &rc] {
        let jti = token_claims["jti"].as_str().unwrap();
        let key = format!("audit:jti:{jti}");
        let value = w.redis_cmd(&["GET", &key]).as_text();
        assert_eq!(
            value,
            Some(format!("{}|{}", w.app_b.id, token_claims["iat"])),
            "{key}"
        );
        let ttl = w.redis_int(&["TTL", &key]);
        assert!(ttl > 0 && ttl <= 3600, "{key}: TTL {ttl}");
    }
    let nonce_key = format!("{NONCE_KEY_PREFIX}{nonce}");
    let ttl = w.redis_int(&["TTL", &nonce_key]);
    assert!(ttl > 0 && ttl <= 120, "{nonce_key}: TTL {ttl}");

    // 15: the identical signed request again → 401 (nonce already in Redis).
    let r = w.send(w.gateway_request(&gw, &nonce)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(r.description(), "invalid gateway exchange signature");
    // A fresh nonce still works.
    assert_eq!(w.gateway_exchange(&gw).await.status, StatusCode::OK);

    // 23: ES256 with a kid the HTTP JWKS names, and the signature verifies with it.
    let header = jwt_header(&resource_token);
    assert_eq!(header["alg"], "ES256");
    let jwks = w
        .get(&format!("/.well-known/jwks.json?zone_id={}", w.zone))
        .await;
    assert_eq!(jwks.status, StatusCode::OK, "{}", jwks.text);
    let doc: Value = serde_json::from_str(&jwks.text).unwrap();
    assert!(
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == header["kid"]),
        "kid {} not in {}",
        header["kid"],
        jwks.text
    );
    let keys = parse_jwks(jwks.text.as_bytes()).unwrap();
    let policy = VerifyPolicy::new(w.zone.clone(), ISSUER, MandateUse::Resource, PIPERNET);
    let verified = verify(&resource_token, &keys, &policy, SystemClock.now()).unwrap();
    assert_eq!(verified.sid, rc["sid"].as_str().unwrap());

    stop(workers).await;
}

// --- 45, 46, 47 ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_through_the_real_stream() {
    let Some(w) = pg_world("sts_e2e_revocation").await else {
        return;
    };
    let workers = w.start().await;
    let stream = names::SESSIONS_REVOKE;
    let group = names::GROUP_STS_REVOCATION;
    let dead = names::dead_letter_stream(stream).into_owned();
    let pending = async || {
        w.streams
            .pending_summary(stream, group)
            .await
            .map(|p| p.count)
            .unwrap_or(u64::MAX)
    };
    let dead_letters = async || {
        w.streams
            .range(&dead, EntryId::MIN, EntryId::MAX, None)
            .await
            .unwrap()
    };
    let revocation = &w.svc.consumer_health()[0];

    let gw = w.delegated_mint("read").await;
    assert_eq!(gw.status, StatusCode::OK, "{}", gw.text);
    let gw = gw.token().to_owned();
    let gw_sid = claims(&gw)["sid"].as_str().unwrap().to_owned();
    // A child of the gateway record, to see the cascade.
    let r = w.gateway_exchange(&gw).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let child_sid = claims(r.token())["sid"].as_str().unwrap().to_owned();
    let session_b_record = w.session_b.subject_authority_record_id.clone();

    let signed = |pairs: &[(&str, &str)]| {
        let mut f: Fields = pairs.iter().copied().collect();
        sign_fields(&w.stream_key, stream, &mut f);
        f
    };
    let revoke = [
        ("zone_id", w.zone.as_str()),
        ("session_id", gw_sid.as_str()),
        ("reason", "grant_revoked"),
    ];

    // 46: a badly signed revoke (signed, then altered) is dead-lettered and changes nothing.
    let mut forged = signed(&revoke);
    forged.insert("reason", "tampered");
    w.streams.xadd(stream, &forged).await.unwrap();
    wait_until("the forged revoke dead-lettered", async || {
        dead_letters().await.len() == 1
    })
    .await;
    let dlq = dead_letters().await;
    assert_eq!(dlq[0].fields.get(DLQ_REASON), Some(REASON_HMAC_FAILED));
    // The dead letter is itself signed for its own stream.
    caracal_core::streams::signature::verify(&w.stream_key, &dead, dlq[0].fields.iter()).unwrap();
    wait_until("the forged revoke acknowledged", async || {
        pending().await == 0
    })
    .await;
    assert_eq!(w.status_of(&gw_sid).await.status, AuthorityStatus::Active);
    assert_eq!(
        w.status_of(&child_sid).await.status,
        AuthorityStatus::Active
    );
    assert_eq!(w.gateway_exchange(&gw).await.status, StatusCode::OK);

    // 47: a signed Session-only message is acknowledged without any change.
    let acked_before = revocation.stats().acked;
    w.streams
        .xadd(
            stream,
            &signed(&[
                ("zone_id", w.zone.as_str()),
                ("agent_session_id", w.session_b.agent_session_id.as_str()),
            ]),
        )
        .await
        .unwrap();
    wait_until("the Session-only message acknowledged", async || {
        revocation.stats().acked > acked_before && pending().await == 0
    })
    .await;
    assert_eq!(dead_letters().await.len(), 1, "not dead-lettered");
    for id in [&gw_sid, &child_sid, &session_b_record] {
        let r = w.status_of(id).await;
        assert_eq!(r.status, AuthorityStatus::Active, "{id}");
        assert!(r.revoked_at.is_none());
    }

    // 45: the signed revoke cascades in Postgres; the next gateway exchange is refused.
    w.streams.xadd(stream, &signed(&revoke)).await.unwrap();
    wait_until("record revoked in Postgres", async || {
        w.status_of(&gw_sid).await.status == AuthorityStatus::Revoked
    })
    .await;
    for id in [&gw_sid, &child_sid] {
        let r = w.status_of(id).await;
        assert_eq!(r.status, AuthorityStatus::Revoked, "{id}");
        assert_eq!(r.revoked_reason.as_deref(), Some("grant_revoked"), "{id}");
        assert!(r.revoked_at.is_some());
    }
    assert_eq!(
        w.status_of(&session_b_record).await.status,
        AuthorityStatus::Active,
        "the parent of the revoked record is untouched"
    );
    wait_until("the revoke acknowledged", async || pending().await == 0).await;
    let r = w.gateway_exchange(&gw).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.description(), DENY_RECORD_INACTIVE);

    stop(workers).await;
}

// --- Audit frames ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_frames_reach_redis_signed() {
    let Some(w) = pg_world("sts_e2e_audit").await else {
        return;
    };
    let workers = w.start().await;
    assert_eq!(w.bootstrap_b().await.status, StatusCode::OK);
    let gw = w.delegated_mint("read").await.token().to_owned();
    assert_eq!(w.gateway_exchange(&gw).await.status, StatusCode::OK);
    // A denial is audited too.
    let r = w
        .exchange(
            &w.app_b,
            SECRET_B,
            &[("resource", PIPERNET), ("scope", "admin")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    tokio::time::timeout(WAIT, w.svc.emitter().flush())
        .await
        .expect("flush timed out")
        .unwrap();

    let frames = w
        .streams
        .range(names::AUDIT_EVENTS, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap();
    assert!(frames.len() >= 4, "{} frames", frames.len());
    let wrong = AuditHmacKey::from_hex(STREAMS_KEY_HEX).unwrap();
    let mut decisions = Vec::new();
    for frame in &frames {
        let id = frame.fields.get("id").expect("id");
        let data = frame.fields.get("data").expect("data");
        let sig = frame.fields.get("sig").expect("sig");
        verify_payload_sig(&w.audit_key, data.as_bytes(), Some(sig)).unwrap();
        assert!(verify_payload_sig(&wrong, data.as_bytes(), Some(sig)).is_err());
        let event: Value = serde_json::from_str(data).unwrap();
        assert_eq!(event["id"], id);
        assert_eq!(event["zone_id"], w.zone);
        decisions.push(event["decision"].as_str().unwrap_or("").to_owned());
    }
    assert!(decisions.iter().any(|d| d == "allow"), "{decisions:?}");
    assert!(decisions.iter().any(|d| d == "deny"), "{decisions:?}");
    assert_eq!(w.svc.emitter().stats().dropped_total, 0);
    stop(workers).await;
}

// --- 57 and Redis down -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_tracks_consumer_groups_and_redis() {
    let Some(w) = pg_world("sts_e2e_ready").await else {
        return;
    };
    assert_eq!(w.get("/health").await.status, StatusCode::OK);
    // 57: the backends answer but no consumer has created its group yet.
    let r = w.get("/ready").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.body["reason"], "stream_consumers_not_ready");
    let workers = w.start().await;
    // The revocation group is shared; the cache groups are this replica's own, created by
    // its consumers (nothing was provisioned).
    let host = &w.svc.settings().hostname;
    for (stream, group) in [
        (
            names::SESSIONS_REVOKE,
            names::GROUP_STS_REVOCATION.to_owned(),
        ),
        (names::POLICY_INVALIDATE, names::opa_engine_group(host)),
        (names::KEYS_INVALIDATE, names::sts_keys_group(host)),
    ] {
        let groups = w.streams.groups(stream).await.unwrap();
        assert!(
            groups.iter().any(|g| g.name == group),
            "{stream}: group {group} missing"
        );
    }

    if w.redis.is_external() {
        // An external Redis (CARACAL_TEST_REDIS_URL) is not ours to stop.
        eprintln!("SKIPPED (part): ready_tracks_consumer_groups_and_redis: external Redis");
        stop(workers).await;
        return;
    }
    tokio::task::block_in_place(|| w.redis.stop()).unwrap();
    let r = w.get("/ready").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.body["reason"], "redis_unreachable");
    // Redis back (AOF reloaded, the groups with it): ready again.
    tokio::task::block_in_place(|| w.redis.restart()).unwrap();
    w.wait_ready().await;
    stop(workers).await;
}

// --- 11 --------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_secrets_block_on_redis_windows() {
    let Some(w) = pg_world("sts_e2e_secret_failures").await else {
        return;
    };
    let bootstrap = [("resource", PIPERNET), ("scope", "agent:lifecycle")];
    for i in 0..60 {
        let r = w.exchange(&w.app_b, "wrong", &bootstrap).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "attempt {i}: {}",
            r.text
        );
    }
    let r = w.exchange(&w.app_b, "wrong", &bootstrap).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.error(), "provider_rate_limited");
    let r = w.bootstrap_b().await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    // The window and the block are Redis keys with an expiry (named by the SHA-256 of the
    // application id); the other application is unaffected.
    let counter = {
        use sha2::Digest as _;
        format!(
            "auth-rl:{}",
            hex::encode(sha2::Sha256::digest(w.app_b.id.as_bytes()))
        )
    };
    let count = w.redis_cmd(&["GET", &counter]).as_text();
    assert_eq!(count.as_deref(), Some("61"), "{counter}");
    let ttl = w.redis_int(&["PTTL", &counter]);
    assert!(ttl > 0 && ttl <= 60_000, "{counter}: PTTL {ttl}");
    let blocked = format!("{counter}:blocked");
    let ttl = w.redis_int(&["TTL", &blocked]);
    assert!(ttl > 0 && ttl <= 60, "{blocked}: TTL {ttl}");
    let r = w
        .exchange(
            &w.app_a,
            "wrong",
            &[("resource", PIPERNET), ("scope", "agent:lifecycle")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
}

// --- PyJWT through the HTTP JWKS -------------------------------------------------------------

const PYJWT_SCRIPT: &str = r#"
import json, sys
import jwt

token, jwks, issuer, audience, zone = sys.argv[1:6]
header = jwt.get_unverified_header(token)
keyset = jwt.PyJWKSet.from_json(jwks)
key = next(k for k in keyset.keys if k.key_id == header["kid"])
claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=audience, issuer=issuer,
                    options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]})
assert claims["zone_id"] == zone, claims["zone_id"]
refused = []
for name, kwargs in [
    ("audience", dict(audience="resource://elsewhere", issuer=issuer)),
    ("issuer", dict(audience=audience, issuer="https://evil.example")),
    # exp is checked: with a negative leeway of 2 h the token is already expired.
    ("exp", dict(audience=audience, issuer=issuer, leeway=-7200)),
]:
    try:
        jwt.decode(token, key.key, algorithms=["ES256"], **kwargs)
    except jwt.InvalidTokenError:
        refused.append(name)
h, p, s = token.split(".")
tampered = h + "." + p + "." + ("A" if s[0] != "A" else "B") + s[1:]
try:
    jwt.decode(tampered, key.key, algorithms=["ES256"], audience=audience, issuer=issuer)
except jwt.InvalidSignatureError:
    refused.append("signature")
print(json.dumps({"alg": header["alg"], "claims": claims, "refused": refused}))
"#;

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_a_resource_mandate_through_the_http_jwks() {
    if !python_ready() {
        assert!(
            !is_ci(),
            "CI=true: python3 with PyJWT and cryptography is required (see .ci/run)"
        );
        eprintln!("SKIPPED: pyjwt via HTTP JWKS: python3 with PyJWT/cryptography not available");
        return;
    }
    let Some(w) = pg_world("sts_e2e_pyjwt").await else {
        return;
    };
    let gw = w.delegated_mint("read").await;
    assert_eq!(gw.status, StatusCode::OK, "{}", gw.text);
    let r = w.gateway_exchange(gw.token()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.token().to_owned();
    let jwks = w
        .get(&format!("/.well-known/jwks.json?zone_id={}", w.zone))
        .await;
    assert_eq!(jwks.status, StatusCode::OK, "{}", jwks.text);

    let mut child = tokio::process::Command::new("python3");
    child
        .args([
            "-c",
            PYJWT_SCRIPT,
            &token,
            &jwks.text,
            ISSUER,
            PIPERNET,
            &w.zone,
        ])
        .kill_on_drop(true);
    let out = tokio::time::timeout(StdDuration::from_secs(60), child.output())
        .await
        .expect("python3 timed out")
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused our resource mandate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["alg"], "ES256");
    assert_eq!(reply["claims"], claims(&token));
    assert_eq!(reply["claims"]["aud"], json!([PIPERNET]));
    assert_eq!(reply["claims"]["use"], "resource");
    assert_eq!(
        reply["refused"],
        json!(["audience", "issuer", "exp", "signature"]),
        "PyJWT must refuse a wrong audience, issuer, an expired token and a bad signature"
    );
}
