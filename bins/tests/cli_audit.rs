//! `caracal audit verify` against a real Postgres: a clean ledger exits 0; a row edited as
//! superuser (past the append-only trigger) and a deleted tip each exit 1 naming the zone and
//! the sequence number.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use caracal_core::audit::{AuditEvent, AuditHmacKey, ChainCheckpoint};
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::store::audit::{AuditLedger, IncomingEvent};
use caracal_test_support::postgres_or_skip;

const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn caracal(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_caracal"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_URL_FILE")
        .env_remove("AUDIT_HMAC_KEY")
        .env_remove("AUDIT_HMAC_KEY_FILE")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn event(zone: &str, n: u32) -> IncomingEvent {
    let json = format!(
        r#"{{"id":"{zone}-ev-{n}","zone_id":"{zone}","event_type":"token.exchange","request_id":"r{n}","decision":"allow","evaluation_status":"complete","determining_policies_json":[{{"id":"p"}}],"diagnostics_json":null,"occurred_at":"2026-05-21T12:00:0{n}Z"}}"#
    );
    IncomingEvent {
        event: AuditEvent::parse(json.as_bytes()).unwrap(),
        ingest_signature: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_a_clean_ledger_and_names_tampered_rows() {
    let Some(pg) = postgres_or_skip("verify_passes_a_clean_ledger_and_names_tampered_rows") else {
        return;
    };
    let url = pg.create_database("cli_audit_verify").await.unwrap();
    let out = caracal(&["migrate", "--database-url", &url], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let key = AuditHmacKey::from_hex(KEY_HEX).unwrap();
    let store = PgStore::open(&url, PgStoreOptions::default())
        .await
        .unwrap();
    for zone in ["zone-a", "zone-b", "zone-c", "zone-d"] {
        let events: Vec<IncomingEvent> = (1..=4).map(|n| event(zone, n)).collect();
        store.append(zone, &events, Some(&key)).await.unwrap();
        let head = store.chain_head(zone).await.unwrap().unwrap();
        store
            .put_checkpoint(&ChainCheckpoint::sign(&key, zone, &head))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("audit_key");
    std::fs::write(&key_file, format!("{KEY_HEX}\n")).unwrap();
    let key_path = key_file.display().to_string();

    let out = caracal(
        &[
            "audit",
            "verify",
            "--database-url",
            &url,
            "--audit-hmac-key-file",
            &key_path,
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("zone-a") && stdout.contains("zone-b"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");

    // Edit a middle row of zone-a as superuser, bypassing the append-only trigger.
    let client = caracal_test_support::postgres::connect(&url).await.unwrap();
    client
        .batch_execute(
            "SET session_replication_role = replica; \
             UPDATE audit_events SET decision = 'deny' WHERE zone_id = 'zone-a' AND chain_seq = 2; \
             SET session_replication_role = origin;",
        )
        .await
        .unwrap();
    let out = caracal(
        &["audit", "verify", "--zone", "zone-a"],
        &[("DATABASE_URL", &url), ("AUDIT_HMAC_KEY", KEY_HEX)],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("finding: zone zone-a seq 2 event zone-a-ev-2"),
        "{stdout}"
    );
    assert!(stderr.contains("zone-a"), "{stderr}");
    assert!(
        !stdout.contains("zone-b"),
        "--zone limits the run: {stdout}"
    );

    // Delete the tip of zone-b: no link shows it, the signed checkpoint does.
    client
        .batch_execute(
            "SET session_replication_role = replica; \
             DELETE FROM audit_events WHERE zone_id = 'zone-b' AND chain_seq = 4; \
             SET session_replication_role = origin;",
        )
        .await
        .unwrap();
    let out = caracal(
        &[
            "audit",
            "verify",
            "--database-url",
            &url,
            "--audit-hmac-key-file",
            &key_path,
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stderr.contains("zone-a, zone-b"), "{stderr}");
    assert!(stdout.contains("truncated"), "{stdout}");

    // Delete a middle row of zone-c: the gap and the broken link show at seq 3.
    client
        .batch_execute(
            "SET session_replication_role = replica; \
             DELETE FROM audit_events WHERE zone_id = 'zone-c' AND chain_seq = 2; \
             SET session_replication_role = origin;",
        )
        .await
        .unwrap();
    // Edit zone-d's row 3 and recompute its content hash consistently, without the key: only
    // the chain HMAC (and the next row's link) can tell.
    let rows = store.read_chain("zone-d", 0, 10).await.unwrap();
    let mut forged = rows[2].event.clone();
    forged.decision = "deny".into();
    let forged_hash = caracal_core::audit::content_hash(&forged).unwrap();
    client
        .batch_execute(&format!(
            "SET session_replication_role = replica; \
             UPDATE audit_events SET decision = 'deny', content_sha256 = '{forged_hash}' \
               WHERE zone_id = 'zone-d' AND chain_seq = 3; \
             UPDATE audit_events SET prev_content_sha256 = '{forged_hash}' \
               WHERE zone_id = 'zone-d' AND chain_seq = 4; \
             SET session_replication_role = origin;"
        ))
        .await
        .unwrap();
    let out = caracal(
        &[
            "audit",
            "verify",
            "--database-url",
            &url,
            "--audit-hmac-key-file",
            &key_path,
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("zone-a, zone-b, zone-c, zone-d"),
        "{stderr}"
    );
    assert!(
        stdout.contains("finding: zone zone-c seq 3 event zone-c-ev-3: gap"),
        "{stdout}"
    );
    assert!(
        stdout.contains("finding: zone zone-d seq 3 event zone-d-ev-3: hmac_failure"),
        "{stdout}"
    );
    assert!(
        stdout.contains("finding: zone zone-d seq 4 event zone-d-ev-4: hmac_failure"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("zone-d seq 3 event zone-d-ev-3: content_mismatch"),
        "the forged hash recomputes: {stdout}"
    );

    // Without the key the HMACs are not checked, and the output says so.
    let out = caracal(
        &[
            "audit",
            "verify",
            "--database-url",
            &url,
            "--zone",
            "zone-a",
        ],
        &[],
    );
    assert!(text(&out.stdout).contains("not checked"));
    assert_eq!(out.status.code(), Some(1), "the content hash still fails");
}
