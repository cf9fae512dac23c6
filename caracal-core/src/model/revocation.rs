//! The `caracal.sessions.revoke` message (reference `audit-streams-schema.md` §1.2).
//!
//! On the stream every value is a string. A revocation names the zone, a reason, and one or
//! more anchors: an authority record (`session_id`), a governed session (`agent_session_id`), a
//! delegation edge (`delegation_edge_id`, or `edge_id` as the Gateway also accepts), or a grant.
//! Producers add `outbox_id`, the Coordinator adds `dedupe_key`, and the origin signature `_sig`
//! covers everything else.

use serde::{Deserialize, Serialize};

use super::WireError;

/// A revocation event as carried on `caracal.sessions.revoke`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEvent {
    /// The zone.
    pub zone_id: String,
    /// Why, e.g. `grant_revoked`, `dcr_shutdown`, `delegation_revoked`.
    #[serde(default)]
    pub reason: String,
    /// Authority record id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Governed session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// Delegation edge id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_edge_id: Option<String>,
    /// Delegation edge id under the alternative name the Gateway accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_id: Option<String>,
    /// Administrative grant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// The outbox row that produced the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_id: Option<String>,
    /// The Coordinator's dedupe key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    /// The stream origin signature.
    #[serde(rename = "_sig", default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl RevocationEvent {
    /// Every anchor the event names, deduplicated, in a fixed order.
    pub fn anchors(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for a in [
            &self.session_id,
            &self.agent_session_id,
            &self.delegation_edge_id,
            &self.edge_id,
        ]
        .into_iter()
        .flatten()
        {
            if !a.is_empty() && !out.contains(&a.as_str()) {
                out.push(a);
            }
        }
        out
    }

    /// Build from a stream entry's field map (all strings). Unknown fields are ignored; a
    /// missing `zone_id` or a message with no anchor at all is an error.
    pub fn from_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, WireError> {
        let mut ev = RevocationEvent::default();
        for (k, v) in fields {
            let v = v.to_owned();
            match k {
                "zone_id" => ev.zone_id = v,
                "reason" => ev.reason = v,
                "session_id" => ev.session_id = Some(v),
                "agent_session_id" => ev.agent_session_id = Some(v),
                "delegation_edge_id" => ev.delegation_edge_id = Some(v),
                "edge_id" => ev.edge_id = Some(v),
                "grant_id" => ev.grant_id = Some(v),
                "outbox_id" => ev.outbox_id = Some(v),
                "dedupe_key" => ev.dedupe_key = Some(v),
                "_sig" => ev.sig = Some(v),
                _ => {}
            }
        }
        if ev.zone_id.is_empty() {
            return Err(WireError::MissingField {
                what: "revocation event",
                field: "zone_id",
            });
        }
        if ev.anchors().is_empty() && ev.grant_id.as_deref().unwrap_or("").is_empty() {
            return Err(WireError::MissingField {
                what: "revocation event",
                field: "session_id|agent_session_id|delegation_edge_id|edge_id",
            });
        }
        Ok(ev)
    }

    /// The field map to put on the stream (without `_sig`; the publisher signs it).
    pub fn to_fields(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("zone_id".to_owned(), self.zone_id.clone()),
            ("reason".to_owned(), self.reason.clone()),
        ];
        let optional = [
            ("session_id", &self.session_id),
            ("agent_session_id", &self.agent_session_id),
            ("delegation_edge_id", &self.delegation_edge_id),
            ("edge_id", &self.edge_id),
            ("grant_id", &self.grant_id),
            ("outbox_id", &self.outbox_id),
            ("dedupe_key", &self.dedupe_key),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                out.push((k.to_owned(), v.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_map_round_trip_and_anchor_rules() {
        let ev = RevocationEvent::from_fields([
            ("zone_id", "z"),
            ("reason", "delegation_revoked"),
            ("delegation_edge_id", "e1"),
            ("edge_id", "e1"),
            ("unknown", "ignored"),
        ])
        .unwrap();
        assert_eq!(ev.anchors(), vec!["e1"]);
        let fields = ev.to_fields();
        let back =
            RevocationEvent::from_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap();
        assert_eq!(back, ev);
        assert!(RevocationEvent::from_fields([("reason", "x"), ("session_id", "s")]).is_err());
        assert!(RevocationEvent::from_fields([("zone_id", "z"), ("reason", "x")]).is_err());
    }
}
