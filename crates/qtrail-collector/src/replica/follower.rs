//! The tail follower: publishes every location's records to the fan-out from the shared store,
//! whichever replica wrote them, so that a tail on any replica sees all of them.
//!
//! Per location it keeps a cursor, the last position it published, and on every wake-up reads
//! the store from the cursor + 1 up to the location's `last_seq`, in bounded chunks, publishing
//! each chunk as one [`Committed`] batch: positions are dense and read in order, so nothing is
//! skipped or published twice. It starts at the store's head: a tail that resumes from an older
//! position reads those from the store itself (see `query::tail`).
//!
//! With nobody subscribed (no tail, no alert evaluator, as in a test) there is no one to read for: the cursor jumps to the head without reading. A tail that subscribes
//! meanwhile reads the store's history first, and sees a jump in positions as a reason to read
//! the store again, so it still misses nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use qtrail_cadf::Location;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::meters;
use crate::fanout::Fanout;
use crate::ingest::blocking;
use crate::store::{Appended, EventStore, StoreError};
use crate::writer::Committed;

/// Most records read from the store, and published as one batch, at a time.
pub(crate) const CHUNK: usize = 500;

/// Publishes the shared store's records to the fan-out, in position order, per location.
#[derive(Debug)]
pub(crate) struct Follower {
    store: Arc<dyn EventStore>,
    fanout: Fanout,
    /// Per location, the last position published (or skipped with nobody subscribed).
    cursors: HashMap<String, u64>,
}

impl Follower {
    /// Returns a follower over `store` whose cursors stand at each location's head now.
    ///
    /// # Errors
    /// When the store cannot list its collectors.
    pub(crate) async fn start_at_head(store: Arc<dyn EventStore>, fanout: Fanout) -> crate::Result<Self> {
        let reading = store.clone();
        let cursors = blocking(move || {
            let collectors = reading.collectors()?;
            Ok(collectors.into_iter().map(|collector| (collector.location, collector.event_count)).collect())
        })
        .await?;
        Ok(Self { store, fanout, cursors })
    }

    /// Catches up at once, then whenever `wake` is notified or `poll` has passed, until `stop`.
    pub(crate) async fn run(mut self, wake: Arc<Notify>, poll: Duration, stop: CancellationToken) {
        loop {
            let store = self.store.clone();
            let (fanout, mut cursors) = (self.fanout.clone(), std::mem::take(&mut self.cursors));
            let caught_up = tokio::task::spawn_blocking(move || {
                let result = catch_up(store.as_ref(), &fanout, &mut cursors);
                (cursors, result)
            })
            .await;
            match caught_up {
                Ok((cursors, result)) => {
                    self.cursors = cursors;
                    if let Err(err) = result {
                        // Retried at the next wake-up or poll, from the cursors reached.
                        warn!(error = %err, "the tail follower cannot read the store");
                    }
                }
                Err(err) => {
                    warn!(error = %err, "the tail follower failed, tails of this replica see only the store");
                    return;
                }
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Publishes every location's records after its cursor, up to its `last_seq`.
fn catch_up(store: &dyn EventStore, fanout: &Fanout, cursors: &mut HashMap<String, u64>) -> Result<(), StoreError> {
    for collector in store.collectors()? {
        let location: Location = collector
            .location
            .parse()
            .map_err(|err| StoreError::Corrupt(format!("collector `{}`: {err}", collector.location)))?;
        // A location created after the start: every record of it is new.
        let cursor = cursors.entry(collector.location).or_insert(0);
        follow_location(store, fanout, &location, cursor)?;
    }
    Ok(())
}

/// Publishes the records of `location` after `cursor` up to its `last_seq`, chunk by chunk,
/// moving `cursor` past each chunk published.
fn follow_location(
    store: &dyn EventStore,
    fanout: &Fanout,
    location: &Location,
    cursor: &mut u64,
) -> Result<(), StoreError> {
    let head = store.last_seq(location)?;
    while *cursor < head {
        meters::tail_lag(location.as_str(), head - *cursor);
        if !fanout.has_subscribers() {
            *cursor = head;
            break;
        }
        let records = store.events(location, *cursor + 1, CHUNK)?;
        let mut batch = Vec::with_capacity(records.len());
        for mut record in records {
            if record.location_seq != *cursor + 1 + batch.len() as u64 {
                return Err(StoreError::Corrupt(format!(
                    "`{location}` read position {} after {}",
                    record.location_seq,
                    *cursor + batch.len() as u64
                )));
            }
            let event = record.event.take().map(|event| event.encode_to_vec()).unwrap_or_default();
            batch.push(Appended { record, event });
        }
        let Some(last) = batch.last().map(|appended| appended.record.location_seq) else {
            // The head said more; the store read none: try again at the next wake-up.
            break;
        };
        debug!(location = %location, from = *cursor + 1, to = last, "publishing the store's records to tails");
        fanout.publish(Arc::new(Committed { location: location.to_string(), records: batch }));
        *cursor = last;
    }
    meters::tail_lag(location.as_str(), head.saturating_sub(*cursor));
    Ok(())
}

#[cfg(test)]
mod tests;
