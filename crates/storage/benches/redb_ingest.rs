//! Write and read figures of the embedded redb backend, printed, not asserted.
//!
//! `cargo bench -p vigil-storage --bench redb_ingest` (env: BATCHES, SERIES).
//! Each batch is one agent-sized write: SERIES series of one sample each,
//! committed durably (fsync) before the next, as ingest does.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use vigil_storage::{
    Labels, MetricBatch, Sample, SeriesSelector, SeriesWrite, TelemetryStore, redb::RedbStore,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let batches = env("BATCHES", 200);
    let series = env("SERIES", 500);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.redb");
    let store = RedbStore::open(&path).unwrap();
    let labels: Vec<Labels> = (0..series)
        .map(|i| {
            [
                ("node".to_owned(), "bench-node".to_owned()),
                ("pid".to_owned(), i.to_string()),
                ("process".to_owned(), format!("proc-{}", i % 37)),
            ]
            .into()
        })
        .collect();

    // Old enough that every window has closed by now, young enough to be kept.
    let base_ms = vigil_runtime::time::now_ms() - 10_000 * batches as i64 - 3 * 3600 * 1000;
    let mut latencies = Vec::with_capacity(batches);
    let started = Instant::now();
    for b in 0..batches {
        let batch = MetricBatch {
            project: "bench".into(),
            batch_id: format!("batch-{b}"),
            series: labels
                .iter()
                .map(|l| SeriesWrite {
                    metric: "process_cpu_usage_cores".into(),
                    labels: l.clone(),
                    // A regular 10 s scrape; slowly changing gauge values.
                    samples: vec![Sample {
                        timestamp_ms: base_ms + 10_000 * b as i64,
                        value: ((b / 10) % 50) as f64,
                    }],
                })
                .collect(),
        };
        let t = Instant::now();
        store.write_metrics(batch).await.unwrap();
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let samples = batches * series;
    let head_size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    // Compact everything into blocks (as maintenance does once windows close).
    let t = Instant::now();
    let report = store.maintain(vigil_runtime::time::now_ms()).await.unwrap();
    let compact_time = t.elapsed();
    drop(store);
    // Reclaim the pages the head used, then measure what the data takes.
    {
        let mut db = redb::Database::create(&path).unwrap();
        while db.compact().unwrap() {}
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let store = RedbStore::open(&path).unwrap();

    let selector = SeriesSelector::metric("process_cpu_usage_cores");
    let mut reads = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let latest = store.latest("bench", &selector, 0).await.unwrap();
        reads.push(t.elapsed());
        assert_eq!(latest.len(), series);
    }
    reads.sort();
    let t = Instant::now();
    let range = store.select("bench", &selector, 0, i64::MAX).await.unwrap();
    let range_time = t.elapsed();
    let points: usize = range.iter().map(|s| s.samples.len()).sum();

    println!("redb ingest: {batches} durable batches x {series} series (1 sample each)");
    println!(
        "  write: {:.0} samples/s, {:.1} batches/s; batch latency p50 {:?} p99 {:?} max {:?}",
        samples as f64 / elapsed.as_secs_f64(),
        batches as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    println!(
        "  head (uncompressed) file: {:.1} MiB, {:.1} bytes/sample",
        head_size as f64 / (1 << 20) as f64,
        head_size as f64 / samples as f64
    );
    println!(
        "  compaction: {} samples into {} blocks in {compact_time:?}; file after compaction: {:.2} MiB, {:.2} bytes/sample",
        report.samples_compacted,
        report.blocks_written,
        size as f64 / (1 << 20) as f64,
        size as f64 / samples as f64
    );
    println!(
        "  latest() over {series} series: p50 {:?} p99 {:?}",
        percentile(&reads, 0.5),
        percentile(&reads, 0.99)
    );
    println!("  select() of all {points} points: {range_time:?}");
}
