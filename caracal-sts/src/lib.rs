//! # caracal-sts
//!
//! The HTTP surface of the Caracal Security Token Service (port 8080): the RFC 8693 token
//! endpoint `POST /oauth/2/token`, the per-zone JWKS at `/.well-known/jwks.json?zone_id=`,
//! the approval long-poll, `/health`, `/ready` and `/metrics`, and the STS's stream consumers
//! (`caracal.sessions.revoke`, `caracal.policy.invalidate`, `caracal.keys.invalidate`).
//!
//! This crate only parses requests, calls [`caracal_core`] (`exchange`, `mandate`) and renders
//! responses; the decision logic lives in the core so a host can run it in-process.
//!
//! Status: the exchange surface is built in the STS issue; until then this crate only holds
//! its place in the workspace.
