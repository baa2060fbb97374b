//! Records turned into what callers and events see: the answers' protobuf messages, their
//! timestamps, and the summaries events keep of sources and specs.

use qtrail_cadf::JsonObject;
use qtrail_cadf::proto::struct_from_json;
use qtrail_proto::qtrail::runtime::v1 as pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::store::jobs::{JobRecord, JobStatus};
use crate::store::programs::ProgramRecord;

/// Returns what an event says about a source: its size and digest, never its text.
pub(super) fn source_summary(source: &str) -> Value {
    json!({"sourceBytes": source.len(), "sourceSha256": hex::encode(Sha256::digest(source.as_bytes()))})
}

/// Returns what an event says about a spec: its size and digest.
pub(super) fn spec_summary(spec: &JsonObject) -> Value {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    json!({"specBytes": bytes.len(), "specSha256": hex::encode(Sha256::digest(&bytes))})
}

pub(super) fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: millis.div_euclid(1000), nanos: (millis.rem_euclid(1000) * 1_000_000) as i32 }
}

pub(super) fn millis_text(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub(super) fn program_message(program: &ProgramRecord, with_source: bool) -> pb::Program {
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

pub(super) fn job_message(job: &JobRecord) -> pb::Job {
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
