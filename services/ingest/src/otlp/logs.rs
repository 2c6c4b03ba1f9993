//! OTLP log records into the store's log model.

use opentelemetry_proto::tonic::{collector::logs::v1::ExportLogsServiceRequest, logs::v1 as otlp};
use vigil_storage::LogRecord;

use super::{Converted, attributes, id, nanos, resource_info, value_text};
use crate::gate::{Refusal, TimeWindow};

/// Every record of the request, each refused alone when it breaks a rule.
/// A record without a time takes its observed time, or `now_ns`.
pub fn convert_logs(
    request: &ExportLogsServiceRequest,
    window: TimeWindow,
    now_ns: i64,
) -> Converted<LogRecord> {
    let mut out = Converted::default();
    for resource_logs in &request.resource_logs {
        let resource = resource_info(resource_logs.resource.as_ref());
        for scope_logs in &resource_logs.scope_logs {
            for record in &scope_logs.log_records {
                match convert_record(record, &resource, window, now_ns) {
                    Ok(record) => out.items.push(record),
                    Err(refusal) => out.reject(refusal),
                }
            }
        }
    }
    out
}

fn convert_record(
    record: &otlp::LogRecord,
    resource: &super::ResourceInfo,
    window: TimeWindow,
    now_ns: i64,
) -> Result<LogRecord, Refusal> {
    let time_ns = match (record.time_unix_nano, record.observed_time_unix_nano) {
        (0, 0) => now_ns,
        (0, observed) => nanos(observed, "observed time")?,
        (time, _) => nanos(time, "log time")?,
    };
    window.check_ns(time_ns)?;
    let severity = u8::try_from(record.severity_number)
        .ok()
        .filter(|s| *s <= 24)
        .ok_or_else(|| {
            Refusal::invalid(
                "invalid_log",
                format!(
                    "severity number {} is not an OpenTelemetry severity (0-24)",
                    record.severity_number
                ),
            )
        })?;
    let mut attrs = attributes(&record.attributes);
    if !record.event_name.is_empty() {
        attrs.insert("event.name".to_owned(), record.event_name.clone());
    }
    let converted = LogRecord {
        time_ns,
        severity,
        severity_text: record.severity_text.clone(),
        body: value_text(record.body.as_ref()),
        service: resource.service.clone(),
        resource: resource.labels.clone(),
        attributes: attrs,
        trace_id: id(&record.trace_id, "trace id")?,
        span_id: id(&record.span_id, "span id")?,
        pattern_id: 0,
    };
    converted
        .validate()
        .map_err(|e| Refusal::invalid("invalid_log", e.to_string()))?;
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, any_value::Value},
        logs::v1::{ResourceLogs, ScopeLogs},
    };

    fn request(records: Vec<otlp::LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
    }

    fn record(time: u64, severity: i32, body: &str) -> otlp::LogRecord {
        otlp::LogRecord {
            time_unix_nano: time,
            severity_number: severity,
            severity_text: "ERROR".into(),
            body: Some(AnyValue {
                value: Some(Value::StringValue(body.into())),
            }),
            trace_id: vec![7; 16],
            span_id: vec![8; 8],
            ..otlp::LogRecord::default()
        }
    }

    #[test]
    fn records_convert_and_bad_ones_are_refused_alone() {
        let window = TimeWindow {
            oldest_ms: 1_000,
            newest_ms: 1_800_000_000_000,
        };
        let now = 1_700_000_000_000_000_000;
        let mut untimed = record(0, 9, "no time");
        untimed.observed_time_unix_nano = 1_600_000_000_000_000_000;
        let mut no_times = record(0, 9, "no times at all");
        no_times.trace_id.clear();
        let out = convert_logs(
            &request(vec![
                record(1_650_000_000_000_000_000, 17, "payment failed"),
                record(1_650_000_000_000_000_000, 30, "bad severity"),
                untimed,
                no_times,
                record(1_900_000_000_000_000_000, 9, "from the future"),
            ]),
            window,
            now,
        );
        assert_eq!(out.items.len(), 3);
        assert_eq!(out.rejected, 2);
        assert_eq!(out.first_refusal.as_ref().unwrap().reason, "invalid_log");
        assert_eq!(out.items[0].body, "payment failed");
        assert_eq!(out.items[0].severity, 17);
        assert_eq!(out.items[0].trace_id, [7; 16]);
        assert_eq!(out.items[0].service, "unknown_service");
        assert_eq!(out.items[1].time_ns, 1_600_000_000_000_000_000);
        assert_eq!(out.items[2].time_ns, now);
        assert_eq!(out.items[2].trace_id, [0; 16]);
    }
}
