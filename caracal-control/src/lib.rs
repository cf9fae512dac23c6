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
//! Status: built in the Control-plane issue; until then this crate only holds its place.
