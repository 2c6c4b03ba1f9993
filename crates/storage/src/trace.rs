//! Spans, in OpenTelemetry's model: trace id, span id, parent, name, kind,
//! start and end in nanoseconds, status, service, resource and span
//! attributes, events and links. Attribute values are kept as strings (OTLP
//! `AnyValue`s are rendered to text by ingest).

use serde::{Deserialize, Serialize};

use crate::{Labels, StorageError, model::MAX_TIMESTAMP_MS};

/// Longest span name or status message accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Most attributes on a span, its resource, an event or a link.
pub const MAX_ATTRIBUTES: usize = 128;
/// Longest attribute value accepted, in bytes.
pub const MAX_ATTRIBUTE_BYTES: usize = 16 * 1024;
/// Most events, and most links, on one span.
pub const MAX_EVENTS: usize = 128;
/// Latest start accepted, in ns (the metrics' bound, in ns).
pub const MAX_TIMESTAMP_NS: i64 = MAX_TIMESTAMP_MS * 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SpanKind {
    #[default]
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    pub time_ns: i64,
    pub name: String,
    pub attributes: Labels,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanLink {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub attributes: Labels,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zero for a root span.
    pub parent_span_id: [u8; 8],
    pub name: String,
    pub kind: SpanKind,
    pub start_ns: i64,
    pub end_ns: i64,
    pub status: StatusCode,
    pub status_message: String,
    /// `service.name` of the resource.
    pub service: String,
    /// Resource attributes, including `cluster`, `node`, `namespace`,
    /// `application`, `container` when known.
    pub resource: Labels,
    pub attributes: Labels,
    pub events: Vec<SpanEvent>,
    pub links: Vec<SpanLink>,
}

impl Span {
    pub fn duration_ns(&self) -> i64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Refuses what the model cannot hold, naming the problem.
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |what: String| {
            Err(StorageError::InvalidData(format!(
                "span {} of trace {}: {what}",
                hex(&self.span_id),
                hex(&self.trace_id)
            )))
        };
        if self.trace_id == [0; 16] {
            return bad("trace id is all zero".into());
        }
        if self.span_id == [0; 8] {
            return bad("span id is all zero".into());
        }
        if !(0..MAX_TIMESTAMP_NS).contains(&self.start_ns) {
            return bad(format!("start {} ns is outside 1970..2149", self.start_ns));
        }
        if self.end_ns < self.start_ns {
            return bad("ends before it starts".into());
        }
        if self.name.is_empty() || self.name.len() > MAX_NAME_BYTES {
            return bad(format!("name must be 1-{MAX_NAME_BYTES} bytes"));
        }
        if self.status_message.len() > MAX_NAME_BYTES || self.service.len() > MAX_NAME_BYTES {
            return bad(format!(
                "status message and service are at most {MAX_NAME_BYTES} bytes"
            ));
        }
        if self.events.len() > MAX_EVENTS || self.links.len() > MAX_EVENTS {
            return bad(format!(
                "at most {MAX_EVENTS} events and {MAX_EVENTS} links"
            ));
        }
        let attribute_sets = [&self.resource, &self.attributes]
            .into_iter()
            .chain(self.events.iter().map(|e| &e.attributes))
            .chain(self.links.iter().map(|l| &l.attributes));
        for set in attribute_sets {
            if set.len() > MAX_ATTRIBUTES {
                return bad(format!("more than {MAX_ATTRIBUTES} attributes"));
            }
            if let Some((k, _)) = set.iter().find(|(k, v)| {
                k.is_empty() || k.len() > MAX_NAME_BYTES || v.len() > MAX_ATTRIBUTE_BYTES
            }) {
                return bad(format!(
                    "attribute {k:?}: names are 1-{MAX_NAME_BYTES} bytes, values at most {MAX_ATTRIBUTE_BYTES}"
                ));
            }
        }
        Ok(())
    }
}

/// Lower-case hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One atomic write of spans. `batch_id` makes retries idempotent per project.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanBatch {
    pub project: String,
    pub batch_id: String,
    pub spans: Vec<Span>,
}

/// Which spans a trace search wants. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceQuery {
    pub service: Option<String>,
    /// The span name.
    pub operation: Option<String>,
    pub min_duration_ns: Option<i64>,
    pub max_duration_ns: Option<i64>,
    pub status: Option<StatusCode>,
    /// Spans starting in `[start_ns, end_ns]`.
    pub start_ns: i64,
    pub end_ns: i64,
    /// Most spans returned, newest first.
    pub limit: usize,
}

impl TraceQuery {
    pub fn matches(&self, span: &SpanSummary) -> bool {
        self.service.as_ref().is_none_or(|s| *s == span.service)
            && self.operation.as_ref().is_none_or(|o| *o == span.name)
            && self.min_duration_ns.is_none_or(|d| span.duration_ns >= d)
            && self.max_duration_ns.is_none_or(|d| span.duration_ns <= d)
            && self.status.is_none_or(|s| s == span.status)
            && span.start_ns >= self.start_ns
            && span.start_ns <= self.end_ns
    }
}

/// What a trace search returns per span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanSummary {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub service: String,
    pub name: String,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub status: StatusCode,
}

impl From<&Span> for SpanSummary {
    fn from(span: &Span) -> Self {
        Self {
            trace_id: span.trace_id,
            span_id: span.span_id,
            service: span.service.clone(),
            name: span.name.clone(),
            start_ns: span.start_ns,
            duration_ns: span.duration_ns(),
            status: span.status,
        }
    }
}

/// Newest first, then by ids, as both backends order search results.
pub fn sort_summaries(spans: &mut [SpanSummary]) {
    spans.sort_by(|a, b| {
        b.start_ns
            .cmp(&a.start_ns)
            .then_with(|| a.trace_id.cmp(&b.trace_id))
            .then_with(|| a.span_id.cmp(&b.span_id))
    });
}

/// Start order, then span id, as both backends return a trace.
pub fn sort_trace(spans: &mut [Span]) {
    spans.sort_by(|a, b| {
        a.start_ns
            .cmp(&b.start_ns)
            .then_with(|| a.span_id.cmp(&b.span_id))
    });
}
