//! The agent's outbox: every batch is written here before it is sent and
//! removed once ingest acknowledges it, so batches survive both an ingest
//! outage and an agent restart. The spool is bounded in bytes on disk; when
//! full, the oldest batches are dropped (and counted) to make room for the
//! newest. In memory it holds only the list of file names and sizes.
//!
//! One file per batch, `<sequence>.batch`: the protobuf `PushRequest`,
//! zstd-compressed, written to a temporary name, synced, then renamed, so a
//! crash leaves either the whole batch or nothing.
//!
//! A batch can carry a sidecar: a small state file (the log readers'
//! positions) that must change exactly when the batch is committed. It is
//! written as `<name>.pending` naming the batch's sequence, and renamed to
//! `<name>` right after the batch; [`Spool::recover_sidecar`] finishes or
//! undoes a commit a crash interrupted. So log lines are neither sent
//! twice nor lost across restarts.

use std::{
    collections::VecDeque,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use prost::Message;
use vigil_proto::telemetry::v1::PushRequest;

const SUFFIX: &str = "batch";
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool batch {path} is damaged ({reason}); it was removed")]
    Damaged { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// (sequence, size on disk), oldest first.
    entries: VecDeque<(u64, u64)>,
    bytes: u64,
    next: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, picking up the batches a
    /// previous run left behind.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match name
                .strip_suffix(SUFFIX)
                .and_then(|n| n.strip_suffix('.'))
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(seq) => {
                    let size = entry.metadata().map_err(io_error(&path))?.len();
                    entries.push((seq, size));
                }
                // A write cut short by a crash: never acknowledged, never
                // renamed into place.
                None if name.ends_with(".tmp") => {
                    fs::remove_file(&path).map_err(io_error(&path))?;
                }
                None => {}
            }
        }
        entries.sort_unstable();
        let next = entries.last().map_or(1, |(seq, _)| seq + 1);
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            bytes: entries.iter().map(|(_, size)| size).sum(),
            entries: entries.into(),
            next,
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.{SUFFIX}"))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    #[cfg(test)]
    fn push(&mut self, batch: &PushRequest) -> Result<usize, SpoolError> {
        self.push_with(batch, None)
    }

    /// Stores `batch` durably, committing `sidecar` (its file and content)
    /// together with it; returns how many of the oldest batches were
    /// dropped to stay within the bound. The newest batch is always kept,
    /// even when it alone is larger than the bound.
    pub fn push_with(
        &mut self,
        batch: &PushRequest,
        sidecar: Option<(&Path, &[u8])>,
    ) -> Result<usize, SpoolError> {
        let data = zstd::bulk::compress(&batch.encode_to_vec(), ZSTD_LEVEL)
            .map_err(io_error(&self.dir))?;
        let seq = self.next;
        let path = self.path(seq);
        let pending =
            sidecar.map(|(final_path, content)| (final_path, pending_path(final_path), content));
        if let Some((_, pending, content)) = &pending {
            let mut file = fs::File::create(pending).map_err(io_error(pending))?;
            file.write_all(format!("{seq}\n").as_bytes())
                .and_then(|()| file.write_all(content))
                .and_then(|()| file.sync_data())
                .map_err(io_error(pending))?;
        }
        let tmp = path.with_extension("tmp");
        let mut file = fs::File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(&data).map_err(io_error(&tmp))?;
        file.sync_data().map_err(io_error(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        if let Some((final_path, pending, _)) = &pending {
            fs::rename(pending, final_path).map_err(io_error(final_path))?;
        }
        self.next += 1;
        self.entries.push_back((seq, data.len() as u64));
        self.bytes += data.len() as u64;
        let mut dropped = 0;
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            if let Some((oldest, _)) = self.entries.front().copied() {
                // Forgotten even when its file cannot be deleted: the bound
                // holds, and the new batch is spooled whatever happens.
                if let Err(e) = self.remove(oldest) {
                    tracing::warn!(error = %e, "could not delete a dropped batch's file");
                }
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// The committed content of a sidecar (without its sequence line),
    /// after finishing or undoing a commit a crash interrupted: a pending
    /// sidecar whose batch is in the spool was committed with it; one
    /// whose batch is not never was. (Its batch cannot have been sent and
    /// removed in between: the spool is locked from the batch's write to
    /// the sidecar's rename.)
    pub fn recover_sidecar(&self, final_path: &Path) -> Result<Option<Vec<u8>>, SpoolError> {
        let pending = pending_path(final_path);
        if let Ok(text) = fs::read(&pending) {
            let seq = text
                .split(|b| *b == b'\n')
                .next()
                .and_then(|l| std::str::from_utf8(l).ok()?.parse::<u64>().ok());
            match seq {
                Some(seq) if self.path(seq).exists() => {
                    fs::rename(&pending, final_path).map_err(io_error(final_path))?;
                }
                _ => fs::remove_file(&pending).map_err(io_error(&pending))?,
            }
        }
        match fs::read(final_path) {
            Ok(text) => Ok(Some(match text.iter().position(|b| *b == b'\n') {
                Some(at) => text[at + 1..].to_vec(),
                None => Vec::new(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(final_path)(e)),
        }
    }

    /// The oldest batch, read from disk. A file that cannot be read or
    /// decoded is dropped from the spool and reported, so one bad file
    /// cannot block the queue.
    pub fn front(&mut self) -> Result<Option<(u64, PushRequest)>, SpoolError> {
        let Some((seq, _)) = self.entries.front().copied() else {
            return Ok(None);
        };
        let path = self.path(seq);
        let decoded = fs::read(&path)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|data| zstd::stream::decode_all(data.as_slice()).map_err(|e| e.to_string()))
            .and_then(|raw| PushRequest::decode(raw.as_slice()).map_err(|e| e.to_string()));
        match decoded {
            Ok(batch) => Ok(Some((seq, batch))),
            Err(reason) => {
                // Forgotten even if the file cannot be deleted.
                let _ = self.remove(seq);
                Err(SpoolError::Damaged { path, reason })
            }
        }
    }

    /// Removes batch `seq` (acknowledged, refused or dropped) from the
    /// spool. It leaves the queue even when its file cannot be deleted
    /// (the error says so): a file left behind is sent again after a
    /// restart at worst, and ingest stores a batch id once.
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        let Some(index) = self.entries.iter().position(|(s, _)| *s == seq) else {
            return Ok(());
        };
        if let Some((_, size)) = self.entries.remove(index) {
            self.bytes -= size;
        }
        let path = self.path(seq);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&path)(e)),
        }
    }
}

fn pending_path(final_path: &Path) -> PathBuf {
    let mut name = final_path.as_os_str().to_owned();
    name.push(".pending");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sidecar_commits_with_its_batch_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("positions");
        let mut spool = Spool::open(&dir.path().join("s"), 1 << 20).unwrap();
        assert_eq!(spool.recover_sidecar(&state).unwrap(), None);
        spool
            .push_with(&batch("a", 1), Some((&state, b"one")))
            .unwrap();
        assert_eq!(
            spool.recover_sidecar(&state).unwrap().as_deref(),
            Some(&b"one"[..])
        );
        // A crash after the batch's rename, before the sidecar's: the batch
        // (seq 2) is there, so the pending sidecar counts.
        spool.push(&batch("b", 1)).unwrap();
        fs::write(pending_path(&state), b"2\ntwo").unwrap();
        assert_eq!(
            spool.recover_sidecar(&state).unwrap().as_deref(),
            Some(&b"two"[..])
        );
        // A crash before the batch's rename: no batch 9, the sidecar is undone.
        fs::write(pending_path(&state), b"9\nnine").unwrap();
        assert_eq!(
            spool.recover_sidecar(&state).unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert!(!pending_path(&state).exists());
    }

    fn batch(id: &str, filler: usize) -> PushRequest {
        PushRequest {
            batch_id: id.to_owned(),
            agent: None,
            events: vec![],
            metrics: vec![vigil_proto::telemetry::v1::ResourceMetrics {
                resource: None,
                series: (0..filler)
                    .map(|i| vigil_proto::telemetry::v1::TimeSeries {
                        // Distinct names: compressible, but not to nothing.
                        name: format!("series_{id}_{i}_{}", i * 7919 % 1013),
                        labels: vec![],
                        samples: vec![],
                    })
                    .collect(),
            }],
            spans: vec![],
            logs: vec![],
            profiles: vec![],
        }
    }

    #[test]
    fn batches_come_back_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for id in ["a", "b", "c"] {
            assert_eq!(spool.push(&batch(id, 3)).unwrap(), 0);
        }
        let (seq, first) = spool.front().unwrap().unwrap();
        assert_eq!(first.batch_id, "a");
        spool.remove(seq).unwrap();
        drop(spool);
        // A crash mid-write leaves a temporary file: it is not a batch.
        fs::write(dir.path().join("00000000000000000009.tmp"), b"partial").unwrap();

        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.len(), 2);
        let mut ids = Vec::new();
        while let Some((seq, b)) = spool.front().unwrap() {
            ids.push(b.batch_id);
            spool.remove(seq).unwrap();
        }
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(spool.bytes(), 0);
        assert!(!dir.path().join("00000000000000000009.tmp").exists());
        // New batches continue the numbering after the old ones.
        spool.push(&batch("d", 1)).unwrap();
        assert_eq!(spool.front().unwrap().unwrap().0, 4);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_says_how_many() {
        let dir = tempfile::tempdir().unwrap();
        let one = {
            let mut probe = Spool::open(&dir.path().join("probe"), u64::MAX).unwrap();
            probe.push(&batch("x", 200)).unwrap();
            probe.bytes()
        };
        // Room for three batches of about that size.
        let mut spool = Spool::open(&dir.path().join("s"), one * 3 + one / 2).unwrap();
        let mut dropped = 0;
        for i in 0..10 {
            dropped += spool.push(&batch(&format!("{i}"), 200)).unwrap();
        }
        assert_eq!(spool.len(), 3);
        assert_eq!(dropped, 7);
        assert!(spool.bytes() <= one * 3 + one / 2);
        assert_eq!(spool.front().unwrap().unwrap().1.batch_id, "7");
        let files = fs::read_dir(dir.path().join("s")).unwrap().count();
        assert_eq!(files, 3, "dropped batches are deleted from disk");
    }

    #[test]
    fn a_missing_file_does_not_block_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.push(&batch("gone", 2)).unwrap();
        spool.push(&batch("next", 2)).unwrap();
        fs::remove_file(dir.path().join("00000000000000000001.batch")).unwrap();
        let err = spool.front().unwrap_err();
        assert!(err.to_string().contains("cannot read it"), "{err}");
        assert_eq!(spool.front().unwrap().unwrap().1.batch_id, "next");
        assert_eq!(spool.len(), 1);
    }

    #[test]
    fn a_damaged_batch_is_reported_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.push(&batch("good-1", 2)).unwrap();
        spool.push(&batch("good-2", 2)).unwrap();
        fs::write(dir.path().join("00000000000000000001.batch"), b"not zstd").unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let err = spool.front().unwrap_err();
        assert!(matches!(err, SpoolError::Damaged { .. }), "{err}");
        assert_eq!(spool.front().unwrap().unwrap().1.batch_id, "good-2");
    }
}
