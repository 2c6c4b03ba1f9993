//! The ingest gateway: the only writer of telemetry. It authenticates each
//! request by its project's API key, validates and bounds it, writes it to
//! the store and acknowledges only after the write is durable. A retried
//! agent batch (same batch id) is stored once.
//!
//! Today it speaks Vigil's agent protocol (`vigil.telemetry.v1`); OTLP and
//! Prometheus remote_write join it on the same servers.

mod config;
mod push;

use std::sync::Arc;

pub use config::IngestConfig;
use vigil_proto::telemetry::v1::telemetry_service_server::TelemetryServiceServer;
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, Shutdown, auth::ApiKeys, config::ConfigError,
    grpc::GrpcServer, http::HttpServer,
};
use vigil_storage::TelemetryStore;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Serves ingest until `shutdown`, then drains in-flight writes.
pub async fn run(
    config: IngestConfig,
    store: Arc<dyn TelemetryStore>,
    keys: ApiKeys,
    shutdown: Shutdown,
) -> Result<(), IngestError> {
    if keys.is_empty() {
        return Err(ConfigError::invalid(
            "projects",
            "no project has an API key, so ingest would refuse every write; add [[projects]] with api_keys",
        )
        .into());
    }
    let metrics = Metrics::new("ingest");
    let readiness = Readiness::default();
    let mut grpc = GrpcServer::bind("ingest", &config.grpc).await?;
    let http = HttpServer::bind("ingest-http", &config.http).await?;
    let push = push::PushService::new(store, &config, &metrics);
    let server =
        TelemetryServiceServer::new(push).max_decoding_message_size(config.grpc.max_message_bytes);
    grpc.add_service(tonic::service::interceptor::InterceptedService::new(
        server,
        move |request| keys.intercept(request),
    ))
    .add_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET);
    readiness.set_ready(true);
    tokio::try_join!(
        grpc.serve(&metrics, &shutdown),
        http.serve(axum::Router::new(), &metrics, &readiness, &shutdown),
    )?;
    Ok(())
}
