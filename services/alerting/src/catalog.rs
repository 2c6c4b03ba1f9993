//! Every inspection the worker runs: its id, category, unit, defaults and
//! explanation. `docs/inspections.md` is generated from this table (a test
//! keeps the two equal), so the documentation cannot drift from the code.

use std::time::Duration;

/// What an inspection looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One application (its own figures, or its calls to upstreams).
    Application,
    /// One node, or one disk of a node.
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inspection {
    pub id: &'static str,
    /// For routing notifications: slo, cpu, memory, storage, network,
    /// instances, logs, dns, database.
    pub category: &'static str,
    pub scope: Scope,
    pub title: &'static str,
    /// The unit of `threshold` and `critical`.
    pub unit: &'static str,
    /// Above this (below, where `below` is set), a warning.
    pub threshold: f64,
    /// Above this, critical; `None`: never critical.
    pub critical: Option<f64>,
    /// The inspection fires when the figure is under the threshold.
    pub below: bool,
    /// How long it must fire before an incident opens.
    pub for_: Duration,
    /// How long an incident stays open after the inspection stops firing.
    pub keep_firing_for: Duration,
    pub explanation: &'static str,
}

const MIN: Duration = Duration::from_secs(60);

const fn inspection(
    id: &'static str,
    category: &'static str,
    scope: Scope,
    title: &'static str,
    unit: &'static str,
    (threshold, critical): (f64, Option<f64>),
    explanation: &'static str,
) -> Inspection {
    Inspection {
        id,
        category,
        scope,
        title,
        unit,
        threshold,
        critical,
        below: false,
        for_: MIN,
        keep_firing_for: Duration::from_secs(300),
        explanation,
    }
}

pub const SLO_AVAILABILITY: &str = "slo_availability";
pub const SLO_LATENCY: &str = "slo_latency";
pub const NODE_CPU: &str = "node_cpu";
pub const NODE_MEMORY: &str = "node_memory";
pub const CONTAINER_CPU: &str = "container_cpu";
pub const CPU_THROTTLING: &str = "cpu_throttling";
pub const OOM_KILLS: &str = "oom_kills";
pub const MEMORY_LEAK: &str = "memory_leak";
pub const MEMORY_PRESSURE: &str = "memory_pressure";
pub const DISK_SPACE: &str = "disk_space";
pub const DISK_IO: &str = "disk_io";
pub const IO_PRESSURE: &str = "io_pressure";
pub const NETWORK_RTT: &str = "network_rtt";
pub const UPSTREAM_UNREACHABLE: &str = "upstream_unreachable";
pub const FAILED_CONNECTS: &str = "failed_connects";
pub const RETRANSMITS: &str = "retransmits";
pub const INSTANCES_AVAILABLE: &str = "instances_available";
pub const RESTARTS: &str = "restarts";
pub const ROLLOUT_STUCK: &str = "rollout_stuck";
pub const FLUX_NOT_READY: &str = "flux_not_ready";
pub const LOG_ERRORS: &str = "log_errors";
pub const LOG_ERROR_SPIKE: &str = "log_error_spike";
pub const DNS_LATENCY: &str = "dns_latency";
pub const DNS_ERRORS: &str = "dns_errors";
pub const DNS_NXDOMAIN: &str = "dns_nxdomain";
pub const DB_AVAILABILITY: &str = "db_availability";
pub const DB_LATENCY: &str = "db_latency";

/// The catalog, in documentation order.
pub const INSPECTIONS: &[Inspection] = &[
    Inspection {
        for_: Duration::ZERO,
        ..inspection(
            SLO_AVAILABILITY,
            "slo",
            Scope::Application,
            "Availability SLO burn rate",
            "× budget",
            (6.0, Some(14.4)),
            "The share of failed inbound requests (HTTP 5xx, DNS server errors, database and cache errors), as a multiple of the error budget the availability objective allows (objective from `[query.slo]`, 99 % by default). Fires on multi-window burn rates, not raw errors: critical when both the 1 h and the 5 min burn rates exceed `critical` (14.4: 2 % of a 30-day budget in an hour), a warning when both the 6 h and the 30 min ones exceed `threshold` (6: 5 % in six hours). The short window makes it resolve quickly once the errors stop.",
        )
    },
    Inspection {
        for_: Duration::ZERO,
        ..inspection(
            SLO_LATENCY,
            "slo",
            Scope::Application,
            "Latency SLO burn rate",
            "× budget",
            (6.0, Some(14.4)),
            "The share of inbound requests slower than the latency threshold (500 ms by default, `[query.slo]`), as a multiple of the budget the latency objective allows (99 % by default). Same windows and multipliers as `slo_availability`.",
        )
    },
    inspection(
        NODE_CPU,
        "cpu",
        Scope::Node,
        "Node CPU usage",
        "%",
        (80.0, Some(95.0)),
        "The node's CPU busy time over the last 5 min, in percent of all its cores.",
    ),
    inspection(
        NODE_MEMORY,
        "memory",
        Scope::Node,
        "Node memory usage",
        "%",
        (90.0, Some(97.0)),
        "The node's memory in use (total minus available), in percent of its total.",
    ),
    inspection(
        CONTAINER_CPU,
        "cpu",
        Scope::Application,
        "CPU usage against the limit",
        "% of limit",
        (80.0, Some(95.0)),
        "The application's CPU use over the last 5 min in percent of its CPU limit (the sum over its containers). Applications without a limit are not judged.",
    ),
    inspection(
        CPU_THROTTLING,
        "cpu",
        Scope::Application,
        "CPU throttling",
        "% of time",
        (10.0, Some(50.0)),
        "Time the application's containers were held back by their CPU quota over the last 5 min, in percent of the time: requests wait even when the node has idle CPU.",
    ),
    Inspection {
        for_: Duration::ZERO,
        keep_firing_for: Duration::from_secs(600),
        ..inspection(
            OOM_KILLS,
            "memory",
            Scope::Application,
            "OOM kills",
            "kills",
            (0.0, None),
            "Processes of the application killed by the kernel's out-of-memory killer in the last 5 min (any kill fires).",
        )
    },
    Inspection {
        for_: Duration::from_secs(600),
        ..inspection(
            MEMORY_LEAK,
            "memory",
            Scope::Application,
            "Memory leak",
            "% per hour",
            (10.0, None),
            "Resident memory growth over the last hour (least-squares slope), in percent of the current resident memory per hour. Steady growth over hours is how leaks look before the OOM kill.",
        )
    },
    inspection(
        MEMORY_PRESSURE,
        "memory",
        Scope::Application,
        "Memory pressure",
        "% of time",
        (20.0, Some(50.0)),
        "Time some of the application's tasks stalled waiting for memory (reclaim, swap-in, refaults) over the last 5 min (PSI `some`, cgroup v2; the worst instance).",
    ),
    inspection(
        DISK_SPACE,
        "storage",
        Scope::Node,
        "Disk space",
        "% used",
        (80.0, Some(95.0)),
        "Space used on each mounted filesystem of the node, in percent of its size.",
    ),
    inspection(
        DISK_IO,
        "storage",
        Scope::Node,
        "Disk I/O load",
        "% busy",
        (90.0, None),
        "Time each disk of the node was busy with I/O over the last 5 min, in percent: a saturated disk queues every read and write.",
    ),
    inspection(
        IO_PRESSURE,
        "storage",
        Scope::Application,
        "I/O pressure",
        "% of time",
        (20.0, Some(50.0)),
        "Time some of the application's tasks stalled waiting for I/O over the last 5 min (PSI `some`, cgroup v2; the worst instance).",
    ),
    inspection(
        NETWORK_RTT,
        "network",
        Scope::Application,
        "Network round-trip time to upstreams",
        "ms",
        (10.0, Some(100.0)),
        "The mean TCP connect time (one round trip: SYN to SYN-ACK) from the application to each upstream inside the project over the last 5 min. External endpoints are not judged.",
    ),
    Inspection {
        for_: Duration::ZERO,
        ..inspection(
            UPSTREAM_UNREACHABLE,
            "network",
            Scope::Application,
            "Unreachable upstream",
            "failed connects",
            (0.0, Some(0.0)),
            "An upstream the application tried to connect to in the last 5 min with every attempt failing (refused, reset or timed out): it is down or cut off. Always critical.",
        )
    },
    Inspection {
        for_: Duration::ZERO,
        ..inspection(
            FAILED_CONNECTS,
            "network",
            Scope::Application,
            "Failed TCP connections",
            "failed connects",
            (0.0, None),
            "TCP connection attempts from the application that failed in the last 5 min, summed over its upstreams (the incident lists them).",
        )
    },
    inspection(
        RETRANSMITS,
        "network",
        Scope::Application,
        "TCP retransmissions",
        "segments/s",
        (1.0, Some(10.0)),
        "TCP segments the application retransmitted to its upstreams per second over the last 5 min: packet loss or congestion on the path.",
    ),
    Inspection {
        below: true,
        ..inspection(
            INSTANCES_AVAILABLE,
            "instances",
            Scope::Application,
            "Available instances",
            "% of desired",
            (75.0, Some(50.0)),
            "Available replicas in percent of the desired replicas of the application's Deployment (kube-state-metrics' `kube_deployment_status_replicas_available` and `kube_deployment_spec_replicas`). Fires below the threshold; critical below `critical`.",
        )
    },
    Inspection {
        for_: Duration::ZERO,
        ..inspection(
            RESTARTS,
            "instances",
            Scope::Application,
            "Restarts",
            "restarts",
            (1.0, Some(5.0)),
            "Container restarts of the application in the last hour: more than one suggests a crash loop.",
        )
    },
    Inspection {
        for_: Duration::from_secs(180),
        ..inspection(
            ROLLOUT_STUCK,
            "instances",
            Scope::Application,
            "Rollout stuck",
            "replicas not updated",
            (0.0, None),
            "A Deployment whose updated replicas stay below its desired replicas (kube-state-metrics' `kube_deployment_status_replicas_updated` and `kube_deployment_spec_replicas`) for longer than `for` (180 s).",
        )
    },
    Inspection {
        for_: Duration::from_secs(300),
        ..inspection(
            FLUX_NOT_READY,
            "gitops",
            Scope::Application,
            "Flux reconciliation failing",
            "not ready",
            (0.0, None),
            "A Flux Kustomization or HelmRelease (the application is its name) whose Ready condition is not True for longer than `for` (5 min), from the cluster agent's `flux_resource_ready`; suspended objects are left out, and so is Ready=Unknown while a reconciliation runs. The reason (BuildFailed, InstallFailed…) is in the object's Flux events.",
        )
    },
    Inspection {
        for_: Duration::ZERO,
        ..inspection(
            LOG_ERRORS,
            "logs",
            Scope::Application,
            "Errors in logs",
            "messages",
            (0.0, None),
            "Log messages at error or fatal level from the application in the last 5 min. The incident names the busiest error pattern and a sample message.",
        )
    },
    Inspection {
        for_: Duration::ZERO,
        ..inspection(
            LOG_ERROR_SPIKE,
            "logs",
            Scope::Application,
            "Log error spike",
            "× usual rate",
            (3.0, Some(10.0)),
            "The application's error-level log rate over the last 5 min as a multiple of its rate over the last 6 h, when at least 10 errors were logged in the 5 min.",
        )
    },
    inspection(
        DNS_LATENCY,
        "dns",
        Scope::Application,
        "DNS latency",
        "ms",
        (50.0, Some(500.0)),
        "The mean time the application waited for DNS answers over the last 5 min, per DNS server.",
    ),
    inspection(
        DNS_ERRORS,
        "dns",
        Scope::Application,
        "DNS server errors",
        "% of queries",
        (1.0, Some(10.0)),
        "DNS queries of the application answered with SERVFAIL, REFUSED, FORMERR or NOTIMP over the last 5 min, in percent of its queries.",
    ),
    inspection(
        DNS_NXDOMAIN,
        "dns",
        Scope::Application,
        "DNS NXDOMAIN answers",
        "% of queries",
        (90.0, None),
        "DNS queries of the application answered 'no such name' over the last 5 min, in percent. Kubernetes' search domains make most lookups of a correct name fail a few times first (with `ndots: 5`, three or four of every five queries), so only a name that never resolves reaches the default of 90 %.",
    ),
    inspection(
        DB_AVAILABILITY,
        "database",
        Scope::Application,
        "Database errors",
        "% of queries",
        (1.0, Some(10.0)),
        "Failed queries from the application to each database or cache it calls (Postgres, MySQL/MariaDB, Redis, Memcached; from the agent's L7 parsing) over the last 5 min, in percent of its queries there.",
    ),
    inspection(
        DB_LATENCY,
        "database",
        Scope::Application,
        "Database latency",
        "ms",
        (100.0, Some(1000.0)),
        "The 99th percentile latency of the application's queries to each database or cache it calls over the last 5 min.",
    ),
];

pub fn find(id: &str) -> Option<&'static Inspection> {
    INSPECTIONS.iter().find(|i| i.id == id)
}

fn duration(d: Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else {
        humantime::format_duration(d).to_string()
    }
}

fn number(v: f64) -> String {
    format!("{v}")
}

/// `docs/inspections.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Inspections\n\n\
         Generated from `services/alerting/src/catalog.rs` (a test keeps this file equal to it).\n\n\
         The alerting worker runs every inspection for every application (or node) of its project on each \
         round (`alerting.interval`, 30 s by default). An inspection that fires for `for` opens an incident \
         for that application and inspection; it is resolved once the inspection has not fired for \
         `keep_firing_for`. A figure above `threshold` is a warning, above `critical` critical (below, for \
         the inspections marked so).\n\n\
         Change a default for all applications in `[alerting.inspections.<id>]`, and for some of them with \
         `[[alerting.overrides]]`, whose `project`, `application` and `node` are globs \
         (`*`, `?`, `[abc]`); later overrides win:\n\n\
         ```toml\n\
         [alerting.inspections.container_cpu]\n\
         threshold = 90\n\n\
         [[alerting.overrides]]\n\
         application = \"batch-*\"\n\
         inspection = \"container_cpu\"\n\
         enabled = false\n\n\
         [[alerting.overrides]]\n\
         application = \"payments\"\n\
         inspection = \"slo_latency\"\n\
         for = \"2m\"\n\
         ```\n\n\
         Each setting can be `enabled`, `threshold`, `critical`, `for` and `keep_firing_for`.\n\n\
         | id | category | scope | unit | threshold | critical | for | keep firing for |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for i in INSPECTIONS {
        let scope = match i.scope {
            Scope::Application => "application",
            Scope::Node => "node",
        };
        let op = if i.below { "<" } else { ">" };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {op} {} | {} | {} | {} |\n",
            i.id,
            i.category,
            scope,
            i.unit,
            number(i.threshold),
            i.critical
                .map_or("–".into(), |c| format!("{op} {}", number(c))),
            duration(i.for_),
            duration(i.keep_firing_for),
        ));
    }
    for i in INSPECTIONS {
        out.push_str(&format!(
            "\n## `{}`: {}\n\n{}\n",
            i.id, i.title, i.explanation
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_documented() {
        let mut ids: Vec<&str> = INSPECTIONS.iter().map(|i| i.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), INSPECTIONS.len());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/inspections.md");
        let written = std::fs::read_to_string(path).unwrap_or_default();
        if written != markdown() {
            if std::env::var_os("VIGIL_WRITE_DOCS").is_some() {
                std::fs::write(path, markdown()).expect("docs/inspections.md is writable");
            } else {
                panic!(
                    "docs/inspections.md is not what the catalog says: run `VIGIL_WRITE_DOCS=1 cargo test -p vigil-alerting catalog` and commit it"
                );
            }
        }
    }
}
