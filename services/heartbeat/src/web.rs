//! The monitor's HTTP face, compatible with healthchecks.io so existing
//! curl lines and API clients work with a new host:
//!
//! - pings: `/ping/<uuid>[/start|/fail|/log|/<exit status>]` and
//!   `/ping/<ping key>/<slug>[/…][?create=1]`, each with `?rid=<uuid>`;
//! - the management API v3 (also at v1 and v2): checks, pause, resume,
//!   pings, flips, with read-write and read-only keys (`X-Api-Key`);
//! - status badges `/b/<2|3>/<unique key>.svg|json|shields`;
//! - Prometheus metrics of every check,
//!   `/projects/<project>/metrics/<read-only key>`.

// Handlers build their error answers early and return them as `Err`.
#![allow(clippy::result_large_err)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use sha2::Digest;
use vigil_runtime::time::now_ms;

use crate::{
    checks::{PingKind, Status},
    config::{CheckConfig, Keys},
    schedule::Schedule,
    store::{CheckStore, Entry, Origin, PingIn, PingOutcome, PingRecord, StoreError, Target},
};

/// What the handlers share.
#[derive(Clone)]
pub struct Web {
    pub store: CheckStore,
    pub keys: Arc<Keys>,
    pub project: Arc<str>,
    /// The monitor's public address, if configured.
    pub public_url: Option<Arc<str>>,
    pub ping_body_limit: usize,
    /// Called after a change that may bring a deadline nearer.
    pub on_change: Arc<dyn Fn() + Send + Sync>,
    pub pings: prometheus_client::metrics::family::Family<
        [(&'static str, &'static str); 1],
        prometheus_client::metrics::counter::Counter,
    >,
}

pub fn router(web: Web) -> Router {
    Router::new()
        .route("/api/{v}/checks/", get(list_checks).post(create_check))
        .route(
            "/api/{v}/checks/{code}",
            get(get_check).post(update_check).delete(delete_check),
        )
        .route("/api/{v}/checks/{code}/pause", axum::routing::post(pause))
        .route("/api/{v}/checks/{code}/resume", axum::routing::post(resume))
        .route("/api/{v}/checks/{code}/pings/", get(list_pings))
        .route("/api/{v}/checks/{code}/pings/{n}/body", get(ping_body))
        .route("/api/{v}/checks/{code}/flips/", get(list_flips))
        .route("/api/{v}/status/", get(|| async { "OK" }))
        .route("/b/{states}/{file}", get(badge))
        .route("/projects/{project}/metrics/", get(metrics_bearer))
        .route("/projects/{project}/metrics/{key}", get(metrics_path))
        // API requests are small; ping bodies (below) may be large and are
        // cut as they are read.
        .route_layer(axum::extract::DefaultBodyLimit::max(API_BODY_BYTES))
        .route("/ping/{a}", get(ping_route).post(ping_route))
        .route("/ping/{a}/{b}", get(ping_route).post(ping_route))
        .route("/ping/{a}/{b}/{c}", get(ping_route).post(ping_route))
        .with_state(web)
}

/// Largest API request body.
const API_BODY_BYTES: usize = 64 * 1024;

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

/// A JSON error, as healthchecks.io words them: `{"error": "…"}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound => error(StatusCode::NOT_FOUND, "check not found"),
        StoreError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        StoreError::Conflict(m) => (StatusCode::CONFLICT, m).into_response(),
        StoreError::ReadOnly(m) => error(StatusCode::FORBIDDEN, m),
        StoreError::Full(_) => error(StatusCode::FORBIDDEN, e.to_string()),
        StoreError::Busy | StoreError::Stopped => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        StoreError::Storage(ref s) => {
            tracing::error!(error = %s, "heartbeat store failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

// ---------------------------------------------------------------- pings

#[derive(Debug)]
struct PingRequest {
    method: Method,
    headers: HeaderMap,
    peer: SocketAddr,
    query: Option<String>,
    body: Body,
}

/// Every ping URL: `/ping/<uuid>[/<action>]` or
/// `/ping/<ping key>/<slug>[/<action>]`.
async fn ping_route(
    State(web): State<Web>,
    Path(parts): Path<Vec<String>>,
    method: Method,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let request = PingRequest {
        method,
        headers,
        peer,
        query,
        body,
    };
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match (parts.as_slice(), parts.first().and_then(|a| parse_uuid(a))) {
        ([_], Some(uuid)) => ping(&web, Target::Uuid(uuid), "", request).await,
        ([_, action], Some(uuid)) => ping(&web, Target::Uuid(uuid), action, request).await,
        ([key, slug], None) => slug_ping(&web, key, slug, "", request).await,
        ([key, slug, action], None) => slug_ping(&web, key, slug, action, request).await,
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// A canonical uuid in lower case, if `s` is one.
fn parse_uuid(s: &str) -> Option<String> {
    (s.len() == 36)
        .then(|| uuid::Uuid::parse_str(s).ok())
        .flatten()
        .map(|u| u.to_string())
}

/// Compares two keys in constant time.
pub fn keys_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

async fn slug_ping(
    web: &Web,
    ping_key: &str,
    slug: &str,
    action: &str,
    request: PingRequest,
) -> Response {
    let Some(known) = &web.keys.ping else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    if !keys_equal(ping_key, known) {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    if slug.is_empty()
        || !slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        || slug.len() > 100
    {
        return text(StatusCode::BAD_REQUEST, "invalid url format");
    }
    let create = query_pairs(request.query.as_deref())
        .iter()
        .any(|(k, v)| k == "create" && v == "1");
    let target = Target::Slug {
        slug: slug.to_owned(),
        create,
    };
    ping(web, target, action, request).await
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn ping(web: &Web, target: Target, action: &str, request: PingRequest) -> Response {
    let (kind, exit_status) = match action {
        "" => (PingKind::Success, None),
        "start" => (PingKind::Start, None),
        "fail" => (PingKind::Fail, None),
        "log" => (PingKind::Log, None),
        code => match code.parse::<u8>() {
            Ok(0) if code.len() <= 3 => (PingKind::Success, Some(0)),
            Ok(n) if code.len() <= 3 => (PingKind::Fail, Some(n)),
            _ => return text(StatusCode::BAD_REQUEST, "invalid url format"),
        },
    };
    let mut rid = None;
    for (k, v) in query_pairs(request.query.as_deref()) {
        if k == "rid" {
            match parse_uuid(&v) {
                Some(u) => rid = Some(u),
                None => return text(StatusCode::BAD_REQUEST, "invalid uuid format"),
            }
        }
    }
    // The body is read as it comes: the first ping_body_limit bytes are
    // kept, the rest is read and dropped (a job's whole output may be
    // piped in).
    let limit = web.ping_body_limit;
    let mut body = Vec::new();
    let mut truncated = false;
    let mut stream = request.body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                let room = limit.saturating_sub(body.len());
                truncated |= chunk.len() > room;
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Err(e) => {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body cannot be read: {e}"),
                )
                    .into_response();
            }
        }
    }
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let scheme = match header("x-forwarded-proto") {
        "https" => "https",
        _ => "http",
    };
    let ping = PingIn {
        kind,
        exit_status,
        rid,
        scheme: scheme.into(),
        method: request.method.as_str().into(),
        remote_addr: request.peer.ip().to_string(),
        user_agent: header("user-agent").chars().take(200).collect(),
        body,
        truncated,
    };
    let mut response = match web.store.ping(target, ping, now_ms()).await {
        Ok(outcome) => {
            if outcome == PingOutcome::Created {
                (web.on_change)();
            }
            web.pings.get_or_create(&[("kind", kind.as_str())]).inc();
            match outcome {
                PingOutcome::Stored => text(StatusCode::OK, "OK"),
                PingOutcome::Created => text(StatusCode::CREATED, "Created"),
            }
        }
        Err(StoreError::NotFound) => text(StatusCode::NOT_FOUND, "not found"),
        Err(StoreError::Full(_)) => text(StatusCode::NOT_FOUND, "not found"),
        Err(StoreError::Conflict(_)) => text(StatusCode::CONFLICT, "ambiguous slug"),
        Err(e) => store_error(e),
    };
    let h = response.headers_mut();
    h.insert("ping-body-limit", HeaderValue::from(limit));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// ----------------------------------------------------------------- auth

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadOnly,
    ReadWrite,
}

/// The access of `X-Api-Key` (or, for POST bodies, `api_key`).
fn authorize(
    web: &Web,
    headers: &HeaderMap,
    body_key: Option<&str>,
    write: bool,
) -> Result<Access, Response> {
    let presented = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or(body_key)
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(key) = presented else {
        return Err(error(StatusCode::UNAUTHORIZED, "missing api key"));
    };
    let wrong = || error(StatusCode::UNAUTHORIZED, "wrong api key");
    if web
        .keys
        .read_write
        .as_deref()
        .is_some_and(|k| keys_equal(key, k))
    {
        return Ok(Access::ReadWrite);
    }
    if !write
        && web
            .keys
            .read_only
            .as_deref()
            .is_some_and(|k| keys_equal(key, k))
    {
        return Ok(Access::ReadOnly);
    }
    Err(wrong())
}

fn version(v: &str) -> Result<&str, Response> {
    match v {
        "v1" | "v2" | "v3" => Ok(v),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            format!("no API version {v:?}: use v3"),
        )),
    }
}

// ---------------------------------------------------------- check JSON

/// The check's key for read-only listings and badges, as healthchecks.io
/// makes it (sha1 of the uuid's first 16 hex digits), so it stays the same
/// for a check moved from there.
pub fn unique_key(uuid: &str) -> String {
    let hex: String = uuid.chars().filter(|c| *c != '-').take(16).collect();
    sha1_smol::Sha1::from(hex.as_bytes()).digest().to_string()
}

/// RFC 3339 to the second, `+00:00`.
pub fn iso(ms: i64) -> String {
    jiff::Timestamp::from_second(ms.div_euclid(1000)).map_or_else(
        |_| ms.to_string(),
        |t| t.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
    )
}

/// RFC 3339 with microseconds, `+00:00`.
fn iso_micro(ms: i64) -> String {
    jiff::Timestamp::from_second(ms.div_euclid(1000)).map_or_else(
        |_| ms.to_string(),
        |t| {
            format!(
                "{}.{:06}+00:00",
                t.strftime("%Y-%m-%dT%H:%M:%S"),
                ms.rem_euclid(1000) * 1000
            )
        },
    )
}

/// The name healthchecks.io gives a status.
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::New => "new",
        Status::Up => "up",
        Status::Late => "grace",
        Status::Down => "down",
        Status::Paused => "paused",
    }
}

impl Web {
    /// The address API answers point at: `public_url`, else the request's
    /// own host.
    fn base(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.public_url {
            return u.trim_end_matches('/').to_owned();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| {
                h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            })
            .unwrap_or("localhost");
        format!("http://{host}")
    }
}

/// A check in healthchecks.io's API v3 shape (docs/api.md). Serialized
/// straight from the entry: a listing of many checks builds no JSON tree.
#[derive(serde::Serialize)]
struct CheckJson<'a> {
    name: &'a str,
    slug: &'a str,
    tags: &'a str,
    desc: &'a str,
    grace: u64,
    n_pings: u64,
    status: &'static str,
    started: bool,
    last_ping: Option<String>,
    next_ping: Option<String>,
    manual_resume: bool,
    methods: &'a str,
    // Keyword filters are not supported: they are always off.
    subject: &'static str,
    subject_fail: &'static str,
    start_kw: &'static str,
    success_kw: &'static str,
    failure_kw: &'static str,
    filter_subject: bool,
    filter_body: bool,
    filter_http_body: bool,
    filter_default_fail: bool,
    badge_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_duration: Option<i64>,
    #[serde(flatten)]
    access: AccessFields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tz: Option<&'a str>,
}

/// The secrets a read-write key sees, or the unique key a read-only one does.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum AccessFields<'a> {
    ReadWrite {
        uuid: &'a str,
        ping_url: String,
        update_url: String,
        pause_url: String,
        resume_url: String,
        /// Every check notifies every integration of heartbeat.integrations.
        channels: &'static str,
    },
    ReadOnly {
        unique_key: String,
    },
}

fn check_json<'a>(
    entry: &'a Entry,
    access: Access,
    base: &str,
    v: &str,
    now: i64,
) -> CheckJson<'a> {
    let c = &entry.check;
    let s = &entry.state;
    let status = entry.status(now);
    let key = unique_key(entry.uuid());
    let uuid = entry.uuid();
    let update = format!("{base}/api/{v}/checks/{uuid}");
    CheckJson {
        name: &c.name,
        slug: &c.slug,
        tags: &c.tags,
        desc: &c.desc,
        grace: c.grace.as_secs(),
        n_pings: s.pings,
        status: status_name(status),
        started: s.last_start_ms.is_some(),
        last_ping: s.last_ping_ms.map(iso),
        next_ping: match status {
            Status::Up | Status::Late => entry.due.filter(|d| *d != i64::MIN).map(iso),
            _ => None,
        },
        manual_resume: c.manual_resume,
        methods: &c.methods,
        subject: "",
        subject_fail: "",
        start_kw: "",
        success_kw: "",
        failure_kw: "",
        filter_subject: false,
        filter_body: false,
        filter_http_body: false,
        filter_default_fail: false,
        badge_url: format!("{base}/b/2/{key}.svg"),
        last_duration: s.last_duration_ms.filter(|d| *d > 0).map(|d| d / 1000),
        access: match access {
            Access::ReadWrite => AccessFields::ReadWrite {
                uuid,
                ping_url: format!("{base}/ping/{uuid}"),
                pause_url: format!("{update}/pause"),
                resume_url: format!("{update}/resume"),
                update_url: update,
                channels: "*",
            },
            Access::ReadOnly => AccessFields::ReadOnly { unique_key: key },
        },
        timeout: c.period.map(|p| p.as_secs()),
        schedule: c.schedule.as_deref().filter(|_| c.period.is_none()),
        tz: c
            .schedule
            .as_ref()
            .filter(|_| c.period.is_none())
            .map(|_| c.tz.as_str()),
    }
}

/// The check a path names: a uuid, or (reads only) a unique key.
fn find(web: &Web, code: &str, by_unique_key: bool) -> Result<Entry, Response> {
    let not_found = || error(StatusCode::NOT_FOUND, "check not found");
    if let Some(uuid) = parse_uuid(code) {
        return web.store.entry(&uuid).ok_or_else(not_found);
    }
    if by_unique_key && code.len() == 40 && code.chars().all(|c| c.is_ascii_hexdigit()) {
        return web.store.by_unique_key(code).ok_or_else(not_found);
    }
    Err(not_found())
}

// ------------------------------------------------------------- handlers

async fn list_checks(
    State(web): State<Web>,
    Path(v): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = (|| {
        let v = version(&v)?;
        let access = authorize(&web, &headers, None, false)?;
        let pairs = query_pairs(query.as_deref());
        let tags: Vec<&str> = pairs
            .iter()
            .filter(|(k, _)| k == "tag")
            .map(|(_, v)| v.as_str())
            .collect();
        let slug = pairs.iter().find(|(k, _)| k == "slug").map(|(_, v)| v);
        let base = web.base(&headers);
        let now = now_ms();
        let entries = web.store.entries();
        let checks: Vec<CheckJson<'_>> = entries
            .iter()
            .filter(|e| {
                let own: Vec<&str> = e.check.tags.split_whitespace().collect();
                tags.iter().all(|t| own.contains(t)) && slug.is_none_or(|s| &e.check.slug == s)
            })
            .map(|e| check_json(e, access, &base, v, now))
            .collect();
        #[derive(serde::Serialize)]
        struct List<'a> {
            checks: Vec<CheckJson<'a>>,
        }
        Ok::<_, Response>(Json(List { checks }).into_response())
    })();
    result.unwrap_or_else(|r| r)
}

async fn get_check(
    State(web): State<Web>,
    Path((v, code)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        let v = version(&v)?;
        let access = authorize(&web, &headers, None, false)?;
        let entry = find(&web, &code, true)?;
        Ok(Json(check_json(&entry, access, &web.base(&headers), v, now_ms())).into_response())
    })();
    result.unwrap_or_else(|r| r)
}

/// The JSON object of a POST body: healthchecks.io's errors for a body
/// that is not one.
fn json_body(body: &Bytes) -> Result<Map<String, Value>, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "could not parse request body"))?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "json validation error: value is not an object",
        )),
    }
}

fn invalid(message: String) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        format!("json validation error: {message}"),
    )
}

/// The fields of a create or update request, checked as healthchecks.io
/// checks them (strict types, its limits and its messages).
#[derive(Debug, Default)]
struct Spec {
    name: Option<String>,
    slug: Option<String>,
    tags: Option<String>,
    desc: Option<String>,
    timeout: Option<u64>,
    grace: Option<u64>,
    schedule: Option<String>,
    tz: Option<String>,
    manual_resume: Option<bool>,
    methods: Option<String>,
    unique: Vec<String>,
}

/// Shortest and longest timeout and grace the API takes, in seconds.
const SPAN_SECONDS: std::ops::RangeInclusive<u64> = 60..=31_536_000;

fn spec(body: &Map<String, Value>) -> Result<Spec, Response> {
    let string = |field: &str, max: usize| -> Result<Option<String>, Response> {
        match body.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.chars().count() > max => {
                Err(invalid(format!("{field} is too long")))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("{field} is not a string"))),
        }
    };
    let seconds = |field: &str| -> Result<Option<u64>, Response> {
        match body.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => {
                let n = n.as_i64().unwrap_or(i64::MAX);
                if n < 60 {
                    Err(invalid(format!("{field} is too small")))
                } else if !SPAN_SECONDS.contains(&(n as u64)) {
                    Err(invalid(format!("{field} is too large")))
                } else {
                    Ok(Some(n as u64))
                }
            }
            Some(_) => Err(invalid(format!("{field} is not a number"))),
        }
    };
    let mut s = Spec {
        name: string("name", 100)?,
        slug: string("slug", 100)?,
        tags: string("tags", 500)?,
        desc: string("desc", 10_000)?,
        timeout: seconds("timeout")?,
        grace: seconds("grace")?,
        schedule: string("schedule", 100)?,
        tz: string("tz", 100)?,
        methods: string("methods", 10)?,
        ..Spec::default()
    };
    if let Some(slug) = &s.slug
        && !slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(invalid("slug does not match pattern".into()));
    }
    match body.get("manual_resume") {
        None => {}
        Some(Value::Bool(b)) => s.manual_resume = Some(*b),
        Some(_) => return Err(invalid("manual_resume is not a boolean".into())),
    }
    if let Some(m) = &s.methods
        && !(m.is_empty() || m == "POST")
    {
        return Err(invalid("methods has unexpected value".into()));
    }
    if let Some(tz) = &s.tz
        && jiff::tz::TimeZone::get(tz).is_err()
    {
        return Err(invalid("tz is not a valid timezone".into()));
    }
    if let Some(expr) = s.schedule.as_deref().filter(|e| !e.is_empty())
        && Schedule::cron(expr, s.tz.as_deref().unwrap_or("UTC")).is_err()
    {
        return Err(invalid(
            "schedule is not a valid cron or OnCalendar expression".into(),
        ));
    }
    match body.get("unique") {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item.as_str() {
                    Some(f @ ("name" | "slug" | "tags" | "timeout" | "grace")) => {
                        s.unique.push(f.to_owned());
                    }
                    _ => return Err(invalid("an item in 'unique' has unexpected value".into())),
                }
            }
        }
        Some(_) => return Err(invalid("unique is not an array".into())),
    }
    // Features this monitor does not have are refused, not ignored.
    for (field, off) in [
        ("channels", Value::from("*")),
        ("start_kw", Value::from("")),
        ("success_kw", Value::from("")),
        ("failure_kw", Value::from("")),
        ("subject", Value::from("")),
        ("subject_fail", Value::from("")),
        ("filter_subject", Value::from(false)),
        ("filter_body", Value::from(false)),
        ("filter_http_body", Value::from(false)),
        ("filter_default_fail", Value::from(false)),
    ] {
        if let Some(value) = body.get(field)
            && *value != off
            && !(field == "channels" && value.as_str() == Some(""))
        {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{field} is not supported by vigil-heartbeat: every check notifies every \
                     integration of heartbeat.integrations, and keyword filters are not built"
                ),
            ));
        }
    }
    Ok(s)
}

impl Spec {
    /// Applies the given fields to `check`; the rest stays.
    fn apply(&self, check: &mut CheckConfig) {
        if let Some(v) = &self.name {
            check.name.clone_from(v);
        }
        if let Some(v) = &self.slug {
            check.slug.clone_from(v);
        }
        if let Some(v) = &self.tags {
            check.tags.clone_from(v);
        }
        if let Some(v) = &self.desc {
            check.desc.clone_from(v);
        }
        if let Some(v) = self.grace {
            check.grace = Duration::from_secs(v);
        }
        if let Some(v) = &self.tz {
            check.tz.clone_from(v);
        }
        if let Some(v) = self.manual_resume {
            check.manual_resume = v;
        }
        if let Some(v) = &self.methods {
            check.methods.clone_from(v);
        }
        // A schedule makes a cron check and wins over timeout; a timeout
        // alone makes a simple check.
        match (&self.schedule, self.timeout) {
            (Some(expr), _) if !expr.is_empty() => {
                check.schedule = Some(expr.clone());
                check.period = None;
            }
            (_, Some(t)) => {
                check.period = Some(Duration::from_secs(t));
                check.schedule = None;
            }
            _ => {}
        }
    }
}

/// What every write request starts with: its API version, its JSON body
/// and a read-write key (`X-Api-Key`, or `api_key` in the body).
fn write_request(
    web: &Web,
    v: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(String, Access, Map<String, Value>), Response> {
    let v = version(v)?.to_owned();
    let body = json_body(body)?;
    let access = authorize(
        web,
        headers,
        body.get("api_key").and_then(Value::as_str),
        true,
    )?;
    Ok((v, access, body))
}

async fn create_check(
    State(web): State<Web>,
    Path(v): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prepared = (|| {
        let (v, access, body) = write_request(&web, &v, &headers, &body)?;
        let spec = spec(&body)?;
        Ok::<_, Response>((v, access, spec))
    })();
    let (v, access, spec) = match prepared {
        Ok(p) => p,
        Err(r) => return r,
    };
    let uuid = uuid::Uuid::new_v4().to_string();
    let mut check = CheckConfig::every(
        "",
        &uuid,
        Duration::from_secs(86_400),
        Duration::from_secs(3_600),
    );
    spec.apply(&mut check);
    // `unique` matches only on fields the request gives.
    let unique: Vec<String> = spec
        .unique
        .iter()
        .filter(|f| match f.as_str() {
            "name" => spec.name.is_some(),
            "slug" => spec.slug.is_some(),
            "tags" => spec.tags.is_some(),
            "timeout" => spec.timeout.is_some(),
            "grace" => spec.grace.is_some(),
            _ => false,
        })
        .cloned()
        .collect();
    let unique = if unique.len() == spec.unique.len() {
        unique
    } else {
        Vec::new()
    };
    let check = match check.revalidated() {
        Ok(c) => c,
        Err(e) => return invalid(e),
    };
    let now = now_ms();
    let result = web
        .store
        .write(move |b| {
            let (entry, created) = b.create(check, &unique, now)?;
            // A declared or probe check that matches is returned as it is.
            if !created && entry.origin == Origin::Api {
                // The match is updated with the request's fields.
                let uuid = entry.uuid().to_owned();
                let updated = b.update(&uuid, |c| spec.apply(c))?;
                return Ok((updated, false));
            }
            Ok((entry, created))
        })
        .await;
    (web.on_change)();
    match result {
        Ok((entry, created)) => (
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            Json(check_json(&entry, access, &web.base(&headers), &v, now)),
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

async fn update_check(
    State(web): State<Web>,
    Path((v, code)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prepared = (|| {
        let (v, access, body) = write_request(&web, &v, &headers, &body)?;
        let spec = spec(&body)?;
        let entry = find(&web, &code, false)?;
        Ok::<_, Response>((v, access, spec, entry))
    })();
    let (v, access, spec, entry) = match prepared {
        Ok(p) => p,
        Err(r) => return r,
    };
    let uuid = entry.uuid().to_owned();
    let result = web
        .store
        .write(move |b| b.update(&uuid, |c| spec.apply(c)))
        .await;
    (web.on_change)();
    match result {
        Ok(entry) => Json(check_json(
            &entry,
            access,
            &web.base(&headers),
            &v,
            now_ms(),
        ))
        .into_response(),
        Err(StoreError::Invalid(m)) => invalid(m),
        Err(e) => store_error(e),
    }
}

/// A change by uuid with a read-write key: delete, pause, resume.
async fn change(
    web: Web,
    v: String,
    code: String,
    headers: HeaderMap,
    body: Bytes,
    f: fn(&mut crate::store::Batch<'_>, &str, i64) -> Result<Entry, StoreError>,
) -> Response {
    let prepared = (|| {
        let (v, access, _) = write_request(&web, &v, &headers, &body)?;
        let entry = find(&web, &code, false)?;
        Ok::<_, Response>((v, access, entry))
    })();
    let (v, access, entry) = match prepared {
        Ok(p) => p,
        Err(r) => return r,
    };
    let uuid = entry.uuid().to_owned();
    let now = now_ms();
    let result = web.store.write(move |b| f(b, &uuid, now)).await;
    (web.on_change)();
    match result {
        Ok(entry) => Json(check_json(&entry, access, &web.base(&headers), &v, now)).into_response(),
        Err(e) => store_error(e),
    }
}

async fn delete_check(
    State(web): State<Web>,
    Path((v, code)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change(web, v, code, headers, body, |b, uuid, _| b.delete(uuid)).await
}

async fn pause(
    State(web): State<Web>,
    Path((v, code)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change(web, v, code, headers, body, |b, uuid, now| {
        b.pause(uuid, now)
    })
    .await
}

async fn resume(
    State(web): State<Web>,
    Path((v, code)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change(web, v, code, headers, body, |b, uuid, now| {
        b.resume(uuid, now)
    })
    .await
}

fn ping_json(p: &PingRecord, base: &str, v: &str, uuid: &str) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(p.kind.as_str()));
    m.insert("date".into(), json!(iso_micro(p.at_ms)));
    m.insert("n".into(), json!(p.n));
    m.insert("scheme".into(), json!(p.scheme));
    m.insert("remote_addr".into(), json!(p.remote_addr));
    m.insert("method".into(), json!(p.method));
    m.insert("ua".into(), json!(p.user_agent));
    m.insert("rid".into(), json!(p.rid));
    if let Some(d) = p.duration_ms {
        m.insert("duration".into(), json!(d as f64 / 1000.0));
    }
    m.insert(
        "body_url".into(),
        json!(
            (!p.body.is_empty())
                .then(|| format!("{base}/api/{v}/checks/{uuid}/pings/{}/body", p.n))
        ),
    );
    if let Some(code) = p.exit_status {
        m.insert("exitstatus".into(), json!(code));
    }
    if p.truncated {
        m.insert("body_truncated".into(), json!(true));
    }
    Value::Object(m)
}

async fn list_pings(
    State(web): State<Web>,
    Path((v, code)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        let v = version(&v)?;
        authorize(&web, &headers, None, true)?;
        let entry = find(&web, &code, false)?;
        let base = web.base(&headers);
        let pings = web.store.pings(entry.uuid()).map_err(store_error)?;
        let pings: Vec<Value> = pings
            .iter()
            .map(|p| ping_json(p, &base, v, entry.uuid()))
            .collect();
        Ok::<_, Response>(Json(json!({ "pings": pings })).into_response())
    })();
    result.unwrap_or_else(|r| r)
}

async fn ping_body(
    State(web): State<Web>,
    Path((v, code, n)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        version(&v)?;
        authorize(&web, &headers, None, true)?;
        let entry = find(&web, &code, false)?;
        let n: u64 = n
            .parse()
            .map_err(|_| error(StatusCode::NOT_FOUND, "no such ping"))?;
        match web
            .store
            .ping_record(entry.uuid(), n)
            .map_err(store_error)?
        {
            Some(p) if !p.body.is_empty() => Ok::<_, Response>(
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    p.body,
                )
                    .into_response(),
            ),
            Some(_) => Err(error(StatusCode::NOT_FOUND, "this ping has no body")),
            None => Err(error(
                StatusCode::NOT_FOUND,
                "no such ping (or no longer kept)",
            )),
        }
    })();
    result.unwrap_or_else(|r| r)
}

async fn list_flips(
    State(web): State<Web>,
    Path((v, code)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = (|| {
        version(&v)?;
        authorize(&web, &headers, None, false)?;
        let entry = find(&web, &code, true)?;
        let now_s = now_ms() / 1000;
        let (mut from, mut until) = (i64::MIN, i64::MAX);
        for (k, v) in query_pairs(query.as_deref()) {
            let bad = || {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("{k} must be a whole number in range"),
                )
            };
            let n: i64 = v.parse().map_err(|_| bad())?;
            match k.as_str() {
                "seconds" if (0..=31_536_000).contains(&n) => from = from.max(now_s - n),
                "start" if (0..=10_000_000_000).contains(&n) => from = from.max(n),
                "end" if (0..=10_000_000_000).contains(&n) => until = n,
                "seconds" | "start" | "end" => return Err(bad()),
                _ => {}
            }
        }
        let flips = web.store.flips(entry.uuid()).map_err(store_error)?;
        let flips: Vec<Value> = flips
            .iter()
            .filter(|f| {
                let s = f.at_ms.div_euclid(1000);
                s >= from && s < until
            })
            .map(|f| {
                json!({
                    "timestamp": iso(f.at_ms),
                    "up": u8::from(f.to == crate::checks::Side::Up),
                })
            })
            .collect();
        Ok::<_, Response>(Json(json!({ "flips": flips })).into_response())
    })();
    result.unwrap_or_else(|r| r)
}

// --------------------------------------------------------------- badges

/// A status badge for one check: `/b/2/<key>.svg` (up or down: late counts
/// as up) or `/b/3/<key>.svg` (up, late or down); also `.json` and
/// `.shields` (shields.io endpoint).
async fn badge(State(web): State<Web>, Path((states, file)): Path<(String, String)>) -> Response {
    let not_found = || text(StatusCode::NOT_FOUND, "not found");
    let three = match states.as_str() {
        "2" => false,
        "3" => true,
        _ => return not_found(),
    };
    let Some((key, format)) = file.rsplit_once('.') else {
        return not_found();
    };
    if key.len() != 40 {
        return not_found();
    }
    let Some(entry) = web.store.by_unique_key(key) else {
        return not_found();
    };
    let status = entry.status(now_ms());
    let (late, down) = (status == Status::Late, status == Status::Down);
    let shown = if down {
        "down"
    } else if late && three {
        "late"
    } else {
        "up"
    };
    let label = if entry.check.name.is_empty() {
        entry.uuid().to_owned()
    } else {
        entry.check.name.clone()
    };
    let mut response = match format {
        "json" => Json(json!({
            "status": shown,
            "total": 1,
            "grace": u8::from(late),
            "down": u8::from(down),
        }))
        .into_response(),
        "shields" => Json(json!({
            "schemaVersion": 1,
            "label": label,
            "message": shown,
            "color": match shown { "down" => "critical", "late" => "important", _ => "success" },
        }))
        .into_response(),
        "svg" => (
            [(header::CONTENT_TYPE, "image/svg+xml")],
            svg_badge(&label, shown),
        )
            .into_response(),
        _ => return not_found(),
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// Escapes text for XML.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A flat two-part badge: the label on grey, the status in its colour.
fn svg_badge(label: &str, status: &str) -> String {
    let colour = match status {
        "down" => "#e05d44",
        "late" => "#fe7d37",
        _ => "#4c1",
    };
    // Verdana 11px averages about 7 px a character.
    let width = |t: &str| 10 + 7 * t.chars().count();
    let (lw, sw) = (width(label), width(status));
    let total = lw + sw;
    let (label, status_text) = (xml(label), xml(status));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{label}: {status_text}"><title>{label}: {status_text}</title><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{sw}" height="20" fill="{colour}"/><g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11"><text x="{lx}" y="14">{label}</text><text x="{sx}" y="14">{status_text}</text></g></svg>"##,
        lx = lw / 2,
        sx = lw + sw / 2,
    )
}

// -------------------------------------------------------------- metrics

async fn metrics_path(
    State(web): State<Web>,
    Path((project, key)): Path<(String, String)>,
) -> Response {
    metrics(&web, &project, Some(&key))
}

async fn metrics_bearer(
    State(web): State<Web>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    metrics(&web, &project, key)
}

/// Prometheus text of every check's state, under healthchecks.io's metric
/// names. Only the read-only key opens it (as there).
fn metrics(web: &Web, project: &str, key: Option<&str>) -> Response {
    let Some(key) = key else {
        return text(
            StatusCode::UNAUTHORIZED,
            "missing key: use /projects/<project>/metrics/<read-only key> or a Bearer header",
        );
    };
    let allowed = web
        .keys
        .read_only
        .as_deref()
        .is_some_and(|k| keys_equal(key, k));
    if project != &*web.project || !allowed {
        return text(StatusCode::FORBIDDEN, "wrong project or key");
    }
    let escape = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let now = now_ms();
    let entries = web.store.entries();
    let mut out = String::new();
    let mut tags: std::collections::BTreeMap<String, bool> = Default::default();
    let mut down_total = 0;
    let statuses: Vec<(Status, &Entry)> = entries.iter().map(|e| (e.status(now), e)).collect();
    for (name, help, value) in [
        (
            "hc_check_up",
            "For every check, indicates whether the check is currently up (1 for yes, 0 for no).",
            (|s: Status, _: &Entry| u8::from(s != Status::Down)) as fn(Status, &Entry) -> u8,
        ),
        (
            "hc_check_started",
            "For every check, indicates whether the check is currently started (1 for yes, 0 for no).",
            |_, e| u8::from(e.state.last_start_ms.is_some()),
        ),
        (
            "hc_check_grace",
            "For every check, indicates whether the check is currently in grace period (1 for yes, 0 for no).",
            |s, _| u8::from(s == Status::Late),
        ),
        (
            "hc_check_paused",
            "For every check, indicates whether the check is currently paused (1 for yes, 0 for no).",
            |s, _| u8::from(s == Status::Paused),
        ),
    ] {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (status, e) in &statuses {
            out.push_str(&format!(
                "{name}{{name=\"{}\", tags=\"{}\", unique_key=\"{}\"}} {}\n",
                escape(&e.check.name),
                escape(&e.check.tags),
                unique_key(e.uuid()),
                value(*status, e)
            ));
        }
    }
    for (status, e) in &statuses {
        let down = *status == Status::Down;
        down_total += usize::from(down);
        for tag in e.check.tags.split_whitespace() {
            let up = tags.entry(tag.to_owned()).or_insert(true);
            *up &= !down;
        }
    }
    out.push_str("# HELP hc_tag_up For every tag, indicates whether all checks with this tag are up (1 for yes, 0 for no).\n# TYPE hc_tag_up gauge\n");
    for (tag, up) in &tags {
        out.push_str(&format!(
            "hc_tag_up{{tag=\"{}\"}} {}\n",
            escape(tag),
            u8::from(*up)
        ));
    }
    out.push_str(&format!(
        "# HELP hc_checks_total The total number of checks.\n# TYPE hc_checks_total gauge\nhc_checks_total {}\n",
        entries.len()
    ));
    out.push_str(&format!(
        "# HELP hc_checks_down_total The number of checks currently down.\n# TYPE hc_checks_down_total gauge\nhc_checks_down_total {down_total}\n"
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Whether the API may change checks of this origin (probes and declared
/// checks are changed in the configuration).
pub fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Api => "api",
        Origin::Config => "config",
        Origin::Probe => "probe",
    }
}
