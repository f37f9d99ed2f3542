//! The streaming response body of a long-lived connection: drains the connection's queue, writing
//! every frame that is already queued in one chunk (write coalescing), and ends when the hub drops
//! the connection or a close frame arrives.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame as BodyFrame, SizeHint};

use super::feed::Feed;
use super::hub::{Guard, Outbound};

/// Upper bound of one coalesced write: big enough to batch a burst, small enough to keep memory
/// per connection bounded.
const COALESCE_LIMIT: usize = 64 * 1024;

/// How a queued item becomes bytes on this transport.
pub trait Encoding: Send + Unpin + 'static {
    /// The bytes of `item`, or `None` to skip it.
    fn encode(&self, item: &Outbound) -> Option<Bytes>;
}

/// A body fed by a connection queue. Dropping it (the client went away) unregisters the connection.
#[derive(Debug)]
pub struct QueueBody<E> {
    rx: Feed,
    encoding: E,
    _guard: Guard,
    done: bool,
}

impl<E: Encoding> QueueBody<E> {
    /// A body draining `rx`, encoding with `encoding`, keeping `guard` alive as long as it lives.
    pub fn new(rx: Feed, encoding: E, guard: Guard) -> Self {
        Self {
            rx,
            encoding,
            _guard: guard,
            done: false,
        }
    }
}

impl<E: Encoding> Body for QueueBody<E> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let first = match this.rx.poll_recv(cx) {
                Poll::Ready(Some(item)) => item,
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            };
            let mut single: Option<Bytes> = None;
            let mut batch: Option<BytesMut> = None;
            let mut item = Some(first);
            while let Some(current) = item.take() {
                if let Some(bytes) = this.encoding.encode(&current) {
                    match (&mut single, &mut batch) {
                        (None, None) => single = Some(bytes),
                        (Some(_), None) => {
                            let mut buf = BytesMut::with_capacity(COALESCE_LIMIT.min(8 * 1024));
                            buf.extend_from_slice(&single.take().unwrap_or_default());
                            buf.extend_from_slice(&bytes);
                            batch = Some(buf);
                        }
                        (_, Some(buf)) => buf.extend_from_slice(&bytes),
                    }
                }
                if matches!(current, Outbound::Close(_)) {
                    this.done = true;
                    break;
                }
                let size = batch.as_ref().map_or(0, BytesMut::len);
                if size >= COALESCE_LIMIT {
                    break;
                }
                item = this.rx.try_recv().ok();
            }
            let chunk = batch.map(BytesMut::freeze).or(single);
            if let Some(chunk) = chunk {
                return Poll::Ready(Some(Ok(BodyFrame::data(chunk))));
            }
            // Everything received encoded to nothing (e.g. heartbeats on a transport without them).
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
