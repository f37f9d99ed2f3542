//! The RIG for Kubernetes operator: watches `EventRoute`, `ProxyRoute` and `Blacklist` objects,
//! compiles them into one versioned snapshot, serves it to the data planes, and reports each
//! object's verdict on its status.
//!
//! - [`compile`]: the pure compiler (objects → snapshot + verdicts).
//! - [`controller`]: reflectors, the compile loop (debounce, expiry timer), publication.
//! - [`stream`]: `GET /v1/snapshots` (NDJSON over HTTP/1.1 and h2c), health endpoints.
//! - [`lease`]: leader election; [`status`]: status and Events, written by the leader only.
//! - [`programmed`]: data-plane report Leases → `Programmed` (`2/2 pods`) and `Ready`.
//! - [`metrics`]: `GET /metrics` on the stream port.
//! - [`config`]: environment variables and defaults; [`run`]: the wiring of `rig-operator run`.

pub mod compile;
pub mod config;
pub mod controller;
pub mod lease;
pub mod metrics;
pub mod programmed;
pub mod run;
pub mod status;
pub mod stream;
