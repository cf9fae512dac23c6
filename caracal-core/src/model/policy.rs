//! The policy input and result (reference `sts.md` §4.1–§4.2).
//!
//! The STS builds a [`PolicyInput`] for every decision; the engine answers with a
//! [`PolicyResult`]. Only schema version [`POLICY_INPUT_SCHEMA_VERSION`] is accepted; any other
//! non-empty value is an evaluation error (checked by the engine, not by parsing, so a bad
//! input can still be logged and audited).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The only policy input schema version the engine evaluates.
pub const POLICY_INPUT_SCHEMA_VERSION: &str = "2026-05-20";

/// The document the policy engine decides on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyInput {
    /// Must be [`POLICY_INPUT_SCHEMA_VERSION`].
    pub schema_version: String,
    /// Who asks: the authenticated application (or workload).
    pub principal: Principal,
    /// The resource asked for, with its declared scopes.
    pub resource: ResourceRef,
    /// What is being done.
    pub action: Action,
    /// The authority record behind the request, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionRef>,
    /// The delegation edge the request runs under, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_edge: Option<DelegationEdgeInput>,
    /// Request context.
    pub context: Context,
}

/// The principal of a policy decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Principal {
    /// `Application` or `Workload`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Application (or workload) id.
    pub id: String,
    /// The zone of the principal.
    pub zone_id: String,
    /// `managed` or `dcr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_method: Option<String>,
    /// The governed session the request acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// The session's lifecycle (`task` or `service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<String>,
    /// The session's labels; the contract uses them as role keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

/// The resource of a policy decision: its declared scopes, not the requested ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRef {
    /// Usually `Resource`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Resource row id.
    pub id: String,
    /// Public identifier, e.g. `resource://api`.
    pub identifier: String,
    /// Declared scopes.
    pub scopes: Vec<String>,
}

/// The action of a policy decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// `TokenExchange` or `CredentialInjection`.
    pub id: String,
    /// Upper-cased HTTP method (gateway-authenticated exchanges only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Trimmed request path (gateway-authenticated exchanges only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A reference to the authority record of the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRef {
    /// Authority record id.
    pub id: String,
}

/// The delegation edge as the policy sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegationEdgeInput {
    /// Edge id.
    pub id: String,
    /// Issuing session.
    pub source_session_id: String,
    /// Receiving session.
    pub target_session_id: String,
    /// Application of the source session.
    pub issuer_application_id: String,
    /// Application of the target session.
    pub receiver_application_id: String,
    /// Resource row id the edge is bound to (empty for a broad edge).
    #[serde(default)]
    pub resource_id: String,
    /// Scopes the edge carries.
    pub scopes: Vec<String>,
    /// Bumped when the edge is revoked.
    pub edge_version: i64,
    /// Edge ids from the root to this edge.
    #[serde(default)]
    pub path: Vec<String>,
    /// The zone's delegation graph epoch at decision time.
    #[serde(default)]
    pub graph_epoch: i64,
    /// The edge's typed constraints, as stored.
    #[serde(default)]
    pub constraints_json: Value,
}

/// The context block of a policy input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Claims of the authenticated actor.
    pub actor_claims: ActorClaims,
    /// All verified claims of the presented subject token, when one was presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_claims: Option<Map<String, Value>>,
    /// The request id.
    #[serde(default)]
    pub trace_id: String,
    /// Authority record id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Governed session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// Delegation edge id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_edge_id: Option<String>,
    /// Whether a human approval was already resolved for this request.
    #[serde(default)]
    pub challenge_resolved: bool,
    /// The scopes asked for (empty for a mandate-use decision).
    #[serde(default)]
    pub requested_scopes: Vec<String>,
}

/// The actor claims of a policy input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorClaims {
    /// The authenticated application id.
    pub caracal_client_id: String,
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The request is allowed (possibly subject to a step-up, see the diagnostics).
    Allow,
    /// The request is denied.
    Deny,
}

impl Decision {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// The result of a policy decision.
///
/// The reference's platform contract emits `determining_policies` as `[{"policy": name}]` and
/// diagnostics as `[{"reason": r}]` or step-up objects, while its fixture uses `{id, version}`
/// and `{code, message}` objects: both arrays are therefore arrays of free-form objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyResult {
    /// The decision.
    pub decision: Decision,
    /// Always `complete` for a valid evaluation.
    pub evaluation_status: String,
    /// The policies that decided.
    #[serde(default)]
    pub determining_policies: Vec<Map<String, Value>>,
    /// Reasons, risk facts and step-up requirements.
    #[serde(default)]
    pub diagnostics: Vec<Map<String, Value>>,
}
