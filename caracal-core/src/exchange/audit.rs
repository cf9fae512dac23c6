//! Decision events of the exchange (reference `sts.md` §7.7).
//!
//! Every resource decision, pre-policy skip and final denial becomes one [`AuditEvent`] on the
//! [`AuditSink`](crate::audit::sink::AuditSink). Events carry the bundle that decided
//! (`policy_set_version_id`, `manifest_sha`) so the ledger says which policy was in force.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::audit::event::{AuditEvent, JsonText};
use crate::policy::cache::LoadedBundle;

/// Event type of every exchange decision.
pub const TOKEN_EXCHANGE: &str = "token_exchange";
/// A hold was raised.
pub const STEP_UP_ISSUED: &str = "step_up_issued";
/// A hold was consumed by a mint.
pub const STEP_UP_CONSUMED: &str = "step_up_consumed";
/// A `jti` was already registered (never expected; the mint fails).
pub const JTI_COLLISION: &str = "jti_collision";

/// One event, before it gets its id and time.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    /// Event type.
    pub event_type: &'a str,
    /// `allow` or `deny`.
    pub decision: &'a str,
    /// `complete` for a policy decision, else the reason (`scope_mismatch`, ...).
    pub evaluation_status: &'a str,
    /// Determining policies (`[{"policy": name}]`), if a policy decided.
    pub determining_policies: Option<Value>,
    /// Diagnostics, if any.
    pub diagnostics: Option<Value>,
    /// Metadata (application, resource, scopes, session, delegation, approval facts).
    pub metadata: Map<String, Value>,
}

/// Build the wire event. A JSON field that cannot be represented is dropped rather than
/// failing the decision (it cannot happen for values built from `serde_json::Value`).
pub fn event(
    id: String,
    zone_id: &str,
    request_id: &str,
    bundle: Option<&LoadedBundle>,
    decision: Decision<'_>,
    at: DateTime<Utc>,
) -> AuditEvent {
    let json = |v: Option<Value>| v.and_then(|v| JsonText::from_value(&v).ok());
    let metadata = (!decision.metadata.is_empty())
        .then(|| JsonText::from_value(&Value::Object(decision.metadata)).ok())
        .flatten();
    AuditEvent {
        id,
        zone_id: zone_id.to_owned(),
        event_type: decision.event_type.to_owned(),
        request_id: request_id.to_owned(),
        decision: decision.decision.to_owned(),
        policy_set_id: String::new(),
        policy_set_version_id: bundle
            .and_then(|b| b.policy_set_version_id.clone())
            .unwrap_or_default(),
        manifest_sha: bundle
            .and_then(|b| b.manifest_sha256.clone())
            .unwrap_or_default(),
        evaluation_status: decision.evaluation_status.to_owned(),
        determining_policies_json: json(decision.determining_policies),
        diagnostics_json: json(decision.diagnostics),
        metadata_json: metadata,
        occurred_at: at,
    }
}
