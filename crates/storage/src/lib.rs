//! Vigil's telemetry data model and the one interface every backend offers.
//!
//! Metrics follow the Prometheus model: a metric name, labels, float samples
//! with millisecond timestamps. Spans follow OpenTelemetry's ([`trace`]).
//! Every record belongs to a project and carries its resource (`cluster`,
//! `node`, `namespace`, `application`, `container`).
//!
//! Backends: [`redb`] (embedded, one file, one process: the monolith) and
//! [`clickhouse`] (split deployments). `tests/conformance.rs` holds them to
//! the same answers.

pub mod block;
pub mod clickhouse;
pub mod config;
pub mod error;
pub mod log;
pub mod model;
pub mod profile;
pub mod redb;
pub mod trace;

use std::sync::Arc;

pub use config::{Backend, StorageConfig};
pub use error::StorageError;
pub use log::{LogBatch, LogCursor, LogEntry, LogPage, LogQuery, LogRecord};
pub use model::{
    Labels, Matcher, MatcherOp, MetricBatch, Sample, SeriesData, SeriesSelector, SeriesWrite,
    WriteOutcome,
};
pub use profile::{
    Event, EventBatch, EventQuery, Profile, ProfileBatch, ProfileQuery, StackSample,
};
pub use trace::{Span, SpanBatch, SpanSummary, TraceQuery};

/// What storage every service sees. Writes are acknowledged only once they
/// are durable; a batch id already stored for the project is not written again.
#[async_trait::async_trait]
pub trait TelemetryStore: Send + Sync + std::fmt::Debug {
    /// Stores a batch atomically: all of it or nothing.
    async fn write_metrics(&self, batch: MetricBatch) -> Result<WriteOutcome, StorageError>;

    /// Samples in `[start_ms, end_ms]` of every series the selector matches.
    async fn select(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>, StorageError>;

    /// The newest sample at or after `since_ms` of every matching series;
    /// series with no such sample are left out.
    async fn latest(
        &self,
        project: &str,
        selector: &SeriesSelector,
        since_ms: i64,
    ) -> Result<Vec<SeriesData>, StorageError>;

    /// Names of the metrics that have a series with samples at or after
    /// `start_ms` (coarse: a backend may keep a series a little longer than
    /// its samples, never shorter), sorted.
    async fn metric_names(&self, project: &str, start_ms: i64)
    -> Result<Vec<String>, StorageError>;

    /// Labels of every series the selector matches that has samples at or
    /// after `start_ms` (as coarse as [`Self::metric_names`]); no samples
    /// are read.
    async fn series(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
    ) -> Result<Vec<Labels>, StorageError>;

    /// Stores spans atomically; a batch id already stored for the project
    /// is not written again (span and metric batch ids are separate).
    async fn write_spans(&self, batch: SpanBatch) -> Result<WriteOutcome, StorageError>;

    /// Every span of a trace, in start order.
    async fn trace(&self, project: &str, trace_id: [u8; 16]) -> Result<Vec<Span>, StorageError>;

    /// Spans matching `query`, newest first, at most `query.limit` (0: 100).
    async fn search_spans(
        &self,
        project: &str,
        query: &TraceQuery,
    ) -> Result<Vec<SpanSummary>, StorageError>;

    /// Stores log records atomically; idempotent per batch id (log batch ids
    /// are apart from metric and span batch ids).
    async fn write_logs(&self, batch: LogBatch) -> Result<WriteOutcome, StorageError>;

    /// One page of the records matching `query`, newest first.
    async fn search_logs(&self, project: &str, query: &LogQuery) -> Result<LogPage, StorageError>;

    /// Stores profiles atomically; idempotent per batch id.
    async fn write_profiles(&self, batch: ProfileBatch) -> Result<WriteOutcome, StorageError>;

    /// The matching profiles merged: equal stacks summed, largest first.
    async fn merge_profiles(
        &self,
        project: &str,
        query: &ProfileQuery,
    ) -> Result<Vec<StackSample>, StorageError>;

    /// Stores events atomically; idempotent per batch id.
    async fn write_events(&self, batch: EventBatch) -> Result<WriteOutcome, StorageError>;

    /// Matching events, newest first, at most `query.limit` (0: 100).
    async fn list_events(
        &self,
        project: &str,
        query: &EventQuery,
    ) -> Result<Vec<Event>, StorageError>;

    /// Background upkeep as of `now_ms`: compaction and retention.
    async fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport, StorageError>;
}

/// What one round of [`TelemetryStore::maintain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub samples_compacted: u64,
    pub blocks_written: u64,
    pub blocks_dropped: u64,
    pub series_dropped: u64,
    pub batches_dropped: u64,
    pub spans_dropped: u64,
    pub logs_dropped: u64,
    pub profiles_dropped: u64,
    pub events_dropped: u64,
}

/// Runs [`TelemetryStore::maintain`] every `interval` until shutdown. The
/// process that owns the store runs this (the monolith, for redb).
pub async fn run_maintenance(
    store: Arc<dyn TelemetryStore>,
    interval: std::time::Duration,
    shutdown: vigil_runtime::Shutdown,
) {
    while shutdown.sleep(interval).await {
        match store.maintain(vigil_runtime::time::now_ms()).await {
            Ok(report) => tracing::debug!(?report, "storage maintenance done"),
            Err(e) => tracing::warn!(error = %e, "storage maintenance failed; will retry"),
        }
    }
}

/// Checks every record of a batch before anything is written, so that both
/// backends refuse the same batches, whole.
macro_rules! batch_validation {
    ($($batch:ty => $records:ident),* $(,)?) => {$(
        impl $batch {
            /// Refuses the batch if any record is invalid, naming the problem.
            pub fn validate(&self) -> Result<(), StorageError> {
                self.$records.iter().try_for_each(|record| record.validate())
            }
        }
    )*};
}

batch_validation!(
    MetricBatch => series,
    SpanBatch => spans,
    LogBatch => records,
    ProfileBatch => profiles,
    EventBatch => events,
);

/// How the process that opens the store is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// One `vigil` process hosting every service that touches the store.
    Monolith,
    /// A service started on its own, beside other processes.
    Standalone { service: &'static str },
}

/// Opens the configured backend (for ClickHouse: connects and migrates).
pub async fn open(
    config: &StorageConfig,
    data_dir: &std::path::Path,
    deployment: Deployment,
) -> Result<Arc<dyn TelemetryStore>, StorageError> {
    match (config.backend, deployment) {
        (Backend::Redb, Deployment::Standalone { service }) => {
            Err(StorageError::RedbNeedsMonolith { service })
        }
        (Backend::Redb, Deployment::Monolith) => {
            let path = config
                .redb
                .path
                .clone()
                .unwrap_or_else(|| data_dir.join("telemetry.redb"));
            let options = redb::RedbOptions {
                metrics_retention_ms: vigil_runtime::time::millis(config.retention.metrics),
                traces_retention_ms: vigil_runtime::time::millis(config.retention.traces),
                logs_retention_ms: vigil_runtime::time::millis(config.retention.logs),
                profiles_retention_ms: vigil_runtime::time::millis(config.retention.profiles),
                ..redb::RedbOptions::default()
            };
            let store = redb::RedbStore::open_with(&path, options)?;
            Ok(Arc::new(store))
        }
        (Backend::Clickhouse, _) => Ok(Arc::new(
            clickhouse::ClickHouseStore::connect(&config.clickhouse, &config.retention).await?,
        )),
    }
}
