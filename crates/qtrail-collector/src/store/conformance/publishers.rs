//! Conformance: publishers — their gaps, the limit on gaps, and the binding of a publisher id
//! to its first credential.

use std::path::Path;

use qtrail_cadf::AuditEvent;
use qtrail_proto::qtrail::audit::v1 as proto;

use super::{Factory, at, batch, location, simple_events};

pub(super) fn gaps(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    let events = simple_events("us-east", 6);
    store.append(vec![batch("us-east", "p", 1, &[(1, &events[0]), (2, &events[1]), (6, &events[2])])], at(10)).unwrap();
    store.append(vec![batch("us-east", "p", 1, &[(4, &events[3])])], at(11)).unwrap();
    let state = store.publisher(&location("us-east"), "p").unwrap().unwrap();
    let gaps: Vec<(u64, u64, u64)> = state.gaps.iter().map(|g| (g.epoch, g.from_seq, g.to_seq)).collect();
    assert_eq!(gaps, vec![(1, 3, 3), (1, 5, 5)]);
    assert_eq!((state.epoch, state.stored_seq, state.event_count), (1, 6, 4));
    assert_eq!(state.last_seen, Some(at(11)));
    // A new epoch restarts the sequence and keeps the old gaps.
    store.append(vec![batch("us-east", "p", 2, &[(2, &events[4])])], at(12)).unwrap();
    store.append(vec![batch("us-east", "a", 1, &[(1, &events[5])])], at(12)).unwrap();
    let publishers = store.publishers(&location("us-east"), None, 10).unwrap();
    assert_eq!(publishers.iter().map(|p| p.publisher_id.as_str()).collect::<Vec<_>>(), ["a", "p"]);
    let gaps: Vec<(u64, u64, u64)> = publishers[1].gaps.iter().map(|g| (g.epoch, g.from_seq, g.to_seq)).collect();
    assert_eq!(gaps, vec![(1, 3, 3), (1, 5, 5), (2, 1, 1)]);
    assert_eq!((publishers[1].epoch, publishers[1].stored_seq), (2, 2));
    assert!(store.publishers(&location("eu-de"), None, 10).unwrap().is_empty());
    // Pages: `limit` of them, then those after the last one.
    let ids = |page: Vec<proto::PublisherState>| page.into_iter().map(|p| p.publisher_id).collect::<Vec<_>>();
    assert_eq!(ids(store.publishers(&location("us-east"), None, 1).unwrap()), ["a"]);
    assert_eq!(ids(store.publishers(&location("us-east"), Some("a"), 1).unwrap()), ["p"]);
    assert!(store.publishers(&location("us-east"), Some("p"), 1).unwrap().is_empty());
    assert_eq!(ids(store.publishers(&location("us-east"), Some("b"), 5).unwrap()), ["p"], "after an id not stored");
}

/// A batch that would leave its publisher more than the limit of gaps is refused whole, the
/// other batches of its group stored; one that opens no gap is still stored.
pub(super) fn gap_limit(factory: Factory<'_>, dir: &Path) {
    use crate::store::publisher::MAX_GAPS_PER_PUBLISHER;

    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    let events = simple_events("us-east", MAX_GAPS_PER_PUBLISHER + 3);
    // Every other seq, 1000 events a batch: one gap each.
    let even: Vec<(u64, &AuditEvent)> =
        events[..MAX_GAPS_PER_PUBLISHER].iter().enumerate().map(|(i, e)| (2 * (i as u64 + 1), e)).collect();
    for chunk in even.chunks(1000) {
        store.append(vec![batch("us-east", "p", 1, chunk)], at(2)).unwrap();
    }
    let full = store.publisher(&location("us-east"), "p").unwrap().unwrap();
    assert_eq!(full.gaps.len(), MAX_GAPS_PER_PUBLISHER);
    let highest = full.stored_seq;

    let [over, other, next] =
        [&events[MAX_GAPS_PER_PUBLISHER], &events[MAX_GAPS_PER_PUBLISHER + 1], &events[MAX_GAPS_PER_PUBLISHER + 2]];
    let outcomes = store
        .append(vec![batch("us-east", "p", 1, &[(highest + 2, over)]), batch("us-east", "q", 1, &[(1, other)])], at(3))
        .unwrap();
    assert!(outcomes[0].too_many_gaps && outcomes[0].accepted == 0, "{:?}", outcomes[0]);
    assert_eq!((outcomes[1].too_many_gaps, outcomes[1].accepted), (false, 1));
    let state = store.publisher(&location("us-east"), "p").unwrap().unwrap();
    assert_eq!(state, full, "nothing of the refused batch recorded");
    assert_eq!(store.last_seq(&location("us-east")).unwrap(), MAX_GAPS_PER_PUBLISHER as u64 + 1);

    // A later batch of the refused publisher in the same group is refused with it, though it
    // alone would open no gap.
    let outcomes = store
        .append(vec![batch("us-east", "p", 1, &[(highest + 2, over)]), batch("us-east", "p", 1, &[(1, next)])], at(3))
        .unwrap();
    assert!(outcomes.iter().all(|outcome| outcome.too_many_gaps && outcome.accepted == 0), "{outcomes:?}");

    let outcome = store.append(vec![batch("us-east", "p", 1, &[(highest + 1, over), (1, next)])], at(4)).unwrap();
    assert_eq!((outcome[0].too_many_gaps, outcome[0].accepted), (false, 2));
    assert_eq!(store.publisher(&location("us-east"), "p").unwrap().unwrap().gaps.len(), MAX_GAPS_PER_PUBLISHER - 1);
}

/// Rejected seqs (rejected before the store, or here for a conflicting id) arrived: they are
/// counted and listed apart from gaps, and a later stored resend of one is stored normally.
pub(super) fn rejected_seqs(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    let events = simple_events("us-east", 5);
    let mut first = batch("us-east", "p", 1, &[(1, &events[0])]);
    first.rejected_seqs = vec![2];
    let mut only_rejected = batch("us-east", "p", 1, &[]);
    only_rejected.rejected_seqs = vec![3];
    // Seq 5 carries the id of seq 1 with other bytes: rejected by the store.
    let mut conflicting = batch("us-east", "p", 1, &[(4, &events[1]), (5, &events[2])]);
    conflicting.events[1].id = events[0].id;
    let outcomes = store.append(vec![first, only_rejected, conflicting], at(2)).unwrap();
    assert_eq!(outcomes.iter().map(|outcome| outcome.accepted).collect::<Vec<_>>(), [1, 0, 1]);
    assert_eq!(outcomes[2].rejected.iter().map(|event| event.seq).collect::<Vec<_>>(), [5]);
    store.append(vec![batch("us-east", "p", 1, &[(6, &events[3])])], at(3)).unwrap();

    let state = store.publisher(&location("us-east"), "p").unwrap().unwrap();
    assert!(state.gaps.is_empty(), "rejected seqs are no gaps: {:?}", state.gaps);
    let rejected: Vec<(u64, u64, u64)> = state.rejected.iter().map(|r| (r.epoch, r.from_seq, r.to_seq)).collect();
    assert_eq!(rejected, vec![(1, 2, 3), (1, 5, 5)]);
    assert_eq!((state.stored_seq, state.event_count, state.rejected_count), (6, 3, 3));

    // The publisher fixed seq 2 and resent it: stored like any other, no gap, still listed.
    let outcome = store.append(vec![batch("us-east", "p", 1, &[(2, &events[4])])], at(4)).unwrap();
    assert_eq!((outcome[0].accepted, outcome[0].rejected.len()), (1, 0));
    let state = store.publisher(&location("us-east"), "p").unwrap().unwrap();
    assert!(state.gaps.is_empty());
    assert_eq!((state.stored_seq, state.event_count, state.rejected_count), (6, 4, 3));
    assert_eq!(state.rejected.len(), 2);
}

/// A publisher id is bound to the credential of its first batch: a batch of another is refused
/// whole and changes nothing, in the same group as accepted ones.
pub(super) fn publisher_binding(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(0)).unwrap();
    let events = simple_events("us-east", 3);
    let outcomes = store.append(vec![batch("us-east", "pub-1", 1, &[(1, &events[0])])], at(1)).unwrap();
    assert_eq!(outcomes[0].accepted, 1);

    let mut intruder = batch("us-east", "pub-1", 1, &[(2, &events[1])]);
    intruder.credential = "token-other".into();
    let honest = batch("us-east", "pub-1", 1, &[(3, &events[2])]);
    let outcomes = store.append(vec![intruder, honest], at(2)).unwrap();
    assert_eq!((outcomes[0].accepted, outcomes[0].rejected.len()), (0, 0));
    assert_eq!(outcomes[0].bound_to.as_deref(), Some("token-pub-1"));
    assert_eq!(outcomes[1].bound_to, None);
    assert_eq!(outcomes[1].accepted, 1, "the bound credential goes on publishing");

    let state = store.publisher(&location("us-east"), "pub-1").unwrap().unwrap();
    assert_eq!((state.credential.as_str(), state.event_count, state.stored_seq), ("token-pub-1", 2, 3));
    let records = store.events(&location("us-east"), 1, 10).unwrap();
    let credentials: Vec<&str> =
        records.iter().map(|record| record.publisher.as_ref().unwrap().credential.as_str()).collect();
    assert_eq!(credentials, ["token-pub-1", "token-pub-1"]);
}
