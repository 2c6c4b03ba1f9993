//! kill -9 the ingest process (the `vigil` binary, embedded redb) while a
//! sender streams numbered requests and retries each until it is
//! acknowledged, like Prometheus and OTLP exporters do. After the last
//! acknowledgement every request is in the store exactly once: nothing
//! acknowledged was lost to the crashes, nothing retried was stored twice.

use std::{path::Path, time::Duration};

use prost::Message;
use vigil_e2e::{Running, free_port, pause, start, wait_healthy};
use vigil_ingest::remote_write::{Label, PromSample, TimeSeries, WriteRequest};
use vigil_storage::{
    LogQuery, Matcher, MatcherOp, SeriesSelector, TelemetryStore, redb::RedbStore,
};

const API_KEY: &str = "crash-key-0123456789abcdef";
const REQUESTS: usize = 300;

fn start_ingest(dir: &Path, config: &str, http: u16) -> Running {
    let mut ingest = start(
        dir,
        "vigil",
        &["up", "--config", config, "--only", "ingest"],
        &[],
    );
    wait_healthy(
        &mut ingest,
        &format!("http://127.0.0.1:{http}/readyz"),
        Duration::from_secs(30),
    );
    ingest
}

/// Request `i`: even ones are remote_write (series `crash_seq{seq="i"}`
/// with value i), odd ones OTLP/HTTP JSON logs (one line with token `seqtoki`).
fn request(i: usize, now_ms: i64) -> (String, Vec<(&'static str, String)>, Vec<u8>) {
    if i.is_multiple_of(2) {
        let raw = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "crash_seq".into(),
                    },
                    Label {
                        name: "seq".into(),
                        value: i.to_string(),
                    },
                ],
                samples: vec![PromSample {
                    value: i as f64,
                    timestamp: now_ms,
                }],
            }],
        }
        .encode_to_vec();
        (
            "/api/v1/write".into(),
            vec![
                ("content-type", "application/x-protobuf".into()),
                ("content-encoding", "snappy".into()),
                ("authorization", format!("Bearer {API_KEY}")),
            ],
            snap::raw::Encoder::new()
                .compress_vec(&raw)
                .expect("snappy"),
        )
    } else {
        let body = serde_json::json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
            "timeUnixNano": (now_ms * 1_000_000).to_string(),
            "severityNumber": 9,
            "body": {"stringValue": format!("request seqtok{i} done")}
        }]}]}]});
        (
            "/v1/logs".into(),
            vec![
                ("content-type", "application/json".into()),
                ("x-api-key", API_KEY.into()),
            ],
            body.to_string().into_bytes(),
        )
    }
}

fn send(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> Option<u16> {
    let mut request = agent.post(url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send(body).ok().map(|r| r.status().as_u16())
}

#[test]
fn kill_9_loses_no_acknowledged_request_and_stores_none_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (grpc, http) = (free_port(), free_port());
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[[projects]]\nname = \"default\"\napi_keys = [\"{API_KEY}\"]\n\
             [ingest.grpc]\nlisten = \"127.0.0.1:{grpc}\"\n[ingest.http]\nlisten = \"127.0.0.1:{http}\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let mut ingest = start_ingest(dir.path(), &config, http);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let base = format!("http://127.0.0.1:{http}");
    let now_ms = vigil_runtime_now();
    let (mut attempts, mut kills) = (0, 0);
    for i in 0..REQUESTS {
        let (path, headers, body) = request(i, now_ms - (REQUESTS - i) as i64);
        loop {
            attempts += 1;
            match send(&agent, &format!("{base}{path}"), &headers, &body) {
                Some(200 | 204) => break,
                Some(status) => panic!("request {i} refused with {status}"),
                None => pause(Duration::from_millis(20)), // down: retry the same request
            }
            assert!(attempts < 50 * REQUESTS, "ingest never came back");
        }
        // Crash after acknowledgements, and once more while a request is in
        // flight from another thread.
        if i == REQUESTS / 3 {
            ingest.kill_hard();
            kills += 1;
            ingest = start_ingest(dir.path(), &config, http);
        }
        if i == 2 * REQUESTS / 3 {
            let (path, headers, body) = request(i + 1, now_ms - (REQUESTS - i - 1) as i64);
            let url = format!("{base}{path}");
            let in_flight = std::thread::spawn({
                let agent = agent.clone();
                move || send(&agent, &url, &headers, &body)
            });
            ingest.kill_hard();
            kills += 1;
            let _ = in_flight.join();
            ingest = start_ingest(dir.path(), &config, http);
        }
    }
    let status = ingest
        .terminate(Duration::from_secs(20))
        .expect("ingest stops");
    assert!(status.success(), "{}", ingest.stderr_text());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = RedbStore::open(&dir.path().join("data").join("telemetry.redb"))
        .expect("store opens after crashes");
    runtime.block_on(async {
        let series = store
            .select("default", &SeriesSelector::metric("crash_seq"), 0, i64::MAX)
            .await
            .expect("select");
        assert_eq!(
            series.len(),
            REQUESTS / 2,
            "every remote_write request stored"
        );
        for s in &series {
            assert_eq!(s.samples.len(), 1, "{s:?}");
            let seq: f64 = s.labels["seq"].parse().expect("seq");
            assert_eq!(s.samples[0].value, seq);
        }
        for i in (1..REQUESTS).step_by(2) {
            let page = store
                .search_logs(
                    "default",
                    &LogQuery {
                        start_ns: 0,
                        end_ns: i64::MAX,
                        text: Some(format!("seqtok{i}")),
                        ..LogQuery::default()
                    },
                )
                .await
                .expect("search");
            assert_eq!(page.entries.len(), 1, "log request {i} stored exactly once");
        }
        let one = SeriesSelector::metric("crash_seq")
            .with(Matcher::new("seq", MatcherOp::Equal, "0").expect("matcher"));
        assert_eq!(
            store
                .select("default", &one, 0, i64::MAX)
                .await
                .expect("select")
                .len(),
            1
        );
    });
    eprintln!(
        "{REQUESTS} requests, {attempts} attempts, {kills} kill -9s: all stored exactly once"
    );
}

fn vigil_runtime_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
