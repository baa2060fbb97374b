//! Waiting for a condition that nothing announces (a server becoming ready, an event reaching
//! a store in another process): check it, and check again shortly after, until a deadline.
//! One mechanism for `qtrail up`, health waits and every test that must wait, so none of them
//! sleeps a guessed time and hopes.

use std::future::Future;
use std::time::Duration;

/// Pause between two checks: short enough not to slow a test, long enough not to busy-spin
/// on a two-core machine.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// Checks `check` until it returns `Some`, or until `timeout` has passed (then `None`). The
/// check runs at least once, and once more at the deadline.
pub async fn until<T, F, Fut>(timeout: Duration, check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    until_every(INTERVAL, timeout, check).await
}

/// Like [`until`], checking every `interval`: a shorter one where the moment the condition
/// starts to hold is itself measured (a benchmarked server's start-up time).
pub async fn until_every<T, F, Fut>(interval: Duration, timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
    }
}

/// Checks `check` until it holds, or until `timeout` has passed; returns whether it held.
pub async fn holds<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    until(timeout, || {
        let checked = check();
        async move { checked.await.then_some(()) }
    })
    .await
    .is_some()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn checks_until_the_condition_holds_or_the_deadline_passes() {
        let calls = AtomicU32::new(0);
        let third = until(Duration::from_secs(1), || {
            let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(third, Some(3));

        let started = tokio::time::Instant::now();
        assert!(!holds(Duration::from_millis(100), || async { false }).await);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100), "gave up early: {waited:?}");
        assert!(waited < Duration::from_secs(5), "gave up late: {waited:?}");
    }
}
