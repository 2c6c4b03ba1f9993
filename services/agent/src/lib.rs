//! The node agent: host and process figures from /proc, TCP connections and
//! L7 requests from eBPF, shipped to ingest as `vigil.telemetry.v1` batches
//! (zstd-compressed gRPC). Each batch has an id, so a batch retried after a
//! lost acknowledgement is stored once. Every batch goes through a bounded
//! on-disk spool (see `spool`), so an ingest outage or an agent restart
//! loses nothing within the bound.

pub mod cgroup;
pub mod cluster;
pub mod config;
pub mod ebpf;
pub mod listen;
pub mod logs;
pub mod proc;
pub mod resources;

mod spool;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use vigil_runtime::time::now_ms;

pub use config::AgentConfig;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tonic::{
    Code, codec::CompressionEncoding, service::interceptor::InterceptedService, transport::Channel,
};
use vigil_proto::{
    names,
    telemetry::v1::{
        AgentInfo, Label, PushRequest, Resource, ResourceMetrics, ResourceSpans, Sample,
        TimeSeries, telemetry_service_client::TelemetryServiceClient,
    },
};
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, Shutdown, auth::BearerAuth, config::ConfigError,
    http::HttpServer,
};

use crate::{
    proc::{HostFigures, ProcCollector, ProcessFigures},
    spool::Spool,
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

type Client = TelemetryServiceClient<InterceptedService<Channel, BearerAuth>>;

pub(crate) struct AgentMetrics {
    pub(crate) batches_spooled: Counter,
    batches_acknowledged: Counter,
    batches_failed: Counter,
    batches_dropped: Counter,
    spans_dropped: Counter,
    spool_batches: Gauge,
    spool_bytes: Gauge,
}

impl AgentMetrics {
    fn new(metrics: &Metrics) -> Self {
        let this = Self {
            batches_spooled: Counter::default(),
            batches_acknowledged: Counter::default(),
            batches_failed: Counter::default(),
            batches_dropped: Counter::default(),
            spans_dropped: Counter::default(),
            spool_batches: Gauge::default(),
            spool_bytes: Gauge::default(),
        };
        metrics.register(
            "batches_spooled",
            "Batches collected and written to the spool",
            this.batches_spooled.clone(),
        );
        metrics.register(
            "batches_acknowledged",
            "Batches ingest acknowledged as stored",
            this.batches_acknowledged.clone(),
        );
        metrics.register(
            "batch_push_failures",
            "Push attempts that failed (the batch is retried)",
            this.batches_failed.clone(),
        );
        metrics.register(
            "batches_dropped",
            "Batches dropped: refused by ingest, damaged, or the oldest when the spool was full",
            this.batches_dropped.clone(),
        );
        metrics.register(
            "spans_dropped",
            "HTTP exchanges not shipped as spans: more than 20000 in one interval",
            this.spans_dropped.clone(),
        );
        metrics.register(
            "spool_batches",
            "Batches waiting in the spool for ingest",
            this.spool_batches.clone(),
        );
        metrics.register(
            "spool_bytes",
            "Bytes of the batches waiting in the spool",
            this.spool_bytes.clone(),
        );
        this
    }

    fn spooled(&self, spool: &Spool) {
        self.spool_batches.set(spool.len() as i64);
        self.spool_bytes.set(spool.bytes() as i64);
    }
}

/// Runs the agent until `shutdown`.
pub async fn run(config: AgentConfig, shutdown: Shutdown) -> Result<(), AgentError> {
    let api_key = config.resolve_api_key()?;
    let node = if config.node.is_empty() {
        proc::hostname(&config.proc_root)
    } else {
        config.node.clone()
    };
    let tracers = if config.ebpf {
        (
            ebpf::TcpTracer::start(),
            ebpf::L7Tracer::start_in(&config.proc_root),
        )
    } else {
        let off = "turned off (agent.ebpf = false)".to_owned();
        (Err(off.clone()), Err(off))
    };
    let (tracer, l7) = match tracers {
        (Ok(tcp), Ok(l7)) => {
            let tls = match &l7.tls {
                Ok(libraries) => format!("TLS seen through {libraries:?}"),
                Err(reason) => format!("TLS not seen: {reason}"),
            };
            tracing::info!(
                node,
                collectors = "proc, cgroups, ebpf-tcp, ebpf-l7",
                tls,
                "agent collecting: /proc, cgroups and eBPF (TCP, requests)"
            );
            (
                Some(std::sync::Arc::new(std::sync::Mutex::new(tcp))),
                Some(std::sync::Arc::new(std::sync::Mutex::new(l7))),
            )
        }
        (tcp, l7) => {
            let mut reasons: Vec<String> = [tcp.err(), l7.err()].into_iter().flatten().collect();
            reasons.dedup();
            let reason = reasons.join("; ");
            tracing::warn!(node, collectors = "proc", ebpf = %format!("eBPF unavailable: {reason}"), "agent collecting from /proc");
            (None, None)
        }
    };

    let profiler = if config.ebpf && config.profiling.enabled {
        match ebpf::Profiler::start() {
            Ok(p) => Some(Arc::new(Mutex::new(p))),
            Err(reason) => {
                tracing::warn!(reason, "CPU profiles are off");
                None
            }
        }
    } else {
        None
    };

    let metrics = Metrics::new("agent");
    let readiness = Readiness::default();
    let http = HttpServer::bind("agent-http", &config.http).await?;
    let spool_dir = config.spool_dir();
    let shipper = Shipper::open(
        &metrics,
        "agent",
        &config.ingest_endpoint,
        config.push_timeout,
        &api_key,
        &spool_dir,
        config.max_spool_bytes,
    )?;
    // Where the log readers' positions are committed with each batch.
    let positions_path = spool_dir.join("log-positions");
    let saved_positions = lock(&shipper.spool)
        .recover_sidecar(&positions_path)
        .map_err(|e| {
            ConfigError::invalid("agent.spool_dir", format!("cannot read log positions: {e}"))
        })?;
    let spooled = tokio::sync::Notify::new();
    let agent_id = hex::encode(rand::random::<[u8; 8]>());
    let mut sequence = 0u64;
    let agent_info = AgentInfo {
        agent_id: agent_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        collectors: if tracer.is_some() {
            vec![
                "proc".to_owned(),
                "ebpf-tcp".to_owned(),
                "ebpf-l7".to_owned(),
            ]
        } else {
            vec!["proc".to_owned()]
        },
    };

    let collect_loop = async {
        // Prime the CPU counters so that the first batch already has rates.
        let (mut collector, primed) =
            collect(Collectors::new(&config, saved_positions.as_deref())).await;
        match primed {
            // On a first start the log readers only noted where the files
            // end: hold that. Lines read now (written while the agent was
            // down) are read again and shipped by the next collection.
            Ok(first) if first.logs.logs.is_empty() => collector.logs.commit(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "first collection failed"),
        }
        readiness.set_ready(true);
        let mut window_start = (std::time::Instant::now(), now_ms() * 1_000_000);
        while shutdown.sleep(config.interval).await {
            let (c, collected) = collect(collector).await;
            collector = c;
            match collected {
                Ok(Collected {
                    host,
                    processes,
                    owners,
                    node_usage,
                    listening,
                    logs,
                }) => {
                    let processes = proc::busiest(processes, config.max_processes);
                    let mut metrics = resource_metrics(&config.cluster, &node, &host, &processes);
                    if let Some(rm) = metrics.first_mut() {
                        rm.series
                            .extend(cgroup_series(&owners, &node_usage, now_ms()));
                        rm.series.extend(logs.series);
                    }
                    let mut who = Who::new(&config.proc_root);
                    if let Some(rm) = metrics.first_mut() {
                        rm.series
                            .extend(listen_series(&listening, &mut who, now_ms()));
                    }
                    let peers = &collector.listeners;
                    let alive = |pid: u32| config.proc_root.join(pid.to_string()).exists();
                    if let Some(tracer) = &tracer {
                        let mut tracer = tracer
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        tracer.drain();
                        if let Some(rm) = metrics.first_mut() {
                            rm.series
                                .extend(tcp_series(&tracer.stats, &mut who, peers, now_ms()));
                        }
                        tracer.stats.forget_exited(alive);
                    }
                    let mut spans = Vec::new();
                    if let Some(l7) = &l7 {
                        let mut l7 = l7.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        l7.drain();
                        if let Some(rm) = metrics.first_mut() {
                            rm.series
                                .extend(l7_series(&l7.stats, &mut who, peers, now_ms()));
                        }
                        shipper
                            .metrics
                            .spans_dropped
                            .inc_by(std::mem::take(&mut l7.stats.spans_dropped));
                        spans = http_spans(
                            std::mem::take(&mut l7.stats.spans),
                            &mut who,
                            &resource(&config.cluster, &node),
                        );
                        l7.stats.forget_exited(alive);
                    }
                    let mut profiles = Vec::new();
                    if let Some(profiler) = &profiler
                        && window_start.0.elapsed() >= config.profiling.window
                    {
                        let profiler = profiler.clone();
                        let read = tokio::task::spawn_blocking(move || {
                            profiler
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .collect()
                        })
                        .await
                        .unwrap_or_default();
                        let duration =
                            i64::try_from(window_start.0.elapsed().as_nanos()).unwrap_or(i64::MAX);
                        profiles = cpu_profiles(
                            read,
                            &mut who,
                            &resource(&config.cluster, &node),
                            window_start.1,
                            duration,
                        );
                        window_start = (std::time::Instant::now(), now_ms() * 1_000_000);
                    }
                    sequence += 1;
                    let resource_logs = logs
                        .logs
                        .into_iter()
                        .map(|mut l| {
                            l.resource = Some(resource(&config.cluster, &node));
                            l
                        })
                        .collect();
                    let stored = shipper.spool(
                        &PushRequest {
                            batch_id: format!("{agent_id}-{sequence}"),
                            agent: Some(agent_info.clone()),
                            metrics,
                            spans,
                            logs: resource_logs,
                            profiles,
                            events: Vec::new(),
                        },
                        collector
                            .logs
                            .enabled()
                            .then_some((positions_path.as_path(), logs.positions.as_slice())),
                    );
                    if stored {
                        collector.logs.commit();
                    }
                    spooled.notify_one();
                }
                Err(e) => tracing::warn!(error = %e, "collection failed"),
            }
        }
        Ok::<(), RuntimeError>(())
    };
    let ship_loop = async {
        shipper.run(&spooled, &shutdown).await;
        Ok::<(), RuntimeError>(())
    };
    // The kernel does not wake the agent per event; it drains the ring
    // buffer on this timer so that bursts do not overflow it.
    let drain_loop = async {
        if let (Some(tracer), Some(l7)) = (&tracer, &l7) {
            while shutdown.sleep(Duration::from_millis(100)).await {
                tracer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .drain();
                l7.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .drain();
            }
        }
        Ok::<(), RuntimeError>(())
    };
    tokio::try_join!(
        collect_loop,
        ship_loop,
        drain_loop,
        http.serve(axum::Router::new(), &metrics, &readiness, &shutdown)
    )?;
    Ok(())
}

/// The collectors that read files: /proc, cgroups, /sys.
struct Collectors {
    proc: ProcCollector,
    resources: resources::ResourceCollector,
    listeners: listen::Listeners,
    logs: logs::LogCollector,
    logs_config: logs::LogsConfig,
    proc_root: std::path::PathBuf,
    sys_root: std::path::PathBuf,
}

impl Collectors {
    fn new(config: &AgentConfig, saved_positions: Option<&[u8]>) -> Self {
        Self::at(
            config.proc_root.clone(),
            config.sys_root.clone(),
            config.logs.clone(),
            saved_positions,
        )
    }

    fn at(
        proc_root: std::path::PathBuf,
        sys_root: std::path::PathBuf,
        logs_config: logs::LogsConfig,
        saved_positions: Option<&[u8]>,
    ) -> Self {
        Self {
            proc: ProcCollector::new(&proc_root),
            resources: resources::ResourceCollector::new(&proc_root, &sys_root.join("fs/cgroup")),
            listeners: listen::Listeners::new(&proc_root),
            logs: logs::LogCollector::new(logs_config.clone(), saved_positions),
            logs_config,
            proc_root,
            sys_root,
        }
    }
}

struct Collected {
    host: HostFigures,
    processes: Vec<ProcessFigures>,
    owners: Vec<resources::OwnerUsage>,
    node_usage: resources::NodeUsage,
    listening: Vec<(std::net::SocketAddr, u32)>,
    logs: logs::LogsCollected,
}

/// Collects off the async runtime: reading every /proc/<pid>/stat and
/// every cgroup takes milliseconds.
async fn collect(mut c: Collectors) -> (Collectors, Result<Collected, proc::CollectError>) {
    let proc_root = c.proc_root.clone();
    let sys_root = c.sys_root.clone();
    let logs_config = c.logs_config.clone();
    match tokio::task::spawn_blocking(move || {
        let result = c.proc.collect().map(|(host, processes)| Collected {
            host,
            processes,
            owners: c.resources.collect(),
            node_usage: resources::node_usage(&c.proc_root, &c.sys_root),
            listening: c.listeners.refresh(),
            logs: c.logs.collect(now_ms() * 1_000_000, now_ms()),
        });
        (c, result)
    })
    .await
    {
        Ok(pair) => pair,
        // The collectors panicked: start them afresh (logs from the files'
        // ends: a bug is no reason to replay them).
        Err(e) => (
            Collectors::at(proc_root.clone(), sys_root, logs_config, None),
            Err(proc::CollectError::new(
                &proc_root,
                format!("collector task failed: {e}"),
            )),
        ),
    }
}

fn series(name: &str, labels: Vec<Label>, timestamp_ms: i64, value: f64) -> TimeSeries {
    TimeSeries {
        name: name.to_owned(),
        labels,
        samples: vec![Sample {
            timestamp_ms,
            value,
        }],
    }
}

/// The figures of one collection as `vigil.telemetry.v1` series.
pub fn resource_metrics(
    cluster: &str,
    node: &str,
    host: &HostFigures,
    processes: &[ProcessFigures],
) -> Vec<ResourceMetrics> {
    let ts = now_ms();
    let mut out = Vec::with_capacity(5 + 2 * processes.len());
    if let Some(ratio) = host.cpu_usage_ratio {
        out.push(series(names::HOST_CPU_USAGE_RATIO, vec![], ts, ratio));
    }
    for (name, value) in [
        (names::HOST_CPU_CORES, host.cpu_cores),
        (names::HOST_MEMORY_TOTAL_BYTES, host.memory_total_bytes),
        (
            names::HOST_MEMORY_AVAILABLE_BYTES,
            host.memory_available_bytes,
        ),
        (names::HOST_LOAD1, host.load1),
    ] {
        out.push(series(name, vec![], ts, value));
    }
    for p in processes {
        let labels = vec![
            Label {
                name: names::LABEL_PID.to_owned(),
                value: p.pid.to_string(),
            },
            Label {
                name: names::LABEL_PROCESS.to_owned(),
                value: p.name.clone(),
            },
        ];
        if let Some(cores) = p.cpu_usage_cores {
            out.push(series(
                names::PROCESS_CPU_USAGE_CORES,
                labels.clone(),
                ts,
                cores,
            ));
        }
        out.push(series(
            names::PROCESS_MEMORY_RSS_BYTES,
            labels,
            ts,
            p.memory_rss_bytes,
        ));
    }
    vec![ResourceMetrics {
        resource: Some(resource(cluster, node)),
        series: out,
    }]
}

fn resource(cluster: &str, node: &str) -> Resource {
    Resource {
        cluster: cluster.to_owned(),
        node: node.to_owned(),
        ..Default::default()
    }
}

/// Longest frame name shipped (the store's bound).
const MAX_FRAME_BYTES: usize = 1024;

/// A window's CPU samples as profiles, one per process; the service is
/// the process's application.
pub fn cpu_profiles(
    profiles: Vec<ebpf::profile::ProcessProfile>,
    who: &mut Who<'_>,
    resource: &Resource,
    start_ns: i64,
    duration_ns: i64,
) -> Vec<vigil_proto::telemetry::v1::Profile> {
    use vigil_proto::telemetry::v1::{Profile, StackSample};
    profiles
        .into_iter()
        .map(|p| {
            let labels = who.labels(p.pid).to_vec();
            Profile {
                resource: Some(resource.clone()),
                service: application(&labels).unwrap_or_else(|| format!("pid {}", p.pid)),
                resource_attributes: labels,
                time_unix_nano: start_ns,
                duration_nanos: duration_ns.max(1),
                profile_type: "cpu".to_owned(),
                stacks: p
                    .stacks
                    .into_iter()
                    .map(|(frames, value)| StackSample {
                        frames: frames
                            .into_iter()
                            .map(|mut f| {
                                if f.len() > MAX_FRAME_BYTES {
                                    let mut cut = MAX_FRAME_BYTES;
                                    while !f.is_char_boundary(cut) {
                                        cut -= 1;
                                    }
                                    f.truncate(cut);
                                }
                                f
                            })
                            .collect(),
                        value,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Nanoseconds to add to the kernel's monotonic clock to get Unix time.
fn monotonic_to_unix_ns() -> i64 {
    use rustix::time::{ClockId, clock_gettime};
    let as_ns = |t: rustix::time::Timespec| t.tv_sec * 1_000_000_000 + t.tv_nsec;
    as_ns(clock_gettime(ClockId::Realtime)) - as_ns(clock_gettime(ClockId::Monotonic))
}

/// HTTP exchanges as spans, one `ResourceSpans` per process. The service
/// is the process's systemd service, else its container, else its name.
/// A request that carried a traceparent joins that trace as a child of the
/// span it names; others start a trace of their own.
pub fn http_spans(
    spans: Vec<ebpf::l7::HttpSpan>,
    who: &mut Who<'_>,
    resource: &Resource,
) -> Vec<ResourceSpans> {
    use vigil_proto::telemetry::v1::{Span, SpanKind};
    let offset = monotonic_to_unix_ns();
    let mut by_pid: std::collections::BTreeMap<u32, (String, Vec<Span>)> = Default::default();
    for s in spans {
        let (trace_id, parent_span_id) = match s.parent {
            Some(p) => (p.trace_id.to_vec(), p.parent_id.to_vec()),
            None => (rand::random::<[u8; 16]>().to_vec(), Vec::new()),
        };
        let start = i64::try_from(s.start_ns)
            .unwrap_or(i64::MAX)
            .saturating_add(offset);
        let end = start.saturating_add(i64::try_from(s.latency_ns).unwrap_or(i64::MAX));
        let (kind, error) = match s.side {
            ebpf::l7::Side::Server => (SpanKind::Server, s.status >= 500),
            ebpf::l7::Side::Client => (SpanKind::Client, s.status >= 400),
        };
        let mut attributes = vec![
            label("http.request.method", s.method.to_owned()),
            label("http.response.status_code", s.status.to_string()),
            label("url.path", s.path),
        ];
        if let (ebpf::l7::Side::Client, Some(destination)) = (s.side, s.destination) {
            attributes.push(label("server.address", destination.ip().to_string()));
            attributes.push(label("server.port", destination.port().to_string()));
        }
        let entry = by_pid
            .entry(s.pid)
            .or_insert_with(|| (s.process, Vec::new()));
        entry.1.push(Span {
            trace_id,
            span_id: rand::random::<[u8; 8]>().to_vec(),
            parent_span_id,
            name: s.method.to_owned(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            error,
            attributes,
        });
    }
    by_pid
        .into_iter()
        .map(|(pid, (process, spans))| {
            let mut labels = who.labels(pid).to_vec();
            // Gone already: named as the kernel saw it.
            if !process.is_empty() && !labels.iter().any(|l| l.name == names::LABEL_PROCESS) {
                labels.push(label(names::LABEL_PROCESS, process));
            }
            let service = application(&labels).unwrap_or_else(|| format!("pid {pid}"));
            ResourceSpans {
                resource: Some(resource.clone()),
                service,
                resource_attributes: labels,
                spans,
            }
        })
        .collect()
}

/// Container/service and node resources as series: one per figure the
/// kernel keeps, labelled with the owner (`container_id` or
/// `systemd_service`) and device, mount point, interface or resource.
pub fn cgroup_series(
    owners: &[resources::OwnerUsage],
    node: &resources::NodeUsage,
    ts: i64,
) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    for o in owners {
        let (name, value) = o.owner.label();
        let owner = vec![label(name, value)];
        let u = &o.usage;
        for (metric, value) in [
            (names::CONTAINER_CPU_USAGE_SECONDS_TOTAL, u.cpu_seconds),
            (
                names::CONTAINER_CPU_THROTTLED_SECONDS_TOTAL,
                u.throttled_seconds,
            ),
            (names::CONTAINER_CPU_LIMIT_CORES, u.cpu_limit_cores),
            (names::CONTAINER_MEMORY_RSS_BYTES, u.memory_rss_bytes),
            (names::CONTAINER_MEMORY_CACHE_BYTES, u.memory_cache_bytes),
            (names::CONTAINER_MEMORY_LIMIT_BYTES, u.memory_limit_bytes),
            (names::CONTAINER_OOM_KILLS_TOTAL, u.oom_kills),
            (names::CONTAINER_RESTARTS_TOTAL, Some(o.restarts as f64)),
        ] {
            if let Some(value) = value {
                out.push(series(metric, owner.clone(), ts, value));
            }
        }
        for (device, read, written) in &u.disk {
            let mut labels = owner.clone();
            labels.push(label(names::LABEL_DEVICE, device.clone()));
            out.push(series(
                names::CONTAINER_DISK_READ_BYTES_TOTAL,
                labels.clone(),
                ts,
                *read,
            ));
            out.push(series(
                names::CONTAINER_DISK_WRITTEN_BYTES_TOTAL,
                labels,
                ts,
                *written,
            ));
        }
        out.extend(pressure_series(
            names::CONTAINER_PRESSURE_SECONDS_TOTAL,
            &owner,
            &u.pressure,
            ts,
        ));
    }
    for (device, read, written, busy) in &node.disks {
        let labels = vec![label(names::LABEL_DEVICE, device.clone())];
        for (metric, value) in [
            (names::NODE_DISK_READ_BYTES_TOTAL, read),
            (names::NODE_DISK_WRITTEN_BYTES_TOTAL, written),
            (names::NODE_DISK_IO_SECONDS_TOTAL, busy),
        ] {
            out.push(series(metric, labels.clone(), ts, *value));
        }
    }
    for (mount_point, device, size, available) in &node.filesystems {
        let labels = vec![
            label(names::LABEL_MOUNT_POINT, mount_point.clone()),
            label(names::LABEL_DEVICE, device.clone()),
        ];
        out.push(series(
            names::NODE_FILESYSTEM_SIZE_BYTES,
            labels.clone(),
            ts,
            *size,
        ));
        out.push(series(
            names::NODE_FILESYSTEM_AVAILABLE_BYTES,
            labels,
            ts,
            *available,
        ));
    }
    for (interface, received, sent, rx_errors, tx_errors) in &node.interfaces {
        let labels = vec![label(names::LABEL_INTERFACE, interface.clone())];
        for (metric, value) in [
            (names::NODE_NET_RECEIVED_BYTES_TOTAL, received),
            (names::NODE_NET_TRANSMITTED_BYTES_TOTAL, sent),
            (names::NODE_NET_RECEIVE_ERRORS_TOTAL, rx_errors),
            (names::NODE_NET_TRANSMIT_ERRORS_TOTAL, tx_errors),
        ] {
            out.push(series(metric, labels.clone(), ts, *value));
        }
    }
    out.extend(pressure_series(
        names::NODE_PRESSURE_SECONDS_TOTAL,
        &[],
        &node.pressure,
        ts,
    ));
    out
}

fn pressure_series(
    metric: &str,
    base: &[Label],
    pressure: &[(&'static str, &'static str, f64)],
    ts: i64,
) -> impl Iterator<Item = TimeSeries> {
    pressure.iter().map(move |(resource, kind, seconds)| {
        let mut labels = base.to_vec();
        labels.push(label(names::LABEL_RESOURCE, (*resource).to_owned()));
        labels.push(label(names::LABEL_KIND, (*kind).to_owned()));
        series(metric, labels, ts, *seconds)
    })
}

fn label(name: &str, value: String) -> Label {
    Label {
        name: name.to_owned(),
        value,
    }
}

/// The application named by a process's labels: its systemd service, else
/// its container id, else its process name.
fn application(labels: &[Label]) -> Option<String> {
    let value_of = |name: &str| {
        labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.clone())
    };
    value_of("systemd_service")
        .or_else(|| value_of("container_id"))
        .or_else(|| value_of(names::LABEL_PROCESS))
}

/// Listening addresses per process, as info series (value 1).
pub fn listen_series(
    listening: &[(std::net::SocketAddr, u32)],
    who: &mut Who<'_>,
    ts: i64,
) -> Vec<TimeSeries> {
    listening
        .iter()
        .map(|(listen, pid)| {
            let mut labels = who.labels(*pid).to_vec();
            labels.push(label(names::LABEL_LISTEN, listen.to_string()));
            series(names::TCP_LISTEN_INFO, labels, ts, 1.0)
        })
        .collect()
}

/// Who a process is, as labels: `pid`, `process` (its `comm`) and its
/// owner (`container_id` or `systemd_service`), read from /proc once per
/// process per shipment.
pub struct Who<'a> {
    proc_root: &'a std::path::Path,
    known: std::collections::HashMap<u32, Vec<Label>>,
}

impl<'a> Who<'a> {
    pub fn new(proc_root: &'a std::path::Path) -> Self {
        Self {
            proc_root,
            known: Default::default(),
        }
    }

    /// The application a process is: its systemd service, else its
    /// container id, else its process name.
    pub fn application(&mut self, pid: u32) -> Option<String> {
        application(self.labels(pid))
    }

    /// `destination_application` for a destination on this node that a
    /// known process listens on.
    pub fn destination_application(
        &mut self,
        peers: &listen::Listeners,
        destination: std::net::SocketAddr,
    ) -> Option<Label> {
        let pid = peers.owner_of(destination)?;
        Some(label(
            names::LABEL_DESTINATION_APPLICATION,
            self.application(pid)?,
        ))
    }

    /// The labels of `pid`; none for 0 (not known).
    pub fn labels(&mut self, pid: u32) -> &[Label] {
        let proc_root = self.proc_root;
        self.known.entry(pid).or_insert_with(|| {
            if pid == 0 {
                return Vec::new();
            }
            let mut labels = vec![label(names::LABEL_PID, pid.to_string())];
            let dir = proc_root.join(pid.to_string());
            if let Ok(comm) = std::fs::read_to_string(dir.join("comm")) {
                labels.push(label(names::LABEL_PROCESS, comm.trim().to_owned()));
            }
            if let Some(owner) = cgroup::owner_of_pid(proc_root, pid) {
                let (name, value) = owner.label();
                labels.push(label(name, value));
            }
            labels
        })
    }
}

/// The TCP tracer's counts as series: per process and destination, and
/// accepts per listening address.
pub fn tcp_series(
    stats: &ebpf::tcp::TcpStats,
    who: &mut Who<'_>,
    peers: &listen::Listeners,
    ts: i64,
) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    for ((pid, destination), o) in &stats.outgoing {
        let mut labels = who.labels(*pid).to_vec();
        labels.push(label(names::LABEL_DESTINATION, destination.to_string()));
        labels.extend(who.destination_application(peers, *destination));
        for (name, value) in [
            (
                names::TCP_SUCCESSFUL_CONNECTS_TOTAL,
                o.successful_connects as f64,
            ),
            (names::TCP_FAILED_CONNECTS_TOTAL, o.failed_connects as f64),
            (
                names::TCP_CONNECT_SECONDS_TOTAL,
                o.connect_time_ns as f64 / 1e9,
            ),
            (names::TCP_ACTIVE_CONNECTIONS, o.active as f64),
            (names::TCP_RETRANSMITS_TOTAL, o.retransmits as f64),
        ] {
            out.push(series(name, labels.clone(), ts, value));
        }
    }
    out.push(series(
        names::NODE_OOM_KILLS_TOTAL,
        vec![],
        ts,
        stats.oom_kills as f64,
    ));
    for (listen, accepts) in &stats.accepts {
        out.push(series(
            names::TCP_ACCEPTS_TOTAL,
            vec![label(names::LABEL_LISTEN, listen.to_string())],
            ts,
            *accepts as f64,
        ));
    }
    out
}

/// L7 exchanges as series: requests and summed latency per process, side,
/// destination (client side), protocol, operation and status.
pub fn l7_series(
    stats: &ebpf::l7::L7Stats,
    who: &mut Who<'_>,
    peers: &listen::Listeners,
    ts: i64,
) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    // The histogram leaves out operation and status, to keep series few.
    let mut histograms: std::collections::BTreeMap<_, ebpf::l7::Counts> = Default::default();
    for (key, counts) in &stats.requests {
        histograms
            .entry((
                key.pid,
                key.side.as_str(),
                key.destination,
                key.protocol.as_str(),
            ))
            .or_default()
            .merge(counts);
    }
    for ((pid, side, destination, protocol), counts) in histograms {
        let mut labels = who.labels(pid).to_vec();
        labels.extend([
            label(names::LABEL_SIDE, side.to_owned()),
            label(names::LABEL_PROTOCOL, protocol.to_owned()),
        ]);
        if let Some(destination) = destination {
            labels.push(label(names::LABEL_DESTINATION, destination.to_string()));
            labels.extend(who.destination_application(peers, destination));
        }
        let mut cumulative = 0;
        let bounds = ebpf::l7::LATENCY_BUCKETS.iter().map(|b| b.to_string());
        for (le, count) in bounds.chain(["+Inf".to_owned()]).zip(counts.buckets) {
            cumulative += count;
            let mut labels = labels.clone();
            labels.push(label("le", le));
            out.push(series(
                names::L7_REQUEST_DURATION_BUCKET,
                labels,
                ts,
                cumulative as f64,
            ));
        }
    }
    for (key, counts) in &stats.requests {
        let mut labels = who.labels(key.pid).to_vec();
        labels.extend([
            label(names::LABEL_SIDE, key.side.as_str().to_owned()),
            label(names::LABEL_PROTOCOL, key.protocol.as_str().to_owned()),
            label(names::LABEL_OPERATION, key.operation.to_owned()),
            label(names::LABEL_STATUS, key.status.clone()),
        ]);
        if let Some(destination) = key.destination {
            labels.push(label(names::LABEL_DESTINATION, destination.to_string()));
            labels.extend(who.destination_application(peers, destination));
        }
        out.push(series(
            names::L7_REQUESTS_TOTAL,
            labels.clone(),
            ts,
            counts.requests as f64,
        ));
        out.push(series(
            names::L7_REQUEST_SECONDS_TOTAL,
            labels,
            ts,
            counts.latency_ns as f64 / 1e9,
        ));
    }
    out
}

/// Ships spooled batches oldest first; a batch leaves the spool only once
/// ingest acknowledged it (or refused it for good).
pub(crate) struct Shipper {
    client: Client,
    spool: Arc<Mutex<Spool>>,
    pub(crate) metrics: AgentMetrics,
}

fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    spool
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shipper {
    /// A client of ingest at `endpoint` and the spool in `spool_dir`
    /// (`section` names the config section in errors).
    pub(crate) fn open(
        metrics: &Metrics,
        section: &str,
        endpoint: &str,
        push_timeout: Duration,
        api_key: &str,
        spool_dir: &std::path::Path,
        max_spool_bytes: u64,
    ) -> Result<Self, AgentError> {
        let bearer = BearerAuth::new(api_key)?;
        let channel = vigil_runtime::grpc::channel(endpoint, push_timeout)?;
        let client = TelemetryServiceClient::with_interceptor(channel, bearer)
            .send_compressed(CompressionEncoding::Zstd);
        let spool = Spool::open(spool_dir, max_spool_bytes).map_err(|e| {
            ConfigError::invalid(
                format!("{section}.spool_dir"),
                format!("cannot open the spool: {e}"),
            )
        })?;
        if !spool.is_empty() {
            tracing::info!(
                batches = spool.len(),
                bytes = spool.bytes(),
                dir = %spool_dir.display(),
                "resuming: batches from an earlier run wait in the spool"
            );
        }
        let metrics = AgentMetrics::new(metrics);
        metrics.spooled(&spool);
        Ok(Self {
            client,
            spool: Arc::new(Mutex::new(spool)),
            metrics,
        })
    }

    /// The sidecar kept with the newest spooled batch (None when there is
    /// none or it cannot be read, which is logged).
    pub(crate) fn recover_sidecar(&self, path: &std::path::Path) -> Option<Vec<u8>> {
        lock(&self.spool)
            .recover_sidecar(path)
            .inspect_err(
                |e| tracing::warn!(error = %e, path = %path.display(), "cannot read a sidecar"),
            )
            .ok()
            .flatten()
    }

    /// Spools `batch` (with its sidecar), dropping the oldest batches when
    /// the spool is full; whether it was spooled.
    pub(crate) fn spool(
        &self,
        batch: &PushRequest,
        sidecar: Option<(&std::path::Path, &[u8])>,
    ) -> bool {
        let mut spool = lock(&self.spool);
        let spooled = match spool.push_with(batch, sidecar) {
            Ok(0) => true,
            Ok(dropped) => {
                self.metrics.batches_dropped.inc_by(dropped as u64);
                tracing::warn!(
                    dropped,
                    spooled_bytes = spool.bytes(),
                    "spool full: dropped the oldest unacknowledged batches"
                );
                true
            }
            Err(e) => {
                self.metrics.batches_dropped.inc();
                tracing::error!(error = %e, "could not spool a batch (its log lines are read again; its events wait for the next shipment)");
                false
            }
        };
        if spooled {
            self.metrics.batches_spooled.inc();
        }
        self.metrics.spooled(&spool);
        spooled
    }

    /// Sends until the spool is empty (`Ok`) or ingest cannot take the
    /// oldest batch (`Err`, retried later).
    async fn drain(&self) -> Result<(), tonic::Status> {
        loop {
            let front = lock(&self.spool).front();
            let (seq, batch) = match front {
                Ok(Some(next)) => next,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.metrics.batches_dropped.inc();
                    tracing::error!(error = %e, "dropped a spooled batch");
                    continue;
                }
            };
            let batch_id = batch.batch_id.clone();
            let outcome = self.client.clone().push(batch).await;
            match outcome {
                Ok(response) => {
                    let response = response.into_inner();
                    tracing::debug!(
                        batch_id,
                        samples = response.samples_stored,
                        duplicate = response.duplicate,
                        "batch acknowledged"
                    );
                    self.metrics.batches_acknowledged.inc();
                }
                Err(status) if is_permanent(status.code()) => {
                    tracing::error!(
                        batch_id,
                        code = ?status.code(),
                        error = status.message(),
                        "ingest refused the batch; dropping it"
                    );
                    self.metrics.batches_dropped.inc();
                }
                Err(status) => {
                    self.metrics.batches_failed.inc();
                    return Err(status);
                }
            }
            let mut spool = lock(&self.spool);
            if let Err(e) = spool.remove(seq) {
                // Sent again after a restart at worst: ingest stores it once.
                tracing::warn!(error = %e, "could not remove a sent batch from the spool");
            }
            self.metrics.spooled(&spool);
        }
    }

    /// Ships whenever a batch is spooled, backing off while ingest is
    /// unreachable; a last bounded attempt at shutdown, and whatever is
    /// left waits in the spool for the next start.
    pub(crate) async fn run(&self, spooled: &tokio::sync::Notify, shutdown: &Shutdown) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            match self.drain().await {
                Ok(()) => {
                    backoff.reset();
                    tokio::select! {
                        () = spooled.notified() => {}
                        () = shutdown.wait() => break,
                    }
                }
                Err(status) => {
                    let wait = backoff.next();
                    tracing::warn!(
                        code = ?status.code(),
                        error = status.message(),
                        spooled = lock(&self.spool).len(),
                        retry_in = ?wait,
                        "ingest unreachable; batches wait in the spool"
                    );
                    if !shutdown.sleep(wait).await {
                        break;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.drain()).await;
    }
}

/// Exponential backoff with jitter, so that agents restarted together do
/// not retry in step.
struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            current: first,
        }
    }

    fn reset(&mut self) {
        self.current = self.first;
    }

    /// The wait before the next attempt: the current step ±20 %.
    fn next(&mut self) -> Duration {
        let wait = self.current.mul_f64(rand::random_range(0.8..1.2));
        self.current = (self.current * 2).min(self.max);
        wait
    }
}

/// Codes after which retrying the same batch cannot succeed.
fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition | Code::Unimplemented
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counts_become_labelled_series() {
        use ebpf::l7::{Exchange, L7Stats, Side};
        let mut stats = L7Stats::default();
        let me = std::process::id();
        let mut request = [0u8; ebpf::l7::REQUEST_PREFIX];
        request[..15].copy_from_slice(b"GET / HTTP/1.1\r");
        let mut response = [0u8; ebpf::l7::RESPONSE_PREFIX];
        response.copy_from_slice(b"HTTP/1.1 503 Ser");
        for _ in 0..3 {
            stats.record(&Exchange {
                pid: me,
                side: Side::Client,
                destination: Some("10.0.0.9:80".parse().unwrap()),
                start_ns: 1,
                comm: [0; 16],
                latency_ns: 2_000_000,
                request,
                request_len: 15,
                response,
            });
        }
        let out = l7_series(
            &stats,
            &mut Who::new(std::path::Path::new("/proc")),
            &listen::Listeners::new(std::path::Path::new("/nonexistent")),
            1_000,
        );
        // requests, seconds, and 12 histogram buckets.
        assert_eq!(out.len(), 14);
        let bucket = |le: &str| {
            out.iter()
                .find(|s| {
                    s.name == names::L7_REQUEST_DURATION_BUCKET
                        && s.labels.iter().any(|l| l.name == "le" && l.value == le)
                })
                .map(|s| s.samples[0].value)
        };
        // 2 ms each: below 0.005 and every larger bound, cumulative.
        assert_eq!(bucket("0.005"), Some(3.0));
        assert_eq!(bucket("10"), Some(3.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        let requests = out
            .iter()
            .find(|s| s.name == names::L7_REQUESTS_TOTAL)
            .unwrap();
        let label = |n: &str| {
            requests
                .labels
                .iter()
                .find(|l| l.name == n)
                .map(|l| l.value.as_str())
        };
        assert_eq!(requests.samples[0].value, 3.0);
        assert_eq!(label("protocol"), Some("http"));
        assert_eq!(label("operation"), Some("GET"));
        assert_eq!(label("status"), Some("503"));
        assert_eq!(label("side"), Some("client"));
        assert_eq!(label("destination"), Some("10.0.0.9:80"));
        let seconds = out
            .iter()
            .find(|s| s.name == names::L7_REQUEST_SECONDS_TOTAL)
            .unwrap();
        assert!((seconds.samples[0].value - 0.006).abs() < 1e-12);
    }

    #[test]
    fn tcp_counts_become_labelled_series() {
        use ebpf::tcp::{Event, Kind, TcpStats};
        let mut stats = TcpStats::default();
        let me = std::process::id();
        let destination: std::net::SocketAddr = "10.1.2.3:5432".parse().unwrap();
        for kind in [Kind::Connect, Kind::Connect, Kind::ConnectFailed] {
            stats.record(&Event {
                kind,
                pid: me,
                source: "10.0.0.1:40000".parse().unwrap(),
                destination,
                duration_ns: 250_000_000,
                segments: 0,
                sock: 1,
            });
        }
        let out = tcp_series(
            &stats,
            &mut Who::new(std::path::Path::new("/proc")),
            &listen::Listeners::new(std::path::Path::new("/nonexistent")),
            1_000,
        );
        let get = |name: &str| {
            let s = out.iter().find(|s| s.name == name).unwrap();
            let label = |n: &str| {
                s.labels
                    .iter()
                    .find(|l| l.name == n)
                    .map(|l| l.value.clone())
            };
            assert_eq!(label("destination").as_deref(), Some("10.1.2.3:5432"));
            assert_eq!(label("pid"), Some(me.to_string()));
            assert!(label("process").is_some_and(|p| !p.is_empty()));
            s.samples[0].value
        };
        assert_eq!(get(names::TCP_SUCCESSFUL_CONNECTS_TOTAL), 2.0);
        assert_eq!(get(names::TCP_FAILED_CONNECTS_TOTAL), 1.0);
        assert_eq!(get(names::TCP_CONNECT_SECONDS_TOTAL), 0.5);
        // The same socket connected twice here; one is still counted open.
        assert_eq!(get(names::TCP_ACTIVE_CONNECTIONS), 2.0);
        stats.forget_exited(|_| false);
        assert_eq!(stats.outgoing.len(), 1, "kept: connections still open");
    }

    #[test]
    fn destinations_on_this_node_are_named_by_their_listener() {
        use ebpf::tcp::{Event, Kind, TcpStats};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let me = std::process::id();
        let mut peers = listen::Listeners::new(std::path::Path::new("/proc"));
        let listening = peers.refresh();
        let mut who = Who::new(std::path::Path::new("/proc"));
        // This process's application as Who names it (its comm, or its
        // service or container where the tests run in one).
        let me_as_application = who.application(me).unwrap();
        let info = listen_series(&listening, &mut who, 1);
        assert!(
            info.iter().any(|s| s
                .labels
                .iter()
                .any(|l| l.name == "listen" && l.value == addr.to_string())
                && s.labels
                    .iter()
                    .any(|l| l.name == "pid" && l.value == me.to_string())),
            "{info:?}"
        );
        let mut stats = TcpStats::default();
        for destination in [addr, "203.0.113.7:443".parse().unwrap()] {
            stats.record(&Event {
                kind: Kind::Connect,
                pid: me,
                source: "127.0.0.1:40000".parse().unwrap(),
                destination,
                duration_ns: 1,
                segments: 0,
                sock: 1,
            });
        }
        let out = tcp_series(&stats, &mut who, &peers, 1);
        let app_of = |dest: &str| {
            let s = out
                .iter()
                .find(|s| {
                    s.labels
                        .iter()
                        .any(|l| l.name == "destination" && l.value == dest)
                })
                .unwrap();
            s.labels
                .iter()
                .find(|l| l.name == "destination_application")
                .map(|l| l.value.clone())
        };
        assert_eq!(app_of(&addr.to_string()), Some(me_as_application));
        assert_eq!(
            app_of("203.0.113.7:443"),
            None,
            "not on this node: ip:port only"
        );
    }

    #[test]
    fn figures_become_series_with_resource() {
        let host = HostFigures {
            cpu_usage_ratio: Some(0.5),
            cpu_cores: 2.0,
            memory_total_bytes: 100.0,
            memory_available_bytes: 40.0,
            load1: 0.3,
        };
        let processes = vec![ProcessFigures {
            pid: 42,
            name: "nginx".into(),
            cpu_usage_cores: None,
            memory_rss_bytes: 7.0,
        }];
        let rm = resource_metrics("c1", "web-1", &host, &processes);
        assert_eq!(rm[0].resource.as_ref().unwrap().node, "web-1");
        let names: Vec<&str> = rm[0].series.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&names::HOST_CPU_USAGE_RATIO));
        assert!(names.contains(&names::PROCESS_MEMORY_RSS_BYTES));
        assert!(
            !names.contains(&names::PROCESS_CPU_USAGE_CORES),
            "no CPU rate for a process seen once"
        );
        let rss = rm[0]
            .series
            .iter()
            .find(|s| s.name == names::PROCESS_MEMORY_RSS_BYTES)
            .unwrap();
        assert!(
            rss.labels
                .iter()
                .any(|l| l.name == "pid" && l.value == "42")
        );
        assert_eq!(rss.samples[0].value, 7.0);
    }

    #[test]
    fn unauthenticated_is_retried_not_dropped() {
        // A key can be added to ingest's config later: keep the data.
        assert!(!is_permanent(Code::Unauthenticated));
        assert!(is_permanent(Code::InvalidArgument));
        assert!(!is_permanent(Code::Unavailable));
    }
}
