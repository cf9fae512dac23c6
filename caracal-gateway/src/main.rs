//! The `caracal-gateway` binary: configuration from the environment, the configured backends
//! (Redis, Postgres, the STS at `STS_URL`), the initial revocation snapshot (fatal), and the
//! proxy until SIGTERM or Ctrl-C. Exit code 1 on a configuration or startup error.

use std::process::ExitCode;

use caracal_gateway::{GatewaySettings, serve};
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
        let settings = GatewaySettings::from_env(&Env::process())?;
        serve(settings, caracal_service::server::shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
