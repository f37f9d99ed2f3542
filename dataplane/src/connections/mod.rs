//! Frontend connections: the hub (registry and fan-out), frames, the streaming body, and the
//! transports (SSE; WebSocket and long-polling build on the same pieces).

pub mod body;
pub mod frame;
pub mod hub;
pub mod limit;
pub mod longpolling;
pub mod open;
pub mod sse;
pub mod sse_direct;
pub mod subscriptions_put;
pub mod ws;
