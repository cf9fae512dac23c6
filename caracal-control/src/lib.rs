//! # caracal-control
//!
//! The HTTP surfaces of the control plane: the Coordinator (port 4000: sessions, which the wire
//! calls "agents", delegation edges, cascade revocation, effective authority) and the Admin API
//! (port 3000, prefix `/v1`: zones, applications, resources, providers, policies and policy
//! sets, approvals, admin tokens), with the transactional outbox dispatcher and the sweepers.
//!
//! The rules live in `caracal_core` (`coordinator`, the model operations); this crate parses,
//! calls and renders.
//!
//! ## Layout
//!
//! - [`config`]: the settings from the environment (the Admin API's `SECRET_STORE_KEK`,
//!   `CARACAL_BOOTSTRAP_ADMIN_TOKEN`; the binary's ports, keys and backends).
//! - [`admin`]: the Admin API: the admin-token gate, zones, applications, resources,
//!   providers, admin tokens, policies and policy sets (validate, versions, simulate,
//!   activate, activation status), approvals (operator decisions through the same core
//!   functions as the STS subject plane), the subject kill switch, and its OpenAPI 3 document
//!   at `/openapi.json`.
//!
//! - [`coordinator`]: the Coordinator's HTTP surface (port 4000) over
//!   `caracal_core::coordinator`: session-mandate authentication (and the operator token on
//!   its allowlist), sessions (start with `Idempotency-Key`, read, suspend, resume, terminate,
//!   lease, heartbeat, effective authority), delegations (create with `Idempotency-Key`,
//!   revoke with cascade, traverse, impact) and its OpenAPI document at `/openapi.json`.
//!
//! - [`audit`]: the admin audit chain both surfaces record every successful mutation on
//!   (one middleware; `500 audit_unavailable` when the record cannot be written).
//! - [`service`]: the `caracal-control` binary's service: both APIs over Postgres and Redis
//!   with the outbox relay ([`serve`], [`serve_on`]).
//!
//! Not yet here: agent services and invocations, and the sweepers (they start in
//! [`ControlService::spawn_workers`]).
//!
//! Embedding: build [`admin::AdminApi::new`] over [`admin::AdminStores::from_store`] (a
//! `MemoryStore` or a `PgStore`) and mount [`admin::AdminApi::router`].

pub mod admin;
pub mod audit;
pub mod config;
pub mod coordinator;
pub mod service;

pub use admin::{AdminApi, AdminStores};
pub use config::{AdminSettings, ControlSettings};
pub use coordinator::{CoordinatorApi, CoordinatorSettings};
pub use service::{ControlService, ServeError, serve, serve_on};
