//! The alerts' state in the PostgreSQL database of `--store postgres://…`, shared by every
//! replica: a rule created through one replica is evaluated by whichever leads, and a new leader
//! takes over from the committed cursors (tables in `store/postgres/migrations/0002_alerts.sql`).
//!
//! The same rules as the embedded [`AlertState`](super::state::AlertState): an evaluation commits
//! a rule's cursor, trigger state, firings and deliveries in one transaction. Every write holds
//! one transaction-level advisory lock, so firing numbers stay dense and in commit order across
//! replicas (writes are rare: evaluations of the one leader, rule changes, delivery outcomes).

use postgres::Transaction;
use prost::Message as _;
use qtrail_proto::qtrail::audit::v1 as proto;
use serde::Serialize;

use super::rule::{MAX_RULES_PER_LOCATION, rule_key};
use super::state::{Close, Closed, Delivery, MAX_PENDING_PER_CHANNEL, NewFiring, RuleState};
use super::trigger::TriggerState;
use crate::error::{Error, Result};
use crate::store::StoreError;
use crate::store::postgres::pool::Pool;
use crate::store::postgres::{PgError, PgOptions, PgStore};

mod firings;

/// Connections the alert state holds: evaluations, rule changes, webhook workers and watches.
const POOL_SIZE: usize = 4;

/// Key of the transaction-level advisory lock every write holds ("qtrail" in ASCII, then 0x20):
/// distinct from the migration's and the leadership's.
const WRITE_LOCK: i64 = 0x7174_7261_696c_0020;

/// The alerts' state in PostgreSQL.
#[derive(Debug)]
pub(crate) struct SharedAlertState {
    pool: Pool,
    /// Firings kept: each commit deletes the oldest beyond it.
    max_firings: u64,
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> PgError {
    PgError::Store(StoreError::Corrupt(format!("alert state: unreadable {what}: {err}")))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of numbers, strings and maps with string keys always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn decode_rule(bytes: &[u8]) -> Result<proto::AlertRule, PgError> {
    proto::AlertRule::decode(bytes).map_err(|err| corrupt("rule", err))
}

fn decode_state(bytes: &[u8]) -> Result<RuleState, PgError> {
    serde_json::from_slice(bytes).map_err(|err| corrupt("rule state", err))
}

/// Begins a write transaction holding [`WRITE_LOCK`].
fn write(client: &mut postgres::Client) -> Result<Transaction<'_>, PgError> {
    let mut txn = client.transaction()?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
    Ok(txn)
}

/// Runs `close` on the old rule and state; its error is kept in `failure` (it is no database
/// error) and the transaction is abandoned.
fn run_close(
    close: Close<'_>,
    old: &proto::AlertRule,
    state: &RuleState,
    failure: &mut Option<Error>,
) -> Result<Vec<NewFiring>, PgError> {
    close(old, state).map_err(|err| {
        *failure = Some(err);
        PgError::Store(StoreError::Backend(String::from("alert state: closing the old trigger failed")))
    })
}

impl SharedAlertState {
    /// Opens the alert state in the database of `options`, keeping `max_firings` firings.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the database cannot be reached or its schema is newer.
    pub(crate) fn open(options: &PgOptions, max_firings: u64) -> Result<Self> {
        Ok(Self { pool: PgStore::pool(options, POOL_SIZE)?, max_firings: max_firings.max(1) })
    }

    fn with<T>(&self, op: impl FnMut(&mut postgres::Client) -> Result<T, PgError>) -> Result<T> {
        Ok(self.pool.with(op).map_err(StoreError::from)?)
    }

    /// As [`AlertState::create`](super::state::AlertState::create).
    pub(crate) fn create(&self, stored: &proto::AlertRule, state: &RuleState) -> Result<()> {
        let key = rule_key(&stored.location, &stored.name);
        let outcome = self.with(|client| {
            let mut txn = write(client)?;
            if txn.query_opt("SELECT 1 FROM alert_rules WHERE key = $1", &[&key])?.is_some() {
                return Ok(Some(Error::AlertRuleExists {
                    location: stored.location.clone(),
                    name: stored.name.clone(),
                }));
            }
            let count: i64 =
                txn.query_one("SELECT count(*) FROM alert_rules WHERE location = $1", &[&stored.location])?.get(0);
            if count >= MAX_RULES_PER_LOCATION as i64 {
                return Ok(Some(Error::ResourceExhausted(format!(
                    "location `{}` has {MAX_RULES_PER_LOCATION} alert rules, the most it may have",
                    stored.location
                ))));
            }
            let state = RuleState { generation: next_generation(&mut txn)?, ..state.clone() };
            txn.execute(
                "INSERT INTO alert_rules (key, location, rule, state) VALUES ($1, $2, $3, $4)",
                &[&key, &stored.location, &stored.encode_to_vec(), &to_json(&state)],
            )?;
            txn.commit()?;
            Ok(None)
        })?;
        outcome.map_or(Ok(()), Err)
    }

    /// As [`AlertState::update`](super::state::AlertState::update).
    pub(crate) fn update(
        &self,
        stored: proto::AlertRule,
        now: i64,
        close: Close<'_>,
    ) -> Result<(proto::AlertRule, Closed)> {
        let key = rule_key(&stored.location, &stored.name);
        let mut failure = None;
        let outcome = self.with(|client| {
            let mut txn = write(client)?;
            let sql = "SELECT rule, state FROM alert_rules WHERE key = $1 FOR UPDATE";
            let Some(row) = txn.query_opt(sql, &[&key])? else {
                return Ok(None);
            };
            let (old, old_state) = (decode_rule(row.get(0))?, decode_state(row.get(1))?);
            let mut stored = stored.clone();
            if let (Some(new), Some(old)) = (&mut stored.webhook, &old.webhook)
                && new.secret.is_empty()
            {
                new.secret.clone_from(&old.secret);
            }
            stored.create_time = old.create_time;
            let mut closed = Closed {
                recorded: firings::insert(&mut txn, &key, run_close(close, &old, &old_state, &mut failure)?, now)?,
                ..Closed::default()
            };
            if stored.webhook.is_none() {
                closed.failed = firings::fail_pending(&mut txn, &key, "webhook removed")?;
            }
            let state = RuleState {
                cursor: old_state.cursor,
                generation: next_generation(&mut txn)?,
                trigger: TriggerState::new(now),
            };
            txn.execute(
                "UPDATE alert_rules SET rule = $2, state = $3 WHERE key = $1",
                &[&key, &stored.encode_to_vec(), &to_json(&state)],
            )?;
            txn.commit()?;
            stored.cursor = state.cursor;
            Ok(Some((stored, closed)))
        });
        match (outcome, failure) {
            (_, Some(err)) => Err(err),
            (Ok(Some(done)), None) => Ok(done),
            (Ok(None), None) => Err(Error::AlertRuleNotFound { location: stored.location, name: stored.name }),
            (Err(err), None) => Err(err),
        }
    }

    /// As [`AlertState::delete`](super::state::AlertState::delete).
    pub(crate) fn delete(&self, location: &str, name: &str, now: i64, close: Close<'_>) -> Result<Closed> {
        let key = rule_key(location, name);
        let mut failure = None;
        let outcome = self.with(|client| {
            let mut txn = write(client)?;
            let Some(row) = txn.query_opt("DELETE FROM alert_rules WHERE key = $1 RETURNING rule, state", &[&key])?
            else {
                return Ok(None);
            };
            let (old, old_state) = (decode_rule(row.get(0))?, decode_state(row.get(1))?);
            let mut closed = Closed {
                recorded: firings::insert(&mut txn, &key, run_close(close, &old, &old_state, &mut failure)?, now)?,
                ..Closed::default()
            };
            closed.failed = firings::fail_pending(&mut txn, &key, "rule deleted")?;
            // Moved so that an evaluator holding the rules in memory reads them again.
            next_generation(&mut txn)?;
            txn.commit()?;
            Ok(Some(closed))
        });
        match (outcome, failure) {
            (_, Some(err)) => Err(err),
            (Ok(Some(closed)), None) => Ok(closed),
            (Ok(None), None) => Err(Error::AlertRuleNotFound { location: location.into(), name: name.into() }),
            (Err(err), None) => Err(err),
        }
    }

    /// As [`AlertState::rule`](super::state::AlertState::rule).
    pub(crate) fn rule(&self, location: &str, name: &str) -> Result<Option<(proto::AlertRule, RuleState)>> {
        let key = rule_key(location, name);
        self.with(|client| {
            let Some(row) = client.query_opt("SELECT rule, state FROM alert_rules WHERE key = $1", &[&key])? else {
                return Ok(None);
            };
            let (mut stored, state) = (decode_rule(row.get(0))?, decode_state(row.get(1))?);
            stored.cursor = state.cursor;
            Ok(Some((stored, state)))
        })
    }

    /// As [`AlertState::rules`](super::state::AlertState::rules).
    pub(crate) fn rules(&self, location: Option<&str>) -> Result<Vec<(proto::AlertRule, RuleState)>> {
        self.with(|client| {
            let rows = match location {
                Some(location) => client
                    .query("SELECT rule, state FROM alert_rules WHERE location = $1 ORDER BY key", &[&location])?,
                None => client.query("SELECT rule, state FROM alert_rules ORDER BY key", &[])?,
            };
            rows.iter()
                .map(|row| {
                    let (mut stored, state) = (decode_rule(row.get(0))?, decode_state(row.get(1))?);
                    stored.cursor = state.cursor;
                    Ok((stored, state))
                })
                .collect()
        })
    }

    /// As [`AlertState::commit`](super::state::AlertState::commit).
    pub(crate) fn commit(
        &self,
        evaluated: Vec<(String, RuleState, Vec<NewFiring>)>,
        now: i64,
    ) -> Result<Vec<proto::AlertFiring>> {
        self.with(|client| {
            let mut txn = write(client)?;
            let mut recorded = Vec::new();
            for (key, state, new) in &evaluated {
                let sql = "SELECT state FROM alert_rules WHERE key = $1 FOR UPDATE";
                let Some(row) = txn.query_opt(sql, &[key])? else {
                    continue;
                };
                // A deposed leader's evaluation, finished after the new leader committed past
                // it, must not move the cursor back (its firings were made again).
                let current = decode_state(row.get(0))?;
                if current.generation != state.generation || current.cursor > state.cursor {
                    continue;
                }
                txn.execute("UPDATE alert_rules SET state = $2 WHERE key = $1", &[key, &to_json(state)])?;
                recorded.extend(firings::insert(&mut txn, key, new.clone(), now)?);
            }
            if !recorded.is_empty() {
                firings::forget_oldest(&mut txn, self.max_firings)?;
            }
            txn.commit()?;
            Ok(recorded)
        })
    }

    /// As [`AlertState::firings`](super::state::AlertState::firings).
    pub(crate) fn firings(&self, location: Option<&str>, after: u64, limit: usize) -> Result<Vec<proto::AlertFiring>> {
        let (after, limit) = (int(after), int(limit as u64));
        self.with(|client| {
            let rows = client.query(
                "SELECT firing FROM alert_firings WHERE number > $1 AND ($2::text IS NULL OR location = $2) \
                 ORDER BY number LIMIT $3",
                &[&after, &location, &limit],
            )?;
            rows.iter().map(|row| firings::decode(row.get(0))).collect()
        })
    }

    /// As [`AlertState::generation`](super::state::AlertState::generation).
    pub(crate) fn generation(&self) -> Result<u64> {
        self.with(|client| {
            let row = client.query_opt("SELECT value FROM alert_meta WHERE name = 'generation'", &[])?;
            Ok(row.map_or(0, |row| uint(row.get(0))))
        })
    }

    /// As [`AlertState::firing`](super::state::AlertState::firing).
    pub(crate) fn firing(&self, number: u64) -> Result<Option<proto::AlertFiring>> {
        self.with(|client| {
            let row = client.query_opt("SELECT firing FROM alert_firings WHERE number = $1", &[&int(number)])?;
            row.map(|row| firings::decode(row.get(0))).transpose()
        })
    }

    /// As [`AlertState::last_firing`](super::state::AlertState::last_firing).
    pub(crate) fn last_firing(&self) -> Result<u64> {
        self.with(|client| {
            let last: Option<i64> = client.query_one("SELECT max(number) FROM alert_firings", &[])?.get(0);
            Ok(last.map_or(0, uint))
        })
    }

    /// As [`AlertState::next_delivery`](super::state::AlertState::next_delivery).
    pub(crate) fn next_delivery(&self, rule: &str) -> Result<Option<Delivery>> {
        self.with(|client| {
            let row = client.query_opt(
                "SELECT d.delivery FROM alert_pending p JOIN alert_deliveries d USING (number) \
                 WHERE p.rule = $1 ORDER BY p.due, p.number LIMIT 1",
                &[&rule],
            )?;
            row.map(|row| serde_json::from_slice(row.get(0)).map_err(|err| corrupt("delivery", err))).transpose()
        })
    }

    /// As [`AlertState::pending_count`](super::state::AlertState::pending_count).
    pub(crate) fn pending_count(&self, rule: &str) -> Result<u64> {
        self.with(|client| {
            let count: i64 = client.query_one("SELECT count(*) FROM alert_pending WHERE rule = $1", &[&rule])?.get(0);
            Ok(uint(count))
        })
    }

    /// As [`AlertState::record`](super::state::AlertState::record).
    pub(crate) fn record(&self, delivery: &Delivery) -> Result<()> {
        self.with(|client| {
            let mut txn = write(client)?;
            firings::record(&mut txn, delivery)?;
            txn.commit()?;
            Ok(())
        })
    }
}

fn next_generation(txn: &mut Transaction<'_>) -> Result<u64, PgError> {
    let row = txn.query_one(
        "INSERT INTO alert_meta (name, value) VALUES ('generation', 1) \
         ON CONFLICT (name) DO UPDATE SET value = alert_meta.value + 1 RETURNING value",
        &[],
    )?;
    Ok(uint(row.get(0)))
}
