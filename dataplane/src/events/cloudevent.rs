//! The [`CloudEvent`] type, structured-mode parsing and validation, and the binary-mode builder
//! shared by the HTTP and Kafka bindings.

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{Error, Result};

/// A CloudEvents specification version the gateway accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecVersion {
    /// CloudEvents 0.1 (`cloudEventsVersion`, `eventType`, `eventID`), accepted as RIG does.
    V0_1,
    /// CloudEvents 0.2 (`specversion: "0.2"`), RIG's version.
    V0_2,
    /// CloudEvents 1.0 (`specversion: "1.0"`), accepted everywhere (DESIGN §6.1).
    V1_0,
}

impl SpecVersion {
    /// The version as written in events: `"0.1"`, `"0.2"` or `"1.0"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1",
            Self::V0_2 => "0.2",
            Self::V1_0 => "1.0",
        }
    }

    /// Names of the `type` and `id` attributes in this version.
    fn type_and_id(self) -> (&'static str, &'static str) {
        match self {
            Self::V0_1 => ("eventType", "eventID"),
            Self::V0_2 | Self::V1_0 => ("type", "id"),
        }
    }

    /// Name of the attribute that carries the data's media type.
    fn content_type_attribute(self) -> &'static str {
        match self {
            Self::V0_1 => "contentType",
            Self::V0_2 => "contenttype",
            Self::V1_0 => "datacontenttype",
        }
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated CloudEvent.
///
/// Guarantees: `event_type` and `id` are non-empty (`source` is empty when the producer sent none,
/// which RIG accepts); `json` is a JSON object whose parse is
/// `value`; for a structured-mode event `json` holds exactly the bytes the producer sent.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    /// The spec version the event declares.
    pub spec_version: SpecVersion,
    /// `type` (`eventType` in 0.1).
    pub event_type: String,
    /// `id` (`eventID` in 0.1).
    pub id: String,
    /// `source`.
    pub source: String,
    /// The event as structured-mode JSON: for a structured-mode event, exactly the bytes the producer
    /// sent (clients must receive the JSON as the producer sent it); for binary mode, the JSON built
    /// from the attributes + data.
    pub json: Bytes,
    /// The same event parsed (extractors read JSON pointers from it).
    pub value: Value,
}

impl CloudEvent {
    /// An event made by the gateway (`rig.connection.create`, `rig.subscriptions_set`,
    /// `rig.connection.gap`, ...) in the format `RIG_OWN_EVENTS_SPECVERSION` chose
    /// ([`set_own_events_version`]): RIG's by default.
    pub fn new_rig(event_type: impl Into<String>, data: Value) -> Self {
        Self::new_rig_as(own_events_version(), event_type, data)
    }

    /// [`Self::new_rig`] with the request's trace context as a top-level `traceparent`, as RIG
    /// adds it when one exists.
    pub fn new_rig_traced(
        event_type: impl Into<String>,
        data: Value,
        traceparent: Option<&str>,
    ) -> Self {
        Self::build_rig(own_events_version(), event_type.into(), data, traceparent)
    }

    /// [`Self::new_rig`] in `version`'s format:
    /// - 0.2 (RIG's): `source` `rig`, `id` a UUID v4, `time` RFC 3339 with microseconds and
    ///   `+00:00` (`2019-03-27T11:53:18.435690+00:00`), as RIG sends them;
    /// - 1.0: `source` `/rig`, `time` with `Z`, `id` unique within the process and, with
    ///   overwhelming probability, across processes (a per-process random prefix and a counter).
    pub fn new_rig_as(version: SpecVersion, event_type: impl Into<String>, data: Value) -> Self {
        Self::build_rig(version, event_type.into(), data, None)
    }

    fn build_rig(
        version: SpecVersion,
        event_type: String,
        data: Value,
        traceparent: Option<&str>,
    ) -> Self {
        let now = SystemTime::now();
        let (version, id, source, time) = match version {
            SpecVersion::V1_0 => (
                SpecVersion::V1_0,
                next_rig_id(),
                RIG_SOURCE,
                format_rfc3339(now),
            ),
            SpecVersion::V0_1 | SpecVersion::V0_2 => (
                SpecVersion::V0_2,
                crate::support::uuid_v4(),
                RIG_SOURCE_0_2,
                rig_time(now),
            ),
        };
        let mut pairs = vec![
            ("specversion".to_owned(), Value::from(version.as_str())),
            ("id".to_owned(), Value::from(id.clone())),
            ("source".to_owned(), Value::from(source)),
            ("type".to_owned(), Value::from(event_type.clone())),
            ("time".to_owned(), Value::from(time)),
        ];
        // `null`: an event without data (`rig.session_killed`, as RIG sends it).
        if !data.is_null() {
            pairs.push(("data".to_owned(), data));
        }
        if let Some(tp) = traceparent {
            pairs.push(("traceparent".to_owned(), Value::from(tp)));
        }
        let json = Bytes::from(write_object(&pairs).into_boxed_slice());
        Self {
            spec_version: version,
            event_type,
            id,
            source: source.to_owned(),
            json,
            value: Value::Object(pairs.into_iter().collect()),
        }
    }

    /// The event's `data`, if it has one (not `data_base64`).
    pub fn data(&self) -> Option<&Value> {
        self.value.get("data")
    }
}

/// The `source` of the gateway's own events in CloudEvents 1.0.
const RIG_SOURCE: &str = "/rig";
/// The `source` of the gateway's own events in RIG's format (CloudEvents 0.2).
const RIG_SOURCE_0_2: &str = "rig";

/// `RIG_OWN_EVENTS_SPECVERSION`, set once at start; RIG's 0.2 until then.
static OWN_EVENTS_VERSION: OnceLock<SpecVersion> = OnceLock::new();

/// Choose the format of the gateway's own events for this process (`RIG_OWN_EVENTS_SPECVERSION`);
/// the first call wins.
pub fn set_own_events_version(version: SpecVersion) {
    let _ = OWN_EVENTS_VERSION.set(version);
}

fn own_events_version() -> SpecVersion {
    OWN_EVENTS_VERSION
        .get()
        .copied()
        .unwrap_or(SpecVersion::V0_2)
}

/// Parse a structured-mode JSON CloudEvent (0.1, 0.2 or 1.0); the event keeps a copy of exactly
/// `body`'s bytes.
///
/// Accepted: a JSON object with `specversion` `"0.2"` or `"1.0"` and non-empty string `type`,
/// `source` and `id`, or (0.1) `cloudEventsVersion` `"0.1"` and non-empty `eventType`, `source` and
/// `eventID`. Other properties are kept as they are.
pub fn parse_structured(body: &[u8]) -> Result<CloudEvent> {
    let value: Value = serde_json::from_slice(body).map_err(Error::Json)?;
    let attributes = validate(&value)?;
    // Copied only once valid, at its exact size: an event may be retained for replay long after
    // the request or Kafka buffer it arrived in would be gone.
    Ok(attributes.into_event(Bytes::copy_from_slice(body), value))
}

/// [`parse_structured`] of a received buffer. The event never keeps `body` itself: a slice of a
/// larger read buffer would keep all of it alive as long as the event is retained.
pub fn parse_structured_bytes(body: Bytes) -> Result<CloudEvent> {
    parse_structured(&body)
}

/// The attributes [`validate`] checked.
struct Validated {
    spec_version: SpecVersion,
    event_type: String,
    id: String,
    source: String,
}

impl Validated {
    fn into_event(self, json: Bytes, value: Value) -> CloudEvent {
        CloudEvent {
            spec_version: self.spec_version,
            event_type: self.event_type,
            id: self.id,
            source: self.source,
            json,
            value,
        }
    }
}

/// Check that `value` is a CloudEvent of a supported version with its required attributes.
fn validate(value: &Value) -> Result<Validated> {
    let object = value
        .as_object()
        .ok_or_else(|| Error::NotAnObject(json_kind(value)))?;
    let spec_version = match object.get("specversion") {
        Some(Value::String(v)) if v == "0.2" => SpecVersion::V0_2,
        Some(Value::String(v)) if v == "1.0" => SpecVersion::V1_0,
        Some(other) => return Err(Error::UnsupportedSpecVersion(snippet(other))),
        None => match object.get("cloudEventsVersion") {
            Some(Value::String(v)) if v == "0.1" => SpecVersion::V0_1,
            Some(other) => return Err(Error::UnsupportedSpecVersion(snippet(other))),
            None => return Err(Error::MissingSpecVersion),
        },
    };
    let required = |attribute: &'static str| {
        object
            .get(attribute)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or(Error::MissingAttribute {
                version: spec_version,
                attribute,
            })
    };
    let (type_attribute, id_attribute) = spec_version.type_and_id();
    // Absent (or null), `source` is accepted as RIG accepts it (RIG issue #191: frontends and
    // backends written for RIG send events without one); present, it must be a non-empty string.
    let source = match object.get("source") {
        None | Some(Value::Null) => String::new(),
        Some(_) => required("source")?,
    };
    Ok(Validated {
        spec_version,
        event_type: required(type_attribute)?,
        source,
        id: required(id_attribute)?,
    })
}

/// A binary-mode message (attributes in headers, data in the body), before validation.
#[derive(Debug)]
pub(super) struct Binary<'a> {
    /// From the `ce-specversion` / `ce_specversion` header: 0.2 or 1.0.
    pub spec_version: SpecVersion,
    /// The other `ce-*` headers without their prefix, in header order, already decoded.
    pub attributes: Vec<(String, Value)>,
    /// The message's content type, if any.
    pub content_type: Option<&'a str>,
    /// The body; empty means "no data".
    pub data: &'a [u8],
}

impl Binary<'_> {
    /// Build and validate the structured-mode event.
    ///
    /// The content type becomes `datacontenttype` (1.0) or, for 0.2 and only when it is not JSON,
    /// `contenttype` (RIG drops it for JSON). A JSON content type makes the body JSON `data`; any
    /// other makes it a string, or `data_base64` (1.0) when it is not UTF-8 text.
    pub fn into_event(self) -> Result<CloudEvent> {
        let version = self.spec_version;
        let content_type_attribute = version.content_type_attribute();
        let mut pairs: Vec<(String, Value)> = Vec::with_capacity(self.attributes.len() + 3);
        pairs.push(("specversion".to_owned(), Value::from(version.as_str())));
        let mut seen = HashSet::with_capacity(self.attributes.len());
        for (name, value) in self.attributes {
            let reserved = name.is_empty()
                || name == "specversion"
                || name == "data"
                || name == "data_base64"
                || name == content_type_attribute;
            // The first of repeated headers wins.
            if !reserved && seen.insert(name.clone()) {
                pairs.push((name, value));
            }
        }
        // A readable, stable order: the required attributes first, then the rest as they came.
        pairs.sort_by_key(|(name, _)| attribute_rank(name));
        let json_data = self.content_type.is_some_and(is_json_media_type);
        if let Some(content_type) = self.content_type
            && (version == SpecVersion::V1_0 || !json_data)
        {
            pairs.push((content_type_attribute.to_owned(), Value::from(content_type)));
        }
        if !self.data.is_empty() {
            if json_data {
                let data =
                    serde_json::from_slice(self.data).map_err(|source| Error::DataNotJson {
                        content_type: self.content_type.unwrap_or_default().to_owned(),
                        source,
                    })?;
                pairs.push(("data".to_owned(), data));
            } else if let Ok(text) = std::str::from_utf8(self.data) {
                pairs.push(("data".to_owned(), Value::from(text)));
            } else if version == SpecVersion::V1_0 {
                pairs.push(("data_base64".to_owned(), Value::from(base64(self.data))));
            } else {
                return Err(Error::DataNotUtf8(version));
            }
        }
        let value = Value::Object(pairs.iter().cloned().collect::<Map<String, Value>>());
        let attributes = validate(&value)?;
        let json = Bytes::from(write_object(&pairs).into_boxed_slice());
        Ok(attributes.into_event(json, value))
    }
}

/// Position of an attribute in built JSON: required attributes first, others in arrival order.
fn attribute_rank(name: &str) -> usize {
    const FIRST: [&str; 4] = ["specversion", "id", "source", "type"];
    FIRST.iter().position(|n| *n == name).unwrap_or(FIRST.len())
}

/// Whether a content type denotes JSON data: `application/json`, `text/json` or any `+json` suffix,
/// ignoring parameters and case.
pub(super) fn is_json_media_type(content_type: &str) -> bool {
    let essence = media_type(content_type);
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// The media type of a content-type value, without parameters, trimmed and lower-cased.
pub(super) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Serialise `pairs` as one JSON object in the given order.
fn write_object(pairs: &[(String, Value)]) -> Vec<u8> {
    let mut out = String::with_capacity(64 * pairs.len());
    out.push('{');
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing to a String cannot fail; `Value`'s Display is its compact JSON.
        let _ = write!(out, "{}:{}", Value::from(name.as_str()), value);
    }
    out.push('}');
    out.into_bytes()
}

/// "an array", "a string", ... for messages.
pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `value` as JSON, shortened to keep error messages small.
pub(super) fn snippet(value: &Value) -> String {
    const MAX: usize = 64;
    let mut text = value.to_string();
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Standard base64 with padding (RFC 4648 §4), for `data_base64`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A unique event id: a random per-process prefix and a counter.
fn next_rig_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        // std seeds RandomState from the OS's randomness; mixing in the time and pid is cheap
        // insurance against two processes sharing a seed.
        let mut hasher = std::hash::RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}-{n:08x}")
}

/// RFC 3339 in UTC with microseconds, e.g. `2019-03-27T11:53:18.435690Z`.
/// `time` as RIG writes it: RFC 3339 with microseconds and `+00:00`
/// (`2019-03-27T11:53:18.435690+00:00`).
pub fn rig_time(time: SystemTime) -> String {
    let mut text = format_rfc3339(time);
    text.pop();
    text.push_str("+00:00");
    text
}

pub(super) fn format_rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (the era-based algorithm
/// from Howard Hinnant's "chrono-Compatible Low-Level Date Algorithms").
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests;
