//! PromQL functions (float samples; native histograms are not stored).

use std::sync::Arc;

use promql_parser::{
    label::{METRIC_NAME, MatchOp},
    parser::{Call, Expr},
};
use vigil_storage::Sample;

use super::{
    aggregate::quantile,
    eval::{Ctx, Element, Labels, Memo, QueryError, RangeSeries, Result, Value, check_unique},
};

fn bad(message: impl Into<String>) -> QueryError {
    QueryError::BadData(message.into())
}

fn scalar(v: &Value, what: &str) -> Result<f64> {
    match v {
        Value::Scalar(s) => Ok(*s),
        other => Err(bad(format!(
            "{what}: expected a scalar, got {}",
            other.type_name()
        ))),
    }
}

fn string(v: &Value, what: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(bad(format!(
            "{what}: expected a string, got {}",
            other.type_name()
        ))),
    }
}

fn vector(v: Value, what: &str) -> Result<Vec<Element>> {
    match v {
        Value::Vector(e) => Ok(e),
        other => Err(bad(format!(
            "{what}: expected an instant vector, got {}",
            other.type_name()
        ))),
    }
}

fn matrix(v: Value, what: &str) -> Result<(Vec<RangeSeries>, i64, i64)> {
    match v {
        Value::Matrix { series, start, end } => Ok((series, start, end)),
        other => Err(bad(format!(
            "{what}: expected a range vector, got {}",
            other.type_name()
        ))),
    }
}

/// Applies `f` to every element's value; the metric name is dropped.
fn map_values(memo: &Memo, elements: Vec<Element>, f: impl Fn(f64) -> f64) -> Vec<Element> {
    elements
        .into_iter()
        .map(|e| Element {
            labels: memo.drop_name(&e.labels),
            t: e.t,
            v: f(e.v),
        })
        .collect()
}

/// Applies `f` to every series of a range vector that has samples; the
/// metric name is dropped unless `keep_name`.
fn over_time(
    memo: &Memo,
    series: Vec<RangeSeries>,
    ts: i64,
    keep_name: bool,
    f: impl Fn(&[Sample]) -> Option<f64>,
) -> Vec<Element> {
    series
        .into_iter()
        .filter_map(|s| {
            let v = f(s.samples())?;
            let labels = if keep_name {
                s.labels
            } else {
                memo.drop_name(&s.labels)
            };
            Some(Element { labels, t: ts, v })
        })
        .collect()
}

/// Prometheus' extrapolated rate, increase and delta.
fn extrapolated(
    samples: &[Sample],
    start: i64,
    end: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let mut result = last.value - first.value;
    if counter {
        let mut previous = 0.0;
        for s in samples {
            if s.value < previous {
                result += previous;
            }
            previous = s.value;
        }
    }
    let mut to_start = (first.timestamp_ms - start) as f64 / 1e3;
    let to_end = (end - last.timestamp_ms) as f64 / 1e3;
    let sampled = (last.timestamp_ms - first.timestamp_ms) as f64 / 1e3;
    let average = sampled / (samples.len() - 1) as f64;
    if counter && result > 0.0 && first.value >= 0.0 {
        let to_zero = sampled * (first.value / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    result *= interval / sampled;
    if rate {
        result /= (end - start) as f64 / 1e3;
    }
    Some(result)
}

/// irate and idelta: from the last two samples.
fn instant_delta(samples: &[Sample], rate: bool) -> Option<f64> {
    let [.., previous, last] = samples else {
        return None;
    };
    let mut result = last.value - previous.value;
    if rate && last.value < previous.value {
        result = last.value;
    }
    let interval = last.timestamp_ms - previous.timestamp_ms;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1e3;
    }
    Some(result)
}

/// Least-squares slope and intercept, x in seconds from `intercept_ms`.
fn linear_regression(samples: &[Sample], intercept_ms: i64) -> (f64, f64) {
    let first = samples[0].value;
    if samples.iter().all(|s| s.value == first) {
        if first.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, first);
    }
    let (mut n, mut sx, mut sy, mut sxy, mut sx2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for s in samples {
        let x = (s.timestamp_ms - intercept_ms) as f64 / 1e3;
        n += 1.0;
        sx += x;
        sy += s.value;
        sxy += x * s.value;
        sx2 += x * x;
    }
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn values(samples: &[Sample]) -> impl Iterator<Item = f64> + '_ {
    samples.iter().map(|s| s.value)
}

fn variance(samples: &[Sample]) -> f64 {
    let (mut count, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for v in values(samples) {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        m2 += delta * (v - mean);
    }
    m2 / count
}

/// Calendar parts of a time in seconds, in UTC.
fn calendar(seconds: f64, part: &str) -> f64 {
    use chrono::{Datelike, Timelike};
    let Some(t) = chrono::DateTime::from_timestamp(seconds.floor() as i64, 0) else {
        return f64::NAN;
    };
    let v = match part {
        "year" => t.year() as u32,
        "month" => t.month(),
        "day_of_month" => t.day(),
        "day_of_week" => t.weekday().num_days_from_sunday(),
        "day_of_year" => t.ordinal(),
        "hour" => t.hour(),
        "minute" => t.minute(),
        _ => {
            // days_in_month
            let (y, m) = (t.year(), t.month());
            let next = if m == 12 {
                chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
            } else {
                chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
            };
            next.and_then(|n| n.pred_opt()).map_or(0, |d| d.day())
        }
    };
    f64::from(v)
}

/// `histogram_quantile` over one group of classic buckets.
pub fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound are summed.
    buckets.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 += later.1;
            true
        } else {
            false
        }
    });
    // Counts must not fall as bounds rise.
    let mut max = f64::NEG_INFINITY;
    for b in buckets.iter_mut() {
        if b.1 > max {
            max = b.1;
        } else {
            b.1 = max;
        }
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets[..buckets.len() - 1].partition_point(|b| b.1 < rank);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Labels `absent()` gives: the equality matchers of a selector argument.
fn absent_labels(arg: &Expr) -> Labels {
    let vs = match arg {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    let mut labels = Labels::new();
    let mut seen = std::collections::HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        // A label matched for equality twice is left out.
        if !seen.insert(m.name.clone()) {
            labels.remove(&m.name);
            continue;
        }
        if matches!(m.op, MatchOp::Equal) {
            labels.insert(m.name.clone(), m.value.clone());
        }
    }
    labels
}

/// `e` with label `dst` set to `value`, or without it when `value` is empty.
fn set_label(e: Element, dst: &str, value: String) -> Element {
    let mut labels = (*e.labels).clone();
    if value.is_empty() {
        labels.remove(dst);
    } else {
        labels.insert(dst.to_owned(), value);
    }
    Element {
        labels: Arc::new(labels),
        ..e
    }
}

/// Expands `$1`, `${1}`, `$name` and `${name}` in a replacement.
fn expand(replacement: &str, captures: &regex::Captures<'_>) -> String {
    let mut out = String::new();
    captures.expand(replacement, &mut out);
    out
}

pub fn call(ctx: &Ctx, call: &Call, ts: i64) -> Result<Value> {
    let name = call.func.name;
    let args = &call.args.args;
    let arg = |i: usize| -> Result<Value> {
        match args.get(i) {
            Some(a) => ctx.eval(a, ts),
            None => Err(bad(format!("{name}: missing argument {}", i + 1))),
        }
    };
    let time_s = ts as f64 / 1e3;
    let out = match name {
        "time" => return Ok(Value::Scalar(time_s)),
        "pi" => return Ok(Value::Scalar(std::f64::consts::PI)),
        "vector" => {
            let v = scalar(&arg(0)?, name)?;
            vec![Element {
                labels: Arc::default(),
                t: ts,
                v,
            }]
        }
        "scalar" => {
            let v = vector(arg(0)?, name)?;
            return Ok(Value::Scalar(match v.as_slice() {
                [only] => only.v,
                _ => f64::NAN,
            }));
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "acos"
        | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin" | "sinh"
        | "tan" | "tanh" | "deg" | "rad" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sgn" => |v: f64| {
                    if v == 0.0 || v.is_nan() {
                        v
                    } else {
                        v.signum()
                    }
                },
                "acos" => f64::acos,
                "acosh" => f64::acosh,
                "asin" => f64::asin,
                "asinh" => f64::asinh,
                "atan" => f64::atan,
                "atanh" => f64::atanh,
                "cos" => f64::cos,
                "cosh" => f64::cosh,
                "sin" => f64::sin,
                "sinh" => f64::sinh,
                "tan" => f64::tan,
                "tanh" => f64::tanh,
                "deg" => f64::to_degrees,
                _ => f64::to_radians,
            };
            map_values(&ctx.memo, vector(arg(0)?, name)?, f)
        }
        "round" => {
            let to = if args.len() > 1 {
                scalar(&arg(1)?, name)?
            } else {
                1.0
            };
            let inverse = 1.0 / to;
            map_values(&ctx.memo, vector(arg(0)?, name)?, |v| {
                (v * inverse + 0.5).floor() / inverse
            })
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let input = vector(arg(0)?, name)?;
            let (lo, hi) = match name {
                "clamp" => (scalar(&arg(1)?, name)?, scalar(&arg(2)?, name)?),
                "clamp_min" => (scalar(&arg(1)?, name)?, f64::INFINITY),
                _ => (f64::NEG_INFINITY, scalar(&arg(1)?, name)?),
            };
            if name == "clamp" && hi < lo {
                Vec::new()
            } else {
                map_values(&ctx.memo, input, |v| v.max(lo).min(hi))
            }
        }
        "timestamp" => vector(arg(0)?, name)?
            .into_iter()
            .map(|e| Element {
                labels: ctx.memo.drop_name(&e.labels),
                t: ts,
                v: e.t as f64 / 1e3,
            })
            .collect(),
        "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "hour" | "minute"
        | "days_in_month" => {
            if args.is_empty() {
                vec![Element {
                    labels: Arc::default(),
                    t: ts,
                    v: calendar(time_s, name),
                }]
            } else {
                map_values(&ctx.memo, vector(arg(0)?, name)?, |v| calendar(v, name))
            }
        }
        "sort" | "sort_desc" => {
            let mut v = vector(arg(0)?, name)?;
            v.sort_by(|a, b| {
                // NaN last in both orders.
                match (a.v.is_nan(), b.v.is_nan()) {
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if name == "sort" => a.v.total_cmp(&b.v),
                    _ => b.v.total_cmp(&a.v),
                }
            });
            v
        }
        "label_replace" => {
            let input = vector(arg(0)?, name)?;
            let dst = string(&arg(1)?, name)?;
            let replacement = string(&arg(2)?, name)?;
            let src = string(&arg(3)?, name)?;
            let pattern = string(&arg(4)?, name)?;
            let re = regex::Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
                bad(format!(
                    "invalid regular expression in label_replace(): {e}"
                ))
            })?;
            if !vigil_storage::model::is_valid_label_name(&dst) && dst != METRIC_NAME {
                return Err(bad(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let out: Vec<Element> = input
                .into_iter()
                .map(|e| {
                    let source = e.labels.get(&src).map_or("", String::as_str);
                    let Some(captures) = re.captures(source) else {
                        return e;
                    };
                    let value = expand(&replacement, &captures);
                    set_label(e, &dst, value)
                })
                .collect();
            check_unique(&out)?;
            out
        }
        "label_join" => {
            let input = vector(arg(0)?, name)?;
            let dst = string(&arg(1)?, name)?;
            let separator = string(&arg(2)?, name)?;
            let sources = (3..args.len())
                .map(|i| string(&arg(i)?, name))
                .collect::<Result<Vec<_>>>()?;
            if !vigil_storage::model::is_valid_label_name(&dst) && dst != METRIC_NAME {
                return Err(bad(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            input
                .into_iter()
                .map(|e| {
                    let joined = sources
                        .iter()
                        .map(|s| e.labels.get(s).map_or("", String::as_str))
                        .collect::<Vec<_>>()
                        .join(&separator);
                    set_label(e, &dst, joined)
                })
                .collect()
        }
        "histogram_quantile" => {
            let q = scalar(&arg(0)?, name)?;
            let input = vector(arg(1)?, name)?;
            let mut groups: std::collections::BTreeMap<Labels, Vec<(f64, f64)>> =
                Default::default();
            for e in input {
                let Some(le) = e.labels.get("le") else {
                    continue;
                };
                let Ok(bound) = parse_bound(le) else {
                    continue;
                };
                let mut labels = (*e.labels).clone();
                labels.remove("le");
                labels.remove(METRIC_NAME);
                groups.entry(labels).or_default().push((bound, e.v));
            }
            groups
                .into_iter()
                .map(|(labels, mut buckets)| Element {
                    labels: Arc::new(labels),
                    t: ts,
                    v: bucket_quantile(q, &mut buckets),
                })
                .collect()
        }
        "absent" | "absent_over_time" => {
            let present = match arg(0)? {
                Value::Vector(v) => !v.is_empty(),
                Value::Matrix { series, .. } => !series.is_empty(),
                other => return Err(bad(format!("{name}: got a {}", other.type_name()))),
            };
            if present {
                Vec::new()
            } else {
                vec![Element {
                    labels: Arc::new(absent_labels(&args[0])),
                    t: ts,
                    v: 1.0,
                }]
            }
        }
        "rate" | "increase" | "delta" => {
            let (series, start, end) = matrix(arg(0)?, name)?;
            let counter = name != "delta";
            let is_rate = name == "rate";
            over_time(&ctx.memo, series, ts, false, |s| {
                extrapolated(s, start, end, counter, is_rate)
            })
        }
        "irate" | "idelta" => {
            let (series, _, _) = matrix(arg(0)?, name)?;
            let is_rate = name == "irate";
            over_time(&ctx.memo, series, ts, false, |s| instant_delta(s, is_rate))
        }
        "deriv" => {
            let (series, _, _) = matrix(arg(0)?, name)?;
            over_time(&ctx.memo, series, ts, false, |s| {
                (s.len() >= 2).then(|| linear_regression(s, s[0].timestamp_ms).0)
            })
        }
        "predict_linear" => {
            let (series, _, _) = matrix(arg(0)?, name)?;
            let duration = scalar(&arg(1)?, name)?;
            over_time(&ctx.memo, series, ts, false, |s| {
                (s.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(s, ts);
                    intercept + slope * duration
                })
            })
        }
        "holt_winters" | "double_exponential_smoothing" => {
            let (series, _, _) = matrix(arg(0)?, name)?;
            let sf = scalar(&arg(1)?, name)?;
            let tf = scalar(&arg(2)?, name)?;
            if !(sf > 0.0 && sf < 1.0) {
                return Err(bad(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                )));
            }
            if !(tf > 0.0 && tf < 1.0) {
                return Err(bad(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
                )));
            }
            over_time(&ctx.memo, series, ts, false, |s| holt_winters(s, sf, tf))
        }
        "changes" | "resets" => {
            let (series, _, _) = matrix(arg(0)?, name)?;
            let resets = name == "resets";
            over_time(&ctx.memo, series, ts, false, |s| {
                Some(
                    s.windows(2)
                        .filter(|w| {
                            let (a, b) = (w[0].value, w[1].value);
                            if resets {
                                b < a
                            } else {
                                a != b && !(a.is_nan() && b.is_nan())
                            }
                        })
                        .count() as f64,
                )
            })
        }
        "avg_over_time" | "sum_over_time" | "count_over_time" | "min_over_time"
        | "max_over_time" | "stddev_over_time" | "stdvar_over_time" | "last_over_time"
        | "present_over_time" => {
            let (series, _, _) = matrix(arg(0)?, name)?;
            over_time(&ctx.memo, series, ts, name == "last_over_time", |s| {
                let n = s.len() as f64;
                Some(match name {
                    "avg_over_time" => values(s).sum::<f64>() / n,
                    "sum_over_time" => values(s).sum(),
                    "count_over_time" => n,
                    "min_over_time" => {
                        values(s).fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m })
                    }
                    "max_over_time" => {
                        values(s).fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m })
                    }
                    "stddev_over_time" => variance(s).sqrt(),
                    "stdvar_over_time" => variance(s),
                    "last_over_time" => s[s.len() - 1].value,
                    _ => 1.0,
                })
            })
        }
        "quantile_over_time" => {
            let q = scalar(&arg(0)?, name)?;
            let (series, _, _) = matrix(arg(1)?, name)?;
            over_time(&ctx.memo, series, ts, false, |s| {
                Some(quantile(q, &mut values(s).collect::<Vec<_>>()))
            })
        }
        other => {
            return Err(bad(format!("function {other}() is not supported by Vigil")));
        }
    };
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

/// A bucket bound as Prometheus parses it (`+Inf`, `1e3`, `0.5`).
pub fn parse_bound(le: &str) -> Result<f64, std::num::ParseFloatError> {
    match le {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        other => other.parse(),
    }
}

/// Double exponential smoothing (Prometheus' `holt_winters`).
fn holt_winters(samples: &[Sample], sf: f64, tf: f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (mut previous, mut smoothed) = (0.0, samples[0].value);
    let mut trend = samples[1].value - samples[0].value;
    for (i, s) in samples.iter().enumerate().skip(1) {
        if i > 1 {
            trend = tf * (smoothed - previous) + (1.0 - tf) * trend;
        }
        let next = sf * s.value + (1.0 - sf) * (smoothed + trend);
        previous = smoothed;
        smoothed = next;
    }
    Some(smoothed)
}
