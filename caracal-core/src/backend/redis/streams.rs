//! [`RedisStreams`]: the [`Streams`] trait on a real Redis.

use std::time::Duration;

use ::redis::{Cmd, Value};

use super::pool::{Failure, RedisConfig, RedisConfigError, RedisPool};
use super::reply;
use crate::streams::{
    AutoClaim, EntryId, Fields, GroupCreated, GroupInfo, GroupStart, PendingEntry, PendingSummary,
    ReadFrom, StreamEntry, StreamError, StreamResult, Streams, Trim,
};

/// Longest `BLOCK` sent to Redis; a larger one is clamped (as [`MemoryStreams`] does), which
/// is "forever" for any caller and keeps the server's deadline arithmetic in range.
///
/// [`MemoryStreams`]: crate::streams::MemoryStreams
const MAX_BLOCK: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// [`Streams`] on Redis 7 (or later), over a [`RedisPool`].
///
/// Ordinary commands use the pool; a blocking `>` read uses a dedicated connection (see
/// [`crate::backend::redis`]). Semantics are exactly those of the contract suite, which
/// runs against this type and [`MemoryStreams`](crate::streams::MemoryStreams) alike.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisStreams {
    pool: RedisPool,
}

fn invalid(reason: &'static str) -> StreamError {
    StreamError::InvalidArgument { reason }
}

/// Map a failure of a command on `stream` (and `group`, for group commands).
fn stream_error(f: Failure, stream: &str, group: Option<&str>) -> StreamError {
    if let Failure::Server { code, .. } = &f {
        match (code.as_str(), group) {
            ("NOGROUP", Some(group)) => {
                return StreamError::NoGroup {
                    stream: stream.to_owned(),
                    group: group.to_owned(),
                };
            }
            ("WRONGTYPE", _) => {
                return StreamError::WrongType {
                    key: stream.to_owned(),
                };
            }
            _ => {}
        }
    }
    f.into()
}

/// `~` or `=` before a trim threshold.
fn trim_op(approximate: bool) -> &'static str {
    if approximate { "~" } else { "=" }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisStreams {
    /// Streams over `pool` (which may be shared with [`RedisKeys`](super::RedisKeys)).
    pub fn new(pool: RedisPool) -> Self {
        Self { pool }
    }

    /// Streams over a new pool for `config`. No I/O happens here.
    pub fn connect(config: &RedisConfig) -> Result<Self, RedisConfigError> {
        Ok(Self::new(RedisPool::new(config)?))
    }

    /// The underlying pool.
    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    async fn run(&self, cmd: &Cmd, stream: &str, group: Option<&str>) -> StreamResult<Value> {
        self.pool
            .query(cmd)
            .await
            .map_err(|f| stream_error(f, stream, group))
    }
}

fn parsed<T>(r: Result<T, Failure>) -> StreamResult<T> {
    r.map_err(StreamError::from)
}

#[async_trait::async_trait]
impl Streams for RedisStreams {
    async fn xadd_with(&self, stream: &str, fields: &Fields, trim: Trim) -> StreamResult<EntryId> {
        if fields.is_empty() {
            return Err(invalid("an entry needs at least one field"));
        }
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(stream);
        match trim {
            Trim::None => {}
            Trim::MaxLen { max, approximate } => {
                cmd.arg("MAXLEN").arg(trim_op(approximate)).arg(max);
            }
            Trim::MinId { min, approximate } => {
                cmd.arg("MINID")
                    .arg(trim_op(approximate))
                    .arg(min.to_string());
            }
        }
        cmd.arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        match self.pool.query(&cmd).await {
            Ok(v) => parsed(reply::id(&v, "XADD id")),
            // "ERR The stream has exhausted the last possible ID, unable to add more items"
            Err(f) if f.message_contains("exhausted the last possible id") => {
                Err(StreamError::IdsExhausted {
                    stream: stream.to_owned(),
                })
            }
            Err(f) => Err(stream_error(f, stream, None)),
        }
    }

    async fn len(&self, stream: &str) -> StreamResult<u64> {
        let v = self
            .run(::redis::cmd("XLEN").arg(stream), stream, None)
            .await?;
        parsed(reply::count(&v, "XLEN"))
    }

    async fn range(
        &self,
        stream: &str,
        start: EntryId,
        end: EntryId,
        count: Option<usize>,
    ) -> StreamResult<Vec<StreamEntry>> {
        let mut cmd = ::redis::cmd("XRANGE");
        cmd.arg(stream).arg(start.to_string()).arg(end.to_string());
        match count {
            Some(0) => return Err(invalid("count must be at least 1")),
            Some(n) => {
                cmd.arg("COUNT").arg(n);
            }
            None => {}
        }
        let v = self.run(&cmd, stream, None).await?;
        parsed(reply::entries(&v))
    }

    async fn del(&self, stream: &str, ids: &[EntryId]) -> StreamResult<u64> {
        // Redis refuses an XDEL without ids; deleting nothing deletes nothing.
        if ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = ::redis::cmd("XDEL");
        cmd.arg(stream);
        for id in ids {
            cmd.arg(id.to_string());
        }
        let v = self.run(&cmd, stream, None).await?;
        parsed(reply::count(&v, "XDEL"))
    }

    async fn stream_exists(&self, stream: &str) -> StreamResult<bool> {
        let v = self
            .run(::redis::cmd("TYPE").arg(stream), stream, None)
            .await?;
        match parsed(reply::text(&v, "TYPE"))?.as_str() {
            "none" => Ok(false),
            "stream" => Ok(true),
            _ => Err(StreamError::WrongType {
                key: stream.to_owned(),
            }),
        }
    }

    async fn group_create(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> StreamResult<GroupCreated> {
        let at = match start {
            GroupStart::Latest => "$",
            GroupStart::Beginning => "0",
        };
        let mut cmd = ::redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg(at)
            .arg("MKSTREAM");
        match self.pool.query(&cmd).await {
            Ok(_) => Ok(GroupCreated::Created),
            Err(Failure::Server { code, .. }) if code == "BUSYGROUP" => {
                Ok(GroupCreated::AlreadyExists)
            }
            Err(f) => Err(stream_error(f, stream, Some(group))),
        }
    }

    async fn groups(&self, stream: &str) -> StreamResult<Vec<GroupInfo>> {
        let cmd = ::redis::cmd("XINFO").arg("GROUPS").arg(stream).clone();
        match self.pool.query(&cmd).await {
            Ok(v) => parsed(reply::groups(&v)),
            // "ERR no such key"
            Err(f) if f.message_contains("no such key") => Err(StreamError::NoStream {
                stream: stream.to_owned(),
            }),
            Err(f) => Err(stream_error(f, stream, None)),
        }
    }

    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        from: ReadFrom,
        count: usize,
        block: Option<Duration>,
    ) -> StreamResult<Vec<StreamEntry>> {
        if count == 0 {
            return Err(invalid("count must be at least 1"));
        }
        // Only a `>` read blocks (Redis ignores BLOCK for an explicit id, and so does the
        // trait). BLOCK 0 means "forever" to Redis, so a zero wait is sent as no BLOCK, and a
        // sub-millisecond one as 1 ms.
        let block = match (from, block) {
            (ReadFrom::New, Some(wait)) if !wait.is_zero() => Some(wait.min(MAX_BLOCK)),
            _ => None,
        };
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(wait) = block {
            cmd.arg("BLOCK").arg(millis(wait).max(1));
        }
        cmd.arg("STREAMS").arg(stream);
        match from {
            ReadFrom::New => cmd.arg(">"),
            ReadFrom::Pending(after) => cmd.arg(after.to_string()),
        };
        let v = match block {
            Some(wait) => self
                .pool
                .blocking_query(&cmd, wait)
                .await
                .map_err(|f| stream_error(f, stream, Some(group)))?,
            None => self.run(&cmd, stream, Some(group)).await?,
        };
        parsed(reply::read_group(&v))
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StreamResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = ::redis::cmd("XACK");
        cmd.arg(stream).arg(group);
        for id in ids {
            cmd.arg(id.to_string());
        }
        let v = self.run(&cmd, stream, Some(group)).await?;
        parsed(reply::count(&v, "XACK"))
    }

    async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: EntryId,
        count: usize,
    ) -> StreamResult<AutoClaim> {
        if count == 0 {
            return Err(invalid("count must be at least 1"));
        }
        let mut cmd = ::redis::cmd("XAUTOCLAIM");
        cmd.arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(millis(min_idle))
            .arg(start.to_string())
            .arg("COUNT")
            .arg(count);
        let v = self.run(&cmd, stream, Some(group)).await?;
        parsed(reply::autoclaim(&v))
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> StreamResult<PendingSummary> {
        let v = self
            .run(
                ::redis::cmd("XPENDING").arg(stream).arg(group),
                stream,
                Some(group),
            )
            .await?;
        parsed(reply::pending_summary(&v))
    }

    async fn pending_range(
        &self,
        stream: &str,
        group: &str,
        start: EntryId,
        end: EntryId,
        count: usize,
        consumer: Option<&str>,
    ) -> StreamResult<Vec<PendingEntry>> {
        if count == 0 {
            return Err(invalid("count must be at least 1"));
        }
        let mut cmd = ::redis::cmd("XPENDING");
        cmd.arg(stream)
            .arg(group)
            .arg(start.to_string())
            .arg(end.to_string())
            .arg(count);
        if let Some(consumer) = consumer {
            cmd.arg(consumer);
        }
        let v = self.run(&cmd, stream, Some(group)).await?;
        parsed(reply::pending_range(&v))
    }

    async fn eviction_policy(&self) -> StreamResult<Option<String>> {
        let cmd = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .clone();
        match self.pool.query(&cmd).await {
            Ok(v) => parsed(reply::config_value(&v)),
            // Managed Redis often forbids or renames CONFIG (NOPERM, "unknown command"):
            // the check is skipped, as the reference does. A connection failure is still an
            // error, so the caller can tell "not allowed" from "not reachable".
            Err(Failure::Server { .. }) => Ok(None),
            Err(f) => Err(f.into()),
        }
    }
}
