//! The UI gateway's cost and the UI's speed on generated data (APPS
//! applications, default 200, one hour every 30 s, on redb):
//! - gateway overhead per API call: the same query method called directly
//!   over gRPC with the project key and through the gateway's JSON API with
//!   a session (p50/p99 of each, and of the difference);
//! - time to first render in Chromium of the overview and of the service
//!   map with every application drawn (tests/browser/render-bench.mjs),
//!   when Chromium and tests/browser/node_modules are there.
//!
//! Printed, never asserted.
//!
//! ```sh
//! cargo bench -p vigil-ui-gateway --bench gateway
//! ```
//! Env: APPS (200), CALLS (300 per method).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::expect_used)]

use std::{path::Path, sync::Arc, time::Instant};

use tonic::Request;
use vigil_proto::query::v1::{self as q, query_service_client::QueryServiceClient};
use vigil_runtime::{Shutdown, auth::Secret, time::now_ms};
use vigil_storage::{TelemetryStore, redb::RedbStore};
use vigil_testdata::{Span, generate, load};
use vigil_ui_gateway::AuthMode;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{PROJECT, PROJECT_KEY as KEY};

const TOKEN: &str = "bench-login-token-0123456789";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.5), percentile(&ms, 0.99))
}

#[tokio::main]
async fn main() {
    let apps = env("APPS", 200).max(2);
    let calls = env("CALLS", 300).max(10);
    let dir = tempfile::tempdir().unwrap();
    let end = now_ms() / 30_000 * 30_000;
    let span = Span {
        start: end - 3_600_000,
        end,
        step: 30_000,
    };
    let store: Arc<dyn TelemetryStore> =
        Arc::new(RedbStore::open(&dir.path().join("bench.redb")).unwrap());
    println!(
        "UI gateway bench: {apps} applications, 1 h of data every 30 s, {calls} calls per method"
    );
    load(&store, PROJECT, generate(apps, &span)).await;

    let shutdown = Shutdown::new();
    let (query_grpc, alerting_grpc) = common::backends(store, dir.path(), &shutdown).await;
    let mut ui = common::gateway_config(&query_grpc.to_string(), &alerting_grpc.to_string());
    ui.rate_per_user = 100_000;
    ui.burst_per_user = 100_000;
    ui.auth.mode = AuthMode::Token;
    ui.auth.login_token = Secret(TOKEN.into());
    let base = common::start_gateway(ui, &shutdown).await;
    let http = vigil_runtime::http_client::build("bench").unwrap();

    // A session, as a browser gets one.
    let signed_in = http
        .post(format!("{base}/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}&return_to=%2F"))
        .send()
        .await
        .unwrap();
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let me: serde_json::Value = http
        .get(format!("{base}/api/v1/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let csrf = me["csrf"].as_str().unwrap().to_owned();

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{query_grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut direct = QueryServiceClient::new(channel);
    let window = q::TimeWindow {
        start_ms: end - 3_600_000,
        end_ms: end,
    };
    println!(
        "\n  method             direct gRPC p50/p99      via gateway p50/p99      overhead p50/p99"
    );
    for method in ["ListHosts", "ListApplications", "ServiceMap"] {
        let body = match method {
            "ListHosts" => serde_json::json!({}),
            _ => serde_json::json!({ "window": { "start_ms": window.start_ms, "end_ms": window.end_ms } }),
        }
        .to_string();
        let (mut via_direct, mut via_gateway) = (Vec::new(), Vec::new());
        for i in 0..calls + 10 {
            let t = Instant::now();
            let mut r = Request::new(());
            r.metadata_mut()
                .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
            let (m, e, _) = r.into_parts();
            match method {
                "ListHosts" => {
                    direct
                        .list_hosts(Request::from_parts(m, e, q::ListHostsRequest::default()))
                        .await
                        .unwrap();
                }
                "ListApplications" => {
                    direct
                        .list_applications(Request::from_parts(
                            m,
                            e,
                            q::ListApplicationsRequest {
                                window: Some(window),
                                ..Default::default()
                            },
                        ))
                        .await
                        .unwrap();
                }
                _ => {
                    direct
                        .service_map(Request::from_parts(
                            m,
                            e,
                            q::ServiceMapRequest {
                                window: Some(window),
                                ..Default::default()
                            },
                        ))
                        .await
                        .unwrap();
                }
            }
            let d = t.elapsed().as_secs_f64() * 1000.0;
            let t = Instant::now();
            let r = http
                .post(format!("{base}/api/v1/rpc/query/{method}"))
                .header("cookie", &cookie)
                .header("x-csrf-token", &csrf)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{method}: {}", r.status());
            r.bytes().await.unwrap();
            let g = t.elapsed().as_secs_f64() * 1000.0;
            if i >= 10 {
                via_direct.push(d);
                via_gateway.push(g);
            }
        }
        let overhead: Vec<f64> = via_gateway
            .iter()
            .zip(&via_direct)
            .map(|(g, d)| g - d)
            .collect();
        let (d50, d99) = summary(via_direct);
        let (g50, g99) = summary(via_gateway);
        let (o50, o99) = summary(overhead);
        println!(
            "  {method:<18} {d50:>8.2} / {d99:>7.2} ms   {g50:>8.2} / {g99:>7.2} ms   {o50:>8.2} / {o99:>7.2} ms"
        );
    }

    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    if !Path::new("/usr/bin/chromium").exists() || !browser_dir.join("node_modules").exists() {
        println!(
            "\n(browser timing skipped: needs /usr/bin/chromium and tests/browser/node_modules; scripts/install-deps.sh installs both)"
        );
    } else {
        let out = tokio::process::Command::new("node")
            .current_dir(&browser_dir)
            .arg("render-bench.mjs")
            .env("BASE", &base)
            .env("TOKEN", TOKEN)
            .env("APPS", apps.to_string())
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<serde_json::Value>(text.trim()) {
            Ok(v) => {
                println!("\n  Chromium, navigation start → rendered with data (10 runs):");
                for page in ["overview", "map"] {
                    let ms: Vec<f64> = v[page]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(serde_json::Value::as_f64)
                        .collect();
                    let (p50, p99) = summary(ms);
                    println!("  {page:<9} p50 {p50:>6.0} ms  max {p99:>6.0} ms");
                }
            }
            Err(_) => println!(
                "\n  browser timing failed: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    shutdown.trigger();
}
