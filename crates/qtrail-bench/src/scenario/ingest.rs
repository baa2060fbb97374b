//! Scenario 1, ingest: N publisher streams (1, 4, 16) pushing ~600-byte events in batches of
//! 100 and 1000 into a collector on its embedded store, in events per second durably
//! acknowledged, against the same streams into the ack-only server (the tonic ceiling) and into
//! the durable-append ceiling (the same server appending each batch's event bytes to one file,
//! one fdatasync per batch), with the store's bytes per event against the protobuf event. Also
//! the collector's peak RSS under this load, against its RSS when idle, and what mutual TLS
//! costs: the same load into a collector that requires client certificates, against the
//! plaintext collector in the same run.

use qtrail_collector::store::FileStore;
use qtrail_proto::qtrail::audit::v1::PublishRequest;
use qtrail_server::tls::testing::TestPki;

use crate::events::EventFactory;
use crate::publish::{Batches, LoadResult, publish};
use crate::report::Measurement;
use crate::scenario::{
    Bench, PUBLISHER_TOKEN, indexes_caught_up, start_ceiling, start_collector_with_metrics, start_durable_ceiling,
};

/// Stream counts measured.
pub const STREAMS: [usize; 3] = [1, 4, 16];
/// Batch sizes measured.
pub const BATCHES: [u64; 2] = [100, 1000];

/// Measured collector rates, for the PostgreSQL comparison: (streams, batch, events/s).
pub type Rates = Vec<(usize, u64, f64)>;

/// Returns each stream's batches of `per_stream` fresh events.
fn prepare(streams: usize, per_stream: u64, batch: u64) -> Vec<Vec<PublishRequest>> {
    (0..streams).map(|stream| EventFactory::new(stream).batches(per_stream, batch)).collect()
}

fn boxed(prepared: Vec<Vec<PublishRequest>>) -> Vec<Batches> {
    prepared.into_iter().map(|batches| Box::new(batches.into_iter()) as Batches).collect()
}

/// Runs the scenario and returns the collector's rates.
///
/// # Errors
/// When a server fails or an event is not accepted.
pub async fn run(bench: &mut Bench) -> anyhow::Result<Rates> {
    let total: u64 = bench.pick(48_000, 320_000);
    let configs: Vec<(usize, u64)> =
        STREAMS.iter().flat_map(|&streams| BATCHES.iter().map(move |&batch| (streams, batch))).collect();
    let (rates, rss) = measure_with_rss(bench, &configs, total).await?;
    bench.report.record(
        Measurement::new("ingest.collector_peak_rss", rss.peak, "MiB", "idle collector RSS", rss.idle)
            .note("largest VmHWM of the collector processes of this scenario"),
    );
    measure_mutual_tls(bench, total).await?;
    Ok(rates)
}

/// Streams and batch size of the mutual-TLS comparison.
const TLS_CONFIG: (usize, u64) = (4, 1000);

/// Measures the same load into a plaintext collector and into one that requires mutual TLS,
/// one after the other, and records the TLS rate against the plaintext one.
///
/// # Errors
/// When a server fails or an event is not accepted.
async fn measure_mutual_tls(bench: &mut Bench, total: u64) -> anyhow::Result<()> {
    let (streams, batch) = TLS_CONFIG;
    let per_stream = total / streams as u64;
    let expected = per_stream * streams as u64;
    let prepared = prepare(streams, per_stream, batch);
    let pki = TestPki::create(&bench.scratch().join("pki"), "qtrail bench");
    let plain = collector_run(bench, "tls-baseline", None, prepared.clone(), expected).await?;
    let mutual = collector_run(bench, "tls-mutual", Some(&pki), prepared, expected).await?;
    let mut measurement = Measurement::new(
        format!("ingest.collector_mtls.s{streams}.b{batch}"),
        mutual.rate,
        "events/s",
        "plaintext collector",
        plain.rate,
    )
    .note(format!("{expected} events over mutual TLS (TLS 1.3, ECDSA P-256)"));
    if let (Some(tls), Some(plaintext)) = (mutual.cpu_us, plain.cpu_us) {
        measurement.note.push_str(&format!("; collector CPU {tls:.1} vs {plaintext:.1} us/event"));
    }
    bench.report.record(measurement);
    Ok(())
}

/// What one load into a collector achieved.
#[derive(Debug, Clone, Copy)]
struct CollectorRun {
    /// Events durably acknowledged per second.
    rate: f64,
    /// The collector's CPU per event, its indexing included.
    cpu_us: Option<f64>,
    /// The collector's RSS once started and its peak RSS, when `/proc` tells both.
    rss: Option<Rss>,
    /// The store's size on disk (log and index) per event, when it can be read.
    bytes_per_event: Option<f64>,
}

/// Starts a collector on a new store (serving mutual TLS with `pki`), sends it `prepared`,
/// waits for its indexes, and stops it.
///
/// # Errors
/// When a server fails or an event is not accepted.
async fn collector_run(
    bench: &mut Bench,
    name: &str,
    pki: Option<&TestPki>,
    prepared: Vec<Vec<PublishRequest>>,
    expected: u64,
) -> anyhow::Result<CollectorRun> {
    let files = bench.files(name)?;
    let (collector, metrics) = start_collector_with_metrics(&files, pki, &[]).await?;
    let idle = crate::machine::rss_mib(collector.pid());
    let cpu_before = crate::machine::cpu_seconds(collector.pid());
    let result: LoadResult = publish(&collector, PUBLISHER_TOKEN, name, boxed(prepared), expected).await?;
    // Steadier than the rate on a noisy machine: what each event cost the collector, its
    // indexing included (which may go on after the last Ack).
    indexes_caught_up(&metrics).await?;
    let cpu = crate::machine::cpu_seconds(collector.pid()).zip(cpu_before).map(|(after, before)| after - before);
    let peak = collector.peak_rss_mib();
    collector.stop().await?;
    let store_bytes = [FileStore::FILE_NAME, FileStore::INDEX_FILE_NAME]
        .iter()
        .map(|name| std::fs::metadata(files.path("data").join(name)).map(|metadata| metadata.len()))
        .sum::<std::io::Result<u64>>()
        .ok();
    let rss = idle.zip(peak).map(|(idle, peak)| Rss { peak, idle });
    Ok(CollectorRun {
        rate: result.rate(),
        cpu_us: cpu.map(|cpu| cpu * 1e6 / expected as f64),
        rss,
        bytes_per_event: store_bytes.map(|bytes| bytes as f64 / expected as f64),
    })
}

/// Measures the collector against the ceiling for each (streams, batch) of `configs`, with
/// `total` events each, and records the results.
///
/// # Errors
/// When a server fails or an event is not accepted.
pub async fn measure(bench: &mut Bench, configs: &[(usize, u64)], total: u64) -> anyhow::Result<Rates> {
    Ok(measure_with_rss(bench, configs, total).await?.0)
}

/// The collector's memory under load: of one collector, or over several (the largest peak,
/// the smallest idle).
#[derive(Debug, Clone, Copy)]
struct Rss {
    /// Peak RSS under load, in MiB.
    peak: f64,
    /// RSS just after start, in MiB.
    idle: f64,
}

async fn measure_with_rss(bench: &mut Bench, configs: &[(usize, u64)], total: u64) -> anyhow::Result<(Rates, Rss)> {
    let ceiling_files = bench.files("ceiling")?;
    let ceiling = start_ceiling(&ceiling_files).await?;
    let durable_files = bench.files("durable-ceiling")?;
    let durable = start_durable_ceiling(&durable_files).await?;
    let mut rates = Vec::new();
    let mut rss = Rss { peak: 0.0, idle: f64::MAX };
    for &(streams, batch) in configs {
        let per_stream = total / streams as u64;
        let expected = per_stream * streams as u64;
        let prepared = prepare(streams, per_stream, batch);
        let copy = prepared.clone();
        let run = format!("ceiling-s{streams}-b{batch}");
        let ceiling_rate = publish(&ceiling, PUBLISHER_TOKEN, &run, boxed(copy), expected).await?.rate();
        let run = format!("durable-ceiling-s{streams}-b{batch}");
        let durable_rate = publish(&durable, PUBLISHER_TOKEN, &run, boxed(prepared.clone()), expected).await?.rate();

        let run = collector_run(bench, &format!("ingest-s{streams}-b{batch}"), None, prepared, expected).await?;
        if let Some(run_rss) = run.rss {
            rss.idle = rss.idle.min(run_rss.idle);
            rss.peak = rss.peak.max(run_rss.peak);
        }
        let rate = run.rate;
        rates.push((streams, batch, rate));
        let name = format!("ingest.collector.s{streams}.b{batch}");
        let mut measurement = Measurement::new(name, rate, "events/s", "ack-only server", ceiling_rate)
            .note(format!("{expected} events; target >= 250000 events/s"));
        if let Some(micros) = run.cpu_us {
            measurement.note.push_str(&format!("; collector CPU {micros:.1} us/event"));
        }
        if bench.quick {
            measurement.note.push_str("; quick: small N");
        }
        bench.report.record(measurement);
        bench.report.record(
            Measurement::new(
                format!("ingest.collector_vs_durable_append.s{streams}.b{batch}"),
                rate,
                "events/s",
                "durable-append ceiling",
                durable_rate,
            )
            .note("target >= 0.3 of the durable-append ceiling"),
        );
        if let Some(bytes) = run.bytes_per_event {
            let event_bytes = EventFactory::new(0).event_bytes();
            bench.report.record(
                Measurement::new(
                    format!("ingest.store_bytes_per_event.s{streams}.b{batch}"),
                    bytes,
                    "bytes",
                    "protobuf event",
                    event_bytes,
                )
                .note("commit log and index; target <= 1.5 x the protobuf event"),
            );
        }
    }
    ceiling.stop().await?;
    durable.stop().await?;
    Ok((rates, rss))
}
