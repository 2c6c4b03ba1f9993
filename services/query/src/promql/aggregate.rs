//! Aggregation operators: sum, avg, min, max, count, group, stddev, stdvar,
//! topk, bottomk, quantile, count_values.

use std::{collections::BTreeMap, sync::Arc};

use promql_parser::{
    label::METRIC_NAME,
    parser::{AggregateExpr, LabelModifier, token},
};

use super::eval::{Element, Labels, Memo, QueryError, Result, Value, format_value};

/// The labels a group is known by: `by` keeps the listed labels, `without`
/// drops them and the metric name, no clause drops everything.
fn group_labels(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        None => Labels::new(),
        Some(LabelModifier::Include(keep)) => labels
            .iter()
            .filter(|(k, _)| keep.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(drop)) => labels
            .iter()
            .filter(|(k, _)| *k != METRIC_NAME && !drop.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// `q`-quantile of `values` by linear interpolation between closest ranks.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

fn scalar_param(param: Option<Value>, op: &str) -> Result<f64> {
    match param {
        Some(Value::Scalar(v)) => Ok(v),
        _ => Err(QueryError::BadData(format!(
            "{op} needs a scalar parameter"
        ))),
    }
}

pub fn apply(
    a: &AggregateExpr,
    param: Option<Value>,
    input: Value,
    ts: i64,
    memo: &Memo,
) -> Result<Value> {
    let Value::Vector(input) = input else {
        return Err(QueryError::BadData(format!(
            "aggregation needs an instant vector, got {}",
            input.type_name()
        )));
    };
    let op = a.op.id();
    let modifier = a.modifier.as_ref();
    let node = std::ptr::from_ref(a) as usize;
    // Group labels come interned from the memo: equal ones share an address.
    let mut index: std::collections::HashMap<usize, usize, foldhash::fast::RandomState> =
        Default::default();
    let mut groups: Vec<(Arc<Labels>, Vec<Element>)> = Vec::new();
    for e in input {
        let key = memo.derive(&e.labels, node, |l| group_labels(l, modifier));
        let at = *index.entry(Arc::as_ptr(&key) as usize).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(e);
    }
    let mut out = Vec::new();
    let mut emit = |labels: Labels, v: f64| {
        out.push(Element {
            labels: Arc::new(labels),
            t: ts,
            v,
        })
    };
    match op {
        token::T_TOPK | token::T_BOTTOMK => {
            let k = scalar_param(param, "topk/bottomk")?;
            if k.is_nan() || k < 1.0 {
                return Ok(Value::Vector(Vec::new()));
            }
            let mut kept = Vec::new();
            for (_, mut elements) in groups {
                // NaN is never preferred.
                elements.sort_by(|x, y| match (x.v.is_nan(), y.v.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if op == token::T_TOPK => y.v.total_cmp(&x.v),
                    _ => x.v.total_cmp(&y.v),
                });
                elements.truncate(k.min(elements.len() as f64) as usize);
                kept.extend(elements.into_iter().map(|e| Element { t: ts, ..e }));
            }
            return Ok(Value::Vector(kept));
        }
        token::T_COUNT_VALUES => {
            let label = match param {
                Some(Value::String(s)) => s,
                _ => {
                    return Err(QueryError::BadData(
                        "count_values needs a string parameter".into(),
                    ));
                }
            };
            if !vigil_storage::model::is_valid_label_name(&label) {
                return Err(QueryError::Execution(format!(
                    "invalid label name {label:?}"
                )));
            }
            let mut counts: BTreeMap<Labels, f64> = BTreeMap::new();
            for (key, elements) in groups {
                let mut key = (*key).clone();
                for e in elements {
                    key.insert(label.clone(), format_value(e.v));
                    *counts.entry(key.clone()).or_default() += 1.0;
                }
            }
            for (labels, count) in counts {
                emit(labels, count);
            }
            return Ok(Value::Vector(out));
        }
        _ => {}
    }
    let q = if op == token::T_QUANTILE {
        Some(scalar_param(param, "quantile")?)
    } else {
        None
    };
    for (labels, elements) in groups {
        let values = || elements.iter().map(|e| e.v);
        let n = elements.len() as f64;
        let v = match op {
            token::T_SUM => values().sum(),
            token::T_AVG => values().sum::<f64>() / n,
            token::T_COUNT => n,
            token::T_GROUP => 1.0,
            token::T_MIN => values().fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m }),
            token::T_MAX => values().fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m }),
            token::T_STDDEV | token::T_STDVAR => {
                let (mut count, mut mean, mut m2) = (0.0, 0.0, 0.0);
                for v in values() {
                    count += 1.0;
                    let delta = v - mean;
                    mean += delta / count;
                    m2 += delta * (v - mean);
                }
                let var = m2 / count;
                if op == token::T_STDDEV {
                    var.sqrt()
                } else {
                    var
                }
            }
            token::T_QUANTILE => quantile(q.unwrap_or(f64::NAN), &mut values().collect::<Vec<_>>()),
            other => {
                return Err(QueryError::BadData(format!(
                    "aggregation {} is not supported",
                    token::TokenType::new(other)
                )));
            }
        };
        out.push(Element { labels, t: ts, v });
    }
    Ok(Value::Vector(out))
}
