//! Kafka: the event consumer that feeds the hub.

pub mod consumer;
pub mod history;
