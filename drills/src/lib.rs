//! # caracal-drills
//!
//! The failure drills of issue #11, as tests (`tests/drills.rs`): the STS, the Audit service
//! and the Gateway run in-process on a real ephemeral Postgres and Redis of their own
//! (`caracal-test-support`), under a steady light load of STS bootstrap exchanges, while one
//! dependency at a time is broken and restored. Each drill asserts the readiness reasons
//! reported meanwhile, that nothing was allowed that should not have been, recovery once the
//! dependency returns, and that no audit event was lost or doubled (every zone's chain
//! verifies); it prints the recovery time. `docs/operating.md` is written from what they
//! observe.
//!
//! The crate also holds the Gateway's path-check fuzz target (`tests/fuzz_gateway_preflight.rs`).
//!
//! There is no library code: this file exists because a package needs a target.
