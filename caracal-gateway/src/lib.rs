//! # caracal-gateway
//!
//! The Caracal Gateway (port 8081): a reverse proxy where authority is used. An agent sends an
//! ordinary HTTP request carrying a one-shot `use=gateway` mandate and `X-Caracal-Resource`;
//! the Gateway verifies the mandate (signature, zone JWKS, claims, single use by `jti`),
//! re-exchanges it with the STS for a `use=resource` mandate and an upstream directive, injects
//! the upstream credential, and streams the request to the upstream. The agent never holds the
//! upstream credential.
//!
//! Status: built in the Gateway issue; until then this crate only holds its place.
