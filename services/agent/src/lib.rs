//! The node agent. Today: host and process figures read from /proc, shipped
//! to ingest as `vigil.telemetry.v1` batches. Each batch has an id, so a
//! batch retried after a lost acknowledgement is stored once. While ingest is
//! unreachable, batches wait in a bounded in-memory queue (a disk spool comes
//! with the eBPF collectors).

pub mod cgroup;
mod config;
pub mod ebpf;
pub mod proc;

use std::{collections::VecDeque, time::Duration};
use vigil_runtime::time::now_ms;

pub use config::AgentConfig;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tonic::{
    Code, metadata::MetadataValue, service::interceptor::InterceptedService, transport::Channel,
};
use vigil_proto::{
    names,
    telemetry::v1::{
        AgentInfo, Label, PushRequest, ResourceMetrics, Sample, TimeSeries,
        telemetry_service_client::TelemetryServiceClient,
    },
};
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, Shutdown, config::ConfigError, http::HttpServer,
};

use crate::proc::{HostFigures, ProcCollector, ProcessFigures};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the API key cannot be sent as gRPC metadata (non-ASCII characters?)")]
    BadApiKey,
}

type AuthInterceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync>;
type Client = TelemetryServiceClient<InterceptedService<Channel, AuthInterceptor>>;

struct AgentMetrics {
    batches_acknowledged: Counter,
    batches_failed: Counter,
    batches_dropped: Counter,
    pending: Gauge,
}

impl AgentMetrics {
    fn new(metrics: &Metrics) -> Self {
        let this = Self {
            batches_acknowledged: Counter::default(),
            batches_failed: Counter::default(),
            batches_dropped: Counter::default(),
            pending: Gauge::default(),
        };
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
            "Batches dropped: refused by ingest, or the pending queue overflowed",
            this.batches_dropped.clone(),
        );
        metrics.register(
            "batches_pending",
            "Batches waiting for ingest",
            this.pending.clone(),
        );
        this
    }
}

/// Runs the agent until `shutdown`.
pub async fn run(config: AgentConfig, shutdown: Shutdown) -> Result<(), AgentError> {
    let api_key = config.resolve_api_key()?;
    let bearer: MetadataValue<_> = format!("Bearer {api_key}")
        .parse()
        .map_err(|_| AgentError::BadApiKey)?;
    let node = if config.node.is_empty() {
        proc::hostname(&config.proc_root)
    } else {
        config.node.clone()
    };
    let (tracer, l7) = match (ebpf::TcpTracer::start(), ebpf::L7Tracer::start()) {
        (Ok(tcp), Ok(l7)) => {
            tracing::info!(
                node,
                collectors = "proc, ebpf-tcp, ebpf-l7",
                "agent collecting: /proc and eBPF (TCP, HTTP)"
            );
            (
                Some(std::sync::Arc::new(std::sync::Mutex::new(tcp))),
                Some(std::sync::Arc::new(std::sync::Mutex::new(l7))),
            )
        }
        (tcp, l7) => {
            let reason = [tcp.err(), l7.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(node, collectors = "proc", ebpf = %format!("eBPF unavailable: {reason}"), "agent collecting from /proc");
            (None, None)
        }
    };

    let metrics = Metrics::new("agent");
    let agent_metrics = AgentMetrics::new(&metrics);
    let readiness = Readiness::default();
    let http = HttpServer::bind("agent-http", &config.http).await?;
    let channel = vigil_runtime::grpc::channel(&config.ingest_endpoint, config.push_timeout)?;
    let interceptor: AuthInterceptor = Box::new(move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        Ok(request)
    });
    let client = TelemetryServiceClient::with_interceptor(channel, interceptor);

    let mut shipper = Shipper {
        client,
        pending: VecDeque::new(),
        max_pending: config.max_pending_batches,
        metrics: agent_metrics,
        agent_id: hex::encode(rand::random::<[u8; 8]>()),
        sequence: 0,
        agent: AgentInfo {
            agent_id: String::new(),
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
        },
    };
    shipper.agent.agent_id = shipper.agent_id.clone();

    let collect_loop = async {
        // Prime the CPU counters so that the first batch already has rates.
        let (mut collector, primed) =
            collect(ProcCollector::new(&config.proc_root), &config.proc_root).await;
        if let Err(e) = primed {
            tracing::warn!(error = %e, "first collection failed");
        }
        readiness.set_ready(true);
        while shutdown.sleep(config.interval).await {
            let (c, collected) = collect(collector, &config.proc_root).await;
            collector = c;
            match collected {
                Ok((host, processes)) => {
                    let processes = proc::busiest(processes, config.max_processes);
                    let mut metrics = resource_metrics(&config.cluster, &node, &host, &processes);
                    let mut who = Who::new(&config.proc_root);
                    let alive = |pid: u32| config.proc_root.join(pid.to_string()).exists();
                    if let Some(tracer) = &tracer {
                        let mut tracer = tracer
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        tracer.drain();
                        if let Some(rm) = metrics.first_mut() {
                            rm.series
                                .extend(tcp_series(&tracer.stats, &mut who, now_ms()));
                        }
                        tracer.stats.forget_exited(alive);
                    }
                    if let Some(l7) = &l7 {
                        let mut l7 = l7.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        l7.drain();
                        if let Some(rm) = metrics.first_mut() {
                            rm.series.extend(l7_series(&l7.stats, &mut who, now_ms()));
                        }
                        l7.stats.forget_exited(alive);
                    }
                    let batch = shipper.batch(metrics);
                    shipper.enqueue(batch);
                }
                Err(e) => tracing::warn!(error = %e, "collection failed"),
            }
            shipper.flush().await;
        }
        // Last chance to ship what was collected before stopping.
        let _ = tokio::time::timeout(Duration::from_secs(5), shipper.flush()).await;
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
        drain_loop,
        http.serve(axum::Router::new(), &metrics, &readiness, &shutdown)
    )?;
    Ok(())
}

type Collected = Result<(HostFigures, Vec<ProcessFigures>), proc::CollectError>;

/// Collects off the async runtime: reading every /proc/<pid>/stat takes
/// milliseconds.
async fn collect(
    mut collector: ProcCollector,
    root: &std::path::Path,
) -> (ProcCollector, Collected) {
    match tokio::task::spawn_blocking(move || {
        let result = collector.collect();
        (collector, result)
    })
    .await
    {
        Ok(pair) => pair,
        Err(e) => (
            ProcCollector::new(root),
            Err(proc::CollectError::new(
                root,
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
        resource: Some(vigil_proto::telemetry::v1::Resource {
            cluster: cluster.to_owned(),
            node: node.to_owned(),
            ..Default::default()
        }),
        series: out,
    }]
}

fn label(name: &str, value: String) -> Label {
    Label {
        name: name.to_owned(),
        value,
    }
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
pub fn tcp_series(stats: &ebpf::tcp::TcpStats, who: &mut Who<'_>, ts: i64) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    for ((pid, destination), o) in &stats.outgoing {
        let mut labels = who.labels(*pid).to_vec();
        labels.push(label(names::LABEL_DESTINATION, destination.to_string()));
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
pub fn l7_series(stats: &ebpf::l7::L7Stats, who: &mut Who<'_>, ts: i64) -> Vec<TimeSeries> {
    let mut out = Vec::new();
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

/// Ships batches in order, keeping unacknowledged ones for the next attempt.
struct Shipper {
    client: Client,
    pending: VecDeque<PushRequest>,
    max_pending: usize,
    metrics: AgentMetrics,
    agent_id: String,
    sequence: u64,
    agent: AgentInfo,
}

impl Shipper {
    fn batch(&mut self, metrics: Vec<ResourceMetrics>) -> PushRequest {
        self.sequence += 1;
        PushRequest {
            batch_id: format!("{}-{}", self.agent_id, self.sequence),
            agent: Some(self.agent.clone()),
            metrics,
        }
    }

    fn enqueue(&mut self, batch: PushRequest) {
        if self.pending.len() >= self.max_pending {
            self.pending.pop_front();
            self.metrics.batches_dropped.inc();
            tracing::warn!(
                max = self.max_pending,
                "pending queue full: dropped the oldest unacknowledged batch"
            );
        }
        self.pending.push_back(batch);
        self.metrics.pending.set(self.pending.len() as i64);
    }

    async fn flush(&mut self) {
        while let Some(batch) = self.pending.front() {
            match self.client.push(batch.clone()).await {
                Ok(response) => {
                    let response = response.into_inner();
                    tracing::debug!(
                        batch_id = batch.batch_id,
                        samples = response.samples_stored,
                        duplicate = response.duplicate,
                        "batch acknowledged"
                    );
                    self.metrics.batches_acknowledged.inc();
                    self.pending.pop_front();
                }
                Err(status) if is_permanent(status.code()) => {
                    tracing::error!(
                        batch_id = batch.batch_id,
                        code = ?status.code(),
                        error = status.message(),
                        "ingest refused the batch; dropping it"
                    );
                    self.metrics.batches_dropped.inc();
                    self.pending.pop_front();
                }
                Err(status) => {
                    tracing::warn!(
                        code = ?status.code(),
                        error = status.message(),
                        pending = self.pending.len(),
                        "ingest unreachable; will retry"
                    );
                    self.metrics.batches_failed.inc();
                    break;
                }
            }
        }
        self.metrics.pending.set(self.pending.len() as i64);
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
        let mut request = [0u8; 16];
        request[..15].copy_from_slice(b"GET / HTTP/1.1\r");
        let mut response = [0u8; 16];
        response.copy_from_slice(b"HTTP/1.1 503 Ser");
        for _ in 0..3 {
            stats.record(&Exchange {
                pid: me,
                side: Side::Client,
                destination: Some("10.0.0.9:80".parse().unwrap()),
                latency_ns: 2_000_000,
                request,
                response,
            });
        }
        let out = l7_series(&stats, &mut Who::new(std::path::Path::new("/proc")), 1_000);
        assert_eq!(out.len(), 2);
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
                sock: 1,
            });
        }
        let out = tcp_series(&stats, &mut Who::new(std::path::Path::new("/proc")), 1_000);
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
