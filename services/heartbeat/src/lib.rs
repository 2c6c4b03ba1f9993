//! The heartbeat monitor, meant to run OFF the cluster it watches: a
//! dead-man's switch. Jobs and clusters ping it; when a check's pings stop
//! for longer than its period (plus grace), it goes late, then down.
//!
//! Ping API, compatible with healthchecks.io's (GET, HEAD or POST):
//! `/ping/<uuid>` success, `/ping/<uuid>/start`, `/ping/<uuid>/fail`,
//! `/ping/<uuid>/log`, `/ping/<uuid>/<exit status 0-255>`.
//! Check API: `GET /api/v1/checks` (JSON) and `vigil.heartbeat.v1` over gRPC.
//! Notifications on status changes come with the notify crate.

pub mod checks;
mod config;
pub mod schedule;

use std::path::Path;
use vigil_runtime::time::now_ms;

use axum::{
    Json, Router,
    extract::{Path as UrlPath, State},
    http::StatusCode,
    response::{IntoResponse, Response as HttpResponse},
    routing::get,
};
use checks::{Announce, CheckStore, PingKind, PingState, Status};
pub use config::{CheckConfig, HeartbeatConfig};
use prometheus_client::metrics::{counter::Counter, family::Family};
use serde::Serialize;
use std::sync::Arc;
use tonic::{Request, Response, Status as GrpcStatus};
use vigil_notify::{Dispatcher, Notifier, Outbox, RetryPolicy};
use vigil_proto::heartbeat::v1::{
    self as pb, CheckStatus, ListChecksRequest, ListChecksResponse,
    heartbeat_service_server::{HeartbeatService, HeartbeatServiceServer},
};
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, ServiceError, Shutdown, grpc::GrpcServer, http::HttpServer,
};

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Config(#[from] vigil_runtime::config::ConfigError),
    #[error(transparent)]
    Store(#[from] vigil_storage::StorageError),
}

#[derive(Clone)]
struct AppState {
    store: CheckStore,
    dispatcher: Dispatcher,
    pings: Family<[(&'static str, &'static str); 1], Counter>,
}

/// Runs the monitor until `shutdown`.
pub async fn run(
    config: HeartbeatConfig,
    data_dir: &Path,
    shutdown: Shutdown,
) -> Result<(), HeartbeatError> {
    let path = config
        .state_path
        .clone()
        .unwrap_or_else(|| data_dir.join("heartbeat.redb"));
    let notifier = Arc::new(Notifier::new(
        "heartbeat.integrations",
        &config.integrations,
        "vigil-heartbeat",
    )?);
    let store = CheckStore::open(&path, config.checks.clone())?.with_announce(Announce {
        notifier: notifier.clone(),
        project: config.project.clone(),
        ui_url: config.ui_url.clone(),
    })?;
    let dispatcher = Dispatcher::new(
        Outbox::open(store.database())?,
        notifier,
        RetryPolicy::default(),
    );
    tracing::info!(path = %path.display(), checks = config.checks.len(), "heartbeat store open");
    let metrics = Metrics::new("heartbeat");
    dispatcher.register(&metrics);
    let readiness = Readiness::default();
    let http = HttpServer::bind("heartbeat-http", &config.http).await?;
    let mut grpc = GrpcServer::bind("heartbeat", &config.grpc).await?;
    grpc.add_service(
        HeartbeatServiceServer::new(ChecksApi {
            store: store.clone(),
        })
        .max_decoding_message_size(config.grpc.max_message_bytes),
    )
    .add_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET);

    let state = AppState {
        store: store.clone(),
        dispatcher: dispatcher.clone(),
        pings: Family::default(),
    };
    let changes: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
    metrics.register("pings", "Pings received, by kind", state.pings.clone());
    metrics.register(
        "status_changes",
        "Checks entering a status",
        changes.clone(),
    );
    let app = Router::new()
        .route("/ping/{uuid}", get(ping_success).post(ping_success))
        .route("/ping/{uuid}/{action}", get(ping_action).post(ping_action))
        .route("/api/v1/checks", get(list_checks))
        .with_state(state);
    readiness.set_ready(true);

    let monitor = async {
        loop {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.evaluate(now_ms())).await {
                Ok(Ok(flips)) => {
                    for (_, flip) in &flips {
                        let to = match flip.to {
                            checks::Side::Up => "up",
                            checks::Side::Down => "down",
                        };
                        changes.get_or_create(&[("status", to)]).inc();
                    }
                    if !flips.is_empty() {
                        dispatcher.wake();
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "cannot evaluate the checks"),
                Err(e) => tracing::error!(error = %e, "check evaluation task failed"),
            }
            if !shutdown.sleep(config.evaluate_every).await {
                break;
            }
        }
        Ok::<(), RuntimeError>(())
    };
    let deliver = async {
        dispatcher
            .run(&shutdown, std::time::Duration::from_secs(5), &|| true)
            .await;
        Ok::<(), RuntimeError>(())
    };
    tokio::try_join!(
        monitor,
        deliver,
        http.serve(app, &metrics, &readiness, &shutdown),
        grpc.serve(&metrics, &shutdown),
    )?;
    Ok(())
}

async fn record(state: AppState, uuid: String, kind: PingKind) -> HttpResponse {
    if uuid::Uuid::parse_str(&uuid).is_err() {
        return (StatusCode::BAD_REQUEST, "invalid check uuid\n").into_response();
    }
    let store = state.store.clone();
    let now = now_ms();
    let result = tokio::task::spawn_blocking(move || store.ping(&uuid, kind, now)).await;
    match result {
        Ok(Ok(Some(_))) => {
            // A ping may have flipped the check: deliver at once.
            state.dispatcher.wake();
            let kind_name = match kind {
                PingKind::Success => "success",
                PingKind::Start => "start",
                PingKind::Fail => "fail",
                PingKind::Log => "log",
            };
            state.pings.get_or_create(&[("kind", kind_name)]).inc();
            (StatusCode::OK, "OK\n").into_response()
        }
        Ok(Ok(None)) => {
            (StatusCode::NOT_FOUND, "not found: no check has this uuid\n").into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "ping not stored");
            let (code, message) = e.to_http();
            (code, format!("{message}\n")).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("ping task failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn ping_success(
    State(state): State<AppState>,
    UrlPath(uuid): UrlPath<String>,
) -> HttpResponse {
    record(state, uuid, PingKind::Success).await
}

async fn ping_action(
    State(state): State<AppState>,
    UrlPath((uuid, action)): UrlPath<(String, String)>,
) -> HttpResponse {
    let kind = match action.as_str() {
        "start" => PingKind::Start,
        "fail" => PingKind::Fail,
        "log" => PingKind::Log,
        code => match code.parse::<u8>() {
            Ok(0) => PingKind::Success,
            Ok(_) => PingKind::Fail,
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    "unknown ping action: use start, fail, log or an exit status 0-255\n",
                )
                    .into_response();
            }
        },
    };
    record(state, uuid, kind).await
}

#[derive(Serialize)]
struct CheckView {
    name: String,
    slug: String,
    uuid: String,
    status: Status,
    /// Simple schedule, else 0.
    period_seconds: u64,
    /// Cron schedule and its time zone, else empty.
    schedule: String,
    tz: String,
    grace_seconds: u64,
    last_ping_ms: Option<i64>,
    last_success_ms: Option<i64>,
    pings: u64,
}

fn view(check: &CheckConfig, ping: &PingState, now: i64) -> CheckView {
    CheckView {
        name: check.name.clone(),
        slug: check.slug(),
        uuid: check.uuid.clone(),
        status: checks::status(check, ping, now),
        period_seconds: check.period.map_or(0, |p| p.as_secs()),
        schedule: check.schedule.clone().unwrap_or_default(),
        tz: check.tz.clone(),
        grace_seconds: check.grace.as_secs(),
        last_ping_ms: ping.last_ping_ms,
        last_success_ms: ping.last_success_ms,
        pings: ping.pings,
    }
}

async fn list_checks(State(state): State<AppState>) -> HttpResponse {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.states()).await {
        Ok(Ok(states)) => {
            let now = now_ms();
            let checks: Vec<CheckView> = states.iter().map(|(c, p)| view(c, p, now)).collect();
            Json(serde_json::json!({ "checks": checks })).into_response()
        }
        Ok(Err(e)) => e.to_http().into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

struct ChecksApi {
    store: CheckStore,
}

#[tonic::async_trait]
impl HeartbeatService for ChecksApi {
    async fn list_checks(
        &self,
        _request: Request<ListChecksRequest>,
    ) -> Result<Response<ListChecksResponse>, GrpcStatus> {
        let store = self.store.clone();
        let states = tokio::task::spawn_blocking(move || store.states())
            .await
            .map_err(|e| GrpcStatus::internal(e.to_string()))?
            .map_err(|e| e.to_status())?;
        let now = now_ms();
        let checks = states
            .iter()
            .map(|(check, ping)| pb::Check {
                name: check.name.clone(),
                slug: check.slug(),
                uuid: check.uuid.clone(),
                status: match checks::status(check, ping, now) {
                    Status::New => CheckStatus::New,
                    Status::Up => CheckStatus::Up,
                    Status::Late => CheckStatus::Late,
                    Status::Down => CheckStatus::Down,
                } as i32,
                period_ms: check
                    .period
                    .map_or(0, |p| i64::try_from(p.as_millis()).unwrap_or(i64::MAX)),
                schedule: check.schedule.clone().unwrap_or_default(),
                tz: check.tz.clone(),
                grace_ms: i64::try_from(check.grace.as_millis()).unwrap_or(i64::MAX),
                last_ping_ms: ping.last_ping_ms.unwrap_or(0),
                pings: ping.pings,
            })
            .collect();
        Ok(Response::new(ListChecksResponse { checks }))
    }
}
