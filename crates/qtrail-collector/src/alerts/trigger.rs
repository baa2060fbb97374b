//! Trigger evaluation: pure functions from a rule, its durable state and the events (or the
//! clock) to notices. No I/O here, so the evaluator, the dry run and the tests share it.
//!
//! Times are the events' receive times (when the collector stored them), not their event times:
//! receive times grow with `location_seq`, so a window slides in the order rules see events,
//! and a publisher that delivers an hour of buffered events late still counts them as a burst
//! the moment they arrive instead of in windows long closed. The clock ticks (absence, folded
//! cool-downs) use the collector's wall clock, the same clock receive times come from.

use std::collections::{BTreeMap, VecDeque};

use qtrail_proto::qtrail::audit::v1 as proto;
use serde::{Deserialize, Serialize};

use super::rule::{GroupBy, Rule, Trigger};
use crate::filter::event_millis;

/// Most sample events a notice carries.
pub(crate) const MAX_SAMPLES: usize = 10;
/// Most threshold groups a rule tracks at once; beyond it the group seen longest ago is dropped
/// (its matches stop counting), so a caller inventing initiators cannot grow the state.
pub(crate) const MAX_GROUPS: usize = 10_000;
/// Most matches a threshold rule remembers over all its groups: groups × count stays under it
/// (fewer groups for a large count), since the state is re-read and rewritten as it changes.
pub(crate) const MAX_TRACKED_MATCHES: usize = 100_000;

/// Returns how many groups a threshold of `count` may track.
pub(crate) fn max_groups(count: u32) -> usize {
    (MAX_TRACKED_MATCHES / (count as usize).max(1)).clamp(1, MAX_GROUPS)
}

/// What a trigger remembers between evaluations; stored with the rule's cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TriggerState {
    /// When the last `fired` notice went out (ms since the epoch).
    pub(crate) last_fired: Option<i64>,
    /// Matches the cool-down held back, folded into the next notice.
    pub(crate) pending: u64,
    /// Sample positions of those matches.
    pub(crate) pending_samples: Vec<u64>,
    /// Threshold: receive times and positions of recent matches, per group.
    pub(crate) groups: BTreeMap<String, VecDeque<(i64, u64)>>,
    /// Absence: receive time of the last match (or of the rule's creation).
    pub(crate) last_match: i64,
    /// Absence: whether the absence fired and has not resolved yet.
    pub(crate) absent: bool,
}

impl TriggerState {
    /// Returns the state of a new rule created at `now`.
    pub(crate) fn new(now: i64) -> Self {
        Self { last_match: now, ..Self::default() }
    }
}

/// What a notice says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoticeKind {
    /// The trigger fired.
    Fired,
    /// An absence ended.
    Resolved,
}

/// A notification to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    /// Fired or resolved.
    pub(crate) kind: NoticeKind,
    /// Matches covered.
    pub(crate) count: u64,
    /// Positions of up to [`MAX_SAMPLES`] of them.
    pub(crate) samples: Vec<u64>,
    /// When (ms since the epoch).
    pub(crate) time: i64,
}

/// Returns the receive time of a stored event in ms (0 without one).
pub(crate) fn receive_millis(event: &proto::StoredEvent) -> i64 {
    event.receive_time.as_ref().map_or(0, event_millis)
}

/// Feeds one stored event to a rule.
pub(crate) fn on_event(rule: &Rule, state: &mut TriggerState, event: &proto::StoredEvent, out: &mut Vec<Notice>) {
    if !rule.filter.matches(event) {
        return;
    }
    let now = receive_millis(event);
    let seq = event.location_seq;
    match rule.trigger {
        Trigger::Each => hit(rule, state, 1, &[seq], now, out),
        Trigger::Threshold { count, window, group_by } => {
            let key = group_key(group_by, event);
            if !state.groups.contains_key(&key) && state.groups.len() >= max_groups(count) {
                let stalest = state
                    .groups
                    .iter()
                    .min_by_key(|(_, seen)| seen.back().map_or(i64::MIN, |(time, _)| *time))
                    .map(|(key, _)| key.clone());
                if let Some(stalest) = stalest {
                    state.groups.remove(&stalest);
                }
            }
            let seen = state.groups.entry(key.clone()).or_default();
            seen.push_back((now, seq));
            let oldest = now.saturating_sub(millis(window));
            while seen.front().is_some_and(|(time, _)| *time <= oldest) || seen.len() > count as usize {
                seen.pop_front();
            }
            if seen.len() >= count as usize {
                let samples: Vec<u64> = seen.iter().rev().take(MAX_SAMPLES).rev().map(|(_, seq)| *seq).collect();
                let matched = seen.len() as u64;
                state.groups.remove(&key);
                hit(rule, state, matched, &samples, now, out);
            }
        }
        Trigger::Absence { .. } => {
            state.last_match = now;
            if state.absent {
                state.absent = false;
                out.push(Notice { kind: NoticeKind::Resolved, count: 1, samples: vec![seq], time: now });
            }
        }
    }
}

/// Advances a rule to the wall-clock time `now`: sends what the cool-down held back once it is
/// over, fires an absence, forgets threshold matches that left the window.
pub(crate) fn on_tick(rule: &Rule, state: &mut TriggerState, now: i64, out: &mut Vec<Notice>) {
    flush(rule, state, now, out);
    match rule.trigger {
        Trigger::Each => {}
        Trigger::Threshold { window, .. } => {
            let oldest = now.saturating_sub(millis(window));
            state.groups.retain(|_, seen| seen.back().is_some_and(|(time, _)| *time > oldest));
        }
        Trigger::Absence { duration } => {
            // A clock stepped back counts the absence from now, not from a last match that
            // seems to lie in the future.
            state.last_match = state.last_match.min(now);
            if !state.absent && now.saturating_sub(state.last_match) >= millis(duration) {
                state.absent = true;
                out.push(Notice { kind: NoticeKind::Fired, count: 0, samples: Vec::new(), time: now });
            }
        }
    }
}

/// Ends a rule's trigger (the rule is updated or deleted): the matches the cool-down held fire
/// now, and an open absence resolves, so that nothing the old rule saw is lost or left open.
pub(crate) fn on_close(state: &mut TriggerState, now: i64, out: &mut Vec<Notice>) {
    if state.pending > 0 {
        out.push(Notice {
            kind: NoticeKind::Fired,
            count: std::mem::take(&mut state.pending),
            samples: std::mem::take(&mut state.pending_samples),
            time: now,
        });
    }
    if std::mem::take(&mut state.absent) {
        out.push(Notice { kind: NoticeKind::Resolved, count: 0, samples: Vec::new(), time: now });
    }
}

/// Counts matches toward the next `fired` notice and sends it unless the cool-down holds it.
fn hit(rule: &Rule, state: &mut TriggerState, count: u64, samples: &[u64], now: i64, out: &mut Vec<Notice>) {
    state.pending += count;
    for &seq in samples {
        if state.pending_samples.len() < MAX_SAMPLES {
            state.pending_samples.push(seq);
        }
    }
    flush(rule, state, now, out);
}

/// Sends the held-back matches as one notice once the cool-down allows.
fn flush(rule: &Rule, state: &mut TriggerState, now: i64, out: &mut Vec<Notice>) {
    if state.pending == 0 {
        return;
    }
    // A clock stepped back (`now < last`) ends the cool-down rather than stretching it by the
    // step; without a cool-down nothing is ever held.
    if let Some(last) = state.last_fired
        && !rule.cooldown.is_zero()
        && (last..last.saturating_add(millis(rule.cooldown))).contains(&now)
    {
        return;
    }
    out.push(Notice {
        kind: NoticeKind::Fired,
        count: std::mem::take(&mut state.pending),
        samples: std::mem::take(&mut state.pending_samples),
        time: now,
    });
    state.last_fired = Some(now);
}

fn group_key(group_by: GroupBy, event: &proto::StoredEvent) -> String {
    let inner = event.event.as_ref();
    match group_by {
        GroupBy::None => String::new(),
        GroupBy::Initiator => inner.and_then(|e| e.initiator.as_ref()).map(|i| i.id.clone()).unwrap_or_default(),
        GroupBy::Target => inner.and_then(|e| e.target.as_ref()).map(|t| t.id.clone()).unwrap_or_default(),
    }
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::filter::Filter;

    fn rule(trigger: Trigger, cooldown: Duration) -> Rule {
        Rule {
            location: "us-east".parse().unwrap(),
            name: "r".into(),
            filter: Filter::default(),
            trigger,
            cooldown,
            channel: None,
        }
    }

    fn event(seq: u64, millis: i64, initiator: &str) -> proto::StoredEvent {
        proto::StoredEvent {
            location_seq: seq,
            receive_time: Some(prost_types::Timestamp {
                seconds: millis / 1000,
                nanos: (millis % 1000) as i32 * 1_000_000,
            }),
            event: Some(proto::AuditEvent {
                initiator: Some(proto::Initiator { id: initiator.into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_fires_per_event_and_a_cooldown_folds_a_storm_into_one_count() {
        let each = rule(Trigger::Each, Duration::ZERO);
        let (mut state, mut out) = (TriggerState::new(0), Vec::new());
        for seq in 1..=3 {
            on_event(&each, &mut state, &event(seq, 1000 + seq as i64, "a"), &mut out);
        }
        assert_eq!(out.iter().map(|n| n.count).collect::<Vec<_>>(), [1, 1, 1]);

        let calm = rule(Trigger::Each, Duration::from_secs(10));
        let (mut state, mut out) = (TriggerState::new(0), Vec::new());
        for seq in 1..=50 {
            on_event(&calm, &mut state, &event(seq, 1000 + seq as i64, "a"), &mut out);
        }
        assert_eq!(out.len(), 1, "the first fires, the storm waits");
        on_tick(&calm, &mut state, 5_000, &mut out);
        assert_eq!(out.len(), 1);
        on_tick(&calm, &mut state, 11_001, &mut out);
        assert_eq!((out.len(), out[1].count, out[1].samples.len()), (2, 49, MAX_SAMPLES));
    }

    #[test]
    fn threshold_counts_per_group_within_the_sliding_window() {
        let threshold = rule(
            Trigger::Threshold { count: 3, window: Duration::from_secs(60), group_by: GroupBy::Initiator },
            Duration::ZERO,
        );
        let (mut state, mut out) = (TriggerState::new(0), Vec::new());
        // Two by each initiator: no group reaches three.
        for (seq, who) in [(1, "a"), (2, "b"), (3, "a"), (4, "b")] {
            on_event(&threshold, &mut state, &event(seq, seq as i64 * 1000, who), &mut out);
        }
        assert!(out.is_empty());
        // A third by `a` 61 s after its first (seq 1), which left the window: two remain.
        on_event(&threshold, &mut state, &event(5, 62_000, "a"), &mut out);
        assert!(out.is_empty());
        on_event(&threshold, &mut state, &event(6, 62_500, "a"), &mut out);
        assert_eq!(out, [Notice { kind: NoticeKind::Fired, count: 3, samples: vec![3, 5, 6], time: 62_500 }]);
        // Firing starts the group over.
        on_event(&threshold, &mut state, &event(7, 63_000, "a"), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn absence_fires_once_on_the_clock_and_resolves_when_events_return() {
        let absence = rule(Trigger::Absence { duration: Duration::from_secs(10) }, Duration::ZERO);
        let (mut state, mut out) = (TriggerState::new(0), Vec::new());
        on_tick(&absence, &mut state, 9_999, &mut out);
        assert!(out.is_empty());
        on_tick(&absence, &mut state, 10_000, &mut out);
        on_tick(&absence, &mut state, 30_000, &mut out);
        assert_eq!(out.len(), 1, "fires once");
        on_event(&absence, &mut state, &event(1, 31_000, "a"), &mut out);
        assert_eq!(out[1].kind, NoticeKind::Resolved);
        on_tick(&absence, &mut state, 40_000, &mut out);
        assert_eq!(out.len(), 2);
        on_tick(&absence, &mut state, 41_000, &mut out);
        assert_eq!((out.len(), out[2].kind), (3, NoticeKind::Fired));
    }

    #[test]
    fn a_clock_stepped_back_holds_nothing_and_delays_no_absence() {
        let each = rule(Trigger::Each, Duration::ZERO);
        let (mut state, mut out) = (TriggerState::new(0), Vec::new());
        on_event(&each, &mut state, &event(1, 100_000, "a"), &mut out);
        on_event(&each, &mut state, &event(2, 50_000, "a"), &mut out);
        assert_eq!(out.len(), 2, "no cool-down, nothing held");

        let calm = rule(Trigger::Each, Duration::from_secs(10));
        let (mut state, mut out) = (TriggerState::new(0), Vec::new());
        on_event(&calm, &mut state, &event(1, 100_000, "a"), &mut out);
        on_event(&calm, &mut state, &event(2, 50_000, "a"), &mut out);
        assert_eq!(out.len(), 2, "a step back ends the cool-down");

        let absence = rule(Trigger::Absence { duration: Duration::from_secs(10) }, Duration::ZERO);
        let (mut state, mut out) = (TriggerState::new(0), Vec::new());
        on_event(&absence, &mut state, &event(1, 100_000, "a"), &mut out);
        on_tick(&absence, &mut state, 50_000, &mut out);
        on_tick(&absence, &mut state, 60_000, &mut out);
        assert_eq!(out.len(), 1, "the absence counts from the step, not from the future match");
    }

    #[test]
    fn closing_fires_the_held_matches_and_resolves_an_open_absence() {
        let calm = rule(Trigger::Each, Duration::from_secs(10));
        let (mut state, mut out) = (TriggerState::new(0), Vec::new());
        for seq in 1..=3 {
            on_event(&calm, &mut state, &event(seq, 1000 + seq as i64, "a"), &mut out);
        }
        on_close(&mut state, 2_000, &mut out);
        assert_eq!(out[1], Notice { kind: NoticeKind::Fired, count: 2, samples: vec![2, 3], time: 2_000 });

        let absence = rule(Trigger::Absence { duration: Duration::from_secs(10) }, Duration::ZERO);
        let (mut state, mut out) = (TriggerState::new(0), Vec::new());
        on_tick(&absence, &mut state, 10_000, &mut out);
        on_close(&mut state, 11_000, &mut out);
        assert_eq!(out.iter().map(|notice| notice.kind).collect::<Vec<_>>(), [NoticeKind::Fired, NoticeKind::Resolved]);
        on_close(&mut state, 12_000, &mut out);
        assert_eq!(out.len(), 2, "closed once");
    }

    #[test]
    fn groups_times_count_stays_bounded() {
        assert_eq!(max_groups(1), MAX_GROUPS);
        assert_eq!(max_groups(10_000), 10);
        let big = rule(
            Trigger::Threshold { count: 10_000, window: Duration::from_secs(60), group_by: GroupBy::Initiator },
            Duration::ZERO,
        );
        let (mut state, mut out) = (TriggerState::new(0), Vec::new());
        for seq in 1..=50 {
            on_event(&big, &mut state, &event(seq, 1000 + seq as i64, &format!("i{seq}")), &mut out);
        }
        assert_eq!(state.groups.len(), 10);
        assert!(state.groups.contains_key("i50") && !state.groups.contains_key("i40"));
    }
}
