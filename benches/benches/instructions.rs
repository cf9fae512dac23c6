//! Instruction counts of the hot functions under callgrind (SPEC §6: wall-clock figures are
//! noisy on a shared 2-core machine; instruction counts show regressions anyway).
//!
//! `cargo bench -p caracal-benches --bench instructions` re-runs this binary once per case
//! under `valgrind --tool=callgrind --toggle-collect=<case function>`, so only the calls
//! inside the case function are counted (setup excluded), and prints instructions per call.
//! Without `valgrind` on the PATH it says so and exits 0. Under `cargo test --all-targets`
//! (no `--bench` argument) every case runs once natively, so the cases cannot rot.
//!
//! Cases: ES256 sign and verify (aws-lc-rs, the floor), mandate mint and verify, the policy
//! decision (delegated mint allow, 100 applications / 1,000 grants), stream `_sig` sign and
//! verify, the audit content hash, chain HMAC and full row append, and the Gateway's local
//! pre-flight. ECDSA signing draws a random nonce, so its count varies by a fraction of a
//! percent between runs; the others are deterministic for a given build.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::process::Command;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use caracal_core::audit::{
    AuditEvent, AuditHmacKey, ChainHead, LedgerRow, chain_hmac, content_hash,
};
use caracal_core::mandate::{
    MandateClaims, MandateUse, SigningKey, VerificationKeys, VerifyPolicy, mint, verify,
};
use caracal_core::model::policy::PolicyInput;
use caracal_core::policy::data::DocumentSource;
use caracal_core::policy::{CompiledBundle, evaluate};
use caracal_core::streams::signature::{StreamKey, sign as stream_sign, verify as stream_verify};
use caracal_gateway::preflight::{RequestHead, check};
use chrono::DateTime;
use serde_json::{Map, Value, json};

const CLAIMS: &str =
    include_str!("../../caracal-core/tests/fixtures/interop/jwt-claims.resource.valid.json");
const EVENT: &str =
    include_str!("../../caracal-core/tests/fixtures/interop/audit-event.allow.valid.json");
const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const PRINCIPAL: &str = "0190f0a2-0000-7000-8000-000000000042";
/// Calls per case under callgrind; the count printed is the total divided by this.
const CALLS: u32 = 200;
const CASE_ENV: &str = "CARACAL_CALLGRIND_CASE";

/// Every input, built once before any counted call.
struct Inputs {
    rng: SystemRandom,
    pair: EcdsaKeyPair,
    point: Vec<u8>,
    message: Vec<u8>,
    signature: Vec<u8>,
    claims: MandateClaims,
    key: SigningKey,
    keys: VerificationKeys,
    token: String,
    auth: String,
    policy: VerifyPolicy,
    now: DateTime<chrono::Utc>,
    bundle: CompiledBundle,
    input: PolicyInput,
    stream_key: StreamKey,
    fields: Vec<(String, Option<String>)>,
    signed: Vec<(String, Option<String>)>,
    audit_key: AuditHmacKey,
    event: AuditEvent,
    stored: AuditEvent,
    content: String,
    head: ChainHead,
}

fn zone_data() -> Value {
    let app_ids: Map<String, Value> = (0..100)
        .map(|a| {
            (
                format!("app{a:03}"),
                json!(format!("0190f0a2-0000-7000-8000-{a:012}")),
            )
        })
        .collect();
    let grants: Map<String, Value> = (0..1000)
        .map(|g| {
            (
                format!("resource://svc-{g:04}"),
                json!({"application": format!("app{:03}", g % 100),
                       "roles": {"writer": ["svc:read", "svc:write"]}}),
            )
        })
        .collect();
    json!({"app_ids": app_ids, "grants": grants})
}

fn policy_input() -> PolicyInput {
    serde_json::from_value(json!({
        "schema_version": "2026-05-20",
        "principal": {"type": "Application", "id": PRINCIPAL, "zone_id": "z",
                      "agent_session_id": "s1", "lifecycle": "task", "labels": ["writer"]},
        "resource": {"type": "Resource", "id": "r", "identifier": "resource://svc-0142",
                     "scopes": ["svc:read", "svc:write"]},
        "action": {"id": "TokenExchange"},
        "session": {"id": "ar-1"},
        "delegation_edge": {"id": "e1", "source_session_id": "s0", "target_session_id": "s1",
                            "issuer_application_id": "a", "receiver_application_id": "b",
                            "resource_id": "r", "scopes": ["svc:read", "svc:write"],
                            "edge_version": 1, "path": ["e1"], "graph_epoch": 3,
                            "constraints_json": {}},
        "context": {"actor_claims": {"caracal_client_id": PRINCIPAL}, "trace_id": "t",
                    "session_id": "ar-1", "agent_session_id": "s1", "delegation_edge_id": "e1",
                    "challenge_resolved": false, "requested_scopes": ["svc:read", "svc:write"]}
    }))
    .unwrap()
}

fn inputs() -> Inputs {
    let claims: MandateClaims = serde_json::from_str(CLAIMS).unwrap();
    let now = DateTime::from_timestamp(claims.iat, 0).unwrap();
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let key = SigningKey::from_private_key("018f7d6a-8f4a-7d9f-9a54-5e4fd7df0001", pkcs8.as_ref())
        .unwrap();
    let keys = VerificationKeys::new([key.verification_key().unwrap()]);
    let token = mint(&claims, &key).unwrap();
    let message = token.rsplit_once('.').unwrap().0.as_bytes().to_vec();
    let signature = pair.sign(&rng, &message).unwrap().as_ref().to_vec();
    let point = pair.public_key().as_ref().to_vec();
    let policy = VerifyPolicy::new(
        claims.zone_id.clone(),
        claims.iss.clone(),
        MandateUse::Resource,
        "resource://api",
    );
    let text = zone_data().to_string();
    let bundle = CompiledBundle::from_sources(&[DocumentSource {
        label: "zone.json",
        content: &text,
    }])
    .unwrap();
    let stream_key = StreamKey::from_hex(KEY_HEX).unwrap();
    let fields: Vec<(String, Option<String>)> = [
        ("zone_id", "zone-1"),
        ("reason", "delegation_revoked"),
        ("session_id", "018f7d6a-8f4a-7d9f-9a54-5e4fd7df0001"),
        ("delegation_edge_id", "018f7d6a-8f4a-7d9f-9a54-5e4fd7df0003"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
    .collect();
    let sig = stream_sign(
        &stream_key,
        "caracal.sessions.revoke",
        fields.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
    );
    let mut signed = fields.clone();
    signed.push(("_sig".to_owned(), Some(sig)));
    let event = AuditEvent::parse(EVENT.as_bytes()).unwrap();
    let stored = event.clone().into_stored().unwrap();
    let content = content_hash(&stored).unwrap();
    Inputs {
        auth: format!("Bearer {token}"),
        rng,
        pair,
        point,
        message,
        signature,
        claims,
        key,
        keys,
        token,
        policy,
        now,
        bundle,
        input: policy_input(),
        stream_key,
        fields,
        signed,
        audit_key: AuditHmacKey::from_hex(KEY_HEX).unwrap(),
        event,
        stored,
        head: ChainHead {
            content_sha256: content.clone(),
            chain_seq: 41,
        },
        content,
    }
}

// One `#[inline(never)]` function per case: callgrind's `--toggle-collect` counts exactly
// the instructions executed inside it.

#[inline(never)]
fn case_es256_sign(i: &Inputs, n: u32) {
    for _ in 0..n {
        black_box(i.pair.sign(&i.rng, black_box(&i.message)).unwrap());
    }
}

#[inline(never)]
fn case_es256_verify(i: &Inputs, n: u32) {
    for _ in 0..n {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, black_box(&i.point))
            .verify(black_box(&i.message), &i.signature)
            .unwrap();
    }
}

#[inline(never)]
fn case_mandate_mint(i: &Inputs, n: u32) {
    for _ in 0..n {
        black_box(mint(black_box(&i.claims), &i.key).unwrap());
    }
}

#[inline(never)]
fn case_mandate_verify(i: &Inputs, n: u32) {
    for _ in 0..n {
        black_box(verify(black_box(&i.token), &i.keys, &i.policy, i.now).unwrap());
    }
}

#[inline(never)]
fn case_policy_decision(i: &Inputs, n: u32) {
    for _ in 0..n {
        let allow = evaluate(black_box(&i.input), &i.bundle).map(|e| e.is_allow());
        assert!(matches!(allow, Ok(true)));
    }
}

#[inline(never)]
fn case_stream_sign(i: &Inputs, n: u32) {
    for _ in 0..n {
        black_box(stream_sign(
            &i.stream_key,
            black_box("caracal.sessions.revoke"),
            i.fields.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
        ));
    }
}

#[inline(never)]
fn case_stream_verify(i: &Inputs, n: u32) {
    for _ in 0..n {
        stream_verify(
            &i.stream_key,
            black_box("caracal.sessions.revoke"),
            i.signed.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
        )
        .unwrap();
    }
}

#[inline(never)]
fn case_audit_content_hash(i: &Inputs, n: u32) {
    for _ in 0..n {
        black_box(content_hash(black_box(&i.stored)).unwrap());
    }
}

#[inline(never)]
fn case_audit_chain_hmac(i: &Inputs, n: u32) {
    for _ in 0..n {
        black_box(chain_hmac(
            Some(&i.audit_key),
            black_box(&i.content),
            &i.content,
        ));
    }
}

#[inline(never)]
fn case_audit_append_row(i: &Inputs, n: u32) {
    for _ in 0..n {
        black_box(
            LedgerRow::append(
                i.event.clone(),
                Some(&i.head),
                Some(&i.audit_key),
                None,
                i.now,
            )
            .unwrap(),
        );
    }
}

#[inline(never)]
fn case_gateway_preflight(i: &Inputs, n: u32) {
    let head = RequestHead {
        authorization: Some(&i.auth),
        has_client_id: false,
        resource: Some("resource://api"),
        path: "/v1/items/42",
    };
    for _ in 0..n {
        black_box(check(black_box(&head), i.claims.iat).unwrap());
    }
}

type Case = (&'static str, fn(&Inputs, u32));

const CASES: &[Case] = &[
    ("es256_sign", case_es256_sign),
    ("es256_verify", case_es256_verify),
    ("mandate_mint", case_mandate_mint),
    ("mandate_verify", case_mandate_verify),
    ("policy_decision", case_policy_decision),
    ("stream_sign", case_stream_sign),
    ("stream_verify", case_stream_verify),
    ("audit_content_hash", case_audit_content_hash),
    ("audit_chain_hmac", case_audit_chain_hmac),
    ("audit_append_row", case_audit_append_row),
    ("gateway_preflight", case_gateway_preflight),
];

/// The `totals:` (or `summary:`) line of a callgrind output file.
fn total_instructions(path: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .next_back()
}

fn valgrind_available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn main() {
    let inputs = inputs();
    // The child: run one case CALLS times under callgrind.
    if let Ok(name) = std::env::var(CASE_ENV) {
        let (_, case) = CASES.iter().find(|(n, _)| *n == name).unwrap();
        case(&inputs, CALLS);
        return;
    }
    // Every case once, natively: the sanity check `cargo test --all-targets` runs.
    for (_, case) in CASES {
        case(&inputs, 1);
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "instructions: {} cases checked (run with --bench to count)",
            CASES.len()
        );
        return;
    }
    if !valgrind_available() {
        println!("instructions: valgrind not found on PATH; skipping instruction counts");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile_dir();
    println!("instructions per call (callgrind, {CALLS} calls per case, setup excluded):");
    for (name, _) in CASES {
        let out = dir.join(format!("callgrind.{name}.out"));
        let status = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(format!("--toggle-collect=*case_{name}*"))
            .arg(&exe)
            .env(CASE_ENV, name)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        match total_instructions(&out) {
            Some(total) if status.success() => {
                println!("{name:<24} {:>12}", total / u64::from(CALLS));
            }
            _ => println!("{name:<24} (callgrind failed: {status})"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A private scratch directory for the callgrind output files.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("caracal-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
