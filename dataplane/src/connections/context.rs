//! What the connection endpoints (SSE, WebSocket, long-polling, subscription updates) need, and
//! nothing else: the fan-out, JWT verification with revocation, the access policy, long-polling
//! sessions, the connection rate limit, the peers that own other connections, and their settings.
//! The wiring builds one and hands it to the routers.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::fanout::Fanout;
use super::limit::RateLimiter;
use super::longpolling::sessions::Sessions;
use crate::auth::access::AccessPolicy;
use crate::auth::{Claims, Jwt, JwtError};
use crate::metrics::Metrics;
use crate::peers::Peers;

/// The endpoints' settings (from `Config`, read by the wiring).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `RIG_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `RIG_LONGPOLLING_HOLD_MS`.
    pub longpolling_hold: Duration,
    /// `MAX_CONNECTIONS_PER_SESSION` (`None`: off).
    pub max_connections_per_session: Option<usize>,
    /// `RIG_HEAD_TIMEOUT_MS`: the SSE request head read directly.
    pub head_timeout: Duration,
    /// `RIG_BODY_IDLE_TIMEOUT_MS`: subscription update bodies.
    pub body_idle_timeout: Duration,
    /// `RIG_CLIENT_IP_HEADER`: where a client's address is read behind a proxy.
    pub client_ip_header: Option<http::HeaderName>,
}

impl Connections {
    /// Who a connect request from `peer` with `headers` comes from (`RIG_CLIENT_IP_HEADER`).
    pub fn client_of(
        &self,
        peer: std::net::SocketAddr,
        headers: &http::HeaderMap,
    ) -> super::limit::Client {
        super::limit::Client::from_request(peer, self.settings.client_ip_header.as_ref(), headers)
    }
}

/// The connection endpoints' handle (module docs).
#[derive(Debug)]
pub struct Connections {
    /// Open connections, replay and connection tokens.
    pub fanout: Arc<Fanout>,
    /// JWT verification, refusing revoked sessions.
    pub jwt: Arc<Jwt>,
    /// Who may subscribe to and publish each event type.
    pub access: Arc<AccessPolicy>,
    /// Long-polling sessions: their buffers between polls.
    pub longpolling: Arc<Sessions>,
    /// `MAX_CONNECTIONS_PER_MINUTE`.
    pub connection_limiter: RateLimiter,
    /// The other processes, to which requests about their connections are forwarded.
    pub peers: Arc<Peers>,
    /// `access-control-allow-origin`, validated once.
    pub cors: HeaderValue,
    /// Settings.
    pub settings: Settings,
    /// The process metrics.
    pub metrics: Arc<Metrics>,
}

impl Connections {
    /// Verify an end-user JWT, refusing revoked sessions.
    pub fn verify_jwt(&self, token: &str) -> Result<Claims, JwtError> {
        self.jwt.verify(token)
    }

    /// The session of verified `claims`.
    pub fn session_of(&self, claims: &Claims) -> Option<Arc<str>> {
        self.jwt.session_of(claims)
    }
}
