use std::{collections::HashSet, net::SocketAddr, path::PathBuf, sync::OnceLock, time::Duration};

use crate::schedule::Schedule;

use serde::Deserialize;
use vigil_runtime::config::{
    ConfigError, GrpcServerConfig, HttpServerConfig, Validate, key, nonzero_duration,
};

/// `[heartbeat]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// Ping API, check API, health and metrics; default 127.0.0.1:7490.
    pub http: HttpServerConfig,
    /// gRPC API; default 127.0.0.1:7491.
    pub grpc: GrpcServerConfig,
    /// Pings are kept here; default `<data_dir>/heartbeat.redb`.
    pub state_path: Option<PathBuf>,
    /// How often statuses are re-evaluated to notice checks going late or down.
    #[serde(with = "humantime_serde")]
    pub evaluate_every: Duration,
    /// The checks, declared in configuration.
    pub checks: Vec<CheckConfig>,
    /// Where down and up flips are announced (Slack, PagerDuty, Teams,
    /// Opsgenie, email, webhook; see docs/notifications.md), category
    /// `heartbeat`.
    pub integrations: Vec<vigil_notify::IntegrationConfig>,
    /// The project named in notifications.
    pub project: String,
    /// The UI's address, for links in notifications.
    pub ui_url: Option<String>,
}

/// `[[heartbeat.checks]]`: a job or cluster expected to ping every
/// `period`, or on a cron `schedule` in time zone `tz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub name: String,
    /// Short name for URLs and listings; default: derived from `name`.
    #[serde(default)]
    pub slug: String,
    /// The ping address is `/ping/<uuid>`.
    pub uuid: String,
    /// Simple schedule: a ping is due this long after the last one.
    #[serde(with = "humantime_serde::option", default)]
    pub period: Option<Duration>,
    /// Cron schedule: 5 fields (`0 2 * * *`), pings due at each fire time.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The IANA time zone the cron schedule is read in.
    #[serde(default = "utc")]
    pub tz: String,
    /// Extra time after the due time before the check is down.
    #[serde(with = "humantime_serde", default)]
    pub grace: Duration,
    /// The schedule, parsed once.
    #[serde(skip)]
    parsed: OnceLock<Result<Schedule, String>>,
}

fn utc() -> String {
    "UTC".into()
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            http: HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7490))),
            grpc: GrpcServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7491))),
            state_path: None,
            evaluate_every: Duration::from_secs(1),
            checks: Vec::new(),
            integrations: Vec::new(),
            project: "default".into(),
            ui_url: None,
        }
    }
}

impl CheckConfig {
    /// A check due every `period`.
    pub fn every(name: &str, uuid: &str, period: Duration, grace: Duration) -> Self {
        Self {
            name: name.into(),
            slug: String::new(),
            uuid: uuid.into(),
            period: Some(period),
            schedule: None,
            tz: utc(),
            grace,
            parsed: OnceLock::new(),
        }
    }

    /// The check's schedule: exactly one of `period` and `schedule`.
    pub fn parsed_schedule(&self) -> Result<&Schedule, String> {
        self.parsed
            .get_or_init(|| match (&self.period, &self.schedule) {
                (Some(p), None) if *p >= Duration::from_secs(1) => Ok(Schedule::Every(*p)),
                (Some(_), None) => Err("period must be at least 1s".into()),
                (None, Some(expr)) => Schedule::cron(expr, &self.tz),
                (Some(_), Some(_)) => Err("set period or schedule, not both".into()),
                (None, None) => {
                    Err("set period (e.g. \"1d\") or schedule (e.g. \"0 2 * * *\")".into())
                }
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn slug(&self) -> String {
        if !self.slug.is_empty() {
            return self.slug.clone();
        }
        let mut slug = String::new();
        for c in self.name.chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c.to_ascii_lowercase());
            } else if !slug.ends_with('-') {
                slug.push('-');
            }
        }
        slug.trim_matches('-').to_owned()
    }
}

impl Validate for CheckConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                key(prefix, "name"),
                "must not be empty",
            ));
        }
        if uuid::Uuid::parse_str(&self.uuid).is_err() {
            return Err(ConfigError::invalid(
                key(prefix, "uuid"),
                format!("{:?} is not a UUID", self.uuid),
            ));
        }
        if let Err(e) = self.parsed_schedule() {
            let field = if self.schedule.is_some() && self.period.is_none() {
                "schedule"
            } else {
                "period"
            };
            return Err(ConfigError::invalid(key(prefix, field), e));
        }
        Ok(())
    }
}

impl Validate for HeartbeatConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.http.validate(&key(prefix, "http"))?;
        self.grpc.validate(&key(prefix, "grpc"))?;
        nonzero_duration(prefix, "evaluate_every", self.evaluate_every)?;
        self.checks.validate(&key(prefix, "checks"))?;
        vigil_notify::validate_all(&key(prefix, "integrations"), &self.integrations)?;
        let mut uuids = HashSet::new();
        let mut slugs = HashSet::new();
        for (i, check) in self.checks.iter().enumerate() {
            if !uuids.insert(check.uuid.to_ascii_lowercase()) {
                return Err(ConfigError::invalid(
                    format!("{prefix}.checks[{i}].uuid"),
                    "another check has the same uuid",
                ));
            }
            if !slugs.insert(check.slug()) {
                return Err(ConfigError::invalid(
                    format!("{prefix}.checks[{i}].slug"),
                    "another check has the same slug",
                ));
            }
        }
        Ok(())
    }
}
