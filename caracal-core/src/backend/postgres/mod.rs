//! The Postgres backend (feature `postgres`).
//!
//! - [`migrate`]: the forward-only migration runner over the SQL files of `migrations/`,
//!   embedded at compile time and pinned by `migrations/released.sha256`.

pub mod migrate;
