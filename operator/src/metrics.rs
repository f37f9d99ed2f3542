//! The operator's metrics, served as Prometheus text on the stream port (`GET /metrics`).
//!
//! Plain atomics written where things happen (the compile loop, the stream, the report watcher,
//! the status writer) and rendered on request; the snapshot's version and size are read from the
//! published snapshot itself, so they cannot drift from what the stream serves.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::compile::{Kind, Outcome, Verdict};
use crate::controller::Published;
use crate::programmed::{PodState, Reports};

const KINDS: [(Kind, &str); 3] = [
    (Kind::EventRoute, "EventRoute"),
    (Kind::ProxyRoute, "ProxyRoute"),
    (Kind::Blacklist, "Blacklist"),
];
const VERDICTS: [&str; 3] = ["accepted", "rejected", "expired"];

/// Counters and gauges of one operator replica.
#[derive(Debug, Default)]
pub struct Metrics {
    compiles: AtomicU64,
    compile_micros_total: AtomicU64,
    last_compile_micros: AtomicU64,
    snapshots_published: AtomicU64,
    /// Objects by kind (index of [`KINDS`]) and verdict (index of [`VERDICTS`]).
    objects: [[AtomicU64; 3]; 3],
    stream_clients: AtomicU64,
    dataplane_pods: AtomicU64,
    dataplane_pods_current: AtomicU64,
    dataplane_pods_rejecting: AtomicU64,
    dataplane_reports_unreadable: AtomicU64,
    leader: AtomicBool,
    status_writes: AtomicU64,
    status_write_errors: AtomicU64,
}

impl Metrics {
    /// A compilation took `took` and judged `verdicts`.
    pub fn compiled(&self, took: Duration, verdicts: &[Verdict]) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.compiles.fetch_add(1, Relaxed);
        self.compile_micros_total.fetch_add(micros, Relaxed);
        self.last_compile_micros.store(micros, Relaxed);
        let mut counts = [[0u64; 3]; 3];
        for v in verdicts {
            let kind = KINDS.iter().position(|(k, _)| *k == v.kind).unwrap_or(0);
            let verdict = match v.outcome {
                Outcome::Accepted => 0,
                Outcome::Rejected { .. } => 1,
                Outcome::Expired { .. } => 2,
            };
            counts[kind][verdict] += 1;
        }
        for (row, counts) in self.objects.iter().zip(counts) {
            for (cell, n) in row.iter().zip(counts) {
                cell.store(n, Relaxed);
            }
        }
    }

    /// A new snapshot version went out.
    pub fn published(&self) {
        self.snapshots_published.fetch_add(1, Relaxed);
    }

    /// A stream client connected; the guard counts it until dropped.
    pub fn stream_client(self: &Arc<Self>) -> ClientGuard {
        self.stream_clients.fetch_add(1, Relaxed);
        ClientGuard(self.clone())
    }

    /// The live data-plane pods, and the version this replica serves.
    pub fn set_dataplane(&self, reports: &Reports, current: Option<&str>) {
        let mut on_current = 0;
        let mut rejecting = 0;
        let mut unreadable = 0;
        for pod in &reports.pods {
            match &pod.state {
                PodState::Applied { version } if Some(version.as_str()) == current => {
                    on_current += 1
                }
                PodState::Rejected { .. } => rejecting += 1,
                PodState::Unreadable => unreadable += 1,
                _ => {}
            }
        }
        self.dataplane_pods
            .store(reports.pods.len() as u64, Relaxed);
        self.dataplane_pods_current.store(on_current, Relaxed);
        self.dataplane_pods_rejecting.store(rejecting, Relaxed);
        self.dataplane_reports_unreadable.store(unreadable, Relaxed);
    }

    /// Whether this replica holds the Lease.
    pub fn set_leader(&self, leading: bool) {
        self.leader.store(leading, Relaxed);
    }

    /// A status write succeeded (`true`) or failed.
    pub fn status_write(&self, ok: bool) {
        if ok {
            self.status_writes.fetch_add(1, Relaxed);
        } else {
            self.status_write_errors.fetch_add(1, Relaxed);
        }
    }

    /// The Prometheus text exposition (format 0.0.4), with `published` the current snapshot.
    pub fn render(&self, published: Option<&Published>) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |v: u64| vec![(String::new(), v.to_string())];
        let secs = |micros: u64| format!("{:.6}", micros as f64 / 1e6);

        let version = published.map(|p| p.snapshot.version.as_str());
        family(
            "rig_operator_snapshot_info",
            "gauge",
            "The snapshot version this replica serves (1 once synced).",
            &version
                .map(|v| vec![(format!("{{version=\"{v}\"}}"), "1".to_owned())])
                .unwrap_or_default(),
        );
        family(
            "rig_operator_snapshot_bytes",
            "gauge",
            "Size of the current snapshot's stream line in bytes (0 before the first).",
            &plain(published.map_or(0, |p| p.line.len() as u64)),
        );
        let in_snapshot: Vec<(String, String)> = KINDS
            .iter()
            .map(|(kind, name)| {
                let n = published.map_or(0, |p| match kind {
                    Kind::EventRoute => p.snapshot.event_routes.len(),
                    Kind::ProxyRoute => p.snapshot.proxy_routes.len(),
                    Kind::Blacklist => p.snapshot.blacklists.len(),
                });
                (format!("{{kind=\"{name}\"}}"), n.to_string())
            })
            .collect();
        family(
            "rig_operator_snapshot_objects",
            "gauge",
            "Objects in the current snapshot, by kind.",
            &in_snapshot,
        );
        family(
            "rig_operator_snapshots_published_total",
            "counter",
            "Snapshot versions published by this replica.",
            &plain(self.snapshots_published.load(Relaxed)),
        );
        family(
            "rig_operator_compiles_total",
            "counter",
            "Compilations of all objects into a snapshot.",
            &plain(self.compiles.load(Relaxed)),
        );
        family(
            "rig_operator_compile_seconds_total",
            "counter",
            "Time spent compiling, summed over all compilations.",
            &[(String::new(), secs(self.compile_micros_total.load(Relaxed)))],
        );
        family(
            "rig_operator_compile_seconds",
            "gauge",
            "Duration of the last compilation.",
            &[(String::new(), secs(self.last_compile_micros.load(Relaxed)))],
        );
        let mut objects = Vec::new();
        for ((_, kind), row) in KINDS.iter().zip(&self.objects) {
            for (verdict, cell) in VERDICTS.iter().zip(row) {
                objects.push((
                    format!("{{kind=\"{kind}\",verdict=\"{verdict}\"}}"),
                    cell.load(Relaxed).to_string(),
                ));
            }
        }
        family(
            "rig_operator_objects",
            "gauge",
            "Objects seen by the last compilation, by kind and verdict.",
            &objects,
        );
        family(
            "rig_operator_stream_clients",
            "gauge",
            "Open snapshot streams on this replica.",
            &plain(self.stream_clients.load(Relaxed)),
        );
        family(
            "rig_operator_dataplane_pods",
            "gauge",
            "Live data-plane pods (report Lease not expired).",
            &plain(self.dataplane_pods.load(Relaxed)),
        );
        family(
            "rig_operator_dataplane_pods_current",
            "gauge",
            "Live data-plane pods that applied this replica's current snapshot version.",
            &plain(self.dataplane_pods_current.load(Relaxed)),
        );
        family(
            "rig_operator_dataplane_pods_rejecting",
            "gauge",
            "Live data-plane pods whose last report is a rejection.",
            &plain(self.dataplane_pods_rejecting.load(Relaxed)),
        );
        family(
            "rig_operator_dataplane_reports_unreadable",
            "gauge",
            "Live report Leases whose rig.dev/report annotation does not parse.",
            &plain(self.dataplane_reports_unreadable.load(Relaxed)),
        );
        family(
            "rig_operator_leader",
            "gauge",
            "1 while this replica holds the Lease (and writes status).",
            &plain(u64::from(self.leader.load(Relaxed))),
        );
        family(
            "rig_operator_status_writes_total",
            "counter",
            "Status writes (server-side apply) that succeeded.",
            &plain(self.status_writes.load(Relaxed)),
        );
        family(
            "rig_operator_status_write_errors_total",
            "counter",
            "Status writes that failed (retried).",
            &plain(self.status_write_errors.load(Relaxed)),
        );
        out
    }
}

/// Counts one open stream in [`Metrics`] until dropped.
#[derive(Debug)]
pub struct ClientGuard(Arc<Metrics>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.stream_clients.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programmed::PodReport;

    #[test]
    fn renders_every_family_with_values() {
        let m = Arc::new(Metrics::default());
        let verdicts = vec![Verdict {
            kind: Kind::ProxyRoute,
            namespace: "a".into(),
            name: "b".into(),
            generation: 1,
            outcome: Outcome::Rejected {
                reason: "InvalidPathRegex",
                message: "x".into(),
            },
        }];
        m.compiled(Duration::from_millis(3), &verdicts);
        let guard = m.stream_client();
        m.set_leader(true);
        m.set_dataplane(
            &Reports {
                pods: vec![
                    PodReport {
                        pod: "p1".into(),
                        state: PodState::Applied {
                            version: "v".into(),
                        },
                    },
                    PodReport {
                        pod: "p2".into(),
                        state: PodState::Waiting,
                    },
                ],
            },
            Some("v"),
        );
        let text = m.render(None);
        for line in [
            "rig_operator_compiles_total 1",
            "rig_operator_compile_seconds 0.003000",
            "rig_operator_objects{kind=\"ProxyRoute\",verdict=\"rejected\"} 1",
            "rig_operator_objects{kind=\"ProxyRoute\",verdict=\"accepted\"} 0",
            "rig_operator_stream_clients 1",
            "rig_operator_dataplane_pods 2",
            "rig_operator_dataplane_pods_current 1",
            "rig_operator_leader 1",
            "rig_operator_snapshot_bytes 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        drop(guard);
        assert!(m.render(None).contains("rig_operator_stream_clients 0\n"));
    }
}
