//! Every query endpoint, over gRPC and the Prometheus HTTP API, on redb and
//! (when `CLICKHOUSE_TEST_URL` is set, as scripts/test.sh does) on
//! ClickHouse: the query service runs as it does in production (`run`),
//! over a store holding what an agent and an OpenTelemetry SDK would have
//! sent for a small system: `web` calls `shop.service` (on another node,
//! found through its listening socket), which calls `postgres.service` and
//! an external HTTPS endpoint.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};
use vigil_proto::query::v1::{self as pb, query_service_client::QueryServiceClient};
use vigil_query::QueryConfig;
use vigil_runtime::{
    Shutdown,
    auth::{ApiKeys, BearerAuth, ProjectConfig},
    config::{GrpcServerConfig, HttpServerConfig},
    time::now_ms,
};
use vigil_storage::{
    Event, EventBatch, Labels, LogBatch, LogRecord, MetricBatch, Profile, ProfileBatch, Sample,
    SeriesWrite, Span, SpanBatch, StackSample, TelemetryStore,
    clickhouse::ClickHouseStore,
    config::{ClickHouseConfig, RetentionConfig},
    redb::RedbStore,
    trace::{SpanKind, StatusCode},
};

const KEY: &str = "api-test-key-0123456789abcdef";
const OTHER_KEY: &str = "api-test-other-project-key-0123";
const PROJECT: &str = "shop";
const MINUTE: i64 = 60_000;

type Client = QueryServiceClient<InterceptedService<Channel, BearerAuth>>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A series over the last 20 minutes, every 15 s: a counter growing at
/// `per_second`, or (`per_second` = 0) a gauge holding `level`.
fn series(metric: &str, l: &[(&str, &str)], per_second: f64, level: f64, now: i64) -> SeriesWrite {
    let start = now - 20 * MINUTE;
    SeriesWrite {
        metric: metric.into(),
        labels: labels(l),
        samples: (0..=80)
            .map(|k| Sample {
                timestamp_ms: start + k * 15_000,
                value: level + per_second * (k * 15) as f64,
            })
            .collect(),
    }
}

const SHOP: &[(&str, &str)] = &[
    ("node", "n1"),
    ("pid", "100"),
    ("process", "shop"),
    ("systemd_service", "shop.service"),
];

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

/// What the agents on two nodes would have shipped.
fn agent_metrics(now: i64) -> Vec<SeriesWrite> {
    let server = with(
        SHOP,
        &[
            ("side", "server"),
            ("protocol", "http"),
            ("operation", "GET"),
        ],
    );
    let mut out = vec![
        // Inbound to shop: 10 good and 1 failing request per second.
        series(
            "process_l7_requests_total",
            &with(&server, &[("status", "200")]),
            10.0,
            0.0,
            now,
        ),
        series(
            "process_l7_requests_total",
            &with(&server, &[("status", "503")]),
            1.0,
            0.0,
            now,
        ),
        series(
            "process_l7_request_seconds_total",
            &with(&server, &[("status", "200")]),
            0.5,
            0.0,
            now,
        ),
        series(
            "process_l7_request_seconds_total",
            &with(&server, &[("status", "503")]),
            0.2,
            0.0,
            now,
        ),
    ];
    let server_h = with(SHOP, &[("side", "server"), ("protocol", "http")]);
    for (le, rate) in [
        ("0.05", 5.0),
        ("0.1", 10.0),
        ("0.25", 10.0),
        ("0.5", 10.5),
        ("+Inf", 11.0),
    ] {
        out.push(series(
            "process_l7_request_duration_seconds_bucket",
            &with(&server_h, &[("le", le)]),
            rate,
            0.0,
            now,
        ));
    }
    // shop -> postgres (on the same node: the agent named it).
    let to_db = with(
        SHOP,
        &[
            ("side", "client"),
            ("protocol", "postgres"),
            ("destination", "10.0.0.5:5432"),
            ("destination_application", "postgres.service"),
        ],
    );
    out.push(series(
        "process_l7_requests_total",
        &with(&to_db, &[("operation", "SELECT"), ("status", "ok")]),
        5.0,
        0.0,
        now,
    ));
    let tcp_db = with(
        SHOP,
        &[
            ("destination", "10.0.0.5:5432"),
            ("destination_application", "postgres.service"),
        ],
    );
    out.push(series(
        "process_net_tcp_successful_connects_total",
        &tcp_db,
        1.0,
        0.0,
        now,
    ));
    out.push(series(
        "process_net_tcp_failed_connects_total",
        &tcp_db,
        0.1,
        0.0,
        now,
    ));
    out.push(series(
        "process_net_tcp_retransmits_total",
        &tcp_db,
        0.5,
        0.0,
        now,
    ));
    out.push(series(
        "process_net_tcp_connect_seconds_total",
        &tcp_db,
        0.002,
        0.0,
        now,
    ));
    out.push(series(
        "process_net_tcp_active_connections",
        &tcp_db,
        0.0,
        4.0,
        now,
    ));
    // shop -> an external HTTPS endpoint.
    out.push(series(
        "process_l7_requests_total",
        &with(
            SHOP,
            &[
                ("side", "client"),
                ("protocol", "http"),
                ("destination", "93.184.216.34:443"),
                ("operation", "POST"),
                ("status", "200"),
            ],
        ),
        1.0,
        0.0,
        now,
    ));
    // web on node n2 calls shop at its address; shop's agent saw it listen there.
    out.push(series(
        "process_l7_requests_total",
        &[
            ("node", "n2"),
            ("pid", "7"),
            ("process", "web"),
            ("side", "client"),
            ("protocol", "http"),
            ("destination", "10.0.0.1:8080"),
            ("operation", "GET"),
            ("status", "200"),
        ],
        2.0,
        0.0,
        now,
    ));
    out.push(series(
        "process_net_tcp_listen_info",
        &with(SHOP, &[("listen", "10.0.0.1:8080")]),
        0.0,
        1.0,
        now,
    ));
    // Resources of shop.service; one OOM kill ten minutes ago.
    let svc = &[("node", "n1"), ("systemd_service", "shop.service")];
    out.push(series(
        "container_cpu_usage_seconds_total",
        svc,
        0.5,
        100.0,
        now,
    ));
    out.push(series("container_memory_rss_bytes", svc, 0.0, 1e8, now));
    let mut oom = series("container_oom_kills_total", svc, 0.0, 0.0, now);
    for s in &mut oom.samples {
        if s.timestamp_ms > now - 10 * MINUTE {
            s.value = 1.0;
        }
    }
    out.push(oom);
    // For the inspections: shop stalls on memory a quarter of the time and
    // logs an error every 10 s; postgres' memory grows 1 kB/s.
    out.push(series(
        "container_pressure_waiting_seconds_total",
        &with(svc, &[("resource", "memory"), ("kind", "some")]),
        0.25,
        0.0,
        now,
    ));
    out.push(series(
        "log_messages_total",
        &[
            ("node", "n1"),
            ("journal_unit", "shop.service"),
            ("level", "error"),
            ("pattern_id", "00000000000000aa"),
        ],
        0.1,
        0.0,
        now,
    ));
    out.push(series(
        "container_memory_rss_bytes",
        &[("node", "n1"), ("systemd_service", "postgres.service")],
        1000.0,
        5e7,
        now,
    ));
    out
}

/// A span; `ids` is (trace, span, parent) as repeated bytes.
fn span(ids: (u8, u8, u8), service: &str, name: &str, start: i64, ms: i64, error: bool) -> Span {
    Span {
        trace_id: [ids.0; 16],
        span_id: [ids.1; 8],
        parent_span_id: [ids.2; 8],
        name: name.into(),
        kind: if ids.2 == 0 {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
        start_ns: start,
        end_ns: start + ms * 1_000_000,
        status: if error {
            StatusCode::Error
        } else {
            StatusCode::Unset
        },
        status_message: String::new(),
        service: service.into(),
        resource: Default::default(),
        attributes: labels(&[("http.request.method", "GET")]),
        events: Vec::new(),
        links: Vec::new(),
    }
}

fn log(time_ns: i64, severity: u8, body: &str, pattern_id: u64, trace_id: [u8; 16]) -> LogRecord {
    LogRecord {
        time_ns,
        severity,
        severity_text: String::new(),
        body: body.into(),
        service: "shop.service".into(),
        resource: labels(&[("node", "n1")]),
        attributes: Default::default(),
        trace_id,
        span_id: [0; 8],
        pattern_id,
    }
}

async fn fill(store: &dyn TelemetryStore, now: i64) {
    store
        .write_metrics(MetricBatch {
            project: PROJECT.into(),
            batch_id: "agents".into(),
            series: agent_metrics(now),
        })
        .await
        .expect("metrics");
    let t = (now - 5 * MINUTE) * 1_000_000;
    store
        .write_spans(SpanBatch {
            project: PROJECT.into(),
            batch_id: "spans".into(),
            spans: vec![
                span((1, 1, 0), "shop.service", "GET /cart", t, 120, false),
                span(
                    (1, 2, 1),
                    "shop.service",
                    "SELECT",
                    t + 10_000_000,
                    30,
                    false,
                ),
                span(
                    (1, 3, 2),
                    "postgres.service",
                    "SELECT",
                    t + 12_000_000,
                    25,
                    false,
                ),
                span(
                    (2, 4, 0),
                    "shop.service",
                    "GET /pay",
                    t + 60_000_000_000,
                    900,
                    true,
                ),
            ],
        })
        .await
        .expect("spans");
    let mut records = Vec::new();
    for i in 0..30 {
        records.push(log(
            t + i * 1_000_000_000,
            9,
            &format!("served cart {i} in {i}ms"),
            11,
            [0; 16],
        ));
    }
    for i in 0..5 {
        records.push(log(
            t + i * 7_000_000_000 + 1,
            17,
            "payment gateway timeout",
            22,
            [2; 16],
        ));
    }
    store
        .write_logs(LogBatch {
            project: PROJECT.into(),
            batch_id: "logs".into(),
            records,
        })
        .await
        .expect("logs");
    let stack = |frames: &[&str], value: u64| StackSample {
        frames: frames.iter().map(|f| (*f).to_owned()).collect(),
        value,
    };
    let profile = |time_ns: i64, stacks: Vec<StackSample>| Profile {
        time_ns,
        duration_ns: 60_000_000_000,
        profile_type: "cpu".into(),
        service: "shop.service".into(),
        resource: labels(&[("node", "n1")]),
        stacks,
    };
    store
        .write_profiles(ProfileBatch {
            project: PROJECT.into(),
            batch_id: "profiles".into(),
            profiles: vec![
                profile(
                    (now - 50 * MINUTE) * 1_000_000,
                    vec![stack(&["main", "render"], 90), stack(&["main", "db"], 10)],
                ),
                profile(
                    (now - 5 * MINUTE) * 1_000_000,
                    vec![stack(&["main", "render"], 20), stack(&["main", "db"], 80)],
                ),
            ],
        })
        .await
        .expect("profiles");
    store
        .write_events(EventBatch {
            project: PROJECT.into(),
            batch_id: "events".into(),
            events: vec![
                Event {
                    time_ns: t,
                    kind: "Warning".into(),
                    reason: "OOMKilling".into(),
                    object: "Pod/shop/shop-1".into(),
                    message: "Memory cgroup out of memory".into(),
                    resource: labels(&[("namespace", "shop")]),
                },
                Event {
                    time_ns: t + 1,
                    kind: "Normal".into(),
                    reason: "ScalingReplicaSet".into(),
                    object: "Deployment/shop/shop".into(),
                    message: "Scaled up to 2".into(),
                    resource: labels(&[("namespace", "shop")]),
                },
            ],
        })
        .await
        .expect("events");
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

struct Running {
    grpc: SocketAddr,
    http: SocketAddr,
    shutdown: Shutdown,
}

async fn start(store: Arc<dyn TelemetryStore>) -> Running {
    let (grpc, http) = (free_addr(), free_addr());
    let config = QueryConfig {
        grpc: GrpcServerConfig::on(grpc),
        http: HttpServerConfig::on(http),
        max_log_records: 50,
        ..QueryConfig::default()
    };
    let keys = ApiKeys::new(&[
        ProjectConfig {
            name: PROJECT.into(),
            api_keys: vec![KEY.into()],
            api_keys_file: None,
        },
        ProjectConfig {
            name: "other".into(),
            api_keys: vec![OTHER_KEY.into()],
            api_keys_file: None,
        },
    ])
    .expect("keys");
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    tokio::spawn(async move { vigil_query::run(config, store, keys, s).await });
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(grpc).await.is_ok()
            && tokio::net::TcpStream::connect(http).await.is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running {
        grpc,
        http,
        shutdown,
    }
}

fn client(addr: SocketAddr, key: &str) -> Client {
    let channel =
        vigil_runtime::grpc::channel(&addr.to_string(), Duration::from_secs(30)).expect("channel");
    QueryServiceClient::with_interceptor(channel, BearerAuth::new(key).expect("key"))
}

fn last_hour(now: i64) -> Option<pb::TimeWindow> {
    Some(pb::TimeWindow {
        start_ms: now - 60 * MINUTE,
        end_ms: now,
    })
}

async fn check_applications(c: &mut Client, now: i64, backend: &str) {
    let apps = c
        .list_applications(pb::ListApplicationsRequest {
            project: String::new(),
            window: last_hour(now),
        })
        .await
        .expect("list applications")
        .into_inner()
        .applications;
    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["postgres.service", "shop.service", "web"],
        "{backend}"
    );
    let shop = c
        .get_application(pb::GetApplicationRequest {
            project: PROJECT.into(),
            name: "shop.service".into(),
            window: last_hour(now),
        })
        .await
        .expect("get application")
        .into_inner();
    let summary = shop.summary.expect("summary");
    let red = summary.inbound.expect("inbound");
    // Samples cover 20 of the 60 minutes: increase() extrapolates only to
    // half a scrape interval beyond them, as Prometheus does.
    let expected = 11.0 * 20.0 * 60.0;
    assert!(
        (red.requests - expected).abs() / expected < 0.02,
        "{backend}: {red:?}"
    );
    assert!(
        (red.error_ratio - 1.0 / 11.0).abs() < 1e-6,
        "{backend}: {red:?}"
    );
    let mean = red.latency_mean_seconds.expect("mean");
    assert!((mean - 0.7 / 11.0).abs() < 1e-6, "{backend}: {mean}");
    let p50 = red.latency_p50_seconds.expect("p50");
    assert!(p50 > 0.05 && p50 <= 0.1, "{backend}: p50 {p50}");
    let p99 = red.latency_p99_seconds.expect("p99");
    assert_eq!(
        p99, 0.5,
        "{backend}: p99 falls in the +Inf bucket, so it is the last finite bound"
    );
    assert_eq!(
        summary.health,
        pb::Health::Warning as i32,
        "{backend}: {:?}",
        summary.reasons
    );
    assert!(
        summary.reasons.iter().any(|r| r.contains("availability"))
            && summary.reasons.iter().any(|r| r.contains("OOM")),
        "{backend}: {:?}",
        summary.reasons
    );
    assert_eq!(summary.nodes, ["n1"], "{backend}");
    let slo = shop.slo.expect("slo");
    assert!((slo.availability_percent.expect("availability") - 100.0 * 10.0 / 11.0).abs() < 1e-6);
    assert!((slo.availability_burn_rate.expect("burn") - (1.0 / 11.0) / 0.01).abs() < 1e-6);
    assert_eq!(slo.latency_threshold_seconds, 0.5, "{backend}");
    assert!(
        (slo.latency_percent.expect("latency") - 100.0 * 10.5 / 11.0).abs() < 1e-6,
        "{backend}: {slo:?}"
    );
    let upstreams: Vec<(&str, bool)> = shop
        .upstreams
        .iter()
        .map(|u| (u.name.as_str(), u.external))
        .collect();
    assert_eq!(
        upstreams,
        [("93.184.216.34:443", true), ("postgres.service", false)],
        "{backend}"
    );
    let db = &shop.upstreams[1];
    assert!(
        (db.failed_connects / db.connects - 0.1).abs() < 1e-6,
        "{backend}: {db:?}"
    );
    assert_eq!(db.active_connections, 4.0, "{backend}");
    assert!((db.connect_time_mean_seconds.expect("connect time") - 0.002).abs() < 1e-9);
    let resources = shop.resources.expect("resources");
    // Half a core for the 20 minutes of samples, as a mean over the hour.
    let cpu = resources.cpu_usage_cores.expect("cpu");
    assert!((cpu - 0.5 / 3.0).abs() < 0.005, "{backend}: {cpu}");
    assert_eq!(resources.memory_rss_bytes, Some(1e8), "{backend}");
    assert!(resources.oom_kills >= 1.0, "{backend}: {resources:?}");
    assert_eq!(shop.instances.len(), 1, "{backend}: {:?}", shop.instances);
    assert_eq!(shop.instances[0].owner, "shop.service");
    let missing = c
        .get_application(pb::GetApplicationRequest {
            project: String::new(),
            name: "nope".into(),
            window: last_hour(now),
        })
        .await
        .expect_err("unknown application");
    assert_eq!(missing.code(), Code::NotFound, "{backend}");
}

async fn check_inspect_applications(c: &mut Client, now: i64, backend: &str) {
    let r = c
        .inspect_applications(pb::InspectApplicationsRequest {
            project: PROJECT.into(),
            window: Some(pb::TimeWindow {
                start_ms: now - 5 * MINUTE,
                end_ms: now,
            }),
        })
        .await
        .expect("inspect applications")
        .into_inner();
    assert_eq!((r.start_ms, r.end_ms), (now - 5 * MINUTE, now));
    let app = |name: &str| {
        r.applications
            .iter()
            .find(|a| a.summary.as_ref().is_some_and(|s| s.name == name))
            .unwrap_or_else(|| panic!("{backend}: {name} in {:?}", r.applications))
    };
    let shop = app("shop.service");
    let red = shop
        .summary
        .as_ref()
        .and_then(|s| s.inbound.as_ref())
        .expect("red");
    assert!(red.requests_by_status["503"] > 0.0, "{backend}: {red:?}");
    let le: Vec<f64> = red.latency_histogram.iter().map(|b| b.le).collect();
    assert!(
        le.windows(2).all(|w| w[0] < w[1]),
        "{backend}: ascending {le:?}"
    );
    assert_eq!(le.last(), Some(&f64::INFINITY), "{backend}");
    let total = red.latency_histogram.last().expect("+Inf").count;
    assert!(
        (total - red.requests).abs() / red.requests < 0.01,
        "{backend}: {total} vs {red:?}"
    );
    let resources = shop.resources.as_ref().expect("resources");
    let pressure = resources.memory_pressure_ratio.expect("memory pressure");
    assert!((pressure - 0.25).abs() < 0.01, "{backend}: {pressure}");
    assert_eq!(resources.cpu_pressure_ratio, None, "{backend}");
    let logs = shop.logs.as_ref().expect("logs");
    assert!((logs.errors - 30.0).abs() < 1.0, "{backend}: {logs:?}");
    assert_eq!(logs.errors_by_pattern.len(), 1, "{backend}: {logs:?}");
    let growth = app("postgres.service")
        .resources
        .as_ref()
        .and_then(|r| r.memory_rss_growth_bytes_per_second)
        .expect("growth");
    assert!((growth - 1000.0).abs() < 1.0, "{backend}: {growth}");
}

async fn check_service_map(c: &mut Client, now: i64, backend: &str) {
    let map = c
        .service_map(pb::ServiceMapRequest {
            project: String::new(),
            window: last_hour(now),
        })
        .await
        .expect("service map")
        .into_inner();
    let nodes: Vec<(&str, bool)> = map
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.external))
        .collect();
    assert_eq!(
        nodes,
        [
            ("postgres.service", false),
            ("shop.service", false),
            ("web", false),
            ("93.184.216.34:443", true)
        ],
        "{backend}"
    );
    let edges: Vec<(&str, &str)> = map
        .edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    assert_eq!(
        edges,
        [
            ("shop.service", "93.184.216.34:443"),
            ("shop.service", "postgres.service"),
            ("web", "shop.service"),
        ],
        "{backend}: web's calls reach shop through the address shop listens on"
    );
    let web = map.edges[2].red.as_ref().expect("red");
    assert!(
        (web.request_rate - 2.0 * 20.0 / 60.0).abs() < 0.05,
        "{backend}: {web:?}"
    );
    assert!(map.edges[1].retransmits > 0.0, "{backend}");
}

async fn check_promql(c: &mut Client, now: i64, backend: &str) {
    let r = c
        .query(pb::PromQueryRequest {
            project: String::new(),
            query: "sum by (status) (rate(process_l7_requests_total{side=\"server\"}[5m]))".into(),
            start_ms: 0,
            end_ms: now,
            step_ms: 0,
        })
        .await
        .expect("instant query")
        .into_inner();
    assert_eq!(r.result_type, "vector", "{backend}");
    let mut rates: Vec<(String, f64)> = r
        .series
        .iter()
        .map(|s| (s.labels[0].value.clone(), s.samples[0].value))
        .collect();
    rates.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rates.len(), 2, "{backend}");
    assert!(
        (rates[0].1 - 10.0).abs() < 1e-6 && (rates[1].1 - 1.0).abs() < 1e-6,
        "{backend}: {rates:?}"
    );
    let range = c
        .query(pb::PromQueryRequest {
            project: String::new(),
            query: "histogram_quantile(0.9, sum by (le) (rate(process_l7_request_duration_seconds_bucket[5m])))".into(),
            start_ms: now - 10 * MINUTE,
            end_ms: now,
            step_ms: MINUTE,
        })
        .await
        .expect("range query")
        .into_inner();
    assert_eq!(range.result_type, "matrix");
    assert_eq!(range.series.len(), 1, "{backend}");
    assert_eq!(range.series[0].samples.len(), 11, "{backend}");
    let bad = c
        .query(pb::PromQueryRequest {
            project: String::new(),
            query: "sum(rate(x[5m]) by (a)".into(),
            ..Default::default()
        })
        .await
        .expect_err("malformed");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().starts_with("1:"),
        "a position: {}",
        bad.message()
    );
    let too_long = c
        .query(pb::PromQueryRequest {
            project: String::new(),
            query: "up".into(),
            start_ms: 0,
            end_ms: now,
            step_ms: 1,
        })
        .await
        .expect_err("too many steps");
    assert_eq!(too_long.code(), Code::InvalidArgument);
}

async fn check_logs(c: &mut Client, now: i64, backend: &str) {
    let mut request = pb::SearchLogsRequest {
        window: last_hour(now),
        application: "shop.service".into(),
        limit: 20,
        ..Default::default()
    };
    let first = c
        .search_logs(request.clone())
        .await
        .expect("search")
        .into_inner();
    assert_eq!(first.records.len(), 20, "{backend}");
    assert!(!first.next_cursor.is_empty());
    request.cursor = first.next_cursor.clone();
    let second = c
        .search_logs(request.clone())
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.records.len(), 15, "{backend}");
    assert!(second.next_cursor.is_empty(), "{backend}");
    assert!(
        first.records[19].time_ms >= second.records[0].time_ms,
        "newest first across pages"
    );
    let errors = c
        .search_logs(pb::SearchLogsRequest {
            window: last_hour(now),
            min_severity: 17,
            text: "gateway".into(),
            trace_id: "02".repeat(16),
            ..Default::default()
        })
        .await
        .expect("errors")
        .into_inner();
    assert_eq!(errors.records.len(), 5, "{backend}");
    assert_eq!(errors.records[0].trace_id, "02".repeat(16));
    let patterns = c
        .log_patterns(pb::SearchLogsRequest {
            window: last_hour(now),
            ..Default::default()
        })
        .await
        .expect("patterns")
        .into_inner();
    let counts: Vec<(u64, u64)> = patterns
        .patterns
        .iter()
        .map(|p| (p.pattern_id, p.count))
        .collect();
    assert_eq!(counts, [(11, 30), (22, 5)], "{backend}");
    assert_eq!(patterns.patterns[1].max_severity, 17);
    assert_eq!(patterns.records, 35);
    assert!(!patterns.truncated);
    for bad in [
        pb::SearchLogsRequest {
            cursor: "nonsense".into(),
            ..Default::default()
        },
        pb::SearchLogsRequest {
            limit: 51,
            ..Default::default()
        },
        pb::SearchLogsRequest {
            trace_id: "xyz".into(),
            ..Default::default()
        },
    ] {
        let e = c.search_logs(bad).await.expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
}

async fn check_traces(c: &mut Client, now: i64, backend: &str) {
    let trace = c
        .get_trace(pb::GetTraceRequest {
            project: String::new(),
            trace_id: "01".repeat(16),
        })
        .await
        .expect("trace")
        .into_inner();
    let shape: Vec<(&str, &str, u32)> = trace
        .spans
        .iter()
        .map(|s| (s.service.as_str(), s.name.as_str(), s.depth))
        .collect();
    assert_eq!(
        shape,
        [
            ("shop.service", "GET /cart", 0),
            ("shop.service", "SELECT", 1),
            ("postgres.service", "SELECT", 2)
        ],
        "{backend}"
    );
    assert_eq!(trace.duration_ns, 120_000_000);
    assert_eq!(trace.spans[2].offset_ns, 12_000_000);
    let missing = c
        .get_trace(pb::GetTraceRequest {
            project: String::new(),
            trace_id: "09".repeat(16),
        })
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    let slow = c
        .search_traces(pb::SearchTracesRequest {
            window: last_hour(now),
            service: "shop.service".into(),
            min_duration_ms: 500,
            status: "error".into(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(slow.spans.len(), 1, "{backend}");
    assert_eq!(slow.spans[0].name, "GET /pay");
    let bad = c
        .search_traces(pb::SearchTracesRequest {
            status: "broken".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad status");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

async fn check_profiles(c: &mut Client, now: i64, backend: &str) {
    let flame = c
        .flamegraph(pb::FlamegraphRequest {
            window: last_hour(now),
            application: "shop.service".into(),
            ..Default::default()
        })
        .await
        .expect("flamegraph")
        .into_inner();
    let root = flame.root.expect("root");
    assert_eq!(root.total, 200, "{backend}");
    let main = &root.children[0];
    assert_eq!((main.name.as_str(), main.total), ("main", 200));
    assert_eq!(
        main.children[0].name, "render",
        "{backend}: 110 render vs 90 db"
    );
    let diff = c
        .flamegraph_diff(pb::FlamegraphDiffRequest {
            application: "shop.service".into(),
            baseline: Some(pb::TimeWindow {
                start_ms: now - 60 * MINUTE,
                end_ms: now - 30 * MINUTE,
            }),
            comparison: Some(pb::TimeWindow {
                start_ms: now - 30 * MINUTE,
                end_ms: now,
            }),
            ..Default::default()
        })
        .await
        .expect("diff")
        .into_inner();
    let main = &diff.root.expect("root").children[0];
    let db = main.children.iter().find(|n| n.name == "db").expect("db");
    assert!(
        (db.baseline_share - 0.1).abs() < 1e-9 && (db.comparison_share - 0.8).abs() < 1e-9,
        "{backend}: {db:?}"
    );
    let pprof = c
        .export_pprof(pb::FlamegraphRequest {
            window: last_hour(now),
            application: "shop.service".into(),
            ..Default::default()
        })
        .await
        .expect("pprof")
        .into_inner();
    assert_eq!(&pprof.pprof_gzip[..2], &[0x1f, 0x8b], "gzip");
}

async fn check_events(c: &mut Client, now: i64, backend: &str) {
    let events = c
        .list_events(pb::ListEventsRequest {
            window: last_hour(now),
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner()
        .events;
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["ScalingReplicaSet", "OOMKilling"],
        "{backend}: newest first"
    );
    let warnings = c
        .list_events(pb::ListEventsRequest {
            window: last_hour(now),
            kind: "Warning".into(),
            ..Default::default()
        })
        .await
        .expect("warnings")
        .into_inner()
        .events;
    assert_eq!(warnings.len(), 1);
}

async fn check_scoping(addr: SocketAddr, now: i64) {
    let mut other = client(addr, OTHER_KEY);
    let apps = other
        .list_applications(pb::ListApplicationsRequest {
            project: String::new(),
            window: last_hour(now),
        })
        .await
        .expect("other project")
        .into_inner();
    assert!(
        apps.applications.is_empty(),
        "another project's key sees none of this project"
    );
    let denied = other
        .list_applications(pb::ListApplicationsRequest {
            project: PROJECT.into(),
            window: last_hour(now),
        })
        .await
        .expect_err("naming a project the key is not for");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut nobody = QueryServiceClient::new(
        vigil_runtime::grpc::channel(&addr.to_string(), Duration::from_secs(5)).expect("channel"),
    );
    let e = nobody
        .list_applications(pb::ListApplicationsRequest::default())
        .await
        .expect_err("no key");
    assert_eq!(e.code(), Code::Unauthenticated);
}

/// The Prometheus HTTP API: listings, errors, limits, keys.
fn check_http(addr: SocketAddr, now: i64, backend: String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str, key: Option<&str>| -> (u16, serde_json::Value) {
        let mut r = agent.get(&format!("http://{addr}{path}"));
        if let Some(key) = key {
            r = r.header("x-api-key", key);
        }
        let mut response = r.call().expect("answer");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")),
        )
    };
    let (status, names) = get("/api/v1/label/__name__/values", Some(KEY));
    assert_eq!(status, 200, "{backend}: {names}");
    let names: Vec<&str> = names["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        names.contains(&"process_l7_requests_total")
            && names.contains(&"container_memory_rss_bytes"),
        "{backend}: {names:?}"
    );
    let (_, labels) = get(
        "/api/v1/labels?match[]=container_memory_rss_bytes",
        Some(KEY),
    );
    assert_eq!(
        labels["data"],
        serde_json::json!(["__name__", "node", "systemd_service"]),
        "{backend}"
    );
    let (_, values) = get("/api/v1/label/status/values", Some(KEY));
    assert_eq!(
        values["data"],
        serde_json::json!(["200", "503", "ok"]),
        "{backend}"
    );
    let (_, series) = get(
        "/api/v1/series?match[]=process_l7_requests_total%7Bside%3D%22server%22%7D&match[]=container_oom_kills_total",
        Some(KEY),
    );
    assert_eq!(
        series["data"].as_array().expect("series").len(),
        3,
        "{backend}: {series}"
    );
    let (status, metadata) = get("/api/v1/metadata", Some(KEY));
    assert_eq!((status, &metadata["data"]), (200, &serde_json::json!({})));
    let (status, bad) = get("/api/v1/query?query=sum(rate(x%5B5m%5D)", Some(KEY));
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["errorType"], "bad_data");
    assert!(
        bad["error"].as_str().expect("message").contains("1:"),
        "{bad}"
    );
    let (status, limit) = get(
        &format!(
            "/api/v1/query_range?query=up&start={}&end={}&step=0.001",
            now / 1000 - 3600,
            now / 1000
        ),
        Some(KEY),
    );
    assert_eq!(status, 422, "{limit}");
    assert_eq!(limit["errorType"], "execution");
    let (status, _) = get("/api/v1/query?query=up", None);
    assert_eq!(status, 401);
    let (_, other) = get("/api/v1/label/__name__/values", Some(OTHER_KEY));
    assert_eq!(
        other["data"],
        serde_json::json!([]),
        "{backend}: scoped by key"
    );
    let (status, missing) = get("/api/v1/series", Some(KEY));
    assert_eq!(
        (status, missing["error"].as_str()),
        (400, Some("no match[] parameter provided"))
    );
}

async fn check_all(store: Arc<dyn TelemetryStore>, backend: &str) {
    let now = now_ms();
    fill(&*store, now).await;
    let running = start(store).await;
    let mut c = client(running.grpc, KEY);
    check_applications(&mut c, now, backend).await;
    check_service_map(&mut c, now, backend).await;
    check_inspect_applications(&mut c, now, backend).await;
    check_promql(&mut c, now, backend).await;
    check_logs(&mut c, now, backend).await;
    check_traces(&mut c, now, backend).await;
    check_profiles(&mut c, now, backend).await;
    check_events(&mut c, now, backend).await;
    check_scoping(running.grpc, now).await;
    let http = running.http;
    let backend_name = backend.to_owned();
    tokio::task::spawn_blocking(move || check_http(http, now, backend_name))
        .await
        .expect("http checks");
    running.shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_on_redb() {
    let dir = tempfile::tempdir().expect("dir");
    let store = RedbStore::open(&dir.path().join("api.redb")).expect("redb");
    check_all(Arc::new(store), "redb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_on_clickhouse() {
    let Some(url) = std::env::var("CLICKHOUSE_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs this on ClickHouse: scripts/test.sh sets CLICKHOUSE_TEST_URL"
        );
        eprintln!(
            "SKIPPED: CLICKHOUSE_TEST_URL is not set (scripts/clickhouse.sh starts a server)"
        );
        return;
    };
    let database = format!("vigil_query_api_{:08x}", std::process::id());
    let config = ClickHouseConfig {
        url: url.clone(),
        database: database.clone(),
        ..ClickHouseConfig::default()
    };
    let store = ClickHouseStore::connect(&config, &RetentionConfig::default())
        .await
        .expect("clickhouse");
    check_all(Arc::new(store), "clickhouse").await;
    let _ = tokio::task::spawn_blocking(move || {
        ureq::post(&format!(
            "{url}/?query=DROP%20DATABASE%20IF%20EXISTS%20{database}"
        ))
        .send_empty()
    })
    .await;
}
