//! The `JobService` calls: queueing, listing, reading, cancelling and deleting jobs, and
//! reading what they produced (results, interim results, logs).

use std::collections::HashMap;
use std::ops::Bound;

use qtrail_cadf::Action;
use qtrail_proto::qtrail::runtime::v1 as pb;
use serde_json::Value;

use super::bounds::{MAX_INTERIM_OUTCOMES, MAX_INTERIM_RESULTS, most_frequent, within_page_bytes};
use super::ids::job_id;
use super::messages::{job_message, millis_text, timestamp};
use super::validation::{
    MAX_ID_BYTES, MAX_PAGE_TOKEN_CHARS, MAX_RESULTS_PAGE, check_page, check_params, check_tags, timestamp_millis,
};
use super::visibility::{owned_job, visible_program_for_job};
use super::{Answer, BACKEND, RuntimeService};
use crate::audit::AuditRecord;
use crate::auth::CallContext;
use crate::error::{Error, quote};
use crate::store::jobs::{self, JobRecord, JobStatus, LogLevel};
use crate::store::now_millis;

impl RuntimeService {
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
