use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use vigil_notify::IntegrationConfig;
use vigil_runtime::{
    auth::{Secret, is_valid_project_name},
    config::{ConfigError, GrpcServerConfig, HttpServerConfig, Validate, key},
};

use crate::catalog::{self, Inspection};

/// `[alerting]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// gRPC API (incidents, inspection status, integrations); default 127.0.0.1:7420.
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
    pub api_key_file: Option<PathBuf>,
    /// How often inspections run.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Incidents and the notification outbox; default `<data_dir>/alerting.redb`.
    pub state_path: Option<PathBuf>,
    /// The UI's public address, for links in notifications (optional).
    pub ui_url: Option<String>,
    /// Resolved incidents are deleted after this long.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// `[alerting.inspections.<id>]`: defaults for every application.
    pub inspections: BTreeMap<String, InspectionSettings>,
    /// `[[alerting.overrides]]`: settings for matching projects,
    /// applications or nodes; later entries win.
    pub overrides: Vec<Override>,
    /// `[[alerting.integrations]]`: where notifications go.
    pub integrations: Vec<IntegrationConfig>,
    /// `[alerting.lease]`: leader election among replicas (Kubernetes).
    pub lease: Option<crate::leader::LeaseConfig>,
}

/// The longest `for` and `keep_firing_for`.
const MAX_HOLD: Duration = Duration::from_secs(30 * 86_400);

/// Any subset of an inspection's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectionSettings {
    pub enabled: Option<bool>,
    pub threshold: Option<f64>,
    pub critical: Option<f64>,
    #[serde(rename = "for", with = "humantime_serde")]
    pub for_: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub keep_firing_for: Option<Duration>,
}

/// `[[alerting.overrides]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Globs; an absent one matches everything.
    pub project: Option<String>,
    pub application: Option<String>,
    pub node: Option<String>,
    /// The inspection's id, or a glob over ids (`"*"`, `"slo_*"`).
    pub inspection: String,
    pub enabled: Option<bool>,
    pub threshold: Option<f64>,
    pub critical: Option<f64>,
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub keep_firing_for: Option<Duration>,
}

impl Override {
    fn settings(&self) -> InspectionSettings {
        InspectionSettings {
            enabled: self.enabled,
            threshold: self.threshold,
            critical: self.critical,
            for_: self.for_,
            keep_firing_for: self.keep_firing_for,
        }
    }
}

/// An inspection's settings for one subject, after defaults and overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    pub enabled: bool,
    pub threshold: f64,
    pub critical: Option<f64>,
    pub for_: Duration,
    pub keep_firing_for: Duration,
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
            ui_url: None,
            retention: Duration::from_secs(90 * 86_400),
            inspections: BTreeMap::new(),
            overrides: Vec::new(),
            integrations: Vec::new(),
            lease: None,
        }
    }
}

impl InspectionSettings {
    fn apply(&self, e: &mut Effective) {
        if let Some(v) = self.enabled {
            e.enabled = v;
        }
        if let Some(v) = self.threshold {
            e.threshold = v;
        }
        if let Some(v) = self.critical {
            e.critical = Some(v);
        }
        if let Some(v) = self.for_ {
            e.for_ = v;
        }
        if let Some(v) = self.keep_firing_for {
            e.keep_firing_for = v;
        }
    }

    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (field, d) in [
            ("for", self.for_),
            ("keep_firing_for", self.keep_firing_for),
        ] {
            if d.is_some_and(|d| d > MAX_HOLD) {
                return Err(ConfigError::invalid(
                    key(prefix, field),
                    "must be at most 30 days",
                ));
            }
        }
        for (field, v) in [("threshold", self.threshold), ("critical", self.critical)] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(ConfigError::invalid(
                    key(prefix, field),
                    "must be a number of at least 0",
                ));
            }
        }
        Ok(())
    }
}

fn glob(prefix: &str, field: &str, pattern: &str) -> Result<globset::GlobMatcher, ConfigError> {
    globset::Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| ConfigError::invalid(key(prefix, field), e.to_string()))
}

/// Overrides with their globs compiled, for the worker's hot path.
#[derive(Debug, Clone)]
pub struct Settings {
    project: String,
    defaults: BTreeMap<String, InspectionSettings>,
    overrides: Vec<CompiledOverride>,
}

#[derive(Debug, Clone)]
struct CompiledOverride {
    project: Option<globset::GlobMatcher>,
    application: Option<globset::GlobMatcher>,
    node: Option<globset::GlobMatcher>,
    inspection: globset::GlobMatcher,
    settings: InspectionSettings,
}

impl Settings {
    pub fn new(config: &AlertingConfig) -> Result<Self, ConfigError> {
        let mut overrides = Vec::new();
        for (i, o) in config.overrides.iter().enumerate() {
            let p = format!("alerting.overrides[{i}]");
            let optional = |field: &str, v: &Option<String>| {
                v.as_deref()
                    .map(|pattern| glob(&p, field, pattern))
                    .transpose()
            };
            let inspection = glob(&p, "inspection", &o.inspection)?;
            if !catalog::INSPECTIONS
                .iter()
                .any(|i| inspection.is_match(i.id))
            {
                return Err(ConfigError::invalid(
                    key(&p, "inspection"),
                    format!(
                        "{:?} matches no inspection (see docs/inspections.md)",
                        o.inspection
                    ),
                ));
            }
            let settings = o.settings();
            settings.validate(&p)?;
            overrides.push(CompiledOverride {
                project: optional("project", &o.project)?,
                application: optional("application", &o.application)?,
                node: optional("node", &o.node)?,
                inspection,
                settings,
            });
        }
        Ok(Self {
            project: config.project.clone(),
            defaults: config.inspections.clone(),
            overrides,
        })
    }

    /// The settings of `inspection` for an application or a node.
    pub fn effective(
        &self,
        inspection: &Inspection,
        application: Option<&str>,
        node: Option<&str>,
    ) -> Effective {
        let mut e = Effective {
            enabled: true,
            threshold: inspection.threshold,
            critical: inspection.critical,
            for_: inspection.for_,
            keep_firing_for: inspection.keep_firing_for,
        };
        if let Some(d) = self.defaults.get(inspection.id) {
            d.apply(&mut e);
        }
        for o in &self.overrides {
            let matches = |glob: &Option<globset::GlobMatcher>, v: Option<&str>| match glob {
                None => true,
                Some(g) => v.is_some_and(|v| g.is_match(v)),
            };
            if o.inspection.is_match(inspection.id)
                && matches(&o.project, Some(&self.project))
                && matches(&o.application, application)
                && matches(&o.node, node)
            {
                o.settings.apply(&mut e);
            }
        }
        e
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
        if self.retention < Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                key(prefix, "retention"),
                "must be at least 1h",
            ));
        }
        if self.interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                key(prefix, "interval"),
                "must be at least 100ms",
            ));
        }
        for (id, settings) in &self.inspections {
            let p = key(prefix, &format!("inspections.{id}"));
            if catalog::find(id).is_none() {
                return Err(ConfigError::invalid(
                    p,
                    "no such inspection (see docs/inspections.md)",
                ));
            }
            settings.validate(&p)?;
        }
        Settings::new(self)?;
        if let Some(lease) = &self.lease {
            lease.validate(&key(prefix, "lease"))?;
        }
        vigil_notify::validate_all(&key(prefix, "integrations"), &self.integrations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> AlertingConfig {
        let value: toml::Value = toml::from_str(toml).expect("TOML");
        value.try_into().expect("config")
    }

    #[test]
    fn glob_overrides_change_only_what_they_match() {
        let c = config(
            r#"
            [inspections.container_cpu]
            threshold = 85
            [[overrides]]
            application = "batch-*"
            inspection = "container_cpu"
            threshold = 99
            [[overrides]]
            application = "batch-nightly"
            inspection = "*"
            enabled = false
            [[overrides]]
            node = "db-?"
            inspection = "disk_*"
            threshold = 95
            for = "10m"
            [[overrides]]
            project = "other"
            inspection = "container_cpu"
            threshold = 1
            "#,
        );
        c.validate("alerting").expect("valid");
        let s = Settings::new(&c).expect("settings");
        let cpu = catalog::find(catalog::CONTAINER_CPU).expect("known");
        let disk = catalog::find(catalog::DISK_SPACE).expect("known");
        assert_eq!(
            s.effective(cpu, Some("orders"), None).threshold,
            85.0,
            "the default changed"
        );
        assert_eq!(
            s.effective(cpu, Some("batch-hourly"), None).threshold,
            99.0,
            "the glob matched"
        );
        assert!(s.effective(cpu, Some("batch-hourly"), None).enabled);
        assert!(
            !s.effective(cpu, Some("batch-nightly"), None).enabled,
            "the later override wins"
        );
        assert_eq!(s.effective(disk, None, Some("db-1")).threshold, 95.0);
        assert_eq!(
            s.effective(disk, None, Some("db-1")).for_,
            Duration::from_secs(600)
        );
        assert_eq!(
            s.effective(disk, None, Some("db-10")).threshold,
            80.0,
            "? is one character"
        );
        assert_eq!(s.effective(disk, None, Some("web-1")).threshold, 80.0);
        assert_eq!(
            s.effective(cpu, Some("batch-x"), None).critical,
            Some(95.0),
            "untouched settings stay"
        );
    }

    #[test]
    fn bad_overrides_are_refused_naming_the_key() {
        for (toml, wanted) in [
            (
                "[[overrides]]\ninspection = \"nope\"\nenabled = false",
                "alerting.overrides[0].inspection",
            ),
            (
                "[[overrides]]\ninspection = \"slo_*\"\napplication = \"[\"\nenabled = false",
                "alerting.overrides[0].application",
            ),
            (
                "[[overrides]]\ninspection = \"node_cpu\"\nthreshold = -1",
                "alerting.overrides[0].threshold",
            ),
            (
                "[[overrides]]\ninspection = \"node_cpu\"\nfor = \"100y\"",
                "alerting.overrides[0].for",
            ),
            (
                "[inspections.nope]\nenabled = false",
                "alerting.inspections.nope",
            ),
        ] {
            let err = config(toml)
                .validate("alerting")
                .expect_err(toml)
                .to_string();
            assert!(err.contains(wanted), "{toml}: {err}");
        }
    }
}
