//! The wiring layer of HTTP: the inbound and internal routers, the RIG session-blacklist API, and
//! the [`state::State`] they hold (one handle per subsystem). Nothing below this module imports
//! it: subsystems get their own narrow handles.

pub mod inbound;
pub mod internal;
pub mod sessions;
pub mod state;
