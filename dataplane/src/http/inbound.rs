//! The inbound listener (`INBOUND_PORT`): what browsers and apps talk to.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::{Body, json, server::Handler, text};
use crate::state::State;

/// Routes inbound requests.
#[derive(Debug)]
pub struct Inbound {
    #[allow(dead_code)]
    state: Arc<State>,
}

impl Inbound {
    /// A handler over the shared state.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

impl Handler for Inbound {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/_rig/health") => text(StatusCode::OK, "OK"),
            _ => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"message": "Not Found"}),
            ),
        }
    }
}
