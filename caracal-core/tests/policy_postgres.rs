//! The policy lifecycle and the bundle cache on a real Postgres (`PgStore`, migrated):
//! versions and sets, activation through the outbox, the cache loading the active version,
//! rollback picked up by invalidation, and the deny-all fallback after archiving the set.

#![cfg(feature = "postgres")]
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::clock::{FakeClock, SharedClock};
use caracal_core::ids::{SharedIdGen, UuidV7};
use caracal_core::model::Attribution;
use caracal_core::model::policy::{Decision, PolicyInput};
use caracal_core::model::policy_set::ManifestEntry;
use caracal_core::model::zone::Zone;
use caracal_core::policy::cache::{BundleCache, ReloadOutcome};
use caracal_core::policy::lifecycle::{NewPolicy, PolicyLifecycle};
use caracal_core::policy::{DenyReason, evaluate};
use caracal_core::store::directory::ZoneStore;
use caracal_core::store::outbox::OutboxStore;
use caracal_test_support::{connect, postgres_or_skip};
use chrono::{Duration, DurationRound, Utc};
use serde_json::json;

const ZONE: &str = "0190f2a0-0000-7000-8000-0000000000aa";

fn input() -> PolicyInput {
    serde_json::from_value(json!({
        "schema_version": "2026-05-20",
        "principal": {"type": "Application", "id": "app-1", "zone_id": ZONE},
        "resource": {"type": "Resource", "id": "r-1", "identifier": "resource://api",
                     "scopes": ["agent:lifecycle"]},
        "action": {"id": "TokenExchange"},
        "context": {"actor_claims": {"caracal_client_id": "app-1"}, "trace_id": "t",
                    "challenge_resolved": false, "requested_scopes": ["agent:lifecycle"]}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_and_cache_on_postgres() {
    let Some(pg) = postgres_or_skip("policy_lifecycle_on_postgres") else {
        return;
    };
    let url = pg.create_database("policy_lifecycle").await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    drop(client);
    let store = Arc::new(
        PgStore::open(&url, PgStoreOptions::default())
            .await
            .unwrap(),
    );
    let t0 = Utc::now().duration_trunc(Duration::seconds(1)).unwrap();
    store
        .insert_zone(&Zone {
            id: ZONE.to_owned(),
            name: "Zone".to_owned(),
            slug: "zone-policy".to_owned(),
            dcr_enabled: false,
            operator_coauthor_badge: false,
            operator_governed: false,
            attribution: Attribution::created_by("admin:test"),
            created_at: t0,
            updated_at: t0,
            archived_at: None,
        })
        .await
        .unwrap();
    let clock = FakeClock::new(t0);
    let shared: SharedClock = Arc::new(clock.clone());
    let ids: SharedIdGen = Arc::new(UuidV7);
    let life = PolicyLifecycle::new(store.clone(), shared.clone(), ids);
    let cache = BundleCache::new(store.clone(), shared);

    // Nothing active: deny-all.
    let b = cache.get(ZONE).await.unwrap();
    let i = input();
    let e = evaluate(&i, &b.bundle).unwrap();
    assert_eq!(e.deny_reason(), Some(DenyReason::NoActivePolicySet));

    let owns = json!({"app_ids": {"a": "app-1"},
        "grants": {"resource://api": {"application": "a", "roles": {}}}})
    .to_string();
    let other = json!({"app_ids": {"a": "app-2"},
        "grants": {"resource://api": {"application": "a", "roles": {}}}})
    .to_string();
    let (policy, v1) = life
        .create_policy(
            ZONE,
            NewPolicy {
                name: "grants",
                description: None,
                content: &owns,
                actor: Some("admin:t"),
            },
        )
        .await
        .unwrap();
    let v2 = life
        .add_policy_version(ZONE, &policy.id, &other, None)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let set = life
        .create_policy_set(ZONE, "main", None, None)
        .await
        .unwrap();
    let entry = |id: &str| ManifestEntry {
        policy_version_id: id.to_owned(),
    };
    let sv1 = life
        .create_policy_set_version(ZONE, &set.id, &[entry(&v1.id)])
        .await
        .unwrap();
    let sv2 = life
        .create_policy_set_version(ZONE, &set.id, &[entry(&v2.id)])
        .await
        .unwrap();

    // Activate v1: the outbox row is written with the binding; the cache picks it up.
    let act = life.activate(ZONE, &set.id, &sv1.id).await.unwrap();
    let row = store.get_outbox(&act.outbox_id).await.unwrap().unwrap();
    assert_eq!(row.message.stream, "caracal.policy.invalidate");
    assert_eq!(cache.invalidate(ZONE).await.unwrap(), ReloadOutcome::Loaded);
    let b = cache.get(ZONE).await.unwrap();
    assert_eq!(b.policy_set_version_id.as_deref(), Some(sv1.id.as_str()));
    assert_eq!(
        b.manifest_sha256.as_deref(),
        Some(sv1.manifest_sha256.as_str())
    );
    assert_eq!(
        evaluate(&input(), &b.bundle).unwrap().decision(),
        Decision::Allow
    );
    assert_eq!(
        cache.invalidate(ZONE).await.unwrap(),
        ReloadOutcome::Unchanged
    );

    // v2 narrows: after invalidation the app no longer owns the resource.
    life.activate(ZONE, &set.id, &sv2.id).await.unwrap();
    cache.invalidate(ZONE).await.unwrap();
    let b = cache.get(ZONE).await.unwrap();
    assert_eq!(
        evaluate(&input(), &b.bundle).unwrap().decision(),
        Decision::Deny
    );

    // Rollback re-activates v1.
    life.rollback(ZONE, &set.id, &sv1.id).await.unwrap();
    clock.advance(Duration::seconds(5));
    let report = cache.poll_once().await;
    assert_eq!(report.changed, 1);
    let b = cache.get(ZONE).await.unwrap();
    assert_eq!(b.policy_set_version_id.as_deref(), Some(sv1.id.as_str()));
    assert_eq!(cache.max_policy_age_seconds(), Some(0));

    // Archiving the active set: deny-all.
    life.archive_policy_set(ZONE, &set.id).await.unwrap();
    assert_eq!(
        cache.invalidate(ZONE).await.unwrap(),
        ReloadOutcome::DenyAll
    );
    let b = cache.get(ZONE).await.unwrap();
    let i = input();
    let e = evaluate(&i, &b.bundle).unwrap();
    assert_eq!(e.deny_reason(), Some(DenyReason::NoActivePolicySet));
}
