//! Scenario 6, alerts: how soon a rule's webhook follows an event, and what rules cost ingest.
//!
//! - Webhook latency: one publisher offers 1,000 events/s (a batch of 10 every 10 ms, open
//!   loop) to a collector with 10 `each` rules, one per initiator for ten of the hundred users,
//!   each posting to a receiver in this process ([`crate::receiver`]). For every event a rule
//!   matched: the time from its batch's Ack (the event durably stored) to its webhook's arrival,
//!   p50 and p99, against the batches' own round trip (sent to Ack) at the same load. Target:
//!   p99 <= 50 ms.
//! - Ingest with 100 rules: the ingest scenario's 4 streams of batches of 1000 into a collector
//!   with 100 rules (presence of a rare action, thresholds per initiator, absences, and `each`
//!   on one user's program reads), against a collector without rules in the same run. Target:
//!   at least 0.9 of the rate without rules.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use prost::Message as _;
use qtrail_proto::limits::{MAX_MESSAGE_BYTES, MAX_UNACKED_BATCHES};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::alert_service_client::AlertServiceClient;
use qtrail_proto::qtrail::audit::v1::ingest_client::IngestClient;
use qtrail_proto::qtrail::audit::v1::publish_request::Kind;
use qtrail_proto::qtrail::audit::v1::publish_response::Kind as ResponseKind;
use qtrail_proto::qtrail::audit::v1::{Batch, PublishRequest, PublishedEvent};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::events::{EventFactory, LOCATION, USERS};
use crate::process::Server;
use crate::publish::{Batches, authed, connect, publish};
use crate::receiver::Receiver;
use crate::report::Measurement;
use crate::scenario::{ADMIN_TOKEN, Bench, PUBLISHER_TOKEN, start_collector};
use crate::stats::Samples;

/// Events per second offered in the latency run.
const RATE: u64 = 1000;
/// Events per batch in the latency run: a batch every 10 ms.
const LATENCY_BATCH: u64 = 10;
/// Rules of the latency run, one per user `0..LATENCY_RULES`.
const LATENCY_RULES: u64 = 10;
/// Rules of the ingest run.
const INGEST_RULES: u64 = 100;
/// Streams and batch size of the ingest comparison (as the ingest scenario's TLS comparison).
const INGEST_CONFIG: (usize, u64) = (4, 1000);
/// How long webhooks may take to arrive after the load.
const DRAIN: Duration = Duration::from_secs(30);

/// Runs the scenario.
///
/// # Errors
/// When a server fails, an event is not accepted or webhooks do not arrive.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    webhook_latency(bench).await?;
    ingest_with_rules(bench).await
}

/// Returns a rule of the benchmark location, watch-only unless it has a `webhook`.
fn rule(
    name: String,
    filter: proto::EventFilter,
    trigger: proto::alert_trigger::Kind,
    webhook: Option<&str>,
) -> proto::AlertRule {
    // A fixed secret: the receiver does not verify, and nothing here is secret.
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([11u8; 32]));
    proto::AlertRule {
        location: LOCATION.into(),
        name,
        filter: Some(filter),
        trigger: Some(proto::AlertTrigger { kind: Some(trigger) }),
        webhook: webhook.map(|url| proto::Webhook { url: url.into(), secret, has_secret: false }),
        ..Default::default()
    }
}

fn seconds(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

/// Creates `rules` on `collector`.
async fn create_rules(collector: &Server, rules: Vec<proto::AlertRule>) -> anyhow::Result<()> {
    let mut alerts = AlertServiceClient::new(connect(&collector.url()).await?);
    for rule in rules {
        let request = authed(proto::CreateAlertRuleRequest { rule: Some(rule) }, ADMIN_TOKEN);
        alerts.create_alert_rule(request).await.context("cannot create an alert rule")?;
    }
    Ok(())
}

/// The events of one batch of the latency run: each event's id, and whether a rule matches it.
type BatchEvents = Vec<(String, bool)>;

/// Returns `count` events as batches of [`LATENCY_BATCH`], with what each batch holds.
fn latency_batches(count: u64) -> (Vec<PublishRequest>, Vec<BatchEvents>) {
    let factory = EventFactory::new(0);
    let watched: Vec<String> = (0..LATENCY_RULES).map(EventFactory::initiator_id).collect();
    let (mut requests, mut contents) = (Vec::new(), Vec::new());
    for index in 0..count.div_ceil(LATENCY_BATCH) {
        let first = index * LATENCY_BATCH;
        let mut events = Vec::new();
        let mut content = Vec::new();
        for i in first..(first + LATENCY_BATCH).min(count) {
            let event = factory.event(i);
            let initiator = event.initiator.as_ref().map(|initiator| initiator.id.clone()).unwrap_or_default();
            content.push((event.id.clone(), watched.contains(&initiator)));
            events.push(PublishedEvent { seq: i + 1, event: event.encode_to_vec().into() });
        }
        requests.push(PublishRequest { kind: Some(Kind::Batch(Batch { batch_seq: index + 1, events })) });
        contents.push(content);
    }
    (requests, contents)
}

/// Measures the time from an event's Ack to its webhook at [`RATE`] events/s with 10 rules.
///
/// # Errors
/// When a server fails, an event is not accepted or webhooks do not arrive.
async fn webhook_latency(bench: &mut Bench) -> anyhow::Result<()> {
    let duration = Duration::from_secs(bench.pick(5, 20));
    let count = RATE * duration.as_secs();
    let collector = start_collector(&bench.files("alerts-latency")?).await?;
    let receiver = Receiver::start().await?;
    let rules = (0..LATENCY_RULES)
        .map(|user| {
            let filter = proto::EventFilter { initiator_id: EventFactory::initiator_id(user), ..Default::default() };
            let each = proto::alert_trigger::Kind::Each(proto::EachTrigger {});
            rule(format!("user-{user:03}"), filter, each, Some(&receiver.url))
        })
        .collect();
    create_rules(&collector, rules).await?;
    let (requests, contents) = latency_batches(count);
    let expected = contents.iter().flatten().filter(|(_, watched)| *watched).count();
    let interval = Duration::from_secs_f64(LATENCY_BATCH as f64 / RATE as f64);
    let (times, offered) = paced(&collector, requests, interval).await?;
    let arrived = qtrail_server::poll::until(DRAIN, || async { (receiver.count() >= expected).then_some(()) }).await;
    if arrived.is_none() {
        bail!("{} of {expected} webhook events arrived within {} s", receiver.count(), DRAIN.as_secs());
    }
    collector.stop().await?;
    let (mut delays, mut round_trips, early) = delays(&receiver, &contents, &times);
    let note = format!(
        "offered {offered:.0} events/s for {} s, {expected} webhooks from {LATENCY_RULES} `each` rules, {early} before the Ack",
        duration.as_secs()
    );
    for (label, p) in [("p50", 50.0), ("p99", 99.0)] {
        let target = if label == "p99" { "; target p99 <= 50 ms" } else { "" };
        bench.report.record(
            Measurement::new(
                format!("alerts.webhook.r{RATE}.{label}"),
                delays.percentile_ms(p),
                "ms",
                &format!("publish round trip {label}"),
                round_trips.percentile_ms(p),
            )
            .note(format!("{note}{target}")),
        );
    }
    Ok(())
}

/// Returns the Ack-to-webhook delays of the watched events, the batches' round trips, and how
/// many webhooks arrived before their batch's Ack (counted as 0).
fn delays(receiver: &Receiver, contents: &[BatchEvents], times: &[(Instant, Instant)]) -> (Samples, Samples, usize) {
    let arrivals = receiver.arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (mut delays, mut round_trips, mut early) = (Samples::new(), Samples::new(), 0);
    for (content, &(sent, acked)) in contents.iter().zip(times) {
        round_trips.push(acked.duration_since(sent));
        for (id, _) in content.iter().filter(|(_, watched)| *watched) {
            let Some(&arrived) = arrivals.get(id) else { continue };
            early += usize::from(arrived < acked);
            delays.push(arrived.saturating_duration_since(acked));
        }
    }
    (delays, round_trips, early)
}

/// Sends `requests` on one publisher stream, batch k at `k × interval` from the start (open
/// loop), and returns when each batch was sent and acknowledged, and the rate offered.
///
/// # Errors
/// When the stream fails or a batch is not accepted whole.
async fn paced(
    server: &Server,
    requests: Vec<PublishRequest>,
    interval: Duration,
) -> anyhow::Result<(Vec<(Instant, Instant)>, f64)> {
    let (sender, receiver) = mpsc::channel(requests.len() + 1);
    let hello = proto::Hello { publisher_id: "alerts-latency".into(), location: LOCATION.into(), epoch: 1 };
    sender.send(PublishRequest { kind: Some(Kind::Hello(hello)) }).await?;
    let mut client = IngestClient::new(connect(&server.url()).await?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut responses = client.publish(authed(ReceiverStream::new(receiver), PUBLISHER_TOKEN)).await?.into_inner();
    match responses.message().await?.and_then(|response| response.kind) {
        Some(ResponseKind::Welcome(_)) => {}
        other => bail!("expected a welcome, got {other:?}"),
    }
    let sizes: Vec<u32> = requests
        .iter()
        .map(|request| match &request.kind {
            Some(Kind::Batch(batch)) => u32::try_from(batch.events.len()).unwrap_or(u32::MAX),
            _ => 0,
        })
        .collect();
    // The stream allows so many batches unacknowledged; at this rate it never waits on that.
    let window = std::sync::Arc::new(Semaphore::new(MAX_UNACKED_BATCHES as usize));
    let started = tokio::time::Instant::now();
    let feeder = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut sent = Vec::with_capacity(requests.len());
            for (index, request) in requests.into_iter().enumerate() {
                tokio::time::sleep_until(started + interval * u32::try_from(index).unwrap_or(u32::MAX)).await;
                let Ok(permit) = window.acquire().await else { break };
                permit.forget();
                sent.push(Instant::now());
                if sender.send(request).await.is_err() {
                    break;
                }
            }
            sent
        })
    };
    let mut acked = Vec::with_capacity(sizes.len());
    for size in &sizes {
        let response = responses.message().await?.context("stream ended before its last ack")?;
        let Some(ResponseKind::Ack(ack)) = response.kind else { bail!("expected an ack") };
        if ack.accepted != *size {
            bail!("batch {} accepted {} of {size} events", ack.batch_seq, ack.accepted);
        }
        acked.push(Instant::now());
        window.add_permits(1);
    }
    let sent = feeder.await?;
    let events: u64 = sizes.iter().map(|&size| u64::from(size)).sum();
    let offered = events as f64 / started.elapsed().as_secs_f64();
    Ok((sent.into_iter().zip(acked).collect(), offered))
}

/// Returns the 100 rules of the ingest comparison: for user n, in turn, the presence of a job
/// deletion (never in this load), 1000 job creations in a minute (never reached), no event for
/// ten minutes (never true), and each program read (one event in a thousand fires).
fn ingest_rules() -> Vec<proto::AlertRule> {
    use proto::alert_trigger::Kind as Trigger;
    (0..INGEST_RULES)
        .map(|n| {
            let initiator_id = EventFactory::initiator_id(n % USERS);
            let filter = |action: &str| proto::EventFilter {
                action: action.into(),
                initiator_id: initiator_id.clone(),
                ..Default::default()
            };
            let (filter, trigger) = match n % 4 {
                0 => (filter("quantum-computing.job.delete"), Trigger::Each(proto::EachTrigger {})),
                1 => (
                    filter("quantum-computing.job.create"),
                    Trigger::Threshold(proto::ThresholdTrigger {
                        count: 1000,
                        window: seconds(60),
                        group_by: proto::GroupBy::Initiator as i32,
                    }),
                ),
                2 => (filter(""), Trigger::Absence(proto::AbsenceTrigger { duration: seconds(600) })),
                _ => (filter("quantum-computing.program.read"), Trigger::Each(proto::EachTrigger {})),
            };
            rule(format!("rule-{n:03}"), filter, trigger, None)
        })
        .collect()
}

/// Measures ingest into a collector with 100 rules against one without, in the same run.
///
/// # Errors
/// When a server fails or an event is not accepted.
async fn ingest_with_rules(bench: &mut Bench) -> anyhow::Result<()> {
    let (streams, batch) = INGEST_CONFIG;
    let per_stream = bench.pick(48_000, 320_000) / streams as u64;
    let expected = per_stream * streams as u64;
    let prepared: Vec<Vec<PublishRequest>> =
        (0..streams).map(|stream| EventFactory::new(stream).batches(per_stream, batch)).collect();
    let without = ingest_run(bench, "alerts-ingest-0", Vec::new(), prepared.clone(), expected).await?;
    let with = ingest_run(bench, "alerts-ingest-100", ingest_rules(), prepared, expected).await?;
    bench.report.record(
        Measurement::new(
            format!("alerts.ingest.rules{INGEST_RULES}.s{streams}.b{batch}"),
            with,
            "events/s",
            "collector without rules",
            without,
        )
        .note(format!("{expected} events; {INGEST_RULES} rules; target >= 0.9 of the rate without rules")),
    );
    Ok(())
}

/// Starts a collector on a new store with `rules`, sends it `prepared`, and returns the rate.
async fn ingest_run(
    bench: &mut Bench,
    name: &str,
    rules: Vec<proto::AlertRule>,
    prepared: Vec<Vec<PublishRequest>>,
    expected: u64,
) -> anyhow::Result<f64> {
    let collector = start_collector(&bench.files(name)?).await?;
    create_rules(&collector, rules).await?;
    let streams = prepared.into_iter().map(|batches| Box::new(batches.into_iter()) as Batches).collect();
    let result = publish(&collector, PUBLISHER_TOKEN, name, streams, expected).await?;
    collector.stop().await?;
    Ok(result.rate())
}
