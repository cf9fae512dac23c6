//! # caracal-core
//!
//! The Caracal authority engine as a library: everything that decides, signs, chains or
//! checks lives here, behind storage and stream traits, with no sockets and no servers. The
//! service crates (`caracal-sts`, `caracal-gateway`, `caracal-audit`, `caracal-control`) only
//! parse, call and render; a host application can run the same engine in-process.
//!
//! ## Layout
//!
//! - [`model`]: the wire model. Policy input and result, token response and upstream directive,
//!   revocation event, and the domain records (zone, application, resource, provider, authority
//!   record, session, delegation edge, approval, policy version / set / set version). serde
//!   names are the reference system's wire names.
//! - [`policy`]: the decision contract as compiled Rust, Rego/JSON data documents, the policy
//!   lifecycle and the per-zone bundle cache.
//! - [`mandate`]: the mandate JWT: claims, lifetimes, zone key ring, mint, verify, JWKS.
//! - [`audit`]: the audit event, the content hash over the Postgres-`jsonb`-normalised stored
//!   form, the chain link `HMAC(content | prev)`, and a pure chain verifier.
//! - [`streams`]: stream names and groups, the `_sig` origin signature, and the [`streams::Streams`]
//!   trait with its in-memory implementation (consumer groups, pending lists, claims).
//! - [`coordinator`]: the Coordinator's rules: sessions and service leases, delegation edges
//!   with narrowing, cycle refusal and the per-zone graph epoch, cascading revoke/terminate,
//!   each change written with its outbox events in one unit of work.
//! - [`store`]: the storage traits for the aggregates the services need, and the in-memory
//!   implementation of each.
//! - [`secrets`]: Argon2id client-secret hashing and the CSS1 envelope sealing under a KEK.
//! - [`clock`] and [`ids`]: injected time and UUIDv7 ids, so tests are deterministic.
//! - [`api`]: the error shape every HTTP surface renders.
//! - [`error`]: this crate's error type.
//!
//! ## Invariants
//!
//! - Fail closed: an error on a path that grants authority denies; it never allows.
//! - No panics on input: every parser returns a typed error.
//! - Secrets and MACs are compared in constant time.

pub mod api;
pub mod audit;
pub mod backend;
pub mod clock;
pub mod coordinator;
pub mod embed;
pub mod error;
pub mod exchange;
pub mod ids;
pub mod jobs;
pub mod mandate;
pub mod model;
pub mod policy;
pub mod secrets;
pub mod store;
pub mod streams;

pub use error::{Error, Result};
