//! The shared `main` of every Vigil service binary: `--help`, `--version`,
//! `--config FILE`, config loading (a bad key exits 2 naming it), tracing,
//! signals, and a bounded drain on shutdown.

use std::{fmt::Display, path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::{
    Shutdown,
    config::{ConfigError, ConfigLoader, LogConfig},
    telemetry,
};

/// Longest time in-flight work may take to drain after SIGTERM/SIGINT.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Exit code for configuration errors.
pub const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
struct ServiceArgs {
    /// Configuration file (.toml, .yaml or .yml). Environment variables
    /// VIGIL_<SECTION>__<KEY> override it, e.g. VIGIL_LOG__LEVEL=debug.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Loads configuration and sets up tracing; shared with the `vigil` binary.
pub fn load(config: Option<&std::path::Path>) -> Result<ConfigLoader, ConfigError> {
    let loader = ConfigLoader::load(config)?;
    let log: LogConfig = loader.section("log")?;
    telemetry::init(&log)?;
    Ok(loader)
}

/// Runs `body` until it returns; after a shutdown signal, waits at most
/// [`DRAIN_TIMEOUT`] for it to drain.
pub async fn run_until_stopped<E: Display>(
    name: &str,
    shutdown: &Shutdown,
    body: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    tokio::select! {
        result = body => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "{name} stopped on an error");
                eprintln!("{name}: {e}");
                ExitCode::FAILURE
            }
        },
        () = async {
            shutdown.wait().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            eprintln!("{name}: draining took longer than {DRAIN_TIMEOUT:?}; stopping anyway");
            ExitCode::FAILURE
        }
    }
}

/// The whole `main` of a service binary. `configure` takes the service's
/// sections from the loaded configuration (an error there exits with
/// [`EXIT_CONFIG`], naming the key); `body` runs the service.
pub fn main<C, F, Fut, E>(
    name: &'static str,
    about: &'static str,
    configure: impl FnOnce(&ConfigLoader) -> Result<C, ConfigError>,
    body: F,
) -> ExitCode
where
    F: FnOnce(C, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let matches = ServiceArgs::command()
        .name(name)
        .bin_name(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    let args = match ServiceArgs::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let config = match load(args.config.as_deref()).and_then(|loader| configure(&loader)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signals();
        run_until_stopped(name, &shutdown, body(config, shutdown.clone())).await
    })
}
