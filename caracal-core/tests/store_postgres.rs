//! The storage contract suite (`tests/contract/store.rs`) against [`PgStore`] on a real
//! Postgres: one test per case on a fresh, migrated database of the shared ephemeral cluster
//! (or `CARACAL_TEST_DATABASE_URL`), plus every case at once on one shared database.
//!
//! The expiring-key cases are not run here: deployments back `EphemeralKeys` with Redis.

#![cfg(feature = "postgres")]
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "contract/store.rs"]
mod store_contract;

use std::time::Duration;

use caracal_core::backend::postgres::migrate::migrate;
use caracal_core::backend::postgres::{PgStore, PgStoreOptions};
use caracal_test_support::{connect, postgres_or_skip};
use store_contract::Ctx;

/// A migrated database of its own on the shared cluster, or `None` (skipped, loudly) when
/// there is no Postgres outside CI.
async fn fresh_store(test: &str) -> Option<PgStore> {
    let pg = postgres_or_skip(test)?;
    let url = pg.create_database(test).await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    drop(client);
    let options = PgStoreOptions {
        // The concurrency cases run 8 units of work at once plus their own reads.
        max_size: 16,
        connection_timeout: Duration::from_secs(10),
        ..PgStoreOptions::default()
    };
    Some(PgStore::open(&url, options).await.unwrap())
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let Some(store) = fresh_store(stringify!($case)).await else { return };
            store_contract::$case(&Ctx::fresh(store)).await;
        }
    )*};
}

cases!(
    zone_slug_unique,
    zone_update_and_archive,
    paging_zones,
    application_name_unique,
    application_isolation_and_archive,
    paging_applications,
    resource_identifier_unique,
    resource_isolation_and_archive,
    paging_resources,
    provider_identifier_unique,
    provider_isolation_and_archive,
    paging_providers,
    secret_versions,
    admin_token_hash_unique,
    paging_admin_tokens,
    authority_unique_and_isolation,
    authority_lineage_order,
    authority_lineage_depth_limit,
    authority_revoke,
    authority_revoke_subject,
    authority_revoke_tree,
    signing_key_versions,
    signing_key_versions_concurrent,
    outbox_enqueue_and_dedupe,
    outbox_claim_exclusive,
    outbox_lease_expiry_reclaim,
    outbox_claim_order,
    outbox_mark_failed_retry_and_dead,
    outbox_dispatch_and_stats,
    outbox_requeue_dead,
    policy_name_unique,
    policy_version_numbering,
    policy_version_numbering_concurrent,
    paging_policies,
    policy_set_name_unique,
    policy_set_version_numbering,
    paging_policy_sets,
    policy_activation,
    policy_set_archive_clears_binding,
    policy_zone_isolation,
    approval_live_binding_unique,
    approval_decide_and_consume_states,
    approval_decide_race,
    approval_consume_race,
    approval_list_states,
    paging_approvals,
    approval_issue_converges,
    approval_issue_race,
    approval_consume_into_atomic,
    approval_consume_into_race,
    approval_any_zone_lookup,
    coordinator_rollback_on_drop,
    coordinator_commit_visibility,
    coordinator_reads_see_own_writes,
    coordinator_same_zone_serialises,
    coordinator_zones_independent,
    coordinator_epoch_monotonic,
    coordinator_receipts,
    coordinator_unique_and_isolation,
    coordinator_count_live_sessions,
    paging_sessions,
    paging_edges,
);

/// Every case at the same time on one database, in shared mode: cases must not see each
/// other's rows, and the global lists and the outbox must hold up under concurrent writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_cases_concurrently_on_one_shared_database() {
    let Some(pg) = postgres_or_skip("all_cases_concurrently_on_one_shared_database") else {
        return;
    };
    let url = pg.create_database("all_cases_shared").await.unwrap();
    let mut client = connect(&url).await.unwrap();
    migrate(&mut client).await.unwrap();
    drop(client);
    let options = PgStoreOptions {
        max_size: 32,
        connection_timeout: Duration::from_secs(20),
        ..PgStoreOptions::default()
    };
    let store = PgStore::open(&url, options).await.unwrap();
    let prefix = store_contract::unique_prefix();
    let mut tasks = Vec::new();
    for name in store_contract::CASES {
        let ctx = Ctx::shared(store.clone(), prefix.clone());
        tasks.push((
            *name,
            tokio::spawn(async move { store_contract::run_case(name, &ctx).await }),
        ));
    }
    let mut failed = Vec::new();
    for (name, task) in tasks {
        match tokio::time::timeout(Duration::from_secs(120), task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("{name}: {e}")),
            Err(_) => failed.push(format!("{name}: timed out")),
        }
    }
    assert!(failed.is_empty(), "failed in shared mode: {failed:#?}");
}
