//! PromQL: parsed by `promql-parser`, evaluated here over the store with
//! Prometheus 2.x semantics.

mod aggregate;
mod binary;
pub mod eval;
mod functions;
pub mod parse;

pub use eval::{
    Element, Labels, Limits, QueryError, RangeSeries, Value, format_value, instant, range,
    series_labels,
};
pub use functions::{bucket_quantile, parse_bound};
pub use parse::{ParseError, parse};
