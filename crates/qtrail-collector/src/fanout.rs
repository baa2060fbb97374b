//! The fan-out of committed records to tails: a ring of the newest committed batches, bounded
//! in bytes, that every tail reads at its own pace.
//!
//! A broadcast channel bounded in batches pins whatever a subscriber has not read yet: with
//! batches of megabytes, one tail that never reads held gigabytes. Here the writer evicts the
//! oldest batches as soon as the ring holds more than its byte limit, whoever has read them or
//! not, so the memory is the limit however many tails there are and however slowly they read.
//! A tail whose next batch was evicted is told how many it missed and reads them from the store
//! (where they are durable already), so it still sees every event, in order, with no gap.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prost::Message as _;
use tokio::sync::watch;

use crate::meters;
use crate::writer::Committed;

/// Bytes counted for a batch besides its records, so that many tiny batches are bounded too.
const BATCH_OVERHEAD: usize = 128;

/// The sending side, held by the writer and by the read side; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Fanout {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    ring: Mutex<Ring>,
    /// The index one past the newest batch, so that waiting tails wake on a new batch.
    newest: watch::Sender<u64>,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Ring {
    /// The batches held, oldest first, with the bytes counted for each.
    batches: VecDeque<(Arc<Committed>, usize)>,
    /// The index of the oldest batch held; indexes grow by one per batch ever published.
    first: u64,
    bytes: usize,
}

impl Ring {
    fn end(&self) -> u64 {
        self.first + self.batches.len() as u64
    }
}

/// A tail's subscription: where it stands in the ring.
#[derive(Debug)]
pub(crate) struct Subscriber {
    shared: Arc<Shared>,
    next: u64,
    newest: watch::Receiver<u64>,
}

/// Batches a subscriber missed because they were evicted before it read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lagged(pub(crate) u64);

impl Fanout {
    /// Returns a fan-out that holds at most `max_bytes` of committed records.
    pub(crate) fn new(max_bytes: usize) -> Self {
        let (newest, _) = watch::channel(0);
        Self { shared: Arc::new(Shared { ring: Mutex::new(Ring::default()), newest, max_bytes }) }
    }

    /// Returns a subscription that receives every batch published from now on.
    pub(crate) fn subscribe(&self) -> Subscriber {
        // Both under the lock, so that the watch cannot announce a batch the index skips.
        let ring = self.shared.lock();
        let newest = self.shared.newest.subscribe();
        Subscriber { shared: self.shared.clone(), next: ring.end(), newest }
    }

    /// Returns whether anyone is subscribed; without subscribers there is nothing to publish.
    pub(crate) fn has_subscribers(&self) -> bool {
        self.shared.newest.receiver_count() > 0
    }

    /// Publishes a batch and evicts the oldest until the ring is within its limit again (a batch
    /// larger than the limit is evicted at once: its tails read it from the store).
    pub(crate) fn publish(&self, committed: Arc<Committed>) {
        let size = BATCH_OVERHEAD
            + committed
                .records
                .iter()
                .map(|appended| appended.event.len() + appended.record.encoded_len())
                .sum::<usize>();
        let (end, bytes) = {
            let mut ring = self.shared.lock();
            ring.batches.push_back((committed, size));
            ring.bytes += size;
            while ring.bytes > self.shared.max_bytes {
                let Some((_, evicted)) = ring.batches.pop_front() else {
                    break;
                };
                ring.bytes -= evicted;
                ring.first += 1;
            }
            (ring.end(), ring.bytes)
        };
        meters::tail_buffer_bytes(bytes);
        self.shared.newest.send_replace(end);
    }

    /// Returns the bytes of committed records held now.
    #[cfg(test)]
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.shared.lock().bytes
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        // The ring is consistent after every statement that holds the lock: a panic elsewhere
        // leaves nothing half-done.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Subscriber {
    /// Skips every batch published so far: for a subscriber that only needs to know that
    /// something was committed, so that a burst wakes it once rather than once per batch.
    pub(crate) fn skip_to_newest(&mut self) {
        let ring = self.shared.lock();
        self.next = ring.first + ring.batches.len() as u64;
        self.newest.mark_unchanged();
    }

    /// Returns the next batch, waiting for one; [`Lagged`] when batches were evicted before
    /// this subscriber read them (it then stands at the oldest batch held).
    pub(crate) async fn recv(&mut self) -> Result<Arc<Committed>, Lagged> {
        loop {
            {
                let ring = self.shared.lock();
                if self.next < ring.first {
                    let missed = ring.first - self.next;
                    self.next = ring.first;
                    return Err(Lagged(missed));
                }
                let held = usize::try_from(self.next - ring.first).ok().and_then(|index| ring.batches.get(index));
                if let Some((committed, _)) = held {
                    self.next += 1;
                    return Ok(committed.clone());
                }
            }
            // The sender lives in `shared`, which this subscriber holds: it cannot be dropped.
            let _ = self.newest.changed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use qtrail_proto::qtrail::audit::v1 as proto;

    use super::*;
    use crate::store::Appended;

    fn batch(first_seq: u64, events: u64, event_bytes: usize) -> Arc<Committed> {
        let records = (first_seq..first_seq + events)
            .map(|location_seq| Appended {
                record: proto::StoredEvent { location_seq, ..Default::default() },
                event: vec![0; event_bytes],
            })
            .collect();
        Arc::new(Committed { location: "us-east".into(), records })
    }

    #[tokio::test]
    async fn a_subscriber_that_never_reads_pins_no_more_than_the_limit() {
        let fanout = Fanout::new(1024 * 1024);
        let idle = fanout.subscribe();
        for index in 0..200 {
            fanout.publish(batch(index * 10 + 1, 10, 10 * 1024));
            assert!(fanout.buffered_bytes() <= 1024 * 1024, "{} bytes held", fanout.buffered_bytes());
        }
        // 200 batches of 100 KiB were published; only the newest fit.
        assert!(fanout.buffered_bytes() > 900 * 1024);
        drop(idle);
    }

    #[tokio::test]
    async fn a_subscriber_skipping_to_the_newest_wakes_on_the_next_batch_only() {
        let fanout = Fanout::new(10 * 1024);
        let mut woken = fanout.subscribe();
        for seq in 1..=3 {
            fanout.publish(batch(seq, 1, 100));
        }
        woken.skip_to_newest();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), woken.recv()).await;
        assert!(waited.is_err(), "nothing new was published");
        fanout.publish(batch(4, 1, 100));
        assert_eq!(woken.recv().await.unwrap().records[0].record.location_seq, 4);
    }

    #[tokio::test]
    async fn a_subscriber_reads_in_order_then_learns_what_it_missed() {
        let fanout = Fanout::new(10 * 1024);
        let mut tail = fanout.subscribe();
        fanout.publish(batch(1, 1, 100));
        fanout.publish(batch(2, 1, 100));
        assert_eq!(tail.recv().await.unwrap().records[0].record.location_seq, 1);
        assert_eq!(tail.recv().await.unwrap().records[0].record.location_seq, 2);
        // Each of these is 4 KiB: the ring keeps the newest two.
        for seq in 3..=7 {
            fanout.publish(batch(seq, 1, 4 * 1024));
        }
        assert_eq!(tail.recv().await.unwrap_err(), Lagged(3));
        assert_eq!(tail.recv().await.unwrap().records[0].record.location_seq, 6);
        assert_eq!(tail.recv().await.unwrap().records[0].record.location_seq, 7);

        // A batch larger than the whole limit is never held.
        fanout.publish(batch(8, 1, 64 * 1024));
        assert_eq!(fanout.buffered_bytes(), 0);
        assert_eq!(tail.recv().await.unwrap_err(), Lagged(1));

        // A waiting subscriber wakes on the next batch.
        let waiting =
            tokio::spawn(async move { tail.recv().await.map(|committed| committed.records[0].record.location_seq) });
        fanout.publish(batch(9, 1, 100));
        assert_eq!(waiting.await.unwrap(), Ok(9));
    }

    #[test]
    fn subscribers_are_counted() {
        let fanout = Fanout::new(1024);
        assert!(!fanout.has_subscribers());
        let tail = fanout.subscribe();
        assert!(fanout.has_subscribers());
        drop(tail);
        assert!(!fanout.has_subscribers());
    }
}
