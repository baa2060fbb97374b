//! The auditor's read side (`EventQuery`): pages of events ([`page`]), tails ([`tail`]), chain
//! checks, exports ([`export`]), single events, publisher state and checkpoints, and the
//! console's counts over time ([`timeline`]).

mod export;
mod inclusion;
mod page;
mod tail;
mod timeline;

pub(crate) use export::decode;
pub use export::{EXPORT_CHUNK_BYTES, EXPORT_CHUNK_LINES};
pub use page::{DEFAULT_PAGE_SIZE, MAX_PAGE_BYTES, MAX_PAGE_SIZE, MAX_PUBLISHERS_PAGE_BYTES};
pub(crate) use timeline::Timeline;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::NoteVerifier;

use crate::chain::{self, CheckRange};
use crate::error::{Error, Result};
use crate::fanout::Fanout;
use crate::filter::{Filter, Order};
use crate::ingest::blocking;
use crate::lifecycle::Lifecycle;
use crate::registry::{parse_location, require_collector};
use crate::scope::Scope;
use crate::store::{EventStore, StoreError, TreeReader};
use page::{decode_page_token, decode_publishers_token, encode_page_token, fingerprint, fitting_prefix, page_size};

/// The read side over a store and the stream of committed records.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    store: Arc<dyn EventStore>,
    committed: Fanout,
    lifecycle: Lifecycle,
    /// How long a tail waits for room in its stream before it ends RESOURCE_EXHAUSTED.
    tail_stall: Duration,
    /// The origin prefix and public keys (current and previous) of the checkpoint notes, when
    /// this collector signs them: verification then checks each note's signature before it
    /// trusts its tree head.
    note_key: Option<(String, Vec<[u8; 32]>)>,
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
        note_key: Option<(String, Vec<[u8; 32]>)>,
    ) -> Self {
        Self { store, committed, lifecycle, tail_stall, note_key }
    }

    /// Returns one page of the events `scope` admits.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location, filter, order, page size or page token;
    /// [`Error::CollectorNotFound`] for a location without collector.
    pub(crate) async fn query_events(
        &self,
        request: proto::QueryEventsRequest,
        scope: &Scope,
    ) -> Result<proto::QueryEventsResponse> {
        let location = parse_location(&request.location)?;
        let filter = Filter::from_wire(request.filter.as_ref())?.within(scope);
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

    /// Verifies the chain of a location over a range.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location or range, [`Error::CollectorNotFound`].
    pub(crate) async fn verify_chain(&self, request: proto::VerifyChainRequest) -> Result<proto::VerifyChainResponse> {
        let location = parse_location(&request.location)?;
        let collector = require_collector(&self.store, location.clone()).await?;
        let store = self.store.clone();
        let verifiers = self.note_verifiers(&location)?;
        blocking(move || {
            // The newest position is the collector row's count or the last stored key, whichever
            // is higher, so that removing the newest records is noticed.
            let newest = collector.event_count.max(store.last_seq(&location)?);
            let range = resolve_range(request.range.as_ref(), newest)?;
            Ok(chain::verify_with_tree(store.as_ref(), &location, range, newest, verifiers.as_deref())?)
        })
        .await
    }

    /// Returns the verifiers of the checkpoint notes of `location` (its log's origin under
    /// each key the collector signs or signed with), `None` when the collector signs nothing.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the location cannot name a log.
    fn note_verifiers(&self, location: &Location) -> Result<Option<Vec<NoteVerifier>>> {
        let Some((prefix, keys)) = &self.note_key else {
            return Ok(None);
        };
        let origin = crate::checkpointer::log_origin(prefix, location.as_str());
        let verifiers = keys.iter().map(|public| NoteVerifier::new(&origin, *public));
        let verifiers = verifiers.collect::<std::result::Result<Vec<_>, _>>();
        Ok(Some(
            verifiers
                .map_err(|err| Error::InvalidArgument(format!("location `{location}` cannot name a log: {err}")))?,
        ))
    }

    /// Returns the event at position `location_seq` of a location.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location or position 0, [`Error::CollectorNotFound`],
    /// [`Error::EventNotFound`] when the chain holds no event there, or one `scope` does not
    /// admit (as if absent).
    pub(crate) async fn event(&self, location: &str, location_seq: u64, scope: &Scope) -> Result<proto::StoredEvent> {
        let location = parse_location(location)?;
        if location_seq == 0 {
            return Err(Error::invalid("invalid location_seq 0: positions start at 1"));
        }
        require_collector(&self.store, location.clone()).await?;
        let store = self.store.clone();
        let lookup = location.clone();
        let record = blocking(move || Ok(store.events(&lookup, location_seq, 1)?.into_iter().next())).await?;
        record
            .filter(|record| record.location_seq == location_seq && scope.admits_record(record))
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

    /// Returns the newest signed tree head of a location and the consistency proof from
    /// `old_size` to it.
    ///
    /// The proof leads to the tree size the returned note states, which its signature covers,
    /// never to the checkpoint's `tree_size` field, which nothing covers: a client that checks
    /// the note checks the proof against exactly the head it was made for.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location, an `old_size` of 0 or one past the newest
    /// signed tree head's size, [`Error::CollectorNotFound`], [`Error::FailedPrecondition`] when
    /// no tree head is signed yet; a corrupt store when the newest note states no tree head of
    /// this log.
    pub(crate) async fn consistency_proof(
        &self,
        request: proto::GetConsistencyProofRequest,
    ) -> Result<proto::GetConsistencyProofResponse> {
        let location = parse_location(&request.location)?;
        if request.old_size == 0 {
            return Err(Error::invalid("old_size must be at least 1"));
        }
        require_collector(&self.store, location.clone()).await?;
        let store = self.store.clone();
        let verifiers = self.note_verifiers(&location)?;
        blocking(move || {
            let newest = store.checkpoints(&location, None, 1)?.into_iter().next();
            let Some(head) = newest.as_ref().and_then(|entry| entry.intact()).filter(|head| !head.note.is_empty())
            else {
                return Err(Error::FailedPrecondition(format!("location `{location}` has no signed tree head yet")));
            };
            let size = crate::merkle::note_head(&head.note, &location, verifiers.as_deref())
                .map_err(|why| {
                    StoreError::Corrupt(format!(
                        "checkpoint {} of `{location}` has a bad tree head note: {why}",
                        head.number
                    ))
                })?
                .size;
            if request.old_size > size {
                return Err(Error::invalid(format!(
                    "old_size {} is past the newest signed tree head, of size {size}",
                    request.old_size
                )));
            }
            let reader = TreeReader { store: store.as_ref(), location: &location };
            let proof = qtrail_tlog::consistency_proof(request.old_size, size, &reader)
                .map_err(|err| crate::store::tree_error(location.as_str(), &err))?;
            Ok(proto::GetConsistencyProofResponse {
                note: head.note.clone(),
                tree_size: size,
                proof: proof.into_iter().map(|hash| hash.to_vec()).collect(),
            })
        })
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

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
