//! Scenario 2, audit overhead: GetJob and CreateJob throughput of concurrent clients against a
//! runtime with the real outbox, publisher and collector, and against the same runtime with
//! the discarding audit sink (`qtrail_publisher::AuditSink`, feature `testing`), which is the
//! runtime as it would be without auditing. Target: audited reads >= 0.9 of unaudited reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use qtrail_proto::qtrail::runtime::v1 as pb;
use qtrail_proto::qtrail::runtime::v1::job_service_client::JobServiceClient;
use qtrail_proto::qtrail::runtime::v1::program_service_client::ProgramServiceClient;
use tonic::transport::Channel;

use crate::process::Server;
use crate::publish::{authed, connect};
use crate::report::Measurement;
use crate::scenario::{API_KEY, Bench, start_collector, start_runtime};

/// A one-qubit circuit: jobs of it cost the simulator next to nothing.
pub const COIN: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[1];\ncreg c[1];\nh q[0];\nmeasure q -> c;\n";
/// Concurrent clients.
const CLIENTS: usize = 32;
/// Connections the clients share.
const CONNECTIONS: usize = 4;

/// The runtime call a client repeats.
#[derive(Debug, Clone, Copy)]
enum Call {
    GetJob,
    CreateJob,
}

/// A runtime ready for load: its URL, one program and one job of it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Connections to the runtime.
    pub channels: Vec<Channel>,
    /// A program of the principal.
    pub program_id: String,
    /// A job of that program.
    pub job_id: String,
}

/// Returns the params of a one-shot job.
pub fn one_shot() -> prost_types::Struct {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("shots".to_owned(), prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(1.0)) });
    prost_types::Struct { fields }
}

/// Connects to `runtime` and creates a program and a job to read.
///
/// # Errors
/// When the runtime refuses.
pub async fn prepare(runtime: &Server) -> anyhow::Result<Target> {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(connect(&runtime.url()).await?);
    }
    // Names are unique per account; each preparation gets its own program.
    let name = format!("coin-{}", uuid::Uuid::new_v4());
    let create = pb::CreateProgramRequest { name, source: COIN.into(), ..Default::default() };
    let program = ProgramServiceClient::new(channels[0].clone())
        .create_program(authed(create, API_KEY))
        .await
        .context("cannot create the program")?
        .into_inner();
    let job = pb::CreateJobRequest { program_id: program.id.clone(), params: Some(one_shot()), ..Default::default() };
    let job = JobServiceClient::new(channels[0].clone())
        .create_job(authed(job, API_KEY))
        .await
        .context("cannot create the job")?
        .into_inner();
    Ok(Target { channels, program_id: program.id, job_id: job.id })
}

/// What a throughput run achieved, and the CPU it cost each server process.
#[derive(Debug, Clone)]
struct Run {
    /// Calls per second.
    rate: f64,
    /// Calls completed.
    calls: u64,
    /// CPU seconds each watched process used during the run, in the order given.
    cpu: Vec<f64>,
}

impl Run {
    /// Returns the CPU of watched process `index` per call, in microseconds.
    fn micros_per_call(&self, index: usize) -> f64 {
        self.cpu.get(index).copied().unwrap_or(f64::NAN) * 1e6 / self.calls.max(1) as f64
    }
}

/// Runs [`throughput`] and reads the CPU time of the processes `watched` before and after.
async fn measured(target: &Target, call: Call, duration: Duration, watched: &[u32]) -> anyhow::Result<Run> {
    let cpu = || watched.iter().map(|pid| crate::machine::cpu_seconds(*pid).unwrap_or(f64::NAN)).collect::<Vec<_>>();
    let before = cpu();
    let (rate, calls) = throughput(target, call, duration).await?;
    let cpu = cpu().iter().zip(before).map(|(after, before)| after - before).collect();
    Ok(Run { rate, calls, cpu })
}

/// Runs `CLIENTS` clients repeating `call` for `duration` and returns calls per second and
/// calls completed.
async fn throughput(target: &Target, call: Call, duration: Duration) -> anyhow::Result<(f64, u64)> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let channel = target.channels[client % target.channels.len()].clone();
        let (program_id, job_id) = (target.program_id.clone(), target.job_id.clone());
        let (done, stop) = (done.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut jobs = JobServiceClient::new(channel);
            while !stop.load(Ordering::Relaxed) {
                match call {
                    Call::GetJob => {
                        jobs.get_job(authed(pb::GetJobRequest { id: job_id.clone() }, API_KEY)).await?;
                    }
                    Call::CreateJob => {
                        let request = pb::CreateJobRequest {
                            program_id: program_id.clone(),
                            params: Some(one_shot()),
                            ..Default::default()
                        };
                        jobs.create_job(authed(request, API_KEY)).await?;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    for client in clients {
        client.await.context("a client panicked")?.context("a call failed")?;
    }
    Ok((counted as f64 / elapsed.as_secs_f64(), counted))
}

/// Runs the scenario.
///
/// # Errors
/// When a server fails or a call fails.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let duration = Duration::from_secs(bench.pick(3, 10));
    let collector_files = bench.files("overhead-collector")?;
    let collector = start_collector(&collector_files).await?;
    let plain_files = bench.files("overhead-runtime-unaudited")?;
    let plain = start_runtime(&plain_files, &collector.url(), true).await?;
    let audited_files = bench.files("overhead-runtime-audited")?;
    let audited = start_runtime(&audited_files, &collector.url(), false).await?;
    let plain_target = prepare(&plain).await?;
    let audited_target = prepare(&audited).await?;
    for (call, name, note) in [
        (Call::GetJob, "get_job", "target >= 0.9"),
        (Call::CreateJob, "create_job", "jobs of one shot on one qubit; the executor runs them too"),
    ] {
        let unaudited = measured(&plain_target, call, duration, &[plain.pid()]).await?;
        let with_audit = measured(&audited_target, call, duration, &[audited.pid(), collector.pid()]).await?;
        bench.report.record(
            Measurement::new(
                format!("overhead.{name}.audited"),
                with_audit.rate,
                "calls/s",
                "unaudited runtime",
                unaudited.rate,
            )
            .note(format!("{CLIENTS} clients, {} s each; {note}", duration.as_secs())),
        );
        // Where the audit's cost goes: the runtime's own CPU per call, and the collector's,
        // which in production runs on other machines.
        bench.report.record(
            Measurement::new(
                format!("overhead.{name}.runtime_cpu"),
                with_audit.micros_per_call(0),
                "us/call",
                "unaudited runtime",
                unaudited.micros_per_call(0),
            )
            .note("CPU time of the runtime process (all threads, user and system) per call"),
        );
        bench.report.record(
            Measurement::new(
                format!("overhead.{name}.collector_cpu"),
                with_audit.micros_per_call(1),
                "us/event",
                "audited runtime",
                with_audit.micros_per_call(0),
            )
            .note("CPU time of the collector process per audited call (one event each)"),
        );
    }
    plain.stop().await?;
    audited.stop().await?;
    collector.stop().await?;
    Ok(())
}
