//! Binary operators: arithmetic, comparisons (filtering or `bool`) and the
//! set operators, with Prometheus' vector matching (`on`, `ignoring`,
//! `group_left`, `group_right`).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use promql_parser::{
    label::METRIC_NAME,
    parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality, token},
};

use super::eval::{Element, Labels, Memo, QueryError, Result, Value};

fn is_comparison(op: u16) -> bool {
    matches!(
        op,
        token::T_EQLC | token::T_NEQ | token::T_GTR | token::T_LSS | token::T_GTE | token::T_LTE
    )
}

/// `lhs op rhs`: the value, and for comparisons whether it holds (a
/// comparison's value is the left-hand side).
fn operate(op: u16, lhs: f64, rhs: f64) -> Result<(f64, bool)> {
    Ok(match op {
        token::T_ADD => (lhs + rhs, true),
        token::T_SUB => (lhs - rhs, true),
        token::T_MUL => (lhs * rhs, true),
        token::T_DIV => (lhs / rhs, true),
        token::T_MOD => (lhs % rhs, true),
        token::T_POW => (lhs.powf(rhs), true),
        token::T_ATAN2 => (lhs.atan2(rhs), true),
        token::T_EQLC => (lhs, lhs == rhs),
        token::T_NEQ => (lhs, lhs != rhs),
        token::T_GTR => (lhs, lhs > rhs),
        token::T_LSS => (lhs, lhs < rhs),
        token::T_GTE => (lhs, lhs >= rhs),
        token::T_LTE => (lhs, lhs <= rhs),
        other => {
            return Err(QueryError::BadData(format!(
                "operator {} is not defined between these operands",
                token::TokenType::new(other)
            )));
        }
    })
}

pub fn apply(b: &BinaryExpr, lhs: Value, rhs: Value, ts: i64, memo: &Memo) -> Result<Value> {
    let op = b.op.id();
    let modifier = b.modifier.as_ref();
    if modifier.is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some()) {
        return Err(QueryError::BadData(
            "fill modifiers on binary operators are not supported".into(),
        ));
    }
    let return_bool = modifier.is_some_and(|m| m.return_bool);
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (v, keep) = operate(op, l, r)?;
            Ok(Value::Scalar(if is_comparison(op) {
                f64::from(u8::from(keep))
            } else {
                v
            }))
        }
        (Value::Vector(l), Value::Scalar(r)) => vector_scalar(op, l, r, false, return_bool, memo),
        (Value::Scalar(l), Value::Vector(r)) => vector_scalar(op, r, l, true, return_bool, memo),
        (Value::Vector(l), Value::Vector(r)) => {
            let node = std::ptr::from_ref(b) as usize;
            vector_vector(op, l, r, modifier, return_bool, ts, (memo, node))
        }
        (l, r) => Err(QueryError::BadData(format!(
            "binary operator {} is not defined between {} and {}",
            b.op,
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn drops_name(op: u16, return_bool: bool) -> bool {
    return_bool || !is_comparison(op)
}

/// A vector and a scalar; `swapped` when the scalar was on the left.
fn vector_scalar(
    op: u16,
    vector: Vec<Element>,
    scalar: f64,
    swapped: bool,
    return_bool: bool,
    memo: &Memo,
) -> Result<Value> {
    let mut out = Vec::with_capacity(vector.len());
    for e in vector {
        let (l, r) = if swapped {
            (scalar, e.v)
        } else {
            (e.v, scalar)
        };
        let (mut v, keep) = operate(op, l, r)?;
        if is_comparison(op) {
            // The vector's value survives a filter whichever side it is on.
            v = e.v;
        }
        if return_bool {
            v = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let labels = if drops_name(op, return_bool) {
            memo.drop_name(&e.labels)
        } else {
            e.labels
        };
        out.push(Element { labels, t: e.t, v });
    }
    Ok(Value::Vector(out))
}

/// The labels two elements are matched on.
fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| match matching {
            Some(LabelModifier::Include(on)) => on.labels.iter().any(|l| l == *k),
            Some(LabelModifier::Exclude(ignoring)) => {
                *k != METRIC_NAME && !ignoring.labels.iter().any(|l| l == *k)
            }
            None => *k != METRIC_NAME,
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn vector_vector(
    op: u16,
    lhs: Vec<Element>,
    rhs: Vec<Element>,
    modifier: Option<&BinModifier>,
    return_bool: bool,
    ts: i64,
    (memo, node): (&Memo, usize),
) -> Result<Value> {
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let signature =
        |labels: &std::sync::Arc<Labels>| memo.derive(labels, node, |l| signature(l, matching));
    let card = modifier.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
    match op {
        token::T_LAND | token::T_LUNLESS => {
            let right: HashSet<_> = rhs.iter().map(|e| signature(&e.labels)).collect();
            let keep_matched = op == token::T_LAND;
            return Ok(Value::Vector(
                lhs.into_iter()
                    .filter(|e| right.contains(&signature(&e.labels)) == keep_matched)
                    .collect(),
            ));
        }
        token::T_LOR => {
            let left: HashSet<_> = lhs.iter().map(|e| signature(&e.labels)).collect();
            let mut out = lhs;
            out.extend(
                rhs.into_iter()
                    .filter(|e| !left.contains(&signature(&e.labels))),
            );
            return Ok(Value::Vector(out));
        }
        _ => {}
    }
    // The "many" side is iterated, the "one" side looked up.
    let (many, one, swapped, include) = match card {
        VectorMatchCardinality::OneToMany(include) => (rhs, lhs, true, Some(include)),
        VectorMatchCardinality::ManyToOne(include) => (lhs, rhs, false, Some(include)),
        _ => (lhs, rhs, false, None),
    };
    let mut one_by_sig: HashMap<Arc<Labels>, Element> = HashMap::new();
    for e in one {
        let sig = signature(&e.labels);
        if one_by_sig.contains_key(&sig) {
            let side = if swapped { "left" } else { "right" };
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: \
                 many-to-many matching not allowed: matching labels must be unique on one side",
                format_labels(&sig)
            )));
        }
        one_by_sig.insert(sig, e);
    }
    let mut matched: HashSet<Arc<Labels>> = HashSet::new();
    let mut produced: HashSet<Arc<Labels>> = HashSet::new();
    let mut out = Vec::new();
    for e in many {
        let sig = signature(&e.labels);
        let Some(other) = one_by_sig.get(&sig) else {
            continue;
        };
        let (l, r) = if swapped {
            (other.v, e.v)
        } else {
            (e.v, other.v)
        };
        let (mut v, keep) = operate(op, l, r)?;
        if return_bool {
            v = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let mut labels = (*e.labels).clone();
        if drops_name(op, return_bool) {
            labels.remove(METRIC_NAME);
        }
        match (include, matching) {
            (None, Some(LabelModifier::Include(on))) => {
                labels.retain(|k, _| on.labels.iter().any(|l| l == k));
            }
            (None, Some(LabelModifier::Exclude(ignoring))) => {
                labels.retain(|k, _| !ignoring.labels.iter().any(|l| l == k));
            }
            (Some(include), _) => {
                for name in &include.labels {
                    match other.labels.get(name) {
                        Some(value) if !value.is_empty() => {
                            labels.insert(name.clone(), value.clone());
                        }
                        _ => {
                            labels.remove(name);
                        }
                    }
                }
            }
            (None, None) => {}
        }
        if include.is_none() && !matched.insert(sig) {
            return Err(QueryError::Execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                    .into(),
            ));
        }
        let labels = Arc::new(labels);
        if include.is_some() && !produced.insert(labels.clone()) {
            return Err(QueryError::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        out.push(Element { labels, t: ts, v });
    }
    Ok(Value::Vector(out))
}

fn format_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}
