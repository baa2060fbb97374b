//! The follower's wake-ups from other replicas: `LISTEN qtrail_appended` on a dedicated
//! connection to the shared store, whose every append transaction notifies that channel (with
//! the location as payload) when it commits.
//!
//! Notifications sent while the connection is down are lost, not queued: so the listener wakes
//! the follower on every (re)connect too, and the follower, reading from its cursors, catches up
//! on whatever was appended meanwhile. A connection that dies quietly is caught by a `SELECT 1`
//! every few seconds; reconnects back off from 100 ms to 5 s.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{SessionError, backoff, meters};

/// The channel every append transaction of the shared store notifies.
pub(crate) const CHANNEL: &str = "qtrail_appended";

/// How often a quiet connection is checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a check, or connecting, may take before the connection counts as dead.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Listens on the store at `url` and notifies `wake` of every notification and every
/// (re)connect, until `stop`. `sessions`, when given, counts the sessions that listened (for
/// tests to wait on).
pub(crate) async fn listen(
    url: String,
    wake: Arc<Notify>,
    sessions: Option<watch::Sender<u64>>,
    stop: CancellationToken,
) {
    let mut state = State { failures: 0, started: 0 };
    loop {
        let session = tokio::select! {
            session = listen_once(&url, &wake, &mut state, sessions.as_ref()) => session,
            () = stop.cancelled() => return,
        };
        if let Err(err) = session {
            warn!(error = %err, failures = state.failures, "lost the store's notifications, reconnecting");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff(state.failures)) => {}
            () = stop.cancelled() => return,
        }
        state.failures = state.failures.saturating_add(1);
    }
}

/// What the sessions so far tell the next one.
struct State {
    /// Attempts that failed since the last session that listened.
    failures: u32,
    /// Sessions that listened.
    started: u64,
}

/// One session: connects, listens and relays notifications until the connection fails.
async fn listen_once(
    url: &str,
    wake: &Notify,
    state: &mut State,
    sessions: Option<&watch::Sender<u64>>,
) -> Result<(), SessionError> {
    let (client, mut connection) = tokio::time::timeout(TIMEOUT, tokio_postgres::connect(url, tokio_postgres::NoTls))
        .await
        .map_err(|_| SessionError::Timeout)??;
    let (notified, notifications) = tokio::sync::mpsc::unbounded_channel();
    // The connection delivers notifications only while it is polled, here.
    let mut driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    let _ = notified.send(notification.payload().to_owned());
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            }
        }
    });
    let ended = tokio::select! {
        relayed = relay(&client, notifications, wake, state, sessions) => relayed,
        driven = &mut driver => match driven {
            Ok(result) => result.map_err(SessionError::from),
            Err(_) => Ok(()),
        },
    };
    driver.abort();
    ended
}

/// Listens on `client`, then wakes `wake` once (for what was appended while nobody listened)
/// and on every notification, checking a quiet connection now and then; returns when it fails.
async fn relay(
    client: &tokio_postgres::Client,
    mut notifications: tokio::sync::mpsc::UnboundedReceiver<String>,
    wake: &Notify,
    state: &mut State,
    sessions: Option<&watch::Sender<u64>>,
) -> Result<(), SessionError> {
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    if state.started > 0 {
        meters::notify_reconnected();
    }
    state.failures = 0;
    state.started += 1;
    info!(channel = CHANNEL, "listening for other replicas' appends");
    if let Some(sessions) = sessions {
        sessions.send_modify(|count| *count += 1);
    }
    wake.notify_one();
    let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + CHECK_INTERVAL, CHECK_INTERVAL);
    loop {
        tokio::select! {
            received = notifications.recv() => {
                let Some(location) = received else {
                    return Ok(());
                };
                debug!(location = %location, "a replica appended");
                wake.notify_one();
            }
            _ = checks.tick() => {
                tokio::time::timeout(TIMEOUT, client.simple_query("SELECT 1")).await.map_err(|_| SessionError::Timeout)??;
            }
        }
    }
}

#[cfg(test)]
mod tests;
