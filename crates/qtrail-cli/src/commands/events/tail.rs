//! `qtrail events tail`: events printed as they are stored.

use std::io::Write;

use qtrail_proto::qtrail::audit::v1::TailEventsRequest;
use tokio_stream::StreamExt;

use super::{EVENT_COLUMNS, Session, build_filter, event_row, stored_event_json};
use crate::cli::{EventTailArgs, OutputFormat};
use crate::connect::authorized;
use crate::error::CliError;
use crate::output::{Table, write_json_line};

/// Prints matching events as the collector stores them, until `--count` of them or the stream's
/// end.
pub(super) async fn tail(session: Session, args: EventTailArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, token, location, output } = session;
    let request =
        TailEventsRequest { location, filter: Some(build_filter(&args.filter)?), from_seq: args.from_seq.unwrap_or(0) };
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
