//! The wire model.
//!
//! Types for everything Caracal sends, stores or signs, with serde names equal to the reference
//! system's wire names so the original's fixtures parse and round-trip without loss. Fields the
//! reference omits when empty are omitted here too (`skip_serializing_if`), and secret-bearing
//! fields (client-secret hashes, provider tokens) are never serialised and never printed by
//! `Debug`.
//!
//! - [`policy`]: the policy input (schema `2026-05-20`) and result.
//! - [`token`]: the token response and the upstream directive.
//! - [`revocation`]: the `caracal.sessions.revoke` message.
//! - [`trace`]: W3C trace context headers and baggage.
//! - Domain records: [`zone`], [`application`], [`resource`], [`provider`], [`authority`],
//!   [`session`], [`delegation`], [`approval`], [`policy_set`], [`admin_token`].
//!
//! The mandate claims live in [`crate::mandate`] and the audit event in [`crate::audit`].

pub mod admin_token;
pub mod application;
pub mod approval;
pub mod authority;
pub mod delegation;
pub mod policy;
pub mod policy_set;
pub mod provider;
pub mod resource;
pub mod revocation;
pub mod session;
pub mod time;
pub mod token;
pub mod trace;
pub mod zone;

use serde::{Deserialize, Serialize};

/// A wire document could not be parsed or violated the wire model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The document is not valid JSON or does not have the expected shape.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which document (e.g. `policy input`).
        what: &'static str,
        /// What was wrong, without echoing secret material.
        reason: String,
    },
    /// A required field was missing or empty.
    #[error("{what}: missing field `{field}`")]
    MissingField {
        /// Which document.
        what: &'static str,
        /// The missing field's wire name.
        field: &'static str,
    },
}

/// Parse a JSON document into a wire type with a typed error.
pub fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, WireError> {
    serde_json::from_slice(bytes).map_err(|e| WireError::Malformed {
        what,
        reason: e.to_string(),
    })
}

/// Who created and last changed a record (the reference's attribution columns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// `admin:<token id>`, a console account id, or an operator id; null when unknown.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Whether the AI operator created it.
    #[serde(default)]
    pub created_via_operator: bool,
    /// The last actor to change it.
    #[serde(default)]
    pub updated_by: Option<String>,
    /// Whether the AI operator last changed it.
    #[serde(default)]
    pub updated_via_operator: bool,
}

impl Attribution {
    /// Attribution for a record created by `actor`.
    pub fn created_by(actor: impl Into<String>) -> Self {
        Self {
            created_by: Some(actor.into()),
            ..Self::default()
        }
    }
}

/// Helper for `skip_serializing_if` on booleans that the reference omits when false.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// Helper for `skip_serializing_if` on integers the reference omits when zero (Go `omitempty`).
pub(crate) fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// Helper for `skip_serializing_if` on integers the reference omits when zero (Go `omitempty`).
pub(crate) fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}
