//! The runtime's durable state: programs, jobs and (through `qtrail-publisher`) the audit
//! outbox, all in one redb database, so a call's state change and its audit event commit in one
//! transaction. Calls commit through the outbox's group commit (one fsync shared by concurrent
//! calls, each returning once durable); the executor's own commits use redb's default immediate
//! durability, an fsync before `commit` returns.
//!
//! Records are JSON (serde) in tables keyed by id; secondary tables index program names per
//! account and jobs per account by creation time. Functions take the caller's transaction, so
//! the service decides what one call commits together.

pub mod jobs;
pub mod programs;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Name of the database file in the data directory.
pub const DATABASE_FILE: &str = "runtime.redb";

/// redb's page cache. redb defaults to 1 GiB; the working set here (recent jobs, programs, the
/// outbox head) is far smaller.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, a full disk, a commit that did not happen).
    #[error("database error: {0}")]
    Database(#[source] Box<redb::Error>),
    /// A stored record does not decode.
    #[error("corrupt record in `{table}`: {detail}")]
    Corrupt {
        /// Table holding the record.
        table: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

macro_rules! database_error {
    ($($source:ty),*) => {
        $(impl From<$source> for StoreError {
            fn from(err: $source) -> Self {
                StoreError::Database(Box::new(err.into()))
            }
        })*
    };
}

database_error!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);

/// The runtime's database. Clones share it.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens (or creates) the database in `data_dir` and its tables.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the file cannot be opened, e.g. because another process
    /// holds it.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(data_dir.join(DATABASE_FILE))?;
        let store = Self { db: Arc::new(db) };
        let txn = store.begin()?;
        programs::create_tables(&txn)?;
        jobs::create_tables(&txn)?;
        txn.commit()?;
        Ok(store)
    }

    /// Returns the database, for the outbox.
    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// Starts a read transaction: a snapshot, concurrent with every other transaction.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub fn begin_read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    /// Starts a write transaction (redb has one writer at a time).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub fn begin(&self) -> Result<WriteTransaction> {
        Ok(self.db.begin_write()?)
    }
}

/// A transaction the runtime's tables can be read in: a read transaction for calls that only
/// read (they run concurrently, without redb's one writer lock), or the write transaction of a
/// call that changes state.
pub trait Reader {
    /// The table handle it opens.
    type Table<'a, K: Key + 'static, V: Value + 'static>: ReadableTable<K, V>
    where
        Self: 'a;

    /// Opens `table` for reading.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    fn open<'a, K: Key + 'static, V: Value + 'static>(
        &'a self,
        table: TableDefinition<'_, K, V>,
    ) -> Result<Self::Table<'a, K, V>>;
}

impl Reader for WriteTransaction {
    type Table<'a, K: Key + 'static, V: Value + 'static> = redb::Table<'a, K, V>;

    fn open<'a, K: Key + 'static, V: Value + 'static>(
        &'a self,
        table: TableDefinition<'_, K, V>,
    ) -> Result<redb::Table<'a, K, V>> {
        Ok(self.open_table(table)?)
    }
}

impl Reader for ReadTransaction {
    type Table<'a, K: Key + 'static, V: Value + 'static> = redb::ReadOnlyTable<K, V>;

    fn open<K: Key + 'static, V: Value + 'static>(
        &self,
        table: TableDefinition<'_, K, V>,
    ) -> Result<redb::ReadOnlyTable<K, V>> {
        Ok(self.open_table(table)?)
    }
}

fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Records are plain structs of strings, numbers and JSON values: serialising cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt { table, detail: err.to_string() })
}

/// Returns the current time in Unix milliseconds.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
