//! `qtrail events query | tail | verify | export | publishers | checkpoints | prove | monitor`: the
//! auditor's commands, one module each; what several share (the session, filters, event rows, the
//! chain's end) is here.

mod checkpoints;
mod consistency;
mod export;
mod monitor;
mod prove;
mod publishers;
mod query;
mod tail;
mod verify;
mod witnesses;

use std::io::Write;

pub(crate) use checkpoints::read_public_keys;

use qtrail_cadf::{AuditEvent, at_json};
use qtrail_proto::qtrail::audit::v1::{
    ChainFaultKind, EventFilter, ListCollectorsRequest, Order, Outcome, QueryEventsRequest, SeqRange, Severity,
    StoredEvent, collector_admin_client::CollectorAdminClient, event_query_client::EventQueryClient,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::cli::{EventFilterArgs, EventsCommand, OutputFormat, SeqRangeArgs};
use crate::connect::{Settings, authorized};
use crate::error::CliError;
use crate::timearg::{format_time, parse_time};

/// What every `events` subcommand works on: the query client, the auditor's token, the location
/// and the output format.
struct Session {
    client: EventQueryClient<Channel>,
    token: String,
    location: String,
    output: OutputFormat,
}

/// Runs one `events` subcommand.
///
/// # Errors
/// Connection, argument and RPC errors; [`CliError::ChainBroken`] when verification fails.
pub async fn run(command: EventsCommand, settings: &Settings, out: &mut dyn Write) -> Result<(), CliError> {
    let token = settings.auditor_token()?;
    let channel = settings.collector_channel().await?;
    let location = match settings.configured_location() {
        Some(location) => location,
        None => only_location(channel.clone(), &token).await?,
    };
    let session = Session { client: EventQueryClient::new(channel), token, location, output: settings.output };
    match command {
        EventsCommand::Query(args) => query::query(session, args, out).await,
        EventsCommand::Tail(args) => tail::tail(session, args, out).await,
        EventsCommand::Verify(args) => verify::verify(session, args, out).await,
        EventsCommand::Export(args) => export::export(session, args, out).await,
        EventsCommand::Checkpoints(args) => checkpoints::checkpoints(session, args, out).await,
        EventsCommand::Publishers => publishers::publishers(session, out).await,
        EventsCommand::Prove(args) => prove::prove(session, args, out).await,
        EventsCommand::Monitor(args) => monitor::monitor(session, args, out).await,
    }
}

/// Columns of the event table.
const EVENT_COLUMNS: [&str; 8] = ["SEQ", "TIME", "ACTION", "OUTCOME", "SEVERITY", "INITIATOR", "TARGET", "MESSAGE"];

pub(super) fn event_row(stored: &StoredEvent) -> Vec<String> {
    let event = stored.event.clone().unwrap_or_default();
    let initiator = event.initiator.unwrap_or_default();
    let target = event.target.unwrap_or_default();
    let name_or = |name: String, id: String| if name.is_empty() { id } else { name };
    vec![
        stored.location_seq.to_string(),
        format_time(event.event_time.as_ref()),
        event.action.trim_start_matches("quantum-computing.").to_owned(),
        Outcome::try_from(event.outcome)
            .map(|o| o.as_str_name().trim_start_matches("OUTCOME_").to_lowercase())
            .unwrap_or_default(),
        Severity::try_from(event.severity)
            .map(|s| s.as_str_name().trim_start_matches("SEVERITY_").to_lowercase())
            .unwrap_or_default(),
        name_or(initiator.name, initiator.id),
        target_label(target.name, &target.id),
        event.message,
    ]
}

/// Returns how a target reads in a table: its name, else its resource id, else (for a list or a
/// failed create, which target the whole service instance) `instance <id>`.
fn target_label(name: String, crn: &str) -> String {
    if !name.is_empty() {
        return name;
    }
    match crn.parse::<qtrail_cadf::Crn>() {
        Ok(crn) if crn.is_instance() => format!("instance {}", crn.service_instance()),
        Ok(crn) => crn.resource_id().to_owned(),
        Err(_) => crn.to_owned(),
    }
}

/// Returns a stored event as JSON: its chain position and hashes, its publisher, and the
/// event itself in AT-JSON form.
pub fn stored_event_json(stored: &StoredEvent) -> Value {
    let event = match stored.event.clone().map(AuditEvent::try_from) {
        Some(Ok(event)) => at_json::to_value(&event),
        Some(Err(err)) => json!({ "undecodable": err.to_string() }),
        None => Value::Null,
    };
    let publisher = stored.publisher.clone().unwrap_or_default();
    json!({
        "location": stored.location,
        "locationSeq": stored.location_seq,
        "chainHash": hex::encode(&stored.chain_hash),
        "prevChainHash": hex::encode(&stored.prev_chain_hash),
        "receiveTime": format_time(stored.receive_time.as_ref()),
        "publisher": {
            "id": publisher.id, "epoch": publisher.epoch, "seq": publisher.seq, "credential": publisher.credential,
        },
        "event": event,
    })
}

pub(crate) fn build_filter(args: &EventFilterArgs) -> Result<EventFilter, CliError> {
    let now = chrono::Utc::now();
    let outcome = match args.outcome.as_deref() {
        Some("success") => Outcome::Success,
        Some("failure") => Outcome::Failure,
        Some("pending") => Outcome::Pending,
        _ => Outcome::Unspecified,
    };
    let severity = match args.severity.as_deref() {
        Some("normal") => Severity::Normal,
        Some("warning") => Severity::Warning,
        Some("critical") => Severity::Critical,
        _ => Severity::Unspecified,
    };
    Ok(EventFilter {
        start_time: args.since.as_deref().map(|t| parse_time("--since", t, now)).transpose()?,
        end_time: args.until.as_deref().map(|t| parse_time("--until", t, now)).transpose()?,
        action: args.action.clone().unwrap_or_default(),
        outcome: outcome as i32,
        severity: severity as i32,
        initiator_id: args.initiator.clone().unwrap_or_default(),
        target_id: args.target.clone().unwrap_or_default(),
        correlation_id: args.correlation_id.clone().unwrap_or_default(),
    })
}

pub(super) fn filter_is_empty(args: &EventFilterArgs) -> bool {
    [
        &args.action,
        &args.outcome,
        &args.severity,
        &args.initiator,
        &args.target,
        &args.correlation_id,
        &args.since,
        &args.until,
    ]
    .iter()
    .all(|value| value.is_none())
}

pub(super) fn seq_range(range: &SeqRangeArgs) -> SeqRange {
    SeqRange { from_seq: range.from_seq.unwrap_or(0), to_seq: range.to_seq.unwrap_or(0) }
}

/// Returns the location of the only collector the collector process hosts, for `events`
/// commands that name none (neither by flag nor through `up.json`).
///
/// # Errors
/// [`CliError::Usage`] when it hosts none or several (listing them); RPC errors.
async fn only_location(channel: Channel, token: &str) -> Result<String, CliError> {
    let mut admin = CollectorAdminClient::new(channel);
    let listed = admin.list_collectors(authorized(ListCollectorsRequest {}, token)?).await?.into_inner();
    let mut locations: Vec<String> = listed.collectors.into_iter().map(|collector| collector.location).collect();
    match locations.len() {
        1 => Ok(locations.remove(0)),
        0 => Err(CliError::Usage(
            "no location: the collector hosts none yet; create one with `qtrail collectors create`".into(),
        )),
        _ => Err(CliError::Usage(format!(
            "no location: the collector hosts {}; pass --location or set QTRAIL_LOCATION to choose one",
            locations.join(", ")
        ))),
    }
}

/// Returns the position of the location's newest event (0 when it has none): one event read,
/// rather than the chain verified.
pub(super) async fn chain_end(
    client: &mut EventQueryClient<Channel>,
    token: &str,
    location: &str,
) -> Result<u64, CliError> {
    let newest = QueryEventsRequest {
        location: location.to_owned(),
        filter: None,
        page_size: 1,
        page_token: String::new(),
        order: Order::NewestFirst as i32,
    };
    let page = client.query_events(authorized(newest, token)?).await?.into_inner();
    Ok(page.events.first().map_or(0, |event| event.location_seq))
}

/// Returns a chain fault's kind as a lowercase word, e.g. `modified`.
pub(super) fn fault_kind(kind: i32) -> String {
    ChainFaultKind::try_from(kind)
        .map(|kind| kind.as_str_name().trim_start_matches("CHAIN_FAULT_KIND_").to_lowercase())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_filter_is_recognised() {
        let mut args = EventFilterArgs {
            action: None,
            outcome: None,
            severity: None,
            initiator: None,
            target: None,
            correlation_id: None,
            since: None,
            until: None,
        };
        assert!(filter_is_empty(&args));
        args.outcome = Some("failure".into());
        assert!(!filter_is_empty(&args));
        let filter = build_filter(&args).unwrap();
        assert_eq!(filter.outcome, Outcome::Failure as i32);
    }
}
