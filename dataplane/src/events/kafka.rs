//! The Kafka protocol binding (CloudEvents 1.0 Kafka binding, as RIG 3 reads it; rig-behaviour
//! §2.3).
//!
//! - `content-type: application/cloudevents+json` → structured JSON;
//!   any other `application/cloudevents+…` → unsupported format (e.g. Avro).
//! - a `ce_specversion` header → binary mode: attributes from the `ce_*` headers (names
//!   lower-cased), `content-type` → `datacontenttype`, payload → data.
//! - otherwise → structured JSON (RIG's default).
//!
//! Header names match case-insensitively; headers with a null value count as absent.

use serde_json::Value;

use super::cloudevent::{Binary, media_type, parse_structured};
use super::http::decode_0_2_attribute;
use super::{CloudEvent, Error, Result, SpecVersion};

const CE_PREFIX: &[u8] = b"ce_";

/// The CloudEvent in a Kafka message (module docs for the rules). `headers` are the message's
/// headers in order; `payload` is its value.
pub fn from_kafka<'a>(
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    payload: Option<&[u8]>,
) -> Result<CloudEvent> {
    let mut content_type: Option<&str> = None;
    let mut spec_version: Option<&str> = None;
    let mut attributes: Vec<(String, &str)> = Vec::new();
    for (name, value) in headers {
        let Some(value) = value else { continue };
        let utf8 = || std::str::from_utf8(value).map_err(|_| Error::HeaderNotUtf8(name.to_owned()));
        if name.eq_ignore_ascii_case("content-type") {
            if content_type.is_none() {
                content_type = Some(utf8()?);
            }
            continue;
        }
        let is_ce = name
            .as_bytes()
            .get(..CE_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(CE_PREFIX));
        // The prefix is ASCII, so slicing after it is on a char boundary.
        let Some(attribute) = name.get(CE_PREFIX.len()..).filter(|_| is_ce) else {
            continue;
        };
        let attribute = attribute.to_ascii_lowercase();
        if attribute == "specversion" {
            spec_version = spec_version.or(Some(utf8()?));
        } else {
            attributes.push((attribute, utf8()?));
        }
    }

    if let Some(content_type) = content_type {
        let essence = media_type(content_type);
        if essence == "application/cloudevents+json" {
            return structured(payload);
        }
        if let Some(format) = essence.strip_prefix("application/cloudevents") {
            return Err(Error::UnsupportedFormat(
                format.trim_start_matches(['+', '-']).to_owned(),
            ));
        }
    }
    let Some(spec_version) = spec_version else {
        return structured(payload);
    };
    let spec_version = match spec_version {
        "0.2" => SpecVersion::V0_2,
        "1.0" => SpecVersion::V1_0,
        other => {
            return Err(Error::UnsupportedSpecVersion(
                Value::from(other).to_string(),
            ));
        }
    };
    let attributes = attributes
        .into_iter()
        .map(|(name, text)| {
            let value = match spec_version {
                SpecVersion::V1_0 => Value::from(text),
                SpecVersion::V0_1 | SpecVersion::V0_2 => decode_0_2_attribute(&name, text),
            };
            (name, value)
        })
        .collect();
    Binary {
        spec_version,
        attributes,
        content_type,
        data: payload.unwrap_or_default(),
    }
    .into_event()
}

fn structured(payload: Option<&[u8]>) -> Result<CloudEvent> {
    match payload {
        None | Some([]) => Err(Error::NoPayload),
        // Confluent's wire format starts with a zero "magic" byte; JSON never does.
        Some([0, ..]) => Err(Error::UnsupportedFormat(
            "avro (Confluent wire format)".into(),
        )),
        Some(payload) => parse_structured(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type Headers<'a> = Vec<(&'a str, Option<&'a [u8]>)>;

    const STRUCTURED: &[u8] =
        br#"{"specversion":"1.0","type":"t","source":"s","id":"i","data":{"name":"joe"}}"#;

    fn ce_headers(version: &'static str) -> Headers<'static> {
        vec![
            ("ce_specversion", Some(version.as_bytes())),
            ("ce_type", Some(b"greeting")),
            ("ce_source", Some(b"/src")),
            ("ce_id", Some(b"42")),
        ]
    }

    #[test]
    fn structured_messages_keep_their_bytes() {
        let cases: Vec<Headers<'_>> = vec![
            vec![],
            vec![(
                "content-type",
                Some(b"application/cloudevents+json; charset=utf-8"),
            )],
            vec![("Content-Type", Some(b"application/cloudevents+json"))],
            vec![("traceparent", Some(&[0xff, 0xfe]))],
            // Structured wins over ce_ headers when the content type says so.
            {
                let mut h = ce_headers("1.0");
                h.push(("content-type", Some(b"application/cloudevents+json")));
                h
            },
            vec![("content-type", None)],
        ];
        for headers in cases {
            let event = from_kafka(headers.clone(), Some(STRUCTURED)).expect("structured");
            assert_eq!(event.json, STRUCTURED, "{headers:?}");
            assert_eq!(event.event_type, "t");
        }
    }

    #[test]
    fn binary_messages_build_json() {
        struct Case {
            headers: Headers<'static>,
            payload: Option<&'static [u8]>,
            json: &'static str,
        }
        let with = |version, extra: Headers<'static>| {
            let mut h = ce_headers(version);
            h.extend(extra);
            h
        };
        let cases = [
            Case {
                headers: with("1.0", vec![("content-type", Some(b"application/json"))]),
                payload: Some(br#"{"name":"joe"}"#),
                json: r#"{"specversion":"1.0","id":"42","source":"/src","type":"greeting","datacontenttype":"application/json","data":{"name":"joe"}}"#,
            },
            Case {
                headers: with(
                    "1.0",
                    vec![
                        ("content-type", Some(b"text/plain")),
                        ("CE_Extra", Some(b"7")),
                    ],
                ),
                payload: Some(b"hi"),
                json: r#"{"specversion":"1.0","id":"42","source":"/src","type":"greeting","extra":"7","datacontenttype":"text/plain","data":"hi"}"#,
            },
            Case {
                headers: with("1.0", vec![]),
                payload: None,
                json: r#"{"specversion":"1.0","id":"42","source":"/src","type":"greeting"}"#,
            },
            Case {
                headers: with(
                    "1.0",
                    vec![("content-type", Some(b"application/octet-stream"))],
                ),
                payload: Some(&[1, 2, 3, 0xff]),
                json: r#"{"specversion":"1.0","id":"42","source":"/src","type":"greeting","datacontenttype":"application/octet-stream","data_base64":"AQID/w=="}"#,
            },
            Case {
                headers: with(
                    "0.2",
                    vec![
                        ("content-type", Some(b"application/json")),
                        ("ce_rig", Some(br#"{"a":1}"#)),
                    ],
                ),
                payload: Some(b"[1,2]"),
                json: r#"{"specversion":"0.2","id":"42","source":"/src","type":"greeting","rig":{"a":1},"data":[1,2]}"#,
            },
            // A null-valued header is absent; the first specversion wins.
            Case {
                headers: {
                    let mut h = vec![("ce_specversion", None), ("ce_x", None)];
                    h.extend(with("1.0", vec![("ce_specversion", Some(b"0.2"))]));
                    h
                },
                payload: None,
                json: r#"{"specversion":"1.0","id":"42","source":"/src","type":"greeting"}"#,
            },
        ];
        for case in cases {
            let event = from_kafka(case.headers.clone(), case.payload).expect(case.json);
            assert_eq!(
                std::str::from_utf8(&event.json).expect("utf8"),
                case.json,
                "{:?}",
                case.headers
            );
            assert_eq!(event.id, "42");
        }
    }

    #[test]
    fn bad_messages_are_errors() {
        let cases: Vec<(Headers<'static>, Option<&'static [u8]>, &str)> = vec![
            (vec![], None, "no payload"),
            (vec![], Some(b""), "no payload"),
            (
                vec![],
                Some(&[0, 0, 0, 0, 1, 2]),
                "unsupported event format \"avro",
            ),
            (
                vec![("content-type", Some(b"application/cloudevents+avro"))],
                Some(b"x"),
                "unsupported event format \"avro\"",
            ),
            (
                vec![("content-type", Some(b"application/cloudevents-batch+json"))],
                Some(b"[]"),
                "unsupported event format \"batch+json\"",
            ),
            (vec![], Some(b"not json"), "invalid JSON"),
            (
                vec![("ce_specversion", Some(b"0.3"))],
                None,
                "unsupported CloudEvents version \"0.3\"",
            ),
            (
                vec![("ce_specversion", Some(b"1.0"))],
                None,
                "requires \"type\"",
            ),
            (
                vec![("ce_type", Some(&[0xff]))],
                Some(STRUCTURED),
                "header \"ce_type\" is not valid UTF-8",
            ),
            (
                vec![("content-type", Some(&[0xff]))],
                Some(STRUCTURED),
                "header \"content-type\"",
            ),
            (
                {
                    let mut h = ce_headers("1.0");
                    h.push(("content-type", Some(b"application/json")));
                    h
                },
                Some(b"{"),
                "not valid JSON although",
            ),
        ];
        for (headers, payload, expected) in cases {
            let err = from_kafka(headers.clone(), payload).expect_err(expected);
            assert!(err.to_string().contains(expected), "{headers:?}: {err}");
        }
    }

    #[test]
    fn json_content_types_with_suffix_are_data_json() {
        let mut h = ce_headers("1.0");
        h.push(("content-type", Some(b"application/vnd.example+json")));
        let event = from_kafka(h, Some(br#"{"a":true}"#)).expect("binary");
        assert_eq!(event.data(), Some(&json!({"a": true})));
    }
}
