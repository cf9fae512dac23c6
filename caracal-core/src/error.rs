//! The crate's error type.
//!
//! Each area has its own typed error ([`crate::model::WireError`],
//! [`crate::streams::StreamError`], [`crate::store::StoreError`],
//! [`crate::secrets::SecretError`], [`crate::audit::AuditError`]); [`Error`] gathers them so a caller that does not care
//! which area failed can use one type with `?`.

/// Any error of `caracal-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A wire document could not be parsed or violated the wire model.
    #[error(transparent)]
    Wire(#[from] crate::model::WireError),
    /// A stream operation failed.
    #[error(transparent)]
    Stream(#[from] crate::streams::StreamError),
    /// A storage operation failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Sealing, opening or hashing a secret failed.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// An audit event or chain operation failed.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl Error {
    /// Whether retrying the same operation may succeed (a backend was unreachable).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Stream(e) => e.is_retryable(),
            Error::Store(e) => e.is_retryable(),
            Error::Wire(_) | Error::Secret(_) | Error::Audit(_) => false,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
