//! Failure drills (issue #11): the STS, the Audit service, the Gateway and the control plane
//! (Admin API and Coordinator with their jobs) in-process on a real
//! Postgres and a real Redis of their own, under a steady light load of STS bootstrap
//! exchanges (two good requests, then one with a wrong client secret, repeated every 40 ms),
//! while one dependency at a time is broken and restored.
//!
//! | drill | broken | asserted meanwhile |
//! |---|---|---|
//! | [`drill_postgres_stopped`] | Postgres stopped (fast shutdown) | STS, Audit and control-plane readiness = `postgres_unreachable`; no exchange answered 200 |
//! | [`drill_redis_stopped`] | Redis stopped | STS, Gateway and control-plane readiness = `redis_unreachable`, Audit not ready; audit frames the STS emits meanwhile are spilled to `AUDIT_REPLAY_DIR` and replayed |
//! | [`drill_audit_service_stopped`] | the Audit service's workers stopped, then a new Audit service started | the audit group's pending/lag grows; nothing is lost |
//! | [`drill_duplicated_events`] | every audit frame delivered again, twice | the ledger is unchanged (benign duplicates), DLQ empty |
//!
//! Every drill then asserts recovery (all four services ready again and a bootstrap exchange
//! answered 200), that a wrong client secret was never answered 200 at any point, and that no
//! audit event was lost or doubled: once the STS's buffer and spill files are drained and the
//! ingest group has nothing pending, every zone's chain is dense (`chain_seq` 1..n), holds each
//! event id once, verifies (hashes, links, HMACs), and holds exactly the frames the STS
//! emitted (sent directly plus spilled), with one event per successful exchange. Recovery time
//! (restore → every service ready and a 200) is printed, never asserted.
//!
//! Every wait is bounded, and each drill as a whole runs under [`DRILL_LIMIT`]. Without the
//! server binaries a drill prints `SKIPPED` (a failure under `CI=true`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use caracal_audit::{AuditConfig, AuditService, Backends};
use caracal_control::{ControlService, ControlSettings};
use caracal_core::audit::ledger_verify::verify_ledger_zone;
use caracal_core::audit::sink::AuditSink;
use caracal_core::audit::{AuditEvent, AuditHmacKey};
use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::backend::redis::{RedisConfig, RedisKeys, RedisStreams};
use caracal_core::clock::{Clock, SharedClock, SystemClock};
use caracal_core::exchange::envelope::GatewayKey;
use caracal_core::ids::{IdGen, SharedIdGen, UuidV7};
use caracal_core::model::Attribution;
use caracal_core::model::application::{Application, RegistrationMethod};
use caracal_core::model::policy_set::ManifestEntry;
use caracal_core::model::resource::{OperationEnforcement, Resource};
use caracal_core::model::zone::Zone;
use caracal_core::policy::lifecycle::{NewPolicy, PolicyLifecycle};
use caracal_core::secrets::client_secret::hash_client_secret;
use caracal_core::store::directory::{ApplicationStore, ResourceStore, ZoneStore};
use caracal_core::streams::{EntryId, names};
use caracal_gateway::GatewayService;
use caracal_service::Env;
use caracal_service::config::Secret;
use caracal_sts::{StsBackends, StsService, StsSettings};
use caracal_test_support::{
    EphemeralPostgres, EphemeralRedis, PgOptions, RedisOptions, SupportError, is_ci,
    own_postgres_with_or_skip,
};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

const ISSUER: &str = "https://sts.drills.test";
const SECRET: &str = "drill-secret-0123456789";
const WRONG_SECRET: &str = "not-the-secret-0123456";
const PIPERNET: &str = "resource://pipernet";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const GATEWAY_KEY_HEX: &str = "6a0f7c2e9b1d4f3a8c5e7b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a";
const STREAMS_KEY_HEX: &str = "3c5e7a9b1d2f4a6c8e0b2d4f6a8c0e2b4d6f8a1c3e5b7d9f0b2d4f6a8c0e2b4d";
const KEK_HEX: &str = "8f2a6c1e9b3d4f5a7c8e0b1d2f3a4c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
const BOOT_TOKEN: &str = "drill-boot-token-0123456789-0123456789";
const AUDIT_KEY_HEX: &str = "9b1d2f4a6c8e0b2d4f6a8c0e2b4d6f8a1c3e5b7d9f0b2d4f6a8c0e2b4d6f8a3c";
/// The bound of every wait inside a drill.
const WAIT: Duration = Duration::from_secs(45);
/// The bound of a whole drill.
const DRILL_LIMIT: Duration = Duration::from_secs(240);
/// The bound of one request through a router.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long each outage lasts under load.
const OUTAGE: Duration = Duration::from_secs(3);

fn uuid() -> String {
    UuidV7.next_id()
}

fn audit_key() -> AuditHmacKey {
    AuditHmacKey::from_hex(AUDIT_KEY_HEX).unwrap()
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Poll `cond` every 50 ms until it holds; fail after [`WAIT`] naming `what`.
async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Servers of the drill's own (drills stop and restart them), or `None` when skipped.
fn servers(test: &str) -> Option<(EphemeralPostgres, EphemeralRedis)> {
    let opts = PgOptions {
        honour_env: false,
        ..PgOptions::default()
    };
    let pg = own_postgres_with_or_skip(test, opts)?;
    let redis_opts = RedisOptions {
        honour_env: false,
        ..RedisOptions::default()
    };
    let redis = match EphemeralRedis::start_with(redis_opts) {
        Ok(r) => r,
        Err(SupportError::BinariesMissing { what, hint }) => {
            assert!(
                !is_ci(),
                "CI=true and redis-server is missing ({what}: {hint})"
            );
            eprintln!("SKIPPED: {test}: no redis-server ({what}: {hint}). This drill did NOT run.");
            return None;
        }
        Err(e) => panic!("{test}: could not start redis-server: {e}"),
    };
    Some((pg, redis))
}

/// One answered (or timed-out) exchange of the load.
#[derive(Debug, Clone)]
struct Outcome {
    started: Instant,
    finished: Instant,
    /// HTTP status; 0 when the request timed out.
    status: u16,
    /// The `X-Request-Id` the STS answered with.
    request_id: String,
    /// Whether the request carried the right client secret.
    good_secret: bool,
}

/// The running stack.
struct Stack {
    pg: EphemeralPostgres,
    redis: EphemeralRedis,
    db: String,
    sts: Arc<StsService>,
    sts_workers: Option<caracal_sts::Workers>,
    audit: Arc<AuditService>,
    audit_workers: Option<caracal_audit::Workers>,
    gateway: Arc<GatewayService>,
    gateway_workers: Option<caracal_gateway::Workers>,
    control: Arc<ControlService>,
    control_workers: Option<caracal_control::service::Workers>,
    zone: String,
    app: Application,
    replay: tempfile::TempDir,
    _gateway_replay: tempfile::TempDir,
}

fn audit_config(db: &str, redis: &str, consumer: &str) -> AuditConfig {
    let mut c = AuditConfig::dev();
    c.hmac_key = Some(audit_key());
    c.database_url = Some(Secret::new(db));
    c.redis_url = Some(Secret::new(redis));
    c.consumer = consumer.to_owned();
    c.claim_idle = Duration::from_secs(1);
    c.poll_interval = Duration::from_millis(200);
    c.ingest.checkpoint_every = 50;
    c.ingest.checkpoint_interval = Duration::from_secs(1);
    c
}

async fn start_audit(
    db: &str,
    redis: &str,
    consumer: &str,
) -> (Arc<AuditService>, caracal_audit::Workers) {
    let config = audit_config(db, redis, consumer);
    let backends = Backends::connect(&config).await.unwrap();
    let svc = AuditService::new(config, backends).unwrap();
    let workers = svc.spawn_workers();
    (svc, workers)
}

impl Stack {
    async fn start(test: &str) -> Option<Self> {
        let (pg, redis) = servers(test)?;
        let db = pg.create_database(test).await.unwrap();
        let mut client = caracal_test_support::connect(&db).await.unwrap();
        migrate(&mut client).await.unwrap();
        drop(client);
        let redis_url = redis.url();
        let streams = RedisStreams::connect(&RedisConfig::new(redis_url.clone())).unwrap();
        caracal_core::streams::provision::provision(&streams)
            .await
            .unwrap();

        // STS, as `caracal up` builds it on Postgres and Redis.
        let replay = tempfile::tempdir().unwrap();
        let mut settings = StsSettings::dev(ISSUER, replay.path().to_path_buf()).unwrap();
        let gateway_key = GatewayKey::from_hex(GATEWAY_KEY_HEX).unwrap();
        settings.gateway_key = Some(gateway_key.clone());
        settings.streams_key = Some(hex::decode(STREAMS_KEY_HEX).unwrap());
        settings.audit_key = Some(audit_key());
        settings.database_url = Some(Secret::new(db.clone()));
        settings.redis_url = Some(Secret::new(redis_url.clone()));
        settings.hostname = format!("drill-{}", &uuid()[24..]);
        let clock: SharedClock = Arc::new(SystemClock);
        let backends = StsBackends::connect(&settings, clock.clone())
            .await
            .unwrap();
        let sts = StsService::new(settings, backends).unwrap();

        // Audit.
        let (audit, audit_workers) = start_audit(&db, &redis_url, "drill-audit-1").await;

        // Gateway: in-process exchange, Redis jti markers and streams, the Postgres snapshot.
        let gateway_replay = tempfile::tempdir().unwrap();
        let mut gw = caracal_gateway::GatewaySettings::dev(gateway_replay.path().to_path_buf());
        gw.gateway_key = Some(gateway_key);
        gw.streams_key = Some(hex::decode(STREAMS_KEY_HEX).unwrap());
        gw.audit_key = Some(audit_key());
        let pg_store = PgStore::open(&db, PgStoreOptions::default()).await.unwrap();
        let mut parts = GatewayService::in_process_parts(
            gw,
            Arc::clone(sts.sts()),
            Arc::new(RedisKeys::new(streams.pool().clone())),
            Arc::new(streams.clone()),
            clock.clone(),
        );
        parts.snapshot = Arc::new(caracal_gateway::revocation::PgSnapshotSource::new(
            pg_store.clone(),
        ));
        parts.redis = Arc::new(streams.clone());
        let gateway = GatewayService::new(parts).unwrap();
        gateway.reload_revocations().await.unwrap();

        // The control plane (Admin API, Coordinator and their jobs, outbox dispatch included).
        let env = Env::from_pairs([
            ("CARACAL_MODE", "stable"),
            ("SECRET_STORE_KEK", KEK_HEX),
            ("ISSUER_URL", ISSUER),
            ("CARACAL_BOOTSTRAP_ADMIN_TOKEN", BOOT_TOKEN),
            ("ADMIN_AUDIT_HMAC_KEY", AUDIT_KEY_HEX),
            ("IDEMPOTENCY_HMAC_KEY", GATEWAY_KEY_HEX),
            ("STREAMS_HMAC_KEY", STREAMS_KEY_HEX),
            ("DATABASE_URL", db.as_str()),
            ("REDIS_URL", redis_url.as_str()),
            ("HOSTNAME", "drill-control"),
        ]);
        let control =
            ControlService::connect(ControlSettings::from_env(&env).unwrap(), clock.clone())
                .await
                .unwrap();
        let control_workers = control.spawn_workers();

        let (zone, app) = seed(&pg_store, &sts).await;
        let sts_workers = sts.spawn_workers();
        let gateway_workers = gateway.spawn_workers();
        let stack = Self {
            pg,
            redis,
            db,
            sts,
            sts_workers: Some(sts_workers),
            audit,
            audit_workers: Some(audit_workers),
            gateway,
            gateway_workers: Some(gateway_workers),
            control,
            control_workers: Some(control_workers),
            zone,
            app,
            replay,
            _gateway_replay: gateway_replay,
        };
        stack.wait_all_ready("the stack to start").await;
        Some(stack)
    }

    /// The first failing readiness reason of each service (`"ready"` when it passes).
    async fn readiness(&self) -> [&'static str; 4] {
        let sts = caracal_sts::routes::readiness(&self.sts)
            .await
            .err()
            .unwrap_or("ready");
        let audit = caracal_audit::routes::readiness(&self.audit)
            .await
            .err()
            .unwrap_or("ready");
        let gateway = caracal_gateway::routes::readiness(&self.gateway)
            .await
            .err()
            .unwrap_or("ready");
        let control = self.control.readiness().await.err().unwrap_or("ready");
        [sts, audit, gateway, control]
    }

    async fn wait_all_ready(&self, what: &str) {
        wait_until(what, async || self.readiness().await == ["ready"; 4]).await;
    }

    /// Poll readiness until `pred` holds for the reasons, recording every reason seen (the
    /// failure message lists them).
    async fn wait_reasons(
        &self,
        what: &str,
        seen: &mut BTreeSet<String>,
        pred: impl Fn(&[&'static str; 4]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self.readiness().await;
            for (svc, reason) in ["sts", "audit", "gateway", "control"].iter().zip(r) {
                seen.insert(format!("{svc}:{reason}"));
            }
            if pred(&r) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for: {what}; readiness seen: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Keep the outage for at least [`OUTAGE`] and until `n` requests both started and
    /// finished inside it (requests may block for a pool timeout), recording readiness.
    async fn hold_outage(&self, load: &Load, down: Instant, n: usize, seen: &mut BTreeSet<String>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self.readiness().await;
            for (svc, reason) in ["sts", "audit", "gateway", "control"].iter().zip(r) {
                seen.insert(format!("{svc}:{reason}"));
            }
            let inside = statuses(&load.snapshot(), down, Instant::now())
                .values()
                .sum::<usize>();
            if down.elapsed() >= OUTAGE && inside >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {WAIT:?}: only {inside} requests completed inside the outage"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Start the load: bootstrap exchanges every 40 ms, every third one with a wrong secret.
    fn load(&self) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let router = self.sts.router();
        let (zone, app) = (self.zone.clone(), self.app.id.clone());
        let task = {
            let stop = stop.clone();
            let outcomes = outcomes.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let good = n % 3 != 0;
                    let o = bootstrap(&router, &zone, &app, good).await;
                    outcomes.lock().unwrap().push(o);
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            })
        };
        Load {
            stop,
            outcomes,
            task,
        }
    }

    /// Everything the STS emitted has reached the ledger: no frame buffered or spilled, the
    /// ingest group has nothing pending or undelivered, and the ledger holds `sent + spilled`
    /// events. Then check every zone's chain.
    async fn assert_evidence(&self, outcomes: &[Outcome]) -> BTreeMap<String, usize> {
        let emitter = self.sts.emitter().clone();
        let ledger = self.audit.backends().ledger.clone();
        let streams = self.audit.backends().streams.clone();
        let zone = self.zone.clone();
        wait_until("the audit evidence to drain into the ledger", async || {
            let s = emitter.stats();
            if s.buffered > 0 || s.replay_files > 0 {
                return false;
            }
            let groups = streams
                .groups(names::AUDIT_EVENTS)
                .await
                .unwrap_or_default();
            let ingest = groups
                .iter()
                .find(|g| g.name == names::GROUP_AUDIT_INGESTOR);
            if !ingest.is_some_and(|g| g.pending == 0 && g.lag.unwrap_or(0) == 0) {
                return false;
            }
            let rows = ledger
                .read_chain(&zone, 0, 1_000_000)
                .await
                .unwrap_or_default();
            rows.len() as u64 == s.sent_total + s.spilled_total
        })
        .await;
        let stats = emitter.stats();
        assert_eq!(
            stats.dropped_total, 0,
            "the STS lost audit events: {stats:?}"
        );
        assert!(!emitter.evidence_lost());

        let mut by_request: BTreeMap<String, usize> = BTreeMap::new();
        for zone in ledger.ledger_zones().await.unwrap() {
            let rows = ledger.read_chain(&zone, 0, 1_000_000).await.unwrap();
            let seqs: Vec<i64> = rows.iter().map(|r| r.chain_seq).collect();
            let dense: Vec<i64> = (1..=rows.len() as i64).collect();
            assert_eq!(
                seqs, dense,
                "{zone}: chain_seq is 1..n without gap or repeat"
            );
            let ids: BTreeSet<(&str, i64)> = rows
                .iter()
                .map(|r| (r.event.id.as_str(), r.event.occurred_at.timestamp_micros()))
                .collect();
            assert_eq!(ids.len(), rows.len(), "{zone}: an event is stored twice");
            let report = verify_ledger_zone(ledger.as_ref(), &zone, Some(&audit_key()))
                .await
                .unwrap();
            assert!(report.is_clean(), "{zone}: {report:?}");
            for r in &rows {
                *by_request.entry(r.event.request_id.clone()).or_default() += 1;
            }
        }
        // Every exchange answered 200 left exactly one event.
        for o in outcomes.iter().filter(|o| o.status == 200) {
            assert_eq!(
                by_request.get(&o.request_id).copied().unwrap_or(0),
                1,
                "request {} (200) has no single audit event",
                o.request_id
            );
        }
        let dlq = streams.len(names::AUDIT_EVENTS_DLQ).await.unwrap();
        assert_eq!(dlq, 0, "dead letters in the audit DLQ");
        println!(
            "evidence: {} events in the ledger ({} sent directly, {} spilled and replayed), chains verify",
            stats.sent_total + stats.spilled_total,
            stats.sent_total,
            stats.spilled_total
        );
        by_request
    }

    async fn shutdown(mut self) {
        let grace = Duration::from_secs(5);
        if let Some(w) = self.gateway_workers.take() {
            tokio::time::timeout(Duration::from_secs(20), w.shutdown(grace))
                .await
                .ok();
        }
        if let Some(w) = self.sts_workers.take() {
            tokio::time::timeout(Duration::from_secs(20), w.shutdown(grace))
                .await
                .ok();
        }
        if let Some(w) = self.control_workers.take() {
            tokio::time::timeout(Duration::from_secs(20), w.shutdown(grace))
                .await
                .ok();
        }
        if let Some(w) = self.audit_workers.take() {
            tokio::time::timeout(Duration::from_secs(20), w.shutdown(grace))
                .await
                .ok();
        }
    }
}

/// Zone, application (client secret), resource and the activated policy.
async fn seed(store: &PgStore, sts: &Arc<StsService>) -> (String, Application) {
    let t = SystemClock.now();
    let attribution = Attribution::created_by("admin:drill");
    let zone = uuid();
    let slug = format!("drill-{}", &zone[24..]);
    store
        .insert_zone(&Zone {
            id: zone.clone(),
            name: slug.clone(),
            slug,
            dcr_enabled: false,
            operator_coauthor_badge: false,
            operator_governed: false,
            attribution: attribution.clone(),
            created_at: t,
            updated_at: t,
            archived_at: None,
        })
        .await
        .unwrap();
    let app = Application {
        id: uuid(),
        zone_id: zone.clone(),
        name: "worker".to_owned(),
        registration_method: RegistrationMethod::Managed,
        traits: vec![],
        expires_at: None,
        archived_at: None,
        attribution: attribution.clone(),
        created_at: t,
        updated_at: t,
        client_secret_hash: Some(hash_client_secret(SECRET).unwrap()),
    };
    store.insert_application(&app).await.unwrap();
    store
        .insert_resource(&Resource {
            id: uuid(),
            zone_id: zone.clone(),
            name: PIPERNET.to_owned(),
            identifier: PIPERNET.to_owned(),
            upstream_url: Some("https://upstream.example/api".into()),
            scopes: vec!["read".into(), "write".into()],
            credential_provider_id: None,
            operations: vec![],
            operation_enforcement: OperationEnforcement::TransportUniform,
            attribution,
            created_at: t,
            updated_at: t,
            archived_at: None,
        })
        .await
        .unwrap();
    let store = Arc::new(store.clone());
    let life = PolicyLifecycle::new(
        store,
        Arc::new(SystemClock) as SharedClock,
        Arc::new(UuidV7) as SharedIdGen,
    );
    let content = json!({
        "app_ids": {"worker": app.id},
        "grants": {PIPERNET: {"application": "worker", "roles": {"worker": ["read", "write"]}}},
    })
    .to_string();
    let name = format!("p-{}", uuid());
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
    sts.sts().policies().invalidate(&zone).await.unwrap();
    (zone, app)
}

/// A synthetic audit event in `zone` (what an STS decision would emit).
fn marker(zone: &str, request_id: &str) -> AuditEvent {
    let data = json!({
        "id": uuid(), "zone_id": zone, "event_type": "drill_marker", "request_id": request_id,
        "decision": "deny", "evaluation_status": "complete",
        "determining_policies_json": null, "diagnostics_json": null,
        "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    });
    AuditEvent::parse(data.to_string().as_bytes()).unwrap()
}

/// One bootstrap exchange through the STS router.
async fn bootstrap(router: &axum::Router, zone: &str, app: &str, good: bool) -> Outcome {
    let secret = if good { SECRET } else { WRONG_SECRET };
    let body = [
        ("grant_type", EXCHANGE),
        ("zone_id", zone),
        ("application_id", app),
        ("client_secret", secret),
        ("resource", PIPERNET),
        ("scope", "agent:lifecycle"),
    ]
    .iter()
    .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
    .collect::<Vec<_>>()
    .join("&");
    let request = Request::post("/oauth/2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-request-id", uuid())
        .body(Body::from(body))
        .unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let _ = response.into_body().collect().await;
        (status, request_id)
    })
    .await;
    let (status, request_id) = answer.unwrap_or((0, String::new()));
    Outcome {
        started,
        finished: Instant::now(),
        status,
        request_id,
        good_secret: good,
    }
}

/// The background load.
struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn snapshot(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    /// Wait for a 200 that started after `since` (the STS serves again).
    async fn wait_success_after(&self, since: Instant) {
        wait_until("a successful exchange", async || {
            self.snapshot()
                .iter()
                .any(|o| o.started >= since && o.status == 200)
        })
        .await;
    }

    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(REQUEST_TIMEOUT * 2, self.task)
            .await
            .expect("the load did not stop")
            .unwrap();
        Arc::try_unwrap(self.outcomes)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_else(|a| a.lock().unwrap().clone())
    }
}

/// Statuses seen in `[from, to]` (by start time), as `status -> count`.
fn statuses(outcomes: &[Outcome], from: Instant, to: Instant) -> BTreeMap<u16, usize> {
    let mut out = BTreeMap::new();
    for o in outcomes
        .iter()
        .filter(|o| o.started >= from && o.finished <= to)
    {
        *out.entry(o.status).or_default() += 1;
    }
    out
}

/// Fail closed at all times: a wrong client secret is never answered 200.
fn assert_never_allowed_a_wrong_secret(outcomes: &[Outcome]) {
    let bad: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.good_secret && o.status == 200)
        .collect();
    assert!(bad.is_empty(), "a wrong secret was answered 200: {bad:?}");
    assert!(
        outcomes.iter().any(|o| !o.good_secret && o.status != 0),
        "the load never exercised a wrong secret"
    );
}

fn report(drill: &str, recovery: Duration, outage: &BTreeMap<u16, usize>, seen: &BTreeSet<String>) {
    println!(
        "drill {drill}: recovery {} ms after restore",
        recovery.as_millis()
    );
    println!("drill {drill}: statuses during the outage {outage:?}");
    println!("drill {drill}: readiness seen {seen:?}");
}

async fn bounded(fut: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(DRILL_LIMIT, fut)
        .await
        .expect("the drill exceeded its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_postgres_stopped() {
    bounded(async {
        let Some(stack) = Stack::start("drill_postgres_stopped").await else {
            return;
        };
        let load = stack.load();
        load.wait_success_after(Instant::now()).await;

        let mut seen = BTreeSet::new();
        stack.pg.stop().unwrap();
        let down = Instant::now();
        stack
            .wait_reasons(
                "STS, Audit and control plane to report postgres_unreachable",
                &mut seen,
                |r| {
                    r[0] == "postgres_unreachable"
                        && r[1] == "postgres_unreachable"
                        && r[3] == "postgres_unreachable"
                },
            )
            .await;
        stack.hold_outage(&load, down, 3, &mut seen).await;
        let restoring = Instant::now();
        stack.pg.restart().unwrap();
        let restored = Instant::now();
        stack
            .wait_all_ready("every service ready after Postgres returns")
            .await;
        load.wait_success_after(restored).await;
        let recovery = restored.elapsed();

        let outcomes = load.finish().await;
        let outage = statuses(&outcomes, down, restoring);
        assert!(!outage.is_empty(), "no request ran during the outage");
        assert!(
            !outage.contains_key(&200),
            "an exchange was allowed while Postgres was down: {outage:?}"
        );
        assert_never_allowed_a_wrong_secret(&outcomes);
        report("postgres_stopped", recovery, &outage, &seen);
        stack.assert_evidence(&outcomes).await;
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_redis_stopped() {
    bounded(async {
        let Some(stack) = Stack::start("drill_redis_stopped").await else {
            return;
        };
        let load = stack.load();
        load.wait_success_after(Instant::now()).await;

        let mut seen = BTreeSet::new();
        stack.redis.stop().unwrap();
        let down = Instant::now();
        stack
            .wait_reasons(
                "STS, Gateway and control plane to report redis_unreachable, Audit not ready",
                &mut seen,
                |r| {
                    r[0] == "redis_unreachable"
                        && r[1] != "ready"
                        && r[2] == "redis_unreachable"
                        && r[3] == "redis_unreachable"
                },
            )
            .await;
        // Evidence produced while Redis is away (exchanges are refused without Redis, so the
        // STS's own emitter is handed events directly): it must be spilled to disk and
        // replayed, not lost.
        let markers: Vec<String> = (0..5).map(|_| uuid()).collect();
        for request_id in &markers {
            AuditSink::emit(stack.sts.emitter().as_ref(), marker(&stack.zone, request_id));
        }
        let emitter = stack.sts.emitter().clone();
        wait_until("the STS to spill the markers", async || {
            emitter.stats().spilled_total >= markers.len() as u64
        })
        .await;
        stack.hold_outage(&load, down, 3, &mut seen).await;
        let restoring = Instant::now();
        let spilled = stack.sts.emitter().stats();
        assert!(spilled.replay_files > 0, "no spill file while Redis is down: {spilled:?}");
        stack.redis.restart().unwrap();
        let restored = Instant::now();
        stack.wait_all_ready("every service ready after Redis returns").await;
        load.wait_success_after(restored).await;
        let recovery = restored.elapsed();

        let outcomes = load.finish().await;
        let outage = statuses(&outcomes, down, restoring);
        assert!(!outage.is_empty(), "no request ran during the outage");
        assert_never_allowed_a_wrong_secret(&outcomes);
        report("redis_stopped", recovery, &outage, &seen);
        println!(
            "drill redis_stopped: at restore the STS had spilled {} frames into {} file(s) in AUDIT_REPLAY_DIR",
            spilled.spilled_total, spilled.replay_files
        );
        if outage.contains_key(&200) {
            // Exchanges may succeed without Redis only if their evidence was kept on disk.
            assert!(spilled.spilled_total > 0, "200s during the outage but nothing spilled");
        }
        let by_request = stack.assert_evidence(&outcomes).await;
        for m in &markers {
            assert_eq!(by_request.get(m).copied(), Some(1), "marker {m} not in the ledger once");
        }
        assert_eq!(
            std::fs::read_dir(stack.replay.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".ndjson"))
                .count(),
            0,
            "spill files left after the replay"
        );
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_audit_service_stopped() {
    bounded(async {
        let Some(mut stack) = Stack::start("drill_audit_service_stopped").await else {
            return;
        };
        let load = stack.load();
        load.wait_success_after(Instant::now()).await;

        // Stop the Audit service's workers (the ingestor stops reading) while events flow.
        let workers = stack.audit_workers.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), workers.shutdown(Duration::from_secs(5)))
            .await
            .unwrap();
        let down = Instant::now();
        tokio::time::sleep(OUTAGE).await;
        let streams = stack.audit.backends().streams.clone();
        let groups = streams.groups(names::AUDIT_EVENTS).await.unwrap();
        let ingest = groups
            .iter()
            .find(|g| g.name == names::GROUP_AUDIT_INGESTOR)
            .unwrap();
        let backlog = ingest.lag.unwrap_or(0) + ingest.pending;
        assert!(backlog > 0, "no backlog built up while the ingestor was stopped: {ingest:?}");
        // The STS keeps serving: audit delivery is asynchronous.
        let during = statuses(&load.snapshot(), down, Instant::now());
        assert!(during.contains_key(&200), "the STS stopped serving: {during:?}");

        // A new Audit service (another consumer name, as a replacement pod would be).
        let restoring = Instant::now();
        let (audit, workers) = start_audit(&stack.db, &stack.redis.url(), "drill-audit-2").await;
        stack.audit = audit;
        stack.audit_workers = Some(workers);
        stack.wait_all_ready("every service ready after the Audit restart").await;
        let ledger = stack.audit.backends().ledger.clone();
        let zone = stack.zone.clone();
        let before = ledger.read_chain(&zone, 0, 1_000_000).await.unwrap().len();
        wait_until("the backlog to be ingested", async || {
            let g = streams.groups(names::AUDIT_EVENTS).await.unwrap_or_default();
            g.iter()
                .find(|g| g.name == names::GROUP_AUDIT_INGESTOR)
                .is_some_and(|g| g.pending == 0 && g.lag.unwrap_or(1) == 0)
        })
        .await;
        let recovery = restoring.elapsed();

        let outcomes = load.finish().await;
        assert_never_allowed_a_wrong_secret(&outcomes);
        let mut seen = BTreeSet::new();
        seen.insert(format!("audit backlog at restart: {backlog} entries; ledger rows when the new service became ready: {before}"));
        report("audit_service_stopped", recovery, &during, &seen);
        stack.assert_evidence(&outcomes).await;
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_duplicated_events() {
    bounded(async {
        let Some(stack) = Stack::start("drill_duplicated_events").await else {
            return;
        };
        let load = stack.load();
        load.wait_success_after(Instant::now()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let outcomes = load.finish().await;
        stack.assert_evidence(&outcomes).await;
        let ledger = stack.audit.backends().ledger.clone();
        let before = ledger.read_chain(&stack.zone, 0, 1_000_000).await.unwrap();

        // Deliver every frame again, twice (a producer's at-least-once replay, a relay retry).
        let streams = stack.audit.backends().streams.clone();
        let entries = streams
            .range(names::AUDIT_EVENTS, EntryId::MIN, EntryId::MAX, None)
            .await
            .unwrap();
        assert!(!entries.is_empty());
        let started = Instant::now();
        for _ in 0..2 {
            for e in &entries {
                streams.xadd(names::AUDIT_EVENTS, &e.fields).await.unwrap();
            }
        }
        wait_until("the duplicates to be consumed", async || {
            let g = streams.groups(names::AUDIT_EVENTS).await.unwrap_or_default();
            g.iter()
                .find(|g| g.name == names::GROUP_AUDIT_INGESTOR)
                .is_some_and(|g| g.pending == 0 && g.lag.unwrap_or(1) == 0)
        })
        .await;
        let consumed = started.elapsed();
        let after = ledger.read_chain(&stack.zone, 0, 1_000_000).await.unwrap();
        assert_eq!(
            after.len(),
            before.len(),
            "duplicated deliveries changed the ledger"
        );
        assert_eq!(
            after.iter().map(|r| &r.content_sha256).collect::<Vec<_>>(),
            before.iter().map(|r| &r.content_sha256).collect::<Vec<_>>()
        );
        stack.assert_evidence(&outcomes).await;
        println!(
            "drill duplicated_events: {} duplicate deliveries consumed in {} ms, ledger unchanged ({} rows)",
            entries.len() * 2,
            consumed.as_millis(),
            after.len()
        );
        stack.shutdown().await;
    })
    .await;
}
