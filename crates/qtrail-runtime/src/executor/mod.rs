//! The job queue: runs queued jobs on the simulator, at most `max_concurrent` at a time, each on
//! a blocking thread so simulation never stalls the async runtime.
//!
//! The store is the source of truth. Starting a job is a transaction that moves it from QUEUED
//! to RUNNING only if it is still QUEUED, and finishing one writes its final state only if it is
//! still RUNNING, so a cancel that commits first always wins. A running job checks between shots
//! (and every few hundred operations) whether it was cancelled, ran past its
//! `max_execution_time` (then it is CANCELLED with reason `RAN TOO LONG`), or the service is
//! shutting down (then it stays RUNNING in the store and is re-queued at the next start).
//! These transitions are not user actions and produce no audit event.
//!
//! The queue is bounded by admission: a job is admitted ([`Executor::admit`]) before it is
//! committed, and admission is refused once its account has as many jobs queued or running as
//! [`JobLimits`] allows, or the whole queue holds its total, so one account cannot fill the
//! queue for everyone. A job's `max_execution_time` runs from the moment it starts,
//! parsing included.

pub mod circuit;
#[cfg(test)]
mod circuit_properties;
mod compiling;
mod expansion;
pub mod simulator;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::store::jobs::{self, InterimResult, JobRecord, JobResults, JobStatus, LogLevel};
use crate::store::{Store, StoreError, now_millis};
use simulator::{Counts, Interrupted, Observer};

/// Reason of a job cancelled for running longer than its program allows.
pub const RAN_TOO_LONG: &str = "RAN TOO LONG";

/// Default of the most jobs one account may have queued or running at once; more are refused
/// RESOURCE_EXHAUSTED until some finish (`--max-jobs-per-account`).
pub const MAX_ACTIVE_JOBS_PER_ACCOUNT: usize = 32;
/// Default of the most jobs queued or running over all accounts: the bound of the queue
/// (`--max-queued-jobs`).
pub const MAX_ACTIVE_JOBS: usize = 1024;

/// How many jobs may be queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Most per account.
    pub per_account: usize,
    /// Most over all accounts.
    pub total: usize,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self { per_account: MAX_ACTIVE_JOBS_PER_ACCOUNT, total: MAX_ACTIVE_JOBS }
    }
}

/// Why a job was not admitted. Messages are lowercase, for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The account has as many jobs queued or running as it may.
    #[error("account has {0} jobs queued or running, the most it may have; wait for some to finish or cancel them")]
    AccountFull(usize),
    /// The queue is full.
    #[error("job queue is full with {0} jobs, try again later")]
    QueueFull(usize),
}

/// How many interim results a job publishes.
const PROGRESS_STEPS: u32 = 4;

/// Handle to the job queue. Clones share it.
#[derive(Debug, Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

/// Jobs admitted and not finished, counted per account.
#[derive(Debug, Default)]
struct Active {
    /// The account of each job.
    accounts: HashMap<String, String>,
    /// How many jobs each account has.
    per_account: HashMap<String, usize>,
}

impl Active {
    fn insert(&mut self, account: &str, job_id: &str) {
        if self.accounts.insert(job_id.to_owned(), account.to_owned()).is_none() {
            *self.per_account.entry(account.to_owned()).or_default() += 1;
        }
    }

    /// Forgets a job; forgetting one twice (a cancel racing the job's end) is harmless.
    fn remove(&mut self, job_id: &str) {
        let Some(account) = self.accounts.remove(job_id) else {
            return;
        };
        if let Some(count) = self.per_account.get_mut(&account) {
            *count -= 1;
            if *count == 0 {
                self.per_account.remove(&account);
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    queue: mpsc::UnboundedSender<String>,
    /// Cancel flags of the jobs being executed.
    running: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// The jobs admitted and not finished yet, queued or running.
    active: Mutex<Active>,
    limits: JobLimits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Executor {
    /// Starts the dispatcher with the default [`JobLimits`]. Must be called within a tokio
    /// runtime.
    pub fn start(store: Store, max_concurrent: usize) -> Self {
        Self::start_with(store, max_concurrent, JobLimits::default())
    }

    /// Starts the dispatcher. Must be called within a tokio runtime.
    pub fn start_with(store: Store, max_concurrent: usize, limits: JobLimits) -> Self {
        let (queue, mut queued) = mpsc::unbounded_channel::<String>();
        let inner = Arc::new(Inner {
            queue,
            running: Mutex::new(HashMap::new()),
            active: Mutex::new(Active::default()),
            limits,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let slots = Arc::new(Semaphore::new(max_concurrent.max(1)));
        let dispatcher = inner.clone();
        inner.tracker.spawn(async move {
            loop {
                let job_id = tokio::select! {
                    job_id = queued.recv() => match job_id {
                        Some(job_id) => job_id,
                        None => return,
                    },
                    _ = dispatcher.shutdown.cancelled() => return,
                };
                let permit = tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                    _ = dispatcher.shutdown.cancelled() => return,
                };
                let cancel = Arc::new(AtomicBool::new(false));
                dispatcher.running_jobs().insert(job_id.clone(), cancel.clone());
                let worker = dispatcher.clone();
                let store = store.clone();
                dispatcher.tracker.spawn_blocking(move || {
                    // Given back however the job ends, a panic in the simulator included: else
                    // the job would count against its account until the next start.
                    let _done = Done { inner: &worker, job_id: &job_id };
                    if let Err(err) = execute(&store, &job_id, &cancel, &worker.shutdown) {
                        warn!(job_id = %job_id, error = %err, "job execution failed to record its state");
                    }
                    drop(permit);
                });
            }
        });
        Self { inner }
    }

    /// Reserves a place in the queue for a job of `account` about to be committed as QUEUED.
    /// A job that is then not committed must be [`Self::release`]d.
    ///
    /// # Errors
    /// [`Refused`] when the account or the queue is full.
    pub fn admit(&self, account: &str, job_id: &str) -> Result<(), Refused> {
        let limits = self.inner.limits;
        let mut active = self.inner.active_jobs();
        if active.per_account.get(account).copied().unwrap_or_default() >= limits.per_account {
            return Err(Refused::AccountFull(limits.per_account));
        }
        if active.accounts.len() >= limits.total {
            return Err(Refused::QueueFull(limits.total));
        }
        active.insert(account, job_id);
        Ok(())
    }

    /// Gives back the place of a job that was admitted but not committed.
    pub fn release(&self, job_id: &str) {
        self.inner.active_jobs().remove(job_id);
    }

    /// Queues a job found unfinished at start, over the limits if need be: it was admitted
    /// before the restart.
    pub fn resume(&self, account: &str, job_id: &str) {
        self.inner.active_jobs().insert(account, job_id);
        self.submit(job_id);
    }

    /// Queues an admitted job that was committed as QUEUED.
    pub fn submit(&self, job_id: &str) {
        // The receiver lives until shutdown; a job submitted after it stays QUEUED in the store
        // and is picked up at the next start.
        let _ = self.inner.queue.send(job_id.to_owned());
    }

    /// Tells a running job to stop; its CANCELLED state was already committed.
    pub fn cancel(&self, job_id: &str) {
        if let Some(flag) = self.inner.running_jobs().get(job_id) {
            flag.store(true, Ordering::Relaxed);
        }
        self.inner.active_jobs().remove(job_id);
    }

    /// Stops taking jobs, interrupts running ones (they stay RUNNING in the store and are
    /// re-queued at the next start) and waits for their threads to finish.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

impl Inner {
    fn running_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicBool>>> {
        // The map holds plain flags; a panic elsewhere cannot leave it inconsistent.
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn active_jobs(&self) -> std::sync::MutexGuard<'_, Active> {
        // Each change to the counts is made whole under the lock, before anything can panic.
        self.active.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Forgets a job that stopped executing: finished, cancelled, deleted, interrupted by a
/// shutdown, or panicked. In each case it no longer counts against its account.
struct Done<'a> {
    inner: &'a Inner,
    job_id: &'a str,
}

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.inner.running_jobs().remove(self.job_id);
        self.inner.active_jobs().remove(self.job_id);
    }
}

/// A job found unfinished at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The job.
    pub job_id: String,
    /// Its account.
    pub account: String,
}

/// Moves every QUEUED or RUNNING job back to QUEUED (a RUNNING one was interrupted by a stop)
/// and returns them, oldest first, for the queue.
///
/// # Errors
/// Database failures.
pub fn requeue_unfinished(store: &Store) -> Result<Vec<Unfinished>, StoreError> {
    let txn = store.begin()?;
    let mut ids = Vec::new();
    for mut job in jobs::unfinished(&txn)? {
        if job.status == JobStatus::Running {
            job.status = JobStatus::Queued;
            job.start_millis = None;
            jobs::clear_outputs(&txn, &job.id)?;
            jobs::put(&txn, &job)?;
            jobs::log(&txn, &job, LogLevel::Warning, "job interrupted by a service restart, queued again")?;
        }
        ids.push(Unfinished { job_id: job.id, account: job.account });
    }
    txn.commit()?;
    if !ids.is_empty() {
        info!(jobs = ids.len(), "re-queued unfinished jobs");
    }
    Ok(ids)
}

/// Runs one job from QUEUED to its final state.
fn execute(store: &Store, job_id: &str, cancel: &AtomicBool, shutdown: &CancellationToken) -> Result<(), StoreError> {
    let Some((job, source)) = start(store, job_id)? else {
        return Ok(());
    };
    // The budget covers parsing too. Parsing is bounded (the expanded size is checked before
    // anything is expanded), so the observer's checks come soon enough.
    let started = Instant::now();
    let circuit = match circuit::parse(&source) {
        Ok(circuit) => circuit,
        Err(err) => return finish(store, &job, JobStatus::Failed, &format!("invalid program: {err}"), None),
    };
    let limit = Duration::from_secs(u64::from(job.max_execution_time));
    let mut observer =
        JobObserver { store, job: &job, cancel, shutdown, started, limit, timed_out: false, store_error: None };
    let outcome = simulator::run(&circuit, job.shots, job.seed, PROGRESS_STEPS, &mut observer);
    if let Some(err) = observer.store_error.take() {
        return Err(err);
    }
    match outcome {
        Ok(counts) => {
            let results = JobResults { shots: job.shots, counts, seed: job.seed };
            finish(store, &job, JobStatus::Completed, "", Some(results))
        }
        Err(Interrupted) if observer.timed_out => finish(store, &job, JobStatus::Cancelled, RAN_TOO_LONG, None),
        // Cancelled by its owner (already committed) or interrupted by a shutdown (left RUNNING
        // for the next start): nothing to write.
        Err(Interrupted) => Ok(()),
    }
}

/// Moves a job to RUNNING if it is still QUEUED; returns it with its source.
fn start(store: &Store, job_id: &str) -> Result<Option<(JobRecord, String)>, StoreError> {
    let txn = store.begin()?;
    let Some(mut job) = jobs::get(&txn, job_id)? else {
        return Ok(None);
    };
    if job.status != JobStatus::Queued {
        return Ok(None);
    }
    let source = jobs::source(&txn, job_id)?.unwrap_or_default();
    job.status = JobStatus::Running;
    job.start_millis = Some(now_millis());
    jobs::put(&txn, &job)?;
    jobs::log(&txn, &job, LogLevel::Info, &format!("job started on {} with {} shots", job.backend, job.shots))?;
    jobs::log(&txn, &job, LogLevel::Debug, &format!("sampling seed {}", job.seed))?;
    txn.commit()?;
    Ok(Some((job, source)))
}

/// Writes a job's final state, unless it left RUNNING meanwhile (a cancel won the race).
fn finish(
    store: &Store,
    job: &JobRecord,
    status: JobStatus,
    reason: &str,
    results: Option<JobResults>,
) -> Result<(), StoreError> {
    let txn = store.begin()?;
    let Some(mut current) = jobs::get(&txn, &job.id)? else {
        return Ok(());
    };
    if current.status != JobStatus::Running {
        return Ok(());
    }
    current.status = status;
    current.reason = reason.to_owned();
    current.end_millis = Some(now_millis());
    jobs::put(&txn, &current)?;
    if let Some(results) = &results {
        jobs::put_results(&txn, &current.id, results)?;
    }
    let (level, line) = match status {
        JobStatus::Completed => (LogLevel::Info, "job completed".to_owned()),
        JobStatus::Cancelled => (LogLevel::Error, format!("job cancelled: {reason}")),
        _ => (LogLevel::Error, format!("job failed: {reason}")),
    };
    jobs::log(&txn, &current, level, &line)?;
    txn.commit()?;
    info!(job_id = %current.id, status = %status, reason, "job finished");
    Ok(())
}

/// Connects a simulation to the job: stop conditions and interim results.
struct JobObserver<'a> {
    store: &'a Store,
    job: &'a JobRecord,
    cancel: &'a AtomicBool,
    shutdown: &'a CancellationToken,
    started: Instant,
    limit: Duration,
    timed_out: bool,
    store_error: Option<StoreError>,
}

impl Observer for JobObserver<'_> {
    fn should_stop(&mut self) -> bool {
        if self.started.elapsed() > self.limit {
            self.timed_out = true;
            return true;
        }
        self.cancel.load(Ordering::Relaxed) || self.shutdown.is_cancelled() || self.store_error.is_some()
    }

    fn progress(&mut self, shots_done: u32, counts: &Counts) {
        let result = InterimResult { shots_done, counts: counts.clone(), millis: now_millis() };
        let write = || -> Result<(), StoreError> {
            let txn = self.store.begin()?;
            jobs::push_interim(&txn, &self.job.id, result)?;
            jobs::log(&txn, self.job, LogLevel::Info, &format!("{shots_done} of {} shots done", self.job.shots))?;
            txn.commit()?;
            Ok(())
        };
        if let Err(err) = write() {
            self.store_error = Some(err);
        }
    }
}
