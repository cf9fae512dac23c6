//! The hourly exporter on the in-memory ledger (with a fake clock) and on a real Postgres:
//! settled hours only, in order, one file per hour with rows, none for an empty hour, the
//! watermark after each hour, a re-run leaves an existing file alone, late events ship in their
//! ingest hour, and the files re-verify offline, end to end, with the chain key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use caracal_audit::export::{ExportSettings, export_hour, run_tick};
use caracal_core::audit::export::{HOURLY_EXPORTER, object_key, verify_export};
use caracal_core::audit::{AuditEvent, AuditHmacKey};
use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::clock::{FakeClock, SharedClock};
use caracal_core::store::audit::{AuditExportStore, AuditLedger, IncomingEvent};
use caracal_core::store::memory::MemoryStore;
use caracal_test_support::{connect, postgres_or_skip};
use chrono::{DateTime, TimeZone, Utc};

fn key() -> AuditHmacKey {
    AuditHmacKey::from_bytes(vec![9u8; 32]).unwrap()
}

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap()
}

/// Event `n` of `zone`, occurring at `occurred`.
fn event(zone: &str, n: u32, occurred: DateTime<Utc>) -> IncomingEvent {
    let json = format!(
        r#"{{"id":"{zone}-{n}","zone_id":"{zone}","event_type":"token_exchange","request_id":"r{n}","decision":"allow","evaluation_status":"complete","determining_policies_json":null,"diagnostics_json":null,"metadata_json":{{"n":{n}}},"occurred_at":"{}"}}"#,
        occurred.to_rfc3339()
    );
    IncomingEvent {
        event: AuditEvent::parse(json.as_bytes()).unwrap(),
        ingest_signature: None,
    }
}

fn settings(dir: &std::path::Path) -> ExportSettings {
    ExportSettings {
        settle: Duration::from_secs(300),
        ..ExportSettings::new(dir)
    }
}

fn read(dir: &std::path::Path, hour: DateTime<Utc>) -> Option<String> {
    std::fs::read_to_string(dir.join(object_key(hour))).ok()
}

#[tokio::test]
async fn hours_are_exported_once_in_order_and_verify_offline() {
    let clock = Arc::new(FakeClock::new(at(9, 30)));
    let shared: SharedClock = clock.clone();
    let store = Arc::new(MemoryStore::with_clock(shared));
    let dir = tempfile::tempdir().unwrap();
    let k = key();

    // 09:30 — two zones; the fresh exporter at 10:10 takes only the newest settled hour (09:00).
    store
        .append(
            "z-a",
            &[event("z-a", 1, at(9, 30)), event("z-a", 2, at(9, 30))],
            Some(&k),
        )
        .await
        .unwrap();
    store
        .append("z-b", &[event("z-b", 1, at(9, 30))], Some(&k))
        .await
        .unwrap();
    let done = run_tick(&*store, &settings(dir.path()), at(10, 10))
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].hour, done[0].rows), (at(9, 0), 3));
    assert_eq!(
        store.export_watermark(HOURLY_EXPORTER).await.unwrap(),
        Some(at(9, 0))
    );
    let h9 = read(dir.path(), at(9, 0)).unwrap();
    let zones: Vec<String> = h9
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["zone_id"].to_string())
        .collect();
    assert_eq!(
        zones,
        [r#""z-a""#, r#""z-a""#, r#""z-b""#],
        "(zone, seq) order"
    );

    // 10:20 and 12:40 — rows in 10:00 and 12:00, nothing in 11:00; one late event (occurred
    // at 08:00, ingested at 12:40) ships with 12:00. At 12:04 only 10:00 and 11:00 are
    // settled; 12:00 waits for its settle delay.
    clock.set(at(10, 20));
    store
        .append("z-a", &[event("z-a", 3, at(10, 20))], Some(&k))
        .await
        .unwrap();
    clock.set(at(12, 40));
    store
        .append("z-a", &[event("z-a", 4, at(8, 0))], Some(&k))
        .await
        .unwrap();
    store
        .append("z-b", &[event("z-b", 2, at(12, 40))], Some(&k))
        .await
        .unwrap();
    let done = run_tick(&*store, &settings(dir.path()), at(13, 4))
        .await
        .unwrap();
    let hours: Vec<_> = done
        .iter()
        .map(|h| (h.hour, h.rows, h.path.is_some()))
        .collect();
    assert_eq!(hours, vec![(at(10, 0), 1, true), (at(11, 0), 0, false)]);
    assert!(
        read(dir.path(), at(11, 0)).is_none(),
        "an empty hour writes no file"
    );
    let done = run_tick(&*store, &settings(dir.path()), at(13, 6))
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].hour, done[0].rows), (at(12, 0), 2));
    let h12 = read(dir.path(), at(12, 0)).unwrap();
    assert!(
        h12.contains(r#""id":"z-a-4""#),
        "the late event ships in its ingest hour"
    );
    assert!(
        run_tick(&*store, &settings(dir.path()), at(13, 30))
            .await
            .unwrap()
            .is_empty()
    );

    // The files, read in order, re-link end to end for every zone, HMACs included.
    let all = [h9, read(dir.path(), at(10, 0)).unwrap(), h12].concat();
    let reports = verify_export(all.lines(), Some(&k)).unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert!(r.is_clean(), "{r:?}");
    }
    assert_eq!(reports[0].rows_checked + reports[1].rows_checked, 6);
    // A line edited in the archive is found.
    let edited = all.replacen(r#""decision":"allow""#, r#""decision":"deny""#, 1);
    let reports = verify_export(edited.lines(), Some(&k)).unwrap();
    assert!(reports.iter().any(|r| !r.is_clean()));

    // A re-run of an exported hour (a crash after the file, before the watermark) leaves the
    // file as it is and reports it present.
    let before = read(dir.path(), at(10, 0)).unwrap();
    let again = export_hour(&*store, dir.path(), at(10, 0)).await.unwrap();
    assert!(again.already_present);
    assert_eq!(read(dir.path(), at(10, 0)).unwrap(), before);
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn an_unwritable_root_stops_the_tick_and_keeps_the_watermark() {
    let clock: SharedClock = Arc::new(FakeClock::new(at(9, 30)));
    let store = Arc::new(MemoryStore::with_clock(clock));
    store
        .append("z", &[event("z", 1, at(9, 30))], None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The root is a file: nothing can be created under it.
    let root = dir.path().join("not-a-dir");
    std::fs::write(&root, b"x").unwrap();
    assert!(
        run_tick(&*store, &settings(&root), at(10, 10))
            .await
            .is_err()
    );
    assert_eq!(store.export_watermark(HOURLY_EXPORTER).await.unwrap(), None);
}

/// On Postgres the ingest time is the database's: rows appended now are exported once the
/// hour has settled, paging across zones (more rows than one page), in (zone, seq) order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_exports_by_ingest_hour_across_pages() {
    let Some(pg) = postgres_or_skip("audit_export_postgres") else {
        return;
    };
    let url = pg.create_database("audit_export").await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    let store = Arc::new(
        PgStore::open(&url, PgStoreOptions::default())
            .await
            .unwrap(),
    );
    let k = key();
    let now = Utc::now();
    for zone in ["p-a", "p-b"] {
        for chunk in (1..=700u32).collect::<Vec<_>>().chunks(100) {
            let events: Vec<_> = chunk.iter().map(|&n| event(zone, n, now)).collect();
            store.append(zone, &events, Some(&k)).await.unwrap();
        }
    }
    let hour = caracal_core::audit::export::hour_of(now);
    // Pretend the previous hour was exported; run as if two hours later.
    store
        .set_export_watermark(HOURLY_EXPORTER, hour - chrono::Duration::hours(1))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let done = run_tick(
        &*store,
        &settings(dir.path()),
        hour + chrono::Duration::minutes(130),
    )
    .await
    .unwrap();
    assert_eq!(done.len(), 2, "{done:?}");
    let rows: u64 = done.iter().map(|h| h.rows).sum();
    assert_eq!(
        rows, 1_400,
        "every row once, in the hour (or two) it was ingested in"
    );
    let mut all = String::new();
    for h in &done {
        if let Some(p) = &h.path {
            all.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }
    let reports = verify_export(all.lines(), Some(&k)).unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.first_seq, r.last_seq), (Some(1), Some(700)));
    }
    assert_eq!(
        store.export_watermark(HOURLY_EXPORTER).await.unwrap(),
        Some(hour + chrono::Duration::hours(1))
    );
}
