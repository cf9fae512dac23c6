//! The crate's error type.
//!
//! Each area has its own typed error (`streams::StreamError`, `store::StoreError`,
//! `secrets::SecretError`, `audit::AuditError`, `model::WireError`); [`Error`] gathers them so a
//! caller that does not care which area failed can use one type with `?`.

/// Any error of `caracal-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A wire document could not be parsed or violated the wire model.
    #[error(transparent)]
    Wire(#[from] crate::model::WireError),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
