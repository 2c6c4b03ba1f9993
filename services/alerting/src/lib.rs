//! The inspection/alerting worker. Every round it reads every application's
//! figures through the query API (never the store directly), runs the
//! inspections of `catalog`, opens, updates and resolves incidents with
//! `for` and keep-firing hysteresis, attaches a root-cause hint found by
//! walking the service map, and queues notifications in a durable outbox
//! that a dispatcher delivers (Slack, PagerDuty, Teams, Opsgenie, email,
//! webhooks; `vigil-notify`). Incidents, trackers and the outbox share one
//! redb file, written in one transaction per round.

pub mod catalog;
mod config;
pub mod evaluate;
pub mod incidents;
pub mod leader;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

pub use config::{AlertingConfig, Effective, InspectionSettings, Override, Settings};
use evaluate::{Deployment, Disk, DiskIo, Figures, FluxObject, Observation};
use incidents::{Incident, IncidentStore, RoundContext, Transition};
use prometheus_client::metrics::{counter::Counter, family::Family};
use tonic::{Request, Response, Status};
use vigil_notify::{Dispatcher, Field, Notifier, Outbox, RetryPolicy, Severity};
use vigil_proto::{
    alerting::v1::{
        self as pb, IncidentState,
        alerting_service_server::{AlertingService, AlertingServiceServer},
    },
    query::v1::{
        self as q, InspectApplicationsRequest, ListHostsRequest, PromQueryRequest,
        SearchLogsRequest, TimeWindow, query_service_client::QueryServiceClient,
    },
};
use vigil_runtime::{
    Metrics, Readiness, RuntimeError, ServiceError, Shutdown,
    auth::{
        AccessConfig, ApiKeys, BearerAuth, Project, ProjectConfig, Role, is_valid_project_name,
        require_role,
    },
    grpc::GrpcServer,
    http::HttpServer,
    time::{millis, now_ms},
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

type QueryClient = QueryServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerAuth>,
>;

/// The last round's observations, for the status API.
#[derive(Debug, Default)]
struct LastRound {
    at_ms: i64,
    observations: Vec<Observation>,
}

/// Runs the worker, its dispatcher and its API until `shutdown`.
pub async fn run(
    config: AlertingConfig,
    access: &AccessConfig,
    data_dir: &Path,
    shutdown: Shutdown,
) -> Result<(), AlertingError> {
    let path = config
        .state_path
        .clone()
        .unwrap_or_else(|| data_dir.join("alerting.redb"));
    let store = IncidentStore::open(&path)?;
    Settings::new(&config)?; // refuses bad overrides before anything starts
    let notifier = Arc::new(Notifier::new(
        "alerting.integrations",
        &config.integrations,
        "vigil-alerting",
    )?);
    let outbox = Outbox::open(store.database())?;
    let dispatcher = Dispatcher::new(outbox, notifier.clone(), RetryPolicy::default());
    tracing::info!(path = %path.display(), project = config.project, integrations = notifier.integrations().len(), "incident store open");
    let metrics = Metrics::new("alerting");
    dispatcher.register(&metrics);
    let readiness = Readiness::default();
    let api_key = config.resolve_api_key()?;
    let keys = Arc::new(
        ApiKeys::new(&[ProjectConfig {
            name: config.project.clone(),
            api_keys: vec![api_key.clone()],
            api_keys_file: None,
        }])?
        .with_gateways(access)?,
    );
    let last = Arc::new(RwLock::new(LastRound::default()));
    let mut grpc = GrpcServer::bind("alerting", &config.grpc).await?;
    let http = HttpServer::bind("alerting-http", &config.http).await?;
    let api = AlertingServiceServer::new(AlertingApi {
        store: store.clone(),
        notifier: notifier.clone(),
        last: last.clone(),
    })
    .max_decoding_message_size(config.grpc.max_message_bytes);
    grpc.add_service(tonic::service::interceptor::InterceptedService::new(
        api,
        move |request| keys.intercept(request),
    ))
    .add_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET);

    let worker = Worker::new(
        &config,
        BearerAuth::new(&api_key)?,
        store,
        (notifier, dispatcher.clone()),
        last,
    )?;
    metrics.register(
        "inspection_runs",
        "Inspection rounds by outcome",
        worker.runs.clone(),
    );
    metrics.register(
        "incident_transitions",
        "Incidents opened, escalated and resolved",
        worker.transitions.clone(),
    );
    let elector = match &config.lease {
        Some(lease) => Some(leader::Elector::connect(lease, &config.project).await?),
        None => None,
    };
    let leadership = elector
        .as_ref()
        .map_or_else(leader::Leadership::always, leader::Elector::leadership);
    readiness.set_ready(true);
    let elect = async {
        if let Some(elector) = &elector {
            elector.run(&shutdown).await;
        }
        Ok::<(), RuntimeError>(())
    };
    let worker_loop = async {
        loop {
            // Only the leader inspects: a standby's incidents would repeat
            // the leader's notifications.
            if leadership.is_leader() {
                worker.round(now_ms()).await;
            }
            if !shutdown.sleep(config.interval).await {
                break;
            }
        }
        Ok::<(), RuntimeError>(())
    };
    let dispatch = async {
        let active = || leadership.is_leader();
        dispatcher
            .run(&shutdown, Duration::from_secs(5), &active)
            .await;
        Ok::<(), RuntimeError>(())
    };
    tokio::try_join!(
        elect,
        worker_loop,
        dispatch,
        grpc.serve(&metrics, &shutdown),
        http.serve(axum::Router::new(), &metrics, &readiness, &shutdown),
    )?;
    Ok(())
}

impl Worker {
    /// A worker reading through the query API at `config.query_endpoint`,
    /// recording into `store` and queueing for `dispatcher`.
    fn new(
        config: &AlertingConfig,
        auth: BearerAuth,
        store: IncidentStore,
        (notifier, dispatcher): (Arc<Notifier>, Dispatcher),
        last: Arc<RwLock<LastRound>>,
    ) -> Result<Self, AlertingError> {
        let channel =
            vigil_runtime::grpc::channel(&config.query_endpoint, config.grpc.request_timeout)?;
        Ok(Self {
            query: QueryServiceClient::with_interceptor(channel, auth)
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            store,
            settings: Settings::new(config)?,
            notifier,
            dispatcher,
            last,
            project: config.project.clone(),
            ui_url: config.ui_url.clone(),
            retention: config.retention,
            patterns: std::sync::Mutex::default(),
            runs: Family::default(),
            transitions: Family::default(),
        })
    }

    /// A worker without a running dispatcher (benchmarks, tools): its
    /// notifications stay queued in `store`'s outbox.
    pub fn standalone(
        config: &AlertingConfig,
        store: IncidentStore,
    ) -> Result<Self, AlertingError> {
        let notifier = Arc::new(Notifier::new(
            "alerting.integrations",
            &config.integrations,
            "vigil-alerting",
        )?);
        let dispatcher = Dispatcher::new(
            Outbox::open(store.database())?,
            notifier.clone(),
            RetryPolicy::default(),
        );
        let auth = BearerAuth::new(&config.resolve_api_key()?)?;
        Self::new(config, auth, store, (notifier, dispatcher), Arc::default())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// The largest InspectApplications answer read (thousands of applications).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

pub struct Worker {
    query: QueryClient,
    store: IncidentStore,
    settings: Settings,
    notifier: Arc<Notifier>,
    dispatcher: Dispatcher,
    last: Arc<RwLock<LastRound>>,
    project: String,
    ui_url: Option<String>,
    retention: Duration,
    /// application → (when, its busiest error pattern), for log incidents.
    patterns: std::sync::Mutex<BTreeMap<String, (i64, Option<Field>)>>,
    runs: Family<[(&'static str, &'static str); 1], Counter>,
    transitions: Family<[(&'static str, &'static str); 1], Counter>,
}

const MINUTE_MS: i64 = 60_000;
/// Log pattern lookups per round (each is one query API call).
const MAX_PATTERN_LOOKUPS: usize = 20;

fn labels(series: &q::Series) -> BTreeMap<&str, &str> {
    series
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect()
}

fn last_value(series: &q::Series) -> Option<f64> {
    series
        .samples
        .last()
        .map(|s| s.value)
        .filter(|v| v.is_finite())
}

impl Worker {
    async fn apps(&self, now: i64, minutes: i64) -> Result<Vec<q::GetApplicationResponse>, Status> {
        Ok(self
            .query
            .clone()
            .inspect_applications(InspectApplicationsRequest {
                project: self.project.clone(),
                window: Some(TimeWindow {
                    start_ms: now - minutes * MINUTE_MS,
                    end_ms: now,
                }),
            })
            .await?
            .into_inner()
            .applications)
    }

    async fn promql(&self, now: i64, query: &str) -> Result<Vec<q::Series>, Status> {
        Ok(self
            .query
            .clone()
            .query(PromQueryRequest {
                project: self.project.clone(),
                query: query.to_owned(),
                start_ms: now,
                end_ms: now,
                step_ms: 0,
            })
            .await?
            .into_inner()
            .series)
    }

    /// Everything one round reads, at `now`.
    pub async fn figures(&self, now: i64) -> Result<Figures, Status> {
        // One window at a time: each is already some twenty queries over
        // every application's series, run concurrently by the query service.
        let w5m = self.apps(now, 5).await?;
        let w30m = self.apps(now, 30).await?;
        let w1h = self.apps(now, 60).await?;
        let w6h = self.apps(now, 360).await?;
        let mut client = self.query.clone();
        let hosts = client.list_hosts(ListHostsRequest {
            project: self.project.clone(),
            lookback_ms: 0,
        });
        let (hosts, disks, io, desired, available, updated, generation, flux, suspended) = tokio::try_join!(
            hosts,
            self.promql(now, "1 - last_over_time(node_filesystem_available_bytes[5m]) / last_over_time(node_filesystem_size_bytes[5m])"),
            self.promql(now, "rate(node_disk_io_time_seconds_total[5m])"),
            self.promql(now, "last_over_time(kube_deployment_spec_replicas[5m])"),
            self.promql(now, "last_over_time(kube_deployment_status_replicas_available[5m])"),
            self.promql(now, "last_over_time(kube_deployment_status_replicas_updated[5m])"),
            self.promql(now, "last_over_time(kube_deployment_status_observed_generation[5m])"),
            self.promql(now, "last_over_time(flux_resource_ready[5m])"),
            self.promql(now, "last_over_time(flux_resource_suspended[5m]) > 0"),
        )?;
        let node = |l: &BTreeMap<&str, &str>| l.get("node").copied().unwrap_or_default().to_owned();
        let deployment_key = |s: &q::Series| {
            let l = labels(s);
            let app = l
                .get("application")
                .or_else(|| l.get("deployment"))
                .copied()
                .unwrap_or_default()
                .to_owned();
            (
                l.get("namespace").copied().unwrap_or_default().to_owned(),
                app,
            )
        };
        let index = |list: &[q::Series]| -> BTreeMap<(String, String), f64> {
            list.iter()
                .filter_map(|s| last_value(s).map(|v| (deployment_key(s), v)))
                .collect()
        };
        let (available, updated, generation) =
            (index(&available), index(&updated), index(&generation));
        let flux_key = |s: &q::Series| {
            let l = labels(s);
            let get = |n: &str| l.get(n).copied().unwrap_or_default().to_owned();
            (get("kind"), get("namespace"), get("name"))
        };
        let suspended: BTreeSet<_> = suspended.iter().map(flux_key).collect();
        Ok(Figures {
            w5m,
            w30m,
            w1h,
            w6h,
            hosts: hosts.into_inner().hosts,
            disks: disks
                .iter()
                .filter_map(|s| {
                    let l = labels(s);
                    Some(Disk {
                        node: node(&l),
                        mount_point: l.get("mount_point")?.to_string(),
                        used_ratio: last_value(s)?,
                    })
                })
                .collect(),
            disk_io: io
                .iter()
                .filter_map(|s| {
                    let l = labels(s);
                    Some(DiskIo {
                        node: node(&l),
                        device: l.get("device")?.to_string(),
                        busy_ratio: last_value(s)?,
                    })
                })
                .collect(),
            deployments: desired
                .iter()
                .filter_map(|s| {
                    let key = deployment_key(s);
                    (!key.1.is_empty()).then(|| Deployment {
                        application: key.1.clone(),
                        desired: last_value(s).unwrap_or(0.0),
                        available: available.get(&key).copied(),
                        updated: updated.get(&key).copied(),
                        generation: generation.get(&key).copied(),
                    })
                })
                .collect(),
            flux: flux
                .iter()
                .filter_map(|s| {
                    let key = flux_key(s);
                    if key.2.is_empty() || suspended.contains(&key) {
                        return None;
                    }
                    let (kind, namespace, name) = key;
                    Some(FluxObject {
                        ready: last_value(s)? >= 1.0,
                        kind,
                        namespace,
                        name,
                    })
                })
                .collect(),
        })
    }

    /// Adds the busiest error pattern's example to firing log inspections:
    /// at most `MAX_PATTERN_LOOKUPS` lookups a round, each remembered for
    /// five minutes, so a round stays within the project's query rate.
    async fn describe_log_errors(&self, now: i64, observations: &mut [Observation]) {
        let mut lookups = 0;
        for o in observations.iter_mut() {
            let (Some(firing), Some(app)) = (o.firing.as_mut(), o.application.as_deref()) else {
                continue;
            };
            if o.inspection.category != "logs" {
                continue;
            }
            let cached = self.patterns.lock().ok().and_then(|c| {
                c.get(app)
                    .filter(|(at, _)| now - at < 5 * MINUTE_MS)
                    .cloned()
            });
            if let Some((_, field)) = cached {
                firing.details.extend(field);
                continue;
            }
            if lookups >= MAX_PATTERN_LOOKUPS {
                continue;
            }
            lookups += 1;
            let patterns = self
                .query
                .clone()
                .log_patterns(SearchLogsRequest {
                    project: self.project.clone(),
                    window: Some(TimeWindow {
                        start_ms: now - 5 * MINUTE_MS,
                        end_ms: now,
                    }),
                    application: app.to_owned(),
                    min_severity: 17,
                    limit: 1,
                    ..SearchLogsRequest::default()
                })
                .await;
            let field = patterns
                .ok()
                .and_then(|r| r.into_inner().patterns.into_iter().next())
                .map(|p| {
                    Field::new(
                        "Pattern",
                        format!(
                            "{} ({} in 5 min)",
                            vigil_notify::message::truncate(&p.example, 300),
                            p.count
                        ),
                    )
                });
            firing.details.extend(field.clone());
            if let Ok(mut cache) = self.patterns.lock() {
                cache.retain(|_, (at, _)| now - *at < 5 * MINUTE_MS);
                cache.insert(app.to_owned(), (now, field));
            }
        }
    }

    /// One round at `now`; returns the transitions it made.
    pub async fn round(&self, now: i64) -> Vec<Transition> {
        let figures = match self.figures(now).await {
            Ok(f) => f,
            Err(status) => {
                // Nothing is resolved on a round that could not look.
                self.runs
                    .get_or_create(&[("outcome", "query_failed")])
                    .inc();
                tracing::warn!(code = ?status.code(), error = status.message(), "inspection round skipped: the query API failed");
                return Vec::new();
            }
        };
        let mut observations = evaluate::evaluate(&self.settings, &figures);
        self.describe_log_errors(now, &mut observations).await;
        let upstreams: BTreeMap<String, Vec<String>> = figures
            .w5m
            .iter()
            .filter_map(|a| {
                let name = a.summary.as_ref()?.name.clone();
                Some((name, a.upstreams.iter().map(|u| u.name.clone()).collect()))
            })
            .collect();
        let store = self.store.clone();
        let notifier = self.notifier.clone();
        let project = self.project.clone();
        let ui_url = self.ui_url.clone();
        let observed = observations.clone();
        let retention = self.retention;
        let generations: Vec<(String, i64)> = figures
            .deployments
            .iter()
            .filter_map(|d| Some((d.application.clone(), d.generation? as i64)))
            .collect();
        let result = tokio::task::spawn_blocking(move || {
            let pruned = store.prune(&project, now.saturating_sub(millis(retention)))?;
            if pruned > 0 {
                tracing::info!(pruned, "resolved incidents past retention deleted");
            }
            let notify = |t: &Transition| {
                let n = incidents::notification(t, notifier.source(), ui_url.as_deref())?;
                let to = notifier.route(&n);
                Some((n, to))
            };
            let notice = |app: &str, generation: i64, previous: i64| {
                let n = incidents::deployment_notification(
                    &project,
                    app,
                    (previous, generation),
                    now,
                    notifier.source(),
                    ui_url.as_deref(),
                );
                let to = notifier.route(&n);
                Some((n, to))
            };
            store.apply(
                &RoundContext {
                    project: &project,
                    now_ms: now,
                    upstreams: &upstreams,
                    notify: &notify,
                    generations: &generations,
                    notice: &notice,
                },
                &observed,
            )
        })
        .await;
        let transitions = match result {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                self.runs
                    .get_or_create(&[("outcome", "store_failed")])
                    .inc();
                tracing::error!(error = %e, "cannot record the inspection round");
                return Vec::new();
            }
            Err(e) => {
                self.runs
                    .get_or_create(&[("outcome", "store_failed")])
                    .inc();
                tracing::error!(error = %e, "the inspection round failed");
                return Vec::new();
            }
        };
        self.runs.get_or_create(&[("outcome", "ok")]).inc();
        if let Ok(mut last) = self.last.write() {
            *last = LastRound {
                at_ms: now,
                observations,
            };
        }
        for t in &transitions {
            let i = t.incident();
            let what = match t {
                Transition::Opened(_) => "opened",
                Transition::Updated {
                    escalated: true, ..
                } => "escalated",
                Transition::Updated { .. } => continue,
                Transition::Resolved(_) => "resolved",
            };
            self.transitions
                .get_or_create(&[("transition", what)])
                .inc();
            tracing::warn!(
                incident = i.id,
                inspection = i.inspection,
                subject = i.subject,
                severity = i.severity.as_str(),
                summary = i.summary,
                root_cause = i.root_cause.as_ref().map_or("", |r| r.text.as_str()),
                "incident {what}"
            );
        }
        if !transitions.is_empty() {
            self.dispatcher.wake();
        }
        transitions
    }
}

struct AlertingApi {
    store: IncidentStore,
    notifier: Arc<Notifier>,
    last: Arc<RwLock<LastRound>>,
}

fn severity_pb(s: Severity) -> pb::Severity {
    match s {
        Severity::Info => pb::Severity::Info,
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
    }
}

fn field_pb(f: &Field) -> pb::Field {
    pb::Field {
        name: f.name.clone(),
        value: f.value.clone(),
    }
}

fn to_proto(i: Incident) -> pb::Incident {
    let state = if i.resolved_at_ms.is_some() {
        IncidentState::Resolved
    } else {
        IncidentState::Open
    };
    pb::Incident {
        id: i.id,
        project: i.project,
        inspection: i.inspection,
        subject: i.subject,
        severity: severity_pb(i.severity) as i32,
        state: state as i32,
        summary: i.summary,
        opened_at_ms: i.opened_at_ms,
        resolved_at_ms: i.resolved_at_ms.unwrap_or(0),
        value: i.value,
        threshold: i.threshold,
        category: i.category,
        application: i.application.unwrap_or_default(),
        details: i.details.iter().map(field_pb).collect(),
        root_cause: i.root_cause.map(|r| pb::RootCause {
            upstream: r.upstream,
            inspection: r.inspection,
            lead_ms: r.lead_ms,
            text: r.text,
        }),
        started_at_ms: i.started_at_ms,
        updated_at_ms: i.updated_at_ms,
        acknowledged_by: i.acknowledged_by.unwrap_or_default(),
        acknowledged_at_ms: i.acknowledged_at_ms.unwrap_or(0),
    }
}

impl AlertingApi {
    /// The project a call is for: the key's project; a named one must match.
    #[allow(clippy::result_large_err)]
    fn project<T>(&self, request: &Request<T>, named: &str) -> Result<String, Status> {
        let project = request
            .extensions()
            .get::<Project>()
            .map(|p| p.0.clone())
            .ok_or_else(|| Status::unauthenticated("an API key is needed"))?;
        if !named.is_empty() && named != project {
            if !is_valid_project_name(named) {
                return Err(Status::invalid_argument(format!(
                    "project {named:?} is not a valid project name"
                )));
            }
            return Err(Status::permission_denied(format!(
                "the API key is not one of project {named:?}"
            )));
        }
        Ok(project)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(IncidentStore) -> Result<T, vigil_storage::StorageError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| e.to_status())
    }
}

#[allow(clippy::result_large_err)]
fn incident_id(id: &str) -> Result<String, Status> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| Status::invalid_argument(format!("incident id {id:?} is not a UUID")))
}

#[tonic::async_trait]
impl AlertingService for AlertingApi {
    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let r = request.into_inner();
        let wanted = IncidentState::try_from(r.state).map_err(|_| {
            Status::invalid_argument(format!("state {} is not an incident state", r.state))
        })?;
        if r.limit > 1000 {
            return Err(Status::invalid_argument(format!(
                "limit {} is above 1000",
                r.limit
            )));
        }
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let open_only = match wanted {
            IncidentState::Unspecified => None,
            IncidentState::Open => Some(true),
            IncidentState::Resolved => Some(false),
        };
        let incidents = self
            .blocking(move |s| s.list(&project, open_only, limit))
            .await?;
        Ok(Response::new(pb::ListIncidentsResponse {
            incidents: incidents.into_iter().map(to_proto).collect(),
        }))
    }

    async fn get_incident(
        &self,
        request: Request<pb::GetIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let id = incident_id(&request.get_ref().id)?;
        let found = self.blocking(move |s| s.get(&id)).await?;
        match found.filter(|i| i.project == project) {
            Some(i) => Ok(Response::new(to_proto(i))),
            None => Err(Status::not_found(format!(
                "no incident {}",
                request.get_ref().id
            ))),
        }
    }

    async fn acknowledge_incident(
        &self,
        request: Request<pb::AcknowledgeIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        let caller = require_role(&request, Role::Editor)?;
        let project = self.project(&request, &request.get_ref().project)?;
        let mut r = request.into_inner();
        // A gateway names its signed-in user: that is who acknowledged.
        if let Some(user) = caller.user {
            r.by = user;
        }
        let id = incident_id(&r.id)?;
        if r.by.is_empty() || r.by.chars().count() > 200 || r.by.chars().any(char::is_control) {
            return Err(Status::invalid_argument(
                "by must name who acknowledges (1-200 printable characters)",
            ));
        }
        let by = r.by.clone();
        let found = self
            .blocking(move |s| s.acknowledge(&project, &id, &by, now_ms()))
            .await?;
        match found {
            Some(i) => Ok(Response::new(to_proto(i))),
            None => Err(Status::not_found(format!("no incident {}", r.id))),
        }
    }

    async fn inspection_status(
        &self,
        request: Request<pb::InspectionStatusRequest>,
    ) -> Result<Response<pb::InspectionStatusResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let app = request.get_ref().application.clone();
        let open = self.blocking(move |s| s.open_incidents(&project)).await?;
        let last = self
            .last
            .read()
            .map_err(|_| Status::internal("the last round's results are unreadable"))?;
        let results = last
            .observations
            .iter()
            .filter(|o| app.is_empty() || o.application.as_deref() == Some(app.as_str()))
            .map(|o| {
                let status = match (&o.firing, o.effective.enabled) {
                    (_, false) => pb::Status::Disabled,
                    (None, true) => pb::Status::Ok,
                    (Some(f), true) if f.severity == Severity::Critical => pb::Status::Critical,
                    (Some(_), true) => pb::Status::Warning,
                };
                pb::InspectionResult {
                    inspection: o.inspection.id.to_owned(),
                    category: o.inspection.category.to_owned(),
                    subject: o.subject.clone(),
                    application: o.application.clone().unwrap_or_default(),
                    node: o.node.clone().unwrap_or_default(),
                    status: status as i32,
                    value: o.value,
                    unit: o.inspection.unit.to_owned(),
                    threshold: o.effective.threshold,
                    critical: o.effective.critical,
                    summary: o
                        .firing
                        .as_ref()
                        .map(|f| f.summary.clone())
                        .unwrap_or_default(),
                    incident_id: open
                        .get(&(o.inspection.id.to_owned(), o.subject.clone()))
                        .cloned()
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(pb::InspectionStatusResponse {
            evaluated_at_ms: last.at_ms,
            results,
        }))
    }

    async fn list_inspections(
        &self,
        _request: Request<pb::ListInspectionsRequest>,
    ) -> Result<Response<pb::ListInspectionsResponse>, Status> {
        Ok(Response::new(pb::ListInspectionsResponse {
            inspections: catalog::INSPECTIONS
                .iter()
                .map(|i| pb::InspectionInfo {
                    id: i.id.to_owned(),
                    category: i.category.to_owned(),
                    title: i.title.to_owned(),
                    unit: i.unit.to_owned(),
                    threshold: i.threshold,
                    critical: i.critical,
                    below: i.below,
                    for_ms: millis(i.for_),
                    keep_firing_for_ms: millis(i.keep_firing_for),
                    explanation: i.explanation.to_owned(),
                })
                .collect(),
        }))
    }

    async fn list_integrations(
        &self,
        _request: Request<pb::ListIntegrationsRequest>,
    ) -> Result<Response<pb::ListIntegrationsResponse>, Status> {
        Ok(Response::new(pb::ListIntegrationsResponse {
            integrations: self
                .notifier
                .integrations()
                .iter()
                .map(|i| pb::IntegrationInfo {
                    name: i.name.clone(),
                    target: i.config.target().unwrap_or_default().to_owned(),
                    categories: i.config.categories.clone(),
                    min_severity: i.config.min_severity.as_str().to_owned(),
                    deployments: i.config.deployments,
                })
                .collect(),
        }))
    }

    async fn test_integration(
        &self,
        request: Request<pb::TestIntegrationRequest>,
    ) -> Result<Response<pb::TestIntegrationResponse>, Status> {
        let caller = require_role(&request, Role::Editor)?;
        let project = self.project(&request, "")?;
        let name = request.into_inner().name;
        if self.notifier.get(&name).is_none() {
            return Err(Status::not_found(format!(
                "no integration is named {name:?}"
            )));
        }
        let result = self.notifier.test(&name, &project, now_ms()).await;
        tracing::info!(
            integration = name,
            ok = result.is_ok(),
            by = caller.user.as_deref().unwrap_or("an API key"),
            "test notification sent"
        );
        Ok(Response::new(match result {
            Ok(()) => pb::TestIntegrationResponse {
                delivered: true,
                error: String::new(),
            },
            Err(e) => pb::TestIntegrationResponse {
                delivered: false,
                error: e.message,
            },
        }))
    }
}
