//! Ingest down for 30 s while the agent runs: it keeps collecting into its
//! disk spool, backs off, and drains the spool when ingest comes up. Every
//! batch collected during the outage reaches the store, and the samples
//! cover the outage without a gap.
//!
//! Ground truth: the agent's own count of batches it spooled (its
//! /metrics), and the timestamps of the one `host_cpu_cores` sample each
//! batch carries.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::{net::SocketAddr, time::Duration};

use vigil_agent::AgentConfig;
use vigil_runtime::{Shutdown, config::HttpServerConfig, time::now_ms};
use vigil_storage::SeriesSelector;

const OUTAGE: Duration = Duration::from_secs(30);
const INTERVAL: Duration = Duration::from_secs(1);

/// One counter from the agent's /metrics.
async fn agent_metric(http: SocketAddr, name: &str) -> f64 {
    let url = format!("http://{http}/metrics");
    let text = tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    })
    .await
    .unwrap();
    let prefix = format!("vigil_agent_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} not in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn spool_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "batch"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_without_ingest_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let ingest_grpc = common::free_addr();
    let agent_http = common::free_addr();
    let config = AgentConfig {
        interval: INTERVAL,
        push_timeout: Duration::from_secs(2),
        node: "spool-outage-node".into(),
        http: HttpServerConfig::on(agent_http),
        ..common::agent_config(dir.path(), ingest_grpc)
    };
    let agent_stop = Shutdown::new();
    let started_ms = now_ms();
    let agent = tokio::spawn(vigil_agent::run(config, agent_stop.clone()));

    tokio::time::sleep(OUTAGE).await;
    // The outage: batches pile up on disk, none acknowledged.
    let before_ms = now_ms();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spooled = agent_metric(agent_http, "batches_spooled_total").await;
    let after_ms = now_ms();
    assert_eq!(
        agent_metric(agent_http, "batches_acknowledged_total").await,
        0.0
    );
    assert!(
        agent_metric(agent_http, "batch_push_failures_total").await >= 1.0,
        "the agent tried to reach ingest"
    );
    let on_disk = spool_files(&spool_dir);
    assert!(
        spooled >= 25.0 && (on_disk as f64 - spooled).abs() <= 1.0,
        "{spooled} batches collected in {OUTAGE:?}, {on_disk} spool files"
    );

    // Ingest comes up on the address the agent has been trying.
    let ingest = common::Ingest::start(Some(ingest_grpc));

    // The backoff is at most 10 s (+20 %); then the spool drains.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while spool_files(&spool_dir) > 0 || agent_metric(agent_http, "spool_batches").await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "spool not drained: {} files left",
            spool_files(&spool_dir)
        );
        assert!(!ingest.server.is_finished(), "ingest stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(agent_metric(agent_http, "batches_dropped_total").await, 0.0);
    agent_stop.trigger();
    agent.await.unwrap().unwrap();

    let stored = ingest
        .store
        .select("p1", &SeriesSelector::metric("host_cpu_cores"), 0, i64::MAX)
        .await
        .unwrap();
    let node: Vec<_> = stored
        .iter()
        .filter(|s| s.labels.iter().any(|(_, v)| v == "spool-outage-node"))
        .collect();
    assert_eq!(node.len(), 1, "one host_cpu_cores series for the node");
    let times: Vec<i64> = node[0].samples.iter().map(|s| s.timestamp_ms).collect();
    let collected_before = times.iter().filter(|t| **t < before_ms).count() as f64;
    let collected_by = times.iter().filter(|t| **t < after_ms).count() as f64;
    eprintln!(
        "outage {OUTAGE:?}: {spooled} batches spooled, {} samples stored in all, {collected_before} from before the outage ended",
        times.len()
    );
    assert!(
        collected_before <= spooled && spooled <= collected_by,
        "every batch spooled during the outage is stored: {collected_before} ≤ {spooled} ≤ {collected_by}"
    );
    // No gaps: a sample about every interval from the agent's start on.
    assert!(
        times[0] - started_ms < 3_000,
        "first sample {} ms after start",
        times[0] - started_ms
    );
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] < 2 * INTERVAL.as_millis() as i64,
            "gap of {} ms in the stored samples",
            pair[1] - pair[0]
        );
    }
    ingest.stop().await;
}
