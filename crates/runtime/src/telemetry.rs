//! One tracing setup for every Vigil binary: an env filter (`RUST_LOG` wins
//! over `log.level`), plain or JSON lines on stderr.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{ConfigError, LogConfig, LogFormat};

/// Installs the global subscriber. Calling it twice is harmless (the second
/// call keeps the first subscriber), which matters when one process hosts
/// several services.
pub fn init(config: &LogConfig) -> Result<(), ConfigError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| ConfigError::invalid("RUST_LOG", e.to_string()))?,
        _ => EnvFilter::try_new(&config.level)
            .map_err(|e| ConfigError::invalid("log.level", e.to_string()))?,
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Plain => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(true),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // Already initialised (several services in one process): keep the first.
    let _ = result;
    Ok(())
}
