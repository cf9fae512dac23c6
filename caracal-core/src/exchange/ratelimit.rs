//! The authentication brute-force gate and the per-resource mint limit (reference `sts.md`
//! §7.1, §2.1 steps 9–10).
//!
//! Both count in fixed 60 s windows through [`EphemeralKeys::incr_window`] (Redis `INCR` with
//! an expiry set on the first increment, shared by every replica), and both fail closed: a
//! store error blocks authentication (429) or skips the resource (no mint).
//!
//! - [`AuthLimiter`]: failed client-secret authentications per application id. More than
//!   [`AUTH_FAILURE_LIMIT`] in a window sets a block key for [`AUTH_BLOCK`]; while it exists
//!   every non-gateway exchange for that application id is 429, right secret or not.
//! - [`MintLimiter`]: mints per (zone, resource, application) per window, at most
//!   `STS_MINT_RATE_LIMIT_PER_MIN` (default [`DEFAULT_MINT_LIMIT_PER_MIN`]) or the console
//!   override when that is lower. Exceeding it skips the resource (the exchange answers 403
//!   if nothing else is granted), never 429. The run endpoints reuse it through
//!   [`MintLimiter::allow_key`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::ExchangeResult;
use crate::api::ApiError;
use crate::store::ephemeral::EphemeralKeys;

/// Failed authentications allowed per application id per window; the next one is blocked.
pub const AUTH_FAILURE_LIMIT: i64 = 60;
/// How long an application id stays blocked once it exceeds [`AUTH_FAILURE_LIMIT`].
pub const AUTH_BLOCK: Duration = Duration::from_secs(60);
/// `STS_MINT_RATE_LIMIT_PER_MIN` when unset.
pub const DEFAULT_MINT_LIMIT_PER_MIN: u32 = 1000;

/// The fixed counting window of both limiters.
const WINDOW: Duration = Duration::from_secs(60);

/// 429 `provider_rate_limited` with `description` (the only 429 the token endpoint emits).
fn rate_limited(description: &str) -> ApiError {
    ApiError::new(429, "provider_rate_limited").with_description(description)
}

fn auth_exceeded() -> ApiError {
    rate_limited("authentication rate limit exceeded")
}

fn auth_unavailable() -> ApiError {
    rate_limited("authentication rate limit unavailable")
}

/// The brute-force gate on client-secret authentication (§2.1 steps 9–10). Not used on
/// Gateway-authenticated exchanges.
///
/// Keys: `auth-rl:<sha256 hex of the trimmed application id>` counts failures in the window;
/// `…:blocked` marks the block. The application id is hashed so arbitrary caller input never
/// becomes a key verbatim.
#[derive(Clone)]
pub struct AuthLimiter {
    keys: Arc<dyn EphemeralKeys>,
}

impl std::fmt::Debug for AuthLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLimiter").finish_non_exhaustive()
    }
}

impl AuthLimiter {
    /// A limiter over `keys` (Redis in a deployment, so the count is fleet-wide).
    pub fn new(keys: Arc<dyn EphemeralKeys>) -> Self {
        Self { keys }
    }

    fn counter_key(application_id: &str) -> String {
        format!(
            "auth-rl:{}",
            hex::encode(Sha256::digest(application_id.trim().as_bytes()))
        )
    }

    fn blocked_key(application_id: &str) -> String {
        format!("{}:blocked", Self::counter_key(application_id))
    }

    /// Refuse an application id that is currently blocked: 429 `provider_rate_limited`
    /// "authentication rate limit exceeded". A store error is 429 "authentication rate limit
    /// unavailable" (fail closed).
    pub async fn check(&self, application_id: &str) -> ExchangeResult<()> {
        match self.keys.get_key(&Self::blocked_key(application_id)).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(auth_exceeded()),
            Err(e) => {
                tracing::warn!(error = %e, "authentication rate limit store failed; refusing");
                Err(auth_unavailable())
            }
        }
    }

    /// Count one failed authentication (the exchange answered 401 "invalid client
    /// credentials"). When the window's count exceeds [`AUTH_FAILURE_LIMIT`] the block key is
    /// set for [`AUTH_BLOCK`] and THIS request is answered 429 "authentication rate limit
    /// exceeded" instead of 401; otherwise `Ok(())` and the caller keeps its 401. A store
    /// error is 429 "authentication rate limit unavailable".
    ///
    /// The block is set with `SET NX`: a block already in place (a concurrent request got
    /// there first) is kept as it is rather than extended.
    pub async fn record_failure(&self, application_id: &str) -> ExchangeResult<()> {
        let count = self
            .keys
            .incr_window(&Self::counter_key(application_id), WINDOW)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "authentication rate limit store failed; refusing");
                auth_unavailable()
            })?;
        if count <= AUTH_FAILURE_LIMIT {
            return Ok(());
        }
        match self
            .keys
            .set_nx_ex(&Self::blocked_key(application_id), "1", AUTH_BLOCK)
            .await
        {
            Ok(_) => Err(auth_exceeded()),
            Err(e) => {
                tracing::warn!(error = %e, "authentication rate limit store failed; refusing");
                Err(auth_unavailable())
            }
        }
    }
}

/// The per-resource mint limit (§7.1): `rl:<zone>:<resource id>:<application id>` counted in
/// fixed 60 s windows.
///
/// The limit is `STS_MINT_RATE_LIMIT_PER_MIN`, lowered — never raised — by the console
/// override (`sts_rate_limit.limit_per_minute`), which the service re-reads periodically and
/// hands to [`MintLimiter::set_override`]. Cheap to share: the effective limit is an atomic.
pub struct MintLimiter {
    keys: Arc<dyn EphemeralKeys>,
    env_limit: u32,
    effective: AtomicU32,
}

impl std::fmt::Debug for MintLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintLimiter")
            .field("env_limit", &self.env_limit)
            .field("effective", &self.effective_limit())
            .finish_non_exhaustive()
    }
}

impl MintLimiter {
    /// A limiter over `keys` with the configured per-minute limit and no override.
    pub fn new(keys: Arc<dyn EphemeralKeys>, env_limit_per_min: u32) -> Self {
        Self {
            keys,
            env_limit: env_limit_per_min,
            effective: AtomicU32::new(env_limit_per_min),
        }
    }

    /// Apply the console override (`None` = no override row). The effective limit becomes
    /// `min(configured, override)`: an override above the configured limit is ignored, one
    /// below it (including 0, which stops every mint) takes effect.
    pub fn set_override(&self, limit: Option<u32>) {
        let effective = limit.map_or(self.env_limit, |o| o.min(self.env_limit));
        self.effective.store(effective, Ordering::Relaxed);
    }

    /// The limit in force: mints allowed per key per window.
    pub fn effective_limit(&self) -> u32 {
        self.effective.load(Ordering::Relaxed)
    }

    /// Count one mint of `resource_id` for `application_id` in `zone_id`. `true` = within the
    /// limit, mint it; `false` = over the limit, or the store failed (fail closed): skip the
    /// resource.
    pub async fn allow(&self, zone_id: &str, resource_id: &str, application_id: &str) -> bool {
        self.allow_key(&format!("{zone_id}:{resource_id}:{application_id}"))
            .await
    }

    /// Count one use of `rl:<key>` against the same limit (the run endpoints use
    /// `run-manifest:<workload>:fetch` and `run-credential:<workload>:mint`). `true` = within
    /// the limit; `false` = over it or the store failed.
    pub async fn allow_key(&self, key: &str) -> bool {
        match self.keys.incr_window(&format!("rl:{key}"), WINDOW).await {
            Ok(count) => count <= i64::from(self.effective_limit()),
            Err(e) => {
                tracing::warn!(error = %e, "mint rate limit store failed; skipping");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use chrono::TimeDelta;

    use super::*;
    use crate::clock::FakeClock;
    use crate::store::memory::MemoryStore;
    use crate::store::{StoreError, StoreResult};

    fn memory() -> (FakeClock, Arc<MemoryStore>) {
        let clock = FakeClock::at_fixture_epoch();
        let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
        (clock, store)
    }

    /// An ephemeral store that always fails.
    struct Down;

    fn down() -> StoreError {
        StoreError::Unavailable {
            retryable: true,
            message: "down".into(),
        }
    }

    #[async_trait]
    impl EphemeralKeys for Down {
        async fn set_nx_ex(&self, _: &str, _: &str, _: Duration) -> StoreResult<bool> {
            Err(down())
        }
        async fn incr_window(&self, _: &str, _: Duration) -> StoreResult<i64> {
            Err(down())
        }
        async fn get_key(&self, _: &str) -> StoreResult<Option<String>> {
            Err(down())
        }
        async fn del_key(&self, _: &str) -> StoreResult<bool> {
            Err(down())
        }
    }

    fn assert_429(r: ExchangeResult<()>, description: &str) {
        let e = r.expect_err("expected 429");
        assert_eq!(e.status, 429);
        assert_eq!(e.body.error, "provider_rate_limited");
        assert_eq!(e.body.error_description.as_deref(), Some(description));
    }

    #[tokio::test]
    async fn the_61st_failure_blocks_for_a_minute() {
        let (clock, store) = memory();
        let limiter = AuthLimiter::new(store.clone());
        for _ in 0..AUTH_FAILURE_LIMIT {
            limiter.check("app-1").await.unwrap();
            limiter.record_failure("app-1").await.unwrap();
        }
        limiter.check("app-1").await.unwrap();
        assert_429(
            limiter.record_failure("app-1").await,
            "authentication rate limit exceeded",
        );
        // Blocked for the next request, whatever it presents; other ids are unaffected.
        assert_429(
            limiter.check("app-1").await,
            "authentication rate limit exceeded",
        );
        assert_429(
            limiter.check(" app-1 ").await,
            "authentication rate limit exceeded",
        );
        limiter.check("app-2").await.unwrap();
        clock.advance(TimeDelta::seconds(59));
        assert_429(
            limiter.check("app-1").await,
            "authentication rate limit exceeded",
        );
        clock.advance(TimeDelta::seconds(1));
        limiter.check("app-1").await.unwrap();
        // A fresh window starts from zero.
        limiter.record_failure("app-1").await.unwrap();
        let key = AuthLimiter::counter_key("app-1");
        assert_eq!(store.get_key(&key).await.unwrap().as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn failures_spread_over_windows_do_not_block() {
        let (clock, store) = memory();
        let limiter = AuthLimiter::new(store);
        for _ in 0..3 {
            for _ in 0..AUTH_FAILURE_LIMIT {
                limiter.record_failure("app").await.unwrap();
            }
            clock.advance(TimeDelta::seconds(60));
        }
        limiter.check("app").await.unwrap();
    }

    #[test]
    fn auth_keys_hash_the_trimmed_application_id() {
        // python3 -c "import hashlib;print(hashlib.sha256(b'app-1').hexdigest())"
        let expected = "auth-rl:5eb7e725e6bac43f2a906437aa7be080081de786a7d12f7b9649be47b69d6ca0";
        let got = AuthLimiter::counter_key("  app-1\n");
        assert_eq!(got, expected);
        assert_eq!(AuthLimiter::blocked_key("app-1"), format!("{got}:blocked"));
    }

    #[tokio::test]
    async fn auth_limiter_fails_closed() {
        let limiter = AuthLimiter::new(Arc::new(Down));
        assert_429(
            limiter.check("app").await,
            "authentication rate limit unavailable",
        );
        assert_429(
            limiter.record_failure("app").await,
            "authentication rate limit unavailable",
        );
    }

    #[tokio::test]
    async fn the_1001st_mint_in_a_window_is_refused() {
        let (clock, store) = memory();
        let limiter = MintLimiter::new(store, DEFAULT_MINT_LIMIT_PER_MIN);
        for i in 0..DEFAULT_MINT_LIMIT_PER_MIN {
            assert!(limiter.allow("z", "res", "app").await, "mint {i}");
        }
        assert!(!limiter.allow("z", "res", "app").await);
        // Keys are per (zone, resource, application).
        assert!(limiter.allow("z", "res", "app-2").await);
        assert!(limiter.allow("z", "res-2", "app").await);
        assert!(limiter.allow("z2", "res", "app").await);
        clock.advance(TimeDelta::seconds(60));
        assert!(limiter.allow("z", "res", "app").await);
    }

    #[tokio::test]
    async fn an_override_lowers_but_never_raises() {
        let (_clock, store) = memory();
        let limiter = MintLimiter::new(store, 10);
        assert_eq!(limiter.effective_limit(), 10);
        limiter.set_override(Some(2000));
        assert_eq!(limiter.effective_limit(), 10);
        limiter.set_override(Some(3));
        assert_eq!(limiter.effective_limit(), 3);
        for _ in 0..3 {
            assert!(limiter.allow_key("run-manifest:w:fetch").await);
        }
        assert!(!limiter.allow_key("run-manifest:w:fetch").await);
        limiter.set_override(None);
        assert_eq!(limiter.effective_limit(), 10);
        assert!(limiter.allow_key("run-manifest:w:fetch").await);
        limiter.set_override(Some(0));
        assert!(!limiter.allow_key("run-credential:w:mint").await);
    }

    #[tokio::test]
    async fn mint_limiter_fails_closed() {
        let limiter = MintLimiter::new(Arc::new(Down), DEFAULT_MINT_LIMIT_PER_MIN);
        assert!(!limiter.allow("z", "r", "a").await);
        assert!(!limiter.allow_key("run-manifest:w:fetch").await);
    }

    #[tokio::test]
    async fn allow_key_and_allow_share_the_rl_namespace() {
        let (_clock, store) = memory();
        let limiter = MintLimiter::new(store.clone(), 5);
        assert!(limiter.allow("z", "r", "a").await);
        assert_eq!(
            store.get_key("rl:z:r:a").await.unwrap().as_deref(),
            Some("1")
        );
        assert!(limiter.allow_key("z:r:a").await);
        assert_eq!(
            store.get_key("rl:z:r:a").await.unwrap().as_deref(),
            Some("2")
        );
    }

    /// The same rules against a real Redis (skipped when none can be started).
    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn limiters_on_redis() {
        use crate::backend::redis::{RedisConfig, RedisKeys};

        let Some(server) = caracal_test_support::redis_or_skip("limiters_on_redis") else {
            return;
        };
        let keys: Arc<dyn EphemeralKeys> =
            Arc::new(RedisKeys::connect(&RedisConfig::new(server.url())).unwrap());
        // Unique ids so reruns against a shared server do not collide.
        let app = format!("app-{}", uuid::Uuid::now_v7());

        let auth = AuthLimiter::new(keys.clone());
        for _ in 0..AUTH_FAILURE_LIMIT {
            auth.record_failure(&app).await.unwrap();
        }
        auth.check(&app).await.unwrap();
        assert_429(
            auth.record_failure(&app).await,
            "authentication rate limit exceeded",
        );
        assert_429(auth.check(&app).await, "authentication rate limit exceeded");

        let mint = MintLimiter::new(keys, 3);
        for _ in 0..3 {
            assert!(mint.allow("z", "r", &app).await);
        }
        assert!(!mint.allow("z", "r", &app).await);
    }
}
