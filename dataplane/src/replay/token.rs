//! The resume token: a frontier (stream → next position), as an opaque, URL-safe string.
//!
//! Body `<stream>:<next>,<stream>:<next>,…`, streams sorted. Stream names are Kafka topic names
//! (`[a-zA-Z0-9._-]`) with `/partition`, or `_http@<owner>`; none contain `:`, `,` or `~`.
//! Clients get it signed: `2~<body>~<tag>`, the tag an HMAC of the body under `RIG_TOKEN_KEY`
//! (the key of connection tokens, in its own context), so every pod sharing the key accepts it
//! and nobody can make the data plane read positions it never handed out. A token that is not
//! signed by this key (forged, foreign, or RIG's) is not understood: the client gets
//! `rig.connection.gap`, and nothing is read for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth::TokenCodec;

const VERSION_PREFIX: &str = "1~";
const SIGNED_PREFIX: &str = "2~";
/// The resume tokens' HMAC context (distinct from connection tokens').
const CONTEXT: &[u8] = b"rig-resume-token";
/// Bytes of the HMAC kept in a token (128 bits).
const TAG_LEN: usize = 16;
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

    /// The token signed with `key`: `2~<body>~<tag>`.
    pub fn encode_signed(&self, key: &TokenCodec) -> String {
        let body = self.encode();
        let body = &body[VERSION_PREFIX.len()..];
        let tag = key.keyed_tag(CONTEXT, body.as_bytes());
        let mut out = String::with_capacity(body.len() + 26);
        out.push_str(SIGNED_PREFIX);
        out.push_str(body);
        out.push('~');
        out.push_str(&URL_SAFE_NO_PAD.encode(&tag[..TAG_LEN]));
        out
    }

    /// Parse a signed token; `None` unless `key` signed it (the caller then reports a gap).
    pub fn decode_signed(token: &str, key: &TokenCodec) -> Option<Self> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let (body, tag) = token.strip_prefix(SIGNED_PREFIX)?.rsplit_once('~')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let expected = key.keyed_tag(CONTEXT, body.as_bytes());
        // Constant-time comparison: every byte is looked at.
        if tag.len() != TAG_LEN
            || tag
                .iter()
                .zip(&expected[..TAG_LEN])
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0
        {
            return None;
        }
        Self::decode_body(body)
    }

    /// Parse an unsigned token (`1~<body>`; internal use and tests); `None` when it is not one.
    pub fn decode(token: &str) -> Option<Self> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        Self::decode_body(token.strip_prefix(VERSION_PREFIX)?)
    }

    fn decode_body(body: &str) -> Option<Self> {
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

    #[test]
    fn clients_get_signed_tokens_only_this_key_accepts() {
        let key = TokenCodec::new(b"0123456789abcdef0123456789abcdef");
        let a: Arc<str> = Arc::from("greetings/0");
        let mut f = Frontier::default();
        f.advance(&a, 41);
        let token = f.encode_signed(&key);
        assert!(token.starts_with("2~greetings/0:42~"), "{token}");
        assert_eq!(Frontier::decode_signed(&token, &key), Some(f.clone()));
        let other = TokenCodec::new(b"another key, also 32 bytes long!");
        assert_eq!(
            Frontier::decode_signed(&token, &other),
            None,
            "a foreign key"
        );
        let forged = token.replace(":42~", ":1~");
        assert_eq!(
            Frontier::decode_signed(&forged, &key),
            None,
            "an edited body"
        );
        for bad in [
            "1~greetings/0:42",
            "2~greetings/0:42",
            "2~greetings/0:42~",
            "2~~AAAA",
        ] {
            assert_eq!(Frontier::decode_signed(bad, &key), None, "{bad:?}");
        }
        let empty = Frontier::default().encode_signed(&key);
        assert_eq!(
            Frontier::decode_signed(&empty, &key),
            Some(Frontier::default())
        );
    }
}
