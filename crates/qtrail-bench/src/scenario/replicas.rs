//! Scenario 7, replicas on PostgreSQL: the postgres baseline's server (same settings) shared by
//! 1, 2 and 3 collector processes (`--store postgres://…`, each a replica with a data dir of
//! its own for its local files), publishers spread over them round-robin, for one location and
//! for two (their own rows of `collectors`, so their sequencing does not contend). Each rate is
//! recorded against the embedded engine on the same streams and against the plain `UNNEST`
//! insert of the same events, both measured in this run, with the CPU per event of the
//! collectors (all replicas) and of PostgreSQL (postmaster and backends). Skipped, saying so,
//! when PostgreSQL is absent.

use anyhow::Context as _;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::PublishRequest;
use qtrail_proto::qtrail::audit::v1::collector_admin_client::CollectorAdminClient;
use qtrail_testkit::Postgres;

use crate::events::{EventFactory, LOCATION};
use crate::machine;
use crate::process::{Files, Server};
use crate::publish::{Target, authed, connect_over, publish_to};
use crate::report::Measurement;
use crate::scenario::postgres::{self, Columns};
use crate::scenario::{ADMIN_TOKEN, AUDITOR_TOKEN, Bench, PUBLISHER_TOKEN, collector_args};

/// Replica counts measured.
pub const REPLICAS: [usize; 3] = [1, 2, 3];
/// The locations, the first `n` of which a run publishes to.
pub const LOCATIONS: [&str; 2] = [LOCATION, "eu-de"];
/// Publisher streams per location: divisible by every replica count, so each replica serves
/// as many streams as the others.
pub const STREAMS: usize = 6;
/// Events per batch.
pub const BATCH: u64 = 1000;

/// The prepared streams of one run: (location, stream, batches).
type Prepared = Vec<(&'static str, usize, Vec<PublishRequest>)>;

/// What one load achieved and cost.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Events acknowledged per second, all locations together.
    rate: f64,
    /// CPU per event of the collector processes, in µs.
    collector_us: Option<f64>,
    /// CPU per event of PostgreSQL, in µs (none for the embedded engine).
    postgres_us: Option<f64>,
    /// The one-minute load average when the load started.
    load: Option<f64>,
}

/// Runs the scenario.
///
/// # Errors
/// When PostgreSQL or a collector fails, or an event is not accepted.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    if qtrail_testkit::postgres::find_binaries().is_none() {
        bench.report.skip("replicas", &qtrail_testkit::postgres::Error::NoBinaries.to_string());
        return Ok(());
    }
    let per_stream: u64 = bench.pick(2_000, 10_000);
    let server = tokio::task::spawn_blocking(|| Postgres::start_with(postgres::SETTINGS)).await??;
    let admin = postgres::connect(&server).await?;
    let version = admin.query_one("SHOW server_version", &[]).await?.get::<_, String>(0);
    admin.batch_execute(postgres::SCHEMA).await?;
    for locations in 1..=LOCATIONS.len() {
        let prepared = prepare(&LOCATIONS[..locations], per_stream);
        let expected = per_stream * prepared.len() as u64;
        let embedded =
            collector_load(bench, &format!("embedded-l{locations}"), &[], 1, locations, &prepared, None).await?;
        admin.batch_execute("TRUNCATE events RESTART IDENTITY").await?;
        let unnest = postgres::load(&server, unnest_columns(&prepared), expected).await?;
        for replicas in REPLICAS {
            let database = format!("replicas_r{replicas}_l{locations}");
            admin.batch_execute(&format!("CREATE DATABASE {database}")).await?;
            let store = ["--store".to_owned(), server.url_of(&database)];
            let name = format!("replicas-r{replicas}-l{locations}");
            let run = collector_load(bench, &name, &store, replicas, locations, &prepared, Some(&server)).await?;
            record(bench, replicas, locations, expected, run, embedded, unnest, &version);
        }
    }
    drop(admin);
    drop(server);
    Ok(())
}

/// Returns `STREAMS` streams of `per_stream` events for each of `locations`.
fn prepare(locations: &[&'static str], per_stream: u64) -> Prepared {
    locations
        .iter()
        .enumerate()
        .flat_map(|(place, &location)| {
            (0..STREAMS).map(move |stream| {
                // Distinct streams (so distinct event ids and jobs) across locations.
                let factory = EventFactory::at(location, place * STREAMS + stream);
                (location, stream, factory.batches(per_stream, BATCH))
            })
        })
        .collect()
}

/// Returns the same events as columns for the `UNNEST` baseline, one connection per stream.
fn unnest_columns(prepared: &Prepared) -> Vec<Vec<Columns>> {
    prepared
        .iter()
        .map(|(location, stream, batches)| {
            let publisher = format!("pg-{location}-{stream}");
            batches.iter().cloned().map(|request| postgres::columns(&publisher, request)).collect()
        })
        .collect()
}

/// Starts `replicas` collectors with `extra` flags, creates the first `locations` locations'
/// collectors through the first, publishes `prepared` spread over the replicas, and returns
/// the rate and the CPU per event of the collectors and of `postgres`, if given.
///
/// # Errors
/// When a collector fails or an event is not accepted.
async fn collector_load(
    bench: &mut Bench,
    name: &str,
    extra: &[String],
    replicas: usize,
    locations: usize,
    prepared: &Prepared,
    postgres: Option<&Postgres>,
) -> anyhow::Result<Run> {
    let mut servers = Vec::new();
    for replica in 0..replicas {
        servers.push(start_replica(&bench.files(&format!("{name}-{replica}"))?, extra, replica).await?);
    }
    for location in &LOCATIONS[..locations] {
        create_location(&servers[0], location).await?;
    }
    let targets: Vec<Target> = prepared
        .iter()
        .enumerate()
        .map(|(index, (location, stream, batches))| {
            let server = &servers[index % replicas];
            Target {
                url: server.url(),
                tls: server.client_tls(),
                location: (*location).to_owned(),
                publisher_id: format!("{name}-{location}-{stream}"),
                batches: Box::new(batches.clone().into_iter()),
            }
        })
        .collect();
    let expected: u64 = prepared.iter().flat_map(|(_, _, batches)| batches).map(batch_events).sum();
    let postmaster = postgres.and_then(postmaster_pid);
    let collector_cpu = || servers.iter().map(|server| machine::cpu_seconds(server.pid())).sum::<Option<f64>>();
    let postgres_cpu = || postmaster.and_then(machine::process_tree_cpu_seconds);
    let (collectors_before, postgres_before, load) = (collector_cpu(), postgres_cpu(), machine::load_average());
    let result = publish_to(targets, PUBLISHER_TOKEN, expected).await.with_context(|| format!("load {name}"))?;
    let per_event = |after: Option<f64>, before: Option<f64>| {
        after.zip(before).map(|(after, before)| (after - before) * 1e6 / expected as f64)
    };
    let run = Run {
        rate: result.rate(),
        collector_us: per_event(collector_cpu(), collectors_before),
        postgres_us: per_event(postgres_cpu(), postgres_before),
        load,
    };
    for server in servers {
        server.stop().await?;
    }
    Ok(run)
}

/// Returns the events of a batch request.
fn batch_events(request: &PublishRequest) -> u64 {
    match &request.kind {
        Some(proto::publish_request::Kind::Batch(batch)) => batch.events.len() as u64,
        _ => 0,
    }
}

/// Starts collector replica `replica` on `files` with `extra` flags and a publisher token for
/// every location.
///
/// # Errors
/// When it does not start.
async fn start_replica(files: &Files, extra: &[String], replica: usize) -> anyhow::Result<Server> {
    let mut args = collector_args(files)?;
    let locations = LOCATIONS.map(|location| format!("\"{location}\"")).join(", ");
    let tokens = format!(
        "[[token]]\ntoken = \"{PUBLISHER_TOKEN}\"\nrole = \"publisher\"\nname = \"bench-publisher\"\nlocations = [{locations}]\n\n\
         [[token]]\ntoken = \"{AUDITOR_TOKEN}\"\nrole = \"auditor\"\nname = \"bench-auditor\"\n\n\
         [[token]]\ntoken = \"{ADMIN_TOKEN}\"\nrole = \"admin\"\nname = \"bench-admin\"\n"
    );
    std::fs::write(files.path("tokens.toml"), tokens)?;
    args.extend_from_slice(extra);
    args.extend(["--replica-id".to_owned(), format!("bench-replica-{replica}")]);
    Server::start("collector", &args, &files.path("addr")).await
}

/// Creates `location`'s collector through `server`.
async fn create_location(server: &Server, location: &str) -> anyhow::Result<()> {
    let mut admin = CollectorAdminClient::new(connect_over(&server.url(), &server.client_tls()).await?);
    admin
        .create_collector(authed(proto::CreateCollectorRequest { location: location.into() }, ADMIN_TOKEN))
        .await
        .with_context(|| format!("cannot create the collector of {location}"))?;
    Ok(())
}

/// Returns the postmaster's process id, from its data directory's `postmaster.pid`.
fn postmaster_pid(server: &Postgres) -> Option<u32> {
    let pid_file = std::fs::read_to_string(server.socket_dir().join("data").join("postmaster.pid")).ok()?;
    pid_file.lines().next()?.trim().parse().ok()
}

/// Records one replicas × locations run against the embedded engine and the `UNNEST` insert.
#[allow(clippy::too_many_arguments)]
fn record(
    bench: &mut Bench,
    replicas: usize,
    locations: usize,
    expected: u64,
    run: Run,
    embedded: Run,
    unnest: f64,
    version: &str,
) {
    let us = |value: Option<f64>| value.map_or_else(|| "?".to_owned(), |us| format!("{us:.1}"));
    let mut note = format!(
        "PostgreSQL {version}: {expected} events, {locations} location(s) x {STREAMS} streams, batches of {BATCH}, \
         spread over {replicas} replica(s); CPU us/event collectors {} (embedded {}), PostgreSQL {}; load {}",
        us(run.collector_us),
        us(embedded.collector_us),
        us(run.postgres_us),
        run.load.map_or_else(|| "?".to_owned(), |load| format!("{load:.2}")),
    );
    if bench.quick {
        note.push_str("; quick: small N");
    }
    let suffix = format!("r{replicas}.l{locations}");
    bench.report.record(
        Measurement::new(format!("replicas.postgres.{suffix}"), run.rate, "events/s", "embedded engine", embedded.rate)
            .note(note),
    );
    bench.report.record(
        Measurement::new(format!("replicas.postgres_vs_unnest.{suffix}"), run.rate, "events/s", "postgres", unnest)
            .note(format!(
                "the plain UNNEST insert of the same events, {} batches in flight per connection",
                postgres::WINDOW
            )),
    );
}
