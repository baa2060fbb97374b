//! The marks of the index file and what is dropped when they no longer fit: opening the file
//! (setting an unreadable one aside, checking its layout and its marks against the chain),
//! reading a location's mark, and dropping the indexes of stale marks, of one location or of
//! every location.

use std::path::Path;

use prost::Message as _;
use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tracing::warn;

use super::{
    BUCKET_BITS_KEY, Chains, FILE_NAME, FORMAT, FORMAT_KEY, IndexDef, MARKS, META, RecordView, TimeDef, digest,
    index_table_name, time_table_name,
};
use crate::store::{Result, StoreError};

/// Opens (or creates) the index file at `path`, whose new buckets are `2^bucket_bits` wide,
/// and drops the index of every location whose mark no longer fits the chain read by
/// `chains`; returns it with the bucket width it has.
pub(super) fn open_file(
    path: &Path,
    cache_bytes: usize,
    bucket_bits: u32,
    chains: &dyn Chains,
) -> Result<(Database, u32)> {
    let db = open_or_set_aside(path, cache_bytes)?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let bucket_bits = {
        let mut meta = txn.open_table(META)?;
        let stored = meta.get(BUCKET_BITS_KEY)?.map(|bits| bits.value());
        match stored {
            Some(bits) => u32::try_from(bits)
                .ok()
                .filter(|bits| *bits < 64)
                .ok_or_else(|| StoreError::Corrupt(format!("invalid {BUCKET_BITS_KEY} {bits}")))?,
            None => {
                meta.insert(BUCKET_BITS_KEY, u64::from(bucket_bits))?;
                bucket_bits
            }
        }
    };
    let format = txn.open_table(META)?.get(FORMAT_KEY)?.map(|format| format.value());
    if format != Some(FORMAT) {
        drop_every_index(&txn, format)?;
        txn.open_table(META)?.insert(FORMAT_KEY, FORMAT)?;
    }
    drop_stale_marks(&txn, chains)?;
    txn.commit()?;
    Ok((db, bucket_bits))
}

/// Opens (or creates) the index file at `path`. A file redb finds corrupt or of a format it no
/// longer reads is moved aside (kept for inspection, under a name of its own) and a new one is
/// created: it holds nothing the chain does not, and this process holds the chain file's lock,
/// so no other collector uses it. Any other error (I/O, permissions, disk full) is returned:
/// the file may be fine, and rebuilding a large index takes minutes.
fn open_or_set_aside(path: &Path, cache_bytes: usize) -> Result<Database> {
    let err = match Database::builder().set_cache_size(cache_bytes).create(path) {
        Ok(db) => return Ok(db),
        Err(err) => err,
    };
    let unreadable = match &err {
        redb::DatabaseError::UpgradeRequired(_) | redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => {
            true
        }
        // What redb reports for a file that is not a redb database (InvalidData) or is cut short.
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
            matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof)
        }
        _ => false,
    };
    if !unreadable {
        return Err(err.into());
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    let aside = path.with_file_name(format!("{FILE_NAME}.unreadable-{stamp}"));
    warn!(error = %err, aside = %aside.display(), "the index file cannot be read, setting it aside and rebuilding it");
    std::fs::rename(path, &aside)
        .map_err(|err| StoreError::Backend(format!("cannot move {} aside: {err}", path.display())))?;
    Ok(Database::builder().set_cache_size(cache_bytes).create(path)?)
}

/// Returns the mark of `location` as the write `txn` sees it.
pub(super) fn read_mark(txn: &WriteTransaction, location: &str) -> Result<u64> {
    let marks = txn.open_table(MARKS)?;
    Ok(marks.get(location)?.map_or(0, |mark| mark.value().0))
}

/// Drops the index and mark of every location whose mark names a record the chain does not
/// hold with that hash.
fn drop_stale_marks(txn: &WriteTransaction, chains: &dyn Chains) -> Result<()> {
    let mut stale = Vec::new();
    {
        let marks = txn.open_table(MARKS)?;
        for entry in marks.iter()? {
            let (location, mark) = entry?;
            let (location, (seq, hash)) = (location.value(), mark.value());
            let stored = match chains.chain(location)? {
                Some(events) => events.record(seq)?.map(|bytes| RecordView::decode(bytes.as_slice()).ok()),
                None => None,
            };
            // A mark on a record that does not decode holds no hash (see `index_range`); it
            // fits as long as that record is still there undecodable.
            let fits = match stored {
                Some(Some(record)) => record.chain_hash == hash,
                Some(None) => hash.is_empty(),
                None => false,
            };
            if !fits {
                stale.push((location.to_owned(), seq));
            }
        }
    }
    for (location, seq) in stale {
        warn!(location = %location, indexed_seq = seq, "the index does not match the chain, rebuilding it");
        drop_index(txn, &location)?;
    }
    Ok(())
}

/// Drops the index tables and the mark of `location`, so that it is indexed again from 1.
pub(super) fn drop_index(txn: &WriteTransaction, location: &str) -> Result<()> {
    txn.delete_table(TimeDef::new(&time_table_name(location)))?;
    txn.delete_table(IndexDef::new(&index_table_name(location)))?;
    txn.open_table(MARKS)?.remove(location)?;
    txn.open_table(digest::DIGESTS)?.remove(location)?;
    Ok(())
}

/// Drops every location's index and mark: the file was written in layout `format` (none for a
/// new file), not this one.
fn drop_every_index(txn: &WriteTransaction, format: Option<u64>) -> Result<()> {
    let marks: Vec<String> = {
        let marks = txn.open_table(MARKS)?;
        let mut locations = Vec::new();
        for entry in marks.iter()? {
            locations.push(entry?.0.value().to_owned());
        }
        locations
    };
    if let Some(format) = format.filter(|_| !marks.is_empty()) {
        warn!(format, current = FORMAT, "the index file has an older layout, rebuilding it");
    }
    for location in marks {
        drop_index(txn, &location)?;
    }
    Ok(())
}
