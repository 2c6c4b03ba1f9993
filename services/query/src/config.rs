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
    /// Most series one query may read or return.
    pub max_series: usize,
    /// Most samples one PromQL query may read plus produce.
    pub max_samples: usize,
    /// Most steps of one range query (Prometheus: 11 000).
    pub max_steps: usize,
    /// How far back an instant selector looks for a sample.
    #[serde(with = "humantime_serde")]
    pub lookback_delta: Duration,
    /// Step of a subquery that names none.
    #[serde(with = "humantime_serde")]
    pub subquery_step: Duration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            grpc: GrpcServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7410))),
            http: HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7411))),
            default_lookback: Duration::from_secs(300),
            max_range: Duration::from_secs(31 * 24 * 3600),
            max_series: 10_000,
            max_samples: 50_000_000,
            max_steps: 11_000,
            lookback_delta: Duration::from_secs(300),
            subquery_step: Duration::from_secs(60),
        }
    }
}

impl Validate for QueryConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.grpc.validate(&key(prefix, "grpc"))?;
        self.http.validate(&key(prefix, "http"))?;
        nonzero_duration(prefix, "default_lookback", self.default_lookback)?;
        nonzero_duration(prefix, "max_range", self.max_range)?;
        positive(prefix, "max_series", self.max_series)?;
        positive(prefix, "max_samples", self.max_samples)?;
        positive(prefix, "max_steps", self.max_steps)?;
        nonzero_duration(prefix, "lookback_delta", self.lookback_delta)?;
        nonzero_duration(prefix, "subquery_step", self.subquery_step)
    }
}

impl QueryConfig {
    /// The PromQL limits this configuration sets.
    pub fn limits(&self) -> crate::promql::Limits {
        use vigil_runtime::time::millis;
        crate::promql::Limits {
            max_series: self.max_series,
            max_samples: self.max_samples,
            max_steps: self.max_steps,
            max_range_ms: millis(self.max_range),
            lookback_ms: millis(self.lookback_delta),
            subquery_step_ms: millis(self.subquery_step),
        }
    }
}
