//! One full inspection round for many applications on generated data: the
//! query service reads from redb (and ClickHouse with `CLICKHOUSE_TEST_URL`),
//! the worker asks it for every figure (four windows, hosts, disks,
//! Deployments), runs every inspection and records the round in its redb
//! file. Printed, never asserted.
//!
//! ```sh
//! cargo bench -p vigil-alerting --bench cycle
//! CLICKHOUSE_TEST_URL=http://127.0.0.1:8123 APPS=1000 cargo bench -p vigil-alerting --bench cycle
//! ```
//! Env: APPS (1000), ROUNDS (5), HOURS of data (1, one sample per 30 s).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use vigil_alerting::{
    AlertingConfig, Worker, evaluate,
    incidents::{IncidentStore, Transition},
};
use vigil_query::QueryConfig;
use vigil_runtime::{
    Shutdown,
    auth::{ApiKeys, ProjectConfig, Secret},
    config::{GrpcServerConfig, HttpServerConfig},
    time::now_ms,
};
use vigil_storage::{
    TelemetryStore,
    clickhouse::ClickHouseStore,
    config::{ClickHouseConfig, RetentionConfig},
    redb::RedbStore,
};
use vigil_testdata::{Span, generate, load};

const KEY: &str = "bench-alerting-key-0123456789";
const PROJECT: &str = "bench";
const STEP: i64 = 30_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn serve(store: Arc<dyn TelemetryStore>) -> (SocketAddr, Shutdown) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (grpc, http) = (free(), free());
    let config = QueryConfig {
        grpc: GrpcServerConfig::on(grpc),
        http: HttpServerConfig::on(http),
        // Rounds back to back, unlike the worker's 30 s.
        rate_per_project: 10_000,
        burst_per_project: 10_000,
        ..QueryConfig::default()
    };
    let keys = ApiKeys::new(&[ProjectConfig {
        name: PROJECT.into(),
        api_keys: vec![KEY.into()],
        api_keys_file: None,
    }])
    .unwrap();
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    tokio::spawn(async move { vigil_query::run(config, store, keys, s).await });
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(grpc).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (grpc, shutdown)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn measure(
    backend: &str,
    store: Arc<dyn TelemetryStore>,
    apps: usize,
    rounds: usize,
    end: i64,
) {
    println!("{backend}:");
    let (grpc, shutdown) = serve(store).await;
    let dir = tempfile::tempdir().unwrap();
    let mut grpc_config = GrpcServerConfig::on("127.0.0.1:0".parse().unwrap());
    grpc_config.request_timeout = Duration::from_secs(600);
    let config = AlertingConfig {
        query_endpoint: grpc.to_string(),
        project: PROJECT.into(),
        api_key: Secret(KEY.into()),
        grpc: grpc_config,
        ..AlertingConfig::default()
    };
    let store = IncidentStore::open(&dir.path().join("alerting.redb")).unwrap();
    let worker = Worker::standalone(&config, store).unwrap();
    let (mut fetch, mut eval, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    let mut opened = 0;
    for r in 0..rounds {
        let now = end + r as i64 * 1000;
        let t = Instant::now();
        let figures = worker.figures(now).await.unwrap();
        fetch.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let observations = evaluate::evaluate(worker.settings(), &figures);
        eval.push(t.elapsed().as_secs_f64() * 1e3);
        if r == 0 {
            let firing = observations.iter().filter(|o| o.firing.is_some()).count();
            println!(
                "  {} applications seen, {} observations, {firing} firing",
                figures.w5m.len(),
                observations.len()
            );
        }
        let t = Instant::now();
        let transitions = worker.round(now).await;
        whole.push(t.elapsed().as_secs_f64() * 1e3);
        opened += transitions
            .iter()
            .filter(|t| matches!(t, Transition::Opened(_)))
            .count();
    }
    println!(
        "  {apps} applications: full round p50 {:.0} ms (first {:.0} ms; {opened} incidents opened); reading the figures p50 {:.0} ms; evaluating p50 {:.1} ms",
        median(&whole),
        whole[0],
        median(&fetch),
        median(&eval),
    );
    shutdown.trigger();
}

#[tokio::main]
async fn main() {
    let apps = env("APPS", 1000).max(2);
    let rounds = env("ROUNDS", 5).max(1);
    let hours = env("HOURS", 1).max(1) as i64;
    let end = now_ms() / STEP * STEP;
    let span = Span {
        start: end - hours * 3_600_000,
        end,
        step: STEP,
    };
    println!(
        "inspection round: {apps} applications, {hours} h of data every 30 s, {rounds} rounds"
    );
    let all = generate(apps, &span);
    let dir = tempfile::tempdir().unwrap();
    let redb: Arc<dyn TelemetryStore> =
        Arc::new(RedbStore::open(&dir.path().join("bench.redb")).unwrap());
    load(&redb, PROJECT, all.clone()).await;
    measure("redb", redb, apps, rounds, end).await;
    if let Some(url) = std::env::var("CLICKHOUSE_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let database = format!("vigil_alerting_bench_{}", std::process::id());
        let config = ClickHouseConfig {
            url: url.clone(),
            database: database.clone(),
            ..ClickHouseConfig::default()
        };
        let ch: Arc<dyn TelemetryStore> = Arc::new(
            ClickHouseStore::connect(&config, &RetentionConfig::default())
                .await
                .unwrap(),
        );
        load(&ch, PROJECT, all).await;
        measure("clickhouse", ch, apps, rounds, end).await;
        let _ = ureq::post(&url).send(format!("DROP DATABASE IF EXISTS {database}").as_bytes());
    } else {
        println!("\n(ClickHouse skipped: set CLICKHOUSE_TEST_URL)");
    }
}
