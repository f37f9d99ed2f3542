//! The RIG for Kubernetes data plane: holds frontend connections (SSE, WebSocket, long-polling),
//! forwards events to the connections whose subscriptions match, and proxies API requests.
//!
//! [`run`] starts both listeners and returns when the process is told to stop.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod events;
pub mod http;
pub mod kafka;
pub mod manifests;
pub mod metrics;
pub mod peers;
pub mod proxy;
pub mod replay;
pub mod routes;
pub mod sessions;
pub mod subscriptions;
pub mod support;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use api::state::State;
pub use config::Config;

/// Bind both listeners, start the event sources, serve until `shutdown` turns true, then drain.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    events::set_own_events_version(config.own_events_version);
    let verifier = config.jwt.verifier().context("JWT configuration")?;
    let tokens =
        auth::TokenCodec::from_key(config.token_key.as_ref()).context("connection token key")?;
    // Cluster mode (`RIG_OPERATOR_URL`): checked before anything starts.
    let operator = cluster::snapshots::endpoint(&config).context("cluster mode")?;
    // A configuration that does not compile stops the process with the reason: a gateway must
    // not serve with half its routes.
    // The manifests' fingerprint before they are read: the watch compares later looks with it.
    let manifests_seen = config.manifests.as_deref().map(manifests::fingerprint);
    let routes = routes::compile(&config).context("configuration")?;
    let inbound = TcpListener::bind(config.inbound)
        .await
        .with_context(|| format!("binding the inbound port {}", config.inbound))?;
    let internal = TcpListener::bind(config.internal)
        .await
        .with_context(|| format!("binding the internal API port {}", config.internal))?;
    tracing::info!(
        inbound = %inbound.local_addr().unwrap_or(config.inbound),
        internal = %internal.local_addr().unwrap_or(config.internal),
        owner = %config.owner,
        "listening"
    );
    // The TLS ports (`HTTPS_CERTFILE`, `HTTPS_KEYFILE`): a certificate that cannot be used stops
    // the process, as RIG does.
    let tls = match &config.https {
        Some(https) => {
            let certs = http::tls::Certificates::load(https.files.clone())
                .map_err(|e| anyhow::anyhow!("HTTPS_CERTFILE/HTTPS_KEYFILE: {e}"))?;
            let acceptor = certs
                .acceptor()
                .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?;
            let inbound = TcpListener::bind(https.inbound)
                .await
                .with_context(|| format!("binding the inbound HTTPS port {}", https.inbound))?;
            let internal = TcpListener::bind(https.internal)
                .await
                .with_context(|| format!("binding the internal HTTPS port {}", https.internal))?;
            tracing::info!(
                inbound = %inbound.local_addr().unwrap_or(https.inbound),
                internal = %internal.local_addr().unwrap_or(https.internal),
                "listening (TLS)"
            );
            Some((certs, acceptor, inbound, internal, https.reload_interval))
        }
        None => None,
    };
    let (topics_tx, topics_rx) = watch::channel(routes.topics.clone());
    let state = Arc::new(State::with_topics(
        config,
        Arc::new(routes.extractors.clone()),
        verifier,
        tokens,
        topics_rx.clone(),
    ));
    // The configuration compiled above, put into effect (cluster mode: the snapshot replaces it).
    let targets = Arc::new(state.targets(topics_tx));
    routes::apply(&targets, routes);
    if let Some(text) = &state.config.proxy_config {
        let n = state
            .proxy
            .load_rig_config(text, &|k| state.config.use_env.get(k))
            .map_err(|errors| {
                anyhow::anyhow!(
                    "PROXY_CONFIG_FILE is invalid: {}",
                    serde_json::Value::Object(errors)
                )
            })?;
        tracing::info!(apis = n, "proxy definitions loaded from PROXY_CONFIG_FILE");
    }
    // Cluster mode: the last-known-good snapshot is applied here, before serving; the stream
    // follows in a task. Reports for the report Lease: `state.config_status.reports()`.
    let snapshot_client = match operator {
        Some(endpoint) => Some(
            cluster::snapshots::start(
                state.config.clone(),
                state.config_status.clone(),
                targets,
                endpoint,
                shutdown.clone(),
            )
            .await,
        ),
        None => {
            if let Some(path) = state.config.manifests.clone() {
                tokio::spawn(routes::watch_manifests(
                    state.config.clone(),
                    targets,
                    state.metrics.clone(),
                    path,
                    manifests_seen.unwrap_or_default(),
                    shutdown.clone(),
                ));
            }
            None
        }
    };

    // Cluster mode: revocation that does not wait for the operator (the direct `Blacklist` watch;
    // the API's writes use `state.kube`) and this pod's report Lease (deleted on shutdown).
    let cluster_tasks = if state.config.cluster_mode() {
        let kube = cluster::kube::Kube::connect(&state.config)
            .await
            .context("cluster mode")?;
        let _ = state.kube.set(kube.clone());
        let watch = cluster::blacklists::watch(
            state.revocations.clone(),
            state.metrics.clone(),
            kube.client(),
            shutdown.clone(),
        );
        let report = cluster::report::run(
            kube,
            state.metrics.clone(),
            state.config_status.reports(),
            shutdown.clone(),
        );
        vec![tokio::spawn(watch), tokio::spawn(report)]
    } else {
        Vec::new()
    };

    // One sweeper expires every idle long-polling session: no timer per session.
    let sweeper = tokio::spawn(state.longpolling.clone().run_sweeper(shutdown.clone()));
    // Likewise one sweeper removes expired session revocations.
    let blacklist_sweeper = tokio::spawn(state.blacklist.clone().run_sweeper(shutdown.clone()));
    // `JWT_JWKS`: one task keeps the key set fresh (interval, unknown `kid`s).
    if let Some(refresher) = state.verifier().refresher(shutdown.clone()) {
        tokio::spawn(refresher);
    }
    // And one closes connections whose JWT expired (`RIG_CLOSE_AT_TOKEN_EXPIRY`).
    let expiry_sweeper = state.config.close_at_token_expiry.then(|| {
        tokio::spawn(crate::connections::expiry::run_sweeper(
            state.hub.clone(),
            state.metrics.clone(),
            shutdown.clone(),
        ))
    });
    let heartbeat = {
        let state = state.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            // One timer for all connections (`RIG_HEARTBEAT_INTERVAL_MS`, RIG's 15 s by default),
            // staggered: each tick serves one part of the hub, so every connection gets one
            // heartbeat per interval without a burst of writes to all of them at once.
            let parts = connections::hub::Hub::HEARTBEAT_PARTS;
            let mut tick = tokio::time::interval(state.config.heartbeat_interval / parts as u32);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut part = 0usize;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        state.hub.heartbeat_part(part);
                        part = (part + 1) % parts;
                    }
                    _ = support::stopped(&mut shutdown) => break,
                }
            }
            // Long-lived streams never finish by themselves: end them so the listeners can drain
            // and clients reconnect to another process.
            state.hub.close_all();
        })
    };
    // The Kafka readers, supervised: a reader that cannot start or dies is restarted with
    // backoff and counted; while the event consumer cannot reach the broker the process is not
    // ready (`/readyz`), never "ready with no events".
    let consumer = state.config.kafka_brokers.clone().map(|brokers| {
        let health = support::supervise::TaskHealth::new("kafka_consumer");
        state.config_status.require(health.clone());
        let sink: Arc<dyn kafka::consumer::Sink> = state.fanout.clone();
        let (metrics, owner) = (state.metrics.clone(), state.config.owner.clone());
        let history = state.config.replay_window;
        let (topics, stop) = (topics_rx.clone(), shutdown.clone());
        tokio::spawn(support::supervise::supervise(
            health.clone(),
            shutdown.clone(),
            move || {
                kafka::consumer::run(
                    sink.clone(),
                    metrics.clone(),
                    owner.clone(),
                    brokers.clone(),
                    history,
                    topics.clone(),
                    stop.clone(),
                    health.clone(),
                )
            },
        ))
    });
    let responses = match state.config.kafka_brokers.clone() {
        Some(brokers) => {
            let producer = proxy::kafka::producer(&brokers).context("Kafka producer")?;
            let _ = state
                .proxy
                .producer
                .set(proxy::kafka::Producer::new(producer));
            let publisher = kafka::publish::Publisher::new(
                &brokers,
                state.config.http_events_topic.clone(),
                state.config.publish_timeout,
                state.metrics.clone(),
            )
            .context("Kafka producer of HTTP-published events")?;
            let _ = state.publisher.set(publisher);
            let topics = state.config.proxy_kafka_response_topics.clone();
            let health = support::supervise::TaskHealth::new("kafka_response_consumer");
            let (proxy, stop) = (state.proxy.clone(), shutdown.clone());
            Some(tokio::spawn(support::supervise::supervise(
                health.clone(),
                shutdown.clone(),
                move || {
                    proxy::kafka::run_responses(
                        proxy.clone(),
                        brokers.clone(),
                        topics.clone(),
                        stop.clone(),
                        health.clone(),
                    )
                },
            )))
        }
        None => None,
    };
    // The inbound port stays below the open-files limit, so the internal port (probes, metrics)
    // and the process's own sockets always find a file descriptor.
    let cap_max = state.config.max_inbound_connections.or_else(|| {
        http::server::open_files_limit().map(|n| n.saturating_sub(config::FD_RESERVE).max(16))
    });
    if let Some(max) = cap_max {
        tracing::info!(max, "inbound connection cap");
    }
    let inbound_cap =
        cap_max.map(|max| http::server::Cap::new(max, state.metrics.inbound_shed.clone()));
    let inbound_handler = Arc::new(api::inbound::Inbound::new(state.clone()));
    let internal_handler = Arc::new(api::internal::Internal::new(state.clone()));
    // Served like the plain ports, under the same inbound cap.
    let secure = tls.map(|(certs, acceptor, inbound, internal, reload)| {
        let watch = tokio::spawn(http::tls::watch(
            certs,
            reload,
            state.metrics.clone(),
            shutdown.clone(),
        ));
        let inbound = http::server::serve(
            inbound,
            inbound_handler.clone(),
            shutdown.clone(),
            state.config.head_timeout,
            inbound_cap.clone(),
            Some(acceptor.clone()),
        );
        let internal = http::server::serve(
            internal,
            internal_handler.clone(),
            shutdown.clone(),
            state.config.head_timeout,
            None,
            Some(acceptor),
        );
        async move {
            tokio::join!(inbound, internal);
            let _ = watch.await;
        }
    });
    let inbound = http::server::serve(
        inbound,
        inbound_handler,
        shutdown.clone(),
        state.config.head_timeout,
        inbound_cap,
        None,
    );
    let internal = http::server::serve(
        internal,
        internal_handler,
        shutdown,
        state.config.head_timeout,
        None,
        None,
    );
    let secure = async move {
        if let Some(secure) = secure {
            secure.await;
        }
    };
    tokio::join!(inbound, internal, secure);
    let _ = heartbeat.await;
    let _ = sweeper.await;
    let _ = blacklist_sweeper.await;
    for task in cluster_tasks {
        let _ = task.await;
    }
    if let Some(snapshot_client) = snapshot_client {
        let _ = snapshot_client.await;
    }
    if let Some(expiry_sweeper) = expiry_sweeper {
        let _ = expiry_sweeper.await;
    }
    for task in [responses, consumer].into_iter().flatten() {
        let _ = task.await;
    }
    Ok(())
}
