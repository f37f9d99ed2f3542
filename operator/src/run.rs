//! `rig-operator run`: start the controller, the status writer, leader election and the snapshot
//! stream; stop on SIGTERM/SIGINT.
//!
//! If a critical task ends (it should not), the process exits with an error and Kubernetes
//! restarts it, instead of serving a frozen snapshot forever.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::sync::watch;

use crate::config::{Config, LEASE_NAME};
use crate::controller::{self, Outputs};
use crate::{lease, status, stream};

/// Run the operator until a termination signal.
pub async fn run(config: Config) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("creating the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let listener = stream::bind(config.stream_addr)
        .await
        .with_context(|| format!("binding the snapshot stream to {}", config.stream_addr))?;
    tracing::info!(
        addr = %config.stream_addr,
        identity = %config.identity,
        lease_namespace = %config.lease_namespace,
        watch_namespace = config.watch_namespace.as_deref().unwrap_or("<all>"),
        "rig-operator starting"
    );

    let (shutdown_tx, shutdown) = watch::channel(false);
    let (snapshot_tx, snapshot_rx) = watch::channel(None);
    let (verdicts_tx, verdicts_rx) = watch::channel(Arc::new(Vec::new()));
    let (leading_tx, leading_rx) = watch::channel(false);

    let (stores, controller) = controller::start(
        &client,
        config.watch_namespace.as_deref(),
        config.route_debounce,
        Outputs {
            snapshot: snapshot_tx,
            verdicts: verdicts_tx,
        },
    );
    let mut controller = tokio::spawn(controller);
    let mut status = tokio::spawn(status::run(
        client.clone(),
        config.identity.clone(),
        stores,
        verdicts_rx,
        leading_rx,
    ));
    let mut election = tokio::spawn(lease::run(
        client,
        lease::Settings {
            namespace: config.lease_namespace.clone(),
            name: LEASE_NAME.into(),
            identity: config.identity.clone(),
            duration: config.lease_duration,
            renew_every: config.renew_every,
            follower_poll: config.follower_poll,
        },
        leading_tx,
        shutdown.clone(),
    ));
    let mut server = tokio::spawn(stream::serve(
        listener,
        stream::Shared {
            snapshots: snapshot_rx,
            heartbeat_every: config.heartbeat_every,
            shutdown: shutdown.clone(),
        },
    ));

    let died = tokio::select! {
        signal = terminated() => {
            signal?;
            None
        }
        r = &mut controller => Some(("controller", r)),
        r = &mut status => Some(("status writer", r)),
        r = &mut election => Some(("leader election", r)),
        r = &mut server => Some(("snapshot stream", r)),
    };
    if let Some((task, result)) = died {
        bail!("the {task} task ended unexpectedly: {result:?}");
    }
    tracing::info!("stopping");
    shutdown_tx.send_replace(true);
    // Give up the Lease so another replica takes over status at once.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), election).await;
    controller.abort();
    status.abort();
    server.abort();
    Ok(())
}

async fn terminated() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("SIGINT handler")?,
    }
    Ok(())
}
