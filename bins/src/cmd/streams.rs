//! `caracal streams provision` and `caracal streams verify`: the nine Redis streams and their
//! consumer groups (`caracal_core::streams::provision`).
//!
//! The Redis URL comes from, in order: `--redis-url`, `--redis-url-file`, the file named by
//! `REDIS_URL_FILE` (for mounted secrets; trailing whitespace trimmed), then `REDIS_URL`.
//! Both print a table of streams, groups and their status on stdout. `provision` exits 1 if a
//! stream could not be provisioned (e.g. its key holds another type); `verify` exits 1 when
//! anything is missing, naming each missing stream or group.
//!
//! `verify` also lists the per-replica groups the services create for themselves
//! (`opa-engine:<instance>`, `sts-keys:<instance>`, `gateway-revocation:<host>`) with their
//! consumers and pending entries; they are never provisioned and never a failure. A group of
//! a replica that no longer exists can be removed with `XGROUP DESTROY <stream> <group>`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caracal_core::backend::redis::{RedisConfig, RedisStreams};
use caracal_core::streams::GroupCreated;
use caracal_core::streams::provision::{
    ProvisionReport, StreamState, VerifyReport, provision, verify,
};
use clap::{Args, Subcommand};

use super::CmdError;

/// Arguments of `caracal streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    #[command(subcommand)]
    action: StreamsAction,
}

#[derive(Debug, Subcommand)]
enum StreamsAction {
    /// Create the nine streams and their consumer groups (idempotent; never trims), and seed
    /// caracal.providers.ratelimit.
    Provision(RedisArgs),
    /// Check every stream holds a stream, every group exists, and re-provisioning is a no-op;
    /// exits 1 naming what is missing.
    Verify(RedisArgs),
}

/// How to reach Redis.
#[derive(Debug, Args)]
struct RedisArgs {
    /// Redis URL, e.g. redis://:password@redis:6379/0 [env: REDIS_URL]
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Read the URL from this file (trailing whitespace trimmed) [env: REDIS_URL_FILE]
    #[arg(long, value_name = "PATH", conflicts_with = "redis_url")]
    redis_url_file: Option<PathBuf>,
    /// Keep retrying for up to this many seconds while Redis is unreachable (e.g. starting)
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    wait_secs: u64,
    /// Timeout of each connection attempt and command, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    timeout_secs: u64,
}

/// Where the URL was found, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// `--redis-url`.
    Flag,
    /// `--redis-url-file` or `REDIS_URL_FILE`.
    File(PathBuf),
    /// `REDIS_URL`.
    Env,
}

/// Resolve the Redis URL from the flags and the environment (`env` is injected so the
/// precedence is unit-tested without touching the process environment).
pub fn resolve_url(
    flag: Option<&str>,
    flag_file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(String, UrlSource), CmdError> {
    if let Some(url) = flag {
        return non_empty(url.to_owned(), UrlSource::Flag, "--redis-url");
    }
    let file = flag_file.map(Path::to_path_buf).or_else(|| {
        env("REDIS_URL_FILE")
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CmdError::Config(format!(
                "cannot read the Redis URL file {}: {e}",
                path.display()
            ))
        })?;
        let what = format!("the Redis URL file {}", path.display());
        return non_empty(text.trim_end().to_owned(), UrlSource::File(path), &what);
    }
    if let Some(url) = env("REDIS_URL") {
        return non_empty(url, UrlSource::Env, "REDIS_URL");
    }
    Err(CmdError::Config(
        "no Redis URL: pass --redis-url, or set REDIS_URL or REDIS_URL_FILE".into(),
    ))
}

fn non_empty(url: String, source: UrlSource, what: &str) -> Result<(String, UrlSource), CmdError> {
    if url.trim().is_empty() {
        Err(CmdError::Config(format!("{what} is empty")))
    } else {
        Ok((url, source))
    }
}

/// Run `caracal streams …`.
pub async fn run(args: StreamsArgs) -> Result<(), CmdError> {
    match args.action {
        StreamsAction::Provision(redis) => {
            let (streams, url) = connect(&redis).await?;
            let report = provision(&streams).await.map_err(|e| CmdError::Redis {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            print!("{}", render_provision(&report));
            let failed: Vec<String> = report
                .streams
                .iter()
                .filter_map(|s| s.error.as_ref().map(|e| format!("{}: {e}", s.stream)))
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(CmdError::Streams(format!(
                    "provisioning failed for {}",
                    failed.join("; ")
                )))
            }
        }
        StreamsAction::Verify(redis) => {
            let (streams, url) = connect(&redis).await?;
            let report = verify(&streams).await.map_err(|e| CmdError::Redis {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            print!("{}", render_verify(&report));
            let problems = report.problems();
            if problems.is_empty() {
                Ok(())
            } else {
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                Err(CmdError::Streams(format!(
                    "verify failed: {}",
                    list.join("; ")
                )))
            }
        }
    }
}

/// A client for the resolved URL, once Redis answers (retrying up to `--wait-secs`).
async fn connect(args: &RedisArgs) -> Result<(RedisStreams, String), CmdError> {
    let (url, source) = resolve_url(
        args.redis_url.as_deref(),
        args.redis_url_file.as_deref(),
        |k| std::env::var(k).ok(),
    )?;
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let mut config = RedisConfig::new(url);
    config.pool_size = 2;
    config.pool_timeout = timeout;
    config.connect_timeout = timeout;
    config.response_timeout = timeout;
    let shown = config.redacted_url();
    tracing::debug!(?source, url = %shown, "Redis URL resolved");
    let streams = RedisStreams::connect(&config).map_err(|e| CmdError::Config(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    loop {
        match streams.pool().ping().await {
            Ok(()) => return Ok((streams, shown)),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tracing::info!(error = %e, "Redis not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(CmdError::Redis {
                    url: shown,
                    reason: e.to_string(),
                });
            }
        }
    }
}

/// Rows of `(stream, group, status)` as an aligned table with a header.
fn table(rows: &[(String, String, String)]) -> String {
    let header = ("STREAM".to_owned(), "GROUP".to_owned(), "STATUS".to_owned());
    let w0 = rows
        .iter()
        .map(|r| r.0.len())
        .chain([header.0.len()])
        .max()
        .unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.1.len())
        .chain([header.1.len()])
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (a, b, c) in std::iter::once(&header).chain(rows) {
        out.push_str(format!("{a:<w0$}  {b:<w1$}  {c}").trim_end());
        out.push('\n');
    }
    out
}

fn length_note(len: Option<u64>, over_bound: bool, bound: Option<u64>) -> String {
    match (len, over_bound, bound) {
        (Some(len), true, Some(bound)) => {
            format!(" (length {len} over its intended bound {bound}; not trimmed)")
        }
        _ => String::new(),
    }
}

/// The provisioning report as printed.
pub fn render_provision(report: &ProvisionReport) -> String {
    let mut rows = Vec::new();
    let (mut created, mut existed) = (0, 0);
    for s in &report.streams {
        let bound = caracal_core::streams::names::stream_spec(s.stream).and_then(|spec| spec.bound);
        let note = length_note(s.len, s.over_bound, bound);
        for g in &s.groups {
            let status = match g.outcome {
                GroupCreated::Created => {
                    created += 1;
                    "created"
                }
                GroupCreated::AlreadyExists => {
                    existed += 1;
                    "exists"
                }
            };
            rows.push((
                s.stream.to_owned(),
                g.group.to_owned(),
                format!("{status}{note}"),
            ));
        }
        if let Some(seeded) = s.seeded {
            let status = if seeded { "seeded (init=1)" } else { "exists" };
            rows.push((
                s.stream.to_owned(),
                "-".to_owned(),
                format!("{status}{note}"),
            ));
        }
        if let Some(e) = &s.error {
            rows.push((s.stream.to_owned(), "-".to_owned(), format!("FAILED: {e}")));
        }
    }
    let mut out = table(&rows);
    let summary = if !report.is_ok() {
        "provision: FAILED (see above)".to_owned()
    } else if report.changed_anything() {
        format!(
            "provisioned: {} streams, {created} groups created, {existed} already present",
            report.streams.len()
        )
    } else {
        format!(
            "provisioned: no changes ({} streams, {existed} groups already present)",
            report.streams.len()
        )
    };
    out.push_str(&summary);
    out.push('\n');
    out
}

/// The verification report as printed.
pub fn render_verify(report: &VerifyReport) -> String {
    let mut rows = Vec::new();
    for s in &report.streams {
        let note = length_note(s.len, s.over_bound, s.bound);
        match s.state {
            StreamState::Missing => {
                rows.push((
                    s.stream.to_owned(),
                    "-".to_owned(),
                    "MISSING stream".to_owned(),
                ));
            }
            StreamState::NotAStream => rows.push((
                s.stream.to_owned(),
                "-".to_owned(),
                "WRONG TYPE (not a stream)".to_owned(),
            )),
            StreamState::Present => {
                if s.groups.is_empty() {
                    let status = match s.seed_present {
                        Some(false) => "MISSING seed entry".to_owned(),
                        _ => format!("ok{note}"),
                    };
                    rows.push((s.stream.to_owned(), "-".to_owned(), status));
                }
            }
        }
        if s.state == StreamState::Present {
            for g in &s.groups {
                let status = match (g.present, g.reprovision) {
                    (false, _) => "MISSING".to_owned(),
                    (true, Some(GroupCreated::AlreadyExists)) => format!("ok{note}"),
                    (true, _) => "NOT IDEMPOTENT".to_owned(),
                };
                rows.push((s.stream.to_owned(), g.group.to_owned(), status));
            }
            for g in &s.instance_groups {
                rows.push((
                    s.stream.to_owned(),
                    g.group.clone(),
                    format!(
                        "per-replica ({} consumer{}, {} pending)",
                        g.consumers,
                        if g.consumers == 1 { "" } else { "s" },
                        g.pending
                    ),
                ));
            }
            for extra in &s.extra_groups {
                rows.push((
                    s.stream.to_owned(),
                    extra.clone(),
                    "extra (not provisioned)".to_owned(),
                ));
            }
        }
    }
    let mut out = table(&rows);
    let problems = report.problems().len();
    if problems == 0 {
        out.push_str("verify: OK\n");
    } else {
        out.push_str(&format!(
            "verify: FAILED ({problems} problem{})\n",
            if problems == 1 { "" } else { "s" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use caracal_core::streams::{MemoryStreams, Streams as _};

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn url_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, "redis://from-file:6379/0 \n").unwrap();
        let file_str = file.display().to_string();
        let env = env_of(&[
            ("REDIS_URL", "redis://env/0"),
            ("REDIS_URL_FILE", &file_str),
        ]);
        let (url, src) = resolve_url(Some("redis://flag/0"), None, &env).unwrap();
        assert_eq!((url.as_str(), src), ("redis://flag/0", UrlSource::Flag));
        let (url, src) = resolve_url(None, None, &env).unwrap();
        assert_eq!(
            (url.as_str(), src),
            ("redis://from-file:6379/0", UrlSource::File(file))
        );
        let (url, src) = resolve_url(None, None, env_of(&[("REDIS_URL", "redis://e/1")])).unwrap();
        assert_eq!((url.as_str(), src), ("redis://e/1", UrlSource::Env));
        assert!(matches!(
            resolve_url(None, None, env_of(&[])),
            Err(CmdError::Config(m)) if m.contains("no Redis URL")
        ));
        assert!(matches!(
            resolve_url(Some(" "), None, env_of(&[])),
            Err(CmdError::Config(m)) if m.contains("is empty")
        ));
    }

    /// Whether `out` has a row whose whitespace-separated cells are `cells`.
    fn has_row(out: &str, cells: &[&str]) -> bool {
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == cells)
    }

    #[tokio::test]
    async fn tables_name_streams_groups_and_status() {
        let s = MemoryStreams::default();
        let first = render_provision(&provision(&s).await.unwrap());
        assert!(has_row(&first, &["STREAM", "GROUP", "STATUS"]), "{first}");
        assert!(
            has_row(
                &first,
                &["caracal.sessions.revoke", "sts-revocation", "created"]
            ),
            "{first}"
        );
        assert!(has_row(
            &first,
            &["caracal.providers.ratelimit", "-", "seeded", "(init=1)"]
        ));
        assert!(first.ends_with("provisioned: 9 streams, 9 groups created, 0 already present\n"));
        let again = render_provision(&provision(&s).await.unwrap());
        assert!(has_row(
            &again,
            &["caracal.audit.events", "siem-export", "exists"]
        ));
        assert!(again.ends_with("provisioned: no changes (9 streams, 9 groups already present)\n"));
        let ok = render_verify(&verify(&s).await.unwrap());
        assert!(
            has_row(&ok, &["caracal.keys.invalidate", "sts-keys", "ok"]),
            "{ok}"
        );
        assert!(ok.ends_with("verify: OK\n"), "{ok}");
        // Per-replica groups, created by the consumers themselves: listed, never a failure.
        let sts_a = caracal_core::streams::names::sts_keys_group("sts-a");
        s.group_create(
            "caracal.keys.invalidate",
            &sts_a,
            caracal_core::streams::GroupStart::Latest,
        )
        .await
        .unwrap();
        let with_replica = render_verify(&verify(&s).await.unwrap());
        assert!(
            has_row(
                &with_replica,
                &[
                    "caracal.keys.invalidate",
                    "sts-keys:sts-a",
                    "per-replica",
                    "(0",
                    "consumers,",
                    "0",
                    "pending)"
                ]
            ),
            "{with_replica}"
        );
        assert!(with_replica.ends_with("verify: OK\n"), "{with_replica}");
        let empty = render_verify(&verify(&MemoryStreams::default()).await.unwrap());
        assert!(
            has_row(&empty, &["caracal.audit.events", "-", "MISSING", "stream"]),
            "{empty}"
        );
        assert!(empty.ends_with("verify: FAILED (19 problems)\n"), "{empty}");
        // Columns line up: every row starts its group cell at the same offset.
        let offsets: Vec<usize> = first
            .lines()
            .filter(|l| l.starts_with("caracal."))
            .filter_map(|l| {
                l.find("  ")
                    .map(|i| i + l[i..].find(|c: char| c != ' ').unwrap_or(0))
            })
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] == w[1]), "{first}");
    }
}
