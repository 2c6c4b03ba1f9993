//! Real senders into a real ingest server: the OpenTelemetry Python SDK with
//! its OTLP gRPC and HTTP exporters, and Prometheus remote-writing what it
//! scrapes from node-exporter. Everything is read back through the store.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Ingest, KEY, PROJECT, free_addr, have, now_ms, python_has};
use vigil_storage::{
    LogQuery, Matcher, MatcherOp, SeriesSelector, TelemetryStore, trace::StatusCode,
};

fn select(name: &str, labels: &[(&str, &str)]) -> SeriesSelector {
    let mut selector = SeriesSelector::metric(name);
    for (k, v) in labels {
        selector = selector.with(Matcher::new(k, MatcherOp::Equal, v).unwrap());
    }
    selector
}

async fn value(store: &dyn TelemetryStore, name: &str, labels: &[(&str, &str)]) -> f64 {
    let series = store
        .select(PROJECT, &select(name, labels), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(series.len(), 1, "{name} {labels:?}: {series:?}");
    series[0].samples.last().unwrap().value
}

#[tokio::test]
async fn opentelemetry_python_sdk_over_grpc_and_http() {
    if !have(
        "the OpenTelemetry Python SDK",
        python_has("opentelemetry.exporter.otlp.proto.grpc")
            && python_has("opentelemetry.exporter.otlp.proto.http"),
    ) {
        return;
    }
    let ingest = Ingest::start(|_| {}).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/senders/otel_sdk.py");
    for (transport, endpoint) in [("grpc", ingest.grpc_url()), ("http", ingest.http_url())] {
        let run = format!("run{transport}{}", now_ms());
        let output = tokio::process::Command::new("python3")
            .args([script, transport, &endpoint, KEY, &run])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{transport} sender failed: {stderr}"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let trace_hex = stdout.trim().lines().last().unwrap();
        let trace_id: [u8; 16] = (0..16)
            .map(|i| u8::from_str_radix(&trace_hex[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        let store = &*ingest.store;

        // the trace, both spans, as the SDK made them
        let spans = store.trace(PROJECT, trace_id).await.unwrap();
        assert_eq!(spans.len(), 2, "{transport}: {spans:?}");
        let parent = spans.iter().find(|s| s.name == "POST /checkout").unwrap();
        let child = spans.iter().find(|s| s.name == "SELECT orders").unwrap();
        assert_eq!(child.parent_span_id, parent.span_id);
        assert_eq!(parent.service, format!("checkout-{transport}"));
        assert_eq!(parent.attributes["http.route"], "/checkout");
        assert_eq!(parent.resource["namespace"], "shop");
        assert_eq!(parent.resource["node"], "node-a");
        assert_eq!(child.status, StatusCode::Error);
        assert_eq!(child.status_message, "deadlock");
        assert_eq!(child.events[0].name, "retry");
        assert_eq!(child.events[0].attributes["attempt"], "2");

        // the two log lines, with severity and the trace they belong to
        let page = store
            .search_logs(
                PROJECT,
                &LogQuery {
                    start_ns: 0,
                    end_ns: i64::MAX,
                    text: Some(run.clone()),
                    ..LogQuery::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 2, "{transport}: {page:?}");
        let error = page
            .entries
            .iter()
            .find(|e| e.record.body.starts_with("payment declined"))
            .unwrap();
        assert_eq!(error.record.severity, 17);
        assert_eq!(error.record.trace_id, trace_id);
        assert_eq!(error.record.service, format!("checkout-{transport}"));

        // counter, histogram and gauge in the Prometheus model
        let run_label = [("run", run.as_str())];
        assert_eq!(
            value(store, "http_server_requests_total", &run_label).await,
            3.0
        );
        let bucket = |le: &'static str| [("run", run.as_str()), ("le", le)];
        assert_eq!(
            value(store, "http_server_duration_bucket", &bucket("0.1")).await,
            1.0
        );
        assert_eq!(
            value(store, "http_server_duration_bucket", &bucket("0.5")).await,
            2.0
        );
        assert_eq!(
            value(store, "http_server_duration_bucket", &bucket("1")).await,
            3.0
        );
        assert_eq!(
            value(store, "http_server_duration_bucket", &bucket("+Inf")).await,
            4.0
        );
        assert_eq!(
            value(store, "http_server_duration_count", &run_label).await,
            4.0
        );
        let sum = value(store, "http_server_duration_sum", &run_label).await;
        assert!((sum - 3.05).abs() < 1e-9, "{sum}");
        let job = format!("checkout-{transport}");
        assert_eq!(
            value(
                store,
                "queue_depth",
                &[("run", run.as_str()), ("job", &job), ("instance", "pod-1")]
            )
            .await,
            17.0
        );
    }
    ingest.shutdown.trigger();
    ingest.server.await.unwrap().unwrap();
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[String]) -> Killed {
    Killed(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}")),
    )
}

/// Raw samples Prometheus holds for `metric` over the last 10 minutes, by
/// their labels (without `__name__`).
fn prometheus_samples(
    url: &str,
    metric: &str,
) -> BTreeMap<BTreeMap<String, String>, BTreeMap<i64, f64>> {
    let query = format!("{url}/api/v1/query?query={metric}%5B10m%5D");
    let text = ureq::get(&query)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeMap::new();
    for result in body["data"]["result"].as_array().unwrap() {
        let mut labels: BTreeMap<String, String> = result["metric"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        labels.remove("__name__");
        let samples = result["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                let ts = (pair[0].as_f64().unwrap() * 1000.0).round() as i64;
                (ts, pair[1].as_str().unwrap().parse::<f64>().unwrap())
            })
            .collect();
        out.insert(labels, samples);
    }
    out
}

#[tokio::test]
async fn prometheus_remote_write_matches_what_prometheus_stored() {
    let present = |p: &str| Command::new(p).arg("--version").output().is_ok();
    if !have(
        "Debian prometheus and prometheus-node-exporter",
        present("prometheus") && present("prometheus-node-exporter"),
    ) {
        return;
    }
    let ingest = Ingest::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter_addr = free_addr();
    let prometheus_addr = free_addr();
    let _exporter = spawn(
        "prometheus-node-exporter",
        &[
            format!("--web.listen-address={exporter_addr}"),
            "--collector.disable-defaults".into(),
            "--collector.cpu".into(),
            "--collector.loadavg".into(),
            "--collector.meminfo".into(),
        ],
    );
    let config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{exporter_addr}']\n\
         remote_write:\n  - url: {}/api/v1/write\n    authorization:\n      credentials: {KEY}\n    \
         queue_config:\n      batch_send_deadline: 1s\n",
        ingest.http_url()
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let _prometheus = spawn(
        "prometheus",
        &[
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={prometheus_addr}"),
        ],
    );
    let prometheus_url = format!("http://{prometheus_addr}");
    let store = ingest.store.clone();
    let cpu = SeriesSelector::metric("node_cpu_seconds_total");
    // Wait until a few scrapes of every CPU series have arrived.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ours = loop {
        let series = store.select(PROJECT, &cpu, 0, i64::MAX).await.unwrap();
        if !series.is_empty() && series.iter().all(|s| s.samples.len() >= 4) {
            break series;
        }
        assert!(
            Instant::now() < deadline,
            "no remote_write from Prometheus within 60 s: {series:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let theirs = {
        let url = prometheus_url.clone();
        tokio::task::spawn_blocking(move || prometheus_samples(&url, "node_cpu_seconds_total"))
            .await
            .unwrap()
    };
    let mut compared = 0;
    for series in &ours {
        let held = theirs
            .get(&series.labels)
            .unwrap_or_else(|| panic!("Prometheus has no series {:?}", series.labels));
        for sample in &series.samples {
            let value = held.get(&sample.timestamp_ms).unwrap_or_else(|| {
                panic!(
                    "Prometheus has no sample at {} for {:?}",
                    sample.timestamp_ms, series.labels
                )
            });
            assert_eq!(
                value.to_bits(),
                sample.value.to_bits(),
                "{:?} at {}",
                series.labels,
                sample.timestamp_ms
            );
            compared += 1;
        }
    }
    eprintln!(
        "compared {compared} samples of {} node_cpu_seconds_total series with Prometheus",
        ours.len()
    );
    assert!(compared >= 4 * ours.len());
    assert_eq!(ours[0].labels["job"], "node");
    // `up`, which Prometheus makes itself, arrives too
    let up = store
        .select(PROJECT, &select("up", &[("job", "node")]), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(up[0].samples.last().unwrap().value, 1.0);
    ingest.shutdown.trigger();
    ingest.server.await.unwrap().unwrap();
}
