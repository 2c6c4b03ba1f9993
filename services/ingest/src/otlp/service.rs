//! The transport-free half of OTLP ingest: limits, conversion, the write
//! through the [`Gate`], and the partial-success answer.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse},
    metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
    trace::v1::{ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse},
};
use vigil_storage::{LogBatch, MetricBatch, SpanBatch, StorageError, TelemetryStore, WriteOutcome};

use super::{Converted, convert_logs, convert_metrics, convert_traces};
use crate::gate::{Gate, Protocol, Refusal, Signal, at_most, content_batch_id};

/// What was refused of an accepted request: OTLP's `partial_success`.
#[derive(Debug, Default, PartialEq)]
pub struct Partial {
    pub rejected: i64,
    pub message: String,
}

pub struct OtlpIngest {
    store: Arc<dyn TelemetryStore>,
    gate: Arc<Gate>,
}

impl OtlpIngest {
    pub fn new(store: Arc<dyn TelemetryStore>, gate: Arc<Gate>) -> Self {
        Self { store, gate }
    }

    /// Memory for an OTLP/gRPC request of `bytes` while it is handled.
    pub async fn reserve(
        &self,
        bytes: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
        self.gate.reserve(Protocol::OtlpGrpc, bytes).await
    }

    fn too_many(
        &self,
        protocol: Protocol,
        what: &str,
        count: usize,
        limit: usize,
        field: &str,
    ) -> Result<(), Refusal> {
        at_most(what, count, limit, field).map_err(|r| self.gate.refused(protocol, r, count as u64))
    }

    /// Stores the converted items; the answer says what was refused. Nothing
    /// stored and something refused is an error, not a partial success.
    async fn finish<T, F, Fut>(
        &self,
        protocol: Protocol,
        signal: Signal,
        project: &str,
        converted: Converted<T>,
        write: F,
    ) -> Result<Partial, Refusal>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Result<WriteOutcome, StorageError>>,
    {
        let partial = Partial {
            rejected: converted.rejected as i64,
            message: converted.message(),
        };
        if let Some(refusal) = self.gate.refused_items(protocol, &converted)
            && converted.items.is_empty()
        {
            return Err(Refusal {
                message: partial.message,
                ..refusal
            });
        }
        if converted.items.is_empty() {
            return Ok(partial);
        }
        let items = converted.items.len() as u64;
        self.gate
            .write(protocol, signal, project, items, write(converted.items))
            .await?;
        Ok(partial)
    }

    pub async fn traces(
        &self,
        protocol: Protocol,
        project: &str,
        request: &ExportTraceServiceRequest,
        encoded: &[u8],
    ) -> Result<Partial, Refusal> {
        let count: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let limits = &self.gate.limits;
        self.too_many(
            protocol,
            "spans",
            count,
            limits.max_spans_per_request,
            "max_spans_per_request",
        )?;
        let converted = convert_traces(request, self.gate.window());
        let batch_id = content_batch_id(protocol, Signal::Traces, encoded);
        self.finish(protocol, Signal::Traces, project, converted, |spans| {
            self.store.write_spans(SpanBatch {
                project: project.to_owned(),
                batch_id,
                spans,
            })
        })
        .await
    }

    pub async fn logs(
        &self,
        protocol: Protocol,
        project: &str,
        request: &ExportLogsServiceRequest,
        encoded: &[u8],
    ) -> Result<Partial, Refusal> {
        let count: usize = request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        let limits = &self.gate.limits;
        self.too_many(
            protocol,
            "log records",
            count,
            limits.max_logs_per_request,
            "max_logs_per_request",
        )?;
        let now_ns = vigil_runtime::time::now_ms().saturating_mul(1_000_000);
        let converted = convert_logs(request, self.gate.window(), now_ns);
        let batch_id = content_batch_id(protocol, Signal::Logs, encoded);
        self.finish(protocol, Signal::Logs, project, converted, |records| {
            self.store.write_logs(LogBatch {
                project: project.to_owned(),
                batch_id,
                records,
            })
        })
        .await
    }

    pub async fn metrics(
        &self,
        protocol: Protocol,
        project: &str,
        request: &ExportMetricsServiceRequest,
        encoded: &[u8],
    ) -> Result<Partial, Refusal> {
        let limits = &self.gate.limits;
        let converted = convert_metrics(request, self.gate.window(), limits.max_labels_per_series);
        self.too_many(
            protocol,
            "samples (histogram buckets count one each)",
            converted.items.len(),
            limits.max_samples_per_request,
            "max_samples_per_request",
        )?;
        let batch_id = content_batch_id(protocol, Signal::Metrics, encoded);
        self.finish(protocol, Signal::Metrics, project, converted, |series| {
            self.store.write_metrics(MetricBatch {
                project: project.to_owned(),
                batch_id,
                series,
            })
        })
        .await
    }
}

/// An OTLP export request: how it is ingested and how it is answered, the
/// same over gRPC and HTTP.
pub trait OtlpSignal:
    prost::Message + Default + serde::de::DeserializeOwned + Send + Sync + 'static
{
    type Response: prost::Message + serde::Serialize + Send + 'static;

    fn ingest<'a>(
        ingest: &'a OtlpIngest,
        protocol: Protocol,
        project: &'a str,
        request: &'a Self,
        encoded: &'a [u8],
    ) -> impl Future<Output = Result<Partial, Refusal>> + Send + 'a;

    /// The answer: `partial_success` only when something was refused.
    fn respond(partial: Partial) -> Self::Response;
}

fn refused(p: Partial) -> Option<(i64, String)> {
    (p.rejected > 0).then_some((p.rejected, p.message))
}

impl OtlpSignal for ExportTraceServiceRequest {
    type Response = ExportTraceServiceResponse;

    fn ingest<'a>(
        ingest: &'a OtlpIngest,
        protocol: Protocol,
        project: &'a str,
        request: &'a Self,
        encoded: &'a [u8],
    ) -> impl Future<Output = Result<Partial, Refusal>> + Send + 'a {
        ingest.traces(protocol, project, request, encoded)
    }

    fn respond(partial: Partial) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: refused(partial).map(|(rejected_spans, error_message)| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }
    }
}

impl OtlpSignal for ExportMetricsServiceRequest {
    type Response = ExportMetricsServiceResponse;

    fn ingest<'a>(
        ingest: &'a OtlpIngest,
        protocol: Protocol,
        project: &'a str,
        request: &'a Self,
        encoded: &'a [u8],
    ) -> impl Future<Output = Result<Partial, Refusal>> + Send + 'a {
        ingest.metrics(protocol, project, request, encoded)
    }

    fn respond(partial: Partial) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: refused(partial).map(|(rejected_data_points, error_message)| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }
    }
}

impl OtlpSignal for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;

    fn ingest<'a>(
        ingest: &'a OtlpIngest,
        protocol: Protocol,
        project: &'a str,
        request: &'a Self,
        encoded: &'a [u8],
    ) -> impl Future<Output = Result<Partial, Refusal>> + Send + 'a {
        ingest.logs(protocol, project, request, encoded)
    }

    fn respond(partial: Partial) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: refused(partial).map(|(rejected_log_records, error_message)| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }
    }
}
