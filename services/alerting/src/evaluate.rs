//! Inspections as pure functions: figures read through the query API in,
//! one observation per (inspection, subject) out: firing with a severity
//! and an explanation, or healthy. Nothing here talks to a server, so every
//! rule is tested directly.

use std::collections::BTreeMap;

use vigil_notify::{Field, Severity};
use vigil_proto::query::v1::{self as pb, GetApplicationResponse};

use crate::{
    catalog::{self, Inspection},
    config::{Effective, Settings},
};

/// Everything one round reads.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Every application over the last 5 min, 30 min, 1 h and 6 h.
    pub w5m: Vec<GetApplicationResponse>,
    pub w30m: Vec<GetApplicationResponse>,
    pub w1h: Vec<GetApplicationResponse>,
    pub w6h: Vec<GetApplicationResponse>,
    pub hosts: Vec<pb::Host>,
    pub disks: Vec<Disk>,
    pub disk_io: Vec<DiskIo>,
    pub deployments: Vec<Deployment>,
    pub flux: Vec<FluxObject>,
}

/// A Flux Kustomization or HelmRelease and its readiness (from the
/// cluster agent's `flux_resource_ready`).
#[derive(Debug, Clone, PartialEq)]
pub struct FluxObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    pub node: String,
    pub mount_point: String,
    pub used_ratio: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiskIo {
    pub node: String,
    pub device: String,
    pub busy_ratio: f64,
}

/// A Deployment's replicas (kube-state-metrics names).
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub application: String,
    pub desired: f64,
    pub available: Option<f64>,
    pub updated: Option<f64>,
    /// `kube_deployment_status_observed_generation`: grows with each rollout.
    pub generation: Option<f64>,
}

/// An inspection that fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub severity: Severity,
    pub value: f64,
    pub threshold: f64,
    /// One line, e.g. "orders: 12 failed TCP connects to postgres".
    pub summary: String,
    pub details: Vec<Field>,
    /// The upstreams it is about (for root-cause hints).
    pub upstreams: Vec<String>,
}

/// The outcome of one inspection for one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub inspection: &'static Inspection,
    /// The application's name, or `node/<node>[/<disk>]`.
    pub subject: String,
    pub application: Option<String>,
    pub node: Option<String>,
    pub effective: Effective,
    /// `None`: checked and healthy.
    pub firing: Option<Firing>,
    /// The figure judged, when there was one.
    pub value: Option<f64>,
}

/// The severity of `value` under `e`, if it fires.
pub fn judge(i: &Inspection, e: &Effective, value: f64) -> Option<Severity> {
    if !e.enabled || !value.is_finite() {
        return None;
    }
    let beyond = |limit: f64| {
        if i.below {
            value < limit
        } else {
            value > limit
        }
    };
    if e.critical.is_some_and(beyond) {
        Some(Severity::Critical)
    } else if beyond(e.threshold) {
        Some(Severity::Warning)
    } else {
        None
    }
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

struct Round<'a> {
    settings: &'a Settings,
    out: Vec<Observation>,
}

impl Round<'_> {
    /// Judges `value` for an application and records the observation.
    fn app(
        &mut self,
        id: &str,
        app: &str,
        value: f64,
        text: impl FnOnce(&Effective) -> (String, Vec<Field>, Vec<String>),
    ) {
        let Some(inspection) = catalog::find(id) else {
            return;
        };
        let effective = self.settings.effective(inspection, Some(app), None);
        let firing = judge(inspection, &effective, value).map(|severity| {
            let (summary, details, upstreams) = text(&effective);
            Firing {
                severity,
                value,
                threshold: effective.threshold,
                summary,
                details,
                upstreams,
            }
        });
        self.out.push(Observation {
            inspection,
            subject: app.to_owned(),
            application: Some(app.to_owned()),
            node: None,
            effective,
            firing,
            value: Some(value),
        });
    }

    fn node(
        &mut self,
        id: &str,
        node: &str,
        part: Option<&str>,
        value: f64,
        text: impl FnOnce(&Effective) -> String,
    ) {
        let Some(inspection) = catalog::find(id) else {
            return;
        };
        let effective = self.settings.effective(inspection, None, Some(node));
        let firing = judge(inspection, &effective, value).map(|severity| Firing {
            severity,
            value,
            threshold: effective.threshold,
            summary: text(&effective),
            details: Vec::new(),
            upstreams: Vec::new(),
        });
        self.out.push(Observation {
            inspection,
            subject: match part {
                Some(part) => format!("node/{node}/{part}"),
                None => format!("node/{node}"),
            },
            application: None,
            node: Some(node.to_owned()),
            effective,
            firing,
            value: Some(value),
        });
    }
}

fn name(a: &GetApplicationResponse) -> &str {
    a.summary.as_ref().map_or("", |s| s.name.as_str())
}

fn by_name(apps: &[GetApplicationResponse]) -> BTreeMap<&str, &GetApplicationResponse> {
    apps.iter().map(|a| (name(a), a)).collect()
}

const DATABASES: [&str; 5] = ["postgres", "mysql", "redis", "memcached", "mongo"];

fn speaks(red: Option<&pb::Red>, protocols: &[&str]) -> bool {
    red.is_some_and(|r| {
        protocols
            .iter()
            .any(|p| r.requests_by_protocol.get(*p).is_some_and(|n| *n > 0.0))
    })
}

/// Every inspection over `figures`.
pub fn evaluate(settings: &Settings, f: &Figures) -> Vec<Observation> {
    let mut round = Round {
        settings,
        out: Vec::new(),
    };
    let w30m = by_name(&f.w30m);
    let w1h = by_name(&f.w1h);
    let w6h = by_name(&f.w6h);
    let seconds = 300.0;
    for app in &f.w5m {
        let name = name(app);
        if name.is_empty() {
            continue;
        }
        slo(
            &mut round,
            name,
            app,
            w30m.get(name),
            w1h.get(name),
            w6h.get(name),
        );
        resources(&mut round, name, app, w1h.get(name).copied(), seconds);
        upstreams(&mut round, name, app, seconds);
        logs(&mut round, name, app, w6h.get(name).copied(), seconds);
    }
    for host in &f.hosts {
        if let Some(cpu) = host.cpu_usage_ratio {
            round.node(catalog::NODE_CPU, &host.node, None, cpu * 100.0, |e| {
                format!(
                    "node {}: CPU {:.1}% busy (threshold {}%)",
                    host.node,
                    cpu * 100.0,
                    fmt(e.threshold)
                )
            });
        }
        if let Some(memory) = host.memory_usage_ratio {
            round.node(
                catalog::NODE_MEMORY,
                &host.node,
                None,
                memory * 100.0,
                |e| {
                    format!(
                        "node {}: memory {:.1}% used (threshold {}%)",
                        host.node,
                        memory * 100.0,
                        fmt(e.threshold)
                    )
                },
            );
        }
    }
    for d in &f.disks {
        round.node(
            catalog::DISK_SPACE,
            &d.node,
            Some(&d.mount_point),
            d.used_ratio * 100.0,
            |e| {
                format!(
                    "node {}: {} is {:.1}% full (threshold {}%)",
                    d.node,
                    d.mount_point,
                    d.used_ratio * 100.0,
                    fmt(e.threshold)
                )
            },
        );
    }
    for d in &f.disk_io {
        round.node(
            catalog::DISK_IO,
            &d.node,
            Some(&d.device),
            d.busy_ratio * 100.0,
            |e| {
                format!(
                    "node {}: disk {} busy {:.1}% of the time (threshold {}%)",
                    d.node,
                    d.device,
                    d.busy_ratio * 100.0,
                    fmt(e.threshold)
                )
            },
        );
    }
    for d in &f.deployments {
        if d.desired <= 0.0 {
            continue;
        }
        if let Some(available) = d.available {
            let percent = available / d.desired * 100.0;
            round.app(catalog::INSTANCES_AVAILABLE, &d.application, percent, |e| {
                (
                    format!(
                        "{}: {} of {} desired instances available ({}%, threshold {}%)",
                        d.application,
                        fmt(available),
                        fmt(d.desired),
                        fmt(percent),
                        fmt(e.threshold)
                    ),
                    Vec::new(),
                    Vec::new(),
                )
            });
        }
        if let Some(updated) = d.updated {
            let behind = (d.desired - updated).max(0.0);
            round.app(catalog::ROLLOUT_STUCK, &d.application, behind, |e| {
                (
                    format!(
                        "{}: rollout stuck, {} of {} replicas updated for over {}",
                        d.application,
                        fmt(updated),
                        fmt(d.desired),
                        humantime::format_duration(e.for_)
                    ),
                    Vec::new(),
                    Vec::new(),
                )
            });
        }
    }
    for o in &f.flux {
        let not_ready = if o.ready { 0.0 } else { 1.0 };
        round.app(catalog::FLUX_NOT_READY, &o.name, not_ready, |e| {
            (
                format!(
                    "{}: Flux {} {}/{} not ready for over {} (its events give the reason)",
                    o.name,
                    o.kind,
                    o.namespace,
                    o.name,
                    humantime::format_duration(e.for_)
                ),
                Vec::new(),
                Vec::new(),
            )
        });
    }
    round.out
}

fn slo(
    round: &mut Round<'_>,
    name: &str,
    app: &GetApplicationResponse,
    w30m: Option<&&GetApplicationResponse>,
    w1h: Option<&&GetApplicationResponse>,
    w6h: Option<&&GetApplicationResponse>,
) {
    type Burn = fn(&pb::Slo) -> Option<f64>;
    let pairs: [(&str, &str, Burn, Burn); 2] = [
        (
            catalog::SLO_AVAILABILITY,
            "availability",
            |s| s.availability_burn_rate,
            |s| s.availability_percent,
        ),
        (
            catalog::SLO_LATENCY,
            "latency",
            |s| s.latency_burn_rate,
            |s| s.latency_percent,
        ),
    ];
    for (id, what, burn, good) in pairs {
        let of =
            |a: Option<&&GetApplicationResponse>| a.and_then(|a| a.slo.as_ref()).and_then(burn);
        let (Some(b5m), Some(b1h)) = (app.slo.as_ref().and_then(burn), of(w1h)) else {
            continue;
        };
        // Both windows of a pair must exceed: the smaller of the two decides.
        let fast = b5m.min(b1h);
        let slow = match (of(w30m), of(w6h)) {
            (Some(b30m), Some(b6h)) => b30m.min(b6h),
            _ => 0.0,
        };
        let Some(inspection) = catalog::find(id) else {
            continue;
        };
        let e = round.settings.effective(inspection, Some(name), None);
        let severity = if !e.enabled {
            None
        } else if e.critical.is_some_and(|c| fast > c) {
            Some(Severity::Critical)
        } else if slow > e.threshold {
            Some(Severity::Warning)
        } else {
            None
        };
        let slo = app.slo.unwrap_or_default();
        let objective = if id == catalog::SLO_AVAILABILITY {
            slo.availability_objective_percent
        } else {
            slo.latency_objective_percent
        };
        let value = fast.max(slow);
        let firing = severity.map(|severity| {
            let good_now = good(&slo).unwrap_or(100.0);
            let mut summary = format!(
                "{name}: {what} SLO burning its error budget {}x (1 h) and {}x (5 min); {what} {:.2}% over 5 min, objective {}%",
                fmt(b1h),
                fmt(b5m),
                good_now,
                fmt(objective)
            );
            if id == catalog::SLO_LATENCY {
                summary.push_str(&format!(" under {} ms", fmt(slo.latency_threshold_seconds * 1e3)));
            }
            let mut details = vec![
                Field::new("Burn rate (5 min)", format!("{}x", fmt(b5m))),
                Field::new("Burn rate (1 h)", format!("{}x", fmt(b1h))),
            ];
            if slow > 0.0 {
                details.push(Field::new("Burn rate (30 min / 6 h, lower)", format!("{}x", fmt(slow))));
            }
            Firing {
                severity,
                value,
                threshold: if severity == Severity::Critical {
                    e.critical.unwrap_or(e.threshold)
                } else {
                    e.threshold
                },
                summary,
                details,
                upstreams: Vec::new(),
            }
        });
        round.out.push(Observation {
            inspection,
            subject: name.to_owned(),
            application: Some(name.to_owned()),
            node: None,
            effective: e,
            firing,
            value: Some(value),
        });
    }
}

fn resources(
    round: &mut Round<'_>,
    name: &str,
    app: &GetApplicationResponse,
    w1h: Option<&GetApplicationResponse>,
    seconds: f64,
) {
    let Some(r) = app.resources.as_ref() else {
        return;
    };
    if let (Some(cpu), Some(limit)) = (r.cpu_usage_cores, r.cpu_limit_cores.filter(|l| *l > 0.0)) {
        let percent = cpu / limit * 100.0;
        round.app(catalog::CONTAINER_CPU, name, percent, |e| {
            (
                format!(
                    "{name}: CPU at {}% of its limit of {} cores (threshold {}%)",
                    fmt(percent),
                    fmt(limit),
                    fmt(e.threshold)
                ),
                Vec::new(),
                Vec::new(),
            )
        });
    }
    if let Some(throttled) = r.cpu_throttled_seconds {
        let percent = throttled / seconds * 100.0;
        round.app(catalog::CPU_THROTTLING, name, percent, |e| {
            (
                format!(
                    "{name}: throttled by its CPU quota {}% of the time (threshold {}%)",
                    fmt(percent),
                    fmt(e.threshold)
                ),
                Vec::new(),
                Vec::new(),
            )
        });
    }
    round.app(catalog::OOM_KILLS, name, r.oom_kills.round(), |_| {
        (
            format!(
                "{name}: {} processes OOM-killed in the last 5 min",
                fmt(r.oom_kills.round())
            ),
            Vec::new(),
            Vec::new(),
        )
    });
    if let Some(pressure) = r.memory_pressure_ratio {
        round.app(catalog::MEMORY_PRESSURE, name, pressure * 100.0, |e| {
            (
                format!(
                    "{name}: tasks stalled on memory {}% of the time (threshold {}%)",
                    fmt(pressure * 100.0),
                    fmt(e.threshold)
                ),
                Vec::new(),
                Vec::new(),
            )
        });
    }
    if let Some(pressure) = r.io_pressure_ratio {
        round.app(catalog::IO_PRESSURE, name, pressure * 100.0, |e| {
            (
                format!(
                    "{name}: tasks stalled on I/O {}% of the time (threshold {}%)",
                    fmt(pressure * 100.0),
                    fmt(e.threshold)
                ),
                Vec::new(),
                Vec::new(),
            )
        });
    }
    if let Some(r1h) = w1h.and_then(|a| a.resources.as_ref()) {
        round.app(catalog::RESTARTS, name, r1h.restarts.round(), |_| {
            (
                format!(
                    "{name}: {} restarts in the last hour",
                    fmt(r1h.restarts.round())
                ),
                Vec::new(),
                Vec::new(),
            )
        });
        if let (Some(growth), Some(rss)) = (
            r1h.memory_rss_growth_bytes_per_second,
            r1h.memory_rss_bytes.filter(|r| *r > 0.0),
        ) {
            let percent = growth * 3600.0 / rss * 100.0;
            round.app(catalog::MEMORY_LEAK, name, percent, |e| {
                (
                    format!(
                        "{name}: resident memory growing {}% per hour ({} MB/h, now {} MB; threshold {}%)",
                        fmt(percent),
                        fmt(growth * 3600.0 / 1e6),
                        fmt(rss / 1e6),
                        fmt(e.threshold)
                    ),
                    Vec::new(),
                    Vec::new(),
                )
            });
        }
    }
}

/// Per-upstream figures: the worst upstream decides, and every upstream
/// beyond the threshold is listed.
fn upstreams(round: &mut Round<'_>, name: &str, app: &GetApplicationResponse, seconds: f64) {
    let ups = &app.upstreams;
    // Failed connects, summed; unreachable: nothing got through at all.
    let failing: Vec<&pb::Upstream> = ups.iter().filter(|u| u.failed_connects > 0.0).collect();
    if !ups.is_empty() {
        let failed: f64 = failing.iter().map(|u| u.failed_connects).sum();
        let listed = |list: &[&pb::Upstream]| -> (Vec<Field>, Vec<String>) {
            (
                list.iter()
                    .map(|u| {
                        Field::new(
                            format!("→ {}", u.name),
                            format!(
                                "{} failed, {} succeeded",
                                fmt(u.failed_connects.round()),
                                fmt(u.connects.round())
                            ),
                        )
                    })
                    .collect(),
                list.iter().map(|u| u.name.clone()).collect(),
            )
        };
        let names = |list: &[&pb::Upstream]| {
            list.iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        round.app(catalog::FAILED_CONNECTS, name, failed.round(), |_| {
            let (details, upstreams) = listed(&failing);
            (
                format!(
                    "{name}: {} failed TCP connects to {} in the last 5 min",
                    fmt(failed.round()),
                    names(&failing)
                ),
                details,
                upstreams,
            )
        });
        let unreachable: Vec<&pb::Upstream> = failing
            .iter()
            .copied()
            .filter(|u| u.connects <= 0.0)
            .collect();
        let count = unreachable.len() as f64;
        round.app(
            catalog::UPSTREAM_UNREACHABLE,
            name,
            if count > 0.0 {
                unreachable
                    .iter()
                    .map(|u| u.failed_connects)
                    .sum::<f64>()
                    .max(1.0)
            } else {
                0.0
            },
            |_| {
                let (details, upstreams) = listed(&unreachable);
                (
                    format!(
                        "{name}: cannot connect to {}: every attempt failed",
                        names(&unreachable)
                    ),
                    details,
                    upstreams,
                )
            },
        );
        let retransmits: f64 = ups.iter().map(|u| u.retransmits).sum::<f64>() / seconds;
        let noisy: Vec<&pb::Upstream> = ups.iter().filter(|u| u.retransmits > 0.0).collect();
        round.app(catalog::RETRANSMITS, name, retransmits, |e| {
            (
                format!(
                    "{name}: {} TCP retransmissions per second to its upstreams (threshold {})",
                    fmt(retransmits),
                    fmt(e.threshold)
                ),
                noisy
                    .iter()
                    .map(|u| {
                        Field::new(
                            format!("→ {}", u.name),
                            format!("{}/s", fmt(u.retransmits / seconds)),
                        )
                    })
                    .collect(),
                noisy.iter().map(|u| u.name.clone()).collect(),
            )
        });
    }
    // Round trips to upstreams inside the project.
    let rtts: Vec<(&pb::Upstream, f64)> = ups
        .iter()
        .filter(|u| !u.external)
        .filter_map(|u| u.connect_time_mean_seconds.map(|s| (u, s * 1e3)))
        .collect();
    worst(
        round,
        catalog::NETWORK_RTT,
        name,
        &rtts,
        "TCP round trip",
        "ms",
    );
    // DNS servers.
    let dns: Vec<&pb::Upstream> = ups
        .iter()
        .filter(|u| speaks(u.red.as_ref(), &["dns"]))
        .collect();
    let per = |f: &dyn Fn(&pb::Red) -> Option<f64>| -> Vec<(&pb::Upstream, f64)> {
        dns.iter()
            .filter_map(|u| u.red.as_ref().and_then(f).map(|v| (*u, v)))
            .collect()
    };
    worst(
        round,
        catalog::DNS_LATENCY,
        name,
        &per(&|r| r.latency_mean_seconds.map(|s| s * 1e3)),
        "DNS answers take",
        "ms",
    );
    let share = |r: &pb::Red, n: f64| (r.requests > 0.0).then(|| n / r.requests * 100.0);
    worst(
        round,
        catalog::DNS_ERRORS,
        name,
        &per(&|r| share(r, r.errors)),
        "DNS server errors for",
        "% of queries",
    );
    worst(
        round,
        catalog::DNS_NXDOMAIN,
        name,
        &per(&|r| {
            share(
                r,
                r.requests_by_status.get("NXDOMAIN").copied().unwrap_or(0.0),
            )
        }),
        "NXDOMAIN answers for",
        "% of queries",
    );
    // Databases and caches.
    let dbs: Vec<&pb::Upstream> = ups
        .iter()
        .filter(|u| speaks(u.red.as_ref(), &DATABASES))
        .collect();
    let errors: Vec<(&pb::Upstream, f64)> = dbs
        .iter()
        .filter_map(|u| {
            u.red
                .as_ref()
                .and_then(|r| share(r, r.errors))
                .map(|v| (*u, v))
        })
        .collect();
    worst(
        round,
        catalog::DB_AVAILABILITY,
        name,
        &errors,
        "failed queries:",
        "% of queries",
    );
    let latency: Vec<(&pb::Upstream, f64)> = dbs
        .iter()
        .filter_map(|u| {
            u.red
                .as_ref()
                .and_then(|r| r.latency_p99_seconds)
                .map(|s| (*u, s * 1e3))
        })
        .collect();
    worst(
        round,
        catalog::DB_LATENCY,
        name,
        &latency,
        "p99 query latency",
        "ms",
    );
}

/// Judges the worst of per-upstream `values`, listing every upstream over
/// the threshold.
fn worst(
    round: &mut Round<'_>,
    id: &str,
    name: &str,
    values: &[(&pb::Upstream, f64)],
    what: &str,
    unit: &str,
) {
    let Some(max) = values.iter().map(|(_, v)| *v).reduce(f64::max) else {
        return;
    };
    round.app(id, name, max, |e| {
        let over: Vec<&(&pb::Upstream, f64)> =
            values.iter().filter(|(_, v)| *v > e.threshold).collect();
        (
            format!(
                "{name} → {}: {what} {} {unit} (threshold {} {unit})",
                over.iter()
                    .map(|(u, _)| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                fmt(max),
                fmt(e.threshold)
            ),
            over.iter()
                .map(|(u, v)| Field::new(format!("→ {}", u.name), format!("{} {unit}", fmt(*v))))
                .collect(),
            over.iter().map(|(u, _)| u.name.clone()).collect(),
        )
    });
}

fn logs(
    round: &mut Round<'_>,
    name: &str,
    app: &GetApplicationResponse,
    w6h: Option<&GetApplicationResponse>,
    seconds: f64,
) {
    let Some(logs) = app.logs.as_ref() else {
        return;
    };
    let top = logs
        .errors_by_pattern
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(id, n)| (id.clone(), *n));
    let pattern_field = |top: &Option<(String, f64)>| -> Vec<Field> {
        top.iter()
            .map(|(id, n)| {
                Field::new(
                    "Busiest error pattern",
                    format!("{id} ({} messages)", fmt(n.round())),
                )
            })
            .collect()
    };
    round.app(catalog::LOG_ERRORS, name, logs.errors.round(), |_| {
        (
            format!(
                "{name}: {} error messages in its logs in the last 5 min",
                fmt(logs.errors.round())
            ),
            pattern_field(&top),
            Vec::new(),
        )
    });
    if let Some(base) = w6h.and_then(|a| a.logs.as_ref()) {
        if logs.errors >= 10.0 && base.errors > 0.0 {
            let ratio = (logs.errors / seconds) / (base.errors / 21_600.0);
            round.app(catalog::LOG_ERROR_SPIKE, name, ratio, |e| {
                (
                    format!(
                        "{name}: logging errors {}x faster than over the last 6 h (threshold {}x)",
                        fmt(ratio),
                        fmt(e.threshold)
                    ),
                    pattern_field(&top),
                    Vec::new(),
                )
            });
        } else {
            round.app(catalog::LOG_ERROR_SPIKE, name, 0.0, |_| {
                (String::new(), Vec::new(), Vec::new())
            });
        }
    }
}
