//! JWT sessions and their revocation (rig-behaviour §4; DESIGN §6.3).
//!
//! A session is the value of the claim at `JWT_SESSION_FIELD` (default `/jti`), read the same way
//! everywhere: to refuse tokens ([`crate::state::State::verify_jwt`]), to kill connections and to
//! count a session's connections. Connections join sessions in the hub
//! ([`crate::connections::hub::Hub::join_sessions`]); the revoked sessions live in the
//! [`blacklist::Blacklist`], fed by the RIG API ([`api`]) and by `Blacklist` objects (as a whole
//! set from the manifests or the operator's snapshot,
//! [`crate::state::State::apply_manifest_blacklists`]; one by one from the cluster-mode watch,
//! [`crate::cluster::blacklists`]). Revoking a session closes its live
//! connections in this process at once ([`crate::state::State::revoke`]). Optionally, connections
//! are also closed when their JWT expires ([`expiry`], `RIG_CLOSE_AT_TOKEN_EXPIRY`).

pub mod api;
pub mod rfc3339;

pub use crate::auth::revoked::{Blacklist, Source};
pub use crate::connections::SESSION_KILLED;
pub use crate::connections::expiry::SESSION_EXPIRED;
