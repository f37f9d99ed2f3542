//! Kafka: the event consumer that feeds the fan-out, the history reader for resumes, and the one
//! "read every partition" consumer both the event consumer and the proxy's response consumer use.

pub mod consumer;
pub mod every_partition;
pub mod history;
pub mod partition;
pub mod publish;
