//! The Audit service on a real Redis and a real Postgres (ephemeral servers from the test
//! support crate): signed events produced with `XADD` land in the ledger exactly once, the
//! chains verify, a duplicate delivery is absorbed and a tampered replay goes to the DLQ.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use caracal_audit::{AuditConfig, AuditService, Backends};
use caracal_core::audit::ledger_verify::verify_ledger;
use caracal_core::audit::{AuditHmacKey, sign_payload};
use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::streams::{EntryId, Fields, GroupStart, names};
use caracal_service::config::Secret;
use caracal_test_support::{connect, postgres_or_skip, redis_or_skip};

const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn event(zone: &str, id: &str, decision: &str) -> String {
    format!(
        r#"{{"id":"{id}","zone_id":"{zone}","event_type":"token.exchange","request_id":"r-{id}","decision":"{decision}","evaluation_status":"complete","determining_policies_json":[{{"id":"p","w":1.50}}],"diagnostics_json":null,"metadata_json":{{"trace_id":"t","a":1e2}},"occurred_at":"2026-05-21T12:00:00.123456789Z"}}"#
    )
}

fn signed(key: &AuditHmacKey, id: &str, data: &str) -> Fields {
    Fields::new()
        .with("id", id)
        .with("data", data)
        .with("sig", sign_payload(key, data.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_land_once_and_the_chains_verify() {
    let Some(pg) = postgres_or_skip("audit_e2e_redis_postgres") else {
        return;
    };
    let Some(redis) = redis_or_skip("audit_e2e_redis_postgres") else {
        return;
    };
    let db = pg.create_database("audit_e2e").await.unwrap();
    let mut client = connect(&db).await.unwrap();
    migrate(&mut client).await.unwrap();

    let key = AuditHmacKey::from_hex(KEY_HEX).unwrap();
    let mut config = AuditConfig::dev();
    config.hmac_key = Some(key.clone());
    config.database_url = Some(Secret::new(db.clone()));
    config.redis_url = Some(Secret::new(redis.url()));
    config.claim_idle = Duration::from_secs(1);
    config.ingest.checkpoint_every = 50;
    let backends = Backends::connect(&config).await.unwrap();
    let streams = backends.streams.clone();
    // As `caracal streams provision` would: the group exists before anything is produced.
    streams
        .group_create(
            names::AUDIT_EVENTS,
            names::GROUP_AUDIT_INGESTOR,
            GroupStart::Latest,
        )
        .await
        .unwrap();

    let zones = ["zone-a", "zone-b", "zone-c"];
    let per_zone = 120;
    for n in 0..per_zone {
        for zone in zones {
            let id = format!("{zone}-{n}");
            streams
                .xadd(
                    names::AUDIT_EVENTS,
                    &signed(&key, &id, &event(zone, &id, "allow")),
                )
                .await
                .unwrap();
        }
    }
    // A duplicate delivery (same bytes) and a tampered replay (same key, other content).
    let dup = event("zone-a", "zone-a-7", "allow");
    streams
        .xadd(names::AUDIT_EVENTS, &signed(&key, "zone-a-7", &dup))
        .await
        .unwrap();
    let tampered = event("zone-b", "zone-b-9", "deny");
    streams
        .xadd(names::AUDIT_EVENTS, &signed(&key, "zone-b-9", &tampered))
        .await
        .unwrap();

    let svc = AuditService::new(config, backends.clone()).unwrap();
    let workers = svc.spawn_workers();
    let total = (per_zone * zones.len()) as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = svc.ingestor().stats();
        let pending = streams
            .pending_summary(names::AUDIT_EVENTS, names::GROUP_AUDIT_INGESTOR)
            .await
            .map(|p| p.count)
            .unwrap_or(u64::MAX);
        if stats.inserts == total && stats.tamper_replays == 1 && pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {stats:?}, pending {pending}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(svc.ingestor().stats().duplicates, 1);

    let ledger = &*backends.ledger;
    for zone in zones {
        let rows = ledger.read_chain(zone, 0, 10_000).await.unwrap();
        assert_eq!(rows.len(), per_zone, "{zone}: every event exactly once");
        let seqs: Vec<i64> = rows.iter().map(|r| r.chain_seq).collect();
        assert_eq!(
            seqs,
            (1..=per_zone as i64).collect::<Vec<_>>(),
            "{zone} dense"
        );
    }
    let stored = ledger.read_chain("zone-b", 0, 10_000).await.unwrap();
    let row = stored.iter().find(|r| r.event.id == "zone-b-9").unwrap();
    assert_eq!(row.event.decision, "allow", "the stored row is unchanged");

    // Checkpoints were written (every 50 rows) and the chains verify against them.
    svc.ingestor().flush_checkpoints().await;
    let reports = verify_ledger(ledger, None, Some(&key)).await.unwrap();
    assert_eq!(reports.len(), 3);
    for r in &reports {
        assert!(r.is_clean(), "{r:?}");
        assert!(
            r.checkpoint.is_some(),
            "{}: a checkpoint was checked",
            r.zone_id
        );
    }

    let dlq = streams
        .range(names::AUDIT_EVENTS_DLQ, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].fields.get("reason"), Some("tamper_on_replay"));
    assert_eq!(dlq[0].fields.get("src_id"), Some("zone-b-9"));
    let alerts = ledger.ingest_alerts(Some("zone-b"), 10).await.unwrap();
    assert_eq!(alerts.len(), 1);

    svc.poll_gauges().await;
    assert_eq!(
        caracal_audit::routes::readiness(&svc).await,
        Ok(()),
        "ready on live backends"
    );
    workers.shutdown(Duration::from_secs(10)).await;
}
