//! Evaluating PromQL over the store with Prometheus 2.x semantics: an
//! instant vector selector takes the newest sample in the lookback window
//! (both ends included), a range selector every sample in `[t - range, t]`,
//! subquery steps are aligned to multiples of their step.
//!
//! A query runs in two phases: first every selector's series are read once
//! for the whole time span the query needs (so a range query costs one
//! storage read per selector, not one per step), then the expression is
//! evaluated step by step in memory.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::SystemTime,
};

use promql_parser::{
    label::{METRIC_NAME, MatchOp},
    parser::{AtModifier, Expr, Offset, VectorSelector, value::ValueType},
};
use vigil_storage::{Matcher, MatcherOp, Sample, SeriesSelector, StorageError, TelemetryStore};

use super::{aggregate, binary, functions, parse::ParseError};

/// Label names and values, the metric name as `__name__`.
pub type Labels = BTreeMap<String, String>;

/// One element of an instant vector. `t` is the sample's own timestamp for
/// raw selectors (what `timestamp()` reads), else the evaluation time.
#[derive(Debug, Clone)]
pub struct Element {
    pub labels: Arc<Labels>,
    pub t: i64,
    pub v: f64,
}

/// One series of a range vector or of a range query's result. A range
/// vector's window shares the samples read from storage: a range query
/// takes a window of every series at every step without copying.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Arc<Labels>,
    samples: Arc<[Sample]>,
    from: usize,
    to: usize,
}

impl RangeSeries {
    pub fn new(labels: Arc<Labels>, samples: Vec<Sample>) -> Self {
        let to = samples.len();
        Self {
            labels,
            samples: samples.into(),
            from: 0,
            to,
        }
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples[self.from..self.to]
    }
}

#[derive(Debug, Clone)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Element>),
    /// A range vector over `[start, end]` (both in ms).
    Matrix {
        series: Vec<RangeSeries>,
        start: i64,
        end: i64,
    },
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix { .. } => "matrix",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Bad parameters or an expression of the wrong type.
    #[error("{0}")]
    BadData(String),
    /// The query is valid but cannot be evaluated on this data.
    #[error("{0}")]
    Execution(String),
    /// A limit on series, samples, points or time range.
    #[error("{0}")]
    Limit(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// What one query may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Series read from storage, over all selectors.
    pub max_series: usize,
    /// Samples read from storage plus points produced, over the query.
    pub max_samples: usize,
    /// Steps of a range query (Prometheus: 11 000).
    pub max_steps: usize,
    /// Longest time span a query may read.
    pub max_range_ms: i64,
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    pub lookback_ms: i64,
    /// Step of a subquery that names none (Prometheus: the global
    /// evaluation interval, 1m by default).
    pub subquery_step_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_series: 10_000,
            max_samples: 50_000_000,
            max_steps: 11_000,
            max_range_ms: 31 * 86_400_000,
            lookback_ms: 300_000,
            subquery_step_ms: 60_000,
        }
    }
}

/// One series as read from storage, with `__name__` among its labels.
#[derive(Debug)]
struct Loaded {
    labels: Arc<Labels>,
    samples: Arc<[Sample]>,
}

/// An instant query's answer at `time`.
pub async fn instant(
    store: &dyn TelemetryStore,
    project: &str,
    expr: &Expr,
    time: i64,
    limits: &Limits,
) -> Result<Value> {
    check_time(time)?;
    let ctx = Ctx::load(store, project, expr, time, time, limits).await?;
    let value = ctx.eval(expr, time)?;
    if let Value::Vector(v) = &value {
        check_unique(v)?;
    }
    Ok(value)
}

/// A range query's answer: one series per label set, points at every step
/// from `start` to `end` where the expression had a value.
pub async fn range(
    store: &dyn TelemetryStore,
    project: &str,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    limits: &Limits,
) -> Result<Vec<RangeSeries>> {
    match expr.value_type() {
        ValueType::Vector | ValueType::Scalar => {}
        other => {
            return Err(QueryError::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                type_label(other)
            )));
        }
    }
    if step <= 0 {
        return Err(QueryError::BadData(
            "zero or negative query resolution step widths are not accepted. Try a positive integer"
                .into(),
        ));
    }
    if end < start {
        return Err(QueryError::BadData(
            "end timestamp must not be before start time".into(),
        ));
    }
    check_time(start)?;
    check_time(end)?;
    let steps = (end.saturating_sub(start) / step).saturating_add(1);
    if steps as u64 > limits.max_steps as u64 {
        return Err(QueryError::Limit(format!(
            "exceeded maximum resolution of {} points per timeseries: this query has {steps}. \
             Try decreasing the query resolution (?step=XX)",
            limits.max_steps
        )));
    }
    let ctx = Ctx::load(store, project, expr, start, end, limits).await?;
    let mut out: BTreeMap<Arc<Labels>, Vec<Sample>> = BTreeMap::new();
    let mut points = ctx.loaded_samples;
    let mut ts = start;
    while ts <= end {
        ctx.memo.trim();
        match ctx.eval(expr, ts)? {
            Value::Scalar(v) => out.entry(Arc::default()).or_default().push(Sample {
                timestamp_ms: ts,
                value: v,
            }),
            Value::Vector(elements) => {
                check_unique(&elements)?;
                points += elements.len();
                for e in elements {
                    out.entry(e.labels).or_default().push(Sample {
                        timestamp_ms: ts,
                        value: e.v,
                    });
                }
            }
            other => {
                return Err(QueryError::BadData(format!(
                    "a range query needs a scalar or an instant vector, got {}",
                    other.type_name()
                )));
            }
        }
        if points > limits.max_samples {
            return Err(too_many_samples(limits));
        }
        ts += step;
    }
    Ok(out
        .into_iter()
        .map(|(labels, samples)| RangeSeries::new(labels, samples))
        .collect())
}

/// Refuses a query time beyond what time arithmetic can hold.
fn check_time(t: i64) -> Result<()> {
    if t.unsigned_abs() > MAX_QUERY_MS.unsigned_abs() {
        return Err(QueryError::BadData(format!(
            "time {t} ms is outside the range a query may use (±{MAX_QUERY_MS} ms)"
        )));
    }
    Ok(())
}

fn too_many_samples(limits: &Limits) -> QueryError {
    QueryError::Limit(format!(
        "query processing would load too many samples into memory (more than {})",
        limits.max_samples
    ))
}

pub fn type_label(t: ValueType) -> &'static str {
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    }
}

/// Refuses an instant vector holding one label set twice.
pub fn check_unique(elements: &[Element]) -> Result<()> {
    let mut seen: HashSet<&Labels, foldhash::fast::RandomState> =
        HashSet::with_capacity_and_hasher(elements.len(), Default::default());
    for e in elements {
        if !seen.insert(&*e.labels) {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

/// The evaluation context: the query's times, limits and loaded series.
pub struct Ctx {
    start: i64,
    end: i64,
    pub limits: Limits,
    /// Series per selector node (by the node's address in the expression
    /// being evaluated), shared by the nodes with the same matchers.
    data: HashMap<usize, Arc<Vec<Loaded>>>,
    loaded_samples: usize,
    pub memo: Memo,
}

/// What storage must return for one selector (offset and `@` removed).
struct Needed {
    selector: VectorSelector,
    min: i64,
    max: i64,
    /// Addresses of the selector nodes in the expression that read it.
    nodes: Vec<usize>,
}

/// Largest duration or time (ms) taken from a query, about 31 700 years:
/// larger ones are clamped, so that time arithmetic cannot overflow (the
/// range limit then refuses such a query).
const MAX_QUERY_MS: i64 = 1_000_000_000_000_000;

/// A duration of the query in ms, clamped to [`MAX_QUERY_MS`].
fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).map_or(MAX_QUERY_MS, |v| v.min(MAX_QUERY_MS))
}

fn offset_ms(offset: Option<&Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => ms(*d),
        Some(Offset::Neg(d)) => -ms(*d),
    }
}

fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

/// A selector's identity for loading: matchers only.
fn selector_key(vs: &VectorSelector) -> String {
    let mut bare = vs.clone();
    bare.offset = None;
    bare.at = None;
    bare.to_string()
}

impl Ctx {
    async fn load(
        store: &dyn TelemetryStore,
        project: &str,
        expr: &Expr,
        start: i64,
        end: i64,
        limits: &Limits,
    ) -> Result<Self> {
        let mut ctx = Self {
            start,
            end,
            limits: *limits,
            data: HashMap::new(),
            loaded_samples: 0,
            memo: Memo::default(),
        };
        let mut needed = HashMap::new();
        ctx.collect(expr, start, end, &mut needed)?;
        let mut series_count = 0usize;
        for need in needed.into_values() {
            if need.max - need.min > limits.max_range_ms {
                return Err(QueryError::Limit(format!(
                    "the query reads {} of {}; at most {} may be read",
                    humantime::format_duration(std::time::Duration::from_millis(
                        (need.max - need.min).unsigned_abs()
                    )),
                    need.selector,
                    humantime::format_duration(std::time::Duration::from_millis(
                        limits.max_range_ms.unsigned_abs()
                    )),
                )));
            }
            let loaded = read_selector(store, project, &need).await?;
            series_count += loaded.len();
            ctx.loaded_samples += loaded.iter().map(|s| s.samples.len()).sum::<usize>();
            if series_count > limits.max_series {
                return Err(QueryError::Limit(format!(
                    "the query selects more than {} series; narrow its label matchers",
                    limits.max_series
                )));
            }
            if ctx.loaded_samples > limits.max_samples {
                return Err(too_many_samples(limits));
            }
            let loaded = Arc::new(loaded);
            for node in need.nodes {
                ctx.data.insert(node, loaded.clone());
            }
        }
        Ok(ctx)
    }

    /// The evaluation time of a selector or subquery evaluated at `ts`.
    fn effective(&self, at: Option<&AtModifier>, offset: Option<&Offset>, ts: i64) -> i64 {
        let base = match at {
            None => ts,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(t)) => system_time_ms(*t),
        };
        base - offset_ms(offset)
    }

    /// The evaluation times `[lo, hi]` of a node with `at`/`offset` whose
    /// parent is evaluated over `[lo, hi]`.
    fn effective_span(
        &self,
        at: Option<&AtModifier>,
        offset: Option<&Offset>,
        lo: i64,
        hi: i64,
    ) -> (i64, i64) {
        (
            self.effective(at, offset, lo),
            self.effective(at, offset, hi),
        )
    }

    /// Records the time span every selector is read over when `expr` is
    /// evaluated at times in `[lo, hi]`.
    fn collect(
        &self,
        expr: &Expr,
        lo: i64,
        hi: i64,
        out: &mut HashMap<String, Needed>,
    ) -> Result<()> {
        let mut need = |vs: &VectorSelector, back: i64| {
            let (a, b) = self.effective_span(vs.at.as_ref(), vs.offset.as_ref(), lo, hi);
            let (min, max) = (a.min(b) - back, a.max(b));
            let entry = out.entry(selector_key(vs)).or_insert_with(|| Needed {
                selector: vs.clone(),
                min,
                max,
                nodes: Vec::new(),
            });
            entry.min = entry.min.min(min);
            entry.max = entry.max.max(max);
            entry.nodes.push(std::ptr::from_ref(vs) as usize);
        };
        match expr {
            Expr::VectorSelector(vs) => need(vs, self.limits.lookback_ms),
            Expr::MatrixSelector(m) => need(&m.vs, ms(m.range)),
            Expr::Subquery(sq) => {
                let (a, b) = self.effective_span(sq.at.as_ref(), sq.offset.as_ref(), lo, hi);
                let range = ms(sq.range);
                self.collect(&sq.expr, a.min(b) - range, a.max(b), out)?;
            }
            Expr::Aggregate(a) => {
                self.collect(&a.expr, lo, hi, out)?;
                if let Some(p) = &a.param {
                    self.collect(p, lo, hi, out)?;
                }
            }
            Expr::Unary(u) => self.collect(&u.expr, lo, hi, out)?,
            Expr::Paren(p) => self.collect(&p.expr, lo, hi, out)?,
            Expr::Binary(b) => {
                self.collect(&b.lhs, lo, hi, out)?;
                self.collect(&b.rhs, lo, hi, out)?;
            }
            Expr::Call(c) => {
                for arg in &c.args.args {
                    self.collect(arg, lo, hi, out)?;
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
            Expr::Extension(_) => {
                return Err(QueryError::BadData(
                    "extension expressions are not supported".into(),
                ));
            }
        }
        Ok(())
    }

    /// Evaluates `expr` at `ts` (ms).
    pub fn eval(&self, expr: &Expr, ts: i64) -> Result<Value> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, ts),
            Expr::Unary(u) => match self.eval(&u.expr, ts)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(elements) => {
                    let out: Vec<Element> = elements
                        .into_iter()
                        .map(|e| Element {
                            labels: self.memo.drop_name(&e.labels),
                            t: e.t,
                            v: -e.v,
                        })
                        .collect();
                    check_unique(&out)?;
                    Ok(Value::Vector(out))
                }
                other => Err(QueryError::BadData(format!(
                    "unary minus needs a scalar or an instant vector, got {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant_selector(vs, ts))),
            Expr::MatrixSelector(m) => {
                let end = self.effective(m.vs.at.as_ref(), m.vs.offset.as_ref(), ts);
                let start = end - ms(m.range);
                let series = self
                    .series_of(&m.vs)
                    .iter()
                    .filter_map(|s| {
                        let from = s.samples.partition_point(|p| p.timestamp_ms < start);
                        let to =
                            from + s.samples[from..].partition_point(|p| p.timestamp_ms <= end);
                        (to > from).then(|| RangeSeries {
                            labels: s.labels.clone(),
                            samples: s.samples.clone(),
                            from,
                            to,
                        })
                    })
                    .collect();
                Ok(Value::Matrix { series, start, end })
            }
            Expr::Subquery(sq) => {
                let end = self.effective(sq.at.as_ref(), sq.offset.as_ref(), ts);
                let start = end - ms(sq.range);
                let step = sq.step.map_or(self.limits.subquery_step_ms, ms);
                if step <= 0 {
                    return Err(QueryError::BadData(
                        "a subquery step must be positive".into(),
                    ));
                }
                if (end - start) / step > self.limits.max_steps as i64 {
                    return Err(QueryError::Limit(format!(
                        "a subquery of {} steps exceeds the limit of {}",
                        (end - start) / step,
                        self.limits.max_steps
                    )));
                }
                let mut t = start.div_euclid(step) * step;
                if t < start {
                    t += step;
                }
                let mut out: BTreeMap<Arc<Labels>, Vec<Sample>> = BTreeMap::new();
                while t <= end {
                    match self.eval(&sq.expr, t)? {
                        Value::Scalar(v) => out.entry(Arc::default()).or_default().push(Sample {
                            timestamp_ms: t,
                            value: v,
                        }),
                        Value::Vector(elements) => {
                            for e in elements {
                                out.entry(e.labels).or_default().push(Sample {
                                    timestamp_ms: t,
                                    value: e.v,
                                });
                            }
                        }
                        other => {
                            return Err(QueryError::BadData(format!(
                                "a subquery needs a scalar or an instant vector, got {}",
                                other.type_name()
                            )));
                        }
                    }
                    t += step;
                }
                let series = out
                    .into_iter()
                    .map(|(labels, samples)| RangeSeries::new(labels, samples))
                    .collect();
                Ok(Value::Matrix { series, start, end })
            }
            Expr::Aggregate(a) => {
                let input = self.eval(&a.expr, ts)?;
                let param = a.param.as_ref().map(|p| self.eval(p, ts)).transpose()?;
                aggregate::apply(a, param, input, ts, &self.memo)
            }
            Expr::Binary(b) => {
                let lhs = self.eval(&b.lhs, ts)?;
                let rhs = self.eval(&b.rhs, ts)?;
                binary::apply(b, lhs, rhs, ts, &self.memo)
            }
            Expr::Call(c) => functions::call(self, c, ts),
            Expr::Extension(_) => Err(QueryError::BadData(
                "extension expressions are not supported".into(),
            )),
        }
    }

    /// The series of a selector node of the expression this context was
    /// loaded for.
    fn series_of(&self, vs: &VectorSelector) -> &[Loaded] {
        self.data
            .get(&(std::ptr::from_ref(vs) as usize))
            .map_or(&[], |loaded| loaded.as_slice())
    }

    /// The newest sample of each series within the lookback window.
    pub fn instant_selector(&self, vs: &VectorSelector, ts: i64) -> Vec<Element> {
        let t = self.effective(vs.at.as_ref(), vs.offset.as_ref(), ts);
        self.series_of(vs)
            .iter()
            .filter_map(|s| {
                let i = s.samples.partition_point(|p| p.timestamp_ms <= t);
                let sample = s.samples.get(i.checked_sub(1)?)?;
                (sample.timestamp_ms >= t - self.limits.lookback_ms).then(|| Element {
                    labels: s.labels.clone(),
                    t: sample.timestamp_ms,
                    v: sample.value,
                })
            })
            .collect()
    }
}

/// A selector split for storage: its metric name if it fixes one, the
/// matchers on `__name__` and the matchers on other labels.
struct Plan {
    name: Option<String>,
    name_matchers: Vec<Matcher>,
    matchers: Vec<Matcher>,
}

impl Plan {
    fn of(vs: &VectorSelector) -> Result<Self> {
        if !vs.matchers.or_matchers.is_empty() {
            return Err(QueryError::BadData(format!(
                "{vs}: `or` between label matchers is not supported"
            )));
        }
        let mut plan = Plan {
            name: vs.name.clone(),
            name_matchers: Vec::new(),
            matchers: Vec::new(),
        };
        for m in &vs.matchers.matchers {
            let op = match &m.op {
                MatchOp::Equal => MatcherOp::Equal,
                MatchOp::NotEqual => MatcherOp::NotEqual,
                MatchOp::Re(_) => MatcherOp::RegexMatch,
                MatchOp::NotRe(_) => MatcherOp::RegexNoMatch,
            };
            let matcher = Matcher::new(&m.name, op, &m.value)
                .map_err(|e| QueryError::BadData(e.to_string()))?;
            if m.name == METRIC_NAME {
                plan.name_matchers.push(matcher);
            } else {
                plan.matchers.push(matcher);
            }
        }
        if plan.name.is_none() {
            plan.name = plan
                .name_matchers
                .iter()
                .find(|m| m.op == MatcherOp::Equal)
                .map(|m| m.value.clone());
        }
        Ok(plan)
    }

    /// Storage selectors, one per metric the selector can match.
    async fn selectors(
        &self,
        store: &dyn TelemetryStore,
        project: &str,
        start_ms: i64,
    ) -> Result<Vec<SeriesSelector>> {
        let names = match &self.name {
            Some(name) => vec![name.clone()],
            None => store.metric_names(project, start_ms).await?,
        };
        Ok(names
            .into_iter()
            .filter(|name| self.name_matchers.iter().all(|m| m.matches_value(name)))
            .map(|metric| SeriesSelector {
                metric,
                matchers: self.matchers.clone(),
            })
            .collect())
    }
}

/// Reads one selector's series over its span. A selector without a metric
/// name reads every metric whose name its `__name__` matchers accept.
async fn read_selector(
    store: &dyn TelemetryStore,
    project: &str,
    need: &Needed,
) -> Result<Vec<Loaded>> {
    let plan = Plan::of(&need.selector)?;
    let mut out = Vec::new();
    for selector in plan.selectors(store, project, need.min).await? {
        for series in store.select(project, &selector, need.min, need.max).await? {
            let mut labels = series.labels;
            labels.insert(METRIC_NAME.to_owned(), selector.metric.clone());
            out.push(Loaded {
                labels: Arc::new(labels),
                samples: series.samples.into(),
            });
        }
    }
    Ok(out)
}

/// Labels (with `__name__`) of the series a selector matches that have
/// samples at or after `start_ms`; at most `limit`, else a limit error.
pub async fn series_labels(
    store: &dyn TelemetryStore,
    project: &str,
    vs: &VectorSelector,
    start_ms: i64,
    limit: usize,
) -> Result<Vec<Labels>> {
    let mut out = Vec::new();
    for selector in Plan::of(vs)?.selectors(store, project, start_ms).await? {
        for mut labels in store.series(project, &selector, start_ms).await? {
            labels.insert(METRIC_NAME.to_owned(), selector.metric.clone());
            out.push(labels);
        }
        if out.len() > limit {
            return Err(QueryError::Limit(format!(
                "more than {limit} series match; narrow the selector"
            )));
        }
    }
    Ok(out)
}

/// Labels derived from labels (without the metric name, a group's labels, a
/// matching signature), remembered for the query: a range query derives
/// the same ones at every step. Keyed by the source's address; the map
/// holds the source, so the address cannot be reused while it is in use.
#[derive(Default)]
pub struct Memo {
    derived: std::cell::RefCell<HashMap<MemoKey, Derived, foldhash::fast::RandomState>>,
    /// Every derived label set, by content: equal ones are one `Arc`, so
    /// callers may group by address.
    interned: std::cell::RefCell<HashSet<Arc<Labels>, foldhash::fast::RandomState>>,
}

/// The source labels' address and what was derived from them.
type MemoKey = (usize, usize);
/// The source (kept alive) and what was derived.
type Derived = (Arc<Labels>, Arc<Labels>);

/// Entries kept before the memo starts over (bounds its memory).
const MEMO_ENTRIES: usize = 1 << 20;

impl Memo {
    /// `derive(labels)`, remembered per labels and `kind` (0 for dropping
    /// the name, else the address of the expression that derives).
    pub fn derive(
        &self,
        labels: &Arc<Labels>,
        kind: usize,
        derive: impl FnOnce(&Labels) -> Labels,
    ) -> Arc<Labels> {
        let key = (Arc::as_ptr(labels) as usize, kind);
        if let Some((_, derived)) = self.derived.borrow().get(&key) {
            return derived.clone();
        }
        let derived = derive(labels);
        let derived = {
            let mut interned = self.interned.borrow_mut();
            match interned.get(&derived) {
                Some(same) => same.clone(),
                None => {
                    let new = Arc::new(derived);
                    interned.insert(new.clone());
                    new
                }
            }
        };
        self.derived
            .borrow_mut()
            .insert(key, (labels.clone(), derived.clone()));
        derived
    }

    /// Starts over when the memo has grown past its bound. Called between
    /// steps only: within a step, equal derived labels must stay one `Arc`.
    pub fn trim(&self) {
        if self.derived.borrow().len() >= MEMO_ENTRIES {
            self.derived.borrow_mut().clear();
            self.interned.borrow_mut().clear();
        }
    }

    /// The labels without the metric name.
    pub fn drop_name(&self, labels: &Arc<Labels>) -> Arc<Labels> {
        if !labels.contains_key(METRIC_NAME) {
            return labels.clone();
        }
        self.derive(labels, 0, |l| {
            let mut l = l.clone();
            l.remove(METRIC_NAME);
            l
        })
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo({} entries)", self.derived.borrow().len())
    }
}

/// Formats a float as Prometheus does (Go's `FormatFloat(v, 'f', -1, 64)`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_storage::{MetricBatch, SeriesWrite, redb::RedbStore};

    /// Hostile queries and times get an answer or an error, never a panic
    /// (debug builds check every overflow), and the limits name themselves.
    #[tokio::test]
    async fn extreme_queries_answer_or_refuse_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
        let now = 1_700_000_000_000;
        store
            .write_metrics(MetricBatch {
                project: "p".into(),
                batch_id: "b".into(),
                series: vec![SeriesWrite {
                    metric: "foo".into(),
                    labels: [("a".to_owned(), "x".to_owned())].into(),
                    samples: (0..10)
                        .map(|i| Sample {
                            timestamp_ms: now - i * 15_000,
                            value: i as f64,
                        })
                        .collect(),
                }],
            })
            .await
            .unwrap();
        let limits = Limits::default();
        for (query, refused_with) in [
            ("foo @ 99999999999999999", None),
            ("foo @ -99999999999999999", None),
            ("foo offset 100000000y", None),
            ("rate(foo[100000000y])", Some("at most")),
            ("max_over_time(foo[1d:1ms])", Some("steps")),
            ("topk(1e300, foo)", None),
            ("round(foo, 0)", None),
            ("histogram_quantile(NaN, foo)", None),
            (
                "label_replace(foo, \"b\", \"$1\", \"a\", \"(\")",
                Some("regular expression"),
            ),
            ("count_values(\"1x\", foo)", Some("label name")),
            ("foo / on() group_left foo", None),
        ] {
            let expr = crate::promql::parse(query).unwrap();
            match (
                instant(&store, "p", &expr, now, &limits).await,
                refused_with,
            ) {
                (Ok(_), None) => {}
                (Err(e), Some(why)) => assert!(e.to_string().contains(why), "{query}: {e}"),
                (other, _) => panic!("{query}: {other:?}"),
            }
        }
        let expr = crate::promql::parse("foo").unwrap();
        for (start, end, step) in [(i64::MIN, i64::MAX, 1), (0, i64::MAX, i64::MAX), (5, 4, 1)] {
            let r = range(&store, "p", &expr, start, end, step, &limits).await;
            assert!(r.is_err(), "{start}..{end} step {step}: {r:?}");
        }
    }
}
