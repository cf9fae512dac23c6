//! The `audit-ingestor` on `MemoryStreams` + `MemoryStore`: every row of the reference's
//! outcome table (§1.4), batching per zone, the max-deliveries path through the reaper, DLQ
//! replay and chain-head checkpoints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use caracal_core::audit::ingest::{
    DeadLetterView, IngestConfig, Ingestor, REASON_HMAC_FAILED, REASON_MISSING_DATA,
    REASON_TAMPER_ON_REPLAY, replay_dead_letters,
};
use caracal_core::audit::ledger_verify::verify_ledger_zone;
use caracal_core::audit::{AuditHmacKey, ChainCheckpoint, ChainHead, LedgerRow, sign_payload};
use caracal_core::clock::{Clock, FakeClock, SharedClock};
use caracal_core::store::audit::{
    AppendOutcome, AuditLedger, AuditQuery, IncomingEvent, IngestAlert,
};
use caracal_core::store::memory::MemoryStore;
use caracal_core::store::{StoreError, StoreResult};
use caracal_core::streams::consumer::{
    Consumer, ConsumerConfig, ConsumerHealth, Delivery, DeliveryKind, Outcome,
};
use caracal_core::streams::{EntryId, Fields, MemoryStreams, Streams, names};
use chrono::{TimeZone, Utc};
use tokio::sync::watch;

const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn key() -> AuditHmacKey {
    AuditHmacKey::from_hex(KEY_HEX).unwrap()
}

fn event_json(zone: &str, id: &str, decision: &str) -> String {
    format!(
        r#"{{"id":"{id}","zone_id":"{zone}","event_type":"token.exchange","request_id":"req-{id}","decision":"{decision}","evaluation_status":"complete","determining_policies_json":[{{"id":"p"}}],"diagnostics_json":null,"metadata_json":{{"trace_id":"t"}},"occurred_at":"2026-05-21T12:00:00Z","extra_unknown":1}}"#
    )
}

fn signed(data: &str) -> Fields {
    Fields::new()
        .with("data", data)
        .with("sig", sign_payload(&key(), data.as_bytes()))
}

fn delivery(fields: Fields, deliveries: u64) -> Delivery {
    Delivery {
        stream: names::AUDIT_EVENTS.into(),
        id: EntryId { ms: 1, seq: 0 },
        fields,
        deliveries,
        kind: DeliveryKind::New,
    }
}

fn dead(reason: &str) -> Outcome {
    Outcome::DeadLetter {
        reason: reason.into(),
    }
}

/// A ledger wrapper with injectable failures.
struct Faulty {
    inner: MemoryStore,
    /// Fail this many appends with a retryable error.
    transient: AtomicU32,
    /// Any append containing an event with this id fails permanently.
    poison_id: Option<String>,
}

impl Faulty {
    fn new(inner: MemoryStore) -> Self {
        Self {
            inner,
            transient: AtomicU32::new(0),
            poison_id: None,
        }
    }
}

#[async_trait]
impl AuditLedger for Faulty {
    async fn append(
        &self,
        zone_id: &str,
        events: &[IncomingEvent],
        key: Option<&AuditHmacKey>,
    ) -> StoreResult<Vec<AppendOutcome>> {
        if self
            .transient
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Unavailable {
                retryable: true,
                message: "connection reset".into(),
            });
        }
        if let Some(p) = &self.poison_id {
            if events.iter().any(|e| &e.event.id == p) {
                return Err(StoreError::Invalid("value too long".into()));
            }
        }
        self.inner.append(zone_id, events, key).await
    }
    async fn chain_head(&self, zone_id: &str) -> StoreResult<Option<ChainHead>> {
        self.inner.chain_head(zone_id).await
    }
    async fn read_chain(&self, z: &str, after: i64, limit: u32) -> StoreResult<Vec<LedgerRow>> {
        self.inner.read_chain(z, after, limit).await
    }
    async fn ledger_zones(&self) -> StoreResult<Vec<String>> {
        self.inner.ledger_zones().await
    }
    async fn search_audit(&self, q: &AuditQuery) -> StoreResult<Vec<LedgerRow>> {
        self.inner.search_audit(q).await
    }
    async fn ingest_alerts(&self, z: Option<&str>, limit: u32) -> StoreResult<Vec<IngestAlert>> {
        self.inner.ingest_alerts(z, limit).await
    }
    async fn put_checkpoint(&self, c: &ChainCheckpoint) -> StoreResult<()> {
        self.inner.put_checkpoint(c).await
    }
    async fn latest_checkpoint(&self, z: &str) -> StoreResult<Option<ChainCheckpoint>> {
        self.inner.latest_checkpoint(z).await
    }
}

fn ingestor(ledger: Arc<dyn AuditLedger>, key: Option<AuditHmacKey>) -> Ingestor {
    Ingestor::new(ledger, key, IngestConfig::default())
}

async fn rows(ledger: &dyn AuditLedger, zone: &str) -> Vec<LedgerRow> {
    ledger.read_chain(zone, 0, 1000).await.unwrap()
}

#[tokio::test]
async fn the_outcome_table_in_order() {
    let store = Arc::new(MemoryStore::new());
    let ing = ingestor(store.clone(), Some(key()));
    let good = event_json("z1", "e1", "allow");
    let tampered = event_json("z1", "e1", "deny");
    let batch = vec![
        // 1. no data (even with a valid-looking sig)
        delivery(Fields::new().with("sig", "00"), 1),
        // 2. HMAC: missing, empty, not hex, wrong
        delivery(Fields::new().with("data", good.as_str()), 1),
        delivery(Fields::new().with("data", good.as_str()).with("sig", ""), 1),
        delivery(
            Fields::new().with("data", good.as_str()).with("sig", "zz"),
            1,
        ),
        delivery(signed(&tampered).with("data", good.as_str()), 1),
        // 3. parse errors (signed, so they pass step 2)
        delivery(signed("not json"), 1),
        delivery(
            signed(r#"{"id":"x","occurred_at":"2026-05-21T12:00:00Z"}"#),
            1,
        ),
        delivery(signed(r#"{"id":"x","zone_id":"z1"}"#), 1),
        // 5. inserted, then a benign duplicate in the same read
        delivery(signed(&good), 1),
        delivery(signed(&good), 1),
        // 4. same key, other content
        delivery(signed(&tampered), 1),
    ];
    let out = ing.ingest(&batch).await;
    assert_eq!(out.len(), batch.len());
    assert_eq!(out[0], dead(REASON_MISSING_DATA));
    for o in &out[1..5] {
        assert_eq!(*o, dead(REASON_HMAC_FAILED));
    }
    for o in &out[5..8] {
        match o {
            Outcome::DeadLetter { reason } => {
                assert!(reason.starts_with("json_parse_error:"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(out[8], Outcome::Ack);
    assert_eq!(out[9], Outcome::Ack);
    assert_eq!(out[10], dead(REASON_TAMPER_ON_REPLAY));

    let stored = rows(&*store, "z1").await;
    assert_eq!(stored.len(), 1, "one row: duplicate and tamper add none");
    assert_eq!(
        stored[0].event.decision, "allow",
        "the stored row is unchanged"
    );
    assert_eq!(stored[0].chain_seq, 1);
    let alerts = store.ingest_alerts(Some("z1"), 10).await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, "content_mismatch_on_replay");
    let s = ing.stats();
    assert_eq!(
        (
            s.missing_data,
            s.hmac_failures,
            s.parse_errors,
            s.inserts,
            s.duplicates
        ),
        (1, 4, 3, 1, 1)
    );
    assert_eq!(s.tamper_replays, 1);
}

#[tokio::test]
async fn without_a_key_every_message_verifies_and_links_are_unsigned() {
    let store = Arc::new(MemoryStore::new());
    let ing = ingestor(store.clone(), None);
    let data = event_json("z1", "e1", "allow");
    let out = ing
        .ingest(&[delivery(
            Fields::new().with("data", data.as_str()).with("sig", "zz"),
            1,
        )])
        .await;
    assert_eq!(out, vec![Outcome::Ack]);
    let stored = rows(&*store, "z1").await;
    assert_eq!(stored[0].chain_hmac, "");
    assert_eq!(stored[0].ingest_signature.as_deref(), Some("zz"));
}

#[tokio::test]
async fn store_failures_retry_then_dead_letter_at_max_deliveries() {
    let faulty = Arc::new(Faulty::new(MemoryStore::new()));
    faulty.transient.store(2, Ordering::SeqCst);
    let ing = ingestor(faulty.clone(), Some(key()));
    let data = event_json("z1", "e1", "allow");
    assert_eq!(
        ing.ingest(&[delivery(signed(&data), 7)]).await,
        vec![Outcome::Retry]
    );
    match &ing.ingest(&[delivery(signed(&data), 8)]).await[0] {
        Outcome::DeadLetter { reason } => assert_eq!(
            reason,
            "transient_exceeded_max_deliveries:store unavailable: connection reset"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ing.ingest(&[delivery(signed(&data), 9)]).await,
        vec![Outcome::Ack]
    );
    assert_eq!(ing.stats().transient_retries, 1);
    assert_eq!(ing.stats().transient_exceeded, 1);
}

#[tokio::test]
async fn a_permanent_error_dead_letters_only_the_culprit_of_a_batch() {
    let mut faulty = Faulty::new(MemoryStore::new());
    faulty.poison_id = Some("bad".into());
    let faulty = Arc::new(faulty);
    let ing = ingestor(faulty.clone(), Some(key()));
    let batch: Vec<Delivery> = ["a", "bad", "c"]
        .iter()
        .map(|id| delivery(signed(&event_json("z1", id, "allow")), 1))
        .chain(std::iter::once(delivery(
            signed(&event_json("z2", "d", "allow")),
            1,
        )))
        .collect();
    let out = ing.ingest(&batch).await;
    assert_eq!(out[0], Outcome::Ack);
    assert_eq!(out[1], dead("pg_permanent_error:invalid: value too long"));
    assert_eq!(out[2], Outcome::Ack);
    assert_eq!(out[3], Outcome::Ack);
    let z1 = rows(&*faulty, "z1").await;
    assert_eq!(
        z1.iter()
            .map(|r| (r.event.id.as_str(), r.chain_seq))
            .collect::<Vec<_>>(),
        vec![("a", 1), ("c", 2)]
    );
    assert_eq!(rows(&*faulty, "z2").await.len(), 1);
}

#[tokio::test]
async fn checkpoints_every_n_rows_and_after_the_interval() {
    let clock = FakeClock::new(Utc.with_ymd_and_hms(2026, 5, 21, 12, 0, 0).unwrap());
    let store = Arc::new(MemoryStore::new());
    let config = IngestConfig {
        checkpoint_every: 3,
        checkpoint_interval: Duration::from_secs(60),
        ..IngestConfig::default()
    };
    let ing = Ingestor::new(store.clone(), Some(key()), config)
        .with_clock(Arc::new(clock.clone()) as SharedClock);
    let batch: Vec<Delivery> = (0..4)
        .map(|i| delivery(signed(&event_json("z1", &format!("e{i}"), "allow")), 1))
        .collect();
    ing.ingest(&batch[..2]).await;
    assert!(store.latest_checkpoint("z1").await.unwrap().is_none());
    ing.ingest(&batch[2..3]).await;
    let cp = store.latest_checkpoint("z1").await.unwrap().unwrap();
    assert_eq!(cp.chain_seq, 3);
    assert!(cp.verify_signature(&key()));
    ing.ingest(&batch[3..]).await;
    assert_eq!(ing.flush_checkpoints().await, 0, "not due yet");
    clock.advance(chrono::Duration::seconds(61));
    assert_eq!(ing.flush_checkpoints().await, 1);
    let cp = store.latest_checkpoint("z1").await.unwrap().unwrap();
    assert_eq!(cp.chain_seq, 4);
    assert_eq!(ing.flush_checkpoints().await, 0, "nothing new");
    let report = verify_ledger_zone(&*store, "z1", Some(&key()))
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(ing.stats().checkpoints, 2);
}

// ---- through the consumer loop ----

struct Rig {
    clock: FakeClock,
    streams: Arc<MemoryStreams>,
    health: ConsumerHealth,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn run(ledger: Arc<dyn AuditLedger>, max_deliveries: u64) -> Rig {
    let clock = FakeClock::new(Utc.with_ymd_and_hms(2026, 5, 21, 12, 0, 0).unwrap());
    let streams = Arc::new(MemoryStreams::new(Arc::new(clock.clone())));
    let ing = Ingestor::new(
        ledger,
        Some(key()),
        IngestConfig {
            max_deliveries,
            ..IngestConfig::default()
        },
    );
    let mut config = ConsumerConfig::new(
        names::AUDIT_EVENTS,
        names::GROUP_AUDIT_INGESTOR,
        "audit-worker-0",
    );
    config.dead_letter_stream = names::AUDIT_EVENTS_DLQ.into();
    config.group_start = caracal_core::streams::GroupStart::Beginning;
    config.block = Duration::from_millis(20);
    config.claim_interval = Duration::from_millis(20);
    config.claim_idle = Duration::from_secs(30);
    let consumer = Consumer::new(streams.clone() as Arc<dyn Streams>, config, Arc::new(ing))
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let health = consumer.health();
    let (stop, rx) = watch::channel(false);
    let task = consumer.spawn(rx);
    Rig {
        clock,
        streams,
        health,
        stop,
        task,
    }
}

impl Rig {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Poll `cond` every 10 ms for at most 10 s.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn dlq(streams: &MemoryStreams) -> Vec<caracal_core::streams::StreamEntry> {
    streams
        .range(names::AUDIT_EVENTS_DLQ, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_acks_stored_entries_and_dead_letters_with_source_fields() {
    let store = Arc::new(MemoryStore::new());
    let rig = run(store.clone(), 8);
    let good = event_json("z1", "e1", "allow");
    let s = &rig.streams;
    s.xadd(names::AUDIT_EVENTS, &signed(&good).with("id", "e1"))
        .await
        .unwrap();
    s.xadd(names::AUDIT_EVENTS, &signed(&good).with("id", "e1"))
        .await
        .unwrap();
    let bad = s
        .xadd(
            names::AUDIT_EVENTS,
            &Fields::new()
                .with("data", good.as_str())
                .with("sig", "00")
                .with("id", "e1"),
        )
        .await
        .unwrap();
    eventually("all handled", || async {
        let p = s
            .pending_summary(names::AUDIT_EVENTS, names::GROUP_AUDIT_INGESTOR)
            .await;
        rig.health.stats().handled >= 3 && p.is_ok_and(|p| p.count == 0)
    })
    .await;
    assert_eq!(rows(&*store, "z1").await.len(), 1);
    let d = dlq(s).await;
    assert_eq!(d.len(), 1);
    let f = &d[0].fields;
    assert_eq!(f.get("reason"), Some("hmac_verify_failed"));
    assert_eq!(f.get("source_id"), Some(bad.to_string().as_str()));
    assert_eq!(
        f.get("src_id"),
        Some("e1"),
        "the event id field does not collide"
    );
    assert_eq!(f.get("src_data"), Some(good.as_str()));
    let view = DeadLetterView::from_entry(&d[0], rig.clock.now());
    assert_eq!(view.event_id, "e1");
    assert_eq!(view.zone_id, "z1");
    assert!(!view.replayable);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_reach_the_dlq_through_the_reaper_and_replay_reingests() {
    let faulty = Arc::new(Faulty::new(MemoryStore::new()));
    faulty.transient.store(u32::MAX, Ordering::SeqCst);
    let rig = run(faulty.clone(), 3);
    let data = event_json("z1", "e1", "allow");
    rig.streams
        .xadd(names::AUDIT_EVENTS, &signed(&data))
        .await
        .unwrap();
    // Each reaper pass claims it once idle (30 s on the fake clock): deliveries 2, 3.
    eventually("dead-lettered after 3 deliveries", || async {
        rig.clock.advance(chrono::Duration::seconds(31));
        !dlq(&rig.streams).await.is_empty()
    })
    .await;
    let d = dlq(&rig.streams).await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].fields.get("deliveries"), Some("3"));
    assert!(
        d[0].fields
            .get("reason")
            .unwrap()
            .starts_with("transient_exceeded_max_deliveries:"),
    );
    let p = rig
        .streams
        .pending_summary(names::AUDIT_EVENTS, names::GROUP_AUDIT_INGESTOR)
        .await
        .unwrap();
    assert_eq!(p.count, 0, "acknowledged once dead-lettered");
    assert!(rows(&*faulty, "z1").await.is_empty());

    // The database recovers; replay re-adds the entry and deletes the dead letter.
    faulty.transient.store(0, Ordering::SeqCst);
    let report = replay_dead_letters(&*rig.streams, 100).await.unwrap();
    assert_eq!((report.scanned, report.replayed, report.skipped), (1, 1, 0));
    assert!(dlq(&rig.streams).await.is_empty());
    eventually("replayed entry ingested", || async {
        rows(&*faulty, "z1").await.len() == 1
    })
    .await;
    rig.stop().await;
}

#[tokio::test]
async fn replay_skips_the_non_replayable_reasons() {
    let clock = FakeClock::new(Utc.with_ymd_and_hms(2026, 5, 21, 12, 0, 0).unwrap());
    let streams = MemoryStreams::new(Arc::new(clock));
    for reason in [
        "hmac_verify_failed",
        "json_parse_error:x",
        "missing_data_field",
        "tamper_on_replay",
        "pg_permanent_error:x",
    ] {
        streams
            .xadd(
                names::AUDIT_EVENTS_DLQ,
                &Fields::new()
                    .with("reason", reason)
                    .with("source_id", "1-0")
                    .with("src_data", "{}"),
            )
            .await
            .unwrap();
    }
    let report = replay_dead_letters(&streams, 100).await.unwrap();
    assert_eq!((report.scanned, report.replayed, report.skipped), (5, 1, 4));
    assert_eq!(dlq(&streams).await.len(), 4);
    assert_eq!(streams.len(names::AUDIT_EVENTS).await.unwrap(), 1);
}
