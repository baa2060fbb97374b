//! The registry of collectors: at most one per location, created by an admin.
//!
//! Uniqueness is the store's: creation checks and inserts in one write transaction, and write
//! transactions are serialised, so of any number of concurrent creates for one location (in
//! this process or across restarts) exactly one succeeds.

use std::sync::Arc;

use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1 as proto;
use tracing::info;

use crate::error::{Error, Result};
use crate::ingest::blocking;
use crate::store::{EventStore, StoreError};

/// Creates and lists collectors.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    store: Arc<dyn EventStore>,
}

/// Returns the location named in a request, checked.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the `location` field.
pub(crate) fn parse_location(value: &str) -> Result<Location> {
    if value.is_empty() {
        return Err(Error::invalid("missing location"));
    }
    value.parse().map_err(|err| {
        Error::invalid(format!("invalid location `{}`: {err}", qtrail_cadf::text::escape_control(value)))
    })
}

impl Registry {
    /// Returns the registry over `store`.
    pub(crate) fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }

    /// Creates the collector of `location`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed location, [`Error::CollectorExists`] when the
    /// location has a collector already.
    pub(crate) async fn create(&self, location: &str, caller: &str) -> Result<proto::Collector> {
        let location = parse_location(location)?;
        let store = self.store.clone();
        let created = location.clone();
        let collector = blocking(move || match store.create_collector(&created, crate::writer::now()) {
            Ok(collector) => Ok(collector),
            Err(StoreError::CollectorExists(location)) => Err(Error::CollectorExists(location)),
            Err(err) => Err(err.into()),
        })
        .await?;
        crate::meters::events_stored(location.as_str(), 0);
        info!(location = %location, token = %caller, "collector created");
        Ok(collector)
    }

    /// Returns the collector of `location`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed location, [`Error::CollectorNotFound`] when
    /// the location has none.
    pub(crate) async fn get(&self, location: &str) -> Result<proto::Collector> {
        let location = parse_location(location)?;
        require_collector(&self.store, location).await
    }

    /// Returns every collector, ordered by location.
    pub(crate) async fn list(&self) -> Result<Vec<proto::Collector>> {
        let store = self.store.clone();
        blocking(move || Ok(store.collectors()?)).await
    }
}

/// Returns the collector of `location`, or [`Error::CollectorNotFound`].
pub(crate) async fn require_collector(store: &Arc<dyn EventStore>, location: Location) -> Result<proto::Collector> {
    let store = store.clone();
    blocking(move || store.collector(&location)?.ok_or_else(|| Error::CollectorNotFound(location.to_string()))).await
}
