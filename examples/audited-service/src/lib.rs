//! An example of a service audited through `qtrail-publisher`: a program catalogue that another
//! service calls. Each call's state change and its audit event are written in ONE redb
//! transaction through the [`Outbox`], so the two commit together or not at all, and the
//! [`qtrail_publisher::Publisher`] (started by the binary) delivers the events to the collector.

use std::sync::Arc;

use qtrail_cadf::{Action, Crn, EventBuilder, EventError, Initiator, Location};
use qtrail_publisher::{CommitMode, Outbox, OutboxError, OutboxLimits};
use redb::{Database, StorageError, Table, TableDefinition};

/// The catalogue's own state: program name → source.
const PROGRAMS: TableDefinition<'_, &str, &str> = TableDefinition::new("programs");

/// Why a call failed; nothing of it was stored, its event included.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database or the outbox failed, or the outbox is full.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The audit event cannot be built.
    #[error("cannot build the audit event: {0}")]
    Event(#[from] EventError),
}

/// The program catalogue of one service instance.
#[derive(Debug, Clone)]
pub struct Catalogue {
    outbox: Outbox,
    instance: Crn,
}

impl Catalogue {
    /// Opens the catalogue and its outbox in `db`; its events name `instance` of `account` in
    /// `location` as their source.
    ///
    /// # Errors
    /// When the database fails or the instance CRN is invalid.
    pub fn open(db: Arc<Database>, location: &Location, account: &str, instance: &str) -> Result<Self, Error> {
        let instance = Crn::instance(location, account, instance)
            .map_err(|err| EventError::BadCrn { field: "log source", source: err })?;
        // Calls here are few: each may pay its own fsync.
        let outbox = Outbox::open(db, "catalogue", OutboxLimits::default(), CommitMode::PerTransaction)?;
        Ok(Self { outbox, instance })
    }

    /// Returns the outbox, for the publisher.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Stores `source` as program `name` for `caller` (a create, or an update when it exists);
    /// returns the id of the audit event.
    ///
    /// # Errors
    /// When the change or its event cannot be stored; then neither is.
    pub fn put(&self, caller: &Initiator, name: &str, source: &str) -> Result<String, Error> {
        self.audited(|programs| {
            let existed = programs.insert(name, source)?.is_some();
            let action = if existed { Action::ProgramUpdate } else { Action::ProgramCreate };
            Ok(EventBuilder::new(action, self.instance.clone(), caller.clone()).target(name, name))
        })
    }

    /// Deletes program `name` for `caller`; a missing one is a refusal (404), audited too.
    /// Returns the id of the audit event.
    ///
    /// # Errors
    /// When the change or its event cannot be stored; then neither is.
    pub fn delete(&self, caller: &Initiator, name: &str) -> Result<String, Error> {
        self.audited(|programs| {
            let removed = programs.remove(name)?.is_some();
            let event = EventBuilder::new(Action::ProgramDelete, self.instance.clone(), caller.clone());
            let event = event.target(name, name);
            Ok(if removed { event } else { event.failure(404, "program not found") })
        })
    }

    /// Runs one call: `change` alters the programs and says what the event is, and the change
    /// and the event commit in one transaction (durably, before this returns), or neither does.
    fn audited(
        &self,
        change: impl FnOnce(&mut Table<'_, &'static str, &'static str>) -> Result<EventBuilder, StorageError>,
    ) -> Result<String, Error> {
        let txn = self.outbox.begin()?;
        let event = {
            let mut programs = txn.open_table(PROGRAMS).map_err(OutboxError::from)?;
            change(&mut programs).map_err(OutboxError::from)?.build()?
        };
        self.outbox.enqueue(&txn, &event)?;
        txn.commit()?;
        Ok(event.id.to_string())
    }
}
