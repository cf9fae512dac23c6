//! Expiring keys: single-use ids (`jti`), HMAC nonces, and fixed-window rate counters.
//!
//! In a deployment these live in Redis (`SET NX EX`, `INCR` + `EXPIRE`), shared by every
//! replica; the in-memory implementation serves the embedded default and tests. Expiry is
//! judged by the implementation's own clock (Redis's, or the in-memory store's injected one).

use std::time::Duration;

use async_trait::async_trait;

use super::StoreResult;

/// Expiring key operations.
#[async_trait]
pub trait EphemeralKeys: Send + Sync {
    /// Set `key` to `value` with a time to live only if it does not exist. Returns `true` if
    /// this call set it: the caller won the single use. A zero `ttl` is `Invalid`.
    async fn set_nx_ex(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<bool>;
    /// Increment the counter at `key`, starting a window of `window` when the key is new.
    /// Returns the count after the increment. The window is never extended by later
    /// increments; a zero `window` or a key holding a non-integer value is `Invalid`.
    async fn incr_window(&self, key: &str, window: Duration) -> StoreResult<i64>;
    /// The current value, if the key exists and has not expired.
    async fn get_key(&self, key: &str) -> StoreResult<Option<String>>;
    /// Delete; returns whether the key existed.
    async fn del_key(&self, key: &str) -> StoreResult<bool>;
}
