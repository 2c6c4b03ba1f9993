use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;
use vigil_runtime::config::{
    ConfigError, GrpcServerConfig, HttpServerConfig, Validate, key, nonzero_duration, positive,
};

/// `[query]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// gRPC API; default 127.0.0.1:7410.
    pub grpc: GrpcServerConfig,
    /// Health and metrics (and the Prometheus-compatible API); default 127.0.0.1:7411.
    pub http: HttpServerConfig,
    /// How far back a host or process counts as present.
    #[serde(with = "humantime_serde")]
    pub default_lookback: Duration,
    /// Longest time range one query may span.
    #[serde(with = "humantime_serde")]
    pub max_range: Duration,
    /// Most series one query may return.
    pub max_series: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            grpc: GrpcServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7410))),
            http: HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7411))),
            default_lookback: Duration::from_secs(300),
            max_range: Duration::from_secs(31 * 24 * 3600),
            max_series: 10_000,
        }
    }
}

impl Validate for QueryConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.grpc.validate(&key(prefix, "grpc"))?;
        self.http.validate(&key(prefix, "http"))?;
        nonzero_duration(prefix, "default_lookback", self.default_lookback)?;
        nonzero_duration(prefix, "max_range", self.max_range)?;
        positive(prefix, "max_series", self.max_series)
    }
}
