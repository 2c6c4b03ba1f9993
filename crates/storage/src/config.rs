use std::path::PathBuf;

use serde::Deserialize;
use vigil_runtime::config::{ConfigError, Validate};

/// `[storage]`: which backend holds telemetry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: Backend,
    pub redb: RedbConfig,
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
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}
