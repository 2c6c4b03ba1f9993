//! Log records, in OpenTelemetry's model plus the pattern the agent found
//! for the message, and searches over them.
//!
//! Text search works on tokens: a body is split at every character that is
//! not a letter or digit and lower-cased; a search matches the records whose
//! tokens include every token of the search text. Both backends use
//! [`tokens`], so they agree on what matches.

use serde::{Deserialize, Serialize};

use crate::{Labels, StorageError, trace::MAX_TIMESTAMP_NS};

/// Longest log body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most attributes on a record or its resource.
pub const MAX_ATTRIBUTES: usize = 128;
/// Longest token indexed, in bytes (longer runs are cut).
pub const MAX_TOKEN_BYTES: usize = 64;
/// Most distinct tokens indexed per record.
pub const MAX_TOKENS: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub time_ns: i64,
    /// OpenTelemetry severity number, 0 (unset) to 24 (FATAL4).
    pub severity: u8,
    pub severity_text: String,
    pub body: String,
    /// `service.name` of the resource.
    pub service: String,
    pub resource: Labels,
    pub attributes: Labels,
    /// All zero when the record belongs to no trace.
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The message pattern the agent extracted; 0 when none.
    pub pattern_id: u64,
}

impl LogRecord {
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |what: String| {
            Err(StorageError::InvalidData(format!(
                "log record at {} ns: {what}",
                self.time_ns
            )))
        };
        if !(0..MAX_TIMESTAMP_NS).contains(&self.time_ns) {
            return bad("time is outside 1970..2149".into());
        }
        if self.severity > 24 {
            return bad(format!(
                "severity {} is not an OpenTelemetry severity number (0-24)",
                self.severity
            ));
        }
        if self.body.len() > MAX_BODY_BYTES {
            return bad(format!(
                "body is {} bytes; at most {MAX_BODY_BYTES}",
                self.body.len()
            ));
        }
        if self.resource.len() > MAX_ATTRIBUTES || self.attributes.len() > MAX_ATTRIBUTES {
            return bad(format!("more than {MAX_ATTRIBUTES} attributes"));
        }
        if self.severity_text.len() > 64 || self.service.len() > 1024 {
            return bad("severity text or service too long".into());
        }
        Ok(())
    }
}

/// The search tokens of a text: lower-cased runs of letters and digits,
/// each at most [`MAX_TOKEN_BYTES`], deduplicated, at most [`MAX_TOKENS`].
pub fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for run in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|r| !r.is_empty())
    {
        let mut token = run.to_lowercase();
        if token.len() > MAX_TOKEN_BYTES {
            let mut cut = MAX_TOKEN_BYTES;
            while !token.is_char_boundary(cut) {
                cut -= 1;
            }
            token.truncate(cut);
        }
        if !out.contains(&token) {
            out.push(token);
            if out.len() == MAX_TOKENS {
                break;
            }
        }
    }
    out
}

/// A record's id: the hash of project, batch id and its place in the batch,
/// so that both backends (and a retried batch) give the same id.
pub fn record_id(project: &str, batch_id: &str, index: usize) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(project.as_bytes());
    hasher.update(&[0xff]);
    hasher.update(batch_id.as_bytes());
    hasher.update(&[0xff]);
    hasher.update(&(index as u64).to_le_bytes());
    hasher.digest()
}

/// One atomic write of log records.
#[derive(Debug, Clone, PartialEq)]
pub struct LogBatch {
    pub project: String,
    pub batch_id: String,
    pub records: Vec<LogRecord>,
}

/// Where a page of results ended: the next page holds older records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    pub time_ns: i64,
    pub id: u64,
}

/// A log search. Every set field must match; results are newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Records in `[start_ns, end_ns]`.
    pub start_ns: i64,
    pub end_ns: i64,
    pub service: Option<String>,
    /// Resource attributes that must be present with these values.
    pub resource: Vec<(String, String)>,
    /// At least this severity number.
    pub min_severity: Option<u8>,
    /// Every token of this text must be in the body.
    pub text: Option<String>,
    pub pattern_id: Option<u64>,
    pub trace_id: Option<[u8; 16]>,
    /// Most records per page (0: 100).
    pub limit: usize,
    /// Continue after this record (from the previous page's `next`).
    pub after: Option<LogCursor>,
}

impl LogQuery {
    pub fn page_size(&self) -> usize {
        if self.limit == 0 { 100 } else { self.limit }
    }

    /// Whether a record (with its id) is in this query's results; `text`
    /// tokens are given pre-computed.
    pub fn matches(&self, record: &LogRecord, id: u64, query_tokens: &[String]) -> bool {
        record.time_ns >= self.start_ns
            && record.time_ns <= self.end_ns
            && self
                .after
                .is_none_or(|c| (record.time_ns, id) < (c.time_ns, c.id))
            && self.service.as_ref().is_none_or(|s| *s == record.service)
            && self
                .resource
                .iter()
                .all(|(k, v)| record.resource.get(k) == Some(v))
            && self.min_severity.is_none_or(|s| record.severity >= s)
            && self.pattern_id.is_none_or(|p| p == record.pattern_id)
            && self.trace_id.is_none_or(|t| t == record.trace_id)
            && (query_tokens.is_empty() || {
                let have = tokens(&record.body);
                query_tokens.iter().all(|t| have.contains(t))
            })
    }
}

/// A record as returned by a search.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub id: u64,
    pub record: LogRecord,
}

/// One page of a log search.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    /// Set when more records match: pass it as `after` for the next page.
    pub next: Option<LogCursor>,
}

impl LogPage {
    /// Builds a page from up to `limit + 1` matches, newest first.
    pub fn from_matches(mut entries: Vec<LogEntry>, limit: usize) -> Self {
        entries.sort_by_key(|e| std::cmp::Reverse((e.record.time_ns, e.id)));
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| LogCursor {
                time_ns: e.record.time_ns,
                id: e.id,
            })
        } else {
            None
        };
        Self { entries, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer() {
        assert_eq!(
            tokens("GET /api/v1/Users?id=42 failed: Timeout (Timeout)"),
            vec!["get", "api", "v1", "users", "id", "42", "failed", "timeout"]
        );
        assert_eq!(tokens("Überlauf ÄÖ"), vec!["überlauf", "äö"]);
        assert!(tokens(" -- ").is_empty());
        assert_eq!(tokens(&"x".repeat(100))[0].len(), MAX_TOKEN_BYTES);
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(record_id("p", "b", 0), record_id("p", "b", 0));
        assert_ne!(record_id("p", "b", 0), record_id("p", "b", 1));
        assert_ne!(record_id("p", "b", 0), record_id("q", "b", 0));
    }
}
