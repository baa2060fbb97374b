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

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use qtrail_cadf::proto::{json_from_struct, struct_from_json};
use qtrail_cadf::{Action, JsonObject};
use qtrail_proto::qtrail::runtime::v1 as pb;
use qtrail_publisher::{Outbox, OutboxError, OutboxTransaction, Recording};
use rand::Rng;
use redb::{ReadTransaction, WriteTransaction};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{error, warn};

use crate::audit::{AuditRecord, Auditor};
use crate::auth::{CallContext, Caller, Principal};
use crate::error::{Error, Result, quote};
use crate::executor::{Executor, circuit};
use crate::store::jobs::{self, JobRecord, JobStatus, LogLevel};
use crate::store::programs::{self, ProgramRecord};
use crate::store::{Reader, Store, now_millis};

/// The simulator backend, the only one.
pub const BACKEND: &str = "simulator_statevector";
/// Longest program name, in characters.
const MAX_NAME_CHARS: usize = 128;
/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 2048;
/// Default and largest `max_execution_time`, in seconds.
const DEFAULT_MAX_EXECUTION_TIME: u32 = 300;
const MAX_EXECUTION_TIME: u32 = 10_800;
/// Largest spec, in bytes of JSON.
const MAX_SPEC_BYTES: usize = 16 * 1024;
/// Longest id accepted in a request, in bytes.
const MAX_ID_BYTES: usize = 128;
/// Page size bounds.
const DEFAULT_LIMIT: i32 = 100;
const MAX_LIMIT: i32 = 1000;
/// Shots bounds and default.
const DEFAULT_SHOTS: u32 = 1024;
const MAX_SHOTS: u32 = 100_000;
/// Largest integer a `google.protobuf.Value` number carries exactly (2^53).
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;
/// Tag bounds.
const MAX_TAGS: usize = 16;
const MAX_TAG_CHARS: usize = 64;
/// Most bytes of programs or jobs in one list page: with sources, the 1,000 programs a page may
/// hold would make ~256 MB, far past a client's 4 MiB default message limit. A page stops
/// before it would pass this (it always holds at least one item, which fits: a program is at
/// most ~280 KiB), and the caller continues from `offset` plus the number returned.
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Default and largest number of outcomes in a page of job results: 16,384 outcomes of 64 bits
/// make ~1.2 MB.
const MAX_RESULTS_PAGE: u32 = 16_384;
/// Most outcomes in one interim result: the most frequent ones. Interim results show progress;
/// four of them with every outcome made a 17 MB answer.
const MAX_INTERIM_OUTCOMES: usize = 1024;
/// Most interim results returned: the newest.
const MAX_INTERIM_RESULTS: usize = 16;
/// Longest results page token: a bit string of at most 64 classical bits.
const MAX_PAGE_TOKEN_CHARS: usize = 64;
/// Latest timestamp accepted in a filter (9999-12-31T23:59:59Z).
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

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

/// Returns the caller's principal, or why the call is refused as unauthenticated.
fn authenticated(ctx: &CallContext) -> Result<&Principal> {
    match &ctx.caller {
        Caller::Principal(principal) => Ok(principal),
        Caller::UnknownKey => Err(Error::Unauthenticated("unknown api key")),
        Caller::Anonymous => Err(Error::Unauthenticated("missing api key in the authorization header")),
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
    /// Benchmarks only: what becomes of events.
    #[cfg(feature = "bench")]
    audit_sink: crate::config::AuditSink,
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
            #[cfg(feature = "bench")]
            audit_sink: crate::config::AuditSink::Outbox,
        }
    }

    /// Returns the service with events going to `sink` (benchmarks only).
    #[cfg(feature = "bench")]
    pub fn with_audit_sink(mut self, sink: crate::config::AuditSink) -> Self {
        self.audit_sink = sink;
        self
    }

    /// Returns how many calls were refused because the outbox was full.
    pub fn refused_outbox_full(&self) -> u64 {
        self.refused_outbox_full.load(Ordering::Relaxed)
    }

    /// Returns the call's result once its event is durable; the call fails UNAVAILABLE (or
    /// RESOURCE_EXHAUSTED when the outbox was full) when the event could not be recorded.
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
    fn audited<T>(
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
    fn audited_prepared<P, T>(
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
    fn audited_read<T>(
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
        if matches!(result, Err(Error::OutboxFull | Error::AuditUnavailable)) {
            return Answer::ready(result);
        }
        #[cfg(feature = "bench")]
        if self.audit_sink == crate::config::AuditSink::Discard {
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
        #[cfg(feature = "bench")]
        if self.audit_sink == crate::config::AuditSink::Discard {
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

    // ---- programs ----

    /// Uploads a program.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad name, description, source, time or spec; ALREADY_EXISTS for a
    /// name the account has; UNAUTHENTICATED; UNAVAILABLE when the event cannot be recorded.
    pub fn create_program(&self, ctx: &CallContext, request: pb::CreateProgramRequest) -> Answer<pb::Program> {
        let mut record = AuditRecord::new(Action::ProgramCreate);
        record.success_status = 201;
        record.request("name", request.name.as_str());
        record.request("description", request.description.as_str());
        record.request("maxExecutionTime", request.max_execution_time);
        record.request("isPublic", request.is_public);
        record.request("source", source_summary(&request.source));
        let parse = || circuit::parse(&request.source);
        self.audited_prepared(ctx, record, parse, |txn, principal, record, parsed| {
            check_name(&request.name)?;
            check_description(&request.description)?;
            let max_execution_time = check_max_execution_time(request.max_execution_time)?;
            let circuit = parsed.map_err(|err| Error::invalid("source", err.to_string()))?;
            let spec = spec_json(request.spec)?;
            if programs::id_by_name(txn, &principal.account, &request.name)?.is_some() {
                return Err(Error::NameTaken(quote(&request.name)));
            }
            let now = now_millis();
            let program = ProgramRecord {
                id: program_id(&request.name),
                account: principal.account.clone(),
                name: request.name,
                description: request.description,
                source: request.source.clone(),
                max_execution_time,
                spec,
                is_public: request.is_public,
                num_qubits: circuit.num_qubits as u32,
                create_millis: now,
                update_millis: now,
            };
            programs::put(txn, &program, None)?;
            record.target(&program.id, &program.name);
            record.response("programId", program.id.as_str());
            record.response("numQubits", program.num_qubits);
            Ok(program_message(&program, true))
        })
    }

    /// Lists the programs the caller can see, newest first.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for bad paging; UNAUTHENTICATED; UNAVAILABLE.
    pub fn list_programs(
        &self,
        ctx: &CallContext,
        request: pb::ListProgramsRequest,
    ) -> Answer<pb::ListProgramsResponse> {
        let mut record = AuditRecord::new(Action::ProgramRead);
        record.request("limit", request.limit);
        record.request("offset", request.offset);
        record.request("includeSource", request.include_source);
        self.audited_read(ctx, record, |txn, principal, record| {
            let (limit, offset) = check_page(request.limit, request.offset)?;
            // Ids from the indexes; only the page's programs are decoded, one at a time, and
            // no further than the page's byte bound.
            let visible = programs::visible_ids(txn, &principal.account)?;
            let count = visible.len() as u32;
            let page = within_page_bytes(visible.iter().skip(offset).take(limit).filter_map(|id| {
                programs::get(txn, id)
                    .map(|found| {
                        found.map(|program| {
                            program_message(&program, request.include_source && program.account == principal.account)
                        })
                    })
                    .transpose()
            }))?;
            record.response("count", count);
            record.response("returned", page.len() as u64);
            Ok(pb::ListProgramsResponse { programs: page, count })
        })
    }

    /// Returns one program (its source only to the owning account).
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad id; NOT_FOUND for an unknown id or another account's private
    /// program; UNAUTHENTICATED; UNAVAILABLE.
    pub fn get_program(&self, ctx: &CallContext, request: pb::GetProgramRequest) -> Answer<pb::Program> {
        let mut record = AuditRecord::new(Action::ProgramRead);
        record.requested("programId", &request.id);
        self.audited_read(ctx, record, |txn, principal, record| {
            let program = visible_program(txn, principal, &request.id, record)?;
            record.response("name", program.name.as_str());
            Ok(program_message(&program, program.account == principal.account))
        })
    }

    /// Changes a program's metadata, source or visibility.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for no or bad fields; NOT_FOUND; PERMISSION_DENIED for another account's
    /// public program; ALREADY_EXISTS for a taken name; UNAUTHENTICATED; UNAVAILABLE.
    pub fn update_program(&self, ctx: &CallContext, request: pb::UpdateProgramRequest) -> Answer<pb::Program> {
        let mut record = AuditRecord::new(Action::ProgramUpdate);
        record.requested("programId", &request.id);
        let parse = || request.source.as_deref().map(circuit::parse);
        self.audited_prepared(ctx, record, parse, |txn, principal, record, parsed| {
            let old = owned_program(txn, principal, &request.id, record)?;
            let mut new = old.clone();
            let mut changed: Vec<&str> = Vec::new();
            let mut initial = JsonObject::new();
            let mut updated = JsonObject::new();
            if let Some(name) = request.name {
                check_name(&name)?;
                if name != old.name && programs::id_by_name(txn, &principal.account, &name)?.is_some() {
                    return Err(Error::NameTaken(quote(&name)));
                }
                new.name = name;
                changed.push("name");
                initial.insert("name".into(), json!(old.name));
                updated.insert("name".into(), json!(new.name));
            }
            if let Some(description) = request.description {
                check_description(&description)?;
                new.description = description;
                changed.push("description");
                initial.insert("description".into(), json!(old.description));
                updated.insert("description".into(), json!(new.description));
            }
            if let (Some(source), Some(parsed)) = (&request.source, parsed) {
                let circuit = parsed.map_err(|err| Error::invalid("source", err.to_string()))?;
                new.num_qubits = circuit.num_qubits as u32;
                new.source = source.clone();
                changed.push("source");
                initial.insert("source".into(), source_summary(&old.source));
                updated.insert("source".into(), source_summary(&new.source));
            }
            if let Some(seconds) = request.max_execution_time {
                new.max_execution_time = check_max_execution_time(seconds)?;
                changed.push("maxExecutionTime");
                initial.insert("maxExecutionTime".into(), json!(old.max_execution_time));
                updated.insert("maxExecutionTime".into(), json!(new.max_execution_time));
            }
            if let Some(spec) = request.spec {
                new.spec = spec_json(Some(spec))?;
                changed.push("spec");
                initial.insert("spec".into(), spec_summary(&old.spec));
                updated.insert("spec".into(), spec_summary(&new.spec));
            }
            if let Some(is_public) = request.is_public {
                new.is_public = is_public;
                changed.push("isPublic");
                initial.insert("isPublic".into(), json!(old.is_public));
                updated.insert("isPublic".into(), json!(new.is_public));
            }
            if changed.is_empty() {
                return Err(Error::invalid(
                    "update",
                    "set at least one of name, description, source, max_execution_time, spec, is_public",
                ));
            }
            new.update_millis = now_millis();
            programs::put(txn, &new, Some(&old.name))?;
            record.target(&new.id, &new.name);
            record.request("updateType", changed.join(","));
            record.request("initialValue", Value::Object(initial));
            record.request("newValue", Value::Object(updated));
            Ok(program_message(&new, true))
        })
    }

    /// Deletes a program; its jobs are kept.
    ///
    /// # Errors
    /// INVALID_ARGUMENT; NOT_FOUND; PERMISSION_DENIED for another account's public program;
    /// UNAUTHENTICATED; UNAVAILABLE.
    pub fn delete_program(
        &self,
        ctx: &CallContext,
        request: pb::DeleteProgramRequest,
    ) -> Answer<pb::DeleteProgramResponse> {
        let mut record = AuditRecord::new(Action::ProgramDelete);
        record.requested("programId", &request.id);
        self.audited(ctx, record, |txn, principal, record| {
            let program = owned_program(txn, principal, &request.id, record)?;
            programs::delete(txn, &program)?;
            Ok(pb::DeleteProgramResponse {})
        })
    }

    // ---- jobs ----

    /// Queues a job of a program the caller can see.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for bad fields or params; NOT_FOUND for an unknown program;
    /// RESOURCE_EXHAUSTED when the account or the queue has as many jobs as it may;
    /// UNAUTHENTICATED; UNAVAILABLE.
    pub fn create_job(&self, ctx: &CallContext, request: pb::CreateJobRequest) -> Answer<pb::Job> {
        let mut record = AuditRecord::new(Action::JobCreate);
        record.success_status = 201;
        record.request("programId", request.program_id.as_str());
        record.request("backend", request.backend.as_str());
        record.request("logLevel", request.log_level.as_str());
        record.request("sessionId", request.session_id.as_str());
        record.request("tags", request.tags.clone());
        let id = job_id();
        let answer = self.audited(ctx, record, |txn, principal, record| {
            let backend = match request.backend.as_str() {
                "" | BACKEND => BACKEND.to_owned(),
                other => {
                    return Err(Error::invalid(
                        "backend",
                        format!("unknown backend `{}`, use `{BACKEND}`", quote(other)),
                    ));
                }
            };
            let log_level = match request.log_level.as_str() {
                "" => LogLevel::Info,
                level => level.parse().map_err(|()| {
                    Error::invalid(
                        "log_level",
                        format!("`{}` is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL", quote(level)),
                    )
                })?,
            };
            check_tags("tags", &request.tags)?;
            if request.session_id.len() > MAX_ID_BYTES || request.session_id.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "session_id",
                    format!("must be at most {MAX_ID_BYTES} bytes without control characters"),
                ));
            }
            let params = check_params(request.params)?;
            record.request("params", Value::Object(params.given.clone()));
            let program = visible_program_for_job(txn, principal, &request.program_id)?;
            let source = program.source.clone();
            // Last of the checks: a refused call must not hold a place in the queue.
            self.executor
                .admit(&principal.account, &id)
                .map_err(|refused| Error::ResourceExhausted(refused.to_string()))?;
            let job = JobRecord {
                session_id: if request.session_id.is_empty() { id.clone() } else { request.session_id },
                id: id.clone(),
                program_id: program.id,
                account: principal.account.clone(),
                backend,
                status: JobStatus::Queued,
                reason: String::new(),
                params: params.given,
                shots: params.shots,
                seed: params.seed,
                log_level,
                tags: request.tags,
                max_execution_time: program.max_execution_time,
                create_millis: now_millis(),
                start_millis: None,
                end_millis: None,
            };
            jobs::insert(txn, &job, &source)?;
            jobs::log(txn, &job, LogLevel::Info, "job queued")?;
            record.target(&job.id, &job.id);
            record.response("jobId", job.id.as_str());
            record.response("status", JobStatus::Queued.as_str());
            record.response("seed", job.seed);
            Ok(job_message(&job))
        });
        if answer.result.is_err() {
            // Not committed: its place in the queue goes back (a no-op if it never had one).
            self.executor.release(&id);
        }
        answer.map(|job| {
            // Durable by now: the executor may see the job.
            self.executor.submit(&job.id);
            job
        })
    }

    /// Lists the caller's jobs.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for bad paging, filters or an inverted time range; UNAUTHENTICATED;
    /// UNAVAILABLE.
    pub fn list_jobs(&self, ctx: &CallContext, request: pb::ListJobsRequest) -> Answer<pb::ListJobsResponse> {
        let mut record = AuditRecord::new(Action::JobRead);
        record.request("limit", request.limit);
        record.request("offset", request.offset);
        if let Some(pending) = request.pending {
            record.request("pending", pending);
        }
        record.request("programId", request.program_id.as_str());
        record.request("tags", request.tags.clone());
        record.request("ascending", request.ascending);
        self.audited_read(ctx, record, |txn, principal, record| {
            let (limit, offset) = check_page(request.limit, request.offset)?;
            if request.program_id.len() > MAX_ID_BYTES {
                return Err(Error::invalid("program_id", format!("longer than {MAX_ID_BYTES} bytes")));
            }
            check_tags("tags", &request.tags)?;
            let after = timestamp_millis("created_after", request.created_after)?;
            let before = timestamp_millis("created_before", request.created_before)?;
            if let Some(after) = after {
                record.request("createdAfter", millis_text(after));
            }
            if let Some(before) = before {
                record.request("createdBefore", millis_text(before));
            }
            if let (Some(after), Some(before)) = (after, before)
                && before < after
            {
                return Err(Error::invalid("created_before", "is earlier than created_after"));
            }
            let matching: Vec<JobRecord> = jobs::list(txn, &principal.account, after, before, request.ascending)?
                .into_iter()
                .filter(|job| request.pending.is_none_or(|pending| pending != job.status.is_final()))
                .filter(|job| request.program_id.is_empty() || job.program_id == request.program_id)
                .filter(|job| request.tags.iter().all(|tag| job.tags.contains(tag)))
                .collect();
            let count = matching.len() as u32;
            let page = within_page_bytes(matching.iter().skip(offset).take(limit).map(|job| Ok(job_message(job))))?;
            record.response("count", count);
            record.response("returned", page.len() as u64);
            Ok(pb::ListJobsResponse { jobs: page, count })
        })
    }

    /// Returns one of the caller's jobs.
    ///
    /// # Errors
    /// INVALID_ARGUMENT; NOT_FOUND; UNAUTHENTICATED; UNAVAILABLE.
    pub fn get_job(&self, ctx: &CallContext, request: pb::GetJobRequest) -> Answer<pb::Job> {
        let mut record = AuditRecord::new(Action::JobRead);
        record.requested("jobId", &request.id);
        self.audited_read(ctx, record, |txn, principal, record| {
            let job = owned_job(txn, principal, &request.id, record)?;
            record.response("status", job.status.as_str());
            Ok(job_message(&job))
        })
    }

    /// Returns a completed job's results.
    ///
    /// # Errors
    /// FAILED_PRECONDITION while the job has not completed; INVALID_ARGUMENT; NOT_FOUND;
    /// UNAUTHENTICATED; UNAVAILABLE.
    pub fn get_job_results(&self, ctx: &CallContext, request: pb::GetJobResultsRequest) -> Answer<pb::JobResults> {
        let mut record = AuditRecord::new(Action::JobRead);
        record.requested("jobId", &request.id);
        record.request("view", "results");
        record.request("pageSize", request.page_size);
        record.request("pageToken", request.page_token.as_str());
        self.audited_read(ctx, record, |txn, principal, record| {
            let page_size = match request.page_size {
                0 => MAX_RESULTS_PAGE,
                1..=MAX_RESULTS_PAGE => request.page_size,
                other => {
                    return Err(Error::invalid(
                        "page_size",
                        format!("must be 1 to {MAX_RESULTS_PAGE} (0 means {MAX_RESULTS_PAGE}), got {other}"),
                    ));
                }
            };
            let token = request.page_token.as_str();
            if token.len() > MAX_PAGE_TOKEN_CHARS || !token.bytes().all(|bit| bit == b'0' || bit == b'1') {
                return Err(Error::invalid("page_token", "must be a next_page_token of an earlier page"));
            }
            let job = owned_job(txn, principal, &request.id, record)?;
            let results = match (job.status, jobs::results(txn, &job.id)?) {
                (JobStatus::Completed, Some(results)) => results,
                (status, _) => {
                    return Err(Error::FailedPrecondition(format!(
                        "job `{}` is {status}, results exist once it has completed",
                        job.id
                    )));
                }
            };
            let outcomes = results.counts.len() as u32;
            // Bit strings of one job all have the same length, so their order is the page order.
            let start = if token.is_empty() { Bound::Unbounded } else { Bound::Excluded(token) };
            let mut rest = results.counts.range::<str, _>((start, Bound::Unbounded));
            let mut counts = HashMap::new();
            let mut last = String::new();
            for (bits, count) in rest.by_ref().take(page_size as usize) {
                last.clone_from(bits);
                counts.insert(bits.clone(), *count);
            }
            let next_page_token = if rest.next().is_some() { last } else { String::new() };
            record.response("shots", results.shots);
            record.response("outcomes", outcomes);
            record.response("returned", counts.len() as u64);
            Ok(pb::JobResults {
                job_id: job.id,
                shots: results.shots,
                counts,
                seed: results.seed,
                next_page_token,
                outcomes,
            })
        })
    }

    /// Returns the interim results a job published.
    ///
    /// # Errors
    /// INVALID_ARGUMENT; NOT_FOUND; UNAUTHENTICATED; UNAVAILABLE.
    pub fn get_job_interim_results(
        &self,
        ctx: &CallContext,
        request: pb::GetJobInterimResultsRequest,
    ) -> Answer<pb::JobInterimResults> {
        let mut record = AuditRecord::new(Action::JobRead);
        record.requested("jobId", &request.id);
        record.request("view", "interimResults");
        self.audited_read(ctx, record, |txn, principal, record| {
            let job = owned_job(txn, principal, &request.id, record)?;
            let all = jobs::interim(txn, &job.id)?;
            let newest = all.len().saturating_sub(MAX_INTERIM_RESULTS);
            let results: Vec<pb::InterimResult> = all
                .into_iter()
                .skip(newest)
                .map(|interim| pb::InterimResult {
                    shots_done: interim.shots_done,
                    outcomes: interim.counts.len() as u32,
                    counts: most_frequent(interim.counts, MAX_INTERIM_OUTCOMES),
                    time: Some(timestamp(interim.millis)),
                })
                .collect();
            record.response("interimResults", results.len() as u64);
            Ok(pb::JobInterimResults { job_id: job.id, results })
        })
    }

    /// Returns a job's log.
    ///
    /// # Errors
    /// INVALID_ARGUMENT; NOT_FOUND; UNAUTHENTICATED; UNAVAILABLE.
    pub fn get_job_logs(&self, ctx: &CallContext, request: pb::GetJobLogsRequest) -> Answer<pb::JobLogs> {
        let mut record = AuditRecord::new(Action::JobRead);
        record.requested("jobId", &request.id);
        record.request("view", "logs");
        self.audited_read(ctx, record, |txn, principal, record| {
            let job = owned_job(txn, principal, &request.id, record)?;
            let logs = jobs::logs(txn, &job.id)?;
            record.response("logBytes", logs.len() as u64);
            Ok(pb::JobLogs { job_id: job.id, logs })
        })
    }

    /// Cancels a queued or running job.
    ///
    /// # Errors
    /// FAILED_PRECONDITION for a finished job; INVALID_ARGUMENT; NOT_FOUND; UNAUTHENTICATED;
    /// UNAVAILABLE.
    pub fn cancel_job(&self, ctx: &CallContext, request: pb::CancelJobRequest) -> Answer<pb::Job> {
        let mut record = AuditRecord::new(Action::JobCancel);
        record.requested("jobId", &request.id);
        self.audited(ctx, record, |txn, principal, record| {
            let mut job = owned_job(txn, principal, &request.id, record)?;
            if job.status.is_final() {
                return Err(Error::FailedPrecondition(format!(
                    "job `{}` is {} and can no longer be cancelled",
                    job.id, job.status
                )));
            }
            record.request("previousStatus", job.status.as_str());
            job.status = JobStatus::Cancelled;
            job.reason = "cancelled by the user".to_owned();
            job.end_millis = Some(now_millis());
            jobs::put(txn, &job)?;
            jobs::log(txn, &job, LogLevel::Warning, "job cancelled by the user")?;
            record.response("status", job.status.as_str());
            Ok(job_message(&job))
        })
        .map(|job| {
            self.executor.cancel(&job.id);
            job
        })
    }

    /// Deletes a finished job and what it produced.
    ///
    /// # Errors
    /// FAILED_PRECONDITION while the job is queued or running; INVALID_ARGUMENT; NOT_FOUND;
    /// UNAUTHENTICATED; UNAVAILABLE.
    pub fn delete_job(&self, ctx: &CallContext, request: pb::DeleteJobRequest) -> Answer<pb::DeleteJobResponse> {
        let mut record = AuditRecord::new(Action::JobDelete);
        record.requested("jobId", &request.id);
        self.audited(ctx, record, |txn, principal, record| {
            let job = owned_job(txn, principal, &request.id, record)?;
            if !job.status.is_final() {
                return Err(Error::FailedPrecondition(format!(
                    "job `{}` is {}, cancel it or wait until it finishes",
                    job.id, job.status
                )));
            }
            jobs::delete(txn, &job)?;
            Ok(pb::DeleteJobResponse {})
        })
    }
}

/// Benchmarks only: commits a changing call as a runtime without auditing would: durably,
/// sharing the fsync, without an event.
#[cfg(feature = "bench")]
fn discard_event(record: &AuditRecord, txn: OutboxTransaction) -> Result<()> {
    txn.commit().map_err(|err| {
        error!(error = %err, action = %record.action, "cannot commit the call");
        Error::AuditUnavailable
    })
}

// ---- lookups with visibility rules ----

fn check_id(field: &'static str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(field, format!("longer than {MAX_ID_BYTES} bytes")));
    }
    Ok(())
}

/// Returns a program the caller may read (its own or a public one); targets the event at it.
fn visible_program(
    txn: &impl Reader,
    principal: &Principal,
    id: &str,
    record: &mut AuditRecord,
) -> Result<ProgramRecord> {
    check_id("id", id)?;
    record.target(id, "");
    match programs::get(txn, id)? {
        Some(program) if program.account == principal.account || program.is_public => {
            record.target(id, &program.name);
            Ok(program)
        }
        // Another account's private program is reported exactly like a missing one.
        _ => Err(Error::not_found("program", id)),
    }
}

/// Returns a program the caller may change (its own). Another account's public program is
/// visible to everyone, so refusing it says nothing new: PERMISSION_DENIED. A private one is
/// NOT_FOUND, as if it did not exist.
fn owned_program(
    txn: &WriteTransaction,
    principal: &Principal,
    id: &str,
    record: &mut AuditRecord,
) -> Result<ProgramRecord> {
    let program = visible_program(txn, principal, id, record)?;
    if program.account != principal.account {
        return Err(Error::PermissionDenied(format!(
            "program `{}` is public but belongs to another account, only its owner can change it",
            program.id
        )));
    }
    Ok(program)
}

/// Returns the program a new job runs (checked for visibility, named in errors as `program_id`).
fn visible_program_for_job(txn: &WriteTransaction, principal: &Principal, id: &str) -> Result<ProgramRecord> {
    check_id("program_id", id)?;
    match programs::get(txn, id)? {
        Some(program) if program.account == principal.account || program.is_public => Ok(program),
        _ => Err(Error::not_found("program", id)),
    }
}

/// Returns one of the caller's jobs; another account's job is NOT_FOUND.
fn owned_job(txn: &impl Reader, principal: &Principal, id: &str, record: &mut AuditRecord) -> Result<JobRecord> {
    check_id("id", id)?;
    record.target(id, "");
    match jobs::get(txn, id)? {
        Some(job) if job.account == principal.account => {
            record.target(id, id);
            Ok(job)
        }
        _ => Err(Error::not_found("job", id)),
    }
}

// ---- validation ----

fn check_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(Error::invalid("name", format!("must be 1 to {MAX_NAME_CHARS} characters, got {chars}")));
    }
    if name.trim() != name || name.chars().any(char::is_control) {
        return Err(Error::invalid("name", "must not contain control characters or start or end with spaces"));
    }
    Ok(())
}

fn check_description(description: &str) -> Result<()> {
    let chars = description.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(Error::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters, got {chars}"),
        ));
    }
    Ok(())
}

fn check_max_execution_time(seconds: u32) -> Result<u32> {
    match seconds {
        0 => Ok(DEFAULT_MAX_EXECUTION_TIME),
        1..=MAX_EXECUTION_TIME => Ok(seconds),
        _ => Err(Error::invalid(
            "max_execution_time",
            format!("must be 1 to {MAX_EXECUTION_TIME} seconds (0 means {DEFAULT_MAX_EXECUTION_TIME}), got {seconds}"),
        )),
    }
}

fn check_page(limit: i32, offset: i32) -> Result<(usize, usize)> {
    if !(0..=MAX_LIMIT).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be 0 to {MAX_LIMIT} (0 means {DEFAULT_LIMIT}), got {limit}"),
        ));
    }
    if offset < 0 {
        return Err(Error::invalid("offset", format!("must be 0 or more, got {offset}")));
    }
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
    // Both are non-negative here.
    Ok((limit as usize, offset as usize))
}

fn check_tags(field: &'static str, tags: &[String]) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(field, format!("at most {MAX_TAGS} tags, got {}", tags.len())));
    }
    for tag in tags {
        let chars = tag.chars().count();
        if chars == 0 || chars > MAX_TAG_CHARS || tag.chars().any(char::is_control) {
            return Err(Error::invalid(
                field,
                format!("tag `{}` must be 1 to {MAX_TAG_CHARS} characters without control characters", quote(tag)),
            ));
        }
    }
    Ok(())
}

fn spec_json(spec: Option<pb::ProgramSpec>) -> Result<JsonObject> {
    let Some(spec) = spec else {
        return Ok(JsonObject::new());
    };
    let mut object = JsonObject::new();
    for (key, part) in [
        ("backend_requirements", spec.backend_requirements),
        ("parameters", spec.parameters),
        ("return_values", spec.return_values),
        ("interim_results", spec.interim_results),
    ] {
        if let Some(part) = part {
            let json = json_from_struct("spec", part).map_err(|err| Error::invalid("spec", err.to_string()))?;
            object.insert(key.to_owned(), Value::Object(json));
        }
    }
    let size = serde_json::to_vec(&object).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
    if size > MAX_SPEC_BYTES {
        return Err(Error::invalid("spec", format!("is {size} bytes of json, over the limit of {MAX_SPEC_BYTES}")));
    }
    Ok(object)
}

/// Job parameters after validation.
struct Params {
    /// As given (validated), for the job record.
    given: JsonObject,
    shots: u32,
    seed: u64,
}

fn check_params(params: Option<prost_types::Struct>) -> Result<Params> {
    let given = match params {
        Some(params) => json_from_struct("params", params).map_err(|err| Error::invalid("params", err.to_string()))?,
        None => JsonObject::new(),
    };
    for key in given.keys() {
        if key != "shots" && key != "seed" {
            return Err(Error::invalid(
                "params",
                format!("unknown parameter `{}`, only `shots` and `seed` exist", quote(key)),
            ));
        }
    }
    let shots = match given.get("shots") {
        None => DEFAULT_SHOTS,
        Some(value) => match whole_number(value) {
            Some(n) if (1.0..=f64::from(MAX_SHOTS)).contains(&n) => n as u32,
            _ => return Err(Error::invalid("params.shots", format!("must be an integer from 1 to {MAX_SHOTS}"))),
        },
    };
    let seed = match given.get("seed") {
        None => rand::rng().random_range(0..=(1u64 << 53)),
        Some(value) => match whole_number(value) {
            Some(n) if (0.0..=MAX_EXACT_INTEGER).contains(&n) => n as u64,
            _ => return Err(Error::invalid("params.seed", "must be an integer from 0 to 2^53")),
        },
    };
    Ok(Params { given, shots, seed })
}

/// Returns a JSON number that has no fractional part.
fn whole_number(value: &Value) -> Option<f64> {
    let n = value.as_f64()?;
    (n.fract() == 0.0).then_some(n)
}

fn timestamp_millis(field: &'static str, timestamp: Option<prost_types::Timestamp>) -> Result<Option<i64>> {
    let Some(timestamp) = timestamp else {
        return Ok(None);
    };
    if !(0..=MAX_TIMESTAMP_SECONDS).contains(&timestamp.seconds) || !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err(Error::invalid(field, "must be a valid time between 1970 and 9999"));
    }
    Ok(Some(timestamp.seconds * 1000 + i64::from(timestamp.nanos / 1_000_000)))
}

// ---- response bounds ----

/// Returns the items in order up to the one that would take the page past [`MAX_PAGE_BYTES`];
/// the first item is always kept.
fn within_page_bytes<M: prost::Message>(
    items: impl Iterator<Item = std::result::Result<M, crate::store::StoreError>>,
) -> Result<Vec<M>> {
    let mut bytes = 0;
    let mut page = Vec::new();
    for item in items {
        let item = item?;
        // The repeated field's tag and length prefix: a few bytes more than the message.
        bytes += item.encoded_len() + 8;
        if bytes > MAX_PAGE_BYTES && !page.is_empty() {
            break;
        }
        page.push(item);
    }
    Ok(page)
}

/// Returns the `keep` most frequent outcomes of `counts` (ties by bit string).
fn most_frequent(counts: BTreeMap<String, u32>, keep: usize) -> HashMap<String, u32> {
    if counts.len() <= keep {
        return counts.into_iter().collect();
    }
    let mut ranked: Vec<(String, u32)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(keep);
    ranked.into_iter().collect()
}

// ---- ids and messages ----

fn random_suffix(length: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..length).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

/// Returns a program id: the name lowercased, with anything but letters and digits turned into
/// single dashes, cut to 48 characters, plus a random suffix.
fn program_id(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 48 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "program" } else { slug };
    format!("{slug}-{}", random_suffix(10))
}

/// Returns a job id: `c` and 19 random lowercase letters and digits.
fn job_id() -> String {
    format!("c{}", random_suffix(19))
}

/// Returns what an event says about a source: its size and digest, never its text.
fn source_summary(source: &str) -> Value {
    json!({"sourceBytes": source.len(), "sourceSha256": hex::encode(Sha256::digest(source.as_bytes()))})
}

/// Returns what an event says about a spec: its size and digest.
fn spec_summary(spec: &JsonObject) -> Value {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    json!({"specBytes": bytes.len(), "specSha256": hex::encode(Sha256::digest(&bytes))})
}

fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: millis.div_euclid(1000), nanos: (millis.rem_euclid(1000) * 1_000_000) as i32 }
}

fn millis_text(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn program_message(program: &ProgramRecord, with_source: bool) -> pb::Program {
    let part = |key: &str| match program.spec.get(key) {
        Some(Value::Object(object)) => Some(struct_from_json(object)),
        _ => None,
    };
    let spec = (!program.spec.is_empty()).then(|| pb::ProgramSpec {
        backend_requirements: part("backend_requirements"),
        parameters: part("parameters"),
        return_values: part("return_values"),
        interim_results: part("interim_results"),
    });
    pb::Program {
        id: program.id.clone(),
        name: program.name.clone(),
        description: program.description.clone(),
        source: if with_source { program.source.clone() } else { String::new() },
        max_execution_time: program.max_execution_time,
        spec,
        is_public: program.is_public,
        create_time: Some(timestamp(program.create_millis)),
        update_time: Some(timestamp(program.update_millis)),
        num_qubits: program.num_qubits,
    }
}

fn job_status(status: JobStatus) -> pb::JobStatus {
    match status {
        JobStatus::Queued => pb::JobStatus::Queued,
        JobStatus::Running => pb::JobStatus::Running,
        JobStatus::Completed => pb::JobStatus::Completed,
        JobStatus::Failed => pb::JobStatus::Failed,
        JobStatus::Cancelled => pb::JobStatus::Cancelled,
    }
}

fn job_message(job: &JobRecord) -> pb::Job {
    pb::Job {
        id: job.id.clone(),
        program_id: job.program_id.clone(),
        backend: job.backend.clone(),
        state: Some(pb::JobState { status: job_status(job.status) as i32, reason: job.reason.clone() }),
        params: Some(struct_from_json(&job.params)),
        log_level: job.log_level.as_str().to_owned(),
        session_id: job.session_id.clone(),
        tags: job.tags.clone(),
        create_time: Some(timestamp(job.create_millis)),
        start_time: job.start_millis.map(timestamp),
        end_time: job.end_millis.map(timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_ids_are_slugs_with_a_suffix() {
        let id = program_id("My Bell Pair!");
        assert!(id.starts_with("my-bell-pair-"), "{id}");
        assert_eq!(id.len(), "my-bell-pair-".len() + 10);
        assert!(program_id("ü:ü").starts_with("program-"));
        assert!(program_id(&"x".repeat(200)).len() <= 48 + 11);
        assert_eq!(job_id().len(), 20);
    }

    #[test]
    fn params_accept_shots_and_seed_only() {
        let parse = |json: Value| check_params(Some(struct_from_json(json.as_object().unwrap())));
        let params = parse(json!({"shots": 10, "seed": 7})).unwrap();
        assert_eq!((params.shots, params.seed), (10, 7));
        assert_eq!(parse(json!({})).unwrap().shots, DEFAULT_SHOTS);
        for (bad, field) in [
            (json!({"shots": 0}), "params.shots"),
            (json!({"shots": 100_001}), "params.shots"),
            (json!({"shots": 1.5}), "params.shots"),
            (json!({"shots": "10"}), "params.shots"),
            (json!({"seed": -1}), "params.seed"),
            (json!({"iterations": 3}), "params"),
        ] {
            let err = parse(bad.clone()).err().unwrap();
            assert!(matches!(&err, Error::InvalidArgument { field: f, .. } if *f == field), "{bad} -> {err}");
        }
    }

    #[test]
    fn pages_stop_before_their_byte_bound_and_interim_counts_keep_the_most_frequent() {
        let big = pb::JobLogs { job_id: String::new(), logs: "x".repeat(MAX_PAGE_BYTES / 3) };
        assert_eq!(within_page_bytes(std::iter::repeat_with(|| Ok(big.clone())).take(10)).unwrap().len(), 2);
        let huge = pb::JobLogs { job_id: String::new(), logs: "x".repeat(MAX_PAGE_BYTES * 2) };
        assert_eq!(
            within_page_bytes(std::iter::repeat_with(|| Ok(huge.clone())).take(3)).unwrap().len(),
            1,
            "one item always fits"
        );
        let counts: BTreeMap<String, u32> = (0..10u32).map(|n| (format!("{n:04b}"), n)).collect();
        let kept = most_frequent(counts, 3);
        assert_eq!(kept.len(), 3);
        assert_eq!(kept.get("1001"), Some(&9));
        assert_eq!(kept.get("0111"), Some(&7));
    }

    #[test]
    fn paging_and_time_filters_are_checked() {
        assert_eq!(check_page(0, 0).unwrap(), (100, 0));
        assert_eq!(check_page(1000, 5).unwrap(), (1000, 5));
        assert!(check_page(-1, 0).is_err());
        assert!(check_page(1001, 0).is_err());
        assert!(check_page(10, -1).is_err());
        let bad = prost_types::Timestamp { seconds: 1, nanos: -5 };
        assert!(timestamp_millis("created_after", Some(bad)).is_err());
        let good = prost_types::Timestamp { seconds: 2, nanos: 5_000_000 };
        assert_eq!(timestamp_millis("created_after", Some(good)).unwrap(), Some(2005));
    }
}
