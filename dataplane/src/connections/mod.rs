//! Frontend connections: the fan-out ([`fanout`]: the hub, the replay window, connection tokens),
//! frames, the streaming body, token expiry, and the transports (SSE; WebSocket and long-polling
//! build on the same pieces), whose endpoints take the narrow [`context::Connections`] handle.

pub mod batch;
pub mod body;
pub mod context;
pub mod expiry;
pub mod fanout;
pub mod feed;
pub mod hub;
pub mod limit;
pub mod longpolling;
pub mod open;
pub mod queue;
pub mod sse;
pub mod sse_direct;
pub mod subscriptions_put;
pub mod ws;

/// The type of the event that tells a connection its session was revoked. SSE and long-polling
/// clients receive it (then the connection ends); WebSocket clients get close 1000
/// `Session killed.` instead.
pub const SESSION_KILLED: &str = "rig.session_killed";
/// The event a resuming client gets first when some of what it missed is not here (evicted from
/// the replay window, or its token is not understood): it should refetch its state.
pub const GAP: &str = "rig.connection.gap";
