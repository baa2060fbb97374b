//! The indexer: a thread that brings the store's query indexes up to the chain, behind the
//! [writer](crate::writer).
//!
//! The writer acknowledges a batch once the chain holds it; the indexes only make queries fast,
//! so they need not delay the Ack. After each commit the writer wakes the indexer, which gathers
//! commits for up to [`GATHER`] (or [`GATHER_EVENTS`] events), then indexes in steps of up to
//! [`STEP`] positions (one transaction each) until it has caught up, then sleeps. At start it
//! catches up with whatever the store left unindexed: a crash between a commit and its indexing,
//! or an index rebuilt from scratch.
//!
//! Once caught up, the indexer also has the store write a snapshot of its state when the log
//! has grown enough ([`EventStore::snapshot`]): it is off the acknowledgement path here too,
//! and while it writes, the lag it lets build up is bounded as any other.
//!
//! Queries are right at any lag (the store reads the positions beyond the index one by one),
//! but the more there is, the slower a selective query gets. So while the lag is above
//! [`MAX_LAG`], the writer waits before its next commit: sustained ingest then runs at the
//! indexer's pace, and a burst is acknowledged at the chain's. The start-up catch-up does not
//! hold the writer back (rebuilding a large index takes minutes, longer than a publisher waits
//! for an Ack), and neither does an indexer that fails or has exited: queries stay right
//! without it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::meters;
use crate::store::{EventStore, IndexStep};

/// Most positions indexed in one transaction.
pub(crate) const STEP: u64 = 10_000;

/// Unindexed events above which the writer waits for the indexer. At about a microsecond per
/// event that a selective query reads beyond the index, this bounds that cost to ~0.1 s.
pub(crate) const MAX_LAG: u64 = 100_000;

/// How long a failed step waits before it is tried again; doubled after each failure in a row
/// up to [`MAX_RETRY_DELAY`]. A failed step closes the index file and the next one reopens it
/// (which on a full disk fails again and costs a check of the file), so a disk that stays full
/// is not hammered, and a freed one is used again within the longest delay.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Longest wait between failed steps.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(16);

/// Returns the wait after `failures` failed steps in a row (1 for the first).
fn retry_delay(failures: u32) -> Duration {
    RETRY_DELAY.saturating_mul(1 << failures.saturating_sub(1).min(8)).min(MAX_RETRY_DELAY)
}

/// How long the indexer gathers commits before a step, unless [`GATHER_EVENTS`] arrive first.
/// Under a light load each commit holds a few events, and a step per commit would cost a
/// transaction of the index file per Ack; queries meanwhile read the few unindexed events one
/// by one.
const GATHER: Duration = Duration::from_millis(20);

/// Unindexed events that start a step at once.
const GATHER_EVENTS: u64 = 2_000;

/// What the indexer and the writer share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the indexer: events were committed, or it must stop.
    wake: Condvar,
    /// Wakes a writer waiting for the lag to fall.
    progressed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Commits the indexer has not looked at yet.
    pending: bool,
    stopping: bool,
    /// Unindexed events, as of the last step plus what was committed since it began.
    lag: u64,
    /// Events committed since the current step began, which its count of the lag may miss.
    committed_during_step: u64,
    /// The indexer is still catching up with what it found at start; until it has indexed as
    /// many events as that backlog held (or the lag falls to [`MAX_LAG`]), the writer does not
    /// wait for it.
    starting: bool,
    /// Events of the start-up backlog not indexed yet; counted from the first step.
    start_backlog: Option<u64>,
    /// The last step failed: the writer must not wait for an indexer that may not progress.
    failing: bool,
    /// Steps failed in a row, which sets the wait before the next one.
    failures: u32,
    /// The thread has ended, normally or by a panic: nobody will lower the lag any more.
    exited: bool,
}

impl State {
    /// Takes in what a step did and left.
    fn stepped(&mut self, step: IndexStep) {
        // Commits made while the step ran may be missing from its count; counting them again
        // when they were not only makes the writer wait a step early.
        self.lag = step.lag + self.committed_during_step;
        if self.starting {
            // Counted in events, not positions: ingest may go on meanwhile, and a lag that never
            // falls must not keep the writer unthrottled for good.
            let left = self.start_backlog.get_or_insert(step.indexed + step.lag);
            *left = left.saturating_sub(step.indexed);
            if *left == 0 || self.lag <= MAX_LAG {
                self.starting = false;
                debug!("the indexes have caught up with the start-up backlog");
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it: every field is a plain
        // value written whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer's side of the indexer; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct IndexerHandle {
    shared: Arc<Shared>,
}

impl IndexerHandle {
    /// Tells the indexer that `events` new events were committed.
    pub(crate) fn committed(&self, events: u64) {
        let mut state = self.shared.lock();
        state.pending = true;
        state.lag += events;
        state.committed_during_step += events;
        self.shared.wake.notify_one();
    }

    /// Waits while the indexer is more than [`MAX_LAG`] events behind (and working).
    pub(crate) fn wait_for_room(&self) {
        let mut state = self.shared.lock();
        let mut waited = false;
        while state.lag > MAX_LAG && !state.starting && !state.failing && !state.exited && !state.stopping {
            if !waited {
                debug!(lag = state.lag, "writer waits for the indexer");
                waited = true;
            }
            state = self.shared.progressed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The indexer thread.
#[derive(Debug)]
pub(crate) struct Indexer {
    thread: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl Indexer {
    /// Starts the indexer over `store`; it first catches up with what the store has unindexed.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub(crate) fn spawn(store: Arc<dyn EventStore>, snapshot_every: u64) -> std::io::Result<(Self, IndexerHandle)> {
        // Pending from the start: the store may hold events the index has not reached.
        let shared = Arc::new(Shared {
            state: Mutex::new(State { pending: true, starting: true, ..State::default() }),
            ..Default::default()
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("qtrail-indexer".into())
                .spawn(move || index_loop(store.as_ref(), &shared, snapshot_every))?
        };
        Ok((Self { thread, shared: shared.clone() }, IndexerHandle { shared }))
    }

    /// Stops the indexer after its current step and waits for it. What is left unindexed is
    /// indexed at the next start.
    pub(crate) async fn stop(self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            self.shared.wake.notify_all();
            self.shared.progressed.notify_all();
        }
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            error!("indexer thread panicked");
        }
    }
}

/// Marks the indexer as exited when its thread ends, also by a panic, and releases a writer
/// waiting for it.
struct ExitGuard<'a>(&'a Shared);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().exited = true;
        self.0.progressed.notify_all();
    }
}

fn index_loop(store: &dyn EventStore, shared: &Shared, snapshot_every: u64) {
    let _exit = ExitGuard(shared);
    loop {
        {
            let mut state = shared.lock();
            while !state.pending && !state.stopping {
                state = shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            let deadline = Instant::now() + GATHER;
            while state.lag < GATHER_EVENTS && !state.stopping {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = shared.wake.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
            }
            if state.stopping {
                break;
            }
            state.pending = false;
        }
        if !catch_up(store, shared) {
            break;
        }
        if let Err(err) = store.snapshot(snapshot_every) {
            warn!(error = %err, "cannot write the state snapshot, a restart replays more of the log");
        }
    }
    debug!("indexer stopped");
}

/// Indexes step by step until nothing is left; false when asked to stop meanwhile.
fn catch_up(store: &dyn EventStore, shared: &Shared) -> bool {
    loop {
        let started = Instant::now();
        shared.lock().committed_during_step = 0;
        let result = store.index_step(STEP);
        let mut state = shared.lock();
        match result {
            Ok(step) => {
                state.stepped(step);
                if state.failing {
                    info!("indexing works again");
                }
                state.failing = false;
                state.failures = 0;
                shared.progressed.notify_all();
                meters::index_lag(step.lag);
                if step.indexed > 0 {
                    debug!(indexed = step.indexed, lag = step.lag, micros = started.elapsed().as_micros(), "indexed");
                }
                if state.stopping {
                    return false;
                }
                if step.lag == 0 {
                    return true;
                }
            }
            Err(err) => {
                if !state.failing {
                    error!(error = %err, "indexing failed, queries read unindexed events one by one until it works");
                }
                state.failing = true;
                state.failures = state.failures.saturating_add(1);
                shared.progressed.notify_all();
                // Wait before retrying, unless told to stop.
                let delay = retry_delay(state.failures);
                let (state, _) = shared
                    .wake
                    .wait_timeout_while(state, delay, |state| !state.stopping)
                    .unwrap_or_else(PoisonError::into_inner);
                if state.stopping {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(state: State) -> IndexerHandle {
        IndexerHandle { shared: Arc::new(Shared { state: Mutex::new(state), ..Default::default() }) }
    }

    /// Runs `wait_for_room` on another thread; the receiver hears when it returns.
    fn wait_elsewhere(handle: &IndexerHandle) -> std::sync::mpsc::Receiver<()> {
        let (done, finished) = std::sync::mpsc::channel();
        let waiter = handle.clone();
        std::thread::spawn(move || {
            waiter.wait_for_room();
            let _ = done.send(());
        });
        finished
    }

    fn returns_soon(handle: &IndexerHandle) -> bool {
        wait_elsewhere(handle).recv_timeout(Duration::from_secs(1)).is_ok()
    }

    #[test]
    fn the_writer_waits_only_for_a_working_indexer_past_its_start() {
        let behind = MAX_LAG + 1;
        assert!(returns_soon(&handle(State { lag: MAX_LAG, ..State::default() })));
        assert!(!returns_soon(&handle(State { lag: behind, ..State::default() })));
        assert!(returns_soon(&handle(State { lag: behind, starting: true, ..State::default() })));
        assert!(returns_soon(&handle(State { lag: behind, failing: true, ..State::default() })));
        assert!(returns_soon(&handle(State { lag: behind, exited: true, ..State::default() })));
    }

    /// A start-up backlog exempts the writer from waiting only until that many events are
    /// indexed, even while ingest keeps the lag above the limit.
    #[test]
    fn the_start_up_exemption_ends_with_the_backlog_found_at_start() {
        let mut state = State { starting: true, ..State::default() };
        state.stepped(IndexStep { indexed: STEP, lag: 3 * STEP + MAX_LAG });
        assert!(state.starting, "{} of the backlog left", state.start_backlog.unwrap());
        state.committed_during_step = 2 * STEP;
        state.stepped(IndexStep { indexed: STEP, lag: 4 * STEP + MAX_LAG });
        assert_eq!(state.lag, 6 * STEP + MAX_LAG, "commits made during the step count");
        assert!(state.starting);
        state.stepped(IndexStep { indexed: 2 * STEP + MAX_LAG, lag: 2 * STEP + MAX_LAG });
        assert!(!state.starting, "the backlog found at start is indexed; the lag is ingest's");
        assert!(!returns_soon(&handle(State { lag: state.lag, ..State::default() })));

        let mut small = State { starting: true, ..State::default() };
        small.stepped(IndexStep { indexed: 10, lag: MAX_LAG });
        assert!(!small.starting, "a lag within the limit ends it at once");
    }

    #[test]
    fn failed_steps_back_off_up_to_a_limit() {
        let delays: Vec<u64> = (1..=7).map(|failures| retry_delay(failures).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 16, 16]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }

    /// An indexer thread that panics must not leave the writer waiting for it forever.
    #[test]
    fn a_panicking_indexer_releases_a_waiting_writer() {
        let handle = handle(State { lag: MAX_LAG + 1, ..State::default() });
        let finished = wait_elsewhere(&handle);
        let shared = handle.shared.clone();
        let indexer = std::thread::spawn(move || {
            let _exit = ExitGuard(&shared);
            panic!("the indexer fails");
        });
        assert!(indexer.join().is_err());
        assert!(finished.recv_timeout(Duration::from_secs(5)).is_ok(), "the writer is released");
        assert!(handle.shared.lock().exited);
    }
}
