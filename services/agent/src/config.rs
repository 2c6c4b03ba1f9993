use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use vigil_runtime::config::{
    ConfigError, HttpServerConfig, Validate, key, nonzero_duration, positive,
};

/// `[agent]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Ingest's gRPC address, `host:port` or `http(s)://host:port`.
    pub ingest_endpoint: String,
    /// The project's API key. Prefer `api_key_file` outside of tests.
    pub api_key: String,
    /// A file holding the API key (read at start).
    pub api_key_file: Option<PathBuf>,
    /// How often figures are collected and shipped.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Longest wait for ingest to acknowledge one batch.
    #[serde(with = "humantime_serde")]
    pub push_timeout: Duration,
    /// Cluster name put on every record (empty on a plain host).
    pub cluster: String,
    /// This machine's name; default: the kernel hostname.
    pub node: String,
    /// Where procfs is mounted (`/host/proc` in a container).
    pub proc_root: PathBuf,
    /// Where sysfs is mounted (`/host/sys` in a container); cgroups are
    /// read from `<sys_root>/fs/cgroup`.
    pub sys_root: PathBuf,
    /// Most processes reported per interval, busiest first.
    pub max_processes: usize,
    /// Where batches wait until ingest acknowledges them (survives ingest
    /// outages and agent restarts). Default: `/var/lib/vigil/agent-spool`;
    /// `vigil up` uses `<data_dir>/agent-spool`.
    pub spool_dir: Option<PathBuf>,
    /// Bound on the spool's size on disk; beyond it the oldest batches are
    /// dropped (and counted in `vigil_agent_batches_dropped_total`).
    pub max_spool_bytes: u64,
    /// Load the eBPF collectors (TCP, L7). Off: /proc and cgroups only.
    pub ebpf: bool,
    /// Logs of containers and files.
    pub logs: crate::logs::LogsConfig,
    /// CPU profiles (eBPF).
    pub profiling: ProfilingConfig,
    /// Health and metrics; default 127.0.0.1:7400.
    pub http: HttpServerConfig,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("ingest_endpoint", &self.ingest_endpoint)
            .field("api_key", &"[redacted]")
            .field("api_key_file", &self.api_key_file)
            .field("interval", &self.interval)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            ingest_endpoint: "127.0.0.1:4317".into(),
            api_key: String::new(),
            api_key_file: None,
            interval: Duration::from_secs(10),
            push_timeout: Duration::from_secs(10),
            cluster: String::new(),
            node: String::new(),
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            max_processes: 200,
            spool_dir: None,
            max_spool_bytes: 256 << 20,
            ebpf: true,
            logs: crate::logs::LogsConfig::default(),
            profiling: ProfilingConfig::default(),
            http: HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7400))),
        }
    }
}

/// `[agent.profiling]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilingConfig {
    pub enabled: bool,
    /// Samples are aggregated over this long before they are shipped.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for ProfilingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(60),
        }
    }
}

impl Validate for AgentConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.ingest_endpoint.is_empty() {
            return Err(ConfigError::invalid(
                key(prefix, "ingest_endpoint"),
                "must not be empty",
            ));
        }
        if self.interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                key(prefix, "interval"),
                "must be at least 100ms",
            ));
        }
        nonzero_duration(prefix, "push_timeout", self.push_timeout)?;
        positive(prefix, "max_processes", self.max_processes)?;
        positive(
            &key(prefix, "logs"),
            "max_records_per_source",
            self.logs.max_records_per_source,
        )?;
        positive(
            &key(prefix, "logs"),
            "max_patterns_per_source",
            self.logs.max_patterns_per_source,
        )?;
        if self.logs.max_bytes_per_file < 4096 {
            return Err(ConfigError::invalid(
                key(&key(prefix, "logs"), "max_bytes_per_file"),
                "must be at least 4096",
            ));
        }
        if self.profiling.window < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                key(&key(prefix, "profiling"), "window"),
                "must be at least 1s",
            ));
        }
        if self.max_spool_bytes < 1 << 20 {
            return Err(ConfigError::invalid(
                key(prefix, "max_spool_bytes"),
                "must be at least 1 MiB (1048576)",
            ));
        }
        self.http.validate(&key(prefix, "http"))
    }
}

impl AgentConfig {
    /// The spool directory in effect.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/vigil/agent-spool"))
    }

    /// The API key, from `api_key` or `api_key_file`.
    pub fn resolve_api_key(&self) -> Result<String, ConfigError> {
        vigil_runtime::auth::resolve_api_key(
            "agent.api_key",
            &self.api_key,
            self.api_key_file.as_deref(),
        )
    }
}
