use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;
use vigil_runtime::config::{
    ConfigError, GrpcServerConfig, HttpServerConfig, Validate, key, positive,
};

/// `[ingest]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Agent protocol and OTLP/gRPC; default 127.0.0.1:4317.
    pub grpc: GrpcServerConfig,
    /// OTLP/HTTP, Prometheus remote_write, health and metrics; default
    /// 127.0.0.1:4318.
    pub http: HttpServerConfig,
    /// `[ingest.limits]`.
    pub limits: LimitsConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let mut grpc = GrpcServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 4317)));
        grpc.max_message_bytes = 16 << 20;
        let mut http = HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 4318)));
        http.max_body_bytes = 16 << 20;
        Self {
            grpc,
            http,
            limits: LimitsConfig::default(),
        }
    }
}

impl Validate for IngestConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.grpc.validate(&key(prefix, "grpc"))?;
        self.http.validate(&key(prefix, "http"))?;
        self.limits.validate(&key(prefix, "limits"))
    }
}

/// `[ingest.limits]`: what one request may carry, how fast each project
/// may send, and how long a request waits for storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most series (agent, remote_write) or metric data points (OTLP) per request.
    pub max_series_per_request: usize,
    pub max_samples_per_request: usize,
    pub max_spans_per_request: usize,
    pub max_logs_per_request: usize,
    /// Most labels on one series, resource labels included.
    pub max_labels_per_series: usize,
    /// Largest request after decompression (gzip, snappy), in bytes.
    pub max_uncompressed_bytes: usize,
    /// Samples, spans and log records older than this are refused.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// ... and those further than this in the future.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Items (samples + spans + log records) per second each project may
    /// send, on average; more are refused with RESOURCE_EXHAUSTED / 429.
    pub project_rate: u32,
    /// Items a project may send at once above its rate.
    pub project_burst: u32,
    /// Storage writes in flight at once; further requests wait.
    pub max_inflight_writes: usize,
    /// Memory that requests being decoded, converted and written may hold
    /// together (estimated as 4× their uncompressed size); further requests
    /// wait, like those waiting for a write slot.
    pub max_inflight_bytes: usize,
    /// How long a request waits for a write slot before UNAVAILABLE / 503.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// The retry hint sent with UNAVAILABLE / 503 and RESOURCE_EXHAUSTED / 429.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_series_per_request: 10_000,
            max_samples_per_request: 100_000,
            max_spans_per_request: 50_000,
            max_logs_per_request: 50_000,
            max_labels_per_series: 40,
            max_uncompressed_bytes: 64 << 20,
            max_age: Duration::from_secs(7 * 86_400),
            max_future: Duration::from_secs(600),
            project_rate: 1_000_000,
            project_burst: 2_000_000,
            max_inflight_writes: 64,
            max_inflight_bytes: 512 << 20,
            queue_timeout: Duration::from_secs(2),
            retry_after: Duration::from_secs(5),
        }
    }
}

impl Validate for LimitsConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        positive(
            prefix,
            "max_series_per_request",
            self.max_series_per_request,
        )?;
        positive(
            prefix,
            "max_samples_per_request",
            self.max_samples_per_request,
        )?;
        positive(prefix, "max_spans_per_request", self.max_spans_per_request)?;
        positive(prefix, "max_logs_per_request", self.max_logs_per_request)?;
        positive(prefix, "max_labels_per_series", self.max_labels_per_series)?;
        if self.max_labels_per_series > vigil_storage::model::MAX_LABELS {
            return Err(ConfigError::invalid(
                key(prefix, "max_labels_per_series"),
                format!(
                    "the store holds at most {} labels per series",
                    vigil_storage::model::MAX_LABELS
                ),
            ));
        }
        positive(
            prefix,
            "max_uncompressed_bytes",
            self.max_uncompressed_bytes,
        )?;
        positive(prefix, "project_rate", self.project_rate as usize)?;
        if self.project_burst < self.project_rate {
            return Err(ConfigError::invalid(
                key(prefix, "project_burst"),
                "must be at least project_rate",
            ));
        }
        positive(prefix, "max_inflight_writes", self.max_inflight_writes)?;
        if self.max_inflight_bytes < 4 * self.max_uncompressed_bytes {
            return Err(ConfigError::invalid(
                key(prefix, "max_inflight_bytes"),
                "must be at least 4 × max_uncompressed_bytes, or the largest accepted request could never be admitted",
            ));
        }
        for (field, value) in [
            ("max_age", self.max_age),
            ("queue_timeout", self.queue_timeout),
            ("retry_after", self.retry_after),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key(prefix, field), "must be above 0"));
            }
        }
        Ok(())
    }
}
