//! `qtrail events publishers`: each publisher's sequence state, the gaps in it (seqs that never
//! arrived) and how many of its events were rejected (which arrived, and are no gaps).

use std::io::Write;

use qtrail_proto::qtrail::audit::v1::ListPublishersRequest;
use serde_json::{Value, json};

use super::Session;
use crate::cli::OutputFormat;
use crate::connect::authorized;
use crate::error::CliError;
use crate::output::{Table, write_json};
use crate::timearg::format_time;

/// Prints every publisher of the location.
pub(super) async fn publishers(session: Session, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, token, location, output } = session;
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
            let gaps: Vec<Value> =
                p.gaps.iter().map(|g| json!({ "epoch": g.epoch, "fromSeq": g.from_seq, "toSeq": g.to_seq })).collect();
            let rejected: Vec<Value> = p
                .rejected
                .iter()
                .map(|r| json!({ "epoch": r.epoch, "fromSeq": r.from_seq, "toSeq": r.to_seq }))
                .collect();
            json!({
                "publisherId": p.publisher_id,
                "credential": p.credential,
                "epoch": p.epoch,
                "storedSeq": p.stored_seq,
                "eventCount": p.event_count,
                "gaps": gaps,
                "rejectedCount": p.rejected_count,
                "rejected": rejected,
                "lastSeen": format_time(p.last_seen.as_ref()),
            })
        })
        .collect();
    if output == OutputFormat::Json {
        write_json(out, &json!({ "publishers": items }))?;
        return Ok(());
    }
    let mut table =
        Table::new(&["PUBLISHER", "TOKEN", "EPOCH", "STORED SEQ", "EVENTS", "GAPS", "REJECTED", "LAST SEEN"]);
    for p in &publishers {
        let gaps: Vec<String> = p.gaps.iter().map(|g| format!("{}:{}-{}", g.epoch, g.from_seq, g.to_seq)).collect();
        table.row(vec![
            p.publisher_id.clone(),
            p.credential.clone(),
            p.epoch.to_string(),
            p.stored_seq.to_string(),
            p.event_count.to_string(),
            if gaps.is_empty() { "none".into() } else { gaps.join(" ") },
            // The count only: the ranges (the most recent ones) are in the JSON output.
            p.rejected_count.to_string(),
            format_time(p.last_seen.as_ref()),
        ]);
    }
    table.write(out)?;
    Ok(())
}
