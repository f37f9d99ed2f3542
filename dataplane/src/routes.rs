//! The configuration in effect: the one compiler's output ([`rig_crds::compile`]) for the
//! `EventRoute`/`ProxyRoute`/`Blacklist` manifests (standalone mode) or the operator's snapshots
//! (cluster mode, `cluster::snapshots`), merged with RIG's environment variables (`EXTRACTORS`,
//! `KAFKA_SOURCE_TOPICS`), and kept current when they change. Both modes compile with
//! [`compile_objects`] and install with [`apply`]; each change is compiled once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rig_crds::compile::{self, Objects};
use tokio::sync::watch;

use crate::auth::access::AccessPolicy;
use crate::config::Config;
use crate::connections::hub::Hub;
use crate::manifests::{self, Manifests};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::sessions::Revocations;
use crate::subscriptions::{self, Extractors};
use crate::support::error_chain;

/// Why a configuration could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RIG's `EXTRACTORS` is invalid.
    #[error("EXTRACTORS is invalid")]
    Extractors(#[source] subscriptions::extractors::Error),
    /// The manifests could not be read or are invalid.
    #[error("the manifests are invalid")]
    Manifests(#[source] manifests::Error),
    /// The compiler rejected objects (the same verdicts the operator gives).
    #[error("{}", .0.join("; "))]
    Rejected(Vec<String>),
    /// The `EventRoute` extractors conflict with `EXTRACTORS`.
    #[error("the EventRoute extractors conflict with EXTRACTORS")]
    Routes(#[source] subscriptions::extractors::Error),
}

/// The configuration to install.
#[derive(Debug)]
pub struct Routes {
    /// The compiled objects.
    pub compiled: Arc<compile::Config>,
    /// Extractors of `EXTRACTORS` and of every `EventRoute`.
    pub extractors: Extractors,
    /// `KAFKA_SOURCE_TOPICS` plus the topics of every `EventRoute`, sorted, no duplicates.
    pub topics: Vec<String>,
}

/// The subsystems a configuration is installed into ([`apply`]), and the sender of the Kafka
/// topics the event consumer reads.
#[derive(Debug)]
pub struct Targets {
    /// The proxy's route table.
    pub proxy: Arc<Proxy>,
    /// The per-event-type access rules.
    pub access: Arc<AccessPolicy>,
    /// The hub's extractors.
    pub hub: Arc<Hub>,
    /// The `Blacklist` objects' revocations.
    pub revocations: Arc<Revocations>,
    /// The topics the event consumer reads.
    pub topics: watch::Sender<Vec<String>>,
}

/// Compile the routing from the configuration and (standalone mode) the manifests.
pub fn compile(config: &Config) -> Result<Routes, Error> {
    let manifests = match &config.manifests {
        Some(path) => manifests::load(path).map_err(Error::Manifests)?,
        None => Manifests::default(),
    };
    compile_objects(config, &manifests.objects())
}

/// Compile the objects (the standalone manifests, or the objects of an operator snapshot) with
/// the one compiler, then merge RIG's environment. Any rejected object rejects the whole set:
/// a data plane never runs part of what it was given.
pub fn compile_objects(config: &Config, objects: &Objects) -> Result<Routes, Error> {
    let compiled = compile::compile(objects, k8s_openapi::jiff::Timestamp::now());
    let rejected: Vec<String> = compiled.rejected().map(ToString::to_string).collect();
    if !rejected.is_empty() {
        return Err(Error::Rejected(rejected));
    }
    let base = match &config.extractors_json {
        Some(json) => Extractors::from_rig_json(json).map_err(Error::Extractors)?,
        None => Extractors::new(),
    };
    let extractors = base
        .merge(Extractors::from_compiled(&compiled.config.event_types))
        .map_err(Error::Routes)?;
    let mut topics = config.kafka_source_topics.clone();
    topics.extend(compiled.config.topics.iter().cloned());
    // HTTP-published events without a route-named topic come back through this one.
    topics.extend(config.http_events_topic.iter().cloned());
    topics.sort();
    topics.dedup();
    Ok(Routes {
        compiled: compiled.config,
        extractors,
        topics,
    })
}

/// Re-read the manifests at `path` whenever they change; a valid set replaces the extractors and
/// topics at once, an invalid one is logged and counted, and the previous configuration stays.
///
/// `seen` is the files' fingerprint taken before the configuration in effect was read, so a change
/// made while the process starts (before this task first runs) is not missed.
pub async fn watch_manifests(
    config: Arc<Config>,
    targets: Arc<Targets>,
    metrics: Arc<Metrics>,
    path: PathBuf,
    seen: Vec<manifests::Fingerprint>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen = seen;
    let mut tick = tokio::time::interval(manifests::POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::support::stopped(&mut shutdown) => return,
        }
        let now = manifests::fingerprint(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match compile(&config).map(|routes| apply(&targets, routes)) {
            Ok(()) => {
                metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %path.display(), "manifests reloaded");
            }
            Err(error) => {
                metrics
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

/// Put compiled routes into effect: the proxy table, the access rules, the extractors, the
/// revocations of `Blacklist` objects and the Kafka topics (`topics`, read by the consumer).
/// Shared by start-up, the manifest watch and the cluster snapshot client. Nothing here can fail:
/// everything that can was judged by the compiler.
///
/// Each part is swapped whole, one after the other (not under one lock): for a moment a request
/// may see new proxy routes with the previous extractors, never half a table. Access rules are
/// swapped before extractors, so a type that becomes stricter is never subscribable under the
/// new extractors with the old rule.
pub fn apply(targets: &Targets, routes: Routes) {
    targets.proxy.set_routes(&routes.compiled.proxy_routes);
    targets.access.set_event_types(&routes.compiled.event_types);
    targets.hub.set_extractors(Arc::new(routes.extractors));
    let revocations: Vec<(String, std::time::SystemTime)> = routes
        .compiled
        .revocations
        .iter()
        .map(|r| (r.session_id.clone(), r.until))
        .collect();
    targets.revocations.apply_manifest_blacklists(&revocations);
    targets.topics.send_if_modified(|current| {
        let changed = *current != routes.topics;
        *current = routes.topics;
        changed
    });
}
