//! `BENCHMARKS.md`, written from the harness's own figures (never by hand): the machine
//! (from `/proc/cpuinfo` and `/proc/meminfo`), the commit (`git rev-parse HEAD`), each
//! scenario's figures, the loss check, and a comparison with the reference's published
//! numbers and with our targets (SPEC §6).

use std::fmt::Write as _;

use super::load::Figures;
use super::scenario::Scenario;

/// The reference's published figures (4-vCPU VM, its packaged stack), from issue #10.
pub mod reference {
    /// Governed request p50, ms.
    pub const GOVERNED_P50_MS: f64 = 17.0;
    /// Governed request p95, ms.
    pub const GOVERNED_P95_MS: f64 = 23.0;
    /// Governed requests per second at peak.
    pub const GOVERNED_PEAK_RPS: f64 = 139.0;
    /// Gateway verify, ms.
    pub const GATEWAY_VERIFY_MS: f64 = 3.7;
    /// Session create + close cycles per second.
    pub const SESSION_CYCLES_PER_S: f64 = 192.0;
}

/// The outcome of one scenario run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Which scenario.
    pub scenario: Scenario,
    /// `embedded` or `target <url>`.
    pub mode: String,
    /// Concurrent workers.
    pub workers: usize,
    /// The figures.
    pub figures: Figures,
    /// The loss check of the scenario's zone.
    pub loss: Loss,
}

/// The loss check at the end of a run.
#[derive(Debug, Clone)]
pub enum Loss {
    /// Every expected event is in the ledger and the chain verifies.
    Lossless {
        /// Events the operations required (lower bound).
        expected: u64,
        /// Rows the chain verifier checked for the zone.
        rows: u64,
    },
    /// Events are missing or the chain has findings.
    Lost {
        /// Events the operations required (lower bound).
        expected: u64,
        /// Rows the chain verifier checked.
        rows: u64,
        /// Findings of the verifier.
        findings: u64,
    },
    /// The check could not run (why).
    NotChecked(String),
}

impl Loss {
    /// One line for the console and the report.
    pub fn line(&self) -> String {
        match self {
            Loss::Lossless { expected, rows } => format!(
                "lossless: the zone's chain verifies with {rows} rows, at least the {expected} events the operations required"
            ),
            Loss::Lost {
                expected,
                rows,
                findings,
            } => format!(
                "LOSS: {rows} rows in the zone's chain for at least {expected} required events; {findings} verifier findings"
            ),
            Loss::NotChecked(why) => format!("not checked: {why}"),
        }
    }
}

/// Machine facts from `/proc` (Linux); `unknown` elsewhere.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map_or("unknown".to_owned(), |v| v.trim().to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".to_owned(), |k| k.trim().to_owned());
    // The load average when the report is written: figures taken on a busy machine say so.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "{model}, {cpus} logical CPUs, {mem} memory, Linux {kernel}; 1-minute load average {load} at the end of the run"
    )
}

/// `git rev-parse HEAD`, or `unknown` outside a work tree.
pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or("unknown".to_owned(), |s| s.trim().to_owned())
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// One console line per run.
pub fn console_line(r: &Run) -> String {
    let f = &r.figures;
    format!(
        "{:<14} {:>10.0} req/s  p50 {:>8} ms  p95 {:>8} ms  p99 {:>8} ms  max {:>8} ms  {} requests, {} errors{}",
        r.scenario.name(),
        f.per_second,
        ms(f.p50_us),
        ms(f.p95_us),
        ms(f.p99_us),
        ms(f.max_us),
        f.requests,
        f.errors,
        if f.error_samples.is_empty() {
            String::new()
        } else {
            format!(" (first: {})", f.error_samples.join(" | "))
        }
    )
}

/// The figures of `s` when they can stand in a comparison: measured, and without errors (the
/// latency of refusals says nothing about the latency of the work).
fn find(runs: &[Run], s: Scenario) -> Option<&Figures> {
    runs.iter()
        .find(|r| r.scenario == s)
        .map(|r| &r.figures)
        .filter(|f| f.requests > 0 && f.errors == 0)
}

/// The whole `BENCHMARKS.md`.
pub fn markdown(runs: &[Run], command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `caracal bench` from its own measurements; do not edit by hand. Regenerate with\n`{command}`.\n"
    );
    let _ = writeln!(out, "- Machine: {}", machine());
    let _ = writeln!(out, "- Commit: `{}`", commit());
    let _ = writeln!(
        out,
        "- Run: {} UTC",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S")
    );
    let _ = writeln!(
        out,
        "- Load: closed loop, the load generator in the same process and on the same cores as the stack.\n"
    );
    let _ = writeln!(out, "## Scenarios\n");
    let _ = writeln!(
        out,
        "| Scenario | Mode | Workers | Window s | Requests | Errors | req/s | p50 ms | p95 ms | p99 ms | max ms |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let f = &r.figures;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} | {:.0} | {} | {} | {} | {} |",
            r.scenario.name(),
            r.mode,
            r.workers,
            f.window.as_secs_f64(),
            f.requests,
            f.errors,
            f.per_second,
            ms(f.p50_us),
            ms(f.p95_us),
            ms(f.p99_us),
            ms(f.max_us)
        );
    }
    let errors: Vec<String> = runs
        .iter()
        .filter(|r| !r.figures.error_samples.is_empty())
        .map(|r| {
            format!(
                "- {}: {}",
                r.scenario.name(),
                r.figures.error_samples.join(" | ")
            )
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\nFirst errors seen:\n\n{}", errors.join("\n"));
    }
    let _ = writeln!(out, "\n## Audit loss check\n");
    for r in runs {
        let _ = writeln!(out, "- {}: {}", r.scenario.name(), r.loss.line());
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "## Against the reference\n");
    let _ = writeln!(
        out,
        "The reference's published figures are from a 4-vCPU VM; ours from the machine above.\n"
    );
    let _ = writeln!(out, "| Measure | Reference | Caracal | Ratio |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let row = |out: &mut String, what: &str, theirs: f64, ours: Option<f64>, lower_better: bool| {
        let (ours_text, ratio) = match ours {
            Some(v) if v > 0.0 => (
                format!("{v:.3}"),
                ratio_text(if lower_better { theirs / v } else { v / theirs }),
            ),
            _ => ("not measured, or with errors".to_owned(), "-".to_owned()),
        };
        let _ = writeln!(out, "| {what} | {theirs} | {ours_text} | {ratio} |");
    };
    let gov = find(runs, Scenario::Governed);
    let p = |f: Option<&Figures>, g: fn(&Figures) -> u64| f.map(|f| g(f) as f64 / 1000.0);
    row(
        &mut out,
        "governed request p50 (ms)",
        reference::GOVERNED_P50_MS,
        p(gov, |f| f.p50_us),
        true,
    );
    row(
        &mut out,
        "governed request p95 (ms)",
        reference::GOVERNED_P95_MS,
        p(gov, |f| f.p95_us),
        true,
    );
    row(
        &mut out,
        "governed requests/s",
        reference::GOVERNED_PEAK_RPS,
        gov.map(|f| f.per_second),
        false,
    );
    row(
        &mut out,
        "mandate verify p50 (ms; reference: gateway verify)",
        reference::GATEWAY_VERIFY_MS,
        p(find(runs, Scenario::Verify), |f| f.p50_us),
        true,
    );
    row(
        &mut out,
        "session create + close cycles/s",
        reference::SESSION_CYCLES_PER_S,
        find(runs, Scenario::SessionCycle).map(|f| f.per_second),
        false,
    );
    let _ = writeln!(
        out,
        "\nFor `audit-ingest`, req/s is events per second from the first emit until the chain holds\nevery event, and the latencies are those of one 1,000-event batch (emit + flush to the stream).\n"
    );
    let _ = writeln!(out, "## Against our targets (SPEC §6)\n");
    let _ = writeln!(out, "| Target | Measured | Met |");
    let _ = writeln!(out, "|---|---:|---|");
    if let Some(r) = runs.iter().find(|r| r.scenario == Scenario::Governed) {
        let f = &r.figures;
        let embedded = r.mode == "embedded";
        let want = if embedded { 6000.0 } else { 4000.0 };
        let _ = writeln!(
            out,
            "| governed ≥ {want:.0} req/s ({}) | {:.0} | {} |",
            r.mode,
            f.per_second,
            yes(f.per_second >= want && f.errors == 0)
        );
        let _ = writeln!(
            out,
            "| governed p50 ≤ 1 ms | {} | {} |",
            ms(f.p50_us),
            yes(f.p50_us <= 1000 && f.errors == 0)
        );
    }
    if let Some(f) = find(runs, Scenario::AuditIngest) {
        let _ = writeln!(
            out,
            "| audit ingest ≥ 20000 events/s (memory ledger; the target is for Postgres) | {:.0} | {} |",
            f.per_second,
            yes(f.per_second >= 20_000.0 && f.errors == 0)
        );
    }
    let lossless = runs
        .iter()
        .filter(|r| matches!(r.loss, Loss::Lossless { .. }))
        .count();
    let lost = runs
        .iter()
        .filter(|r| matches!(r.loss, Loss::Lost { .. }))
        .count();
    let _ = writeln!(
        out,
        "| zero audit loss | {lossless} lossless, {lost} with loss, {} not checked | {} |",
        runs.len() - lossless - lost,
        yes(!runs.is_empty() && lossless == runs.len())
    );
    let _ = writeln!(
        out,
        "\nMicro figures (policy decision, mint, verify against bare ES256, stream `_sig`, audit\nhash and link, in-process exchange, Gateway pre-flight) come from the criterion benches:\n`cargo bench -p caracal-benches`; instruction counts from `--bench instructions`."
    );
    out
}

/// `3.2× better` or `0.4×, worse`: the factor by which we beat the reference.
fn ratio_text(better_by: f64) -> String {
    if better_by >= 1.0 {
        format!("{better_by:.1}× better")
    } else {
        format!("{better_by:.2}× (worse)")
    }
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn run(scenario: Scenario, per_second: f64, p50_us: u64, loss: Loss) -> Run {
        Run {
            scenario,
            mode: "embedded".to_owned(),
            workers: 4,
            figures: Figures {
                requests: 100,
                errors: 0,
                error_samples: vec![],
                per_second,
                p50_us,
                p95_us: p50_us * 2,
                p99_us: p50_us * 3,
                max_us: p50_us * 4,
                window: Duration::from_secs(2),
                audit_events_expected: 300,
            },
            loss,
        }
    }

    #[test]
    fn the_report_compares_with_the_reference_and_the_targets() {
        let runs = vec![
            run(
                Scenario::Governed,
                7000.0,
                850,
                Loss::Lossless {
                    expected: 300,
                    rows: 305,
                },
            ),
            run(
                Scenario::SessionCycle,
                96.0,
                2000,
                Loss::NotChecked("closed".into()),
            ),
        ];
        let md = markdown(&runs, "caracal bench --report BENCHMARKS.md");
        assert!(md.starts_with("# Benchmarks\n"));
        assert!(md.contains("| governed | embedded | 4 | 2.0 | 100 | 0 | 7000 | 0.850 | 1.700 |"));
        assert!(md.contains("| governed request p50 (ms) | 17 | 0.850 | 20.0× better |"));
        assert!(md.contains("| session create + close cycles/s | 192 | 96.000 | 0.50× (worse) |"));
        assert!(md.contains("| governed ≥ 6000 req/s (embedded) | 7000 | yes |"));
        assert!(md.contains("| governed p50 ≤ 1 ms | 0.850 | yes |"));
        assert!(md.contains("1 lossless, 0 with loss, 1 not checked | **no** |"));
        assert!(md.contains("- governed: lossless"));
        assert!(md.contains(
            "| mandate verify p50 (ms; reference: gateway verify) | 3.7 | not measured, or with errors | - |"
        ));
    }
}
