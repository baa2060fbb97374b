//! Property tests of EventQuery against a real server: random filter fields, page sizes, orders
//! and random or mutated page tokens get either a page within the limits, whose events all
//! match the filter, or a clear INVALID_ARGUMENT; never a panic or another error.

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{AUDITOR, TestServer, authed, events};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost_types::Timestamp;
use qtrail_collector::filter::Filter;
use qtrail_collector::query::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use qtrail_proto::qtrail::audit::v1 as proto;
use tonic::Code;

const LOCATION: &str = "us-east";
const EVENTS: usize = 300;

/// A string that is either one that matches some stored events, or anything at all, or long.
fn field(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        proptest::sample::select(known).prop_map(str::to_owned),
        "\\PC{0,40}",
        (1_usize..20_000).prop_map(|len| "x".repeat(len)),
    ]
}

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    prop_oneof![
        Just(None),
        (1_699_999_000_i64..1_700_001_000, 0_i32..1_000_000_000)
            .prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos })),
        (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos })),
    ]
}

fn filter() -> impl Strategy<Value = Option<proto::EventFilter>> {
    let actions = &["quantum-computing.job", "quantum-computing.job.cancel", "quantum-computing", "job", "a..b"];
    let initiators = &["IBMid-0", "IBMid-1", "IBMid-2"];
    let targets = &["crn:v1:bluemix:public:quantum-computing:us-east:a/acc-1:inst-1", "crn:v1:bluemix:public"];
    let body = (
        timestamp(),
        timestamp(),
        field(actions),
        -2_i32..6,
        -2_i32..6,
        field(initiators),
        field(targets),
        field(&["corr-1", "corr-2"]),
    )
        .prop_map(|(start_time, end_time, action, outcome, severity, initiator_id, target_id, correlation_id)| {
            proto::EventFilter {
                start_time,
                end_time,
                action,
                outcome,
                severity,
                initiator_id,
                target_id,
                correlation_id,
            }
        });
    prop_oneof![Just(None), body.prop_map(Some)]
}

/// A page token: none, one from a real page (as is, or with a byte changed, cut or extended),
/// or any string.
fn token(valid: String) -> impl Strategy<Value = String> {
    let bytes = URL_SAFE_NO_PAD.decode(&valid).expect("a real token decodes");
    let len = bytes.len();
    prop_oneof![
        Just(String::new()),
        Just(valid),
        (0..len, any::<u8>()).prop_map({
            let bytes = bytes.clone();
            move |(index, value)| {
                let mut bytes = bytes.clone();
                bytes[index] = value;
                URL_SAFE_NO_PAD.encode(bytes)
            }
        }),
        (0..len).prop_map({
            let bytes = bytes.clone();
            move |cut| URL_SAFE_NO_PAD.encode(&bytes[..cut])
        }),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(move |extra| {
            let mut bytes = bytes.clone();
            bytes.extend(extra);
            URL_SAFE_NO_PAD.encode(bytes)
        }),
        "\\PC{0,80}",
    ]
}

#[test]
fn random_filters_and_page_tokens_get_a_bounded_page_or_invalid_argument() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = runtime.block_on(TestServer::start(dir.path()));
    let query = runtime.block_on(async {
        server.create_collector(LOCATION).await;
        let (mut stream, _) = server.open_publisher("p", LOCATION, 1).await;
        for (index, chunk) in events(LOCATION, 0, EVENTS).chunks(100).enumerate() {
            let ack = stream.publish(index as u64 + 1, chunk, index as u64 * 100 + 1).await;
            assert_eq!(ack.accepted as usize, chunk.len());
        }
        stream.close();
        server.query().await
    });
    let first = proto::QueryEventsRequest { location: LOCATION.into(), page_size: 5, ..Default::default() };
    let valid =
        runtime.block_on(query.clone().query_events(authed(first, AUDITOR))).unwrap().into_inner().next_page_token;

    let strategy = (filter(), 0_u32..1200, -1_i32..4, token(valid));
    let mut runner = TestRunner::new(Config { cases: 200, failure_persistence: None, ..Config::default() });
    let outcome = runner.run(&strategy, |(filter, page_size, order, page_token)| {
        let request = proto::QueryEventsRequest {
            location: LOCATION.into(),
            filter: filter.clone(),
            page_size,
            page_token,
            order,
        };
        let mut client = query.clone();
        match runtime.block_on(client.query_events(authed(request, AUDITOR))) {
            Ok(page) => {
                let page = page.into_inner();
                let limit = if page_size == 0 { DEFAULT_PAGE_SIZE } else { page_size };
                prop_assert!(page.events.len() <= limit as usize);
                let filter = Filter::from_wire(filter.as_ref()).expect("a filter the server took is valid");
                for event in &page.events {
                    prop_assert!(filter.matches(event), "event {} does not match", event.location_seq);
                }
                prop_assert!(page_size <= MAX_PAGE_SIZE);
            }
            Err(status) => {
                prop_assert_eq!(status.code(), Code::InvalidArgument, "{:?}", status);
                let message = status.message();
                prop_assert!(!message.is_empty() && !message.ends_with('.'), "{}", message);
                prop_assert!(message.chars().next().is_some_and(|c| !c.is_uppercase()), "{}", message);
            }
        }
        Ok(())
    });
    runtime.block_on(server.stop());
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
