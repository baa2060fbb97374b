//! Jobs: their records, the program source each runs (a snapshot taken at creation, so later
//! program changes do not affect it), results, interim results and logs, and an index of each
//! account's jobs by creation time.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Reader, Result, decode, encode};

/// id → JSON [`JobRecord`].
const JOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("jobs");
/// id → the OpenQASM source the job runs.
const SOURCES: TableDefinition<'_, &str, &str> = TableDefinition::new("job_sources");
/// (account, create time, id) → (): an account's jobs in creation order.
const BY_ACCOUNT: TableDefinition<'_, (&str, i64, &str), ()> = TableDefinition::new("jobs_by_account");
/// id → JSON [`JobResults`].
const RESULTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("job_results");
/// id → JSON list of [`InterimResult`].
const INTERIM: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("job_interim_results");
/// id → the job's log, one line per entry.
const LOGS: TableDefinition<'_, &str, &str> = TableDefinition::new("job_logs");

/// Lifecycle of a job: QUEUED → RUNNING → COMPLETED | FAILED | CANCELLED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Waiting for an executor.
    Queued,
    /// Executing.
    Running,
    /// Finished with results.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled by its owner or for running too long.
    Cancelled,
}

impl JobStatus {
    /// Returns true for COMPLETED, FAILED and CANCELLED.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }

    /// Returns the status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "QUEUED",
            JobStatus::Running => "RUNNING",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Levels of a job's log lines, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogLevel {
    /// Detail.
    Debug,
    /// Progress.
    Info,
    /// Something odd.
    Warning,
    /// A failure.
    Error,
    /// A failure of the service.
    Critical,
}

impl LogLevel {
    /// Returns the level as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
            LogLevel::Critical => "CRITICAL",
        }
    }
}

impl FromStr for LogLevel {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "DEBUG" => Ok(LogLevel::Debug),
            "INFO" => Ok(LogLevel::Info),
            "WARNING" => Ok(LogLevel::Warning),
            "ERROR" => Ok(LogLevel::Error),
            "CRITICAL" => Ok(LogLevel::Critical),
            _ => Err(()),
        }
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Server-assigned id.
    pub id: String,
    /// Program it runs.
    pub program_id: String,
    /// Owning account.
    pub account: String,
    /// Backend.
    pub backend: String,
    /// Status.
    pub status: JobStatus,
    /// Why it failed or was cancelled.
    pub reason: String,
    /// Parameters as given, e.g. `{"shots": 1024}`.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Shots to take.
    pub shots: u32,
    /// Seed of the sampling (given, or picked at creation so a re-run gives the same counts).
    pub seed: u64,
    /// Lowest level of log lines kept.
    pub log_level: LogLevel,
    /// Session.
    pub session_id: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Longest it may run, in seconds.
    pub max_execution_time: u32,
    /// Queue time, Unix milliseconds.
    pub create_millis: i64,
    /// Start time, Unix milliseconds.
    pub start_millis: Option<i64>,
    /// End time, Unix milliseconds.
    pub end_millis: Option<i64>,
}

/// Final results of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResults {
    /// Shots taken.
    pub shots: u32,
    /// Counts per bit string.
    pub counts: BTreeMap<String, u32>,
    /// Seed used.
    pub seed: u64,
}

/// Counts after some of a job's shots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterimResult {
    /// Shots taken so far.
    pub shots_done: u32,
    /// Counts so far.
    pub counts: BTreeMap<String, u32>,
    /// When it was published, Unix milliseconds.
    pub millis: i64,
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(JOBS)?;
    txn.open_table(SOURCES)?;
    txn.open_table(BY_ACCOUNT)?;
    txn.open_table(RESULTS)?;
    txn.open_table(INTERIM)?;
    txn.open_table(LOGS)?;
    Ok(())
}

/// Stores a new job and the source it runs.
///
/// # Errors
/// Database failures.
pub fn insert(txn: &WriteTransaction, record: &JobRecord, source: &str) -> Result<()> {
    put(txn, record)?;
    txn.open_table(SOURCES)?.insert(record.id.as_str(), source)?;
    txn.open_table(BY_ACCOUNT)?.insert((record.account.as_str(), record.create_millis, record.id.as_str()), ())?;
    Ok(())
}

/// Writes a job's record.
///
/// # Errors
/// Database failures.
pub fn put(txn: &WriteTransaction, record: &JobRecord) -> Result<()> {
    txn.open_table(JOBS)?.insert(record.id.as_str(), encode(record).as_slice())?;
    Ok(())
}

/// Returns the job with this id.
///
/// # Errors
/// Database failures and corrupt records.
pub fn get(txn: &impl Reader, id: &str) -> Result<Option<JobRecord>> {
    let table = txn.open(JOBS)?;
    let Some(value) = table.get(id)? else {
        return Ok(None);
    };
    decode("jobs", value.value()).map(Some)
}

/// Returns the source a job runs.
///
/// # Errors
/// Database failures.
pub fn source(txn: &impl Reader, id: &str) -> Result<Option<String>> {
    Ok(txn.open(SOURCES)?.get(id)?.map(|source| source.value().to_owned()))
}

/// Deletes a job and everything it produced.
///
/// # Errors
/// Database failures.
pub fn delete(txn: &WriteTransaction, record: &JobRecord) -> Result<()> {
    let id = record.id.as_str();
    txn.open_table(JOBS)?.remove(id)?;
    txn.open_table(SOURCES)?.remove(id)?;
    txn.open_table(BY_ACCOUNT)?.remove((record.account.as_str(), record.create_millis, id))?;
    txn.open_table(RESULTS)?.remove(id)?;
    txn.open_table(INTERIM)?.remove(id)?;
    txn.open_table(LOGS)?.remove(id)?;
    Ok(())
}

/// Returns an account's jobs created in `[after, before)` (either bound optional), oldest or
/// newest first.
///
/// # Errors
/// Database failures and corrupt records.
pub fn list(
    txn: &impl Reader,
    account: &str,
    after: Option<i64>,
    before: Option<i64>,
    ascending: bool,
) -> Result<Vec<JobRecord>> {
    let index = txn.open(BY_ACCOUNT)?;
    let jobs = txn.open(JOBS)?;
    let start = (account, after.unwrap_or(i64::MIN), "");
    let end = (account, before.unwrap_or(i64::MAX), "");
    let mut records = Vec::new();
    for entry in index.range(start..end)? {
        let (key, _) = entry?;
        let (_, _, id) = key.value();
        if let Some(value) = jobs.get(id)? {
            records.push(decode::<JobRecord>("jobs", value.value())?);
        }
    }
    if !ascending {
        records.reverse();
    }
    Ok(records)
}

/// Returns every job that is QUEUED or RUNNING, oldest first.
///
/// # Errors
/// Database failures and corrupt records.
pub fn unfinished(txn: &WriteTransaction) -> Result<Vec<JobRecord>> {
    let table = txn.open_table(JOBS)?;
    let mut records = Vec::new();
    for entry in table.iter()? {
        let (_, value) = entry?;
        let record: JobRecord = decode("jobs", value.value())?;
        if !record.status.is_final() {
            records.push(record);
        }
    }
    records.sort_by(|a, b| a.create_millis.cmp(&b.create_millis).then_with(|| a.id.cmp(&b.id)));
    Ok(records)
}

/// Returns a job's final results.
///
/// # Errors
/// Database failures and corrupt records.
pub fn results(txn: &impl Reader, id: &str) -> Result<Option<JobResults>> {
    let table = txn.open(RESULTS)?;
    let Some(value) = table.get(id)? else {
        return Ok(None);
    };
    decode("job_results", value.value()).map(Some)
}

/// Stores a job's final results.
///
/// # Errors
/// Database failures.
pub fn put_results(txn: &WriteTransaction, id: &str, results: &JobResults) -> Result<()> {
    txn.open_table(RESULTS)?.insert(id, encode(results).as_slice())?;
    Ok(())
}

/// Returns a job's interim results, oldest first.
///
/// # Errors
/// Database failures and corrupt records.
pub fn interim(txn: &impl Reader, id: &str) -> Result<Vec<InterimResult>> {
    let table = txn.open(INTERIM)?;
    let Some(value) = table.get(id)? else {
        return Ok(Vec::new());
    };
    decode("job_interim_results", value.value())
}

/// Appends an interim result.
///
/// # Errors
/// Database failures and corrupt records.
pub fn push_interim(txn: &WriteTransaction, id: &str, result: InterimResult) -> Result<()> {
    let mut all = interim(txn, id)?;
    all.push(result);
    txn.open_table(INTERIM)?.insert(id, encode(&all).as_slice())?;
    Ok(())
}

/// Forgets a job's results and interim results (before it runs again).
///
/// # Errors
/// Database failures.
pub fn clear_outputs(txn: &WriteTransaction, id: &str) -> Result<()> {
    txn.open_table(RESULTS)?.remove(id)?;
    txn.open_table(INTERIM)?.remove(id)?;
    Ok(())
}

/// Returns a job's log.
///
/// # Errors
/// Database failures.
pub fn logs(txn: &impl Reader, id: &str) -> Result<String> {
    Ok(txn.open(LOGS)?.get(id)?.map(|logs| logs.value().to_owned()).unwrap_or_default())
}

/// Appends a line to a job's log if `level` is at or above the job's log level.
///
/// # Errors
/// Database failures.
pub fn log(txn: &WriteTransaction, job: &JobRecord, level: LogLevel, message: &str) -> Result<()> {
    if level < job.log_level {
        return Ok(());
    }
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut text = logs(txn, &job.id)?;
    text.push_str(&format!("{time} {} {message}\n", level.as_str()));
    txn.open_table(LOGS)?.insert(job.id.as_str(), text.as_str())?;
    Ok(())
}
