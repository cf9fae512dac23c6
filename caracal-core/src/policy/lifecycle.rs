//! The policy lifecycle over [`PolicyStore`] (reference `control-plane.md` §1.13 and §4,
//! `http-bodies.md` §5–§6).
//!
//! - A **policy** is a named document with immutable numbered **versions**; each version's
//!   content is validated when written ([`validate_content`]) and carries its
//!   `content_sha256`.
//! - A **policy set** has immutable **set versions** whose manifest lists policy version ids
//!   (1..=256, distinct, all of the zone, one schema) and carries `manifest_sha256`. Creating
//!   one re-validates every referenced version and compiles the merged bundle, refusing
//!   `invalid_policy_contract` / `invalid_policy_bundle`.
//! - **Activation** re-compiles the version (a definitive compile failure blocks) and then, in
//!   one store transaction, makes it the zone's only active set version and enqueues
//!   `caracal.policy.invalidate {zone_id, policy_set_id, policy_set_version_id}` on the outbox.
//!   **Rollback** is activating an older version: versions are immutable, so nothing else is
//!   needed.
//! - **Simulation** compiles a version and evaluates an input against it without touching any
//!   binding, explaining which rule decided.
//!
//! Content may be a Rego data document (the reference's only form) or a JSON data document
//! (an extension: the same six rules as a JSON object, see [`super::data`]).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::contract::Decided;
use super::data::{CompiledBundle, DataDocument, DocumentFormat, DocumentSource};
use super::rego::{self, DATA_PACKAGE, ValidatedDocument};
use super::{PolicyError, evaluate, limits};
use crate::clock::SharedClock;
use crate::ids::SharedIdGen;
use crate::model::Attribution;
use crate::model::policy::{Decision, POLICY_INPUT_SCHEMA_VERSION, PolicyInput, PolicyResult};
use crate::model::policy_set::{
    ManifestEntry, Policy, PolicySet, PolicySetVersion, PolicyVersion, content_sha256,
    manifest_sha256,
};
use crate::store::StoreError;
use crate::store::outbox::OutboxMessage;
use crate::store::policy::PolicyStore;
use crate::streams::names;

/// Policy names with this prefix are reserved for the platform.
pub const RESERVED_NAME_PREFIX: &str = "caracal.sys/";

/// Validate one policy document in either format, returning the rules it defines.
pub fn validate_content(content: &str) -> Result<ValidatedDocument, PolicyError> {
    match DocumentFormat::detect(content) {
        DocumentFormat::Rego => rego::validate(content),
        DocumentFormat::Json => {
            let doc = DataDocument::from_json_str("policy.json", content)?;
            Ok(ValidatedDocument {
                package: DATA_PACKAGE.to_owned(),
                rules: doc.rules().map(|(k, _)| k).collect(),
            })
        }
    }
}

/// Compile the documents of `versions` (in manifest order) into one bundle.
pub fn compile_versions(versions: &[PolicyVersion]) -> Result<CompiledBundle, PolicyError> {
    let sources: Vec<DocumentSource<'_>> = versions
        .iter()
        .map(|v| DocumentSource {
            label: &v.id,
            content: &v.content,
        })
        .collect();
    CompiledBundle::from_sources(&sources)
}

/// A new policy.
#[derive(Debug, Clone, Copy)]
pub struct NewPolicy<'a> {
    /// Name, unique per zone among active policies.
    pub name: &'a str,
    /// Optional description.
    pub description: Option<&'a str>,
    /// The first version's content.
    pub content: &'a str,
    /// Who creates it (`admin:<token id>`, ...).
    pub actor: Option<&'a str>,
}

/// What an activation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// The set.
    pub policy_set_id: String,
    /// The now active set version.
    pub version_id: String,
    /// The outbox row carrying `caracal.policy.invalidate`.
    pub outbox_id: String,
}

/// `explanation` of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// `not_executed`, `executed` or `failed`.
    pub evaluation: &'static str,
    /// Why: the deciding rule's explanation, or the failure.
    pub reason: String,
    /// The decision, when executed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The determining policy of an allow, or the deny reason (an addition to the
    /// reference's shape: which rule decided, machine-readably).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The simulated set version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_set_version_id: Option<String>,
    /// Its manifest hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
}

/// The result of `simulate` (reference `http-bodies.md` §6); never changes a binding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Simulation {
    /// Always true.
    pub dry_run: bool,
    /// True when the input raised no warning.
    pub would_activate: bool,
    /// The set.
    pub policy_set_id: String,
    /// The simulated set version.
    pub version_id: String,
    /// The set version's schema.
    pub schema_version: String,
    /// The input schema the engine evaluates.
    pub input_schema_version: &'static str,
    /// The set version's manifest hash.
    pub manifest_sha256: String,
    /// The policy version ids of the manifest.
    pub policies: Vec<String>,
    /// Input warnings (`input_schema_mismatch:<v>`, `principal_zone_mismatch`,
    /// `missing_resource`, `missing_action`, `missing_context`).
    pub warnings: Vec<String>,
    /// What was evaluated and what decided.
    pub explanation: Explanation,
    /// The contract result, when executed.
    pub result: Option<PolicyResult>,
}

/// Policies and policy sets over a [`PolicyStore`].
pub struct PolicyLifecycle<S: PolicyStore + ?Sized> {
    store: std::sync::Arc<S>,
    clock: SharedClock,
    ids: SharedIdGen,
}

impl<S: PolicyStore + ?Sized> std::fmt::Debug for PolicyLifecycle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyLifecycle").finish_non_exhaustive()
    }
}

fn store_err(entity: &'static str) -> impl Fn(StoreError) -> PolicyError {
    move |e| match e {
        StoreError::NotFound { .. } => PolicyError::NotFound(entity),
        other => PolicyError::Store(other),
    }
}

impl<S: PolicyStore + ?Sized> PolicyLifecycle<S> {
    /// A lifecycle over `store`, stamping times from `clock` and ids from `ids`.
    pub fn new(store: std::sync::Arc<S>, clock: SharedClock, ids: SharedIdGen) -> Self {
        Self { store, clock, ids }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn new_version(
        &self,
        zone_id: &str,
        policy_id: &str,
        content: &str,
        actor: Option<&str>,
    ) -> PolicyVersion {
        PolicyVersion {
            id: self.ids.next_id(),
            policy_id: policy_id.to_owned(),
            zone_id: zone_id.to_owned(),
            version: 1,
            content: content.to_owned(),
            content_sha256: content_sha256(content),
            schema_version: POLICY_INPUT_SCHEMA_VERSION.to_owned(),
            created_by: actor.map(str::to_owned),
            created_at: self.now(),
        }
    }

    /// Create a policy and its version 1 after validating the content (`invalid_rego`).
    pub async fn create_policy(
        &self,
        zone_id: &str,
        new: NewPolicy<'_>,
    ) -> Result<(Policy, PolicyVersion), PolicyError> {
        if new.name.starts_with(RESERVED_NAME_PREFIX) {
            return Err(PolicyError::ReservedNamespace);
        }
        validate_content(new.content)?;
        let now = self.now();
        let policy = Policy {
            id: self.ids.next_id(),
            zone_id: zone_id.to_owned(),
            name: new.name.to_owned(),
            description: new.description.map(str::to_owned),
            attribution: Attribution {
                created_by: new.actor.map(str::to_owned),
                updated_by: new.actor.map(str::to_owned),
                ..Attribution::default()
            },
            created_at: now,
            updated_at: now,
            archived_at: None,
        };
        let first = self.new_version(zone_id, &policy.id, new.content, new.actor);
        self.store.insert_policy(&policy, &first).await?;
        Ok((policy, first))
    }

    /// Append a version (`version = max + 1`) after validating the content.
    pub async fn add_policy_version(
        &self,
        zone_id: &str,
        policy_id: &str,
        content: &str,
        actor: Option<&str>,
    ) -> Result<PolicyVersion, PolicyError> {
        validate_content(content)?;
        let version = self.new_version(zone_id, policy_id, content, actor);
        self.store
            .add_policy_version(&version)
            .await
            .map_err(store_err("policy"))
    }

    /// Create a policy set (with its empty binding).
    pub async fn create_policy_set(
        &self,
        zone_id: &str,
        name: &str,
        description: Option<&str>,
        actor: Option<&str>,
    ) -> Result<PolicySet, PolicyError> {
        let now = self.now();
        let set = PolicySet {
            id: self.ids.next_id(),
            zone_id: zone_id.to_owned(),
            name: name.to_owned(),
            description: description.map(str::to_owned),
            attribution: Attribution {
                created_by: actor.map(str::to_owned),
                updated_by: actor.map(str::to_owned),
                ..Attribution::default()
            },
            created_at: now,
            updated_at: now,
            active_version_id: None,
            archived_at: None,
        };
        self.store.insert_policy_set(&set).await?;
        Ok(set)
    }

    /// Check a manifest and fetch its policy versions, in manifest order
    /// (`invalid_policy_contract` on any rule).
    async fn manifest_versions(
        &self,
        zone_id: &str,
        manifest: &[ManifestEntry],
    ) -> Result<Vec<PolicyVersion>, PolicyError> {
        let contract = |m: String| PolicyError::InvalidPolicyContract(m);
        if manifest.is_empty() {
            return Err(contract(
                "policy set manifest must reference at least one policy version".into(),
            ));
        }
        if manifest.len() > limits::MAX_MANIFEST_ENTRIES {
            return Err(contract(format!(
                "policy set manifest exceeds maximum of {} entries",
                limits::MAX_MANIFEST_ENTRIES
            )));
        }
        if manifest.iter().any(|e| e.policy_version_id.is_empty()) {
            return Err(contract(
                "policy set manifest entries need a policy_version_id".into(),
            ));
        }
        let mut seen = HashSet::with_capacity(manifest.len());
        if !manifest.iter().all(|e| seen.insert(&e.policy_version_id)) {
            return Err(contract(
                "policy set manifest contains duplicate policy_version_id entries".into(),
            ));
        }
        let ids: Vec<String> = manifest
            .iter()
            .map(|e| e.policy_version_id.clone())
            .collect();
        // The store is zone-scoped: a version of another zone is reported as missing.
        let versions = self.store.get_policy_versions(zone_id, &ids).await?;
        if versions.len() != ids.len() {
            return Err(contract(
                "policy set manifest references missing policy versions".into(),
            ));
        }
        let schema = versions
            .first()
            .map(|v| v.schema_version.clone())
            .unwrap_or_default();
        for v in &versions {
            if v.zone_id != zone_id {
                return Err(contract(format!(
                    "policy version {} belongs to a different zone",
                    v.id
                )));
            }
            if v.schema_version != schema {
                return Err(contract(format!(
                    "policy version {} schema {} does not match policy set schema {}",
                    v.id, v.schema_version, schema
                )));
            }
            validate_content(&v.content)
                .map_err(|e| contract(format!("policy version {}: {}", v.id, e.description())))?;
        }
        Ok(versions)
    }

    /// Compile a manifest's versions (`invalid_policy_bundle` on failure).
    async fn compile_manifest(
        &self,
        zone_id: &str,
        manifest: &[ManifestEntry],
    ) -> Result<(Vec<PolicyVersion>, CompiledBundle), PolicyError> {
        let versions = self.manifest_versions(zone_id, manifest).await?;
        let bundle = compile_versions(&versions)
            .map_err(|e| PolicyError::InvalidPolicyBundle(e.description()))?;
        Ok((versions, bundle))
    }

    /// Create a set version after checking the manifest and compiling the merged bundle.
    pub async fn create_policy_set_version(
        &self,
        zone_id: &str,
        set_id: &str,
        manifest: &[ManifestEntry],
    ) -> Result<PolicySetVersion, PolicyError> {
        match self.store.get_policy_set(zone_id, set_id).await? {
            Some(set) if set.archived_at.is_none() => {}
            _ => return Err(PolicyError::NotFound("policy_set")),
        }
        let (versions, _) = self.compile_manifest(zone_id, manifest).await?;
        let manifest: Vec<ManifestEntry> = manifest.to_vec();
        let version = PolicySetVersion {
            id: self.ids.next_id(),
            policy_set_id: set_id.to_owned(),
            zone_id: zone_id.to_owned(),
            version: 1,
            manifest_sha256: manifest_sha256(&manifest),
            manifest_json: manifest,
            schema_version: versions
                .first()
                .map(|v| v.schema_version.clone())
                .unwrap_or_else(|| POLICY_INPUT_SCHEMA_VERSION.to_owned()),
            created_at: self.now(),
        };
        self.store
            .add_policy_set_version(&version)
            .await
            .map_err(store_err("policy_set"))
    }

    /// A set version of `set_id`, or `NotFound("policy_set_version")`.
    async fn set_version(
        &self,
        zone_id: &str,
        set_id: &str,
        version_id: &str,
    ) -> Result<PolicySetVersion, PolicyError> {
        match self
            .store
            .get_policy_set_version(zone_id, version_id)
            .await?
        {
            Some(v) if v.policy_set_id == set_id => Ok(v),
            _ => Err(PolicyError::NotFound("policy_set_version")),
        }
    }

    /// Compile a stored set version (checking its manifest hash first).
    pub async fn compile_set_version(
        &self,
        version: &PolicySetVersion,
    ) -> Result<CompiledBundle, PolicyError> {
        if manifest_sha256(&version.manifest_json) != version.manifest_sha256 {
            return Err(PolicyError::ManifestMismatch {
                version_id: version.id.clone(),
            });
        }
        let (_, bundle) = self
            .compile_manifest(&version.zone_id, &version.manifest_json)
            .await?;
        Ok(bundle)
    }

    /// Make `version_id` the zone's only active set version and publish
    /// `caracal.policy.invalidate` through the outbox, atomically. The version is compiled
    /// first: a version that no longer compiles is refused and nothing changes.
    pub async fn activate(
        &self,
        zone_id: &str,
        set_id: &str,
        version_id: &str,
    ) -> Result<Activation, PolicyError> {
        let version = self.set_version(zone_id, set_id, version_id).await?;
        self.compile_set_version(&version).await?;
        let message = OutboxMessage::new(
            names::POLICY_INVALIDATE,
            vec![
                ("zone_id".to_owned(), zone_id.to_owned()),
                ("policy_set_id".to_owned(), set_id.to_owned()),
                ("policy_set_version_id".to_owned(), version_id.to_owned()),
            ],
        );
        let outbox_id = self
            .store
            .activate_policy_set(zone_id, set_id, version_id, &message, self.now())
            .await
            .map_err(store_err("policy_set"))?;
        Ok(Activation {
            policy_set_id: set_id.to_owned(),
            version_id: version_id.to_owned(),
            outbox_id,
        })
    }

    /// Roll back to an earlier set version: activation of an immutable older version (the
    /// same checks and the same invalidation as [`Self::activate`]).
    pub async fn rollback(
        &self,
        zone_id: &str,
        set_id: &str,
        version_id: &str,
    ) -> Result<Activation, PolicyError> {
        self.activate(zone_id, set_id, version_id).await
    }

    /// Archive a set. If it was the zone's active set, the zone becomes deny-all and
    /// `caracal.policy.invalidate` is published with `zone_id` and `policy_set_id` (the
    /// version field is left out, as the reference skips a null one), atomically.
    pub async fn archive_policy_set(&self, zone_id: &str, set_id: &str) -> Result<(), PolicyError> {
        let message = OutboxMessage::new(
            names::POLICY_INVALIDATE,
            vec![
                ("zone_id".to_owned(), zone_id.to_owned()),
                ("policy_set_id".to_owned(), set_id.to_owned()),
            ],
        );
        self.store
            .archive_policy_set(zone_id, set_id, &message, self.now())
            .await
            .map_err(store_err("policy_set"))
    }

    /// Evaluate `input` against set version `version_id` without changing any binding.
    ///
    /// A version that does not compile is an error (422 `invalid_policy_contract` /
    /// `invalid_policy_bundle`); an input that cannot be evaluated is a `failed` explanation.
    pub async fn simulate(
        &self,
        zone_id: &str,
        set_id: &str,
        version_id: &str,
        input: Option<&Value>,
    ) -> Result<Simulation, PolicyError> {
        let version = self.set_version(zone_id, set_id, version_id).await?;
        let bundle = self.compile_set_version(&version).await?;
        let warnings = input
            .map(|i| input_warnings(zone_id, i))
            .unwrap_or_default();
        let mut explanation = Explanation {
            evaluation: "not_executed",
            reason: "no input".to_owned(),
            decision: None,
            decided_by: None,
            policy_set_version_id: Some(version.id.clone()),
            manifest_sha256: Some(version.manifest_sha256.clone()),
        };
        let mut result = None;
        if let Some(raw) = input {
            match serde_json::from_value::<PolicyInput>(raw.clone()) {
                Err(e) => {
                    explanation.evaluation = "failed";
                    explanation.reason = format!("invalid_input: {e}");
                }
                Ok(parsed) => match evaluate(&parsed, &bundle) {
                    Err(e) => {
                        explanation.evaluation = "failed";
                        explanation.reason = format!("{}: {e}", e.code());
                    }
                    Ok(eval) => {
                        explanation.evaluation = "executed";
                        explanation.reason = eval.decided().explanation().to_owned();
                        explanation.decision = Some(eval.decision());
                        explanation.decided_by = Some(match eval.decided() {
                            Decided::Allow(_) => eval
                                .determining_policy()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            Decided::Deny(reason) => reason.as_str().to_owned(),
                        });
                        result = Some(eval.to_result());
                    }
                },
            }
        }
        Ok(Simulation {
            dry_run: true,
            would_activate: warnings.is_empty(),
            policy_set_id: set_id.to_owned(),
            version_id: version.id.clone(),
            schema_version: version.schema_version.clone(),
            input_schema_version: POLICY_INPUT_SCHEMA_VERSION,
            manifest_sha256: version.manifest_sha256.clone(),
            policies: version
                .manifest_json
                .iter()
                .map(|e| e.policy_version_id.clone())
                .collect(),
            warnings,
            explanation,
            result,
        })
    }
}

/// The reference's simulate input warnings, in its order.
pub fn input_warnings(zone_id: &str, input: &Value) -> Vec<String> {
    let mut warnings = Vec::new();
    let schema = input.get("schema_version").and_then(Value::as_str);
    if schema != Some(POLICY_INPUT_SCHEMA_VERSION) {
        warnings.push(format!("input_schema_mismatch:{}", schema.unwrap_or("")));
    }
    let zone = input
        .get("principal")
        .and_then(|p| p.get("zone_id"))
        .and_then(Value::as_str);
    if zone != Some(zone_id) {
        warnings.push("principal_zone_mismatch".to_owned());
    }
    for (field, warning) in [
        ("resource", "missing_resource"),
        ("action", "missing_action"),
        ("context", "missing_context"),
    ] {
        if !input.get(field).is_some_and(Value::is_object) {
            warnings.push(warning.to_owned());
        }
    }
    warnings
}
