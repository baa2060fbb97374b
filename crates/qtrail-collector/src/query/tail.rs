//! A tail: a location's events from a position on, history first, then live.
//!
//! A tail subscribes to committed records *before* it reads history, then reads the store from
//! its start position up to the newest record, then follows the subscription, skipping what it
//! has sent (by position). A tail that falls behind the subscription's buffer, or sees a jump in
//! positions, goes back to the store and catches up: it never skips an event.

use std::time::Duration;

use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1 as proto;
use tokio::sync::mpsc;
use tracing::debug;

use super::Query;
use crate::error::{Error, Result};
use crate::fanout::{Lagged, Subscriber};
use crate::filter::Filter;
use crate::ingest::blocking;
use crate::lifecycle::Lifecycle;
use crate::meters::{Open, Openable};
use crate::registry::{parse_location, require_collector};
use crate::scope::Scope;

/// Records a tail reads from the store per step while catching up.
const TAIL_READ_CHUNK: usize = 500;

impl Query {
    /// Checks a tail request; the tail itself runs in [`Query::tail`], and sends only what
    /// `scope` admits (its filter holds the scope, so history and live alike).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location or filter, [`Error::CollectorNotFound`].
    pub(crate) async fn open_tail(&self, request: &proto::TailEventsRequest, scope: &Scope) -> Result<Tail> {
        let location = parse_location(&request.location)?;
        let filter = Filter::from_wire(request.filter.as_ref())?.within(scope);
        // Subscribe before anything is read, so that nothing committed from now on is missed.
        let live = self.committed.subscribe();
        let collector = require_collector(&self.store, location.clone()).await?;
        let next_seq = if request.from_seq == 0 { collector.event_count + 1 } else { request.from_seq };
        Ok(Tail { location, filter, next_seq, live })
    }

    /// Streams the tail's history, then live events, to `out` until the receiver goes away or the
    /// collector shuts down.
    pub(crate) async fn tail(self, mut tail: Tail, out: mpsc::Sender<Result<proto::TailEventsResponse>>) {
        let _open = Open::new(Openable::Tail);
        // A slot kept for the tail's last word: once a client stops reading, its queue has no
        // room left for the error that ends it.
        let Ok(last_word) = out.clone().reserve_owned().await else {
            return;
        };
        if let Err(err) = self.follow(&mut tail, &out).await {
            drop(last_word.send(Err(err)));
        }
    }

    async fn follow(&self, tail: &mut Tail, out: &mpsc::Sender<Result<proto::TailEventsResponse>>) -> Result<()> {
        loop {
            // History: read the store up to its newest record.
            loop {
                if self.lifecycle.is_stopping() {
                    return Ok(());
                }
                let store = self.store.clone();
                let (location, from) = (tail.location.clone(), tail.next_seq);
                let records = blocking(move || Ok(store.events(&location, from, TAIL_READ_CHUNK)?)).await?;
                if records.is_empty() {
                    break;
                }
                for record in records {
                    if !tail.send(record, out, &self.lifecycle, self.tail_stall).await? {
                        return Ok(());
                    }
                }
            }
            // Live: follow commits until a jump or a lag sends us back to the store.
            loop {
                let received = tokio::select! {
                    received = tail.live.recv() => received,
                    () = self.lifecycle.stopping() => return Ok(()),
                    () = out.closed() => return Ok(()),
                };
                let committed = match received {
                    Ok(committed) => committed,
                    Err(Lagged(missed)) => {
                        debug!(location = %tail.location, missed, "tail fell behind, catching up from the store");
                        break;
                    }
                };
                if committed.location != tail.location.as_str() {
                    continue;
                }
                let first = committed.records.first().map_or(0, |appended| appended.record.location_seq);
                if first > tail.next_seq {
                    // Records between were committed before we subscribed or were missed: the
                    // store has them.
                    break;
                }
                for appended in &committed.records {
                    if appended.record.location_seq >= tail.next_seq
                        && !tail.send(appended.decode()?, out, &self.lifecycle, self.tail_stall).await?
                    {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// An open tail: what it follows and where it stands.
#[derive(Debug)]
pub(crate) struct Tail {
    location: Location,
    filter: Filter,
    /// The next position to send (or to skip, when it does not match).
    next_seq: u64,
    live: Subscriber,
}

impl Tail {
    /// Sends `record` if it matches and advances past it; false once the receiver is gone or
    /// the grace period of a shutdown is over.
    ///
    /// # Errors
    /// [`Error::ResourceExhausted`] when the stream has had no room for `stall`: a client that
    /// stopped reading must not hold a task, and what its stream buffers, for ever.
    async fn send(
        &mut self,
        record: proto::StoredEvent,
        out: &mpsc::Sender<Result<proto::TailEventsResponse>>,
        lifecycle: &Lifecycle,
        stall: Duration,
    ) -> Result<bool> {
        let location_seq = record.location_seq;
        self.next_seq = location_seq + 1;
        if !self.filter.matches(&record) {
            return Ok(true);
        }
        let sending = lifecycle.send(out, Ok(proto::TailEventsResponse { event: Some(record) }));
        tokio::time::timeout(stall, sending).await.map_err(|_| {
            Error::ResourceExhausted(format!(
                "tail ended: the client read nothing for {} s while events waited; resume with from_seq {location_seq}",
                stall.as_secs_f64()
            ))
        })
    }
}
