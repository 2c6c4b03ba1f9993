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
    collections::{BTreeMap, HashSet},
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
    config::ClickHouseConfig,
    model::{
        Labels, MetricBatch, Sample, SeriesData, SeriesSelector, WriteOutcome, day_of, series_id,
    },
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
        fill(SQL_PARTITIONS, &[&format!("'{database}'")]),
        fill(SQL_DROP_PARTITION, &[])
            .replace("{table}", "metric_samples")
            .replace("{partition}", "2023-12-09"),
    ]);
    out
}

/// Tables whose old daily partitions retention drops, with the retention they follow.
const METRIC_TABLES: &[&str] = &["metric_series", "metric_samples", "metric_batches"];

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

#[derive(Debug, clickhouse::Row, Deserialize)]
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
    metrics_retention: Duration,
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
        metrics_retention: Duration,
    ) -> Result<Self, StorageError> {
        if !is_valid_identifier(&config.database) {
            return Err(StorageError::InvalidData(format!(
                "storage.clickhouse.database {:?} is not a plain identifier",
                config.database
            )));
        }
        let mut client = clickhouse::Client::default()
            .with_url(&config.url)
            .with_validation(false);
        if !config.user.is_empty() {
            client = client.with_user(&config.user);
        }
        if !config.password.is_empty() {
            client = client.with_password(&config.password);
        }
        let store = Self {
            client,
            database: config.database.clone(),
            metrics_retention,
            written_series: Mutex::new(HashSet::new()),
            last_version: AtomicU64::new(0),
        };
        store.migrate().await?;
        tracing::info!(
            url = config.url,
            database = config.database,
            "telemetry store open (ClickHouse)"
        );
        Ok(store)
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

    async fn migrate(&self) -> Result<(), StorageError> {
        self.client
            .query(&self.sql(SQL_CREATE_DATABASE))
            .execute()
            .await
            .map_err(ch_err)?;
        self.client
            .query(&self.sql(SQL_CREATE_MIGRATIONS))
            .execute()
            .await
            .map_err(ch_err)?;
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
                self.client
                    .query(&self.sql(statement))
                    .execute()
                    .await
                    .map_err(ch_err)?;
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
        for series in &batch.series {
            series.validate()?;
        }
        let seen: u64 = self
            .client
            .query(&self.sql(SQL_BATCH_SEEN))
            .bind(&batch.project)
            .bind(&batch.batch_id)
            .fetch_one()
            .await
            .map_err(ch_err)?;
        if seen > 0 {
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
        let now = now_ms();
        self.insert(
            "metric_batches",
            &[BatchRow {
                project: batch.project.clone(),
                batch_id: batch.batch_id.clone(),
                stored_at_ms: now,
                day: date_of(now),
            }],
        )
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
            samples: sample_rows.len() as u64,
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

    async fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport, StorageError> {
        let cutoff_day =
            day_of(now_ms.saturating_sub(
                i64::try_from(self.metrics_retention.as_millis()).unwrap_or(i64::MAX),
            ));
        let tables = METRIC_TABLES
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(",");
        let partitions: Vec<Partition> = self
            .client
            .query(&SQL_PARTITIONS.replace("{tables}", &tables))
            .bind(&self.database)
            .fetch_all()
            .await
            .map_err(ch_err)?;
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
            if day >= cutoff_day {
                continue;
            }
            let name = p.partition.trim_matches('\'');
            self.client
                .query(
                    &self
                        .sql(SQL_DROP_PARTITION)
                        .replace("{table}", &p.table)
                        .replace("{partition}", name),
                )
                .execute()
                .await
                .map_err(ch_err)?;
            match p.table.as_str() {
                "metric_samples" => report.blocks_dropped += 1,
                "metric_series" => report.series_dropped += 1,
                _ => report.batches_dropped += 1,
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
