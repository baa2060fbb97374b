//! `qtrail jobs run | list | get | results | interim | logs | cancel | delete`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use qtrail_cadf::JsonObject;
use qtrail_cadf::proto::{json_from_struct, struct_from_json};
use qtrail_proto::qtrail::runtime::v1::{
    CancelJobRequest, CreateJobRequest, DeleteJobRequest, GetJobInterimResultsRequest, GetJobLogsRequest,
    GetJobRequest, GetJobResultsRequest, Job, JobStatus, ListJobsRequest, job_service_client::JobServiceClient,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::cli::{JobListArgs, JobRunArgs, JobsCommand, OutputFormat};
use crate::connect::{Settings, authorized};
use crate::error::CliError;
use crate::output::{Table, write_fields, write_json};
use crate::timearg::{format_time, parse_time};

/// How often `jobs run --wait` asks for the job's state. Each poll is a GetJob, which the
/// runtime audits as a `job.read`; twice a second keeps that trail short.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Largest answer the command accepts, above the 4 MiB default: the runtime bounds its
/// answers (list pages at 2 MiB, result pages at ~1.2 MB, a job's log), with room to spare.
pub(crate) const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// What every `jobs` subcommand works on: the runtime client, the API key and the output format.
struct Session {
    client: JobServiceClient<Channel>,
    key: String,
    output: OutputFormat,
}

/// Runs one `jobs` subcommand.
///
/// # Errors
/// Connection, argument and RPC errors.
pub async fn run(command: JobsCommand, settings: &Settings, out: &mut dyn Write) -> Result<(), CliError> {
    let key = settings.api_key()?;
    let client = JobServiceClient::new(settings.runtime_channel().await?).max_decoding_message_size(MAX_ANSWER_BYTES);
    let session = Session { client, key, output: settings.output };
    match command {
        JobsCommand::Run(args) => create(session, args, out).await,
        JobsCommand::Get { id } => get(session, id, out).await,
        JobsCommand::Cancel { id } => cancel(session, id, out).await,
        JobsCommand::Delete { id } => delete(session, id, out).await,
        JobsCommand::Results { id } => results(session, id, out).await,
        JobsCommand::Interim { id } => interim(session, id, out).await,
        JobsCommand::Logs { id } => logs(session, id, out).await,
        JobsCommand::List(args) => list(session, args, out).await,
    }
}

/// Creates a job of `args.program_id`; with `--wait`, waits for its final state.
async fn create(session: Session, args: JobRunArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    let mut params = JsonObject::new();
    if let Some(shots) = args.shots {
        params.insert("shots".into(), shots.into());
    }
    if let Some(seed) = args.seed {
        params.insert("seed".into(), seed.into());
    }
    let request = CreateJobRequest {
        program_id: args.program_id,
        params: Some(struct_from_json(&params)),
        backend: String::new(),
        log_level: args.log_level.unwrap_or_default(),
        session_id: args.session_id.unwrap_or_default(),
        tags: args.tags,
    };
    let mut job = client.create_job(authorized(request, &key)?).await?.into_inner();
    if args.wait {
        job = wait_for_final_state(&mut client, &key, job).await?;
    }
    print_job(output, &job, out)
}

/// Prints one job.
async fn get(session: Session, id: String, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    let job = client.get_job(authorized(GetJobRequest { id }, &key)?).await?.into_inner();
    print_job(output, &job, out)
}

/// Cancels a job and prints it.
async fn cancel(session: Session, id: String, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    let job = client.cancel_job(authorized(CancelJobRequest { id }, &key)?).await?.into_inner();
    print_job(output, &job, out)
}

/// Deletes a job.
async fn delete(session: Session, id: String, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    client.delete_job(authorized(DeleteJobRequest { id: id.clone() }, &key)?).await?;
    match output {
        OutputFormat::Json => write_json(out, &json!({ "deleted": id }))?,
        OutputFormat::Table => writeln!(out, "deleted job {id}")?,
    }
    Ok(())
}

/// Prints a job's counts, every page of them.
async fn results(session: Session, id: String, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    // Counts come in pages; gather them all (at most 100,000 outcomes, a few MB).
    let mut page_token = String::new();
    let mut all = BTreeMap::new();
    let results = loop {
        let request = GetJobResultsRequest { id: id.clone(), page_size: 0, page_token };
        let mut page = client.get_job_results(authorized(request, &key)?).await?.into_inner();
        all.extend(page.counts.drain());
        if page.next_page_token.is_empty() {
            break page;
        }
        page_token = page.next_page_token;
    };
    let counts: BTreeMap<&String, &u32> = all.iter().collect();
    if output == OutputFormat::Json {
        let json = json!({ "jobId": results.job_id, "shots": results.shots, "seed": results.seed, "counts": counts });
        write_json(out, &json)?;
        return Ok(());
    }
    let mut table = Table::new(&["OUTCOME", "COUNT", "PROBABILITY"]);
    for (outcome, count) in counts {
        let probability = f64::from(*count) / f64::from(results.shots.max(1));
        table.row(vec![outcome.clone(), count.to_string(), format!("{probability:.4}")]);
    }
    table.write(out)?;
    writeln!(out, "{} shots, seed {}", results.shots, results.seed)?;
    Ok(())
}

/// Prints a job's interim results.
async fn interim(session: Session, id: String, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    let interim =
        client.get_job_interim_results(authorized(GetJobInterimResultsRequest { id }, &key)?).await?.into_inner();
    let items: Vec<Value> = interim
        .results
        .iter()
        .map(|result| {
            let counts: BTreeMap<&String, &u32> = result.counts.iter().collect();
            json!({ "shotsDone": result.shots_done, "counts": counts, "time": format_time(result.time.as_ref()) })
        })
        .collect();
    if output == OutputFormat::Json {
        write_json(out, &json!({ "jobId": interim.job_id, "results": items }))?;
        return Ok(());
    }
    let mut table = Table::new(&["TIME", "SHOTS DONE", "COUNTS"]);
    for item in &items {
        table.row(vec![
            item["time"].as_str().unwrap_or_default().to_owned(),
            item["shotsDone"].to_string(),
            item["counts"].to_string(),
        ]);
    }
    table.write(out)?;
    Ok(())
}

/// Prints a job's log.
async fn logs(session: Session, id: String, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    let logs = client.get_job_logs(authorized(GetJobLogsRequest { id }, &key)?).await?.into_inner();
    match output {
        OutputFormat::Json => write_json(out, &json!({ "jobId": logs.job_id, "logs": logs.logs }))?,
        OutputFormat::Table => {
            for line in logs.logs.lines() {
                writeln!(out, "{}", qtrail_cadf::text::escape_control(line))?;
            }
        }
    }
    Ok(())
}

/// Prints a page of jobs matching `args`.
async fn list(session: Session, args: JobListArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, key, output } = session;
    let now = chrono::Utc::now();
    let pending = match (args.pending, args.finished) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let request = ListJobsRequest {
        limit: args.page.limit,
        offset: args.page.offset,
        pending,
        program_id: args.program.unwrap_or_default(),
        tags: args.tags,
        created_after: args.created_after.map(|t| parse_time("--created-after", &t, now)).transpose()?,
        created_before: args.created_before.map(|t| parse_time("--created-before", &t, now)).transpose()?,
        ascending: args.ascending,
    };
    let list = client.list_jobs(authorized(request, &key)?).await?.into_inner();
    if output == OutputFormat::Json {
        let items: Vec<Value> = list.jobs.iter().map(job_json).collect();
        write_json(out, &json!({ "jobs": items, "count": list.count }))?;
        return Ok(());
    }
    let mut table = Table::new(&["ID", "PROGRAM", "STATUS", "CREATED", "TAGS"]);
    for job in &list.jobs {
        table.row(vec![
            job.id.clone(),
            job.program_id.clone(),
            status_name(job),
            format_time(job.create_time.as_ref()),
            job.tags.join(","),
        ]);
    }
    table.write(out)?;
    writeln!(out, "{} of {} jobs", list.jobs.len(), list.count)?;
    Ok(())
}

async fn wait_for_final_state(
    client: &mut JobServiceClient<Channel>,
    key: &str,
    mut job: Job,
) -> Result<Job, CliError> {
    while !is_final(&job) {
        tokio::time::sleep(WAIT_POLL).await;
        job = client.get_job(authorized(GetJobRequest { id: job.id.clone() }, key)?).await?.into_inner();
    }
    Ok(job)
}

fn status(job: &Job) -> JobStatus {
    job.state.as_ref().and_then(|state| JobStatus::try_from(state.status).ok()).unwrap_or(JobStatus::Unspecified)
}

fn is_final(job: &Job) -> bool {
    matches!(status(job), JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
}

/// Returns the job's status as the API spells it, e.g. `COMPLETED`.
fn status_name(job: &Job) -> String {
    status(job).as_str_name().trim_start_matches("JOB_STATUS_").to_owned()
}

fn print_job(output: OutputFormat, job: &Job, out: &mut dyn Write) -> Result<(), CliError> {
    match output {
        OutputFormat::Json => write_json(out, &job_json(job))?,
        OutputFormat::Table => {
            let reason = job.state.as_ref().map(|state| state.reason.clone()).unwrap_or_default();
            let params = job_json(job)["params"].to_string();
            write_fields(
                out,
                &[
                    ("id", job.id.clone()),
                    ("program", job.program_id.clone()),
                    ("status", status_name(job)),
                    ("reason", reason),
                    ("backend", job.backend.clone()),
                    ("params", params),
                    ("tags", job.tags.join(",")),
                    ("created", format_time(job.create_time.as_ref())),
                    ("started", format_time(job.start_time.as_ref())),
                    ("ended", format_time(job.end_time.as_ref())),
                ],
            )?;
        }
    }
    Ok(())
}

/// Returns a job as JSON (camelCase, as grpcurl would print it).
pub fn job_json(job: &Job) -> Value {
    let params = job.params.clone().and_then(|p| json_from_struct("params", p).ok()).map(Value::Object);
    json!({
        "id": job.id,
        "programId": job.program_id,
        "backend": job.backend,
        "state": {
            "status": status_name(job),
            "reason": job.state.as_ref().map(|state| state.reason.clone()).unwrap_or_default(),
        },
        "params": params.unwrap_or(Value::Null),
        "logLevel": job.log_level,
        "sessionId": job.session_id,
        "tags": job.tags,
        "createTime": format_time(job.create_time.as_ref()),
        "startTime": format_time(job.start_time.as_ref()),
        "endTime": format_time(job.end_time.as_ref()),
    })
}
