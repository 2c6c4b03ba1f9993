//! The embedded backend: one redb file, opened by one process.
//!
//! Tables:
//! - `series`: series id → (project, metric, labels), postcard-encoded;
//! - `series_by_metric`: (project, metric, series id) → () for selection;
//! - `samples`: (series id, timestamp ms) → value;
//! - `batches`: (project, batch id) → time stored, for idempotent retries.
//!
//! Series ids are the xxh3 hash of project, metric and sorted labels; a hash
//! collision is detected on write and refused rather than mixing series.
//! Every write is one transaction committed with immediate durability (fsync)
//! before the caller is told it is stored.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};
use vigil_runtime::time::now_ms;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{
    StorageError, TelemetryStore,
    model::{Labels, MetricBatch, Sample, SeriesData, SeriesSelector, WriteOutcome},
};

const SERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("series");
const SERIES_BY_METRIC: TableDefinition<(&str, &str, u64), ()> =
    TableDefinition::new("series_by_metric");
const SAMPLES: TableDefinition<(u64, i64), f64> = TableDefinition::new("samples");
const BATCHES: TableDefinition<(&str, &str), i64> = TableDefinition::new("batches");

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct SeriesMeta {
    project: String,
    metric: String,
    labels: Vec<(String, String)>,
}

/// Telemetry in one redb file.
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl RedbStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = open_database(path)?;
        // Create the tables once so that readers never meet a missing table.
        let txn = db.begin_write()?;
        txn.open_table(SERIES)?;
        txn.open_table(SERIES_BY_METRIC)?;
        txn.open_table(SAMPLES)?;
        txn.open_table(BATCHES)?;
        txn.commit()?;
        tracing::info!(path = %path.display(), "telemetry store open (redb)");
        Ok(Self {
            db: Arc::new(db),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_blocking(&self, batch: &MetricBatch) -> Result<WriteOutcome, StorageError> {
        for series in &batch.series {
            series.validate()?;
        }
        let txn = self.db.begin_write()?;
        let samples_stored = {
            let mut batches = txn.open_table(BATCHES)?;
            if batches
                .get((batch.project.as_str(), batch.batch_id.as_str()))?
                .is_some()
            {
                return Ok(WriteOutcome::Duplicate);
            }
            let mut series_table = txn.open_table(SERIES)?;
            let mut by_metric = txn.open_table(SERIES_BY_METRIC)?;
            let mut samples = txn.open_table(SAMPLES)?;
            let mut stored = 0u64;
            for series in &batch.series {
                let id = series_id(&batch.project, &series.metric, &series.labels);
                let meta = SeriesMeta {
                    project: batch.project.clone(),
                    metric: series.metric.clone(),
                    labels: series
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                };
                let existing = series_table
                    .get(id)?
                    .map(|v| decode_meta(v.value()))
                    .transpose()?;
                match existing {
                    Some(existing) if existing != meta => {
                        return Err(StorageError::InvalidData(format!(
                            "series id collision between {} and {}; series refused",
                            existing.metric, meta.metric
                        )));
                    }
                    Some(_) => {}
                    None => {
                        let encoded = encode_record(&meta)?;
                        series_table.insert(id, encoded.as_slice())?;
                        by_metric
                            .insert((batch.project.as_str(), series.metric.as_str(), id), ())?;
                    }
                }
                for sample in &series.samples {
                    samples.insert((id, sample.timestamp_ms), sample.value)?;
                    stored += 1;
                }
            }
            batches.insert((batch.project.as_str(), batch.batch_id.as_str()), now_ms())?;
            stored
        };
        txn.commit()?;
        Ok(WriteOutcome::Stored {
            samples: samples_stored,
        })
    }

    fn read_blocking(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
        end_ms: i64,
        newest_only: bool,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let txn = self.db.begin_read()?;
        let series_table = txn.open_table(SERIES)?;
        let by_metric = txn.open_table(SERIES_BY_METRIC)?;
        let samples = txn.open_table(SAMPLES)?;
        let metric = selector.metric.as_str();
        let mut out = Vec::new();
        for entry in by_metric.range((project, metric, 0u64)..=(project, metric, u64::MAX))? {
            let (key, _) = entry?;
            let id = key.value().2;
            let Some(meta) = series_table.get(id)? else {
                return Err(StorageError::Corrupt(format!(
                    "series {id} indexed but not stored"
                )));
            };
            let meta = decode_meta(meta.value())?;
            let labels: Labels = meta.labels.into_iter().collect();
            if !selector.matches(&labels) {
                continue;
            }
            let mut range = samples.range((id, start_ms)..=(id, end_ms))?;
            let points: Vec<Sample> = if newest_only {
                match range.next_back() {
                    Some(entry) => {
                        let (k, v) = entry?;
                        vec![Sample {
                            timestamp_ms: k.value().1,
                            value: v.value(),
                        }]
                    }
                    None => Vec::new(),
                }
            } else {
                range
                    .map(|entry| {
                        let (k, v) = entry?;
                        Ok(Sample {
                            timestamp_ms: k.value().1,
                            value: v.value(),
                        })
                    })
                    .collect::<Result<_, StorageError>>()?
            };
            if points.is_empty() {
                continue;
            }
            out.push(SeriesData {
                metric: meta.metric,
                labels,
                samples: points,
            });
        }
        Ok(out)
    }
}

/// Opens (creating it and its folder if needed) a redb file. redb holds a
/// file for one process: a file open elsewhere is refused with a clear error.
/// Services keep their own state (incidents, pings) with this too.
pub fn open_database(path: &Path) -> Result<Database, StorageError> {
    let open_err = |message: String| StorageError::Open {
        path: path.to_owned(),
        message,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| open_err(e.to_string()))?;
    }
    Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StorageError::AlreadyOpen {
            path: path.to_owned(),
        },
        other => open_err(other.to_string()),
    })
}

/// Encodes a record for a redb value (postcard).
pub fn encode_record<T: Serialize>(record: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_stdvec(record).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// Decodes a record written by [`encode_record`].
pub fn decode_record<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))
}

fn decode_meta(bytes: &[u8]) -> Result<SeriesMeta, StorageError> {
    decode_record(bytes)
}

fn series_id(project: &str, metric: &str, labels: &Labels) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in [project, metric] {
        hasher.update(part.as_bytes());
        hasher.update(&[0xff]);
    }
    for (k, v) in labels {
        hasher.update(k.as_bytes());
        hasher.update(&[0xfe]);
        hasher.update(v.as_bytes());
        hasher.update(&[0xff]);
    }
    hasher.digest()
}

async fn blocking<T, F>(f: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Io(format!("storage task failed: {e}")))?
}

#[async_trait::async_trait]
impl TelemetryStore for RedbStore {
    async fn write_metrics(&self, batch: MetricBatch) -> Result<WriteOutcome, StorageError> {
        let this = self.clone();
        blocking(move || this.write_blocking(&batch)).await
    }

    async fn select(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let (this, project, selector) = (self.clone(), project.to_owned(), selector.clone());
        blocking(move || this.read_blocking(&project, &selector, start_ms, end_ms, false)).await
    }

    async fn latest(
        &self,
        project: &str,
        selector: &SeriesSelector,
        since_ms: i64,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let (this, project, selector) = (self.clone(), project.to_owned(), selector.clone());
        blocking(move || this.read_blocking(&project, &selector, since_ms, i64::MAX, true)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Matcher, SeriesWrite};

    fn series(metric: &str, node: &str, points: &[(i64, f64)]) -> SeriesWrite {
        SeriesWrite {
            metric: metric.into(),
            labels: [("node".to_owned(), node.to_owned())].into(),
            samples: points
                .iter()
                .map(|&(timestamp_ms, value)| Sample {
                    timestamp_ms,
                    value,
                })
                .collect(),
        }
    }

    fn batch(project: &str, id: &str, series: Vec<SeriesWrite>) -> MetricBatch {
        MetricBatch {
            project: project.into(),
            batch_id: id.into(),
            series,
        }
    }

    #[tokio::test]
    async fn write_select_latest_and_project_isolation() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
        let outcome = store
            .write_metrics(batch(
                "p1",
                "b1",
                vec![
                    series("cpu", "a", &[(1000, 0.5), (2000, 0.7)]),
                    series("cpu", "b", &[(1500, 0.1)]),
                    series("mem", "a", &[(1000, 42.0)]),
                ],
            ))
            .await
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Stored { samples: 4 });
        store
            .write_metrics(batch("p2", "b1", vec![series("cpu", "a", &[(1000, 9.0)])]))
            .await
            .unwrap();

        let all = store
            .select("p1", &SeriesSelector::metric("cpu"), 0, 10_000)
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        let a = store
            .select(
                "p1",
                &SeriesSelector::metric("cpu").with(Matcher::equal("node", "a")),
                0,
                1500,
            )
            .await
            .unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].samples,
            vec![Sample {
                timestamp_ms: 1000,
                value: 0.5
            }]
        );

        let latest = store
            .latest("p1", &SeriesSelector::metric("cpu"), 1600)
            .await
            .unwrap();
        assert_eq!(latest.len(), 1, "node b has nothing since 1600");
        assert_eq!(latest[0].samples[0].value, 0.7);

        let other = store
            .select("p2", &SeriesSelector::metric("cpu"), 0, 10_000)
            .await
            .unwrap();
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].samples[0].value, 9.0);
    }

    #[tokio::test]
    async fn retried_batch_is_stored_once_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            let b = batch("p", "same-id", vec![series("cpu", "a", &[(1, 1.0)])]);
            assert!(matches!(
                store.write_metrics(b.clone()).await.unwrap(),
                WriteOutcome::Stored { .. }
            ));
            let mut changed = b;
            changed.series[0].samples[0].value = 99.0;
            assert_eq!(
                store.write_metrics(changed).await.unwrap(),
                WriteOutcome::Duplicate
            );
        }
        let store = RedbStore::open(&path).unwrap();
        let got = store
            .select("p", &SeriesSelector::metric("cpu"), 0, 10)
            .await
            .unwrap();
        assert_eq!(
            got[0].samples,
            vec![Sample {
                timestamp_ms: 1,
                value: 1.0
            }]
        );
    }

    #[tokio::test]
    async fn invalid_series_refuses_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
        let err = store
            .write_metrics(batch(
                "p",
                "b",
                vec![
                    series("good", "a", &[(1, 1.0)]),
                    series("bad name", "a", &[(1, 1.0)]),
                ],
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidData(_)), "{err}");
        let got = store
            .select("p", &SeriesSelector::metric("good"), 0, 10)
            .await
            .unwrap();
        assert!(got.is_empty(), "nothing of a refused batch is stored");
    }

    #[test]
    fn second_open_in_same_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let _first = RedbStore::open(&path).unwrap();
        let err = RedbStore::open(&path).unwrap_err();
        assert!(matches!(err, StorageError::AlreadyOpen { .. }), "{err}");
    }
}
