//! The evaluator: one task that runs every rule over its location's stored events, in location
//! order, from the rule's durable cursor on, and on a clock tick (absence, folded cool-downs).
//!
//! It reads the store, never the ingest path: woken by the fan-out of committed batches, it reads
//! what is durable, so a rule never sees an event that could still be lost, and ingest never
//! waits for a rule. The rules of one location share each read of the events.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1 as proto;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::backend::AlertStore;
use super::meters;
use super::rule::{self, Rule};
use super::state::{NewFiring, RuleState};
use super::trigger::{self, Notice, NoticeKind};
use super::webhook::{self, Channels};
use crate::error::Result;
use crate::fanout::Subscriber;
use crate::ingest::blocking;
use crate::replica::Role;
use crate::store::EventStore;

/// Events read per step of a location.
const CHUNK_EVENTS: usize = 1000;
/// How often the clock triggers run without new events.
const TICK: Duration = Duration::from_millis(250);
/// Least time between two warnings of the same failing rule or location, in ms.
const WARN_EVERY_MS: i64 = 60_000;

/// The evaluator's parts.
#[derive(Debug)]
pub(crate) struct Evaluator {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) state: Arc<AlertStore>,
    pub(crate) notifier: Arc<Notifier>,
    pub(crate) warnings: Arc<Warnings>,
    pub(crate) memory: Arc<Mutex<Memory>>,
    /// Rule changes wake the evaluator at once.
    pub(crate) wake: Arc<Notify>,
}

/// What an evaluation tells as it goes, rather than at its end: a backlog read after a restart
/// must not hold back the deliveries of its first chunks, nor keep all its firings in memory.
pub(crate) trait Progress {
    /// The rules about to be evaluated.
    fn rules(&self, rules: &[Rule]);
    /// The firings one commit recorded.
    fn recorded(&self, firings: &[proto::AlertFiring]);
}

/// Tells the webhook workers and the watches.
#[derive(Debug)]
pub(crate) struct Notifier {
    pub(crate) channels: Channels,
    /// Carries the newest firing number to WatchAlerts streams.
    pub(crate) firings: watch::Sender<u64>,
}

impl Progress for Notifier {
    fn rules(&self, rules: &[Rule]) {
        self.channels.sync(rules);
    }

    fn recorded(&self, firings: &[proto::AlertFiring]) {
        for firing in firings {
            let kind = if firing.kind == proto::FiringKind::Resolved as i32 { "resolved" } else { "fired" };
            let key = rule::rule_key(&firing.location, &firing.rule);
            meters::firing(&key, kind);
            if !firing.webhook_id.is_empty() {
                self.channels.wake(&key);
            }
        }
        if let Some(last) = firings.last() {
            self.firings.send_replace(last.number);
        }
    }
}

impl Evaluator {
    /// Evaluates while `role` leads, until `stop`, woken by committed batches, rule changes and
    /// the clock: replicas over a shared store would otherwise each fire every rule.
    pub(crate) async fn run(self, mut committed: Subscriber, mut role: Role, stop: CancellationToken) {
        loop {
            if !role.is_leader() {
                // Deliveries are shared state over a shared store: only the leader sends them.
                self.notifier.channels.sync(&[]);
                tokio::select! {
                    () = role.wait_until(true) => {}
                    () = stop.cancelled() => break,
                }
            }
            // Everything committed so far is read by this evaluation: one wake-up for a burst.
            committed.skip_to_newest();
            let (store, state) = (self.store.clone(), self.state.clone());
            let (notifier, warnings, memory) = (self.notifier.clone(), self.warnings.clone(), self.memory.clone());
            let evaluated = blocking(move || {
                let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                evaluate(store.as_ref(), &state, now_millis(), notifier.as_ref(), &warnings, &mut memory)
            })
            .await;
            if let Err(err) = evaluated {
                warn!(error = %err, "alert evaluation failed, retrying");
            }
            tokio::select! {
                _ = committed.recv() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
                () = role.wait_until(false) => {}
                () = stop.cancelled() => break,
            }
        }
        self.notifier.channels.stop().await;
    }
}

/// A rule loaded for evaluation, with its state and what it has to notify.
#[derive(Debug)]
struct Loaded {
    rule: Rule,
    state: RuleState,
    /// The state as last committed: an unchanged rule without notices commits nothing, so an
    /// idle clock tick costs no write.
    committed: RuleState,
    notices: Vec<Notice>,
}

/// Runs every rule over the events its cursor has not reached, then the clock; commits per
/// chunk and tells `progress` of each commit's firings.
pub(crate) fn evaluate(
    store: &dyn EventStore,
    state: &AlertStore,
    now: i64,
    progress: &dyn Progress,
    warnings: &Warnings,
    memory: &mut Memory,
) -> Result<()> {
    let generation = state.generation()?;
    if memory.generation != Some(generation) {
        memory.by_location = load(state, now, warnings)?;
        memory.generation = Some(generation);
        let rules: Vec<Rule> = memory.by_location.values().flatten().map(|loaded| loaded.rule.clone()).collect();
        progress.rules(&rules);
    }
    // Each location on its own: one that fails (and is retried on the next tick) does not stop
    // alerting in the others.
    for loaded in memory.by_location.values_mut() {
        let location = loaded[0].rule.location.clone();
        if let Err(err) = evaluate_location(store, state, &location, loaded, now, progress) {
            // What is in memory may be ahead of what was committed: read it again.
            memory.generation = None;
            meters::evaluation_error(location.as_str());
            if warnings.due(location.as_str(), now) {
                warn!(location = %location, error = %err, "alert evaluation of a location failed, retrying");
            }
        }
    }
    Ok(())
}

/// Reads every stored rule that still checks, with its state, by location.
fn load(state: &AlertStore, now: i64, warnings: &Warnings) -> Result<BTreeMap<String, Vec<Loaded>>> {
    let mut by_location: BTreeMap<String, Vec<Loaded>> = BTreeMap::new();
    for (stored, rule_state) in state.rules(None)? {
        match rule::check(&stored) {
            Ok(rule) => by_location.entry(stored.location.clone()).or_default().push(Loaded {
                rule,
                committed: rule_state.clone(),
                state: rule_state,
                notices: Vec::new(),
            }),
            Err(err) => {
                let key = rule::rule_key(&stored.location, &stored.name);
                if warnings.due(&key, now) {
                    warn!(rule = %key, error = %err, "stored alert rule no longer checks, skipped");
                }
            }
        }
    }
    Ok(by_location)
}

/// The rules and their states as last committed, kept between evaluations so that a clock tick
/// re-reads nothing; read again only when a rule changed (the generation counter moved) or an
/// evaluation failed.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    generation: Option<u64>,
    by_location: BTreeMap<String, Vec<Loaded>>,
}

/// Rate-limits the warnings of a condition that holds on every tick: once a minute per subject.
#[derive(Debug, Default)]
pub(crate) struct Warnings(Mutex<HashMap<String, i64>>);

impl Warnings {
    /// Returns whether a warning about `subject` is due at `now`, and if so counts it as given.
    pub(crate) fn due(&self, subject: &str, now: i64) -> bool {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let due = last.get(subject).is_none_or(|last| now.saturating_sub(*last) >= WARN_EVERY_MS || now < *last);
        if due {
            last.insert(subject.to_owned(), now);
        }
        due
    }
}

fn evaluate_location(
    store: &dyn EventStore,
    state: &AlertStore,
    location: &Location,
    loaded: &mut [Loaded],
    now: i64,
    progress: &dyn Progress,
) -> Result<()> {
    let last = store.last_seq(location)?;
    let mut cursor = loaded.iter().map(|loaded| loaded.state.cursor).min().unwrap_or(last);
    while cursor < last {
        let events = store.events(location, cursor + 1, CHUNK_EVENTS)?;
        let Some(newest) = events.last().map(|event| event.location_seq) else {
            break;
        };
        for rule in loaded.iter_mut() {
            let unread = rule.state.cursor;
            for event in events.iter().filter(|event| event.location_seq > unread) {
                trigger::on_event(&rule.rule, &mut rule.state.trigger, event, &mut rule.notices);
                rule.state.cursor = event.location_seq;
            }
        }
        progress.recorded(&commit(store, state, loaded, &events, now)?);
        cursor = newest;
    }
    // The clock only runs for rules that have read everything stored, so that an absence is
    // never declared while matching events wait unread.
    for rule in loaded.iter_mut().filter(|rule| rule.state.cursor >= last) {
        trigger::on_tick(&rule.rule, &mut rule.state.trigger, now, &mut rule.notices);
    }
    progress.recorded(&commit(store, state, loaded, &[], now)?);
    Ok(())
}

/// Commits every rule's state with its notices as firings, in one transaction.
fn commit(
    store: &dyn EventStore,
    state: &AlertStore,
    loaded: &mut [Loaded],
    read: &[proto::StoredEvent],
    now: i64,
) -> Result<Vec<proto::AlertFiring>> {
    let by_seq: HashMap<u64, &proto::StoredEvent> = read.iter().map(|event| (event.location_seq, event)).collect();
    let mut evaluated = Vec::with_capacity(loaded.len());
    for rule in loaded.iter_mut().filter(|rule| rule.state != rule.committed || !rule.notices.is_empty()) {
        rule.committed = rule.state.clone();
        let mut firings = Vec::with_capacity(rule.notices.len());
        for notice in std::mem::take(&mut rule.notices) {
            firings.push(new_firing(store, &rule.rule, rule.state.cursor, notice, &by_seq)?);
        }
        evaluated.push((rule.rule.key(), rule.state.clone(), firings));
    }
    if evaluated.is_empty() {
        return Ok(Vec::new());
    }
    state.commit(evaluated, now)
}

/// Returns a notice of `rule` as a firing to record, with its sample events (from `read`, else
/// from the store).
fn new_firing(
    store: &dyn EventStore,
    rule: &Rule,
    cursor: u64,
    notice: Notice,
    read: &HashMap<u64, &proto::StoredEvent>,
) -> Result<NewFiring> {
    let mut events = Vec::with_capacity(notice.samples.len());
    for seq in notice.samples {
        match read.get(&seq) {
            Some(event) => events.push((*event).clone()),
            None => events.extend(store.events(&rule.location, seq, 1)?.into_iter().filter(|e| e.location_seq == seq)),
        }
    }
    let firing = proto::AlertFiring {
        location: rule.location.to_string(),
        rule: rule.name.clone(),
        kind: match notice.kind {
            NoticeKind::Fired => proto::FiringKind::Fired,
            NoticeKind::Resolved => proto::FiringKind::Resolved,
        } as i32,
        time: Some(timestamp(notice.time)),
        count: notice.count,
        events,
        cursor,
        ..Default::default()
    };
    let body = rule.channel.as_ref().map(|_| webhook::body as fn(&proto::AlertFiring) -> String);
    Ok(NewFiring { firing, body })
}

/// Returns the firings that close a stored rule's trigger state at `now` (see
/// [`trigger::on_close`]); none for a rule that no longer checks.
///
/// # Errors
/// [`StoreError`](crate::store::StoreError) reading sample events.
pub(crate) fn closing(
    store: &dyn EventStore,
    stored: &proto::AlertRule,
    state: &RuleState,
    now: i64,
) -> Result<Vec<NewFiring>> {
    let Ok(rule) = rule::check(stored) else {
        return Ok(Vec::new());
    };
    let (mut trigger, mut notices) = (state.trigger.clone(), Vec::new());
    trigger::on_close(&mut trigger, now, &mut notices);
    let none = HashMap::new();
    notices.into_iter().map(|notice| new_firing(store, &rule, state.cursor, notice, &none)).collect()
}

/// Returns the wall clock in ms since the epoch.
pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Returns a timestamp of ms since the epoch.
pub(crate) fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: millis.div_euclid(1000), nanos: (millis.rem_euclid(1000) * 1_000_000) as i32 }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::store::RedbStore;
    use crate::store::conformance::{append_all, at, batch, location, simple_events};

    /// Appends `count` more events, published from `seq` on.
    fn append_all_from(store: &RedbStore, seq: u64, count: usize) {
        let events = simple_events("us-east", seq as usize + count);
        let items: Vec<(u64, &qtrail_cadf::AuditEvent)> =
            (0..count).map(|i| (seq + i as u64, &events[seq as usize - 1 + i])).collect();
        store.append(vec![batch("us-east", "pub-1", 1, &items)], at(1)).unwrap();
    }

    /// Records the firings of each commit as the evaluation tells them.
    #[derive(Default)]
    struct Told(RefCell<Vec<usize>>);

    impl Progress for Told {
        fn rules(&self, _: &[Rule]) {}

        fn recorded(&self, firings: &[proto::AlertFiring]) {
            if !firings.is_empty() {
                self.0.borrow_mut().push(firings.len());
            }
        }
    }

    #[test]
    fn each_commit_is_told_as_it_happens() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        store.create_collector(&location("us-east"), at(1)).unwrap();
        let state = AlertStore::embedded(dir.path(), 100_000).unwrap();
        let each = proto::AlertRule {
            location: "us-east".into(),
            name: "each".into(),
            trigger: Some(proto::AlertTrigger { kind: Some(proto::alert_trigger::Kind::Each(proto::EachTrigger {})) }),
            ..Default::default()
        };
        state.create(&each, &RuleState::default()).unwrap();
        append_all(&store, "us-east", &simple_events("us-east", 2 * CHUNK_EVENTS + 500));
        let told = Told::default();
        let (warnings, mut memory) = (Warnings::default(), Memory::default());
        evaluate(&store, &state, now_millis(), &told, &warnings, &mut memory).unwrap();
        assert_eq!(*told.0.borrow(), [CHUNK_EVENTS, CHUNK_EVENTS, 500]);
        // Kept in memory until a rule changes: a rule deleted is seen by the next evaluation.
        append_all_from(&store, 2 * CHUNK_EVENTS as u64 + 501, 1);
        evaluate(&store, &state, now_millis(), &told, &warnings, &mut memory).unwrap();
        assert_eq!(told.0.borrow().last(), Some(&1));
        state.delete("us-east", "each", 0, &|_, _| Ok(Vec::new())).unwrap();
        append_all_from(&store, 2 * CHUNK_EVENTS as u64 + 502, 1);
        evaluate(&store, &state, now_millis(), &told, &warnings, &mut memory).unwrap();
        assert_eq!(told.0.borrow().len(), 4, "nothing fired for the deleted rule");
    }

    #[test]
    fn a_warning_repeats_at_most_once_a_minute() {
        let warnings = Warnings::default();
        assert!(warnings.due("us-east", 1_000));
        assert!(!warnings.due("us-east", 1_250));
        assert!(warnings.due("eu-de", 1_250));
        assert!(!warnings.due("us-east", 60_999));
        assert!(warnings.due("us-east", 61_000));
    }
}
