//! Request paths in one normal form before the proxy matches, authorizes and rewrites them, so a
//! path cannot reach a backend under a route it would not match itself (`/public/../private/x`
//! past a secured `/private/.*`).
//!
//! The normal form (RFC 3986 §6.2.2): percent-encoded unreserved characters decoded (`%2e` is
//! `.`, `%61` is `a`), other percent-encodings upper-cased; repeated slashes merged (as nginx's
//! `merge_slashes`); dot segments removed (§5.2.4). The proxy forwards the normal form, so the
//! backend sees the path that was matched. Refused with 400, because no normal form is
//! unambiguous for every backend: an encoded `/` or `\` (`%2F`, `%5C`), a raw `\`, a malformed
//! percent-encoding, an encoded NUL, and a dot segment with parameters (`..;x`).

/// Why a path is refused (the 400 answer's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The normal form of `path` when it differs (`Ok(None)`: already normal), or why it is refused.
/// Only paths starting with `/` are normalised; others (`*`) are left alone.
pub fn normalize(path: &str) -> Result<Option<String>, Refused> {
    if !path.starts_with('/') || is_normal(path) {
        return Ok(None);
    }
    let decoded = decode_unreserved(path)?;
    // `..;x` is no dot segment to RFC 3986, but several servers (Tomcat, Jetty, Spring) strip the
    // parameters and read `..`: refused, since no normal form means the same to every backend.
    // An encoded `;` (`%3B`, upper-cased by now) counts too: some servers decode before they
    // strip parameters.
    if decoded.split('/').any(|s| {
        let s = s.replace("%3B", ";");
        s.contains(';') && matches!(s.split(';').next(), Some("." | ".."))
    }) {
        return Err(Refused("a dot segment with parameters (`..;`) in the path"));
    }
    let normal = remove_dot_segments(&decoded);
    Ok((normal != path).then_some(normal))
}

/// Cheap check for the common case: no `%`, no `\`, no empty, `.` or `..` segment.
fn is_normal(path: &str) -> bool {
    !path.contains(['%', '\\'])
        && !path.contains("//")
        && !path
            .split('/')
            .any(|s| matches!(s.split(';').next(), Some("." | "..")))
}

fn decode_unreserved(path: &str) -> Result<String, Refused> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(Refused("a backslash in the path")),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(Refused("a malformed percent-encoding in the path"));
                };
                let value = (hi * 16 + lo) as u8;
                match value {
                    b'/' | b'\\' => {
                        return Err(Refused("an encoded '/' or '\\' in the path"));
                    }
                    0 => return Err(Refused("an encoded NUL in the path")),
                    b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                        out.push(b as char);
                    }
                    b => {
                        out.push('%');
                        out.push_str(&format!("{b:02X}"));
                    }
                }
                i += 3;
            }
            _ => {
                // Copy the (UTF-8) run up to the next special byte as is.
                let start = i;
                while i < bytes.len() && !matches!(bytes[i], b'%' | b'\\') {
                    i += 1;
                }
                out.push_str(&path[start..i]);
            }
        }
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 on a path starting with `/`, with empty segments (repeated slashes) merged.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path[1..].split('/').collect();
    let mut trailing_slash = false;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match *part {
            "." => trailing_slash = last,
            ".." => {
                segments.pop();
                trailing_slash = last;
            }
            "" => trailing_slash = last,
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> Result<String, Refused> {
        normalize(path).map(|p| p.unwrap_or_else(|| path.to_owned()))
    }

    #[test]
    fn normal_paths_are_left_alone() {
        for p in ["/", "/a", "/a/b/", "/a.b/c..d/.e", "/ä/ö", "*"] {
            assert_eq!(normalize(p), Ok(None), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_repeated_slashes() {
        assert_eq!(
            n("/public/../private/secret").as_deref(),
            Ok("/private/secret")
        );
        assert_eq!(n("/a/./b/../c").as_deref(), Ok("/a/c"));
        assert_eq!(n("/../../etc").as_deref(), Ok("/etc"));
        assert_eq!(n("//admin//secret").as_deref(), Ok("/admin/secret"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(n("/..").as_deref(), Ok("/"));
        assert_eq!(n("/a//").as_deref(), Ok("/a/"));
    }

    #[test]
    fn percent_encoded_unreserved_characters_are_decoded() {
        assert_eq!(n("/public/%2e%2e/private").as_deref(), Ok("/private"));
        assert_eq!(n("/public/%2E%2E/private").as_deref(), Ok("/private"));
        assert_eq!(n("/%61dmin/secret").as_deref(), Ok("/admin/secret"));
        assert_eq!(n("/a%20b%3f").as_deref(), Ok("/a%20b%3F"));
        assert_eq!(n("/caf%C3%A9").as_deref(), Ok("/caf%C3%A9"));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for p in [
            "/public/..;/private/x",
            "/public/%2e%2e;x/private",
            "/public/%2e%2e%3b/private/x",
            "/public/..%3B/private/x",
            "/a/.;/b",
            "/admin%2Fsecret",
            "/admin%2fsecret",
            "/a%5Cb",
            "/a\\b",
            "/a%2",
            "/a%zz",
            "/a%00",
        ] {
            assert!(normalize(p).is_err(), "{p}");
        }
    }
}
