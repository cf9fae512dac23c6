//! The support crate's error type.

use std::time::Duration;

/// Why a test server could not be provided or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupportError {
    /// The server binaries are not installed (the skip policy decides what happens next).
    #[error("{what} not found: {hint}")]
    BinariesMissing {
        /// What is missing, e.g. `postgres server binaries (initdb, postgres)`.
        what: &'static str,
        /// Where we looked and how to install it.
        hint: String,
    },
    /// The operation is not possible on this server, e.g. `kill` on a server named by
    /// `CARACAL_TEST_DATABASE_URL` that this process does not own.
    #[error("{op} is not supported: {reason}")]
    Unsupported {
        /// The operation (`kill`, `restart`, `stop`).
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// A server did not become ready, or did not stop, in time.
    #[error("{what} timed out after {after:?}{}", log_suffix(log_tail))]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The bound that passed.
        after: Duration,
        /// The last lines of the server log, if any.
        log_tail: String,
    },
    /// A command or a server exited with an error.
    #[error("{what} failed: {detail}{}", log_suffix(log_tail))]
    Failed {
        /// What failed, e.g. `initdb`.
        what: String,
        /// Exit status or reason.
        detail: String,
        /// The last lines of the relevant log, if any.
        log_tail: String,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A SQL call against the server failed.
    #[error("{context}: {source}")]
    Sql {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A Redis reply was not what the protocol allows, or was an error reply.
    #[error("redis: {0}")]
    Redis(String),
    /// A caller-supplied value was invalid (e.g. a database name or URL).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

fn log_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- server log (tail) ---\n{}", tail.trim_end())
    }
}

impl SupportError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SupportError::Io {
            context: context.into(),
            source,
        }
    }

    /// The same failure again, for a cached start attempt (the shared cluster): a missing
    /// binary stays `BinariesMissing` so the skip policy still applies.
    pub(crate) fn replay(&self) -> Self {
        match self {
            SupportError::BinariesMissing { what, hint } => SupportError::BinariesMissing {
                what,
                hint: hint.clone(),
            },
            other => SupportError::Failed {
                what: "the shared postgres cluster".into(),
                detail: other.to_string(),
                log_tail: String::new(),
            },
        }
    }

    pub(crate) fn unsupported_external(op: &'static str, env: &str) -> Self {
        SupportError::Unsupported {
            op,
            reason: format!(
                "the server is external ({env} is set), so this process does not own it; \
                 unset {env} to let the test start its own server"
            ),
        }
    }
}
