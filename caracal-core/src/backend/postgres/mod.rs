//! The Postgres backend (feature `postgres`).
//!
//! - [`migrate`]: the forward-only migration runner over the SQL files of `migrations/`,
//!   embedded at compile time and pinned by `migrations/released.sha256`.
//! - [`store`]: [`PgStore`], every storage trait of [`crate::store`] (except the ephemeral
//!   keys, which are Redis's) on a `bb8` pool of `tokio-postgres` connections, and
//!   [`PgClock`], the database's clock.

pub mod migrate;
pub mod store;

pub use store::{
    PgClock, PgConnection, PgCoordinatorTx, PgLeaderLease, PgLeaderLock, PgManager, PgPool,
    PgStore, PgStoreOptions, PoolStats, RetentionReport,
};
