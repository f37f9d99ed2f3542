//! Process configuration: RIG's environment variables, parsed in one place.
//!
//! Every default is defined here with the reason for it. Unknown or malformed values stop the
//! process at start-up with a message naming the variable (a misconfigured gateway must not serve).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use thiserror::Error;

use crate::auth::check::CheckMode;
use crate::auth::{JwtConfig, TokenKey};
use crate::peers::PeerMap;

/// Inbound port: connections, subscriptions, event publishing, proxied APIs (RIG's default 4000).
pub const ENV_INBOUND_PORT: &str = "INBOUND_PORT";
/// Internal API port: `/v3/...`, `/health`, `/metrics` (RIG's default 4010).
pub const ENV_API_HTTP_PORT: &str = "API_HTTP_PORT";
/// TLS inbound port (RIG's default 4001), served when `HTTPS_CERTFILE` and `HTTPS_KEYFILE` are set.
pub const ENV_INBOUND_HTTPS_PORT: &str = "INBOUND_HTTPS_PORT";
/// TLS internal API port (RIG's default 4011).
pub const ENV_API_HTTPS_PORT: &str = "API_HTTPS_PORT";
/// PEM certificate chain of the TLS ports.
pub const ENV_HTTPS_CERTFILE: &str = "HTTPS_CERTFILE";
/// PEM private key of the TLS ports.
pub const ENV_HTTPS_KEYFILE: &str = "HTTPS_KEYFILE";
/// Password of an encrypted (PKCS#8) `HTTPS_KEYFILE`.
pub const ENV_HTTPS_KEYFILE_PASS: &str = "HTTPS_KEYFILE_PASS";
/// How often the certificate files are compared for a reload (beyond RIG).
pub const ENV_TLS_RELOAD_INTERVAL_MS: &str = "RIG_TLS_RELOAD_INTERVAL_MS";
/// RIG's `REQUEST_LOG`: `console`, `kafka`, or both, comma-separated.
pub const ENV_REQUEST_LOG: &str = "REQUEST_LOG";
/// RIG's `KAFKA_LOG_TOPIC`: where the `kafka` request log goes.
pub const ENV_KAFKA_LOG_TOPIC: &str = "KAFKA_LOG_TOPIC";
/// Address both listeners bind to. Default `0.0.0.0` (a pod must be reachable); tests use loopback.
pub const ENV_BIND_ADDRESS: &str = "RIG_BIND_ADDRESS";
/// Value of `access-control-allow-origin` (RIG's `CORS`, default `*`).
pub const ENV_CORS: &str = "CORS";

/// Kafka bootstrap servers, comma-separated `host:port`; empty disables Kafka (RIG).
pub const ENV_KAFKA_BROKERS: &str = "KAFKA_BROKERS";
/// Event topics, comma-separated (RIG's default `rig`), besides those of `EventRoute` objects.
pub const ENV_KAFKA_SOURCE_TOPICS: &str = "KAFKA_SOURCE_TOPICS";
/// New connections per minute, all transports, per process (RIG's default 5000; 0 = unlimited).
pub const ENV_MAX_CONNECTIONS_PER_MINUTE: &str = "MAX_CONNECTIONS_PER_MINUTE";
/// RIG's `EXTRACTORS`: inline JSON or a path to a JSON file.
pub const ENV_EXTRACTORS: &str = "EXTRACTORS";
/// RIG's `SUBSCRIPTION_CHECK`: `no_check` (default), `jwt_validation`, or an `http://` URL.
pub const ENV_SUBSCRIPTION_CHECK: &str = "SUBSCRIPTION_CHECK";
/// RIG's `SUBMISSION_CHECK` (guards `POST /_rig/v1/events`): same values.
pub const ENV_SUBMISSION_CHECK: &str = "SUBMISSION_CHECK";
/// Milliseconds an external authorization check may take; no answer in time denies.
pub const ENV_CHECK_TIMEOUT_MS: &str = "RIG_CHECK_TIMEOUT_MS";
/// Milliseconds a client has to send a request head on the inbound and internal ports: from the
/// connection's start, or from the end of the previous answer on a kept-alive connection.
pub const ENV_HEAD_TIMEOUT_MS: &str = "RIG_HEAD_TIMEOUT_MS";
/// Milliseconds a request body read by the gateway itself (events, subscriptions, the internal
/// API) may stall before the request is refused with 408.
pub const ENV_BODY_IDLE_TIMEOUT_MS: &str = "RIG_BODY_IDLE_TIMEOUT_MS";
/// Most open connections on the inbound port; beyond, new ones are closed at once.
pub const ENV_MAX_INBOUND_CONNECTIONS: &str = "RIG_MAX_INBOUND_CONNECTIONS";
/// File descriptors kept free for the internal port and the process's own sockets when the
/// inbound cap is derived from the open-files limit.
pub const FD_RESERVE: usize = 128;
/// The other processes' internal APIs, for forwarding requests about their connections:
/// comma-separated `<owner>=http://<host>:<port>`, and optionally `*=http://{owner}.<svc>:<port>`
/// (see `peers`).
pub const ENV_PEERS: &str = "RIG_PEERS";
/// Milliseconds a forwarded request may take before the client gets 504.
pub const ENV_PEER_TIMEOUT_MS: &str = "RIG_PEER_TIMEOUT_MS";
/// Events kept for lossless reconnect (see `replay`); 0 disables replay.
pub const ENV_REPLAY_WINDOW: &str = "RIG_REPLAY_WINDOW";
/// Frames a connection may have queued before it counts as a slow consumer and is closed.
pub const ENV_QUEUE_CAPACITY: &str = "RIG_CONNECTION_QUEUE";
/// Largest accepted request body on `/_rig/v1/events`, `/v3/messages` and subscription PUTs.
pub const ENV_MAX_BODY_BYTES: &str = "RIG_MAX_BODY_BYTES";
/// Milliseconds a long poll is held open when nothing is pending (0: answer at once).
pub const ENV_LONGPOLLING_HOLD_MS: &str = "RIG_LONGPOLLING_HOLD_MS";
/// Seconds a long-polling session lives without a poll.
pub const ENV_LONGPOLLING_SESSION_TIMEOUT_SECS: &str = "RIG_LONGPOLLING_SESSION_TIMEOUT_SECS";
/// Events a long-polling session keeps between polls; beyond it the oldest are dropped.
pub const ENV_LONGPOLLING_BUFFER: &str = "RIG_LONGPOLLING_BUFFER";
/// Open connections one JWT session may hold in this process (beyond RIG, its issue #258); 0 or
/// unset: no limit.
pub const ENV_MAX_CONNECTIONS_PER_SESSION: &str = "MAX_CONNECTIONS_PER_SESSION";
/// New connections per minute from one client (default: a tenth of `MAX_CONNECTIONS_PER_MINUTE`).
pub const ENV_MAX_CONNECTIONS_PER_MINUTE_PER_CLIENT: &str =
    "RIG_MAX_CONNECTIONS_PER_MINUTE_PER_CLIENT";
/// The CloudEvents version of the gateway's own events: `0.2` (RIG's format, the default) or `1.0`.
pub const ENV_OWN_EVENTS_SPECVERSION: &str = "RIG_OWN_EVENTS_SPECVERSION";
/// The Kafka topic HTTP-published events go to when no `EventRoute` names one.
pub const ENV_HTTP_EVENTS_TOPIC: &str = "RIG_HTTP_EVENTS_TOPIC";
/// Milliseconds the broker has to acknowledge an HTTP-published event (503 beyond).
pub const ENV_PUBLISH_TIMEOUT_MS: &str = "RIG_PUBLISH_TIMEOUT_MS";
const DEFAULT_PUBLISH_TIMEOUT_MS: u64 = 5_000;
/// A request header whose last entry names the client's address (behind a proxy).
pub const ENV_CLIENT_IP_HEADER: &str = "RIG_CLIENT_IP_HEADER";
/// `true`: close a connection when the JWT it presented expires (beyond RIG; SSE and long-polling
/// get `rig.session_expired`, WebSocket close 1000 `Session expired.`; see `sessions::expiry`).
/// Default `false`: RIG checks a token only when it is presented, and closing live connections at
/// `exp` would break frontends that refresh tokens without reconnecting.
pub const ENV_CLOSE_AT_TOKEN_EXPIRY: &str = "RIG_CLOSE_AT_TOKEN_EXPIRY";
/// The name of this process in connection tokens (the pod name in Kubernetes).
pub const ENV_POD_NAME: &str = "POD_NAME";
/// The namespace of this pod (cluster mode): where its report Lease lives and where the
/// revocation API creates `Blacklist` objects. Default `default`.
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";
/// Cluster mode: this pod's UID (Downward API): its report Lease is owned by the pod, so
/// Kubernetes deletes the Lease with the pod even when the pod cannot delete it itself.
pub const ENV_POD_UID: &str = "POD_UID";
/// Cluster mode: the operator's snapshot stream, e.g. `http://rig-operator.rig-system:9090`
/// (a Service in front of every operator replica). Set: the routes, proxy routes and revocations
/// come from the operator's snapshots (and `Blacklist` objects are also watched directly).
pub const ENV_OPERATOR_URL: &str = "RIG_OPERATOR_URL";
/// Cluster mode: the file keeping the last-known-good snapshot, so a restart while the operator
/// is away still serves the last configuration. Unset: kept in memory only.
pub const ENV_SNAPSHOT_CACHE: &str = "RIG_SNAPSHOT_CACHE";
/// Interval of SSE heartbeat comments and WebSocket pings, one shared timer for all connections.
pub const ENV_HEARTBEAT_INTERVAL_MS: &str = "RIG_HEARTBEAT_INTERVAL_MS";
/// RIG's 15 s: short enough for proxies with a 30-60 s idle timeout, rare enough to cost nothing.
const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 15_000;
/// RIG's proxy API definitions: a JSON list, inline (starting with `[`) or a file path.
pub const ENV_PROXY_CONFIG_FILE: &str = "PROXY_CONFIG_FILE";
/// Milliseconds a proxied request waits for the target's response head, for RIG definitions
/// (`ProxyRoute` objects set their own `response.timeout`); beyond it the client gets 504.
pub const ENV_PROXY_RECV_TIMEOUT: &str = "PROXY_RECV_TIMEOUT";
/// Largest proxied request body (bytes); beyond it the client gets 413.
pub const ENV_PROXY_MAX_BODY_BYTES: &str = "PROXY_MAX_BODY_BYTES";
/// A PEM file of extra CA certificates trusted for `https://` proxy targets, besides the system
/// roots (a private CA inside the cluster). Unset: the system roots only.
pub const ENV_PROXY_TLS_CA_FILE: &str = "PROXY_TLS_CA_FILE";
/// Milliseconds a proxied request body may stall (no data from the client) before the upstream
/// request is aborted: the client gets 408 (or, once the response started, its end is cut off).
pub const ENV_PROXY_BODY_IDLE_TIMEOUT_MS: &str = "PROXY_BODY_IDLE_TIMEOUT_MS";
/// RIG's `HOST`: its IP is the `by=` of the `forwarded` header sent to proxy targets.
pub const ENV_HOST: &str = "HOST";
/// Comma-separated topics carrying correlated proxy responses (every process reads all partitions).
pub const ENV_PROXY_KAFKA_RESPONSE_TOPICS: &str = "PROXY_KAFKA_RESPONSE_TOPICS";
/// RIG's default response topic.
const DEFAULT_PROXY_KAFKA_RESPONSE_TOPICS: &str = "rig-proxy-response";
/// Milliseconds a RIG-defined route with `response_from: kafka` waits for the correlated response
/// (`ProxyRoute` objects use their `response.timeout`); beyond it the client gets 504.
pub const ENV_PROXY_KAFKA_RESPONSE_TIMEOUT: &str = "PROXY_KAFKA_RESPONSE_TIMEOUT";
/// Likewise for `response_from: http_async`.
pub const ENV_PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT: &str = "PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT";
/// RIG's 5 s for both.
const DEFAULT_PROXY_RESPONSE_TIMEOUT_MS: u64 = 5_000;

const DEFAULT_INBOUND_PORT: u16 = 4000;
const DEFAULT_API_HTTP_PORT: u16 = 4010;
const DEFAULT_INBOUND_HTTPS_PORT: u16 = 4001;
const DEFAULT_API_HTTPS_PORT: u16 = 4011;
const DEFAULT_TLS_RELOAD_INTERVAL_MS: u64 = 10_000;
const DEFAULT_KAFKA_LOG_TOPIC: &str = "rig-request-log";
const DEFAULT_CORS: &str = "*";
const DEFAULT_SOURCE_TOPICS: &str = "rig";
const DEFAULT_MAX_CONNECTIONS_PER_MINUTE: u64 = 5000;
/// 10,000 events cover several seconds of a busy stream (a reconnect takes about 1-3 s) at about
/// 10 MiB for 1 KiB events.
const DEFAULT_REPLAY_WINDOW: usize = 10_000;
/// 256 frames absorb a burst without letting one stuck client hold much memory (frames are shared,
/// so a queue entry is a pointer, not a copy).
const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// 1 MiB: CloudEvents are small; larger bodies are almost always a mistake or an attack.
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// 5 s, RIG's (10 checks 500 ms apart): well below the 30-60 s idle timeouts of proxies and load
/// balancers, long enough that an idle client polls only a dozen times a minute.
const DEFAULT_LONGPOLLING_HOLD_MS: u64 = 5_000;
/// 1 h, RIG's: a tab in the background keeps its session (and buffered events) for a while.
const DEFAULT_LONGPOLLING_SESSION_TIMEOUT_SECS: u64 = 3_600;
/// 200, RIG's ring size: a few minutes of a typical frontend's events between polls.
const DEFAULT_LONGPOLLING_BUFFER: usize = 200;
/// 5 s, RIG's HTTP client's receive timeout: long enough for a slow policy service, short enough
/// that a dead one does not hold connects and publishes for long.
const DEFAULT_CHECK_TIMEOUT_MS: u64 = 5_000;
/// hyper's own default for a head: generous for a slow mobile network, and a bound on what an idle
/// or dripping socket costs.
const DEFAULT_HEAD_TIMEOUT_MS: u64 = 30_000;
/// As `PROXY_BODY_IDLE_TIMEOUT_MS`: no legitimate client stalls an upload that long.
const DEFAULT_BODY_IDLE_TIMEOUT_MS: u64 = 30_000;
/// 5 s: a peer answers a subscription update in milliseconds; beyond this it is stuck.
const DEFAULT_PEER_TIMEOUT_MS: u64 = 5_000;
/// 5 s, RIG's `PROXY_RECV_TIMEOUT`.
const DEFAULT_PROXY_RECV_TIMEOUT_MS: u64 = 5_000;
/// 64 MiB: proxied bodies are streamed, so the bound is not about our memory but about letting a
/// runaway upload reach a backend; file-upload routes may need more.
const DEFAULT_PROXY_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// 30 s between two reads of a request body (nginx's `client_body_timeout` is 60 s): far above
/// any pause of a live client on a slow network, short enough that a stalled upload does not hold
/// a backend connection for long. RIG has no such bound.
const DEFAULT_PROXY_BODY_IDLE_TIMEOUT_MS: u64 = 30_000;
/// RIG's default `HOST`.
const DEFAULT_HOST: &str = "localhost";

/// A configuration value that cannot be used.
#[derive(Debug, Error)]
pub enum Error {
    /// A JWT or connection-token setting is unusable.
    #[error(transparent)]
    Auth(crate::auth::ConfigError),
    /// The variable is set but does not parse.
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The environment as RIG definitions may name it (`"proxy": {"use_env": true, "target_url":
/// "<VAR>"}`): a snapshot taken at start. Its `Debug` shows only how many variables it holds.
#[derive(Clone, Default)]
pub struct UseEnv(std::sync::Arc<std::collections::BTreeMap<String, String>>);

impl UseEnv {
    /// The value of `var`, if it was set.
    pub fn get(&self, var: &str) -> Option<String> {
        self.0.get(var).cloned()
    }
}

impl std::fmt::Debug for UseEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UseEnv({} variables)", self.0.len())
    }
}

/// The data plane's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `JWT_SECRET_KEY`, `JWT_ALG`, `JWT_SESSION_FIELD`, `JWT_JWKS…`: end-user JWT verification.
    pub jwt: JwtConfig,
    /// `RIG_TOKEN_KEY`; `None`: a random key per process.
    pub token_key: Option<TokenKey>,
    /// The environment for RIG definitions' `use_env` targets.
    pub use_env: UseEnv,
    /// Where the inbound listener binds.
    pub inbound: SocketAddr,
    /// Where the internal API listener binds.
    pub internal: SocketAddr,
    /// The TLS listeners, when `HTTPS_CERTFILE` and `HTTPS_KEYFILE` are set.
    pub https: Option<Https>,
    /// `REQUEST_LOG`, `KAFKA_LOG_TOPIC`.
    pub request_log: RequestLog,
    /// `access-control-allow-origin` value.
    pub cors: String,
    /// Kafka bootstrap servers; `None` when Kafka is off.
    pub kafka_brokers: Option<String>,
    /// Event topics to consume (when Kafka is on).
    pub kafka_source_topics: Vec<String>,
    /// New connections per minute (0 = unlimited).
    pub max_connections_per_minute: u64,
    /// New connections per minute from one client (0 = no per-client share).
    pub max_connections_per_minute_per_client: u64,
    /// `RIG_CLIENT_IP_HEADER`: where the client's address is read behind a proxy.
    pub client_ip_header: Option<http::HeaderName>,
    /// `RIG_HTTP_EVENTS_TOPIC` (default: the first `KAFKA_SOURCE_TOPICS` topic): where
    /// HTTP-published events go when Kafka is on and no `EventRoute` names a topic.
    pub http_events_topic: Option<String>,
    /// `RIG_PUBLISH_TIMEOUT_MS`: how long the broker has to acknowledge an HTTP-published event.
    pub publish_timeout: Duration,
    /// `RIG_OWN_EVENTS_SPECVERSION`: the format of `rig.*` events.
    pub own_events_version: crate::events::SpecVersion,
    /// Open connections per JWT session; `None` (the default: RIG has no such limit) = unlimited.
    pub max_connections_per_session: Option<usize>,
    /// Close connections when their JWT expires (`RIG_CLOSE_AT_TOKEN_EXPIRY`, default off).
    pub close_at_token_expiry: bool,
    /// RIG's `EXTRACTORS` JSON (already read from the file when a path was given).
    pub extractors_json: Option<String>,
    /// `SUBSCRIPTION_CHECK`.
    pub subscription_check: CheckMode,
    /// `SUBMISSION_CHECK`.
    pub submission_check: CheckMode,
    /// Bound on one external authorization check.
    pub check_timeout: Duration,
    /// `RIG_HEAD_TIMEOUT_MS`.
    pub head_timeout: Duration,
    /// `RIG_BODY_IDLE_TIMEOUT_MS`.
    pub body_idle_timeout: Duration,
    /// `RIG_MAX_INBOUND_CONNECTIONS`; `None`: the open-files limit minus [`FD_RESERVE`] (no cap
    /// when that limit is unknown).
    pub max_inbound_connections: Option<usize>,
    /// The other processes (`RIG_PEERS`).
    pub peers: PeerMap,
    /// Bound on one forwarded request.
    pub peer_timeout: Duration,
    /// Events kept for lossless reconnect.
    pub replay_window: usize,
    /// Per-connection queue capacity.
    pub queue_capacity: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long a long poll with nothing to answer is held open.
    pub longpolling_hold: std::time::Duration,
    /// How long a long-polling session lives without a poll.
    pub longpolling_session_timeout: std::time::Duration,
    /// Events a long-polling session keeps between polls (at least 1).
    pub longpolling_buffer: usize,
    /// Name of this process in connection tokens.
    pub owner: String,
    /// Interval of heartbeats (SSE comments, WebSocket pings).
    pub heartbeat_interval: std::time::Duration,
    /// Standalone mode: a file or folder of `EventRoute`/`ProxyRoute`/`Blacklist` manifests.
    pub manifests: Option<std::path::PathBuf>,
    /// Cluster mode: the operator's snapshot stream base URL (`RIG_OPERATOR_URL`).
    pub operator_url: Option<String>,
    /// Cluster mode: where the last-known-good snapshot is kept on disk.
    pub snapshot_cache: Option<std::path::PathBuf>,
    /// This pod's namespace (`POD_NAMESPACE`).
    pub pod_namespace: String,
    /// This pod's UID (`POD_UID`), the owner of its report Lease.
    pub pod_uid: Option<String>,
    /// RIG's proxy definitions (`PROXY_CONFIG_FILE`, already read when a path was given).
    pub proxy_config: Option<String>,
    /// How long a RIG-defined proxy route waits for the target's response head.
    pub proxy_recv_timeout: Duration,
    /// Largest proxied request body.
    pub proxy_max_body_bytes: u64,
    /// Extra CA certificates for `https://` proxy targets (`PROXY_TLS_CA_FILE`), validated.
    pub proxy_tls_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// How long a proxied request body may stall before the upstream request is aborted.
    pub proxy_body_idle_timeout: Duration,
    /// `HOST`, for `forwarded: by=`.
    pub host: String,
    /// `PROXY_KAFKA_RESPONSE_TOPICS`: where correlated responses arrive.
    pub proxy_kafka_response_topics: Vec<String>,
    /// `PROXY_KAFKA_RESPONSE_TIMEOUT` (RIG definitions).
    pub proxy_kafka_response_timeout: Duration,
    /// `PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT` (RIG definitions).
    pub proxy_http_async_response_timeout: Duration,
}

impl Config {
    /// Cluster mode: configuration comes from the operator (`RIG_OPERATOR_URL` is set).
    pub fn cluster_mode(&self) -> bool {
        self.operator_url.is_some()
    }

    /// Read the configuration from the process environment: the only place the data plane reads
    /// it (RIG definitions' `use_env` targets included, through [`Config::use_env`]).
    pub fn from_env() -> Result<Self> {
        let mut config = Self::from_lookup(|key| std::env::var(key).ok())?;
        config.use_env = UseEnv(std::sync::Arc::new(std::env::vars().collect()));
        Ok(config)
    }

    /// Read the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bind: IpAddr = parse(&lookup, ENV_BIND_ADDRESS, "an IP address")?
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let inbound_port =
            parse(&lookup, ENV_INBOUND_PORT, "a port number")?.unwrap_or(DEFAULT_INBOUND_PORT);
        let internal_port =
            parse(&lookup, ENV_API_HTTP_PORT, "a port number")?.unwrap_or(DEFAULT_API_HTTP_PORT);
        Self {
            jwt: JwtConfig::from_lookup(&lookup).map_err(Error::Auth)?,
            token_key: TokenKey::from_lookup(&lookup).map_err(Error::Auth)?,
            use_env: UseEnv::default(),
            inbound: SocketAddr::new(bind, inbound_port),
            internal: SocketAddr::new(bind, internal_port),
            https: https(&lookup, bind)?,
            request_log: request_log(&lookup)?,
            cors: lookup(ENV_CORS).unwrap_or_else(|| DEFAULT_CORS.to_owned()),
            kafka_brokers: lookup(ENV_KAFKA_BROKERS).filter(|b| !b.trim().is_empty()),
            kafka_source_topics: list(
                &lookup(ENV_KAFKA_SOURCE_TOPICS).unwrap_or_else(|| DEFAULT_SOURCE_TOPICS.into()),
            ),
            max_connections_per_minute: parse(
                &lookup,
                ENV_MAX_CONNECTIONS_PER_MINUTE,
                "a non-negative integer",
            )?
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_MINUTE),
            max_connections_per_minute_per_client: 0,
            own_events_version: match lookup(ENV_OWN_EVENTS_SPECVERSION).as_deref().map(str::trim) {
                None | Some("" | "0.2") => crate::events::SpecVersion::V0_2,
                Some("1.0") => crate::events::SpecVersion::V1_0,
                Some(other) => {
                    return Err(Error::Invalid {
                        var: ENV_OWN_EVENTS_SPECVERSION,
                        value: other.to_owned(),
                        reason: "0.2 (RIG's format) or 1.0",
                    });
                }
            },
            http_events_topic: match lookup(ENV_HTTP_EVENTS_TOPIC).filter(|t| !t.trim().is_empty())
            {
                Some(topic) => {
                    let topic = topic.trim().to_owned();
                    if !rig_crds::compile::valid_topic(&topic) {
                        return Err(Error::Invalid {
                            var: ENV_HTTP_EVENTS_TOPIC,
                            value: topic,
                            reason: "a Kafka topic name (1-249 characters of a-z A-Z 0-9 . _ -)",
                        });
                    }
                    Some(topic)
                }
                None => None,
            },
            publish_timeout: Duration::from_millis(
                positive(
                    &lookup,
                    ENV_PUBLISH_TIMEOUT_MS,
                    "a positive number of milliseconds",
                )?
                .unwrap_or(DEFAULT_PUBLISH_TIMEOUT_MS),
            ),
            client_ip_header: match lookup(ENV_CLIENT_IP_HEADER).filter(|h| !h.trim().is_empty()) {
                None => None,
                Some(name) => {
                    Some(
                        http::HeaderName::try_from(name.trim()).map_err(|_| Error::Invalid {
                            var: ENV_CLIENT_IP_HEADER,
                            value: name.clone(),
                            reason: "an HTTP header name, e.g. x-forwarded-for",
                        })?,
                    )
                }
            },
            max_connections_per_session: parse::<usize>(
                &lookup,
                ENV_MAX_CONNECTIONS_PER_SESSION,
                "a non-negative integer (0: no limit)",
            )?
            .filter(|n| *n > 0),
            close_at_token_expiry: parse(&lookup, ENV_CLOSE_AT_TOKEN_EXPIRY, "true or false")?
                .unwrap_or(false),
            extractors_json: extractors(lookup(ENV_EXTRACTORS))?,
            subscription_check: check_mode(&lookup, ENV_SUBSCRIPTION_CHECK)?,
            submission_check: check_mode(&lookup, ENV_SUBMISSION_CHECK)?,
            head_timeout: Duration::from_millis(
                positive(
                    &lookup,
                    ENV_HEAD_TIMEOUT_MS,
                    "a positive number of milliseconds",
                )?
                .unwrap_or(DEFAULT_HEAD_TIMEOUT_MS),
            ),
            body_idle_timeout: Duration::from_millis(
                positive(
                    &lookup,
                    ENV_BODY_IDLE_TIMEOUT_MS,
                    "a positive number of milliseconds",
                )?
                .unwrap_or(DEFAULT_BODY_IDLE_TIMEOUT_MS),
            ),
            max_inbound_connections: positive(
                &lookup,
                ENV_MAX_INBOUND_CONNECTIONS,
                "a positive number",
            )?,
            check_timeout: Duration::from_millis(
                positive(
                    &lookup,
                    ENV_CHECK_TIMEOUT_MS,
                    "a positive number of milliseconds",
                )?
                .unwrap_or(DEFAULT_CHECK_TIMEOUT_MS),
            ),
            peers: match lookup(ENV_PEERS) {
                None => PeerMap::default(),
                Some(value) => PeerMap::parse(&value).map_err(|reason| Error::Invalid {
                    var: ENV_PEERS,
                    value,
                    reason,
                })?,
            },
            peer_timeout: Duration::from_millis(
                positive(
                    &lookup,
                    ENV_PEER_TIMEOUT_MS,
                    "a positive number of milliseconds",
                )?
                .unwrap_or(DEFAULT_PEER_TIMEOUT_MS),
            ),
            replay_window: parse(&lookup, ENV_REPLAY_WINDOW, "a non-negative integer")?
                .unwrap_or(DEFAULT_REPLAY_WINDOW),
            queue_capacity: positive(&lookup, ENV_QUEUE_CAPACITY, "a positive integer")?
                .unwrap_or(DEFAULT_QUEUE_CAPACITY),
            max_body_bytes: positive(&lookup, ENV_MAX_BODY_BYTES, "a positive integer")?
                .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            longpolling_hold: std::time::Duration::from_millis(
                parse(&lookup, ENV_LONGPOLLING_HOLD_MS, "a number of milliseconds")?
                    .unwrap_or(DEFAULT_LONGPOLLING_HOLD_MS),
            ),
            longpolling_session_timeout: std::time::Duration::from_secs(
                parse(
                    &lookup,
                    ENV_LONGPOLLING_SESSION_TIMEOUT_SECS,
                    "a positive number of seconds",
                )?
                .map_or(
                    DEFAULT_LONGPOLLING_SESSION_TIMEOUT_SECS,
                    std::num::NonZeroU64::get,
                ),
            ),
            longpolling_buffer: parse(&lookup, ENV_LONGPOLLING_BUFFER, "a positive integer")?
                .map_or(DEFAULT_LONGPOLLING_BUFFER, std::num::NonZeroUsize::get),
            operator_url: lookup(ENV_OPERATOR_URL)
                .map(|u| u.trim().trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty()),
            snapshot_cache: lookup(ENV_SNAPSHOT_CACHE)
                .filter(|p| !p.trim().is_empty())
                .map(std::path::PathBuf::from),
            pod_uid: lookup(ENV_POD_UID).filter(|u| !u.trim().is_empty()),
            pod_namespace: lookup(ENV_POD_NAMESPACE)
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| "default".to_owned()),
            manifests: lookup(crate::manifests::ENV_MANIFESTS)
                .filter(|p| !p.trim().is_empty())
                .map(std::path::PathBuf::from),
            heartbeat_interval: std::time::Duration::from_millis(
                positive(
                    &lookup,
                    ENV_HEARTBEAT_INTERVAL_MS,
                    "a positive number of milliseconds",
                )?
                .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_MS),
            ),
            owner: lookup(ENV_POD_NAME)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(random_owner),
            proxy_config: proxy_config(lookup(ENV_PROXY_CONFIG_FILE))?,
            proxy_recv_timeout: Duration::from_millis(
                positive(
                    &lookup,
                    ENV_PROXY_RECV_TIMEOUT,
                    "a positive number of milliseconds",
                )?
                .unwrap_or(DEFAULT_PROXY_RECV_TIMEOUT_MS),
            ),
            proxy_max_body_bytes: parse(&lookup, ENV_PROXY_MAX_BODY_BYTES, "a number of bytes")?
                .unwrap_or(DEFAULT_PROXY_MAX_BODY_BYTES),
            proxy_tls_ca: tls_ca(lookup(ENV_PROXY_TLS_CA_FILE))?,
            proxy_body_idle_timeout: Duration::from_millis(
                positive(
                    &lookup,
                    ENV_PROXY_BODY_IDLE_TIMEOUT_MS,
                    "a positive number of milliseconds",
                )?
                .unwrap_or(DEFAULT_PROXY_BODY_IDLE_TIMEOUT_MS),
            ),
            host: lookup(ENV_HOST)
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            proxy_kafka_response_topics: list(
                &lookup(ENV_PROXY_KAFKA_RESPONSE_TOPICS)
                    .unwrap_or_else(|| DEFAULT_PROXY_KAFKA_RESPONSE_TOPICS.into()),
            ),
            proxy_kafka_response_timeout: Duration::from_millis(
                positive(
                    &lookup,
                    ENV_PROXY_KAFKA_RESPONSE_TIMEOUT,
                    "a positive number of milliseconds",
                )?
                .unwrap_or(DEFAULT_PROXY_RESPONSE_TIMEOUT_MS),
            ),
            proxy_http_async_response_timeout: Duration::from_millis(
                positive(
                    &lookup,
                    ENV_PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT,
                    "a positive number of milliseconds",
                )?
                .unwrap_or(DEFAULT_PROXY_RESPONSE_TIMEOUT_MS),
            ),
        }
        .with_defaults(&lookup)
    }

    /// The settings whose defaults depend on others: `RIG_HTTP_EVENTS_TOPIC` (the first
    /// `KAFKA_SOURCE_TOPICS` topic) and `RIG_MAX_CONNECTIONS_PER_MINUTE_PER_CLIENT` (a tenth of
    /// `MAX_CONNECTIONS_PER_MINUTE`).
    fn with_defaults(mut self, lookup: &impl Fn(&str) -> Option<String>) -> Result<Self> {
        if self.http_events_topic.is_none() {
            self.http_events_topic = self.kafka_source_topics.first().cloned();
        }
        self.max_connections_per_minute_per_client = parse(
            lookup,
            ENV_MAX_CONNECTIONS_PER_MINUTE_PER_CLIENT,
            "a non-negative integer (0: no per-client share)",
        )?
        // A tenth, rounded up: a small budget still has a share (0 would mean "no share").
        .unwrap_or(self.max_connections_per_minute.div_ceil(10));
        Ok(self)
    }
}

/// `SUBSCRIPTION_CHECK` / `SUBMISSION_CHECK`; unset means `no_check` (RIG's default).
fn check_mode(lookup: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<CheckMode> {
    match lookup(var) {
        None => Ok(CheckMode::NoCheck),
        Some(value) => {
            CheckMode::parse(&value).map_err(|reason| Error::Invalid { var, value, reason })
        }
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `EXTRACTORS` is inline JSON when it starts with `{`, else a file path (RIG accepts both).
fn extractors(value: Option<String>) -> Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) if v.trim_start().starts_with('{') => Ok(Some(v)),
        Some(path) => std::fs::read_to_string(path.trim())
            .map(Some)
            .map_err(|_| Error::Invalid {
                var: ENV_EXTRACTORS,
                value: path,
                reason: "inline JSON or the path of a readable JSON file",
            }),
    }
}

/// `PROXY_CONFIG_FILE` is inline JSON when it starts with `[`, else a file path (RIG accepts both).
fn proxy_config(value: Option<String>) -> Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) if v.trim_start().starts_with('[') => Ok(Some(v)),
        Some(path) => std::fs::read_to_string(path.trim())
            .map(Some)
            .map_err(|_| Error::Invalid {
                var: ENV_PROXY_CONFIG_FILE,
                value: path,
                reason: "an inline JSON list or the path of a readable JSON file",
            }),
    }
}

/// The TLS ports: the inbound and internal listeners again, over TLS.
#[derive(Debug, Clone)]
pub struct Https {
    /// `HTTPS_CERTFILE`, `HTTPS_KEYFILE`, `HTTPS_KEYFILE_PASS`.
    pub files: crate::http::tls::TlsFiles,
    /// `INBOUND_HTTPS_PORT` on the bind address.
    pub inbound: SocketAddr,
    /// `API_HTTPS_PORT` on the bind address.
    pub internal: SocketAddr,
    /// `RIG_TLS_RELOAD_INTERVAL_MS`.
    pub reload_interval: Duration,
}

/// As RIG: TLS only when both files are set; one of them alone, or the password alone, stops the
/// process (a gateway told to serve TLS must not silently serve plain HTTP only); so does a file
/// that does not exist. Whether the files hold a usable certificate is checked when the listeners
/// start.
fn https(lookup: &impl Fn(&str) -> Option<String>, bind: IpAddr) -> Result<Option<Https>> {
    let set = |var| lookup(var).filter(|v: &String| !v.trim().is_empty());
    let (cert, key, password) = (
        set(ENV_HTTPS_CERTFILE),
        set(ENV_HTTPS_KEYFILE),
        lookup(ENV_HTTPS_KEYFILE_PASS).filter(|v| !v.is_empty()),
    );
    // Checked whether TLS is on or not: a typo must not wait for the day TLS is switched on.
    let inbound = parse(lookup, ENV_INBOUND_HTTPS_PORT, "a port number")?
        .unwrap_or(DEFAULT_INBOUND_HTTPS_PORT);
    let internal =
        parse(lookup, ENV_API_HTTPS_PORT, "a port number")?.unwrap_or(DEFAULT_API_HTTPS_PORT);
    let reload = positive(
        lookup,
        ENV_TLS_RELOAD_INTERVAL_MS,
        "a positive number of milliseconds",
    )?
    .unwrap_or(DEFAULT_TLS_RELOAD_INTERVAL_MS);
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) if password.is_none() => return Ok(None),
        (cert, key) => {
            let (var, value) = match (&cert, &key) {
                (Some(_), None) => (ENV_HTTPS_KEYFILE, String::new()),
                (None, Some(_)) => (ENV_HTTPS_CERTFILE, String::new()),
                _ => (ENV_HTTPS_CERTFILE, String::new()),
            };
            return Err(Error::Invalid {
                var,
                value,
                reason: "HTTPS_CERTFILE and HTTPS_KEYFILE must both be set for TLS (HTTPS_KEYFILE_PASS only with them)",
            });
        }
    };
    for (var, path) in [(ENV_HTTPS_CERTFILE, &cert), (ENV_HTTPS_KEYFILE, &key)] {
        if !std::path::Path::new(path.trim()).is_file() {
            return Err(Error::Invalid {
                var,
                value: path.clone(),
                reason: "the path of an existing PEM file",
            });
        }
    }
    Ok(Some(Https {
        files: crate::http::tls::TlsFiles {
            cert: cert.trim().into(),
            key: key.trim().into(),
            password,
        },
        inbound: SocketAddr::new(bind, inbound),
        internal: SocketAddr::new(bind, internal),
        reload_interval: Duration::from_millis(reload),
    }))
}

/// `REQUEST_LOG`: where each proxied API call is logged.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    /// `console`: a `CALL: …` line on standard output.
    pub console: bool,
    /// `kafka`: a `com.rig.proxy.api.call` event to [`RequestLog::topic`].
    pub kafka: bool,
    /// `KAFKA_LOG_TOPIC`.
    pub topic: String,
}

/// As RIG: a list of `console` and `kafka`; any other value stops the process, and so does `kafka`
/// without `KAFKA_BROKERS`.
fn request_log(lookup: &impl Fn(&str) -> Option<String>) -> Result<RequestLog> {
    let topic = lookup(ENV_KAFKA_LOG_TOPIC)
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().to_owned())
        .unwrap_or_else(|| DEFAULT_KAFKA_LOG_TOPIC.to_owned());
    // Kafka's rule for topic names: a bad one would fail every produce, silently.
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.len() > 249 || !topic.chars().all(legal) || topic == "." || topic == ".." {
        return Err(Error::Invalid {
            var: ENV_KAFKA_LOG_TOPIC,
            value: topic,
            reason: "a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)",
        });
    }
    let mut log = RequestLog {
        topic,
        ..RequestLog::default()
    };
    let Some(value) = lookup(ENV_REQUEST_LOG) else {
        return Ok(log);
    };
    for item in list(&value) {
        match item.as_str() {
            "console" => log.console = true,
            "kafka" => log.kafka = true,
            _ => {
                return Err(Error::Invalid {
                    var: ENV_REQUEST_LOG,
                    value,
                    reason: "a comma-separated list of console and kafka",
                });
            }
        }
    }
    if log.kafka && lookup(ENV_KAFKA_BROKERS).is_none_or(|b| b.trim().is_empty()) {
        return Err(Error::Invalid {
            var: ENV_REQUEST_LOG,
            value,
            reason: "kafka needs KAFKA_BROKERS",
        });
    }
    Ok(log)
}

/// `PROXY_TLS_CA_FILE`: every PEM certificate of the file, each usable as a trust anchor; a file
/// that cannot be read or holds none stops the process (a gateway trusting less than configured
/// would fail every request to those targets).
fn tls_ca(value: Option<String>) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let Some(path) = value.filter(|p| !p.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let invalid = |path: String| Error::Invalid {
        var: ENV_PROXY_TLS_CA_FILE,
        value: path,
        reason: "the path of a readable PEM file with at least one valid CA certificate",
    };
    let Ok(certs) = CertificateDer::pem_file_iter(path.trim())
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
    else {
        return Err(invalid(path));
    };
    let mut roots = rustls::RootCertStore::empty();
    if certs.is_empty() || certs.iter().any(|c| roots.add(c.clone()).is_err()) {
        return Err(invalid(path));
    }
    Ok(certs)
}

/// A name for this process when `POD_NAME` is not set: host-independent and unique enough to tell
/// processes apart in connection tokens.
fn random_owner() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("rig-{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// [`parse`] of a setting that must be positive: 0 is refused with `reason` (never a silent
/// default).
fn positive<T: std::str::FromStr + PartialEq + From<u8>>(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    reason: &'static str,
) -> Result<Option<T>> {
    match parse::<T>(lookup, var, reason)? {
        Some(value) if value == T::from(0u8) => Err(Error::Invalid {
            var,
            value: "0".to_owned(),
            reason,
        }),
        other => Ok(other),
    }
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    reason: &'static str,
) -> Result<Option<T>> {
    match lookup(var) {
        None => Ok(None),
        Some(value) if value.trim().is_empty() => Ok(None),
        Some(value) => {
            value
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Error::Invalid { var, value, reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn zero_is_refused_where_a_positive_value_is_documented() {
        for var in [
            "RIG_HEAD_TIMEOUT_MS",
            "RIG_BODY_IDLE_TIMEOUT_MS",
            "RIG_MAX_INBOUND_CONNECTIONS",
            "RIG_CONNECTION_QUEUE",
            "RIG_PUBLISH_TIMEOUT_MS",
            "PROXY_RECV_TIMEOUT",
        ] {
            let error = config(&[(var, "0")]).expect_err(var).to_string();
            assert!(error.contains(var) && error.contains("positive"), "{error}");
            assert!(config(&[(var, "7")]).is_ok(), "{var}=7");
        }
        let c = config(&[("MAX_CONNECTIONS_PER_MINUTE", "5")]).expect("valid");
        assert_eq!(
            c.max_connections_per_minute_per_client, 1,
            "a tenth, rounded up"
        );
        let c = config(&[
            ("RIG_HTTP_EVENTS_TOPIC", "posted"),
            ("KAFKA_SOURCE_TOPICS", "a,b"),
        ])
        .expect("valid");
        assert_eq!(c.http_events_topic.as_deref(), Some("posted"));
        let c = config(&[("KAFKA_SOURCE_TOPICS", "a,b")]).expect("valid");
        assert_eq!(
            c.http_events_topic.as_deref(),
            Some("a"),
            "the first source topic"
        );
        assert!(config(&[("RIG_HTTP_EVENTS_TOPIC", "a b")]).is_err());
        assert!(config(&[("RIG_CLIENT_IP_HEADER", "bad header")]).is_err());
    }

    #[test]
    fn defaults_are_rigs() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.inbound.port(), 4000);
        assert_eq!(c.internal.port(), 4010);
        assert_eq!(c.cors, "*");
        assert_eq!(c.max_connections_per_session, None, "no per-session limit");
        assert!(!c.close_at_token_expiry, "connections outlive their token");
        // RIG's defaults of its other variables.
        assert_eq!(c.kafka_source_topics, ["rig"]);
        assert_eq!(c.host, "localhost");
        assert_eq!(c.max_connections_per_minute, 5000);
        assert_eq!(c.max_connections_per_minute_per_client, 500, "a tenth");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(c.proxy_recv_timeout, Duration::from_secs(5));
        assert_eq!(c.proxy_kafka_response_timeout, Duration::from_secs(5));
        assert_eq!(c.proxy_http_async_response_timeout, Duration::from_secs(5));
        assert_eq!(c.proxy_kafka_response_topics, ["rig-proxy-response"]);
        assert!(c.https.is_none(), "no TLS without the files");
        assert!(!c.request_log.console && !c.request_log.kafka);
        assert_eq!(c.request_log.topic, "rig-request-log");
    }

    #[test]
    fn tls_ports_default_to_rigs_and_need_both_files() {
        let dir = std::env::temp_dir().join(format!("rig-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert, "c").expect("write");
        std::fs::write(&key, "k").expect("write");
        let (cert, key) = (
            cert.to_string_lossy().into_owned(),
            key.to_string_lossy().into_owned(),
        );
        let c = config(&[("HTTPS_CERTFILE", &cert), ("HTTPS_KEYFILE", &key)]).expect("TLS");
        let https = c.https.expect("TLS on");
        assert_eq!(https.inbound.port(), 4001);
        assert_eq!(https.internal.port(), 4011);
        assert_eq!(https.reload_interval, Duration::from_secs(10));
        assert!(https.files.password.is_none());
        let c = config(&[
            ("HTTPS_CERTFILE", &cert),
            ("HTTPS_KEYFILE", &key),
            ("HTTPS_KEYFILE_PASS", "p"),
            ("INBOUND_HTTPS_PORT", "8443"),
            ("API_HTTPS_PORT", "8444"),
        ])
        .expect("TLS");
        let https = c.https.expect("TLS on");
        assert_eq!((https.inbound.port(), https.internal.port()), (8443, 8444));
        assert_eq!(https.files.password.as_deref(), Some("p"));
        assert!(
            !format!("{:?}", https.files).contains("\"p\""),
            "the password is not logged"
        );
        for bad in [
            vec![("HTTPS_CERTFILE", cert.as_str())],
            vec![("HTTPS_KEYFILE", key.as_str())],
            vec![("HTTPS_KEYFILE_PASS", "p")],
            vec![
                ("HTTPS_CERTFILE", "/nonexistent"),
                ("HTTPS_KEYFILE", key.as_str()),
            ],
            vec![
                ("HTTPS_CERTFILE", cert.as_str()),
                ("HTTPS_KEYFILE", key.as_str()),
                ("RIG_TLS_RELOAD_INTERVAL_MS", "0"),
            ],
        ] {
            assert!(config(&bad).is_err(), "{bad:?}");
        }
        assert!(
            config(&[("INBOUND_HTTPS_PORT", "abc")]).is_err(),
            "checked with TLS off"
        );
        assert!(config(&[("RIG_TLS_RELOAD_INTERVAL_MS", "0")]).is_err());
        for topic in ["bad topic!", "a/b", ".."] {
            let c = config(&[("REQUEST_LOG", "console"), ("KAFKA_LOG_TOPIC", topic)]);
            assert!(c.is_err(), "{topic}");
        }
        for (value, ok) in [
            ("console", true),
            ("console, kafka", false),
            ("syslog", false),
        ] {
            assert_eq!(config(&[("REQUEST_LOG", value)]).is_ok(), ok, "{value}");
        }
        let c = config(&[
            ("REQUEST_LOG", "kafka,console"),
            ("KAFKA_BROKERS", "b:9092"),
        ])
        .expect("with a broker");
        assert!(c.request_log.console && c.request_log.kafka);
    }

    #[test]
    fn proxy_tls_ca_file_must_hold_certificates_and_body_idle_defaults_to_30s() {
        let c = config(&[]).expect("defaults");
        assert!(c.proxy_tls_ca.is_empty());
        assert_eq!(c.proxy_body_idle_timeout, Duration::from_secs(30));
        let c = config(&[("PROXY_BODY_IDLE_TIMEOUT_MS", "250")]).expect("valid");
        assert_eq!(c.proxy_body_idle_timeout, Duration::from_millis(250));
        let dir = std::env::temp_dir().join(format!("rig-config-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").expect("write");
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        for path in [
            empty.to_string_lossy().into_owned(),
            garbage.to_string_lossy().into_owned(),
            dir.join("missing.pem").to_string_lossy().into_owned(),
        ] {
            let err = config(&[("PROXY_TLS_CA_FILE", &path)]).expect_err("refused");
            assert!(err.to_string().contains("PROXY_TLS_CA_FILE"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn close_at_token_expiry_is_a_boolean() {
        let c = config(&[("RIG_CLOSE_AT_TOKEN_EXPIRY", "true")]).expect("valid");
        assert!(c.close_at_token_expiry);
        let c = config(&[("RIG_CLOSE_AT_TOKEN_EXPIRY", "false")]).expect("valid");
        assert!(!c.close_at_token_expiry);
        let err = config(&[("RIG_CLOSE_AT_TOKEN_EXPIRY", "yes")]).expect_err("not a bool");
        assert!(
            err.to_string().contains("RIG_CLOSE_AT_TOKEN_EXPIRY"),
            "{err}"
        );
    }

    #[test]
    fn the_per_session_limit_is_read_and_zero_means_none() {
        let c = config(&[("MAX_CONNECTIONS_PER_SESSION", "3")]).expect("valid");
        assert_eq!(c.max_connections_per_session, Some(3));
        let c = config(&[("MAX_CONNECTIONS_PER_SESSION", "0")]).expect("valid");
        assert_eq!(c.max_connections_per_session, None);
        let err = config(&[("MAX_CONNECTIONS_PER_SESSION", "-1")]).expect_err("negative");
        assert!(
            err.to_string().contains("MAX_CONNECTIONS_PER_SESSION"),
            "{err}"
        );
    }

    #[test]
    fn longpolling_defaults_are_rigs_and_zero_sizes_are_refused() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.longpolling_hold, std::time::Duration::from_secs(5));
        assert_eq!(
            c.longpolling_session_timeout,
            std::time::Duration::from_secs(3600)
        );
        assert_eq!(c.longpolling_buffer, 200);
        let c = config(&[("RIG_LONGPOLLING_HOLD_MS", "0")]).expect("no hold is fine");
        assert!(c.longpolling_hold.is_zero());
        for var in [
            "RIG_LONGPOLLING_BUFFER",
            "RIG_LONGPOLLING_SESSION_TIMEOUT_SECS",
        ] {
            let err = config(&[(var, "0")]).expect_err("zero");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn a_bad_port_names_the_variable() {
        let err = config(&[("INBOUND_PORT", "http")]).expect_err("invalid");
        assert!(err.to_string().contains("INBOUND_PORT"), "{err}");
    }

    #[test]
    fn bind_address_and_ports_are_read() {
        let c = config(&[
            ("RIG_BIND_ADDRESS", "127.0.0.1"),
            ("INBOUND_PORT", "5000"),
            ("API_HTTP_PORT", "5010"),
        ])
        .expect("valid");
        assert_eq!(c.inbound, "127.0.0.1:5000".parse().expect("addr"));
        assert_eq!(c.internal, "127.0.0.1:5010".parse().expect("addr"));
    }

    #[test]
    fn checks_and_peers_are_read_and_bad_values_name_the_variable() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.subscription_check, CheckMode::NoCheck);
        assert_eq!(c.submission_check, CheckMode::NoCheck);
        assert!(c.peers.is_empty());
        let c = config(&[
            ("SUBSCRIPTION_CHECK", "JWT_VALIDATION"),
            ("SUBMISSION_CHECK", "http://check:8080/events"),
            ("RIG_PEERS", "rig-0=http://10.0.0.1:4010"),
            ("RIG_CHECK_TIMEOUT_MS", "250"),
        ])
        .expect("valid");
        assert_eq!(c.subscription_check, CheckMode::JwtValidation);
        assert!(matches!(c.submission_check, CheckMode::External(_)));
        assert_eq!(
            c.peers.base("rig-0").as_deref(),
            Some("http://10.0.0.1:4010")
        );
        assert_eq!(c.check_timeout, Duration::from_millis(250));
        for (var, value) in [
            ("SUBSCRIPTION_CHECK", "sometimes"),
            ("RIG_PEERS", "rig-0"),
            ("RIG_PEER_TIMEOUT_MS", "soon"),
        ] {
            let err = config(&[(var, value)]).expect_err("invalid");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn jwt_and_token_settings_come_through_config_and_stay_secret() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let c = Config::from_lookup(env(&[
            ("JWT_SECRET_KEY", "a-jwt-secret-that-is-long"),
            ("JWT_ALG", "HS384"),
            ("RIG_TOKEN_KEY", "0123456789abcdef-token"),
        ]))
        .expect("valid");
        assert_eq!(c.jwt.algorithms, [jsonwebtoken::Algorithm::HS384]);
        assert!(c.token_key.is_some());
        let debug = format!("{c:?}");
        assert!(!debug.contains("a-jwt-secret"), "{debug}");
        assert!(!debug.contains("0123456789abcdef-token"), "{debug}");
        let err = Config::from_lookup(env(&[("RIG_TOKEN_KEY", "short")])).expect_err("too short");
        assert!(err.to_string().contains("RIG_TOKEN_KEY"), "{err}");
        assert!(
            Config::from_lookup(env(&[]))
                .expect("defaults")
                .token_key
                .is_none()
        );
    }
}
