//! CPU per event of each hop an audit event takes, in one thread, without I/O: what the
//! runtime, the publisher and the collector compute for every event. For profiling
//! (`valgrind --tool=callgrind`) and quick before/after comparisons of one hop.
//!
//! `cargo run --release -p qtrail-bench --example hops -- [EVENTS] [HOP]`

use std::time::Instant;

use prost::Message as _;
use qtrail_bench::events::EventFactory;
use qtrail_cadf::{Action, AuditEvent, Location, ValidEvent};
use qtrail_collector::store::NewEvent;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::publish_request::Kind;
use qtrail_proto::qtrail::audit::v1::{Batch, PublishRequest, PublishedEvent};
use qtrail_runtime::audit::{AuditRecord, Auditor};
use qtrail_runtime::auth::{CallContext, Caller, Principal};

const BATCH: usize = 100;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let only = args.next();
    let factory = EventFactory::new(1);
    let models: Vec<AuditEvent> =
        (0..count as u64).map(|i| AuditEvent::try_from(factory.event(i)).expect("valid event")).collect();
    let wanted = |hop: &str| only.as_deref().is_none_or(|only| only == hop);
    let report = |hop: &str, started: Instant| {
        println!("{hop:>24}: {:6.2} us/event", started.elapsed().as_secs_f64() * 1e6 / count as f64);
    };

    // The runtime: a GetJob's record filled as the service fills it, and its event built by the
    // runtime's own `Auditor::event` (derived fields, escaping, validation, canonical bytes).
    let started = Instant::now();
    let location: Location = "us-east".parse().expect("location");
    let auditor = Auditor::new(location, "inst-1".into(), "acc-operator".into());
    let principal =
        Principal { iam_id: "IBMid-0001".into(), name: "alice@example.com".into(), account: "acc-1".into() };
    let ctx = CallContext::for_test(Caller::Principal(principal));
    for i in 0..count {
        let job = format!("job-{i}");
        let mut record = AuditRecord::new(Action::JobRead);
        record.request("jobId", job.as_str());
        record.target(&job, "");
        record.response("status", "Completed");
        std::hint::black_box(auditor.event(&ctx, &record, Ok(())).expect("valid event"));
    }
    if wanted("build") {
        report("runtime: build", started);
    }

    // The runtime: the event's protobuf form, encoded for the outbox.
    let started = Instant::now();
    let outbox: Vec<Vec<u8>> = models.iter().map(AuditEvent::encode_proto).collect();
    if wanted("outbox") {
        report("runtime: encode", started);
    }

    // The publisher: outbox bytes, as stored, to a request on the wire.
    let started = Instant::now();
    let mut requests = Vec::new();
    for (chunk_index, chunk) in outbox.chunks(BATCH).enumerate() {
        let events = chunk
            .iter()
            .enumerate()
            .map(|(i, bytes)| PublishedEvent { seq: (chunk_index * BATCH + i + 1) as u64, event: bytes.clone().into() })
            .collect();
        let request = PublishRequest { kind: Some(Kind::Batch(Batch { batch_seq: chunk_index as u64 + 1, events })) };
        requests.push(request.encode_to_vec());
    }
    if wanted("publisher") {
        report("publisher: send", started);
    }

    // The collector as the generated `AuditEvent` would have it: decode the request, then each
    // event into the message, validate, make the stored form.
    let started = Instant::now();
    let mut decoded = Vec::new();
    for bytes in &requests {
        decoded.push(proto::PublishRequest::decode(bytes.as_slice()).expect("decodes"));
    }
    if wanted("decode") {
        report("collector: decode", started);
    }
    let started = Instant::now();
    let mut stored = 0;
    for request in decoded {
        let Some(Kind::Batch(batch)) = request.kind else {
            continue;
        };
        for published in batch.events {
            let event = proto::AuditEvent::decode(published.event).expect("event");
            let valid = ValidEvent::try_from(event).expect("valid");
            let new = NewEvent::from_valid(published.seq, valid);
            stored += new.encoded.len();
        }
    }
    if wanted("validate") {
        report("collector: validate", started);
    }

    // The collector as it ingests: each event's bytes read straight into the model.
    let started = Instant::now();
    for (seq, bytes) in outbox.iter().enumerate() {
        let valid = ValidEvent::decode(bytes).expect("valid");
        stored += NewEvent::from_valid(seq as u64 + 1, valid).encoded.len();
    }
    if wanted("direct") {
        report("collector: decode+validate", started);
    }
    std::hint::black_box(stored);
}
