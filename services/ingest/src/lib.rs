//! The ingest gateway: the only writer of telemetry. It authenticates each
//! request by its project's API key, validates and bounds it, writes it to
//! the store and acknowledges only after the write is durable.
//!
//! Protocols: Vigil's agent protocol (`vigil.telemetry.v1`, batches with
//! ids: a retried batch is stored once) and OTLP traces, metrics and logs
//! on the gRPC server (4317); OTLP/HTTP (protobuf or JSON) and Prometheus
//! remote_write 1.0 on the HTTP server (4318). OTLP and remote_write
//! requests get a batch id from their bytes, so a resent request is stored
//! once too. Limits, rates and backpressure live in [`gate`].

mod config;
pub mod containers;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
mod http;
mod otlp;
mod push;
pub mod remote_write;

use std::sync::Arc;

pub use config::{IngestConfig, LimitsConfig};
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
    let gate = Arc::new(gate::Gate::new(config.limits.clone(), &metrics));
    let max_message = config.grpc.max_message_bytes;
    let intercept = {
        let keys = keys.clone();
        move |request| keys.intercept(request)
    };
    let push = push::PushService::new(store.clone(), gate.clone());
    let otlp_ingest = Arc::new(otlp::OtlpIngest::new(store.clone(), gate.clone()));
    let otlp_grpc = otlp::grpc::OtlpGrpc::new(otlp_ingest.clone());
    use tonic::service::interceptor::InterceptedService;
    grpc.add_service(InterceptedService::new(
        TelemetryServiceServer::new(push)
            .max_decoding_message_size(max_message)
            .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
        intercept.clone(),
    ))
    .add_service(InterceptedService::new(
        otlp_grpc.traces(max_message),
        intercept.clone(),
    ))
    .add_service(InterceptedService::new(
        otlp_grpc.metrics(max_message),
        intercept.clone(),
    ))
    .add_service(InterceptedService::new(
        otlp_grpc.logs(max_message),
        intercept,
    ))
    .add_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET);
    let app = http::router(Arc::new(http::HttpIngest {
        keys,
        otlp: otlp_ingest,
        gate,
        store,
    }));
    readiness.set_ready(true);
    tokio::try_join!(
        grpc.serve(&metrics, &shutdown),
        http.serve(app, &metrics, &readiness, &shutdown),
    )?;
    Ok(())
}
