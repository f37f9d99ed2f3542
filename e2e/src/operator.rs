//! Operator processes for tests: the real `rig-operator run` binary against the test apiserver,
//! with its snapshot stream on a free loopback port, and a client for that stream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rig_crds::Snapshot;
use rig_crds::snapshot::StreamMessage;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::dataplane::free_addr;
use crate::{Env, wait_until};

/// The `rig-operator` binary next to the test executable (`e2e/test.sh` builds it first), or
/// `RIG_OPERATOR_BIN`.
pub fn binary() -> Result<PathBuf> {
    crate::workspace_binary("rig-operator", "RIG_OPERATOR_BIN")
}

/// How to start an operator replica.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// The Lease identity (`POD_NAME`).
    pub identity: String,
    /// The snapshot stream's address.
    pub stream: SocketAddr,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
}

impl OperatorConfig {
    /// A replica named `identity` with its Lease in `lease_namespace`, watching only
    /// `watch_namespace` (tests share one apiserver), on a free port.
    pub fn new(identity: &str, lease_namespace: &str, watch_namespace: &str) -> Result<Self> {
        Ok(Self {
            identity: identity.to_owned(),
            stream: free_addr()?,
            env: BTreeMap::new(),
        }
        .env("RIG_OPERATOR_LEASE_NAMESPACE", lease_namespace)
        .env("RIG_OPERATOR_WATCH_NAMESPACE", watch_namespace))
    }

    /// Add an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }
}

/// A running operator replica; killed when dropped.
#[derive(Debug)]
pub struct Operator {
    /// Its configuration.
    pub config: OperatorConfig,
    child: Child,
}

impl Operator {
    /// Start a replica against the test apiserver and wait until its stream answers `/healthz`.
    pub async fn start(env: &Env, config: OperatorConfig) -> Result<Self> {
        let mut cmd = Command::new(binary()?);
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("KUBECONFIG", env.kubeconfig()?)
            .env("POD_NAME", &config.identity)
            .env("RIG_OPERATOR_STREAM_ADDR", config.stream.to_string())
            .envs(&config.env)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting rig-operator")?;
        let mut op = Self { config, child };
        let addr = op.config.stream;
        let mut exited = None;
        wait_until("the operator's /healthz", Duration::from_secs(30), || {
            if exited.is_none() {
                exited = op.child.try_wait().ok().flatten();
            }
            let exited = exited;
            async move {
                assert!(exited.is_none(), "rig-operator exited at start: {exited:?}");
                let (status, _) = crate::http::get(addr, "/healthz").await.ok()?;
                (status == 200).then_some(())
            }
        })
        .await;
        Ok(op)
    }

    /// Kill the process at once (SIGKILL: no Lease release, as in a node failure).
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await.context("killing rig-operator")
    }

    /// Stop gracefully (SIGTERM: the leader gives up the Lease) and wait for a clean exit.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .context("sending SIGTERM")?;
        }
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .context("rig-operator did not stop within 20 s")??;
        if !status.success() {
            bail!("rig-operator exited with {status}");
        }
        Ok(())
    }

    /// Open this replica's snapshot stream.
    pub async fn stream(&self, have: Option<&str>, protocol: Protocol) -> Result<SnapshotStream> {
        SnapshotStream::open(self.config.stream, have, protocol).await
    }
}

/// The HTTP version a stream client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (chunked body).
    Http1,
    /// HTTP/2 with prior knowledge (h2c), as the data planes use it.
    Http2,
}

/// An open `GET /v1/snapshots` stream.
#[derive(Debug)]
pub struct SnapshotStream {
    body: Incoming,
    buffer: BytesMut,
}

impl SnapshotStream {
    /// Connect and check for `200 application/x-ndjson`.
    pub async fn open(addr: SocketAddr, have: Option<&str>, protocol: Protocol) -> Result<Self> {
        let io = TokioIo::new(TcpStream::connect(addr).await.context("connecting")?);
        let path = match have {
            Some(v) => format!("/v1/snapshots?have={v}"),
            None => "/v1/snapshots".to_owned(),
        };
        let req = http::Request::get(format!("http://{addr}{path}")).body(Empty::<Bytes>::new())?;
        let response = match protocol {
            Protocol::Http1 => {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                sender.send_request(req).await?
            }
            Protocol::Http2 => {
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                sender.send_request(req).await?
            }
        };
        if response.status() != http::StatusCode::OK {
            bail!("GET {path}: {}", response.status());
        }
        let content_type = response.headers().get(http::header::CONTENT_TYPE);
        if content_type.and_then(|v| v.to_str().ok()) != Some("application/x-ndjson") {
            bail!("GET {path}: content type {content_type:?}");
        }
        Ok(Self {
            body: response.into_body(),
            buffer: BytesMut::new(),
        })
    }

    /// The next message, or an error if none arrives within `timeout` or the stream ends.
    pub async fn next(&mut self, timeout: Duration) -> Result<StreamMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                return serde_json::from_slice(&line[..end])
                    .with_context(|| format!("bad line {:?}", String::from_utf8_lossy(&line)));
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .context("no stream message in time")?
                .context("the stream ended")??;
            if let Ok(mut data) = frame.into_data() {
                while data.has_remaining() {
                    let chunk = data.chunk().len();
                    self.buffer.extend_from_slice(data.chunk());
                    data.advance(chunk);
                }
            }
        }
    }

    /// Skip heartbeats until a snapshot for which `accept` holds arrives (within `timeout`).
    pub async fn snapshot_where(
        &mut self,
        timeout: Duration,
        accept: impl Fn(&Snapshot) -> bool,
    ) -> Result<Snapshot> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let StreamMessage::Snapshot(s) = self.next(left).await?
                && accept(&s)
            {
                return Ok(*s);
            }
        }
    }
}
