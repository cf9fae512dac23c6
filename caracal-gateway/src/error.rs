//! The Gateway's errors: [`Deny`], a refusal on the proxy path rendered as the reference error
//! body (§1.1), and [`GatewayError`], why the service could not start.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use caracal_core::api::ApiError;

use crate::metrics::Counters;

/// Which denial counter a pre-flight refusal increments (`caracal_gateway_denials_*_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Check 1.
    RevocationStale,
    /// Check 2.
    MissingAuth,
    /// Checks 3, 4.
    BadBearer,
    /// Check 5.
    Expiring,
    /// Checks 6–9.
    BadRouting,
    /// Check 10.
    PathTraversal,
    /// Check 11.
    Signature,
    /// Check 12.
    JtiReplay,
    /// Check 13.
    Revoked,
    /// Check 14 and STS failures (counted as `sts_exchange_errors`).
    Sts,
}

impl Denial {
    /// The counter it increments (`sts_exchange_errors` for STS failures).
    pub fn counter(self, c: &Counters) -> &AtomicU64 {
        match self {
            Denial::RevocationStale => &c.denials_revocation_stale,
            Denial::MissingAuth => &c.denials_missing_auth,
            Denial::BadBearer => &c.denials_bad_bearer,
            Denial::Expiring => &c.denials_expiring,
            Denial::BadRouting => &c.denials_bad_routing,
            Denial::PathTraversal => &c.denials_path_traversal,
            Denial::Signature => &c.denials_signature,
            Denial::JtiReplay => &c.denials_jti_replay,
            Denial::Revoked => &c.denials_revoked,
            Denial::Sts => &c.sts_exchange_errors,
        }
    }
}

/// A refusal on the proxy path: status, `error`, `error_description`, and the counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// HTTP status.
    pub status: u16,
    /// `error`.
    pub code: Cow<'static, str>,
    /// `error_description`.
    pub description: Cow<'static, str>,
    /// The denial counter (`None`: post-exchange failures count as `upstream_errors`).
    pub denial: Option<Denial>,
}

impl Deny {
    /// A pre-flight refusal.
    pub fn new(status: u16, code: &'static str, description: &'static str, denial: Denial) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            description: Cow::Borrowed(description),
            denial: Some(denial),
        }
    }

    /// A refusal after the exchange (counted as an upstream error, not a denial).
    pub fn upstream(status: u16, code: &'static str, description: &'static str) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            description: Cow::Borrowed(description),
            denial: None,
        }
    }

    /// The error body (the request id is added by the renderer).
    pub fn to_api(&self) -> ApiError {
        let e = ApiError::new(self.status, self.code.clone().into_owned());
        if self.description.is_empty() {
            e
        } else {
            e.with_description(self.description.clone().into_owned())
        }
    }
}

/// Why the Gateway could not start or serve. Messages never carry secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] caracal_service::ConfigError),
    /// A backend (Postgres, Redis) could not be opened.
    #[error("backend: {0}")]
    Backend(String),
    /// The initial revocation snapshot failed (startup is refused, reference §5.2).
    #[error("initial revocation snapshot: {0}")]
    Snapshot(String),
    /// The audit replay directory is unusable.
    #[error("audit replay directory: {0}")]
    Replay(String),
    /// Binding or serving failed.
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
}
