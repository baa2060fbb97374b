//! The programs and jobs service, free of transport concerns.
//!
//! A call that changes state runs `RuntimeService::audited`: it checks the caller, runs the
//! call's body in one write transaction, adds the call's audit event to the outbox in that same
//! transaction and commits. The transaction comes from the outbox's group commit
//! ([`Outbox::begin`]): each call has its own, but concurrent calls share one fsync, and each is
//! answered only once the durable commit covering it has returned. A call that only reads runs
//! `RuntimeService::audited_read`: its body reads a snapshot (a read transaction, concurrent
//! with everything), then its event is handed to the outbox's event writer ([`Outbox::submit`]),
//! which batches it with the events of concurrent calls into one transaction and one fsync. A
//! call that fails leaves no change and records its failure event the same way. Such a call
//! returns an [`Answer`] that holds its result back until the event is durable
//! ([`RuntimeService::settle`], awaited without holding a thread). If the event cannot be made
//! durable the call fails UNAVAILABLE instead (and did nothing): no call is answered without its
//! event. Methods block on the database (and changing calls on the fsync), so the gRPC layer
//! runs them on blocking threads.
//!
//! The machinery is in `audited`; the calls are in `programs` and `jobs`, which check requests
//! with `validation`, find what a caller may see with `visibility`, name new resources with
//! `ids`, answer with `messages` and keep answers small with `bounds`.

mod audited;
mod bounds;
mod ids;
mod jobs;
mod messages;
mod programs;
mod validation;
mod visibility;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use qtrail_cadf::Action;
use qtrail_publisher::receipts::ReceiptStats;
use qtrail_publisher::{AuditSink, Outbox, Recording};

use crate::audit::Auditor;
use crate::error::Result;
use crate::executor::Executor;
use crate::store::Store;

/// The simulator backend, the only one.
pub const BACKEND: &str = "simulator_statevector";

/// A call's result, held back until the call's event is durable: answering before would let a
/// crash lose the event of a call the caller saw succeed or fail.
#[derive(Debug)]
#[must_use = "a call may be answered only once its event is durable, see `RuntimeService::settle`"]
pub struct Answer<T> {
    result: Result<T>,
    /// The action and the recording of an event still on its way to the disk.
    event: Option<(Action, Recording)>,
}

impl<T> Answer<T> {
    /// Returns an answer whose event is already durable, or which has none to wait for.
    fn ready(result: Result<T>) -> Self {
        Self { result, event: None }
    }

    /// Applies `f` to a successful result, at once. Callers use it for what follows a durable
    /// commit (a changing call's success is answered only after its commit, with no event left
    /// to wait for), so a success still waiting for its event here would be a bug.
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        debug_assert!(self.result.is_err() || self.event.is_none(), "mapped a success whose event is not durable");
        Answer { result: self.result.map(f), event: self.event }
    }
}

/// The domain service behind `ProgramService` and `JobService`.
#[derive(Debug)]
pub struct RuntimeService {
    /// Programs and jobs, for the snapshots that read calls run in.
    store: Store,
    /// The audit outbox, in the same database: changing calls' transactions come from it.
    outbox: Outbox,
    auditor: Auditor,
    executor: Executor,
    refused_outbox_full: AtomicU64,
    /// What becomes of events: the outbox, except in the unaudited benchmark baseline.
    audit_sink: AuditSink,
    /// With `--on-receipt-failure refuse`: the receipts' alarm, which refuses every call once raised.
    receipt_alarm: Option<Arc<ReceiptStats>>,
}

impl RuntimeService {
    /// Returns a service over these parts; `outbox` must be opened on `store`'s database
    /// ([`Store::database`]), so that a call's change and its event commit in one transaction.
    pub fn new(store: Store, outbox: Outbox, auditor: Auditor, executor: Executor) -> Self {
        Self {
            store,
            outbox,
            auditor,
            executor,
            refused_outbox_full: AtomicU64::new(0),
            audit_sink: AuditSink::outbox(),
            receipt_alarm: None,
        }
    }

    /// Returns the service with events going to `sink`; only a build with
    /// `qtrail-publisher/testing` can make one that is not the outbox.
    pub fn with_audit_sink(mut self, sink: AuditSink) -> Self {
        self.audit_sink = sink;
        self
    }

    /// Returns the service refusing every call once `alarm` is raised (a receipt failed).
    pub fn refusing_on_receipt_failure(mut self, alarm: Arc<ReceiptStats>) -> Self {
        self.receipt_alarm = Some(alarm);
        self
    }

    /// Returns whether calls are refused because a receipt failed.
    fn receipt_alarmed(&self) -> bool {
        self.receipt_alarm.as_ref().is_some_and(|alarm| alarm.alarmed())
    }

    /// Returns how many calls were refused because the outbox was full.
    pub fn refused_outbox_full(&self) -> u64 {
        self.refused_outbox_full.load(Ordering::Relaxed)
    }
}
