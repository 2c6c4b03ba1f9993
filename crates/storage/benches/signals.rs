//! Spans and logs figures for both backends. Printed, never asserted.
//!
//! ```sh
//! scripts/bench.sh                      # starts ClickHouse, runs every storage bench
//! cargo bench -p vigil-storage --bench signals   # redb only
//! ```
//! Env: TRACES (20000, 10 spans each), LINES (1000000), BATCH (1000),
//! WRITERS (10 concurrent writes).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use common::{env, median};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use vigil_storage::{
    LogBatch, LogQuery, LogRecord, Span, SpanBatch, TelemetryStore,
    clickhouse::ClickHouseStore,
    config::{ClickHouseConfig, RetentionConfig},
    redb::RedbStore,
    trace::{SpanKind, StatusCode},
};

struct Setup {
    traces: usize,
    lines: usize,
    batch: usize,
    writers: usize,
    base_ns: i64,
}

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

fn trace_id(t: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(t as u64 + 1).to_be_bytes());
    id[8..].copy_from_slice(&(t as u64 * 2_654_435_761).to_be_bytes());
    id
}

fn spans(setup: &Setup) -> Vec<SpanBatch> {
    let services = ["web", "api", "db", "cache", "auth"];
    let mut all = Vec::with_capacity(setup.traces * 10);
    for t in 0..setup.traces {
        let start = setup.base_ns + t as i64 * 1_000_000;
        for s in 0..10u64 {
            all.push(Span {
                trace_id: trace_id(t),
                span_id: (s + 1).to_be_bytes(),
                parent_span_id: if s == 0 { [0; 8] } else { 1u64.to_be_bytes() },
                name: format!("{} /{}", WORDS[(t + s as usize) % 2], WORDS[2 + s as usize]),
                kind: if s == 0 {
                    SpanKind::Server
                } else {
                    SpanKind::Client
                },
                start_ns: start + s as i64 * 1000,
                end_ns: start + s as i64 * 1000 + ((t * 7919 + s as usize) % 50_000_000) as i64,
                status: if (t + s as usize).is_multiple_of(50) {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                },
                status_message: String::new(),
                service: services[s as usize % 5].into(),
                resource: [
                    (
                        "service.name".to_owned(),
                        services[s as usize % 5].to_owned(),
                    ),
                    ("node".to_owned(), format!("node-{}", t % 5)),
                ]
                .into(),
                attributes: [("http.status_code".to_owned(), "200".to_owned())].into(),
                events: vec![],
                links: vec![],
            });
        }
    }
    all.chunks(setup.batch)
        .enumerate()
        .map(|(i, chunk)| SpanBatch {
            project: "bench".into(),
            batch_id: format!("s{i}"),
            spans: chunk.to_vec(),
        })
        .collect()
}

fn logs(setup: &Setup) -> Vec<LogBatch> {
    let mut all = Vec::with_capacity(setup.lines);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..setup.lines {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut body = String::new();
        for w in 0..8 {
            body.push_str(WORDS[((state >> (w * 5)) % WORDS.len() as u64) as usize]);
            body.push(' ');
        }
        // One line in a thousand holds a rare token.
        if i.is_multiple_of(1000) {
            body.push_str("needle-7f3a ");
        }
        body.push_str(&format!("id={}", state % 100_000));
        all.push(LogRecord {
            time_ns: setup.base_ns + i as i64 * 100_000,
            severity: [9u8, 13, 17][i % 3],
            severity_text: String::new(),
            body,
            service: ["web", "api", "worker"][i % 3].into(),
            resource: [("node".to_owned(), format!("node-{}", i % 5))].into(),
            attributes: Default::default(),
            trace_id: [0; 16],
            span_id: [0; 8],
            pattern_id: (state % 50) + 1,
        });
    }
    all.chunks(setup.batch)
        .enumerate()
        .map(|(i, chunk)| LogBatch {
            project: "bench".into(),
            batch_id: format!("l{i}"),
            records: chunk.to_vec(),
        })
        .collect()
}

async fn concurrently<B: Send + 'static>(
    batches: Vec<B>,
    writers: usize,
    write: impl Fn(B) -> tokio::task::JoinHandle<()>,
) -> Duration {
    let start = Instant::now();
    let mut batches = batches.into_iter().peekable();
    while batches.peek().is_some() {
        let handles: Vec<_> = batches.by_ref().take(writers).map(&write).collect();
        for handle in handles {
            handle.await.unwrap();
        }
    }
    start.elapsed()
}

async fn write_spans(store: &Arc<dyn TelemetryStore>, setup: &Setup) -> Duration {
    let s = store.clone();
    concurrently(spans(setup), setup.writers, move |b| {
        let s = s.clone();
        tokio::spawn(async move {
            s.write_spans(b).await.unwrap();
        })
    })
    .await
}

async fn write_logs(store: &Arc<dyn TelemetryStore>, setup: &Setup) -> Duration {
    let s = store.clone();
    concurrently(logs(setup), setup.writers, move |b| {
        let s = s.clone();
        tokio::spawn(async move {
            s.write_logs(b).await.unwrap();
        })
    })
    .await
}

async fn report_spans(
    name: &str,
    store: &dyn TelemetryStore,
    setup: &Setup,
    took: Duration,
    bytes: u64,
) {
    let count = setup.traces * 10;
    let mut by_id = Vec::new();
    for t in (0..setup.traces).step_by((setup.traces / 100).max(1)) {
        let start = Instant::now();
        let trace = store.trace("bench", trace_id(t)).await.unwrap();
        by_id.push(start.elapsed());
        assert_eq!(trace.len(), 10);
    }
    println!(
        "{name:>10} spans: {:>9.0} spans/s, {:.1} bytes/span, trace by id {:?} (median of {})",
        count as f64 / took.as_secs_f64(),
        bytes as f64 / count as f64,
        median(by_id.clone()),
        by_id.len()
    );
}

async fn report_logs(
    name: &str,
    store: &dyn TelemetryStore,
    setup: &Setup,
    took: Duration,
    bytes: u64,
) {
    let all = LogQuery {
        start_ns: 0,
        end_ns: i64::MAX,
        limit: 100,
        ..LogQuery::default()
    };
    let mut rare = Vec::new();
    let mut common = Vec::new();
    let mut found = 0;
    for _ in 0..5 {
        let start = Instant::now();
        found = store
            .search_logs(
                "bench",
                &LogQuery {
                    text: Some("needle-7f3a".into()),
                    ..all.clone()
                },
            )
            .await
            .unwrap()
            .entries
            .len();
        rare.push(start.elapsed());
        let start = Instant::now();
        store
            .search_logs(
                "bench",
                &LogQuery {
                    text: Some("payment timeout".into()),
                    ..all.clone()
                },
            )
            .await
            .unwrap();
        common.push(start.elapsed());
    }
    println!(
        "{name:>10} logs:  {:>9.0} lines/s, {:.1} bytes/line; text search over {} lines: rare token {:?} ({found} hits on the first page of 100), two common tokens {:?}",
        setup.lines as f64 / took.as_secs_f64(),
        bytes as f64 / setup.lines as f64,
        setup.lines,
        median(rare),
        median(common),
    );
}

/// A redb file holding one signal, compacted so that its size is its data.
async fn redb_phase(
    dir: &std::path::Path,
    file: &str,
    setup: &Setup,
    write: impl AsyncFn(&Arc<dyn TelemetryStore>, &Setup) -> Duration,
) -> (Arc<dyn TelemetryStore>, Duration, u64) {
    let path = dir.join(file);
    let store: Arc<dyn TelemetryStore> = Arc::new(RedbStore::open(&path).unwrap());
    let took = write(&store, setup).await;
    drop(store);
    {
        let mut db = redb::Database::create(&path).unwrap();
        while db.compact().unwrap() {}
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    (Arc::new(RedbStore::open(&path).unwrap()), took, bytes)
}

#[tokio::main]
async fn main() {
    let setup = Setup {
        traces: env("TRACES", 20_000),
        lines: env("LINES", 1_000_000),
        batch: env("BATCH", 1000),
        writers: env("WRITERS", 10),
        base_ns: (vigil_runtime::time::now_ms() - 3_600_000) * 1_000_000,
    };
    println!(
        "signals bench: {} traces x 10 spans, {} log lines, batches of {}, {} concurrent writers",
        setup.traces, setup.lines, setup.batch, setup.writers
    );
    let dir = tempfile::tempdir().unwrap();
    let (store, took, bytes) = redb_phase(dir.path(), "spans.redb", &setup, write_spans).await;
    report_spans("redb", &*store, &setup, took, bytes).await;
    drop(store);
    let (store, took, bytes) = redb_phase(dir.path(), "logs.redb", &setup, write_logs).await;
    report_logs("redb", &*store, &setup, took, bytes).await;
    drop(store);

    match std::env::var("CLICKHOUSE_TEST_URL") {
        Ok(url) if !url.is_empty() => {
            let database = format!("vigil_signals_{}", std::process::id());
            let config = ClickHouseConfig {
                url: url.clone(),
                database: database.clone(),
                ..ClickHouseConfig::default()
            };
            let store: Arc<dyn TelemetryStore> = Arc::new(
                ClickHouseStore::connect(&config, &RetentionConfig::default())
                    .await
                    .unwrap(),
            );
            let client = clickhouse::Client::default()
                .with_url(&url)
                .with_validation(false);
            let size = async || -> u64 {
                for table in ["spans", "trace_lookup", "logs"] {
                    client
                        .query(&format!("OPTIMIZE TABLE {database}.{table} FINAL"))
                        .execute()
                        .await
                        .unwrap();
                }
                client
                    .query(
                        "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = ? AND active",
                    )
                    .bind(&database)
                    .fetch_one()
                    .await
                    .unwrap()
            };
            let took = write_spans(&store, &setup).await;
            let after_spans = size().await;
            report_spans("clickhouse", &*store, &setup, took, after_spans).await;
            let took = write_logs(&store, &setup).await;
            let after_logs = size().await;
            report_logs(
                "clickhouse",
                &*store,
                &setup,
                took,
                after_logs - after_spans,
            )
            .await;
            client
                .query(&format!("DROP DATABASE {database}"))
                .execute()
                .await
                .unwrap();
        }
        _ => println!("clickhouse: skipped (set CLICKHOUSE_TEST_URL)"),
    }
}
