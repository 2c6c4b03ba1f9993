use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use vigil_runtime::{
    auth::{Secret, is_valid_project_name},
    config::{ConfigError, GrpcServerConfig, HttpServerConfig, Validate, key},
};

/// `[alerting]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// gRPC API (incidents); default 127.0.0.1:7420.
    pub grpc: GrpcServerConfig,
    /// Health and metrics; default 127.0.0.1:7421.
    pub http: HttpServerConfig,
    /// The query API's gRPC address.
    pub query_endpoint: String,
    /// The project inspected.
    pub project: String,
    /// An API key of that project, sent to the query API. Prefer
    /// `api_key_file` (a mounted secret) outside of tests.
    pub api_key: Secret,
    pub api_key_file: Option<std::path::PathBuf>,
    /// How often inspections run.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The incident store; default `<data_dir>/alerting.redb`.
    pub state_path: Option<PathBuf>,
    pub inspections: InspectionsConfig,
}

/// `[alerting.inspections]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectionsConfig {
    pub host_cpu: ThresholdConfig,
    pub host_memory: ThresholdConfig,
}

/// An inspection that fires when a percentage is above a threshold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdConfig {
    pub enabled: bool,
    /// Warning above this percentage.
    pub threshold_percent: f64,
    /// Critical above this percentage.
    pub critical_percent: f64,
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold_percent: 90.0,
            critical_percent: 98.0,
        }
    }
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            grpc: GrpcServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7420))),
            http: HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7421))),
            query_endpoint: "127.0.0.1:7410".into(),
            project: "default".into(),
            api_key: Secret::default(),
            api_key_file: None,
            interval: Duration::from_secs(30),
            state_path: None,
            inspections: InspectionsConfig::default(),
        }
    }
}

impl Validate for ThresholdConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (field, value) in [
            ("threshold_percent", self.threshold_percent),
            ("critical_percent", self.critical_percent),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(ConfigError::invalid(
                    key(prefix, field),
                    "must be between 0 and 100",
                ));
            }
        }
        if self.critical_percent < self.threshold_percent {
            return Err(ConfigError::invalid(
                key(prefix, "critical_percent"),
                "must not be below threshold_percent",
            ));
        }
        Ok(())
    }
}

impl AlertingConfig {
    /// The API key sent to the query API.
    pub fn resolve_api_key(&self) -> Result<String, ConfigError> {
        vigil_runtime::auth::resolve_api_key(
            "alerting.api_key",
            &self.api_key.0,
            self.api_key_file.as_deref(),
        )
    }
}

impl Validate for AlertingConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.grpc.validate(&key(prefix, "grpc"))?;
        self.http.validate(&key(prefix, "http"))?;
        if self.query_endpoint.is_empty() {
            return Err(ConfigError::invalid(
                key(prefix, "query_endpoint"),
                "must not be empty",
            ));
        }
        if !is_valid_project_name(&self.project) {
            return Err(ConfigError::invalid(
                key(prefix, "project"),
                "not a valid project name",
            ));
        }
        if self.interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                key(prefix, "interval"),
                "must be at least 100ms",
            ));
        }
        self.inspections
            .host_cpu
            .validate(&key(prefix, "inspections.host_cpu"))?;
        self.inspections
            .host_memory
            .validate(&key(prefix, "inspections.host_memory"))
    }
}
