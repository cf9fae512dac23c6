//! Mandates: the short-lived ES256 JWTs the STS issues.
//!
//! A mandate carries the result of a policy decision: who (`sub`, `client_id`), where
//! (`zone_id`, `target`), what (`scope`), for which execution (`agent_session_id`) and through
//! which delegation lineage (`delegation_path`, `delegation_chain`, `hop_count`,
//! `delegation_graph_epoch`), anchored to revocable authority records (`sid`, `root_sid`).
//!
//! - [`claims`]: the claim set with the reference's JSON names.
//!
//! Signing, verification, the key ring and JWKS arrive with the STS.

pub mod claims;

pub use claims::{Audience, ChainHop, MandateClaims, MandateUse};
