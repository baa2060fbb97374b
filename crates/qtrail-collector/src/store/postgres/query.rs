//! Queries: narrowed in SQL on the indexed columns of `events`, paged by `location_seq`, then
//! checked row by row with [`Filter::matches`], the rule every backend answers by. The SQL is a
//! superset of the filter (a target prefix is a `LIKE`, refined at CRN segment boundaries in
//! Rust), so the result is exactly what a scan of the chain returns.

use postgres::Client;
use postgres::types::ToSql;
use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1 as proto;

use super::{PgError, decode, int, uint};
use crate::filter::{Filter, Order, TargetMatch};

/// Rows read per round trip: one page usually, more when the Rust check drops some.
const CHUNK: usize = 256;

/// What a query asks for: up to `limit` events of `location` matching `filter` in `order`,
/// strictly after position `after` in that order.
pub(super) struct Query<'a> {
    pub(super) location: &'a Location,
    pub(super) filter: &'a Filter,
    pub(super) order: Order,
    pub(super) after: Option<u64>,
    pub(super) limit: usize,
}

/// The SQL of a query and its parameters but the cursor (the last one, `$n`).
struct Narrowed {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync>>,
}

impl Narrowed {
    fn new(query: &Query<'_>) -> Self {
        let mut narrowed = Self { sql: String::new(), params: vec![Box::new(query.location.to_string())] };
        let filter = query.filter;
        if let Some(start) = filter.start_millis {
            narrowed.and("event_millis >= ", start);
        }
        if let Some(end) = filter.end_millis {
            narrowed.and("event_millis < ", end);
        }
        if let Some(actions) = &filter.actions {
            narrowed.and("action = ANY", actions.iter().map(|action| (*action).to_owned()).collect::<Vec<String>>());
        }
        if let Some(outcome) = filter.outcome {
            narrowed.and("outcome = ", outcome);
        }
        if let Some(severity) = filter.severity {
            narrowed.and("severity = ", severity);
        }
        if let Some(initiator) = &filter.initiator_id {
            narrowed.and("initiator_id = ", initiator.clone());
        }
        match &filter.target {
            Some(TargetMatch::Exact(target)) => narrowed.and("target_id = ", target.clone()),
            Some(TargetMatch::Prefix(prefix)) => narrowed.and("target_id LIKE ", format!("{}%", like_escaped(prefix))),
            None => {}
        }
        if let Some(correlation) = &filter.correlation_id {
            narrowed.and("correlation_id = ", correlation.clone());
        }
        let (cursor, direction) = match query.order {
            Order::OldestFirst => (">", "ASC"),
            Order::NewestFirst => ("<", "DESC"),
        };
        let cursor_param = narrowed.params.len() + 1;
        narrowed.sql = format!(
            "SELECT location_seq, record FROM events WHERE location = $1{} AND location_seq {cursor} ${cursor_param} \
             ORDER BY location_seq {direction} LIMIT {CHUNK}",
            narrowed.sql
        );
        narrowed
    }

    /// Adds the condition `column_op $n` (wrapped in parentheses for `ANY`).
    fn and(&mut self, condition: &str, value: impl ToSql + Sync + 'static) {
        self.params.push(Box::new(value));
        let n = self.params.len();
        if condition.ends_with("ANY") {
            self.sql.push_str(&format!(" AND {condition}(${n})"));
        } else {
            self.sql.push_str(&format!(" AND {condition}${n}"));
        }
    }
}

/// Escapes `LIKE`'s wildcards and escape character in `text`.
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Returns the query's page (see [`Query`]).
pub(super) fn page(client: &mut Client, query: &Query<'_>) -> Result<Vec<proto::StoredEvent>, PgError> {
    let narrowed = Narrowed::new(query);
    let mut cursor = match (query.after, query.order) {
        (Some(after), _) => int(after),
        (None, Order::OldestFirst) => 0,
        (None, Order::NewestFirst) => i64::MAX,
    };
    let mut page = Vec::with_capacity(query.limit.min(1024));
    while page.len() < query.limit {
        let mut params: Vec<&(dyn ToSql + Sync)> = narrowed.params.iter().map(|param| param.as_ref()).collect();
        params.push(&cursor);
        let rows = client.query(&narrowed.sql, &params)?;
        for row in &rows {
            let seq = uint(row.get(0));
            let what = format!("record at location_seq {seq} of location `{}`", query.location);
            let mut record: proto::StoredEvent = decode(&what, row.get::<_, &[u8]>(1))?;
            record.location = query.location.to_string();
            record.location_seq = seq;
            if query.filter.matches(&record) && page.len() < query.limit {
                page.push(record);
            }
        }
        match rows.last() {
            Some(last) if rows.len() == CHUNK => cursor = last.get(0),
            _ => break,
        }
    }
    Ok(page)
}
