//! Stream provisioning and verification against a real Redis.
//!
//! The nine stream names are fixed, so every test here runs on a server of its own (never
//! the shared one named by `CARACAL_TEST_REDIS_URL`, whose real streams a destructive test
//! must not touch).
#![cfg(feature = "redis")]
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use caracal_core::backend::redis::{RedisConfig, RedisStreams};
use caracal_core::streams::names::{
    self, AUDIT_EVENTS, GROUP_AUDIT_INGESTOR, GROUP_STS_REVOCATION, KEYS_INVALIDATE,
    PROVIDERS_RATELIMIT, SESSIONS_REVOKE,
};
use caracal_core::streams::provision::{Problem, StreamState, provision, verify};
use caracal_core::streams::{EntryId, GroupCreated, Streams};
use caracal_test_support::{EphemeralRedis, RedisOptions, SupportError, is_ci};

fn own_redis(test: &str) -> Option<EphemeralRedis> {
    let opts = RedisOptions {
        honour_env: false,
        ..RedisOptions::default()
    };
    match EphemeralRedis::start_with(opts) {
        Ok(server) => Some(server),
        Err(SupportError::BinariesMissing { what, hint }) => {
            assert!(
                !is_ci(),
                "CI=true and redis-server is missing ({what}: {hint})"
            );
            eprintln!("SKIPPED: {test}: no redis-server ({what}: {hint}). This test did NOT run.");
            None
        }
        Err(e) => panic!("{test}: could not start redis-server: {e}"),
    }
}

#[tokio::test]
async fn provision_is_idempotent_and_verify_names_what_is_missing() {
    let Some(server) = own_redis("provision_is_idempotent") else {
        return;
    };
    let s = RedisStreams::connect(&RedisConfig::new(server.url())).unwrap();

    let before = verify(&s).await.unwrap();
    assert!(
        before
            .streams
            .iter()
            .all(|v| v.state == StreamState::Missing)
    );
    assert!(!before.is_ok());

    let first = provision(&s).await.unwrap();
    assert!(first.is_ok(), "{first:?}");
    assert!(first.changed_anything());
    let created: usize = first.streams.iter().map(|r| r.groups.len()).sum();
    assert_eq!(created, 9);
    for spec in names::STREAMS {
        assert_eq!(
            server
                .command(&["TYPE", spec.name])
                .unwrap()
                .as_text()
                .as_deref(),
            Some("stream"),
            "{}",
            spec.name
        );
    }
    let seed = s
        .range(PROVIDERS_RATELIMIT, EntryId::MIN, EntryId::MAX, None)
        .await
        .unwrap();
    assert_eq!(seed.len(), 1);
    assert_eq!(seed[0].fields.get("init"), Some("1"));

    let ok = verify(&s).await.unwrap();
    assert!(ok.is_ok(), "{:?}", ok.problems());

    // Re-provisioning changes nothing: every group answers BUSYGROUP, no second seed.
    let again = provision(&s).await.unwrap();
    assert!(!again.changed_anything(), "{again:?}");
    assert!(again.streams.iter().all(|r| {
        r.groups
            .iter()
            .all(|g| g.outcome == GroupCreated::AlreadyExists)
    }));
    assert_eq!(s.len(PROVIDERS_RATELIMIT).await.unwrap(), 1);

    // A group destroyed out of band is named by verify, which does not repair it.
    server
        .command(&["XGROUP", "DESTROY", SESSIONS_REVOKE, GROUP_STS_REVOCATION])
        .unwrap();
    let broken = verify(&s).await.unwrap();
    assert_eq!(
        broken.problems(),
        vec![Problem::GroupMissing {
            stream: SESSIONS_REVOKE,
            group: GROUP_STS_REVOCATION
        }]
    );
    assert!(
        !s.groups(SESSIONS_REVOKE)
            .await
            .unwrap()
            .iter()
            .any(|g| g.name == GROUP_STS_REVOCATION),
        "verify must not create what it checks"
    );
    // Provisioning repairs it, and leaves the rest (pending lists included) alone.
    s.xadd(
        AUDIT_EVENTS,
        &caracal_core::streams::Fields::new().with("data", "{}"),
    )
    .await
    .unwrap();
    s.read_group(
        AUDIT_EVENTS,
        GROUP_AUDIT_INGESTOR,
        "w",
        caracal_core::streams::ReadFrom::New,
        10,
        None,
    )
    .await
    .unwrap();
    let repaired = provision(&s).await.unwrap();
    assert!(repaired.changed_anything());
    assert!(verify(&s).await.unwrap().is_ok());
    assert_eq!(
        s.pending_summary(AUDIT_EVENTS, GROUP_AUDIT_INGESTOR)
            .await
            .unwrap()
            .count,
        1,
        "an existing group is never moved or reset"
    );
}

#[tokio::test]
async fn a_key_of_another_type_is_reported_and_the_rest_provisioned() {
    let Some(server) = own_redis("a_key_of_another_type") else {
        return;
    };
    let s = RedisStreams::connect(&RedisConfig::new(server.url())).unwrap();
    server.command(&["SET", KEYS_INVALIDATE, "oops"]).unwrap();
    let report = provision(&s).await.unwrap();
    assert!(!report.is_ok());
    let failed: Vec<&str> = report
        .streams
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.stream)
        .collect();
    assert_eq!(failed, vec![KEYS_INVALIDATE]);
    let problems = verify(&s).await.unwrap().problems();
    assert_eq!(
        problems[0],
        Problem::NotAStream {
            stream: KEYS_INVALIDATE
        }
    );
    assert_eq!(problems.len(), 2, "and its group: {problems:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_report() {
    let mut config = RedisConfig::new("redis://127.0.0.1:1/");
    config.pool_timeout = std::time::Duration::from_millis(300);
    let s = RedisStreams::connect(&config).unwrap();
    let err = provision(&s).await.expect_err("nothing listens on port 1");
    assert!(err.is_retryable());
    assert!(verify(&s).await.is_err());
}
