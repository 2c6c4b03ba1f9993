//! `vigil.telemetry.v1.TelemetryService/Push`: agent batches into the store.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vigil_proto::{
    names,
    telemetry::v1::{
        PushRequest, PushResponse, Resource, ResourceLogs, ResourceSpans, SpanKind as PbSpanKind,
        telemetry_service_server::TelemetryService,
    },
};
use vigil_runtime::auth::Project;
use vigil_storage::{
    Event, EventBatch, Labels, LogBatch, LogRecord, MetricBatch, Sample, SeriesWrite, Span,
    SpanBatch, TelemetryStore, WriteOutcome,
    profile::{Profile, ProfileBatch, StackSample},
    trace::{SpanKind, StatusCode},
};

use crate::{
    config::LimitsConfig,
    gate::{Gate, Protocol, Refusal, Signal, TimeWindow, at_most},
};

/// Longest batch id accepted, in bytes.
pub const MAX_BATCH_ID_BYTES: usize = 128;

pub struct PushService {
    store: Arc<dyn TelemetryStore>,
    gate: Arc<Gate>,
    containers: crate::containers::Containers,
}

impl PushService {
    pub fn new(store: Arc<dyn TelemetryStore>, gate: Arc<Gate>) -> Self {
        Self {
            store,
            gate,
            containers: Default::default(),
        }
    }
}

/// Turns a request into a store batch, refusing what is malformed or over
/// the limits with a message naming the problem. Agent batches are refused
/// whole: the agent keeps them and the operator sees why.
pub fn to_batch(
    limits: &LimitsConfig,
    window: TimeWindow,
    project: String,
    request: PushRequest,
) -> Result<MetricBatch, Refusal> {
    let id = &request.batch_id;
    if id.is_empty()
        || id.len() > MAX_BATCH_ID_BYTES
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(Refusal::invalid(
            "invalid_batch_id",
            format!("batch_id must be 1-{MAX_BATCH_ID_BYTES} bytes of [A-Za-z0-9._:-]"),
        ));
    }
    let series_count: usize = request.metrics.iter().map(|m| m.series.len()).sum();
    let sample_count: usize = request
        .metrics
        .iter()
        .flat_map(|m| &m.series)
        .map(|s| s.samples.len())
        .sum();
    at_most(
        "series",
        series_count,
        limits.max_series_per_request,
        "max_series_per_request",
    )?;
    at_most(
        "samples",
        sample_count,
        limits.max_samples_per_request,
        "max_samples_per_request",
    )?;
    let mut series = Vec::with_capacity(series_count);
    for resource_metrics in request.metrics {
        let resource = resource_labels(resource_metrics.resource.as_ref());
        for ts in resource_metrics.series {
            let mut labels: Labels = resource.clone();
            for label in ts.labels {
                if label.value.is_empty() {
                    continue; // Prometheus: an empty label is an absent label.
                }
                if resource.contains_key(&label.name) {
                    return Err(Refusal::invalid(
                        "invalid_series",
                        format!(
                            "series {}: label {:?} is a resource attribute; set it on the resource",
                            ts.name, label.name
                        ),
                    ));
                }
                if labels.insert(label.name.clone(), label.value).is_some() {
                    return Err(Refusal::invalid(
                        "invalid_series",
                        format!("series {}: label {:?} is given twice", ts.name, label.name),
                    ));
                }
            }
            if labels.len() + 1 > limits.max_labels_per_series {
                return Err(Refusal::invalid(
                    "too_many_labels",
                    format!(
                        "series {} has {} labels; at most {} are accepted (limits.max_labels_per_series)",
                        ts.name,
                        labels.len() + 1,
                        limits.max_labels_per_series
                    ),
                ));
            }
            for s in &ts.samples {
                window.check_ms(s.timestamp_ms)?;
            }
            series.push(SeriesWrite {
                metric: ts.name,
                labels,
                samples: ts
                    .samples
                    .into_iter()
                    .map(|s| Sample {
                        timestamp_ms: s.timestamp_ms,
                        value: s.value,
                    })
                    .collect(),
            });
        }
    }
    for s in &series {
        s.validate()
            .map_err(|e| Refusal::invalid("invalid_series", e.to_string()))?;
    }
    Ok(MetricBatch {
        project,
        batch_id: request.batch_id,
        series,
    })
}

/// The agent's spans as a store batch (None without spans), refused whole
/// when one breaks a rule, like the rest of an agent batch.
pub fn to_spans(
    limits: &LimitsConfig,
    window: TimeWindow,
    project: &str,
    batch_id: &str,
    resource_spans: Vec<ResourceSpans>,
) -> Result<Option<SpanBatch>, Refusal> {
    let count: usize = resource_spans.iter().map(|r| r.spans.len()).sum();
    if count == 0 {
        return Ok(None);
    }
    at_most(
        "spans",
        count,
        limits.max_spans_per_request,
        "max_spans_per_request",
    )?;
    let invalid = |what: String| Refusal::invalid("invalid_span", what);
    let mut spans = Vec::with_capacity(count);
    for rs in resource_spans {
        let mut resource = resource_labels(rs.resource.as_ref());
        for l in rs.resource_attributes {
            resource.insert(l.name, l.value);
        }
        for span in rs.spans {
            let trace_id: [u8; 16] = span.trace_id.as_slice().try_into().map_err(|_| {
                invalid(format!(
                    "trace_id has {} bytes, not 16",
                    span.trace_id.len()
                ))
            })?;
            let span_id: [u8; 8] =
                span.span_id.as_slice().try_into().map_err(|_| {
                    invalid(format!("span_id has {} bytes, not 8", span.span_id.len()))
                })?;
            let parent_span_id: [u8; 8] = match span.parent_span_id.len() {
                0 => [0; 8],
                _ => span.parent_span_id.as_slice().try_into().map_err(|_| {
                    invalid(format!(
                        "parent_span_id has {} bytes, not 8 or 0",
                        span.parent_span_id.len()
                    ))
                })?,
            };
            window.check_ns(span.start_time_unix_nano)?;
            let kind = match PbSpanKind::try_from(span.kind) {
                Ok(PbSpanKind::Server) => SpanKind::Server,
                Ok(PbSpanKind::Client) => SpanKind::Client,
                Ok(PbSpanKind::Unspecified) => SpanKind::Unspecified,
                Err(_) => return Err(invalid(format!("span kind {} is unknown", span.kind))),
            };
            let span = Span {
                trace_id,
                span_id,
                parent_span_id,
                name: span.name,
                kind,
                start_ns: span.start_time_unix_nano,
                end_ns: span.end_time_unix_nano,
                status: if span.error {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                },
                status_message: String::new(),
                service: rs.service.clone(),
                resource: resource.clone(),
                attributes: span
                    .attributes
                    .into_iter()
                    .map(|l| (l.name, l.value))
                    .collect(),
                events: Vec::new(),
                links: Vec::new(),
            };
            span.validate().map_err(|e| invalid(e.to_string()))?;
            spans.push(span);
        }
    }
    Ok(Some(SpanBatch {
        project: project.to_owned(),
        batch_id: batch_id.to_owned(),
        spans,
    }))
}

/// The agent's log records as a store batch (None without records),
/// refused whole when one breaks a rule.
pub fn to_logs(
    limits: &LimitsConfig,
    window: TimeWindow,
    project: &str,
    batch_id: &str,
    resource_logs: Vec<ResourceLogs>,
) -> Result<Option<LogBatch>, Refusal> {
    let count: usize = resource_logs.iter().map(|r| r.records.len()).sum();
    if count == 0 {
        return Ok(None);
    }
    at_most(
        "log records",
        count,
        limits.max_logs_per_request,
        "max_logs_per_request",
    )?;
    let invalid = |what: String| Refusal::invalid("invalid_log", what);
    let mut records = Vec::with_capacity(count);
    for rl in resource_logs {
        let mut resource = resource_labels(rl.resource.as_ref());
        for l in rl.resource_attributes {
            resource.insert(l.name, l.value);
        }
        for r in rl.records {
            window.check_ns(r.time_unix_nano)?;
            let trace_id: [u8; 16] = match r.trace_id.len() {
                0 => [0; 16],
                _ => r.trace_id.as_slice().try_into().map_err(|_| {
                    invalid(format!(
                        "trace_id has {} bytes, not 16 or 0",
                        r.trace_id.len()
                    ))
                })?,
            };
            let span_id: [u8; 8] = match r.span_id.len() {
                0 => [0; 8],
                _ => r.span_id.as_slice().try_into().map_err(|_| {
                    invalid(format!("span_id has {} bytes, not 8 or 0", r.span_id.len()))
                })?,
            };
            let record = LogRecord {
                time_ns: r.time_unix_nano,
                severity: u8::try_from(r.severity)
                    .map_err(|_| invalid(format!("severity {} is above 24", r.severity)))?,
                severity_text: r.severity_text,
                body: r.body,
                service: rl.service.clone(),
                resource: resource.clone(),
                attributes: r
                    .attributes
                    .into_iter()
                    .map(|l| (l.name, l.value))
                    .collect(),
                trace_id,
                span_id,
                pattern_id: r.pattern_id,
            };
            record.validate().map_err(|e| invalid(e.to_string()))?;
            records.push(record);
        }
    }
    Ok(Some(LogBatch {
        project: project.to_owned(),
        batch_id: batch_id.to_owned(),
        records,
    }))
}

/// The agent's profiles as a store batch (None without profiles), refused
/// whole when one breaks a rule.
pub fn to_profiles(
    window: TimeWindow,
    project: &str,
    batch_id: &str,
    profiles: Vec<vigil_proto::telemetry::v1::Profile>,
) -> Result<Option<ProfileBatch>, Refusal> {
    if profiles.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(profiles.len());
    for p in profiles {
        window.check_ns(p.time_unix_nano)?;
        let mut resource = resource_labels(p.resource.as_ref());
        for l in p.resource_attributes {
            resource.insert(l.name, l.value);
        }
        let profile = Profile {
            time_ns: p.time_unix_nano,
            duration_ns: p.duration_nanos,
            profile_type: p.profile_type,
            service: p.service,
            resource,
            stacks: p
                .stacks
                .into_iter()
                .map(|s| StackSample {
                    frames: s.frames,
                    value: s.value,
                })
                .collect(),
        };
        profile
            .validate()
            .map_err(|e| Refusal::invalid("invalid_profile", e.to_string()))?;
        out.push(profile);
    }
    Ok(Some(ProfileBatch {
        project: project.to_owned(),
        batch_id: batch_id.to_owned(),
        profiles: out,
    }))
}

fn resource_labels(resource: Option<&Resource>) -> Labels {
    let mut labels = Labels::new();
    if let Some(r) = resource {
        for (name, value) in [
            (names::LABEL_CLUSTER, &r.cluster),
            (names::LABEL_NODE, &r.node),
            (names::LABEL_NAMESPACE, &r.namespace),
            (names::LABEL_APPLICATION, &r.application),
            (names::LABEL_CONTAINER, &r.container),
        ] {
            if !value.is_empty() {
                labels.insert(name.to_owned(), value.clone());
            }
        }
    }
    labels
}

#[tonic::async_trait]
impl TelemetryService for PushService {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let project = request
            .extensions()
            .get::<Project>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no project: the API key check did not run"))?;
        let protocol = Protocol::Agent;
        let _memory = self
            .gate
            .reserve(protocol, prost::Message::encoded_len(request.get_ref()))
            .await
            .map_err(|r| r.to_status())?;
        let mut request = request.into_inner();
        // Node agent records of a Kubernetes container get its application.
        self.containers.enrich(&project.0, &mut request);
        self.containers
            .refresh_if_due(self.store.clone(), &project.0);
        let resource_spans = std::mem::take(&mut request.spans);
        let resource_logs = std::mem::take(&mut request.logs);
        let profiles = std::mem::take(&mut request.profiles);
        let events = std::mem::take(&mut request.events);
        let batch = to_batch(
            &self.gate.limits,
            self.gate.window(),
            project.0.clone(),
            request,
        )
        .map_err(|r| self.gate.refused(protocol, r, 1).to_status())?;
        let batch_id = batch.batch_id.clone();
        let span_batch = to_spans(
            &self.gate.limits,
            self.gate.window(),
            &project.0,
            &batch_id,
            resource_spans,
        )
        .map_err(|r| self.gate.refused(protocol, r, 1).to_status())?;
        let log_batch = to_logs(
            &self.gate.limits,
            self.gate.window(),
            &project.0,
            &batch_id,
            resource_logs,
        )
        .map_err(|r| self.gate.refused(protocol, r, 1).to_status())?;
        let profile_batch = to_profiles(self.gate.window(), &project.0, &batch_id, profiles)
            .map_err(|r| self.gate.refused(protocol, r, 1).to_status())?;
        let event_batch = to_events(self.gate.window(), &project.0, &batch_id, events)
            .map_err(|r| self.gate.refused(protocol, r, 1).to_status())?;
        // Profiles, events, logs and spans first, metrics last: a retry
        // after any failure writes what is missing, and what was stored is
        // answered as a duplicate. None: that part was stored before.
        let p = &project.0;
        let profiles = match profile_batch {
            Some(b) => {
                let n = b.profiles.len();
                self.write(
                    protocol,
                    Signal::Profiles,
                    p,
                    n,
                    self.store.write_profiles(b),
                )
                .await?
            }
            None => None,
        };
        let events = match event_batch {
            Some(b) => {
                let n = b.events.len();
                self.write(protocol, Signal::Events, p, n, self.store.write_events(b))
                    .await?
            }
            None => None,
        };
        let logs = match log_batch {
            Some(b) => {
                let n = b.records.len();
                self.write(protocol, Signal::Logs, p, n, self.store.write_logs(b))
                    .await?
            }
            None => None,
        };
        let spans = match span_batch {
            Some(b) => {
                let n = b.spans.len();
                self.write(protocol, Signal::Traces, p, n, self.store.write_spans(b))
                    .await?
            }
            None => None,
        };
        let samples: usize = batch.series.iter().map(|s| s.samples.len()).sum();
        let metrics = self
            .write(
                protocol,
                Signal::Metrics,
                p,
                samples,
                self.store.write_metrics(batch),
            )
            .await?;
        let response = PushResponse {
            duplicate: [metrics, spans, logs, profiles, events]
                .iter()
                .all(Option::is_none),
            samples_stored: metrics.unwrap_or(0),
            spans_stored: spans.unwrap_or(0),
            logs_stored: logs.unwrap_or(0),
            profiles_stored: profiles.unwrap_or(0),
            events_stored: events.unwrap_or(0),
        };
        tracing::debug!(project = %project.0, batch_id, ?response, "batch handled");
        Ok(Response::new(response))
    }
}

impl PushService {
    /// Writes one part of a batch through the gate: the records stored, or
    /// None when the batch id was stored already.
    async fn write<F>(
        &self,
        protocol: Protocol,
        signal: Signal,
        project: &str,
        count: usize,
        write: F,
    ) -> Result<Option<u64>, Status>
    where
        F: Future<Output = Result<WriteOutcome, vigil_storage::StorageError>>,
    {
        match self
            .gate
            .write(protocol, signal, project, count as u64, write)
            .await
            .map_err(|r| r.to_status())?
        {
            WriteOutcome::Stored { records } => Ok(Some(records)),
            WriteOutcome::Duplicate => Ok(None),
        }
    }
}

/// The cluster agent's events as a store batch (None without events),
/// refused whole when one breaks a rule.
pub fn to_events(
    window: TimeWindow,
    project: &str,
    batch_id: &str,
    events: Vec<vigil_proto::telemetry::v1::KubeEvent>,
) -> Result<Option<EventBatch>, Refusal> {
    if events.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        window.check_ns(e.time_unix_nano)?;
        let mut resource = resource_labels(e.resource.as_ref());
        for l in e.resource_attributes {
            resource.insert(l.name, l.value);
        }
        let event = Event {
            time_ns: e.time_unix_nano,
            kind: e.kind,
            reason: e.reason,
            object: e.object,
            message: e.message,
            resource,
        };
        event
            .validate()
            .map_err(|e| Refusal::invalid("invalid_event", e.to_string()))?;
        out.push(event);
    }
    Ok(Some(EventBatch {
        project: project.to_owned(),
        batch_id: batch_id.to_owned(),
        events: out,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitsConfig;
    use vigil_proto::telemetry::v1::{self as pb, ResourceMetrics, TimeSeries};
    use vigil_runtime::Metrics;
    use vigil_storage::{SeriesSelector, redb::RedbStore};

    fn service(dir: &std::path::Path) -> (PushService, Arc<dyn TelemetryStore>) {
        let store: Arc<dyn TelemetryStore> =
            Arc::new(RedbStore::open(&dir.join("t.redb")).unwrap());
        let limits = LimitsConfig {
            max_series_per_request: 3,
            max_samples_per_request: 5,
            ..LimitsConfig::default()
        };
        let gate = Arc::new(Gate::new(limits, &Metrics::new("test")));
        (PushService::new(store.clone(), gate), store)
    }

    fn request(batch_id: &str, series: Vec<TimeSeries>) -> Request<PushRequest> {
        let mut request = Request::new(PushRequest {
            batch_id: batch_id.into(),
            agent: None,
            events: vec![],
            metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    node: "web-1".into(),
                    ..Resource::default()
                }),
                series,
            }],
            spans: vec![],
            logs: vec![],
            profiles: vec![],
        });
        request.extensions_mut().insert(Project("p".into()));
        request
    }

    fn span(trace: u8, id: u8, parent: &[u8]) -> pb::Span {
        let now = vigil_runtime::time::now_ms() * 1_000_000;
        pb::Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.to_vec(),
            name: "GET".into(),
            kind: pb::SpanKind::Server as i32,
            start_time_unix_nano: now - 5_000_000,
            end_time_unix_nano: now,
            error: true,
            attributes: vec![pb::Label {
                name: "http.response.status_code".into(),
                value: "503".into(),
            }],
        }
    }

    fn with_spans(mut r: Request<PushRequest>, spans: Vec<pb::Span>) -> Request<PushRequest> {
        r.get_mut().spans = vec![pb::ResourceSpans {
            resource: Some(Resource {
                node: "web-1".into(),
                ..Resource::default()
            }),
            service: "nginx".into(),
            resource_attributes: vec![pb::Label {
                name: "container_id".into(),
                value: "3f1c2a9b8e7d".into(),
            }],
            spans,
        }];
        r
    }

    #[tokio::test]
    async fn spans_are_stored_once_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store) = service(dir.path());
        // Spans and series in one batch: both stored, both once.
        let push = || {
            with_spans(
                request("s-1", vec![ts("host_load1", &[], &[0.5])]),
                vec![span(7, 1, &[9; 8]), span(7, 2, &[])],
            )
        };
        let response = svc.push(push()).await.unwrap().into_inner();
        assert_eq!(
            (
                response.spans_stored,
                response.samples_stored,
                response.duplicate
            ),
            (2, 1, false)
        );
        let again = svc.push(push()).await.unwrap().into_inner();
        assert_eq!(
            (again.spans_stored, again.samples_stored, again.duplicate),
            (0, 0, true)
        );
        let series = store
            .select("p", &SeriesSelector::metric("host_load1"), 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(series[0].samples.len(), 1);
        let trace = store.trace("p", [7; 16]).await.unwrap();
        assert_eq!(trace.len(), 2);
        let child = trace.iter().find(|s| s.span_id == [1; 8]).unwrap();
        assert_eq!(child.parent_span_id, [9; 8]);
        assert_eq!(child.service, "nginx");
        assert_eq!(child.kind, SpanKind::Server);
        assert_eq!(child.status, StatusCode::Error);
        assert_eq!(
            child.resource.get("node").map(String::as_str),
            Some("web-1")
        );
        assert_eq!(
            child.resource.get("container_id").map(String::as_str),
            Some("3f1c2a9b8e7d")
        );
        let root = trace.iter().find(|s| s.span_id == [2; 8]).unwrap();
        assert_eq!(root.parent_span_id, [0; 8]);

        let mut short = span(7, 3, &[]);
        short.trace_id.truncate(5);
        let mut odd_kind = span(7, 4, &[]);
        odd_kind.kind = 9;
        let mut old = span(7, 5, &[]);
        old.start_time_unix_nano = 1_000;
        for (bad, words) in [
            (short, "trace_id has 5 bytes"),
            (odd_kind, "span kind 9"),
            (old, "older than the accepted age"),
        ] {
            let status = svc
                .push(with_spans(request("s-2", vec![]), vec![bad]))
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(words), "{status:?}");
        }
    }

    fn ts(name: &str, labels: &[(&str, &str)], values: &[f64]) -> TimeSeries {
        TimeSeries {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(n, v)| pb::Label {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            samples: values
                .iter()
                .enumerate()
                .map(|(i, &value)| pb::Sample {
                    timestamp_ms: vigil_runtime::time::now_ms() - 60_000 + i as i64,
                    value,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn stores_with_resource_labels_and_dedups_retries() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store) = service(dir.path());
        let response = svc
            .push(request(
                "b-1",
                vec![ts("host_load1", &[("pid", "7")], &[0.5, 0.6])],
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.samples_stored, 2);
        assert!(!response.duplicate);
        let again = svc
            .push(request(
                "b-1",
                vec![ts("host_load1", &[("pid", "7")], &[0.5, 0.6])],
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(again.duplicate);
        let got = store
            .select("p", &SeriesSelector::metric("host_load1"), 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels.get("node").map(String::as_str), Some("web-1"));
        assert_eq!(got[0].labels.get("pid").map(String::as_str), Some("7"));
        assert_eq!(got[0].samples.len(), 2);
    }

    #[tokio::test]
    async fn bad_input_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, _) = service(dir.path());
        let mut old = ts("m", &[], &[1.0]);
        old.samples[0].timestamp_ms = 1000;
        let cases = [
            (
                request("", vec![]),
                tonic::Code::InvalidArgument,
                "batch_id",
            ),
            (
                request("a b", vec![]),
                tonic::Code::InvalidArgument,
                "batch_id",
            ),
            (
                request("x", vec![ts("m", &[], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]),
                tonic::Code::ResourceExhausted,
                "samples",
            ),
            (
                request(
                    "x",
                    vec![
                        ts("m", &[], &[]),
                        ts("m", &[], &[]),
                        ts("m", &[], &[]),
                        ts("m", &[], &[]),
                    ],
                ),
                tonic::Code::ResourceExhausted,
                "series",
            ),
            (
                request("x", vec![ts("m", &[], &[f64::NAN])]),
                tonic::Code::InvalidArgument,
                "finite",
            ),
            (
                request("x", vec![ts("bad-name", &[], &[1.0])]),
                tonic::Code::InvalidArgument,
                "bad-name",
            ),
            (
                request("x", vec![ts("m", &[("node", "other")], &[1.0])]),
                tonic::Code::InvalidArgument,
                "resource",
            ),
            (
                request("x", vec![old]),
                tonic::Code::InvalidArgument,
                "limits.max_age",
            ),
        ];
        for (req, code, needle) in cases {
            let status = svc.push(req).await.unwrap_err();
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(needle), "{status:?}");
        }
        let mut unauthenticated = request("x", vec![]);
        unauthenticated.extensions_mut().clear();
        assert_eq!(
            svc.push(unauthenticated).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
