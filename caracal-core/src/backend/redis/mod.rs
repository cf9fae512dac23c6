//! Redis: the [`Streams`](crate::streams::Streams) trait and the
//! [`EphemeralKeys`](crate::store::ephemeral::EphemeralKeys) operations on a real server.
//!
//! ## Layout
//!
//! - [`RedisConfig`] and [`RedisPool`]: one `bb8` pool of multiplexed `redis` connections for
//!   ordinary commands, plus dedicated connections for blocking reads (`pool.rs`);
//! - [`RedisStreams`]: `XADD`, `XGROUP CREATE … MKSTREAM`, `XREADGROUP`, `XACK`, `XAUTOCLAIM`,
//!   `XPENDING`, `XLEN`, `XRANGE`, `XDEL`, `XINFO GROUPS`, `TYPE` and `CONFIG GET` (`streams.rs`),
//!   with replies parsed without panics (`reply.rs`);
//! - [`RedisKeys`]: `SET NX EX|PX`, an atomic `INCR` + window expiry, `GET`, `DEL` (`keys.rs`).
//!
//! ## Connections
//!
//! - Ordinary commands check a connection out of the pool for one command. The pool's
//!   checkout wait is bounded ([`RedisConfig::pool_timeout`]): an exhausted pool, or a server
//!   that cannot be reached, is a retryable [`StreamError::Unavailable`](crate::streams::StreamError::Unavailable)
//!   naming the pool state and the last connect error, never a hang.
//! - A blocking `XREADGROUP … BLOCK` never runs on a pooled connection (SPEC §3): a blocked
//!   connection stalls every command queued behind it, so sharing one with request traffic
//!   would turn a consumer's idle wait into request latency. Each blocking read takes a
//!   dedicated connection of its own, with **no response timeout** (the `redis` crate's
//!   default of 500 ms would abort any `BLOCK` longer than that); the read is instead bounded
//!   by `BLOCK` plus [`RedisConfig::block_grace`], so a dead link is still detected. A
//!   consumer reads in sequence, so a few idle dedicated connections are kept for reuse; a
//!   connection whose read failed or was cancelled is dropped, never reused.
//! - Connection loss, refusal, timeouts, `LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`,
//!   `READONLY` and `OOM` are retryable (`Unavailable`); a pooled connection that saw a
//!   connection-level error is discarded when it goes back to the pool, so a restarted server
//!   costs each stale connection at most one failed command.
//!
//! ## Why not `bb8_redis::RedisConnectionManager`
//!
//! The pool is `bb8` and the `redis` crate is the one `bb8-redis` pins, but the connection
//! manager is this module's: `bb8-redis`'s manager opens connections with the `redis` crate's
//! fixed defaults (500 ms response timeout, 1 s connect timeout) and never reports a broken
//! connection, which would force a `PING` on every checkout to notice a restarted server.

mod keys;
mod pool;
mod reply;
mod streams;

pub use keys::RedisKeys;
pub use pool::{RedisConfig, RedisConfigError, RedisPool};
pub use streams::RedisStreams;
