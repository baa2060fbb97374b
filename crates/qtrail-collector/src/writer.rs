//! The single writer: one thread that takes batches from every Publish stream, commits as many
//! as are waiting (up to a limit) in one durable store transaction, then answers each.
//!
//! redb has one writer at a time and each durable commit costs an fsync, so committing the
//! batches of all streams together (group commit) is what lets throughput grow with the number
//! of streams. Committed records are then announced to tails.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use prost_types::Timestamp;
use qtrail_proto::qtrail::audit::v1 as proto;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error};

use crate::meters;
use crate::store::{AppendBatch, AppendOutcome, EventStore, StoreError};

/// Batches that may wait for the writer before senders have to wait too.
const QUEUE_DEPTH: usize = 256;

/// Committed batches a tail may fall behind by before it must catch up from the store.
pub(crate) const COMMITTED_BUFFER: usize = 1024;

/// Records committed to one location's chain by one batch, in chain order.
#[derive(Debug)]
pub(crate) struct Committed {
    /// The location.
    pub(crate) location: String,
    /// The records, with `location_seq` set.
    pub(crate) records: Vec<proto::StoredEvent>,
}

/// What the writer's queue carries.
#[derive(Debug)]
pub(crate) enum Message {
    /// A batch to commit.
    Job(Job),
    /// Commit what is queued, then stop.
    Stop,
}

/// A batch waiting for the writer and where to send its outcome.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) batch: AppendBatch,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// Handle to submit batches to the writer; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct WriterHandle {
    jobs: mpsc::Sender<Message>,
}

impl WriterHandle {
    /// Returns a handle whose jobs arrive on the returned queue instead of a writer thread, so
    /// that tests can decide when and how batches complete.
    #[cfg(test)]
    pub(crate) fn detached(depth: usize) -> (Self, mpsc::Receiver<Message>) {
        let (jobs, queue) = mpsc::channel(depth);
        (Self { jobs }, queue)
    }

    /// Queues a batch and returns where its outcome will arrive, or `None` once the writer has
    /// stopped.
    pub(crate) async fn submit(
        &self,
        batch: AppendBatch,
    ) -> Option<oneshot::Receiver<Result<AppendOutcome, StoreError>>> {
        let (reply, outcome) = oneshot::channel();
        self.jobs.send(Message::Job(Job { batch, reply })).await.ok()?;
        Some(outcome)
    }
}

/// The writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    thread: JoinHandle<()>,
    queue: mpsc::Sender<Message>,
}

impl Writer {
    /// Starts the writer over `store`, committing up to `max_group` batches per transaction and
    /// announcing committed records on `committed`.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub(crate) fn spawn(
        store: Arc<dyn EventStore>,
        max_group: usize,
        committed: broadcast::Sender<Arc<Committed>>,
    ) -> std::io::Result<(Self, WriterHandle)> {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("qtrail-writer".into())
            .spawn(move || write_loop(store.as_ref(), queue, max_group.max(1), &committed))?;
        Ok((Self { thread, queue: jobs.clone() }, WriterHandle { jobs }))
    }

    /// Stops the writer once it has committed and answered every batch queued so far, and waits
    /// for it. Batches submitted later are refused (their streams end UNAVAILABLE).
    pub(crate) async fn stop(self) {
        // An error means the writer is gone already.
        let _ = self.queue.send(Message::Stop).await;
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            error!("writer thread panicked");
        }
    }
}

fn write_loop(
    store: &dyn EventStore,
    mut queue: mpsc::Receiver<Message>,
    max_group: usize,
    committed: &broadcast::Sender<Arc<Committed>>,
) {
    let mut stopping = false;
    loop {
        // Once asked to stop, only what is already queued is committed.
        let first = if stopping { queue.try_recv().ok() } else { queue.blocking_recv() };
        let Some(first) = first else {
            break;
        };
        let mut jobs = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Job(job) => jobs.push(job),
                Message::Stop => stopping = true,
            }
            if jobs.len() < max_group {
                next = queue.try_recv().ok();
            }
        }
        if !jobs.is_empty() {
            commit_group(store, jobs, committed);
        }
    }
    debug!("writer stopped");
}

/// Commits the batches of `jobs` in one transaction and answers each.
fn commit_group(store: &dyn EventStore, jobs: Vec<Job>, committed: &broadcast::Sender<Arc<Committed>>) {
    let (batches, replies): (Vec<AppendBatch>, Vec<_>) = jobs.into_iter().map(|job| (job.batch, job.reply)).unzip();
    let group = batches.len();
    let events: usize = batches.iter().map(|batch| batch.events.len()).sum();
    let locations: Vec<String> = batches.iter().map(|batch| batch.location.to_string()).collect();
    let started = std::time::Instant::now();
    match store.append(batches, now()) {
        Ok(outcomes) => {
            let took = started.elapsed();
            debug!(batches = group, events, micros = took.as_micros(), "group committed");
            meters::group_committed(group, events, took);
            if let Some(bytes) = store.file_bytes() {
                meters::store_bytes(bytes);
            }
            let tailed = committed.receiver_count() > 0;
            for ((reply, mut outcome), location) in replies.into_iter().zip(outcomes).zip(locations) {
                if let Some(last) = outcome.stored.last() {
                    meters::events_stored(&location, last.location_seq);
                }
                // Without tails the records go back with the answer, so that freeing them is not
                // the single writer's work.
                if tailed && !outcome.stored.is_empty() {
                    let records = std::mem::take(&mut outcome.stored);
                    let _ = committed.send(Arc::new(Committed { location, records }));
                }
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(err) => {
            error!(error = %err, batches = group, events, "group commit failed, nothing stored");
            meters::group_failed();
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Returns the current time as a protobuf timestamp.
pub(crate) fn now() -> Timestamp {
    Timestamp::from(SystemTime::now())
}
