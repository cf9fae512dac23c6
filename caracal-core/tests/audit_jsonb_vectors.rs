//! The native `jsonb` normaliser reproduces Postgres byte for byte (SPEC §5 item 7).
//!
//! `fixtures/audit/jsonb_vectors.json` holds Postgres' own answers to `$1::jsonb::text`,
//! captured by `fixtures/audit/gen_jsonb_vectors.py` from a live server. A second test runs fresh
//! random cases against a live Postgres through `psql`.

// Test helpers may unwrap: a failure here is a failed test, not a production panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use caracal_core::audit::jsonb;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
struct Nest {
    open: String,
    middle: String,
    close: String,
    depth: usize,
}

#[derive(Deserialize)]
struct Vector {
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    nest: Option<Nest>,
    #[serde(default)]
    expected: Option<String>,
    #[serde(default)]
    expected_len: Option<usize>,
    #[serde(default)]
    expected_sha256: Option<String>,
    #[serde(default)]
    error: bool,
    #[serde(default)]
    pg_error: Option<String>,
    #[serde(default, rename = "_meta")]
    meta: Option<serde_json::Value>,
}

impl Vector {
    fn input(&self) -> String {
        match (&self.input, &self.nest) {
            (Some(input), _) => input.clone(),
            (None, Some(n)) => format!(
                "{}{}{}",
                n.open.repeat(n.depth),
                n.middle,
                n.close.repeat(n.depth)
            ),
            (None, None) => panic!("vector without input"),
        }
    }
}

fn load() -> Vec<Vector> {
    let text = include_str!("fixtures/audit/jsonb_vectors.json");
    let all: Vec<Vector> = serde_json::from_str(text).unwrap();
    all.into_iter().filter(|v| v.meta.is_none()).collect()
}

#[test]
fn native_normaliser_reproduces_every_postgres_vector() {
    let vectors = load();
    assert!(vectors.len() >= 500, "only {} vectors", vectors.len());
    let mut failures = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        let input = v.input();
        let got = jsonb::normalize(&input);
        let ok = match (&got, v.error) {
            // Both refuse. The reasons can differ when a document has two faults: Postgres
            // lexes one token ahead of its checks, this parser checks as it goes.
            (Err(_), true) => true,
            (Ok(out), false) => match (&v.expected, v.expected_len, &v.expected_sha256) {
                (Some(expected), _, _) => out == expected,
                (None, Some(len), Some(sha)) => {
                    out.len() == len && hex::encode(Sha256::digest(out.as_bytes())) == *sha
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            let shown: String = input.chars().take(120).collect();
            failures.push(format!(
                "#{i} input {shown:?}: got {:?}, want {:?} {:?}",
                got.as_ref()
                    .map(|s| s.chars().take(120).collect::<String>()),
                v.expected,
                v.pg_error
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn vectors_cover_the_tricky_areas() {
    let vectors = load();
    let inputs: Vec<String> = vectors.iter().map(Vector::input).collect();
    let has = |needle: &str| inputs.iter().any(|i| i.contains(needle));
    for needle in [
        "e-",
        "E+",
        "-0",
        "\\ud83d\\ude00",
        "\\u0000",
        "\\u001f",
        "{}",
        "[]",
    ] {
        assert!(has(needle), "no vector contains {needle:?}");
    }
    assert!(vectors.iter().filter(|v| v.error).count() >= 50);
    assert!(vectors.iter().any(|v| v.expected_sha256.is_some()));
}

/// Fresh random documents against a live Postgres, through `psql` (no driver needed): the
/// proof of SPEC §5.7 that the native normaliser, and so the content hash, matches Postgres.
///
/// Uses the test support's Postgres (an ephemeral cluster, or `CARACAL_TEST_DATABASE_URL`);
/// without server binaries it says SKIPPED, and under `CI=true` that is a failure.
#[test]
fn live_postgres_agrees_on_random_documents() {
    let Some(pg) =
        caracal_test_support::postgres_or_skip("live_postgres_agrees_on_random_documents")
    else {
        return;
    };
    let url = pg.url();
    // CARACAL_JSONB_LIVE_CASES and CARACAL_JSONB_LIVE_SEED widen a run by hand.
    let env_number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut rng = Lcg(env_number("CARACAL_JSONB_LIVE_SEED", 0x5eed_cafe));
    let count = env_number("CARACAL_JSONB_LIVE_CASES", 300);
    let cases: Vec<String> = (0..count).map(|_| random_document(&mut rng, 0)).collect();
    let answers = psql_normalise(&url, &cases);
    let refused = answers.iter().filter(|a| a.is_none()).count();
    for (input, pg) in cases.iter().zip(answers) {
        let ours = jsonb::normalize(input).ok();
        assert_eq!(ours, pg, "input {input:?}");
    }
    eprintln!(
        "live Postgres agreed on {} documents ({refused} refused)",
        cases.len()
    );
    assert!(refused > 0 && refused < cases.len());
}

/// Ask Postgres for `x::jsonb::text` of every case; `None` where it refuses. Inputs and outputs
/// travel hex-encoded so no quoting or newline can confuse the exchange.
fn psql_normalise(url: &str, cases: &[String]) -> Vec<Option<String>> {
    use std::io::Write;
    let mut script = String::from(
        "create function pg_temp.norm(t text) returns text language plpgsql as $f$ \
         begin return t::jsonb::text; exception when others then return null; end $f$;\n",
    );
    for case in cases {
        script.push_str(&format!(
            "select coalesce(encode(convert_to(pg_temp.norm(convert_from(decode('{}', 'hex'), 'UTF8')), 'UTF8'), 'hex'), 'ERR');\n",
            hex::encode(case)
        ));
    }
    let mut child = std::process::Command::new("psql")
        .args([url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("psql must be installed beside the Postgres server");
    // Write from another thread: psql's output would otherwise fill its pipe and deadlock.
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "psql failed");
    let lines: Vec<Option<String>> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| match line {
            "ERR" => None,
            hexed => Some(String::from_utf8(hex::decode(hexed).unwrap()).unwrap()),
        })
        .collect();
    assert_eq!(lines.len(), cases.len());
    lines
}

/// A tiny deterministic generator, so the live test needs no extra dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next(items.len() as u64) as usize]
    }
}

fn random_document(rng: &mut Lcg, depth: u32) -> String {
    const WS: &[&str] = &["", "", " ", "\n", "\t "];
    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "1.50",
        "1e2",
        "1E-2",
        "-0.0e3",
        "12.5e-7",
        "100e-2",
        "3.0",
        "9e20",
        "01",
        "1.",
        "123456789.987654321e5",
    ];
    const STRINGS: &[&str] = &[
        "\"\"",
        "\"a\"",
        "\"\\u00e9\"",
        "\"\\ud83d\\ude00\"",
        "\"\\u001f\\t\"",
        "\"\\/\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"é中\"",
        "\"\\\"\\\\\"",
    ];
    const KEYS: &[&str] = &["a", "b", "A", "ab", "ba", "", "é", "abc", "\\u0061"];
    let ws = |rng: &mut Lcg| rng.pick(WS).to_owned();
    let kind = if depth >= 4 { 0 } else { rng.next(3) };
    match kind {
        0 => match rng.next(3) {
            0 => rng.pick(NUMBERS).to_owned(),
            1 => rng.pick(STRINGS).to_owned(),
            _ => rng.pick(&["true", "false", "null"]).to_owned(),
        },
        1 => {
            let items: Vec<String> = (0..rng.next(4))
                .map(|_| format!("{}{}{}", ws(rng), random_document(rng, depth + 1), ws(rng)))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let members: Vec<String> = (0..rng.next(5))
                .map(|_| {
                    let key = rng.pick(KEYS);
                    let value = random_document(rng, depth + 1);
                    format!("{}\"{key}\"{}:{}{value}", ws(rng), ws(rng), ws(rng))
                })
                .collect();
            format!("{{{}}}", members.join(","))
        }
    }
}
