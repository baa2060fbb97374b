//! Events like the runtime's: job and program actions of a hundred users, each about 600 bytes
//! in protobuf, each with its own id, correlation id and (mostly) its own job as target.

use prost::Message as _;
use qtrail_cadf::{Action, Crn, EventBuilder, Initiator, JsonObject, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::publish_request::Kind;
use qtrail_proto::qtrail::audit::v1::{Batch, PublishRequest, PublishedEvent};
use serde_json::json;

/// The location every benchmark uses.
pub const LOCATION: &str = "us-east";
/// Distinct initiators (users) among the events.
pub const USERS: u64 = 100;

/// Makes events of one publisher.
#[derive(Debug, Clone)]
pub struct EventFactory {
    source: Crn,
    stream: usize,
}

impl EventFactory {
    /// Returns a factory for publisher stream `stream`.
    ///
    /// # Panics
    /// Never: the location and account are valid constants.
    pub fn new(stream: usize) -> Self {
        Self::at(LOCATION, stream)
    }

    /// Returns a factory for publisher stream `stream` of location `location`.
    ///
    /// # Panics
    /// When `location` is not a valid location name.
    pub fn at(location: &str, stream: usize) -> Self {
        let location: Location = location.parse().expect("a valid location");
        let source = Crn::instance(&location, "acc-bench", "inst-bench").expect("a valid crn");
        Self { source, stream }
    }

    /// Returns the initiator id of user `user`.
    pub fn initiator_id(user: u64) -> String {
        format!("IBMid-bench-{user:03}")
    }

    /// Returns the job id of event `i` of stream `stream` (the target of most events).
    pub fn job_id(stream: usize, i: u64) -> String {
        format!("cbench{stream:02}x{i:012}")
    }

    /// Returns the mean protobuf size of this factory's events, over the first 100.
    pub fn event_bytes(&self) -> f64 {
        (0..100).map(|i| encoded_bytes(&self.event(i))).sum::<usize>() as f64 / 100.0
    }

    /// Returns event `i`: seven in ten are job reads, two job creates, one a program list.
    ///
    /// # Panics
    /// Never: every part is valid by construction.
    pub fn event(&self, i: u64) -> proto::AuditEvent {
        let user = (i.wrapping_mul(7919) + self.stream as u64) % USERS;
        let initiator = Initiator {
            id: Self::initiator_id(user),
            name: format!("user{user:03}@example.com"),
            type_uri: qtrail_cadf::event::INITIATOR_USER.into(),
            credential_type: "apikey".into(),
            host_address: format!("192.0.2.{}", user + 1),
            host_agent: "qiskit-ibm-runtime/0.23.0 grpc-python/1.62.1".into(),
        };
        let job = Self::job_id(self.stream, i);
        let (action, request, response) = match i % 10 {
            0..=6 => (
                Action::JobRead,
                json!({"jobId": job, "view": "results"}),
                json!({"status": "COMPLETED", "shots": 4000}),
            ),
            7 | 8 => (
                Action::JobCreate,
                json!({"programId": "bell-a1b2c3d4e5", "backend": "simulator_statevector", "tags": ["bench"]}),
                json!({"jobId": job, "status": "QUEUED", "seed": i}),
            ),
            _ => (Action::ProgramRead, json!({"limit": 100, "offset": 0}), json!({"count": 12, "returned": 12})),
        };
        let object = |value: serde_json::Value| -> JsonObject { value.as_object().cloned().unwrap_or_default() };
        let mut builder = EventBuilder::new(action, self.source.clone(), initiator)
            .request_data(object(request))
            .response_data(object(response));
        builder = match action {
            Action::ProgramRead => builder,
            _ => builder.target(&job, &job),
        };
        let status = if action == Action::JobCreate { 201 } else { 200 };
        let event = builder.status(status).build().expect("a valid event");
        proto::AuditEvent::from(&event)
    }

    /// Returns events `first..first + count` as a `Batch` request with publisher seqs from
    /// `first + 1`, each event encoded already, as a publisher sends what its outbox stores.
    pub fn batch(&self, batch_seq: u64, first: u64, count: u64) -> PublishRequest {
        let events = (first..first + count)
            .map(|i| PublishedEvent { seq: i + 1, event: self.event(i).encode_to_vec().into() })
            .collect();
        PublishRequest { kind: Some(Kind::Batch(Batch { batch_seq, events })) }
    }

    /// Returns `events` events as batches of `batch` events.
    pub fn batches(&self, events: u64, batch: u64) -> Vec<PublishRequest> {
        (0..events.div_ceil(batch))
            .map(|index| {
                let first = index * batch;
                self.batch(index + 1, first, batch.min(events - first))
            })
            .collect()
    }
}

/// Returns the encoded size of an event, in bytes.
pub fn encoded_bytes(event: &proto::AuditEvent) -> usize {
    event.encoded_len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_about_600_bytes_valid_and_distinct() {
        let factory = EventFactory::new(3);
        let mut ids = std::collections::HashSet::new();
        for i in 0..20 {
            let event = factory.event(i);
            let size = encoded_bytes(&event);
            assert!((450..=750).contains(&size), "event {i} is {size} bytes");
            assert!(ids.insert(event.id.clone()));
            let model = qtrail_cadf::AuditEvent::try_from(event).unwrap();
            assert_eq!(model.location(), LOCATION);
        }
    }

    #[test]
    fn batches_number_events_and_batches_from_one() {
        let batches = EventFactory::new(0).batches(250, 100);
        let sizes: Vec<(u64, usize, u64)> = batches
            .iter()
            .map(|request| match &request.kind {
                Some(Kind::Batch(batch)) => (batch.batch_seq, batch.events.len(), batch.events[0].seq),
                _ => panic!("a batch"),
            })
            .collect();
        assert_eq!(sizes, vec![(1, 100, 1), (2, 100, 101), (3, 50, 201)]);
    }
}
