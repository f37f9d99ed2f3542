//! The RIG for Kubernetes operator: watches `EventRoute`, `ProxyRoute` and `Blacklist` objects,
//! compiles them into one versioned snapshot ([`compile`]), and reports each object's verdict on
//! its status.

pub mod compile;
pub mod config;
pub mod controller;
pub mod lease;
pub mod run;
pub mod status;
pub mod stream;
