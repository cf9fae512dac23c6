//! The `caracal-sts` binary: configuration from the environment, the configured backends, and
//! the service until SIGTERM or Ctrl-C. Exit code 1 on a configuration or startup error.

use std::process::ExitCode;
use std::sync::Arc;

use caracal_core::clock::SystemClock;
use caracal_service::Env;
use caracal_sts::{StsBackends, StsSettings, serve};
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
        let settings = StsSettings::from_env(&Env::process())?;
        let backends = StsBackends::connect(&settings, Arc::new(SystemClock)).await?;
        serve(
            settings,
            backends,
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
