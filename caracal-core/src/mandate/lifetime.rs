//! Mandate lifetimes (reference `sts.md` §3.3) as pure functions.
//!
//! The exchange applies them in this order: [`requested_ttl`] (default and class cap), then
//! [`DelegationLimits::cap`] for delegated mints, then [`cap_ttl`] for the control-key and
//! approval re-issue limits, and finally [`issue_times`] for `iat` / `exp`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::ids::IdGen;
use crate::model::delegation::DelegationEdge;

/// TTL when the request gives none (or `0`): 15 minutes, for every class.
pub const DEFAULT_TTL_SECONDS: i64 = 900;
/// Cap on an explicit TTL when no subject token is presented (bootstrap, delegated mint).
pub const MAX_TTL_SECONDS: i64 = 3600;
/// Cap on an explicit TTL when a subject token is presented (Gateway → resource).
pub const MAX_TTL_WITH_SUBJECT_SECONDS: i64 = 900;

/// Why a lifetime was refused. `status` and `code` are the reference's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlError {
    /// An explicit TTL below zero (400).
    #[error("invalid ttl_seconds")]
    Negative,
    /// An explicit TTL above the class cap (400).
    #[error("ttl_seconds exceeds token TTL cap")]
    ExceedsCap {
        /// The cap that applied.
        cap: i64,
    },
    /// An explicit TTL above the delegation's `constraints.ttl_seconds` (403).
    #[error("requested ttl exceeds delegation ttl")]
    ExceedsDelegationTtl,
    /// The edge or its constraints leave no positive lifetime (403).
    #[error("delegation expired")]
    DelegationExpired,
    /// A delegation constraint (`ttl_seconds`, `expires_at`) is not of the expected type (403).
    #[error("invalid delegation ttl constraint")]
    BadConstraint,
    /// `iat + ttl` overflowed.
    #[error("ttl out of range")]
    OutOfRange,
}

impl TtlError {
    /// The HTTP status of the reference.
    pub fn status(&self) -> u16 {
        match self {
            Self::Negative | Self::ExceedsCap { .. } | Self::OutOfRange => 400,
            Self::ExceedsDelegationTtl | Self::DelegationExpired | Self::BadConstraint => 403,
        }
    }

    /// The reference error code.
    pub fn code(&self) -> &'static str {
        match self.status() {
            400 => "invalid_token",
            _ => "access_denied",
        }
    }
}

/// The TTL of a request: `None` or `0` → [`DEFAULT_TTL_SECONDS`]; negative → refused; above
/// the cap ([`MAX_TTL_WITH_SUBJECT_SECONDS`] when a subject token is presented, else
/// [`MAX_TTL_SECONDS`]) → refused.
pub fn requested_ttl(requested: Option<i64>, subject_token: bool) -> Result<i64, TtlError> {
    let cap = if subject_token {
        MAX_TTL_WITH_SUBJECT_SECONDS
    } else {
        MAX_TTL_SECONDS
    };
    match requested {
        None | Some(0) => Ok(DEFAULT_TTL_SECONDS),
        Some(t) if t < 0 => Err(TtlError::Negative),
        Some(t) if t > cap => Err(TtlError::ExceedsCap { cap }),
        Some(t) => Ok(t),
    }
}

/// `min(ttl, limit)`, for the control key's `control:max-ttl` and the remaining life of a
/// consumed approval record. It only caps: the caller decides what a non-positive result
/// means for its path.
pub fn cap_ttl(ttl: i64, limit_seconds: i64) -> i64 {
    ttl.min(limit_seconds)
}

/// The limits a delegation edge puts on a mandate's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelegationLimits {
    /// The edge's own expiry.
    pub edge_expires_at: DateTime<Utc>,
    /// `constraints.ttl_seconds`, if set.
    pub ttl_seconds: Option<i64>,
    /// `constraints.expires_at`, if set.
    pub expires_at: Option<DateTime<Utc>>,
}

impl DelegationLimits {
    /// The limits of `edge`: its expiry and its typed constraints. A constraint of the wrong
    /// type (a non-integer `ttl_seconds`, an `expires_at` that is not an RFC 3339 string) is
    /// [`TtlError::BadConstraint`]: fail closed rather than ignore it.
    pub fn from_edge(edge: &DelegationEdge) -> Result<Self, TtlError> {
        Self::from_constraints(edge.expires_at, &edge.constraints_json)
    }

    /// As [`Self::from_edge`], from the parts.
    pub fn from_constraints(
        edge_expires_at: DateTime<Utc>,
        constraints: &Map<String, Value>,
    ) -> Result<Self, TtlError> {
        let ttl_seconds = match constraints.get("ttl_seconds") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or(TtlError::BadConstraint)?),
        };
        let expires_at = match constraints.get("expires_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|_| TtlError::BadConstraint)?
                    .with_timezone(&Utc),
            ),
            Some(_) => return Err(TtlError::BadConstraint),
        };
        Ok(Self {
            edge_expires_at,
            ttl_seconds,
            expires_at,
        })
    }

    /// Cap `ttl` (already through [`requested_ttl`]): an *explicit* request above
    /// `constraints.ttl_seconds` is refused; otherwise
    /// `min(ttl, edge expiry − now, constraints.ttl_seconds, constraints.expires_at − now)`,
    /// which must stay positive.
    pub fn cap(&self, ttl: i64, explicit: bool, now: DateTime<Utc>) -> Result<i64, TtlError> {
        let mut effective = ttl;
        if let Some(limit) = self.ttl_seconds {
            if explicit && ttl > limit {
                return Err(TtlError::ExceedsDelegationTtl);
            }
            effective = effective.min(limit);
        }
        effective = effective.min((self.edge_expires_at - now).num_seconds());
        if let Some(at) = self.expires_at {
            effective = effective.min((at - now).num_seconds());
        }
        if effective <= 0 {
            return Err(TtlError::DelegationExpired);
        }
        Ok(effective)
    }
}

/// `(iat, exp)` for a mandate issued at `now` that lives `ttl` seconds.
pub fn issue_times(now: DateTime<Utc>, ttl: i64) -> Result<(i64, i64), TtlError> {
    let iat = now.timestamp();
    let exp = iat.checked_add(ttl).ok_or(TtlError::OutOfRange)?;
    Ok((iat, exp))
}

/// A fresh `jti`: a UUIDv7 string from the injected generator.
pub fn new_jti(ids: &dyn IdGen) -> String {
    ids.next_id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_779_364_800, 0).unwrap_or_default()
    }

    #[test]
    fn requested_ttl_defaults_and_caps() {
        assert_eq!(requested_ttl(None, false), Ok(900));
        assert_eq!(requested_ttl(Some(0), true), Ok(900));
        assert_eq!(requested_ttl(Some(3600), false), Ok(3600));
        assert_eq!(
            requested_ttl(Some(3601), false),
            Err(TtlError::ExceedsCap { cap: 3600 })
        );
        assert_eq!(requested_ttl(Some(900), true), Ok(900));
        assert_eq!(
            requested_ttl(Some(901), true),
            Err(TtlError::ExceedsCap { cap: 900 })
        );
        assert_eq!(requested_ttl(Some(-5), false), Err(TtlError::Negative));
        assert_eq!(TtlError::Negative.status(), 400);
        assert_eq!(TtlError::ExceedsCap { cap: 900 }.code(), "invalid_token");
        assert_eq!(
            TtlError::ExceedsCap { cap: 900 }.to_string(),
            "ttl_seconds exceeds token TTL cap"
        );
    }

    #[test]
    fn delegation_caps_by_edge_and_constraints() {
        let n = now();
        let map = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        let l = DelegationLimits::from_constraints(n + Duration::seconds(600), &map(json!({})))
            .unwrap();
        assert_eq!(l.cap(900, false, n), Ok(600));
        let l = DelegationLimits::from_constraints(
            n + Duration::seconds(6000),
            &map(json!({"ttl_seconds": 300, "expires_at": "2026-05-21T12:02:00Z"})),
        )
        .unwrap();
        assert_eq!(l.cap(900, false, n), Ok(120));
        assert_eq!(l.cap(900, true, n), Err(TtlError::ExceedsDelegationTtl));
        assert_eq!(l.cap(200, true, n), Ok(120));
        let l = DelegationLimits::from_constraints(n, &map(json!({}))).unwrap();
        assert_eq!(l.cap(900, false, n), Err(TtlError::DelegationExpired));
        assert_eq!(TtlError::DelegationExpired.status(), 403);
        assert_eq!(
            DelegationLimits::from_constraints(n, &map(json!({"ttl_seconds": "x"}))),
            Err(TtlError::BadConstraint)
        );
        assert_eq!(
            DelegationLimits::from_constraints(n, &map(json!({"expires_at": "soon"}))),
            Err(TtlError::BadConstraint)
        );
        assert_eq!(cap_ttl(900, 60), 60);
    }

    #[test]
    fn issue_times_and_overflow() {
        assert_eq!(issue_times(now(), 900), Ok((1_779_364_800, 1_779_365_700)));
        assert_eq!(issue_times(now(), i64::MAX), Err(TtlError::OutOfRange));
    }
}
