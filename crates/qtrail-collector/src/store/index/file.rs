//! The index file held open: reads that keep it open, and what a failed step does to it.
//! redb refuses every later read and write of a database whose write failed (a full disk
//! above all) until it is closed and opened again, so a failed step closes the file, queries
//! read the chain meanwhile, and the next step opens it again.

use std::sync::atomic::Ordering;
use std::sync::{PoisonError, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use redb::{Database, ReadTransaction, ReadableDatabase};
use tracing::{debug, info, warn};

use super::marks::open_file;
use super::{Chains, Index};
use crate::store::{Result, StoreError};

/// A read of the index file ([`Index::begin_read`]), which holds the file open. Without a
/// transaction while the file is closed after a failed step: queries then read the chain.
pub(crate) struct IndexRead<'a> {
    txn: Option<ReadTransaction>,
    _open: RwLockReadGuard<'a, Option<Database>>,
}

impl IndexRead<'_> {
    /// The read transaction, `None` while the file is closed.
    pub(crate) fn txn(&self) -> Option<&ReadTransaction> {
        self.txn.as_ref()
    }
}

impl Index {
    /// Starts a read of the indexes. Begin it before the chain's read, so that every position
    /// it counts as indexed is in the chain's snapshot too. The read keeps the file open: a
    /// failed step waits for it before closing the file.
    pub(crate) fn begin_read(&self) -> Result<IndexRead<'_>> {
        let open = self.read_db();
        let txn = match open.as_ref().map(Database::begin_read).transpose() {
            Ok(txn) => txn,
            // A file whose write failed refuses reads until the indexer reopens it; the chain
            // answers meanwhile.
            Err(err) => {
                debug!(error = %err, "the index file cannot be read, reading the chain");
                None
            }
        };
        Ok(IndexRead { txn, _open: open })
    }

    pub(super) fn read_db(&self) -> RwLockReadGuard<'_, Option<Database>> {
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_db(&self) -> RwLockWriteGuard<'_, Option<Database>> {
        self.db.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the index file after a failed step. redb refuses every later read and write of
    /// a database whose write failed (a full disk above all) until it is closed and opened
    /// again; until [`Index::step`] reopens it, queries read the chain instead.
    pub(super) fn close_after(&self, err: &StoreError) {
        let mut open = self.write_db();
        if let Some(db) = open.take() {
            warn!(error = %err, "an index step failed, closing the index file to open it again; queries read the chain meanwhile");
            if let Err(close) = db.close() {
                warn!(error = %close, "closing the index file failed");
            }
        }
    }

    /// Opens the index file again if a failed step closed it, checking its marks against the
    /// chain as at start; its digests are checked again by the next step.
    pub(super) fn reopen(&self, chains: &dyn Chains) -> Result<()> {
        if self.read_db().is_some() {
            return Ok(());
        }
        let mut open = self.write_db();
        if open.is_some() {
            return Ok(());
        }
        let (db, bucket_bits) = open_file(&self.path, self.cache_bytes, self.bucket_bits, chains)?;
        if bucket_bits != self.bucket_bits {
            return Err(StoreError::Corrupt(format!(
                "the index file was replaced by one with buckets of {bucket_bits} bits instead of {}",
                self.bucket_bits
            )));
        }
        self.checked.store(false, Ordering::Release);
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner) = (Instant::now(), 0);
        *open = Some(db);
        info!("the index file is open again, indexing resumes");
        Ok(())
    }
}
