//! Data documents and their compiled form.
//!
//! An adopter supplies only data: six rules of package `caracal.authz` (reference `sts.md`
//! §4.3), written as Rego data documents (see [`super::rego`]) or as a JSON object:
//!
//! | rule | shape |
//! |---|---|
//! | `app_ids` | `{key: application_id}` |
//! | `grants` | `{resource_identifier: {application: key, roles: {role: [scope]}}}` |
//! | `confinement` | `[{label_prefix, scopes: [scope]}]` |
//! | `restrict` | any non-empty collection restricts the zone |
//! | `risk` | `[{scope, tier}]` |
//! | `approval_tiers` | `[{tier, approver?, ttl_seconds?, privacy?}]` |
//!
//! A bundle is every document of the active set version; [`DataSet::merge`] refuses two
//! documents defining the same rule. [`CompiledBundle::compile`] then turns the data into
//! indexes (grant by resource identifier, roles as sets, confinement rules, risk tiers by
//! scope, approval declarations by tier) so that [`evaluate`](super::evaluate) is lookups.
//!
//! ## Shape rules (interpretation, mirrored by the Rego differential contract)
//!
//! - `app_ids`, `grants` and `confinement` are checked strictly when compiling: a wrong shape
//!   is [`PolicyError::InvalidData`], so a set version carrying it is refused
//!   (`invalid_policy_bundle`) and a zone keeps its last good bundle. (In OPA a wrong shape
//!   makes a rule silently undefined or a builtin fail at decision time; refusing it at load is
//!   the fail-closed reading.) Unknown keys inside a grant or a confinement rule are ignored.
//! - `risk` and `approval_tiers` are checked at decision time, as the reference does: a
//!   malformed one makes every *mint* deny with `malformed_risk_data` /
//!   `malformed_approval_data`, while bootstrap and mandate use are unaffected.
//! - `restrict` restricts unless it is an empty object or an empty array (a Rego set is an
//!   array once evaluated). Any other value, `null` and `false` included, restricts: the author
//!   defined a restriction rule, and failing closed is the safe reading of a scalar.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde_json::{Map, Value};

use super::limits::{
    MAX_APP_IDS, MAX_APPROVAL_TIERS, MAX_CONFINEMENT_RULES, MAX_GRANTS, MAX_RISK_ENTRIES,
    MAX_ROLES_PER_GRANT, MAX_SCOPES_PER_LIST, MAX_STRING_BYTES,
};
use super::rego::{self, RegoViolation};
use super::{PolicyError, limits};

/// One of the six data rules an adopter may define.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataKey {
    /// `app_ids`: application key → application id.
    AppIds,
    /// `grants`: resource identifier → owning application key and roles.
    Grants,
    /// `confinement`: label-prefix scope confinement.
    Confinement,
    /// `restrict`: any entry denies everything.
    Restrict,
    /// `risk`: scope → risk tier.
    Risk,
    /// `approval_tiers`: human approval declarations per tier.
    ApprovalTiers,
}

impl DataKey {
    /// Every key, in the reference's order.
    pub const ALL: [DataKey; 6] = [
        DataKey::AppIds,
        DataKey::Grants,
        DataKey::Confinement,
        DataKey::Restrict,
        DataKey::Risk,
        DataKey::ApprovalTiers,
    ];

    /// The rule name.
    pub fn as_str(self) -> &'static str {
        match self {
            DataKey::AppIds => "app_ids",
            DataKey::Grants => "grants",
            DataKey::Confinement => "confinement",
            DataKey::Restrict => "restrict",
            DataKey::Risk => "risk",
            DataKey::ApprovalTiers => "approval_tiers",
        }
    }

    /// The key named `name`, if it is one of the six.
    pub fn parse(name: &str) -> Option<DataKey> {
        DataKey::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a policy document is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentFormat {
    /// A JSON object whose keys are data rules.
    Json,
    /// A Rego data document (`# caracal:data-document`, `package caracal.authz`).
    Rego,
}

impl DocumentFormat {
    /// A document whose first non-blank character is `{` is JSON (a Rego module cannot start
    /// with `{`); anything else is Rego.
    pub fn detect(content: &str) -> DocumentFormat {
        if content.trim_start().starts_with('{') {
            DocumentFormat::Json
        } else {
            DocumentFormat::Rego
        }
    }
}

/// One policy document's text with a label for error messages (a file name or a policy
/// version id).
#[derive(Debug, Clone, Copy)]
pub struct DocumentSource<'a> {
    /// Where the document came from.
    pub label: &'a str,
    /// The document text.
    pub content: &'a str,
}

/// The data rules one document defines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataDocument {
    label: String,
    rules: BTreeMap<DataKey, Value>,
}

impl DataDocument {
    /// An empty document labelled `label`.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            rules: BTreeMap::new(),
        }
    }

    /// Parse a JSON data document: an object whose keys are data rules, with the same
    /// `invalid_rego` descriptions as a Rego document (`empty_policy`, `content_too_large`,
    /// `must_be_data_document` for a non-object, `data_document_must_not_define_result`,
    /// `data_document_must_define_data`, `data_document_rule_not_allowed:<key>`).
    pub fn from_json_str(label: impl Into<String>, content: &str) -> Result<Self, PolicyError> {
        rego::check_size(content)?;
        let value: Value =
            serde_json::from_str(content).map_err(|e| RegoViolation::InvalidJson(e.to_string()))?;
        Self::from_json_value(label, value)
    }

    /// A JSON data document from an already parsed value (see [`Self::from_json_str`]).
    pub fn from_json_value(label: impl Into<String>, value: Value) -> Result<Self, PolicyError> {
        let Value::Object(object) = value else {
            return Err(RegoViolation::MustBeDataDocument.into());
        };
        if object.contains_key("result") {
            return Err(RegoViolation::MustNotDefineResult.into());
        }
        if object.is_empty() {
            return Err(RegoViolation::MustDefineData.into());
        }
        let mut doc = DataDocument::new(label);
        // serde_json's map is ordered by key, so the first refused key is deterministic.
        for (name, value) in object {
            let key = DataKey::parse(&name).ok_or(RegoViolation::RuleNotAllowed(name))?;
            doc.rules.insert(key, value);
        }
        Ok(doc)
    }

    /// Set rule `key` (used by the Rego loader once a rule's value is known).
    pub fn insert(&mut self, key: DataKey, value: Value) {
        self.rules.insert(key, value);
    }

    /// The document's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The value of rule `key`, if this document defines it.
    pub fn get(&self, key: DataKey) -> Option<&Value> {
        self.rules.get(&key)
    }

    /// The rules this document defines, in key order.
    pub fn rules(&self) -> impl Iterator<Item = (DataKey, &Value)> {
        self.rules.iter().map(|(k, v)| (*k, v))
    }
}

/// The merged data of one bundle: each rule defined by at most one document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataSet {
    // INVARIANT: one entry per key; the label is the defining document's.
    rules: BTreeMap<DataKey, (String, Value)>,
}

impl DataSet {
    /// Merge documents, refusing a rule defined by two of them
    /// ([`PolicyError::DuplicateDataKey`]).
    pub fn merge(docs: impl IntoIterator<Item = DataDocument>) -> Result<Self, PolicyError> {
        let mut set = DataSet::default();
        for doc in docs {
            for (key, value) in doc.rules {
                if let Some((first, _)) = set.rules.get(&key) {
                    return Err(PolicyError::DuplicateDataKey {
                        key,
                        first: first.clone(),
                        second: doc.label,
                    });
                }
                set.rules.insert(key, (doc.label.clone(), value));
            }
        }
        Ok(set)
    }

    /// Load documents written in either format. Rego documents are validated and evaluated
    /// together, in one interpreter, so one may refer to another's rules as in the reference
    /// bundle; JSON documents are plain data. Two documents declaring the same rule are
    /// refused even when one of them evaluates to nothing.
    pub fn load(sources: &[DocumentSource<'_>]) -> Result<Self, PolicyError> {
        let mut json_docs = Vec::new();
        let mut rego_sources = Vec::new();
        for source in sources {
            match DocumentFormat::detect(source.content) {
                DocumentFormat::Json => {
                    json_docs.push(DataDocument::from_json_str(source.label, source.content)?)
                }
                DocumentFormat::Rego => rego_sources.push(*source),
            }
        }
        let mut docs = rego::evaluate_documents(&rego_sources)?;
        docs.append(&mut json_docs);
        DataSet::merge(docs)
    }

    /// The value of rule `key`, if defined.
    pub fn get(&self, key: DataKey) -> Option<&Value> {
        self.rules.get(&key).map(|(_, v)| v)
    }

    /// The data as one JSON object `{rule: value}` (what `data.caracal.authz` holds).
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.rules
                .iter()
                .map(|(k, (_, v))| (k.as_str().to_owned(), v.clone()))
                .collect(),
        )
    }
}

/// A resource grant, compiled: the owning application key and each role's scopes as a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) application: Box<str>,
    pub(crate) roles: HashMap<Box<str>, HashSet<Box<str>>>,
}

/// A confinement rule: principals with a label starting with `label_prefix` may only ask for
/// `scopes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Confinement {
    pub(crate) label_prefix: Box<str>,
    pub(crate) scopes: HashSet<Box<str>>,
}

/// Risk tiers by scope, when `risk` is well formed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RiskIndex {
    /// scope → its distinct tiers, sorted.
    pub(crate) tiers: HashMap<Box<str>, Box<[Box<str>]>>,
}

/// Approval declarations by tier, when `approval_tiers` is well formed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ApprovalIndex {
    /// tier → its declarations as written, distinct, sorted by their canonical JSON.
    pub(crate) by_tier: HashMap<Box<str>, Vec<Map<String, Value>>>,
}

/// The compiled data of one zone: what [`evaluate`](super::evaluate) reads.
///
/// Immutable once built; share it behind an `Arc` (see [`super::cache`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledBundle {
    /// The zone has no active set version: every decision is `no_active_policy_set`.
    pub(crate) deny_all: bool,
    /// application key → application id.
    pub(crate) app_ids: HashMap<Box<str>, Box<str>>,
    /// resource identifier → grant.
    pub(crate) grants: HashMap<Box<str>, Grant>,
    pub(crate) confinement: Box<[Confinement]>,
    pub(crate) restricted: bool,
    /// `None` when `risk` is malformed (mints deny `malformed_risk_data`).
    pub(crate) risk: Option<RiskIndex>,
    /// `None` when `approval_tiers` is malformed (mints deny `malformed_approval_data`).
    pub(crate) approvals: Option<ApprovalIndex>,
    /// Scopes with a tier that has at least one approval declaration: a mint asking for one
    /// carries `step_up_required`. Empty when either document is malformed.
    pub(crate) gated_scopes: HashSet<Box<str>>,
}

/// Counts describing a compiled bundle (for status pages and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BundleStats {
    /// Whether this is the deny-all fallback.
    pub deny_all: bool,
    /// Entries of `app_ids`.
    pub app_ids: usize,
    /// Entries of `grants`.
    pub grants: usize,
    /// Confinement rules.
    pub confinement_rules: usize,
    /// Whether `restrict` is active.
    pub restricted: bool,
    /// Whether `risk` is well formed.
    pub risk_well_formed: bool,
    /// Whether `approval_tiers` is well formed.
    pub approvals_well_formed: bool,
}

impl CompiledBundle {
    /// The fallback of a zone with no active policy set: denies everything with
    /// `no_active_policy_set`.
    pub fn deny_all() -> Self {
        Self {
            deny_all: true,
            ..Self::empty()
        }
    }

    /// A bundle with no data (an active set whose documents define nothing useful): it allows
    /// only what needs no data (the workload mint).
    fn empty() -> Self {
        Self {
            deny_all: false,
            app_ids: HashMap::new(),
            grants: HashMap::new(),
            confinement: Box::new([]),
            restricted: false,
            risk: Some(RiskIndex::default()),
            approvals: Some(ApprovalIndex::default()),
            gated_scopes: HashSet::new(),
        }
    }

    /// Load and compile documents in either format (see [`DataSet::load`]).
    pub fn from_sources(sources: &[DocumentSource<'_>]) -> Result<Self, PolicyError> {
        Self::compile(&DataSet::load(sources)?)
    }

    /// Compile merged data into indexes. Wrong shapes of `app_ids`, `grants` and
    /// `confinement` and any exceeded bound are errors; a malformed `risk` or
    /// `approval_tiers` is recorded, not refused (see the module docs).
    pub fn compile(data: &DataSet) -> Result<Self, PolicyError> {
        let mut bundle = Self::empty();
        if let Some(v) = data.get(DataKey::AppIds) {
            bundle.app_ids = compile_app_ids(v)?;
        }
        if let Some(v) = data.get(DataKey::Grants) {
            bundle.grants = compile_grants(v)?;
        }
        if let Some(v) = data.get(DataKey::Confinement) {
            bundle.confinement = compile_confinement(v)?;
        }
        if let Some(v) = data.get(DataKey::Restrict) {
            bundle.restricted = restricts(v);
        }
        if let Some(v) = data.get(DataKey::Risk) {
            bundle.risk = compile_risk(v)?;
        }
        if let Some(v) = data.get(DataKey::ApprovalTiers) {
            bundle.approvals = compile_approvals(v)?;
        }
        if let (Some(risk), Some(approvals)) = (&bundle.risk, &bundle.approvals) {
            bundle.gated_scopes = risk
                .tiers
                .iter()
                .filter(|(_, tiers)| tiers.iter().any(|t| approvals.by_tier.contains_key(t)))
                .map(|(scope, _)| scope.clone())
                .collect();
        }
        Ok(bundle)
    }

    /// Whether this is the deny-all fallback.
    pub fn is_deny_all(&self) -> bool {
        self.deny_all
    }

    /// Counts describing the bundle.
    pub fn stats(&self) -> BundleStats {
        BundleStats {
            deny_all: self.deny_all,
            app_ids: self.app_ids.len(),
            grants: self.grants.len(),
            confinement_rules: self.confinement.len(),
            restricted: self.restricted,
            risk_well_formed: self.risk.is_some(),
            approvals_well_formed: self.approvals.is_some(),
        }
    }
}

fn invalid(msg: impl Into<String>) -> PolicyError {
    PolicyError::InvalidData(msg.into())
}

fn check_count(what: &'static str, n: usize, limit: usize) -> Result<(), PolicyError> {
    if n > limit {
        return Err(PolicyError::LimitExceeded { what, limit });
    }
    Ok(())
}

/// A bounded string as a boxed str.
fn bounded(what: &'static str, s: &str) -> Result<Box<str>, PolicyError> {
    if s.len() > MAX_STRING_BYTES {
        return Err(PolicyError::LimitExceeded {
            what,
            limit: MAX_STRING_BYTES,
        });
    }
    Ok(s.into())
}

/// An array of strings as a set (a Rego set arrives as an array).
fn scope_set(what: &'static str, v: &Value) -> Result<HashSet<Box<str>>, PolicyError> {
    let Value::Array(items) = v else {
        return Err(invalid(format!("{what} must be an array of strings")));
    };
    check_count(what, items.len(), MAX_SCOPES_PER_LIST)?;
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => bounded(what, s),
            _ => Err(invalid(format!("{what} must be an array of strings"))),
        })
        .collect()
}

fn compile_app_ids(v: &Value) -> Result<HashMap<Box<str>, Box<str>>, PolicyError> {
    let Value::Object(map) = v else {
        return Err(invalid("app_ids must be an object {key: application_id}"));
    };
    check_count("app_ids entries", map.len(), MAX_APP_IDS)?;
    map.iter()
        .map(|(key, id)| match id {
            Value::String(id) => Ok((bounded("app_ids key", key)?, bounded("app_ids value", id)?)),
            _ => Err(invalid(format!("app_ids[{key:?}] must be a string"))),
        })
        .collect()
}

fn compile_grants(v: &Value) -> Result<HashMap<Box<str>, Grant>, PolicyError> {
    let Value::Object(map) = v else {
        return Err(invalid(
            "grants must be an object {resource_identifier: {application, roles}}",
        ));
    };
    check_count("grants entries", map.len(), MAX_GRANTS)?;
    let mut out = HashMap::with_capacity(map.len());
    for (identifier, grant) in map {
        let Value::Object(grant) = grant else {
            return Err(invalid(format!("grants[{identifier:?}] must be an object")));
        };
        let application = match grant.get("application") {
            Some(Value::String(app)) => bounded("grant application", app)?,
            _ => {
                return Err(invalid(format!(
                    "grants[{identifier:?}].application must be a string"
                )));
            }
        };
        let mut roles = HashMap::new();
        match grant.get("roles") {
            // A grant without roles still names the owner (enough for bootstrap).
            None => {}
            Some(Value::Object(map)) => {
                check_count("roles of a grant", map.len(), MAX_ROLES_PER_GRANT)?;
                for (role, scopes) in map {
                    roles.insert(
                        bounded("role name", role)?,
                        scope_set("grant role scopes", scopes)?,
                    );
                }
            }
            Some(_) => {
                return Err(invalid(format!(
                    "grants[{identifier:?}].roles must be an object {{role: [scope]}}"
                )));
            }
        }
        out.insert(
            bounded("grant resource identifier", identifier)?,
            Grant { application, roles },
        );
    }
    Ok(out)
}

fn compile_confinement(v: &Value) -> Result<Box<[Confinement]>, PolicyError> {
    let Value::Array(rules) = v else {
        return Err(invalid(
            "confinement must be an array of {label_prefix, scopes}",
        ));
    };
    check_count("confinement rules", rules.len(), MAX_CONFINEMENT_RULES)?;
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let prefix = rule.get("label_prefix").and_then(Value::as_str);
            let scopes = rule.get("scopes");
            match (prefix, scopes) {
                (Some(prefix), Some(scopes)) => Ok(Confinement {
                    label_prefix: bounded("confinement label_prefix", prefix)?,
                    scopes: scope_set("confinement scopes", scopes)?,
                }),
                _ => Err(invalid(format!(
                    "confinement[{i}] must be an object with a string label_prefix and scopes"
                ))),
            }
        })
        .collect()
}

/// Whether a `restrict` value restricts: anything but an empty object or array.
pub(crate) fn restricts(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

/// The risk index, or `None` when `risk` is malformed: not an array, or an entry that is not
/// an object with a string `scope` and a non-empty string `tier`.
fn compile_risk(v: &Value) -> Result<Option<RiskIndex>, PolicyError> {
    let Value::Array(entries) = v else {
        return Ok(None);
    };
    check_count("risk entries", entries.len(), MAX_RISK_ENTRIES)?;
    let mut tiers: HashMap<Box<str>, Vec<Box<str>>> = HashMap::new();
    for entry in entries {
        let scope = entry.get("scope").and_then(Value::as_str);
        let tier = entry.get("tier").and_then(Value::as_str);
        match (scope, tier) {
            (Some(scope), Some(tier)) if !tier.is_empty() => {
                tiers
                    .entry(bounded("risk scope", scope)?)
                    .or_default()
                    .push(bounded("risk tier", tier)?);
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(RiskIndex {
        tiers: tiers
            .into_iter()
            .map(|(scope, mut t)| {
                t.sort();
                t.dedup();
                (scope, t.into_boxed_slice())
            })
            .collect(),
    }))
}

/// Whether one approval declaration is well formed (reference `sts.md` §4.3): an object with
/// a non-empty string `tier`; `approver` absent or one of operator/subject/any; `privacy`
/// absent or one of identified/pseudonymous/anonymous; `ttl_seconds` absent or an integral
/// number > 0.
pub(crate) fn declaration_well_formed(decl: &Value) -> bool {
    let Value::Object(d) = decl else {
        return false;
    };
    let tier_ok = matches!(d.get("tier"), Some(Value::String(t)) if !t.is_empty());
    let approver_ok = match d.get("approver") {
        None => true,
        Some(Value::String(a)) => matches!(a.as_str(), "operator" | "subject" | "any"),
        Some(_) => false,
    };
    let privacy_ok = match d.get("privacy") {
        None => true,
        Some(Value::String(p)) => {
            matches!(p.as_str(), "identified" | "pseudonymous" | "anonymous")
        }
        Some(_) => false,
    };
    let ttl_ok = match d.get("ttl_seconds") {
        None => true,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u > 0,
            (None, Some(_), _) => false,
            (None, None, Some(f)) => f > 0.0 && f.fract() == 0.0,
            _ => false,
        },
        Some(_) => false,
    };
    tier_ok && approver_ok && privacy_ok && ttl_ok
}

fn compile_approvals(v: &Value) -> Result<Option<ApprovalIndex>, PolicyError> {
    let Value::Array(decls) = v else {
        return Ok(None);
    };
    check_count("approval_tiers entries", decls.len(), MAX_APPROVAL_TIERS)?;
    // tier → (canonical JSON, declaration) pairs, sorted and deduplicated below.
    type Canonical = (String, Map<String, Value>);
    let mut by_tier: HashMap<Box<str>, Vec<Canonical>> = HashMap::new();
    for decl in decls {
        if !declaration_well_formed(decl) {
            return Ok(None);
        }
        if let Value::Object(d) = decl {
            if let Some(Value::String(tier)) = d.get("tier") {
                // serde_json's Map is sorted by key, so this string is canonical.
                let canonical = serde_json::to_string(d).unwrap_or_default();
                if canonical.len() > limits::MAX_STRING_BYTES {
                    return Err(PolicyError::LimitExceeded {
                        what: "approval declaration",
                        limit: limits::MAX_STRING_BYTES,
                    });
                }
                by_tier
                    .entry(bounded("approval tier", tier)?)
                    .or_default()
                    .push((canonical, d.clone()));
            }
        }
    }
    Ok(Some(ApprovalIndex {
        by_tier: by_tier
            .into_iter()
            .map(|(tier, mut decls)| {
                decls.sort_by(|a, b| a.0.cmp(&b.0));
                decls.dedup_by(|a, b| a.0 == b.0);
                (tier, decls.into_iter().map(|(_, d)| d).collect())
            })
            .collect(),
    }))
}
