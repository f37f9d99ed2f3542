//! Opening a connection (SSE, WebSocket, long-polling): the checks RIG runs, in RIG's order, then
//! registration with the hub and the two greeting events.
//!
//! Order of checks (RIG §1.1): the `subscriptions` parameter must be JSON; a non-empty `jwt` must
//! verify (a token of a revoked session is refused here, 400); the subscriptions must be valid;
//! the subscription checks run (`SUBSCRIPTION_CHECK` when subscriptions were given, and per event
//! type the `EventRoute`'s `subscriptionCheck` for given and JWT-derived subscriptions,
//! [`crate::auth::access`]); then the connection rate limit.
//!
//! A connection opened with a valid `jwt` joins the token's session (`JWT_SESSION_FIELD`), so
//! revoking the session closes it. Beyond RIG, `MAX_CONNECTIONS_PER_SESSION` caps a session's open
//! connections in this process: beyond it, 429 `Reached maximum number of connections for this
//! session` (checked after the rate limit, atomically with joining). With
//! `RIG_CLOSE_AT_TOKEN_EXPIRY`, the connection is also closed when that `jwt` expires
//! ([`crate::connections::expiry`]).

use std::sync::Arc;

use http::{HeaderValue, StatusCode};

use super::context::Connections;
use super::hub::Registration;
use super::limit::Refusal;
use crate::auth::check::ExternalRequest;
use crate::metrics::Transport;
use crate::subscriptions::{self, Subscription};

/// The answer when `MAX_CONNECTIONS_PER_SESSION` is reached.
pub const SESSION_LIMIT_MESSAGE: &str = "Reached maximum number of connections for this session";

/// Why a connection was refused: the status and RIG's message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// HTTP status for SSE and long-polling (WebSocket closes with 1000 instead).
    pub status: StatusCode,
    /// The message for the client.
    pub message: String,
}

impl Refused {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

/// The query parameters of a connect request.
#[derive(Debug, Default, Clone)]
pub struct ConnectParams {
    /// `jwt`: a raw JWT (no `Bearer ` prefix).
    pub jwt: Option<String>,
    /// `subscriptions`: a JSON list of subscriptions.
    pub subscriptions: Option<String>,
    /// The resume token of the last event received (SSE `Last-Event-ID` header, or the
    /// `last_event_id` query parameter).
    pub last_event_id: Option<String>,
    /// Who connects, for the per-client share of `MAX_CONNECTIONS_PER_MINUTE`.
    pub client: Option<super::limit::Client>,
    /// The connect request's W3C `traceparent`, when valid: RIG puts the trace context on the
    /// greetings (`rig.connection.create`, `rig.subscriptions_set`).
    pub traceparent: Option<String>,
}

impl ConnectParams {
    /// Keep `value` as the trace context when it is a valid W3C `traceparent`.
    pub fn trace(&mut self, value: Option<&[u8]>) {
        self.traceparent = value
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|v| crate::proxy::http::valid_traceparent(v))
            .map(str::to_owned);
    }

    /// Read the parameters from a query string.
    pub fn from_query(query: Option<&str>) -> Self {
        let mut params = Self::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "jwt" => params.jwt = Some(value.into_owned()),
                "subscriptions" => params.subscriptions = Some(value.into_owned()),
                "last_event_id" => params.last_event_id = Some(value.into_owned()),
                _ => {}
            }
        }
        params
    }
}

/// An accepted connection: registered, with its greeting events queued.
#[derive(Debug)]
pub struct Opened {
    /// The registration (queue and unregister guard).
    pub registration: Registration,
    /// The connection token given to the client.
    pub token: String,
    /// The subscriptions in effect.
    pub subscriptions: Vec<Subscription>,
}

/// Run the connect checks and register the connection; a resuming client (`last_event_id`) is
/// served from the replay window only. Prefer [`open_resumed`] where history matters.
pub async fn open(
    conns: &Arc<Connections>,
    transport: Transport,
    params: &ConnectParams,
) -> Result<Opened, Refused> {
    let (subs, session, exp) = check(conns, params).await?;
    admit(conns, transport, params, &subs, (session, exp)).map(|(registration, token)| Opened {
        registration,
        token,
        subscriptions: subs,
    })
}

/// Like [`open`], but a client resuming from a position older than the replay window first gets
/// the missed events from Kafka (after a restart, the window starts empty).
pub async fn open_resumed(
    conns: &Arc<Connections>,
    transport: Transport,
    params: &ConnectParams,
) -> Result<Opened, Refused> {
    let (subs, session, exp) = check(conns, params).await?;
    conns
        .fanout
        .await_streams(params.last_event_id.as_deref())
        .await;
    admit(conns, transport, params, &subs, (session, exp)).map(|(registration, token)| Opened {
        registration,
        token,
        subscriptions: subs,
    })
}

/// Checks 1-4 (module docs): the subscriptions the connection would get, and the session and
/// `exp` of its `jwt`.
async fn check(
    conns: &Arc<Connections>,
    params: &ConnectParams,
) -> Result<(Vec<Subscription>, Option<Arc<str>>, Option<u64>), Refused> {
    let given = match params.subscriptions.as_deref() {
        Some(raw) => Some(serde_json::from_str::<serde_json::Value>(raw).map_err(|e| {
            Refused::bad_request(format!("Failed to decode subscription list: {e}"))
        })?),
        None => None,
    };
    let claims =
        match params.jwt.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => Some(conns.verify_jwt(token).map_err(|e| {
                Refused::bad_request(format!("could not parse subscriptions: {e}"))
            })?),
            None => None,
        };
    let derived = match &claims {
        Some(claims) => conns
            .fanout
            .hub()
            .extractors()
            .jwt_subscriptions(claims.as_value()),
        None => Vec::new(),
    };
    let parsed = match &given {
        Some(value) => Some(
            subscriptions::parse_value(value)
                .map_err(|e| Refused::bad_request(format!("could not parse subscriptions: {e}")))?,
        ),
        None => None,
    };
    // The checks, per event type (`auth::access`): an `EventRoute`'s check for its types (given
    // or derived from the JWT), SUBSCRIPTION_CHECK for the rest, only when subscriptions were
    // passed (RIG). A check service gets the subscriptions it decides on, with the `jwt` as a
    // bearer token.
    let jwt = params.jwt.as_deref().filter(|t| !t.is_empty());
    for planned in conns
        .access
        .subscription_plan(parsed.as_deref(), &derived, false)
    {
        let body = match (&given, planned.whole_request) {
            (Some(value), true) => serde_json::json!({ "subscriptions": value }),
            _ => {
                serde_json::json!({ "subscriptions": subscriptions::to_json(&planned.subscriptions) })
            }
        };
        planned
            .check
            .authorize(
                || claims.is_some(),
                || ExternalRequest {
                    body: body.to_string().into(),
                    content_type: HeaderValue::from_static("application/json; charset=utf-8"),
                    authorization: jwt
                        .and_then(|t| HeaderValue::try_from(format!("Bearer {t}")).ok())
                        .into_iter()
                        .collect(),
                },
            )
            .await
            .map_err(|_| Refused::bad_request("Subscription denied (not authorized)."))?;
    }
    let mut subs = derived;
    for sub in parsed.into_iter().flatten() {
        if !subs.contains(&sub) {
            subs.push(sub);
        }
    }
    let session = claims.as_ref().and_then(|c| conns.session_of(c));
    let exp = claims.as_ref().and_then(|c| c.exp());
    Ok((subs, session, exp))
}

/// Check 5 (the rate limit), then registration, then joining the session (with its limit) and
/// noting when the token expires.
fn admit(
    conns: &Arc<Connections>,
    transport: Transport,
    params: &ConnectParams,
    subs: &[Subscription],
    (session, exp): (Option<Arc<str>>, Option<u64>),
) -> Result<(Registration, String), Refused> {
    let admitted = match params.client {
        Some(client) => conns.connection_limiter.try_acquire_for(client),
        None => conns
            .connection_limiter
            .try_acquire()
            .then_some(())
            .ok_or(Refusal::Process),
    };
    match admitted {
        Ok(()) => {}
        Err(Refusal::Process) => {
            return Err(Refused {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "Reached maximum number of connections".to_owned(),
            });
        }
        Err(Refusal::Client) => {
            conns
                .metrics
                .connections_refused_per_client
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(Refused {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "Reached maximum number of connections for this client".to_owned(),
            });
        }
    }
    let (registration, token) = conns.fanout.register(
        transport,
        subs,
        params.last_event_id.as_deref(),
        params.traceparent.as_deref(),
    );
    if let Some(session) = session {
        let limit = conns.settings.max_connections_per_session;
        if let Err(full) = conns
            .fanout
            .join_sessions(registration.id, &[session], limit)
        {
            tracing::info!(
                session = %full.session,
                limit = full.limit,
                "connection refused: per-session limit reached"
            );
            // Dropping the registration unregisters the connection.
            return Err(Refused {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: SESSION_LIMIT_MESSAGE.to_owned(),
            });
        }
    }
    conns.fanout.expire_with_token(registration.id, exp);
    Ok((registration, token))
}
