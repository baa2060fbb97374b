//! Where a service sends its audit events: [`AuditSink`].
//!
//! In production that is always the outbox. The discarding sink, the unaudited baseline that
//! measures what auditing costs, exists only with the `testing` feature
//! (`testing::AuditSink::discard`), so that no production build can switch auditing off.

/// Where a service's audit events go: into the outbox (the default), or, built only with the
/// `testing` feature, nowhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditSink {
    /// Crate-private, so that outside this crate only `testing::AuditSink::discard` sets it.
    pub(crate) discard: bool,
}

impl AuditSink {
    /// Returns the production sink: every event into the outbox.
    pub const fn outbox() -> Self {
        Self { discard: false }
    }

    /// Returns whether events are dropped instead of recorded. A service then runs each call
    /// exactly as audited but builds and stores no event; a changing call still commits its
    /// change durably through the outbox's group commit.
    pub const fn discards(self) -> bool {
        self.discard
    }
}
