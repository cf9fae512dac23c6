//! The platform decision contract (reference `sts.md` §4.3, version
//! [`DECISION_CONTRACT_VERSION`](super::DECISION_CONTRACT_VERSION)), as compiled Rust.
//!
//! [`evaluate`] is pure: it reads the input and a [`CompiledBundle`] and returns a small
//! [`Evaluation`] that borrows both. Nothing is allocated on any decision path; the wire
//! [`PolicyResult`] (policy names, risk and step-up diagnostics) is rendered only by
//! [`Evaluation::to_result`].
//!
//! ## The rules
//!
//! A request has at most one *shape*, tried in this order (the shapes are disjoint except
//! workload/bootstrap, where the workload wins because it is the more specific):
//!
//! 1. **Workload mint** (`caracal-workload-mint`): `principal.type == "Workload"`,
//!    `action.id == "CredentialInjection"`, no `subject_claims`, no `delegation_edge`, no
//!    `context.agent_session_id`. Gates: data well formed. No grant check: the console binding
//!    is the grant.
//! 2. **Bootstrap** (`caracal-bootstrap`): the set of requested scopes is exactly
//!    `{agent:lifecycle}`; no `subject_claims`, no `delegation_edge`, no
//!    `context.agent_session_id`. Gate: the principal owns the resource. Role labels and risk
//!    data are not consulted.
//! 3. **Delegated mint** (`caracal-<grant application>-mint`): a non-empty
//!    `delegation_edge.id`, a non-empty `context.agent_session_id`, no `subject_claims`, at
//!    least one requested scope and not `agent:lifecycle`. Gates, in order: `risk` well formed,
//!    `approval_tiers` well formed, principal owns the resource, every requested scope is in
//!    the edge's scopes, confinement, and some principal label whose role in the grant covers
//!    every requested scope.
//! 4. **Mandate use** (`caracal-<grant application>-use`): `subject_claims` with a non-empty
//!    string `delegation_edge_id`, no requested scopes, and a non-empty set of *presented*
//!    scopes (the `scope` claim split on spaces, empties dropped). Gates, in order: the
//!    `target` claim (an array) contains `resource.identifier`, principal owns the resource,
//!    and some principal label whose *current* role covers every presented scope. Not risk
//!    gated.
//!
//! "Present" means the field exists (even empty) when the rule requires its *absence*, and
//! exists and is non-empty when the rule requires its presence. Ownership:
//! `app_ids[grants[resource.identifier].application] == principal.id` (the same as the
//! reference's "some key of `app_ids` whose value is the principal id", keys being unique).
//! Confinement: for every rule whose `label_prefix` prefixes some principal label, every
//! requested scope is in the rule's scopes.
//!
//! ## Deny precedence (interpretation)
//!
//! The reference's gate-specific reasons are mutually exclusive; the first failing check
//! names the deny, in this order:
//!
//! 0. input `schema_version` ≠ `2026-05-20` (empty included): an evaluation **error**
//!    ([`PolicyError::SchemaVersion`]), as is an input over a [limit](super::limits);
//! 1. `no_active_policy_set`: the zone's bundle is the deny-all fallback;
//! 2. `restriction_active`: `restrict` is active; this denies *every* request, whatever its
//!    shape (conformance 30: "including bootstrap");
//! 3. the gates of the request's shape, in the order listed above:
//!    delegated mint `malformed_risk_data` → `malformed_approval_data` →
//!    `resource_not_granted` → `delegation_scope_exceeded` → `confinement_violation` →
//!    `role_scope_mismatch`; workload `malformed_risk_data` → `malformed_approval_data`;
//!    mandate use `mandate_target_mismatch` → `resource_not_granted` →
//!    `role_scope_mismatch`;
//! 4. `no_rule_matched`: no shape, or a bootstrap whose principal does not own the resource
//!    (the reference names `resource_not_granted` for mint and use only).
//!
//! For a mint this is the order in which the reference lists its reasons. For mandate use the
//! target check comes first: it is a property of the presented mandate alone, and a mandate
//! shown for a resource outside its `target` must read `mandate_target_mismatch` (conformance
//! 34) even though that resource's roles cannot cover scopes minted for another resource.
//! The Rego differential contract (`tests/fixtures/policy/contract.rego`) encodes the same
//! order.
//!
//! ## Diagnostics of an allow
//!
//! Bootstrap and mandate use carry none. A mint (delegated or workload) carries, in this
//! order and only when non-empty: `{"step_up_required": {"type": "human_approval", "tiers":
//! [declaration…]}}` with the approval declarations of every tier of a requested scope
//! (sorted by tier, then by canonical JSON, distinct), and `{"risk": [{"scope", "tier"}…]}`
//! for every requested scope with a tier (sorted by scope then tier, distinct). The contract
//! does not read `challenge_resolved`: the STS decides whether a declared step-up is already
//! satisfied (`sts.md` §4.6).

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

use super::data::{CompiledBundle, Grant};
use super::{PolicyError, limits};
use crate::model::policy::{
    Decision, DelegationEdgeInput, POLICY_INPUT_SCHEMA_VERSION, PolicyInput, PolicyResult,
};

/// The reserved scope of a bootstrap exchange.
pub const LIFECYCLE_SCOPE: &str = "agent:lifecycle";

/// The allow rule that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllowRule {
    /// `caracal-bootstrap`: a session mandate for `agent:lifecycle`.
    Bootstrap,
    /// `caracal-<app>-mint`: a gateway mandate under a delegation edge.
    DelegatedMint,
    /// `caracal-workload-mint`: a workload's credential injection.
    WorkloadMint,
    /// `caracal-<app>-use`: the Gateway presenting a gateway mandate.
    MandateUse,
}

impl AllowRule {
    /// Whether this is a mint (risk gated, may carry `step_up_required`).
    pub fn is_mint(self) -> bool {
        matches!(self, AllowRule::DelegatedMint | AllowRule::WorkloadMint)
    }

    /// A sentence saying why the rule allowed (for simulate explanations).
    pub fn explanation(self) -> &'static str {
        match self {
            AllowRule::Bootstrap => {
                "bootstrap: only agent:lifecycle was requested, with no subject token, delegation \
                 or session, by the application that owns the resource's grant"
            }
            AllowRule::DelegatedMint => {
                "delegated mint: every requested scope is within the delegation edge, the \
                 confinement rules and a role of the principal's labels on a resource the \
                 principal owns"
            }
            AllowRule::WorkloadMint => {
                "workload mint: a workload's credential injection with well-formed risk and \
                 approval data"
            }
            AllowRule::MandateUse => {
                "mandate use: the presented mandate targets this resource and the principal's \
                 current roles still grant every scope it carries"
            }
        }
    }
}

/// Why a request was denied: the `reason` of the diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No allow rule matched the request's shape.
    NoRuleMatched,
    /// The zone has no active policy set (the deny-all fallback).
    NoActivePolicySet,
    /// `restrict` is active: everything is denied.
    RestrictionActive,
    /// `risk` is malformed: every mint is denied.
    MalformedRiskData,
    /// `approval_tiers` is malformed: every mint is denied.
    MalformedApprovalData,
    /// The principal does not own the resource's grant.
    ResourceNotGranted,
    /// A requested scope is outside the delegation edge.
    DelegationScopeExceeded,
    /// A confinement rule for one of the principal's labels refuses a requested scope.
    ConfinementViolation,
    /// No role of the principal's labels covers every scope.
    RoleScopeMismatch,
    /// The presented mandate does not target this resource.
    MandateTargetMismatch,
}

impl DenyReason {
    /// Every reason.
    pub const ALL: [DenyReason; 10] = [
        DenyReason::NoRuleMatched,
        DenyReason::NoActivePolicySet,
        DenyReason::RestrictionActive,
        DenyReason::MalformedRiskData,
        DenyReason::MalformedApprovalData,
        DenyReason::ResourceNotGranted,
        DenyReason::DelegationScopeExceeded,
        DenyReason::ConfinementViolation,
        DenyReason::RoleScopeMismatch,
        DenyReason::MandateTargetMismatch,
    ];

    /// The wire reason.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoRuleMatched => "no_rule_matched",
            DenyReason::NoActivePolicySet => "no_active_policy_set",
            DenyReason::RestrictionActive => "restriction_active",
            DenyReason::MalformedRiskData => "malformed_risk_data",
            DenyReason::MalformedApprovalData => "malformed_approval_data",
            DenyReason::ResourceNotGranted => "resource_not_granted",
            DenyReason::DelegationScopeExceeded => "delegation_scope_exceeded",
            DenyReason::ConfinementViolation => "confinement_violation",
            DenyReason::RoleScopeMismatch => "role_scope_mismatch",
            DenyReason::MandateTargetMismatch => "mandate_target_mismatch",
        }
    }

    /// The reason named `s`, if any.
    pub fn parse(s: &str) -> Option<DenyReason> {
        DenyReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// A sentence saying why (for simulate explanations).
    pub fn explanation(self) -> &'static str {
        match self {
            DenyReason::NoRuleMatched => "no allow rule matches the shape of the request",
            DenyReason::NoActivePolicySet => "the zone has no active policy set",
            DenyReason::RestrictionActive => "a restrict entry denies every request in the zone",
            DenyReason::MalformedRiskData => "the risk data is malformed, so mints are denied",
            DenyReason::MalformedApprovalData => {
                "the approval_tiers data is malformed, so mints are denied"
            }
            DenyReason::ResourceNotGranted => {
                "the resource's grant does not belong to an application key bound to the principal"
            }
            DenyReason::DelegationScopeExceeded => {
                "a requested scope is outside the delegation edge's scopes"
            }
            DenyReason::ConfinementViolation => {
                "a confinement rule for one of the principal's labels does not allow a requested \
                 scope"
            }
            DenyReason::RoleScopeMismatch => {
                "no role of the principal's labels grants every scope on this resource"
            }
            DenyReason::MandateTargetMismatch => {
                "the presented mandate's target does not include this resource"
            }
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What decided: an allow rule or a deny reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decided {
    /// Allowed by this rule.
    Allow(AllowRule),
    /// Denied for this reason.
    Deny(DenyReason),
}

impl Decided {
    /// A sentence saying why.
    pub fn explanation(self) -> &'static str {
        match self {
            Decided::Allow(rule) => rule.explanation(),
            Decided::Deny(reason) => reason.explanation(),
        }
    }
}

/// The name of the determining policy of an allow, rendered on demand
/// (`caracal-bootstrap`, `caracal-<app>-mint`, `caracal-workload-mint`, `caracal-<app>-use`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyName<'a> {
    rule: AllowRule,
    app_key: &'a str,
}

impl fmt::Display for PolicyName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule {
            AllowRule::Bootstrap => f.write_str("caracal-bootstrap"),
            AllowRule::WorkloadMint => f.write_str("caracal-workload-mint"),
            AllowRule::DelegatedMint => write!(f, "caracal-{}-mint", self.app_key),
            AllowRule::MandateUse => write!(f, "caracal-{}-use", self.app_key),
        }
    }
}

/// The outcome of one decision. Small and `Copy`: it borrows the input and the bundle, and
/// renders the wire result only when asked.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation<'a> {
    decided: Decided,
    /// The grant's application key (for the mint/use policy names); empty otherwise.
    app_key: &'a str,
    step_up_required: bool,
    input: &'a PolicyInput,
    bundle: &'a CompiledBundle,
}

impl<'a> Evaluation<'a> {
    /// `allow` or `deny`.
    pub fn decision(&self) -> Decision {
        match self.decided {
            Decided::Allow(_) => Decision::Allow,
            Decided::Deny(_) => Decision::Deny,
        }
    }

    /// Whether the request is allowed.
    pub fn is_allow(&self) -> bool {
        matches!(self.decided, Decided::Allow(_))
    }

    /// The rule or reason that decided.
    pub fn decided(&self) -> Decided {
        self.decided
    }

    /// The allow rule, when allowed.
    pub fn rule(&self) -> Option<AllowRule> {
        match self.decided {
            Decided::Allow(rule) => Some(rule),
            Decided::Deny(_) => None,
        }
    }

    /// The deny reason, when denied.
    pub fn deny_reason(&self) -> Option<DenyReason> {
        match self.decided {
            Decided::Allow(_) => None,
            Decided::Deny(reason) => Some(reason),
        }
    }

    /// Whether the allow carries `step_up_required` (a mint asking for a scope whose risk tier
    /// has an approval declaration). Always false on a deny.
    pub fn step_up_required(&self) -> bool {
        self.step_up_required
    }

    /// The determining policy of an allow.
    pub fn determining_policy(&self) -> Option<PolicyName<'a>> {
        self.rule().map(|rule| PolicyName {
            rule,
            app_key: self.app_key,
        })
    }

    /// `(scope, tier)` of every requested scope with a risk tier, sorted and distinct (empty
    /// unless the allow is a mint).
    pub fn risk(&self) -> Vec<(&'a str, &'a str)> {
        let Some(risk) = (match self.rule() {
            Some(rule) if rule.is_mint() => self.bundle.risk.as_ref(),
            _ => None,
        }) else {
            return Vec::new();
        };
        let mut pairs = BTreeSet::new();
        for scope in &self.input.context.requested_scopes {
            if let Some((scope, tiers)) = risk.tiers.get_key_value(scope.as_str()) {
                for tier in tiers.iter() {
                    pairs.insert((&**scope, &**tier));
                }
            }
        }
        pairs.into_iter().collect()
    }

    /// The approval declarations matched by the requested scopes' tiers, sorted by tier then
    /// canonical JSON (empty unless the allow is a mint).
    pub fn matched_approvals(&self) -> Vec<&'a Map<String, Value>> {
        let Some(approvals) = (match self.rule() {
            Some(rule) if rule.is_mint() => self.bundle.approvals.as_ref(),
            _ => None,
        }) else {
            return Vec::new();
        };
        let tiers: BTreeSet<&str> = self.risk().into_iter().map(|(_, t)| t).collect();
        tiers
            .into_iter()
            .filter_map(|t| approvals.by_tier.get(t))
            .flatten()
            .collect()
    }

    /// Render the wire result (the only step that allocates).
    pub fn to_result(&self) -> PolicyResult {
        let (determining_policies, diagnostics) = match self.decided {
            Decided::Deny(reason) => (
                Vec::new(),
                vec![object([("reason", Value::from(reason.as_str()))])],
            ),
            Decided::Allow(rule) => {
                let name = PolicyName {
                    rule,
                    app_key: self.app_key,
                };
                let mut diagnostics = Vec::new();
                if rule.is_mint() {
                    let approvals = self.matched_approvals();
                    if !approvals.is_empty() {
                        let tiers = approvals.into_iter().cloned().map(Value::Object).collect();
                        diagnostics.push(object([(
                            "step_up_required",
                            Value::Object(
                                [
                                    ("type".to_owned(), Value::from("human_approval")),
                                    ("tiers".to_owned(), Value::Array(tiers)),
                                ]
                                .into_iter()
                                .collect(),
                            ),
                        )]));
                    }
                    let risk = self.risk();
                    if !risk.is_empty() {
                        let list = risk
                            .into_iter()
                            .map(|(s, t)| {
                                Value::Object(object([
                                    ("scope", Value::from(s)),
                                    ("tier", Value::from(t)),
                                ]))
                            })
                            .collect();
                        diagnostics.push(object([("risk", Value::Array(list))]));
                    }
                }
                (
                    vec![object([("policy", Value::from(name.to_string()))])],
                    diagnostics,
                )
            }
        };
        PolicyResult {
            decision: self.decision(),
            evaluation_status: "complete".to_owned(),
            determining_policies,
            diagnostics,
        }
    }
}

fn object<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The shape of a request (see the module docs).
enum Shape<'i> {
    Workload,
    Bootstrap,
    DelegatedMint(&'i DelegationEdgeInput),
    MandateUse(&'i Map<String, Value>),
    None,
}

fn non_empty(s: Option<&str>) -> bool {
    s.is_some_and(|s| !s.is_empty())
}

/// The presented scopes of a mandate: its `scope` claim split on spaces, empties dropped.
fn presented_scopes(claims: &Map<String, Value>) -> impl Iterator<Item = &str> + Clone {
    claims
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
}

fn classify(input: &PolicyInput) -> Shape<'_> {
    let ctx = &input.context;
    let requested = &ctx.requested_scopes;
    let no_context = ctx.subject_claims.is_none()
        && input.delegation_edge.is_none()
        && ctx.agent_session_id.is_none();
    if no_context && input.principal.kind == "Workload" && input.action.id == "CredentialInjection"
    {
        return Shape::Workload;
    }
    if no_context && !requested.is_empty() && requested.iter().all(|s| s == LIFECYCLE_SCOPE) {
        return Shape::Bootstrap;
    }
    if let Some(edge) = &input.delegation_edge {
        if !edge.id.is_empty()
            && non_empty(ctx.agent_session_id.as_deref())
            && ctx.subject_claims.is_none()
            && !requested.is_empty()
            && !requested.iter().any(|s| s == LIFECYCLE_SCOPE)
        {
            return Shape::DelegatedMint(edge);
        }
    }
    if let Some(claims) = &ctx.subject_claims {
        if non_empty(claims.get("delegation_edge_id").and_then(Value::as_str))
            && requested.is_empty()
            && presented_scopes(claims).next().is_some()
        {
            return Shape::MandateUse(claims);
        }
    }
    Shape::None
}

/// Refuse inputs whose lists would make evaluation expensive.
fn check_input_limits(input: &PolicyInput) -> Result<(), PolicyError> {
    let too_many = |what, n: usize, limit| {
        if n > limit {
            Err(PolicyError::LimitExceeded { what, limit })
        } else {
            Ok(())
        }
    };
    too_many(
        "requested scopes",
        input.context.requested_scopes.len(),
        limits::MAX_SCOPES_PER_LIST,
    )?;
    too_many(
        "principal labels",
        input.principal.labels.as_ref().map_or(0, Vec::len),
        limits::MAX_LABELS,
    )?;
    too_many(
        "delegation edge scopes",
        input.delegation_edge.as_ref().map_or(0, |e| e.scopes.len()),
        limits::MAX_SCOPES_PER_LIST,
    )?;
    if let Some(claims) = &input.context.subject_claims {
        too_many(
            "scope claim bytes",
            claims
                .get("scope")
                .and_then(Value::as_str)
                .map_or(0, str::len),
            limits::MAX_SCOPE_CLAIM_BYTES,
        )?;
        too_many(
            "target claim entries",
            claims
                .get("target")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            limits::MAX_SCOPES_PER_LIST,
        )?;
    }
    Ok(())
}

/// The grant of the input's resource, if the principal owns it.
fn owned_grant<'b>(input: &PolicyInput, bundle: &'b CompiledBundle) -> Option<&'b Grant> {
    let grant = bundle.grants.get(input.resource.identifier.as_str())?;
    let owner = bundle.app_ids.get(&*grant.application)?;
    (**owner == *input.principal.id).then_some(grant)
}

/// Whether some label's role in `grant` covers every scope of `scopes`.
fn role_covers<'s>(
    grant: &Grant,
    labels: &[String],
    scopes: impl Iterator<Item = &'s str> + Clone,
) -> bool {
    labels.iter().any(|label| {
        grant
            .roles
            .get(label.as_str())
            .is_some_and(|role| scopes.clone().all(|s| role.contains(s)))
    })
}

/// Whether every confinement rule that applies to one of `labels` allows every requested
/// scope.
fn confinement_allows(bundle: &CompiledBundle, labels: &[String], requested: &[String]) -> bool {
    bundle.confinement.iter().all(|rule| {
        let applies = labels.iter().any(|l| l.starts_with(&*rule.label_prefix));
        !applies || requested.iter().all(|s| rule.scopes.contains(s.as_str()))
    })
}

fn any_gated(bundle: &CompiledBundle, requested: &[String]) -> bool {
    !bundle.gated_scopes.is_empty()
        && requested
            .iter()
            .any(|s| bundle.gated_scopes.contains(s.as_str()))
}

/// Decide `input` against `bundle` (see the module docs for the rules and their precedence).
///
/// Errors are evaluation errors, never denies: a `schema_version` other than
/// `2026-05-20`, or an input over a [limit](super::limits). Callers fail closed on them.
pub fn evaluate<'a>(
    input: &'a PolicyInput,
    bundle: &'a CompiledBundle,
) -> Result<Evaluation<'a>, PolicyError> {
    if input.schema_version != POLICY_INPUT_SCHEMA_VERSION {
        return Err(PolicyError::SchemaVersion {
            found: input.schema_version.clone(),
        });
    }
    check_input_limits(input)?;
    let mut outcome = Evaluation {
        decided: Decided::Deny(DenyReason::NoRuleMatched),
        app_key: "",
        step_up_required: false,
        input,
        bundle,
    };
    let deny = |reason| Decided::Deny(reason);
    outcome.decided = if bundle.deny_all {
        deny(DenyReason::NoActivePolicySet)
    } else if bundle.restricted {
        deny(DenyReason::RestrictionActive)
    } else {
        let labels = input.principal.labels.as_deref().unwrap_or(&[]);
        let requested = input.context.requested_scopes.as_slice();
        match classify(input) {
            Shape::None => deny(DenyReason::NoRuleMatched),
            Shape::Workload => {
                if bundle.risk.is_none() {
                    deny(DenyReason::MalformedRiskData)
                } else if bundle.approvals.is_none() {
                    deny(DenyReason::MalformedApprovalData)
                } else {
                    outcome.step_up_required = any_gated(bundle, requested);
                    Decided::Allow(AllowRule::WorkloadMint)
                }
            }
            Shape::Bootstrap => match owned_grant(input, bundle) {
                Some(grant) => {
                    outcome.app_key = &grant.application;
                    Decided::Allow(AllowRule::Bootstrap)
                }
                None => deny(DenyReason::NoRuleMatched),
            },
            Shape::DelegatedMint(edge) => {
                if bundle.risk.is_none() {
                    deny(DenyReason::MalformedRiskData)
                } else if bundle.approvals.is_none() {
                    deny(DenyReason::MalformedApprovalData)
                } else {
                    match owned_grant(input, bundle) {
                        None => deny(DenyReason::ResourceNotGranted),
                        Some(_) if !requested.iter().all(|s| edge.scopes.contains(s)) => {
                            deny(DenyReason::DelegationScopeExceeded)
                        }
                        Some(_) if !confinement_allows(bundle, labels, requested) => {
                            deny(DenyReason::ConfinementViolation)
                        }
                        Some(grant)
                            if !role_covers(
                                grant,
                                labels,
                                requested.iter().map(String::as_str),
                            ) =>
                        {
                            deny(DenyReason::RoleScopeMismatch)
                        }
                        Some(grant) => {
                            outcome.app_key = &grant.application;
                            outcome.step_up_required = any_gated(bundle, requested);
                            Decided::Allow(AllowRule::DelegatedMint)
                        }
                    }
                }
            }
            Shape::MandateUse(claims) => {
                let identifier = input.resource.identifier.as_str();
                let targets_resource = claims
                    .get("target")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.iter().any(|v| v.as_str() == Some(identifier)));
                if !targets_resource {
                    deny(DenyReason::MandateTargetMismatch)
                } else {
                    match owned_grant(input, bundle) {
                        None => deny(DenyReason::ResourceNotGranted),
                        Some(grant) if !role_covers(grant, labels, presented_scopes(claims)) => {
                            deny(DenyReason::RoleScopeMismatch)
                        }
                        Some(grant) => {
                            outcome.app_key = &grant.application;
                            Decided::Allow(AllowRule::MandateUse)
                        }
                    }
                }
            }
        }
    };
    Ok(outcome)
}
