//! What the publisher's test binaries share: an outbox in a temporary database, and events to
//! put in it.

use std::sync::Arc;

use qtrail_cadf::event::INITIATOR_USER;
use qtrail_cadf::{Action, AuditEvent, Crn, EventBuilder, Initiator, Location};
use qtrail_publisher::{CommitMode, Outbox, OutboxLimits};
use redb::Database;

pub(crate) fn location() -> Location {
    "us-east".parse().unwrap()
}

/// A valid event, distinct per `n` (its target is `job-<n>`).
pub(crate) fn event(n: usize) -> AuditEvent {
    let log_source = Crn::instance(&location(), "acc-1", "inst-1").unwrap();
    let initiator = Initiator {
        id: "IBMid-0001".into(),
        name: "alice@example.com".into(),
        type_uri: INITIATOR_USER.into(),
        credential_type: "apikey".into(),
        host_address: "127.0.0.1".into(),
        host_agent: "test".into(),
    };
    EventBuilder::new(Action::JobRead, log_source, initiator).target(&format!("job-{n}"), "").build().unwrap()
}

/// Opens an outbox in a new database of a temporary directory, which lives as long as the
/// returned guard.
pub(crate) fn open(limits: OutboxLimits, mode: CommitMode) -> (tempfile::TempDir, Arc<Database>, Outbox) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("outbox.redb")).unwrap());
    let outbox = Outbox::open(db.clone(), "runtime-test", limits, mode).unwrap();
    (dir, db, outbox)
}
