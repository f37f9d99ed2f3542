//! Incremental, allocation-free readers of what the data plane streams: SSE inside an HTTP/1.1
//! chunked body, and unmasked RFC 6455 server frames. Each only counts events (SSE messages with a
//! `data:` line, WebSocket text frames) and, on sampled connections, picks the send timestamp
//! `"t":<nanoseconds>` out of the event JSON; nothing is buffered, so a client connection costs a
//! few dozen bytes of state besides its socket.

/// The send timestamp in an event's JSON: the first `"t":` followed by digits.
#[derive(Debug, Default, Clone)]
pub struct Stamp {
    matched: u8,
    digits: Option<u64>,
    value: Option<u64>,
}

const STAMP_KEY: &[u8] = b"\"t\":";

impl Stamp {
    fn feed(&mut self, b: u8) {
        if self.value.is_some() {
            return;
        }
        if let Some(v) = self.digits {
            if b.is_ascii_digit() {
                self.digits = Some(v.saturating_mul(10).saturating_add(u64::from(b - b'0')));
            } else {
                self.value = Some(v);
                self.digits = None;
            }
            return;
        }
        if usize::from(self.matched) == STAMP_KEY.len() {
            if b.is_ascii_digit() {
                self.digits = Some(u64::from(b - b'0'));
            } else {
                self.matched = 0;
            }
            return;
        }
        if b == STAMP_KEY[usize::from(self.matched)] {
            self.matched += 1;
        } else {
            // The key's only repeated byte is `"`, its first: a mismatch restarts there.
            self.matched = u8::from(b == b'"');
        }
    }

    /// The timestamp of the event that just ended, and reset for the next one.
    fn take(&mut self) -> Option<u64> {
        let value = self.value.take().or(self.digits.take());
        *self = Self::default();
        value
    }
}

/// Where the chunked-body decoder is.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading the hexadecimal size line (`ext`: past a `;`).
    Size { size: usize, ext: bool },
    /// Inside a chunk, this many bytes left.
    Data(usize),
    /// The CRLF after a chunk, this many bytes left.
    End(u8),
    /// The last chunk was read: the server ended the stream.
    Done,
}

/// Counts SSE messages carrying data in a chunked HTTP/1.1 response body (heartbeat comments are
/// not counted).
#[derive(Debug)]
pub struct SseReader {
    chunk: Chunk,
    line_start: bool,
    has_data: bool,
    stamp: Option<Stamp>,
}

impl SseReader {
    /// A reader at the start of the body; `sampled` readers extract timestamps.
    pub fn new(sampled: bool) -> Self {
        Self {
            chunk: Chunk::Size {
                size: 0,
                ext: false,
            },
            line_start: true,
            has_data: false,
            stamp: sampled.then(Stamp::default),
        }
    }

    /// Whether the server ended the body.
    pub fn done(&self) -> bool {
        matches!(self.chunk, Chunk::Done)
    }

    /// Read `bytes`; `event` is called once per complete message with its timestamp (sampled
    /// readers only).
    pub fn feed(&mut self, bytes: &[u8], mut event: impl FnMut(Option<u64>)) {
        let mut i = 0;
        while i < bytes.len() {
            match self.chunk {
                Chunk::Size { size, ext } => {
                    let b = bytes[i];
                    i += 1;
                    self.chunk = match b {
                        b'\n' if size == 0 => Chunk::Done,
                        b'\n' => Chunk::Data(size),
                        b';' => Chunk::Size { size, ext: true },
                        _ if ext => Chunk::Size { size, ext },
                        _ => match char::from(b).to_digit(16) {
                            Some(d) => Chunk::Size {
                                size: size.saturating_mul(16).saturating_add(d as usize),
                                ext,
                            },
                            None => Chunk::Size { size, ext },
                        },
                    };
                }
                Chunk::Data(left) => {
                    let n = left.min(bytes.len() - i);
                    for &b in &bytes[i..i + n] {
                        self.sse_byte(b, &mut event);
                    }
                    i += n;
                    self.chunk = if n == left {
                        Chunk::End(2)
                    } else {
                        Chunk::Data(left - n)
                    };
                }
                Chunk::End(left) => {
                    i += 1;
                    self.chunk = if left <= 1 {
                        Chunk::Size {
                            size: 0,
                            ext: false,
                        }
                    } else {
                        Chunk::End(left - 1)
                    };
                }
                Chunk::Done => return,
            }
        }
    }

    fn sse_byte(&mut self, b: u8, event: &mut impl FnMut(Option<u64>)) {
        if b == b'\n' {
            if self.line_start {
                if self.has_data {
                    event(self.stamp.as_mut().and_then(Stamp::take));
                }
                self.has_data = false;
            }
            self.line_start = true;
            return;
        }
        if self.line_start && b == b'd' {
            // Our frames' lines start with `id`, `event`, `data` or `:`; only `data` with `d`.
            self.has_data = true;
        }
        self.line_start = false;
        if let Some(stamp) = &mut self.stamp {
            stamp.feed(b);
        }
    }
}

/// WebSocket opcodes the reader cares about.
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;

/// Counts text frames in the server-to-client direction of a WebSocket.
#[derive(Debug)]
pub struct WsReader {
    head: [u8; 14],
    head_len: u8,
    payload_left: u64,
    opcode: u8,
    closed: bool,
    stamp: Option<Stamp>,
}

impl WsReader {
    /// A reader at a frame boundary; `sampled` readers extract timestamps.
    pub fn new(sampled: bool) -> Self {
        Self {
            head: [0; 14],
            head_len: 0,
            payload_left: 0,
            opcode: 0,
            closed: false,
            stamp: sampled.then(Stamp::default),
        }
    }

    /// Whether the server sent a close frame.
    pub fn done(&self) -> bool {
        self.closed
    }

    /// Header bytes needed, known once the first two are in.
    fn head_needed(&self) -> usize {
        if self.head_len < 2 {
            return 2;
        }
        let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
        let ext = match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + mask
    }

    fn payload_len(&self) -> u64 {
        match self.head[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.head[2..10]);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        }
    }

    /// Read `bytes`; `event` is called once per complete text frame with its timestamp (sampled
    /// readers only).
    pub fn feed(&mut self, bytes: &[u8], mut event: impl FnMut(Option<u64>)) {
        let mut i = 0;
        while i < bytes.len() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - i);
                if self.opcode == TEXT
                    && let Some(stamp) = &mut self.stamp
                {
                    for &b in &bytes[i..i + n] {
                        stamp.feed(b);
                    }
                }
                i += n;
                self.payload_left -= n as u64;
                if self.payload_left == 0 {
                    self.frame_end(&mut event);
                }
                continue;
            }
            self.head[usize::from(self.head_len)] = bytes[i];
            self.head_len += 1;
            i += 1;
            if usize::from(self.head_len) < self.head_needed() {
                continue;
            }
            self.opcode = self.head[0] & 0x0f;
            self.payload_left = self.payload_len();
            self.head_len = 0;
            if self.payload_left == 0 {
                self.frame_end(&mut event);
            }
        }
    }

    fn frame_end(&mut self, event: &mut impl FnMut(Option<u64>)) {
        match self.opcode {
            TEXT => event(self.stamp.as_mut().and_then(Stamp::take)),
            CLOSE => self.closed = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(format!("{:x}\r\n{p}\r\n", p.len()).as_bytes());
        }
        out
    }

    fn feed_split<R>(reader: &mut R, bytes: &[u8], split: usize) -> Vec<Option<u64>>
    where
        R: Feed,
    {
        let mut events = Vec::new();
        for piece in bytes.chunks(split) {
            reader.feed_bytes(piece, &mut |t| events.push(t));
        }
        events
    }

    trait Feed {
        fn feed_bytes(&mut self, bytes: &[u8], event: &mut dyn FnMut(Option<u64>));
    }
    impl Feed for SseReader {
        fn feed_bytes(&mut self, bytes: &[u8], event: &mut dyn FnMut(Option<u64>)) {
            self.feed(bytes, event);
        }
    }
    impl Feed for WsReader {
        fn feed_bytes(&mut self, bytes: &[u8], event: &mut dyn FnMut(Option<u64>)) {
            self.feed(bytes, event);
        }
    }

    #[test]
    fn sse_counts_data_messages_across_any_split_and_skips_heartbeats() {
        let body = chunked(&[
            "id: 1\nevent: a\ndata: {\"type\":\"a\",\"data\":{\"t\":42}}\n\n",
            ": heartbeat\n\n",
            "id: 2\nevent: a\ndata: {\"t\":7,\"x\":\"\\\"t\\\":9\"}\n\nid: 3\nevent: a\ndata: {}\n\n",
        ]);
        for split in [1, 2, 3, 7, 1000] {
            let mut reader = SseReader::new(true);
            let events = feed_split(&mut reader, &body, split);
            assert_eq!(events, vec![Some(42), Some(7), None], "split {split}");
            assert!(!reader.done());
        }
        let mut unsampled = SseReader::new(false);
        assert_eq!(feed_split(&mut unsampled, &body, 5), vec![None; 3]);
    }

    #[test]
    fn sse_sees_the_last_chunk() {
        let mut reader = SseReader::new(false);
        let mut body = chunked(&["data: x\n\n"]);
        body.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(feed_split(&mut reader, &body, 4), vec![None]);
        assert!(reader.done());
    }

    fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n < 65536 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn ws_counts_text_frames_of_every_length_class_and_sees_close() {
        let long = format!("{{\"t\":5,\"pad\":\"{}\"}}", "x".repeat(300));
        let huge = format!("{{\"t\":6,\"pad\":\"{}\"}}", "x".repeat(70_000));
        let mut bytes = ws_frame(TEXT, b"{\"t\":4}");
        bytes.extend(ws_frame(0x9, b""));
        bytes.extend(ws_frame(TEXT, long.as_bytes()));
        bytes.extend(ws_frame(TEXT, huge.as_bytes()));
        bytes.extend(ws_frame(TEXT, b""));
        bytes.extend(ws_frame(CLOSE, &[0x03, 0xe8]));
        for split in [1, 13, 4096] {
            let mut reader = WsReader::new(true);
            let events = feed_split(&mut reader, &bytes, split);
            assert_eq!(
                events,
                vec![Some(4), Some(5), Some(6), None],
                "split {split}"
            );
            assert!(reader.done());
        }
    }
}
