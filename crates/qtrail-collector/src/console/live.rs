//! The live view: `GET /api/locations/{location}/live` streams matching events as server-sent
//! events, fed by the same tail that serves gRPC `TailEvents` (history from `from_seq`, then
//! live, with no gap and no duplicate).
//!
//! Each event is `event: stored`, `id: <location_seq>`, `data: <list row as JSON>`. A browser
//! that loses the connection reconnects by itself and sends the last id it saw as
//! `Last-Event-ID`; the stream then resumes right after it, so a reconnect loses nothing. A
//! failure of the tail ends the stream with `event: failure` and `{"error": "…"}`. The stream
//! ends when the collector shuts down, and when the session that opened it ends (sign-out or
//! expiry: the session is checked once, so the stream must not outlive it); comments every 15 seconds keep idle proxies from
//! cutting it and let the server notice a browser that went away.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Sse;
use axum::response::sse::{Event, KeepAlive};
use futures_util::Stream;
use qtrail_proto::qtrail::audit::v1 as proto;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::Console;
use super::api::{Auditor, Located};
use super::error::{ApiError, ErrorBody, escape_markup};
use super::view;
use crate::error::Error;

/// Events a live view buffers before the tail waits for the browser.
const LIVE_BUFFER: usize = 64;

/// Parameters of a live view beyond the filter: where to start.
const LIVE_PARAMS: [&str; 1] = ["from_seq"];

/// `GET /api/locations/{location}/live`: matching events from `from_seq` on (0 or absent: only
/// new ones), then as they are stored.
pub(crate) async fn stream(
    State(console): State<Arc<Console>>,
    Auditor(signed_in): Auditor,
    located: Located,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (location, filter, mut params) = located.filtered(&LIVE_PARAMS)?;
    let mut from_seq = params.number("from_seq")?.unwrap_or(0);
    if let Some(last) = last_event_id(&headers)? {
        from_seq = last + 1;
    }
    let request = proto::TailEventsRequest { location, filter: Some(filter), from_seq };
    let tail = console.query.open_tail(&request, &signed_in.caller.scope).await?;
    let (sender, receiver) = mpsc::channel(LIVE_BUFFER);
    console.tasks.spawn(console.query.clone().tail(tail, sender));
    let events = ReceiverStream::new(receiver).map(|item| {
        Ok(match item {
            Ok(proto::TailEventsResponse { event: Some(record) }) => {
                let row = view::row(&record);
                Event::default().event("stored").id(row.location_seq.to_string()).data(to_json(&row))
            }
            Ok(proto::TailEventsResponse { event: None }) => Event::default().comment("empty"),
            Err(err) => Event::default().event("failure").data(to_json(&ErrorBody { error: err.to_string() })),
        })
    });
    let session_over = async move {
        tokio::select! {
            () = signed_in.ended.cancelled() => {}
            () = tokio::time::sleep(signed_in.remaining) => {}
        }
    };
    // Ending the stream drops the receiver, which stops the tail.
    let events = futures_util::StreamExt::take_until(events, session_over);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Returns the `Last-Event-ID` a reconnecting browser sends, if any.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| Error::invalid("invalid last-event-id header: expected a location_seq").into())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Plain data always serialises; an empty object keeps the stream well-formed regardless.
    serde_json::to_string(value).map(|json| escape_markup(&json)).unwrap_or_else(|_| "{}".into())
}
