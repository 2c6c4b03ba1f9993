//! The node agent. Today: host and process figures read from /proc, shipped
//! to ingest as `vigil.telemetry.v1` batches. Each batch has an id, so a
//! batch retried after a lost acknowledgement is stored once. While ingest is
//! unreachable, batches wait in a bounded in-memory queue (a disk spool comes
//! with the eBPF collectors).

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
    let ebpf = ebpf::probe();
    tracing::info!(node, ebpf = %ebpf, collectors = "proc", "agent collecting from /proc");

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
            collectors: vec!["proc".to_owned()],
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
                    let batch =
                        shipper.batch(resource_metrics(&config.cluster, &node, &host, &processes));
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
    tokio::try_join!(
        collect_loop,
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
