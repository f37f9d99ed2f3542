//! JSON pointers (RFC 6901), parsed once at configuration time: resolving one is a walk down
//! pre-split tokens. Used for the extractors' `eventPointer` and `jwtPointer`.

use serde_json::Value;

/// A JSON pointer (RFC 6901), parsed. Guaranteed non-empty and starting with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    text: Box<str>,
    tokens: Box<[Box<str>]>,
}

impl JsonPointer {
    /// Parse `text`; `Err` carries the reason. The root pointer `""` is rejected (RIG requires a
    /// non-empty pointer), as are invalid `~` escapes.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(if text.is_empty() {
                "must not be empty"
            } else {
                "must start with '/'"
            });
        };
        let tokens = rest
            .split('/')
            .map(|raw| {
                let mut token = String::with_capacity(raw.len());
                let mut chars = raw.chars();
                while let Some(c) = chars.next() {
                    if c != '~' {
                        token.push(c);
                        continue;
                    }
                    match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => return Err("'~' must be followed by '0' or '1'"),
                    }
                }
                Ok(token.into_boxed_str())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            text: text.into(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value `self` points to in `value`, if any. Array indices are decimal without leading
    /// zeros (RFC 6901); `-` never resolves.
    pub fn resolve<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.tokens
            .iter()
            .try_fold(value, |current, token| match current {
                Value::Object(map) => map.get(&**token),
                Value::Array(items) => {
                    let canonical = !token.is_empty()
                        && token.bytes().all(|b| b.is_ascii_digit())
                        && (token.len() == 1 || !token.starts_with('0'));
                    items.get(token.parse::<usize>().ok().filter(|_| canonical)?)
                }
                _ => None,
            })
    }
}
