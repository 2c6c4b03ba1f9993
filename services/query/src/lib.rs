//! The query API: the only reader of stored telemetry. Today it serves
//! hosts and processes with their latest figures, and raw series over a time
//! range (`vigil.query.v1`). Service map, RED/SLO figures, logs, traces,
//! profiles and a Prometheus-compatible HTTP API grow from here.

mod config;
mod service;

use std::sync::Arc;

pub use config::QueryConfig;
use vigil_proto::query::v1::query_service_server::QueryServiceServer;
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, Shutdown, grpc::GrpcServer, http::HttpServer,
};
use vigil_storage::TelemetryStore;

pub use service::QueryApi;

/// Serves the query API until `shutdown`, then drains.
pub async fn run(
    config: QueryConfig,
    store: Arc<dyn TelemetryStore>,
    shutdown: Shutdown,
) -> Result<(), RuntimeError> {
    let metrics = Metrics::new("query");
    let readiness = Readiness::default();
    let mut grpc = GrpcServer::bind("query", &config.grpc).await?;
    let http = HttpServer::bind("query-http", &config.http).await?;
    let api = QueryApi::new(store, &config);
    grpc.add_service(
        QueryServiceServer::new(api).max_decoding_message_size(config.grpc.max_message_bytes),
    )
    .add_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET);
    readiness.set_ready(true);
    tokio::try_join!(
        grpc.serve(&metrics, &shutdown),
        http.serve(axum::Router::new(), &metrics, &readiness, &shutdown),
    )?;
    Ok(())
}
