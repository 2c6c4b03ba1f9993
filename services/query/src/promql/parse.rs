//! Parsing PromQL with `promql-parser`, and finding where a query breaks.
//!
//! The parser reports what is wrong but not where. The lexer does report
//! token spans, so the position is found by looking for the shortest prefix
//! of tokens that no ending can turn into a valid query: an LR parser fails
//! at the first token that leaves that set, and the set only shrinks as the
//! prefix grows, so a binary search over prefixes finds it.

use lrpar::{Lexeme, Lexer};
use promql_parser::parser::{self, Expr};

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// A query that does not parse: the parser's message and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: parse error: {message}")]
pub struct ParseError {
    pub message: String,
    /// 1-based line and column (in characters) of the problem.
    pub line: usize,
    pub column: usize,
    /// Byte offset of the problem in the query.
    pub offset: usize,
}

impl ParseError {
    fn at(query: &str, offset: usize, message: String) -> Self {
        let before = &query[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        Self {
            message,
            line,
            column,
            offset,
        }
    }
}

/// Parses `query`, or says what is wrong and where.
pub fn parse(query: &str) -> Result<Expr, ParseError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(ParseError::at(
            query,
            MAX_QUERY_BYTES.min(query.len()),
            format!("query is longer than {MAX_QUERY_BYTES} bytes"),
        ));
    }
    if query.trim().is_empty() {
        return Err(ParseError::at(
            query,
            0,
            "no expression found in input".into(),
        ));
    }
    register_functions();
    parser::parse(query).map_err(|message| {
        // The parser names an unknown function; point at it.
        let offset = message
            .strip_prefix("unknown function with name '")
            .and_then(|rest| rest.strip_suffix('\''))
            .and_then(|name| query.find(&format!("{name}(")))
            .unwrap_or_else(|| error_offset(query));
        let message = match query[offset..].split_whitespace().next() {
            Some(near) if offset < query.len() && !message.contains(near) => {
                let near: String = near.chars().take(24).collect();
                format!("{message} (near {near:?})")
            }
            _ => message,
        };
        ParseError::at(query, offset, message)
    })
}

/// Functions Prometheus 2.x has that the parser (which follows 3.x) does
/// not: `holt_winters` (3.x calls it `double_exponential_smoothing`).
fn register_functions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use promql_parser::parser::{Function, value::ValueType};
        let holt_winters = Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        );
        if let Err(e) = promql_parser::parser::register_extra_functions(vec![holt_winters]) {
            tracing::warn!(error = %e, "holt_winters not registered");
        }
    });
}

/// Endings tried after a prefix (before closing its open brackets) to see
/// whether it can still become a valid query.
const ENDINGS: &[&str] = &[
    "", " x", " 0", " (x)", "[1m]", " x[1m]", "x)", "\"\"}", "=\"\"}", " x)", " \"\"", "1m]", ")",
];

/// Byte offset where `query` stops being a possible start of a valid query.
fn error_offset(query: &str) -> usize {
    let Ok(lexer) = parser::lex::lexer(query) else {
        return lex_error_offset(query);
    };
    let tokens: Vec<(usize, usize)> = lexer
        .iter()
        .filter_map(Result::ok)
        .map(|t| (t.span().start(), t.span().end()))
        .collect();
    // `viable(k)`: the first k tokens can still start a valid query.
    let viable = |k: usize| -> bool {
        let end = if k == 0 { 0 } else { tokens[k - 1].1 };
        let prefix = &query[..end];
        let closers = closers(prefix);
        ENDINGS
            .iter()
            .any(|ending| parser::parse(&format!("{prefix}{ending}{closers}")).is_ok())
    };
    // The whole query fails; find the first k with !viable(k).
    let (mut good, mut bad) = (0usize, tokens.len() + 1);
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        if viable(mid) { good = mid } else { bad = mid }
    }
    match tokens.get(bad - 1) {
        Some(&(start, _)) => start,
        None => query.trim_end().len(),
    }
}

/// Brackets still open at the end of `prefix`, closed in order.
fn closers(prefix: &str) -> String {
    let mut open = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in prefix.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' => open.push(')'),
            '[' => open.push(']'),
            '{' => open.push('}'),
            ')' | ']' | '}' => {
                open.pop();
            }
            _ => {}
        }
    }
    let mut out = String::new();
    if let Some(q) = quote {
        out.push(q);
    }
    out.extend(open.iter().rev());
    out
}

/// Where lexing fails: the end of the longest prefix that still lexes.
fn lex_error_offset(query: &str) -> usize {
    let boundaries: Vec<usize> = query
        .char_indices()
        .map(|(i, _)| i)
        .chain([query.len()])
        .collect();
    // A prefix cut inside a string or number may fail for that reason
    // alone, so look for the last prefix that lexes with its quotes closed.
    let mut last_ok = 0;
    for &end in &boundaries {
        let prefix = &query[..end];
        let closed = format!("{prefix}{}", closers(prefix));
        if parser::lex::lexer(&closed).is_ok() || prefix.trim().is_empty() {
            last_ok = end;
        } else {
            break;
        }
    }
    if last_ok == query.len() {
        // Every prefix lexes: the problem is at the end (an unclosed bracket).
        return query.trim_end().len();
    }
    // The offending token starts after the last good boundary's whitespace.
    let rest = &query[last_ok..];
    let word_start = query[..last_ok]
        .rfind(|c: char| c.is_whitespace() || "([{,=".contains(c))
        .map_or(0, |i| i + 1);
    if rest.starts_with(char::is_whitespace) {
        last_ok
    } else {
        word_start.min(last_ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(query: &str) -> ParseError {
        parse(query).expect_err(query)
    }

    #[test]
    fn positions_point_at_the_problem() {
        let e = err("sum(rate(x[5m])) by (job");
        assert_eq!((e.line, e.column), (1, 25), "{e}");
        let e = err("foo +");
        assert_eq!(e.column, 6, "{e}");
        let e = err("sum(rate(x[5m]) foo)");
        assert_eq!(e.column, 17, "{e}");
        assert!(e.to_string().starts_with("1:17: parse error:"), "{e}");
        let e = err("rate(foo[5x])");
        assert_eq!(e.column, 10, "{e}");
        let e = err("up{job=\"a\"}\n  + on(x) group_left nope{");
        assert_eq!(e.line, 2, "{e}");
        let e = err("unknownfn(x)");
        assert_eq!(e.column, 1, "{e}");
        assert!(e.message.contains("unknown function"), "{e}");
    }

    #[test]
    fn valid_queries_parse_and_empty_is_refused() {
        for q in [
            "up",
            "sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m]))",
            "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))",
            "a / on(job) group_left(team) b",
            "max_over_time(rate(x[1m])[10m:30s] offset 5m)",
        ] {
            parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
        assert!(err("   ").message.contains("no expression"));
        assert!(
            err(&"x".repeat(MAX_QUERY_BYTES + 1))
                .message
                .contains("longer")
        );
    }
}
