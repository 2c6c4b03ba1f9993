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

impl Backends {
    fn query_client(&self) -> Result<QueryServiceClient<Authed>, ApiError> {
        Ok(self.query.clone())
    }

    fn alerting_client(&self) -> Result<AlertingServiceClient<Authed>, ApiError> {
        Ok(self.alerting.clone())
    }

    fn heartbeat_client(&self) -> Result<HeartbeatServiceClient<Authed>, ApiError> {
        self.heartbeat.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no heartbeat monitor is set up (ui_gateway.heartbeat_endpoint)",
            )
        })
    }
}

/// One list of the methods the browser may call makes both [`ROUTES`] (with
/// each method's least role) and [`Backends::call`], so neither can name a
/// method the other lacks.
macro_rules! methods {
    ($($service:literal $method:literal $role:ident => $client:ident . $call:ident($req:ty);)*) => {
        /// Every method the browser may call, with the least role it needs.
        pub const ROUTES: &[(&str, &str, Role)] = &[$(($service, $method, Role::$role)),*];

        impl Backends {
            /// Calls `service`/`method` with a JSON body in the user's name;
            /// the caller checked the role.
            pub async fn call(
                &self,
                service: &str,
                method: &str,
                body: &[u8],
                acting: &Acting,
            ) -> Result<serde_json::Value, ApiError> {
                match (service, method) {
                    $(($service, $method) => {
                        let message: $req = parse(body)?;
                        let mut request = tonic::Request::new(message);
                        assert_caller(&mut request, &acting.project, acting.role, &acting.user)
                            .map_err(|s| ApiError::from_status($service, &s))?;
                        let reply = self
                            .$client()?
                            .$call(request)
                            .await
                            .map_err(|s| ApiError::from_status($service, &s))?;
                        serde_json::to_value(reply.into_inner()).map_err(|e| {
                            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        })
                    })*
                    _ => Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("no method {service}/{method}"),
                    )),
                }
            }
        }
    };
}

methods! {
    "query" "ListHosts" Viewer => query_client.list_hosts(q::ListHostsRequest);
    "query" "ListProcesses" Viewer => query_client.list_processes(q::ListProcessesRequest);
    "query" "QueryRange" Viewer => query_client.query_range(q::QueryRangeRequest);
    "query" "Query" Viewer => query_client.query(q::PromQueryRequest);
    "query" "ListApplications" Viewer => query_client.list_applications(q::ListApplicationsRequest);
    "query" "GetApplication" Viewer => query_client.get_application(q::GetApplicationRequest);
    "query" "ServiceMap" Viewer => query_client.service_map(q::ServiceMapRequest);
    "query" "SearchLogs" Viewer => query_client.search_logs(q::SearchLogsRequest);
    "query" "LogPatterns" Viewer => query_client.log_patterns(q::SearchLogsRequest);
    "query" "GetTrace" Viewer => query_client.get_trace(q::GetTraceRequest);
    "query" "SearchTraces" Viewer => query_client.search_traces(q::SearchTracesRequest);
    "query" "Flamegraph" Viewer => query_client.flamegraph(q::FlamegraphRequest);
    "query" "FlamegraphDiff" Viewer => query_client.flamegraph_diff(q::FlamegraphDiffRequest);
    "query" "ExportPprof" Viewer => query_client.export_pprof(q::FlamegraphRequest);
    "query" "ListEvents" Viewer => query_client.list_events(q::ListEventsRequest);
    "alerting" "ListIncidents" Viewer => alerting_client.list_incidents(al::ListIncidentsRequest);
    "alerting" "GetIncident" Viewer => alerting_client.get_incident(al::GetIncidentRequest);
    "alerting" "InspectionStatus" Viewer => alerting_client.inspection_status(al::InspectionStatusRequest);
    "alerting" "ListInspections" Viewer => alerting_client.list_inspections(al::ListInspectionsRequest);
    "alerting" "ListIntegrations" Viewer => alerting_client.list_integrations(al::ListIntegrationsRequest);
    "alerting" "AcknowledgeIncident" Editor => alerting_client.acknowledge_incident(al::AcknowledgeIncidentRequest);
    "alerting" "TestIntegration" Editor => alerting_client.test_integration(al::TestIntegrationRequest);
    "heartbeat" "ListChecks" Viewer => heartbeat_client.list_checks(hb::ListChecksRequest);
    "heartbeat" "ListFlips" Viewer => heartbeat_client.list_flips(hb::GetCheckRequest);
    "heartbeat" "PauseCheck" Editor => heartbeat_client.pause_check(hb::GetCheckRequest);
    "heartbeat" "ResumeCheck" Editor => heartbeat_client.resume_check(hb::GetCheckRequest);
}
