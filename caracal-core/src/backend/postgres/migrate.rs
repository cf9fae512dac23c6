//! Forward-only, checksummed migrations.
//!
//! The SQL files of `migrations/` (`NNNN_description.sql`) are embedded at compile time in
//! [`EMBEDDED`], together with `migrations/released.sha256`, which pins the SHA-256 of every
//! released file (`sha256sum` format). [`Migrator::run`]:
//!
//! 1. takes `pg_advisory_xact_lock(`[`MIGRATION_LOCK_KEY`]`)` (bounded by `lock_timeout`), so
//!    concurrent migrators are safe: they apply each file exactly once between them;
//! 2. creates `schema_migrations(version text PK, checksum text, applied_at timestamptz)` if
//!    needed and **refuses to start** ([`MigrateError::ChecksumMismatch`], naming the file)
//!    when a recorded checksum differs from the file's, i.e. an applied file was edited, or
//!    when the database has a migration this binary does not know;
//! 3. applies each pending file in its own transaction (under the same lock), re-checking
//!    inside the lock that no other migrator applied it meanwhile, and records it with its
//!    checksum. Re-running is a no-op.
//!
//! Files run inside a transaction, so they must not contain transaction control
//! (`BEGIN`/`COMMIT`) or statements that cannot run in one (`CREATE INDEX CONCURRENTLY`).
//!
//! Release discipline ([`check_released`]): every file is either pinned in the manifest with
//! its exact hash, or is the single open (unreleased) file, numbered one past the last
//! released file. A released file is never edited; a fix is a new file.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// The advisory lock every migrator takes (the reference's `MIGRATION_ADVISORY_LOCK_KEY`).
pub const MIGRATION_LOCK_KEY: i64 = 4_732_518_903_281_471;

/// The default bound on waiting for the migration lock (and on DDL lock waits).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// The table recording applied migrations.
pub const SCHEMA_MIGRATIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version text PRIMARY KEY, \
     checksum text NOT NULL, \
     applied_at timestamptz NOT NULL DEFAULT now())";

/// One migration file: its file name and its SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration<'a> {
    /// File name, `NNNN_description.sql`.
    pub file: &'a str,
    /// The file's exact contents.
    pub sql: &'a str,
}

impl<'a> Migration<'a> {
    /// A migration from a file name and its SQL.
    pub const fn new(file: &'a str, sql: &'a str) -> Self {
        Self { file, sql }
    }

    /// The recorded version: the file name without `.sql` (e.g. `0001_baseline`).
    pub fn version(&self) -> &'a str {
        self.file.strip_suffix(".sql").unwrap_or(self.file)
    }

    /// The numeric prefix, if the name is well formed.
    pub fn number(&self) -> Option<u32> {
        parse_name(self.file).map(|(n, _)| n)
    }

    /// Lowercase hex SHA-256 of the file's bytes (what `sha256sum` prints).
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// Every migration file of `migrations/`, in order. A unit test checks that this list and
/// the directory agree, so a new file cannot be forgotten here.
pub static EMBEDDED: &[Migration<'static>] = &[
    Migration::new(
        "0001_baseline.sql",
        include_str!("../../../../migrations/0001_baseline.sql"),
    ),
    Migration::new(
        "0002_idempotency_receipt_replay.sql",
        include_str!("../../../../migrations/0002_idempotency_receipt_replay.sql"),
    ),
];

/// `migrations/released.sha256`: the pinned hashes of the released files.
pub const RELEASED_MANIFEST: &str = include_str!("../../../../migrations/released.sha256");

/// Why migrating failed or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A file name is not `NNNN_description.sql` (lowercase letters, digits, `_`), or its
    /// description looks like a release version (`v1_2`).
    #[error("invalid migration file name {file:?}: {reason}")]
    InvalidName {
        /// The file.
        file: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Files are not in strictly ascending numeric order (or two share a number).
    #[error(
        "migration {file} is out of order (after {previous}); numbers must be unique and ascending"
    )]
    OutOfOrder {
        /// The file.
        file: String,
        /// The file before it.
        previous: String,
    },
    /// `released.sha256` is malformed.
    #[error("released.sha256 line {line}: {reason}")]
    Manifest {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A released file's contents differ from its pinned hash: it was edited.
    #[error(
        "released migration {file} was edited: pinned sha256 {pinned}, file has {actual}; \
         released files are immutable, put the change in a new migration"
    )]
    ReleasedFileEdited {
        /// The file.
        file: String,
        /// The hash in `released.sha256`.
        pinned: String,
        /// The hash of the file now.
        actual: String,
    },
    /// `released.sha256` names a file that does not exist.
    #[error("released migration {file} is missing")]
    ReleasedFileMissing {
        /// The file.
        file: String,
    },
    /// More than one file is not in `released.sha256`.
    #[error("more than one open (unreleased) migration: {files:?}; release one first")]
    TooManyOpen {
        /// The open files.
        files: Vec<String>,
    },
    /// The open file is not numbered one past the last released file, or is not last.
    #[error("open migration {file} must be the last file and numbered {expected:04}")]
    OpenNotNext {
        /// The open file.
        file: String,
        /// The number it must have.
        expected: u32,
    },
    /// An applied migration's recorded checksum differs from the file: the file was edited
    /// after it was applied. The runner refuses to start.
    #[error(
        "migration {file} was applied with checksum {recorded} but the file now has {expected}; \
         an applied migration was edited, refusing to migrate"
    )]
    ChecksumMismatch {
        /// The file.
        file: String,
        /// The checksum in `schema_migrations`.
        recorded: String,
        /// The checksum of the file this binary carries.
        expected: String,
    },
    /// The database records a migration this binary does not have (it is newer than the
    /// binary). The runner refuses to start rather than run against an unknown schema.
    #[error(
        "database has migration {version} applied, which this binary does not know; use a newer binary"
    )]
    UnknownApplied {
        /// The recorded version.
        version: String,
    },
    /// A pending file sorts before an applied one (a file was added out of order).
    #[error("migration {file} is pending but the later {applied} is already applied")]
    PendingBeforeApplied {
        /// The pending file.
        file: String,
        /// The latest applied version.
        applied: String,
    },
    /// The migration lock (or a lock a migration needed) was not granted within the bound.
    #[error(
        "timed out after {after:?} waiting for the migration lock (another migrator, or a lock held by a running service)"
    )]
    LockTimeout {
        /// The bound.
        after: Duration,
    },
    /// A migration's SQL failed; its transaction was rolled back.
    #[error("migration {file} failed: {}", describe(source))]
    Apply {
        /// The file.
        file: String,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Talking to the database failed.
    #[error("{context}: {}", describe(source))]
    Database {
        /// What was being done.
        context: &'static str,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl MigrateError {
    /// Whether running again may succeed (lock contention, a lost connection).
    pub fn is_retryable(&self) -> bool {
        match self {
            MigrateError::LockTimeout { .. } => true,
            MigrateError::Database { source, .. } | MigrateError::Apply { source, .. } => {
                source.is_closed()
                    || source.code().is_some_and(|c| {
                        let code = c.code();
                        code.starts_with("08")
                            || code.starts_with("57P")
                            || code == "40001"
                            || code == "40P01"
                            || code == "53300"
                    })
            }
            _ => false,
        }
    }
}

/// A database error with its server message, when there is one (the `Display` of
/// `tokio_postgres::Error` alone says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(detail) = db.detail() {
                s.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// One migration applied by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// The version (`0001_baseline`).
    pub version: String,
    /// The file's checksum, as recorded.
    pub checksum: String,
    /// How long it took.
    pub duration: Duration,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migrations this run applied, in order.
    pub applied: Vec<AppliedMigration>,
    /// Migrations that were already applied (by an earlier run or a concurrent migrator).
    pub already_applied: Vec<String>,
}

impl MigrationReport {
    /// Whether the run changed nothing.
    pub fn is_noop(&self) -> bool {
        self.applied.is_empty()
    }

    /// The newest version now applied.
    pub fn latest(&self) -> Option<&str> {
        let applied = self.applied.last().map(|a| a.version.as_str());
        let before = self.already_applied.last().map(String::as_str);
        match (applied, before) {
            (Some(a), Some(b)) => Some(if a > b { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// The database's migration state compared with this binary's files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Applied versions (checksums verified).
    pub applied: Vec<String>,
    /// Versions not yet applied.
    pub pending: Vec<String>,
}

/// Applies migrations. See the module docs for the guarantees.
#[derive(Debug, Clone)]
pub struct Migrator<'a> {
    migrations: Vec<Migration<'a>>,
    lock_key: i64,
    lock_timeout: Duration,
}

impl Migrator<'static> {
    /// The migrator over the embedded files, after checking them against the embedded
    /// release manifest (a binary built from edited released files refuses to migrate).
    pub fn embedded() -> Result<Self, MigrateError> {
        check_released(RELEASED_MANIFEST, EMBEDDED)?;
        Self::new(EMBEDDED.to_vec())
    }
}

impl<'a> Migrator<'a> {
    /// A migrator over `migrations` (validated: names, unique ascending numbers). Tests use
    /// this to run their own lists.
    pub fn new(migrations: Vec<Migration<'a>>) -> Result<Self, MigrateError> {
        validate_order(&migrations)?;
        Ok(Self {
            migrations,
            lock_key: MIGRATION_LOCK_KEY,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        })
    }

    /// Use another advisory lock key.
    pub fn with_lock_key(mut self, key: i64) -> Self {
        self.lock_key = key;
        self
    }

    /// Bound the wait for the migration lock (and for locks the DDL needs).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The migrations, in order.
    pub fn migrations(&self) -> &[Migration<'a>] {
        &self.migrations
    }

    /// Apply every pending migration. See the module docs.
    pub async fn run(&self, client: &mut Client) -> Result<MigrationReport, MigrateError> {
        let recorded = self.verify(client).await?;
        let mut report = MigrationReport::default();
        for m in &self.migrations {
            if recorded.iter().any(|(v, _)| v == m.version()) {
                report.already_applied.push(m.version().to_owned());
                continue;
            }
            let started = Instant::now();
            let checksum = m.checksum();
            let tx = client
                .transaction()
                .await
                .map_err(|source| MigrateError::Database {
                    context: "begin a migration transaction",
                    source,
                })?;
            self.lock(&tx).await?;
            // INVARIANT: under the lock, a version is either recorded or not being applied
            // by anyone; another migrator may have applied it since `verify`.
            let existing = tx
                .query_opt(
                    "SELECT checksum FROM schema_migrations WHERE version = $1",
                    &[&m.version()],
                )
                .await
                .map_err(|source| MigrateError::Database {
                    context: "read schema_migrations",
                    source,
                })?;
            if let Some(row) = existing {
                let recorded: String = row.try_get(0).map_err(|source| MigrateError::Database {
                    context: "read schema_migrations",
                    source,
                })?;
                if recorded != checksum {
                    return Err(MigrateError::ChecksumMismatch {
                        file: m.file.to_owned(),
                        recorded,
                        expected: checksum,
                    });
                }
                report.already_applied.push(m.version().to_owned());
                // Dropping `tx` rolls back and releases the lock.
                continue;
            }
            tx.batch_execute(m.sql).await.map_err(|source| {
                lock_or(source, self.lock_timeout, |source| MigrateError::Apply {
                    file: m.file.to_owned(),
                    source,
                })
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                &[&m.version(), &checksum],
            )
            .await
            .map_err(|source| MigrateError::Database {
                context: "record the migration",
                source,
            })?;
            tx.commit().await.map_err(|source| MigrateError::Apply {
                file: m.file.to_owned(),
                source,
            })?;
            tracing::info!(version = m.version(), %checksum, "migration applied");
            report.applied.push(AppliedMigration {
                version: m.version().to_owned(),
                checksum,
                duration: started.elapsed(),
            });
        }
        Ok(report)
    }

    /// Compare the database with the files without applying anything: the same refusals as
    /// [`run`](Self::run) (edited or unknown applied migrations), plus what is pending.
    pub async fn status(&self, client: &mut Client) -> Result<MigrationStatus, MigrateError> {
        let recorded = self.verify(client).await?;
        let mut status = MigrationStatus::default();
        for m in &self.migrations {
            if recorded.iter().any(|(v, _)| v == m.version()) {
                status.applied.push(m.version().to_owned());
            } else {
                status.pending.push(m.version().to_owned());
            }
        }
        Ok(status)
    }

    /// Under the lock: create `schema_migrations` if needed, read it, and check every
    /// recorded row against the files. Returns the recorded `(version, checksum)` rows.
    async fn verify(&self, client: &mut Client) -> Result<Vec<(String, String)>, MigrateError> {
        let tx = client
            .transaction()
            .await
            .map_err(|source| MigrateError::Database {
                context: "begin the verification transaction",
                source,
            })?;
        self.lock(&tx).await?;
        tx.batch_execute(SCHEMA_MIGRATIONS_DDL)
            .await
            .map_err(|source| MigrateError::Database {
                context: "create schema_migrations",
                source,
            })?;
        let rows = tx
            .query(
                "SELECT version, checksum FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .map_err(|source| MigrateError::Database {
                context: "read schema_migrations",
                source,
            })?;
        tx.commit().await.map_err(|source| MigrateError::Database {
            context: "commit the verification transaction",
            source,
        })?;
        let recorded = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(String, String)>, tokio_postgres::Error>>()
            .map_err(|source| MigrateError::Database {
                context: "read schema_migrations (unexpected column types)",
                source,
            })?;

        for (version, checksum) in &recorded {
            let Some(m) = self.migrations.iter().find(|m| m.version() == version) else {
                return Err(MigrateError::UnknownApplied {
                    version: version.clone(),
                });
            };
            let expected = m.checksum();
            if *checksum != expected {
                return Err(MigrateError::ChecksumMismatch {
                    file: m.file.to_owned(),
                    recorded: checksum.clone(),
                    expected,
                });
            }
        }
        if let Some(latest) = recorded.iter().map(|(v, _)| v.as_str()).max() {
            if let Some(m) = self
                .migrations
                .iter()
                .find(|m| m.version() < latest && !recorded.iter().any(|(v, _)| v == m.version()))
            {
                return Err(MigrateError::PendingBeforeApplied {
                    file: m.file.to_owned(),
                    applied: latest.to_owned(),
                });
            }
        }
        Ok(recorded)
    }

    /// Bound lock waits for this transaction, then take the migration lock.
    async fn lock(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), MigrateError> {
        let ms = self.lock_timeout.as_millis().max(1);
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{ms}ms'"))
            .await
            .map_err(|source| MigrateError::Database {
                context: "set lock_timeout",
                source,
            })?;
        tx.query("SELECT pg_advisory_xact_lock($1)", &[&self.lock_key])
            .await
            .map_err(|source| {
                lock_or(source, self.lock_timeout, |source| MigrateError::Database {
                    context: "take the migration lock",
                    source,
                })
            })?;
        Ok(())
    }
}

/// Map `lock_not_available` (a `lock_timeout` expiry) to [`MigrateError::LockTimeout`].
fn lock_or(
    source: tokio_postgres::Error,
    after: Duration,
    other: impl FnOnce(tokio_postgres::Error) -> MigrateError,
) -> MigrateError {
    if source.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        MigrateError::LockTimeout { after }
    } else {
        other(source)
    }
}

/// Apply the embedded migrations (see [`Migrator::embedded`] and [`Migrator::run`]).
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, MigrateError> {
    Migrator::embedded()?.run(client).await
}

/// Split `NNNN_description.sql` into its number and description.
fn parse_name(file: &str) -> Option<(u32, &str)> {
    let stem = file.strip_suffix(".sql")?;
    let (digits, desc) = stem.split_at_checked(4)?;
    let desc = desc.strip_prefix('_')?;
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || desc.is_empty()
        || !desc
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    Some((digits.parse().ok()?, desc))
}

/// Whether a description contains a release-version token like `v1_2`.
fn looks_like_release_version(desc: &str) -> bool {
    let bytes = desc.as_bytes();
    (0..bytes.len()).any(|i| {
        let starts_token = i == 0 || bytes[i - 1] == b'_';
        if !starts_token || bytes[i] != b'v' {
            return false;
        }
        let rest = &bytes[i + 1..];
        let major = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        major > 0
            && rest.get(major) == Some(&b'_')
            && rest.get(major + 1).is_some_and(u8::is_ascii_digit)
    })
}

fn validate_order(migrations: &[Migration<'_>]) -> Result<(), MigrateError> {
    let mut previous: Option<(u32, &str)> = None;
    for m in migrations {
        let Some((number, desc)) = parse_name(m.file) else {
            return Err(MigrateError::InvalidName {
                file: m.file.to_owned(),
                reason: "expected NNNN_description.sql with [a-z0-9_] in the description",
            });
        };
        if number == 0 {
            return Err(MigrateError::InvalidName {
                file: m.file.to_owned(),
                reason: "numbers start at 0001",
            });
        }
        if looks_like_release_version(desc) {
            return Err(MigrateError::InvalidName {
                file: m.file.to_owned(),
                reason: "describe the change, not a release version (v1_2)",
            });
        }
        if let Some((prev, prev_file)) = previous {
            if number <= prev {
                return Err(MigrateError::OutOfOrder {
                    file: m.file.to_owned(),
                    previous: prev_file.to_owned(),
                });
            }
        }
        previous = Some((number, m.file));
    }
    Ok(())
}

/// Parse a `sha256sum` manifest into `(hash, file)` pairs (blank lines and `#` comments
/// skipped; a `*` binary-mode marker is accepted).
pub fn parse_manifest(manifest: &str) -> Result<Vec<(String, String)>, MigrateError> {
    let mut out = Vec::new();
    for (i, raw) in manifest.lines().enumerate() {
        let line = raw.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let bad = |reason: &str| MigrateError::Manifest {
            line: i + 1,
            reason: reason.to_owned(),
        };
        let (hash, rest) = line
            .split_once(' ')
            .ok_or_else(|| bad("expected `<sha256>  <file>`"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("hash is not 64 lowercase hex digits"));
        }
        let file = rest.trim_start_matches(' ').trim_start_matches('*');
        if file.is_empty() || file.contains('/') {
            return Err(bad("expected a bare file name"));
        }
        if out.iter().any(|(_, f): &(String, String)| f == file) {
            return Err(bad("file listed twice"));
        }
        out.push((hash.to_owned(), file.to_owned()));
    }
    Ok(out)
}

/// What the release manifest says about a list of migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseState {
    /// Files pinned in the manifest (all hashes verified).
    pub released: Vec<String>,
    /// The single open (unreleased) file, if any.
    pub open: Option<String>,
}

/// Check `migrations` against a release manifest: every pinned file exists with exactly its
/// pinned hash, and at most one file is open, the last one, numbered one past the last
/// released file.
pub fn check_released(
    manifest: &str,
    migrations: &[Migration<'_>],
) -> Result<ReleaseState, MigrateError> {
    validate_order(migrations)?;
    let pinned = parse_manifest(manifest)?;
    for (hash, file) in &pinned {
        let Some(m) = migrations.iter().find(|m| m.file == file) else {
            return Err(MigrateError::ReleasedFileMissing { file: file.clone() });
        };
        let actual = m.checksum();
        if actual != *hash {
            return Err(MigrateError::ReleasedFileEdited {
                file: file.clone(),
                pinned: hash.clone(),
                actual,
            });
        }
    }
    let open: Vec<&Migration<'_>> = migrations
        .iter()
        .filter(|m| !pinned.iter().any(|(_, f)| f == m.file))
        .collect();
    if open.len() > 1 {
        return Err(MigrateError::TooManyOpen {
            files: open.iter().map(|m| m.file.to_owned()).collect(),
        });
    }
    let open = open.first().map(|m| **m);
    if let Some(m) = open {
        let last_released = migrations
            .iter()
            .filter(|r| r.file != m.file)
            .filter_map(Migration::number)
            .max()
            .unwrap_or(0);
        let is_last = migrations.last().is_some_and(|l| l.file == m.file);
        if !is_last || m.number() != Some(last_released + 1) {
            return Err(MigrateError::OpenNotNext {
                file: m.file.to_owned(),
                expected: last_released + 1,
            });
        }
    }
    Ok(ReleaseState {
        released: migrations
            .iter()
            .filter(|m| pinned.iter().any(|(_, f)| f == m.file))
            .map(|m| m.file.to_owned())
            .collect(),
        open: open.map(|m| m.file.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    fn migrations_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations")
    }

    /// Every `.sql` file on disk is embedded, in order, with the same bytes: a new file
    /// cannot be left out of [`EMBEDDED`].
    #[test]
    fn embedded_list_matches_the_directory() {
        let mut on_disk: Vec<(String, String)> = std::fs::read_dir(migrations_dir())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".sql"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        on_disk.sort();
        let embedded: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|m| (m.file.to_owned(), m.sql.to_owned()))
            .collect();
        assert_eq!(
            on_disk.iter().map(|(f, _)| f).collect::<Vec<_>>(),
            embedded.iter().map(|(f, _)| f).collect::<Vec<_>>(),
            "migrations/*.sql and EMBEDDED differ: add the new file to EMBEDDED"
        );
        assert_eq!(on_disk, embedded, "embedded bytes differ from the files");
    }

    /// Every file is pinned in released.sha256 with its exact hash, except at most one open
    /// file numbered next (the manifest on disk is the one embedded).
    #[test]
    fn every_released_file_is_pinned_with_its_hash() {
        let on_disk = std::fs::read_to_string(migrations_dir().join("released.sha256")).unwrap();
        assert_eq!(on_disk, RELEASED_MANIFEST);
        let state = check_released(RELEASED_MANIFEST, EMBEDDED).unwrap();
        assert!(state.released.len() + usize::from(state.open.is_some()) == EMBEDDED.len());
        assert!(Migrator::embedded().is_ok());
    }

    #[test]
    fn names_are_validated() {
        for (file, ok) in [
            ("0001_baseline.sql", true),
            ("0012_add_index_2.sql", true),
            ("001_short.sql", false),
            ("0001-dash.sql", false),
            ("0001_Upper.sql", false),
            ("0001_.sql", false),
            ("0001_x.up.sql", false),
            ("0000_zero.sql", false),
            ("0002_v1_2.sql", false),
            ("0002_release_v10_0_fix.sql", false),
            ("0002_vacuum_1.sql", true),
        ] {
            let r = Migrator::new(vec![Migration::new(file, "")]);
            assert_eq!(r.is_ok(), ok, "{file}: {r:?}");
        }
        let out_of_order = Migrator::new(vec![
            Migration::new("0002_b.sql", ""),
            Migration::new("0001_a.sql", ""),
        ]);
        assert!(matches!(out_of_order, Err(MigrateError::OutOfOrder { .. })));
        let duplicate = Migrator::new(vec![
            Migration::new("0001_a.sql", ""),
            Migration::new("0001_b.sql", ""),
        ]);
        assert!(matches!(duplicate, Err(MigrateError::OutOfOrder { .. })));
    }

    #[test]
    fn release_manifest_rules() {
        let a = Migration::new("0001_a.sql", "select 1;");
        let b = Migration::new("0002_b.sql", "select 2;");
        let c = Migration::new("0003_c.sql", "select 3;");
        let pin_a = format!("{}  0001_a.sql\n", sha(a.sql));
        let pin_ab = format!("{pin_a}{}  0002_b.sql\n", sha(b.sql));

        // All released; one open file numbered next.
        let s = check_released(&pin_ab, &[a, b]).unwrap();
        assert_eq!(s.open, None);
        let s = check_released(&pin_a, &[a, b]).unwrap();
        assert_eq!(s.open.as_deref(), Some("0002_b.sql"));
        assert_eq!(s.released, vec!["0001_a.sql".to_owned()]);
        // Nothing released yet: the first file may be open.
        assert!(check_released("", &[a]).is_ok());

        // An edited released file is refused, naming it.
        let edited = Migration::new("0001_a.sql", "select 1; -- edited");
        let err = check_released(&pin_a, &[edited]).unwrap_err();
        assert!(
            matches!(err, MigrateError::ReleasedFileEdited { ref file, .. } if file == "0001_a.sql")
        );
        assert!(err.to_string().contains("0001_a.sql"));

        // Two open files, or an open file that is not next, are refused.
        assert!(matches!(
            check_released(&pin_a, &[a, b, c]),
            Err(MigrateError::TooManyOpen { .. })
        ));
        let pin_ac = format!("{pin_a}{}  0003_c.sql\n", sha(c.sql));
        assert!(matches!(
            check_released(&pin_ac, &[a, b, c]),
            Err(MigrateError::OpenNotNext { .. })
        ));
        // A pinned file that does not exist is refused.
        assert!(matches!(
            check_released(&pin_ab, &[a]),
            Err(MigrateError::ReleasedFileMissing { .. })
        ));
        // Malformed manifests are refused with a line number.
        for bad in ["nothex  0001_a.sql", &sha("x"), "# ok\n\nzz"] {
            assert!(
                matches!(
                    check_released(bad, &[a]),
                    Err(MigrateError::Manifest { .. })
                ),
                "{bad:?}"
            );
        }
        // sha256sum's binary marker and comments are accepted.
        let starred = format!("# released\n{} *0001_a.sql\n", sha(a.sql));
        assert!(check_released(&starred, &[a]).is_ok());
    }

    #[test]
    fn report_latest() {
        let mut r = MigrationReport::default();
        assert_eq!(r.latest(), None);
        r.already_applied.push("0001_a".into());
        assert_eq!(r.latest(), Some("0001_a"));
        r.applied.push(AppliedMigration {
            version: "0002_b".into(),
            checksum: String::new(),
            duration: Duration::ZERO,
        });
        assert_eq!(r.latest(), Some("0002_b"));
        assert!(!r.is_noop());
    }
}
