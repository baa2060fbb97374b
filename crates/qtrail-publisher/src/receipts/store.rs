//! The receipt store: verified receipts in a redb file of their own, keyed by event id, and
//! the last checkpoint accepted (which every later one must extend, across restarts). Bounded
//! by count: past the cap the oldest receipts are dropped.
//!
//! It also keeps the acknowledged events still waiting for their receipt (id, position, the
//! publisher's own leaf hash), written before the outbox forgets them, so that a restart
//! between an Ack and the checkpoint that covers it loses no receipt. A crash between the two
//! writes leaves at worst a row for an event the outbox resends: the collector acknowledges it
//! again at the same position, which finds the same row.

use std::path::Path;

use qtrail_tlog::Hash;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::verify::Acked;

/// Receipts by event id: (insertion number, tlog-proof text).
const RECEIPTS: TableDefinition<'_, &str, (u64, &str)> = TableDefinition::new("qtrail_receipts");
/// Event ids by insertion number, oldest first: what the cap drops.
const ORDER: TableDefinition<'_, u64, &str> = TableDefinition::new("qtrail_receipts_order");
/// The last accepted checkpoint note (key `head`) and the next insertion number.
const META: TableDefinition<'_, &str, &str> = TableDefinition::new("qtrail_receipts_meta");

/// Events waiting for a receipt by position in the log: (event id, leaf hash).
const PENDING: TableDefinition<'_, u64, (&str, &[u8])> = TableDefinition::new("qtrail_receipts_pending");

/// A failure of the receipt store's file.
#[derive(Debug, thiserror::Error)]
#[error("receipt store: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub(super) fn task(err: &tokio::task::JoinError) -> Self {
        Self(format!("task failed: {err}"))
    }
}

fn fail(err: impl std::fmt::Display) -> StoreError {
    StoreError(err.to_string().to_lowercase())
}

/// A bounded durable map from event id to receipt.
#[derive(Debug)]
pub struct ReceiptStore {
    db: Database,
    capacity: u64,
}

impl ReceiptStore {
    /// Opens or creates the store at `path`, keeping at most `capacity` receipts.
    ///
    /// # Errors
    /// [`StoreError`] when the file cannot be opened.
    pub fn open(path: &Path, capacity: u64) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(fail)?;
        let txn = db.begin_write().map_err(fail)?;
        txn.open_table(RECEIPTS).map_err(fail)?;
        txn.open_table(ORDER).map_err(fail)?;
        txn.open_table(META).map_err(fail)?;
        txn.open_table(PENDING).map_err(fail)?;
        txn.commit().map_err(fail)?;
        Ok(Self { db, capacity: capacity.max(1) })
    }

    /// Stores the receipt of `event_id` (a tlog-proof), dropping the oldest past the cap.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    pub fn put(&self, event_id: &str, proof: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(fail)?;
        self.put_in(&txn, event_id, proof)?;
        txn.commit().map_err(fail)
    }

    /// Stores the receipt of the waiting event at `location_seq` and forgets it as waiting, in
    /// one transaction.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    pub fn prove(&self, location_seq: u64, event_id: &str, proof: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(fail)?;
        self.put_in(&txn, event_id, proof)?;
        txn.open_table(PENDING).map_err(fail)?.remove(location_seq).map_err(fail)?;
        txn.commit().map_err(fail)
    }

    /// Records `events` as waiting for their receipt, keeping at most `max` waiting (the
    /// lowest positions, the oldest, are dropped first). Returns how many were dropped.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    pub fn add_pending(&self, events: &[Acked], max: usize) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(fail)?;
        let mut dropped = 0;
        {
            let mut pending = txn.open_table(PENDING).map_err(fail)?;
            for acked in events {
                pending.insert(acked.location_seq, (acked.event_id.as_str(), acked.leaf.as_slice())).map_err(fail)?;
            }
            while pending.len().map_err(fail)? > max as u64 {
                pending.pop_first().map_err(fail)?;
                dropped += 1;
            }
        }
        txn.commit().map_err(fail)?;
        Ok(dropped)
    }

    /// Returns up to `limit` waiting events with a position above `after`, lowest first.
    ///
    /// # Errors
    /// [`StoreError`] when the read fails.
    pub fn pending(&self, after: u64, limit: usize) -> Result<Vec<Acked>, StoreError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let pending = txn.open_table(PENDING).map_err(fail)?;
        let mut events = Vec::new();
        for row in pending.range(after.saturating_add(1)..).map_err(fail)?.take(limit) {
            let (location_seq, value) = row.map_err(fail)?;
            let (event_id, leaf) = value.value();
            // A row that is not a hash was not written by this store: skip it, it proves nothing.
            let Ok(leaf) = Hash::try_from(leaf) else { continue };
            events.push(Acked { event_id: event_id.to_owned(), location_seq: location_seq.value(), leaf });
        }
        Ok(events)
    }

    /// Forgets the waiting event at `location_seq` (dropped without a receipt).
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    pub fn forget_pending(&self, location_seq: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(fail)?;
        txn.open_table(PENDING).map_err(fail)?.remove(location_seq).map_err(fail)?;
        txn.commit().map_err(fail)
    }

    fn put_in(&self, txn: &WriteTransaction, event_id: &str, proof: &str) -> Result<(), StoreError> {
        {
            let mut receipts = txn.open_table(RECEIPTS).map_err(fail)?;
            let mut order = txn.open_table(ORDER).map_err(fail)?;
            if let Some(old) = receipts.remove(event_id).map_err(fail)? {
                order.remove(old.value().0).map_err(fail)?;
            }
            let next = order.last().map_err(fail)?.map_or(0, |(number, _)| number.value() + 1);
            order.insert(next, event_id).map_err(fail)?;
            receipts.insert(event_id, (next, proof)).map_err(fail)?;
            while receipts.len().map_err(fail)? > self.capacity {
                let Some((_, oldest)) = order.pop_first().map_err(fail)? else { break };
                receipts.remove(oldest.value()).map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Returns the receipt of `event_id`, if kept.
    ///
    /// # Errors
    /// [`StoreError`] when the read fails.
    pub fn get(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let receipts = txn.open_table(RECEIPTS).map_err(fail)?;
        Ok(receipts.get(event_id).map_err(fail)?.map(|entry| entry.value().1.to_owned()))
    }

    /// Returns how many receipts are kept.
    ///
    /// # Errors
    /// [`StoreError`] when the read fails.
    pub fn count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(fail)?;
        txn.open_table(RECEIPTS).map_err(fail)?.len().map_err(fail)
    }

    /// Returns the last accepted checkpoint note.
    ///
    /// # Errors
    /// [`StoreError`] when the read fails.
    pub fn head(&self) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let meta = txn.open_table(META).map_err(fail)?;
        Ok(meta.get("head").map_err(fail)?.map(|note| note.value().to_owned()))
    }

    /// Records `note` as the last accepted checkpoint.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    pub fn set_head(&self, note: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(fail)?;
        txn.open_table(META).map_err(fail)?.insert("head", note).map_err(fail)?;
        txn.commit().map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_receipts_by_id_and_drops_the_oldest_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.redb");
        let store = ReceiptStore::open(&path, 2).unwrap();
        store.put("a", "proof a").unwrap();
        store.put("b", "proof b").unwrap();
        store.put("c", "proof c").unwrap();
        assert_eq!((store.get("a").unwrap(), store.get("c").unwrap().as_deref()), (None, Some("proof c")));
        assert_eq!(store.count().unwrap(), 2);
        store.set_head("note").unwrap();
        drop(store);
        let store = ReceiptStore::open(&path, 2).unwrap();
        assert_eq!(store.get("b").unwrap().as_deref(), Some("proof b"));
        assert_eq!(store.head().unwrap().as_deref(), Some("note"));
    }

    #[test]
    fn waiting_events_survive_a_reopen_are_bounded_and_leave_once_proved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.redb");
        let store = ReceiptStore::open(&path, 10).unwrap();
        let acked = |seq: u64| Acked { event_id: format!("e{seq}"), location_seq: seq, leaf: [seq as u8; 32] };
        assert_eq!(store.add_pending(&[acked(3), acked(4)], 3).unwrap(), 0);
        // A resent event acknowledged again at its position is the same row, not a second one.
        assert_eq!(store.add_pending(&[acked(4), acked(5), acked(6)], 3).unwrap(), 1);
        drop(store);
        let store = ReceiptStore::open(&path, 10).unwrap();
        assert_eq!(store.pending(0, 10).unwrap(), [acked(4), acked(5), acked(6)]);
        store.prove(4, "e4", "proof e4").unwrap();
        store.forget_pending(6).unwrap();
        assert_eq!(store.pending(0, 10).unwrap(), [acked(5)]);
        assert_eq!(store.pending(5, 10).unwrap(), []);
        assert_eq!(store.get("e4").unwrap().as_deref(), Some("proof e4"));
    }
}
