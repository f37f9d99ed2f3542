//! Lossless reconnect: resume tokens and the in-memory replay window.
//!
//! Every event a process forwards has a position in a *stream*: a Kafka partition (`topic/3`) or
//! this process's HTTP-published events (`_http@<owner>`). The resume token written as the SSE
//! `id:` is the process's *frontier* after that event: for every stream, the next position it
//! expects. A client that reconnects with its last token gets, from the window, every retained
//! event past its frontier that matches its subscriptions, in the order this process forwarded
//! them. When the window no longer holds everything past the frontier (evicted, or the token is not
//! understood), the client first gets `rig.connection.gap`, so it knows to refetch its state.
//!
//! Memory: the window holds `capacity` entries; each keeps the event (its JSON at its exact size
//! and its parsed form, for matching a resuming client's subscriptions) and the SSE frame live
//! clients got (replayed as is, shared), about 5× the event's size in all (measured by
//! `e2e/bench/hostile.sh`: 10,000 events of ~1 KiB take 49.5 MiB). A resuming client holds only a
//! cursor and one batch ([`crate::connections::feed`]).

pub mod token;
pub mod window;

pub use token::Frontier;
pub use window::{Cursor, Window};
