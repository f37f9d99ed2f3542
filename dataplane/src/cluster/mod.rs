//! Cluster mode (`RIG_OPERATOR_URL` set): the data plane takes its configuration from the operator
//! instead of `RIG_MANIFESTS`.
//!
//! - [`snapshots`]: the snapshot client. It follows the operator's `GET /v1/snapshots` stream,
//!   validates every snapshot whole before swapping it in, keeps the last-known-good snapshot on
//!   disk (`RIG_SNAPSHOT_CACHE`) so a restart with no operator still serves, and publishes one
//!   [`DataPlaneReport`](rig_crds::snapshot::DataPlaneReport) per version it applied or rejected.
//!   It also owns readiness: ready once a configuration is in effect, and still ready while the
//!   operator is away.

pub mod snapshots;
