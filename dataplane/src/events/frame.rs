//! Frames: an event encoded once for every transport, shared by all connections that receive it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::events::CloudEvent;

/// The SSE comment line sent as a heartbeat (RIG's text), a static allocation shared by all.
pub const SSE_HEARTBEAT: Bytes = Bytes::from_static(b": heartbeat\n\n");

/// One event, encoded once per transport. Connections receive an `Arc<Frame>`; the bytes are
/// shared, never copied per connection.
#[derive(Debug)]
pub struct Frame {
    /// The CloudEvent type (used for `event:` lines and logging).
    pub event_type: String,
    /// `id: …\nevent: …\ndata: …\n\n`, ready to write to an SSE stream.
    pub sse: Bytes,
    /// The event JSON, as one WebSocket text frame or long-polling array element.
    pub json: Bytes,
}

impl Frame {
    /// Encode `event` with the resume token `id` (omitted when `None`).
    pub fn new(event: &CloudEvent, id: Option<&str>) -> Self {
        Self {
            event_type: event.event_type.clone(),
            sse: encode_sse(id, &event.event_type, &event.json),
            json: event.json.clone(),
        }
    }

    /// The resume token the frame was encoded with (its SSE `id:` line), for transports that
    /// report it another way (long-polling's `last_event_id`). Read back from the encoded bytes so
    /// that a frame carries no second copy.
    pub fn resume_token(&self) -> Option<&str> {
        let rest = self.sse.strip_prefix(b"id: ")?;
        let end = rest.iter().position(|b| *b == b'\n')?;
        std::str::from_utf8(&rest[..end]).ok()
    }
}

/// Encode one SSE message. `data` may contain newlines (pretty-printed JSON): each line becomes its
/// own `data:` line, as the SSE format requires, so the client's `event.data` is the JSON unchanged.
pub fn encode_sse(id: Option<&str>, event_type: &str, data: &[u8]) -> Bytes {
    // Sized exactly (a frame retained in the replay window keeps its whole allocation): each
    // line break adds a `data: ` prefix and a LF (a CRLF counts twice: a little spare).
    let breaks = data.iter().filter(|b| **b == b'\n' || **b == b'\r').count();
    let id_len = id.map_or(0, |id| 4 + id.len() + 1);
    let capacity = id_len + 7 + event_type.len() + 1 + (breaks + 1) * 7 + data.len() + 1;
    let mut out = BytesMut::with_capacity(capacity);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        put_single_line(&mut out, id.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    put_single_line(&mut out, event_type.as_bytes());
    out.put_u8(b'\n');
    // Every line break the SSE grammar knows (CRLF, LF, and a lone CR) starts a new `data:`
    // line, so a client splitting lines by the spec reassembles exactly the lines sent (a lone CR
    // in JSON whitespace becomes a LF, which JSON reads the same).
    let mut rest = data;
    loop {
        out.put_slice(b"data: ");
        match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            Some(i) => {
                out.put_slice(&rest[..i]);
                out.put_u8(b'\n');
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
            }
            None => {
                out.put_slice(rest);
                out.put_u8(b'\n');
                break;
            }
        }
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// Field values that must stay on one line: line breaks would end the field early and let a
/// producer inject fields, so they are replaced by spaces.
fn put_single_line(out: &mut BytesMut, value: &[u8]) {
    for &b in value {
        out.put_u8(if b == b'\n' || b == b'\r' { b' ' } else { b });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_message_has_id_event_and_data_lines() {
        let bytes = encode_sse(Some("abc"), "greeting", br#"{"a":1}"#);
        assert_eq!(&bytes[..], b"id: abc\nevent: greeting\ndata: {\"a\":1}\n\n");
    }

    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        let bytes = encode_sse(None, "t", b"{\n  \"a\": 1\r\n}");
        assert_eq!(
            &bytes[..],
            b"event: t\ndata: {\ndata:   \"a\": 1\ndata: }\n\n"
        );
    }

    #[test]
    fn newlines_in_type_or_id_cannot_inject_fields() {
        let bytes = encode_sse(Some("1\nevent: evil"), "t\ndata: x", b"{}");
        let text = std::str::from_utf8(&bytes).expect("utf8");
        assert_eq!(
            text.lines().filter(|l| l.starts_with("event:")).count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("data:")).count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn the_resume_token_is_read_back_from_the_frame() {
        let event = CloudEvent::new_rig("t", serde_json::json!({}));
        let frame = Frame::new(&event, Some("1~a/0:3,b/1:7"));
        assert_eq!(frame.resume_token(), Some("1~a/0:3,b/1:7"));
        assert_eq!(Frame::new(&event, None).resume_token(), None);
    }

    #[test]
    fn every_sse_line_break_starts_a_data_line() {
        let bytes = encode_sse(None, "t", b"{\"a\":1,\r\r\"b\":2\r\n}");
        assert_eq!(
            &bytes[..],
            b"event: t\ndata: {\"a\":1,\ndata: \ndata: \"b\":2\ndata: }\n\n"
        );
        // No bare CR is left anywhere in the frame.
        assert!(!bytes.contains(&b'\r'));
        assert_eq!(&encode_sse(None, "t", b"")[..], b"event: t\ndata: \n\n");
    }
}
