//! Storage traits (placeholder).
