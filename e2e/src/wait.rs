//! Deadline-bounded polling: the only way tests wait.

use std::future::Future;
use std::time::Duration;

/// Poll `check` until it yields `Some(value)` or `timeout` passes; on timeout, panic with `what`.
///
/// The pause between polls is short and grows slowly, so a condition that holds is seen quickly and
/// a slow one does not spin the CPU.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let got = wait_until("third call", Duration::from_secs(5), || {
            calls += 1;
            let c = calls;
            async move { (c >= 3).then_some(c) }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for never")]
    async fn panics_with_the_condition_name_at_the_deadline() {
        wait_until("never", Duration::from_secs(1), || async { None::<()> }).await;
    }
}
