//! The alerts' state behind one interface, in the backend the store's choice implies: the
//! embedded `alerts.redb` of the data dir beside a file store, or the PostgreSQL tables that
//! every replica shares beside `--store postgres://…`.

use std::path::Path;

use qtrail_proto::qtrail::audit::v1 as proto;

use super::shared::SharedAlertState;
use super::state::{AlertState, Close, Closed, Delivery, NewFiring, RuleState};
use crate::error::Result;
use crate::store::postgres::PgOptions;

/// The alerts' state: rules, their cursors and trigger state, firings and deliveries.
#[derive(Debug)]
pub(crate) enum AlertStore {
    /// One collector's own, in its data dir.
    Embedded(AlertState),
    /// Shared by the replicas over one PostgreSQL database.
    Shared(Box<SharedAlertState>),
}

/// Runs `$call` on whichever backend `$self` is.
macro_rules! each {
    ($self:ident, $state:ident => $call:expr) => {
        match $self {
            AlertStore::Embedded($state) => $call,
            AlertStore::Shared($state) => $call,
        }
    };
}

impl AlertStore {
    /// Opens the embedded state in `data_dir`, keeping `max_firings` firings.
    ///
    /// # Errors
    /// As [`AlertState::open`].
    pub(crate) fn embedded(data_dir: &Path, max_firings: u64) -> Result<Self> {
        AlertState::open(data_dir, max_firings).map(Self::Embedded)
    }

    /// Opens the state shared in the database of `options`, keeping `max_firings` firings.
    ///
    /// # Errors
    /// As [`SharedAlertState::open`].
    pub(crate) fn shared(options: &PgOptions, max_firings: u64) -> Result<Self> {
        SharedAlertState::open(options, max_firings).map(|state| Self::Shared(Box::new(state)))
    }

    /// Returns whether other replicas share this state: then only the leader may send webhooks.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Self::Shared(_))
    }

    /// See [`AlertState::create`].
    pub(crate) fn create(&self, stored: &proto::AlertRule, state: &RuleState) -> Result<()> {
        each!(self, s => s.create(stored, state))
    }

    /// See [`AlertState::update`].
    pub(crate) fn update(
        &self,
        stored: proto::AlertRule,
        now: i64,
        close: Close<'_>,
    ) -> Result<(proto::AlertRule, Closed)> {
        each!(self, s => s.update(stored, now, close))
    }

    /// See [`AlertState::delete`].
    pub(crate) fn delete(&self, location: &str, name: &str, now: i64, close: Close<'_>) -> Result<Closed> {
        each!(self, s => s.delete(location, name, now, close))
    }

    /// See [`AlertState::rule`].
    pub(crate) fn rule(&self, location: &str, name: &str) -> Result<Option<(proto::AlertRule, RuleState)>> {
        each!(self, s => s.rule(location, name))
    }

    /// See [`AlertState::rules`].
    pub(crate) fn rules(&self, location: Option<&str>) -> Result<Vec<(proto::AlertRule, RuleState)>> {
        each!(self, s => s.rules(location))
    }

    /// See [`AlertState::commit`].
    pub(crate) fn commit(
        &self,
        evaluated: Vec<(String, RuleState, Vec<NewFiring>)>,
        now: i64,
    ) -> Result<Vec<proto::AlertFiring>> {
        each!(self, s => s.commit(evaluated, now))
    }

    /// See [`AlertState::firings`].
    pub(crate) fn firings(&self, location: Option<&str>, after: u64, limit: usize) -> Result<Vec<proto::AlertFiring>> {
        each!(self, s => s.firings(location, after, limit))
    }

    /// See [`AlertState::generation`].
    pub(crate) fn generation(&self) -> Result<u64> {
        each!(self, s => s.generation())
    }

    /// See [`AlertState::firing`].
    pub(crate) fn firing(&self, number: u64) -> Result<Option<proto::AlertFiring>> {
        each!(self, s => s.firing(number))
    }

    /// See [`AlertState::last_firing`].
    pub(crate) fn last_firing(&self) -> Result<u64> {
        each!(self, s => s.last_firing())
    }

    /// See [`AlertState::next_delivery`].
    pub(crate) fn next_delivery(&self, rule: &str) -> Result<Option<Delivery>> {
        each!(self, s => s.next_delivery(rule))
    }

    /// See [`AlertState::pending_count`].
    pub(crate) fn pending_count(&self, rule: &str) -> Result<u64> {
        each!(self, s => s.pending_count(rule))
    }

    /// See [`AlertState::record`].
    pub(crate) fn record(&self, delivery: &Delivery) -> Result<()> {
        each!(self, s => s.record(delivery))
    }
}

#[cfg(test)]
mod tests;
