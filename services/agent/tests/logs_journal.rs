//! The systemd journal as a log source (root; CI runs as root): Debian's
//! systemd-journald (started by the test when none runs) receives messages
//! from the real `systemd-cat` at known priorities; the agent (in this
//! process, eBPF off) reads them with journalctl and ships them to an
//! in-process ingest. Ground truth: what was written, at which priority.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use vigil_agent::{AgentConfig, logs::LogsConfig};
use vigil_runtime::Shutdown;
use vigil_storage::LogQuery;

const SOCKET: &str = "/run/systemd/journal/socket";

/// Whether a journald listens (a socket file can outlive its server).
fn journald_listens() -> bool {
    std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.connect(SOCKET))
        .is_ok()
}

fn cat(identifier: &str, priority: &str, lines: &[String]) {
    let mut child = Command::new("systemd-cat")
        .args(["-t", identifier, "-p", priority])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_messages_arrive_with_their_priorities() {
    for program in ["journalctl", "systemd-cat"] {
        if !common::installed(program) {
            return;
        }
    }
    let journald = "/lib/systemd/systemd-journald";
    let _started = if journald_listens() {
        None
    } else {
        if !Path::new(journald).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must have systemd-journald"
            );
            eprintln!("SKIPPED: no journald running and none to start");
            return;
        }
        let child = common::Killed(
            Command::new(journald)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        for _ in 0..100 {
            if journald_listens() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !journald_listens() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "journald did not start (root needed)"
            );
            eprintln!("SKIPPED: journald did not start here (needs root)");
            return;
        }
        Some(child)
    };
    let dir = tempfile::tempdir().unwrap();
    let ingest = common::Ingest::start(None);
    let stop = Shutdown::new();
    let base = common::agent_config(dir.path(), ingest.config.grpc.listen);
    let config = AgentConfig {
        logs: LogsConfig {
            journal: true,
            ..base.logs.clone()
        },
        ..base
    };
    let agent = tokio::spawn(vigil_agent::run(config, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let identifier = format!("vigil-journal-{}", std::process::id());
    let errors: Vec<String> = (0..4)
        .map(|i| format!("disk {i} failed: I/O error"))
        .collect();
    let infos: Vec<String> = (0..6).map(|i| format!("job {i} done in {i}s")).collect();
    cat(&identifier, "err", &errors);
    cat(&identifier, "info", &infos);

    let query = LogQuery {
        start_ns: 0,
        end_ns: i64::MAX,
        service: Some(identifier.clone()),
        limit: 100,
        ..LogQuery::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let entries = loop {
        let page = ingest.store.search_logs("p1", &query).await.unwrap();
        if page.entries.len() >= 10 || tokio::time::Instant::now() > deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            break ingest
                .store
                .search_logs("p1", &query)
                .await
                .unwrap()
                .entries;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.trigger();
    agent.await.unwrap().unwrap();
    ingest.stop().await;
    assert_eq!(entries.len(), 10, "4 errors and 6 infos, once each");
    for (level, written) in [("error", &errors), ("info", &infos)] {
        let mut got: Vec<&str> = entries
            .iter()
            .filter(|e| e.record.severity_text == level)
            .map(|e| e.record.body.as_str())
            .collect();
        got.sort_unstable();
        let mut want: Vec<&str> = written.iter().map(String::as_str).collect();
        want.sort_unstable();
        assert_eq!(got, want, "{level}");
    }
    let patterns: std::collections::HashSet<u64> = entries
        .iter()
        .filter(|e| e.record.severity_text == "error")
        .map(|e| e.record.pattern_id)
        .collect();
    assert_eq!(patterns.len(), 1, "the 4 errors are one pattern");
}
