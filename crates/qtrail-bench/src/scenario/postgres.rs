//! Scenario 5, a PostgreSQL baseline for ingest: when PostgreSQL's server binaries are on this
//! machine, the harness starts its own server (a temporary data directory, a unix socket, no
//! TCP; stopped when dropped) and inserts the same events batch by batch with `UNNEST`, one
//! durable commit per batch (`fsync` and `synchronous_commit` on, PostgreSQL's defaults), with
//! an index per query field as the collector keeps. The collector's rate for the same streams
//! and batches is recorded against it. Skipped, saying so, when PostgreSQL is absent.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::bail;
use futures_util::StreamExt as _;
use prost::Message as _;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::PublishRequest;
use qtrail_proto::qtrail::audit::v1::publish_request::Kind;
use qtrail_testkit::Postgres;

use crate::events::EventFactory;
use crate::report::Measurement;
use crate::scenario::Bench;
use crate::scenario::ingest::Rates;

/// Server settings: room for the load's WAL, PostgreSQL's durable defaults spelled out.
pub(crate) const SETTINGS: &[&str] = &["shared_buffers=256MB", "max_wal_size=8GB", "fsync=on", "synchronous_commit=on"];
/// Batches one connection keeps in flight, as a publisher keeps unacknowledged batches.
pub(crate) const WINDOW: usize = 8;

pub(crate) const SCHEMA: &str = "
CREATE TABLE events (
    location_seq bigserial PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    event_time timestamptz NOT NULL,
    action text NOT NULL,
    outcome int2 NOT NULL,
    severity int2 NOT NULL,
    initiator text NOT NULL,
    target text NOT NULL,
    correlation_id text NOT NULL,
    publisher text NOT NULL,
    seq int8 NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX events_initiator ON events (initiator, location_seq);
CREATE INDEX events_target ON events (target, location_seq);
CREATE INDEX events_action_time ON events (action, event_time);
CREATE INDEX events_correlation ON events (correlation_id);
CREATE INDEX events_outcome ON events (outcome, location_seq);
CREATE INDEX events_severity ON events (severity, location_seq);
";

const INSERT: &str = "
INSERT INTO events (id, event_time, action, outcome, severity, initiator, target, correlation_id, publisher, seq, body)
SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::int2[], $5::int2[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::int8[], $11::bytea[])
ON CONFLICT (id) DO NOTHING";

/// Connects to the harness's server.
pub(crate) async fn connect(server: &Postgres) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The columns of one batch.
#[derive(Debug, Default, Clone)]
pub(crate) struct Columns {
    id: Vec<uuid::Uuid>,
    time: Vec<SystemTime>,
    action: Vec<String>,
    outcome: Vec<i16>,
    severity: Vec<i16>,
    initiator: Vec<String>,
    target: Vec<String>,
    correlation: Vec<String>,
    publisher: Vec<String>,
    seq: Vec<i64>,
    body: Vec<Vec<u8>>,
}

pub(crate) fn columns(publisher: &str, request: PublishRequest) -> Columns {
    let mut columns = Columns::default();
    let Some(Kind::Batch(batch)) = request.kind else {
        return columns;
    };
    for published in batch.events {
        let Ok(event) = proto::AuditEvent::decode(published.event.as_ref()) else {
            continue;
        };
        columns.id.push(event.id.parse().unwrap_or_default());
        columns
            .time
            .push(event.event_time.and_then(|time| SystemTime::try_from(time).ok()).unwrap_or(SystemTime::UNIX_EPOCH));
        columns.action.push(event.action.clone());
        columns.outcome.push(i16::try_from(event.outcome).unwrap_or_default());
        columns.severity.push(i16::try_from(event.severity).unwrap_or_default());
        columns.initiator.push(event.initiator.as_ref().map(|i| i.id.clone()).unwrap_or_default());
        columns.target.push(event.target.as_ref().map(|t| t.id.clone()).unwrap_or_default());
        columns.correlation.push(event.correlation_id.clone());
        columns.publisher.push(publisher.to_owned());
        columns.seq.push(i64::try_from(published.seq).unwrap_or_default());
        columns.body.push(event.encode_to_vec());
    }
    columns
}

/// Inserts every stream's batches, one connection per stream; returns events per second.
pub(crate) async fn load(server: &Postgres, streams: Vec<Vec<Columns>>, expected: u64) -> anyhow::Result<f64> {
    let mut clients = Vec::new();
    for batches in streams {
        let client = connect(server).await?;
        let statement = client.prepare(INSERT).await?;
        clients.push((Arc::new(client), statement, batches));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, statement, batches) in clients {
        tasks.push(tokio::spawn(async move {
            let mut inserted = 0;
            let mut results = futures_util::stream::iter(batches)
                .map(|c| {
                    let (client, statement) = (client.clone(), statement.clone());
                    async move {
                        client
                            .execute(
                                &statement,
                                &[
                                    &c.id,
                                    &c.time,
                                    &c.action,
                                    &c.outcome,
                                    &c.severity,
                                    &c.initiator,
                                    &c.target,
                                    &c.correlation,
                                    &c.publisher,
                                    &c.seq,
                                    &c.body,
                                ],
                            )
                            .await
                    }
                })
                .buffered(WINDOW);
            while let Some(result) = results.next().await {
                inserted += result?;
            }
            anyhow::Ok(inserted)
        }));
    }
    let mut inserted = 0;
    for task in tasks {
        inserted += task.await??;
    }
    let elapsed = started.elapsed();
    if inserted != expected {
        bail!("postgres inserted {inserted} of {expected} events");
    }
    Ok(inserted as f64 / elapsed.as_secs_f64())
}

/// Runs the scenario, comparing with the collector's `rates` from the ingest scenario
/// (measuring them here when that scenario did not run).
///
/// # Errors
/// When PostgreSQL fails to start or to insert.
pub async fn run(bench: &mut Bench, rates: Option<Rates>) -> anyhow::Result<()> {
    if qtrail_testkit::postgres::find_binaries().is_none() {
        bench.report.skip("postgres", &qtrail_testkit::postgres::Error::NoBinaries.to_string());
        return Ok(());
    }
    let total: u64 = bench.pick(48_000, 320_000);
    let configs: Vec<(usize, u64)> =
        bench.pick(vec![(4, 1000), (16, 100)], vec![(1, 1000), (4, 100), (4, 1000), (16, 100), (16, 1000)]);
    let rates = match rates {
        Some(rates) => rates,
        None => crate::scenario::ingest::measure(bench, &configs, total).await?,
    };
    // The server's start-up blocks (initdb, then polling until it accepts connections).
    let server = tokio::task::spawn_blocking(|| Postgres::start_with(SETTINGS)).await??;
    let admin = connect(&server).await?;
    let version = admin.query_one("SHOW server_version", &[]).await?.get::<_, String>(0);
    admin.batch_execute(SCHEMA).await?;
    for (streams, batch) in configs {
        let per_stream = total / streams as u64;
        let expected = per_stream * streams as u64;
        let prepared: Vec<Vec<Columns>> = (0..streams)
            .map(|stream| {
                let publisher = format!("pg-{stream}");
                EventFactory::new(stream)
                    .batches(per_stream, batch)
                    .into_iter()
                    .map(|request| columns(&publisher, request))
                    .collect()
            })
            .collect();
        admin.batch_execute("TRUNCATE events RESTART IDENTITY").await?;
        let pg_rate = load(&server, prepared, expected).await?;
        let Some(&(_, _, collector_rate)) = rates.iter().find(|(s, b, _)| (*s, *b) == (streams, batch)) else {
            continue;
        };
        bench.report.record(
            Measurement::new(
                format!("ingest.collector_vs_postgres.s{streams}.b{batch}"),
                collector_rate,
                "events/s",
                "postgres",
                pg_rate,
            )
            .note(format!(
                "PostgreSQL {version}: {expected} events, UNNEST insert per batch, 6 indexes, no hash chain, {WINDOW} batches in flight per connection"
            )),
        );
    }
    drop(admin);
    drop(server);
    Ok(())
}
