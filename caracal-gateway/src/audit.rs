//! The Gateway's audit events (reference `gateway.md` §3, §6.1): `gateway_resource_request`
//! after every successful exchange, `replay_detected` on a replayed `jti`. Never a path, a
//! query, a token or a provider credential: the subject is named by a fingerprint (the first
//! 16 hex of SHA-256 of the bearer).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use caracal_core::audit::{AuditEvent, JsonText};

/// `evaluation_status` of a `gateway_resource_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// The upstream answered (any status).
    Executed,
    /// The SSRF guard or the credential host pin refused the upstream.
    UpstreamRejected,
    /// The upstream request could not be built.
    BuildFailed,
    /// Transport failure, or the response copy failed.
    UpstreamError,
}

impl Evaluation {
    fn as_str(self) -> &'static str {
        match self {
            Evaluation::Executed => "executed",
            Evaluation::UpstreamRejected => "upstream_rejected",
            Evaluation::BuildFailed => "build_failed",
            Evaluation::UpstreamError => "upstream_error",
        }
    }
}

/// First 16 hex of SHA-256 of the bearer.
pub fn subject_fingerprint(token: &str) -> String {
    let mut h = hex::encode(Sha256::digest(token.as_bytes()));
    h.truncate(16);
    h
}

/// `success` 2xx, `redirect` 3xx, `client_error` 4xx, `server_error` ≥ 500.
pub fn result_class(status: u16) -> &'static str {
    match status {
        200..=299 => "success",
        300..=399 => "redirect",
        400..=499 => "client_error",
        500.. => "server_error",
        _ => "informational",
    }
}

/// The metadata of one `gateway_resource_request`, filled in as the request progresses.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    /// Peeked `zone_id`.
    pub zone_id: String,
    /// The Gateway request id.
    pub request_id: String,
    /// Peeked `client_id`.
    pub application_id: String,
    /// The resource identifier.
    pub resource: String,
    /// Subject fingerprint.
    pub subject_fingerprint: String,
    /// Inbound method.
    pub method: String,
    /// `user` / `application` from `sub_type`.
    pub subject_kind: Option<String>,
    /// Trace id of the outbound traceparent.
    pub trace_id: Option<String>,
    /// `host:port` of the upstream.
    pub upstream_host: Option<String>,
    /// Directive auth mode.
    pub auth_mode: Option<String>,
    /// Directive provider id.
    pub provider_id: Option<String>,
    /// Directive connection id.
    pub connection_id: Option<String>,
    /// Status returned to the client.
    pub gateway_status: u16,
    /// Upstream status, if any.
    pub upstream_status: Option<u16>,
    /// Upstream round trip in ms (0 before dispatch).
    pub latency_ms: u64,
    /// Response bytes relayed.
    pub response_bytes: u64,
    /// Cut by a mid-stream revocation.
    pub revocation_interrupted: bool,
    /// Failure kind.
    pub error_kind: Option<&'static str>,
}

#[allow(clippy::too_many_arguments)]
fn event(
    id: String,
    zone_id: &str,
    event_type: &str,
    request_id: &str,
    decision: &str,
    status: &str,
    metadata: Map<String, Value>,
    at: DateTime<Utc>,
) -> Option<AuditEvent> {
    let empty = JsonText::parse("[]").ok()?;
    Some(AuditEvent {
        id,
        zone_id: zone_id.to_owned(),
        event_type: event_type.to_owned(),
        request_id: request_id.to_owned(),
        decision: decision.to_owned(),
        policy_set_id: String::new(),
        policy_set_version_id: String::new(),
        manifest_sha: String::new(),
        evaluation_status: status.to_owned(),
        determining_policies_json: Some(empty.clone()),
        diagnostics_json: Some(empty),
        metadata_json: Some(JsonText::from_value(&Value::Object(metadata)).ok()?),
        occurred_at: at,
    })
}

impl RequestRecord {
    /// The `gateway_resource_request` event (decision always `allow`: the STS allowed).
    pub fn to_event(
        &self,
        id: String,
        evaluation: Evaluation,
        at: DateTime<Utc>,
    ) -> Option<AuditEvent> {
        let mut m = Map::new();
        m.insert("application_id".into(), json!(self.application_id));
        m.insert("resource".into(), json!(self.resource));
        m.insert(
            "subject_fingerprint".into(),
            json!(self.subject_fingerprint),
        );
        m.insert("method".into(), json!(self.method));
        m.insert("gateway_status".into(), json!(self.gateway_status));
        m.insert("latency_ms".into(), json!(self.latency_ms));
        m.insert("response_bytes".into(), json!(self.response_bytes));
        let mut opt = |k: &str, v: &Option<String>| {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                m.insert(k.into(), json!(v));
            }
        };
        opt("trace_id", &self.trace_id);
        opt("subject_kind", &self.subject_kind);
        opt("upstream_host", &self.upstream_host);
        opt("auth_mode", &self.auth_mode);
        opt("provider_id", &self.provider_id);
        opt("connection_id", &self.connection_id);
        if let Some(s) = self.upstream_status {
            m.insert("upstream_status".into(), json!(s));
            m.insert("result_class".into(), json!(result_class(s)));
        }
        if self.revocation_interrupted {
            m.insert("revocation_interrupted".into(), json!(true));
        }
        if let Some(k) = self.error_kind {
            m.insert("error_kind".into(), json!(k));
        }
        event(
            id,
            &self.zone_id,
            "gateway_resource_request",
            &self.request_id,
            "allow",
            evaluation.as_str(),
            m,
            at,
        )
    }
}

/// The `replay_detected` event (deny / anomaly).
#[allow(clippy::too_many_arguments)]
pub fn replay_detected(
    id: String,
    zone_id: &str,
    request_id: &str,
    jti: &str,
    resource: &str,
    client_id: &str,
    subject_fp: &str,
    at: DateTime<Utc>,
) -> Option<AuditEvent> {
    let mut m = Map::new();
    m.insert("jti".into(), json!(jti));
    m.insert("resource".into(), json!(resource));
    m.insert("client_id".into(), json!(client_id));
    m.insert("subject_fp".into(), json!(subject_fp));
    m.insert("request_id".into(), json!(request_id));
    event(
        id,
        zone_id,
        "replay_detected",
        request_id,
        "deny",
        "anomaly",
        m,
        at,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn event_shape_has_no_secrets() {
        let r = RequestRecord {
            zone_id: "z".into(),
            request_id: "rid".into(),
            application_id: "app".into(),
            resource: "resource://r".into(),
            subject_fingerprint: subject_fingerprint("a.b.c"),
            method: "GET".into(),
            gateway_status: 200,
            upstream_status: Some(204),
            auth_mode: Some("provider_apikey".into()),
            ..RequestRecord::default()
        };
        let e = r
            .to_event("id".into(), Evaluation::Executed, Utc::now())
            .unwrap();
        let m: Value = serde_json::from_str(e.metadata_json.as_ref().unwrap().as_str()).unwrap();
        assert_eq!(m["result_class"], "success");
        assert_eq!(m["subject_fingerprint"].as_str().unwrap().len(), 16);
        assert_eq!(e.decision, "allow");
        assert_eq!(e.evaluation_status, "executed");
        assert!(!e.metadata_json.unwrap().as_str().contains("a.b.c"));
        assert_eq!(result_class(302), "redirect");
        assert_eq!(result_class(503), "server_error");
    }
}
