//! Logs, traces, profiles and events: requests turned into storage queries
//! and answers into `vigil.query.v1` messages.

use std::collections::{BTreeMap, HashMap};

use prost::Message;
use tonic::Status;
use vigil_proto::query::v1 as pb;
use vigil_storage::{
    Event, EventQuery, LogCursor, LogEntry, LogQuery, ProfileQuery, Span, StackSample, TraceQuery,
    trace::{SpanKind, StatusCode, hex},
};

fn labels_pb(labels: &BTreeMap<String, String>) -> Vec<pb::Label> {
    labels
        .iter()
        .map(|(name, value)| pb::Label {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn labels_of(labels: &[pb::Label]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A trace id of 32 hex digits.
#[allow(clippy::result_large_err)]
pub fn trace_id(text: &str) -> Result<[u8; 16], Status> {
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .ok_or_else(|| {
            Status::invalid_argument(format!("trace id {text:?} is not 32 hexadecimal digits"))
        })?;
    if bytes == [0; 16] {
        return Err(Status::invalid_argument("trace id must not be all zeros"));
    }
    Ok(bytes)
}

/// A page cursor: the last record's time and id.
pub fn encode_cursor(c: &LogCursor) -> String {
    format!("{}-{:x}", c.time_ns, c.id)
}

#[allow(clippy::result_large_err)]
pub fn decode_cursor(text: &str) -> Result<Option<LogCursor>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || Status::invalid_argument(format!("cursor {text:?} is not one this API gave"));
    let (time, id) = text.split_once('-').ok_or_else(bad)?;
    Ok(Some(LogCursor {
        time_ns: time.parse().map_err(|_| bad())?,
        id: u64::from_str_radix(id, 16).map_err(|_| bad())?,
    }))
}

/// The storage query of a log search over `[start_ms, end_ms]`.
#[allow(clippy::result_large_err)]
pub fn log_query(
    request: &pb::SearchLogsRequest,
    start_ms: i64,
    end_ms: i64,
    max_records: usize,
) -> Result<LogQuery, Status> {
    if request.min_severity > 24 {
        return Err(Status::invalid_argument(format!(
            "min_severity {} is not an OpenTelemetry severity number (1..24)",
            request.min_severity
        )));
    }
    if request.limit as usize > max_records {
        return Err(Status::invalid_argument(format!(
            "limit {} is over the {max_records} records one page may hold",
            request.limit
        )));
    }
    Ok(LogQuery {
        start_ns: start_ms.saturating_mul(1_000_000),
        end_ns: end_ms.saturating_mul(1_000_000).saturating_add(999_999),
        service: non_empty(&request.application),
        resource: labels_of(&request.resource),
        min_severity: (request.min_severity > 0).then_some(request.min_severity as u8),
        text: non_empty(request.text.trim()),
        pattern_id: (request.pattern_id != 0).then_some(request.pattern_id),
        trace_id: if request.trace_id.is_empty() {
            None
        } else {
            Some(trace_id(&request.trace_id)?)
        },
        limit: request.limit as usize,
        after: decode_cursor(&request.cursor)?,
    })
}

pub fn log_record_pb(entry: &LogEntry) -> pb::LogRecord {
    let r = &entry.record;
    pb::LogRecord {
        time_ms: r.time_ns.div_euclid(1_000_000),
        time_ns_part: r.time_ns.rem_euclid(1_000_000) as u32,
        severity: u32::from(r.severity),
        severity_text: r.severity_text.clone(),
        body: r.body.clone(),
        service: r.service.clone(),
        resource: labels_pb(&r.resource),
        attributes: labels_pb(&r.attributes),
        trace_id: if r.trace_id == [0; 16] {
            String::new()
        } else {
            hex(&r.trace_id)
        },
        span_id: if r.span_id == [0; 8] {
            String::new()
        } else {
            hex(&r.span_id)
        },
        pattern_id: r.pattern_id,
    }
}

/// The pattern a record belongs to: the agent's pattern id, else (records
/// from OTLP) its words with digits masked, as a stable hash.
fn pattern_key(entry: &LogEntry) -> u64 {
    if entry.record.pattern_id != 0 {
        return entry.record.pattern_id;
    }
    let masked: Vec<&str> = entry
        .record
        .body
        .split_whitespace()
        .take(12)
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) {
                "<*>"
            } else {
                w
            }
        })
        .collect();
    xxhash_rust::xxh3::xxh3_64(masked.join(" ").as_bytes()) | 1 << 63
}

/// Counts per pattern over `entries` (newest first), largest first.
pub fn patterns(entries: &[LogEntry]) -> Vec<pb::LogPattern> {
    let mut by_key: HashMap<u64, pb::LogPattern> = HashMap::new();
    for entry in entries {
        let p = by_key
            .entry(pattern_key(entry))
            .or_insert_with(|| pb::LogPattern {
                pattern_id: pattern_key(entry),
                example: entry.record.body.clone(),
                count: 0,
                max_severity: 0,
                last_seen_ms: entry.record.time_ns.div_euclid(1_000_000),
            });
        p.count += 1;
        p.max_severity = p.max_severity.max(u32::from(entry.record.severity));
    }
    let mut out: Vec<pb::LogPattern> = by_key.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.pattern_id.cmp(&b.pattern_id)));
    out
}

fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "unspecified",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

fn status_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::Unset => "unset",
        StatusCode::Ok => "ok",
        StatusCode::Error => "error",
    }
}

#[allow(clippy::result_large_err)]
pub fn status_of(text: &str) -> Result<Option<StatusCode>, Status> {
    Ok(match text {
        "" => None,
        "unset" => Some(StatusCode::Unset),
        "ok" => Some(StatusCode::Ok),
        "error" => Some(StatusCode::Error),
        other => {
            return Err(Status::invalid_argument(format!(
                "status {other:?} is not one of \"ok\", \"error\", \"unset\""
            )));
        }
    })
}

/// A trace ordered for a waterfall: depth first from the roots (spans
/// whose parent is absent), children by start time.
pub fn waterfall(mut spans: Vec<Span>) -> pb::GetTraceResponse {
    spans.sort_by_key(|s| (s.start_ns, s.span_id));
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
    let ids: std::collections::HashSet<[u8; 8]> = spans.iter().map(|s| s.span_id).collect();
    let mut children: HashMap<[u8; 8], Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        if s.parent_span_id != [0; 8]
            && s.parent_span_id != s.span_id
            && ids.contains(&s.parent_span_id)
        {
            children.entry(s.parent_span_id).or_default().push(i);
        } else {
            roots.push(i);
        }
    }
    let mut order = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    let mut stack: Vec<(usize, u32)> = roots.into_iter().rev().map(|i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue; // a cycle of parents
        }
        order.push((i, depth));
        if let Some(kids) = children.get(&spans[i].span_id) {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
    }
    // Spans caught in a parent cycle are shown as roots.
    order.extend((0..spans.len()).filter(|&i| !seen[i]).map(|i| (i, 0)));
    let out = order
        .into_iter()
        .map(|(i, depth)| {
            let s = &spans[i];
            pb::Span {
                trace_id: hex(&s.trace_id),
                span_id: hex(&s.span_id),
                parent_span_id: if s.parent_span_id == [0; 8] {
                    String::new()
                } else {
                    hex(&s.parent_span_id)
                },
                name: s.name.clone(),
                kind: kind_name(s.kind).into(),
                start_ns: s.start_ns,
                duration_ns: s.duration_ns(),
                status: status_name(s.status).into(),
                status_message: s.status_message.clone(),
                service: s.service.clone(),
                resource: labels_pb(&s.resource),
                attributes: labels_pb(&s.attributes),
                events: s
                    .events
                    .iter()
                    .map(|e| pb::SpanEvent {
                        time_ns: e.time_ns,
                        name: e.name.clone(),
                        attributes: labels_pb(&e.attributes),
                    })
                    .collect(),
                depth,
                offset_ns: s.start_ns - start,
            }
        })
        .collect();
    pb::GetTraceResponse {
        spans: out,
        start_ns: start,
        duration_ns: end - start,
    }
}

#[allow(clippy::result_large_err)]
pub fn trace_query(
    request: &pb::SearchTracesRequest,
    start_ms: i64,
    end_ms: i64,
    max_spans: usize,
) -> Result<TraceQuery, Status> {
    if request.limit as usize > max_spans {
        return Err(Status::invalid_argument(format!(
            "limit {} is over the {max_spans} spans one search may return",
            request.limit
        )));
    }
    if request.min_duration_ms < 0 || request.max_duration_ms < 0 {
        return Err(Status::invalid_argument("durations must not be negative"));
    }
    if request.max_duration_ms > 0 && request.max_duration_ms < request.min_duration_ms {
        return Err(Status::invalid_argument(
            "max_duration_ms is below min_duration_ms",
        ));
    }
    Ok(TraceQuery {
        service: non_empty(&request.service),
        operation: non_empty(&request.operation),
        min_duration_ns: (request.min_duration_ms > 0)
            .then(|| request.min_duration_ms.saturating_mul(1_000_000)),
        max_duration_ns: (request.max_duration_ms > 0)
            .then(|| request.max_duration_ms.saturating_mul(1_000_000)),
        status: status_of(&request.status)?,
        start_ns: start_ms.saturating_mul(1_000_000),
        end_ns: end_ms.saturating_mul(1_000_000),
        limit: request.limit as usize,
    })
}

pub fn span_summary_pb(s: &vigil_storage::SpanSummary) -> pb::SpanSummary {
    pb::SpanSummary {
        trace_id: hex(&s.trace_id),
        span_id: hex(&s.span_id),
        service: s.service.clone(),
        name: s.name.clone(),
        start_ns: s.start_ns,
        duration_ns: s.duration_ns,
        status: status_name(s.status).into(),
    }
}

pub fn profile_query(
    application: &str,
    profile_type: &str,
    resource: &[pb::Label],
    start_ms: i64,
    end_ms: i64,
) -> ProfileQuery {
    ProfileQuery {
        start_ns: start_ms.saturating_mul(1_000_000),
        end_ns: end_ms.saturating_mul(1_000_000),
        profile_type: if profile_type.is_empty() {
            "cpu".into()
        } else {
            profile_type.to_owned()
        },
        service: non_empty(application),
        resource: labels_of(resource),
    }
}

/// Merged stacks (root first) as a flame graph tree, children by name.
pub fn flame_tree(stacks: &[StackSample]) -> pb::FlameNode {
    #[derive(Default)]
    struct Node {
        total: u64,
        own: u64,
        children: BTreeMap<String, Node>,
    }
    let mut root = Node::default();
    for s in stacks {
        root.total += s.value;
        let mut node = &mut root;
        for frame in &s.frames {
            node = node.children.entry(frame.clone()).or_default();
            node.total += s.value;
        }
        node.own += s.value;
    }
    fn to_pb(name: String, n: Node) -> pb::FlameNode {
        let mut children: Vec<pb::FlameNode> =
            n.children.into_iter().map(|(k, v)| to_pb(k, v)).collect();
        children.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.name.cmp(&b.name)));
        pb::FlameNode {
            name,
            total: n.total,
            self_: n.own,
            children,
        }
    }
    to_pb("all".into(), root)
}

/// Two windows' stacks as one tree of shares (each window's share of its
/// own samples), so that windows of different load compare.
pub fn diff_tree(
    baseline: &[StackSample],
    comparison: &[StackSample],
) -> pb::FlamegraphDiffResponse {
    #[derive(Default)]
    struct Node {
        a: u64,
        b: u64,
        children: BTreeMap<String, Node>,
    }
    let mut root = Node::default();
    for (stacks, second) in [(baseline, false), (comparison, true)] {
        for s in stacks {
            let mut node = &mut root;
            let bump = |n: &mut Node| {
                if second {
                    n.b += s.value
                } else {
                    n.a += s.value
                }
            };
            bump(node);
            for frame in &s.frames {
                node = node.children.entry(frame.clone()).or_default();
                bump(node);
            }
        }
    }
    let (ta, tb) = (root.a.max(1) as f64, root.b.max(1) as f64);
    let (sa, sb) = (root.a, root.b);
    fn to_pb(name: String, n: Node, ta: f64, tb: f64) -> pb::DiffNode {
        let mut children: Vec<pb::DiffNode> = n
            .children
            .into_iter()
            .map(|(k, v)| to_pb(k, v, ta, tb))
            .collect();
        children.sort_by(|x, y| {
            (y.baseline_share + y.comparison_share)
                .total_cmp(&(x.baseline_share + x.comparison_share))
                .then_with(|| x.name.cmp(&y.name))
        });
        pb::DiffNode {
            name,
            baseline_share: n.a as f64 / ta,
            comparison_share: n.b as f64 / tb,
            children,
        }
    }
    pb::FlamegraphDiffResponse {
        root: Some(to_pb("all".into(), root, ta, tb)),
        baseline_samples: sa,
        comparison_samples: sb,
    }
}

/// pprof's `profile.proto` (the fields a CPU profile needs).
mod pprof {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Leaf first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
    }
}

/// The merged stacks as a gzip-compressed pprof profile: one sample type
/// (`samples`/`count`, plus `cpu`/`nanoseconds` at the agent's 99 Hz).
pub fn pprof(stacks: &[StackSample], start_ms: i64, end_ms: i64) -> std::io::Result<Vec<u8>> {
    const PERIOD_NS: i64 = 1_000_000_000 / 99;
    let mut strings: Vec<String> = vec![String::new()];
    let mut string_ids: HashMap<String, i64> = HashMap::new();
    let mut intern = |s: &str| -> i64 {
        if let Some(id) = string_ids.get(s) {
            return *id;
        }
        strings.push(s.to_owned());
        let id = strings.len() as i64 - 1;
        string_ids.insert(s.to_owned(), id);
        id
    };
    let sample_type = vec![
        pprof::ValueType {
            r#type: intern("samples"),
            unit: intern("count"),
        },
        pprof::ValueType {
            r#type: intern("cpu"),
            unit: intern("nanoseconds"),
        },
    ];
    let period_type = Some(pprof::ValueType {
        r#type: intern("cpu"),
        unit: intern("nanoseconds"),
    });
    // One function and one location per distinct frame name.
    let mut frame_ids: HashMap<&str, u64> = HashMap::new();
    let mut functions = Vec::new();
    let mut locations = Vec::new();
    let mut samples = Vec::with_capacity(stacks.len());
    for stack in stacks {
        let mut location_id = Vec::with_capacity(stack.frames.len());
        for frame in stack.frames.iter().rev() {
            let next = frame_ids.len() as u64 + 1;
            let id = *frame_ids.entry(frame.as_str()).or_insert_with(|| {
                functions.push(pprof::Function {
                    id: next,
                    name: intern(frame),
                });
                locations.push(pprof::Location {
                    id: next,
                    line: vec![pprof::Line { function_id: next }],
                });
                next
            });
            location_id.push(id);
        }
        let count = i64::try_from(stack.value).unwrap_or(i64::MAX);
        samples.push(pprof::Sample {
            location_id,
            value: vec![count, count.saturating_mul(PERIOD_NS)],
        });
    }
    let profile = pprof::Profile {
        sample_type,
        sample: samples,
        location: locations,
        function: functions,
        string_table: strings,
        time_nanos: start_ms.saturating_mul(1_000_000),
        duration_nanos: (end_ms - start_ms).saturating_mul(1_000_000),
        period_type,
        period: PERIOD_NS,
    };
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()
}

pub fn event_query(request: &pb::ListEventsRequest, start_ms: i64, end_ms: i64) -> EventQuery {
    EventQuery {
        start_ns: start_ms.saturating_mul(1_000_000),
        end_ns: end_ms.saturating_mul(1_000_000),
        kind: non_empty(&request.kind),
        reason: non_empty(&request.reason),
        resource: labels_of(&request.resource),
        limit: request.limit as usize,
    }
}

pub fn event_pb(e: &Event) -> pb::Event {
    pb::Event {
        time_ns: e.time_ns,
        kind: e.kind.clone(),
        reason: e.reason.clone(),
        object: e.object.clone(),
        message: e.message.clone(),
        resource: labels_pb(&e.resource),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &[&str], value: u64) -> StackSample {
        StackSample {
            frames: frames.iter().map(|f| (*f).to_owned()).collect(),
            value,
        }
    }

    #[test]
    fn flame_tree_sums_totals_and_self() {
        let t = flame_tree(&[
            stack(&["main", "work"], 3),
            stack(&["main"], 1),
            stack(&["main", "io"], 2),
        ]);
        assert_eq!(t.total, 6);
        let main = &t.children[0];
        assert_eq!((main.name.as_str(), main.total, main.self_), ("main", 6, 1));
        assert_eq!(main.children[0].name, "work");
        assert_eq!(main.children[0].total, 3);
    }

    #[test]
    fn diff_is_in_shares_of_each_window() {
        let d = diff_tree(
            &[stack(&["a", "x"], 1), stack(&["a", "y"], 1)],
            &[stack(&["a", "x"], 30), stack(&["a", "y"], 10)],
        );
        let a = &d.root.as_ref().unwrap().children[0];
        let x = a.children.iter().find(|n| n.name == "x").unwrap();
        assert!((x.baseline_share - 0.5).abs() < 1e-12);
        assert!((x.comparison_share - 0.75).abs() < 1e-12);
        assert_eq!((d.baseline_samples, d.comparison_samples), (2, 40));
    }

    #[test]
    fn pprof_decodes_to_the_stacks() {
        use std::io::Read;
        let bytes = pprof(
            &[stack(&["main", "work"], 3), stack(&["main"], 1)],
            0,
            60_000,
        )
        .unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .unwrap();
        let p = pprof::Profile::decode(&raw[..]).unwrap();
        let name = |location: u64| {
            let f = p.function.iter().find(|f| f.id == location).unwrap();
            p.string_table[f.name as usize].clone()
        };
        assert_eq!(p.sample.len(), 2);
        let leaf_first: Vec<String> = p.sample[0].location_id.iter().map(|l| name(*l)).collect();
        assert_eq!(leaf_first, ["work", "main"]);
        assert_eq!(p.sample[0].value[0], 3);
        assert_eq!(p.string_table[0], "");
    }

    #[test]
    fn waterfall_orders_children_under_parents() {
        let span = |id: u8, parent: u8, start: i64| Span {
            trace_id: [1; 16],
            span_id: [id; 8],
            parent_span_id: [parent; 8],
            name: format!("s{id}"),
            start_ns: start,
            end_ns: start + 10,
            kind: SpanKind::Server,
            status: StatusCode::Unset,
            status_message: String::new(),
            service: "svc".into(),
            resource: Default::default(),
            attributes: Default::default(),
            events: Vec::new(),
            links: Vec::new(),
        };
        // Root 1; children 2 (later) and 3 (earlier); 4 under 2; 5's parent is missing.
        let w = waterfall(vec![
            span(4, 2, 40),
            span(2, 1, 30),
            span(3, 1, 20),
            span(1, 0, 10),
            span(5, 9, 5),
        ]);
        let names: Vec<(&str, u32)> = w.spans.iter().map(|s| (s.name.as_str(), s.depth)).collect();
        assert_eq!(
            names,
            [("s5", 0), ("s1", 0), ("s3", 1), ("s2", 1), ("s4", 2)]
        );
        assert_eq!(w.start_ns, 5);
        assert_eq!(w.duration_ns, 45);
        assert!(trace_id("zz").is_err());
        assert!(trace_id(&"0".repeat(32)).is_err());
    }
}
