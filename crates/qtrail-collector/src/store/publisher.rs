//! Publisher bookkeeping shared by every backend: how storing or rejecting an event moves a
//! publisher's highest seq, counts, gaps and rejected ranges, and which credential the publisher
//! id is bound to.
//!
//! A publisher numbers its events densely from 1 within an epoch. Its events *arrive*: stored,
//! or rejected (invalid, another location, a conflicting id; the publisher drops those for
//! good). When seq `s` arrives while the highest arrived is `h < s - 1`, the seqs `h+1..=s-1`
//! become a gap; a later arrival inside a gap shrinks or splits it. A new epoch starts afresh at
//! 0; the gaps of older epochs stay, since they still describe events that never arrived.
//!
//! Rejected seqs are kept apart from gaps, since they did arrive: a count, exact, and the most
//! recent rejected ranges, at most [`MAX_REJECTED_RANGES_PER_PUBLISHER`], the oldest dropped
//! first. The newest range is never dropped, so the highest rejected seq of the current epoch is
//! always known ([`highest_arrived`]). Rejections thus never count against the gap limit, and a
//! publisher whose events are rejected now and then is never wedged by them. A rejected seq
//! stored later (the publisher fixed and resent the event) is stored like any other.
//!
//! Gaps are ranges, but a publisher that skips every other seq still opens one per event, and
//! the whole state is rewritten with every batch and served whole by ListPublishers. So a
//! publisher may hold at most [`MAX_GAPS_PER_PUBLISHER`]: a batch that would open more is
//! refused whole ([`exceeds_gap_limit`]); batches that open none (contiguous events, stored or
//! rejected, and resent events, which close gaps) are still stored.
//!
//! A credential is the name of the stream's token or, when the collector binds publishers to
//! client certificates, that name and the certificate's fingerprint ([`cert_credential`]). A
//! binding to a bare name (made without certificates, or before) is taken over by the first
//! stream of that token with a certificate, and a binding to a name and certificate is honoured
//! by that name alone once the collector no longer checks certificates ([`bound_elsewhere`]).

use prost_types::Timestamp;
use qtrail_proto::qtrail::audit::v1 as proto;

use super::{AppendBatch, AppendOutcome};

/// Most sequence gaps one publisher may have, over all its epochs: a few hundred KiB of state at
/// most, far beyond what a publisher that loses events now and then ever reaches. Rejected
/// events are not gaps and do not count.
pub const MAX_GAPS_PER_PUBLISHER: usize = 10_000;

/// Most rejected seq ranges kept per publisher, over all its epochs: about 20 KiB of state. Past
/// it the oldest range is dropped; the count of rejected events stays exact, and every
/// rejection's reason is in the Ack, which the publisher logs.
pub const MAX_REJECTED_RANGES_PER_PUBLISHER: usize = 1_000;

/// Returns whether the events arriving at `seqs` of `epoch` (stored or rejected: both close and
/// open gaps alike) would leave the publisher with more than [`MAX_GAPS_PER_PUBLISHER`] gaps,
/// and more than it has: a publisher at the limit may still deliver batches that open no gap,
/// and resend events that close some.
pub fn exceeds_gap_limit(state: &proto::PublisherState, epoch: u64, seqs: impl IntoIterator<Item = u64>) -> bool {
    // Only what moves gaps: the newest rejected range holds the highest rejected seq.
    let mut after = proto::PublisherState {
        epoch: state.epoch,
        stored_seq: state.stored_seq,
        gaps: state.gaps.clone(),
        rejected: state.rejected.last().copied().into_iter().collect(),
        ..Default::default()
    };
    if epoch > after.epoch {
        after.epoch = epoch;
        after.stored_seq = 0;
    }
    // Storing and rejecting move gaps alike, so all are taken as stored here.
    for seq in seqs {
        record_stored(&mut after, epoch, seq);
    }
    after.gaps.len() > MAX_GAPS_PER_PUBLISHER && after.gaps.len() > state.gaps.len()
}

/// Returns a fresh state for a publisher seen for the first time; its first batch binds it
/// ([`record_batch`]).
pub fn new_state(publisher_id: &str, epoch: u64) -> proto::PublisherState {
    proto::PublisherState { publisher_id: publisher_id.to_owned(), epoch, ..Default::default() }
}

/// Separates a token name from the client certificate's identity in a credential bound to both.
/// Token names may not contain `@cert:` ([`crate::tokens`]), and the fingerprint after it has a
/// fixed length, so a credential reads back into one name and one certificate only.
pub const CERT_SEPARATOR: &str = "@cert:sha256:";

/// Returns the credential of a stream whose token is named `token_name` and whose client
/// certificate (the leaf, DER) is `certificate`: `runtime-us-east@cert:sha256:<64 hex digits>`.
/// The SHA-256 fingerprint names one certificate without trusting anything written in it, and
/// is no secret (it is sent in every handshake).
pub fn cert_credential(token_name: &str, certificate: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{token_name}{CERT_SEPARATOR}{}", hex::encode(sha2::Sha256::digest(certificate)))
}

/// Splits a credential into its token name and, when bound to a certificate, its fingerprint.
fn split_credential(credential: &str) -> (&str, Option<&str>) {
    match credential.rsplit_once(CERT_SEPARATOR) {
        Some((name, fingerprint)) => (name, Some(fingerprint)),
        None => (credential, None),
    }
}

/// Returns the credential the publisher is bound to when a stream of `credential` may not
/// publish under its id: another token name, or the same name with another client certificate.
/// A state from before binding (none recorded) binds to the first credential that delivers a
/// batch; one bound to a bare token name accepts that name with any certificate (the first
/// batch then binds it to the certificate, see [`record_batch`]); one bound to a name and
/// certificate accepts the bare name, which only a collector that does not bind publishers to
/// certificates sends.
pub fn bound_elsewhere<'a>(state: &'a proto::PublisherState, credential: &str) -> Option<&'a str> {
    let bound = state.credential.as_str();
    if bound.is_empty() || bound == credential {
        return None;
    }
    let ((bound_name, bound_cert), (name, cert)) = (split_credential(bound), split_credential(credential));
    let same = bound_name == name && (bound_cert.is_none() || cert.is_none());
    (!same).then_some(bound)
}

/// Adds the batches of one group commit in order with `add`, except that once a publisher's
/// batch is refused for its gaps ([`AppendOutcome::too_many_gaps`]), its later batches of the
/// group are refused too without being added: none may be stored past the hole the refused one
/// leaves. Every backend's `append` goes through this.
///
/// # Errors
/// The first error of `add`, which fails the whole group.
pub(crate) fn add_in_order<E>(
    batches: Vec<AppendBatch>,
    mut add: impl FnMut(AppendBatch) -> Result<AppendOutcome, E>,
) -> Result<Vec<AppendOutcome>, E> {
    let mut outcomes = Vec::with_capacity(batches.len());
    let mut refused: Vec<(qtrail_cadf::Location, String)> = Vec::new();
    for batch in batches {
        if refused.iter().any(|(location, id)| *location == batch.location && *id == batch.publisher_id) {
            outcomes.push(AppendOutcome { too_many_gaps: true, ..AppendOutcome::default() });
            continue;
        }
        let key = (batch.location.clone(), batch.publisher_id.clone());
        let outcome = add(batch)?;
        if outcome.too_many_gaps {
            refused.push(key);
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// What every backend does first with `batch`, in the transaction that stores it: refuses it
/// whole (the outcome to answer) when its publisher id is bound to another credential or it
/// would leave too many gaps, before anything is written; otherwise records the batch and the
/// seqs the collector rejected before the batch reached the store.
pub fn admit(state: &mut proto::PublisherState, batch: &AppendBatch, now: Timestamp) -> Option<AppendOutcome> {
    // Refused whole rather than rejected: a publisher drops rejected events for good.
    if let Some(bound) = bound_elsewhere(state, &batch.credential) {
        return Some(AppendOutcome { bound_to: Some(bound.to_owned()), ..AppendOutcome::default() });
    }
    let arrived = batch.events.iter().map(|event| event.seq).chain(batch.rejected_seqs.iter().copied());
    if exceeds_gap_limit(state, batch.epoch, arrived) {
        return Some(AppendOutcome { too_many_gaps: true, ..AppendOutcome::default() });
    }
    record_batch(state, batch.epoch, now, &batch.credential);
    for &seq in &batch.rejected_seqs {
        record_rejected(state, batch.epoch, seq);
    }
    None
}

/// Records that the publisher delivered a batch in `epoch` at `now` with `credential`, which
/// binds a publisher not bound yet, binds one bound to the bare token name of `credential` to
/// its certificate as well, and takes one bound to a name and certificate back to the bare name
/// when that name delivers without one. A newer epoch restarts the sequence; an older one (a stale
/// process) leaves the state's epoch alone.
pub fn record_batch(state: &mut proto::PublisherState, epoch: u64, now: Timestamp, credential: &str) {
    let (bound_name, bound_cert) = split_credential(&state.credential);
    let (name, cert) = split_credential(credential);
    // A bare binding takes the first certificate; a certificate binding delivered to by its
    // bare name (a collector that no longer binds certificates) goes back to the bare name, so
    // a renewed certificate can bind the id once the flag is on again.
    let rebind = match (bound_cert, cert) {
        (None, Some(_)) => true,
        (Some(_), None) => bound_name == name,
        _ => false,
    };
    if state.credential.is_empty() || rebind {
        state.credential = credential.to_owned();
    }
    if epoch > state.epoch {
        state.epoch = epoch;
        state.stored_seq = 0;
    }
    state.last_seen = Some(now);
}

/// Records that the event at `seq` of `epoch` was stored.
pub fn record_stored(state: &mut proto::PublisherState, epoch: u64, seq: u64) {
    state.event_count += 1;
    if epoch != state.epoch {
        // An event of an older epoch: counted, but that sequence is no longer tracked.
        return;
    }
    record_arrived(state, epoch, seq);
    state.stored_seq = state.stored_seq.max(seq);
}

/// Records that the event at `seq` of `epoch` was rejected: counted, its seq no gap and listed
/// among the rejected ranges (seq 0, which no event has, only counted).
pub fn record_rejected(state: &mut proto::PublisherState, epoch: u64, seq: u64) {
    state.rejected_count += 1;
    if epoch != state.epoch || seq == 0 {
        // As for stored events, an older epoch's sequence is no longer tracked.
        return;
    }
    record_arrived(state, epoch, seq);
    add_rejected(&mut state.rejected, epoch, seq);
}

/// Returns the highest seq of the current epoch that arrived, stored or rejected; 0 for none.
pub fn highest_arrived(state: &proto::PublisherState) -> u64 {
    let rejected = state.rejected.last().filter(|range| range.epoch == state.epoch).map_or(0, |range| range.to_seq);
    state.stored_seq.max(rejected)
}

/// Moves the gaps of the current epoch `epoch` for an event arriving at `seq`: past the highest
/// arrived, it opens a gap before it; below, it closes its place in a gap, if any.
fn record_arrived(state: &mut proto::PublisherState, epoch: u64, seq: u64) {
    let highest = highest_arrived(state);
    if seq > highest {
        if seq > highest + 1 {
            state.gaps.push(proto::SequenceGap { epoch, from_seq: highest + 1, to_seq: seq - 1 });
        }
        return;
    }
    let Some(index) = state.gaps.iter().position(|gap| gap.epoch == epoch && gap.from_seq <= seq && seq <= gap.to_seq)
    else {
        // Not in a gap: the same seq again (under another event id, or rejected then stored).
        return;
    };
    let gap = state.gaps[index];
    match (seq == gap.from_seq, seq == gap.to_seq) {
        (true, true) => {
            state.gaps.remove(index);
        }
        (true, false) => state.gaps[index].from_seq += 1,
        (false, true) => state.gaps[index].to_seq -= 1,
        (false, false) => {
            state.gaps[index].to_seq = seq - 1;
            state.gaps.insert(index + 1, proto::SequenceGap { epoch, from_seq: seq + 1, to_seq: gap.to_seq });
        }
    }
}

/// Adds `seq` of `epoch` to `ranges`, ordered by (epoch, seq), merging it with the ranges it
/// touches, then drops the oldest ranges past [`MAX_REJECTED_RANGES_PER_PUBLISHER`].
fn add_rejected(ranges: &mut Vec<proto::RejectedRange>, epoch: u64, seq: u64) {
    // The first range that ends at or after `seq - 1` in this epoch: the only one `seq` can
    // touch or fall into from below.
    let index = ranges.partition_point(|range| (range.epoch, range.to_seq.saturating_add(1)) < (epoch, seq));
    match ranges.get_mut(index) {
        Some(range) if range.epoch == epoch && range.from_seq <= seq.saturating_add(1) => {
            range.from_seq = range.from_seq.min(seq);
            range.to_seq = range.to_seq.max(seq);
            // Filling the hole between two ranges joins them.
            if let Some(next) = ranges.get(index + 1).copied()
                && next.epoch == epoch
                && next.from_seq <= ranges[index].to_seq.saturating_add(1)
            {
                ranges[index].to_seq = ranges[index].to_seq.max(next.to_seq);
                ranges.remove(index + 1);
            }
        }
        _ => ranges.insert(index, proto::RejectedRange { epoch, from_seq: seq, to_seq: seq }),
    }
    if ranges.len() > MAX_REJECTED_RANGES_PER_PUBLISHER {
        let excess = ranges.len() - MAX_REJECTED_RANGES_PER_PUBLISHER;
        ranges.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(state: &proto::PublisherState) -> Vec<(u64, u64, u64)> {
        state.gaps.iter().map(|gap| (gap.epoch, gap.from_seq, gap.to_seq)).collect()
    }

    #[test]
    fn gaps_open_shrink_and_split() {
        let mut state = new_state("p", 1);
        for seq in [1, 2, 8] {
            record_stored(&mut state, 1, seq);
        }
        assert_eq!(gaps(&state), vec![(1, 3, 7)]);
        record_stored(&mut state, 1, 3);
        record_stored(&mut state, 1, 7);
        assert_eq!(gaps(&state), vec![(1, 4, 6)]);
        record_stored(&mut state, 1, 5);
        assert_eq!(gaps(&state), vec![(1, 4, 4), (1, 6, 6)]);
        record_stored(&mut state, 1, 4);
        record_stored(&mut state, 1, 6);
        assert!(state.gaps.is_empty());
        assert_eq!((state.stored_seq, state.event_count), (8, 8));
    }

    #[test]
    fn gaps_past_the_limit_are_refused_but_batches_without_new_gaps_are_not() {
        let mut state = new_state("p", 1);
        // Every other seq: one gap each.
        for seq in (2..=2 * MAX_GAPS_PER_PUBLISHER as u64).step_by(2) {
            record_stored(&mut state, 1, seq);
        }
        assert_eq!(state.gaps.len(), MAX_GAPS_PER_PUBLISHER);
        let highest = state.stored_seq;
        assert!(exceeds_gap_limit(&state, 1, [highest + 2]), "one more gap");
        assert!(exceeds_gap_limit(&state, 2, [2]), "a new epoch's first gap counts too");
        assert!(!exceeds_gap_limit(&state, 1, [highest + 1, highest + 2]), "contiguous");
        assert!(!exceeds_gap_limit(&state, 1, [1, highest + 1]), "closing one");
        assert!(!exceeds_gap_limit(&state, 1, [1, highest + 2]), "closing one, opening one");
    }

    fn rejected(state: &proto::PublisherState) -> Vec<(u64, u64, u64)> {
        state.rejected.iter().map(|range| (range.epoch, range.from_seq, range.to_seq)).collect()
    }

    #[test]
    fn rejected_seqs_arrive_merge_and_are_no_gaps() {
        let mut state = new_state("p", 1);
        record_stored(&mut state, 1, 1);
        record_rejected(&mut state, 1, 2);
        record_rejected(&mut state, 1, 4);
        assert_eq!(gaps(&state), vec![(1, 3, 3)], "only 3 never arrived");
        assert_eq!((state.stored_seq, highest_arrived(&state)), (1, 4));
        // The seq between two ranges joins them; it closes the gap too.
        record_rejected(&mut state, 1, 3);
        assert_eq!(rejected(&state), vec![(1, 2, 4)]);
        assert!(state.gaps.is_empty());
        // The next stored seq follows the highest arrived, rejected or not: no gap.
        record_stored(&mut state, 1, 5);
        assert!(state.gaps.is_empty());
        // A rejected seq stored later (fixed and resent): stored like any other, still listed.
        record_stored(&mut state, 1, 3);
        assert_eq!((state.event_count, state.rejected_count, state.stored_seq), (3, 3, 5));
        assert!(state.gaps.is_empty());
        assert_eq!(rejected(&state), vec![(1, 2, 4)]);
        // Seq 0 (no event has it) and older epochs are counted only.
        record_rejected(&mut state, 1, 0);
        record_batch(&mut state, 2, Timestamp::default(), "runtime");
        record_rejected(&mut state, 1, 9);
        assert_eq!(state.rejected_count, 5);
        assert_eq!(rejected(&state), vec![(1, 2, 4)]);
        // A new epoch starts afresh: epoch 1's rejected 4 says nothing of epoch 2's seq.
        assert_eq!(highest_arrived(&state), 0);
        record_rejected(&mut state, 2, 2);
        assert_eq!(gaps(&state), vec![(2, 1, 1)]);
        assert_eq!(rejected(&state), vec![(1, 2, 4), (2, 2, 2)]);
    }

    #[test]
    fn rejections_past_every_limit_keep_the_count_and_never_wedge() {
        let mut state = new_state("p", 1);
        // Each rejection between two stored events: each would have been a gap of its own.
        let rejections = MAX_GAPS_PER_PUBLISHER as u64 + 500;
        for n in 0..rejections {
            record_stored(&mut state, 1, 2 * n + 1);
            record_rejected(&mut state, 1, 2 * n + 2);
        }
        assert!(state.gaps.is_empty());
        assert_eq!(state.rejected_count, rejections);
        assert_eq!(state.rejected.len(), MAX_REJECTED_RANGES_PER_PUBLISHER);
        // The oldest ranges went, the newest stayed.
        assert_eq!(state.rejected.last().map(|range| range.to_seq), Some(2 * rejections));
        assert_eq!(state.rejected[0].from_seq, 2 * (rejections - MAX_REJECTED_RANGES_PER_PUBLISHER as u64) + 2);
        let next = highest_arrived(&state) + 1;
        assert!(!exceeds_gap_limit(&state, 1, [next, next + 1]));
        // Rejected seqs in a batch close gaps like stored ones, and open them past the highest.
        let mut gapped = new_state("p", 1);
        record_stored(&mut gapped, 1, 3);
        assert!(!exceeds_gap_limit(&gapped, 1, [1, 2]));
    }

    #[test]
    fn a_certificate_binding_tells_certificates_apart_and_takes_over_a_bare_name() {
        let first = cert_credential("runtime", b"first certificate");
        let second = cert_credential("runtime", b"second certificate");
        assert!(first.starts_with("runtime@cert:sha256:"));
        assert_eq!(first.len(), "runtime@cert:sha256:".len() + 64);
        assert_ne!(first, second);

        // Bound to a bare name (before the flag): the first certificate of that name takes it.
        let mut state = new_state("p", 1);
        record_batch(&mut state, 1, Timestamp::default(), "runtime");
        assert_eq!(bound_elsewhere(&state, &first), None);
        assert_eq!(bound_elsewhere(&state, &cert_credential("other", b"first certificate")), Some("runtime"));
        record_batch(&mut state, 1, Timestamp::default(), &first);
        assert_eq!(state.credential, first);

        // Bound to a name and certificate: another certificate or name is refused.
        assert_eq!(bound_elsewhere(&state, &first), None);
        assert_eq!(bound_elsewhere(&state, &second), Some(first.as_str()));
        assert_eq!(bound_elsewhere(&state, &cert_credential("other", b"first certificate")), Some(first.as_str()));
        assert_eq!(bound_elsewhere(&state, "other"), Some(first.as_str()));
        // Without certificate binding, the name alone is honoured and the binding goes back to
        // it, so a renewed certificate binds the id when the flag is on again.
        assert_eq!(bound_elsewhere(&state, "runtime"), None);
        record_batch(&mut state, 1, Timestamp::default(), "runtime");
        assert_eq!(state.credential, "runtime");
        record_batch(&mut state, 1, Timestamp::default(), &second);
        assert_eq!(state.credential, second);
        assert_eq!(bound_elsewhere(&state, &first), Some(second.as_str()));
    }

    #[test]
    fn a_new_epoch_starts_afresh_and_keeps_old_gaps() {
        let mut state = new_state("p", 1);
        record_stored(&mut state, 1, 2);
        record_batch(&mut state, 2, Timestamp::default(), "runtime");
        assert_eq!((state.epoch, state.stored_seq), (2, 0));
        record_stored(&mut state, 2, 1);
        record_stored(&mut state, 2, 3);
        assert_eq!(gaps(&state), vec![(1, 1, 1), (2, 2, 2)]);
        // A stale process of epoch 1 does not move epoch 2's sequence.
        record_batch(&mut state, 1, Timestamp::default(), "runtime");
        record_stored(&mut state, 1, 1);
        assert_eq!((state.epoch, state.stored_seq, state.event_count), (2, 3, 4));
        assert_eq!(gaps(&state), vec![(1, 1, 1), (2, 2, 2)]);
    }
}
