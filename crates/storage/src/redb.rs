//! The embedded backend: one redb file, opened by one process, laid out as a
//! time-series database rather than a row per sample.
//!
//! Metric tables:
//! - `series`: series id → (project, metric, labels), postcard-encoded;
//! - `series_last`: series id → a recent sample time (day granular), for retention;
//! - `postings`: (project, label name, label value, series id) → (), the
//!   inverted index that matchers select through (the metric name is the
//!   `__name__` label);
//! - `wal` / `wal_max`: one entry per batch with its samples (and their
//!   newest time): the durable copy of the in-memory head;
//! - `blocks`: (window start ms, series id) → one compressed block holding a
//!   series' samples of one fixed time window (timestamps and values each
//!   compressed with `pco`);
//! - `batches` / `batches_by_time`: batch ids stored per project (every
//!   signal), so that a retried batch is written once;
//! - `meta`: layout version, block window, compaction watermark.
//!
//! Spans, logs, profiles and events have their own tables and indexes (see
//! the table definitions below).
//!
//! A write is one transaction committed with immediate durability before the
//! caller hears "stored"; a writer thread commits every waiting batch at once
//! (group commit). Recent samples live in memory (the head) and in the WAL;
//! [`RedbStore::maintain_blocking`] moves head samples of closed windows into
//! blocks and enforces retention, each step a transaction, so a crash at any
//! point leaves either the old or the new state, and reopening replays the
//! WAL entries newer than the watermark.
//!
//! Series ids are the xxh3 hash of project, metric and sorted labels; a hash
//! collision is detected on write and refused rather than mixing series.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use vigil_runtime::time::now_ms;

use crate::{
    MaintenanceReport, StorageError, TelemetryStore,
    block::{
        decode_block, decode_chunk, decode_indexed_chunk, encode_block, encode_chunk,
        encode_indexed_chunk,
    },
    log::{LogBatch, LogEntry, LogPage, LogQuery, LogRecord, record_id, tokens},
    model::{Labels, MetricBatch, Sample, SeriesData, SeriesSelector, WriteOutcome, series_id},
    profile::{
        Event, EventBatch, EventQuery, Profile, ProfileBatch, ProfileQuery, StackSample,
        merge_stacks, sort_events,
    },
    trace::{Span, SpanBatch, SpanSummary, TraceQuery},
};

const SERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("series");
const SERIES_LAST: TableDefinition<u64, i64> = TableDefinition::new("series_last");
const POSTINGS: TableDefinition<(&str, &str, &str, u64), ()> = TableDefinition::new("postings");
/// The write-ahead log of the in-memory head: one entry per batch with its
/// samples newer than the compaction watermark; `wal_max` holds each
/// entry's newest timestamp so that compaction can drop whole entries.
const WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("wal");
const WAL_MAX: TableDefinition<u64, i64> = TableDefinition::new("wal_max");
const BLOCKS: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new("blocks");
const BATCHES: TableDefinition<(&str, &str), i64> = TableDefinition::new("batches");
const BATCHES_BY_TIME: TableDefinition<(i64, &str, &str), ()> =
    TableDefinition::new("batches_by_time");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (project, chunk) → the spans of one batch, compressed together
/// ([`encode_chunk`]). Chunk numbers grow with every batch.
const SPAN_CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("span_chunks");
/// (project, trace id, chunk): which chunks hold spans of a trace.
const SPAN_TRACES: TableDefinition<(&str, u128, u64), ()> = TableDefinition::new("span_traces");
/// (project, newest span start ns, chunk) → oldest span start: chunks in
/// time order, for searches.
const SPAN_CHUNK_TIME: TableDefinition<(&str, i64, u64), i64> =
    TableDefinition::new("span_chunk_time");
/// (oldest span start ns, project, chunk): chunks by their oldest span, for
/// retention.
const SPAN_CHUNK_OLDEST: TableDefinition<(i64, &str, u64), ()> =
    TableDefinition::new("span_chunk_oldest");
/// (project, chunk) → the log records of one batch with their ids,
/// compressed together ([`encode_chunk`]).
const LOG_CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("log_chunks");
/// (project, newest record time ns, chunk) → oldest record time: chunks in
/// time order, for searches.
const LOG_CHUNK_TIME: TableDefinition<(&str, i64, u64), i64> =
    TableDefinition::new("log_chunk_time");
/// (oldest record time ns, project, chunk): for retention.
const LOG_CHUNK_OLDEST: TableDefinition<(i64, &str, u64), ()> =
    TableDefinition::new("log_chunk_oldest");
/// (project, term, newest time of the chunk's records holding it, chunk)
/// → their oldest time. Terms are body tokens, and [`service_term`],
/// [`trace_term`], [`pattern_term`]: the text index, at chunk granularity.
/// The value: postcard of [`TermEntry`].
const LOG_TERMS: TableDefinition<(&str, &str, i64, u64), &[u8]> = TableDefinition::new("log_terms");
/// A term held by at most this many records of a chunk keeps their
/// positions, so a search decodes only those records.
const RARE_TERM_RECORDS: usize = 32;
/// The next log chunk number, in META.
const LOG_CHUNK_SEQ: &str = "log_chunk_seq";
/// (project, window start ns, id) → a profile; (window start, project, id)
/// for retention. Events likewise.
const PROFILES: TableDefinition<(&str, i64, u64), &[u8]> = TableDefinition::new("profiles");
const PROFILE_TIME: TableDefinition<(i64, &str, u64), ()> = TableDefinition::new("profile_time");
const EVENTS: TableDefinition<(&str, i64, u64), &[u8]> = TableDefinition::new("events");
const EVENT_TIME: TableDefinition<(i64, &str, u64), ()> = TableDefinition::new("event_time");
/// (project, service, newest start ns of the service's spans in the chunk,
/// chunk) → their oldest start: searches by service.
const SPAN_SERVICE_CHUNKS: TableDefinition<(&str, &str, i64, u64), i64> =
    TableDefinition::new("span_service_chunks");
/// The next span chunk number, in META.
const SPAN_CHUNK_SEQ: &str = "span_chunk_seq";

/// The layout version this code writes; a file of another layout is refused.
const LAYOUT_VERSION: u64 = 5;
/// The label under which the metric name is indexed.
pub const NAME_LABEL: &str = "__name__";

/// Tuning of the embedded layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedbOptions {
    /// Width of one compressed block, in ms (aligned to the epoch).
    pub block_window_ms: i64,
    /// How long after its window closes a head sample waits before it is
    /// compacted, so that slightly late samples land in the head cheaply.
    pub head_grace_ms: i64,
    /// Metrics older than this are deleted.
    pub metrics_retention_ms: i64,
    /// Spans that started longer ago than this are deleted.
    pub traces_retention_ms: i64,
    /// Log records and events older than this are deleted.
    pub logs_retention_ms: i64,
    /// Profiles older than this are deleted.
    pub profiles_retention_ms: i64,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            block_window_ms: 2 * 3600 * 1000,
            head_grace_ms: 10 * 60 * 1000,
            metrics_retention_ms: 30 * 24 * 3600 * 1000,
            traces_retention_ms: 7 * 24 * 3600 * 1000,
            logs_retention_ms: 7 * 24 * 3600 * 1000,
            profiles_retention_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct SeriesMeta {
    project: String,
    metric: String,
    labels: Vec<(String, String)>,
}

/// The state shared by readers, maintenance and the writer thread.
#[derive(Debug, Clone)]
struct Core {
    db: Arc<Database>,
    path: PathBuf,
    options: RedbOptions,
    /// Series this process has verified or created, with the time last
    /// recorded in `series_last`: spares a lookup per series per write.
    /// Only committed state enters it; retention removes what it drops.
    known: Arc<Mutex<HashMap<u64, i64>>>,
    /// Recent samples by series, in time order: the head. Durable through
    /// the WAL table; rebuilt from it at open.
    head: Arc<RwLock<HashMap<u64, Vec<Sample>>>>,
    next_wal: Arc<AtomicU64>,
}

/// What a write leaves for after its commit: series the cache learns, and
/// samples the head takes.
#[derive(Debug, Default)]
struct Pending {
    recorded: Vec<(u64, i64)>,
    head: Vec<(u64, Sample)>,
}

/// The compaction watermark stored in the file: samples older than this
/// live in blocks.
fn read_watermark(txn: &redb::WriteTransaction) -> Result<i64, StorageError> {
    Ok(txn
        .open_table(META)?
        .get("compacted_before")?
        .map_or(0, |v| i64::try_from(v.value()).unwrap_or(i64::MAX)))
}

/// Inserts samples into the head keeping each series in time order; an
/// equal timestamp is replaced (the later write wins).
fn head_insert(head: &mut HashMap<u64, Vec<Sample>>, samples: &[(u64, Sample)]) {
    for &(id, sample) in samples {
        let series = head.entry(id).or_default();
        match series.last() {
            Some(last) if last.timestamp_ms < sample.timestamp_ms => series.push(sample),
            None => series.push(sample),
            Some(_) => {
                match series.binary_search_by_key(&sample.timestamp_ms, |s| s.timestamp_ms) {
                    Ok(i) => series[i] = sample,
                    Err(i) => series.insert(i, sample),
                }
            }
        }
    }
}

const DAY_MS: i64 = 86_400_000;

/// Most batches, and most samples, one group commit takes.
const GROUP_MAX_BATCHES: usize = 256;
const GROUP_MAX_SAMPLES: usize = 500_000;

/// A validated write for the writer thread.
#[derive(Debug)]
enum Write {
    Metrics(MetricBatch),
    Spans(SpanBatch),
    Logs(LogBatch),
    Profiles(ProfileBatch),
    Events(EventBatch),
}

impl Write {
    fn records(&self) -> usize {
        match self {
            Self::Metrics(b) => b.series.iter().map(|s| s.samples.len()).sum(),
            Self::Spans(b) => b.spans.len(),
            Self::Logs(b) => b.records.len(),
            Self::Profiles(b) => b.profiles.iter().map(|p| p.stacks.len()).sum(),
            Self::Events(b) => b.events.len(),
        }
    }
}

type WriteRequest = (
    Write,
    tokio::sync::oneshot::Sender<Result<WriteOutcome, StorageError>>,
);

/// The writer thread: takes every batch waiting, writes them in one
/// transaction, acknowledges each after the commit. Dropping this stops the
/// thread and waits for it, so the file is closed when the store is.
#[derive(Debug)]
struct Writer {
    queue: Option<tokio::sync::mpsc::Sender<WriteRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_writer(core: Core, mut queue: tokio::sync::mpsc::Receiver<WriteRequest>) {
    while let Some(first) = queue.blocking_recv() {
        let mut records = first.0.records();
        let mut group = vec![first];
        while group.len() < GROUP_MAX_BATCHES && records < GROUP_MAX_SAMPLES {
            match queue.try_recv() {
                Ok(next) => {
                    records += next.0.records();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let (batches, replies): (Vec<Write>, Vec<_>) = group.into_iter().unzip();
        let outcomes = core.write_group(&batches);
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }
}

/// Telemetry in one redb file.
#[derive(Debug, Clone)]
pub struct RedbStore {
    // Declared first: dropped (and joined) before `core` lets go of the file.
    writer: Arc<Writer>,
    core: Core,
}

/// redb's page cache per database. Its default (1 GiB) made a busy
/// monolith's RSS grow past 400 MiB under load; the OS page cache holds
/// the file anyway.
const CACHE_BYTES: usize = 64 << 20;

/// Opens (creating it and its folder if needed) a redb file. redb holds a
/// file for one process: a file open elsewhere is refused with a clear error.
/// Services keep their own state (incidents, pings) with this too.
pub fn open_database(path: &Path) -> Result<Database, StorageError> {
    open_database_with_cache(path, CACHE_BYTES)
}

/// [`open_database`] with a page cache of `cache_bytes` (small services
/// keep their memory small).
pub fn open_database_with_cache(path: &Path, cache_bytes: usize) -> Result<Database, StorageError> {
    let open_err = |message: String| StorageError::Open {
        path: path.to_owned(),
        message,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| open_err(e.to_string()))?;
    }
    Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(|e| match e {
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

/// The time range of a chunk's spans, overall and per service.
struct ChunkMeta {
    oldest: i64,
    newest: i64,
    services: BTreeMap<String, (i64, i64)>,
}

impl ChunkMeta {
    fn of(spans: &[Span]) -> Self {
        let mut meta = Self {
            oldest: i64::MAX,
            newest: i64::MIN,
            services: BTreeMap::new(),
        };
        for span in spans {
            meta.oldest = meta.oldest.min(span.start_ns);
            meta.newest = meta.newest.max(span.start_ns);
            let range = meta
                .services
                .entry(span.service.clone())
                .or_insert((span.start_ns, span.start_ns));
            range.0 = range.0.min(span.start_ns);
            range.1 = range.1.max(span.start_ns);
        }
        meta
    }
}

/// Stores `spans` (not empty) as chunk `chunk` with its index entries: one
/// per trace it touches, its time range, and per service the range of that
/// service's spans.
/// (project, chunk) of the chunks in an "oldest record" index
/// (`SPAN_CHUNK_OLDEST`, `LOG_CHUNK_OLDEST`) holding a record older than
/// `cutoff_ns`.
fn chunks_older_than(
    txn: &redb::WriteTransaction,
    oldest: TableDefinition<(i64, &str, u64), ()>,
    cutoff_ns: i64,
) -> Result<Vec<(String, u64)>, StorageError> {
    txn.open_table(oldest)?
        .range((i64::MIN, "", 0u64)..(cutoff_ns, "", 0u64))?
        .map(|e| {
            let (key, _) = e?;
            let (_, project, chunk) = key.value();
            Ok((project.to_owned(), chunk))
        })
        .collect()
}

fn put_span_chunk(
    txn: &redb::WriteTransaction,
    project: &str,
    chunk: u64,
    spans: &[Span],
) -> Result<(), StorageError> {
    let meta = ChunkMeta::of(spans);
    txn.open_table(SPAN_CHUNKS)?
        .insert((project, chunk), encode_chunk(spans)?.as_slice())?;
    let mut traces = txn.open_table(SPAN_TRACES)?;
    let mut trace_ids: Vec<u128> = spans
        .iter()
        .map(|s| u128::from_be_bytes(s.trace_id))
        .collect();
    trace_ids.sort_unstable();
    trace_ids.dedup();
    for tid in trace_ids {
        traces.insert((project, tid, chunk), ())?;
    }
    let mut by_service = txn.open_table(SPAN_SERVICE_CHUNKS)?;
    for (service, (oldest, newest)) in &meta.services {
        by_service.insert((project, service.as_str(), *newest, chunk), *oldest)?;
    }
    txn.open_table(SPAN_CHUNK_TIME)?
        .insert((project, meta.newest, chunk), meta.oldest)?;
    txn.open_table(SPAN_CHUNK_OLDEST)?
        .insert((meta.oldest, project, chunk), ())?;
    Ok(())
}

/// Removes chunk `chunk` and its index entries; returns its spans.
fn drop_span_chunk(
    txn: &redb::WriteTransaction,
    project: &str,
    chunk: u64,
) -> Result<Vec<Span>, StorageError> {
    let Some(spans) = txn
        .open_table(SPAN_CHUNKS)?
        .remove((project, chunk))?
        .map(|v| decode_chunk::<Span>(v.value()))
        .transpose()?
    else {
        return Ok(Vec::new());
    };
    let meta = ChunkMeta::of(&spans);
    let mut traces = txn.open_table(SPAN_TRACES)?;
    for span in &spans {
        traces.remove((project, u128::from_be_bytes(span.trace_id), chunk))?;
    }
    let mut by_service = txn.open_table(SPAN_SERVICE_CHUNKS)?;
    for (service, (_, newest)) in &meta.services {
        by_service.remove((project, service.as_str(), *newest, chunk))?;
    }
    txn.open_table(SPAN_CHUNK_TIME)?
        .remove((project, meta.newest, chunk))?;
    txn.open_table(SPAN_CHUNK_OLDEST)?
        .remove((meta.oldest, project, chunk))?;
    Ok(spans)
}

/// The index term of a service, a trace and a pattern: they start with a
/// byte no body token has.
fn service_term(service: &str) -> String {
    format!("\u{1}s:{service}")
}

fn trace_term(trace_id: &[u8; 16]) -> String {
    format!("\u{1}t:{:032x}", u128::from_be_bytes(*trace_id))
}

fn pattern_term(pattern_id: u64) -> String {
    format!("\u{1}p:{pattern_id:016x}")
}

/// What the term index keeps per (term, chunk): the oldest time of the
/// records holding the term, and their positions when they are few.
#[derive(Debug, Serialize, Deserialize)]
struct TermEntry {
    oldest: i64,
    positions: Option<Vec<u32>>,
}

/// A term's records in a chunk: oldest and newest time, positions.
struct TermRange {
    oldest: i64,
    newest: i64,
    positions: Vec<u32>,
}

/// Every term of a chunk's records, with the range and positions of the
/// records holding it; and the chunk's own range.
fn log_terms(records: &[(u64, LogRecord)]) -> (BTreeMap<String, TermRange>, (i64, i64)) {
    let mut terms: BTreeMap<String, TermRange> = BTreeMap::new();
    let mut range = (i64::MAX, i64::MIN);
    for (position, (_, record)) in records.iter().enumerate() {
        let t = record.time_ns;
        let position = position as u32;
        range = (range.0.min(t), range.1.max(t));
        let mut add = |term: String| {
            let r = terms.entry(term).or_insert(TermRange {
                oldest: t,
                newest: t,
                positions: Vec::new(),
            });
            r.oldest = r.oldest.min(t);
            r.newest = r.newest.max(t);
            if r.positions.last() != Some(&position) {
                r.positions.push(position);
            }
        };
        for token in tokens(&record.body) {
            add(token);
        }
        add(service_term(&record.service));
        if record.trace_id != [0; 16] {
            add(trace_term(&record.trace_id));
        }
        if record.pattern_id != 0 {
            add(pattern_term(record.pattern_id));
        }
    }
    (terms, range)
}

/// Stores `records` (not empty) as log chunk `chunk` with its index entries.
fn put_log_chunk(
    txn: &redb::WriteTransaction,
    project: &str,
    chunk: u64,
    records: &[(u64, LogRecord)],
) -> Result<(), StorageError> {
    let (terms, (oldest, newest)) = log_terms(records);
    txn.open_table(LOG_CHUNKS)?
        .insert((project, chunk), encode_indexed_chunk(records)?.as_slice())?;
    let mut index = txn.open_table(LOG_TERMS)?;
    for (term, r) in terms {
        let entry = TermEntry {
            oldest: r.oldest,
            positions: (r.positions.len() <= RARE_TERM_RECORDS).then_some(r.positions),
        };
        index.insert(
            (project, term.as_str(), r.newest, chunk),
            encode_record(&entry)?.as_slice(),
        )?;
    }
    txn.open_table(LOG_CHUNK_TIME)?
        .insert((project, newest, chunk), oldest)?;
    txn.open_table(LOG_CHUNK_OLDEST)?
        .insert((oldest, project, chunk), ())?;
    Ok(())
}

/// Removes log chunk `chunk` and its index entries; returns its records.
fn drop_log_chunk(
    txn: &redb::WriteTransaction,
    project: &str,
    chunk: u64,
) -> Result<Vec<(u64, LogRecord)>, StorageError> {
    let Some(records) = txn
        .open_table(LOG_CHUNKS)?
        .remove((project, chunk))?
        .map(|v| decode_indexed_chunk::<(u64, LogRecord)>(v.value(), None))
        .transpose()?
    else {
        return Ok(Vec::new());
    };
    let records: Vec<(u64, LogRecord)> = records.into_iter().map(|(_, r)| r).collect();
    let (terms, (oldest, newest)) = log_terms(&records);
    let mut index = txn.open_table(LOG_TERMS)?;
    for (term, r) in &terms {
        index.remove((project, term.as_str(), r.newest, chunk))?;
    }
    txn.open_table(LOG_CHUNK_TIME)?
        .remove((project, newest, chunk))?;
    txn.open_table(LOG_CHUNK_OLDEST)?
        .remove((oldest, project, chunk))?;
    Ok(records)
}

/// The start of the window holding `ts`.
fn window_of(ts: i64, width: i64) -> i64 {
    ts.div_euclid(width) * width
}

/// Merges `newer` into `older` (both sorted by time); on equal timestamps the
/// newer sample wins.
fn merge(older: Vec<Sample>, newer: &[Sample]) -> Vec<Sample> {
    let mut by_time: BTreeMap<i64, f64> = older
        .into_iter()
        .map(|s| (s.timestamp_ms, s.value))
        .collect();
    for s in newer {
        by_time.insert(s.timestamp_ms, s.value);
    }
    by_time
        .into_iter()
        .map(|(timestamp_ms, value)| Sample {
            timestamp_ms,
            value,
        })
        .collect()
}

impl RedbStore {
    /// Opens (creating if needed) the store at `path` with default options.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Opens the store with explicit options.
    pub fn open_with(path: &Path, mut options: RedbOptions) -> Result<Self, StorageError> {
        if options.block_window_ms <= 0
            || options.metrics_retention_ms <= 0
            || options.traces_retention_ms <= 0
            || options.logs_retention_ms <= 0
            || options.profiles_retention_ms <= 0
            || options.head_grace_ms < 0
        {
            return Err(StorageError::InvalidData(
                "block window and retention must be positive".into(),
            ));
        }
        let db = open_database(path)?;
        let txn = db.begin_write()?;
        {
            let has_old_layout = txn.list_tables()?.any(|t| t.name() == "samples");
            let mut meta = txn.open_table(META)?;
            let version = meta.get("layout_version")?.map(|v| v.value());
            match version {
                Some(LAYOUT_VERSION) => {}
                None if !has_old_layout => {
                    meta.insert("layout_version", LAYOUT_VERSION)?;
                }
                other => {
                    return Err(StorageError::Open {
                        path: path.to_owned(),
                        message: format!(
                            "written with store layout {} but this Vigil reads layout {LAYOUT_VERSION}; move the file away to start afresh",
                            other.unwrap_or(1)
                        ),
                    });
                }
            }
            // The block window is part of the layout: the one the file was
            // created with stays in force.
            let stored_window = meta.get("block_window_ms")?.map(|v| v.value());
            match stored_window {
                Some(stored) => {
                    options.block_window_ms = i64::try_from(stored).map_err(|_| {
                        StorageError::Corrupt(format!("block window {stored} out of range"))
                    })?;
                }
                None => {
                    meta.insert("block_window_ms", options.block_window_ms.unsigned_abs())?;
                }
            }
            // Create every table once so that readers never meet a missing one.
            txn.open_table(SERIES)?;
            txn.open_table(SERIES_LAST)?;
            txn.open_table(POSTINGS)?;
            txn.open_table(WAL)?;
            txn.open_table(WAL_MAX)?;
            txn.open_table(BLOCKS)?;
            txn.open_table(BATCHES)?;
            txn.open_table(BATCHES_BY_TIME)?;
            txn.open_table(SPAN_CHUNKS)?;
            txn.open_table(SPAN_TRACES)?;
            txn.open_table(SPAN_CHUNK_TIME)?;
            txn.open_table(SPAN_CHUNK_OLDEST)?;
            txn.open_table(SPAN_SERVICE_CHUNKS)?;
            txn.open_table(LOG_CHUNKS)?;
            txn.open_table(LOG_CHUNK_TIME)?;
            txn.open_table(LOG_CHUNK_OLDEST)?;
            txn.open_table(LOG_TERMS)?;
            txn.open_table(PROFILES)?;
            txn.open_table(PROFILE_TIME)?;
            txn.open_table(EVENTS)?;
            txn.open_table(EVENT_TIME)?;
        }
        txn.commit()?;
        tracing::info!(path = %path.display(), "telemetry store open (redb)");
        // Rebuild the head from the WAL.
        let (head, next_wal) = {
            let txn = db.begin_read()?;
            let watermark = txn
                .open_table(META)?
                .get("compacted_before")?
                .map_or(0, |v| i64::try_from(v.value()).unwrap_or(i64::MAX));
            let wal = txn.open_table(WAL)?;
            let mut head = HashMap::new();
            let mut next = 0u64;
            for entry in wal.iter()? {
                let (key, value) = entry?;
                next = key.value() + 1;
                let samples: Vec<(u64, Sample)> = decode_record(value.value())?;
                let fresh: Vec<(u64, Sample)> = samples
                    .into_iter()
                    .filter(|(_, s)| s.timestamp_ms >= watermark)
                    .collect();
                head_insert(&mut head, &fresh);
            }
            (head, next)
        };
        let core = Core {
            db: Arc::new(db),
            path: path.to_owned(),
            options,
            known: Arc::new(Mutex::new(HashMap::new())),
            head: Arc::new(RwLock::new(head)),
            next_wal: Arc::new(AtomicU64::new(next_wal)),
        };
        let (queue, receiver) = tokio::sync::mpsc::channel(1024);
        let thread = {
            let core = core.clone();
            std::thread::Builder::new()
                .name("redb-writer".into())
                .spawn(move || run_writer(core, receiver))
                .map_err(|e| StorageError::Io(format!("cannot start the writer thread: {e}")))?
        };
        Ok(Self {
            writer: Arc::new(Writer {
                queue: Some(queue),
                thread: Some(thread),
            }),
            core,
        })
    }

    pub fn path(&self) -> &Path {
        &self.core.path
    }

    pub fn options(&self) -> RedbOptions {
        self.core.options
    }

    /// Compaction then retention, as of `now`.
    pub fn maintain_blocking(&self, now: i64) -> Result<MaintenanceReport, StorageError> {
        self.core.maintain_blocking(now)
    }

    /// Hands a validated write to the writer thread and waits for its commit.
    async fn submit(&self, write: Write) -> Result<WriteOutcome, StorageError> {
        let queue = self
            .writer
            .queue
            .as_ref()
            .ok_or_else(|| StorageError::Io("the store is closing".into()))?;
        let (reply, outcome) = tokio::sync::oneshot::channel();
        queue
            .send((write, reply))
            .await
            .map_err(|_| StorageError::Io("the writer thread stopped".into()))?;
        outcome
            .await
            .map_err(|_| StorageError::Io("the writer thread stopped mid-write".into()))?
    }
}

impl Core {
    /// Applies one (validated) batch inside `txn`; series whose
    /// `series_last` was read or written are pushed to `recorded`.
    fn apply_batch(
        &self,
        txn: &redb::WriteTransaction,
        known: &HashMap<u64, i64>,
        batch: &MetricBatch,
        pending: &mut Pending,
    ) -> Result<WriteOutcome, StorageError> {
        // Read in this transaction, so it agrees with the last compaction.
        let watermark = read_watermark(txn)?;
        let mut fresh: Vec<(u64, Sample)> = Vec::new();
        let mut late: Vec<(u64, Sample)> = Vec::new();
        let samples_stored = {
            let mut batches = txn.open_table(BATCHES)?;
            let key = (batch.project.as_str(), batch.batch_id.as_str());
            if batches.get(key)?.is_some() {
                return Ok(WriteOutcome::Duplicate);
            }
            let mut series_table = txn.open_table(SERIES)?;
            let mut series_last = txn.open_table(SERIES_LAST)?;
            let mut postings = txn.open_table(POSTINGS)?;
            let mut stored = 0u64;
            for series in &batch.series {
                let id = series_id(&batch.project, &series.metric, &series.labels);
                let cached = known.get(&id).copied();
                let existing = if cached.is_some() {
                    None
                } else {
                    series_table
                        .get(id)?
                        .map(|v| decode_record::<SeriesMeta>(v.value()))
                        .transpose()?
                };
                match existing {
                    _ if cached.is_some() => {}
                    Some(existing) => {
                        if existing.project != batch.project
                            || existing.metric != series.metric
                            || !existing
                                .labels
                                .iter()
                                .map(|(k, v)| (k, v))
                                .eq(series.labels.iter())
                        {
                            return Err(StorageError::InvalidData(format!(
                                "series id collision between {} and {}; series refused",
                                existing.metric, series.metric
                            )));
                        }
                    }
                    None => {
                        let meta = SeriesMeta {
                            project: batch.project.clone(),
                            metric: series.metric.clone(),
                            labels: series
                                .labels
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        };
                        series_table.insert(id, encode_record(&meta)?.as_slice())?;
                        postings.insert(
                            (
                                batch.project.as_str(),
                                NAME_LABEL,
                                series.metric.as_str(),
                                id,
                            ),
                            (),
                        )?;
                        for (name, value) in &series.labels {
                            postings.insert(
                                (batch.project.as_str(), name.as_str(), value.as_str(), id),
                                (),
                            )?;
                        }
                    }
                }
                let last = match cached {
                    Some(last) => last,
                    None => series_last.get(id)?.map_or(i64::MIN, |v| v.value()),
                };
                let mut newest = last;
                for sample in &series.samples {
                    // Samples of already compacted windows go straight to
                    // their blocks; the rest to the WAL and the head.
                    if sample.timestamp_ms < watermark {
                        late.push((id, *sample));
                    } else {
                        fresh.push((id, *sample));
                    }
                    newest = newest.max(sample.timestamp_ms);
                    stored += 1;
                }
                // Day granularity is enough for retention (which allows a
                // day of slack), and spares a write per series per batch.
                if newest > i64::MIN
                    && (last == i64::MIN || newest.div_euclid(DAY_MS) > last.div_euclid(DAY_MS))
                {
                    series_last.insert(id, newest)?;
                    pending.recorded.push((id, newest));
                } else if cached.is_none() {
                    pending.recorded.push((id, last));
                }
            }
            let now = now_ms();
            batches.insert(key, now)?;
            txn.open_table(BATCHES_BY_TIME)?
                .insert((now, batch.project.as_str(), batch.batch_id.as_str()), ())?;
            stored
        };
        if let Some(max_ts) = fresh.iter().map(|(_, s)| s.timestamp_ms).max() {
            let seq = self.next_wal.fetch_add(1, Ordering::Relaxed);
            txn.open_table(WAL)?
                .insert(seq, encode_record(&fresh)?.as_slice())?;
            txn.open_table(WAL_MAX)?.insert(seq, max_ts)?;
            pending.head.extend(fresh);
        }
        if !late.is_empty() {
            self.merge_into_blocks(txn, &late)?;
        }
        Ok(WriteOutcome::Stored {
            records: samples_stored,
        })
    }

    /// Writes a group of validated batches in ONE transaction and one
    /// durable commit (group commit). If any batch fails, the group is
    /// retried one batch per transaction so that one bad batch fails alone.
    fn apply(
        &self,
        txn: &redb::WriteTransaction,
        known: &HashMap<u64, i64>,
        write: &Write,
        pending: &mut Pending,
    ) -> Result<WriteOutcome, StorageError> {
        match write {
            Write::Metrics(batch) => self.apply_batch(txn, known, batch, pending),
            Write::Spans(batch) => Self::apply_spans(txn, batch),
            Write::Logs(batch) => Self::apply_logs(txn, batch),
            Write::Profiles(batch) => Self::apply_timed(
                txn,
                (PROFILES, PROFILE_TIME),
                &batch.project,
                &format!("profiles/{}", batch.batch_id),
                &batch.batch_id,
                batch.profiles.iter().map(|p| (p.time_ns, encode_record(p))),
            ),
            Write::Events(batch) => Self::apply_timed(
                txn,
                (EVENTS, EVENT_TIME),
                &batch.project,
                &format!("events/{}", batch.batch_id),
                &batch.batch_id,
                batch.events.iter().map(|e| (e.time_ns, encode_record(e))),
            ),
        }
    }

    /// Stores time-keyed records (profiles, events) in `tables`: by
    /// (project, time, id), and by (time, project, id) for retention.
    fn apply_timed(
        txn: &redb::WriteTransaction,
        tables: (TimedTable, TimeIndex),
        project: &str,
        batch_key: &str,
        batch_id: &str,
        records: impl Iterator<Item = (i64, Result<Vec<u8>, StorageError>)>,
    ) -> Result<WriteOutcome, StorageError> {
        let mut batches = txn.open_table(BATCHES)?;
        if batches.get((project, batch_key))?.is_some() {
            return Ok(WriteOutcome::Duplicate);
        }
        let mut by_key = txn.open_table(tables.0)?;
        let mut by_time = txn.open_table(tables.1)?;
        let mut count = 0u64;
        for (index, (time_ns, encoded)) in records.enumerate() {
            let id = record_id(project, batch_id, index);
            by_key.insert((project, time_ns, id), encoded?.as_slice())?;
            by_time.insert((time_ns, project, id), ())?;
            count += 1;
        }
        let now = now_ms();
        batches.insert((project, batch_key), now)?;
        txn.open_table(BATCHES_BY_TIME)?
            .insert((now, project, batch_key), ())?;
        Ok(WriteOutcome::Stored { records: count })
    }

    /// Records of a time-keyed table in `[start_ns, end_ns]`, newest first,
    /// while `keep` wants more.
    fn scan_timed<T: serde::de::DeserializeOwned>(
        &self,
        table: TimedTable,
        project: &str,
        start_ns: i64,
        end_ns: i64,
        mut keep: impl FnMut(T) -> bool,
    ) -> Result<(), StorageError> {
        if end_ns < start_ns {
            return Ok(());
        }
        let txn = self.db.begin_read()?;
        let records = txn.open_table(table)?;
        for entry in records
            .range((project, start_ns, 0u64)..=(project, end_ns, u64::MAX))?
            .rev()
        {
            if !keep(decode_record(entry?.1.value())?) {
                break;
            }
        }
        Ok(())
    }

    /// Deletes the records of a time-keyed table older than `cutoff_ns`.
    fn expire_timed(
        txn: &redb::WriteTransaction,
        tables: (TimedTable, TimeIndex),
        cutoff_ns: i64,
    ) -> Result<u64, StorageError> {
        let mut by_key = txn.open_table(tables.0)?;
        let mut by_time = txn.open_table(tables.1)?;
        let mut old = Vec::new();
        for entry in by_time.range((i64::MIN, "", 0u64)..(cutoff_ns, "", 0u64))? {
            let (key, _) = entry?;
            let (time_ns, project, id) = key.value();
            old.push((time_ns, project.to_owned(), id));
        }
        for (time_ns, project, id) in &old {
            by_time.remove((*time_ns, project.as_str(), *id))?;
            by_key.remove((project.as_str(), *time_ns, *id))?;
        }
        Ok(old.len() as u64)
    }

    /// Applies one validated log batch inside `txn`: the records, their
    /// tokens and their place in time.
    fn apply_logs(
        txn: &redb::WriteTransaction,
        batch: &LogBatch,
    ) -> Result<WriteOutcome, StorageError> {
        let batch_key = format!("logs/{}", batch.batch_id);
        let project = batch.project.as_str();
        let mut batches = txn.open_table(BATCHES)?;
        if batches.get((project, batch_key.as_str()))?.is_some() {
            return Ok(WriteOutcome::Duplicate);
        }
        if !batch.records.is_empty() {
            let records: Vec<(u64, LogRecord)> = batch
                .records
                .iter()
                .enumerate()
                .map(|(index, r)| (record_id(project, &batch.batch_id, index), r.clone()))
                .collect();
            let mut seq_table = txn.open_table(META)?;
            let chunk = seq_table.get(LOG_CHUNK_SEQ)?.map_or(0, |v| v.value());
            seq_table.insert(LOG_CHUNK_SEQ, chunk + 1)?;
            drop(seq_table);
            put_log_chunk(txn, project, chunk, &records)?;
        }
        let now = now_ms();
        batches.insert((project, batch_key.as_str()), now)?;
        txn.open_table(BATCHES_BY_TIME)?
            .insert((now, project, batch_key.as_str()), ())?;
        Ok(WriteOutcome::Stored {
            records: batch.records.len() as u64,
        })
    }

    /// Newest first, a page at a time. The query's terms (text tokens,
    /// service, trace, pattern) pick the chunks holding all of them; chunks
    /// are visited by their newest record, and the visit stops once no
    /// older chunk can hold a record newer than the page's last.
    fn search_logs_blocking(
        &self,
        project: &str,
        query: &LogQuery,
    ) -> Result<LogPage, StorageError> {
        let limit = query.page_size();
        if query.end_ns < query.start_ns {
            return Ok(LogPage::default());
        }
        let txn = self.db.begin_read()?;
        let chunks = txn.open_table(LOG_CHUNKS)?;
        let query_tokens = query.text.as_deref().map(tokens).unwrap_or_default();
        let mut terms = query_tokens.clone();
        terms.extend(query.service.as_deref().map(service_term));
        terms.extend(query.trace_id.as_ref().map(trace_term));
        terms.extend(query.pattern_id.map(pattern_term));
        let newest_wanted = match query.after {
            Some(c) => c.time_ns.min(query.end_ns),
            None => query.end_ns,
        };
        // chunk → (newest, oldest, the only records that can match when a
        // rare term says so) of the chunks that may match
        type Candidate = (i64, i64, Option<BTreeSet<u32>>);
        let mut candidates: Option<BTreeMap<u64, Candidate>> = None;
        if terms.is_empty() {
            let mut all = BTreeMap::new();
            for entry in txn
                .open_table(LOG_CHUNK_TIME)?
                .range((project, query.start_ns, 0u64)..=(project, i64::MAX, u64::MAX))?
            {
                let (key, oldest) = entry?;
                let (_, newest, chunk) = key.value();
                all.insert(chunk, (newest, oldest.value(), None));
            }
            candidates = Some(all);
        } else {
            let index = txn.open_table(LOG_TERMS)?;
            for term in &terms {
                let mut with_term = BTreeMap::new();
                for entry in index.range(
                    (project, term.as_str(), query.start_ns, 0u64)
                        ..=(project, term.as_str(), i64::MAX, u64::MAX),
                )? {
                    let (key, value) = entry?;
                    let (_, _, newest, chunk) = key.value();
                    let previous = match &candidates {
                        None => None,
                        Some(c) => match c.get(&chunk) {
                            Some((_, _, positions)) => Some(positions.clone()),
                            None => continue,
                        },
                    };
                    let entry: TermEntry = decode_record(value.value())?;
                    let mine: Option<BTreeSet<u32>> =
                        entry.positions.map(|p| p.into_iter().collect());
                    let positions = match (previous.flatten(), mine) {
                        (Some(a), Some(b)) => Some(a.intersection(&b).copied().collect()),
                        (a, b) => a.or(b),
                    };
                    with_term.insert(chunk, (newest, entry.oldest, positions));
                }
                candidates = Some(with_term);
            }
        }
        let mut order: Vec<(i64, i64, u64, Option<BTreeSet<u32>>)> = candidates
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, (_, oldest, positions))| {
                *oldest <= newest_wanted && positions.as_ref().is_none_or(|p| !p.is_empty())
            })
            .map(|(chunk, (newest, oldest, positions))| (newest, oldest, chunk, positions))
            .collect();
        order.sort_unstable_by_key(|c| std::cmp::Reverse((c.0, c.1, c.2)));
        let mut found: Vec<LogEntry> = Vec::new();
        for (newest, _, chunk, positions) in order {
            if found.len() > limit {
                found.sort_by_key(|e| std::cmp::Reverse((e.record.time_ns, e.id)));
                found.truncate(limit + 1);
                if newest < found[limit].record.time_ns {
                    break;
                }
            }
            let Some(bytes) = chunks.get((project, chunk))? else {
                return Err(StorageError::Corrupt(format!(
                    "log chunk {chunk} is indexed but missing"
                )));
            };
            for (_, (id, record)) in
                decode_indexed_chunk::<(u64, LogRecord)>(bytes.value(), positions.as_ref())?
            {
                if query.matches(&record, id, &query_tokens) {
                    found.push(LogEntry { id, record });
                }
            }
        }
        Ok(LogPage::from_matches(found, limit))
    }

    /// Applies one validated span batch inside `txn`: one compressed chunk,
    /// an entry per trace it touches, its time range, and per service the
    /// range of that service's spans. A span written again (same ids) in a
    /// later batch is read in its later form.
    fn apply_spans(
        txn: &redb::WriteTransaction,
        batch: &SpanBatch,
    ) -> Result<WriteOutcome, StorageError> {
        let batch_key = format!("spans/{}", batch.batch_id);
        let project = batch.project.as_str();
        let mut batches = txn.open_table(BATCHES)?;
        if batches.get((project, batch_key.as_str()))?.is_some() {
            return Ok(WriteOutcome::Duplicate);
        }
        if !batch.spans.is_empty() {
            let mut seq_table = txn.open_table(META)?;
            let chunk = seq_table.get(SPAN_CHUNK_SEQ)?.map_or(0, |v| v.value());
            seq_table.insert(SPAN_CHUNK_SEQ, chunk + 1)?;
            drop(seq_table);
            put_span_chunk(txn, project, chunk, &batch.spans)?;
        }
        let now = now_ms();
        batches.insert((project, batch_key.as_str()), now)?;
        txn.open_table(BATCHES_BY_TIME)?
            .insert((now, project, batch_key.as_str()), ())?;
        Ok(WriteOutcome::Stored {
            records: batch.spans.len() as u64,
        })
    }

    fn trace_blocking(&self, project: &str, trace_id: [u8; 16]) -> Result<Vec<Span>, StorageError> {
        let txn = self.db.begin_read()?;
        let traces = txn.open_table(SPAN_TRACES)?;
        let chunks = txn.open_table(SPAN_CHUNKS)?;
        let tid = u128::from_be_bytes(trace_id);
        // Later chunks first, so that a span written again wins.
        let mut found: BTreeMap<[u8; 8], Span> = BTreeMap::new();
        for entry in traces
            .range((project, tid, 0u64)..=(project, tid, u64::MAX))?
            .rev()
        {
            let (_, _, chunk) = entry?.0.value();
            let Some(bytes) = chunks.get((project, chunk))? else {
                return Err(StorageError::Corrupt(format!(
                    "span chunk {chunk} is indexed but missing"
                )));
            };
            for span in decode_chunk::<Span>(bytes.value())? {
                if span.trace_id == trace_id {
                    found.entry(span.span_id).or_insert(span);
                }
            }
        }
        let mut out: Vec<Span> = found.into_values().collect();
        crate::trace::sort_trace(&mut out);
        Ok(out)
    }

    /// Newest spans first: chunks are visited by their newest span, and the
    /// visit stops once no older chunk can hold a span newer than the
    /// `limit`-th found.
    fn search_blocking(
        &self,
        project: &str,
        query: &TraceQuery,
    ) -> Result<Vec<SpanSummary>, StorageError> {
        let limit = if query.limit == 0 { 100 } else { query.limit };
        if query.end_ns < query.start_ns {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read()?;
        let chunks = txn.open_table(SPAN_CHUNKS)?;
        // (newest start, chunk, oldest start) of every chunk that may match
        let candidates: Vec<(i64, u64, i64)> = match &query.service {
            Some(service) => txn
                .open_table(SPAN_SERVICE_CHUNKS)?
                .range(
                    (project, service.as_str(), query.start_ns, 0u64)
                        ..=(project, service.as_str(), i64::MAX, u64::MAX),
                )?
                .rev()
                .map(|e| {
                    let (key, oldest) = e?;
                    let (_, _, newest, chunk) = key.value();
                    Ok((newest, chunk, oldest.value()))
                })
                .collect::<Result<_, StorageError>>()?,
            None => txn
                .open_table(SPAN_CHUNK_TIME)?
                .range((project, query.start_ns, 0u64)..=(project, i64::MAX, u64::MAX))?
                .rev()
                .map(|e| {
                    let (key, oldest) = e?;
                    let (_, newest, chunk) = key.value();
                    Ok((newest, chunk, oldest.value()))
                })
                .collect::<Result<_, StorageError>>()?,
        };
        // (trace, span) → (chunk, summary): the latest write of each span
        let mut found: BTreeMap<([u8; 16], [u8; 8]), (u64, SpanSummary)> = BTreeMap::new();
        let mut starts: Vec<i64> = Vec::new();
        for (newest, chunk, oldest) in candidates {
            if oldest > query.end_ns {
                continue;
            }
            if starts.len() >= limit {
                starts.sort_unstable_by(|a, b| b.cmp(a));
                starts.truncate(limit);
                if newest < starts[limit - 1] {
                    break;
                }
            }
            let Some(bytes) = chunks.get((project, chunk))? else {
                return Err(StorageError::Corrupt(format!(
                    "span chunk {chunk} is indexed but missing"
                )));
            };
            for span in decode_chunk::<Span>(bytes.value())? {
                if span.start_ns < query.start_ns || span.start_ns > query.end_ns {
                    continue;
                }
                let summary = SpanSummary::from(&span);
                if !query.matches(&summary) {
                    continue;
                }
                let key = (span.trace_id, span.span_id);
                if found.get(&key).is_none_or(|(c, _)| *c < chunk) {
                    starts.push(summary.start_ns);
                    found.insert(key, (chunk, summary));
                }
            }
        }
        let mut out: Vec<SpanSummary> = found.into_values().map(|(_, s)| s).collect();
        crate::trace::sort_summaries(&mut out);
        out.truncate(limit);
        Ok(out)
    }

    fn write_group(&self, batches: &[Write]) -> Vec<Result<WriteOutcome, StorageError>> {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let together = (|| {
            let txn = self.db.begin_write()?;
            let mut pending = Pending::default();
            let mut outcomes = Vec::with_capacity(batches.len());
            for batch in batches {
                outcomes.push(self.apply(&txn, &known, batch, &mut pending)?);
            }
            self.commit(txn, pending, &mut known)?;
            Ok::<_, StorageError>(outcomes)
        })();
        match together {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(_) if batches.len() > 1 => batches
                .iter()
                .map(|batch| {
                    let txn = self.db.begin_write()?;
                    let mut pending = Pending::default();
                    let outcome = self.apply(&txn, &known, batch, &mut pending)?;
                    self.commit(txn, pending, &mut known)?;
                    Ok(outcome)
                })
                .collect(),
            Err(e) => vec![Err(e)],
        }
    }

    /// Commits a write and only then lets its samples into the head. The
    /// head lock is taken while the transaction is still open (lock order
    /// everywhere: cache, transaction, head), so compaction, which waits for
    /// the transaction, never runs between the commit and the head update.
    fn commit(
        &self,
        txn: redb::WriteTransaction,
        pending: Pending,
        known: &mut HashMap<u64, i64>,
    ) -> Result<(), StorageError> {
        let mut head = self
            .head
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        txn.commit()?;
        head_insert(&mut head, &pending.head);
        known.extend(pending.recorded);
        Ok(())
    }

    /// Merges samples into their blocks inside `txn` (newer values win).
    fn merge_into_blocks(
        &self,
        txn: &redb::WriteTransaction,
        samples: &[(u64, Sample)],
    ) -> Result<u64, StorageError> {
        let width = self.options.block_window_ms;
        let mut groups: BTreeMap<(i64, u64), Vec<Sample>> = BTreeMap::new();
        for &(id, sample) in samples {
            groups
                .entry((window_of(sample.timestamp_ms, width), id))
                .or_default()
                .push(sample);
        }
        let mut blocks = txn.open_table(BLOCKS)?;
        for ((window, id), mut group) in groups.iter_mut().map(|(k, v)| (*k, std::mem::take(v))) {
            group.sort_by_key(|s| s.timestamp_ms);
            let existing = blocks
                .get((window, id))?
                .map(|b| decode_block(b.value()))
                .transpose()?
                .unwrap_or_default();
            let merged = merge(existing, &group);
            blocks.insert((window, id), encode_block(&merged)?.as_slice())?;
        }
        Ok(groups.len() as u64)
    }

    /// Ids of the series that match: candidates from the postings of the
    /// metric name and of every non-empty equality matcher, then every
    /// matcher checked on the labels.
    fn select_series(
        txn: &redb::ReadTransaction,
        project: &str,
        selector: &SeriesSelector,
    ) -> Result<Vec<(u64, Labels)>, StorageError> {
        let postings = txn.open_table(POSTINGS)?;
        let series_table = txn.open_table(SERIES)?;
        let posting_ids = |name: &str, value: &str| -> Result<BTreeSet<u64>, StorageError> {
            let mut ids = BTreeSet::new();
            for entry in
                postings.range((project, name, value, 0u64)..=(project, name, value, u64::MAX))?
            {
                ids.insert(entry?.0.value().3);
            }
            Ok(ids)
        };
        let mut candidates = posting_ids(NAME_LABEL, &selector.metric)?;
        for matcher in &selector.matchers {
            if candidates.is_empty() {
                break;
            }
            if matcher.op == crate::MatcherOp::Equal && !matcher.value.is_empty() {
                let ids = posting_ids(&matcher.name, &matcher.value)?;
                candidates.retain(|id| ids.contains(id));
            }
        }
        let mut out = Vec::with_capacity(candidates.len());
        for id in candidates {
            let Some(meta) = series_table.get(id)? else {
                return Err(StorageError::Corrupt(format!(
                    "series {id} indexed but not stored"
                )));
            };
            let meta: SeriesMeta = decode_record(meta.value())?;
            let labels: Labels = meta.labels.into_iter().collect();
            if selector.matches(&labels) {
                out.push((id, labels));
            }
        }
        Ok(out)
    }

    /// Whether series `id` has a sample at or after `start_ms`.
    fn active_since(
        series_last: &impl ReadableTable<u64, i64>,
        id: u64,
        start_ms: i64,
    ) -> Result<bool, StorageError> {
        Ok(series_last
            .get(id)?
            .is_some_and(|last| last.value() >= start_ms))
    }

    fn metric_names_blocking(
        &self,
        project: &str,
        start_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        let txn = self.db.begin_read()?;
        let postings = txn.open_table(POSTINGS)?;
        let series_last = txn.open_table(SERIES_LAST)?;
        let mut names = BTreeSet::new();
        let from = (project, NAME_LABEL, "", 0u64);
        let to = (project, NAME_LABEL, "\u{10ffff}", u64::MAX);
        for entry in postings.range(from..=to)? {
            let (key, _) = entry?;
            let (_, _, metric, id) = key.value();
            if !names.contains(metric) && Self::active_since(&series_last, id, start_ms)? {
                names.insert(metric.to_owned());
            }
        }
        Ok(names.into_iter().collect())
    }

    fn series_blocking(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        let txn = self.db.begin_read()?;
        let series_last = txn.open_table(SERIES_LAST)?;
        let mut out = Vec::new();
        for (id, labels) in Self::select_series(&txn, project, selector)? {
            if Self::active_since(&series_last, id, start_ms)? {
                out.push(labels);
            }
        }
        Ok(out)
    }

    /// The first and last block windows present, to bound window walks.
    fn block_span(blocks: &BlocksTable) -> Result<Option<(i64, i64)>, StorageError> {
        let first = blocks.first()?.map(|(k, _)| k.value().0);
        let last = blocks.last()?.map(|(k, _)| k.value().0);
        Ok(first.zip(last))
    }

    fn read_blocking(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
        end_ms: i64,
        newest_only: bool,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let width = self.options.block_window_ms;
        // The head lock first, then the snapshot: compaction cannot move
        // samples between what this read sees of the head and of the blocks.
        let head = self
            .head
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let txn = self.db.begin_read()?;
        let matched = Self::select_series(&txn, project, selector)?;
        let blocks = txn.open_table(BLOCKS)?;
        // Only windows that can hold blocks, so open ranges stay cheap.
        let windows = Self::block_span(&blocks)?.map(|(first, last)| {
            (
                window_of(start_ms, width).max(first),
                window_of(end_ms, width).min(last),
            )
        });
        let in_range = |s: &Sample| s.timestamp_ms >= start_ms && s.timestamp_ms <= end_ms;
        let mut out = Vec::with_capacity(matched.len());
        for (id, labels) in matched {
            let in_head: &[Sample] = head.get(&id).map_or(&[], |series| {
                let from = series.partition_point(|s| s.timestamp_ms < start_ms);
                let to = series.partition_point(|s| s.timestamp_ms <= end_ms);
                &series[from..to.max(from)]
            });
            let samples = if newest_only {
                match in_head.last() {
                    Some(newest) => vec![*newest],
                    None => newest_in_blocks(&blocks, id, windows, width, &in_range)?
                        .into_iter()
                        .collect(),
                }
            } else {
                let mut from_blocks = Vec::new();
                if let Some((low, high)) = windows {
                    let mut w = low;
                    while w <= high {
                        if let Some(block) = blocks.get((w, id))? {
                            from_blocks
                                .extend(decode_block(block.value())?.into_iter().filter(in_range));
                        }
                        w += width;
                    }
                }
                if from_blocks.is_empty() {
                    in_head.to_vec()
                } else {
                    merge(from_blocks, in_head)
                }
            };
            if samples.is_empty() {
                continue;
            }
            out.push(SeriesData {
                metric: selector.metric.clone(),
                labels,
                samples,
            });
        }
        Ok(out)
    }

    /// Moves head samples of closed windows into compressed blocks, one
    /// bounded transaction at a time. Returns (samples moved, blocks written).
    fn compact_blocking(&self, now: i64) -> Result<(u64, u64), StorageError> {
        let width = self.options.block_window_ms;
        let cutoff = window_of(now.saturating_sub(self.options.head_grace_ms), width);
        // Lock order as for writes: the transaction, then the head.
        let txn = self.db.begin_write()?;
        let mut head = self
            .head
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cutoff <= read_watermark(&txn)? {
            return Ok((0, 0));
        }
        let moving: Vec<(u64, Sample)> = head
            .iter()
            .flat_map(|(id, series)| {
                series
                    .iter()
                    .take_while(|s| s.timestamp_ms < cutoff)
                    .map(move |s| (*id, *s))
            })
            .collect();
        let written = self.merge_into_blocks(&txn, &moving)?;
        {
            // WAL entries holding only compacted samples are done with.
            let mut wal = txn.open_table(WAL)?;
            let mut wal_max = txn.open_table(WAL_MAX)?;
            let mut done = Vec::new();
            for entry in wal_max.iter()? {
                let (seq, max_ts) = entry?;
                if max_ts.value() < cutoff {
                    done.push(seq.value());
                }
            }
            for seq in done {
                wal.remove(seq)?;
                wal_max.remove(seq)?;
            }
            // Replays skip what is older: it is in blocks now.
            txn.open_table(META)?
                .insert("compacted_before", cutoff.max(0).unsigned_abs())?;
        }
        txn.commit()?;
        for series in head.values_mut() {
            let compacted = series.partition_point(|s| s.timestamp_ms < cutoff);
            series.drain(..compacted);
        }
        head.retain(|_, series| !series.is_empty());
        Ok((moving.len() as u64, written))
    }

    /// Deletes metrics older than the retention: whole blocks, stray head
    /// samples, series not seen since, and batch ids stored before.
    fn retention_blocking(&self, now: i64) -> Result<MaintenanceReport, StorageError> {
        let width = self.options.block_window_ms;
        let cutoff = now.saturating_sub(self.options.metrics_retention_ms);
        let first_kept_window = window_of(cutoff, width);
        // Same lock order as writers: the cache, then the write transaction.
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let txn = self.db.begin_write()?;
        let (mut blocks_dropped, mut series_dropped, mut batches_dropped) = (0u64, 0u64, 0u64);
        let (mut spans_dropped, mut logs_dropped) = (0u64, 0u64);
        let (profiles_dropped, events_dropped);
        {
            let mut blocks = txn.open_table(BLOCKS)?;
            blocks.retain_in((i64::MIN, 0u64)..(first_kept_window, 0u64), |_, _| {
                blocks_dropped += 1;
                false
            })?;

            let mut series_last = txn.open_table(SERIES_LAST)?;
            let mut expired = Vec::new();
            for entry in series_last.iter()? {
                let (k, v) = entry?;
                // `series_last` may lag the newest sample by up to a day.
                if v.value().saturating_add(DAY_MS) < cutoff {
                    expired.push(k.value());
                }
            }
            let mut series_table = txn.open_table(SERIES)?;
            let mut postings = txn.open_table(POSTINGS)?;
            for id in expired {
                known.remove(&id);
                series_last.remove(id)?;
                let meta = series_table
                    .remove(id)?
                    .map(|m| decode_record::<SeriesMeta>(m.value()))
                    .transpose()?;
                if let Some(meta) = meta {
                    postings.remove((
                        meta.project.as_str(),
                        NAME_LABEL,
                        meta.metric.as_str(),
                        id,
                    ))?;
                    for (name, value) in &meta.labels {
                        postings.remove((
                            meta.project.as_str(),
                            name.as_str(),
                            value.as_str(),
                            id,
                        ))?;
                    }
                    series_dropped += 1;
                }
            }

            let span_cutoff = now
                .saturating_sub(self.options.traces_retention_ms)
                .saturating_mul(1_000_000);
            // Chunks holding a span past retention lose it; a chunk left
            // empty goes.
            for (project, chunk) in chunks_older_than(&txn, SPAN_CHUNK_OLDEST, span_cutoff)? {
                let spans = drop_span_chunk(&txn, &project, chunk)?;
                let before = spans.len();
                let kept: Vec<Span> = spans
                    .into_iter()
                    .filter(|s| s.start_ns >= span_cutoff)
                    .collect();
                spans_dropped += (before - kept.len()) as u64;
                if !kept.is_empty() {
                    put_span_chunk(&txn, &project, chunk, &kept)?;
                }
            }

            let log_cutoff = now
                .saturating_sub(self.options.logs_retention_ms)
                .saturating_mul(1_000_000);
            for (project, chunk) in chunks_older_than(&txn, LOG_CHUNK_OLDEST, log_cutoff)? {
                let records = drop_log_chunk(&txn, &project, chunk)?;
                let before = records.len();
                let kept: Vec<(u64, LogRecord)> = records
                    .into_iter()
                    .filter(|(_, r)| r.time_ns >= log_cutoff)
                    .collect();
                logs_dropped += (before - kept.len()) as u64;
                if !kept.is_empty() {
                    put_log_chunk(&txn, &project, chunk, &kept)?;
                }
            }

            let ns = |retention_ms: i64| now.saturating_sub(retention_ms).saturating_mul(1_000_000);
            profiles_dropped = Self::expire_timed(
                &txn,
                (PROFILES, PROFILE_TIME),
                ns(self.options.profiles_retention_ms),
            )?;
            events_dropped = Self::expire_timed(
                &txn,
                (EVENTS, EVENT_TIME),
                ns(self.options.logs_retention_ms),
            )?;

            let mut by_time = txn.open_table(BATCHES_BY_TIME)?;
            let mut batches = txn.open_table(BATCHES)?;
            let mut old = Vec::new();
            for entry in by_time.range((i64::MIN, "", "")..(cutoff, "", ""))? {
                let (k, _) = entry?;
                let (at, project, id) = k.value();
                old.push((at, project.to_owned(), id.to_owned()));
            }
            for (at, project, id) in old {
                by_time.remove((at, project.as_str(), id.as_str()))?;
                batches.remove((project.as_str(), id.as_str()))?;
                batches_dropped += 1;
            }
        }
        // Lock order as for writes: the cache, the transaction, the head.
        let mut head = self
            .head
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        txn.commit()?;
        for series in head.values_mut() {
            let expired = series.partition_point(|s| s.timestamp_ms < cutoff);
            series.drain(..expired);
        }
        head.retain(|_, series| !series.is_empty());
        Ok(MaintenanceReport {
            blocks_dropped,
            series_dropped,
            batches_dropped,
            spans_dropped,
            logs_dropped,
            profiles_dropped,
            events_dropped,
            ..MaintenanceReport::default()
        })
    }

    /// Compaction then retention, as of `now`.
    pub fn maintain_blocking(&self, now: i64) -> Result<MaintenanceReport, StorageError> {
        let (samples_compacted, blocks_written) = self.compact_blocking(now)?;
        Ok(MaintenanceReport {
            samples_compacted,
            blocks_written,
            ..self.retention_blocking(now)?
        })
    }
}

type BlocksTable = redb::ReadOnlyTable<(i64, u64), &'static [u8]>;
type TimedTable = TableDefinition<'static, (&'static str, i64, u64), &'static [u8]>;
type TimeIndex = TableDefinition<'static, (i64, &'static str, u64), ()>;

/// The newest in-range sample of a series held in blocks, walking the
/// windows newest first.
fn newest_in_blocks(
    blocks: &BlocksTable,
    id: u64,
    windows: Option<(i64, i64)>,
    width: i64,
    in_range: &impl Fn(&Sample) -> bool,
) -> Result<Option<Sample>, StorageError> {
    let Some((low, high)) = windows else {
        return Ok(None);
    };
    let mut w = high;
    while w >= low {
        let found = match blocks.get((w, id))? {
            Some(block) => decode_block(block.value())?
                .into_iter()
                .rev()
                .find(in_range),
            None => None,
        };
        if found.is_some() {
            return Ok(found);
        }
        w -= width;
    }
    Ok(None)
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
        batch.validate()?;
        self.submit(Write::Metrics(batch)).await
    }

    async fn write_spans(&self, batch: SpanBatch) -> Result<WriteOutcome, StorageError> {
        batch.validate()?;
        self.submit(Write::Spans(batch)).await
    }

    async fn write_logs(&self, batch: LogBatch) -> Result<WriteOutcome, StorageError> {
        batch.validate()?;
        self.submit(Write::Logs(batch)).await
    }

    async fn search_logs(&self, project: &str, query: &LogQuery) -> Result<LogPage, StorageError> {
        let (core, project, query) = (self.core.clone(), project.to_owned(), query.clone());
        blocking(move || core.search_logs_blocking(&project, &query)).await
    }

    async fn write_profiles(&self, batch: ProfileBatch) -> Result<WriteOutcome, StorageError> {
        batch.validate()?;
        self.submit(Write::Profiles(batch)).await
    }

    async fn merge_profiles(
        &self,
        project: &str,
        query: &ProfileQuery,
    ) -> Result<Vec<StackSample>, StorageError> {
        let (core, project, query) = (self.core.clone(), project.to_owned(), query.clone());
        blocking(move || {
            let mut stacks = Vec::new();
            core.scan_timed(
                PROFILES,
                &project,
                query.start_ns,
                query.end_ns,
                |p: Profile| {
                    if query.matches(&p) {
                        stacks.extend(p.stacks);
                    }
                    true
                },
            )?;
            Ok(merge_stacks(stacks))
        })
        .await
    }

    async fn write_events(&self, batch: EventBatch) -> Result<WriteOutcome, StorageError> {
        batch.validate()?;
        self.submit(Write::Events(batch)).await
    }

    async fn list_events(
        &self,
        project: &str,
        query: &EventQuery,
    ) -> Result<Vec<Event>, StorageError> {
        let (core, project, query) = (self.core.clone(), project.to_owned(), query.clone());
        blocking(move || {
            let limit = query.page_size();
            let mut events = Vec::new();
            core.scan_timed(
                EVENTS,
                &project,
                query.start_ns,
                query.end_ns,
                |e: Event| {
                    if query.matches(&e) {
                        events.push(e);
                    }
                    events.len() < limit
                },
            )?;
            sort_events(&mut events);
            Ok(events)
        })
        .await
    }

    async fn trace(&self, project: &str, trace_id: [u8; 16]) -> Result<Vec<Span>, StorageError> {
        let (core, project) = (self.core.clone(), project.to_owned());
        blocking(move || core.trace_blocking(&project, trace_id)).await
    }

    async fn search_spans(
        &self,
        project: &str,
        query: &TraceQuery,
    ) -> Result<Vec<SpanSummary>, StorageError> {
        let (core, project, query) = (self.core.clone(), project.to_owned(), query.clone());
        blocking(move || core.search_blocking(&project, &query)).await
    }

    async fn select(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let (core, project, selector) = (self.core.clone(), project.to_owned(), selector.clone());
        blocking(move || core.read_blocking(&project, &selector, start_ms, end_ms, false)).await
    }

    async fn latest(
        &self,
        project: &str,
        selector: &SeriesSelector,
        since_ms: i64,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let (core, project, selector) = (self.core.clone(), project.to_owned(), selector.clone());
        blocking(move || core.read_blocking(&project, &selector, since_ms, i64::MAX, true)).await
    }

    async fn metric_names(
        &self,
        project: &str,
        start_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        let (core, project) = (self.core.clone(), project.to_owned());
        blocking(move || core.metric_names_blocking(&project, start_ms)).await
    }

    async fn series(
        &self,
        project: &str,
        selector: &SeriesSelector,
        start_ms: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        let (core, project, selector) = (self.core.clone(), project.to_owned(), selector.clone());
        blocking(move || core.series_blocking(&project, &selector, start_ms)).await
    }

    async fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport, StorageError> {
        let core = self.core.clone();
        blocking(move || core.maintain_blocking(now_ms)).await
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
        assert_eq!(outcome, WriteOutcome::Stored { records: 4 });
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

    const HOUR: i64 = 3600 * 1000;

    fn options() -> RedbOptions {
        RedbOptions {
            block_window_ms: HOUR,
            head_grace_ms: 0,
            metrics_retention_ms: 24 * HOUR,
            traces_retention_ms: 24 * HOUR,
            logs_retention_ms: 24 * HOUR,
            profiles_retention_ms: 24 * HOUR,
        }
    }

    #[tokio::test]
    async fn compaction_keeps_every_sample_and_merges_late_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open_with(&dir.path().join("t.redb"), options()).unwrap();
        let now = now_ms();
        let base = window_of(now, HOUR) - 3 * HOUR;
        let points: Vec<(i64, f64)> = (0..360).map(|i| (base + i * 30_000, i as f64)).collect();
        store
            .write_metrics(batch("p", "b1", vec![series("cpu", "a", &points)]))
            .await
            .unwrap();
        let before = store
            .select("p", &SeriesSelector::metric("cpu"), 0, i64::MAX)
            .await
            .unwrap();
        let report = store.maintain(now).await.unwrap();
        assert_eq!(report.samples_compacted, 360);
        assert_eq!(report.blocks_written, 3, "three closed one-hour windows");
        let after = store
            .select("p", &SeriesSelector::metric("cpu"), 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(before, after, "compaction changes no answer");
        let partial = store
            .select(
                "p",
                &SeriesSelector::metric("cpu"),
                base + HOUR,
                base + HOUR + 60_000,
            )
            .await
            .unwrap();
        assert_eq!(partial[0].samples.len(), 3);
        let latest = store
            .latest("p", &SeriesSelector::metric("cpu"), base)
            .await
            .unwrap();
        assert_eq!(
            latest[0].samples,
            vec![Sample {
                timestamp_ms: base + 359 * 30_000,
                value: 359.0
            }]
        );

        // A late sample for a compacted window, and an overwrite of one.
        store
            .write_metrics(batch(
                "p",
                "late",
                vec![series("cpu", "a", &[(base + 15_000, -1.0), (base, 42.0)])],
            ))
            .await
            .unwrap();
        let got = store
            .select("p", &SeriesSelector::metric("cpu"), base, base + 30_000)
            .await
            .unwrap();
        assert_eq!(
            got[0].samples,
            vec![
                Sample {
                    timestamp_ms: base,
                    value: 42.0
                },
                Sample {
                    timestamp_ms: base + 15_000,
                    value: -1.0
                },
                Sample {
                    timestamp_ms: base + 30_000,
                    value: 1.0
                },
            ]
        );
        let report = store.maintain(now).await.unwrap();
        assert_eq!(
            (report.samples_compacted, report.blocks_written),
            (0, 0),
            "late samples of compacted windows went straight to their block"
        );
        let merged = store
            .select("p", &SeriesSelector::metric("cpu"), base, base + 30_000)
            .await
            .unwrap();
        assert_eq!(got, merged);
    }

    #[tokio::test]
    async fn reopening_replays_the_head_without_resurrecting_old_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let now = now_ms();
        let old = window_of(now, HOUR) - 2 * HOUR;
        let fresh = now - 1000;
        {
            let store = RedbStore::open_with(&path, options()).unwrap();
            // One WAL entry holding a sample that compaction moves and one it keeps.
            store
                .write_metrics(batch(
                    "p",
                    "b1",
                    vec![series("cpu", "a", &[(old, 1.0), (fresh, 5.0)])],
                ))
                .await
                .unwrap();
            let report = store.maintain(now).await.unwrap();
            assert_eq!(report.samples_compacted, 1);
            // A late overwrite of the compacted sample goes to its block.
            store
                .write_metrics(batch("p", "b2", vec![series("cpu", "a", &[(old, 2.0)])]))
                .await
                .unwrap();
        }
        let store = RedbStore::open_with(&path, options()).unwrap();
        let got = store
            .select("p", &SeriesSelector::metric("cpu"), 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(
            got[0].samples,
            vec![
                Sample {
                    timestamp_ms: old,
                    value: 2.0
                },
                Sample {
                    timestamp_ms: fresh,
                    value: 5.0
                },
            ],
            "the head came back from the WAL; the stale copy of the old sample did not"
        );
    }

    #[tokio::test]
    async fn retention_drops_old_data_and_keeps_new() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open_with(&dir.path().join("t.redb"), options()).unwrap();
        let now = now_ms();
        let old = now - 60 * HOUR;
        let recent = now - 2 * HOUR;
        store
            .write_metrics(batch(
                "p",
                "b1",
                vec![
                    series("cpu", "gone", &[(old, 1.0), (old + 1000, 2.0)]),
                    series("cpu", "mixed", &[(old, 3.0), (recent, 4.0)]),
                ],
            ))
            .await
            .unwrap();
        store.maintain(now).await.unwrap();
        let report = store.maintain(now).await.unwrap();
        assert_eq!(report.samples_compacted, 0, "nothing left to compact");
        let all = store
            .select("p", &SeriesSelector::metric("cpu"), 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(
            all.len(),
            1,
            "series with nothing newer than retention are gone"
        );
        assert_eq!(all[0].labels.get("node").map(String::as_str), Some("mixed"));
        assert_eq!(
            all[0].samples,
            vec![Sample {
                timestamp_ms: recent,
                value: 4.0
            }]
        );
        let gone = store
            .select(
                "p",
                &SeriesSelector::metric("cpu").with(Matcher::equal("node", "gone")),
                0,
                i64::MAX,
            )
            .await
            .unwrap();
        assert!(gone.is_empty());
    }

    #[tokio::test]
    async fn matchers_select_through_postings() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
        let series: Vec<SeriesWrite> = ["web-1", "web-2", "db-1"]
            .iter()
            .map(|n| series("cpu", n, &[(1, 1.0)]))
            .chain([series("mem", "web-1", &[(1, 1.0)])])
            .collect();
        store.write_metrics(batch("p", "b", series)).await.unwrap();
        let nodes = |got: Vec<SeriesData>| -> Vec<String> {
            got.into_iter().map(|s| s.labels["node"].clone()).collect()
        };
        let re = SeriesSelector::metric("cpu")
            .with(Matcher::new("node", crate::MatcherOp::RegexMatch, "web-.*").unwrap());
        assert_eq!(nodes(store.select("p", &re, 0, 10).await.unwrap()).len(), 2);
        let nre = SeriesSelector::metric("cpu")
            .with(Matcher::new("node", crate::MatcherOp::RegexNoMatch, "web-.*").unwrap());
        assert_eq!(
            nodes(store.select("p", &nre, 0, 10).await.unwrap()),
            vec!["db-1"]
        );
        let ne = SeriesSelector::metric("cpu")
            .with(Matcher::new("node", crate::MatcherOp::NotEqual, "db-1").unwrap());
        assert_eq!(nodes(store.select("p", &ne, 0, 10).await.unwrap()).len(), 2);
        let absent = SeriesSelector::metric("cpu").with(Matcher::equal("zone", ""));
        assert_eq!(
            nodes(store.select("p", &absent, 0, 10).await.unwrap()).len(),
            3
        );
        let none = SeriesSelector::metric("cpu").with(Matcher::equal("node", "nope"));
        assert!(store.select("p", &none, 0, 10).await.unwrap().is_empty());
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
