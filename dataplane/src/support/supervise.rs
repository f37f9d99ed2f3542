//! Supervision of background tasks, the way the operator's `run.rs` does it: a task that fails,
//! panics or ends before shutdown is logged, counted and started again after an exponential
//! backoff with jitter, and while it is down its [`TaskHealth`] says so (the data plane's
//! `/readyz` reads it): never "ready" while the task cannot do its work.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::{Backoff, error_chain, prom, stopped};

/// First and largest delay before a failed task is started again.
const RESTART_BASE: Duration = Duration::from_millis(500);
const RESTART_CAP: Duration = Duration::from_secs(30);

/// Whether one supervised task is doing its work, and how often it was restarted.
#[derive(Debug)]
pub struct TaskHealth {
    name: &'static str,
    healthy: AtomicBool,
    restarts: AtomicU64,
}

impl TaskHealth {
    /// A task named `name` (the metric label), not healthy until it says so.
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            healthy: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
        })
    }

    /// The task's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Set by the task itself: it can (`true`) or cannot (`false`) do its work right now.
    pub fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            if healthy {
                tracing::info!(task = self.name, "task healthy");
            } else {
                tracing::warn!(task = self.name, "task unhealthy");
            }
        }
    }

    /// Whether the task can do its work now.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// How often the task was started again after a failure.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

/// The metrics of every supervised task.
pub fn render_metrics(tasks: &[Arc<TaskHealth>], out: &mut String) {
    if tasks.is_empty() {
        return;
    }
    let name = "rig_task_healthy";
    prom::family(
        out,
        name,
        prom::Kind::Gauge,
        "Whether a supervised background task can do its work (1) or not (0).",
    );
    for task in tasks {
        prom::sample(
            out,
            name,
            &[("task", task.name)],
            u8::from(task.is_healthy()),
        );
    }
    let name = "rig_task_restarts_total";
    prom::family(
        out,
        name,
        prom::Kind::Counter,
        "Restarts of a supervised background task after it failed, panicked or ended.",
    );
    for task in tasks {
        prom::sample(out, name, &[("task", task.name)], task.restarts());
    }
}

/// Run the task `start` makes until `shutdown`; start it again (after a backoff) whenever it
/// fails, panics or ends on its own. `health` turns unhealthy at each failure; the task sets it
/// healthy itself once it works.
pub async fn supervise<F, Fut, E>(
    health: Arc<TaskHealth>,
    mut shutdown: watch::Receiver<bool>,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let mut backoff = Backoff::new(RESTART_BASE, RESTART_CAP);
    loop {
        let mut task = tokio::spawn(start());
        let outcome = tokio::select! {
            outcome = &mut task => outcome,
            _ = stopped(&mut shutdown) => {
                // The task watches the same signal; give it its own chance to finish cleanly.
                let _ = task.await;
                return;
            }
        };
        if *shutdown.borrow() {
            return;
        }
        health.set_healthy(false);
        match outcome {
            Ok(Ok(())) => {
                tracing::error!(task = health.name, "task ended before shutdown; restarting")
            }
            Ok(Err(error)) => {
                tracing::error!(task = health.name, error = %error_chain(&error), "task failed; restarting")
            }
            Err(join) => {
                tracing::error!(task = health.name, error = %join, "task panicked; restarting")
            }
        }
        health.restarts.fetch_add(1, Ordering::Relaxed);
        let delay = backoff.next_jittered();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    #[tokio::test(start_paused = true)]
    async fn failed_and_panicked_tasks_restart_and_count_until_shutdown() {
        let health = TaskHealth::new("test");
        let (stop, shutdown) = watch::channel(false);
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let h = health.clone();
        let sup = tokio::spawn(supervise(health.clone(), shutdown.clone(), move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            let (h, mut shutdown) = (h.clone(), shutdown.clone());
            async move {
                match n {
                    0 => Err(Boom),
                    1 => panic!("a bug"),
                    _ => {
                        h.set_healthy(true);
                        stopped(&mut shutdown).await;
                        Ok(())
                    }
                }
            }
        }));
        // Paused time: each yield lets the supervisor and its backoff sleeps advance.
        for _ in 0..10_000 {
            if health.is_healthy() {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::advance(Duration::from_millis(50)).await;
        }
        assert!(health.is_healthy(), "the third run became healthy");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(health.restarts(), 2);
        stop.send(true).expect("send");
        sup.await.expect("supervisor ends");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "no restart after shutdown");
        let mut text = String::new();
        render_metrics(&[health], &mut text);
        assert!(
            text.contains("rig_task_restarts_total{task=\"test\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("rig_task_healthy{task=\"test\"} 1\n"),
            "{text}"
        );
    }
}
