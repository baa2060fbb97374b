//! The sweep against a real file store, with a test [`ArchiveProgress`], and the admin
//! settings' validation.

use std::sync::atomic::{AtomicU64, Ordering};

use qtrail_cadf::{Action, AuditEvent};

use super::*;
use crate::store::FileStore;
use crate::store::conformance::{at, batch, event, location};

/// An archive verified through a settable position.
#[derive(Debug, Default)]
struct Archived(AtomicU64);

impl ArchiveProgress for Archived {
    fn verified_through(&self, _location: &Location) -> std::result::Result<u64, StoreError> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

const DAY: i64 = 86_400;
const NOW: i64 = 1_800_000_000;

/// Ten events received 10 days before [`NOW`] (the 3rd owned by `acc-held`), then five
/// received at it.
fn store_with_events(dir: &std::path::Path) -> FileStore {
    let store = FileStore::open(dir, 1 << 20).expect("open");
    let loc = location("us-east");
    store.create_collector(&loc, at(1)).expect("create");
    let old: Vec<AuditEvent> = (1..=10)
        .map(|i| {
            if i == 3 {
                owned_by("acc-held", i * 1000)
            } else {
                event("us-east", Action::JobRead, "IBMid-1", "", 200, i * 1000)
            }
        })
        .collect();
    let young: Vec<AuditEvent> =
        (11..=15).map(|i| event("us-east", Action::JobRead, "IBMid-1", "", 200, i * 1000)).collect();
    let numbered = |events: &[AuditEvent], first: u64| -> Vec<(u64, AuditEvent)> {
        (first..).zip(events.iter().cloned()).collect()
    };
    for (events, first, received) in [(&old, 1, NOW - 10 * DAY), (&young, 11, NOW)] {
        let items = numbered(events, first);
        let refs: Vec<(u64, &AuditEvent)> = items.iter().map(|(seq, event)| (*seq, event)).collect();
        store.append(vec![batch("us-east", "p1", 1, &refs)], at(received)).expect("append");
    }
    store
}

/// An event of an instance of `account`.
fn owned_by(account: &str, millis: i64) -> AuditEvent {
    let source = qtrail_cadf::Crn::instance(&location("us-east"), account, "inst-9").expect("crn");
    let initiator = qtrail_cadf::Initiator {
        id: "IBMid-2".into(),
        name: "held@example.com".into(),
        type_uri: qtrail_cadf::event::INITIATOR_USER.into(),
        credential_type: "apikey".into(),
        host_address: "192.0.2.1".into(),
        host_agent: "retention".into(),
    };
    qtrail_cadf::EventBuilder::new(Action::JobRead, source, initiator)
        .event_time(qtrail_cadf::EventTime::from_unix_millis(millis).expect("time"))
        .build()
        .expect("valid event")
}

fn policy(days: u32) -> proto::RetentionPolicy {
    proto::RetentionPolicy { location: "us-east".into(), days }
}

fn hold(location: &str, account: &str) -> proto::LegalHold {
    proto::LegalHold { location: location.into(), account: account.into(), reason: "case".into(), ..Default::default() }
}

#[test]
fn nothing_expires_without_a_policy_or_an_archive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store_with_events(dir.path());
    let archive = Archived(AtomicU64::new(100));
    assert!(sweep(&store, &archive, at(NOW)).is_empty(), "no policy");
    store.set_retention(&policy(7)).expect("policy");
    let unarchived = Archived::default();
    assert!(sweep(&store, &unarchived, at(NOW)).is_empty(), "nothing archived");
    assert_eq!(store.pruned_through(&location("us-east")).expect("pruned"), 0);
}

#[test]
fn the_cutoff_is_the_older_of_age_and_archive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store_with_events(dir.path());
    let loc = location("us-east");
    store.set_retention(&policy(7)).expect("policy");
    let archive = Archived(AtomicU64::new(6));
    let swept = sweep(&store, &archive, at(NOW));
    assert_eq!(swept, vec![("us-east".to_owned(), PruneOutcome { removed: 6, kept: 0, pruned_through: 6 })]);
    // Everything archived: only the events older than 7 days expire.
    archive.0.store(100, Ordering::SeqCst);
    let swept = sweep(&store, &archive, at(NOW));
    assert_eq!(swept[0].1.pruned_through, 10);
    assert_eq!(store.events(&loc, 1, 100).expect("events").len(), 5);
    // A longer policy keeps what is younger than it.
    store.set_retention(&policy(30)).expect("policy");
    assert!(sweep(&store, &archive, at(NOW + 20 * DAY)).is_empty());
    assert!(!sweep(&store, &archive, at(NOW + 31 * DAY)).is_empty());
    assert!(store.events(&loc, 1, 100).expect("events").is_empty());
}

#[test]
fn held_locations_and_accounts_do_not_expire() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store_with_events(dir.path());
    let loc = location("us-east");
    store.set_retention(&policy(7)).expect("policy");
    let archive = Archived(AtomicU64::new(100));
    store.set_hold(&hold("us-east", ""), true).expect("hold");
    assert!(sweep(&store, &archive, at(NOW)).is_empty(), "the location is held");
    store.set_hold(&hold("us-east", ""), false).expect("lift");
    store.set_hold(&hold("", "acc-held"), true).expect("hold");
    let swept = sweep(&store, &archive, at(NOW));
    assert_eq!(swept[0].1, PruneOutcome { removed: 9, kept: 1, pruned_through: 10 });
    let left: Vec<u64> = store.events(&loc, 1, 100).expect("events").iter().map(|r| r.location_seq).collect();
    assert_eq!(left, vec![3, 11, 12, 13, 14, 15]);
    // The account's hold lifted, its event expires at the next sweep.
    store.set_hold(&hold("", "acc-held"), false).expect("lift");
    assert_eq!(sweep(&store, &archive, at(NOW))[0].1.removed, 1);
}

fn request(location: &str, account: &str, on: bool, reason: &str) -> proto::SetLegalHoldRequest {
    proto::SetLegalHoldRequest { location: location.into(), account: account.into(), on, reason: reason.into() }
}

#[test]
fn hold_requests_are_checked() {
    let refused = |request: proto::SetLegalHoldRequest| match checked_hold(&request, "admin") {
        Err(Error::InvalidArgument(message)) => message,
        other => panic!("expected invalid argument, got {other:?}"),
    };
    assert!(refused(request("", "", true, "x")).contains("a location or an account"));
    assert!(refused(request("us-east", "acc-1", true, "x")).contains("not both"));
    assert!(refused(request("US East", "", true, "x")).contains("invalid location"));
    assert!(refused(request("", "acc:1", true, "x")).contains("invalid account"));
    assert!(refused(request("", "acc-1", true, " ")).contains("needs a reason"));
    assert!(refused(request("", "acc-1", true, &"r".repeat(MAX_REASON_BYTES + 1))).contains("at most"));
    let hold = checked_hold(&request("", "acc-1", true, "case 9"), "admin").expect("valid");
    assert_eq!((hold.account.as_str(), hold.created_by.as_str()), ("acc-1", "admin"));
    assert!(checked_hold(&request("eu-de", "", false, ""), "admin").is_ok(), "lifting needs no reason");
}

#[tokio::test]
async fn settings_are_checked_against_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(store_with_events(dir.path()));
    assert!(matches!(
        set_retention(&store, "us-east", MAX_DAYS + 1, "admin").await,
        Err(Error::InvalidArgument(message)) if message.contains("at most 36500")
    ));
    assert!(matches!(set_retention(&store, "eu-de", 7, "admin").await, Err(Error::CollectorNotFound(_))));
    assert_eq!(set_retention(&store, "us-east", 7, "admin").await.expect("set").days, 7);
    assert_eq!(retention(&store, "us-east").await.expect("get").days, 7);
    assert!(matches!(
        set_hold(&store, request("", "acc-1", false, ""), "admin").await,
        Err(Error::FailedPrecondition(message)) if message == "no legal hold on account `acc-1`"
    ));
    set_hold(&store, request("", "acc-1", true, "case 9"), "admin").await.expect("hold");
    assert_eq!(holds(&store).await.expect("holds").len(), 1);
}

#[test]
fn verify_chain_checks_what_remains_after_a_prune() {
    use crate::chain::{CheckRange, verify_with_tree};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store_with_events(dir.path());
    let loc = location("us-east");
    store.set_retention(&policy(7)).expect("policy");
    store.set_hold(&hold("", "acc-held"), true).expect("hold");
    sweep(&store, &Archived(AtomicU64::new(100)), at(NOW));
    for (from_seq, checked) in [(1, 6), (3, 6), (4, 5), (11, 5), (12, 4)] {
        let verdict = verify_with_tree(&store, &loc, CheckRange { from_seq, to_seq: 15 }, 15, None).expect("verify");
        assert!(verdict.ok, "from {from_seq}: {verdict:?}");
        assert_eq!((verdict.checked, verdict.pruned_through), (checked, 10), "from {from_seq}");
    }
    let head = store.collector(&loc).expect("collector").expect("some").head_chain_hash;
    let verdict = verify_with_tree(&store, &loc, CheckRange { from_seq: 1, to_seq: 15 }, 15, None).expect("verify");
    assert_eq!(verdict.head_chain_hash, head);
}
