//! Mandates: the short-lived ES256 JWTs the STS issues.
//!
//! A mandate carries the result of a policy decision: who (`sub`, `client_id`), where
//! (`zone_id`, `target`), what (`scope`), for which execution (`agent_session_id`) and through
//! which delegation lineage (`delegation_path`, `delegation_chain`, `hop_count`,
//! `delegation_graph_epoch`), anchored to revocable authority records (`sid`, `root_sid`).
//!
//! ## Layout
//!
//! - [`claims`]: the claim set with the reference's JSON names.
//! - [`lifetime`]: TTL defaults, caps and delegation capping (`sts.md` §3.3), `iat`/`exp`
//!   and `jti`, as pure functions.
//! - [`keys`]: the zone key ring ([`ZoneKeys`]): lazily generated P-256 keys sealed under the
//!   KEK, rotation with a 24 h overlap and `caracal.keys.invalidate`, private- and public-key
//!   caches.
//! - [`sign`]: [`mint`], claims to a compact ES256 JWS with `kid`.
//! - [`verify`](mod@verify): [`verify()`](fn@verify) against a zone's key set and a
//!   [`VerifyPolicy`].
//! - [`jwks`]: the JWKS document and its parser for remote verifiers.
//! - [`remote`]: the resource-side verifier ([`remote::RemoteVerifier`]): cached JWKS with a
//!   bounded forced refetch, required scopes, and a revocation set fed by
//!   `caracal.sessions.revoke`.
//! - [`error`]: [`MandateError`], one typed error for all of the above.
//!
//! ## Invariants
//!
//! - A private key never appears in `Debug` output, an error or a log line (only its `kid`).
//! - Verification never panics and fails closed: any doubt about the token or the keys is a
//!   [`MandateError`].
//! - Only ES256 is accepted; the algorithm is checked before any key is looked up.

pub mod claims;
pub mod error;
pub mod jwks;
pub mod keys;
#[cfg(feature = "tower")]
pub mod layer;
pub mod lifetime;
pub mod remote;
pub mod sign;
pub mod verify;

pub use claims::{Audience, ChainHop, MandateClaims, MandateUse};
pub use error::MandateError;
pub use jwks::{Jwk, Jwks, parse_jwks};
pub use keys::{SigningKey, VerificationKey, VerificationKeys, ZoneKeys};
pub use lifetime::{DelegationLimits, TtlError};
pub use sign::mint;
pub use verify::{MAX_TOKEN_BYTES, SignatureProof, VerifyPolicy, verify, verify_signature};
