//! Cluster mode (`RIG_OPERATOR_URL` set): the data plane takes its configuration from the operator
//! instead of `RIG_MANIFESTS`.
//!
//! - [`snapshots`]: the snapshot client. It follows the operator's `GET /v1/snapshots` stream,
//!   validates every snapshot whole before swapping it in, keeps the last-known-good snapshot on
//!   disk (`RIG_SNAPSHOT_CACHE`) so a restart with no operator still serves, and publishes one
//!   [`DataPlaneReport`](rig_crds::snapshot::DataPlaneReport) per version it applied or rejected.
//!   It also owns readiness: ready once a configuration is in effect, and still ready while the
//!   operator is away.
//! - [`kube`]: the apiserver client (in-cluster or `KUBECONFIG`), built only in cluster mode.
//! - [`blacklists`]: revocation without the operator: the direct `Blacklist` watch, and the
//!   cluster-mode `POST /v3/session-blacklist`, which stores a `Blacklist` object.
//! - [`report`]: this pod's report Lease (alive, and what it did with the latest snapshot), which
//!   the operator turns into `Programmed`/`Ready`.

pub mod blacklists;
pub mod kube;
pub mod report;
pub mod snapshots;
