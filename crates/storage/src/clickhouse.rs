//! The ClickHouse backend, for deployments that outgrow one machine: ingest
//! and query run as separate, replicated processes against one server or
//! cluster, over HTTP with RowBinary batch inserts.
//!
//! The schema runs on the ClickHouse 18.16 Debian ships AND on current
//! releases: no `DateTime64`, `Map`, `TTL`, `CODEC` or `LowCardinality`;
//! attributes as parallel arrays of names and values; integer millisecond
//! timestamps; a `day Date` column partitions every table by day, and
//! retention drops whole partitions (driven by configuration at every
//! maintenance round, so changing a retention needs no manual ALTER).
//!
//! Idempotency: a batch id already in `metric_batches` is answered
//! `Duplicate`. A retry after a partial write (no acknowledgement was given)
//! inserts the same rows again; `ReplacingMergeTree` collapses them and every
//! read takes the newest `version` per (series, timestamp), so answers never
//! show a duplicate.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use vigil_runtime::time::now_ms;

use crate::{
    MaintenanceReport, StorageError, TelemetryStore,
    config::{ClickHouseConfig, RetentionConfig},
    log::{LogBatch, LogEntry, LogPage, LogQuery, LogRecord, record_id, tokens},
    model::{
        Labels, MetricBatch, Sample, SeriesData, SeriesSelector, WriteOutcome, day_of, series_id,
    },
    profile::{
        Event, EventBatch, EventQuery, ProfileBatch, ProfileQuery, StackSample, merge_stacks,
        sort_events,
    },
    trace::{Span, SpanBatch, SpanKind, SpanSummary, StatusCode, TraceQuery},
};

/// Schema migrations, applied in order once each; every statement is
/// idempotent so that replicas starting together cannot conflict.
const MIGRATIONS: &[(u32, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE IF NOT EXISTS {db}.metric_series (
            project String, metric String, series_id UInt64,
            label_names Array(String), label_values Array(String), day Date
        ) ENGINE = ReplacingMergeTree() PARTITION BY day ORDER BY (project, metric, series_id)",
        "CREATE TABLE IF NOT EXISTS {db}.metric_samples (
            project String, series_id UInt64, ts_ms Int64, value Float64, version UInt64, day Date
        ) ENGINE = ReplacingMergeTree(version) PARTITION BY day ORDER BY (project, series_id, ts_ms)",
        "CREATE TABLE IF NOT EXISTS {db}.metric_batches (
            project String, batch_id String, stored_at_ms Int64, day Date
        ) ENGINE = ReplacingMergeTree() PARTITION BY day ORDER BY (project, batch_id)",
    ],
), (
    2,
    &[
        "CREATE TABLE IF NOT EXISTS {db}.spans (
            project String, trace_id FixedString(16), span_id UInt64, parent_span_id UInt64,
            name String, kind UInt8, start_ns Int64, end_ns Int64, duration_ns Int64,
            status_code UInt8, status_message String, service String,
            resource_names Array(String), resource_values Array(String),
            attribute_names Array(String), attribute_values Array(String),
            events_json String, links_json String, version UInt64, day Date
        ) ENGINE = ReplacingMergeTree(version) PARTITION BY day
          ORDER BY (project, service, start_ns, trace_id, span_id)",
        "CREATE TABLE IF NOT EXISTS {db}.trace_index (
            project String, trace_id FixedString(16), day Date
        ) ENGINE = ReplacingMergeTree() PARTITION BY day ORDER BY (project, trace_id)",
    ],
), (
    3,
    &[
        "CREATE TABLE IF NOT EXISTS {db}.logs (
            project String, time_ns Int64, id UInt64, severity UInt8, severity_text String,
            body String, tokens Array(String), service String,
            resource_names Array(String), resource_values Array(String),
            attribute_names Array(String), attribute_values Array(String),
            trace_id FixedString(16), span_id UInt64, pattern_id UInt64, version UInt64, day Date
        ) ENGINE = ReplacingMergeTree(version) PARTITION BY day ORDER BY (project, time_ns, id)",
    ],
), (
    4,
    &[
        "CREATE TABLE IF NOT EXISTS {db}.profile_stacks (
            project String, time_ns Int64, id UInt64, stack_index UInt32, duration_ns Int64,
            profile_type String, service String,
            resource_names Array(String), resource_values Array(String),
            frames Array(String), value UInt64, version UInt64, day Date
        ) ENGINE = ReplacingMergeTree(version) PARTITION BY day
          ORDER BY (project, profile_type, time_ns, id, stack_index)",
        "CREATE TABLE IF NOT EXISTS {db}.events (
            project String, time_ns Int64, id UInt64, kind String, reason String, object String,
            message String, resource_names Array(String), resource_values Array(String),
            version UInt64, day Date
        ) ENGINE = ReplacingMergeTree(version) PARTITION BY day ORDER BY (project, time_ns, id)",
    ],
), (
    5,
    // Where each trace lives in `spans`: per day and service, the range of
    // span starts. A trace read becomes a primary-key range read on
    // (project, service, start_ns) instead of a scan of the day.
    &[
        "CREATE TABLE IF NOT EXISTS {db}.trace_lookup (
            project String, trace_id FixedString(16), day Date, service String,
            start_min Int64, start_max Int64
        ) ENGINE = MergeTree() PARTITION BY day ORDER BY (project, trace_id)",
    ],
)];

const SQL_CREATE_DATABASE: &str = "CREATE DATABASE IF NOT EXISTS {db}";
const SQL_CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
     (version UInt32, applied_at_ms Int64) ENGINE = ReplacingMergeTree() ORDER BY version";
const SQL_APPLIED_MIGRATIONS: &str = "SELECT DISTINCT version FROM {db}.schema_migrations";
const SQL_RECORD_MIGRATION: &str = "INSERT INTO {db}.schema_migrations VALUES (?, ?)";
const SQL_SCHEMA_VERSION: &str = "SELECT max(version) FROM {db}.schema_migrations";
const SQL_SELECT_SERIES: &str = "SELECT series_id, any(label_names) AS label_names, \
     any(label_values) AS label_values FROM {db}.metric_series \
     WHERE project = ? AND metric = ? AND day >= toDate(?) AND day <= toDate(?) GROUP BY series_id";
const SQL_METRIC_NAMES: &str = "SELECT DISTINCT metric FROM {db}.metric_series \
     WHERE project = ? AND day >= toDate(?) ORDER BY metric";
const SQL_SAMPLES_RANGE: &str = "SELECT series_id, ts_ms, argMax(value, version) AS value \
     FROM {db}.metric_samples WHERE project = ? AND series_id IN ({ids}) \
     AND day >= toDate(?) AND day <= toDate(?) AND ts_ms >= ? AND ts_ms <= ? \
     GROUP BY series_id, ts_ms ORDER BY series_id, ts_ms";
const SQL_SAMPLES_LATEST: &str = "SELECT series_id, ts_ms, value FROM {db}.metric_samples \
     WHERE project = ? AND series_id IN ({ids}) \
     AND day >= toDate(?) AND day <= toDate(?) AND ts_ms >= ? AND ts_ms <= ? \
     ORDER BY series_id, ts_ms DESC, version DESC LIMIT 1 BY series_id";
const SQL_BATCH_SEEN: &str =
    "SELECT count() FROM {db}.metric_batches WHERE project = ? AND batch_id = ?";
const SQL_PARTITIONS: &str = "SELECT DISTINCT table, partition FROM system.parts \
     WHERE database = ? AND table IN ({tables}) AND active";
const SQL_DROP_PARTITION: &str = "ALTER TABLE {db}.{table} DROP PARTITION '{partition}'";

/// Every statement Vigil sends, with example arguments in place of `?`, for
/// checking the SQL against another ClickHouse release (see
/// `scripts/check-modern-clickhouse.py`). Inserts travel as RowBinary, so
/// they appear here as equivalent `INSERT … VALUES`.
pub fn sql_catalog(database: &str) -> Vec<String> {
    let fill = |sql: &str, args: &[&str]| {
        let mut out = sql.replace("{db}", database);
        for arg in args {
            out = out.replacen('?', arg, 1);
        }
        out.replace("{ids}", "1, 2").replace(
            "{tables}",
            "'metric_series', 'metric_samples', 'metric_batches'",
        )
    };
    let mut out = vec![
        fill(SQL_CREATE_DATABASE, &[]),
        fill(SQL_CREATE_MIGRATIONS, &[]),
    ];
    for (_, statements) in MIGRATIONS {
        out.extend(statements.iter().map(|s| fill(s, &[])));
    }
    out.extend([
        fill(SQL_RECORD_MIGRATION, &["1", "1700000000000"]),
        fill(SQL_APPLIED_MIGRATIONS, &[]),
        fill(SQL_SCHEMA_VERSION, &[]),
        fill(
            "INSERT INTO {db}.metric_series VALUES ('p', 'cpu', 1, ['node'], ['a'], toDate(19700))",
            &[],
        ),
        fill(
            "INSERT INTO {db}.metric_samples VALUES ('p', 1, 1702080000000, 0.5, 1, toDate(19700)), \
             ('p', 1, 1702080000000, 0.7, 2, toDate(19700))",
            &[],
        ),
        fill(
            "INSERT INTO {db}.metric_batches VALUES ('p', 'b1', 1702080000000, toDate(19700))",
            &[],
        ),
        fill(SQL_BATCH_SEEN, &["'p'", "'b1'"]),
        fill(SQL_SELECT_SERIES, &["'p'", "'cpu'", "19000", "20000"]),
        fill(SQL_SAMPLES_RANGE, &["'p'", "19000", "20000", "0", "1800000000000"]),
        fill(SQL_SAMPLES_LATEST, &["'p'", "19000", "20000", "0", "1800000000000"]),
        fill(
            "INSERT INTO {db}.spans VALUES ('p', unhex('0101010101010101010101010101010a'), 1, 0, \
             'GET /', 2, 1702080000000000000, 1702080000005000000, 5000000, 2, 'boom', 'web', \
             ['service.name'], ['web'], ['http.route'], ['/api'], '[]', '[]', 1, toDate(19700))",
            &[],
        ),
        fill(
            "INSERT INTO {db}.trace_lookup VALUES ('p', unhex('0101010101010101010101010101010a'), \
             toDate(19700), 'web', 1702080000000000000, 1702080000000000000)",
            &[],
        ),
        fill(SQL_TRACE_LOOKUP, &["'p'", "'0101010101010101010101010101010a'"]),
        fill(SQL_TRACE_SPANS, &["'0101010101010101010101010101010a'", "'p'"])
            .replace("{columns}", SPAN_COLUMNS)
            .replace("{where}", &trace_where(&[TraceLocation {
                day: 19700,
                service: "web".into(),
                start_min: 1702080000000000000,
                start_max: 1702080000000000000,
            }])),
        fill(SQL_SEARCH_SPANS, &["'p'", "19000", "20000", "0", "1800000000000000000"])
            .replace("{filters}", " AND service = 'web' AND status_code = 2")
            .replace("{limit}", "10"),
        fill(
            "INSERT INTO {db}.logs VALUES ('p', 1702080000000000000, 7, 17, 'ERROR', \
             'Payment failed: timeout', ['payment', 'failed', 'timeout'], 'api', ['namespace'], \
             ['shop'], [], [], unhex('0101010101010101010101010101010a'), 4, 77, 1, toDate(19700))",
            &[],
        ),
        fill(SQL_SEARCH_LOGS, &["'p'", "19000", "20000", "0", "1800000000000000000"])
            .replace("{columns}", LOG_COLUMNS)
            .replace(
                "{filters}",
                " AND has(resource_names, 'namespace') \
                 AND resource_values[indexOf(resource_names, 'namespace')] = 'shop' \
                 AND hasAll(tokens, ['timeout']) AND severity >= 17 \
                 AND trace_id = unhex('0101010101010101010101010101010a') \
                 AND (time_ns, id) < (1802080000000000000, 9)",
            )
            .replace("{limit}", "11"),
        fill(
            "INSERT INTO {db}.profile_stacks VALUES ('p', 1702080000000000000, 7, 0, 10000000000, \
             'cpu', 'web', ['node'], ['n1'], ['main', 'serve'], 5, 1, toDate(19700)), \
             ('p', 1702080000000000000, 7, 0, 10000000000, 'cpu', 'web', ['node'], ['n1'], \
             ['main', 'serve'], 5, 2, toDate(19700))",
            &[],
        ),
        fill(SQL_MERGE_PROFILES, &["'p'", "'cpu'", "19000", "20000", "0", "1800000000000000000"])
            .replace("{filters}", &resource_filter(&[("node".into(), "n1".into())])),
        fill(
            "INSERT INTO {db}.events VALUES ('p', 1702080000000000000, 9, 'Warning', 'BackOff', \
             'Pod/shop/web-1', 'Back-off restarting', ['namespace'], ['shop'], 1, toDate(19700))",
            &[],
        ),
        fill(SQL_LIST_EVENTS, &["'p'", "19000", "20000", "0", "1800000000000000000"])
            .replace("{filters}", " AND kind = 'Warning'")
            .replace("{limit}", "100"),
        fill(SQL_PARTITIONS, &[&format!("'{database}'")]),
        fill(SQL_DROP_PARTITION, &[])
            .replace("{table}", "metric_samples")
            .replace("{partition}", "2023-12-09"),
    ]);
    // Cluster mode needs a cluster (and ZooKeeper) to run; the modern
    // engine checks that its statements parse.
    let cluster = Some("vigil_cluster");
    let mut ddl: Vec<String> = cluster_ddl(&fill(SQL_CREATE_DATABASE, &[]), database, cluster);
    ddl.extend(cluster_ddl(
        &fill(SQL_CREATE_MIGRATIONS, &[]),
        database,
        cluster,
    ));
    for (_, statements) in MIGRATIONS {
        for statement in *statements {
            ddl.extend(cluster_ddl(&fill(statement, &[]), database, cluster));
        }
    }
    ddl.push(
        fill(SQL_DROP_PARTITION, &[])
            .replace("{table}", "metric_samples_local ON CLUSTER vigil_cluster")
            .replace("{partition}", "2023-12-09"),
    );
    ddl.push(
        fill(SQL_PARTITIONS, &[&format!("'{database}'")])
            .replace("system.parts", "cluster('vigil_cluster', system.parts)"),
    );
    out.extend(
        ddl.into_iter()
            .map(|sql| format!("EXPLAIN AST {}", sql.replace('\n', " "))),
    );
    out
}

/// Tables whose old daily partitions retention drops, with the retention they follow.
const METRIC_TABLES: &[&str] = &["metric_series", "metric_samples", "metric_batches"];
/// Spans and their index follow the traces retention.
const TRACE_TABLES: &[&str] = &["spans", "trace_index", "trace_lookup"];
/// Log records and events follow the logs retention; profiles their own.
const LOG_TABLES: &[&str] = &["logs", "events"];
const PROFILE_TABLES: &[&str] = &["profile_stacks"];

/// Stacks of the matching profiles, each stored stack once (the newest
/// version), summed by frames.
const SQL_MERGE_PROFILES: &str = "SELECT frames, sum(value) AS value FROM ( \
     SELECT frames, value FROM {db}.profile_stacks \
     WHERE project = ? AND profile_type = ? AND day >= toDate(?) AND day <= toDate(?) \
     AND time_ns >= ? AND time_ns <= ? {filters} \
     ORDER BY id, stack_index, version DESC LIMIT 1 BY id, stack_index) GROUP BY frames";
const SQL_LIST_EVENTS: &str = "SELECT time_ns, kind, reason, object, message, resource_names, \
     resource_values FROM {db}.events WHERE project = ? AND day >= toDate(?) AND day <= toDate(?) \
     AND time_ns >= ? AND time_ns <= ? {filters} \
     ORDER BY time_ns DESC, id DESC, version DESC LIMIT 1 BY id LIMIT {limit}";

const LOG_COLUMNS: &str = "project, time_ns, id, severity, severity_text, body, tokens, service, \
     resource_names, resource_values, attribute_names, attribute_values, trace_id, span_id, \
     pattern_id, version, day";
const SQL_SEARCH_LOGS: &str = "SELECT {columns} FROM {db}.logs \
     WHERE project = ? AND day >= toDate(?) AND day <= toDate(?) AND time_ns >= ? AND time_ns <= ? \
     {filters} ORDER BY time_ns DESC, id DESC, version DESC LIMIT 1 BY id LIMIT {limit}";

const SPAN_COLUMNS: &str = "project, trace_id, span_id, parent_span_id, name, kind, start_ns, \
     end_ns, duration_ns, status_code, status_message, service, resource_names, resource_values, \
     attribute_names, attribute_values, events_json, links_json, version, day";
/// Where each trace's spans are. (`trace_index`, from migration 2, is no
/// longer written: it only ages out through retention.)
const SQL_TRACE_LOOKUP: &str = "SELECT day, service, min(start_min), max(start_max) \
     FROM {db}.trace_lookup WHERE project = ? AND trace_id = unhex(?) GROUP BY day, service";
const SQL_TRACE_SPANS: &str = "SELECT {columns} FROM {db}.spans \
     PREWHERE trace_id = unhex(?) WHERE project = ? AND ({where}) \
     ORDER BY span_id, version DESC LIMIT 1 BY span_id";
const SQL_SEARCH_SPANS: &str = "SELECT trace_id, span_id, service, name, start_ns, duration_ns, \
     status_code FROM {db}.spans WHERE project = ? AND day >= toDate(?) AND day <= toDate(?) \
     AND start_ns >= ? AND start_ns <= ? {filters} \
     ORDER BY start_ns DESC, trace_id, span_id LIMIT 1 BY trace_id, span_id LIMIT {limit}";

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct SeriesRow {
    project: String,
    metric: String,
    series_id: u64,
    label_names: Vec<String>,
    label_values: Vec<String>,
    day: u16,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct SampleRow {
    project: String,
    series_id: u64,
    ts_ms: i64,
    value: f64,
    version: u64,
    day: u16,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct BatchRow {
    project: String,
    batch_id: String,
    stored_at_ms: i64,
    day: u16,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct SelectedSeries {
    series_id: u64,
    label_names: Vec<String>,
    label_values: Vec<String>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct SelectedSample {
    series_id: u64,
    ts_ms: i64,
    value: f64,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct SpanRow {
    project: String,
    trace_id: [u8; 16],
    span_id: u64,
    parent_span_id: u64,
    name: String,
    kind: u8,
    start_ns: i64,
    end_ns: i64,
    duration_ns: i64,
    status_code: u8,
    status_message: String,
    service: String,
    resource_names: Vec<String>,
    resource_values: Vec<String>,
    attribute_names: Vec<String>,
    attribute_values: Vec<String>,
    events_json: String,
    links_json: String,
    version: u64,
    day: u16,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct LogRow {
    project: String,
    time_ns: i64,
    id: u64,
    severity: u8,
    severity_text: String,
    body: String,
    tokens: Vec<String>,
    service: String,
    resource_names: Vec<String>,
    resource_values: Vec<String>,
    attribute_names: Vec<String>,
    attribute_values: Vec<String>,
    trace_id: [u8; 16],
    span_id: u64,
    pattern_id: u64,
    version: u64,
    day: u16,
}

impl LogRow {
    fn from_record(project: &str, id: u64, record: &LogRecord, version: u64) -> Self {
        Self {
            project: project.to_owned(),
            time_ns: record.time_ns,
            id,
            severity: record.severity,
            severity_text: record.severity_text.clone(),
            body: record.body.clone(),
            tokens: tokens(&record.body),
            service: record.service.clone(),
            resource_names: record.resource.keys().cloned().collect(),
            resource_values: record.resource.values().cloned().collect(),
            attribute_names: record.attributes.keys().cloned().collect(),
            attribute_values: record.attributes.values().cloned().collect(),
            trace_id: record.trace_id,
            span_id: u64::from_be_bytes(record.span_id),
            pattern_id: record.pattern_id,
            version,
            day: date_of(record.time_ns.div_euclid(1_000_000)),
        }
    }

    fn into_entry(self) -> LogEntry {
        LogEntry {
            id: self.id,
            record: LogRecord {
                time_ns: self.time_ns,
                severity: self.severity,
                severity_text: self.severity_text,
                body: self.body,
                service: self.service,
                resource: self
                    .resource_names
                    .into_iter()
                    .zip(self.resource_values)
                    .collect(),
                attributes: self
                    .attribute_names
                    .into_iter()
                    .zip(self.attribute_values)
                    .collect(),
                trace_id: self.trace_id,
                span_id: self.span_id.to_be_bytes(),
                pattern_id: self.pattern_id,
            },
        }
    }
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct ProfileStackRow {
    project: String,
    time_ns: i64,
    id: u64,
    stack_index: u32,
    duration_ns: i64,
    profile_type: String,
    service: String,
    resource_names: Vec<String>,
    resource_values: Vec<String>,
    frames: Vec<String>,
    value: u64,
    version: u64,
    day: u16,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct MergedStackRow {
    frames: Vec<String>,
    value: u64,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct EventRow {
    project: String,
    time_ns: i64,
    id: u64,
    kind: String,
    reason: String,
    object: String,
    message: String,
    resource_names: Vec<String>,
    resource_values: Vec<String>,
    version: u64,
    day: u16,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ListedEventRow {
    time_ns: i64,
    kind: String,
    reason: String,
    object: String,
    message: String,
    resource_names: Vec<String>,
    resource_values: Vec<String>,
}

/// SQL requiring resource attributes to be present with these values.
fn resource_filter(resource: &[(String, String)]) -> String {
    resource
        .iter()
        .map(|(name, value)| {
            let name = sql_string(name);
            format!(
                " AND has(resource_names, {name}) AND resource_values[indexOf(resource_names, {name})] = {}",
                sql_string(value)
            )
        })
        .collect()
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct TraceLookupRow {
    project: String,
    trace_id: [u8; 16],
    day: u16,
    service: String,
    start_min: i64,
    start_max: i64,
}

/// Where part of a trace is stored: a day, and within it a service and a
/// range of span starts.
#[derive(Debug, Deserialize, clickhouse::Row)]
struct TraceLocation {
    day: u16,
    service: String,
    start_min: i64,
    start_max: i64,
}

/// The `spans` condition covering these locations, shaped for the primary
/// key (project, service, start_ns).
fn trace_where(locations: &[TraceLocation]) -> String {
    locations
        .iter()
        .map(|l| {
            format!(
                "(day = toDate({}) AND service = {} AND start_ns >= {} AND start_ns <= {})",
                l.day,
                sql_string(&l.service),
                l.start_min,
                l.start_max
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct SummaryRow {
    trace_id: [u8; 16],
    span_id: u64,
    service: String,
    name: String,
    start_ns: i64,
    duration_ns: i64,
    status_code: u8,
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StorageError> {
    serde_json::to_string(value).map_err(|e| StorageError::Corrupt(e.to_string()))
}

impl SpanRow {
    fn from_span(project: &str, span: &Span, version: u64) -> Result<Self, StorageError> {
        Ok(Self {
            project: project.to_owned(),
            trace_id: span.trace_id,
            span_id: u64::from_be_bytes(span.span_id),
            parent_span_id: u64::from_be_bytes(span.parent_span_id),
            name: span.name.clone(),
            kind: span.kind.code(),
            start_ns: span.start_ns,
            end_ns: span.end_ns,
            duration_ns: span.duration_ns(),
            status_code: span.status.code(),
            status_message: span.status_message.clone(),
            service: span.service.clone(),
            resource_names: span.resource.keys().cloned().collect(),
            resource_values: span.resource.values().cloned().collect(),
            attribute_names: span.attributes.keys().cloned().collect(),
            attribute_values: span.attributes.values().cloned().collect(),
            events_json: to_json(&span.events)?,
            links_json: to_json(&span.links)?,
            version,
            day: date_of(span.start_ns.div_euclid(1_000_000)),
        })
    }

    fn into_span(self) -> Result<Span, StorageError> {
        let corrupt =
            |e: serde_json::Error| StorageError::Corrupt(format!("span events/links: {e}"));
        Ok(Span {
            trace_id: self.trace_id,
            span_id: self.span_id.to_be_bytes(),
            parent_span_id: self.parent_span_id.to_be_bytes(),
            name: self.name,
            kind: SpanKind::from_code(self.kind),
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            status: StatusCode::from_code(self.status_code),
            status_message: self.status_message,
            service: self.service,
            resource: self
                .resource_names
                .into_iter()
                .zip(self.resource_values)
                .collect(),
            attributes: self
                .attribute_names
                .into_iter()
                .zip(self.attribute_values)
                .collect(),
            events: serde_json::from_str(&self.events_json).map_err(corrupt)?,
            links: serde_json::from_str(&self.links_json).map_err(corrupt)?,
        })
    }
}

/// A SQL string literal, escaped the ClickHouse way (backslash, quote).
fn sql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[derive(Debug, clickhouse::Row, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Partition {
    table: String,
    partition: String,
}

fn ch_err(e: clickhouse::error::Error) -> StorageError {
    StorageError::Io(format!("ClickHouse: {e}"))
}

/// The `Date` of a timestamp; validation keeps timestamps inside its range.
fn date_of(timestamp_ms: i64) -> u16 {
    u16::try_from(day_of(timestamp_ms).clamp(0, i64::from(u16::MAX))).unwrap_or(u16::MAX)
}

/// The `Date` bounds of a nanosecond range, clamped to what `Date` holds.
fn day_bounds(start_ns: i64, end_ns: i64) -> (u16, u16) {
    let ms = |ns: i64| {
        ns.div_euclid(1_000_000)
            .clamp(0, crate::model::MAX_TIMESTAMP_MS - 1)
    };
    (date_of(ms(start_ns)), date_of(ms(end_ns)))
}

/// Days since the epoch of a `YYYY-MM-DD` partition name.
fn parse_day(partition: &str) -> Option<i64> {
    let mut parts = partition.trim_matches('\'').splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    // Days from civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Telemetry in ClickHouse.
pub struct ClickHouseStore {
    client: clickhouse::Client,
    database: String,
    /// Cluster mode: the cluster's name.
    cluster: Option<String>,
    metrics_retention: Duration,
    traces_retention: Duration,
    logs_retention: Duration,
    profiles_retention: Duration,
    /// (series, day) pairs whose series row this process has written.
    written_series: Mutex<HashSet<(u64, u16)>>,
    /// The last row version handed out: versions only grow, so a later
    /// write of the same (series, timestamp) wins even within a millisecond.
    last_version: AtomicU64,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Whether `name` is safe to splice into SQL as a database name.
fn is_valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

impl ClickHouseStore {
    /// Connects, creates the database if needed and applies migrations.
    pub async fn connect(
        config: &ClickHouseConfig,
        retention: &RetentionConfig,
    ) -> Result<Self, StorageError> {
        if !is_valid_identifier(&config.database) {
            return Err(StorageError::InvalidData(format!(
                "storage.clickhouse.database {:?} is not a plain identifier",
                config.database
            )));
        }
        if !config.cluster.is_empty() && !is_valid_identifier(&config.cluster) {
            return Err(StorageError::InvalidData(format!(
                "storage.clickhouse.cluster {:?} is not a plain identifier",
                config.cluster
            )));
        }
        let cluster = (!config.cluster.is_empty()).then(|| config.cluster.clone());
        let mut client = clickhouse::Client::default()
            .with_url(&config.url)
            .with_validation(false);
        if !config.user.is_empty() {
            client = client.with_user(&config.user);
        }
        if !config.password.is_empty() {
            client = client.with_password(&config.password);
        }
        if cluster.is_some() {
            // Acknowledged means stored on the shards, not queued on the node.
            client = client.with_setting("insert_distributed_sync", "1");
        }
        let store = Self {
            client,
            database: config.database.clone(),
            cluster,
            metrics_retention: retention.metrics,
            traces_retention: retention.traces,
            logs_retention: retention.logs,
            profiles_retention: retention.profiles,
            written_series: Mutex::new(HashSet::new()),
            last_version: AtomicU64::new(0),
        };
        store.migrate().await?;
        tracing::info!(
            url = config.url,
            database = config.database,
            cluster = config.cluster,
            "telemetry store open (ClickHouse)"
        );
        Ok(store)
    }

    /// Whether a batch id (with its signal prefix) was stored for the project.
    async fn batch_seen(&self, project: &str, batch_key: &str) -> Result<bool, StorageError> {
        let seen: u64 = self
            .client
            .query(&self.sql(SQL_BATCH_SEEN))
            .bind(project)
            .bind(batch_key)
            .fetch_one()
            .await
            .map_err(ch_err)?;
        Ok(seen > 0)
    }

    /// The common path of a one-table write: skip a stored batch id, insert
    /// the rows (built with a fresh version), then record the batch id.
    async fn store_rows<T>(
        &self,
        project: &str,
        batch_key: String,
        table: &str,
        records: u64,
        rows: impl FnOnce(u64) -> Vec<T>,
    ) -> Result<WriteOutcome, StorageError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite + Sync,
    {
        if self.batch_seen(project, &batch_key).await? {
            return Ok(WriteOutcome::Duplicate);
        }
        self.insert(table, &rows(self.next_version())).await?;
        self.record_batch(project, batch_key).await?;
        Ok(WriteOutcome::Stored { records })
    }

    /// Records a batch id as stored: the last step of every write.
    async fn record_batch(&self, project: &str, batch_key: String) -> Result<(), StorageError> {
        let now = now_ms();
        self.insert(
            "metric_batches",
            &[BatchRow {
                project: project.to_owned(),
                batch_id: batch_key,
                stored_at_ms: now,
                day: date_of(now),
            }],
        )
        .await
    }

    /// Microseconds since the epoch, or one more than the last version.
    fn next_version(&self) -> u64 {
        let now = u64::try_from(now_ms()).unwrap_or(0).saturating_mul(1000);
        let mut last = self.last_version.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_version.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(current) => last = current,
            }
        }
    }

    fn sql(&self, template: &str) -> String {
        template.replace("{db}", &self.database)
    }

    /// Runs a DDL statement: as it is on one server; in cluster mode
    /// `ON CLUSTER`, tables as `<name>_local` behind a `Distributed` table.
    async fn run_ddl(&self, statement: &str) -> Result<(), StorageError> {
        for sql in cluster_ddl(
            &self.sql(statement),
            &self.database,
            self.cluster.as_deref(),
        ) {
            self.client.query(&sql).execute().await.map_err(ch_err)?;
        }
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StorageError> {
        self.run_ddl(SQL_CREATE_DATABASE).await?;
        self.run_ddl(SQL_CREATE_MIGRATIONS).await?;
        let applied: Vec<u32> = self
            .client
            .query(&self.sql(SQL_APPLIED_MIGRATIONS))
            .fetch_all()
            .await
            .map_err(ch_err)?;
        for (version, statements) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            for statement in *statements {
                self.run_ddl(statement).await?;
            }
            self.client
                .query(&self.sql(SQL_RECORD_MIGRATION))
                .bind(*version)
                .bind(now_ms())
                .execute()
                .await
                .map_err(ch_err)?;
            tracing::info!(
                version,
                database = self.database,
                "ClickHouse migration applied"
            );
        }
        Ok(())
    }

    /// The schema version applied (highest migration).
    pub async fn schema_version(&self) -> Result<u32, StorageError> {
        self.client
            .query(&self.sql(SQL_SCHEMA_VERSION))
            .fetch_one()
            .await
            .map_err(ch_err)
    }

    async fn insert<T>(&self, table: &str, rows: &[T]) -> Result<(), StorageError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite + Sync,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            // Both names are plain identifiers (checked at connect).
            .insert_unescaped::<T>(&format!("{}.{table}", self.database))
            .await
            .map_err(ch_err)?;
        for row in rows {
            insert.write(row).await.map_err(ch_err)?;
        }
        insert.end().await.map_err(ch_err)
    }

    async fn matching_series(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<BTreeMap<u64, Labels>, StorageError> {
        let rows: Vec<SelectedSeries> = self
            .client
            .query(&self.sql(SQL_SELECT_SERIES))
            .bind(project)
            .bind(&selector.metric)
            .bind(date_of(start_ms.max(0)))
            .bind(date_of(end_ms.clamp(0, crate::model::MAX_TIMESTAMP_MS - 1)))
            .fetch_all()
            .await
            .map_err(ch_err)?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let labels: Labels = row.label_names.into_iter().zip(row.label_values).collect();
                selector.matches(&labels).then_some((row.series_id, labels))
            })
            .collect())
    }

    async fn read(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
        end_ms: i64,
        newest_only: bool,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let end_ms = end_ms.min(crate::model::MAX_TIMESTAMP_MS - 1);
        if end_ms < start_ms {
            return Ok(Vec::new());
        }
        let series = self
            .matching_series(project, selector, start_ms, end_ms)
            .await?;
        if series.is_empty() {
            return Ok(Vec::new());
        }
        // Numbers only: safe to splice.
        let ids = series
            .keys()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let template = if newest_only {
            SQL_SAMPLES_LATEST
        } else {
            SQL_SAMPLES_RANGE
        };
        let sql = self.sql(template).replace("{ids}", &ids);
        let rows: Vec<SelectedSample> = self
            .client
            .query(&sql)
            .bind(project)
            .bind(date_of(start_ms.max(0)))
            .bind(date_of(end_ms.max(0)))
            .bind(start_ms)
            .bind(end_ms)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        let mut samples: BTreeMap<u64, Vec<Sample>> = BTreeMap::new();
        for row in rows {
            samples.entry(row.series_id).or_default().push(Sample {
                timestamp_ms: row.ts_ms,
                value: row.value,
            });
        }
        Ok(series
            .into_iter()
            .filter_map(|(id, labels)| {
                samples.remove(&id).map(|samples| SeriesData {
                    metric: selector.metric.clone(),
                    labels,
                    samples,
                })
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl TelemetryStore for ClickHouseStore {
    async fn write_metrics(&self, batch: MetricBatch) -> Result<WriteOutcome, StorageError> {
        batch.validate()?;
        if self.batch_seen(&batch.project, &batch.batch_id).await? {
            return Ok(WriteOutcome::Duplicate);
        }
        let version = self.next_version();
        let mut series_rows = Vec::new();
        let mut sample_rows = Vec::new();
        {
            let written = self
                .written_series
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut new_pairs = HashSet::new();
            for series in &batch.series {
                let id = series_id(&batch.project, &series.metric, &series.labels);
                for sample in &series.samples {
                    let day = date_of(sample.timestamp_ms);
                    if !written.contains(&(id, day)) && new_pairs.insert((id, day)) {
                        series_rows.push(SeriesRow {
                            project: batch.project.clone(),
                            metric: series.metric.clone(),
                            series_id: id,
                            label_names: series.labels.keys().cloned().collect(),
                            label_values: series.labels.values().cloned().collect(),
                            day,
                        });
                    }
                    sample_rows.push(SampleRow {
                        project: batch.project.clone(),
                        series_id: id,
                        ts_ms: sample.timestamp_ms,
                        value: sample.value,
                        version,
                        day,
                    });
                }
            }
        }
        // Series first, then samples, then the batch id: a crash in between
        // leaves no acknowledged batch and a retry fills the gaps.
        self.insert("metric_series", &series_rows).await?;
        self.insert("metric_samples", &sample_rows).await?;
        self.record_batch(&batch.project, batch.batch_id.clone())
            .await?;
        {
            let mut written = self
                .written_series
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if written.len() > 1_000_000 {
                written.clear();
            }
            written.extend(series_rows.iter().map(|r| (r.series_id, r.day)));
        }
        Ok(WriteOutcome::Stored {
            records: sample_rows.len() as u64,
        })
    }

    async fn select(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>, StorageError> {
        self.read(project, selector, start_ms, end_ms, false).await
    }

    async fn latest(
        &self,
        project: &str,
        selector: &SeriesSelector,
        since_ms: i64,
    ) -> Result<Vec<SeriesData>, StorageError> {
        self.read(project, selector, since_ms, i64::MAX, true).await
    }

    async fn metric_names(
        &self,
        project: &str,
        start_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        self.client
            .query(&self.sql(SQL_METRIC_NAMES))
            .bind(project)
            .bind(date_of(
                start_ms.clamp(0, crate::model::MAX_TIMESTAMP_MS - 1),
            ))
            .fetch_all::<String>()
            .await
            .map_err(ch_err)
    }

    async fn series(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        let end_ms = crate::model::MAX_TIMESTAMP_MS - 1;
        Ok(self
            .matching_series(project, selector, start_ms, end_ms)
            .await?
            .into_values()
            .collect())
    }

    async fn write_spans(&self, batch: SpanBatch) -> Result<WriteOutcome, StorageError> {
        batch.validate()?;
        let batch_key = format!("spans/{}", batch.batch_id);
        if self.batch_seen(&batch.project, &batch_key).await? {
            return Ok(WriteOutcome::Duplicate);
        }
        let version = self.next_version();
        let rows = batch
            .spans
            .iter()
            .map(|span| SpanRow::from_span(&batch.project, span, version))
            .collect::<Result<Vec<_>, _>>()?;
        let mut where_: std::collections::BTreeMap<([u8; 16], u16, &str), (i64, i64)> =
            Default::default();
        for r in &rows {
            let range = where_
                .entry((r.trace_id, r.day, r.service.as_str()))
                .or_insert((r.start_ns, r.start_ns));
            range.0 = range.0.min(r.start_ns);
            range.1 = range.1.max(r.start_ns);
        }
        let lookup: Vec<TraceLookupRow> = where_
            .into_iter()
            .map(
                |((trace_id, day, service), (start_min, start_max))| TraceLookupRow {
                    project: batch.project.clone(),
                    trace_id,
                    day,
                    service: service.to_owned(),
                    start_min,
                    start_max,
                },
            )
            .collect();
        // The lookup first: no span is stored without a way to find it.
        self.insert("trace_lookup", &lookup).await?;
        self.insert("spans", &rows).await?;
        self.record_batch(&batch.project, batch_key).await?;
        Ok(WriteOutcome::Stored {
            records: rows.len() as u64,
        })
    }

    async fn trace(&self, project: &str, trace_id: [u8; 16]) -> Result<Vec<Span>, StorageError> {
        let hex_id = crate::trace::hex(&trace_id);
        let locations: Vec<TraceLocation> = self
            .client
            .query(&self.sql(SQL_TRACE_LOOKUP))
            .bind(project)
            .bind(&hex_id)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        if locations.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<SpanRow> = self
            .client
            .query(
                &self
                    .sql(SQL_TRACE_SPANS)
                    .replace("{columns}", SPAN_COLUMNS)
                    .replace("{where}", &trace_where(&locations)),
            )
            .bind(&hex_id)
            .bind(project)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        let mut spans = rows
            .into_iter()
            .map(SpanRow::into_span)
            .collect::<Result<Vec<_>, _>>()?;
        crate::trace::sort_trace(&mut spans);
        Ok(spans)
    }

    async fn search_spans(
        &self,
        project: &str,
        query: &TraceQuery,
    ) -> Result<Vec<SpanSummary>, StorageError> {
        if query.end_ns < query.start_ns {
            return Ok(Vec::new());
        }
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let mut filters = String::new();
        if let Some(service) = &query.service {
            filters += &format!(" AND service = {}", sql_string(service));
        }
        if let Some(operation) = &query.operation {
            filters += &format!(" AND name = {}", sql_string(operation));
        }
        if let Some(d) = query.min_duration_ns {
            filters += &format!(" AND duration_ns >= {d}");
        }
        if let Some(d) = query.max_duration_ns {
            filters += &format!(" AND duration_ns <= {d}");
        }
        if let Some(status) = query.status {
            filters += &format!(" AND status_code = {}", status.code());
        }
        let start_ms = query.start_ns.div_euclid(1_000_000);
        let end_ms = query.end_ns.div_euclid(1_000_000);
        let rows: Vec<SummaryRow> = self
            .client
            .query(
                &self
                    .sql(SQL_SEARCH_SPANS)
                    .replace("{filters}", &filters)
                    .replace("{limit}", &limit.to_string()),
            )
            .bind(project)
            .bind(date_of(start_ms.max(0)))
            .bind(date_of(end_ms.clamp(0, crate::model::MAX_TIMESTAMP_MS - 1)))
            .bind(query.start_ns)
            .bind(query.end_ns)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        let mut out: Vec<SpanSummary> = rows
            .into_iter()
            .map(|r| SpanSummary {
                trace_id: r.trace_id,
                span_id: r.span_id.to_be_bytes(),
                service: r.service,
                name: r.name,
                start_ns: r.start_ns,
                duration_ns: r.duration_ns,
                status: StatusCode::from_code(r.status_code),
            })
            .collect();
        crate::trace::sort_summaries(&mut out);
        Ok(out)
    }

    async fn write_logs(&self, batch: LogBatch) -> Result<WriteOutcome, StorageError> {
        batch.validate()?;
        let key = format!("logs/{}", batch.batch_id);
        let count = batch.records.len() as u64;
        self.store_rows(&batch.project, key, "logs", count, |version| {
            batch
                .records
                .iter()
                .enumerate()
                .map(|(index, record)| {
                    let id = record_id(&batch.project, &batch.batch_id, index);
                    LogRow::from_record(&batch.project, id, record, version)
                })
                .collect()
        })
        .await
    }

    async fn search_logs(&self, project: &str, query: &LogQuery) -> Result<LogPage, StorageError> {
        if query.end_ns < query.start_ns {
            return Ok(LogPage::default());
        }
        let limit = query.page_size();
        let mut filters = String::new();
        if let Some(service) = &query.service {
            filters += &format!(" AND service = {}", sql_string(service));
        }
        filters += &resource_filter(&query.resource);
        if let Some(severity) = query.min_severity {
            filters += &format!(" AND severity >= {severity}");
        }
        let query_tokens = query.text.as_deref().map(tokens).unwrap_or_default();
        if !query_tokens.is_empty() {
            let list = query_tokens
                .iter()
                .map(|t| sql_string(t))
                .collect::<Vec<_>>()
                .join(",");
            filters += &format!(" AND hasAll(tokens, [{list}])");
        }
        if let Some(pattern) = query.pattern_id {
            filters += &format!(" AND pattern_id = {pattern}");
        }
        if let Some(trace_id) = query.trace_id {
            filters += &format!(" AND trace_id = unhex('{}')", crate::trace::hex(&trace_id));
        }
        if let Some(after) = query.after {
            filters += &format!(" AND (time_ns, id) < ({}, {})", after.time_ns, after.id);
        }
        let rows: Vec<LogRow> = self
            .client
            .query(
                &self
                    .sql(SQL_SEARCH_LOGS)
                    .replace("{columns}", LOG_COLUMNS)
                    .replace("{filters}", &filters)
                    .replace("{limit}", &(limit + 1).to_string()),
            )
            .bind(project)
            .bind(date_of(query.start_ns.div_euclid(1_000_000).max(0)))
            .bind(date_of(
                query
                    .end_ns
                    .div_euclid(1_000_000)
                    .clamp(0, crate::model::MAX_TIMESTAMP_MS - 1),
            ))
            .bind(query.start_ns)
            .bind(query.end_ns)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        Ok(LogPage::from_matches(
            rows.into_iter().map(LogRow::into_entry).collect(),
            limit,
        ))
    }

    async fn write_profiles(&self, batch: ProfileBatch) -> Result<WriteOutcome, StorageError> {
        batch.validate()?;
        let key = format!("profiles/{}", batch.batch_id);
        let count = batch.profiles.len() as u64;
        self.store_rows(&batch.project, key, "profile_stacks", count, |version| {
            let mut rows = Vec::new();
            for (index, profile) in batch.profiles.iter().enumerate() {
                let id = record_id(&batch.project, &batch.batch_id, index);
                for (stack_index, stack) in profile.stacks.iter().enumerate() {
                    rows.push(ProfileStackRow {
                        project: batch.project.clone(),
                        time_ns: profile.time_ns,
                        id,
                        stack_index: u32::try_from(stack_index).unwrap_or(u32::MAX),
                        duration_ns: profile.duration_ns,
                        profile_type: profile.profile_type.clone(),
                        service: profile.service.clone(),
                        resource_names: profile.resource.keys().cloned().collect(),
                        resource_values: profile.resource.values().cloned().collect(),
                        frames: stack.frames.clone(),
                        value: stack.value,
                        version,
                        day: date_of(profile.time_ns.div_euclid(1_000_000)),
                    });
                }
            }
            rows
        })
        .await
    }

    async fn merge_profiles(
        &self,
        project: &str,
        query: &ProfileQuery,
    ) -> Result<Vec<StackSample>, StorageError> {
        if query.end_ns < query.start_ns {
            return Ok(Vec::new());
        }
        let mut filters = resource_filter(&query.resource);
        if let Some(service) = &query.service {
            filters += &format!(" AND service = {}", sql_string(service));
        }
        let (low, high) = day_bounds(query.start_ns, query.end_ns);
        let rows: Vec<MergedStackRow> = self
            .client
            .query(&self.sql(SQL_MERGE_PROFILES).replace("{filters}", &filters))
            .bind(project)
            .bind(&query.profile_type)
            .bind(low)
            .bind(high)
            .bind(query.start_ns)
            .bind(query.end_ns)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        Ok(merge_stacks(rows.into_iter().map(|r| StackSample {
            frames: r.frames,
            value: r.value,
        })))
    }

    async fn write_events(&self, batch: EventBatch) -> Result<WriteOutcome, StorageError> {
        batch.validate()?;
        let key = format!("events/{}", batch.batch_id);
        let count = batch.events.len() as u64;
        self.store_rows(&batch.project, key, "events", count, |version| {
            batch
                .events
                .iter()
                .enumerate()
                .map(|(index, e)| EventRow {
                    project: batch.project.clone(),
                    time_ns: e.time_ns,
                    id: record_id(&batch.project, &batch.batch_id, index),
                    kind: e.kind.clone(),
                    reason: e.reason.clone(),
                    object: e.object.clone(),
                    message: e.message.clone(),
                    resource_names: e.resource.keys().cloned().collect(),
                    resource_values: e.resource.values().cloned().collect(),
                    version,
                    day: date_of(e.time_ns.div_euclid(1_000_000)),
                })
                .collect::<Vec<EventRow>>()
        })
        .await
    }

    async fn list_events(
        &self,
        project: &str,
        query: &EventQuery,
    ) -> Result<Vec<Event>, StorageError> {
        if query.end_ns < query.start_ns {
            return Ok(Vec::new());
        }
        let mut filters = resource_filter(&query.resource);
        if let Some(kind) = &query.kind {
            filters += &format!(" AND kind = {}", sql_string(kind));
        }
        if let Some(reason) = &query.reason {
            filters += &format!(" AND reason = {}", sql_string(reason));
        }
        let (low, high) = day_bounds(query.start_ns, query.end_ns);
        let rows: Vec<ListedEventRow> = self
            .client
            .query(
                &self
                    .sql(SQL_LIST_EVENTS)
                    .replace("{filters}", &filters)
                    .replace("{limit}", &query.page_size().to_string()),
            )
            .bind(project)
            .bind(low)
            .bind(high)
            .bind(query.start_ns)
            .bind(query.end_ns)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        let mut events: Vec<Event> = rows
            .into_iter()
            .map(|r| Event {
                time_ns: r.time_ns,
                kind: r.kind,
                reason: r.reason,
                object: r.object,
                message: r.message,
                resource: r
                    .resource_names
                    .into_iter()
                    .zip(r.resource_values)
                    .collect(),
            })
            .collect();
        sort_events(&mut events);
        Ok(events)
    }

    async fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport, StorageError> {
        let cutoff = |retention: Duration| {
            day_of(now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX)))
        };
        let (metrics_cutoff, traces_cutoff, logs_cutoff, profiles_cutoff) = (
            cutoff(self.metrics_retention),
            cutoff(self.traces_retention),
            cutoff(self.logs_retention),
            cutoff(self.profiles_retention),
        );
        // In cluster mode the partitions are those of every node's local tables.
        let suffix = if self.cluster.is_some() {
            LOCAL_SUFFIX
        } else {
            ""
        };
        let tables = METRIC_TABLES
            .iter()
            .chain(TRACE_TABLES)
            .chain(LOG_TABLES)
            .chain(PROFILE_TABLES)
            .map(|t| format!("'{t}{suffix}'"))
            .collect::<Vec<_>>()
            .join(",");
        let parts_table = match &self.cluster {
            Some(cluster) => format!("cluster('{cluster}', system.parts)"),
            None => "system.parts".to_owned(),
        };
        let partitions: Vec<Partition> = self
            .client
            .query(
                &SQL_PARTITIONS
                    .replace("{tables}", &tables)
                    .replace("system.parts", &parts_table),
            )
            .bind(&self.database)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        let partitions: Vec<Partition> = partitions
            .into_iter()
            .map(|p| Partition {
                table: p.table.trim_end_matches(LOCAL_SUFFIX).to_owned(),
                partition: p.partition,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut report = MaintenanceReport::default();
        for p in partitions {
            let Some(day) = parse_day(&p.partition) else {
                tracing::warn!(
                    table = p.table,
                    partition = p.partition,
                    "unexpected partition name; left alone"
                );
                continue;
            };
            // A whole day goes once all of it is older than the cutoff.
            let cutoff_day = if TRACE_TABLES.contains(&p.table.as_str()) {
                traces_cutoff
            } else if LOG_TABLES.contains(&p.table.as_str()) {
                logs_cutoff
            } else if PROFILE_TABLES.contains(&p.table.as_str()) {
                profiles_cutoff
            } else {
                metrics_cutoff
            };
            if day >= cutoff_day {
                continue;
            }
            let name = p.partition.trim_matches('\'');
            let table = match &self.cluster {
                Some(cluster) => format!("{}{LOCAL_SUFFIX} ON CLUSTER {cluster}", p.table),
                None => p.table.clone(),
            };
            self.client
                .query(
                    &self
                        .sql(SQL_DROP_PARTITION)
                        .replace("{table}", &table)
                        .replace("{partition}", name),
                )
                .execute()
                .await
                .map_err(ch_err)?;
            match p.table.as_str() {
                "spans" => report.spans_dropped += 1,
                "logs" => report.logs_dropped += 1,
                "events" => report.events_dropped += 1,
                "profile_stacks" => report.profiles_dropped += 1,
                "trace_index" | "trace_lookup" => {}
                "metric_samples" => report.blocks_dropped += 1,
                "metric_series" => report.series_dropped += 1,
                _ => report.batches_dropped += 1,
            }
        }
        Ok(report)
    }
}

/// Suffix of the per-node tables behind the `Distributed` ones.
const LOCAL_SUFFIX: &str = "_local";

/// How each table's rows are spread over shards: every version of a row
/// lands on the same shard, so `argMax` / `LIMIT 1 BY` still see them all.
fn sharding_key(table: &str) -> &'static str {
    match table {
        "metric_series" | "metric_samples" => "series_id",
        "spans" | "trace_index" | "trace_lookup" => "cityHash64(trace_id)",
        "logs" | "profile_stacks" | "events" => "id",
        "schema_migrations" => "version",
        _ => "cityHash64(project, batch_id)",
    }
}

/// A DDL statement for one server, or its cluster form: `ON CLUSTER` for
/// the database; for a table, `<name>_local` on every node and a
/// `Distributed` table of the name in front of it.
fn cluster_ddl(sql: &str, database: &str, cluster: Option<&str>) -> Vec<String> {
    let Some(cluster) = cluster else {
        return vec![sql.to_owned()];
    };
    let create_table = format!("CREATE TABLE IF NOT EXISTS {database}.");
    if let Some(rest) = sql.trim_start().strip_prefix(&create_table) {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, definition) = rest.split_at(name_end);
        return vec![
            format!("{create_table}{name}{LOCAL_SUFFIX} ON CLUSTER {cluster}{definition}"),
            format!(
                "{create_table}{name} ON CLUSTER {cluster} AS {database}.{name}{LOCAL_SUFFIX} \
                 ENGINE = Distributed({cluster}, {database}, {name}{LOCAL_SUFFIX}, {})",
                sharding_key(name)
            ),
        ];
    }
    if sql.trim_start().starts_with("CREATE DATABASE") {
        return vec![format!("{sql} ON CLUSTER {cluster}")];
    }
    vec![sql.to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ddl_makes_local_and_distributed_tables() {
        let one = cluster_ddl(
            "CREATE TABLE IF NOT EXISTS db.spans (a UInt8) ENGINE = Log",
            "db",
            None,
        );
        assert_eq!(
            one,
            ["CREATE TABLE IF NOT EXISTS db.spans (a UInt8) ENGINE = Log"]
        );
        let two = cluster_ddl(
            "CREATE TABLE IF NOT EXISTS db.spans (a UInt8) ENGINE = Log",
            "db",
            Some("c1"),
        );
        assert_eq!(
            two,
            [
                "CREATE TABLE IF NOT EXISTS db.spans_local ON CLUSTER c1 (a UInt8) ENGINE = Log",
                "CREATE TABLE IF NOT EXISTS db.spans ON CLUSTER c1 AS db.spans_local \
                 ENGINE = Distributed(c1, db, spans_local, cityHash64(trace_id))"
            ]
        );
        assert_eq!(
            cluster_ddl("CREATE DATABASE IF NOT EXISTS db", "db", Some("c1")),
            ["CREATE DATABASE IF NOT EXISTS db ON CLUSTER c1"]
        );
    }

    #[test]
    fn partition_names_to_days() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("'2026-11-21'"), Some(day_of(1_795_219_200_000)));
        assert_eq!(parse_day("2000-03-01"), Some(11_017));
        assert_eq!(parse_day("nonsense"), None);
    }

    /// `CLICKHOUSE_SQL_DUMP=FILE cargo test -p vigil-storage dump_sql` writes
    /// every statement, one per line, for scripts/check-modern-clickhouse.py.
    #[test]
    fn dump_sql() {
        let catalog = sql_catalog("vigil_check");
        assert!(
            catalog
                .iter()
                .all(|s| !s.contains('?') && !s.contains("{db}"))
        );
        assert!(catalog.len() > 10);
        if let Ok(path) = std::env::var("CLICKHOUSE_SQL_DUMP") {
            let text: String = catalog
                .iter()
                .map(|s| s.replace('\n', " ") + "\n")
                .collect();
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn identifiers() {
        assert!(is_valid_identifier("vigil"));
        assert!(is_valid_identifier("vigil_test_01"));
        assert!(!is_valid_identifier("vigil; DROP TABLE x"));
        assert!(!is_valid_identifier(""));
    }
}
