//! The redb store's retention record (see [`crate::store::expiry`]) in one row of the
//! `expiry` table, and its prune: one durable write transaction deletes the removed records'
//! rows and stores the new record, so a crash leaves both before or both after. The event
//! ids, tree hashes, checkpoints and collector row stay.

use redb::{ReadTransaction, ReadableTable as _, TableDefinition, WriteTransaction};

use super::{EventsDef, events_table_name, load};
use crate::store::expiry::{self, Expiry, PruneOutcome};
use crate::store::index::missing_is_none;
use crate::store::{Result, StoreError};
use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1 as proto;

/// The table holding the record, under [`KEY`].
const EXPIRY: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("expiry");

const KEY: &str = "record";

/// Reads the record (empty when none is stored).
pub(super) fn read(txn: &ReadTransaction) -> Result<Expiry> {
    let Some(table) = missing_is_none(txn.open_table(EXPIRY))? else {
        return Ok(Expiry::default());
    };
    table.get(KEY)?.map_or_else(|| Ok(Expiry::default()), |bytes| Expiry::decode_stored(bytes.value()))
}

/// Applies `change` to the record inside `txn`.
pub(super) fn change<T>(txn: &WriteTransaction, change: impl FnOnce(&mut Expiry) -> Result<T>) -> Result<T> {
    let mut table = txn.open_table(EXPIRY)?;
    let mut expiry =
        table.get(KEY)?.map_or_else(|| Ok(Expiry::default()), |bytes| Expiry::decode_stored(bytes.value()))?;
    let value = change(&mut expiry)?;
    table.insert(KEY, expiry.to_bytes().as_slice())?;
    Ok(value)
}

/// Prunes `location` through `through_seq` (capped at `last`) inside `txn`.
pub(super) fn prune(
    txn: &WriteTransaction,
    location: &Location,
    through_seq: u64,
    last: u64,
    keep: &dyn Fn(&proto::StoredEvent) -> bool,
) -> Result<PruneOutcome> {
    change(txn, |record| {
        let through = through_seq.min(last).max(record.pruned_through(location.as_str()));
        let mut events = txn.open_table(EventsDef::new(&events_table_name(location.as_str())))?;
        let seqs: Vec<u64> = events
            .range(1..=through)?
            .map(|entry| entry.map(|(key, _)| key.value()).map_err(StoreError::from))
            .collect::<Result<_>>()?;
        let mut records = Vec::with_capacity(seqs.len());
        for seq in seqs {
            // A record that does not decode is kept (see `expiry::decide`).
            records.push((seq, load(&events, location, seq).ok().flatten()));
        }
        let (kept, removed) = expiry::decide(records, keep);
        for seq in &removed {
            events.remove(*seq)?;
        }
        let outcome = PruneOutcome { removed: removed.len() as u64, kept: kept.len() as u64, pruned_through: through };
        record.set_pruned(location.as_str(), through, kept);
        Ok(outcome)
    })
}
