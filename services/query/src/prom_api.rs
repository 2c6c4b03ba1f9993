//! The Prometheus-compatible HTTP API (`/api/v1/query`, `query_range`,
//! `series`, `labels`, `label/<name>/values`, `metadata`), with Prometheus'
//! JSON shapes and error format, so that Grafana's Prometheus data source
//! and scripts read Vigil. Every call names its project with an API key.

use std::{collections::BTreeSet, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use promql_parser::parser::Expr;
use serde_json::{Value as Json, json};
use vigil_runtime::auth::ApiKeys;
use vigil_storage::{StorageError, TelemetryStore};

use crate::promql::{self, Labels, Limits, QueryError, RangeSeries, Value, format_value};

/// Shared state of the HTTP API.
pub struct PromApi {
    pub store: Arc<dyn TelemetryStore>,
    pub keys: ApiKeys,
    pub limits: Limits,
    /// Requests per project, shared with the gRPC API.
    pub rate: Arc<vigil_runtime::rate::ProjectRate>,
}

pub fn router(api: Arc<PromApi>) -> Router {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .with_state(api)
}

/// A Prometheus API error: HTTP status, `errorType` and message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn bad_data(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_data",
            message: message.into(),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let (status, kind) = match &e {
            QueryError::Parse(_) | QueryError::BadData(_) => (StatusCode::BAD_REQUEST, "bad_data"),
            QueryError::Execution(_) | QueryError::Limit(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "execution")
            }
            QueryError::Storage(StorageError::InvalidData(_)) => {
                (StatusCode::BAD_REQUEST, "bad_data")
            }
            QueryError::Storage(e) if e.is_transient() => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            QueryError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "query failed");
        }
        Self {
            status,
            kind,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.kind, "error": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

fn success(data: Json) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// Query-string and form parameters together (`match[]` repeats).
struct Params(Vec<(String, String)>);

impl Params {
    fn new(raw: Option<String>, headers: &HeaderMap, body: &Bytes) -> Self {
        let mut pairs: Vec<(String, String)> = raw
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Self(pairs)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                parse_time(v).ok_or_else(|| {
                    ApiError::bad_data(format!(
                        "invalid parameter \"{name}\": cannot parse {v:?} to a valid timestamp"
                    ))
                })
            })
            .transpose()
    }
}

/// A time as Prometheus takes it: Unix seconds (with a fraction) or RFC 3339.
pub fn parse_time(v: &str) -> Option<i64> {
    if let Ok(seconds) = v.parse::<f64>() {
        return seconds
            .is_finite()
            .then(|| (seconds * 1000.0).round() as i64);
    }
    let t = humantime::parse_rfc3339_weak(v).ok()?;
    Some(match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    })
}

/// A step or duration: seconds (with a fraction) or a PromQL duration.
pub fn parse_step(v: &str) -> Option<i64> {
    if let Ok(seconds) = v.parse::<f64>() {
        return seconds
            .is_finite()
            .then(|| (seconds * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(v)
        .ok()
        .map(|d| d.as_millis() as i64)
}

impl PromApi {
    fn project(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let project = self
            .keys
            .authenticate_headers(headers)
            .map(|p| p.0)
            .map_err(|e| ApiError {
                status: StatusCode::UNAUTHORIZED,
                kind: "unauthorized",
                message: e.to_string(),
            })?;
        crate::service::check_rate(&self.rate, &project).map_err(|message| ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "too_many_requests",
            message,
        })?;
        Ok(project)
    }
}

fn parse_query(params: &Params) -> Result<Expr, ApiError> {
    let q = params
        .get("query")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": missing"))?;
    promql::parse(q).map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))
}

fn seconds(ms: i64) -> Json {
    json!(ms as f64 / 1e3)
}

fn point(t: i64, v: f64) -> Json {
    json!([seconds(t), format_value(v)])
}

fn labels_json(labels: &Labels) -> Json {
    Json::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

fn matrix_json(series: &[RangeSeries]) -> Json {
    Json::Array(
        series
            .iter()
            .map(|s| {
                json!({
                    "metric": labels_json(&s.labels),
                    "values": s.samples().iter().map(|p| point(p.timestamp_ms, p.value)).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

async fn query(
    State(api): State<Arc<PromApi>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let project = api.project(&headers)?;
    let params = Params::new(raw, &headers, &body);
    let expr = parse_query(&params)?;
    let time = params
        .time("time")?
        .unwrap_or_else(vigil_runtime::time::now_ms);
    let value = promql::instant(&*api.store, &project, &expr, time, &api.limits).await?;
    let (kind, result) = match value {
        Value::Scalar(v) => ("scalar", point(time, v)),
        Value::String(s) => ("string", json!([seconds(time), s])),
        Value::Vector(elements) => (
            "vector",
            Json::Array(
                elements
                    .iter()
                    .map(|e| json!({"metric": labels_json(&e.labels), "value": point(time, e.v)}))
                    .collect(),
            ),
        ),
        Value::Matrix { series, .. } => ("matrix", matrix_json(&series)),
    };
    Ok(success(json!({"resultType": kind, "result": result})))
}

async fn query_range(
    State(api): State<Arc<PromApi>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let project = api.project(&headers)?;
    let params = Params::new(raw, &headers, &body);
    let expr = parse_query(&params)?;
    let start = params
        .time("start")?
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"start\": missing"))?;
    let end = params
        .time("end")?
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"end\": missing"))?;
    let step = params
        .get("step")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"step\": missing"))?;
    let step = parse_step(step).ok_or_else(|| {
        ApiError::bad_data(format!(
            "invalid parameter \"step\": cannot parse {step:?} to a valid duration"
        ))
    })?;
    if end.saturating_sub(start) > api.limits.max_range_ms {
        return Err(QueryError::Limit(format!(
            "the range from start to end is longer than the limit of {}",
            humantime::format_duration(std::time::Duration::from_millis(
                api.limits.max_range_ms.unsigned_abs()
            ))
        ))
        .into());
    }
    let series = promql::range(&*api.store, &project, &expr, start, end, step, &api.limits).await?;
    Ok(success(
        json!({"resultType": "matrix", "result": matrix_json(&series)}),
    ))
}

/// The series every `match[]` selects, deduplicated.
async fn matched_series(
    api: &PromApi,
    project: &str,
    params: &Params,
    required: bool,
) -> Result<Option<Vec<Labels>>, ApiError> {
    let matches = params.all("match[]");
    if matches.is_empty() {
        return if required {
            Err(ApiError::bad_data("no match[] parameter provided"))
        } else {
            Ok(None)
        };
    }
    let start = params.time("start")?.unwrap_or(0);
    let mut found = BTreeSet::new();
    for m in matches {
        let expr = promql::parse(m)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
        let Expr::VectorSelector(vs) = expr else {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"match[]\": {m:?} is not a series selector"
            )));
        };
        let limit = api.limits.max_series.saturating_sub(found.len());
        found.extend(promql::series_labels(&*api.store, project, &vs, start, limit).await?);
    }
    Ok(Some(found.into_iter().collect()))
}

async fn series(
    State(api): State<Arc<PromApi>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let project = api.project(&headers)?;
    let params = Params::new(raw, &headers, &body);
    let found = matched_series(&api, &project, &params, true)
        .await?
        .unwrap_or_default();
    Ok(success(Json::Array(
        found.iter().map(labels_json).collect(),
    )))
}

/// Every series of the project (for label listings without `match[]`),
/// up to ten times the per-query series limit.
async fn all_series(api: &PromApi, project: &str, start: i64) -> Result<Vec<Labels>, ApiError> {
    let any = promql::parse("{__name__=~\".+\"}").map_err(QueryError::from)?;
    let Expr::VectorSelector(vs) = any else {
        return Err(ApiError::bad_data("internal selector did not parse"));
    };
    let limit = api.limits.max_series.saturating_mul(10);
    Ok(promql::series_labels(&*api.store, project, &vs, start, limit).await?)
}

async fn labels(
    State(api): State<Arc<PromApi>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let project = api.project(&headers)?;
    let params = Params::new(raw, &headers, &body);
    let series = match matched_series(&api, &project, &params, false).await? {
        Some(found) => found,
        None => all_series(&api, &project, params.time("start")?.unwrap_or(0)).await?,
    };
    let names: BTreeSet<&String> = series.iter().flat_map(|l| l.keys()).collect();
    Ok(success(json!(names)))
}

async fn label_values(
    State(api): State<Arc<PromApi>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let project = api.project(&headers)?;
    let params = Params::new(raw, &headers, &Bytes::new());
    if !vigil_storage::model::is_valid_label_name(&name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let start = params.time("start")?.unwrap_or(0);
    let matched = matched_series(&api, &project, &params, false).await?;
    if name == promql_parser::label::METRIC_NAME && matched.is_none() {
        let names = api
            .store
            .metric_names(&project, start)
            .await
            .map_err(QueryError::from)?;
        return Ok(success(json!(names)));
    }
    let series = match matched {
        Some(found) => found,
        None => all_series(&api, &project, start).await?,
    };
    let values: BTreeSet<&String> = series.iter().filter_map(|l| l.get(&name)).collect();
    Ok(success(json!(values)))
}

/// Vigil keeps no metric metadata (type, help, unit): the answer is empty,
/// as Prometheus answers for metrics it has no metadata for.
async fn metadata(
    State(api): State<Arc<PromApi>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.project(&headers)?;
    Ok(success(json!({})))
}
