//! The receipt task: for the acknowledged events waiting for a receipt, follows the
//! collector's newest checkpoint (each one checked to extend the last accepted), asks for the
//! inclusion proof of every waiting event it covers, verifies it and stores the receipt.
//! Failures of the collector to answer are retried with backoff; failures of a proof are alarms.
//!
//! The waiting events live in the receipt store (so they outlive a restart); the task keeps a
//! window of them in memory, refilled from the store each round. An event the collector keeps
//! refusing to prove (NOT_FOUND, INVALID_ARGUMENT, DATA_LOSS) is retried a few rounds, then
//! counted as a proof failure and dropped, so that it never holds up the events behind it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::event_query_client::EventQueryClient;
use qtrail_tlog::Hash;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tracing::{debug, warn};

use super::store::ReceiptStore;
use super::verify::{Acked, Head, Keys, ReceiptFailure};
use super::{ReceiptStats, blocking};
use crate::backoff::Backoff;
use crate::publisher::Endpoints;

/// Most inclusion proofs asked for in one round, so that a large backlog does not hold one
/// round (and the head it uses) for long.
const MAX_PROOFS_PER_ROUND: usize = 256;

/// Most waiting events held in memory; the rest wait in the store.
const WINDOW: usize = 4 * MAX_PROOFS_PER_ROUND;

/// Rounds an event may be refused for good (NOT_FOUND and the like) before it is dropped: a
/// few, in case the collector answered while it was still catching up.
pub(super) const MAX_ATTEMPTS: u32 = 5;

/// Why a round stopped early without an alarm.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("collector: {0}")]
    Collector(String),
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
}

pub(super) struct ReceiptTask {
    pub(super) keys: Keys,
    pub(super) location: String,
    /// The publisher's collector endpoints: each connection goes to the current one.
    pub(super) endpoints: Arc<Endpoints>,
    pub(super) authorization: Option<MetadataValue<Ascii>>,
    pub(super) store: Arc<ReceiptStore>,
    pub(super) stats: Arc<ReceiptStats>,
    pub(super) interval: Duration,
    pub(super) stop: CancellationToken,
}

/// What the task holds between rounds.
struct State {
    /// A window of the store's waiting events, lowest position first.
    pending: VecDeque<Acked>,
    /// The highest position loaded into the window: the next refill starts after it.
    loaded_through: u64,
    /// Refusals so far by position, for events the collector refused to prove.
    attempts: HashMap<u64, u32>,
    head: Option<Head>,
    client: Option<EventQueryClient<Channel>>,
    /// The note of the last fork reported, so that one fork raises one alarm.
    fork_reported: Option<String>,
}

impl ReceiptTask {
    pub(super) async fn run(self) {
        let head = match self.store.head() {
            Ok(Some(note)) => match self.keys.open(&note) {
                Ok(head) => Some(head),
                Err(err) => {
                    warn!(error = %err, "kept checkpoint does not open with the configured keys, starting afresh");
                    None
                }
            },
            Ok(None) => None,
            Err(err) => {
                warn!(error = %err, "cannot read the kept checkpoint, starting afresh");
                None
            }
        };
        let mut state = State {
            pending: VecDeque::new(),
            loaded_through: 0,
            attempts: HashMap::new(),
            head,
            client: None,
            fork_reported: None,
        };
        let mut backoff = Backoff::new(self.interval, self.interval * 60);
        let mut wait = self.interval;
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if let Err(err) = self.refill(&mut state).await {
                warn!(error = %err, "cannot read the waiting receipts");
            }
            self.stats.set_pending(state.pending.len());
            wait = match self.round(&mut state).await {
                Ok(()) => {
                    backoff.reset();
                    self.interval
                }
                Err(err) => {
                    state.client = None;
                    let delay = backoff.next_delay().max(self.interval);
                    debug!(error = %err, retry_in_ms = delay.as_millis() as u64, "receipts round failed");
                    delay
                }
            };
            self.stats.set_pending(state.pending.len());
        }
    }

    /// Tops the window up with the store's next waiting events.
    async fn refill(&self, state: &mut State) -> Result<(), RoundError> {
        let room = WINDOW.saturating_sub(state.pending.len());
        if room == 0 {
            return Ok(());
        }
        let (store, after) = (self.store.clone(), state.loaded_through);
        let loaded = blocking(move || store.pending(after, room)).await?;
        if let Some(last) = loaded.last() {
            state.loaded_through = last.location_seq;
        }
        state.pending.extend(loaded);
        Ok(())
    }

    async fn round(&self, state: &mut State) -> Result<(), RoundError> {
        // With nothing waiting the head is still followed (one small call a round), so that a
        // fork or a rolled-back log is seen even while the publisher has nothing new in it.
        if state.pending.is_empty() && state.head.is_none() {
            return Ok(());
        }
        let mut client = match state.client.take() {
            Some(client) => client,
            None => EventQueryClient::new(
                self.endpoints.current().connect().await.map_err(|err| RoundError::Collector(err.to_string()))?,
            ),
        };
        let result = self.round_with(state, &mut client).await;
        state.client = Some(client);
        result
    }

    async fn round_with(&self, state: &mut State, client: &mut EventQueryClient<Channel>) -> Result<(), RoundError> {
        let Some(head) = self.advance(state, client).await? else { return Ok(()) };
        let (mut asked, mut index, mut transient, mut last_refusal) = (0, 0, 0, None);
        while index < state.pending.len() && asked < MAX_PROOFS_PER_ROUND {
            let acked = state.pending[index].clone();
            if acked.location_seq > head.checkpoint.size {
                break;
            }
            asked += 1;
            let request = proto::GetInclusionProofRequest {
                location: self.location.clone(),
                leaf: Some(proto::get_inclusion_proof_request::Leaf::LeafIndex(acked.location_seq.saturating_sub(1))),
                tree_size: head.checkpoint.size,
            };
            match client.get_inclusion_proof(self.request(request)).await {
                Ok(answer) => {
                    state.pending.remove(index);
                    state.attempts.remove(&acked.location_seq);
                    self.keep(&head, &acked, &answer.into_inner()).await?;
                }
                Err(refused) if refused_for_good(refused.code()) => {
                    let attempts = state.attempts.entry(acked.location_seq).or_default();
                    *attempts += 1;
                    if *attempts < MAX_ATTEMPTS {
                        index += 1;
                        continue;
                    }
                    state.attempts.remove(&acked.location_seq);
                    state.pending.remove(index);
                    let failure = ReceiptFailure::Proof(format!(
                        "collector refused the proof {MAX_ATTEMPTS} times: {}",
                        refused.message()
                    ));
                    self.drop_failed(&failure, &acked).await?;
                }
                // Passed over this round; the events behind it still get their proofs.
                Err(other) => {
                    index += 1;
                    transient += 1;
                    last_refusal = Some(other);
                }
            }
        }
        // Only transient refusals this round: the collector is likely out, back off.
        if let Some(refused) = last_refusal
            && transient == asked
        {
            return Err(status(refused));
        }
        // Events behind the head that were not covered stay, in order, for the next round.
        Ok(())
    }

    /// Verifies `answer` for `acked` and keeps the receipt (dropping the waiting row), or
    /// raises the alarm and drops the event.
    async fn keep(
        &self,
        head: &Head,
        acked: &Acked,
        answer: &proto::GetInclusionProofResponse,
    ) -> Result<(), RoundError> {
        match self.keys.include(head, acked, answer) {
            Ok(proof) => {
                let store = self.store.clone();
                let (text, event_id, location_seq) = (proof.encode(), acked.event_id.clone(), acked.location_seq);
                blocking(move || store.prove(location_seq, &event_id, &text)).await?;
                self.stats.verified();
                debug!(event_id = %acked.event_id, location_seq = acked.location_seq, "receipt verified");
                Ok(())
            }
            Err(failure) => self.drop_failed(&failure, acked).await,
        }
    }

    /// Raises the alarm for `acked` and forgets it as waiting.
    async fn drop_failed(&self, failure: &ReceiptFailure, acked: &Acked) -> Result<(), RoundError> {
        self.stats.alarm(failure, &self.location, Some(acked));
        let (store, location_seq) = (self.store.clone(), acked.location_seq);
        blocking(move || store.forget_pending(location_seq)).await?;
        Ok(())
    }

    /// Moves the accepted head to the collector's newest checkpoint when that extends it.
    /// Returns the head to prove against, `None` after a fork.
    async fn advance(
        &self,
        state: &mut State,
        client: &mut EventQueryClient<Channel>,
    ) -> Result<Option<Head>, RoundError> {
        let (next, proof) = match &state.head {
            Some(head) => {
                let request = proto::GetConsistencyProofRequest {
                    location: self.location.clone(),
                    old_size: head.checkpoint.size,
                };
                match client.get_consistency_proof(self.request(request)).await {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        (answer.note, answer.proof)
                    }
                    // The newest signed head is smaller than the accepted one (a rolled-back
                    // log): the collector has no proof to give, so its newest note is judged
                    // alone, which `extend` refuses as a fork.
                    Err(refused) if refused.code() == tonic::Code::InvalidArgument => {
                        (self.newest_note(client).await?, Vec::new())
                    }
                    Err(refused) => return Err(status(refused)),
                }
            }
            // The first head is trusted once its signature holds, like any first sight of a
            // log; every later one must extend it.
            None => {
                let first = state.pending.front().map_or(0, |acked| acked.location_seq.saturating_sub(1));
                let request = proto::GetInclusionProofRequest {
                    location: self.location.clone(),
                    leaf: Some(proto::get_inclusion_proof_request::Leaf::LeafIndex(first)),
                    tree_size: 0,
                };
                let answer = client.get_inclusion_proof(self.request(request)).await.map_err(status)?.into_inner();
                (answer.note, Vec::new())
            }
        };
        let checked = self.keys.open(&next).and_then(|next| match &state.head {
            Some(head) => {
                let proof: Vec<Hash> = proof.iter().filter_map(|hash| Hash::try_from(hash.as_slice()).ok()).collect();
                self.keys.extend(head, next, &proof)
            }
            None => Ok(next),
        });
        match checked {
            Ok(next) => {
                if state.head.as_ref() != Some(&next) {
                    let (store, note) = (self.store.clone(), next.note.clone());
                    blocking(move || store.set_head(&note)).await?;
                    state.head = Some(next.clone());
                }
                Ok(Some(next))
            }
            Err(failure) => {
                if state.fork_reported.as_deref() != Some(next.as_str()) {
                    self.stats.alarm(&failure, &self.location, None);
                    state.fork_reported = Some(next);
                }
                Ok(None)
            }
        }
    }

    /// Returns the note of the collector's newest checkpoint of the location.
    async fn newest_note(&self, client: &mut EventQueryClient<Channel>) -> Result<String, RoundError> {
        let request = proto::ListCheckpointsRequest { location: self.location.clone(), page_size: 1, before_number: 0 };
        let listed = client.list_checkpoints(self.request(request)).await.map_err(status)?.into_inner();
        let newest = listed.checkpoints.into_iter().next();
        newest.map(|checkpoint| checkpoint.note).ok_or_else(|| RoundError::Collector("no signed checkpoint".to_owned()))
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        request
    }
}

/// Whether a refused proof is the collector's answer about this event (retrying soon will not
/// change it) rather than a passing trouble.
pub(super) fn refused_for_good(code: Code) -> bool {
    matches!(code, Code::NotFound | Code::InvalidArgument | Code::DataLoss)
}

fn status(status: tonic::Status) -> RoundError {
    RoundError::Collector(status.message().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_about_the_event_are_refusals_for_good() {
        for code in [Code::NotFound, Code::InvalidArgument, Code::DataLoss] {
            assert!(refused_for_good(code), "{code:?}");
        }
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Internal, Code::Unauthenticated] {
            assert!(!refused_for_good(code), "{code:?}");
        }
    }
}
