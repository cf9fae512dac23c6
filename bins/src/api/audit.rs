//! The Audit service: `GET /api/audit/verify` (bearer = the Audit admin token).

use serde_json::Value;

use super::{Answer, ApiError, Http, enc};

/// A zone's chain verification, as the Audit service reports it.
#[derive(Debug, Clone)]
pub struct ChainVerdict {
    /// Rows checked.
    pub rows_checked: u64,
    /// Findings (listed and omitted).
    pub findings: u64,
    /// Whether chain HMACs were checked (the service has the key).
    pub hmac_checked: bool,
    /// The whole report.
    pub report: Value,
}

impl ChainVerdict {
    /// True when the verifier found nothing wrong.
    pub fn clean(&self) -> bool {
        self.findings == 0
    }
}

/// An Audit service client bound to one base URL and admin token.
#[derive(Clone)]
pub struct Audit {
    http: Http,
    base: String,
    token: String,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("base", &self.base).finish()
    }
}

impl Audit {
    /// A client for the Audit service at `base`.
    pub fn new(http: Http, base: &str, token: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// `GET /api/audit/verify?zone_id=`: one zone's chain.
    pub async fn verify_zone(&self, zone: &str) -> Result<Answer<ChainVerdict>, ApiError> {
        let what = "audit verify";
        let url = format!("{}/api/audit/verify?zone_id={}", self.base, enc(zone));
        let r = self
            .http
            .json("GET", &url, Some(&self.token), None)
            .await?
            .expect(what, &[200])?;
        let n = |k: &str| r.body[k].as_u64().unwrap_or(0);
        let listed = r.body["findings"].as_array().map_or(0, Vec::len) as u64;
        let verdict = ChainVerdict {
            rows_checked: n("rows_checked"),
            findings: listed + n("findings_omitted"),
            hmac_checked: r.body["hmac_checked"].as_bool().unwrap_or(false),
            report: r.body.clone(),
        };
        if r.body.get("rows_checked").is_none() {
            return Err(super::ApiError::Shape {
                what: what.to_owned(),
                field: "rows_checked".to_owned(),
            });
        }
        Ok(Answer {
            value: verdict,
            request_id: r.request_id,
        })
    }
}
