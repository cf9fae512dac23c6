//! The admin audit chain contract on the in-memory store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "contract/admin_audit.rs"]
mod contract;

use std::sync::Arc;

use caracal_core::store::admin_audit::AdminAuditStore;
use caracal_core::store::memory::MemoryStore;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let s = MemoryStore::new();
            contract::$name(&s, "mem").await;
        }
    )*};
}

cases!(
    dense_chain_verifies,
    global_chain_is_separate,
    duplicate_id_conflicts
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_stay_dense() {
    let s: Arc<dyn AdminAuditStore> = Arc::new(MemoryStore::new());
    contract::concurrent_appends_stay_dense(s, "mem").await;
}
