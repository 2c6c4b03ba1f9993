//! The gateway's backends for its tests and benchmark: the real query
//! service (on the given store) and alerting worker, in this process, for
//! project `default` with a project key and a gateway key.

#![allow(dead_code, clippy::unwrap_used)]

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use vigil_runtime::{
    Shutdown,
    auth::{AccessConfig, ApiKeys, ProjectConfig, Secret},
    config::{GrpcServerConfig, HttpServerConfig},
};
use vigil_storage::TelemetryStore;

pub const PROJECT: &str = "default";
pub const PROJECT_KEY: &str = "test-project-key-0123456789";
pub const GATEWAY_KEY: &str = "test-gateway-key-0123456789";

/// A free loopback address.
pub fn free() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

/// Starts query and alerting until `shutdown`; their gRPC addresses, once
/// both accept connections. Rates are unlimited (benchmarks call back to
/// back); alerting inspects once an hour (the tests do not need rounds).
pub async fn backends(
    store: Arc<dyn TelemetryStore>,
    data_dir: &Path,
    shutdown: &Shutdown,
) -> (SocketAddr, SocketAddr) {
    let access = AccessConfig {
        gateway_keys: vec![GATEWAY_KEY.into()],
        gateway_keys_file: None,
    };
    let keys = ApiKeys::new(&[ProjectConfig {
        name: PROJECT.into(),
        api_keys: vec![PROJECT_KEY.into()],
        api_keys_file: None,
    }])
    .unwrap()
    .with_gateways(&access)
    .unwrap();
    let query_grpc = free();
    let query = vigil_query::QueryConfig {
        grpc: GrpcServerConfig::on(query_grpc),
        http: HttpServerConfig::on(free()),
        rate_per_project: 100_000,
        burst_per_project: 100_000,
        ..Default::default()
    };
    let s = shutdown.clone();
    tokio::spawn(async move { vigil_query::run(query, store, keys, s).await.unwrap() });
    let alerting_grpc = free();
    let alerting = vigil_alerting::AlertingConfig {
        grpc: GrpcServerConfig::on(alerting_grpc),
        http: HttpServerConfig::on(free()),
        query_endpoint: query_grpc.to_string(),
        api_key: Secret(PROJECT_KEY.into()),
        interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let (s, data) = (shutdown.clone(), data_dir.to_owned());
    tokio::spawn(async move {
        vigil_alerting::run(alerting, &access, &data, s)
            .await
            .unwrap()
    });
    for addr in [query_grpc, alerting_grpc] {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    (query_grpc, alerting_grpc)
}

/// A gateway on a free loopback port in front of `query` and `alerting`,
/// with the gateway key, a session secret and plain-HTTP cookies; tests set
/// the sign-in mode.
pub fn gateway_config(query: &str, alerting: &str) -> vigil_ui_gateway::UiGatewayConfig {
    let mut c = vigil_ui_gateway::UiGatewayConfig {
        http: HttpServerConfig::on(free()),
        gateway_key: Secret(GATEWAY_KEY.into()),
        query_endpoint: query.into(),
        alerting_endpoint: alerting.into(),
        ..Default::default()
    };
    c.auth.session_secret = Secret("s".repeat(40));
    c.auth.secure_cookies = false;
    c
}

/// Checks `config`, runs the gateway until `shutdown`, and returns its base
/// URL once it answers.
pub async fn start_gateway(
    config: vigil_ui_gateway::UiGatewayConfig,
    shutdown: &Shutdown,
) -> String {
    vigil_runtime::config::Validate::validate(&config, "ui_gateway").unwrap();
    let base = format!("http://{}", config.http.listen);
    let s = shutdown.clone();
    tokio::spawn(async move { vigil_ui_gateway::run(config, s).await.unwrap() });
    let probe = vigil_runtime::http_client::build("probe").unwrap();
    for _ in 0..200 {
        if probe.get(format!("{base}/readyz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    base
}
