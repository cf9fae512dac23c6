//! In-memory implementations (placeholder).
