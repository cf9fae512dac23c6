//! Subcommands and their shared error type.

pub mod audit;
pub mod bench;
pub mod demo;
pub mod doctor;
pub mod migrate;
pub mod policy;
pub mod status;
pub mod streams;
pub mod up;

use caracal_core::backend::postgres::migrate::MigrateError;

/// Why a command failed. Rendered as `error: <message>` with exit code 1; messages never
/// contain secrets (database URLs are shown with their password redacted).
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// A required setting is missing or unusable.
    #[error("{0}")]
    Config(String),
    /// The database could not be reached.
    #[error("cannot connect to Postgres at {url}: {reason}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// Migrating failed or was refused.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// Redis could not be reached, or refused a command.
    #[error("Redis at {url}: {reason}")]
    Redis {
        /// The URL, password redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// `caracal streams provision|verify` found streams or groups missing or unusable; the
    /// message names each one.
    #[error("{0}")]
    Streams(String),
    /// `caracal policy` refused a document or an input (`<code>: <description>`), or could
    /// not read a file.
    #[error("{0}")]
    Policy(String),
    /// `caracal audit verify` found problems in the ledger; the message names each zone.
    #[error("{0}")]
    Audit(String),
    /// `caracal demo` met an unexpected outcome; the message names the step.
    #[error("demo failed: {0}")]
    Demo(String),
    /// `caracal status --ready`: some service is not ready (named).
    #[error("{0}")]
    Status(String),
    /// `caracal doctor` found failing checks; the table on stdout names each with its action.
    #[error("{0}")]
    Doctor(String),
    /// `caracal bench` could not set up or run (why).
    #[error("bench: {0}")]
    Bench(String),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Run a command future on a current-thread runtime.
pub fn block_on<F>(fut: F) -> Result<(), CmdError>
where
    F: std::future::Future<Output = Result<(), CmdError>>,
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CmdError::Runtime)?
        .block_on(fut)
}
