//! An export: a range of a location's events as lines of AT-JSON or CADF-JSON, in chain order.

use qtrail_cadf::{AuditEvent, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use tokio::sync::mpsc;

use super::{Query, resolve_range};
use crate::chain::CheckRange;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::ingest::blocking;
use crate::registry::{parse_location, require_collector};
use crate::scope::Scope;
use crate::store::StoreError;

/// Most lines per export message.
pub const EXPORT_CHUNK_LINES: usize = 500;
/// Most bytes of lines per export message, so that large events stay well within a client's
/// default 4 MiB message limit.
pub const EXPORT_CHUNK_BYTES: usize = 1024 * 1024;

impl Query {
    /// Checks an export request and returns what to export: what its filter matches and
    /// `scope` admits.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad location, format, range or filter,
    /// [`Error::CollectorNotFound`].
    pub(crate) async fn open_export(&self, request: &proto::ExportEventsRequest, scope: &Scope) -> Result<Export> {
        let location = parse_location(&request.location)?;
        let format = match proto::ExportFormat::try_from(request.format) {
            Ok(proto::ExportFormat::AtJson) => ExportFormat::AtJson,
            Ok(proto::ExportFormat::CadfJson) => ExportFormat::CadfJson,
            Ok(proto::ExportFormat::Unspecified) => {
                return Err(Error::invalid("missing format: choose EXPORT_FORMAT_AT_JSON or EXPORT_FORMAT_CADF_JSON"));
            }
            Err(_) => return Err(Error::invalid(format!("unknown format {}", request.format))),
        };
        let filter = Filter::from_wire(request.filter.as_ref())?.within(scope);
        let collector = require_collector(&self.store, location.clone()).await?;
        let range = resolve_range(request.range.as_ref(), collector.event_count)?;
        Ok(Export { location, format, filter, range })
    }

    /// Streams the export in chunks of up to [`EXPORT_CHUNK_LINES`] lines, in chain order.
    pub(crate) async fn export(self, export: Export, out: mpsc::Sender<Result<proto::ExportEventsResponse>>) {
        if let Err(err) = self.export_lines(&export, &out).await {
            self.lifecycle.send(&out, Err(err)).await;
        }
    }

    async fn export_lines(
        &self,
        export: &Export,
        out: &mpsc::Sender<Result<proto::ExportEventsResponse>>,
    ) -> Result<()> {
        let mut next_seq = export.range.from_seq;
        while next_seq <= export.range.to_seq {
            if self.lifecycle.is_stopping() {
                return Err(Error::ShuttingDown);
            }
            let store = self.store.clone();
            let (location, filter, format, from, to) =
                (export.location.clone(), export.filter.clone(), export.format, next_seq, export.range.to_seq);
            let (lines, last) = blocking(move || {
                let records = store.events(&location, from, EXPORT_CHUNK_LINES)?;
                let last = records.last().map(|record| record.location_seq);
                let mut lines = Vec::with_capacity(records.len());
                for record in records.iter().filter(|record| record.location_seq <= to && filter.matches(record)) {
                    lines.push(format.line(record)?);
                }
                Ok((lines, last))
            })
            .await?;
            let Some(last) = last else {
                break;
            };
            for lines in chunk_lines(lines) {
                if !self.lifecycle.send(out, Ok(proto::ExportEventsResponse { lines })).await {
                    return Ok(());
                }
            }
            next_seq = last + 1;
        }
        Ok(())
    }
}

/// An export to stream.
#[derive(Debug)]
pub(crate) struct Export {
    location: Location,
    format: ExportFormat,
    filter: Filter,
    range: CheckRange,
}

/// The line format of an export.
#[derive(Debug, Clone, Copy)]
enum ExportFormat {
    AtJson,
    CadfJson,
}

/// Returns the event of a stored record in its model form, which the export formats need.
///
/// # Errors
/// [`StoreError::Corrupt`] when the record holds no event or one that no longer validates.
pub(crate) fn decode(record: &proto::StoredEvent) -> Result<AuditEvent> {
    let corrupt = |detail: String| {
        Error::Store(StoreError::Corrupt(format!(
            "event at location_seq {} of location `{}` {detail}",
            record.location_seq, record.location
        )))
    };
    let wire = record.event.clone().ok_or_else(|| corrupt("is missing".into()))?;
    AuditEvent::try_from(wire).map_err(|err| corrupt(format!("no longer validates: {err}")))
}

impl ExportFormat {
    fn line(self, record: &proto::StoredEvent) -> Result<String> {
        let event = decode(record)?;
        Ok(match self {
            ExportFormat::AtJson => qtrail_cadf::at_json::to_string(&event),
            ExportFormat::CadfJson => qtrail_cadf::cadf_json::to_string(&event),
        })
    }
}

/// Splits export lines into messages of at most [`EXPORT_CHUNK_LINES`] lines and about
/// [`EXPORT_CHUNK_BYTES`] bytes (a single longer line gets a message of its own).
fn chunk_lines(lines: Vec<String>) -> Vec<Vec<String>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for line in lines {
        if !chunk.is_empty() && (chunk.len() == EXPORT_CHUNK_LINES || bytes + line.len() > EXPORT_CHUNK_BYTES) {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += line.len();
        chunk.push(line);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_stay_within_their_byte_limits() {
        let lines = |count: usize, len: usize| vec!["x".repeat(len); count];
        let sizes = |chunks: Vec<Vec<String>>| chunks.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(chunk_lines(lines(1001, 10))), [500, 500, 1]);
        assert_eq!(sizes(chunk_lines(lines(5, 400 * 1024))), [2, 2, 1]);
        assert_eq!(sizes(chunk_lines(lines(2, 2 * 1024 * 1024))), [1, 1]);
        assert!(chunk_lines(Vec::new()).is_empty());
    }
}
