//! Opening a connection (SSE, WebSocket, long-polling): the checks RIG runs, in RIG's order, then
//! registration with the hub and the two greeting events.
//!
//! Order of checks (RIG §1.1): the `subscriptions` parameter must be JSON; a non-empty `jwt` must
//! verify; the subscriptions must be valid; the subscription check runs when subscriptions were
//! given; then the connection rate limit.

use std::sync::Arc;

use http::StatusCode;

use super::hub::Registration;
use crate::kafka::history::Fetched;
use crate::metrics::Transport;
use crate::state::State;
use crate::subscriptions::{self, Subscription};

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
}

impl ConnectParams {
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
/// served from the replay window only. Prefer [`open_resumed`] where the caller can await.
pub fn open(
    state: &Arc<State>,
    transport: Transport,
    params: &ConnectParams,
) -> Result<Opened, Refused> {
    open_with(state, transport, params, None)
}

/// Like [`open`], but a client resuming from a position older than the replay window first gets
/// the missed events from Kafka (after a restart, the window starts empty).
pub async fn open_resumed(
    state: &Arc<State>,
    transport: Transport,
    params: &ConnectParams,
) -> Result<Opened, Refused> {
    let history = state.kafka_history(params.last_event_id.as_deref()).await;
    open_with(state, transport, params, history.as_ref())
}

fn open_with(
    state: &Arc<State>,
    transport: Transport,
    params: &ConnectParams,
    history: Option<&Fetched>,
) -> Result<Opened, Refused> {
    let given = params.subscriptions.as_deref();
    if let Some(raw) = given {
        serde_json::from_str::<serde_json::Value>(raw).map_err(|e| {
            Refused::bad_request(format!("Failed to decode subscription list: {e}"))
        })?;
    }
    let claims =
        match params.jwt.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => Some(state.verify_jwt(token).map_err(|e| {
                Refused::bad_request(format!("could not parse subscriptions: {e}"))
            })?),
            None => None,
        };
    let mut subs = match &claims {
        Some(claims) => state.hub.extractors().jwt_subscriptions(claims.as_value()),
        None => Vec::new(),
    };
    if let Some(raw) = given {
        let parsed = subscriptions::parse_list(raw)
            .map_err(|e| Refused::bad_request(format!("could not parse subscriptions: {e}")))?;
        for sub in parsed {
            if !subs.contains(&sub) {
                subs.push(sub);
            }
        }
    }
    if !state.connection_limiter.try_acquire() {
        return Err(Refused {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "Reached maximum number of connections".to_owned(),
        });
    }
    let (registration, token) =
        state.register(transport, &subs, params.last_event_id.as_deref(), history);
    Ok(Opened {
        registration,
        token,
        subscriptions: subs,
    })
}
