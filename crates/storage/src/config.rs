use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use vigil_runtime::config::{ConfigError, Validate, key};

/// `[storage]`: which backend holds telemetry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: Backend,
    pub redb: RedbConfig,
    pub clickhouse: ClickHouseConfig,
    pub retention: RetentionConfig,
}

/// `[storage.clickhouse]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// The HTTP interface, e.g. `http://clickhouse:8123`.
    pub url: String,
    /// Database holding Vigil's tables (created if missing).
    pub database: String,
    pub user: String,
    pub password: String,
    /// Cluster mode: the name of a cluster in the servers' `remote_servers`.
    /// Tables are created `ON CLUSTER` as `<table>_local` on every node with
    /// a `Distributed` table in front; writes wait until every shard has
    /// its rows. Empty: one server.
    pub cluster: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "vigil".into(),
            user: String::new(),
            password: String::new(),
            cluster: String::new(),
        }
    }
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("cluster", &self.cluster)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "[redacted]"
                },
            )
            .finish()
    }
}

/// `[storage.retention]`: how long each signal is kept. Changing it takes
/// effect at the next maintenance round; nothing to migrate by hand.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    #[serde(with = "humantime_serde")]
    pub metrics: Duration,
    #[serde(with = "humantime_serde")]
    pub traces: Duration,
    /// Log records and Kubernetes events.
    #[serde(with = "humantime_serde")]
    pub logs: Duration,
    #[serde(with = "humantime_serde")]
    pub profiles: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            metrics: Duration::from_secs(30 * 24 * 3600),
            traces: Duration::from_secs(7 * 24 * 3600),
            logs: Duration::from_secs(7 * 24 * 3600),
            profiles: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded, one file, one process (`vigil up`).
    #[default]
    Redb,
    /// A ClickHouse server or cluster, for split deployments.
    Clickhouse,
}

/// `[storage.redb]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedbConfig {
    /// The store file; default `<data_dir>/telemetry.redb`.
    pub path: Option<PathBuf>,
}

impl Validate for StorageConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.backend == Backend::Clickhouse
            && !(self.clickhouse.url.starts_with("http://")
                || self.clickhouse.url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                key(prefix, "clickhouse.url"),
                "must be the HTTP interface, http://host:8123 or https://…",
            ));
        }
        for (field, value) in [
            ("retention.metrics", self.retention.metrics),
            ("retention.traces", self.retention.traces),
            ("retention.logs", self.retention.logs),
            ("retention.profiles", self.retention.profiles),
        ] {
            if value < Duration::from_secs(3600) {
                return Err(ConfigError::invalid(
                    key(prefix, field),
                    "must be at least 1h",
                ));
            }
        }
        Ok(())
    }
}
