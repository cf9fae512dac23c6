//! The `caracal-control` binary: the Admin API (`ADMIN_PORT`/`PORT`, 3000) and the Coordinator
//! (`COORDINATOR_PORT`, 4000) over Postgres and Redis, with the outbox relay, until SIGTERM or
//! Ctrl-C. Settings come from the environment ([`caracal_control::ControlSettings`]); published
//! modes refuse to start without every key and both backends. Exit code 1 on a configuration
//! or startup error.

use std::process::ExitCode;
use std::sync::Arc;

use caracal_control::{ControlSettings, serve};
use caracal_core::clock::SystemClock;
use caracal_service::Env;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let settings = ControlSettings::from_env(&Env::process())?;
        serve(
            settings,
            Arc::new(SystemClock),
            caracal_service::server::shutdown_signal(),
        )
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
