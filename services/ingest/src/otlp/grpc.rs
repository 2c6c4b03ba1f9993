//! OTLP/gRPC: the collector's Trace, Metrics and Logs services on the
//! ingest gRPC server (4317), gzip accepted.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use tonic::{Request, Response, Status, codec::CompressionEncoding};
use vigil_runtime::auth::Project;

use super::{OtlpSignal, service::OtlpIngest};
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

impl OtlpGrpc {
    /// One export, whatever the signal: the caller's project, the memory
    /// reservation, the ingest, the answer.
    async fn export<R: OtlpSignal>(
        &self,
        request: Request<R>,
    ) -> Result<Response<R::Response>, Status> {
        let project = project(&request)?;
        let request = request.into_inner();
        let encoded = request.encode_to_vec();
        let _memory = self
            .ingest
            .reserve(encoded.len())
            .await
            .map_err(|r| r.to_status())?;
        let partial = R::ingest(
            &self.ingest,
            Protocol::OtlpGrpc,
            &project,
            &request,
            &encoded,
        )
        .await
        .map_err(|r| r.to_status())?;
        Ok(Response::new(R::respond(partial)))
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        OtlpGrpc::export(self, request).await
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        OtlpGrpc::export(self, request).await
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        OtlpGrpc::export(self, request).await
    }
}
