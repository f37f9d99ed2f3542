//! The HTTP/1.1 connection pool for plain `http://` targets (the common in-cluster case), with
//! each connection driven by the request that uses it.
//!
//! A pooled client in the usual style (hyper-util's) runs every upstream connection in its own
//! task and talks to it through channels: each request is handed over to that task, and its
//! response handed back, so one proxied request costs cross-task wake-ups, often across threads.
//! Here the connection is polled inside the request's own task instead: [`Pool::send`] drives it
//! until the response head arrives, and the response body ([`Lease`], held by the proxy's relay
//! body) keeps driving it while the body streams to the client. When the body has ended, the
//! connection goes back to the pool; a body that ends early (the client left, an error) closes
//! it, so a half-read connection is never reused.
//!
//! Idle connections are not polled. A checkout polls a candidate once: a connection the
//! backend closed meanwhile shows up as finished and is dropped, as are those idle longer than
//! the idle timeout. A request that a reused connection could not even start sending is retried
//! on another connection (the request is handed back unsent); once sent, an error is the
//! caller's (502). One sweeper task per pool closes connections idle past the timeout, so a quiet
//! pool does not keep sockets the backend has given up on.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::http::UpBody;

/// How long a TCP connect to a target may take before the request fails (502).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per target; more are closed when they come back.
const MAX_IDLE_PER_TARGET: usize = 512;
/// How often the sweeper closes connections idle past the timeout.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Why a request could not be sent upstream.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The TCP connect did not finish within [`CONNECT_TIMEOUT`].
    #[error("connecting to {0} timed out")]
    ConnectTimeout(Authority),
    /// The TCP connect failed.
    #[error("connecting to {authority} failed: {source}")]
    Connect {
        /// The target.
        authority: Authority,
        /// The socket error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed (hyper's error: a broken connection, a bad response, or the
    /// request body's error as its source).
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl PoolError {
    /// As a boxed error whose chain starts at hyper's error itself (not only its sources), for
    /// callers that look for it there.
    pub fn into_boxed(self) -> Box<dyn std::error::Error + Send + Sync> {
        match self {
            Self::Http(error) => Box::new(error),
            other => Box::new(other),
        }
    }
}

/// A target authority as the pool looks it up: its lowercase text and a hash of it, computed once
/// when the route is compiled (hashing `Authority` per request was a measurable share of the
/// proxy's CPU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    hash: u64,
    name: Arc<str>,
}

impl Key {
    /// The key of `authority` (host names compare case-insensitively).
    pub fn new(authority: &Authority) -> Self {
        let name = authority.as_str().to_ascii_lowercase();
        // FNV-1a: the table holds one entry per configured target, not attacker-chosen keys.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Self {
            hash,
            name: name.into(),
        }
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes a [`Key`]'s precomputed hash through.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Idle connections per target with the time each became idle.
type IdleMap<T> = HashMap<Key, Vec<(T, Instant)>, std::hash::BuildHasherDefault<KeyHasher>>;

/// Idle connections (of type `T`) per target, most recently used last, with the time each
/// became idle; one sweeper task closes those idle for the timeout. Both pools keep theirs here.
#[derive(Debug)]
struct IdleSet<T> {
    idle: Mutex<IdleMap<T>>,
    idle_timeout: Duration,
    /// Whether the sweeper task runs (started with the first connection, inside the runtime).
    sweeper: std::sync::OnceLock<()>,
}

impl<T: Send + 'static> IdleSet<T> {
    fn new(idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(HashMap::default()),
            idle_timeout,
            sweeper: std::sync::OnceLock::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleMap<T>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently used idle connection to `key` that `usable` accepts; older-than-timeout
    /// and refused ones are closed on the way.
    fn take(&self, key: &Key, mut usable: impl FnMut(&mut T) -> bool) -> Option<T> {
        loop {
            let (mut conn, since) = self.lock().get_mut(key)?.pop()?;
            if since.elapsed() < self.idle_timeout && usable(&mut conn) {
                return Some(conn);
            }
        }
    }

    /// A connection whose last exchange ended cleanly; beyond [`MAX_IDLE_PER_TARGET`] it closes.
    fn put(self: &Arc<Self>, key: &Key, conn: T) {
        self.start_sweeper();
        let mut idle = self.lock();
        let list = idle.entry(key.clone()).or_default();
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push((conn, Instant::now()));
        }
    }

    /// Idle connections now (all targets).
    fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Start the one sweeper task of this set (inside the runtime: called when a connection
    /// is first pooled).
    fn start_sweeper(self: &Arc<Self>) {
        self.sweeper.get_or_init(|| {
            let set = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(set) = set.upgrade() else { return };
                    set.sweep();
                }
            });
        });
    }

    /// Close connections idle for the idle timeout or longer.
    fn sweep(&self) {
        let timeout = self.idle_timeout;
        let mut idle = self.lock();
        for list in idle.values_mut() {
            list.retain(|(_, since)| since.elapsed() < timeout);
        }
        idle.retain(|_, list| !list.is_empty());
    }
}

/// The pool: idle connections per target authority.
#[derive(Debug, Clone)]
pub struct Pool {
    idle: Arc<IdleSet<Conn>>,
}

/// One upstream connection: the handle requests are sent on and the connection state machine.
struct Conn {
    send: http1::SendRequest<UpBody>,
    /// The connection state machine; dropped once it has finished (the connection is closed),
    /// so a request queued on it meanwhile is handed back unsent (and retried elsewhere).
    driver: Option<http1::Connection<TokioIo<TcpStream>, UpBody>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("open", &self.driver.is_some())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Drive the connection (read, write, flush); `false` once it is closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = &mut self.driver else {
            return false;
        };
        match Pin::new(driver).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "upstream connection closed with an error");
                }
                self.driver = None;
                false
            }
        }
    }
}

/// A connection lent to one response: drive it while the body streams, give it back at the end.
#[derive(Debug)]
pub struct Lease {
    conn: Conn,
    pool: Weak<IdleSet<Conn>>,
    key: Key,
}

impl Lease {
    /// Drive the connection, so the response body's bytes are read into it.
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        self.conn.drive(cx);
    }

    /// The response body ended cleanly: the connection goes back to the pool if it is idle and
    /// open. One last poll settles it; a connection still busy (the backend answered before it
    /// read the whole request body, which is still being sent) is closed rather than pooled
    /// with nobody driving it.
    pub fn release(mut self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if !self.conn.drive(&mut cx) || self.conn.send.is_closed() || !self.conn.send.is_ready() {
            return;
        }
        if let Some(pool) = self.pool.upgrade() {
            pool.put(&self.key, self.conn);
        }
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(Duration::from_secs(50))
    }
}

impl Pool {
    /// An empty pool closing connections idle for `idle_timeout`.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            idle: IdleSet::new(idle_timeout),
        }
    }

    /// Send `req` (origin-form URI, `host` set) to `authority` (whose pool key is `key`) on a
    /// pooled or new connection; the response head, and the lease that must drive the connection
    /// while its body is read.
    pub async fn send(
        &self,
        authority: &Authority,
        key: &Key,
        mut req: Request<UpBody>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        loop {
            // One poll of each candidate: a connection the backend closed meanwhile reads its end.
            let reused = std::future::poll_fn(|cx| {
                Poll::Ready(
                    self.idle
                        .take(key, |conn| conn.drive(cx) && conn.send.is_ready()),
                )
            })
            .await;
            let (mut conn, fresh) = match reused {
                Some(conn) => (conn, false),
                None => (self.connect(authority).await?, true),
            };
            let mut response = std::pin::pin!(conn.send.try_send_request(req));
            let result = std::future::poll_fn(|cx| {
                conn.drive(cx);
                response.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(res) => {
                    let lease = Lease {
                        conn,
                        pool: Arc::downgrade(&self.idle),
                        key: key.clone(),
                    };
                    return Ok((res, lease));
                }
                Err(mut error) => match error.take_message() {
                    // Not sent on a reused connection (closed meanwhile): another one.
                    Some(unsent) if !fresh => {
                        tracing::debug!(error = %error.error(), %authority, "pooled upstream connection was closed; retrying on another");
                        req = unsent;
                    }
                    _ => return Err(error.into_error().into()),
                },
            }
        }
    }

    /// A new connection to `authority` (port 80 when it names none).
    async fn connect(&self, authority: &Authority) -> Result<Conn, PoolError> {
        let stream = connect_tcp(authority).await?;
        let (send, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Conn {
            send,
            driver: Some(driver),
        })
    }

    /// Idle connections now (all targets).
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

/// A TCP connection to `authority` (port 80 when it names none), `TCP_NODELAY` set, within
/// [`CONNECT_TIMEOUT`].
pub async fn connect_tcp(authority: &Authority) -> Result<TcpStream, PoolError> {
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| PoolError::ConnectTimeout(authority.clone()))?
        .map_err(|source| PoolError::Connect {
            authority: authority.clone(),
            source,
        })?;
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set on an upstream connection");
    }
    Ok(stream)
}

/// Idle TCP connections per target, for the proxy's direct HTTP/1.1 path ([`super::fast`]),
/// which speaks HTTP on them itself. Same rules as [`Pool`]: most recently used first, dropped at
/// checkout when the backend has closed them (their socket is readable while idle), closed by a
/// sweeper when idle for the timeout.
#[derive(Debug, Clone)]
pub struct StreamPool {
    idle: Arc<IdleSet<TcpStream>>,
}

impl StreamPool {
    /// An empty pool closing connections idle for `idle_timeout`.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            idle: IdleSet::new(idle_timeout),
        }
    }

    /// An idle connection to `key` that still looks open, if any.
    pub fn checkout(&self, key: &Key) -> Option<TcpStream> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // An idle connection has nothing to read: readable means closed (or garbage).
        self.idle
            .take(key, |stream| stream.poll_read_ready(&mut cx).is_pending())
    }

    /// A connection whose last exchange ended cleanly, for reuse.
    pub fn put(&self, key: &Key, stream: TcpStream) {
        self.idle.put(key, stream);
    }
}
