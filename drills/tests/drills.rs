//! Failure drills (issue #11): the STS, the Audit service, the Gateway and the control plane
//! (Admin API and Coordinator with their jobs) in-process on a real
//! Postgres and a real Redis of their own, under a steady light load of STS bootstrap
//! exchanges (two good requests, then one with a wrong client secret, repeated every 40 ms),
//! while one dependency at a time is broken and restored. Pipernet forwards to a local
//! recording upstream, so "forwarded" is what the upstream saw, not what a status suggests;
//! `use=gateway` mandates are minted through a seeded edge (orchestrator Session S_A →
//! worker Session S_B).
//!
//! | drill | broken | asserted meanwhile |
//! |---|---|---|
//! | [`drill_postgres_stopped`] | Postgres stopped (fast shutdown), right after a policy change | STS, Audit and control-plane readiness = `postgres_unreachable`; no exchange answered 200; Gateway traffic refused and never forwarded; after the restore the Gateway forwards only while ready with a fresh revocation snapshot; the policy change is in force once the STS serves again (see *Policy freshness*) |
//! | [`drill_redis_stopped`] | Redis stopped | STS, Gateway and control-plane readiness = `redis_unreachable`, Audit not ready; audit frames the STS emits meanwhile are spilled to `AUDIT_REPLAY_DIR` and replayed; Gateway traffic refused and never forwarded; after the restore the Gateway forwards only while ready with a fresh revocation snapshot |
//! | [`drill_sts_stopped`] | the STS's HTTP server stopped, then restarted on the same port, behind a Gateway that exchanges over HTTP (HMAC envelope, JWKS over HTTP) | Gateway readiness = `sts_unreachable`; every Gateway request refused 5xx `sts_unavailable` (502 transport, then 503 fast-fail) and never forwarded; the STS circuit opens within `THRESHOLD` refusals; after the restore: ready again, the circuit lets a probe through and requests are forwarded |
//! | [`drill_gateway_killed_with_spill`] | a Gateway (its own runtime and pools) spills audit frames while Redis is down, then is killed (runtime dropped: no final flush) | the spill files survive the kill; a new Gateway on the same replay dir drains it to empty once Redis is back; every spilled frame is in the ledger exactly once |
//! | [`drill_coordinator_killed_between_commit_and_publish`] | the control plane dies mid-dispatch: its workers are gone, a delegation revoke commits its cascade, and the rows are claimed under the dying relay's name with the production lease, never published | the rows are undispatched in Postgres and absent from the streams; a mandate of the revoked edge is refused (the STS re-reads the edge); a new control plane started: once the dead relay's 30 s lease lapses every row is published exactly once (counted by `outbox_id`; by whichever relay claims it, the STS's shares the outbox table), and the Gateway then refuses the mandate itself, 401 `session revoked` |
//! | [`drill_audit_service_stopped`] | the Audit service's workers stopped, then a new Audit service started | the audit group's pending/lag grows; nothing is lost |
//! | [`drill_duplicated_events`] | every audit frame delivered again, twice | the ledger is unchanged (benign duplicates), DLQ empty |
//!
//! Every drill then asserts recovery (all four services ready again and a bootstrap exchange
//! answered 200), that a wrong client secret was never answered 200 at any point, and that no
//! audit event was lost or doubled: once every producer's buffer and spill files are drained
//! (the STS and every Gateway the drill ran) and the ingest group has nothing pending, every
//! zone's chain is dense (`chain_seq` 1..n), holds each event id once, verifies (hashes, links,
//! HMACs), and holds exactly the frames the producers emitted (sent directly plus spilled),
//! with one event per successful exchange. Recovery time (restore → every service ready and a
//! 200, or the drill's own end point, printed with it) is printed, never asserted.
//!
//! *Recovery order on the data plane* ([`assert_gateway_recovery_order`]): a Gateway load
//! (fresh mandates, a pre-minted reserve while the STS cannot mint) samples the Gateway's
//! readiness and snapshot freshness right after every request. Asserted: nothing forwarded
//! from the stop until the restore began, and every later forward left the Gateway ready with
//! a fresh snapshot. A 3 s outage is far shorter than the 70 s staleness bound, so the
//! snapshot stays fresh throughout; the stale-snapshot path is covered by the Gateway's own
//! tests. In the Postgres drill the STS's 503 `sts_unavailable` "state store unavailable"
//! counts as a circuit failure, so the Gateway's STS circuit may still be open for up to
//! 10 s after Postgres returns while its readiness says `ready`: the printed "first forward"
//! delay shows it.
//!
//! *Policy freshness* ([`Stack::assert_policy_fresh_after`]): a probe application's grant is
//! withdrawn right before Postgres stops. Asserted: once back, the STS refuses the probe
//! within [`WAIT`] and never grants it again. Not asserted: that *no* exchange is served with
//! the cached bundle before the invalidation arrives — the STS keeps serving from its cached
//! bundle while `caracal.policy.invalidate` is still in the outbox; the drill prints how many
//! probes were answered with the withdrawn grant after the restore and until when.
//!
//! Every wait is bounded, and each drill as a whole runs under [`DRILL_LIMIT`]. Without the
//! server binaries a drill prints `SKIPPED` (a failure under `CI=true`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use caracal_audit::{AuditConfig, AuditService, Backends};
use caracal_control::{ControlService, ControlSettings};
use caracal_core::audit::emitter::AuditEmitter;
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
use caracal_core::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use caracal_core::model::delegation::{DelegationEdge, EdgeStatus};
use caracal_core::model::policy_set::ManifestEntry;
use caracal_core::model::resource::{OperationEnforcement, Resource};
use caracal_core::model::session::{Lifecycle, Session, SessionStatus};
use caracal_core::model::zone::Zone;
use caracal_core::policy::lifecycle::{NewPolicy, PolicyLifecycle};
use caracal_core::secrets::client_secret::hash_client_secret;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::coordinator::CoordinatorStore;
use caracal_core::store::directory::{ApplicationStore, ResourceStore, ZoneStore};
use caracal_core::store::outbox::OutboxStore;
use caracal_core::streams::relay::RelayConfig;
use caracal_core::streams::{EntryId, Streams, names};
use caracal_gateway::GatewayService;
use caracal_service::Env;
use caracal_service::config::Secret;
use caracal_sts::{StsBackends, StsService, StsSettings};
use caracal_test_support::{
    EphemeralPostgres, EphemeralRedis, PgOptions, RedisOptions, SupportError, is_ci,
    own_postgres_with_or_skip,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
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
const OPERATOR_TOKEN: &str = "drill-operator-token-0123456789-0123456789";
/// The second resource, granted only to the probe application: the policy-freshness probe.
const PROBE_RESOURCE: &str = "resource://drill-probe";
const PROBE_SECRET: &str = "drill-probe-secret-0123456789";
/// The bound of every wait inside a drill.
const WAIT: Duration = Duration::from_secs(45);
/// The bound of a whole drill.
const DRILL_LIMIT: Duration = Duration::from_secs(240);
/// The bound of one request through a router.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the Gateway load waits for a fresh mandate before it takes one from its reserve.
const MINT_TIMEOUT: Duration = Duration::from_secs(1);
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

/// An audit producer whose frames must all reach the ledger: the STS and every Gateway a
/// drill starts. A killed producer (`live = false`) still counts what it sent and spilled, but
/// its own files are drained by whoever inherited its replay directory.
struct Producer {
    name: String,
    emitter: Arc<AuditEmitter>,
    live: bool,
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
    world: World,
    upstream: Upstream,
    pg_store: PgStore,
    clock: SharedClock,
    producers: Mutex<Vec<Producer>>,
    replay: tempfile::TempDir,
    _gateway_replay: tempfile::TempDir,
}

/// Mints `use=gateway` mandates through the STS router.
#[derive(Clone)]
struct Minter {
    router: axum::Router,
    zone: String,
    app: String,
    world: World,
}

impl Minter {
    /// A fresh `use=gateway` mandate of the worker for pipernet (`read`), minted through the
    /// S_A → S_B edge; `None` when the STS refuses (during an outage).
    async fn gateway_mandate(&self) -> Option<String> {
        let (status, body) = token_request(
            &self.router,
            &[
                ("grant_type", EXCHANGE),
                ("zone_id", self.zone.as_str()),
                ("application_id", self.app.as_str()),
                ("client_secret", SECRET),
                ("resource", PIPERNET),
                ("scope", "read"),
                ("agent_session_id", self.world.session_b.as_str()),
                ("delegation_edge_id", self.world.edge.as_str()),
            ],
        )
        .await;
        (status == 200)
            .then(|| body["access_token"].as_str().map(str::to_owned))
            .flatten()
    }
}

/// The seeded delegation world a `use=gateway` mandate is minted in: the orchestrator's
/// Session S_A, the worker's (the load's application) Session S_B, the edge S_A → S_B for
/// `read`, and the probe application of the policy-freshness check.
#[derive(Debug, Clone)]
struct World {
    orchestrator: String,
    session_b: String,
    edge: String,
    probe_app: String,
}

/// The control plane's settings, as `caracal-control` reads them from its environment.
fn control_settings(db: &str, redis: &str) -> ControlSettings {
    let env = Env::from_pairs([
        ("CARACAL_MODE", "stable"),
        ("SECRET_STORE_KEK", KEK_HEX),
        ("ISSUER_URL", ISSUER),
        ("CARACAL_BOOTSTRAP_ADMIN_TOKEN", BOOT_TOKEN),
        ("CARACAL_COORDINATOR_TOKEN", OPERATOR_TOKEN),
        ("ADMIN_AUDIT_HMAC_KEY", AUDIT_KEY_HEX),
        ("IDEMPOTENCY_HMAC_KEY", GATEWAY_KEY_HEX),
        ("STREAMS_HMAC_KEY", STREAMS_KEY_HEX),
        ("DATABASE_URL", db),
        ("REDIS_URL", redis),
        ("HOSTNAME", "drill-control"),
    ]);
    ControlSettings::from_env(&env).unwrap()
}

/// How to build one more Gateway process on the stack's Postgres and Redis: its own pools
/// (so a Gateway killed with its runtime takes only its own connections with it), the stack's
/// STS in process or over HTTP at `sts_url`.
#[derive(Clone)]
struct GatewayRecipe {
    db: String,
    redis: String,
    sts: Arc<StsService>,
    clock: SharedClock,
    hostname: String,
    replay_dir: PathBuf,
    sts_url: Option<String>,
}

impl GatewayRecipe {
    /// The Gateway with its initial snapshot loaded (workers not started).
    async fn build(self) -> Arc<GatewayService> {
        let mut gw = caracal_gateway::GatewaySettings::dev(self.replay_dir.clone());
        let gateway_key = GatewayKey::from_hex(GATEWAY_KEY_HEX).unwrap();
        gw.gateway_key = Some(gateway_key.clone());
        gw.streams_key = Some(hex::decode(STREAMS_KEY_HEX).unwrap());
        gw.audit_key = Some(audit_key());
        gw.hostname = self.hostname.clone();
        // A refused exchange must not hold a drill request for the default 5 s.
        gw.timeouts.sts = Duration::from_secs(2);
        let streams = RedisStreams::connect(&RedisConfig::new(self.redis.clone())).unwrap();
        let pg_store = PgStore::open(&self.db, PgStoreOptions::default())
            .await
            .unwrap();
        let mut parts = GatewayService::in_process_parts(
            gw,
            Arc::clone(self.sts.sts()),
            Arc::new(RedisKeys::new(streams.pool().clone())),
            Arc::new(streams.clone()),
            self.clock.clone(),
        );
        parts.snapshot = Arc::new(caracal_gateway::revocation::PgSnapshotSource::new(pg_store));
        parts.redis = Arc::new(streams);
        if let Some(url) = &self.sts_url {
            // The production wiring of `GatewayService::connect_parts`: exchange and JWKS
            // over HTTP under the HMAC envelope.
            let client = caracal_gateway::client::http_client(Duration::from_secs(2)).unwrap();
            parts.exchanger = Arc::new(caracal_gateway::exchange::HttpExchanger::new(
                client.clone(),
                url,
                Some(gateway_key),
                Duration::from_secs(2),
                self.clock.clone(),
            ));
            parts.jwks = Arc::new(caracal_gateway::jwks::HttpJwksSource::new(
                client,
                url,
                Duration::from_secs(2),
            ));
        }
        let gateway = GatewayService::new(parts).unwrap();
        gateway.reload_revocations().await.unwrap();
        gateway
    }
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
        // The control plane's relay (every 40 ms when idle) publishes the outbox; the STS's
        // relay is slowed so that the coordinator drill's claimer, not the STS, takes the
        // cascade's rows the moment they commit (otherwise a race it could lose).
        settings.relay_interval = Duration::from_secs(5);
        let clock: SharedClock = Arc::new(SystemClock);
        let backends = StsBackends::connect(&settings, clock.clone())
            .await
            .unwrap();
        let sts = StsService::new(settings, backends).unwrap();

        // Audit.
        let (audit, audit_workers) = start_audit(&db, &redis_url, "drill-audit-1").await;

        // Gateway: in-process exchange, Redis jti markers and streams, the Postgres snapshot.
        let gateway_replay = tempfile::tempdir().unwrap();
        let gateway = GatewayRecipe {
            db: db.clone(),
            redis: redis_url.clone(),
            sts: sts.clone(),
            clock: clock.clone(),
            hostname: "drill-gw-0".to_owned(),
            replay_dir: gateway_replay.path().to_path_buf(),
            sts_url: None,
        }
        .build()
        .await;
        let pg_store = PgStore::open(&db, PgStoreOptions::default()).await.unwrap();

        // The control plane (Admin API, Coordinator and their jobs, outbox dispatch included).
        let control = ControlService::connect(control_settings(&db, &redis_url), clock.clone())
            .await
            .unwrap();
        let control_workers = control.spawn_workers();

        let upstream = Upstream::start().await;
        let (zone, app, world) = seed(&pg_store, &sts, &upstream).await;
        let sts_workers = sts.spawn_workers();
        let gateway_workers = gateway.spawn_workers();
        let producers = Mutex::new(vec![
            Producer {
                name: "sts".to_owned(),
                emitter: sts.emitter().clone(),
                live: true,
            },
            Producer {
                name: "gateway".to_owned(),
                emitter: gateway.emitter().clone(),
                live: true,
            },
        ]);
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
            world,
            upstream,
            pg_store,
            clock,
            producers,
            replay,
            _gateway_replay: gateway_replay,
        };
        stack.wait_all_ready("the stack to start").await;
        Some(stack)
    }

    /// A recipe for one more Gateway on this stack.
    fn gateway_recipe(
        &self,
        hostname: &str,
        replay_dir: &Path,
        sts_url: Option<String>,
    ) -> GatewayRecipe {
        GatewayRecipe {
            db: self.db.clone(),
            redis: self.redis.url(),
            sts: self.sts.clone(),
            clock: self.clock.clone(),
            hostname: hostname.to_owned(),
            replay_dir: replay_dir.to_path_buf(),
            sts_url,
        }
    }

    /// Count `emitter`'s frames in the evidence check.
    fn add_producer(&self, name: &str, emitter: &Arc<AuditEmitter>, live: bool) {
        self.producers.lock().unwrap().push(Producer {
            name: name.to_owned(),
            emitter: emitter.clone(),
            live,
        });
    }

    /// Mints gateway mandates on this stack's STS.
    fn minter(&self) -> Minter {
        Minter {
            router: self.sts.router(),
            zone: self.zone.clone(),
            app: self.app.id.clone(),
            world: self.world.clone(),
        }
    }

    async fn mint_gateway_mandate(&self) -> Option<String> {
        self.minter().gateway_mandate().await
    }

    /// `n` gateway mandates, minted now (the STS must serve).
    async fn mint_gateway_mandates(&self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let m = self.mint_gateway_mandate().await;
            out.push(m.unwrap_or_else(|| panic!("gateway mandate {i} of {n} was refused")));
        }
        out
    }

    /// The probe application's bootstrap on the probe resource: 200 while the policy grants
    /// it, 403 `policy denied (…)` once the policy without the grant is in force. Returns the
    /// status and the refusal.
    async fn policy_probe(&self) -> (u16, String) {
        let (status, body) = token_request(
            &self.sts.router(),
            &[
                ("grant_type", EXCHANGE),
                ("zone_id", self.zone.as_str()),
                ("application_id", self.world.probe_app.as_str()),
                ("client_secret", PROBE_SECRET),
                ("resource", PROBE_RESOURCE),
                ("scope", "agent:lifecycle"),
            ],
        )
        .await;
        (status, refusal(&body))
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

    /// Everything every producer (the STS and each Gateway) emitted has reached the ledger:
    /// no frame buffered or spilled by a live producer, the ingest group has nothing pending or
    /// undelivered, and the ledger holds `sent + spilled` events summed over the producers
    /// (a killed Gateway's spilled frames are replayed by its successor, which does not count
    /// them again). Then check every zone's chain.
    async fn assert_evidence(&self, outcomes: &[Outcome]) -> BTreeMap<String, usize> {
        let producers: Vec<(String, Arc<AuditEmitter>, bool)> = self
            .producers
            .lock()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone(), p.emitter.clone(), p.live))
            .collect();
        let ledger = self.audit.backends().ledger.clone();
        let streams = self.audit.backends().streams.clone();
        let zone = self.zone.clone();
        let expected = || {
            producers
                .iter()
                .map(|(_, e, _)| {
                    let s = e.stats();
                    s.sent_total + s.spilled_total
                })
                .sum::<u64>()
        };
        wait_until("the audit evidence to drain into the ledger", async || {
            let drained = producers
                .iter()
                .filter(|(_, _, live)| *live)
                .all(|(_, e, _)| {
                    let s = e.stats();
                    s.buffered == 0 && s.replay_files == 0
                });
            if !drained {
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
            rows.len() as u64 == expected()
        })
        .await;
        let (mut sent, mut spilled) = (0, 0);
        for (name, emitter, _) in &producers {
            let stats = emitter.stats();
            assert_eq!(
                stats.dropped_total, 0,
                "{name} lost audit events: {stats:?}"
            );
            assert!(!emitter.evidence_lost(), "{name} latched evidence lost");
            sent += stats.sent_total;
            spilled += stats.spilled_total;
        }

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
            "evidence: {} events in the ledger from {} producer(s) ({sent} sent directly, {spilled} spilled and replayed), chains verify",
            sent + spilled,
            producers.len()
        );
        by_request
    }

    /// Policy freshness after a restore: probe the STS until it answers with the policy
    /// activated before the outage (the probe refused, 403). Asserted: it does so within
    /// [`WAIT`], and never answers with the withdrawn grant again once it has (no flapping
    /// back to a stale bundle). How many probes the STS still answered with the old bundle
    /// after the restore, and for how long, is reported (the STS does not hold exchanges
    /// until its bundle is confirmed current; see the drills' module docs).
    async fn assert_policy_fresh_after(&self, restored: Instant) -> String {
        let denied = |(status, refusal): &(u16, String)| {
            *status == 403 && refusal.starts_with("access_denied: policy denied")
        };
        let mut answers: Vec<(Duration, u16)> = Vec::new();
        wait_until("the STS to answer with the new policy", async || {
            let answer = self.policy_probe().await;
            answers.push((restored.elapsed(), answer.0));
            denied(&answer)
        })
        .await;
        let fresh_at = answers.last().unwrap().0;
        // The new bundle stays: a few more probes all refused by the policy.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let answer = self.policy_probe().await;
            assert!(
                denied(&answer),
                "the STS went back to the withdrawn grant: {answer:?}"
            );
        }
        let stale: Vec<Duration> = answers
            .iter()
            .filter(|(_, s)| *s == 200)
            .map(|(t, _)| *t)
            .collect();
        let others: BTreeSet<u16> = answers
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| *s != 200 && *s != 403)
            .collect();
        format!(
            "policy change made before the outage in force {} ms after the restore; {} probe(s) answered with the old policy before that{}; other statuses while recovering {others:?}",
            fresh_at.as_millis(),
            stale.len(),
            stale
                .last()
                .map(|t| format!(" (the last at +{} ms)", t.as_millis()))
                .unwrap_or_default()
        )
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

fn application(
    zone: &str,
    name: &str,
    secret: Option<&str>,
    t: chrono::DateTime<chrono::Utc>,
) -> Application {
    Application {
        id: uuid(),
        zone_id: zone.to_owned(),
        name: name.to_owned(),
        registration_method: RegistrationMethod::Managed,
        traits: vec![],
        expires_at: None,
        archived_at: None,
        attribution: Attribution::created_by("admin:drill"),
        created_at: t,
        updated_at: t,
        client_secret_hash: secret.map(|s| hash_client_secret(s).unwrap()),
    }
}

fn resource(
    zone: &str,
    identifier: &str,
    upstream: String,
    scopes: &[&str],
    t: chrono::DateTime<chrono::Utc>,
) -> Resource {
    Resource {
        id: uuid(),
        zone_id: zone.to_owned(),
        name: identifier.to_owned(),
        identifier: identifier.to_owned(),
        upstream_url: Some(upstream),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        credential_provider_id: None,
        operations: vec![],
        operation_enforcement: OperationEnforcement::TransportUniform,
        attribution: Attribution::created_by("admin:drill"),
        created_at: t,
        updated_at: t,
        archived_at: None,
    }
}

/// An active Session of `app` over a fresh authority record.
async fn session(
    store: &PgStore,
    zone: &str,
    app: &str,
    label: &str,
    t: chrono::DateTime<chrono::Utc>,
) -> Session {
    let record = AuthorityRecord {
        id: uuid(),
        zone_id: zone.to_owned(),
        session_type: SubjectType::Application,
        subject_id: app.to_owned(),
        parent_id: None,
        status: AuthorityStatus::Active,
        expires_at: t + chrono::Duration::hours(24),
        authenticated_at: Some(t),
        claims_json: json!({}),
        revoked_at: None,
        revoked_reason: None,
        created_at: t,
    };
    store.insert_authority(&record).await.unwrap();
    Session {
        agent_session_id: uuid(),
        zone_id: zone.to_owned(),
        application_id: app.to_owned(),
        parent_id: None,
        subject_authority_record_id: record.id,
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

/// The policy document: the worker owns pipernet (`read`, `write`); with `probe`, the probe
/// application also owns the probe resource.
fn policy_content(orchestrator: &str, worker: &str, probe: &str, grant_probe: bool) -> String {
    let mut grants = json!({
        PIPERNET: {"application": "worker", "roles": {"worker": ["read", "write"]}},
    });
    if grant_probe {
        grants[PROBE_RESOURCE] = json!({"application": "probe", "roles": {"probe": ["read"]}});
    }
    json!({
        "app_ids": {"orchestrator": orchestrator, "worker": worker, "probe": probe},
        "grants": grants,
    })
    .to_string()
}

/// Create and activate a policy set holding `content` (the activation enqueues
/// `caracal.policy.invalidate` in its transaction, as the Admin API's does).
async fn activate_policy(store: &PgStore, zone: &str, content: &str) {
    let life = PolicyLifecycle::new(
        Arc::new(store.clone()),
        Arc::new(SystemClock) as SharedClock,
        Arc::new(UuidV7) as SharedIdGen,
    );
    let name = format!("p-{}", uuid());
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
}

/// Zone, applications (client secrets), resources (pipernet forwards to the recording
/// upstream), the Sessions and edge of a gateway mandate, and the activated policy.
async fn seed(
    store: &PgStore,
    sts: &Arc<StsService>,
    upstream: &Upstream,
) -> (String, Application, World) {
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
    let app = application(&zone, "worker", Some(SECRET), t);
    let orchestrator = application(&zone, "orchestrator", None, t);
    let probe = application(&zone, "probe", Some(PROBE_SECRET), t);
    for a in [&app, &orchestrator, &probe] {
        store.insert_application(a).await.unwrap();
    }
    let upstream_url = format!("http://{}/api", upstream.addr);
    store
        .insert_resource(&resource(
            &zone,
            PIPERNET,
            upstream_url.clone(),
            &["read", "write"],
            t,
        ))
        .await
        .unwrap();
    store
        .insert_resource(&resource(&zone, PROBE_RESOURCE, upstream_url, &["read"], t))
        .await
        .unwrap();
    let session_a = session(store, &zone, &orchestrator.id, "orchestrator", t).await;
    let session_b = session(store, &zone, &app.id, "worker", t).await;
    let edge = DelegationEdge {
        id: uuid(),
        zone_id: zone.clone(),
        source_session_id: session_a.agent_session_id.clone(),
        target_session_id: session_b.agent_session_id.clone(),
        issuer_application_id: orchestrator.id.clone(),
        receiver_application_id: app.id.clone(),
        parent_edge_id: None,
        resource_id: None,
        scopes: vec!["read".into(), "write".into()],
        constraints_json: serde_json::Map::new(),
        status: EdgeStatus::Active,
        expires_at: t + chrono::Duration::hours(1),
        edge_version: 1,
        revoked_at: None,
        created_at: t,
    };
    let mut tx = store.begin(&zone).await.unwrap();
    tx.insert_session(&session_a).await.unwrap();
    tx.insert_session(&session_b).await.unwrap();
    tx.insert_edge(&edge).await.unwrap();
    tx.commit().await.unwrap();
    activate_policy(
        store,
        &zone,
        &policy_content(&orchestrator.id, &app.id, &probe.id, true),
    )
    .await;
    sts.sts().policies().invalidate(&zone).await.unwrap();
    let world = World {
        orchestrator: orchestrator.id,
        session_b: session_b.agent_session_id,
        edge: edge.id,
        probe_app: probe.id,
    };
    (zone, app, world)
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

/// A form POST to the STS token endpoint: status (0 on timeout) and JSON body.
async fn token_request(router: &axum::Router, pairs: &[(&str, &str)]) -> (u16, Value) {
    let body = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let request = Request::post("/oauth/2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-request-id", uuid())
        .body(Body::from(body))
        .unwrap();
    send(router, request).await
}

/// One request through `router`, bounded by [`REQUEST_TIMEOUT`]: status (0 on timeout) and
/// the JSON body (`Null` if none).
async fn send(router: &axum::Router, request: Request<Body>) -> (u16, Value) {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    })
    .await
    .unwrap_or((0, Value::Null))
}

/// `GET /v1/items` on pipernet through a Gateway's router with `mandate`.
async fn gateway_get(router: &axum::Router, mandate: &str) -> (u16, Value) {
    let request = Request::get("/v1/items")
        .header("authorization", format!("Bearer {mandate}"))
        .header("x-caracal-resource", PIPERNET)
        .header("x-request-id", uuid())
        .body(Body::empty())
        .unwrap();
    send(router, request).await
}

/// `error: error_description` of a refusal body (empty for a success).
fn refusal(body: &Value) -> String {
    match (body["error"].as_str(), body["error_description"].as_str()) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e.to_owned(),
        _ => String::new(),
    }
}

/// The recording upstream behind pipernet: counts what the Gateways forwarded, and when.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Self {
        let hits: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let seen = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(Instant::now());
                (
                    axum::http::StatusCode::OK,
                    [("content-type", "application/json")],
                    r#"{"ok":true}"#,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, hits, task }
    }

    fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// Forwards that arrived at or after `since`.
    fn since(&self, since: Instant) -> Vec<Instant> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|t| *t >= since)
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The STS router served over real HTTP (the server every Caracal service runs), so that a
/// Gateway can reach it the way a deployed one does.
struct StsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl StsServer {
    /// Serve `router` on `addr` (port 0 for a free one). Binding the port again right after a
    /// stop may need a moment, so a taken port is retried within [`WAIT`].
    async fn start(router: axum::Router, addr: SocketAddr) -> Self {
        let deadline = tokio::time::Instant::now() + WAIT;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "could not bind the STS on {addr} again: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let limits = caracal_service::server::ServerLimits {
            shutdown_grace: Duration::from_millis(500),
            ..caracal_service::server::ServerLimits::default()
        };
        let task = tokio::spawn(async move {
            let _ = caracal_service::server::serve_with(
                listener,
                router,
                async {
                    let _ = stopped.await;
                },
                limits,
            )
            .await;
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, close every connection (idle keep-alive ones at once, in-flight ones
    /// after a 500 ms grace) and release the port.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// A tokio runtime of its own, for a process a drill kills: dropping it aborts every task
/// spawned on it at its next await point, with no graceful shutdown (no final flush, no
/// drain), as `SIGKILL` would.
struct Doomed(Option<tokio::runtime::Runtime>);

impl Doomed {
    fn new(name: &str) -> Self {
        Self(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(name)
                .enable_all()
                .build()
                .unwrap(),
        ))
    }

    /// Run `fut` on this runtime and wait for its result from the caller's runtime.
    async fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let handle = self.0.as_ref().unwrap().spawn(fut);
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("the doomed runtime did not answer")
            .unwrap()
    }

    /// Kill everything running on it.
    fn kill(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Gateway traffic (fresh mandates each time, from a pre-minted reserve while the STS cannot
/// mint) through one Gateway to the recording upstream, with the Gateway's readiness and
/// revocation-snapshot freshness sampled right after each request.
struct GatewayLoad {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<GwOutcome>>>,
    task: tokio::task::JoinHandle<()>,
}

/// One Gateway request of the load.
#[derive(Debug, Clone)]
struct GwOutcome {
    started: Instant,
    finished: Instant,
    status: u16,
    /// The upstream saw a request while this one ran (the load is the only traffic).
    forwarded: bool,
    /// The Gateway's readiness right after the request (`"ready"` when it passes).
    ready_after: &'static str,
    /// The revocation snapshot was fresh right after the request.
    fresh_after: bool,
    /// `error` and `error_description` of a refusal.
    error: String,
}

impl Stack {
    /// Start [`GatewayLoad`] through the stack's Gateway with `reserve` mandates for outages.
    fn gateway_load(&self, reserve: Vec<String>) -> GatewayLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let stop = stop.clone();
            let outcomes = outcomes.clone();
            let minter = self.minter();
            let gateway = self.gateway.clone();
            let hits = self.upstream.hits.clone();
            tokio::spawn(async move {
                let mut reserve = reserve;
                let router = gateway.router();
                let count = || hits.lock().unwrap().len();
                while !stop.load(Ordering::SeqCst) {
                    // A mint the STS cannot answer (an outage holds it for a pool timeout)
                    // must not stall the load: give up after a second and use the reserve.
                    let minted = tokio::time::timeout(MINT_TIMEOUT, minter.gateway_mandate())
                        .await
                        .ok()
                        .flatten();
                    let mandate = minted.or_else(|| reserve.pop());
                    if let Some(m) = mandate {
                        let before = count();
                        let started = Instant::now();
                        let (status, body) = gateway_get(&router, &m).await;
                        let finished = Instant::now();
                        let forwarded = count() > before;
                        let ready_after = caracal_gateway::routes::readiness(&gateway)
                            .await
                            .err()
                            .unwrap_or("ready");
                        let fresh_after = !gateway.revocations().is_stale();
                        outcomes.lock().unwrap().push(GwOutcome {
                            started,
                            finished,
                            status,
                            forwarded,
                            ready_after,
                            fresh_after,
                            error: refusal(&body),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        GatewayLoad {
            stop,
            outcomes,
            task,
        }
    }
}

impl GatewayLoad {
    fn snapshot(&self) -> Vec<GwOutcome> {
        self.outcomes.lock().unwrap().clone()
    }

    async fn finish(self) -> Vec<GwOutcome> {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(REQUEST_TIMEOUT * 3, self.task)
            .await
            .expect("the gateway load did not stop")
            .unwrap();
        Arc::try_unwrap(self.outcomes)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_else(|a| a.lock().unwrap().clone())
    }
}

/// Recovery order on the data plane: from `down` (the dependency stopped) on, the Gateway
/// forwarded nothing before `restoring` (every request of the outage refused), and every
/// request it forwarded afterwards left it ready with a fresh revocation snapshot — no
/// risky traffic while revocation state was unknown. Returns the first forward after
/// `restoring`, as a delay from it.
fn assert_gateway_recovery_order(
    drill: &str,
    outcomes: &[GwOutcome],
    down: Instant,
    restoring: Instant,
) -> Duration {
    let during: Vec<&GwOutcome> = outcomes
        .iter()
        .filter(|o| o.started >= down && o.finished <= restoring)
        .collect();
    assert!(
        !during.is_empty(),
        "{drill}: no Gateway request ran during the outage"
    );
    let leaked: Vec<&&GwOutcome> = during
        .iter()
        .filter(|o| o.forwarded || (200..300).contains(&o.status))
        .collect();
    assert!(
        leaked.is_empty(),
        "{drill}: the Gateway forwarded during the outage: {leaked:?}"
    );
    let unsafe_forwards: Vec<&GwOutcome> = outcomes
        .iter()
        .filter(|o| o.started >= down && o.forwarded)
        .filter(|o| o.ready_after != "ready" || !o.fresh_after)
        .collect();
    assert!(
        unsafe_forwards.is_empty(),
        "{drill}: the Gateway forwarded while not ready or with a stale snapshot: {unsafe_forwards:?}"
    );
    let first = outcomes
        .iter()
        .filter(|o| o.started >= restoring && o.forwarded)
        .map(|o| o.finished)
        .min()
        .unwrap_or_else(|| panic!("{drill}: the Gateway never forwarded after the restore"));
    let mut statuses: BTreeMap<(u16, &str), usize> = BTreeMap::new();
    for o in &during {
        *statuses.entry((o.status, o.error.as_str())).or_default() += 1;
    }
    let reasons: BTreeSet<&str> = during.iter().map(|o| o.ready_after).collect();
    println!(
        "drill {drill}: Gateway statuses during the outage {statuses:?}, Gateway readiness after them {reasons:?}; first forward {} ms after the restore",
        first.duration_since(restoring).as_millis()
    );
    first.duration_since(restoring)
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
        let reserve = stack.mint_gateway_mandates(30).await;
        assert_eq!(
            stack.policy_probe().await.0,
            200,
            "the probe's grant is in force"
        );
        let load = stack.load();
        let gw_load = stack.gateway_load(reserve);
        load.wait_success_after(Instant::now()).await;

        // A policy change committed right before the outage: the probe's grant is withdrawn.
        // Its `caracal.policy.invalidate` sits in the outbox (or reaches the STS while its
        // reload cannot read the new version): either way the STS learns it only once
        // Postgres is back.
        let w = &stack.world;
        activate_policy(
            &stack.pg_store,
            &stack.zone,
            &policy_content(&w.orchestrator, &stack.app.id, &w.probe_app, false),
        )
        .await;
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
        wait_until("Gateway requests during the outage", async || {
            gw_load
                .snapshot()
                .iter()
                .filter(|o| o.started >= down)
                .count()
                >= 2
        })
        .await;
        let restoring = Instant::now();
        stack.pg.restart().unwrap();
        let restored = Instant::now();
        stack
            .wait_all_ready("every service ready after Postgres returns")
            .await;
        load.wait_success_after(restored).await;
        let recovery = restored.elapsed();
        let policy = stack.assert_policy_fresh_after(restored).await;
        wait_until("the Gateway to forward again", async || {
            !stack.upstream.since(restored).is_empty()
        })
        .await;

        let outcomes = load.finish().await;
        let gw_outcomes = gw_load.finish().await;
        let outage = statuses(&outcomes, down, restoring);
        assert!(!outage.is_empty(), "no request ran during the outage");
        assert!(
            !outage.contains_key(&200),
            "an exchange was allowed while Postgres was down: {outage:?}"
        );
        assert_never_allowed_a_wrong_secret(&outcomes);
        report("postgres_stopped", recovery, &outage, &seen);
        assert_gateway_recovery_order("postgres_stopped", &gw_outcomes, down, restoring);
        println!("drill postgres_stopped: {policy}");
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
        let reserve = stack.mint_gateway_mandates(30).await;
        let load = stack.load();
        let gw_load = stack.gateway_load(reserve);
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
        wait_until("Gateway requests during the outage", async || {
            gw_load
                .snapshot()
                .iter()
                .filter(|o| o.started >= down)
                .count()
                >= 2
        })
        .await;
        let restoring = Instant::now();
        let spilled = stack.sts.emitter().stats();
        assert!(spilled.replay_files > 0, "no spill file while Redis is down: {spilled:?}");
        stack.redis.restart().unwrap();
        let restored = Instant::now();
        stack.wait_all_ready("every service ready after Redis returns").await;
        load.wait_success_after(restored).await;
        let recovery = restored.elapsed();

        // The Gateway forwards again once it is ready (a request refused meanwhile is fine).
        wait_until("the Gateway to forward again", async || {
            !stack.upstream.since(restored).is_empty()
        })
        .await;
        let outcomes = load.finish().await;
        let gw_outcomes = gw_load.finish().await;
        let outage = statuses(&outcomes, down, restoring);
        assert!(!outage.is_empty(), "no request ran during the outage");
        assert_never_allowed_a_wrong_secret(&outcomes);
        report("redis_stopped", recovery, &outage, &seen);
        assert_gateway_recovery_order("redis_stopped", &gw_outcomes, down, restoring);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_sts_stopped() {
    bounded(async {
        let Some(stack) = Stack::start("drill_sts_stopped").await else {
            return;
        };
        // The STS served over HTTP and a Gateway that reaches it only that way.
        let sts_server = StsServer::start(stack.sts.router(), "127.0.0.1:0".parse().unwrap()).await;
        let addr = sts_server.addr;
        let replay = tempfile::tempdir().unwrap();
        let remote = stack
            .gateway_recipe("drill-gw-remote", replay.path(), Some(sts_server.url()))
            .build()
            .await;
        let remote_workers = remote.spawn_workers();
        stack.add_producer("remote gateway", remote.emitter(), true);
        let router = remote.router();
        let mut mandates = stack.mint_gateway_mandates(20).await;
        let load = stack.load();
        load.wait_success_after(Instant::now()).await;
        let ready = async || {
            caracal_gateway::routes::readiness(&remote)
                .await
                .err()
                .unwrap_or("ready")
        };
        wait_until("the remote Gateway to be ready", async || ready().await == "ready").await;
        for _ in 0..2 {
            let (status, body) = gateway_get(&router, &mandates.pop().unwrap()).await;
            assert_eq!(status, 200, "before the outage: {body}");
        }
        let forwarded_before = stack.upstream.count();
        assert!(forwarded_before >= 2);

        // The STS goes away.
        sts_server.stop().await;
        let down = Instant::now();
        let mut seen = BTreeSet::new();
        wait_until("the remote Gateway to report sts_unreachable", async || {
            let r = ready().await;
            seen.insert(format!("gateway:{r}"));
            r == "sts_unreachable"
        })
        .await;
        let mut outage: BTreeMap<u16, usize> = BTreeMap::new();
        let mut refused = Vec::new();
        let mut refusals: BTreeSet<(u16, String)> = BTreeSet::new();
        let mut opened_after = None;
        let mut i = 0;
        while i < 6 || down.elapsed() < OUTAGE {
            let m = mandates.pop().expect("not enough mandates for the outage");
            let (status, body) = gateway_get(&router, &m).await;
            *outage.entry(status).or_default() += 1;
            refused.push((status, body["error"].as_str().unwrap_or("").to_owned()));
            refusals.insert((status, refusal(&body)));
            i += 1;
            if opened_after.is_none() && remote.breaker().is_open() {
                opened_after = Some(i);
                // The operator sees it on /metrics too.
                let request = Request::get("/metrics").body(Body::empty()).unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                let text = response.into_body().collect().await.unwrap().to_bytes();
                let text = String::from_utf8_lossy(&text);
                assert!(
                    text.lines().any(|l| l == "caracal_gateway_sts_circuit_open 1"),
                    "sts_circuit_open is not 1 on /metrics while the circuit is open"
                );
            }
            seen.insert(format!("gateway:{}", ready().await));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(
            refused.iter().all(|(s, code)| *s >= 500 && code == "sts_unavailable"),
            "every Gateway request during the STS outage is refused 5xx sts_unavailable: {refused:?}"
        );
        assert_eq!(
            stack.upstream.count(),
            forwarded_before,
            "the Gateway forwarded while the STS was down"
        );
        let opened_after = opened_after.expect("the STS circuit never opened");
        assert!(
            opened_after <= caracal_gateway::breaker::THRESHOLD as usize,
            "the circuit opened only after {opened_after} failures"
        );

        // The STS returns on the same address.
        let restoring = Instant::now();
        let sts_server = StsServer::start(stack.sts.router(), addr).await;
        let restored = Instant::now();
        wait_until("the remote Gateway to be ready again", async || {
            let r = ready().await;
            seen.insert(format!("gateway:{r}"));
            r == "ready"
        })
        .await;
        let ready_after = restored.elapsed();
        // The circuit lets a probe through once its open window has passed.
        wait_until("the STS circuit to let a probe through", async || {
            !remote.breaker().is_open()
        })
        .await;
        let mut attempts = 0;
        wait_until("a Gateway request forwarded after the restore", async || {
            attempts += 1;
            let m = match mandates.pop() {
                Some(m) => m,
                None => stack.mint_gateway_mandate().await.expect("mint after the restore"),
            };
            gateway_get(&router, &m).await.0 == 200
        })
        .await;
        let recovery = restored.elapsed();
        let forwarded = stack.upstream.since(restoring);
        assert!(!forwarded.is_empty(), "the upstream saw nothing after the restore");

        let outcomes = load.finish().await;
        assert_never_allowed_a_wrong_secret(&outcomes);
        report("sts_stopped", recovery, &outage, &seen);
        println!(
            "drill sts_stopped: refusals {refusals:?}; circuit opened after {opened_after} refused request(s) (caracal_gateway_sts_circuit_open 1); Gateway ready {} ms after the restore, first forward after {attempts} attempt(s)",
            ready_after.as_millis()
        );
        remote_workers.shutdown(Duration::from_secs(5)).await;
        sts_server.stop().await;
        stack.assert_evidence(&outcomes).await;
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_gateway_killed_with_spill() {
    bounded(async {
        let Some(stack) = Stack::start("drill_gateway_killed_with_spill").await else {
            return;
        };
        let load = stack.load();
        load.wait_success_after(Instant::now()).await;

        // A Gateway process of its own (own runtime, own pools), on replay dir `spill`.
        let spill = tempfile::tempdir().unwrap();
        let mut doomed = Doomed::new("drill-gw-doomed");
        let recipe = stack.gateway_recipe("drill-gw-doomed", spill.path(), None);
        let victim = doomed
            .run(async move {
                let gateway = recipe.build().await;
                let workers = gateway.spawn_workers();
                // Dropped with the runtime, never shut down.
                std::mem::forget(workers);
                gateway
            })
            .await;
        stack.add_producer("killed gateway", victim.emitter(), false);

        let mut seen = BTreeSet::new();
        stack.redis.stop().unwrap();
        let down = Instant::now();
        stack
            .wait_reasons("the Gateway to report redis_unreachable", &mut seen, |r| {
                r[2] == "redis_unreachable"
            })
            .await;
        // The Gateway's evidence while Redis is away (requests are refused without Redis and
        // a pre-STS refusal is not audited, so its emitter is handed events directly).
        let markers: Vec<String> = (0..6).map(|_| uuid()).collect();
        for request_id in &markers {
            AuditSink::emit(victim.emitter().as_ref(), marker(&stack.zone, request_id));
        }
        let emitter = victim.emitter().clone();
        wait_until("the Gateway to spill its events", async || {
            let s = emitter.stats();
            s.spilled_total >= markers.len() as u64 && s.buffered == 0
        })
        .await;
        let spill_files = || {
            std::fs::read_dir(spill.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".ndjson")
                })
                .count()
        };
        // Kill it: no final flush, no drain; the files stay.
        doomed.kill();
        let files = spill_files();
        assert!(files > 0, "no spill file left by the killed Gateway");
        let at_kill = emitter.stats();
        assert_eq!(at_kill.sent_total, 0, "frames reached Redis while it was down");
        stack.hold_outage(&load, down, 3, &mut seen).await;

        let restoring = Instant::now();
        stack.redis.restart().unwrap();
        let restored = Instant::now();
        stack.wait_all_ready("every service ready after Redis returns").await;
        // Its replacement, on the same replay dir.
        let successor = stack
            .gateway_recipe("drill-gw-successor", spill.path(), None)
            .build()
            .await;
        let successor_workers = successor.spawn_workers();
        stack.add_producer("successor gateway", successor.emitter(), true);
        wait_until("the successor to empty the replay dir", async || {
            successor.emitter().stats().replay_files == 0 && spill_files() == 0
        })
        .await;
        let drained = restored.elapsed();
        let replayed = successor.emitter().stats().replayed_total;
        assert!(
            replayed >= markers.len() as u64,
            "the successor replayed {replayed} of {} frames",
            markers.len()
        );
        wait_until("the successor to be ready", async || {
            caracal_gateway::routes::readiness(&successor).await.is_ok()
        })
        .await;
        load.wait_success_after(restored).await;

        let outcomes = load.finish().await;
        let outage = statuses(&outcomes, down, restoring);
        assert_never_allowed_a_wrong_secret(&outcomes);
        report("gateway_killed_with_spill", drained, &outage, &seen);
        println!(
            "drill gateway_killed_with_spill: the killed Gateway left {} frame(s) in {files} spill file(s); its successor replayed {replayed} and emptied the dir {} ms after Redis returned",
            at_kill.spilled_total,
            drained.as_millis()
        );
        let by_request = stack.assert_evidence(&outcomes).await;
        for m in &markers {
            assert_eq!(by_request.get(m).copied(), Some(1), "marker {m} not in the ledger once");
        }
        successor_workers.shutdown(Duration::from_secs(5)).await;
        stack.shutdown().await;
    })
    .await;
}

/// The outbox rows not yet published, as `(id, stream)`.
async fn pending_outbox(db: &str) -> Vec<(String, String)> {
    let client = caracal_test_support::connect(db).await.unwrap();
    client
        .query(
            "SELECT id, stream FROM outbox WHERE dispatched_at IS NULL AND dead_at IS NULL ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect()
}

/// How many entries of `stream` carry `outbox_id`.
async fn published(streams: &RedisStreams, stream: &str, outbox_id: &str) -> usize {
    streams
        .range(stream, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|e| e.fields.get("outbox_id") == Some(outbox_id))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_coordinator_killed_between_commit_and_publish() {
    bounded(async {
        let Some(mut stack) = Stack::start("drill_coordinator_killed_between_commit_and_publish").await else {
            return;
        };
        let mut mandates = stack.mint_gateway_mandates(3).await;
        let load = stack.load();
        load.wait_success_after(Instant::now()).await;
        let gw = stack.gateway.router();
        let (status, body) = gateway_get(&gw, &mandates.pop().unwrap()).await;
        assert_eq!(status, 200, "before the crash: {body}");
        let streams = RedisStreams::connect(&RedisConfig::new(stack.redis.url())).unwrap();
        // Whatever the seeding enqueued is published before the crash.
        let db = stack.db.clone();
        wait_until("the outbox to be empty before the crash", async || {
            pending_outbox(&db).await.is_empty()
        })
        .await;

        // The control plane crashes mid-dispatch: its relay had claimed the cascade's rows
        // (the lease a relay takes before `XADD`) and died before publishing them. Its
        // workers are gone; the Coordinator API commits the cascade while a claimer polls
        // the outbox every millisecond under the dying relay's name with the production
        // lease, so it takes the rows before the STS's relay (slowed to a pass every 5 s in
        // `Stack::start`) can.
        let workers = stack.control_workers.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), workers.shutdown(Duration::from_secs(5)))
            .await
            .unwrap();
        let claimer = {
            let store = stack.pg_store.clone();
            let clock = stack.clock.clone();
            let lease = chrono::Duration::from_std(RelayConfig::new("drill").lease).unwrap();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
                let mut claimed = Vec::new();
                while tokio::time::Instant::now() < deadline {
                    let rows = OutboxStore::claim(
                        &store,
                        "drill-crashed-control-outbox",
                        100,
                        lease,
                        clock.now(),
                    )
                    .await
                    .unwrap();
                    claimed.extend(rows);
                    if claimed
                        .iter()
                        .any(|r| r.message.stream == names::SESSIONS_REVOKE)
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                claimed
            })
        };
        let uri = format!("/zones/{}/delegations/{}/revoke", stack.zone, stack.world.edge);
        let request = Request::patch(uri)
            .header("authorization", format!("Bearer {OPERATOR_TOKEN}"))
            .header("x-request-id", uuid())
            .body(Body::empty())
            .unwrap();
        let (status, body) = send(&stack.control.coordinator_router(), request).await;
        let claimed = tokio::time::timeout(REQUEST_TIMEOUT * 2, claimer)
            .await
            .expect("the claimer did not stop")
            .unwrap();
        assert_eq!(status, 200, "revoke: {body}");
        assert!(body["revoked_edges"].as_u64().unwrap_or(0) >= 1, "{body}");
        let pending: Vec<(String, String)> = claimed
            .iter()
            .map(|r| (r.id.clone(), r.message.stream.clone()))
            .collect();
        let revokes: Vec<&(String, String)> = pending
            .iter()
            .filter(|(_, stream)| stream == names::SESSIONS_REVOKE)
            .collect();
        assert!(
            !revokes.is_empty(),
            "no revocation of the cascade was left unpublished (another relay took it first?): {pending:?}"
        );
        // Committed, undispatched, and nothing publishes them meanwhile (the lease holds
        // every other relay off, the STS's included).
        let undispatched = pending_outbox(&stack.db).await;
        for row in &pending {
            assert!(undispatched.contains(row), "{row:?} is not pending in Postgres");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (id, stream) in &pending {
            assert_eq!(published(&streams, stream, id).await, 0, "{id} published before the restart");
        }
        // Fail closed in the gap: the STS re-reads the edge at exchange time.
        let before = stack.upstream.count();
        let (gap_status, gap_body) = gateway_get(&gw, &mandates.pop().unwrap()).await;
        assert!(
            (400..500).contains(&gap_status),
            "a mandate of the revoked edge during the gap: {gap_status} {gap_body}"
        );
        assert_eq!(stack.upstream.count(), before, "forwarded in the gap");

        // A new control-plane process.
        let restarted = Instant::now();
        let control = ControlService::connect(control_settings(&stack.db, &stack.redis.url()), stack.clock.clone())
            .await
            .unwrap();
        stack.control_workers = Some(control.spawn_workers());
        stack.control = control;
        wait_until("the pending outbox rows to be published", async || {
            for (id, stream) in &pending {
                if published(&streams, stream, id).await == 0 {
                    return false;
                }
            }
            true
        })
        .await;
        let publish = restarted.elapsed();
        wait_until("the rows to be marked dispatched", async || {
            let left = pending_outbox(&db).await;
            pending.iter().all(|row| !left.contains(row))
        })
        .await;
        // Several relay passes later, still once each.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (id, stream) in &pending {
            assert_eq!(published(&streams, stream, id).await, 1, "{id} on {stream} not published exactly once");
        }
        // The Gateway learns it from the stream and refuses the mandate itself.
        let last = mandates.pop().unwrap();
        let claims = caracal_gateway::preflight::peek(&last).unwrap();
        wait_until("the Gateway to hold the revocation", async || {
            stack.gateway.revocations().is_revoked(&claims)
        })
        .await;
        let propagated = restarted.elapsed();
        let (status, body) = gateway_get(&gw, &last).await;
        assert_eq!(
            (status, body["error_description"].as_str().unwrap_or("")),
            (401, "session revoked"),
            "{body}"
        );
        assert_eq!(stack.upstream.count(), before, "a revoked mandate was forwarded");

        let outcomes = load.finish().await;
        assert_never_allowed_a_wrong_secret(&outcomes);
        let mut seen = BTreeSet::new();
        seen.insert(format!("gap: a mandate of the revoked edge answered {gap_status} {}", gap_body["error_description"]));
        report("coordinator_killed_between_commit_and_publish", propagated, &BTreeMap::new(), &seen);
        println!(
            "drill coordinator_killed_between_commit_and_publish: {} pending row(s) ({} on {}) published once each {} ms after the new control plane started (the dead relay's lease bounds it); the Gateway held the revocation after {} ms",
            pending.len(),
            revokes.len(),
            names::SESSIONS_REVOKE,
            publish.as_millis(),
            propagated.as_millis()
        );
        stack.assert_evidence(&outcomes).await;
        stack.shutdown().await;
    })
    .await;
}
