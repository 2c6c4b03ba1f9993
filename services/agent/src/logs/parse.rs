//! One log line into a record: the container runtimes' framing (CRI,
//! Docker json-file), JSON logs, the severity (level words, JSON level
//! fields, syslog priority), a trace id, and whether a line continues the
//! previous record (stack traces).

/// How a source frames its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    /// `<RFC3339Nano> <stream> <P|F> <message>` (Kubernetes /var/log/pods).
    Cri,
    /// `{"log":"…\n","stream":"stdout","time":"…"}` (Docker json-file).
    DockerJson,
}

/// A line without its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub time_ns: Option<i64>,
    pub text: String,
    /// CRI `P`: the message goes on in the next line.
    pub partial: bool,
}

fn rfc3339_ns(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_nanos()).ok()
}

/// The time a plain line starts with: `2026-11-21T12:00:00Z`,
/// `2026-11-21 12:00:00,123` (Python's logging), with optional fractions
/// (`.` or `,`) and offset (`Z`, `+02:00`, `-0500`). Without an offset the
/// time is taken as UTC.
pub fn leading_time_ns(text: &str) -> Option<i64> {
    let base = text.get(..19)?;
    let b = base.as_bytes();
    if !(b[4] == b'-' && b[7] == b'-' && (b[10] == b'T' || b[10] == b' ') && b[13] == b':') {
        return None;
    }
    let mut ns = rfc3339_ns(&format!("{}T{}", &base[..10], &base[11..]))?;
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix(['.', ',']) {
        let digits: String = fraction.chars().take_while(char::is_ascii_digit).collect();
        rest = &fraction[digits.len()..];
        let scaled: String = digits
            .chars()
            .chain(std::iter::repeat('0'))
            .take(9)
            .collect();
        ns += scaled.parse::<i64>().ok()?;
    }
    let offset = rest.as_bytes();
    if let Some(sign @ (b'+' | b'-')) = offset.first() {
        // ±HH:MM or ±HHMM, right after the time.
        let digits: Vec<u8> = match offset.get(1..6) {
            Some([a, b, b':', c, d]) => vec![*a, *b, *c, *d],
            _ => offset.get(1..5).map(<[u8]>::to_vec).unwrap_or_default(),
        };
        if digits.len() == 4 && digits.iter().all(u8::is_ascii_digit) {
            let n = |i: usize| i64::from(digits[i] - b'0');
            let minutes = (n(0) * 10 + n(1)) * 60 + n(2) * 10 + n(3);
            let sign = if *sign == b'+' { 1 } else { -1 };
            ns -= sign * minutes * 60 * 1_000_000_000;
        }
    }
    Some(ns)
}

pub fn parse_line(format: Format, raw: &str) -> Line {
    let plain = || Line {
        time_ns: None,
        text: raw.to_owned(),
        partial: false,
    };
    match format {
        Format::Plain => plain(),
        Format::Cri => {
            let mut parts = raw.splitn(4, ' ');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(time), Some(_stream), Some(tag @ ("P" | "F")), message) => Line {
                    time_ns: rfc3339_ns(time),
                    text: message.unwrap_or_default().to_owned(),
                    partial: tag == "P",
                },
                _ => plain(),
            }
        }
        Format::DockerJson => {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) else {
                return plain();
            };
            let log = v.get("log").and_then(|l| l.as_str()).unwrap_or_default();
            Line {
                time_ns: v.get("time").and_then(|t| t.as_str()).and_then(rfc3339_ns),
                partial: !log.ends_with('\n'),
                text: log.trim_end_matches('\n').to_owned(),
            }
        }
    }
}

/// OpenTelemetry severity numbers.
pub const TRACE: u8 = 1;
pub const DEBUG: u8 = 5;
pub const INFO: u8 = 9;
pub const WARN: u8 = 13;
pub const ERROR: u8 = 17;
pub const FATAL: u8 = 21;

pub fn severity_text(number: u8) -> &'static str {
    match number {
        0 => "unknown",
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warning",
        17..=20 => "error",
        _ => "fatal",
    }
}

fn level_word(word: &str) -> Option<u8> {
    Some(match word.to_ascii_uppercase().as_str() {
        "TRACE" => TRACE,
        "DEBUG" | "DBG" => DEBUG,
        "INFO" | "NOTICE" => INFO,
        "WARN" | "WARNING" => WARN,
        "ERROR" | "ERR" | "SEVERE" => ERROR,
        "FATAL" | "CRITICAL" | "CRIT" | "PANIC" | "EMERG" | "ALERT" => FATAL,
        _ => return None,
    })
}

/// A record's fields when its text is a JSON object: message, level and
/// trace id under their usual names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields {
    pub message: Option<String>,
    pub severity: u8,
    pub trace_id: Option<[u8; 16]>,
}

pub fn json_fields(text: &str) -> Option<Fields> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let object = v.as_object()?;
    let first = |keys: &[&str]| keys.iter().find_map(|k| object.get(*k));
    let severity = match first(&["level", "severity", "lvl", "log.level", "levelname"]) {
        Some(serde_json::Value::String(s)) => level_word(s).unwrap_or(0),
        // Numeric levels: pino/bunyan (10 trace … 60 fatal).
        Some(serde_json::Value::Number(n)) => match n.as_u64().unwrap_or(0) {
            0..=10 => TRACE,
            11..=20 => DEBUG,
            21..=30 => INFO,
            31..=40 => WARN,
            41..=50 => ERROR,
            _ => FATAL,
        },
        _ => 0,
    };
    Some(Fields {
        message: first(&["msg", "message", "log"])
            .and_then(|m| m.as_str())
            .map(str::to_owned),
        severity,
        trace_id: first(&["trace_id", "traceId", "trace.id", "traceid"])
            .and_then(|t| t.as_str())
            .and_then(|t| hex16(t.as_bytes())),
    })
}

/// The severity a plain line states: a syslog `<N>` priority first, else
/// a level word among its first words.
pub fn severity(text: &str) -> u8 {
    if let Some(rest) = text.strip_prefix('<')
        && let Some((n, _)) = rest.split_once('>')
        && let Ok(priority) = n.parse::<u32>()
    {
        return match priority & 7 {
            0..=2 => FATAL,
            3 => ERROR,
            4 => WARN,
            5 | 6 => INFO,
            _ => DEBUG,
        };
    }
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(12)
        .find_map(level_word)
        .unwrap_or(0)
}

fn hex16(text: &[u8]) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in text.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    (out != [0; 16]).then_some(out)
}

/// A trace id written as `trace_id=<32 hex>`, `trace_id: …`, `traceId=…`
/// or a W3C `traceparent` value in a plain line.
pub fn trace_id(text: &str) -> Option<[u8; 16]> {
    for key in ["trace_id", "traceid", "traceId", "trace-id", "traceparent"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(key) {
            let after = &text[from + at + key.len()..];
            let value = after.trim_start_matches(['=', ':', ' ', '"', '\'']);
            let value = value.strip_prefix("00-").unwrap_or(value);
            if let Some(id) = value.get(..32).and_then(|v| hex16(v.as_bytes())) {
                return Some(id);
            }
            from += at + key.len();
        }
    }
    None
}

/// Whether a line continues the record before it (whose last line was
/// `previous`): an indented line (a stack frame), the usual follow-up lines
/// of Java and Python traces, and the exception line that ends a Python
/// trace (`ValueError: …` right after a frame).
pub fn continues(previous: &str, text: &str) -> bool {
    if text.starts_with([' ', '\t'])
        || text.starts_with("Caused by:")
        || text.starts_with("...")
        || text.starts_with("Traceback (most recent call last)")
    {
        return true;
    }
    let first = text.split([':', ' ']).next().unwrap_or_default();
    previous.starts_with([' ', '\t'])
        && (first.ends_with("Error") || first.ends_with("Exception"))
        && first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_framings() {
        let l = parse_line(
            Format::Cri,
            "2024-05-01T10:00:00.123456789Z stderr P part one",
        );
        assert_eq!((l.text.as_str(), l.partial), ("part one", true));
        assert_eq!(l.time_ns, Some(1_714_557_600_123_456_789));
        let l = parse_line(Format::Cri, "2024-05-01T10:00:00Z stdout F");
        assert_eq!(
            leading_time_ns("2024-05-01 10:00:00,123 INFO x"),
            Some(1_714_557_600_123_000_000)
        );
        assert_eq!(
            leading_time_ns("2024-05-01T12:00:00.5+02:00 started"),
            Some(1_714_557_600_500_000_000)
        );
        assert_eq!(
            leading_time_ns("2024-05-01T10:00:00Z"),
            Some(1_714_557_600_000_000_000)
        );
        assert_eq!(leading_time_ns("INFO 2024-05-01 10:00:00"), None);
        assert_eq!(
            leading_time_ns("2024-05-01 10:00:00 -- user 1234 logged in"),
            Some(1_714_557_600_000_000_000),
            "no offset there"
        );
        assert_eq!(
            leading_time_ns("2024-05-01T05:00:00-0500"),
            Some(1_714_557_600_000_000_000)
        );
        assert_eq!(leading_time_ns("short"), None);
        assert_eq!((l.text.as_str(), l.partial), ("", false));
        let l = parse_line(
            Format::DockerJson,
            r#"{"log":"ERROR boom\n","stream":"stderr","time":"2024-05-01T10:00:00.5Z"}"#,
        );
        assert_eq!((l.text.as_str(), l.partial), ("ERROR boom", false));
        assert_eq!(l.time_ns, Some(1_714_557_600_500_000_000));
        // Not the framing it should be: kept as it is.
        assert_eq!(parse_line(Format::Cri, "garbage").text, "garbage");
    }

    #[test]
    fn severities_json_and_trace_ids() {
        assert_eq!(
            severity("2024-05-01 10:00:00 ERROR db: connection refused"),
            ERROR
        );
        assert_eq!(severity("[warn] disk almost full"), WARN);
        assert_eq!(severity("<3>kernel: oops"), ERROR);
        assert_eq!(severity("<6>started"), INFO);
        assert_eq!(
            severity("user errors counted: 0"),
            0,
            "a word inside a word is no level"
        );
        let f = json_fields(
            r#"{"level":"error","msg":"payment failed","trace_id":"0af7651916cd43dd8448eb211c80319c"}"#,
        )
        .unwrap();
        assert_eq!(f.severity, ERROR);
        assert_eq!(f.message.as_deref(), Some("payment failed"));
        assert!(f.trace_id.is_some());
        assert_eq!(
            json_fields(r#"{"level":50,"msg":"x"}"#).unwrap().severity,
            ERROR
        );
        assert_eq!(json_fields("not json"), None);
        let id = trace_id("GET /a 500 trace_id=0af7651916cd43dd8448eb211c80319c span=1").unwrap();
        assert_eq!(id[0], 0x0a);
        assert!(
            trace_id("traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                .is_some()
        );
        assert_eq!(trace_id("trace_id=xyz"), None);
        assert!(continues(
            "ERROR x",
            "    at com.shop.Pay.charge(Pay.java:42)"
        ));
        assert!(continues("  at a", "Caused by: java.io.IOException"));
        assert!(continues(
            "ERROR failed",
            "Traceback (most recent call last):"
        ));
        assert!(continues(
            "    raise ValueError('boom')",
            "ValueError: boom"
        ));
        assert!(
            !continues("INFO ok", "ValueError: boom"),
            "not after a frame"
        );
        assert!(!continues("    at a", "INFO next request"));
    }
}
