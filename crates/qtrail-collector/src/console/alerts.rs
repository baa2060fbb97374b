//! The console's Alerts view: a location's rules and its newest firings with each delivery's
//! state, and the firings inside a timeline's window, which the chart marks.
//!
//! Rules come from the alert service's own listing ([`Alerts::list`]), so the view shows what
//! gRPC `ListAlertRules` does. Firings are numbered across the collector and stored in number
//! order; the newest of one location are found by walking back from the newest number, at most
//! [`MAX_SCANNED_FIRINGS`] of them, so that a view of a quiet location beside a busy one stays
//! cheap ([`newest_firings`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use qtrail_proto::qtrail::audit::v1 as proto;
use serde::Serialize;

use super::api::{Auditor, Located, Shared};
use super::error::{ApiError, json};
use super::view;
use crate::alerts::AlertStore;
use crate::error::Result;
use crate::filter::event_millis;
use crate::ingest::blocking;
use crate::scope::Scope;

/// Firings the Alerts view lists.
pub(crate) const RECENT_FIRINGS: usize = 50;
/// Most firings a timeline marks.
pub(crate) const MAX_MARKS: usize = 500;
/// Most firing numbers one read walks back through.
pub(crate) const MAX_SCANNED_FIRINGS: u64 = 10_000;
/// Firing numbers read per step of the walk.
const STEP: u64 = 500;

/// Returns up to `limit` firings of `location`, newest first, stopping at the first one recorded
/// before `since_millis` (firings are numbered in the order they are recorded).
///
/// # Errors
/// What reading the alert state fails with.
pub(crate) fn newest_firings(
    state: &AlertStore,
    location: &str,
    limit: usize,
    since_millis: i64,
) -> Result<Vec<proto::AlertFiring>> {
    let newest = state.last_firing()?;
    let floor = newest.saturating_sub(MAX_SCANNED_FIRINGS);
    let mut found = Vec::new();
    let mut high = newest;
    // A location that has all the newest firings needs only `limit` of them read.
    let mut step = u64::try_from(limit).unwrap_or(STEP).clamp(1, STEP);
    while high > floor {
        let low = high.saturating_sub(step).max(floor);
        step = STEP;
        // Every location's, as numbers are dense: a read of exactly this step's numbers.
        let step = state.firings(None, low, usize::try_from(high - low).unwrap_or(usize::MAX))?;
        for firing in step.into_iter().rev() {
            if firing.time.as_ref().map_or(i64::MIN, event_millis) < since_millis {
                return Ok(found);
            }
            if firing.location == location {
                found.push(firing);
                if found.len() == limit {
                    return Ok(found);
                }
            }
        }
        high = low;
    }
    Ok(found)
}

/// A rule as the Alerts view lists it.
#[derive(Debug, Serialize)]
pub(crate) struct RuleView {
    /// Its name.
    name: String,
    /// Which events count, in words.
    filter: String,
    /// When it fires, in words.
    trigger: String,
    /// Least time between notifications, in words; empty for none.
    cooldown: String,
    /// Where it posts: scheme and host only, since a webhook's path or query often carries a
    /// credential of its own; empty for the watch stream only.
    webhook: String,
    /// The last position it has evaluated.
    cursor: u64,
    /// When it was last changed, RFC 3339.
    update_time: String,
}

/// A firing as the Alerts view lists it and the timeline marks it.
#[derive(Debug, Serialize)]
pub(crate) struct FiringView {
    /// Its number across the collector.
    number: u64,
    /// The rule's name.
    rule: String,
    /// `fired` or `resolved`.
    kind: &'static str,
    /// When it was recorded, RFC 3339.
    time: String,
    /// Matching events it covers.
    count: u64,
    /// Its webhook delivery: `none` (no webhook), `pending`, `delivered`, `failed` or `overflow`.
    delivery: &'static str,
    /// The delivery's `webhook-id`; empty without webhook.
    webhook_id: String,
    /// Positions of up to 10 of its events.
    seqs: Vec<u64>,
}

/// `GET /api/locations/{location}/alerts`: the location's rules and its newest firings.
pub(crate) async fn alerts(
    State(console): Shared,
    Auditor(signed_in): Auditor,
    located: Located,
) -> Result<Response, ApiError> {
    let (location, _) = located.params(&[])?;
    // Unknown locations answer 404, as every other route under the location does.
    console.registry.get(&location).await?;
    let rules = console.alerts.list(proto::ListAlertRulesRequest { location: location.clone() }).await?;
    let state = console.alert_state.clone();
    let firings = blocking(move || newest_firings(&state, &location, RECENT_FIRINGS, i64::MIN)).await?;
    let rules: Vec<_> = rules.rules.into_iter().map(rule).collect();
    let scope = &signed_in.caller.scope;
    let firings: Vec<_> = firings.into_iter().filter_map(|found| scope.firing(found)).map(firing).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "rules": rules, "firings": firings })))
}

/// Returns the firings of `location` recorded in `[start, end)`, newest first, at most
/// [`MAX_MARKS`], as views, as `scope` may see them.
///
/// # Errors
/// What reading the alert state fails with.
pub(crate) async fn marks(
    state: Arc<AlertStore>,
    location: String,
    start: i64,
    end: i64,
    scope: &Scope,
) -> Result<Vec<FiringView>> {
    let firings = blocking(move || newest_firings(&state, &location, MAX_MARKS, start)).await?;
    Ok(firings
        .into_iter()
        .filter(|firing| firing.time.as_ref().is_some_and(|t| event_millis(t) < end))
        .filter_map(|found| scope.firing(found))
        .map(firing)
        .collect())
}

fn rule(rule: proto::AlertRule) -> RuleView {
    RuleView {
        filter: filter_words(rule.filter.as_ref()),
        trigger: trigger_words(rule.trigger.as_ref()),
        cooldown: rule.cooldown.as_ref().map(duration_words).unwrap_or_default(),
        webhook: rule.webhook.as_ref().map(|webhook| origin(&webhook.url)).unwrap_or_default(),
        cursor: rule.cursor,
        update_time: rule.update_time.as_ref().map(view::timestamp).unwrap_or_default(),
        name: rule.name,
    }
}

fn firing(firing: proto::AlertFiring) -> FiringView {
    let kind = match proto::FiringKind::try_from(firing.kind) {
        Ok(proto::FiringKind::Resolved) => "resolved",
        Ok(proto::FiringKind::Fired | proto::FiringKind::Unspecified) | Err(_) => "fired",
    };
    let delivery = match proto::DeliveryState::try_from(firing.delivery) {
        Ok(proto::DeliveryState::Pending) => "pending",
        Ok(proto::DeliveryState::Delivered) => "delivered",
        Ok(proto::DeliveryState::Failed) => "failed",
        Ok(proto::DeliveryState::Overflow) => "overflow",
        Ok(proto::DeliveryState::Unspecified) | Err(_) => "none",
    };
    FiringView {
        number: firing.number,
        kind,
        time: firing.time.as_ref().map(view::timestamp).unwrap_or_default(),
        count: firing.count,
        delivery,
        seqs: firing.events.iter().map(|event| event.location_seq).collect(),
        webhook_id: firing.webhook_id,
        rule: firing.rule,
    }
}

/// Returns a filter in words: its set fields, or `every event`.
fn filter_words(filter: Option<&proto::EventFilter>) -> String {
    let Some(filter) = filter else {
        return "every event".into();
    };
    let mut words = Vec::new();
    if !filter.action.is_empty() {
        words.push(filter.action.clone());
    }
    if let Ok(outcome) = qtrail_cadf::proto::outcome_from_wire(filter.outcome) {
        words.push(outcome.as_str().to_owned());
    }
    if let Ok(severity) = qtrail_cadf::proto::severity_from_wire(filter.severity) {
        words.push(severity.as_str().to_owned());
    }
    if !filter.initiator_id.is_empty() {
        words.push(format!("by {}", filter.initiator_id));
    }
    if !filter.target_id.is_empty() {
        words.push(format!("on {}", filter.target_id));
    }
    if words.is_empty() { "every event".into() } else { words.join(" · ") }
}

/// Returns a trigger in words: `each event`, `5 in 1m per initiator`, `none for 10m`.
fn trigger_words(trigger: Option<&proto::AlertTrigger>) -> String {
    match trigger.and_then(|trigger| trigger.kind.as_ref()) {
        Some(proto::alert_trigger::Kind::Each(_)) | None => "each event".into(),
        Some(proto::alert_trigger::Kind::Threshold(threshold)) => {
            let window = threshold.window.as_ref().map(duration_words).unwrap_or_default();
            let group = match proto::GroupBy::try_from(threshold.group_by) {
                Ok(proto::GroupBy::Initiator) => " per initiator",
                Ok(proto::GroupBy::Target) => " per target",
                Ok(proto::GroupBy::Unspecified) | Err(_) => "",
            };
            format!("{} in {window}{group}", threshold.count)
        }
        Some(proto::alert_trigger::Kind::Absence(absence)) => {
            format!("none for {}", absence.duration.as_ref().map(duration_words).unwrap_or_default())
        }
    }
}

/// Returns a duration in the largest whole unit: `90s`, `5m`, `2h`, `1d`.
fn duration_words(duration: &prost_types::Duration) -> String {
    let secs = duration.seconds;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size && secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// Returns the scheme and host (and port) of a webhook URL, without its user, path or query.
fn origin(url: &str) -> String {
    let Ok(uri) = url.parse::<Uri>() else {
        return String::new();
    };
    match (uri.scheme_str(), uri.host(), uri.port_u16()) {
        (Some(scheme), Some(host), Some(port)) => format!("{scheme}://{host}:{port}/…"),
        (Some(scheme), Some(host), None) => format!("{scheme}://{host}/…"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_show_only_their_origin() {
        assert_eq!(origin("https://hooks.example.com/services/T000/B000/XXXXSECRET"), "https://hooks.example.com/…");
        assert_eq!(origin("http://user:pass@127.0.0.1:8080/hook?token=abc"), "http://127.0.0.1:8080/…");
        assert_eq!(origin("not a url"), "");
    }

    #[test]
    fn triggers_and_durations_read_as_words() {
        let secs = |seconds| prost_types::Duration { seconds, nanos: 0 };
        assert_eq!(duration_words(&secs(90)), "90s");
        assert_eq!(duration_words(&secs(600)), "10m");
        assert_eq!(duration_words(&secs(7200)), "2h");
        let threshold = proto::AlertTrigger {
            kind: Some(proto::alert_trigger::Kind::Threshold(proto::ThresholdTrigger {
                count: 5,
                window: Some(secs(60)),
                group_by: proto::GroupBy::Initiator as i32,
            })),
        };
        assert_eq!(trigger_words(Some(&threshold)), "5 in 1m per initiator");
        let absence = proto::AlertTrigger {
            kind: Some(proto::alert_trigger::Kind::Absence(proto::AbsenceTrigger { duration: Some(secs(600)) })),
        };
        assert_eq!(trigger_words(Some(&absence)), "none for 10m");
        let filter = proto::EventFilter {
            action: "quantum-computing.job.delete".into(),
            outcome: proto::Outcome::Failure as i32,
            ..Default::default()
        };
        assert_eq!(filter_words(Some(&filter)), "quantum-computing.job.delete · failure");
        assert_eq!(filter_words(None), "every event");
    }
}
