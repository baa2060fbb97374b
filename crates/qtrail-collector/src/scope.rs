//! Account scope: which events an auditor token may read.
//!
//! An auditor token may carry `accounts = ["acc-…"]`; without it, it reads every account's
//! events. An event belongs to two accounts: its initiator's, which the runtime names in the
//! log source CRN (Activity Tracker events carry no account of the initiator; the log source is
//! the account an event is copied to, the caller's, or the operator's for an unauthenticated
//! call), and its target's, the account that owns the program or job (the CRN's `a/<account>`).
//! A scoped token reads an event when either account is in its list, so a read of one account's
//! program by another shows up for both. [`Scope::admits`] is that rule, and the one place it
//! lives: the filter of every read path (query, tail, export, the console, inclusion proofs)
//! and the alerts' firings apply it.

use qtrail_cadf::crn::account_of;
use qtrail_proto::qtrail::audit::v1 as proto;

/// The accounts whose events a caller may read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    /// `None`: every account.
    accounts: Option<Vec<String>>,
}

impl Scope {
    /// Returns the scope of every account.
    pub fn all() -> Self {
        Self::default()
    }

    /// Returns the scope of these accounts alone (checked by the tokens file: not empty, each a
    /// valid account id).
    pub fn accounts(accounts: impl IntoIterator<Item = String>) -> Self {
        Self { accounts: Some(accounts.into_iter().collect()) }
    }

    /// Returns true when the scope admits every account.
    pub fn is_all(&self) -> bool {
        self.accounts.is_none()
    }

    /// Returns the accounts of a limited scope, `None` for every account.
    pub fn listed(&self) -> Option<&[String]> {
        self.accounts.as_deref()
    }

    /// Returns true when the caller may read `event`: the scope is every account, or the
    /// account of its initiator (the log source) or of its target is in the list.
    pub fn admits(&self, event: &proto::AuditEvent) -> bool {
        let Some(accounts) = &self.accounts else {
            return true;
        };
        let listed = |crn: &str| account_of(crn).is_some_and(|account| accounts.iter().any(|mine| mine == account));
        listed(&event.log_source_crn) || event.target.as_ref().is_some_and(|target| listed(&target.id))
    }

    /// Returns `firing` as the caller may see it: with only the events it admits, or `None`
    /// when it admits none of them (a firing is about its events; one with none of the
    /// caller's tells it nothing it may know). Its `count` is then of the events kept, since
    /// the count of the others is itself about other accounts.
    pub fn firing(&self, mut firing: proto::AlertFiring) -> Option<proto::AlertFiring> {
        if self.is_all() {
            return Some(firing);
        }
        firing.events.retain(|record| self.admits_record(record));
        if firing.events.is_empty() {
            return None;
        }
        firing.count = firing.events.len() as u64;
        Some(firing)
    }

    /// Returns true when the caller may read the stored `record` (one without an event: no).
    pub fn admits_record(&self, record: &proto::StoredEvent) -> bool {
        self.is_all() || record.event.as_ref().is_some_and(|event| self.admits(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(log_source: &str, target: &str) -> proto::AuditEvent {
        let crn = |account: &str, rest: &str| {
            format!("crn:v1:bluemix:public:quantum-computing:us-east:a/{account}:inst:{rest}")
        };
        proto::AuditEvent {
            log_source_crn: crn(log_source, ":"),
            target: Some(proto::Target { id: crn(target, "program:p-1"), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn admits_events_of_the_initiators_or_the_targets_account() {
        let bob = Scope::accounts(["acc-bob".to_owned()]);
        assert!(bob.admits(&event("acc-bob", "acc-bob")));
        assert!(bob.admits(&event("acc-alice", "acc-bob")), "alice's read of bob's program is bob's too");
        assert!(bob.admits(&event("acc-bob", "acc-alice")), "bob's read of alice's program is bob's");
        assert!(!bob.admits(&event("acc-alice", "acc-alice")));
        assert!(!bob.admits(&event("acc-bobby", "acc-bo")), "accounts match whole");
        assert!(!bob.admits(&proto::AuditEvent::default()));
        assert!(!bob.admits_record(&proto::StoredEvent::default()));
        assert!(Scope::all().admits(&event("acc-alice", "acc-alice")));
        assert!(Scope::all().admits_record(&proto::StoredEvent::default()));
    }

    #[test]
    fn firings_keep_only_admitted_events_and_hide_without_any() {
        let stored = |event| proto::StoredEvent { event: Some(event), ..Default::default() };
        let firing = proto::AlertFiring {
            count: 40,
            events: vec![stored(event("acc-alice", "acc-alice")), stored(event("acc-alice", "acc-bob"))],
            ..Default::default()
        };
        let bob = Scope::accounts(["acc-bob".to_owned()]).firing(firing.clone()).unwrap();
        assert_eq!((bob.count, bob.events.len()), (1, 1));
        assert!(Scope::accounts(["acc-carol".to_owned()]).firing(firing.clone()).is_none());
        assert_eq!(Scope::all().firing(firing.clone()), Some(firing));
    }
}
