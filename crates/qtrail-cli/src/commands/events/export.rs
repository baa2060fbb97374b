//! `qtrail events export`: events as Activity Tracker JSON or CADF JSON lines, to a file or
//! stdout, with a progress bar on a terminal.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qtrail_proto::qtrail::audit::v1::{
    ExportEventsRequest, ExportFormat as WireExportFormat, event_query_client::EventQueryClient,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::{Session, build_filter, chain_end, filter_is_empty, seq_range};
use crate::cli::{EventExportArgs, EventFilterArgs, ExportFormat, SeqRangeArgs};
use crate::connect::authorized;
use crate::error::CliError;

/// Writes the events `args` selects in the format it names.
pub(super) async fn export(session: Session, args: EventExportArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, token, location, .. } = session;
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

fn create_file(path: &Path) -> Result<File, CliError> {
    File::create(path).map_err(|source| CliError::File { path: path.display().to_string(), source })
}
