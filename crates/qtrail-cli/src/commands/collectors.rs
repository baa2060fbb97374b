//! `qtrail collectors create | list | get | retention | hold`.

use std::io::Write;

use qtrail_proto::qtrail::audit::v1::{
    Collector, CreateCollectorRequest, GetCollectorRequest, ListCollectorsRequest,
    collector_admin_client::CollectorAdminClient,
};
use serde_json::{Value, json};

use crate::cli::{CollectorsCommand, OutputFormat};
use crate::connect::{Settings, authorized};
use crate::error::CliError;
use crate::output::{Table, write_fields, write_json};
use crate::timearg::format_time;

/// Runs one `collectors` subcommand.
///
/// # Errors
/// Connection, authorisation and RPC errors.
pub async fn run(command: CollectorsCommand, settings: &Settings, out: &mut dyn Write) -> Result<(), CliError> {
    let token = settings.admin_token()?;
    let mut client = CollectorAdminClient::new(settings.collector_channel().await?);
    match command {
        CollectorsCommand::Create { location } => {
            let collector =
                client.create_collector(authorized(CreateCollectorRequest { location }, &token)?).await?.into_inner();
            print_one(settings.output, &collector, out)
        }
        CollectorsCommand::Get { location } => {
            let collector =
                client.get_collector(authorized(GetCollectorRequest { location }, &token)?).await?.into_inner();
            print_one(settings.output, &collector, out)
        }
        CollectorsCommand::Retention(command) => {
            super::retention::retention(command, &mut client, &token, settings, out).await
        }
        CollectorsCommand::Hold(command) => super::retention::hold(command, &mut client, &token, settings, out).await,
        CollectorsCommand::List => {
            let list = client.list_collectors(authorized(ListCollectorsRequest {}, &token)?).await?.into_inner();
            if settings.output == OutputFormat::Json {
                let items: Vec<Value> = list.collectors.iter().map(collector_json).collect();
                write_json(out, &json!({ "collectors": items }))?;
                return Ok(());
            }
            let mut table = Table::new(&["LOCATION", "EVENTS", "CREATED", "HEAD"]);
            for collector in &list.collectors {
                table.row(vec![
                    collector.location.clone(),
                    collector.event_count.to_string(),
                    format_time(collector.create_time.as_ref()),
                    hex::encode(&collector.head_chain_hash),
                ]);
            }
            table.write(out)?;
            Ok(())
        }
    }
}

fn print_one(output: OutputFormat, collector: &Collector, out: &mut dyn Write) -> Result<(), CliError> {
    match output {
        OutputFormat::Json => write_json(out, &collector_json(collector))?,
        OutputFormat::Table => write_fields(
            out,
            &[
                ("location", collector.location.clone()),
                ("events", collector.event_count.to_string()),
                ("created", format_time(collector.create_time.as_ref())),
                ("head chain hash", hex::encode(&collector.head_chain_hash)),
            ],
        )?,
    }
    Ok(())
}

fn collector_json(collector: &Collector) -> Value {
    json!({
        "location": collector.location,
        "eventCount": collector.event_count,
        "createTime": format_time(collector.create_time.as_ref()),
        "headChainHash": hex::encode(&collector.head_chain_hash),
    })
}
