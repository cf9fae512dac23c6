//! Bindings of the engine's traits to real infrastructure, each behind a cargo feature so
//! an embedding host that runs in-memory pulls in no database or network client.
//!
//! - `postgres` (feature `postgres`): the durable store on `bb8-postgres` / `tokio-postgres`,
//!   and the forward-only migration runner ([`postgres::migrate`]).
//! - `redis` (feature `redis`): the [`Streams`](crate::streams::Streams) trait and the
//!   [`EphemeralKeys`](crate::store::ephemeral::EphemeralKeys) operations on a `bb8` pool of
//!   `redis` connections, with dedicated connections for blocking group reads.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
