//! The telemetry data model, backend-neutral.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::StorageError;

/// Label names and values of one series, sorted by name. Resource attributes
/// (`cluster`, `node`, `namespace`, `application`, `container`) are labels too.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub timestamp_ms: i64,
    pub value: f64,
}

/// Samples of one series to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesWrite {
    pub metric: String,
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// One atomic write. `batch_id` makes retries idempotent per project.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricBatch {
    pub project: String,
    pub batch_id: String,
    pub series: Vec<SeriesWrite>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored: this many records (samples, spans, log lines…).
    Stored { records: u64 },
    /// This batch id was stored before; nothing was written.
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatcherOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`: the whole value matches the regular expression.
    RegexMatch,
    /// `!~`: the whole value does not match the regular expression.
    RegexNoMatch,
}

/// A label matcher with Prometheus semantics: a missing label matches the
/// empty value; regular expressions are anchored at both ends.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatcherOp,
    pub value: String,
    regex: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

/// Longest regular expression accepted in a matcher, in bytes.
pub const MAX_REGEX_BYTES: usize = 4096;

impl Matcher {
    /// A matcher; a regular expression that does not compile is refused
    /// with the reason.
    pub fn new(name: &str, op: MatcherOp, value: &str) -> Result<Self, StorageError> {
        let regex = match op {
            MatcherOp::Equal | MatcherOp::NotEqual => None,
            MatcherOp::RegexMatch | MatcherOp::RegexNoMatch => {
                if value.len() > MAX_REGEX_BYTES {
                    return Err(StorageError::InvalidData(format!(
                        "regular expression for label {name} is longer than {MAX_REGEX_BYTES} bytes"
                    )));
                }
                Some(
                    regex::RegexBuilder::new(&format!("^(?:{value})$"))
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| {
                            StorageError::InvalidData(format!(
                                "label {name}: invalid regular expression {value:?}: {e}"
                            ))
                        })?,
                )
            }
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    pub fn equal(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            op: MatcherOp::Equal,
            value: value.to_owned(),
            regex: None,
        }
    }

    pub fn matches_value(&self, actual: &str) -> bool {
        match (self.op, &self.regex) {
            (MatcherOp::Equal, _) => actual == self.value,
            (MatcherOp::NotEqual, _) => actual != self.value,
            (MatcherOp::RegexMatch, Some(re)) => re.is_match(actual),
            (MatcherOp::RegexNoMatch, Some(re)) => !re.is_match(actual),
            // Built only through `new`, which compiles the expression.
            (MatcherOp::RegexMatch | MatcherOp::RegexNoMatch, None) => false,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).map_or("", String::as_str))
    }
}

/// Which series to read: one metric, all matchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSelector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

impl SeriesSelector {
    pub fn metric(metric: &str) -> Self {
        Self {
            metric: metric.to_owned(),
            matchers: Vec::new(),
        }
    }

    #[must_use]
    pub fn with(mut self, matcher: Matcher) -> Self {
        self.matchers.push(matcher);
        self
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// A series read back, with its samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    pub metric: String,
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// A series' id: the xxh3 hash of project, metric and sorted labels. Both
/// backends use it; a collision is detected where series are stored.
pub fn series_id(project: &str, metric: &str, labels: &Labels) -> u64 {
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

/// Longest label value accepted, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;
/// Most labels on one series.
pub const MAX_LABELS: usize = 64;
/// Latest timestamp accepted (exclusive): 2149-06-06, the end of ClickHouse's `Date`.
pub const MAX_TIMESTAMP_MS: i64 = 65_536 * 86_400_000;

/// Days since the Unix epoch of a timestamp (the daily partition it falls in).
pub fn day_of(timestamp_ms: i64) -> i64 {
    timestamp_ms.div_euclid(86_400_000)
}

/// Whether `name` is a valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl SeriesWrite {
    /// Refuses what the model cannot hold, naming the offending part.
    pub fn validate(&self) -> Result<(), StorageError> {
        if !is_valid_metric_name(&self.metric) {
            return Err(StorageError::InvalidData(format!(
                "metric name {:?} is not a valid Prometheus metric name",
                self.metric
            )));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(StorageError::InvalidData(format!(
                "series {} has {} labels; at most {MAX_LABELS} are allowed",
                self.metric,
                self.labels.len()
            )));
        }
        if self.labels.contains_key("__name__") {
            return Err(StorageError::InvalidData(format!(
                "series {}: the label __name__ is reserved for the metric name",
                self.metric
            )));
        }
        for sample in &self.samples {
            if !sample.value.is_finite() {
                return Err(StorageError::InvalidData(format!(
                    "series {}: sample at {} ms is {}, not a finite number",
                    self.metric, sample.timestamp_ms, sample.value
                )));
            }
            if !(0..MAX_TIMESTAMP_MS).contains(&sample.timestamp_ms) {
                return Err(StorageError::InvalidData(format!(
                    "series {}: timestamp {} ms is outside 1970-01-01..2149-06-06",
                    self.metric, sample.timestamp_ms
                )));
            }
        }
        for (name, value) in &self.labels {
            if !is_valid_label_name(name) {
                return Err(StorageError::InvalidData(format!(
                    "series {}: label name {name:?} is not a valid Prometheus label name",
                    self.metric
                )));
            }
            if value.len() > MAX_LABEL_VALUE_BYTES {
                return Err(StorageError::InvalidData(format!(
                    "series {}: label {name} is {} bytes; at most {MAX_LABEL_VALUE_BYTES}",
                    self.metric,
                    value.len()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_metric_name("host_cpu_usage_ratio"));
        assert!(is_valid_metric_name("ns:rule:rate5m"));
        assert!(!is_valid_metric_name("1abc"));
        assert!(!is_valid_metric_name(""));
        assert!(!is_valid_metric_name("a-b"));
        assert!(is_valid_label_name("_x1"));
        assert!(!is_valid_label_name("a:b"));
    }

    #[test]
    fn matchers_treat_missing_as_empty() {
        let labels: Labels = [("node".to_owned(), "a".to_owned())].into();
        assert!(Matcher::equal("node", "a").matches(&labels));
        assert!(Matcher::equal("pid", "").matches(&labels));
        let ne = Matcher::new("node", MatcherOp::NotEqual, "a").unwrap();
        assert!(!ne.matches(&labels));
        let re = Matcher::new("node", MatcherOp::RegexMatch, "a|b").unwrap();
        assert!(re.matches(&labels));
        let anchored = Matcher::new("node", MatcherOp::RegexMatch, "").unwrap();
        assert!(!anchored.matches(&labels), "regexes are anchored");
        assert!(
            Matcher::new("pid", MatcherOp::RegexMatch, "")
                .unwrap()
                .matches(&labels)
        );
        let nre = Matcher::new("node", MatcherOp::RegexNoMatch, "a.*").unwrap();
        assert!(!nre.matches(&labels));
        let err = Matcher::new("node", MatcherOp::RegexMatch, "(").unwrap_err();
        assert!(
            err.to_string().contains("invalid regular expression"),
            "{err}"
        );
    }

    #[test]
    fn validate_names_the_problem() {
        let mut w = SeriesWrite {
            metric: "ok_metric".into(),
            labels: [("bad-name".to_owned(), "v".to_owned())].into(),
            samples: vec![],
        };
        let err = w.validate().unwrap_err().to_string();
        assert!(err.contains("bad-name"), "{err}");
        w.labels = [("node".to_owned(), "x".repeat(MAX_LABEL_VALUE_BYTES + 1))].into();
        assert!(w.validate().unwrap_err().to_string().contains("node"));
        w.labels.clear();
        w.metric = "bad metric".into();
        assert!(w.validate().unwrap_err().to_string().contains("bad metric"));
    }
}
