//! The Gateway on a real Postgres (revocation snapshot) and a real Redis (`jti` markers, the
//! revocation stream, the audit stream), ephemeral servers from the test support crate. The
//! STS runs in process on its seeded in-memory world; everything the Gateway itself stores or
//! reads is real.
//!
//! | test | checks |
//! |---|---|
//! | [`jti_snapshot_and_stream_on_real_backends`] | 19 (`seen:jti:` with a TTL in Redis), 14, 20, 27 |
//! | [`redis_outage_spills_audit_and_the_drainer_empties_it`] | 50 with the background drainer: every event in the ledger stream exactly once |
//!
//! Without the servers a test prints `SKIPPED` and returns, except under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::backend::redis::{RedisConfig, RedisKeys, RedisStreams};
use caracal_core::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use caracal_core::model::zone::Zone;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::directory::ZoneStore;
use caracal_core::streams::{EntryId, Fields};
use caracal_gateway::revocation::PgSnapshotSource;
use caracal_test_support::{EphemeralRedis, connect, postgres_or_skip, redis_or_skip};
use http_body_util::Full;
use hyper::StatusCode;
use serde_json::{Value, json};
use support::{Harness, PIPERNET, harness_parts, sts};

const WAIT: Duration = Duration::from_secs(30);

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Backends {
    redis: EphemeralRedis,
    redis_streams: RedisStreams,
    pg: PgStore,
}

async fn backends(test: &str) -> Option<Backends> {
    let pg = postgres_or_skip(test)?;
    let redis = redis_or_skip(test)?;
    let url = pg.create_database(test).await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    drop(client);
    let store = PgStore::open(&url, PgStoreOptions::default())
        .await
        .unwrap();
    let streams = RedisStreams::connect(&RedisConfig::new(redis.url())).unwrap();
    Some(Backends {
        redis,
        redis_streams: streams,
        pg: store,
    })
}

async fn gateway(b: &Backends, fail_open: bool) -> Harness {
    let streams = b.redis_streams.clone();
    let pg = b.pg.clone();
    harness_parts(
        |s| {
            s.jti_fail_open = fail_open;
            s.hostname = format!("gw-{}", std::process::id());
        },
        move |_, mut p| {
            p.jti = Arc::new(RedisKeys::new(streams.pool().clone()));
            p.redis = Arc::new(streams.clone());
            p.streams = Arc::new(streams);
            p.snapshot = Arc::new(PgSnapshotSource::new(pg));
            p
        },
    )
    .await
}

fn get(h: &Harness, token: &str, request_id: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::get(h.url("/v1/items"))
        .header("x-caracal-resource", PIPERNET)
        .header("authorization", format!("Bearer {token}"))
        .header("x-request-id", request_id)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn jti_snapshot_and_stream_on_real_backends() {
    let Some(b) = backends("gw_jti_snapshot_stream").await else {
        return;
    };
    let h = gateway(&b, false).await;
    // 19: the jti marker lives in Redis with a TTL of about exp − now.
    let m = h.mandate().await;
    let c = sts::claims(&m);
    let r = h.send(get(&h, &m, "first")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let key = format!("seen:jti:{}", c["jti"].as_str().unwrap());
    let pttl = b.redis.command(&["PTTL", &key]).unwrap();
    let ttl = match pttl {
        caracal_test_support::RespValue::Integer(n) => n,
        other => panic!("PTTL: {other:?}"),
    };
    let expected_ms = (c["exp"].as_i64().unwrap() - 1_779_364_800) * 1000;
    assert!(ttl > 0 && ttl <= expected_ms, "PTTL {ttl} vs {expected_ms}");
    // 14 across the real store.
    let r = h.send(get(&h, &m, "second")).await;
    assert_eq!(r.description(), "token replay detected");

    // 27: a row revoked in Postgres (no stream message) refuses after the next reload.
    let m2 = h.mandate().await;
    let root = sts::claims(&m2)["root_sid"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now();
    b.pg.insert_zone(&Zone {
        id: h.w.zone.clone(),
        name: "zone-a".into(),
        slug: "zone-a".into(),
        dcr_enabled: false,
        operator_coauthor_badge: false,
        operator_governed: false,
        attribution: sts::attribution(),
        created_at: now,
        updated_at: now,
        archived_at: None,
    })
    .await
    .unwrap();
    b.pg.insert_authority(&AuthorityRecord {
        id: root.clone(),
        zone_id: h.w.zone.clone(),
        session_type: SubjectType::Application,
        subject_id: h.w.app_b.id.clone(),
        parent_id: None,
        status: AuthorityStatus::Revoked,
        expires_at: now + chrono::Duration::hours(1),
        authenticated_at: Some(now),
        claims_json: json!({}),
        revoked_at: Some(now),
        revoked_reason: Some("test".into()),
        created_at: now,
    })
    .await
    .unwrap();
    assert_eq!(h.gw.reload_revocations().await.unwrap(), 1);
    let r = h.send(get(&h, &m2, "revoked-by-snapshot")).await;
    assert_eq!(
        (r.status, r.description()),
        (StatusCode::UNAUTHORIZED, "session revoked")
    );

    // 20: a stream message revokes within about a second.
    let m3 = h.mandate().await;
    let agent_session = sts::claims(&m3)["agent_session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let streams = h.gw.streams().clone();
    wait_until("the gateway's consumer group", || {
        let streams = streams.clone();
        async move {
            streams
                .groups("caracal.sessions.revoke")
                .await
                .map(|g| g.iter().any(|g| g.name.starts_with("gateway-revocation:")))
                .unwrap_or(false)
        }
    })
    .await;
    streams
        .xadd(
            "caracal.sessions.revoke",
            &Fields::new().with("agent_session_id", agent_session.as_str()),
        )
        .await
        .unwrap();
    let gw = h.gw.clone();
    let claims = caracal_gateway::preflight::peek(&m3).unwrap();
    wait_until("the stream revocation", || {
        let revoked = gw.revocations().is_revoked(&claims);
        async move { revoked }
    })
    .await;
    let r = h.send(get(&h, &m3, "revoked-by-stream")).await;
    assert_eq!(r.description(), "session revoked");

    // The figures of that message and of the Postgres pool behind the snapshot.
    let metrics = h
        .send(
            hyper::Request::get(h.url("/metrics.json"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    let m = &metrics.body;
    assert!(m["revocation_messages"].as_u64().unwrap() >= 1, "{m}");
    let propagation = m["revocation_propagation_seconds"].as_f64().unwrap();
    assert!((0.0..30.0).contains(&propagation), "{m}");
    assert!(m["db_pool_max_conns"].as_u64().unwrap() >= 1, "{m}");
    assert!(m["db_pool_in_use_ratio"].as_f64().unwrap() <= 1.0, "{m}");
}

/// Redis stopped while requests flow: requests keep being served (`JTI_FAIL_OPEN`, dev, so the
/// single-use check does not refuse them), their audit events land in the replay directory;
/// Redis back: the background drainer re-sends and deletes the files, and the audit stream
/// holds every event exactly once.
#[tokio::test]
async fn redis_outage_spills_audit_and_the_drainer_empties_it() {
    let Some(b) = backends("gw_redis_outage_drain").await else {
        return;
    };
    let h = gateway(&b, true).await;
    let m = h.mandate().await;
    assert_eq!(
        h.send(get(&h, &m, "before-outage")).await.status,
        StatusCode::OK
    );
    b.redis.stop().unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("outage-{i}")).collect();
    for id in &ids {
        let m = h.mandate().await;
        let r = h.send(get(&h, &m, id)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let emitter = h.gw.emitter().clone();
    wait_until("spill files", || {
        let e = emitter.clone();
        async move {
            let _ = e.flush().await;
            e.stats().replay_pending >= 3
        }
    })
    .await;
    let files: Vec<_> = std::fs::read_dir(&h.gw.settings().replay_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ndjson"))
        .collect();
    assert!(!files.is_empty(), "events spilled to fsync'd files");
    b.redis.restart().unwrap();
    let e = emitter.clone();
    wait_until("the drainer to empty the replay dir", || {
        let e = e.clone();
        async move { e.stats().replay_files == 0 }
    })
    .await;
    let entries =
        h.gw.streams()
            .range("caracal.audit.events", EntryId::MIN, EntryId::MAX, None)
            .await
            .unwrap();
    let request_ids: Vec<String> = entries
        .iter()
        .filter_map(|e| e.fields.get("data"))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["event_type"] == "gateway_resource_request")
        .filter_map(|v| v["request_id"].as_str().map(str::to_owned))
        .collect();
    for id in ids
        .iter()
        .chain(std::iter::once(&"before-outage".to_owned()))
    {
        assert_eq!(
            request_ids.iter().filter(|r| *r == id).count(),
            1,
            "{id} exactly once in {request_ids:?}"
        );
    }
}
