//! Rego data documents: validation with the reference's `invalid_rego` descriptions, and
//! evaluation with `regorus` to plain data.
//!
//! A data document is Rego that only *defines data* (reference `control-plane.md` §1.13,
//! `http-bodies.md` §5):
//!
//! ```text
//! # caracal:data-document
//! package caracal.authz
//!
//! app_ids := {"anton": "<app id>"}
//! grants := {"resource://pipernet": {"application": "anton", "roles": {"reader": ["pipernet:read"]}}}
//! ```
//!
//! [`validate`] applies the checks in the reference's order, first failure wins:
//! `empty_policy`, `content_too_large` (more than 262,144 UTF-16 code units),
//! `unterminated_string`, `unbalanced_delimiters`, `missing_package_declaration`,
//! `invalid_package_name`, `forbidden_builtin:<name>`, `must_use_package_caracal_authz`,
//! `must_be_data_document` (no full-line `# caracal:data-document` comment), then, on the
//! parsed module, `data_document_must_not_define_result`, `data_document_must_define_data`
//! and `data_document_rule_not_allowed:<rule>` (the first offending rule in source order). A
//! module regorus cannot parse is `rego_parse_error` (the reference defers that to the bundle
//! compile; refusing it when the policy is written is earlier and clearer).
//!
//! Forbidden builtins are those the reference removes from OPA's capabilities (`http.send`,
//! `net.*`, `opa.runtime`, `rand.intn`, `time.now_ns`) plus, as a hardening over the
//! reference, `numbers.range` and `numbers.range_step`, which can allocate without bound
//! before any time limit is checked. regorus is also built without its `http`, `net`, `time`
//! and `opa-runtime` builtins, so they could not run even if the scan missed one.
//!
//! [`evaluate_documents`] runs every Rego document of a bundle in one interpreter (so one
//! document may refer to another's rules, as in the reference bundle), with no input, each
//! rule under [`limits::REGO_EVAL_MILLIS`], and reads back only the six
//! data rules. A panic inside the interpreter is caught and reported as an error.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use regorus::unstable::{Module, Parser, Rule, RuleHead};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, PolicyLengthConfig};

use super::data::{DataDocument, DataKey, DocumentSource};
use super::{PolicyError, limits};

/// Why a document is not a valid data document. [`RegoViolation::description`] is the
/// reference's `error_description` of the 422 `invalid_rego` answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegoViolation {
    /// The document is blank.
    #[error("empty_policy")]
    EmptyPolicy,
    /// More than 262,144 UTF-16 code units.
    #[error("content_too_large")]
    ContentTooLarge,
    /// A string literal is not closed.
    #[error("unterminated_string")]
    UnterminatedString,
    /// Brackets, braces or parentheses do not match.
    #[error("unbalanced_delimiters")]
    UnbalancedDelimiters,
    /// No `package` declaration.
    #[error("missing_package_declaration")]
    MissingPackageDeclaration,
    /// The package path is not a dotted identifier path.
    #[error("invalid_package_name")]
    InvalidPackageName,
    /// A forbidden builtin is used.
    #[error("forbidden_builtin:{0}")]
    ForbiddenBuiltin(String),
    /// The package is not `caracal.authz`.
    #[error("must_use_package_caracal_authz")]
    MustUsePackageCaracalAuthz,
    /// The `# caracal:data-document` directive is missing (or a JSON document is not an
    /// object).
    #[error("must_be_data_document")]
    MustBeDataDocument,
    /// The document defines `result`.
    #[error("data_document_must_not_define_result")]
    MustNotDefineResult,
    /// The document defines no rule.
    #[error("data_document_must_define_data")]
    MustDefineData,
    /// The document defines a rule other than the six data rules (or a function).
    #[error("data_document_rule_not_allowed:{0}")]
    RuleNotAllowed(String),
    /// regorus could not parse the module (the detail is the parser's message).
    #[error("rego_parse_error: {0}")]
    Parse(String),
    /// A JSON data document is not valid JSON.
    #[error("invalid_json: {0}")]
    InvalidJson(String),
}

impl RegoViolation {
    /// The `error_description` code, e.g. `data_document_rule_not_allowed:allow`.
    pub fn description(&self) -> String {
        match self {
            RegoViolation::Parse(_) => "rego_parse_error".to_owned(),
            RegoViolation::InvalidJson(_) => "invalid_json".to_owned(),
            other => other.to_string(),
        }
    }
}

/// What a valid data document declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedDocument {
    /// The package (always `caracal.authz`).
    pub package: String,
    /// The data rules it defines, distinct, in key order.
    pub rules: Vec<DataKey>,
}

/// Builtins a data document may not call: the reference's list (exact names) and namespaces
/// (`net.` as a whole), plus the hardening entries (see the module docs).
const FORBIDDEN_EXACT: &[&str] = &[
    "http.send",
    "opa.runtime",
    "rand.intn",
    "time.now_ns",
    "numbers.range",
    "numbers.range_step",
];

/// The package every data document uses.
pub const DATA_PACKAGE: &str = "caracal.authz";

/// The directive that marks a data document.
pub const DATA_DOCUMENT_DIRECTIVE: &str = "caracal:data-document";

/// `empty_policy` and `content_too_large`, shared with JSON documents.
pub(crate) fn check_size(content: &str) -> Result<(), RegoViolation> {
    if content.trim().is_empty() {
        return Err(RegoViolation::EmptyPolicy);
    }
    // UTF-16 length never exceeds the UTF-8 length, so only long documents are counted.
    if content.len() > limits::MAX_CONTENT_CHARS
        && content.encode_utf16().count() > limits::MAX_CONTENT_CHARS
    {
        return Err(RegoViolation::ContentTooLarge);
    }
    Ok(())
}

/// The result of the lexical scan: the code with strings and comments blanked, and whether
/// the data-document directive was seen on a line of its own.
struct Scanned {
    code: String,
    has_directive: bool,
}

/// Scan strings, comments and delimiters. Strings become `"` + blanks + `"` and comments
/// blanks (newlines kept), so later checks see only code. An unterminated string is reported
/// before unbalanced delimiters, whatever their positions (the reference's order).
fn scan(content: &str) -> Result<Scanned, RegoViolation> {
    let mut code = String::with_capacity(content.len());
    let mut stack: Vec<char> = Vec::new();
    let mut unbalanced = false;
    let mut has_directive = false;
    let mut line_has_code = false;
    let mut chars = content.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                let mut comment = String::new();
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                    comment.push(n);
                }
                if !line_has_code && comment.trim() == DATA_DOCUMENT_DIRECTIVE {
                    has_directive = true;
                }
                code.push('\n');
                line_has_code = false;
            }
            '"' => {
                code.push('"');
                let mut closed = false;
                while let Some(n) = chars.next() {
                    match n {
                        // An escape consumes the next character (even a quote).
                        '\\' if chars.next().is_none() => break,
                        '\\' => {}
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\n' => break,
                        _ => {}
                    }
                    code.push(' ');
                }
                if !closed {
                    return Err(RegoViolation::UnterminatedString);
                }
                code.push('"');
                line_has_code = true;
            }
            '`' => {
                code.push('"');
                let mut closed = false;
                for n in chars.by_ref() {
                    if n == '`' {
                        closed = true;
                        break;
                    }
                    code.push(if n == '\n' { '\n' } else { ' ' });
                }
                if !closed {
                    return Err(RegoViolation::UnterminatedString);
                }
                code.push('"');
                line_has_code = true;
            }
            '(' | '[' | '{' => {
                stack.push(c);
                code.push(c);
                line_has_code = true;
            }
            ')' | ']' | '}' => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(open) {
                    unbalanced = true;
                }
                code.push(c);
                line_has_code = true;
            }
            '\n' => {
                code.push('\n');
                line_has_code = false;
            }
            c => {
                if !c.is_whitespace() {
                    line_has_code = true;
                }
                code.push(c);
            }
        }
    }
    if unbalanced || !stack.is_empty() {
        return Err(RegoViolation::UnbalancedDelimiters);
    }
    Ok(Scanned {
        code,
        has_directive,
    })
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `s` is a dotted path of identifiers (`a.b_c.d1`).
fn is_dotted_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(is_ident_start) && chars.all(is_ident_char)
        })
}

/// The package path declared by the code, if any: the rest of the first line whose first word
/// is `package`.
fn package_of(code: &str) -> Option<&str> {
    code.lines().find_map(|line| {
        let line = line.trim_start();
        let rest = line.strip_prefix("package")?;
        if rest.is_empty() || rest.starts_with(char::is_whitespace) {
            Some(rest.trim())
        } else {
            None
        }
    })
}

/// The first forbidden builtin referenced by the code: dotted identifier chains that start a
/// reference (not preceded by `.` or an identifier character) and name a forbidden builtin
/// or anything under `net.`.
fn forbidden_builtin(code: &str) -> Option<String> {
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = char::from(bytes[i]);
        let starts_chain = is_ident_start(c)
            && (i == 0
                || !matches!(char::from(bytes[i - 1]), '.' | 'a'..='z' | 'A'..='Z' | '0'..='9' | '_'));
        if !starts_chain {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (is_ident_char(char::from(bytes[i])) || bytes[i] == b'.') {
            i += 1;
        }
        // INVARIANT: the chain is ASCII, so slicing at these byte offsets is on char
        // boundaries.
        let chain = code.get(start..i).unwrap_or("").trim_end_matches('.');
        if let Some(hit) = FORBIDDEN_EXACT.iter().find(|name| {
            chain == **name
                || chain
                    .strip_prefix(**name)
                    .is_some_and(|r| r.starts_with('.'))
        }) {
            return Some((*hit).to_owned());
        }
        if let Some(rest) = chain.strip_prefix("net.") {
            let name = rest.split('.').next().unwrap_or("");
            return Some(format!("net.{name}"));
        }
    }
    None
}

/// The lexical checks, in the reference's order, up to `must_be_data_document`.
fn check_lexical(content: &str) -> Result<(), RegoViolation> {
    check_size(content)?;
    let scanned = scan(content)?;
    let package = package_of(&scanned.code).ok_or(RegoViolation::MissingPackageDeclaration)?;
    if !is_dotted_path(package) {
        return Err(RegoViolation::InvalidPackageName);
    }
    if let Some(name) = forbidden_builtin(&scanned.code) {
        return Err(RegoViolation::ForbiddenBuiltin(name));
    }
    if package != DATA_PACKAGE {
        return Err(RegoViolation::MustUsePackageCaracalAuthz);
    }
    if !scanned.has_directive {
        return Err(RegoViolation::MustBeDataDocument);
    }
    Ok(())
}

/// The rule name a rule head defines (the first component of its reference).
fn rule_name(rule: &Rule) -> Result<(String, bool), RegoViolation> {
    let (refr, is_function) = match rule {
        Rule::Spec { head, .. } => match head {
            RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } => (refr, false),
            RuleHead::Func { refr, .. } => (refr, true),
        },
        Rule::Default { refr, args, .. } => (refr, !args.is_empty()),
    };
    let components =
        Parser::get_path_ref_components(refr).map_err(|e| RegoViolation::Parse(e.to_string()))?;
    let name = components
        .first()
        .map(|span| span.text().to_owned())
        .ok_or_else(|| RegoViolation::Parse("rule without a name".to_owned()))?;
    Ok((name, is_function))
}

/// The rule checks on a parsed module: no `result`, at least one rule, only the six data
/// rules, and no functions.
fn check_rules(module: &Module) -> Result<Vec<DataKey>, RegoViolation> {
    let mut names = Vec::with_capacity(module.policy.len());
    for rule in &module.policy {
        names.push(rule_name(rule)?);
    }
    if names.iter().any(|(n, _)| n == "result") {
        return Err(RegoViolation::MustNotDefineResult);
    }
    if names.is_empty() {
        return Err(RegoViolation::MustDefineData);
    }
    let mut keys = Vec::new();
    for (name, is_function) in names {
        match DataKey::parse(&name) {
            Some(key) if !is_function => keys.push(key),
            _ => return Err(RegoViolation::RuleNotAllowed(name)),
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// An engine configured for data documents: Rego v1, line and size bounds that admit any
/// document within [`limits::MAX_CONTENT_CHARS`], and the evaluation time limit.
fn new_engine() -> Engine {
    let mut engine = Engine::new();
    // A UTF-16 code unit is at most 3 UTF-8 bytes; one line may hold the whole document.
    let max = limits::MAX_CONTENT_CHARS.saturating_mul(3);
    if let (Some(max_col), Some(max_file_bytes), Some(max_lines)) = (
        NonZeroU32::new(u32::try_from(max).unwrap_or(u32::MAX)),
        NonZeroUsize::new(max),
        NonZeroUsize::new(limits::MAX_CONTENT_CHARS),
    ) {
        engine.set_policy_length_config(PolicyLengthConfig {
            max_col,
            max_file_bytes,
            max_lines,
        });
    }
    if let Some(check_interval) = NonZeroU32::new(32) {
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: Duration::from_millis(limits::REGO_EVAL_MILLIS),
            check_interval,
        });
    }
    engine
}

/// Run `f` on the interpreter, turning a panic into an error (regorus is third-party code
/// running on adopter input; a panic there must deny, not crash the service).
fn guarded<T>(f: impl FnOnce() -> Result<T, PolicyError>) -> Result<T, PolicyError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(PolicyError::RegoEval(
            "the Rego interpreter panicked".into(),
        ))
    })
}

/// Add `content` to `engine` after the lexical checks, returning the rules it declares.
fn add_document(
    engine: &mut Engine,
    label: &str,
    content: &str,
) -> Result<Vec<DataKey>, PolicyError> {
    check_lexical(content)?;
    engine
        .add_policy(label.to_owned(), content.to_owned())
        .map_err(|e| RegoViolation::Parse(e.to_string()))?;
    let module = engine
        .get_modules()
        .last()
        .cloned()
        .ok_or_else(|| PolicyError::RegoEval("module not loaded".into()))?;
    Ok(check_rules(&module)?)
}

/// Validate one Rego data document (see the module docs for the checks and their order).
pub fn validate(content: &str) -> Result<ValidatedDocument, PolicyError> {
    guarded(|| {
        let mut engine = new_engine();
        let rules = add_document(&mut engine, "policy.rego", content)?;
        Ok(ValidatedDocument {
            package: DATA_PACKAGE.to_owned(),
            rules,
        })
    })
}

/// Validate and evaluate the Rego documents of one bundle, returning each document's data.
/// Two documents declaring the same rule are refused ([`PolicyError::DuplicateDataKey`]).
pub fn evaluate_documents(
    sources: &[DocumentSource<'_>],
) -> Result<Vec<DataDocument>, PolicyError> {
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    guarded(|| {
        let mut engine = new_engine();
        let mut declared: Vec<(String, Vec<DataKey>)> = Vec::with_capacity(sources.len());
        for (i, source) in sources.iter().enumerate() {
            // Distinct module paths even when labels repeat.
            let path = format!("{i}:{}", source.label);
            let keys = add_document(&mut engine, &path, source.content)
                .map_err(|e| label_error(source.label, e))?;
            for key in &keys {
                if let Some((first, _)) = declared.iter().find(|(_, k)| k.contains(key)) {
                    return Err(PolicyError::DuplicateDataKey {
                        key: *key,
                        first: first.clone(),
                        second: source.label.to_owned(),
                    });
                }
            }
            declared.push((source.label.to_owned(), keys));
        }
        let mut docs = Vec::with_capacity(declared.len());
        for (label, keys) in declared {
            let mut doc = DataDocument::new(label);
            for key in keys {
                if let Some(value) = eval_data_rule(&mut engine, key)? {
                    doc.insert(key, value);
                }
            }
            docs.push(doc);
        }
        Ok(docs)
    })
}

/// Keep the violation itself (its description is the wire code) but name the document in
/// other errors.
fn label_error(label: &str, e: PolicyError) -> PolicyError {
    match e {
        PolicyError::RegoEval(m) => PolicyError::RegoEval(format!("{label}: {m}")),
        other => other,
    }
}

/// The value of `data.caracal.authz.<key>`, or `None` when it is undefined.
fn eval_data_rule(
    engine: &mut Engine,
    key: DataKey,
) -> Result<Option<serde_json::Value>, PolicyError> {
    let results = engine
        .eval_query(format!("data.{DATA_PACKAGE}.{}", key.as_str()), false)
        .map_err(|e| PolicyError::RegoEval(format!("{key}: {e}")))?;
    let Some(value) = results
        .result
        .first()
        .and_then(|r| r.expressions.first())
        .map(|e| &e.value)
    else {
        return Ok(None);
    };
    if *value == regorus::Value::Undefined {
        return Ok(None);
    }
    let json = value
        .to_json_str()
        .map_err(|e| PolicyError::RegoEval(format!("{key}: {e}")))?;
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| PolicyError::RegoEval(format!("{key}: {e}")))
}

impl fmt::Display for ValidatedDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "package {} defines", self.package)?;
        for (i, k) in self.rules.iter().enumerate() {
            write!(f, "{}{k}", if i == 0 { " " } else { ", " })?;
        }
        Ok(())
    }
}
