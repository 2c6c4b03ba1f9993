//! `vigil.telemetry.v1.TelemetryService/Push`: agent batches into the store.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vigil_proto::{
    names,
    telemetry::v1::{
        PushRequest, PushResponse, Resource, telemetry_service_server::TelemetryService,
    },
};
use vigil_runtime::auth::Project;
use vigil_storage::{Labels, MetricBatch, Sample, SeriesWrite, TelemetryStore, WriteOutcome};

use crate::{
    config::LimitsConfig,
    gate::{Gate, Protocol, Refusal, Signal, TimeWindow, at_most},
};

/// Longest batch id accepted, in bytes.
pub const MAX_BATCH_ID_BYTES: usize = 128;

pub struct PushService {
    store: Arc<dyn TelemetryStore>,
    gate: Arc<Gate>,
}

impl PushService {
    pub fn new(store: Arc<dyn TelemetryStore>, gate: Arc<Gate>) -> Self {
        Self { store, gate }
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
        let batch = to_batch(
            &self.gate.limits,
            self.gate.window(),
            project.0.clone(),
            request.into_inner(),
        )
        .map_err(|r| self.gate.refused(protocol, r, 1).to_status())?;
        let batch_id = batch.batch_id.clone();
        let samples: usize = batch.series.iter().map(|s| s.samples.len()).sum();
        let outcome = self
            .gate
            .write(
                protocol,
                Signal::Metrics,
                &project.0,
                samples as u64,
                self.store.write_metrics(batch),
            )
            .await
            .map_err(|r| r.to_status())?;
        match outcome {
            WriteOutcome::Stored { records: samples } => {
                tracing::debug!(project = %project.0, batch_id, samples, "batch stored");
                Ok(Response::new(PushResponse {
                    duplicate: false,
                    samples_stored: samples,
                }))
            }
            WriteOutcome::Duplicate => {
                tracing::debug!(project = %project.0, batch_id, "duplicate batch acknowledged");
                Ok(Response::new(PushResponse {
                    duplicate: true,
                    samples_stored: 0,
                }))
            }
        }
    }
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
            metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    node: "web-1".into(),
                    ..Resource::default()
                }),
                series,
            }],
        });
        request.extensions_mut().insert(Project("p".into()));
        request
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
