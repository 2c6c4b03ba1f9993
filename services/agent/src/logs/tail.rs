//! Reading what was appended to a log file since a saved position, without
//! holding files open between reads: a rotated file is found again by its
//! inode in the same directory and read to its end before the new one; a
//! truncated file is read again from its start.

use std::{
    fs,
    io::{self, Read as _, Seek, SeekFrom},
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

/// What one read of a file found.
#[derive(Debug)]
pub struct Chunk {
    pub lines: Vec<String>,
    /// Where the next read starts.
    pub position: Position,
    /// The rotated file finished in this read, with its end: a glob that
    /// matches its new name must not read it again.
    pub rotated: Option<(PathBuf, Position)>,
}

/// Complete lines appended to `path` since `from` (at most about
/// `max_bytes`), and the position after them. `from` None: a file not seen
/// before, read from its start. A line without its newline yet waits for
/// the next read.
pub fn read_new(path: &Path, from: Option<Position>, max_bytes: u64) -> io::Result<Chunk> {
    let meta = fs::metadata(path)?;
    let mut lines = Vec::new();
    // Room for at least one whole line, or a long one would stall the file.
    let mut budget = max_bytes.max(MAX_LINE as u64 + 1);
    let mut rotated = None;
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
                let (old_lines, end, at_end) = read_lines(&old, p.offset, budget)?;
                budget = budget.saturating_sub(end - p.offset);
                lines.extend(old_lines);
                let old_position = Position {
                    inode: p.inode,
                    offset: end,
                    head: head_of(&old, end),
                };
                if !at_end {
                    // Not finished with the old file: come back to it.
                    return Ok(Chunk {
                        lines,
                        position: old_position,
                        rotated: None,
                    });
                }
                rotated = Some((old, old_position));
            }
            0
        }
        None => 0,
    };
    let (new_lines, end, _) = read_lines(path, offset, budget)?;
    lines.extend(new_lines);
    offset = end;
    Ok(Chunk {
        lines,
        position: Position {
            inode: meta.ino(),
            offset,
            head: head_of(path, offset),
        },
        rotated,
    })
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
/// the offset after the last one returned, and whether that is where the
/// file ends (nothing left but an unfinished line).
fn read_lines(path: &Path, offset: u64, budget: u64) -> io::Result<(Vec<String>, u64, bool)> {
    let mut file = fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    file.take(budget).read_to_end(&mut data)?;
    let at_end = (data.len() as u64) < budget;
    let mut lines = Vec::new();
    let mut start = 0;
    let mut consumed = 0;
    while start < data.len() {
        // Look no further than a whole line can be.
        let window = &data[start..data.len().min(start + MAX_LINE + 1)];
        match window.iter().position(|b| *b == b'\n') {
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
    Ok((lines, offset + consumed as u64, at_end))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Write;

    fn lp(r: Chunk) -> (Vec<String>, Position) {
        (r.lines, r.position)
    }

    pub(in crate::logs) fn append(path: &Path, text: &str) {
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
        let (lines, p) = lp(read_new(&log, None, 1 << 20).unwrap());
        assert_eq!(lines, ["one", "two"]);
        append(&log, "ee\nfour\n");
        let (lines, p) = lp(read_new(&log, Some(p), 1 << 20).unwrap());
        assert_eq!(lines, ["three", "four"]);
        // Rotation: more lines land in the old file after the last read,
        // then it is renamed and a new file starts.
        append(&log, "five\n");
        fs::rename(&log, dir.path().join("app.log.1")).unwrap();
        append(&log, "six\n");
        let (lines, p) = lp(read_new(&log, Some(p), 1 << 20).unwrap());
        assert_eq!(lines, ["five", "six"], "nothing lost across the rotation");
        // Truncation (copytruncate): read again from the start.
        fs::write(&log, "seven\n").unwrap();
        let (lines, _) = lp(read_new(&log, Some(p), 1 << 20).unwrap());
        assert_eq!(lines, ["seven"]);
    }

    #[test]
    fn a_budget_and_a_runaway_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("big.log");
        append(&log, &format!("{}\nshort\n", "x".repeat(MAX_LINE + 10)));
        let (lines, p) = lp(read_new(&log, None, 1 << 20).unwrap());
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "x".repeat(10));
        assert_eq!(p.offset, fs::metadata(&log).unwrap().len());
        // A budget reads a part; the next read goes on from there, and a
        // rotation in between does not skip the old file's rest.
        let line = |c: char| format!("{}\n", c.to_string().repeat(40_000));
        append(&log, &format!("{}{}{}", line('a'), line('b'), line('c')));
        let (first, p) = lp(read_new(&log, Some(p), 1).unwrap());
        assert_eq!(first.len(), 1, "one 40 kB line fits the smallest budget");
        fs::rename(&log, dir.path().join("big.log.1")).unwrap();
        append(&log, "new\n");
        let (second, p) = lp(read_new(&log, Some(p), 1).unwrap());
        assert_eq!(second.len(), 1);
        assert!(second[0].starts_with('b'), "still the old file");
        // The old file's end, then the new file in the same read.
        let (third, p) = lp(read_new(&log, Some(p), 1).unwrap());
        assert_eq!(third.len(), 2);
        assert!(third[0].starts_with('c'));
        assert_eq!(third[1], "new");
        let (rest, _) = lp(read_new(&log, Some(p), 1 << 20).unwrap());
        assert!(rest.is_empty());
    }
}
