//! Message patterns, Drain-style: a message's variable parts (numbers,
//! ids, addresses, URLs, `key=value` values) are masked, then it joins the known
//! pattern of its length whose tokens match at least half of its own
//! (differing tokens become `<*>`), or starts a new one. Patterns are
//! bounded per source; past the bound, messages count under pattern 0.
//! A pattern's id is fixed when it is made (a hash of its source and
//! first form), so it stays the same while its text generalises.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64;

/// Share of equal tokens for a message to join a pattern.
const SIMILARITY: f64 = 0.5;
/// Tokens of a message considered; the rest are ignored.
const MAX_TOKENS: usize = 64;
pub const WILDCARD: &str = "<*>";

#[derive(Debug, Clone)]
pub struct Pattern {
    pub id: u64,
    pub tokens: Vec<String>,
}

impl Pattern {
    pub fn text(&self) -> String {
        self.tokens.join(" ")
    }
}

#[derive(Debug)]
pub struct Drain {
    source: String,
    max_patterns: usize,
    /// Patterns by token count.
    by_length: HashMap<usize, Vec<Pattern>>,
    count: usize,
}

fn is_variable(token: &str) -> bool {
    let t = token.trim_matches(|c: char| "\"'()[]{},;".contains(c));
    if t.is_empty() {
        return false;
    }
    let digits = t.chars().filter(char::is_ascii_digit).count();
    // Numbers, versions, times, addresses, ids with digits in them.
    digits > 0 && digits * 3 >= t.chars().count()
        || t.len() >= 16 && t.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        || t.contains("://")
}

/// The message's tokens with variables masked.
pub fn tokens(message: &str) -> Vec<String> {
    message
        .split_whitespace()
        .take(MAX_TOKENS)
        .map(|t| {
            if let Some((key, value)) = t.split_once('=')
                && !key.is_empty()
                && !value.is_empty()
            {
                // key=value: the key is the pattern, the value varies.
                format!("{key}={WILDCARD}")
            } else if is_variable(t) {
                WILDCARD.to_owned()
            } else {
                t.to_owned()
            }
        })
        .collect()
}

impl Drain {
    pub fn new(source: &str, max_patterns: usize) -> Self {
        Self {
            source: source.to_owned(),
            max_patterns,
            by_length: HashMap::new(),
            count: 0,
        }
    }

    /// The pattern `message` belongs to (0 with no room for a new one), and
    /// the pattern's current text.
    pub fn add(&mut self, message: &str) -> (u64, String) {
        let tokens = tokens(message);
        if tokens.is_empty() {
            return (0, String::new());
        }
        let candidates = self.by_length.entry(tokens.len()).or_default();
        let best = candidates
            .iter_mut()
            .map(|p| {
                let same = p
                    .tokens
                    .iter()
                    .zip(&tokens)
                    .filter(|(a, b)| a == b || *a == WILDCARD)
                    .count();
                (same as f64 / tokens.len() as f64, p)
            })
            .filter(|(score, _)| *score >= SIMILARITY)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, pattern)) = best {
            for (have, new) in pattern.tokens.iter_mut().zip(&tokens) {
                if have != new {
                    *have = WILDCARD.to_owned();
                }
            }
            return (pattern.id, pattern.text());
        }
        if self.count >= self.max_patterns {
            return (0, String::new());
        }
        let id = xxh3_64(format!("{}\n{}", self.source, tokens.join(" ")).as_bytes()).max(1);
        let pattern = Pattern { id, tokens };
        let text = pattern.text();
        candidates.push(pattern);
        self.count += 1;
        (id, text)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_group_into_patterns() {
        let mut d = Drain::new("app", 100);
        let (a, _) = d.add("connected to 10.0.0.1:5432 in 12ms");
        let (b, text) = d.add("connected to 10.0.0.7:5432 in 3ms");
        assert_eq!(a, b);
        assert_eq!(text, "connected to <*> in <*>");
        let (c, _) = d.add("user 42 logged in from 1.2.3.4");
        let (e, text) = d.add("user 7 logged out from 1.2.3.4");
        assert_eq!(c, e, "one word differs of six");
        assert_eq!(text, "user <*> logged <*> from <*>");
        let (f, _) = d.add("payment failed: card declined");
        assert_ne!(f, a);
        assert_eq!(d.len(), 3);
        let (g, text) = d.add("request id=8f14e45f status=500 path=/pay");
        assert_eq!(text, "request id=<*> status=<*> path=<*>");
        assert_eq!(d.add("request id=1 status=200 path=/x").0, g);
    }

    #[test]
    fn ids_are_stable_and_patterns_bounded() {
        let mut one = Drain::new("app", 2);
        let mut two = Drain::new("app", 2);
        assert_eq!(
            one.add("disk full on /var").0,
            two.add("disk full on /var").0
        );
        assert_ne!(
            Drain::new("other", 2).add("disk full on /var").0,
            one.add("disk full on /var").0,
            "per source"
        );
        one.add("cache miss");
        assert_eq!(
            one.add("a completely new message here").0,
            0,
            "over the bound"
        );
        assert_eq!(one.len(), 2);
    }
}
