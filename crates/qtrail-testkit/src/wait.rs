//! Waiting in tests, with a deadline and a panic that names what never happened.

use std::future::Future;
use std::time::Duration;

/// How long a server may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    qtrail_server::poll::until(timeout, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}
