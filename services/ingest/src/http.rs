//! The ingest HTTP API (4318): OTLP/HTTP at `/v1/traces`, `/v1/metrics`,
//! `/v1/logs` (protobuf or JSON, optionally gzip) and Prometheus
//! remote_write at `/api/v1/write`. Every route needs a project API key
//! (`x-api-key` or `authorization: Bearer`).

use std::{io::Read, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
    routing::post,
};
use http::{HeaderMap, StatusCode, header};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};
use vigil_runtime::auth::ApiKeys;
use vigil_storage::{MetricBatch, TelemetryStore};

use crate::{
    gate::{Gate, Protocol, Refusal, Signal, at_most, content_batch_id},
    otlp::{OtlpIngest, OtlpSignal},
    remote_write,
};

pub struct HttpIngest {
    pub keys: ApiKeys,
    pub otlp: Arc<OtlpIngest>,
    pub gate: Arc<Gate>,
    pub store: Arc<dyn TelemetryStore>,
}

pub fn router(state: Arc<HttpIngest>) -> Router {
    Router::new()
        .route("/v1/traces", post(otlp::<ExportTraceServiceRequest>))
        .route("/v1/metrics", post(otlp::<ExportMetricsServiceRequest>))
        .route("/v1/logs", post(otlp::<ExportLogsServiceRequest>))
        .route("/api/v1/write", post(remote_write))
        .with_state(state)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

impl HttpIngest {
    fn project(&self, protocol: Protocol, headers: &HeaderMap) -> Result<String, Refusal> {
        self.keys
            .authenticate_headers(headers)
            .map(|p| p.0)
            .map_err(|e| {
                self.gate
                    .refused(protocol, Refusal::unauthenticated(e.to_string()), 1)
            })
    }

    /// The body, gunzipped when `content-encoding: gzip`, within the
    /// uncompressed limit.
    fn body(&self, headers: &HeaderMap, body: Bytes) -> Result<Bytes, Refusal> {
        let encoding = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity");
        let max = self.gate.limits.max_uncompressed_bytes;
        match encoding {
            "identity" | "" => Ok(body),
            "gzip" => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .take(max as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| {
                        Refusal::invalid("invalid_encoding", format!("body is not valid gzip: {e}"))
                    })?;
                if out.len() > max {
                    return Err(Refusal::too_large(
                        "request_too_large",
                        format!("body inflates beyond {max} bytes (limits.max_uncompressed_bytes)"),
                    ));
                }
                Ok(out.into())
            }
            other => Err(Refusal::invalid(
                "invalid_encoding",
                format!("content-encoding {other:?} is not supported: send gzip or none"),
            )),
        }
    }
}

fn otlp_format(headers: &HeaderMap) -> Result<Format, Refusal> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        other => Err(Refusal::invalid(
            "unsupported_content_type",
            format!(
                "content-type {other:?} is not OTLP: send application/x-protobuf or application/json"
            ),
        )),
    }
}

fn decode<T: Message + Default + DeserializeOwned>(
    format: Format,
    body: &[u8],
) -> Result<T, Refusal> {
    match format {
        Format::Protobuf => T::decode(body).map_err(|e| {
            Refusal::invalid(
                "invalid_encoding",
                format!("body is not a valid OTLP protobuf message: {e}"),
            )
        }),
        Format::Json => serde_json::from_slice(body).map_err(|e| {
            Refusal::invalid(
                "invalid_encoding",
                format!("body is not valid OTLP JSON: {e}"),
            )
        }),
    }
}

fn encode<T: Message + Serialize>(format: Format, message: &T) -> Response {
    match format {
        Format::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            message.encode_to_vec(),
        )
            .into_response(),
        Format::Json => {
            // Absent fields are left out, as the protobuf JSON mapping prints them.
            let mut value = serde_json::to_value(message).unwrap_or_default();
            strip_nulls(&mut value);
            (
                [(header::CONTENT_TYPE, "application/json")],
                value.to_string(),
            )
                .into_response()
        }
    }
}

fn strip_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// An OTLP/HTTP error: the status code, `Retry-After` when retryable, and a
/// `google.rpc.Status` body in the request's format.
fn otlp_error(format: Format, refusal: &Refusal) -> Response {
    let mut response = refusal.to_response();
    let status = tonic_types::Status {
        code: refusal.grpc_code() as i32,
        message: refusal.message.clone(),
        details: Vec::new(),
    };
    let (content_type, body) = match format {
        Format::Protobuf => ("application/x-protobuf", status.encode_to_vec()),
        Format::Json => (
            "application/json",
            serde_json::json!({ "code": status.code, "message": status.message })
                .to_string()
                .into_bytes(),
        ),
    };
    *response.body_mut() = axum::body::Body::from(body);
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// `POST /v1/{traces,metrics,logs}`: authenticates, decodes and ingests an
/// OTLP request; answers in the request's format.
async fn otlp<R: OtlpSignal>(
    State(state): State<Arc<HttpIngest>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let protocol = Protocol::OtlpHttp;
    let format = match otlp_format(&headers) {
        Ok(f) => f,
        Err(r) => return otlp_error(Format::Json, &state.gate.refused(protocol, r, 1)),
    };
    let result = async {
        let project = state.project(protocol, &headers)?;
        let body = state
            .body(&headers, body)
            .map_err(|r| state.gate.refused(protocol, r, 1))?;
        let _memory = state.gate.reserve(protocol, body.len()).await?;
        let request: R = decode(format, &body).map_err(|r| state.gate.refused(protocol, r, 1))?;
        R::ingest(&state.otlp, protocol, &project, &request, &body).await
    }
    .await;
    match result {
        Ok(partial) => encode(format, &R::respond(partial)),
        Err(refusal) => otlp_error(format, &refusal),
    }
}

/// `POST /api/v1/write`: 204 when everything was stored (stale markers are
/// not data), 400 naming what was refused after storing the rest.
async fn remote_write(
    State(state): State<Arc<HttpIngest>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match remote_write_inner(&state, &headers, body).await {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(refused)) => refused.to_response(),
        Err(refusal) => refusal.to_response(),
    }
}

async fn remote_write_inner(
    state: &HttpIngest,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Option<Refusal>, Refusal> {
    let protocol = Protocol::RemoteWrite;
    let gate = &state.gate;
    let project = state.project(protocol, headers)?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if encoding != "snappy" {
        return Err(gate.refused(
            protocol,
            Refusal::invalid(
                "invalid_encoding",
                format!(
                    "content-encoding {encoding:?}: remote_write 1.0 bodies are snappy-compressed"
                ),
            ),
            1,
        ));
    }
    let inflated = snap::raw::decompress_len(&body).unwrap_or(body.len());
    let _memory = gate
        .reserve(protocol, inflated.min(gate.limits.max_uncompressed_bytes))
        .await?;
    let raw = remote_write::decompress(&body, gate.limits.max_uncompressed_bytes)
        .map_err(|r| gate.refused(protocol, r, 1))?;
    let request = remote_write::WriteRequest::decode(&raw[..]).map_err(|e| {
        gate.refused(
            protocol,
            Refusal::invalid(
                "invalid_encoding",
                format!("body is not a prometheus.WriteRequest: {e}"),
            ),
            1,
        )
    })?;
    let limits = &gate.limits;
    let samples: usize = request.timeseries.iter().map(|t| t.samples.len()).sum();
    at_most(
        "series",
        request.timeseries.len(),
        limits.max_series_per_request,
        "max_series_per_request",
    )
    .and_then(|()| {
        at_most(
            "samples",
            samples,
            limits.max_samples_per_request,
            "max_samples_per_request",
        )
    })
    .map_err(|r| gate.refused(protocol, r, samples.max(1) as u64))?;
    let converted = remote_write::convert(request, gate.window(), limits.max_labels_per_series);
    if converted.stale > 0 {
        gate.skipped(protocol, "stale_or_non_finite", converted.stale);
    }
    let out = converted.converted;
    let refused = gate.refused_items(protocol, &out).map(|r| Refusal {
        message: format!(
            "{} samples refused, the rest stored; first: {}",
            out.rejected, r.message
        ),
        ..r
    });
    if !out.items.is_empty() {
        let stored: usize = out.items.iter().map(|s| s.samples.len()).sum();
        let batch = MetricBatch {
            project: project.clone(),
            batch_id: content_batch_id(protocol, Signal::Metrics, &raw),
            series: out.items,
        };
        gate.write(
            protocol,
            Signal::Metrics,
            &project,
            stored as u64,
            state.store.write_metrics(batch),
        )
        .await?;
    }
    Ok(refused)
}
