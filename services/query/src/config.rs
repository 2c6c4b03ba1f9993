use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;
use vigil_runtime::config::{
    ConfigError, GrpcServerConfig, HttpServerConfig, Validate, key, nonzero_duration, positive,
};

/// `[query]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// gRPC API; default 127.0.0.1:7410.
    pub grpc: GrpcServerConfig,
    /// Health and metrics (and the Prometheus-compatible API); default 127.0.0.1:7411.
    pub http: HttpServerConfig,
    /// How far back a host or process counts as present.
    #[serde(with = "humantime_serde")]
    pub default_lookback: Duration,
    /// Longest time range one query may span.
    #[serde(with = "humantime_serde")]
    pub max_range: Duration,
    /// Most series one query may read or return.
    pub max_series: usize,
    /// Most series one figure of the application views (applications, the
    /// service map, the inspections' InspectApplications) may read: they
    /// read every application's series at once (a latency histogram alone
    /// is 12 series per process and peer).
    pub max_application_series: usize,
    /// Most samples one PromQL query may read plus produce.
    pub max_samples: usize,
    /// Most steps of one range query (Prometheus: 11 000).
    pub max_steps: usize,
    /// How far back an instant selector looks for a sample.
    #[serde(with = "humantime_serde")]
    pub lookback_delta: Duration,
    /// Step of a subquery that names none.
    #[serde(with = "humantime_serde")]
    pub subquery_step: Duration,
    /// Service level objectives of applications.
    pub slo: SloConfig,
    /// Most log records one search returns, and most a pattern summary reads.
    pub max_log_records: usize,
    pub max_pattern_scan: usize,
    /// Most spans one trace search returns.
    pub max_spans: usize,
    /// Requests per second each project may make (gRPC and HTTP together),
    /// and how many at once; over it: 429 / RESOURCE_EXHAUSTED.
    pub rate_per_project: u32,
    pub burst_per_project: u32,
}

/// `[query.slo]`: objectives every application gets, and per-application
/// overrides (`[[query.slo.overrides]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloConfig {
    pub availability_percent: f64,
    pub latency_percent: f64,
    #[serde(with = "humantime_serde")]
    pub latency_threshold: Duration,
    pub overrides: Vec<SloOverride>,
}

impl Default for SloConfig {
    fn default() -> Self {
        let d = SloObjectives::default();
        Self {
            availability_percent: d.availability_percent,
            latency_percent: d.latency_percent,
            latency_threshold: d.latency_threshold,
            overrides: Vec::new(),
        }
    }
}

/// An availability objective (share of requests without errors) and a
/// latency objective (share of requests faster than a threshold).
#[derive(Debug, Clone, Copy)]
pub struct SloObjectives {
    pub availability_percent: f64,
    pub latency_percent: f64,
    pub latency_threshold: Duration,
}

impl Default for SloObjectives {
    fn default() -> Self {
        Self {
            availability_percent: 99.0,
            latency_percent: 99.0,
            latency_threshold: Duration::from_millis(500),
        }
    }
}

/// Objectives for one application; unset ones are the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloOverride {
    pub application: String,
    pub availability_percent: Option<f64>,
    pub latency_percent: Option<f64>,
    #[serde(with = "humantime_serde::option")]
    pub latency_threshold: Option<Duration>,
}

impl SloConfig {
    pub fn for_application(&self, application: &str) -> SloObjectives {
        let mut objectives = SloObjectives {
            availability_percent: self.availability_percent,
            latency_percent: self.latency_percent,
            latency_threshold: self.latency_threshold,
        };
        if let Some(o) = self.overrides.iter().find(|o| o.application == application) {
            objectives.availability_percent = o
                .availability_percent
                .unwrap_or(objectives.availability_percent);
            objectives.latency_percent = o.latency_percent.unwrap_or(objectives.latency_percent);
            objectives.latency_threshold =
                o.latency_threshold.unwrap_or(objectives.latency_threshold);
        }
        objectives
    }

    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let check = |field: String, v: f64| {
            if v > 0.0 && v < 100.0 {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    field,
                    format!("{v} is not a percentage between 0 and 100 (exclusive)"),
                ))
            }
        };
        check(
            key(prefix, "availability_percent"),
            self.availability_percent,
        )?;
        check(key(prefix, "latency_percent"), self.latency_percent)?;
        nonzero_duration(prefix, "latency_threshold", self.latency_threshold)?;
        for (i, o) in self.overrides.iter().enumerate() {
            let p = format!("{prefix}.overrides[{i}]");
            if o.application.is_empty() {
                return Err(ConfigError::invalid(
                    key(&p, "application"),
                    "must name an application",
                ));
            }
            if let Some(v) = o.availability_percent {
                check(key(&p, "availability_percent"), v)?;
            }
            if let Some(v) = o.latency_percent {
                check(key(&p, "latency_percent"), v)?;
            }
        }
        Ok(())
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            grpc: GrpcServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7410))),
            http: HttpServerConfig::on(SocketAddr::from(([127, 0, 0, 1], 7411))),
            default_lookback: Duration::from_secs(300),
            max_range: Duration::from_secs(31 * 24 * 3600),
            max_series: 10_000,
            max_application_series: 500_000,
            max_samples: 50_000_000,
            max_steps: 11_000,
            lookback_delta: Duration::from_secs(300),
            subquery_step: Duration::from_secs(60),
            slo: SloConfig::default(),
            max_log_records: 1000,
            max_pattern_scan: 10_000,
            max_spans: 1000,
            rate_per_project: 100,
            burst_per_project: 200,
        }
    }
}

impl Validate for QueryConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.grpc.validate(&key(prefix, "grpc"))?;
        self.http.validate(&key(prefix, "http"))?;
        nonzero_duration(prefix, "default_lookback", self.default_lookback)?;
        nonzero_duration(prefix, "max_range", self.max_range)?;
        positive(prefix, "max_series", self.max_series)?;
        positive(
            prefix,
            "max_application_series",
            self.max_application_series,
        )?;
        positive(prefix, "max_samples", self.max_samples)?;
        positive(prefix, "max_steps", self.max_steps)?;
        nonzero_duration(prefix, "lookback_delta", self.lookback_delta)?;
        nonzero_duration(prefix, "subquery_step", self.subquery_step)?;
        positive(prefix, "max_log_records", self.max_log_records)?;
        positive(prefix, "max_pattern_scan", self.max_pattern_scan)?;
        positive(prefix, "max_spans", self.max_spans)?;
        positive(prefix, "rate_per_project", self.rate_per_project as usize)?;
        positive(prefix, "burst_per_project", self.burst_per_project as usize)?;
        self.slo.validate(&key(prefix, "slo"))
    }
}

impl QueryConfig {
    /// The PromQL limits this configuration sets.
    pub fn limits(&self) -> crate::promql::Limits {
        use vigil_runtime::time::millis;
        crate::promql::Limits {
            max_series: self.max_series,
            max_samples: self.max_samples,
            max_steps: self.max_steps,
            max_range_ms: millis(self.max_range),
            lookback_ms: millis(self.lookback_delta),
            subquery_step_ms: millis(self.subquery_step),
        }
    }
}
