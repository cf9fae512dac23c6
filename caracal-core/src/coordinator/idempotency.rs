//! `Idempotency-Key` on session start and delegation create (reference `control-plane.md`
//! §2.1, `http-bodies.md` §11.1).
//!
//! The receipt is read and written inside the same zone unit of work as the effect, so two
//! requests with one key serialise and the receipt exists iff the effect committed. Keys are
//! stored only as HMAC-SHA256 digests under the deployment's idempotency key (the previous
//! key is also matched, for rotation); the request is stored as the SHA-256 of its canonical
//! JSON (object keys sorted recursively, no whitespace), which the route builds from the
//! normalised request **including the caller principal** (`client_id`, `subject`).
//!
//! Outcomes: same key and request → the stored response is replayed while the created
//! session / edge is still live (else `409 idempotency_result_inactive`); same key, other
//! request → `409 idempotency_key_conflict`; too many live receipts for the scope → `429
//! idempotency_receipt_limit_exceeded`.

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{CoordinatorError, CoordinatorResult};
use crate::store::coordinator::{CoordinatorTx, IdempotencyReceipt, IdempotentOperation};

type HmacSha256 = Hmac<Sha256>;

/// Live receipts allowed per `(operation, zone, scope)` (`IDEMPOTENCY_MAX_RECEIPTS_PER_SCOPE`).
pub const MAX_RECEIPTS_PER_SCOPE: u64 = 10_000;
/// Receipt retention (`IDEMPOTENCY_RETENTION_SECONDS`, 7 days).
pub const RETENTION: Duration = Duration::days(7);
/// Retention of a receipt whose key the client generated (`Idempotency-Key-Kind: generated`).
pub const GENERATED_RETENTION: Duration = Duration::days(1);
/// Longest key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// The HMAC keys the digests are computed under: the current one, and the previous one
/// during a rotation. Never logged (no `Debug` of the bytes).
#[derive(Clone)]
pub struct IdempotencyKeys {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
}

impl std::fmt::Debug for IdempotencyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyKeys").finish_non_exhaustive()
    }
}

impl IdempotencyKeys {
    /// Keys from `IDEMPOTENCY_HMAC_KEY` and its optional predecessor.
    pub fn new(current: Vec<u8>, previous: Option<Vec<u8>>) -> Self {
        Self { current, previous }
    }

    fn digest(key: &[u8], value: &str) -> [u8; 32] {
        // HMAC accepts keys of any length; the fallback is never taken.
        match HmacSha256::new_from_slice(key) {
            Ok(mut m) => {
                m.update(value.as_bytes());
                m.finalize().into_bytes().into()
            }
            Err(_) => Sha256::digest(value.as_bytes()).into(),
        }
    }

    /// The digest a new receipt is stored under.
    pub fn current_digest(&self, idempotency_key: &str) -> [u8; 32] {
        Self::digest(&self.current, idempotency_key)
    }

    /// Every digest a stored receipt may be under: current first, then previous.
    pub fn lookup_digests(&self, idempotency_key: &str) -> Vec<[u8; 32]> {
        let mut out = vec![self.current_digest(idempotency_key)];
        if let Some(p) = &self.previous {
            out.push(Self::digest(p, idempotency_key));
        }
        out
    }
}

/// The `Idempotency-Key` header values → the key: exactly one value (else
/// `idempotency_key_multiple`), non-empty, no leading / trailing whitespace, ≤255 bytes, no
/// control characters (else `idempotency_key_invalid`). No header → `None`.
pub fn parse_key_header(values: &[&str]) -> CoordinatorResult<Option<String>> {
    match values {
        [] => Ok(None),
        [one] => {
            let ok = !one.is_empty()
                && one.trim() == *one
                && one.len() <= MAX_KEY_BYTES
                && !one.chars().any(char::is_control);
            if ok {
                Ok(Some((*one).to_owned()))
            } else {
                Err(CoordinatorError::IdempotencyKeyInvalid)
            }
        }
        _ => Err(CoordinatorError::IdempotencyKeyMultiple),
    }
}

/// Canonical JSON: object keys sorted recursively, no whitespace.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String(k.clone()),
                        canonical_json(&m[k.as_str()])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// SHA-256 of [`canonical_json`].
pub fn request_digest(v: &Value) -> [u8; 32] {
    Sha256::digest(canonical_json(v).as_bytes()).into()
}

/// An idempotent request as the route presents it.
#[derive(Debug, Clone)]
pub struct Idempotency<'a> {
    /// The HMAC keys.
    pub keys: &'a IdempotencyKeys,
    /// The validated `Idempotency-Key`.
    pub key: &'a str,
    /// The normalised request, including `principal: {client_id, subject}`.
    pub request: &'a Value,
    /// `Idempotency-Key-Kind: generated` (shorter retention; sessions only in the reference).
    pub generated: bool,
}

/// A fresh result, or the stored response of an earlier identical request.
#[derive(Debug, Clone, PartialEq)]
pub enum Idempotent<T> {
    /// The effect ran now.
    Fresh(T),
    /// Replay (`Idempotency-Replayed: true`) of the stored status and JSON body.
    Replayed {
        /// The stored status.
        status: u16,
        /// The stored JSON body.
        body: String,
    },
}

/// What [`lookup`] found.
pub(crate) enum Lookup {
    /// No receipt: run the effect, then [`record`].
    Miss,
    /// A receipt for the same request: replay it if `result_id` is still live.
    Hit(IdempotencyReceipt),
}

/// Read the receipt for `idem` in `tx`: conflict on another request, the per-scope cap when
/// there is none.
pub(crate) async fn lookup(
    tx: &mut dyn CoordinatorTx,
    operation: IdempotentOperation,
    scope_id: &str,
    idem: &Idempotency<'_>,
    now: DateTime<Utc>,
) -> CoordinatorResult<Lookup> {
    let wanted = request_digest(idem.request);
    for digest in idem.keys.lookup_digests(idem.key) {
        if let Some(r) = tx.get_receipt(operation, scope_id, &digest, now).await? {
            if bool::from(r.request_digest.ct_eq(&wanted)) {
                return Ok(Lookup::Hit(r));
            }
            return Err(CoordinatorError::IdempotencyKeyConflict);
        }
    }
    if tx.count_receipts(operation, scope_id, now).await? >= MAX_RECEIPTS_PER_SCOPE {
        return Err(CoordinatorError::IdempotencyReceiptLimitExceeded);
    }
    Ok(Lookup::Miss)
}

/// Store the receipt of a fresh effect in `tx` (committed with it).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record(
    tx: &mut dyn CoordinatorTx,
    operation: IdempotentOperation,
    scope_id: &str,
    idem: &Idempotency<'_>,
    result_id: &str,
    status: u16,
    body: String,
    now: DateTime<Utc>,
) -> CoordinatorResult<()> {
    let retention = if idem.generated {
        GENERATED_RETENTION
    } else {
        RETENTION
    };
    tx.put_receipt(&IdempotencyReceipt {
        operation,
        zone_id: tx.zone_id().to_owned(),
        scope_id: scope_id.to_owned(),
        key_digest: idem.keys.current_digest(idem.key),
        request_digest: request_digest(idem.request),
        result_id: result_id.to_owned(),
        response_status: status,
        response_json: body,
        created_at: now,
        expires_at: now + retention,
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_rules() {
        assert_eq!(parse_key_header(&[]).unwrap(), None);
        assert_eq!(parse_key_header(&["k-1"]).unwrap().as_deref(), Some("k-1"));
        for bad in [" k", "k ", "", "a\u{7}b"] {
            assert_eq!(
                parse_key_header(&[bad]).unwrap_err().code(),
                "idempotency_key_invalid"
            );
        }
        let long = "x".repeat(256);
        assert!(parse_key_header(&[&long]).is_err());
        assert_eq!(
            parse_key_header(&["a", "b"]).unwrap_err().code(),
            "idempotency_key_multiple"
        );
    }

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "s"}], "c": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":null,"d":[1,{"y":"s","z":0}]},"b":1}"#
        );
        let b = json!({"a": {"c": null, "d": [1, {"y": "s", "z": 0}]}, "b": 1});
        assert_eq!(request_digest(&a), request_digest(&b));
    }

    #[test]
    fn digests_match_under_rotation() {
        let old = IdempotencyKeys::new(b"old-key".to_vec(), None);
        let new = IdempotencyKeys::new(b"new-key".to_vec(), Some(b"old-key".to_vec()));
        assert_ne!(old.current_digest("k"), new.current_digest("k"));
        assert!(new.lookup_digests("k").contains(&old.current_digest("k")));
    }
}
