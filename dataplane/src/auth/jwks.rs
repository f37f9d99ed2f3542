//! JWT verification keys from a JSON Web Key Set (`JWT_JWKS`, RFC 7517): a file or an
//! `http(s)://` URL, cached, refreshed on an interval and when a token names an unknown `kid`.
//!
//! Design:
//! - The parsed set is an immutable [`KeySet`] behind an `Arc`; a refresh builds a new one and
//!   swaps it in, so verification only clones an `Arc` under a short read lock and never waits for
//!   a fetch. A fetch or parse that fails keeps the last good set (logged, counted).
//! - One task ([`Jwks::run`]) does all loading: every `JWT_JWKS_REFRESH_SECS`, and when a token
//!   names a `kid` the set does not hold ([`Jwks::request_refresh`]). Refreshes are at least
//!   `JWT_JWKS_MIN_REFRESH_SECS` apart, so a flood of tokens with random `kid`s causes at most one
//!   fetch per that interval, and requests made while waiting collapse into one fetch.
//! - Verification is synchronous: the token that named the unknown `kid` is refused at once (the
//!   client retries); the periodic refresh normally picks up a new key before it is first used,
//!   since identity providers publish keys ahead of signing with them.
//! - Each key is usable only for the algorithms its key type allows (RSA: `RS*`/`PS*`; EC P-256:
//!   `ES256`, P-384: `ES384`; `oct`: `HS*`), narrowed to its own `alg` when it states one, and to
//!   those `JWT_ALG` allows. So an RSA public key can never serve as an HMAC secret, whatever the
//!   token's header says. Keys marked `use: enc`, or with `key_ops` lacking `verify`, are skipped;
//!   so are keys of other types (e.g. `OKP`) and RSA keys under 2048 bits (RFC 7518 §3.3).
//! - Key selection ([`KeySet::select`]): a token with a `kid` uses the key with that `kid` and no
//!   other (an unknown `kid` is refused and asks for a refresh); a token without `kid` uses the one
//!   key of the set that serves its `alg`, and is refused when there are none or several (trying
//!   each key would multiply the work a forged token costs).
//! - Token headers never bring keys: `jku`, `x5u`, `jwk` and `x5c` are ignored.
//! - A file source is loaded at start-up, and a broken file stops the process. A URL source is
//!   fetched by the task right after start; until the first fetch succeeds every token is refused
//!   (retried every `JWT_JWKS_MIN_REFRESH_SECS`), so an identity provider that is briefly down does
//!   not stop the gateway's other work. `https://` uses the system's CA certificates
//!   (`SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured).

use crate::support::error_chain;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use thiserror::Error;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{ConfigError, non_empty};

/// Where the key set comes from: a file path, or an `http://` / `https://` URL. Set instead of
/// `JWT_SECRET_KEY`.
pub const ENV_JWT_JWKS: &str = "JWT_JWKS";
/// Seconds between scheduled refreshes of the key set.
pub const ENV_JWT_JWKS_REFRESH_SECS: &str = "JWT_JWKS_REFRESH_SECS";
/// Least seconds between two refreshes, whatever asks for them (unknown `kid`s, failed fetches).
pub const ENV_JWT_JWKS_MIN_REFRESH_SECS: &str = "JWT_JWKS_MIN_REFRESH_SECS";

/// 5 minutes: identity providers publish a new key hours or days before signing with it, and
/// remove old ones as late, so this picks up rotations well in time at a negligible cost.
const DEFAULT_REFRESH_SECS: u64 = 300;
/// 10 s: a token with a just-rotated `kid` is accepted within seconds, while garbage `kid`s cost
/// the key server at most one request per 10 s per pod.
const DEFAULT_MIN_REFRESH_SECS: u64 = 10;
/// How long one fetch (connect, answer, body) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest key set document accepted. Real ones hold a handful of keys in a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Smallest RSA modulus accepted, in bytes (2048 bits, RFC 7518 §3.3).
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// Longest `kid` quoted in logs (it comes from untrusted tokens).
const MAX_LOGGED_KID: usize = 64;

/// The RSA algorithms, in `JWT_ALG` order.
const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
/// The HMAC algorithms.
const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Where a key set is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file (e.g. a mounted ConfigMap), read again on every refresh.
    File(PathBuf),
    /// An `http://` or `https://` URL, fetched with `GET`.
    Url(http::Uri),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(uri) => write!(f, "{uri}"),
        }
    }
}

/// `JWT_JWKS` settings. Plain data; [`Jwks::new`] loads a file source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    /// Where the set comes from (`JWT_JWKS`).
    pub source: Source,
    /// Time between scheduled refreshes (`JWT_JWKS_REFRESH_SECS`, default 300 s).
    pub refresh_interval: Duration,
    /// Least time between two refreshes (`JWT_JWKS_MIN_REFRESH_SECS`, default 10 s).
    pub min_refresh_interval: Duration,
}

impl JwksConfig {
    /// Read the settings through `lookup`; `Ok(None)` when `JWT_JWKS` is unset or empty.
    pub fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(value) = non_empty(lookup, ENV_JWT_JWKS) else {
            return Ok(None);
        };
        let value = value.trim();
        let lower = value.to_ascii_lowercase();
        let source = if lower.starts_with("http://") || lower.starts_with("https://") {
            let uri: http::Uri = value.parse().map_err(|_| ConfigError::Invalid {
                var: ENV_JWT_JWKS,
                reason: "not a valid URL".to_owned(),
            })?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(ConfigError::Invalid {
                    var: ENV_JWT_JWKS,
                    reason: "the URL has no host".to_owned(),
                });
            }
            Source::Url(uri)
        } else if lower.contains("://") {
            return Err(ConfigError::Invalid {
                var: ENV_JWT_JWKS,
                reason: "expected a file path or an http:// or https:// URL".to_owned(),
            });
        } else {
            Source::File(PathBuf::from(value))
        };
        let seconds = |var: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match non_empty(lookup, var) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
                    _ => Err(ConfigError::Invalid {
                        var,
                        reason: format!("{v:?} is not a positive number of seconds"),
                    }),
                },
            }
        };
        let refresh_interval = seconds(ENV_JWT_JWKS_REFRESH_SECS, DEFAULT_REFRESH_SECS)?;
        let min_refresh_interval =
            seconds(ENV_JWT_JWKS_MIN_REFRESH_SECS, DEFAULT_MIN_REFRESH_SECS)?;
        Ok(Some(Self {
            source,
            refresh_interval,
            min_refresh_interval: min_refresh_interval.min(refresh_interval),
        }))
    }
}

/// Why a key set could not be loaded. At start-up (a file source) it stops the process; later
/// the last good set stays in use.
#[derive(Debug, Error)]
pub enum JwksError {
    /// The file cannot be read.
    #[error("cannot read {path:?}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request failed (connection, TLS, protocol).
    #[error("fetching the key set failed")]
    Fetch(#[source] hyper_util::client::legacy::Error),
    /// The body could not be read.
    #[error("reading the key set failed")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The server answered, but not with 200.
    #[error("the key server answered {0}")]
    Status(http::StatusCode),
    /// No answer within the fetch timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The document is larger than 1 MiB.
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// The document is not a JSON object with a `keys` array.
    #[error("not a JWK set (a JSON object with a \"keys\" array)")]
    NotASet(#[source] Option<serde_json::Error>),
    /// The document holds no key usable under `JWT_ALG`.
    #[error("no usable key in the set ({})", skipped.join("; "))]
    NoUsableKey {
        /// Why each key was skipped.
        skipped: Vec<String>,
    },
    /// The HTTPS client could not be set up (no CA certificates found).
    #[error("cannot set up TLS for {ENV_JWT_JWKS}")]
    Tls(#[source] std::io::Error),
}

/// One key of a set, decoded.
struct Key {
    /// Its `kid`, if it has one.
    kid: Option<String>,
    /// The algorithms it may verify (never empty).
    algorithms: Vec<Algorithm>,
    /// The key.
    key: DecodingKey,
}

/// A decoded key set. Immutable; a refresh replaces it whole.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, &k.algorithms)))
            .finish()
    }
}

/// Why [`KeySet::select`] found no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The token names a `kid` the set does not hold.
    UnknownKid,
    /// The named key does not serve the token's `alg`.
    WrongAlgorithm,
    /// The token has no `kid`, and this many keys (not exactly one) serve its `alg`.
    Ambiguous(usize),
}

impl KeySet {
    /// Parse a JWK set document, keeping the keys usable for `allowed` algorithms. Unusable keys
    /// are skipped (their reasons are returned for the log); a set without any usable key is an
    /// error. A repeated `kid` keeps its first key.
    pub fn parse(document: &[u8], allowed: &[Algorithm]) -> Result<(Self, Vec<String>), JwksError> {
        let value: Value =
            serde_json::from_slice(document).map_err(|e| JwksError::NotASet(Some(e)))?;
        let Some(entries) = value.get("keys").and_then(Value::as_array) else {
            return Err(JwksError::NotASet(None));
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        let mut kids = HashSet::new();
        for (i, entry) in entries.iter().enumerate() {
            let label = match entry.get("kid").and_then(Value::as_str) {
                Some(kid) => format!("key {:?}", loggable(kid)),
                None => format!("key #{i}"),
            };
            match decode_key(entry, allowed) {
                Ok(key) => {
                    if let Some(kid) = &key.kid
                        && !kids.insert(kid.clone())
                    {
                        skipped.push(format!("{label}: repeated kid"));
                        continue;
                    }
                    keys.push(key);
                }
                Err(reason) => skipped.push(format!("{label}: {reason}")),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey { skipped });
        }
        Ok((Self { keys }, skipped))
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key (a URL source not fetched yet).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token with header `kid` and `alg`: the key with that `kid`, or, for a token
    /// without one, the only key serving `alg`.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&DecodingKey, Miss> {
        match kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(Miss::UnknownKid)?;
                if key.algorithms.contains(&alg) {
                    Ok(&key.key)
                } else {
                    Err(Miss::WrongAlgorithm)
                }
            }
            None => {
                let mut serving = self.keys.iter().filter(|k| k.algorithms.contains(&alg));
                match (serving.next(), serving.count()) {
                    (Some(key), 0) => Ok(&key.key),
                    (None, _) => Err(Miss::Ambiguous(0)),
                    (Some(_), more) => Err(Miss::Ambiguous(more + 1)),
                }
            }
        }
    }
}

/// `kid` shortened for a log line.
pub(crate) fn loggable(kid: &str) -> &str {
    match kid.char_indices().nth(MAX_LOGGED_KID) {
        Some((end, _)) => &kid[..end],
        None => kid,
    }
}

/// Decode one JWK, or say why it cannot verify tokens under `allowed`.
fn decode_key(entry: &Value, allowed: &[Algorithm]) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use: enc)".to_owned());
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("key_ops does not include verify".to_owned());
    }
    let b64 = |field: &str, value: &str| {
        URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|_| format!("{field} is not base64url"))
    };
    let (fits, key): (Vec<Algorithm>, DecodingKey) = match &jwk.algorithm {
        AlgorithmParameters::RSA(params) => {
            let n = b64("n", &params.n)?;
            let e = b64("e", &params.e)?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return Err(format!(
                    "RSA modulus of {} bits, under 2048",
                    significant * 8
                ));
            }
            if e.iter().all(|b| *b == 0) {
                return Err("RSA exponent is zero".to_owned());
            }
            (
                RSA_ALGORITHMS.to_vec(),
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        AlgorithmParameters::EllipticCurve(params) => {
            let (alg, len) = match params.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 32),
                EllipticCurve::P384 => (Algorithm::ES384, 48),
                ref other => return Err(format!("curve {other:?} is not supported")),
            };
            let x = b64("x", &params.x)?;
            let y = b64("y", &params.y)?;
            if x.len() != len || y.len() != len {
                return Err(format!(
                    "x and y must be {len} bytes for {:?}",
                    params.curve
                ));
            }
            let key = DecodingKey::from_ec_components(&params.x, &params.y)
                .map_err(|e| format!("unusable EC key: {e}"))?;
            (vec![alg], key)
        }
        AlgorithmParameters::OctetKey(params) => {
            if b64("k", &params.value)?.is_empty() {
                return Err("empty oct key".to_owned());
            }
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable oct key: {e}"))?;
            (HMAC_ALGORITHMS.to_vec(), key)
        }
        _ => return Err("key type is not supported (RSA, EC or oct)".to_owned()),
    };
    let fits = match jwk.common.key_algorithm {
        None => fits,
        Some(stated) => match Algorithm::try_from(stated) {
            Ok(alg) if fits.contains(&alg) => vec![alg],
            _ => return Err(format!("its alg {stated} does not fit its key type")),
        },
    };
    let algorithms: Vec<Algorithm> = fits.into_iter().filter(|a| allowed.contains(a)).collect();
    if algorithms.is_empty() {
        return Err("none of its algorithms is allowed by JWT_ALG".to_owned());
    }
    Ok(Key {
        kid: jwk.common.key_id,
        algorithms,
        key,
    })
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Counters of [`Jwks`] refreshes, for `/metrics`.
#[derive(Debug, Default)]
pub struct JwksMetrics {
    /// Loads that replaced the set.
    pub refreshes: AtomicU64,
    /// Loads that failed (the last good set stayed).
    pub refresh_failures: AtomicU64,
    /// Keys in the current set (a gauge).
    pub keys: AtomicU64,
}

/// A live key set: the current [`KeySet`] and what refreshes it. Shared by the verifier and the
/// refresh task ([`Jwks::run`]).
pub struct Jwks {
    config: JwksConfig,
    allowed: Vec<Algorithm>,
    current: RwLock<Arc<KeySet>>,
    /// Bumped whenever a key set is installed, so results derived from an older set (the
    /// proxy's verified-token cache) can tell they are stale.
    epoch: AtomicU64,
    /// A refresh was asked for and has not started yet.
    wanted: AtomicBool,
    wake: Notify,
    client: Option<HttpClient>,
    /// Refresh counters.
    pub metrics: JwksMetrics,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.config.source)
            .field("keys", &self.current().len())
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// A live set for `config`, keeping keys usable for `allowed`. A file source is loaded now
    /// (failing when it holds no usable key); a URL source starts empty until [`Jwks::run`]
    /// fetches it.
    pub fn new(config: JwksConfig, allowed: Vec<Algorithm>) -> Result<Self, ConfigError> {
        let client = match &config.source {
            Source::File(_) => None,
            Source::Url(uri) => Some(
                http_client(uri.scheme_str() == Some("https"))
                    .map_err(|source| ConfigError::Jwks { source })?,
            ),
        };
        let jwks = Self {
            config,
            allowed,
            current: RwLock::new(Arc::new(KeySet::default())),
            epoch: AtomicU64::new(0),
            wanted: AtomicBool::new(false),
            wake: Notify::new(),
            client,
            metrics: JwksMetrics::default(),
        };
        if let Source::File(path) = &jwks.config.source {
            let document = read_file(path).map_err(|source| ConfigError::Jwks { source })?;
            let (set, skipped) = KeySet::parse(&document, &jwks.allowed)
                .map_err(|source| ConfigError::Jwks { source })?;
            jwks.install(set, &skipped);
        }
        Ok(jwks)
    }

    /// The current key set.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many key sets have been installed: changes whenever the keys may have changed.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The settings.
    pub fn config(&self) -> &JwksConfig {
        &self.config
    }

    /// Ask the refresh task for a reload (a token named an unknown `kid`). Cheap and never
    /// blocks; many requests before the reload starts make one reload, and reloads stay
    /// `min_refresh_interval` apart.
    pub fn request_refresh(&self) {
        if !self.wanted.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Load the set once from its source; on success it replaces the current set. Failures are
    /// logged and counted, and the last good set stays.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let loaded = match &self.config.source {
            Source::File(path) => read_file(path),
            Source::Url(uri) => self.fetch(uri).await,
        }
        .and_then(|document| KeySet::parse(&document, &self.allowed));
        match loaded {
            Ok((set, skipped)) => {
                self.install(set, &skipped);
                Ok(())
            }
            Err(error) => {
                self.metrics
                    .refresh_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(source = %self.config.source, error = %error_chain(&error), keys = self.current().len(), "JWKS refresh failed; keeping the last good key set");
                Err(error)
            }
        }
    }

    /// Refresh on schedule and on request until `shutdown` turns true (module docs).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let min = self.config.min_refresh_interval;
        // A file source was loaded at start-up; a URL source is fetched right away.
        let mut last: Option<Instant> = (!self.current().is_empty()).then(Instant::now);
        loop {
            let due = match last {
                None => Instant::now(),
                // Until a first set is loaded, retry at the fastest allowed pace.
                Some(at) if self.current().is_empty() => at + min,
                Some(at) => at + self.config.refresh_interval,
            };
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = self.wake.notified() => {
                    if !self.wanted.load(Ordering::Acquire) {
                        // A stale wake-up: the request was served by a scheduled refresh.
                        continue;
                    }
                    if let Some(at) = last {
                        tokio::select! {
                            () = tokio::time::sleep_until(at + min) => {}
                            () = crate::support::stopped(&mut shutdown) => return,
                        }
                    }
                }
                () = crate::support::stopped(&mut shutdown) => return,
            }
            // Requests from now on need a fetch that starts after them.
            self.wanted.store(false, Ordering::Release);
            last = Some(Instant::now());
            let _ = self.refresh().await;
        }
    }

    fn install(&self, set: KeySet, skipped: &[String]) {
        let n = set.len();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.metrics.refreshes.fetch_add(1, Ordering::Relaxed);
        self.metrics.keys.store(n as u64, Ordering::Relaxed);
        tracing::info!(source = %self.config.source, keys = n, "JWKS loaded");
        for reason in skipped {
            tracing::warn!(source = %self.config.source, %reason, "JWKS key skipped");
        }
    }

    async fn fetch(&self, uri: &http::Uri) -> Result<Vec<u8>, JwksError> {
        let Some(client) = &self.client else {
            return Err(JwksError::NotASet(None));
        };
        let request = http::Request::get(uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|_| JwksError::NotASet(None))?;
        let exchange = async {
            let response = client.request(request).await.map_err(JwksError::Fetch)?;
            if response.status() != http::StatusCode::OK {
                return Err(JwksError::Status(response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        JwksError::TooLarge
                    } else {
                        JwksError::Body(e)
                    }
                })?;
            Ok(body.to_bytes().to_vec())
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| JwksError::Timeout(FETCH_TIMEOUT))?
    }
}

/// The HTTP(S) client for a URL source: system CA certificates for `https`, none needed for
/// `http`. HTTP/1 only; one idle connection is kept between refreshes at most.
fn http_client(https: bool) -> Result<HttpClient, JwksError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if https {
        builder
            .with_provider_and_native_roots(provider)
            .map_err(JwksError::Tls)?
    } else {
        // Plain http: TLS is never used, so no CA certificates need to exist.
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| JwksError::Tls(std::io::Error::other(e)))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        builder.with_tls_config(tls)
    };
    let connector = builder.https_or_http().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector))
}

/// Read a key set file (small: bounded by [`MAX_DOCUMENT_BYTES`]). Synchronous: it happens at
/// most once per `min_refresh_interval`.
fn read_file(path: &PathBuf) -> Result<Vec<u8>, JwksError> {
    use std::io::Read as _;
    let read = |source| JwksError::Read {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut document = Vec::new();
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut document)
        .map_err(read)?;
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(JwksError::TooLarge);
    }
    Ok(document)
}

#[cfg(test)]
mod tests;
