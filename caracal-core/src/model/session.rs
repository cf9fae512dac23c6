//! Sessions ("agents" on the wire): governed executions under an application, the unit of
//! attribution. Owned by the Coordinator.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Task sessions live for a TTL; service sessions hold a lease renewed by heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Bounded by `ttl_seconds`.
    #[default]
    Task,
    /// Bounded by a lease with fencing generations.
    Service,
}

impl Lifecycle {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Task => "task",
            Lifecycle::Service => "service",
        }
    }
}

/// Status of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// Running.
    Active,
    /// Suspended with its subtree; may resume.
    Suspended,
    /// Terminated (terminal).
    Terminated,
    /// TTL expired (terminal).
    Expired,
}

impl SessionStatus {
    /// Whether no transition leaves this status.
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionStatus::Terminated | SessionStatus::Expired)
    }
}

/// A session row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Session id.
    pub agent_session_id: String,
    /// Zone.
    pub zone_id: String,
    /// The application it runs under.
    pub application_id: String,
    /// Parent session.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// The authority record of its subject.
    pub subject_authority_record_id: String,
    /// Task or service.
    pub lifecycle: Lifecycle,
    /// Labels (≤32, each 1..64 characters); the policy uses them as role keys.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Status.
    pub status: SessionStatus,
    /// Depth in the session tree (root 0, max 10).
    #[serde(default)]
    pub depth: i32,
    /// Task TTL (1..86400); null for service sessions.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// Caller metadata.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Start time.
    #[serde(with = "super::time::iso_ms")]
    pub started_at: DateTime<Utc>,
    /// Set iff the status is terminal.
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub terminated_at: Option<DateTime<Utc>>,
    /// Why it ended (`requested`, `parent_terminated`, `ttl`, `delegation_revoked`, ...).
    #[serde(default)]
    pub termination_reason: Option<String>,
    /// Last heartbeat (service).
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Lease deadline (service).
    #[serde(default, with = "super::time::iso_ms_opt")]
    pub heartbeat_deadline_at: Option<DateTime<Utc>>,
    /// Fencing generation (service starts at 1, task 0).
    #[serde(default)]
    pub lease_generation: i64,
    /// Live children.
    #[serde(default)]
    pub child_count: i32,
    /// Child limit (10).
    #[serde(default = "default_max_children")]
    pub max_children: i32,
}

fn default_max_children() -> i32 {
    10
}

impl Session {
    /// Whether the session holds a live capacity slot at `now` (reference §1.5 "capacity
    /// counts live slots only"): active or suspended, and a task within its TTL (a TTL too
    /// large to add never expires) or a service with a live lease or suspended. The rule of
    /// `CoordinatorTx::count_live_sessions` and of the Coordinator's child limit.
    pub fn holds_slot(&self, now: DateTime<Utc>) -> bool {
        match self.status {
            SessionStatus::Terminated | SessionStatus::Expired => false,
            SessionStatus::Active | SessionStatus::Suspended => match self.lifecycle {
                Lifecycle::Task => self.ttl_seconds.is_none_or(|ttl| {
                    chrono::Duration::try_seconds(ttl)
                        .and_then(|d| self.started_at.checked_add_signed(d))
                        .is_none_or(|end| end > now)
                }),
                Lifecycle::Service => {
                    self.status == SessionStatus::Suspended
                        || self.heartbeat_deadline_at.is_some_and(|d| d > now)
                }
            },
        }
    }

    /// Whether the session is usable at `now`: active, and within its TTL (task) or lease
    /// (service).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        if self.status != SessionStatus::Active {
            return false;
        }
        match self.lifecycle {
            Lifecycle::Task => self
                .ttl_seconds
                .is_none_or(|ttl| self.started_at + chrono::Duration::seconds(ttl) > now),
            Lifecycle::Service => self.heartbeat_deadline_at.is_some_and(|d| d > now),
        }
    }
}
