//! Serving a handler on a listener: HTTP/1.1 and HTTP/2 (auto-detected), upgrades allowed, graceful
//! shutdown (stop accepting, let open requests finish, within a bound).

use crate::support::stopped;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::Body;

/// How long open connections get to finish after shutdown starts. Long-lived streams are told to
/// close by their own handlers; this bounds the rest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A request handler shared by all connections of a listener.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request; `peer` is the client's address.
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// Look at a freshly accepted connection before it is served as HTTP, and serve it directly
    /// if the handler wants to (a long-lived stream that should not keep the HTTP connection's
    /// buffers, or requests a direct path serves faster). `Some` hands the stream back to be
    /// served as HTTP from then on, with the bytes the hook already read from it (served first);
    /// `None` means the connection was served (or is to be dropped). `shutdown` turns true when
    /// the listener stops. The default serves everything as HTTP.
    fn take_over(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = Option<(TcpStream, Bytes)>> + Send {
        let _ = (peer, shutdown);
        std::future::ready(Some((stream, Bytes::new())))
    }
}

/// Accept connections on `listener` and serve them with `handler` until `shutdown` turns true.
///
/// A connection has `head_timeout` for each request head on HTTP/1 (from its start, or from the
/// end of the previous answer when kept alive); one that does not send it in time is closed.
/// hyper's connections treat a client's end of input as the client leaving (so a request waiting
/// for a correlated response is abandoned at once); the direct SSE path lets a half-closed client
/// keep its stream.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
    head_timeout: Duration,
    cap: Option<Cap>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let (drained_tx, drained_rx) = watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: keep serving the open connections.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        // Over the cap, the connection is closed at once: file descriptors stay for the internal
        // port (probes, metrics) and the process's own sockets.
        let slot = match &cap {
            Some(cap) => match cap.take() {
                Some(slot) => Some(slot),
                None => {
                    cap.shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(%peer, "connection refused: the inbound connection cap is reached");
                    drop(stream);
                    continue;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let drained = drained_rx.clone();
        if let Some(acceptor) = tls.clone() {
            tokio::spawn(async move {
                let _slot = slot;
                // The handshake counts as the head: a client that does not finish it in time
                // is closed.
                match tokio::time::timeout(head_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        Box::pin(serve_http(
                            stream,
                            peer,
                            handler,
                            shutdown,
                            head_timeout,
                            true,
                        ))
                        .await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake not finished in time"),
                }
                drop(drained);
            });
            continue;
        }
        tokio::spawn(async move {
            let _slot = slot;
            let taken = handler
                .clone()
                .take_over(stream, peer, shutdown.clone())
                .await;
            if let Some((stream, read)) = taken {
                // hyper's protocol detection waits for the first bytes with no timeout of its
                // own: a socket that sends nothing is closed here.
                if read.is_empty() {
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(head_timeout, stream.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => {
                            tracing::debug!(%peer, "closing a connection that sent no request in time");
                            drop(drained);
                            return;
                        }
                    }
                }
                // Boxed: a connection served by `take_over` does not carry HTTP's state in its task.
                let io = Prefixed {
                    read,
                    inner: stream,
                };
                Box::pin(serve_http(io, peer, handler, shutdown, head_timeout, false)).await;
            }
            drop(drained);
        });
    }
    drop(drained_rx);
    // Every connection task holds a receiver; `closed` resolves once all of them are gone.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained_tx.closed()).await;
}

/// Serve one connection as HTTP/1.1 or HTTP/2 until it ends or, after `shutdown`, gracefully.
/// Requests of a TLS connection (`secure`) carry the [`super::Secure`] extension.
async fn serve_http<H, I>(
    stream: I,
    peer: SocketAddr,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
    head_timeout: Duration,
    secure: bool,
) where
    H: Handler,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // HTTP/2 has no head timeout in hyper: its connection must start a request within the head
    // timeout, and a peer that stops answering pings is dropped.
    let requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = requested.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let handler = handler.clone();
        seen.store(true, std::sync::atomic::Ordering::Relaxed);
        if secure {
            req.extensions_mut().insert(super::Secure);
        }
        async move { Ok::<_, std::convert::Infallible>(handler.handle(req, peer).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(head_timeout)
        .keep_alive_timeout(head_timeout);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let first_request = tokio::time::sleep(head_timeout);
    tokio::pin!(first_request);
    let mut watching = true;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = &mut first_request, if watching => {
                watching = false;
                if !requested.load(std::sync::atomic::Ordering::Relaxed) {
                    tracing::debug!(%peer, "closing a connection that started no request in time");
                    return;
                }
            }
            _ = stopped(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                return;
            }
        }
    }
}

/// A connection with bytes already read from it: they are read again first.
#[derive(Debug)]
struct Prefixed {
    read: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            if self.read.is_empty() {
                // Let go of the buffer they were read into: a long-lived connection (WebSocket,
                // long-polling) must not keep it.
                self.read = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A cap on a listener's open connections (module docs of [`serve`]).
#[derive(Debug, Clone)]
pub struct Cap {
    max: usize,
    open: Arc<std::sync::atomic::AtomicUsize>,
    /// Connections closed at once because the cap was reached (`rig_inbound_connections_shed_total`).
    pub shed: Arc<std::sync::atomic::AtomicU64>,
}

impl Cap {
    /// At most `max` open connections.
    pub fn new(max: usize, shed: Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self {
            max,
            open: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            shed,
        }
    }

    fn take(&self) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Slot(self.open.clone())),
                Err(now) => open = now,
            }
        }
    }
}

/// One open connection under a [`Cap`]; released when dropped.
#[derive(Debug)]
struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The soft limit on open file descriptors of this process (`/proc/self/limits`), if known.
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod cap_tests {
    use super::*;

    #[test]
    fn the_cap_counts_open_connections_and_frees_them() {
        let cap = Cap::new(2, Arc::default());
        let a = cap.take().expect("first");
        let _b = cap.take().expect("second");
        assert!(cap.take().is_none(), "over the cap");
        drop(a);
        assert!(cap.take().is_some(), "a freed slot");
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
