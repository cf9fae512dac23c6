//! The STS token exchange (reference `sts.md` §2): RFC 8693 framing, client and Gateway
//! authentication, session and delegation checks, the per-resource policy loop, approvals,
//! and minting. Every failure a caller can see is an [`ApiError`](crate::api::ApiError) in the
//! reference's error shape, with the reference's status, code and description.
//!
//! ## Layout
//!
//! - [`form`]: the strict form-body reader and the token request fields (§2.1).
//! - [`envelope`]: the Gateway→STS HMAC envelope and its single-use nonce (§2.2, §7.2).
//! - [`ratelimit`]: the authentication brute-force gate and the per-resource mint limit (§7.1).
//! - [`lineage`]: authority-record, Session and delegation checks at exchange time (§6.3).
//! - [`approval`]: human approval holds: binding hash, tier merge, issue, retry, consume,
//!   and the subject decision plane (§1.3, §1.4, §4.6).
//! - [`directive`]: the upstream directive of a granted resource (Gateway path).
//! - [`Sts`]: the engine that runs an exchange through all of the above.
//! - [`revocation`]: the STS stream consumers' handlers (§6.1, §4.5, §5.1).

pub mod approval;
mod audit;
pub mod directive;
mod engine;
pub mod envelope;
pub mod form;
pub mod lineage;
pub mod ratelimit;
pub mod revocation;

/// The result of an exchange step: a caller-visible error in the reference's shape.
pub type ExchangeResult<T> = Result<T, crate::api::ApiError>;

pub use audit::{JTI_COLLISION, STEP_UP_CONSUMED, STEP_UP_ISSUED, TOKEN_EXCHANGE};
pub use engine::{
    DEFAULT_CONTROL_AUDIENCE, DEFAULT_SECRET_VERIFY_CONCURRENCY, INVALID_CLIENT, JTI_KEY_PREFIX,
    Sts, StsConfig, StsParts, StsStores, TokenRequest,
};
