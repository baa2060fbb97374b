//! Property tests of the Publish request types the collector reads with (`encoded`): whatever
//! bytes a publisher sends as a request, reading them gives a clear error or a request bounded
//! by those bytes, never a panic, and what reads is what the generated types read.

use proptest::prelude::*;
use prost::Message as _;
use qtrail_proto::encoded::{Batch, Kind, PublishRequest, PublishedEvent};
use qtrail_proto::qtrail::audit::v1 as proto;

fn published_event() -> impl Strategy<Value = PublishedEvent> {
    (any::<u64>(), proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4))
        .prop_map(|(seq, event)| PublishedEvent { seq, event })
}

fn request() -> impl Strategy<Value = PublishRequest> {
    let hello = (".{0,16}", ".{0,16}", any::<u64>())
        .prop_map(|(publisher_id, location, epoch)| Kind::Hello(proto::Hello { publisher_id, location, epoch }));
    let batch = (any::<u64>(), proptest::collection::vec(published_event(), 0..8))
        .prop_map(|(batch_seq, events)| Kind::Batch(Batch { batch_seq, events }));
    proptest::option::of(prop_oneof![hello, batch]).prop_map(|kind| PublishRequest { kind })
}

/// What must hold of any outcome of reading `bytes` as a request.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let generated = proto::PublishRequest::decode(bytes);
    match PublishRequest::decode(bytes) {
        Ok(request) => {
            // Bounded by the bytes read: no event is larger than the request that carried it.
            if let Some(Kind::Batch(batch)) = &request.kind {
                prop_assert!(batch.events.len() <= bytes.len());
                for event in &batch.events {
                    prop_assert!(event.event_bytes().map_or(0, |merged| merged.len()) <= bytes.len());
                }
            }
            // Stable: it reads back as itself once written.
            prop_assert_eq!(&PublishRequest::decode(request.encode_to_vec().as_slice()).unwrap(), &request);
            // A Hello reads as the generated types read it; a request the generated types read
            // (events decoded) reads here too.
            if let Some(Kind::Hello(hello)) = &request.kind {
                let generated = generated.expect("the generated types read a hello this reads");
                prop_assert_eq!(generated.kind, Some(proto::publish_request::Kind::Hello(hello.clone())));
            }
        }
        Err(err) => {
            prop_assert!(generated.is_err(), "the generated types read what this does not: {}", err);
            prop_assert!(!err.to_string().is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_read_as_an_error_or_a_bounded_request(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check(&bytes)?;
    }

    /// Requests as a publisher writes them read back as they were, each event's parts merged.
    #[test]
    fn written_requests_read_back_whole(request in request()) {
        let bytes = request.encode_to_vec();
        prop_assert_eq!(&PublishRequest::decode(bytes.as_slice()).unwrap(), &request);
        if let Some(Kind::Batch(batch)) = &request.kind {
            for event in &batch.events {
                let concatenated: Vec<u8> = event.event.concat();
                let merged = event.event_bytes().map(|merged| merged.into_owned());
                prop_assert_eq!(merged, (!event.event.is_empty()).then_some(concatenated));
            }
        }
        check(&bytes)?;
    }

    /// A written request with bytes changed, cut or added: an error or a bounded request.
    #[test]
    fn mutated_requests_read_as_an_error_or_a_bounded_request(
        request in request(),
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = request.encode_to_vec();
        if !bytes.is_empty() {
            for (at, byte) in &changes {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            bytes.truncate(cut.index(bytes.len()) + 1);
        }
        check(&bytes)?;
    }
}
