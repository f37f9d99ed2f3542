//! `rig-dataplane`: wiring only. Configuration from the environment, logs to stderr, stop on
//! SIGTERM / Ctrl-C with a graceful drain.

use anyhow::Result;

/// mimalloc gives freed pages back to the system; glibc's allocator kept a burst's fragments: after
/// a broker outage's backlog, RSS stayed ~25-30 % above its level before (`e2e/bench/hostile.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: rig-dataplane [--help | --version]\n\n\
The RIG for Kubernetes data plane. It takes no arguments: it is configured by environment variables\n\
(INBOUND_PORT, API_HTTP_PORT, KAFKA_BROKERS, JWT_SECRET_KEY, RIG_MANIFESTS, RIG_OPERATOR_URL, ...;\n\
see the README's configuration table) and serves until SIGTERM or Ctrl-C.";

#[tokio::main]
async fn main() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--help" | "-h") => {
            println!("{USAGE}");
            return Ok(());
        }
        Some("--version" | "-V") => {
            println!("rig-dataplane {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Some(other) => {
            eprintln!("unexpected argument {other:?}\n\n{USAGE}");
            std::process::exit(2);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = rig_dataplane::Config::from_env()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    rig_dataplane::run(config, stop_rx).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
