//! `caracal policy eval` and `caracal policy validate` as a policy author runs them: the built
//! binary, files on disk, exit codes and output.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const APPS: &str = r#"# caracal:data-document
package caracal.authz

app_ids := {"files": "app-1"}
"#;

const GRANTS: &str = r#"{"grants": {"resource://api": {"application": "files", "roles": {"files.read": ["read"]}}}}"#;

/// The reference's interop input with the subject claims removed: a delegated mint of `read`
/// on `resource://api` by app-1 under an edge carrying `read`.
fn mint_input() -> String {
    let fixture =
        include_str!("../../caracal-core/tests/fixtures/interop/policy-input.sts.valid.json");
    let mut v: serde_json::Value = serde_json::from_str(fixture).unwrap();
    v["context"]
        .as_object_mut()
        .unwrap()
        .remove("subject_claims");
    v.to_string()
}

fn caracal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caracal"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn eval_prints_the_result_json() {
    let dir = tempfile::tempdir().unwrap();
    let apps = write(dir.path(), "apps.rego", APPS);
    let grants = write(dir.path(), "grants.json", GRANTS);
    let input = write(dir.path(), "input.json", &mint_input());

    let out = caracal(&[
        "policy",
        "eval",
        "--data",
        s(&apps),
        "--data",
        s(&grants),
        "--input",
        s(&input),
        "--explain",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        concat!(
            r#"{"decision":"allow","evaluation_status":"complete","#,
            r#""determining_policies":[{"policy":"caracal-files-mint"}],"diagnostics":[]}"#,
            "\n"
        )
    );
    assert!(
        text(&out.stderr).starts_with("decided by caracal-files-mint: delegated mint"),
        "{}",
        text(&out.stderr)
    );

    // Without the grants the same input is denied; a deny still exits 0.
    let out = caracal(&["policy", "eval", "--data", s(&apps), "--input", s(&input)]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        concat!(
            r#"{"decision":"deny","evaluation_status":"complete","determining_policies":[],"#,
            r#""diagnostics":[{"reason":"resource_not_granted"}]}"#,
            "\n"
        )
    );
}

#[test]
fn eval_refuses_bad_bundles_and_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let apps = write(dir.path(), "apps.rego", APPS);
    let twice = write(dir.path(), "twice.json", r#"{"app_ids": {}}"#);
    let input = write(dir.path(), "input.json", &mint_input());

    // A rule defined by two documents.
    let out = caracal(&[
        "policy",
        "eval",
        "--data",
        s(&apps),
        "--data",
        s(&twice),
        "--input",
        s(&input),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: invalid_policy_bundle: data rule `app_ids`"),
        "{}",
        text(&out.stderr)
    );

    // Another schema version is an evaluation error, not a deny.
    let odd = write(
        dir.path(),
        "odd.json",
        &mint_input().replace("2026-05-20", "2026-05-21"),
    );
    let out = caracal(&["policy", "eval", "--data", s(&apps), "--input", s(&odd)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).is_empty());
    assert!(
        text(&out.stderr).contains("policy_eval_failed"),
        "{}",
        text(&out.stderr)
    );

    // No --data at all is a usage error.
    let out = caracal(&["policy", "eval", "--input", s(&input)]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_accepts_data_documents_and_names_violations() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.rego", APPS);
    let out = caracal(&["policy", "validate", s(&good)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "valid: package caracal.authz defines app_ids\n"
    );

    let json = write(dir.path(), "grants.json", GRANTS);
    let out = caracal(&["policy", "validate", s(&json)]);
    assert_eq!(
        text(&out.stdout),
        "valid: package caracal.authz defines grants\n"
    );

    for (content, description) in [
        (
            "# caracal:data-document\npackage caracal.authz\nresult := {}\n",
            "data_document_must_not_define_result",
        ),
        (
            "# caracal:data-document\npackage caracal.authz\nallow := true\n",
            "data_document_rule_not_allowed:allow",
        ),
        (
            "# caracal:data-document\npackage caracal.authz\nrestrict := [time.now_ns()]\n",
            "forbidden_builtin:time.now_ns",
        ),
        (
            "package caracal.authz\napp_ids := {}\n",
            "must_be_data_document",
        ),
    ] {
        let bad = write(dir.path(), "bad.rego", content);
        let out = caracal(&["policy", "validate", s(&bad)]);
        assert_eq!(out.status.code(), Some(1), "{content}");
        assert_eq!(
            text(&out.stderr),
            format!("error: invalid_rego: {description}\n"),
            "{content}"
        );
    }

    let out = caracal(&["policy", "validate", s(&dir.path().join("missing.rego"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: cannot read"));
}
