//! Vigil's PromQL against a real Prometheus 2.42: the same samples go into
//! both (Prometheus through `promtool tsdb create-blocks-from openmetrics`,
//! Vigil through its store), every query of `tests/promql_corpus.txt` runs
//! on both as instant queries at several times and as range queries, and
//! the answers are compared (values to a relative 1e-9, or both NaN).
//!
//! The share that matches is printed. Queries known to differ are listed
//! in `KNOWN_DIFFERENCES` with the reason; any other difference fails the
//! test, and so does a listed query that starts to match (so the list stays
//! true). Runs on redb, and on ClickHouse too when `CLICKHOUSE_TEST_URL` is
//! set (scripts/test.sh starts one).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use serde_json::Value as Json;
use vigil_query::{
    prom_api::{PromApi, router},
    promql::Limits,
};
use vigil_runtime::auth::{ApiKeys, ProjectConfig};
use vigil_storage::{
    Labels, MetricBatch, Sample, SeriesWrite, TelemetryStore, clickhouse::ClickHouseStore,
    config::ClickHouseConfig, redb::RedbStore,
};

const KEY: &str = "compat-test-key-0123456789";
const PROJECT: &str = "compat";
/// Start of the generated data (a whole two-hour block boundary).
const T0: i64 = 1_700_006_400_000;
const MINUTE: i64 = 60_000;
const SCRAPE: i64 = 15_000;

/// Queries whose answers differ from Prometheus 2.42, with why.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// A small deterministic generator (no dependency on a rand version).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Rounds to three decimals so that both sides read the same text.
fn r3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// One hour of scrapes every 15 s: counters (one with a reset, one that
/// starts late, one that stops early), gauges with negative values, 0/1
/// `up`, an info metric and a classic histogram.
fn generate() -> Vec<SeriesWrite> {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    let times =
        |from_min: i64, to_min: i64| (from_min * MINUTE..=to_min * MINUTE).step_by(SCRAPE as usize);
    let mut series = |metric: &str, l: Labels, samples: Vec<Sample>| {
        out.push(SeriesWrite {
            metric: metric.into(),
            labels: l,
            samples,
        });
    };
    for (job, instance) in [("api", "a"), ("api", "b"), ("db", "a"), ("db", "c")] {
        for code in ["200", "500"] {
            let (from, to) = match (job, instance, code) {
                ("db", "c", _) => (20, 60),
                ("api", "b", "500") => (0, 40),
                _ => (0, 60),
            };
            let mut total = 0.0;
            let samples = times(from, to)
                .map(|t| {
                    total += r3(rng.next() * if code == "200" { 50.0 } else { 3.0 });
                    if job == "api" && instance == "a" && code == "200" && t == 30 * MINUTE {
                        total = 7.0; // a counter reset
                    }
                    Sample {
                        timestamp_ms: T0 + t,
                        value: r3(total),
                    }
                })
                .collect();
            series(
                "http_requests_total",
                labels(&[("job", job), ("instance", instance), ("code", code)]),
                samples,
            );
        }
        let up = times(0, 60)
            .map(|t| Sample {
                timestamp_ms: T0 + t,
                value: if instance == "b" && (25..35).contains(&(t / MINUTE)) {
                    0.0
                } else {
                    1.0
                },
            })
            .collect();
        series("up", labels(&[("job", job), ("instance", instance)]), up);
    }
    for (job, team) in [("api", "web"), ("db", "data")] {
        let samples = times(0, 60)
            .map(|t| Sample {
                timestamp_ms: T0 + t,
                value: 1.0,
            })
            .collect();
        series(
            "app_info",
            labels(&[("job", job), ("team", team), ("version", "1.2")]),
            samples,
        );
    }
    for (instance, room) in [("a", "kitchen"), ("b", "hall"), ("c", "cellar")] {
        let mut v = if room == "cellar" { -2.0 } else { 19.0 };
        let samples = times(0, 60)
            .map(|t| {
                v = r3(v + (rng.next() - 0.5) * 2.0);
                Sample {
                    timestamp_ms: T0 + t,
                    value: v,
                }
            })
            .collect();
        series(
            "temperature_celsius",
            labels(&[("instance", instance), ("room", room)]),
            samples,
        );
    }
    for instance in ["a", "b"] {
        for cpu in ["0", "1"] {
            for mode in ["idle", "user"] {
                let mut total = 1000.0;
                let samples = times(0, 60)
                    .map(|t| {
                        total = r3(total + rng.next() * 15.0);
                        Sample {
                            timestamp_ms: T0 + t,
                            value: total,
                        }
                    })
                    .collect();
                series(
                    "node_cpu_seconds_total",
                    labels(&[("instance", instance), ("cpu", cpu), ("mode", mode)]),
                    samples,
                );
            }
        }
    }
    let bounds = ["0.1", "0.5", "1", "+Inf"];
    for job in ["api", "db"] {
        let mut counts = [0.0; 4];
        let (mut sum, mut count) = (0.0, 0.0);
        let mut buckets: Vec<Vec<Sample>> = vec![Vec::new(); 4];
        let mut sums = Vec::new();
        let mut totals = Vec::new();
        for t in times(0, 60) {
            for _ in 0..((rng.next() * 20.0) as usize) {
                let d = rng.next() * rng.next() * 1.5;
                for (i, bound) in [0.1, 0.5, 1.0, f64::INFINITY].iter().enumerate() {
                    if d <= *bound {
                        counts[i] += 1.0;
                    }
                }
                sum = r3(sum + r3(d));
                count += 1.0;
            }
            for (i, c) in counts.iter().enumerate() {
                buckets[i].push(Sample {
                    timestamp_ms: T0 + t,
                    value: *c,
                });
            }
            sums.push(Sample {
                timestamp_ms: T0 + t,
                value: sum,
            });
            totals.push(Sample {
                timestamp_ms: T0 + t,
                value: count,
            });
        }
        for (bound, samples) in bounds.iter().zip(buckets) {
            series(
                "request_duration_seconds_bucket",
                labels(&[("job", job), ("le", bound)]),
                samples,
            );
        }
        series(
            "request_duration_seconds_sum",
            labels(&[("job", job)]),
            sums,
        );
        series(
            "request_duration_seconds_count",
            labels(&[("job", job)]),
            totals,
        );
    }
    out
}

/// The samples as OpenMetrics text for promtool.
fn openmetrics(data: &[SeriesWrite]) -> String {
    let mut text = String::new();
    for s in data {
        let l: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        for p in &s.samples {
            text.push_str(&format!(
                "{}{{{}}} {} {}\n",
                s.metric,
                l.join(","),
                p.value,
                p.timestamp_ms as f64 / 1e3
            ));
        }
    }
    text.push_str("# EOF\n");
    text
}

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// GET with the API key; the parsed JSON body.
fn get(agent: &ureq::Agent, url: &str, params: &[(&str, String)]) -> Json {
    let mut request = agent
        .get(url)
        .header("authorization", &format!("Bearer {KEY}"));
    for (k, v) in params {
        request = request.query(k, v);
    }
    let mut response = request.call().expect("HTTP answers");
    let text = response.body_mut().read_to_string().expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

#[allow(clippy::disallowed_methods)] // a plain thread waits; no runtime runs here
fn start_prometheus(dir: &Path, data: &[SeriesWrite]) -> Option<Prometheus> {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs prometheus and promtool (scripts/install-deps.sh installs them)"
        );
        eprintln!("SKIPPED: prometheus is not installed (scripts/install-deps.sh installs it)");
        return None;
    }
    let om = dir.join("data.om");
    std::fs::write(&om, openmetrics(data)).expect("write OpenMetrics");
    let tsdb = dir.join("tsdb");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&tsdb)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("write config");
    let addr = free_addr();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--storage.tsdb.retention.time=100y")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let prometheus = Prometheus {
        child,
        url: format!("http://{addr}"),
    };
    let agent = http();
    for _ in 0..600 {
        if let Ok(r) = agent.get(&format!("{}/-/ready", prometheus.url)).call()
            && r.status() == 200
        {
            return Some(prometheus);
        }
        std::thread::sleep(Duration::from_millis(100)); // test helper; no runtime here
    }
    panic!("prometheus did not become ready");
}

/// Answers equal within a relative 1e-9 (or both NaN); label sets compared
/// as sets, since series order is not part of the answer.
fn same(a: &Json, b: &Json) -> Result<(), String> {
    if a["status"] != b["status"] {
        return Err(format!("status {} vs {}", a["status"], b["status"]));
    }
    if a["status"] == "error" {
        return Ok(());
    }
    let (da, db) = (&a["data"], &b["data"]);
    if da["resultType"] != db["resultType"] {
        return Err(format!("type {} vs {}", da["resultType"], db["resultType"]));
    }
    let value_eq = |x: &Json, y: &Json| -> bool {
        let (tx, ty) = (x[0].as_f64(), y[0].as_f64());
        let (vx, vy) = (x[1].as_str().unwrap_or(""), y[1].as_str().unwrap_or(""));
        if tx != ty {
            return false;
        }
        if vx == vy {
            return true;
        }
        match (vx.parse::<f64>(), vy.parse::<f64>()) {
            (Ok(p), Ok(q)) => (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1e-300),
            _ => false,
        }
    };
    match da["resultType"].as_str() {
        Some("scalar") | Some("string") => {
            if value_eq(&da["result"], &db["result"]) {
                Ok(())
            } else {
                Err(format!("{} vs {}", da["result"], db["result"]))
            }
        }
        _ => {
            let index = |d: &Json| -> BTreeMap<String, Json> {
                d["result"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| (s["metric"].to_string(), s.clone()))
                    .collect()
            };
            let (ia, ib) = (index(da), index(db));
            if ia.keys().ne(ib.keys()) {
                return Err(format!(
                    "series {:?} vs {:?}",
                    ia.keys().collect::<Vec<_>>(),
                    ib.keys().collect::<Vec<_>>()
                ));
            }
            for (metric, sa) in &ia {
                let sb = &ib[metric];
                let points = |s: &Json| -> Vec<Json> {
                    match s.get("values") {
                        Some(v) => v.as_array().cloned().unwrap_or_default(),
                        None => vec![s["value"].clone()],
                    }
                };
                let (pa, pb) = (points(sa), points(sb));
                if pa.len() != pb.len() || pa.iter().zip(&pb).any(|(x, y)| !value_eq(x, y)) {
                    return Err(format!("{metric}: {pa:?} vs {pb:?}"));
                }
            }
            Ok(())
        }
    }
}

fn corpus() -> Vec<String> {
    include_str!("promql_corpus.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Every corpus query, as instant queries at four times and as two range
/// queries; returns (matching, total, differences).
fn compare(vigil: &str, prometheus: &str) -> (usize, usize, BTreeMap<String, String>) {
    let agent = http();
    let secs = |ms: i64| format!("{}", ms as f64 / 1e3);
    let mut differences = BTreeMap::new();
    let (mut matching, mut total) = (0, 0);
    let (mut answered, mut asked) = (0, 0);
    for query in corpus() {
        let mut cases: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
        for at in [
            T0 + 10 * MINUTE,
            T0 + 30 * MINUTE + 7_000,
            T0 + 47 * MINUTE,
            T0 + 63 * MINUTE,
        ] {
            cases.push(("query", vec![("query", query.clone()), ("time", secs(at))]));
        }
        for (start, end, step) in [
            (T0 + 5 * MINUTE, T0 + 62 * MINUTE, "60"),
            (T0, T0 + 30 * MINUTE, "37.5"),
        ] {
            cases.push((
                "query_range",
                vec![
                    ("query", query.clone()),
                    ("start", secs(start)),
                    ("end", secs(end)),
                    ("step", step.to_owned()),
                ],
            ));
        }
        let mut ok = true;
        for (endpoint, params) in &cases {
            let a = get(&agent, &format!("{vigil}/api/v1/{endpoint}"), params);
            let b = get(&agent, &format!("{prometheus}/api/v1/{endpoint}"), params);
            asked += 1;
            answered += usize::from(
                b["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty()),
            );
            if let Err(why) = same(&a, &b) {
                ok = false;
                differences.entry(query.clone()).or_insert_with(|| {
                    let at = params
                        .iter()
                        .skip(1)
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>();
                    format!(
                        "{endpoint} {}: {why}\n    vigil: {a}\n    prometheus: {b}",
                        at.join(" ")
                    )
                });
            }
        }
        total += 1;
        matching += usize::from(ok);
    }
    // The comparison means something only if Prometheus found data.
    assert!(
        answered * 10 > asked * 8,
        "Prometheus answered only {answered} of {asked} vector or matrix cases with data: did the import work?"
    );
    (matching, total, differences)
}

async fn serve(store: Arc<dyn TelemetryStore>) -> String {
    let keys = ApiKeys::new(&[ProjectConfig {
        name: PROJECT.into(),
        api_keys: vec![KEY.into()],
        api_keys_file: None,
    }])
    .expect("keys");
    let app = router(Arc::new(PromApi {
        store,
        keys,
        limits: Limits::default(),
        // The comparison sends ~2000 requests in a few seconds.
        rate: Arc::new(vigil_runtime::rate::ProjectRate::new(1_000_000, 1_000_000)),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn load(store: &dyn TelemetryStore, data: &[SeriesWrite]) {
    for (i, chunk) in data.chunks(8).enumerate() {
        store
            .write_metrics(MetricBatch {
                project: PROJECT.into(),
                batch_id: format!("compat-{i}"),
                series: chunk.to_vec(),
            })
            .await
            .expect("write");
    }
}

#[test]
fn promql_matches_prometheus() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = generate();
    let Some(prometheus) = start_prometheus(dir.path(), &data) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut backends: Vec<(&str, Arc<dyn TelemetryStore>)> = vec![(
        "redb",
        Arc::new(RedbStore::open(&dir.path().join("compat.redb")).expect("redb")),
    )];
    let clickhouse_url = std::env::var("CLICKHOUSE_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let database = format!("vigil_promql_{:08x}", std::process::id());
    if let Some(url) = &clickhouse_url {
        let config = ClickHouseConfig {
            url: url.clone(),
            database: database.clone(),
            ..ClickHouseConfig::default()
        };
        let retention = vigil_storage::config::RetentionConfig::default();
        let store = runtime
            .block_on(ClickHouseStore::connect(&config, &retention))
            .expect("clickhouse");
        backends.push(("clickhouse", Arc::new(store)));
    } else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs this on ClickHouse too: scripts/test.sh sets CLICKHOUSE_TEST_URL"
        );
        eprintln!("ClickHouse part skipped: CLICKHOUSE_TEST_URL is not set");
    }
    let known: BTreeMap<&str, &str> = KNOWN_DIFFERENCES.iter().copied().collect();
    let mut failures = Vec::new();
    for (name, store) in backends {
        runtime.block_on(load(&*store, &data));
        let url = runtime.block_on(serve(store));
        let (matching, total, differences) = compare(&url, &prometheus.url);
        println!(
            "{name}: {matching} of {total} queries match Prometheus 2.42 ({:.1} %)",
            100.0 * matching as f64 / total as f64
        );
        for (query, why) in &differences {
            let reason = known.get(query.as_str()).copied().unwrap_or("NOT KNOWN");
            println!("  differs [{reason}]: {query}\n    {why}");
            if !known.contains_key(query.as_str()) {
                failures.push(format!("{name}: {query}"));
            }
        }
        for query in known.keys() {
            if !differences.contains_key(*query) {
                failures.push(format!(
                    "{name}: {query} now matches; take it off KNOWN_DIFFERENCES"
                ));
            }
        }
    }
    if let Some(url) = clickhouse_url {
        let _ = http()
            .post(&format!(
                "{url}/?query=DROP%20DATABASE%20IF%20EXISTS%20{database}"
            ))
            .send_empty();
    }
    assert!(
        failures.is_empty(),
        "differences from Prometheus: {failures:#?}"
    );
}
