//! A ClickHouse outage under load: a real ClickHouse server (started by
//! scripts/clickhouse.sh) is stopped for 30 s (OUTAGE_SECS) while two
//! senders stream numbered remote_write requests and retry whatever is not
//! acknowledged. Ingest answers 503 with Retry-After while it is down; once
//! it is back every request is stored, each exactly once.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::disallowed_methods)] // sender threads sleep between retries

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{Ingest, KEY, PROJECT, have, now_ms};
use prost::Message;
use vigil_ingest::remote_write::{Label, PromSample, TimeSeries, WriteRequest};
use vigil_storage::{
    SeriesSelector, TelemetryStore,
    clickhouse::ClickHouseStore,
    config::{ClickHouseConfig, RetentionConfig},
};

const PER_SENDER: usize = 150;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/clickhouse.sh")
}

fn clickhouse(command: &str, dir: &Path) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args([command, &dir.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clickhouse.sh {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Server(PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.0.display().to_string()])
            .status();
    }
}

fn body(sender: usize, i: usize, ts: i64) -> Vec<u8> {
    let raw = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "outage_seq".into(),
                },
                Label {
                    name: "sender".into(),
                    value: sender.to_string(),
                },
                Label {
                    name: "seq".into(),
                    value: i.to_string(),
                },
            ],
            samples: vec![PromSample {
                value: i as f64,
                timestamp: ts,
            }],
        }],
    }
    .encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_loses_nothing_acknowledged() {
    let present = Command::new("clickhouse-server")
        .arg("--version")
        .output()
        .is_ok();
    if !have("clickhouse-server", present) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ch_dir = dir.path().join("clickhouse");
    let url = clickhouse("start", &ch_dir);
    let _server = Server(ch_dir.clone());
    let store = ClickHouseStore::connect(
        &ClickHouseConfig {
            url,
            database: "vigil_outage".into(),
            ..ClickHouseConfig::default()
        },
        &RetentionConfig::default(),
    )
    .await
    .unwrap();
    let store: Arc<dyn TelemetryStore> = Arc::new(store);
    let ingest = Ingest::start_on(store.clone(), tempfile::tempdir().unwrap(), |c| {
        c.limits.retry_after = Duration::from_secs(1);
    })
    .await;
    let write_url = format!("{}/api/v1/write", ingest.http_url());
    let acked = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let start_ms = now_ms() - 60_000;
    let senders: Vec<_> = (0..2)
        .map(|sender| {
            let (url, acked, unavailable) = (write_url.clone(), acked.clone(), unavailable.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                for i in 0..PER_SENDER {
                    let body = body(sender, i, start_ms + i as i64);
                    loop {
                        let answer = agent
                            .post(&url)
                            .header("content-encoding", "snappy")
                            .header("authorization", format!("Bearer {KEY}"))
                            .send(&body[..]);
                        match answer.as_ref().map(|r| r.status().as_u16()) {
                            Ok(204) => break,
                            Ok(503) => {
                                let retry = answer.unwrap().headers().get("retry-after").cloned();
                                assert!(retry.is_some(), "503 without Retry-After");
                                unavailable.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(200));
                            }
                            other => panic!("request {sender}/{i}: {other:?}"),
                        }
                    }
                    acked.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    while acked.load(Ordering::Relaxed) < 40 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clickhouse("stop", &ch_dir);
    let outage = std::env::var("OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let before = acked.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(outage)).await;
    let during = acked.load(Ordering::Relaxed) - before;
    clickhouse("resume", &ch_dir);
    for s in senders {
        s.join().unwrap();
    }
    let refused = unavailable.load(Ordering::Relaxed);
    eprintln!(
        "outage of {outage} s: {refused} answers 503, {during} acknowledged while down (in flight before the stop)"
    );
    assert!(refused > 0, "the outage was noticed");
    assert!(
        during <= 2,
        "nothing acknowledged while ClickHouse was down (at most the in-flight ones)"
    );
    let series = store
        .select(PROJECT, &SeriesSelector::metric("outage_seq"), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(series.len(), 2 * PER_SENDER, "every request stored");
    for s in &series {
        assert_eq!(s.samples.len(), 1, "{s:?}");
        assert_eq!(s.samples[0].value, s.labels["seq"].parse::<f64>().unwrap());
    }
    ingest.shutdown.trigger();
}
