//! The RIG for Kubernetes data plane: holds frontend connections (SSE, WebSocket, long-polling),
//! forwards events to the connections whose subscriptions match, and proxies API requests.
//!
//! [`run`] starts both listeners and returns when the process is told to stop.

pub mod auth;
pub mod config;
pub mod events;
pub mod http;
pub mod metrics;
pub mod state;
pub mod subscriptions;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
pub use state::State;

/// Bind both listeners, serve until `shutdown` turns true, then drain.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let inbound = TcpListener::bind(config.inbound)
        .await
        .with_context(|| format!("binding the inbound port {}", config.inbound))?;
    let internal = TcpListener::bind(config.internal)
        .await
        .with_context(|| format!("binding the internal API port {}", config.internal))?;
    tracing::info!(inbound = %config.inbound, internal = %config.internal, "listening");
    let state = Arc::new(State::new(config));
    let inbound = http::server::serve(
        inbound,
        Arc::new(http::inbound::Inbound::new(state.clone())),
        shutdown.clone(),
    );
    let internal = http::server::serve(
        internal,
        Arc::new(http::internal::Internal::new(state.clone())),
        shutdown,
    );
    tokio::join!(inbound, internal);
    Ok(())
}
