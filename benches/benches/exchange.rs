//! The in-process STS exchange (`caracal_core::exchange::Sts::token`), no HTTP (issue #10):
//!
//! - `exchange/bootstrap`: a client-authenticated bootstrap (session mandate for
//!   `agent:lifecycle`); the client secret is verified once (Argon2id) and then served from
//!   the verified-secret cache, as in production;
//! - `exchange/delegated_mint`: a delegated mint through a delegation edge (authority record,
//!   Session and edge checks, chain rebuild, policy, mint, `jti` registration);
//! - `exchange/gateway_reexchange`: the Gateway's HMAC-signed re-exchange of a gateway
//!   mandate into a resource mandate (envelope, single-use nonce, subject verify, policy,
//!   directive, mint).
//!
//! The world is seeded in memory like `caracal-sts/tests/support`: one zone, an orchestrator
//! and a worker application, one resource, a policy granting the worker `read`, two Sessions
//! and an edge. Audit events go to a sink that drops them (the emitter's queueing is measured
//! by the load harness, not here); the mint limit is lifted so a long run is not throttled.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use caracal_core::audit::AuditEvent;
use caracal_core::audit::sink::AuditSink;
use caracal_core::clock::{SharedClock, SystemClock};
use caracal_core::exchange::Sts;
use caracal_core::exchange::envelope::{self, EnvelopeHeaders, GatewayKey};
use caracal_core::exchange::{StsConfig, StsParts, StsStores, TokenRequest};
use caracal_core::ids::{SharedIdGen, UuidV7};
use caracal_core::mandate::{SignatureProof, ZoneKeys, verify_signature};
use caracal_core::model::Attribution;
use caracal_core::model::application::{Application, RegistrationMethod};
use caracal_core::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use caracal_core::model::delegation::{DelegationEdge, EdgeStatus};
use caracal_core::model::policy_set::ManifestEntry;
use caracal_core::model::resource::{OperationEnforcement, Resource};
use caracal_core::model::session::{Lifecycle, Session, SessionStatus};
use caracal_core::model::zone::Zone;
use caracal_core::policy::cache::BundleCache;
use caracal_core::policy::lifecycle::{NewPolicy, PolicyLifecycle};
use caracal_core::secrets::Keyring;
use caracal_core::secrets::client_secret::hash_client_secret;
use caracal_core::secrets::envelope::Kek;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::coordinator::CoordinatorStore;
use caracal_core::store::directory::{ApplicationStore, ResourceStore, ZoneStore};
use caracal_core::store::memory::MemoryStore;
use chrono::{DateTime, Duration, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const ISSUER: &str = "https://sts.caracal.bench";
const SECRET_A: &str = "secret-a-0123456789";
const SECRET_B: &str = "secret-b-0123456789";
const RESOURCE: &str = "resource://pipernet";
const GATEWAY_KEY_HEX: &str = "6a0f7c2e9b1d4f3a8c5e7b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const ZONE: &str = "0190f2a0-0000-7000-8000-00000000000a";
const APP_A: &str = "0190f2a0-0000-7000-8000-0000000000a1";
const APP_B: &str = "0190f2a0-0000-7000-8000-0000000000b1";
const SESSION_A: &str = "0190f2a0-0000-7000-8000-0000000000f1";
const SESSION_B: &str = "0190f2a0-0000-7000-8000-0000000000f2";
const EDGE: &str = "0190f2a0-0000-7000-8000-0000000000f9";

/// Drops every event: the exchange's own cost, without the emitter's queue.
struct Discard;

impl AuditSink for Discard {
    fn emit(&self, _event: AuditEvent) {}
}

fn attribution() -> Attribution {
    Attribution::created_by("admin:bench")
}

fn app(id: &str, name: &str, secret: &str, t: DateTime<Utc>) -> Application {
    Application {
        id: id.to_owned(),
        zone_id: ZONE.to_owned(),
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

fn record(id: &str, subject: &str, t: DateTime<Utc>) -> AuthorityRecord {
    AuthorityRecord {
        id: id.to_owned(),
        zone_id: ZONE.to_owned(),
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

fn session(id: &str, app: &str, record: &str, label: &str, t: DateTime<Utc>) -> Session {
    Session {
        agent_session_id: id.to_owned(),
        zone_id: ZONE.to_owned(),
        application_id: app.to_owned(),
        parent_id: None,
        subject_authority_record_id: record.to_owned(),
        lifecycle: Lifecycle::Task,
        labels: vec![label.to_owned()],
        status: SessionStatus::Active,
        depth: 0,
        ttl_seconds: Some(86_400),
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

/// A seeded engine over a memory store.
async fn world() -> Arc<Sts> {
    let clock: SharedClock = Arc::new(SystemClock);
    let ids: SharedIdGen = Arc::new(UuidV7);
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let keyring = Arc::new(Keyring::from_hex(&Kek::generate_hex().unwrap(), None).unwrap());
    let keys = Arc::new(ZoneKeys::new(
        store.clone(),
        store.clone(),
        keyring.clone(),
        clock.clone(),
        ids.clone(),
    ));
    let policies = Arc::new(BundleCache::new(store.clone(), clock.clone()));
    let mut config = StsConfig::new(ISSUER);
    config.mint_limit_per_min = u32::MAX;
    let sts = Arc::new(Sts::new(StsParts {
        config,
        stores: StsStores::from_store(store.clone()),
        ephemeral: store.clone(),
        keys,
        keyring,
        policies,
        audit: Arc::new(Discard),
        gateway_key: Some(GatewayKey::from_hex(GATEWAY_KEY_HEX).unwrap()),
        clock: clock.clone(),
        ids: ids.clone(),
    }));

    let t = clock.now();
    store
        .insert_zone(&Zone {
            id: ZONE.to_owned(),
            name: "bench".to_owned(),
            slug: "bench".to_owned(),
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
    store
        .insert_application(&app(APP_A, "orchestrator", SECRET_A, t))
        .await
        .unwrap();
    store
        .insert_application(&app(APP_B, "worker", SECRET_B, t))
        .await
        .unwrap();
    store
        .insert_resource(&Resource {
            id: "0190f2a0-0000-7000-8000-0000000000d1".to_owned(),
            zone_id: ZONE.to_owned(),
            name: RESOURCE.to_owned(),
            identifier: RESOURCE.to_owned(),
            upstream_url: Some("https://upstream.example/api".into()),
            scopes: vec!["read".into(), "write".into()],
            credential_provider_id: None,
            operations: vec![],
            operation_enforcement: OperationEnforcement::TransportUniform,
            attribution: attribution(),
            created_at: t,
            updated_at: t,
            archived_at: None,
        })
        .await
        .unwrap();
    let rec_a = record("0190f2a0-0000-7000-8000-0000000000e1", APP_A, t);
    let rec_b = record("0190f2a0-0000-7000-8000-0000000000e2", APP_B, t);
    store.insert_authority(&rec_a).await.unwrap();
    store.insert_authority(&rec_b).await.unwrap();
    let mut tx = store.begin(ZONE).await.unwrap();
    tx.insert_session(&session(SESSION_A, APP_A, &rec_a.id, "orchestrator", t))
        .await
        .unwrap();
    tx.insert_session(&session(SESSION_B, APP_B, &rec_b.id, "worker", t))
        .await
        .unwrap();
    tx.insert_edge(&DelegationEdge {
        id: EDGE.to_owned(),
        zone_id: ZONE.to_owned(),
        source_session_id: SESSION_A.to_owned(),
        target_session_id: SESSION_B.to_owned(),
        issuer_application_id: APP_A.to_owned(),
        receiver_application_id: APP_B.to_owned(),
        parent_edge_id: None,
        resource_id: None,
        scopes: vec!["read".into()],
        constraints_json: serde_json::Map::new(),
        status: EdgeStatus::Active,
        expires_at: t + Duration::hours(24),
        edge_version: 1,
        revoked_at: None,
        created_at: t,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let doc = json!({
        "app_ids": {"orchestrator": APP_A, "worker": APP_B},
        "grants": {RESOURCE: {"application": "worker", "roles": {"worker": ["read", "write"]}}}
    })
    .to_string();
    let life = PolicyLifecycle::new(store.clone(), clock, ids);
    let (_, v) = life
        .create_policy(
            ZONE,
            NewPolicy {
                name: "bench",
                description: None,
                content: &doc,
                actor: None,
            },
        )
        .await
        .unwrap();
    let set = life
        .create_policy_set(ZONE, "bench", None, None)
        .await
        .unwrap();
    let sv = life
        .create_policy_set_version(
            ZONE,
            &set.id,
            &[ManifestEntry {
                policy_version_id: v.id.clone(),
            }],
        )
        .await
        .unwrap();
    life.activate(ZONE, &set.id, &sv.id).await.unwrap();
    sts.policies().invalidate(ZONE).await.unwrap();
    sts
}

fn form(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
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
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

const NO_ENVELOPE: EnvelopeHeaders<'static> = EnvelopeHeaders {
    timestamp: None,
    nonce: None,
    signature: None,
};

async fn client_exchange(sts: &Sts, body: &str) -> String {
    let req = TokenRequest {
        method: "POST",
        path: "/oauth/2/token",
        query: None,
        content_type: Some("application/x-www-form-urlencoded"),
        body: body.as_bytes(),
        request_id: "0190f2a0-0000-7000-8000-00000000abcd",
        envelope: NO_ENVELOPE,
    };
    match sts.token(&req).await {
        Ok(r) => r.access_token,
        Err(e) => panic!("exchange refused: {e:?}"),
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// One Gateway re-exchange of `subject`, with a fresh nonce and request id (and, as the
/// in-process Gateway does, check 11's signature proof when given).
async fn gateway_exchange(sts: &Sts, key: &GatewayKey, subject: &str) -> String {
    gateway_exchange_proven(sts, key, subject, None).await
}

async fn gateway_exchange_proven(
    sts: &Sts,
    key: &GatewayKey,
    subject: &str,
    proof: Option<&SignatureProof>,
) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("0190f2a0-0000-7000-8000-{n:012}");
    let nonce = format!("bench-nonce-{n:016}");
    let body = form(&[
        ("grant_type", EXCHANGE),
        ("zone_id", ZONE),
        ("application_id", APP_B),
        ("subject_token", subject),
        ("subject_token_type", ACCESS),
        ("resource", RESOURCE),
        ("request_method", "GET"),
        ("request_path", "/items"),
        ("gateway_request_id", &request_id),
    ]);
    let ts = Utc::now().timestamp().to_string();
    let sig = envelope::sign(key, &ts, &nonce, "POST", "/oauth/2/token", body.as_bytes());
    let req = TokenRequest {
        method: "POST",
        path: "/oauth/2/token",
        query: None,
        content_type: Some("application/x-www-form-urlencoded"),
        body: body.as_bytes(),
        request_id: &request_id,
        envelope: EnvelopeHeaders {
            timestamp: Some(&ts),
            nonce: Some(&nonce),
            signature: Some(&sig),
        },
    };
    match sts.token_proven(&req, proof).await {
        Ok(r) => r.access_token,
        Err(e) => panic!("gateway exchange refused: {e:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sts = rt.block_on(world());
    let key = GatewayKey::from_hex(GATEWAY_KEY_HEX).unwrap();
    let bootstrap = form(&[
        ("grant_type", EXCHANGE),
        ("zone_id", ZONE),
        ("application_id", APP_B),
        ("client_secret", SECRET_B),
        ("resource", RESOURCE),
        ("scope", "agent:lifecycle"),
    ]);
    let delegated = form(&[
        ("grant_type", EXCHANGE),
        ("zone_id", ZONE),
        ("application_id", APP_B),
        ("client_secret", SECRET_B),
        ("resource", RESOURCE),
        ("scope", "read"),
        ("agent_session_id", SESSION_B),
        ("delegation_edge_id", EDGE),
    ]);
    // Warm the verified-secret cache and the zone's key and bundle; check each path once.
    rt.block_on(client_exchange(&sts, &bootstrap));
    let gateway_mandate = rt.block_on(client_exchange(&sts, &delegated));
    rt.block_on(gateway_exchange(&sts, &key, &gateway_mandate));
    let zone_set = rt.block_on(sts.keys().verification_keys(ZONE)).unwrap();
    let proof = verify_signature(&gateway_mandate, &zone_set).unwrap();

    let mut g = c.benchmark_group("exchange");
    g.bench_function("bootstrap", |b| {
        b.to_async(&rt).iter(|| client_exchange(&sts, &bootstrap))
    });
    g.bench_function("delegated_mint", |b| {
        b.to_async(&rt).iter(|| client_exchange(&sts, &delegated))
    });
    g.bench_function("gateway_reexchange", |b| {
        b.to_async(&rt)
            .iter(|| gateway_exchange(&sts, &key, &gateway_mandate))
    });
    // What the in-process Gateway runs: the subject's signature was verified by check 11.
    g.bench_function("gateway_reexchange_proven", |b| {
        b.to_async(&rt)
            .iter(|| gateway_exchange_proven(&sts, &key, &gateway_mandate, Some(&proof)))
    });
    g.finish();
}

criterion_group!(exchange, benches);
criterion_main!(exchange);
