//! The one batch writer of the streaming transports (SSE served directly, WebSocket): a burst of
//! queued frames leaves in one write. Each transport lays out its own bytes (SSE chunks,
//! WebSocket frame heads) as slices that borrow the shared frame payloads; this module bounds the
//! batch, writes the slices with one vectored write where the stream supports it (no copy of the
//! payloads) or one copy otherwise, flushes, and gives up on a client that accepts no bytes.

use std::future::Future;
use std::io::{self, IoSlice};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Upper bounds of one coalesced write: enough to batch a burst, small enough that a slow
/// client's batch stays modest and the `iovec` count stays far below the system limit.
pub const BATCH_FRAMES: usize = 64;
/// See [`BATCH_FRAMES`].
pub const BATCH_BYTES: usize = 64 * 1024;

/// A client that accepts no bytes of a pending write for this long is dropped: two heartbeat
/// periods, so a live client on a bad network is not cut, and a dead one does not hold its task.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `write` within [`WRITE_TIMEOUT`]; a timeout is an error.
pub async fn with_timeout<T>(write: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client accepted no bytes",
        )),
    }
}

/// Write every slice, in order, then flush: one vectored write where `io` supports it, else one
/// copy into a buffer that lives only for this write. `len` is their total length (a capacity
/// hint for the copy).
pub async fn write_slices<W: AsyncWrite + Unpin>(
    io: &mut W,
    slices: &[&[u8]],
    len: usize,
) -> io::Result<()> {
    if slices.is_empty() {
        return Ok(());
    }
    if io.is_write_vectored() {
        let mut iov: Vec<IoSlice<'_>> = slices
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| IoSlice::new(s))
            .collect();
        let mut rest = &mut iov[..];
        while !rest.is_empty() {
            let n = io.write_vectored(rest).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
    } else {
        let mut flat = Vec::with_capacity(len);
        for slice in slices {
            flat.extend_from_slice(slice);
        }
        io.write_all(&flat).await?;
    }
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn slices_arrive_in_order_vectored_or_copied() {
        // A duplex stream is not vectored: the copy path.
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_slices(&mut a, &[b"ab", b"", b"cd"], 4)
            .await
            .expect("write");
        let mut got = [0u8; 4];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"abcd");
        // A TCP stream is vectored.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        assert!(server.is_write_vectored());
        write_slices(&mut server, &[b"x", b"yz"], 3)
            .await
            .expect("write");
        let mut got = [0u8; 3];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"xyz");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_accepts_nothing_times_out() {
        let (mut a, _b) = tokio::io::duplex(4);
        let big = vec![0u8; 64];
        let err = with_timeout(write_slices(&mut a, &[&big], 64))
            .await
            .expect_err("nobody reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
