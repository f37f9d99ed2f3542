//! The parts of RFC 6455 that a send-only WebSocket server needs: the opening handshake's accept
//! key, the headers of the (unmasked) frames it writes, close payloads, and an incremental parser
//! for what clients send.
//!
//! The parser works on a small fixed buffer. Control frames (ping, pong, close) are at most 131
//! bytes on the wire and are parsed whole; data frames (text, binary, continuation) are recognised
//! by their header and their payload is skipped as it streams in, never buffered: this endpoint
//! does not accept data from clients, so nothing but the header matters.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, Version, header};
use sha1::{Digest, Sha1};

/// The GUID appended to the client's key (RFC 6455 §1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version (RFC 6455 §4.1).
pub const VERSION: &str = "13";

/// Opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// Continuation of a fragmented data message.
    pub const CONTINUATION: u8 = 0x0;
    /// Text data.
    pub const TEXT: u8 = 0x1;
    /// Binary data.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Close codes sent by this server (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure (RIG closes every refused or finished connection with it).
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The client sent text that is not UTF-8 (a close reason).
    pub const INVALID_DATA: u16 = 1007;
    /// The connection broke a policy (here: it could not keep up with its events).
    pub const POLICY: u16 = 1008;
}

/// Largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Largest close reason: a control payload less the two bytes of the code.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// The read buffer: the largest frame parsed whole is a control frame (2 + 4 + 125 bytes), the
/// largest header 14 bytes, so this always has room for the next read.
pub const READ_BUFFER: usize = 256;

/// Why a request cannot be upgraded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not an HTTP/1.1 upgrade to `websocket` (`Upgrade: websocket`, `Connection: Upgrade`):
    /// answer 400.
    #[error(
        "Expected a WebSocket upgrade request (HTTP/1.1, Upgrade: websocket, Connection: Upgrade)."
    )]
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13: answer 426 with `Sec-WebSocket-Version: 13`.
    #[error("Unsupported WebSocket version: this server speaks version 13.")]
    Version,
    /// `Sec-WebSocket-Key` is missing or is not 16 base64-encoded bytes: answer 400.
    #[error("Missing or malformed Sec-WebSocket-Key header.")]
    Key,
}

/// Check an upgrade request; on success, the `Sec-WebSocket-Accept` value to answer with.
pub fn accept(version: Version, headers: &HeaderMap) -> Result<String, HandshakeError> {
    if version != Version::HTTP_11
        || !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(HandshakeError::NotUpgrade);
    }
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes().trim_ascii() == VERSION.as_bytes());
    if !version_ok {
        return Err(HandshakeError::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|v| v.as_bytes().trim_ascii())
        .ok_or(HandshakeError::Key)?;
    match STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(accept_key(key)),
        _ => Err(HandshakeError::Key),
    }
}

/// `base64(SHA-1(key ‖ GUID))` (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    STANDARD.encode(sha.finalize())
}

/// Whether a comma-separated header (any of its occurrences) contains `token`, ignoring case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The header of a frame this server sends: final fragment, unmasked.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    bytes: [u8; 10],
    len: u8,
}

impl Head {
    /// The header of a frame with `opcode` and a payload of `payload_len` bytes.
    pub fn new(opcode: u8, payload_len: usize) -> Self {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | (opcode & 0x0F);
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(payload_len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// `reason` cut to at most [`MAX_CLOSE_REASON`] bytes, at a character boundary.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// A whole close frame: `code`, then `reason` (truncated to fit a control frame).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = truncate_reason(reason);
    let mut out = Vec::with_capacity(4 + reason.len());
    out.extend_from_slice(Head::new(opcode::CLOSE, 2 + reason.len()).as_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

/// A whole control frame with `opcode` and `payload` (at most 125 bytes; longer is cut).
pub fn control_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut out = Vec::with_capacity(2 + payload.len());
    out.extend_from_slice(Head::new(opcode, payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Whether a client may send close `code` (RFC 6455 §7.4; 1012–1014 registered since).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A client frame that breaks RFC 6455. The connection is closed with [`Self::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A reserved bit is set (no extension was negotiated).
    #[error("Protocol error: reserved bits set.")]
    Reserved,
    /// An opcode RFC 6455 does not define.
    #[error("Protocol error: unknown opcode {0:#x}.")]
    Opcode(u8),
    /// Client frames must be masked (RFC 6455 §5.1).
    #[error("Protocol error: client frames must be masked.")]
    Unmasked,
    /// A control frame that is fragmented or longer than 125 bytes.
    #[error("Protocol error: control frames must be whole and at most 125 bytes.")]
    Control,
    /// A 64-bit payload length with the most significant bit set.
    #[error("Protocol error: invalid payload length.")]
    Length,
    /// A close frame with a one-byte payload or a code clients may not send.
    #[error("Protocol error: invalid close frame.")]
    Close,
    /// A close reason that is not UTF-8.
    #[error("Invalid close reason: not UTF-8.")]
    Utf8,
}

impl ProtocolError {
    /// The close code to answer with.
    pub fn close_code(self) -> u16 {
        match self {
            Self::Utf8 => close_code::INVALID_DATA,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// The payload of a control frame, unmasked.
#[derive(Debug, Clone, Copy)]
pub struct Control {
    bytes: [u8; MAX_CONTROL_PAYLOAD],
    len: u8,
}

impl Control {
    /// The payload bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What a client sent.
#[derive(Debug, Clone, Copy)]
pub enum Incoming {
    /// A ping: answer with a pong carrying the same payload.
    Ping(Control),
    /// A pong (answers a server ping, or unsolicited): nothing to do.
    Pong,
    /// The client closes, with its code (`None`: no code given).
    Close(Option<u16>),
    /// A data frame with this opcode; its payload is skipped.
    Data(u8),
}

/// An incremental parser of client frames over a fixed buffer: read into [`Reader::spare`],
/// report with [`Reader::filled`], then take frames with [`Reader::next`] until it says `None`.
#[derive(Debug)]
pub struct Reader {
    buf: [u8; READ_BUFFER],
    len: usize,
    /// Payload bytes of a data frame still to discard.
    skip: u64,
}

impl Default for Reader {
    fn default() -> Self {
        Self {
            buf: [0; READ_BUFFER],
            len: 0,
            skip: 0,
        }
    }
}

impl Reader {
    /// The free part of the buffer, to read into. Never empty.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Note that `n` bytes were read into [`Reader::spare`].
    pub fn filled(&mut self, n: usize) {
        self.len = (self.len + n).min(READ_BUFFER);
    }

    /// The next whole frame in the buffer, `None` when more bytes are needed.
    pub fn next(&mut self) -> Result<Option<Incoming>, ProtocolError> {
        if self.skip > 0 {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(self.len);
            self.consume(n);
            self.skip -= n as u64;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        if self.len < 2 {
            return Ok(None);
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        if b0 & 0x70 != 0 {
            return Err(ProtocolError::Reserved);
        }
        let fin = b0 & 0x80 != 0;
        let op = b0 & 0x0F;
        if !matches!(
            op,
            opcode::CONTINUATION
                | opcode::TEXT
                | opcode::BINARY
                | opcode::CLOSE
                | opcode::PING
                | opcode::PONG
        ) {
            return Err(ProtocolError::Opcode(op));
        }
        if b1 & 0x80 == 0 {
            return Err(ProtocolError::Unmasked);
        }
        let control = op >= opcode::CLOSE;
        let len7 = b1 & 0x7F;
        if control && (!fin || usize::from(len7) > MAX_CONTROL_PAYLOAD) {
            return Err(ProtocolError::Control);
        }
        let (extended, payload_len) = match len7 {
            126 => {
                if self.len < 4 {
                    return Ok(None);
                }
                (2, u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]])))
            }
            127 => {
                if self.len < 10 {
                    return Ok(None);
                }
                let mut be = [0u8; 8];
                be.copy_from_slice(&self.buf[2..10]);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(ProtocolError::Length);
                }
                (8, len)
            }
            n => (0, u64::from(n)),
        };
        let head = 2 + extended + 4;
        if self.len < head {
            return Ok(None);
        }
        if !control {
            self.consume(head);
            self.skip = payload_len;
            return Ok(Some(Incoming::Data(op)));
        }
        // Control frames are at most 125 bytes (checked above).
        let payload_len = payload_len as usize;
        if self.len < head + payload_len {
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&self.buf[head - 4..head]);
        let mut payload = Control {
            bytes: [0; MAX_CONTROL_PAYLOAD],
            len: payload_len as u8,
        };
        for (i, byte) in self.buf[head..head + payload_len].iter().enumerate() {
            payload.bytes[i] = byte ^ mask[i % 4];
        }
        self.consume(head + payload_len);
        match op {
            opcode::PING => Ok(Some(Incoming::Ping(payload))),
            opcode::PONG => Ok(Some(Incoming::Pong)),
            _ => parse_close(payload.as_slice()).map(|code| Some(Incoming::Close(code))),
        }
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<u16>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::Close),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !valid_close_code(code) {
                return Err(ProtocolError::Close);
            }
            std::str::from_utf8(reason).map_err(|_| ProtocolError::Utf8)?;
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A masked client frame, as a browser sends it.
    pub(crate) fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn feed(reader: &mut Reader, bytes: &[u8]) {
        let spare = reader.spare();
        spare[..bytes.len()].copy_from_slice(bytes);
        reader.filled(bytes.len());
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn handshake_checks_upgrade_version_and_key() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, "WebSocket".parse().expect("value"));
        headers.insert(
            header::CONNECTION,
            "keep-alive, Upgrade".parse().expect("value"),
        );
        headers.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().expect("value"));
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().expect("value"),
        );
        assert_eq!(
            accept(Version::HTTP_11, &headers).as_deref(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        assert_eq!(
            accept(Version::HTTP_2, &headers),
            Err(HandshakeError::NotUpgrade)
        );
        let mut old = headers.clone();
        old.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().expect("value"));
        assert_eq!(accept(Version::HTTP_11, &old), Err(HandshakeError::Version));
        let mut short = headers.clone();
        short.insert(
            header::SEC_WEBSOCKET_KEY,
            "c2hvcnQ=".parse().expect("value"),
        );
        assert_eq!(accept(Version::HTTP_11, &short), Err(HandshakeError::Key));
        let mut plain = headers;
        plain.remove(header::UPGRADE);
        assert_eq!(
            accept(Version::HTTP_11, &plain),
            Err(HandshakeError::NotUpgrade)
        );
    }

    #[test]
    fn heads_use_the_shortest_length_encoding() {
        assert_eq!(Head::new(opcode::TEXT, 0).as_bytes(), [0x81, 0]);
        assert_eq!(Head::new(opcode::TEXT, 125).as_bytes(), [0x81, 125]);
        assert_eq!(Head::new(opcode::TEXT, 126).as_bytes(), [0x81, 126, 0, 126]);
        assert_eq!(
            Head::new(opcode::PING, 65_535).as_bytes(),
            [0x89, 126, 0xFF, 0xFF]
        );
        assert_eq!(
            Head::new(opcode::TEXT, 65_536).as_bytes(),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON && cut.len() >= MAX_CLOSE_REASON - 1);
        assert!(long.starts_with(cut));
        let frame = close_frame(1000, &long);
        assert_eq!(frame[0], 0x88);
        assert_eq!(usize::from(frame[1]), 2 + cut.len());
        assert_eq!(&frame[2..4], &1000u16.to_be_bytes());
        assert_eq!(
            close_frame(1001, "bye"),
            [0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']
        );
    }

    #[test]
    fn parses_control_frames_split_across_reads() {
        let mut bytes = client_frame(0x89, b"hello");
        bytes.extend(client_frame(0x8A, b""));
        bytes.extend(client_frame(0x88, &[0x03, 0xE8, b'o', b'k']));
        let mut reader = Reader::default();
        let mut seen = Vec::new();
        for byte in bytes {
            feed(&mut reader, &[byte]);
            while let Some(incoming) = reader.next().expect("valid") {
                seen.push(incoming);
            }
        }
        assert!(matches!(seen[0], Incoming::Ping(p) if p.as_slice() == b"hello"));
        assert!(matches!(seen[1], Incoming::Pong));
        assert!(matches!(seen[2], Incoming::Close(Some(1000))));
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn data_frames_are_reported_by_header_and_their_payload_skipped() {
        let big = vec![b'x'; 70_000];
        let mut bytes = client_frame(0x81, &big);
        bytes.extend(client_frame(0x88, &[]));
        let mut reader = Reader::default();
        let mut seen = Vec::new();
        for chunk in bytes.chunks(100) {
            feed(&mut reader, chunk);
            while let Some(incoming) = reader.next().expect("valid") {
                seen.push(incoming);
            }
        }
        assert!(matches!(seen[0], Incoming::Data(opcode::TEXT)));
        assert!(matches!(seen[1], Incoming::Close(None)));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn protocol_violations_are_errors() {
        let cases: [(Vec<u8>, ProtocolError); 7] = [
            (vec![0x89, 0x00], ProtocolError::Unmasked),
            (client_frame(0xC1, b"x"), ProtocolError::Reserved),
            (client_frame(0x83, b"x"), ProtocolError::Opcode(3)),
            (client_frame(0x09, b"x"), ProtocolError::Control),
            (client_frame(0x89, &[0; 126]), ProtocolError::Control),
            (client_frame(0x88, &[0x03]), ProtocolError::Close),
            (client_frame(0x88, &[0x03, 0xED]), ProtocolError::Close),
        ];
        for (bytes, expected) in cases {
            let mut reader = Reader::default();
            feed(&mut reader, &bytes[..bytes.len().min(READ_BUFFER)]);
            assert_eq!(reader.next().err(), Some(expected), "{bytes:02x?}");
        }
        let mut reader = Reader::default();
        feed(&mut reader, &client_frame(0x88, &[0x03, 0xE8, 0xFF]));
        let error = reader.next().err();
        assert_eq!(error, Some(ProtocolError::Utf8));
        assert_eq!(ProtocolError::Utf8.close_code(), 1007);
    }
}
