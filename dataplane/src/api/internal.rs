//! The internal API listener (`API_HTTP_PORT`): health (`/health`, RIG's; `/healthz` liveness;
//! `/readyz` readiness: a configuration is in effect), metrics, and the `/v3` API for backends.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::state::State;
use crate::connections::subscriptions_put;
use crate::http::{Body, json, server::Handler, text};

/// Routes internal API requests.
#[derive(Debug)]
pub struct Internal {
    state: Arc<State>,
}

impl Internal {
    /// A handler over the shared state.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

impl Handler for Internal {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path();
        if super::sessions::is_collection(path) || super::sessions::id_in_path(path).is_some() {
            return super::sessions::handle(&self.state, req)
                .await
                .unwrap_or_else(not_found);
        }
        if crate::proxy::is_api_path(path) {
            return crate::proxy::api::handle(&self.state.proxy, req).await;
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/health") => text(StatusCode::OK, "OK"),
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
            (&Method::GET, "/readyz") => match self.state.config_status.not_ready() {
                None => text(StatusCode::OK, "ready"),
                Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
            },
            (&Method::GET, "/metrics") => {
                let mut metrics = self
                    .state
                    .metrics
                    .render(self.state.hub.subscription_count());
                self.state.proxy.render_metrics(&mut metrics);
                self.state.verifier().render_metrics(&mut metrics);
                self.state.config_status.render_metrics(&mut metrics);
                let mut res = text(StatusCode::OK, metrics);
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
            (&Method::POST, "/v3/responses" | "/v2/responses") => {
                crate::proxy::responses(&self.state.proxy, req).await
            }
            // RIG serves `/v2/...` like `/v3/...`.
            (&Method::POST, "/v3/messages" | "/v2/messages") => {
                super::inbound::publish(&self.state, req).await
            }
            (&Method::PUT, path) if subscriptions_put::token_in_internal_path(path).is_some() => {
                let token = subscriptions_put::token_in_internal_path(path)
                    .unwrap_or_default()
                    .to_owned();
                subscriptions_put::put(
                    &self.state.connections,
                    req,
                    token,
                    subscriptions_put::Via::Peer,
                )
                .await
            }
            _ => not_found(),
        }
    }
}

/// RIG's answer for unknown internal routes.
fn not_found() -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"errors": {"detail": "Not found"}}),
    )
}
