//! Firings and their deliveries in the shared alert state: numbering, the pending list, the
//! outcome of an attempt, retention. Each runs inside the caller's write transaction.

use postgres::Transaction;
use prost::Message as _;
use qtrail_proto::qtrail::audit::v1 as proto;

use super::{Delivery, MAX_PENDING_PER_CHANNEL, NewFiring, corrupt, int, to_json, uint};
use crate::store::postgres::PgError;

pub(super) fn decode(bytes: &[u8]) -> Result<proto::AlertFiring, PgError> {
    proto::AlertFiring::decode(bytes).map_err(|err| corrupt("firing", err))
}

fn decode_delivery(bytes: &[u8]) -> Result<Delivery, PgError> {
    serde_json::from_slice(bytes).map_err(|err| corrupt("delivery", err))
}

/// Records the firings of rule `key`, numbered on, each with its delivery if it has a body (an
/// overflow past [`MAX_PENDING_PER_CHANNEL`]); returns them numbered.
pub(super) fn insert(
    txn: &mut Transaction<'_>,
    key: &str,
    new: Vec<NewFiring>,
    now: i64,
) -> Result<Vec<proto::AlertFiring>, PgError> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let last: Option<i64> = txn.query_one("SELECT max(number) FROM alert_firings", &[])?.get(0);
    let first = last.map_or(0, uint) + 1;
    let queued: i64 = txn.query_one("SELECT count(*) FROM alert_pending WHERE rule = $1", &[&key])?.get(0);
    let mut queued = uint(queued);
    let mut recorded = Vec::with_capacity(new.len());
    for (number, NewFiring { mut firing, body }) in (first..).zip(new) {
        firing.number = number;
        if let Some(body) = body {
            firing.webhook_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            firing.delivery = if queued >= MAX_PENDING_PER_CHANNEL {
                crate::alerts::meters::overflow(key);
                proto::DeliveryState::Overflow as i32
            } else {
                txn.execute(
                    "INSERT INTO alert_pending (rule, number, due) VALUES ($1, $2, $3)",
                    &[&key, &int(number), &now],
                )?;
                queued += 1;
                proto::DeliveryState::Pending as i32
            };
            // An overflow is never sent: no body to keep.
            let overflow = firing.delivery == proto::DeliveryState::Overflow as i32;
            let delivery = Delivery {
                number,
                rule: key.to_owned(),
                webhook_id: firing.webhook_id.clone(),
                body: if overflow { String::new() } else { body(&firing) },
                attempts: 0,
                created: now,
                next_attempt: now,
                state: firing.delivery,
                last_error: String::new(),
            };
            txn.execute(
                "INSERT INTO alert_deliveries (number, rule, webhook_id, delivery) VALUES ($1, $2, $3, $4)",
                &[&int(number), &key, &delivery.webhook_id, &to_json(&delivery)],
            )?;
        }
        txn.execute(
            "INSERT INTO alert_firings (number, location, firing) VALUES ($1, $2, $3)",
            &[&int(number), &firing.location, &firing.encode_to_vec()],
        )?;
        recorded.push(firing);
    }
    Ok(recorded)
}

/// Sets firing `number`'s delivery state, if the firing is still kept.
fn set_firing_state(txn: &mut Transaction<'_>, number: i64, state: i32) -> Result<(), PgError> {
    let row = txn.query_opt("SELECT firing FROM alert_firings WHERE number = $1", &[&number])?;
    if let Some(row) = row {
        let mut firing = decode(row.get(0))?;
        firing.delivery = state;
        txn.execute("UPDATE alert_firings SET firing = $2 WHERE number = $1", &[&number, &firing.encode_to_vec()])?;
    }
    Ok(())
}

/// Ends every pending delivery of rule `key` as failed for `reason`; returns the firings'
/// numbers.
pub(super) fn fail_pending(txn: &mut Transaction<'_>, key: &str, reason: &str) -> Result<Vec<u64>, PgError> {
    let rows = txn.query("DELETE FROM alert_pending WHERE rule = $1 RETURNING number", &[&key])?;
    let mut numbers: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    numbers.sort_unstable();
    for &number in &numbers {
        let row = txn.query_opt("SELECT delivery FROM alert_deliveries WHERE number = $1", &[&number])?;
        if let Some(row) = row {
            let mut delivery = decode_delivery(row.get(0))?;
            delivery.state = proto::DeliveryState::Failed as i32;
            delivery.last_error = reason.to_owned();
            delivery.body.clear();
            txn.execute(
                "UPDATE alert_deliveries SET delivery = $2 WHERE number = $1",
                &[&number, &to_json(&delivery)],
            )?;
        }
        set_firing_state(txn, number, proto::DeliveryState::Failed as i32)?;
    }
    Ok(numbers.into_iter().map(uint).collect())
}

/// Records a delivery attempt's outcome (nothing when the delivery left the pending list
/// meanwhile: its rule was deleted, or another attempt ended it).
pub(super) fn record(txn: &mut Transaction<'_>, delivery: &Delivery) -> Result<(), PgError> {
    let number = int(delivery.number);
    let sql = "SELECT 1 FROM alert_pending WHERE rule = $1 AND number = $2";
    if txn.query_opt(sql, &[&delivery.rule, &number])?.is_none() {
        return Ok(());
    }
    let mut kept = delivery.clone();
    if delivery.state == proto::DeliveryState::Pending as i32 {
        txn.execute(
            "UPDATE alert_pending SET due = $3 WHERE rule = $1 AND number = $2",
            &[&delivery.rule, &number, &delivery.next_attempt],
        )?;
    } else {
        txn.execute("DELETE FROM alert_pending WHERE rule = $1 AND number = $2", &[&delivery.rule, &number])?;
        // Never sent again: the body is not kept.
        kept.body.clear();
    }
    txn.execute("UPDATE alert_deliveries SET delivery = $2 WHERE number = $1", &[&number, &to_json(&kept)])?;
    set_firing_state(txn, number, delivery.state)
}

/// Deletes the oldest firings beyond `max`, with their deliveries and pending entries.
pub(super) fn forget_oldest(txn: &mut Transaction<'_>, max: u64) -> Result<(), PgError> {
    let row = txn.query_one("SELECT max(number) FROM alert_firings", &[])?;
    let Some(last) = row.get::<_, Option<i64>>(0) else {
        return Ok(());
    };
    let below = last - int(max) + 1;
    if below <= 1 {
        return Ok(());
    }
    txn.execute("DELETE FROM alert_pending WHERE number < $1", &[&below])?;
    txn.execute("DELETE FROM alert_deliveries WHERE number < $1", &[&below])?;
    txn.execute("DELETE FROM alert_firings WHERE number < $1", &[&below])?;
    Ok(())
}
