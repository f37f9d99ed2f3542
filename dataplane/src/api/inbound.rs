//! The inbound listener (`INBOUND_PORT`): what browsers and apps talk to.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::state::State;
use crate::auth::access::Publishing;
use crate::auth::check::{self, ExternalRequest};
use crate::connections::{longpolling, open, sse, sse_direct, subscriptions_put, ws};
use crate::events;
use crate::http::server::Handler;
use crate::http::{Body, text};
use crate::metrics::Transport;

/// Routes inbound requests.
#[derive(Debug)]
pub struct Inbound {
    state: Arc<State>,
}

impl Inbound {
    /// A handler over the shared state.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

impl Handler for Inbound {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let state = &self.state;
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/_rig/health") => text(StatusCode::OK, "OK"),
            (&Method::GET, "/_rig/v1/connection/sse") => connect_sse(state, &req, peer).await,
            (&Method::GET, "/_rig/v1/connection/ws") => ws::connect(&state.connections, req, peer),
            (&Method::GET, "/_rig/v1/connection/longpolling") => {
                longpolling::get(&state.connections, &req, peer).await
            }
            (&Method::OPTIONS, "/_rig/v1/connection/longpolling") => {
                longpolling::preflight(&state.connections)
            }
            (&Method::POST, "/_rig/v1/events") => submit(state, req).await,
            (&Method::OPTIONS, "/_rig/v1/events") => preflight(state, "POST", "content-type"),
            (&Method::PUT, path) if subscriptions_put::token_in_path(path).is_some() => {
                let token = subscriptions_put::token_in_path(path)
                    .unwrap_or_default()
                    .to_owned();
                subscriptions_put::put(
                    &state.connections,
                    req,
                    token,
                    subscriptions_put::Via::Inbound,
                )
                .await
            }
            (&Method::OPTIONS, path) if subscriptions_put::token_in_path(path).is_some() => {
                preflight(state, "PUT", "content-type,authorization")
            }
            // Everything else, unmatched `/_rig/...` paths included (RIG), goes to the proxy.
            _ => crate::proxy::handle(&state.proxy, req, peer).await,
        }
    }

    /// An SSE connect request as a connection's first request is served without hyper (see
    /// [`sse_direct`]); plain proxied requests too, while a connection sends only those (see
    /// [`crate::proxy::fast`]); everything else is served as HTTP.
    async fn take_over(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<(TcpStream, Bytes)> {
        let is_sse = tokio::select! {
            is_sse = sse_direct::sniff(&stream) => is_sse,
            // Nothing received before the listener stopped: nothing to serve.
            _ = crate::support::stopped(&mut shutdown) => return None,
            // Nothing received in time: the socket is closed (RIG_HEAD_TIMEOUT_MS).
            _ = tokio::time::sleep(self.state.config.head_timeout) => {
                tracing::debug!(%peer, "closing a connection that sent no request in time");
                return None;
            }
        };
        if !is_sse {
            // With REQUEST_LOG on, every proxied call takes the one path that logs it.
            if self.state.proxy.request_log.enabled() {
                return Some((stream, Bytes::new()));
            }
            return crate::proxy::fast::serve(&self.state.proxy, stream, peer, shutdown).await;
        }
        sse_direct::serve(&self.state.connections, stream).await;
        None
    }
}

async fn connect_sse(
    state: &Arc<State>,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let mut params = open::ConnectParams::from_query(req.uri().query());
    params.trace(req.headers().get("traceparent").map(|v| v.as_bytes()));
    params.client = Some(state.connections.client_of(peer, req.headers()));
    if let Some(id) = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
    {
        params.last_event_id = Some(id.to_owned());
    }
    match open::open_resumed(&state.connections, Transport::Sse, &params).await {
        Ok(opened) => sse::response(opened, &state.cors),
        Err(refused) => text(refused.status, refused.message),
    }
}

/// `POST /_rig/v1/events`: [`publish`] after `SUBMISSION_CHECK`.
async fn submit(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    publish_checked(state, req, true).await
}

/// `POST /v3/messages` (internal API): like `POST /_rig/v1/events`, without `SUBMISSION_CHECK`.
pub async fn publish(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    publish_checked(state, req, false).await
}

async fn publish_checked(
    state: &Arc<State>,
    req: Request<Incoming>,
    check: bool,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match crate::http::read_body(
        body,
        state.config.max_body_bytes,
        state.config.body_idle_timeout,
    )
    .await
    {
        Ok(body) => body,
        Err(res) => return res,
    };
    match events::from_http(&parts.headers, body) {
        Ok(event) => {
            // The event is parsed first: its type picks the rules (`auth::access`), and the
            // check service gets it as CloudEvent JSON (RIG's docs), with the client's
            // authorization. The internal `/v3/messages` skips the submission check, not
            // `source.http.enabled`.
            let publishing = if check {
                state.access.publishing(&event.event_type)
            } else {
                match state.access.http_publishing(&event.event_type) {
                    Ok(()) => Publishing::Check(state.access.no_check()),
                    Err(route) => Publishing::Disabled { route },
                }
            };
            let check = match publishing {
                Publishing::Disabled { route } => {
                    state.access.record_http_disabled(&event.event_type, &route);
                    return text(StatusCode::FORBIDDEN, "Submission denied.");
                }
                Publishing::Check(check) => check,
            };
            let tokens = check::check_tokens(&parts.headers);
            if check
                .authorize_unrevoked(
                    || crate::auth::access::presents_revoked(&state.jwt, &tokens),
                    || {
                        check::check_tokens(&parts.headers)
                            .into_iter()
                            .any(|t| state.verify_jwt(t).is_ok())
                    },
                    || ExternalRequest {
                        body: event.json.clone(),
                        content_type: HeaderValue::from_static("application/json; charset=utf-8"),
                        authorization: check::authorization_headers(&parts.headers),
                    },
                )
                .await
                .is_err()
            {
                return text(StatusCode::FORBIDDEN, "Submission denied.");
            }
            let answer = event.json.clone();
            match state.publisher.get() {
                // Kafka on: produced, and delivered by every process's consumer (this one's too).
                Some(publisher) => {
                    let topic = state.access.http_topic(&event.event_type);
                    if let Err(error) = publisher.publish(topic.as_deref(), &event).await {
                        return text(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
                    }
                }
                // Kafka off: this process is the only one; delivered here.
                None => {
                    state
                        .metrics
                        .consumed_events
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    state.publish(event);
                }
            }
            let mut res = Response::new(crate::http::full(answer));
            *res.status_mut() = StatusCode::ACCEPTED;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            res.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, state.cors.clone());
            res
        }
        Err(error) => {
            tracing::info!(%error, "refused an HTTP-published event");
            text(error.status(), error.to_string())
        }
    }
}

fn preflight(state: &State, methods: &'static str, headers: &'static str) -> Response<Body> {
    let mut res = Response::new(crate::http::full(""));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, state.cors.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(headers),
    );
    res
}
