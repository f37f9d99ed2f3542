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
pub mod blacklist;
pub mod expiry;
pub mod rfc3339;

pub use blacklist::{Blacklist, Source};
pub use expiry::SESSION_EXPIRED;

/// The type of the event that tells a connection its session was revoked. SSE and long-polling
/// clients receive it (then the connection ends); WebSocket clients get close 1000
/// `Session killed.` instead.
pub const SESSION_KILLED: &str = "rig.session_killed";
