//! The Admin API (`/v1`, bearer admin token): the calls that build a world.
//!
//! Bodies are the reference's (`http-bodies.md` §1–§6); every method returns the ids the
//! next step needs and the request id of the call.

use serde_json::{Value, json};

use super::{Answer, ApiError, Http, Reply, enc};

/// An Admin API client bound to one base URL and admin token.
#[derive(Clone)]
pub struct Admin {
    http: Http,
    base: String,
    token: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never printed.
        f.debug_struct("Admin").field("base", &self.base).finish()
    }
}

/// A new application: its id and the client secret, shown once by the Admin API.
#[derive(Clone)]
pub struct NewApplication {
    /// The application id (the STS `application_id`).
    pub id: String,
    /// The client secret (`cs_…`).
    pub client_secret: String,
}

impl std::fmt::Debug for NewApplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApplication")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A new resource.
#[derive(Debug, Clone)]
pub struct NewResource {
    /// The row id.
    pub id: String,
    /// The public identifier (`resource://…`), the STS `resource` and the Gateway's
    /// `X-Caracal-Resource`.
    pub identifier: String,
}

/// What a resource is created with.
#[derive(Debug, Clone)]
pub struct ResourceSpec<'a> {
    /// Display name.
    pub name: &'a str,
    /// `resource://…`.
    pub identifier: &'a str,
    /// Where the Gateway forwards.
    pub upstream_url: &'a str,
    /// The scopes the resource defines.
    pub scopes: &'a [&'a str],
    /// The credential provider the Gateway injects.
    pub provider_id: &'a str,
}

/// A new policy: its id and the id of version 1.
#[derive(Debug, Clone)]
pub struct NewPolicy {
    /// The policy id.
    pub id: String,
    /// The version id (to put in a set manifest).
    pub version_id: String,
}

/// An accepted activation.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The outbox row that carries the activation to the STS.
    pub outbox_id: String,
    /// Where to poll the propagation.
    pub status_url: String,
}

impl Admin {
    /// A client for the Admin API at `base` (without `/v1`).
    pub fn new(http: Http, base: &str, token: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        what: &str,
        expected: &[u16],
    ) -> Result<Reply, ApiError> {
        let url = format!("{}/v1{path}", self.base);
        self.http
            .json(method, &url, Some(&self.token), body)
            .await?
            .expect(what, expected)
    }

    /// `POST /v1/zones`.
    pub async fn create_zone(&self, name: &str) -> Result<Answer<String>, ApiError> {
        let what = "create zone";
        let r = self
            .call("POST", "/zones", Some(&json!({"name": name})), what, &[201])
            .await?;
        Ok(Answer {
            value: r.str_field(what, "id")?,
            request_id: r.request_id,
        })
    }

    /// `POST /v1/zones/:zone/applications` (managed).
    pub async fn create_application(
        &self,
        zone: &str,
        name: &str,
    ) -> Result<Answer<NewApplication>, ApiError> {
        let what = "create application";
        let body = json!({"name": name, "registration_method": "managed"});
        let r = self
            .call(
                "POST",
                &format!("/zones/{}/applications", enc(zone)),
                Some(&body),
                what,
                &[201],
            )
            .await?;
        Ok(Answer {
            value: NewApplication {
                id: r.str_field(what, "id")?,
                client_secret: r.str_field(what, "client_secret")?,
            },
            request_id: r.request_id,
        })
    }

    /// `POST /v1/zones/:zone/providers` of `kind` with `config_json` (public and secret keys
    /// together; the Admin API seals the secret ones). Returns the provider id.
    pub async fn create_provider(
        &self,
        zone: &str,
        name: &str,
        identifier: &str,
        kind: &str,
        config_json: Value,
    ) -> Result<Answer<String>, ApiError> {
        let what = "create provider";
        let body = json!({"name": name, "identifier": identifier, "kind": kind,
            "config_json": config_json});
        let r = self
            .call(
                "POST",
                &format!("/zones/{}/providers", enc(zone)),
                Some(&body),
                what,
                &[201],
            )
            .await?;
        Ok(Answer {
            value: r.str_field(what, "id")?,
            request_id: r.request_id,
        })
    }

    /// `POST /v1/zones/:zone/resources` (transport-uniform: every request needs the mandate's
    /// scopes, whatever its method and path).
    pub async fn create_resource(
        &self,
        zone: &str,
        spec: &ResourceSpec<'_>,
    ) -> Result<Answer<NewResource>, ApiError> {
        let what = "create resource";
        let body = json!({
            "name": spec.name,
            "identifier": spec.identifier,
            "upstream_url": spec.upstream_url,
            "scopes": spec.scopes,
            "credential_provider_id": spec.provider_id,
            "operation_enforcement": "transport_uniform",
        });
        let r = self
            .call(
                "POST",
                &format!("/zones/{}/resources", enc(zone)),
                Some(&body),
                what,
                &[201],
            )
            .await?;
        Ok(Answer {
            value: NewResource {
                id: r.str_field(what, "id")?,
                identifier: r.str_field(what, "identifier")?,
            },
            request_id: r.request_id,
        })
    }

    /// `POST /v1/zones/:zone/policies` with a data document.
    pub async fn create_policy(
        &self,
        zone: &str,
        name: &str,
        content: &str,
    ) -> Result<Answer<NewPolicy>, ApiError> {
        let what = "create policy";
        let body = json!({"name": name, "content": content});
        let r = self
            .call(
                "POST",
                &format!("/zones/{}/policies", enc(zone)),
                Some(&body),
                what,
                &[201],
            )
            .await?;
        Ok(Answer {
            value: NewPolicy {
                id: r.str_field(what, "id")?,
                version_id: r.str_field(what, "version_id")?,
            },
            request_id: r.request_id,
        })
    }

    /// `POST /v1/zones/:zone/policy-sets`; returns the set id.
    pub async fn create_policy_set(
        &self,
        zone: &str,
        name: &str,
    ) -> Result<Answer<String>, ApiError> {
        let what = "create policy set";
        let r = self
            .call(
                "POST",
                &format!("/zones/{}/policy-sets", enc(zone)),
                Some(&json!({"name": name})),
                what,
                &[201],
            )
            .await?;
        Ok(Answer {
            value: r.str_field(what, "id")?,
            request_id: r.request_id,
        })
    }

    /// `POST /v1/zones/:zone/policy-sets/:set/versions` with `policy_version_ids` as the
    /// manifest; returns the set version id.
    pub async fn create_policy_set_version(
        &self,
        zone: &str,
        set: &str,
        policy_version_ids: &[&str],
    ) -> Result<Answer<String>, ApiError> {
        let what = "create policy set version";
        let manifest: Vec<Value> = policy_version_ids
            .iter()
            .map(|v| json!({"policy_version_id": v}))
            .collect();
        let r = self
            .call(
                "POST",
                &format!("/zones/{}/policy-sets/{}/versions", enc(zone), enc(set)),
                Some(&json!({"manifest": manifest})),
                what,
                &[201],
            )
            .await?;
        Ok(Answer {
            value: r.str_field(what, "version_id")?,
            request_id: r.request_id,
        })
    }

    /// `POST /v1/zones/:zone/policy-sets/:set/activate` (202).
    pub async fn activate(
        &self,
        zone: &str,
        set: &str,
        version: &str,
    ) -> Result<Answer<Activation>, ApiError> {
        let what = "activate policy set";
        let r = self
            .call(
                "POST",
                &format!("/zones/{}/policy-sets/{}/activate", enc(zone), enc(set)),
                Some(&json!({"version_id": version})),
                what,
                &[202],
            )
            .await?;
        Ok(Answer {
            value: Activation {
                outbox_id: r.str_field(what, "outbox_id")?,
                status_url: r.str_field(what, "status_url")?,
            },
            request_id: r.request_id,
        })
    }

    /// `GET` of an activation's `status_url` (as returned by [`Admin::activate`]); the body
    /// is the reference's activation status object.
    pub async fn activation_status(&self, status_url: &str) -> Result<Reply, ApiError> {
        let path = status_url.strip_prefix("/v1").unwrap_or(status_url);
        self.call("GET", path, None, "activation status", &[200])
            .await
    }
}
