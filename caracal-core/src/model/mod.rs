//! The wire model (placeholder).

/// A wire document could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid wire document: {0}")]
pub struct WireError(pub String);
