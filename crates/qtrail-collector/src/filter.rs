//! Event filters: the checked form of `EventFilter`, the order of results, and the match rule
//! that every read path (query, tail, export) and every store backend shares.
//!
//! Matching rules, beyond "set fields must all match":
//! - time: `start_time <= event_time < end_time`; event times are whole milliseconds, so both
//!   bounds are rounded up to the millisecond;
//! - action: an exact action, or a prefix that ends at a dot boundary (`quantum-computing.job`
//!   matches the four job actions, `quantum-comp` is refused);
//! - target: a value that parses as a complete CRN matches that CRN exactly; anything else is a
//!   prefix that must end at a segment boundary (`…:a/acc:inst` matches `…:a/acc:inst::` and
//!   `…:a/acc:inst:job:j-1`, but not `…:a/acc:inst2::`);
//! - scope: the caller's accounts ([`Scope::admits`]), part of the filter so that a scoped
//!   caller's pages are full and its tails and exports skip what it may not read.

use prost_types::Timestamp;
use qtrail_cadf::{Action, Crn};
use qtrail_proto::qtrail::audit::v1 as proto;

use crate::error::{Error, Result};
use crate::scope::Scope;

/// Order of results by chain position (`location_seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    /// Highest `location_seq` first.
    NewestFirst,
    /// Lowest `location_seq` first.
    OldestFirst,
}

impl Order {
    /// Returns the order of a wire `Order` value (unspecified means newest first).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a value outside the enum.
    pub fn from_wire(value: i32) -> Result<Self> {
        match proto::Order::try_from(value) {
            Ok(proto::Order::Unspecified | proto::Order::NewestFirst) => Ok(Order::NewestFirst),
            Ok(proto::Order::OldestFirst) => Ok(Order::OldestFirst),
            Err(_) => Err(Error::invalid(format!("unknown order {value}"))),
        }
    }
}

/// How the target id is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetMatch {
    /// The target CRN equals this.
    Exact(String),
    /// The target CRN starts with this, at a segment boundary.
    Prefix(String),
}

impl TargetMatch {
    /// Returns true when `target` matches.
    pub fn matches(&self, target: &str) -> bool {
        match self {
            TargetMatch::Exact(crn) => target == crn,
            TargetMatch::Prefix(prefix) => prefix_matches(prefix, target),
        }
    }
}

/// Returns true when `target` starts with `prefix` and the prefix ends at a CRN segment
/// boundary (it ends with `:`, or the next character of `target` is `:`, or they are equal).
pub fn prefix_matches(prefix: &str, target: &str) -> bool {
    let Some(rest) = target.strip_prefix(prefix) else {
        return false;
    };
    rest.is_empty() || rest.starts_with(':') || prefix.ends_with(':')
}

/// A checked event filter. Unset parts match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Events at or after this many milliseconds since the epoch.
    pub start_millis: Option<i64>,
    /// Events before this many milliseconds since the epoch.
    pub end_millis: Option<i64>,
    /// The actions that match (one for an exact action, several for a prefix).
    pub actions: Option<Vec<&'static str>>,
    /// Wire value of the only outcome that matches.
    pub outcome: Option<i32>,
    /// Wire value of the only severity that matches.
    pub severity: Option<i32>,
    /// The only initiator id that matches.
    pub initiator_id: Option<String>,
    /// How the target id must match.
    pub target: Option<TargetMatch>,
    /// The only correlation id that matches.
    pub correlation_id: Option<String>,
    /// The accounts whose events match: the caller's scope, never the wire's.
    pub scope: Scope,
}

impl Filter {
    /// Returns the checked form of a wire filter (`None` matches everything).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the `filter.*` field at fault: a malformed timestamp,
    /// an inverted time range, an unknown action or prefix, an unknown outcome or severity.
    pub fn from_wire(wire: Option<&proto::EventFilter>) -> Result<Self> {
        let Some(wire) = wire else {
            return Ok(Filter::default());
        };
        let start_millis = wire.start_time.as_ref().map(|t| millis_ceil("filter.start_time", t)).transpose()?;
        let end_millis = wire.end_time.as_ref().map(|t| millis_ceil("filter.end_time", t)).transpose()?;
        if let (Some(start), Some(end)) = (start_millis, end_millis)
            && start > end
        {
            return Err(Error::invalid("inverted time range: filter.start_time is after filter.end_time"));
        }
        let actions = (!wire.action.is_empty()).then(|| actions_for(&wire.action)).transpose()?;
        let outcome = match wire.outcome {
            0 => None,
            value if proto::Outcome::try_from(value).is_ok() => Some(value),
            value => return Err(Error::invalid(format!("unknown filter.outcome {value}"))),
        };
        let severity = match wire.severity {
            0 => None,
            value if proto::Severity::try_from(value).is_ok() => Some(value),
            value => return Err(Error::invalid(format!("unknown filter.severity {value}"))),
        };
        let target = (!wire.target_id.is_empty()).then(|| match wire.target_id.parse::<Crn>() {
            Ok(_) => TargetMatch::Exact(wire.target_id.clone()),
            Err(_) => TargetMatch::Prefix(wire.target_id.clone()),
        });
        Ok(Filter {
            start_millis,
            end_millis,
            actions,
            outcome,
            severity,
            initiator_id: non_empty(&wire.initiator_id),
            target,
            correlation_id: non_empty(&wire.correlation_id),
            scope: Scope::all(),
        })
    }

    /// Returns the filter limited to what `scope` admits.
    #[must_use]
    pub fn within(self, scope: &Scope) -> Self {
        Self { scope: scope.clone(), ..self }
    }

    /// Returns true when the filter matches every event.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Returns true when the stored event matches every set part of the filter.
    pub fn matches(&self, stored: &proto::StoredEvent) -> bool {
        let Some(event) = &stored.event else {
            return false;
        };
        if self.start_millis.is_some() || self.end_millis.is_some() {
            let Some(millis) = event.event_time.as_ref().map(event_millis) else {
                return false;
            };
            if self.start_millis.is_some_and(|start| millis < start) || self.end_millis.is_some_and(|end| millis >= end)
            {
                return false;
            }
        }
        if let Some(actions) = &self.actions
            && !actions.contains(&event.action.as_str())
        {
            return false;
        }
        if self.outcome.is_some_and(|outcome| outcome != event.outcome) {
            return false;
        }
        if self.severity.is_some_and(|severity| severity != event.severity) {
            return false;
        }
        if let Some(initiator_id) = &self.initiator_id
            && event.initiator.as_ref().is_none_or(|initiator| &initiator.id != initiator_id)
        {
            return false;
        }
        if let Some(target) = &self.target
            && event.target.as_ref().is_none_or(|t| !target.matches(&t.id))
        {
            return false;
        }
        if let Some(correlation_id) = &self.correlation_id
            && &event.correlation_id != correlation_id
        {
            return false;
        }
        self.scope.admits(event)
    }
}

/// Returns the milliseconds of an event time (event times are whole milliseconds).
pub fn event_millis(time: &Timestamp) -> i64 {
    time.seconds.saturating_mul(1000).saturating_add(i64::from(time.nanos.div_euclid(1_000_000)))
}

/// Returns a bound in whole milliseconds, rounded up, so that `event >= bound` keeps its meaning.
fn millis_ceil(field: &str, time: &Timestamp) -> Result<i64> {
    if !(0..1_000_000_000).contains(&time.nanos) {
        return Err(Error::invalid(format!("invalid {field}: nanos {} out of range", time.nanos)));
    }
    let whole = time.seconds.checked_mul(1000).and_then(|ms| ms.checked_add(i64::from(time.nanos / 1_000_000)));
    let rounded = whole.and_then(|ms| ms.checked_add(i64::from(time.nanos % 1_000_000 != 0)));
    rounded.ok_or_else(|| Error::invalid(format!("invalid {field}: {}s out of range", time.seconds)))
}

/// Returns the actions an action filter selects: the action itself, or every action under a
/// prefix that ends at a dot boundary.
fn actions_for(value: &str) -> Result<Vec<&'static str>> {
    let actions: Vec<&'static str> = Action::EVERY
        .iter()
        .map(|action| action.as_str())
        .filter(|action| *action == value || action.strip_prefix(value).is_some_and(|rest| rest.starts_with('.')))
        .collect();
    if actions.is_empty() {
        return Err(Error::invalid(format!(
            "unknown filter.action `{}`: not an action nor a prefix of one at a dot boundary",
            qtrail_cadf::text::escape_control(value)
        )));
    }
    Ok(actions)
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_prefixes_stop_at_dots() {
        assert_eq!(actions_for("quantum-computing.job.cancel").unwrap(), vec!["quantum-computing.job.cancel"]);
        assert_eq!(actions_for("quantum-computing.job").unwrap().len(), 4);
        assert_eq!(actions_for("quantum-computing").unwrap().len(), 8);
        for bad in ["quantum-comp", "quantum-computing.jo", "quantum-computing.", "job", "."] {
            assert!(actions_for(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn target_prefixes_stop_at_segments() {
        let instance = "crn:v1:bluemix:public:quantum-computing:us-east:a/acc:inst::";
        let job = "crn:v1:bluemix:public:quantum-computing:us-east:a/acc:inst:job:j-1";
        let prefix = "crn:v1:bluemix:public:quantum-computing:us-east:a/acc:inst";
        assert!(prefix_matches(prefix, instance));
        assert!(prefix_matches(prefix, job));
        assert!(!prefix_matches(prefix, "crn:v1:bluemix:public:quantum-computing:us-east:a/acc:inst2::"));
        assert!(prefix_matches("crn:v1:bluemix:public:quantum-computing:us-east:a/acc:inst:", job));
        let wire = proto::EventFilter { target_id: job.into(), ..Default::default() };
        let filter = Filter::from_wire(Some(&wire)).unwrap();
        assert_eq!(filter.target, Some(TargetMatch::Exact(job.into())));
        assert!(!filter.target.unwrap().matches("crn:v1:bluemix:public:quantum-computing:us-east:a/acc:inst:job:j-10"));
    }

    #[test]
    fn time_bounds_round_up_and_must_not_invert() {
        let at = |seconds, nanos| Some(Timestamp { seconds, nanos });
        let wire = proto::EventFilter { start_time: at(10, 1), end_time: at(11, 0), ..Default::default() };
        let filter = Filter::from_wire(Some(&wire)).unwrap();
        assert_eq!((filter.start_millis, filter.end_millis), (Some(10_001), Some(11_000)));
        let inverted = proto::EventFilter { start_time: at(12, 0), end_time: at(11, 0), ..Default::default() };
        assert!(Filter::from_wire(Some(&inverted)).unwrap_err().to_string().contains("inverted time range"));
        let bad = proto::EventFilter { start_time: at(1, -1), ..Default::default() };
        assert!(Filter::from_wire(Some(&bad)).unwrap_err().to_string().contains("filter.start_time"));
        let outcome = proto::EventFilter { outcome: 9, ..Default::default() };
        assert!(Filter::from_wire(Some(&outcome)).unwrap_err().to_string().contains("filter.outcome"));
    }
}
