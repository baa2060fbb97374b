//! The digest of each location's index: a sum of a 64-bit checksum of every entry and of the
//! mark (location, `indexed_seq`, chain hash), moved forward by every step, so that checking an
//! index against it needs one read of the index and nothing of the chain. A sum does not depend
//! on the order entries are read in. The mark is in the sum because it says which positions the
//! entries cover: a mark raised alone (with the chain hash of the record it then names, which
//! passes the check against the chain) would hide the positions it skips from filtered queries.
//!
//! It finds damage and tampering by someone who does not know the scheme (an entry removed,
//! added or altered); who knows it can rewrite the digest too. That is enough for the indexes:
//! they hold nothing the chain does not, and every record a query returns is checked against
//! its filter again, so at worst a tampered index hides events from filtered queries until it
//! is rebuilt.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{IndexDef, MARKS, TimeDef, index_table_name, missing_is_none, time_table_name};
use crate::store::Result;

/// Location → digest of its `index/L` and `time/L` entries.
pub(super) const DIGESTS: TableDefinition<'_, &str, u64> = TableDefinition::new("digests");

/// Two seeds for two CRC32Cs of an entry, which make its 64-bit checksum.
const SEEDS: (u32, u32) = (0x5152_544c, 0x4944_5831);

fn checksum(parts: &[&[u8]]) -> u64 {
    let (mut high, mut low) = SEEDS;
    for part in parts {
        high = crc32c::crc32c_append(high, part);
        low = crc32c::crc32c_append(low, part);
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Returns the checksum of an `index/L` entry.
pub(super) fn of_entry(key: (u8, u32, &str, u64)) -> u64 {
    let (field, bucket, value, seq) = key;
    checksum(&[&[field], &bucket.to_le_bytes(), &seq.to_le_bytes(), value.as_bytes()])
}

/// Returns the checksum of a `time/L` entry.
pub(super) fn of_time(key: (u32, i64, u64)) -> u64 {
    let (bucket, millis, seq) = key;
    checksum(&[&[0xff], &bucket.to_le_bytes(), &millis.to_le_bytes(), &seq.to_le_bytes()])
}

/// Returns the checksum of the mark of `location`.
pub(super) fn of_mark(location: &str, seq: u64, hash: &[u8]) -> u64 {
    checksum(&[&[0xfe], &seq.to_le_bytes(), &(hash.len() as u64).to_le_bytes(), hash, location.as_bytes()])
}

/// Adds `digest` to the stored digest of `location`.
pub(super) fn add(txn: &WriteTransaction, location: &str, digest: u64) -> Result<()> {
    let mut digests = txn.open_table(DIGESTS)?;
    let stored = digests.get(location)?.map_or(0, |value| value.value());
    digests.insert(location, stored.wrapping_add(digest))?;
    Ok(())
}

/// Returns the locations with a mark whose index entries and mark no longer sum to their
/// digest (or have none: an index from before digests).
pub(super) fn mismatched(txn: &WriteTransaction) -> Result<Vec<String>> {
    let mut marks = Vec::new();
    for entry in txn.open_table(MARKS)?.iter()? {
        let (location, mark) = entry?;
        let (seq, hash) = mark.value();
        marks.push((location.value().to_owned(), of_mark(location.value(), seq, hash)));
    }
    let digests = txn.open_table(DIGESTS)?;
    let mut mismatched = Vec::new();
    for (location, mark) in marks {
        let stored = digests.get(location.as_str())?.map(|value| value.value());
        let mut sum = mark;
        if let Some(index) = missing_is_none(txn.open_table(IndexDef::new(&index_table_name(&location))))? {
            for entry in index.iter()? {
                sum = sum.wrapping_add(of_entry(entry?.0.value()));
            }
        }
        if let Some(time) = missing_is_none(txn.open_table(TimeDef::new(&time_table_name(&location))))? {
            for entry in time.iter()? {
                sum = sum.wrapping_add(of_time(entry?.0.value()));
            }
        }
        if stored != Some(sum) {
            mismatched.push(location);
        }
    }
    Ok(mismatched)
}
