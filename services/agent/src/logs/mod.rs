//! Logs: every container's and configured file's new lines, each interval,
//! as records (severity, trace id, pattern) and as counts per pattern and
//! severity. Sources are found on their own: Kubernetes pod logs (CRI
//! framing), Docker json-file logs, the systemd journal, and the files in
//! `agent.logs.files`.
//! Positions are committed with the batch that carries the lines (see
//! `spool`), so a restart neither re-sends nor skips lines (lines of a
//! batch the full spool later drops are lost, and counted there). A stack
//! trace cut by the end of a read, or a CRI partial line whose end comes in
//! the next read, becomes two records.

pub mod drain;
pub mod journal;
pub mod parse;
pub mod tail;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use vigil_proto::telemetry::v1::{Label, LogRecord, ResourceLogs, TimeSeries};

use self::{
    drain::Drain,
    parse::{
        Format, continues, json_fields, leading_time_ns, parse_line, severity, severity_text,
        trace_id,
    },
    tail::Position,
};

/// `[agent.logs]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    pub enabled: bool,
    /// Files to follow besides the containers': paths, or `dir/prefix*suffix`.
    pub files: Vec<PathBuf>,
    /// Kubernetes pod logs (`<ns>_<pod>_<uid>/<container>/<n>.log`, CRI).
    pub pods_dir: PathBuf,
    /// Docker's containers (`<id>/<id>-json.log`).
    pub docker_dir: PathBuf,
    /// Read the systemd journal (with `journalctl`).
    pub journal: bool,
    /// A journal directory to read instead of the system's
    /// (`/host/var/log/journal` in a container).
    pub journal_dir: Option<PathBuf>,
    /// Records shipped per source per interval; more are counted in
    /// `log_records_dropped_total` (their patterns are still counted).
    pub max_records_per_source: usize,
    /// Patterns kept per source; messages past it count under pattern 0.
    pub max_patterns_per_source: usize,
    /// Bytes read per file per interval; the rest waits for the next one.
    pub max_bytes_per_file: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            files: Vec::new(),
            pods_dir: PathBuf::from("/var/log/pods"),
            docker_dir: PathBuf::from("/var/lib/docker/containers"),
            journal: true,
            journal_dir: None,
            max_records_per_source: 10_000,
            max_patterns_per_source: 500,
            max_bytes_per_file: 8 << 20,
        }
    }
}

/// A file being followed and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub format: Format,
    pub service: String,
    pub attributes: Vec<(String, String)>,
}

fn children(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// The files to follow now.
pub fn discover(config: &LogsConfig) -> Vec<SourceFile> {
    let mut out = Vec::new();
    for pattern in &config.files {
        let name = pattern
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let paths = match (pattern.parent(), name) {
            (Some(dir), Some(name)) if name.contains('*') => {
                let (prefix, suffix) = name.split_once('*').unwrap_or((&name, ""));
                children(dir)
                    .into_iter()
                    .filter(|p| {
                        p.file_name().is_some_and(|n| {
                            let n = n.to_string_lossy();
                            n.starts_with(prefix) && n.ends_with(suffix) && p.is_file()
                        })
                    })
                    .collect()
            }
            _ if pattern.is_file() => vec![pattern.clone()],
            _ => vec![],
        };
        for path in paths {
            let service = path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            out.push(SourceFile {
                attributes: vec![("log_file".into(), path.display().to_string())],
                path,
                format: Format::Plain,
                service,
            });
        }
    }
    for pod_dir in children(&config.pods_dir) {
        let dir_name = pod_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let Some(dir_name) = dir_name else { continue };
        let mut parts = dir_name.splitn(3, '_');
        let (Some(namespace), Some(pod), Some(_uid)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        for container_dir in children(&pod_dir) {
            let container = container_dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            for path in children(&container_dir) {
                if path.extension().is_some_and(|e| e == "log") {
                    out.push(SourceFile {
                        path,
                        format: Format::Cri,
                        service: container.clone(),
                        attributes: vec![
                            ("namespace".into(), namespace.to_owned()),
                            ("pod".into(), pod.to_owned()),
                            ("container".into(), container.clone()),
                        ],
                    });
                }
            }
        }
    }
    for container_dir in children(&config.docker_dir) {
        let Some(id) = container_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            continue;
        };
        let path = container_dir.join(format!("{id}-json.log"));
        if path.is_file() {
            let short: String = id.chars().take(12).collect();
            out.push(SourceFile {
                path,
                format: Format::DockerJson,
                service: short.clone(),
                attributes: vec![("container_id".into(), short)],
            });
        }
    }
    out
}

/// Per source: what it is, its patterns and its counters (totals since
/// the start).
#[derive(Debug)]
struct SourceState {
    attributes: Vec<Label>,
    drain: Drain,
    /// (severity, pattern id) → messages, in batches that were spooled.
    messages: BTreeMap<(u8, u64), u64>,
    dropped: u64,
    /// What the last collection added, until its batch is spooled (if it
    /// is not, the same lines are read and counted again).
    pending: BTreeMap<(u8, u64), u64>,
    pending_dropped: u64,
    /// The collection that last read something from it.
    last_read: u64,
}

/// Records shipped per batch, all sources together (ingest takes 50 000).
const MAX_RECORDS_PER_BATCH: usize = 40_000;
/// `log_messages_total` series per batch: those that changed, busiest
/// first (ingest takes 10 000 series in all).
const MAX_SERIES_PER_BATCH: usize = 4_000;
/// Longest record body shipped (the store's bound).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Collections a vanished file's position, or an idle source's state, is
/// kept (an hour at 10 s): a rotation may leave a gap before the new file.
const FORGET_AFTER: u64 = 360;

/// What one collection read.
#[derive(Debug, Default)]
pub struct LogsCollected {
    pub logs: Vec<ResourceLogs>,
    pub series: Vec<TimeSeries>,
    /// The positions after these lines, to commit with their batch.
    pub positions: Vec<u8>,
}

/// Where every source was read to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Positions {
    files: BTreeMap<PathBuf, Position>,
    /// The journal's cursor.
    journal: Option<String>,
}

pub struct LogCollector {
    config: LogsConfig,
    /// Positions of lines committed with a spooled batch.
    committed: Positions,
    /// Positions after the last collection, until its batch is spooled.
    proposed: Option<Positions>,
    /// First run ever (no positions saved): files already there are
    /// followed from their end, not replayed.
    fresh: bool,
    /// By source id: a file's path, or `journal:<unit>`.
    sources: HashMap<String, SourceState>,
    /// Collections so far.
    collections: u64,
    /// The collection a file was last seen in (its position is kept a while
    /// after it vanishes).
    last_seen: HashMap<PathBuf, u64>,
    /// The collection the journal last failed in.
    journal_failed: Option<u64>,
}

fn label(name: &str, value: String) -> Label {
    Label {
        name: name.to_owned(),
        value,
    }
}

impl LogCollector {
    /// `saved`: the committed positions from an earlier run (None: none).
    /// Positions that cannot be read count as none: files already there are
    /// then followed from their end rather than replayed.
    pub fn new(config: LogsConfig, saved: Option<&[u8]>) -> Self {
        let committed: Option<Positions> = saved.and_then(|s| serde_json::from_slice(s).ok());
        Self {
            config,
            fresh: committed.is_none(),
            committed: committed.unwrap_or_default(),
            proposed: None,
            sources: HashMap::new(),
            collections: 0,
            last_seen: HashMap::new(),
            journal_failed: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Reads every source's new lines.
    pub fn collect(&mut self, now_ns: i64, ts_ms: i64) -> LogsCollected {
        let mut out = LogsCollected::default();
        if !self.config.enabled {
            return out;
        }
        self.collections += 1;
        let now = self.collections;
        for state in self.sources.values_mut() {
            state.pending.clear();
            state.pending_dropped = 0;
        }
        let mut positions = self.committed.clone();
        let files = discover(&self.config);
        // Inodes followed under another path: a rotated file a glob also
        // matches is read through its old name's position, not again.
        let followed: HashMap<u64, PathBuf> = positions
            .files
            .iter()
            .map(|(p, pos)| (pos.inode, p.clone()))
            .collect();
        for file in &files {
            use std::os::unix::fs::MetadataExt;
            self.last_seen.insert(file.path.clone(), now);
            let inode = std::fs::metadata(&file.path).map(|m| m.ino()).ok();
            if !positions.files.contains_key(&file.path)
                && inode.is_some_and(|i| followed.get(&i).is_some_and(|p| *p != file.path))
            {
                continue;
            }
            let from = match positions.files.get(&file.path) {
                Some(p) => Some(*p),
                None if self.fresh => {
                    // Already there at the first start: from its end.
                    if let Ok(meta) = std::fs::metadata(&file.path) {
                        use std::os::unix::fs::MetadataExt;
                        positions.files.insert(
                            file.path.clone(),
                            tail::position_at_end(&file.path, meta.ino(), meta.len()),
                        );
                    }
                    continue;
                }
                None => None,
            };
            let Ok(read) = tail::read_new(&file.path, from, self.config.max_bytes_per_file) else {
                continue;
            };
            positions.files.insert(file.path.clone(), read.position);
            if let Some((old, end)) = read.rotated {
                // Read to its end under its old name: if a glob matches its
                // new name, it goes on from there.
                self.last_seen.insert(old.clone(), now);
                positions.files.insert(old, end);
            }
            let lines = read.lines;
            let id = file.path.display().to_string();
            let attributes = file
                .attributes
                .iter()
                .map(|(n, v)| label(n, v.clone()))
                .collect();
            let records = records(file.format, &lines, now_ns);
            self.add(&id, &file.service, attributes, records, &mut out);
        }
        // Forget files gone for a while (a rotation can leave a gap).
        let last_seen = &mut self.last_seen;
        last_seen.retain(|_, seen| now - *seen <= FORGET_AFTER);
        positions
            .files
            .retain(|path, _| last_seen.contains_key(path));
        // A failed journal is tried again every 30 collections.
        if self.config.journal && self.journal_failed.is_none_or(|at| now - at >= 30) {
            self.read_journal(&mut positions, &mut out, now_ns);
        }
        self.sources
            .retain(|_, s| now - s.last_read <= FORGET_AFTER);
        // Counters that changed now, busiest first, within the bound.
        let mut changed: Vec<(Vec<Label>, u64)> = Vec::new();
        for state in self.sources.values() {
            for (key @ (severity, pattern), added) in &state.pending {
                let count = state.messages.get(key).copied().unwrap_or(0) + added;
                let mut labels = state.attributes.clone();
                labels.push(label("level", severity_text(*severity).to_owned()));
                labels.push(label("pattern_id", format!("{pattern:016x}")));
                changed.push((labels, count));
            }
            if state.last_read == now {
                out.series.push(crate::series(
                    "log_records_dropped_total",
                    state.attributes.clone(),
                    ts_ms,
                    (state.dropped + state.pending_dropped) as f64,
                ));
            }
        }
        changed.sort_by_key(|c| std::cmp::Reverse(c.1));
        out.series.extend(
            changed
                .into_iter()
                .take(MAX_SERIES_PER_BATCH)
                .map(|(labels, count)| {
                    crate::series("log_messages_total", labels, ts_ms, count as f64)
                }),
        );
        out.positions = serde_json::to_vec(&positions).unwrap_or_default();
        self.proposed = Some(positions);
        self.fresh = false;
        out
    }

    fn read_journal(&mut self, positions: &mut Positions, out: &mut LogsCollected, now_ns: i64) {
        let max = self.config.max_records_per_source.saturating_mul(10);
        let read = journal::read_after(
            self.config.journal_dir.as_deref(),
            positions.journal.as_deref(),
            max,
        );
        let entries = match read {
            Ok((entries, cursor)) => {
                positions.journal = cursor;
                self.journal_failed = None;
                entries
            }
            Err(reason) => {
                if self.journal_failed.is_none() {
                    tracing::info!(
                        reason,
                        "the systemd journal is not read (tried again later)"
                    );
                }
                // A cursor the journal no longer knows: from now on.
                positions.journal = None;
                self.journal_failed = Some(self.collections);
                return;
            }
        };
        let mut by_source: BTreeMap<String, Vec<journal::Entry>> = BTreeMap::new();
        for e in entries {
            by_source.entry(e.source.clone()).or_default().push(e);
        }
        for (source, entries) in by_source {
            let id = format!("journal:{source}");
            let records = entries
                .into_iter()
                .map(|e| {
                    let mut attributes = Vec::new();
                    if let Some(pid) = e.pid {
                        attributes.push(label("pid", pid));
                    }
                    LogRecord {
                        time_unix_nano: plausible(e.time_ns, now_ns),
                        severity: u32::from(e.severity),
                        severity_text: severity_text(e.severity).to_owned(),
                        trace_id: trace_id(&e.message).map(|t| t.to_vec()).unwrap_or_default(),
                        body: e.message,
                        attributes,
                        ..LogRecord::default()
                    }
                })
                .collect();
            self.add(
                &id,
                &source,
                vec![label("journal_unit", source.clone())],
                records,
                out,
            );
        }
    }

    /// A source's new records: patterns found and counted, at most
    /// `max_records_per_source` shipped (the rest counted as dropped).
    fn add(
        &mut self,
        id: &str,
        service: &str,
        attributes: Vec<Label>,
        records: Vec<LogRecord>,
        out: &mut LogsCollected,
    ) {
        let max_patterns = self.config.max_patterns_per_source;
        let now = self.collections;
        let already: usize = out.logs.iter().map(|l| l.records.len()).sum();
        let room = self
            .config
            .max_records_per_source
            .min(MAX_RECORDS_PER_BATCH.saturating_sub(already));
        let state = self
            .sources
            .entry(id.to_owned())
            .or_insert_with(|| SourceState {
                attributes: attributes.clone(),
                drain: Drain::new(id, max_patterns),
                messages: BTreeMap::new(),
                dropped: 0,
                pending: BTreeMap::new(),
                pending_dropped: 0,
                last_read: now,
            });
        state.last_read = now;
        let mut shipped = Vec::new();
        for mut r in records {
            // JSON logs: the message makes the pattern, not the object.
            let message = json_fields(&r.body).and_then(|f| f.message);
            let (pattern, _) = state.drain.add(message.as_deref().unwrap_or(&r.body));
            r.pattern_id = pattern;
            *state
                .pending
                .entry((u8::try_from(r.severity).unwrap_or(0), pattern))
                .or_default() += 1;
            if shipped.len() < room {
                if r.body.len() > MAX_BODY_BYTES {
                    let mut cut = MAX_BODY_BYTES;
                    while !r.body.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    r.body.truncate(cut);
                }
                shipped.push(r);
            } else {
                state.pending_dropped += 1;
            }
        }
        if !shipped.is_empty() {
            out.logs.push(ResourceLogs {
                resource: None,
                service: service.to_owned(),
                resource_attributes: attributes,
                records: shipped,
            });
        }
    }

    /// The last collection's batch is spooled: its positions and counts
    /// hold.
    pub fn commit(&mut self) {
        if let Some(p) = self.proposed.take() {
            self.committed = p;
        }
        for state in self.sources.values_mut() {
            for (key, added) in std::mem::take(&mut state.pending) {
                *state.messages.entry(key).or_default() += added;
            }
            state.dropped += std::mem::take(&mut state.pending_dropped);
        }
    }
}

/// How far from now a line's own time may be; beyond, the time it was read
/// is used (ingest refuses records older than a week, and one such record
/// would cost its whole batch).
const MAX_AGE_NS: i64 = 6 * 24 * 3600 * 1_000_000_000;
const MAX_AHEAD_NS: i64 = 5 * 60 * 1_000_000_000;

/// A record's own time if it is plausible, else the time it was read.
fn plausible(time_ns: i64, now_ns: i64) -> i64 {
    if (now_ns - MAX_AGE_NS..=now_ns + MAX_AHEAD_NS).contains(&time_ns) {
        time_ns
    } else {
        now_ns
    }
}

/// Lines of one read as records: framing removed, CRI partial lines and
/// continuation lines (stack traces) joined, severity and trace id found.
fn records(format: Format, lines: &[String], now_ns: i64) -> Vec<LogRecord> {
    let mut out: Vec<LogRecord> = Vec::new();
    let mut last_line = String::new();
    let mut partial = false;
    for raw in lines {
        let line = parse_line(format, raw);
        if let Some(open) = out.last_mut()
            && (partial || continues(&last_line, &line.text))
        {
            if !partial {
                open.body.push('\n');
            }
            open.body.push_str(&line.text);
            partial = line.partial;
            last_line = line.text;
            continue;
        }
        partial = line.partial;
        let time = line
            .time_ns
            .or_else(|| leading_time_ns(&line.text))
            .map_or(now_ns, |t| plausible(t, now_ns));
        out.push(LogRecord {
            time_unix_nano: time,
            body: line.text.clone(),
            ..LogRecord::default()
        });
        last_line = line.text;
    }
    for r in &mut out {
        let (number, trace) = match json_fields(&r.body) {
            Some(f) => (f.severity, f.trace_id.or_else(|| trace_id(&r.body))),
            None => (severity(&r.body), trace_id(&r.body)),
        };
        r.severity = u32::from(number);
        r.severity_text = severity_text(number).to_owned();
        if let Some(id) = trace {
            r.trace_id = id.to_vec();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_records() {
        let lines: Vec<String> = [
            "2024-05-01 INFO started",
            "2024-05-01 ERROR payment failed trace_id=0af7651916cd43dd8448eb211c80319c",
            "Traceback (most recent call last):",
            "  File \"pay.py\", line 3, in charge",
            "ValueError: card declined",
            "{\"level\":\"warn\",\"msg\":\"slow\"}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = records(Format::Plain, &lines, 7);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[0].severity_text, "info");
        assert_eq!(r[1].severity_text, "error");
        assert!(r[1].body.ends_with("ValueError: card declined"));
        assert_eq!(r[1].body.lines().count(), 4);
        assert_eq!(r[1].trace_id.len(), 16);
        assert_eq!(r[2].severity_text, "warning");
        assert_eq!(r[2].time_unix_nano, 7);
        let cri: Vec<String> = [
            "2024-05-01T10:00:00Z stderr P ERROR part",
            "2024-05-01T10:00:00Z stderr F  two",
            "2024-05-01T10:00:01Z stdout F INFO next",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // A minute after the lines were written.
        let r = records(Format::Cri, &cri, 1_714_557_660_000_000_000);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].body, "ERROR part two");
        assert_eq!(r[0].time_unix_nano, 1_714_557_600_000_000_000);
        // A week-old line is stamped with the time it was read.
        let old = records(
            Format::Cri,
            &cri,
            1_714_557_600_000_000_000 + 8 * 86_400_000_000_000,
        );
        assert_eq!(
            old[0].time_unix_nano,
            1_714_557_600_000_000_000 + 8 * 86_400_000_000_000
        );
    }

    #[test]
    fn sources_are_discovered() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let pod = r.join("pods/shop_web-7d9f_0f1e2d3c-aaaa/app");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(pod.join("0.log"), "").unwrap();
        std::fs::write(pod.join("0.log.20240501-100000"), "").unwrap();
        let id = "a".repeat(64);
        let docker = r.join("docker").join(&id);
        std::fs::create_dir_all(&docker).unwrap();
        std::fs::write(docker.join(format!("{id}-json.log")), "").unwrap();
        std::fs::create_dir_all(r.join("var")).unwrap();
        std::fs::write(r.join("var/app.log"), "").unwrap();
        std::fs::write(r.join("var/other.txt"), "").unwrap();
        let found = discover(&LogsConfig {
            files: vec![r.join("var/*.log"), r.join("missing.log")],
            pods_dir: r.join("pods"),
            docker_dir: r.join("docker"),
            ..LogsConfig::default()
        });
        let formats: Vec<_> = found
            .iter()
            .map(|s| (s.format, s.service.as_str()))
            .collect();
        assert_eq!(
            formats,
            [
                (Format::Plain, "app"),
                (Format::Cri, "app"),
                (Format::DockerJson, "aaaaaaaaaaaa")
            ]
        );
        assert!(
            found[1]
                .attributes
                .contains(&("namespace".into(), "shop".into()))
        );
        assert!(
            found[1]
                .attributes
                .contains(&("pod".into(), "web-7d9f".into()))
        );
    }

    #[test]
    fn a_rotated_file_a_glob_matches_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let log = d.join("app.log");
        let append = super::tail::tests::append;
        append(&log, "one\ntwo\nthree\n");
        let mut c = LogCollector::new(
            LogsConfig {
                files: vec![d.join("app*")],
                pods_dir: d.join("none"),
                docker_dir: d.join("none"),
                journal: false,
                ..LogsConfig::default()
            },
            Some(b"{}"),
        );
        let mut bodies = Vec::new();
        let mut collect = |c: &mut LogCollector| {
            let got = c.collect(1, 1);
            c.commit();
            bodies.extend(got.logs.into_iter().flat_map(|l| l.records).map(|r| r.body));
        };
        collect(&mut c);
        append(&log, "four\n");
        std::fs::rename(&log, d.join("app.log.1")).unwrap();
        append(&log, "five\n");
        collect(&mut c);
        collect(&mut c);
        append(&d.join("app.log.1"), "late\n");
        collect(&mut c);
        bodies.sort();
        assert_eq!(bodies, ["five", "four", "late", "one", "three", "two"]);
    }

    #[test]
    fn counts_hold_only_once_their_batch_is_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, "ERROR disk full\nERROR disk full\n").unwrap();
        let mut c = LogCollector::new(
            LogsConfig {
                files: vec![log.clone()],
                pods_dir: dir.path().join("none"),
                docker_dir: dir.path().join("none"),
                journal: false,
                ..LogsConfig::default()
            },
            Some(b"{}"),
        );
        let errors = |got: &LogsCollected| {
            got.series
                .iter()
                .find(|s| {
                    s.name == "log_messages_total"
                        && s.labels
                            .iter()
                            .any(|l| l.name == "level" && l.value == "error")
                })
                .map(|s| s.samples[0].value)
        };
        // Not spooled (no commit): read and counted again, not twice.
        assert_eq!(errors(&c.collect(1, 1)), Some(2.0));
        assert_eq!(errors(&c.collect(1, 1)), Some(2.0));
        c.commit();
        std::fs::write(&log, "ERROR disk full\nERROR disk full\nERROR disk full\n").unwrap();
        let got = c.collect(1, 1);
        assert_eq!(errors(&got), Some(3.0), "2 committed + 1 new");
        assert_eq!(got.logs.iter().map(|l| l.records.len()).sum::<usize>(), 1);
    }
}
