//! The `caracal` command line.
//!
//! ## Layout
//!
//! - `cmd::up`: `caracal up`, the services in one process on the embedded default (today the
//!   STS and the Audit service).
//! - `cmd::migrate`: `caracal migrate`, the forward-only migrations of `migrations/`.
//! - `cmd::policy`: `caracal policy eval|validate`, the policy engine on local files.
//! - `cmd::streams`: `caracal streams provision|verify`, the nine Redis streams and groups.
//! - `cmd::demo`: `caracal demo`, the guided tour over HTTP (or `--embedded`).
//! - `cmd::status`: `caracal status`, each service's health and readiness reason.
//! - `api`: the typed HTTP client of the services, shared by `demo`, `status` and the load
//!   harness.
//! - `cmd::audit`: `caracal audit verify`, the chain verifier over a Postgres ledger.
//! - `cmd::doctor`: `caracal doctor`, the five reconciliation checks after an outage.
//! - `cmd::bench`: `caracal bench`, the load harness and `BENCHMARKS.md`.
//! - `api`: a typed HTTP client of the services (used by the harness).
//! - `cmd`: the command error type and how it maps to exit codes.
//!
//! Each subcommand is a module with an `Args` struct (parsed by clap) and a `run` function
//! that is the only place with I/O. Logs go to stderr (`RUST_LOG`, default `warn`); results go
//! to stdout. Exit codes: 0 success, 1 failure, 2 usage error.

mod api;
mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Caracal: authority, not credentials, for AI agents.
#[derive(Debug, Parser)]
#[command(name = "caracal", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the services in one process on the embedded in-memory default (today: STS and
    /// Audit; Gateway, Coordinator and Admin API join as they land).
    Up(cmd::up::UpArgs),
    /// Apply pending Postgres migrations (forward-only, checksummed, safe to run concurrently).
    Migrate(cmd::migrate::MigrateArgs),
    /// Provision or verify the Redis streams and their consumer groups.
    Streams(cmd::streams::StreamsArgs),
    /// Audit ledger tools: `verify` checks every zone's hash chain.
    Audit(cmd::audit::AuditArgs),
    /// The guided tour: a world built, authority delegated, used through the Gateway and
    /// revoked, the audit chain verified (against `caracal up`, or `--embedded`).
    Demo(cmd::demo::DemoArgs),
    /// Each service's health and readiness with its reason (`--ready`: exit 1 unless all
    /// ready; `--json`: machine output).
    Status(cmd::status::StatusArgs),
    /// Run the five reconciliation checks (migrations, streams, outbox, audit DLQ and replay
    /// directories, Gateway revocation freshness); exits 1 when any fails.
    Doctor(cmd::doctor::DoctorArgs),
    /// Evaluate a policy input against data documents, or validate a data document.
    Policy(cmd::policy::PolicyArgs),
    /// Load harness: closed-loop scenarios against the embedded stack or a running one,
    /// with an audit loss check; `--report BENCHMARKS.md` writes the results.
    Bench(cmd::bench::BenchArgs),
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => cmd::up::run(&args),
        Command::Migrate(args) => cmd::block_on(cmd::migrate::run(args)),
        Command::Streams(args) => cmd::block_on(cmd::streams::run(args)),
        Command::Audit(args) => cmd::block_on(cmd::audit::run(args)),
        Command::Policy(args) => cmd::policy::run(&args),
        Command::Demo(args) => cmd::demo::run(&args),
        Command::Status(args) => cmd::block_on(cmd::status::run(args)),
        Command::Doctor(args) => cmd::block_on(cmd::doctor::run(args)),
        Command::Bench(args) => cmd::bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Structured logs on stderr, filtered by `RUST_LOG` (default `warn`).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // A second initialisation (impossible here) would only be refused; never fatal.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
