//! # caracal-service
//!
//! The scaffolding every Caracal HTTP service shares (STS, Gateway, Audit, control plane), so
//! each service is only "parse, call `caracal-core`, render".
//!
//! ## Layout
//!
//! - [`config`]: settings from the environment with `_FILE` indirection, `CARACAL_MODE`
//!   (`dev`, `rc`, `stable`), and hex HMAC keys. The environment is injected (a lookup
//!   function), so precedence is unit-tested without touching the process environment.
//! - [`http`]: [`ApiError`](caracal_core::api::ApiError) rendered as an axum response, and the
//!   request-id middleware (`X-Request-Id` echoed or a new UUIDv7, and `requestId` in every
//!   error body).
//! - [`health`]: `/health` and `/ready` answers with named reasons.
//! - [`metrics`]: the Prometheus recorder and `/metrics` behind `METRICS_BEARER`.
//! - [`server`]: binding, serving and graceful shutdown.
//!
//! ## Invariants
//!
//! - Secrets (keys, bearer tokens) are never logged or rendered; `Debug` of the types that hold
//!   them shows only their presence.
//! - Bearer tokens are compared in constant time.
//! - Published modes (`rc`, `stable`) fail closed: metrics are never open without a bearer.

pub mod config;
pub mod health;
pub mod http;
pub mod metrics;
pub mod ratelimit;
pub mod server;

pub use config::{ConfigError, Env, Mode};
pub use http::{HttpError, RequestId};
