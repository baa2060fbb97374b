//! Scenario 3, end-to-end latency: the time from the runtime's response to a call to its event
//! arriving on a `TailEvents` stream, at 1k and 5k calls/s offered (open loop: calls start on a
//! schedule, whatever the answers do). p50, p99 and max, against the calls' own round trip at
//! the same load. Target: p99 <= 10 ms at 5k/s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::event_query_client::EventQueryClient;
use qtrail_proto::qtrail::runtime::v1 as pb;
use qtrail_proto::qtrail::runtime::v1::job_service_client::JobServiceClient;
use tokio::task::JoinHandle;

use crate::events::LOCATION;
use crate::process::Server;
use crate::publish::{authed, connect};
use crate::report::Measurement;
use crate::scenario::overhead::{Target, prepare};
use crate::scenario::{API_KEY, AUDITOR_TOKEN, Bench};
use crate::stats::Samples;

/// Offered loads, calls per second.
const RATES: [u64; 2] = [1000, 5000];
/// How long to wait for the last events after the load.
const DRAIN: Duration = Duration::from_secs(20);

/// When each side saw one call: its response, and its event on the tail.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    response: Option<Instant>,
    tail: Option<Instant>,
}

/// Runs the scenario against an audited runtime and its collector.
///
/// # Errors
/// When a call fails or events do not arrive.
pub async fn run(bench: &mut Bench, runtime: &Server, collector: &Server) -> anyhow::Result<()> {
    let duration = Duration::from_secs(bench.pick(3, 10));
    let target = prepare(runtime).await?;
    for rate in RATES {
        measure(bench, &target, collector, rate, duration).await?;
    }
    Ok(())
}

/// When each call's response and its event on the tail were seen, by correlation id.
type SeenByCall = Arc<Mutex<HashMap<String, Seen>>>;

/// Offers GetJob at `rate` calls/s for `duration` and records how long after each response its
/// event shows on a tail, against the calls' own round trips.
async fn measure(
    bench: &mut Bench,
    target: &Target,
    collector: &Server,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<()> {
    let seen: SeenByCall = Arc::default();
    let prefix = format!("lat{rate}-");
    let tail_task = subscribe(collector, &seen, &prefix).await?;
    let calls = rate * duration.as_secs();
    let (mut round_trips, offered) = offer(target, &seen, &prefix, rate, calls).await?;
    await_tail(&seen, rate, calls).await?;
    tail_task.abort();
    let (mut delays, early) = delays(&seen, calls)?;
    let note = |extra: &str| {
        format!(
            "offered {offered:.0} calls/s for {} s, {calls} events, {early} seen before the response{extra}",
            duration.as_secs()
        )
    };
    let target_note = if rate == 5000 { "; target p99 <= 10 ms" } else { "" };
    for (label, value, baseline) in [
        ("p50", delays.percentile_ms(50.0), round_trips.percentile_ms(50.0)),
        ("p99", delays.percentile_ms(99.0), round_trips.percentile_ms(99.0)),
        ("max", delays.max_ms(), round_trips.max_ms()),
    ] {
        let extra = if label == "p99" { target_note } else { "" };
        bench.report.record(
            Measurement::new(
                format!("latency.r{rate}.{label}"),
                value,
                "ms",
                &format!("call round trip {label}"),
                baseline,
            )
            .note(note(extra)),
        );
    }
    Ok(())
}

/// Subscribes to the tail first (from_seq 0: only what is stored from now on) and notes when
/// each event whose correlation id starts with `prefix` arrives.
async fn subscribe(collector: &Server, seen: &SeenByCall, prefix: &str) -> anyhow::Result<JoinHandle<()>> {
    let mut query = EventQueryClient::new(connect(&collector.url()).await?);
    let request = proto::TailEventsRequest { location: LOCATION.into(), filter: None, from_seq: 0 };
    let mut tail = query.tail_events(authed(request, AUDITOR_TOKEN)).await?.into_inner();
    let (seen, prefix) = (seen.clone(), prefix.to_owned());
    Ok(tokio::spawn(async move {
        while let Ok(Some(message)) = tail.message().await {
            let now = Instant::now();
            let Some(event) = message.event.and_then(|stored| stored.event) else {
                continue;
            };
            if event.correlation_id.starts_with(&prefix) {
                let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                seen.entry(event.correlation_id).or_default().tail.get_or_insert(now);
            }
        }
    }))
}

/// Makes `calls` GetJob calls open loop at `rate` calls/s, noting when each response came;
/// returns their round trips and the rate actually offered.
async fn offer(
    target: &Target,
    seen: &SeenByCall,
    prefix: &str,
    rate: u64,
    calls: u64,
) -> anyhow::Result<(Samples, f64)> {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut round_trips = Samples::new();
    let (done_sender, mut done) = tokio::sync::mpsc::unbounded_channel::<anyhow::Result<Duration>>();
    let started = Instant::now();
    for n in 0..calls {
        // Open loop: call n starts at n / rate, late or not.
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let channel = target.channels[(n as usize) % target.channels.len()].clone();
        let (seen, job_id, sender) = (seen.clone(), target.job_id.clone(), done_sender.clone());
        let correlation = format!("{prefix}{n}");
        tokio::spawn(async move {
            let mut request = authed(pb::GetJobRequest { id: job_id }, API_KEY);
            if let Ok(value) = correlation.parse() {
                request.metadata_mut().insert("x-correlation-id", value);
            }
            let sent = Instant::now();
            let result = JobServiceClient::new(channel).get_job(request).await;
            let now = Instant::now();
            let outcome = match result {
                Ok(_) => {
                    let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    seen.entry(correlation).or_default().response = Some(now);
                    Ok(now - sent)
                }
                Err(status) => Err(anyhow::anyhow!("call failed: {status}")),
            };
            let _ = sender.send(outcome);
        });
    }
    drop(done_sender);
    while let Some(outcome) = done.recv().await {
        round_trips.push(outcome?);
    }
    Ok((round_trips, calls as f64 / started.elapsed().as_secs_f64()))
}

/// Waits (polling, bounded) for the tail to show every call's event.
async fn await_tail(seen: &SeenByCall, rate: u64, calls: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN;
    loop {
        let complete = {
            let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.values().filter(|seen| seen.tail.is_some()).count() as u64 >= calls
        };
        if complete {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("events of {rate}/s calls still missing on the tail after {} s", DRAIN.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Returns each call's delay from its response to its event on the tail, and how many events
/// came before their response.
fn delays(seen: &SeenByCall, calls: u64) -> anyhow::Result<(Samples, usize)> {
    let mut delays = Samples::new();
    let mut early = 0;
    for seen in seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values() {
        let (Some(response), Some(tail)) = (seen.response, seen.tail) else {
            continue;
        };
        // The event can reach the tail before the client has read its response.
        if tail < response {
            early += 1;
        }
        delays.push(tail.saturating_duration_since(response));
    }
    if delays.len() as u64 != calls {
        bail!("{} of {calls} calls matched to their events", delays.len());
    }
    Ok((delays, early))
}
