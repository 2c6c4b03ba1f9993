//! Ingest load generator: OTLP/gRPC spans and Prometheus remote_write
//! samples into a separate ingest process (the release `vigil` binary,
//! `vigil up --only ingest`), on redb and, with CLICKHOUSE_TEST_URL, on
//! ClickHouse; side by side with rotel-agent (PyPI `rotel`, blackhole
//! exporter) for spans and VictoriaMetrics (Debian) for samples, fed by the
//! same generator. Prints items/s, items per CPU-second of the receiving
//! process ("per core"), its peak RSS. Figures, never assertions.
//!
//! ```sh
//! cargo bench -p vigil-ingest --bench load
//! ```
//! Env: SPANS (300000; batches of 512 spans, ~10 attributes each), SAMPLES
//! (2000000; remote_write requests of 2000 samples over 20000 series),
//! CONCURRENCY (8 requests in flight), ROTEL (path of rotel-agent; found in
//! the PyPI package otherwise).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status},
};
use prost::Message;
use vigil_ingest::remote_write::{Label, PromSample, TimeSeries, WriteRequest};

const KEY: &str = "bench-key-0123456789abcdef";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Proc {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // after the command name: state is field 0, utime 11, stime 12
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `vigil up --only ingest` on its own data dir, limits raised for load.
fn start_vigil(backend: &str, clickhouse_url: Option<&str>) -> (Proc, u16, u16) {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let storage = match clickhouse_url {
        Some(url) => format!(
            "[storage]\nbackend = \"clickhouse\"\n[storage.clickhouse]\nurl = \"{url}\"\ndatabase = \"vigil_load_{}\"\n",
            std::process::id()
        ),
        None => format!("[storage]\nbackend = \"{backend}\"\n"),
    };
    let config = format!(
        "data_dir = \"{}\"\n[[projects]]\nname = \"default\"\napi_keys = [\"{KEY}\"]\n{storage}\
         [ingest.grpc]\nlisten = \"127.0.0.1:{grpc}\"\nconcurrency_limit = 1024\n\
         [ingest.http]\nlisten = \"127.0.0.1:{http}\"\n\
         [ingest.limits]\nproject_rate = 100000000\nproject_burst = 100000000\n",
        dir.path().join("data").display()
    );
    let path = dir.path().join("vigil.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(workspace().join("target/release/vigil"))
        .args([
            "up",
            "--only",
            "ingest",
            "--config",
            &path.display().to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(http);
    wait_port(grpc);
    (Proc { child, _dir: dir }, grpc, http)
}

fn attr(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// Request `n`: 512 spans of 64 traces (8 spans each), ~10 attributes each.
fn span_request(n: usize, now_ns: u64) -> ExportTraceServiceRequest {
    let routes = ["/api/cart", "/api/checkout", "/api/items/{id}", "/healthz"];
    let spans = (0..512)
        .map(|i| {
            let trace = (n * 64 + i / 8) as u64;
            let mut trace_id = vec![0u8; 16];
            trace_id[..8].copy_from_slice(&trace.to_be_bytes());
            trace_id[8] = 1;
            let start = now_ns - 60_000_000_000 + (i as u64) * 1_000;
            Span {
                trace_id,
                span_id: ((n * 512 + i + 1) as u64).to_be_bytes().to_vec(),
                parent_span_id: if i % 8 == 0 {
                    vec![]
                } else {
                    ((n * 512 + i - i % 8 + 1) as u64).to_be_bytes().to_vec()
                },
                name: format!("GET {}", routes[i % routes.len()]),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_500_000 + (i as u64 % 7) * 100_000,
                attributes: vec![
                    attr("http.request.method", Value::StringValue("GET".into())),
                    attr(
                        "http.route",
                        Value::StringValue(routes[i % routes.len()].into()),
                    ),
                    attr(
                        "http.response.status_code",
                        Value::IntValue(200 + (i % 3) as i64 * 100),
                    ),
                    attr("url.scheme", Value::StringValue("http".into())),
                    attr("server.address", Value::StringValue("cart.shop.svc".into())),
                    attr("server.port", Value::IntValue(8080)),
                    attr(
                        "client.address",
                        Value::StringValue(format!("10.0.{}.{}", i % 16, i % 250)),
                    ),
                    attr(
                        "user_agent.original",
                        Value::StringValue("Mozilla/5.0 (X11; Linux x86_64)".into()),
                    ),
                    attr("network.protocol.version", Value::StringValue("1.1".into())),
                    attr("request.id", Value::StringValue(format!("req-{n}-{i}"))),
                ],
                status: Some(Status {
                    code: if i % 50 == 0 { 2 } else { 0 },
                    message: String::new(),
                }),
                ..Span::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attr("service.name", Value::StringValue(format!("svc-{}", n % 8))),
                    attr("k8s.namespace.name", Value::StringValue("shop".into())),
                    attr("host.name", Value::StringValue("node-1".into())),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Sends every request with `concurrency` in flight; (elapsed, failures).
async fn send_spans(
    port: u16,
    requests: Arc<Vec<ExportTraceServiceRequest>>,
    concurrency: usize,
) -> (Duration, usize) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (channel, requests, next, failures) = (
                channel.clone(),
                requests.clone(),
                next.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                let mut client =
                    TraceServiceClient::new(channel).max_encoding_message_size(64 << 20);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else {
                        break;
                    };
                    let mut request = tonic::Request::new(request.clone());
                    request
                        .metadata_mut()
                        .insert("x-api-key", KEY.parse().unwrap());
                    if client.export(request).await.is_err() {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (start.elapsed(), failures.load(Ordering::Relaxed))
}

/// Remote-write bodies: rounds over `series` series, 2000 samples each.
fn sample_bodies(total: usize, series: usize) -> Vec<Vec<u8>> {
    let per_request = 2000;
    let base_ms = (now_ns() / 1_000_000) as i64 - 6 * 3_600_000;
    (0..total / per_request)
        .map(|r| {
            let first = r * per_request;
            let timeseries = (first..first + per_request)
                .map(|k| {
                    let s = k % series;
                    let round = (k / series) as i64;
                    TimeSeries {
                        labels: vec![
                            Label {
                                name: "__name__".into(),
                                value: format!("load_metric_{}", s % 50),
                            },
                            Label {
                                name: "instance".into(),
                                value: format!("host-{}:9100", s / 50),
                            },
                            Label {
                                name: "job".into(),
                                value: "node".into(),
                            },
                        ],
                        samples: vec![PromSample {
                            value: ((s as i64 * 7 + round * 13) % 1000) as f64 / 10.0,
                            timestamp: base_ms + round * 10_000,
                        }],
                    }
                })
                .collect();
            let raw = WriteRequest { timeseries }.encode_to_vec();
            snap::raw::Encoder::new().compress_vec(&raw).unwrap()
        })
        .collect()
}

fn send_samples(url: &str, bodies: Arc<Vec<Vec<u8>>>, concurrency: usize) -> (Duration, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (url, bodies, next, failures) = (
                url.to_owned(),
                bodies.clone(),
                next.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let ok = agent
                        .post(&url)
                        .header("content-encoding", "snappy")
                        .header("content-type", "application/x-protobuf")
                        .header("authorization", format!("Bearer {KEY}"))
                        .send(&body[..])
                        .is_ok_and(|r| r.status().is_success());
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (start.elapsed(), failures.load(Ordering::Relaxed))
}

fn report(
    name: &str,
    what: &str,
    items: usize,
    took: Duration,
    cpu: f64,
    rss: f64,
    failures: usize,
) {
    println!(
        "{name:>22}: {:>9.0} {what}/s, {:>9.0} {what} per CPU-second of the receiver ({cpu:.1} s CPU), peak RSS {rss:.0} MiB{}",
        items as f64 / took.as_secs_f64(),
        items as f64 / cpu.max(0.001),
        if failures > 0 {
            format!(", {failures} requests FAILED")
        } else {
            String::new()
        }
    );
}

fn rotel_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ROTEL") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.exists().then_some(path)
}

#[tokio::main]
async fn main() {
    let spans = env("SPANS", 300_000);
    let samples = env("SAMPLES", 2_000_000);
    let concurrency = env("CONCURRENCY", 8);
    let status = Command::new("cargo")
        .args(["build", "--release", "--locked", "--bin", "vigil"])
        .current_dir(workspace())
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --release --bin vigil");
    let clickhouse = std::env::var("CLICKHOUSE_TEST_URL").ok();
    println!(
        "ingest load: {spans} spans in OTLP/gRPC batches of 512 (~10 attributes), {samples} samples in remote_write requests of 2000; {concurrency} requests in flight; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let now = now_ns();
    let span_requests = Arc::new(
        (0..spans / 512)
            .map(|n| span_request(n, now))
            .collect::<Vec<_>>(),
    );
    let bodies = Arc::new(sample_bodies(samples, 20_000));
    let sent_spans = span_requests.len() * 512;
    let sent_samples = bodies.len() * 2000;

    let mut backends: Vec<(&str, Option<&str>)> = vec![("vigil (redb)", None)];
    if let Some(url) = clickhouse.as_deref() {
        backends.push(("vigil (clickhouse)", Some(url)));
    }
    for (name, url) in &backends {
        let (proc_, grpc, http) = start_vigil("redb", *url);
        let pid = proc_.child.id();
        let cpu0 = cpu_seconds(pid);
        let (took, failures) = send_spans(grpc, span_requests.clone(), concurrency).await;
        let cpu = cpu_seconds(pid) - cpu0;
        report(
            name,
            "spans",
            sent_spans,
            took,
            cpu,
            peak_rss_mib(pid),
            failures,
        );
        let cpu0 = cpu_seconds(pid);
        let url = format!("http://127.0.0.1:{http}/api/v1/write");
        let b = bodies.clone();
        let (took, failures) =
            tokio::task::spawn_blocking(move || send_samples(&url, b, concurrency))
                .await
                .unwrap();
        let cpu = cpu_seconds(pid) - cpu0;
        report(
            name,
            "samples",
            sent_samples,
            took,
            cpu,
            peak_rss_mib(pid),
            failures,
        );
    }
    match rotel_path() {
        Some(rotel) => {
            let port = free_port();
            let dir = tempfile::tempdir().unwrap();
            let child = Command::new(rotel)
                .args([
                    "start",
                    "--exporter",
                    "blackhole",
                    "--otlp-grpc-endpoint",
                    &format!("127.0.0.1:{port}"),
                    "--otlp-http-endpoint",
                    &format!("127.0.0.1:{}", free_port()),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let proc_ = Proc { child, _dir: dir };
            wait_port(port);
            let pid = proc_.child.id();
            let cpu0 = cpu_seconds(pid);
            let (took, failures) = send_spans(port, span_requests.clone(), concurrency).await;
            let cpu = cpu_seconds(pid) - cpu0;
            report(
                "rotel (blackhole)",
                "spans",
                sent_spans,
                took,
                cpu,
                peak_rss_mib(pid),
                failures,
            );
        }
        None => println!("{:>22}: not installed (pip install rotel)", "rotel"),
    }
    if Command::new("victoria-metrics")
        .arg("-version")
        .output()
        .is_ok()
    {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("victoria-metrics")
            .args([
                &format!("-storageDataPath={}", dir.path().display()),
                &format!("-httpListenAddr=127.0.0.1:{port}"),
                "-retentionPeriod=100y",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proc_ = Proc { child, _dir: dir };
        wait_port(port);
        let pid = proc_.child.id();
        let cpu0 = cpu_seconds(pid);
        let url = format!("http://127.0.0.1:{port}/api/v1/write");
        let b = bodies.clone();
        let (took, failures) =
            tokio::task::spawn_blocking(move || send_samples(&url, b, concurrency))
                .await
                .unwrap();
        let cpu = cpu_seconds(pid) - cpu0;
        report(
            "VictoriaMetrics",
            "samples",
            sent_samples,
            took,
            cpu,
            peak_rss_mib(pid),
            failures,
        );
        println!(
            "{:>22}  (VictoriaMetrics acknowledges before its data is on disk; Vigil after)",
            ""
        );
    } else {
        println!(
            "{:>22}: not installed (apt-get install victoria-metrics)",
            "VictoriaMetrics"
        );
    }
}
