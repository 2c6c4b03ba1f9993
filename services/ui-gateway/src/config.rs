use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;
use vigil_runtime::{
    auth::{Secret, is_valid_project_name},
    config::{ConfigError, HttpServerConfig, Validate, key, positive},
};

/// `[ui_gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiGatewayConfig {
    /// The web UI; default 127.0.0.1:7480.
    pub http: HttpServerConfig,
    /// The query API's gRPC address.
    pub query_endpoint: String,
    /// The alerting worker's gRPC address.
    pub alerting_endpoint: String,
    /// The project shown.
    pub project: String,
    /// An API key of that project, sent to the query API. Prefer
    /// `api_key_file` (a mounted secret) outside of tests.
    pub api_key: Secret,
    pub api_key_file: Option<std::path::PathBuf>,
    /// Processes listed per host, busiest first.
    pub processes_per_host: u32,
    /// Longest wait for a backend call.
    #[serde(with = "humantime_serde")]
    pub backend_timeout: Duration,
}

impl Default for UiGatewayConfig {
    fn default() -> Self {
        Self {
            http: HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7480))),
            query_endpoint: "127.0.0.1:7410".into(),
            alerting_endpoint: "127.0.0.1:7420".into(),
            project: "default".into(),
            api_key: Secret::default(),
            api_key_file: None,
            processes_per_host: 15,
            backend_timeout: Duration::from_secs(10),
        }
    }
}

impl UiGatewayConfig {
    /// The API key sent to the query API.
    pub fn resolve_api_key(&self) -> Result<String, ConfigError> {
        vigil_runtime::auth::resolve_api_key(
            "ui_gateway.api_key",
            &self.api_key.0,
            self.api_key_file.as_deref(),
        )
    }
}

impl Validate for UiGatewayConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.http.validate(&key(prefix, "http"))?;
        for (field, value) in [
            ("query_endpoint", &self.query_endpoint),
            ("alerting_endpoint", &self.alerting_endpoint),
        ] {
            if value.is_empty() {
                return Err(ConfigError::invalid(
                    key(prefix, field),
                    "must not be empty",
                ));
            }
        }
        if !is_valid_project_name(&self.project) {
            return Err(ConfigError::invalid(
                key(prefix, "project"),
                "not a valid project name",
            ));
        }
        positive(
            prefix,
            "processes_per_host",
            self.processes_per_host as usize,
        )
    }
}
