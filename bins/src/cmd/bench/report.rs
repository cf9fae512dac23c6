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

/// Which stack a run measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stack {
    /// The embedded stack on the in-memory store and streams.
    Embedded,
    /// The embedded stack on Postgres and Redis.
    Durable,
    /// A running stack (`--target`), its backing unknown to the harness.
    Target,
}

/// The `Mode` of embedded runs.
pub const EMBEDDED: &str = "embedded";
/// The `Mode` of runs on Postgres and Redis.
pub const DURABLE: &str = "postgres+redis";

/// The outcome of one scenario run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Which scenario.
    pub scenario: Scenario,
    /// Which stack.
    pub stack: Stack,
    /// The report's `Mode`: [`EMBEDDED`], [`DURABLE`] or `target <url>`, with the backing
    /// for the in-process `audit-ingest`.
    pub mode: String,
    /// Concurrent workers.
    pub workers: usize,
    /// The figures.
    pub figures: Figures,
    /// The loss check of the scenario's zone.
    pub loss: Loss,
    /// True for the `--soak` run (reported in its own section).
    pub soak: bool,
    /// What the reader must know about this run (the `gateway` pool).
    pub note: Option<String>,
}

impl Run {
    fn label(&self) -> String {
        format!("{} ({})", self.scenario.name(), self.mode)
    }
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

/// The figures of `r` when they can stand in a comparison: measured, and without errors (the
/// latency of refusals says nothing about the latency of the work).
fn clean(r: &Run) -> Option<&Figures> {
    Some(&r.figures).filter(|f| f.requests > 0 && f.errors == 0)
}

/// The scenario runs (not the soak), scenario by scenario, each in its stacks' order.
fn scenario_runs(runs: &[Run]) -> Vec<&Run> {
    let order = |s: Scenario| Scenario::All.expand().iter().position(|x| *x == s);
    let mut v: Vec<&Run> = runs.iter().filter(|r| !r.soak).collect();
    v.sort_by_key(|r| (order(r.scenario), r.stack));
    v
}

/// The soak a report should come from: five minutes (issue #10).
pub const SOAK_TARGET_SECS: f64 = 300.0;

fn figures_row(out: &mut String, first: &str, r: &Run) {
    let f = &r.figures;
    let _ = writeln!(
        out,
        "| {first} | {} | {} | {:.1} | {} | {} | {:.0} | {} | {} | {} | {} |",
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

/// The whole `BENCHMARKS.md`. `command` is the command line of this run; `canonical` the one
/// the published figures must come from (both in the header, so the reader can tell).
pub fn markdown(runs: &[Run], command: &str, canonical: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `caracal bench` from its own measurements; do not edit by hand. This run:\n\n```sh\n{command}\n```\n"
    );
    if command == canonical {
        let _ = writeln!(
            out,
            "That is the command the published figures come from (release build, on a dedicated database\nthe harness migrates; `$DATABASE_URL` and `$REDIS_URL` stand for the URLs given)."
        );
    } else {
        let _ = writeln!(
            out,
            "**Not the published run.** The published figures come from (release build, on a dedicated\ndatabase the harness migrates):\n\n```sh\n{canonical}\n```"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "- Machine: {}", machine());
    let _ = writeln!(out, "- Commit: `{}`", commit());
    let _ = writeln!(
        out,
        "- Run: {} UTC",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S")
    );
    let _ = writeln!(
        out,
        "- Load: closed loop, the load generator in the same process and on the same cores as the stack.\n- Modes: `{EMBEDDED}` is `caracal up`'s stack on the in-memory store and streams; `{DURABLE}`\n  the same stack on Postgres and Redis (on this machine), both started by the harness in its process.\n"
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
    let scenarios = scenario_runs(runs);
    for r in &scenarios {
        figures_row(&mut out, r.scenario.name(), r);
    }
    let _ = writeln!(
        out,
        "\nFor `gateway`, only the Gateway call is measured: its one-shot mandates are minted before\nthe window. For `audit-ingest`, req/s is events per second from the first emit until the chain\nholds every event, and the latencies are those of one 1,000-event batch (emit + flush to the\nstream)."
    );
    let notes: Vec<String> = runs
        .iter()
        .filter_map(|r| r.note.as_ref().map(|n| format!("- {}: {n}", r.label())))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes:\n\n{}", notes.join("\n"));
    }
    let errors: Vec<String> = runs
        .iter()
        .filter(|r| !r.figures.error_samples.is_empty())
        .map(|r| format!("- {}: {}", r.label(), r.figures.error_samples.join(" | ")))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\nFirst errors seen:\n\n{}", errors.join("\n"));
    }
    let _ = writeln!(out, "\n## Audit loss check\n");
    for r in &scenarios {
        let _ = writeln!(out, "- {}: {}", r.label(), r.loss.line());
    }
    let soaks: Vec<&Run> = runs.iter().filter(|r| r.soak).collect();
    let _ = writeln!(out, "\n## Soak\n");
    if soaks.is_empty() {
        let _ = writeln!(out, "No soak in this run (`--soak 5m`).");
    } else {
        let _ = writeln!(
            out,
            "`governed` without a pause for the whole time, then the loss check of its zone.\n"
        );
        let _ = writeln!(
            out,
            "| Soak | Mode | Workers | Window s | Requests | Errors | req/s | p50 ms | p95 ms | p99 ms | max ms |"
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &soaks {
            figures_row(&mut out, "governed", r);
        }
        let _ = writeln!(out);
        for r in &soaks {
            let _ = writeln!(
                out,
                "- {}: {} errors; audit {}",
                r.mode,
                r.figures.errors,
                r.loss.line()
            );
        }
    }
    let _ = writeln!(out);
    reference_table(&mut out, &scenarios);
    targets_table(&mut out, runs, &scenarios, &soaks);
    let _ = writeln!(
        out,
        "\nMicro figures (policy decision, mint, verify against bare ES256, stream `_sig`, audit\nhash and link, in-process exchange, Gateway pre-flight) come from the criterion benches:\n`cargo bench -p caracal-benches`; instruction counts from `--bench instructions`."
    );
    out
}

fn reference_table(out: &mut String, scenarios: &[&Run]) {
    let _ = writeln!(out, "## Against the reference\n");
    let _ = writeln!(
        out,
        "The reference's published figures are from a 4-vCPU VM (its packaged stack, on Postgres);\nours from the machine above.\n"
    );
    let _ = writeln!(out, "| Measure | Mode | Reference | Caracal | Ratio |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    let row = |out: &mut String,
               what: &str,
               mode: &str,
               theirs: f64,
               ours: Option<f64>,
               lower_better: bool| {
        let (ours_text, ratio) = match ours {
            Some(v) if v > 0.0 => (
                format!("{v:.3}"),
                ratio_text(if lower_better { theirs / v } else { v / theirs }),
            ),
            _ => ("not measured, or with errors".to_owned(), "-".to_owned()),
        };
        let _ = writeln!(
            out,
            "| {what} | {mode} | {theirs} | {ours_text} | {ratio} |"
        );
    };
    let millis = |us: u64| us as f64 / 1000.0;
    for r in scenarios {
        let f = clean(r);
        let m = r.mode.as_str();
        match r.scenario {
            Scenario::Governed => {
                row(
                    out,
                    "governed request p50 (ms)",
                    m,
                    reference::GOVERNED_P50_MS,
                    f.map(|f| millis(f.p50_us)),
                    true,
                );
                row(
                    out,
                    "governed request p95 (ms)",
                    m,
                    reference::GOVERNED_P95_MS,
                    f.map(|f| millis(f.p95_us)),
                    true,
                );
                row(
                    out,
                    "governed requests/s",
                    m,
                    reference::GOVERNED_PEAK_RPS,
                    f.map(|f| f.per_second),
                    false,
                );
            }
            Scenario::Gateway => row(
                out,
                "gateway call p50 (ms; reference: gateway verify)",
                m,
                reference::GATEWAY_VERIFY_MS,
                f.map(|f| millis(f.p50_us)),
                true,
            ),
            Scenario::Verify => row(
                out,
                "mandate verify p50 (ms; reference: gateway verify)",
                m,
                reference::GATEWAY_VERIFY_MS,
                f.map(|f| millis(f.p50_us)),
                true,
            ),
            Scenario::SessionCycle => row(
                out,
                "session create + close cycles/s",
                m,
                reference::SESSION_CYCLES_PER_S,
                f.map(|f| f.per_second),
                false,
            ),
            Scenario::Exchange | Scenario::AuditIngest | Scenario::All => {}
        }
    }
    let _ = writeln!(out);
}

fn targets_table(out: &mut String, runs: &[Run], scenarios: &[&Run], soaks: &[&Run]) {
    let _ = writeln!(out, "## Against our targets (SPEC §6)\n");
    let _ = writeln!(out, "| Target | Measured | Met |");
    let _ = writeln!(out, "|---|---:|---|");
    let not_measured = |out: &mut String, what: &str, how: &str| {
        let _ = writeln!(out, "| {what} | not measured ({how}) | **no** |");
    };
    let of = |s: Scenario| scenarios.iter().filter(move |r| r.scenario == s);
    let durable_hint = "needs `--database-url` and `--redis-url`";
    let mut durable_governed = false;
    for r in of(Scenario::Governed) {
        let f = &r.figures;
        let ok = f.errors == 0 && f.requests > 0;
        if r.stack == Stack::Embedded {
            let _ = writeln!(
                out,
                "| governed ≥ 6000 req/s ({}) | {:.0} | {} |",
                r.mode,
                f.per_second,
                yes(ok && f.per_second >= 6000.0)
            );
        } else {
            durable_governed = true;
            let _ = writeln!(
                out,
                "| governed ≥ 4000 req/s ({}) | {:.0} | {} |",
                r.mode,
                f.per_second,
                yes(ok && f.per_second >= 4000.0)
            );
            let _ = writeln!(
                out,
                "| governed p50 ≤ 1 ms ({}) | {} | {} |",
                r.mode,
                ms(f.p50_us),
                yes(ok && f.p50_us <= 1000)
            );
        }
    }
    if !durable_governed {
        not_measured(
            out,
            "governed ≥ 4000 req/s and p50 ≤ 1 ms (postgres+redis)",
            durable_hint,
        );
    }
    let mut gateway = false;
    for r in of(Scenario::Gateway) {
        gateway = true;
        let f = &r.figures;
        let ok = f.errors == 0 && f.requests > 0;
        let short = if f.exhausted {
            " (pool ran out: shortened window)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| gateway call ≥ 10000 req/s ({}) | {:.0}{short} | {} |",
            r.mode,
            f.per_second,
            yes(ok && f.per_second >= 10_000.0)
        );
        let _ = writeln!(
            out,
            "| gateway call p50 ≤ 0.5 ms ({}) | {} | {} |",
            r.mode,
            ms(f.p50_us),
            yes(ok && f.p50_us <= 500)
        );
    }
    if !gateway {
        not_measured(
            out,
            "gateway call ≥ 10000 req/s, p50 ≤ 0.5 ms",
            "`--scenario gateway`",
        );
    }
    let mut postgres_ingest = false;
    for r in of(Scenario::AuditIngest) {
        let f = &r.figures;
        let ok = f.errors == 0 && f.requests > 0;
        let which = if r.stack == Stack::Durable {
            postgres_ingest = true;
            "Postgres ledger"
        } else {
            "memory ledger; the target is for Postgres"
        };
        let _ = writeln!(
            out,
            "| audit ingest ≥ 20000 events/s ({which}) | {:.0} | {} |",
            f.per_second,
            yes(ok && f.per_second >= 20_000.0)
        );
    }
    if !postgres_ingest {
        not_measured(
            out,
            "audit ingest ≥ 20000 events/s (Postgres ledger)",
            durable_hint,
        );
    }
    for r in soaks {
        let f = &r.figures;
        let secs = f.window.as_secs_f64();
        let lossless = matches!(r.loss, Loss::Lossless { .. });
        let _ = writeln!(
            out,
            "| {:.0}-minute soak: zero errors, zero audit loss ({}) | {secs:.0} s, {} requests, {} errors, {} | {} |",
            SOAK_TARGET_SECS / 60.0,
            r.mode,
            f.requests,
            f.errors,
            if lossless { "lossless" } else { "not lossless" },
            yes(secs >= SOAK_TARGET_SECS && f.errors == 0 && f.requests > 0 && lossless)
        );
    }
    if soaks.is_empty() {
        not_measured(
            out,
            "5-minute soak: zero errors, zero audit loss",
            "`--soak 5m`",
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
        "| zero audit loss (every run) | {lossless} lossless, {lost} with loss, {} not checked | {} |",
        runs.len() - lossless - lost,
        yes(!runs.is_empty() && lossless == runs.len())
    );
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

    fn run(scenario: Scenario, stack: Stack, per_second: f64, p50_us: u64, loss: Loss) -> Run {
        Run {
            scenario,
            stack,
            mode: match stack {
                Stack::Embedded => EMBEDDED.to_owned(),
                Stack::Durable => DURABLE.to_owned(),
                Stack::Target => "target http://x".to_owned(),
            },
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
                exhausted: false,
            },
            loss,
            soak: false,
            note: None,
        }
    }

    fn lossless() -> Loss {
        Loss::Lossless {
            expected: 300,
            rows: 305,
        }
    }

    #[test]
    fn the_report_compares_with_the_reference_and_the_targets() {
        let runs = vec![
            run(Scenario::Governed, Stack::Embedded, 7000.0, 850, lossless()),
            run(
                Scenario::SessionCycle,
                Stack::Embedded,
                96.0,
                2000,
                Loss::NotChecked("closed".into()),
            ),
        ];
        let md = markdown(&runs, "caracal bench --report BENCHMARKS.md", "canonical");
        assert!(md.starts_with("# Benchmarks\n"));
        assert!(md.contains("**Not the published run.**"));
        assert!(md.contains("| governed | embedded | 4 | 2.0 | 100 | 0 | 7000 | 0.850 | 1.700 |"));
        assert!(
            md.contains("| governed request p50 (ms) | embedded | 17 | 0.850 | 20.0× better |")
        );
        assert!(md.contains(
            "| session create + close cycles/s | embedded | 192 | 96.000 | 0.50× (worse) |"
        ));
        assert!(md.contains("| governed ≥ 6000 req/s (embedded) | 7000 | yes |"));
        // What this run did not measure is listed as such, never as met.
        assert!(
            md.contains("| governed ≥ 4000 req/s and p50 ≤ 1 ms (postgres+redis) | not measured")
        );
        assert!(md.contains("| audit ingest ≥ 20000 events/s (Postgres ledger) | not measured"));
        assert!(md.contains("| 5-minute soak: zero errors, zero audit loss | not measured"));
        assert!(md.contains("No soak in this run"));
        assert!(md.contains("1 lossless, 0 with loss, 1 not checked | **no** |"));
        assert!(md.contains("- governed (embedded): lossless"));
    }

    #[test]
    fn both_modes_the_gateway_pool_and_the_soak_have_their_rows() {
        let mut pool_gateway = run(Scenario::Gateway, Stack::Durable, 9000.0, 400, lossless());
        pool_gateway.figures.exhausted = true;
        pool_gateway.note = Some("1000 one-shot mandates".to_owned());
        let mut soak = run(Scenario::Governed, Stack::Durable, 4100.0, 900, lossless());
        soak.soak = true;
        soak.figures.window = Duration::from_secs(301);
        let mut short_soak = run(Scenario::Governed, Stack::Embedded, 6100.0, 700, lossless());
        short_soak.soak = true;
        let mut ingest = run(
            Scenario::AuditIngest,
            Stack::Durable,
            25_000.0,
            3000,
            lossless(),
        );
        ingest.mode = format!("{DURABLE} (in-process, Redis stream, Postgres ledger)");
        let runs = vec![
            run(Scenario::Governed, Stack::Embedded, 6500.0, 600, lossless()),
            run(
                Scenario::Gateway,
                Stack::Embedded,
                12_000.0,
                300,
                lossless(),
            ),
            run(Scenario::Governed, Stack::Durable, 3900.0, 1100, lossless()),
            pool_gateway,
            ingest,
            short_soak,
            soak,
        ];
        let md = markdown(&runs, "same", "same");
        assert!(!md.contains("Not the published run"));
        // Scenario by scenario, embedded before postgres+redis.
        let governed_mem = md.find("| governed | embedded |").unwrap();
        let governed_pg = md.find("| governed | postgres+redis |").unwrap();
        let gateway_mem = md.find("| gateway | embedded |").unwrap();
        assert!(governed_mem < governed_pg && governed_pg < gateway_mem);
        assert!(md.contains("| governed ≥ 6000 req/s (embedded) | 6500 | yes |"));
        assert!(md.contains("| governed ≥ 4000 req/s (postgres+redis) | 3900 | **no** |"));
        assert!(md.contains("| governed p50 ≤ 1 ms (postgres+redis) | 1.100 | **no** |"));
        assert!(md.contains("| gateway call ≥ 10000 req/s (embedded) | 12000 | yes |"));
        assert!(md.contains("| gateway call p50 ≤ 0.5 ms (embedded) | 0.300 | yes |"));
        assert!(md.contains(
            "| gateway call ≥ 10000 req/s (postgres+redis) | 9000 (pool ran out: shortened window) | **no** |"
        ));
        assert!(md.contains("- gateway (postgres+redis): 1000 one-shot mandates"));
        assert!(md.contains("| audit ingest ≥ 20000 events/s (Postgres ledger) | 25000 | yes |"));
        // The soak has its own section and is not a scenario row.
        assert!(md.contains("| Soak | Mode |"));
        assert!(md.contains("| governed | postgres+redis | 4 | 301.0 | 100 | 0 | 4100 |"));
        assert!(md.contains(
            "| 5-minute soak: zero errors, zero audit loss (postgres+redis) | 301 s, 100 requests, 0 errors, lossless | yes |"
        ));
        // A soak shorter than five minutes does not meet the target, however clean.
        assert!(md.contains(
            "| 5-minute soak: zero errors, zero audit loss (embedded) | 2 s, 100 requests, 0 errors, lossless | **no** |"
        ));
        assert_eq!(md.matches("| governed | embedded |").count(), 2);
        assert!(md.contains("7 lossless, 0 with loss, 0 not checked | yes |"));
    }
}
