//! What is sent: one notification, whatever integration carries it.

use serde::{Deserialize, Serialize};

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A problem began (an incident opened, a check went down).
    Trigger,
    /// The problem is over.
    Resolve,
    /// A new version of an application was rolled out.
    Deployment,
    /// Sent on request, to check an integration's settings.
    Test,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Trigger => "trigger",
            Kind::Resolve => "resolve",
            Kind::Deployment => "deployment",
            Kind::Test => "test",
        }
    }
}

/// How urgent, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One notification. Its `key` is the same for the trigger and the resolve
/// of one problem, so that paging services close what they opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub kind: Kind,
    /// Deduplication key: stable for the life of one problem.
    pub key: String,
    pub project: String,
    /// What area it is about, for routing: `slo`, `cpu`, `memory`, `storage`,
    /// `network`, `instances`, `logs`, `dns`, `database`, `deployment`,
    /// `heartbeat`, `test`.
    pub category: String,
    pub severity: Severity,
    /// One line, e.g. "orders: availability SLO burning 20x".
    pub title: String,
    /// A few lines of plain text: what was measured against what.
    pub text: String,
    /// The application, node or check it is about.
    pub subject: String,
    /// The service that sent it, e.g. `vigil-alerting`.
    pub source: String,
    /// The likely cause, when one was found.
    pub hint: Option<String>,
    /// Extra facts, shown as a table where the target can.
    pub fields: Vec<Field>,
    /// When the problem began (Unix ms).
    pub started_at_ms: i64,
    /// When it ended (Unix ms), for resolutions.
    pub resolved_at_ms: Option<i64>,
    /// A link to the incident in the UI, when the UI's address is known.
    pub url: Option<String>,
}

impl Notification {
    /// The title with what happened in front, e.g. "[FIRING] orders: …".
    pub fn headline(&self) -> String {
        let state = match self.kind {
            Kind::Trigger => "FIRING",
            Kind::Resolve => "RESOLVED",
            Kind::Deployment => "DEPLOYED",
            Kind::Test => "TEST",
        };
        format!("[{state}] {}", self.title)
    }

    /// Unix ms as RFC 3339 (UTC), for payloads that want a timestamp.
    pub fn rfc3339(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// A sample, for "send test notification".
    pub fn test(project: &str, source: &str, integration: &str, now_ms: i64) -> Self {
        Self {
            kind: Kind::Test,
            key: format!("vigil-test-{integration}-{now_ms}"),
            project: project.to_owned(),
            category: "test".into(),
            severity: Severity::Info,
            title: format!("Test notification for integration {integration}"),
            text: "Vigil can reach this integration. Nothing needs to be done.".into(),
            subject: integration.to_owned(),
            source: source.to_owned(),
            hint: None,
            fields: Vec::new(),
            started_at_ms: now_ms,
            resolved_at_ms: None,
            url: None,
        }
    }
}

/// A named fact, e.g. ("Burn rate (1h)", "20.1x").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub value: String,
}

impl Field {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Cuts `s` to at most `max` characters, marking the cut with "…".
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééé", 2), "é…");
        assert_eq!(truncate("x", 0), "…");
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(
            Notification::rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn severities_are_ordered() {
        assert!(Severity::Critical > Severity::Warning && Severity::Warning > Severity::Info);
    }
}
