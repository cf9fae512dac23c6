//! The Coordinator (no `/v1`; bearer = an STS session mandate): sessions and delegations
//! (`http-bodies.md` §11).

use serde_json::{Value, json};

use super::{Answer, ApiError, Http, Reply, enc};

/// A Coordinator client bound to one base URL (the caller's mandate is given per call: one
/// process may act for several sessions).
#[derive(Debug, Clone)]
pub struct Coordinator {
    http: Http,
    base: String,
}

/// A delegation to create.
#[derive(Debug, Clone)]
pub struct DelegationSpec<'a> {
    /// The delegating session.
    pub source_session_id: &'a str,
    /// The receiving session.
    pub target_session_id: &'a str,
    /// The application of the source session.
    pub issuer_application_id: &'a str,
    /// The application of the target session.
    pub receiver_application_id: &'a str,
    /// The resource row id (or identifier).
    pub resource_id: &'a str,
    /// The delegated scopes (a subset of the resource's).
    pub scopes: &'a [&'a str],
    /// Lifetime of the edge.
    pub ttl_seconds: u32,
}

impl Coordinator {
    /// A client for the Coordinator at `base`.
    pub fn new(http: Http, base: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: &str,
        body: Option<&Value>,
        what: &str,
        expected: &[u16],
    ) -> Result<Reply, ApiError> {
        let url = format!("{}{path}", self.base);
        self.http
            .json(method, &url, Some(bearer), body)
            .await?
            .expect(what, expected)
    }

    /// `POST /zones/:zone/agents`: a task session of `application_id`, under `parent_id`
    /// when given, with `labels` (the policy's roles). Returns the session id.
    pub async fn start_session(
        &self,
        zone: &str,
        bearer: &str,
        application_id: &str,
        parent_id: Option<&str>,
        labels: &[&str],
    ) -> Result<Answer<String>, ApiError> {
        let what = if parent_id.is_some() {
            "start child session"
        } else {
            "start session"
        };
        let body = json!({
            "application_id": application_id,
            "parent_id": parent_id,
            "labels": labels,
        });
        let r = self
            .call(
                "POST",
                &format!("/zones/{}/agents", enc(zone)),
                bearer,
                Some(&body),
                what,
                &[201],
            )
            .await?;
        Ok(Answer {
            value: r.str_field(what, "agent_session_id")?,
            request_id: r.request_id,
        })
    }

    /// `POST /zones/:zone/delegations`; returns the edge id.
    pub async fn delegate(
        &self,
        zone: &str,
        bearer: &str,
        spec: &DelegationSpec<'_>,
    ) -> Result<Answer<String>, ApiError> {
        let what = "create delegation";
        let body = json!({
            "source_session_id": spec.source_session_id,
            "target_session_id": spec.target_session_id,
            "issuer_application_id": spec.issuer_application_id,
            "receiver_application_id": spec.receiver_application_id,
            "resource_id": spec.resource_id,
            "scopes": spec.scopes,
            "ttl_seconds": spec.ttl_seconds,
        });
        let r = self
            .call(
                "POST",
                &format!("/zones/{}/delegations", enc(zone)),
                bearer,
                Some(&body),
                what,
                &[201],
            )
            .await?;
        Ok(Answer {
            value: r.str_field(what, "delegation_edge_id")?,
            request_id: r.request_id,
        })
    }

    /// `DELETE /zones/:zone/agents/:session?reason=`: terminate a session and its subtree.
    pub async fn terminate(
        &self,
        zone: &str,
        bearer: &str,
        session: &str,
        reason: &str,
    ) -> Result<Answer<()>, ApiError> {
        let r = self
            .call(
                "DELETE",
                &format!(
                    "/zones/{}/agents/{}?reason={}",
                    enc(zone),
                    enc(session),
                    enc(reason)
                ),
                bearer,
                None,
                "terminate session",
                &[204],
            )
            .await?;
        Ok(Answer {
            value: (),
            request_id: r.request_id,
        })
    }

    /// `GET /zones/:zone/agents/:session`: the session row.
    pub async fn session(
        &self,
        zone: &str,
        bearer: &str,
        session: &str,
    ) -> Result<Answer<Value>, ApiError> {
        let r = self
            .call(
                "GET",
                &format!("/zones/{}/agents/{}", enc(zone), enc(session)),
                bearer,
                None,
                "get session",
                &[200],
            )
            .await?;
        Ok(Answer {
            value: r.body,
            request_id: r.request_id,
        })
    }

    /// `PATCH /zones/:zone/delegations/:edge/revoke` (cascades downstream).
    pub async fn revoke_delegation(
        &self,
        zone: &str,
        bearer: &str,
        edge: &str,
    ) -> Result<Answer<Value>, ApiError> {
        let r = self
            .call(
                "PATCH",
                &format!("/zones/{}/delegations/{}/revoke", enc(zone), enc(edge)),
                bearer,
                None,
                "revoke delegation",
                &[200],
            )
            .await?;
        Ok(Answer {
            value: r.body,
            request_id: r.request_id,
        })
    }
}
