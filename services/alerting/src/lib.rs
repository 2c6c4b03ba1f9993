//! The inspection/alerting worker. On a schedule it runs inspections through
//! the query API (never the store directly), opens an incident when one
//! finds a problem, updates it while the problem lasts and resolves it when
//! the problem is gone. Incidents live in the worker's own redb file.
//!
//! Inspections today: host CPU and host memory above a threshold. SLO burn,
//! OOM kills, restarts, disks, connections, logs and notifications grow here.

mod config;
pub mod incidents;
pub mod inspections;

use std::path::Path;
use vigil_runtime::time::now_ms;

pub use config::{AlertingConfig, InspectionsConfig, ThresholdConfig};
use incidents::{Incident, IncidentStore, Severity, Transition};
use prometheus_client::metrics::{counter::Counter, family::Family};
use tonic::{Request, Response, Status};
use vigil_proto::{
    alerting::v1::{
        self as pb, IncidentState, ListIncidentsRequest, ListIncidentsResponse,
        alerting_service_server::{AlertingService, AlertingServiceServer},
    },
    query::v1::{ListHostsRequest, query_service_client::QueryServiceClient},
};
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, ServiceError, Shutdown,
    auth::{BearerAuth, is_valid_project_name},
    grpc::GrpcServer,
    http::HttpServer,
};

#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] vigil_storage::StorageError),
    #[error(transparent)]
    Config(#[from] vigil_runtime::config::ConfigError),
}

/// Runs the worker and its API until `shutdown`.
pub async fn run(
    config: AlertingConfig,
    data_dir: &Path,
    shutdown: Shutdown,
) -> Result<(), AlertingError> {
    let path = config
        .state_path
        .clone()
        .unwrap_or_else(|| data_dir.join("alerting.redb"));
    let store = IncidentStore::open(&path)?;
    tracing::info!(path = %path.display(), project = config.project, "incident store open");
    let metrics = Metrics::new("alerting");
    let readiness = Readiness::default();
    let mut grpc = GrpcServer::bind("alerting", &config.grpc).await?;
    let http = HttpServer::bind("alerting-http", &config.http).await?;
    grpc.add_service(
        AlertingServiceServer::new(IncidentsApi {
            store: store.clone(),
        })
        .max_decoding_message_size(config.grpc.max_message_bytes),
    )
    .add_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET);

    let channel =
        vigil_runtime::grpc::channel(&config.query_endpoint, config.grpc.request_timeout)?;
    let worker = Worker {
        query: QueryServiceClient::with_interceptor(
            channel,
            BearerAuth::new(&config.resolve_api_key()?)?,
        ),
        store,
        config: config.clone(),
        runs: Family::default(),
        transitions: Family::default(),
    };
    metrics.register(
        "inspection_runs",
        "Inspection rounds by outcome",
        worker.runs.clone(),
    );
    metrics.register(
        "incident_transitions",
        "Incidents opened and resolved",
        worker.transitions.clone(),
    );
    readiness.set_ready(true);
    let worker_loop = async {
        loop {
            worker.run_once().await;
            if !shutdown.sleep(config.interval).await {
                break;
            }
        }
        Ok::<(), RuntimeError>(())
    };
    tokio::try_join!(
        worker_loop,
        grpc.serve(&metrics, &shutdown),
        http.serve(axum::Router::new(), &metrics, &readiness, &shutdown),
    )?;
    Ok(())
}

struct Worker {
    query: QueryServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerAuth>,
    >,
    store: IncidentStore,
    config: AlertingConfig,
    runs: Family<[(&'static str, &'static str); 1], Counter>,
    transitions: Family<[(&'static str, &'static str); 1], Counter>,
}

impl Worker {
    async fn run_once(&self) {
        let project = self.config.project.clone();
        let hosts = match self
            .query
            .clone()
            .list_hosts(ListHostsRequest {
                project: project.clone(),
                lookback_ms: 0,
            })
            .await
        {
            Ok(response) => response.into_inner().hosts,
            Err(status) => {
                self.runs
                    .get_or_create(&[("outcome", "query_failed")])
                    .inc();
                tracing::warn!(code = ?status.code(), error = status.message(), "inspection skipped: query API failed");
                return;
            }
        };
        let evaluation = inspections::evaluate_hosts(&project, &self.config.inspections, &hosts);
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || evaluation.apply(&store, now_ms())).await;
        match result {
            Ok(Ok(transitions)) => {
                self.runs.get_or_create(&[("outcome", "ok")]).inc();
                for transition in transitions {
                    match transition {
                        Transition::Opened(i) => {
                            self.transitions
                                .get_or_create(&[("transition", "opened")])
                                .inc();
                            tracing::warn!(
                                incident = i.id,
                                inspection = i.inspection,
                                subject = i.subject,
                                summary = i.summary,
                                "incident opened"
                            );
                        }
                        Transition::Resolved(i) => {
                            self.transitions
                                .get_or_create(&[("transition", "resolved")])
                                .inc();
                            tracing::info!(
                                incident = i.id,
                                inspection = i.inspection,
                                subject = i.subject,
                                "incident resolved"
                            );
                        }
                        Transition::Updated(_) => {}
                    }
                }
            }
            Ok(Err(e)) => {
                self.runs
                    .get_or_create(&[("outcome", "store_failed")])
                    .inc();
                tracing::error!(error = %e, "cannot record inspection results");
            }
            Err(e) => {
                self.runs
                    .get_or_create(&[("outcome", "store_failed")])
                    .inc();
                tracing::error!(error = %e, "inspection task failed");
            }
        }
    }
}

struct IncidentsApi {
    store: IncidentStore,
}

fn to_proto(incident: Incident) -> pb::Incident {
    let state = if incident.resolved_at_ms.is_some() {
        IncidentState::Resolved
    } else {
        IncidentState::Open
    };
    pb::Incident {
        id: incident.id,
        project: incident.project,
        inspection: incident.inspection,
        subject: incident.subject,
        severity: match incident.severity {
            Severity::Warning => pb::Severity::Warning,
            Severity::Critical => pb::Severity::Critical,
        } as i32,
        state: state as i32,
        summary: incident.summary,
        opened_at_ms: incident.opened_at_ms,
        resolved_at_ms: incident.resolved_at_ms.unwrap_or(0),
        value: incident.value,
        threshold: incident.threshold,
    }
}

#[tonic::async_trait]
impl AlertingService for IncidentsApi {
    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        let request = request.into_inner();
        if !is_valid_project_name(&request.project) {
            return Err(Status::invalid_argument(format!(
                "project {:?} is not a valid project name",
                request.project
            )));
        }
        let wanted = IncidentState::try_from(request.state).map_err(|_| {
            Status::invalid_argument(format!("state {} is not an incident state", request.state))
        })?;
        let store = self.store.clone();
        let project = request.project.clone();
        let incidents = tokio::task::spawn_blocking(move || store.list(&project))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| e.to_status())?;
        let incidents = incidents
            .into_iter()
            .map(to_proto)
            .filter(|i| wanted == IncidentState::Unspecified || i.state == wanted as i32)
            .collect();
        Ok(Response::new(ListIncidentsResponse { incidents }))
    }
}
