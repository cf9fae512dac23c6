//! Approvals (human step-up holds; table `step_up_challenges` in the reference).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The only approval type the decision contract emits (`approval_type` on the wire).
pub const HUMAN_APPROVAL: &str = "human_approval";

/// Who may decide an approval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApproverClass {
    /// An operator with an approve-capability admin token.
    #[default]
    Operator,
    /// The federated subject themselves.
    Subject,
    /// Either.
    Any,
}

/// How much of the requester an approver sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivacyMode {
    /// Full identity.
    #[default]
    Identified,
    /// A stable pseudonym.
    Pseudonymous,
    /// Nothing.
    Anonymous,
}

/// The derived state of an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalState {
    /// Waiting for a decision.
    Pending,
    /// Approved and not yet consumed.
    Approved,
    /// Rejected (terminal).
    Rejected,
    /// Expired before it was decided or consumed.
    Expired,
    /// Consumed by exactly one mandate (terminal).
    Consumed,
}

/// An approval row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// Approval id (UUID; the id is the capability for polling).
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// Authority record of the requester (empty for none).
    #[serde(default)]
    pub session_id: String,
    /// The requesting principal.
    pub principal_id: String,
    /// The requesting application.
    pub application_id: String,
    /// Always `human_approval`.
    pub approval_type: String,
    /// Comma-joined tiers.
    #[serde(default)]
    pub tier: String,
    /// Who may decide.
    #[serde(default)]
    pub approver_class: ApproverClass,
    /// What the approver sees.
    #[serde(default)]
    pub privacy_mode: PrivacyMode,
    /// The subject anchor, for subject approvals.
    #[serde(default)]
    pub subject_anchor: Option<String>,
    /// Hex SHA-256 binding over the request it approves.
    pub binding: String,
    /// Request facts shown to the approver.
    #[serde(default)]
    pub metadata_json: Map<String, Value>,
    /// Decision reason (≤500 characters).
    #[serde(default)]
    pub decision_reason: Option<String>,
    /// Who decided.
    #[serde(default)]
    pub approver_subject_id: Option<String>,
    /// The approver's authority record, on a subject-plane decision: kept whatever the
    /// privacy mode hides of the approver, as the forensic and revocation anchor.
    #[serde(default)]
    pub approver_session_id: Option<String>,
    /// Creation time.
    #[serde(with = "super::time::iso_ms")]
    pub created_at: DateTime<Utc>,
    /// Expiry.
    #[serde(with = "super::time::iso_ms")]
    pub expires_at: DateTime<Utc>,
    /// When approved.
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub satisfied_at: Option<DateTime<Utc>>,
    /// When rejected.
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub rejected_at: Option<DateTime<Utc>>,
    /// When consumed.
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub consumed_at: Option<DateTime<Utc>>,
    /// The authority record minted when consumed.
    #[serde(default)]
    pub consumed_authority_record_id: Option<String>,
}

impl ApproverClass {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ApproverClass::Operator => "operator",
            ApproverClass::Subject => "subject",
            ApproverClass::Any => "any",
        }
    }
}

impl PrivacyMode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            PrivacyMode::Identified => "identified",
            PrivacyMode::Pseudonymous => "pseudonymous",
            PrivacyMode::Anonymous => "anonymous",
        }
    }

    /// How protective the mode is: a merge of several tiers keeps the highest.
    pub fn rank(self) -> u8 {
        match self {
            PrivacyMode::Identified => 0,
            PrivacyMode::Pseudonymous => 1,
            PrivacyMode::Anonymous => 2,
        }
    }
}

impl ApprovalState {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::Expired => "expired",
            ApprovalState::Consumed => "consumed",
        }
    }
}

impl Approval {
    /// The state at `now`, with the reference's precedence:
    /// consumed > rejected > expired > approved > pending.
    pub fn state(&self, now: DateTime<Utc>) -> ApprovalState {
        if self.consumed_at.is_some() {
            ApprovalState::Consumed
        } else if self.rejected_at.is_some() {
            ApprovalState::Rejected
        } else if self.expires_at <= now {
            ApprovalState::Expired
        } else if self.satisfied_at.is_some() {
            ApprovalState::Approved
        } else {
            ApprovalState::Pending
        }
    }
}
