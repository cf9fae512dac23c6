//! `caracal policy eval` and `caracal policy validate`: the policy engine of
//! `caracal_core::policy` for policy authors and black-box tests, with no store and no server.
//!
//! - `caracal policy eval --data <file> [--data <file>…] --input <file|->` loads the data
//!   documents (Rego data documents or JSON objects, merged as one bundle; a rule defined
//!   twice is refused), decides the policy input, and prints the contract result JSON on one
//!   line of stdout. `--explain` adds, on stderr, which rule or reason decided and why. Allow
//!   and deny both exit 0; an input the engine refuses (another `schema_version`, over a
//!   limit) or a bundle that does not load exits 1.
//! - `caracal policy validate <file>` checks one document; it prints
//!   `valid: package caracal.authz defines <rules>` and exits 0, or exits 1 with
//!   `error: invalid_rego: <description>` (the reference's `error_description`).

use std::io::Read;
use std::path::{Path, PathBuf};

use caracal_core::model::policy::PolicyInput;
use caracal_core::policy::contract::Decided;
use caracal_core::policy::data::DocumentSource;
use caracal_core::policy::lifecycle::validate_content;
use caracal_core::policy::{CompiledBundle, PolicyError, evaluate};
use clap::{Args, Subcommand};

use super::CmdError;

/// Arguments of `caracal policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    action: PolicyAction,
}

#[derive(Debug, Subcommand)]
enum PolicyAction {
    /// Decide a policy input against data documents and print the result JSON.
    Eval(EvalArgs),
    /// Validate one data document (Rego or JSON); exits 1 with the invalid_rego description.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// A data document (Rego `# caracal:data-document` or a JSON object); repeat for a
    /// bundle of several documents
    #[arg(long = "data", value_name = "FILE", required = true)]
    data: Vec<PathBuf>,
    /// The policy input JSON (schema 2026-05-20), or `-` for stdin
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Also print, on stderr, the rule or reason that decided
    #[arg(long)]
    explain: bool,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// The document to validate
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// Run `caracal policy`.
pub fn run(args: &PolicyArgs) -> Result<(), CmdError> {
    match &args.action {
        PolicyAction::Eval(a) => eval(a),
        PolicyAction::Validate(a) => validate(a),
    }
}

fn read(path: &Path) -> Result<String, CmdError> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CmdError::Policy(format!("cannot read stdin: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .map_err(|e| CmdError::Policy(format!("cannot read {}: {e}", path.display())))
}

fn refused(e: &PolicyError) -> CmdError {
    CmdError::Policy(format!("{}: {}", e.code(), e.description()))
}

fn eval(args: &EvalArgs) -> Result<(), CmdError> {
    let texts = args
        .data
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p)?)))
        .collect::<Result<Vec<_>, CmdError>>()?;
    let sources: Vec<DocumentSource<'_>> = texts
        .iter()
        .map(|(label, content)| DocumentSource { label, content })
        .collect();
    let bundle = CompiledBundle::from_sources(&sources).map_err(|e| refused(&e))?;
    let input: PolicyInput = serde_json::from_str(&read(&args.input)?)
        .map_err(|e| CmdError::Policy(format!("invalid policy input: {e}")))?;
    let evaluation = evaluate(&input, &bundle).map_err(|e| refused(&e))?;
    let result = serde_json::to_string(&evaluation.to_result())
        .map_err(|e| CmdError::Policy(format!("cannot render the result: {e}")))?;
    println!("{result}");
    if args.explain {
        let by = match evaluation.decided() {
            Decided::Allow(_) => evaluation
                .determining_policy()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            Decided::Deny(reason) => reason.as_str().to_owned(),
        };
        eprintln!("decided by {by}: {}", evaluation.decided().explanation());
    }
    Ok(())
}

fn validate(args: &ValidateArgs) -> Result<(), CmdError> {
    let content = read(&args.file)?;
    let valid = validate_content(&content).map_err(|e| refused(&e))?;
    println!("valid: {valid}");
    Ok(())
}
