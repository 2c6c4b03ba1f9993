//! Prometheus remote_write 1.0: a snappy-compressed (block format) protobuf
//! `prometheus.WriteRequest` at `POST /api/v1/write`.
//!
//! The messages are declared here with the field numbers of Prometheus'
//! `prompb` (only what 1.0 senders fill: series with labels and float
//! samples; exemplars, native histograms and metadata are not read).
//! Stale markers (Prometheus' special NaN) and other non-finite values are
//! not stored and are counted; samples that break a rule are refused and
//! counted, the rest stored, and the answer is 400 naming what was refused
//! (Prometheus then logs it and does not resend the batch).

use vigil_storage::{Labels, Sample, SeriesWrite};

use crate::gate::{Refusal, TimeWindow};
use crate::otlp::Converted;

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<PromSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PromSample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Prometheus' staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Decompresses a snappy block, refusing one that would inflate beyond `max`.
pub fn decompress(body: &[u8], max: usize) -> Result<Vec<u8>, Refusal> {
    let len = snap::raw::decompress_len(body).map_err(|e| {
        Refusal::invalid(
            "invalid_encoding",
            format!("body is not snappy (block format): {e}"),
        )
    })?;
    if len > max {
        return Err(Refusal::too_large(
            "request_too_large",
            format!(
                "body inflates to {len} bytes; at most {max} are accepted (limits.max_uncompressed_bytes)"
            ),
        ));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| Refusal::invalid("invalid_encoding", format!("body is not valid snappy: {e}")))
}

/// What a write request holds, as series; `skipped` counts non-finite
/// samples (stale markers included) left out.
pub struct RemoteWrite {
    pub converted: Converted<SeriesWrite>,
    pub samples: usize,
    pub stale: u64,
}

pub fn convert(request: WriteRequest, window: TimeWindow, max_labels: usize) -> RemoteWrite {
    let mut out = Converted::default();
    let mut samples = 0;
    let mut stale = 0;
    for ts in request.timeseries {
        samples += ts.samples.len();
        let series_samples = ts.samples.len() as u64;
        let result = (|| {
            let mut metric = None;
            let mut labels = Labels::new();
            for label in ts.labels {
                if label.name == "__name__" {
                    metric = Some(label.value);
                } else if !label.value.is_empty()
                    && labels.insert(label.name.clone(), label.value).is_some()
                {
                    return Err(Refusal::invalid(
                        "invalid_series",
                        format!("label {:?} is given twice in one series", label.name),
                    ));
                }
            }
            let metric = metric.filter(|m| !m.is_empty()).ok_or_else(|| {
                Refusal::invalid("invalid_series", "a series has no __name__ label")
            })?;
            if labels.len() + 1 > max_labels {
                return Err(Refusal::invalid(
                    "too_many_labels",
                    format!(
                        "series {metric} has {} labels; at most {max_labels} are accepted (limits.max_labels_per_series)",
                        labels.len() + 1
                    ),
                ));
            }
            let mut kept = Vec::with_capacity(ts.samples.len());
            for s in ts.samples {
                if !s.value.is_finite() {
                    stale += 1;
                    continue;
                }
                window.check_ms(s.timestamp)?;
                kept.push(Sample {
                    timestamp_ms: s.timestamp,
                    value: s.value,
                });
            }
            let series = SeriesWrite {
                metric,
                labels,
                samples: kept,
            };
            series
                .validate()
                .map_err(|e| Refusal::invalid("invalid_series", e.to_string()))?;
            Ok(series)
        })();
        match result {
            Ok(series) if series.samples.is_empty() => {}
            Ok(series) => out.items.push(series),
            Err(refusal) => {
                // one refusal per sample of the series, for the counters
                for _ in 0..series_samples.max(1) {
                    out.reject(refusal.clone());
                }
            }
        }
    }
    RemoteWrite {
        converted: out,
        samples,
        stale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| PromSample { value, timestamp })
                .collect(),
        }
    }

    fn window() -> TimeWindow {
        TimeWindow {
            oldest_ms: 1_000,
            newest_ms: 1_000_000,
        }
    }

    #[test]
    fn series_samples_and_refusals() {
        let request = WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "up"), ("job", "node")],
                    &[(2_000, 1.0), (3_000, f64::from_bits(STALE_NAN))],
                ),
                series(&[("job", "nameless")], &[(2_000, 1.0)]),
                series(&[("__name__", "old")], &[(10, 1.0), (20, 2.0)]),
                series(&[("__name__", "bad-name")], &[(2_000, 1.0)]),
                series(&[("__name__", "empty_label"), ("x", "")], &[(2_000, 5.0)]),
            ],
        };
        let out = convert(request, window(), 40);
        assert_eq!(out.samples, 7);
        assert_eq!(out.stale, 1);
        assert_eq!(out.converted.rejected, 4);
        assert_eq!(
            out.converted.first_refusal.as_ref().unwrap().reason,
            "invalid_series"
        );
        let names: Vec<_> = out
            .converted
            .items
            .iter()
            .map(|s| s.metric.as_str())
            .collect();
        assert_eq!(names, ["up", "empty_label"]);
        assert_eq!(out.converted.items[0].labels["job"], "node");
        assert!(out.converted.items[1].labels.is_empty());
    }

    #[test]
    fn snappy_round_trip_and_bombs() {
        let request = WriteRequest {
            timeseries: vec![series(&[("__name__", "up")], &[(2_000, 1.0)])],
        };
        let raw = request.encode_to_vec();
        let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        assert_eq!(decompress(&body, 1 << 20).unwrap(), raw);
        assert_eq!(
            decompress(&body, 4).unwrap_err().reason,
            "request_too_large"
        );
        assert_eq!(
            decompress(b"\xff\xff\xff\xff\xff", 1 << 20)
                .unwrap_err()
                .reason,
            "invalid_encoding"
        );
        let zeros = vec![0u8; 1 << 20];
        let bomb = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        assert!(bomb.len() < 100_000);
        assert_eq!(
            decompress(&bomb, 1 << 16).unwrap_err().kind,
            crate::gate::RefusalKind::TooLarge
        );
    }
}
