//! The Gateway: a proxied call with a `use=gateway` mandate.

use super::{ApiError, Http, Reply};

/// A Gateway client bound to one base URL.
#[derive(Debug, Clone)]
pub struct Gateway {
    http: Http,
    base: String,
}

impl Gateway {
    /// A client for the Gateway at `base`.
    pub fn new(http: Http, base: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// `method path` on `resource` (its identifier, sent as `X-Caracal-Resource`) with the
    /// mandate as bearer. Any status is a [`Reply`]: a refusal is something to show.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        resource: &str,
        mandate: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Reply, ApiError> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {mandate}");
        self.http
            .send(
                method,
                &url,
                &[("authorization", &auth), ("x-caracal-resource", resource)],
                body,
            )
            .await
    }
}
