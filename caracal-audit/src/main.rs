//! The `caracal-audit` binary: configuration from the environment, the configured backends,
//! and the service until SIGTERM or Ctrl-C. Exit code 1 on a configuration or startup error.

use std::process::ExitCode;

use caracal_audit::{AuditConfig, Backends, serve};
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
        let config = AuditConfig::from_env(&Env::process())?;
        let backends = Backends::connect(&config).await?;
        serve(config, backends, caracal_service::server::shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
