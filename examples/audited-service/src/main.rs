//! Runs the example catalogue for a few calls another service makes, publishes their audit
//! events to a collector, and exits once the collector has acknowledged every one of them (or
//! fails after `--drain-secs`). Prints each event's id, one a line.
//!
//! `audited-service --collector http://127.0.0.1:7000 --token <publisher token> --data-dir /tmp/catalogue`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use audited_service::Catalogue;
use clap::Parser;
use qtrail_cadf::event::INITIATOR_SERVICE_ID;
use qtrail_cadf::{Initiator, Location};
use qtrail_publisher::{Publisher, PublisherConfig};

#[derive(Debug, Parser)]
struct Args {
    /// URL of the collector of the location.
    #[arg(long)]
    collector: String,
    /// Publisher token for the collector (a secret).
    #[arg(long, env = "AUDITED_SERVICE_TOKEN", hide_env_values = true)]
    token: String,
    /// Location of this service instance and of the collector.
    #[arg(long, default_value = "us-east")]
    location: Location,
    /// Account that owns the catalogue instance its events name.
    #[arg(long, default_value = "acc-example")]
    account: String,
    /// Directory of the catalogue's database.
    #[arg(long)]
    data_dir: PathBuf,
    /// How long to wait for the collector to acknowledge every event.
    #[arg(long, default_value_t = 30)]
    drain_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir).context("cannot create the data directory")?;
    let db =
        Arc::new(redb::Database::create(args.data_dir.join("catalogue.redb")).context("cannot open the database")?);
    let catalogue = Catalogue::open(db, &args.location, &args.account, "catalogue-1")?;
    let mut config = PublisherConfig::new(args.collector, args.location);
    config.token = Some(args.token);
    let publisher = Publisher::spawn(catalogue.outbox().clone(), config)?;

    // The calls of a scheduler service: the catalogue audits them as service-to-service calls.
    let caller = Initiator {
        id: "iam-ServiceId-scheduler".into(),
        name: "scheduler".into(),
        type_uri: INITIATOR_SERVICE_ID.into(),
        credential_type: "apikey-serviceid".into(),
        host_address: "127.0.0.1".into(),
        host_agent: "audited-service-example".into(),
    };
    let ids = [
        catalogue.put(&caller, "bell", "OPENQASM 2.0; qreg q[2];")?,
        catalogue.put(&caller, "bell", "OPENQASM 2.0; qreg q[2]; creg c[2];")?,
        catalogue.delete(&caller, "bell")?,
        catalogue.delete(&caller, "ghz")?,
    ];
    for id in ids {
        println!("{id}");
    }
    if !publisher.shutdown(Duration::from_secs(args.drain_secs)).await {
        bail!("the collector did not acknowledge every event within {}s", args.drain_secs);
    }
    Ok(())
}
