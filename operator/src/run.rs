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
use crate::metrics::Metrics;
use crate::{lease, programmed, status, stream};

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
        report_namespace = config.report_namespace.as_deref().unwrap_or("<all>"),
        "rig-operator starting"
    );

    let (shutdown_tx, shutdown) = watch::channel(false);
    let (snapshot_tx, snapshot_rx) = watch::channel(None);
    let (rounds_tx, rounds_rx) = watch::channel(Arc::default());
    let (reports_tx, reports_rx) = watch::channel(None);
    let (leading_tx, leading_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());

    let (stores, controller) = controller::start(
        &client,
        config.watch_namespace.as_deref(),
        config.route_debounce,
        Outputs {
            snapshot: snapshot_tx,
            rounds: rounds_tx,
            metrics: metrics.clone(),
        },
    );
    let mut controller = tokio::spawn(controller);
    let mut reports = tokio::spawn(programmed::watch_reports(
        client.clone(),
        config.report_namespace.clone(),
        snapshot_rx.clone(),
        reports_tx,
        metrics.clone(),
    ));
    let mut status = tokio::spawn(status::run(
        client.clone(),
        config.identity.clone(),
        stores,
        rounds_rx,
        reports_rx,
        leading_rx,
        metrics.clone(),
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
            metrics,
        },
    ));

    let died = tokio::select! {
        signal = terminated() => {
            signal?;
            None
        }
        r = &mut controller => Some(("controller", r)),
        r = &mut status => Some(("status writer", r)),
        r = &mut reports => Some(("data-plane report watch", r)),
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
    reports.abort();
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
