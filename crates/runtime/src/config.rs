//! Layered, typed configuration shared by every Vigil binary.
//!
//! One schema for all of Vigil: a single file (TOML or YAML) can configure a
//! whole deployment, each binary reading the sections it needs. Layers, later
//! ones winning: built-in defaults → the `--config` file → environment
//! variables `VIGIL_<SECTION>__<KEY>` (`__` nests, e.g.
//! `VIGIL_INGEST__GRPC__LISTEN=0.0.0.0:4317`). A key Vigil does not know, or a
//! value of the wrong shape, stops start-up with a message naming the key.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, de::DeserializeOwned};

/// Every top-level key of Vigil's configuration. A key outside this list is
/// refused, whichever binary reads the file.
pub const SECTIONS: &[&str] = &[
    "data_dir",
    "log",
    "storage",
    "projects",
    "access",
    "agent",
    "cluster_agent",
    "ingest",
    "query",
    "alerting",
    "ui_gateway",
    "heartbeat",
];

/// The environment prefix: `VIGIL_INGEST__GRPC__LISTEN` sets `ingest.grpc.listen`.
pub const ENV_PREFIX: &str = "VIGIL";

/// Why configuration could not be loaded. Every variant names the key (or the
/// file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "unknown configuration key `{key}` (from {origin}); known top-level keys: {}",
        SECTIONS.join(", ")
    )]
    UnknownSection { key: String, origin: String },
    #[error("invalid configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// A value that parsed but is not acceptable, e.g. a threshold above 100.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Checks that go beyond the shape of the values. `prefix` is the key of the
/// section, so that errors can name the full key.
pub trait Validate {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError>;
}

/// Joins a section key and a field name: `key("ingest.grpc", "listen")`.
pub fn key(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// The merged configuration layers, from which each binary takes its sections.
#[derive(Debug, Clone)]
pub struct ConfigLoader {
    root: config::Config,
}

impl ConfigLoader {
    /// Loads `file` (if any) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Loads `file` (if any) and the given environment (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        let mut file_keys = Vec::new();
        if let Some(path) = file {
            let file_err = |message: String| ConfigError::File {
                path: path.to_owned(),
                message,
            };
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => config::FileFormat::Toml,
                Some("yaml" | "yml") => config::FileFormat::Yaml,
                _ => {
                    return Err(file_err(
                        "unknown format: the name must end in .toml, .yaml or .yml".into(),
                    ));
                }
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
            let parsed = config::Config::builder()
                .add_source(config::File::from_str(&text, format))
                .build()
                .map_err(|e| file_err(e.to_string()))?;
            file_keys = top_level_keys(&parsed).map_err(file_err)?;
            builder = builder.add_source(parsed);
        }
        let vars: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}_")))
            .collect();
        let env_source = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(vars));
        let env_only = config::Config::builder()
            .add_source(env_source.clone())
            .build()
            .map_err(|e| ConfigError::invalid("environment", e.to_string()))?;
        let env_keys = top_level_keys(&env_only)
            .map_err(|message| ConfigError::invalid("environment", message))?;
        for (keys, origin) in [
            (
                file_keys,
                file.map_or_else(String::new, |p| p.display().to_string()),
            ),
            (env_keys, "environment".to_owned()),
        ] {
            if let Some(unknown) = keys.into_iter().find(|k| !SECTIONS.contains(&k.as_str())) {
                let origin = if origin == "environment" {
                    format!(
                        "environment variable {ENV_PREFIX}_{}",
                        unknown.to_uppercase()
                    )
                } else {
                    origin
                };
                return Err(ConfigError::UnknownSection {
                    key: unknown,
                    origin,
                });
            }
        }
        let root = builder
            .add_source(env_source)
            .build()
            .map_err(|e| ConfigError::invalid("environment", e.to_string()))?;
        Ok(Self { root })
    }

    /// `data_dir`: where embedded state lives. Default: `$HOME/.local/share/vigil`
    /// (or `./vigil-data` without a home).
    pub fn data_dir(&self) -> Result<PathBuf, ConfigError> {
        let configured: PathBuf = self.section("data_dir")?;
        if !configured.as_os_str().is_empty() {
            return Ok(configured);
        }
        Ok(match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/share/vigil"),
            _ => PathBuf::from("vigil-data"),
        })
    }

    /// Deserializes and validates one top-level section; an absent section
    /// takes its defaults.
    pub fn section<T>(&self, section: &str) -> Result<T, ConfigError>
    where
        T: DeserializeOwned + Default + Validate,
    {
        let value = match self.root.get::<config::Value>(section) {
            Ok(value) => Some(value),
            Err(config::ConfigError::NotFound(_)) => None,
            Err(e) => return Err(ConfigError::invalid(section, e.to_string())),
        };
        let parsed = match value {
            None => T::default(),
            Some(value) => serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
                let path = e.path().to_string();
                let base = if path == "." || path.is_empty() {
                    section.to_owned()
                } else {
                    format!("{section}.{path}")
                };
                let message = e.inner().to_string();
                // serde reports an unknown field at its parent: name it fully.
                let key = match message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                {
                    Some(field) if !base.ends_with(&format!(".{field}")) => {
                        format!("{base}.{field}")
                    }
                    _ => base,
                };
                ConfigError::Invalid { key, message }
            })?,
        };
        parsed.validate(section)?;
        Ok(parsed)
    }
}

fn top_level_keys(config: &config::Config) -> Result<Vec<String>, String> {
    let table: BTreeMap<String, config::Value> = config
        .clone()
        .try_deserialize()
        .map_err(|e| e.to_string())?;
    Ok(table.into_keys().collect())
}

impl Validate for String {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

impl Validate for PathBuf {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

impl<T: Validate> Validate for Vec<T> {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (i, item) in self.iter().enumerate() {
            item.validate(&format!("{prefix}[{i}]"))?;
        }
        Ok(())
    }
}

/// Log output: level filter (`RUST_LOG` syntax, overridden by `RUST_LOG`
/// when set) and format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Plain,
        }
    }
}

impl Validate for LogConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| ConfigError::invalid(key(prefix, "level"), e.to_string()))
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

/// A gRPC server's address and limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcServerConfig {
    pub listen: SocketAddr,
    /// Longest time one call may take before it fails with DEADLINE_EXCEEDED.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Calls served at once across all connections; more are shed with UNAVAILABLE.
    pub concurrency_limit: usize,
    /// Largest request message accepted, in bytes (OUT_OF_RANGE beyond).
    pub max_message_bytes: usize,
}

impl GrpcServerConfig {
    pub fn on(listen: SocketAddr) -> Self {
        Self {
            listen,
            request_timeout: Duration::from_secs(30),
            concurrency_limit: 256,
            max_message_bytes: 8 << 20,
        }
    }
}

impl Default for GrpcServerConfig {
    fn default() -> Self {
        Self::on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

impl Validate for GrpcServerConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        positive(prefix, "concurrency_limit", self.concurrency_limit)?;
        positive(prefix, "max_message_bytes", self.max_message_bytes)?;
        nonzero_duration(prefix, "request_timeout", self.request_timeout)
    }
}

/// An HTTP server's address and limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerConfig {
    pub listen: SocketAddr,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests served at once; more are answered 503.
    pub concurrency_limit: usize,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
}

impl HttpServerConfig {
    pub fn on(listen: SocketAddr) -> Self {
        Self {
            listen,
            request_timeout: Duration::from_secs(30),
            concurrency_limit: 256,
            max_body_bytes: 1 << 20,
        }
    }
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        Self::on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

impl Validate for HttpServerConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        positive(prefix, "concurrency_limit", self.concurrency_limit)?;
        positive(prefix, "max_body_bytes", self.max_body_bytes)?;
        nonzero_duration(prefix, "request_timeout", self.request_timeout)
    }
}

/// Fails with the key named when `value` is zero.
pub fn positive(prefix: &str, field: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key(prefix, field), "must be above 0"));
    }
    Ok(())
}

/// Fails with the key named when `value` is zero.
pub fn nonzero_duration(prefix: &str, field: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(
            key(prefix, field),
            "must be longer than 0s",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        grpc: Option<GrpcServerConfig>,
        name: String,
        threshold: u32,
    }

    impl Validate for Section {
        fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
            if self.threshold > 100 {
                return Err(ConfigError::invalid(
                    key(prefix, "threshold"),
                    "at most 100",
                ));
            }
            if let Some(grpc) = &self.grpc {
                grpc.validate(&key(prefix, "grpc"))?;
            }
            Ok(())
        }
    }

    fn file(ext: &str, text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(&format!(".{ext}"))
            .tempfile()
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let f = file("toml", "[query]\nname = \"from-file\"\nthreshold = 5\n");
        let loader = ConfigLoader::load_with_env(
            Some(f.path()),
            env(&[("VIGIL_QUERY__THRESHOLD", "7"), ("HOME", "/root")]),
        )
        .unwrap();
        let s: Section = loader.section("query").unwrap();
        assert_eq!(s.name, "from-file");
        assert_eq!(s.threshold, 7, "environment wins over the file");
        let absent: Section = loader.section("alerting").unwrap();
        assert_eq!(absent, Section::default());
    }

    #[test]
    fn yaml_and_nested_env() {
        let f = file("yaml", "ingest:\n  grpc:\n    listen: 127.0.0.1:5000\n");
        let loader = ConfigLoader::load_with_env(
            Some(f.path()),
            env(&[("VIGIL_INGEST__GRPC__REQUEST_TIMEOUT", "3s")]),
        )
        .unwrap();
        let s: Section = loader.section("ingest").unwrap();
        let grpc = s.grpc.unwrap();
        assert_eq!(grpc.listen.port(), 5000);
        assert_eq!(grpc.request_timeout, Duration::from_secs(3));
    }

    #[test]
    fn unknown_field_is_named_in_full() {
        let f = file("toml", "[ingest.grpc]\nlisen = \"127.0.0.1:1\"\n");
        let loader = ConfigLoader::load_with_env(Some(f.path()), env(&[])).unwrap();
        let err = loader.section::<Section>("ingest").unwrap_err().to_string();
        assert!(err.contains("`ingest.grpc.lisen`"), "{err}");
    }

    #[test]
    fn unknown_section_in_file_and_env() {
        let f = file("toml", "[ingets]\nx = 1\n");
        let err = ConfigLoader::load_with_env(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ingets`"), "{err}");
        let err = ConfigLoader::load_with_env(None, env(&[("VIGIL_QEURY__X", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("VIGIL_QEURY"), "{err}");
    }

    #[test]
    fn bad_value_and_validation_name_the_key() {
        let loader =
            ConfigLoader::load_with_env(None, env(&[("VIGIL_QUERY__THRESHOLD", "many")])).unwrap();
        let err = loader.section::<Section>("query").unwrap_err().to_string();
        assert!(err.contains("`query.threshold`"), "{err}");
        let loader =
            ConfigLoader::load_with_env(None, env(&[("VIGIL_QUERY__THRESHOLD", "101")])).unwrap();
        let err = loader.section::<Section>("query").unwrap_err().to_string();
        assert!(
            err.contains("`query.threshold`") && err.contains("at most 100"),
            "{err}"
        );
        let loader = ConfigLoader::load_with_env(
            None,
            env(&[("VIGIL_QUERY__GRPC__CONCURRENCY_LIMIT", "0")]),
        )
        .unwrap();
        let err = loader.section::<Section>("query").unwrap_err().to_string();
        assert!(err.contains("`query.grpc.concurrency_limit`"), "{err}");
    }

    #[test]
    fn unreadable_or_unknown_format_file() {
        let err = ConfigLoader::load_with_env(Some(Path::new("/nonexistent/vigil.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/vigil.toml"), "{err}");
        let f = file("ini", "x=1");
        let err = ConfigLoader::load_with_env(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown format"), "{err}");
        let f = file("toml", "[query\n");
        assert!(ConfigLoader::load_with_env(Some(f.path()), env(&[])).is_err());
    }

    #[test]
    fn log_level_is_validated() {
        let loader =
            ConfigLoader::load_with_env(None, env(&[("VIGIL_LOG__LEVEL", "info,[[[")])).unwrap();
        let err = loader.section::<LogConfig>("log").unwrap_err().to_string();
        assert!(err.contains("`log.level`"), "{err}");
    }
}
