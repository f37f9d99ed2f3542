//! The resume token: a frontier (stream → next position), as an opaque, URL-safe string.
//!
//! Format `1~<stream>:<next>,<stream>:<next>,…`, streams sorted. Stream names are Kafka topic names
//! (`[a-zA-Z0-9._-]`) with `/partition`, or `_http@<owner>`; none contain `:`, `,` or `~`.

use std::collections::BTreeMap;
use std::sync::Arc;

const VERSION_PREFIX: &str = "1~";
/// Tokens longer than this are refused (bounded parsing cost for hostile input).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// For every stream, the next position expected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier(pub BTreeMap<Arc<str>, i64>);

impl Frontier {
    /// Advance `stream` past `position`.
    pub fn advance(&mut self, stream: &Arc<str>, position: i64) {
        let next = position.saturating_add(1);
        match self.0.get_mut(stream) {
            Some(current) => *current = (*current).max(next),
            None => {
                self.0.insert(stream.clone(), next);
            }
        }
    }

    /// The next position expected on `stream`, if the frontier knows the stream.
    pub fn next(&self, stream: &str) -> Option<i64> {
        self.0.get(stream).copied()
    }

    /// The token string.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(2 + self.0.len() * 24);
        out.push_str(VERSION_PREFIX);
        for (i, (stream, next)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(stream);
            out.push(':');
            out.push_str(&next.to_string());
        }
        out
    }

    /// Parse a token; `None` when it is not one of ours (the caller then reports a gap).
    pub fn decode(token: &str) -> Option<Self> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let body = token.strip_prefix(VERSION_PREFIX)?;
        let mut map = BTreeMap::new();
        if body.is_empty() {
            return Some(Self(map));
        }
        for part in body.split(',') {
            let (stream, next) = part.rsplit_once(':')?;
            if stream.is_empty() || stream.contains(['~', ',']) {
                return None;
            }
            let next: i64 = next.parse().ok()?;
            if next < 0 {
                return None;
            }
            map.insert(Arc::from(stream), next);
        }
        Some(Self(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_advances_monotonically() {
        let a: Arc<str> = Arc::from("greetings/0");
        let b: Arc<str> = Arc::from("_http@pod-1");
        let mut f = Frontier::default();
        f.advance(&a, 41);
        f.advance(&b, 7);
        f.advance(&a, 3); // an older position never moves the frontier back
        let token = f.encode();
        assert_eq!(token, "1~_http@pod-1:8,greetings/0:42");
        assert_eq!(Frontier::decode(&token), Some(f));
    }

    #[test]
    fn foreign_or_broken_tokens_are_refused() {
        for bad in [
            "", "42", "1~a", "1~a:x", "1~a:-1", "2~a:1", "1~:1", "1~a:1,",
        ] {
            assert_eq!(Frontier::decode(bad), None, "{bad:?}");
        }
        assert_eq!(Frontier::decode("1~"), Some(Frontier::default()));
    }
}
