//! The policy engine: the platform decision contract as compiled Rust, the data documents it
//! reads, the policy lifecycle and the per-zone bundle cache (reference `sts.md` §4,
//! `control-plane.md` §1.13 and §4).
//!
//! The reference evaluates every decision in OPA (~1 ms). Here the contract is native code and
//! Rego is only the *authoring syntax* of data documents (SPEC §5.8): a document's Rego is run
//! once, at load time, by [`regorus`] to obtain its data, and the data is then compiled into
//! indexes so that a decision is a handful of hash lookups with no allocation.
//!
//! ## Layout
//!
//! - [`contract`]: [`evaluate`]`(&input, &bundle) -> Evaluation`, pure and without I/O (the
//!   cedar-policy `is_authorized` shape); the [`Evaluation`] names the rule or the deny reason
//!   that decided and renders the wire [`PolicyResult`](crate::model::policy::PolicyResult) only
//!   when asked.
//! - [`data`]: the six data rules (`app_ids`, `grants`, `confinement`, `restrict`, `risk`,
//!   `approval_tiers`) as JSON documents, the merge of a bundle's documents, and
//!   [`CompiledBundle`], their compiled indexes.
//! - [`rego`]: validation of Rego data documents with the reference's `invalid_rego`
//!   descriptions, and their evaluation with `regorus` to plain data.
//! - [`lifecycle`]: policies, immutable versions, sets, set versions, activation, rollback and
//!   simulation over [`PolicyStore`](crate::store::policy::PolicyStore).
//! - [`cache`]: the per-zone compiled bundle cache (lazy load, atomic swap, invalidation,
//!   safety poll, freshness).
//!
//! ## Invariants
//!
//! - Deny by default: a request matching no allow rule is denied with `no_rule_matched`, a zone
//!   with nothing active with `no_active_policy_set`.
//! - Fail closed: an input with another `schema_version`, an input or data document over a
//!   limit, or a document that does not validate or compile is a typed [`PolicyError`], never an
//!   allow. Callers treat every error as a deny (the STS answers 503 `policy_eval_failed`).
//! - Hostile documents are bounded: sizes and counts are checked against [`limits`] while
//!   compiling, and Rego evaluation runs under a time limit.

pub mod cache;
pub mod contract;
pub mod data;
pub mod lifecycle;
pub mod rego;

pub use contract::{AllowRule, DenyReason, Evaluation, evaluate};
pub use data::{CompiledBundle, DataDocument, DataKey, DataSet};
pub use rego::RegoViolation;

use crate::store::StoreError;

/// The version of the decision contract implemented by [`contract`] (reference `sts.md` §4.3).
pub const DECISION_CONTRACT_VERSION: &str = "2026-07-12";

/// The decision contract's identity: lowercase hex SHA-256 of the source of [`contract`].
///
/// The reference hashes its embedded Rego; here the contract is compiled Rust, so its source
/// is what identifies it. Approval bindings include it, so any change to the contract's code
/// invalidates outstanding approvals (conservative: an edit that changes no decision does so
/// too). Also reported by `/metrics.json` as `decision_contract_sha256`.
pub fn decision_contract_sha256() -> &'static str {
    static SHA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA.get_or_init(|| {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(include_bytes!("contract.rs")))
    })
}

/// Bounds on documents and inputs. Exceeding one is [`PolicyError::LimitExceeded`].
///
/// They are far above any real zone (the bench zone has 100 applications and 1,000 grants) and
/// exist so that a hostile document cannot make loading or evaluation unbounded.
pub mod limits {
    /// Maximum length of one policy document, in UTF-16 code units (the reference counts
    /// JavaScript string length): 256 KiB.
    pub const MAX_CONTENT_CHARS: usize = 262_144;
    /// Maximum entries in `app_ids`.
    pub const MAX_APP_IDS: usize = 10_000;
    /// Maximum entries in `grants`.
    pub const MAX_GRANTS: usize = 100_000;
    /// Maximum roles of one grant.
    pub const MAX_ROLES_PER_GRANT: usize = 256;
    /// Maximum scopes of one role, one confinement rule, or one list in the input.
    pub const MAX_SCOPES_PER_LIST: usize = 1_024;
    /// Maximum entries in `confinement`.
    pub const MAX_CONFINEMENT_RULES: usize = 1_024;
    /// Maximum entries in `risk`.
    pub const MAX_RISK_ENTRIES: usize = 10_000;
    /// Maximum entries in `approval_tiers`.
    pub const MAX_APPROVAL_TIERS: usize = 1_024;
    /// Maximum length in bytes of any key, scope, label, tier or identifier in data or input.
    pub const MAX_STRING_BYTES: usize = 4_096;
    /// Maximum length in bytes of the `scope` claim of a presented mandate.
    pub const MAX_SCOPE_CLAIM_BYTES: usize = 65_536;
    /// Maximum labels of the principal.
    pub const MAX_LABELS: usize = 256;
    /// Maximum policy versions in a set version's manifest.
    pub const MAX_MANIFEST_ENTRIES: usize = 256;
    /// Wall-clock limit of the Rego evaluation of one data rule of a bundle, in milliseconds
    /// (so at most six times this per bundle).
    pub const REGO_EVAL_MILLIS: u64 = 2_000;
}

/// Everything that can go wrong in the policy engine. Every variant fails closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The input's `schema_version` is not
    /// [`POLICY_INPUT_SCHEMA_VERSION`](crate::model::policy::POLICY_INPUT_SCHEMA_VERSION): an
    /// evaluation error (503 `policy_eval_failed`), not a deny.
    #[error("unsupported policy input schema_version {found:?}")]
    SchemaVersion {
        /// The version found.
        found: String,
    },
    /// A policy document is not a valid data document (422 `invalid_rego`); the violation's
    /// [`RegoViolation::description`] is the reference's `error_description`.
    #[error("invalid_rego: {0}")]
    InvalidRego(#[from] RegoViolation),
    /// A data rule has the wrong shape (e.g. a grant without `application`).
    #[error("invalid data document: {0}")]
    InvalidData(String),
    /// Two documents of one bundle define the same data rule.
    #[error("data rule `{key}` is defined by more than one document ({first} and {second})")]
    DuplicateDataKey {
        /// The rule.
        key: DataKey,
        /// Label of the first document defining it.
        first: String,
        /// Label of the second.
        second: String,
    },
    /// A size or count bound was exceeded.
    #[error("limit exceeded: {what} (max {limit})")]
    LimitExceeded {
        /// What was too large.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// The Rego interpreter failed while computing a document's data.
    #[error("rego evaluation failed: {0}")]
    RegoEval(String),
    /// A set version manifest or its policy versions break the set rules (422
    /// `invalid_policy_contract`).
    #[error("invalid_policy_contract: {0}")]
    InvalidPolicyContract(String),
    /// A set version's merged bundle does not compile (422 `invalid_policy_bundle`).
    #[error("invalid_policy_bundle: {0}")]
    InvalidPolicyBundle(String),
    /// A stored manifest does not hash to its `manifest_sha256`.
    #[error("manifest_sha256 mismatch for policy set version {version_id}")]
    ManifestMismatch {
        /// The set version.
        version_id: String,
    },
    /// The record does not exist in this zone.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A policy name in the reserved `caracal.sys/` namespace (409 `reserved_namespace`).
    #[error("reserved_namespace: policy names starting with caracal.sys/ are reserved")]
    ReservedNamespace,
    /// A configuration value is out of range (e.g. `OPA_POLL_SECONDS`).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PolicyError {
    /// The reference's wire error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::SchemaVersion { .. }
            | PolicyError::RegoEval(_)
            | PolicyError::LimitExceeded { .. }
            | PolicyError::ManifestMismatch { .. } => "policy_eval_failed",
            PolicyError::InvalidRego(_) => "invalid_rego",
            PolicyError::InvalidData(_) | PolicyError::DuplicateDataKey { .. } => {
                "invalid_policy_bundle"
            }
            PolicyError::InvalidPolicyContract(_) => "invalid_policy_contract",
            PolicyError::InvalidPolicyBundle(_) => "invalid_policy_bundle",
            PolicyError::NotFound(what) => match *what {
                "policy" => "policy_not_found",
                "policy_set" => "policy_set_not_found",
                "policy_set_version" => "version_not_found",
                _ => "not_found",
            },
            PolicyError::ReservedNamespace => "reserved_namespace",
            PolicyError::Config(_) => "invalid_configuration",
            PolicyError::Store(StoreError::NotFound { .. }) => "not_found",
            PolicyError::Store(StoreError::Conflict { constraint }) => match *constraint {
                "policy_set_name" => "policy_set_name_conflict",
                "policy_name" => "policy_name_conflict",
                _ => "conflict",
            },
            PolicyError::Store(_) => "policy_verification_unavailable",
        }
    }

    /// The `error_description` the reference renders: the violation code for `invalid_rego`,
    /// the message otherwise.
    pub fn description(&self) -> String {
        match self {
            PolicyError::InvalidRego(v) => v.description(),
            PolicyError::InvalidPolicyContract(m) | PolicyError::InvalidPolicyBundle(m) => {
                m.clone()
            }
            other => other.to_string(),
        }
    }

    /// Whether retrying may succeed (only a store that could not be reached).
    pub fn is_retryable(&self) -> bool {
        matches!(self, PolicyError::Store(e) if e.is_retryable())
    }
}
