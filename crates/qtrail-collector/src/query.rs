//! The auditor's read side (`EventQuery`): pages of events, tails, chain checks, exports and
//! publisher state.
//!
//! Pages are in chain order (`location_seq`), newest first unless asked otherwise, so a page
//! token is simply the last position served plus a fingerprint of what it was served for:
//! `base64url(version || last location_seq || SHA-256(location, filter, order)[..16])`. New
//! events only ever get higher positions, so paging is stable while events arrive.
//!
//! A tail subscribes to committed records *before* it reads history, then reads the store from
//! its start position up to the newest record, then follows the subscription, skipping what it
//! has sent (by position). A tail that falls behind the subscription's buffer, or sees a jump in
//! positions, goes back to the store and catches up: it never skips an event.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message as _;
use qtrail_cadf::{AuditEvent, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::debug;

use crate::chain::{self, CheckRange};
use crate::error::{Error, Result};
use crate::fanout::{Fanout, Lagged, Subscriber};
use crate::filter::{Filter, Order};
use crate::ingest::blocking;
use crate::lifecycle::Lifecycle;
use crate::meters::{Open, Openable};
use crate::registry::{parse_location, require_collector};
use crate::store::{EventStore, StoreError};

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size accepted.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Most lines per export message.
pub const EXPORT_CHUNK_LINES: usize = 500;
/// Most bytes of lines per export message, so that large events stay well within a client's
/// default 4 MiB message limit.
pub const EXPORT_CHUNK_BYTES: usize = 1024 * 1024;
/// Most encoded bytes of events per page; a page of large events ends early (with a token)
/// rather than exceed a client's default 4 MiB message limit.
pub const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;
/// Most encoded bytes of publisher states per ListPublishers page. A publisher holds at most
/// [`crate::store::publisher::MAX_GAPS_PER_PUBLISHER`] gaps (a few hundred KiB), so any one
/// fits, and a page stays well within a client's default 4 MiB message limit.
pub const MAX_PUBLISHERS_PAGE_BYTES: usize = 1024 * 1024;
/// Records a tail reads from the store per step while catching up.
const TAIL_READ_CHUNK: usize = 500;

const PAGE_TOKEN_VERSION: u8 = 1;
const FINGERPRINT_BYTES: usize = 16;

/// The read side over a store and the stream of committed records.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    store: Arc<dyn EventStore>,
    committed: Fanout,
    lifecycle: Lifecycle,
    /// How long a tail waits for room in its stream before it ends RESOURCE_EXHAUSTED.
    tail_stall: Duration,
}

impl Query {
    /// Returns the read side over `store`, following `committed` for tails; tails and exports
    /// end when `lifecycle` says so, a tail also when its client reads nothing for `tail_stall`
    /// while events wait.
    pub(crate) fn new(
        store: Arc<dyn EventStore>,
        committed: Fanout,
        lifecycle: Lifecycle,
        tail_stall: Duration,
    ) -> Self {
        Self { store, committed, lifecycle, tail_stall }
    }

    /// Returns one page of events.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location, filter, order, page size or page token;
    /// [`Error::CollectorNotFound`] for a location without collector.
    pub(crate) async fn query_events(&self, request: proto::QueryEventsRequest) -> Result<proto::QueryEventsResponse> {
        let location = parse_location(&request.location)?;
        let filter = Filter::from_wire(request.filter.as_ref())?;
        let order = Order::from_wire(request.order)?;
        let page_size = page_size(request.page_size)?;
        let fingerprint = fingerprint(&location, request.filter.as_ref(), order);
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(decode_page_token(token, &fingerprint)?),
        };
        require_collector(&self.store, location.clone()).await?;
        let store = self.store.clone();
        let limit = page_size as usize;
        let mut events = blocking(move || Ok(store.query(&location, &filter, order, after, limit + 1)?)).await?;
        let fitting = fitting_prefix(&events, MAX_PAGE_BYTES).min(limit);
        let next_page_token = if events.len() > fitting {
            events.truncate(fitting);
            events.last().map(|last| encode_page_token(last.location_seq, &fingerprint)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(proto::QueryEventsResponse { events, next_page_token })
    }

    /// Checks a tail request; the tail itself runs in [`Query::tail`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location or filter, [`Error::CollectorNotFound`].
    pub(crate) async fn open_tail(&self, request: &proto::TailEventsRequest) -> Result<Tail> {
        let location = parse_location(&request.location)?;
        let filter = Filter::from_wire(request.filter.as_ref())?;
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

    /// Verifies the chain of a location over a range.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location or range, [`Error::CollectorNotFound`].
    pub(crate) async fn verify_chain(&self, request: proto::VerifyChainRequest) -> Result<proto::VerifyChainResponse> {
        let location = parse_location(&request.location)?;
        let collector = require_collector(&self.store, location.clone()).await?;
        let store = self.store.clone();
        blocking(move || {
            // The newest position is the collector row's count or the last stored key, whichever
            // is higher, so that removing the newest records is noticed.
            let newest = collector.event_count.max(store.last_seq(&location)?);
            let range = resolve_range(request.range.as_ref(), newest)?;
            Ok(chain::verify(store.as_ref(), &location, range, newest)?)
        })
        .await
    }

    /// Checks an export request and returns what to export.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location, format, range or filter,
    /// [`Error::CollectorNotFound`].
    pub(crate) async fn open_export(&self, request: &proto::ExportEventsRequest) -> Result<Export> {
        let location = parse_location(&request.location)?;
        let format = match proto::ExportFormat::try_from(request.format) {
            Ok(proto::ExportFormat::AtJson) => ExportFormat::AtJson,
            Ok(proto::ExportFormat::CadfJson) => ExportFormat::CadfJson,
            Ok(proto::ExportFormat::Unspecified) => {
                return Err(Error::invalid("missing format: choose EXPORT_FORMAT_AT_JSON or EXPORT_FORMAT_CADF_JSON"));
            }
            Err(_) => return Err(Error::invalid(format!("unknown format {}", request.format))),
        };
        let filter = Filter::from_wire(request.filter.as_ref())?;
        let collector = require_collector(&self.store, location.clone()).await?;
        let range = resolve_range(request.range.as_ref(), collector.event_count)?;
        Ok(Export { location, format, filter, range })
    }

    /// Streams the export in chunks of up to [`EXPORT_CHUNK_LINES`] lines, in chain order.
    pub(crate) async fn export(self, export: Export, out: mpsc::Sender<Result<proto::ExportEventsResponse>>) {
        if let Err(err) = self.export_lines(&export, &out).await {
            self.lifecycle.send(&out, Err(err)).await;
        }
    }

    async fn export_lines(
        &self,
        export: &Export,
        out: &mpsc::Sender<Result<proto::ExportEventsResponse>>,
    ) -> Result<()> {
        let mut next_seq = export.range.from_seq;
        while next_seq <= export.range.to_seq {
            if self.lifecycle.is_stopping() {
                return Err(Error::ShuttingDown);
            }
            let store = self.store.clone();
            let (location, filter, format, from, to) =
                (export.location.clone(), export.filter.clone(), export.format, next_seq, export.range.to_seq);
            let (lines, last) = blocking(move || {
                let records = store.events(&location, from, EXPORT_CHUNK_LINES)?;
                let last = records.last().map(|record| record.location_seq);
                let mut lines = Vec::with_capacity(records.len());
                for record in records.iter().filter(|record| record.location_seq <= to && filter.matches(record)) {
                    lines.push(format.line(record)?);
                }
                Ok((lines, last))
            })
            .await?;
            let Some(last) = last else {
                break;
            };
            for lines in chunk_lines(lines) {
                if !self.lifecycle.send(out, Ok(proto::ExportEventsResponse { lines })).await {
                    return Ok(());
                }
            }
            next_seq = last + 1;
        }
        Ok(())
    }

    /// Returns the event at position `location_seq` of a location.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location or position 0, [`Error::CollectorNotFound`],
    /// [`Error::EventNotFound`] when the chain holds no event there.
    pub(crate) async fn event(&self, location: &str, location_seq: u64) -> Result<proto::StoredEvent> {
        let location = parse_location(location)?;
        if location_seq == 0 {
            return Err(Error::invalid("invalid location_seq 0: positions start at 1"));
        }
        require_collector(&self.store, location.clone()).await?;
        let store = self.store.clone();
        let lookup = location.clone();
        let record = blocking(move || Ok(store.events(&lookup, location_seq, 1)?.into_iter().next())).await?;
        record
            .filter(|record| record.location_seq == location_seq)
            .ok_or_else(|| Error::EventNotFound { location: location.to_string(), location_seq })
    }

    /// Returns a page of the publishers of a location with their gaps, ordered by id; a page
    /// ends early rather than exceed [`MAX_PUBLISHERS_PAGE_BYTES`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location, page size or page token,
    /// [`Error::CollectorNotFound`].
    pub(crate) async fn list_publishers(
        &self,
        request: proto::ListPublishersRequest,
    ) -> Result<proto::ListPublishersResponse> {
        let location = parse_location(&request.location)?;
        let limit = page_size(request.page_size)? as usize;
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(decode_publishers_token(token)?),
        };
        require_collector(&self.store, location.clone()).await?;
        let store = self.store.clone();
        let mut publishers = blocking(move || Ok(store.publishers(&location, after.as_deref(), limit + 1)?)).await?;
        let fitting = fitting_prefix(&publishers, MAX_PUBLISHERS_PAGE_BYTES).min(limit);
        let next_page_token = if publishers.len() > fitting {
            publishers.truncate(fitting);
            publishers.last().map(|last| URL_SAFE_NO_PAD.encode(&last.publisher_id)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(proto::ListPublishersResponse { publishers, next_page_token })
    }

    /// Returns a page of a location's signed checkpoints, newest first, with the damaged
    /// entries of the page beside them.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad location or page size; NOT_FOUND without a collector.
    pub(crate) async fn list_checkpoints(
        &self,
        request: proto::ListCheckpointsRequest,
    ) -> Result<proto::ListCheckpointsResponse> {
        let location = parse_location(&request.location)?;
        let page_size = page_size(request.page_size)?;
        require_collector(&self.store, location.clone()).await?;
        let store = self.store.clone();
        let before = Some(request.before_number).filter(|&number| number > 0);
        let entries = blocking(move || Ok(store.checkpoints(&location, before, page_size as usize)?)).await?;
        // Damaged entries are listed beside the intact ones rather than failing the page, so
        // that an auditor sees both what is left and what is wrong.
        let mut listed = proto::ListCheckpointsResponse::default();
        for entry in entries {
            match entry.checkpoint {
                Ok(checkpoint) => listed.checkpoints.push(checkpoint),
                Err(detail) => listed.damaged.push(proto::DamagedCheckpoint { number: entry.number, detail }),
            }
        }
        Ok(listed)
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

/// An export to stream.
#[derive(Debug)]
pub(crate) struct Export {
    location: Location,
    format: ExportFormat,
    filter: Filter,
    range: CheckRange,
}

/// The line format of an export.
#[derive(Debug, Clone, Copy)]
enum ExportFormat {
    AtJson,
    CadfJson,
}

/// Returns the event of a stored record in its model form, which the export formats need.
///
/// # Errors
/// [`StoreError::Corrupt`] when the record holds no event or one that no longer validates.
pub(crate) fn decode(record: &proto::StoredEvent) -> Result<AuditEvent> {
    let corrupt = |detail: String| {
        Error::Store(StoreError::Corrupt(format!(
            "event at location_seq {} of location `{}` {detail}",
            record.location_seq, record.location
        )))
    };
    let wire = record.event.clone().ok_or_else(|| corrupt("is missing".into()))?;
    AuditEvent::try_from(wire).map_err(|err| corrupt(format!("no longer validates: {err}")))
}

impl ExportFormat {
    fn line(self, record: &proto::StoredEvent) -> Result<String> {
        let event = decode(record)?;
        Ok(match self {
            ExportFormat::AtJson => qtrail_cadf::at_json::to_string(&event),
            ExportFormat::CadfJson => qtrail_cadf::cadf_json::to_string(&event),
        })
    }
}

/// Returns how many of `messages`, from the first, fit in `max_bytes` once encoded (at least one,
/// so that a page always makes progress).
fn fitting_prefix<M: prost::Message>(messages: &[M], max_bytes: usize) -> usize {
    let mut total = 0;
    for (index, message) in messages.iter().enumerate() {
        total += message.encoded_len();
        if total > max_bytes {
            return index.max(1);
        }
    }
    messages.len()
}

/// Splits export lines into messages of at most [`EXPORT_CHUNK_LINES`] lines and about
/// [`EXPORT_CHUNK_BYTES`] bytes (a single longer line gets a message of its own).
fn chunk_lines(lines: Vec<String>) -> Vec<Vec<String>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for line in lines {
        if !chunk.is_empty() && (chunk.len() == EXPORT_CHUNK_LINES || bytes + line.len() > EXPORT_CHUNK_BYTES) {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += line.len();
        chunk.push(line);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// Returns the page size a request asks for: [`DEFAULT_PAGE_SIZE`] for 0.
///
/// # Errors
/// INVALID_ARGUMENT above [`MAX_PAGE_SIZE`].
fn page_size(asked: u32) -> Result<u32> {
    match asked {
        0 => Ok(DEFAULT_PAGE_SIZE),
        size if size > MAX_PAGE_SIZE => {
            Err(Error::invalid(format!("page_size {size} is over the limit of {MAX_PAGE_SIZE}")))
        }
        size => Ok(size),
    }
}

/// Resolves a request range against the newest position: 0 means 1 and the newest.
fn resolve_range(range: Option<&proto::SeqRange>, newest: u64) -> Result<CheckRange> {
    let asked = range.cloned().unwrap_or_default();
    let from_seq = asked.from_seq.max(1);
    if asked.from_seq > newest {
        return Err(Error::invalid(format!(
            "range.from_seq {} is past the newest location_seq {newest}",
            asked.from_seq
        )));
    }
    let to_seq = match asked.to_seq {
        0 => newest,
        to if to > newest => {
            return Err(Error::invalid(format!("range.to_seq {to} is past the newest location_seq {newest}")));
        }
        to => to,
    };
    if asked.to_seq != 0 && from_seq > to_seq {
        return Err(Error::invalid(format!(
            "inverted range: range.from_seq {from_seq} is after range.to_seq {to_seq}"
        )));
    }
    Ok(CheckRange { from_seq, to_seq })
}

/// Returns what a page token is bound to: the location, the filter as sent and the order.
fn fingerprint(location: &Location, filter: Option<&proto::EventFilter>, order: Order) -> [u8; FINGERPRINT_BYTES] {
    let mut hasher = Sha256::new();
    hasher.update(location.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(filter.cloned().unwrap_or_default().encode_to_vec());
    hasher.update([match order {
        Order::NewestFirst => 1,
        Order::OldestFirst => 2,
    }]);
    let digest = hasher.finalize();
    let mut fingerprint = [0; FINGERPRINT_BYTES];
    fingerprint.copy_from_slice(&digest[..FINGERPRINT_BYTES]);
    fingerprint
}

fn encode_page_token(last_seq: u64, fingerprint: &[u8; FINGERPRINT_BYTES]) -> String {
    let mut bytes = Vec::with_capacity(1 + 8 + FINGERPRINT_BYTES);
    bytes.push(PAGE_TOKEN_VERSION);
    bytes.extend_from_slice(&last_seq.to_be_bytes());
    bytes.extend_from_slice(fingerprint);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Returns the publisher id a ListPublishers page token carries: the last one of its page.
fn decode_publishers_token(token: &str) -> Result<String> {
    let invalid = || Error::invalid("invalid page_token: not from a previous page of publishers");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

fn decode_page_token(token: &str, fingerprint: &[u8; FINGERPRINT_BYTES]) -> Result<u64> {
    let invalid = || Error::invalid("invalid page_token: not from a previous page of this location, filter and order");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if bytes.len() != 1 + 8 + FINGERPRINT_BYTES || bytes[0] != PAGE_TOKEN_VERSION || &bytes[9..] != fingerprint {
        return Err(invalid());
    }
    let mut seq = [0; 8];
    seq.copy_from_slice(&bytes[1..9]);
    Ok(u64::from_be_bytes(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_bind_to_the_request() {
        let location: Location = "us-east".parse().unwrap();
        let filter = proto::EventFilter { action: "quantum-computing.job".into(), ..Default::default() };
        let print = fingerprint(&location, Some(&filter), Order::NewestFirst);
        let token = encode_page_token(42, &print);
        assert_eq!(decode_page_token(&token, &print).unwrap(), 42);
        let other_order = fingerprint(&location, Some(&filter), Order::OldestFirst);
        let other_filter = fingerprint(&location, None, Order::NewestFirst);
        let other_location = fingerprint(&"eu-de".parse().unwrap(), Some(&filter), Order::NewestFirst);
        for other in [other_order, other_filter, other_location] {
            assert!(decode_page_token(&token, &other).is_err());
        }
        for garbage in ["x", "!!!", "AAAA", &token[..token.len() - 1]] {
            let err = decode_page_token(garbage, &print).unwrap_err().to_string();
            assert!(err.starts_with("invalid page_token"), "{err}");
        }
    }

    proptest::proptest! {
        /// Whatever a caller sends as a page token, it decodes to a position or is refused with
        /// the one clear message; it never panics.
        #[test]
        fn any_page_token_decodes_or_is_refused(
            text in "\\PC{0,100}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let print = fingerprint(&"us-east".parse().unwrap(), None, Order::NewestFirst);
            for token in [text, URL_SAFE_NO_PAD.encode(&bytes)] {
                if let Err(err) = decode_page_token(&token, &print) {
                    proptest::prop_assert_eq!(
                        err.to_string(),
                        "invalid page_token: not from a previous page of this location, filter and order"
                    );
                }
            }
        }
    }

    #[test]
    fn exports_and_pages_stay_within_their_byte_limits() {
        let lines = |count: usize, len: usize| vec!["x".repeat(len); count];
        let sizes = |chunks: Vec<Vec<String>>| chunks.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(chunk_lines(lines(1001, 10))), [500, 500, 1]);
        assert_eq!(sizes(chunk_lines(lines(5, 400 * 1024))), [2, 2, 1]);
        assert_eq!(sizes(chunk_lines(lines(2, 2 * 1024 * 1024))), [1, 1]);
        assert!(chunk_lines(Vec::new()).is_empty());

        let event = |message_len: usize| proto::StoredEvent {
            event: Some(proto::AuditEvent { message: "m".repeat(message_len), ..Default::default() }),
            ..Default::default()
        };
        let large: Vec<_> = (0..10).map(|_| event(1024 * 1024)).collect();
        assert_eq!(fitting_prefix(&large, MAX_PAGE_BYTES), 2);
        assert_eq!(fitting_prefix(&large[..1], 10), 1);
        let small: Vec<_> = (0..10).map(|_| event(10)).collect();
        assert_eq!(fitting_prefix(&small, MAX_PAGE_BYTES), 10);
    }

    #[test]
    fn ranges_resolve_against_the_newest_position() {
        let range = |from_seq, to_seq| Some(proto::SeqRange { from_seq, to_seq });
        assert_eq!(resolve_range(None, 9).unwrap(), CheckRange { from_seq: 1, to_seq: 9 });
        assert_eq!(resolve_range(range(3, 0).as_ref(), 9).unwrap(), CheckRange { from_seq: 3, to_seq: 9 });
        assert!(resolve_range(range(5, 3).as_ref(), 9).unwrap_err().to_string().contains("range.from_seq"));
        assert!(resolve_range(range(1, 10).as_ref(), 9).unwrap_err().to_string().contains("range.to_seq"));
        assert!(resolve_range(range(10, 0).as_ref(), 9).unwrap_err().to_string().contains("range.from_seq 10"));
        // An empty chain verifies (and exports) as empty.
        assert_eq!(resolve_range(None, 0).unwrap(), CheckRange { from_seq: 1, to_seq: 0 });
    }
}
