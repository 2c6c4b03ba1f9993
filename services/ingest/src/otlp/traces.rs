//! OTLP spans into the store's span model.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, trace::v1 as otlp,
};
use vigil_storage::{
    Span,
    trace::{SpanEvent, SpanKind, SpanLink, StatusCode},
};

use super::{Converted, attributes, id, nanos, resource_info};
use crate::gate::{Refusal, TimeWindow};

/// Every span of the request, each refused alone when it breaks a rule.
pub fn convert_traces(request: &ExportTraceServiceRequest, window: TimeWindow) -> Converted<Span> {
    let mut out = Converted::default();
    for resource_spans in &request.resource_spans {
        let resource = resource_info(resource_spans.resource.as_ref());
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                match convert_span(span, &resource.service, &resource.labels, window) {
                    Ok(span) => out.items.push(span),
                    Err(refusal) => out.reject(refusal),
                }
            }
        }
    }
    out
}

fn convert_span(
    span: &otlp::Span,
    service: &str,
    resource: &vigil_storage::Labels,
    window: TimeWindow,
) -> Result<Span, Refusal> {
    let start_ns = nanos(span.start_time_unix_nano, "span start")?;
    let end_ns = nanos(span.end_time_unix_nano, "span end")?;
    window.check_ns(start_ns)?;
    let kind = u8::try_from(span.kind)
        .ok()
        .filter(|k| *k <= 5)
        .map(SpanKind::from_code)
        .ok_or_else(|| {
            Refusal::invalid(
                "invalid_span",
                format!("span kind {} is not an OTLP span kind", span.kind),
            )
        })?;
    let status = span.status.as_ref();
    let status_code = match status.map_or(0, |s| s.code) {
        code @ 0..=2 => StatusCode::from_code(code as u8),
        code => {
            return Err(Refusal::invalid(
                "invalid_span",
                format!("status code {code} is not an OTLP status code"),
            ));
        }
    };
    let events = span
        .events
        .iter()
        .map(|e| {
            Ok(SpanEvent {
                time_ns: nanos(e.time_unix_nano, "span event time")?,
                name: e.name.clone(),
                attributes: attributes(&e.attributes),
            })
        })
        .collect::<Result<Vec<_>, Refusal>>()?;
    let links = span
        .links
        .iter()
        .map(|l| {
            Ok(SpanLink {
                trace_id: id(&l.trace_id, "link trace id")?,
                span_id: id(&l.span_id, "link span id")?,
                attributes: attributes(&l.attributes),
            })
        })
        .collect::<Result<Vec<_>, Refusal>>()?;
    let converted = Span {
        trace_id: id(&span.trace_id, "trace id")?,
        span_id: id(&span.span_id, "span id")?,
        parent_span_id: id(&span.parent_span_id, "parent span id")?,
        name: span.name.clone(),
        kind,
        start_ns,
        end_ns,
        status: status_code,
        status_message: status.map(|s| s.message.clone()).unwrap_or_default(),
        service: service.to_owned(),
        resource: resource.clone(),
        attributes: attributes(&span.attributes),
        events,
        links,
    };
    converted
        .validate()
        .map_err(|e| Refusal::invalid("invalid_span", e.to_string()))?;
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, KeyValue, any_value::Value},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Status},
    };

    fn window() -> TimeWindow {
        TimeWindow {
            oldest_ms: 0,
            newest_ms: i64::MAX / 2,
        }
    }

    pub fn request(spans: Vec<otlp::Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue("cart".into())),
                        }),
                        ..KeyValue::default()
                    }],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn span(trace: u8, id: u8) -> otlp::Span {
        otlp::Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: "GET /cart".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_005_000_000,
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            ..otlp::Span::default()
        }
    }

    #[test]
    fn spans_convert_and_bad_ones_are_refused_alone() {
        let mut short_id = span(1, 3);
        short_id.span_id = vec![1; 4];
        let mut backwards = span(1, 4);
        backwards.end_time_unix_nano = 1;
        let out = convert_traces(
            &request(vec![span(1, 1), short_id, backwards, span(1, 2)]),
            window(),
        );
        assert_eq!(out.items.len(), 2);
        assert_eq!(out.rejected, 2);
        assert!(
            out.message()
                .starts_with("2 items refused; first: span id has 4 bytes"),
            "{}",
            out.message()
        );
        let s = &out.items[0];
        assert_eq!(s.service, "cart");
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.status, StatusCode::Error);
        assert_eq!(s.duration_ns(), 5_000_000);
        assert_eq!(s.resource["application"], "cart");
    }

    #[test]
    fn old_spans_are_refused() {
        let window = TimeWindow {
            oldest_ms: 1_800_000_000_000,
            newest_ms: 1_900_000_000_000,
        };
        let out = convert_traces(&request(vec![span(1, 1)]), window);
        assert_eq!(out.rejected, 1);
        assert_eq!(out.first_refusal.unwrap().reason, "too_old");
    }
}
