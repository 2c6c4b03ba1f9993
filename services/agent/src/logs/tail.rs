//! Reading what was appended to a log file since a saved position, without
//! holding files open between reads: a rotated file is found again by its
//! inode in the same directory and read to its end before the new one; a
//! truncated file is read again from its start.

use std::{
    fs,
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Where reading a file stopped: its inode (to notice rotation), the
/// offset after the last complete line read, and a hash of the file's
/// first bytes (to notice a truncated file that grew past the offset
/// again before the next read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
    #[serde(default)]
    pub head: u64,
}

/// Bytes of a file's start that identify it.
const HEAD: u64 = 256;

fn head_of(path: &Path, upto: u64) -> u64 {
    let mut data = Vec::new();
    let read = fs::File::open(path).and_then(|f| f.take(upto.min(HEAD)).read_to_end(&mut data));
    match read {
        Ok(_) => xxhash_rust::xxh3::xxh3_64(&data),
        Err(_) => 0,
    }
}

/// The position at a file's end (to follow it from now on).
pub fn position_at_end(path: &Path, inode: u64, len: u64) -> Position {
    Position {
        inode,
        offset: len,
        head: head_of(path, len),
    }
}

/// Longest line kept whole; longer ones are cut (and the rest read as the
/// next line) so that one runaway line cannot hold a file back.
pub const MAX_LINE: usize = 64 * 1024;

/// Complete lines appended to `path` since `from` (at most about
/// `max_bytes`), and the position after them. `from` None: a file not seen
/// before, read from its start. A line without its newline yet waits for
/// the next read.
pub fn read_new(
    path: &Path,
    from: Option<Position>,
    max_bytes: u64,
) -> io::Result<(Vec<String>, Position)> {
    let meta = fs::metadata(path)?;
    let mut lines = Vec::new();
    let mut budget = max_bytes;
    let mut offset = match from {
        Some(p) if p.inode == meta.ino() => {
            if meta.len() < p.offset || head_of(path, p.offset) != p.head {
                0 // truncated (and maybe written again): start over
            } else {
                p.offset
            }
        }
        Some(p) => {
            // Rotated: finish the old file (renamed in the same directory)
            // first, then read the new one from its start.
            if let Some(old) = find_inode(path, p.inode) {
                let (old_lines, end) = read_lines(&old, p.offset, budget)?;
                budget = budget.saturating_sub(end - p.offset);
                lines.extend(old_lines);
                if budget == 0 {
                    // Not finished with the old file: come back to it.
                    return Ok((
                        lines,
                        Position {
                            inode: p.inode,
                            offset: end,
                            head: head_of(&old, end),
                        },
                    ));
                }
            }
            0
        }
        None => 0,
    };
    let (new_lines, end) = read_lines(path, offset, budget)?;
    lines.extend(new_lines);
    offset = end;
    Ok((
        lines,
        Position {
            inode: meta.ino(),
            offset,
            head: head_of(path, offset),
        },
    ))
}

/// The file in `path`'s directory with inode `inode`, if any.
fn find_inode(path: &Path, inode: u64) -> Option<PathBuf> {
    let dir = path.parent()?;
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.metadata().is_ok_and(|m| m.ino() == inode) && e.path() != path)
        .map(|e| e.path())
}

/// Complete lines of `path` from `offset`, at most about `budget` bytes;
/// the offset after the last one returned.
fn read_lines(path: &Path, offset: u64, budget: u64) -> io::Result<(Vec<String>, u64)> {
    let mut file = fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    file.take(budget).read_to_end(&mut data)?;
    let mut lines = Vec::new();
    let mut start = 0;
    let mut consumed = 0;
    while start < data.len() {
        match data[start..].iter().position(|b| *b == b'\n') {
            Some(at) if at <= MAX_LINE => {
                lines.push(String::from_utf8_lossy(&data[start..start + at]).into_owned());
                start += at + 1;
                consumed = start;
            }
            _ if data.len() - start > MAX_LINE => {
                lines.push(String::from_utf8_lossy(&data[start..start + MAX_LINE]).into_owned());
                start += MAX_LINE;
                consumed = start;
            }
            _ => break, // an unfinished line: wait for the rest
        }
    }
    Ok((lines, offset + consumed as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    #[test]
    fn appends_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "one\ntwo\nthr");
        let (lines, p) = read_new(&log, None, 1 << 20).unwrap();
        assert_eq!(lines, ["one", "two"]);
        append(&log, "ee\nfour\n");
        let (lines, p) = read_new(&log, Some(p), 1 << 20).unwrap();
        assert_eq!(lines, ["three", "four"]);
        // Rotation: more lines land in the old file after the last read,
        // then it is renamed and a new file starts.
        append(&log, "five\n");
        fs::rename(&log, dir.path().join("app.log.1")).unwrap();
        append(&log, "six\n");
        let (lines, p) = read_new(&log, Some(p), 1 << 20).unwrap();
        assert_eq!(lines, ["five", "six"], "nothing lost across the rotation");
        // Truncation (copytruncate): read again from the start.
        fs::write(&log, "seven\n").unwrap();
        let (lines, _) = read_new(&log, Some(p), 1 << 20).unwrap();
        assert_eq!(lines, ["seven"]);
    }

    #[test]
    fn a_budget_and_a_runaway_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("big.log");
        append(&log, &format!("{}\nshort\n", "x".repeat(MAX_LINE + 10)));
        let (lines, p) = read_new(&log, None, 1 << 20).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "x".repeat(10));
        assert_eq!(p.offset, fs::metadata(&log).unwrap().len());
        // A small budget reads a part; the next read goes on from there.
        append(&log, "a\nb\nc\n");
        let (first, p) = read_new(&log, Some(p), 4).unwrap();
        assert_eq!(first, ["a", "b"]);
        let (rest, _) = read_new(&log, Some(p), 4).unwrap();
        assert_eq!(rest, ["c"]);
    }
}
