//! The RIG for Kubernetes operator: watches `EventRoute`, `ProxyRoute` and `Blacklist` objects,
//! compiles them into one versioned snapshot ([`compile`]), and reports each object's verdict on
//! its status.

pub mod compile;
