//! Leadership among replicas: the one that holds a PostgreSQL session advisory lock signs the
//! checkpoints and evaluates the alert rules; the others try to take it every second.
//!
//! The lock lives as long as the session that took it: when the leader's process, connection or
//! backend dies, the server releases it and the next replica to try takes over. The leader checks
//! its connection every second and steps down at once when it fails (its lock died with it), or
//! when its connection's task ends. Stepping down is only as fast as that check, so just before
//! it signs, the checkpointer asks the lock's own session whether it still holds the lock
//! ([`Leadership::ensure_leader`]): a replica that lost it does not store a checkpoint.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Role, SessionError, backoff, meters};

/// The advisory lock's key: "trail" in ASCII and 2, the checkpoint signer. Not 1, the store's
/// migration lock: a leader holds its lock for as long as it lives, and a replica starting then
/// would wait on it forever before migrating.
pub(crate) const LOCK_KEY: i64 = 0x7174_7261_696c_0002;

/// How often a follower tries to take the lock, and a leader checks its session.
const INTERVAL: Duration = Duration::from_secs(1);
/// How long a query on the lock's session may take before the session counts as dead.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this session holds the lock, from the server's own table of locks (an advisory lock
/// on a bigint key shows as its high and low 32 bits).
const HOLDS_LOCK: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
     AND pid = pg_backend_pid() AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $1)";

/// This replica's part in the leadership.
#[derive(Debug)]
pub(crate) struct Leadership {
    role: Role,
    /// The session holding the lock while leading; `None` over the embedded store.
    session: Option<Arc<Mutex<Option<Arc<tokio_postgres::Client>>>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Leadership {
    /// Returns the leadership of a collector alone over its store: it always leads.
    pub(crate) fn always() -> Self {
        Self { role: Role::always(), session: None, task: Mutex::new(None) }
    }

    /// Starts competing for the lock on the store at `url` as `replica`, until `stop`.
    pub(crate) fn spawn(url: String, replica: String, stop: CancellationToken) -> Self {
        let (role, watching) = watch::channel(false);
        let session = Arc::new(Mutex::new(None));
        meters::leader(&replica, false);
        let competing = Competitor { url, replica, role, session: session.clone() };
        let task = tokio::spawn(competing.run(stop));
        Self { role: Role(watching), session: Some(session), task: Mutex::new(Some(task)) }
    }

    /// Returns whether this replica leads, as a watch.
    pub(crate) fn role(&self) -> Role {
        self.role.clone()
    }

    /// Returns whether this replica still holds the lock, asking the lock's own session: for
    /// the checkpointer, just before it stores what it signed.
    pub(crate) async fn ensure_leader(&self) -> bool {
        let Some(session) = &self.session else {
            return true;
        };
        if !self.role.is_leader() {
            return false;
        }
        let client = session.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(client) = client else {
            return false;
        };
        match tokio::time::timeout(TIMEOUT, client.query_one(HOLDS_LOCK, &[&LOCK_KEY])).await {
            Ok(Ok(row)) => row.try_get::<_, bool>(0).unwrap_or(false),
            Ok(Err(err)) => {
                warn!(error = %err, "cannot ask whether this replica still signs");
                false
            }
            Err(_) => false,
        }
    }

    /// Waits for the competing task to end (after its stop token was cancelled).
    pub(crate) async fn stopped(&self) {
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task
            && let Err(err) = task.await
        {
            warn!(error = %err, "the leadership task failed");
        }
    }
}

/// The task that takes the lock and holds it.
struct Competitor {
    url: String,
    replica: String,
    role: watch::Sender<bool>,
    session: Arc<Mutex<Option<Arc<tokio_postgres::Client>>>>,
}

impl Competitor {
    async fn run(self, stop: CancellationToken) {
        let mut failures = 0;
        loop {
            let ended = tokio::select! {
                ended = self.session(&mut failures) => ended,
                () = stop.cancelled() => Ok(()),
            };
            self.step_down();
            if stop.is_cancelled() {
                return;
            }
            if let Err(err) = ended {
                warn!(replica = %self.replica, error = %err, "lost the leadership session, reconnecting");
            }
            tokio::select! {
                () = tokio::time::sleep(backoff(failures)) => {}
                () = stop.cancelled() => return,
            }
            failures = failures.saturating_add(1);
        }
    }

    /// One session: connects, takes the lock as soon as it can and holds it while the session
    /// lives; returns when it fails. Dropping the client (and its connection) ends the session,
    /// which releases the lock.
    async fn session(&self, failures: &mut u32) -> Result<(), SessionError> {
        let connecting = tokio_postgres::connect(&self.url, tokio_postgres::NoTls);
        let (client, connection) =
            tokio::time::timeout(TIMEOUT, connecting).await.map_err(|_| SessionError::Timeout)??;
        let mut driver = tokio::spawn(connection);
        let client = Arc::new(client);
        let competed = tokio::select! {
            competed = self.compete(&client, failures) => competed,
            // The connection ended: whatever lock it held is gone with it.
            driven = &mut driver => match driven {
                Ok(result) => result.map_err(SessionError::from),
                Err(_) => Ok(()),
            },
        };
        // Before the connection goes, so that no one asks a dead session.
        self.step_down();
        driver.abort();
        competed
    }

    /// Tries to take the lock every [`INTERVAL`], then checks the session as often.
    async fn compete(&self, client: &Arc<tokio_postgres::Client>, failures: &mut u32) -> Result<(), SessionError> {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if *self.role.borrow() {
                query(client, "SELECT 1", &[]).await?;
                continue;
            }
            let row = query(client, "SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY]).await?;
            *failures = 0;
            if row.try_get::<_, bool>(0)? {
                *self.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(client.clone());
                self.role.send_replace(true);
                meters::leader(&self.replica, true);
                info!(replica = %self.replica, "became the checkpoint signer");
            }
        }
    }

    /// Gives up the role (the lock goes with the session that holds it).
    fn step_down(&self) {
        *self.session.lock().unwrap_or_else(PoisonError::into_inner) = None;
        if self.role.send_replace(false) {
            meters::leader(&self.replica, false);
            info!(replica = %self.replica, "stopped signing");
        }
    }
}

/// Runs `sql` on `client` within [`TIMEOUT`] and returns its one row.
async fn query(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row, SessionError> {
    Ok(tokio::time::timeout(TIMEOUT, client.query_one(sql, params)).await.map_err(|_| SessionError::Timeout)??)
}

#[cfg(test)]
mod tests;
