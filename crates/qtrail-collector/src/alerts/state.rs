//! The alerts' durable state, in its own file of the data directory (`alerts.redb`), apart from
//! the event store so that a change of store engine leaves it alone: rules, each rule's cursor
//! and trigger state, firings, and the webhook deliveries of firings.
//!
//! An evaluation commits a rule's new cursor, trigger state, firings and deliveries in one
//! transaction: after a kill -9 the rule re-reads exactly the events whose evaluation was not
//! committed, so no firing is lost, and a committed firing keeps the webhook-id it got.

use std::path::Path;

use prost::Message as _;
use qtrail_proto::qtrail::audit::v1 as proto;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::rule::{MAX_RULES_PER_LOCATION, rule_key};
use super::trigger::TriggerState;
use crate::error::{Error, Result};
use crate::store::StoreError;
use upkeep::{forget_oldest, move_old_pending};

/// Stored rules (the wire message, secret included), by `location/name`.
const RULES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("rules");
/// Each rule's [`RuleState`] as JSON, by `location/name`.
const STATES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("rule_states");
/// Firings (the wire message), by number.
const FIRINGS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("firings");
/// Deliveries as JSON, by firing number.
const DELIVERIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("deliveries");
/// Deliveries still to make, by rule key and firing number, with when each is due next (ms):
/// what a channel's worker reads, without decoding a delivery until it is the one due.
const PENDING: TableDefinition<'_, (&str, u64), i64> = TableDefinition::new("pending_due");
/// The pending list before it kept when each is due: moved into [`PENDING`] on open.
const OLD_PENDING: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("pending");

/// Counters, by name: [`GENERATION`].
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// The last generation handed out, to any rule: a rule deleted and created again under the same
/// name gets a generation its predecessor never had.
const GENERATION: &str = "generation";

/// Most deliveries a channel holds undelivered; a firing beyond it is recorded as an overflow.
pub(crate) const MAX_PENDING_PER_CHANNEL: u64 = 1000;

/// A rule's evaluation state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RuleState {
    /// The last `location_seq` evaluated.
    pub(crate) cursor: u64,
    /// New at every create and update of the rule, from one counter for all rules, so that an
    /// evaluation of the old rule (or of a deleted one of the same name) is not committed over
    /// the new one.
    pub(crate) generation: u64,
    /// The trigger's memory.
    pub(crate) trigger: TriggerState,
}

/// A webhook delivery of one firing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Delivery {
    /// The firing's number.
    pub(crate) number: u64,
    /// The rule's key.
    pub(crate) rule: String,
    /// `webhook-id`, the same on every attempt.
    pub(crate) webhook_id: String,
    /// The body, made once so that every attempt sends the same bytes.
    pub(crate) body: String,
    /// Attempts made.
    pub(crate) attempts: u32,
    /// When the firing was recorded (ms): the retry horizon counts from here.
    pub(crate) created: i64,
    /// When to attempt next (ms).
    pub(crate) next_attempt: i64,
    /// The wire `DeliveryState`.
    pub(crate) state: i32,
    /// What the last attempt got, in lowercase words (never a secret).
    pub(crate) last_error: String,
}

/// A firing to record, with its delivery's body if the rule has a webhook.
#[derive(Debug, Clone)]
pub(crate) struct NewFiring {
    /// The firing; its number, webhook-id and delivery state are set on commit.
    pub(crate) firing: proto::AlertFiring,
    /// Makes the webhook body from the firing once it has its number and webhook-id.
    pub(crate) body: Option<fn(&proto::AlertFiring) -> String>,
}

/// Makes the firings that close a rule's old trigger state (held matches, an open absence).
pub(crate) type Close<'a> = &'a dyn Fn(&proto::AlertRule, &RuleState) -> Result<Vec<NewFiring>>;

/// What an update or delete did besides the rule: the firings it recorded to close the old
/// trigger state, and the firings whose pending delivery it failed.
#[derive(Debug, Default)]
pub(crate) struct Closed {
    /// Firings recorded, numbered.
    pub(crate) recorded: Vec<proto::AlertFiring>,
    /// Numbers of the firings whose delivery failed.
    pub(crate) failed: Vec<u64>,
}

/// The alerts' store.
#[derive(Debug)]
pub(crate) struct AlertState {
    db: Database,
    /// Firings kept: each commit deletes the oldest beyond it.
    max_firings: u64,
}

fn backend(err: impl std::fmt::Display) -> Error {
    Error::Store(StoreError::Backend(format!("alert state: {err}")))
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> Error {
    Error::Store(StoreError::Corrupt(format!("alert state: unreadable {what}: {err}")))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of numbers, strings and maps with string keys always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

impl AlertState {
    /// File name inside the data directory.
    pub(crate) const FILE_NAME: &'static str = "alerts.redb";

    /// Opens (or creates) the alert state in `data_dir`, keeping `max_firings` firings.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the file cannot be created or opened.
    pub(crate) fn open(data_dir: &Path, max_firings: u64) -> Result<Self> {
        let db = Database::create(data_dir.join(Self::FILE_NAME)).map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(RULES).map_err(backend)?;
        txn.open_table(STATES).map_err(backend)?;
        txn.open_table(FIRINGS).map_err(backend)?;
        txn.open_table(DELIVERIES).map_err(backend)?;
        txn.open_table(META).map_err(backend)?;
        move_old_pending(&txn)?;
        txn.commit().map_err(backend)?;
        Ok(Self { db, max_firings: max_firings.max(1) })
    }

    /// Stores a new checked rule with `state`, whose generation is replaced by a new one.
    ///
    /// # Errors
    /// [`Error::AlertRuleExists`], [`Error::ResourceExhausted`] past
    /// [`MAX_RULES_PER_LOCATION`], [`StoreError`].
    pub(crate) fn create(&self, stored: &proto::AlertRule, state: &RuleState) -> Result<()> {
        let key = rule_key(&stored.location, &stored.name);
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut rules = txn.open_table(RULES).map_err(backend)?;
            if rules.get(key.as_str()).map_err(backend)?.is_some() {
                return Err(Error::AlertRuleExists { location: stored.location.clone(), name: stored.name.clone() });
            }
            let prefix = format!("{}/", stored.location);
            let count = rules
                .range(prefix.as_str()..)
                .map_err(backend)?
                .take_while(|entry| entry.as_ref().is_ok_and(|(key, _)| key.value().starts_with(&prefix)));
            if count.count() >= MAX_RULES_PER_LOCATION {
                return Err(Error::ResourceExhausted(format!(
                    "location `{}` has {MAX_RULES_PER_LOCATION} alert rules, the most it may have",
                    stored.location
                )));
            }
            rules.insert(key.as_str(), stored.encode_to_vec().as_slice()).map_err(backend)?;
            let state = RuleState { generation: next_generation(&txn)?, ..state.clone() };
            txn.open_table(STATES)
                .map_err(backend)?
                .insert(key.as_str(), to_json(&state).as_slice())
                .map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }

    /// Replaces a rule, keeping its cursor and (when the new webhook has none) its secret; the
    /// trigger state starts over at `now`. What the old trigger still held is recorded first,
    /// as `close` makes it; without a webhook any longer, the rule's pending deliveries fail.
    ///
    /// # Errors
    /// [`Error::AlertRuleNotFound`], [`StoreError`], or what `close` returns.
    pub(crate) fn update(
        &self,
        mut stored: proto::AlertRule,
        now: i64,
        close: Close<'_>,
    ) -> Result<(proto::AlertRule, Closed)> {
        let key = rule_key(&stored.location, &stored.name);
        let txn = self.db.begin_write().map_err(backend)?;
        let mut closed = Closed::default();
        {
            let mut rules = txn.open_table(RULES).map_err(backend)?;
            let old = match rules.get(key.as_str()).map_err(backend)? {
                Some(old) => proto::AlertRule::decode(old.value()).map_err(|err| corrupt("rule", err))?,
                None => return Err(Error::AlertRuleNotFound { location: stored.location, name: stored.name }),
            };
            if let (Some(new), Some(old)) = (&mut stored.webhook, &old.webhook)
                && new.secret.is_empty()
            {
                new.secret.clone_from(&old.secret);
            }
            stored.create_time = old.create_time;
            rules.insert(key.as_str(), stored.encode_to_vec().as_slice()).map_err(backend)?;
            let old_state = read_state(&txn.open_table(STATES).map_err(backend)?, &key)?;
            closed.recorded = insert_firings(&txn, &key, close(&old, &old_state)?, now)?;
            if stored.webhook.is_none() {
                closed.failed = fail_pending(&txn, &key, "webhook removed")?;
            }
            let state = RuleState {
                cursor: old_state.cursor,
                generation: next_generation(&txn)?,
                trigger: TriggerState::new(now),
            };
            txn.open_table(STATES)
                .map_err(backend)?
                .insert(key.as_str(), to_json(&state).as_slice())
                .map_err(backend)?;
            stored.cursor = state.cursor;
        }
        txn.commit().map_err(backend)?;
        Ok((stored, closed))
    }

    /// Deletes a rule and its state, recording first what its trigger still held, as `close`
    /// makes it; the deliveries it had not made yet fail (their firings stay).
    ///
    /// # Errors
    /// [`Error::AlertRuleNotFound`], [`StoreError`], or what `close` returns.
    pub(crate) fn delete(&self, location: &str, name: &str, now: i64, close: Close<'_>) -> Result<Closed> {
        let key = rule_key(location, name);
        let txn = self.db.begin_write().map_err(backend)?;
        let mut closed = Closed::default();
        {
            let mut rules = txn.open_table(RULES).map_err(backend)?;
            let old = match rules.remove(key.as_str()).map_err(backend)? {
                Some(old) => proto::AlertRule::decode(old.value()).map_err(|err| corrupt("rule", err))?,
                None => return Err(Error::AlertRuleNotFound { location: location.into(), name: name.into() }),
            };
            let old_state = read_state(&txn.open_table(STATES).map_err(backend)?, &key)?;
            closed.recorded = insert_firings(&txn, &key, close(&old, &old_state)?, now)?;
            txn.open_table(STATES).map_err(backend)?.remove(key.as_str()).map_err(backend)?;
            closed.failed = fail_pending(&txn, &key, "rule deleted")?;
            // Moved so that an evaluator holding the rules in memory reads them again.
            next_generation(&txn)?;
        }
        txn.commit().map_err(backend)?;
        Ok(closed)
    }

    /// Returns a rule with its cursor (secret included: callers strip it with [`rule::public`]).
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) fn rule(&self, location: &str, name: &str) -> Result<Option<(proto::AlertRule, RuleState)>> {
        let key = rule_key(location, name);
        let txn = self.db.begin_read().map_err(backend)?;
        let rules = txn.open_table(RULES).map_err(backend)?;
        let Some(stored) = rules.get(key.as_str()).map_err(backend)? else {
            return Ok(None);
        };
        let mut stored = proto::AlertRule::decode(stored.value()).map_err(|err| corrupt("rule", err))?;
        let state = read_state(&txn.open_table(STATES).map_err(backend)?, &key)?;
        stored.cursor = state.cursor;
        Ok(Some((stored, state)))
    }

    /// Returns the rules of `location` (every rule with `None`), ordered by key, with their state.
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) fn rules(&self, location: Option<&str>) -> Result<Vec<(proto::AlertRule, RuleState)>> {
        let txn = self.db.begin_read().map_err(backend)?;
        let rules = txn.open_table(RULES).map_err(backend)?;
        let states = txn.open_table(STATES).map_err(backend)?;
        let prefix = location.map(|location| format!("{location}/")).unwrap_or_default();
        let mut found = Vec::new();
        for entry in rules.range(prefix.as_str()..).map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            let mut stored = proto::AlertRule::decode(value.value()).map_err(|err| corrupt("rule", err))?;
            let state = read_state(&states, key.value())?;
            stored.cursor = state.cursor;
            found.push((stored, state));
        }
        Ok(found)
    }

    /// Commits evaluations: each rule's new state (unless the rule was deleted or updated since,
    /// as `generation` tells), and its firings with their deliveries, numbered on. Returns the
    /// firings recorded, numbered.
    ///
    /// # Errors
    /// [`StoreError`]; then nothing is committed.
    pub(crate) fn commit(
        &self,
        evaluated: Vec<(String, RuleState, Vec<NewFiring>)>,
        now: i64,
    ) -> Result<Vec<proto::AlertFiring>> {
        let txn = self.db.begin_write().map_err(backend)?;
        let mut recorded = Vec::new();
        {
            let rules = txn.open_table(RULES).map_err(backend)?;
            let mut states = txn.open_table(STATES).map_err(backend)?;
            for (key, state, new) in evaluated {
                let current = match rules.get(key.as_str()).map_err(backend)? {
                    Some(_) => read_state(&states, &key)?,
                    None => continue,
                };
                if current.generation != state.generation {
                    continue;
                }
                states.insert(key.as_str(), to_json(&state).as_slice()).map_err(backend)?;
                recorded.extend(insert_firings(&txn, &key, new, now)?);
            }
            if !recorded.is_empty() {
                forget_oldest(&txn, self.max_firings)?;
            }
        }
        txn.commit().map_err(backend)?;
        Ok(recorded)
    }

    /// Returns up to `limit` firings numbered after `after`, of `location` (every location
    /// with `None`), oldest first, each with its delivery's current state.
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) fn firings(&self, location: Option<&str>, after: u64, limit: usize) -> Result<Vec<proto::AlertFiring>> {
        let txn = self.db.begin_read().map_err(backend)?;
        let firings = txn.open_table(FIRINGS).map_err(backend)?;
        let mut found = Vec::new();
        for entry in firings.range(after.saturating_add(1)..).map_err(backend)? {
            let (_, value) = entry.map_err(backend)?;
            let firing = proto::AlertFiring::decode(value.value()).map_err(|err| corrupt("firing", err))?;
            if location.is_none_or(|location| firing.location == location) {
                found.push(firing);
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Returns the last generation handed out: it moves with every create, update and delete.
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) fn generation(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        Ok(meta.get(GENERATION).map_err(backend)?.map_or(0, |value| value.value()))
    }

    /// Returns firing `number`, if recorded.
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) fn firing(&self, number: u64) -> Result<Option<proto::AlertFiring>> {
        let txn = self.db.begin_read().map_err(backend)?;
        let firings = txn.open_table(FIRINGS).map_err(backend)?;
        let Some(value) = firings.get(number).map_err(backend)? else {
            return Ok(None);
        };
        proto::AlertFiring::decode(value.value()).map(Some).map_err(|err| corrupt("firing", err))
    }

    /// Returns the newest firing number (0 before the first).
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) fn last_firing(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(backend)?;
        let firings = txn.open_table(FIRINGS).map_err(backend)?;
        Ok(firings.last().map_err(backend)?.map_or(0, |(number, _)| number.value()))
    }

    /// Returns the pending delivery of a channel that is due first.
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) fn next_delivery(&self, rule: &str) -> Result<Option<Delivery>> {
        let txn = self.db.begin_read().map_err(backend)?;
        let pending = txn.open_table(PENDING).map_err(backend)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(backend)?;
        let mut first: Option<(i64, u64)> = None;
        for entry in pending.range((rule, 0)..=(rule, u64::MAX)).map_err(backend)? {
            let (key, due) = entry.map_err(backend)?;
            let due = (due.value(), key.value().1);
            if first.is_none_or(|first| due < first) {
                first = Some(due);
            }
        }
        let Some((_, number)) = first else {
            return Ok(None);
        };
        let Some(value) = deliveries.get(number).map_err(backend)? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value()).map(Some).map_err(|err| corrupt("delivery", err))
    }

    /// Returns how many deliveries a channel has pending.
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) fn pending_count(&self, rule: &str) -> Result<u64> {
        let txn = self.db.begin_read().map_err(backend)?;
        let pending = txn.open_table(PENDING).map_err(backend)?;
        Ok(pending_numbers(&pending, rule, usize::MAX)?.len() as u64)
    }

    /// Records a delivery attempt's outcome: the delivery as it now stands (delivered and failed
    /// deliveries leave the channel's pending list), and the firing's delivery state with it.
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) fn record(&self, delivery: &Delivery) -> Result<()> {
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut pending = txn.open_table(PENDING).map_err(backend)?;
            let key = (delivery.rule.as_str(), delivery.number);
            // A rule deleted meanwhile dropped the delivery: record nothing new for it.
            if pending.get(key).map_err(backend)?.is_none() {
                return Ok(());
            }
            let mut kept = delivery.clone();
            if delivery.state == proto::DeliveryState::Pending as i32 {
                pending.insert(key, delivery.next_attempt).map_err(backend)?;
            } else {
                pending.remove(key).map_err(backend)?;
                // Never sent again: the body is not kept.
                kept.body.clear();
            }
            txn.open_table(DELIVERIES)
                .map_err(backend)?
                .insert(delivery.number, to_json(&kept).as_slice())
                .map_err(backend)?;
            let mut firings = txn.open_table(FIRINGS).map_err(backend)?;
            let firing = firings.get(delivery.number).map_err(backend)?.map(|value| value.value().to_vec());
            if let Some(firing) = firing {
                let mut firing = proto::AlertFiring::decode(firing.as_slice()).map_err(|err| corrupt("firing", err))?;
                firing.delivery = delivery.state;
                firings.insert(delivery.number, firing.encode_to_vec().as_slice()).map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)
    }
}

/// Records the firings of rule `key`, numbered on, each with its delivery if it has a body
/// (an overflow past [`MAX_PENDING_PER_CHANNEL`]); returns them numbered.
fn insert_firings(
    txn: &redb::WriteTransaction,
    key: &str,
    new: Vec<NewFiring>,
    now: i64,
) -> Result<Vec<proto::AlertFiring>> {
    let mut firings = txn.open_table(FIRINGS).map_err(backend)?;
    let mut deliveries = txn.open_table(DELIVERIES).map_err(backend)?;
    let mut pending = txn.open_table(PENDING).map_err(backend)?;
    let first = firings.last().map_err(backend)?.map_or(0, |(number, _)| number.value()) + 1;
    // Counted once, then kept up to date, rather than scanned per firing.
    let mut queued = pending_numbers(&pending, key, MAX_PENDING_PER_CHANNEL as usize)?.len() as u64;
    let mut recorded = Vec::with_capacity(new.len());
    for (number, NewFiring { mut firing, body }) in (first..).zip(new) {
        firing.number = number;
        if let Some(body) = body {
            firing.webhook_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            firing.delivery = if queued >= MAX_PENDING_PER_CHANNEL {
                super::meters::overflow(key);
                proto::DeliveryState::Overflow as i32
            } else {
                pending.insert((key, firing.number), now).map_err(backend)?;
                queued += 1;
                proto::DeliveryState::Pending as i32
            };
            // An overflow is never sent: no body to keep.
            let overflow = firing.delivery == proto::DeliveryState::Overflow as i32;
            let delivery = Delivery {
                number: firing.number,
                rule: key.to_owned(),
                webhook_id: firing.webhook_id.clone(),
                body: if overflow { String::new() } else { body(&firing) },
                attempts: 0,
                created: now,
                next_attempt: now,
                state: firing.delivery,
                last_error: String::new(),
            };
            deliveries.insert(firing.number, to_json(&delivery).as_slice()).map_err(backend)?;
        }
        firings.insert(firing.number, firing.encode_to_vec().as_slice()).map_err(backend)?;
        recorded.push(firing);
    }
    Ok(recorded)
}

/// Ends every pending delivery of rule `key` as failed for `reason`, in the delivery and in its
/// firing, so that no one waits for it and no later channel sends it; returns the firings'
/// numbers.
fn fail_pending(txn: &redb::WriteTransaction, key: &str, reason: &str) -> Result<Vec<u64>> {
    let mut pending = txn.open_table(PENDING).map_err(backend)?;
    let mut deliveries = txn.open_table(DELIVERIES).map_err(backend)?;
    let mut firings = txn.open_table(FIRINGS).map_err(backend)?;
    let numbers = pending_numbers(&pending, key, usize::MAX)?;
    for &number in &numbers {
        pending.remove((key, number)).map_err(backend)?;
        let delivery = deliveries.get(number).map_err(backend)?.map(|value| value.value().to_vec());
        if let Some(delivery) = delivery {
            let mut delivery: Delivery = serde_json::from_slice(&delivery).map_err(|err| corrupt("delivery", err))?;
            delivery.state = proto::DeliveryState::Failed as i32;
            delivery.last_error = reason.to_owned();
            delivery.body.clear();
            deliveries.insert(number, to_json(&delivery).as_slice()).map_err(backend)?;
        }
        let firing = firings.get(number).map_err(backend)?.map(|value| value.value().to_vec());
        if let Some(firing) = firing {
            let mut firing = proto::AlertFiring::decode(firing.as_slice()).map_err(|err| corrupt("firing", err))?;
            firing.delivery = proto::DeliveryState::Failed as i32;
            firings.insert(number, firing.encode_to_vec().as_slice()).map_err(backend)?;
        }
    }
    Ok(numbers)
}

fn next_generation(txn: &redb::WriteTransaction) -> Result<u64> {
    let mut meta = txn.open_table(META).map_err(backend)?;
    let last = meta.get(GENERATION).map_err(backend)?.map_or(0, |value| value.value());
    meta.insert(GENERATION, last + 1).map_err(backend)?;
    Ok(last + 1)
}

fn read_state(states: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> Result<RuleState> {
    match states.get(key).map_err(backend)? {
        Some(value) => serde_json::from_slice(value.value()).map_err(|err| corrupt("rule state", err)),
        None => Ok(RuleState::default()),
    }
}

fn pending_numbers(
    pending: &impl ReadableTable<(&'static str, u64), i64>,
    rule: &str,
    limit: usize,
) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in pending.range((rule, 0)..=(rule, u64::MAX)).map_err(backend)?.take(limit) {
        numbers.push(entry.map_err(backend)?.0.value().1);
    }
    Ok(numbers)
}

#[cfg(test)]
mod tests;
mod upkeep;
