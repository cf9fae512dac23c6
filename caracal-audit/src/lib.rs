//! # caracal-audit
//!
//! The Caracal Audit service (port 9090): the `audit-ingestor` consumer of
//! `caracal.audit.events`, which appends every signed event to the per-zone hash chain
//! (content hash, `prev_content_sha256`, chain HMAC, dense `chain_seq`) and dead-letters what it
//! cannot ingest; plus the DLQ endpoints, search, the chain verifier endpoint, retention and
//! NDJSON export.
//!
//! The chain rules themselves (content hash, link, verifier) live in `caracal_core::audit`.
//!
//! Status: built in the Audit issue; until then this crate only holds its place.
