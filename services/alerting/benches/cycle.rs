//! One full inspection round for many applications on generated data: the
//! query service reads from redb (and ClickHouse with `CLICKHOUSE_TEST_URL`),
//! the worker asks it for every figure (four windows, hosts, disks,
//! Deployments), runs every inspection and records the round in its redb
//! file. Printed, never asserted.
//!
//! ```sh
//! cargo bench -p vigil-alerting --bench cycle
//! CLICKHOUSE_TEST_URL=http://127.0.0.1:8123 APPS=1000 cargo bench -p vigil-alerting --bench cycle
//! ```
//! Env: APPS (1000), ROUNDS (5), HOURS of data (1, one sample per 30 s).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use vigil_alerting::{
    AlertingConfig, Worker, evaluate,
    incidents::{IncidentStore, Transition},
};
use vigil_query::QueryConfig;
use vigil_runtime::{
    Shutdown,
    auth::{ApiKeys, ProjectConfig, Secret},
    config::{GrpcServerConfig, HttpServerConfig},
    time::now_ms,
};
use vigil_storage::{
    Labels, MetricBatch, Sample, SeriesWrite, TelemetryStore,
    clickhouse::ClickHouseStore,
    config::{ClickHouseConfig, RetentionConfig},
    redb::RedbStore,
};

const KEY: &str = "bench-alerting-key-0123456789";
const PROJECT: &str = "bench";
const STEP: i64 = 30_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Span {
    start: i64,
    end: i64,
}

fn series(
    metric: &str,
    pairs: &[(&str, String)],
    per_second: f64,
    level: f64,
    t: &Span,
) -> SeriesWrite {
    let labels: Labels = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    SeriesWrite {
        metric: metric.into(),
        labels,
        samples: (0..=(t.end - t.start) / STEP)
            .map(|k| Sample {
                timestamp_ms: t.start + k * STEP,
                value: level + per_second * (k * STEP / 1000) as f64,
            })
            .collect(),
    }
}

const BOUNDS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

/// Requests at or under each bound: 99.7 % within 500 ms.
const SHARES: [f64; 12] = [
    0.5, 0.7, 0.85, 0.93, 0.97, 0.99, 0.997, 0.999, 1.0, 1.0, 1.0, 1.0,
];

/// ~37 series per application: inbound HTTP with a latency histogram, a
/// call to the next application (L7 and TCP), its listening address,
/// container resources and error logs. One in ten fails: 5xx, failed
/// connects, growing memory and error logs.
fn generate(apps: usize, t: &Span) -> Vec<SeriesWrite> {
    let mut out = Vec::new();
    let address = |i: usize| format!("10.1.{}.{}:8080", i / 250, i % 250 + 1);
    for i in 0..apps {
        let failing = i % 10 == 0;
        let base = [
            ("node", format!("node-{}", i % 20)),
            ("pid", (1000 + i).to_string()),
            ("process", "java".to_owned()),
            ("application", format!("app-{i:04}")),
        ];
        let with = |more: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            base.iter()
                .cloned()
                .chain(more.iter().map(|(k, v)| (*k, (*v).to_owned())))
                .collect()
        };
        let server = [
            ("side", "server"),
            ("protocol", "http"),
            ("operation", "GET"),
        ];
        for (status, rate) in [("200", 20.0), ("503", if failing { 5.0 } else { 0.01 })] {
            let l = with(&[server[0], server[1], server[2], ("status", status)]);
            out.push(series("process_l7_requests_total", &l, rate, 0.0, t));
        }
        out.push(series(
            "process_l7_request_seconds_total",
            &with(&server),
            1.0,
            0.0,
            t,
        ));
        for (le, share) in BOUNDS.iter().zip(SHARES) {
            let l = with(&[server[0], server[1], ("le", le)]);
            let rate = 20.0 * share;
            out.push(series(
                "process_l7_request_duration_seconds_bucket",
                &l,
                rate,
                0.0,
                t,
            ));
        }
        let to = address((i + 1) % apps);
        let call = with(&[
            ("side", "client"),
            ("protocol", "http"),
            ("destination", &to),
            ("operation", "GET"),
            ("status", "200"),
        ]);
        out.push(series("process_l7_requests_total", &call, 10.0, 0.0, t));
        let dest = with(&[("destination", &to)]);
        let failed = if failing { 0.5 } else { 0.0 };
        for (metric, rate, level) in [
            ("process_net_tcp_successful_connects_total", 1.0, 0.0),
            ("process_net_tcp_failed_connects_total", failed, 0.0),
            ("process_net_tcp_retransmits_total", 0.01, 0.0),
            ("process_net_tcp_connect_seconds_total", 0.0005, 0.0),
            ("process_net_tcp_active_connections", 0.0, 4.0),
        ] {
            out.push(series(metric, &dest, rate, level, t));
        }
        let listen = with(&[("listen", &address(i))]);
        out.push(series("process_net_tcp_listen_info", &listen, 0.0, 1.0, t));
        let id = format!("{i:012x}");
        let c = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            let mut l = with(extra);
            l.push(("container_id", id.clone()));
            l
        };
        let growth = if failing { 20_000.0 } else { 0.0 };
        for (metric, rate, level) in [
            ("container_cpu_usage_seconds_total", 0.4, 0.0),
            ("container_cpu_limit_cores", 0.0, 1.0),
            ("container_cpu_throttled_seconds_total", 0.01, 0.0),
            ("container_memory_rss_bytes", growth, 2e8),
            ("container_memory_limit_bytes", 0.0, 1e9),
            ("container_oom_kills_total", 0.0, 0.0),
            ("container_restarts_total", 0.0, 0.0),
        ] {
            out.push(series(metric, &c(&[]), rate, level, t));
        }
        for resource in ["cpu", "memory", "io"] {
            let l = c(&[("resource", resource), ("kind", "some")]);
            out.push(series(
                "container_pressure_waiting_seconds_total",
                &l,
                0.01,
                0.0,
                t,
            ));
        }
        let logs = with(&[("level", "error"), ("pattern_id", "00000000000000aa")]);
        out.push(series(
            "log_messages_total",
            &logs,
            if failing { 1.0 } else { 0.0 },
            0.0,
            t,
        ));
    }
    for n in 0..20 {
        let node = [("node", format!("node-{n}"))];
        out.push(series("host_cpu_usage_ratio", &node, 0.0, 0.3, t));
        let disk = [
            ("node", format!("node-{n}")),
            ("mount_point", "/".to_owned()),
        ];
        out.push(series("node_filesystem_size_bytes", &disk, 0.0, 1e11, t));
        out.push(series(
            "node_filesystem_available_bytes",
            &disk,
            0.0,
            4e10,
            t,
        ));
    }
    out
}

async fn load(store: &Arc<dyn TelemetryStore>, all: Vec<SeriesWrite>) {
    let t = Instant::now();
    let count = all.len();
    let samples: usize = all.iter().map(|s| s.samples.len()).sum();
    for (i, chunk) in all.chunks(500).enumerate() {
        store
            .write_metrics(MetricBatch {
                project: PROJECT.into(),
                batch_id: format!("b{i}"),
                series: chunk.to_vec(),
            })
            .await
            .unwrap();
    }
    println!(
        "  loaded {count} series, {samples} samples in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

async fn serve(store: Arc<dyn TelemetryStore>) -> (SocketAddr, Shutdown) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (grpc, http) = (free(), free());
    let config = QueryConfig {
        grpc: GrpcServerConfig::on(grpc),
        http: HttpServerConfig::on(http),
        // Rounds back to back, unlike the worker's 30 s.
        rate_per_project: 10_000,
        burst_per_project: 10_000,
        ..QueryConfig::default()
    };
    let keys = ApiKeys::new(&[ProjectConfig {
        name: PROJECT.into(),
        api_keys: vec![KEY.into()],
        api_keys_file: None,
    }])
    .unwrap();
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    tokio::spawn(async move { vigil_query::run(config, store, keys, s).await });
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(grpc).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (grpc, shutdown)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn measure(
    backend: &str,
    store: Arc<dyn TelemetryStore>,
    apps: usize,
    rounds: usize,
    end: i64,
) {
    println!("{backend}:");
    let (grpc, shutdown) = serve(store).await;
    let dir = tempfile::tempdir().unwrap();
    let mut grpc_config = GrpcServerConfig::on("127.0.0.1:0".parse().unwrap());
    grpc_config.request_timeout = Duration::from_secs(600);
    let config = AlertingConfig {
        query_endpoint: grpc.to_string(),
        project: PROJECT.into(),
        api_key: Secret(KEY.into()),
        grpc: grpc_config,
        ..AlertingConfig::default()
    };
    let store = IncidentStore::open(&dir.path().join("alerting.redb")).unwrap();
    let worker = Worker::standalone(&config, store).unwrap();
    let (mut fetch, mut eval, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    let mut opened = 0;
    for r in 0..rounds {
        let now = end + r as i64 * 1000;
        let t = Instant::now();
        let figures = worker.figures(now).await.unwrap();
        fetch.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let observations = evaluate::evaluate(worker.settings(), &figures);
        eval.push(t.elapsed().as_secs_f64() * 1e3);
        if r == 0 {
            let firing = observations.iter().filter(|o| o.firing.is_some()).count();
            println!(
                "  {} applications seen, {} observations, {firing} firing",
                figures.w5m.len(),
                observations.len()
            );
        }
        let t = Instant::now();
        let transitions = worker.round(now).await;
        whole.push(t.elapsed().as_secs_f64() * 1e3);
        opened += transitions
            .iter()
            .filter(|t| matches!(t, Transition::Opened(_)))
            .count();
    }
    println!(
        "  {apps} applications: full round p50 {:.0} ms (first {:.0} ms; {opened} incidents opened); reading the figures p50 {:.0} ms; evaluating p50 {:.1} ms",
        median(&whole),
        whole[0],
        median(&fetch),
        median(&eval),
    );
    shutdown.trigger();
}

#[tokio::main]
async fn main() {
    let apps = env("APPS", 1000).max(2);
    let rounds = env("ROUNDS", 5).max(1);
    let hours = env("HOURS", 1).max(1) as i64;
    let end = now_ms() / STEP * STEP;
    let span = Span {
        start: end - hours * 3_600_000,
        end,
    };
    println!(
        "inspection round: {apps} applications, {hours} h of data every 30 s, {rounds} rounds"
    );
    let all = generate(apps, &span);
    let dir = tempfile::tempdir().unwrap();
    let redb: Arc<dyn TelemetryStore> =
        Arc::new(RedbStore::open(&dir.path().join("bench.redb")).unwrap());
    load(&redb, all.clone()).await;
    measure("redb", redb, apps, rounds, end).await;
    if let Some(url) = std::env::var("CLICKHOUSE_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let database = format!("vigil_alerting_bench_{}", std::process::id());
        let config = ClickHouseConfig {
            url: url.clone(),
            database: database.clone(),
            ..ClickHouseConfig::default()
        };
        let ch: Arc<dyn TelemetryStore> = Arc::new(
            ClickHouseStore::connect(&config, &RetentionConfig::default())
                .await
                .unwrap(),
        );
        load(&ch, all).await;
        measure("clickhouse", ch, apps, rounds, end).await;
        let _ = ureq::post(&url).send(format!("DROP DATABASE IF EXISTS {database}").as_bytes());
    } else {
        println!("\n(ClickHouse skipped: set CLICKHOUSE_TEST_URL)");
    }
}
