//! The query API: the only reader of stored telemetry. gRPC
//! `vigil.query.v1` serves PromQL, applications with RED, SLO and resource
//! figures, the service map, logs and their patterns, traces, profiles,
//! events, hosts and processes; the HTTP port serves Prometheus' query API
//! (`prom_api`). Every call is scoped to its API key's project.

mod apps;
mod config;
pub mod prom_api;
pub mod promql;
mod service;
mod signals;

use std::sync::Arc;

pub use config::{QueryConfig, SloConfig, SloObjectives, SloOverride};
use vigil_proto::query::v1::query_service_server::QueryServiceServer;
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, Shutdown, auth::ApiKeys, config::ConfigError,
    grpc::GrpcServer, http::HttpServer,
};
use vigil_storage::TelemetryStore;

pub use service::QueryApi;

/// Serves the query API until `shutdown`, then drains.
///
/// Every call names its project with one of the project's API keys
/// (`authorization: Bearer <key>` or `x-api-key`), on gRPC and HTTP alike.
pub async fn run(
    config: QueryConfig,
    store: Arc<dyn TelemetryStore>,
    keys: ApiKeys,
    shutdown: Shutdown,
) -> Result<(), RuntimeError> {
    if keys.is_empty() {
        return Err(ConfigError::invalid(
            "projects",
            "no project has an API key, so the query API would refuse every call; add [[projects]] with api_keys",
        )
        .into());
    }
    let metrics = Metrics::new("query");
    let readiness = Readiness::default();
    let mut grpc = GrpcServer::bind("query", &config.grpc).await?;
    let http = HttpServer::bind("query-http", &config.http).await?;
    let rate = Arc::new(vigil_runtime::rate::ProjectRate::new(
        config.rate_per_project,
        config.burst_per_project,
    ));
    let api = QueryApi::new(store.clone(), &config, rate.clone());
    let intercept = {
        let keys = keys.clone();
        move |request| keys.intercept(request)
    };
    grpc.add_service(tonic::service::interceptor::InterceptedService::new(
        QueryServiceServer::new(api).max_decoding_message_size(config.grpc.max_message_bytes),
        intercept,
    ))
    .add_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET);
    let prometheus = prom_api::router(Arc::new(prom_api::PromApi {
        store,
        keys,
        limits: config.limits(),
        rate,
    }));
    readiness.set_ready(true);
    tokio::try_join!(
        grpc.serve(&metrics, &shutdown),
        http.serve(prometheus, &metrics, &readiness, &shutdown),
    )?;
    Ok(())
}
