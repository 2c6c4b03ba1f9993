//! `vigil.query.v1.QueryService`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};
use vigil_runtime::time::{millis, now_ms};

use crate::{
    apps::{Model, Window},
    promql::{self, Limits, QueryError, Value},
    signals,
};
use tonic::{Request, Response, Status};
use vigil_proto::{
    names,
    query::v1::{
        self as pb, Host, ListHostsRequest, ListHostsResponse, ListProcessesRequest,
        ListProcessesResponse, Process, QueryRangeRequest, QueryRangeResponse, label_matcher::Op,
        query_service_server::QueryService,
    },
};
use vigil_runtime::{
    ServiceError,
    auth::Project,
    rate::{ProjectRate, RateDenied},
};
use vigil_storage::{
    Matcher, MatcherOp, SeriesData, SeriesSelector, TelemetryStore, model::is_valid_metric_name,
};

use crate::QueryConfig;

/// The query API over a store.
pub struct QueryApi {
    store: Arc<dyn TelemetryStore>,
    default_lookback: Duration,
    max_range: Duration,
    max_series: usize,
    limits: Limits,
    /// The same, with the larger series bound of the application views.
    model_limits: Limits,
    config: QueryConfig,
    rate: Arc<ProjectRate>,
}

/// A PromQL series as a message: the metric name apart from the labels.
fn series_pb(labels: &promql::Labels, samples: Vec<pb::Sample>) -> pb::Series {
    pb::Series {
        metric: labels.get("__name__").cloned().unwrap_or_default(),
        labels: labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(name, value)| pb::Label {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        samples,
    }
}

fn range_series_pb(s: &promql::RangeSeries) -> pb::Series {
    let samples = s
        .samples()
        .iter()
        .map(|p| pb::Sample {
            timestamp_ms: p.timestamp_ms,
            value: p.value,
        })
        .collect();
    series_pb(&s.labels, samples)
}

/// Takes one request from the project's budget, or says why not.
pub fn check_rate(rate: &ProjectRate, project: &str) -> Result<(), String> {
    let wait = match rate.check(project, 1) {
        Ok(()) => return Ok(()),
        Err(RateDenied::Wait(wait)) => wait,
        Err(RateDenied::OverBurst) => Duration::from_secs(1),
    };
    Err(format!(
        "project {project:?} is over its {} query requests/s (query.rate_per_project); retry in {} ms",
        rate.rate,
        wait.as_millis().max(1)
    ))
}

/// A query error as a gRPC status: what the caller got wrong (a malformed
/// query, a limit) is INVALID_ARGUMENT, with the message.
pub fn query_status(e: QueryError) -> Status {
    match e {
        QueryError::Storage(e) => e.to_status(),
        QueryError::Parse(_) | QueryError::BadData(_) | QueryError::Limit(_) => {
            Status::invalid_argument(e.to_string())
        }
        QueryError::Execution(_) => Status::failed_precondition(e.to_string()),
    }
}

/// The project a call reads: the one its API key belongs to (put there by
/// the authenticating interceptor). A request naming another project is
/// refused; one naming none reads the key's project.
#[allow(clippy::result_large_err)]
pub fn project_of<T>(request: &Request<T>, named: &str) -> Result<String, Status> {
    let Some(Project(project)) = request.extensions().get::<Project>() else {
        return Err(Status::unauthenticated(
            "missing API key: send `authorization: Bearer <api key>`",
        ));
    };
    if !named.is_empty() && named != project {
        return Err(Status::permission_denied(format!(
            "the API key belongs to project {project:?}, not {named:?}"
        )));
    }
    Ok(project.clone())
}

impl QueryApi {
    pub fn new(
        store: Arc<dyn TelemetryStore>,
        config: &QueryConfig,
        rate: Arc<ProjectRate>,
    ) -> Self {
        Self {
            store,
            default_lookback: config.default_lookback,
            max_range: config.max_range,
            max_series: config.max_series,
            limits: config.limits(),
            model_limits: Limits {
                max_series: config.max_application_series,
                ..config.limits()
            },
            config: config.clone(),
            rate,
        }
    }

    /// The call's project (see [`project_of`]), within its request rate.
    #[allow(clippy::result_large_err)]
    fn project<T>(&self, request: &Request<T>, named: &str) -> Result<String, Status> {
        let project = project_of(request, named)?;
        check_rate(&self.rate, &project).map_err(Status::resource_exhausted)?;
        Ok(project)
    }

    #[allow(clippy::result_large_err)]
    fn window(&self, window: Option<&pb::TimeWindow>) -> Result<Window, Status> {
        Window::of(window, now_ms(), self.limits.max_range_ms).map_err(query_status)
    }

    /// The profiles a flame graph request selects, merged.
    async fn merged_stacks(
        &self,
        request: Request<pb::FlamegraphRequest>,
    ) -> Result<(Window, Vec<vigil_storage::StackSample>), Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let r = request.into_inner();
        let window = self.window(r.window.as_ref())?;
        let query = signals::profile_query(
            &r.application,
            &r.profile_type,
            &r.resource,
            window.start_ms,
            window.end_ms,
        );
        let stacks = self
            .store
            .merge_profiles(&project, &query)
            .await
            .map_err(|e| e.to_status())?;
        Ok((window, stacks))
    }

    async fn model(&self, project: &str, window: Option<&pb::TimeWindow>) -> Result<Model, Status> {
        let window = self.window(window)?;
        Model::load(&*self.store, project, window, &self.model_limits)
            .await
            .map_err(query_status)
    }

    #[allow(clippy::result_large_err)]
    fn since(&self, lookback_ms: i64) -> Result<i64, Status> {
        if lookback_ms < 0 {
            return Err(Status::invalid_argument("lookback_ms must not be negative"));
        }
        let lookback = if lookback_ms == 0 {
            millis(self.default_lookback)
        } else {
            lookback_ms.min(millis(self.max_range))
        };
        Ok(now_ms().saturating_sub(lookback))
    }

    async fn latest(
        &self,
        project: &str,
        selector: SeriesSelector,
        since: i64,
    ) -> Result<Vec<SeriesData>, Status> {
        self.store
            .latest(project, &selector, since)
            .await
            .map_err(|e| e.to_status())
    }
}

fn label<'a>(series: &'a SeriesData, name: &str) -> &'a str {
    series.labels.get(name).map_or("", String::as_str)
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn list_hosts(
        &self,
        request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let request = request.into_inner();
        let since = self.since(request.lookback_ms)?;
        let mut hosts: BTreeMap<(String, String), Host> = BTreeMap::new();
        for metric in [
            names::HOST_CPU_USAGE_RATIO,
            names::HOST_CPU_CORES,
            names::HOST_MEMORY_TOTAL_BYTES,
            names::HOST_MEMORY_AVAILABLE_BYTES,
            names::HOST_LOAD1,
        ] {
            for series in self
                .latest(&project, SeriesSelector::metric(metric), since)
                .await?
            {
                let Some(sample) = series.samples.last() else {
                    continue;
                };
                let cluster = label(&series, names::LABEL_CLUSTER).to_owned();
                let node = label(&series, names::LABEL_NODE).to_owned();
                if node.is_empty() {
                    continue;
                }
                let host = hosts
                    .entry((cluster.clone(), node.clone()))
                    .or_insert_with(|| Host {
                        cluster,
                        node,
                        ..Host::default()
                    });
                host.last_seen_ms = host.last_seen_ms.max(sample.timestamp_ms);
                let slot = match metric {
                    names::HOST_CPU_USAGE_RATIO => &mut host.cpu_usage_ratio,
                    names::HOST_CPU_CORES => &mut host.cpu_cores,
                    names::HOST_MEMORY_TOTAL_BYTES => &mut host.memory_total_bytes,
                    names::HOST_MEMORY_AVAILABLE_BYTES => &mut host.memory_available_bytes,
                    _ => &mut host.load1,
                };
                *slot = Some(sample.value);
            }
        }
        let hosts = hosts
            .into_values()
            .map(|mut host| {
                if let (Some(total), Some(available)) =
                    (host.memory_total_bytes, host.memory_available_bytes)
                    && total > 0.0
                {
                    host.memory_usage_ratio = Some(((total - available) / total).clamp(0.0, 1.0));
                }
                host
            })
            .collect();
        Ok(Response::new(ListHostsResponse { hosts }))
    }

    async fn list_processes(
        &self,
        request: Request<ListProcessesRequest>,
    ) -> Result<Response<ListProcessesResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let request = request.into_inner();
        if request.node.is_empty() {
            return Err(Status::invalid_argument("node is required"));
        }
        let since = self.since(request.lookback_ms)?;
        let mut processes: HashMap<u32, Process> = HashMap::new();
        for metric in [
            names::PROCESS_CPU_USAGE_CORES,
            names::PROCESS_MEMORY_RSS_BYTES,
        ] {
            let selector = SeriesSelector::metric(metric)
                .with(Matcher::equal(names::LABEL_NODE, &request.node));
            for series in self.latest(&project, selector, since).await? {
                let (Some(sample), Ok(pid)) = (
                    series.samples.last(),
                    label(&series, names::LABEL_PID).parse::<u32>(),
                ) else {
                    continue;
                };
                let process = processes.entry(pid).or_insert_with(|| Process {
                    pid,
                    ..Process::default()
                });
                // A pid can be reused: keep the name of the newest series.
                if sample.timestamp_ms >= process.last_seen_ms {
                    process.name = label(&series, names::LABEL_PROCESS).to_owned();
                    process.last_seen_ms = sample.timestamp_ms;
                }
                if metric == names::PROCESS_CPU_USAGE_CORES {
                    process.cpu_usage_cores = Some(sample.value);
                } else {
                    process.memory_rss_bytes = Some(sample.value);
                }
            }
        }
        let mut processes: Vec<Process> = processes.into_values().collect();
        processes.sort_by(|a, b| {
            let key = |p: &Process| {
                (
                    p.cpu_usage_cores.unwrap_or(0.0),
                    p.memory_rss_bytes.unwrap_or(0.0),
                )
            };
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.pid.cmp(&b.pid))
        });
        if request.limit > 0 {
            processes.truncate(request.limit as usize);
        }
        Ok(Response::new(ListProcessesResponse { processes }))
    }

    async fn query_range(
        &self,
        request: Request<QueryRangeRequest>,
    ) -> Result<Response<QueryRangeResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let request = request.into_inner();
        if !is_valid_metric_name(&request.metric) {
            return Err(Status::invalid_argument(format!(
                "metric {:?} is not a valid metric name",
                request.metric
            )));
        }
        if request.end_ms < request.start_ms {
            return Err(Status::invalid_argument("end_ms is before start_ms"));
        }
        if request.end_ms.saturating_sub(request.start_ms) > millis(self.max_range) {
            return Err(Status::invalid_argument(format!(
                "time range is longer than the {} allowed",
                humantime_serde::re::humantime::format_duration(self.max_range)
            )));
        }
        let mut selector = SeriesSelector::metric(&request.metric);
        for m in request.matchers {
            let op = match Op::try_from(m.op) {
                Ok(Op::Equal) => MatcherOp::Equal,
                Ok(Op::NotEqual) => MatcherOp::NotEqual,
                Ok(Op::RegexMatch) => MatcherOp::RegexMatch,
                Ok(Op::RegexNoMatch) => MatcherOp::RegexNoMatch,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "matcher on {:?} has no valid op",
                        m.name
                    )));
                }
            };
            selector
                .matchers
                .push(Matcher::new(&m.name, op, &m.value).map_err(|e| e.to_status())?);
        }
        let found = self
            .store
            .select(&project, &selector, request.start_ms, request.end_ms)
            .await
            .map_err(|e| e.to_status())?;
        if found.len() > self.max_series {
            return Err(Status::resource_exhausted(format!(
                "{} series match; at most {} are returned: narrow the matchers",
                found.len(),
                self.max_series
            )));
        }
        let series = found
            .into_iter()
            .map(|s| pb::Series {
                metric: s.metric,
                labels: s
                    .labels
                    .into_iter()
                    .map(|(name, value)| pb::Label { name, value })
                    .collect(),
                samples: s
                    .samples
                    .into_iter()
                    .map(|p| pb::Sample {
                        timestamp_ms: p.timestamp_ms,
                        value: p.value,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(QueryRangeResponse { series }))
    }

    async fn query(
        &self,
        request: Request<pb::PromQueryRequest>,
    ) -> Result<Response<pb::PromQueryResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let r = request.into_inner();
        let expr = promql::parse(&r.query).map_err(|e| query_status(e.into()))?;
        if r.step_ms == 0 {
            let at = if r.end_ms != 0 {
                r.end_ms
            } else if r.start_ms != 0 {
                r.start_ms
            } else {
                now_ms()
            };
            let value = promql::instant(&*self.store, &project, &expr, at, &self.limits)
                .await
                .map_err(query_status)?;
            let mut out = pb::PromQueryResponse {
                result_type: value.type_name().into(),
                ..Default::default()
            };
            match value {
                Value::Scalar(v) => out.scalar = v,
                Value::String(s) => out.string_value = s,
                Value::Vector(elements) => {
                    out.series = elements
                        .iter()
                        .map(|e| {
                            series_pb(
                                &e.labels,
                                vec![pb::Sample {
                                    timestamp_ms: at,
                                    value: e.v,
                                }],
                            )
                        })
                        .collect();
                }
                Value::Matrix { series, .. } => {
                    out.series = series.iter().map(range_series_pb).collect();
                }
            }
            return Ok(Response::new(out));
        }
        if r.end_ms.saturating_sub(r.start_ms) > self.limits.max_range_ms {
            return Err(Status::invalid_argument(format!(
                "time range is longer than the {} allowed",
                humantime::format_duration(self.max_range)
            )));
        }
        let series = promql::range(
            &*self.store,
            &project,
            &expr,
            r.start_ms,
            r.end_ms,
            r.step_ms,
            &self.limits,
        )
        .await
        .map_err(query_status)?;
        Ok(Response::new(pb::PromQueryResponse {
            result_type: "matrix".into(),
            series: series.iter().map(range_series_pb).collect(),
            ..Default::default()
        }))
    }

    async fn list_applications(
        &self,
        request: Request<pb::ListApplicationsRequest>,
    ) -> Result<Response<pb::ListApplicationsResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let model = self
            .model(&project, request.get_ref().window.as_ref())
            .await?;
        let applications = model
            .applications()
            .into_iter()
            .map(|app| model.summary(app, &self.config.slo))
            .collect();
        Ok(Response::new(pb::ListApplicationsResponse { applications }))
    }

    async fn get_application(
        &self,
        request: Request<pb::GetApplicationRequest>,
    ) -> Result<Response<pb::GetApplicationResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let r = request.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let model = self.model(&project, r.window.as_ref()).await?;
        if !model.applications().contains(r.name.as_str()) {
            return Err(Status::not_found(format!(
                "no application {:?} was seen in the window",
                r.name
            )));
        }
        Ok(Response::new(model.application(&r.name, &self.config.slo)))
    }

    async fn inspect_applications(
        &self,
        request: Request<pb::InspectApplicationsRequest>,
    ) -> Result<Response<pb::InspectApplicationsResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let window = self.window(request.get_ref().window.as_ref())?;
        let model = Model::load(&*self.store, &project, window, &self.model_limits)
            .await
            .map_err(query_status)?;
        Ok(Response::new(pb::InspectApplicationsResponse {
            applications: model.inspect(&self.config.slo),
            start_ms: window.start_ms,
            end_ms: window.end_ms,
        }))
    }

    async fn service_map(
        &self,
        request: Request<pb::ServiceMapRequest>,
    ) -> Result<Response<pb::ServiceMapResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let model = self
            .model(&project, request.get_ref().window.as_ref())
            .await?;
        Ok(Response::new(model.service_map(&self.config.slo)))
    }

    async fn search_logs(
        &self,
        request: Request<pb::SearchLogsRequest>,
    ) -> Result<Response<pb::SearchLogsResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let r = request.into_inner();
        let window = self.window(r.window.as_ref())?;
        let query = signals::log_query(
            &r,
            window.start_ms,
            window.end_ms,
            self.config.max_log_records,
        )?;
        let page = self
            .store
            .search_logs(&project, &query)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::SearchLogsResponse {
            records: page.entries.iter().map(signals::log_record_pb).collect(),
            next_cursor: page
                .next
                .as_ref()
                .map(signals::encode_cursor)
                .unwrap_or_default(),
        }))
    }

    async fn log_patterns(
        &self,
        request: Request<pb::SearchLogsRequest>,
    ) -> Result<Response<pb::LogPatternsResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let mut r = request.into_inner();
        r.limit = 0;
        let window = self.window(r.window.as_ref())?;
        let mut query = signals::log_query(
            &r,
            window.start_ms,
            window.end_ms,
            self.config.max_log_records,
        )?;
        query.limit = self.config.max_log_records;
        let mut entries = Vec::new();
        let truncated = loop {
            let page = self
                .store
                .search_logs(&project, &query)
                .await
                .map_err(|e| e.to_status())?;
            entries.extend(page.entries);
            match page.next {
                Some(next) if entries.len() < self.config.max_pattern_scan => {
                    query.after = Some(next)
                }
                Some(_) => break true,
                None => break false,
            }
        };
        Ok(Response::new(pb::LogPatternsResponse {
            patterns: signals::patterns(&entries),
            records: entries.len() as u64,
            truncated,
        }))
    }

    async fn get_trace(
        &self,
        request: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::GetTraceResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let id = signals::trace_id(&request.get_ref().trace_id)?;
        let spans = self
            .store
            .trace(&project, id)
            .await
            .map_err(|e| e.to_status())?;
        if spans.is_empty() {
            return Err(Status::not_found(format!(
                "no trace {} is stored",
                request.get_ref().trace_id
            )));
        }
        Ok(Response::new(signals::waterfall(spans)))
    }

    async fn search_traces(
        &self,
        request: Request<pb::SearchTracesRequest>,
    ) -> Result<Response<pb::SearchTracesResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let r = request.into_inner();
        let window = self.window(r.window.as_ref())?;
        let query =
            signals::trace_query(&r, window.start_ms, window.end_ms, self.config.max_spans)?;
        let spans = self
            .store
            .search_spans(&project, &query)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::SearchTracesResponse {
            spans: spans.iter().map(signals::span_summary_pb).collect(),
        }))
    }

    async fn flamegraph(
        &self,
        request: Request<pb::FlamegraphRequest>,
    ) -> Result<Response<pb::FlamegraphResponse>, Status> {
        let (_, stacks) = self.merged_stacks(request).await?;
        Ok(Response::new(pb::FlamegraphResponse {
            root: Some(signals::flame_tree(&stacks)),
            stacks: stacks.len() as u64,
        }))
    }

    async fn flamegraph_diff(
        &self,
        request: Request<pb::FlamegraphDiffRequest>,
    ) -> Result<Response<pb::FlamegraphDiffResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let r = request.into_inner();
        let (Some(baseline), Some(comparison)) = (r.baseline.as_ref(), r.comparison.as_ref())
        else {
            return Err(Status::invalid_argument(
                "baseline and comparison windows are required",
            ));
        };
        let mut merged = Vec::new();
        for w in [baseline, comparison] {
            let window = self.window(Some(w))?;
            let query = signals::profile_query(
                &r.application,
                &r.profile_type,
                &[],
                window.start_ms,
                window.end_ms,
            );
            merged.push(
                self.store
                    .merge_profiles(&project, &query)
                    .await
                    .map_err(|e| e.to_status())?,
            );
        }
        Ok(Response::new(signals::diff_tree(&merged[0], &merged[1])))
    }

    async fn export_pprof(
        &self,
        request: Request<pb::FlamegraphRequest>,
    ) -> Result<Response<pb::ExportPprofResponse>, Status> {
        let (window, stacks) = self.merged_stacks(request).await?;
        let pprof_gzip = signals::pprof(&stacks, window.start_ms, window.end_ms)
            .map_err(|e| Status::internal(format!("cannot write the profile: {e}")))?;
        Ok(Response::new(pb::ExportPprofResponse { pprof_gzip }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project)?;
        let r = request.into_inner();
        if r.limit as usize > self.config.max_log_records {
            return Err(Status::invalid_argument(format!(
                "limit {} is over the {} events one call may return",
                r.limit, self.config.max_log_records
            )));
        }
        let window = self.window(r.window.as_ref())?;
        let events = self
            .store
            .list_events(
                &project,
                &signals::event_query(&r, window.start_ms, window.end_ms),
            )
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.iter().map(signals::event_pb).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_storage::{Labels, MetricBatch, Sample, SeriesWrite, redb::RedbStore};

    type Point<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

    /// A request as the interceptor passes it on for an API key of "p".
    fn authed<T>(message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.extensions_mut().insert(Project("p".into()));
        request
    }

    async fn api_with(series: Vec<Point<'_>>) -> (QueryApi, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(&dir.path().join("t.redb")).unwrap());
        let now = now_ms();
        let batch = MetricBatch {
            project: "p".into(),
            batch_id: "b".into(),
            series: series
                .into_iter()
                .map(|(metric, labels, value)| SeriesWrite {
                    metric: metric.into(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<Labels>(),
                    samples: vec![Sample {
                        timestamp_ms: now,
                        value,
                    }],
                })
                .collect(),
        };
        store.write_metrics(batch).await.unwrap();
        let rate = Arc::new(ProjectRate::new(1000, 1000));
        (QueryApi::new(store, &QueryConfig::default(), rate), dir)
    }

    #[tokio::test]
    async fn requests_over_the_project_rate_are_refused() {
        let (mut api, _dir) = api_with(vec![]).await;
        api.rate = Arc::new(ProjectRate::new(1, 2));
        let call = || api.list_hosts(authed(ListHostsRequest::default()));
        call().await.expect("first");
        call().await.expect("second, within the burst");
        let err = call().await.expect_err("third");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("query.rate_per_project"), "{err:?}");
    }

    #[tokio::test]
    async fn hosts_join_their_figures() {
        let (api, _dir) = api_with(vec![
            (names::HOST_CPU_USAGE_RATIO, &[("node", "a")], 0.25),
            (names::HOST_MEMORY_TOTAL_BYTES, &[("node", "a")], 1000.0),
            (names::HOST_MEMORY_AVAILABLE_BYTES, &[("node", "a")], 250.0),
            (names::HOST_CPU_USAGE_RATIO, &[("node", "b")], 0.5),
        ])
        .await;
        let hosts = api
            .list_hosts(authed(ListHostsRequest {
                project: "p".into(),
                lookback_ms: 0,
            }))
            .await
            .unwrap()
            .into_inner()
            .hosts;
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].node, "a");
        assert_eq!(hosts[0].cpu_usage_ratio, Some(0.25));
        assert_eq!(hosts[0].memory_usage_ratio, Some(0.75));
        assert_eq!(hosts[1].memory_usage_ratio, None);
    }

    #[tokio::test]
    async fn processes_sorted_by_cpu_and_limited() {
        let (api, _dir) = api_with(vec![
            (
                names::PROCESS_CPU_USAGE_CORES,
                &[("node", "a"), ("pid", "1"), ("process", "init")],
                0.01,
            ),
            (
                names::PROCESS_CPU_USAGE_CORES,
                &[("node", "a"), ("pid", "2"), ("process", "busy")],
                1.5,
            ),
            (
                names::PROCESS_MEMORY_RSS_BYTES,
                &[("node", "a"), ("pid", "2"), ("process", "busy")],
                4096.0,
            ),
            (
                names::PROCESS_CPU_USAGE_CORES,
                &[("node", "b"), ("pid", "3"), ("process", "other")],
                9.0,
            ),
        ])
        .await;
        let processes = api
            .list_processes(authed(ListProcessesRequest {
                project: "p".into(),
                node: "a".into(),
                lookback_ms: 0,
                limit: 1,
            }))
            .await
            .unwrap()
            .into_inner()
            .processes;
        assert_eq!(processes.len(), 1);
        assert_eq!(processes[0].name, "busy");
        assert_eq!(processes[0].memory_rss_bytes, Some(4096.0));
    }

    #[tokio::test]
    async fn bad_requests_say_why() {
        let (api, _dir) = api_with(vec![]).await;
        let err = api
            .list_hosts(authed(ListHostsRequest {
                project: "other".into(),
                lookback_ms: 0,
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let err = api
            .list_hosts(Request::new(ListHostsRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = api
            .query_range(authed(QueryRangeRequest {
                project: "p".into(),
                metric: "m".into(),
                matchers: vec![],
                start_ms: 10,
                end_ms: 5,
            }))
            .await
            .unwrap_err();
        assert!(err.message().contains("before"), "{err:?}");
        let err = api
            .query_range(authed(QueryRangeRequest {
                project: "p".into(),
                metric: "m".into(),
                matchers: vec![pb::LabelMatcher {
                    name: "x".into(),
                    op: 0,
                    value: "y".into(),
                }],
                start_ms: 0,
                end_ms: 5,
            }))
            .await
            .unwrap_err();
        assert!(err.message().contains("op"), "{err:?}");
    }
}
