//! `caracal migrate`: apply the embedded forward-only migrations.
//!
//! The database URL comes from, in order: `--database-url`, `--database-url-file`, the file
//! named by `DATABASE_URL_FILE` (for mounted secrets; trailing whitespace trimmed), then
//! `DATABASE_URL`. Prints each migration it applies and a summary, or `up to date`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use caracal_core::backend::postgres::migrate::{MigrationReport, Migrator};
use clap::Args;
use tokio_postgres::{Client, NoTls};

use super::CmdError;

/// Arguments of `caracal migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Postgres URL, e.g. postgres://caracal@db:5432/caracal [env: DATABASE_URL]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Read the URL from this file (trailing whitespace trimmed) [env: DATABASE_URL_FILE]
    #[arg(long, value_name = "PATH", conflicts_with = "database_url")]
    database_url_file: Option<PathBuf>,
    /// Keep retrying the connection for up to this many seconds (e.g. while Postgres starts)
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    wait_secs: u64,
    /// Timeout of each connection attempt, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    connect_timeout_secs: u64,
    /// How long to wait for the migration lock held by another migrator, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    lock_timeout_secs: u64,
}

/// Where the URL was found, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// `--database-url`.
    Flag,
    /// `--database-url-file` or `DATABASE_URL_FILE`.
    File(PathBuf),
    /// `DATABASE_URL`.
    Env,
}

/// Resolve the database URL from the flags and the environment (`env` is injected so the
/// precedence is unit-tested without touching the process environment).
pub fn resolve_url(
    flag: Option<&str>,
    flag_file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(String, UrlSource), CmdError> {
    if let Some(url) = flag {
        return non_empty(url.to_owned(), UrlSource::Flag, "--database-url");
    }
    let file = flag_file.map(Path::to_path_buf).or_else(|| {
        env("DATABASE_URL_FILE")
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CmdError::Config(format!(
                "cannot read the database URL file {}: {e}",
                path.display()
            ))
        })?;
        let what = format!("the database URL file {}", path.display());
        return non_empty(text.trim_end().to_owned(), UrlSource::File(path), &what);
    }
    if let Some(url) = env("DATABASE_URL") {
        return non_empty(url, UrlSource::Env, "DATABASE_URL");
    }
    Err(CmdError::Config(
        "no database URL: pass --database-url, or set DATABASE_URL or DATABASE_URL_FILE".into(),
    ))
}

fn non_empty(url: String, source: UrlSource, what: &str) -> Result<(String, UrlSource), CmdError> {
    if url.trim().is_empty() {
        Err(CmdError::Config(format!("{what} is empty")))
    } else {
        Ok((url, source))
    }
}

/// `url` with its password replaced by `***` (URL and `key=value` forms).
pub fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Apply the pending migrations and print what happened.
pub async fn run(args: MigrateArgs) -> Result<(), CmdError> {
    let (url, source) = resolve_url(
        args.database_url.as_deref(),
        args.database_url_file.as_deref(),
        |k| std::env::var(k).ok(),
    )?;
    tracing::debug!(?source, url = %redact(&url), "database URL resolved");
    let mut config = tokio_postgres::Config::from_str(&url).map_err(|e| {
        CmdError::Config(format!(
            "invalid database URL {}: {}",
            redact(&url),
            with_cause(&e)
        ))
    })?;
    config.connect_timeout(Duration::from_secs(args.connect_timeout_secs.max(1)));
    config.application_name("caracal-migrate");

    let report = migrate_with(
        &config,
        &url,
        Duration::from_secs(args.wait_secs),
        Duration::from_secs(args.lock_timeout_secs),
    )
    .await?;
    print!("{}", render(&report));
    Ok(())
}

/// Apply the embedded migrations to the database at `url` (as `caracal migrate` does, with
/// its defaults): `caracal up` with Postgres migrates first.
pub async fn migrate_url(url: &str) -> Result<MigrationReport, CmdError> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
        CmdError::Config(format!(
            "invalid database URL {}: {}",
            redact(url),
            with_cause(&e)
        ))
    })?;
    config.connect_timeout(Duration::from_secs(10));
    config.application_name("caracal-up-migrate");
    migrate_with(
        &config,
        url,
        Duration::from_secs(30),
        Duration::from_secs(60),
    )
    .await
}

async fn migrate_with(
    config: &tokio_postgres::Config,
    url: &str,
    wait: Duration,
    lock_timeout: Duration,
) -> Result<MigrationReport, CmdError> {
    let mut client = connect(config, url, wait).await?;
    let migrator = Migrator::embedded()?.with_lock_timeout(lock_timeout);
    Ok(migrator.run(&mut client).await?)
}

/// Connect, retrying until `wait` has passed (each attempt bounded by the connect timeout).
async fn connect(
    config: &tokio_postgres::Config,
    url: &str,
    wait: Duration,
) -> Result<Client, CmdError> {
    let deadline = Instant::now() + wait;
    loop {
        match config.connect(NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %e, "postgres connection ended");
                    }
                });
                return Ok(client);
            }
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %e, "postgres not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(CmdError::Connect {
                    url: redact(url),
                    reason: with_cause(&e),
                });
            }
        }
    }
}

/// An error with its cause (tokio-postgres puts the useful part in the source).
fn with_cause(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The report as printed on stdout.
pub fn render(report: &MigrationReport) -> String {
    let latest = report.latest().unwrap_or("(none)");
    if report.is_noop() {
        let n = report.already_applied.len();
        return format!(
            "up to date: {n} migration{} applied, schema at {latest}\n",
            plural(n)
        );
    }
    let mut out = String::new();
    for a in &report.applied {
        out.push_str(&format!(
            "applied {} (sha256 {}) in {} ms\n",
            a.version,
            a.checksum.get(..12).unwrap_or(&a.checksum),
            a.duration.as_millis()
        ));
    }
    let n = report.applied.len();
    out.push_str(&format!(
        "migrated: {n} applied, {} already applied, schema at {latest}\n",
        report.already_applied.len()
    ));
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use caracal_core::backend::postgres::migrate::AppliedMigration;

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
        std::fs::write(&file, "postgres://from-file/db \n\n").unwrap();
        let file_str = file.display().to_string();
        let env = env_of(&[
            ("DATABASE_URL", "postgres://from-env/db"),
            ("DATABASE_URL_FILE", &file_str),
        ]);

        let (url, src) = resolve_url(Some("postgres://flag/db"), None, &env).unwrap();
        assert_eq!((url.as_str(), src), ("postgres://flag/db", UrlSource::Flag));
        // _FILE beats the plain variable, and trailing whitespace is trimmed.
        let (url, src) = resolve_url(None, None, &env).unwrap();
        assert_eq!(url, "postgres://from-file/db");
        assert_eq!(src, UrlSource::File(file.clone()));
        let (url, src) =
            resolve_url(None, None, env_of(&[("DATABASE_URL", "postgres://e/d")])).unwrap();
        assert_eq!((url.as_str(), src), ("postgres://e/d", UrlSource::Env));

        assert!(matches!(
            resolve_url(None, None, env_of(&[])),
            Err(CmdError::Config(m)) if m.contains("no database URL")
        ));
        assert!(matches!(
            resolve_url(None, Some(&dir.path().join("missing")), env_of(&[])),
            Err(CmdError::Config(m)) if m.contains("cannot read")
        ));
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(
            resolve_url(None, Some(&file), env_of(&[])),
            Err(CmdError::Config(m)) if m.contains("is empty")
        ));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("host=h password=pw user=u"),
            "host=h password=*** user=u"
        );
    }

    #[test]
    fn renders_reports() {
        let mut r = MigrationReport::default();
        r.already_applied.push("0001_baseline".into());
        assert_eq!(
            render(&r),
            "up to date: 1 migration applied, schema at 0001_baseline\n"
        );
        r.applied.push(AppliedMigration {
            version: "0002_next".into(),
            checksum: "abcdef0123456789".into(),
            duration: Duration::from_millis(7),
        });
        assert_eq!(
            render(&r),
            "applied 0002_next (sha256 abcdef012345) in 7 ms\n\
             migrated: 1 applied, 1 already applied, schema at 0002_next\n"
        );
    }
}
