//! The event-routing configuration in effect: extractors and Kafka topics, compiled from RIG's
//! environment variables plus the `EventRoute` manifests (standalone mode) or the operator's
//! snapshots (cluster mode, `cluster::snapshots`), and kept current when they change. Both paths
//! compile with [`compile_with`] and install with [`apply`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use crate::config::Config;
use crate::manifests::{self, Manifests};
use crate::state::State;
use crate::subscriptions::{self, Extractors};

/// Why a configuration could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RIG's `EXTRACTORS` is invalid.
    #[error("EXTRACTORS is invalid")]
    Extractors(#[source] subscriptions::extractors::Error),
    /// The manifests could not be read or are invalid.
    #[error("the manifests are invalid")]
    Manifests(#[source] manifests::Error),
    /// The `EventRoute` extractors are invalid or conflict with `EXTRACTORS`.
    #[error("the EventRoute extractors are invalid")]
    Routes(#[source] subscriptions::extractors::Error),
    /// A `ProxyRoute` is invalid.
    #[error("a ProxyRoute is invalid")]
    ProxyRoutes(#[source] crate::proxy::routes::RouteError),
}

/// Compiled event routing.
#[derive(Debug)]
pub struct Routes {
    /// Extractors of `EXTRACTORS` and of every `EventRoute`.
    pub extractors: Extractors,
    /// `KAFKA_SOURCE_TOPICS` plus the topics of every `EventRoute`, sorted, no duplicates.
    pub topics: Vec<String>,
    /// The `Blacklist` objects: revoked session and end of the revocation.
    pub blacklists: Vec<(String, std::time::SystemTime)>,
    /// The `ProxyRoute` objects (validated).
    pub proxy_routes: Vec<rig_crds::ProxyRoute>,
}

/// Compile the routing from the configuration and (standalone mode) the manifests.
pub fn compile(config: &Config) -> Result<Routes, Error> {
    let manifests = match &config.manifests {
        Some(path) => manifests::load(path).map_err(Error::Manifests)?,
        None => Manifests::default(),
    };
    compile_with(config, &manifests)
}

/// Compile the routing from the configuration and a set of objects (the standalone manifests, or
/// the objects of an operator snapshot in cluster mode).
pub fn compile_with(config: &Config, manifests: &Manifests) -> Result<Routes, Error> {
    let base = match &config.extractors_json {
        Some(json) => Extractors::from_rig_json(json).map_err(Error::Extractors)?,
        None => Extractors::new(),
    };
    let from_routes = Extractors::from_event_routes(manifests.event_routes.iter().map(|r| &r.spec))
        .map_err(Error::Routes)?;
    let extractors = base.merge(from_routes).map_err(Error::Routes)?;
    crate::proxy::validate_manifests(&manifests.proxy_routes).map_err(Error::ProxyRoutes)?;
    let mut topics = config.kafka_source_topics.clone();
    topics.extend(manifests.kafka_topics());
    topics.sort();
    topics.dedup();
    let blacklists = manifests
        .blacklists
        .iter()
        .filter_map(|b| {
            // `manifests::load` has validated every `expiresAt`.
            let until = crate::sessions::rfc3339::parse(&b.spec.expires_at).ok()?;
            Some((b.spec.session_id.clone(), until))
        })
        .collect();
    Ok(Routes {
        extractors,
        topics,
        blacklists,
        proxy_routes: manifests.proxy_routes.clone(),
    })
}

/// Re-read the manifests at `path` whenever they change; a valid set replaces the extractors and
/// topics at once, an invalid one is logged and counted, and the previous configuration stays.
pub async fn watch_manifests(
    state: Arc<State>,
    path: PathBuf,
    topics: watch::Sender<Vec<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen = manifests::fingerprint(&path);
    let mut tick = tokio::time::interval(manifests::POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::http::server::stopped(&mut shutdown) => return,
        }
        let now = manifests::fingerprint(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match compile(&state.config).and_then(|routes| apply(&state, routes, &topics)) {
            Ok(()) => {
                state.metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %path.display(), "manifests reloaded");
            }
            Err(error) => {
                state
                    .metrics
                    .config_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    path = %path.display(),
                    error = %error_chain(&error),
                    "manifests rejected; the previous configuration stays in effect"
                );
            }
        }
    }
}

/// Put compiled routes into effect: the proxy table, the extractors, the revocations of
/// `Blacklist` objects and the Kafka topics (`topics`, read by the consumer). Shared by the
/// manifest watch and the cluster snapshot client.
///
/// The proxy table is installed first because it is the only step that can fail; on error nothing
/// has changed. Each part is swapped whole, one after the other (not under one lock): for a moment
/// a request may see new proxy routes with the previous extractors, never half a table.
pub fn apply(
    state: &State,
    routes: Routes,
    topics: &watch::Sender<Vec<String>>,
) -> Result<(), Error> {
    state
        .proxy
        .set_manifests(&routes.proxy_routes)
        .map_err(Error::ProxyRoutes)?;
    state.hub.set_extractors(Arc::new(routes.extractors));
    state.apply_manifest_blacklists(&routes.blacklists);
    topics.send_if_modified(|current| {
        let changed = *current != routes.topics;
        *current = routes.topics;
        changed
    });
    Ok(())
}

/// The error and its sources on one line, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
