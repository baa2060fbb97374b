//! Measures ingest throughput end to end: an in-process collector on loopback over a store in a
//! temporary directory, `STREAMS` publishers each sending `EVENTS` events in batches of `BATCH`,
//! keeping up to the allowed number of batches unacknowledged.
//!
//! `cargo run --release -p qtrail-collector --example ingest_load -- STREAMS EVENTS BATCH`
//!
//! With `QTRAIL_LOAD_HTTP=1` the collector also serves its HTTP side, which installs the metrics
//! recorder: comparing the two runs shows what recording metrics costs.

use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use qtrail_cadf::{Action, Crn, EventBuilder, Initiator, Location};
use qtrail_collector::Config;
use qtrail_collector::tokens::{Role, TokenEntry, Tokens};
use qtrail_proto::limits::MAX_UNACKED_BATCHES;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::collector_admin_client::CollectorAdminClient;
use qtrail_proto::qtrail::audit::v1::ingest_client::IngestClient;
use qtrail_proto::qtrail::audit::v1::publish_request::Kind;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

fn batches(stream: usize, events: usize, batch: usize) -> Vec<proto::PublishRequest> {
    let location: Location = "us-east".parse().expect("location");
    let source = Crn::instance(&location, "acc-1", "inst-1").expect("crn");
    let initiator = Initiator {
        id: format!("IBMid-{stream}"),
        name: "load@example.com".into(),
        type_uri: qtrail_cadf::event::INITIATOR_USER.into(),
        credential_type: "apikey".into(),
        host_address: "192.0.2.1".into(),
        host_agent: "ingest-load".into(),
    };
    let published: Vec<proto::PublishedEvent> = (0..events)
        .map(|i| {
            let event = EventBuilder::new(Action::JobRead, source.clone(), initiator.clone())
                .target(&format!("job-{stream}-{i}"), "")
                .build()
                .expect("event");
            proto::PublishedEvent { seq: i as u64 + 1, event: proto::AuditEvent::from(&event).encode_to_vec().into() }
        })
        .collect();
    published
        .chunks(batch)
        .enumerate()
        .map(|(index, chunk)| proto::PublishRequest {
            kind: Some(Kind::Batch(proto::Batch { batch_seq: index as u64 + 1, events: chunk.to_vec() })),
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (streams, events, batch) = match args[..] {
        [streams, events, batch] => (streams, events, batch),
        _ => (4, 50_000, 500),
    };
    qtrail_server::telemetry::init(false);
    let dir = tempfile::tempdir_in(".")?;
    let tokens = Tokens::from_entries([
        TokenEntry::new("p", Role::Publisher, "load").with_locations(["us-east".parse()?]),
        TokenEntry::new("a", Role::Admin, "ops"),
    ])
    .map_err(anyhow::Error::msg)?;
    let mut config = Config::for_test(dir.path(), tokens);
    config.cache_bytes = 64 * 1024 * 1024;
    if std::env::var_os("QTRAIL_LOAD_HTTP").is_some() {
        config.http = Some("127.0.0.1:0".parse()?);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(qtrail_collector::run(listener, config, async move {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    CollectorAdminClient::new(channel.clone())
        .create_collector(authed(proto::CreateCollectorRequest { location: "us-east".into() }, "a"))
        .await?;

    let prepared: Vec<Vec<proto::PublishRequest>> = (0..streams).map(|s| batches(s, events, batch)).collect();
    let total = streams * events;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (stream, requests) in prepared.into_iter().enumerate() {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let (sender, receiver) = mpsc::channel(64);
            let hello = proto::Hello { publisher_id: format!("load-{stream}"), location: "us-east".into(), epoch: 1 };
            sender.send(proto::PublishRequest { kind: Some(Kind::Hello(hello)) }).await?;
            let mut client = IngestClient::new(channel).max_encoding_message_size(64 * 1024 * 1024);
            let mut responses = client.publish(authed(ReceiverStream::new(receiver), "p")).await?.into_inner();
            responses.message().await?;
            let window = Arc::new(Semaphore::new(MAX_UNACKED_BATCHES as usize));
            let batches = requests.len();
            let feeder = {
                let window = window.clone();
                tokio::spawn(async move {
                    for request in requests {
                        window.acquire().await.expect("open").forget();
                        if sender.send(request).await.is_err() {
                            break;
                        }
                    }
                    sender
                })
            };
            let mut accepted = 0_u64;
            for _ in 0..batches {
                let response = responses.message().await?.ok_or_else(|| anyhow::anyhow!("stream ended"))?;
                if let Some(proto::publish_response::Kind::Ack(ack)) = response.kind {
                    accepted += u64::from(ack.accepted);
                }
                window.add_permits(1);
            }
            drop(feeder.await?);
            anyhow::Ok(accepted)
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "{streams} streams x {events} events, batches of {batch}: {accepted}/{total} stored in {:.2} s = {:.0} events/s",
        elapsed.as_secs_f64(),
        accepted as f64 / elapsed.as_secs_f64()
    );
    let _ = stop.send(());
    server.await??;
    Ok(())
}
