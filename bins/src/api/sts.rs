//! The STS token endpoint (`POST /oauth/2/token`, RFC 8693 token exchange with client
//! authentication): the two exchanges an agent makes.
//!
//! - *bootstrap*: `scope=agent:lifecycle` on a resource the application owns → a `use=session`
//!   mandate, the credential the Coordinator accepts;
//! - *delegated mint*: a scope through a delegation edge into a session → a `use=gateway`
//!   mandate, what the Gateway trades for the upstream credential.

use super::{Answer, ApiError, Http, Reply, form};

/// The RFC 8693 grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The scope of a bootstrap (and the Coordinator's required scope).
pub const LIFECYCLE_SCOPE: &str = "agent:lifecycle";

/// A minted mandate. `Debug` never shows the token.
#[derive(Clone)]
pub struct Mandate {
    /// The compact JWS.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
}

impl std::fmt::Debug for Mandate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mandate")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// An application's credentials at one zone.
#[derive(Clone)]
pub struct Client {
    /// The zone.
    pub zone_id: String,
    /// The application id.
    pub application_id: String,
    /// The client secret.
    pub client_secret: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("zone_id", &self.zone_id)
            .field("application_id", &self.application_id)
            .finish_non_exhaustive()
    }
}

/// An STS client bound to one base URL.
#[derive(Debug, Clone)]
pub struct Sts {
    http: Http,
    base: String,
}

impl Sts {
    /// A client for the STS at `base`.
    pub fn new(http: Http, base: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// One client-authenticated exchange by `client` with `extra` fields; any status is a
    /// [`Reply`] (a refusal is an answer the caller may want to show).
    pub async fn exchange(
        &self,
        client: &Client,
        extra: &[(&str, &str)],
    ) -> Result<Reply, ApiError> {
        let mut pairs = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("zone_id", client.zone_id.as_str()),
            ("application_id", client.application_id.as_str()),
            ("client_secret", client.client_secret.as_str()),
        ];
        pairs.extend_from_slice(extra);
        let url = format!("{}/oauth/2/token", self.base);
        self.http
            .send(
                "POST",
                &url,
                &[],
                Some((
                    "application/x-www-form-urlencoded",
                    form(&pairs).into_bytes(),
                )),
            )
            .await
    }

    /// The mandate of a 200 token answer.
    pub fn mandate(reply: Reply, what: &str) -> Result<Answer<Mandate>, ApiError> {
        let reply = reply.expect(what, &[200])?;
        Ok(Answer {
            value: Mandate {
                token: reply.str_field(what, "access_token")?,
                expires_in: reply.body["expires_in"].as_i64().unwrap_or(0),
            },
            request_id: reply.request_id,
        })
    }

    /// Bootstrap: a session mandate of `client` on `resource` (an identifier it owns).
    pub async fn bootstrap(
        &self,
        client: &Client,
        resource: &str,
    ) -> Result<Answer<Mandate>, ApiError> {
        let r = self
            .exchange(
                client,
                &[("resource", resource), ("scope", LIFECYCLE_SCOPE)],
            )
            .await?;
        Self::mandate(r, "bootstrap")
    }

    /// The raw answer of a delegated mint of `scope` (space-separated) on `resource` into
    /// `session` through `edge`: 200 with a Gateway mandate, or the STS's refusal.
    pub async fn mint_reply(
        &self,
        client: &Client,
        resource: &str,
        scope: &str,
        session: &str,
        edge: &str,
    ) -> Result<Reply, ApiError> {
        self.exchange(
            client,
            &[
                ("resource", resource),
                ("scope", scope),
                ("agent_session_id", session),
                ("delegation_edge_id", edge),
            ],
        )
        .await
    }

    /// A delegated mint that must succeed.
    pub async fn mint(
        &self,
        client: &Client,
        resource: &str,
        scope: &str,
        session: &str,
        edge: &str,
    ) -> Result<Answer<Mandate>, ApiError> {
        let r = self
            .mint_reply(client, resource, scope, session, edge)
            .await?;
        Self::mandate(r, "delegated mint")
    }
}
