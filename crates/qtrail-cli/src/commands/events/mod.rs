//! `qtrail events query | tail | verify | export | publishers | checkpoints`: the auditor's
//! commands.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qtrail_cadf::checkpoint::{VerifyingKey, signed_bytes};
use qtrail_cadf::{AuditEvent, at_json};
use qtrail_proto::qtrail::audit::v1::{
    ChainFaultKind, Checkpoint, EventFilter, ExportEventsRequest, ExportFormat as WireExportFormat,
    ListCheckpointsRequest, ListCollectorsRequest, ListPublishersRequest, Order, Outcome, QueryEventsRequest, SeqRange,
    Severity, StoredEvent, TailEventsRequest, VerifyChainRequest, collector_admin_client::CollectorAdminClient,
    event_query_client::EventQueryClient,
};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::cli::{EventFilterArgs, EventVerifyArgs, EventsCommand, ExportFormat, OutputFormat, SeqRangeArgs};
use crate::connect::{Settings, authorized};
use crate::error::CliError;
use crate::output::{Table, write_json, write_json_line};
use crate::timearg::{format_time, parse_time};

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
    let mut client = EventQueryClient::new(channel);
    let output = settings.output;
    match command {
        EventsCommand::Query(args) => {
            let filter = build_filter(&args.filter)?;
            let order = if args.oldest_first { Order::OldestFirst } else { Order::NewestFirst };
            let mut page_token = args.page_token.unwrap_or_default();
            let mut events = Vec::new();
            loop {
                let request = QueryEventsRequest {
                    location: location.clone(),
                    filter: Some(filter.clone()),
                    page_size: args.limit,
                    page_token: page_token.clone(),
                    order: order as i32,
                };
                let page = client.query_events(authorized(request, &token)?).await?.into_inner();
                events.extend(page.events);
                page_token = page.next_page_token;
                if !args.all || page_token.is_empty() {
                    break;
                }
            }
            print_events(output, &events, &page_token, out)
        }
        EventsCommand::Tail(args) => {
            let request = TailEventsRequest {
                location,
                filter: Some(build_filter(&args.filter)?),
                from_seq: args.from_seq.unwrap_or(0),
            };
            let mut stream = client.tail_events(authorized(request, &token)?).await?.into_inner();
            let mut table_header_written = false;
            let mut seen = 0;
            while args.count.is_none_or(|count| seen < count) {
                let Some(item) = stream.next().await else { break };
                let Some(stored) = item?.event else { continue };
                seen += 1;
                match output {
                    OutputFormat::Json => write_json_line(out, &stored_event_json(&stored))?,
                    OutputFormat::Table => {
                        // Each event is printed as it arrives, so columns cannot be aligned to
                        // later rows; the header is printed once.
                        let mut table = Table::new(&EVENT_COLUMNS);
                        table.row(event_row(&stored));
                        let mut text = Vec::new();
                        table.write(&mut text)?;
                        let text = String::from_utf8_lossy(&text);
                        let mut lines = text.lines();
                        let header = lines.next().unwrap_or_default();
                        if !table_header_written {
                            writeln!(out, "{header}")?;
                            table_header_written = true;
                        }
                        for line in lines {
                            writeln!(out, "{line}")?;
                        }
                    }
                }
                out.flush()?;
            }
            Ok(())
        }
        EventsCommand::Verify(args) => {
            let expected = expected_head(&args)?;
            let key = read_public_keys(&args.public_key)?;
            // Checked before the chain, which the server compares with these same checkpoints.
            let signed = match &key {
                Some(key) => Some(verify_all_checkpoints(&mut client, &token, &location, key).await?),
                None => None,
            };
            if let (Some(path), Some(key)) = (&args.expect_checkpoint, &key) {
                check_kept_checkpoint(&mut client, &token, &location, key, path).await?;
            }
            let request = VerifyChainRequest { location: location.clone(), range: Some(seq_range(&args.range)) };
            let result = match client.verify_chain(authorized(request, &token)?).await {
                Ok(result) => result.into_inner(),
                // A --to-seq past the chain's end: with a head kept for it, events were removed.
                Err(status) if status.code() == tonic::Code::InvalidArgument && expected.is_some() => {
                    let end = chain_end(&mut client, &token, &location).await?;
                    let expected_seq = args.range.to_seq.unwrap_or_default();
                    if end < expected_seq {
                        return Err(CliError::ChainShort { end, expected_seq });
                    }
                    return Err(status.into());
                }
                Err(status) => return Err(status.into()),
            };
            let fault = result.fault.clone().unwrap_or_default();
            let kind = fault_kind(fault.kind);
            match output {
                OutputFormat::Json => write_json(
                    out,
                    &json!({
                        "location": location,
                        "ok": result.ok,
                        "checked": result.checked,
                        "fromSeq": result.from_seq,
                        "toSeq": result.to_seq,
                        "headChainHash": hex::encode(&result.head_chain_hash),
                        "expectedHead": expected.as_ref().map(hex::encode),
                        "fault": result.fault.as_ref().map(|f| json!({
                            "locationSeq": f.location_seq, "kind": kind, "detail": f.detail,
                            "checkpointNumber": Some(f.checkpoint_number).filter(|&number| number > 0),
                        })),
                        "checkpoints": key.as_ref().map(|key| json!({
                            "keyIds": key_ids(key),
                            "verified": signed,
                            "matchedChain": result.checkpoints_checked,
                        })),
                    }),
                )?,
                OutputFormat::Table if result.ok && result.checked == 0 => {
                    writeln!(out, "chain ok: no events in {location} yet")?
                }
                OutputFormat::Table if result.ok => writeln!(
                    out,
                    "chain ok: {} events checked in {location} (seq {}..{}), head {}",
                    result.checked,
                    result.from_seq,
                    result.to_seq,
                    hex::encode(&result.head_chain_hash)
                )?,
                OutputFormat::Table => {}
            }
            if let (OutputFormat::Table, true, Some(key), Some(signed)) = (output, result.ok, &key, signed) {
                writeln!(
                    out,
                    "checkpoints ok: {signed} signed by key {}, {} of them in this range matched the chain",
                    key_ids(key).join(" or "),
                    result.checkpoints_checked
                )?;
            }
            if !result.ok && fault.kind() == ChainFaultKind::CheckpointDamaged {
                // The evidence, not the chain, is what failed: the detail names the entry.
                return Err(CliError::Checkpoint { location, detail: fault.detail });
            }
            if !result.ok {
                return Err(CliError::ChainBroken { seq: fault.location_seq, kind, detail: fault.detail });
            }
            if let Some(expected) = expected.filter(|expected| *expected != result.head_chain_hash) {
                return Err(CliError::HeadMismatch {
                    seq: result.to_seq,
                    found: hex::encode(&result.head_chain_hash),
                    expected: hex::encode(expected),
                });
            }
            Ok(())
        }
        EventsCommand::Export(args) => {
            let filter = build_filter(&args.filter)?;
            let total = export_total(&mut client, &token, &location, &args.range, &args.filter).await?;
            let format = match args.format {
                ExportFormat::AtJson => WireExportFormat::AtJson,
                ExportFormat::CadfJson => WireExportFormat::CadfJson,
            };
            let request = ExportEventsRequest {
                location,
                format: format as i32,
                range: Some(seq_range(&args.range)),
                filter: Some(filter),
            };
            let mut stream = client.export_events(authorized(request, &token)?).await?.into_inner();
            let progress = progress_bar(total);
            let mut file_out;
            let sink: &mut dyn Write = match &args.output_file {
                Some(path) => {
                    file_out = BufWriter::new(create_file(path)?);
                    &mut file_out
                }
                None => out,
            };
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                for line in chunk?.lines {
                    writeln!(sink, "{line}")?;
                    written += 1;
                }
                progress.set_position(written);
            }
            sink.flush()?;
            progress.finish_and_clear();
            if let Some(path) = &args.output_file {
                eprintln!("exported {written} events to {}", path.display());
            }
            Ok(())
        }
        EventsCommand::Checkpoints(args) => {
            let key = read_public_keys(&args.public_key)?;
            let request =
                ListCheckpointsRequest { location: location.clone(), page_size: args.limit, before_number: 0 };
            let listed = client.list_checkpoints(authorized(request, &token)?).await?.into_inner();
            let (checkpoints, damaged) = (listed.checkpoints, listed.damaged);
            let verdicts: Vec<Option<Result<(), String>>> = checkpoints
                .iter()
                .map(|checkpoint| key.as_ref().map(|key| verify_one(checkpoint, &location, key)))
                .collect();
            if output == OutputFormat::Json {
                let items: Vec<Value> = checkpoints
                    .iter()
                    .zip(&verdicts)
                    .map(|(checkpoint, verdict)| {
                        let mut item = checkpoint_json(checkpoint);
                        if let Some(verdict) = verdict {
                            item["signatureOk"] = json!(verdict.is_ok());
                        }
                        item
                    })
                    .collect();
                let damaged: Vec<Value> =
                    damaged.iter().map(|entry| json!({ "number": entry.number, "detail": entry.detail })).collect();
                write_json(out, &json!({ "location": location, "checkpoints": items, "damaged": damaged }))?;
            } else {
                let mut rows = Vec::new();
                for (checkpoint, verdict) in checkpoints.iter().zip(&verdicts) {
                    rows.push((
                        checkpoint.number,
                        vec![
                            checkpoint.number.to_string(),
                            format_time(checkpoint.time.as_ref()),
                            checkpoint.location_seq.to_string(),
                            hex::encode(&checkpoint.head_chain_hash),
                            checkpoint.key_id.clone(),
                            match verdict {
                                None => "unchecked".into(),
                                Some(Ok(())) => "ok".into(),
                                Some(Err(_)) => "BAD".into(),
                            },
                        ],
                    ));
                }
                // A damaged entry keeps its place in the list, so that what is wrong shows where.
                for entry in &damaged {
                    let blank = || "-".to_owned();
                    rows.push((
                        entry.number,
                        vec![entry.number.to_string(), blank(), blank(), blank(), blank(), "DAMAGED".into()],
                    ));
                }
                rows.sort_by_key(|(number, _)| std::cmp::Reverse(*number));
                let mut table = Table::new(&["NUMBER", "TIME", "SEQ", "HEAD", "KEY", "SIGNATURE"]);
                for (_, row) in rows {
                    table.row(row);
                }
                table.write(out)?;
            }
            let damage = damaged.into_iter().next().map(|entry| entry.detail);
            match damage.or_else(|| verdicts.into_iter().flatten().find_map(Result::err)) {
                Some(detail) => Err(CliError::Checkpoint { location, detail }),
                None => Ok(()),
            }
        }
        EventsCommand::Publishers => {
            // Every page: a listing is small, and a publisher with many gaps ends a page early.
            let mut publishers = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = ListPublishersRequest { location: location.clone(), page_size: 0, page_token };
                let page = client.list_publishers(authorized(request, &token)?).await?.into_inner();
                publishers.extend(page.publishers);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let items: Vec<Value> = publishers
                .iter()
                .map(|p| {
                    let gaps: Vec<Value> = p
                        .gaps
                        .iter()
                        .map(|g| json!({ "epoch": g.epoch, "fromSeq": g.from_seq, "toSeq": g.to_seq }))
                        .collect();
                    json!({
                        "publisherId": p.publisher_id,
                        "credential": p.credential,
                        "epoch": p.epoch,
                        "storedSeq": p.stored_seq,
                        "eventCount": p.event_count,
                        "gaps": gaps,
                        "lastSeen": format_time(p.last_seen.as_ref()),
                    })
                })
                .collect();
            if output == OutputFormat::Json {
                write_json(out, &json!({ "publishers": items }))?;
                return Ok(());
            }
            let mut table = Table::new(&["PUBLISHER", "TOKEN", "EPOCH", "STORED SEQ", "EVENTS", "GAPS", "LAST SEEN"]);
            for p in &publishers {
                let gaps: Vec<String> =
                    p.gaps.iter().map(|g| format!("{}:{}-{}", g.epoch, g.from_seq, g.to_seq)).collect();
                table.row(vec![
                    p.publisher_id.clone(),
                    p.credential.clone(),
                    p.epoch.to_string(),
                    p.stored_seq.to_string(),
                    p.event_count.to_string(),
                    if gaps.is_empty() { "none".into() } else { gaps.join(" ") },
                    format_time(p.last_seen.as_ref()),
                ]);
            }
            table.write(out)?;
            Ok(())
        }
    }
}

/// Columns of the event table.
const EVENT_COLUMNS: [&str; 8] = ["SEQ", "TIME", "ACTION", "OUTCOME", "SEVERITY", "INITIATOR", "TARGET", "MESSAGE"];

fn event_row(stored: &StoredEvent) -> Vec<String> {
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

fn print_events(output: OutputFormat, events: &[StoredEvent], next: &str, out: &mut dyn Write) -> Result<(), CliError> {
    if output == OutputFormat::Json {
        let items: Vec<Value> = events.iter().map(stored_event_json).collect();
        write_json(out, &json!({ "events": items, "nextPageToken": next }))?;
        return Ok(());
    }
    let mut table = Table::new(&EVENT_COLUMNS);
    for stored in events {
        table.row(event_row(stored));
    }
    table.write(out)?;
    if !next.is_empty() {
        writeln!(out, "more: --page-token {next}")?;
    }
    Ok(())
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

fn build_filter(args: &EventFilterArgs) -> Result<EventFilter, CliError> {
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

/// Returns the head `--expect-head` names, as bytes. It is compared with the head recomputed
/// from the first event: a range starting later trusts the stored hash before it, which a
/// rewrite of history would have changed too.
fn expected_head(args: &EventVerifyArgs) -> Result<Option<Vec<u8>>, CliError> {
    let Some(hex_head) = &args.expect_head else {
        return Ok(None);
    };
    if args.range.from_seq.is_some_and(|from| from > 1) {
        return Err(CliError::Usage(
            "--expect-head checks the chain from its first event: leave out --from-seq".into(),
        ));
    }
    match hex::decode(hex_head.trim()) {
        Ok(head) if head.len() == 32 => Ok(Some(head)),
        _ => Err(CliError::Usage(format!(
            "--expect-head must be a SHA-256 hash in hex (64 characters), not `{hex_head}`"
        ))),
    }
}

fn seq_range(range: &SeqRangeArgs) -> SeqRange {
    SeqRange { from_seq: range.from_seq.unwrap_or(0), to_seq: range.to_seq.unwrap_or(0) }
}

fn filter_is_empty(args: &EventFilterArgs) -> bool {
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

/// Returns how many events an export will write when that is knowable without reading them
/// (no filter: the chain range), for a progress bar with an end.
async fn export_total(
    client: &mut EventQueryClient<Channel>,
    token: &str,
    location: &str,
    range: &SeqRangeArgs,
    filter: &EventFilterArgs,
) -> Result<Option<u64>, CliError> {
    if !filter_is_empty(filter) {
        return Ok(None);
    }
    let head = chain_end(client, token, location).await?;
    let last = range.to_seq.map_or(head, |to| to.min(head));
    let first = range.from_seq.unwrap_or(1).max(1);
    Ok(Some(last.saturating_sub(first) + u64::from(last >= first)))
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
async fn chain_end(client: &mut EventQueryClient<Channel>, token: &str, location: &str) -> Result<u64, CliError> {
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

fn progress_bar(total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {pos} events {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    // Only people watching a terminal want it; scripts and pipes get clean stderr.
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// Reads the auditor's copies of the checkpoint public keys; `None` when none is given.
///
/// # Errors
/// [`CliError::File`] when one cannot be read; [`CliError::Usage`] when one holds no Ed25519
/// public key.
fn read_public_keys(paths: &[std::path::PathBuf]) -> Result<Option<Vec<VerifyingKey>>, CliError> {
    if paths.is_empty() {
        return Ok(None);
    }
    let read = |path: &std::path::PathBuf| {
        let pem = std::fs::read(path).map_err(|source| CliError::File { path: path.display().to_string(), source })?;
        VerifyingKey::from_pem(&pem).map_err(|err| CliError::Usage(format!("--public-key {}: {err}", path.display())))
    };
    paths.iter().map(read).collect::<Result<Vec<_>, _>>().map(Some)
}

/// Returns the ids of `keys`.
fn key_ids(keys: &[VerifyingKey]) -> Vec<&str> {
    keys.iter().map(VerifyingKey::id).collect()
}

/// Reads every checkpoint of `location` and checks them with [`check_checkpoints`]; returns how
/// many there are.
///
/// # Errors
/// [`CliError::Checkpoint`] when they do not hold; RPC errors.
async fn verify_all_checkpoints(
    client: &mut EventQueryClient<Channel>,
    token: &str,
    location: &str,
    key: &[VerifyingKey],
) -> Result<u64, CliError> {
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut before_number = 0;
    loop {
        let request = ListCheckpointsRequest { location: location.to_owned(), page_size: 1000, before_number };
        let page = client.list_checkpoints(authorized(request, token)?).await?.into_inner();
        if let Some(entry) = page.damaged.first() {
            return Err(CliError::Checkpoint { location: location.to_owned(), detail: entry.detail.clone() });
        }
        let Some(oldest) = page.checkpoints.last().map(|checkpoint| checkpoint.number) else {
            break;
        };
        checkpoints.extend(page.checkpoints);
        // Pages go down from the newest; numbers that did not go down would fetch the same page
        // for ever (check_checkpoints then reports them).
        if oldest <= 1 || (before_number != 0 && oldest >= before_number) {
            break;
        }
        before_number = oldest;
    }
    check_checkpoints(&checkpoints, location, key)
        .map_err(|detail| CliError::Checkpoint { location: location.to_owned(), detail })
}

/// Checks checkpoints of `location` listed newest first: at least one, each of that location
/// and signed by `key`, numbered densely down to 1. Returns how many there are, or what is
/// wrong.
fn check_checkpoints(checkpoints: &[Checkpoint], location: &str, key: &[VerifyingKey]) -> Result<u64, String> {
    let Some(newest) = checkpoints.first() else {
        // Nothing signed proves nothing: a key given means checkpoints are expected.
        return Err("there are none: the collector signs none, or they were deleted".to_owned());
    };
    let mut expected = newest.number;
    for checkpoint in checkpoints {
        if checkpoint.number != expected {
            return Err(format!("checkpoint {expected} is missing (the next one is {})", checkpoint.number));
        }
        verify_one(checkpoint, location, key)?;
        expected = expected.saturating_sub(1);
    }
    match expected {
        0 => Ok(checkpoints.len() as u64),
        newest_missing => Err(format!("checkpoints 1 to {newest_missing} are missing")),
    }
}

/// Checks a checkpoint kept out of band (the JSON of `events checkpoints --output json`, whose
/// newest entry counts): signed by `key`, of `location`, still held by the collector unchanged,
/// and the chain from the first event leads to its head.
///
/// # Errors
/// [`CliError::Checkpoint`], [`CliError::ChainShort`], [`CliError::ChainBroken`] or
/// [`CliError::HeadMismatch`] when it does not hold; file, usage and RPC errors.
async fn check_kept_checkpoint(
    client: &mut EventQueryClient<Channel>,
    token: &str,
    location: &str,
    key: &[VerifyingKey],
    path: &Path,
) -> Result<(), CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| CliError::File { path: path.display().to_string(), source })?;
    let kept = kept_checkpoint(&text)
        .map_err(|detail| CliError::Usage(format!("--expect-checkpoint {}: {detail}", path.display())))?;
    let broken = |detail: String| CliError::Checkpoint { location: location.to_owned(), detail };
    verify_one(&kept, location, key).map_err(|detail| broken(format!("the kept one: {detail}")))?;
    let request =
        ListCheckpointsRequest { location: location.to_owned(), page_size: 1, before_number: kept.number + 1 };
    let held = client.list_checkpoints(authorized(request, token)?).await?.into_inner();
    if let Some(entry) = held.damaged.first().filter(|entry| entry.number == kept.number) {
        return Err(broken(format!(
            "checkpoint {} kept out of band is damaged in the collector: {}",
            kept.number, entry.detail
        )));
    }
    let held = held.checkpoints;
    // Compared as signed (times to the millisecond, as the JSON keeps them).
    let same = |held: &Checkpoint| held.signature == kept.signature && signed_bytes(held) == signed_bytes(&kept);
    if !held.first().is_some_and(same) {
        return Err(broken(format!(
            "checkpoint {} kept out of band is gone from the collector or differs",
            kept.number
        )));
    }
    if kept.location_seq == 0 {
        return Ok(());
    }
    let end = chain_end(client, token, location).await?;
    if end < kept.location_seq {
        return Err(CliError::ChainShort { end, expected_seq: kept.location_seq });
    }
    let range = SeqRange { from_seq: 1, to_seq: kept.location_seq };
    let request = VerifyChainRequest { location: location.to_owned(), range: Some(range) };
    let result = client.verify_chain(authorized(request, token)?).await?.into_inner();
    if let Some(fault) = result.fault {
        return Err(CliError::ChainBroken {
            seq: fault.location_seq,
            kind: fault_kind(fault.kind),
            detail: fault.detail,
        });
    }
    if result.head_chain_hash != kept.head_chain_hash {
        return Err(CliError::HeadMismatch {
            seq: kept.location_seq,
            found: hex::encode(&result.head_chain_hash),
            expected: hex::encode(&kept.head_chain_hash),
        });
    }
    Ok(())
}

/// Reads the newest checkpoint of `events checkpoints --output json`.
fn kept_checkpoint(text: &str) -> Result<Checkpoint, String> {
    let listing: Value = serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    let item = listing["checkpoints"].get(0).ok_or("no checkpoints in it")?;
    let field = |name: &str| item.get(name).ok_or_else(|| format!("no `{name}` in its checkpoint"));
    let number = |name: &str| field(name)?.as_u64().ok_or_else(|| format!("`{name}` is not a number"));
    let text = |name: &str| field(name)?.as_str().map(str::to_owned).ok_or_else(|| format!("`{name}` is not text"));
    let hex = |name: &str| hex::decode(text(name)?).map_err(|_| format!("`{name}` is not hex"));
    let time = chrono::DateTime::parse_from_rfc3339(&text("time")?).map_err(|_| "`time` is not RFC 3339")?;
    let time = prost_types::Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 };
    Ok(Checkpoint {
        location: listing["location"].as_str().ok_or("no `location`")?.to_owned(),
        number: number("number")?,
        location_seq: number("locationSeq")?,
        head_chain_hash: hex("headChainHash")?,
        time: Some(time),
        key_id: text("keyId")?,
        signature: hex("signature")?,
    })
}

/// Returns a chain fault's kind as a lowercase word, e.g. `modified`.
fn fault_kind(kind: i32) -> String {
    ChainFaultKind::try_from(kind)
        .map(|kind| kind.as_str_name().trim_start_matches("CHAIN_FAULT_KIND_").to_lowercase())
        .unwrap_or_default()
}

/// Checks that one of `keys` (the one its key id names) signed `checkpoint`, and that it is of
/// `location`.
fn verify_one(checkpoint: &Checkpoint, location: &str, keys: &[VerifyingKey]) -> Result<(), String> {
    if checkpoint.location != location {
        return Err(format!("checkpoint {} is of location `{}`", checkpoint.number, checkpoint.location));
    }
    let Some(key) = keys.iter().find(|key| key.id() == checkpoint.key_id) else {
        return Err(format!(
            "checkpoint {} is signed by key {}, not by any key given ({})",
            checkpoint.number,
            checkpoint.key_id,
            key_ids(keys).join(", ")
        ));
    };
    key.verify(checkpoint).map_err(|err| err.to_string())
}

fn checkpoint_json(checkpoint: &Checkpoint) -> Value {
    json!({
        "number": checkpoint.number,
        "time": format_time(checkpoint.time.as_ref()),
        "locationSeq": checkpoint.location_seq,
        "headChainHash": hex::encode(&checkpoint.head_chain_hash),
        "keyId": checkpoint.key_id,
        "signature": hex::encode(&checkpoint.signature),
    })
}

fn create_file(path: &Path) -> Result<File, CliError> {
    File::create(path).map_err(|source| CliError::File { path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use qtrail_cadf::checkpoint::SigningKey;

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

    fn signed(key: &SigningKey, numbers: &[u64]) -> Vec<Checkpoint> {
        numbers
            .iter()
            .map(|&number| {
                let mut checkpoint = Checkpoint {
                    location: "us-east".into(),
                    number,
                    location_seq: number,
                    head_chain_hash: vec![1; 32],
                    time: Some(Timestamp { seconds: 1_700_000_000, nanos: 0 }),
                    ..Default::default()
                };
                key.sign(&mut checkpoint);
                checkpoint
            })
            .collect()
    }

    /// What `events checkpoints --output json` writes reads back as the checkpoint it signed.
    #[test]
    fn a_listed_checkpoint_reads_back_as_signed() {
        let key = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
        let public = [VerifyingKey::from_pem(key.public_pem().as_bytes()).unwrap()];
        let mut original = signed(&key, &[7]).remove(0);
        original.time = Some(Timestamp { seconds: 1_700_000_000, nanos: 123_456_789 });
        key.sign(&mut original);
        let listing = json!({ "location": "us-east", "checkpoints": [checkpoint_json(&original)] }).to_string();
        let kept = kept_checkpoint(&listing).unwrap();
        assert_eq!(signed_bytes(&kept), signed_bytes(&original));
        assert_eq!(verify_one(&kept, "us-east", &public), Ok(()));
        assert_eq!(kept_checkpoint("{}").unwrap_err(), "no checkpoints in it");
        let no_seq = listing.replace("locationSeq", "seq");
        assert_eq!(kept_checkpoint(&no_seq).unwrap_err(), "no `locationSeq` in its checkpoint");
    }

    #[test]
    fn checkpoints_must_exist_be_signed_and_run_down_to_one() {
        let key = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
        let public = [VerifyingKey::from_pem(key.public_pem().as_bytes()).unwrap()];
        assert_eq!(check_checkpoints(&signed(&key, &[3, 2, 1]), "us-east", &public), Ok(3));
        let none = check_checkpoints(&[], "us-east", &public).unwrap_err();
        assert!(none.starts_with("there are none"), "{none}");
        assert_eq!(
            check_checkpoints(&signed(&key, &[4, 2, 1]), "us-east", &public),
            Err("checkpoint 3 is missing (the next one is 2)".to_owned())
        );
        assert_eq!(
            check_checkpoints(&signed(&key, &[5, 4]), "us-east", &public),
            Err("checkpoints 1 to 3 are missing".to_owned())
        );
        let mut altered = signed(&key, &[2, 1]);
        altered[1].location_seq = 7;
        let bad = check_checkpoints(&altered, "us-east", &public).unwrap_err();
        assert!(bad.starts_with("checkpoint 1 has an invalid signature"), "{bad}");
        // Validly signed, but another location's.
        assert_eq!(
            check_checkpoints(&signed(&key, &[1]), "eu-de", &public),
            Err("checkpoint 1 is of location `us-east`".to_owned())
        );
        // A key rotated: the older checkpoints are signed by the older key, given too.
        let newer = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
        let mut rotated = signed(&newer, &[4, 3]);
        rotated.extend(signed(&key, &[2, 1]));
        let unknown = check_checkpoints(&rotated, "us-east", &public).unwrap_err();
        assert!(unknown.starts_with(&format!("checkpoint 4 is signed by key {}, not by any key given", newer.id())));
        let both = [VerifyingKey::from_pem(newer.public_pem().as_bytes()).unwrap(), public[0].clone()];
        assert_eq!(check_checkpoints(&rotated, "us-east", &both), Ok(4));
    }
}
