//! The state shared by both listeners and the event sources.

use crate::config::Config;
use crate::metrics::Metrics;

/// Everything a handler may need; one per process, behind an `Arc`.
#[derive(Debug)]
pub struct State {
    /// The process configuration.
    pub config: Config,
    /// The process metrics.
    pub metrics: Metrics,
}

impl State {
    /// Fresh state for `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            metrics: Metrics::default(),
        }
    }
}
