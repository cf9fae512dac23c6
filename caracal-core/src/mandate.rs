//! Mandate claims (placeholder).
