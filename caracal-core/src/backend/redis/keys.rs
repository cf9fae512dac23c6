//! [`RedisKeys`]: expiring keys on Redis (single-use ids, nonces, rate windows).

use std::sync::Arc;
use std::time::Duration;

use ::redis::{Script, Value};
use async_trait::async_trait;

use super::pool::{Failure, RedisConfig, RedisConfigError, RedisPool};
use super::reply;
use crate::store::ephemeral::EphemeralKeys;
use crate::store::{StoreError, StoreResult};

/// `INCR` and, when the key is new (or has somehow lost its expiry), `PEXPIRE` to start the
/// window, as one script. Redis runs a script atomically and persists its effects together
/// (AOF and replicas see the writes as one transaction), so no crash or failover can leave a
/// counter without an expiry, which would rate-limit its key forever.
const INCR_WINDOW: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
";

/// [`EphemeralKeys`] on Redis, shared by every replica of a service.
///
/// Keys are used as given (the services name them, e.g. `rl:{zone}:{provider}:{user}`); use a
/// dedicated database in the URL to keep them apart from the streams, as the reference does
/// with DB 1. Cheap to clone.
#[derive(Clone)]
pub struct RedisKeys {
    pool: RedisPool,
    incr_window: Arc<Script>,
}

impl std::fmt::Debug for RedisKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKeys")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

fn store_error(f: Failure) -> StoreError {
    match f {
        Failure::Unavailable(message) => StoreError::Unavailable {
            retryable: true,
            message,
        },
        // WRONGTYPE, "value is not an integer", NOPERM, malformed replies: retrying the same
        // call cannot help.
        Failure::Server { message, .. } | Failure::Other(message) => StoreError::Unavailable {
            retryable: false,
            message,
        },
    }
}

/// Milliseconds of a positive duration, at least 1 (a sub-millisecond ttl still expires).
fn positive_millis(d: Duration, what: &str) -> StoreResult<u64> {
    if d.is_zero() {
        return Err(StoreError::Invalid(format!("{what} must be positive")));
    }
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
}

impl RedisKeys {
    /// Keys over `pool` (which may be shared with [`RedisStreams`](super::RedisStreams)).
    pub fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            incr_window: Arc::new(Script::new(INCR_WINDOW)),
        }
    }

    /// Keys over a new pool for `config`. No I/O happens here.
    pub fn connect(config: &RedisConfig) -> Result<Self, RedisConfigError> {
        Ok(Self::new(RedisPool::new(config)?))
    }

    async fn run(&self, cmd: &::redis::Cmd) -> StoreResult<Value> {
        self.pool.query(cmd).await.map_err(store_error)
    }
}

#[async_trait]
impl EphemeralKeys for RedisKeys {
    async fn set_nx_ex(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<bool> {
        let ms = positive_millis(ttl, "ttl")?;
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX");
        // Whole seconds go as EX (the reference's form); anything finer as PX, so a
        // sub-second ttl is not rounded to a refused `EX 0`.
        if ttl.subsec_nanos() == 0 {
            cmd.arg("EX").arg(ttl.as_secs());
        } else {
            cmd.arg("PX").arg(ms);
        }
        match self.run(&cmd).await? {
            Value::Okay => Ok(true),
            Value::Nil => Ok(false),
            other => match reply::text(&other, "SET NX") {
                Ok(s) if s == "OK" => Ok(true),
                _ => Err(store_error(Failure::protocol("SET NX"))),
            },
        }
    }

    async fn incr_window(&self, key: &str, window: Duration) -> StoreResult<i64> {
        let ms = positive_millis(window, "window")?;
        let mut invocation = self.incr_window.key(key);
        invocation.arg(ms);
        let v = self.pool.invoke(&invocation).await.map_err(store_error)?;
        reply::int(&v, "INCR window").map_err(store_error)
    }

    async fn get_key(&self, key: &str) -> StoreResult<Option<String>> {
        match self.run(::redis::cmd("GET").arg(key)).await? {
            Value::Nil => Ok(None),
            other => reply::text(&other, "GET").map(Some).map_err(store_error),
        }
    }

    async fn del_key(&self, key: &str) -> StoreResult<bool> {
        let v = self.run(::redis::cmd("DEL").arg(key)).await?;
        reply::count(&v, "DEL").map(|n| n > 0).map_err(store_error)
    }
}
