//! The HTTP protocol binding: `POST /_rig/v1/events` and `POST /v3/messages`.
//!
//! The content type picks the mode as RIG does (rig-behaviour §1.1):
//!
//! | content-type | mode |
//! |---|---|
//! | `application/cloudevents-batch…` | 415 |
//! | `application/cloudevents+json` | structured |
//! | other `application/cloudevents+…` | 415 |
//! | `application/json` without `ce-specversion` | structured (a RIG extension) |
//! | anything else, or none | binary |
//!
//! Binary mode accepts `ce-specversion` 0.2 (RIG) and 1.0 (DESIGN §6.1). For 0.2, extension header
//! values are JSON-decoded when they parse (RIG); for 1.0 every attribute is a string, unquoted and
//! percent-decoded as the CloudEvents 1.0 HTTP binding requires.

use ::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde_json::Value;
use thiserror::Error;

use super::cloudevent::{Binary, media_type, parse_structured_bytes};
use super::{CloudEvent, SpecVersion};

const CE_PREFIX: &str = "ce-";
const CE_SPECVERSION: &str = "ce-specversion";

/// Why an HTTP request does not carry an acceptable CloudEvent. [`HttpError::status`] is the
/// response status; the `Display` text is RIG's response body.
#[derive(Debug, Error)]
pub enum HttpError {
    /// `application/cloudevents-batch` (415).
    #[error("The batched CloudEvents HTTP transport binding mode is currently not supported.")]
    Batch,
    /// `application/cloudevents+<format>` other than JSON (415).
    #[error(
        "The given content-type {content_type:?} is currently not supported for structured mode."
    )]
    UnsupportedFormat {
        /// The request's media type.
        content_type: String,
    },
    /// Structured mode, but the body is not a CloudEvent (400).
    #[error("The request body does not look like a CloudEvent: {0}")]
    Structured(#[source] super::Error),
    /// Binary mode, but `ce-specversion` is missing, repeated or unsupported (400).
    #[error(
        "Your request looks like it's using the CloudEvents binary content mode, but the \
         ce-specversion header is {found:?} instead of [\"0.2\"] or [\"1.0\"]."
    )]
    SpecVersion {
        /// The `ce-specversion` values received.
        found: Vec<String>,
    },
    /// Binary mode, but the headers and body do not make a CloudEvent (400).
    #[error(
        "Your request looks like it's using the CloudEvents binary content mode but can't be \
         parsed ({0}). Please make sure you're passing the headers according to the CloudEvents \
         HTTP protocol binding."
    )]
    Binary(#[source] super::Error),
}

impl HttpError {
    /// The HTTP status to answer with: 415 for unsupported formats, 400 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Batch | Self::UnsupportedFormat { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Structured(_) | Self::SpecVersion { .. } | Self::Binary(_) => {
                StatusCode::BAD_REQUEST
            }
        }
    }
}

/// The CloudEvent in an HTTP request (RIG's content-type rules, module docs). In structured mode
/// `body` becomes the event's JSON without a copy; `ce-*` headers are then ignored.
pub fn from_http(headers: &HeaderMap, body: Bytes) -> Result<CloudEvent, HttpError> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(value) => Some(std::str::from_utf8(value.as_bytes()).map_err(|_| {
            HttpError::Binary(super::Error::HeaderNotUtf8(
                header::CONTENT_TYPE.to_string(),
            ))
        })?),
    };
    let essence = content_type.map(media_type).unwrap_or_default();
    if essence.starts_with("application/cloudevents-batch") {
        return Err(HttpError::Batch);
    }
    if essence == "application/cloudevents+json"
        || (essence == "application/json" && !headers.contains_key(CE_SPECVERSION))
    {
        return parse_structured_bytes(body).map_err(HttpError::Structured);
    }
    if essence.starts_with("application/cloudevents+") {
        return Err(HttpError::UnsupportedFormat {
            content_type: essence,
        });
    }
    binary(headers, content_type, &body)
}

fn binary(
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<CloudEvent, HttpError> {
    let found: Vec<String> = headers
        .get_all(CE_SPECVERSION)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let spec_version = match found.as_slice() {
        [v] if v == "0.2" => SpecVersion::V0_2,
        [v] if v == "1.0" => SpecVersion::V1_0,
        _ => return Err(HttpError::SpecVersion { found }),
    };
    let mut attributes = Vec::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix(CE_PREFIX) else {
            continue;
        };
        if attribute == "specversion" {
            continue;
        }
        let text = std::str::from_utf8(value.as_bytes())
            .map_err(|_| HttpError::Binary(super::Error::HeaderNotUtf8(name.to_string())))?;
        let value = match spec_version {
            SpecVersion::V1_0 => Value::String(decode_1_0_header_value(text)),
            SpecVersion::V0_1 | SpecVersion::V0_2 => decode_0_2_attribute(attribute, text),
        };
        attributes.push((attribute.to_owned(), value));
    }
    Binary {
        spec_version,
        attributes,
        content_type,
        data: body,
    }
    .into_event()
    .map_err(HttpError::Binary)
}

/// RIG (0.2): the standard attributes stay strings; extension values are JSON when they parse.
pub(super) fn decode_0_2_attribute(attribute: &str, text: &str) -> Value {
    const STANDARD: [&str; 6] = ["specversion", "type", "source", "id", "time", "schemaurl"];
    if STANDARD.contains(&attribute) {
        return Value::from(text);
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::from(text))
}

/// CloudEvents 1.0 HTTP binding §3.1.3.2: unquote an RFC 7230 quoted-string, then percent-decode
/// once. A value whose decoding is not UTF-8 is kept as received.
fn decode_1_0_header_value(text: &str) -> String {
    let unquoted = match text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or('\\')
                } else {
                    c
                });
            }
            out
        }
        None => text.to_owned(),
    };
    if !unquoted.contains('%') {
        return unquoted;
    }
    let bytes = unquoted.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escaped {
            Some((hi, lo)) => {
                decoded.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).unwrap_or(unquoted)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                ::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    type Headers = Vec<(&'static str, &'static str)>;

    const STRUCTURED_02: &str =
        r#"{"specversion":"0.2","type":"t","source":"s","id":"i","data":{"x":1}}"#;
    const STRUCTURED_10: &str = r#"{"specversion":"1.0","type":"t","source":"s","id":"i"}"#;

    #[test]
    fn content_type_selects_the_mode() {
        // (headers, body, expected status or Ok, expected json when Ok)
        let ce_headers = [
            ("ce-specversion", "0.2"),
            ("ce-type", "bt"),
            ("ce-source", "bs"),
            ("ce-id", "bi"),
        ];
        let with = |ct: &'static str| {
            let mut h: Headers = vec![("content-type", ct)];
            h.extend_from_slice(&ce_headers);
            h
        };
        let cases: Vec<(Headers, &str, Result<&str, u16>)> = vec![
            (
                vec![("content-type", "application/cloudevents+json")],
                STRUCTURED_02,
                Ok(STRUCTURED_02),
            ),
            (
                vec![(
                    "content-type",
                    "Application/CloudEvents+JSON; charset=utf-8",
                )],
                STRUCTURED_10,
                Ok(STRUCTURED_10),
            ),
            // ce-* headers are ignored in structured mode.
            (
                with("application/cloudevents+json"),
                STRUCTURED_10,
                Ok(STRUCTURED_10),
            ),
            (
                vec![("content-type", "application/json")],
                STRUCTURED_10,
                Ok(STRUCTURED_10),
            ),
            (
                vec![("content-type", "application/cloudevents-batch+json")],
                "[]",
                Err(415),
            ),
            (
                vec![("content-type", "application/cloudevents+avro")],
                "x",
                Err(415),
            ),
            (
                vec![("content-type", "application/cloudevents+json")],
                "[]",
                Err(400),
            ),
            (vec![("content-type", "application/json")], "{}", Err(400)),
            // application/json with ce-specversion is binary: the body is data.
            (
                with("application/json"),
                r#"{"x":1}"#,
                Ok(r#"{"specversion":"0.2","id":"bi","source":"bs","type":"bt","data":{"x":1}}"#),
            ),
            (
                with("text/plain"),
                "hello",
                Ok(
                    r#"{"specversion":"0.2","id":"bi","source":"bs","type":"bt","contenttype":"text/plain","data":"hello"}"#,
                ),
            ),
            // Binary without any content type: the body is a string.
            (
                ce_headers.to_vec(),
                "hello",
                Ok(r#"{"specversion":"0.2","id":"bi","source":"bs","type":"bt","data":"hello"}"#),
            ),
            // Binary without ce-specversion.
            (vec![("content-type", "text/plain")], "hello", Err(400)),
            (vec![], STRUCTURED_10, Err(400)),
        ];
        for (pairs, body, expected) in cases {
            let result = from_http(&headers(&pairs), Bytes::from(body));
            match (result, expected) {
                (Ok(event), Ok(json)) => {
                    assert_eq!(
                        std::str::from_utf8(&event.json).expect("utf8"),
                        json,
                        "{pairs:?}"
                    );
                }
                (Err(err), Err(status)) => {
                    assert_eq!(err.status().as_u16(), status, "{pairs:?}: {err}");
                }
                (result, expected) => {
                    panic!("{pairs:?} {body}: got {result:?}, expected {expected:?}")
                }
            }
        }
    }

    #[test]
    fn error_messages_are_rigs() {
        let cases: Vec<(Headers, &str, &str)> = vec![
            (
                vec![("content-type", "application/cloudevents-batch+json")],
                "[]",
                "The batched CloudEvents HTTP transport binding mode is currently not supported.",
            ),
            (
                vec![("content-type", "application/cloudevents+avro; x=y")],
                "",
                "The given content-type \"application/cloudevents+avro\" is currently not supported for structured mode.",
            ),
            (
                vec![("content-type", "application/cloudevents+json")],
                r#"{"specversion":"0.2"}"#,
                "The request body does not look like a CloudEvent: CloudEvents 0.2 requires \"type\" to be a non-empty string",
            ),
            (
                vec![("content-type", "text/plain")],
                "",
                "Your request looks like it's using the CloudEvents binary content mode, but the ce-specversion header is [] instead of [\"0.2\"] or [\"1.0\"].",
            ),
            (
                vec![("content-type", "text/plain"), ("ce-specversion", "0.3")],
                "",
                "but the ce-specversion header is [\"0.3\"] instead of",
            ),
            (
                vec![
                    ("content-type", "text/plain"),
                    ("ce-specversion", "1.0"),
                    ("ce-specversion", "1.0"),
                ],
                "",
                "but the ce-specversion header is [\"1.0\", \"1.0\"] instead of",
            ),
            (
                vec![
                    ("content-type", "text/plain"),
                    ("ce-specversion", "1.0"),
                    ("ce-type", "t"),
                    ("ce-id", "i"),
                    ("ce-source", ""),
                ],
                "x",
                "Your request looks like it's using the CloudEvents binary content mode but can't be parsed (CloudEvents 1.0 requires \"source\" to be a non-empty string).",
            ),
            (
                vec![
                    ("content-type", "application/json"),
                    ("ce-specversion", "1.0"),
                    ("ce-type", "t"),
                    ("ce-id", "i"),
                    ("ce-source", "s"),
                ],
                "{nope",
                "can't be parsed (the data is not valid JSON although the content type is \"application/json\"",
            ),
        ];
        for (pairs, body, expected) in cases {
            let err = from_http(&headers(&pairs), Bytes::from(body)).expect_err(expected);
            assert!(err.to_string().contains(expected), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn binary_1_0_attributes_are_strings_unquoted_and_percent_decoded() {
        let h = headers(&[
            ("content-type", "application/json; charset=utf-8"),
            ("ce-specversion", "1.0"),
            ("ce-type", "com.example.greeting"),
            ("ce-source", "/a%20b"),
            ("ce-id", "\"quoted \\\"id\\\"\""),
            ("ce-count", "3"),
            ("ce-bad", "100%zz"),
            ("ce-utf", "caf%C3%A9"),
        ]);
        let event = from_http(&h, Bytes::from_static(br#"{"name":"joe"}"#)).expect("binary 1.0");
        assert_eq!(event.spec_version, SpecVersion::V1_0);
        assert_eq!(event.source, "/a b");
        assert_eq!(event.id, "quoted \"id\"");
        assert_eq!(event.value["count"], json!("3"));
        assert_eq!(event.value["bad"], json!("100%zz"));
        assert_eq!(event.value["utf"], json!("café"));
        assert_eq!(
            event.value["datacontenttype"],
            json!("application/json; charset=utf-8")
        );
        assert_eq!(event.value["data"], json!({"name": "joe"}));
    }

    #[test]
    fn binary_0_2_extensions_are_json_decoded_like_rig() {
        let h = headers(&[
            ("content-type", "application/json"),
            ("ce-specversion", "0.2"),
            ("ce-type", "t"),
            ("ce-source", "s"),
            ("ce-id", "123"),
            ("ce-time", "2019-01-01T00:00:00Z"),
            ("ce-rig", r#"{"correlation":"c"}"#),
            ("ce-count", "3"),
            ("ce-plain", "not json"),
        ]);
        let event = from_http(&h, Bytes::new()).expect("binary 0.2");
        assert_eq!(event.id, "123");
        assert_eq!(event.value["rig"], json!({"correlation": "c"}));
        assert_eq!(event.value["count"], json!(3));
        assert_eq!(event.value["plain"], json!("not json"));
        assert!(event.value.get("contenttype").is_none());
        assert!(event.value.get("data").is_none());
    }

    #[test]
    fn non_utf8_headers_are_rejected_not_panicked_on() {
        let mut h = headers(&[("ce-specversion", "1.0"), ("ce-type", "t"), ("ce-id", "i")]);
        h.insert(
            "ce-source",
            HeaderValue::from_bytes(&[0xff, 0xfe]).expect("obs-text"),
        );
        let err = from_http(&h, Bytes::new()).expect_err("not utf-8");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(
            err.to_string().contains("\"ce-source\" is not valid UTF-8"),
            "{err}"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_bytes(&[0xff]).expect("obs-text"),
        );
        assert_eq!(
            from_http(&h, Bytes::new()).expect_err("ct").status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn header_value_decoding() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("a%20b", "a b"),
            ("%", "%"),
            ("%4", "%4"),
            ("%41%42", "AB"),
            ("%ff", "%ff"),
            ("\"\"", ""),
            ("\"a\\\\b\"", "a\\b"),
            ("\"", "\""),
            ("\"%25\"", "%"),
        ];
        for (input, expected) in cases {
            assert_eq!(decode_1_0_header_value(input), *expected, "{input}");
        }
    }
}
