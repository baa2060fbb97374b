//! The single writer: one thread that takes batches from every Publish stream, commits as many
//! as are waiting (up to a limit) in one durable store transaction, then answers each.
//!
//! redb has one writer at a time and each durable commit costs an fsync, so committing the
//! batches of all streams together (group commit) is what lets throughput grow with the number
//! of streams. Committed records are then announced to tails and to the
//! [indexer](crate::indexer), which indexes them for queries after the Ack; the writer waits
//! only when the indexer falls too far behind.
//!
//! The batches of one stream form one [`Sequence`]: once a commit fails, no later batch of the
//! streams in it is committed. Otherwise a later batch could be stored over the hole the failed
//! one left, and the next `Welcome{stored_seq}` would tell the publisher it may drop events
//! that were never stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::SystemTime;

use prost_types::Timestamp;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, error};

use crate::fanout::Fanout;
use crate::indexer::IndexerHandle;
use crate::meters;
use crate::store::{AppendBatch, AppendOutcome, Appended, EventStore, StoreError};

/// What the writer needs of a store: appending a group of batches, and the store's size after.
/// Every [`EventStore`] is one; a test can stand in for one by implementing just these.
pub(crate) trait Appender: Send + Sync {
    /// See [`EventStore::append`].
    fn append(&self, batches: Vec<AppendBatch>, receive_time: Timestamp) -> Result<Vec<AppendOutcome>, StoreError>;
    /// See [`EventStore::file_bytes`].
    fn file_bytes(&self) -> Option<u64>;
}

impl<S: EventStore + ?Sized> Appender for S {
    fn append(&self, batches: Vec<AppendBatch>, receive_time: Timestamp) -> Result<Vec<AppendOutcome>, StoreError> {
        EventStore::append(self, batches, receive_time)
    }
    fn file_bytes(&self) -> Option<u64> {
        EventStore::file_bytes(self)
    }
}

/// Batches that may wait for the writer before senders have to wait too.
const QUEUE_DEPTH: usize = 256;

/// Most bytes of events in one group commit. The file store writes a group as one frame of
/// the log, which must stay well under the frame limit (1 GiB) however many batches of the
/// largest size are waiting (a batch can reach a Publish message's 32 MiB); a batch larger
/// than this still goes, alone.
pub(crate) const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// How many batches, and how many bytes of events, one group commit takes at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupLimit {
    /// Batches.
    pub(crate) batches: usize,
    /// Bytes of the batches' encoded events.
    pub(crate) bytes: usize,
}

/// Returns the bytes of a batch's encoded events, what a group commit writes.
fn batch_bytes(batch: &AppendBatch) -> usize {
    batch.events.iter().map(|event| event.encoded.len()).sum()
}

/// Where the writer announces committed records to tails.
#[derive(Debug, Clone)]
pub(crate) enum Publish {
    /// Straight to the fan-out: this collector is its locations' only writer.
    Fanout(Fanout),
    /// Only a wake-up of this replica's follower: replicas over a shared store see each other's
    /// records only through the store, so the follower publishes everyone's, this replica's too,
    /// in position order (see `crate::replica`); waking it keeps local tails as fast as before.
    Follower(Arc<Notify>),
}

impl From<Fanout> for Publish {
    fn from(fanout: Fanout) -> Self {
        Self::Fanout(fanout)
    }
}

/// Records committed to one location's chain by one batch, in chain order.
#[derive(Debug)]
pub(crate) struct Committed {
    /// The location.
    pub(crate) location: String,
    /// The records, with `location_seq` set and their events still encoded.
    pub(crate) records: Vec<Appended>,
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
    pub(crate) sequence: Sequence,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// The batches of one Publish stream, in order. Clones share the state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sequence {
    broken: Arc<AtomicBool>,
}

impl Sequence {
    /// Returns whether a batch of this sequence failed to commit.
    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    fn set_broken(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }
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

    /// Queues a batch of `sequence` and returns where its outcome will arrive, or `None` once the
    /// writer has stopped.
    pub(crate) async fn submit(
        &self,
        batch: AppendBatch,
        sequence: &Sequence,
    ) -> Option<oneshot::Receiver<Result<AppendOutcome, StoreError>>> {
        let (reply, outcome) = oneshot::channel();
        self.jobs.send(Message::Job(Job { batch, sequence: sequence.clone(), reply })).await.ok()?;
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
    /// Starts the writer over `store`, committing up to `limit` per transaction, announcing
    /// committed records through `committed` (see [`Publish`]) and to `indexer`.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub(crate) fn spawn<S: Appender + ?Sized + 'static>(
        store: Arc<S>,
        limit: GroupLimit,
        committed: impl Into<Publish>,
        indexer: IndexerHandle,
    ) -> std::io::Result<(Self, WriterHandle)> {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let announce = Announce { tails: committed.into(), indexer };
        let thread = std::thread::Builder::new()
            .name("qtrail-writer".into())
            .spawn(move || write_loop(store.as_ref(), queue, limit, &announce))?;
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

/// Who hears of committed records.
struct Announce {
    tails: Publish,
    indexer: IndexerHandle,
}

fn write_loop(
    store: &(impl Appender + ?Sized),
    mut queue: mpsc::Receiver<Message>,
    limit: GroupLimit,
    announce: &Announce,
) {
    let mut stopping = false;
    // A batch taken from the queue that did not fit in the last group: the next one starts
    // with it.
    let mut carried: Option<Job> = None;
    loop {
        // Once asked to stop, only what is already queued is committed.
        let first = match carried.take() {
            Some(job) => Some(Message::Job(job)),
            None if stopping => queue.try_recv().ok(),
            None => queue.blocking_recv(),
        };
        let Some(first) = first else {
            break;
        };
        let (mut jobs, mut bytes) = (Vec::new(), 0);
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Job(job) if job.sequence.is_broken() => {
                    let _ = job.reply.send(Err(StoreError::Backend(
                        "not stored: an earlier batch of this stream failed to commit".to_owned(),
                    )));
                }
                Message::Job(job) => {
                    let size = batch_bytes(&job.batch);
                    if !jobs.is_empty() && bytes + size > limit.bytes {
                        carried = Some(job);
                        break;
                    }
                    bytes += size;
                    jobs.push(job);
                }
                Message::Stop => stopping = true,
            }
            if jobs.len() < limit.batches.max(1) && bytes < limit.bytes {
                next = queue.try_recv().ok();
            }
        }
        if !jobs.is_empty() {
            announce.indexer.wait_for_room();
            commit_group(store, jobs, announce);
        }
    }
    debug!("writer stopped");
}

/// Commits the batches of `jobs` in one transaction and answers each.
fn commit_group(store: &(impl Appender + ?Sized), jobs: Vec<Job>, announce: &Announce) {
    let (batches, replies): (Vec<AppendBatch>, Vec<_>) =
        jobs.into_iter().map(|job| (job.batch, (job.sequence, job.reply))).unzip();
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
            let accepted: u64 = outcomes.iter().map(|outcome| u64::from(outcome.accepted)).sum();
            if accepted > 0 {
                announce.indexer.committed(accepted);
            }
            let tailed = match &announce.tails {
                Publish::Fanout(fanout) => fanout.has_subscribers(),
                Publish::Follower(follower) => {
                    if accepted > 0 {
                        follower.notify_one();
                    }
                    false
                }
            };
            for (((sequence, reply), mut outcome), location) in replies.into_iter().zip(outcomes).zip(locations) {
                // The stream fails on this batch; none of its later batches may be stored past
                // the hole it leaves.
                if outcome.too_many_gaps {
                    sequence.set_broken();
                }
                if let Some(last) = outcome.stored.last() {
                    meters::events_stored(&location, last.record.location_seq);
                }
                // Without tails the records go back with the answer, so that freeing them is not
                // the single writer's work.
                if let Publish::Fanout(fanout) = &announce.tails
                    && tailed
                    && !outcome.stored.is_empty()
                {
                    let records = std::mem::take(&mut outcome.stored);
                    fanout.publish(Arc::new(Committed { location, records }));
                }
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(err) => {
            error!(error = %err, batches = group, events, "group commit failed, nothing stored");
            meters::group_failed();
            for (sequence, reply) in replies {
                // Before anything else is committed, so that no later batch of these streams is.
                sequence.set_broken();
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Returns the current time as a protobuf timestamp.
pub(crate) fn now() -> Timestamp {
    Timestamp::from(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use qtrail_cadf::{Action, Location};

    use super::*;
    use crate::indexer::Indexer;
    use crate::store::{FileStore, NewEvent};

    /// A file store whose `append` fails once, on the call numbered `fail_at` (from 0).
    #[derive(Debug)]
    struct FailingOnce {
        inner: Arc<FileStore>,
        appends: AtomicUsize,
        fail_at: usize,
    }

    impl Appender for FailingOnce {
        fn append(&self, batches: Vec<AppendBatch>, receive_time: Timestamp) -> Result<Vec<AppendOutcome>, StoreError> {
            if self.appends.fetch_add(1, Ordering::SeqCst) == self.fail_at {
                return Err(StoreError::Backend("disk on fire".to_owned()));
            }
            EventStore::append(self.inner.as_ref(), batches, receive_time)
        }
        fn file_bytes(&self) -> Option<u64> {
            EventStore::file_bytes(self.inner.as_ref())
        }
    }

    fn batch(publisher: &str, seqs: std::ops::RangeInclusive<u64>) -> AppendBatch {
        let events = seqs
            .map(|seq| {
                let millis = 1_700_000_000_000 + seq as i64;
                let event = crate::store::conformance::event("us-east", Action::JobRead, "IBMid-1", "", 200, millis);
                NewEvent::new(seq, &event)
            })
            .collect();
        AppendBatch {
            location: "us-east".parse().unwrap(),
            publisher_id: publisher.into(),
            epoch: 1,
            credential: "runtime".into(),
            events,
            rejected_seqs: Vec::new(),
        }
    }

    /// A failed commit must not be followed by a commit of a later batch of the same stream:
    /// the publisher's seq would then jump the hole, and its next Welcome would let it drop the
    /// failed batch's events from its outbox although they were never stored.
    #[tokio::test]
    async fn after_a_failed_commit_no_later_batch_of_that_stream_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::open(dir.path(), 1024 * 1024).unwrap());
        store.create_collector(&"us-east".parse().unwrap(), Timestamp::default()).unwrap();
        let failing_once = FailingOnce { inner: store.clone(), appends: AtomicUsize::new(0), fail_at: 0 };
        let committed = Fanout::new(1024 * 1024);
        let (indexer, indexing) = Indexer::spawn(store.clone(), u64::MAX).unwrap();
        // One batch per commit, so the failure hits exactly the first batch.
        let limit = GroupLimit { batches: 1, bytes: MAX_GROUP_BYTES };
        let (writer, handle) = Writer::spawn(Arc::new(failing_once), limit, committed, indexing).unwrap();

        let failing = Sequence::default();
        let healthy = Sequence::default();
        let first = handle.submit(batch("p", 1..=2), &failing).await.unwrap();
        let second = handle.submit(batch("p", 3..=4), &failing).await.unwrap();
        let other = handle.submit(batch("q", 1..=2), &healthy).await.unwrap();
        assert!(first.await.unwrap().is_err(), "the first commit fails");
        let refused = second.await.unwrap().unwrap_err();
        assert_eq!(
            refused.to_string(),
            "storage failure: not stored: an earlier batch of this stream failed to commit"
        );
        assert_eq!(other.await.unwrap().unwrap().accepted, 2, "other streams carry on");

        let location: Location = "us-east".parse().unwrap();
        assert!(store.publisher(&location, "p").unwrap().is_none(), "nothing of the broken stream was stored");
        assert_eq!(store.last_seq(&location).unwrap(), 2);
        writer.stop().await;
        indexer.stop().await;
    }

    /// Records the batches and bytes of each group it is given, storing nothing; its first
    /// append waits until `gate` says go, so that the batches submitted meanwhile queue up.
    #[derive(Debug)]
    struct Recording {
        gate: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
        groups: std::sync::Mutex<Vec<(usize, usize)>>,
    }

    impl Appender for Recording {
        fn append(&self, batches: Vec<AppendBatch>, _: Timestamp) -> Result<Vec<AppendOutcome>, StoreError> {
            let mut groups = self.groups.lock().unwrap();
            if groups.is_empty() {
                self.gate.lock().unwrap().recv().unwrap();
            }
            groups.push((batches.len(), batches.iter().map(batch_bytes).sum()));
            Ok(batches.iter().map(|_| AppendOutcome::default()).collect())
        }
        fn file_bytes(&self) -> Option<u64> {
            None
        }
    }

    /// A group stops taking batches at its byte limit, and the batch that did not fit starts
    /// the next one; a batch over the limit on its own is committed alone.
    #[tokio::test]
    async fn a_group_commit_is_capped_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (indexer, indexing) =
            Indexer::spawn(Arc::new(FileStore::open(dir.path(), 1024 * 1024).unwrap()), u64::MAX).unwrap();
        let (go, gate) = std::sync::mpsc::channel();
        let store = Arc::new(Recording { gate: std::sync::Mutex::new(gate), groups: std::sync::Mutex::default() });
        let one = batch_bytes(&batch("p", 1..=10));
        let limit = GroupLimit { batches: 100, bytes: 2 * one + 1 };
        let (writer, handle) = Writer::spawn(store.clone(), limit, Fanout::new(1024 * 1024), indexing).unwrap();
        let sequence = Sequence::default();
        // Over the limit, so that it goes alone whatever was queued behind it when it was taken.
        let mut replies = vec![handle.submit(batch("gate", 1..=30), &sequence).await.unwrap()];
        for (publisher, seqs) in [("a", 1..=10), ("b", 1..=10), ("c", 1..=10), ("d", 1..=10), ("e", 1..=10)] {
            replies.push(handle.submit(batch(publisher, seqs), &sequence).await.unwrap());
        }
        replies.push(handle.submit(batch("f", 1..=10), &sequence).await.unwrap());
        replies.push(handle.submit(batch("big", 1..=30), &sequence).await.unwrap());
        replies.push(handle.submit(batch("g", 1..=10), &sequence).await.unwrap());
        go.send(()).unwrap();
        for reply in replies {
            reply.await.unwrap().unwrap();
        }
        let groups = store.groups.lock().unwrap().clone();
        let batches: Vec<usize> = groups.iter().map(|(batches, _)| *batches).collect();
        assert_eq!(batches, [1, 2, 2, 2, 1, 1], "{groups:?}");
        assert!(groups.iter().all(|(batches, bytes)| *batches == 1 || *bytes <= limit.bytes), "{groups:?}");
        assert!(groups[4].1 > limit.bytes, "the big batch went alone");
        writer.stop().await;
        indexer.stop().await;
    }
}
