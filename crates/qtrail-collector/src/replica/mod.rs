//! Replicas: several stateless collectors serving the same locations over one shared
//! PostgreSQL store (`--store postgres://…`).
//!
//! Two things a lone collector gets for free need the database once there are several:
//!
//! - **Tails see every replica's events.** A replica's writer no longer publishes what it
//!   commits; the [`follower`] reads every location's chain from the store after its cursor and
//!   publishes it to the fan-out, whoever wrote it, in position order. It is woken by the
//!   [`listener`] (`LISTEN qtrail_appended`, which every append transaction notifies on commit),
//!   by this replica's own commits, and by a periodic poll in case a notification was lost.
//! - **One checkpoint signer.** [`leadership`] holds a PostgreSQL session advisory lock; only
//!   its holder signs checkpoints and evaluates alert rules, and another replica takes over
//!   when its session dies.
//!
//! Over the embedded store none of this runs: the collector is always the leader, and its
//! writer publishes straight to the fan-out as before.

pub(crate) mod follower;
pub(crate) mod leadership;
pub(crate) mod listener;
mod meters;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub(crate) use follower::Follower;
pub(crate) use leadership::Leadership;

use crate::fanout::Fanout;
use crate::store::EventStore;
use crate::writer::Publish;

/// How often the follower reads the store without having been woken: the safety net under
/// notifications lost on a connection that died unnoticed.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Returns this process's default replica id, `<hostname>-<pid>`.
pub(crate) fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let host = if host.is_empty() { "replica" } else { host };
    format!("{host}-{}", std::process::id())
}

/// Whether this replica leads, as a watch that never fails: over the embedded store it says
/// "leader" for ever.
#[derive(Debug, Clone)]
pub(crate) struct Role(watch::Receiver<bool>);

impl Role {
    /// Returns a role that always leads.
    pub(crate) fn always() -> Self {
        let (_, role) = watch::channel(true);
        Self(role)
    }

    /// Returns whether this replica leads now.
    pub(crate) fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until leading is `leader`; returns at once when it is already.
    pub(crate) async fn wait_until(&mut self, leader: bool) {
        if self.0.wait_for(|now| *now == leader).await.is_err() {
            // The leadership task is gone: the role no longer changes.
            std::future::pending::<()>().await;
        }
    }
}

/// The replica machinery of a collector over a shared store, or none over the embedded one.
#[derive(Debug)]
pub(crate) struct Replica {
    /// How the writer announces its commits.
    pub(crate) publish: Publish,
    /// The role that gates the checkpointer and the alert evaluator.
    pub(crate) leadership: Arc<Leadership>,
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Replica {
    /// Starts the follower, its listener and the leadership over the store at `url`, or nothing
    /// without a shared store (then the writer publishes to `committed` directly).
    ///
    /// # Errors
    /// When the store cannot tell the follower where each location's chain stands.
    pub(crate) async fn start(
        url: Option<&str>,
        replica: &str,
        store: Arc<dyn EventStore>,
        committed: &Fanout,
    ) -> crate::Result<Self> {
        let stop = CancellationToken::new();
        let Some(url) = url else {
            let leadership = Arc::new(Leadership::always());
            return Ok(Self { publish: Publish::Fanout(committed.clone()), leadership, tasks: Vec::new(), stop });
        };
        let wake = Arc::new(Notify::new());
        let follower = Follower::start_at_head(store, committed.clone()).await?;
        let tasks = vec![
            tokio::spawn(follower.run(wake.clone(), POLL_INTERVAL, stop.clone())),
            tokio::spawn(listener::listen(url.to_owned(), wake.clone(), None, stop.clone())),
        ];
        let leadership = Arc::new(Leadership::spawn(url.to_owned(), replica.to_owned(), stop.clone()));
        Ok(Self { publish: Publish::Follower(wake), leadership, tasks, stop })
    }

    /// Steps down (releasing the lock) and stops the follower and the listener: after the
    /// checkpointer's last checkpoint, which needs the lock still held.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            if let Err(err) = task.await {
                warn!(error = %err, "a replica task failed");
            }
        }
        self.leadership.stopped().await;
    }
}

/// The wait before reconnecting after `failures` failed attempts in a row: doubling from
/// 100 ms up to 5 s, so that a database restart is caught quickly and a long outage costs
/// little.
pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(5))
}

/// Why a dedicated connection to the shared store ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The database refused or dropped it.
    #[error("postgresql: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// It did not answer in time.
    #[error("postgresql did not answer in time")]
    Timeout,
}
