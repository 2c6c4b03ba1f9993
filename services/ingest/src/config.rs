use std::net::SocketAddr;

use serde::Deserialize;
use vigil_runtime::config::{
    ConfigError, GrpcServerConfig, HttpServerConfig, Validate, key, positive,
};

/// `[ingest]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Agent protocol (and OTLP gRPC); default 127.0.0.1:4317.
    pub grpc: GrpcServerConfig,
    /// Health, metrics (and OTLP HTTP, remote_write); default 127.0.0.1:4318.
    pub http: HttpServerConfig,
    /// Most series one batch may carry.
    pub max_series_per_batch: usize,
    /// Most samples one batch may carry.
    pub max_samples_per_batch: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            grpc: GrpcServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 4317))),
            http: HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 4318))),
            max_series_per_batch: 10_000,
            max_samples_per_batch: 100_000,
        }
    }
}

impl Validate for IngestConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.grpc.validate(&key(prefix, "grpc"))?;
        self.http.validate(&key(prefix, "http"))?;
        positive(prefix, "max_series_per_batch", self.max_series_per_batch)?;
        positive(prefix, "max_samples_per_batch", self.max_samples_per_batch)
    }
}
