//! The mandate claim set (reference `sts.md` §3.2; fixture `jwt-claims.resource.valid.json`).

use serde::{Deserialize, Serialize};

use crate::model::authority::SubjectType;
use crate::model::{is_zero_i64, is_zero_u32};

/// Which verifier a mandate is for. Each verifier accepts only its own class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MandateUse {
    /// Bootstrap / lifecycle mandate (`agent:lifecycle`); the only class the Coordinator
    /// accepts; reusable.
    Session,
    /// Single-use, accepted only by the Gateway.
    Gateway,
    /// Minted by the Gateway's exchange, accepted by upstream verifiers.
    Resource,
}

impl MandateUse {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            MandateUse::Session => "session",
            MandateUse::Gateway => "gateway",
            MandateUse::Resource => "resource",
        }
    }
}

/// The `aud` claim: the reference writes an array, and its schema accepts a string too. The
/// form received is kept so a round trip is lossless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience string.
    One(String),
    /// An array of audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names `value`.
    pub fn contains(&self, value: &str) -> bool {
        match self {
            Audience::One(a) => a == value,
            Audience::Many(v) => v.iter().any(|a| a == value),
        }
    }

    /// The audiences as a slice-like iterator.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Audience::One(a) => (Some(a.as_str()), &[][..]),
            Audience::Many(v) => (None, v.as_slice()),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }
}

/// One hop of the delegation chain: the issuer side of each path edge, then a final hop for
/// the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHop {
    /// The application acting at this hop.
    pub application_id: String,
    /// Its session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// The edge leaving this hop (absent on the final hop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_edge_id: Option<String>,
}

/// The claims of a mandate. Optional claims are omitted when empty, as the reference does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MandateClaims {
    /// `ISSUER_URL` exactly as configured.
    pub iss: String,
    /// The subject.
    pub sub: String,
    /// `[ISSUER_URL]` for session/gateway mandates, the granted identifiers for resource ones.
    pub aud: Audience,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issue time, Unix seconds (the database `now()` at exchange).
    pub iat: i64,
    /// UUIDv7 token id; the Gateway consumes it once.
    pub jti: String,
    /// Zone.
    pub zone_id: String,
    /// The acting application.
    pub client_id: String,
    /// Space-delimited scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The authority record minted by this exchange.
    pub sid: String,
    /// The root of the authority record lineage.
    pub root_sid: String,
    /// The class of the mandate.
    #[serde(rename = "use")]
    pub use_: MandateUse,
    /// `user` or `application`.
    pub sub_type: SubjectType,
    /// Granted resource identifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<String>,
    /// Governed session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// The delegation edge used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_edge_id: Option<String>,
    /// The edge's source session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_session_id: Option<String>,
    /// The edge's target session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_session_id: Option<String>,
    /// Edge ids, root to leaf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegation_path: Vec<String>,
    /// One hop per path edge plus the final receiver hop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegation_chain: Vec<ChainHop>,
    /// `len(delegation_path)`.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub hop_count: u32,
    /// The zone's delegation graph epoch at mint time.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub delegation_graph_epoch: i64,
}

impl MandateClaims {
    /// The scopes, split on spaces with empties dropped.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
    }

    /// The revocation anchors a verifier checks: `sid`, `root_sid`, `agent_session_id`,
    /// `delegation_edge_id` (present ones only).
    pub fn revocation_anchors(&self) -> impl Iterator<Item = &str> {
        [
            Some(self.sid.as_str()),
            Some(self.root_sid.as_str()),
            self.agent_session_id.as_deref(),
            self.delegation_edge_id.as_deref(),
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
    }
}
