//! # caracal-examples
//!
//! Runnable examples of embedding `caracal-core` in a host application
//! (`cargo run -p caracal-examples --example <name>`). Each example uses only the public API
//! of the core crate and the in-memory backends, so it runs without Postgres or Redis.
