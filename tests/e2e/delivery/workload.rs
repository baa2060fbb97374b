//! The client side of the fault tests: a mixed workload of every runtime RPC, refused calls
//! included, in which each call carries its own `x-correlation-id`, and the history of what
//! each call got back.
//!
//! What a call got back decides what the checker expects of the collector (Jepsen's
//! total-queue method): an answer, OK or a refusal the runtime audits, promises exactly one
//! stored event; `UNAVAILABLE audit outbox full` promises none (such refusals cannot be
//! audited); no answer at all (the runtime died, the connection broke) promises nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qtrail_cadf::proto::struct_from_json;
use qtrail_proto::qtrail::runtime::v1 as pb;
use qtrail_proto::qtrail::runtime::v1::job_service_client::JobServiceClient;
use qtrail_proto::qtrail::runtime::v1::program_service_client::ProgramServiceClient;
use qtrail_testkit::wait_until;
use serde_json::json;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::servers::{ALICE_KEY, BOB_KEY, lazy_channel};

/// A two-qubit Bell circuit: small enough that jobs finish within a few calls.
const BELL: &str =
    "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n";

/// How long a worker waits for a runtime that stopped answering to serve again.
const RUNTIME_BACK: Duration = Duration::from_secs(60);

/// Calls in one turn of the workload; every RPC of both services comes up once per turn.
pub const TURN: u64 = 18;

/// What a call got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered OK: its event must be stored, once.
    Ok,
    /// Answered with a refusal the runtime audits (bad argument, not found, …): its event
    /// must be stored, once.
    Refused(Code),
    /// Refused UNAVAILABLE because the audit event could not be made durable: nothing happened
    /// and no event may be stored.
    Unaudited,
    /// No answer: the event may or may not exist.
    Unknown,
}

impl Outcome {
    /// Returns what `result` says about the call's event.
    pub fn of<T>(result: &Result<T, Status>) -> Self {
        let Err(status) = result else {
            return Outcome::Ok;
        };
        match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Unauthenticated => Outcome::Refused(status.code()),
            // The runtime's own words for "refused, and nothing recorded" (docs/runtime.md).
            Code::Unavailable if matches!(status.message(), "audit outbox full" | "audit log unavailable") => {
                Outcome::Unaudited
            }
            _ => Outcome::Unknown,
        }
    }

    /// Returns whether the runtime answered, so that the call's event must be stored.
    pub fn acknowledged(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Refused(_))
    }
}

/// One call and what it got back.
#[derive(Debug, Clone)]
pub struct Call {
    /// The call's `x-correlation-id`, which its event carries.
    pub correlation_id: String,
    /// The RPC.
    pub rpc: &'static str,
    /// What it got back.
    pub outcome: Outcome,
}

/// Every call of a test, in the order they completed. Clones share the list.
#[derive(Debug, Clone, Default)]
pub struct History {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl History {
    /// Returns a copy of the calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("history lock").clone()
    }

    /// Returns how many calls completed.
    pub fn len(&self) -> usize {
        self.calls.lock().expect("history lock").len()
    }

    fn record(&self, call: Call) {
        self.calls.lock().expect("history lock").push(call);
    }
}

/// One client of the runtime, cycling through every RPC.
#[derive(Debug)]
pub struct Client {
    name: String,
    url: String,
    programs: ProgramServiceClient<Channel>,
    jobs: JobServiceClient<Channel>,
    history: History,
    sequence: u64,
    /// Programs this client created and has not deleted, oldest first.
    own_programs: VecDeque<String>,
    /// Jobs this client created and has not deleted, oldest first.
    own_jobs: VecDeque<String>,
}

impl Client {
    /// Returns a client named `name` (the prefix of its correlation ids and program names) of
    /// the runtime at `url`, recording into `history`.
    pub fn new(name: &str, url: &str, history: History) -> Self {
        let channel = lazy_channel(url);
        Self {
            name: name.to_owned(),
            url: url.to_owned(),
            programs: ProgramServiceClient::new(channel.clone()),
            jobs: JobServiceClient::new(channel),
            history,
            sequence: 0,
            own_programs: VecDeque::new(),
            own_jobs: VecDeque::new(),
        }
    }

    /// Returns a request as `key` (none: unauthenticated) with a new correlation id.
    fn request<T>(&mut self, message: T, key: Option<&str>) -> (Request<T>, String) {
        self.sequence += 1;
        let correlation_id = format!("{}-{}", self.name, self.sequence);
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        if let Some(key) = key {
            metadata.insert("authorization", format!("Bearer {key}").parse().expect("printable key"));
        }
        metadata.insert("x-correlation-id", correlation_id.parse().expect("printable correlation id"));
        (request, correlation_id)
    }

    fn record<T>(&self, rpc: &'static str, correlation_id: String, result: &Result<T, Status>) -> Outcome {
        let outcome = Outcome::of(result);
        self.history.record(Call { correlation_id, rpc, outcome });
        outcome
    }

    /// Returns an id this client owns, or one that exists nowhere (the call is then refused
    /// NOT_FOUND, which is audited too).
    fn newest(ids: &VecDeque<String>) -> String {
        ids.back().cloned().unwrap_or_else(|| "missing".to_owned())
    }

    /// Makes the next call of the cycle and returns what it got back.
    pub async fn step(&mut self) -> Outcome {
        let turn = self.sequence % TURN;
        let program = Self::newest(&self.own_programs);
        let job = Self::newest(&self.own_jobs);
        match turn {
            0..=3 | 12 | 14 | 15 => self.program_call(turn, program).await,
            4 => {
                let params = struct_from_json(json!({"shots": 16, "seed": self.sequence}).as_object().expect("object"));
                let message = pb::CreateJobRequest { program_id: program, params: Some(params), ..Default::default() };
                let (request, id) = self.request(message, Some(ALICE_KEY));
                let result = self.jobs.create_job(request).await;
                if let Ok(created) = &result {
                    self.own_jobs.push_back(created.get_ref().id.clone());
                }
                self.record("CreateJob", id, &result)
            }
            5..=11 | 13 | 16 => self.job_call(turn, job).await,
            _ => self.delete_an_older_program().await,
        }
    }

    /// Makes the call of `turn` on the program service about `program` (the newest one).
    async fn program_call(&mut self, turn: u64, program: String) -> Outcome {
        match turn {
            0 => {
                let name = format!("{}-program-{}", self.name, self.sequence);
                let message = pb::CreateProgramRequest { name, source: BELL.to_owned(), ..Default::default() };
                let (request, id) = self.request(message, Some(ALICE_KEY));
                let result = self.programs.create_program(request).await;
                if let Ok(created) = &result {
                    self.own_programs.push_back(created.get_ref().id.clone());
                }
                self.record("CreateProgram", id, &result)
            }
            1 => {
                let (request, id) = self.request(pb::GetProgramRequest { id: program }, Some(ALICE_KEY));
                let result = self.programs.get_program(request).await;
                self.record("GetProgram", id, &result)
            }
            2 => {
                let (request, id) = self
                    .request(pb::ListProgramsRequest { limit: 5, offset: 0, ..Default::default() }, Some(ALICE_KEY));
                let result = self.programs.list_programs(request).await;
                self.record("ListPrograms", id, &result)
            }
            3 => {
                let description = Some(format!("updated by call {}", self.sequence));
                let message = pb::UpdateProgramRequest { id: program, description, ..Default::default() };
                let (request, id) = self.request(message, Some(ALICE_KEY));
                let result = self.programs.update_program(request).await;
                self.record("UpdateProgram", id, &result)
            }
            12 => {
                // Another account's private program: NOT_FOUND.
                let (request, id) = self.request(pb::GetProgramRequest { id: program }, Some(BOB_KEY));
                let result = self.programs.get_program(request).await;
                self.record("GetProgram", id, &result)
            }
            14 => {
                let message = pb::CreateProgramRequest {
                    name: format!("{}-broken-{}", self.name, self.sequence),
                    source: "OPENQASM 2.0;\nqreg q[1];\nfrobnicate q[0];\n".to_owned(),
                    ..Default::default()
                };
                let (request, id) = self.request(message, Some(ALICE_KEY));
                let result = self.programs.create_program(request).await;
                self.record("CreateProgram", id, &result)
            }
            _ => {
                let (request, id) = self.request(pb::UpdateProgramRequest { id: program, ..Default::default() }, None);
                let result = self.programs.update_program(request).await;
                self.record("UpdateProgram", id, &result)
            }
        }
    }

    /// Makes the call of `turn` on the job service about `job` (the newest one).
    async fn job_call(&mut self, turn: u64, job: String) -> Outcome {
        match turn {
            5 => {
                let (request, id) = self.request(pb::GetJobRequest { id: job }, Some(ALICE_KEY));
                let result = self.jobs.get_job(request).await;
                self.record("GetJob", id, &result)
            }
            6 => {
                let message = pb::ListJobsRequest { limit: 5, ..Default::default() };
                let (request, id) = self.request(message, Some(ALICE_KEY));
                let result = self.jobs.list_jobs(request).await;
                self.record("ListJobs", id, &result)
            }
            7 => {
                let (request, id) = self.request(pb::GetJobInterimResultsRequest { id: job }, Some(ALICE_KEY));
                let result = self.jobs.get_job_interim_results(request).await;
                self.record("GetJobInterimResults", id, &result)
            }
            8 => {
                let (request, id) =
                    self.request(pb::GetJobResultsRequest { id: job, ..Default::default() }, Some(ALICE_KEY));
                let result = self.jobs.get_job_results(request).await;
                self.record("GetJobResults", id, &result)
            }
            9 => {
                let (request, id) = self.request(pb::GetJobLogsRequest { id: job }, Some(ALICE_KEY));
                let result = self.jobs.get_job_logs(request).await;
                self.record("GetJobLogs", id, &result)
            }
            10 => {
                // The job has usually finished: FAILED_PRECONDITION, audited like a success.
                let (request, id) = self.request(pb::CancelJobRequest { id: job }, Some(ALICE_KEY));
                let result = self.jobs.cancel_job(request).await;
                self.record("CancelJob", id, &result)
            }
            11 => {
                let oldest = self.own_jobs.front().cloned().unwrap_or_else(|| "missing".to_owned());
                let (request, id) = self.request(pb::DeleteJobRequest { id: oldest }, Some(ALICE_KEY));
                let result = self.jobs.delete_job(request).await;
                if result.is_ok() {
                    self.own_jobs.pop_front();
                }
                self.record("DeleteJob", id, &result)
            }
            13 => {
                let (request, id) = self.request(pb::ListJobsRequest::default(), None);
                let result = self.jobs.list_jobs(request).await;
                self.record("ListJobs", id, &result)
            }
            _ => {
                let (request, id) = self.request(pb::DeleteJobRequest { id: job }, Some(BOB_KEY));
                let result = self.jobs.delete_job(request).await;
                self.record("DeleteJob", id, &result)
            }
        }
    }

    /// Keeps one program to run jobs on; deletes the older ones.
    async fn delete_an_older_program(&mut self) -> Outcome {
        let oldest = match self.own_programs.len() {
            0 | 1 => "missing".to_owned(),
            _ => self.own_programs.front().cloned().unwrap_or_default(),
        };
        let (request, id) = self.request(pb::DeleteProgramRequest { id: oldest }, Some(ALICE_KEY));
        let result = self.programs.delete_program(request).await;
        if result.is_ok() {
            self.own_programs.pop_front();
        }
        self.record("DeleteProgram", id, &result)
    }

    /// Makes one `ListPrograms` call and returns what it got back: the cheapest call there is,
    /// for probing whether the runtime takes calls.
    pub async fn probe(&mut self) -> Outcome {
        let (request, id) =
            self.request(pb::ListProgramsRequest { limit: 1, offset: 0, ..Default::default() }, Some(ALICE_KEY));
        let result = self.programs.list_programs(request).await;
        self.record("ListPrograms", id, &result)
    }

    /// Makes the next call and, if it got no answer, waits until the runtime serves again: a
    /// client that lost its server reconnects rather than hammering a closed port.
    pub async fn step_or_wait(&mut self) -> Outcome {
        let outcome = self.step().await;
        if outcome == Outcome::Unknown {
            let url = self.url.clone();
            wait_until("the runtime to serve again", RUNTIME_BACK, || {
                let url = url.clone();
                async move { qtrail_server::health::is_serving(&url).await.then_some(()) }
            })
            .await;
        }
        outcome
    }
}

/// Clients calling the runtime concurrently until stopped.
#[derive(Debug)]
pub struct Driver {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Driver {
    /// Starts `clients` clients named `<name>-<n>` against the runtime at `url`.
    pub fn start(name: &str, url: &str, clients: usize, history: &History) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..clients)
            .map(|n| {
                let mut client = Client::new(&format!("{name}-{n}"), url, history.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        client.step_or_wait().await;
                    }
                })
            })
            .collect();
        Self { stop, workers }
    }

    /// Lets every client finish its call in progress, then stops them.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("a workload client panicked");
        }
    }
}
