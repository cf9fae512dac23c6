//! The audit ledger contract (`tests/contract/ledger.rs`) against the Postgres ledger, one
//! fresh migrated database per case; plus the proof of SPEC §5.7 that rows written by the
//! native normaliser read back from Postgres (`jsonb::text`) hash to their stored content hash,
//! and that the in-memory and Postgres ledgers produce identical chains for identical events.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "contract/ledger.rs"]
mod ledger_contract;

use std::sync::Arc;
use std::time::Duration;

use caracal_core::audit::{AuditEvent, content_hash};
use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::store::audit::{AuditLedger, IncomingEvent};
use caracal_core::store::memory::MemoryStore;
use caracal_test_support::{connect, postgres_or_skip};

async fn fresh_ledger(test: &str) -> Option<PgStore> {
    let pg = postgres_or_skip(test)?;
    let url = pg.create_database(test).await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    drop(client);
    let options = PgStoreOptions {
        max_size: 12,
        connection_timeout: Duration::from_secs(10),
        ..PgStoreOptions::default()
    };
    Some(PgStore::open(&url, options).await.unwrap())
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let Some(l) = fresh_ledger(stringify!($name)).await else { return };
            ledger_contract::$name(&l, "pg").await;
        }
    )*};
}

cases!(
    fixture_vector,
    dense_chain_verifies,
    benign_duplicate,
    tamper_on_replay,
    key_is_id_and_microsecond_instant,
    nul_is_stripped,
    wrong_zone_is_refused_atomically,
    search_filters,
    checkpoints,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_stay_dense() {
    let Some(l) = fresh_ledger("concurrent_appends_stay_dense").await else {
        return;
    };
    ledger_contract::concurrent_appends_stay_dense(Arc::new(l), "pg").await;
}

/// Events with awkward JSON (key order, duplicates, exponents, scale, escapes, unicode): the
/// Postgres ledger's stored `jsonb::text` recomputes to the stored hash, and both ledgers
/// build the same chain (same hashes, links and HMACs) from the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_and_memory_hash_identically() {
    let Some(pg) = fresh_ledger("postgres_and_memory_hash_identically").await else {
        return;
    };
    let mem = MemoryStore::new();
    let zone = "zone-hash";
    let docs = [
        r#"{"b":1,"a":2,"aa":{"z":[1,2,{"y":null}]}}"#,
        r#"{"n":1e2,"m":1.50,"k":-0,"j":0.000001,"i":123456789012345678901234567890}"#,
        r#"{"dup":1,"dup":2,"s":"tab\there \u00e9\u4e2d \ud83d\ude00 / \\ \"q\""}"#,
        r#"[true,false,null,"x",{"":""},[]]"#,
        r#"{"x":1E-7,"y":2.5e+3,"z":-1.0e0}"#,
    ];
    let mut events = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let raw = format!(
            r#"{{"id":"h{i}","zone_id":"{zone}","event_type":"token_exchange","request_id":"r{i}","decision":"allow","evaluation_status":"complete","determining_policies_json":{doc},"diagnostics_json":[{{"reason":"x"}}],"metadata_json":{doc},"occurred_at":"2026-05-21T12:00:0{i}.123456789Z"}}"#
        );
        events.push(IncomingEvent {
            event: AuditEvent::parse(raw.as_bytes()).unwrap(),
            ingest_signature: Some("ab".repeat(32)),
        });
    }
    let key = ledger_contract::key();
    pg.append(zone, &events, Some(&key)).await.unwrap();
    mem.append(zone, &events, Some(&key)).await.unwrap();
    let from_pg = pg.read_chain(zone, 0, 100).await.unwrap();
    let from_mem = mem.read_chain(zone, 0, 100).await.unwrap();
    assert_eq!(from_pg.len(), docs.len());
    for (p, m) in from_pg.iter().zip(&from_mem) {
        // Recomputed from what Postgres printed: the native normaliser matched jsonb.
        assert_eq!(content_hash(&p.event).unwrap(), p.content_sha256);
        assert_eq!(p.content_sha256, m.content_sha256);
        assert_eq!(p.prev_content_sha256, m.prev_content_sha256);
        assert_eq!(p.chain_hmac, m.chain_hmac);
        assert_eq!(p.chain_seq, m.chain_seq);
        assert_eq!(p.event, m.event);
    }
}
