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
    Stored {
        samples: u64,
    },
    /// This batch id was stored before; nothing was written.
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatcherOp {
    Equal,
    NotEqual,
}

/// A label matcher; a missing label matches the empty value, as in Prometheus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub op: MatcherOp,
    pub value: String,
}

impl Matcher {
    pub fn equal(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            op: MatcherOp::Equal,
            value: value.to_owned(),
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let actual = labels.get(&self.name).map_or("", String::as_str);
        match self.op {
            MatcherOp::Equal => actual == self.value,
            MatcherOp::NotEqual => actual != self.value,
        }
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

/// Longest label value accepted, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;
/// Most labels on one series.
pub const MAX_LABELS: usize = 64;

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
        let ne = Matcher {
            name: "node".into(),
            op: MatcherOp::NotEqual,
            value: "a".into(),
        };
        assert!(!ne.matches(&labels));
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
