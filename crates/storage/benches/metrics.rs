//! Metrics ingest and query figures for both backends, side by side with
//! VictoriaMetrics on the same generated data. Printed, never asserted.
//!
//! ```sh
//! cargo bench -p vigil-storage --bench metrics            # redb only
//! CLICKHOUSE_TEST_URL=http://127.0.0.1:8123 cargo bench -p vigil-storage --bench metrics
//! ```
//! VictoriaMetrics joins when `victoria-metrics` is on PATH (Debian package).
//! Env: SERIES (10000), SAMPLES per series (360, i.e. 1 h at 10 s), BATCH
//! (1000 series), WRITERS (10 concurrent writes, like 10 agents pushing).
//!
//! The data imitates scrapes: every 10 s each series gets one sample; half
//! the series are gauges moving in small steps (one decimal), half counters.
//! Each scrape is shipped as batches of BATCH series, one write each.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods,
    clippy::needless_range_loop
)]

mod common;

use common::{env, median};
use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use vigil_storage::{
    Matcher, MatcherOp, MetricBatch, Sample, SeriesSelector, SeriesWrite, TelemetryStore,
    clickhouse::ClickHouseStore,
    config::{ClickHouseConfig, RetentionConfig},
    redb::{RedbOptions, RedbStore},
};

struct Data {
    writers: usize,
    series: usize,
    samples: usize,
    batch: usize,
    base_ms: i64,
}

impl Data {
    fn labels(&self, i: usize) -> (String, [(String, String); 2]) {
        (
            format!("bench_metric_{}", i % 20),
            [
                ("instance".to_owned(), format!("i-{}", i / 20)),
                ("job".to_owned(), format!("job-{}", i % 10)),
            ],
        )
    }

    /// Every scrape's values, generated deterministically (xorshift).
    fn values(&self) -> Vec<Vec<f64>> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut current: Vec<f64> = (0..self.series).map(|i| (i % 100) as f64).collect();
        (0..self.samples)
            .map(|_| {
                for (i, v) in current.iter_mut().enumerate() {
                    if i % 2 == 0 {
                        // gauge: small steps, one decimal
                        let step = (next() % 21) as f64 / 10.0 - 1.0;
                        *v = ((*v + step) * 10.0).round() / 10.0;
                    } else {
                        // counter
                        *v += (next() % 100) as f64;
                    }
                }
                current.clone()
            })
            .collect()
    }

    fn ts(&self, t: usize) -> i64 {
        self.base_ms + 10_000 * t as i64
    }

    fn batches(&self, values: &[Vec<f64>]) -> Vec<MetricBatch> {
        let mut out = Vec::new();
        for (t, scrape) in values.iter().enumerate() {
            for start in (0..self.series).step_by(self.batch) {
                let series = (start..(start + self.batch).min(self.series))
                    .map(|i| {
                        let (metric, labels) = self.labels(i);
                        SeriesWrite {
                            metric,
                            labels: labels.into_iter().collect(),
                            samples: vec![Sample {
                                timestamp_ms: self.ts(t),
                                value: scrape[i],
                            }],
                        }
                    })
                    .collect();
                out.push(MetricBatch {
                    project: "bench".into(),
                    batch_id: format!("t{t}-s{start}"),
                    series,
                });
            }
        }
        out
    }
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let meta = entry.metadata().unwrap();
            total += if meta.is_dir() {
                dir_size(&entry.path())
            } else {
                meta.len()
            };
        }
    }
    total
}

/// Writes every batch, `writers` at a time (like that many agents pushing
/// at once); each write returns only once it is durable.
async fn write_all(
    store: &Arc<dyn TelemetryStore>,
    batches: Vec<MetricBatch>,
    writers: usize,
) -> Duration {
    let start = Instant::now();
    let mut batches = batches.into_iter().peekable();
    while batches.peek().is_some() {
        let mut set = tokio::task::JoinSet::new();
        for batch in batches.by_ref().take(writers) {
            let store = store.clone();
            set.spawn(async move { store.write_metrics(batch).await.unwrap() });
        }
        while let Some(done) = set.join_next().await {
            done.unwrap();
        }
    }
    start.elapsed()
}

/// Selection over all series: one metric (500 of the 10k series), and a
/// regex on top of it; the newest hour.
async fn selection(store: &dyn TelemetryStore, data: &Data) -> (Duration, Duration, usize) {
    let end = data.ts(data.samples);
    let start = end - 3_600_000;
    let by_metric = SeriesSelector::metric("bench_metric_7");
    let with_regex = SeriesSelector::metric("bench_metric_7")
        .with(Matcher::new("instance", MatcherOp::RegexMatch, "i-1.*").unwrap());
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut found = 0;
    for _ in 0..5 {
        let t = Instant::now();
        found = store
            .select("bench", &by_metric, start, end)
            .await
            .unwrap()
            .len();
        a.push(t.elapsed());
        let t = Instant::now();
        store
            .select("bench", &with_regex, start, end)
            .await
            .unwrap();
        b.push(t.elapsed());
    }
    (median(a), median(b), found)
}

fn report(name: &str, samples: usize, write: Duration, bytes: Option<u64>) {
    let rate = samples as f64 / write.as_secs_f64();
    let bytes = bytes.map_or_else(
        || "n/a".to_owned(),
        |b| {
            format!(
                "{:.2} bytes/sample ({:.1} MiB)",
                b as f64 / samples as f64,
                b as f64 / 1048576.0
            )
        },
    );
    println!("{name:>16}: {rate:>10.0} samples/s written, {bytes}");
}

async fn bench_redb(data: &Data, values: &[Vec<f64>]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.redb");
    let redb = RedbStore::open_with(&path, RedbOptions::default()).unwrap();
    let store: Arc<dyn TelemetryStore> = Arc::new(redb.clone());
    let samples = data.series * data.samples;
    let write = write_all(&store, data.batches(values), data.writers).await;
    let t = Instant::now();
    let report_m = store.maintain(vigil_runtime::time::now_ms()).await.unwrap();
    let compact = t.elapsed();
    let (by_metric, with_regex, found) = selection(&*store, data).await;
    drop(store);
    drop(redb);
    {
        let mut db = redb::Database::create(&path).unwrap();
        while db.compact().unwrap() {}
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    report("redb", samples, write, Some(bytes));
    {
        use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let mut parts = Vec::new();
        for handle in txn.list_tables().unwrap() {
            let name = handle.name().to_owned();
            let stats = txn.open_untyped_table(handle).unwrap().stats().unwrap();
            let total = stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes();
            if total > 0 {
                parts.push(format!(
                    "{name} {:.3} ({:.3} stored)",
                    total as f64 / samples as f64,
                    stats.stored_bytes() as f64 / samples as f64
                ));
            }
        }
        println!("{:>16}  bytes/sample by table: {}", "", parts.join(", "));
    }
    println!(
        "{:>16}  compaction of {} samples into {} blocks: {compact:?}; select {found} series x 1 h: {by_metric:?}, with =~: {with_regex:?}",
        "", report_m.samples_compacted, report_m.blocks_written
    );
}

async fn bench_clickhouse(url: &str, data: &Data, values: &[Vec<f64>]) {
    let database = format!("vigil_bench_{}", std::process::id());
    let config = ClickHouseConfig {
        url: url.to_owned(),
        database: database.clone(),
        ..ClickHouseConfig::default()
    };
    let store: Arc<dyn TelemetryStore> = Arc::new(
        ClickHouseStore::connect(&config, &RetentionConfig::default())
            .await
            .unwrap(),
    );
    let samples = data.series * data.samples;
    let write = write_all(&store, data.batches(values), data.writers).await;
    let (by_metric, with_regex, found) = selection(&*store, data).await;
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false);
    for table in ["metric_samples", "metric_series", "metric_batches"] {
        client
            .query(&format!("OPTIMIZE TABLE {database}.{table} FINAL"))
            .execute()
            .await
            .unwrap();
    }
    let bytes: u64 = client
        .query("SELECT sum(bytes_on_disk) FROM system.parts WHERE database = ? AND active")
        .bind(&database)
        .fetch_one()
        .await
        .unwrap();
    report("clickhouse 18.16", samples, write, Some(bytes));
    println!(
        "{:>16}  select {found} series x 1 h: {by_metric:?}, with =~: {with_regex:?}",
        ""
    );
    client
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .unwrap();
}

fn bench_victoria_metrics(data: &Data, values: &[Vec<f64>]) {
    if Command::new("victoria-metrics")
        .arg("-version")
        .output()
        .is_err()
    {
        println!(
            "{:>16}: not installed (apt-get install victoria-metrics)",
            "VictoriaMetrics"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("victoria-metrics")
        .args([
            &format!("-storageDataPath={}", dir.path().display()),
            &format!("-httpListenAddr=127.0.0.1:{port}"),
            "-retentionPeriod=100y",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.get(&format!("{base}/health")).call().is_err() {
        assert!(Instant::now() < deadline, "VictoriaMetrics did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The same batches, in Prometheus text format with timestamps.
    let mut bodies = Vec::new();
    for (t, scrape) in values.iter().enumerate() {
        for start in (0..data.series).step_by(data.batch) {
            let mut body = Vec::new();
            for i in start..(start + data.batch).min(data.series) {
                let (metric, labels) = data.labels(i);
                writeln!(
                    body,
                    "{metric}{{{}=\"{}\",{}=\"{}\"}} {} {}",
                    labels[0].0,
                    labels[0].1,
                    labels[1].0,
                    labels[1].1,
                    scrape[i],
                    data.ts(t)
                )
                .unwrap();
            }
            bodies.push(body);
        }
    }
    let url = format!("{base}/api/v1/import/prometheus");
    let start = Instant::now();
    for chunk in bodies.chunks(data.writers) {
        std::thread::scope(|scope| {
            for body in chunk {
                let (agent, url) = (&agent, &url);
                scope.spawn(move || agent.post(url).send(&body[..]).unwrap());
            }
        });
    }
    let write = start.elapsed();
    // Stop gracefully so that everything is flushed, then measure the data.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let bytes = dir_size(dir.path());
    report(
        "VictoriaMetrics",
        data.series * data.samples,
        write,
        Some(bytes),
    );
    println!(
        "{:>16}  (acknowledges before data is on disk; its size is measured after a clean stop)",
        ""
    );
}

#[tokio::main]
async fn main() {
    let samples = env("SAMPLES", 360);
    let data = Data {
        writers: env("WRITERS", 10),
        series: env("SERIES", 10_000),
        samples,
        batch: env("BATCH", 1000),
        // Old enough that every block window has closed, young enough to
        // keep, and aligned to the 2 h block windows so that figures do not
        // depend on the time of day.
        base_ms: {
            let start = vigil_runtime::time::now_ms() - 10_000 * samples as i64 - 4 * 3_600_000;
            start - start.rem_euclid(2 * 3_600_000)
        },
    };
    let values = data.values();
    println!(
        "metrics bench: {} series x {} samples (10 s apart) = {} samples, batches of {} series, {} concurrent writers",
        data.series,
        data.samples,
        data.series * data.samples,
        data.batch,
        data.writers
    );
    bench_redb(&data, &values).await;
    match std::env::var("CLICKHOUSE_TEST_URL") {
        Ok(url) if !url.is_empty() => bench_clickhouse(&url, &data, &values).await,
        _ => println!("{:>16}: skipped (set CLICKHOUSE_TEST_URL)", "clickhouse"),
    }
    bench_victoria_metrics(&data, &values);
}
