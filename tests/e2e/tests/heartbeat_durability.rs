//! The heartbeat monitor killed with SIGKILL (as a crash or the OOM killer
//! would) and started again on the same files: no acknowledged ping is
//! lost, no flip is announced twice or missed, and a monitor that was down
//! while checks went silent announces one flip per check, not a storm.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use vigil_e2e::{
    Running, curl_with, eventually, free_port, http_get, json, pause, start, wait_healthy,
    webhook_receiver,
};

const KEY: &str = "durability-key-0123456789";
const UUIDS: [&str; 3] = [
    "a1b2c3d4-0001-4e5f-8a9b-0c1d2e3f4a5b",
    "a1b2c3d4-0002-4e5f-8a9b-0c1d2e3f4a5b",
    "a1b2c3d4-0003-4e5f-8a9b-0c1d2e3f4a5b",
];

struct Setup {
    dir: tempfile::TempDir,
    config: String,
    http: u16,
}

impl Setup {
    /// Three checks due every `period`, no grace; a webhook at `hook`.
    fn new(period: &str, hook: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (http, grpc) = (free_port(), free_port());
        let mut text = format!(
            r#"
data_dir = "{data}"
[heartbeat]
api_key = "{KEY}"
[heartbeat.http]
listen = "127.0.0.1:{http}"
[heartbeat.grpc]
listen = "127.0.0.1:{grpc}"
[[heartbeat.integrations]]
name = "hook"
webhook = {{ url = "http://127.0.0.1:{hook}/hook" }}
"#,
            data = dir.path().join("data").display()
        );
        for (i, uuid) in UUIDS.iter().enumerate() {
            text.push_str(&format!(
                "[[heartbeat.checks]]\nname = \"job {i}\"\nuuid = \"{uuid}\"\nperiod = \"{period}\"\n"
            ));
        }
        let config = dir.path().join("heartbeat.toml");
        std::fs::write(&config, text).unwrap();
        Self {
            config: config.display().to_string(),
            dir,
            http,
        }
    }

    fn start(&self) -> Running {
        let mut running = start(
            self.dir.path(),
            "vigil-heartbeat",
            &["--config", &self.config],
            &[],
        );
        wait_healthy(
            &mut running,
            &format!("http://127.0.0.1:{}/readyz", self.http),
            Duration::from_secs(30),
        );
        running
    }

    fn check(&self, uuid: &str) -> Value {
        let (code, body) = curl_with(
            &["-H", &format!("X-Api-Key: {KEY}")],
            &format!("http://127.0.0.1:{}/api/v3/checks/{uuid}", self.http),
        );
        assert_eq!(code, 200, "{body}");
        json(&body)
    }

    fn ping(&self, uuid: &str) {
        let (code, body) = curl_with(&[], &format!("http://127.0.0.1:{}/ping/{uuid}", self.http));
        assert_eq!((code, body.as_str()), (200, "OK"));
    }
}

fn titles(notified: &Mutex<Vec<Value>>) -> Vec<String> {
    let mut t: Vec<String> = notified
        .lock()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap_or("").to_owned())
        .collect();
    t.sort();
    t
}

#[test]
fn acknowledged_pings_survive_kill_9() {
    let (hook, _) = webhook_receiver();
    let setup = Setup::new("1h", hook);
    let mut monitor = setup.start();
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let senders = 8;
    let threads: Vec<_> = (0..senders)
        .map(|_| {
            let (acked, stop) = (acked.clone(), stop.clone());
            let url = format!("http://127.0.0.1:{}/ping/{}/log", setup.http, UUIDS[0]);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http_get(&url) {
                        Some((200, body)) if body == "OK" => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    pause(Duration::from_millis(1500));
    monitor.kill_hard();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.load(Ordering::Relaxed);
    assert!(acked > 100, "the load ran: {acked} pings acknowledged");

    let _monitor = setup.start();
    let stored = setup.check(UUIDS[0])["n_pings"].as_u64().unwrap();
    eprintln!("{acked} pings acknowledged before kill -9, {stored} stored after restart");
    assert!(
        stored >= acked,
        "lost acknowledged pings: {acked} acknowledged, {stored} stored"
    );
    assert!(
        stored <= acked + senders,
        "at most the pings in flight may be stored unacknowledged: {acked} + {senders} < {stored}"
    );
}

#[test]
fn flips_are_announced_exactly_once_across_kill_9() {
    let (hook, notified) = webhook_receiver();
    let setup = Setup::new("2s", hook);
    // Kill at different moments around the flip: before it is evaluated,
    // while it is being recorded or delivered, after.
    let mut last: Option<Running> = None;
    for (round, kill_after_ms) in [1500u64, 2000, 2100, 2300, 3000].into_iter().enumerate() {
        // The previous round's monitor goes first (it holds the file).
        if let Some(mut previous) = last.take() {
            previous.kill_hard();
        }
        let mut monitor = setup.start();
        setup.ping(UUIDS[0]);
        pause(Duration::from_millis(kill_after_ms));
        monitor.kill_hard();
        last = Some(setup.start());
        let want = round + 1;
        eventually(Duration::from_secs(15), "the down notification", || {
            (notified
                .lock()
                .unwrap()
                .iter()
                .filter(|n| n["title"] == "job 0 is DOWN")
                .count()
                >= want)
                .then_some(())
        });
        // A moment more: no flip is announced twice. Delivery itself is at
        // least once: a kill between the webhook's answer and the outbox
        // noting it resends the same notification (same key and start
        // time, for receivers to drop), which is counted apart.
        pause(Duration::from_millis(1500));
        let downs: Vec<(String, String)> = notified
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n["title"] == "job 0 is DOWN")
            .map(|n| (n["key"].to_string(), n["started_at"].to_string()))
            .collect();
        let distinct: std::collections::BTreeSet<_> = downs.iter().cloned().collect();
        if downs.len() != distinct.len() {
            eprintln!("killed {kill_after_ms} ms after the ping: a delivery was repeated");
        }
        assert_eq!(
            distinct.len(),
            want,
            "killed {kill_after_ms} ms after the ping"
        );
        // Resolve before the next round, then clear.
        setup.ping(UUIDS[0]);
        eventually(Duration::from_secs(15), "the resolve", || {
            titles(&notified)
                .iter()
                .any(|t| t == "job 0 is up again")
                .then_some(())
        });
        notified
            .lock()
            .unwrap()
            .retain(|n| n["title"] != "job 0 is up again");
    }
    assert_eq!(setup.check(UUIDS[0])["status"], "up");
    drop(last);
}

#[test]
fn a_monitor_back_from_an_outage_announces_one_flip_per_check() {
    let (hook, notified) = webhook_receiver();
    let setup = Setup::new("1s", hook);
    let mut monitor = setup.start();
    for uuid in UUIDS {
        setup.ping(uuid);
    }
    monitor.kill_hard();
    // Down for eight periods.
    pause(Duration::from_secs(8));
    let _monitor = setup.start();
    eventually(Duration::from_secs(15), "three down notifications", || {
        (notified.lock().unwrap().len() >= 3).then_some(())
    });
    pause(Duration::from_secs(3));
    assert_eq!(
        titles(&notified),
        ["job 0 is DOWN", "job 1 is DOWN", "job 2 is DOWN"],
        "one per check, no storm"
    );
    let late = &notified.lock().unwrap()[0];
    assert!(
        late["text"].as_str().unwrap().contains("was due at"),
        "names how late: {late}"
    );
}
