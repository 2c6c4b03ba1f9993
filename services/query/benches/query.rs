//! Query API latency on generated data: p50/p99 of trace by id, trace
//! search, log text search, service map, application overview and five
//! PromQL queries, on redb and (with `CLICKHOUSE_TEST_URL`) on ClickHouse,
//! where the raw SQL that reads the same rows is timed too, so the query
//! layer's overhead is known. Printed, never asserted.
//!
//! ```sh
//! CLICKHOUSE_TEST_URL=http://127.0.0.1:8123 cargo bench -p vigil-query --bench query
//! ```
//! Env: TRACES (100000, 10 spans each), LINES (1000000), NODES (130: node
//! CPU series, 64 each: with the applications, over 10 000 series), APPS
//! (50), RUNS (20 per query).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::{service::interceptor::InterceptedService, transport::Channel};
use vigil_proto::query::v1::{self as pb, query_service_client::QueryServiceClient};
use vigil_query::QueryConfig;
use vigil_runtime::{
    Shutdown,
    auth::{ApiKeys, BearerAuth, ProjectConfig},
    config::{GrpcServerConfig, HttpServerConfig},
};
use vigil_storage::{
    Labels, LogBatch, LogRecord, MetricBatch, Sample, SeriesWrite, Span, SpanBatch, TelemetryStore,
    clickhouse::ClickHouseStore,
    config::{ClickHouseConfig, RetentionConfig},
    redb::RedbStore,
    trace::{SpanKind, StatusCode},
};

const KEY: &str = "bench-query-key-0123456789";
const PROJECT: &str = "bench";
const DAY: i64 = 86_400_000;
const STEP: i64 = 60_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    traces: usize,
    lines: usize,
    nodes: usize,
    apps: usize,
    runs: usize,
    /// End of the generated day (a whole minute, a little before now).
    end: i64,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A counter over the day, one sample a minute, with some jitter.
fn counter(metric: &str, l: Labels, per_second: f64, seed: u64, end: i64) -> SeriesWrite {
    let mut state = seed | 1;
    let mut value = 0.0;
    let samples = (0..DAY / STEP)
        .map(|k| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            value += per_second * 60.0 * (0.5 + (state % 1000) as f64 / 1000.0);
            Sample {
                timestamp_ms: end - DAY + k * STEP,
                value: value.round(),
            }
        })
        .collect();
    SeriesWrite {
        metric: metric.into(),
        labels: l,
        samples,
    }
}

/// ~64 node CPU series per node plus ~50 agent series per application.
fn metrics(s: &Setup) -> Vec<SeriesWrite> {
    let mut out = Vec::new();
    let mut seed = 1u64;
    let mut next = || {
        seed += 1;
        seed * 0x9E37_79B9
    };
    for n in 0..s.nodes {
        for cpu in 0..8 {
            for mode in [
                "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
            ] {
                let (node, cpu) = (format!("node-{n}"), cpu.to_string());
                let l = labels(&[("instance", &node), ("cpu", &cpu), ("mode", mode)]);
                out.push(counter(
                    "node_cpu_seconds_total",
                    l,
                    if mode == "idle" { 0.7 } else { 0.04 },
                    next(),
                    s.end,
                ));
            }
        }
    }
    for a in 0..s.apps {
        let app = format!("app-{a}.service");
        let node = format!("node-{}", a % s.nodes.max(1));
        let pid = (1000 + a).to_string();
        let base = [
            ("node", node.as_str()),
            ("pid", pid.as_str()),
            ("process", "app"),
            ("systemd_service", app.as_str()),
        ];
        let with = |more: &[(&str, &str)]| -> Labels {
            base.iter()
                .chain(more)
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        for (status, rate) in [("200", 20.0), ("500", 0.2)] {
            for op in ["GET", "POST"] {
                let l = with(&[
                    ("side", "server"),
                    ("protocol", "http"),
                    ("operation", op),
                    ("status", status),
                ]);
                out.push(counter(
                    "process_l7_requests_total",
                    l.clone(),
                    rate,
                    next(),
                    s.end,
                ));
                out.push(counter(
                    "process_l7_request_seconds_total",
                    l,
                    rate * 0.05,
                    next(),
                    s.end,
                ));
            }
        }
        for (i, le) in [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
        ]
        .iter()
        .enumerate()
        {
            let l = with(&[("side", "server"), ("protocol", "http"), ("le", le)]);
            out.push(counter(
                "process_l7_request_duration_seconds_bucket",
                l,
                40.0 * (i + 1) as f64 / 12.0,
                next(),
                s.end,
            ));
        }
        for u in 1..=3 {
            let to = format!("app-{}.service", (a + u) % s.apps);
            let destination = format!("10.0.{}.{}:8080", (a + u) % 250, u);
            let tcp = with(&[
                ("destination", &destination),
                ("destination_application", &to),
            ]);
            let l7 = with(&[
                ("side", "client"),
                ("protocol", "http"),
                ("operation", "GET"),
                ("status", "200"),
                ("destination", &destination),
                ("destination_application", &to),
            ]);
            out.push(counter(
                "process_l7_requests_total",
                l7.clone(),
                5.0,
                next(),
                s.end,
            ));
            out.push(counter(
                "process_l7_request_seconds_total",
                l7,
                0.2,
                next(),
                s.end,
            ));
            for m in [
                "process_net_tcp_successful_connects_total",
                "process_net_tcp_failed_connects_total",
                "process_net_tcp_retransmits_total",
                "process_net_tcp_connect_seconds_total",
                "process_net_tcp_active_connections",
            ] {
                out.push(counter(m, tcp.clone(), 0.1, next(), s.end));
            }
        }
        let owner = labels(&[("node", &node), ("systemd_service", &app)]);
        for m in [
            "container_cpu_usage_seconds_total",
            "container_memory_rss_bytes",
            "container_oom_kills_total",
            "container_restarts_total",
        ] {
            out.push(counter(m, owner.clone(), 0.01, next(), s.end));
        }
    }
    out
}

fn trace_id(t: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(t as u64 + 1).to_be_bytes());
    id[8..].copy_from_slice(&(t as u64).wrapping_mul(2_654_435_761).to_be_bytes());
    id
}

fn spans(s: &Setup) -> Vec<Span> {
    let services = ["web", "api", "db", "cache", "auth"];
    let gap = DAY * 1_000_000 / s.traces.max(1) as i64;
    let mut all = Vec::with_capacity(s.traces * 10);
    for t in 0..s.traces {
        let start = (s.end - DAY) * 1_000_000 + t as i64 * gap;
        for k in 0..10u64 {
            all.push(Span {
                trace_id: trace_id(t),
                span_id: (k + 1).to_be_bytes(),
                parent_span_id: if k == 0 { [0; 8] } else { 1u64.to_be_bytes() },
                name: ["GET /cart", "POST /pay", "SELECT", "GET key", "check"][k as usize % 5]
                    .into(),
                kind: if k == 0 {
                    SpanKind::Server
                } else {
                    SpanKind::Client
                },
                start_ns: start + k as i64 * 1000,
                end_ns: start + k as i64 * 1000 + ((t * 7919 + k as usize) % 50_000_000) as i64,
                status: if (t + k as usize).is_multiple_of(50) {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                },
                status_message: String::new(),
                service: services[k as usize % 5].into(),
                resource: labels(&[("node", &format!("node-{}", t % 5))]),
                attributes: labels(&[("http.response.status_code", "200")]),
                events: vec![],
                links: vec![],
            });
        }
    }
    all
}

fn logs(s: &Setup) -> Vec<LogRecord> {
    const WORDS: &[&str] = &[
        "GET",
        "POST",
        "order",
        "user",
        "payment",
        "cache",
        "miss",
        "hit",
        "timeout",
        "retry",
        "db",
        "query",
        "took",
        "ms",
        "status",
        "200",
        "404",
        "500",
        "connection",
        "reset",
        "upstream",
    ];
    let gap = DAY * 1_000_000 / s.lines.max(1) as i64;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..s.lines)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut body: Vec<&str> = (0..8)
                .map(|w| WORDS[((state >> (w * 5)) % WORDS.len() as u64) as usize])
                .collect();
            if i.is_multiple_of(1000) {
                body.push("needle-7f3a");
            }
            let id = format!("id={}", state % 100_000);
            body.push(&id);
            LogRecord {
                time_ns: (s.end - DAY) * 1_000_000 + i as i64 * gap,
                severity: [9u8, 13, 17][i % 3],
                severity_text: String::new(),
                body: body.join(" "),
                service: ["web", "api", "worker"][i % 3].into(),
                resource: labels(&[("node", &format!("node-{}", i % 5))]),
                attributes: Default::default(),
                trace_id: [0; 16],
                span_id: [0; 8],
                pattern_id: (state % 50) + 1,
            }
        })
        .collect()
}

async fn load(store: &Arc<dyn TelemetryStore>, s: &Setup) {
    let t = Instant::now();
    let series = metrics(s);
    let samples: usize = series.iter().map(|x| x.samples.len()).sum();
    let count = series.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, chunk) in series.chunks(50).enumerate() {
        let (store, chunk) = (store.clone(), chunk.to_vec());
        tasks.spawn(async move {
            store
                .write_metrics(MetricBatch {
                    project: PROJECT.into(),
                    batch_id: format!("m{i}"),
                    series: chunk,
                })
                .await
                .unwrap();
        });
        while tasks.len() >= 8 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "  loaded {count} series, {samples} samples in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let all = spans(s);
    let n = all.len();
    for (i, chunk) in all.chunks(5000).enumerate() {
        store
            .write_spans(SpanBatch {
                project: PROJECT.into(),
                batch_id: format!("s{i}"),
                spans: chunk.to_vec(),
            })
            .await
            .unwrap();
    }
    println!("  loaded {n} spans in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let all = logs(s);
    let n = all.len();
    for (i, chunk) in all.chunks(5000).enumerate() {
        store
            .write_logs(LogBatch {
                project: PROJECT.into(),
                batch_id: format!("l{i}"),
                records: chunk.to_vec(),
            })
            .await
            .unwrap();
    }
    println!(
        "  loaded {n} log lines in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

type Client = QueryServiceClient<InterceptedService<Channel, BearerAuth>>;

async fn serve(store: Arc<dyn TelemetryStore>) -> (Client, Shutdown) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (grpc, http): (SocketAddr, SocketAddr) = (free(), free());
    let config = QueryConfig {
        grpc: GrpcServerConfig::on(grpc),
        http: HttpServerConfig::on(http),
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
    let channel =
        vigil_runtime::grpc::channel(&grpc.to_string(), Duration::from_secs(120)).unwrap();
    let client = QueryServiceClient::with_interceptor(channel, BearerAuth::new(KEY).unwrap())
        .max_decoding_message_size(64 << 20);
    (client, shutdown)
}

/// p50 and p99 of `runs` calls, in ms.
async fn time<F, Fut>(runs: usize, mut f: F) -> (f64, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f(0).await; // warm-up
    let mut t: Vec<f64> = Vec::with_capacity(runs);
    for i in 0..runs {
        let start = Instant::now();
        f(i + 1).await;
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Raw SQL over ClickHouse's HTTP interface.
fn sql(url: &str, statements: &str) -> String {
    let mut last = String::new();
    for query in statements.split(";\n") {
        let mut r = ureq::post(url)
            .send(query.as_bytes())
            .expect("clickhouse answers");
        let body = r
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .expect("body");
        last = String::from_utf8_lossy(&body).into_owned();
    }
    last
}

/// The statements the store runs for a trace: where the trace lives, then
/// its spans there (as `ClickHouseStore::trace` builds them).
fn trace_sql(url: &str, db: &str, id: &str) -> String {
    let lookup = format!(
        "SELECT day, service, min(start_min), max(start_max) FROM {db}.trace_lookup \
         WHERE project = 'bench' AND trace_id = unhex('{id}') GROUP BY day, service FORMAT TSV"
    );
    let found = sql(url, &lookup);
    let places: Vec<String> = found
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4).then(|| {
                format!(
                    "(day = toDate('{}') AND service = '{}' AND start_ns >= {} AND start_ns <= {})",
                    f[0], f[1], f[2], f[3]
                )
            })
        })
        .collect();
    format!(
        "{lookup};\nSELECT * FROM {db}.spans PREWHERE trace_id = unhex('{id}') WHERE project = 'bench' \
         AND ({}) ORDER BY span_id, version DESC LIMIT 1 BY span_id FORMAT Native",
        places.join(" OR ")
    )
}

const PROMQL: &[(&str, &str, i64, i64, &str)] = &[
    // name, query, range (0: instant), step, the label filter of its
    // selectors in SQL (for the raw statement)
    (
        "cpu by mode, 1h",
        "sum by (mode) (rate(node_cpu_seconds_total[5m]))",
        3_600_000,
        60_000,
        "",
    ),
    (
        "p99 by app, 1h",
        "histogram_quantile(0.99, sum by (le, systemd_service) (rate(process_l7_request_duration_seconds_bucket[5m])))",
        3_600_000,
        60_000,
        "",
    ),
    (
        "topk busy nodes, instant",
        "topk(5, sum by (instance) (rate(node_cpu_seconds_total{mode!=\"idle\"}[5m])))",
        0,
        0,
        "AND label_values[indexOf(label_names, 'mode')] != 'idle'",
    ),
    (
        "error ratio, 24h",
        "sum(rate(process_l7_requests_total{side=\"server\",status=~\"5..\"}[5m])) / sum(rate(process_l7_requests_total{side=\"server\"}[5m]))",
        DAY - 600_000,
        300_000,
        "AND label_values[indexOf(label_names, 'side')] = 'server'",
    ),
    (
        "one node's cpu, 6h",
        "sum(rate(node_cpu_seconds_total{instance=\"node-7\",mode!=\"idle\"}[5m]))",
        6 * 3_600_000,
        60_000,
        "AND label_values[indexOf(label_names, 'instance')] = 'node-7' \
         AND label_values[indexOf(label_names, 'mode')] != 'idle'",
    ),
];

async fn measure(
    name: &str,
    store: Arc<dyn TelemetryStore>,
    s: &Setup,
    clickhouse: Option<(&str, &str)>,
) {
    println!("\n== {name}");
    load(&store, s).await;
    let (client, shutdown) = serve(store).await;
    let window = |ms: i64| {
        Some(pb::TimeWindow {
            start_ms: s.end - ms,
            end_ms: s.end,
        })
    };
    let runs = s.runs;
    let row = |what: &str, (p50, p99): (f64, f64), raw: Option<(f64, f64)>| match raw {
        Some((r50, r99)) => println!(
            "  {what:<34} p50 {p50:8.2} ms  p99 {p99:8.2} ms   raw SQL p50 {r50:8.2} ms p99 {r99:8.2} ms  ({:.2}x)",
            p50 / r50
        ),
        None => println!("  {what:<34} p50 {p50:8.2} ms  p99 {p99:8.2} ms"),
    };
    let raw = |f: Box<dyn Fn(usize) -> String + Send + Sync>| {
        let clickhouse = clickhouse.map(|(u, d)| (u.to_owned(), d.to_owned()));
        async move {
            let (url, db) = clickhouse?;
            let f = Arc::new(f);
            Some(
                time(runs, |i| {
                    let (url, q) = (url.clone(), f(i).replace("{db}", &db));
                    async move {
                        tokio::task::spawn_blocking(move || sql(&url, &q))
                            .await
                            .unwrap();
                    }
                })
                .await,
            )
        }
    };

    let c = client.clone();
    let traces = s.traces;
    let by_id = time(runs, |i| {
        let mut c = c.clone();
        async move {
            let id = hex::encode(trace_id(i * 7919 % traces));
            c.get_trace(pb::GetTraceRequest {
                project: String::new(),
                trace_id: id,
            })
            .await
            .unwrap();
        }
    })
    .await;
    let statements: Vec<String> = match clickhouse {
        Some((url, db)) => {
            let (url, db) = (url.to_owned(), db.to_owned());
            tokio::task::spawn_blocking(move || {
                (0..=runs)
                    .map(|i| trace_sql(&url, &db, &hex::encode(trace_id(i * 7919 % traces))))
                    .collect()
            })
            .await
            .unwrap()
        }
        None => Vec::new(),
    };
    let raw_by_id = raw(Box::new(move |i| statements[i].clone())).await;
    row("trace by id", by_id, raw_by_id);

    let (start_ns, end_ns) = ((s.end - 3_600_000) * 1_000_000, s.end * 1_000_000);
    let search = time(runs, |_| {
        let mut c = c.clone();
        async move {
            c.search_traces(pb::SearchTracesRequest {
                window: window(3_600_000),
                service: "api".into(),
                min_duration_ms: 40,
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    })
    .await;
    let raw_search = raw(Box::new(move |_| {
        format!("SELECT trace_id, span_id, service, name, start_ns, duration_ns, status_code FROM {{db}}.spans WHERE project = 'bench' AND day >= toDate({}) AND day <= toDate({}) AND start_ns >= {start_ns} AND start_ns <= {end_ns} AND service = 'api' AND duration_ns >= 40000000 ORDER BY start_ns DESC, trace_id, span_id LIMIT 1 BY trace_id, span_id LIMIT 100 FORMAT Native", start_ns / 1_000_000_000, end_ns / 1_000_000_000)
    }))
    .await;
    row("trace search (service, >40ms, 1h)", search, raw_search);

    let (day_start_ns, day_end_ns) = ((s.end - DAY) * 1_000_000, s.end * 1_000_000);
    let logs = time(runs, |_| {
        let mut c = c.clone();
        async move {
            c.search_logs(pb::SearchLogsRequest {
                window: window(DAY),
                text: "needle-7f3a".into(),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    })
    .await;
    let raw_logs = raw(Box::new(move |_| {
        // The store's statement: versions collapsed per record.
        format!("SELECT * FROM {{db}}.logs WHERE project = 'bench' AND day >= toDate({}) AND day <= toDate({}) AND time_ns >= {day_start_ns} AND time_ns <= {day_end_ns} AND hasAll(tokens, ['needle-7f3a']) ORDER BY time_ns DESC, id DESC, version DESC LIMIT 1 BY id LIMIT 101 FORMAT Native", day_start_ns / 1_000_000_000, day_end_ns / 1_000_000_000)
    }))
    .await;
    row("log text search (rare token, 24h)", logs, raw_logs);

    let map = time(runs, |_| {
        let mut c = c.clone();
        async move {
            c.service_map(pb::ServiceMapRequest {
                project: String::new(),
                window: window(3_600_000),
            })
            .await
            .unwrap();
        }
    })
    .await;
    row("service map (1h)", map, None);
    let app = time(runs, |_| {
        let mut c = c.clone();
        async move {
            c.get_application(pb::GetApplicationRequest {
                project: String::new(),
                name: "app-3.service".into(),
                window: window(3_600_000),
            })
            .await
            .unwrap();
        }
    })
    .await;
    row("application overview (1h)", app, None);

    for (what, query, range, step, filter) in PROMQL {
        let promql = time(runs, |_| {
            let mut c = c.clone();
            async move {
                let (start_ms, step_ms) = if *range == 0 {
                    (s.end, 0)
                } else {
                    (s.end - range, *step)
                };
                c.query(pb::PromQueryRequest {
                    project: String::new(),
                    query: (*query).into(),
                    start_ms,
                    end_ms: s.end,
                    step_ms,
                })
                .await
                .unwrap();
            }
        })
        .await;
        // The raw SQL reading the same samples: series of the metric, then
        // their samples over the span the query needs (range + 5m).
        let metric = query
            .split(['(', '{', '['])
            .find(|w| w.ends_with("_total") || w.ends_with("_bucket"))
            .unwrap_or("");
        let (from, to) = (s.end - range - 300_000, s.end);
        let raw_promql = raw(Box::new(move |_| {
            format!("SELECT series_id, ts_ms, argMax(value, version) FROM {{db}}.metric_samples WHERE project = 'bench' AND series_id IN (SELECT series_id FROM {{db}}.metric_series WHERE project = 'bench' AND metric = '{metric}' {filter}) AND ts_ms >= {from} AND ts_ms <= {to} GROUP BY series_id, ts_ms FORMAT Native")
        }))
        .await;
        row(&format!("PromQL {what}"), promql, raw_promql);
    }
    shutdown.trigger();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let now = vigil_runtime::time::now_ms();
    let s = Setup {
        traces: env("TRACES", 100_000),
        lines: env("LINES", 1_000_000),
        nodes: env("NODES", 130),
        apps: env("APPS", 50),
        runs: env("RUNS", 20),
        end: now - now % STEP - STEP,
    };
    println!(
        "query API bench: {} traces x 10 spans, {} log lines, ~{} series over 24h at 1/min; {} runs per query",
        s.traces,
        s.lines,
        s.nodes * 64 + s.apps * 51,
        s.runs
    );
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStore::open(&dir.path().join("bench.redb")).unwrap();
    measure("redb", Arc::new(redb), &s, None).await;
    if let Some(url) = std::env::var("CLICKHOUSE_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let database = format!("vigil_query_bench_{}", std::process::id());
        let config = ClickHouseConfig {
            url: url.clone(),
            database: database.clone(),
            ..ClickHouseConfig::default()
        };
        let store = ClickHouseStore::connect(&config, &RetentionConfig::default())
            .await
            .unwrap();
        measure("clickhouse", Arc::new(store), &s, Some((&url, &database))).await;
        let _ = ureq::post(&url).send(format!("DROP DATABASE IF EXISTS {database}").as_bytes());
    } else {
        println!("\n(ClickHouse skipped: set CLICKHOUSE_TEST_URL)");
    }
}
