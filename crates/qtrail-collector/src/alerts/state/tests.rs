//! The alert state's commit rules: overflow, stale evaluations, closing deliveries.

use super::*;

fn rule() -> proto::AlertRule {
    proto::AlertRule { location: "us-east".into(), name: "r".into(), ..Default::default() }
}

fn firings(count: usize) -> Vec<NewFiring> {
    let firing = proto::AlertFiring { location: "us-east".into(), rule: "r".into(), count: 1, ..Default::default() };
    (0..count).map(|_| NewFiring { firing: firing.clone(), body: Some(|_| String::from("{}")) }).collect()
}

#[test]
fn a_full_channel_records_an_overflow_instead_of_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let state = AlertState::open(dir.path(), 100_000).unwrap();
    state.create(&rule(), &RuleState::default()).unwrap();
    let key = rule_key("us-east", "r");
    let current = state.rule("us-east", "r").unwrap().unwrap().1;
    let recorded = state.commit(vec![(key.clone(), current, firings(1001))], 0).unwrap();
    let overflowed: Vec<u64> = recorded
        .iter()
        .filter(|firing| firing.delivery == proto::DeliveryState::Overflow as i32)
        .map(|firing| firing.number)
        .collect();
    assert_eq!(overflowed, [1001]);
    assert_eq!(state.pending_count(&key).unwrap(), MAX_PENDING_PER_CHANNEL);
    // The overflow is a firing like any other, visible to a watch.
    let last = state.firings(Some("us-east"), 1000, 10).unwrap();
    assert_eq!(last[0].delivery, proto::DeliveryState::Overflow as i32);
}

#[test]
fn an_evaluation_of_a_rule_updated_or_deleted_meanwhile_is_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let state = AlertState::open(dir.path(), 100_000).unwrap();
    state.create(&rule(), &RuleState::default()).unwrap();
    let key = rule_key("us-east", "r");
    let created = state.rule("us-east", "r").unwrap().unwrap().1;
    state.update(rule(), 0, &|_, _| Ok(Vec::new())).unwrap();
    let stale = RuleState { cursor: 9, ..created.clone() };
    assert!(state.commit(vec![(key.clone(), stale, firings(1))], 0).unwrap().is_empty());
    let updated = state.rule("us-east", "r").unwrap().unwrap().1;
    assert_ne!(updated.generation, created.generation);
    state.delete("us-east", "r", 0, &|_, _| Ok(Vec::new())).unwrap();
    assert!(state.commit(vec![(key.clone(), updated.clone(), firings(1))], 0).unwrap().is_empty());
    // Created again under the same name: the evaluation of the deleted rule stays out.
    state.create(&rule(), &RuleState::default()).unwrap();
    assert!(state.commit(vec![(key.clone(), updated, firings(1))], 0).unwrap().is_empty());
    assert!(state.commit(vec![(key, created, firings(1))], 0).unwrap().is_empty());
    assert_eq!(state.last_firing().unwrap(), 0);
}

#[test]
fn deleting_a_rule_or_its_webhook_fails_its_pending_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let state = AlertState::open(dir.path(), 100_000).unwrap();
    let key = rule_key("us-east", "r");
    let failed = |state: &AlertState| -> Vec<u64> {
        let firings = state.firings(Some("us-east"), 0, 10).unwrap();
        let failed = firings.iter().filter(|firing| firing.delivery == proto::DeliveryState::Failed as i32);
        failed.map(|firing| firing.number).collect()
    };
    state.create(&rule(), &RuleState::default()).unwrap();
    let current = state.rule("us-east", "r").unwrap().unwrap().1;
    state.commit(vec![(key.clone(), current, firings(2))], 0).unwrap();
    let (_, closed) = state.update(rule(), 0, &|_, _| Ok(Vec::new())).unwrap();
    assert_eq!(closed.failed, [1, 2]);
    assert_eq!(failed(&state), [1, 2]);
    assert_eq!(state.pending_count(&key).unwrap(), 0);
    let current = state.rule("us-east", "r").unwrap().unwrap().1;
    state.commit(vec![(key.clone(), current, firings(1))], 0).unwrap();
    // What the trigger held is recorded (number 4) before the pending deliveries fail.
    let closed = state.delete("us-east", "r", 0, &|_, _| Ok(firings(1))).unwrap();
    assert_eq!(closed.recorded.iter().map(|firing| firing.number).collect::<Vec<_>>(), [4]);
    assert_eq!(closed.failed, [3, 4]);
    assert_eq!(failed(&state), [1, 2, 3, 4]);
    assert_eq!(state.pending_count(&key).unwrap(), 0);
    assert_eq!(state.firing(3).unwrap().unwrap().delivery, proto::DeliveryState::Failed as i32);
    assert!(state.firing(5).unwrap().is_none());
}

fn stored_delivery(state: &AlertState, number: u64) -> Option<Delivery> {
    let txn = state.db.begin_read().unwrap();
    let deliveries = txn.open_table(DELIVERIES).unwrap();
    deliveries.get(number).unwrap().map(|value| serde_json::from_slice(value.value()).unwrap())
}

#[test]
fn the_oldest_firings_beyond_the_cap_go_with_their_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let state = AlertState::open(dir.path(), 5).unwrap();
    state.create(&rule(), &RuleState::default()).unwrap();
    let key = rule_key("us-east", "r");
    for count in [3, 4] {
        let current = state.rule("us-east", "r").unwrap().unwrap().1;
        state.commit(vec![(key.clone(), current, firings(count))], 0).unwrap();
    }
    let kept: Vec<u64> = state.firings(None, 0, 100).unwrap().iter().map(|firing| firing.number).collect();
    assert_eq!(kept, [3, 4, 5, 6, 7]);
    assert!(stored_delivery(&state, 2).is_none());
    assert_eq!(state.pending_count(&key).unwrap(), 5);
    assert_eq!(state.next_delivery(&key).unwrap().unwrap().number, 3);
}

#[test]
fn a_delivery_done_or_never_sent_keeps_no_body() {
    let dir = tempfile::tempdir().unwrap();
    let state = AlertState::open(dir.path(), 100_000).unwrap();
    state.create(&rule(), &RuleState::default()).unwrap();
    let key = rule_key("us-east", "r");
    let current = state.rule("us-east", "r").unwrap().unwrap().1;
    state.commit(vec![(key.clone(), current, firings(1001))], 0).unwrap();
    assert_eq!(stored_delivery(&state, 1).unwrap().body, "{}");
    assert!(stored_delivery(&state, 1001).unwrap().body.is_empty(), "an overflow is never sent");
    let mut delivered = state.next_delivery(&key).unwrap().unwrap();
    delivered.state = proto::DeliveryState::Delivered as i32;
    state.record(&delivered).unwrap();
    let kept = stored_delivery(&state, delivered.number).unwrap();
    assert_eq!((kept.state, kept.body.as_str()), (proto::DeliveryState::Delivered as i32, ""));
    state.delete("us-east", "r", 0, &|_, _| Ok(Vec::new())).unwrap();
    assert!(stored_delivery(&state, 2).unwrap().body.is_empty(), "a failed delivery is never sent again");
}

#[test]
fn the_delivery_due_first_is_next_and_an_old_pending_list_is_moved_over() {
    let dir = tempfile::tempdir().unwrap();
    let key = rule_key("us-east", "r");
    {
        let state = AlertState::open(dir.path(), 100_000).unwrap();
        state.create(&rule(), &RuleState::default()).unwrap();
        let current = state.rule("us-east", "r").unwrap().unwrap().1;
        state.commit(vec![(key.clone(), current, firings(2))], 1_000).unwrap();
        let mut retried = state.next_delivery(&key).unwrap().unwrap();
        assert_eq!(retried.number, 1);
        retried.next_attempt = 5_000;
        state.record(&retried).unwrap();
        assert_eq!(state.next_delivery(&key).unwrap().unwrap().number, 2);
        // As an alert state written before the due times were kept: firing 2 only in the old list.
        let txn = state.db.begin_write().unwrap();
        txn.open_table(PENDING).unwrap().remove((key.as_str(), 2)).unwrap();
        txn.open_table(OLD_PENDING).unwrap().insert((key.as_str(), 2), ()).unwrap();
        txn.commit().unwrap();
    }
    let state = AlertState::open(dir.path(), 100_000).unwrap();
    assert_eq!(state.pending_count(&key).unwrap(), 2);
    assert_eq!(state.next_delivery(&key).unwrap().unwrap().number, 2);
}
