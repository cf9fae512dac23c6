//! The migration runner against a real Postgres (an ephemeral cluster, or
//! `CARACAL_TEST_DATABASE_URL`): the four behaviours of issue 3 — applies everything and
//! records checksums; concurrent migrators are safe; re-running is a no-op; an edited
//! applied file is refused, naming the file — plus the schema's own guarantees.

#![cfg(feature = "postgres")]
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use caracal_core::backend::postgres::migrate::{
    EMBEDDED, MigrateError, Migration, Migrator, migrate,
};
use caracal_test_support::{connect, postgres_or_skip};
use tokio_postgres::Client;

/// A fresh database on the shared cluster, or `None` (skipped) without Postgres.
async fn fresh_db(test: &str) -> Option<(String, Client)> {
    let pg = postgres_or_skip(test)?;
    let url = pg.create_database(test).await.unwrap();
    let client = connect(&url).await.unwrap();
    Some((url, client))
}

async fn recorded(client: &Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Non-idempotent migrations that count their own executions in `applied_log`, so a test
/// can prove each ran exactly once. The second one is slow, to widen the race window.
fn counting_migrations() -> Vec<Migration<'static>> {
    vec![
        Migration::new(
            "0001_log.sql",
            "CREATE TABLE applied_log (file text NOT NULL);\n\
             INSERT INTO applied_log VALUES ('0001');",
        ),
        Migration::new(
            "0002_slow.sql",
            "SELECT pg_sleep(0.3);\n\
             CREATE TABLE t2 (id int PRIMARY KEY);\n\
             INSERT INTO applied_log VALUES ('0002');",
        ),
        Migration::new(
            "0003_more.sql",
            "ALTER TABLE t2 ADD COLUMN v text;\n\
             INSERT INTO applied_log VALUES ('0003');",
        ),
    ]
}

async fn log_counts(client: &Client) -> Vec<(String, i64)> {
    client
        .query(
            "SELECT file, count(*) FROM applied_log GROUP BY file ORDER BY file",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

// (1) Applies every file in order and records each with its checksum.
#[tokio::test]
async fn applies_all_and_records_checksums() {
    let Some((_, mut client)) = fresh_db("applies_all_and_records_checksums").await else {
        return;
    };
    let report = migrate(&mut client).await.unwrap();
    assert_eq!(
        report
            .applied
            .iter()
            .map(|a| a.version.as_str())
            .collect::<Vec<_>>(),
        EMBEDDED.iter().map(|m| m.version()).collect::<Vec<_>>()
    );
    assert!(report.already_applied.is_empty());
    let expected: Vec<(String, String)> = EMBEDDED
        .iter()
        .map(|m| (m.version().to_owned(), m.checksum()))
        .collect();
    assert_eq!(recorded(&client).await, expected);
    for a in &report.applied {
        assert_eq!(a.checksum.len(), 64);
    }

    // The tables the services need exist.
    for table in [
        "zones",
        "applications",
        "resources",
        "providers",
        "secret_store",
        "zone_signing_keys",
        "authority_records",
        "sessions",
        "delegation_edges",
        "delegation_graph_epochs",
        "coordinator_idempotency_receipts",
        "policies",
        "policy_versions",
        "policy_sets",
        "policy_set_versions",
        "policy_set_bindings",
        "approvals",
        "admin_tokens",
        "outbox",
        "audit_events",
        "audit_events_default",
        "audit_ingest_alerts",
        "audit_chain_checkpoints",
        "audit_export_watermark",
        "audit_retention",
        "admin_audit_events",
        "schema_migrations",
    ] {
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .unwrap()
            .get(0);
        assert!(exists, "table {table} missing");
    }

    // Partitions for the current UTC month and the next three.
    let missing: i64 = client
        .query_one(
            "SELECT count(*) FROM generate_series(0, 3) AS i \
             WHERE to_regclass(format('audit_events_y%sm%s', \
                 to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i), 'YYYY'), \
                 to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i), 'MM'))) IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(missing, 0, "a monthly audit partition is missing");
}

// (2) Concurrent migrators on a fresh database all succeed and apply each file once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrators_apply_each_file_once() {
    let Some((url, client)) = fresh_db("concurrent_migrators_apply_each_file_once").await else {
        return;
    };

    // The embedded baseline, four migrators at once.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&url).await.unwrap();
            migrate(&mut c).await
        }));
    }
    let mut applied_total = 0;
    for t in tasks {
        let report = t.await.unwrap().unwrap();
        applied_total += report.applied.len();
        assert_eq!(report.latest(), EMBEDDED.last().map(|m| m.version()));
    }
    assert_eq!(
        applied_total,
        EMBEDDED.len(),
        "each file applied exactly once"
    );
    assert_eq!(recorded(&client).await.len(), EMBEDDED.len());

    // Non-idempotent files that count their executions, on a second fresh database.
    let Some((url, client)) = fresh_db("concurrent_migrators_counting").await else {
        return;
    };
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&url).await.unwrap();
            Migrator::new(counting_migrations())
                .unwrap()
                .run(&mut c)
                .await
        }));
    }
    let mut applied_total = 0;
    for t in tasks {
        applied_total += t.await.unwrap().unwrap().applied.len();
    }
    assert_eq!(applied_total, 3);
    assert_eq!(
        log_counts(&client).await,
        vec![("0001".into(), 1), ("0002".into(), 1), ("0003".into(), 1)]
    );
}

// (3) Re-running is a no-op.
#[tokio::test]
async fn rerun_is_a_noop() {
    let Some((_, mut client)) = fresh_db("rerun_is_a_noop").await else {
        return;
    };
    let first = migrate(&mut client).await.unwrap();
    assert!(!first.is_noop());
    let before: Vec<(String, std::time::SystemTime)> = client
        .query("SELECT version, applied_at FROM schema_migrations", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let second = migrate(&mut client).await.unwrap();
    assert!(second.is_noop(), "second run applied {:?}", second.applied);
    assert_eq!(second.already_applied.len(), EMBEDDED.len());
    let after: Vec<(String, std::time::SystemTime)> = client
        .query("SELECT version, applied_at FROM schema_migrations", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(before, after, "nothing re-recorded");

    // With non-idempotent files: a second run executes nothing.
    let runner = Migrator::new(counting_migrations()).unwrap();
    let Some((_, mut client)) = fresh_db("rerun_is_a_noop_counting").await else {
        return;
    };
    assert_eq!(runner.run(&mut client).await.unwrap().applied.len(), 3);
    assert!(runner.run(&mut client).await.unwrap().is_noop());
    assert_eq!(log_counts(&client).await.len(), 3);
    assert!(log_counts(&client).await.iter().all(|(_, n)| *n == 1));
    let status = runner.status(&mut client).await.unwrap();
    assert_eq!(status.applied.len(), 3);
    assert!(status.pending.is_empty());
}

// (4) An applied file that was edited makes the runner refuse, naming the file, before it
// applies anything.
#[tokio::test]
async fn edited_applied_file_is_refused() {
    let Some((_, mut client)) = fresh_db("edited_applied_file_is_refused").await else {
        return;
    };
    let original = counting_migrations();
    Migrator::new(original[..1].to_vec())
        .unwrap()
        .run(&mut client)
        .await
        .unwrap();

    // The same list with 0001 edited (one comment added) and a pending 0002.
    let mut edited = counting_migrations();
    let sql = format!("{}\n-- edited after release\n", edited[0].sql);
    edited[0] = Migration::new("0001_log.sql", &sql);
    let err = Migrator::new(edited.clone())
        .unwrap()
        .run(&mut client)
        .await
        .unwrap_err();
    match &err {
        MigrateError::ChecksumMismatch {
            file,
            recorded,
            expected,
        } => {
            assert_eq!(file, "0001_log.sql");
            assert_eq!(*recorded, original[0].checksum());
            assert_eq!(*expected, edited[0].checksum());
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("0001_log.sql"), "{err}");
    assert!(!err.is_retryable());
    // Nothing pending was applied.
    assert_eq!(recorded(&client).await.len(), 1);
    let t2: bool = client
        .query_one("SELECT to_regclass('t2') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!t2, "0002 must not run after the refusal");
    // `status` refuses the same way.
    assert!(matches!(
        Migrator::new(edited).unwrap().status(&mut client).await,
        Err(MigrateError::ChecksumMismatch { .. })
    ));

    // The embedded baseline with its recorded checksum tampered: refused, naming the file.
    let Some((_, mut client)) = fresh_db("edited_applied_file_is_refused_embedded").await else {
        return;
    };
    migrate(&mut client).await.unwrap();
    client
        .execute(
            "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = $1",
            &[&EMBEDDED[0].version()],
        )
        .await
        .unwrap();
    let err = migrate(&mut client).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::ChecksumMismatch { file, .. } if file == EMBEDDED[0].file),
        "{err:?}"
    );
    assert!(err.to_string().contains(EMBEDDED[0].file));
}

#[tokio::test]
async fn unknown_or_out_of_order_history_is_refused() {
    let Some((_, mut client)) = fresh_db("unknown_or_out_of_order_history_is_refused").await else {
        return;
    };
    let all = counting_migrations();
    Migrator::new(all.clone())
        .unwrap()
        .run(&mut client)
        .await
        .unwrap();
    // An older binary that knows only 0001: the database is ahead of it.
    let err = Migrator::new(all[..1].to_vec())
        .unwrap()
        .run(&mut client)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::UnknownApplied { ref version } if version == "0002_slow"));

    // A file slipped in below an applied one.
    let Some((_, mut client)) = fresh_db("out_of_order_history").await else {
        return;
    };
    Migrator::new(vec![all[0], all[2]])
        .unwrap()
        .run(&mut client)
        .await
        .unwrap_err(); // 0003 alters t2, which only 0002 creates: apply error
    Migrator::new(vec![all[0], Migration::new("0003_other.sql", "SELECT 1;")])
        .unwrap()
        .run(&mut client)
        .await
        .unwrap();
    let err = Migrator::new(vec![
        all[0],
        all[1],
        Migration::new("0003_other.sql", "SELECT 1;"),
    ])
    .unwrap()
    .run(&mut client)
    .await
    .unwrap_err();
    assert!(
        matches!(err, MigrateError::PendingBeforeApplied { ref file, .. } if file == "0002_slow.sql"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failing_migration_rolls_back_and_names_the_file() {
    let Some((_, mut client)) = fresh_db("a_failing_migration_rolls_back").await else {
        return;
    };
    let list = vec![
        Migration::new("0001_ok.sql", "CREATE TABLE ok (v int);"),
        Migration::new(
            "0002_bad.sql",
            "CREATE TABLE half (v int);\nSELECT * FROM no_such_table;",
        ),
    ];
    let err = Migrator::new(list)
        .unwrap()
        .run(&mut client)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::Apply { ref file, .. } if file == "0002_bad.sql"));
    let text = err.to_string();
    assert!(
        text.contains("0002_bad.sql") && text.contains("no_such_table"),
        "{text}"
    );
    assert_eq!(recorded(&client).await.len(), 1, "0001 recorded, 0002 not");
    let half: bool = client
        .query_one("SELECT to_regclass('half') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!half, "the failed file's statements were rolled back");
}

#[tokio::test]
async fn lock_wait_is_bounded() {
    let Some((url, mut client)) = fresh_db("lock_wait_is_bounded").await else {
        return;
    };
    // Another session holds the migration lock.
    let holder = connect(&url).await.unwrap();
    holder
        .query(
            "SELECT pg_advisory_lock($1)",
            &[&caracal_core::backend::postgres::migrate::MIGRATION_LOCK_KEY],
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = Migrator::embedded()
        .unwrap()
        .with_lock_timeout(Duration::from_millis(300))
        .run(&mut client)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::LockTimeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(holder);
}

#[tokio::test]
async fn schema_guarantees_hold() {
    let Some((_, mut client)) = fresh_db("schema_guarantees_hold").await else {
        return;
    };
    migrate(&mut client).await.unwrap();
    let sha = "a".repeat(64);
    client
        .batch_execute(&format!(
            "INSERT INTO zones (id, name, slug) VALUES ('z1', 'Zone 1', 'zone-1'), ('z2', 'Zone 2', 'zone-2');
             INSERT INTO policies (id, zone_id, name) VALUES ('p1', 'z1', 'baseline');
             INSERT INTO policy_versions (id, policy_id, zone_id, version, content, content_sha256, schema_version)
                 VALUES ('pv1', 'p1', 'z1', 1, '{{}}', '{sha}', '2026-05-20');
             INSERT INTO policy_sets (id, zone_id, name) VALUES ('s1', 'z1', 'main'), ('s2', 'z1', 'other');
             INSERT INTO policy_set_versions (id, policy_set_id, zone_id, version, manifest_json, manifest_sha256, schema_version)
                 VALUES ('sv1', 's1', 'z1', 1, '[{{\"policy_version_id\": \"pv1\"}}]', '{sha}', '2026-05-20'),
                        ('sv2', 's2', 'z1', 1, '[]', '{sha}', '2026-05-20');"
        ))
        .await
        .unwrap();

    // Policy versions and set versions are immutable.
    for stmt in [
        "UPDATE policy_versions SET content = 'x' WHERE id = 'pv1'",
        "DELETE FROM policy_versions WHERE id = 'pv1'",
        "TRUNCATE policy_versions CASCADE",
        "UPDATE policy_set_versions SET version = 2 WHERE id = 'sv1'",
        "DELETE FROM policy_set_versions WHERE id = 'sv1'",
    ] {
        let err = client.execute(stmt, &[]).await.unwrap_err();
        let db = err.as_db_error().unwrap();
        assert!(
            db.message().contains("immutable"),
            "{stmt}: {}",
            db.message()
        );
        assert_eq!(db.code().code(), "23001", "{stmt}");
    }

    // One active binding per zone.
    client
        .batch_execute(
            "INSERT INTO policy_set_bindings (zone_id, policy_set_id, active_version_id) VALUES ('z1', 's1', 'sv1');
             INSERT INTO policy_set_bindings (zone_id, policy_set_id) VALUES ('z1', 's2');",
        )
        .await
        .unwrap();
    let err = client
        .execute(
            "UPDATE policy_set_bindings SET active_version_id = 'sv2' WHERE policy_set_id = 's2'",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().constraint(),
        Some("policy_set_binding_one_active")
    );
    // A binding cannot point at another set's version.
    let err = client
        .execute(
            "UPDATE policy_set_bindings SET active_version_id = 'sv2' WHERE policy_set_id = 's1'",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().constraint(),
        Some("policy_set_bindings_version_fk")
    );

    // Zone-aware foreign keys: a z2 policy version cannot hang off a z1 policy.
    let err = client
        .execute(
            "INSERT INTO policy_versions (id, policy_id, zone_id, version, content, content_sha256, schema_version)
             VALUES ('pvx', 'p1', 'z2', 2, '', $1, 'v')",
            &[&sha],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().constraint(),
        Some("policy_versions_policy_fk")
    );

    // Unique names map to the store's conflict names.
    let err = client
        .execute(
            "INSERT INTO zones (id, name, slug) VALUES ('z3', 'Z', 'zone-1')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().constraint(), Some("zone_slug"));

    // Outbox: dedupe key coalesces; fields must be [k, v] string pairs.
    client
        .execute(
            "INSERT INTO outbox (id, stream, fields, dedupe_key) VALUES ('o1', 'caracal.sessions.revoke', '[[\"zone_id\", \"z1\"]]', 'k1')",
            &[],
        )
        .await
        .unwrap();
    let err = client
        .execute(
            "INSERT INTO outbox (id, stream, dedupe_key) VALUES ('o2', 'caracal.sessions.revoke', 'k1')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().constraint(),
        Some("outbox_dedupe")
    );
    let inserted = client
        .execute(
            "INSERT INTO outbox (id, stream, dedupe_key) VALUES ('o2', 'caracal.sessions.revoke', 'k1') \
             ON CONFLICT (stream, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 0);
    for bad in [r#"[["k"]]"#, r#"[["k", 1]]"#, r#"{"k": "v"}"#] {
        assert!(
            client
                .execute(
                    "INSERT INTO outbox (id, stream, fields) VALUES ('o3', 's', $1::text::jsonb)",
                    &[&bad],
                )
                .await
                .is_err(),
            "{bad}"
        );
    }

    // Audit ledger: append-only, partition functions guarded.
    client
        .execute(
            "INSERT INTO audit_events (id, zone_id, event_type, occurred_at, content_sha256, chain_seq)
             VALUES ('e1', 'z1', 'token_exchange', now(), $1, 1)",
            &[&sha],
        )
        .await
        .unwrap();
    for stmt in [
        "UPDATE audit_events SET decision = 'allow' WHERE id = 'e1'",
        "DELETE FROM audit_events WHERE id = 'e1'",
    ] {
        let err = client.execute(stmt, &[]).await.unwrap_err();
        assert!(
            err.as_db_error().unwrap().message().contains("append-only"),
            "{stmt}"
        );
    }
    for bad in [
        "audit_events_default",
        "audit_events",
        "zones",
        "audit_events_y2026m13",
    ] {
        let err = client
            .query_one("SELECT audit_partition_drop($1)", &[&bad])
            .await
            .unwrap_err();
        assert!(
            err.as_db_error()
                .unwrap()
                .message()
                .contains("not a monthly audit partition"),
            "{bad}"
        );
    }
    // An old event lands in the default partition; ensuring its month moves it.
    client
        .execute(
            "INSERT INTO audit_events (id, zone_id, event_type, occurred_at, content_sha256, chain_seq)
             VALUES ('old', 'z1', 'token_exchange', '2020-02-10T00:00:00Z', $1, 2)",
            &[&sha],
        )
        .await
        .unwrap();
    let part: String = client
        .query_one("SELECT audit_partition_ensure('2020-02-01')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(part, "audit_events_y2020m02");
    let (in_default, in_month): (i64, i64) = {
        let r = client
            .query_one(
                "SELECT (SELECT count(*) FROM audit_events_default), (SELECT count(*) FROM audit_events_y2020m02)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((in_default, in_month), (0, 1));
    // Ensure is idempotent; drop works on a real monthly partition, then reports absence.
    let again: String = client
        .query_one("SELECT audit_partition_ensure('2020-02-17')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, part);
    let dropped: bool = client
        .query_one("SELECT audit_partition_drop('audit_events_y2020m02')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(dropped);
    let dropped: bool = client
        .query_one("SELECT audit_partition_drop('audit_events_y2020m02')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!dropped);
}
