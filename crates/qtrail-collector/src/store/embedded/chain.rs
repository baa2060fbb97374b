//! The chain file as the query indexes read it ([`Chain`]): a location's `events/L` table in
//! one read transaction.

use redb::{ReadTransaction, ReadableTable};

use super::{EventsDef, events_table_name};
use crate::store::Result;
use crate::store::index::{Chain, Chains, Records, SeqBounds, Seqs, missing_is_none};

/// The `events/L` table of one location.
pub(super) struct RedbChain(pub(super) redb::ReadOnlyTable<u64, &'static [u8]>);

impl Chain for RedbChain {
    fn newest(&self) -> Result<u64> {
        Ok(self.0.last()?.map_or(0, |(key, _)| key.value()))
    }

    fn record(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(seq)?.map(|bytes| bytes.value().to_vec()))
    }

    fn positions(&self, bounds: SeqBounds, descending: bool) -> Result<Seqs<'_>> {
        let range = self.0.range(bounds.low..=bounds.high)?;
        let keys = |entry: std::result::Result<(redb::AccessGuard<'_, u64>, redb::AccessGuard<'_, &[u8]>), _>| {
            entry.map(|(key, _)| key.value()).map_err(crate::store::StoreError::from)
        };
        Ok(if descending { Box::new(range.rev().map(keys)) } else { Box::new(range.map(keys)) })
    }

    fn records(&self, bounds: SeqBounds, descending: bool) -> Result<Records<'_>> {
        let range = self.0.range(bounds.low..=bounds.high)?;
        let owned = |entry: std::result::Result<(redb::AccessGuard<'_, u64>, redb::AccessGuard<'_, &[u8]>), _>| {
            entry.map(|(key, value)| (key.value(), value.value().to_vec())).map_err(crate::store::StoreError::from)
        };
        Ok(if descending { Box::new(range.rev().map(owned)) } else { Box::new(range.map(owned)) })
    }
}

/// Every location's `events/L` table, from one read transaction of the chain file.
pub(super) struct RedbChains<'a>(pub(super) &'a ReadTransaction);

impl Chains for RedbChains<'_> {
    fn chain(&self, location: &str) -> Result<Option<Box<dyn Chain + '_>>> {
        let table = missing_is_none(self.0.open_table(EventsDef::new(&events_table_name(location))))?;
        Ok(table.map(|table| Box::new(RedbChain(table)) as Box<dyn Chain>))
    }
}
