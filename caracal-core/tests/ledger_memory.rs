//! The audit ledger contract on the in-memory store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "contract/ledger.rs"]
mod ledger_contract;

use std::sync::Arc;

use caracal_core::store::audit::AuditLedger;
use caracal_core::store::memory::MemoryStore;

fn ledger() -> Arc<dyn AuditLedger> {
    Arc::new(MemoryStore::new())
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let l = ledger();
            ledger_contract::$name(&*l, "mem").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_stay_dense() {
    ledger_contract::concurrent_appends_stay_dense(ledger(), "mem").await;
}
