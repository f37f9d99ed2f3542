//! The snapshot stream, served by every replica (leader or not).
//!
//! `GET /v1/snapshots?have=<version>` answers `200` with a never-ending body of newline-delimited
//! JSON [`StreamMessage`]s: the current snapshot at once (unless its version equals `have`, so a
//! reconnecting data plane with the same config does not reload), the new snapshot whenever the
//! version changes (intermediate versions may be skipped: each message is the full state), and a
//! heartbeat every few seconds. While the operator has not synced yet, only heartbeats (with no
//! version) flow. HTTP/1.1 (chunked) and HTTP/2 (prior knowledge, h2c) share the port.
//! `GET /healthz` is liveness; `GET /readyz` is 200 once a snapshot exists; `GET /metrics` is the
//! Prometheus text of [`Metrics`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rig_crds::snapshot::StreamMessage;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::controller::Published;
use crate::metrics::{ClientGuard, Metrics};

/// Response body of this server.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the handlers need.
#[derive(Clone, Debug)]
pub struct Shared {
    /// The current snapshot.
    pub snapshots: watch::Receiver<Option<Arc<Published>>>,
    /// Heartbeat interval.
    pub heartbeat_every: Duration,
    /// Turns true on shutdown: streams end, the listener stops.
    pub shutdown: watch::Receiver<bool>,
    /// The replica's metrics (`GET /metrics`; open streams are counted here).
    pub metrics: Arc<Metrics>,
}

/// Serve until shutdown. Connections already open are left to end with their streams.
pub async fn serve(listener: TcpListener, shared: Shared) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &req)) }
            });
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "stream connection ended with an error");
            }
        });
    }
}

fn handle(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if shared.snapshots.borrow().is_some() => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not synced yet\n"),
        "/metrics" => {
            let published = shared.snapshots.borrow().clone();
            let body = shared.metrics.render(published.as_deref());
            let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        rig_crds::contract::STREAM_PATH => {
            let have = req.uri().query().and_then(|q| {
                form_pairs(q).find_map(|(k, v)| {
                    (k == rig_crds::contract::STREAM_HAVE_PARAM && !v.is_empty()).then_some(v)
                })
            });
            snapshots(shared, have)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `key=value` pairs of a query string (values are hex versions: no decoding needed).
fn form_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Per-client stream state.
struct Client {
    snapshots: watch::Receiver<Option<Arc<Published>>>,
    shutdown: watch::Receiver<bool>,
    heartbeat: tokio::time::Interval,
    /// The version this client has (from `have`, then from what we sent).
    sent: Option<String>,
    /// Counts this stream as open (`None` in unit tests).
    _open: Option<ClientGuard>,
}

impl Client {
    /// The next line to send, or `None` when the stream ends (shutdown).
    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            let current = self.snapshots.borrow_and_update().clone();
            if let Some(published) = current
                && self.sent.as_deref() != Some(published.snapshot.version.as_str())
            {
                self.sent = Some(published.snapshot.version.clone());
                return Some(published.line.clone());
            }
            let beat = tokio::select! {
                changed = self.snapshots.changed() => {
                    changed.ok()?;
                    false
                }
                _ = self.heartbeat.tick() => true,
                _ = stopped(&mut self.shutdown) => return None,
            };
            if beat {
                return Some(self.heartbeat_line());
            }
        }
    }

    fn heartbeat_line(&self) -> Bytes {
        let version = self
            .snapshots
            .borrow()
            .as_ref()
            .map(|p| p.snapshot.version.clone());
        let mut line = serde_json::to_vec(&StreamMessage::Heartbeat { version })
            .unwrap_or_else(|_| br#"{"type":"heartbeat","version":null}"#.to_vec());
        line.push(b'\n');
        Bytes::from(line)
    }
}

fn snapshots(shared: &Shared, have: Option<&str>) -> Response<Body> {
    let period = shared.heartbeat_every;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let client = Client {
        snapshots: shared.snapshots.clone(),
        shutdown: shared.shutdown.clone(),
        heartbeat,
        sent: have.map(str::to_owned),
        _open: Some(shared.metrics.stream_client()),
    };
    let lines = futures::stream::unfold(client, |mut client| async move {
        let line = client.next_line().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), client))
    });
    let mut response = Response::new(StreamBody::new(lines.boxed()).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(rig_crds::contract::STREAM_CONTENT_TYPE),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    response
}

/// Resolves once `shutdown` is true (or its sender is gone, which also means stop).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Bind the stream listener (fails fast on a taken port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rig_crds::Snapshot;

    fn published(snapshot: Snapshot) -> Arc<Published> {
        let line = crate::controller::encode(&snapshot).expect("encode");
        Arc::new(Published {
            snapshot: Arc::new(snapshot),
            line,
        })
    }

    fn parse(line: &Bytes) -> StreamMessage {
        serde_json::from_slice(line).expect("a stream message")
    }

    fn client(
        rx: watch::Receiver<Option<Arc<Published>>>,
        shutdown: watch::Receiver<bool>,
        have: Option<&str>,
    ) -> Client {
        let period = Duration::from_secs(5);
        Client {
            snapshots: rx,
            shutdown,
            heartbeat: tokio::time::interval_at(tokio::time::Instant::now() + period, period),
            sent: have.map(str::to_owned),
            _open: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sends_the_snapshot_then_heartbeats_then_changes() {
        let first = published(Snapshot::new(vec![], vec![], vec![]));
        let (tx, rx) = watch::channel(Some(first.clone()));
        let (_stop_tx, stop) = watch::channel(false);
        let mut c = client(rx, stop, None);
        let line = c.next_line().await.expect("line");
        assert!(
            matches!(parse(&line), StreamMessage::Snapshot(s) if s.version == first.snapshot.version)
        );
        let line = c.next_line().await.expect("heartbeat");
        assert_eq!(
            parse(&line),
            StreamMessage::Heartbeat {
                version: Some(first.snapshot.version.clone())
            }
        );
        let bl = rig_crds::NamedSpec {
            namespace: "a".into(),
            name: "b".into(),
            generation: 1,
            spec: rig_crds::BlacklistSpec {
                session_id: "s".into(),
                expires_at: "2030-01-01T00:00:00Z".into(),
                reason: None,
            },
        };
        let second = published(Snapshot::new(vec![], vec![], vec![bl]));
        tx.send_replace(Some(second.clone()));
        let line = c.next_line().await.expect("line");
        assert!(
            matches!(parse(&line), StreamMessage::Snapshot(s) if s.version == second.snapshot.version)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn have_skips_the_first_send_and_unsynced_sends_only_heartbeats() {
        let first = published(Snapshot::new(vec![], vec![], vec![]));
        let (_tx, rx) = watch::channel(Some(first.clone()));
        let (stop_tx, stop) = watch::channel(false);
        let mut c = client(rx, stop.clone(), Some(&first.snapshot.version));
        assert!(matches!(
            parse(&c.next_line().await.expect("line")),
            StreamMessage::Heartbeat { .. }
        ));

        let (_tx2, rx2) = watch::channel(None);
        let mut c = client(rx2, stop, None);
        assert_eq!(
            parse(&c.next_line().await.expect("line")),
            StreamMessage::Heartbeat { version: None }
        );
        stop_tx.send_replace(true);
        assert!(c.next_line().await.is_none(), "shutdown ends the stream");
    }
}
