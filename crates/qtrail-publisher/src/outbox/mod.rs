//! The outbox: audit events waiting for the collector's acknowledgement, in redb tables of the
//! service's own database.
//!
//! A service enqueues an event inside the write transaction that makes the change the event
//! describes ([`Outbox::enqueue`]); if that transaction commits, both are durable, and if it
//! aborts, neither exists and no sequence number is used up. Each event gets the next number of
//! the dense per-`(publisher_id, epoch)` sequence that the collector uses to spot gaps. The
//! publisher id is generated once per database and persisted with the epoch and the counter.
//!
//! The outbox is bounded in events and bytes: when an event does not fit, [`Outbox::enqueue`]
//! fails with [`OutboxError::Full`] and the caller must refuse its call, since no call may be
//! answered without its event being durable. Depth counters live in the same tables, so the
//! bound check costs two lookups, not a scan.
//!
//! How commits reach the disk is chosen once, at [`Outbox::open`] ([`CommitMode`]): a service
//! that commits through [`Outbox::begin`] under [`CommitMode::Grouped`] shares each fsync with
//! concurrent callers (`group_commit`), and the publisher then reads only up to the
//! `watermark` of what a durable commit covers. Calls that change nothing hand their event to
//! the `event_writer`.

mod event_writer;
mod group_commit;
mod watermark;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use qtrail_cadf::AuditEvent;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::Notify;

use crate::error::OutboxError;
use group_commit::GroupCommit;
use watermark::Watermark;

pub use event_writer::Recording;
pub use group_commit::OutboxTransaction;

/// Queued events: seq → (enqueue time in Unix milliseconds, protobuf-encoded `AuditEvent`).
const EVENTS: TableDefinition<'_, u64, (i64, &[u8])> = TableDefinition::new("qtrail_outbox_events");
/// Counters: the epoch, the next seq to assign, and the queue depth in events and bytes.
const COUNTERS: TableDefinition<'_, &str, u64> = TableDefinition::new("qtrail_outbox_counters");
/// Identity: the publisher id.
const IDENTITY: TableDefinition<'_, &str, &str> = TableDefinition::new("qtrail_outbox_identity");

const EPOCH: &str = "epoch";
const NEXT_SEQ: &str = "next_seq";
const DEPTH_EVENTS: &str = "depth_events";
const DEPTH_BYTES: &str = "depth_bytes";
const PUBLISHER_ID: &str = "publisher_id";

/// How much the outbox may hold before it refuses new events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most events queued at once.
    pub max_events: u64,
    /// Most bytes (of encoded events) queued at once.
    pub max_bytes: u64,
}

impl Default for OutboxLimits {
    /// Returns 100 000 events and 256 MiB: about a minute of a busy runtime's events while the
    /// collector is away, and far below a disk's capacity.
    fn default() -> Self {
        Self { max_events: 100_000, max_bytes: 256 * 1024 * 1024 }
    }
}

/// How the commits that carry events reach the disk, fixed for the life of an [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// Every commit is durable by itself (one fsync each): the caller's own transactions after
    /// [`Outbox::enqueue`], and [`OutboxTransaction::commit`] alike. The publisher may read every
    /// committed event.
    PerTransaction,
    /// [`OutboxTransaction::commit`] commits without an fsync and shares one durable commit with
    /// concurrent callers (see `group_commit`). The publisher reads only events a durable
    /// commit covers, so a transaction the caller commits without [`Outbox::begin`] must be
    /// durable and is published once the next durable commit moves the watermark past it.
    /// Removals of acknowledged events skip their fsync.
    Grouped,
}

/// How full the outbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxDepth {
    /// Events queued.
    pub events: u64,
    /// Bytes queued.
    pub bytes: u64,
    /// How long the oldest queued event has waited; `None` when the outbox is empty.
    pub oldest_age: Option<Duration>,
}

/// One queued event, as the publisher reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEvent {
    /// Position in the publisher's sequence.
    pub seq: u64,
    /// The event in its wire form, protobuf-encoded, as stored and as sent.
    pub encoded: Vec<u8>,
}

/// A batch read from the outbox.
#[derive(Debug, Clone, Default)]
pub struct QueuedBatch {
    /// The events, in seq order.
    pub events: Vec<QueuedEvent>,
    /// Whether the read stopped at a limit with more events left behind it.
    pub more: bool,
}

/// What [`Outbox::append_all`] did.
struct Appended {
    /// The epoch the events were numbered in.
    epoch: u64,
    /// Each event's seq, or why it was refused.
    outcomes: Vec<Result<u64, OutboxError>>,
    /// The last seq assigned so far.
    last_seq: u64,
}

/// A handle to the outbox tables of one database. Clones share the database and the wake-up.
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Arc<Database>,
    limits: OutboxLimits,
    mode: CommitMode,
    publisher_id: String,
    /// Wakes the publisher when events were committed.
    committed: Notify,
    /// Group commits of transactions from [`Outbox::begin`].
    group: GroupCommit,
    /// How far a durable commit has covered the outbox.
    durable: Watermark,
    /// The event writer of [`Outbox::submit`], started with the first event.
    writer: OnceLock<Option<std::sync::mpsc::Sender<event_writer::Pending>>>,
}

impl Outbox {
    /// Opens the outbox tables of `db`, creating them on first use, with commits made as `mode`
    /// says. A new outbox gets the publisher id `<id_prefix>-<8 random hex digits>`, epoch 1 and
    /// seq 1; an existing one keeps what it has.
    ///
    /// # Errors
    /// [`OutboxError::Storage`] when the database fails.
    pub fn open(
        db: Arc<Database>,
        id_prefix: &str,
        limits: OutboxLimits,
        mode: CommitMode,
    ) -> Result<Self, OutboxError> {
        let txn = db.begin_write()?;
        let publisher_id = {
            let mut identity = txn.open_table(IDENTITY)?;
            let existing = identity.get(PUBLISHER_ID)?.map(|id| id.value().to_owned());
            match existing {
                Some(id) => id,
                None => {
                    let id = format!("{id_prefix}-{:08x}", rand::random::<u32>());
                    identity.insert(PUBLISHER_ID, id.as_str())?;
                    id
                }
            }
        };
        {
            let mut counters = txn.open_table(COUNTERS)?;
            for (name, initial) in [(EPOCH, 1), (NEXT_SEQ, 1), (DEPTH_EVENTS, 0), (DEPTH_BYTES, 0)] {
                if counters.get(name)?.is_none() {
                    counters.insert(name, initial)?;
                }
            }
            txn.open_table(EVENTS)?;
        }
        txn.commit()?;
        let outbox = Self {
            inner: Arc::new(Inner {
                db,
                limits,
                mode,
                publisher_id,
                committed: Notify::new(),
                group: GroupCommit::default(),
                durable: Watermark::default(),
                writer: OnceLock::new(),
            }),
        };
        // What the database holds at opening is durable.
        let (epoch, last_seq) = outbox.position()?;
        outbox.inner.durable.advance(epoch, last_seq);
        Ok(outbox)
    }

    /// Returns the highest seq that may be published: every seq when each commit is durable.
    fn publishable_through(&self) -> u64 {
        match self.inner.mode {
            CommitMode::PerTransaction => u64::MAX,
            CommitMode::Grouped => self.inner.durable.seq(),
        }
    }

    /// Returns the publisher id, stable for the life of the database.
    pub fn publisher_id(&self) -> &str {
        &self.inner.publisher_id
    }

    /// Returns the bound.
    pub fn limits(&self) -> OutboxLimits {
        self.inner.limits
    }

    /// Returns how commits reach the disk.
    pub fn commit_mode(&self) -> CommitMode {
        self.inner.mode
    }

    /// Appends `event` to the outbox inside the caller's write transaction and returns its seq.
    /// The event is durable once the caller commits; call [`Outbox::wake_publisher`] then.
    ///
    /// # Errors
    /// [`OutboxError::Full`] when the event would exceed the bound (the transaction is left as
    /// it was, but the caller should abort it); [`OutboxError::Storage`] when the database fails.
    pub fn enqueue(&self, txn: &WriteTransaction, event: &AuditEvent) -> Result<u64, OutboxError> {
        let encoded = event.encode_proto();
        let mut appended = self.append_all(txn, std::iter::once(encoded.as_slice()))?;
        appended.outcomes.pop().unwrap_or_else(|| Err(OutboxError::Corrupt("no outcome for the event".into())))
    }

    /// Appends encoded events in `txn`, each that fits in the bound.
    fn append_all<'a>(
        &self,
        txn: &WriteTransaction,
        encoded: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Appended, OutboxError> {
        let mut counters = txn.open_table(COUNTERS)?;
        let mut table = txn.open_table(EVENTS)?;
        let epoch = read_counter(&counters, EPOCH)?;
        let mut events = read_counter(&counters, DEPTH_EVENTS)?;
        let mut bytes = read_counter(&counters, DEPTH_BYTES)?;
        let mut next_seq = read_counter(&counters, NEXT_SEQ)?;
        let limits = self.inner.limits;
        let now = now_millis();
        let mut outcomes = Vec::new();
        for event in encoded {
            let size = event.len() as u64;
            if events + 1 > limits.max_events || bytes + size > limits.max_bytes {
                outcomes.push(Err(OutboxError::Full { events, bytes }));
                continue;
            }
            table.insert(next_seq, (now, event))?;
            outcomes.push(Ok(next_seq));
            next_seq += 1;
            events += 1;
            bytes += size;
        }
        counters.insert(NEXT_SEQ, next_seq)?;
        counters.insert(DEPTH_EVENTS, events)?;
        counters.insert(DEPTH_BYTES, bytes)?;
        Ok(Appended { epoch, outcomes, last_seq: next_seq - 1 })
    }

    /// Tells the publisher that events were committed, so it need not wait for its next poll.
    pub fn wake_publisher(&self) {
        // `notify_one` keeps a permit when the publisher is busy, so no wake-up is lost.
        self.inner.committed.notify_one();
    }

    /// Completes at the next [`Outbox::wake_publisher`] (or at once if one is pending).
    pub(crate) async fn committed(&self) {
        self.inner.committed.notified().await;
    }

    /// Returns the current epoch and the last seq assigned in it (0 if none).
    ///
    /// # Errors
    /// [`OutboxError::Storage`] when the database fails.
    pub fn position(&self) -> Result<(u64, u64), OutboxError> {
        let txn = self.inner.db.begin_read()?;
        let counters = txn.open_table(COUNTERS)?;
        Ok((read_counter(&counters, EPOCH)?, read_counter(&counters, NEXT_SEQ)? - 1))
    }

    /// Returns how full the outbox is.
    ///
    /// # Errors
    /// [`OutboxError::Storage`] when the database fails.
    pub fn depth(&self) -> Result<OutboxDepth, OutboxError> {
        let txn = self.inner.db.begin_read()?;
        let counters = txn.open_table(COUNTERS)?;
        let events = txn.open_table(EVENTS)?;
        let oldest_age = match events.first()? {
            Some((_, value)) => {
                let (enqueued, _) = value.value();
                Some(Duration::from_millis(now_millis().saturating_sub(enqueued).max(0) as u64))
            }
            None => None,
        };
        Ok(OutboxDepth {
            events: read_counter(&counters, DEPTH_EVENTS)?,
            bytes: read_counter(&counters, DEPTH_BYTES)?,
            oldest_age,
        })
    }

    /// Reads the queued events after seq `after`, in order, at most `max_events` of them and at
    /// most `max_bytes` of encoded events (but always at least one, if there is one).
    ///
    /// # Errors
    /// [`OutboxError::Storage`] when the database fails.
    pub fn read_after(&self, after: u64, max_events: usize, max_bytes: usize) -> Result<QueuedBatch, OutboxError> {
        let through = self.publishable_through();
        if after >= through {
            return Ok(QueuedBatch::default());
        }
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut batch = QueuedBatch::default();
        let mut total = 0;
        for entry in table.range(after.saturating_add(1)..=through)? {
            let (seq, value) = entry?;
            let (_, encoded) = value.value();
            let full = batch.events.len() >= max_events || total + encoded.len() > max_bytes;
            if full && !batch.events.is_empty() {
                batch.more = true;
                break;
            }
            // Sent as stored, unchecked: each event travels as a bytes field of its own, so one
            // that no longer decodes (damaged on disk) cannot spoil its batch. The collector
            // rejects it alone, with the reason, and counts it as rejected where auditors see it.
            total += encoded.len();
            batch.events.push(QueuedEvent { seq: seq.value(), encoded: encoded.to_vec() });
        }
        Ok(batch)
    }

    /// Deletes the events with these seqs (those that are still queued) and returns how many
    /// were deleted.
    ///
    /// # Errors
    /// [`OutboxError::Storage`] when the database fails.
    pub fn remove(&self, seqs: &[u64]) -> Result<u64, OutboxError> {
        self.removing(|table| {
            let mut sizes = Vec::new();
            for &seq in seqs {
                if let Some(value) = table.remove(seq)? {
                    sizes.push(value.value().1.len() as u64);
                }
            }
            Ok(sizes)
        })
    }

    /// Deletes every event with a seq up to and including `seq` (the collector has them) and
    /// returns how many were deleted.
    ///
    /// # Errors
    /// [`OutboxError::Storage`] when the database fails.
    pub fn remove_through(&self, seq: u64) -> Result<u64, OutboxError> {
        if seq == 0 {
            return Ok(0);
        }
        self.removing(|table| {
            let mut sizes = Vec::new();
            for entry in table.extract_from_if(..=seq, |_, _| true)? {
                let (_, value) = entry?;
                sizes.push(value.value().1.len() as u64);
            }
            Ok(sizes)
        })
    }

    /// Runs `remove` on the event table in a removal transaction, subtracts what it removed
    /// (the size of each removed event) from the depth counters, commits, and returns how many
    /// events were removed.
    fn removing(
        &self,
        remove: impl FnOnce(&mut redb::Table<'_, u64, (i64, &'static [u8])>) -> Result<Vec<u64>, OutboxError>,
    ) -> Result<u64, OutboxError> {
        let txn = self.begin_removal()?;
        let removed = {
            let sizes = remove(&mut txn.open_table(EVENTS)?)?;
            let mut counters = txn.open_table(COUNTERS)?;
            subtract(&mut counters, sizes.len() as u64, sizes.iter().sum())?;
            sizes.len() as u64
        };
        txn.commit()?;
        Ok(removed)
    }

    /// Starts a new epoch: increments the epoch and renumbers the queued events from 1, in
    /// their order. Used when the collector has stored more of the current epoch than this
    /// outbox ever assigned, which means this database lost part of its history (a restored
    /// backup, say): continuing would reuse sequence numbers the collector already holds.
    /// Returns the new epoch.
    ///
    /// # Errors
    /// [`OutboxError::Storage`] when the database fails.
    pub fn start_new_epoch(&self) -> Result<u64, OutboxError> {
        let txn = self.inner.db.begin_write()?;
        let epoch = {
            let mut table = txn.open_table(EVENTS)?;
            let mut queued = Vec::new();
            for entry in table.extract_if(|_, _| true)? {
                let (_, value) = entry?;
                let (enqueued, encoded) = value.value();
                queued.push((enqueued, encoded.to_vec()));
            }
            for (index, (enqueued, encoded)) in queued.iter().enumerate() {
                table.insert(index as u64 + 1, (*enqueued, encoded.as_slice()))?;
            }
            let mut counters = txn.open_table(COUNTERS)?;
            let epoch = read_counter(&counters, EPOCH)? + 1;
            counters.insert(EPOCH, epoch)?;
            counters.insert(NEXT_SEQ, queued.len() as u64 + 1)?;
            (epoch, queued.len() as u64)
        };
        txn.commit()?;
        let (epoch, renumbered) = epoch;
        // A durable commit: everything renumbered is durable.
        self.inner.durable.advance(epoch, renumbered);
        Ok(epoch)
    }

    /// Starts the transaction of a removal. Removals need no fsync of their own: one lost in a
    /// crash only sends its events again, and the collector counts them as duplicates. The next
    /// durable commit of the database persists them.
    fn begin_removal(&self) -> Result<WriteTransaction, OutboxError> {
        let mut txn = self.inner.db.begin_write()?;
        if self.inner.mode == CommitMode::Grouped {
            txn.set_durability(Durability::None).map_err(|err| OutboxError::Storage(Box::new(err.into())))?;
        }
        Ok(txn)
    }
}

fn read_counter(table: &impl ReadableTable<&'static str, u64>, name: &str) -> Result<u64, OutboxError> {
    table.get(name)?.map(|value| value.value()).ok_or_else(|| OutboxError::Corrupt(format!("missing counter `{name}`")))
}

fn subtract(counters: &mut redb::Table<'_, &'static str, u64>, events: u64, bytes: u64) -> Result<(), OutboxError> {
    let depth_events = read_counter(counters, DEPTH_EVENTS)?;
    let depth_bytes = read_counter(counters, DEPTH_BYTES)?;
    counters.insert(DEPTH_EVENTS, depth_events.saturating_sub(events))?;
    counters.insert(DEPTH_BYTES, depth_bytes.saturating_sub(bytes))?;
    Ok(())
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}
