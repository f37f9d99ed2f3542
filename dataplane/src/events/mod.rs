//! CloudEvents: the one model of an event inside the data plane.
//!
//! Every event — POSTed over HTTP, read from Kafka, or made by the gateway itself — becomes a
//! [`CloudEvent`]: the few attributes routing needs, the structured-mode JSON that clients receive,
//! and the same JSON parsed once, for the subscription extractors. The JSON is a [`bytes::Bytes`], so
//! fanning an event out to many connections never copies it.
//!
//! - [`parse_structured`]: a structured-mode JSON event (CloudEvents 0.1, 0.2 or 1.0). Its bytes are
//!   kept exactly as the producer sent them (RIG forwards events verbatim; DESIGN §6.1).
//! - [`from_http`]: `POST /_rig/v1/events` and `POST /v3/messages`, with RIG's content-type rules
//!   (structured or binary mode); binary mode accepts `ce-specversion` 0.2 (RIG) and 1.0.
//! - [`from_kafka`]: the CloudEvents Kafka protocol binding (`ce_*` headers = binary mode, otherwise
//!   structured JSON).
//! - [`CloudEvent::new_rig`]: the gateway's own events (`rig.connection.create`, ...), CloudEvents 1.0.
//!
//! Binary-mode events are turned into structured JSON once, here, with the attributes in a readable
//! order (`specversion`, `id`, `source`, `type`, ..., `data`). Nothing in this module panics on input.

mod cloudevent;
pub mod frame;
mod http;
mod kafka;

pub use self::http::{HttpError, from_http};
pub use cloudevent::{
    CloudEvent, SpecVersion, parse_structured, parse_structured_bytes, rig_time,
    set_own_events_version,
};
pub use kafka::from_kafka;

use thiserror::Error;

/// Why bytes (and headers) are not an acceptable CloudEvent. Every variant means "reject the input"
/// (HTTP 400, or count and skip the Kafka message); none is worth retrying.
#[derive(Debug, Error)]
pub enum Error {
    /// The bytes are not JSON at all.
    #[error("invalid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The JSON is valid but not an object.
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// Neither `specversion` nor (CloudEvents 0.1) `cloudEventsVersion` is present.
    #[error("missing \"specversion\" (\"cloudEventsVersion\" in CloudEvents 0.1)")]
    MissingSpecVersion,
    /// The spec version is not one of 0.1, 0.2, 1.0 (the value is shown as JSON, shortened).
    #[error(
        "unsupported CloudEvents version {0} (supported: \"specversion\" \"1.0\" or \"0.2\", or \"cloudEventsVersion\" \"0.1\")"
    )]
    UnsupportedSpecVersion(String),
    /// A required attribute is absent, not a string, or empty.
    #[error("CloudEvents {version} requires {attribute:?} to be a non-empty string")]
    MissingAttribute {
        /// The event's spec version.
        version: SpecVersion,
        /// The attribute's name in that version.
        attribute: &'static str,
    },
    /// Binary mode: the content type says JSON but the payload does not parse.
    #[error("the data is not valid JSON although the content type is {content_type:?}: {source}")]
    DataNotJson {
        /// The content type of the message.
        content_type: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Binary mode, CloudEvents 0.2: the payload is not UTF-8 text, and 0.2 JSON cannot carry
    /// binary data (1.0 uses `data_base64`).
    #[error("the data is not valid UTF-8 text, which CloudEvents {0} in JSON cannot carry")]
    DataNotUtf8(SpecVersion),
    /// A `ce-*`/`ce_*` or content-type header is not valid UTF-8.
    #[error("header {0:?} is not valid UTF-8")]
    HeaderNotUtf8(String),
    /// The message uses an event format other than JSON (e.g. Avro).
    #[error("unsupported event format {0:?}: only JSON is supported")]
    UnsupportedFormat(String),
    /// A structured-mode Kafka message without a payload.
    #[error("the message has no payload")]
    NoPayload,
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::{HeaderMap, HeaderName, HeaderValue};
    use bytes::Bytes;

    /// xorshift64*: a deterministic stream of pseudo-random numbers for fuzz loops.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    const SEEDS: &[&[u8]] = &[
        br#"{"specversion":"1.0","type":"t","source":"s","id":"i","data":{"name":"joe","age":30}}"#,
        br#"{"specversion":"0.2","type":"t","source":"s","id":"i","data":"x"}"#,
        br#"{"cloudEventsVersion":"0.1","eventType":"t","source":"s","eventID":"i"}"#,
    ];

    /// A valid event with a few bytes replaced, inserted or cut, or plain random bytes.
    fn mutate(rng: &mut Rng) -> Vec<u8> {
        if rng.below(4) == 0 {
            return (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        }
        let mut bytes = SEEDS[rng.below(SEEDS.len())].to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(3) {
                0 if at < bytes.len() => bytes[at] = *rng.pick(b"{}[]\":,0\\u\xff\x00e"),
                1 => bytes.insert(at, rng.next() as u8),
                _ => bytes.truncate(at),
            }
        }
        bytes
    }

    #[test]
    fn no_input_panics() {
        const NAMES: &[&str] = &[
            "content-type",
            "ce-specversion",
            "ce-type",
            "ce-source",
            "ce-id",
            "ce-",
            "ce-data",
            "ce-x",
        ];
        const VALUES: &[&[u8]] = &[
            b"application/json",
            b"application/cloudevents+json",
            b"application/cloudevents+x",
            b"text/plain",
            b"1.0",
            b"0.2",
            b"\"%",
            b"%41",
            b"\xff\xfe",
            b"",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let body = mutate(&mut rng);
            let _ = parse_structured(&body);

            let mut headers = HeaderMap::new();
            let mut kafka: Vec<(String, Option<Vec<u8>>)> = Vec::new();
            for _ in 0..rng.below(6) {
                let name = NAMES[rng.below(NAMES.len())];
                let value = VALUES[rng.below(VALUES.len())];
                headers.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_bytes(value).expect("header value"),
                );
                let kafka_name = name.replacen('-', "_", usize::from(name.starts_with("ce-")));
                kafka.push((kafka_name, (rng.below(8) > 0).then(|| value.to_vec())));
            }
            if let Err(err) = from_http(&headers, Bytes::from(body.clone())) {
                let _ = (err.status(), err.to_string());
            }
            let kafka_headers = kafka.iter().map(|(n, v)| (n.as_str(), v.as_deref()));
            let payload = (rng.below(8) > 0).then_some(body.as_slice());
            if let Ok(event) = from_kafka(kafka_headers, payload) {
                // Whatever was accepted re-parses as the same event.
                assert_eq!(
                    parse_structured(&event.json)
                        .expect("built JSON parses")
                        .value,
                    event.value
                );
            }
        }
    }
}
