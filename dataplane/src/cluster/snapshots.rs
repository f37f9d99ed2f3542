//! The snapshot client: cluster-mode configuration from the operator's stream.
//!
//! - **One task follows the stream.** `GET {RIG_OPERATOR_URL}/v1/snapshots?have=<version in effect>`
//!   over HTTP/2 with prior knowledge (h2c), newline-delimited [`StreamMessage`]s. Lines are bounded
//!   ([`MAX_LINE_BYTES`]); heartbeats keep the connection alive, and no complete line for
//!   [`IDLE_TIMEOUT`] (three operator heartbeats) counts as a dead connection. Every failure —
//!   refused, slow, cut, idle — ends in a reconnect after an exponential [`Backoff`] with full
//!   jitter, reset once a stream has proved healthy (a heartbeat arrived). The operator being
//!   unreachable or slow never blocks serving: nothing on a request path waits for this task.
//! - **Validated whole, swapped whole.** A snapshot is used only if its version equals the hash of
//!   its content and it compiles exactly like standalone manifests ([`routes::compile_with`]); then
//!   [`routes::apply`] installs it (proxy table, extractors, Kafka topics, `Blacklist`
//!   revocations), the same function the manifest watch uses. Anything wrong rejects the snapshot
//!   as a whole and the previous configuration keeps serving.
//! - **Every version gets a report.** Applied or rejected, a [`DataPlaneReport`] is published on a
//!   watch channel for the report Lease writer (`cluster::report`). A snapshot whose version is
//!   already in effect is not applied again (no reload when an operator restarts).
//! - **Last-known-good on disk.** After applying, the snapshot is written to `RIG_SNAPSHOT_CACHE`
//!   (temporary file + rename, so a crash never leaves half a file). At start-up that file is
//!   validated the same way and applied before the first connection, so a pod restarted while the
//!   operator is down serves its last configuration at once.
//! - **Readiness and metrics** live in [`Status`]: ready once a configuration is in effect, and
//!   still ready while the operator is away.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rig_crds::Snapshot;
use rig_crds::compile::Objects;
use rig_crds::contract::{STREAM_HAVE_PARAM, STREAM_PATH};
use rig_crds::snapshot::{DataPlaneReport, Outcome, StreamMessage};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::routes::{self, Routes};
use crate::support::prom;
use crate::support::supervise::TaskHealth;
use crate::support::{Backoff, error_chain, random_unit};

/// The operator's heartbeat period (the contract's).
pub const OPERATOR_HEARTBEAT: Duration = rig_crds::contract::HEARTBEAT_PERIOD;
/// No complete line for this long: the connection is dead. Three heartbeats, so one heartbeat
/// delayed by a busy operator or network does not cost a reconnect.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3 * OPERATOR_HEARTBEAT.as_secs());
/// Bound on connecting and receiving the response head: an operator Service that accepts but
/// does not answer is treated like one that refuses.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest accepted line. A snapshot with 1,000 routes and 10,000 revocations is a few MiB;
/// 32 MiB leaves room for much larger clusters while bounding what a broken peer can make this
/// process buffer.
pub const MAX_LINE_BYTES: usize = 32 * 1024 * 1024;
/// First reconnect delay ceiling: a restarting operator replica is usually back within a second.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Largest reconnect delay ceiling: a data plane notices a returning operator within seconds,
/// while a fleet of pods does not hammer an operator that is down.
pub const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// While the operator stays unreachable, one warning per this many failed connects (about one a
/// minute once the backoff is at its cap), so a long outage does not flood the logs.
const UNREACHABLE_LOG_EVERY: u32 = 6;
/// Longest rejection message in a report (it ends up on the objects' conditions).
const MAX_REPORT_MESSAGE: usize = 1024;

/// Why the snapshot client cannot start or why a stream ended. Set-up errors stop the process;
/// stream errors are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Set-up: both configuration sources are set.
    #[error(
        "RIG_MANIFESTS and RIG_OPERATOR_URL are both set: in cluster mode the routes come from the \
         operator's snapshots; unset one of them"
    )]
    ManifestsInClusterMode,
    /// Set-up: `RIG_OPERATOR_URL` is not `http://host[:port][/path]`.
    #[error("RIG_OPERATOR_URL={url:?} is invalid: {reason}")]
    OperatorUrl {
        /// The value.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Stream: the TCP connection failed.
    #[error("cannot connect to the operator at {addr}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Stream: connecting or the response head took longer than [`CONNECT_TIMEOUT`].
    #[error("the operator did not answer within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    /// Stream: HTTP/2 failed (handshake, request or body).
    #[error("HTTP/2 with the operator failed")]
    Http(#[source] hyper::Error),
    /// Stream: the operator answered something else than `200`.
    #[error("the operator answered {0}")]
    Status(StatusCode),
    /// Stream: no complete line for [`IDLE_TIMEOUT`].
    #[error("no message from the operator for {0:?}")]
    Idle(Duration),
    /// Stream: the operator ended the stream (e.g. it shut down).
    #[error("the operator ended the stream")]
    Ended,
}

/// Why a snapshot was rejected. The previous configuration stays; the message is reported.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    /// The line is not a stream message of this schema (or the file not a snapshot).
    #[error("not a valid snapshot message")]
    Parse(#[source] serde_json::Error),
    /// The line exceeds [`MAX_LINE_BYTES`].
    #[error("the snapshot is larger than the data plane's limit of {limit} bytes")]
    TooLong {
        /// The limit.
        limit: usize,
    },
    /// The version is not the hash of the content: corrupted or edited.
    #[error("version {claimed} does not match the content (its hash is {computed})")]
    Version {
        /// The version the snapshot states.
        claimed: String,
        /// The hash of its content.
        computed: String,
    },
    /// The routes do not compile (or conflict with `EXTRACTORS`).
    #[error("the snapshot does not compile")]
    Compile(#[source] routes::Error),
}

// ---- configuration ----

/// Where the operator's stream is: parsed once from `RIG_OPERATOR_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to (resolved at every connect: a Service's address may change).
    addr: String,
    /// `http://host:port/base`, without a trailing slash.
    base: String,
}

impl Endpoint {
    /// Parse `http://host[:port][/path]` (port 80 by default). TLS is not supported: the stream is
    /// plain h2c inside the cluster network.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::OperatorUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| invalid("expected http://host[:port]"))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid(
                "the scheme must be http (the stream is h2c inside the cluster)",
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("expected http://host[:port]"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not supported"));
        }
        if uri.query().is_some() {
            return Err(invalid("a query string is not supported"));
        }
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = uri.path().trim_end_matches('/');
        Ok(Self {
            base: format!("http://{addr}{path}"),
            addr,
        })
    }

    /// The stream's URI, telling the operator which version we already run.
    fn stream_uri(&self, have: Option<&str>) -> String {
        match have {
            // Versions in effect passed validation: hex digits only, nothing to escape.
            Some(version) => format!("{}{STREAM_PATH}?{STREAM_HAVE_PARAM}={version}", self.base),
            None => format!("{}{STREAM_PATH}", self.base),
        }
    }
}

/// Check the cluster-mode settings: `None` in standalone mode, the operator's endpoint in cluster
/// mode; an error (the process must not start) when `RIG_MANIFESTS` is set too or the URL is bad.
pub fn endpoint(config: &Config) -> Result<Option<Endpoint>, Error> {
    let Some(url) = &config.operator_url else {
        return Ok(None);
    };
    if config.manifests.is_some() {
        return Err(Error::ManifestsInClusterMode);
    }
    Endpoint::parse(url).map(Some)
}

// ---- status: readiness and metrics ----

/// The configuration in effect, as readiness and metrics see it. One per process, in `State`.
#[derive(Debug)]
pub struct Status {
    cluster: bool,
    ready: AtomicBool,
    connected: AtomicBool,
    version: Mutex<Option<String>>,
    applied: AtomicU64,
    rejected: AtomicU64,
    cached: AtomicU64,
    cache_failures: AtomicU64,
    reports: watch::Sender<Option<DataPlaneReport>>,
    tasks: Mutex<Vec<Arc<TaskHealth>>>,
}

impl Status {
    /// Standalone mode is ready at once (its configuration was compiled before serving); cluster
    /// mode once a snapshot is in effect.
    pub fn new(cluster_mode: bool) -> Self {
        Self {
            cluster: cluster_mode,
            ready: AtomicBool::new(!cluster_mode),
            connected: AtomicBool::new(false),
            version: Mutex::new(None),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            cache_failures: AtomicU64::new(0),
            reports: watch::Sender::new(None),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Readiness also requires `task` to be healthy (e.g. the Kafka event consumer: never ready
    /// while events cannot flow).
    pub fn require(&self, task: Arc<TaskHealth>) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    /// Why the process is not ready (`GET /readyz`), or `None` when it is: a configuration is in
    /// effect and every required task is healthy.
    pub fn not_ready(&self) -> Option<String> {
        if !self.is_ready() {
            return Some(
                "not ready: no configuration in effect yet (waiting for the first snapshot from \
                 the operator)"
                    .to_owned(),
            );
        }
        let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let down: Vec<&str> = tasks
            .iter()
            .filter(|t| !t.is_healthy())
            .map(|t| t.name())
            .collect();
        (!down.is_empty()).then(|| format!("not ready: {} not running", down.join(", ")))
    }

    /// The snapshot client's reports, for the report Lease writer: the latest
    /// [`DataPlaneReport`] (one per snapshot version applied or rejected; `None` before the
    /// first). The returned receiver sees the current value as changed, so a writer started late
    /// still writes it.
    pub fn reports(&self) -> watch::Receiver<Option<DataPlaneReport>> {
        let mut receiver = self.reports.subscribe();
        receiver.mark_changed();
        receiver
    }

    /// A configuration is in effect. Stays true once true (readiness: [`Status::not_ready`]).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The snapshot version in effect (cluster mode), if any.
    pub fn version(&self) -> Option<String> {
        self.version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The snapshot stream is open right now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn set_in_effect(&self, version: &str) {
        *self.version.lock().unwrap_or_else(PoisonError::into_inner) = Some(version.to_owned());
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Append the supervised tasks' metrics and the cluster-mode metrics.
    pub fn render_metrics(&self, out: &mut String) {
        crate::support::supervise::render_metrics(
            &self.tasks.lock().unwrap_or_else(PoisonError::into_inner),
            out,
        );
        if !self.cluster {
            return;
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let name = "rig_config_snapshots_total";
        prom::family(
            out,
            name,
            prom::Kind::Counter,
            "Operator snapshots by outcome: applied, rejected (the previous configuration stayed), \
             cached (the last-known-good file loaded at start).",
        );
        for (outcome, counter) in [
            ("applied", &self.applied),
            ("rejected", &self.rejected),
            ("cached", &self.cached),
        ] {
            prom::sample(out, name, &[("outcome", outcome)], load(counter));
        }
        let name = "rig_config_snapshot_info";
        prom::family(
            out,
            name,
            prom::Kind::Gauge,
            "The operator snapshot version in effect.",
        );
        if let Some(version) = self.version() {
            prom::sample(out, name, &[("version", &version)], 1);
        }
        prom::gauge(
            out,
            "rig_operator_connected",
            "Whether the operator's snapshot stream is open.",
            u8::from(self.is_connected()),
        );
        prom::gauge(
            out,
            "rig_config_ready",
            "Whether a configuration is in effect (GET /readyz).",
            u8::from(self.is_ready()),
        );
        prom::counter(
            out,
            "rig_config_snapshot_cache_failures_total",
            "Reads and writes of the last-known-good snapshot file that failed.",
            load(&self.cache_failures),
        );
    }
}

// ---- validation ----

/// A snapshot that passed validation, with its compiled routes.
#[derive(Debug)]
pub struct Valid {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Its routes, compiled as standalone manifests would be.
    pub routes: Routes,
}

/// Validate a snapshot whole: its version must be the hash of its content, and its objects must
/// compile with the one compiler exactly as standalone manifests do (every object accepted).
pub fn validate(config: &Config, snapshot: Snapshot) -> Result<Valid, Invalid> {
    let computed = snapshot.content_version();
    if computed != snapshot.version {
        return Err(Invalid::Version {
            claimed: snapshot.version,
            computed,
        });
    }
    let routes = routes::compile_objects(config, &Objects::from_snapshot(&snapshot))
        .map_err(Invalid::Compile)?;
    Ok(Valid { snapshot, routes })
}

/// What one stream line asks for.
#[derive(Debug)]
enum Message {
    /// A heartbeat (the operator's version, if it has one).
    Heartbeat(Option<String>),
    /// A snapshot whose version is already in effect: nothing to do.
    Unchanged(String),
    /// A valid new snapshot.
    Snapshot(Box<Valid>),
}

/// A rejected line: the version it claimed (when it could be read) and why.
#[derive(Debug)]
struct Rejection {
    version: Option<String>,
    error: Invalid,
}

/// Parse and validate one stream line. `current` is the version in effect.
fn check_line(config: &Config, line: &[u8], current: Option<&str>) -> Result<Message, Rejection> {
    let message: StreamMessage = serde_json::from_slice(line).map_err(|e| Rejection {
        version: version_hint(line),
        error: Invalid::Parse(e),
    })?;
    match message {
        StreamMessage::Heartbeat { version } => Ok(Message::Heartbeat(version)),
        StreamMessage::Snapshot(snapshot) if current == Some(snapshot.version.as_str()) => {
            Ok(Message::Unchanged(snapshot.version))
        }
        StreamMessage::Snapshot(snapshot) => {
            let version = snapshot.version.clone();
            validate(config, *snapshot)
                .map(|valid| Message::Snapshot(Box::new(valid)))
                .map_err(|error| Rejection {
                    version: Some(version),
                    error,
                })
        }
    }
}

/// The version a snapshot line claims, read from its start (`{"type":"snapshot","version":"…"`,
/// the operator's field order), for reporting a line that cannot be parsed or is too long.
fn version_hint(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(br#"{"type":"snapshot","version":""#)?;
    let end = rest.iter().take(64).position(|b| *b == b'"')?;
    let version = &rest[..end];
    (!version.is_empty() && version.iter().all(u8::is_ascii_alphanumeric))
        .then(|| String::from_utf8_lossy(version).into_owned())
}

// ---- stream framing ----

/// One item of the line splitter.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A complete line, without its `\n` (and `\r`).
    Complete(Bytes),
    /// A line longer than the limit: its first bytes (it is skipped up to its end).
    TooLong(Bytes),
}

/// Splits a byte stream into lines, holding at most `limit` bytes plus one chunk.
#[derive(Debug)]
struct Lines {
    buffer: BytesMut,
    limit: usize,
    /// Inside a too-long line: drop bytes until its end.
    skipping: bool,
}

impl Lines {
    fn new(limit: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            limit,
            skipping: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete (non-empty) line or too-long line; `None` until more bytes arrive.
    fn next_line(&mut self) -> Option<Line> {
        loop {
            match self.buffer.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    let mut line = self.buffer.split_to(end + 1).freeze();
                    if std::mem::take(&mut self.skipping) {
                        continue; // the end of a too-long line, already reported
                    }
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(end - 1);
                    }
                    if line.len() > self.limit {
                        return Some(Line::TooLong(line.slice(..line.len().min(256))));
                    }
                    if !line.is_empty() {
                        return Some(Line::Complete(line));
                    }
                }
                None if self.skipping => {
                    self.buffer.clear();
                    return None;
                }
                None if self.buffer.len() > self.limit => {
                    let prefix = self.buffer.split().freeze();
                    self.skipping = true;
                    return Some(Line::TooLong(prefix.slice(..prefix.len().min(256))));
                }
                None => return None,
            }
        }
    }
}

// ---- the client ----

/// What the snapshot task needs.
#[derive(Debug)]
struct Client {
    config: Arc<Config>,
    status: Arc<Status>,
    targets: Arc<routes::Targets>,
    endpoint: Endpoint,
    /// [`IDLE_TIMEOUT`] (shorter in tests).
    idle_timeout: Duration,
}

/// Where an applied snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Operator,
    Cache,
}

/// Aborts the HTTP/2 connection task when the stream is given up.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Start cluster mode: apply the last-known-good snapshot from `RIG_SNAPSHOT_CACHE` if there is a
/// valid one, then follow the operator's stream in a task until `shutdown`.
///
/// `topics` feeds the Kafka consumer. Readiness, metrics and the reports for the report Lease
/// (one [`DataPlaneReport`] per version applied or rejected, pod = `POD_NAME`:
/// [`Status::reports`]) are in `status`.
pub async fn start(
    config: Arc<Config>,
    status: Arc<Status>,
    targets: Arc<routes::Targets>,
    endpoint: Endpoint,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let client = Client {
        config,
        status,
        targets,
        endpoint,
        idle_timeout: IDLE_TIMEOUT,
    };
    client.load_cache().await;
    tokio::spawn(client.run(shutdown))
}

impl Client {
    fn status(&self) -> &Status {
        &self.status
    }

    /// Follow the stream, reconnecting with backoff, until shutdown.
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        // Failed connects in a row: the first is a warning, then one line every
        // `UNREACHABLE_LOG_EVERY` (the `rig_operator_connected` gauge tells the rest).
        let mut failures: u32 = 0;
        loop {
            let mut healthy = false;
            let ended = tokio::select! {
                ended = self.follow(&mut healthy) => ended,
                _ = crate::support::stopped(&mut shutdown) => return,
            };
            let was_connected = self.status().connected.swap(false, Ordering::Relaxed);
            if healthy {
                backoff.reset();
            }
            let delay = backoff.next_delay(random_unit());
            let error = error_chain(&ended);
            let retry_in_ms = delay.as_millis() as u64;
            if was_connected {
                failures = 0;
                tracing::warn!(
                    operator = %self.endpoint.base, error, retry_in_ms,
                    "snapshot stream lost; the configuration in effect keeps serving"
                );
            } else {
                if failures.is_multiple_of(UNREACHABLE_LOG_EVERY) {
                    tracing::warn!(
                        operator = %self.endpoint.base, error, retry_in_ms, failures,
                        "operator unreachable; the configuration in effect keeps serving"
                    );
                } else {
                    tracing::debug!(
                        operator = %self.endpoint.base, error, retry_in_ms, failures,
                        "operator unreachable"
                    );
                }
                failures = failures.saturating_add(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = crate::support::stopped(&mut shutdown) => return,
            }
        }
    }

    /// One stream, from connect to its end. Always ends with the reason.
    async fn follow(&self, healthy: &mut bool) -> Error {
        let have = self.status().version();
        let (response, _connection) =
            match tokio::time::timeout(CONNECT_TIMEOUT, self.request(have.as_deref())).await {
                Ok(Ok(opened)) => opened,
                Ok(Err(error)) => return error,
                Err(_) => return Error::ConnectTimeout,
            };
        if response.status() != StatusCode::OK {
            return Error::Status(response.status());
        }
        self.status().connected.store(true, Ordering::Relaxed);
        tracing::info!(operator = %self.endpoint.base, have = ?have, "snapshot stream open");
        let mut body = response.into_body();
        let mut lines = Lines::new(MAX_LINE_BYTES);
        let mut deadline = Instant::now() + self.idle_timeout;
        loop {
            while let Some(line) = lines.next_line() {
                self.handle(line, healthy).await;
                // After handling: a long compilation does not count as silence.
                deadline = Instant::now() + self.idle_timeout;
            }
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Error::Idle(self.idle_timeout),
                Ok(None) => return Error::Ended,
                Ok(Some(Err(error))) => return Error::Http(error),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                lines.push(&data);
            }
        }
    }

    /// Connect (h2c, prior knowledge) and send the request; returns the response head and the
    /// connection task (aborted when dropped).
    async fn request(
        &self,
        have: Option<&str>,
    ) -> Result<(http::Response<hyper::body::Incoming>, AbortOnDrop), Error> {
        let tcp = TcpStream::connect(&self.endpoint.addr)
            .await
            .map_err(|source| Error::Connect {
                addr: self.endpoint.addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .map_err(Error::Http)?;
        let connection = AbortOnDrop(tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "operator connection ended with an error");
            }
        }));
        let uri = self.endpoint.stream_uri(have);
        let request =
            Request::get(uri)
                .body(Empty::<Bytes>::new())
                .map_err(|_| Error::OperatorUrl {
                    url: self.endpoint.base.clone(),
                    reason: "not a valid request URI",
                })?;
        let response = sender.send_request(request).await.map_err(Error::Http)?;
        Ok((response, connection))
    }

    /// Act on one line of the stream.
    async fn handle(&self, line: Line, healthy: &mut bool) {
        let line = match line {
            Line::Complete(line) => line,
            Line::TooLong(prefix) => {
                let error = Invalid::TooLong {
                    limit: MAX_LINE_BYTES,
                };
                self.reject(version_hint(&prefix), &error);
                return;
            }
        };
        let current = self.status().version();
        let config = self.config.clone();
        // Parsing and compiling thousands of routes takes milliseconds: off the runtime threads.
        let checked =
            tokio::task::spawn_blocking(move || check_line(&config, &line, current.as_deref()))
                .await;
        match checked {
            Ok(Ok(Message::Heartbeat(version))) => {
                *healthy = true;
                tracing::trace!(operator_version = ?version, "heartbeat");
            }
            Ok(Ok(Message::Unchanged(version))) => {
                tracing::debug!(version, "snapshot already in effect");
            }
            Ok(Ok(Message::Snapshot(valid))) => self.install(*valid, Origin::Operator).await,
            Ok(Err(rejection)) => self.reject(rejection.version, &rejection.error),
            Err(error) => {
                // Only a panic in the validation (a bug) gets here; nothing was applied.
                tracing::error!(%error, "snapshot validation task failed");
                self.status().rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Put a valid snapshot into effect, report it, and keep it on disk (when it came from the
    /// operator).
    async fn install(&self, valid: Valid, origin: Origin) {
        let Valid { snapshot, routes } = valid;
        routes::apply(&self.targets, routes);
        self.status().set_in_effect(&snapshot.version);
        let counter = match origin {
            Origin::Operator => &self.status().applied,
            Origin::Cache => &self.status().cached,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            version = %snapshot.version,
            ?origin,
            event_routes = snapshot.event_routes.len(),
            proxy_routes = snapshot.proxy_routes.len(),
            blacklists = snapshot.blacklists.len(),
            "snapshot applied"
        );
        self.report(&snapshot.version, Outcome::Applied);
        if origin == Origin::Operator
            && let Some(path) = self.config.snapshot_cache.clone()
        {
            let target = path.clone();
            let written = tokio::task::spawn_blocking(move || write_cache(&target, &snapshot))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            if let Err(error) = written {
                self.status().cache_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    path = %path.display(), %error,
                    "cannot write the last-known-good snapshot; a restart without the operator \
                     would serve an older one"
                );
            }
        }
    }

    /// Count, log and report a rejected snapshot; the configuration in effect stays.
    fn reject(&self, version: Option<String>, error: &Invalid) {
        self.status().rejected.fetch_add(1, Ordering::Relaxed);
        let mut message = error_chain(error);
        if message.len() > MAX_REPORT_MESSAGE {
            let mut end = MAX_REPORT_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        tracing::error!(
            version = version.as_deref().unwrap_or("unknown"),
            error = %message,
            in_effect = ?self.status().version(),
            "snapshot rejected; the previous configuration stays in effect"
        );
        if let Some(version) = version {
            self.report(&version, Outcome::Rejected { message });
        }
    }

    fn report(&self, version: &str, outcome: Outcome) {
        self.status().reports.send_replace(Some(DataPlaneReport {
            pod: self.config.owner.clone(),
            version: version.to_owned(),
            outcome,
        }));
    }

    /// Apply the last-known-good snapshot, if `RIG_SNAPSHOT_CACHE` names a valid one.
    async fn load_cache(&self) {
        let Some(path) = self.config.snapshot_cache.clone() else {
            return;
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no last-known-good snapshot yet");
                return;
            }
            Err(error) => {
                self.status().cache_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    path = %path.display(), %error,
                    "cannot read the last-known-good snapshot"
                );
                return;
            }
        };
        let config = self.config.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(Invalid::Parse)?;
            validate(&config, snapshot)
        })
        .await;
        match checked {
            Ok(Ok(valid)) => self.install(valid, Origin::Cache).await,
            Ok(Err(error)) => {
                self.status().cache_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    path = %path.display(),
                    error = %error_chain(&error),
                    "the last-known-good snapshot is unusable; waiting for the operator"
                );
            }
            Err(error) => {
                self.status().cache_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "last-known-good validation task failed");
            }
        }
    }
}

/// Write `snapshot` to `path` atomically: a temporary file next to it, flushed, then renamed over
/// it, so a crash leaves the old file or the new one, never a mix.
fn write_cache(path: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    use std::io::Write as _;
    let json = serde_json::to_vec(snapshot).map_err(std::io::Error::other)?;
    let mut temp = PathBuf::from(path).into_os_string();
    temp.push(format!(".tmp-{}", std::process::id()));
    let temp = PathBuf::from(temp);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests;
