//! Logs from real writers through the agent, ingest and the store: Python's
//! logging module writes a file (with real tracebacks, and a rotation in
//! the middle), and a pod's log in Kubernetes' CRI framing (with a line
//! split in two). The agent runs in this process (eBPF off) against an
//! in-process ingest. Ground truth: what the writer wrote. Then the agent
//! is stopped, more lines are written, and a new agent picks up where the
//! first left off: every line stored once, none missing, and a new kind of
//! error shows up as a new pattern.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::{collections::HashSet, path::Path, process::Command, time::Duration};

use vigil_agent::{AgentConfig, logs::LogsConfig};
use vigil_runtime::Shutdown;
use vigil_storage::{LogEntry, LogQuery, SeriesSelector, TelemetryStore};

const WRITER: &str = r#"
import logging, os, sys, time
d, phase = sys.argv[1], sys.argv[2]
path = os.path.join(d, "app.log")
def handler():
    h = logging.FileHandler(path)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    return h
log = logging.getLogger("app")
log.setLevel(logging.INFO)
h = handler()
log.addHandler(h)
if phase == "1":
    for i in range(20):
        log.info("user %d logged in from 10.0.0.%d", i, i)
    for i in range(5):
        try:
            raise ValueError("card declined")
        except ValueError:
            log.exception("payment failed for order %d", 1000 + i)
    for i in range(3):
        log.warning("slow query took %d ms", 200 + i)
    pod = os.path.join(d, "pods", "shop_web-1_0f1e2d3c-aaaa", "web")
    os.makedirs(pod, exist_ok=True)
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000000Z"
    with open(os.path.join(pod, "0.log"), "a") as f:
        for i in range(3):
            f.write(f"{now} stdout F INFO served request {i}\n")
        f.write(f"{now} stderr P ERROR upstream timed out after \n")
        f.write(f"{now} stderr F 30s\n")
elif phase == "rotate":
    # Two more lines, then the rotation right away, as logrotate does it
    # (rename, then a new file): the two are read from the renamed file.
    for i in range(2):
        log.info("user %d logged in from 10.0.0.%d", 50 + i, i)
    log.removeHandler(h)
    h.close()
    os.rename(path, path + ".1")
    h = handler()
    log.addHandler(h)
    for i in range(4):
        log.info("cache warmed in %d ms", 10 + i)
else:
    for i in range(7):
        log.info("user %d logged in from 10.0.0.%d", 100 + i, i)
    log.error("disk /dev/sda1 is full")
"#;

fn write(dir: &Path, phase: &str) {
    let out = Command::new("python3")
        .args(["-c", WRITER, dir.to_str().unwrap(), phase])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn agent_config(dir: &Path, ingest: &common::Ingest) -> AgentConfig {
    let base = common::agent_config(dir, ingest.config.grpc.listen);
    AgentConfig {
        logs: LogsConfig {
            files: vec![dir.join("app.log")],
            pods_dir: dir.join("pods"),
            ..base.logs.clone()
        },
        ..base
    }
}

async fn records(store: &dyn TelemetryStore, service: &str) -> Vec<LogEntry> {
    let mut query = LogQuery {
        start_ns: 0,
        end_ns: i64::MAX,
        service: Some(service.into()),
        limit: 1000,
        ..LogQuery::default()
    };
    let mut out = Vec::new();
    loop {
        let page = store.search_logs("p1", &query).await.unwrap();
        out.extend(page.entries);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return out,
        }
    }
}

async fn wait_for(store: &dyn TelemetryStore, service: &str, n: usize) -> Vec<LogEntry> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = records(store, service).await;
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            // A little longer: more than expected must show too.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            return records(store, service).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_flow_with_patterns_rotation_and_restart() {
    if !common::installed("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ingest = common::Ingest::start(None);
    let store = ingest.store.clone();

    let stop = Shutdown::new();
    let agent = tokio::spawn(vigil_agent::run(
        agent_config(dir.path(), &ingest),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    write(dir.path(), "1");

    let app = wait_for(store.as_ref(), "app", 28).await;
    assert_eq!(app.len(), 28, "20 + 5 + 3");
    write(dir.path(), "rotate");
    let app = wait_for(store.as_ref(), "app", 34).await;
    let count = |entries: &[LogEntry], level: &str| {
        entries
            .iter()
            .filter(|e| e.record.severity_text == level)
            .count()
    };
    assert_eq!(app.len(), 34, "28, 2 before the rotation, 4 after");
    assert_eq!(count(&app, "info"), 26);
    assert_eq!(count(&app, "error"), 5);
    assert_eq!(count(&app, "warning"), 3);
    let errors: Vec<_> = app
        .iter()
        .filter(|e| e.record.severity_text == "error")
        .collect();
    for e in &errors {
        let body = &e.record.body;
        assert!(
            body.contains("Traceback (most recent call last):")
                && body.ends_with("ValueError: card declined"),
            "the traceback is part of its record: {body:?}"
        );
    }
    let patterns = |entries: &[LogEntry], text: &str| -> HashSet<u64> {
        entries
            .iter()
            .filter(|e| e.record.body.contains(text))
            .map(|e| e.record.pattern_id)
            .collect()
    };
    let login = patterns(&app, "logged in");
    assert_eq!(login.len(), 1, "20 logins, one pattern");
    let payment = patterns(&app, "payment failed");
    assert_eq!(payment.len(), 1);
    assert!(!payment.contains(&0) && login != payment);

    let web = wait_for(store.as_ref(), "web", 4).await;
    assert_eq!(web.len(), 4, "3 lines and one split in two");
    assert!(
        web.iter()
            .any(|e| e.record.body == "ERROR upstream timed out after 30s"
                && e.record.severity_text == "error")
    );
    assert!(
        web.iter().all(
            |e| e.record.resource.get("namespace").map(String::as_str) == Some("shop")
                && e.record.resource.get("pod").map(String::as_str) == Some("web-1")
        )
    );

    // Counts per pattern and level, as metrics.
    let payment_id = format!("{:016x}", payment.iter().next().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let counted = loop {
        let series = store
            .select(
                "p1",
                &SeriesSelector::metric("log_messages_total"),
                0,
                i64::MAX,
            )
            .await
            .unwrap();
        let value = series
            .iter()
            .find(|s| {
                s.labels.get("pattern_id") == Some(&payment_id)
                    && s.labels.get("level").map(String::as_str) == Some("error")
            })
            .and_then(|s| s.samples.last())
            .map(|s| s.value);
        if value == Some(5.0) || tokio::time::Instant::now() > deadline {
            break value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(counted, Some(5.0));

    // Stop; lines written meanwhile are read by the next agent, once.
    stop.trigger();
    agent.await.unwrap().unwrap();
    write(dir.path(), "2");
    let stop = Shutdown::new();
    let agent = tokio::spawn(vigil_agent::run(
        agent_config(dir.path(), &ingest),
        stop.clone(),
    ));
    let app = wait_for(store.as_ref(), "app", 42).await;
    stop.trigger();
    agent.await.unwrap().unwrap();
    assert_eq!(app.len(), 42, "34 + 8 written while the agent was down");
    let distinct: HashSet<_> = app
        .iter()
        // Every line written is different (its time, its numbers).
        .map(|e| e.record.body.clone())
        .collect();
    assert_eq!(distinct.len(), 42, "none stored twice");
    assert_eq!(
        patterns(&app, "logged in"),
        login,
        "the same pattern after a restart"
    );
    let disk = patterns(&app, "is full");
    assert_eq!(disk.len(), 1);
    assert!(
        disk.is_disjoint(&login) && disk.is_disjoint(&payment),
        "a new pattern"
    );
    ingest.stop().await;
}
