//! The alert state's rules run against both backends (embedded redb, shared PostgreSQL on a
//! real server), as the store conformance suite does; then what only sharing adds: two
//! replicas' handles over one database see one set of rules, firings and cursors.

use std::sync::OnceLock;

use qtrail_testkit::Postgres;

use super::*;
use crate::alerts::rule::rule_key;
use crate::alerts::state::MAX_PENDING_PER_CHANNEL;

fn server() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| Postgres::start().expect("start postgresql"))
}

/// Returns the URL of a new empty database on the test server.
fn fresh_database() -> String {
    let name = format!("a_{}", uuid::Uuid::new_v4().simple());
    let mut admin = postgres::Client::connect(&server().url(), postgres::NoTls).expect("connect");
    admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).unwrap();
    server().url_of(&name)
}

/// Runs `check` against a fresh state of each backend keeping `max_firings` firings.
fn each_backend(max_firings: u64, check: impl Fn(&AlertStore)) {
    let dir = tempfile::tempdir().unwrap();
    check(&AlertStore::embedded(dir.path(), max_firings).unwrap());
    let options = PgOptions::new(fresh_database());
    check(&AlertStore::shared(&options, max_firings).unwrap());
}

fn rule() -> proto::AlertRule {
    proto::AlertRule { location: "us-east".into(), name: "r".into(), ..Default::default() }
}

fn firings(count: usize) -> Vec<NewFiring> {
    let firing = proto::AlertFiring { location: "us-east".into(), rule: "r".into(), count: 1, ..Default::default() };
    (0..count).map(|_| NewFiring { firing: firing.clone(), body: Some(|_| String::from("{}")) }).collect()
}

fn numbers(firings: &[proto::AlertFiring]) -> Vec<u64> {
    firings.iter().map(|firing| firing.number).collect()
}

#[test]
fn a_full_channel_records_an_overflow_instead_of_queueing() {
    each_backend(100_000, |state| {
        state.create(&rule(), &RuleState::default()).unwrap();
        let key = rule_key("us-east", "r");
        let current = state.rule("us-east", "r").unwrap().unwrap().1;
        let recorded = state.commit(vec![(key.clone(), current, firings(1001))], 0).unwrap();
        let overflow = proto::DeliveryState::Overflow as i32;
        let overflowed: Vec<u64> =
            recorded.iter().filter(|firing| firing.delivery == overflow).map(|firing| firing.number).collect();
        assert_eq!(overflowed, [1001]);
        assert_eq!(state.pending_count(&key).unwrap(), MAX_PENDING_PER_CHANNEL);
        assert_eq!(state.firings(Some("us-east"), 1000, 10).unwrap()[0].delivery, overflow);
    });
}

#[test]
fn a_rule_exists_once_and_a_stale_evaluation_is_not_committed() {
    each_backend(100_000, |state| {
        state.create(&rule(), &RuleState::default()).unwrap();
        let again = state.create(&rule(), &RuleState::default()).unwrap_err();
        assert!(matches!(again, crate::error::Error::AlertRuleExists { .. }), "{again:?}");
        let key = rule_key("us-east", "r");
        let created = state.rule("us-east", "r").unwrap().unwrap().1;
        state.update(rule(), 0, &|_, _| Ok(Vec::new())).unwrap();
        let stale = RuleState { cursor: 9, ..created.clone() };
        assert!(state.commit(vec![(key.clone(), stale, firings(1))], 0).unwrap().is_empty());
        let updated = state.rule("us-east", "r").unwrap().unwrap().1;
        assert_ne!(updated.generation, created.generation);
        assert!(state.generation().unwrap() >= updated.generation);
        state.delete("us-east", "r", 0, &|_, _| Ok(Vec::new())).unwrap();
        assert!(state.commit(vec![(key.clone(), updated.clone(), firings(1))], 0).unwrap().is_empty());
        state.create(&rule(), &RuleState::default()).unwrap();
        assert!(state.commit(vec![(key, updated, firings(1))], 0).unwrap().is_empty());
        assert_eq!(state.last_firing().unwrap(), 0);
        assert_eq!(state.rules(Some("us-east")).unwrap().len(), 1);
        assert!(state.rules(Some("eu-west")).unwrap().is_empty());
    });
}

#[test]
fn deleting_a_rule_or_its_webhook_fails_its_pending_deliveries() {
    each_backend(100_000, |state| {
        let key = rule_key("us-east", "r");
        let failed = |state: &AlertStore| -> Vec<u64> {
            let firings = state.firings(Some("us-east"), 0, 10).unwrap();
            let failed = firings.iter().filter(|firing| firing.delivery == proto::DeliveryState::Failed as i32);
            failed.map(|firing| firing.number).collect()
        };
        state.create(&rule(), &RuleState::default()).unwrap();
        let current = state.rule("us-east", "r").unwrap().unwrap().1;
        state.commit(vec![(key.clone(), current, firings(2))], 0).unwrap();
        let (_, closed) = state.update(rule(), 0, &|_, _| Ok(Vec::new())).unwrap();
        assert_eq!(closed.failed, [1, 2]);
        assert_eq!(failed(state), [1, 2]);
        let current = state.rule("us-east", "r").unwrap().unwrap().1;
        state.commit(vec![(key.clone(), current, firings(1))], 0).unwrap();
        let closed = state.delete("us-east", "r", 0, &|_, _| Ok(firings(1))).unwrap();
        assert_eq!(numbers(&closed.recorded), [4]);
        assert_eq!(closed.failed, [3, 4]);
        assert_eq!(failed(state), [1, 2, 3, 4]);
        assert_eq!(state.pending_count(&key).unwrap(), 0);
        assert!(state.firing(5).unwrap().is_none());
    });
}

#[test]
fn the_oldest_firings_go_and_the_delivery_due_first_is_next() {
    each_backend(5, |state| {
        state.create(&rule(), &RuleState::default()).unwrap();
        let key = rule_key("us-east", "r");
        for count in [3, 4] {
            let current = state.rule("us-east", "r").unwrap().unwrap().1;
            state.commit(vec![(key.clone(), current, firings(count))], 0).unwrap();
        }
        assert_eq!(numbers(&state.firings(None, 0, 100).unwrap()), [3, 4, 5, 6, 7]);
        assert_eq!(state.pending_count(&key).unwrap(), 5);
        let mut retried = state.next_delivery(&key).unwrap().unwrap();
        assert_eq!(retried.number, 3);
        retried.next_attempt = 5_000;
        state.record(&retried).unwrap();
        let mut delivered = state.next_delivery(&key).unwrap().unwrap();
        assert_eq!(delivered.number, 4);
        delivered.state = proto::DeliveryState::Delivered as i32;
        state.record(&delivered).unwrap();
        assert_eq!(state.pending_count(&key).unwrap(), 4);
        assert_eq!(state.firing(4).unwrap().unwrap().delivery, proto::DeliveryState::Delivered as i32);
    });
}

#[test]
fn replicas_over_one_database_share_rules_cursors_and_firings() {
    let options = PgOptions::new(fresh_database());
    let (a, b) = (AlertStore::shared(&options, 100).unwrap(), AlertStore::shared(&options, 100).unwrap());
    assert!(a.is_shared());
    // Created through B, evaluated by A (the leader).
    b.create(&rule(), &RuleState::default()).unwrap();
    let key = rule_key("us-east", "r");
    let (_, current) = a.rule("us-east", "r").unwrap().expect("A sees the rule created through B");
    let advanced = RuleState { cursor: 7, ..current.clone() };
    let recorded = a.commit(vec![(key.clone(), advanced, firings(1))], 0).unwrap();
    assert_eq!(numbers(&recorded), [1]);
    // B, taking over, resumes from A's committed cursor and sees its firing and delivery.
    let (_, resumed) = b.rule("us-east", "r").unwrap().unwrap();
    assert_eq!(resumed.cursor, 7);
    assert_eq!(b.firings(Some("us-east"), 0, 10).unwrap(), recorded);
    let delivery = b.next_delivery(&key).unwrap().unwrap();
    assert_eq!(delivery.webhook_id, recorded[0].webhook_id);
    // A's evaluation from before the takeover is stale once B committed past it.
    let from_b = RuleState { cursor: 9, ..resumed };
    assert_eq!(numbers(&b.commit(vec![(key.clone(), from_b, Vec::new())], 0).unwrap()), Vec::<u64>::new());
    assert_eq!(a.rule("us-east", "r").unwrap().unwrap().1.cursor, 9);
}
