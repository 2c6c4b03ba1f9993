//! kill -9 in the middle of writing (and compacting): every batch the store
//! acknowledged is there after reopening, and nothing is corrupt.
//!
//! The writer is this test binary re-executed as a child running the ignored
//! `crash_writer` helper, so the kill hits a real process mid-transaction.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a test: a panic is the failure report

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vigil_storage::{
    MetricBatch, Sample, SeriesSelector, SeriesWrite, TelemetryStore, WriteOutcome,
    redb::{RedbOptions, RedbStore},
};

const SERIES: usize = 100;
const STEP_MS: i64 = 1000;

fn options() -> RedbOptions {
    RedbOptions {
        block_window_ms: 10_000,
        head_grace_ms: 0,
        metrics_retention_ms: 365 * 24 * 3600 * 1000,
        traces_retention_ms: 365 * 24 * 3600 * 1000,
        logs_retention_ms: 365 * 24 * 3600 * 1000,
        profiles_retention_ms: 365 * 24 * 3600 * 1000,
    }
}

fn batch(i: i64, base: i64) -> MetricBatch {
    MetricBatch {
        project: "p".into(),
        batch_id: format!("b{i}"),
        series: (0..SERIES)
            .map(|s| SeriesWrite {
                metric: "crash_test".into(),
                labels: [("series".to_owned(), s.to_string())].into(),
                samples: vec![Sample {
                    timestamp_ms: base + i * STEP_MS,
                    value: (i * 1000 + s as i64) as f64,
                }],
            })
            .collect(),
    }
}

/// The child: writes batches from CRASH_START on, printing each acknowledged
/// id, and compacts every few batches, until it is killed.
#[tokio::test]
#[ignore = "helper process for kill_9_loses_no_acknowledged_batch"]
async fn crash_writer() {
    let path = std::env::var("CRASH_DB").expect("run by kill_9_loses_no_acknowledged_batch");
    let start: i64 = std::env::var("CRASH_START").unwrap().parse().unwrap();
    let base: i64 = std::env::var("CRASH_BASE").unwrap().parse().unwrap();
    let store = RedbStore::open_with(std::path::Path::new(&path), options()).unwrap();
    let mut out = std::io::stdout().lock();
    for i in start.. {
        store.write_metrics(batch(i, base)).await.unwrap();
        writeln!(out, "acked {i}").unwrap();
        out.flush().unwrap();
        if i % 7 == 0 {
            store.maintain(base + (i + 20) * STEP_MS).await.unwrap();
        }
    }
}

#[test]
fn kill_9_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let base = vigil_runtime::time::now_ms() - 24 * 3600 * 1000;
    let mut acked: Vec<i64> = Vec::new();
    for round in 0..4 {
        let start = acked.last().map_or(0, |last| last + 1);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CRASH_DB", &path)
            .env("CRASH_START", start.to_string())
            .env("CRASH_BASE", base.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("acked ").and_then(|n| n.parse::<i64>().ok()))
                .collect::<Vec<i64>>()
        });
        // Let it write for a random while, then kill -9 mid-flight.
        let wait = Duration::from_millis(rand::random_range(300..1200));
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            assert!(
                child.try_wait().unwrap().is_none(),
                "writer died on its own in round {round}"
            );
            #[allow(clippy::disallowed_methods)] // a plain test thread
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let got = reader.join().unwrap();
        assert!(
            !got.is_empty(),
            "round {round}: the writer acknowledged nothing"
        );
        acked.extend(got);
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = RedbStore::open_with(&path, options()).expect("reopens after kill -9");
        let all = store
            .select("p", &SeriesSelector::metric("crash_test"), 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(all.len(), SERIES);
        for series in &all {
            let s: i64 = series.labels["series"].parse().unwrap();
            let times: std::collections::HashSet<i64> =
                series.samples.iter().map(|x| x.timestamp_ms).collect();
            for i in &acked {
                assert!(
                    times.contains(&(base + i * STEP_MS)),
                    "acknowledged batch {i} lost for series {s}"
                );
            }
            for sample in &series.samples {
                let i = (sample.timestamp_ms - base) / STEP_MS;
                assert_eq!(sample.value, (i * 1000 + s) as f64, "value intact");
            }
        }
        // Acknowledged ids are remembered: a retry is a duplicate.
        let last = *acked.last().unwrap();
        assert_eq!(
            store.write_metrics(batch(last, base)).await.unwrap(),
            WriteOutcome::Duplicate
        );
        // And the store keeps working: compaction over whatever was left.
        store.maintain(base + (last + 100) * STEP_MS).await.unwrap();
        let again = store
            .select("p", &SeriesSelector::metric("crash_test"), 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(all, again, "compaction after recovery changes no answer");
        println!(
            "kill -9 rounds: 4, acknowledged batches checked: {}",
            acked.len()
        );
    });
}
