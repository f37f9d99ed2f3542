//! Data-plane acknowledgements → each object's `Programmed` condition (e.g. `2/2 pods`).
//!
//! Data-plane pods report through the apiserver, not the stream: each keeps a
//! `coordination.k8s.io/v1` Lease labelled [`REPORT_SELECTOR`] whose [`REPORT_ANNOTATION`] holds
//! the JSON [`DataPlaneReport`] of the last snapshot version it applied or rejected. A pod is live
//! while `renewTime + leaseDurationSeconds` lies ahead of this replica's clock ([`live_reports`];
//! the wall clocks of the nodes are assumed NTP-synced, as for any Lease-based liveness). Liveness
//! is re-evaluated on a short tick ([`REPORT_TICK`]) and on every Lease event, not with a timer per
//! pod; a new list goes out only when the live set or a report changed, so the 10 s renewals of
//! the pods cost nothing downstream.
//!
//! A pod running an older version still counts for an object whose generation did not change
//! since. [`History`] numbers every published version (a sequence number) and remembers, for each
//! object of the current snapshot, the first version that carried its current generation
//! ([`History::entered`]): a pod programs the object when the version it runs is a published one
//! at or after that point. This answers "does version v contain this generation?" with memory for
//! the current objects plus a bounded map of versions (not a copy of every recent snapshot, which
//! with 10,000 `Blacklist`s would cost megabytes per version). It is exact for every version since
//! the generation entered, and conservative for an older version that held the same generation
//! before it left and came back (such a pod shows as pending until it takes the current version,
//! which the stream sends it at once). A version this replica never published (or evicted from the
//! bounded map, or published before a restart) counts as containing nothing: pending.
//!
//! [`programmed`] is the pure counting function: outcome + history + live reports → condition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use rig_crds::ConditionStatus;
use rig_crds::snapshot::{self, DataPlaneReport};
use rig_crds::{NamedSpec, Snapshot};
use tokio::sync::watch;

use crate::compile::{Kind, Outcome};
use crate::controller::Published;
use crate::metrics::Metrics;

pub use rig_crds::contract::{REPORT_ANNOTATION, REPORT_SELECTOR};
/// Validity of a report Lease that does not say (`leaseDurationSeconds` unset): the contract's.
pub const DEFAULT_REPORT_SECONDS: i64 = rig_crds::contract::REPORT_LEASE_SECONDS as i64;
/// How often liveness is re-evaluated: a pod that stopped renewing leaves the counts within its
/// lease duration plus this.
pub const REPORT_TICK: Duration = Duration::from_secs(2);
/// Published versions remembered. A version costs a few dozen bytes; many are needed because
/// every `Blacklist` change is a version of its own, and a burst of revocations must not make
/// pods that are one step behind look like they run something unknown.
pub const HISTORY_VERSIONS: usize = 4096;
/// Longest data-plane rejection message copied onto a condition.
const MESSAGE_LIMIT: usize = 512;

/// What one live data-plane pod said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Live, but no report yet (it has not received a snapshot).
    Waiting,
    /// It runs this version.
    Applied {
        /// The snapshot version.
        version: String,
    },
    /// It refused this version as a whole and keeps running an earlier one.
    Rejected {
        /// The snapshot version.
        version: String,
        /// The data plane's reason.
        message: String,
    },
    /// The annotation does not parse as a report (counted as pending, and in a metric).
    Unreadable,
}

/// One live data-plane pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodReport {
    /// The pod (the Lease's holder, else its name), for messages.
    pub pod: String,
    /// Its report.
    pub state: PodState,
}

/// The live data-plane pods, sorted by the namespace and name of their Leases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reports {
    /// One entry per live pod.
    pub pods: Vec<PodReport>,
}

/// The live pods among `leases` as of `now`.
pub fn live_reports(leases: &[Arc<Lease>], now: Timestamp) -> Reports {
    let mut live: Vec<(String, String, PodReport)> = leases
        .iter()
        .filter_map(|lease| {
            let spec = lease.spec.as_ref()?;
            let renewed = spec.renew_time.as_ref()?.0;
            let seconds = spec
                .lease_duration_seconds
                .map_or(DEFAULT_REPORT_SECONDS, i64::from);
            if renewed
                .checked_add(SignedDuration::from_secs(seconds))
                .ok()?
                <= now
            {
                return None;
            }
            let pod = spec
                .holder_identity
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| lease.name_any());
            let state = match lease.annotations().get(REPORT_ANNOTATION) {
                None => PodState::Waiting,
                Some(json) => match serde_json::from_str::<DataPlaneReport>(json) {
                    Ok(report) => match report.outcome {
                        snapshot::Outcome::Applied => PodState::Applied {
                            version: report.version,
                        },
                        snapshot::Outcome::Rejected { message } => PodState::Rejected {
                            version: report.version,
                            message,
                        },
                    },
                    Err(_) => PodState::Unreadable,
                },
            };
            let key = (lease.namespace().unwrap_or_default(), lease.name_any());
            Some((key.0, key.1, PodReport { pod, state }))
        })
        .collect();
    live.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Reports {
        pods: live.into_iter().map(|(_, _, report)| report).collect(),
    }
}

/// Published versions and their sequence numbers (a later publication of the same content moves
/// its version to the new number: same content, same objects).
#[derive(Clone, Debug, Default)]
pub struct Versions {
    by_version: HashMap<String, u64>,
    current: Option<(String, u64)>,
}

impl Versions {
    /// The sequence number of `version`, if published and still remembered.
    pub fn seq(&self, version: &str) -> Option<u64> {
        self.by_version.get(version).copied()
    }

    /// The version published last.
    pub fn current(&self) -> Option<&str> {
        self.current.as_ref().map(|(v, _)| v.as_str())
    }
}

/// One object of the current snapshot and when its generation entered.
#[derive(Clone, Debug)]
struct Entry {
    kind: Kind,
    namespace: String,
    name: String,
    generation: i64,
    entered: u64,
}

/// The published versions and, per current object, the first version carrying its generation.
#[derive(Debug, Default)]
pub struct History {
    seq: u64,
    versions: Arc<Versions>,
    /// Sorted by (kind, namespace, name).
    entries: Vec<Entry>,
}

impl History {
    /// Record a newly published snapshot.
    pub fn record(&mut self, snapshot: &Snapshot) {
        self.seq += 1;
        let seq = self.seq;
        let versions = Arc::make_mut(&mut self.versions);
        versions.by_version.insert(snapshot.version.clone(), seq);
        versions.current = Some((snapshot.version.clone(), seq));
        if versions.by_version.len() > HISTORY_VERSIONS
            && let Some(oldest) = versions
                .by_version
                .iter()
                .min_by_key(|(_, s)| **s)
                .map(|(v, _)| v.clone())
        {
            versions.by_version.remove(&oldest);
        }
        let mut entries = Vec::with_capacity(
            snapshot.event_routes.len() + snapshot.proxy_routes.len() + snapshot.blacklists.len(),
        );
        self.extend(&mut entries, Kind::EventRoute, &snapshot.event_routes, seq);
        self.extend(&mut entries, Kind::ProxyRoute, &snapshot.proxy_routes, seq);
        self.extend(&mut entries, Kind::Blacklist, &snapshot.blacklists, seq);
        // The snapshot's lists are sorted by (namespace, name) and the kinds come in `Kind`
        // order, so `entries` is sorted; sort anyway should that guarantee ever change.
        if !entries.is_sorted_by(|a, b| key(a) <= key(b)) {
            entries.sort_by(|a, b| key(a).cmp(&key(b)));
        }
        self.entries = entries;
    }

    fn extend<S>(&self, into: &mut Vec<Entry>, kind: Kind, objects: &[NamedSpec<S>], seq: u64) {
        for object in objects {
            let entered = match self.find(kind, &object.namespace, &object.name) {
                Some(old) if old.generation == object.generation => old.entered,
                _ => seq,
            };
            into.push(Entry {
                kind,
                namespace: object.namespace.clone(),
                name: object.name.clone(),
                generation: object.generation,
                entered,
            });
        }
    }

    fn find(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| key(e).cmp(&(kind, namespace, name)))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The sequence number of the first published version that carried this object at this
    /// generation, if the current snapshot carries it.
    pub fn entered(&self, kind: Kind, namespace: &str, name: &str, generation: i64) -> Option<u64> {
        self.find(kind, namespace, name)
            .filter(|e| e.generation == generation)
            .map(|e| e.entered)
    }

    /// The versions published so far (cheap to clone; a snapshot of the current state).
    pub fn versions(&self) -> Arc<Versions> {
        self.versions.clone()
    }
}

fn key(e: &Entry) -> (Kind, &str, &str) {
    (e.kind, e.namespace.as_str(), e.name.as_str())
}

/// An object's `Programmed` condition and its `programmed` status field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programmed {
    /// `True` when every live pod runs the object's current generation.
    pub status: ConditionStatus,
    /// `Programmed`, `Pending`, `Rejected`, `NoDataPlanes`, `NotAccepted` or `Expired`.
    pub reason: &'static str,
    /// For people, starting with the counts (`1/2 pods`).
    pub message: String,
    /// `programmed/live` (e.g. `2/2`) for objects in the snapshot; `None` for the others.
    pub counts: Option<String>,
}

/// The `Programmed` condition of an object: its compile `outcome`, `entered` (see
/// [`History::entered`]), the published `versions` and the live `reports`.
///
/// - not accepted / expired: `False` (`NotAccepted` / `Expired`), no counts;
/// - no live pod: `Unknown`, `NoDataPlanes`, `0/0 pods`;
/// - a live pod rejected a version that contains this generation: `False`, `Rejected`, with the
///   first such pod's message;
/// - every live pod runs a version that contains it: `True`, `Programmed`;
/// - else `False`, `Pending`.
pub fn programmed(
    outcome: &Outcome,
    entered: Option<u64>,
    versions: &Versions,
    reports: &Reports,
) -> Programmed {
    let not_in_snapshot = |reason, message: String| Programmed {
        status: ConditionStatus::False,
        reason,
        message,
        counts: None,
    };
    match outcome {
        Outcome::Rejected { .. } => {
            return not_in_snapshot(
                "NotAccepted",
                "not in the configuration snapshot: the object is not accepted".into(),
            );
        }
        Outcome::Expired { at } => {
            return not_in_snapshot(
                "Expired",
                format!("expired at {at}; removed from the configuration snapshot"),
            );
        }
        Outcome::Accepted => {}
    }
    let total = reports.pods.len();
    if total == 0 {
        return Programmed {
            status: ConditionStatus::Unknown,
            reason: "NoDataPlanes",
            message: "0/0 pods: no data-plane pod reports".into(),
            counts: Some("0/0".into()),
        };
    }
    // Does version `v` carry this generation?
    let carries = |version: &str| {
        entered.is_some_and(|entered| versions.seq(version).is_some_and(|seq| seq >= entered))
    };
    let mut done = 0;
    let mut rejected: Vec<(&str, &str, &str)> = Vec::new();
    for report in &reports.pods {
        match &report.state {
            PodState::Applied { version } if carries(version) => done += 1,
            PodState::Rejected { version, message } if carries(version) => {
                rejected.push((&report.pod, version, message));
            }
            _ => {}
        }
    }
    let counts = format!("{done}/{total}");
    let (status, reason, message) = match rejected.first() {
        Some((pod, version, why)) => {
            let mut message = format!(
                "{counts} pods; pod {pod} rejected snapshot {version}: {}",
                truncate(why, MESSAGE_LIMIT)
            );
            if rejected.len() > 1 {
                message.push_str(&format!(
                    " (and {} more pods rejected it)",
                    rejected.len() - 1
                ));
            }
            (ConditionStatus::False, "Rejected", message)
        }
        None if done == total => (
            ConditionStatus::True,
            "Programmed",
            format!("{counts} pods"),
        ),
        None => (ConditionStatus::False, "Pending", format!("{counts} pods")),
    };
    Programmed {
        status,
        reason,
        message,
        counts: Some(counts),
    }
}

/// The `Ready` condition: `True` when accepted and programmed; otherwise the reason that stands
/// in the way (`NotAccepted`, `Expired`, or `Programmed`'s own reason and message).
pub fn ready(
    accepted: ConditionStatus,
    accepted_reason: &str,
    programmed: &Programmed,
) -> (ConditionStatus, &'static str, String) {
    match (accepted, programmed.status) {
        (ConditionStatus::True, _) if programmed.reason == "Expired" => (
            ConditionStatus::False,
            "Expired",
            programmed.message.clone(),
        ),
        (ConditionStatus::True, ConditionStatus::True) => (
            ConditionStatus::True,
            "Ready",
            format!("accepted and programmed: {}", programmed.message),
        ),
        (ConditionStatus::True, status) => (status, programmed.reason, programmed.message.clone()),
        (_, _) => (
            ConditionStatus::False,
            "NotAccepted",
            format!("not accepted ({accepted_reason}); see the Accepted condition"),
        ),
    }
}

fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Watch the report Leases (in `namespace`, or all namespaces) and publish the live pods on
/// `reports` (`None` until the first list completed), re-evaluated on every Lease event and every
/// [`REPORT_TICK`]. Also keeps the data-plane gauges of `metrics` current. Runs until the watch
/// stream ends (it does not, short of the process ending).
pub async fn watch_reports(
    client: kube::Client,
    namespace: Option<String>,
    snapshots: watch::Receiver<Option<Arc<Published>>>,
    reports: watch::Sender<Option<Arc<Reports>>>,
    metrics: Arc<Metrics>,
) {
    let api: Api<Lease> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let (store, writer) = reflector::store();
    let events = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().labels(REPORT_SELECTOR)).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    let mut tick = tokio::time::interval(REPORT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut synced = false;
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Ok(watcher::Event::InitDone)) => synced = true,
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    // The backoff retries; the store keeps its last state meanwhile.
                    tracing::warn!(error = %crate::lease::error_chain(&error),
                        "watching data-plane report Leases failed");
                }
            },
            _ = tick.tick() => {}
        }
        if !synced {
            continue;
        }
        let live = live_reports(&store.state(), Timestamp::now());
        let current = snapshots
            .borrow()
            .as_ref()
            .map(|p| p.snapshot.version.clone());
        metrics.set_dataplane(&live, current.as_deref());
        reports.send_if_modified(|old| {
            if old.as_deref() == Some(&live) {
                return false;
            }
            tracing::info!(
                pods = live.pods.len(),
                reports = ?live.pods,
                "data-plane reports changed"
            );
            *old = Some(Arc::new(live));
            true
        });
    }
}

#[cfg(test)]
mod tests;
