//! The UI gateway: serves the web UI and turns browser HTTP/JSON into gRPC
//! calls to the query API and the alerting worker. It holds no telemetry.
//!
//! Today: an overview page (hosts, their busiest processes, incidents) and
//! the same data as JSON. OpenID Connect SSO, sessions and roles come with
//! the UI issue; until then it listens on loopback only by default.

mod config;
mod render;

use vigil_runtime::time::now_ms;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
pub use config::UiGatewayConfig;
use serde::Serialize;
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use vigil_proto::{
    alerting::v1::{
        IncidentState, ListIncidentsRequest, Severity,
        alerting_service_client::AlertingServiceClient,
    },
    query::v1::{ListHostsRequest, ListProcessesRequest, query_service_client::QueryServiceClient},
};
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, Shutdown, auth::BearerAuth, http::HttpServer,
};

#[derive(Clone)]
struct Backends {
    query: QueryServiceClient<InterceptedService<Channel, BearerAuth>>,
    alerting: AlertingServiceClient<InterceptedService<Channel, BearerAuth>>,
    project: String,
    processes_per_host: u32,
    templates: render::Templates,
}

/// Runs the UI gateway until `shutdown`.
pub async fn run(config: UiGatewayConfig, shutdown: Shutdown) -> Result<(), RuntimeError> {
    let metrics = Metrics::new("ui_gateway");
    let readiness = Readiness::default();
    let http = HttpServer::bind("ui-gateway", &config.http).await?;
    let auth = BearerAuth::new(&config.resolve_api_key()?)?;
    let backends = Backends {
        query: QueryServiceClient::with_interceptor(
            vigil_runtime::grpc::channel(&config.query_endpoint, config.backend_timeout)?,
            auth.clone(),
        ),
        alerting: AlertingServiceClient::with_interceptor(
            vigil_runtime::grpc::channel(&config.alerting_endpoint, config.backend_timeout)?,
            auth,
        ),
        project: config.project.clone(),
        processes_per_host: config.processes_per_host,
        templates: render::Templates::new(),
    };
    let app = Router::new()
        .route("/", get(overview_page))
        .route("/api/v1/hosts", get(hosts_json))
        .route("/api/v1/incidents", get(incidents_json))
        .with_state(backends);
    readiness.set_ready(true);
    http.serve(app, &metrics, &readiness, &shutdown).await
}

#[derive(Debug, Serialize)]
struct ProcessView {
    pid: u32,
    name: String,
    cpu_usage_cores: Option<f64>,
    memory_rss_bytes: Option<f64>,
}

#[derive(Debug, Serialize)]
struct HostView {
    cluster: String,
    node: String,
    last_seen_ms: i64,
    cpu_usage_ratio: Option<f64>,
    cpu_cores: Option<f64>,
    memory_total_bytes: Option<f64>,
    memory_available_bytes: Option<f64>,
    memory_usage_ratio: Option<f64>,
    load1: Option<f64>,
    processes: Vec<ProcessView>,
}

#[derive(Debug, Serialize)]
struct IncidentView {
    id: String,
    state: &'static str,
    severity: &'static str,
    inspection: String,
    subject: String,
    summary: String,
    opened_at_ms: i64,
    resolved_at_ms: Option<i64>,
    /// The likely cause, when the worker found one.
    root_cause: Option<String>,
}

/// A backend failure, said plainly: which backend, and what it answered.
#[derive(Debug, thiserror::Error)]
#[error("{backend} unavailable: {message}")]
struct BackendError {
    backend: &'static str,
    message: String,
}

impl BackendError {
    fn from_status(backend: &'static str, status: &tonic::Status) -> Self {
        Self {
            backend,
            message: format!("{:?}: {}", status.code(), status.message()),
        }
    }

    fn into_response(self) -> Response {
        (
            StatusCode::BAD_GATEWAY,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

impl Backends {
    async fn hosts(&self) -> Result<Vec<HostView>, BackendError> {
        let mut query = self.query.clone();
        let hosts = query
            .list_hosts(ListHostsRequest {
                project: self.project.clone(),
                lookback_ms: 0,
            })
            .await
            .map_err(|s| BackendError::from_status("query API", &s))?
            .into_inner()
            .hosts;
        let mut views = Vec::with_capacity(hosts.len());
        for host in hosts {
            let processes = query
                .list_processes(ListProcessesRequest {
                    project: self.project.clone(),
                    node: host.node.clone(),
                    lookback_ms: 0,
                    limit: self.processes_per_host,
                })
                .await
                .map_err(|s| BackendError::from_status("query API", &s))?
                .into_inner()
                .processes;
            views.push(HostView {
                cluster: host.cluster,
                node: host.node,
                last_seen_ms: host.last_seen_ms,
                cpu_usage_ratio: host.cpu_usage_ratio,
                cpu_cores: host.cpu_cores,
                memory_total_bytes: host.memory_total_bytes,
                memory_available_bytes: host.memory_available_bytes,
                memory_usage_ratio: host.memory_usage_ratio,
                load1: host.load1,
                processes: processes
                    .into_iter()
                    .map(|p| ProcessView {
                        pid: p.pid,
                        name: p.name,
                        cpu_usage_cores: p.cpu_usage_cores,
                        memory_rss_bytes: p.memory_rss_bytes,
                    })
                    .collect(),
            });
        }
        Ok(views)
    }

    async fn incidents(&self) -> Result<Vec<IncidentView>, BackendError> {
        let incidents = self
            .alerting
            .clone()
            .list_incidents(ListIncidentsRequest {
                project: self.project.clone(),
                state: IncidentState::Unspecified as i32,
                limit: 0,
            })
            .await
            .map_err(|s| BackendError::from_status("alerting API", &s))?
            .into_inner()
            .incidents;
        Ok(incidents
            .into_iter()
            .map(|i| IncidentView {
                state: if i.state == IncidentState::Resolved as i32 {
                    "resolved"
                } else {
                    "open"
                },
                severity: if i.severity == Severity::Critical as i32 {
                    "critical"
                } else {
                    "warning"
                },
                id: i.id,
                inspection: i.inspection,
                subject: i.subject,
                summary: i.summary,
                opened_at_ms: i.opened_at_ms,
                resolved_at_ms: (i.resolved_at_ms > 0).then_some(i.resolved_at_ms),
                root_cause: i.root_cause.map(|r| r.text),
            })
            .collect())
    }
}

async fn overview_page(State(backends): State<Backends>) -> Response {
    let (hosts, incidents) = tokio::join!(backends.hosts(), backends.incidents());
    let mut errors = Vec::new();
    let hosts = hosts.unwrap_or_else(|e| {
        errors.push(e.to_string());
        Vec::new()
    });
    let incidents = incidents.unwrap_or_else(|e| {
        errors.push(e.to_string());
        Vec::new()
    });
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    let context = minijinja::context! {
        project => backends.project,
        now_ms => now_ms(),
        hosts => minijinja::Value::from(minijinja::value::Serde(&hosts)),
        incidents => minijinja::Value::from(minijinja::value::Serde(&incidents)),
        errors => errors,
    };
    match backends.templates.render("overview.html", context) {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the overview");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the page").into_response()
        }
    }
}

async fn hosts_json(State(backends): State<Backends>) -> Response {
    match backends.hosts().await {
        Ok(hosts) => Json(serde_json::json!({ "hosts": hosts })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn incidents_json(State(backends): State<Backends>) -> Response {
    match backends.incidents().await {
        Ok(incidents) => Json(serde_json::json!({ "incidents": incidents })).into_response(),
        Err(e) => e.into_response(),
    }
}
