//! The PostgreSQL backend (`--store postgres://…`): any number of collectors ("replicas") may
//! serve one location over one database, each accepting Publish, queries and tails.
//!
//! Tables (see `postgres/migrations/0001_initial.sql`): `collectors` (one row per location: the
//! head — event count, head chain hash, tree size), `events` keyed by (location, location_seq)
//! with the stored protobuf record and the columns queries narrow on, UNIQUE (location,
//! event_id) for deduplication; `tree_hashes` (location, stored_index) → hash; `publishers`
//! (location, publisher_id) → state; `checkpoints` (location, number) → checkpoint.
//!
//! Each location's order is sequenced inside PostgreSQL: an append locks the heads of its
//! locations (`SELECT … FOR UPDATE`, in location order so that two groups never deadlock),
//! so replicas appending to one location serialize there while other locations proceed
//! ([`append`]). Indexes are plain B-trees written in the append's transaction: the query
//! indexes never lag (`index_step` does nothing, `indexed_seq` is the last position).

mod append;
pub(crate) mod pool;
mod query;
mod schema;
mod tls;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use prost::Message as _;
use prost_types::Timestamp;
use qtrail_cadf::{ChainHash, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::Hash;
use tracing::info;
use uuid::Uuid;

use super::{CheckpointEntry, EventStore, IndexStep, Result, StoreError, StoredBytes, error_text};
use crate::filter::{Filter, Order};
use pool::Pool;

pub use append::APPENDED_CHANNEL;
pub use tls::redacted;

/// Default number of connections of a collector's pool.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The `postgres://` URL, `sslmode` as libpq reads it (see `tls`).
    pub url: String,
    /// Most connections held open.
    pub pool_size: usize,
    /// A CA certificate file (PEM) that the server's certificate must chain to.
    pub ca: Option<PathBuf>,
}

impl PgOptions {
    /// Returns the options of `url` with the default pool and no private CA.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), pool_size: DEFAULT_POOL_SIZE, ca: None }
    }
}

/// Returns whether `store` names a PostgreSQL database.
pub fn is_postgres_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// A failure inside the backend: from PostgreSQL (whose kind decides a retry), or one of ours.
#[derive(Debug)]
pub(crate) enum PgError {
    Sql(postgres::Error),
    Store(StoreError),
}

impl From<postgres::Error> for PgError {
    fn from(err: postgres::Error) -> Self {
        Self::Sql(err)
    }
}

impl From<StoreError> for PgError {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

impl PgError {
    /// Returns whether the transaction lost a race PostgreSQL detected (serialization failure,
    /// deadlock) and may simply run again.
    fn is_retryable(&self) -> bool {
        use postgres::error::SqlState;
        matches!(self, Self::Sql(err) if err.code().is_some_and(|code| {
            *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        }))
    }

    /// Returns whether this is PostgreSQL refusing a duplicate key.
    fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Sql(err) if err.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

impl From<PgError> for StoreError {
    fn from(err: PgError) -> Self {
        match err {
            PgError::Store(err) => err,
            PgError::Sql(err) => {
                let text = match err.as_db_error() {
                    Some(db) => format!("postgresql: {}", db.message()),
                    None => format!("postgresql: {}", error_text(&err)),
                };
                if err.code() == Some(&postgres::error::SqlState::DISK_FULL) {
                    StoreError::Full(text)
                } else {
                    StoreError::Backend(text)
                }
            }
        }
    }
}

/// Returns `bytes` decoded as `M`, or [`StoreError::Corrupt`] naming `what`.
fn decode<M: prost::Message + Default>(what: &str, bytes: &[u8]) -> Result<M, PgError> {
    M::decode(bytes).map_err(|err| PgError::Store(StoreError::Corrupt(format!("{what} does not decode: {err}"))))
}

/// Returns a count or position as PostgreSQL's `bigint` (positions never reach 2^63).
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Returns a `bigint` read back as a count or position.
fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The PostgreSQL-backed [`EventStore`].
#[derive(Debug)]
pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    /// Connects, and brings the schema to the version this binary knows.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the URL is malformed, the server cannot be reached, or the
    /// database's schema is newer than this binary's.
    pub fn open(options: &PgOptions) -> Result<Self> {
        let (config, tls) = tls::connect_config(&options.url, options.ca.as_deref())?;
        let pool = Pool::new(config, tls, options.pool_size);
        let from = pool.with(schema::migrate)?;
        info!(
            store = %redacted(&options.url),
            pool_size = options.pool_size,
            schema_from = from,
            schema = schema::LATEST,
            "opened the postgresql store"
        );
        Ok(Self { pool })
    }

    /// Returns a pool of `size` connections to the database of `options`, its schema brought to
    /// the version this binary knows: for state beside the events (the alerts').
    ///
    /// # Errors
    /// As [`PgStore::open`].
    pub(crate) fn pool(options: &PgOptions, size: usize) -> Result<Pool> {
        let (config, tls) = tls::connect_config(&options.url, options.ca.as_deref())?;
        let pool = Pool::new(config, tls, size);
        pool.with(schema::migrate)?;
        Ok(pool)
    }

    /// Runs `op` on a pooled connection, its errors as store errors.
    fn with<T>(&self, op: impl FnMut(&mut postgres::Client) -> Result<T, PgError>) -> Result<T> {
        Ok(self.pool.with(op)?)
    }
}

fn collector_of(row: &postgres::Row) -> proto::Collector {
    proto::Collector {
        location: row.get("location"),
        create_time: Some(Timestamp { seconds: row.get("create_seconds"), nanos: row.get("create_nanos") }),
        event_count: uint(row.get("event_count")),
        head_chain_hash: row.get("head_chain_hash"),
    }
}

const COLLECTOR_COLUMNS: &str = "location, create_seconds, create_nanos, event_count, head_chain_hash";

impl EventStore for PgStore {
    fn create_collector(&self, location: &Location, create_time: Timestamp) -> Result<proto::Collector> {
        let inserted = self.pool.with(|client| {
            let sql = "INSERT INTO collectors (location, create_seconds, create_nanos) VALUES ($1, $2, $3)";
            Ok(client.execute(sql, &[&location.as_str(), &create_time.seconds, &create_time.nanos])?)
        });
        match inserted {
            Ok(_) => Ok(proto::Collector {
                location: location.to_string(),
                create_time: Some(create_time),
                event_count: 0,
                head_chain_hash: Vec::new(),
            }),
            // The primary key is where concurrent creates, from any replica, meet.
            Err(err) if err.is_unique_violation() => Err(StoreError::CollectorExists(location.to_string())),
            Err(err) => Err(err.into()),
        }
    }

    fn file_bytes(&self) -> Option<u64> {
        let size = self.with(|client| Ok(client.query_one("SELECT pg_database_size(current_database())", &[])?));
        size.ok().map(|row| uint(row.get(0)))
    }

    fn collector(&self, location: &Location) -> Result<Option<proto::Collector>> {
        let sql = format!("SELECT {COLLECTOR_COLUMNS} FROM collectors WHERE location = $1");
        let row = self.with(|client| Ok(client.query_opt(&sql, &[&location.as_str()])?))?;
        Ok(row.as_ref().map(collector_of))
    }

    fn collectors(&self) -> Result<Vec<proto::Collector>> {
        let sql = format!("SELECT {COLLECTOR_COLUMNS} FROM collectors ORDER BY location COLLATE \"C\"");
        let rows = self.with(|client| Ok(client.query(&sql, &[])?))?;
        Ok(rows.iter().map(collector_of).collect())
    }

    fn append(&self, batches: Vec<super::AppendBatch>, receive_time: Timestamp) -> Result<Vec<super::AppendOutcome>> {
        append::append(&self.pool, batches, receive_time)
    }

    fn index_step(&self, _limit: u64) -> Result<IndexStep> {
        // The indexes are written with the events.
        Ok(IndexStep::default())
    }

    fn indexed_seq(&self, location: &Location) -> Result<u64> {
        self.last_seq(location)
    }

    fn publisher(&self, location: &Location, publisher_id: &str) -> Result<Option<proto::PublisherState>> {
        self.with(|client| {
            let sql = "SELECT state FROM publishers WHERE location = $1 AND publisher_id = $2";
            let Some(row) = client.query_opt(sql, &[&location.as_str(), &publisher_id])? else {
                return Ok(None);
            };
            decode(&format!("publisher `{publisher_id}`"), row.get::<_, &[u8]>(0)).map(Some)
        })
    }

    fn publishers(&self, location: &Location, after: Option<&str>, limit: usize) -> Result<Vec<proto::PublisherState>> {
        self.with(|client| {
            let sql = "SELECT publisher_id, state FROM publishers WHERE location = $1 AND publisher_id COLLATE \"C\" > $2 \
                       ORDER BY publisher_id COLLATE \"C\" LIMIT $3";
            let rows = client.query(sql, &[&location.as_str(), &after.unwrap_or(""), &int(limit as u64)])?;
            rows.iter()
                .map(|row| decode(&format!("publisher `{}`", row.get::<_, &str>(0)), row.get::<_, &[u8]>(1)))
                .collect()
        })
    }

    fn stored_bytes(&self, location: &Location, from_seq: u64, limit: usize) -> Result<Vec<StoredBytes>> {
        self.with(|client| {
            let sql = "SELECT location_seq, record FROM events WHERE location = $1 AND location_seq >= $2 \
                       ORDER BY location_seq LIMIT $3";
            let rows = client.query(sql, &[&location.as_str(), &int(from_seq), &int(limit as u64)])?;
            Ok(rows.iter().map(|row| StoredBytes { location_seq: uint(row.get(0)), bytes: row.get(1) }).collect())
        })
    }

    fn last_seq(&self, location: &Location) -> Result<u64> {
        self.with(|client| {
            let sql = "SELECT COALESCE(max(location_seq), 0) FROM events WHERE location = $1";
            Ok(uint(client.query_one(sql, &[&location.as_str()])?.get(0)))
        })
    }

    fn read_hashes(&self, location: &Location, indexes: &[u64]) -> Result<Vec<Hash>> {
        if self.collector(location)?.is_none() {
            return Err(StoreError::NoCollector(location.to_string()));
        }
        self.with(|client| append::read_hashes(client, location.as_str(), indexes))
    }

    fn seq_of_event_id(&self, location: &Location, id: Uuid) -> Result<Option<u64>> {
        self.with(|client| {
            let sql = "SELECT location_seq FROM events WHERE location = $1 AND event_id = $2";
            Ok(client.query_opt(sql, &[&location.as_str(), &id])?.map(|row| uint(row.get(0))))
        })
    }

    fn seq_of_chain_hash(&self, location: &Location, hash: &ChainHash) -> Result<Option<u64>> {
        self.with(|client| {
            let sql = "SELECT location_seq FROM events WHERE location = $1 AND chain_hash = $2 \
                       ORDER BY location_seq LIMIT 1";
            Ok(client.query_opt(sql, &[&location.as_str(), &hash.as_bytes().as_slice()])?.map(|row| uint(row.get(0))))
        })
    }

    fn query(
        &self,
        location: &Location,
        filter: &Filter,
        order: Order,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<proto::StoredEvent>> {
        self.with(|client| query::page(client, &query::Query { location, filter, order, after, limit }))
    }

    fn add_checkpoint(&self, checkpoint: &proto::Checkpoint) -> Result<()> {
        let loc = checkpoint.location.as_str();
        let added = self.pool.with(|client| {
            let mut txn = client.transaction()?;
            if txn.query_opt("SELECT 1 FROM collectors WHERE location = $1", &[&loc])?.is_none() {
                return Err(StoreError::NoCollector(loc.to_owned()).into());
            }
            let sql = "SELECT COALESCE(max(number), 0) FROM checkpoints WHERE location = $1";
            let newest = uint(txn.query_one(sql, &[&loc])?.get(0));
            if checkpoint.number != newest + 1 {
                return Err(StoreError::Backend(format!(
                    "checkpoint {} of location `{loc}` does not follow checkpoint {newest}",
                    checkpoint.number
                ))
                .into());
            }
            let sql = "INSERT INTO checkpoints (location, number, checkpoint) VALUES ($1, $2, $3)";
            txn.execute(sql, &[&loc, &int(checkpoint.number), &checkpoint.encode_to_vec()])?;
            txn.commit()?;
            Ok(())
        });
        match added {
            // Two writers of one number: the second finds the key taken, as if it had read it.
            Err(err) if err.is_unique_violation() => Err(StoreError::Backend(format!(
                "checkpoint {} of location `{loc}` does not follow the newest: another collector stored it",
                checkpoint.number
            ))),
            other => Ok(other?),
        }
    }

    fn checkpoints(&self, location: &Location, before: Option<u64>, limit: usize) -> Result<Vec<CheckpointEntry>> {
        self.with(|client| {
            let sql = "SELECT number, checkpoint FROM checkpoints WHERE location = $1 AND number < $2 \
                       ORDER BY number DESC LIMIT $3";
            let before = before.map_or(i64::MAX, int);
            let rows = client.query(sql, &[&location.as_str(), &before, &int(limit as u64)])?;
            Ok(rows.iter().map(|row| CheckpointEntry::read(location, uint(row.get(0)), row.get(1))).collect())
        })
    }
}
