//! Applications, their RED figures, SLOs and resources, and the service map,
//! all from what the node agent measures (L7 requests with a latency
//! histogram, TCP connections, listening sockets, container resources).
//!
//! An application is named by the series' `application` label when one is
//! set (Kubernetes, OTLP), else its systemd service, else its container id,
//! else its process name: the agent's rule. Every figure is a PromQL
//! expression over the window, evaluated by the same engine as
//! `/api/v1/query`, then summed per application in Rust.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use vigil_proto::{names, query::v1 as pb};
use vigil_storage::TelemetryStore;

use crate::{
    config::{SloConfig, SloObjectives},
    promql::{self, Element, Labels, Limits, QueryError, bucket_quantile, parse_bound},
};

/// The application a series belongs to, if it names one.
pub fn application_of(labels: &Labels) -> Option<&str> {
    [
        names::LABEL_APPLICATION,
        "systemd_service",
        "container_id",
        names::LABEL_PROCESS,
    ]
    .iter()
    .find_map(|name| labels.get(*name).filter(|v| !v.is_empty()))
    .map(String::as_str)
}

/// Whether a request with this protocol and status failed.
pub fn is_error(protocol: &str, status: &str) -> bool {
    match protocol {
        "http" => status.parse::<u16>().is_ok_and(|code| code >= 500),
        "dns" => matches!(status, "SERVFAIL" | "REFUSED" | "FORMERR" | "NOTIMP"),
        _ => status == "error",
    }
}

/// Requests summed over series: counts, latency and histogram.
#[derive(Debug, Clone, Default)]
pub struct RedSum {
    requests: f64,
    errors: f64,
    seconds: f64,
    /// Cumulative histogram: bound → requests at or under it.
    buckets: BTreeMap<u64, (f64, f64)>,
    by_protocol: BTreeMap<String, f64>,
    by_status: BTreeMap<String, f64>,
}

impl RedSum {
    fn add_requests(&mut self, labels: &Labels, n: f64) {
        let protocol = labels.get(names::LABEL_PROTOCOL).map_or("", String::as_str);
        let status = labels.get(names::LABEL_STATUS).map_or("", String::as_str);
        self.requests += n;
        if is_error(protocol, status) {
            self.errors += n;
        }
        *self.by_protocol.entry(protocol.to_owned()).or_default() += n;
        *self.by_status.entry(status.to_owned()).or_default() += n;
    }

    fn add_bucket(&mut self, labels: &Labels, n: f64) {
        if let Some(bound) = labels.get("le").and_then(|le| parse_bound(le).ok()) {
            // Keyed by the bound's bits: bounds are positive, so bit order is
            // numeric order.
            self.buckets
                .entry(bound.to_bits())
                .or_insert((bound, 0.0))
                .1 += n;
        }
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        let mut buckets: Vec<(f64, f64)> = self.buckets.values().copied().collect();
        let v = bucket_quantile(q, &mut buckets);
        v.is_finite().then_some(v)
    }

    /// Requests at or under `bound` seconds (a histogram bound), and the
    /// histogram's total.
    fn fast(&self, bound: f64) -> Option<(f64, f64)> {
        let total = self.buckets.get(&f64::INFINITY.to_bits())?.1;
        let good = self.buckets.get(&bound.to_bits())?.1;
        Some((good, total))
    }

    fn to_pb(&self, seconds: f64) -> pb::Red {
        let ratio = if self.requests > 0.0 {
            self.errors / self.requests
        } else {
            0.0
        };
        pb::Red {
            requests: self.requests,
            request_rate: self.requests / seconds,
            errors: self.errors,
            error_rate: self.errors / seconds,
            error_ratio: ratio,
            latency_mean_seconds: (self.requests > 0.0).then(|| self.seconds / self.requests),
            latency_p50_seconds: self.quantile(0.5),
            latency_p95_seconds: self.quantile(0.95),
            latency_p99_seconds: self.quantile(0.99),
            requests_by_protocol: self.by_protocol.clone().into_iter().collect(),
            requests_by_status: self.by_status.clone().into_iter().collect(),
            latency_histogram: self
                .buckets
                .values()
                .map(|&(le, count)| pb::HistogramBucket { le, count })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct TcpSum {
    connects: f64,
    failed: f64,
    retransmits: f64,
    connect_seconds: f64,
    active: f64,
}

#[derive(Debug, Clone, Default)]
struct Edge {
    red: RedSum,
    tcp: TcpSum,
    external: bool,
}

#[derive(Debug, Clone, Default)]
struct ResourceSum {
    cpu: Option<f64>,
    cpu_limit: Option<f64>,
    throttled: Option<f64>,
    rss: Option<f64>,
    memory_limit: Option<f64>,
    oom_kills: f64,
    restarts: f64,
    rss_growth: Option<f64>,
    cpu_pressure: Option<f64>,
    memory_pressure: Option<f64>,
    io_pressure: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct LogSum {
    messages: f64,
    errors: f64,
    warnings: f64,
    errors_by_pattern: BTreeMap<String, f64>,
}

/// Keeps the larger figure: instances stall independently, so an
/// application's pressure is its worst instance's.
fn max(slot: &mut Option<f64>, v: f64) {
    *slot = Some(slot.map_or(v, |s| s.max(v)));
}

/// The application of a `log_messages_total` series: as for metrics, else
/// the journal unit or the configured service of a log file.
fn log_application_of(labels: &Labels) -> Option<&str> {
    application_of(labels).or_else(|| {
        ["journal_unit", "service"]
            .iter()
            .find_map(|name| labels.get(*name).filter(|v| !v.is_empty()))
            .map(String::as_str)
    })
}

fn add(slot: &mut Option<f64>, v: f64) {
    *slot = Some(slot.unwrap_or(0.0) + v);
}

/// Everything measured about applications in one window.
#[derive(Debug, Default)]
pub struct Model {
    seconds: f64,
    inbound: BTreeMap<String, RedSum>,
    edges: BTreeMap<(String, String), Edge>,
    instances: BTreeMap<String, BTreeSet<(String, u32, String, String)>>,
    resources: BTreeMap<String, ResourceSum>,
    logs: BTreeMap<String, LogSum>,
}

/// A window of Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Window {
    /// The request's window, or the last hour; refused when reversed or
    /// longer than `max_range_ms`.
    pub fn of(
        window: Option<&pb::TimeWindow>,
        now_ms: i64,
        max_range_ms: i64,
    ) -> Result<Self, QueryError> {
        let (start_ms, end_ms) = match window {
            Some(w) if w.start_ms != 0 || w.end_ms != 0 => {
                let end = if w.end_ms == 0 { now_ms } else { w.end_ms };
                (w.start_ms, end)
            }
            _ => (now_ms - 3_600_000, now_ms),
        };
        if end_ms <= start_ms {
            return Err(QueryError::BadData(format!(
                "window end {end_ms} ms is not after its start {start_ms} ms"
            )));
        }
        if end_ms.saturating_sub(start_ms) > max_range_ms {
            return Err(QueryError::Limit(format!(
                "the window is {} ms long; at most {max_range_ms} ms are allowed",
                end_ms.saturating_sub(start_ms)
            )));
        }
        Ok(Self { start_ms, end_ms })
    }

    fn range(&self) -> String {
        format!("{}ms", self.end_ms - self.start_ms)
    }
}

async fn vector(
    store: &dyn TelemetryStore,
    project: &str,
    query: &str,
    at: i64,
    limits: &Limits,
) -> Result<Vec<Element>, QueryError> {
    let expr = promql::parse(query)?;
    match promql::instant(store, project, &expr, at, limits).await? {
        promql::Value::Vector(v) => Ok(v),
        other => Err(QueryError::Execution(format!(
            "{query} gave a {}, not a vector",
            other.type_name()
        ))),
    }
}

/// The figures read, as (metric, PromQL function over the window).
const LISTEN: (&str, &str) = (names::TCP_LISTEN_INFO, "last_over_time");
const L7: [(&str, &str); 3] = [
    (names::L7_REQUESTS_TOTAL, "increase"),
    (names::L7_REQUEST_SECONDS_TOTAL, "increase"),
    (names::L7_REQUEST_DURATION_BUCKET, "increase"),
];
const TCP: [(&str, &str); 5] = [
    (names::TCP_SUCCESSFUL_CONNECTS_TOTAL, "increase"),
    (names::TCP_FAILED_CONNECTS_TOTAL, "increase"),
    (names::TCP_RETRANSMITS_TOTAL, "increase"),
    (names::TCP_CONNECT_SECONDS_TOTAL, "increase"),
    (names::TCP_ACTIVE_CONNECTIONS, "last_over_time"),
];
const CONTAINERS: [(&str, &str); 9] = [
    (names::CONTAINER_CPU_USAGE_SECONDS_TOTAL, "rate"),
    (names::CONTAINER_CPU_LIMIT_CORES, "last_over_time"),
    (names::CONTAINER_CPU_THROTTLED_SECONDS_TOTAL, "increase"),
    (names::CONTAINER_MEMORY_RSS_BYTES, "last_over_time"),
    (names::CONTAINER_MEMORY_LIMIT_BYTES, "last_over_time"),
    (names::CONTAINER_OOM_KILLS_TOTAL, "increase"),
    (names::CONTAINER_RESTARTS_TOTAL, "increase"),
    (names::CONTAINER_MEMORY_RSS_BYTES, "deriv"),
    (PRESSURE_SOME, "rate"),
];
/// Time some tasks stalled, per resource.
const PRESSURE_SOME: &str = "container_pressure_waiting_seconds_total{kind=\"some\"}";
const LOGS: (&str, &str) = (names::LOG_MESSAGES_TOTAL, "increase");
const PROCESSES: [(&str, &str); 2] = [
    (names::PROCESS_CPU_USAGE_CORES, "avg_over_time"),
    (names::PROCESS_MEMORY_RSS_BYTES, "last_over_time"),
];

impl Model {
    /// Reads every figure for the window.
    pub async fn load(
        store: &dyn TelemetryStore,
        project: &str,
        window: Window,
        limits: &Limits,
    ) -> Result<Self, QueryError> {
        let w = window.range();
        let at = window.end_ms;
        let mut model = Model {
            seconds: (window.end_ms - window.start_ms) as f64 / 1e3,
            ..Model::default()
        };
        // Every figure at once: they do not depend on each other.
        let exprs: Vec<String> = [LISTEN]
            .iter()
            .chain(&L7)
            .chain(&TCP)
            .chain(&CONTAINERS)
            .chain(&PROCESSES)
            .chain([&LOGS])
            .map(|(metric, f)| format!("{f}({metric}[{w}])"))
            .collect();
        let results = futures::future::try_join_all(
            exprs.iter().map(|e| vector(store, project, e, at, limits)),
        )
        .await?;
        let mut fetched: HashMap<String, Vec<Element>> = exprs.into_iter().zip(results).collect();
        let mut q = |(metric, f): (&str, &str)| {
            fetched
                .remove(&format!("{f}({metric}[{w}])"))
                .unwrap_or_default()
        };

        // Who listens where, for destinations on other nodes.
        let mut listeners: BTreeMap<String, String> = BTreeMap::new();
        for e in q(LISTEN) {
            if let (Some(listen), Some(app)) =
                (e.labels.get(names::LABEL_LISTEN), application_of(&e.labels))
            {
                listeners.insert(listen.clone(), app.to_owned());
                model.note_instance(&e.labels);
            }
        }
        let destination_of = |labels: &Labels| -> Option<(String, bool)> {
            if let Some(app) = labels.get(names::LABEL_DESTINATION_APPLICATION) {
                return Some((app.clone(), false));
            }
            let destination = labels.get(names::LABEL_DESTINATION)?;
            Some(match listeners.get(destination) {
                Some(app) => (app.clone(), false),
                None => (destination.clone(), true),
            })
        };
        let side = |labels: &Labels| labels.get(names::LABEL_SIDE).cloned().unwrap_or_default();

        let [requests, seconds, buckets] = L7.map(&mut q);
        for (elements, what) in [(requests, 0), (seconds, 1), (buckets, 2)] {
            for e in elements {
                let Some(app) = application_of(&e.labels).map(str::to_owned) else {
                    continue;
                };
                model.note_instance(&e.labels);
                let sum = if side(&e.labels) == "server" {
                    model.inbound.entry(app).or_default()
                } else {
                    let Some((to, external)) = destination_of(&e.labels) else {
                        continue;
                    };
                    let edge = model.edges.entry((app, to)).or_default();
                    edge.external = external;
                    &mut edge.red
                };
                match what {
                    0 => sum.add_requests(&e.labels, e.v),
                    1 => sum.seconds += e.v,
                    _ => sum.add_bucket(&e.labels, e.v),
                }
            }
        }

        for (metric, f) in TCP {
            for e in q((metric, f)) {
                let (Some(app), Some((to, external))) = (
                    application_of(&e.labels).map(str::to_owned),
                    destination_of(&e.labels),
                ) else {
                    continue;
                };
                model.note_instance(&e.labels);
                let edge = model.edges.entry((app, to)).or_default();
                edge.external = external;
                let tcp = &mut edge.tcp;
                match metric {
                    names::TCP_SUCCESSFUL_CONNECTS_TOTAL => tcp.connects += e.v,
                    names::TCP_FAILED_CONNECTS_TOTAL => tcp.failed += e.v,
                    names::TCP_RETRANSMITS_TOTAL => tcp.retransmits += e.v,
                    names::TCP_CONNECT_SECONDS_TOTAL => tcp.connect_seconds += e.v,
                    _ => tcp.active += e.v,
                }
            }
        }

        for (metric, f) in CONTAINERS {
            for e in q((metric, f)) {
                let Some(app) = application_of(&e.labels).map(str::to_owned) else {
                    continue;
                };
                let r = model.resources.entry(app).or_default();
                match (metric, f) {
                    (names::CONTAINER_CPU_USAGE_SECONDS_TOTAL, _) => add(&mut r.cpu, e.v),
                    (names::CONTAINER_CPU_LIMIT_CORES, _) => add(&mut r.cpu_limit, e.v),
                    (names::CONTAINER_CPU_THROTTLED_SECONDS_TOTAL, _) => add(&mut r.throttled, e.v),
                    (names::CONTAINER_MEMORY_RSS_BYTES, "deriv") => add(&mut r.rss_growth, e.v),
                    (names::CONTAINER_MEMORY_RSS_BYTES, _) => add(&mut r.rss, e.v),
                    (names::CONTAINER_MEMORY_LIMIT_BYTES, _) => add(&mut r.memory_limit, e.v),
                    (names::CONTAINER_OOM_KILLS_TOTAL, _) => r.oom_kills += e.v,
                    (names::CONTAINER_RESTARTS_TOTAL, _) => r.restarts += e.v,
                    _ => match e.labels.get(names::LABEL_RESOURCE).map(String::as_str) {
                        Some("cpu") => max(&mut r.cpu_pressure, e.v),
                        Some("memory") => max(&mut r.memory_pressure, e.v),
                        Some("io") => max(&mut r.io_pressure, e.v),
                        _ => {}
                    },
                }
            }
        }
        for e in q(LOGS) {
            let Some(app) = log_application_of(&e.labels).map(str::to_owned) else {
                continue;
            };
            let logs = model.logs.entry(app).or_default();
            logs.messages += e.v;
            match e.labels.get("level").map(String::as_str) {
                Some("error" | "fatal") => {
                    logs.errors += e.v;
                    if let Some(pattern) = e.labels.get("pattern_id") {
                        *logs.errors_by_pattern.entry(pattern.clone()).or_default() += e.v;
                    }
                }
                Some("warning") => logs.warnings += e.v,
                _ => {}
            }
        }
        // Applications known by process name only take the processes' figures.
        let from_containers: BTreeSet<String> = model.resources.keys().cloned().collect();
        for (metric, f) in PROCESSES {
            for e in q((metric, f)) {
                let Some(process) = e.labels.get(names::LABEL_PROCESS) else {
                    continue;
                };
                if !model.instances.contains_key(process) || from_containers.contains(process) {
                    continue;
                }
                let r = model.resources.entry(process.clone()).or_default();
                if metric == names::PROCESS_CPU_USAGE_CORES {
                    add(&mut r.cpu, e.v);
                } else {
                    add(&mut r.rss, e.v);
                }
            }
        }
        Ok(model)
    }

    fn note_instance(&mut self, labels: &Labels) {
        let Some(app) = application_of(labels) else {
            return;
        };
        let node = labels.get(names::LABEL_NODE).cloned().unwrap_or_default();
        let pid = labels
            .get(names::LABEL_PID)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let process = labels
            .get(names::LABEL_PROCESS)
            .cloned()
            .unwrap_or_default();
        let owner = labels
            .get("container_id")
            .or_else(|| labels.get("systemd_service"))
            .cloned()
            .unwrap_or_default();
        self.instances
            .entry(app.to_owned())
            .or_default()
            .insert((node, pid, process, owner));
    }

    /// Every application seen, sorted.
    pub fn applications(&self) -> BTreeSet<&str> {
        self.instances
            .keys()
            .chain(self.inbound.keys())
            .chain(self.edges.keys().map(|(from, _)| from))
            .chain(
                self.edges
                    .iter()
                    .filter(|(_, e)| !e.external)
                    .map(|((_, to), _)| to),
            )
            .chain(self.resources.keys())
            .chain(self.logs.keys())
            .map(String::as_str)
            .collect()
    }

    fn slo(&self, app: &str, objectives: &SloObjectives) -> pb::Slo {
        let red = self.inbound.get(app).cloned().unwrap_or_default();
        let threshold = objectives.latency_threshold.as_secs_f64();
        // The histogram bound at or above the threshold.
        let bound = red
            .buckets
            .values()
            .map(|(b, _)| *b)
            .find(|b| *b >= threshold)
            .unwrap_or(threshold);
        let mut slo = pb::Slo {
            availability_objective_percent: objectives.availability_percent,
            latency_objective_percent: objectives.latency_percent,
            latency_threshold_seconds: bound,
            ..pb::Slo::default()
        };
        if red.requests > 0.0 {
            let good = 1.0 - red.errors / red.requests;
            let burn = (1.0 - good) / (1.0 - objectives.availability_percent / 100.0);
            slo.availability_percent = Some(good * 100.0);
            slo.availability_burn_rate = Some(burn);
            slo.availability_budget_left = Some(1.0 - burn);
        }
        if let Some((fast, total)) = red.fast(bound).filter(|(_, total)| *total > 0.0) {
            let good = fast / total;
            let burn = (1.0 - good) / (1.0 - objectives.latency_percent / 100.0);
            slo.latency_percent = Some(good * 100.0);
            slo.latency_burn_rate = Some(burn);
            slo.latency_budget_left = Some(1.0 - burn);
        }
        slo
    }

    /// Health from the SLOs' burn rates and from OOM kills and restarts.
    fn health(&self, app: &str, slo: &pb::Slo) -> (pb::Health, Vec<String>) {
        let mut reasons = Vec::new();
        let mut level = if self.inbound.get(app).is_some_and(|r| r.requests > 0.0) {
            pb::Health::Ok
        } else {
            pb::Health::Unknown
        };
        for (what, burn) in [
            ("availability", slo.availability_burn_rate),
            ("latency", slo.latency_burn_rate),
        ] {
            let Some(burn) = burn else { continue };
            if burn >= 10.0 {
                level = level.max(pb::Health::Critical);
            } else if burn > 1.0 {
                level = level.max(pb::Health::Warning);
            } else {
                continue;
            }
            reasons.push(format!("{what} error budget burning {burn:.1}x"));
        }
        if let Some(r) = self.resources.get(app) {
            for (what, n) in [("OOM kills", r.oom_kills), ("restarts", r.restarts)] {
                if n >= 0.5 {
                    level = level.max(pb::Health::Warning);
                    reasons.push(format!("{n:.0} {what}"));
                }
            }
        }
        (level, reasons)
    }

    pub fn summary(&self, app: &str, slo_config: &SloConfig) -> pb::ApplicationSummary {
        let slo = self.slo(app, &slo_config.for_application(app));
        let (health, reasons) = self.health(app, &slo);
        let instances = self.instances.get(app);
        pb::ApplicationSummary {
            name: app.to_owned(),
            instances: instances.map_or(0, |i| i.len() as u32),
            nodes: instances
                .into_iter()
                .flatten()
                .map(|(node, ..)| node.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            inbound: Some(
                self.inbound
                    .get(app)
                    .cloned()
                    .unwrap_or_default()
                    .to_pb(self.seconds),
            ),
            health: health as i32,
            reasons,
        }
    }

    pub fn application(&self, app: &str, slo_config: &SloConfig) -> pb::GetApplicationResponse {
        let slo = self.slo(app, &slo_config.for_application(app));
        let r = self.resources.get(app).cloned().unwrap_or_default();
        pb::GetApplicationResponse {
            summary: Some(self.summary(app, slo_config)),
            instances: self
                .instances
                .get(app)
                .into_iter()
                .flatten()
                .map(|(node, pid, process, owner)| pb::Instance {
                    node: node.clone(),
                    pid: *pid,
                    process: process.clone(),
                    owner: owner.clone(),
                })
                .collect(),
            upstreams: self
                .edges
                .iter()
                .filter(|((from, _), _)| from == app)
                .map(|((_, to), edge)| self.upstream(to, edge))
                .collect(),
            slo: Some(slo),
            resources: Some(pb::Resources {
                cpu_usage_cores: r.cpu,
                cpu_limit_cores: r.cpu_limit,
                cpu_throttled_seconds: r.throttled,
                memory_rss_bytes: r.rss,
                memory_limit_bytes: r.memory_limit,
                oom_kills: r.oom_kills,
                restarts: r.restarts,
                memory_rss_growth_bytes_per_second: r.rss_growth,
                cpu_pressure_ratio: r.cpu_pressure,
                memory_pressure_ratio: r.memory_pressure,
                io_pressure_ratio: r.io_pressure,
            }),
            logs: self.logs.get(app).map(|l| pb::LogFigures {
                messages: l.messages,
                errors: l.errors,
                warnings: l.warnings,
                errors_by_pattern: top_patterns(&l.errors_by_pattern),
            }),
        }
    }

    /// Every application's details.
    pub fn inspect(&self, slo_config: &SloConfig) -> Vec<pb::GetApplicationResponse> {
        self.applications()
            .into_iter()
            .map(|app| self.application(app, slo_config))
            .collect()
    }

    fn upstream(&self, to: &str, edge: &Edge) -> pb::Upstream {
        pb::Upstream {
            name: to.to_owned(),
            external: edge.external,
            red: Some(edge.red.to_pb(self.seconds)),
            connects: edge.tcp.connects,
            failed_connects: edge.tcp.failed,
            retransmits: edge.tcp.retransmits,
            connect_time_mean_seconds: (edge.tcp.connects > 0.0)
                .then(|| edge.tcp.connect_seconds / edge.tcp.connects),
            active_connections: edge.tcp.active,
        }
    }

    pub fn service_map(&self, slo_config: &SloConfig) -> pb::ServiceMapResponse {
        let mut nodes: Vec<pb::MapNode> = self
            .applications()
            .into_iter()
            .map(|app| pb::MapNode {
                name: app.to_owned(),
                external: false,
                health: self.summary(app, slo_config).health,
            })
            .collect();
        let external: BTreeSet<&String> = self
            .edges
            .iter()
            .filter(|(_, e)| e.external)
            .map(|((_, to), _)| to)
            .collect();
        nodes.extend(external.into_iter().map(|to| pb::MapNode {
            name: to.clone(),
            external: true,
            health: pb::Health::Unknown as i32,
        }));
        let edges = self
            .edges
            .iter()
            .map(|((from, to), edge)| pb::MapEdge {
                from: from.clone(),
                to: to.clone(),
                red: Some(edge.red.to_pb(self.seconds)),
                connects: edge.tcp.connects,
                failed_connects: edge.tcp.failed,
                retransmits: edge.tcp.retransmits,
                active_connections: edge.tcp.active,
            })
            .collect();
        pb::ServiceMapResponse { nodes, edges }
    }
}

/// The ten busiest error patterns.
fn top_patterns(by_pattern: &BTreeMap<String, f64>) -> HashMap<String, f64> {
    let mut all: Vec<(&String, f64)> = by_pattern.iter().map(|(k, v)| (k, *v)).collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    all.into_iter()
        .take(10)
        .map(|(k, v)| (k.clone(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applications_are_named_like_the_agent_names_them() {
        let l = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert_eq!(
            application_of(&l(&[
                ("process", "nginx"),
                ("systemd_service", "nginx.service")
            ])),
            Some("nginx.service")
        );
        assert_eq!(
            application_of(&l(&[("process", "java"), ("container_id", "abc")])),
            Some("abc")
        );
        assert_eq!(
            application_of(&l(&[("process", "java"), ("application", "shop")])),
            Some("shop")
        );
        assert_eq!(application_of(&l(&[("process", "curl")])), Some("curl"));
        assert_eq!(application_of(&l(&[("node", "n1")])), None);
    }

    #[test]
    fn errors_by_protocol() {
        assert!(is_error("http", "503"));
        assert!(!is_error("http", "404"));
        assert!(is_error("redis", "error"));
        assert!(!is_error("dns", "NXDOMAIN"));
        assert!(is_error("dns", "SERVFAIL"));
        assert!(!is_error("postgres", "ok"));
    }
}
