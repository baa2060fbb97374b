//! `GetInclusionProof`: the RFC 6962 inclusion proof of one event in a signed tree head, with
//! that head's note and the event's canonical bytes, which together prove the event offline
//! (`qtrail events prove` writes them as a C2SP tlog-proof).
//!
//! A proof always refers to a signed checkpoint note: an event stored after the newest one is
//! refused FAILED_PRECONDITION until the next checkpoint covers it, rather than signed on
//! demand, so that only the checkpointer holds the key and heads stay one per interval.
//!
//! A caller scoped to some accounts proves only the events its scope admits: any other is
//! NOT_FOUND exactly as a missing one, so that a proof request cannot probe which positions
//! hold another account's events.

use qtrail_cadf::Location;
use qtrail_cadf::validation::MAX_ID_BYTES;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::get_inclusion_proof_request::Leaf;
use qtrail_tlog::{Hash, inclusion_proof, leaf_hash, verify_inclusion};
use uuid::Uuid;

use super::Query;
use crate::error::{Error, Result};
use crate::filter::{Filter, Order};
use crate::ingest::blocking;
use crate::registry::{parse_location, require_collector};
use crate::scope::Scope;
use crate::store::{EventStore, StoreError, TreeReader, canonical_of, tree_error};

/// Checkpoints read per step while looking for a tree size.
const CHECKPOINT_PAGE: usize = 1000;

/// Which event a request proves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    /// By leaf index (location_seq − 1).
    Index(u64),
    /// By event id.
    EventId(Uuid),
    /// The oldest event with this correlation id.
    Correlation(String),
}

impl Selector {
    /// Checks the request's `leaf` oneof.
    fn from_wire(leaf: Option<Leaf>) -> Result<Self> {
        match leaf {
            None => Err(Error::invalid("one of leaf_index, event_id or correlation_id is required")),
            Some(Leaf::LeafIndex(index)) if index == u64::MAX => {
                Err(Error::invalid(format!("leaf_index {index} is past any tree")))
            }
            Some(Leaf::LeafIndex(index)) => Ok(Selector::Index(index)),
            // The value is not quoted back: it may be anything, control characters included.
            Some(Leaf::EventId(id)) => {
                Uuid::parse_str(&id).map(Selector::EventId).map_err(|_| Error::invalid("event_id is not a uuid"))
            }
            Some(Leaf::CorrelationId(id)) if id.is_empty() => Err(Error::invalid("correlation_id is empty")),
            Some(Leaf::CorrelationId(id)) if id.len() > MAX_ID_BYTES => {
                Err(Error::invalid(format!("correlation_id is longer than {MAX_ID_BYTES} bytes")))
            }
            Some(Leaf::CorrelationId(id)) => Ok(Selector::Correlation(id)),
        }
    }
}

impl Query {
    /// Returns the inclusion proof of the event a request selects in the signed tree head it
    /// names (0: the newest), if `scope` admits that event.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad location or selector, or a leaf outside the tree size asked
    /// for; NOT_FOUND without a collector, for no such event or no checkpoint of that size;
    /// FAILED_PRECONDITION when no checkpoint covers the event yet; DATA_LOSS when the stored
    /// tree does not prove it.
    pub(crate) async fn inclusion_proof(
        &self,
        request: proto::GetInclusionProofRequest,
        scope: &Scope,
    ) -> Result<proto::GetInclusionProofResponse> {
        let location = parse_location(&request.location)?;
        let selector = Selector::from_wire(request.leaf)?;
        require_collector(&self.store, location.clone()).await?;
        let store = self.store.clone();
        let scope = scope.clone();
        blocking(move || prove(store.as_ref(), &location, &selector, request.tree_size, &scope)).await
    }
}

/// Proves the selected event in the signed head of `tree_size` leaves (0: the newest).
fn prove(
    store: &dyn EventStore,
    location: &Location,
    selector: &Selector,
    tree_size: u64,
    scope: &Scope,
) -> Result<proto::GetInclusionProofResponse> {
    let head = signed_head(store, location, tree_size)?;
    let seq = position(store, location, selector, scope)?;
    let index = seq - 1;
    if index >= head.tree_size {
        return Err(uncovered(store, location, index, tree_size, head.tree_size)?);
    }
    let record = store.events(location, seq, 1)?.into_iter().find(|record| record.location_seq == seq);
    let Some(record) = record else {
        // Pruned by retention: its archive and the tree's stored hashes prove it (see the README).
        if seq <= store.pruned_through(location)? {
            return Err(Error::FailedPrecondition(format!("position {seq} was pruned (archived)")));
        }
        return Err(Error::EventNotFound { location: location.to_string(), location_seq: seq });
    };
    let corrupt = |detail: String| Error::Store(StoreError::Corrupt(format!("location `{location}`: {detail}")));
    let leaf = canonical_of(&record).ok_or_else(|| corrupt(format!("the event at leaf_index {index} is not valid")))?;
    let reader = TreeReader { store, location };
    let proof = inclusion_proof(index, head.tree_size, &reader).map_err(|err| tree_error(location.as_str(), &err))?;
    // Checked before it leaves: a stored tree that no longer fits its signed root is lost data,
    // which an auditor must hear about as such, not as a proof that fails on their side.
    let root =
        Hash::try_from(head.root.as_slice()).map_err(|_| corrupt(format!("checkpoint {} has no root", head.number)))?;
    verify_inclusion(index, head.tree_size, &leaf_hash(&leaf), &proof, &root).map_err(|_| {
        corrupt(format!("the stored tree does not prove leaf_index {index} in checkpoint {}", head.number))
    })?;
    Ok(proto::GetInclusionProofResponse {
        leaf_index: index,
        tree_size: head.tree_size,
        proof: proof.iter().map(|hash| hash.to_vec()).collect(),
        note: head.note,
        leaf,
    })
}

/// Returns the position (location_seq) of the selected event, one `scope` admits.
fn position(store: &dyn EventStore, location: &Location, selector: &Selector, scope: &Scope) -> Result<u64> {
    let not_found = |what: String| Error::LeafNotFound(format!("no event with {what} in location `{location}`"));
    let seq = match selector {
        Selector::Index(index) => index + 1,
        Selector::EventId(id) => {
            store.seq_of_event_id(location, *id)?.ok_or_else(|| not_found(format!("event_id {id}")))?
        }
        Selector::Correlation(id) => {
            let filter = Filter { correlation_id: Some(id.clone()), scope: scope.clone(), ..Filter::default() };
            let oldest = store.query(location, &filter, Order::OldestFirst, None, 1)?;
            return oldest
                .first()
                .map(|record| record.location_seq)
                .ok_or_else(|| not_found("that correlation_id".to_owned()));
        }
    };
    if !scope.is_all() {
        let admitted = store.events(location, seq, 1)?.iter().any(|r| r.location_seq == seq && scope.admits_record(r));
        if !admitted {
            // Worded as the answer for a position or id that holds nothing.
            return Err(match selector {
                Selector::EventId(id) => not_found(format!("event_id {id}")),
                _ => Error::LeafNotFound(format!("no event at leaf_index {} of location `{location}`", seq - 1)),
            });
        }
    }
    Ok(seq)
}

/// Explains why leaf `index` is outside the head of `size` leaves found for `asked` (0: the
/// newest): not stored at all, stored after the newest head, or outside the head asked for.
fn uncovered(store: &dyn EventStore, location: &Location, index: u64, asked: u64, size: u64) -> Result<Error> {
    if index >= store.last_seq(location)? {
        return Ok(Error::LeafNotFound(format!("no event at leaf_index {index} of location `{location}`")));
    }
    if asked == 0 {
        return Ok(Error::FailedPrecondition(format!(
            "the event at leaf_index {index} is not yet covered by a checkpoint (the newest has {size} leaves); \
             retry after the next checkpoint"
        )));
    }
    Ok(Error::invalid(format!("leaf_index {index} is outside the tree of tree_size {size}")))
}

/// Returns the signed checkpoint of `tree_size` leaves (0: the newest), with its note.
/// Checkpoints are read back from the newest, whose sizes never grow going back, until the size
/// is passed.
fn signed_head(store: &dyn EventStore, location: &Location, tree_size: u64) -> Result<proto::Checkpoint> {
    let mut before = None;
    let mut newest_size = None;
    loop {
        let page = store.checkpoints(location, before, CHECKPOINT_PAGE)?;
        let Some(last) = page.last() else { break };
        before = Some(last.number);
        for head in page.iter().filter_map(|entry| entry.intact()).filter(|head| !head.note.is_empty()) {
            let newest = *newest_size.get_or_insert(head.tree_size);
            if tree_size == 0 || head.tree_size == tree_size {
                return Ok(head.clone());
            }
            if head.tree_size < tree_size {
                return Err(missing_size(location, tree_size, newest));
            }
        }
        if page.len() < CHECKPOINT_PAGE {
            break;
        }
    }
    match newest_size {
        None => Err(Error::FailedPrecondition(format!(
            "location `{location}` has no signed tree head yet; retry after the next checkpoint"
        ))),
        Some(newest) => Err(missing_size(location, tree_size, newest)),
    }
}

/// Explains a tree size no checkpoint has: past the newest (retry later) or skipped.
fn missing_size(location: &Location, tree_size: u64, newest: u64) -> Error {
    if tree_size > newest {
        return Error::FailedPrecondition(format!(
            "tree_size {tree_size} is past the newest signed tree head of location `{location}` ({newest} leaves); \
             retry after the next checkpoint"
        ));
    }
    Error::LeafNotFound(format!("no signed checkpoint of location `{location}` has tree_size {tree_size}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_checked_before_any_read() {
        let invalid = |leaf| match Selector::from_wire(leaf) {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(invalid(None).contains("required"));
        assert!(invalid(Some(Leaf::EventId("nope\u{7}".into()))).contains("not a uuid"));
        assert!(invalid(Some(Leaf::CorrelationId(String::new()))).contains("empty"));
        assert!(invalid(Some(Leaf::CorrelationId("x".repeat(MAX_ID_BYTES + 1)))).contains("longer"));
        assert!(invalid(Some(Leaf::LeafIndex(u64::MAX))).contains("past any tree"));
        let id = Uuid::now_v7();
        assert_eq!(Selector::from_wire(Some(Leaf::EventId(id.to_string()))).unwrap(), Selector::EventId(id));
        assert_eq!(Selector::from_wire(Some(Leaf::LeafIndex(0))).unwrap(), Selector::Index(0));
    }
}
