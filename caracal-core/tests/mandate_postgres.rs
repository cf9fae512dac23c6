//! The zone key ring on a real Postgres (`PgStore`, migrated): lazy first key under
//! concurrency from two replicas, mint → verify, rotation with the 24 h overlap, the
//! `caracal.keys.invalidate` outbox row, and the JWKS.

#![cfg(feature = "postgres")]
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mandate_support;

use std::sync::Arc;

use chrono::{Duration, DurationRound, Utc};

use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_core::clock::{Clock, FakeClock};
use caracal_core::mandate::keys::ROTATION_OVERLAP;
use caracal_core::mandate::{MandateError, MandateUse, mint};
use caracal_core::model::Attribution;
use caracal_core::model::zone::Zone;
use caracal_core::store::directory::ZoneStore;
use caracal_core::store::keys::SigningKeyStore;
use caracal_core::store::outbox::OutboxStore;
use caracal_core::streams::names::KEYS_INVALIDATE;
use caracal_test_support::{connect, postgres_or_skip};
use mandate_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zone_keys_on_postgres() {
    let Some(pg) = postgres_or_skip("mandate_zone_keys_on_postgres") else {
        return;
    };
    let url = pg.create_database("mandate_zone_keys").await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    drop(client);
    let store = Arc::new(
        PgStore::open(&url, PgStoreOptions::default())
            .await
            .unwrap(),
    );
    // Microsecond precision, as Postgres stores it.
    let t0 = Utc::now().duration_trunc(Duration::seconds(1)).unwrap();
    store
        .insert_zone(&Zone {
            id: ZONE.to_owned(),
            name: "Zone 1".to_owned(),
            slug: "zone-1".to_owned(),
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

    // Two replicas race for the first key; every key handed out verifies.
    let replicas = [
        Arc::new(ring(store.clone(), &clock)),
        Arc::new(ring(store.clone(), &clock)),
    ];
    let mut tasks = Vec::new();
    for i in 0..8 {
        let r = replicas[i % 2].clone();
        tasks.push(tokio::spawn(async move { r.signing_key(ZONE).await }));
    }
    let policy = policy_for(MandateUse::Session);
    let claims = claims_for(MandateUse::Session, clock.now(), 3 * 86_400);
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(mint(&claims, &t.await.unwrap().unwrap()).unwrap());
    }
    let versions = store.latest_signing_keys(ZONE, 10).await.unwrap();
    assert!((1..=2).contains(&versions.len()));
    let verifier = ring(store.clone(), &clock);
    for t in &tokens {
        assert_eq!(verifier.verify(t, &policy).await.unwrap(), claims);
    }

    // Rotation: a new version, the invalidation enqueued, the old key kept for 24 h.
    let before = replicas[0].signing_key(ZONE).await.unwrap();
    let old_token = mint(&claims, &before).unwrap();
    clock.advance(Duration::minutes(1));
    let rotated = replicas[0].rotate(ZONE).await.unwrap();
    assert_eq!(rotated.version, versions[0].version + 1);
    let row = store.get_outbox(&rotated.outbox_id).await.unwrap().unwrap();
    assert_eq!(row.message.stream, KEYS_INVALIDATE);
    assert_eq!(
        row.message.fields,
        vec![("zone_id".to_owned(), ZONE.to_owned())]
    );
    let new = verifier.signing_key(ZONE).await.unwrap();
    assert_eq!(new.kid(), rotated.kid);
    verifier.invalidate(ZONE);
    let jwks = verifier.jwks_keys(ZONE).await.unwrap();
    let kids: Vec<&str> = jwks.iter().map(|k| k.kid()).collect();
    assert_eq!(kids, [rotated.kid.as_str(), before.kid()]);
    verifier.verify(&old_token, &policy).await.unwrap();
    clock.set(t0 + Duration::minutes(1) + ROTATION_OVERLAP);
    assert!(matches!(
        verifier.verify(&old_token, &policy).await.unwrap_err(),
        MandateError::UnknownKid
    ));
    verifier
        .verify(&mint(&claims, &new).unwrap(), &policy)
        .await
        .unwrap();
    assert_eq!(verifier.jwks_keys(ZONE).await.unwrap().len(), 1);
}
