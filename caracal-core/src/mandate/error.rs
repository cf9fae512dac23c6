//! Typed errors of minting, verifying and key management.
//!
//! No variant carries key material or token bytes: a token is attacker-controlled input and a
//! private key is a secret, so errors name only the *kind* of failure (and, for key rows, the
//! public `kid`), and can be logged as they are.

use crate::secrets::SecretError;
use crate::store::StoreError;

use super::claims::MandateUse;

/// Why a mandate could not be minted, verified, or its keys loaded.
///
/// Verification failures (everything from [`MandateError::TooLarge`] to
/// [`MandateError::KeySetUnavailable`]) all render as `invalid_token` (reference `sts.md` §3.6:
/// "any failure → treated as invalid token"), except the two checks only a resource-side
/// verifier makes ([`MandateError::MissingScope`], [`MandateError::Revoked`], see
/// [`MandateError::code`]); a resource-side verifier also renders
/// [`MandateError::ZoneMismatch`] as `invalid_zone` (see [`MandateError::verifier_code`]).
/// The variants exist so logs and tests can tell the reasons apart; the wire never does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MandateError {
    /// The token is longer than [`super::MAX_TOKEN_BYTES`]; checked before anything else.
    #[error("token too large ({len} bytes, limit {limit})")]
    TooLarge {
        /// The presented length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a compact JWS, or a header that is not valid base64url JSON.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not `ES256` (`none`, `HS256` and every other algorithm are refused
    /// before any key is looked up).
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    /// The header has no (or an empty) `kid`.
    #[error("token has no kid")]
    MissingKid,
    /// The `kid` is not in the zone's verification set.
    #[error("unknown signing key")]
    UnknownKid,
    /// The signature does not verify under the named key.
    #[error("bad token signature")]
    BadSignature,
    /// The payload is not a valid mandate claim set (missing or mistyped claims).
    #[error("malformed token claims")]
    MalformedClaims,
    /// A claim that must be a non-empty string is empty.
    #[error("token claim {0} is empty")]
    EmptyClaim(&'static str),
    /// `iss` is not the expected issuer.
    #[error("wrong token issuer")]
    WrongIssuer,
    /// `aud` does not contain the expected audience.
    #[error("wrong token audience")]
    WrongAudience,
    /// `exp` is in the past beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `iat` is in the future beyond the leeway, or negative.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// The `zone_id` claim is not the verifying zone.
    #[error("token zone mismatch")]
    ZoneMismatch,
    /// The `use` claim is not the class this verifier accepts.
    #[error("wrong mandate class (expected {expected}, got {found})")]
    WrongUse {
        /// The class the verifier accepts.
        expected: &'static str,
        /// The class the token carries.
        found: &'static str,
    },
    /// A scope the resource requires is not in the token's `scope` (exact, space-delimited
    /// membership; an empty required scope never matches). Rendered `insufficient_scope`
    /// (403) by a resource-side verifier.
    #[error("missing scope: {scope}")]
    MissingScope {
        /// The first required scope that is missing.
        scope: String,
    },
    /// One of the token's revocation anchors (`sid`, `root_sid`, `agent_session_id`,
    /// `delegation_edge_id`) has been revoked. Rendered `session_revoked` (401).
    #[error("session revoked")]
    Revoked,
    /// The zone's verification keys could not be loaded (store down, or a key row that does
    /// not decrypt or parse). Verification fails closed.
    #[error("verification keys unavailable: {0}")]
    KeySetUnavailable(#[source] Box<MandateError>),

    /// The zone has no signing key yet (the JWKS answers 404; only issuance creates one).
    #[error("zone has no signing keys")]
    NoKeys,
    /// A stored key row did not decrypt or did not parse as a P-256 private key.
    #[error("signing key {kid} is unusable")]
    KeyMaterial {
        /// The row's key id.
        kid: String,
    },
    /// Every key row of the zone failed to decrypt or parse (the JWKS answers 500).
    #[error("no usable signing key")]
    NoUsableKeys,
    /// Sealing or opening a key under the KEK failed.
    #[error("key custody failure: {0}")]
    Secret(#[from] SecretError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key was rotated but the `caracal.keys.invalidate` message could not be enqueued;
    /// other replicas see the new key when their caches expire (at most 15 minutes).
    #[error("key {kid} rotated but invalidation not enqueued: {source}")]
    InvalidationNotQueued {
        /// The new key id (the rotation itself took effect).
        kid: String,
        /// The outbox failure.
        #[source]
        source: StoreError,
    },
    /// Key generation or signing failed inside the crypto library.
    #[error("crypto operation failed")]
    Crypto,
    /// The claims could not be serialised.
    #[error("claims not serialisable")]
    Serialize,
    /// A JWKS document is malformed, too large, or has no usable key.
    #[error("invalid JWKS: {0}")]
    Jwks(&'static str),
}

impl MandateError {
    /// The reference error code (STS and Gateway spelling): `invalid_token` for every
    /// verification failure; `resource_not_found` when the zone has no keys (JWKS 404);
    /// `internal_error` for key custody, store and crypto failures on the issuing side.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoKeys => "resource_not_found",
            Self::MissingScope { .. } => "scope_insufficient",
            Self::Revoked => "session_revoked",
            Self::KeyMaterial { .. }
            | Self::NoUsableKeys
            | Self::Secret(_)
            | Self::Store(_)
            | Self::InvalidationNotQueued { .. }
            | Self::Crypto
            | Self::Serialize => "internal_error",
            _ => "invalid_token",
        }
    }

    /// The code a resource-side verifier renders (reference `gateway.md` §7.2): as
    /// [`Self::code`] for token failures, except `invalid_zone` for a zone mismatch.
    pub fn verifier_code(&self) -> &'static str {
        match self {
            Self::ZoneMismatch => "invalid_zone",
            Self::MissingScope { .. } => "insufficient_scope",
            Self::Revoked => "session_revoked",
            _ if self.is_rejection() => "invalid_token",
            _ => self.code(),
        }
    }

    /// Whether this error is a verdict on the presented token (or on the keys needed to judge
    /// it), i.e. the token must be refused.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. }
                | Self::Malformed
                | Self::UnsupportedAlgorithm
                | Self::MissingKid
                | Self::UnknownKid
                | Self::BadSignature
                | Self::MalformedClaims
                | Self::EmptyClaim(_)
                | Self::WrongIssuer
                | Self::WrongAudience
                | Self::Expired
                | Self::IssuedInFuture
                | Self::ZoneMismatch
                | Self::WrongUse { .. }
                | Self::MissingScope { .. }
                | Self::Revoked
                | Self::KeySetUnavailable(_)
        )
    }

    pub(crate) fn wrong_use(expected: MandateUse, found: MandateUse) -> Self {
        Self::WrongUse {
            expected: expected.as_str(),
            found: found.as_str(),
        }
    }
}
