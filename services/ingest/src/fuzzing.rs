//! Entry points for the fuzz targets in `fuzz/`: every decoder and
//! converter a sender's bytes reach, run the way the servers run them. Each
//! must return (refusing bad input) and never panic.

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;

use crate::{config::LimitsConfig, gate::TimeWindow, otlp, push, remote_write};

fn window() -> TimeWindow {
    TimeWindow {
        oldest_ms: 0,
        newest_ms: i64::MAX / 2,
    }
}

/// An agent `PushRequest` (protobuf) to a store batch.
pub fn agent_batch(data: &[u8]) {
    if let Ok(request) = vigil_proto::telemetry::v1::PushRequest::decode(data) {
        let _ = push::to_batch(&LimitsConfig::default(), window(), "p".into(), request);
    }
}

/// OTLP traces, metrics and logs requests, as protobuf and as JSON.
pub fn otlp(data: &[u8]) {
    let limits = LimitsConfig::default();
    if let Ok(r) = ExportTraceServiceRequest::decode(data) {
        let _ = otlp::convert_traces(&r, window());
    }
    if let Ok(r) = ExportMetricsServiceRequest::decode(data) {
        let _ = otlp::convert_metrics(&r, window(), limits.max_labels_per_series);
    }
    if let Ok(r) = ExportLogsServiceRequest::decode(data) {
        let _ = otlp::convert_logs(&r, window(), 1);
    }
    if let Ok(r) = serde_json::from_slice::<ExportTraceServiceRequest>(data) {
        let _ = otlp::convert_traces(&r, window());
    }
    if let Ok(r) = serde_json::from_slice::<ExportMetricsServiceRequest>(data) {
        let _ = otlp::convert_metrics(&r, window(), limits.max_labels_per_series);
    }
    if let Ok(r) = serde_json::from_slice::<ExportLogsServiceRequest>(data) {
        let _ = otlp::convert_logs(&r, window(), 1);
    }
}

/// A remote_write body: snappy, then protobuf, then series. The raw input
/// is also tried as an uncompressed WriteRequest, so the fuzzer reaches the
/// converter without having to find valid snappy first.
pub fn remote_write(data: &[u8]) {
    let limits = LimitsConfig::default();
    if let Ok(raw) = remote_write::decompress(data, limits.max_uncompressed_bytes)
        && let Ok(request) = remote_write::WriteRequest::decode(&raw[..])
    {
        let _ = remote_write::convert(request, window(), limits.max_labels_per_series);
    }
    if let Ok(request) = remote_write::WriteRequest::decode(data) {
        let _ = remote_write::convert(request, window(), limits.max_labels_per_series);
    }
}
