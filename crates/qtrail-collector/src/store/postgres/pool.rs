//! A small bounded pool of PostgreSQL connections. A few lines of our own rather than
//! `r2d2_postgres`: the store needs only "take a connection, give it back unless it broke", and
//! r2d2 would bring a scheduler thread pool and its own error type for that.
//!
//! A connection whose socket closed (the server restarted, a network cut) is dropped when it is
//! given back, and the next taker connects afresh; an operation that failed because its
//! connection closed is tried once more on a new one (see [`Pool::with`]).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgError;
use crate::store::{StoreError, error_text};

/// How long a caller waits for a connection when all are in use.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// The connections and how many exist.
#[derive(Default)]
struct Slots {
    idle: Vec<Client>,
    open: usize,
}

/// A bounded pool of connections to one database.
pub(crate) struct Pool {
    config: Config,
    tls: Option<MakeRustlsConnect>,
    size: usize,
    slots: Mutex<Slots>,
    freed: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("size", &self.size).finish_non_exhaustive()
    }
}

impl Pool {
    /// Returns a pool of at most `size` connections made with `config` (TLS when `tls`).
    pub(crate) fn new(config: Config, tls: Option<MakeRustlsConnect>, size: usize) -> Self {
        Self { config, tls, size: size.max(1), slots: Mutex::default(), freed: Condvar::new() }
    }

    /// Runs `op` on a pooled connection. When it fails because the connection closed, it runs
    /// once more on a fresh one: every operation of the store is a transaction of its own, so
    /// one that failed with its connection had no effect, or (a commit whose answer was lost)
    /// is one whose replay the store's deduplication absorbs.
    pub(crate) fn with<T>(&self, mut op: impl FnMut(&mut Client) -> Result<T, PgError>) -> Result<T, PgError> {
        off_runtime(|| match self.once(&mut op) {
            Err(PgError::Sql(err)) if err.is_closed() => self.once(&mut op),
            other => other,
        })
    }

    fn once<T>(&self, op: &mut impl FnMut(&mut Client) -> Result<T, PgError>) -> Result<T, PgError> {
        let mut client = self.take()?;
        self.report();
        let result = op(&mut client);
        self.give_back(client);
        self.report();
        result
    }

    /// Sets the pool's gauges (`qtrail_store_pool_connections`): idle, and lent out.
    fn report(&self) {
        let slots = self.lock();
        crate::meters::store_pool(slots.idle.len(), slots.open.saturating_sub(slots.idle.len()));
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves the slots consistent (a push or a pop).
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes an idle connection, or opens one while under the bound, or waits for one.
    fn take(&self) -> Result<Client, PgError> {
        let mut slots = self.lock();
        loop {
            if let Some(client) = slots.idle.pop() {
                return Ok(client);
            }
            if slots.open < self.size {
                slots.open += 1;
                drop(slots);
                return self.connect().inspect_err(|_| {
                    self.lock().open -= 1;
                    self.freed.notify_one();
                });
            }
            let (guard, timeout) =
                self.freed.wait_timeout(slots, CHECKOUT_TIMEOUT).unwrap_or_else(std::sync::PoisonError::into_inner);
            if timeout.timed_out() && guard.idle.is_empty() && guard.open >= self.size {
                return Err(PgError::Store(StoreError::Backend(format!(
                    "no postgresql connection free within {}s (pool of {})",
                    CHECKOUT_TIMEOUT.as_secs(),
                    self.size
                ))));
            }
            slots = guard;
        }
    }

    fn connect(&self) -> Result<Client, PgError> {
        let client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        };
        client.map_err(|err| {
            PgError::Store(StoreError::Backend(format!("cannot connect to postgresql: {}", error_text(&err))))
        })
    }

    fn give_back(&self, client: Client) {
        let mut slots = self.lock();
        if client.is_closed() {
            slots.open -= 1;
        } else {
            slots.idle.push(client);
        }
        self.freed.notify_one();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing a connection blocks on the client's runtime too: the store may be dropped
        // on a runtime's worker.
        let idle = std::mem::take(&mut self.lock().idle);
        off_runtime(move || drop(idle));
    }
}

/// Runs `op`, which blocks on the sync client's own runtime, outside any tokio runtime the
/// calling thread is in: the store's callers use blocking threads, but a call from a worker of
/// a multi-threaded runtime must not panic.
fn off_runtime<T>(op: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(op)
        }
        _ => op(),
    }
}
