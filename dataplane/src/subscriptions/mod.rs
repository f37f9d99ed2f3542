//! Subscriptions: which events each connection receives (RIG §3).
//!
//! - [`model`]: a [`Subscription`] (`eventType` + `oneOf`, an OR of ANDs of field constraints) and
//!   its JSON form, parsed and validated as RIG does.
//! - [`extractors`]: per event type, where each constrainable field is found in the event (and,
//!   optionally, in the subscriber's JWT, for automatic subscriptions). From RIG's `EXTRACTORS` or
//!   from `EventRoute`s.
//! - [`index`]: the hot path. Every connection's subscriptions, indexed so that finding the
//!   connections an event goes to costs time proportional to the matches, not to all connections.

pub mod extractors;
pub mod index;
pub mod model;

pub use extractors::{Extractors, FieldExtractor, JsonPointer};
pub use index::{ConnId, Index};
pub use model::{Constraints, Subscription, dedup, parse_list, parse_value, to_json};
