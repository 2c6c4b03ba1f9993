//! OTLP/gRPC: the collector's Trace, Metrics and Logs services on the
//! ingest gRPC server (4317), gzip accepted.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use prost::Message;
use tonic::{Request, Response, Status, codec::CompressionEncoding};
use vigil_runtime::auth::Project;

use super::service::{OtlpIngest, Partial};
use crate::gate::Protocol;

#[derive(Clone)]
pub struct OtlpGrpc {
    ingest: Arc<OtlpIngest>,
}

#[allow(clippy::result_large_err)]
fn project<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<Project>()
        .map(|p| p.0.clone())
        .ok_or_else(|| Status::unauthenticated("no project: the API key check did not run"))
}

fn partial<P>(p: Partial, make: impl FnOnce(i64, String) -> P) -> Option<P> {
    (p.rejected > 0).then(|| make(p.rejected, p.message))
}

impl OtlpGrpc {
    pub fn new(ingest: Arc<OtlpIngest>) -> Self {
        Self { ingest }
    }

    pub fn traces(&self, max_bytes: usize) -> TraceServiceServer<Self> {
        TraceServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_bytes)
    }

    pub fn metrics(&self, max_bytes: usize) -> MetricsServiceServer<Self> {
        MetricsServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_bytes)
    }

    pub fn logs(&self, max_bytes: usize) -> LogsServiceServer<Self> {
        LogsServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_bytes)
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let project = project(&request)?;
        let request = request.into_inner();
        let encoded = request.encode_to_vec();
        let _memory = self
            .ingest
            .reserve(encoded.len())
            .await
            .map_err(|r| r.to_status())?;
        let p = self
            .ingest
            .traces(Protocol::OtlpGrpc, &project, &request, &encoded)
            .await
            .map_err(|r| r.to_status())?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: partial(p, |rejected_spans, error_message| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let project = project(&request)?;
        let request = request.into_inner();
        let encoded = request.encode_to_vec();
        let _memory = self
            .ingest
            .reserve(encoded.len())
            .await
            .map_err(|r| r.to_status())?;
        let p = self
            .ingest
            .metrics(Protocol::OtlpGrpc, &project, &request, &encoded)
            .await
            .map_err(|r| r.to_status())?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: partial(p, |rejected_data_points, error_message| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let project = project(&request)?;
        let request = request.into_inner();
        let encoded = request.encode_to_vec();
        let _memory = self
            .ingest
            .reserve(encoded.len())
            .await
            .map_err(|r| r.to_status())?;
        let p = self
            .ingest
            .logs(Protocol::OtlpGrpc, &project, &request, &encoded)
            .await
            .map_err(|r| r.to_status())?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: partial(p, |rejected_log_records, error_message| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }))
    }
}
