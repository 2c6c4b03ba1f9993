use std::{collections::HashSet, net::SocketAddr, path::PathBuf, sync::OnceLock, time::Duration};

use crate::schedule::Schedule;

use crate::probe::ProbeConfig;
use serde::Deserialize;
use vigil_runtime::{
    auth::{Secret, resolve_api_key},
    config::{ConfigError, GrpcServerConfig, HttpServerConfig, Validate, key, nonzero_duration},
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
    /// This monitor's public address (`https://hb.example.com`), for the
    /// `ping_url`, `badge_url` and `update_url` the check API returns;
    /// default: the address a request came to.
    pub public_url: Option<String>,
    /// Read-write key of the management API (healthchecks.io API v3 and
    /// gRPC); without one, checks can only be declared here.
    pub api_key: Secret,
    pub api_key_file: Option<PathBuf>,
    /// Read-only key: lists checks without their ping addresses.
    pub read_only_api_key: Secret,
    pub read_only_api_key_file: Option<PathBuf>,
    /// Key of slug ping addresses, `/ping/<ping_key>/<slug>`; without one,
    /// only uuid addresses answer.
    pub ping_key: Secret,
    pub ping_key_file: Option<PathBuf>,
    /// Bytes of a ping's body kept; the rest is cut and the ping flagged.
    pub ping_body_limit: usize,
    /// Pings kept per check (the newest).
    pub pings_kept: usize,
    /// Most checks the API may create (declared and probe checks count).
    pub max_checks: usize,
    /// Pings waiting to be stored; more are answered 503.
    pub ping_queue: usize,
    /// External probes of public endpoints.
    pub probes: Vec<ProbeConfig>,
}

/// `[[heartbeat.checks]]`: a job or cluster expected to ping every
/// `period`, or on a cron `schedule` in time zone `tz`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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
    /// Space-separated tags.
    #[serde(default)]
    pub tags: String,
    /// A description.
    #[serde(default)]
    pub desc: String,
    /// A paused check stays paused when pinged, until resumed.
    #[serde(default)]
    pub manual_resume: bool,
    /// "POST": only POST pings count, others are kept but ignored.
    #[serde(default)]
    pub methods: String,
    /// The schedule, parsed once.
    #[serde(skip)]
    parsed: OnceLock<Result<Schedule, String>>,
}

/// Longest period and grace.
const MAX_SPAN: Duration = Duration::from_secs(365 * 86_400);

fn utc() -> String {
    "UTC".into()
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            // Ping bodies up to http.max_body_bytes (1 MiB) are read, all
            // but ping_body_limit dropped as they come; raise it for jobs
            // that pipe more output in.
            http: HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7490))),
            grpc: GrpcServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7491))),
            state_path: None,
            evaluate_every: Duration::from_secs(1),
            checks: Vec::new(),
            integrations: Vec::new(),
            project: "default".into(),
            ui_url: None,
            public_url: None,
            api_key: Secret::default(),
            api_key_file: None,
            read_only_api_key: Secret::default(),
            read_only_api_key_file: None,
            ping_key: Secret::default(),
            ping_key_file: None,
            ping_body_limit: 10_000,
            pings_kept: 100,
            max_checks: 100_000,
            ping_queue: 65_536,
            probes: Vec::new(),
        }
    }
}

/// The keys of a monitor, read from its configuration and files.
#[derive(Clone, Default)]
pub struct Keys {
    pub read_write: Option<String>,
    pub read_only: Option<String>,
    pub ping: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |k: &Option<String>| if k.is_some() { "[redacted]" } else { "[unset]" };
        f.debug_struct("Keys")
            .field("read_write", &set(&self.read_write))
            .field("read_only", &set(&self.read_only))
            .field("ping", &set(&self.ping))
            .finish()
    }
}

impl HeartbeatConfig {
    /// The API and ping keys; an unset key is None.
    pub fn keys(&self) -> Result<Keys, ConfigError> {
        let one = |field: &str, inline: &Secret, file: &Option<PathBuf>| {
            if inline.0.is_empty() && file.is_none() {
                return Ok(None);
            }
            let field = format!("heartbeat.{field}");
            let k = resolve_api_key(&field, &inline.0, file.as_deref())?;
            if k.len() < 16 {
                return Err(ConfigError::invalid(
                    field,
                    "a key needs at least 16 characters",
                ));
            }
            Ok(Some(k))
        };
        let keys = Keys {
            read_write: one("api_key", &self.api_key, &self.api_key_file)?,
            read_only: one(
                "read_only_api_key",
                &self.read_only_api_key,
                &self.read_only_api_key_file,
            )?,
            ping: one("ping_key", &self.ping_key, &self.ping_key_file)?,
        };
        if keys.read_write.is_some() && keys.read_write == keys.read_only {
            return Err(ConfigError::invalid(
                "heartbeat.read_only_api_key",
                "must differ from api_key",
            ));
        }
        Ok(keys)
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
            tags: String::new(),
            desc: String::new(),
            manual_resume: false,
            methods: String::new(),
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

    /// The check after a change: its schedule parsed again and its fields
    /// checked; the message names the problem.
    pub fn revalidated(mut self) -> Result<Self, String> {
        self.parsed = OnceLock::new();
        // Checks made through the API may be nameless (healthchecks.io's
        // are); declared ones need a name.
        let named = if self.name.trim().is_empty() {
            Self {
                name: "unnamed".into(),
                ..self.clone()
            }
        } else {
            self.clone()
        };
        named.validate("check").map_err(|e| e.to_string())?;
        Ok(self)
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
        let too_long = |field: &str, value: &str, max: usize| {
            if value.chars().count() > max {
                Err(ConfigError::invalid(
                    key(prefix, field),
                    format!("is too long (at most {max} characters)"),
                ))
            } else {
                Ok(())
            }
        };
        too_long("name", &self.name, 100)?;
        too_long("slug", &self.slug, 100)?;
        too_long("tags", &self.tags, 500)?;
        too_long("desc", &self.desc, 10_000)?;
        if !self
            .slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                key(prefix, "slug"),
                "may hold only a-z, 0-9, - and _",
            ));
        }
        if !(self.methods.is_empty() || self.methods == "POST") {
            return Err(ConfigError::invalid(
                key(prefix, "methods"),
                "must be \"\" (any method) or \"POST\"",
            ));
        }
        if self.grace > MAX_SPAN || self.period.is_some_and(|p| p > MAX_SPAN) {
            return Err(ConfigError::invalid(
                key(prefix, "grace"),
                "period and grace are at most 365 days",
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
        self.probes.validate(&key(prefix, "probes"))?;
        self.keys()?;
        if let Some(u) = &self.public_url {
            let parsed = url::Url::parse(u)
                .map_err(|e| ConfigError::invalid(key(prefix, "public_url"), e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    key(prefix, "public_url"),
                    "must be an http:// or https:// address",
                ));
            }
        }
        if self.ping_body_limit > self.http.max_body_bytes {
            return Err(ConfigError::invalid(
                key(prefix, "ping_body_limit"),
                format!(
                    "must not exceed http.max_body_bytes ({})",
                    self.http.max_body_bytes
                ),
            ));
        }
        if !(1..=1000).contains(&self.pings_kept) {
            return Err(ConfigError::invalid(
                key(prefix, "pings_kept"),
                "must be 1 to 1000",
            ));
        }
        if self.max_checks == 0 || self.ping_queue == 0 {
            return Err(ConfigError::invalid(
                key(prefix, "max_checks"),
                "max_checks and ping_queue must be positive",
            ));
        }
        vigil_notify::validate_all(&key(prefix, "integrations"), &self.integrations)?;
        let mut uuids = HashSet::new();
        let mut slugs = HashSet::new();
        let probes: Vec<CheckConfig> = self.probes.iter().map(ProbeConfig::check).collect();
        let n = self.checks.len();
        for (i, check) in self.checks.iter().chain(&probes).enumerate() {
            let at = if i < n {
                format!("{prefix}.checks[{i}]")
            } else {
                format!("{prefix}.probes[{}]", i - n)
            };
            let canonical = uuid::Uuid::parse_str(&check.uuid)
                .map_or_else(|_| check.uuid.to_ascii_lowercase(), |u| u.to_string());
            if !uuids.insert(canonical) {
                return Err(ConfigError::invalid(
                    format!("{at}.uuid"),
                    "another check has the same uuid",
                ));
            }
            if !slugs.insert(check.slug()) {
                return Err(ConfigError::invalid(
                    format!("{at}.slug"),
                    "another check has the same slug",
                ));
            }
        }
        Ok(())
    }
}
