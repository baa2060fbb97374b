//! Upkeep of the alert state: retention of the newest firings, and the move of a pending list
//! written by an older version.

use redb::ReadableTable;

use super::{DELIVERIES, Delivery, FIRINGS, OLD_PENDING, PENDING, backend, corrupt};
use crate::error::Result;

/// Deletes the oldest firings beyond `max`, with their deliveries (and a pending one, which
/// only a channel down for the whole of `max` firings still holds).
pub(super) fn forget_oldest(txn: &redb::WriteTransaction, max: u64) -> Result<()> {
    let mut firings = txn.open_table(FIRINGS).map_err(backend)?;
    let first = firings.first().map_err(backend)?.map(|(number, _)| number.value());
    let last = firings.last().map_err(backend)?.map(|(number, _)| number.value());
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(());
    };
    // Numbers are dense and only the oldest are deleted: the count is the span.
    let excess = (last - first + 1).saturating_sub(max);
    if excess == 0 {
        return Ok(());
    }
    let mut deliveries = txn.open_table(DELIVERIES).map_err(backend)?;
    let mut pending = txn.open_table(PENDING).map_err(backend)?;
    for number in first..first + excess {
        firings.remove(number).map_err(backend)?;
        let delivery = deliveries.remove(number).map_err(backend)?.map(|value| value.value().to_vec());
        if let Some(delivery) = delivery {
            let delivery: Delivery = serde_json::from_slice(&delivery).map_err(|err| corrupt("delivery", err))?;
            pending.remove((delivery.rule.as_str(), number)).map_err(backend)?;
        }
    }
    Ok(())
}

/// Moves the pending list of an alert state written before [`PENDING`] kept when each delivery
/// is due, then drops it.
pub(super) fn move_old_pending(txn: &redb::WriteTransaction) -> Result<()> {
    let old: Vec<(String, u64)> = {
        let table = txn.open_table(OLD_PENDING).map_err(backend)?;
        let mut old = Vec::new();
        for entry in table.iter().map_err(backend)? {
            let (key, _) = entry.map_err(backend)?;
            let (rule, number) = key.value();
            old.push((rule.to_owned(), number));
        }
        old
    };
    let deliveries = txn.open_table(DELIVERIES).map_err(backend)?;
    let mut pending = txn.open_table(PENDING).map_err(backend)?;
    for (rule, number) in old {
        if let Some(value) = deliveries.get(number).map_err(backend)? {
            let delivery: Delivery = serde_json::from_slice(value.value()).map_err(|err| corrupt("delivery", err))?;
            pending.insert((rule.as_str(), number), delivery.next_attempt).map_err(backend)?;
        }
    }
    txn.delete_table(OLD_PENDING).map_err(backend)?;
    Ok(())
}
