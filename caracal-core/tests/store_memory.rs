//! The storage contract suite (`tests/contract/store.rs`) against [`MemoryStore`]: one test
//! per case on a fresh store, plus every case at once on one shared store, which proves the
//! suite's cases stay independent the way a shared Postgres database needs them to be.

#[path = "contract/store.rs"]
mod store_contract;

use std::sync::Arc;

use caracal_core::clock::FakeClock;
use caracal_core::store::memory::MemoryStore;
use store_contract::Ctx;

/// A fresh store per case, on the system clock.
fn fresh() -> Ctx<MemoryStore> {
    Ctx::fresh(MemoryStore::new())
}

/// A fresh store on a fake clock that the expiring-key cases move instead of sleeping.
fn fresh_fake_clock() -> Ctx<MemoryStore> {
    let clock = FakeClock::at_fixture_epoch();
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    Ctx::fresh(store).with_time_travel(Arc::new(move |d| {
        clock.advance(chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
    }))
}

macro_rules! cases {
    ($ctx:ident: $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            store_contract::$case(&$ctx()).await;
        }
    )*};
}

cases!(fresh:
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

cases!(fresh_fake_clock:
    ephemeral_set_nx_single_winner,
    ephemeral_incr_window_counting,
    ephemeral_expiry,
);

/// Every case at the same time on one store in shared mode, as the Postgres run will be:
/// cases must not see each other's rows, and the global lists and the outbox must hold up
/// with other cases writing concurrently. Expiring keys use real one-second TTLs here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_cases_concurrently_on_one_shared_store() {
    let store = MemoryStore::new();
    let prefix = store_contract::unique_prefix();
    let mut tasks = Vec::new();
    for name in store_contract::CASES {
        let ctx = Ctx::shared(store.clone(), prefix.clone());
        tasks.push((
            *name,
            tokio::spawn(async move { store_contract::run_case(name, &ctx).await }),
        ));
    }
    for name in store_contract::EPHEMERAL_CASES {
        let ctx = Ctx::shared(store.clone(), prefix.clone());
        tasks.push((
            *name,
            tokio::spawn(async move { store_contract::run_ephemeral_case(name, &ctx).await }),
        ));
    }
    let mut failed = Vec::new();
    for (name, task) in tasks {
        if tokio::time::timeout(std::time::Duration::from_secs(60), task)
            .await
            .map_or(true, |r| r.is_err())
        {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "failed in shared mode: {failed:?}");
}

/// The sequential entry points run every case too (each on a fresh store).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_sequentially() {
    store_contract::run_all(fresh).await;
    store_contract::run_all_ephemeral(fresh_fake_clock).await;
}
