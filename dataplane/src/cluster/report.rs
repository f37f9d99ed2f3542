//! This pod's report to the operator: a `coordination.k8s.io/v1` Lease (cluster-mode contract).
//!
//! The Lease `rig-dataplane-<POD_NAME>` in `POD_NAMESPACE` (labels `app.kubernetes.io/name: rig`,
//! `rig.dev/role: dataplane-report`) says that this pod is alive (`holderIdentity`, `renewTime`
//! renewed every [`RENEW_EVERY`], `leaseDurationSeconds` [`LEASE_SECONDS`]) and, in the annotation
//! [`REPORT_ANNOTATION`], what it did with the latest snapshot version (the JSON of a
//! [`DataPlaneReport`]; absent before the first snapshot). The operator's Lease holder watches
//! these Leases and derives `Programmed` and `Ready` on every object from them.
//!
//! - Written with server-side apply (field manager `rig-dataplane`): one request creates or
//!   renews, and the whole object is stated each time, so an edit by someone else is undone.
//! - A new report is written at once (not at the next renewal); a failed write is counted in
//!   `rig_report_lease_failures_total`, logged, and retried after 1 s, doubling up to the renewal
//!   interval.
//! - On graceful shutdown the Lease is deleted, so the operator stops counting this pod at once
//!   instead of after the lease duration.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};
use rig_crds::snapshot::DataPlaneReport;
use tokio::sync::watch;
use tokio::time::Instant;

use super::kube::{FIELD_MANAGER, Kube};
use crate::metrics::Metrics;
use crate::support::error_chain;

pub use rig_crds::contract::{
    REPORT_ANNOTATION, REPORT_LEASE_PREFIX as LEASE_PREFIX, REPORT_ROLE_LABEL as ROLE_LABEL,
};
/// The label naming the product.
pub const NAME_LABEL: (&str, &str) = ("app.kubernetes.io/name", "rig");
/// `leaseDurationSeconds` (the contract's).
pub const LEASE_SECONDS: i32 = rig_crds::contract::REPORT_LEASE_SECONDS;
/// Renewal interval.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// First retry after a failed write (then doubling up to [`RENEW_EVERY`]).
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// How long shutdown waits for the deletion.
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the Lease is written: the apiserver, or a fake in tests.
pub trait Store: Send + Sync {
    /// Create or update `lease` (server-side apply).
    fn apply_lease(&self, lease: &Lease) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Delete the Lease `name`; one that does not exist is not an error.
    fn delete_lease(&self, name: &str) -> impl Future<Output = Result<(), kube::Error>> + Send;
}

impl Store for Api<Lease> {
    async fn apply_lease(&self, lease: &Lease) -> Result<(), kube::Error> {
        let name = lease.metadata.name.as_deref().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.patch(name, &params, &Patch::Apply(lease)).await?;
        Ok(())
    }

    async fn delete_lease(&self, name: &str) -> Result<(), kube::Error> {
        match self.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// The name of `pod`'s Lease.
pub fn lease_name(pod: &str) -> String {
    format!("{LEASE_PREFIX}{pod}")
}

/// The Lease of `owner` in `namespace`, renewed at `now`, carrying `report` when there is one.
pub fn lease(
    owner: Owner<'_>,
    namespace: &str,
    report: Option<&DataPlaneReport>,
    now: Timestamp,
) -> Result<Lease, serde_json::Error> {
    let annotations = match report {
        Some(report) => Some(BTreeMap::from([(
            REPORT_ANNOTATION.to_owned(),
            serde_json::to_string(report)?,
        )])),
        None => None,
    };
    let pod = owner.pod;
    let owner_references = owner.uid.map(|uid| {
        vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Pod".to_owned(),
                name: pod.to_owned(),
                uid: uid.to_owned(),
                ..Default::default()
            },
        ]
    });
    Ok(Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(pod)),
            owner_references,
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (NAME_LABEL.0.to_owned(), NAME_LABEL.1.to_owned()),
                (ROLE_LABEL.0.to_owned(), ROLE_LABEL.1.to_owned()),
            ])),
            annotations,
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(pod.to_owned()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    })
}

/// Keep this pod's Lease on the apiserver (module docs) until `shutdown` turns true, then delete
/// it. `reports` carries the latest report (`None` before the first snapshot).
pub async fn run(
    kube: Kube,
    metrics: Arc<Metrics>,
    reports: watch::Receiver<Option<DataPlaneReport>>,
    shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(kube.client(), kube.namespace());
    run_with(
        &api,
        Owner {
            pod: kube.pod(),
            uid: kube.pod_uid(),
        },
        kube.namespace(),
        &metrics,
        reports,
        shutdown,
    )
    .await;
}

/// The pod a Lease is for; with its UID, the Lease is owned by it (deleted with the pod).
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// The pod's name.
    pub pod: &'a str,
    /// The pod's UID (`POD_UID`).
    pub uid: Option<&'a str>,
}

/// [`run`] over any [`Store`].
pub async fn run_with<S: Store>(
    store: &S,
    owner: Owner<'_>,
    namespace: &str,
    metrics: &Metrics,
    mut reports: watch::Receiver<Option<DataPlaneReport>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let pod = owner.pod;
    let name = lease_name(pod);
    let mut reports_open = true;
    let mut next = Instant::now();
    let mut retry = RETRY_FIRST;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            changed = reports.changed(), if reports_open => {
                if changed.is_err() {
                    // No more reports: keep renewing with the last one.
                    reports_open = false;
                    continue;
                }
            }
            _ = crate::support::stopped(&mut shutdown) => break,
        }
        let report = reports.borrow_and_update().clone();
        let written = match lease(owner, namespace, report.as_ref(), Timestamp::now()) {
            Ok(lease) => store.apply_lease(&lease).await.map_err(Failure::Api),
            Err(error) => Err(Failure::Encode(error)),
        };
        match written {
            Ok(()) => {
                retry = RETRY_FIRST;
                next = Instant::now() + RENEW_EVERY;
            }
            Err(failure) => {
                metrics.report_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    lease = %name,
                    %namespace,
                    error = %error_chain(&failure),
                    retry_in = ?retry,
                    "cannot write the report Lease"
                );
                next = Instant::now() + retry;
                retry = (retry * 2).min(RENEW_EVERY);
            }
        }
    }
    match tokio::time::timeout(DELETE_TIMEOUT, store.delete_lease(&name)).await {
        Ok(Ok(())) => tracing::info!(lease = %name, "report Lease deleted"),
        Ok(Err(error)) => {
            metrics.report_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(lease = %name, error = %error_chain(&error), "cannot delete the report Lease");
        }
        Err(_) => {
            metrics.report_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(lease = %name, "the report Lease was not deleted in time");
        }
    }
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The apiserver refused or could not be reached (retried).
    #[error("apiserver")]
    Api(#[source] kube::Error),
    /// The report could not be encoded (not expected: it is strings only).
    #[error("encoding the report")]
    Encode(#[source] serde_json::Error),
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rig_crds::snapshot::Outcome;

    use super::*;

    const DP0: Owner<'static> = Owner {
        pod: "dp-0",
        uid: None,
    };

    /// What the fake store was asked, and when.
    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        Apply {
            at: Duration,
            report: Option<String>,
        },
        Delete {
            at: Duration,
            name: String,
        },
    }

    #[derive(Debug)]
    struct Fake {
        start: Instant,
        calls: Mutex<Vec<Call>>,
        /// Applies that fail before the first success.
        failures: Mutex<usize>,
        seen: tokio::sync::Notify,
    }

    impl Fake {
        fn new(failures: usize) -> Arc<Self> {
            Arc::new(Self {
                start: Instant::now(),
                calls: Mutex::new(Vec::new()),
                failures: Mutex::new(failures),
                seen: tokio::sync::Notify::new(),
            })
        }

        fn calls(&self) -> Vec<Call> {
            self.calls.lock().expect("lock").clone()
        }

        async fn wait_for(&self, n: usize) -> Vec<Call> {
            loop {
                let seen = self.seen.notified();
                let calls = self.calls();
                if calls.len() >= n {
                    return calls;
                }
                seen.await;
            }
        }

        fn record(&self, call: Call) {
            self.calls.lock().expect("lock").push(call);
            self.seen.notify_waiters();
        }
    }

    impl Store for Arc<Fake> {
        async fn apply_lease(&self, lease: &Lease) -> Result<(), kube::Error> {
            let spec = lease.spec.as_ref().expect("spec");
            assert_eq!(spec.holder_identity.as_deref(), Some("dp-0"));
            assert_eq!(spec.lease_duration_seconds, Some(LEASE_SECONDS));
            assert!(spec.renew_time.is_some());
            let report = lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REPORT_ANNOTATION).cloned());
            self.record(Call::Apply {
                at: self.start.elapsed(),
                report,
            });
            let mut failures = self.failures.lock().expect("lock");
            if *failures > 0 {
                *failures -= 1;
                return Err(kube::Error::Service(Box::new(std::io::Error::other(
                    "apiserver down",
                ))));
            }
            Ok(())
        }

        async fn delete_lease(&self, name: &str) -> Result<(), kube::Error> {
            self.record(Call::Delete {
                at: self.start.elapsed(),
                name: name.to_owned(),
            });
            Ok(())
        }
    }

    fn report(version: &str) -> DataPlaneReport {
        DataPlaneReport {
            pod: "dp-0".into(),
            version: version.into(),
            outcome: Outcome::Applied,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_lease_is_the_contracts() {
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let written = lease(DP0, "rig", Some(&report("v1")), now).expect("lease");
        let json = serde_json::to_value(&written).expect("json");
        assert_eq!(json["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(json["kind"], "Lease");
        assert_eq!(json["metadata"]["name"], "rig-dataplane-dp-0");
        assert_eq!(json["metadata"]["namespace"], "rig");
        assert_eq!(
            json["metadata"]["labels"],
            serde_json::json!({"app.kubernetes.io/name": "rig", "rig.dev/role": "dataplane-report"})
        );
        let annotation = json["metadata"]["annotations"][REPORT_ANNOTATION]
            .as_str()
            .expect("annotation");
        assert_eq!(
            serde_json::from_str::<DataPlaneReport>(annotation).expect("report"),
            report("v1")
        );
        assert_eq!(json["spec"]["holderIdentity"], "dp-0");
        assert_eq!(json["spec"]["leaseDurationSeconds"], 30);
        assert_eq!(json["spec"]["renewTime"], "2027-01-15T08:00:00.000000Z");

        let before_first = lease(DP0, "rig", None, now).expect("lease");
        assert!(
            before_first.metadata.owner_references.is_none(),
            "no UID, no owner"
        );
        let owned = lease(
            Owner {
                pod: "dp-0",
                uid: Some("u-1"),
            },
            "rig",
            None,
            now,
        )
        .expect("lease");
        let owners = owned.metadata.owner_references.expect("owned by the pod");
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].name.as_str(),
                owners[0].uid.as_str()
            ),
            ("Pod", "dp-0", "u-1")
        );
        assert!(
            before_first.metadata.annotations.is_none(),
            "no annotation before the first snapshot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn renews_every_interval_writes_a_new_report_at_once_and_deletes_on_shutdown() {
        let fake = Fake::new(0);
        let metrics = Arc::new(Metrics::default());
        let (report_tx, reports) = watch::channel(None);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn({
            let (fake, metrics) = (fake.clone(), metrics.clone());
            async move { run_with(&fake, DP0, "rig", &metrics, reports, stop).await }
        });
        fake.wait_for(2).await;
        tokio::time::advance(secs(3)).await;
        report_tx.send_replace(Some(report("v1")));
        let calls = fake.wait_for(3).await;
        let v1 = serde_json::to_string(&report("v1")).expect("json");
        assert_eq!(
            calls,
            vec![
                Call::Apply {
                    at: secs(0),
                    report: None
                },
                Call::Apply {
                    at: secs(10),
                    report: None
                },
                Call::Apply {
                    at: secs(13),
                    report: Some(v1.clone())
                },
            ]
        );
        // The next renewal counts from the last write, and carries the report.
        let calls = fake.wait_for(4).await;
        assert_eq!(
            calls[3],
            Call::Apply {
                at: secs(23),
                report: Some(v1)
            }
        );
        // Without a sender the Lease is still renewed.
        drop(report_tx);
        fake.wait_for(5).await;
        stop_tx.send_replace(true);
        task.await.expect("task");
        let calls = fake.calls();
        assert_eq!(
            calls.last(),
            Some(&Call::Delete {
                at: secs(33),
                name: "rig-dataplane-dp-0".into()
            })
        );
        assert_eq!(metrics.report_failures.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_counted_and_retried_with_backoff() {
        let fake = Fake::new(3);
        let metrics = Arc::new(Metrics::default());
        let (_report_tx, reports) = watch::channel(None);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn({
            let (fake, metrics) = (fake.clone(), metrics.clone());
            async move { run_with(&fake, DP0, "rig", &metrics, reports, stop).await }
        });
        let calls = fake.wait_for(5).await;
        let at: Vec<Duration> = calls
            .iter()
            .map(|c| match c {
                Call::Apply { at, .. } | Call::Delete { at, .. } => *at,
            })
            .collect();
        // Fails at 0, 1, 3; succeeds at 7; renews at 17.
        assert_eq!(at, vec![secs(0), secs(1), secs(3), secs(7), secs(17)]);
        assert_eq!(metrics.report_failures.load(Ordering::Relaxed), 3);
        stop_tx.send_replace(true);
        task.await.expect("task");
    }
}
