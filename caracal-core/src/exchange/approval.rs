//! Human approval holds in the STS core (reference `sts.md` §1.3, §1.4, §4.6).
//!
//! A mint whose policy allow carries `step_up_required` is held until a human decides. This
//! module owns every rule of that life, once, for both the exchange and the decision planes:
//!
//! - **Binding** ([`binding_hash`]): the SHA-256 over the exact request the hold approves
//!   (resources, scopes, principal, authority record, Session, delegation, application and the
//!   policy bundle + decision contract in force). A policy rollout changes the hash, so it
//!   invalidates outstanding approvals.
//! - **Shape** ([`merge_tiers`]): the matched tier declarations merged into one hold
//!   (tier label, approver class, privacy, TTL).
//! - **Issue** ([`issue_or_converge`]): idempotent; one live hold per
//!   (zone, principal, authority record, binding), atomically in the store.
//! - **Retry** ([`check_retry`]): a request naming `approval_id`, checked without consuming.
//! - **Consume** ([`consume`]): the approved hold and the new authority record, atomically,
//!   as the last fallible step before signing, so an earlier deny never burns an approval.
//! - **Observe** ([`ApprovalView`], [`ApprovalWaiters`], [`wait_for_decision`]): the
//!   capability read of `GET /approvals/{id}` and its long poll.
//! - **Decide** ([`decide_as_subject`] for the STS subject plane, [`decide`] shared with the
//!   operator plane): one conditional update, an audit event, and a wake-up of the pollers.
//!
//! Every store failure on these paths fails closed: nothing is minted or decided.
//!
//! The HTTP layer owns transport only: path-id syntax is checked here too ([`load_hold`]),
//! but bearer extraction and mandate verification (`use=session` of the hold's zone) happen
//! before [`decide_as_subject`]; the 401 of [`interaction_required`] must be sent with
//! [`INTERACTION_REQUIRED_CHALLENGE`] as `WWW-Authenticate` (test with
//! [`is_interaction_required`]).

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use super::ExchangeResult;
use crate::api::ApiError;
use crate::audit::sink::AuditSink;
use crate::audit::{AuditEvent, JsonText};
use crate::clock::SharedClock;
use crate::ids::{IdGen, UuidV7, is_uuid};
use crate::mandate::claims::MandateClaims;
use crate::model::approval::{Approval, ApprovalState, ApproverClass, HUMAN_APPROVAL, PrivacyMode};
use crate::model::authority::{AuthorityRecord, SubjectType};
use crate::model::policy::PolicyResult;
use crate::store::StoreError;
use crate::store::approvals::{ApprovalDecision, ApprovalStore, ApprovalUpdate};
use crate::store::authority::AuthorityStore;

/// The error code of the approval-hold 401, and the `error` parameter of its
/// `WWW-Authenticate` challenge.
pub const INTERACTION_REQUIRED: &str = "interaction_required";

/// The `WWW-Authenticate` value the HTTP layer sends with an [`interaction_required`] error.
pub const INTERACTION_REQUIRED_CHALLENGE: &str = "Bearer error=\"interaction_required\"";

/// The reference's description of the approval-hold 401.
pub const INTERACTION_REQUIRED_DESCRIPTION: &str = "Human approval required for this request";

/// How long after consumption the same caller, presenting the same binding, may have a
/// bearer re-issued for the authority record the consumption created. It exists for one
/// failure only: the mint succeeded and the response was lost in transit.
pub const REISSUE_WINDOW: chrono::Duration = chrono::Duration::minutes(2);

/// The longest `GET /approvals/{id}?wait=` long poll.
pub const MAX_WAIT: Duration = Duration::from_secs(25);

/// The fallback re-read interval of a long poll, for decisions made by another process whose
/// wake-up did not reach this one.
pub const WAIT_TICK: Duration = Duration::from_secs(5);

/// The longest decision reason, in characters.
pub const REASON_MAX_CHARS: usize = 500;

/// Hold lifetime bounds (reference §4.6): subject-decidable holds are interactive consent,
/// operator holds an administrative review.
const MIN_TTL_SECONDS: i64 = 60;
const SUBJECT_DEFAULT_TTL_SECONDS: i64 = 15 * 60;
const SUBJECT_MAX_TTL_SECONDS: i64 = 24 * 3600;
const OPERATOR_DEFAULT_TTL_SECONDS: i64 = 4 * 3600;
const OPERATOR_MAX_TTL_SECONDS: i64 = 7 * 24 * 3600;

// ---------------------------------------------------------------------------------------------
// Binding
// ---------------------------------------------------------------------------------------------

/// The inputs of the binding hash (§4.6). Empty strings stand for absent values (a workload
/// hold has only `principal` and the bundle fields).
#[derive(Debug, Clone, Copy)]
pub struct BindingInput<'a> {
    /// Requested resources (canonicalised: trimmed, lowercased, distinct, sorted, empties
    /// dropped).
    pub resources: &'a [String],
    /// Requested scopes (canonicalised: trimmed, distinct, sorted, empties dropped).
    pub scopes: &'a [String],
    /// The principal id.
    pub principal: &'a str,
    /// The requester's authority record id.
    pub authority_record: &'a str,
    /// The governed Session (`agent_session_id`).
    pub session: &'a str,
    /// The delegation edge id.
    pub delegation: &'a str,
    /// The requesting application.
    pub application: &'a str,
    /// The zone's active policy set version.
    pub policy_set_version: &'a str,
    /// The active manifest's SHA-256.
    pub policy_manifest: &'a str,
    /// The decision contract version.
    pub contract_version: &'a str,
    /// The decision contract's SHA-256.
    pub contract_sha: &'a str,
}

fn canonical(values: &[String], lower: bool) -> String {
    let set: BTreeSet<String> = values
        .iter()
        .map(|v| {
            let v = v.trim();
            if lower {
                v.to_lowercase()
            } else {
                v.to_owned()
            }
        })
        .filter(|v| !v.is_empty())
        .collect();
    set.into_iter().collect::<Vec<_>>().join("\n")
}

/// The binding hash (§4.6) as lowercase hex: SHA-256 of the reference's concatenation
/// `resources\0…\0scopes\0…\0principal\0…\0authority_record\0…\0session\0…\0delegation\0…
/// \0application\0…\0policy_set_version\0…\0policy_manifest\0…\0decision_contract_version\0…
/// \0decision_contract_sha\0…`. Each section has its own marker, so equal text in different
/// fields cannot collide.
pub fn binding_hash(input: &BindingInput<'_>) -> String {
    let mut h = Sha256::new();
    h.update(b"resources\0");
    h.update(canonical(input.resources, true).as_bytes());
    h.update(b"\0scopes\0");
    h.update(canonical(input.scopes, false).as_bytes());
    for (marker, value) in [
        ("principal", input.principal),
        ("authority_record", input.authority_record),
        ("session", input.session),
        ("delegation", input.delegation),
        ("application", input.application),
        ("policy_set_version", input.policy_set_version),
        ("policy_manifest", input.policy_manifest),
        ("decision_contract_version", input.contract_version),
        ("decision_contract_sha", input.contract_sha),
    ] {
        h.update(b"\0");
        h.update(marker.as_bytes());
        h.update(b"\0");
        h.update(value.as_bytes());
    }
    hex::encode(h.finalize())
}

// ---------------------------------------------------------------------------------------------
// Tier declarations
// ---------------------------------------------------------------------------------------------

/// One matched approval declaration, as the policy contract emits it
/// (`{tier, approver?, ttl_seconds?, privacy?}`): the element type of
/// [`Evaluation::matched_approvals`](crate::policy::contract::Evaluation::matched_approvals)
/// and of the `step_up_required.tiers` diagnostic.
pub type TierDeclaration = Map<String, Value>;

/// The tier declarations of a wire policy result: every object with a non-empty string
/// `tier` under a `step_up_required.tiers` diagnostic. Used when the result came from an
/// engine other than the native contract (which offers
/// [`matched_approvals`](crate::policy::contract::Evaluation::matched_approvals) directly).
/// The contract already denies malformed approval data, so a malformed entry is skipped,
/// not repaired.
pub fn tier_declarations(result: &PolicyResult) -> Vec<&TierDeclaration> {
    result
        .diagnostics
        .iter()
        .filter_map(|d| d.get("step_up_required")?.get("tiers")?.as_array())
        .flatten()
        .filter_map(Value::as_object)
        .filter(|d| {
            d.get("tier")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty())
        })
        .collect()
}

/// The merged shape of one hold covering several matched declarations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedTiers {
    /// Distinct tiers, sorted, comma-joined.
    pub tier: String,
    /// Who may decide.
    pub approver: ApproverClass,
    /// The most protective privacy mode declared.
    pub privacy: PrivacyMode,
    /// The hold's lifetime in seconds, within its class bounds.
    pub ttl_seconds: i64,
}

fn declared_approver(d: &TierDeclaration) -> ApproverClass {
    match d.get("approver").and_then(Value::as_str) {
        Some("subject") => ApproverClass::Subject,
        Some("any") => ApproverClass::Any,
        _ => ApproverClass::Operator,
    }
}

fn declared_privacy(d: &TierDeclaration) -> PrivacyMode {
    match d.get("privacy").and_then(Value::as_str) {
        Some("pseudonymous") => PrivacyMode::Pseudonymous,
        Some("anonymous") => PrivacyMode::Anonymous,
        _ => PrivacyMode::Identified,
    }
}

/// A declared positive integral `ttl_seconds` (JSON integer, or a float with no fraction).
fn declared_ttl(d: &TierDeclaration) -> Option<i64> {
    let n = d.get("ttl_seconds")?.as_number()?;
    let secs = match n.as_i64() {
        Some(i) => i,
        None => {
            let f = n.as_f64()?;
            if f.fract() != 0.0 || !(1.0..=9.0e15).contains(&f) {
                return None;
            }
            // INVARIANT: integral and within ±2^53, so the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let i = f as i64;
            i
        }
    };
    (secs > 0).then_some(secs)
}

/// The 403 of a mint whose tiers need both an operator and a subject decision (the caller
/// audits it as `approval_class_conflict`).
pub fn class_conflict() -> ApiError {
    ApiError::forbidden("access_denied")
        .with_description("approval requires separate operator and subject decisions")
}

/// Merge matched declarations into one hold shape (§4.6): distinct tiers sorted and
/// comma-joined; `any` yields to a specific class, and `operator` with `subject` is
/// [`class_conflict`]; the most protective privacy; the shortest declared TTL, else the class
/// default (15 min for subject/any, 4 h for operator), clamped to [60 s, 24 h] (subject/any)
/// or [60 s, 7 d] (operator). Absent or unknown values take the defaults (operator,
/// identified). An empty list is a caller bug and fails closed with 500. Takes owned
/// declarations (`&[Map]`, e.g. from [`PolicyResult`] diagnostics) or borrowed ones
/// (`&[&Map]`, from [`tier_declarations`] or `Evaluation::matched_approvals`).
pub fn merge_tiers<D: Borrow<TierDeclaration>>(decls: &[D]) -> ExchangeResult<MergedTiers> {
    if decls.is_empty() {
        return Err(ApiError::internal());
    }
    let mut tiers = BTreeSet::new();
    let mut approver: Option<ApproverClass> = None;
    let mut privacy = PrivacyMode::Identified;
    let mut ttl: Option<i64> = None;
    for d in decls {
        let d: &TierDeclaration = d.borrow();
        if let Some(t) = d.get("tier").and_then(Value::as_str) {
            tiers.insert(t);
        }
        let next = declared_approver(d);
        approver = Some(match (approver, next) {
            (None, b) => b,
            (Some(a), b) if a == b || b == ApproverClass::Any => a,
            (Some(ApproverClass::Any), b) => b,
            _ => return Err(class_conflict()),
        });
        let p = declared_privacy(d);
        if p.rank() > privacy.rank() {
            privacy = p;
        }
        if let Some(t) = declared_ttl(d) {
            ttl = Some(ttl.map_or(t, |cur| cur.min(t)));
        }
    }
    let approver = approver.unwrap_or_default();
    let (default, max) = if approver == ApproverClass::Operator {
        (OPERATOR_DEFAULT_TTL_SECONDS, OPERATOR_MAX_TTL_SECONDS)
    } else {
        (SUBJECT_DEFAULT_TTL_SECONDS, SUBJECT_MAX_TTL_SECONDS)
    };
    Ok(MergedTiers {
        tier: tiers.into_iter().collect::<Vec<_>>().join(","),
        approver,
        privacy,
        ttl_seconds: ttl.unwrap_or(default).clamp(MIN_TTL_SECONDS, max),
    })
}

// ---------------------------------------------------------------------------------------------
// Issue
// ---------------------------------------------------------------------------------------------

/// Everything needed to raise or converge on a hold.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    /// Zone.
    pub zone_id: String,
    /// The requesting principal (`sub`, else the application or workload id).
    pub principal_id: String,
    /// The requester's authority record id; `""` for none.
    pub authority_record_id: String,
    /// The requesting application.
    pub application_id: String,
    /// [`binding_hash`] of the request.
    pub binding: String,
    /// [`merge_tiers`] of the matched declarations.
    pub merged: MergedTiers,
    /// The federated subject the gated execution acts for: a user-typed subject token's
    /// `sub`, else the governed Session's subject when its record is user-typed.
    pub subject_anchor: Option<String>,
    /// Facts shown to the approver: `requested_scopes`, `resources`, `agent_session_id`,
    /// `agent_labels`, `delegation_edge_id`, and the provenance `policy_set_version_id`,
    /// `policy_manifest_sha` (or `manifest_sha256`), `decision_contract_version`,
    /// `decision_contract_sha` (the hold's audit events read the version and manifest back).
    pub metadata: Map<String, Value>,
}

/// Where a request stands against its hold after [`issue_or_converge`].
// Each variant carries the row by value and is matched at once; never stored in bulk.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum HoldOutcome {
    /// Approved: the mint proceeds and [`consume`]s it as its last step.
    Approved(Approval),
    /// Rejected (and not yet expired): 403 [`rejected`].
    Rejected(Approval),
    /// Waiting for a decision: 401 [`interaction_required`]. The caller audits
    /// `step_up_issued` only when `newly_created`.
    Pending {
        /// The live hold.
        approval: Approval,
        /// Whether this call created it.
        newly_created: bool,
    },
}

/// Log a store failure (without secrets) and turn it into the caller's 500.
fn internal(what: &str, e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "{what} failed");
    ApiError::internal()
}

/// Raise the hold for a request or converge on the live one (§4.6, §2.3 J). Idempotent: an
/// expired unconsumed hold of the same (zone, principal, record, binding) is dropped, then a
/// new one (id = random UUIDv4, the polling capability) is inserted unless a live one exists,
/// which is returned instead. Store failure → 500 `internal_error`.
pub async fn issue_or_converge(
    store: &dyn ApprovalStore,
    req: HoldRequest,
    now: DateTime<Utc>,
) -> ExchangeResult<HoldOutcome> {
    let hold = Approval {
        id: uuid::Uuid::new_v4().hyphenated().to_string(),
        zone_id: req.zone_id,
        session_id: req.authority_record_id,
        principal_id: req.principal_id,
        application_id: req.application_id,
        approval_type: HUMAN_APPROVAL.to_owned(),
        tier: req.merged.tier,
        approver_class: req.merged.approver,
        privacy_mode: req.merged.privacy,
        subject_anchor: req.subject_anchor,
        binding: req.binding,
        metadata_json: req.metadata,
        decision_reason: None,
        approver_subject_id: None,
        approver_session_id: None,
        created_at: now,
        expires_at: now + chrono::Duration::seconds(req.merged.ttl_seconds),
        satisfied_at: None,
        rejected_at: None,
        consumed_at: None,
        consumed_authority_record_id: None,
    };
    let issued = store
        .issue_approval(&hold, now)
        .await
        .map_err(|e| internal("approval hold issuance", &e))?;
    let approval = issued.approval;
    Ok(match approval.state(now) {
        ApprovalState::Approved => HoldOutcome::Approved(approval),
        ApprovalState::Rejected => HoldOutcome::Rejected(approval),
        // The store drops expired holds before converging and never returns a consumed one;
        // anything else waits for a decision.
        ApprovalState::Pending | ApprovalState::Expired | ApprovalState::Consumed => {
            HoldOutcome::Pending {
                approval,
                newly_created: issued.created,
            }
        }
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The approval-hold 401 (§1.1): `interaction_required` with `approval_id`, `approval_type`,
/// `state`, `tier` (omitted when empty), `binding` and `approval_expires_at` (RFC 3339). The
/// HTTP layer adds `WWW-Authenticate: `[`INTERACTION_REQUIRED_CHALLENGE`].
pub fn interaction_required(approval: &Approval, now: DateTime<Utc>) -> ApiError {
    let mut e = ApiError::unauthorized(INTERACTION_REQUIRED)
        .with_description(INTERACTION_REQUIRED_DESCRIPTION)
        .with_field("approval_id", Value::from(approval.id.as_str()))
        .with_field(
            "approval_type",
            Value::from(approval.approval_type.as_str()),
        )
        .with_field("state", Value::from(approval.state(now).as_str()));
    if !approval.tier.is_empty() {
        e = e.with_field("tier", Value::from(approval.tier.as_str()));
    }
    e.with_field("binding", Value::from(approval.binding.as_str()))
        .with_field(
            "approval_expires_at",
            Value::from(rfc3339(approval.expires_at)),
        )
}

/// Whether an error is the approval-hold 401 (the HTTP layer's cue for the challenge header).
pub fn is_interaction_required(err: &ApiError) -> bool {
    err.status == 401 && err.body.error == INTERACTION_REQUIRED
}

/// The 403 of a rejected hold.
pub fn rejected() -> ApiError {
    ApiError::forbidden("access_denied").with_description("approval was rejected")
}

/// The 409 of a hold already consumed (or no longer consumable).
pub fn already_consumed() -> ApiError {
    ApiError::conflict("approval_consumed").with_description("approval already consumed")
}

// ---------------------------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------------------------

/// The authorisation facts of a hold every step-up event and step-up deny carries (never
/// request business context); the expiry rides along so a consumer can state the response
/// window without reading a row that may already be swept.
pub fn hold_audit_meta(a: &Approval) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("challenge_id".into(), Value::from(a.id.as_str()));
    m.insert("tier".into(), Value::from(a.tier.as_str()));
    m.insert(
        "approver_class".into(),
        Value::from(a.approver_class.as_str()),
    );
    m.insert("privacy_mode".into(), Value::from(a.privacy_mode.as_str()));
    m.insert("binding".into(), Value::from(a.binding.as_str()));
    m.insert("expires_at".into(), Value::from(rfc3339(a.expires_at)));
    if !a.application_id.is_empty() {
        m.insert(
            "application_id".into(),
            Value::from(a.application_id.as_str()),
        );
    }
    if !a.session_id.is_empty() {
        m.insert("session_id".into(), Value::from(a.session_id.as_str()));
    }
    m
}

/// The first of `keys` that the hold's metadata holds as a string.
fn meta_str<'a>(a: &'a Approval, keys: &[&str]) -> &'a str {
    keys.iter()
        .find_map(|k| a.metadata_json.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
}

/// The naming fields of an event.
struct EventHead<'a> {
    zone_id: &'a str,
    event_type: &'a str,
    request_id: &'a str,
    decision: &'a str,
    evaluation_status: &'a str,
}

fn event(
    head: EventHead<'_>,
    bundle: Option<&Approval>,
    metadata: Map<String, Value>,
    now: DateTime<Utc>,
) -> AuditEvent {
    AuditEvent {
        id: UuidV7.next_id(),
        zone_id: head.zone_id.to_owned(),
        event_type: head.event_type.to_owned(),
        request_id: head.request_id.to_owned(),
        decision: head.decision.to_owned(),
        policy_set_id: String::new(),
        policy_set_version_id: bundle
            .map(|a| meta_str(a, &["policy_set_version_id"]).to_owned())
            .unwrap_or_default(),
        manifest_sha: bundle
            .map(|a| meta_str(a, &["policy_manifest_sha", "manifest_sha256"]).to_owned())
            .unwrap_or_default(),
        evaluation_status: head.evaluation_status.to_owned(),
        determining_policies_json: None,
        diagnostics_json: None,
        // Serialising a map of JSON values cannot fail; an event without metadata beats
        // none at all.
        metadata_json: JsonText::from_value(&Value::Object(metadata)).ok(),
        occurred_at: now,
    }
}

/// A step-up lifecycle event (`step_up_issued`, `step_up_decided`, `step_up_consumed`) of a
/// hold: `request_id` is the hold id, `decision` names the transition (for example `pending`,
/// `approved`, `rejected`, `consumed`), status `complete`, metadata [`hold_audit_meta`] plus
/// `extra` (for example `reissued: true` on a re-issue), and the hold's bundle provenance.
pub fn step_up_event(
    event_type: &str,
    decision: &str,
    approval: &Approval,
    extra: Map<String, Value>,
    now: DateTime<Utc>,
) -> AuditEvent {
    let mut meta = hold_audit_meta(approval);
    meta.extend(extra);
    event(
        EventHead {
            zone_id: &approval.zone_id,
            event_type,
            request_id: &approval.id,
            decision,
            evaluation_status: "complete",
        },
        Some(approval),
        meta,
        now,
    )
}

/// A `token_exchange` deny of an approval check, `evaluation_status` = `status`.
fn emit_deny(
    audit: &dyn AuditSink,
    request_id: &str,
    zone_id: &str,
    status: &str,
    approval: Option<&Approval>,
    approval_id: &str,
    now: DateTime<Utc>,
) {
    let mut meta = approval.map(hold_audit_meta).unwrap_or_default();
    meta.insert("approval_id".into(), Value::from(approval_id));
    audit.emit(event(
        EventHead {
            zone_id,
            event_type: "token_exchange",
            request_id,
            decision: "deny",
            evaluation_status: status,
        },
        approval,
        meta,
        now,
    ));
}

// ---------------------------------------------------------------------------------------------
// Retry
// ---------------------------------------------------------------------------------------------

/// The request facts a retry with `approval_id` is checked against (§2.3 G).
#[derive(Debug, Clone, Copy)]
pub struct RetryContext<'a> {
    /// The request's zone.
    pub zone_id: &'a str,
    /// The request's principal.
    pub principal_id: &'a str,
    /// The request's authority record id (`""` for none).
    pub authority_record_id: &'a str,
    /// [`binding_hash`] recomputed over this request and the bundle in force now.
    pub binding: &'a str,
    /// The `approval_id` presented.
    pub approval_id: &'a str,
    /// The request's correlation id (`request_id` of the deny events).
    pub request_id: &'a str,
}

/// What a valid retry may do.
// Matched at once by the exchange; never stored in bulk.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RetryOutcome {
    /// Approved: `challenge_resolved = true`, step-up gates are ignored, and the mint
    /// [`consume`]s the hold.
    Resolved(Approval),
    /// Consumed less than [`REISSUE_WINDOW`] ago with the identical binding: mint another
    /// bearer for the SAME authority record (no new record, no policy-driven hold), with a TTL
    /// of at most `remaining_seconds`, and audit `step_up_consumed` with `reissued: true`.
    Reissue {
        /// The consumed hold.
        approval: Approval,
        /// The record its consumption created (active and unexpired).
        authority_record: AuthorityRecord,
        /// The record's remaining life, in whole seconds (> 0).
        remaining_seconds: i64,
    },
}

fn binds(hold: &Approval, ctx: &RetryContext<'_>) -> bool {
    hold.approval_type == HUMAN_APPROVAL
        && hold.zone_id == ctx.zone_id
        && hold.principal_id == ctx.principal_id
        && hold.session_id == ctx.authority_record_id
        && bool::from(hold.binding.as_bytes().ct_eq(ctx.binding.as_bytes()))
}

/// Check a retry naming `approval_id` without consuming anything (§2.3 G, §4.6 "Retry").
///
/// The hold must exist in the zone, be `human_approval`, and match the principal, the
/// authority record id and the recomputed binding; otherwise 401 `access_denied` "approval
/// not found or bindings do not match". Then by state: pending → [`interaction_required`]
/// (same hold); rejected → 403 [`rejected`]; expired → 401 "approval expired"; consumed →
/// [`RetryOutcome::Reissue`] inside the re-issue window when the created record is still
/// active, else 409 [`already_consumed`]; approved → [`RetryOutcome::Resolved`].
///
/// Every deny it returns is audited as a `token_exchange` deny with `evaluation_status`
/// `approval_invalid`, `approval_rejected`, `approval_expired` or
/// `approval_already_consumed`. A store failure is 500 (fail closed, not audited here).
pub async fn check_retry(
    store: &dyn ApprovalStore,
    authority: &dyn AuthorityStore,
    audit: &dyn AuditSink,
    ctx: &RetryContext<'_>,
    now: DateTime<Utc>,
) -> ExchangeResult<RetryOutcome> {
    let found = store
        .get_approval(ctx.zone_id, ctx.approval_id)
        .await
        .map_err(|e| internal("approval lookup", &e))?;
    let Some(hold) = found.filter(|h| binds(h, ctx)) else {
        emit_deny(
            audit,
            ctx.request_id,
            ctx.zone_id,
            "approval_invalid",
            None,
            ctx.approval_id,
            now,
        );
        return Err(ApiError::unauthorized("access_denied")
            .with_description("approval not found or bindings do not match"));
    };
    match hold.state(now) {
        ApprovalState::Approved => Ok(RetryOutcome::Resolved(hold)),
        ApprovalState::Pending => Err(interaction_required(&hold, now)),
        ApprovalState::Rejected => {
            emit_deny(
                audit,
                ctx.request_id,
                ctx.zone_id,
                "approval_rejected",
                Some(&hold),
                &hold.id,
                now,
            );
            Err(rejected())
        }
        ApprovalState::Expired => {
            emit_deny(
                audit,
                ctx.request_id,
                ctx.zone_id,
                "approval_expired",
                Some(&hold),
                &hold.id,
                now,
            );
            Err(ApiError::unauthorized("access_denied").with_description("approval expired"))
        }
        ApprovalState::Consumed => {
            let in_window = hold
                .consumed_at
                .is_some_and(|at| at <= now && now - at < REISSUE_WINDOW);
            let record = match (&hold.consumed_authority_record_id, in_window) {
                (Some(record_id), true) => authority
                    .get_authority(ctx.zone_id, record_id)
                    .await
                    .map_err(|e| internal("consumed authority record lookup", &e))?,
                _ => None,
            };
            let live = record
                .filter(|r| r.is_live(now))
                .map(|r| {
                    let remaining = (r.expires_at - now).num_seconds();
                    (r, remaining)
                })
                .filter(|(_, remaining)| *remaining > 0);
            match live {
                Some((authority_record, remaining_seconds)) => Ok(RetryOutcome::Reissue {
                    approval: hold,
                    authority_record,
                    remaining_seconds,
                }),
                None => {
                    emit_deny(
                        audit,
                        ctx.request_id,
                        ctx.zone_id,
                        "approval_already_consumed",
                        Some(&hold),
                        &hold.id,
                        now,
                    );
                    Err(already_consumed())
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Consume
// ---------------------------------------------------------------------------------------------

/// Consume an approved hold and insert the mint's new authority record, atomically (§4.6
/// "Consumption", §2.3 O): the hold must still be approved, decided, unexpired, unconsumed,
/// and its own authority record (if any) active. Anything else — including a racing consumer
/// that won — is 409 [`already_consumed`], and nothing is written. Call it as the last
/// fallible step before signing. Store failure → 500.
pub async fn consume(
    store: &dyn ApprovalStore,
    zone_id: &str,
    approval_id: &str,
    record: &AuthorityRecord,
    now: DateTime<Utc>,
) -> ExchangeResult<Approval> {
    match store.consume_into(zone_id, approval_id, record, now).await {
        Ok(ApprovalUpdate::Applied(a)) => Ok(a),
        Ok(ApprovalUpdate::NotAllowed(_)) | Err(StoreError::NotFound { .. }) => {
            Err(already_consumed())
        }
        Err(e) => Err(internal("approval consumption", &e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Observe
// ---------------------------------------------------------------------------------------------

fn serialize_rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// The §1.3 state body `{"id","state","expires_at"}`: no approver identity, no binding, no
/// request facts, so reading it with the id alone leaks nothing worth authenticating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalView {
    /// The hold id.
    pub id: String,
    /// The state at the time of reading.
    pub state: ApprovalState,
    /// Expiry (RFC 3339, seconds).
    #[serde(serialize_with = "serialize_rfc3339")]
    pub expires_at: DateTime<Utc>,
}

impl ApprovalView {
    /// The view of `approval` at `now`.
    pub fn of(approval: &Approval, now: DateTime<Utc>) -> Self {
        Self {
            id: approval.id.clone(),
            state: approval.state(now),
            expires_at: approval.expires_at,
        }
    }
}

/// The 404 of an unknown approval id (or one not of UUID syntax).
fn approval_not_found() -> ApiError {
    ApiError::not_found("resource_not_found").with_description("approval not found")
}

/// Load a hold by its capability id (§1.3, §1.4 steps 1 and 4): not UUID syntax, unknown, or
/// not `human_approval` → 404 `resource_not_found` "approval not found"; store failure → 503
/// `sts_unavailable`. The zone is learnt from the row (the id is the capability).
pub async fn load_hold(store: &dyn ApprovalStore, id: &str) -> ExchangeResult<Approval> {
    if !is_uuid(id) {
        return Err(approval_not_found());
    }
    match store.get_approval_any_zone(id).await {
        Ok(Some(a)) if a.approval_type == HUMAN_APPROVAL => Ok(a),
        Ok(_) => Err(approval_not_found()),
        Err(e) => {
            tracing::error!(error = %e, "approval lookup failed");
            Err(ApiError::unavailable("sts_unavailable")
                .with_description("approval lookup unavailable"))
        }
    }
}

/// The in-process wake registry of the long poll: a decision wakes every poller of that id
/// at once instead of at their next tick. A multi-process deployment also calls
/// [`ApprovalWaiters::wake`] from its `LISTEN caracal_approval_decided` loop (payload = id);
/// without it, pollers still see the decision within [`WAIT_TICK`].
#[derive(Debug, Default)]
pub struct ApprovalWaiters {
    /// id → the notifier its pollers share. INVARIANT: an entry exists only while some
    /// [`Subscription`] holds a clone of it (the last one to drop removes it).
    by_id: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A poller's registration; dropping it unregisters.
#[derive(Debug)]
pub struct Subscription<'a> {
    waiters: &'a ApprovalWaiters,
    id: String,
    notify: Arc<Notify>,
}

impl ApprovalWaiters {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        match self.by_id.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Register a poller of `id`. Subscribe BEFORE the first read, and arm each wait before
    /// the read it follows, so a decision between read and wait is not missed.
    pub fn subscribe(&self, id: &str) -> Subscription<'_> {
        let notify = self.map().entry(id.to_owned()).or_default().clone();
        Subscription {
            waiters: self,
            id: id.to_owned(),
            notify,
        }
    }

    /// Wake every poller of `id` (no-op when none).
    pub fn wake(&self, id: &str) {
        if let Some(n) = self.map().get(id) {
            n.notify_waiters();
        }
    }

    /// How many ids have pollers (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no id has pollers.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.map();
        // The map's clone plus ours: we are the last subscriber.
        if map
            .get(&self.id)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify) && Arc::strong_count(n) <= 2)
        {
            map.remove(&self.id);
        }
    }
}

/// The long poll of `GET /approvals/{id}?wait=N` (§1.3): subscribe, then loop — read the hold,
/// return its view if it is not pending or the deadline has passed, else wait for a wake-up
/// or the [`WAIT_TICK`] fallback. `wait` is clamped to [`MAX_WAIT`] (zero reads once). The
/// lookup is by capability id alone; errors are those of [`load_hold`] (every read, so a
/// swept hold turns 404). `clock` gives the instant the state is judged at.
pub async fn wait_for_decision(
    store: &dyn ApprovalStore,
    waiters: &ApprovalWaiters,
    id: &str,
    wait: Duration,
    clock: &SharedClock,
) -> ExchangeResult<ApprovalView> {
    if !is_uuid(id) {
        return Err(approval_not_found());
    }
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    let sub = waiters.subscribe(id);
    loop {
        let woken = sub.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let hold = load_hold(store, id).await?;
        let view = ApprovalView::of(&hold, clock.now());
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if view.state != ApprovalState::Pending || left.is_zero() {
            return Ok(view);
        }
        tokio::select! {
            () = &mut woken => {}
            () = tokio::time::sleep(left.min(WAIT_TICK)) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decide
// ---------------------------------------------------------------------------------------------

/// A validated subject decision (from [`DecisionBody::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectDecision {
    /// `approved` (true) or `rejected`.
    pub approve: bool,
    /// The hold's binding as the deciding application echoes it (lowercase hex).
    pub binding: String,
    /// Optional reason (≤ [`REASON_MAX_CHARS`] characters); empty is none.
    pub reason: Option<String>,
}

/// The subject plane's decision body `{decision, binding, reason}` as sent (§1.4 step 3).
/// Deserialise it (a failure is 400 "malformed request body", see [`parse_decision_body`]),
/// then [`DecisionBody::validate`]; [`decide_as_subject`] validates again, so an unvalidated
/// body can never be decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DecisionBody {
    /// `approved` or `rejected`.
    #[serde(default)]
    pub decision: String,
    /// The hold's binding (lowercase hex) as the deciding application echoes it.
    #[serde(default)]
    pub binding: String,
    /// Optional reason; empty is none.
    #[serde(default)]
    pub reason: Option<String>,
}

impl DecisionBody {
    /// Step 3's value checks: `decision` ∉ {approved, rejected} → 400 "decision must be
    /// approved or rejected"; reason over [`REASON_MAX_CHARS`] characters → 400 "reason too
    /// long" (code `invalid_token`, as every STS 400).
    pub fn validate(&self) -> ExchangeResult<SubjectDecision> {
        let approve = match self.decision.as_str() {
            "approved" => true,
            "rejected" => false,
            _ => return Err(bad_body("decision must be approved or rejected")),
        };
        let reason = self.reason.clone().filter(|r| !r.is_empty());
        if reason
            .as_deref()
            .is_some_and(|r| r.chars().count() > REASON_MAX_CHARS)
        {
            return Err(bad_body("reason too long"));
        }
        Ok(SubjectDecision {
            approve,
            binding: self.binding.clone(),
            reason,
        })
    }
}

fn bad_body(description: &str) -> ApiError {
    ApiError::bad_request("invalid_token").with_description(description)
}

/// Parse and validate the decision body (§1.4 step 3): malformed JSON → 400 "malformed
/// request body", then [`DecisionBody::validate`]. The HTTP layer calls it before loading the
/// hold and verifying the bearer, to keep the reference's order.
pub fn parse_decision_body(body: &[u8]) -> ExchangeResult<SubjectDecision> {
    serde_json::from_slice::<DecisionBody>(body)
        .map_err(|_| bad_body("malformed request body"))?
        .validate()
}

/// The approver identity a subject decision records under the hold's privacy mode (§1.4):
/// identified `subject:<sub>`; pseudonymous `subject:pseudonym:<hex of the first 8 bytes of
/// sha256(zone_id ‖ 0x00 ‖ sub)>` (stable per zone, so one approver's decisions correlate
/// without naming anyone); anonymous `subject:redacted`.
pub fn approver_identity(privacy: PrivacyMode, zone_id: &str, sub: &str) -> String {
    match privacy {
        PrivacyMode::Identified => format!("subject:{sub}"),
        PrivacyMode::Pseudonymous => {
            let mut h = Sha256::new();
            h.update(zone_id.as_bytes());
            h.update([0u8]);
            h.update(sub.as_bytes());
            let digest = h.finalize();
            format!("subject:pseudonym:{}", hex::encode(&digest[..8]))
        }
        PrivacyMode::Anonymous => "subject:redacted".to_owned(),
    }
}

fn denied(description: &str) -> ApiError {
    ApiError::forbidden("access_denied").with_description(description)
}

fn unavailable(what: &str, e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "{what} failed");
    ApiError::unavailable("sts_unavailable").with_description(format!("{what} unavailable"))
}

/// Whether `a` and `b` are the same record or one is an ancestor of the other (both walks
/// through `parent_id`).
async fn lineage_related(
    authority: &dyn AuthorityStore,
    zone_id: &str,
    a: &str,
    b: &str,
) -> Result<bool, StoreError> {
    if a.is_empty() || b.is_empty() {
        return Ok(false);
    }
    if a == b {
        return Ok(true);
    }
    let up_from_a = authority.authority_lineage(zone_id, a).await?;
    if up_from_a.iter().any(|r| r.id == b) {
        return Ok(true);
    }
    let up_from_b = authority.authority_lineage(zone_id, b).await?;
    Ok(up_from_b.iter().any(|r| r.id == a))
}

/// The subject decision plane (§1.4 steps 6–14) on a hold from [`load_hold`], for a bearer
/// the HTTP layer has verified as a `use=session` mandate of the hold's zone (step 5). In
/// order, first failure wins:
///
/// 6. `sub_type` must be `user` → 403 "approver must be a user session";
/// 7. the hold must name an application → 403 "approval does not admit subject decisions";
/// 8. the bearer's authority record (`sid`) active and unexpired in the zone → else 403
///    "authority record inactive or expired"; its subject == `sub` → else 403 "authority
///    record subject mismatch"; `client_id` == the hold's application → else 403 "authority
///    record client mismatch";
/// 9. approver class `subject` or `any` → else 403 "this approval requires an operator
///    decision";
/// 10. an anchored hold only by its anchor → else 403 "this approval is reserved for another
///     subject";
/// 11. the approver's record must not be the hold's record, its ancestor or descendant → 403
///     "an approver cannot decide a hold raised by its own authority record lineage";
///     lineage failure → 503;
/// 12. `binding` equal to the hold's → else 409 `access_denied` "binding does not match this
///     approval";
/// 13. [`decide`] with the privacy-mode identity ([`approver_identity`]) and the approver's
///     record as `approver_session_id` → 409 "approval is not pending" if it was no longer
///     pending;
/// 14. the new [`ApprovalView`].
///
/// A store failure while reading the approver's record is 503 `sts_unavailable`.
#[allow(clippy::too_many_arguments)]
pub async fn decide_as_subject(
    store: &dyn ApprovalStore,
    authority: &dyn AuthorityStore,
    waiters: &ApprovalWaiters,
    audit: &dyn AuditSink,
    hold: &Approval,
    claims: &MandateClaims,
    body: &DecisionBody,
    now: DateTime<Utc>,
) -> ExchangeResult<ApprovalView> {
    // 3 (again: the body's values are checked before anything is decided).
    let body = body.validate()?;
    // 6, 7.
    if claims.sub_type != SubjectType::User {
        return Err(denied("approver must be a user session"));
    }
    if hold.application_id.is_empty() {
        return Err(denied("approval does not admit subject decisions"));
    }
    // 8: the bearer's authority-record binding.
    if claims.sid.is_empty() {
        return Err(
            ApiError::forbidden("invalid_token").with_description("missing token authority record")
        );
    }
    let record = authority
        .get_authority(&hold.zone_id, &claims.sid)
        .await
        .map_err(|e| unavailable("authority record", &e))?;
    let Some(record) = record.filter(|r| r.is_live(now)) else {
        return Err(denied("authority record inactive or expired"));
    };
    if claims.sub.is_empty() || record.subject_id != claims.sub {
        return Err(denied("authority record subject mismatch"));
    }
    if claims.client_id.is_empty() || claims.client_id != hold.application_id {
        return Err(denied("authority record client mismatch"));
    }
    // 9, 10.
    if hold.approver_class == ApproverClass::Operator {
        return Err(denied("this approval requires an operator decision"));
    }
    if hold
        .subject_anchor
        .as_deref()
        .is_some_and(|anchor| anchor != claims.sub)
    {
        return Err(denied("this approval is reserved for another subject"));
    }
    // 11.
    let related = lineage_related(authority, &hold.zone_id, &record.id, &hold.session_id)
        .await
        .map_err(|e| unavailable("authority record lineage", &e))?;
    if related {
        return Err(denied(
            "an approver cannot decide a hold raised by its own authority record lineage",
        ));
    }
    // 12.
    if !bool::from(body.binding.as_bytes().ct_eq(hold.binding.as_bytes())) {
        return Err(ApiError::conflict("access_denied")
            .with_description("binding does not match this approval"));
    }
    // 13, 14.
    let decision = ApprovalDecision {
        approve: body.approve,
        reason: body.reason,
        approver_subject_id: approver_identity(hold.privacy_mode, &hold.zone_id, &claims.sub),
        approver_session_id: Some(record.id),
    };
    decide(
        store,
        waiters,
        audit,
        &hold.zone_id,
        &hold.id,
        decision,
        now,
    )
    .await
}

/// The 409 of a decision on a hold that is no longer pending (subject plane wording).
pub fn not_pending() -> ApiError {
    ApiError::conflict("access_denied").with_description("approval is not pending")
}

/// Decide a hold, for any plane: one conditional update (lands only while pending and
/// unexpired), then a `step_up_decided` event (decision `approved`/`rejected`, metadata
/// [`hold_audit_meta`] + `approver_plane` (`subject` when `approver_session_id` is set, else
/// `operator`) + `approver_session_id`), then a wake-up of the hold's pollers. When it did
/// not land, `Ok(Err(state))` with the hold's state (the operator plane answers 409
/// `approval_not_decidable` with it). The caller has already checked that the plane may
/// decide this hold's approver class. Unknown hold → 404; store failure → 500.
pub async fn try_decide(
    store: &dyn ApprovalStore,
    waiters: &ApprovalWaiters,
    audit: &dyn AuditSink,
    zone_id: &str,
    id: &str,
    decision: ApprovalDecision,
    now: DateTime<Utc>,
) -> ExchangeResult<Result<ApprovalView, ApprovalState>> {
    let updated = match store.decide_approval(zone_id, id, &decision, now).await {
        Ok(ApprovalUpdate::Applied(a)) => a,
        Ok(ApprovalUpdate::NotAllowed(state)) => return Ok(Err(state)),
        Err(StoreError::NotFound { .. }) => return Err(approval_not_found()),
        Err(e) => return Err(internal("approval decision", &e)),
    };
    let mut extra = Map::new();
    let plane = if decision.approver_session_id.is_some() {
        "subject"
    } else {
        "operator"
    };
    extra.insert("approver_plane".into(), Value::from(plane));
    if let Some(s) = &decision.approver_session_id {
        extra.insert("approver_session_id".into(), Value::from(s.as_str()));
    }
    let verdict = if decision.approve {
        "approved"
    } else {
        "rejected"
    };
    audit.emit(step_up_event(
        "step_up_decided",
        verdict,
        &updated,
        extra,
        now,
    ));
    waiters.wake(id);
    Ok(Ok(ApprovalView::of(&updated, now)))
}

/// [`try_decide`] with the subject plane's answer for a hold no longer pending: 409
/// `access_denied` "approval is not pending".
pub async fn decide(
    store: &dyn ApprovalStore,
    waiters: &ApprovalWaiters,
    audit: &dyn AuditSink,
    zone_id: &str,
    id: &str,
    decision: ApprovalDecision,
    now: DateTime<Utc>,
) -> ExchangeResult<ApprovalView> {
    try_decide(store, waiters, audit, zone_id, id, decision, now)
        .await?
        .map_err(|_| not_pending())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::audit::sink::MemoryAuditSink;
    use crate::clock::{Clock, FakeClock};
    use crate::mandate::claims::{Audience, MandateUse};
    use crate::model::authority::AuthorityStatus;
    use crate::store::memory::MemoryStore;

    const ZONE: &str = "zone-1";
    const APP: &str = "app-1";

    fn decl(v: Value) -> TierDeclaration {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn merged(decls: &[Value]) -> ExchangeResult<MergedTiers> {
        let owned: Vec<TierDeclaration> = decls.iter().cloned().map(decl).collect();
        let refs: Vec<&TierDeclaration> = owned.iter().collect();
        merge_tiers(&refs)
    }

    #[test]
    fn binding_hash_matches_the_reference_concatenation() {
        // python3 -c "import hashlib;print(hashlib.sha256(b'resources\0res://a\nres://b\0scopes\0read\nwrite\0principal\0user-1\0authority_record\0ar-1\0session\0sess-1\0delegation\0edge-1\0application\0app-1\0policy_set_version\0psv-1\0policy_manifest\0msha\0decision_contract_version\x002026-07-12\0decision_contract_sha\0csha').hexdigest())"
        let resources = vec![
            " RES://b ".to_owned(),
            "res://a".to_owned(),
            "res://A".to_owned(),
            String::new(),
        ];
        let scopes = vec!["write".to_owned(), " read".to_owned(), "write".to_owned()];
        let input = BindingInput {
            resources: &resources,
            scopes: &scopes,
            principal: "user-1",
            authority_record: "ar-1",
            session: "sess-1",
            delegation: "edge-1",
            application: "app-1",
            policy_set_version: "psv-1",
            policy_manifest: "msha",
            contract_version: "2026-07-12",
            contract_sha: "csha",
        };
        assert_eq!(
            binding_hash(&input),
            "84211235c3f9650486ae5807cd5f482be685ad13c08f9f9414244bfde669b99c"
        );
        // Any field changes the hash (a policy rollout invalidates approvals).
        let rolled = BindingInput {
            policy_manifest: "msha2",
            ..input
        };
        assert_ne!(binding_hash(&rolled), binding_hash(&input));
    }

    #[test]
    fn merge_joins_tiers_and_resolves_classes() {
        let m = merged(&[
            json!({"tier": "high", "approver": "any"}),
            json!({"tier": "crit", "approver": "subject", "privacy": "pseudonymous"}),
            json!({"tier": "high", "privacy": "identified"}),
        ]);
        // The third declaration has no approver: operator by default, which conflicts with
        // subject.
        assert_eq!(m.unwrap_err().status, 403);

        let m = merged(&[
            json!({"tier": "high", "approver": "any"}),
            json!({"tier": "crit", "approver": "subject", "privacy": "pseudonymous"}),
            json!({"tier": "high", "approver": "any", "privacy": "anonymous", "ttl_seconds": 600}),
            json!({"tier": "crit", "approver": "subject", "ttl_seconds": 300.0}),
        ])
        .unwrap();
        assert_eq!(
            m,
            MergedTiers {
                tier: "crit,high".into(),
                approver: ApproverClass::Subject,
                privacy: PrivacyMode::Anonymous,
                ttl_seconds: 300,
            }
        );
        // `any` alone stays `any`, with the subject default.
        let m = merged(&[json!({"tier": "t", "approver": "any"})]).unwrap();
        assert_eq!(m.approver, ApproverClass::Any);
        assert_eq!(m.ttl_seconds, 15 * 60);
        // Owned declarations work too (a wire result's diagnostics).
        assert_eq!(
            merge_tiers(&[decl(json!({"tier": "t"}))]).unwrap().tier,
            "t"
        );
        // Operator default.
        let m = merged(&[json!({"tier": "t"})]).unwrap();
        assert_eq!(
            (m.approver, m.privacy, m.ttl_seconds),
            (ApproverClass::Operator, PrivacyMode::Identified, 4 * 3600)
        );
    }

    #[test]
    fn merge_class_conflict_is_the_reference_403() {
        let e = merged(&[
            json!({"tier": "a", "approver": "operator"}),
            json!({"tier": "b", "approver": "subject"}),
        ])
        .unwrap_err();
        assert_eq!(e.status, 403);
        assert_eq!(e.body.error, "access_denied");
        assert_eq!(
            e.body.error_description.as_deref(),
            Some("approval requires separate operator and subject decisions")
        );
        // any + operator + any is fine.
        let m = merged(&[
            json!({"tier": "a", "approver": "any"}),
            json!({"tier": "b", "approver": "operator"}),
            json!({"tier": "c", "approver": "any"}),
        ])
        .unwrap();
        assert_eq!(m.approver, ApproverClass::Operator);
        assert!(merge_tiers::<TierDeclaration>(&[]).is_err());
    }

    #[test]
    fn merge_clamps_ttl_per_class() {
        let ttl = |v: Value| merged(&[v]).unwrap().ttl_seconds;
        assert_eq!(
            ttl(json!({"tier": "t", "approver": "subject", "ttl_seconds": 5})),
            60
        );
        assert_eq!(
            ttl(json!({"tier": "t", "approver": "subject", "ttl_seconds": 3 * 86400})),
            86400
        );
        assert_eq!(
            ttl(json!({"tier": "t", "approver": "any", "ttl_seconds": 3 * 86400})),
            86400
        );
        assert_eq!(
            ttl(json!({"tier": "t", "approver": "operator", "ttl_seconds": 3 * 86400})),
            3 * 86400
        );
        assert_eq!(
            ttl(json!({"tier": "t", "ttl_seconds": 30 * 86400})),
            7 * 86400
        );
        assert_eq!(ttl(json!({"tier": "t", "ttl_seconds": 1})), 60);
        // A non-positive or fractional TTL is not a declaration of one.
        assert_eq!(ttl(json!({"tier": "t", "ttl_seconds": 1.5})), 4 * 3600);
    }

    #[test]
    fn tier_declarations_read_the_wire_diagnostic() {
        let result: PolicyResult = serde_json::from_value(json!({
            "decision": "allow",
            "evaluation_status": "complete",
            "determining_policies": [{"policy": "caracal-x-mint"}],
            "diagnostics": [
                {"step_up_required": {"type": "human_approval", "tiers": [
                    {"tier": "high", "approver": "subject"}, {"tier": ""}, "junk"
                ]}},
                {"risk": [{"scope": "s", "tier": "high"}]}
            ]
        }))
        .unwrap();
        let decls = tier_declarations(&result);
        assert_eq!(decls.len(), 1);
        assert_eq!(
            merge_tiers(&decls).unwrap().approver,
            ApproverClass::Subject
        );
    }

    struct Fx {
        store: MemoryStore,
        clock: FakeClock,
        sink: MemoryAuditSink,
        waiters: ApprovalWaiters,
    }

    impl Fx {
        fn new() -> Self {
            Self {
                store: MemoryStore::new(),
                clock: FakeClock::at_fixture_epoch(),
                sink: MemoryAuditSink::new(),
                waiters: ApprovalWaiters::new(),
            }
        }
        fn now(&self) -> DateTime<Utc> {
            self.clock.now()
        }

        async fn record(
            &self,
            id: &str,
            subject: &str,
            kind: SubjectType,
            parent: Option<&str>,
        ) -> AuthorityRecord {
            let r = AuthorityRecord {
                id: id.to_owned(),
                zone_id: ZONE.to_owned(),
                session_type: kind,
                subject_id: subject.to_owned(),
                parent_id: parent.map(str::to_owned),
                status: AuthorityStatus::Active,
                expires_at: self.now() + chrono::Duration::hours(1),
                authenticated_at: Some(self.now()),
                claims_json: Value::Null,
                revoked_at: None,
                revoked_reason: None,
                created_at: self.now(),
            };
            self.store.insert_authority(&r).await.unwrap();
            r
        }
        fn request(&self, binding: &str, approver: &str) -> HoldRequest {
            HoldRequest {
                zone_id: ZONE.into(),
                principal_id: "principal-1".into(),
                authority_record_id: "ar-req".into(),
                application_id: APP.into(),
                binding: binding.into(),
                merged: merged(&[json!({"tier": "high", "approver": approver})]).unwrap(),
                subject_anchor: None,
                metadata: Map::new(),
            }
        }
        async fn pending(&self, req: HoldRequest) -> Approval {
            match issue_or_converge(&self.store, req, self.now())
                .await
                .unwrap()
            {
                HoldOutcome::Pending { approval, .. } => approval,
                other => panic!("{other:?}"),
            }
        }
        async fn operator_decides(&self, a: &Approval, approve: bool) {
            decide(
                &self.store,
                &self.waiters,
                &self.sink,
                ZONE,
                &a.id,
                ApprovalDecision {
                    approve,
                    reason: None,
                    approver_subject_id: "admin:ops".into(),
                    approver_session_id: None,
                },
                self.now(),
            )
            .await
            .unwrap();
        }
    }

    fn bind(n: u8) -> String {
        hex::encode([n; 32])
    }

    #[tokio::test]
    async fn issue_is_idempotent_and_replaces_expired_holds() {
        let fx = Fx::new();
        let first = issue_or_converge(&fx.store, fx.request(&bind(1), "operator"), fx.now())
            .await
            .unwrap();
        let HoldOutcome::Pending {
            approval: a,
            newly_created: true,
        } = first
        else {
            panic!("{first:?}")
        };
        assert_eq!(uuid::Uuid::parse_str(&a.id).unwrap().get_version_num(), 4);
        assert_eq!(a.expires_at, fx.now() + chrono::Duration::hours(4));
        let again = issue_or_converge(&fx.store, fx.request(&bind(1), "operator"), fx.now())
            .await
            .unwrap();
        assert_eq!(
            again,
            HoldOutcome::Pending {
                approval: a.clone(),
                newly_created: false
            }
        );
        // Approved and rejected holds converge to their state.
        fx.operator_decides(&a, true).await;
        assert!(matches!(
            issue_or_converge(&fx.store, fx.request(&bind(1), "operator"), fx.now()).await,
            Ok(HoldOutcome::Approved(h)) if h.id == a.id
        ));
        let b = fx.pending(fx.request(&bind(2), "operator")).await;
        fx.operator_decides(&b, false).await;
        assert!(matches!(
            issue_or_converge(&fx.store, fx.request(&bind(2), "operator"), fx.now()).await,
            Ok(HoldOutcome::Rejected(h)) if h.id == b.id
        ));
        // Once expired, a fresh hold replaces it.
        fx.clock.advance(chrono::Duration::hours(5));
        let fresh = fx.pending(fx.request(&bind(2), "operator")).await;
        assert_ne!(fresh.id, b.id);
        assert!(fx.store.get_approval(ZONE, &b.id).await.unwrap().is_none());
    }

    #[test]
    fn interaction_required_body() {
        let now = FakeClock::at_fixture_epoch().now();
        let mut a = Approval {
            id: "0b0d5f5e-3a5c-4a8e-9d7e-2f1f4c1d9a01".into(),
            zone_id: ZONE.into(),
            session_id: String::new(),
            principal_id: "p".into(),
            application_id: APP.into(),
            approval_type: HUMAN_APPROVAL.into(),
            tier: "high".into(),
            approver_class: ApproverClass::Operator,
            privacy_mode: PrivacyMode::Identified,
            subject_anchor: None,
            binding: bind(7),
            metadata_json: Map::new(),
            decision_reason: None,
            approver_subject_id: None,
            approver_session_id: None,
            created_at: now,
            expires_at: now + chrono::Duration::minutes(15),
            satisfied_at: None,
            rejected_at: None,
            consumed_at: None,
            consumed_authority_record_id: None,
        };
        let e = interaction_required(&a, now);
        assert!(is_interaction_required(&e));
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            json!({
                "error": "interaction_required",
                "error_description": "Human approval required for this request",
                "approval_id": a.id,
                "approval_type": "human_approval",
                "state": "pending",
                "tier": "high",
                "binding": bind(7),
                "approval_expires_at": "2026-05-21T12:15:00Z",
            })
        );
        a.tier.clear();
        let v: Value = serde_json::from_str(&interaction_required(&a, now).to_json()).unwrap();
        assert!(v.get("tier").is_none());
        let view = serde_json::to_value(ApprovalView::of(&a, now)).unwrap();
        assert_eq!(
            view,
            json!({"id": a.id, "state": "pending", "expires_at": "2026-05-21T12:15:00Z"})
        );
    }

    fn retry_ctx<'a>(a: &'a Approval, binding: &'a str) -> RetryContext<'a> {
        RetryContext {
            zone_id: ZONE,
            principal_id: &a.principal_id,
            authority_record_id: &a.session_id,
            binding,
            approval_id: &a.id,
            request_id: "req-1",
        }
    }

    fn new_record(fx: &Fx, id: &str, ttl: chrono::Duration) -> AuthorityRecord {
        AuthorityRecord {
            id: id.into(),
            zone_id: ZONE.into(),
            session_type: SubjectType::Application,
            subject_id: "principal-1".into(),
            parent_id: None,
            status: AuthorityStatus::Active,
            expires_at: fx.now() + ttl,
            authenticated_at: Some(fx.now()),
            claims_json: Value::Null,
            revoked_at: None,
            revoked_reason: None,
            created_at: fx.now(),
        }
    }

    async fn check_with(fx: &Fx, ctx: RetryContext<'_>) -> ExchangeResult<RetryOutcome> {
        check_retry(&fx.store, &fx.store, &fx.sink, &ctx, fx.now()).await
    }

    #[tokio::test]
    async fn retry_branches() {
        let fx = Fx::new();
        fx.record("ar-req", "principal-1", SubjectType::Application, None)
            .await;
        let a = fx.pending(fx.request(&bind(1), "operator")).await;
        let binding = bind(1);

        // Mismatches: binding, principal, record, unknown id.
        for ctx in [
            retry_ctx(&a, &bind(9)),
            RetryContext {
                principal_id: "other",
                ..retry_ctx(&a, &binding)
            },
            RetryContext {
                authority_record_id: "",
                ..retry_ctx(&a, &binding)
            },
            RetryContext {
                approval_id: "6f1c7a1e-1111-4111-8111-111111111111",
                ..retry_ctx(&a, &binding)
            },
            RetryContext {
                zone_id: "zone-2",
                ..retry_ctx(&a, &binding)
            },
        ] {
            let e = check_with(&fx, ctx).await.unwrap_err();
            assert_eq!(e.status, 401);
            assert_eq!(e.body.error, "access_denied");
            assert_eq!(
                e.body.error_description.as_deref(),
                Some("approval not found or bindings do not match")
            );
        }
        let events = fx.sink.take();
        assert_eq!(events.len(), 5);
        assert!(events.iter().all(|e| e.event_type == "token_exchange"
            && e.decision == "deny"
            && e.evaluation_status == "approval_invalid"));

        // Pending: the same hold's 401.
        let e = check_with(&fx, retry_ctx(&a, &binding)).await.unwrap_err();
        assert!(is_interaction_required(&e));
        assert_eq!(e.body.extra["approval_id"], json!(a.id));

        // Approved: resolved.
        fx.operator_decides(&a, true).await;
        let RetryOutcome::Resolved(h) = check_with(&fx, retry_ctx(&a, &binding)).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(h.id, a.id);

        // Consumed: re-issue inside two minutes, for the same record.
        let minted = new_record(&fx, "ar-minted", chrono::Duration::minutes(10));
        consume(&fx.store, ZONE, &a.id, &minted, fx.now())
            .await
            .unwrap();
        fx.clock.advance(chrono::Duration::seconds(119));
        match check_with(&fx, retry_ctx(&a, &binding)).await.unwrap() {
            RetryOutcome::Reissue {
                authority_record,
                remaining_seconds,
                ..
            } => {
                assert_eq!(authority_record.id, "ar-minted");
                assert_eq!(remaining_seconds, 600 - 119);
            }
            other => panic!("{other:?}"),
        }
        // Not with another binding.
        assert_eq!(
            check_with(&fx, retry_ctx(&a, &bind(2)))
                .await
                .unwrap_err()
                .status,
            401
        );
        // Not once the window closed.
        fx.clock.advance(chrono::Duration::seconds(1));
        let e = check_with(&fx, retry_ctx(&a, &binding)).await.unwrap_err();
        assert_eq!(
            (e.status, e.body.error.as_str()),
            (409, "approval_consumed")
        );

        // Not when the created record was revoked, even inside the window.
        let b = fx.pending(fx.request(&bind(3), "operator")).await;
        fx.operator_decides(&b, true).await;
        let minted_b = new_record(&fx, "ar-minted-b", chrono::Duration::minutes(10));
        consume(&fx.store, ZONE, &b.id, &minted_b, fx.now())
            .await
            .unwrap();
        fx.store
            .revoke_authority(ZONE, "ar-minted-b", "test", fx.now())
            .await
            .unwrap();
        let b3 = bind(3);
        assert_eq!(
            check_with(&fx, retry_ctx(&b, &b3))
                .await
                .unwrap_err()
                .status,
            409
        );

        // Rejected → 403; expired → 401 "approval expired".
        let c = fx.pending(fx.request(&bind(4), "operator")).await;
        fx.operator_decides(&c, false).await;
        let b4 = bind(4);
        let e = check_with(&fx, retry_ctx(&c, &b4)).await.unwrap_err();
        assert_eq!(
            (e.status, e.body.error_description.as_deref()),
            (403, Some("approval was rejected"))
        );
        let d = fx.pending(fx.request(&bind(5), "operator")).await;
        fx.clock.advance(chrono::Duration::hours(5));
        let b5 = bind(5);
        let e = check_with(&fx, retry_ctx(&d, &b5)).await.unwrap_err();
        assert_eq!(
            (e.status, e.body.error_description.as_deref()),
            (401, Some("approval expired"))
        );
        let statuses: Vec<String> = fx
            .sink
            .take()
            .into_iter()
            .filter(|e| e.event_type == "token_exchange")
            .map(|e| e.evaluation_status)
            .collect();
        assert_eq!(
            statuses,
            [
                "approval_invalid",
                "approval_already_consumed",
                "approval_already_consumed",
                "approval_rejected",
                "approval_expired"
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_concurrent_consumers_one_wins() {
        let fx = Arc::new(Fx::new());
        fx.record("ar-req", "principal-1", SubjectType::Application, None)
            .await;
        let a = fx.pending(fx.request(&bind(1), "operator")).await;
        fx.operator_decides(&a, true).await;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let fx = fx.clone();
            let id = a.id.clone();
            tasks.push(tokio::spawn(async move {
                let r = new_record(&fx, &format!("ar-{i}"), chrono::Duration::minutes(5));
                consume(&fx.store, ZONE, &id, &r, fx.now()).await
            }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert_eq!(e.body.error, "approval_consumed"),
            }
        }
        assert_eq!(wins, 1);
        let hold = fx.store.get_approval(ZONE, &a.id).await.unwrap().unwrap();
        let winner = hold.consumed_authority_record_id.unwrap();
        // Only the winner's record exists.
        for i in 0..8 {
            let id = format!("ar-{i}");
            let exists = fx.store.get_authority(ZONE, &id).await.unwrap().is_some();
            assert_eq!(exists, id == winner, "{id}");
        }
    }

    #[tokio::test]
    async fn consume_refuses_pending_and_dead_requester_records() {
        let fx = Fx::new();
        fx.record("ar-req", "principal-1", SubjectType::Application, None)
            .await;
        let a = fx.pending(fx.request(&bind(1), "operator")).await;
        let r = new_record(&fx, "ar-x", chrono::Duration::minutes(5));
        assert_eq!(
            consume(&fx.store, ZONE, &a.id, &r, fx.now())
                .await
                .unwrap_err()
                .status,
            409
        );
        fx.operator_decides(&a, true).await;
        fx.store
            .revoke_authority(ZONE, "ar-req", "gone", fx.now())
            .await
            .unwrap();
        assert_eq!(
            consume(&fx.store, ZONE, &a.id, &r, fx.now())
                .await
                .unwrap_err()
                .status,
            409
        );
        assert!(
            fx.store
                .get_authority(ZONE, "ar-x")
                .await
                .unwrap()
                .is_none()
        );
    }

    fn claims(sub: &str, sid: &str, client: &str, kind: SubjectType) -> MandateClaims {
        MandateClaims {
            iss: "https://sts".into(),
            sub: sub.into(),
            aud: Audience::Many(vec!["https://sts".into()]),
            exp: 0,
            iat: 0,
            jti: "j".into(),
            zone_id: ZONE.into(),
            client_id: client.into(),
            scope: None,
            sid: sid.into(),
            root_sid: sid.into(),
            use_: MandateUse::Session,
            sub_type: kind,
            target: vec![],
            agent_session_id: None,
            delegation_edge_id: None,
            source_session_id: None,
            target_session_id: None,
            delegation_path: vec![],
            delegation_chain: vec![],
            hop_count: 0,
            delegation_graph_epoch: 0,
        }
    }

    fn body(binding: &str, approve: bool) -> DecisionBody {
        DecisionBody {
            decision: if approve { "approved" } else { "rejected" }.into(),
            binding: binding.into(),
            reason: Some("ok".into()),
        }
    }

    async fn subject_decides(
        fx: &Fx,
        hold: &Approval,
        c: &MandateClaims,
        b: &DecisionBody,
    ) -> ExchangeResult<ApprovalView> {
        decide_as_subject(
            &fx.store,
            &fx.store,
            &fx.waiters,
            &fx.sink,
            hold,
            c,
            b,
            fx.now(),
        )
        .await
    }

    fn assert_denied(r: ExchangeResult<ApprovalView>, status: u16, description: &str) {
        let e = r.unwrap_err();
        assert_eq!(
            (e.status, e.body.error_description.as_deref()),
            (status, Some(description)),
            "{e}"
        );
    }

    #[tokio::test]
    async fn subject_decision_denies() {
        let fx = Fx::new();
        // The requester's chain: ar-root → ar-req → ar-child.
        fx.record("ar-root", "alice", SubjectType::User, None).await;
        fx.record(
            "ar-req",
            "principal-1",
            SubjectType::Application,
            Some("ar-root"),
        )
        .await;
        fx.record("ar-child", "alice", SubjectType::User, Some("ar-req"))
            .await;
        fx.record("ar-bob", "bob", SubjectType::User, None).await;
        fx.record("ar-carol", "carol", SubjectType::User, None)
            .await;
        fx.record("ar-app", APP, SubjectType::Application, None)
            .await;

        let hold = fx.pending(fx.request(&bind(1), "subject")).await;
        let bob = claims("bob", "ar-bob", APP, SubjectType::User);
        let ok = body(&bind(1), true);

        // An unvalidated body is refused before anything else.
        let bad = DecisionBody {
            decision: "maybe".into(),
            ..body(&bind(1), true)
        };
        assert_denied(
            subject_decides(&fx, &hold, &bob, &bad).await,
            400,
            "decision must be approved or rejected",
        );
        // Application subject → 403.
        let app = claims(APP, "ar-app", APP, SubjectType::Application);
        assert_denied(
            subject_decides(&fx, &hold, &app, &ok).await,
            403,
            "approver must be a user session",
        );
        // Bearer record mismatches.
        let wrong_client = claims("bob", "ar-bob", "app-2", SubjectType::User);
        assert_denied(
            subject_decides(&fx, &hold, &wrong_client, &ok).await,
            403,
            "authority record client mismatch",
        );
        let wrong_sub = claims("mallory", "ar-bob", APP, SubjectType::User);
        assert_denied(
            subject_decides(&fx, &hold, &wrong_sub, &ok).await,
            403,
            "authority record subject mismatch",
        );
        let missing = claims("bob", "ar-nope", APP, SubjectType::User);
        assert_denied(
            subject_decides(&fx, &hold, &missing, &ok).await,
            403,
            "authority record inactive or expired",
        );
        // Ancestor and descendant approvers → 403.
        for (sid, sub) in [("ar-root", "alice"), ("ar-child", "alice")] {
            let c = claims(sub, sid, APP, SubjectType::User);
            assert_denied(
                subject_decides(&fx, &hold, &c, &ok).await,
                403,
                "an approver cannot decide a hold raised by its own authority record lineage",
            );
        }
        // Wrong binding → 409.
        assert_denied(
            subject_decides(&fx, &hold, &bob, &body(&bind(2), true)).await,
            409,
            "binding does not match this approval",
        );
        // Operator-only tier → 403.
        let op_hold = fx.pending(fx.request(&bind(3), "operator")).await;
        assert_denied(
            subject_decides(&fx, &op_hold, &bob, &body(&bind(3), true)).await,
            403,
            "this approval requires an operator decision",
        );
        // Anchored hold decided by another user → 403.
        let mut anchored_req = fx.request(&bind(4), "any");
        anchored_req.subject_anchor = Some("carol".into());
        let anchored = fx.pending(anchored_req).await;
        assert_denied(
            subject_decides(&fx, &anchored, &bob, &body(&bind(4), true)).await,
            403,
            "this approval is reserved for another subject",
        );
        let carol = claims("carol", "ar-carol", APP, SubjectType::User);
        let v = subject_decides(&fx, &anchored, &carol, &body(&bind(4), false))
            .await
            .unwrap();
        assert_eq!(v.state, ApprovalState::Rejected);

        // Bob decides; a second decision → 409 "approval is not pending".
        let v = subject_decides(&fx, &hold, &bob, &ok).await.unwrap();
        assert_eq!(v.state, ApprovalState::Approved);
        assert_denied(
            subject_decides(&fx, &hold, &bob, &ok).await,
            409,
            "approval is not pending",
        );
        let stored = fx
            .store
            .get_approval(ZONE, &hold.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.approver_subject_id.as_deref(), Some("subject:bob"));
        assert_eq!(stored.approver_session_id.as_deref(), Some("ar-bob"));
        assert_eq!(stored.decision_reason.as_deref(), Some("ok"));
        let decided: Vec<AuditEvent> = fx
            .sink
            .events()
            .into_iter()
            .filter(|e| e.event_type == "step_up_decided")
            .collect();
        assert_eq!(decided.len(), 2);
        let meta: Value =
            serde_json::from_str(decided[1].metadata_json.as_ref().unwrap().as_str()).unwrap();
        assert_eq!(decided[1].decision, "approved");
        assert_eq!(meta["approver_plane"], "subject");
        assert_eq!(meta["approver_session_id"], "ar-bob");
        assert_eq!(meta["challenge_id"], json!(hold.id));
    }

    #[test]
    fn approver_identity_per_privacy_mode() {
        // python3 -c "import hashlib;print(hashlib.sha256(b'zone-1\0alice').hexdigest()[:16])"
        assert_eq!(
            approver_identity(PrivacyMode::Pseudonymous, "zone-1", "alice"),
            "subject:pseudonym:7bb151b9624aa0c1"
        );
        assert_eq!(
            approver_identity(PrivacyMode::Identified, "zone-1", "alice"),
            "subject:alice"
        );
        assert_eq!(
            approver_identity(PrivacyMode::Anonymous, "zone-1", "alice"),
            "subject:redacted"
        );
    }

    #[test]
    fn decision_body_parsing() {
        let d =
            parse_decision_body(br#"{"decision":"approved","binding":"ab","reason":""}"#).unwrap();
        assert_eq!(
            d,
            SubjectDecision {
                approve: true,
                binding: "ab".into(),
                reason: None
            }
        );
        let desc = |b: &[u8]| {
            parse_decision_body(b)
                .unwrap_err()
                .body
                .error_description
                .unwrap()
        };
        assert_eq!(desc(b"{"), "malformed request body");
        assert_eq!(
            desc(br#"{"decision":"maybe"}"#),
            "decision must be approved or rejected"
        );
        let long = format!(
            r#"{{"decision":"rejected","reason":"{}"}}"#,
            "é".repeat(501)
        );
        assert_eq!(desc(long.as_bytes()), "reason too long");
        let fits = format!(
            r#"{{"decision":"rejected","reason":"{}"}}"#,
            "é".repeat(500)
        );
        assert!(parse_decision_body(fits.as_bytes()).is_ok());
    }

    #[tokio::test]
    async fn load_hold_checks_the_capability_id() {
        let fx = Fx::new();
        let a = fx.pending(fx.request(&bind(1), "operator")).await;
        assert_eq!(load_hold(&fx.store, &a.id).await.unwrap().id, a.id);
        assert_eq!(
            load_hold(&fx.store, "not-a-uuid").await.unwrap_err().status,
            404
        );
        assert_eq!(
            load_hold(&fx.store, "6f1c7a1e-1111-4111-8111-111111111111")
                .await
                .unwrap_err()
                .status,
            404
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_decision_wakes_the_long_poll_before_its_deadline() {
        let fx = Arc::new(Fx::new());
        let a = fx.pending(fx.request(&bind(1), "operator")).await;
        let clock: SharedClock = Arc::new(fx.clock.clone());
        // Zero wait reads once.
        let v = wait_for_decision(&fx.store, &fx.waiters, &a.id, Duration::ZERO, &clock)
            .await
            .unwrap();
        assert_eq!(v.state, ApprovalState::Pending);

        let poller = {
            let fx = fx.clone();
            let id = a.id.clone();
            let clock = clock.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let v = wait_for_decision(
                    &fx.store,
                    &fx.waiters,
                    &id,
                    Duration::from_secs(100),
                    &clock,
                )
                .await
                .unwrap();
                (v, started.elapsed())
            })
        };
        // Let the poller subscribe and park.
        while fx.waiters.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        fx.operator_decides(&a, true).await;
        let (v, elapsed) = tokio::time::timeout(Duration::from_secs(3), poller)
            .await
            .expect("the decision must wake the poller")
            .unwrap();
        assert_eq!(v.state, ApprovalState::Approved);
        assert!(elapsed < WAIT_TICK, "{elapsed:?}");
        assert!(fx.waiters.is_empty(), "the subscription unregistered");
    }
}
