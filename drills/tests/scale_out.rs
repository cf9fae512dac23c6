//! Scale-out (issue #11 item 3): two replicas each of the STS, the Gateway, the Audit service
//! and the control plane (Admin API, Coordinator and their jobs), in-process against one real
//! Postgres and one real Redis of the test's own.
//!
//! | replica pair | what tells the replicas apart |
//! |---|---|
//! | STS `sts-a`, `sts-b` | `hostname` → consumer names `sts-<host>-…`; one group per host for each cache, `opa-engine:<host>` and `sts-keys:<host>`, so each sees every policy and key invalidation; the shared group `sts-revocation` (its handler writes Postgres once for all); each runs an outbox relay |
//! | Gateway `gw-a`, `gw-b` | `hostname` → one group per host, `gateway-revocation:<host>`, so each sees every revocation; Postgres snapshot source |
//! | Audit `audit-a`, `audit-b` | consumer name in the one ingest group `audit-ingestor` |
//! | control plane `control-a`, `control-b` | `HOSTNAME` → relay worker `control-<host>-outbox`; both relays claim with `SKIP LOCKED` |
//!
//! So four outbox relays (two control planes, two STS replicas) compete for the same rows.
//!
//! | test | asserted | printed |
//! |---|---|---|
//! | [`revocation_reaches_both_gateways_once`] | each of [`REVOCATIONS`] subject revocations (Admin API, alternating control planes; half one at a time, half in one burst) is seen by both Gateways within [`PROPAGATION_BOUND`]; every outbox row of every stream is in its stream exactly once, none is left undispatched or dead | p50/p99/max propagation per phase, per Gateway and for both |
//! | [`audit_two_ingestors_keep_chains_dense`] | under concurrent exchanges on both STS replicas, the zone's chain is dense, holds each event once, verifies, and holds exactly what the emitters sent; DLQ empty | how the inserts split between the two ingestors |
//! | [`policy_activation_reaches_both_sts`] | an activation that restricts the zone, then the rollback, each reaches both STS replicas within [`POLICY_BOUND`] (far below the safety poll), and a replica never returns to the old decision once it has the new one; a signing-key rotation made outside both replicas reaches the verification-key cache of both within [`POLICY_BOUND`] (far below the cache TTL) | time per replica and phase |
//!
//! Every test also ends with the evidence check (the ledger holds one event per successful
//! exchange, chains dense and verified). Every wait is bounded, each test runs under
//! [`TEST_LIMIT`], and without the server binaries a test prints `SKIPPED` (a failure under
//! `CI=true`).
//!
//! The reference shares one group (`opa-engine`, `sts-keys`) between STS replicas, so an
//! activation's message reached one replica and the others reloaded on the safety poll
//! (`OPA_POLL_SECONDS`), and a key rotation left the others on their 15-minute key cache.
//! Here each replica reads in its own group, so both must switch within [`POLICY_BOUND`]
//! (3 s) while the poll is [`POLL_SECONDS`] (60 s): only the stream can explain it.
//!
//! Every STS replica is given the same `SECRET_STORE_KEK`: a zone signing key created by one
//! replica is encrypted under it and must decrypt on the other (with `StsSettings::dev`'s
//! random KEK each, the second replica answers `500` to every exchange).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use caracal_audit::{AuditConfig, AuditService, Backends};
use caracal_control::{ControlService, ControlSettings};
use caracal_core::audit::AuditHmacKey;
use caracal_core::audit::emitter::AuditEmitter;
use caracal_core::audit::ledger_verify::verify_ledger_zone;
use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::backend::redis::{RedisConfig, RedisKeys, RedisStreams};
use caracal_core::clock::{Clock, SharedClock, SystemClock};
use caracal_core::exchange::envelope::GatewayKey;
use caracal_core::ids::{IdGen, SharedIdGen, UuidV7};
use caracal_core::mandate::ZoneKeys;
use caracal_core::model::Attribution;
use caracal_core::model::application::{Application, RegistrationMethod};
use caracal_core::model::policy_set::ManifestEntry;
use caracal_core::model::resource::{OperationEnforcement, Resource};
use caracal_core::model::zone::Zone;
use caracal_core::policy::lifecycle::{NewPolicy, PolicyLifecycle};
use caracal_core::secrets::client_secret::hash_client_secret;
use caracal_core::secrets::envelope::Keyring;
use caracal_core::store::directory::{ApplicationStore, ResourceStore, ZoneStore};
use caracal_core::streams::{EntryId, Streams, names};
use caracal_gateway::GatewayService;
use caracal_gateway::preflight::PeekedClaims;
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

const ISSUER: &str = "https://sts.scale.test";
const SECRET: &str = "scale-secret-0123456789";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const GATEWAY_KEY_HEX: &str = "6a0f7c2e9b1d4f3a8c5e7b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a";
const STREAMS_KEY_HEX: &str = "3c5e7a9b1d2f4a6c8e0b2d4f6a8c0e2b4d6f8a1c3e5b7d9f0b2d4f6a8c0e2b4d";
const KEK_HEX: &str = "8f2a6c1e9b3d4f5a7c8e0b1d2f3a4c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
const BOOT_TOKEN: &str = "scale-boot-token-0123456789-0123456789";
const AUDIT_KEY_HEX: &str = "9b1d2f4a6c8e0b2d4f6a8c0e2b4d6f8a1c3e5b7d9f0b2d4f6a8c0e2b4d6f8a3c";
/// The bound of every wait that is not a measured propagation.
const WAIT: Duration = Duration::from_secs(45);
/// The bound of a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(300);
/// The bound of one request through a router.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Subjects revoked in the revocation test (one authority record each).
const REVOCATIONS: usize = 40;
/// Every revocation must reach both Gateways within this (the stream path; the Gateway's
/// own Postgres snapshot reload runs every 30 s).
const PROPAGATION_BOUND: Duration = Duration::from_secs(10);
/// `OPA_POLL_SECONDS` of both STS replicas (the policy safety poll): the default, far above
/// [`POLICY_BOUND`], so a replica that switches within the bound was told by the stream.
const POLL_SECONDS: u64 = 60;
/// An activation (and a key invalidation) must reach both STS replicas within this: the
/// outbox relay (every 250 ms) plus one stream delivery and a reload, with room for a loaded
/// machine.
const POLICY_BOUND: Duration = Duration::from_secs(3);
/// Exchanges per load task in the audit test (two tasks per STS replica).
const LOAD_PER_TASK: usize = 40;

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

/// Servers of the test's own, or `None` when skipped.
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
            eprintln!("SKIPPED: {test}: no redis-server ({what}: {hint}). This test did NOT run.");
            return None;
        }
        Err(e) => panic!("{test}: could not start redis-server: {e}"),
    };
    Some((pg, redis))
}

/// One answered exchange.
#[derive(Debug, Clone)]
struct Answer {
    /// HTTP status; 0 when the request timed out.
    status: u16,
    /// The JSON body (`Null` when it was not JSON).
    body: Value,
    /// The `X-Request-Id` the STS answered with.
    request_id: String,
}

/// Send `request` through `router` under [`REQUEST_TIMEOUT`].
async fn send(router: &axum::Router, request: Request<Body>) -> Answer {
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            request_id,
        }
    })
    .await;
    answer.unwrap_or(Answer {
        status: 0,
        body: Value::Null,
        request_id: String::new(),
    })
}

/// One bootstrap exchange of `app` for `resource` through an STS router.
async fn bootstrap(router: &axum::Router, zone: &str, app: &str, resource: &str) -> Answer {
    let body = [
        ("grant_type", EXCHANGE),
        ("zone_id", zone),
        ("application_id", app),
        ("client_secret", SECRET),
        ("resource", resource),
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
    send(router, request).await
}

/// A JSON `POST` to the Admin API with the bootstrap admin token.
async fn admin_post(router: &axum::Router, uri: &str, body: &Value) -> Answer {
    let request = Request::post(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {BOOT_TOKEN}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    send(router, request).await
}

/// The `sid` claim of a minted mandate (the authority record the Gateways match).
fn sid_of(answer: &Answer) -> String {
    let token = answer.body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {:?}", answer.body));
    let payload = token.split('.').nth(1).expect("a JWS has a payload");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sid"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("no sid in {claims}"))
        .to_owned()
}

/// Nearest-rank percentile of sorted `xs` (`q` in 0..=1).
fn percentile(xs: &[Duration], q: f64) -> Duration {
    assert!(!xs.is_empty());
    let rank = (q * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

fn summary(xs: &[Duration]) -> String {
    let mut xs = xs.to_vec();
    xs.sort();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    format!(
        "n={} p50={} p99={} max={}",
        xs.len(),
        ms(percentile(&xs, 0.50)),
        ms(percentile(&xs, 0.99)),
        ms(*xs.last().unwrap())
    )
}

/// An application of the seed: its own resource, owned through its own grant.
#[derive(Debug, Clone)]
struct SeededApp {
    app: Application,
    resource: String,
}

/// The seeded policy set, for the rollback.
#[derive(Debug, Clone)]
struct SeedPolicy {
    set_id: String,
    version_id: String,
    /// The policy document's content (the grants of every worker).
    content: Value,
}

/// The two-replica cluster.
struct Cluster {
    _pg: EphemeralPostgres,
    _redis: EphemeralRedis,
    db: String,
    streams: RedisStreams,
    store: PgStore,
    sts: [Arc<StsService>; 2],
    gateways: [Arc<GatewayService>; 2],
    audits: [Arc<AuditService>; 2],
    controls: [Arc<ControlService>; 2],
    sts_workers: Vec<caracal_sts::Workers>,
    gateway_workers: Vec<caracal_gateway::Workers>,
    audit_workers: Vec<caracal_audit::Workers>,
    control_workers: Vec<caracal_control::service::Workers>,
    zone: String,
    apps: Vec<SeededApp>,
    policy: SeedPolicy,
    _dirs: Vec<tempfile::TempDir>,
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

const STS_HOSTS: [&str; 2] = ["sts-a", "sts-b"];
const GATEWAY_HOSTS: [&str; 2] = ["gw-a", "gw-b"];
const AUDIT_CONSUMERS: [&str; 2] = ["audit-a", "audit-b"];
const CONTROL_HOSTS: [&str; 2] = ["control-a", "control-b"];

impl Cluster {
    /// Servers, schema, streams, a zone with `apps` applications, then two replicas of
    /// every service, all workers running and every service ready.
    async fn start(test: &str, apps: usize) -> Option<Self> {
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
        let store = PgStore::open(&db, PgStoreOptions::default()).await.unwrap();
        let (zone, seeded, policy) = seed(&store, apps).await;
        let clock: SharedClock = Arc::new(SystemClock);
        let gateway_key = GatewayKey::from_hex(GATEWAY_KEY_HEX).unwrap();
        let mut dirs = Vec::new();

        let mut sts = Vec::new();
        for host in STS_HOSTS {
            let replay = tempfile::tempdir().unwrap();
            let mut settings = StsSettings::dev(ISSUER, replay.path().to_path_buf()).unwrap();
            // One KEK for every replica (SECRET_STORE_KEK): a zone signing key one replica
            // creates must decrypt on the other.
            settings.keyring = Arc::new(Keyring::from_hex(KEK_HEX, None).unwrap());
            settings.gateway_key = Some(gateway_key.clone());
            settings.streams_key = Some(hex::decode(STREAMS_KEY_HEX).unwrap());
            settings.audit_key = Some(audit_key());
            settings.database_url = Some(Secret::new(db.clone()));
            settings.redis_url = Some(Secret::new(redis_url.clone()));
            settings.hostname = host.to_owned();
            settings.poll_interval = Duration::from_secs(POLL_SECONDS);
            let backends = StsBackends::connect(&settings, clock.clone())
                .await
                .unwrap();
            sts.push(StsService::new(settings, backends).unwrap());
            dirs.push(replay);
        }
        let sts: [Arc<StsService>; 2] = sts.try_into().unwrap();

        let mut audits = Vec::new();
        let mut audit_workers = Vec::new();
        for consumer in AUDIT_CONSUMERS {
            let config = audit_config(&db, &redis_url, consumer);
            let backends = Backends::connect(&config).await.unwrap();
            let svc = AuditService::new(config, backends).unwrap();
            audit_workers.push(svc.spawn_workers());
            audits.push(svc);
        }
        let audits: [Arc<AuditService>; 2] = audits.try_into().unwrap();

        // Each Gateway exchanges in-process with "its" STS replica; revocations come from the
        // stream (per-host group) and the Postgres snapshot.
        let mut gateways = Vec::new();
        for (host, sts) in GATEWAY_HOSTS.iter().zip(&sts) {
            let replay = tempfile::tempdir().unwrap();
            let mut gw = caracal_gateway::GatewaySettings::dev(replay.path().to_path_buf());
            gw.gateway_key = Some(gateway_key.clone());
            gw.streams_key = Some(hex::decode(STREAMS_KEY_HEX).unwrap());
            gw.audit_key = Some(audit_key());
            gw.hostname = (*host).to_owned();
            let mut parts = GatewayService::in_process_parts(
                gw,
                Arc::clone(sts.sts()),
                Arc::new(RedisKeys::new(streams.pool().clone())),
                Arc::new(streams.clone()),
                clock.clone(),
            );
            parts.snapshot = Arc::new(caracal_gateway::revocation::PgSnapshotSource::new(
                store.clone(),
            ));
            parts.redis = Arc::new(streams.clone());
            let gateway = GatewayService::new(parts).unwrap();
            gateway.reload_revocations().await.unwrap();
            gateways.push(gateway);
            dirs.push(replay);
        }
        let gateways: [Arc<GatewayService>; 2] = gateways.try_into().unwrap();

        let mut controls = Vec::new();
        for host in CONTROL_HOSTS {
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
                ("HOSTNAME", host),
            ]);
            let control =
                ControlService::connect(ControlSettings::from_env(&env).unwrap(), clock.clone())
                    .await
                    .unwrap();
            controls.push(control);
        }
        let controls: [Arc<ControlService>; 2] = controls.try_into().unwrap();

        let cluster = Self {
            _pg: pg,
            _redis: redis,
            db,
            sts_workers: sts.iter().map(StsService::spawn_workers).collect(),
            gateway_workers: gateways.iter().map(GatewayService::spawn_workers).collect(),
            control_workers: controls.iter().map(ControlService::spawn_workers).collect(),
            audit_workers,
            streams,
            store,
            sts,
            gateways,
            audits,
            controls,
            zone,
            apps: seeded,
            policy,
            _dirs: dirs,
        };
        cluster.wait_all_ready().await;
        // Both Gateways have their own group on the revocation stream (created at `$` by
        // their consumers): a revocation published from now on reaches each of them.
        wait_until("both Gateway revocation groups", async || {
            let groups = cluster
                .streams
                .groups(names::SESSIONS_REVOKE)
                .await
                .unwrap_or_default();
            GATEWAY_HOSTS.iter().all(|h| {
                groups
                    .iter()
                    .any(|g| g.name == names::gateway_revocation_group(h))
            })
        })
        .await;
        // Likewise each STS replica has its own policy and key groups.
        for (stream, group) in [
            (
                names::POLICY_INVALIDATE,
                names::opa_engine_group as fn(&str) -> String,
            ),
            (names::KEYS_INVALIDATE, names::sts_keys_group),
        ] {
            wait_until(&format!("both STS groups on {stream}"), async || {
                let groups = cluster.streams.groups(stream).await.unwrap_or_default();
                STS_HOSTS
                    .iter()
                    .all(|h| groups.iter().any(|g| g.name == group(h)))
            })
            .await;
        }
        Some(cluster)
    }

    /// The first failing readiness reason of every replica (`"ready"` when it passes).
    async fn readiness(&self) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        for (host, s) in STS_HOSTS.iter().zip(&self.sts) {
            let r = caracal_sts::routes::readiness(s).await.err();
            out.push((format!("sts {host}"), r.unwrap_or("ready")));
        }
        for (host, g) in GATEWAY_HOSTS.iter().zip(&self.gateways) {
            let r = caracal_gateway::routes::readiness(g).await.err();
            out.push((format!("gateway {host}"), r.unwrap_or("ready")));
        }
        for (name, a) in AUDIT_CONSUMERS.iter().zip(&self.audits) {
            let r = caracal_audit::routes::readiness(a).await.err();
            out.push((format!("audit {name}"), r.unwrap_or("ready")));
        }
        for (host, c) in CONTROL_HOSTS.iter().zip(&self.controls) {
            let r = c.readiness().await.err();
            out.push((format!("control {host}"), r.unwrap_or("ready")));
        }
        out
    }

    async fn wait_all_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self.readiness().await;
            if r.iter().all(|(_, reason)| *reason == "ready") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for every replica to be ready: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every audit emitter in the cluster (both STS replicas, then both Gateways).
    fn emitters(&self) -> Vec<(String, Arc<AuditEmitter>)> {
        let sts = STS_HOSTS
            .iter()
            .zip(&self.sts)
            .map(|(h, s)| (format!("sts {h}"), Arc::clone(s.emitter())));
        let gw = GATEWAY_HOSTS
            .iter()
            .zip(&self.gateways)
            .map(|(h, g)| (format!("gateway {h}"), Arc::clone(g.emitter())));
        sts.chain(gw).collect()
    }

    /// Rows in the ledger over every zone.
    async fn ledger_rows(&self) -> u64 {
        let ledger = self.audits[0].backends().ledger.clone();
        let mut n = 0;
        for zone in ledger.ledger_zones().await.unwrap_or_default() {
            n += ledger
                .read_chain(&zone, 0, 1_000_000)
                .await
                .unwrap_or_default()
                .len() as u64;
        }
        n
    }

    /// Everything the emitters sent has reached the ledger through the two ingestors: no
    /// frame buffered or spilled, the ingest group has nothing pending or undelivered, and the
    /// ledger holds exactly `sent + spilled` of every emitter. Then every zone's chain is dense,
    /// holds each event once and verifies; each request in `ok` left exactly one event; the DLQ
    /// is empty; and the two ingestors' inserts add up to the ledger. Returns
    /// `(events, inserts per ingestor)`.
    async fn assert_evidence(&self, ok: &[String]) -> (u64, [u64; 2]) {
        let emitters = self.emitters();
        let emitted = || {
            emitters
                .iter()
                .map(|(_, e)| {
                    let s = e.stats();
                    s.sent_total + s.spilled_total
                })
                .sum::<u64>()
        };
        wait_until("the audit evidence to drain into the ledger", async || {
            if emitters.iter().any(|(_, e)| {
                let s = e.stats();
                s.buffered > 0 || s.replay_files > 0
            }) {
                return false;
            }
            let groups = self
                .streams
                .groups(names::AUDIT_EVENTS)
                .await
                .unwrap_or_default();
            let ingest = groups
                .iter()
                .find(|g| g.name == names::GROUP_AUDIT_INGESTOR);
            if !ingest.is_some_and(|g| g.pending == 0 && g.lag.unwrap_or(0) == 0) {
                return false;
            }
            self.ledger_rows().await == emitted()
        })
        .await;
        for (name, e) in &emitters {
            let s = e.stats();
            assert_eq!(s.dropped_total, 0, "{name} lost audit events: {s:?}");
            assert!(!e.evidence_lost(), "{name} reports evidence lost");
        }

        let ledger = self.audits[0].backends().ledger.clone();
        let mut by_request: BTreeMap<String, usize> = BTreeMap::new();
        let mut rows_total = 0u64;
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
            rows_total += rows.len() as u64;
        }
        assert_eq!(rows_total, emitted(), "the ledger holds what was emitted");
        for id in ok {
            assert_eq!(
                by_request.get(id).copied().unwrap_or(0),
                1,
                "request {id} (200) has no single audit event"
            );
        }
        let dlq = self.streams.len(names::AUDIT_EVENTS_DLQ).await.unwrap();
        assert_eq!(dlq, 0, "dead letters in the audit DLQ");
        let inserts = [
            self.audits[0].ingestor().stats().inserts,
            self.audits[1].ingestor().stats().inserts,
        ];
        assert_eq!(
            inserts.iter().sum::<u64>(),
            rows_total,
            "the two ingestors' inserts add up to the ledger"
        );
        let per_emitter: Vec<String> = emitters
            .iter()
            .map(|(n, e)| {
                let s = e.stats();
                format!("{n}: {}", s.sent_total + s.spilled_total)
            })
            .collect();
        println!(
            "evidence: {rows_total} events in the ledger, chains dense and verified, DLQ empty; \
             emitted by {per_emitter:?}; inserted by {}: {}, {}: {}",
            AUDIT_CONSUMERS[0], inserts[0], AUDIT_CONSUMERS[1], inserts[1]
        );
        (rows_total, inserts)
    }

    /// Wait until the outbox has nothing left to publish, then check that every row of every
    /// stream was published exactly once: its stream holds one entry with its `outbox_id`,
    /// and no entry carries an `outbox_id` the table does not have. Returns rows per stream.
    async fn assert_outbox_published_once(&self) -> BTreeMap<String, usize> {
        let client = caracal_test_support::connect(&self.db).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let row = client
                .query_one(
                    "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL",
                    &[],
                )
                .await
                .unwrap();
            let waiting: i64 = row.get(0);
            if waiting == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{waiting} outbox rows still undispatched after {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dead: i64 = client
            .query_one("SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(dead, 0, "dead outbox rows");
        let rows = client
            .query("SELECT id, stream FROM outbox ORDER BY id", &[])
            .await
            .unwrap();
        let mut by_stream: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in &rows {
            let (id, stream): (String, String) = (r.get(0), r.get(1));
            by_stream.entry(stream).or_default().insert(id);
        }
        let mut counts = BTreeMap::new();
        for (stream, ids) in &by_stream {
            let entries = self
                .streams
                .range(stream, EntryId::MIN, EntryId::MAX, None)
                .await
                .unwrap();
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for e in &entries {
                if let Some(id) = e.fields.get("outbox_id") {
                    *seen.entry(id.to_owned()).or_default() += 1;
                }
            }
            let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
            assert!(
                twice.is_empty(),
                "{stream}: published more than once: {twice:?}"
            );
            let published: BTreeSet<String> = seen.keys().cloned().collect();
            assert_eq!(
                &published, ids,
                "{stream}: the entries' outbox ids are exactly the table's rows"
            );
            counts.insert(stream.clone(), ids.len());
        }
        counts
    }

    async fn shutdown(mut self) {
        let grace = Duration::from_secs(5);
        let bound = Duration::from_secs(20);
        for w in self.gateway_workers.drain(..) {
            tokio::time::timeout(bound, w.shutdown(grace)).await.ok();
        }
        for w in self.sts_workers.drain(..) {
            tokio::time::timeout(bound, w.shutdown(grace)).await.ok();
        }
        for w in self.control_workers.drain(..) {
            tokio::time::timeout(bound, w.shutdown(grace)).await.ok();
        }
        for w in self.audit_workers.drain(..) {
            tokio::time::timeout(bound, w.shutdown(grace)).await.ok();
        }
    }
}

/// Zone, `n` applications (one shared client-secret hash, so each STS derives Argon2 once),
/// a resource per application, and one activated policy granting each application its
/// resource.
async fn seed(store: &PgStore, n: usize) -> (String, Vec<SeededApp>, SeedPolicy) {
    let t = SystemClock.now();
    let attribution = Attribution::created_by("admin:scale");
    let zone = uuid();
    let slug = format!("scale-{}", &zone[24..]);
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
    let hash = hash_client_secret(SECRET).unwrap();
    let mut apps = Vec::new();
    let mut app_ids = serde_json::Map::new();
    let mut grants = serde_json::Map::new();
    for i in 0..n {
        let app = Application {
            id: uuid(),
            zone_id: zone.clone(),
            name: format!("worker-{i}"),
            registration_method: RegistrationMethod::Managed,
            traits: vec![],
            expires_at: None,
            archived_at: None,
            attribution: attribution.clone(),
            created_at: t,
            updated_at: t,
            client_secret_hash: Some(hash.clone()),
        };
        store.insert_application(&app).await.unwrap();
        let resource = format!("resource://scale-{i}");
        store
            .insert_resource(&Resource {
                id: uuid(),
                zone_id: zone.clone(),
                name: resource.clone(),
                identifier: resource.clone(),
                upstream_url: Some("https://upstream.example/api".into()),
                scopes: vec!["read".into()],
                credential_provider_id: None,
                operations: vec![],
                operation_enforcement: OperationEnforcement::TransportUniform,
                attribution: attribution.clone(),
                created_at: t,
                updated_at: t,
                archived_at: None,
            })
            .await
            .unwrap();
        let key = format!("w{i}");
        app_ids.insert(key.clone(), json!(app.id));
        grants.insert(
            resource.clone(),
            json!({"application": key, "roles": {"worker": ["read"]}}),
        );
        apps.push(SeededApp { app, resource });
    }
    let content = json!({"app_ids": app_ids, "grants": grants});
    let (set_id, version_id) = policy_set(store, &zone, &content).await;
    lifecycle(store)
        .activate(&zone, &set_id, &version_id)
        .await
        .unwrap();
    (
        zone,
        apps,
        SeedPolicy {
            set_id,
            version_id,
            content,
        },
    )
}

fn lifecycle(store: &PgStore) -> PolicyLifecycle<PgStore> {
    PolicyLifecycle::new(
        Arc::new(store.clone()),
        Arc::new(SystemClock) as SharedClock,
        Arc::new(UuidV7) as SharedIdGen,
    )
}

/// A policy with `content`, a set holding it and a set version (not activated). Returns
/// `(set id, set version id)`.
async fn policy_set(store: &PgStore, zone: &str, content: &Value) -> (String, String) {
    let life = lifecycle(store);
    let name = format!("p-{}", uuid());
    let content = content.to_string();
    let (_, v) = life
        .create_policy(
            zone,
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
    (set.id, sv.id)
}

async fn bounded(fut: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, fut)
        .await
        .expect("the test exceeded its time limit");
}

/// Revoke `subject` (one authority record, `sid`) through `admin`, then poll both Gateways
/// every 2 ms until each holds `sid` revoked. Returns the time from the call's return to each
/// Gateway's mark; fails after [`PROPAGATION_BOUND`].
async fn revoke_and_time(
    i: usize,
    admin: &axum::Router,
    gateways: &[Arc<GatewayService>; 2],
    uri: &str,
    subject: &str,
    sid: &str,
) -> [Duration; 2] {
    let a = admin_post(
        admin,
        uri,
        &json!({"subject_id": subject, "reason": "scale_out_drill"}),
    )
    .await;
    assert_eq!(a.status, 200, "revoke {i}: {:?}", a.body);
    assert_eq!(
        a.body["authority_records"],
        json!(1),
        "revoke {i}: {:?}",
        a.body
    );
    let returned = Instant::now();
    let mut seen: [Option<Duration>; 2] = [None, None];
    while seen.iter().any(Option::is_none) {
        for (k, g) in gateways.iter().enumerate() {
            if seen[k].is_none() && g.revocations().is_revoked(&sid_claims(sid)) {
                seen[k] = Some(returned.elapsed());
            }
        }
        assert!(
            returned.elapsed() < PROPAGATION_BOUND,
            "revocation {i} ({sid}) not on both Gateways after {PROPAGATION_BOUND:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen.map(Option::unwrap)
}

fn sid_claims(sid: &str) -> PeekedClaims {
    PeekedClaims {
        sid: Some(sid.to_owned()),
        ..PeekedClaims::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_reaches_both_gateways_once() {
    bounded(async {
        let Some(cluster) = Cluster::start("scale_revocation", REVOCATIONS).await else {
            return;
        };
        let zone = cluster.zone.clone();
        // One mandate per application, minted alternately by the two STS replicas.
        let routers = [cluster.sts[0].router(), cluster.sts[1].router()];
        let mut sids = Vec::new();
        let mut ok = Vec::new();
        for (i, w) in cluster.apps.iter().enumerate() {
            let a = bootstrap(&routers[i % 2], &zone, &w.app.id, &w.resource).await;
            assert_eq!(a.status, 200, "bootstrap {i}: {:?}", a.body);
            sids.push(sid_of(&a));
            ok.push(a.request_id);
        }
        for sid in &sids {
            for (h, g) in GATEWAY_HOSTS.iter().zip(&cluster.gateways) {
                assert!(
                    !g.revocations().is_revoked(&sid_claims(sid)),
                    "{h} holds {sid} revoked before any revocation"
                );
            }
        }

        // Revoke each subject through the Admin API, alternating the two control planes, and
        // time until both Gateways hold its authority record revoked: first one at a time,
        // then all of the second half at once (a burst the relays publish in batches).
        let admins = [
            cluster.controls[0].admin_router(),
            cluster.controls[1].admin_router(),
        ];
        let uri = format!("/v1/zones/{}/subjects/revoke", enc(&zone));
        let revoke = |i: usize| {
            let admin = admins[i % 2].clone();
            let gateways = cluster.gateways.clone();
            let uri = uri.clone();
            let subject = cluster.apps[i].app.id.clone();
            let sid = sids[i].clone();
            async move { revoke_and_time(i, &admin, &gateways, &uri, &subject, &sid).await }
        };
        let half = REVOCATIONS / 2;
        let mut one_by_one = Vec::new();
        for i in 0..half {
            one_by_one.push(revoke(i).await);
        }
        let burst: Vec<_> = (half..REVOCATIONS)
            .map(|i| tokio::spawn(revoke(i)))
            .collect();
        let mut in_burst = Vec::new();
        for t in burst {
            in_burst.push(t.await.unwrap());
        }
        for (phase, took) in [("one at a time", &one_by_one), ("burst", &in_burst)] {
            let both: Vec<Duration> = took.iter().map(|[a, b]| *a.max(b)).collect();
            println!(
                "scale revocation ({phase}): revoke call returned → both Gateways hold it: {}",
                summary(&both)
            );
            for (k, h) in GATEWAY_HOSTS.iter().enumerate() {
                let xs: Vec<Duration> = took.iter().map(|t| t[k]).collect();
                println!("scale revocation ({phase}): → {h}: {}", summary(&xs));
            }
        }

        // No outbox row published twice by the four relays (two control planes, two STS).
        let counts = cluster.assert_outbox_published_once().await;
        assert_eq!(
            counts.get(names::SESSIONS_REVOKE).copied(),
            Some(REVOCATIONS),
            "one revocation row per subject: {counts:?}"
        );
        // Every revocation group consumed everything.
        wait_until("the revocation groups to drain", async || {
            let groups = cluster
                .streams
                .groups(names::SESSIONS_REVOKE)
                .await
                .unwrap_or_default();
            let names_ok = [
                names::GROUP_STS_REVOCATION.to_owned(),
                format!("gateway-revocation:{}", GATEWAY_HOSTS[0]),
                format!("gateway-revocation:{}", GATEWAY_HOSTS[1]),
            ];
            names_ok.iter().all(|n| {
                groups
                    .iter()
                    .find(|g| &g.name == n)
                    .is_some_and(|g| g.pending == 0 && g.lag.unwrap_or(1) == 0)
            })
        })
        .await;
        println!(
            "scale revocation: outbox rows per stream, each published exactly once by 4 relays: {counts:?}"
        );
        let (events, _) = cluster.assert_evidence(&ok).await;
        assert!(events >= REVOCATIONS as u64);
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_two_ingestors_keep_chains_dense() {
    bounded(async {
        let Some(cluster) = Cluster::start("scale_audit", 4).await else {
            return;
        };
        // Two concurrent load tasks per STS replica, each with its own application.
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (i, w) in cluster.apps.iter().enumerate() {
            let router = cluster.sts[i % 2].router();
            let (zone, app, resource) = (cluster.zone.clone(), w.app.id.clone(), w.resource.clone());
            tasks.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
                for _ in 0..LOAD_PER_TASK {
                    let a = bootstrap(&router, &zone, &app, &resource).await;
                    *statuses.entry(a.status).or_default() += 1;
                    if a.status == 200 {
                        ok.push(a.request_id);
                    }
                }
                (ok, statuses)
            }));
        }
        let mut ok = Vec::new();
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        for t in tasks {
            let (o, s) = t.await.unwrap();
            ok.extend(o);
            for (k, v) in s {
                *statuses.entry(k).or_default() += v;
            }
        }
        let load = started.elapsed();
        assert_eq!(
            statuses.get(&200).copied(),
            Some(LOAD_PER_TASK * cluster.apps.len()),
            "every exchange of the load succeeds: {statuses:?}"
        );
        let drained = Instant::now();
        let (events, inserts) = cluster.assert_evidence(&ok).await;
        let drained = drained.elapsed();
        let per_sts: Vec<u64> = cluster
            .sts
            .iter()
            .map(|s| {
                let st = s.emitter().stats();
                st.sent_total + st.spilled_total
            })
            .collect();
        assert!(
            per_sts.iter().all(|n| *n > 0),
            "both STS replicas emitted: {per_sts:?}"
        );
        println!(
            "scale audit: {} exchanges on 2 STS replicas in {} ms; {events} events ({}: {}, {}: {}) \
             ingested by 2 ingestors ({}: {}, {}: {}), drained {} ms after the load",
            ok.len(),
            load.as_millis(),
            STS_HOSTS[0],
            per_sts[0],
            STS_HOSTS[1],
            per_sts[1],
            AUDIT_CONSUMERS[0],
            inserts[0],
            AUDIT_CONSUMERS[1],
            inserts[1],
            drained.as_millis()
        );
        cluster.shutdown().await;
    })
    .await;
}

/// Poll bootstrap exchanges on every STS replica (each with its own application) every
/// 100 ms until each answers `want`; returns the time each replica took from `since`, and
/// fails if a replica answers anything else than `want` or `was` (or returns to `was`
/// after answering `want`), or takes longer than [`POLICY_BOUND`].
async fn wait_decision(
    cluster: &Cluster,
    since: Instant,
    was: u16,
    want: u16,
    bodies: &mut BTreeSet<String>,
) -> [Duration; 2] {
    let routers = [cluster.sts[0].router(), cluster.sts[1].router()];
    let mut took: [Option<Duration>; 2] = [None, None];
    // Keep polling a little after the last replica switched, to see no flip-flop.
    let mut settle: Option<Instant> = None;
    loop {
        for (k, router) in routers.iter().enumerate() {
            let w = &cluster.apps[k];
            let a = bootstrap(router, &cluster.zone, &w.app.id, &w.resource).await;
            assert!(
                a.status == want || (a.status == was && took[k].is_none()),
                "{}: answered {} ({:?}) while waiting for {want} (was {was}, switched after {:?})",
                STS_HOSTS[k],
                a.status,
                a.body,
                took[k]
            );
            if a.status == want && took[k].is_none() {
                took[k] = Some(since.elapsed());
            }
            if a.status != 200 {
                bodies.insert(a.body["error"].to_string());
            }
        }
        if took.iter().all(Option::is_some) {
            let s = *settle.get_or_insert_with(Instant::now);
            if s.elapsed() >= Duration::from_millis(500) {
                return took.map(Option::unwrap);
            }
        }
        assert!(
            since.elapsed() < POLICY_BOUND,
            "the activation did not reach both STS replicas within {POLICY_BOUND:?}: {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy_activation_reaches_both_sts() {
    bounded(async {
        let Some(cluster) = Cluster::start("scale_policy", 2).await else {
            return;
        };
        let zone = cluster.zone.clone();
        // Both replicas allow under the seeded policy (and hold its bundle).
        let mut bodies = BTreeSet::new();
        let warm = wait_decision(&cluster, Instant::now(), 200, 200, &mut bodies).await;
        assert!(warm.iter().all(|d| *d < POLICY_BOUND));
        for s in &cluster.sts {
            let b = s.sts().policies().cached(&zone).expect("bundle loaded");
            assert_eq!(
                b.policy_set_version_id.as_deref(),
                Some(cluster.policy.version_id.as_str())
            );
        }

        // A new set version: the same grants plus a `restrict` entry (every request denied).
        let mut restricted = cluster.policy.content.clone();
        restricted["restrict"] = json!(["scale-out drill: zone frozen"]);
        let (set_id, version_id) = policy_set(&cluster.store, &zone, &restricted).await;
        let admins = [
            cluster.controls[0].admin_router(),
            cluster.controls[1].admin_router(),
        ];
        let activate =
            |set: &str| format!("/v1/zones/{}/policy-sets/{}/activate", enc(&zone), enc(set));
        let a = admin_post(
            &admins[0],
            &activate(&set_id),
            &json!({"version_id": version_id}),
        )
        .await;
        assert_eq!(a.status, 202, "activate: {:?}", a.body);
        let since = Instant::now();
        let mut deny_bodies = BTreeSet::new();
        let restrict = wait_decision(&cluster, since, 200, 403, &mut deny_bodies).await;
        for s in &cluster.sts {
            let b = s.sts().policies().cached(&zone).unwrap();
            assert_eq!(
                b.policy_set_version_id.as_deref(),
                Some(version_id.as_str())
            );
        }

        // The rollback, through the other control plane: activate the seeded version again.
        let a = admin_post(
            &admins[1],
            &activate(&cluster.policy.set_id),
            &json!({"version_id": cluster.policy.version_id}),
        )
        .await;
        assert_eq!(a.status, 202, "rollback: {:?}", a.body);
        let since = Instant::now();
        let rollback = wait_decision(&cluster, since, 403, 200, &mut bodies).await;
        for s in &cluster.sts {
            let b = s.sts().policies().cached(&zone).unwrap();
            assert_eq!(
                b.policy_set_version_id.as_deref(),
                Some(cluster.policy.version_id.as_str())
            );
        }
        // The invalidations were delivered to each replica's own group and acknowledged;
        // nothing is left pending. The shared group of the reference (still provisioned)
        // has no consumer.
        let drained = async |stream: &'static str, group: fn(&str) -> String| {
            wait_until(
                &format!("the STS groups on {stream} to drain"),
                async || {
                    let groups = cluster.streams.groups(stream).await.unwrap_or_default();
                    STS_HOSTS.iter().all(|h| {
                        groups.iter().any(|g| {
                            g.name == group(h) && g.pending == 0 && g.lag.unwrap_or(1) == 0
                        })
                    })
                },
            )
            .await;
        };
        drained(names::POLICY_INVALIDATE, names::opa_engine_group).await;
        let shared = cluster
            .streams
            .groups(names::POLICY_INVALIDATE)
            .await
            .unwrap();
        assert!(
            shared
                .iter()
                .any(|g| g.name == names::GROUP_OPA_ENGINE && g.consumers == 0),
            "{shared:?}"
        );

        // A signing-key rotation made outside both replicas (as an operator's would be):
        // both cache the zone's verification keys; the rotation's `caracal.keys.invalidate`
        // (through the outbox) must flush both caches, which otherwise live 15 minutes.
        for s in &cluster.sts {
            s.sts().keys().verification_keys(&zone).await.unwrap();
        }
        let operator = ZoneKeys::new(
            Arc::new(cluster.store.clone()),
            Arc::new(cluster.store.clone()),
            Arc::new(Keyring::from_hex(KEK_HEX, None).unwrap()),
            Arc::new(SystemClock),
            Arc::new(UuidV7),
        );
        let rotated = operator.rotate(&zone).await.unwrap();
        let since = Instant::now();
        let mut keys_took: [Option<Duration>; 2] = [None, None];
        while keys_took.iter().any(Option::is_none) {
            for (k, s) in cluster.sts.iter().enumerate() {
                if keys_took[k].is_none()
                    && s.sts()
                        .keys()
                        .verification_keys(&zone)
                        .await
                        .unwrap()
                        .get(&rotated.kid)
                        .is_some()
                {
                    keys_took[k] = Some(since.elapsed());
                }
            }
            assert!(
                since.elapsed() < POLICY_BOUND,
                "the key invalidation did not reach both STS replicas within {POLICY_BOUND:?}: \
                 {keys_took:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let keys_took = keys_took.map(Option::unwrap);
        drained(names::KEYS_INVALIDATE, names::sts_keys_group).await;
        let ms = |d: Duration| d.as_millis();
        for (phase, took) in [("restrict", restrict), ("rollback", rollback)] {
            println!(
                "scale policy: {phase} activation → new decision on {}: {} ms, on {}: {} ms \
                 (OPA_POLL_SECONDS={POLL_SECONDS}; bound {} s)",
                STS_HOSTS[0],
                ms(took[0]),
                STS_HOSTS[1],
                ms(took[1]),
                POLICY_BOUND.as_secs()
            );
        }
        println!(
            "scale policy: key rotation → new kid in the verification cache of {}: {} ms, \
             of {}: {} ms (bound {} s)",
            STS_HOSTS[0],
            ms(keys_took[0]),
            STS_HOSTS[1],
            ms(keys_took[1]),
            POLICY_BOUND.as_secs()
        );
        println!("scale policy: denial errors seen while restricted: {deny_bodies:?}");
        let outbox = cluster.assert_outbox_published_once().await;
        println!("scale policy: outbox rows per stream, each published exactly once: {outbox:?}");
        // The exchanges of the polls are evidence too: the ledger must hold them all.
        cluster.assert_evidence(&[]).await;
        cluster.shutdown().await;
    })
    .await;
}
