//! The heartbeat monitor's figures, on the release binary:
//!
//! 1. durable pings per second with the monitor pinned to one core
//!    (`taskset -c 0`), 64 keep-alive clients pinging over HTTP; each
//!    answer means the ping is fsynced;
//! 2. the delay between a check's grace running out and its down
//!    notification reaching a webhook;
//! 3. the monitor's resident memory with 10,000 checks, each pinged.
//!
//! Run: `cargo bench -p vigil-heartbeat --bench heartbeat`.

#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_vigil-heartbeat");
const KEY: &str = "bench-key-0123456789abcdef";
const PING_KEY: &str = "bench-ping-key-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

struct Monitor {
    child: Child,
    http: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Monitor {
    /// The monitor with `checks` (TOML) on one core.
    async fn start(checks: &str, hook: Option<u16>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (http, grpc) = (free_port(), free_port());
        let hook = hook
            .map(|p| {
                format!(
                    "[[heartbeat.integrations]]\nname = \"hook\"\nwebhook = {{ url = \"http://127.0.0.1:{p}/hook\" }}\n"
                )
            })
            .unwrap_or_default();
        let config = dir.path().join("hb.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[heartbeat]\napi_key = \"{KEY}\"\nping_key = \"{PING_KEY}\"\n[heartbeat.http]\nlisten = \"127.0.0.1:{http}\"\nconcurrency_limit = 1024\n[heartbeat.grpc]\nlisten = \"127.0.0.1:{grpc}\"\n{hook}{checks}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("taskset")
            .args(["-c", "0", BIN, "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let monitor = Self {
            child,
            http,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = client.get(monitor.url("/readyz")).send().await
                && r.status().is_success()
            {
                return monitor;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the monitor did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// CPU seconds the monitor has used (user + system).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of stat (11 and 12 after the name).
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

fn uuid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn checks(n: usize, period: &str, grace: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[heartbeat.checks]]\nname = \"job {i}\"\nuuid = \"{}\"\nperiod = \"{period}\"\ngrace = \"{grace}\"\n",
                uuid(i)
            )
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The store alone, in this process: what a durable ping costs without HTTP.
async fn store_pings_per_second() {
    use vigil_heartbeat::{
        CheckConfig,
        checks::PingKind,
        store::{CheckStore, Origin, PingIn, StoreOptions, Target},
    };
    let dir = tempfile::tempdir().unwrap();
    let declared = (0..100)
        .map(|i| {
            (
                CheckConfig::every(
                    &format!("job {i}"),
                    &uuid(i),
                    Duration::from_secs(3600),
                    Duration::ZERO,
                ),
                Origin::Config,
            )
        })
        .collect();
    let store = CheckStore::open(
        &dir.path().join("hb.redb"),
        declared,
        StoreOptions::default(),
    )
    .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                while started.elapsed() < Duration::from_secs(5) {
                    let ping = PingIn {
                        kind: PingKind::Success,
                        exit_status: None,
                        rid: None,
                        scheme: "http".into(),
                        method: "GET".into(),
                        remote_addr: "127.0.0.1".into(),
                        user_agent: "bench".into(),
                        body: Vec::new(),
                        truncated: false,
                    };
                    store
                        .ping(Target::Uuid(uuid(t % 100)), ping, now_ms())
                        .await
                        .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "durable pings/s, the store alone (in process, no HTTP): {:.0}",
        n as f64 / started.elapsed().as_secs_f64()
    );
}

async fn pings_per_second() {
    let m = Monitor::start(&checks(100, "1h", "1h"), None).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let seconds = 10;
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (client, done, failed, stop) =
                (client.clone(), done.clone(), failed.clone(), stop.clone());
            let url = m.url(&format!("/ping/{}", uuid(t % 100)));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = (
        done.load(Ordering::Relaxed),
        Instant::now(),
        m.cpu_seconds(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let count = done.load(Ordering::Relaxed) - start.0;
    let elapsed = start.1.elapsed().as_secs_f64();
    let busy = (m.cpu_seconds() - start.2) / elapsed;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "durable pings/s, monitor on one core, 64 HTTP clients: {:.0} ({count} in {elapsed:.1} s, {} refused)",
        count as f64 / elapsed,
        failed.load(Ordering::Relaxed)
    );
    println!(
        "  the monitor's core was {:.0} % busy; {:.1} µs of CPU a ping; RSS after the load: {} KiB",
        busy * 100.0,
        busy * 1e6 * elapsed / count as f64,
        m.rss_kib()
    );
}

/// Notifications received, with their arrival time (ms).
type Seen = Arc<Mutex<Vec<(i64, serde_json::Value)>>>;

/// A webhook that records when each notification arrives.
async fn webhook() -> (u16, Seen) {
    use axum::{Json, Router, extract::State, routing::post};
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(seen): State<Seen>, Json(body): Json<serde_json::Value>| async move {
                    seen.lock().unwrap().push((now_ms(), body));
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

async fn alert_delay() {
    let (hook, seen) = webhook().await;
    let n = 20;
    let m = Monitor::start(&checks(n, "2s", "1s"), Some(hook)).await;
    let client = reqwest::Client::new();
    let mut pinged = Vec::new();
    for i in 0..n {
        // Spread the deadlines over 4 s.
        let r = client
            .get(m.url(&format!("/ping/{}", uuid(i))))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        pinged.push(now_ms());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let seen = seen.lock().unwrap().clone();
    let mut delays: Vec<f64> = (0..n)
        .filter_map(|i| {
            let title = format!("job {i} is DOWN");
            let (at, _) = seen.iter().find(|(_, b)| b["title"] == title.as_str())?;
            // Down once 2 s period + 1 s grace have passed since the ping.
            Some((at - (pinged[i] + 3_000)) as f64)
        })
        .collect();
    assert_eq!(delays.len(), n, "every check went down once: {seen:?}");
    delays.sort_by(f64::total_cmp);
    println!(
        "alert delay after grace expiry to the webhook, {n} checks: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        delays[n - 1]
    );
}

async fn memory_with_10k_checks() {
    let n = 10_000;
    let m = Monitor::start(&checks(n, "1d", "1h"), None).await;
    let idle = m.rss_kib();
    let client = reqwest::Client::new();
    let started = Instant::now();
    ping_all(&m, &client, n, |i| format!("/ping/{}", uuid(i))).await;
    let took = started.elapsed();
    // Let a few evaluation rounds run over all checks.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pinged = m.rss_kib();
    let listing = Instant::now();
    let r = client
        .get(m.url("/api/v3/checks/"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    let body = r.bytes().await.unwrap();
    let list_ms = listing.elapsed().as_millis();
    println!(
        "RSS with {n} checks declared in the config: {idle} KiB at start, {pinged} KiB after pinging each (64 at a time, {:.1} s), {} KiB after an API v3 listing of all ({list_ms} ms, {} KiB of JSON)",
        took.as_secs_f64(),
        m.rss_kib(),
        body.len() / 1024
    );
    drop(m);

    // The same number made through the API (slug pings with ?create=1).
    let m = Monitor::start("", None).await;
    let idle = m.rss_kib();
    ping_all(&m, &client, n, |i| {
        format!("/ping/{PING_KEY}/job-{i}?create=1")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "RSS with {n} checks made by slug pings (?create=1): {idle} KiB at start, {} KiB after",
        m.rss_kib()
    );
}

/// GETs `path(i)` for i in 0..n, 64 at a time.
async fn ping_all(m: &Monitor, client: &reqwest::Client, n: usize, path: impl Fn(usize) -> String) {
    let mut batch = Vec::new();
    for i in 0..n {
        let url = m.url(&path(i));
        let client = client.clone();
        batch.push(tokio::spawn(async move {
            client.get(url).send().await.map(|r| r.status())
        }));
        if batch.len() == 64 {
            for b in batch.drain(..) {
                assert!(b.await.unwrap().unwrap().is_success());
            }
        }
    }
    for b in batch {
        assert!(b.await.unwrap().unwrap().is_success());
    }
}

fn main() {
    if Command::new("taskset").arg("-V").output().is_err() {
        println!("SKIPPED: taskset (util-linux) is needed to pin the monitor to one core");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        store_pings_per_second().await;
        pings_per_second().await;
        alert_delay().await;
        memory_with_10k_checks().await;
    });
}
