//! OTLP metrics into Prometheus-model series, the way Prometheus' own OTLP
//! receiver names them: dots and other characters outside the Prometheus
//! alphabet become `_`, monotonic sums get `_total`, histograms become
//! `_bucket` (with `le`), `_sum` and `_count` series, summaries `quantile`
//! series. Resource attributes give `job`, `instance` and Vigil's resource
//! labels; a data point attribute of the same name becomes `exported_<name>`.
//!
//! Delta temporality and exponential histograms are refused per data point
//! with a message saying what to change in the exporter.

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::KeyValue,
    metrics::v1::{self as otlp, AggregationTemporality, metric::Data, number_data_point},
};
use vigil_storage::{Labels, Sample, SeriesWrite};

use super::{Converted, nanos, resource_info, value_text};
use crate::gate::{Refusal, TimeWindow};

/// `DataPointFlags.NO_RECORDED_VALUE`: the point marks a gap, not a value.
const NO_RECORDED_VALUE: u32 = 1;

struct Context<'a> {
    resource: &'a Labels,
    window: TimeWindow,
    max_labels: usize,
}

/// Every data point of the request as series; `rejected` counts data points.
pub fn convert_metrics(
    request: &ExportMetricsServiceRequest,
    window: TimeWindow,
    max_labels: usize,
) -> Converted<SeriesWrite> {
    let mut out = Converted::default();
    for resource_metrics in &request.resource_metrics {
        let resource = resource_info(resource_metrics.resource.as_ref());
        let cx = Context {
            resource: &resource.metric_labels,
            window,
            max_labels,
        };
        for scope in &resource_metrics.scope_metrics {
            for metric in &scope.metrics {
                convert_metric(metric, &cx, &mut out);
            }
        }
    }
    out
}

fn convert_metric(metric: &otlp::Metric, cx: &Context<'_>, out: &mut Converted<SeriesWrite>) {
    let name = metric_name(&metric.name);
    let Some(data) = &metric.data else {
        out.reject(Refusal::invalid(
            "invalid_metric",
            format!("metric {:?} has no data", metric.name),
        ));
        return;
    };
    if name.is_empty() {
        out.reject(Refusal::invalid("invalid_metric", "a metric has no name"));
        return;
    }
    let delta = |temporality: i32, points: usize, out: &mut Converted<SeriesWrite>| {
        if temporality == AggregationTemporality::Delta as i32 {
            for _ in 0..points.max(1) {
                out.reject(Refusal::invalid(
                    "delta_temporality",
                    format!(
                        "metric {:?} has delta temporality, which Prometheus-model storage cannot sum; \
                         set the exporter's temporality preference to cumulative",
                        metric.name
                    ),
                ));
            }
            return true;
        }
        false
    };
    match data {
        Data::Gauge(g) => {
            for p in &g.data_points {
                number_point(&name, p, cx, out);
            }
        }
        Data::Sum(s) => {
            if delta(s.aggregation_temporality, s.data_points.len(), out) {
                return;
            }
            let name = if s.is_monotonic && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name
            };
            for p in &s.data_points {
                number_point(&name, p, cx, out);
            }
        }
        Data::Histogram(h) => {
            if delta(h.aggregation_temporality, h.data_points.len(), out) {
                return;
            }
            for p in &h.data_points {
                histogram_point(&name, p, cx, out);
            }
        }
        Data::ExponentialHistogram(h) => {
            for _ in 0..h.data_points.len().max(1) {
                out.reject(Refusal::invalid(
                    "exponential_histogram",
                    format!(
                        "metric {:?} is an exponential histogram, which is not stored; \
                         configure the exporter's histogram aggregation as explicit buckets",
                        metric.name
                    ),
                ));
            }
        }
        Data::Summary(s) => {
            for p in &s.data_points {
                summary_point(&name, p, cx, out);
            }
        }
    }
}

/// Data point attributes plus the resource's labels, checked against the
/// limits. `extra` is a label of the point's own making (`le`, `quantile`).
fn labels(
    attrs: &[KeyValue],
    extra: Option<(&str, String)>,
    cx: &Context<'_>,
) -> Result<Labels, Refusal> {
    let mut labels = cx.resource.clone();
    for kv in attrs {
        let mut name = label_name(&kv.key);
        if labels.contains_key(&name) {
            name = format!("exported_{name}");
        }
        let value = value_text(kv.value.as_ref());
        if !value.is_empty() {
            labels.insert(name, value);
        }
    }
    if let Some((name, value)) = extra {
        labels.insert(name.to_owned(), value);
    }
    if labels.len() > cx.max_labels {
        return Err(Refusal::invalid(
            "too_many_labels",
            format!(
                "a series has {} labels; at most {} are accepted (limits.max_labels_per_series)",
                labels.len(),
                cx.max_labels
            ),
        ));
    }
    Ok(labels)
}

/// Adds one series of one sample, checked by the store's rules.
fn push(
    metric: String,
    labels: Labels,
    ts_ms: i64,
    value: f64,
    staged: &mut Vec<SeriesWrite>,
) -> Result<(), Refusal> {
    let series = SeriesWrite {
        metric,
        labels,
        samples: vec![Sample {
            timestamp_ms: ts_ms,
            value,
        }],
    };
    series
        .validate()
        .map_err(|e| Refusal::invalid("invalid_series", e.to_string()))?;
    staged.push(series);
    Ok(())
}

fn point_time(time_unix_nano: u64, cx: &Context<'_>) -> Result<i64, Refusal> {
    let ts_ms = nanos(time_unix_nano, "data point time")? / 1_000_000;
    cx.window.check_ms(ts_ms)?;
    Ok(ts_ms)
}

/// One data point: skipped when it marks a gap (NO_RECORDED_VALUE); else
/// its series are stored together, or, at the first refusal, none of them.
fn point(
    flags: u32,
    out: &mut Converted<SeriesWrite>,
    build: impl FnOnce(&mut Vec<SeriesWrite>) -> Result<(), Refusal>,
) {
    if flags & NO_RECORDED_VALUE != 0 {
        return;
    }
    let mut staged = Vec::new();
    match build(&mut staged) {
        Ok(()) => out.items.extend(staged),
        Err(refusal) => out.reject(refusal),
    }
}

/// The `_sum` (when known) and `_count` series of a histogram or summary.
fn sum_and_count(
    name: &str,
    plain: Labels,
    ts: i64,
    sum: Option<f64>,
    count: u64,
    staged: &mut Vec<SeriesWrite>,
) -> Result<(), Refusal> {
    if let Some(sum) = sum {
        push(format!("{name}_sum"), plain.clone(), ts, sum, staged)?;
    }
    push(format!("{name}_count"), plain, ts, count as f64, staged)
}

fn number_point(
    name: &str,
    p: &otlp::NumberDataPoint,
    cx: &Context<'_>,
    out: &mut Converted<SeriesWrite>,
) {
    point(p.flags, out, |staged| {
        let ts = point_time(p.time_unix_nano, cx)?;
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => {
                return Err(Refusal::invalid(
                    "invalid_metric",
                    format!("a data point of {name} has no value"),
                ));
            }
        };
        push(
            name.to_owned(),
            labels(&p.attributes, None, cx)?,
            ts,
            value,
            staged,
        )
    });
}

fn histogram_point(
    name: &str,
    p: &otlp::HistogramDataPoint,
    cx: &Context<'_>,
    out: &mut Converted<SeriesWrite>,
) {
    point(p.flags, out, |staged| {
        let ts = point_time(p.time_unix_nano, cx)?;
        if !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
            return Err(Refusal::invalid(
                "invalid_metric",
                format!(
                    "histogram {name} has {} bucket counts for {} bounds; it needs bounds + 1",
                    p.bucket_counts.len(),
                    p.explicit_bounds.len()
                ),
            ));
        }
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, count) in p.bucket_counts.iter().enumerate() {
            cumulative = cumulative.saturating_add(*count);
            let le = p
                .explicit_bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| bound(*b));
            let labels = labels(&p.attributes, Some(("le", le)), cx)?;
            push(bucket.clone(), labels, ts, cumulative as f64, staged)?;
        }
        if p.bucket_counts.is_empty() {
            let labels = labels(&p.attributes, Some(("le", "+Inf".to_owned())), cx)?;
            push(bucket, labels, ts, p.count as f64, staged)?;
        }
        let plain = labels(&p.attributes, None, cx)?;
        sum_and_count(name, plain, ts, p.sum, p.count, staged)
    });
}

fn summary_point(
    name: &str,
    p: &otlp::SummaryDataPoint,
    cx: &Context<'_>,
    out: &mut Converted<SeriesWrite>,
) {
    point(p.flags, out, |staged| {
        let ts = point_time(p.time_unix_nano, cx)?;
        for q in &p.quantile_values {
            if !q.value.is_finite() {
                continue; // no observations in the window: nothing to store
            }
            let labels = labels(&p.attributes, Some(("quantile", bound(q.quantile))), cx)?;
            push(name.to_owned(), labels, ts, q.value, staged)?;
        }
        let plain = labels(&p.attributes, None, cx)?;
        sum_and_count(name, plain, ts, Some(p.sum), p.count, staged)
    });
}

/// A bucket bound or quantile as Prometheus prints it (`0.5`, `1`, `+Inf`).
fn bound(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{value}")
    }
}

/// A name in the Prometheus alphabet: other characters become `_`, runs of
/// `_` collapse, and a leading digit gets a `_` in front.
fn sanitize(name: &str, allow_colon: bool) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && out.ends_with('_') && !out.starts_with("__") {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn metric_name(name: &str) -> String {
    sanitize(name, true)
}

fn label_name(name: &str) -> String {
    sanitize(name, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, any_value::Value},
        metrics::v1::{
            ExponentialHistogram, Gauge, Histogram, Metric, ResourceMetrics, ScopeMetrics, Sum,
            Summary, summary_data_point::ValueAtQuantile,
        },
        resource::v1::Resource,
    };

    const T: u64 = 1_700_000_000_000_000_000;

    fn window() -> TimeWindow {
        TimeWindow {
            oldest_ms: 0,
            newest_ms: i64::MAX / 2,
        }
    }

    fn attr(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value.into())),
            }),
            ..KeyValue::default()
        }
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![attr("service.name", "api"), attr("host.name", "n1")],
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    fn number(value: f64, attrs: Vec<KeyValue>) -> otlp::NumberDataPoint {
        otlp::NumberDataPoint {
            attributes: attrs,
            time_unix_nano: T,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..otlp::NumberDataPoint::default()
        }
    }

    fn metric(name: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            data: Some(data),
            ..Metric::default()
        }
    }

    fn find<'a>(
        out: &'a Converted<SeriesWrite>,
        name: &str,
        label: Option<(&str, &str)>,
    ) -> &'a SeriesWrite {
        out.items
            .iter()
            .find(|s| {
                s.metric == name
                    && label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v))
            })
            .unwrap_or_else(|| panic!("no {name} {label:?} in {:?}", out.items))
    }

    #[test]
    fn gauges_sums_histograms_and_summaries() {
        let out = convert_metrics(
            &request(vec![
                metric(
                    "system.memory.usage",
                    Data::Gauge(Gauge {
                        data_points: vec![number(
                            42.0,
                            vec![attr("state", "used"), attr("job", "x")],
                        )],
                    }),
                ),
                metric(
                    "http.requests",
                    Data::Sum(Sum {
                        data_points: vec![otlp::NumberDataPoint {
                            value: Some(number_data_point::Value::AsInt(7)),
                            ..number(0.0, vec![])
                        }],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    }),
                ),
                metric(
                    "http.server.duration",
                    Data::Histogram(Histogram {
                        data_points: vec![otlp::HistogramDataPoint {
                            time_unix_nano: T,
                            count: 6,
                            sum: Some(3.5),
                            bucket_counts: vec![1, 2, 3],
                            explicit_bounds: vec![0.5, 1.0],
                            ..otlp::HistogramDataPoint::default()
                        }],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    }),
                ),
                metric(
                    "rpc.latency",
                    Data::Summary(Summary {
                        data_points: vec![otlp::SummaryDataPoint {
                            time_unix_nano: T,
                            count: 3,
                            sum: 0.9,
                            quantile_values: vec![
                                ValueAtQuantile {
                                    quantile: 0.99,
                                    value: 0.5,
                                },
                                ValueAtQuantile {
                                    quantile: 0.5,
                                    value: f64::NAN,
                                },
                            ],
                            ..otlp::SummaryDataPoint::default()
                        }],
                    }),
                ),
            ]),
            window(),
            40,
        );
        assert_eq!(out.rejected, 0, "{}", out.message());
        let gauge = find(&out, "system_memory_usage", None);
        assert_eq!(gauge.samples[0].value, 42.0);
        assert_eq!(gauge.samples[0].timestamp_ms, 1_700_000_000_000);
        assert_eq!(gauge.labels["state"], "used");
        assert_eq!(gauge.labels["job"], "api");
        assert_eq!(gauge.labels["exported_job"], "x");
        assert_eq!(gauge.labels["node"], "n1");
        assert_eq!(
            find(&out, "http_requests_total", None).samples[0].value,
            7.0
        );
        let b = |le| find(&out, "http_server_duration_bucket", Some(("le", le))).samples[0].value;
        assert_eq!((b("0.5"), b("1"), b("+Inf")), (1.0, 3.0, 6.0));
        assert_eq!(
            find(&out, "http_server_duration_sum", None).samples[0].value,
            3.5
        );
        assert_eq!(
            find(&out, "http_server_duration_count", None).samples[0].value,
            6.0
        );
        assert_eq!(
            find(&out, "rpc_latency", Some(("quantile", "0.99"))).samples[0].value,
            0.5
        );
        assert_eq!(find(&out, "rpc_latency_count", None).samples[0].value, 3.0);
        assert!(
            !out.items
                .iter()
                .any(|s| s.labels.get("quantile").map(String::as_str) == Some("0.5"))
        );
    }

    #[test]
    fn delta_exponential_and_bad_points_are_refused_with_reasons() {
        let out = convert_metrics(
            &request(vec![
                metric(
                    "delta.sum",
                    Data::Sum(Sum {
                        data_points: vec![number(1.0, vec![]), number(2.0, vec![])],
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        is_monotonic: true,
                    }),
                ),
                metric(
                    "exp",
                    Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![Default::default()],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    }),
                ),
                metric(
                    "g",
                    Data::Gauge(Gauge {
                        data_points: vec![
                            number(f64::NAN, vec![]),
                            number(1.0, (0..40).map(|i| attr(&format!("a{i}"), "v")).collect()),
                            otlp::NumberDataPoint {
                                flags: NO_RECORDED_VALUE,
                                ..number(1.0, vec![])
                            },
                            number(5.0, vec![]),
                        ],
                    }),
                ),
            ]),
            window(),
            40,
        );
        assert_eq!(out.rejected, 5, "{}", out.message());
        assert_eq!(
            out.first_refusal.as_ref().unwrap().reason,
            "delta_temporality"
        );
        assert!(out.message().contains("cumulative"));
        assert_eq!(out.items.len(), 1);
        assert_eq!(out.items[0].samples[0].value, 5.0);
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(
            metric_name("http.server.request.duration"),
            "http_server_request_duration"
        );
        assert_eq!(metric_name("a..b:c"), "a_b:c");
        assert_eq!(metric_name("2xx"), "_2xx");
        assert_eq!(label_name("k8s.pod.name"), "k8s_pod_name");
        assert_eq!(label_name("a:b"), "a_b");
    }
}
