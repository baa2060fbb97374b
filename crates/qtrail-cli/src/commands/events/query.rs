//! `qtrail events query`: stored events matching a filter, a page or all of them.

use std::io::Write;

use qtrail_proto::qtrail::audit::v1::{Order, QueryEventsRequest, StoredEvent};
use serde_json::{Value, json};

use super::{EVENT_COLUMNS, Session, build_filter, event_row, stored_event_json};
use crate::cli::{EventQueryArgs, OutputFormat};
use crate::connect::authorized;
use crate::error::CliError;
use crate::output::{Table, write_json};

/// Prints the events `args` asks for: one page, or with `--all` every page.
pub(super) async fn query(session: Session, args: EventQueryArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, token, location, output } = session;
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
