//! JWT sessions and their revocation (rig-behaviour §4; DESIGN §6.3).
//!
//! A session is the value of the claim at `JWT_SESSION_FIELD` (default `/jti`), read the same way
//! everywhere: to refuse tokens ([`crate::auth::Jwt::verify`]), to kill connections and to
//! count a session's connections. Connections join sessions in the hub
//! ([`crate::connections::hub::Hub::join_sessions`]); the revoked sessions live in the
//! [`Blacklist`], fed by the RIG API (`crate::api::sessions`) and by `Blacklist` objects (as a whole
//! set from the manifests or the operator's snapshot,
//! [`Revocations::apply_manifest_blacklists`]; one by one from the cluster-mode watch,
//! [`crate::cluster::blacklists`]). Revoking a session closes its live
//! connections in this process at once ([`Revocations::revoke`]). Optionally, connections
//! are also closed when their JWT expires (`crate::connections::expiry`, `RIG_CLOSE_AT_TOKEN_EXPIRY`).

pub mod revocations;
pub mod rfc3339;

use std::time::Duration;

pub use revocations::Revocations;

pub use crate::auth::revoked::{Blacklist, Source};
pub use crate::connections::SESSION_KILLED;
pub use crate::connections::expiry::SESSION_EXPIRED;

/// Longest validity honoured (about 100 years): far beyond any token's life, and it keeps
/// deadlines representable.
pub const MAX_VALIDITY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
