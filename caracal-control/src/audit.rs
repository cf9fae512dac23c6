//! The admin audit chain of both surfaces (reference `audit-streams-schema.md` §2.14): every
//! authenticated mutating request that succeeds (status < 400) is appended to the chain of
//! its zone (or the global chain) **before** its response is sent. If the append fails, the
//! response is replaced by `500 {"error":"audit_unavailable"}`, even though the mutation was
//! applied: the caller then knows the change is not accounted for and can retry or escalate.
//!
//! One middleware ([`record_mutations`]) does this for every route of a router, so no handler
//! can forget it. It learns who called from an [`AuditActor`] in the request's extensions (the
//! Admin API's gate puts it there before the middleware runs) or from the [`ActorSlot`] the
//! middleware hands down (the Coordinator's extractors fill it, since they run inside the
//! handler). The entity is read from the matched route template (`…/applications/{id}` →
//! `application`, the path's id) or, for a create, from the response body's id.
//!
//! Request and response bodies are never recorded (`payload` stays empty): they may carry
//! secrets (client secrets, admin tokens, provider credentials).

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use caracal_core::api::ApiError;
use caracal_core::audit::{AuditHmacKey, VerifyReport};
use caracal_core::clock::SharedClock;
use caracal_core::ids::SharedIdGen;
use caracal_core::store::StoreResult;
use caracal_core::store::admin_audit::{
    AdminAuditEntry, AdminAuditRecord, AdminAuditStore, verify_admin_audit,
};
use caracal_service::http::{HttpError, RequestId};
use chrono::SubsecRound;
use serde::Serialize;
use serde_json::Value;

/// The error code of a mutation whose audit record could not be written.
pub const AUDIT_UNAVAILABLE: &str = "audit_unavailable";

/// Largest mutation response the middleware buffers (to find a created entity's id before
/// the record is written). Mutation responses are small JSON documents built by the handlers;
/// one beyond this bound cannot be accounted for and fails closed as `audit_unavailable`.
pub const MAX_INSPECTED_BODY: usize = 16 * 1024 * 1024;

/// The admin audit chain of a deployment: the store, the HMAC key, the clock and the ids.
#[derive(Clone)]
pub struct AdminAuditLog {
    store: Arc<dyn AdminAuditStore>,
    key: Option<AuditHmacKey>,
    clock: SharedClock,
    ids: SharedIdGen,
}

impl std::fmt::Debug for AdminAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuditLog")
            .field("signed", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl AdminAuditLog {
    /// A log over `store`, signing links with `key` (`None`: unsigned links, as the reference
    /// allows; only for hosts whose random generator failed).
    pub fn new(
        store: Arc<dyn AdminAuditStore>,
        key: Option<AuditHmacKey>,
        clock: SharedClock,
        ids: SharedIdGen,
    ) -> Self {
        Self {
            store,
            key,
            clock,
            ids,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn AdminAuditStore> {
        &self.store
    }

    /// Append one record (the id and `occurred_at` are set here).
    pub async fn append(&self, mut entry: AdminAuditEntry) -> StoreResult<AdminAuditRecord> {
        entry.id = self.ids.next_id();
        entry.occurred_at = self.clock.now().trunc_subsecs(3);
        self.store
            .append_admin_audit(&entry, self.key.as_ref())
            .await
    }

    /// Verify a whole chain (a zone's, or the global one for `None`) under this log's key.
    pub async fn verify(&self, zone_id: Option<&str>) -> StoreResult<VerifyReport> {
        verify_admin_audit(self.store.as_ref(), zone_id, self.key.as_ref()).await
    }
}

/// A fresh random key for a deployment without `ADMIN_AUDIT_HMAC_KEY` (dev and embedded
/// hosts only: links signed by it cannot be verified after a restart). `None` when the OS
/// random generator fails (callers refuse to start then).
pub fn ephemeral_key() -> Option<AuditHmacKey> {
    let hex = caracal_core::secrets::envelope::Kek::generate_hex().ok()?;
    AuditHmacKey::from_hex(&hex).ok()
}

/// Who made a request, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditActor {
    /// `admin:<token id>`, or the Coordinator caller's `client_id`.
    pub id: String,
    /// Display name (admin token name, mandate subject).
    pub name: Option<String>,
    /// `global` / `zone` (admin tokens), `session` / `operator` (Coordinator).
    pub scope: Option<String>,
}

/// A slot the middleware puts into the request for authentication that runs inside the
/// handler (the Coordinator's extractors) to record the caller in.
#[derive(Debug, Clone, Default)]
pub struct ActorSlot(Arc<Mutex<Option<AuditActor>>>);

impl ActorSlot {
    /// Record the caller.
    pub fn set(&self, actor: AuditActor) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(actor);
    }

    /// The recorded caller.
    pub fn get(&self) -> Option<AuditActor> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How a surface plugs into [`record_mutations`].
#[derive(Clone)]
pub struct AuditLayer {
    /// The chain.
    pub log: AdminAuditLog,
    /// Requests that change nothing (never recorded).
    pub is_read: fn(&Method, &str) -> bool,
    /// The zone a path targets (`None`: the global chain).
    pub zone_of: fn(&str) -> Option<&str>,
}

impl std::fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLayer").finish_non_exhaustive()
    }
}

/// The middleware: run the request; if it was an authenticated mutation that succeeded,
/// append its record before the response leaves, or answer `500 audit_unavailable`.
pub async fn record_mutations(
    State(layer): State<Arc<AuditLayer>>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if (layer.is_read)(&method, &path) {
        return next.run(request).await;
    }
    let slot = ActorSlot::default();
    request.extensions_mut().insert(slot.clone());
    let given = request.extensions().get::<AuditActor>().cloned();
    let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone());
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if status >= 400 {
        return response;
    }
    let Some(actor) = given.or_else(|| slot.get()) else {
        // Unauthenticated requests change nothing (every mutating route authenticates).
        return response;
    };
    let (entity_type, mut entity_id) = entity_of(template.as_deref(), &path);
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_INSPECTED_BODY).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "admin audit: response body unreadable");
            return unavailable();
        }
    };
    if entity_id.is_none() {
        entity_id = id_in_body(&bytes);
    }
    let entry = AdminAuditEntry {
        id: String::new(),
        request_id,
        actor_id: Some(actor.id),
        actor_name: actor.name,
        actor_scope: actor.scope,
        method: method.as_str().to_owned(),
        path: path.clone(),
        zone_id: (layer.zone_of)(&path).map(str::to_owned),
        entity_type,
        entity_id,
        status_code: i32::from(status),
        payload: String::new(),
        occurred_at: chrono::DateTime::<chrono::Utc>::MIN_UTC,
    };
    match layer.log.append(entry).await {
        Ok(_) => Response::from_parts(parts, Body::from(bytes)),
        Err(e) => {
            tracing::error!(error = %e, %path, "admin audit append failed; answering audit_unavailable");
            unavailable()
        }
    }
}

fn unavailable() -> Response {
    HttpError(ApiError::new(500, AUDIT_UNAVAILABLE)).into_response()
}

/// Trailing path segments that name an action on the entity before them, not a collection.
const ACTIONS: &[&str] = &[
    "suspend",
    "resume",
    "revoke",
    "lease",
    "heartbeat",
    "rotate-secret",
    "approve",
    "reject",
    "activate",
    "simulate",
    "requeue",
    "validate",
    "test",
];

/// `applications` → `application`, `policy-sets` → `policy_set`, `policies` → `policy`.
fn singular(collection: &str) -> String {
    let s = collection.replace('-', "_");
    if let Some(stem) = s.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = s.strip_suffix('s') {
        stem.to_owned()
    } else {
        s
    }
}

fn is_param(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// The entity a request changed, from the matched route template and the concrete path:
/// `(type, id)`, the id `None` when the path does not carry it (a create).
pub fn entity_of(template: Option<&str>, path: &str) -> (Option<String>, Option<String>) {
    let Some(template) = template else {
        return (None, None);
    };
    let t: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let p: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut end = t.len();
    if t.last().is_some_and(|s| ACTIONS.contains(s)) {
        end -= 1;
    }
    match end.checked_sub(1).and_then(|i| t.get(i).map(|s| (i, *s))) {
        Some((i, last)) if is_param(last) => {
            let kind = i.checked_sub(1).and_then(|j| t.get(j)).map(|s| singular(s));
            (kind, p.get(i).map(|s| (*s).to_owned()))
        }
        Some((_, last)) => (Some(singular(last)), None),
        None => (None, None),
    }
}

/// The id of what a response created: its `id` (or the Coordinator's named ids).
fn id_in_body(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    [
        "id",
        "delegation_edge_id",
        "agent_session_id",
        "subject_id",
        "version_id",
    ]
    .iter()
    .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_owned))
}

/// One record on the wire (an item of the admin audit lists), with its chain columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AdminAuditItem {
    /// Record id (UUIDv7).
    pub id: String,
    /// The request's `X-Request-Id`.
    pub request_id: Option<String>,
    /// `admin:<token id>`, or the Coordinator caller.
    pub actor_id: Option<String>,
    /// The actor's name.
    pub actor_name: Option<String>,
    /// The actor's scope.
    pub actor_scope: Option<String>,
    /// `"<METHOD> <path>"`.
    pub action: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// The zone (null on the global chain).
    pub zone_id: Option<String>,
    /// Kind of entity changed.
    pub entity_type: Option<String>,
    /// Id of the entity changed.
    pub entity_id: Option<String>,
    /// Response status.
    pub status_code: i32,
    /// ISO-8601 with milliseconds.
    pub occurred_at: String,
    /// Content hash (hex).
    pub content_sha256: String,
    /// The previous record's content hash (null for the first).
    pub prev_content_sha256: Option<String>,
    /// `HMAC(content | prev)` (hex).
    pub chain_hmac: String,
    /// Dense sequence from 1.
    pub chain_seq: i64,
}

impl From<&AdminAuditRecord> for AdminAuditItem {
    fn from(r: &AdminAuditRecord) -> Self {
        let e = &r.entry;
        Self {
            id: e.id.clone(),
            request_id: e.request_id.clone(),
            actor_id: e.actor_id.clone(),
            actor_name: e.actor_name.clone(),
            actor_scope: e.actor_scope.clone(),
            action: r.action.clone(),
            method: e.method.clone(),
            path: e.path.clone(),
            zone_id: e.zone_id.clone(),
            entity_type: e.entity_type.clone(),
            entity_id: e.entity_id.clone(),
            status_code: e.status_code,
            occurred_at: caracal_core::model::time::format_iso_ms(&e.occurred_at),
            content_sha256: r.content_sha256.clone(),
            prev_content_sha256: r.prev_content_sha256.clone(),
            chain_hmac: r.chain_hmac.clone(),
            chain_seq: r.chain_seq,
        }
    }
}

/// A page of the admin audit chain: `{items, next_cursor}` (the last `chain_seq` when full).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AdminAuditPage {
    /// Records, ascending `chain_seq`.
    pub items: Vec<AdminAuditItem>,
    /// Where the next page starts, or null.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_from_templates() {
        let e = |t: &str, p: &str| entity_of(Some(t), p);
        assert_eq!(
            e(
                "/v1/zones/{zone_id}/applications",
                "/v1/zones/z/applications"
            ),
            (Some("application".into()), None)
        );
        assert_eq!(
            e(
                "/v1/zones/{zone_id}/applications/{id}/rotate-secret",
                "/v1/zones/z/applications/a1/rotate-secret"
            ),
            (Some("application".into()), Some("a1".into()))
        );
        assert_eq!(
            e("/v1/zones/{id}", "/v1/zones/z"),
            (Some("zone".into()), Some("z".into()))
        );
        assert_eq!(
            e(
                "/v1/zones/{zone_id}/policy-sets/{id}/activate",
                "/v1/zones/z/policy-sets/p/activate"
            ),
            (Some("policy_set".into()), Some("p".into()))
        );
        assert_eq!(
            e(
                "/v1/zones/{zone_id}/subjects/revoke",
                "/v1/zones/z/subjects/revoke"
            ),
            (Some("subject".into()), None)
        );
        assert_eq!(
            e(
                "/zones/{zone_id}/agents/{id}/suspend",
                "/zones/z/agents/s1/suspend"
            ),
            (Some("agent".into()), Some("s1".into()))
        );
        assert_eq!(entity_of(None, "/x"), (None, None));
        assert_eq!(
            id_in_body(br#"{"delegation_edge_id":"e1"}"#),
            Some("e1".into())
        );
    }

    #[test]
    fn ephemeral_keys_are_full_length() {
        assert_eq!(ephemeral_key().unwrap().len(), 32);
    }
}
