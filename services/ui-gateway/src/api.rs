//! The browser's API: JSON over HTTP, turned into gRPC calls to query,
//! alerting and heartbeat in the user's name. `POST /api/v1/rpc/<service>/<Method>`
//! takes the request message as JSON (proto3 JSON mapping with the proto
//! field names) and answers the response message the same way. Every method
//! has a least role ([`ROUTES`]); the gateway checks it, and asserts the
//! user's project and role to the backend, which checks again.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use vigil_proto::{
    alerting::v1::{self as al, alerting_service_client::AlertingServiceClient},
    heartbeat::v1::{self as hb, heartbeat_service_client::HeartbeatServiceClient},
    query::v1::{self as q, query_service_client::QueryServiceClient},
};
use vigil_runtime::auth::{BearerAuth, Role, assert_caller};

type Authed = InterceptedService<Channel, BearerAuth>;

/// gRPC clients of the backends, authenticated with the gateway key.
#[derive(Clone)]
pub struct Backends {
    pub query: QueryServiceClient<Authed>,
    pub alerting: AlertingServiceClient<Authed>,
    pub heartbeat: Option<HeartbeatServiceClient<Authed>>,
}

/// Every method the browser may call, with the least role it needs.
pub const ROUTES: &[(&str, &str, Role)] = &[
    ("query", "ListHosts", Role::Viewer),
    ("query", "ListProcesses", Role::Viewer),
    ("query", "QueryRange", Role::Viewer),
    ("query", "Query", Role::Viewer),
    ("query", "ListApplications", Role::Viewer),
    ("query", "GetApplication", Role::Viewer),
    ("query", "ServiceMap", Role::Viewer),
    ("query", "SearchLogs", Role::Viewer),
    ("query", "LogPatterns", Role::Viewer),
    ("query", "GetTrace", Role::Viewer),
    ("query", "SearchTraces", Role::Viewer),
    ("query", "Flamegraph", Role::Viewer),
    ("query", "FlamegraphDiff", Role::Viewer),
    ("query", "ExportPprof", Role::Viewer),
    ("query", "ListEvents", Role::Viewer),
    ("alerting", "ListIncidents", Role::Viewer),
    ("alerting", "GetIncident", Role::Viewer),
    ("alerting", "InspectionStatus", Role::Viewer),
    ("alerting", "ListInspections", Role::Viewer),
    ("alerting", "ListIntegrations", Role::Viewer),
    ("alerting", "AcknowledgeIncident", Role::Editor),
    ("alerting", "TestIntegration", Role::Editor),
    ("heartbeat", "ListChecks", Role::Viewer),
];

/// The least role of a method, if the browser may call it.
pub fn route(service: &str, method: &str) -> Option<Role> {
    ROUTES
        .iter()
        .find(|(s, m, _)| *s == service && *m == method)
        .map(|(_, _, r)| *r)
}

/// An API failure: an HTTP status and a message naming the problem.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A backend's answer, as the HTTP status closest to its gRPC code.
    fn from_status(backend: &str, s: &tonic::Status) -> Self {
        use tonic::Code;
        let status = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::FailedPrecondition => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_GATEWAY,
        };
        Self::new(status, format!("{backend}: {}", s.message()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Who a call is made for: the signed-in user's project, role and name.
pub struct Acting {
    pub project: String,
    pub role: Role,
    pub user: String,
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not a valid message: {e}"),
        )
    })
}

/// Calls `method` of a client with a JSON body, in the user's name.
macro_rules! call {
    ($client:expr, $backend:literal, $method:ident, $req:ty, $body:expr, $acting:expr) => {{
        let message: $req = parse($body)?;
        let mut request = tonic::Request::new(message);
        assert_caller(&mut request, &$acting.project, $acting.role, &$acting.user)
            .map_err(|s| ApiError::from_status($backend, &s))?;
        let reply = $client
            .$method(request)
            .await
            .map_err(|s| ApiError::from_status($backend, &s))?;
        serde_json::to_value(reply.into_inner())
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }};
}

impl Backends {
    /// Calls `service`/`method` with a JSON body; the role was checked.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        body: &[u8],
        acting: &Acting,
    ) -> Result<serde_json::Value, ApiError> {
        let mut query = self.query.clone();
        let mut alerting = self.alerting.clone();
        match (service, method) {
            ("query", "ListHosts") => call!(
                query,
                "query API",
                list_hosts,
                q::ListHostsRequest,
                body,
                acting
            ),
            ("query", "ListProcesses") => call!(
                query,
                "query API",
                list_processes,
                q::ListProcessesRequest,
                body,
                acting
            ),
            ("query", "QueryRange") => call!(
                query,
                "query API",
                query_range,
                q::QueryRangeRequest,
                body,
                acting
            ),
            ("query", "Query") => {
                call!(query, "query API", query, q::PromQueryRequest, body, acting)
            }
            ("query", "ListApplications") => call!(
                query,
                "query API",
                list_applications,
                q::ListApplicationsRequest,
                body,
                acting
            ),
            ("query", "GetApplication") => call!(
                query,
                "query API",
                get_application,
                q::GetApplicationRequest,
                body,
                acting
            ),
            ("query", "ServiceMap") => call!(
                query,
                "query API",
                service_map,
                q::ServiceMapRequest,
                body,
                acting
            ),
            ("query", "SearchLogs") => call!(
                query,
                "query API",
                search_logs,
                q::SearchLogsRequest,
                body,
                acting
            ),
            ("query", "LogPatterns") => call!(
                query,
                "query API",
                log_patterns,
                q::SearchLogsRequest,
                body,
                acting
            ),
            ("query", "GetTrace") => call!(
                query,
                "query API",
                get_trace,
                q::GetTraceRequest,
                body,
                acting
            ),
            ("query", "SearchTraces") => call!(
                query,
                "query API",
                search_traces,
                q::SearchTracesRequest,
                body,
                acting
            ),
            ("query", "Flamegraph") => call!(
                query,
                "query API",
                flamegraph,
                q::FlamegraphRequest,
                body,
                acting
            ),
            ("query", "FlamegraphDiff") => call!(
                query,
                "query API",
                flamegraph_diff,
                q::FlamegraphDiffRequest,
                body,
                acting
            ),
            ("query", "ExportPprof") => call!(
                query,
                "query API",
                export_pprof,
                q::FlamegraphRequest,
                body,
                acting
            ),
            ("query", "ListEvents") => call!(
                query,
                "query API",
                list_events,
                q::ListEventsRequest,
                body,
                acting
            ),
            ("alerting", "ListIncidents") => call!(
                alerting,
                "alerting API",
                list_incidents,
                al::ListIncidentsRequest,
                body,
                acting
            ),
            ("alerting", "GetIncident") => call!(
                alerting,
                "alerting API",
                get_incident,
                al::GetIncidentRequest,
                body,
                acting
            ),
            ("alerting", "InspectionStatus") => call!(
                alerting,
                "alerting API",
                inspection_status,
                al::InspectionStatusRequest,
                body,
                acting
            ),
            ("alerting", "ListInspections") => call!(
                alerting,
                "alerting API",
                list_inspections,
                al::ListInspectionsRequest,
                body,
                acting
            ),
            ("alerting", "ListIntegrations") => call!(
                alerting,
                "alerting API",
                list_integrations,
                al::ListIntegrationsRequest,
                body,
                acting
            ),
            ("alerting", "AcknowledgeIncident") => call!(
                alerting,
                "alerting API",
                acknowledge_incident,
                al::AcknowledgeIncidentRequest,
                body,
                acting
            ),
            ("alerting", "TestIntegration") => call!(
                alerting,
                "alerting API",
                test_integration,
                al::TestIntegrationRequest,
                body,
                acting
            ),
            ("heartbeat", "ListChecks") => match &self.heartbeat {
                Some(client) => {
                    let mut client = client.clone();
                    call!(
                        client,
                        "heartbeat monitor",
                        list_checks,
                        hb::ListChecksRequest,
                        body,
                        acting
                    )
                }
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no heartbeat monitor is set up (ui_gateway.heartbeat_endpoint)",
                )),
            },
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no method {service}/{method}"),
            )),
        }
    }
}
