//! The audit machinery every call runs through: authentication, the call's transaction or
//! snapshot, its event in the outbox, and the [`Answer`] held back until that event is durable.

use std::sync::atomic::Ordering;

use qtrail_cadf::Action;
use qtrail_publisher::{OutboxError, OutboxTransaction};
use redb::{ReadTransaction, WriteTransaction};
use tracing::{error, warn};

use super::{Answer, RuntimeService};
use crate::audit::AuditRecord;
use crate::auth::{CallContext, Caller, Principal};
use crate::error::{Error, Result};

/// Returns the caller's principal, or why the call is refused as unauthenticated.
fn authenticated(ctx: &CallContext) -> Result<&Principal> {
    match &ctx.caller {
        Caller::Principal(principal) => Ok(principal),
        Caller::UnknownKey => Err(Error::Unauthenticated("unknown api key")),
        Caller::Anonymous => Err(Error::Unauthenticated("missing api key in the authorization header")),
    }
}

impl RuntimeService {
    /// Returns the call's result once its event is durable; the call fails UNAVAILABLE when the
    /// event could not be recorded, the outbox being full included ([`Error::OutboxFull`]).
    ///
    /// # Errors
    /// The call's own error, or why its event could not be recorded.
    pub async fn settle<T>(&self, answer: Answer<T>) -> Result<T> {
        let Some((action, recording)) = answer.event else {
            return answer.result;
        };
        match recording.durable().await {
            Ok(_) => answer.result,
            Err(err) => Err(self.unrecorded(action, err)),
        }
    }

    /// Runs one audited call: authentication, `body` in a transaction, and the event.
    pub(super) fn audited<T>(
        &self,
        ctx: &CallContext,
        mut record: AuditRecord,
        body: impl FnOnce(&WriteTransaction, &Principal, &mut AuditRecord) -> Result<T>,
    ) -> Answer<T> {
        let principal = match authenticated(ctx) {
            Ok(principal) => principal,
            Err(err) => return self.refuse(ctx, &record, err),
        };
        let txn = match self.begin() {
            Ok(txn) => txn,
            Err(err) => return Answer::ready(Err(err)),
        };
        match body(&txn, principal, &mut record) {
            // Committed durably with its event, or not at all.
            Ok(value) => Answer::ready(self.commit_with_event(ctx, &record, txn, Ok(())).map(|()| value)),
            Err(err) => {
                // Nothing the body did may stay. Abort before refusing: the failure's event goes
                // to the outbox's writer, which needs redb's one writer lock that `txn` holds.
                txn.abort();
                self.refuse(ctx, &record, err)
            }
        }
    }

    /// Runs one audited call like [`Self::audited`], with CPU work of the caller's choosing done
    /// first: `prepare` runs once the caller is authenticated and before the transaction, so it
    /// never holds the store's one writer lock, and its result is handed to `body`, which decides
    /// whether it fails the call.
    pub(super) fn audited_prepared<P, T>(
        &self,
        ctx: &CallContext,
        record: AuditRecord,
        prepare: impl FnOnce() -> P,
        body: impl FnOnce(&WriteTransaction, &Principal, &mut AuditRecord, P) -> Result<T>,
    ) -> Answer<T> {
        let prepared = match authenticated(ctx) {
            Ok(_) => prepare(),
            Err(err) => return self.refuse(ctx, &record, err),
        };
        self.audited(ctx, record, |txn, principal, record| body(txn, principal, record, prepared))
    }

    /// Runs one audited call that only reads: authentication, `body` in a snapshot, and the event,
    /// recorded alone and durably before the call is answered.
    pub(super) fn audited_read<T>(
        &self,
        ctx: &CallContext,
        mut record: AuditRecord,
        body: impl FnOnce(&ReadTransaction, &Principal, &mut AuditRecord) -> Result<T>,
    ) -> Answer<T> {
        let principal = match authenticated(ctx) {
            Ok(principal) => principal,
            Err(err) => return self.refuse(ctx, &record, err),
        };
        let txn = match self.store.begin_read() {
            Ok(txn) => txn,
            Err(err) => {
                error!(error = %err, "cannot begin a read transaction");
                return Answer::ready(Err(Error::AuditUnavailable));
            }
        };
        let result = body(&txn, principal, &mut record);
        drop(txn);
        self.with_event(ctx, &record, result)
    }

    /// Records the event of a call refused before any handler saw it (its request did not
    /// decode) and returns the refusal, held back until the event is durable.
    pub fn refuse_before_handler(
        &self,
        ctx: &CallContext,
        record: AuditRecord,
        err: Error,
    ) -> Answer<std::convert::Infallible> {
        self.refuse(ctx, &record, err)
    }

    /// Starts a call's transaction, whose commit shares its fsync with concurrent calls.
    fn begin(&self) -> Result<OutboxTransaction> {
        if self.receipt_alarmed() {
            return Err(Error::ReceiptFailed);
        }
        self.outbox.begin().map_err(|err| {
            error!(error = %err, "cannot begin a transaction");
            Error::AuditUnavailable
        })
    }

    /// Records a failed call's event alone and returns the failure, which waits for it.
    fn refuse<T>(&self, ctx: &CallContext, record: &AuditRecord, err: Error) -> Answer<T> {
        self.with_event(ctx, record, Err(err))
    }

    /// Hands the event of a call that changed nothing to the outbox's event writer, to be made
    /// durable in a batch with concurrent calls' events, and returns the call's result held back
    /// until then. A call refused for want of a durable outbox has no event to wait for.
    fn with_event<T>(&self, ctx: &CallContext, record: &AuditRecord, result: Result<T>) -> Answer<T> {
        if matches!(result, Err(Error::OutboxFull | Error::AuditUnavailable | Error::ReceiptFailed)) {
            return Answer::ready(result);
        }
        // Read calls too: a log that cannot be trusted may not record what they saw.
        if self.receipt_alarmed() {
            return Answer::ready(Err(Error::ReceiptFailed));
        }
        if self.audit_sink.discards() {
            return Answer::ready(result);
        }
        let event = match self.auditor.event(ctx, record, result.as_ref().map(|_| ())) {
            Ok(event) => event,
            Err(err) => {
                error!(error = %err, action = %record.action, "cannot build the audit event");
                return Answer::ready(Err(Error::AuditUnavailable));
            }
        };
        match self.outbox.submit(&event) {
            Ok(recording) => Answer { result, event: Some((record.action, recording)) },
            Err(err) => Answer::ready(Err(self.unrecorded(record.action, err))),
        }
    }

    /// Returns the error of a call whose event could not be recorded, counting and logging it.
    fn unrecorded(&self, action: Action, err: OutboxError) -> Error {
        match err {
            OutboxError::Full { events, bytes } => {
                let refused = self.refused_outbox_full.fetch_add(1, Ordering::Relaxed) + 1;
                warn!(action = %action, queued_events = events, queued_bytes = bytes, refused, "audit outbox full, refusing the call");
                Error::OutboxFull
            }
            err => {
                error!(error = %err, action = %action, "cannot record the audit event");
                Error::AuditUnavailable
            }
        }
    }

    fn commit_with_event(
        &self,
        ctx: &CallContext,
        record: &AuditRecord,
        txn: OutboxTransaction,
        outcome: std::result::Result<(), &Error>,
    ) -> Result<()> {
        if self.audit_sink.discards() {
            return discard_event(record, txn);
        }
        let event = match self.auditor.event(ctx, record, outcome) {
            Ok(event) => event,
            Err(err) => {
                error!(error = %err, action = %record.action, "cannot build the audit event");
                return Err(Error::AuditUnavailable);
            }
        };
        if let Err(err) = self.outbox.enqueue(&txn, &event) {
            return Err(self.unrecorded(record.action, err));
        }
        // Returns once durable; wakes the publisher.
        if let Err(err) = txn.commit() {
            error!(error = %err, action = %record.action, "cannot commit the call and its audit event");
            return Err(Error::AuditUnavailable);
        }
        Ok(())
    }
}

/// The unaudited baseline only: commits a changing call as a runtime without auditing would:
/// durably, sharing the fsync, without an event.
fn discard_event(record: &AuditRecord, txn: OutboxTransaction) -> Result<()> {
    txn.commit().map_err(|err| {
        error!(error = %err, action = %record.action, "cannot commit the call");
        Error::AuditUnavailable
    })
}
